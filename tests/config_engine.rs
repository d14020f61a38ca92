//! The configuration engine through the gateway as shipped: commits applied live to
//! real clients, listeners moved, queued mail rerouted, SIGHUP, commit confirmed and its
//! rollback (across a SIGKILL too), the script commands on a running and a stopped
//! gateway, and start-up from damaged slots.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// A test's minute for `commit confirmed`, in seconds.
const MINUTE: &str = "2";

/// A plain SMTP session held open across commits.
struct Client {
    out: TcpStream,
    input: BufReader<TcpStream>,
    greeting: String,
}

impl Client {
    fn connect(port: u16) -> Client {
        let out = TcpStream::connect(("127.0.0.1", port)).unwrap();
        out.set_read_timeout(Some(WAIT)).unwrap();
        let input = BufReader::new(out.try_clone().unwrap());
        let mut c = Client {
            out,
            input,
            greeting: String::new(),
        };
        c.greeting = c.reply();
        assert!(c.greeting.starts_with("220"), "{}", c.greeting);
        c
    }

    /// The last line of the next reply.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.input.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_string();
            }
        }
    }

    fn send(&mut self, line: &str) -> String {
        self.out
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
}

/// Writes `text` to a file in `dir` and returns its path.
fn file(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn load(gw: &Gateway, how: &str, path: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["config", "load", how, path];
    args.extend_from_slice(extra);
    gw.cli(&args)
}

/// Every client is EXTERNAL; example.com is ours, relayed to `sink`.
fn start(dir: &TempDir, sink: &Sink, env: &[(&str, &str)]) -> Gateway {
    Gateway::start_env(
        dir.path(),
        &format!(
            "set classify 10 remote 0.0.0.0/0 category EXTERNAL\n\
             set route example.com relay [127.0.0.1]:{}\n\
             set route example.com avoid-time 0s\n\
             set relay-rule 10 source tcp_local destination tcp_local deny \"5.7.1 SMTP relaying not permitted\"\n",
            sink.addr.port()
        ),
        env,
    )
}

#[test]
fn a_commit_changes_policy_for_new_sessions_and_open_ones_keep_theirs() {
    let dir = TempDir::new("config-live");
    let sink = Sink::start();
    let gw = start(&dir, &sink, &[]);
    let mut before = Client::connect(gw.inbound);
    before.send("EHLO old.example");
    assert!(before.send("MAIL FROM:<a@example.org>").starts_with("250"));
    let refused = before.send("RCPT TO:<b@partner.example>");
    assert!(refused.starts_with("550 5.7.1"), "{refused}");

    let edit = file(
        &dir,
        "partner.conf",
        &format!(
            "set route partner.example relay [127.0.0.1]:{}\n\
             set relay-rule 5 to *@partner.example allow\n",
            sink.addr.port()
        ),
    );
    let (ok, out, err) = load(
        &gw,
        "merge",
        &edit,
        &["--comment", "open the partner relay"],
    );
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("commit "), "{out}");
    gw.wait_for_log("open the partner relay): applied");

    let mut after = Client::connect(gw.inbound);
    after.send("EHLO new.example");
    assert!(after.send("MAIL FROM:<a@example.org>").starts_with("250"));
    assert_eq!(after.send("RCPT TO:<b@partner.example>"), "250 2.1.5 Ok");
    // The session opened before the commit keeps the decision it started with.
    let again = before.send("RCPT TO:<b@partner.example>");
    assert!(again.starts_with("550 5.7.1"), "{again}");
    before.send("QUIT");

    assert!(after.send("DATA").starts_with("354"));
    after
        .out
        .write_all(b"Subject: partner\r\n\r\nhello\r\n.\r\n")
        .unwrap();
    assert!(after.reply().starts_with("250"));
    let msgs = sink.wait_for(1);
    assert_eq!(msgs[0].rcpts, ["<b@partner.example>"]);

    let (ok, out, _) = gw.cli(&["config", "show"]);
    assert!(ok);
    assert!(
        out.contains("set relay-rule 5 to *@partner.example allow\n"),
        "{out}"
    );
    let (ok, out, _) = gw.cli(&["config", "show", "--json"]);
    assert!(ok && out.starts_with("{\"commit\":"), "{out}");
    let (ok, out, _) = gw.cli(&["config", "history"]);
    assert!(ok);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains("open the partner relay"),
        "{out}"
    );
    assert!(out.contains("loaded from"), "{out}");
}

#[test]
fn a_commit_moves_a_listener_and_a_bind_that_fails_refuses_the_commit() {
    let dir = TempDir::new("config-listen");
    let sink = Sink::start();
    let gw = start(&dir, &sink, &[]);
    let new_port = free_port();
    let edit = file(
        &dir,
        "move.conf",
        &format!(
            "delete service inbound listen\nset service inbound listen 127.0.0.1:{new_port}\n"
        ),
    );
    let (ok, out, err) = load(&gw, "merge", &edit, &[]);
    assert!(ok, "{out}{err}");
    wait_until("the new port to answer", || {
        TcpStream::connect(("127.0.0.1", new_port)).is_ok()
    });
    Client::connect(new_port).send("QUIT");
    wait_until("the old port to close", || {
        TcpStream::connect(("127.0.0.1", gw.inbound)).is_err()
    });

    // A port that another program holds: the commit is refused, nothing moves.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let edit = file(
        &dir,
        "taken.conf",
        &format!("set service outbound listen 127.0.0.1:{taken_port}\n"),
    );
    let history_before = gw.cli(&["config", "history"]).1;
    let (ok, _, err) = load(&gw, "merge", &edit, &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "{err}"
    );
    assert_eq!(gw.cli(&["config", "history"]).1, history_before);
    Client::connect(new_port).send("QUIT");
    Client::connect(gw.outbound).send("QUIT");

    // The checks refuse a configuration, listing every problem.
    let edit = file(
        &dir,
        "bad.conf",
        "set route x.example concurrency 2\nset category INTERNAL ruleset NOPE\n",
    );
    let (ok, _, err) = load(&gw, "merge", &edit, &[]);
    assert!(!ok);
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(
        err.contains("route x.example: the route has no next hop"),
        "{err}"
    );
    assert!(err.contains("category INTERNAL ruleset NOPE"), "{err}");
}

#[test]
fn queued_mail_follows_a_route_a_commit_changes() {
    let dir = TempDir::new("config-reroute");
    let sink = Sink::start();
    let dead = free_port();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 0.0.0.0/0 category EXTERNAL\n\
             set route example.com relay [127.0.0.1]:{dead}\n\
             set queue retry \"1h\"\n"
        ),
    );
    python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {}) as s:
    s.sendmail("a@example.org", ["bob@example.com"], b"Subject: queued\r\n\r\nx\r\n")
"#,
        gw.inbound
    ));
    gw.wait_for_log("status=deferred");
    let edit = file(
        &dir,
        "route.conf",
        &format!(
            "set route example.com relay [127.0.0.1]:{}\n",
            sink.addr.port()
        ),
    );
    let (ok, out, err) = load(&gw, "merge", &edit, &[]);
    assert!(ok, "{out}{err}");
    // Delivered by the new route, long before the hour the retry schedule says.
    let msgs = sink.wait_for(1);
    assert_eq!(msgs[0].rcpts, ["<bob@example.com>"]);
    gw.wait_for_log("message(s) routed again");
}

#[test]
fn sighup_applies_a_commit_stored_without_applying() {
    let dir = TempDir::new("config-hup");
    let sink = Sink::start();
    let gw = start(&dir, &sink, &[]);
    let edit = file(&dir, "name.conf", "set system host-name hup.example.com\n");
    let (ok, out, err) = load(&gw, "merge", &edit, &["--no-apply"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("SIGHUP"), "{out}");
    assert!(
        Client::connect(gw.inbound)
            .greeting
            .contains("gw.example.com")
    );
    gw.signal(libc::SIGHUP);
    gw.wait_for_log("SIGHUP: reloading the committed configuration");
    gw.wait_for_log("): applied");
    let c = Client::connect(gw.inbound);
    assert!(c.greeting.contains("hup.example.com"), "{}", c.greeting);
    let out = gw.cli(&["config", "show"]).1;
    assert!(
        out.contains("set system host-name hup.example.com"),
        "{out}"
    );
}

/// A commit waits for the store's lock (held here by flock(1), as another writer of the
/// slots would hold it), the token's HMACs and the disk's sync on the blocking pool:
/// meanwhile the gateway goes on answering SMTP, and the commit lands when the lock is
/// let go.
#[test]
fn a_commit_waiting_on_the_store_leaves_the_gateway_answering() {
    use std::process::{Command, Stdio};
    let dir = TempDir::new("config-unblocked");
    let sink = Sink::start();
    let gw = start(&dir, &sink, &[]);
    let lock = gw.state.join("config").join("lock");
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["-c", "read line"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("flock(1) from util-linux");
    wait_until("flock(1) to hold the store's lock", || {
        !Command::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap()
            .success()
    });
    let edit = file(
        &dir,
        "name.conf",
        "set system host-name later.example.com\n",
    );
    let committing = {
        let (state, edit) = (gw.state.clone(), edit.clone());
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_drawbridge"))
                .args(["config", "load", "merge", &edit, "--state-dir"])
                .arg(&state)
                .output()
                .unwrap()
        })
    };
    // The gateway is in line for the lock: a waiter on its inode in /proc/locks.
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&lock).unwrap());
    wait_until("the commit to wait for the store's lock", || {
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains("->") && l.contains(&format!(":{inode} ")))
    });
    let mut c = Client::connect(gw.inbound);
    assert!(c.greeting.contains("gw.example.com"), "{}", c.greeting);
    assert!(c.send("NOOP").starts_with("250"));
    assert!(!committing.is_finished());
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let out = committing.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("commit 2"), "{text}");
    let c = Client::connect(gw.inbound);
    assert!(c.greeting.contains("later.example.com"), "{}", c.greeting);
}

#[test]
fn commit_confirmed_rolls_back_unless_confirmed_also_across_a_sigkill() {
    let dir = TempDir::new("config-confirm");
    let sink = Sink::start();
    let mut gw = start(&dir, &sink, &[("DRAWBRIDGE_TEST_MINUTE", MINUTE)]);
    let risky = file(
        &dir,
        "risky.conf",
        "set service inbound max-recipients 150\n",
    );
    let shows = |gw: &Gateway, text: &str| gw.cli(&["config", "show"]).1.contains(text);

    // Not confirmed: rolled back after the (test-scaled) minute.
    let (ok, out, err) = load(&gw, "merge", &risky, &["--confirm", "1"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("rolls back in 1 minute(s)"), "{out}");
    assert!(shows(&gw, "max-recipients 150"));
    gw.wait_for_log("was not confirmed in time: rolled back as commit");
    assert!(!shows(&gw, "max-recipients 150"));

    // Confirmed: it stays.
    let (ok, _, _) = load(&gw, "merge", &risky, &["--confirm", "1"]);
    assert!(ok);
    let (ok, out, _) = gw.cli(&["config", "commit"]);
    assert!(ok && out.contains("commit confirmed"), "{out}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(shows(&gw, "max-recipients 150"));
    let (_, out, _) = gw.cli(&["config", "commit"]);
    assert!(out.contains("nothing to confirm"), "{out}");

    // Killed while a confirmation is pending: the restart rolls back.
    let riskier = file(
        &dir,
        "riskier.conf",
        "set service inbound max-recipients 175\n",
    );
    let (ok, _, _) = load(&gw, "merge", &riskier, &["--confirm", "1"]);
    assert!(ok);
    gw.kill();
    std::thread::sleep(Duration::from_secs(3));
    gw.restart_from_slots();
    gw.wait_for_log("ran out while stopped: rolled back as commit");
    assert!(shows(&gw, "max-recipients 150"));
    assert!(!shows(&gw, "max-recipients 175"));

    // Killed, and confirmed too late on the stopped gateway's slots: it rolls back
    // instead, as the start would have.
    let (ok, _, _) = load(&gw, "merge", &riskier, &["--confirm", "1"]);
    assert!(ok);
    gw.kill();
    std::thread::sleep(Duration::from_secs(3));
    let (ok, out, err) = gw.cli(&["config", "commit"]);
    assert!(ok && out.contains("nothing to confirm"), "{out}{err}");
    assert!(
        err.contains("ran out while the gateway was stopped: rolled back as commit"),
        "{err}"
    );
    gw.restart_from_slots();
    assert!(shows(&gw, "max-recipients 150"));
    assert!(!shows(&gw, "max-recipients 175"));

    // Killed and restarted before its time: still pending, then rolled back.
    let (ok, _, _) = load(&gw, "merge", &riskier, &["--confirm", "2"]);
    assert!(ok);
    gw.restart_from_slots();
    assert!(shows(&gw, "max-recipients 175"));
    gw.wait_for_log_count("was not confirmed in time: rolled back as commit", 2);
    assert!(!shows(&gw, "max-recipients 175"));
}

#[test]
fn a_stopped_gateway_is_edited_on_its_slots_and_starts_with_the_edit() {
    let dir = TempDir::new("config-stopped");
    let sink = Sink::start();
    let mut gw = start(&dir, &sink, &[]);
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit().success());
    assert!(gw.log_text().contains("stopping: SIGTERM received"));
    assert!(!gw.state.join("control.sock").exists());

    let edit = file(
        &dir,
        "limit.conf",
        "set service inbound max-connections 42\n",
    );
    let (ok, out, err) = load(&gw, "merge", &edit, &[]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = gw.cli(&["config", "show"]);
    assert!(ok && out.contains("max-connections 42"), "{out}");
    let (ok, out, _) = gw.cli(&["config", "rollback", "1"]);
    assert!(ok, "{out}");
    let (_, out, _) = gw.cli(&["config", "show"]);
    assert!(!out.contains("max-connections 42"), "{out}");
    let (ok, out, _) = gw.cli(&["config", "rollback", "1"]);
    assert!(ok, "{out}");
    let (_, history, _) = gw.cli(&["config", "history"]);
    assert!(history.lines().count() >= 4, "{history}");

    gw.restart_from_slots();
    assert!(
        gw.log_text().contains("running commit"),
        "{}",
        gw.log_text()
    );
    assert!(gw.log_text().contains("rollback 1"));
    let (_, out, _) = gw.cli(&["config", "show"]);
    assert!(out.contains("max-connections 42"), "{out}");
}

#[test]
fn start_up_falls_back_past_a_damaged_newest_slot() {
    let dir = TempDir::new("config-damaged");
    let sink = Sink::start();
    let mut gw = start(&dir, &sink, &[]);
    let edit = file(&dir, "e.conf", "set service inbound max-connections 43\n");
    assert!(load(&gw, "merge", &edit, &[]).0);
    gw.kill();
    // The newest record loses its last bytes, as a power cut mid-write could leave it.
    let slots = gw.state.join("config");
    let newest = std::fs::read_dir(&slots)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("slot-"))
        .max_by_key(|e| e.metadata().unwrap().modified().unwrap())
        .unwrap()
        .path();
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    gw.restart_from_slots();
    let log = gw.log_text();
    assert!(log.contains("is damaged: torn write"), "{log}");
    assert!(log.contains("fell back to commit"), "{log}");
    let (_, out, _) = gw.cli(&["config", "show"]);
    assert!(!out.contains("max-connections 43"), "{out}");
    Client::connect(gw.inbound).send("QUIT");
}

#[test]
fn config_check_runs_the_commit_checks_on_a_file() {
    let dir = TempDir::new("config-check");
    let good = file(&dir, "good.conf", drawbridge::proto::config::HOST_DEFAULT);
    let bad = file(
        &dir,
        "bad.conf",
        &format!(
            "{}set route example.com channel no_such_channel\nset classify 40 remote 10.0.0.0/8\n",
            drawbridge::proto::config::HOST_DEFAULT
        ),
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drawbridge"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = run(&["config", "check", &good]);
    assert!(ok && out.contains("configuration check succeeds"), "{out}");
    let (ok, _, err) = run(&["config", "check", &bad]);
    assert!(!ok);
    assert!(
        err.contains("route example.com channel no_such_channel"),
        "{err}"
    );
    assert!(
        err.contains("classify 40 remote 10.0.0.0/8: the rule has no action"),
        "{err}"
    );
    assert!(err.contains("2 problem(s)"), "{err}");
    let (ok, out, _) = run(&["config", "reference"]);
    assert!(ok && out.contains("`set route PATTERN relay`"));
    // A fresh state directory starts from the board's factory default, commit 1.
    let state = dir.path().join("fresh");
    let (ok, out, err) = run(&["config", "show", "--state-dir", state.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.starts_with("# commit 1 of "), "{out}");
    assert!(out.contains("factory default"), "{out}");
    assert!(
        out.contains("set route .example.com relay [127.0.0.1]:2526"),
        "{out}"
    );
}
