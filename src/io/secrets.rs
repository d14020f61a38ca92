//! The passwords the gateway logs in to next hops with (`secrets.db` in the state
//! directory) and the `drawbridge secret …` command.
//!
//! Client SMTP AUTH needs the password itself, so unlike the user database this store is
//! reversible. It is sealed: the whole file is AES-256-GCM under a key derived on the
//! token (HMAC-SHA-256 of [`KEY_LABEL`] under the token's `config-hmac` key), so a copy
//! of the state directory without the token reveals nothing, and a file changed by
//! anyone without the token is refused. It is written 0600 (the gateway's umask), by
//! temporary file, fsync and rename. Passwords are never printed: `secret show` lists
//! names only, and `config show` shows a route's user name, never its password.
//!
//! Stored form: [`MAGIC`], a 12-octet nonce, then the sealed list: a 2-octet count and
//! per entry a 1-octet name length, the name, a 1-octet password length, the password.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::io::token::{CONFIG_HMAC_KEY_LABEL, Token, TokenError, hmac_key};

/// The store's file in the state directory.
pub const SECRETS_FILE: &str = "secrets.db";
/// The file's first octets: a name and the format version.
pub const MAGIC: &[u8; 6] = b"DBSEC\x01";
/// What the sealing key is the HMAC of: a label no other use of the key signs (the
/// configuration slots' records start with their own magic).
pub const KEY_LABEL: &[u8] = b"drawbridge next-hop secrets v1";
/// Most passwords stored: one per route at most, and routes are at most 1024; 256 covers
/// any real site. Worst case about 256 × 512 octets = 128 KiB.
pub const MAX_SECRETS: usize = 256;
/// Longest name or password: 255 octets (RFC 4616 §2's bound, `sasl::MAX_FIELD_LEN`).
pub const MAX_FIELD: usize = crate::proto::sasl::MAX_FIELD_LEN;
/// Largest file read: every entry at its longest, with the header and the tag.
pub const MAX_FILE_LEN: usize =
    MAGIC.len() + NONCE_LEN + 2 + MAX_SECRETS * (2 + 2 * MAX_FIELD) + 16;

/// The key the store is sealed with, derived on the token.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// The key for the token's store (logged in; the `config-hmac` key is made on first
    /// use, as the configuration store makes it).
    pub fn derive(token: &dyn Token) -> Result<SealKey, TokenError> {
        let key = hmac_key(token, CONFIG_HMAC_KEY_LABEL)?;
        Ok(SealKey(token.hmac_sha256(key, KEY_LABEL)?))
    }

    fn aead(&self) -> LessSafeKey {
        // INVARIANT: the key is 32 octets, AES-256's length.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-octet key"))
    }
}

/// Why the store could not be used.
#[derive(Debug)]
pub enum SecretsError {
    Io(io::Error),
    /// The file is damaged, or sealed under another token's key.
    Unsealable,
    /// A name or password of 0 or more than [`MAX_FIELD`] octets, or a name that is not
    /// a user name a route can give.
    BadField(&'static str),
    Full,
    NotFound(String),
    /// No password on standard input.
    NoPassword,
}

impl std::fmt::Display for SecretsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretsError::Io(e) => write!(f, "{e}"),
            SecretsError::Unsealable => {
                f.write_str("the secret store is damaged or sealed by another token's key")
            }
            SecretsError::BadField(what) => write!(f, "not a valid {what}"),
            SecretsError::Full => write!(f, "the secret store is full ({MAX_SECRETS} entries)"),
            SecretsError::NotFound(name) => write!(f, "no secret for {name}"),
            SecretsError::NoPassword => f.write_str("no password given on standard input"),
        }
    }
}

/// The passwords by user name. Wiped from memory when dropped.
#[derive(Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, String>);

impl Drop for Secrets {
    fn drop(&mut self) {
        for password in self.0.values_mut() {
            // SAFETY: zero octets are valid UTF-8.
            unsafe { password.as_bytes_mut() }.fill(0);
            std::hint::black_box(password);
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Sets `name`'s password; a name is what `set route … auth user NAME` takes.
    pub fn set(&mut self, name: &str, password: &str) -> Result<(), SecretsError> {
        crate::proto::config::text::value::auth_user(name)
            .map_err(|_| SecretsError::BadField("user name"))?;
        if password.is_empty() || password.len() > MAX_FIELD {
            return Err(SecretsError::BadField("password (1 to 255 octets)"));
        }
        if !self.0.contains_key(name) && self.0.len() >= MAX_SECRETS {
            return Err(SecretsError::Full);
        }
        self.0.insert(name.to_string(), password.to_string());
        Ok(())
    }

    pub fn delete(&mut self, name: &str) -> Result<(), SecretsError> {
        self.0
            .remove(name)
            .map(drop)
            .ok_or_else(|| SecretsError::NotFound(name.to_string()))
    }

    /// The sealed file: `nonce` must be fresh for every write.
    pub fn seal(&self, key: &SealKey, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut plain = Vec::new();
        // At most MAX_SECRETS entries, each field at most 255 octets: the casts fit.
        plain.extend_from_slice(&(self.0.len() as u16).to_be_bytes());
        for (name, password) in &self.0 {
            for field in [name, password] {
                plain.push(field.len() as u8);
                plain.extend_from_slice(field.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        // INVARIANT: sealing only fails for inputs over 2^36 octets; ours are a few KiB.
        key.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(MAGIC),
                &mut plain,
            )
            .expect("small input");
        out.extend_from_slice(&plain);
        plain.fill(0);
        out
    }

    /// Opens a sealed file, checking every bound.
    pub fn open(bytes: &[u8], key: &SealKey) -> Result<Secrets, SecretsError> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .filter(|_| bytes.len() <= MAX_FILE_LEN)
            .ok_or(SecretsError::Unsealable)?;
        if rest.len() < NONCE_LEN {
            return Err(SecretsError::Unsealable);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::Unsealable)?;
        let mut buf = sealed.to_vec();
        let plain = key
            .aead()
            .open_in_place(nonce, Aad::from(MAGIC), &mut buf)
            .map_err(|_| SecretsError::Unsealable)?;
        let secrets = parse(plain);
        buf.fill(0);
        secrets
    }
}

/// The entries of an opened file; its seal is checked, so a failure here is a bug of
/// the writer, still refused rather than trusted.
fn parse(plain: &[u8]) -> Result<Secrets, SecretsError> {
    let mut secrets = Secrets::default();
    let (count, mut rest) = plain.split_at_checked(2).ok_or(SecretsError::Unsealable)?;
    let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
    if count > MAX_SECRETS {
        return Err(SecretsError::Unsealable);
    }
    let field = |rest: &mut &[u8]| -> Result<String, SecretsError> {
        let (&len, after) = rest.split_first().ok_or(SecretsError::Unsealable)?;
        let (text, after) = after
            .split_at_checked(usize::from(len))
            .ok_or(SecretsError::Unsealable)?;
        *rest = after;
        String::from_utf8(text.to_vec()).map_err(|_| SecretsError::Unsealable)
    };
    for _ in 0..count {
        let name = field(&mut rest)?;
        let password = field(&mut rest)?;
        secrets.set(&name, &password)?;
    }
    if !rest.is_empty() {
        return Err(SecretsError::Unsealable);
    }
    Ok(secrets)
}

pub fn secrets_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SECRETS_FILE)
}

/// The store in `state_dir`; empty when there is no file yet. Reads the disk: run it on
/// the blocking pool from the executor.
pub fn load(state_dir: &Path, key: &SealKey) -> Result<Secrets, SecretsError> {
    let path = secrets_path(state_dir);
    let bytes = match File::open(&path) {
        Ok(f) => {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut io::Read::take(f, MAX_FILE_LEN as u64 + 1), &mut bytes)
                .map_err(SecretsError::Io)?;
            bytes
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Secrets::default()),
        Err(e) => return Err(SecretsError::Io(e)),
    };
    Secrets::open(&bytes, key)
}

/// Writes the store atomically, 0600: temporary file, fsync, rename, directory fsync.
pub fn save(state_dir: &Path, key: &SealKey, secrets: &Secrets) -> Result<(), SecretsError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SecretsError::Io(io::Error::other("no randomness available")))?;
    let sealed = secrets.seal(key, nonce);
    let path = secrets_path(state_dir);
    let tmp = path.with_extension("db.tmp");
    let write = || -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        fs::create_dir_all(state_dir)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&sealed)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(state_dir)?.sync_all()
    };
    write().map_err(SecretsError::Io)
}

/// What `drawbridge secret …` does.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretAction {
    /// Set a password (from standard input) for a user name routes log in as.
    Set {
        name: String,
    },
    Delete {
        name: String,
    },
    /// The names that have a password; never the passwords.
    Show,
}

/// Carries out a secret command on the state directory's store.
pub fn secret(
    action: &SecretAction,
    state_dir: &Path,
    key: &SealKey,
    password: Option<&str>,
) -> Result<String, SecretsError> {
    let mut secrets = load(state_dir, key)?;
    let text = match action {
        SecretAction::Set { name } => {
            secrets.set(name, password.ok_or(SecretsError::NoPassword)?)?;
            format!("set the password of {name}\n")
        }
        SecretAction::Delete { name } => {
            secrets.delete(name)?;
            format!("deleted the password of {name}\n")
        }
        SecretAction::Show => {
            let names: Vec<&str> = secrets.names().collect();
            return Ok(if names.is_empty() {
                "no secrets\n".into()
            } else {
                names.iter().map(|n| format!("{n}\n")).collect()
            });
        }
    };
    save(state_dir, key, &secrets)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealKey {
        SealKey([b; 32])
    }

    fn two() -> Secrets {
        let mut s = Secrets::default();
        s.set("relay@example.com", "pencil").unwrap();
        s.set("apikey", "p,w=\u{e9}").unwrap();
        s
    }

    #[test]
    fn a_sealed_store_opens_with_its_key_only() {
        let sealed = two().seal(&key(1), [7; NONCE_LEN]);
        assert!(sealed.starts_with(MAGIC));
        assert!(
            !sealed.windows(6).any(|w| w == b"pencil"),
            "the password is not in clear"
        );
        let opened = Secrets::open(&sealed, &key(1)).unwrap();
        assert_eq!(opened, two());
        assert_eq!(opened.get("relay@example.com"), Some("pencil"));
        assert!(matches!(
            Secrets::open(&sealed, &key(2)),
            Err(SecretsError::Unsealable)
        ));
        // Any octet changed, or the file cut anywhere, is refused.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x20;
            assert!(Secrets::open(&bad, &key(1)).is_err(), "flip at {i}");
            assert!(Secrets::open(&sealed[..i], &key(1)).is_err(), "cut at {i}");
        }
        assert!(Secrets::open(&[MAGIC.as_slice(), &[0; MAX_FILE_LEN]].concat(), &key(1)).is_err());
    }

    #[test]
    fn fields_and_entries_are_bounded() {
        let mut s = Secrets::default();
        assert!(s.set("", "pw").is_err());
        assert!(s.set("two words", "pw").is_err());
        assert!(s.set("a", "").is_err());
        assert!(s.set("a", &"x".repeat(256)).is_err());
        s.set(&"n".repeat(255), &"x".repeat(255)).unwrap();
        for i in 1..MAX_SECRETS {
            s.set(&format!("u{i}"), "pw").unwrap();
        }
        assert!(matches!(s.set("one-more", "pw"), Err(SecretsError::Full)));
        s.set("u1", "changed").unwrap();
        // The largest store there can be still opens.
        let sealed = s.seal(&key(3), [0; NONCE_LEN]);
        assert!(sealed.len() <= MAX_FILE_LEN);
        assert_eq!(Secrets::open(&sealed, &key(3)).unwrap(), s);
    }

    #[test]
    fn commands_never_print_a_password() {
        let dir = std::env::temp_dir().join(format!("drawbridge-secrets-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let k = key(4);
        let set = SecretAction::Set {
            name: "relay@example.com".into(),
        };
        assert!(matches!(
            secret(&set, &dir, &k, None),
            Err(SecretsError::NoPassword)
        ));
        let out = secret(&set, &dir, &k, Some("hunter2")).unwrap();
        assert!(!out.contains("hunter2"));
        let shown = secret(&SecretAction::Show, &dir, &k, None).unwrap();
        assert_eq!(shown, "relay@example.com\n");
        assert_eq!(
            load(&dir, &k).unwrap().get("relay@example.com"),
            Some("hunter2")
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(secrets_path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(load(&dir, &key(5)), Err(SecretsError::Unsealable)));
        let delete = SecretAction::Delete {
            name: "relay@example.com".into(),
        };
        secret(&delete, &dir, &k, None).unwrap();
        assert!(matches!(
            secret(&delete, &dir, &k, None),
            Err(SecretsError::NotFound(_))
        ));
        assert_eq!(
            secret(&SecretAction::Show, &dir, &k, None).unwrap(),
            "no secrets\n"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
