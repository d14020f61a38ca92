//! rustls server and client configurations built from plain settings, with server keys on the token.
//!
//! Choices, documented here once:
//! * The ring provider's default suites are all forward secret (TLS 1.3 suites and ECDHE
//!   for TLS 1.2); settings may only narrow them.
//! * The server picks the suite by its own order (`ignore_client_order`): the provider's
//!   list puts AES-256-GCM and ChaCha20 first, and a mail relay talks to many clients
//!   whose preferences we do not know.
//! * Resumption stays as rustls sets it: a server-side session cache of 256 entries in
//!   memory (TLS 1.2 IDs and stateful TLS 1.3 tickets). No stateless ticketer: its
//!   ticket keys would be secret key material outside the token.
//! * A server with client CAs asks for a client certificate and verifies one if given,
//!   but accepts clients without one (SMTP clients seldom have one).
//! * Our client presents its certificate (`tls client-certificate`) only to a next hop
//!   that asks for one, signing on the token like a server key.

use std::fmt;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring as ring_provider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};

use super::TlsError;
use super::signing;
use crate::io::token::{ObjectHandle, Token};

/// Most server certificates, chosen by SNI (the seeds' TLS_CERTIFICATE lines).
pub const MAX_SERVER_CERTIFICATES: usize = 5;

/// Which TLS versions to speak. Both by default; SSL and TLS 1.0/1.1 are never offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    pub tls12: bool,
    pub tls13: bool,
}

impl Default for Versions {
    fn default() -> Self {
        Versions {
            tls12: true,
            tls13: true,
        }
    }
}

impl Versions {
    fn rustls(self) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
        let mut versions = Vec::new();
        if self.tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            versions.push(&rustls::version::TLS12);
        }
        if versions.is_empty() {
            return Err(TlsError::NoVersion);
        }
        Ok(versions)
    }
}

/// A server certificate: its chain and the token key that signs for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// Its name in the certificate store.
    pub name: String,
    /// DNS names it answers for by SNI; `*.example.com` covers one label.
    pub names: Vec<String>,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The private key object on the token.
    pub key: ObjectHandle,
}

/// The server's TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSettings {
    pub versions: Versions,
    /// Cipher suite names from the provider's list (as rustls prints them, e.g.
    /// `TLS13_AES_256_GCM_SHA384`); `None` keeps them all.
    pub cipher_suites: Option<Vec<String>>,
    /// Up to [`MAX_SERVER_CERTIFICATES`]; the first is the default.
    pub certificates: Vec<Certificate>,
    /// DER CA certificates; when any are given the server requests (not requires) a client
    /// certificate and verifies it against them.
    pub client_cas: Vec<Vec<u8>>,
}

/// How a client checks the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// The Web PKI roots plus the extra roots, host name checked.
    Full,
    /// No verification at all (the route's `danger_` option): encryption without
    /// authentication. The handshake signature is still checked against the certificate.
    DangerNone,
}

/// Our outgoing TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// DER roots trusted besides the Web PKI's.
    pub extra_roots: Vec<Vec<u8>>,
    pub verify: Verify,
    pub versions: Versions,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            extra_roots: Vec::new(),
            verify: Verify::Full,
            versions: Versions::default(),
        }
    }
}

/// The ring provider with its suites narrowed to `names`.
fn provider(names: Option<&[String]>) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = ring_provider::default_provider();
    if let Some(names) = names {
        for name in names {
            if !provider
                .cipher_suites
                .iter()
                .any(|suite| suite_name(suite.suite()) == *name)
            {
                return Err(TlsError::UnknownCipherSuite(name.clone()));
            }
        }
        provider
            .cipher_suites
            .retain(|suite| names.iter().any(|name| *name == suite_name(suite.suite())));
    }
    Ok(Arc::new(provider))
}

/// A cipher suite's name as rustls prints it.
pub(crate) fn suite_name(suite: rustls::CipherSuite) -> String {
    match suite.as_str() {
        Some(name) => name.to_string(),
        None => format!("{suite:?}"),
    }
}

/// The names of every cipher suite the provider offers, strongest first.
pub fn cipher_suite_names() -> Vec<String> {
    ring_provider::default_provider()
        .cipher_suites
        .iter()
        .map(|suite| suite_name(suite.suite()))
        .collect()
}

/// The server configuration: SNI picks the certificate, the token signs.
pub fn server_config(
    settings: &ServerSettings,
    token: Arc<dyn Token>,
) -> Result<Arc<ServerConfig>, TlsError> {
    if settings.certificates.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    if settings.certificates.len() > MAX_SERVER_CERTIFICATES {
        return Err(TlsError::TooManyCertificates);
    }
    let provider = provider(settings.cipher_suites.as_deref())?;
    let mut keys = Vec::new();
    for certificate in &settings.certificates {
        let key = certified_key(certificate, Arc::clone(&token))?;
        keys.push((certificate.names.clone(), key));
    }
    let resolver = SniResolver::new(keys);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&settings.versions.rustls()?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if settings.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for der in &settings.client_cas {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(format!("client CAs: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The trust roots of a verifying client: the Web PKI's and the extra ones.
fn roots(extra: &[Vec<u8>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| TlsError::Config(format!("extra root: {e}")))?;
    }
    Ok(roots)
}

/// Judges a server's certificate chain as a verifying client would, after the fact
/// (`test smtp`): chained to the roots and naming `server_name`, valid now.
pub struct ChainVerdict(Arc<rustls::client::WebPkiServerVerifier>);

impl ChainVerdict {
    pub fn new(extra_roots: &[Vec<u8>]) -> Result<ChainVerdict, TlsError> {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots(extra_roots)?),
            provider(None)?,
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(ChainVerdict(verifier))
    }

    pub fn check(&self, chain: &[Vec<u8>], server_name: &str) -> Result<(), String> {
        let (leaf, intermediates) = chain.split_first().ok_or("no certificate was sent")?;
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| format!("'{server_name}' cannot be checked against a certificate"))?;
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        self.0
            .verify_server_cert(
                &CertificateDer::from(leaf.as_slice()),
                &intermediates,
                &name,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The client configuration for our outgoing STARTTLS; SNI is sent. With `identity`
/// (a certificate whose key is on the token, see [`certified_key`]) it is presented to
/// a server that asks for a client certificate.
pub fn client_config(
    settings: &ClientSettings,
    identity: Option<Arc<CertifiedKey>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider(None)?;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&settings.versions.rustls()?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match settings.verify {
        Verify::Full => builder.with_root_certificates(roots(&settings.extra_roots)?),
        Verify::DangerNone => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
    };
    let config = match identity {
        Some(key) => builder.with_client_cert_resolver(Arc::new(ClientIdentity(key))),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A stored certificate for rustls: its chain, its key signing on `token`.
pub fn certified_key(
    certificate: &Certificate,
    token: Arc<dyn Token>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificate
        .chain
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    Ok(signing::certified_key(token, certificate.key, chain)?)
}

/// The one certificate our client has, for every server that asks.
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Picks a certificate by SNI: the exact name, then the wildcard for the first label,
/// then the first certificate.
struct SniResolver {
    /// (lower-case name, key), in settings order.
    by_name: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// `keys` is non-empty (checked by `server_config`).
    fn new(keys: Vec<(Vec<String>, Arc<CertifiedKey>)>) -> SniResolver {
        let default = Arc::clone(&keys[0].1);
        let by_name = keys
            .into_iter()
            .flat_map(|(names, key)| {
                names
                    .into_iter()
                    .map(move |name| (name.to_ascii_lowercase(), Arc::clone(&key)))
            })
            .collect();
        SniResolver { by_name, default }
    }

    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return Arc::clone(&self.default);
        };
        match self
            .by_name
            .iter()
            .find(|(pattern, _)| pattern == &name.to_ascii_lowercase())
            .or_else(|| {
                self.by_name
                    .iter()
                    .find(|(pattern, _)| covers(pattern, name))
            }) {
            Some((_, key)) => Arc::clone(key),
            None => Arc::clone(&self.default),
        }
    }
}

/// Whether a certificate name (`mail.example.com`, or `*.example.com` for one label)
/// covers the host `name`, without regard to ASCII case.
pub fn covers(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == name,
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.by_name.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("SniResolver")
            .field("names", &names)
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Accepts any server certificate (`Verify::DangerNone`).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_suite_names_are_refused() {
        assert_eq!(
            provider(Some(&["TLS13_NOPE".to_string()])).unwrap_err(),
            TlsError::UnknownCipherSuite("TLS13_NOPE".to_string())
        );
        let one = provider(Some(&["TLS13_AES_128_GCM_SHA256".to_string()])).unwrap();
        assert_eq!(one.cipher_suites.len(), 1);
    }

    #[test]
    fn suite_names_are_rustls_names_and_all_forward_secret() {
        let names = cipher_suite_names();
        assert!(names.contains(&"TLS13_AES_256_GCM_SHA384".to_string()));
        for name in &names {
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
        }
    }

    #[test]
    fn no_version_is_an_error() {
        let none = Versions {
            tls12: false,
            tls13: false,
        };
        assert_eq!(none.rustls().unwrap_err(), TlsError::NoVersion);
        let settings = ClientSettings {
            versions: none,
            ..ClientSettings::default()
        };
        assert_eq!(
            client_config(&settings, None).unwrap_err(),
            TlsError::NoVersion
        );
    }
}
