//! The PROXY protocol header (HAProxy's "The PROXY protocol", versions 1 and 2): what a
//! load balancer sends first on each connection it relays, naming the client it relays
//! for. An I/O-free core: bytes and `Instant`s in; the header, the bytes that followed it,
//! or the reason it was refused out.
//!
//! Version 1 is one line of text, `PROXY TCP4 192.0.2.7 198.51.100.1 49152 25\r\n`
//! (`TCP6` for IPv6; `PROXY UNKNOWN …\r\n` when the balancer cannot say), at most
//! [`V1_MAX_LINE`] octets. Version 2 is binary: the 12-octet [`V2_SIGNATURE`], a
//! version and command octet (`LOCAL` for the balancer's own connections, such as health
//! checks, or `PROXY`), an address family and protocol octet, a 16-bit length, then the
//! addresses and ports and optional type-length-value fields (TLVs), which are skipped
//! (a `CRC32C` one is checked). The first octets say which version it is; anything else
//! is refused.
//!
//! [`decode`] judges a prefix of the connection's bytes; [`HeaderReader`] keeps the
//! bytes read so far, the deadline, and hands back the bytes after the header, which
//! belong to the session (a pipelining client's first commands, a TLS ClientHello).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The longest version-1 line, CRLF included: 107 octets (the specification's worst
/// case, `PROXY UNKNOWN` with two full IPv6 addresses and ports). A line without its CRLF
/// within this many octets is refused.
pub const V1_MAX_LINE: usize = 107;

/// What begins a version-1 header.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// What begins a version-2 header: chosen by the specification to be invalid in every
/// common protocol.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A version-2 header's fixed part: the signature, the version and command, the family
/// and protocol, and the 16-bit length of what follows.
pub const V2_FIXED_LEN: usize = 16;

/// The most octets a version-2 header may carry after its fixed part: 2 KiB. The
/// addresses take at most 216 (two UNIX paths); the TLVs a balancer adds (ALPN, the
/// client's SNI of up to 255 octets, a unique id of up to 128, the TLS details, a
/// CRC32C) fit several times over. The 16-bit field could say 65535: a larger length is
/// refused as soon as the fixed part has arrived, before anything more is buffered.
pub const MAX_V2_PAYLOAD: usize = 2048;

/// The longest header of either version, and so the most a [`HeaderReader`] buffers
/// before it decides (plus one read of the caller's).
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + MAX_V2_PAYLOAD;

/// How long a connection from a balancer has to deliver its whole header: 5 s. The
/// specification asks for at least 3 s, to cover a TCP retransmission; 5 s covers two
/// (Linux's first retransmission timeout is 1 s, then 2 s). Octets trickling in do not
/// extend it. A balancer sends its header at once, when it connects.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 2's command for the balancer's own connections (health checks).
const V2_LOCAL: u8 = 0x0;
/// Version 2's command for a relayed connection.
const V2_PROXY: u8 = 0x1;

/// Version 2's address families (0 is unspecified).
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;

/// Version 2's transport protocols.
const PROTO_STREAM: u8 = 0x1;
const PROTO_DGRAM: u8 = 0x2;

/// The two 16-bit ports that end an address block.
const V2_PORTS_LEN: usize = 2 * 2;
/// The address block of TCP over IPv4 and IPv6: two addresses, two ports.
const V2_INET_LEN: usize = 2 * 4 + V2_PORTS_LEN;
const V2_INET6_LEN: usize = 2 * 16 + V2_PORTS_LEN;

/// The TLV type of a CRC32C checksum of the whole header.
const PP2_TYPE_CRC32C: u8 = 0x03;
/// A TLV's type and length octets.
const TLV_HEAD_LEN: usize = 3;
/// A port in decimal: at most 5 digits (65535).
const MAX_PORT_DIGITS: usize = 5;

/// Which version of the protocol a header was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// The balancer relays a TCP connection: the client's address and port, and the
    /// address and port the client connected to (the balancer's). IPv4 clients given as
    /// IPv4-mapped IPv6 addresses are given back as IPv4.
    Relayed {
        client: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer's own connection (version 2's `LOCAL`, such as a health check):
    /// served as a connection from the balancer itself.
    Local,
    /// A connection the balancer relays without saying from where: version 1's
    /// `UNKNOWN` (a health check, or a client the balancer cannot name), or a version-2
    /// `PROXY` for a client with no IP address (a UNIX socket, an unspecified family or
    /// protocol). The specification lets a receiver serve it as the balancer's own; a
    /// client that may be anyone is served as an unclassified one instead, never with
    /// the balancer's trust.
    Unknown,
}

/// A decision on a prefix of a connection's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Everything so far may begin a header: more octets are needed.
    Incomplete,
    /// A whole header, `length` octets long; what follows it is the session's.
    Complete {
        version: Version,
        header: Header,
        length: usize,
    },
}

/// Why a connection's header was refused. Each is the balancer's (or an impostor's)
/// fault; none is ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The first octets begin neither version's header.
    NotProxy,
    /// No CRLF within [`V1_MAX_LINE`] octets.
    V1TooLong,
    /// A version-1 line that does not follow the grammar.
    V1Malformed(&'static str),
    /// A version-2 version other than 2.
    V2Version(u8),
    /// A version-2 command other than `LOCAL` and `PROXY`.
    V2Command(u8),
    /// A version-2 family and protocol octet with an unassigned family or protocol.
    V2Family(u8),
    /// A version-2 length over [`MAX_V2_PAYLOAD`].
    V2TooLong(usize),
    /// A version-2 length too short for the addresses its family has.
    V2ShortAddresses { length: usize, needed: usize },
    /// TLVs that do not fill the rest of the header exactly, or a CRC32C TLV that is not
    /// four octets.
    V2BadTlv,
    /// A CRC32C TLV that does not match the header.
    V2Checksum,
    /// An address no client connects from: unspecified, multicast or broadcast.
    BadClient(IpAddr),
    /// No whole header within [`HEADER_TIMEOUT`].
    Timeout,
    /// The connection ended after this many octets, before a whole header.
    Closed(usize),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::NotProxy => {
                f.write_str("no PROXY header: the connection began with other octets")
            }
            HeaderError::V1TooLong => write!(
                f,
                "PROXY v1 line without its CRLF in the first {V1_MAX_LINE} octets"
            ),
            HeaderError::V1Malformed(why) => write!(f, "malformed PROXY v1 line: {why}"),
            HeaderError::V2Version(v) => write!(f, "PROXY header of unknown version {v}"),
            HeaderError::V2Command(c) => write!(f, "PROXY v2 header with unknown command {c}"),
            HeaderError::V2Family(b) => write!(
                f,
                "PROXY v2 header with unknown address family or protocol 0x{b:02x}"
            ),
            HeaderError::V2TooLong(n) => write!(
                f,
                "PROXY v2 header of {n} octets after its fixed part, over the limit of {MAX_V2_PAYLOAD}"
            ),
            HeaderError::V2ShortAddresses { length, needed } => write!(
                f,
                "PROXY v2 header of {length} octets after its fixed part, too short for its {needed} octets of addresses"
            ),
            HeaderError::V2BadTlv => f.write_str("PROXY v2 header with a malformed TLV"),
            HeaderError::V2Checksum => f.write_str("PROXY v2 header fails its CRC32C checksum"),
            HeaderError::BadClient(ip) => {
                write!(f, "PROXY header names {ip}, which no client connects from")
            }
            HeaderError::Timeout => write!(
                f,
                "no whole PROXY header within {}s",
                HEADER_TIMEOUT.as_secs()
            ),
            HeaderError::Closed(0) => f.write_str("connection closed before a PROXY header"),
            HeaderError::Closed(n) => {
                write!(f, "connection closed after {n} octets of a PROXY header")
            }
        }
    }
}

/// Judges `input`, the first octets of a connection: a whole header (and its length),
/// more needed, or refused. The decision depends only on the octets up to the point
/// where it is made, so the same connection split into reads anyhow is judged the same.
pub fn decode(input: &[u8]) -> Result<Decoded, HeaderError> {
    if starts_like(input, V1_PREFIX) {
        if input.len() < V1_PREFIX.len() {
            return Ok(Decoded::Incomplete);
        }
        return decode_v1(input);
    }
    if starts_like(input, V2_SIGNATURE) {
        if input.len() < V2_SIGNATURE.len() {
            return Ok(Decoded::Incomplete);
        }
        return decode_v2(input);
    }
    Err(HeaderError::NotProxy)
}

/// Whether `input` and `expected` agree on their common length.
fn starts_like(input: &[u8], expected: &[u8]) -> bool {
    input.iter().zip(expected).all(|(a, b)| a == b)
}

fn decode_v1(input: &[u8]) -> Result<Decoded, HeaderError> {
    let window = input.get(..V1_MAX_LINE).unwrap_or(input);
    let mut end = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    end = Some(i);
                    break;
                }
                Some(_) => return Err(HeaderError::V1Malformed("a CR without its LF")),
                // The LF may still come, within the line's limit.
                None => {}
            },
            b'\n' => return Err(HeaderError::V1Malformed("a LF without its CR")),
            _ => {}
        }
    }
    let Some(end) = end else {
        return if window.len() >= V1_MAX_LINE {
            Err(HeaderError::V1TooLong)
        } else {
            Ok(Decoded::Incomplete)
        };
    };
    // INVARIANT: `decode` saw V1_PREFIX, which holds no CR, so `end` is past it.
    let header = v1_line(&input[V1_PREFIX.len()..end])?;
    Ok(Decoded::Complete {
        version: Version::V1,
        header,
        length: end + 2,
    })
}

/// The words after `PROXY `, without the CRLF.
fn v1_line(line: &[u8]) -> Result<Header, HeaderError> {
    const UNKNOWN: &[u8] = b"UNKNOWN";
    if let Some(rest) = line.strip_prefix(UNKNOWN)
        && matches!(rest.first(), None | Some(b' '))
    {
        // The specification: anything up to the CRLF is to be ignored.
        return Ok(Header::Unknown);
    }
    let malformed = HeaderError::V1Malformed;
    let text = std::str::from_utf8(line).map_err(|_| malformed("octets that are not text"))?;
    // Word by word, in order: the first thing wrong is the one reported.
    let mut words = text.split(' ');
    let mut word = |what| words.next().ok_or(malformed(what));
    let v6 = match word("no protocol")? {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(malformed("a protocol other than TCP4, TCP6 and UNKNOWN")),
    };
    let address = |text: &str| -> Result<IpAddr, HeaderError> {
        if v6 {
            ipv6(text).map(IpAddr::V6)
        } else {
            ipv4(text).map(IpAddr::V4)
        }
    };
    let source = address(word("no source address")?)?;
    let destination = address(word("no destination address")?)?;
    let source_port = port(word("no source port")?)?;
    let destination_port = port(word("no destination port")?)?;
    if words.next().is_some() {
        return Err(malformed("words after the destination port"));
    }
    relayed(
        SocketAddr::new(source, source_port),
        SocketAddr::new(destination, destination_port),
    )
}

fn ipv4(text: &str) -> Result<Ipv4Addr, HeaderError> {
    // std's parser takes exactly the specification's form: four decimal numbers to 255,
    // no leading zeros.
    text.parse()
        .map_err(|_| HeaderError::V1Malformed("a TCP4 address that is not an IPv4 address"))
}

fn ipv6(text: &str) -> Result<Ipv6Addr, HeaderError> {
    text.parse()
        .map_err(|_| HeaderError::V1Malformed("a TCP6 address that is not an IPv6 address"))
}

/// A decimal port: 0 to 65535, no sign, no leading zero.
fn port(text: &str) -> Result<u16, HeaderError> {
    let bad = HeaderError::V1Malformed("a port that is not a number from 0 to 65535");
    if text.is_empty()
        || text.len() > MAX_PORT_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return Err(bad);
    }
    text.parse().map_err(|_| bad)
}

/// A relayed connection, its addresses in their canonical form; refused when the client
/// address is one no client connects from.
fn relayed(client: SocketAddr, destination: SocketAddr) -> Result<Header, HeaderError> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, destination) = (canonical(client), canonical(destination));
    let ip = client.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(HeaderError::BadClient(ip));
    }
    Ok(Header::Relayed {
        client,
        destination,
    })
}

fn decode_v2(input: &[u8]) -> Result<Decoded, HeaderError> {
    // Each check is made as soon as its octet is there.
    let Some(&version_command) = input.get(12) else {
        return Ok(Decoded::Incomplete);
    };
    let (version, command) = (version_command >> 4, version_command & 0x0f);
    if version != 2 {
        return Err(HeaderError::V2Version(version));
    }
    if command != V2_LOCAL && command != V2_PROXY {
        return Err(HeaderError::V2Command(command));
    }
    let Some(&family_protocol) = input.get(13) else {
        return Ok(Decoded::Incomplete);
    };
    let (family, protocol) = (family_protocol >> 4, family_protocol & 0x0f);
    // A LOCAL header's family is to be ignored, with its addresses.
    if command == V2_PROXY && (family > AF_UNIX || protocol > PROTO_DGRAM) {
        return Err(HeaderError::V2Family(family_protocol));
    }
    let (Some(&high), Some(&low)) = (input.get(14), input.get(15)) else {
        return Ok(Decoded::Incomplete);
    };
    let payload = usize::from(u16::from_be_bytes([high, low]));
    if payload > MAX_V2_PAYLOAD {
        return Err(HeaderError::V2TooLong(payload));
    }
    let length = V2_FIXED_LEN + payload;
    let Some(header) = input.get(..length) else {
        return Ok(Decoded::Incomplete);
    };
    if command == V2_LOCAL {
        return Ok(Decoded::Complete {
            version: Version::V2,
            header: Header::Local,
            length,
        });
    }
    let needed = match (family, protocol) {
        (AF_INET, PROTO_STREAM) => V2_INET_LEN,
        (AF_INET6, PROTO_STREAM) => V2_INET6_LEN,
        // What the specification lets a receiver serve as the connection's own
        // endpoints: an unspecified family or protocol, UNIX sockets, datagrams.
        _ => {
            return Ok(Decoded::Complete {
                version: Version::V2,
                header: Header::Unknown,
                length,
            });
        }
    };
    // What follows the fixed part: the addresses, then TLVs.
    let block = header.get(V2_FIXED_LEN..).unwrap_or_default();
    let short = HeaderError::V2ShortAddresses {
        length: block.len(),
        needed,
    };
    let Some((addresses, _)) = block.split_at_checked(needed) else {
        return Err(short);
    };
    check_tlvs(header, V2_FIXED_LEN + needed)?;
    let Some((addresses, &[sp0, sp1, dp0, dp1])) = addresses.split_last_chunk::<V2_PORTS_LEN>()
    else {
        return Err(short);
    };
    let (source, destination) = addresses.split_at(addresses.len() / 2);
    let ip = |octets: &[u8]| -> IpAddr {
        match <[u8; 4]>::try_from(octets) {
            Ok(v4) => IpAddr::from(v4),
            // INVARIANT: the address block is 12 or 36 octets, so each address is 4 or 16.
            Err(_) => IpAddr::from(<[u8; 16]>::try_from(octets).unwrap_or([0; 16])),
        }
    };
    let source_port = u16::from_be_bytes([sp0, sp1]);
    let destination_port = u16::from_be_bytes([dp0, dp1]);
    let header = relayed(
        SocketAddr::new(ip(source), source_port),
        SocketAddr::new(ip(destination), destination_port),
    )?;
    Ok(Decoded::Complete {
        version: Version::V2,
        header,
        length,
    })
}

/// Walks the TLVs from `start` to the end of `header`: each must fit, and a CRC32C one
/// must match the header with its own value taken as zero.
fn check_tlvs(header: &[u8], start: usize) -> Result<(), HeaderError> {
    let mut at = start;
    while at < header.len() {
        // The header up to this TLV's value, its value, and what follows.
        let (before, rest) = header
            .split_at_checked(at + TLV_HEAD_LEN)
            .ok_or(HeaderError::V2BadTlv)?;
        let Some(&[kind, high, low]) = before.get(at..) else {
            return Err(HeaderError::V2BadTlv);
        };
        let length = usize::from(u16::from_be_bytes([high, low]));
        let (value, after) = rest.split_at_checked(length).ok_or(HeaderError::V2BadTlv)?;
        if kind == PP2_TYPE_CRC32C {
            let sent = <[u8; 4]>::try_from(value).map_err(|_| HeaderError::V2BadTlv)?;
            let crc = crc32c(0, before);
            let crc = crc32c(crc, &[0; 4]);
            let crc = crc32c(crc, after);
            if crc != u32::from_be_bytes(sent) {
                return Err(HeaderError::V2Checksum);
            }
        }
        at = before.len() + value.len();
    }
    Ok(())
}

/// CRC32C (Castagnoli, RFC 4960 appendix B), continuing from `crc` (0 to start).
/// Bit by bit: a header is at most [`MAX_HEADER_LEN`] octets, and rarely has one.
pub fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    const POLYNOMIAL: u32 = 0x82f6_3b78;
    let mut c = !crc;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ POLYNOMIAL
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A header read whole, and what came after it in the same reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub version: Version,
    pub header: Header,
    /// The octets after the header: the start of the session.
    pub after: Vec<u8>,
}

/// Reads one connection's header.
///
/// Calling order: make it when the connection is accepted; give it every read with
/// [`handle_input`](Self::handle_input), the passing of
/// [`poll_timeout`](Self::poll_timeout) with [`handle_timeout`](Self::handle_timeout)
/// and the end of the stream with [`handle_end`](Self::handle_end); after each, ask
/// [`poll_outcome`](Self::poll_outcome), which answers once: the header and the octets
/// after it, or why the connection is to be closed. It then takes no more input.
#[derive(Debug)]
pub struct HeaderReader {
    /// The octets so far: fewer than [`MAX_HEADER_LEN`] before the last read.
    buffered: Vec<u8>,
    deadline: Instant,
    decided: bool,
    outcome: Option<Result<Received, HeaderError>>,
}

impl HeaderReader {
    pub fn new(now: Instant) -> HeaderReader {
        HeaderReader {
            buffered: Vec::new(),
            deadline: now.checked_add(HEADER_TIMEOUT).unwrap_or(now),
            decided: false,
            outcome: None,
        }
    }

    /// Takes octets read from the connection.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if self.decided || bytes.is_empty() {
            return;
        }
        self.buffered.extend_from_slice(bytes);
        match decode(&self.buffered) {
            Ok(Decoded::Incomplete) => {}
            Ok(Decoded::Complete {
                version,
                header,
                length,
            }) => {
                let after = self.buffered.split_off(length);
                self.decide(Ok(Received {
                    version,
                    header,
                    after,
                }));
            }
            Err(e) => self.decide(Err(e)),
        }
    }

    /// Acts on the time: past the deadline without a whole header, the connection is
    /// refused.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.decided && now >= self.deadline {
            self.decide(Err(HeaderError::Timeout));
        }
    }

    /// The connection ended (or failed) before a whole header.
    pub fn handle_end(&mut self) {
        if !self.decided {
            self.decide(Err(HeaderError::Closed(self.buffered.len())));
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout); `None` once decided.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.decided).then_some(self.deadline)
    }

    /// The decision, once.
    pub fn poll_outcome(&mut self) -> Option<Result<Received, HeaderError>> {
        self.outcome.take()
    }

    fn decide(&mut self, outcome: Result<Received, HeaderError>) {
        self.decided = true;
        self.buffered = Vec::new();
        self.outcome = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn relayed_header(client: &str, destination: &str) -> Header {
        Header::Relayed {
            client: sa(client),
            destination: sa(destination),
        }
    }

    /// A version-2 header: command, family and protocol octet, the octets after the
    /// fixed part.
    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn inet(source: [u8; 4], destination: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
        let mut out = source.to_vec();
        out.extend_from_slice(&destination);
        out.extend_from_slice(&ports.0.to_be_bytes());
        out.extend_from_slice(&ports.1.to_be_bytes());
        out
    }

    fn inet6(source: &str, destination: &str, ports: (u16, u16)) -> Vec<u8> {
        let mut out = source.parse::<Ipv6Addr>().unwrap().octets().to_vec();
        out.extend_from_slice(&destination.parse::<Ipv6Addr>().unwrap().octets());
        out.extend_from_slice(&ports.0.to_be_bytes());
        out.extend_from_slice(&ports.1.to_be_bytes());
        out
    }

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    /// `payload` with a CRC32C TLV at its end that matches the whole header.
    fn with_crc(family: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = payload.to_vec();
        body.extend_from_slice(&tlv(PP2_TYPE_CRC32C, &[0; 4]));
        let mut header = v2(V2_PROXY, family, &body);
        let crc = crc32c(0, &header);
        let at = header.len() - 4;
        header[at..].copy_from_slice(&crc.to_be_bytes());
        header
    }

    fn complete(input: &[u8]) -> (Version, Header, usize) {
        match decode(input) {
            Ok(Decoded::Complete {
                version,
                header,
                length,
            }) => (version, header, length),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn refused(input: &[u8]) -> HeaderError {
        match decode(input) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    /// The reader's outcome for `input` fed in the pieces `cuts` makes (indices into
    /// it), with the pieces after the decision appended to `after`, as the session
    /// would get them.
    fn read_in_pieces(input: &[u8], cuts: &[usize]) -> Option<Result<Received, HeaderError>> {
        let now = Instant::now();
        let mut reader = HeaderReader::new(now);
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(input.len());
        let mut outcome: Option<Result<Received, HeaderError>> = None;
        for pair in bounds.windows(2) {
            let piece = &input[pair[0]..pair[1]];
            match outcome.as_mut() {
                Some(Ok(received)) => received.after.extend_from_slice(piece),
                Some(Err(_)) => {}
                None => {
                    reader.handle_input(piece);
                    outcome = reader.poll_outcome();
                }
            }
        }
        outcome
    }

    /// Whole, one octet at a time, and cut in two at every index: the same outcome.
    fn same_in_every_split(input: &[u8]) -> Option<Result<Received, HeaderError>> {
        let whole = read_in_pieces(input, &[]);
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(read_in_pieces(input, &bytewise), whole, "byte by byte");
        for cut in 0..=input.len() {
            assert_eq!(read_in_pieces(input, &[cut]), whole, "cut at {cut}");
        }
        whole
    }

    #[test]
    fn version_one_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 49152 25\r\n";
        assert_eq!(
            complete(line),
            (
                Version::V1,
                relayed_header("192.0.2.7:49152", "198.51.100.1:25"),
                line.len()
            )
        );
        let line = b"PROXY TCP6 2001:db8::7 2001:DB8::1 65535 0\r\n";
        assert_eq!(
            complete(line).1,
            relayed_header("[2001:db8::7]:65535", "[2001:db8::1]:0")
        );
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
            b"PROXY UNKNOWN anything\x01at all\xff\r\n",
        ] {
            assert_eq!(complete(line), (Version::V1, Header::Unknown, line.len()));
        }
    }

    #[test]
    fn the_longest_version_one_line_is_taken_and_one_more_octet_is_not() {
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(line.len(), V1_MAX_LINE);
        assert_eq!(complete(line.as_bytes()).2, V1_MAX_LINE);
        let longer = format!("PROXY UNKNOWN {full} {full} 65535 655350\r\n");
        assert_eq!(refused(longer.as_bytes()), HeaderError::V1TooLong);
        // Refused as soon as the limit is reached without a CRLF: nothing more is read.
        let endless = vec![b'x'; 500];
        let mut input = b"PROXY TCP4 ".to_vec();
        input.extend_from_slice(&endless);
        assert_eq!(refused(&input[..V1_MAX_LINE]), HeaderError::V1TooLong);
        assert_eq!(decode(&input[..V1_MAX_LINE - 1]), Ok(Decoded::Incomplete));
        // A CR in the last place: its LF would be the 108th octet.
        let mut input = vec![b'x'; V1_MAX_LINE + 1];
        input[..6].copy_from_slice(V1_PREFIX);
        input[V1_MAX_LINE - 1] = b'\r';
        input[V1_MAX_LINE] = b'\n';
        assert_eq!(refused(&input), HeaderError::V1TooLong);
    }

    #[test]
    fn malformed_version_one_lines_are_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"PROXY TCP4 192.0.2.7  198.51.100.1 49152 25\r\n", "IPv4"),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 49152\r\n",
                "no destination port",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 49152 25 7\r\n",
                "words after",
            ),
            (b"PROXY TCP4\r\n", "no source address"),
            (b"PROXY \r\n", "other than TCP4"),
            (
                b"PROXY TCP5 192.0.2.7 198.51.100.1 49152 25\r\n",
                "other than TCP4",
            ),
            (
                b"PROXY tcp4 192.0.2.7 198.51.100.1 49152 25\r\n",
                "other than TCP4",
            ),
            (b"PROXY UNKNOWNX\r\n", "other than TCP4"),
            (b"PROXY TCP4 2001:db8::7 198.51.100.1 49152 25\r\n", "IPv4"),
            (b"PROXY TCP6 192.0.2.7 2001:db8::1 49152 25\r\n", "IPv6"),
            (b"PROXY TCP4 192.0.2.07 198.51.100.1 49152 25\r\n", "IPv4"),
            (b"PROXY TCP4 192.0.2.256 198.51.100.1 49152 25\r\n", "IPv4"),
            (b"PROXY TCP4 192.0.2.7 198.51.100.1 049152 25\r\n", "port"),
            (b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n", "port"),
            (b"PROXY TCP4 192.0.2.7 198.51.100.1 +4915 25\r\n", "port"),
            (b"PROXY TCP4 192.0.2.7 198.51.100.1 49152 \r\n", "port"),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 49152 25 \r\n",
                "words after",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 4915\xc3\xa9 25\r\n",
                "port",
            ),
            (b"PROXY TCP4 192.0.2.7 198.51.100.1 \xff 25\r\n", "not text"),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 49152 25\n",
                "LF without",
            ),
            (
                b"PROXY TCP4 192.0.2.7\r198.51.100.1 49152 25\r\n",
                "CR without",
            ),
            (b"PROXY UNKNOWN\n\r\n", "LF without"),
        ];
        for (line, why) in cases {
            let e = refused(line);
            assert!(
                e.to_string().contains(why),
                "{:?}: {e}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn version_two_tcp_over_ipv4_and_ipv6() {
        let header = v2(
            V2_PROXY,
            0x11,
            &inet([192, 0, 2, 7], [198, 51, 100, 1], (49152, 25)),
        );
        assert_eq!(
            complete(&header),
            (
                Version::V2,
                relayed_header("192.0.2.7:49152", "198.51.100.1:25"),
                16 + 12
            )
        );
        let header = v2(
            V2_PROXY,
            0x21,
            &inet6("2001:db8::7", "2001:db8::1", (65535, 587)),
        );
        assert_eq!(
            complete(&header),
            (
                Version::V2,
                relayed_header("[2001:db8::7]:65535", "[2001:db8::1]:587"),
                16 + 36
            )
        );
        // An IPv4 client as an IPv4-mapped IPv6 address is an IPv4 client.
        let header = v2(
            V2_PROXY,
            0x21,
            &inet6("::ffff:192.0.2.7", "::ffff:198.51.100.1", (1, 25)),
        );
        assert_eq!(
            complete(&header).1,
            relayed_header("192.0.2.7:1", "198.51.100.1:25")
        );
        let line = b"PROXY TCP6 ::ffff:192.0.2.7 ::1 1 25\r\n";
        assert_eq!(complete(line).1, relayed_header("192.0.2.7:1", "[::1]:25"));
    }

    #[test]
    fn local_version_two_headers_are_the_balancers_own_and_addressless_ones_unknown() {
        // LOCAL: the block is skipped whatever it holds, and its length is not assumed 0.
        for (family, payload) in [
            (0x00, Vec::new()),
            (0x11, inet([192, 0, 2, 7], [198, 51, 100, 1], (1, 2))),
            (0xff, vec![0xee; 40]),
        ] {
            let header = v2(V2_LOCAL, family, &payload);
            assert_eq!(
                complete(&header),
                (Version::V2, Header::Local, header.len())
            );
        }
        // PROXY for what has no IP client, or what the receiver may take as UNSPEC.
        for (family, payload) in [
            (0x00, Vec::new()),
            (0x10, inet([192, 0, 2, 7], [198, 51, 100, 1], (1, 2))),
            (0x12, inet([192, 0, 2, 7], [198, 51, 100, 1], (1, 2))),
            (0x22, inet6("2001:db8::7", "2001:db8::1", (1, 2))),
            (0x31, vec![b'/'; 216]),
            (0x32, vec![b'/'; 216]),
        ] {
            let header = v2(V2_PROXY, family, &payload);
            assert_eq!(complete(&header).1, Header::Unknown, "family {family:#x}");
        }
    }

    #[test]
    fn bad_version_two_fixed_parts_are_refused_at_their_octet() {
        let good = v2(V2_PROXY, 0x11, &inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 2)));
        let mut wrong_version = good.clone();
        wrong_version[12] = 0x11;
        assert_eq!(refused(&wrong_version[..13]), HeaderError::V2Version(1));
        let mut wrong_command = good.clone();
        wrong_command[12] = 0x22;
        assert_eq!(refused(&wrong_command[..13]), HeaderError::V2Command(2));
        for family in [0x41, 0x13, 0xf1] {
            let mut wrong_family = good.clone();
            wrong_family[13] = family;
            assert_eq!(refused(&wrong_family[..14]), HeaderError::V2Family(family));
        }
        let mut bad_signature = good.clone();
        bad_signature[11] = b'X';
        assert_eq!(refused(&bad_signature), HeaderError::NotProxy);
        assert_eq!(refused(&bad_signature[..12]), HeaderError::NotProxy);
    }

    #[test]
    fn the_version_two_length_is_bounded() {
        // The limit itself is taken (addresses, then a NOOP TLV filling the rest).
        let mut payload = inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 2));
        let fill = MAX_V2_PAYLOAD - payload.len() - TLV_HEAD_LEN;
        payload.extend_from_slice(&tlv(0x04, &vec![0; fill]));
        let header = v2(V2_PROXY, 0x11, &payload);
        assert_eq!(header.len(), MAX_HEADER_LEN);
        assert_eq!(complete(&header).2, MAX_HEADER_LEN);
        // One more is refused once the fixed part is in, before any of it comes.
        payload.push(0);
        let header = v2(V2_PROXY, 0x11, &payload);
        assert_eq!(
            refused(&header[..V2_FIXED_LEN]),
            HeaderError::V2TooLong(MAX_V2_PAYLOAD + 1)
        );
        let mut largest = v2(V2_PROXY, 0x11, &[]);
        largest[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            refused(&largest),
            HeaderError::V2TooLong(usize::from(u16::MAX))
        );
    }

    #[test]
    fn version_two_addresses_must_fit_their_family() {
        let short = v2(V2_PROXY, 0x11, &[192, 0, 2, 7, 10, 0, 0, 1, 0, 1, 0]);
        assert_eq!(
            refused(&short),
            HeaderError::V2ShortAddresses {
                length: 11,
                needed: 12
            }
        );
        let short = v2(V2_PROXY, 0x21, &[0; 35]);
        assert_eq!(
            refused(&short),
            HeaderError::V2ShortAddresses {
                length: 35,
                needed: 36
            }
        );
    }

    #[test]
    fn clients_no_one_connects_from_are_refused() {
        for (source, ip) in [
            ([0, 0, 0, 0], "0.0.0.0"),
            ([224, 0, 0, 1], "224.0.0.1"),
            ([255, 255, 255, 255], "255.255.255.255"),
        ] {
            let header = v2(V2_PROXY, 0x11, &inet(source, [10, 0, 0, 1], (1, 25)));
            assert_eq!(
                refused(&header),
                HeaderError::BadClient(ip.parse().unwrap())
            );
        }
        let header = v2(V2_PROXY, 0x21, &inet6("::", "::1", (1, 25)));
        assert_eq!(
            refused(&header),
            HeaderError::BadClient("::".parse().unwrap())
        );
        assert_eq!(
            refused(b"PROXY TCP6 ff02::1 ::1 1 25\r\n"),
            HeaderError::BadClient("ff02::1".parse().unwrap())
        );
        assert_eq!(
            refused(b"PROXY TCP4 0.0.0.0 10.0.0.1 1 25\r\n"),
            HeaderError::BadClient("0.0.0.0".parse().unwrap())
        );
    }

    #[test]
    fn tlvs_are_skipped_and_must_fit() {
        let mut payload = inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 25));
        payload.extend_from_slice(&tlv(0x01, b"smtp"));
        payload.extend_from_slice(&tlv(0x02, b"mx.example.org"));
        payload.extend_from_slice(&tlv(0x04, &[]));
        payload.extend_from_slice(&tlv(0x05, &[7; 128]));
        payload.extend_from_slice(&tlv(0x20, &[1, 0, 0, 0, 0, 0x21, 0, 3, b'1', b'.', b'3']));
        payload.extend_from_slice(&tlv(0xe0, b"custom"));
        let header = v2(V2_PROXY, 0x11, &payload);
        assert_eq!(
            complete(&header).1,
            relayed_header("192.0.2.7:1", "10.0.0.1:25")
        );
        // A TLV running past the end, and a lone octet too short for a TLV's head.
        let mut cut = payload.clone();
        cut.extend_from_slice(&[0x01, 0x00, 0x05, b'a']);
        assert_eq!(refused(&v2(V2_PROXY, 0x11, &cut)), HeaderError::V2BadTlv);
        let mut odd = payload.clone();
        odd.push(0x04);
        assert_eq!(refused(&v2(V2_PROXY, 0x11, &odd)), HeaderError::V2BadTlv);
        let mut two = payload;
        two.extend_from_slice(&[0x04, 0x00]);
        assert_eq!(refused(&v2(V2_PROXY, 0x11, &two)), HeaderError::V2BadTlv);
    }

    #[test]
    fn a_crc32c_tlv_is_checked() {
        // RFC 3720 B.4's check value, the CRC32C of "123456789".
        assert_eq!(crc32c(0, b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(crc32c(0, b"1234"), b"56789"), 0xe306_9283);
        let addresses = inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 25));
        let good = with_crc(0x11, &addresses);
        assert_eq!(
            complete(&good).1,
            relayed_header("192.0.2.7:1", "10.0.0.1:25")
        );
        // Every octet of the addresses and of the CRC TLV but its type (another type
        // is just another TLV).
        for at in (V2_FIXED_LEN..good.len()).filter(|&at| at != V2_FIXED_LEN + 12) {
            let mut damaged = good.clone();
            damaged[at] ^= 0x01;
            assert!(decode(&damaged).is_err(), "octet {at} flipped");
        }
        let mut short = addresses;
        short.extend_from_slice(&tlv(PP2_TYPE_CRC32C, &[0; 3]));
        assert_eq!(refused(&v2(V2_PROXY, 0x11, &short)), HeaderError::V2BadTlv);
    }

    #[test]
    fn other_protocols_are_not_proxy_headers() {
        for input in [
            &b"EHLO client.example.org\r\n"[..],
            b"PROXZ",
            b"proxy TCP4",
            b"\x16\x03\x01\x02\x00\x01",
            b"\r\n\r\n\0\r\nQUIX",
            b"\r\n.",
            b" PROXY",
        ] {
            assert_eq!(refused(input), HeaderError::NotProxy, "{input:?}");
        }
        assert_eq!(decode(b""), Ok(Decoded::Incomplete));
    }

    /// Every header, valid or not, followed by a client's first commands.
    fn cases() -> Vec<Vec<u8>> {
        let mut headers: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.7 198.51.100.1 49152 25\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.07 198.51.100.1 49152 25\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 198.51.100.1 49152 25\n".to_vec(),
            [&b"PROXY TCP4 "[..], &[b'1'; 120][..]].concat(),
            v2(
                V2_PROXY,
                0x11,
                &inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 25)),
            ),
            v2(
                V2_PROXY,
                0x21,
                &inet6("2001:db8::7", "2001:db8::1", (1, 25)),
            ),
            v2(V2_LOCAL, 0x00, &[]),
            v2(V2_PROXY, 0x11, &[1, 2, 3]),
            v2(V2_PROXY, 0x51, &[]),
            with_crc(0x11, &inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 25))),
            b"EHLO client.example.org\r\n".to_vec(),
        ];
        let mut damaged = with_crc(0x11, &inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 25)));
        damaged[17] ^= 0x40;
        headers.push(damaged);
        headers
            .into_iter()
            .map(|mut h| {
                h.extend_from_slice(b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n");
                h
            })
            .collect()
    }

    #[test]
    fn splitting_the_input_never_changes_the_outcome() {
        for input in cases() {
            let outcome = same_in_every_split(&input)
                .unwrap_or_else(|| panic!("undecided: {:?}", String::from_utf8_lossy(&input)));
            match (decode(&input), outcome) {
                (
                    Ok(Decoded::Complete {
                        version,
                        header,
                        length,
                    }),
                    Ok(received),
                ) => {
                    assert_eq!((received.version, received.header), (version, header));
                    assert_eq!(received.after, &input[length..]);
                }
                (Err(e), Err(read)) => assert_eq!(read, e),
                (decoded, read) => panic!("decode {decoded:?}, reader {read:?}"),
            }
        }
    }

    #[test]
    fn the_octets_after_the_header_are_the_sessions() {
        let mut input = b"PROXY TCP4 192.0.2.7 198.51.100.1 49152 25\r\n".to_vec();
        input.extend_from_slice(b"EHLO a\r\nNOOP\r\n");
        let received = same_in_every_split(&input).unwrap().unwrap();
        assert_eq!(received.after, b"EHLO a\r\nNOOP\r\n");
        let mut input = v2(
            V2_PROXY,
            0x11,
            &inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 465)),
        );
        input.extend_from_slice(b"\x16\x03\x01\x00\x05hello");
        let received = same_in_every_split(&input).unwrap().unwrap();
        assert_eq!(received.after, b"\x16\x03\x01\x00\x05hello");
    }

    #[test]
    fn every_truncated_header_waits_and_ends_as_closed() {
        let headers = [
            b"PROXY TCP4 192.0.2.7 198.51.100.1 49152 25\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(
                V2_PROXY,
                0x11,
                &inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 25)),
            ),
            v2(
                V2_PROXY,
                0x21,
                &inet6("2001:db8::7", "2001:db8::1", (1, 25)),
            ),
            v2(V2_LOCAL, 0x00, &[]),
            with_crc(0x11, &inet([192, 0, 2, 7], [10, 0, 0, 1], (1, 25))),
        ];
        for header in headers {
            for cut in 0..header.len() {
                assert_eq!(decode(&header[..cut]), Ok(Decoded::Incomplete), "cut {cut}");
                let mut reader = HeaderReader::new(Instant::now());
                reader.handle_input(&header[..cut]);
                assert_eq!(reader.poll_outcome(), None);
                reader.handle_end();
                assert_eq!(reader.poll_outcome(), Some(Err(HeaderError::Closed(cut))));
                assert_eq!(reader.poll_timeout(), None);
            }
        }
        assert_eq!(
            HeaderError::Closed(0).to_string(),
            "connection closed before a PROXY header"
        );
    }

    #[test]
    fn the_header_must_be_whole_within_the_timeout() {
        let start = Instant::now();
        let mut reader = HeaderReader::new(start);
        assert_eq!(reader.poll_timeout(), Some(start + HEADER_TIMEOUT));
        // Octets trickling in do not move the deadline.
        reader.handle_input(b"PROXY TCP4");
        reader.handle_timeout(start + HEADER_TIMEOUT - Duration::from_millis(1));
        assert_eq!(reader.poll_outcome(), None);
        reader.handle_input(b" 192.0.2.7");
        assert_eq!(reader.poll_timeout(), Some(start + HEADER_TIMEOUT));
        reader.handle_timeout(start + HEADER_TIMEOUT);
        assert_eq!(reader.poll_outcome(), Some(Err(HeaderError::Timeout)));
        assert_eq!(reader.poll_outcome(), None);
        // Decided: what comes later changes nothing.
        reader.handle_input(b" 10.0.0.1 1 25\r\n");
        reader.handle_end();
        assert_eq!(reader.poll_outcome(), None);
        assert_eq!(
            HeaderError::Timeout.to_string(),
            "no whole PROXY header within 5s"
        );
        // A header in time is not undone by the deadline passing later.
        let mut reader = HeaderReader::new(start);
        reader.handle_input(b"PROXY UNKNOWN\r\n");
        reader.handle_timeout(start + HEADER_TIMEOUT);
        assert_eq!(
            reader.poll_outcome(),
            Some(Ok(Received {
                version: Version::V1,
                header: Header::Unknown,
                after: Vec::new(),
            }))
        );
    }

    /// Random octets, and valid headers mutated: no panic, and every split agrees.
    #[test]
    fn mutated_headers_never_panic_and_split_alike() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = cases();
        for _ in 0..400 {
            let mut input = if next() % 5 == 0 {
                (0..next() % 64).map(|_| next() as u8).collect()
            } else {
                seeds[(next() % seeds.len() as u64) as usize].clone()
            };
            for _ in 0..1 + next() % 3 {
                if input.is_empty() {
                    break;
                }
                let at = (next() % input.len() as u64) as usize;
                match next() % 3 {
                    0 => input[at] = next() as u8,
                    1 => input.truncate(at),
                    _ => input.insert(at, next() as u8),
                }
            }
            let _ = decode(&input);
            let cut = (next() % (input.len() as u64 + 1)) as usize;
            assert_eq!(read_in_pieces(&input, &[cut]), read_in_pieces(&input, &[]));
        }
    }
}
