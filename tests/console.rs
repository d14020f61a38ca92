//! The console as an administrator meets it: the gateway on a real pseudo-terminal (its
//! standard input and output, as on the host board), and `drawbridge cli` on another,
//! each driven key by key. What is checked is what the screen shows, and what a real
//! SMTP client (Python's smtplib) sees of the commits made there.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::terminal::Terminal;
use common::*;

const PROMPT: &str = "admin@gw.example.com> ";
const CONFIG_PROMPT: &str = "admin@gw.example.com# ";
const NEW_PASSWORD: &str = "n3w-console-pass";

/// The gateway with its console on a pseudo-terminal; waits for `login:`.
struct Console {
    term: Terminal,
    state: PathBuf,
    inbound: u16,
}

fn start(dir: &TempDir, extra: &str, env: &[(&str, &str)]) -> Console {
    let inbound = free_port();
    let outbound = free_port();
    let config = dir.path().join("gateway.conf");
    std::fs::write(&config, Gateway::config_text(inbound, outbound, extra)).unwrap();
    let state = dir.path().join("state");
    let mut command = Command::new(env!("CARGO_BIN_EXE_drawbridge"));
    command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    let mut term = Terminal::spawn(command);
    term.expect("login: ");
    Console {
        term,
        state,
        inbound,
    }
}

/// `drawbridge cli ARGS --state-dir STATE`.
fn cli_command(state: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_drawbridge"));
    command.arg("cli").args(args).arg("--state-dir").arg(state);
    command
}

/// The first login: the factory password, then the forced change.
fn first_login(term: &mut Terminal) {
    term.send("admin\r");
    term.expect("Password:");
    term.send("drawbridge\r");
    term.expect("The factory password must be changed before anything else.");
    term.expect("New password:");
    term.send(&format!("{NEW_PASSWORD}\r"));
    term.expect("Retype new password:");
    term.send(&format!("{NEW_PASSWORD}\r"));
    term.expect("Password changed.");
    term.expect(PROMPT);
}

/// smtplib from an outside address: the RCPT reply for `rcpt`, and the message sent if
/// it was accepted.
fn rcpt_reply(port: u16, rcpt: &str) -> String {
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.ehlo("client.example.org")
s.mail("alice@example.org")
code, text = s.rcpt("{rcpt}")
print(code, text.decode())
if code == 250:
    s.data(b"Subject: console test\r\n\r\nhello\r\n")
s.quit()
"#
    ))
    .trim()
    .to_string()
}

#[test]
fn first_login_forces_a_new_password_and_wrong_ones_wait() {
    let dir = TempDir::new("console-login");
    let mut c = start(&dir, "", &[]);
    let term = &mut c.term;
    term.send("admin\r");
    term.expect("Password:");
    term.send("guess\r");
    term.expect("Login incorrect");
    // The wait after a failure; what is typed meanwhile is dropped.
    term.send("x");
    term.expect("login: ");
    first_login(term);
    // Nothing typed as a password ever reached the screen.
    let text = term.screen().text();
    assert!(
        !text.contains(NEW_PASSWORD) && !text.contains("guess"),
        "{text}"
    );
    assert!(
        text.contains("login failed for admin on console (standard input)"),
        "{text}"
    );
    // Only a salted hash is kept, in a file of its owner's only.
    let path = c.state.join("admins.db");
    let blob = std::fs::read(&path).unwrap();
    assert!(
        !blob
            .windows(NEW_PASSWORD.len())
            .any(|w| w == NEW_PASSWORD.as_bytes())
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Logging out brings the login back; the factory password no longer works.
    term.send("exit\r");
    term.expect("login: ");
    term.send("admin\rdrawbridge\r");
    term.expect("Login incorrect");
    term.expect("login: ");
    term.send(&format!("admin\r{NEW_PASSWORD}\r"));
    term.expect("--- drawbridge");
    term.expect(PROMPT);
    // A name no login has, perhaps a password typed at `login:`, is not logged.
    term.send("exit\r");
    term.expect("login: ");
    term.send("hunter2-at-login\rx\r");
    term.expect("Login incorrect");
    term.expect("login failed for an unknown login on console (standard input)");
    let text = term.screen().text();
    assert!(!text.contains("login failed for hunter2"), "{text}");
}

#[test]
fn help_completion_and_abbreviations_as_typed() {
    let dir = TempDir::new("console-help");
    let mut c = start(&dir, "set route example.com relay [127.0.0.1]:2599", &[]);
    let term = &mut c.term;
    first_login(term);
    // A mistyped command: the ^ under it and the reason.
    term.type_keys("shw status\r");
    term.expect("unknown command.");
    let lines = term.screen().lines();
    let at = lines.iter().rposition(|l| l == "unknown command.").unwrap();
    assert_eq!(lines[at - 2], format!("{PROMPT}shw status"));
    assert_eq!(lines[at - 1], format!("{}^", " ".repeat(PROMPT.len())));
    term.expect(PROMPT);
    // `?` in the middle of a word: what it could be, then the line as it was.
    term.type_keys("show sta?");
    term.expect("Possible completions:");
    term.expect(&format!("{PROMPT}show sta"));
    term.type_keys("tus\r");
    term.expect("Running commit:");
    term.expect(PROMPT);
    // `?` in the middle of a line, after moving the cursor back over a word.
    term.type_keys("show status\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D?");
    term.expect("Possible completions:");
    term.expect("  certificates");
    term.expect(&format!("{PROMPT}show status"));
    assert_eq!(term.screen().current(), format!("{PROMPT}show status"));
    term.send("\x05\r");
    term.expect("Running commit:");
    term.expect(PROMPT);
    // TAB completes a keyword.
    term.type_keys("sh\tconf\t");
    term.expect("show configuration ");
    assert_eq!(
        term.screen().current(),
        format!("{PROMPT}show configuration")
    );
    term.send("\r");
    term.expect("set route example.com relay [127.0.0.1]:2599");
    term.expect(PROMPT);
    // An abbreviation, and an ambiguous one.
    term.type_keys("sh conf | match route\r");
    term.expect("set route example.com relay");
    term.expect(PROMPT);
    term.type_keys("sh sta\r");
    term.expect("'sta' is ambiguous.");
    term.expect("  stats");
    term.expect("  status");
    term.expect(PROMPT);
    // TAB completes a configured name: the route pattern.
    term.type_keys("configure\r");
    term.expect(CONFIG_PROMPT);
    term.type_keys("set route exa\t");
    term.expect("example.com ");
    assert_eq!(
        term.screen().current(),
        format!("{CONFIG_PROMPT}set route example.com")
    );
    term.type_keys("?");
    term.expect("failover-timeout");
    term.send("\x15exit\r");
    term.expect("Exiting configuration mode");
    term.expect(PROMPT);
}

#[test]
fn commits_reach_a_real_client_and_unconfirmed_ones_roll_back() {
    let dir = TempDir::new("console-commit");
    let sink = Sink::start();
    let route = format!(
        "set route partner.example relay [127.0.0.1]:{}",
        sink.addr.port()
    );
    // `commit confirmed 1` waits six seconds here: room for a loaded machine to look
    // at the commit before it rolls back.
    let mut c = start(&dir, "", &[("DRAWBRIDGE_TEST_MINUTE", "6")]);
    let port = c.inbound;
    let term = &mut c.term;
    first_login(term);
    assert!(rcpt_reply(port, "bob@partner.example").starts_with("550 5.7.1"));
    term.type_keys("configure\r");
    term.expect(CONFIG_PROMPT);
    term.type_keys(&format!("{route}\r"));
    term.expect(CONFIG_PROMPT);
    term.type_keys("show | compare\r");
    term.expect(&format!("+ {route}"));
    term.expect(CONFIG_PROMPT);
    term.type_keys("commit comment \"partner relay\"\r");
    term.expect("commit 2: applied");
    term.expect(CONFIG_PROMPT);
    assert!(rcpt_reply(port, "bob@partner.example").starts_with("250"));
    sink.wait_for(1);

    // commit confirmed, left unconfirmed: it rolls back by itself.
    term.type_keys("delete route partner.example\r");
    term.expect(CONFIG_PROMPT);
    term.type_keys("commit confirmed 1\r");
    term.expect("commit 3: applied; it rolls back in 1 minute(s) unless committed again");
    term.expect(CONFIG_PROMPT);
    assert!(rcpt_reply(port, "bob@partner.example").starts_with("550 5.7.1"));
    term.expect("commit confirmed was not confirmed in time: rolled back as commit 4");
    assert!(rcpt_reply(port, "bob@partner.example").starts_with("250"));

    // rollback 1: back to commit 3's configuration, committed.
    term.send("\x15");
    term.type_keys("rollback 1\r");
    term.expect("load complete");
    term.type_keys("show | compare\r");
    term.expect(&format!("- {route}"));
    term.type_keys("commit\r");
    term.expect("commit 5: applied");
    term.expect(CONFIG_PROMPT);
    assert!(rcpt_reply(port, "bob@partner.example").starts_with("550 5.7.1"));
    // Leaving with uncommitted changes asks first.
    term.type_keys("set system host-name other.example.com\rexit\r");
    term.expect("The configuration has been changed but not committed.");
    term.type_keys("yes\r");
    term.expect("Exiting configuration mode");
    term.expect(PROMPT);
    term.type_keys("show system commit\r");
    term.expect("partner relay");
    term.expect(PROMPT);
}

#[test]
fn edit_works_under_a_place_and_its_commits_apply() {
    let dir = TempDir::new("console-edit");
    let sink = Sink::start();
    let mut c = start(&dir, "", &[]);
    let port = c.inbound;
    let term = &mut c.term;
    first_login(term);
    assert!(rcpt_reply(port, "bob@partner.example").starts_with("550 5.7.1"));
    term.type_keys("configure\r");
    term.expect(CONFIG_PROMPT);
    term.type_keys("edit route partner.example\r");
    term.expect("[edit route partner.example]");
    term.expect(CONFIG_PROMPT);
    // Completion starts at the level: `rel` is the route's relay, not a top word.
    term.type_keys(&format!("set rel\t[127.0.0.1]:{}\r", sink.addr.port()));
    term.expect(CONFIG_PROMPT);
    term.type_keys("commit\r");
    term.expect("commit 2: applied");
    term.expect(CONFIG_PROMPT);
    assert!(rcpt_reply(port, "bob@partner.example").starts_with("250"));
    term.type_keys("show\r");
    term.expect(&format!(
        "set route partner.example relay [127.0.0.1]:{}",
        sink.addr.port()
    ));
    term.type_keys("up\r");
    term.expect("[edit]");
    term.type_keys("exit\r");
    term.expect("Exiting configuration mode");
    term.expect(PROMPT);
}

#[test]
fn queue_ids_and_user_names_complete_from_the_running_gateway() {
    let dir = TempDir::new("console-names");
    // The next hop is down: the message waits in the queue.
    let down = free_port();
    let mut c = start(
        &dir,
        &format!("set route partner.example relay [127.0.0.1]:{down}"),
        &[],
    );
    assert!(rcpt_reply(c.inbound, "bob@partner.example").starts_with("250"));
    add_user(&c.state, "alice", "mail-user-pass", false);
    let term = &mut c.term;
    first_login(term);
    // The id as `show queue` lists it; TAB writes the rest of it from its first
    // characters, and the gateway then holds it.
    term.type_keys("show queue\r");
    term.expect("-Queue ID-");
    let listing = term.expect(PROMPT);
    let id = listing
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_default()
        .trim_end_matches(['*', '!'])
        .to_string();
    assert!(id.len() >= 12, "{listing}");
    term.type_keys(&format!("queue hold {}\t", &id[..4]));
    term.expect(&format!("queue hold {id} "));
    term.type_keys("\r");
    term.expect(&format!("{id}: held"));
    term.expect(PROMPT);
    term.type_keys("password set al\t");
    term.expect("password set alice ");
    term.send("\x15");
    term.type_keys("show queue\r");
    term.expect(&format!("{id}!"));
    term.expect(PROMPT);
}

#[test]
fn a_log_line_while_typing_leaves_the_line_intact() {
    let dir = TempDir::new("console-log");
    let mut c = start(&dir, "", &[]);
    let port = c.inbound;
    let term = &mut c.term;
    first_login(term);
    term.type_keys("show sta");
    // A client connects: the gateway logs it while the line is half typed.
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    term.expect("connect from unknown[127.0.0.1]");
    term.expect(&format!("{PROMPT}show sta"));
    let lines = term.screen().lines();
    let n = lines.len();
    assert!(
        lines[n - 2].ends_with("connect from unknown[127.0.0.1]"),
        "{lines:?}"
    );
    assert_eq!(lines[n - 1], format!("{PROMPT}show sta"));
    term.type_keys("tus\r");
    term.expect("Running commit:");
    let lines = term.screen().lines();
    assert!(lines.contains(&format!("{PROMPT}show status")), "{lines:?}");
    drop(client);
}

#[test]
fn a_console_on_a_serial_device() {
    let dir = TempDir::new("console-serial");
    let (mut term, device) = Terminal::device();
    let inbound = free_port();
    let config = dir.path().join("gateway.conf");
    std::fs::write(&config, Gateway::config_text(inbound, free_port(), "")).unwrap();
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--console")
        .arg(format!("{device}:9600"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    term.expect("login: ");
    first_login(&mut term);
    term.type_keys(
        "show users
",
    );
    term.expect(&format!("console {device}"));
    term.expect(PROMPT);
    // The log lines are on the device too, and in the log file.
    let client = std::net::TcpStream::connect(("127.0.0.1", inbound)).unwrap();
    term.expect("connect from unknown[127.0.0.1]");
    drop(client);
    let _ = gateway.kill();
    let _ = gateway.wait();
    let text = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(text.contains("admin logged in on console /dev/"), "{text}");
}

#[test]
fn the_same_session_through_drawbridge_cli() {
    let dir = TempDir::new("console-cli");
    let sink = Sink::start();
    let gw = Gateway::start(dir.path(), "");
    let cli = |args: &[&str]| cli_command(&gw.state, args);
    let mut term = Terminal::spawn(cli(&["--login"]));
    term.expect("login: ");
    first_login(&mut term);
    term.type_keys("show status\r");
    term.expect("Listening:      inbound 127.0.0.1:");
    term.expect(PROMPT);
    term.type_keys("configure\r");
    term.expect(CONFIG_PROMPT);
    let route = format!(
        "set route partner.example relay [127.0.0.1]:{}",
        sink.addr.port()
    );
    term.type_keys(&format!("{route}\r"));
    term.type_keys("sh\t| comp\t\r");
    term.expect(&format!("+ {route}"));
    term.type_keys("commit and-quit\r");
    term.expect("commit 2: applied");
    term.expect("Exiting configuration mode");
    term.expect(PROMPT);
    assert!(rcpt_reply(gw.inbound, "bob@partner.example").starts_with("250"));
    term.type_keys("exit\r");
    assert!(term.wait_exit().success());

    // Root on the box needs no login; its session shows in show users.
    let mut root = Terminal::spawn(cli(&[]));
    root.expect("root@gw.example.com> ");
    root.type_keys("show users\r");
    root.expect("cli (root)");
    root.expect("Console logins: admin");
    root.type_keys("exit\r");
    assert!(root.wait_exit().success());

    // A script: nothing paged, the session ends with its input.
    let out = cli(&[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"show log | count\nshow configuration\nshow certificates\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("Count: "), "{text}");
    assert!(text.contains(&route), "{text}");
    assert!(!text.contains("--More--"), "{text}");
    assert!(text.contains("0-self-signed: gw.example.com"), "{text}");
    gw.wait_for_log("admin logged in on cli");
}

/// Login classes from the configuration: a read-only login looks and is refused the
/// rest; an operator also acts on the queue; a commit changes a class for the next login.
#[test]
fn login_classes_limit_console_logins() {
    let dir = TempDir::new("console-classes");
    let gw = Gateway::start(dir.path(), "set system login user helpdesk class read-only");
    let cli = |args: &[&str]| Terminal::spawn(cli_command(&gw.state, args));
    let mut root = cli(&[]);
    root.expect("root@gw.example.com> ");
    for name in ["helpdesk", "admin2"] {
        root.type_keys(&format!("login add {name}\r"));
        root.expect("New password:");
        root.send("battery staple\r");
        root.expect("Retype new password:");
        root.send("battery staple\r");
        root.expect(&format!("Console login {name} added."));
        root.expect("root@gw.example.com> ");
    }
    let login = |name: &str| {
        let mut t = cli(&["--login"]);
        t.expect("login: ");
        t.send(&format!("{name}\r"));
        t.expect("Password:");
        t.send("battery staple\r");
        t.expect(&format!("{name}@gw.example.com> "));
        t
    };
    let mut helpdesk = login("helpdesk");
    helpdesk.type_keys("show configuration | match login\r");
    helpdesk.expect("set system login user helpdesk class read-only");
    helpdesk.expect("helpdesk@gw.example.com> ");
    for refused in ["configure", "queue flush", "login delete admin2"] {
        helpdesk.type_keys(&format!("{refused}\r"));
        helpdesk.expect("error: permission denied: this needs the");
        helpdesk.expect("helpdesk is read-only");
        helpdesk.expect("helpdesk@gw.example.com> ");
    }
    // The refused commands did nothing: admin2 is still there.
    helpdesk.type_keys("show users\r");
    helpdesk.expect("Console logins: admin2, helpdesk");

    // admin2, a super-user by default, makes helpdesk an operator: from its next login.
    let mut admin2 = login("admin2");
    admin2.type_keys("configure\r");
    admin2.expect("admin2@gw.example.com# ");
    admin2.type_keys("set system login user helpdesk class operator\r");
    admin2.type_keys("commit and-quit\r");
    admin2.expect("commit 2: applied");
    admin2.expect("admin2@gw.example.com> ");
    helpdesk.type_keys("queue flush\r");
    helpdesk.expect("helpdesk is read-only");
    let mut again = login("helpdesk");
    again.type_keys("queue flush\r");
    again.expect("helpdesk@gw.example.com> ");
    again.type_keys("configure\r");
    again.expect("helpdesk is operator");
    assert!(
        !again.text().contains("queue flush\r\nerror"),
        "{}",
        again.text()
    );
}

/// Console logins beside `admin`: root adds one at the box, it logs in through
/// `drawbridge cli --login`; nobody deletes their own login or the last one; a deleted
/// login's open session is logged out and the login is refused from then on.
#[test]
fn console_logins_are_added_and_deleted() {
    let dir = TempDir::new("console-logins");
    let gw = Gateway::start(dir.path(), "");
    let cli = |args: &[&str]| Terminal::spawn(cli_command(&gw.state, args));
    // `login add NAME` with its password typed twice; `answer` is awaited.
    let add = |root: &mut Terminal, name: &str, password: &str, answer: &str| {
        root.type_keys(&format!("login add {name}\r"));
        root.expect("New password:");
        root.send(&format!("{password}\r"));
        root.expect("Retype new password:");
        root.send(&format!("{password}\r"));
        root.expect(answer);
        root.expect("root@gw.example.com> ");
    };
    let mut root = cli(&[]);
    root.expect("root@gw.example.com> ");
    add(
        &mut root,
        "bob",
        "battery staple",
        "Console login bob added.",
    );
    gw.wait_for_log("root added the console login bob");

    // The first login of the file: the factory account is gone.
    let mut bob = cli(&["--login"]);
    bob.expect("login: ");
    bob.send("admin\r");
    bob.expect("Password:");
    bob.send("drawbridge\r");
    bob.expect("Login incorrect");
    bob.expect("login: ");
    bob.send("bob\r");
    bob.expect("Password:");
    bob.send("battery staple\r");
    bob.expect("bob@gw.example.com> ");
    bob.type_keys("show users\r");
    bob.expect("Console logins: bob");
    bob.type_keys("login delete bob\r");
    bob.expect("you cannot delete your own login");
    // bob stays logged in, with changes not committed, while root deletes the login.
    bob.type_keys("configure\r");
    bob.expect("bob@gw.example.com# ");
    bob.type_keys("set route example.org mx\r");
    bob.expect("bob@gw.example.com# ");

    root.type_keys("login delete bob\r");
    root.expect("bob is the last console login: add another first");
    add(
        &mut root,
        "carol",
        "correct horse",
        "Console login carol added.",
    );
    add(
        &mut root,
        "carol",
        "another password",
        "console login carol exists",
    );
    root.type_keys("login delete bob\r");
    root.expect("Console login bob deleted; its open session was logged out.");
    gw.wait_for_log("root deleted the console login bob");
    // The deleted login's session ends at once, its candidate dropped.
    bob.expect("This login was deleted by root: logged out.");
    bob.expect("The uncommitted changes were dropped.");
    assert!(bob.wait_exit().success());
    gw.wait_for_log("its login was deleted by root");
    root.type_keys("exit\r");
    assert!(root.wait_exit().success());

    let mut gone = cli(&["--login"]);
    gone.expect("login: ");
    gone.send("bob\r");
    gone.expect("Password:");
    gone.send("battery staple\r");
    gone.expect("Login incorrect");
}

/// A console logged in with the factory password, still at its forced change when root
/// adds the first login of the file: its change is refused and the session ends, so the
/// factory account does not come back beside the new login.
#[test]
fn a_stale_factory_login_cannot_bring_the_factory_account_back() {
    let dir = TempDir::new("console-stale-factory");
    let gw = Gateway::start(dir.path(), "");
    let cli = |args: &[&str]| Terminal::spawn(cli_command(&gw.state, args));
    let mut stale = cli(&["--login"]);
    stale.expect("login: ");
    stale.send("admin\r");
    stale.expect("Password:");
    stale.send("drawbridge\r");
    stale.expect("New password:");

    let mut root = cli(&[]);
    root.expect("root@gw.example.com> ");
    root.type_keys("login add bob\r");
    root.expect("New password:");
    root.send("battery staple\r");
    root.expect("Retype new password:");
    root.send("battery staple\r");
    root.expect("Console login bob added.");
    root.expect("root@gw.example.com> ");

    stale.send("factory-comeback\r");
    stale.expect("Retype new password:");
    stale.send("factory-comeback\r");
    stale.expect("the factory password of admin was changed on another console: log in again");
    assert!(stale.wait_exit().success());
    gw.wait_for_log("password not changed");

    root.type_keys("show users\r");
    root.expect("Console logins: bob\r");
    root.type_keys("exit\r");
    assert!(root.wait_exit().success());
    let mut again = cli(&["--login"]);
    again.expect("login: ");
    again.send("admin\r");
    again.expect("Password:");
    again.send("factory-comeback\r");
    again.expect("Login incorrect");
}

/// A console nobody types at is logged out after `system console idle-timeout`: the
/// gateway's own console goes back to `login:`, a `drawbridge cli` session ends.
#[test]
fn an_idle_console_is_logged_out() {
    let dir = TempDir::new("console-idle");
    let mut c = start(&dir, "set system console idle-timeout 3s\n", &[]);
    let term = &mut c.term;
    first_login(term);
    term.type_keys("show sta");
    term.expect("Idle for 3s: logged out.");
    // The console waits at `login:`, where nobody is logged out, and shows the log.
    term.expect("login: ");

    let mut root = Terminal::spawn(cli_command(&c.state, &[]));
    root.expect("root@gw.example.com> ");
    root.expect("Idle for 3s: logged out.");
    assert!(root.wait_exit().success());
    term.expect("root logged out from cli (root): idle timeout");
}

#[test]
fn restart_and_factory_reset_from_the_console() {
    let dir = TempDir::new("console-restart");
    let gw = Gateway::start(dir.path(), "");
    let script = |text: &str| gw.console_script(text);
    let pid = gw.pid();
    let out = script("configure\nset route partner.example mx\ncommit\nexit\nrestart\nyes\n");
    assert!(out.contains("Restarting."), "{out}");
    gw.wait_for_log_count("message(s) recovered from the queue", 2);
    // The same process, started again from what was committed, not from --config.
    assert_eq!(gw.pid(), pid);
    let (ok, shown, _) = gw.cli(&["config", "show"]);
    assert!(
        ok && shown.contains("set route partner.example mx"),
        "{shown}"
    );
    let set = |password: &str| {
        drawbridge_with_input(
            &gw.state,
            &["secret", "set", "relay"],
            &format!("{password}\n"),
        )
    };
    assert_eq!(set("s3cret pass"), "set the password of relay\n");
    let out = script("factory-reset\nyes\n");
    assert!(out.contains("erased; restarting"), "{out}");
    gw.wait_for_log_count("message(s) recovered from the queue", 3);
    let (ok, shown, _) = gw.cli(&["config", "show"]);
    assert!(ok, "{shown}");
    assert!(shown.contains("by boot: factory default"), "{shown}");
    assert!(!shown.contains("partner.example"), "{shown}");
    assert!(!gw.state.join("admins.db").exists());
    // The next-hop passwords went with the keys that sealed them; new ones can be set.
    let (_, names, _) = gw.cli(&["secret", "show"]);
    assert_eq!(names, "no secrets\n");
    assert_eq!(set("new pass"), "set the password of relay\n");
}

#[test]
fn operational_commands_act_on_the_gateway() {
    let dir = TempDir::new("console-ops");
    let sink = Sink::start_on(
        0,
        SinkBehaviour {
            defer: vec!["later@example.com".into()],
            ..SinkBehaviour::default()
        },
    );
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set route example.com relay [127.0.0.1]:{}\nset queue retry 1h\n",
            sink.addr.port()
        ),
    );
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.sendmail("alice@example.org", ["later@example.com"], b"Subject: wait\r\n\r\nhello\r\n")
s.quit()
"#,
        port = gw.inbound
    ));
    gw.wait_for_log("status=deferred");
    let out = gw.console_script(
        "show queue\nshow queue summary\nqueue hold all\nshow queue | match !\n\
         queue requeue all\nqueue flush other.example\n",
    );
    assert!(out.contains("later@example.com"), "{out}");
    let shape = out
        .lines()
        .find(|l| l.trim_start().starts_with("example.com "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(shape.split_whitespace().nth(1), Some("1"), "{shape}");
    assert!(out.contains(": held"), "{out}");
    assert!(out.contains(": requeued"), "{out}");
    assert!(out.contains("0 message(s) flushed"), "{out}");
    gw.wait_for_log("requeued by the administrator");
    // Requeued: tried again at once (and deferred again); then flushed by its domain.
    gw.wait_for_log_count("status=deferred", 2);
    let out = gw.console_script("queue flush EXAMPLE.com\n");
    assert!(out.contains("1 message(s) flushed"), "{out}");
    gw.wait_for_log_count("status=deferred", 3);

    let out = gw.console_script(&format!(
        "test smtp 127.0.0.1:{sink}\ntest smtp 127.0.0.1:{inbound}\n\
         password add bob\nlong-secret-1\nlong-secret-1\npassword show\n\
         explain from-ip 192.0.2.7 mail a@example.org rcpt eve@example.net\n\
         queue delete all\nshow queue\n",
        sink = sink.addr.port(),
        inbound = gw.inbound
    ));
    assert!(
        out.contains("greeting  220 sink.test ESMTP test sink"),
        "{out}"
    );
    assert!(out.contains("STARTTLS  not offered"), "{out}");
    // The gateway's own self-signed certificate: encrypted, not trusted.
    assert!(out.contains("STARTTLS  TLSv1.3 with cipher"), "{out}");
    assert!(out.contains("certificate NOT trusted"), "{out}");
    assert!(out.contains("QUIT      221"), "{out}");
    assert!(out.contains("added bob"), "{out}");
    assert!(
        out.contains("bob: PLAIN LOGIN SCRAM-SHA-256 EXTERNAL"),
        "{out}"
    );
    assert!(!out.contains("long-secret-1"), "{out}");
    assert!(out.contains("decision: 550 5.7.1"), "{out}");
    assert!(out.contains(": deleted"), "{out}");
    assert!(out.contains("Mail queue is empty"), "{out}");

    // The appliance's system commands say why a developer machine does not take them
    // (tests/image.rs runs them on the QEMU board).
    let out = gw.console_script(
        "system update /tmp/none.img
system reboot
yes
",
    );
    assert!(
        out.contains("error: board host takes no firmware updates"),
        "{out}"
    );
    assert!(
        out.contains("error: board host runs on a host's own system"),
        "{out}"
    );
    assert!(
        gw.log_text()
            .contains("firmware update from /tmp/none.img requested by root")
    );
}
