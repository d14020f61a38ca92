//! `drawbridge certificate …`: the certificate store, worked on by the running gateway
//! (through its control socket, so that a change is served at once) or, when none runs,
//! on the state directory itself.

use std::path::{Path, PathBuf};

use crate::gateway::Gateway;
use crate::io::clock::unix_now;
use crate::io::tls::setup::STORE_DIR;
use crate::io::tls::store::{CertStore, StoredCert};
use crate::io::tls::{TlsError, open_token};
use crate::proto::config::{ServiceName, TokenSettings};

/// What `drawbridge certificate …` does.
#[derive(Debug, PartialEq, Eq)]
pub enum CertificateAction {
    Show,
    /// Import a PEM chain (leaf first) and its private key under a name.
    Import {
        name: String,
        chain: PathBuf,
        key: PathBuf,
    },
    /// Print a certificate request (CSR) for a stored certificate's key.
    Request {
        name: String,
    },
    /// Make a self-signed certificate for a host name when the store is empty.
    GenerateSelfSigned {
        host_name: String,
    },
    /// Remove a certificate and its key.
    Delete {
        name: String,
    },
}

/// One certificate command, as it travels on the control socket. An import's PEM chain
/// and key travel as the request's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateRequest {
    Show,
    /// Import the body's PEM chain (leaf first) and private key under a name.
    Import {
        name: String,
    },
    /// Remove a certificate and its key.
    Delete {
        name: String,
    },
    /// A certificate request (CSR) for a stored certificate's key.
    Request {
        name: String,
    },
    /// A self-signed certificate for a host name, when the store is empty.
    GenerateSelfSigned {
        host_name: String,
    },
}

impl CertificateRequest {
    /// Parses the words after `certificate`.
    pub fn parse(words: &[&str]) -> Result<CertificateRequest, String> {
        Ok(match words {
            ["show"] => CertificateRequest::Show,
            ["import", name] => CertificateRequest::Import {
                name: name.to_string(),
            },
            ["delete", name] => CertificateRequest::Delete {
                name: name.to_string(),
            },
            ["request", name] => CertificateRequest::Request {
                name: name.to_string(),
            },
            ["generate-self-signed", host] => CertificateRequest::GenerateSelfSigned {
                host_name: host.to_string(),
            },
            _ => return Err(format!("unknown certificate request '{}'", words.join(" "))),
        })
    }

    /// The words after `certificate`.
    pub fn line(&self) -> String {
        match self {
            CertificateRequest::Show => "show".into(),
            CertificateRequest::Import { name } => format!("import {name}"),
            CertificateRequest::Delete { name } => format!("delete {name}"),
            CertificateRequest::Request { name } => format!("request {name}"),
            CertificateRequest::GenerateSelfSigned { host_name } => {
                format!("generate-self-signed {host_name}")
            }
        }
    }

    /// Whether the request changes what the services serve.
    pub fn changes_the_store(&self) -> bool {
        matches!(
            self,
            CertificateRequest::Import { .. }
                | CertificateRequest::Delete { .. }
                | CertificateRequest::GenerateSelfSigned { .. }
        )
    }
}

/// The request a `certificate …` command makes, with its body: an import reads its
/// chain and key files here, so that the gateway is handed their PEM text.
pub fn request_of(action: &CertificateAction) -> Result<(CertificateRequest, String), String> {
    use CertificateAction as A;
    use CertificateRequest as R;
    /// The largest certificate or key file read.
    const MAX_PEM_FILE: usize = 1024 * 1024;
    Ok(match action {
        A::Show => (R::Show, String::new()),
        A::Request { name } => (R::Request { name: name.clone() }, String::new()),
        A::Delete { name } => (R::Delete { name: name.clone() }, String::new()),
        A::GenerateSelfSigned { host_name } => (
            R::GenerateSelfSigned {
                host_name: host_name.clone(),
            },
            String::new(),
        ),
        A::Import { name, chain, key } => {
            // Regular files of at most 1 MiB (a chain is a few KiB): never `/dev/zero`,
            // never a FIFO that holds a thread for ever.
            let read =
                |p: &Path| super::exec::read_text_file(p, &p.display().to_string(), MAX_PEM_FILE);
            let pem = format!("{}\n{}", read(chain)?, read(key)?);
            (R::Import { name: name.clone() }, pem)
        }
    })
}

/// Carries out `request` on `store`; `pem` is an import's chain and key. The text to
/// print.
pub fn execute(
    store: &CertStore,
    request: &CertificateRequest,
    pem: &str,
) -> Result<String, TlsError> {
    match request {
        CertificateRequest::Show => {
            let certs = store.list()?;
            if certs.is_empty() {
                return Ok("no certificates\n".into());
            }
            Ok(certs.iter().map(describe).collect())
        }
        CertificateRequest::Import { name } => {
            let cert = store.import_pem(name, pem, pem)?;
            Ok(format!("imported {}", describe(&cert)))
        }
        CertificateRequest::Delete { name } => {
            store.remove(name)?;
            Ok(format!("deleted {name}\n"))
        }
        CertificateRequest::Request { name } => store.request(name),
        CertificateRequest::GenerateSelfSigned { host_name } => {
            match store.ensure_self_signed(host_name, unix_now() as i64)? {
                Some(cert) => Ok(format!("generated {}", describe(&cert))),
                None => Ok("the store has certificates already; nothing generated\n".into()),
            }
        }
    }
}

/// Carries out one certificate command on a stopped gateway's state directory, with the
/// keys on the token `settings` name.
pub fn offline(
    request: &CertificateRequest,
    pem: &str,
    state_dir: &Path,
    settings: &TokenSettings,
) -> Result<String, TlsError> {
    let token = open_token(settings, state_dir)?;
    let store = CertStore::open(&state_dir.join(STORE_DIR), token)?;
    let mut text = execute(&store, request, pem)?;
    if request.changes_the_store() {
        text.push_str("the gateway serves it from its next start\n");
    }
    Ok(text)
}

fn describe(cert: &StoredCert) -> String {
    format!(
        "{}: {} (expires {}, SHA-256 {})\n",
        cert.name,
        cert.names.join(", "),
        crate::proto::calendar::rfc5322(u64::try_from(cert.not_after).unwrap_or(0)),
        cert.fingerprint_sha256
    )
}

/// A certificate command on the running gateway's store; a change is served by new
/// sessions at once.
pub fn on_gateway(gw: &Gateway, request: &CertificateRequest, pem: &str) -> Result<String, String> {
    if let CertificateRequest::Delete { name } = request {
        let config = gw.config();
        if let Some(s) = ServiceName::ALL
            .into_iter()
            .find(|s| config.service(*s).certificate.as_deref() == Some(name.as_str()))
        {
            return Err(format!(
                "certificate {name} is in use by 'set service {s} certificate {name}': delete that first"
            ));
        }
    }
    let store =
        CertStore::open(&gw.state_dir.join(STORE_DIR), gw.token()).map_err(|e| e.to_string())?;
    let text = execute(&store, request, pem).map_err(|e| e.to_string())?;
    if request.changes_the_store() {
        log::info!(target: "tls", "certificate {}: the services use the store as it is now", request.line());
        gw.reload_certificates();
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print_back() {
        for line in [
            "show",
            "import mail-2026",
            "delete 0-self-signed",
            "request mail-2026",
            "generate-self-signed gw.example.com",
        ] {
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(CertificateRequest::parse(&words).unwrap().line(), line);
        }
        assert!(CertificateRequest::parse(&["import"]).is_err());
        assert!(CertificateRequest::parse(&["delete", "a", "b"]).is_err());
    }

    #[test]
    fn an_import_reads_regular_files_of_bounded_size_only() {
        let dir = std::env::temp_dir().join(format!("drawbridge-cert-read-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let chain = dir.join("chain.pem");
        std::fs::write(&chain, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let import = |key: &Path| {
            request_of(&CertificateAction::Import {
                name: "mail".into(),
                chain: chain.clone(),
                key: key.to_path_buf(),
            })
        };
        let fifo = dir.join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        // Neither endless nor never-answering: refused at once.
        for key in [Path::new("/dev/zero"), fifo.as_path()] {
            let e = import(key).unwrap_err();
            assert!(e.ends_with("not a regular file"), "{e}");
        }
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'A'; 1024 * 1024 + 1]).unwrap();
        assert!(import(&big).unwrap_err().contains("is larger than"));
        let key = dir.join("key.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        let (_, pem) = import(&key).unwrap();
        assert!(pem.contains("CERTIFICATE") && pem.contains("PRIVATE KEY"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
