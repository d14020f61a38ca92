//! What an administrator gets without asking: no AUTH on the inbound (MX) service, AUTH
//! elsewhere only after STARTTLS, the postmaster always reachable from outside, and a
//! state directory only the gateway can read.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

/// Modes of every file and folder under `dir` as `stat` prints them, with their paths.
fn modes(dir: &std::path::Path) -> Vec<(String, String)> {
    let out = std::process::Command::new("find")
        .arg(dir)
        .args(["-exec", "stat", "-c", "%a %n", "{}", ";"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

#[test]
fn auth_is_not_offered_inbound_and_only_over_tls_outbound() {
    let dir = TempDir::new("safe-auth");
    let gw = Gateway::start(dir.path(), "");
    let ehlo = |port: u16, tls: bool| {
        python(&format!(
            r#"
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.ehlo("c.example.org")
if {tls}:
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("c.example.org")
print(s.esmtp_features.get("auth"))
s.quit()
"#,
            tls = if tls { "True" } else { "False" }
        ))
        .trim()
        .to_string()
    };
    assert_eq!(ehlo(gw.inbound, false), "None");
    assert_eq!(ehlo(gw.inbound, true), "None");
    assert_eq!(ehlo(gw.outbound, false), "None", "no AUTH before TLS");
    let after_tls = ehlo(gw.outbound, true);
    assert!(
        after_tls.contains("PLAIN") && after_tls.contains("SCRAM-SHA-256"),
        "{after_tls}"
    );
}

#[test]
fn the_postmaster_is_accepted_from_an_outside_address() {
    let dir = TempDir::new("safe-postmaster");
    let sink = Sink::start();
    // Every relay refused by a rule; the host's domain goes to the sink.
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 0.0.0.0/0 category EXTERNAL\n\
             set route example.com relay [127.0.0.1]:{port}\n\
             set route .example.com relay [127.0.0.1]:{port}\n\
             set relay-rule 1 deny \"5.7.1 nothing here\"\n\
             set system postmaster hostmaster@example.com\n",
            port = sink.addr.port()
        ),
    );
    let out = python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {}) as s:
    s.ehlo("outside.example.net")
    print(s.mail("someone@example.net")[0])
    for r in ["postmaster", "PostMaster@gw.example.com", "postmaster@[127.0.0.1]", "bob@example.com"]:
        print(r, s.rcpt(r)[0])
    print(s.data(b"Subject: hello postmaster\r\n\r\nx\r\n")[0])
"#,
        gw.inbound
    ));
    assert!(out.contains("postmaster 250"), "{out}");
    assert!(out.contains("PostMaster@gw.example.com 250"), "{out}");
    assert!(out.contains("postmaster@[127.0.0.1] 250"), "{out}");
    assert!(out.contains("bob@example.com 550"), "{out}");
    // Three ways of writing our postmaster: one recipient, delivered once.
    let msgs = sink.wait_for(1);
    assert_eq!(msgs[0].rcpts, ["<hostmaster@example.com>"]);
}

#[test]
fn the_state_directory_is_the_gateways_alone() {
    let dir = TempDir::new("safe-modes");
    let state = dir.path().join("state");
    // A state directory left world-readable by hand, with a readable file in it.
    std::fs::create_dir_all(state.join("spool")).unwrap();
    std::fs::write(state.join("spool").join("left-over"), b"x").unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("spool").join("left-over"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let sink = Sink::start();
    let mut gw = Gateway::start(
        dir.path(),
        &format!(
            "set route example.com relay [127.0.0.1]:{}\n",
            sink.addr.port()
        ),
    );
    gw.wait_for_log("tightened the mode of");
    python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {}) as s:
    s.sendmail("a@example.org", ["bob@example.com"], b"Subject: modes\r\n\r\nx\r\n")
"#,
        gw.inbound
    ));
    sink.wait_for(1);
    let add = std::process::Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(["password", "add", "--user", "alice", "--state-dir"])
        .arg(&state)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"a long passphrase\n")?;
            c.wait()
        })
        .unwrap();
    assert!(add.success());
    gw.kill();
    let all = modes(&state);
    assert!(all.len() > 10, "{all:?}");
    for (mode, path) in &all {
        let bits = u32::from_str_radix(mode, 8).unwrap();
        assert_eq!(bits & 0o077, 0, "{path} is {mode}");
    }
    assert!(all.iter().any(|(_, p)| p.ends_with("users.db")), "{all:?}");
    assert!(
        all.iter().any(|(_, p)| p.contains("/config/slot-")),
        "{all:?}"
    );
    assert!(all.iter().any(|(_, p)| p.contains("/token")), "{all:?}");
}
