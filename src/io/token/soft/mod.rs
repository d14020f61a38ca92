//! The software token: keys in files on the data partition, wrapped under a key derived from the user PIN.
//! **Invariant:** every change is written to disk before it is made in memory (a key
//! pair whose public half cannot be stored takes its private half back); key material is
//! unsealed only while logged in and kept unsealed only in the session;
//! [`MAX_PIN_ATTEMPTS`] wrong PINs in a row lock the token until it is initialized again.
//!
//! The token directory holds `token.hdr` (label, serial, PBKDF2 salt and iteration count,
//! the PIN check values, the count of consecutive wrong PINs and the lock flag) and one
//! `obj-XXXXXXXXXXXXXXXX.key` file per object, whose hexadecimal number is the handle
//! (`format.rs` has the records, `files.rs` the atomic writes). Private and secret key
//! material is sealed with AES-256-GCM under a key derived from the user PIN
//! (PBKDF2-HMAC-SHA-256, `seal.rs`); the object's number, class, key type and label are
//! the associated data, so a file renamed or relabelled does not open. Public keys are
//! kept in clear so certificates can be shown without a login. This file is the
//! [`Token`] implementation.
//!
//! RSA keys are imported from PKCS#8 only: ring cannot generate RSA keys, so
//! [`Token::mechanisms`] lists no RSA generation mechanism.

mod files;
mod format;
mod seal;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ring::aead::LessSafeKey;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use ring::{digest, hmac};

use super::{
    KeyKind, Mechanism, ObjectClass, ObjectHandle, ObjectInfo, PublicKeyInfo, Token, TokenError,
    TokenInfo, check_label, der,
};
use files::{list_object_files, read_bounded, remove_file_synced, storage, write_file_synced};
use format::{HEADER_FILE, Header, StoredObject, aad, object_file_name};
pub use format::{MAX_HEADER_FILE_LEN, MAX_OBJECT_FILE_LEN};
pub use seal::{DEFAULT_PBKDF2_ITERATIONS, MAX_PBKDF2_ITERATIONS};
use seal::{Master, SALT_LEN, fill, open_sealed, pin_check, seal, wipe};

/// Consecutive wrong user PINs before the token locks until it is initialized again
/// (PKCS#11 `CKF_USER_PIN_LOCKED`; smart cards commonly allow 3 to 15).
pub const MAX_PIN_ATTEMPTS: u8 = 10;
pub use super::MAX_LABEL_LEN;
/// Most objects on one token; a key pair takes two. Each costs at most
/// [`MAX_OBJECT_FILE_LEN`] in memory, so the worst case is 4 MiB.
pub const MAX_OBJECTS: usize = 256;
/// Longest PKCS#8 document accepted: an RSA-8192 private key is about 4.8 KiB.
pub const MAX_PKCS8_LEN: usize = 8 * 1024;
/// Longest HMAC secret: more than the SHA-256 block (64 bytes) is hashed first (RFC 2104
/// §2), so 1 KiB is ample (RFC 4231's vectors use 131).
pub const MAX_SECRET_LEN: usize = 1024;

/// The software token. `Send + Sync`: its state sits behind a mutex, which a login holds
/// for the PBKDF2 derivation (about a tenth of a second at the default count).
pub struct SoftToken {
    dir: PathBuf,
    rng: SystemRandom,
    state: Mutex<State>,
}

struct State {
    header: Header,
    objects: BTreeMap<u64, StoredObject>,
    session: Option<Session>,
}

struct Session {
    wrap_key: LessSafeKey,
    loaded: HashMap<u64, LoadedKey>,
}

enum LoadedKey {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
    Secret(hmac::Key),
}

impl SoftToken {
    /// Creates (or re-creates) a token in `dir` with [`DEFAULT_PBKDF2_ITERATIONS`].
    /// Re-initializing destroys every object and clears a PIN lock. If the existing token
    /// has a security officer PIN, `so_pin` must match it (else `PinIncorrect`); a token made
    /// without one can be re-initialized by anyone who can write `dir`, which is no more
    /// than deleting the directory would allow.
    pub fn init(
        dir: &Path,
        label: &str,
        so_pin: Option<&str>,
        user_pin: &str,
    ) -> Result<SoftToken, TokenError> {
        SoftToken::init_with_iterations(dir, label, so_pin, user_pin, DEFAULT_PBKDF2_ITERATIONS)
    }

    /// [`SoftToken::init`] with a chosen PBKDF2 iteration count (1 to
    /// [`MAX_PBKDF2_ITERATIONS`], else `MechanismInvalid`); low counts are for tests only.
    pub fn init_with_iterations(
        dir: &Path,
        label: &str,
        so_pin: Option<&str>,
        user_pin: &str,
        iterations: u32,
    ) -> Result<SoftToken, TokenError> {
        check_label(label)?;
        let iterations = NonZeroU32::new(iterations)
            .filter(|n| n.get() <= MAX_PBKDF2_ITERATIONS)
            .ok_or(TokenError::MechanismInvalid)?;
        fs::create_dir_all(dir).map_err(|e| storage("create token directory", &e))?;
        let header_path = dir.join(HEADER_FILE);
        if header_path.exists() {
            let old = Header::decode(&read_bounded(&header_path, MAX_HEADER_FILE_LEN)?)?;
            if let Some((salt, check)) = old.so {
                let given = so_pin.ok_or(TokenError::PinIncorrect)?;
                if !Master::derive(given, &salt, old.iterations).matches(&check) {
                    return Err(TokenError::PinIncorrect);
                }
            }
            for (id, _) in list_object_files(dir)? {
                remove_file_synced(dir, &object_file_name(id))?;
            }
        }
        let rng = SystemRandom::new();
        let mut user_salt = [0u8; SALT_LEN];
        fill(&rng, &mut user_salt)?;
        let so = match so_pin {
            Some(pin) => {
                let mut salt = [0u8; SALT_LEN];
                fill(&rng, &mut salt)?;
                Some((salt, pin_check(pin, &salt, iterations)))
            }
            None => None,
        };
        let mut serial_bytes = [0u8; 8];
        fill(&rng, &mut serial_bytes)?;
        let header = Header {
            label: label.to_string(),
            serial: serial_bytes.iter().map(|b| format!("{b:02x}")).collect(),
            iterations,
            failed_pins: 0,
            locked: false,
            user_salt,
            user_check: pin_check(user_pin, &user_salt, iterations),
            so,
        };
        write_file_synced(dir, HEADER_FILE, &header.encode())?;
        log::info!(target: "token", "initialized soft token {label:?} in {}", dir.display());
        Ok(SoftToken {
            dir: dir.to_path_buf(),
            rng,
            state: Mutex::new(State {
                header,
                objects: BTreeMap::new(),
                session: None,
            }),
        })
    }

    /// Whether `dir` holds a token (its header file).
    pub fn exists(dir: &Path) -> bool {
        dir.join(HEADER_FILE).is_file()
    }

    /// Opens the token kept in `dir`, which must carry `label`. Not logged in.
    pub fn open(dir: &Path, label: &str) -> Result<SoftToken, TokenError> {
        let header = Header::decode(&read_bounded(&dir.join(HEADER_FILE), MAX_HEADER_FILE_LEN)?)?;
        if header.label != label {
            return Err(TokenError::Storage(format!(
                "{} holds token {:?}, not {label:?}",
                dir.display(),
                header.label
            )));
        }
        let mut objects = BTreeMap::new();
        for (id, name) in list_object_files(dir)? {
            let bytes = read_bounded(&dir.join(&name), MAX_OBJECT_FILE_LEN)?;
            let object = StoredObject::decode(&bytes)
                .ok_or_else(|| TokenError::Storage(format!("{name}: damaged object file")))?;
            objects.insert(id, object);
        }
        Ok(SoftToken {
            dir: dir.to_path_buf(),
            rng: SystemRandom::new(),
            state: Mutex::new(State {
                header,
                objects,
                session: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as the files: every
        // change is written to disk before it is made in memory.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The number the next object gets: one past the highest in use.
    fn next_id(state: &State) -> Result<u64, TokenError> {
        if state.objects.len() >= MAX_OBJECTS {
            return Err(TokenError::Storage(format!(
                "token full ({MAX_OBJECTS} objects)"
            )));
        }
        state
            .objects
            .keys()
            .next_back()
            .map_or(Some(1), |last| last.checked_add(1))
            .ok_or_else(|| TokenError::Storage("object numbers exhausted".to_string()))
    }

    /// Adds an object: writes its file, then records it.
    fn store(&self, state: &mut State, id: u64, object: StoredObject) -> Result<(), TokenError> {
        write_file_synced(&self.dir, &object_file_name(id), &object.encode())?;
        state.objects.insert(id, object);
        Ok(())
    }

    /// Seals key material under the session key and stores the private or secret object,
    /// plus the public object for a key pair.
    fn store_key(
        &self,
        label: &str,
        kind: KeyKind,
        secret: &[u8],
        spki: Option<Vec<u8>>,
        loaded: LoadedKey,
    ) -> Result<(ObjectHandle, Option<ObjectHandle>), TokenError> {
        check_label(label)?;
        let mut state = self.lock();
        let state = &mut *state;
        if state.session.is_none() {
            return Err(TokenError::NotLoggedIn);
        }
        if state.objects.values().any(|o| o.label == label) {
            return Err(TokenError::LabelInUse);
        }
        let class = if spki.is_some() {
            ObjectClass::PrivateKey
        } else {
            ObjectClass::SecretKey
        };
        let id = SoftToken::next_id(state)?;
        let Some(session) = &state.session else {
            return Err(TokenError::NotLoggedIn);
        };
        let sealed = seal(
            &session.wrap_key,
            &self.rng,
            &aad(id, class, kind, label),
            secret,
        )?;
        let object = StoredObject {
            label: label.to_string(),
            class,
            kind,
            spki: spki.clone().unwrap_or_default(),
            sealed,
        };
        self.store(state, id, object)?;
        if let Some(session) = &mut state.session {
            session.loaded.insert(id, loaded);
        }
        let public = match spki {
            Some(spki) => {
                let public = StoredObject {
                    label: label.to_string(),
                    class: ObjectClass::PublicKey,
                    kind,
                    spki,
                    sealed: Vec::new(),
                };
                let stored = SoftToken::next_id(state)
                    .and_then(|public_id| self.store(state, public_id, public).map(|()| public_id));
                match stored {
                    Ok(public_id) => Some(ObjectHandle(public_id)),
                    Err(e) => {
                        // Keep pairs whole: take back the private half.
                        if remove_file_synced(&self.dir, &object_file_name(id)).is_ok() {
                            state.objects.remove(&id);
                            if let Some(session) = &mut state.session {
                                session.loaded.remove(&id);
                            }
                        }
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        Ok((ObjectHandle(id), public))
    }

    /// Runs `f` on the unsealed key of a private or secret object, unsealing it on first use.
    fn with_key<T>(
        &self,
        handle: ObjectHandle,
        f: impl FnOnce(&LoadedKey) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let mut state = self.lock();
        let state = &mut *state;
        let session = state.session.as_mut().ok_or(TokenError::NotLoggedIn)?;
        let id = handle.0;
        if !session.loaded.contains_key(&id) {
            let object = state.objects.get(&id).ok_or(TokenError::NoSuchObject)?;
            if object.class == ObjectClass::PublicKey {
                return Err(TokenError::KeyTypeInconsistent);
            }
            let mut plain = open_sealed(
                &session.wrap_key,
                &aad(id, object.class, object.kind, &object.label),
                &object.sealed,
            )?;
            let loaded = load_key(object.kind, &plain, &self.rng);
            wipe(&mut plain);
            session.loaded.insert(id, loaded?);
        }
        match session.loaded.get(&id) {
            Some(key) => f(key),
            None => Err(TokenError::NoSuchObject),
        }
    }
}

impl fmt::Debug for SoftToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SoftToken")
            .field("dir", &self.dir)
            .field("label", &state.header.label)
            .field("objects", &state.objects.len())
            .field("logged_in", &state.session.is_some())
            .finish()
    }
}

impl Token for SoftToken {
    fn info(&self) -> TokenInfo {
        let state = self.lock();
        TokenInfo {
            label: state.header.label.clone(),
            manufacturer: "drawbridge".to_string(),
            model: "SoftToken".to_string(),
            serial: state.header.serial.clone(),
            logged_in: state.session.is_some(),
        }
    }

    fn mechanisms(&self) -> Vec<Mechanism> {
        // No RSA key generation: ring cannot generate RSA keys, they are imported.
        vec![
            Mechanism::EcdsaP256Sha256,
            Mechanism::Ed25519,
            Mechanism::RsaPkcs1Sha256,
            Mechanism::RsaPkcs1Sha384,
            Mechanism::RsaPkcs1Sha512,
            Mechanism::RsaPssSha256,
            Mechanism::RsaPssSha384,
            Mechanism::RsaPssSha512,
            Mechanism::HmacSha256,
            Mechanism::Sha256,
            Mechanism::Random,
            Mechanism::GenerateEcP256,
            Mechanism::GenerateEd25519,
        ]
    }

    fn login(&self, pin: &str) -> Result<(), TokenError> {
        let mut state = self.lock();
        if state.header.locked {
            return Err(TokenError::PinLocked);
        }
        let header = &state.header;
        let master = Master::derive(pin, &header.user_salt, header.iterations);
        if !master.matches(&header.user_check) {
            let mut header = state.header.clone();
            header.failed_pins = header.failed_pins.saturating_add(1);
            header.locked = header.failed_pins >= MAX_PIN_ATTEMPTS;
            write_file_synced(&self.dir, HEADER_FILE, &header.encode())?;
            let locked = header.locked;
            let failed = header.failed_pins;
            state.header = header;
            state.session = None;
            log::warn!(target: "token", "token {:?}: wrong user PIN ({failed} in a row)", state.header.label);
            return Err(if locked {
                log::error!(target: "token", "token {:?}: locked after {MAX_PIN_ATTEMPTS} wrong PINs", state.header.label);
                TokenError::PinLocked
            } else {
                TokenError::PinIncorrect
            });
        }
        if state.header.failed_pins != 0 {
            let mut header = state.header.clone();
            header.failed_pins = 0;
            write_file_synced(&self.dir, HEADER_FILE, &header.encode())?;
            state.header = header;
        }
        state.session = Some(Session {
            wrap_key: master.wrap_key()?,
            loaded: HashMap::new(),
        });
        Ok(())
    }

    fn logout(&self) {
        self.lock().session = None;
    }

    fn find_objects(&self, label: &str) -> Vec<ObjectHandle> {
        let state = self.lock();
        let logged_in = state.session.is_some();
        state
            .objects
            .iter()
            .filter(|(_, o)| o.label == label && (logged_in || o.class == ObjectClass::PublicKey))
            .map(|(id, _)| ObjectHandle(*id))
            .collect()
    }

    fn object_info(&self, handle: ObjectHandle) -> Result<ObjectInfo, TokenError> {
        let state = self.lock();
        let object = state
            .objects
            .get(&handle.0)
            .ok_or(TokenError::NoSuchObject)?;
        if object.class != ObjectClass::PublicKey && state.session.is_none() {
            return Err(TokenError::NotLoggedIn);
        }
        Ok(ObjectInfo {
            label: object.label.clone(),
            class: object.class,
            kind: object.kind,
        })
    }

    fn generate_key_pair(
        &self,
        kind: KeyKind,
        label: &str,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        if self.lock().session.is_none() {
            return Err(TokenError::NotLoggedIn);
        }
        let pkcs8 = match kind {
            KeyKind::EcP256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &self.rng)
            }
            KeyKind::Ed25519 => Ed25519KeyPair::generate_pkcs8(&self.rng),
            KeyKind::Rsa | KeyKind::GenericSecret => return Err(TokenError::MechanismInvalid),
        }
        .map_err(|_| TokenError::Crypto)?;
        self.import_private_key(label, pkcs8.as_ref())
    }

    fn import_private_key(
        &self,
        label: &str,
        pkcs8_der: &[u8],
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        if pkcs8_der.len() > MAX_PKCS8_LEN {
            return Err(TokenError::Crypto);
        }
        let (kind, loaded) = parse_pkcs8(pkcs8_der, &self.rng)?;
        let spki = spki_of(&loaded)?;
        let (private, public) = self.store_key(label, kind, pkcs8_der, Some(spki), loaded)?;
        // store_key returns a public object exactly when it was given a public key.
        let public = public.ok_or(TokenError::Crypto)?;
        log::info!(target: "token", "token: stored {kind:?} key pair {label:?}");
        Ok((private, public))
    }

    fn generate_secret(&self, label: &str, len: usize) -> Result<ObjectHandle, TokenError> {
        if len == 0 || len > MAX_SECRET_LEN {
            return Err(TokenError::MechanismInvalid);
        }
        let mut secret = vec![0u8; len];
        fill(&self.rng, &mut secret)?;
        let result = self.import_secret(label, &secret);
        wipe(&mut secret);
        result
    }

    fn import_secret(&self, label: &str, secret: &[u8]) -> Result<ObjectHandle, TokenError> {
        if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
            return Err(TokenError::MechanismInvalid);
        }
        let loaded = LoadedKey::Secret(hmac::Key::new(hmac::HMAC_SHA256, secret));
        let (handle, _) = self.store_key(label, KeyKind::GenericSecret, secret, None, loaded)?;
        Ok(handle)
    }

    fn hmac_sha256(&self, key: ObjectHandle, data: &[u8]) -> Result<[u8; 32], TokenError> {
        self.with_key(key, |loaded| match loaded {
            LoadedKey::Secret(key) => {
                let tag = hmac::sign(key, data);
                tag.as_ref().try_into().map_err(|_| TokenError::Crypto)
            }
            _ => Err(TokenError::KeyTypeInconsistent),
        })
    }

    fn public_key(&self, handle: ObjectHandle) -> Result<PublicKeyInfo, TokenError> {
        let state = self.lock();
        let object = state
            .objects
            .get(&handle.0)
            .ok_or(TokenError::NoSuchObject)?;
        match object.class {
            ObjectClass::SecretKey => Err(TokenError::KeyTypeInconsistent),
            ObjectClass::PrivateKey if state.session.is_none() => Err(TokenError::NotLoggedIn),
            ObjectClass::PrivateKey | ObjectClass::PublicKey => Ok(PublicKeyInfo {
                kind: object.kind,
                der: object.spki.clone(),
            }),
        }
    }

    fn sign(
        &self,
        handle: ObjectHandle,
        mechanism: Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let needed = mechanism
            .signing_key_kind()
            .ok_or(TokenError::MechanismInvalid)?;
        self.with_key(handle, |loaded| match (loaded, needed) {
            (LoadedKey::Ecdsa(pair), KeyKind::EcP256) => pair
                .sign(&self.rng, data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| TokenError::Crypto),
            (LoadedKey::Ed25519(pair), KeyKind::Ed25519) => Ok(pair.sign(data).as_ref().to_vec()),
            (LoadedKey::Rsa(pair), KeyKind::Rsa) => {
                let padding: &'static dyn signature::RsaEncoding = match mechanism {
                    Mechanism::RsaPkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
                    Mechanism::RsaPkcs1Sha384 => &signature::RSA_PKCS1_SHA384,
                    Mechanism::RsaPkcs1Sha512 => &signature::RSA_PKCS1_SHA512,
                    Mechanism::RsaPssSha256 => &signature::RSA_PSS_SHA256,
                    Mechanism::RsaPssSha384 => &signature::RSA_PSS_SHA384,
                    Mechanism::RsaPssSha512 => &signature::RSA_PSS_SHA512,
                    _ => return Err(TokenError::MechanismInvalid),
                };
                let mut out = vec![0u8; pair.public().modulus_len()];
                pair.sign(padding, &self.rng, data, &mut out)
                    .map_err(|_| TokenError::Crypto)?;
                Ok(out)
            }
            _ => Err(TokenError::KeyTypeInconsistent),
        })
    }

    fn digest_sha256(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
        out
    }

    fn random(&self, buf: &mut [u8]) -> Result<(), TokenError> {
        fill(&self.rng, buf)
    }

    fn destroy(&self, handle: ObjectHandle) -> Result<(), TokenError> {
        let mut state = self.lock();
        if state.session.is_none() {
            return Err(TokenError::NotLoggedIn);
        }
        if !state.objects.contains_key(&handle.0) {
            return Err(TokenError::NoSuchObject);
        }
        remove_file_synced(&self.dir, &object_file_name(handle.0))?;
        state.objects.remove(&handle.0);
        if let Some(session) = &mut state.session {
            session.loaded.remove(&handle.0);
        }
        Ok(())
    }
}

fn parse_pkcs8(pkcs8: &[u8], rng: &SystemRandom) -> Result<(KeyKind, LoadedKey), TokenError> {
    if let Ok(pair) =
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, rng)
    {
        return Ok((KeyKind::EcP256, LoadedKey::Ecdsa(pair)));
    }
    // OpenSSL writes PKCS#8 v1 Ed25519 keys without the public key; ring derives it.
    if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
        return Ok((KeyKind::Ed25519, LoadedKey::Ed25519(pair)));
    }
    if let Ok(pair) = RsaKeyPair::from_pkcs8(pkcs8) {
        return Ok((KeyKind::Rsa, LoadedKey::Rsa(pair)));
    }
    Err(TokenError::Crypto)
}

/// The key type and public key of a PKCS#8 private key, which ring checks is whole
/// (the other backends import keys the software token would accept, no more).
#[cfg(feature = "pkcs11")]
pub(crate) fn pkcs8_public_key(pkcs8: &[u8]) -> Result<PublicKeyInfo, TokenError> {
    if pkcs8.len() > MAX_PKCS8_LEN {
        return Err(TokenError::Crypto);
    }
    let (kind, loaded) = parse_pkcs8(pkcs8, &SystemRandom::new())?;
    Ok(PublicKeyInfo {
        kind,
        der: spki_of(&loaded)?,
    })
}

fn load_key(kind: KeyKind, plain: &[u8], rng: &SystemRandom) -> Result<LoadedKey, TokenError> {
    let loaded = match kind {
        KeyKind::GenericSecret => LoadedKey::Secret(hmac::Key::new(hmac::HMAC_SHA256, plain)),
        _ => parse_pkcs8(plain, rng)?.1,
    };
    Ok(loaded)
}

fn spki_of(loaded: &LoadedKey) -> Result<Vec<u8>, TokenError> {
    match loaded {
        LoadedKey::Ecdsa(pair) => Ok(der::spki_ec_p256(pair.public_key().as_ref())),
        LoadedKey::Ed25519(pair) => Ok(der::spki_ed25519(pair.public_key().as_ref())),
        LoadedKey::Rsa(pair) => Ok(der::spki_rsa(pair.public_key().as_ref())),
        LoadedKey::Secret(_) => Err(TokenError::KeyTypeInconsistent),
    }
}
