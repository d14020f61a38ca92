//! The byte pump under a session: a plain TCP stream or a TLS stream driven by hand over async-io.
//!
//! The session driver holds one [`Transport`] and calls `read`, `write_all`, `flush` and
//! `close` whatever it is. STARTTLS (either side) and implicit TLS consume the transport
//! and return a TLS one: [`Transport::accept_tls`] and [`Transport::connect_tls`].
//!
//! STARTTLS injection (CVE-2011-0411): the handshake reads only from the socket, so
//! anything the peer pipelined after STARTTLS that the session already read into its own
//! buffers stays there. The defence is that the session core discards what it had read
//! when it answers STARTTLS; this layer never sees those bytes and never replays them.
//! Callers must hand over the socket itself, with nothing of it buffered elsewhere that
//! they expect to be read as TLS. The one exception is named: on an implicit-TLS
//! listener behind a load balancer, the octets read together with its PROXY header are
//! the first of the client's handshake, and [`Transport::accept_tls_after`] takes them
//! before it reads the socket. No plaintext was answered before them, so nothing can
//! be injected that way.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use async_io::{Async, Timer};
use rustls::pki_types::ServerName;
use rustls::{
    ClientConfig, ClientConnection, Connection, ProtocolVersion, ServerConfig, ServerConnection,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::TlsError;
use super::cert::parse_certificate;
use super::config::suite_name;

/// What a TLS handshake settled, as plain strings for logs, `Received:` and AUTH EXTERNAL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// As rustls prints it, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// The peer's leaf certificate, DER: the server's on a client, a verified client
    /// certificate on a server. Unverified on a client with `Verify::DangerNone`.
    pub peer_certificate: Option<Vec<u8>>,
    /// On a server, the verified client certificate's subject in RFC 4514 form.
    pub client_subject: Option<String>,
    /// On a server, the verified client certificate's common name.
    pub client_common_name: Option<String>,
    /// On a server, the verified client certificate's subjectAltName email addresses.
    pub client_emails: Vec<String>,
}

/// A TCP stream with a rustls connection on it.
pub struct TlsStream {
    socket: Async<TcpStream>,
    connection: Connection,
    /// The socket reported end of file.
    eof: bool,
}

/// The connection a session reads and writes: plain, or TLS after a handshake.
pub enum Transport {
    Plain(Async<TcpStream>),
    Tls(Box<TlsStream>),
}

impl Transport {
    /// Reads decrypted (or plain) bytes; `Ok(0)` is the end of the stream. A TLS peer that
    /// closes without close_notify gives `UnexpectedEof`.
    ///
    /// The TLS futures here and below are boxed: a session's own future then has room
    /// for a plain read or write only, not for the larger TLS state every plain session
    /// would carry unused (10 000 idle sessions: see the README). A TLS operation costs
    /// one small allocation beside its record work.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf).await,
            Transport::Tls(tls) => Box::pin(tls.read(buf)).await,
        }
    }

    /// As [`read`](Self::read), into `buf`, which is given `size` octets only when it is
    /// empty and there is something to read: a plain connection whose peer says
    /// nothing holds no buffer. A TLS connection has its buffer at once (rustls may hold
    /// plaintext already, and its own buffers dwarf this one).
    pub async fn read_to(&mut self, buf: &mut Vec<u8>, size: usize) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => {
                if buf.is_empty() {
                    socket.readable().await?;
                    buf.resize(size, 0);
                }
                socket.read(buf).await
            }
            Transport::Tls(tls) => {
                if buf.is_empty() {
                    buf.resize(size, 0);
                }
                Box::pin(tls.read(buf)).await
            }
        }
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(socket) => socket.write_all(data).await,
            Transport::Tls(tls) => Box::pin(tls.write_all(data)).await,
        }
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(socket) => socket.flush().await,
            Transport::Tls(tls) => Box::pin(tls.write_pending()).await,
        }
    }

    /// Ends the stream: close_notify for TLS, then the write half is shut.
    pub async fn close(&mut self) -> io::Result<()> {
        let socket = match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => {
                tls.connection.send_close_notify();
                Box::pin(tls.write_pending()).await?;
                &tls.socket
            }
        };
        match socket.get_ref().shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }

    /// The server side of STARTTLS or implicit TLS: runs the handshake to completion
    /// within `timeout`.
    pub async fn accept_tls(
        self,
        config: Arc<ServerConfig>,
        timeout: Duration,
    ) -> Result<Transport, TlsError> {
        self.accept_tls_after(config, timeout, Vec::new()).await
    }

    /// As [`accept_tls`](Self::accept_tls), for a connection whose first octets were
    /// read already (`already_read`, after a PROXY header): the handshake takes them
    /// before it reads the socket.
    pub async fn accept_tls_after(
        self,
        config: Arc<ServerConfig>,
        timeout: Duration,
        already_read: Vec<u8>,
    ) -> Result<Transport, TlsError> {
        let connection =
            ServerConnection::new(config).map_err(|e| TlsError::Config(e.to_string()))?;
        self.handshake(Connection::Server(connection), timeout, already_read)
            .await
    }

    /// Our outgoing STARTTLS: the client handshake for `server_name` (sent as SNI and
    /// checked against the certificate unless verification is off), within `timeout`.
    pub async fn connect_tls(
        self,
        config: Arc<ClientConfig>,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Transport, TlsError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsError::Config(format!("invalid server name {server_name:?}")))?;
        let connection =
            ClientConnection::new(config, name).map_err(|e| TlsError::Config(e.to_string()))?;
        self.handshake(Connection::Client(connection), timeout, Vec::new())
            .await
    }

    async fn handshake(
        self,
        connection: Connection,
        timeout: Duration,
        already_read: Vec<u8>,
    ) -> Result<Transport, TlsError> {
        let Transport::Plain(socket) = self else {
            return Err(TlsError::AlreadyTls);
        };
        let run = complete_handshake(socket, connection, already_read);
        let expire = async {
            Timer::after(timeout).await;
            Err(TlsError::Timeout)
        };
        let tls = smol::future::or(run, expire).await?;
        Ok(Transport::Tls(Box::new(tls)))
    }

    /// What the handshake settled; `None` on a plain transport.
    pub fn tls_info(&self) -> Option<Info> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(tls) => Some(tls.info()),
        }
    }

    /// The peer's certificate chain as it sent it, DER, leaf first; empty on a plain
    /// transport.
    pub fn peer_chain(&self) -> Vec<Vec<u8>> {
        match self {
            Transport::Plain(_) => Vec::new(),
            Transport::Tls(tls) => tls
                .connection
                .peer_certificates()
                .map(|chain| chain.iter().map(|der| der.as_ref().to_vec()).collect())
                .unwrap_or_default(),
        }
    }

    /// The socket underneath, for addresses and options.
    pub fn socket(&self) -> &Async<TcpStream> {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => &tls.socket,
        }
    }
}

/// Runs a handshake to its end. The records are read and written here, on the
/// executor; processing them, where the server's key signs (through the token, which may
/// be slow hardware) and the peer's certificate chain is verified, runs on the blocking
/// pool, so no handshake keeps other sessions waiting. `already_read` is taken before the
/// socket is read.
async fn complete_handshake(
    socket: Async<TcpStream>,
    mut connection: Connection,
    already_read: Vec<u8>,
) -> Result<TlsStream, TlsError> {
    let mut already_read: &[u8] = &already_read;
    while connection.is_handshaking() {
        if connection.wants_write() {
            write_records(&socket, &mut connection)
                .await
                .map_err(io_error)?;
            continue;
        }
        let n = if already_read.is_empty() {
            socket
                .read_with(|mut stream| connection.read_tls(&mut stream))
                .await
                .map_err(io_error)?
        } else {
            connection.read_tls(&mut already_read).map_err(io_error)?
        };
        // Token work: a module that stops answering holds a capped number of threads.
        let (back, processed) = crate::io::token::off_executor(move || {
            let processed = connection.process_new_packets().map(|_| ());
            (connection, processed)
        })
        .await;
        connection = back;
        if let Err(e) = processed {
            // Best effort: the alert tells the peer why; the error is what matters.
            let _ = write_records(&socket, &mut connection).await;
            return Err(TlsError::Handshake(e.to_string()));
        }
        if n == 0 {
            return Err(TlsError::Closed);
        }
    }
    write_records(&socket, &mut connection)
        .await
        .map_err(io_error)?;
    Ok(TlsStream {
        socket,
        connection,
        eof: false,
    })
}

/// Sends every TLS record rustls has ready.
async fn write_records(socket: &Async<TcpStream>, connection: &mut Connection) -> io::Result<()> {
    while connection.wants_write() {
        socket
            .write_with(|mut stream| connection.write_tls(&mut stream))
            .await?;
    }
    Ok(())
}

impl TlsStream {
    /// Reads what the socket has into rustls and processes it; returns the bytes read.
    /// A protocol error sends rustls's alert before it is returned.
    async fn read_records(&mut self) -> Result<usize, RecordError> {
        let TlsStream {
            socket, connection, ..
        } = self;
        let n = socket
            .read_with(|mut stream| connection.read_tls(&mut stream))
            .await
            .map_err(RecordError::Io)?;
        if n == 0 {
            self.eof = true;
        }
        if let Err(e) = self.connection.process_new_packets() {
            // Best effort: the alert tells the peer why; the error is what matters.
            let _ = self.write_pending().await;
            return Err(RecordError::Tls(e));
        }
        Ok(n)
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.connection.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.eof {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.write_pending().await?;
            match self.read_records().await {
                Ok(_) => {}
                Err(RecordError::Io(e)) => return Err(e),
                Err(RecordError::Tls(e)) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        }
    }

    async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.connection.writer().write(data)?;
            data = data.get(n..).unwrap_or_default();
            if n == 0 || self.connection.wants_write() {
                self.write_pending().await?;
            }
        }
        Ok(())
    }

    /// Sends every TLS record rustls has ready.
    async fn write_pending(&mut self) -> io::Result<()> {
        write_records(&self.socket, &mut self.connection).await
    }

    fn info(&self) -> Info {
        let version = match self.connection.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let cipher_suite = self
            .connection
            .negotiated_cipher_suite()
            .map(|suite| suite_name(suite.suite()))
            .unwrap_or_default();
        let peer_certificate = self
            .connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| der.as_ref().to_vec());
        let mut info = Info {
            version,
            cipher_suite,
            peer_certificate,
            ..Info::default()
        };
        if let Connection::Server(_) = self.connection {
            // A server only has a client certificate that its verifier accepted.
            if let Some(fields) = info.peer_certificate.as_deref().and_then(parse_certificate) {
                info.client_subject = Some(fields.subject);
                info.client_common_name = fields.common_name;
                info.client_emails = fields.emails;
            }
        }
        info
    }
}

/// Why reading records failed: the socket, or the peer's TLS.
enum RecordError {
    Io(io::Error),
    Tls(rustls::Error),
}

fn io_error(e: io::Error) -> TlsError {
    TlsError::Io(e.to_string())
}
