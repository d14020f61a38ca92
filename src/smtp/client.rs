//! The SMTP client core: bytes and time in; commands, events and deadlines out.
//! (Interface placeholder: the implementation replaces this file.)

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::smtp::reply::Reply;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub helo_name: String,
    pub greeting_timeout: Duration,
    pub command_timeout: Duration,
    pub data_init_timeout: Duration,
    pub data_block_timeout: Duration,
    pub data_done_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            helo_name: "localhost".into(),
            greeting_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            data_init_timeout: Duration::from_secs(120),
            data_block_timeout: Duration::from_secs(180),
            data_done_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingRcpt {
    pub address: String,
    /// RFC 3461 NOTIFY value as written on the wire, e.g. "SUCCESS,FAILURE".
    pub notify: Option<String>,
    /// RFC 3461 ORCPT value, already xtext-encoded, e.g. "rfc822;a@b".
    pub orcpt: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub from: String,
    pub rcpts: Vec<OutgoingRcpt>,
    /// The message content, CRLF lines, not dot-stuffed.
    pub content: Rc<[u8]>,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub ret: Option<String>,
    pub envid: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Extensions {
    pub esmtp: bool,
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    Ready(Extensions),
    TransactionDone(Vec<Reply>),
    Closed(Option<Reply>),
}

pub struct Client;

impl Client {
    pub fn new(_config: Rc<ClientConfig>, _now: Instant) -> Client {
        todo!()
    }
    pub fn handle_input(&mut self, _bytes: &[u8], _now: Instant) {
        todo!()
    }
    pub fn handle_timeout(&mut self, _now: Instant) {
        todo!()
    }
    pub fn send(&mut self, _msg: OutgoingMessage, _now: Instant) {
        todo!()
    }
    pub fn quit(&mut self, _now: Instant) {
        todo!()
    }
    pub fn is_ready(&self) -> bool {
        todo!()
    }
    pub fn is_closed(&self) -> bool {
        todo!()
    }
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        todo!()
    }
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        todo!()
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
}
