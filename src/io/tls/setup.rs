//! The gateway's TLS, assembled at start-up from the configuration: the token, the
//! certificate store (with a self-signed certificate at first boot), the server
//! configuration for both services and the client configurations for delivery.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};

use super::config::{
    Certificate, ChainVerdict, ClientSettings, ServerSettings, Verify, Versions, certified_key,
    client_config, covers, server_config,
};
use super::pem::parse_chain;
use super::store::{CertStore, SELF_SIGNED_NAME};
use super::stream::Transport;
use super::{Info, TlsError};
use crate::io::token::Token;
use crate::proto::config::{Config, ServiceName};

/// The token's label on every board.
pub const TOKEN_LABEL: &str = "drawbridge";
/// The certificate store's folder in the state directory.
pub const STORE_DIR: &str = "tls";
/// How long a TLS handshake may take, either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the services and delivery need to speak TLS.
pub struct GatewayTls {
    /// Each service's server side, its default certificate first.
    server: [Arc<ServerConfig>; 2],
    /// Each service's default certificate, for the log.
    defaults: [DefaultCertificate; 2],
    verified: Arc<ClientConfig>,
    unverified: Arc<ClientConfig>,
    verdict: ChainVerdict,
}

impl GatewayTls {
    /// Opens the store under `state_dir` with its keys on `token` (logged in), generating
    /// a self-signed certificate for the host name when there is none, and builds the
    /// configurations.
    pub fn setup(
        config: &Config,
        state_dir: &Path,
        token: Arc<dyn Token>,
        now_unix: i64,
    ) -> Result<GatewayTls, TlsError> {
        let store = CertStore::open(&state_dir.join(STORE_DIR), token.clone())?;
        if let Some(cert) = store.ensure_self_signed(&config.system.host_name, now_unix)? {
            log::warn!(target: "tls",
                "no certificate was installed: generated a self-signed one for {}, SHA-256 fingerprint {}",
                config.system.host_name, cert.fingerprint_sha256);
        }
        for cert in store.list()? {
            log::info!(target: "tls", "certificate {}: {} (SHA-256 {})", cert.name, cert.names.join(", "), cert.fingerprint_sha256);
        }
        let versions = Versions {
            tls12: config.tls.tls12,
            tls13: config.tls.tls13,
        };
        let cipher_suites =
            (!config.tls.cipher_suites.is_empty()).then(|| config.tls.cipher_suites.clone());
        let stored = store.settings_certificates()?;
        let client_cas = read_cas(config.tls.client_ca_file.as_deref())?;
        let service =
            |s: ServiceName| -> Result<(Arc<ServerConfig>, DefaultCertificate), TlsError> {
                let wanted = config.service(s).certificate.as_deref();
                let certificates = for_service(stored.clone(), wanted, &config.system.host_name);
                let default = certificates
                    .first()
                    .map(|c| DefaultCertificate {
                        name: c.name.clone(),
                        names: c.names.clone(),
                    })
                    .unwrap_or_default();
                let server = server_config(
                    &ServerSettings {
                        versions,
                        cipher_suites: cipher_suites.clone(),
                        certificates,
                        client_cas: client_cas.clone(),
                    },
                    token.clone(),
                )?;
                Ok((server, default))
            };
        let (inbound, inbound_default) = service(ServiceName::Inbound)?;
        let (outbound, outbound_default) = service(ServiceName::Outbound)?;
        let extra_roots = read_cas(config.tls.server_ca_file.as_deref())?;
        let client = |verify| ClientSettings {
            extra_roots: extra_roots.clone(),
            verify,
            versions,
        };
        // Checked at commit (`check::certificates`); one deleted since, or whose key the
        // token cannot use, is not presented, and the rest of TLS works on.
        let identity = config.tls.client_certificate.as_deref().and_then(|name| {
            let found = stored.iter().find(|c| c.name == name);
            match found.map(|certificate| certified_key(certificate, token.clone())) {
                Some(Ok(key)) => Some(key),
                Some(Err(e)) => {
                    log::error!(target: "tls", "tls client-certificate {name}: {e}: next hops get no client certificate");
                    None
                }
                None => {
                    log::warn!(target: "tls", "tls client-certificate {name} is not stored: next hops get no client certificate");
                    None
                }
            }
        });
        Ok(GatewayTls {
            server: [inbound, outbound],
            defaults: [inbound_default, outbound_default],
            verdict: ChainVerdict::new(&extra_roots)?,
            verified: client_config(&client(Verify::Full), identity.clone())?,
            unverified: client_config(&client(Verify::DangerNone), identity)?,
        })
    }

    /// The server side of STARTTLS or implicit TLS for `service`.
    pub async fn accept(
        &self,
        service: ServiceName,
        transport: Transport,
    ) -> Result<Transport, TlsError> {
        self.accept_after(service, transport, Vec::new()).await
    }

    /// Implicit TLS for `service` on a connection whose first octets came with a load
    /// balancer's PROXY header: the handshake begins with `already_read`.
    pub async fn accept_after(
        &self,
        service: ServiceName,
        transport: Transport,
        already_read: Vec<u8>,
    ) -> Result<Transport, TlsError> {
        // The handshake's records are processed on the blocking pool (see
        // `Transport::accept_tls`): a token that blocks never holds up the executor.
        let server = self.server[service as usize].clone();
        transport
            .accept_tls_after(server, HANDSHAKE_TIMEOUT, already_read)
            .await
    }

    /// The certificate `service` serves without SNI: its store name and DNS names.
    pub fn default_certificate(&self, service: ServiceName) -> (&str, &[String]) {
        let d = &self.defaults[service as usize];
        (&d.name, &d.names)
    }

    /// Our STARTTLS to a next hop. With `verify` the certificate must chain to a trusted
    /// root and name `server_name`; without, the connection is encrypted, not
    /// authenticated (opportunistic TLS, or the route's `danger_` option).
    pub async fn connect(
        &self,
        transport: Transport,
        server_name: &str,
        verify: bool,
    ) -> Result<Transport, TlsError> {
        let config = if verify {
            &self.verified
        } else {
            &self.unverified
        };
        transport
            .connect_tls(config.clone(), server_name, HANDSHAKE_TIMEOUT)
            .await
    }
}

/// A service's certificate served without SNI: its store name and DNS names.
#[derive(Clone, Debug, Default)]
struct DefaultCertificate {
    name: String,
    names: Vec<String>,
}

/// The stored certificates in the order a service serves them: the one it names first,
/// else those that name the host (an imported one before the first-boot self-signed
/// one), then the rest by name. The first is served without SNI and on STARTTLS; SNI
/// picks among them all.
fn for_service(mut certs: Vec<Certificate>, wanted: Option<&str>, host: &str) -> Vec<Certificate> {
    certs.sort_by_key(|c| {
        (
            Some(c.name.as_str()) != wanted,
            !c.names.iter().any(|n| covers(n, host)),
            c.name == SELF_SIGNED_NAME,
            c.name.clone(),
        )
    });
    certs
}

impl GatewayTls {
    /// Whether the certificate a next hop presented on `transport` would pass a
    /// verifying delivery to `server_name`; the reason when it would not.
    pub fn verify_peer(&self, transport: &Transport, server_name: &str) -> Result<(), String> {
        self.verdict.check(&transport.peer_chain(), server_name)
    }
}

/// The CA certificates in a PEM file, DER; none without a file.
fn read_cas(path: Option<&str>) -> Result<Vec<Vec<u8>>, TlsError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| TlsError::Io(format!("{path}: {e}")))?;
    parse_chain(&text)
}

/// `TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`, as Postfix logs it.
pub fn describe(info: &Info) -> String {
    format!("{} with cipher {}", info.version, info.cipher_suite)
}
