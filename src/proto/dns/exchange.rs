//! One question asked of the configured servers: the I/O-free state machine behind the
//! resolver. It chooses the server, the query id and the transport, and decides when to
//! retry, fall back to TCP or give up. It never touches a socket or reads the clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{
    DecodeError, MAX_TCP_MESSAGE, Query, Rcode, RecordType, Response, TCP_LENGTH_LEN,
};
use super::name::Name;
use super::rng::Prng;
use super::{DnsError, ResolverOptions};

/// How a query travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One datagram from a fresh socket bound to a random port.
    Udp,
    /// A fresh connection; the payload carries the RFC 1035 §4.2.2 length prefix.
    Tcp,
}

/// Bytes to send: over UDP as one datagram from a new socket, over TCP on a new
/// connection (the previous socket or connection is dropped first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub server: SocketAddr,
    pub transport: Transport,
    pub payload: Vec<u8>,
}

struct Attempt {
    query: Query,
    server: SocketAddr,
    transport: Transport,
    deadline: Instant,
    /// TCP bytes received so far; at most 2 + `MAX_TCP_MESSAGE` octets.
    stream: Vec<u8>,
}

/// One question in flight.
///
/// Calling order, repeated until `poll_event` gives a result:
/// 1. `poll_event()`: `Some` ends the exchange.
/// 2. `poll_transmit()`: when `Some`, drop the previous socket or connection, open the
///    one the transmit names and send its payload; if that fails, call
///    `handle_transport_error` and go back to 1.
/// 3. Wait for input or for `poll_timeout()`, then call `handle_input` (a datagram with
///    its source, or stream bytes with the server's address), `handle_timeout`, or
///    `handle_transport_error` (socket error, stream closed), and go back to 1.
pub struct Exchange {
    name: Name,
    record_type: RecordType,
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts_left: usize,
    next_server: usize,
    rng: Prng,
    attempt: Option<Attempt>,
    transmit: Option<Transmit>,
    result: Option<Result<Response, DnsError>>,
    last_error: DnsError,
}

impl Exchange {
    /// Starts asking `name`/`record_type`; the first transmit is ready at once.
    pub fn new(
        name: Name,
        record_type: RecordType,
        servers: Vec<SocketAddr>,
        options: &ResolverOptions,
        seed: u64,
        now: Instant,
    ) -> Exchange {
        let mut exchange = Exchange {
            name,
            record_type,
            servers,
            timeout: options.timeout,
            attempts_left: options.attempts.max(1),
            next_server: 0,
            rng: Prng::from_seed(seed),
            attempt: None,
            transmit: None,
            result: None,
            last_error: DnsError::NoServers,
        };
        exchange.next_attempt(now);
        exchange
    }

    /// The bytes to send next, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.take()
    }

    /// The answer (NOERROR or NXDOMAIN) or the error of the last attempt, once done.
    pub fn poll_event(&mut self) -> Option<Result<Response, DnsError>> {
        self.result.take()
    }

    /// When to call `handle_timeout`; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.attempt.as_ref().map(|a| a.deadline)
    }

    /// Bytes from `from`: a whole datagram over UDP, any part of the stream over TCP.
    /// Datagrams from another address, with another id or another question are ignored
    /// (stray or spoofed); anything else malformed ends the attempt.
    pub fn handle_input(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        if from != attempt.server {
            return;
        }
        let decoded = match attempt.transport {
            Transport::Udp => match Response::decode(bytes, &attempt.query) {
                Err(
                    DecodeError::TruncatedHeader
                    | DecodeError::IdMismatch
                    | DecodeError::NotResponse
                    | DecodeError::QuestionMismatch,
                ) => return,
                other => other,
            },
            Transport::Tcp => {
                let Some(message) = take_framed(&mut attempt.stream, bytes) else {
                    return;
                };
                Response::decode(&message, &attempt.query)
            }
        };
        // The TC bit of the header: a truncated datagram may be cut inside a record, and
        // then does not decode at all.
        let truncated = |r: &Result<Response, DecodeError>| match r {
            Ok(response) => response.truncated,
            Err(_) => bytes.get(2).is_some_and(|flags| flags & 0x02 != 0),
        };
        match decoded {
            _ if attempt.transport == Transport::Udp && truncated(&decoded) => {
                // RFC 1035 §4.2.1, RFC 7766: ask the same server again over TCP.
                attempt.transport = Transport::Tcp;
                attempt.deadline = deadline(now, self.timeout);
                attempt.stream.clear();
                self.transmit = Some(Transmit {
                    server: attempt.server,
                    transport: Transport::Tcp,
                    payload: attempt.query.encode_tcp(),
                });
            }
            Err(e) => {
                self.last_error = DnsError::Malformed(e);
                self.next_attempt(now);
            }
            Ok(response) => match response.rcode {
                Rcode::NoError | Rcode::NxDomain => self.finish(Ok(response)),
                other => {
                    self.last_error = DnsError::ServerFailure(other);
                    self.next_attempt(now);
                }
            },
        }
    }

    /// Ends the attempt if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.attempt.as_ref().is_some_and(|a| now >= a.deadline) {
            self.last_error = DnsError::Timeout;
            self.next_attempt(now);
        }
    }

    /// The socket failed or the stream closed before a whole answer: next attempt.
    pub fn handle_transport_error(&mut self, now: Instant) {
        if self.attempt.is_some() {
            self.last_error = DnsError::Network;
            self.next_attempt(now);
        }
    }

    fn next_attempt(&mut self, now: Instant) {
        self.attempt = None;
        self.transmit = None;
        let server = self
            .next_server
            .checked_rem(self.servers.len())
            .and_then(|i| self.servers.get(i));
        let server = match server {
            Some(&server) if self.attempts_left > 0 => server,
            // No server, or no attempt left.
            _ => {
                self.finish(Err(self.last_error));
                return;
            }
        };
        self.attempts_left -= 1;
        self.next_server = self.next_server.wrapping_add(1);
        let query = Query::new(self.rng.next_u16(), self.name.clone(), self.record_type);
        self.transmit = Some(Transmit {
            server,
            transport: Transport::Udp,
            payload: query.encode(),
        });
        self.attempt = Some(Attempt {
            query,
            server,
            transport: Transport::Udp,
            deadline: deadline(now, self.timeout),
            stream: Vec::new(),
        });
    }

    fn finish(&mut self, result: Result<Response, DnsError>) {
        self.attempt = None;
        self.transmit = None;
        self.result = Some(result);
    }
}

fn deadline(now: Instant, timeout: Duration) -> Instant {
    // An absurd timeout that overflows the clock waits "forever" instead of panicking.
    now.checked_add(timeout)
        .unwrap_or(now + Duration::from_secs(86_400))
}

/// Appends stream bytes; returns the message once its length prefix and body are in.
/// Bytes after the message are dropped, so the buffer never exceeds 2 + 65 535 octets.
fn take_framed(stream: &mut Vec<u8>, bytes: &[u8]) -> Option<Vec<u8>> {
    /// Up to `n` octets from the front of `rest`, and what is left.
    fn up_to(rest: &[u8], n: usize) -> (&[u8], &[u8]) {
        rest.split_at_checked(n).unwrap_or((rest, &[]))
    }
    let (prefix, rest) = up_to(bytes, TCP_LENGTH_LEN.saturating_sub(stream.len()));
    stream.extend_from_slice(prefix);
    let (&length, _) = stream.split_first_chunk::<TCP_LENGTH_LEN>()?;
    let body = usize::from(u16::from_be_bytes(length));
    debug_assert!(body <= MAX_TCP_MESSAGE);
    let framed = TCP_LENGTH_LEN + body;
    let (more, _) = up_to(rest, framed.saturating_sub(stream.len()));
    stream.extend_from_slice(more);
    if stream.len() == framed {
        stream.get(TCP_LENGTH_LEN..).map(<[u8]>::to_vec)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::dns::message::tests::{A_MAIL, hex};

    const S1: &str = "127.0.0.1:5301";
    const S2: &str = "127.0.0.1:5302";

    fn servers() -> Vec<SocketAddr> {
        vec![S1.parse().unwrap(), S2.parse().unwrap()]
    }

    fn options(attempts: usize) -> ResolverOptions {
        ResolverOptions {
            timeout: Duration::from_secs(2),
            attempts,
            cache_entries: 0,
        }
    }

    fn start(attempts: usize, now: Instant) -> Exchange {
        Exchange::new(
            Name::parse("mail.example.test").unwrap(),
            RecordType::A,
            servers(),
            &options(attempts),
            42,
            now,
        )
    }

    /// The captured A answer re-addressed to the id of `transmit`, with `flags_low`
    /// replacing the low flag octet (RA and RCODE) and `tc` setting TC.
    fn answer_to(transmit: &Transmit, tc: bool, rcode: u8) -> Vec<u8> {
        let query = match transmit.transport {
            Transport::Udp => &transmit.payload[..],
            Transport::Tcp => &transmit.payload[2..],
        };
        let mut bytes = hex(A_MAIL);
        bytes[..2].copy_from_slice(&query[..2]);
        if tc {
            bytes[2] |= 0x02;
        }
        bytes[3] = (bytes[3] & 0xf0) | rcode;
        bytes
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn answer_over_udp() {
        let t0 = Instant::now();
        let mut ex = start(4, t0);
        let tx = ex.poll_transmit().unwrap();
        assert_eq!(tx.server, servers()[0]);
        assert_eq!(tx.transport, Transport::Udp);
        assert_eq!(ex.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        assert!(ex.poll_event().is_none());
        ex.handle_input(tx.server, &answer_to(&tx, false, 0), t0);
        let response = ex.poll_event().unwrap().unwrap();
        assert_eq!(response.answers.len(), 1);
        assert_eq!(ex.poll_timeout(), None);
        assert!(ex.poll_transmit().is_none());
    }

    #[test]
    fn stray_datagrams_are_ignored() {
        let t0 = Instant::now();
        let mut ex = start(4, t0);
        let tx = ex.poll_transmit().unwrap();
        let good = answer_to(&tx, false, 0);
        // From the other server, with another id, or a different question.
        ex.handle_input(servers()[1], &good, t0);
        let mut wrong_id = good.clone();
        wrong_id[1] ^= 1;
        ex.handle_input(tx.server, &wrong_id, t0);
        let mut wrong_name = good.clone();
        wrong_name[14] = b'x';
        ex.handle_input(tx.server, &wrong_name, t0);
        ex.handle_input(tx.server, &good[..5], t0);
        assert!(ex.poll_event().is_none());
        assert!(ex.poll_transmit().is_none());
        ex.handle_input(tx.server, &good, t0);
        assert!(ex.poll_event().unwrap().is_ok());
    }

    #[test]
    fn timeout_moves_to_next_server_with_new_id() {
        let t0 = Instant::now();
        let mut ex = start(4, t0);
        let first = ex.poll_transmit().unwrap();
        ex.handle_timeout(t0 + Duration::from_millis(1999));
        assert!(ex.poll_transmit().is_none());
        let t1 = t0 + Duration::from_secs(2);
        ex.handle_timeout(t1);
        let second = ex.poll_transmit().unwrap();
        assert_eq!(second.server, servers()[1]);
        assert_ne!(first.payload[..2], second.payload[..2]);
        assert_eq!(ex.poll_timeout(), Some(t1 + Duration::from_secs(2)));
        // A late answer from the first server is not accepted any more.
        ex.handle_input(first.server, &answer_to(&first, false, 0), t1);
        assert!(ex.poll_event().is_none());
        ex.handle_input(second.server, &answer_to(&second, false, 0), t1);
        assert!(ex.poll_event().unwrap().is_ok());
    }

    #[test]
    fn attempts_run_out() {
        let t0 = Instant::now();
        let mut ex = start(3, t0);
        let mut now = t0;
        let mut asked = Vec::new();
        while let Some(tx) = ex.poll_transmit() {
            asked.push(tx.server);
            now += Duration::from_secs(2);
            ex.handle_timeout(now);
        }
        assert_eq!(asked, vec![servers()[0], servers()[1], servers()[0]]);
        assert_eq!(ex.poll_event(), Some(Err(DnsError::Timeout)));
    }

    #[test]
    fn servfail_tries_next_then_reports() {
        let t0 = Instant::now();
        let mut ex = start(2, t0);
        let tx = ex.poll_transmit().unwrap();
        ex.handle_input(tx.server, &answer_to(&tx, false, 2), t0);
        let tx = ex.poll_transmit().unwrap();
        assert_eq!(tx.server, servers()[1]);
        ex.handle_input(tx.server, &answer_to(&tx, false, 5), t0);
        assert_eq!(
            ex.poll_event(),
            Some(Err(DnsError::ServerFailure(Rcode::Refused)))
        );
    }

    #[test]
    fn nxdomain_is_an_answer() {
        let t0 = Instant::now();
        let mut ex = start(2, t0);
        let tx = ex.poll_transmit().unwrap();
        ex.handle_input(tx.server, &answer_to(&tx, false, 3), t0);
        let response = ex.poll_event().unwrap().unwrap();
        assert_eq!(response.rcode, Rcode::NxDomain);
    }

    #[test]
    fn malformed_answer_ends_the_attempt() {
        let t0 = Instant::now();
        let mut ex = start(1, t0);
        let tx = ex.poll_transmit().unwrap();
        let good = answer_to(&tx, false, 0);
        ex.handle_input(tx.server, &good[..good.len() - 1], t0);
        assert_eq!(
            ex.poll_event(),
            Some(Err(DnsError::Malformed(DecodeError::TruncatedRecord)))
        );
    }

    #[test]
    fn transport_error_moves_on() {
        let t0 = Instant::now();
        let mut ex = start(2, t0);
        ex.poll_transmit().unwrap();
        ex.handle_transport_error(t0);
        let tx = ex.poll_transmit().unwrap();
        assert_eq!(tx.server, servers()[1]);
        ex.handle_transport_error(t0);
        assert_eq!(ex.poll_event(), Some(Err(DnsError::Network)));
    }

    #[test]
    fn no_servers() {
        let mut ex = Exchange::new(
            Name::parse("a.test").unwrap(),
            RecordType::A,
            Vec::new(),
            &options(3),
            1,
            Instant::now(),
        );
        assert!(ex.poll_transmit().is_none());
        assert_eq!(ex.poll_event(), Some(Err(DnsError::NoServers)));
    }

    /// Runs a TC answer over UDP then the TCP answer split into the given chunks.
    fn truncated_then_tcp(chunks: &[&[u8]]) -> Option<Result<Response, DnsError>> {
        let t0 = Instant::now();
        let mut ex = start(4, t0);
        let udp = ex.poll_transmit().unwrap();
        ex.handle_input(udp.server, &answer_to(&udp, true, 0), t0);
        let tcp = ex.poll_transmit().unwrap();
        assert_eq!(tcp.transport, Transport::Tcp);
        assert_eq!(tcp.server, udp.server);
        assert_eq!(
            usize::from(u16::from_be_bytes([tcp.payload[0], tcp.payload[1]])),
            tcp.payload.len() - 2
        );
        for chunk in chunks {
            assert!(ex.poll_event().is_none());
            ex.handle_input(tcp.server, chunk, t0);
        }
        ex.poll_event()
    }

    #[test]
    fn truncated_answer_falls_back_to_tcp_at_every_split() {
        // The TCP answer must carry the id of the query sent over TCP (the same query).
        let t0 = Instant::now();
        let mut probe = start(4, t0);
        let udp = probe.poll_transmit().unwrap();
        let message = answer_to(&udp, false, 0);
        let stream = framed(&message);
        let whole = truncated_then_tcp(&[&stream]).unwrap().unwrap();
        assert_eq!(whole.answers.len(), 1);
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(truncated_then_tcp(&[a, b]), Some(Ok(whole.clone())));
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(truncated_then_tcp(&bytes), Some(Ok(whole.clone())));
        // Trailing bytes after the framed message are not part of it.
        let mut extra = stream.clone();
        extra.extend_from_slice(b"junk");
        assert_eq!(truncated_then_tcp(&[&extra]), Some(Ok(whole)));
    }

    #[test]
    fn a_truncated_datagram_cut_inside_a_record_goes_to_tcp() {
        let t0 = Instant::now();
        let mut ex = start(4, t0);
        let udp = ex.poll_transmit().unwrap();
        let mut cut = answer_to(&udp, true, 0);
        cut.truncate(cut.len() - 3);
        ex.handle_input(udp.server, &cut, t0);
        let next = ex.poll_transmit().unwrap();
        assert_eq!((next.transport, next.server), (Transport::Tcp, udp.server));
        // Cut the same way without TC, it is malformed: the next server is asked.
        let mut ex = start(4, t0);
        let udp = ex.poll_transmit().unwrap();
        let mut cut = answer_to(&udp, false, 0);
        cut.truncate(cut.len() - 3);
        ex.handle_input(udp.server, &cut, t0);
        let next = ex.poll_transmit().unwrap();
        assert_eq!(next.transport, Transport::Udp);
        assert_ne!(next.server, udp.server);
    }

    #[test]
    fn incomplete_tcp_answer_then_close() {
        let t0 = Instant::now();
        let mut ex = start(1, t0);
        let udp = ex.poll_transmit().unwrap();
        ex.handle_input(udp.server, &answer_to(&udp, true, 0), t0);
        let tcp = ex.poll_transmit().unwrap();
        let stream = framed(&answer_to(&tcp, false, 0));
        ex.handle_input(tcp.server, &stream[..10], t0);
        assert!(ex.poll_event().is_none());
        ex.handle_transport_error(t0);
        assert_eq!(ex.poll_event(), Some(Err(DnsError::Network)));
    }

    /// Random sequences of the inputs the async layer can produce: the exchange always
    /// ends, never sends more queries than its attempt limit, and only ever falls back
    /// to TCP after a UDP query.
    #[test]
    fn generated_input_sequences() {
        let mut rng = Prng::from_seed(99);
        for case in 0..2000u64 {
            let attempts = 1 + rng.below(5);
            let t0 = Instant::now();
            let mut now = t0;
            let mut ex = Exchange::new(
                Name::parse("mail.example.test").unwrap(),
                RecordType::A,
                servers(),
                &options(attempts),
                case,
                now,
            );
            let (mut udp_sent, mut tcp_sent) = (0, 0);
            let mut current: Option<Transmit> = None;
            let mut steps = 0;
            let result = loop {
                if let Some(result) = ex.poll_event() {
                    break result;
                }
                steps += 1;
                assert!(steps < 1000, "case {case} does not end");
                if let Some(tx) = ex.poll_transmit() {
                    match tx.transport {
                        Transport::Udp => udp_sent += 1,
                        Transport::Tcp => tcp_sent += 1,
                    }
                    current = Some(tx);
                }
                let deadline = ex
                    .poll_timeout()
                    .expect("unfinished exchange has a deadline");
                assert!(deadline > now);
                let tx = current.clone().expect("a query was sent");
                let wire = |message: Vec<u8>| match tx.transport {
                    Transport::Udp => message,
                    Transport::Tcp => framed(&message),
                };
                match rng.below(8) {
                    0 => {
                        now = deadline;
                        ex.handle_timeout(now);
                    }
                    1 => {
                        now += Duration::from_millis(1);
                        ex.handle_timeout(now);
                    }
                    2 => {
                        let other = if tx.server == servers()[0] { 1 } else { 0 };
                        ex.handle_input(servers()[other], &answer_to(&tx, false, 0), now);
                    }
                    3 => {
                        let rcode = [0, 2, 3, 5][rng.below(4)];
                        ex.handle_input(tx.server, &wire(answer_to(&tx, false, rcode)), now);
                    }
                    4 => ex.handle_input(tx.server, &wire(answer_to(&tx, true, 0)), now),
                    5 => ex.handle_transport_error(now),
                    6 => {
                        let junk: Vec<u8> =
                            (0..rng.below(40)).map(|_| rng.next_u64() as u8).collect();
                        ex.handle_input(tx.server, &junk, now);
                    }
                    _ => {
                        let answer = wire(answer_to(&tx, false, 0));
                        let cut = rng.below(answer.len());
                        ex.handle_input(tx.server, &answer[..cut], now);
                        ex.handle_input(tx.server, &answer[cut..], now);
                    }
                }
            };
            assert!(ex.poll_timeout().is_none());
            assert!(ex.poll_transmit().is_none());
            assert!(udp_sent <= attempts, "case {case}: {udp_sent} > {attempts}");
            assert!(tcp_sent <= udp_sent);
            if let Ok(response) = result {
                assert!(matches!(response.rcode, Rcode::NoError | Rcode::NxDomain));
            }
        }
    }
}
