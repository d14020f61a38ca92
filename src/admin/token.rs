//! `drawbridge token …` and the console's `token` commands: look at the token, check its
//! PIN, make the keys the gateway needs.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::digest;

use crate::io::clock::unix_now;
use crate::io::tls::setup::{STORE_DIR, TOKEN_LABEL};
use crate::io::tls::store::{CertStore, SELF_SIGNED_NAME, key_label, names_in};
use crate::io::tls::{TOKEN_DIR, TlsError, open_token, pin_path, read_pin};
use crate::io::token::pin_file::MAX_PIN_FILE_LEN;
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

/// How long the separate login of [`check_pin_apart`] may take: a PKCS#11 module that
/// answers in none is as good as one that refuses.
pub const PIN_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// `token login` on the running gateway, whose token is open: logs in with the PIN
/// file's PIN unless the token is logged in; the keys. A logged-in token cannot check a
/// PIN in this process (a module answers a second login without checking it, and a
/// failed one must not log the gateway out), so the PIN file is then checked by a login
/// of its own in another process ([`check_pin_apart`]), as the next start will log in.
pub fn login_running(
    token: &Arc<dyn Token>,
    settings: &TokenSettings,
    state_dir: &Path,
) -> Result<String, TlsError> {
    let info = token.info();
    let mut out = if info.logged_in {
        check_pin_apart(state_dir)?;
        format!(
            "token {:?} ({} {}): logged in since the gateway started; the PIN file's PIN opens it (checked by a login of its own, as the next start logs in)\n",
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

/// Logs in to the token the next start opens (the newest commit's token settings, with
/// their PIN file) from another process, `drawbridge token login --state-dir DIR`: PKCS#11
/// logins belong to a process, so this one checks the PIN for real and leaves the
/// gateway's login alone. A refusal is the child's own error line.
///
/// Every refused PIN counts towards the token's lock (10 in a row lock the software
/// token), so a PIN file the token refused is not tried again until it is written again
/// or the token settings change: a monitoring script that runs `token login` cannot lock
/// the token. Checks run one at a time, so that two consoles asking at once make one
/// attempt, not two.
pub fn check_pin_apart(state_dir: &Path) -> Result<(), TlsError> {
    let refused = |why: String| {
        TlsError::Pin(format!(
            "the PIN file does not open the token: {why} (the gateway stays logged in; its next start would fail)"
        ))
    };
    // Held to the end: a check waits for the one under way and then sees its refusal.
    let mut refused_file = lock_refused();
    let settings = crate::gateway::token_settings(state_dir, None);
    let pin_file = pin_path(&settings, state_dir);
    let seen = pin_file_digest(&settings, &pin_file);
    if seen.is_some() && *refused_file == seen {
        return Err(refused(format!(
            "{} has not been written since the token refused its PIN, and is not tried again (each refused PIN counts towards the token's lock; write the file again to have it tried)",
            pin_file.display()
        )));
    }
    let exe =
        std::env::current_exe().map_err(|e| refused(format!("cannot find drawbridge: {e}")))?;
    let mut child = Command::new(exe)
        .args(["token", "login", "--state-dir"])
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| refused(format!("cannot start drawbridge token login: {e}")))?;
    // Drained beside the wait, so that a talkative child never blocks on a full pipe.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut said = Vec::new();
            let _ = pipe.read_to_end(&mut said);
            said
        })
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PIN_CHECK_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(refused(format!(
                    "no answer in {} s",
                    PIN_CHECK_TIMEOUT.as_secs()
                )));
            }
        }
    };
    if status.success() {
        *refused_file = None;
        return Ok(());
    }
    let said = stderr
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    let said = String::from_utf8_lossy(&said);
    // Only a refused PIN counts towards the lock; any other failure may be tried again.
    // A file written while the child read it is not the file the token refused.
    if said.contains(&TokenError::PinIncorrect.to_string())
        && pin_file_digest(&settings, &pin_file) == seen
    {
        *refused_file = seen;
    }
    let why = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("drawbridge: ").to_string())
        .unwrap_or_else(|| format!("drawbridge token login: {status}"));
    Err(refused(why))
}

/// The PIN file whose PIN the last check apart saw refused ([`pin_file_digest`]); locked
/// for the whole of a check, so that checks run one at a time.
static REFUSED_PIN_FILE: Mutex<Option<[u8; 32]>> = Mutex::new(None);

fn lock_refused() -> std::sync::MutexGuard<'static, Option<[u8; 32]>> {
    REFUSED_PIN_FILE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SHA-256 of what a check of a PIN file tries: the token settings (another token, or
/// another module, may take the same PIN), the file's path, its modification time (a
/// file written again is tried again, as after the token's PIN was changed to it) and
/// its content (at most [`MAX_PIN_FILE_LEN`] octets); `None` when it cannot be read.
fn pin_file_digest(settings: &TokenSettings, path: &Path) -> Option<[u8; 32]> {
    let file = std::fs::File::open(path).ok()?;
    let written = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut content = Vec::new();
    file.take(MAX_PIN_FILE_LEN as u64 + 1)
        .read_to_end(&mut content)
        .ok()?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(format!("{settings:?}").as_bytes());
    ctx.update(&[0]);
    ctx.update(path.as_os_str().as_encoded_bytes());
    ctx.update(&[0]);
    ctx.update(&written.to_le_bytes());
    ctx.update(&content);
    ctx.finish().as_ref().try_into().ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::queue::tests::TempDir;

    #[test]
    fn a_refused_pin_file_is_tried_again_once_written_again_or_for_another_token() {
        let dir = TempDir::new("pin-digest");
        let path = dir.path().join("sslpassword.conf");
        std::fs::write(&path, "drawbridge:1234\n").unwrap();
        let soft = TokenSettings::default();
        let refused = pin_file_digest(&soft, &path);
        assert!(refused.is_some());
        assert_eq!(pin_file_digest(&soft, &path), refused, "unchanged");
        let hsm = TokenSettings {
            backend: TokenBackend::Pkcs11,
            module: Some("/usr/lib/softhsm/libsofthsm2.so".into()),
            ..TokenSettings::default()
        };
        assert_ne!(pin_file_digest(&hsm, &path), refused, "another token");
        // Written again with the same PIN, as after the token's PIN was changed to it.
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        let written = file.metadata().unwrap().modified().unwrap();
        file.set_modified(written + Duration::from_secs(1)).unwrap();
        assert_ne!(pin_file_digest(&soft, &path), refused, "written again");
        assert_eq!(pin_file_digest(&soft, &dir.path().join("none")), None);
    }
}
