//! The SMTP server session core: bytes and time in; replies, events and deadlines out.
//! (Interface placeholder: the implementation replaces this file.)

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{EhloKeywords, Service};
use crate::smtp::reply::Reply;

/// The settings one session runs under.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host_name: String,
    pub max_message_size: u64,
    pub max_recipients: u32,
    pub max_line_length: u32,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub max_session_time: Duration,
    pub max_messages: u32,
    pub error_limit: u32,
    pub greet_delay: Duration,
    pub ehlo_keywords: EhloKeywords,
}

impl ServerConfig {
    pub fn from_service(host_name: &str, s: &Service) -> ServerConfig {
        ServerConfig {
            host_name: host_name.to_string(),
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_line_length: s.max_line_length,
            command_timeout: s.idle_timeout,
            data_timeout: s.data_timeout,
            max_session_time: s.max_session_time,
            max_messages: s.max_messages_per_session,
            error_limit: s.error_limit,
            greet_delay: s.greet_delay,
            ehlo_keywords: s.ehlo_keywords,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
}

/// RFC 3461 NOTIFY: `never` or any of success/failure/delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    pub orcpt: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub helo: String,
    pub esmtp: bool,
    pub from: String,
    pub mail_params: MailParams,
    pub rcpts: Vec<(String, RcptParams)>,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(Reply),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Quit,
    Timeout,
    TooManyErrors,
    EarlyTalker,
    SessionLimit,
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Helo { name: String, esmtp: bool },
    CheckMail { from: String, params: MailParams },
    CheckRcpt { to: String, params: RcptParams },
    MessageBegin,
    MessageData(Vec<u8>),
    MessageEnd(Transaction),
    MessageAbort,
    Rejected { command: String, reply: Reply },
    Closing(CloseReason),
}

pub struct Session;

impl Session {
    pub fn new(_config: Rc<ServerConfig>, _now: Instant) -> Session {
        todo!()
    }
    pub fn handle_input(&mut self, _bytes: &[u8], _now: Instant) {
        todo!()
    }
    pub fn handle_timeout(&mut self, _now: Instant) {
        todo!()
    }
    pub fn answer(&mut self, _verdict: Verdict, _now: Instant) {
        todo!()
    }
    pub fn commit_done(&mut self, _result: Result<String, Reply>, _now: Instant) {
        todo!()
    }
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        todo!()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    pub fn is_closed(&self) -> bool {
        todo!()
    }
}
