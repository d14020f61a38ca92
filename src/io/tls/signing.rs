//! The rustls signing adapter: a token key as a `rustls::sign::SigningKey`, so TLS handshakes sign on the token.
//!
//! It lives with the TLS layer, the one place that names rustls. The key bytes stay on the token:
//! each handshake signature is one [`Token::sign`] call.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::io::token::{KeyKind, Mechanism, ObjectClass, ObjectHandle, Token, TokenError};

/// RSA schemes in order of preference: PSS before PKCS#1 v1.5 (RFC 8446 §4.2.3 allows
/// only PSS in TLS 1.3 handshakes), longer hashes first, as rustls's own RSA key does.
const RSA_SCHEMES: [(SignatureScheme, Mechanism); 6] = [
    (SignatureScheme::RSA_PSS_SHA512, Mechanism::RsaPssSha512),
    (SignatureScheme::RSA_PSS_SHA384, Mechanism::RsaPssSha384),
    (SignatureScheme::RSA_PSS_SHA256, Mechanism::RsaPssSha256),
    (SignatureScheme::RSA_PKCS1_SHA512, Mechanism::RsaPkcs1Sha512),
    (SignatureScheme::RSA_PKCS1_SHA384, Mechanism::RsaPkcs1Sha384),
    (SignatureScheme::RSA_PKCS1_SHA256, Mechanism::RsaPkcs1Sha256),
];
const ECDSA_SCHEMES: [(SignatureScheme, Mechanism); 1] = [(
    SignatureScheme::ECDSA_NISTP256_SHA256,
    Mechanism::EcdsaP256Sha256,
)];
const ED25519_SCHEMES: [(SignatureScheme, Mechanism); 1] =
    [(SignatureScheme::ED25519, Mechanism::Ed25519)];

/// A private key on a token, offered to rustls.
pub struct TokenSigningKey {
    token: Arc<dyn Token>,
    handle: ObjectHandle,
    kind: KeyKind,
    spki: Vec<u8>,
}

impl TokenSigningKey {
    /// Wraps the private key object `handle`; the token must be logged in.
    pub fn new(token: Arc<dyn Token>, handle: ObjectHandle) -> Result<TokenSigningKey, TokenError> {
        let info = token.object_info(handle)?;
        if info.class != ObjectClass::PrivateKey {
            return Err(TokenError::KeyTypeInconsistent);
        }
        let public = token.public_key(handle)?;
        Ok(TokenSigningKey {
            token,
            handle,
            kind: public.kind,
            spki: public.der,
        })
    }

    fn schemes(&self) -> &'static [(SignatureScheme, Mechanism)] {
        match self.kind {
            KeyKind::EcP256 => &ECDSA_SCHEMES,
            KeyKind::Ed25519 => &ED25519_SCHEMES,
            KeyKind::Rsa => &RSA_SCHEMES,
            KeyKind::GenericSecret => &[],
        }
    }
}

impl fmt::Debug for TokenSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigningKey")
            .field("handle", &self.handle)
            .field("kind", &self.kind)
            .finish()
    }
}

impl SigningKey for TokenSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let (scheme, mechanism) = self
            .schemes()
            .iter()
            .find(|(scheme, _)| offered.contains(scheme))?;
        Some(Box::new(TokenSigner {
            token: Arc::clone(&self.token),
            handle: self.handle,
            scheme: *scheme,
            mechanism: *mechanism,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.kind {
            KeyKind::EcP256 => SignatureAlgorithm::ECDSA,
            KeyKind::Ed25519 => SignatureAlgorithm::ED25519,
            KeyKind::Rsa => SignatureAlgorithm::RSA,
            KeyKind::GenericSecret => SignatureAlgorithm::Anonymous,
        }
    }
}

/// One handshake's signer: a key and the scheme chosen for it.
struct TokenSigner {
    token: Arc<dyn Token>,
    handle: ObjectHandle,
    scheme: SignatureScheme,
    mechanism: Mechanism,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("handle", &self.handle)
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.token
            .sign(self.handle, self.mechanism, message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// A certificate chain (server certificate first) with its key on the token, ready for a
/// rustls certificate resolver.
pub fn certified_key(
    token: Arc<dyn Token>,
    handle: ObjectHandle,
    chain: Vec<CertificateDer<'static>>,
) -> Result<Arc<CertifiedKey>, TokenError> {
    let key = TokenSigningKey::new(token, handle)?;
    Ok(Arc::new(CertifiedKey::new(chain, Arc::new(key))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::token::SoftToken;
    use crate::io::token::x509::{Subject, self_signed_certificate};
    use rustls::client::ClientConnection;
    use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection};
    use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const RSA_PKCS8: &[u8] = include_bytes!("../token/testdata/rsa2048.pk8.der");
    const HOST: &str = "mail.example.test";
    /// 2026-01-01T00:00:00Z and 2126-01-01: the certificates are valid whenever the tests run.
    const NOT_BEFORE: i64 = 1_767_225_600;
    const NOT_AFTER: i64 = 4_922_899_200;

    /// A token that counts the signatures it makes, to show the handshake signed on it.
    struct Counting {
        inner: SoftToken,
        signatures: AtomicUsize,
    }

    impl Token for Counting {
        fn info(&self) -> crate::io::token::TokenInfo {
            self.inner.info()
        }
        fn mechanisms(&self) -> Vec<Mechanism> {
            self.inner.mechanisms()
        }
        fn login(&self, pin: &str) -> Result<(), TokenError> {
            self.inner.login(pin)
        }
        fn logout(&self) {
            self.inner.logout()
        }
        fn find_objects(&self, label: &str) -> Vec<ObjectHandle> {
            self.inner.find_objects(label)
        }
        fn object_info(&self, h: ObjectHandle) -> Result<crate::io::token::ObjectInfo, TokenError> {
            self.inner.object_info(h)
        }
        fn generate_key_pair(
            &self,
            kind: KeyKind,
            label: &str,
        ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
            self.inner.generate_key_pair(kind, label)
        }
        fn import_private_key(
            &self,
            label: &str,
            der: &[u8],
        ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
            self.inner.import_private_key(label, der)
        }
        fn generate_secret(&self, label: &str, len: usize) -> Result<ObjectHandle, TokenError> {
            self.inner.generate_secret(label, len)
        }
        fn import_secret(&self, label: &str, s: &[u8]) -> Result<ObjectHandle, TokenError> {
            self.inner.import_secret(label, s)
        }
        fn hmac_sha256(&self, key: ObjectHandle, data: &[u8]) -> Result<[u8; 32], TokenError> {
            self.inner.hmac_sha256(key, data)
        }
        fn public_key(
            &self,
            h: ObjectHandle,
        ) -> Result<crate::io::token::PublicKeyInfo, TokenError> {
            self.inner.public_key(h)
        }
        fn sign(&self, h: ObjectHandle, m: Mechanism, data: &[u8]) -> Result<Vec<u8>, TokenError> {
            self.signatures.fetch_add(1, Ordering::SeqCst);
            self.inner.sign(h, m, data)
        }
        fn digest_sha256(&self, data: &[u8]) -> [u8; 32] {
            self.inner.digest_sha256(data)
        }
        fn random(&self, buf: &mut [u8]) -> Result<(), TokenError> {
            self.inner.random(buf)
        }
        fn destroy(&self, h: ObjectHandle) -> Result<(), TokenError> {
            self.inner.destroy(h)
        }
    }

    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);

    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
    }

    fn token_with_key(name: &str, kind: Option<KeyKind>) -> (Arc<Counting>, ObjectHandle) {
        let dir = std::env::temp_dir().join(format!(
            "drawbridge-token-tls-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let soft = SoftToken::init_with_iterations(&dir, "tls", None, "1234", 10).unwrap();
        soft.login("1234").unwrap();
        let (private, _) = match kind {
            Some(kind) => soft.generate_key_pair(kind, "server").unwrap(),
            None => soft.import_private_key("server", RSA_PKCS8).unwrap(),
        };
        let token = Arc::new(Counting {
            inner: soft,
            signatures: AtomicUsize::new(0),
        });
        (token, private)
    }

    /// Runs a full handshake in memory and one message each way; returns the negotiated
    /// signature-bearing version and the number of signatures the token made.
    fn handshake(
        name: &str,
        kind: Option<KeyKind>,
        version: &'static SupportedProtocolVersion,
    ) -> usize {
        let (token, key) = token_with_key(name, kind);
        let subject = Subject {
            common_name: HOST.to_string(),
            dns_names: vec![HOST.to_string()],
        };
        let cert = self_signed_certificate(&*token, key, &subject, NOT_BEFORE, NOT_AFTER).unwrap();
        let certified = certified_key(
            token.clone() as Arc<dyn Token>,
            key,
            vec![CertificateDer::from(cert.clone())],
        )
        .unwrap();
        assert!(certified.keys_match().is_ok());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(certified)));
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(cert)).unwrap();
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
        let mut client = ClientConnection::new(
            Arc::new(client_config),
            HOST.to_string().try_into().unwrap(),
        )
        .unwrap();
        client.writer().write_all(b"EHLO client\r\n").unwrap();
        server.writer().write_all(b"250 server\r\n").unwrap();
        let mut got_server = Vec::new();
        let mut got_client = Vec::new();
        for _ in 0..20 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            let mut slice = wire.as_slice();
            while !slice.is_empty() {
                server.read_tls(&mut slice).unwrap();
            }
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            let mut slice = wire.as_slice();
            while !slice.is_empty() {
                client.read_tls(&mut slice).unwrap();
            }
            client.process_new_packets().unwrap();
            let _ = server.reader().read_to_end(&mut got_server);
            let _ = client.reader().read_to_end(&mut got_client);
            if !got_client.is_empty() && !got_server.is_empty() {
                break;
            }
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert_eq!(client.protocol_version(), Some(version.version));
        assert_eq!(got_server, b"EHLO client\r\n");
        assert_eq!(got_client, b"250 server\r\n");
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!(
            "drawbridge-token-tls-{name}-{}",
            std::process::id()
        )));
        token.signatures.load(Ordering::SeqCst)
    }

    // Each handshake signs twice on the token: once for the certificate, once for the
    // handshake (TLS 1.3 CertificateVerify, TLS 1.2 ServerKeyExchange).

    #[test]
    fn tls13_with_p256_key() {
        assert_eq!(
            handshake("p256-13", Some(KeyKind::EcP256), &rustls::version::TLS13),
            2
        );
    }

    #[test]
    fn tls12_with_p256_key() {
        assert_eq!(
            handshake("p256-12", Some(KeyKind::EcP256), &rustls::version::TLS12),
            2
        );
    }

    #[test]
    fn tls13_with_ed25519_key() {
        assert_eq!(
            handshake("ed-13", Some(KeyKind::Ed25519), &rustls::version::TLS13),
            2
        );
    }

    #[test]
    fn tls12_with_ed25519_key() {
        assert_eq!(
            handshake("ed-12", Some(KeyKind::Ed25519), &rustls::version::TLS12),
            2
        );
    }

    #[test]
    fn tls13_with_rsa_key() {
        assert_eq!(handshake("rsa-13", None, &rustls::version::TLS13), 2);
    }

    #[test]
    fn tls12_with_rsa_key() {
        assert_eq!(handshake("rsa-12", None, &rustls::version::TLS12), 2);
    }

    #[test]
    fn schemes_follow_the_key_type() {
        let (token, key) = token_with_key("schemes", None);
        let signing = TokenSigningKey::new(token.clone() as Arc<dyn Token>, key).unwrap();
        assert_eq!(signing.algorithm(), SignatureAlgorithm::RSA);
        let offered = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
        ];
        let signer = signing.choose_scheme(&offered).unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::RSA_PSS_SHA384);
        let only_pkcs1 = [SignatureScheme::RSA_PKCS1_SHA256];
        assert_eq!(
            signing.choose_scheme(&only_pkcs1).unwrap().scheme(),
            SignatureScheme::RSA_PKCS1_SHA256
        );
        assert!(signing.choose_scheme(&[SignatureScheme::ED25519]).is_none());
        // A public key object is not a signing key.
        let public = token
            .find_objects("server")
            .into_iter()
            .find(|h| *h != key)
            .unwrap();
        assert_eq!(
            TokenSigningKey::new(token.clone() as Arc<dyn Token>, public).unwrap_err(),
            TokenError::KeyTypeInconsistent
        );
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!(
            "drawbridge-token-tls-schemes-{}",
            std::process::id()
        )));
    }
}
