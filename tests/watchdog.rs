//! The watchdog, the gateway's side (SPEC §10): as systemd's `Type=notify` and
//! `WatchdogSec=` expect, the gateway says `READY=1` on `NOTIFY_SOCKET` once it serves,
//! beats `WATCHDOG=1` from its event loop while `WATCHDOG_USEC` asks for it, and says
//! `STOPPING=1` with the time it needs (`EXTEND_TIMEOUT_USEC`) when it stops; `system watchdog-test` stops the event loop, and
//! the beats with it. The test is the supervisor here; PID 1's side (killing and
//! starting again a gateway that stops beating) is shown on the appliance by
//! `tests/image.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Gateway, TempDir};

/// A supervisor's socket, as systemd makes one.
struct Supervisor {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl Supervisor {
    fn new(dir: &std::path::Path) -> Supervisor {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Supervisor { socket, path }
    }

    /// The notification lines received during `window`, in order.
    fn lines_during(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => lines.extend(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_string),
                ),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => panic!("receiving a notification: {e}"),
            }
        }
        lines
    }

    fn env(&self, watchdog: Option<&str>) -> Vec<(&'static str, String)> {
        let mut env = vec![("NOTIFY_SOCKET", self.path.display().to_string())];
        if let Some(usec) = watchdog {
            env.push(("WATCHDOG_USEC", usec.to_string()));
        }
        env
    }
}

fn start(dir: &TempDir, env: Vec<(&'static str, String)>) -> Gateway {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start_env(dir.path(), "", &env)
}

fn beats(lines: &[String]) -> usize {
    lines.iter().filter(|l| *l == "WATCHDOG=1").count()
}

/// The greeting of the inbound service, if it comes within `wait`.
fn greeting(gw: &Gateway, wait: Duration) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&gw.inbound_addr(), wait).ok()?;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    let _ = s.write_all(b"QUIT\r\n");
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn the_gateway_says_ready_beats_from_its_event_loop_and_says_stopping() {
    let dir = TempDir::new("watchdog-beats");
    let sup = Supervisor::new(dir.path());
    let mut gw = start(&dir, sup.env(Some("1000000")));
    // Ready first, then a beat every quarter of the second asked for.
    let lines = sup.lines_during(Duration::from_secs(2));
    assert_eq!(
        lines.first().map(String::as_str),
        Some("READY=1"),
        "{lines:?}"
    );
    let n = beats(&lines);
    assert!(
        (5..=10).contains(&n),
        "{n} beats in 2 s at 250 ms: {lines:?}"
    );
    assert!(
        greeting(&gw, Duration::from_secs(5))
            .unwrap()
            .starts_with("220 ")
    );
    let status = gw.console_script("show status\n");
    assert!(
        status.contains("Watchdog:       restarts the gateway after 1 s without a beat"),
        "{status}"
    );
    gw.wait_for_log("watchdog: the supervisor restarts the gateway after 1000 ms without a beat; beating every 250 ms");

    // SIGTERM: STOPPING=1, with the time the stop may take (the factory grace of 8 s
    // and 2 s to close), and the beats go on while the sessions drain.
    gw.signal(libc::SIGTERM);
    let lines = sup.lines_during(Duration::from_millis(1500));
    let stopping = lines.iter().position(|l| l == "STOPPING=1");
    assert!(stopping.is_some(), "{lines:?}");
    assert_eq!(
        lines.get(stopping.unwrap() + 1).map(String::as_str),
        Some("EXTEND_TIMEOUT_USEC=10000000"),
        "{lines:?}"
    );
    assert!(gw.wait_exit().success());
}

#[test]
fn the_watchdog_test_stops_the_event_loop_and_its_beats() {
    let dir = TempDir::new("watchdog-test");
    let sup = Supervisor::new(dir.path());
    let mut gw = start(&dir, sup.env(Some("2000000")));
    assert!(beats(&sup.lines_during(Duration::from_millis(1200))) >= 2);

    // The host board has no hardware watchdog: that test is refused, nothing is said
    // to the supervisor, and the loop goes on beating.
    let out = gw.console_script("system watchdog-test hardware\nyes\n");
    assert!(out.contains("no hardware watchdog here"), "{out}");
    let lines = sup.lines_during(Duration::from_millis(1200));
    assert!(beats(&lines) >= 2, "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("DRAWBRIDGE_STARVE")),
        "{lines:?}"
    );

    let out = gw.console_script("system watchdog-test\nyes\n");
    assert!(
        out.contains("The event loop stops; the watchdog should restart the gateway within 2 s."),
        "{out}"
    );
    gw.wait_for_log("watchdog test requested by root");
    // Whatever was in flight, then silence: no beat, no greeting, though the process
    // runs.
    let _ = sup.lines_during(Duration::from_millis(800));
    let lines = sup.lines_during(Duration::from_secs(3));
    assert_eq!(beats(&lines), 0, "{lines:?}");
    assert!(greeting(&gw, Duration::from_secs(1)).is_none());
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(gw.pid() as i32, 0) } == 0;
    assert!(alive, "the gateway exited");
    // What a supervisor does then; a new start serves and beats again.
    gw.restart();
    assert!(beats(&sup.lines_during(Duration::from_millis(1500))) >= 2);
    assert!(
        greeting(&gw, Duration::from_secs(5))
            .unwrap()
            .starts_with("220 ")
    );
}

#[test]
fn without_a_watchdog_the_test_is_refused_and_nothing_beats() {
    let dir = TempDir::new("watchdog-none");
    let sup = Supervisor::new(dir.path());
    // A supervisor that wants READY but no beats, as systemd without WatchdogSec.
    let gw = start(&dir, sup.env(None));
    let lines = sup.lines_during(Duration::from_secs(1));
    assert_eq!(lines, ["READY=1"]);
    let out = gw.console_script("show status\nsystem watchdog-test\nyes\n");
    assert!(
        out.contains("Watchdog:       none (no supervisor asks for beats)"),
        "{out}"
    );
    assert!(
        out.contains("nothing watches this gateway's event loop"),
        "{out}"
    );
    assert!(
        greeting(&gw, Duration::from_secs(5))
            .unwrap()
            .starts_with("220 ")
    );

    // Variables inherited from another process's supervisor are not ours.
    let dir = TempDir::new("watchdog-other-pid");
    let sup = Supervisor::new(dir.path());
    let mut env = sup.env(Some("1000000"));
    env.push(("WATCHDOG_PID", "1".to_string()));
    let _gw = start(&dir, env);
    assert_eq!(sup.lines_during(Duration::from_secs(1)), ["READY=1"]);
}

#[test]
fn a_start_that_recovers_a_queue_says_it_progresses_before_it_is_ready() {
    let dir = TempDir::new("watchdog-progress");
    // Mail for a next hop that is down stays queued.
    let down = common::free_port();
    let mut gw = Gateway::start(
        dir.path(),
        &format!("set route example.com relay [127.0.0.1]:{down}\n"),
    );
    let ids: Vec<String> = (0..3)
        .map(|_| common::send_to(&gw, &["bob@example.com"]))
        .collect();
    gw.kill();

    // Started again under a supervisor: reading the spool and taking the messages back
    // ask for time (a start is given at least 30 s, and 30 s more from each sign of
    // progress), then it is ready. An empty queue asks for nothing (the other tests).
    let sup = Supervisor::new(dir.path());
    gw.env = sup
        .env(Some("10000000"))
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    gw.restart();
    let lines = sup.lines_during(Duration::from_millis(500));
    let ready = lines.iter().position(|l| l == "READY=1");
    assert!(ready.is_some(), "{lines:?}");
    let before = &lines[..ready.unwrap()];
    assert!(!before.is_empty(), "{lines:?}");
    assert!(
        before.iter().all(|l| l == "EXTEND_TIMEOUT_USEC=30000000"),
        "{lines:?}"
    );
    for id in ids {
        gw.wait_for_log(&format!("{id}: from=<alice@example.org>"));
    }
    gw.wait_for_log("3 message(s) recovered from the queue");
}
