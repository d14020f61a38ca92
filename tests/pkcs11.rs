//! The gateway with its keys in SoftHSM2, end to end: STARTTLS signed by a key that
//! exists only on the token (pkcs11-tool shows it never extractable), a restart that logs
//! in from the PIN file, a wrong PIN or a missing module that stops the start before
//! anything listens, imported certificate keys going into the token, and the `token`
//! commands. Each test has its own SoftHSM2 token directory and `softhsm2.conf`.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::softhsm::{PIN, SO_PIN, SoftHsm, list_objects};
use common::*;

/// A gateway whose token is `hsm`'s, with extra configuration lines.
fn start(dir: &TempDir, hsm: &SoftHsm, extra: &str) -> Gateway {
    let (inbound, outbound) = (free_port(), free_port());
    let config = write_config(dir, hsm, inbound, outbound, extra, PIN);
    Gateway::start_with_env(dir.path(), config, inbound, outbound, env(hsm))
}

fn env(hsm: &SoftHsm) -> Vec<(String, String)> {
    vec![("SOFTHSM2_CONF".to_string(), hsm.conf.display().to_string())]
}

fn write_config(
    dir: &TempDir,
    hsm: &SoftHsm,
    inbound: u16,
    outbound: u16,
    extra: &str,
    pin: &str,
) -> PathBuf {
    let pin_file = hsm.pin_file(pin);
    let config = dir.path().join("gateway.conf");
    let lines = format!("{}{extra}", hsm.config_lines(&pin_file));
    std::fs::write(&config, Gateway::config_text(inbound, outbound, &lines)).unwrap();
    config
}

/// Runs `drawbridge ARGS` with the token's environment; (success, stdout, stderr).
fn drawbridge(hsm: &SoftHsm, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(args)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The server's certificate, DER, as a STARTTLS client sees it (Python's ssl module).
fn starttls_certificate(port: u16) -> Vec<u8> {
    let out = python(&format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    s.ehlo("client.example.org")
    s.starttls(context=ctx)
    s.ehlo("client.example.org")
    print(s.sock.getpeercert(binary_form=True).hex())
"#
    ));
    let hex = out.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// OpenSSL's PEM form of the public key in a DER certificate.
fn certificate_public_key(dir: &Path, der: &[u8]) -> String {
    let path = dir.join("peer.der");
    std::fs::write(&path, der).unwrap();
    openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        path.to_str().unwrap(),
        "-pubkey",
        "-noout",
    ])
}

/// OpenSSL's PEM form of the public key object `label` on the token.
fn token_public_key(dir: &Path, hsm: &SoftHsm, label: &str) -> String {
    let path = dir.join(format!("{label}.pub.der"));
    hsm.pkcs11_tool(&[
        "--read-object",
        "--type",
        "pubkey",
        "--label",
        label,
        "--output-file",
        path.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-pubin",
        "-inform",
        "DER",
        "-in",
        path.to_str().unwrap(),
    ])
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn starttls_signs_with_a_server_key_that_exists_only_in_softhsm() {
    let dir = TempDir::new("p11-starttls");
    let hsm = SoftHsm::new("p11-starttls", "gateway", &[]);
    let sink = Sink::start();
    let gw = start(
        &dir,
        &hsm,
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{}\n",
            sink.addr.port()
        ),
    );
    gw.wait_for_log("logged in to token \"gateway\"");
    gw.wait_for_log("generated EcP256 key pair \"tls-0-self-signed\"");
    // Several handshakes, then a message over STARTTLS.
    let served = starttls_certificate(gw.inbound);
    for _ in 0..3 {
        assert_eq!(starttls_certificate(gw.inbound), served);
    }
    python(&format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    s.starttls(context=ctx)
    s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: hsm\r\n\r\nsigned in SoftHSM2\r\n")
"#,
        port = gw.inbound
    ));
    let messages = sink.wait_for(1);
    assert!(String::from_utf8_lossy(&messages[0].content).contains("with ESMTPS"));

    // The certificate's key is the token's key pair.
    assert_eq!(
        certificate_public_key(dir.path(), &served),
        token_public_key(dir.path(), &hsm, "tls-0-self-signed")
    );
    // pkcs11-tool shows the private key sensitive and never extractable.
    let objects = list_objects(&hsm.pkcs11_tool(&["--list-objects"]));
    let private = objects
        .iter()
        .find(|o| o.is_key() && o.label == "tls-0-self-signed")
        .unwrap_or_else(|| panic!("no private key on the token: {objects:#?}"));
    assert!(private.stays_on_token(), "{private:?}");
    assert!(
        private.access.iter().any(|a| a == "never extractable"),
        "{private:?}"
    );
    // Nothing in the state directory holds a key: no software token, an empty fallback.
    assert!(!gw.state.join("token").exists());
    let key_files: Vec<_> = files_under(&gw.state.join("token-fallback"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .collect();
    assert!(key_files.is_empty(), "{key_files:?}");
    // SoftHSM2 has no CKM_ECDSA_SHA256: the hash is computed here, logged once for
    // every handshake since.
    assert_eq!(
        gw.log_text()
            .matches("the module lacks CKM_ECDSA_SHA256")
            .count(),
        1
    );
}

#[test]
fn a_restart_logs_in_from_the_pin_file_and_keeps_the_key() {
    let dir = TempDir::new("p11-restart");
    let hsm = SoftHsm::new("p11-restart", "gateway", &[]);
    let mut gw = start(&dir, &hsm, "");
    let first = starttls_certificate(gw.inbound);
    gw.restart();
    gw.wait_for_log_count("logged in to token \"gateway\"", 2);
    assert_eq!(starttls_certificate(gw.inbound), first);
    assert_eq!(
        gw.log_text().matches("generated a self-signed one").count(),
        1
    );
    // Still one key pair on the token.
    let objects = list_objects(&hsm.pkcs11_tool(&["--list-objects"]));
    assert_eq!(
        objects
            .iter()
            .filter(|o| o.label == "tls-0-self-signed")
            .count(),
        2,
        "{objects:#?}"
    );
}

/// Starts the gateway expecting it to refuse; returns its exit success and log.
fn failed_start(dir: &TempDir, hsm: &SoftHsm, config: &Path) -> (bool, String) {
    let log = dir.path().join("failed.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--no-console")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the gateway did not stop: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.success(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn a_wrong_pin_or_a_missing_module_stops_the_start_before_anything_listens() {
    let dir = TempDir::new("p11-wrong-pin");
    let hsm = SoftHsm::new("p11-wrong-pin", "gateway", &[]);
    let (inbound, outbound) = (free_port(), free_port());
    let config = write_config(&dir, &hsm, inbound, outbound, "", "9999");
    let (ok, log) = failed_start(&dir, &hsm, &config);
    assert!(!ok);
    assert!(
        log.contains("cannot open the token")
            && log.contains("cannot log in to token \"gateway\"")
            && log.contains("PIN incorrect"),
        "{log}"
    );
    assert!(!log.contains("listening"), "{log}");
    assert!(TcpStream::connect(("127.0.0.1", inbound)).is_err());
    assert!(TcpStream::connect(("127.0.0.1", outbound)).is_err());
    // The state was not touched past the lock: no spool, no certificates.
    assert!(!dir.path().join("state/spool").exists());
    assert!(!dir.path().join("state/tls").exists());

    let config = dir.path().join("missing-module.conf");
    std::fs::write(
        &config,
        Gateway::config_text(
            inbound,
            outbound,
            "set system token backend pkcs11\nset system token module /nonexistent/libpkcs11.so\n",
        ),
    )
    .unwrap();
    let (ok, log) = failed_start(&dir, &hsm, &config);
    assert!(!ok);
    assert!(
        log.contains("cannot load PKCS#11 module /nonexistent/libpkcs11.so"),
        "{log}"
    );
    assert!(TcpStream::connect(("127.0.0.1", inbound)).is_err());
}

#[test]
fn imported_certificate_keys_go_into_the_token() {
    let dir = TempDir::new("p11-import");
    let hsm = SoftHsm::new("p11-import", "gateway", &[]);
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=mx.example.com",
        "-addext",
        "subjectAltName=DNS:mx.example.com",
        "-days",
        "30",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let (inbound, outbound) = (free_port(), free_port());
    let config = write_config(&dir, &hsm, inbound, outbound, "", PIN);
    let state = dir.path().join("state");
    let (ok, out, err) = drawbridge(
        &hsm,
        &[
            "certificate",
            "import",
            "mx",
            "--chain",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let objects = list_objects(&hsm.pkcs11_tool(&["--list-objects"]));
    let private = objects
        .iter()
        .find(|o| o.is_key() && o.label == "tls-mx")
        .unwrap_or_else(|| panic!("{objects:#?}"));
    assert!(private.stays_on_token(), "{private:?}");
    let gw = Gateway::start_with_env(dir.path(), config, inbound, outbound, env(&hsm));
    let served = starttls_certificate(gw.inbound);
    assert_eq!(
        certificate_public_key(dir.path(), &served),
        openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"])
    );
    // RSA keys sign with the module's own hash-and-sign mechanisms: no fallback.
    assert!(!gw.log_text().contains("the module lacks"));
}

#[test]
fn token_commands_show_check_the_pin_and_make_the_keys() {
    let dir = TempDir::new("p11-commands");
    let hsm = SoftHsm::new(
        "p11-commands",
        "gateway",
        &["CKM_EDDSA", "CKM_EC_EDWARDS_KEY_PAIR_GEN"],
    );
    let (inbound, outbound) = (free_port(), free_port());
    let config = write_config(&dir, &hsm, inbound, outbound, "", PIN);
    let state = dir.path().join("state");
    let args = |verb: &'static str| {
        [
            "token",
            verb,
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ]
        .map(str::to_string)
    };
    let run = |verb| {
        let a = args(verb);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        drawbridge(&hsm, &a)
    };

    let (ok, out, err) = run("show");
    assert!(ok, "{err}");
    let module = common::softhsm::module();
    for expected in [
        format!("module: {}", module.display()),
        "token: gateway (manufacturer SoftHSM project".to_string(),
        "ECDSA P-256 signatures: hardware (CKM_ECDSA; SHA-256 in software)".to_string(),
        "Ed25519 signatures: software (keys on the fallback software token: no CKM_EDDSA)"
            .to_string(),
        "HMAC-SHA-256: hardware (CKM_SHA256_HMAC)".to_string(),
        "random numbers: hardware (C_GenerateRandom)".to_string(),
    ] {
        assert!(out.contains(&expected), "{expected:?} in:\n{out}");
    }
    assert!(
        out.contains("CKM_ECDSA ") && !out.contains("CKM_EDDSA "),
        "{out}"
    );

    let (ok, out, err) = run("login");
    assert!(ok, "{err}");
    assert!(out.contains("logged in to token \"gateway\""), "{out}");
    assert!(out.contains("key tls-0-self-signed: missing"), "{out}");
    assert!(out.contains("key config-hmac: missing"), "{out}");

    let (ok, out, err) = run("init-key");
    assert!(ok, "{err}");
    assert!(
        out.contains("key tls-0-self-signed: generated (P-256)"),
        "{out}"
    );
    assert!(out.contains("key config-hmac: generated"), "{out}");
    let (ok, out, _) = run("init-key");
    assert!(ok);
    assert!(
        out.contains("key tls-0-self-signed: present") && out.contains("key config-hmac: present"),
        "{out}"
    );
    let (_, out, _) = run("login");
    assert!(
        out.contains("key config-hmac: present (GenericSecret)"),
        "{out}"
    );
    let objects = list_objects(&hsm.pkcs11_tool(&["--list-objects"]));
    for label in ["tls-0-self-signed", "config-hmac"] {
        let key = objects
            .iter()
            .find(|o| o.is_key() && o.label == label)
            .unwrap_or_else(|| panic!("{label}: {objects:#?}"));
        assert!(key.stays_on_token(), "{key:?}");
    }

    hsm.pin_file("0000");
    let (ok, _, err) = run("login");
    assert!(!ok);
    assert!(err.contains("PIN incorrect"), "{err}");
}

/// The configuration slots are HMAC'd with a secret key that lives on the token: the key
/// is listed there as never extractable, a commit made through the gateway is accepted
/// at the next start from the slots alone (the token is found from them, then checks
/// them), and the same slots under another token's key are refused.
#[test]
fn configuration_commits_are_hmacd_by_a_key_on_the_token() {
    let dir = TempDir::new("p11-config");
    let hsm = SoftHsm::new("p11-config", "gateway", &[]);
    let mut gw = start(&dir, &hsm, "");
    let edit = dir.path().join("edit.conf");
    std::fs::write(&edit, "set service inbound max-connections 77\n").unwrap();
    let (ok, out, err) = gw.cli(&["config", "load", "merge", edit.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let objects = list_objects(&hsm.pkcs11_tool(&["--list-objects"]));
    let key = objects
        .iter()
        .find(|o| o.label == "config-hmac" && o.heading.starts_with("Secret Key Object"))
        .unwrap_or_else(|| panic!("{objects:#?}"));
    assert!(key.stays_on_token(), "{key:?}");
    assert!(
        !files_under(&gw.state)
            .iter()
            .any(|p| p.to_string_lossy().contains("token-fallback")
                && p.to_string_lossy().contains("config-hmac")),
        "the HMAC key must not fall back to software"
    );

    // From the slots alone: the token is found, logs in and checks them.
    gw.restart_from_slots();
    gw.wait_for_log_count("logged in to token \"gateway\"", 2);
    let (_, shown, _) = gw.cli(&["config", "show"]);
    assert!(
        shown.contains("set service inbound max-connections 77"),
        "{shown}"
    );
    assert!(shown.contains("set system token backend pkcs11"), "{shown}");
    gw.kill();

    // Another token (a fresh SoftHSM2 with a new HMAC key) refuses every slot.
    hsm.util(&["--delete-token", "--token", "gateway"]);
    hsm.util(&[
        "--init-token",
        "--free",
        "--label",
        "gateway",
        "--so-pin",
        SO_PIN,
        "--pin",
        PIN,
    ]);
    let scan = dir.path().join("rescan.log");
    let status = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(["config", "history", "--state-dir"])
        .arg(&gw.state)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .stderr(std::fs::File::create(&scan).unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let said = std::fs::read_to_string(&scan).unwrap();
    assert!(status.success(), "{said}");
    assert!(said.contains("HMAC mismatch"), "{said}");
}

/// The console's `token login` and `token init-key` on the running gateway: login reports
/// the token logged in and the keys, init-key finds them present; a deleted certificate
/// is replaced by one whose key is made on the token, and STARTTLS serves it at once.
#[test]
fn console_token_commands_act_on_the_running_gateways_token() {
    let dir = TempDir::new("p11-console");
    let hsm = SoftHsm::new("p11-console", "gateway", &[]);
    let gw = start(&dir, &hsm, "");
    gw.wait_for_log("logged in to token \"gateway\"");
    let first = starttls_certificate(gw.inbound);

    let out = gw.console_script("token login\n");
    assert!(
        out.contains(
            "token \"gateway\" (SoftHSM project SoftHSM v2): logged in since the gateway started"
        ),
        "{out}"
    );
    assert!(
        out.contains("key tls-0-self-signed: present (EcP256)"),
        "{out}"
    );
    assert!(
        out.contains("key config-hmac: present (GenericSecret)"),
        "{out}"
    );

    let out = gw.console_script("token init-key\n");
    assert!(
        out.contains("key tls-0-self-signed: present") && out.contains("key config-hmac: present"),
        "{out}"
    );

    // A deleted certificate is replaced at once by one with a new key on the token.
    let out = gw.console_script("certificate delete 0-self-signed\ntoken login\n");
    assert!(out.contains("deleted 0-self-signed"), "{out}");
    assert!(
        out.contains("key tls-0-self-signed: present (EcP256)"),
        "{out}"
    );
    let served = starttls_certificate(gw.inbound);
    assert_ne!(served, first, "the new certificate is served");
    assert_eq!(
        certificate_public_key(dir.path(), &served),
        token_public_key(dir.path(), &hsm, "tls-0-self-signed")
    );
}

/// `token login` on a running gateway whose token is logged in checks the PIN file by a
/// login of its own in another process (a second login in the gateway's would be
/// answered without a check): a wrong PIN is reported, and the gateway stays logged in
/// and keeps signing; the right one is reported as opening the token.
#[test]
fn token_login_on_the_running_gateway_checks_the_pin_file_apart() {
    let dir = TempDir::new("p11-pin-check");
    let hsm = SoftHsm::new("p11-pin-check", "gateway", &[]);
    let gw = start(&dir, &hsm, "");
    gw.wait_for_log("logged in to token \"gateway\"");
    let first = starttls_certificate(gw.inbound);

    let out = gw.console_script("token login\n");
    assert!(
        out.contains("the PIN file's PIN opens it (checked by a login of its own"),
        "{out}"
    );

    hsm.pin_file("0000");
    let out = gw.console_script("token login\n");
    assert!(
        out.contains("the PIN file does not open the token")
            && out.contains("PIN incorrect")
            && out.contains("its next start would fail"),
        "{out}"
    );
    assert!(!out.contains("key tls-0-self-signed"), "{out}");
    // The gateway's own login is untouched: STARTTLS is still signed on the token.
    assert_eq!(starttls_certificate(gw.inbound), first);
    let out = gw.console_script("show token\n");
    assert!(out.contains("logged in"), "{out}");

    hsm.pin_file(PIN);
    let out = gw.console_script("token login\n");
    assert!(out.contains("the PIN file's PIN opens it"), "{out}");
    assert!(out.contains("key tls-0-self-signed: present"), "{out}");
}

/// `factory-reset` with the keys in SoftHSM2: each certificate's key and the
/// configuration's HMAC key are destroyed on the token; another application's key on the
/// same token stays.
#[test]
fn factory_reset_destroys_the_gateways_keys_on_the_token_and_no_others() {
    let dir = TempDir::new("p11-reset");
    let hsm = SoftHsm::new("p11-reset", "gateway", &[]);
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "other-app",
    ]);
    let gw = start(&dir, &hsm, "");
    gw.wait_for_log("logged in to token \"gateway\"");
    let labels = || -> Vec<String> {
        list_objects(&hsm.pkcs11_tool(&["--list-objects"]))
            .into_iter()
            .map(|o| o.label)
            .collect()
    };
    let before = labels();
    for label in ["tls-0-self-signed", "config-hmac", "other-app"] {
        assert!(before.iter().any(|l| l == label), "{label}: {before:?}");
    }
    let ours = before.iter().filter(|l| *l != "other-app").count();

    let out = gw.console_script("factory-reset\nyes\n");
    assert!(
        out.contains(&format!("({ours} on the token) erased; restarting")),
        "{out}"
    );
    gw.wait_for_log(&format!(
        "factory reset: {ours} object(s) destroyed on the token"
    ));
    gw.wait_for_log_count("message(s) recovered from the queue", 2);
    let after = labels();
    assert!(after.iter().all(|l| l == "other-app"), "{after:?}");
    assert_eq!(
        after.len(),
        before.len() - ours,
        "the other application's objects stay"
    );
}
