//! The TLS layer: the one place in the crate that names rustls. **Invariant:** what it
//! hands up is plain values, never a rustls type; server keys sign on the token.
//!
//! * [`stream`]: [`Transport`], the byte pump the session driver reads and writes, plain or
//!   TLS, and the handshakes for STARTTLS and implicit TLS; [`Info`] carries what the
//!   handshake negotiated out as plain strings, so the SMTP core never sees a TLS type.
//! * [`config`]: rustls server and client configurations from plain settings; server keys
//!   sign on the token through [`signing`].
//! * [`store`]: the certificate store under `<state>/tls/`, whose keys live on the token.
//! * [`cert`] and [`pem`]: I/O-free readers of certificates and PEM text.
//!
//! [`open_token`] opens the configured token and logs in with the PIN from the PIN file:
//! [`open_soft_token`] (which at first boot creates the software token), or a PKCS#11
//! module.

pub mod cert;
pub mod config;
pub mod pem;
pub mod setup;
pub mod signing;
pub mod store;
pub mod stream;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

pub use config::{
    Certificate, ClientSettings, ServerSettings, Verify, Versions, client_config, server_config,
};
pub use store::{CertStore, StoredCert};
pub use stream::{Info, TlsStream, Transport};

use crate::io::token::x509::CertificateError;
use crate::io::token::{PinFile, PinFileError, SoftToken, Token, TokenError};
use crate::proto::config::{TokenBackend, TokenSettings};

/// The token's directory under the state directory.
pub const TOKEN_DIR: &str = "token";
/// The PIN file under the state directory, named as in the seeds.
pub const PIN_FILE: &str = "sslpassword.conf";
/// The fallback software token's directory under the state directory, beside a PKCS#11
/// token: keys of types the module lacks live there (see [`crate::io::token::pkcs11`]).
pub const FALLBACK_TOKEN_DIR: &str = "token-fallback";
/// Random bytes in a first-boot PIN; 16 bytes make 32 hex characters (128 bits).
pub const GENERATED_PIN_BYTES: usize = 16;

/// Why a TLS operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsError {
    /// The socket failed.
    Io(String),
    /// The peer closed the connection during the handshake.
    Closed,
    /// The handshake did not finish in time.
    Timeout,
    /// The handshake failed: the peer's misbehaviour, or no common version, suite or trust.
    Handshake(String),
    /// The transport is TLS already.
    AlreadyTls,
    /// The settings ask for neither TLS 1.2 nor TLS 1.3.
    NoVersion,
    /// A cipher suite name the provider does not know.
    UnknownCipherSuite(String),
    /// The settings were rejected (no suite left for a version, a bad CA, a bad server name).
    Config(String),
    /// A server configuration without certificates.
    NoCertificate,
    /// The store holds [`store::MAX_CERTIFICATES`] already.
    TooManyCertificates,
    /// A certificate name that is empty, too long or not `[a-z0-9-]`.
    InvalidName,
    CertificateExists,
    NoSuchCertificate,
    /// PEM or DER input that could not be read.
    Pem(String),
    /// A key type the token cannot import.
    UnsupportedKey,
    /// The private key does not belong to the leaf certificate.
    KeyMismatch,
    /// A PIN file or token set-up problem.
    Pin(String),
    Storage(String),
    Token(TokenError),
    Certificate(CertificateError),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io(message) => write!(f, "TLS: socket: {message}"),
            TlsError::Closed => f.write_str("TLS: connection closed during the handshake"),
            TlsError::Timeout => f.write_str("TLS: handshake timed out"),
            TlsError::Handshake(message) => write!(f, "TLS handshake failed: {message}"),
            TlsError::AlreadyTls => f.write_str("TLS: already active"),
            TlsError::NoVersion => f.write_str("TLS: no protocol version enabled"),
            TlsError::UnknownCipherSuite(name) => write!(f, "TLS: unknown cipher suite {name}"),
            TlsError::Config(message) => write!(f, "TLS configuration: {message}"),
            TlsError::NoCertificate => f.write_str("TLS: no server certificate"),
            TlsError::TooManyCertificates => {
                write!(f, "TLS: at most {} certificates", store::MAX_CERTIFICATES)
            }
            TlsError::InvalidName => f.write_str("TLS: invalid certificate name"),
            TlsError::CertificateExists => f.write_str("TLS: certificate name in use"),
            TlsError::NoSuchCertificate => f.write_str("TLS: no such certificate"),
            TlsError::Pem(message) => write!(f, "PEM: {message}"),
            TlsError::UnsupportedKey => f.write_str("TLS: unsupported private key type"),
            TlsError::KeyMismatch => {
                f.write_str("TLS: the private key does not match the certificate")
            }
            TlsError::Pin(message) => write!(f, "token PIN: {message}"),
            TlsError::Storage(message) => write!(f, "certificate store: {message}"),
            TlsError::Token(e) => e.fmt(f),
            TlsError::Certificate(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TlsError {}

impl TlsError {
    /// Whether the peer or the network caused it (a closed or silent connection, a failed
    /// handshake), as opposed to our own settings, store or token. A peer's failure is
    /// logged and the connection dropped; there is no SMTP reply to give once the
    /// handshake has started.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            TlsError::Io(_) | TlsError::Closed | TlsError::Timeout | TlsError::Handshake(_)
        )
    }
}

impl From<TokenError> for TlsError {
    fn from(e: TokenError) -> Self {
        TlsError::Token(e)
    }
}

impl From<CertificateError> for TlsError {
    fn from(e: CertificateError) -> Self {
        TlsError::Certificate(e)
    }
}

impl From<PinFileError> for TlsError {
    fn from(e: PinFileError) -> Self {
        TlsError::Pin(e.to_string())
    }
}

/// The PIN file: the one the settings name, else `sslpassword.conf` in the state
/// directory.
pub fn pin_path(settings: &TokenSettings, state_dir: &Path) -> std::path::PathBuf {
    settings
        .pin_file
        .as_ref()
        .map_or_else(|| state_dir.join(PIN_FILE), std::path::PathBuf::from)
}

/// The PIN the PIN file at `pin_path` holds for the token `label`.
pub fn read_pin(pin_path: &Path, label: &str) -> Result<String, TlsError> {
    let pins = PinFile::load(pin_path)?;
    pins.pin(label).map(str::to_string).ok_or_else(|| {
        TlsError::Pin(format!(
            "no PIN for token {label:?} in {}",
            pin_path.display()
        ))
    })
}

/// Opens the token the configuration names and logs in with its PIN from the PIN file.
/// Every failure (no module, no such token, no PIN, a wrong PIN) is an error that says
/// which; the gateway does not start without its token.
pub fn open_token(settings: &TokenSettings, state_dir: &Path) -> Result<Arc<dyn Token>, TlsError> {
    let label = settings.label.as_deref().unwrap_or(setup::TOKEN_LABEL);
    let pin_path = pin_path(settings, state_dir);
    match settings.backend {
        TokenBackend::Soft => open_soft(state_dir, label, &pin_path),
        TokenBackend::Pkcs11 => open_pkcs11(settings, state_dir, label, &pin_path),
    }
}

#[cfg(feature = "pkcs11")]
fn open_pkcs11(
    settings: &TokenSettings,
    state_dir: &Path,
    label: &str,
    pin_path: &Path,
) -> Result<Arc<dyn Token>, TlsError> {
    let module = settings.module.as_deref().ok_or_else(|| {
        TlsError::Token(TokenError::Device(
            "the pkcs11 token backend needs a module: set system token module PATH".to_string(),
        ))
    })?;
    let token = crate::io::token::Pkcs11Token::open(
        Path::new(module),
        label,
        Some(&state_dir.join(FALLBACK_TOKEN_DIR)),
    )?;
    let pin = read_pin(pin_path, label)?;
    token.login(&pin).map_err(|e| {
        TlsError::Pin(format!(
            "cannot log in to token {label:?} of {module} with the PIN from {}: {e}",
            pin_path.display()
        ))
    })?;
    Ok(Arc::new(token))
}

#[cfg(not(feature = "pkcs11"))]
fn open_pkcs11(_: &TokenSettings, _: &Path, _: &str, _: &Path) -> Result<Arc<dyn Token>, TlsError> {
    Err(TlsError::Token(TokenError::Device(
        "this build has no PKCS#11 support (cargo feature pkcs11)".to_string(),
    )))
}

/// Opens the software token in `<state_dir>/token` and logs in with its PIN from
/// `<state_dir>/sslpassword.conf` (`label:PIN`).
///
/// At first boot (neither token nor PIN file) it makes a random PIN of 32 hex characters
/// from the kernel's random source, writes the PIN file with mode 0600, creates the token
/// and logs in. A PIN file without a token creates the token with that PIN; a token without
/// a PIN file is an error. The PIN is never logged.
pub fn open_soft_token(state_dir: &Path, label: &str) -> Result<Arc<dyn Token>, TlsError> {
    open_soft(state_dir, label, &state_dir.join(PIN_FILE))
}

fn open_soft(state_dir: &Path, label: &str, pin_path: &Path) -> Result<Arc<dyn Token>, TlsError> {
    let token_dir = state_dir.join(TOKEN_DIR);
    let token_exists = SoftToken::exists(&token_dir);
    let pin = if pin_path.exists() {
        read_pin(pin_path, label)?
    } else if token_exists {
        return Err(TlsError::Pin(format!(
            "{} missing for the existing token",
            pin_path.display()
        )));
    } else {
        let pin = generate_pin()?;
        write_pin_file(pin_path, label, &pin)?;
        log::info!(target: "token", "generated a token PIN in {}", pin_path.display());
        pin
    };
    let token = if token_exists {
        SoftToken::open(&token_dir, label)?
    } else {
        SoftToken::init(&token_dir, label, None, &pin)?
    };
    token.login(&pin)?;
    Ok(Arc::new(token))
}

/// 32 hex characters from /dev/urandom: the token cannot supply randomness before it exists.
fn generate_pin() -> Result<String, TlsError> {
    let mut bytes = [0u8; GENERATED_PIN_BYTES];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| TlsError::Pin(format!("/dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_pin_file(path: &Path, label: &str, pin: &str) -> Result<(), TlsError> {
    let error = |e: std::io::Error| TlsError::Pin(format!("{}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(error)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    file.write_all(format!("{label}:{pin}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(error)
}
