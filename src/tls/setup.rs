//! The gateway's TLS, assembled at start-up from the configuration: the token, the
//! certificate store (with a self-signed certificate at first boot), the server
//! configuration for both services and the client configurations for delivery.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};

use super::config::{
    ChainVerdict, ClientSettings, ServerSettings, Verify, Versions, client_config, server_config,
};
use super::pem::parse_chain;
use super::store::CertStore;
use super::stream::Transport;
use super::{Info, TlsError};
use crate::config::Config;
use crate::token::Token;

/// The token's label on every board.
pub const TOKEN_LABEL: &str = "drawbridge";
/// The certificate store's folder in the state directory.
pub const STORE_DIR: &str = "tls";
/// How long a TLS handshake may take, either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the services and delivery need to speak TLS.
pub struct GatewayTls {
    server: Arc<ServerConfig>,
    /// The server key's token blocks: handshakes sign off the executor.
    sign_off_executor: bool,
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
        let sign_off_executor = token.blocks();
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
        let server = server_config(
            &ServerSettings {
                versions,
                cipher_suites,
                certificates: store.settings_certificates()?,
                client_cas: read_cas(config.tls.client_ca_file.as_deref())?,
            },
            token,
        )?;
        let extra_roots = read_cas(config.tls.server_ca_file.as_deref())?;
        let client = |verify| ClientSettings {
            extra_roots: extra_roots.clone(),
            verify,
            versions,
        };
        Ok(GatewayTls {
            verdict: ChainVerdict::new(&extra_roots)?,
            server,
            sign_off_executor,
            verified: client_config(&client(Verify::Full))?,
            unverified: client_config(&client(Verify::DangerNone))?,
        })
    }

    /// The server side of STARTTLS or implicit TLS.
    pub async fn accept(&self, transport: Transport) -> Result<Transport, TlsError> {
        if self.sign_off_executor {
            transport
                .accept_tls_off_executor(self.server.clone(), HANDSHAKE_TIMEOUT)
                .await
        } else {
            transport
                .accept_tls(self.server.clone(), HANDSHAKE_TIMEOUT)
                .await
        }
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
