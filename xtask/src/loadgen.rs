//! The benchmarks' own SMTP load generator: many sessions on threads, PIPELINING (RFC 2920),
//! connections kept open or a new one per message, a message size mix, and STARTTLS with
//! rustls, timing the acknowledgement of every message.
//!
//! Each session is a thread with a blocking socket; the sessions share one counter of the
//! messages still to send, so the last session to finish is at most one message behind.
//! A session sends `MAIL`, `RCPT` and `DATA` in one write and reads their three replies;
//! then the content and its final `.`, and, with pipelining, the next message's `MAIL`,
//! `RCPT` and `DATA` in the same write, so a message costs one round trip. The latency of
//! a message runs from the write that ends its content to its final reply.
//!
//! Without pipelining each command waits for its reply, as smtp-source does; that is the
//! setting for comparing with smtp-source.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use crate::Failure;
use crate::bench::{RECIPIENT, SENDER};

/// Longest any one reply may take before the session gives up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 allows 512 octets).
const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply (an EHLO reply has a dozen).
const MAX_REPLY_LINES: usize = 100;
/// Length of a content line, CRLF excluded (RFC 5322's recommended 78).
const LINE_LENGTH: usize = 76;
/// Most sessions at once.
pub const MAX_SESSIONS: u32 = 20_000;

/// What to send, and how.
#[derive(Debug, Clone)]
pub struct Spec {
    pub target: SocketAddr,
    pub sessions: u32,
    pub messages: u64,
    /// Messages per connection before QUIT and a new connection; 0 keeps it open.
    pub per_connection: u32,
    /// Message sizes (octets of content) and their weights; each message's size is drawn
    /// from this mix in a fixed order, so every run sends the same sizes.
    pub sizes: Vec<(usize, u32)>,
    pub pipelining: bool,
    /// STARTTLS before the first transaction of every connection (no session resumption:
    /// every connection makes a full handshake).
    pub starttls: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub messages: u64,
    pub octets: u64,
    pub connections: u64,
    pub elapsed: Duration,
    /// Acknowledgement latency of every message, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Report {
    /// The latency at quantile `q` (0.0–1.0) in microseconds, nearest rank.
    pub fn latency_us(&self, q: f64) -> Option<u32> {
        crate::bench::quantile(&self.latencies_us, q)
    }
}

/// Parses a size mix: `4096`, `1k`, `10m`, or weighted `1k:70,4k:25,100k:5`.
pub fn parse_sizes(text: &str) -> Result<Vec<(usize, u32)>, String> {
    let mut sizes = Vec::new();
    for part in text.split(',') {
        let (size, weight) = match part.split_once(':') {
            Some((size, weight)) => (
                size,
                weight
                    .parse::<u32>()
                    .ok()
                    .filter(|w| *w > 0)
                    .ok_or_else(|| format!("bad weight `{weight}` in `{text}`"))?,
            ),
            None => (part, 1),
        };
        sizes.push((parse_size(size)?, weight));
    }
    Ok(sizes)
}

/// `123`, `4k` (KiB) or `10m` (MiB).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1024),
        Some(b'm') => (&lower[..lower.len() - 1], 1024 * 1024),
        _ => (lower.as_str(), 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("bad size `{text}`: a number of octets, or with k or m"))
}

/// A size as the suite prints it: `1 KiB`, `10 MiB`, `300 B`.
pub fn size_name(size: usize) -> String {
    if size >= 1024 * 1024 && size.is_multiple_of(1024 * 1024) {
        format!("{} MiB", size / (1024 * 1024))
    } else if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The content of a message of `size` octets: a few header fields and lines of letters,
/// CRLF-terminated, no line starting with `.`. Exactly `size` octets from 128 up.
pub fn message_content(size: usize) -> Vec<u8> {
    let mut content = format!(
        "From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: load\r\nMessage-ID: <load@example.org>\r\n\r\n"
    )
    .into_bytes();
    let mut letter = b'a';
    while content.len() + 2 <= size {
        let room = size - content.len() - 2;
        let mut line = room.min(LINE_LENGTH);
        if room - line == 1 {
            // One octet left over could not end a line; leave two for an empty one.
            line -= 1;
        }
        content.extend(std::iter::repeat_n(letter, line));
        content.extend_from_slice(b"\r\n");
        letter = if letter == b'z' { b'a' } else { letter + 1 };
    }
    content
}

/// The size sequence: each message `i` gets `order[i % order.len()]`.
fn size_order(sizes: &[(usize, u32)]) -> Vec<usize> {
    let mut order = Vec::new();
    for &(size, weight) in sizes {
        order.extend(std::iter::repeat_n(size, weight as usize));
    }
    // Spread the sizes (a fixed shuffle) so large messages do not come in one burst.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

/// Runs the load to completion; fails on the first reply that is not what a healthy
/// relay answers.
pub fn run(spec: &Spec) -> Result<Report, Failure> {
    if spec.sessions == 0 || spec.sizes.is_empty() {
        return Err(Failure::new("a load needs sessions and sizes"));
    }
    let contents: Vec<(usize, Arc<Message>)> = spec
        .sizes
        .iter()
        .map(|&(size, _)| (size, Arc::new(Message::new(size))))
        .collect();
    let order: Arc<Vec<Arc<Message>>> = Arc::new(
        size_order(&spec.sizes)
            .into_iter()
            .filter_map(|size| {
                contents
                    .iter()
                    .find(|(s, _)| *s == size)
                    .map(|(_, c)| Arc::clone(c))
            })
            .collect(),
    );
    let tls = spec.starttls.then(tls_config).transpose()?;
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(spec.sessions as usize + 1));
    let totals = Arc::new(Mutex::new(Report::default()));
    let mut threads = Vec::new();
    for _ in 0..spec.sessions {
        let session = Session {
            spec: spec.clone(),
            order: Arc::clone(&order),
            tls: tls.clone(),
            next: Arc::clone(&next),
            failed: Arc::clone(&failed),
        };
        let start = Arc::clone(&start);
        let totals = Arc::clone(&totals);
        let thread = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                start.wait();
                let mut report = Report::default();
                let outcome = session.run(&mut report);
                if outcome.is_err() {
                    session.failed.store(true, Ordering::SeqCst);
                }
                let mut totals = totals.lock().unwrap_or_else(|p| p.into_inner());
                totals.messages += report.messages;
                totals.octets += report.octets;
                totals.connections += report.connections;
                totals.latencies_us.extend(report.latencies_us);
                outcome
            })
            .map_err(|e| Failure(format!("starting a load session: {e}")))?;
        threads.push(thread);
    }
    start.wait();
    let started = Instant::now();
    let mut first_error = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(Failure::new("a load session panicked"));
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut report = std::mem::take(&mut *totals.lock().unwrap_or_else(|p| p.into_inner()));
    report.elapsed = elapsed;
    report.latencies_us.sort_unstable();
    Ok(report)
}

/// One message's bytes as sent: its content and final `.`, alone or followed by the next
/// message's envelope (pipelined), so each is one write.
struct Message {
    content: usize,
    last: Vec<u8>,
    pipelined: Vec<u8>,
}

impl Message {
    fn new(size: usize) -> Message {
        let mut last = message_content(size);
        let content = last.len();
        last.extend_from_slice(b".\r\n");
        let mut pipelined = last.clone();
        pipelined.extend_from_slice(&envelope());
        Message {
            content,
            last,
            pipelined,
        }
    }
}

struct Session {
    spec: Spec,
    order: Arc<Vec<Arc<Message>>>,
    tls: Option<Arc<ClientConfig>>,
    next: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
}

impl Session {
    /// Claims the next message, if any is left and no session has failed.
    fn claim(&self) -> Option<u64> {
        if self.failed.load(Ordering::Relaxed) {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        (index < self.spec.messages).then_some(index)
    }

    fn message(&self, index: u64) -> &Message {
        let order = &self.order;
        &order[(index % order.len() as u64) as usize]
    }

    fn run(&self, report: &mut Report) -> Result<(), Failure> {
        let mut claimed = self.claim();
        while let Some(first) = claimed {
            let mut conn = Conn::open(self.spec.target, self.tls.as_ref())?;
            report.connections += 1;
            let mut index = first;
            let mut sent_here = 0u32;
            let envelope = envelope();
            if self.spec.pipelining {
                conn.write(&envelope)?;
                conn.expect_envelope()?;
            } else {
                conn.unpipelined_envelope()?;
            }
            loop {
                let message = self.message(index);
                sent_here += 1;
                let more_here =
                    self.spec.per_connection == 0 || sent_here < self.spec.per_connection;
                claimed = if more_here { self.claim() } else { None };
                let pipelined_next = self.spec.pipelining && claimed.is_some();
                conn.write(if pipelined_next {
                    &message.pipelined
                } else {
                    &message.last
                })?;
                let sent_at = Instant::now();
                conn.expect(250, "end of data")?;
                report
                    .latencies_us
                    .push(u32::try_from(sent_at.elapsed().as_micros()).unwrap_or(u32::MAX));
                report.messages += 1;
                report.octets += message.content as u64;
                let Some(next) = claimed else { break };
                index = next;
                if pipelined_next {
                    conn.expect_envelope()?;
                } else {
                    conn.unpipelined_envelope()?;
                }
            }
            conn.write(b"QUIT\r\n")?;
            let _ = conn.expect(221, "QUIT");
            // The connection sent its share, or the load is done and this finds nothing.
            claimed = self.claim();
        }
        Ok(())
    }
}

fn envelope() -> Vec<u8> {
    format!("MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n").into_bytes()
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Only while the socket moves into its TLS stream.
    Moving,
}

fn moving() -> io::Error {
    io::Error::other("the connection is being wrapped in TLS")
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Moving => Err(moving()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Moving => Err(moving()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Moving => Err(moving()),
        }
    }
}

/// One client connection with its reply buffer.
struct Conn {
    stream: Stream,
    buffer: Vec<u8>,
}

impl Conn {
    fn open(target: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> Result<Conn, Failure> {
        let socket = TcpStream::connect(target)
            .map_err(|e| Failure(format!("connecting to {target}: {e}")))?;
        let _ = socket.set_nodelay(true);
        socket
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Failure(format!("setting a timeout: {e}")))?;
        let mut conn = Conn {
            stream: Stream::Plain(socket),
            buffer: Vec::with_capacity(1024),
        };
        conn.expect(220, "greeting")?;
        conn.write(b"EHLO load.example.org\r\n")?;
        conn.expect(250, "EHLO")?;
        if let Some(config) = tls {
            conn.write(b"STARTTLS\r\n")?;
            conn.expect(220, "STARTTLS")?;
            if !conn.buffer.is_empty() {
                return Err(Failure::new(
                    "the server sent data after its 220 to STARTTLS",
                ));
            }
            let Stream::Plain(socket) = std::mem::replace(&mut conn.stream, Stream::Moving) else {
                return Err(Failure::new("STARTTLS on a TLS connection"));
            };
            let name = ServerName::try_from("gw.example.com")
                .map_err(|e| Failure(format!("server name: {e}")))?;
            let client = ClientConnection::new(Arc::clone(config), name)
                .map_err(|e| Failure(format!("TLS client: {e}")))?;
            conn.stream = Stream::Tls(Box::new(StreamOwned::new(client, socket)));
            conn.write(b"EHLO load.example.org\r\n")?;
            conn.expect(250, "EHLO after STARTTLS")?;
        }
        Ok(conn)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| Failure(format!("sending: {e}")))
    }

    fn expect_envelope(&mut self) -> Result<(), Failure> {
        self.expect(250, "MAIL")?;
        self.expect(250, "RCPT")?;
        self.expect(354, "DATA")
    }

    fn unpipelined_envelope(&mut self) -> Result<(), Failure> {
        for (command, code, what) in [
            (format!("MAIL FROM:<{SENDER}>\r\n"), 250, "MAIL"),
            (format!("RCPT TO:<{RECIPIENT}>\r\n"), 250, "RCPT"),
            ("DATA\r\n".to_owned(), 354, "DATA"),
        ] {
            self.write(command.as_bytes())?;
            self.expect(code, what)?;
        }
        Ok(())
    }

    /// Reads one whole reply and checks its code.
    fn expect(&mut self, code: u16, what: &str) -> Result<(), Failure> {
        let reply = self.reply()?;
        let got = reply
            .get(..3)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok());
        if got == Some(code) {
            Ok(())
        } else {
            Err(Failure(format!(
                "expected {code} to {what}, got: {}",
                String::from_utf8_lossy(&reply).trim_end()
            )))
        }
    }

    /// The lines of one reply (RFC 5321 §4.2: `NNN-` continues, `NNN ` ends).
    fn reply(&mut self) -> Result<Vec<u8>, Failure> {
        let mut whole = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            let line = self.line()?;
            let last = line.get(3) != Some(&b'-');
            whole.extend_from_slice(&line);
            if last {
                return Ok(whole);
            }
        }
        Err(Failure::new("a reply of too many lines"))
    }

    fn line(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Ok(line);
            }
            if self.buffer.len() > MAX_REPLY_LINE {
                return Err(Failure::new("a reply line without end"));
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| Failure(format!("reading a reply: {e}")))?;
            if n == 0 {
                return Err(Failure(format!(
                    "the server closed the connection{}",
                    if self.buffer.is_empty() {
                        String::new()
                    } else {
                        format!(" after `{}`", String::from_utf8_lossy(&self.buffer))
                    }
                )));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A TLS client that makes a full handshake on every connection and takes any
/// certificate: the servers measured are on loopback with self-signed certificates. The
/// handshake signature is still verified, so the client does the work a real one does.
pub fn tls_config() -> Result<Arc<ClientConfig>, Failure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure(format!("TLS client configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Makes `count` full STARTTLS handshakes over `sessions` parallel sessions, each a new
/// connection that reads the greeting, says EHLO, STARTTLS, EHLO again over TLS and QUIT,
/// and returns the wall time they took.
pub fn handshakes(target: SocketAddr, sessions: u32, count: u64) -> Result<Duration, Failure> {
    let config = tls_config()?;
    let next = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(sessions as usize + 1));
    let mut threads = Vec::new();
    for _ in 0..sessions {
        let (config, next, start) = (Arc::clone(&config), Arc::clone(&next), Arc::clone(&start));
        threads.push(thread::spawn(move || -> Result<(), Failure> {
            start.wait();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let mut conn = Conn::open(target, Some(&config))?;
                conn.write(b"QUIT\r\n")?;
                conn.expect(221, "QUIT")?;
            }
            Ok(())
        }));
    }
    start.wait();
    let started = Instant::now();
    for thread in threads {
        thread
            .join()
            .map_err(|_| Failure::new("a handshake session panicked"))??;
    }
    Ok(started.elapsed())
}

/// Opens `count` connections to `target` that each read the greeting and say EHLO (and
/// STARTTLS with `tls`), and keeps them open until the returned set is dropped.
pub fn open_idle(
    target: SocketAddr,
    count: u32,
    tls: bool,
    threads: u32,
) -> Result<Vec<IdleConnection>, Failure> {
    let config = tls.then(tls_config).transpose()?;
    let per_thread = count.div_ceil(threads.max(1));
    let mut handles = Vec::new();
    let mut left = count;
    while left > 0 {
        let batch = left.min(per_thread);
        left -= batch;
        let config = config.clone();
        handles.push(thread::spawn(move || {
            (0..batch)
                .map(|_| {
                    Conn::open(target, config.as_ref()).map(|conn| IdleConnection { _conn: conn })
                })
                .collect::<Result<Vec<_>, _>>()
        }));
    }
    let mut all = Vec::with_capacity(count as usize);
    for handle in handles {
        all.extend(
            handle
                .join()
                .map_err(|_| Failure::new("an idle-connection opener panicked"))??,
        );
    }
    Ok(all)
}

/// A connection held open by [`open_idle`].
pub struct IdleConnection {
    _conn: Conn,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    #[test]
    fn content_has_the_exact_size_and_no_leading_dots() {
        for size in [128, 129, 130, 205, 1024, 4096, 100 * 1024, 1 << 20] {
            let content = message_content(size);
            assert_eq!(content.len(), size, "size {size}");
            assert!(content.ends_with(b"\r\n"));
            for line in content.split(|&b| b == b'\n') {
                assert!(!line.starts_with(b"."));
                assert!(line.len() <= LINE_LENGTH + 1);
            }
        }
    }

    #[test]
    fn sizes_parse_with_units_and_weights() {
        assert_eq!(parse_sizes("4096"), Ok(vec![(4096, 1)]));
        assert_eq!(
            parse_sizes("1k:70,4k:25,10m:5"),
            Ok(vec![(1024, 70), (4096, 25), (10 << 20, 5)])
        );
        assert!(parse_sizes("1k:0").is_err());
        assert!(parse_sizes("lots").is_err());
        assert_eq!(size_name(1024), "1 KiB");
        assert_eq!(size_name(10 << 20), "10 MiB");
        assert_eq!(size_name(1000), "1000 B");
    }

    #[test]
    fn the_size_order_keeps_the_weights() {
        let order = size_order(&[(1, 70), (2, 25), (3, 5)]);
        assert_eq!(order.len(), 100);
        assert_eq!(order.iter().filter(|&&s| s == 3).count(), 5);
        assert_eq!(order.iter().filter(|&&s| s == 2).count(), 25);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        use crate::bench::quantile;
        let values: Vec<u32> = (1..=1000).collect();
        assert_eq!(quantile(&values, 0.5), Some(500));
        assert_eq!(quantile(&values, 0.99), Some(990));
        assert_eq!(quantile(&values, 0.999), Some(999));
        assert_eq!(quantile(&values, 1.0), Some(1000));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }

    /// A minimal SMTP server on loopback that records what it is sent.
    fn fake_server(
        replies_fail_at: Option<usize>,
    ) -> (SocketAddr, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            let mut transactions = 0usize;
            'connections: for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = io::BufReader::new(stream.try_clone().unwrap());
                stream.write_all(b"220 fake\r\n").unwrap();
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        continue 'connections;
                    }
                    if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            transactions += 1;
                            seen.push("END".to_owned());
                            let code = if replies_fail_at == Some(transactions) {
                                "554 no"
                            } else {
                                "250 ok"
                            };
                            stream.write_all(format!("{code}\r\n").as_bytes()).unwrap();
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    seen.push(verb.clone());
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-fake\r\n250 PIPELINING\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go\r\n"
                        }
                        "QUIT" => {
                            stream.write_all(b"221 bye\r\n").unwrap();
                            if seen.iter().filter(|v| *v == "END").count() >= 5 {
                                return seen;
                            }
                            continue 'connections;
                        }
                        _ => b"250 ok\r\n",
                    };
                    stream.write_all(reply).unwrap();
                }
            }
            seen
        });
        (addr, handle)
    }

    #[test]
    fn a_load_sends_every_message_and_reconnects_as_asked() {
        let (addr, server) = fake_server(None);
        let report = run(&Spec {
            target: addr,
            sessions: 1,
            messages: 5,
            per_connection: 2,
            sizes: vec![(200, 1)],
            pipelining: true,
            starttls: false,
        })
        .unwrap();
        assert_eq!(report.messages, 5);
        assert_eq!(report.octets, 1000);
        assert_eq!(report.connections, 3);
        assert_eq!(report.latencies_us.len(), 5);
        let seen = server.join().unwrap();
        assert_eq!(seen.iter().filter(|v| *v == "EHLO").count(), 3);
        assert_eq!(seen.iter().filter(|v| *v == "MAIL").count(), 5);
        assert_eq!(seen.iter().filter(|v| *v == "QUIT").count(), 3);
    }

    #[test]
    fn a_refused_message_fails_the_load() {
        let (addr, _server) = fake_server(Some(2));
        let error = run(&Spec {
            target: addr,
            sessions: 1,
            messages: 5,
            per_connection: 0,
            sizes: vec![(200, 1)],
            pipelining: false,
            starttls: false,
        })
        .unwrap_err();
        assert!(error.0.contains("554 no"), "{}", error.0);
    }
}
