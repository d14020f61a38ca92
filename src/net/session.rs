//! One incoming SMTP connection: a TCP stream driven by the server session core,
//! with the spool, the relay policy and the queue manager behind it.

use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Instant;

use async_io::{Async, Timer};
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::clock::{rfc5322, unix_micros_now, unix_now};
use crate::config::ServiceName;
use crate::gateway::Gateway;
use crate::log::Peer;
use crate::queue::{Envelope, Incoming, Origin, RcptStatus, Recipient, Ret};
use crate::relay::{notify, policy};
use crate::smtp::received::Trace;
use crate::smtp::reply::Reply;
use crate::smtp::server::{self, Body, CloseReason, Event, Session, Transaction, Verdict};

use super::{READ_BUFFER, timer_at};

/// What the layer remembers of the session beyond the core: the message being spooled.
struct Spooling {
    incoming: Option<Incoming>,
    /// Set when the spool failed mid-message: the message is refused with 451 at its end.
    failed: bool,
    written: u64,
    eight_bit: bool,
}

/// Serves one accepted connection until it closes.
pub async fn serve(
    gw: Rc<Gateway>,
    service: ServiceName,
    mut stream: Async<TcpStream>,
    peer: SocketAddr,
    internal: bool,
) {
    let config = gw.server_config(service);
    let write_timeout = config.command_timeout;
    let mut session = Session::new(config, Instant::now());
    let client = Peer {
        name: None,
        addr: peer,
    };
    log::info!(target: "smtpd", "connect from {client}");
    let mut buf = vec![0u8; READ_BUFFER].into_boxed_slice();
    let mut helo = String::new();
    let mut esmtp = false;
    let mut rcpts: Vec<String> = Vec::new();
    let mut from = String::new();
    let mut spooling: Option<Spooling> = None;
    let mut out = Vec::new();
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                Event::Helo { name, esmtp: e } => {
                    helo = name;
                    esmtp = e;
                    rcpts.clear();
                }
                Event::CheckMail { from: f, .. } => {
                    from = f;
                    rcpts.clear();
                    session.answer(Verdict::Accept, Instant::now());
                }
                Event::CheckRcpt { to, .. } => {
                    let verdict = match policy::check_rcpt(&gw.config(), internal, &to) {
                        Ok(_) => {
                            rcpts.push(to);
                            Verdict::Accept
                        }
                        Err(reply) => Verdict::Reject(reply),
                    };
                    session.answer(verdict, Instant::now());
                }
                Event::MessageBegin => {
                    spooling = Some(begin_message(&gw, service, peer, &helo, esmtp, &rcpts));
                }
                Event::MessageData(bytes) => {
                    if let Some(s) = spooling.as_mut() {
                        s.write(&bytes);
                    }
                }
                Event::MessageAbort => spooling = None,
                Event::MessageEnd(tx) => {
                    let result = match spooling.take() {
                        Some(s) => commit(&gw, service, peer, s, tx).await,
                        None => Err(spool_error()),
                    };
                    session.commit_done(result, Instant::now());
                }
                Event::Rejected { command, reply } => {
                    log::info!(target: "smtpd", "NOQUEUE: reject: {command} from {client}: {}; from=<{from}> proto={} helo=<{helo}>",
                        reply.one_line(), if esmtp { "ESMTP" } else { "SMTP" });
                }
                Event::Closing(reason) => {
                    let why = match reason {
                        CloseReason::Quit => None,
                        CloseReason::Timeout => Some("timeout"),
                        CloseReason::TooManyErrors => Some("too many errors"),
                        CloseReason::EarlyTalker => Some("talked before the greeting"),
                        CloseReason::SessionLimit => Some("session limit"),
                        CloseReason::Shutdown => Some("shutdown"),
                    };
                    if let Some(why) = why {
                        log::info!(target: "smtpd", "{why} from {client}");
                    }
                }
            }
        }
        while let Some(bytes) = session.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        if !out.is_empty() {
            let written = async { stream.write_all(&out).await.is_ok() }
                .or(async {
                    Timer::after(write_timeout).await;
                    false
                })
                .await;
            out.clear();
            if !written {
                log::info!(target: "smtpd", "lost connection after write to {client}");
                break;
            }
        }
        if session.is_closed() {
            break;
        }
        let deadline = session.poll_timeout();
        let read = async { Some(stream.read(&mut buf).await) };
        let timeout = async {
            timer_at(deadline).await;
            None
        };
        match read.or(timeout).await {
            Some(Ok(0)) | Some(Err(_)) => {
                log::info!(target: "smtpd", "lost connection from {client}");
                break;
            }
            Some(Ok(n)) => session.handle_input(&buf[..n], Instant::now()),
            None => session.handle_timeout(Instant::now()),
        }
    }
    log::info!(target: "smtpd", "disconnect from {client}");
}

fn spool_error() -> Reply {
    Reply::new(451, "4.3.0", "Error: queue file write error")
}

/// Opens the spool file and writes our trace header first.
fn begin_message(
    gw: &Gateway,
    service: ServiceName,
    peer: SocketAddr,
    helo: &str,
    esmtp: bool,
    rcpts: &[String],
) -> Spooling {
    let mut s = Spooling {
        incoming: None,
        failed: false,
        written: 0,
        eight_bit: false,
    };
    match gw.spool.create_at(unix_micros_now()) {
        Ok(incoming) => {
            let id = incoming.id.to_string();
            let trace = Trace {
                helo,
                client_ip: peer.ip(),
                client_name: None,
                by: &gw.config().system.host_name,
                protocol: if esmtp { "ESMTP" } else { "SMTP" },
                tls: None,
                id: &id,
                for_rcpt: (rcpts.len() == 1).then(|| rcpts[0].as_str()),
                date: &rfc5322(unix_now()),
            };
            log::info!(target: "smtpd", "{id}: client={}", Peer { name: None, addr: peer });
            s.incoming = Some(incoming);
            s.write(trace.header().as_bytes());
        }
        Err(e) => {
            log::error!(target: "smtpd", "cannot create queue file for {service}: {e}");
            s.failed = true;
        }
    }
    s
}

impl Spooling {
    fn write(&mut self, bytes: &[u8]) {
        let Some(incoming) = self.incoming.as_mut() else {
            return;
        };
        if let Err(e) = incoming.write(bytes) {
            log::error!(target: "smtpd", "{}: queue file write error: {e}", incoming.id);
            self.incoming = None;
            self.failed = true;
            return;
        }
        self.written += bytes.len() as u64;
        self.eight_bit |= bytes.iter().any(|b| *b >= 0x80);
    }
}

/// Finishes the spool file, waits for the group commit, and hands the message to the
/// queue manager. Only after this returns `Ok` may the client hear 250.
async fn commit(
    gw: &Rc<Gateway>,
    service: ServiceName,
    peer: SocketAddr,
    s: Spooling,
    tx: Transaction,
) -> Result<String, Reply> {
    let Some(incoming) = s.incoming.filter(|_| !s.failed) else {
        return Err(spool_error());
    };
    let id = incoming.id.clone();
    let env = envelope(&id, service, peer, &tx, s.written, s.eight_bit);
    let finished = match incoming.finish(&env) {
        Ok(f) => f,
        Err(e) => {
            log::error!(target: "smtpd", "{id}: queue file write error: {e}");
            return Err(spool_error());
        }
    };
    if let Err(e) = gw.commit.commit(finished).await {
        log::error!(target: "smtpd", "{id}: queue file sync error: {e}");
        let _ = gw.spool.remove(&id);
        return Err(spool_error());
    }
    gw.scheduler.submit(env, Instant::now());
    Ok(id.to_string())
}

/// The spool envelope of an accepted transaction.
fn envelope(
    id: &crate::queue::QueueId,
    service: ServiceName,
    peer: SocketAddr,
    tx: &Transaction,
    size: u64,
    eight_bit: bool,
) -> Envelope {
    let p = &tx.mail_params;
    Envelope {
        id: id.clone(),
        arrived: unix_now(),
        origin: match service {
            ServiceName::Inbound => Origin::Inbound,
            ServiceName::Outbound => Origin::Outbound,
        },
        client_ip: Some(peer.ip()),
        client_helo: tx.helo.clone(),
        sender: tx.from.clone(),
        size,
        eight_bit: eight_bit || p.body == Some(Body::EightBitMime),
        smtputf8: p.smtputf8,
        ret: p.ret.map(|r| match r {
            server::Ret::Full => Ret::Full,
            server::Ret::Hdrs => Ret::Hdrs,
        }),
        envid: p.envid.clone(),
        recipients: tx
            .rcpts
            .iter()
            .map(|(address, params)| Recipient {
                address: address.clone(),
                orcpt: params.orcpt.clone(),
                notify: params.notify.map_or(0, |n| {
                    let bit = |on: bool, b: u8| if on { b } else { 0 };
                    bit(n.never, notify::NEVER)
                        | bit(n.success, notify::SUCCESS)
                        | bit(n.failure, notify::FAILURE)
                        | bit(n.delay, notify::DELAY)
                }),
                status: RcptStatus::Pending,
            })
            .collect(),
        attempts: 0,
        next_attempt: 0,
        held: false,
    }
}
