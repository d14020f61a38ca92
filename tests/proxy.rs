//! The PROXY protocol on the inbound service, through a real HAProxy (Debian's `haproxy`,
//! run in the foreground by each test) and from raw sockets.
//!
//! Loopback only: HAProxy listens on 127.0.0.1 and relays to the gateway from 127.0.0.1,
//! which the gateway trusts (`proxy-from 127.0.0.1/32`); the clients connect from
//! 127.0.0.2 and 127.0.0.3. The classify rules make the balancer's own address INTERNAL,
//! 127.0.0.2 EXTERNAL and 127.0.0.3 INTERNAL, so a relay decision shows whose address the
//! gateway used.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

const HAPROXY: &str = "/usr/sbin/haproxy";
/// The balancer: HAProxy's address, and the one the gateway trusts.
const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// A client classified EXTERNAL, and one classified INTERNAL.
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const INTERNAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Where the tests' readiness probes come from: no test looks for it in the log.
const PROBE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// A domain that is not ours.
const FOREIGN: &str = "relay.test";
/// The reply to a refused relay attempt, by the relay rule below.
const RELAY_DENIED: &str = "550 5.7.1 SMTP relaying not permitted";

/// The gateway's settings: the balancer trusted on the inbound service, the three
/// addresses classified, the relay closed to EXTERNAL clients, everything foreign to
/// `sink`, and `extra`.
fn gateway_config(sink: &Sink, extra: &str) -> String {
    format!(
        "set service inbound proxy-protocol yes\n\
         set service inbound proxy-from {BALANCER}/32\n\
         set classify 10 remote {BALANCER}/32 category INTERNAL\n\
         set classify 20 remote {INTERNAL}/32 category INTERNAL\n\
         set classify 30 remote 0.0.0.0/0 category EXTERNAL\n\
         set route * smarthost [127.0.0.1]:{sink}\n\
         set relay-rule 10 source tcp_local destination tcp_local deny \"5.7.1 SMTP relaying not permitted\"\n\
         {extra}",
        sink = sink.addr.port(),
    )
}

/// HAProxy in TCP mode, in the foreground, killed on drop.
struct Haproxy {
    child: Child,
    /// The frontends' ports, by name.
    ports: Vec<(String, u16)>,
    config: PathBuf,
}

impl Haproxy {
    /// One frontend on 127.0.0.1 for each `(name, gateway port, server options)`, with
    /// one backend server: the gateway, with those options (`send-proxy`,
    /// `send-proxy-v2`).
    fn start(dir: &Path, routes: &[(&str, u16, &str)]) -> Haproxy {
        let mut text = String::from(
            "global\n    maxconn 200\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n",
        );
        let mut ports = Vec::new();
        for (name, gateway, options) in routes {
            let port = free_port();
            text.push_str(&format!(
                "frontend {name}\n    bind 127.0.0.1:{port}\n    default_backend {name}_gateway\n\
                 backend {name}_gateway\n    server gateway 127.0.0.1:{gateway} {options}\n"
            ));
            ports.push((name.to_string(), port));
        }
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start haproxy (Debian package haproxy)");
        let haproxy = Haproxy {
            child,
            ports,
            config,
        };
        for (_, port) in &haproxy.ports {
            let at = SocketAddr::from((BALANCER, *port));
            wait_until("haproxy to listen", || connect_from(PROBE, at).is_ok());
        }
        haproxy
    }

    fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no frontend {name} in {}", self.config.display()))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One relay attempt through `port` from `source`: EHLO, MAIL, RCPT to a foreign
/// recipient and, when that is accepted, the message. The replies to RCPT and DATA.
fn relay_attempt(port: u16, source: Ipv4Addr, subject: &str) -> String {
    python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, source_address=("{source}", 0), timeout=30) as s:
    s.ehlo("client.example.org")
    s.mail("alice@example.org")
    code, text = s.rcpt("bob@{FOREIGN}")
    print(code, text.decode())
    if code == 250:
        code, text = s.data(b"Subject: {subject}\r\n\r\nthrough the balancer\r\n")
        print(code, text.decode())
"#
    ))
}

/// A raw connection to `to` from `from`, read for its first reply (or the close).
fn greeting_from(from: Ipv4Addr, to: SocketAddr) -> (Raw, String) {
    let stream = connect_from(from, to).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut raw = Raw { stream };
    let first = raw.replies(1);
    (raw, first)
}

/// The gateway's log lines that contain `needle`.
fn lines_with(gw: &Gateway, needle: &str) -> Vec<String> {
    gw.log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Through HAProxy with `send-proxy` (v1) and with `send-proxy-v2` (with its CRC32C),
/// the gateway sees the clients, not the balancer: its log names them, and the relay
/// policy judges them: 127.0.0.2 (EXTERNAL) is refused the relay the balancer's own
/// address (INTERNAL) would have been allowed, and 127.0.0.3 (INTERNAL) is allowed it.
#[test]
fn through_haproxy_the_client_is_the_one_the_header_names() {
    let dir = TempDir::new("proxy-haproxy");
    let sink = Sink::start();
    let gw = Gateway::start_env(
        dir.path(),
        &gateway_config(&sink, ""),
        &[("RUST_LOG", "debug")],
    );
    let haproxy = Haproxy::start(
        dir.path(),
        &[
            ("v1", gw.inbound, "send-proxy"),
            ("v2", gw.inbound, "send-proxy-v2 proxy-v2-options crc32c"),
        ],
    );
    for (round, version) in ["v1", "v2"].into_iter().enumerate() {
        let port = haproxy.port(version);
        let refused = relay_attempt(port, EXTERNAL, "refused");
        assert_eq!(refused.trim(), RELAY_DENIED, "{version}");
        let subject = format!("accepted through {version}");
        let accepted = relay_attempt(port, INTERNAL, &subject);
        let replies: Vec<&str> = accepted.lines().collect();
        assert!(replies[0].starts_with("250 "), "{version}: {accepted}");
        assert!(
            replies[1].starts_with("250 2.0.0 Ok: queued"),
            "{version}: {accepted}"
        );
        let n = round + 1;
        gw.wait_for_log_count(&format!("PROXY {version} header from 127.0.0.1:"), 2);
        gw.wait_for_log_count("connect from unknown[127.0.0.2]", n);
        gw.wait_for_log_count("connect from unknown[127.0.0.3]", n);
        gw.wait_for_log_count(
            &format!("NOQUEUE: reject: RCPT from unknown[127.0.0.2]: {RELAY_DENIED}"),
            n,
        );
        gw.wait_for_log_count(": client=unknown[127.0.0.3]", n);
        let messages = sink.wait_for(n);
        let content = String::from_utf8_lossy(&messages[round].content).into_owned();
        assert!(content.contains(&subject), "{content}");
        let received = content.lines().next().unwrap_or_default();
        assert!(
            received.starts_with("Received: from client.example.org (unknown [127.0.0.3])"),
            "{content}"
        );
    }
    // Every client session was the client's: none was logged as the balancer's, and
    // HAProxy's headers were all taken.
    assert_eq!(
        lines_with(&gw, "connect from unknown[127.0.0.1]"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines_with(&gw, "closed without a greeting"),
        Vec::<String>::new()
    );
}

/// An implicit-TLS listener behind HAProxy reads the header first, then the handshake:
/// the TLS session is the client's.
#[test]
fn implicit_tls_behind_haproxy_reads_the_header_before_the_handshake() {
    let dir = TempDir::new("proxy-tls");
    let sink = Sink::start();
    let tls_port = free_port();
    let gw = Gateway::start(
        dir.path(),
        &gateway_config(
            &sink,
            &format!("set service inbound tls-listen 127.0.0.1:{tls_port}\n"),
        ),
    );
    let haproxy = Haproxy::start(dir.path(), &[("tls", tls_port, "send-proxy-v2")]);
    let out = python(&format!(
        r#"
import smtplib, ssl
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with smtplib.SMTP_SSL("127.0.0.1", {port}, source_address=("{EXTERNAL}", 0), context=context, timeout=30) as s:
    code, text = s.ehlo("client.example.org")
    print(code)
    s.mail("alice@example.org")
    code, text = s.rcpt("bob@{FOREIGN}")
    print(code, text.decode())
"#,
        port = haproxy.port("tls"),
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["250", RELAY_DENIED],
        "{out}"
    );
    gw.wait_for_log("TLS connection established from unknown[127.0.0.2]");
    gw.wait_for_log(&format!(
        "NOQUEUE: reject: RCPT from unknown[127.0.0.2]: {RELAY_DENIED}"
    ));
}

/// `max-connections-per-ip` counts the client the header names: with a limit of one, a
/// second connection from 127.0.0.2 through the balancer is refused while 127.0.0.3,
/// through the same balancer from the same address, is served.
#[test]
fn the_per_address_limit_counts_the_client_behind_the_balancer() {
    let dir = TempDir::new("proxy-limit");
    let sink = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &gateway_config(&sink, "set service inbound max-connections-per-ip 1\n"),
    );
    let haproxy = Haproxy::start(
        dir.path(),
        &[
            ("v1", gw.inbound, "send-proxy"),
            ("v2", gw.inbound, "send-proxy-v2"),
        ],
    );
    for (round, version) in ["v1", "v2"].into_iter().enumerate() {
        let front = SocketAddr::from((BALANCER, haproxy.port(version)));
        let (mut first, greeting) = greeting_from(EXTERNAL, front);
        assert!(
            greeting.starts_with("220 gw.example.com"),
            "{version}: {greeting}"
        );
        let (_, second) = greeting_from(EXTERNAL, front);
        assert_eq!(
            second, "421 4.7.0 gw.example.com Error: too many connections from 127.0.0.2\r\n",
            "{version}"
        );
        let (mut other, greeting) = greeting_from(INTERNAL, front);
        assert!(
            greeting.starts_with("220 gw.example.com"),
            "{version}: {greeting}"
        );
        for raw in [&mut first, &mut other] {
            raw.send(b"QUIT\r\n");
            assert!(raw.replies(1).starts_with("221 "));
            raw.until_close();
        }
        // Both places are given back before the next round.
        gw.wait_for_log_count("disconnect from unknown[127.0.0.2]", round + 1);
        gw.wait_for_log_count("disconnect from unknown[127.0.0.3]", round + 1);
    }
    assert_eq!(
        lines_with(
            &gw,
            "too many connections from 127.0.0.2: refusing unknown[127.0.0.2]"
        )
        .len(),
        2
    );
    assert_eq!(
        lines_with(&gw, "too many connections from 127.0.0.3"),
        Vec::<String>::new()
    );
}

/// A gateway that trusts the balancer's address, for the raw-socket tests.
fn raw_gateway(dir: &TempDir) -> (Sink, Gateway) {
    let sink = Sink::start();
    let gw = Gateway::start(dir.path(), &gateway_config(&sink, ""));
    (sink, gw)
}

/// A version-2 header: command and family octets, then the address block.
fn v2_header(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(block);
    out
}

/// A trusted address that sends no header hears nothing and is closed once the
/// header's deadline has passed.
#[test]
fn a_balancer_that_sends_no_header_gets_no_greeting() {
    let dir = TempDir::new("proxy-silent");
    let (_sink, gw) = raw_gateway(&dir);
    let stream = connect_from(BALANCER, gw.inbound_addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut raw = Raw { stream };
    assert_eq!(raw.until_close(), "");
    gw.wait_for_log("refused: no whole PROXY header within 5s; closed without a greeting");
    assert_eq!(
        lines_with(&gw, "connect from unknown[127.0.0.1]"),
        Vec::<String>::new()
    );
}

/// A malformed header, an overlong one and plain SMTP from a trusted address are each
/// closed at once, without a greeting, with one log line saying why.
#[test]
fn a_bad_header_from_a_balancer_is_closed_without_a_greeting() {
    let dir = TempDir::new("proxy-garbage");
    let (_sink, gw) = raw_gateway(&dir);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"PROXY TCP4 127.0.0.256 127.0.0.1 4000 25\r\n".to_vec(),
            "malformed PROXY v1 line: a TCP4 address that is not an IPv4 address",
        ),
        (
            [&b"PROXY UNKNOWN "[..], &[b'x'; 200][..]].concat(),
            "PROXY v1 line without its CRLF in the first 107 octets",
        ),
        (
            b"EHLO client.example.org\r\n".to_vec(),
            "no PROXY header: the connection began with other octets",
        ),
        (
            v2_header(0x1, 0x11, &[127, 0, 0, 2]),
            "PROXY v2 header of 4 octets after its fixed part, too short for its 12 octets of addresses",
        ),
        (
            {
                let mut h = v2_header(0x1, 0x11, &[]);
                h[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
                h
            },
            "PROXY v2 header of 65535 octets after its fixed part, over the limit of 2048",
        ),
    ];
    for (n, (bytes, why)) in cases.iter().enumerate() {
        let stream = connect_from(BALANCER, gw.inbound_addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut raw = Raw { stream };
        // The refusal may close the socket while the rest is still being written.
        let _ = raw.stream.write_all(bytes);
        assert_eq!(raw.until_close(), "", "case {n}");
        gw.wait_for_log(&format!("refused: {why}; closed without a greeting"));
    }
    assert_eq!(lines_with(&gw, "connect from"), Vec::<String>::new());
}

/// From an address outside `proxy-from` a PROXY line is only a bad command: the client
/// is greeted as itself, and its claim changes nothing.
#[test]
fn a_header_from_an_untrusted_address_is_a_bad_command() {
    let dir = TempDir::new("proxy-untrusted");
    let (_sink, gw) = raw_gateway(&dir);
    let (mut raw, greeting) = greeting_from(EXTERNAL, gw.inbound_addr());
    assert!(greeting.starts_with("220 gw.example.com"), "{greeting}");
    raw.send(b"PROXY TCP4 127.0.0.3 127.0.0.1 4000 25\r\n");
    assert_eq!(
        raw.replies(1),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    raw.send(
        format!("EHLO client.example.org\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@{FOREIGN}>\r\nQUIT\r\n")
            .as_bytes(),
    );
    let replies = raw.replies(4);
    assert!(
        replies.contains(&format!("{RELAY_DENIED}\r\n")),
        "{replies}"
    );
    gw.wait_for_log(&format!(
        "NOQUEUE: reject: RCPT from unknown[127.0.0.2]: {RELAY_DENIED}"
    ));
    assert_eq!(lines_with(&gw, "127.0.0.3"), Vec::<String>::new());
}

/// Commands pipelined in the same write as the header are the session's first: none is
/// lost, whichever version carried the client.
#[test]
fn commands_sent_with_the_header_survive() {
    let dir = TempDir::new("proxy-pipelined");
    let (_sink, gw) = raw_gateway(&dir);
    let mut block = vec![127, 0, 0, 3, 127, 0, 0, 1];
    block.extend_from_slice(&4000u16.to_be_bytes());
    block.extend_from_slice(&25u16.to_be_bytes());
    let headers = [
        b"PROXY TCP4 127.0.0.3 127.0.0.1 4000 25\r\n".to_vec(),
        v2_header(0x1, 0x11, &block),
    ];
    for (n, header) in headers.iter().enumerate() {
        let stream = connect_from(BALANCER, gw.inbound_addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut raw = Raw { stream };
        let mut first = header.clone();
        first.extend_from_slice(b"EHLO pipelined.example.org\r\nNOOP\r\nQUIT\r\n");
        raw.send(&first);
        let replies = raw.until_close();
        let codes: Vec<&str> = replies
            .split("\r\n")
            .filter(|l| l.len() > 3 && l.as_bytes()[3] == b' ')
            .map(|l| &l[..3])
            .collect();
        assert_eq!(codes, ["220", "250", "250", "221"], "header {n}: {replies}");
        gw.wait_for_log_count("connect from unknown[127.0.0.3]", n + 1);
    }
}

/// The TLS handshake's first octets, sent in the same write as the header on an
/// implicit-TLS listener, begin the handshake.
#[test]
fn a_client_hello_sent_with_the_header_survives() {
    let dir = TempDir::new("proxy-hello");
    let sink = Sink::start();
    let tls_port = free_port();
    let gw = Gateway::start(
        dir.path(),
        &gateway_config(
            &sink,
            &format!("set service inbound tls-listen 127.0.0.1:{tls_port}\n"),
        ),
    );
    let out = python(&format!(
        r#"
import socket, ssl
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = context.wrap_bio(incoming, outgoing, server_hostname="gw.example.com")
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = outgoing.read()
s = socket.socket()
s.bind(("{BALANCER}", 0))
s.connect(("127.0.0.1", {tls_port}))
s.settimeout(30)
s.sendall(b"PROXY TCP4 127.0.0.2 127.0.0.1 4000 465\r\n" + hello)
def pump(step):
    while True:
        try:
            return step()
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            if pending:
                s.sendall(pending)
            data = s.recv(65536)
            if not data:
                raise SystemExit("closed")
            incoming.write(data)
pump(tls.do_handshake)
pending = outgoing.read()
if pending:
    s.sendall(pending)
print(pump(lambda: tls.read(4096)).decode().strip())
"#
    ));
    assert!(out.starts_with("220 gw.example.com"), "{out}");
    gw.wait_for_log("TLS connection established from unknown[127.0.0.2]");
}

/// The balancer's own connections (v2 LOCAL) and those it does not name (v1 UNKNOWN,
/// health checks among them) are counted and logged as the balancer's.
#[test]
fn the_balancers_own_connections_are_served_as_its_own() {
    let dir = TempDir::new("proxy-local");
    let (_sink, gw) = raw_gateway(&dir);
    let headers = [v2_header(0x0, 0x00, &[]), b"PROXY UNKNOWN\r\n".to_vec()];
    for (n, header) in headers.iter().enumerate() {
        let stream = connect_from(BALANCER, gw.inbound_addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut raw = Raw { stream };
        raw.send(header);
        assert!(
            raw.replies(1).starts_with("220 gw.example.com"),
            "header {n}"
        );
        raw.send(b"QUIT\r\n");
        assert!(raw.replies(1).starts_with("221 "));
        gw.wait_for_log_count("connect from unknown[127.0.0.1]", n + 1);
    }
}

/// What the tests above lean on: without HAProxy in between, the balancer's address
/// is INTERNAL and its own connections (v2 LOCAL) may relay, so the refusals above were
/// the clients'. A client it relays without naming (v1 UNKNOWN, a v2 client with no IP
/// address) may be anyone: it is served unclassified, and may not relay.
#[test]
fn the_balancers_own_address_may_relay_and_a_client_it_does_not_name_may_not() {
    let dir = TempDir::new("proxy-own");
    let (_sink, gw) = raw_gateway(&dir);
    let rcpt = |header: &[u8]| {
        let stream = connect_from(BALANCER, gw.inbound_addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut raw = Raw { stream };
        raw.send(header);
        assert!(raw.replies(1).starts_with("220 "));
        raw.send(
            format!("EHLO balancer.example.org\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@{FOREIGN}>\r\n")
                .as_bytes(),
        );
        let replies = raw.replies(3);
        let _ = TcpStream::shutdown(&raw.stream, std::net::Shutdown::Both);
        replies
    };
    let replies = rcpt(&v2_header(0x0, 0x00, &[]));
    assert!(replies.ends_with("250 2.1.5 Ok\r\n"), "{replies}");
    for header in [
        b"PROXY UNKNOWN\r\n".to_vec(),
        // PROXY for an AF_UNIX client, and for an unspecified family.
        v2_header(0x1, 0x31, &[b'/'; 216]),
        v2_header(0x1, 0x00, &[]),
    ] {
        let replies = rcpt(&header);
        assert!(replies.contains(RELAY_DENIED), "{replies}");
    }
    gw.wait_for_log("a client it does not name, served unclassified");
}
