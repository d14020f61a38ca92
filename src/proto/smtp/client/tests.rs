//! Transcript tests of the delivery client core: whole sessions written as server bytes,
//! client lines and events, each run whole, a byte at a time and split everywhere.

use super::stuffer::Stuffer;
use super::*;
use crate::proto::sasl::base64;
use crate::proto::sasl::client::ClientMechanism;
use crate::proto::smtp::client_reply::ReplyReader;
use crate::proto::smtp::reply::{Enhanced, MAX_REPLY_LINES};

/// One step of a transcript.
#[derive(Clone, Debug)]
enum Step {
    /// The server writes these bytes.
    Server(Vec<u8>),
    /// The client has written exactly this since the last check.
    Sent(Vec<u8>),
    /// The client has written exactly this, in one transmit, since the last check.
    SentOnce(Vec<u8>),
    /// The next event is this.
    Event(ClientEvent),
    /// `send` with this envelope; at the 354 the driver hands over this content.
    Send(OutgoingMessage, Vec<u8>),
    Quit,
    Eof,
    /// The clock moves on this many seconds; `handle_timeout` runs if a deadline passed.
    Wait(u64),
    /// `poll_timeout()` is this many seconds after the start, or `None`.
    Deadline(Option<u64>),
    Ready(bool),
    Closed(bool),
    /// `is_tls()` is this.
    Tls(bool),
    /// The layer completed the TLS handshake.
    TlsEstablished,
    /// The layer failed the TLS handshake for this reason.
    TlsFailed(&'static str),
    /// These bytes were never written, in all the client's output so far.
    NeverSent(&'static [u8]),
    /// The next event is a SCRAM derivation: the layer runs it and hands it back.
    RunDerivation,
}
use Step::*;

fn s(bytes: &[u8]) -> Step {
    Server(bytes.to_vec())
}

fn c(bytes: &[u8]) -> Step {
    Sent(bytes.to_vec())
}

fn c1(bytes: &[u8]) -> Step {
    SentOnce(bytes.to_vec())
}

/// Parses one reply written as on the wire.
fn r(wire: &str) -> Reply {
    let mut reader = ReplyReader::new();
    let mut input = wire.as_bytes();
    let reply = reader.read(&mut input).unwrap().unwrap();
    assert!(input.is_empty());
    reply
}

fn done(replies: &[&str]) -> Step {
    Event(ClientEvent::TransactionDone(
        replies.iter().map(|w| r(w)).collect(),
    ))
}

fn closed(reply: Option<&str>) -> Step {
    Event(ClientEvent::Closed(reply.map(r)))
}

/// `Send` of a message and its content.
fn send((m, content): (OutgoingMessage, Vec<u8>)) -> Step {
    Send(m, content)
}

fn msg(from: &str, rcpts: &[&str], content: &[u8]) -> (OutgoingMessage, Vec<u8>) {
    let m = OutgoingMessage {
        from: from.into(),
        rcpts: rcpts
            .iter()
            .map(|a| OutgoingRcpt {
                address: a.to_string(),
                notify: None,
                orcpt: None,
            })
            .collect(),
        size: content.len() as u64,
        eight_bit: false,
        smtputf8: false,
        ret: None,
        envid: None,
    };
    (m, content.to_vec())
}

fn config() -> Rc<ClientConfig> {
    Rc::new(ClientConfig {
        helo_name: "gw.example.net".into(),
        ..ClientConfig::default()
    })
}

fn config_tls(tls: TlsPolicy) -> Rc<ClientConfig> {
    Rc::new(ClientConfig {
        helo_name: "gw.example.net".into(),
        tls,
        ..ClientConfig::default()
    })
}

/// How server writes are cut before they reach `handle_input`.
#[derive(Clone, Copy, Debug)]
enum Feed {
    Whole,
    ByteAtATime,
    SplitAt(usize),
}

struct Driver {
    client: Client,
    start: Instant,
    now: Instant,
    out: Vec<Vec<u8>>,
    /// Everything the client wrote, checked or not.
    all_out: Vec<u8>,
    events: VecDeque<ClientEvent>,
    /// The content of the message last sent, handed over at its 354.
    content: Option<Vec<u8>>,
    /// How the content is cut into pieces, as the server's writes are.
    feed: Feed,
}

impl Driver {
    fn drain(&mut self) {
        self.take_transmits();
        while let Some(event) = self.client.poll_event() {
            if event == ClientEvent::SendContent {
                self.hand_over_content();
            } else {
                self.events.push_back(event);
            }
        }
    }

    fn take_transmits(&mut self) {
        while let Some(out) = self.client.poll_transmit() {
            self.all_out.extend_from_slice(&out);
            self.out.push(out);
        }
    }

    /// What a layer does at `SendContent`: the content piece by piece, each piece's
    /// output written before the next, then the end of data.
    fn hand_over_content(&mut self) {
        let content = self.content.take().unwrap_or_default();
        let pieces: Vec<&[u8]> = match self.feed {
            Feed::Whole => vec![&content[..]],
            Feed::ByteAtATime => content.chunks(1).collect(),
            Feed::SplitAt(i) if i < content.len() => vec![&content[..i], &content[i..]],
            Feed::SplitAt(_) => vec![&content[..]],
        };
        for piece in pieces {
            if !self.client.wants_content() {
                return;
            }
            self.client.handle_content(piece, self.now);
            self.take_transmits();
        }
        if self.client.wants_content() {
            self.client.end_content(self.now);
            self.take_transmits();
        }
    }
}

fn run_with(steps: &[Step], feed: Feed, config: &Rc<ClientConfig>) {
    let start = Instant::now();
    let mut d = Driver {
        client: Client::new(config.clone(), start),
        start,
        now: start,
        out: Vec::new(),
        all_out: Vec::new(),
        events: VecDeque::new(),
        content: None,
        feed,
    };
    d.drain();
    for (n, step) in steps.iter().enumerate() {
        let at = format!("step {n} {step:?} fed {feed:?}");
        match step {
            Server(bytes) => {
                let pieces: Vec<&[u8]> = match feed {
                    Feed::Whole => vec![bytes],
                    Feed::ByteAtATime => bytes.chunks(1).collect(),
                    Feed::SplitAt(i) if i < bytes.len() => vec![&bytes[..i], &bytes[i..]],
                    Feed::SplitAt(_) => vec![bytes],
                };
                for piece in pieces {
                    d.client.handle_input(piece, d.now);
                    d.drain();
                }
            }
            Sent(want) => {
                let got = d.out.concat();
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(want),
                    "{at}"
                );
                d.out.clear();
            }
            SentOnce(want) => {
                assert_eq!(d.out.len(), 1, "{at}: {:?}", d.out);
                assert_eq!(
                    String::from_utf8_lossy(&d.out[0]),
                    String::from_utf8_lossy(want),
                    "{at}"
                );
                d.out.clear();
            }
            Event(want) => assert_eq!(d.events.pop_front().as_ref(), Some(want), "{at}"),
            Send(m, content) => {
                d.content = Some(content.clone());
                d.client.send(m.clone(), d.now);
                d.drain();
            }
            Quit => {
                d.client.quit(d.now);
                d.drain();
            }
            Eof => {
                d.client.handle_eof(d.now);
                d.drain();
            }
            Wait(secs) => {
                d.now += Duration::from_secs(*secs);
                if d.client.poll_timeout().is_some_and(|t| t <= d.now) {
                    d.client.handle_timeout(d.now);
                    d.drain();
                }
            }
            Deadline(want) => {
                let want = want.map(|secs| d.start + Duration::from_secs(secs));
                assert_eq!(d.client.poll_timeout(), want, "{at}");
            }
            Ready(want) => assert_eq!(d.client.is_ready(), *want, "{at}"),
            Closed(want) => assert_eq!(d.client.is_closed(), *want, "{at}"),
            Tls(want) => assert_eq!(d.client.is_tls(), *want, "{at}"),
            TlsEstablished => {
                d.client.tls_established(d.now);
                d.drain();
            }
            TlsFailed(reason) => {
                d.client.tls_failed(reason, d.now);
                d.drain();
            }
            NeverSent(bytes) => assert!(
                !d.all_out.windows(bytes.len()).any(|w| w == *bytes),
                "{at}: {:?}",
                String::from_utf8_lossy(&d.all_out)
            ),
            RunDerivation => {
                let Some(ClientEvent::Derive(derivation)) = d.events.pop_front() else {
                    panic!("{at}: no derivation asked for");
                };
                assert_eq!(d.client.poll_timeout(), None, "{at}: nothing is owed");
                d.client.derived(&derivation.run(), d.now);
                d.drain();
            }
        }
    }
    assert!(
        d.out.is_empty(),
        "unchecked output {:?} fed {feed:?}",
        d.out
    );
    assert!(
        d.events.is_empty(),
        "unchecked events {:?} fed {feed:?}",
        d.events
    );
}

/// Runs a transcript with server writes fed whole, a byte at a time and split at
/// every index: the result must not change.
fn run(steps: &[Step]) {
    run_config(steps, &config());
}

/// As `run`, with this configuration.
fn run_config(steps: &[Step], config: &Rc<ClientConfig>) {
    run_with(steps, Feed::Whole, config);
    run_with(steps, Feed::ByteAtATime, config);
    let longest = steps
        .iter()
        .map(|s| match s {
            Server(b) | Send(_, b) => b.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    for i in 0..=longest {
        run_with(steps, Feed::SplitAt(i), config);
    }
}

const GREETING: &[u8] = b"220 mx.example.org ESMTP\r\n";
const EHLO: &[u8] = b"EHLO gw.example.net\r\n";

fn ehlo_reply(keywords: &[&str]) -> Vec<u8> {
    let mut lines = vec!["mx.example.org".to_string()];
    lines.extend(keywords.iter().map(|k| k.to_string()));
    Reply::plain(250, lines).to_wire()
}

/// Greeting and EHLO with these keywords, ending `Ready`.
fn opening(keywords: &[&str]) -> Vec<Step> {
    let reply = ehlo_reply(keywords);
    let ext = Extensions::from_ehlo(&r(std::str::from_utf8(&reply).unwrap()));
    vec![
        Deadline(Some(300)),
        Ready(false),
        s(GREETING),
        c(EHLO),
        Server(reply),
        Event(ClientEvent::Ready(ext)),
        Ready(true),
        Deadline(None),
    ]
}

fn with(mut head: Vec<Step>, tail: Vec<Step>) -> Vec<Step> {
    head.extend(tail);
    head
}

#[test]
fn pipelined_happy_path_sends_one_group() {
    run(&with(
        opening(&["PIPELINING", "SIZE 10000", "8BITMIME", "ENHANCEDSTATUSCODES"]),
        vec![
            send(msg("a@example.net", &["b@example.org", "c@example.org"], b"Subject: x\r\n\r\nhi\r\n")),
            Ready(false),
            c1(b"MAIL FROM:<a@example.net> SIZE=18\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"),
            s(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n"),
            c(b"Subject: x\r\n\r\nhi\r\n.\r\n"),
            s(b"250 2.0.0 Queued as 1234\r\n"),
            done(&["250 2.0.0 Queued as 1234\r\n", "250 2.0.0 Queued as 1234\r\n"]),
            Ready(true),
            Quit,
            c(b"QUIT\r\n"),
            Ready(false),
            s(b"221 2.0.0 Bye\r\n"),
            closed(None),
            Closed(true),
            Deadline(None),
        ],
    ));
}

#[test]
fn lock_step_without_pipelining() {
    run(&with(
        opening(&["SIZE", "8BITMIME"]),
        vec![
            send(msg("", &["b@example.org", "c@example.org"], b"hi\r\n")),
            c(b"MAIL FROM:<> SIZE=4\r\n"),
            s(b"250 Ok\r\n"),
            c(b"RCPT TO:<b@example.org>\r\n"),
            s(b"250 Ok\r\n"),
            c(b"RCPT TO:<c@example.org>\r\n"),
            s(b"250 Ok\r\n"),
            c(b"DATA\r\n"),
            s(b"354 Go\r\n"),
            c(b"hi\r\n.\r\n"),
            s(b"250 Done\r\n"),
            done(&["250 Done\r\n", "250 Done\r\n"]),
        ],
    ));
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    run(&[
        s(GREETING),
        c(EHLO),
        s(b"502 5.5.1 Command not implemented\r\n"),
        c(b"HELO gw.example.net\r\n"),
        Ready(false),
        s(b"250 mx.example.org\r\n"),
        Event(ClientEvent::Ready(Extensions::default())),
        Ready(true),
        Send(
            OutgoingMessage {
                eight_bit: true,
                ..msg("a@x", &["b@y"], b"x\r\n").0
            },
            b"x\r\n".to_vec(),
        ),
        c(b"MAIL FROM:<a@x>\r\n"),
        s(b"250 ok\r\n"),
        c(b"RCPT TO:<b@y>\r\n"),
        s(b"250 ok\r\n"),
        c(b"DATA\r\n"),
        s(b"354 go\r\n"),
        c(b"x\r\n.\r\n"),
        s(b"250 ok\r\n"),
        done(&["250 ok\r\n"]),
    ]);
}

#[test]
fn helo_refused_too_ends_the_connection() {
    run(&[
        s(GREETING),
        c(EHLO),
        s(b"500 what\r\n"),
        c(b"HELO gw.example.net\r\n"),
        s(b"550 go away\r\n"),
        c(b"QUIT\r\n"),
        closed(Some("550 go away\r\n")),
        Closed(true),
        Ready(false),
    ]);
}

#[test]
fn ehlo_temporary_failure_ends_the_connection() {
    run(&[
        s(GREETING),
        c(EHLO),
        s(b"451 4.3.0 later\r\n"),
        c(b"QUIT\r\n"),
        closed(Some("451 4.3.0 later\r\n")),
    ]);
}

#[test]
fn refused_greeting_sends_quit() {
    run(&[
        s(b"554-5.7.1 No service\r\n554 5.7.1 for you\r\n"),
        c(b"QUIT\r\n"),
        closed(Some("554-5.7.1 No service\r\n554 5.7.1 for you\r\n")),
        Closed(true),
        // Nothing more is read.
        s(b"221 bye\r\n"),
    ]);
}

#[test]
fn multi_line_greeting_and_keywords_any_case() {
    let ext = Extensions {
        esmtp: true,
        pipelining: true,
        size: Some(0),
        eight_bit_mime: true,
        smtputf8: true,
        dsn: true,
        starttls: true,
        chunking: true,
        enhanced_status_codes: true,
        auth: vec![ClientMechanism::Login, ClientMechanism::ScramSha256],
    };
    // Keyword parsing only: TLS is not asked for, so STARTTLS is merely recorded.
    run_config(
        &[
            s(b"220-mx.example.org\r\n220-welcome\r\n220 ESMTP\r\n"),
            c(EHLO),
            s(
                b"250-mx.example.org hello\r\n250-pipelining\r\n250-Size\r\n250-8bitmime\r\n\
            250-SMTPUTF8\r\n250-DSN\r\n250-STARTTLS\r\n250-X-UNKNOWN 1 2\r\n250-CHUNKING\r\n\
            250-auth login CRAM-MD5 scram-sha-256 LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n",
            ),
            Event(ClientEvent::Ready(ext)),
        ],
        &config_tls(TlsPolicy::Never),
    );
}

#[test]
fn size_limit_is_checked_locally() {
    run(&with(
        opening(&["PIPELINING", "SIZE 10"]),
        vec![
            send(msg("a@x", &["b@y", "c@y"], b"0123456789X")),
            c(b""),
            done(&[
                "552 5.3.4 Message size exceeds remote limit\r\n",
                "552 5.3.4 Message size exceeds remote limit\r\n",
            ]),
            Ready(true),
            // Exactly at the limit goes out, with SIZE.
            send(msg("a@x", &["b@y"], b"0123456789")),
            c1(b"MAIL FROM:<a@x> SIZE=10\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
        ],
    ));
}

#[test]
fn eight_bit_body_only_when_offered() {
    let m = OutgoingMessage {
        eight_bit: true,
        ..msg("a@x", &["b@y"], b"\xc3\xa9\r\n").0
    };
    run(&with(
        opening(&["PIPELINING", "8BITMIME"]),
        vec![
            Send(m.clone(), b"x\r\n".to_vec()),
            c(b"MAIL FROM:<a@x> BODY=8BITMIME\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
        ],
    ));
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            Send(m, b"x\r\n".to_vec()),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
        ],
    ));
}

#[test]
fn smtputf8_needs_the_extension() {
    let m = OutgoingMessage {
        smtputf8: true,
        ..msg("j\u{f6}@x", &["b@y"], b"x\r\n").0
    };
    run(&with(
        opening(&["PIPELINING", "8BITMIME"]),
        vec![
            Send(m.clone(), b"x\r\n".to_vec()),
            done(&["553 5.6.7 Remote server does not support SMTPUTF8\r\n"]),
        ],
    ));
    run(&with(
        opening(&["PIPELINING", "SMTPUTF8"]),
        vec![
            Send(m, b"x\r\n".to_vec()),
            c("MAIL FROM:<j\u{f6}@x> SMTPUTF8\r\nRCPT TO:<b@y>\r\nDATA\r\n".as_bytes()),
        ],
    ));
}

#[test]
fn dsn_parameters_only_when_offered() {
    let m = OutgoingMessage {
        ret: Some("HDRS".into()),
        envid: Some("QQ314159".into()),
        rcpts: vec![
            OutgoingRcpt {
                address: "b@y".into(),
                notify: Some("SUCCESS,FAILURE".into()),
                orcpt: Some("rfc822;b@y".into()),
            },
            OutgoingRcpt {
                address: "c@y".into(),
                notify: Some("NEVER".into()),
                orcpt: None,
            },
        ],
        ..msg("a@x", &[], b"x\r\n").0
    };
    run(&with(
        opening(&["PIPELINING", "DSN"]),
        vec![
            Send(m.clone(), b"x\r\n".to_vec()),
            c(b"MAIL FROM:<a@x> RET=HDRS ENVID=QQ314159\r\n\
                RCPT TO:<b@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y\r\n\
                RCPT TO:<c@y> NOTIFY=NEVER\r\nDATA\r\n"),
        ],
    ));
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            Send(m, b"x\r\n".to_vec()),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
        ],
    ));
}

/// A pipelined transaction of one recipient up to the 354, then `content` goes out
/// as `wire`.
fn data_transcript(content: &[u8], wire: &[u8]) -> Vec<Step> {
    with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y"], content)),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            c(wire),
            s(b"250 ok\r\n"),
            done(&["250 ok\r\n"]),
        ],
    )
}

#[test]
fn content_is_dot_stuffed() {
    run(&data_transcript(
        b".x\r\nmid.dle\r\n.\r\n..\r\nend\r\n",
        b"..x\r\nmid.dle\r\n..\r\n...\r\nend\r\n.\r\n",
    ));
}

#[test]
fn content_gets_a_final_line_break() {
    run(&data_transcript(
        b"a\r\nno break",
        b"a\r\nno break\r\n.\r\n",
    ));
    run(&data_transcript(b"a\r\n.", b"a\r\n..\r\n.\r\n"));
    run(&data_transcript(b"", b".\r\n"));
}

#[test]
fn bare_cr_and_lf_become_crlf() {
    run(&data_transcript(
        b"a\nb\rc\r\r\n.\n\r.\r",
        b"a\r\nb\r\nc\r\n\r\n..\r\n\r\n..\r\n.\r\n",
    ));
    // A smuggled end of data is stuffed, not obeyed.
    run(&data_transcript(
        b"x\n.\nMAIL FROM:<e@vil>\r\n",
        b"x\r\n..\r\nMAIL FROM:<e@vil>\r\n.\r\n",
    ));
}

/// A client past its greeting and EHLO (PIPELINING offered), its output drained.
fn ready_with_pipelining() -> (Client, Instant) {
    let t0 = Instant::now();
    let mut client = Client::new(config(), t0);
    client.handle_input(GREETING, t0);
    client.handle_input(b"250-mx\r\n250 PIPELINING\r\n", t0);
    while client.poll_transmit().is_some() {}
    while client.poll_event().is_some() {}
    (client, t0)
}

/// The wire form of `content` handed over in these pieces.
fn stuffed(pieces: &[&[u8]]) -> Vec<u8> {
    let mut stuffer = Stuffer::new();
    let mut wire = Vec::new();
    for piece in pieces {
        let out = stuffer.stuff(piece);
        assert!(out.len() <= 2 * piece.len() + 2);
        wire.extend_from_slice(&out);
    }
    let end = stuffer.finish();
    assert!(end.len() <= 5);
    wire.extend_from_slice(&end);
    wire
}

#[test]
fn content_cut_anywhere_gives_the_same_wire() {
    let cases: &[&[u8]] = &[
        b".x\r\nmid.dle\r\n.\r\n..\r\nend\r\n",
        b"a\nb\rc\r\r\n.\n\r.\r",
        b"x\n.\nMAIL FROM:<e@vil>\r\n",
        b"abcdefghijklmnopqrstuvwxyz.0123\r\n.abcdefgh\0ijklmnop\rqrst..\nuvwxyz.........\n",
        b"\r\n.\r\n.",
        b"no line break at the end",
        b"\r",
        b".",
        b"",
    ];
    for content in cases {
        let whole = stuffed(&[content]);
        for i in 0..=content.len() {
            assert_eq!(
                stuffed(&[&content[..i], &content[i..]]),
                whole,
                "{content:?} at {i}"
            );
            for j in i..=content.len() {
                let three = stuffed(&[&content[..i], &content[i..j], &content[j..]]);
                assert_eq!(three, whole, "{content:?} at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = content.chunks(1).collect();
        assert_eq!(stuffed(&bytes), whole, "{content:?} byte by byte");
    }
}

#[test]
fn large_content_goes_out_piece_by_piece() {
    let mut content = Vec::new();
    while content.len() < 3 * CONTENT_CHUNK {
        content.extend_from_slice(b".line of text\r\n");
    }
    let pieces: Vec<&[u8]> = content.chunks(CONTENT_CHUNK).collect();
    assert_eq!(pieces.len(), 4);
    let wire = stuffed(&pieces);
    let mut want = Vec::new();
    for line in content.split_inclusive(|&b| b == b'\n') {
        want.push(b'.');
        want.extend_from_slice(line);
    }
    want.extend_from_slice(b".\r\n");
    assert_eq!(wire, want);
}

#[test]
fn crlf_cut_between_pieces_stays_one_line_break() {
    let mut first = vec![b'x'; 10];
    first.push(b'\r');
    let mut stuffer = Stuffer::new();
    let out = stuffer.stuff(&first);
    assert!(!out.ends_with(b"\r"), "the CR waits for its LF");
    assert_eq!(stuffer.stuff(b"\n.y\r\n"), b"\r\n..y\r\n");
    assert_eq!(stuffer.finish(), b".\r\n");
}

#[test]
fn content_is_taken_only_once_the_last_piece_is_written() {
    let (mut client, t0) = ready_with_pipelining();
    assert!(!client.wants_content());
    client.send(msg("a@x", &["b@y"], b"").0, t0);
    while client.poll_transmit().is_some() {}
    assert!(!client.wants_content(), "no content before the 354");
    client.handle_input(b"250 ok\r\n250 ok\r\n354 go\r\n", t0);
    assert_eq!(client.poll_event(), Some(ClientEvent::SendContent));
    assert!(client.wants_content());
    client.handle_content(b"a\r\n", t0);
    assert!(!client.wants_content(), "the piece is not written yet");
    assert_eq!(client.poll_transmit(), Some(b"a\r\n".to_vec()));
    assert!(client.wants_content());
    client.handle_content(b".b", t0);
    assert_eq!(client.poll_transmit(), Some(b"..b".to_vec()));
    client.end_content(t0);
    assert!(!client.wants_content());
    assert_eq!(client.poll_transmit(), Some(b"\r\n.\r\n".to_vec()));
    // Content after the end is ignored.
    client.handle_content(b"late", t0);
    assert_eq!(client.poll_transmit(), None);
    client.handle_input(b"250 ok\r\n", t0);
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::TransactionDone(vec![r("250 ok\r\n")]))
    );
}

#[test]
fn unreadable_content_closes_without_ending_the_data() {
    let (mut client, t0) = ready_with_pipelining();
    client.send(msg("a@x", &["b@y", "c@y"], b"").0, t0);
    while client.poll_transmit().is_some() {}
    client.handle_input(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n", t0);
    assert_eq!(client.poll_event(), Some(ClientEvent::SendContent));
    client.handle_content(b"first half\r\n", t0);
    assert_eq!(client.poll_transmit(), Some(b"first half\r\n".to_vec()));
    client.content_failed("disk on fire", t0);
    // No end of data and no QUIT: the server must see an unfinished message.
    assert_eq!(client.poll_transmit(), None);
    let local = r("451 4.3.0 Queue file read error: disk on fire\r\n");
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::TransactionDone(vec![
            local.clone(),
            r("550 no\r\n")
        ]))
    );
    assert_eq!(client.poll_event(), Some(ClientEvent::Closed(Some(local))));
    assert!(client.is_closed());
}

#[test]
fn per_recipient_statuses() {
    run(&with(
        opening(&["PIPELINING", "ENHANCEDSTATUSCODES"]),
        vec![
            send(msg("a@x", &["nobody@y", "b@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<nobody@y>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            s(b"250 2.1.0 ok\r\n550 5.1.1 No such user\r\n250 2.1.5 ok\r\n354 go\r\n"),
            c(b"x\r\n.\r\n"),
            s(b"250 2.0.0 queued\r\n"),
            done(&["550 5.1.1 No such user\r\n", "250 2.0.0 queued\r\n"]),
            Ready(true),
        ],
    ));
}

#[test]
fn all_recipients_refused_sends_no_content() {
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y", "c@y"], b"secret\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n550 no\r\n450 later\r\n554 5.5.1 No valid recipients\r\n"),
            c(b""),
            done(&["550 no\r\n", "450 later\r\n"]),
            Ready(true),
            // The next transaction starts clean.
            send(msg("a@x", &["d@y"], b"x\r\n")),
            c1(b"RSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n"),
            s(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            c(b"x\r\n.\r\n"),
            s(b"250 ok\r\n"),
            done(&["250 ok\r\n"]),
            // A completed DATA needs no RSET.
            send(msg("a@x", &["e@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<e@y>\r\nDATA\r\n"),
        ],
    ));
}

#[test]
fn all_recipients_refused_but_data_accepted_is_ended_with_a_dot() {
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y"], b"secret\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n550 no\r\n354 go\r\n"),
            c(b".\r\n"),
            Ready(false),
            s(b"554 no valid recipients\r\n"),
            done(&["550 no\r\n"]),
            Ready(true),
            send(msg("a@x", &["c@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
        ],
    ));
}

#[test]
fn all_recipients_refused_without_pipelining_skips_data() {
    run(&with(
        opening(&[]),
        vec![
            send(msg("a@x", &["b@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\n"),
            s(b"250 ok\r\n"),
            c(b"RCPT TO:<b@y>\r\n"),
            s(b"550 no\r\n"),
            c(b""),
            done(&["550 no\r\n"]),
            send(msg("a@x", &["c@y"], b"x\r\n")),
            c(b"RSET\r\n"),
            s(b"250 ok\r\n"),
            c(b"MAIL FROM:<a@x>\r\n"),
        ],
    ));
}

#[test]
fn mail_refused_applies_to_every_recipient() {
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
            s(b"553 5.7.1 Sender refused\r\n503 no mail\r\n503 no mail\r\n503 no mail\r\n"),
            done(&[
                "553 5.7.1 Sender refused\r\n",
                "553 5.7.1 Sender refused\r\n",
            ]),
            Ready(true),
        ],
    ));
    run(&with(
        opening(&[]),
        vec![
            send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\n"),
            s(b"451 4.3.0 try later\r\n"),
            c(b""),
            done(&["451 4.3.0 try later\r\n", "451 4.3.0 try later\r\n"]),
            Ready(true),
        ],
    ));
}

#[test]
fn data_refused_applies_to_accepted_recipients() {
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n250 ok\r\n550 no\r\n451 4.3.0 no data now\r\n"),
            done(&["451 4.3.0 no data now\r\n", "550 no\r\n"]),
            send(msg("a@x", &["b@y"], b"x\r\n")),
            c(b"RSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
        ],
    ));
}

#[test]
fn final_reply_refusal_is_per_accepted_recipient() {
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n250 ok\r\n452 full\r\n354 go\r\n"),
            c(b"x\r\n.\r\n"),
            s(b"554 5.7.1 spam\r\n"),
            done(&["554 5.7.1 spam\r\n", "452 full\r\n"]),
            Ready(true),
        ],
    ));
}

#[test]
fn service_closing_mid_transaction() {
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y", "c@y", "d@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n550 no\r\n421 4.3.2 shutting down\r\n"),
            c(b""),
            done(&[
                "550 no\r\n",
                "421 4.3.2 shutting down\r\n",
                "421 4.3.2 shutting down\r\n",
            ]),
            closed(Some("421 4.3.2 shutting down\r\n")),
            Closed(true),
            Deadline(None),
        ],
    ));
}

#[test]
fn service_closing_while_idle_or_at_greeting() {
    run(&[s(b"421 busy\r\n"), c(b""), closed(Some("421 busy\r\n"))]);
    run(&[
        s(GREETING),
        c(EHLO),
        s(b"421 4.7.0 bye\r\n"),
        c(b""),
        closed(Some("421 4.7.0 bye\r\n")),
    ]);
}

#[test]
fn connection_reuse() {
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y"], b"one\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            c(b"one\r\n.\r\n"),
            s(b"250 first\r\n"),
            done(&["250 first\r\n"]),
            send(msg("a@x", &["c@y"], b"two\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            c(b"two\r\n.\r\n"),
            s(b"250 second\r\n"),
            done(&["250 second\r\n"]),
            send(msg("a@x", &["d@y"], b"three\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n"),
            s(b"550 no\r\n503 a\r\n503 b\r\n"),
            done(&["550 no\r\n"]),
            send(msg("a@x", &["d@y"], b"four\r\n")),
            c(b"RSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            c(b"four\r\n.\r\n"),
            s(b"250 fourth\r\n"),
            done(&["250 fourth\r\n"]),
            Quit,
            c(b"QUIT\r\n"),
            s(b"221 bye\r\n"),
            closed(None),
        ],
    ));
}

#[test]
fn refused_rset_ends_the_connection() {
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n550 no\r\n503 no\r\n"),
            done(&["550 no\r\n"]),
            send(msg("a@x", &["c@y"], b"x\r\n")),
            c(b"RSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
            s(b"502 no rset\r\n"),
            done(&["451 4.5.0 Protocol error: RSET refused with 502\r\n"]),
            closed(Some("451 4.5.0 Protocol error: RSET refused with 502\r\n")),
        ],
    ));
}

#[test]
fn greeting_timeout() {
    run(&[
        Deadline(Some(300)),
        Wait(299),
        Closed(false),
        Wait(1),
        closed(Some("451 4.4.2 Timeout waiting for greeting reply\r\n")),
        Deadline(None),
    ]);
}

#[test]
fn ehlo_timeout() {
    run(&[
        Wait(10),
        s(GREETING),
        c(EHLO),
        Deadline(Some(310)),
        Wait(300),
        closed(Some("451 4.4.2 Timeout waiting for EHLO reply\r\n")),
    ]);
}

/// A pipelined transaction of two recipients, opened at 0 s and sent at 0 s.
fn timed(tail: Vec<Step>) -> Vec<Step> {
    with(
        with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
            ],
        ),
        tail,
    )
}

#[test]
fn mail_timeout() {
    let t = "451 4.4.2 Timeout waiting for MAIL reply\r\n";
    run(&timed(vec![
        Deadline(Some(300)),
        Wait(300),
        done(&[t, t]),
        closed(Some(t)),
    ]));
}

#[test]
fn rcpt_timeout_keeps_settled_recipients() {
    let t = "451 4.4.2 Timeout waiting for RCPT reply\r\n";
    run(&timed(vec![
        Wait(5),
        s(b"250 ok\r\n550 no\r\n"),
        Deadline(Some(305)),
        Wait(300),
        done(&["550 no\r\n", t]),
        closed(Some(t)),
    ]));
}

#[test]
fn data_initiation_timeout() {
    let t = "451 4.4.2 Timeout waiting for DATA reply\r\n";
    run(&timed(vec![
        s(b"250 ok\r\n250 ok\r\n250 ok\r\n"),
        Deadline(Some(120)),
        Wait(120),
        done(&[t, t]),
        closed(Some(t)),
    ]));
}

#[test]
fn final_dot_timeout() {
    let t = "451 4.4.2 Timeout waiting for end of data reply\r\n";
    run(&timed(vec![
        s(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        c(b"x\r\n.\r\n"),
        // The end of data arms the full final-dot timeout.
        Deadline(Some(600)),
        Wait(599),
        Closed(false),
        Wait(1),
        done(&[t, t]),
        closed(Some(t)),
    ]));
}

#[test]
fn final_reply_in_time_after_rearm() {
    run(&timed(vec![
        s(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        c(b"x\r\n.\r\n"),
        Wait(400),
        s(b"250 ok\r\n"),
        done(&["250 ok\r\n", "250 ok\r\n"]),
        Deadline(None),
        Ready(true),
    ]));
}

#[test]
fn data_block_timeout_when_content_is_not_taken() {
    let (mut client, t0) = ready_with_pipelining();
    client.send(msg("a@x", &["b@y"], b"x\r\n").0, t0);
    assert!(client.poll_transmit().is_some());
    client.handle_input(b"250 ok\r\n250 ok\r\n354 go\r\n", t0);
    assert_eq!(client.poll_event(), Some(ClientEvent::SendContent));
    // The layer never hands over the content.
    let deadline = client.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(180));
    client.handle_timeout(deadline);
    let t = r("451 4.4.2 Timeout sending message data\r\n");
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::TransactionDone(vec![t.clone()]))
    );
    assert_eq!(client.poll_event(), Some(ClientEvent::Closed(Some(t))));
    assert_eq!(client.poll_transmit(), None);
    assert!(client.is_closed());
}

#[test]
fn helo_and_rset_timeouts() {
    run(&[
        s(GREETING),
        c(EHLO),
        s(b"502 no\r\n"),
        c(b"HELO gw.example.net\r\n"),
        Wait(300),
        closed(Some("451 4.4.2 Timeout waiting for HELO reply\r\n")),
    ]);
    let t = "451 4.4.2 Timeout waiting for RSET reply\r\n";
    run(&with(
        opening(&[]),
        vec![
            send(msg("a@x", &["b@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\n"),
            s(b"550 no\r\n"),
            done(&["550 no\r\n"]),
            Deadline(None),
            Wait(1000),
            send(msg("a@x", &["b@y"], b"x\r\n")),
            c(b"RSET\r\n"),
            Deadline(Some(1300)),
            Wait(300),
            done(&[t]),
            closed(Some(t)),
        ],
    ));
}

#[test]
fn early_timeout_call_does_nothing() {
    run(&[Wait(100), Deadline(Some(300)), Closed(false)]);
    let mut client = Client::new(config(), Instant::now());
    client.handle_timeout(Instant::now());
    assert_eq!(client.poll_event(), None);
}

#[test]
fn quit_timeout_closes_quietly() {
    run(&with(
        opening(&[]),
        vec![
            Quit,
            c(b"QUIT\r\n"),
            Deadline(Some(300)),
            Wait(300),
            closed(None),
        ],
    ));
}

#[test]
fn malformed_replies_are_protocol_errors() {
    for (bad, why) in [
        (
            &b"250 ok\r\n25O oops\r\n"[..],
            "reply line without a valid reply code",
        ),
        (
            b"250 ok\r\n250-a\r\n251 b\r\n",
            "multi-line reply with mixed reply codes",
        ),
        (
            b"250 ok\r\n250ok\r\n",
            "reply line without a valid reply code",
        ),
    ] {
        let e = format!("451 4.5.0 Protocol error: {why}\r\n");
        run(&timed(vec![
            s(bad),
            c(b""),
            done(&[&e, &e]),
            closed(Some(&e)),
        ]));
    }
}

#[test]
fn overlong_and_endless_replies_are_protocol_errors() {
    let e = "451 4.5.0 Protocol error: reply line longer than 512 octets\r\n";
    let mut long = b"250 ".to_vec();
    long.resize(600, b'x');
    run(&timed(vec![Server(long), done(&[e, e]), closed(Some(e))]));
    let e = "451 4.5.0 Protocol error: reply with too many lines\r\n";
    let lines = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
    run_with(
        &timed(vec![Server(lines), done(&[e, e]), closed(Some(e))]),
        Feed::Whole,
        &config(),
    );
}

#[test]
fn unsolicited_replies_are_protocol_errors() {
    let e = "451 4.5.0 Protocol error: unexpected reply\r\n";
    // Only one reply is owed for EHLO.
    run(&[
        s(GREETING),
        c(EHLO),
        s(b"250 mx\r\n250 injected\r\n"),
        Event(ClientEvent::Ready(Extensions {
            esmtp: true,
            ..Extensions::default()
        })),
        c(b""),
        closed(Some(e)),
    ]);
    // After a transaction, while idle.
    run(&with(
        opening(&["PIPELINING"]),
        vec![s(b"250 stray\r\n"), closed(Some(e)), Closed(true)],
    ));
    // Extra replies after the final reply of a transaction.
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            send(msg("a@x", &["b@y"], b"x\r\n")),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            c(b"x\r\n.\r\n"),
            s(b"250 ok\r\n250 extra\r\n"),
            done(&["250 ok\r\n"]),
            closed(Some(e)),
        ],
    ));
}

#[test]
fn multi_line_replies_with_enhanced_codes() {
    run(&timed(vec![
        s(
            b"250 2.1.0 ok\r\n550-5.1.1 No such user\r\n550-5.1.1 see\r\n550 5.1.1 https://x\r\n\
            250 2.1.5 ok\r\n354 go\r\n",
        ),
        c(b"x\r\n.\r\n"),
        s(b"250-2.0.0 Queued\r\n250 2.0.0 as 42\r\n"),
        done(&[
            "550-5.1.1 No such user\r\n550-5.1.1 see\r\n550 5.1.1 https://x\r\n",
            "250-2.0.0 Queued\r\n250 2.0.0 as 42\r\n",
        ]),
    ]));
    let got = r("550-5.1.1 No such user\r\n550 5.1.1 here\r\n");
    assert_eq!(got.enhanced, Some(Enhanced::new(5, 1, 1)));
    assert_eq!(
        got.lines,
        vec!["No such user".to_string(), "here".to_string()]
    );
}

#[test]
fn replies_of_the_wrong_kind_are_protocol_errors() {
    let e = "451 4.5.0 Protocol error: unexpected reply\r\n";
    // A 250 to DATA must not pass for a delivery.
    run(&timed(vec![
        s(b"250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n"),
        done(&[e, e]),
        closed(Some(e)),
    ]));
    run(&timed(vec![
        s(b"354 go\r\n"),
        done(&[e, e]),
        closed(Some(e)),
    ]));
    run(&timed(vec![
        s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        done(&[e, e]),
        closed(Some(e)),
    ]));
    run(&timed(vec![
        s(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        c(b"x\r\n.\r\n"),
        s(b"354 again\r\n"),
        done(&[e, e]),
        closed(Some(e)),
    ]));
    run(&[s(GREETING), c(EHLO), s(b"354 what\r\n"), closed(Some(e))]);
}

#[test]
fn connection_lost() {
    let e = "451 4.4.2 Connection lost while waiting for RCPT reply\r\n";
    run(&timed(vec![
        s(b"250 ok\r\n250 ok\r\n"),
        Eof,
        c(b""),
        done(&[e, e]),
        closed(Some(e)),
    ]));
    run(&[
        Eof,
        closed(Some(
            "451 4.4.2 Connection lost while waiting for greeting reply\r\n",
        )),
    ]);
    run(&with(
        opening(&[]),
        vec![Eof, closed(Some("451 4.4.2 Connection lost\r\n"))],
    ));
    run(&with(
        opening(&[]),
        vec![Quit, c(b"QUIT\r\n"), Eof, closed(None), Eof],
    ));
}

#[test]
fn negative_reply_before_the_content_is_taken_ends_the_connection() {
    let (mut client, t0) = ready_with_pipelining();
    client.send(msg("a@x", &["b@y"], b"x\r\n").0, t0);
    assert!(client.poll_transmit().is_some());
    client.handle_input(b"250 ok\r\n250 ok\r\n354 go\r\n554 5.3.4 too big\r\n", t0);
    let reply = r("554 5.3.4 too big\r\n");
    assert_eq!(client.poll_transmit(), None);
    assert_eq!(client.poll_event(), Some(ClientEvent::SendContent));
    assert!(!client.wants_content());
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::TransactionDone(vec![reply.clone()]))
    );
    assert_eq!(client.poll_event(), Some(ClientEvent::Closed(Some(reply))));
}

#[test]
fn quit_during_a_transaction_settles_it() {
    let e = "451 4.4.2 Delivery aborted: connection closed locally\r\n";
    run(&timed(vec![
        s(b"250 ok\r\n550 no\r\n"),
        Quit,
        c(b""),
        done(&["550 no\r\n", e]),
        closed(None),
    ]));
    run(&[
        s(GREETING),
        c(EHLO),
        Quit,
        c(b""),
        closed(None),
        Closed(true),
    ]);
}

#[test]
fn unsafe_envelope_values_never_reach_the_wire() {
    let mut m = msg("a@x", &["b@y", "c@y\r\nRSET"], b"x\r\n").0;
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            Send(m.clone(), b"x\r\n".to_vec()),
            c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            c(b"x\r\n.\r\n"),
            s(b"250 ok\r\n"),
            done(&[
                "250 ok\r\n",
                "553 5.1.3 Bad destination mailbox address syntax\r\n",
            ]),
        ],
    ));
    m.from = "a@x>\nDATA".into();
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            Send(m, b"x\r\n".to_vec()),
            c(b""),
            done(&[
                "553 5.1.7 Bad sender address syntax\r\n",
                "553 5.1.7 Bad sender address syntax\r\n",
            ]),
        ],
    ));
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "not ready"))]
fn send_before_ready_fails_every_recipient() {
    let mut client = Client::new(config(), Instant::now());
    client.send(msg("a@x", &["b@y", "c@y"], b"x\r\n").0, Instant::now());
    let t = Reply::new(451, "4.3.0", "Connection not ready for a transaction");
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::TransactionDone(vec![t.clone(), t]))
    );
    assert_eq!(client.poll_transmit(), None);
}

/// The extensions an EHLO reply with these keywords gives.
fn ext_of(keywords: &[&str]) -> Extensions {
    let reply = ehlo_reply(keywords);
    Extensions::from_ehlo(&r(std::str::from_utf8(&reply).unwrap()))
}

#[test]
fn old_auth_form_is_read_and_a_keyword_cut_inside_a_character_is_not() {
    // `AUTHé`: a cut after five octets would fall inside the `é`.
    let ext = ext_of(&["AUTHé LOGIN", "AUTH=PLAIN SCRAM-SHA-256", "AUTH="]);
    assert_eq!(
        ext.auth,
        [ClientMechanism::Plain, ClientMechanism::ScramSha256]
    );
}

const STARTTLS: &[u8] = b"STARTTLS\r\n";
const TLS_GO: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";

/// Greeting and an EHLO reply offering STARTTLS, which the client asks for.
fn up_to_starttls() -> Vec<Step> {
    vec![
        s(GREETING),
        c(EHLO),
        Server(ehlo_reply(&["PIPELINING", "SIZE 100", "STARTTLS"])),
        c1(STARTTLS),
        Ready(false),
        Tls(false),
    ]
}

/// After the handshake: EHLO again, its reply, `Ready`, then one pipelined
/// transaction and QUIT. The pre-TLS SIZE is forgotten: MAIL carries none.
fn after_tls() -> Vec<Step> {
    vec![
        Tls(true),
        c1(EHLO),
        Deadline(Some(300)),
        Server(ehlo_reply(&["PIPELINING", "ENHANCEDSTATUSCODES"])),
        Event(ClientEvent::Ready(ext_of(&[
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
        ]))),
        Ready(true),
        send(msg("a@x", &["b@y"], b"hi\r\n")),
        c1(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
        s(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n"),
        c(b"hi\r\n.\r\n"),
        s(b"250 2.0.0 Queued\r\n"),
        done(&["250 2.0.0 Queued\r\n"]),
        Quit,
        c(b"QUIT\r\n"),
        s(b"221 2.0.0 Bye\r\n"),
        closed(None),
        Tls(true),
    ]
}

#[test]
fn opportunistic_starttls_then_ehlo_again() {
    let steps = with(
        up_to_starttls(),
        with(
            vec![
                s(TLS_GO),
                Event(ClientEvent::StartTls),
                // The layer bounds the handshake; the core waits for no reply.
                Deadline(None),
                Ready(false),
                Tls(false),
                c(b""),
                TlsEstablished,
            ],
            after_tls(),
        ),
    );
    run_config(&steps, &config_tls(TlsPolicy::Opportunistic));
    // The default policy is opportunistic.
    run(&steps);
    // Under `Required` the same dialogue sends mail, once under TLS.
    run_config(&steps, &config_tls(TlsPolicy::Required));
}

#[test]
fn bytes_after_starttls_220_in_the_same_write_are_discarded() {
    for injected in [
        &b"220 2.0.0 Ready\r\n250-fake\r\n250 fake\r\n"[..],
        // An unfinished line must not prefix the real reply either.
        b"220 2.0.0 Ready\r\n250-fake\r\n250 fake\r\n250-PIPE",
        b"220 2.0.0 Ready\r\n500 nonsense\r\n",
    ] {
        run(&with(
            up_to_starttls(),
            with(
                vec![
                    s(injected),
                    Event(ClientEvent::StartTls),
                    c(b""),
                    Closed(false),
                    TlsEstablished,
                ],
                after_tls(),
            ),
        ));
    }
}

#[test]
fn bytes_arriving_before_the_handshake_ends_are_discarded() {
    run(&with(
        up_to_starttls(),
        with(
            vec![
                s(TLS_GO),
                Event(ClientEvent::StartTls),
                s(b"250-fake\r\n250 fake\r\n"),
                s(b"250 half a li"),
                c(b""),
                Closed(false),
                Deadline(None),
                TlsEstablished,
            ],
            after_tls(),
        ),
    ));
}

#[test]
fn required_without_starttls_offered_sends_no_mail() {
    let refused = "454 4.7.5 TLS is required but the server does not offer STARTTLS\r\n";
    run_config(
        &[
            s(GREETING),
            c(EHLO),
            Server(ehlo_reply(&["PIPELINING", "SIZE 100"])),
            c(b"QUIT\r\n"),
            closed(Some(refused)),
            Closed(true),
            Ready(false),
            Tls(false),
            s(b"221 bye\r\n"),
            NeverSent(b"MAIL"),
            NeverSent(b"STARTTLS"),
        ],
        &config_tls(TlsPolicy::Required),
    );
    // An older server answering only HELO offers no STARTTLS either.
    run_config(
        &[
            s(GREETING),
            c(EHLO),
            s(b"502 5.5.1 Unrecognized command\r\n"),
            c(b"HELO gw.example.net\r\n"),
            s(b"250 mx.example.org\r\n"),
            c(b"QUIT\r\n"),
            closed(Some(refused)),
            Closed(true),
            NeverSent(b"MAIL"),
            NeverSent(b"STARTTLS"),
        ],
        &config_tls(TlsPolicy::Required),
    );
}

#[test]
fn required_with_starttls_refused_sends_no_mail() {
    run_config(
        &with(
            up_to_starttls(),
            vec![
                s(b"454 4.7.0 TLS not available due to temporary reason\r\n"),
                c(b"QUIT\r\n"),
                closed(Some(
                    "454 4.7.5 TLS is required but the server refused STARTTLS: \
                     454 4.7.0 TLS not available due to temporary reason\r\n",
                )),
                Closed(true),
                Ready(false),
                Tls(false),
                NeverSent(b"MAIL"),
            ],
        ),
        &config_tls(TlsPolicy::Required),
    );
}

#[test]
fn failed_handshake_closes_without_mail() {
    for policy in [TlsPolicy::Required, TlsPolicy::Opportunistic] {
        run_config(
            &with(
                up_to_starttls(),
                vec![
                    s(TLS_GO),
                    Event(ClientEvent::StartTls),
                    TlsFailed("certificate expired"),
                    // The connection is in no known state: no QUIT.
                    c(b""),
                    closed(Some(
                        "454 4.7.5 TLS handshake failed: certificate expired\r\n",
                    )),
                    Closed(true),
                    Tls(false),
                    Deadline(None),
                    // A late call changes nothing.
                    TlsEstablished,
                    c(b""),
                    Tls(false),
                    NeverSent(b"MAIL"),
                ],
            ),
            &config_tls(policy),
        );
    }
}

#[test]
fn opportunistic_with_starttls_refused_goes_on_in_clear() {
    run_config(
        &with(
            up_to_starttls(),
            vec![
                s(b"454 4.7.0 TLS not available\r\n"),
                Event(ClientEvent::Ready(ext_of(&[
                    "PIPELINING",
                    "SIZE 100",
                    "STARTTLS",
                ]))),
                Ready(true),
                Tls(false),
                Deadline(None),
                send(msg("a@x", &["b@y"], b"hi\r\n")),
                c1(b"MAIL FROM:<a@x> SIZE=4\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                s(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n"),
                c(b"hi\r\n.\r\n"),
                s(b"250 2.0.0 Queued\r\n"),
                done(&["250 2.0.0 Queued\r\n"]),
                NeverSent(b"EHLO gw.example.net\r\nEHLO"),
            ],
        ),
        &config_tls(TlsPolicy::Opportunistic),
    );
}

#[test]
fn never_policy_and_helo_servers_get_no_starttls() {
    run_config(
        &[
            s(GREETING),
            c(EHLO),
            Server(ehlo_reply(&["STARTTLS"])),
            Event(ClientEvent::Ready(ext_of(&["STARTTLS"]))),
            Ready(true),
            c(b""),
            NeverSent(b"STARTTLS"),
        ],
        &config_tls(TlsPolicy::Never),
    );
    run_config(
        &[
            s(GREETING),
            c(EHLO),
            s(b"500 5.5.1 What?\r\n"),
            c(b"HELO gw.example.net\r\n"),
            s(b"250 mx.example.org\r\n"),
            Event(ClientEvent::Ready(Extensions::default())),
            Ready(true),
            Tls(false),
            NeverSent(b"STARTTLS"),
        ],
        &config_tls(TlsPolicy::Opportunistic),
    );
}

fn auth_config(password: &str, tls: TlsPolicy, cleartext: bool) -> Rc<ClientConfig> {
    Rc::new(ClientConfig {
        helo_name: "gw.example.net".into(),
        tls,
        auth: Some(ClientAuth {
            credentials: ClientCredentials::new("user".into(), password.into()),
            nonce: ClientNonce::parse("rOprNGfwEbeRWgbNEkqO").unwrap(),
            allow_cleartext: cleartext,
        }),
        ..ClientConfig::default()
    })
}

fn b64_line(text: &[u8]) -> Vec<u8> {
    format!("{}\r\n", base64::encode(text)).into_bytes()
}

fn reply_334(text: &[u8]) -> Vec<u8> {
    format!("334 {}\r\n", base64::encode(text)).into_bytes()
}

/// Greeting, STARTTLS, the handshake and EHLO under TLS with these keywords.
fn tls_up_to_auth(keywords: &[&str]) -> Vec<Step> {
    with(
        up_to_starttls(),
        vec![
            s(b"220 2.0.0 Ready to start TLS\r\n"),
            Event(ClientEvent::StartTls),
            TlsEstablished,
            c1(EHLO),
            Server(ehlo_reply(keywords)),
        ],
    )
}

const SERVER_FIRST: &[u8] =
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

/// Up to our client-final: TLS, EHLO with `keywords`, the AUTH command with the
/// client-first, the server-first, the derivation and our proof.
fn scram_up_to_server_final(keywords: &[&str]) -> Vec<Step> {
    with(
        tls_up_to_auth(keywords),
        vec![
            c1(b"AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=\r\n"),
            Server(reply_334(SERVER_FIRST)),
            RunDerivation,
            c1(&b64_line(CLIENT_FINAL)),
            Deadline(Some(300)),
        ],
    )
}

/// RFC 7677's exchange over SMTP (RFC 4954 §4): the initial response with the
/// command, the derivation off the core, the server-final as a challenge answered
/// empty, then `Ready`; the strongest offered mechanism is the one used.
#[test]
fn scram_login_after_tls_proves_the_server() {
    let keywords = ["AUTH LOGIN PLAIN SCRAM-SHA-256", "PIPELINING"];
    let steps = with(
        scram_up_to_server_final(&keywords),
        vec![
            Server(reply_334(SERVER_FINAL)),
            c1(b"\r\n"),
            Ready(false),
            s(b"235 2.7.0 Authentication successful\r\n"),
            Event(ClientEvent::Ready(ext_of(&keywords))),
            Ready(true),
        ],
    );
    run_config(
        &steps,
        &auth_config("pencil", TlsPolicy::Opportunistic, false),
    );
}

#[test]
fn a_scram_server_that_cannot_prove_itself_gets_nothing_more() {
    let unproven = "454 4.7.0 Authentication failed: the server did not prove it knows the password (SCRAM server signature)\r\n";
    // A wrong signature, or a 235 without any: the connection ends at once, with no
    // empty answer and no mail.
    for server in [
        reply_334(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
        b"235 2.7.0 Authentication successful\r\n".to_vec(),
    ] {
        let steps = with(
            scram_up_to_server_final(&["AUTH SCRAM-SHA-256"]),
            vec![Server(server), closed(Some(unproven)), Closed(true)],
        );
        run_config(
            &steps,
            &auth_config("pencil", TlsPolicy::Opportunistic, false),
        );
    }
}

#[test]
fn plain_login_and_a_refusal() {
    let keywords = ["AUTH PLAIN LOGIN"];
    let mut steps = tls_up_to_auth(&keywords);
    steps.extend([
        c1(&format!("AUTH PLAIN {}\r\n", base64::encode(b"\0user\0pencil")).into_bytes()),
        s(b"235 2.7.0 Authentication successful\r\n"),
        Event(ClientEvent::Ready(ext_of(&keywords))),
        Ready(true),
    ]);
    run_config(
        &steps,
        &auth_config("pencil", TlsPolicy::Opportunistic, false),
    );
    // A 535 defers: a temporary reply naming the user and the server's words, QUIT.
    let mut steps = tls_up_to_auth(&keywords);
    steps.extend([
        c1(&format!("AUTH PLAIN {}\r\n", base64::encode(b"\0user\0wrong")).into_bytes()),
        s(b"535 5.7.8 Error: authentication failed\r\n"),
        c(b"QUIT\r\n"),
        closed(Some(
            "454 4.7.0 Authentication as user failed: 535 5.7.8 Error: authentication failed\r\n",
        )),
        Closed(true),
        NeverSent(b"MAIL"),
    ]);
    run_config(
        &steps,
        &auth_config("wrong", TlsPolicy::Opportunistic, false),
    );
}

#[test]
fn login_in_clear_only_when_allowed() {
    let keywords = ["AUTH=LOGIN"];
    // Allowed: the two prompts, answered in order.
    run_config(
        &[
            s(GREETING),
            c(EHLO),
            Server(ehlo_reply(&keywords)),
            c1(b"AUTH LOGIN\r\n"),
            Server(reply_334(b"Username:")),
            c1(&b64_line(b"user")),
            Server(reply_334(b"Password:")),
            c1(&b64_line(b"pencil")),
            s(b"235 2.7.0 Authentication successful\r\n"),
            Event(ClientEvent::Ready(ext_of(&keywords))),
            Ready(true),
            Tls(false),
        ],
        &auth_config("pencil", TlsPolicy::Opportunistic, true),
    );
    // Not allowed: no AUTH, no password; QUIT and a temporary reply.
    run_config(
        &[
            s(GREETING),
            c(EHLO),
            Server(ehlo_reply(&keywords)),
            c(b"QUIT\r\n"),
            closed(Some(
                "454 4.7.0 Not sending the password without TLS: the next hop does not do TLS (set auth danger-cleartext to allow it)\r\n",
            )),
            Closed(true),
            NeverSent(b"AUTH"),
            NeverSent(b"cGVuY2ls"),
        ],
        &auth_config("pencil", TlsPolicy::Opportunistic, false),
    );
}

#[test]
fn no_usable_mechanism_defers() {
    // Only mechanisms we do not use, or no AUTH at all: QUIT, and the mail waits.
    for keywords in ["AUTH CRAM-MD5 NTLM", "PIPELINING"] {
        let steps = with(
            tls_up_to_auth(&[keywords]),
            vec![
                c(b"QUIT\r\n"),
                closed(Some(
                    "454 4.7.0 The next hop offers no AUTH mechanism we use (SCRAM-SHA-256, PLAIN, LOGIN)\r\n",
                )),
                Closed(true),
            ],
        );
        run_config(
            &steps,
            &auth_config("pencil", TlsPolicy::Opportunistic, false),
        );
    }
}

#[test]
fn a_challenge_that_is_not_base64_ends_the_exchange() {
    let mut steps = tls_up_to_auth(&["AUTH LOGIN"]);
    steps.extend([
        c1(b"AUTH LOGIN\r\n"),
        s(b"334 not base64!\r\n"),
        closed(Some(
            "454 4.7.0 Authentication failed: malformed challenge\r\n",
        )),
        Closed(true),
    ]);
    run_config(
        &steps,
        &auth_config("pencil", TlsPolicy::Opportunistic, false),
    );
}

#[test]
fn starttls_answered_with_another_positive_reply_ends_the_connection() {
    run(&with(
        up_to_starttls(),
        vec![
            s(b"250 2.0.0 Ok\r\n"),
            closed(Some("451 4.5.0 Protocol error: unexpected reply\r\n")),
            Closed(true),
            Tls(false),
            NeverSent(b"MAIL"),
        ],
    ));
}

#[test]
fn tls_calls_outside_a_handshake_are_ignored() {
    run(&with(
        opening(&["PIPELINING"]),
        vec![
            TlsEstablished,
            TlsFailed("no handshake"),
            c(b""),
            Tls(false),
            Ready(true),
            Closed(false),
        ],
    ));
}

#[test]
fn quit_or_eof_during_the_handshake_closes() {
    run(&with(
        up_to_starttls(),
        vec![
            s(TLS_GO),
            Event(ClientEvent::StartTls),
            Quit,
            c(b""),
            closed(None),
            Closed(true),
        ],
    ));
    run(&with(
        up_to_starttls(),
        vec![
            s(TLS_GO),
            Event(ClientEvent::StartTls),
            Eof,
            c(b""),
            closed(Some("451 4.4.2 Connection lost\r\n")),
        ],
    ));
}
