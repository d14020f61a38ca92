//! Recipient verification callouts over loopback TCP: a scripted internal server written
//! here, and Postfix's smtp-sink as a real peer.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{free_port, is_root, wait_until};
use drawbridge::io::relay::callout::{Outcome, Unreachable, Verdict, Verifier, VerifyOptions};
use drawbridge::proto::smtp::reply::Reply;
use smol::LocalExecutor;

/// How the scripted internal server behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers everything; PIPELINING offered or not.
    Normal { pipelining: bool },
    /// Greets, then never answers again.
    SilentAfterGreeting,
    /// Answers every RCPT with 450.
    TempFailRcpt,
}

/// An internal server on 127.0.0.1 that refuses chosen recipients with 550 and counts
/// connections and RCPT commands.
struct TestServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    rcpts: Arc<AtomicUsize>,
    /// The server's end of every connection, to cut them.
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl TestServer {
    fn start(unknown: &[&str], behaviour: Behaviour) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let rcpts = Arc::new(AtomicUsize::new(0));
        let unknown: Arc<HashSet<String>> =
            Arc::new(unknown.iter().map(|u| u.to_ascii_lowercase()).collect());
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (c, r, s) = (connections.clone(), rcpts.clone(), streams.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                s.lock().unwrap().push(stream.try_clone().unwrap());
                c.fetch_add(1, Ordering::SeqCst);
                let (r, unknown) = (r.clone(), unknown.clone());
                std::thread::spawn(move || serve(stream, &unknown, behaviour, &r));
            }
        });
        TestServer {
            addr,
            connections,
            rcpts,
            streams,
        }
    }

    /// Closes every connection from the server's side.
    fn cut_all(&self) {
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn rcpts(&self) -> usize {
        self.rcpts.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, unknown: &HashSet<String>, behaviour: Behaviour, rcpts: &AtomicUsize) {
    let mut out = stream.try_clone().unwrap();
    let mut input = BufReader::new(stream);
    if out.write_all(b"220 internal.test ESMTP\r\n").is_err() {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if behaviour == Behaviour::SilentAfterGreeting {
            continue;
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            match behaviour {
                Behaviour::Normal { pipelining: false } => b"250-internal.test\r\n250 SIZE 0\r\n",
                _ => b"250-internal.test\r\n250 PIPELINING\r\n",
            }
        } else if upper.starts_with("RCPT TO:<") {
            rcpts.fetch_add(1, Ordering::SeqCst);
            let address = line[9..]
                .trim_end()
                .trim_end_matches('>')
                .to_ascii_lowercase();
            if behaviour == Behaviour::TempFailRcpt {
                b"450 4.2.1 Mailbox busy\r\n"
            } else if unknown.contains(&address) {
                b"550 5.1.1 User unknown in local recipient table\r\n"
            } else {
                b"250 2.1.5 Ok\r\n"
            }
        } else if upper.starts_with("QUIT") {
            let _ = out.write_all(b"221 2.0.0 Bye\r\n");
            return;
        } else {
            b"250 2.0.0 Ok\r\n"
        };
        if out.write_all(reply).is_err() {
            return;
        }
    }
}

/// Log lines of the "verify" target, collected for the whole test process.
struct Captured(Mutex<Vec<String>>);

impl log::Log for Captured {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == "verify"
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<&'static Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let logger: &'static Captured = Box::leak(Box::new(Captured(Mutex::new(Vec::new()))));
        let _ = log::set_logger(logger);
        log::set_max_level(log::LevelFilter::Info);
        logger
    })
}

/// The captured log lines that mention `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    captured()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

fn options() -> VerifyOptions {
    VerifyOptions {
        helo_name: "gw.test".into(),
        timeout: Duration::from_secs(5),
        ..VerifyOptions::default()
    }
}

/// Runs `f` on a single-threaded executor.
fn run<T>(f: impl Future<Output = T>) -> T {
    captured();
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(f))
}

fn accepted(cached: bool) -> Verdict {
    Verdict {
        outcome: Outcome::Accept,
        cached,
    }
}

fn user_unknown(rcpt: &str) -> Outcome {
    Outcome::Reject(Reply::new(
        550,
        "5.1.1",
        format!("<{rcpt}>: Recipient address rejected: User unknown"),
    ))
}

#[test]
fn unknown_refused_known_accepted_and_answers_are_cached() {
    let server = TestServer::start(
        &["ghost@cache.test"],
        Behaviour::Normal { pipelining: true },
    );
    let hosts = [server.addr];
    let verifier = Verifier::new(options());
    run(async {
        let now = Instant::now();
        let v = verifier.verify("ghost@cache.test", &hosts, now).await;
        assert_eq!(v.outcome, user_unknown("ghost@cache.test"));
        assert!(!v.cached);
        assert_eq!(
            verifier.verify("bob@cache.test", &hosts, now).await,
            accepted(false)
        );
        assert_eq!(server.rcpts(), 2);

        // Again, in other case: from the cache, the server not asked.
        assert_eq!(
            verifier.verify("Bob@Cache.Test", &hosts, now).await,
            accepted(true)
        );
        let v = verifier.verify("ghost@cache.test", &hosts, now).await;
        assert_eq!(v.outcome, user_unknown("ghost@cache.test"));
        assert!(v.cached);
        assert_eq!(server.rcpts(), 2);
        assert_eq!(verifier.cache_len(), 2);

        // Past the negative lifetime the server is asked again; the positive one holds.
        let later = now + VerifyOptions::default().negative_ttl;
        let v = verifier.verify("ghost@cache.test", &hosts, later).await;
        assert!(!v.cached);
        assert_eq!(
            verifier.verify("bob@cache.test", &hosts, later).await,
            accepted(true)
        );
        assert_eq!(server.rcpts(), 3);
    });
    let relay = format!("127.0.0.1[127.0.0.1]:{}", server.addr.port());
    let ghost = log_lines("<ghost@cache.test>");
    assert!(
        ghost[0].starts_with(&format!(
            "verify <ghost@cache.test>: refused by {relay}: 550 5.1.1"
        )),
        "{ghost:?}"
    );
    assert_eq!(ghost[1], "verify <ghost@cache.test>: refused (cached)");
    assert_eq!(
        log_lines("<Bob@Cache.Test>"),
        ["verify <Bob@Cache.Test>: exists (cached)"]
    );
    assert_eq!(
        log_lines("<bob@cache.test>")[0],
        format!("verify <bob@cache.test>: exists at {relay}")
    );
}

#[test]
fn several_verifies_reuse_one_connection() {
    for pipelining in [true, false] {
        let server = TestServer::start(&["nobody@reuse.test"], Behaviour::Normal { pipelining });
        let verifier = Verifier::new(options());
        run(async {
            let now = Instant::now();
            for i in 0..5 {
                let rcpt = format!("user{i}@reuse.test");
                let v = verifier.verify(&rcpt, &[server.addr], now).await;
                assert_eq!(v, accepted(false), "{rcpt}");
            }
            let v = verifier
                .verify("nobody@reuse.test", &[server.addr], now)
                .await;
            assert_eq!(v.outcome, user_unknown("nobody@reuse.test"));
            assert_eq!(verifier.idle_connections(), 1);
        });
        assert_eq!(server.rcpts(), 6);
        assert_eq!(server.connections(), 1, "pipelining {pipelining}");
    }
}

#[test]
fn idle_connection_expires() {
    let server = TestServer::start(&[], Behaviour::Normal { pipelining: true });
    let verifier = Verifier::new(options());
    run(async {
        let now = Instant::now();
        verifier.verify("a@idle.test", &[server.addr], now).await;
        verifier
            .verify("b@idle.test", &[server.addr], now + Duration::from_secs(1))
            .await;
        assert_eq!(server.connections(), 1);
        verifier
            .verify("c@idle.test", &[server.addr], now + Duration::from_secs(30))
            .await;
    });
    assert_eq!(server.connections(), 2);
}

#[test]
fn reused_connection_closed_by_the_server_is_replaced() {
    let server = TestServer::start(&[], Behaviour::Normal { pipelining: true });
    let verifier = Verifier::new(options());
    run(async {
        let now = Instant::now();
        let v = verifier.verify("a@gone.test", &[server.addr], now).await;
        assert_eq!(v, accepted(false));
        assert_eq!(verifier.idle_connections(), 1);
        // The pooled connection is cut under us: the next verify finds it dead.
        server.cut_all();
        let v = verifier.verify("b@gone.test", &[server.addr], now).await;
        assert_eq!(v, accepted(false));
    });
    assert_eq!(server.connections(), 2);
    assert_eq!(server.rcpts(), 2);
}

#[test]
fn first_host_dead_second_used() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = TestServer::start(&["x@failover.test"], Behaviour::Normal { pipelining: true });
    let verifier = Verifier::new(options());
    run(async {
        let now = Instant::now();
        let v = verifier
            .verify("x@failover.test", &[dead, server.addr], now)
            .await;
        assert_eq!(v.outcome, user_unknown("x@failover.test"));
        let v = verifier
            .verify("y@failover.test", &[dead, server.addr], now)
            .await;
        assert_eq!(v, accepted(false));
    });
    assert_eq!(server.rcpts(), 2);
    assert_eq!(server.connections(), 1);
}

#[test]
fn all_hosts_down() {
    let dead: Vec<SocketAddr> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    run(async {
        let now = Instant::now();
        let verifier = Verifier::new(options());
        let v = verifier.verify("a@down.test", &dead, now).await;
        assert_eq!(
            v.outcome,
            Outcome::TempFail(Reply::new(
                451,
                "4.4.3",
                "Recipient verification temporarily unavailable"
            ))
        );
        assert!(!v.cached);
        assert_eq!(
            verifier.verify("a@down.test", &[], now).await.outcome,
            v.outcome
        );

        let verifier = Verifier::new(VerifyOptions {
            unreachable: Unreachable::Accept,
            ..options()
        });
        for _ in 0..2 {
            // Accepted unverified, and not cached.
            assert_eq!(
                verifier.verify("b@down.test", &dead, now).await,
                accepted(false)
            );
        }
        assert_eq!(verifier.cache_len(), 0);
    });
    assert!(log_lines("verify <a@down.test>: no internal host reachable")[0].ends_with("deferred"));
}

#[test]
fn silent_server_times_out() {
    let server = TestServer::start(&[], Behaviour::SilentAfterGreeting);
    let verifier = Verifier::new(VerifyOptions {
        timeout: Duration::from_millis(300),
        ..options()
    });
    let v = run(verifier.verify("a@silent.test", &[server.addr], Instant::now()));
    assert!(
        matches!(&v.outcome, Outcome::TempFail(r) if r.code == 451),
        "{v:?}"
    );
    assert!(!v.cached);
    assert_eq!(verifier.idle_connections(), 0);
}

#[test]
fn temporary_rcpt_refusal_is_tempfail_and_not_cached() {
    let server = TestServer::start(&[], Behaviour::TempFailRcpt);
    let verifier = Verifier::new(options());
    run(async {
        let now = Instant::now();
        for _ in 0..2 {
            let v = verifier.verify("busy@temp.test", &[server.addr], now).await;
            assert_eq!(
                v.outcome,
                Outcome::TempFail(Reply::new(
                    450,
                    "4.1.1",
                    "<busy@temp.test>: Recipient address rejected: unverified address"
                ))
            );
            assert!(!v.cached);
        }
    });
    assert_eq!(server.rcpts(), 2);
    assert_eq!(server.connections(), 1);
    assert!(log_lines("verify <busy@temp.test>: unsure at")[0].ends_with("450 4.2.1 Mailbox busy"));
}

/// Postfix's smtp-sink on a loopback port; `reject_rcpt` makes it refuse every RCPT with
/// a hard error.
struct SmtpSink {
    child: Child,
    addr: SocketAddr,
}

impl SmtpSink {
    fn start(reject_rcpt: bool) -> SmtpSink {
        let port = free_port();
        let mut cmd = Command::new("/usr/sbin/smtp-sink");
        if is_root() {
            cmd.arg("-u").arg("postfix");
        }
        if reject_rcpt {
            cmd.arg("-f").arg("RCPT");
        }
        let child = cmd
            .arg(format!("127.0.0.1:{port}"))
            .arg("100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink (Debian package postfix)");
        wait_until("smtp-sink to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        SmtpSink {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn postfix_smtp_sink_as_the_internal_server() {
    let accepting = SmtpSink::start(false);
    let refusing = SmtpSink::start(true);
    let verifier = Verifier::new(options());
    run(async {
        let now = Instant::now();
        for rcpt in ["one@sink.test", "two@sink.test"] {
            let v = verifier.verify(rcpt, &[accepting.addr], now).await;
            assert_eq!(v, accepted(false), "{rcpt}");
        }
        let v = verifier
            .verify("ghost@sink.test", &[refusing.addr], now)
            .await;
        assert_eq!(v.outcome, user_unknown("ghost@sink.test"));
        assert!(!v.cached);
        let v = verifier
            .verify("ghost@sink.test", &[refusing.addr], now)
            .await;
        assert!(v.cached);
        assert_eq!(verifier.idle_connections(), 2);
    });
    assert!(
        log_lines("verify <ghost@sink.test>: refused by")[0].contains(": 5"),
        "the sink's hard error is logged"
    );
}
