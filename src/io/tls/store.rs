//! The certificate store under `<state>/tls/`: chains as DER files, their private keys on the token.
//!
//! Layout: one directory per certificate, named by its store name (`[a-z0-9-]`, up to
//! [`MAX_NAME_LEN`]), holding `0.der` (the leaf), `1.der`, … in chain order. The key is
//! the token's private key object labelled `tls-<name>`; no key byte is ever written here.
//! Certificates are listed by name, and the first by name is the server's default
//! (SNI falls back to it), so the first-boot certificate is named [`SELF_SIGNED_NAME`].

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::TlsError;
use super::cert::{CertificateFields, parse_certificate};
use super::config::{Certificate, MAX_SERVER_CERTIFICATES};
use super::pem;
use crate::io::token::x509::{Subject, certificate_request, self_signed_certificate};
use crate::io::token::{KeyKind, ObjectClass, ObjectHandle, Token};
use crate::proto::config::{MAX_CERTIFICATE_NAME_LEN, is_certificate_name};

/// Most stored certificates: what the server can choose from by SNI.
pub const MAX_CERTIFICATES: usize = MAX_SERVER_CERTIFICATES;
/// Longest store name: the configuration's longest certificate name.
pub const MAX_NAME_LEN: usize = MAX_CERTIFICATE_NAME_LEN;
/// Largest DER certificate file read back: 16 KiB covers 8192-bit RSA keys with many names.
pub const MAX_CERTIFICATE_FILE_LEN: u64 = 16 * 1024;
/// The name of the certificate made at first boot.
pub const SELF_SIGNED_NAME: &str = "0-self-signed";
/// A self-signed certificate's lifetime: ten years of 365.25 days.
pub const SELF_SIGNED_LIFETIME_SECONDS: i64 = 3_652 * 86_400 + 6 * 3_600;
/// Token labels of certificate keys start with this.
pub const KEY_LABEL_PREFIX: &str = "tls-";

/// A stored certificate as the console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCert {
    pub name: String,
    /// The leaf's DNS names (subjectAltName; the common name if there are none).
    pub names: Vec<String>,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the leaf DER, upper-case hex pairs joined by colons (as OpenSSL prints).
    pub fingerprint_sha256: String,
}

/// The certificate store. Single-threaded use; every change is written before it returns.
pub struct CertStore {
    dir: PathBuf,
    token: Arc<dyn Token>,
}

impl CertStore {
    /// Opens (creating if needed) the store in `dir`; `token` must be logged in.
    pub fn open(dir: &Path, token: Arc<dyn Token>) -> Result<CertStore, TlsError> {
        fs::create_dir_all(dir).map_err(|e| storage(dir, &e))?;
        Ok(CertStore {
            dir: dir.to_path_buf(),
            token,
        })
    }

    /// Imports a PEM chain (leaf, intermediates, root) and its private key under `name`.
    /// The key goes into the token; it must match the leaf.
    pub fn import_pem(
        &self,
        name: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<StoredCert, TlsError> {
        check_name(name)?;
        let chain = pem::parse_chain(chain_pem)?;
        let leaf = parse_certificate(&chain[0])
            .ok_or_else(|| TlsError::Pem("the leaf certificate is not readable".to_string()))?;
        let pkcs8 = pem::parse_private_key(key_pem)?;
        self.check_room(name)?;
        let label = key_label(name);
        self.remove_stale_keys(&label)?;
        let (private, public) = self.token.import_private_key(&label, &pkcs8)?;
        let key_spki = self.token.public_key(private)?.der;
        if key_spki != leaf.spki {
            let _ = self.token.destroy(private);
            let _ = self.token.destroy(public);
            return Err(TlsError::KeyMismatch);
        }
        if let Err(e) = self.write_chain(name, &chain) {
            let _ = self.token.destroy(private);
            let _ = self.token.destroy(public);
            return Err(e);
        }
        log::info!(target: "tls", "imported certificate {name:?}");
        Ok(self.stored(name, &chain[0], &leaf))
    }

    /// Every stored certificate, by name.
    pub fn list(&self) -> Result<Vec<StoredCert>, TlsError> {
        let mut out = Vec::new();
        for name in self.names()? {
            let chain = self.read_chain(&name)?;
            let leaf = parse_certificate(&chain[0])
                .ok_or_else(|| TlsError::Storage(format!("{name}: unreadable certificate")))?;
            out.push(self.stored(&name, &chain[0], &leaf));
        }
        Ok(out)
    }

    /// At first boot (an empty store) makes a P-256 key on the token and a self-signed
    /// certificate for `host_name`, valid ten years from `now_unix`, and returns it so the
    /// caller can announce its fingerprint. `None` when the store has certificates.
    pub fn ensure_self_signed(
        &self,
        host_name: &str,
        now_unix: i64,
    ) -> Result<Option<StoredCert>, TlsError> {
        if !self.names()?.is_empty() {
            return Ok(None);
        }
        let label = key_label(SELF_SIGNED_NAME);
        self.remove_stale_keys(&label)?;
        let (private, _) = self.token.generate_key_pair(KeyKind::EcP256, &label)?;
        let subject = Subject {
            common_name: host_name.to_string(),
            dns_names: vec![host_name.to_string()],
        };
        let not_after =
            now_unix
                .checked_add(SELF_SIGNED_LIFETIME_SECONDS)
                .ok_or(TlsError::Certificate(
                    crate::io::token::x509::CertificateError::InvalidValidity,
                ))?;
        let der = self_signed_certificate(&*self.token, private, &subject, now_unix, not_after)?;
        let leaf = parse_certificate(&der)
            .ok_or_else(|| TlsError::Storage("generated certificate unreadable".to_string()))?;
        self.write_chain(SELF_SIGNED_NAME, std::slice::from_ref(&der))?;
        log::info!(target: "tls", "generated a self-signed certificate for {host_name}");
        Ok(Some(self.stored(SELF_SIGNED_NAME, &der, &leaf)))
    }

    /// A PEM certificate request for the key of certificate `name`, asking for its names.
    pub fn request(&self, name: &str) -> Result<String, TlsError> {
        check_name(name)?;
        let chain = self.read_chain(name)?;
        let leaf = parse_certificate(&chain[0])
            .ok_or_else(|| TlsError::Storage(format!("{name}: unreadable certificate")))?;
        let key = self.private_key(name)?;
        let names = leaf_names(&leaf);
        let subject = Subject {
            common_name: leaf
                .common_name
                .clone()
                .or_else(|| names.first().cloned())
                .unwrap_or_else(|| name.to_string()),
            dns_names: leaf.dns_names.clone(),
        };
        let der = certificate_request(&*self.token, key, &subject)?;
        Ok(pem::encode("CERTIFICATE REQUEST", &der))
    }

    /// The stored certificates in the form [`super::server_config`] takes, default first.
    pub fn settings_certificates(&self) -> Result<Vec<Certificate>, TlsError> {
        let mut out = Vec::new();
        for name in self.names()? {
            let chain = self.read_chain(&name)?;
            let leaf = parse_certificate(&chain[0])
                .ok_or_else(|| TlsError::Storage(format!("{name}: unreadable certificate")))?;
            out.push(Certificate {
                name: name.clone(),
                names: leaf_names(&leaf),
                key: self.private_key(&name)?,
                chain,
            });
        }
        Ok(out)
    }

    /// Removes certificate `name` and its key.
    pub fn remove(&self, name: &str) -> Result<(), TlsError> {
        check_name(name)?;
        let dir = self.dir.join(name);
        if !dir.is_dir() {
            return Err(TlsError::NoSuchCertificate);
        }
        fs::remove_dir_all(&dir).map_err(|e| storage(&dir, &e))?;
        self.remove_stale_keys(&key_label(name))
    }

    fn stored(&self, name: &str, leaf_der: &[u8], leaf: &CertificateFields) -> StoredCert {
        let digest = self.token.digest_sha256(leaf_der);
        StoredCert {
            name: name.to_string(),
            names: leaf_names(leaf),
            not_after: leaf.not_after,
            fingerprint_sha256: digest
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":"),
        }
    }

    fn check_room(&self, name: &str) -> Result<(), TlsError> {
        let names = self.names()?;
        if names.iter().any(|n| n == name) {
            return Err(TlsError::CertificateExists);
        }
        if names.len() >= MAX_CERTIFICATES {
            return Err(TlsError::TooManyCertificates);
        }
        Ok(())
    }

    /// Store names, sorted; entries that are not certificate directories are skipped.
    fn names(&self) -> Result<Vec<String>, TlsError> {
        names_in(&self.dir)
    }

    /// Writes the chain to a temporary directory, then renames it into place.
    fn write_chain(&self, name: &str, chain: &[Vec<u8>]) -> Result<(), TlsError> {
        let temporary = self.dir.join(format!(".new-{name}"));
        let _ = fs::remove_dir_all(&temporary);
        fs::create_dir(&temporary).map_err(|e| storage(&temporary, &e))?;
        for (index, der) in chain.iter().enumerate() {
            let path = temporary.join(format!("{index}.der"));
            write_synced(&path, der)?;
        }
        let target = self.dir.join(name);
        fs::rename(&temporary, &target).map_err(|e| storage(&target, &e))?;
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn read_chain(&self, name: &str) -> Result<Vec<Vec<u8>>, TlsError> {
        let dir = self.dir.join(name);
        if !dir.join("0.der").is_file() {
            return Err(TlsError::NoSuchCertificate);
        }
        let mut chain = Vec::new();
        for index in 0..pem::MAX_CHAIN_LEN {
            let path = dir.join(format!("{index}.der"));
            if !path.is_file() {
                break;
            }
            let len = fs::metadata(&path).map_err(|e| storage(&path, &e))?.len();
            if len > MAX_CERTIFICATE_FILE_LEN {
                return Err(TlsError::Storage(format!("{}: too large", path.display())));
            }
            chain.push(fs::read(&path).map_err(|e| storage(&path, &e))?);
        }
        Ok(chain)
    }

    fn private_key(&self, name: &str) -> Result<ObjectHandle, TlsError> {
        let label = key_label(name);
        self.token
            .find_objects(&label)
            .into_iter()
            .find(|handle| {
                self.token
                    .object_info(*handle)
                    .is_ok_and(|info| info.class == ObjectClass::PrivateKey)
            })
            .ok_or_else(|| TlsError::Storage(format!("no key {label:?} on the token")))
    }

    /// Destroys token objects left under `label` by an interrupted import.
    fn remove_stale_keys(&self, label: &str) -> Result<(), TlsError> {
        for handle in self.token.find_objects(label) {
            self.token.destroy(handle)?;
        }
        Ok(())
    }
}

/// The names of the certificates stored in `dir`, sorted; entries that are not
/// certificate directories are skipped. No token is needed.
pub fn names_in(dir: &Path) -> Result<Vec<String>, TlsError> {
    let mut names = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| storage(dir, &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| storage(dir, &e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if check_name(&name).is_ok() && entry.path().join("0.der").is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The token label of the key of certificate `name`.
pub fn key_label(name: &str) -> String {
    format!("{KEY_LABEL_PREFIX}{name}")
}

fn leaf_names(leaf: &CertificateFields) -> Vec<String> {
    if leaf.dns_names.is_empty() {
        leaf.common_name.iter().cloned().collect()
    } else {
        leaf.dns_names.clone()
    }
}

/// `Ok` for a store name: the configuration's certificate name rule
/// ([`is_certificate_name`]).
pub fn check_name(name: &str) -> Result<(), TlsError> {
    if is_certificate_name(name) {
        Ok(())
    } else {
        Err(TlsError::InvalidName)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut file = fs::File::create(path).map_err(|e| storage(path, &e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| storage(path, &e))
}

fn storage(path: &Path, e: &std::io::Error) -> TlsError {
    TlsError::Storage(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lower_case_words() {
        assert!(check_name("mail-1").is_ok());
        assert!(check_name(SELF_SIGNED_NAME).is_ok());
        for bad in [
            "",
            "Mail",
            "a/b",
            "..",
            "a.b",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert_eq!(check_name(bad), Err(TlsError::InvalidName), "{bad:?}");
        }
    }
}
