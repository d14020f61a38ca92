//! An independent TLS scanner, testssl (Debian package testssl.sh), against the STARTTLS
//! port and the implicit-TLS port: only TLS 1.2 and 1.3, no weak ciphers, forward
//! secrecy only, none of the known vulnerabilities. Its JSON report is parsed here.

mod common;

use std::process::Command;

use common::*;

/// Runs testssl on `target` (with `--starttls smtp` when `starttls`); returns the facts
/// the test checks, one per line: `id severity finding`.
fn scan(dir: &TempDir, target: &str, starttls: bool) -> String {
    let json = dir
        .path()
        .join(format!("testssl-{}.json", target.replace(':', "-")));
    let mut cmd = Command::new("testssl");
    cmd.args([
        "--quiet",
        "--warnings",
        "off",
        "--ip",
        "one",
        "-p",
        "-s",
        "-f",
        "-U",
    ]);
    if starttls {
        cmd.args(["--starttls", "smtp"]);
    }
    let out = cmd
        .arg("--jsonfile-pretty")
        .arg(&json)
        .arg(target)
        .output()
        .expect("testssl (Debian package testssl.sh)");
    assert!(
        json.exists(),
        "testssl wrote no report: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    python(&format!(
        r#"
import json
d = json.load(open("{json}"))
r = d["scanResult"][0]
for section in ["protocols", "ciphers", "pfs", "vulnerabilities"]:
    for s in r.get(section, []):
        print(s["id"], s["severity"], s["finding"])
"#,
        json = json.display()
    ))
}

fn check(facts: &str) {
    for line in [
        "SSLv2 OK not offered",
        "SSLv3 OK not offered",
        "TLS1 INFO not offered",
        "TLS1_1 INFO not offered",
        "TLS1_2 OK offered",
        "TLS1_3 OK offered",
        "cipherlist_NULL OK not offered",
        "cipherlist_aNULL OK not offered",
        "cipherlist_EXPORT OK not offered",
        "cipherlist_LOW OK not offered",
        "cipherlist_3DES_IDEA INFO not offered",
        "cipherlist_AVERAGE INFO not offered",
        "PFS OK offered",
    ] {
        assert!(
            facts.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{facts}"
        );
    }
    // Nothing the scanner rates as a weakness, in any section.
    for bad in [" LOW ", " MEDIUM ", " HIGH ", " CRITICAL "] {
        assert!(
            !facts.lines().any(|l| l.contains(bad)),
            "{bad:?} finding in:\n{facts}"
        );
    }
}

#[test]
fn testssl_finds_no_weakness_on_the_starttls_and_implicit_ports() {
    let dir = TempDir::new("testssl");
    let tls_port = free_port();
    let gw = Gateway::start(
        dir.path(),
        &format!("set service inbound tls-listen 127.0.0.1:{tls_port}\n"),
    );
    check(&scan(&dir, &format!("127.0.0.1:{}", gw.inbound), true));
    check(&scan(&dir, &format!("127.0.0.1:{tls_port}"), false));
}
