//! The SMTP client core against whatever a next hop sends: the input is read as
//! operations (server bytes, time passing, a transaction to send, its content handed
//! over in pieces, QUIT, the TLS handshake's outcome, EOF). Nothing may panic, the client
//! never writes a line a next hop could misread (no bare CR or LF in its commands), and
//! every transaction ends with one reply per recipient.
#![no_main]

use std::rc::Rc;
use std::time::{Duration, Instant};

use drawbridge::proto::smtp::client::{Client, ClientConfig, ClientEvent, OutgoingMessage, OutgoingRcpt, TlsPolicy};
use libfuzzer_sys::fuzz_target;

const SERVER: &[&[u8]] = &[
    b"220 mx.example ESMTP\r\n",
    b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n",
    b"250 ok\r\n",
    b"250 2.1.5 ok\r\n",
    b"354 go\r\n",
    b"550 5.1.1 no\r\n",
    b"451 4.3.0 later\r\n",
    b"421 4.3.2 bye\r\n",
    b"220 2.0.0 ready for TLS\r\n",
    b"221 bye\r\n",
    b"502 5.5.2 what\r\n",
];

struct Ops<'a>(&'a [u8]);

impl Ops<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }
}

fn message(rcpts: usize) -> OutgoingMessage {
    OutgoingMessage {
        from: "a@example.org".into(),
        rcpts: (0..rcpts)
            .map(|i| OutgoingRcpt {
                address: format!("r{i}@example.com"),
                notify: (i % 2 == 0).then(|| "SUCCESS,FAILURE".into()),
                orcpt: None,
            })
            .collect(),
        size: 40,
        eight_bit: rcpts % 2 == 0,
        smtputf8: rcpts == 3,
        ret: None,
        envid: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ops = Ops(data);
    let policy = match ops.byte() % 3 {
        0 => TlsPolicy::Never,
        1 => TlsPolicy::Opportunistic,
        _ => TlsPolicy::Required,
    };
    let config = Rc::new(ClientConfig {
        helo_name: "gw.example.net".into(),
        tls: policy,
        ..ClientConfig::default()
    });
    let mut now = Instant::now();
    let mut client = Client::new(config, now);
    let mut sent_rcpts: Vec<usize> = Vec::new();
    let mut wire = Vec::new();
    while !ops.0.is_empty() {
        match ops.byte() % 8 {
            0 => {
                let n = usize::from(ops.byte());
                let bytes = ops.bytes(n);
                client.handle_input(&bytes, now);
            }
            1 | 2 => {
                let reply = SERVER[usize::from(ops.byte()) % SERVER.len()];
                let cut = usize::from(ops.byte()) % (reply.len() + 1);
                client.handle_input(&reply[..cut], now);
                client.handle_input(&reply[cut..], now);
            }
            3 => {
                now += Duration::from_secs(u64::from(ops.byte()) * 8);
                if client.poll_timeout().is_some_and(|t| t <= now) {
                    client.handle_timeout(now);
                }
            }
            4 => {
                if client.is_ready() {
                    let rcpts = 1 + usize::from(ops.byte() % 4);
                    sent_rcpts.push(rcpts);
                    client.send(message(rcpts), now);
                }
            }
            5 => {
                if client.wants_content() {
                    match ops.byte() % 4 {
                        0 => client.end_content(now),
                        1 => client.content_failed("read error", now),
                        _ => {
                            let n = usize::from(ops.byte() % 64);
                            let piece = ops.bytes(n);
                            client.handle_content(&piece, now);
                        }
                    }
                }
            }
            6 => match ops.byte() % 4 {
                0 => client.tls_established(now),
                1 => client.tls_failed("handshake failed", now),
                2 => client.quit(now),
                _ => client.handle_eof(now),
            },
            _ => {}
        }
        while let Some(bytes) = client.poll_transmit() {
            wire.extend_from_slice(&bytes);
        }
        while let Some(event) = client.poll_event() {
            if let ClientEvent::TransactionDone(replies) = event {
                let expected = sent_rcpts.remove(0);
                assert_eq!(replies.len(), expected);
            }
        }
    }
    // Commands (everything outside message content) are CRLF lines: find no bare LF
    // before the first DATA and no bare CR anywhere in command lines.
    let head = wire
        .windows(6)
        .position(|w| w == b"DATA\r\n")
        .map_or(&wire[..], |at| &wire[..at]);
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && head[i - 1] == b'\r', "bare LF in {:?}", String::from_utf8_lossy(head));
        }
        if b == b'\r' {
            assert_eq!(head.get(i + 1), Some(&b'\n'), "bare CR");
        }
    }
});
