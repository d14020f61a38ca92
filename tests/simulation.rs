//! Deterministic simulation: the client core delivers to the server core over a
//! virtual wire on virtual time, with split writes, stalls and dropped connections, and
//! the content handed to the client in pieces cut at random.
//! No sockets, no clock: every run with the same seed is the same run.

use std::rc::Rc;
use std::time::{Duration, Instant};

use drawbridge::proto::config::Service;
use drawbridge::proto::smtp::client::{
    Client, ClientConfig, ClientEvent, OutgoingMessage, OutgoingRcpt,
};
use drawbridge::proto::smtp::reply::Reply;
use drawbridge::proto::smtp::server::{Event, ServerConfig, Session, Verdict};

mod common;
use common::Rng;

/// A message to send: its envelope and its content.
#[derive(Clone)]
struct SimMessage {
    envelope: OutgoingMessage,
    content: Vec<u8>,
}

/// What the server side saw.
#[derive(Default)]
struct ServerSide {
    messages: Vec<(String, Vec<String>, Vec<u8>)>,
    current: Vec<u8>,
    committed: usize,
}

struct Faults {
    /// Largest piece a write is split into.
    max_chunk: usize,
    /// Drop the connection after this many bytes from client to server.
    drop_after: Option<usize>,
    /// Stall the server's replies once for this long.
    stall: Option<Duration>,
}

/// Sends `messages` over one connection; returns the client's per-recipient replies
/// and what the server accepted.
fn run(seed: u64, messages: &[SimMessage], faults: Faults) -> (Vec<Vec<Reply>>, ServerSide, bool) {
    let mut rng = Rng(seed | 1);
    let start = Instant::now();
    let mut now = start;
    let service = Service::default();
    let server_config = Rc::new(ServerConfig::from_service("sim.example", &service));
    let mut server = Session::new(server_config, now);
    let mut client = Client::new(
        Rc::new(ClientConfig {
            helo_name: "client.sim".into(),
            ..ClientConfig::default()
        }),
        now,
    );
    let mut to_server: Vec<u8> = Vec::new();
    let mut to_client: Vec<u8> = Vec::new();
    let mut side = ServerSide::default();
    let mut results = Vec::new();
    let mut queue: Vec<SimMessage> = messages.iter().rev().cloned().collect();
    // The content of the transaction in flight and how much of it was handed over.
    let mut sending: Option<(Vec<u8>, usize)> = None;
    let mut feeding = false;
    let mut sent_to_server = 0usize;
    let mut stalled = faults.stall.is_none();
    let mut closed = false;
    let mut faults_cut = false;
    for _round in 0..200_000 {
        while let Some(ev) = server.poll_event() {
            match ev {
                Event::CheckMail { .. } | Event::CheckRcpt { .. } => {
                    server.answer(Verdict::Accept, now)
                }
                Event::MessageBegin => side.current.clear(),
                Event::MessageData(d) => side.current.extend_from_slice(&d),
                Event::MessageEnd(tx) => {
                    let rcpts = tx.rcpts.iter().map(|(a, _)| a.clone()).collect();
                    side.messages
                        .push((tx.from.clone(), rcpts, std::mem::take(&mut side.current)));
                    side.committed += 1;
                    server.commit_done(Ok(format!("SIM{}", side.committed)), now);
                }
                _ => {}
            }
        }
        while let Some(out) = server.poll_transmit() {
            to_client.extend_from_slice(&out);
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::Ready(_) | ClientEvent::TransactionDone(_) => {
                    if let ClientEvent::TransactionDone(r) = ev {
                        results.push(r);
                    }
                    if client.is_ready() {
                        match queue.pop() {
                            Some(m) => {
                                sending = Some((m.content, 0));
                                client.send(m.envelope, now);
                            }
                            None => client.quit(now),
                        }
                    }
                }
                ClientEvent::SendContent => feeding = true,
                ClientEvent::Closed(_) => closed = true,
                // The simulated server offers no STARTTLS, and the client logs in nowhere.
                ClientEvent::StartTls | ClientEvent::Derive(_) => {}
            }
        }
        // The layer hands over one piece of content per round, cut at random.
        if feeding && client.wants_content() {
            match sending.as_mut() {
                Some((content, at)) if *at < content.len() => {
                    let n = 1 + rng.below((content.len() - *at).min(faults.max_chunk));
                    client.handle_content(&content[*at..*at + n], now);
                    *at += n;
                }
                _ => {
                    client.end_content(now);
                    feeding = false;
                }
            }
        }
        while let Some(out) = client.poll_transmit() {
            to_server.extend_from_slice(&out);
        }
        if faults_cut {
            to_server.clear();
            to_client.clear();
        }
        if closed && to_server.is_empty() {
            return (results, side, true);
        }
        // A stall strikes once, in the middle of a message's data.
        if !stalled && !side.current.is_empty() {
            stalled = true;
            now += faults.stall.unwrap_or_default();
            client.handle_timeout(now);
            server.handle_timeout(now);
            continue;
        }
        // Move one random piece each way.
        if !to_server.is_empty() {
            let n = 1 + rng.below(faults.max_chunk.min(to_server.len()));
            if let Some(limit) = faults.drop_after {
                if sent_to_server + n > limit {
                    // The wire is cut: nothing more crosses in either direction.
                    client.handle_eof(now);
                    to_server.clear();
                    to_client.clear();
                    faults_cut = true;
                    continue;
                }
            }
            let piece: Vec<u8> = to_server.drain(..n).collect();
            sent_to_server += n;
            server.handle_input(&piece, now);
        } else if !to_client.is_empty() {
            let n = 1 + rng.below(faults.max_chunk.min(to_client.len()));
            let piece: Vec<u8> = to_client.drain(..n).collect();
            client.handle_input(&piece, now);
        } else if feeding && client.wants_content() {
            // Nothing on the wire, but the layer still has content to hand over (the
            // client may hold back a final CR until it sees what follows): no time
            // passes for the layer's own work.
        } else {
            // Nothing in flight: let time pass to the nearest deadline.
            let next = [client.poll_timeout(), server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) => {
                    now = now.max(t);
                    client.handle_timeout(now);
                    server.handle_timeout(now);
                }
                None => return (results, side, closed),
            }
        }
        now += Duration::from_micros(10);
    }
    panic!("simulation did not settle");
}

fn message(rng: &mut Rng, n: usize) -> SimMessage {
    let mut content = format!("Subject: sim {n}\r\n\r\n").into_bytes();
    for _ in 0..rng.below(40) {
        let kind = rng.below(5);
        let len = rng.below(120);
        let mut line: Vec<u8> = (0..len).map(|_| b'a' + rng.below(26) as u8).collect();
        match kind {
            0 => line.insert(0, b'.'),
            1 => line = b".".to_vec(),
            2 => line.extend_from_slice("ünïcödé".as_bytes()),
            _ => {}
        }
        content.extend_from_slice(&line);
        content.extend_from_slice(b"\r\n");
    }
    let rcpts = (0..1 + rng.below(3))
        .map(|i| OutgoingRcpt {
            address: format!("r{i}@example.com"),
            notify: None,
            orcpt: None,
        })
        .collect();
    SimMessage {
        envelope: OutgoingMessage {
            from: format!("s{n}@example.org"),
            rcpts,
            size: content.len() as u64,
            eight_bit: true,
            smtputf8: false,
            ret: None,
            envid: None,
        },
        content,
    }
}

#[test]
fn content_survives_any_split_of_the_wire() {
    for seed in 1..60u64 {
        let mut rng = Rng(seed * 7919);
        let msgs: Vec<_> = (0..1 + rng.below(4))
            .map(|n| message(&mut rng, n))
            .collect();
        let chunk = 1 + rng.below(700);
        let (results, side, _) = run(
            seed,
            &msgs,
            Faults {
                max_chunk: chunk,
                drop_after: None,
                stall: None,
            },
        );
        assert_eq!(results.len(), msgs.len(), "seed {seed}");
        for r in &results {
            assert!(r.iter().all(|x| x.code == 250), "seed {seed}: {r:?}");
        }
        assert_eq!(side.messages.len(), msgs.len(), "seed {seed}");
        for (m, (from, rcpts, content)) in msgs.iter().zip(&side.messages) {
            assert_eq!(from, &m.envelope.from);
            assert_eq!(rcpts.len(), m.envelope.rcpts.len());
            assert_eq!(content.as_slice(), &m.content[..], "seed {seed}");
        }
    }
}

#[test]
fn a_dropped_connection_defers_what_was_in_flight_and_commits_nothing_partial() {
    for seed in 1..40u64 {
        let mut rng = Rng(seed * 104_729);
        let msgs: Vec<_> = (0..2).map(|n| message(&mut rng, n)).collect();
        let drop_after = 40 + rng.below(600);
        let (results, side, closed) = run(
            seed,
            &msgs,
            Faults {
                max_chunk: 64,
                drop_after: Some(drop_after),
                stall: None,
            },
        );
        assert!(closed, "seed {seed}");
        // Whatever the server committed arrived whole.
        for (i, (_, _, content)) in side.messages.iter().enumerate() {
            assert_eq!(content.as_slice(), &msgs[i].content[..], "seed {seed}");
        }
        // The client never believes in a delivery the server did not commit: what it
        // tried beyond that is a temporary failure, to be retried.
        for r in results.iter().skip(side.messages.len()) {
            assert!(r.iter().all(|x| x.is_transient()), "seed {seed}: {r:?}");
        }
        assert!(results.len() <= msgs.len());
    }
}

#[test]
fn a_server_that_stalls_past_the_client_timeout_defers_the_message() {
    let mut rng = Rng(99);
    let msgs = vec![message(&mut rng, 0)];
    let (results, side, closed) = run(
        5,
        &msgs,
        Faults {
            max_chunk: 512,
            drop_after: None,
            stall: Some(Duration::from_secs(3600)),
        },
    );
    assert!(closed);
    assert!(side.messages.is_empty());
    assert_eq!(results.len(), 1);
    assert!(results[0].iter().all(|r| r.is_transient()), "{results:?}");
}
