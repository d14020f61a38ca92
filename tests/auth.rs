//! Authentication and the relay policy end to end: smtplib, swaks and a SCRAM client
//! written elsewhere (Python's scramp) log in; an outside client reaches only our
//! domains until it authenticates; route-smuggling forms never relay; brute force is
//! slowed and then blocked per address.

mod common;

use std::process::Command;

use common::*;

/// 127.0.0.2 is inside; every other address, 127.0.0.3 in these tests, is outside.
/// AUTH offered on the inbound service (it is not by default), and, for EXTERNAL clients,
/// the challenge-response mechanisms before TLS too (by default every mechanism waits
/// for TLS); PLAIN and LOGIN, which carry the password itself, never in clear.
const POLICY: &str = "set classify 10 remote 127.0.0.2 category INTERNAL\n\
                      set classify 20 remote 0.0.0.0/0 category EXTERNAL\n\
                      set service inbound auth yes\n\
                      set ruleset EXTERNAL restrict PLAIN tls\n\
                      set ruleset EXTERNAL restrict LOGIN tls\n";

fn start(dir: &TempDir, sink: &Sink) -> Gateway {
    add_user(&dir.path().join("state"), "alice", "correct horse", true);
    Gateway::start(
        dir.path(),
        &format!(
            "{POLICY}set route example.com relay [127.0.0.1]:{port}\n\
             set route * smarthost [127.0.0.1]:{port}\n",
            port = sink.addr.port()
        ),
    )
}

#[test]
fn smtplib_logs_in_with_plain_login_and_cram_md5_over_starttls() {
    let dir = TempDir::new("auth-smtplib");
    let sink = Sink::start();
    let gw = start(&dir, &sink);
    let out = python(&format!(
        r#"
import smtplib, ssl
ctx = ssl._create_unverified_context()
for mech in ["PLAIN", "LOGIN", "CRAM-MD5"]:
    s = smtplib.SMTP("127.0.0.1", {port}, timeout=30, source_address=("127.0.0.3", 0))
    s.ehlo("c.example.org")
    s.starttls(context=ctx)
    s.ehlo("c.example.org")
    s.user, s.password = "alice", "correct horse"
    code, text = s.auth(mech, getattr(s, "auth_" + mech.lower().replace("-", "_")))
    print(mech, code)
    s.sendmail("alice@example.org", ["eve@example.net"], b"Subject: " + mech.encode() + b"\r\n\r\nrelayed\r\n")
    s.quit()
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30, source_address=("127.0.0.3", 0))
s.ehlo("c.example.org")
s.starttls(context=ctx)
s.ehlo("c.example.org")
try:
    s.login("alice", "wrong")
except smtplib.SMTPAuthenticationError as e:
    print("bad", e.smtp_code, e.smtp_error.decode())
"#,
        port = gw.inbound
    ));
    for mech in ["PLAIN 235", "LOGIN 235", "CRAM-MD5 235"] {
        assert!(out.contains(mech), "{out}");
    }
    assert!(out.contains("bad 535 5.7.8"), "{out}");
    let msgs = sink.wait_for(3);
    for m in &msgs {
        let content = String::from_utf8_lossy(&m.content);
        assert!(content.contains("with ESMTPSA"), "{content}");
    }
    gw.wait_for_log("sasl_method=CRAM-MD5, sasl_username=alice");
}

#[test]
fn swaks_authenticates_with_each_mechanism() {
    let dir = TempDir::new("auth-swaks");
    let sink = Sink::start();
    let gw = start(&dir, &sink);
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        let out = Command::new("swaks")
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &gw.inbound.to_string(),
                "--tls",
            ])
            .args([
                "--auth",
                mech,
                "--auth-user",
                "alice",
                "--auth-password",
                "correct horse",
            ])
            .args(["--from", "alice@example.org", "--to", "eve@example.net"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mech}: {text}");
        assert!(
            text.contains("235 2.7.0 Authentication successful"),
            "{mech}: {text}"
        );
    }
    sink.wait_for(3);
}

#[test]
fn a_scram_client_written_elsewhere_authenticates() {
    let dir = TempDir::new("auth-scram");
    let sink = Sink::start();
    let gw = start(&dir, &sink);
    let out = python(&format!(
        r#"
import base64, smtplib, ssl
from scramp import ScramClient
ctx = ssl._create_unverified_context()
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30, source_address=("127.0.0.3", 0))
s.ehlo("c.example.org")
print("offered", s.esmtp_features.get("auth"))
c = ScramClient(["SCRAM-SHA-256"], "alice", "correct horse")
code, resp = s.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(c.get_client_first().encode()).decode())
assert code == 334, (code, resp)
c.set_server_first(base64.b64decode(resp).decode())
code, resp = s.docmd(base64.b64encode(c.get_client_final().encode()).decode())
assert code == 334, (code, resp)
c.set_server_final(base64.b64decode(resp).decode())
code, resp = s.docmd("")
print("final", code, resp.decode())
print(s.sendmail("alice@example.org", ["eve@example.net"], b"Subject: scram\r\n\r\nrelayed\r\n"))
s.quit()
"#,
        port = gw.inbound
    ));
    // Without TLS an outside client is offered only what the ruleset allows in clear.
    let offered = out.lines().find(|l| l.starts_with("offered")).unwrap_or("");
    assert!(
        offered.contains("CRAM-MD5 SCRAM-SHA-256") && !offered.contains("PLAIN"),
        "{out}"
    );
    assert!(out.contains("final 235 2.7.0"), "{out}");
    sink.wait_for(1);
}

#[test]
fn plain_without_tls_is_refused_for_an_outside_client_with_538() {
    let dir = TempDir::new("auth-538");
    let sink = Sink::start();
    let gw = start(&dir, &sink);
    let mut raw = Raw::connect(gw.inbound_addr());
    // Raw connects from 127.0.0.1, which POLICY classifies EXTERNAL.
    raw.replies(1);
    raw.send(b"EHLO c.example.org\r\n");
    let ehlo = raw.replies(1);
    assert!(ehlo.contains("AUTH CRAM-MD5 SCRAM-SHA-256"), "{ehlo}");
    raw.send(b"AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=\r\n");
    let text = raw.replies(1);
    assert!(text.starts_with("538 5.7.11"), "{text}");
}

#[test]
fn external_clients_reach_only_our_domains_and_smuggled_routes_never_relay() {
    let dir = TempDir::new("auth-relay");
    let sink = Sink::start();
    let gw = start(&dir, &sink);
    let forms = [
        "eve@example.net",
        "eve%example.net@example.com",
        "example.net!eve@example.com",
        "\"eve@example.net\"@example.com",
        "@example.com:eve@example.net",
        "eve@[192.0.2.1]",
    ];
    let script = |src: &str, login: bool| {
        let list = forms
            .iter()
            .map(|f| format!("{f:?}"))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            r#"
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30, source_address=("{src}", 0))
s.ehlo("c.example.org")
if {login}:
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("c.example.org")
    s.login("alice", "correct horse")
s.mail("a@example.org")
for r in [{list}]:
    code, text = s.docmd("RCPT TO:<%s>" % r)
    print(code, r)
print(s.rcpt("bob@example.com")[0], "ours")
s.quit()
"#,
            port = gw.inbound,
            login = if login { "True" } else { "False" }
        )
    };
    let outside = python(&script("127.0.0.3", false));
    for f in forms {
        assert!(
            outside.contains(&format!("550 {f}")),
            "{f} from outside:\n{outside}"
        );
    }
    assert!(outside.contains("250 ours"), "{outside}");
    let authed = python(&script("127.0.0.3", true));
    assert!(
        authed.contains("250 eve@example.net")
            && authed.contains("250 eve%example.net@example.com"),
        "{authed}"
    );
    let inside = python(&script("127.0.0.2", false));
    assert!(inside.contains("250 eve@example.net"), "{inside}");
}

/// Python: `attempt(src, user, password)` logs in with PLAIN over STARTTLS from the
/// loopback address `src` to the inbound port (`PORT`, filled in by `attempt_script`); it
/// gives "ok", the refusal's code, or "disconnected".
const ATTEMPT: &str = r#"
import smtplib, ssl, time
ctx = ssl._create_unverified_context()
def attempt(src, user, password, mechanism="PLAIN"):
    try:
        s = smtplib.SMTP("127.0.0.1", PORT, timeout=60, source_address=(src, 0))
        s.ehlo("c.example.org")
        s.starttls(context=ctx)
        s.ehlo("c.example.org")
        s.user, s.password = user, password
        s.auth(mechanism, {"PLAIN": s.auth_plain, "CRAM-MD5": s.auth_cram_md5}[mechanism])
        result = "ok"
    except smtplib.SMTPAuthenticationError as e:
        result = str(e.smtp_code)
    except smtplib.SMTPServerDisconnected:
        result = "disconnected"
    try:
        s.quit()
    except Exception:
        pass
    return result
"#;

fn attempt_script(port: u16) -> String {
    ATTEMPT.replace("PORT", &port.to_string())
}

#[test]
fn repeated_bad_passwords_are_slowed_then_blocked_while_another_address_logs_in() {
    let dir = TempDir::new("auth-throttle");
    let sink = Sink::start();
    let gw = start(&dir, &sink);
    let out = python(&format!(
        r#"
{attempt}
def timed(src, password):
    start = time.monotonic()
    return attempt(src, "alice", password), time.monotonic() - start
delays = []
for i in range(6):
    r, d = timed("127.0.0.3", "wrong")
    print("bad", i, r)
    delays.append(d)
print("slowed", delays[3] > delays[0])
print("good elsewhere", attempt("127.0.0.4", "alice", "correct horse"))
print("good while blocked", attempt("127.0.0.3", "alice", "correct horse"))
"#,
        attempt = attempt_script(gw.inbound)
    ));
    assert!(out.contains("bad 0 535"), "{out}");
    assert!(out.contains("slowed True"), "{out}");
    assert!(
        out.contains("bad 4 421") || out.contains("bad 4 disconnected"),
        "{out}"
    );
    assert!(out.contains("good elsewhere ok"), "{out}");
    assert!(!out.contains("good while blocked ok"), "{out}");
    gw.wait_for_log("blocked after repeated authentication failures");
}

#[test]
fn the_throttle_cannot_be_walked_around_and_blocks_a_guessed_user() {
    let dir = TempDir::new("auth-walk-around");
    let sink = Sink::start();
    let state = dir.path().join("state");
    add_user(&state, "alice", "correct horse", false);
    add_user(&state, "carol", "carol's secret", true);
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "{POLICY}set route * smarthost [127.0.0.1]:{port}\n\
             set system auth-throttle address-limit 3\n\
             set system auth-throttle user-limit 4\n",
            port = sink.addr.port()
        ),
    );
    let out = python(&format!(
        r#"
{attempt}
# Logging in as yourself between guesses at someone else forgives no guess.
for i in range(3):
    print("own", i, attempt("127.0.0.5", "alice", "correct horse"))
    print("guess", i, attempt("127.0.0.5", "carol", "guess%d" % i))
print("own after", attempt("127.0.0.5", "alice", "correct horse"))
# Guesses at one user from four networks block the user, not the networks.
for n in range(1, 5):
    print("spread", n, attempt("127.0.%d.1" % n, "carol", "spread%d" % n))
print("carol herself", attempt("127.0.9.1", "carol", "carol's secret"))
# The block holds whatever the mechanism: CRAM-MD5 checks without a derivation.
print("carol by cram", attempt("127.0.9.3", "carol", "carol's secret", "CRAM-MD5"))
print("alice elsewhere", attempt("127.0.9.2", "alice", "correct horse"))
"#,
        attempt = attempt_script(gw.inbound)
    ));
    for i in 0..3 {
        assert!(out.contains(&format!("own {i} ok")), "{out}");
    }
    assert!(
        out.contains("guess 0 535") && out.contains("guess 1 535"),
        "{out}"
    );
    assert!(
        out.contains("guess 2 421") || out.contains("guess 2 disconnected"),
        "{out}"
    );
    assert!(!out.contains("own after ok"), "{out}");
    assert!(out.contains("spread 1 535"), "{out}");
    // Three guesses at carol came from 127.0.0.5 already: the fourth blocks her.
    assert!(out.contains("carol herself 454"), "{out}");
    assert!(out.contains("carol by cram 454"), "{out}");
    assert!(out.contains("alice elsewhere ok"), "{out}");
    gw.wait_for_log(
        "authentication throttle: address 127.0.0.5 blocked for 600s after 3 failures (limit 3)",
    );
    gw.wait_for_log(
        "authentication throttle: user carol blocked for 600s after 4 failures (limit 4)",
    );
    gw.wait_for_log("authentication refused: user carol blocked");
}

#[test]
fn a_service_mechanism_list_narrows_what_is_offered() {
    let dir = TempDir::new("auth-service-list");
    let gw = Gateway::start(
        dir.path(),
        &format!("{POLICY}set service inbound auth-mechanisms \"SCRAM-SHA-256 PLAIN\"\n"),
    );
    let mut raw = Raw::connect(gw.inbound_addr());
    raw.replies(1);
    raw.send(b"EHLO c.example.org\r\n");
    let ehlo = raw.replies(1);
    // PLAIN is allowed by the service but needs TLS first under the ruleset.
    assert!(ehlo.contains("250-AUTH SCRAM-SHA-256\r\n"), "{ehlo}");
    raw.send(b"AUTH CRAM-MD5\r\n");
    assert!(raw.replies(1).starts_with("504 5.5.4"));
}

#[test]
fn cram_md5_is_offered_only_when_some_user_has_its_secret() {
    let dir = TempDir::new("auth-cram-offer");
    let state = dir.path().join("state");
    add_user(&state, "bob", "battery staple", false);
    let gw = Gateway::start(dir.path(), POLICY);
    let ehlo = |gw: &Gateway| {
        let mut raw = Raw::connect(gw.inbound_addr());
        raw.replies(1);
        raw.send(b"EHLO c.example.org\r\n");
        let ehlo = raw.replies(1);
        (raw, ehlo)
    };
    // No user has a CRAM-MD5 secret: it is not offered, and asking for it is refused.
    let (mut raw, offered) = ehlo(&gw);
    assert!(offered.contains("250-AUTH SCRAM-SHA-256\r\n"), "{offered}");
    raw.send(b"AUTH CRAM-MD5\r\n");
    assert!(raw.replies(1).starts_with("504 5.5.4"));
    // Once one has, the next session offers it (the database is read again when it
    // changes); a user without the secret gets the same 535 as a wrong password, and
    // only the log says why.
    add_user(&state, "alice", "correct horse", true);
    let mut offered = String::new();
    wait_until("CRAM-MD5 offered", || {
        offered = ehlo(&gw).1;
        offered.contains("250-AUTH CRAM-MD5 SCRAM-SHA-256\r\n")
    });
    let out = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.ehlo("c.example.org")
s.user, s.password = "bob", "battery staple"
try:
    s.auth("CRAM-MD5", s.auth_cram_md5)
    print("accepted")
except smtplib.SMTPAuthenticationError as e:
    print("refused", e.smtp_code)
s.user, s.password = "alice", "correct horse"
print("alice", s.auth("CRAM-MD5", s.auth_cram_md5)[0])
"#,
        port = gw.inbound
    ));
    assert!(out.contains("refused 535"), "{out}");
    assert!(out.contains("alice 235"), "{out}");
    gw.wait_for_log(
        "SASL CRAM-MD5 authentication failed for bob: this user has no CRAM-MD5 secret",
    );
}
