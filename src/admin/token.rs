//! `drawbridge token …` and the console's `token` commands: look at the token, check its
//! PIN, make the keys the gateway needs.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::io::clock::unix_now;
use crate::io::tls::setup::{STORE_DIR, TOKEN_LABEL};
use crate::io::tls::store::{CertStore, SELF_SIGNED_NAME, key_label, names_in};
use crate::io::tls::{TOKEN_DIR, TlsError, open_token, pin_path, read_pin};
use crate::io::token::{
    CONFIG_HMAC_KEY_LABEL, KeyKind, ObjectClass, SoftToken, Token, TokenError, hmac_key,
};
use crate::proto::config::{Config, TokenBackend, TokenSettings};

/// What `drawbridge token …` does.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TokenAction {
    /// Module, slot, label, mechanisms, and which operations run in hardware.
    Show,
    /// Log in with the PIN file's PIN and report the gateway's keys.
    Login,
    /// Make the keys the gateway needs that are missing.
    InitKey,
}

/// Carries out one token command for the token `config` names; the text to print.
pub fn token(action: TokenAction, config: &Config, state_dir: &Path) -> Result<String, TlsError> {
    match action {
        TokenAction::Show => show(config, state_dir),
        TokenAction::Login => login(config, state_dir),
        TokenAction::InitKey => init_key(config, state_dir),
    }
}

/// Module, slot, label and mechanisms, and where each operation runs. Needs no PIN.
pub fn show(config: &Config, state_dir: &Path) -> Result<String, TlsError> {
    let settings = &config.system.token;
    let label = settings.label.as_deref().unwrap_or(TOKEN_LABEL);
    let mut out = String::new();
    let token: Box<dyn Token> = match settings.backend {
        TokenBackend::Soft => {
            let dir = state_dir.join(TOKEN_DIR);
            let _ = writeln!(out, "backend: soft ({})", dir.display());
            if !SoftToken::exists(&dir) {
                let _ = writeln!(
                    out,
                    "no software token yet: the gateway makes it at its first start"
                );
                return Ok(out);
            }
            Box::new(SoftToken::open(&dir, label)?)
        }
        TokenBackend::Pkcs11 => pkcs11_for_show(config, state_dir, &mut out)?,
    };
    let info = token.info();
    let _ = writeln!(
        out,
        "token: {} (manufacturer {}, model {}, serial {})",
        info.label, info.manufacturer, info.model, info.serial
    );
    let _ = writeln!(out, "operations:");
    for route in token.operations() {
        let _ = writeln!(out, "  {}: {}", route.operation.name(), route.performer);
    }
    Ok(out)
}

#[cfg(feature = "pkcs11")]
fn pkcs11_for_show(
    config: &Config,
    state_dir: &Path,
    out: &mut String,
) -> Result<Box<dyn Token>, TlsError> {
    let settings = &config.system.token;
    let module = settings.module.as_deref().ok_or_else(|| {
        TlsError::Token(TokenError::Device(
            "the pkcs11 token backend needs a module: set system token module PATH".to_string(),
        ))
    })?;
    let label = settings.label.as_deref().unwrap_or(TOKEN_LABEL);
    let token = crate::io::token::Pkcs11Token::open(
        Path::new(module),
        label,
        Some(&state_dir.join(crate::io::tls::FALLBACK_TOKEN_DIR)),
    )?;
    let info = token.module_info();
    let _ = writeln!(out, "backend: pkcs11");
    let _ = writeln!(out, "module: {} ({})", info.path.display(), info.library);
    let _ = writeln!(out, "slot: {} ({})", info.slot, info.slot_description);
    let _ = writeln!(out, "mechanisms: {}", info.mechanisms.join(" "));
    Ok(Box::new(token))
}

#[cfg(not(feature = "pkcs11"))]
fn pkcs11_for_show(_: &Config, _: &Path, _: &mut String) -> Result<Box<dyn Token>, TlsError> {
    Err(TlsError::Token(TokenError::Device(
        "this build has no PKCS#11 support (cargo feature pkcs11)".to_string(),
    )))
}

/// The keys the gateway keeps on its token, by label and class: each stored
/// certificate's (or, before there is one, the first-boot certificate's) and the
/// configuration HMAC key. Read from the store's names alone: no certificate is parsed,
/// so one that is damaged still names its key.
pub(super) fn gateway_keys(state_dir: &Path) -> Result<Vec<(String, ObjectClass)>, TlsError> {
    let dir = state_dir.join(STORE_DIR);
    let mut names = if dir.is_dir() {
        names_in(&dir)?
    } else {
        Vec::new()
    };
    if names.is_empty() {
        names.push(SELF_SIGNED_NAME.to_string());
    }
    let mut keys: Vec<(String, ObjectClass)> = names
        .iter()
        .map(|n| (key_label(n), ObjectClass::PrivateKey))
        .collect();
    keys.push((CONFIG_HMAC_KEY_LABEL.to_string(), ObjectClass::SecretKey));
    Ok(keys)
}

/// Whether the token holds an object of `class` under `label`, and its key type.
fn has_key(token: &dyn Token, label: &str, class: ObjectClass) -> Option<KeyKind> {
    token
        .find_objects(label)
        .into_iter()
        .filter_map(|h| token.object_info(h).ok())
        .find(|info| info.class == class)
        .map(|info| info.kind)
}

/// Logs in with the PIN file's PIN and lists the gateway's keys.
pub fn login(config: &Config, state_dir: &Path) -> Result<String, TlsError> {
    let token = open_token(&config.system.token, state_dir)?;
    let info = token.info();
    let mut out = format!(
        "logged in to token {:?} ({} {})\n",
        info.label, info.manufacturer, info.model
    );
    out.push_str(&keys_report(&token, state_dir)?);
    Ok(out)
}

/// `token login` on the running gateway, whose token is open: logs in with the PIN
/// file's PIN unless the token is logged in (a module answers a second login without
/// checking the PIN, and a failed one must not log the gateway out); the keys.
pub fn login_running(
    token: &Arc<dyn Token>,
    settings: &TokenSettings,
    state_dir: &Path,
) -> Result<String, TlsError> {
    let info = token.info();
    let mut out = if info.logged_in {
        format!(
            "token {:?} ({} {}): logged in since the gateway started; the PIN file is read again at the next start\n",
            info.label, info.manufacturer, info.model
        )
    } else {
        let pin_path = pin_path(settings, state_dir);
        let pin = read_pin(&pin_path, &info.label)?;
        token.login(&pin).map_err(|e| {
            TlsError::Pin(format!(
                "cannot log in to token {:?} with the PIN from {}: {e}",
                info.label,
                pin_path.display()
            ))
        })?;
        format!(
            "logged in to token {:?} ({} {})\n",
            info.label, info.manufacturer, info.model
        )
    };
    out.push_str(&keys_report(token, state_dir)?);
    Ok(out)
}

/// One line per key the gateway needs: present (with its type) or missing.
fn keys_report(token: &Arc<dyn Token>, state_dir: &Path) -> Result<String, TlsError> {
    let mut out = String::new();
    for (label, class) in gateway_keys(state_dir)? {
        match has_key(&**token, &label, class) {
            Some(kind) => {
                let _ = writeln!(out, "key {label}: present ({kind:?})");
            }
            None => {
                let _ = writeln!(out, "key {label}: missing (token init-key makes it)");
            }
        }
    }
    Ok(out)
}

/// Makes the keys the gateway needs that are missing: the first-boot TLS key with its
/// self-signed certificate (when the store has no certificate) and the configuration
/// HMAC key. Keys that exist are kept.
pub fn init_key(config: &Config, state_dir: &Path) -> Result<String, TlsError> {
    let token = open_token(&config.system.token, state_dir)?;
    init_keys(&token, &config.system.host_name, state_dir)
}

/// [`init_key`] with a token already open (the running gateway's, whose services keep
/// a certificate in the store at all times: there it finds the keys present).
pub fn init_keys(
    token: &Arc<dyn Token>,
    host_name: &str,
    state_dir: &Path,
) -> Result<String, TlsError> {
    let store = CertStore::open(&state_dir.join(STORE_DIR), token.clone())?;
    let mut out = String::new();
    match store.ensure_self_signed(host_name, unix_now() as i64)? {
        Some(cert) => {
            let _ = writeln!(
                out,
                "key {}: generated (P-256), with a self-signed certificate for {} (SHA-256 {})",
                key_label(&cert.name),
                cert.names.join(", "),
                cert.fingerprint_sha256
            );
        }
        None => {
            for cert in store.list()? {
                let _ = writeln!(out, "key {}: present", key_label(&cert.name));
            }
        }
    }
    let existed = has_key(&**token, CONFIG_HMAC_KEY_LABEL, ObjectClass::SecretKey).is_some();
    hmac_key(&**token, CONFIG_HMAC_KEY_LABEL)?;
    let _ = writeln!(
        out,
        "key {CONFIG_HMAC_KEY_LABEL}: {}",
        if existed {
            "present"
        } else {
            "generated (HMAC-SHA-256, 32 octets)"
        }
    );
    Ok(out)
}
