//! Certificates end to end: PEM chains imported with `drawbridge certificate import`,
//! chosen by SNI, a CSR for a stored key, and client certificates verified against
//! the configured CAs and recorded on the session.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir` named `ca`, and leaf certificates signed by it.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/CN={name} test CA"),
        ],
    );
}

fn make_leaf(dir: &Path, ca: &str, name: &str, subject: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    let chain = std::fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap()
        + &std::fs::read_to_string(dir.join(format!("{ca}.pem"))).unwrap();
    std::fs::write(dir.join(format!("{name}-chain.pem")), chain).unwrap();
}

fn drawbridge(args: &[&str], state: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `drawbridge certificate import NAME` of `pki`'s `NAME-chain.pem` and `NAME.key`.
fn import(pki: &Path, name: &str, state: &Path) {
    let (chain, key) = (
        pki.join(format!("{name}-chain.pem")),
        pki.join(format!("{name}.key")),
    );
    let out = drawbridge(
        &[
            "certificate",
            "import",
            name,
            "--chain",
            chain.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        state,
    );
    assert!(out.starts_with(&format!("imported {name}:")), "{out}");
}

/// The subject of the certificate the server shows for `sni`.
fn served_subject(port: u16, sni: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-starttls",
        "smtp",
        "-connect",
        &format!("127.0.0.1:{port}"),
    ]);
    if let Some(name) = sni {
        cmd.args(["-servername", name]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or("")
        .to_string()
}

#[test]
fn imported_certificates_are_chosen_by_sni_and_requests_verify() {
    let dir = TempDir::new("certs-sni");
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "ca");
    make_leaf(
        &pki,
        "ca",
        "mx",
        "/CN=mx.example.com",
        "subjectAltName=DNS:mx.example.com\n",
    );
    make_leaf(
        &pki,
        "ca",
        "other",
        "/CN=other.example.net",
        "subjectAltName=DNS:other.example.net\n",
    );
    let state = dir.path().join("state");
    for name in ["mx", "other"] {
        import(&pki, name, &state);
    }
    let shown = drawbridge(&["certificate", "show"], &state);
    assert!(
        shown.contains("mx: mx.example.com") && shown.contains("other: other.example.net"),
        "{shown}"
    );
    // A mismatched key is refused.
    let bad = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(["certificate", "import", "bad", "--chain"])
        .arg(pki.join("mx-chain.pem"))
        .arg("--key")
        .arg(pki.join("other.key"))
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let csr = drawbridge(&["certificate", "request", "mx"], &state);
    std::fs::write(pki.join("request.csr"), &csr).unwrap();
    openssl(&pki, &["req", "-verify", "-noout", "-in", "request.csr"]);

    let gw = Gateway::start(dir.path(), "");
    assert!(!gw.log_text().contains("generated a self-signed"));
    assert!(served_subject(gw.inbound, Some("mx.example.com")).contains("CN = mx.example.com"));
    assert!(
        served_subject(gw.inbound, Some("other.example.net")).contains("CN = other.example.net")
    );
    assert!(
        served_subject(gw.inbound, None).contains("CN = mx.example.com"),
        "the first is the default"
    );
}

#[test]
fn client_certificates_are_verified_recorded_and_a_foreign_one_refused() {
    let dir = TempDir::new("certs-client");
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "clients");
    make_ca(&pki, "stranger");
    let ext = "subjectAltName=email:alice@example.com\nextendedKeyUsage=clientAuth\n";
    make_leaf(&pki, "clients", "alice", "/CN=alice/O=Example", ext);
    make_leaf(&pki, "stranger", "mallory", "/CN=mallory", ext);
    // The certificate's SAN email names a local user, who may then AUTH EXTERNAL.
    let state = dir.path().join("state");
    let mut add = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args([
            "password",
            "add",
            "--user",
            "alice@example.com",
            "--state-dir",
        ])
        .arg(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut add.stdin.take().unwrap(), b"unused password\n").unwrap();
    assert!(add.wait().unwrap().success());
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set tls client-ca-file \"{}\"\n\
             set service inbound channel tcp_local\n\
             set service inbound auth yes\n\
             set channel tcp_local keywords \"maytls maysaslserver tlsswitchchannel tcp_tls\"\n\
             set channel tcp_tls keywords \"maysaslserver\"\n",
            pki.join("clients.pem").display()
        ),
    );
    let script = |who: &str| {
        format!(
            r#"
import smtplib, ssl
ctx = ssl._create_unverified_context()
ctx.load_cert_chain("{dir}/{who}.pem", "{dir}/{who}.key")
try:
    s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
    s.ehlo("c.example.org")
    s.starttls(context=ctx)
    print("ehlo", s.ehlo("c.example.org")[0])
    print("offered", s.esmtp_features.get("auth"))
    print("external", s.docmd("AUTH", "EXTERNAL =")[0])
    s.quit()
except Exception as e:
    print("refused", type(e).__name__)
"#,
            dir = pki.display(),
            port = gw.inbound
        )
    };
    let alice = python(&script("alice"));
    assert!(alice.contains("ehlo 250"), "{alice}");
    assert!(
        alice
            .lines()
            .any(|l| l.starts_with("offered") && l.contains("EXTERNAL")),
        "{alice}"
    );
    assert!(alice.contains("external 235"), "{alice}");
    gw.wait_for_log("sasl_method=EXTERNAL, sasl_username=alice@example.com");
    gw.wait_for_log(
        "Trusted TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher",
    );
    let log = gw.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("(client certificate "))
        .expect("client certificate logged");
    assert!(
        line.contains("CN=alice") && line.contains("O=Example"),
        "{line}"
    );
    gw.wait_for_log("switched to channel tcp_tls after TLS");
    let mallory = python(&script("mallory"));
    assert!(mallory.contains("refused"), "{mallory}");
    gw.wait_for_log("TLS handshake with unknown[127.0.0.1] failed");
}

/// After first start (self-signed), a CA-signed certificate for the host name imported
/// into the running gateway is served at once without SNI, for other names and on
/// STARTTLS; a service may name its own; `certificate delete` takes one away, live too.
#[test]
fn an_imported_certificate_for_the_host_name_is_served_at_once_and_by_default() {
    let dir = TempDir::new("certs-live");
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "ca");
    make_leaf(
        &pki,
        "ca",
        "gw",
        "/CN=gw.example.com",
        "subjectAltName=DNS:gw.example.com\n",
    );
    make_leaf(
        &pki,
        "ca",
        "other",
        "/CN=other.example.net",
        "subjectAltName=DNS:other.example.net\n",
    );
    let gw = Gateway::start(dir.path(), "");
    gw.wait_for_log("generated a self-signed one for gw.example.com");
    gw.wait_for_log("inbound service serves certificate 0-self-signed (gw.example.com)");
    let self_signed = served_subject(gw.inbound, None);
    assert!(self_signed.contains("CN = gw.example.com"), "{self_signed}");

    for name in ["gw", "other"] {
        import(&pki, name, &gw.state);
    }
    gw.wait_for_log("inbound service serves certificate gw (gw.example.com)");
    // The CA-signed one now: no SNI, an unknown name, and the host name itself.
    let issuer = |sni: Option<&str>| {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            &format!("127.0.0.1:{}", gw.inbound),
        ]);
        if let Some(n) = sni {
            cmd.args(["-servername", n]);
        }
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("issuer="))
            .unwrap_or("")
            .to_string()
    };
    for sni in [None, Some("unknown.example.org"), Some("gw.example.com")] {
        assert!(
            issuer(sni).contains("ca test CA"),
            "{sni:?}: {}",
            issuer(sni)
        );
    }
    assert!(
        served_subject(gw.inbound, Some("other.example.net")).contains("CN = other.example.net")
    );

    // A service names its own certificate; a name not stored is refused at commit.
    let edit = dir.path().join("edit.conf");
    std::fs::write(&edit, "set service outbound certificate other\n").unwrap();
    let (ok, out, err) = gw.cli(&["config", "load", "merge", edit.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(served_subject(gw.outbound, None).contains("CN = other.example.net"));
    assert!(served_subject(gw.inbound, None).contains("CN = gw.example.com"));
    std::fs::write(&edit, "set service inbound certificate nosuch\n").unwrap();
    let (ok, _, err) = gw.cli(&["config", "load", "merge", edit.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no certificate nosuch is stored"), "{err}");

    // A certificate a service names cannot be deleted.
    let refused = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(["certificate", "delete", "other", "--state-dir"])
        .arg(&gw.state)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("is in use by 'set service outbound certificate other'")
    );
    // Deleted while running: the self-signed one is served again without SNI.
    let out = drawbridge(&["certificate", "delete", "gw"], &gw.state);
    assert!(out.contains("deleted gw"), "{out}");
    assert!(!issuer(None).contains("ca test CA"), "{}", issuer(None));
    let shown = drawbridge(&["certificate", "show"], &gw.state);
    assert!(!shown.contains("gw: "), "{shown}");
}

/// `tls client-certificate`: a next hop that asks for client certificates (another
/// gateway with `tls client-ca-file`) gets ours, its key on our token, and verifies it;
/// before the setting it got none. The message is relayed either way.
#[test]
fn our_client_certificate_goes_to_a_next_hop_that_asks_for_one() {
    let dir = TempDir::new("certs-ours");
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "clients");
    make_leaf(
        &pki,
        "clients",
        "relay",
        "/CN=relay.example.org/O=Example",
        "subjectAltName=DNS:relay.example.org\nextendedKeyUsage=clientAuth,serverAuth\n",
    );
    let sink = Sink::start();
    let (next_dir, our_dir) = (dir.path().join("next"), dir.path().join("ours"));
    std::fs::create_dir_all(&next_dir).unwrap();
    std::fs::create_dir_all(&our_dir).unwrap();
    let next = Gateway::start(
        &next_dir,
        &format!(
            "set tls client-ca-file \"{}\"\nset route partner.example relay [127.0.0.1]:{}\n",
            pki.join("clients.pem").display(),
            sink.addr.port()
        ),
    );
    let gw = Gateway::start(
        &our_dir,
        &format!(
            "set route partner.example relay [127.0.0.1]:{}\n",
            next.inbound
        ),
    );
    send_to(&gw, &["bob@partner.example"]);
    sink.wait_for(1);
    next.wait_for_log("TLS connection established from unknown[127.0.0.1]");
    assert!(!next.log_text().contains("(client certificate"));

    import(&pki, "relay", &gw.state);
    let setting = dir.path().join("client.conf");
    std::fs::write(&setting, "set tls client-certificate relay\n").unwrap();
    let (ok, out, err) = gw.cli(&["config", "load", "merge", setting.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    send_to(&gw, &["carol@partner.example"]);
    sink.wait_for(2);
    next.wait_for_log("(client certificate ");
    let log = next.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("(client certificate "))
        .unwrap();
    assert!(line.contains("CN=relay.example.org"), "{line}");
    // Deleted from the store later: left out, and said so.
    drawbridge(&["certificate", "delete", "relay"], &gw.state);
    gw.wait_for_log(
        "tls client-certificate relay is not stored: next hops get no client certificate",
    );
}

/// A client certificate the store does not hold is refused at commit.
#[test]
fn a_client_certificate_not_stored_is_refused_at_commit() {
    let dir = TempDir::new("certs-ours-missing");
    let gw = Gateway::start(dir.path(), "");
    let setting = dir.path().join("client.conf");
    std::fs::write(&setting, "set tls client-certificate nowhere\n").unwrap();
    let (ok, out, err) = gw.cli(&["config", "load", "merge", setting.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("tls client-certificate nowhere")
            && err.contains("no certificate nowhere is stored"),
        "{err}"
    );
}
