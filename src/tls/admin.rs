//! `drawbridge certificate …`: the certificate store, worked on from the command line.

use std::path::Path;

use super::TlsError;
use super::open_token;
use super::setup::STORE_DIR;
use super::store::{CertStore, StoredCert};
use crate::cli::CertificateAction;
use crate::clock::unix_now;
use crate::config::TokenSettings;

/// Carries out one certificate command on the state directory, with the keys on the
/// token `settings` name; the text to print.
pub fn certificate(
    action: &CertificateAction,
    state_dir: &Path,
    settings: &TokenSettings,
) -> Result<String, TlsError> {
    certificate_on(action, state_dir, open_token(settings, state_dir)?)
}

/// [`certificate`] with a token already open (the running gateway's).
pub fn certificate_on(
    action: &CertificateAction,
    state_dir: &Path,
    token: std::sync::Arc<dyn crate::token::Token>,
) -> Result<String, TlsError> {
    let store = CertStore::open(&state_dir.join(STORE_DIR), token)?;
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| TlsError::Io(format!("{}: {e}", path.display())))
    };
    match action {
        CertificateAction::Show => {
            let certs = store.list()?;
            if certs.is_empty() {
                return Ok("no certificates\n".into());
            }
            Ok(certs.iter().map(describe).collect())
        }
        CertificateAction::Import { name, chain, key } => {
            let cert = store.import_pem(name, &read(chain)?, &read(key)?)?;
            Ok(format!(
                "imported {}restart the gateway to serve it\n",
                describe(&cert)
            ))
        }
        CertificateAction::Request { name } => store.request(name),
        CertificateAction::Delete { name } => {
            store.remove(name)?;
            Ok(format!("deleted {name}\n"))
        }
        CertificateAction::GenerateSelfSigned { host_name } => {
            match store.ensure_self_signed(host_name, unix_now() as i64)? {
                Some(cert) => Ok(format!("generated {}", describe(&cert))),
                None => Ok("the store has certificates already; nothing generated\n".into()),
            }
        }
    }
}

fn describe(cert: &StoredCert) -> String {
    format!(
        "{}: {} (expires {}, SHA-256 {})\n",
        cert.name,
        cert.names.join(", "),
        crate::clock::rfc5322(u64::try_from(cert.not_after).unwrap_or(0)),
        cert.fingerprint_sha256
    )
}
