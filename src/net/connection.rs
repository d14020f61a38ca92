//! One outgoing SMTP connection: a TCP stream driven by the client core.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::smtp::client::{Client, ClientConfig, ClientEvent, Extensions, OutgoingMessage};
use crate::smtp::reply::Reply;

use super::{READ_BUFFER, timer_at};

/// Why a connection could not be used.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect failed or took longer than the failover timeout.
    Connect(io::Error),
    /// The peer answered, but not with a usable greeting or EHLO/HELO reply.
    Refused(Option<Reply>),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Connect(e) => write!(f, "{e}"),
            ConnectError::Refused(Some(r)) => write!(f, "host refused to talk to us: {r}"),
            ConnectError::Refused(None) => f.write_str("lost connection during greeting"),
        }
    }
}

/// An open connection with a client core that has finished EHLO/HELO.
pub struct Connection {
    stream: Async<TcpStream>,
    client: Client,
    peer: SocketAddr,
    buf: Box<[u8]>,
    extensions: Extensions,
    /// A peer that takes none of our bytes for this long is given up on.
    write_timeout: Duration,
}

impl Connection {
    /// Connects to `peer` and runs the greeting and EHLO. `failover` bounds the whole
    /// of that: a host that does not get that far in time is given up on.
    pub async fn open(
        peer: SocketAddr,
        failover: Duration,
        config: Rc<ClientConfig>,
    ) -> Result<Connection, ConnectError> {
        let opening = async {
            let stream = Async::<TcpStream>::connect(peer)
                .await
                .map_err(ConnectError::Connect)?;
            let _ = stream.get_ref().set_nodelay(true);
            let mut conn = Connection {
                stream,
                write_timeout: config.data_block_timeout,
                client: Client::new(config, Instant::now()),
                peer,
                buf: vec![0; READ_BUFFER].into_boxed_slice(),
                extensions: Extensions::default(),
            };
            loop {
                match conn.step().await {
                    Some(ClientEvent::Ready(ext)) => {
                        conn.extensions = ext;
                        return Ok(conn);
                    }
                    Some(ClientEvent::Closed(reply)) => return Err(ConnectError::Refused(reply)),
                    None if conn.client.is_closed() => return Err(ConnectError::Refused(None)),
                    Some(ClientEvent::TransactionDone(_) | ClientEvent::StartTls) | None => {}
                }
            }
        };
        let expired = async {
            Timer::after(failover).await;
            Err(ConnectError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "failover timeout",
            )))
        };
        opening.or(expired).await
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    pub fn is_usable(&self) -> bool {
        self.client.is_ready() && !self.client.is_closed()
    }

    /// Runs one transaction: one reply per recipient, in order.
    pub async fn send(&mut self, msg: OutgoingMessage) -> Vec<Reply> {
        let count = msg.rcpts.len();
        self.client.send(msg, Instant::now());
        loop {
            match self.step().await {
                Some(ClientEvent::TransactionDone(replies)) => return replies,
                Some(ClientEvent::Closed(reply)) => {
                    // The core reports the in-flight transaction before closing; this is
                    // only reached if it closed with nothing in flight.
                    let reply = reply.unwrap_or_else(lost);
                    return vec![reply; count];
                }
                None if self.client.is_closed() => return vec![lost(); count],
                Some(ClientEvent::Ready(_) | ClientEvent::StartTls) | None => {}
            }
        }
    }

    /// Says QUIT and waits (briefly) for the answer.
    pub async fn quit(mut self) {
        self.client.quit(Instant::now());
        let _ = async {
            while !self.client.is_closed() {
                self.step().await;
            }
        }
        .or(async {
            Timer::after(Duration::from_secs(5)).await;
        })
        .await;
    }

    /// One turn of the pump: write what the core has, then either hand it an event
    /// already waiting, or wait for input or its deadline.
    async fn step(&mut self) -> Option<ClientEvent> {
        if let Some(event) = self.client.poll_event() {
            return Some(event);
        }
        while let Some(out) = self.client.poll_transmit() {
            let write = async { self.stream.write_all(&out).await };
            let stalled = async {
                Timer::after(self.write_timeout).await;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer stopped reading",
                ))
            };
            if let Err(e) = write.or(stalled).await {
                log::debug!(target: "smtp", "write to {}: {e}", self.peer);
                self.client.handle_eof(Instant::now());
                return self.client.poll_event();
            }
        }
        if let Some(event) = self.client.poll_event() {
            return Some(event);
        }
        if self.client.is_closed() {
            return None;
        }
        let deadline = self.client.poll_timeout();
        let read = async { Some(self.stream.read(&mut self.buf).await) };
        let timeout = async {
            timer_at(deadline).await;
            None
        };
        match read.or(timeout).await {
            Some(Ok(0)) | Some(Err(_)) => self.client.handle_eof(Instant::now()),
            Some(Ok(n)) => self.client.handle_input(&self.buf[..n], Instant::now()),
            None => self.client.handle_timeout(Instant::now()),
        }
        self.client.poll_event()
    }
}

fn lost() -> Reply {
    Reply::new(451, "4.4.2", "Connection lost before the transaction ended")
}
