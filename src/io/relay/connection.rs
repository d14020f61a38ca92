//! One outgoing SMTP connection: a TCP stream, TLS after STARTTLS, driven by the client core.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::Timer;
use smol::Unblock;
use smol::future::FutureExt as _;
use smol::io::AsyncReadExt as _;

use crate::io::tls::Transport;
use crate::io::tls::setup::{GatewayTls, describe};
use crate::proto::logtext::{Escaped, Relay};
use crate::proto::smtp::client::{
    CONTENT_CHUNK, Client, ClientAuth, ClientConfig, ClientEvent, Extensions, OutgoingMessage,
};
use crate::proto::smtp::reply::Reply;

use super::pump::{self, Peer};
use crate::io::runtime::READ_BUFFER;

/// Why a connection could not be used.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect failed or took longer than the failover timeout.
    Connect(io::Error),
    /// The peer answered, but not with a usable greeting or EHLO/HELO reply, or TLS was
    /// required and could not be had.
    Refused(Option<Reply>),
    /// The peer took our STARTTLS and then the handshake failed: the connection is
    /// gone. Where TLS is only opportunistic, a new connection in clear may follow.
    TlsHandshake(Option<Reply>),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Connect(e) => write!(f, "{e}"),
            ConnectError::Refused(Some(r)) => write!(f, "host refused to talk to us: {r}"),
            ConnectError::Refused(None) => f.write_str("lost connection during greeting"),
            ConnectError::TlsHandshake(Some(r)) => write!(f, "TLS handshake failed: {r}"),
            ConnectError::TlsHandshake(None) => f.write_str("TLS handshake failed"),
        }
    }
}

/// How this connection may use TLS when the peer offers STARTTLS.
#[derive(Clone)]
pub struct OutgoingTls {
    pub tls: Rc<GatewayTls>,
    /// The name the certificate must carry: the MX host name, or the relay's address.
    pub server_name: String,
    /// Check the certificate (TLS required and no `danger_` option), or only encrypt.
    pub verify: bool,
}

/// Where the content of a message being sent comes from.
#[derive(Clone, Debug)]
pub enum Content {
    /// Held in memory: a journal message.
    Memory(Rc<[u8]>),
    /// A queue file, opened and read on the blocking pool in pieces of
    /// [`CONTENT_CHUNK`] octets, so the executor never waits for the disk and a large
    /// message is never held whole.
    File(PathBuf),
}

/// The content being read for one transaction. A journal message is handed to the
/// core straight from memory; a queue file is read in pieces of [`CONTENT_CHUNK`]
/// octets, so at most two of them are in memory (the blocking pool's buffer and ours).
enum ContentReader {
    Memory { bytes: Rc<[u8]>, at: usize },
    File { file: Unblock<File>, buf: Box<[u8]> },
}

impl ContentReader {
    async fn open(content: &Content) -> io::Result<ContentReader> {
        Ok(match content {
            Content::Memory(bytes) => ContentReader::Memory {
                bytes: bytes.clone(),
                at: 0,
            },
            Content::File(path) => {
                let path = path.clone();
                let file = smol::unblock(move || File::open(path)).await?;
                ContentReader::File {
                    file: Unblock::with_capacity(CONTENT_CHUNK, file),
                    buf: vec![0; CONTENT_CHUNK].into_boxed_slice(),
                }
            }
        })
    }

    /// The next piece, of at most [`CONTENT_CHUNK`] octets; empty at the end.
    async fn next_piece(&mut self) -> io::Result<&[u8]> {
        match self {
            ContentReader::Memory { bytes, at } => {
                let start = *at;
                let end = bytes.len().min(start.saturating_add(CONTENT_CHUNK));
                *at = end;
                Ok(bytes.get(start..end).unwrap_or_default())
            }
            ContentReader::File { file, buf } => {
                let n = file.read(buf).await?;
                Ok(&buf[..n])
            }
        }
    }
}

/// An open connection with a client core that has finished EHLO/HELO.
pub struct Connection {
    /// `None` once a failed handshake has consumed it: the connection is dead.
    transport: Option<Transport>,
    client: Client,
    peer: SocketAddr,
    tls: Option<OutgoingTls>,
    buf: Box<[u8]>,
    extensions: Extensions,
    /// The login this connection makes, for its log line.
    client_auth: Option<ClientAuth>,
    /// A peer that takes none of our bytes for this long is given up on.
    write_timeout: Duration,
    /// Our STARTTLS was taken and the handshake failed.
    handshake_failed: bool,
}

impl Connection {
    /// Connects to `peer` and runs the greeting, EHLO and, where the client core asks
    /// for it, STARTTLS. `failover` bounds the whole of that: a host that does not get
    /// that far in time is given up on.
    pub async fn open(
        peer: SocketAddr,
        failover: Duration,
        config: Rc<ClientConfig>,
        tls: Option<OutgoingTls>,
    ) -> Result<Connection, ConnectError> {
        let opening = async {
            let stream = pump::connect(peer).await.map_err(ConnectError::Connect)?;
            let mut conn = Connection {
                transport: Some(Transport::Plain(stream)),
                client_auth: config.auth.clone(),
                write_timeout: config.data_block_timeout,
                client: Client::new(config, Instant::now()),
                peer,
                tls,
                buf: vec![0; READ_BUFFER].into_boxed_slice(),
                extensions: Extensions::default(),
                handshake_failed: false,
            };
            loop {
                match conn.step().await {
                    Some(ClientEvent::Ready(ext)) => {
                        conn.extensions = ext;
                        conn.log_auth();
                        return Ok(conn);
                    }
                    Some(ClientEvent::Closed(reply)) if conn.handshake_failed => {
                        return Err(ConnectError::TlsHandshake(reply));
                    }
                    Some(ClientEvent::Closed(reply)) => {
                        conn.log_auth();
                        return Err(ConnectError::Refused(reply));
                    }
                    None if conn.client.is_closed() => return Err(ConnectError::Refused(None)),
                    Some(
                        ClientEvent::TransactionDone(_)
                        | ClientEvent::StartTls
                        | ClientEvent::Derive(_)
                        | ClientEvent::SendContent,
                    )
                    | None => {}
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
        self.transport.is_some() && self.client.is_ready() && !self.client.is_closed()
    }

    /// Runs one transaction: one reply per recipient, in order. The content is read
    /// piece by piece as it is sent.
    pub async fn send(&mut self, msg: OutgoingMessage, content: &Content) -> Vec<Reply> {
        let count = msg.rcpts.len();
        self.client.send(msg, Instant::now());
        loop {
            match self.step().await {
                Some(ClientEvent::SendContent) => self.send_content(content).await,
                Some(ClientEvent::TransactionDone(replies)) => return replies,
                Some(ClientEvent::Closed(reply)) => {
                    // The core reports the in-flight transaction before closing; this is
                    // only reached if it closed with nothing in flight.
                    let reply = reply.unwrap_or_else(lost);
                    return vec![reply; count];
                }
                None if self.client.is_closed() => return vec![lost(); count],
                Some(ClientEvent::Ready(_) | ClientEvent::StartTls | ClientEvent::Derive(_))
                | None => {}
            }
        }
    }

    /// Hands the content to the core piece by piece, writing each piece out before the
    /// next is read. A read that fails or hangs for a data-block timeout abandons the
    /// transaction without ending the data.
    async fn send_content(&mut self, content: &Content) {
        let timeout = self.write_timeout;
        let mut reader = match ContentReader::open(content).await {
            Ok(r) => r,
            Err(e) => {
                log::error!(target: "smtp", "cannot open the message content: {e}");
                self.client.content_failed(&e.to_string(), Instant::now());
                return;
            }
        };
        while self.client.wants_content() {
            let read = async { Some(reader.next_piece().await) }
                .or(async {
                    Timer::after(timeout).await;
                    None
                })
                .await;
            match read {
                Some(Ok([])) => self.client.end_content(Instant::now()),
                Some(Ok(piece)) => self.client.handle_content(piece, Instant::now()),
                Some(Err(e)) => {
                    log::error!(target: "smtp", "cannot read the message content: {e}");
                    self.client.content_failed(&e.to_string(), Instant::now());
                }
                None => {
                    log::error!(target: "smtp", "reading the message content timed out");
                    self.client.content_failed("read timed out", Instant::now());
                }
            }
            if !self.flush().await {
                return;
            }
        }
    }

    /// Writes everything the core has to send; false (after telling the core) when the
    /// peer is gone or takes nothing for the write timeout.
    async fn flush(&mut self) -> bool {
        let peer = self.wire();
        match self.transport.as_mut() {
            Some(transport) => pump::flush(&mut self.client, transport, peer).await,
            None => false,
        }
    }

    /// The socket as the pump sees it.
    fn wire(&self) -> Peer {
        Peer {
            addr: self.peer,
            write_timeout: self.write_timeout,
            log_target: "smtp",
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
        if let Some(t) = self.transport.as_mut() {
            let _ = t.close().await;
        }
    }

    /// One turn of the pump, running the TLS handshake or a SCRAM derivation when the
    /// core asks for it.
    async fn step(&mut self) -> Option<ClientEvent> {
        let event = self.pump().await;
        match &event {
            Some(ClientEvent::StartTls) => self.start_tls().await,
            Some(ClientEvent::Derive(d)) => {
                // PBKDF2 costs what the server's iteration count says: off the executor.
                let d = d.clone();
                let salted = smol::unblock(move || d.run()).await;
                self.client.derived(&salted, Instant::now());
            }
            _ => {}
        }
        event
    }

    /// The next hop as the logs name it: `name[address]:port`, the name being the one its
    /// certificate must carry (the host name, or the address of a literal).
    fn named(&self) -> String {
        let name = self
            .tls
            .as_ref()
            .map_or_else(|| self.peer.ip().to_string(), |t| t.server_name.clone());
        format!(
            "{}[{}]:{}",
            Escaped(&name),
            self.peer.ip(),
            self.peer.port()
        )
    }

    /// The AUTH line, when this connection logged in or failed to.
    fn log_auth(&self) {
        let Some(auth) = &self.client_auth else {
            return;
        };
        let user = Escaped(&auth.credentials.user);
        if let Some(mechanism) = self.client.authenticated() {
            log::info!(target: "smtp", "authenticated to {} as {user} with {}", self.named(), mechanism.name());
        } else if let Some(reason) = self.client.auth_failure() {
            log::warn!(target: "smtp", "authentication to {} as {user} failed: {}", self.named(), Escaped(reason));
        }
    }

    /// Writes what the core has, then either hands over an event already waiting, or
    /// waits for input or the core's deadline.
    async fn pump(&mut self) -> Option<ClientEvent> {
        let peer = self.wire();
        let Some(transport) = self.transport.as_mut() else {
            if let Some(event) = self.client.poll_event() {
                return Some(event);
            }
            self.client.handle_eof(Instant::now());
            return self.client.poll_event();
        };
        pump::turn(&mut self.client, transport, &mut self.buf, peer).await
    }

    /// The handshake after the peer's 220 to our STARTTLS. Whatever plaintext came after
    /// the 220 was read into our buffer and thrown away by the core already.
    async fn start_tls(&mut self) {
        let (Some(tls), Some(transport)) = (self.tls.clone(), self.transport.take()) else {
            self.client
                .tls_failed("TLS is not available on this gateway", Instant::now());
            return;
        };
        match tls
            .tls
            .connect(transport, &tls.server_name, tls.verify)
            .await
        {
            Ok(t) => {
                if let Some(info) = t.tls_info() {
                    crate::proto::stats::tls_out(&info.version);
                    let trust = if tls.verify { "Verified" } else { "Untrusted" };
                    log::info!(target: "smtp", "{trust} TLS connection established to {}: {}",
                        Relay(self.peer), describe(&info));
                }
                self.transport = Some(t);
                self.client.tls_established(Instant::now());
            }
            Err(e) => {
                log::info!(target: "smtp", "TLS handshake with {} failed: {}", Relay(self.peer), crate::proto::logtext::Escaped(&e.to_string()));
                self.handshake_failed = true;
                self.client.tls_failed(&e.to_string(), Instant::now());
            }
        }
    }
}

fn lost() -> Reply {
    Reply::new(451, "4.4.2", "Connection lost before the transaction ended")
}
