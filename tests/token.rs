//! The token against OpenSSL: certificates and requests the token signs must parse and verify there.

use std::path::{Path, PathBuf};
use std::process::Command;

use drawbridge::io::token::x509::{Subject, certificate_request, self_signed_certificate};
use drawbridge::io::token::{KeyKind, ObjectHandle, SoftToken, Token};

const RSA_PKCS8: &[u8] = include_bytes!("../src/io/token/testdata/rsa2048.pk8.der");
/// 2026-01-01T00:00:00Z to 2126-01-01T00:00:00Z.
const NOT_BEFORE: i64 = 1_767_225_600;
const NOT_AFTER: i64 = 4_922_899_200;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("drawbridge-it-token-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs openssl and returns its standard output; fails the test when it fails.
fn openssl(args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed on development and CI machines");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn key(token: &SoftToken, kind: Option<KeyKind>) -> ObjectHandle {
    match kind {
        Some(kind) => token.generate_key_pair(kind, "server").unwrap().0,
        None => token.import_private_key("server", RSA_PKCS8).unwrap().0,
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn check_with_openssl(name: &str, kind: Option<KeyKind>, algorithm: &str) {
    let dir = TempDir::new(name);
    let token =
        SoftToken::init_with_iterations(&dir.0.join("token"), "gateway", None, "1234", 10).unwrap();
    token.login("1234").unwrap();
    let key = key(&token, kind);
    let subject = Subject {
        common_name: "mail.example.test".to_string(),
        dns_names: vec![
            "mail.example.test".to_string(),
            "mx.example.test".to_string(),
        ],
    };

    let cert = self_signed_certificate(&token, key, &subject, NOT_BEFORE, NOT_AFTER).unwrap();
    let der_path = dir.0.join("cert.der");
    let pem_path = dir.0.join("cert.pem");
    std::fs::write(&der_path, &cert).unwrap();
    let text = openssl(&[
        "x509",
        "-in",
        path_str(&der_path),
        "-inform",
        "DER",
        "-noout",
        "-text",
    ]);
    assert!(text.contains("Version: 3"), "{text}");
    assert!(text.contains("Subject: CN = mail.example.test"), "{text}");
    assert!(text.contains("Issuer: CN = mail.example.test"), "{text}");
    assert!(
        text.contains("DNS:mail.example.test, DNS:mx.example.test"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(
        text.contains("Not Before: Jan  1 00:00:00 2026 GMT"),
        "{text}"
    );
    assert!(
        text.contains("Not After : Jan  1 00:00:00 2126 GMT"),
        "{text}"
    );
    assert!(text.contains(algorithm), "{text}");
    openssl(&[
        "x509",
        "-in",
        path_str(&der_path),
        "-inform",
        "DER",
        "-out",
        path_str(&pem_path),
    ]);
    // The certificate's signature checks out under its own key.
    let verified = openssl(&[
        "verify",
        "-check_ss_sig",
        "-partial_chain",
        "-CAfile",
        path_str(&pem_path),
        path_str(&pem_path),
    ]);
    assert!(verified.contains(": OK"), "{verified}");
    // And its public key is the token's.
    let pubkey_path = dir.0.join("pub.der");
    openssl(&[
        "x509",
        "-in",
        path_str(&pem_path),
        "-noout",
        "-pubkey",
        "-out",
        path_str(&dir.0.join("pub.pem")),
    ]);
    openssl(&[
        "pkey",
        "-pubin",
        "-in",
        path_str(&dir.0.join("pub.pem")),
        "-outform",
        "DER",
        "-out",
        path_str(&pubkey_path),
    ]);
    assert_eq!(
        std::fs::read(&pubkey_path).unwrap(),
        token.public_key(key).unwrap().der
    );

    let csr = certificate_request(&token, key, &subject).unwrap();
    let csr_path = dir.0.join("req.der");
    std::fs::write(&csr_path, &csr).unwrap();
    let text = openssl(&[
        "req",
        "-in",
        path_str(&csr_path),
        "-inform",
        "DER",
        "-verify",
        "-noout",
        "-text",
    ]);
    assert!(
        text.contains("verify OK") || text.contains("Certificate request self-signature verify OK"),
        "{text}"
    );
    assert!(text.contains("Subject: CN = mail.example.test"), "{text}");
    assert!(
        text.contains("DNS:mail.example.test, DNS:mx.example.test"),
        "{text}"
    );
}

#[test]
fn p256_certificate_and_request_verify_in_openssl() {
    check_with_openssl("p256", Some(KeyKind::EcP256), "ecdsa-with-SHA256");
}

#[test]
fn ed25519_certificate_and_request_verify_in_openssl() {
    check_with_openssl("ed25519", Some(KeyKind::Ed25519), "ED25519");
}

#[test]
fn rsa_certificate_and_request_verify_in_openssl() {
    check_with_openssl("rsa", None, "sha256WithRSAEncryption");
}
