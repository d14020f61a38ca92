//! TLS on both services and on delivery, with real TLS peers over loopback: Python's
//! smtplib (`starttls()` and `SMTP_SSL`), `openssl s_client`, swaks, and a second
//! drawbridge as the receiving server.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn relay_to(port: u16) -> String {
    format!(
        "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
         set route example.com relay [127.0.0.1]:{port}\n"
    )
}

/// A gateway with an implicit-TLS port too; returns it and that port.
fn start_tls(dir: &TempDir, extra: &str) -> (Gateway, u16) {
    let tls_port = free_port();
    let gw = Gateway::start(
        dir.path(),
        &format!("set service inbound tls-listen 127.0.0.1:{tls_port}\n{extra}"),
    );
    (gw, tls_port)
}

#[test]
fn first_boot_generates_a_self_signed_certificate_and_says_so() {
    let dir = TempDir::new("tls-first");
    let (mut gw, _) = start_tls(&dir, "");
    gw.wait_for_log("generated a self-signed one for gw.example.com, SHA-256 fingerprint");
    assert!(gw.state.join("sslpassword.conf").exists());
    gw.restart();
    // The second boot keeps the certificate.
    assert_eq!(
        gw.log_text().matches("generated a self-signed one").count(),
        1
    );
}

/// The console's `token login` on a running gateway checks the software token's PIN
/// file by a login of its own: a PIN file that would stop the next start is reported at
/// once (and not tried again until it changes), and the running gateway keeps its login
/// and its TLS.
#[test]
fn token_login_checks_the_software_tokens_pin_file_on_a_running_gateway() {
    let dir = TempDir::new("tls-pin-check");
    let (gw, tls_port) = start_tls(&dir, "");
    gw.wait_for_log("generated a self-signed one");
    let out = gw.console_script("token login\n");
    assert!(out.contains("the PIN file's PIN opens it"), "{out}");

    let pin_file = gw.state.join("sslpassword.conf");
    let good = std::fs::read_to_string(&pin_file).unwrap();
    let (label, _) = good.trim_end().split_once(':').unwrap();
    std::fs::write(&pin_file, format!("{label}:0123456789abcdef\n")).unwrap();
    let out = gw.console_script("token login\n");
    assert!(
        out.contains("the PIN file does not open the token")
            && out.contains("its next start would fail"),
        "{out}"
    );
    // Not tried again until the file is written again: each refused PIN counts towards
    // the token's lock.
    let not_tried = "has not been written since the token refused its PIN, and is not tried again";
    let out = gw.console_script("token login\n");
    assert!(out.contains(not_tried), "{out}");
    // Consoles asking at once make one attempt between them, not one each (ten in a row
    // would lock the token): the first is refused, the others wait and are told so.
    std::fs::write(&pin_file, format!("{label}:0123456789abcdef\n")).unwrap();
    let outs: Vec<String> = std::thread::scope(|s| {
        let asking: Vec<_> = (0..6)
            .map(|_| s.spawn(|| gw.console_script("token login\n")))
            .collect();
        asking.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let tried = outs.iter().filter(|o| !o.contains(not_tried)).count();
    assert_eq!(tried, 1, "{outs:#?}");
    assert!(
        outs.iter()
            .all(|o| o.contains("the PIN file does not open the token")),
        "{outs:#?}"
    );
    // Still serving TLS with the key it logged in to.
    let served = python(&format!(
        "import smtplib, ssl\n\
         s = smtplib.SMTP_SSL('127.0.0.1', {tls_port}, context=ssl._create_unverified_context())\n\
         print(s.noop()[0], s.sock.version())\n\
         s.quit()"
    ));
    assert_eq!(served.trim(), "250 TLSv1.3");

    std::fs::write(&pin_file, &good).unwrap();
    let out = gw.console_script("token login\n");
    assert!(out.contains("the PIN file's PIN opens it"), "{out}");
}

#[test]
fn smtplib_starttls_and_implicit_tls_deliver_with_esmtps_in_the_trace() {
    let dir = TempDir::new("tls-smtplib");
    let sink = Sink::start();
    let (gw, tls_port) = start_tls(&dir, &relay_to(sink.addr.port()));
    let out = python(&format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", {plain}, timeout=30) as s:
    s.ehlo("client.example.org")
    assert s.has_extn("starttls")
    s.starttls(context=ctx)
    s.ehlo("client.example.org")
    assert not s.has_extn("starttls")
    print("starttls", s.sock.version())
    s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: starttls\r\n\r\nvia starttls\r\n")
with smtplib.SMTP_SSL("127.0.0.1", {tls_port}, context=ctx, timeout=30) as s:
    s.ehlo("client.example.org")
    assert not s.has_extn("starttls")
    print("implicit", s.sock.version())
    s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: implicit\r\n\r\nvia smtps\r\n")
"#,
        plain = gw.inbound
    ));
    assert!(out.contains("starttls TLSv1.3"), "{out}");
    assert!(out.contains("implicit TLSv1.3"), "{out}");
    let msgs = sink.wait_for(2);
    for m in &msgs {
        let content = String::from_utf8_lossy(&m.content);
        assert!(
            content.contains("with ESMTPS (using TLSv1.3 with cipher TLS13_"),
            "{content}"
        );
    }
    gw.wait_for_log(
        "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher",
    );
}

#[test]
fn openssl_s_client_speaks_starttls_and_implicit_tls_with_tls12_and_13() {
    let dir = TempDir::new("tls-openssl");
    let (gw, tls_port) = start_tls(&dir, "");
    for (args, version) in [
        (
            vec![
                "-starttls",
                "smtp",
                "-connect",
                &format!("127.0.0.1:{}", gw.inbound),
            ],
            "TLSv1.3",
        ),
        (
            vec!["-connect", &format!("127.0.0.1:{tls_port}")],
            "TLSv1.3",
        ),
        (
            vec!["-tls1_2", "-connect", &format!("127.0.0.1:{tls_port}")],
            "TLSv1.2",
        ),
    ] {
        let mut child = Command::new("openssl")
            .arg("s_client")
            .args(&args)
            .arg("-brief")
            .arg("-ign_eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"QUIT\r\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("Protocol version: {version}")),
            "{args:?}: {text}"
        );
        assert!(text.contains("221 2.0.0"), "{args:?}: {text}");
    }
    // TLS 1.1 and older are never offered.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-connect",
            &format!("127.0.0.1:{tls_port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn swaks_delivers_over_tls() {
    let dir = TempDir::new("tls-swaks");
    let sink = Sink::start();
    let (gw, tls_port) = start_tls(&dir, &relay_to(sink.addr.port()));
    for mode in [
        vec!["--tls"],
        vec!["--tlsc", "--port", &tls_port.to_string()],
    ] {
        let mut cmd = Command::new("swaks");
        cmd.args([
            "--server",
            "127.0.0.1",
            "--to",
            "bob@example.com",
            "--from",
            "alice@example.org",
        ]);
        if mode[0] == "--tls" {
            cmd.args(["--port", &gw.inbound.to_string()]);
        }
        let out = cmd
            .args(&mode)
            .output()
            .expect("swaks (Debian package swaks)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mode:?}: {text}");
        assert!(text.contains("250 2.0.0 Ok: queued as"), "{text}");
    }
    sink.wait_for(2);
}

#[test]
fn starttls_command_injection_is_thrown_away() {
    let dir = TempDir::new("tls-inject");
    let (gw, _) = start_tls(&dir, "");
    let mut raw = Raw::connect(gw.inbound_addr());
    raw.replies(1);
    raw.send(b"EHLO c.example.org\r\n");
    raw.replies(1);
    raw.send(b"STARTTLS\r\nNOOP\r\n");
    let text = raw.replies(1);
    assert_eq!(text, "220 2.0.0 Ready to start TLS\r\n");
    // Nothing else arrives in plaintext: the NOOP was never answered. The server now
    // waits for a TLS ClientHello; a plaintext line is not one.
    raw.stream
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let rest = raw.until_close();
    assert!(!rest.contains("250"), "{rest}");
}

#[test]
fn must_tls_server_refuses_mail_before_starttls() {
    let dir = TempDir::new("tls-must");
    let (gw, _) = start_tls(
        &dir,
        "set channel tcp_secure keywords \"musttlsserver\"\nset service inbound channel tcp_secure\n",
    );
    let out = python(&format!(
        r#"
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.ehlo("c.example.org")
print("before", s.mail("a@example.org"))
ctx = ssl._create_unverified_context()
s.rset()
s.starttls(context=ctx)
s.ehlo("c.example.org")
print("after", s.mail("a@example.org"))
s.quit()
"#,
        port = gw.inbound
    ));
    assert!(
        out.contains("before (530, b'5.7.0 Must issue a STARTTLS command first')"),
        "{out}"
    );
    assert!(out.contains("after (250"), "{out}");
}

/// Two gateways: A relays to B, which takes mail with TLS.
/// Gateway A relays example.com to gateway B over the channel keywords `channel`, with
/// `extra` lines of its own; B relays it to `sink`.
fn pair(
    dir_a: &TempDir,
    dir_b: &TempDir,
    channel: &str,
    extra: &str,
    sink: &Sink,
) -> (Gateway, Gateway) {
    let b = Gateway::start(dir_b.path(), &relay_to(sink.addr.port()));
    let a = Gateway::start(
        dir_a.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{}\n\
             set route example.com channel tcp_out\n\
             set channel tcp_out keywords \"{channel}\"\n{extra}",
            b.inbound
        ),
    );
    (a, b)
}

fn send(gw: &Gateway) {
    python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: hop\r\n\r\ntwo hops\r\n")
"#,
        port = gw.inbound
    ));
}

#[test]
fn delivery_uses_starttls_opportunistically() {
    let (da, db) = (TempDir::new("tls-a"), TempDir::new("tls-b"));
    let sink = Sink::start();
    let (a, b) = pair(&da, &db, "maytls", "", &sink);
    send(&a);
    let msgs = sink.wait_for(1);
    let content = String::from_utf8_lossy(&msgs[0].content);
    // B's trace header shows A came in over TLS.
    assert!(
        content.contains("by gw.example.com (drawbridge) with ESMTPS (using TLSv1.3"),
        "{content}"
    );
    a.wait_for_log(&format!(
        "Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{}: TLSv1.3",
        b.inbound
    ));
}

#[test]
fn without_tls_of_its_own_opportunistic_delivery_goes_in_clear() {
    let (da, db) = (TempDir::new("tls-none-a"), TempDir::new("tls-none-b"));
    let sink = Sink::start();
    // A's TLS cannot be set up (its client CA file cannot be read): it offers no
    // STARTTLS, and delivers in clear to B, which offers it.
    let no_ca = format!(
        "set tls client-ca-file {}\n",
        da.path().join("no-such-ca.pem").display()
    );
    let (a, _b) = pair(&da, &db, "maytls", &no_ca, &sink);
    a.wait_for_log("TLS is not available");
    send(&a);
    let msgs = sink.wait_for(1);
    let content = String::from_utf8_lossy(&msgs[0].content);
    assert!(content.contains("two hops"), "{content}");
    assert!(
        !a.log_text().contains("status=deferred"),
        "{}",
        a.log_text()
    );
}

#[test]
fn must_tls_client_verifies_and_defers_rather_than_send_in_clear() {
    // B's certificate is self-signed, so a verifying client must not deliver to it.
    let (da, db) = (TempDir::new("tls-must-a"), TempDir::new("tls-must-b"));
    let sink = Sink::start();
    let (a, _b) = pair(&da, &db, "musttlsclient", "", &sink);
    send(&a);
    a.wait_for_log("status=deferred (454 4.7.5");
    assert_eq!(sink.count(), 0);
    // A next hop without STARTTLS at all: deferred too, nothing sent in clear.
    let dc = TempDir::new("tls-must-c");
    let plain = Sink::start();
    let c = Gateway::start(
        dc.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{}\n\
             set route example.com channel tcp_out\n\
             set channel tcp_out keywords \"musttls\"\n",
            plain.addr.port()
        ),
    );
    send(&c);
    c.wait_for_log(
        "status=deferred (454 4.7.5 TLS is required but the server does not offer STARTTLS",
    );
    assert_eq!(plain.count(), 0);
}

#[test]
fn must_tls_client_with_the_danger_option_delivers_unverified() {
    let (da, db) = (TempDir::new("tls-danger-a"), TempDir::new("tls-danger-b"));
    let sink = Sink::start();
    let b = Gateway::start(db.path(), &relay_to(sink.addr.port()));
    let a = Gateway::start(
        da.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{}\n\
             set route example.com channel tcp_out\n\
             set route example.com danger-tls-no-verify yes\n\
             set channel tcp_out keywords \"musttlsclient\"\n",
            b.inbound
        ),
    );
    send(&a);
    sink.wait_for(1);
    a.wait_for_log("Untrusted TLS connection established");
}

/// Python for a scripted next hop: `listening()` binds a loopback port and prints it;
/// `up_to_starttls(srv)` accepts, greets, offers STARTTLS and reads the client's;
/// `take_mail(f, send, log, queued)` reads commands from `f` until QUIT or the end,
/// records them in `log`, answers EHLO with STARTTLS offered, DATA's end with `queued`,
/// everything else with 250.
macro_rules! take_mail_py {
    () => {
        r#"
import socket
def listening():
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0)); srv.listen(2)
    print(srv.getsockname()[1], flush=True)
    return srv
def up_to_starttls(srv):
    conn, _ = srv.accept()
    f = conn.makefile("rb")
    conn.sendall(b"220 next.test ESMTP\r\n")
    f.readline()
    conn.sendall(b"250-next.test\r\n250 STARTTLS\r\n")
    assert f.readline().strip().upper() == b"STARTTLS"
    return conn, f
def take_mail(f, send, log, queued):
    while True:
        line = f.readline()
        if not line:
            break
        log.write(line); log.flush()
        cmd = line.strip().upper()
        if cmd.startswith(b"EHLO"):
            send(b"250-next.test\r\n250 STARTTLS\r\n")
        elif cmd == b"DATA":
            send(b"354 go\r\n")
            while f.readline() not in (b".\r\n", b""):
                pass
            send(queued)
        elif cmd == b"QUIT":
            send(b"221 bye\r\n")
            break
        else:
            send(b"250 2.0.0 ok\r\n")
"#
    };
}

/// A next hop that answers our STARTTLS with `220 Ready\r\n250-fake\r\n` in one write,
/// then speaks TLS properly; records what it receives after the handshake.
const INJECTING_SERVER: &str = concat!(
    take_mail_py!(),
    r#"
import socket, ssl, subprocess, sys, os
d = sys.argv[1]
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
    "-nodes", "-keyout", d + "/k.pem", "-out", d + "/c.pem", "-days", "2", "-subj", "/CN=inject"],
    check=True, capture_output=True)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/c.pem", d + "/k.pem")
srv = listening()
conn, f = up_to_starttls(srv)
conn.sendall(b"220 Ready\r\n250-fake\r\n")
tls = ctx.wrap_socket(conn, server_side=True)
g = tls.makefile("rb")
log = open(d + "/seen.txt", "wb")
line = g.readline(); log.write(line)
tls.sendall(b"250-inject.test\r\n250 PIPELINING\r\n")
take_mail(g, tls.sendall, log, b"250 2.0.0 queued\r\n")
"#
);

#[test]
fn plaintext_injected_after_our_starttls_is_thrown_away() {
    let dir = TempDir::new("tls-response-inject");
    let (mut server, gw) = relay_to_scripted(&dir, INJECTING_SERVER);
    send(&gw);
    gw.wait_for_log("status=sent (250 2.0.0 queued)");
    let _ = server.0.wait();
    let seen = std::fs::read_to_string(dir.path().join("seen.txt")).unwrap();
    // After TLS we said EHLO again, and the "250-fake" line was never taken as its answer.
    assert!(seen.starts_with("EHLO gw.example.com\r\n"), "{seen}");
    assert!(seen.contains("MAIL FROM:<alice@example.org>"), "{seen}");
    gw.wait_for_log("Untrusted TLS connection established to 127.0.0.1[127.0.0.1]");
}

/// A next hop that offers STARTTLS, answers ours with 220 and our ClientHello with no
/// TLS at all (a broken TLS set-up), and takes mail in clear on a second connection;
/// records the commands of that one.
const BROKEN_TLS_SERVER: &str = concat!(
    take_mail_py!(),
    r#"
import socket, sys
d = sys.argv[1]
srv = listening()
conn, f = up_to_starttls(srv)
conn.sendall(b"220 Ready\r\n")
conn.recv(65536)
conn.sendall(b"this is not TLS at all\r\n")
conn.recv(65536)
conn.close()
conn, _ = srv.accept()
f = conn.makefile("rb")
log = open(d + "/seen.txt", "wb")
conn.sendall(b"220 broken.test ESMTP\r\n")
take_mail(f, conn.sendall, log, b"250 2.0.0 queued in clear\r\n")
"#
);

/// A scripted next hop, stopped when the test ends however it ends.
struct Scripted(std::process::Child);

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gateway in `dir` that relays example.com to the Python next hop `script` (which
/// prints its port first), and that next hop.
fn relay_to_scripted(dir: &TempDir, script: &str) -> (Scripted, Gateway) {
    let mut server = Scripted(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let port: u16 = port.trim().parse().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{port}\n"
        ),
    );
    (server, gw)
}

#[test]
fn opportunistic_delivery_goes_on_in_clear_after_a_failed_handshake() {
    let dir = TempDir::new("tls-broken-next-hop");
    let (mut server, gw) = relay_to_scripted(&dir, BROKEN_TLS_SERVER);
    send(&gw);
    gw.wait_for_log("TLS handshake with 127.0.0.1[127.0.0.1]:");
    gw.wait_for_log("TLS is opportunistic: connecting again without it");
    gw.wait_for_log("status=sent (250 2.0.0 queued in clear)");
    let _ = server.0.wait();
    let seen = std::fs::read_to_string(dir.path().join("seen.txt")).unwrap();
    // The second connection asked for no TLS, though it was offered again.
    assert!(seen.starts_with("EHLO gw.example.com\r\n"), "{seen}");
    assert!(!seen.to_uppercase().contains("STARTTLS"), "{seen}");
    assert!(seen.contains("MAIL FROM:<alice@example.org>"), "{seen}");
}

/// `tlsswitchchannel`: after STARTTLS the session is on the channel it names, whose
/// keywords govern what follows. Here that channel requires a login before mail.
#[test]
fn the_channel_tls_switches_to_governs_the_rest_of_the_session() {
    let dir = TempDir::new("tls-switch-channel");
    let gw = Gateway::start(
        dir.path(),
        "set service inbound channel tcp_local\n\
         set service inbound auth yes\n\
         set channel tcp_local keywords \"maytls tlsswitchchannel tcp_tls\"\n\
         set channel tcp_tls keywords \"mustsaslserver\"\n",
    );
    let out = python(&format!(
        r#"
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.ehlo("c.example.org")
print("plain auth", s.has_extn("auth"))
print("plain mail", s.docmd("MAIL", "FROM:<alice@example.org>")[0])
s.rset()
s.starttls(context=ssl._create_unverified_context())
s.ehlo("c.example.org")
print("tls auth", s.has_extn("auth"))
code, text = s.docmd("MAIL", "FROM:<alice@example.org>")
print("tls mail", code, text.decode())
s.quit()
"#,
        port = gw.inbound
    ));
    // In clear, tcp_local: no login offered or needed.
    assert!(out.contains("plain auth False"), "{out}");
    assert!(out.contains("plain mail 250"), "{out}");
    // Under TLS, tcp_tls: a login is offered, and mail waits for one.
    assert!(out.contains("tls auth True"), "{out}");
    assert!(out.contains("tls mail 530 5.7.0"), "{out}");
    gw.wait_for_log("switched to channel tcp_tls after TLS");
}
