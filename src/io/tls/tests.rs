//! Loopback tests of the TLS layer: our client against our server over real TCP, certificates made by OpenSSL.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::*;
use crate::io::tls::config::certified_key;
use crate::io::token::x509::{Subject, self_signed_certificate};
use crate::io::token::{KeyKind, SoftToken, Token};

const TIMEOUT: Duration = Duration::from_secs(20);
/// 2026-01-01T00:00:00Z, and a hundred years on: valid whenever the tests run.
const NOT_BEFORE: i64 = 1_767_225_600;
const NOT_AFTER: i64 = 4_922_899_200;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("drawbridge-tls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn test_token(dir: &Path) -> Arc<dyn Token> {
    let token =
        SoftToken::init_with_iterations(&dir.join("token"), "test", None, "1234", 10).unwrap();
    token.login("1234").unwrap();
    Arc::new(token)
}

/// A P-256 key on the token and a self-signed certificate for `name`.
fn token_certificate(token: &Arc<dyn Token>, name: &str) -> Certificate {
    let (key, _) = token
        .generate_key_pair(KeyKind::EcP256, &format!("key-{name}"))
        .unwrap();
    let subject = Subject {
        common_name: name.to_string(),
        dns_names: vec![name.to_string()],
    };
    let der = self_signed_certificate(&**token, key, &subject, NOT_BEFORE, NOT_AFTER).unwrap();
    Certificate {
        name: name.to_string(),
        names: vec![name.to_string()],
        chain: vec![der],
        key,
    }
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A CA (`<name>.pem`, `<name>.key`) made by `openssl req -x509`.
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
            "3650",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// A certificate `<name>.pem` with key `<name>.key`, signed by CA `ca`, with `extensions`.
fn make_signed(dir: &Path, name: &str, subject: &str, ca: &str, extensions: &str) {
    fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
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
            "365",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn der_of(dir: &Path, pem_file: &str) -> Vec<u8> {
    CertificateDer::from_pem_file(dir.join(pem_file))
        .unwrap()
        .as_ref()
        .to_vec()
}

fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    let executor = smol::LocalExecutor::new();
    smol::block_on(executor.run(future))
}

/// A connected pair of plain transports over loopback: (server, client).
async fn pair() -> (Transport, Transport) {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let address = listener.get_ref().local_addr().unwrap();
    let (accepted, connected) =
        smol::future::zip(listener.accept(), Async::<TcpStream>::connect(address)).await;
    (
        Transport::Plain(accepted.unwrap().0),
        Transport::Plain(connected.unwrap()),
    )
}

type Handshakes = (Result<Transport, TlsError>, Result<Transport, TlsError>);

async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Handshakes {
    let (s, c) = pair().await;
    smol::future::zip(
        s.accept_tls(server, TIMEOUT),
        c.connect_tls(client, name, TIMEOUT),
    )
    .await
}

async fn read_exactly(transport: &mut Transport, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < len {
        let n = transport.read(&mut buf).await.unwrap();
        assert_ne!(n, 0, "early end of stream after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Sends a line each way, then closes from the client; returns both ends' TLS info.
async fn exchange(server: &mut Transport, client: &mut Transport) -> (Info, Info) {
    client.write_all(b"EHLO client.test\r\n").await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(read_exactly(server, 18).await, b"EHLO client.test\r\n");
    // More than one TLS record (16 KiB), less than any loopback socket buffer: the
    // client reads only after the server has written it all.
    let big = vec![b'x'; 40_000];
    server.write_all(&big).await.unwrap();
    server.write_all(b"250 ok\r\n").await.unwrap();
    server.flush().await.unwrap();
    let got = read_exactly(client, big.len() + 8).await;
    assert!(got.ends_with(b"250 ok\r\n"));
    client.close().await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    (server.tls_info().unwrap(), client.tls_info().unwrap())
}

fn client_trusting(roots: Vec<Vec<u8>>, versions: Versions) -> Arc<ClientConfig> {
    client_config(
        &ClientSettings {
            extra_roots: roots,
            verify: Verify::Full,
            versions,
        },
        None,
    )
    .unwrap()
}

const TLS12_ONLY: Versions = Versions {
    tls12: true,
    tls13: false,
};
const TLS13_ONLY: Versions = Versions {
    tls12: false,
    tls13: true,
};

#[test]
fn tls13_and_tls12_carry_data_both_ways() {
    let dir = TempDir::new("versions");
    let token = test_token(&dir.0);
    let certificate = token_certificate(&token, "mx.example.test");
    let root = certificate.chain[0].clone();
    for (versions, version) in [(Versions::default(), "TLSv1.3"), (TLS12_ONLY, "TLSv1.2")] {
        let server = server_config(
            &ServerSettings {
                versions,
                certificates: vec![certificate.clone()],
                ..ServerSettings::default()
            },
            Arc::clone(&token),
        )
        .unwrap();
        let client = client_trusting(vec![root.clone()], Versions::default());
        run(async {
            let (s, c) = handshake(server, client, "mx.example.test").await;
            let (mut s, mut c) = (s.unwrap(), c.unwrap());
            let (server_info, client_info) = exchange(&mut s, &mut c).await;
            assert_eq!(server_info.version, version);
            assert_eq!(client_info.version, version);
            assert_eq!(server_info.cipher_suite, client_info.cipher_suite);
            if version == "TLSv1.3" {
                assert!(server_info.cipher_suite.starts_with("TLS13_"));
            } else {
                assert!(server_info.cipher_suite.starts_with("TLS_ECDHE_ECDSA_"));
            }
            assert_eq!(client_info.peer_certificate.as_deref(), Some(&root[..]));
            assert_eq!(server_info.peer_certificate, None);
            assert_eq!(server_info.client_subject, None);
        });
    }
}

#[test]
fn one_byte_reads_see_every_byte() {
    let dir = TempDir::new("onebyte");
    let token = test_token(&dir.0);
    let certificate = token_certificate(&token, "mx.example.test");
    let root = certificate.chain[0].clone();
    let server = server_config(
        &ServerSettings {
            certificates: vec![certificate],
            ..ServerSettings::default()
        },
        token,
    )
    .unwrap();
    let client = client_trusting(vec![root], Versions::default());
    run(async {
        let (s, c) = handshake(server, client, "mx.example.test").await;
        let (mut s, mut c) = (s.unwrap(), c.unwrap());
        let message: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        // Written in uneven pieces, read one byte at a time.
        for piece in message.chunks(7) {
            c.write_all(piece).await.unwrap();
        }
        c.flush().await.unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while got.len() < message.len() {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1);
            got.push(byte[0]);
        }
        assert_eq!(got, message);
        // A peer that vanishes without close_notify is an error, not a clean end.
        c.socket()
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        assert_eq!(
            s.read(&mut byte).await.unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    });
}

#[test]
fn version_mismatch_fails_cleanly() {
    let dir = TempDir::new("mismatch");
    let token = test_token(&dir.0);
    let certificate = token_certificate(&token, "mx.example.test");
    let root = certificate.chain[0].clone();
    let server = server_config(
        &ServerSettings {
            versions: TLS13_ONLY,
            certificates: vec![certificate],
            ..ServerSettings::default()
        },
        token,
    )
    .unwrap();
    let client = client_trusting(vec![root], TLS12_ONLY);
    run(async {
        let (s, c) = handshake(server, client, "mx.example.test").await;
        assert!(matches!(s, Err(TlsError::Handshake(_))), "{:?}", s.err());
        assert!(c.err().unwrap().is_peer_fault());
    });
}

#[test]
fn cipher_suite_restriction_is_honoured() {
    let dir = TempDir::new("suites");
    let token = test_token(&dir.0);
    let certificate = token_certificate(&token, "mx.example.test");
    let root = certificate.chain[0].clone();
    for suite in [
        "TLS13_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ] {
        let server = server_config(
            &ServerSettings {
                cipher_suites: Some(vec![suite.to_string()]),
                certificates: vec![certificate.clone()],
                ..ServerSettings::default()
            },
            Arc::clone(&token),
        )
        .unwrap();
        let client = client_trusting(vec![root.clone()], Versions::default());
        run(async {
            let (s, c) = handshake(server, client, "mx.example.test").await;
            let (s, c) = (s.unwrap(), c.unwrap());
            assert_eq!(s.tls_info().unwrap().cipher_suite, suite);
            assert_eq!(c.tls_info().unwrap().cipher_suite, suite);
        });
    }
    let unknown = ServerSettings {
        cipher_suites: Some(vec!["TLS_RSA_WITH_RC4_128_MD5".to_string()]),
        certificates: vec![certificate],
        ..ServerSettings::default()
    };
    assert_eq!(
        server_config(&unknown, token).unwrap_err(),
        TlsError::UnknownCipherSuite("TLS_RSA_WITH_RC4_128_MD5".to_string())
    );
}

#[test]
fn sni_picks_the_certificate() {
    let dir = TempDir::new("sni");
    let token = test_token(&dir.0);
    let a = token_certificate(&token, "a.test");
    let b = token_certificate(&token, "b.test");
    let mut wildcard = token_certificate(&token, "w.example.test");
    wildcard.names = vec!["*.example.test".to_string()];
    let server = server_config(
        &ServerSettings {
            certificates: vec![a.clone(), b.clone(), wildcard.clone()],
            ..ServerSettings::default()
        },
        token,
    )
    .unwrap();
    // No verification: the point is which leaf the server sends.
    let client = client_config(
        &ClientSettings {
            verify: Verify::DangerNone,
            ..ClientSettings::default()
        },
        None,
    )
    .unwrap();
    for (name, expected) in [
        ("a.test", &a),
        ("B.TEST", &b),
        ("anything.example.test", &wildcard),
        ("unknown.test", &a),
    ] {
        run(async {
            let (s, c) = handshake(Arc::clone(&server), Arc::clone(&client), name).await;
            s.unwrap();
            let info = c.unwrap().tls_info().unwrap();
            assert_eq!(
                info.peer_certificate.as_deref(),
                Some(&expected.chain[0][..]),
                "{name}"
            );
        });
    }
}

#[test]
fn full_verification_checks_the_host_name() {
    let dir = TempDir::new("hostname");
    let token = test_token(&dir.0);
    let certificate = token_certificate(&token, "a.test");
    let root = certificate.chain[0].clone();
    let server = server_config(
        &ServerSettings {
            certificates: vec![certificate],
            ..ServerSettings::default()
        },
        token,
    )
    .unwrap();
    run(async {
        let (_, c) = handshake(
            Arc::clone(&server),
            client_trusting(vec![root.clone()], Versions::default()),
            "other.test",
        )
        .await;
        assert!(matches!(c, Err(TlsError::Handshake(_))));
        // Without the extra root the self-signed certificate is not trusted.
        let (_, c) = handshake(
            server,
            client_trusting(vec![], Versions::default()),
            "a.test",
        )
        .await;
        assert!(matches!(c, Err(TlsError::Handshake(_))));
    });
}

/// A rustls client presenting `<name>.pem` / `<name>.key` from `dir`.
fn client_with_certificate(dir: &Path, name: &str, root: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(root.to_vec())).unwrap();
    let chain = vec![CertificateDer::from_pem_file(dir.join(format!("{name}.pem"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

#[test]
fn client_certificates_are_requested_and_verified() {
    let dir = TempDir::new("clientauth");
    let token = test_token(&dir.0);
    make_ca(&dir.0, "ca");
    make_ca(&dir.0, "other-ca");
    let extensions = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nsubjectAltName=email:user@example.com\n";
    make_signed(&dir.0, "alice", "/O=Example/CN=alice", "ca", extensions);
    make_signed(&dir.0, "mallory", "/CN=mallory", "other-ca", extensions);
    let certificate = token_certificate(&token, "mx.example.test");
    let root = certificate.chain[0].clone();
    for versions in [Versions::default(), TLS12_ONLY] {
        let server = server_config(
            &ServerSettings {
                versions,
                certificates: vec![certificate.clone()],
                client_cas: vec![der_of(&dir.0, "ca.pem")],
                ..ServerSettings::default()
            },
            Arc::clone(&token),
        )
        .unwrap();
        run(async {
            let alice = client_with_certificate(&dir.0, "alice", &root);
            let (s, c) = handshake(Arc::clone(&server), alice, "mx.example.test").await;
            let (mut s, mut c) = (s.unwrap(), c.unwrap());
            let (info, _) = exchange(&mut s, &mut c).await;
            assert_eq!(info.client_subject.as_deref(), Some("CN=alice,O=Example"));
            assert_eq!(info.client_common_name.as_deref(), Some("alice"));
            assert_eq!(info.client_emails, vec!["user@example.com".to_string()]);
            assert_eq!(info.peer_certificate, Some(der_of(&dir.0, "alice.pem")));

            let mallory = client_with_certificate(&dir.0, "mallory", &root);
            let (s, _) = handshake(Arc::clone(&server), mallory, "mx.example.test").await;
            assert!(matches!(s, Err(TlsError::Handshake(_))), "{:?}", s.err());

            let anonymous = client_trusting(vec![root.clone()], Versions::default());
            let (s, c) = handshake(Arc::clone(&server), anonymous, "mx.example.test").await;
            let (mut s, mut c) = (s.unwrap(), c.unwrap());
            let (info, _) = exchange(&mut s, &mut c).await;
            assert_eq!(info.peer_certificate, None);
            assert_eq!(info.client_subject, None);
            assert!(info.client_emails.is_empty());
        });
    }
}

/// Our client's certificate, its key on the token, goes to a server that asks for one
/// (verified or not, as the route says); a server that does not ask gets none.
#[test]
fn our_client_presents_its_token_certificate_when_asked() {
    let dir = TempDir::new("client-identity");
    let token = test_token(&dir.0);
    let server_certificate = token_certificate(&token, "mx.example.test");
    let ours = token_certificate(&token, "relay.example.test");
    let identity = certified_key(&ours, Arc::clone(&token)).unwrap();
    let asking = server_config(
        &ServerSettings {
            certificates: vec![server_certificate.clone()],
            client_cas: vec![ours.chain[0].clone()],
            ..ServerSettings::default()
        },
        Arc::clone(&token),
    )
    .unwrap();
    let not_asking = server_config(
        &ServerSettings {
            certificates: vec![server_certificate.clone()],
            ..ServerSettings::default()
        },
        Arc::clone(&token),
    )
    .unwrap();
    for verify in [Verify::Full, Verify::DangerNone] {
        let client = client_config(
            &ClientSettings {
                extra_roots: vec![server_certificate.chain[0].clone()],
                verify,
                ..ClientSettings::default()
            },
            Some(Arc::clone(&identity)),
        )
        .unwrap();
        run(async {
            let (s, c) =
                handshake(Arc::clone(&asking), Arc::clone(&client), "mx.example.test").await;
            let (mut s, mut c) = (s.unwrap(), c.unwrap());
            let (info, _) = exchange(&mut s, &mut c).await;
            assert_eq!(
                info.client_subject.as_deref(),
                Some("CN=relay.example.test")
            );
            assert_eq!(info.peer_certificate.as_ref(), Some(&ours.chain[0]));

            let (s, c) = handshake(Arc::clone(&not_asking), client, "mx.example.test").await;
            let (mut s, mut c) = (s.unwrap(), c.unwrap());
            let (info, _) = exchange(&mut s, &mut c).await;
            assert_eq!(info.peer_certificate, None);
        });
    }
}

#[test]
fn handshake_times_out_against_a_silent_peer() {
    let dir = TempDir::new("timeout");
    let token = test_token(&dir.0);
    let server = server_config(
        &ServerSettings {
            certificates: vec![token_certificate(&token, "mx.example.test")],
            ..ServerSettings::default()
        },
        token,
    )
    .unwrap();
    run(async {
        let (s, _c) = pair().await;
        let result = s.accept_tls(server, Duration::from_millis(50)).await;
        let error = result.err().unwrap();
        assert_eq!(error, TlsError::Timeout);
        assert!(error.is_peer_fault());
    });
}

/// Behind a load balancer the first octets of the ClientHello may come in the read that
/// took the PROXY header: the handshake starts from them, then reads the socket.
#[test]
fn a_handshake_begins_with_octets_read_before_it() {
    let dir = TempDir::new("already-read");
    let token = test_token(&dir.0);
    let certificate = token_certificate(&token, "mx.example.test");
    let root = certificate.chain[0].clone();
    let server = server_config(
        &ServerSettings {
            certificates: vec![certificate],
            ..ServerSettings::default()
        },
        Arc::clone(&token),
    )
    .unwrap();
    let client = client_trusting(vec![root], Versions::default());
    for first in [1, 5, 40] {
        run(async {
            let (s, c) = pair().await;
            let Transport::Plain(socket) = s else {
                unreachable!()
            };
            let accept = async {
                // Part of the ClientHello, read as a PROXY header's reader would.
                let mut already_read = vec![0u8; first];
                smol::io::AsyncReadExt::read_exact(&mut &socket, &mut already_read)
                    .await
                    .unwrap();
                assert_eq!(already_read[0], 0x16, "a TLS handshake record");
                Transport::Plain(socket)
                    .accept_tls_after(Arc::clone(&server), TIMEOUT, already_read)
                    .await
            };
            let (s, c) = smol::future::zip(
                accept,
                c.connect_tls(client.clone(), "mx.example.test", TIMEOUT),
            )
            .await;
            let (mut s, mut c) = (s.unwrap(), c.unwrap());
            let (server_info, client_info) = exchange(&mut s, &mut c).await;
            assert_eq!(server_info.version, client_info.version);
        });
    }
}

#[test]
fn plain_bytes_are_a_handshake_error_not_a_panic() {
    let dir = TempDir::new("garbage");
    let token = test_token(&dir.0);
    let server = server_config(
        &ServerSettings {
            certificates: vec![token_certificate(&token, "mx.example.test")],
            ..ServerSettings::default()
        },
        token,
    )
    .unwrap();
    run(async {
        let (s, mut c) = pair().await;
        c.write_all(b"EHLO plain.test\r\n").await.unwrap();
        let result = s.accept_tls(server, TIMEOUT).await;
        assert!(matches!(result, Err(TlsError::Handshake(_))));
        assert!(c.tls_info().is_none());
    });
}

#[test]
fn store_makes_a_self_signed_certificate_once() {
    let dir = TempDir::new("selfsigned");
    let token = test_token(&dir.0);
    let store = CertStore::open(&dir.0.join("tls"), Arc::clone(&token)).unwrap();
    let made = store
        .ensure_self_signed("mail.example.test", NOT_BEFORE)
        .unwrap()
        .unwrap();
    assert_eq!(made.names, vec!["mail.example.test".to_string()]);
    assert_eq!(
        made.not_after,
        NOT_BEFORE + store::SELF_SIGNED_LIFETIME_SECONDS
    );
    let der_path = dir
        .0
        .join("tls")
        .join(store::SELF_SIGNED_NAME)
        .join("0.der");
    let text = openssl(
        &dir.0,
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            der_path.to_str().unwrap(),
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-fingerprint",
            "-sha256",
        ],
    );
    assert!(text.contains("CN = mail.example.test"), "{text}");
    assert!(text.contains("DNS:mail.example.test"), "{text}");
    assert!(text.contains(&made.fingerprint_sha256), "{text}");
    assert_eq!(
        store.ensure_self_signed("other.test", NOT_BEFORE).unwrap(),
        None
    );
    assert_eq!(store.list().unwrap(), vec![made.clone()]);
    // It serves.
    let server = server_config(
        &ServerSettings {
            certificates: store.settings_certificates().unwrap(),
            ..ServerSettings::default()
        },
        token,
    )
    .unwrap();
    let client = client_trusting(vec![fs::read(&der_path).unwrap()], Versions::default());
    run(async {
        let (s, c) = handshake(server, client, "mail.example.test").await;
        s.unwrap();
        c.unwrap();
    });
}

#[test]
fn store_imports_pem_chains_and_refuses_bad_ones() {
    let dir = TempDir::new("import");
    let token = test_token(&dir.0);
    let store = CertStore::open(&dir.0.join("tls"), Arc::clone(&token)).unwrap();
    make_ca(&dir.0, "root");
    make_signed(
        &dir.0,
        "intermediate",
        "/CN=Intermediate",
        "root",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    make_signed(
        &dir.0,
        "leaf",
        "/CN=mx.example.test",
        "intermediate",
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:mx.example.test,DNS:smtp.example.test\n",
    );
    let read = |file: &str| fs::read_to_string(dir.0.join(file)).unwrap();
    let chain = format!(
        "{}{}{}",
        read("leaf.pem"),
        read("intermediate.pem"),
        read("root.pem")
    );
    // The key of another certificate is refused, and leaves nothing behind.
    assert_eq!(
        store.import_pem("mx", &chain, &read("root.key")),
        Err(TlsError::KeyMismatch)
    );
    assert!(store.list().unwrap().is_empty());
    assert!(token.find_objects("tls-mx").is_empty());
    assert!(read("leaf.key").starts_with("-----BEGIN PRIVATE KEY-----"));
    let stored = store.import_pem("mx", &chain, &read("leaf.key")).unwrap();
    assert_eq!(
        stored.names,
        vec![
            "mx.example.test".to_string(),
            "smtp.example.test".to_string()
        ]
    );
    assert_eq!(
        store.import_pem("mx", &chain, &read("leaf.key")),
        Err(TlsError::CertificateExists)
    );
    let stored_files: Vec<_> = (0..3)
        .map(|i| fs::read(dir.0.join("tls/mx").join(format!("{i}.der"))).unwrap())
        .collect();
    assert_eq!(stored_files[0], der_of(&dir.0, "leaf.pem"));
    assert_eq!(stored_files[2], der_of(&dir.0, "root.pem"));
    // No key material on disk outside the token.
    for i in 0..3 {
        assert!(
            !fs::read_to_string(dir.0.join("tls/mx").join(format!("{i}.der")))
                .is_ok_and(|t| t.contains("PRIVATE"))
        );
    }

    // Serves its chain: a client trusting only the root verifies it.
    let server = server_config(
        &ServerSettings {
            certificates: store.settings_certificates().unwrap(),
            ..ServerSettings::default()
        },
        Arc::clone(&token),
    )
    .unwrap();
    let client = client_trusting(vec![der_of(&dir.0, "root.pem")], Versions::default());
    run(async {
        let (s, c) = handshake(server, client, "smtp.example.test").await;
        s.unwrap();
        c.unwrap();
    });

    // SEC 1 and PKCS#1 keys are converted.
    openssl(&dir.0, &["ec", "-in", "leaf.key", "-out", "leaf.sec1"]);
    assert!(read("leaf.sec1").starts_with("-----BEGIN EC PRIVATE KEY-----"));
    store.remove("mx").unwrap();
    store.import_pem("mx", &chain, &read("leaf.sec1")).unwrap();
    openssl(
        &dir.0,
        &["genrsa", "-traditional", "-out", "rsa.key", "2048"],
    );
    openssl(
        &dir.0,
        &[
            "req",
            "-x509",
            "-key",
            "rsa.key",
            "-out",
            "rsa.pem",
            "-days",
            "30",
            "-subj",
            "/CN=rsa.test",
            "-addext",
            "subjectAltName=DNS:rsa.test",
        ],
    );
    assert!(read("rsa.key").starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    store
        .import_pem("rsa", &read("rsa.pem"), &read("rsa.key"))
        .unwrap();
    assert_eq!(store.list().unwrap().len(), 2);
    assert_eq!(
        store.import_pem("bad name", &chain, &read("leaf.key")),
        Err(TlsError::InvalidName)
    );
    assert!(matches!(
        store.import_pem("nokey", &chain, ""),
        Err(TlsError::Pem(_))
    ));
}

#[test]
fn store_holds_at_most_five_certificates() {
    let dir = TempDir::new("five");
    let token = test_token(&dir.0);
    let store = CertStore::open(&dir.0.join("tls"), Arc::clone(&token)).unwrap();
    for i in 0..=store::MAX_CERTIFICATES {
        let name = format!("c{i}");
        openssl(
            &dir.0,
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
                &format!("/CN={name}.test"),
            ],
        );
        let result = store.import_pem(
            &name,
            &fs::read_to_string(dir.0.join(format!("{name}.pem"))).unwrap(),
            &fs::read_to_string(dir.0.join(format!("{name}.key"))).unwrap(),
        );
        if i < store::MAX_CERTIFICATES {
            assert_eq!(result.unwrap().names, vec![format!("{name}.test")]);
        } else {
            assert_eq!(result, Err(TlsError::TooManyCertificates));
            assert!(token.find_objects(&format!("tls-{name}")).is_empty());
        }
    }
    let certificates = store.settings_certificates().unwrap();
    assert_eq!(certificates.len(), store::MAX_CERTIFICATES);
    assert_eq!(certificates[0].names, vec!["c0.test".to_string()]);
    assert!(
        server_config(
            &ServerSettings {
                certificates,
                ..ServerSettings::default()
            },
            token
        )
        .is_ok()
    );
    assert_eq!(
        store.ensure_self_signed("x.test", NOT_BEFORE).unwrap(),
        None
    );
}

#[test]
fn certificate_requests_verify_with_openssl() {
    let dir = TempDir::new("csr");
    let token = test_token(&dir.0);
    let store = CertStore::open(&dir.0.join("tls"), token).unwrap();
    store
        .ensure_self_signed("mail.example.test", NOT_BEFORE)
        .unwrap();
    let csr = store.request(store::SELF_SIGNED_NAME).unwrap();
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    fs::write(dir.0.join("req.pem"), &csr).unwrap();
    let text = openssl(
        &dir.0,
        &[
            "req", "-in", "req.pem", "-noout", "-verify", "-subject", "-text",
        ],
    );
    assert!(text.contains("verify OK"), "{text}");
    assert!(text.contains("CN = mail.example.test"), "{text}");
    assert!(text.contains("DNS:mail.example.test"), "{text}");
    assert_eq!(store.request("absent"), Err(TlsError::NoSuchCertificate));
}

#[test]
fn first_boot_makes_a_private_pin_file_and_reuses_it() {
    let dir = TempDir::new("pin");
    let state = dir.0.join("state");
    let token = open_soft_token(&state, "drawbridge").unwrap();
    let pin_path = state.join(PIN_FILE);
    let mode = fs::metadata(&pin_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = fs::read_to_string(&pin_path).unwrap();
    let pin = text.trim_end().strip_prefix("drawbridge:").unwrap();
    assert_eq!(pin.len(), 32);
    assert!(pin.bytes().all(|b| b.is_ascii_hexdigit()));
    token
        .generate_key_pair(KeyKind::EcP256, "tls-kept")
        .unwrap();
    drop(token);

    let again = open_soft_token(&state, "drawbridge").unwrap();
    assert_eq!(fs::read_to_string(&pin_path).unwrap(), text);
    assert!(again.info().logged_in);
    assert_eq!(again.find_objects("tls-kept").len(), 2);
    assert!(matches!(
        open_soft_token(&state, "other"),
        Err(TlsError::Pin(_))
    ));
    fs::remove_file(&pin_path).unwrap();
    assert!(matches!(
        open_soft_token(&state, "drawbridge"),
        Err(TlsError::Pin(_))
    ));
}

/// A token whose signatures wait, on the signing thread, until the test lets them go:
/// a handshake that signed on the executor would stall it, and the test would see that.
struct Gated {
    inner: Arc<dyn Token>,
    entered: smol::channel::Sender<()>,
    go: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Token for Gated {
    fn info(&self) -> crate::io::token::TokenInfo {
        self.inner.info()
    }
    fn mechanisms(&self) -> Vec<crate::io::token::Mechanism> {
        self.inner.mechanisms()
    }
    fn login(&self, pin: &str) -> Result<(), TokenError> {
        self.inner.login(pin)
    }
    fn logout(&self) {
        self.inner.logout()
    }
    fn find_objects(&self, label: &str) -> Vec<crate::io::token::ObjectHandle> {
        self.inner.find_objects(label)
    }
    fn object_info(
        &self,
        h: crate::io::token::ObjectHandle,
    ) -> Result<crate::io::token::ObjectInfo, TokenError> {
        self.inner.object_info(h)
    }
    fn generate_key_pair(
        &self,
        kind: KeyKind,
        label: &str,
    ) -> Result<
        (
            crate::io::token::ObjectHandle,
            crate::io::token::ObjectHandle,
        ),
        TokenError,
    > {
        self.inner.generate_key_pair(kind, label)
    }
    fn import_private_key(
        &self,
        label: &str,
        der: &[u8],
    ) -> Result<
        (
            crate::io::token::ObjectHandle,
            crate::io::token::ObjectHandle,
        ),
        TokenError,
    > {
        self.inner.import_private_key(label, der)
    }
    fn generate_secret(
        &self,
        label: &str,
        len: usize,
    ) -> Result<crate::io::token::ObjectHandle, TokenError> {
        self.inner.generate_secret(label, len)
    }
    fn import_secret(
        &self,
        label: &str,
        s: &[u8],
    ) -> Result<crate::io::token::ObjectHandle, TokenError> {
        self.inner.import_secret(label, s)
    }
    fn hmac_sha256(
        &self,
        key: crate::io::token::ObjectHandle,
        data: &[u8],
    ) -> Result<[u8; 32], TokenError> {
        self.inner.hmac_sha256(key, data)
    }
    fn public_key(
        &self,
        h: crate::io::token::ObjectHandle,
    ) -> Result<crate::io::token::PublicKeyInfo, TokenError> {
        self.inner.public_key(h)
    }
    fn sign(
        &self,
        h: crate::io::token::ObjectHandle,
        m: crate::io::token::Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        self.entered
            .send_blocking(())
            .map_err(|_| TokenError::Crypto)?;
        let go = self.go.lock().unwrap().recv_timeout(TIMEOUT);
        go.map_err(|_| TokenError::Device("never let go".to_string()))?;
        self.inner.sign(h, m, data)
    }
    fn digest_sha256(&self, data: &[u8]) -> [u8; 32] {
        self.inner.digest_sha256(data)
    }
    fn random(&self, buf: &mut [u8]) -> Result<(), TokenError> {
        self.inner.random(buf)
    }
    fn destroy(&self, h: crate::io::token::ObjectHandle) -> Result<(), TokenError> {
        self.inner.destroy(h)
    }
    fn blocks(&self) -> bool {
        true
    }
}

#[test]
fn a_blocking_token_signs_while_the_executor_serves_other_sessions() {
    let dir = TempDir::new("gated");
    let inner = test_token(&dir.0);
    let certificate = token_certificate(&inner, "mx.example.test");
    let root = certificate.chain[0].clone();
    let (entered_tx, entered) = smol::channel::unbounded();
    let (go, go_rx) = std::sync::mpsc::channel();
    let token: Arc<dyn Token> = Arc::new(Gated {
        inner,
        entered: entered_tx,
        go: std::sync::Mutex::new(go_rx),
    });
    let server = server_config(
        &ServerSettings {
            certificates: vec![certificate],
            ..ServerSettings::default()
        },
        token,
    )
    .unwrap();
    let client = client_trusting(vec![root], Versions::default());
    let executor = std::rc::Rc::new(smol::LocalExecutor::new());
    smol::block_on(executor.run(async {
        let (s, c) = pair().await;
        let handshakes = executor.spawn(smol::future::zip(
            s.accept_tls(server, TIMEOUT),
            c.connect_tls(client, "mx.example.test", TIMEOUT),
        ));
        // The token is signing, and waiting: the executor still runs this task, and a
        // plain session on it still carries bytes both ways.
        entered.recv().await.unwrap();
        let (mut a, mut b) = pair().await;
        a.write_all(b"NOOP\r\n").await.unwrap();
        assert_eq!(read_exactly(&mut b, 6).await, b"NOOP\r\n");
        b.write_all(b"250 2.0.0 Ok\r\n").await.unwrap();
        assert_eq!(read_exactly(&mut a, 14).await, b"250 2.0.0 Ok\r\n");
        go.send(()).unwrap();
        let (s, c) = handshakes.await;
        let (mut s, mut c) = (s.unwrap(), c.unwrap());
        let (server_info, _) = exchange(&mut s, &mut c).await;
        assert_eq!(server_info.version, "TLSv1.3");
    }));
}
