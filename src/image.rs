//! Sealing and verifying signed firmware images (format: `drawbridge_image::format`,
//! documented in `image/FORMAT.md`), with every hash and signature through a [`Token`].
//!
//! `cargo xtask build-image` lays an image out and calls `drawbridge image seal`; both
//! `cargo xtask verify-image` and `system update` come to [`verify`].

use std::fmt;
use std::path::Path;

use drawbridge_image::format::{self, FormatError, Image, SectionKind};

use crate::io::token::{KeyKind, Mechanism, ObjectHandle, SoftToken, Token, TokenError};

/// What an image must satisfy to be accepted.
#[derive(Clone, Copy, Debug)]
pub struct Trust<'a> {
    /// Raw Ed25519 public keys (32 bytes each) whose signatures are accepted.
    pub keys: &'a [[u8; 32]],
    /// The board compatibility string the image must carry.
    pub compatible: &'a str,
}

/// Why an image is refused. The checks run in this order: the format, the signature
/// over header and section table, the board, then each section's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    Format(FormatError),
    /// Signed by a key that is not trusted (or not signed at all).
    UnknownKey,
    BadSignature,
    /// A correctly signed image for another board.
    WrongBoard {
        image: String,
        ours: String,
    },
    /// A section whose bytes do not have the SHA-256 the signed table gives.
    SectionHash(SectionKind),
    Token(TokenError),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Format(e) => write!(f, "malformed image: {e}"),
            VerifyError::UnknownKey => f.write_str("the image is not signed by a trusted key"),
            VerifyError::BadSignature => {
                f.write_str("the signature over the header and section table does not verify")
            }
            VerifyError::WrongBoard { image, ours } => {
                write!(f, "the image is for board {image}, this is {ours}")
            }
            VerifyError::SectionHash(k) => {
                write!(f, "the {} section does not match its SHA-256", k.name())
            }
            VerifyError::Token(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// The key id of a raw Ed25519 public key: its SHA-256.
pub fn key_id(token: &dyn Token, public_key: &[u8; 32]) -> [u8; 32] {
    token.digest_sha256(public_key)
}

/// Checks an image completely before anything is done with it.
pub fn verify(token: &dyn Token, trust: &Trust<'_>, bytes: &[u8]) -> Result<Image, VerifyError> {
    let image = format::parse(bytes).map_err(VerifyError::Format)?;
    let key = trust
        .keys
        .iter()
        .find(|k| key_id(token, k) == image.signature.key_id)
        .ok_or(VerifyError::UnknownKey)?;
    token
        .verify(
            Mechanism::Ed25519,
            key,
            &bytes[..image.signed_len],
            &image.signature.signature,
        )
        .map_err(|e| match e {
            TokenError::Crypto => VerifyError::BadSignature,
            other => VerifyError::Token(other),
        })?;
    if image.metadata.board != trust.compatible {
        return Err(VerifyError::WrongBoard {
            image: image.metadata.board.clone(),
            ours: trust.compatible.to_string(),
        });
    }
    for section in &image.sections {
        if token.digest_sha256(image.bytes(bytes, section)) != section.sha256 {
            return Err(VerifyError::SectionHash(section.kind));
        }
    }
    Ok(image)
}

/// Fills in an unsealed image's section hashes and signs it with the token's Ed25519
/// key `key`.
pub fn seal(token: &dyn Token, key: ObjectHandle, bytes: &mut [u8]) -> Result<(), SealError> {
    let image = format::parse(bytes).map_err(SealError::Format)?;
    for (index, section) in image.sections.iter().enumerate() {
        let hash = token.digest_sha256(image.bytes(bytes, section));
        format::set_hash(bytes, index, &hash);
    }
    let public = raw_public_key(token, key)?;
    let signature = token
        .sign(key, Mechanism::Ed25519, &bytes[..image.signed_len])
        .map_err(SealError::Token)?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| SealError::Token(TokenError::Crypto))?;
    format::set_signature(bytes, image.signed_len, &key_id(token, &public), &signature);
    Ok(())
}

/// The raw 32-byte public key of an Ed25519 key on a token.
pub fn raw_public_key(token: &dyn Token, key: ObjectHandle) -> Result<[u8; 32], SealError> {
    let info = token.public_key(key).map_err(SealError::Token)?;
    if info.kind != KeyKind::Ed25519 {
        return Err(SealError::NotEd25519);
    }
    info.subject_public_key()
        .and_then(|k| k.try_into().ok())
        .ok_or(SealError::NotEd25519)
}

/// Why an image could not be sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealError {
    Format(FormatError),
    NotEd25519,
    Token(TokenError),
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::Format(e) => write!(f, "not an image: {e}"),
            SealError::NotEd25519 => f.write_str("the signing key is not an Ed25519 key"),
            SealError::Token(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SealError {}

/// The label of the signing key in a transient token.
const SIGNING_LABEL: &str = "image-signing";
/// A transient token's PIN: it lives in a private temporary folder for one command.
const TRANSIENT_PIN: &str = "transient";

/// A software token in a temporary folder: how a key file becomes a token object on the
/// build machine, and what checks images there. Removed when dropped.
pub struct TransientToken {
    pub token: SoftToken,
    dir: std::path::PathBuf,
}

impl TransientToken {
    pub fn new() -> Result<TransientToken, TokenError> {
        TransientToken::new_in(&std::env::temp_dir())
    }

    /// A transient token in a folder of its own under `parent` (the boot stage has no
    /// `/tmp`, and uses the data disk).
    pub fn new_in(parent: &std::path::Path) -> Result<TransientToken, TokenError> {
        let mut name = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut name)
            .map_err(|_| TokenError::Crypto)?;
        let dir = parent.join(format!("drawbridge-token-{}", hex(&name)));
        // One PBKDF2 iteration: the folder is private and gone when the command ends.
        let token = SoftToken::init_with_iterations(&dir, "transient", None, TRANSIENT_PIN, 1)?;
        let t = TransientToken { token, dir };
        t.token.login(TRANSIENT_PIN)?;
        Ok(t)
    }

    /// A transient token holding the PKCS#8 key `pkcs8`, and the key's handle.
    pub fn with_key(pkcs8: &[u8]) -> Result<(TransientToken, ObjectHandle), TokenError> {
        let t = TransientToken::new()?;
        let (key, _) = t.token.import_private_key(SIGNING_LABEL, pkcs8)?;
        Ok((t, key))
    }
}

impl Drop for TransientToken {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new Ed25519 key as PKCS#8 (v2) DER, for a development signing key.
pub fn generate_key() -> Result<Vec<u8>, TokenError> {
    ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| TokenError::Crypto)
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 32-byte key from 64 hex digits (blanks around it ignored).
pub fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    if t.len() != 64 || !t.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A human summary of a verified image.
pub fn describe(image: &Image, path: &Path) -> String {
    let mut out = format!(
        "{}: verified\n  board    {}\n  version  {}\n  commit   {}\n  built    {} (Unix time)\n  key id   {}\n",
        path.display(),
        image.metadata.board,
        image.metadata.version,
        image.metadata.commit,
        image.metadata.build_time,
        hex(&image.signature.key_id),
    );
    for s in &image.sections {
        out.push_str(&format!(
            "  section  {:<15} {:>10} bytes  sha256 {}\n",
            s.kind.name(),
            s.length,
            hex(&s.sha256)
        ));
    }
    for line in image.metadata.build.lines() {
        out.push_str(&format!("  build    {line}\n"));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use drawbridge_image::format::{Metadata, assemble};

    pub(crate) fn unsealed(board: &str) -> Vec<u8> {
        assemble(
            &Metadata {
                board: board.into(),
                version: "0.1.0".into(),
                commit: "unknown".into(),
                build_time: 0,
                build: String::new(),
            },
            &[
                (SectionKind::Kernel, b"kernel"),
                (SectionKind::Initramfs, b"initramfs"),
                (
                    SectionKind::FactoryConfig,
                    b"set system host-name a.example\n",
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn sealed_images_verify_and_every_flipped_bit_is_refused() {
        let (t, key) = TransientToken::with_key(&generate_key().unwrap()).unwrap();
        let public = raw_public_key(&t.token, key).unwrap();
        let mut bytes = unsealed("drawbridge,test");
        seal(&t.token, key, &mut bytes).unwrap();
        let trust = Trust {
            keys: &[public],
            compatible: "drawbridge,test",
        };
        let image = verify(&t.token, &trust, &bytes).unwrap();
        assert_eq!(image.metadata.board, "drawbridge,test");
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(verify(&t.token, &trust, &b).is_err(), "byte {i}");
        }
        let last = bytes.len() - 1;
        let mut b = bytes.clone();
        b[last] ^= 1;
        assert_eq!(
            verify(&t.token, &trust, &b),
            Err(VerifyError::SectionHash(SectionKind::FactoryConfig))
        );
        let other = Trust {
            keys: &[public],
            compatible: "drawbridge,other",
        };
        assert!(matches!(
            verify(&t.token, &other, &bytes),
            Err(VerifyError::WrongBoard { .. })
        ));
        let stranger = Trust {
            keys: &[[7; 32]],
            compatible: "drawbridge,test",
        };
        assert_eq!(
            verify(&t.token, &stranger, &bytes),
            Err(VerifyError::UnknownKey)
        );
    }

    #[test]
    fn hex_keys() {
        let k = [0xab; 32];
        assert_eq!(parse_hex_key(&format!(" {}\n", hex(&k))), Some(k));
        assert_eq!(parse_hex_key("ab"), None);
        assert_eq!(parse_hex_key(&"zz".repeat(32)), None);
    }
}
