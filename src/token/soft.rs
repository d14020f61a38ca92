//! The software token: keys in files on the data partition, wrapped under a key derived from the user PIN.
//!
//! Layout of the token directory:
//! * `token.hdr`: label, serial, PBKDF2 salt and iteration count, the PIN check values,
//!   the count of consecutive wrong PINs and the lock flag;
//! * `obj-XXXXXXXXXXXXXXXX.key`: one file per object; the hexadecimal number is the handle.
//!
//! Every file is written atomically (temporary file, fsync, rename, directory fsync).
//! Private and secret key material is sealed with AES-256-GCM under a key derived from the
//! user PIN (PBKDF2-HMAC-SHA-256); the object's number, class, key type and label are the
//! associated data, so a file renamed or relabelled does not open. Public keys are kept in
//! clear so certificates can be shown without a login.
//!
//! RSA keys are imported from PKCS#8 only: ring cannot generate RSA keys, so
//! [`Token::mechanisms`] lists no RSA generation mechanism.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use ring::{digest, hmac, pbkdf2};

use super::{
    KeyKind, Mechanism, ObjectClass, ObjectHandle, ObjectInfo, PublicKeyInfo, Token, TokenError,
    TokenInfo, check_label, der,
};
use crate::sasl::constant_time_eq;

/// PBKDF2 iterations for new tokens: OWASP's 2023 guidance for PBKDF2-HMAC-SHA256 is
/// 600 000; 100 000 keeps a login on the appliance's small CPU near a tenth of a second.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 100_000;
/// The most iterations a header may ask for, so a damaged header cannot stall a login for
/// hours (about ten seconds on the appliance).
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
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
/// Largest object file read back: a sealed PKCS#8 document, its public key and the label.
pub const MAX_OBJECT_FILE_LEN: usize = 16 * 1024;
/// Largest header file read back.
pub const MAX_HEADER_FILE_LEN: usize = 512;

const SALT_LEN: usize = 16;
const CHECK_LEN: usize = 32;
const TAG_LEN: usize = 16;
const HEADER_FILE: &str = "token.hdr";
const HEADER_MAGIC: &[u8; 8] = b"DBTOKEN\x01";
const OBJECT_MAGIC: &[u8; 8] = b"DBTKOBJ\x01";
const OBJECT_PREFIX: &str = "obj-";
const OBJECT_SUFFIX: &str = ".key";
const FLAG_LOCKED: u8 = 1;
const FLAG_HAS_SO_PIN: u8 = 2;
const CHECK_CONTEXT: &[u8] = b"drawbridge token: PIN check";
const WRAP_CONTEXT: &[u8] = b"drawbridge token: object wrapping key";
const AAD_CONTEXT: &[u8] = b"drawbridge token object v1";

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

#[derive(Clone)]
struct Header {
    label: String,
    serial: String,
    iterations: NonZeroU32,
    failed_pins: u8,
    locked: bool,
    user_salt: [u8; SALT_LEN],
    user_check: [u8; CHECK_LEN],
    /// Salt and check value of the security officer PIN, if one was set.
    so: Option<([u8; SALT_LEN], [u8; CHECK_LEN])>,
}

struct StoredObject {
    label: String,
    class: ObjectClass,
    kind: KeyKind,
    /// The SubjectPublicKeyInfo for key pair halves; empty for secrets.
    spki: Vec<u8>,
    /// Nonce, ciphertext and tag for private and secret keys; empty for public keys.
    sealed: Vec<u8>,
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
                if !constant_time_eq(&pin_check(given, &salt, old.iterations), &check) {
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
        let master = derive_master(pin, &header.user_salt, header.iterations);
        if !constant_time_eq(&keyed(&master, CHECK_CONTEXT), &header.user_check) {
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
        let wrap_bytes = keyed(&master, WRAP_CONTEXT);
        let unbound = UnboundKey::new(&AES_256_GCM, &wrap_bytes).map_err(|_| TokenError::Crypto)?;
        state.session = Some(Session {
            wrap_key: LessSafeKey::new(unbound),
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

fn derive_master(pin: &str, salt: &[u8], iterations: NonZeroU32) -> [u8; 32] {
    let mut master = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        pin.as_bytes(),
        &mut master,
    );
    master
}

fn keyed(master: &[u8; 32], context: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, master), context).as_ref());
    out
}

fn pin_check(pin: &str, salt: &[u8], iterations: NonZeroU32) -> [u8; CHECK_LEN] {
    keyed(&derive_master(pin, salt, iterations), CHECK_CONTEXT)
}

/// Overwrites key material before it is freed.
/// Best effort: `black_box` keeps the compiler from dropping the stores as dead.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

fn fill(rng: &SystemRandom, buf: &mut [u8]) -> Result<(), TokenError> {
    rng.fill(buf).map_err(|_| TokenError::Crypto)
}

fn aad(id: u64, class: ObjectClass, kind: KeyKind, label: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + 11 + label.len());
    aad.extend_from_slice(AAD_CONTEXT);
    aad.extend_from_slice(&id.to_be_bytes());
    aad.push(class_code(class));
    aad.push(kind_code(kind));
    aad.push(label.len() as u8);
    aad.extend_from_slice(label.as_bytes());
    aad
}

fn seal(
    key: &LessSafeKey,
    rng: &SystemRandom,
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, TokenError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill(rng, &mut nonce)?;
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| TokenError::Crypto)?;
    let mut sealed = Vec::with_capacity(NONCE_LEN + buf.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&buf);
    Ok(sealed)
}

fn open_sealed(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, TokenError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(TokenError::Crypto);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TokenError::Crypto)?;
    let mut buf = body.to_vec();
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| TokenError::Crypto)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

fn class_code(class: ObjectClass) -> u8 {
    match class {
        ObjectClass::PrivateKey => 1,
        ObjectClass::PublicKey => 2,
        ObjectClass::SecretKey => 3,
    }
}

fn class_from_code(code: u8) -> Option<ObjectClass> {
    match code {
        1 => Some(ObjectClass::PrivateKey),
        2 => Some(ObjectClass::PublicKey),
        3 => Some(ObjectClass::SecretKey),
        _ => None,
    }
}

fn kind_code(kind: KeyKind) -> u8 {
    match kind {
        KeyKind::EcP256 => 1,
        KeyKind::Ed25519 => 2,
        KeyKind::Rsa => 3,
        KeyKind::GenericSecret => 4,
    }
}

fn kind_from_code(code: u8) -> Option<KeyKind> {
    match code {
        1 => Some(KeyKind::EcP256),
        2 => Some(KeyKind::Ed25519),
        3 => Some(KeyKind::Rsa),
        4 => Some(KeyKind::GenericSecret),
        _ => None,
    }
}

/// Reads fields from the front of a byte slice; every read is bounds checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn short_string(&mut self) -> Option<String> {
        let len = usize::from(self.byte()?);
        if len > MAX_LABEL_LEN {
            return None;
        }
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn long_bytes(&mut self) -> Option<Vec<u8>> {
        let len = usize::from(self.u16()?);
        self.take(len).map(<[u8]>::to_vec)
    }
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    // Labels and serials are checked to be at most MAX_LABEL_LEN (< 256) bytes.
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    // Public keys and sealed objects are bounded by MAX_PKCS8_LEN plus overhead (< 65536).
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_HEADER_FILE_LEN);
        out.extend_from_slice(HEADER_MAGIC);
        let mut flags = 0;
        if self.locked {
            flags |= FLAG_LOCKED;
        }
        if self.so.is_some() {
            flags |= FLAG_HAS_SO_PIN;
        }
        out.push(flags);
        out.push(self.failed_pins);
        out.extend_from_slice(&self.iterations.get().to_be_bytes());
        out.extend_from_slice(&self.user_salt);
        out.extend_from_slice(&self.user_check);
        let (so_salt, so_check) = self.so.unwrap_or(([0; SALT_LEN], [0; CHECK_LEN]));
        out.extend_from_slice(&so_salt);
        out.extend_from_slice(&so_check);
        put_short(&mut out, self.serial.as_bytes());
        put_short(&mut out, self.label.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Header, TokenError> {
        let damaged = || TokenError::Storage(format!("{HEADER_FILE}: damaged token header"));
        let mut r = Reader(bytes);
        if r.take(HEADER_MAGIC.len()) != Some(&HEADER_MAGIC[..]) {
            return Err(damaged());
        }
        let flags = r.byte().ok_or_else(damaged)?;
        let failed_pins = r.byte().ok_or_else(damaged)?;
        let iterations = u32::from_be_bytes(r.array().ok_or_else(damaged)?);
        let iterations = NonZeroU32::new(iterations)
            .filter(|n| n.get() <= MAX_PBKDF2_ITERATIONS)
            .ok_or_else(damaged)?;
        let user_salt = r.array().ok_or_else(damaged)?;
        let user_check = r.array().ok_or_else(damaged)?;
        let so_salt = r.array().ok_or_else(damaged)?;
        let so_check = r.array().ok_or_else(damaged)?;
        let serial = r.short_string().ok_or_else(damaged)?;
        let label = r.short_string().ok_or_else(damaged)?;
        if !r.0.is_empty() {
            return Err(damaged());
        }
        Ok(Header {
            label,
            serial,
            iterations,
            failed_pins,
            locked: flags & FLAG_LOCKED != 0,
            user_salt,
            user_check,
            so: (flags & FLAG_HAS_SO_PIN != 0).then_some((so_salt, so_check)),
        })
    }
}

impl StoredObject {
    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + self.label.len() + self.spki.len() + self.sealed.len());
        out.extend_from_slice(OBJECT_MAGIC);
        out.push(class_code(self.class));
        out.push(kind_code(self.kind));
        put_short(&mut out, self.label.as_bytes());
        put_long(&mut out, &self.spki);
        put_long(&mut out, &self.sealed);
        out
    }

    fn decode(bytes: &[u8]) -> Option<StoredObject> {
        let mut r = Reader(bytes);
        if r.take(OBJECT_MAGIC.len())? != OBJECT_MAGIC {
            return None;
        }
        let class = class_from_code(r.byte()?)?;
        let kind = kind_from_code(r.byte()?)?;
        let label = r.short_string()?;
        let spki = r.long_bytes()?;
        let sealed = r.long_bytes()?;
        if !r.0.is_empty() || label.is_empty() {
            return None;
        }
        Some(StoredObject {
            label,
            class,
            kind,
            spki,
            sealed,
        })
    }
}

fn storage(what: &str, error: &std::io::Error) -> TokenError {
    TokenError::Storage(format!("{what}: {error}"))
}

fn object_file_name(id: u64) -> String {
    format!("{OBJECT_PREFIX}{id:016x}{OBJECT_SUFFIX}")
}

/// The object files in `dir` with their numbers; leftover temporary files are removed.
fn list_object_files(dir: &Path) -> Result<Vec<(u64, String)>, TokenError> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| storage("list token directory", &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| storage("list token directory", &e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.ends_with(".tmp") {
            // An interrupted write: the rename never happened, so the object never existed.
            let _ = fs::remove_file(entry.path());
            continue;
        }
        let Some(hex) = name
            .strip_prefix(OBJECT_PREFIX)
            .and_then(|rest| rest.strip_suffix(OBJECT_SUFFIX))
        else {
            continue;
        };
        if let Ok(id) = u64::from_str_radix(hex, 16) {
            found.push((id, name));
        }
    }
    found.sort();
    Ok(found)
}

fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, TokenError> {
    use std::io::Read;
    let file = fs::File::open(path).map_err(|e| storage(&path.display().to_string(), &e))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| storage(&path.display().to_string(), &e))?;
    if bytes.len() > limit {
        return Err(TokenError::Storage(format!(
            "{}: larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> Result<(), TokenError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage("sync token directory", &e))
}

/// Writes `name` in `dir` atomically: temporary file, fsync, rename, directory fsync.
fn write_file_synced(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TokenError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(storage(&format!("write {name}"), &e));
    }
    sync_dir(dir)
}

fn remove_file_synced(dir: &Path, name: &str) -> Result<(), TokenError> {
    fs::remove_file(dir.join(name)).map_err(|e| storage(&format!("remove {name}"), &e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, VerificationAlgorithm};

    const RSA_PKCS8: &[u8] = include_bytes!("testdata/rsa2048.pk8.der");
    const PIN: &str = "4711-secret";
    /// Tests use few PBKDF2 iterations; the derivation is the same at any count.
    const TEST_ITERATIONS: u32 = 10;

    /// A token directory removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("drawbridge-soft-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn new_token(dir: &TempDir) -> SoftToken {
        SoftToken::init_with_iterations(&dir.0, "gateway", Some("so-pin"), PIN, TEST_ITERATIONS)
            .unwrap()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn verify(
        token: &SoftToken,
        handle: ObjectHandle,
        algorithm: &'static dyn VerificationAlgorithm,
        message: &[u8],
        sig: &[u8],
    ) -> bool {
        let public = token.public_key(handle).unwrap();
        let key = public.subject_public_key().unwrap();
        UnparsedPublicKey::new(algorithm, key)
            .verify(message, sig)
            .is_ok()
    }

    #[test]
    fn info_and_mechanisms() {
        let dir = TempDir::new("info");
        let token = new_token(&dir);
        let info = token.info();
        assert_eq!(info.label, "gateway");
        assert_eq!(info.model, "SoftToken");
        assert_eq!(info.serial.len(), 16);
        assert!(!info.logged_in);
        let mechanisms = token.mechanisms();
        for m in [
            Mechanism::EcdsaP256Sha256,
            Mechanism::Ed25519,
            Mechanism::RsaPssSha512,
            Mechanism::HmacSha256,
            Mechanism::Sha256,
            Mechanism::Random,
            Mechanism::GenerateEcP256,
            Mechanism::GenerateEd25519,
        ] {
            assert!(mechanisms.contains(&m), "{m:?}");
        }
        token.login(PIN).unwrap();
        assert!(token.info().logged_in);
        token.logout();
        assert!(!token.info().logged_in);
    }

    #[test]
    fn private_operations_need_login() {
        let dir = TempDir::new("login");
        let token = new_token(&dir);
        assert_eq!(
            token.generate_key_pair(KeyKind::EcP256, "k"),
            Err(TokenError::NotLoggedIn)
        );
        assert_eq!(token.import_secret("s", b"x"), Err(TokenError::NotLoggedIn));
        token.login(PIN).unwrap();
        let (private, public) = token.generate_key_pair(KeyKind::EcP256, "k").unwrap();
        let secret = token.import_secret("s", b"secret").unwrap();
        token.logout();
        assert_eq!(token.find_objects("k"), vec![public]);
        assert_eq!(token.find_objects("s"), vec![]);
        assert_eq!(
            token.sign(private, Mechanism::EcdsaP256Sha256, b"m"),
            Err(TokenError::NotLoggedIn)
        );
        assert_eq!(
            token.hmac_sha256(secret, b"m"),
            Err(TokenError::NotLoggedIn)
        );
        assert_eq!(token.public_key(private), Err(TokenError::NotLoggedIn));
        assert_eq!(token.object_info(private), Err(TokenError::NotLoggedIn));
        assert_eq!(token.destroy(public), Err(TokenError::NotLoggedIn));
        assert_eq!(token.public_key(public).unwrap().kind, KeyKind::EcP256);
        // Digests and random numbers need no login.
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        token.random(&mut a).unwrap();
        token.random(&mut b).unwrap();
        assert_ne!(a, b);
        token.login(PIN).unwrap();
        assert_eq!(token.find_objects("k"), vec![private, public]);
        assert_eq!(token.find_objects("s"), vec![secret]);
    }

    #[test]
    fn wrong_pins_lock_the_token_until_reinit() {
        let dir = TempDir::new("lockout");
        let token = new_token(&dir);
        assert_eq!(token.login("wrong"), Err(TokenError::PinIncorrect));
        // A correct PIN resets the count.
        token.login(PIN).unwrap();
        token.logout();
        for _ in 1..MAX_PIN_ATTEMPTS {
            assert_eq!(token.login("wrong"), Err(TokenError::PinIncorrect));
        }
        drop(token);
        // The count survives a reopen: one more wrong PIN locks.
        let token = SoftToken::open(&dir.0, "gateway").unwrap();
        assert_eq!(token.login("wrong"), Err(TokenError::PinLocked));
        assert_eq!(token.login(PIN), Err(TokenError::PinLocked));
        drop(token);
        let token = SoftToken::open(&dir.0, "gateway").unwrap();
        assert_eq!(token.login(PIN), Err(TokenError::PinLocked));
        // Re-initializing needs the security officer PIN.
        assert!(matches!(
            SoftToken::init_with_iterations(&dir.0, "gateway", Some("nope"), PIN, 10),
            Err(TokenError::PinIncorrect)
        ));
        assert!(matches!(
            SoftToken::init_with_iterations(&dir.0, "gateway", None, PIN, 10),
            Err(TokenError::PinIncorrect)
        ));
        let token = new_token(&dir);
        token.login(PIN).unwrap();
    }

    #[test]
    fn reinit_destroys_objects() {
        let dir = TempDir::new("reinit");
        let token = new_token(&dir);
        token.login(PIN).unwrap();
        token.import_secret("s", b"secret").unwrap();
        drop(token);
        let token = new_token(&dir);
        token.login(PIN).unwrap();
        assert!(token.find_objects("s").is_empty());
    }

    #[test]
    fn open_checks_the_label() {
        let dir = TempDir::new("label");
        drop(new_token(&dir));
        assert!(matches!(
            SoftToken::open(&dir.0, "other"),
            Err(TokenError::Storage(_))
        ));
        assert!(SoftToken::open(&dir.0, "gateway").is_ok());
    }

    #[test]
    fn labels_and_destroy() {
        let dir = TempDir::new("labels");
        let token = new_token(&dir);
        token.login(PIN).unwrap();
        let (private, public) = token.generate_key_pair(KeyKind::Ed25519, "tls").unwrap();
        assert_eq!(
            token.generate_key_pair(KeyKind::EcP256, "tls"),
            Err(TokenError::LabelInUse)
        );
        assert_eq!(token.import_secret("", b"x"), Err(TokenError::LabelInvalid));
        let long = "l".repeat(MAX_LABEL_LEN + 1);
        assert_eq!(
            token.import_secret(&long, b"x"),
            Err(TokenError::LabelInvalid)
        );
        assert_eq!(
            token.generate_key_pair(KeyKind::Rsa, "rsa"),
            Err(TokenError::MechanismInvalid)
        );
        let info = token.object_info(private).unwrap();
        assert_eq!(
            info,
            ObjectInfo {
                label: "tls".to_string(),
                class: ObjectClass::PrivateKey,
                kind: KeyKind::Ed25519
            }
        );
        assert_eq!(
            token.object_info(public).unwrap().class,
            ObjectClass::PublicKey
        );
        assert_eq!(token.public_key(private), token.public_key(public));
        assert!(token.find_objects("nothing").is_empty());
        token.destroy(private).unwrap();
        assert_eq!(token.destroy(private), Err(TokenError::NoSuchObject));
        assert_eq!(
            token.sign(private, Mechanism::Ed25519, b"m"),
            Err(TokenError::NoSuchObject)
        );
        drop(token);
        let token = SoftToken::open(&dir.0, "gateway").unwrap();
        token.login(PIN).unwrap();
        assert_eq!(token.find_objects("tls"), vec![public]);
    }

    #[test]
    fn signatures_verify_for_every_mechanism() {
        let dir = TempDir::new("sign");
        let token = new_token(&dir);
        token.login(PIN).unwrap();
        let message = b"MAIL FROM:<a@example.test>";
        let (ec, _) = token.generate_key_pair(KeyKind::EcP256, "ec").unwrap();
        let (ed, _) = token.generate_key_pair(KeyKind::Ed25519, "ed").unwrap();
        let (rsa, _) = token.import_private_key("rsa", RSA_PKCS8).unwrap();
        let cases: [(ObjectHandle, Mechanism, &'static dyn VerificationAlgorithm); 8] = [
            (
                ec,
                Mechanism::EcdsaP256Sha256,
                &signature::ECDSA_P256_SHA256_ASN1,
            ),
            (ed, Mechanism::Ed25519, &signature::ED25519),
            (
                rsa,
                Mechanism::RsaPkcs1Sha256,
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
            (
                rsa,
                Mechanism::RsaPkcs1Sha384,
                &signature::RSA_PKCS1_2048_8192_SHA384,
            ),
            (
                rsa,
                Mechanism::RsaPkcs1Sha512,
                &signature::RSA_PKCS1_2048_8192_SHA512,
            ),
            (
                rsa,
                Mechanism::RsaPssSha256,
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
            (
                rsa,
                Mechanism::RsaPssSha384,
                &signature::RSA_PSS_2048_8192_SHA384,
            ),
            (
                rsa,
                Mechanism::RsaPssSha512,
                &signature::RSA_PSS_2048_8192_SHA512,
            ),
        ];
        for (handle, mechanism, algorithm) in cases {
            let sig = token.sign(handle, mechanism, message).unwrap();
            assert!(
                verify(&token, handle, algorithm, message, &sig),
                "{mechanism:?}"
            );
            assert!(
                !verify(&token, handle, algorithm, b"other message", &sig),
                "{mechanism:?}"
            );
        }
        assert_eq!(
            token.sign(ec, Mechanism::Ed25519, message),
            Err(TokenError::KeyTypeInconsistent)
        );
        assert_eq!(
            token.sign(rsa, Mechanism::EcdsaP256Sha256, message),
            Err(TokenError::KeyTypeInconsistent)
        );
        assert_eq!(
            token.sign(ec, Mechanism::HmacSha256, message),
            Err(TokenError::MechanismInvalid)
        );
        assert_eq!(
            token.hmac_sha256(ec, message),
            Err(TokenError::KeyTypeInconsistent)
        );
        // The RSA public key is the one in the PKCS#8 document: its modulus is there.
        let spki = token.public_key(rsa).unwrap();
        assert_eq!(spki.kind, KeyKind::Rsa);
        let (_, rsa_public, _) = der::read_tlv(spki.subject_public_key().unwrap()).unwrap();
        let (tag, modulus, _) = der::read_tlv(rsa_public).unwrap();
        assert_eq!((tag, modulus.len()), (der::TAG_INTEGER, 257));
        assert!(RSA_PKCS8.windows(modulus.len()).any(|w| w == modulus));
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let dir = TempDir::new("hmac");
        let token = new_token(&dir);
        token.login(PIN).unwrap();
        let key_4: Vec<u8> = (1..=25).collect();
        let cases: [(&[u8], &[u8], &str); 6] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 20],
                &[0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                &key_4,
                &[0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &[0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (index, (key, data, expected)) in cases.iter().enumerate() {
            let label = format!("rfc4231-{index}");
            let handle = token.import_secret(&label, key).unwrap();
            assert_eq!(
                token.hmac_sha256(handle, data).unwrap().to_vec(),
                hex(expected)
            );
        }
        // Test case 5: output truncated to 128 bits.
        let handle = token
            .import_secret("rfc4231-truncated", &[0x0c; 20])
            .unwrap();
        let tag = token.hmac_sha256(handle, b"Test With Truncation").unwrap();
        assert_eq!(tag[..16].to_vec(), hex("a3b6167473100ee06e0c796c2955552b"));
    }

    #[test]
    fn sha256_matches_fips_180() {
        let dir = TempDir::new("sha");
        let token = new_token(&dir);
        assert_eq!(
            token.digest_sha256(b"abc").to_vec(),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn objects_persist_and_files_hold_no_key_bytes() {
        let dir = TempDir::new("persist");
        let token = new_token(&dir);
        token.login(PIN).unwrap();
        let (rsa, _) = token.import_private_key("rsa", RSA_PKCS8).unwrap();
        let secret_bytes = b"config-blob-hmac-key-0123456789!";
        let secret = token.import_secret("blob", secret_bytes).unwrap();
        let generated = token.generate_secret("random", 32).unwrap();
        let tag_before = token.hmac_sha256(generated, b"data").unwrap();
        drop(token);
        for entry in fs::read_dir(&dir.0).unwrap() {
            let bytes = fs::read(entry.unwrap().path()).unwrap();
            // No 16-byte window of the PKCS#8 document's private part, nor the secret.
            for window in RSA_PKCS8[RSA_PKCS8.len() - 256..].windows(16) {
                assert!(!bytes.windows(16).any(|w| w == window));
            }
            assert!(!bytes.windows(secret_bytes.len()).any(|w| w == secret_bytes));
        }
        let token = SoftToken::open(&dir.0, "gateway").unwrap();
        token.login(PIN).unwrap();
        assert_eq!(token.find_objects("rsa").len(), 2);
        let sig = token.sign(rsa, Mechanism::RsaPssSha256, b"m").unwrap();
        assert!(verify(
            &token,
            rsa,
            &signature::RSA_PSS_2048_8192_SHA256,
            b"m",
            &sig
        ));
        assert_eq!(token.hmac_sha256(generated, b"data").unwrap(), tag_before);
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret_bytes), b"d");
        assert_eq!(token.hmac_sha256(secret, b"d").unwrap(), expected.as_ref());
    }

    #[test]
    fn swapped_or_relabelled_files_do_not_open() {
        let dir = TempDir::new("tamper");
        let token = new_token(&dir);
        token.login(PIN).unwrap();
        let a = token.import_secret("aaaa", b"first secret").unwrap();
        let b = token.import_secret("bbbb", b"other secret").unwrap();
        drop(token);
        // Give object a's file b's sealed bytes under a's label.
        let path_a = dir.0.join(object_file_name(a.raw()));
        let path_b = dir.0.join(object_file_name(b.raw()));
        let bytes_b = fs::read(&path_b).unwrap();
        let relabelled: Vec<u8> = bytes_b
            .windows(4)
            .position(|w| w == b"bbbb")
            .map(|at| {
                let mut v = bytes_b.clone();
                v[at..at + 4].copy_from_slice(b"aaaa");
                v
            })
            .unwrap();
        fs::write(&path_a, relabelled).unwrap();
        let token = SoftToken::open(&dir.0, "gateway").unwrap();
        token.login(PIN).unwrap();
        assert_eq!(token.hmac_sha256(a, b"m"), Err(TokenError::Crypto));
        assert!(token.hmac_sha256(b, b"m").is_ok());
        // A wrong PIN never unseals: the check value refuses it first.
        token.logout();
        assert_eq!(token.login("0000"), Err(TokenError::PinIncorrect));
    }

    #[test]
    fn damaged_files_are_refused_not_panicked_on() {
        let dir = TempDir::new("damaged");
        let token = new_token(&dir);
        token.login(PIN).unwrap();
        let s = token.import_secret("s", b"secret").unwrap();
        drop(token);
        let header = fs::read(dir.0.join(HEADER_FILE)).unwrap();
        let object = fs::read(dir.0.join(object_file_name(s.raw()))).unwrap();
        for cut in 0..header.len() {
            assert!(
                Header::decode(&header[..cut]).is_err(),
                "header cut at {cut}"
            );
        }
        assert!(Header::decode(&header).is_ok());
        for cut in 0..object.len() {
            assert!(
                StoredObject::decode(&object[..cut]).is_none(),
                "object cut at {cut}"
            );
        }
        assert!(StoredObject::decode(&object).is_some());
        fs::write(dir.0.join(object_file_name(s.raw())), &object[..10]).unwrap();
        assert!(matches!(
            SoftToken::open(&dir.0, "gateway"),
            Err(TokenError::Storage(_))
        ));
    }

    #[test]
    fn import_rejects_garbage_and_oversized_input() {
        let dir = TempDir::new("import");
        let token = new_token(&dir);
        token.login(PIN).unwrap();
        assert_eq!(
            token.import_private_key("k", b"not a key"),
            Err(TokenError::Crypto)
        );
        assert_eq!(
            token.import_private_key("k", &vec![0u8; MAX_PKCS8_LEN + 1]),
            Err(TokenError::Crypto)
        );
        assert_eq!(
            token.generate_secret("s", 0),
            Err(TokenError::MechanismInvalid)
        );
        assert_eq!(
            token.generate_secret("s", MAX_SECRET_LEN + 1),
            Err(TokenError::MechanismInvalid)
        );
        assert!(token.find_objects("k").is_empty());
    }

    #[test]
    fn soft_token_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<SoftToken>();
    }
}
