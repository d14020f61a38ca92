//! Slow clients against the real gateway: a slowloris attack of 500 connections from 25
//! addresses, each dribbling one octet at a time into a command line, while a legitimate
//! client from another address sends mail. The limits are small (a 100-connection
//! service, 3 per address, deadlines of seconds) so the attack runs its course in seconds;
//! the defaults are the same rules at their production sizes.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Attacking addresses, 127.0.1.1 to 127.0.1.25.
const ATTACKERS: u8 = 25;
/// Connections the attack keeps trying to hold.
const CONNECTIONS: usize = 500;
/// How long the attack runs (the test's own bound, not an assertion).
const ATTACK: Duration = Duration::from_secs(12);
/// Pause between two octets of one dribbling connection.
const DRIBBLE: Duration = Duration::from_millis(500);

fn config(sink: u16) -> String {
    format!(
        "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
         set route example.com relay [127.0.0.1]:{sink}\n\
         set service inbound max-connections 100\n\
         set service inbound max-connections-per-ip 3\n\
         set service inbound stress-threshold 60\n\
         set service inbound stress-timeout 2s\n\
         set service inbound command-deadline 4s\n\
         set service inbound data-deadline 4s\n"
    )
}

/// One attacking connection.
struct Dribbler {
    stream: TcpStream,
    /// The 220 greeting came: the connection was let in.
    greeted: bool,
    next_octet: Instant,
    sent: usize,
}

/// Sends one message from `from` and says how it went.
fn legitimate(from: Ipv4Addr, gw: &Gateway, n: usize) -> String {
    let stream = match connect_from(from, gw.inbound_addr()) {
        Ok(s) => s,
        Err(e) => return format!("connect failed: {e}"),
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut raw = Raw { stream };
    let greeting = raw.replies(1);
    if !greeting.starts_with("220") {
        return format!("greeting: {greeting}");
    }
    raw.send(b"EHLO legit.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");
    let replies = raw.replies(4);
    if !replies.contains("354") {
        return format!("envelope: {replies}");
    }
    raw.send(format!("Subject: legitimate {n}\r\n\r\nhello\r\n.\r\nQUIT\r\n").as_bytes());
    raw.replies(2)
}

#[test]
fn a_legitimate_client_is_served_while_500_slow_connections_attack() {
    let dir = TempDir::new("slowloris");
    let sink = Sink::start();
    let gw = Gateway::start(dir.path(), &config(sink.addr.port()));
    let target = gw.inbound_addr();
    let start = Instant::now();
    let mut slots: Vec<Option<Dribbler>> = (0..CONNECTIONS).map(|_| None).collect();
    let mut retry_at = vec![start; CONNECTIONS];
    let (mut opened, mut refused, mut cut) = (0usize, 0usize, 0usize);
    let mut served = Vec::new();
    let mut next_legit = start + Duration::from_secs(3);
    let line = b"EHLO a-very-long-and-slow-hello-name.attacker.example\r\n";
    while start.elapsed() < ATTACK {
        let now = Instant::now();
        for (i, slot) in slots.iter_mut().enumerate() {
            match slot {
                None if now >= retry_at[i] => {
                    let from = Ipv4Addr::new(127, 0, 1, 1 + (i % usize::from(ATTACKERS)) as u8);
                    if let Ok(stream) = connect_from(from, target) {
                        stream.set_nonblocking(true).unwrap();
                        opened += 1;
                        *slot = Some(Dribbler {
                            stream,
                            greeted: false,
                            next_octet: now,
                            sent: 0,
                        });
                    }
                    retry_at[i] = now + Duration::from_secs(1);
                }
                None => {}
                Some(d) => {
                    let mut buf = [0u8; 512];
                    let closed = match d.stream.read(&mut buf) {
                        Ok(0) => true,
                        Ok(n) => {
                            let text = String::from_utf8_lossy(&buf[..n]);
                            if text.starts_with("220") {
                                d.greeted = true;
                            } else if text.starts_with("421") && !d.greeted {
                                refused += 1;
                            }
                            false
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                        Err(_) => true,
                    };
                    if closed {
                        if d.greeted && d.sent > 0 {
                            cut += 1;
                        }
                        *slot = None;
                        continue;
                    }
                    if d.greeted && now >= d.next_octet && d.sent < line.len() {
                        if d.stream.write(&line[d.sent..d.sent + 1]).is_ok() {
                            d.sent += 1;
                        }
                        d.next_octet = now + DRIBBLE;
                    }
                }
            }
        }
        if now >= next_legit && served.len() < 4 {
            let n = served.len();
            served.push(legitimate(Ipv4Addr::new(127, 0, 2, 200), &gw, n));
            next_legit = Instant::now() + Duration::from_secs(2);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(slots);

    println!("attack: {opened} connections opened, {refused} refused at once, {cut} dribblers cut");
    // The legitimate client was served every time, during the attack.
    assert_eq!(served.len(), 4, "{served:?}");
    for reply in &served {
        assert!(reply.contains("250 2.0.0 Ok: queued as"), "{served:?}");
    }
    let delivered = sink.wait_for(4);
    assert!(delivered.iter().all(|m| m.rcpts == ["<b@example.com>"]));
    // The attack was held to 3 connections per address, and the dribblers were cut.
    assert!(opened >= CONNECTIONS, "the attack opened {opened}");
    assert!(refused > 0, "no connection refused per address");
    assert!(cut >= usize::from(ATTACKERS), "only {cut} dribblers cut");
    let log = gw.log_text();
    assert!(
        log.contains("Error: too many connections from 127.0.1."),
        "{log}"
    );
    assert!(log.contains("inbound service under stress"), "{log}");
    assert!(log.contains("too slow (deadline exceeded) from"), "{log}");
}
