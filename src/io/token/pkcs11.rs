//! The PKCS#11 token: a module (a shared library) loaded by path through cryptoki, keys generated or imported on the token and never exported.
//!
//! **Keys.** Private and secret keys are made with `CKA_TOKEN`, `CKA_PRIVATE`,
//! `CKA_SENSITIVE` true and `CKA_EXTRACTABLE` false; only their handles leave the token.
//! A key pair's two objects share a label and a random `CKA_ID`.
//!
//! **Sessions.** PKCS#11 login state belongs to the application and slot, not to a
//! session: one *login session* is opened at start and kept for the token's life, so the
//! login survives while the working sessions come and go. Operations such as `C_SignInit`
//! then `C_Sign` are stateful per session, so no two threads ever share one: each call takes a
//! session from a pool (opening one while fewer than [`MAX_SESSIONS`] are open, else
//! waiting for one to come back), runs, and returns it. A session the module reports
//! closed or invalid is dropped, not returned; a call that finds the login gone (a token
//! reset) logs in again once with the PIN it was given and retries.
//!
//! **Handles.** Modules may number private objects afresh at a login (SoftHSM2 does), so
//! the handles this token gives out are its own, stable for its life: each stands for
//! an object by its class, label and `CKA_ID`, and is found again on the module after
//! every login, so a TLS key taken at start still signs after a token reset.
//!
//! **Fallback.** Where the module lacks a mechanism, that operation alone runs in
//! software, and the first time each fallback happens it is logged, naming the mechanism:
//! * a signature whose combined hash-and-sign mechanism is missing (`CKM_ECDSA_SHA256`,
//!   `CKM_SHA256_RSA_PKCS`, `CKM_SHA256_RSA_PKCS_PSS`, …) hashes in software and signs the
//!   digest on the token with the raw mechanism (`CKM_ECDSA`, `CKM_RSA_PKCS` with the
//!   DigestInfo, `CKM_RSA_PKCS_PSS`): the key still never leaves the token;
//! * a key type the module cannot generate or sign with (`CKM_EC_EDWARDS_KEY_PAIR_GEN`,
//!   `CKM_EDDSA`, …) and HMAC keys without `CKM_SHA256_HMAC` live on the *fallback*
//!   software token ([`super::SoftToken`], sealed under the same PIN in its own
//!   directory); their handles carry [`SOFT_HANDLE_BIT`];
//! * random numbers without an RNG on the token, and SHA-256 without `CKM_SHA256`, come
//!   from ring.
//!
//! Every call blocks the calling thread until the module answers ([`Token::blocks`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11 as Module};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism as CkMechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, KeyType, ObjectClass as CkClass, ObjectHandle as CkHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Limit, Slot};
use cryptoki::types::AuthPin;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use super::pkcs8::{self, Pkcs8Key};
use super::soft::{MAX_PKCS8_LEN, MAX_SECRET_LEN, pkcs8_public_key};
use super::{
    KeyKind, Mechanism, ObjectClass, ObjectHandle, ObjectInfo, Operation, OperationRoute,
    Performer, PublicKeyInfo, RSA_GENERATED_BITS, SoftToken, Token, TokenError, TokenInfo,
    check_label, der,
};

/// Most working sessions open at once, besides the login session. Small USB tokens allow
/// as few as 16 sessions in all; the appliance has two cores, so more parallel signing
/// gains nothing. Further callers wait for a session to come back.
pub const MAX_SESSIONS: usize = 8;
/// Handles of objects on the fallback software token have this bit set; modules number
/// their objects from small integers (a module that hands out a handle with it set is
/// refused with a clear error).
pub const SOFT_HANDLE_BIT: u64 = 1 << 63;
/// Length of the random `CKA_ID` that ties a key pair's two objects together.
const KEY_ID_LEN: usize = 16;
/// DER of the P-256 curve OID, the `CKA_EC_PARAMS` of P-256 keys.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the Ed25519 OID (RFC 8410), the `CKA_EC_PARAMS` of Ed25519 keys.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// PKCS#11 3.0 also allows the curve name as a PrintableString.
const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";
/// RSA public exponent of generated keys, F4.
const RSA_PUBLIC_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// Modules loaded in this process, by path. PKCS#11 allows one `C_Initialize` per
/// application, and unloading a module under live sessions is undefined, so a module is
/// loaded once and stays.
static MODULES: Mutex<Vec<(PathBuf, Module)>> = Mutex::new(Vec::new());

/// One hash for the hash-and-sign mechanisms.
struct Hash {
    ring: &'static digest::Algorithm,
    ck: MechanismType,
    mgf: PkcsMgfType,
    /// RFC 8017 §9.2 note 1: the DER `DigestInfo` up to the digest itself.
    digest_info: &'static [u8],
    pkcs1: MechanismType,
    pss: MechanismType,
}

const SHA256: Hash = Hash {
    ring: &digest::SHA256,
    ck: MechanismType::SHA256,
    mgf: PkcsMgfType::MGF1_SHA256,
    digest_info: &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ],
    pkcs1: MechanismType::SHA256_RSA_PKCS,
    pss: MechanismType::SHA256_RSA_PKCS_PSS,
};
const SHA384: Hash = Hash {
    ring: &digest::SHA384,
    ck: MechanismType::SHA384,
    mgf: PkcsMgfType::MGF1_SHA384,
    digest_info: &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ],
    pkcs1: MechanismType::SHA384_RSA_PKCS,
    pss: MechanismType::SHA384_RSA_PKCS_PSS,
};
const SHA512: Hash = Hash {
    ring: &digest::SHA512,
    ck: MechanismType::SHA512,
    mgf: PkcsMgfType::MGF1_SHA512,
    digest_info: &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ],
    pkcs1: MechanismType::SHA512_RSA_PKCS,
    pss: MechanismType::SHA512_RSA_PKCS_PSS,
};

/// What `token show` tells about the module and slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    pub path: PathBuf,
    /// Manufacturer, description and version from `C_GetInfo`.
    pub library: String,
    pub slot: u64,
    pub slot_description: String,
    /// Every mechanism the slot offers, by its `CKM_` name.
    pub mechanisms: Vec<String>,
}

/// Idle working sessions and how many are open in all.
struct Pool {
    idle: Vec<Session>,
    open: usize,
}

/// A PKCS#11 token. `Send + Sync`: sessions sit behind mutexes and are used by one thread
/// at a time (see the module documentation).
pub struct Pkcs11Token {
    module: Module,
    info: ModuleInfo,
    slot: Slot,
    token: TokenInfo,
    /// The module's mechanisms, raw `CK_MECHANISM_TYPE`s.
    offered: HashSet<u64>,
    has_rng: bool,
    login_session: Mutex<Session>,
    /// The user PIN while logged in, for logging in again after a token reset.
    pin: Mutex<Option<AuthPin>>,
    pool: Mutex<Pool>,
    returned: Condvar,
    max_sessions: usize,
    /// Class and key type of objects seen, so a signature costs one call to the module.
    kinds: Mutex<HashMap<u64, (ObjectClass, KeyKind)>>,
    /// The handles given out, and the module's handles for them under this login.
    objects: Mutex<Objects>,
    fallback_dir: Option<PathBuf>,
    fallback: OnceLock<SoftToken>,
    /// Fallbacks logged so far, by the missing mechanism's name.
    noted: Mutex<HashSet<&'static str>>,
    rng: SystemRandom,
}

/// What finds an object on the module again: its class, label and `CKA_ID` (empty for
/// objects without one, such as HMAC keys; labels are unique on this token).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    class: CkClass,
    label: Vec<u8>,
    id: Vec<u8>,
}

impl Identity {
    fn template(&self) -> Vec<Attribute> {
        let mut template = vec![
            Attribute::Class(self.class),
            Attribute::Label(self.label.clone()),
        ];
        if !self.id.is_empty() {
            template.push(Attribute::Id(self.id.clone()));
        }
        template
    }
}

/// The handles this token gave out (its own numbers, from 1, never with
/// [`SOFT_HANDLE_BIT`]) and the module's handle for each under the current login.
#[derive(Default)]
struct Objects {
    /// Ours → the object, and the module's handle for it once found under this login.
    given: HashMap<u64, (Identity, Option<u64>)>,
    /// The module's handle → ours, under this login.
    ours: HashMap<u64, u64>,
    last: u64,
}

impl Objects {
    /// A login began or ended: the module's handles may all change.
    fn forget_module_handles(&mut self) {
        self.ours.clear();
        for (_, module) in self.given.values_mut() {
            *module = None;
        }
    }

    /// The module's number for our handle no longer holds: find it again at next use.
    fn unlink(&mut self, ours: u64) {
        if let Some((_, module)) = self.given.get_mut(&ours)
            && let Some(m) = module.take()
        {
            self.ours.remove(&m);
        }
    }

    /// Links our handle and the module's for this login.
    fn link(&mut self, ours: u64, module: u64) {
        if let Some((_, m)) = self.given.get_mut(&ours) {
            *m = Some(module);
            self.ours.insert(module, ours);
        }
    }
}

/// The module's answer for an object it does not have (or no longer shows).
fn no_such_object() -> CkError {
    CkError::Pkcs11(RvError::ObjectHandleInvalid, Function::FindObjects)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent before it can panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Loads (once per process) and initializes the module at `path`.
fn load(path: &Path) -> Result<Module, TokenError> {
    let mut modules = lock(&MODULES);
    if let Some((_, module)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(module.clone());
    }
    let module = Module::new(path).map_err(|e| {
        TokenError::Device(format!(
            "cannot load PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(TokenError::Device(format!(
                "PKCS#11 module {}: {}",
                path.display(),
                describe(&e)
            )));
        }
    }
    modules.push((path.to_path_buf(), module.clone()));
    Ok(module)
}

/// A cryptoki error in a few words: `C_Login: PinIncorrect`.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("C_{function:?}: CKR {rv:?}"),
        other => other.to_string(),
    }
}

/// The token error for a module's answer.
fn token_error(e: CkError) -> TokenError {
    match &e {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange => {
                TokenError::PinIncorrect
            }
            RvError::PinLocked => TokenError::PinLocked,
            RvError::UserNotLoggedIn => TokenError::NotLoggedIn,
            RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => TokenError::NoSuchObject,
            RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::FunctionNotSupported => TokenError::MechanismInvalid,
            RvError::KeyTypeInconsistent | RvError::KeyFunctionNotPermitted => {
                TokenError::KeyTypeInconsistent
            }
            RvError::TemplateInconsistent
            | RvError::TemplateIncomplete
            | RvError::AttributeValueInvalid
            | RvError::KeySizeRange
            | RvError::DataLenRange => TokenError::Crypto,
            _ => TokenError::Device(describe(&e)),
        },
        _ => TokenError::Device(describe(&e)),
    }
}

/// Whether the session itself is gone: it goes, and the call may be tried on another.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            _
        )
    )
}

/// A pooled session, returned to the pool when dropped unless it was lost.
struct Lease<'a> {
    token: &'a Pkcs11Token,
    session: Option<Session>,
}

impl Lease<'_> {
    fn session(&self) -> &Session {
        // INVARIANT: `session` is Some from creation until drop or `lose`.
        self.session.as_ref().expect("a lease holds its session")
    }

    fn lose(mut self) {
        if let Some(session) = self.session.take() {
            drop(session);
            let mut pool = lock(&self.token.pool);
            pool.open = pool.open.saturating_sub(1);
            self.token.returned.notify_one();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            lock(&self.token.pool).idle.push(session);
            self.token.returned.notify_one();
        }
    }
}

impl Pkcs11Token {
    /// Loads the module at `module_path` and opens the token labelled `label` on it. Not
    /// logged in. `fallback_dir` is where the fallback software token lives (made at the
    /// first login); without it, keys the module cannot hold are refused.
    pub fn open(
        module_path: &Path,
        label: &str,
        fallback_dir: Option<&Path>,
    ) -> Result<Pkcs11Token, TokenError> {
        let module = load(module_path)?;
        let where_ = || format!("PKCS#11 module {}", module_path.display());
        let device = |e: CkError| TokenError::Device(format!("{}: {}", where_(), describe(&e)));
        let mut seen = Vec::new();
        let mut found = None;
        for slot in module.get_slots_with_initialized_token().map_err(device)? {
            let info = module.get_token_info(slot).map_err(device)?;
            let slot_label = info.label().trim_end().to_string();
            if slot_label == label {
                found = Some((slot, info));
                break;
            }
            seen.push(slot_label);
        }
        let Some((slot, token_info)) = found else {
            return Err(TokenError::Device(format!(
                "{} has no token labelled {label:?} (it has {})",
                where_(),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    format!("{seen:?}")
                }
            )));
        };
        let library = module.get_library_info().map_err(device)?;
        let slot_info = module.get_slot_info(slot).map_err(device)?;
        let mechanisms = module.get_mechanism_list(slot).map_err(device)?;
        let offered: HashSet<u64> = mechanisms.iter().map(|m| **m).collect();
        let login_session = module.open_rw_session(slot).map_err(device)?;
        // The login session counts against the token's own session limits.
        let token_limit = match (
            token_info.max_session_count(),
            token_info.max_rw_session_count(),
        ) {
            (Limit::Max(a), Limit::Max(b)) => Some(a.min(b)),
            (Limit::Max(n), _) | (_, Limit::Max(n)) => Some(n),
            _ => None,
        };
        let max_sessions = token_limit
            .map_or(MAX_SESSIONS, |n| {
                usize::try_from(n.saturating_sub(1)).unwrap_or(MAX_SESSIONS)
            })
            .clamp(1, MAX_SESSIONS);
        let info = ModuleInfo {
            path: module_path.to_path_buf(),
            library: format!(
                "{} {} {}",
                library.manufacturer_id().trim_end(),
                library.library_description().trim_end(),
                library.library_version()
            ),
            slot: slot.id(),
            slot_description: slot_info.slot_description().trim_end().to_string(),
            mechanisms: mechanisms.iter().map(|m| m.to_string()).collect(),
        };
        log::info!(target: "token", "opened token {label:?} in slot {} of {} ({})", info.slot, module_path.display(), info.library);
        Ok(Pkcs11Token {
            module,
            slot,
            token: TokenInfo {
                label: label.to_string(),
                manufacturer: token_info.manufacturer_id().trim_end().to_string(),
                model: token_info.model().trim_end().to_string(),
                serial: token_info.serial_number().trim_end().to_string(),
                logged_in: false,
            },
            info,
            offered,
            has_rng: token_info.rng(),
            login_session: Mutex::new(login_session),
            pin: Mutex::new(None),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
            max_sessions,
            kinds: Mutex::new(HashMap::new()),
            objects: Mutex::new(Objects::default()),
            fallback_dir: fallback_dir.map(Path::to_path_buf),
            fallback: OnceLock::new(),
            noted: Mutex::new(HashSet::new()),
            rng: SystemRandom::new(),
        })
    }

    /// The module, slot and mechanisms, for `token show`.
    pub fn module_info(&self) -> &ModuleInfo {
        &self.info
    }

    fn offers(&self, mechanism: MechanismType) -> bool {
        self.offered.contains(&*mechanism)
    }

    fn logged_in(&self) -> bool {
        lock(&self.pin).is_some()
    }

    /// Logs a fallback the first time it happens.
    fn note(&self, missing: &'static str, what: &str) {
        if lock(&self.noted).insert(missing) {
            log::warn!(target: "token", "token {:?}: the module lacks {missing}: {what}", self.token.label);
        }
    }

    /// A working session from the pool, opened if there is room, else waited for.
    fn lease(&self) -> Result<Lease<'_>, TokenError> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(Lease {
                    token: self,
                    session: Some(session),
                });
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                drop(pool);
                return match self.module.open_rw_session(self.slot) {
                    Ok(session) => Ok(Lease {
                        token: self,
                        session: Some(session),
                    }),
                    Err(e) => {
                        let mut pool = lock(&self.pool);
                        pool.open = pool.open.saturating_sub(1);
                        self.returned.notify_one();
                        Err(token_error(e))
                    }
                };
            }
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Runs `op` on a working session. A lost session is dropped and the call tried once
    /// more on another; a lost login is restored once with the PIN.
    fn call<T>(&self, mut op: impl FnMut(&Session) -> Result<T, CkError>) -> Result<T, TokenError> {
        let mut retried = false;
        loop {
            let lease = self.lease()?;
            match op(lease.session()) {
                Ok(value) => return Ok(value),
                Err(e) if session_lost(&e) && !retried => {
                    log::warn!(target: "token", "token {:?}: session lost ({}); opening another", self.token.label, describe(&e));
                    lease.lose();
                }
                Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) if !retried => {
                    drop(lease);
                    self.relogin()?;
                }
                Err(e) => return Err(token_error(e)),
            }
            retried = true;
        }
    }

    /// Logs in again with the PIN last given, after the token forgot the login.
    fn relogin(&self) -> Result<(), TokenError> {
        let pin = lock(&self.pin).clone().ok_or(TokenError::NotLoggedIn)?;
        log::warn!(target: "token", "token {:?}: the login was lost; logging in again", self.token.label);
        lock(&self.kinds).clear();
        lock(&self.objects).forget_module_handles();
        let mut session = lock(&self.login_session);
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) if session_lost(&e) => {
                *session = self
                    .module
                    .open_rw_session(self.slot)
                    .map_err(token_error)?;
                session
                    .login(UserType::User, Some(&pin))
                    .map_err(token_error)
            }
            Err(e) => Err(token_error(e)),
        }
    }

    fn require_login(&self) -> Result<(), TokenError> {
        if self.logged_in() {
            Ok(())
        } else {
            Err(TokenError::NotLoggedIn)
        }
    }

    /// The fallback software token, for keys the module cannot hold.
    fn fallback(&self, missing: &'static str, what: &str) -> Result<&SoftToken, TokenError> {
        let soft = self.fallback.get().ok_or(TokenError::MechanismInvalid)?;
        self.note(missing, what);
        Ok(soft)
    }

    fn soft(&self) -> Result<&SoftToken, TokenError> {
        self.fallback.get().ok_or(TokenError::NoSuchObject)
    }

    /// Our handle for an object the module names `module` under this login, on the
    /// session that found it: the one already given for that object, or a new one.
    fn adopt(&self, s: &Session, module: CkHandle) -> Result<ObjectHandle, CkError> {
        if let Some(&ours) = lock(&self.objects).ours.get(&module.handle()) {
            return Ok(ObjectHandle::from_raw(ours));
        }
        let mut identity = Identity {
            class: CkClass::DATA,
            label: Vec::new(),
            id: Vec::new(),
        };
        for attribute in s.get_attributes(
            module,
            &[
                AttributeType::Class,
                AttributeType::Label,
                AttributeType::Id,
            ],
        )? {
            match attribute {
                Attribute::Class(c) => identity.class = c,
                Attribute::Label(l) => identity.label = l,
                Attribute::Id(i) => identity.id = i,
                _ => {}
            }
        }
        let mut objects = lock(&self.objects);
        // Given before, and not yet found again since a login.
        let known = objects
            .given
            .iter()
            .find(|(_, (i, m))| m.is_none() && *i == identity)
            .map(|(&ours, _)| ours);
        let ours = match known {
            Some(ours) => ours,
            None => {
                objects.last += 1;
                let ours = objects.last;
                objects.given.insert(ours, (identity, None));
                ours
            }
        };
        objects.link(ours, module.handle());
        Ok(ObjectHandle::from_raw(ours))
    }

    /// The module's handle for one of ours under this login, found again on `s` after a
    /// login; an unknown handle or a vanished object is `CKR_OBJECT_HANDLE_INVALID`.
    fn resolve(&self, s: &Session, handle: ObjectHandle) -> Result<CkHandle, CkError> {
        let identity = {
            let objects = lock(&self.objects);
            match objects.given.get(&handle.raw()) {
                Some((_, Some(module))) => return Ok(ck_handle(*module)),
                Some((identity, None)) => identity.clone(),
                None => return Err(no_such_object()),
            }
        };
        let found = s.find_objects(&identity.template())?;
        let module = found.first().ok_or_else(no_such_object)?;
        lock(&self.objects).link(handle.raw(), module.handle());
        Ok(*module)
    }

    /// Runs `op` on the module's handle for `handle` (see [`Pkcs11Token::call`]), found
    /// again on each try. When the module no longer knows the number it gave, the login
    /// may be gone (a token reset; modules that drop private objects' handles at a
    /// logout answer so rather than `CKR_USER_NOT_LOGGED_IN`) or the object renumbered:
    /// once, the login is restored if the module lost it, and the object found again.
    fn call_on<T>(
        &self,
        handle: ObjectHandle,
        mut op: impl FnMut(&Session, CkHandle) -> Result<T, CkError>,
    ) -> Result<T, TokenError> {
        let mut again = false;
        loop {
            let was_found = lock(&self.objects)
                .given
                .get(&handle.raw())
                .is_some_and(|(_, module)| module.is_some());
            match self.call(|s| op(s, self.resolve(s, handle)?)) {
                Err(TokenError::NoSuchObject) if was_found && !again => {
                    again = true;
                    if self.logged_in() && !self.module_logged_in() {
                        self.relogin()?;
                    }
                    lock(&self.objects).unlink(handle.raw());
                }
                done => return done,
            }
        }
    }

    /// Whether the module holds our login now (it may have dropped it in a reset).
    fn module_logged_in(&self) -> bool {
        use cryptoki::session::SessionState;
        lock(&self.login_session)
            .get_session_info()
            .is_ok_and(|info| {
                matches!(
                    info.session_state(),
                    SessionState::RoUser | SessionState::RwUser
                )
            })
    }

    /// Class and key type of an object on the module.
    fn kind(&self, handle: ObjectHandle) -> Result<(ObjectClass, KeyKind), TokenError> {
        if let Some(known) = lock(&self.kinds).get(&handle.raw()) {
            return Ok(*known);
        }
        let (class, kind, _) = self.read_object(handle)?;
        lock(&self.kinds).insert(handle.raw(), (class, kind));
        Ok((class, kind))
    }

    /// Class, key type and label of an object on the module.
    fn read_object(
        &self,
        handle: ObjectHandle,
    ) -> Result<(ObjectClass, KeyKind, String), TokenError> {
        let attributes = self
            .call_on(handle, |s, ck| {
                s.get_attributes(
                    ck,
                    &[
                        AttributeType::Class,
                        AttributeType::KeyType,
                        AttributeType::Label,
                        AttributeType::EcParams,
                    ],
                )
            })
            .map_err(|e| match e {
                // A private object is invisible before login.
                TokenError::NoSuchObject if !self.logged_in() => TokenError::NotLoggedIn,
                other => other,
            })?;
        let (mut class, mut key_type, mut label, mut params) = (None, None, String::new(), None);
        for attribute in attributes {
            match attribute {
                Attribute::Class(c) => class = Some(c),
                Attribute::KeyType(k) => key_type = Some(k),
                Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::EcParams(p) => params = Some(p),
                _ => {}
            }
        }
        let class = match class {
            Some(CkClass::PRIVATE_KEY) => ObjectClass::PrivateKey,
            Some(CkClass::PUBLIC_KEY) => ObjectClass::PublicKey,
            Some(CkClass::SECRET_KEY) => ObjectClass::SecretKey,
            _ => return Err(TokenError::KeyTypeInconsistent),
        };
        let kind = match key_type {
            Some(KeyType::RSA) => KeyKind::Rsa,
            Some(KeyType::EC) if params.as_deref() == Some(&P256_PARAMS[..]) => KeyKind::EcP256,
            Some(KeyType::EC_EDWARDS)
                if params.as_deref() == Some(&ED25519_PARAMS[..])
                    || params.as_deref() == Some(ED25519_PARAMS_NAME) =>
            {
                KeyKind::Ed25519
            }
            Some(KeyType::GENERIC_SECRET | KeyType::SHA256_HMAC) => KeyKind::GenericSecret,
            _ => return Err(TokenError::KeyTypeInconsistent),
        };
        Ok((class, kind, label))
    }

    /// Whether the module can sign with keys of this kind (with or without hashing itself).
    fn signs(&self, kind: KeyKind) -> bool {
        match kind {
            KeyKind::EcP256 => {
                self.offers(MechanismType::ECDSA_SHA256) || self.offers(MechanismType::ECDSA)
            }
            KeyKind::Ed25519 => self.offers(MechanismType::EDDSA),
            KeyKind::Rsa => {
                [SHA256, SHA384, SHA512]
                    .iter()
                    .any(|h| self.offers(h.pkcs1) || self.offers(h.pss))
                    || self.offers(MechanismType::RSA_PKCS)
                    || self.offers(MechanismType::RSA_PKCS_PSS)
            }
            KeyKind::GenericSecret => self.offers(MechanismType::SHA256_HMAC),
        }
    }

    /// Whether the module can generate key pairs of this kind that it can also sign with,
    /// and the mechanism it is missing if not.
    fn generates(&self, kind: KeyKind) -> Result<(), &'static str> {
        let (generate, name) = match kind {
            KeyKind::EcP256 => (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
            KeyKind::Ed25519 => (
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                "CKM_EC_EDWARDS_KEY_PAIR_GEN",
            ),
            KeyKind::Rsa => (
                MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                "CKM_RSA_PKCS_KEY_PAIR_GEN",
            ),
            KeyKind::GenericSecret => (
                MechanismType::GENERIC_SECRET_KEY_GEN,
                "CKM_GENERIC_SECRET_KEY_GEN",
            ),
        };
        if !self.offers(generate) {
            return Err(name);
        }
        if !self.signs(kind) {
            return Err(signing_mechanism_name(kind));
        }
        Ok(())
    }

    fn new_id(&self) -> Result<Vec<u8>, TokenError> {
        let mut id = vec![0u8; KEY_ID_LEN];
        self.rng.fill(&mut id).map_err(|_| TokenError::Crypto)?;
        Ok(id)
    }

    fn check_free(&self, label: &str) -> Result<(), TokenError> {
        check_label(label)?;
        self.require_login()?;
        if !self.find_objects(label).is_empty() {
            return Err(TokenError::LabelInUse);
        }
        Ok(())
    }

    /// Creates the objects of a key pair from templates; returns (private, public).
    fn create_pair(
        &self,
        kind: KeyKind,
        private: Vec<Attribute>,
        public: Vec<Attribute>,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        let private_handle = self.call(|s| s.create_object(&private))?;
        let public_handle = match self.call(|s| s.create_object(&public)) {
            Ok(h) => h,
            Err(e) => {
                // Keep pairs whole: take back the private half.
                let _ = self.call(|s| s.destroy_object(private_handle));
                return Err(e);
            }
        };
        self.remember(kind, private_handle, public_handle)
    }

    fn remember(
        &self,
        kind: KeyKind,
        private: CkHandle,
        public: CkHandle,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        let (private, public) =
            self.call(|s| Ok((self.adopt(s, private)?, self.adopt(s, public)?)))?;
        let mut kinds = lock(&self.kinds);
        kinds.insert(private.raw(), (ObjectClass::PrivateKey, kind));
        kinds.insert(public.raw(), (ObjectClass::PublicKey, kind));
        Ok((private, public))
    }

    /// Signs on the module with the key `handle` of type `kind`.
    fn sign_here(
        &self,
        handle: ObjectHandle,
        mechanism: Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let sign = |mechanism: &CkMechanism<'_>, input: &[u8]| {
            self.call_on(handle, |s, key| s.sign(mechanism, key, input))
        };
        let hash = match mechanism {
            Mechanism::RsaPkcs1Sha384 | Mechanism::RsaPssSha384 => &SHA384,
            Mechanism::RsaPkcs1Sha512 | Mechanism::RsaPssSha512 => &SHA512,
            _ => &SHA256,
        };
        let hashed = || digest::digest(hash.ring, data);
        match mechanism {
            Mechanism::EcdsaP256Sha256 => {
                let raw = if self.offers(MechanismType::ECDSA_SHA256) {
                    sign(&CkMechanism::EcdsaSha256, data)?
                } else if self.offers(MechanismType::ECDSA) {
                    self.note(
                        "CKM_ECDSA_SHA256",
                        "ECDSA signatures hash SHA-256 in software and sign with CKM_ECDSA on the token",
                    );
                    sign(&CkMechanism::Ecdsa, hashed().as_ref())?
                } else {
                    return Err(TokenError::MechanismInvalid);
                };
                ecdsa_der(&raw)
            }
            Mechanism::Ed25519 if self.offers(MechanismType::EDDSA) => sign(
                &CkMechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                data,
            ),
            Mechanism::RsaPkcs1Sha256 | Mechanism::RsaPkcs1Sha384 | Mechanism::RsaPkcs1Sha512 => {
                if self.offers(hash.pkcs1) {
                    let combined = match mechanism {
                        Mechanism::RsaPkcs1Sha384 => CkMechanism::Sha384RsaPkcs,
                        Mechanism::RsaPkcs1Sha512 => CkMechanism::Sha512RsaPkcs,
                        _ => CkMechanism::Sha256RsaPkcs,
                    };
                    sign(&combined, data)
                } else if self.offers(MechanismType::RSA_PKCS) {
                    self.note(
                        hash_and_sign_name(mechanism),
                        "RSA PKCS#1 v1.5 signatures hash in software and sign the DigestInfo with CKM_RSA_PKCS on the token",
                    );
                    sign(
                        &CkMechanism::RsaPkcs,
                        &[hash.digest_info, hashed().as_ref()].concat(),
                    )
                } else {
                    Err(TokenError::MechanismInvalid)
                }
            }
            Mechanism::RsaPssSha256 | Mechanism::RsaPssSha384 | Mechanism::RsaPssSha512 => {
                // RFC 8446 §4.2.3: MGF1 with the same hash, a salt as long as the hash.
                let params = PkcsPssParams {
                    hash_alg: hash.ck,
                    mgf: hash.mgf,
                    s_len: (hash.ring.output_len() as u64).into(),
                };
                if self.offers(hash.pss) {
                    let combined = match mechanism {
                        Mechanism::RsaPssSha384 => CkMechanism::Sha384RsaPkcsPss(params),
                        Mechanism::RsaPssSha512 => CkMechanism::Sha512RsaPkcsPss(params),
                        _ => CkMechanism::Sha256RsaPkcsPss(params),
                    };
                    sign(&combined, data)
                } else if self.offers(MechanismType::RSA_PKCS_PSS) {
                    self.note(
                        hash_and_sign_name(mechanism),
                        "RSA-PSS signatures hash in software and sign with CKM_RSA_PKCS_PSS on the token",
                    );
                    sign(&CkMechanism::RsaPkcsPss(params), hashed().as_ref())
                } else {
                    Err(TokenError::MechanismInvalid)
                }
            }
            _ => Err(TokenError::MechanismInvalid),
        }
    }

    /// How one operation runs here, for [`Token::operations`].
    fn route(&self, operation: Operation) -> Performer {
        let hw = |m: MechanismType| self.offers(m).then(|| m.to_string());
        let hashed = |combined: MechanismType, raw: MechanismType, hash: &str| {
            hw(combined).or_else(|| hw(raw).map(|r| format!("{r}; {hash} in software")))
        };
        let keys_in_software = |missing: &str| {
            if self.fallback_dir.is_some() {
                Performer::Software(format!("keys on the fallback software token: no {missing}"))
            } else {
                Performer::Unavailable(format!("no {missing} and no fallback token"))
            }
        };
        let on_token = |how: Option<String>, kind: KeyKind| match how {
            Some(how) => Performer::Hardware(how),
            None => keys_in_software(signing_mechanism_name(kind)),
        };
        match operation {
            Operation::SignEcdsaP256 => on_token(
                hashed(MechanismType::ECDSA_SHA256, MechanismType::ECDSA, "SHA-256"),
                KeyKind::EcP256,
            ),
            Operation::SignEd25519 => on_token(hw(MechanismType::EDDSA), KeyKind::Ed25519),
            Operation::SignRsaPkcs1 => on_token(
                hashed(
                    MechanismType::SHA256_RSA_PKCS,
                    MechanismType::RSA_PKCS,
                    "hash",
                ),
                KeyKind::Rsa,
            ),
            Operation::SignRsaPss => on_token(
                hashed(
                    MechanismType::SHA256_RSA_PKCS_PSS,
                    MechanismType::RSA_PKCS_PSS,
                    "hash",
                ),
                KeyKind::Rsa,
            ),
            Operation::HmacSha256 => {
                on_token(hw(MechanismType::SHA256_HMAC), KeyKind::GenericSecret)
            }
            Operation::DigestSha256 => match hw(MechanismType::SHA256) {
                Some(how) => Performer::Hardware(how),
                None => Performer::Software("ring: no CKM_SHA256".to_string()),
            },
            Operation::Random => {
                if self.has_rng {
                    Performer::Hardware("C_GenerateRandom".to_string())
                } else {
                    Performer::Software("the kernel's generator: the token has no RNG".to_string())
                }
            }
            Operation::GenerateEcP256
            | Operation::GenerateEd25519
            | Operation::GenerateRsa
            | Operation::GenerateSecret => {
                let kind = match operation {
                    Operation::GenerateEcP256 => KeyKind::EcP256,
                    Operation::GenerateEd25519 => KeyKind::Ed25519,
                    Operation::GenerateRsa => KeyKind::Rsa,
                    _ => KeyKind::GenericSecret,
                };
                match self.generates(kind) {
                    Ok(()) => Performer::Hardware(generation_mechanism_name(kind).to_string()),
                    Err(_) if kind == KeyKind::Rsa => Performer::Unavailable(
                        "no CKM_RSA_PKCS_KEY_PAIR_GEN; the software token imports RSA keys only"
                            .to_string(),
                    ),
                    Err(missing) => keys_in_software(missing),
                }
            }
            Operation::ImportPrivateKey => Performer::Hardware("C_CreateObject".to_string()),
        }
    }
}

/// The module's handle from its number.
fn ck_handle(module: u64) -> CkHandle {
    // SAFETY: a number the module gave under this login, or one it refuses with
    // CKR_OBJECT_HANDLE_INVALID; no memory is reached through it.
    unsafe { CkHandle::new_from_raw(module) }
}

fn signing_mechanism_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::EcP256 => "CKM_ECDSA",
        KeyKind::Ed25519 => "CKM_EDDSA",
        KeyKind::Rsa => "CKM_RSA_PKCS",
        KeyKind::GenericSecret => "CKM_SHA256_HMAC",
    }
}

fn generation_mechanism_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::EcP256 => "CKM_EC_KEY_PAIR_GEN",
        KeyKind::Ed25519 => "CKM_EC_EDWARDS_KEY_PAIR_GEN",
        KeyKind::Rsa => "CKM_RSA_PKCS_KEY_PAIR_GEN",
        KeyKind::GenericSecret => "CKM_GENERIC_SECRET_KEY_GEN",
    }
}

fn hash_and_sign_name(mechanism: Mechanism) -> &'static str {
    match mechanism {
        Mechanism::RsaPkcs1Sha256 => "CKM_SHA256_RSA_PKCS",
        Mechanism::RsaPkcs1Sha384 => "CKM_SHA384_RSA_PKCS",
        Mechanism::RsaPkcs1Sha512 => "CKM_SHA512_RSA_PKCS",
        Mechanism::RsaPssSha256 => "CKM_SHA256_RSA_PKCS_PSS",
        Mechanism::RsaPssSha384 => "CKM_SHA384_RSA_PKCS_PSS",
        Mechanism::RsaPssSha512 => "CKM_SHA512_RSA_PKCS_PSS",
        _ => "CKM_ECDSA_SHA256",
    }
}

/// PKCS#11 gives ECDSA signatures as `r || s`; TLS and X.509 want the DER
/// `ECDSA-Sig-Value` (RFC 3279 §2.2.3).
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, TokenError> {
    if raw.len() != 64 {
        return Err(TokenError::Crypto);
    }
    let (r, s) = raw.split_at(32);
    Ok(der::sequence(&[
        &der::unsigned_integer(r),
        &der::unsigned_integer(s),
    ]))
}

/// The uncompressed point in a `CKA_EC_POINT`: a DER OCTET STRING by the standard, the
/// bare point from some modules.
fn ec_point(value: &[u8], len: usize) -> Option<&[u8]> {
    if value.len() == len {
        return Some(value);
    }
    match der::read_tlv(value) {
        Some((der::TAG_OCTET_STRING, point, [])) if point.len() == len => Some(point),
        _ => None,
    }
}

/// Attributes every private or secret key object gets: on the token, private to the
/// user, sensitive and never extractable.
fn secret_attributes(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn public_attributes(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("module", &self.info.path)
            .field("slot", &self.info.slot)
            .field("label", &self.token.label)
            .field("logged_in", &self.logged_in())
            .finish()
    }
}

impl Token for Pkcs11Token {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            logged_in: self.logged_in(),
            ..self.token.clone()
        }
    }

    fn mechanisms(&self) -> Vec<Mechanism> {
        let mut out = Vec::new();
        let pairs = [
            (Mechanism::EcdsaP256Sha256, self.signs(KeyKind::EcP256)),
            (Mechanism::Ed25519, self.signs(KeyKind::Ed25519)),
            (Mechanism::HmacSha256, self.signs(KeyKind::GenericSecret)),
            (Mechanism::Sha256, self.offers(MechanismType::SHA256)),
            (Mechanism::Random, self.has_rng),
            (
                Mechanism::GenerateEcP256,
                self.generates(KeyKind::EcP256).is_ok(),
            ),
            (
                Mechanism::GenerateEd25519,
                self.generates(KeyKind::Ed25519).is_ok(),
            ),
            (Mechanism::GenerateRsa, self.generates(KeyKind::Rsa).is_ok()),
        ];
        out.extend(
            pairs
                .iter()
                .filter(|(_, offered)| *offered)
                .map(|(m, _)| *m),
        );
        for (hash, pkcs1, pss) in [
            (&SHA256, Mechanism::RsaPkcs1Sha256, Mechanism::RsaPssSha256),
            (&SHA384, Mechanism::RsaPkcs1Sha384, Mechanism::RsaPssSha384),
            (&SHA512, Mechanism::RsaPkcs1Sha512, Mechanism::RsaPssSha512),
        ] {
            if self.offers(hash.pkcs1) || self.offers(MechanismType::RSA_PKCS) {
                out.push(pkcs1);
            }
            if self.offers(hash.pss) || self.offers(MechanismType::RSA_PKCS_PSS) {
                out.push(pss);
            }
        }
        out
    }

    fn login(&self, pin: &str) -> Result<(), TokenError> {
        let auth = AuthPin::new(pin.into());
        {
            let session = lock(&self.login_session);
            match session.login(UserType::User, Some(&auth)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => {
                    let error = token_error(e);
                    log::warn!(target: "token", "token {:?}: login refused: {error}", self.token.label);
                    return Err(error);
                }
            }
        }
        *lock(&self.pin) = Some(auth);
        // Modules may number private objects afresh at each login.
        lock(&self.kinds).clear();
        lock(&self.objects).forget_module_handles();
        if let Some(dir) = &self.fallback_dir {
            let soft = match self.fallback.get() {
                Some(soft) => soft,
                None => {
                    let soft = if SoftToken::exists(dir) {
                        SoftToken::open(dir, &self.token.label)?
                    } else {
                        SoftToken::init(dir, &self.token.label, None, pin)?
                    };
                    self.fallback.get_or_init(|| soft)
                }
            };
            if let Err(e) = soft.login(pin) {
                self.logout();
                return Err(TokenError::Device(format!(
                    "the fallback software token in {} does not open with this PIN: {e}",
                    dir.display()
                )));
            }
        }
        log::info!(target: "token", "logged in to token {:?} in slot {} of {}", self.token.label, self.info.slot, self.info.path.display());
        Ok(())
    }

    fn logout(&self) {
        *lock(&self.pin) = None;
        lock(&self.kinds).clear();
        lock(&self.objects).forget_module_handles();
        let _ = lock(&self.login_session).logout();
        if let Some(soft) = self.fallback.get() {
            soft.logout();
        }
    }

    fn find_objects(&self, label: &str) -> Vec<ObjectHandle> {
        let template = [Attribute::Label(label.as_bytes().to_vec())];
        let found = self.call(|s| {
            let found = s.find_objects(&template)?;
            found.into_iter().map(|h| self.adopt(s, h)).collect()
        });
        let mut out: Vec<ObjectHandle> = match found {
            Ok(found) => found,
            Err(e) => {
                log::warn!(target: "token", "token {:?}: finding {label:?} failed: {e}", self.token.label);
                Vec::new()
            }
        };
        if let Some(soft) = self.fallback.get() {
            out.extend(
                soft.find_objects(label)
                    .into_iter()
                    .map(|h| ObjectHandle::from_raw(h.raw() | SOFT_HANDLE_BIT)),
            );
        }
        out.sort();
        out
    }

    fn object_info(&self, handle: ObjectHandle) -> Result<ObjectInfo, TokenError> {
        if let Some(h) = soft_handle(handle) {
            return self.soft()?.object_info(h);
        }
        let (class, kind, label) = self.read_object(handle)?;
        lock(&self.kinds).insert(handle.raw(), (class, kind));
        Ok(ObjectInfo { label, class, kind })
    }

    fn generate_key_pair(
        &self,
        kind: KeyKind,
        label: &str,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        self.check_free(label)?;
        if let Err(missing) = self.generates(kind) {
            if kind == KeyKind::Rsa || kind == KeyKind::GenericSecret {
                return Err(TokenError::MechanismInvalid);
            }
            let soft = self.fallback(
                missing,
                &format!("{kind:?} keys are generated and kept on the fallback software token"),
            )?;
            let (private, public) = soft.generate_key_pair(kind, label)?;
            return Ok((with_soft_bit(private), with_soft_bit(public)));
        }
        let id = self.new_id()?;
        let mut private = secret_attributes(label);
        private.extend([Attribute::Sign(true), Attribute::Id(id.clone())]);
        let mut public = public_attributes(label);
        public.push(Attribute::Id(id));
        let mechanism = match kind {
            KeyKind::EcP256 => {
                public.push(Attribute::EcParams(P256_PARAMS.to_vec()));
                CkMechanism::EccKeyPairGen
            }
            KeyKind::Ed25519 => {
                public.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
                CkMechanism::EccEdwardsKeyPairGen
            }
            _ => {
                public.extend([
                    Attribute::ModulusBits(u64::from(RSA_GENERATED_BITS).into()),
                    Attribute::PublicExponent(RSA_PUBLIC_EXPONENT.to_vec()),
                ]);
                CkMechanism::RsaPkcsKeyPairGen
            }
        };
        let (public_handle, private_handle) =
            self.call(|s| s.generate_key_pair(&mechanism, &public, &private))?;
        log::info!(target: "token", "token {:?}: generated {kind:?} key pair {label:?}", self.token.label);
        self.remember(kind, private_handle, public_handle)
    }

    fn import_private_key(
        &self,
        label: &str,
        pkcs8_der: &[u8],
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        if pkcs8_der.len() > MAX_PKCS8_LEN {
            return Err(TokenError::Crypto);
        }
        // ring checks the key is whole and gives its public half.
        let public_key = pkcs8_public_key(pkcs8_der)?;
        let parts = pkcs8::parse(pkcs8_der).ok_or(TokenError::Crypto)?;
        self.check_free(label)?;
        if !self.signs(public_key.kind) {
            let soft = self.fallback(
                signing_mechanism_name(public_key.kind),
                &format!(
                    "imported {:?} keys are kept on the fallback software token",
                    public_key.kind
                ),
            )?;
            let (private, public) = soft.import_private_key(label, pkcs8_der)?;
            return Ok((with_soft_bit(private), with_soft_bit(public)));
        }
        let id = self.new_id()?;
        let mut private = secret_attributes(label);
        private.extend([
            Attribute::Class(CkClass::PRIVATE_KEY),
            Attribute::Sign(true),
            Attribute::Id(id.clone()),
        ]);
        let mut public = public_attributes(label);
        public.extend([Attribute::Class(CkClass::PUBLIC_KEY), Attribute::Id(id)]);
        let point = public_key.subject_public_key().ok_or(TokenError::Crypto)?;
        match parts {
            Pkcs8Key::Rsa {
                modulus,
                public_exponent,
                private_exponent,
                prime1,
                prime2,
                exponent1,
                exponent2,
                coefficient,
            } => {
                let numbers = [
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Modulus(modulus.to_vec()),
                    Attribute::PublicExponent(public_exponent.to_vec()),
                ];
                private.extend(numbers.iter().cloned());
                private.extend([
                    Attribute::PrivateExponent(private_exponent.to_vec()),
                    Attribute::Prime1(prime1.to_vec()),
                    Attribute::Prime2(prime2.to_vec()),
                    Attribute::Exponent1(exponent1.to_vec()),
                    Attribute::Exponent2(exponent2.to_vec()),
                    Attribute::Coefficient(coefficient.to_vec()),
                ]);
                public.extend(numbers);
            }
            Pkcs8Key::EcP256 { scalar } => {
                private.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(P256_PARAMS.to_vec()),
                    Attribute::Value(scalar.to_vec()),
                ]);
                public.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(P256_PARAMS.to_vec()),
                    Attribute::EcPoint(der::wrap(der::TAG_OCTET_STRING, point)),
                ]);
            }
            Pkcs8Key::Ed25519 { seed } => {
                private.extend([
                    Attribute::KeyType(KeyType::EC_EDWARDS),
                    Attribute::EcParams(ED25519_PARAMS.to_vec()),
                    Attribute::Value(seed.to_vec()),
                ]);
                public.extend([
                    Attribute::KeyType(KeyType::EC_EDWARDS),
                    Attribute::EcParams(ED25519_PARAMS.to_vec()),
                    Attribute::EcPoint(der::wrap(der::TAG_OCTET_STRING, point)),
                ]);
            }
        }
        let pair = self.create_pair(public_key.kind, private, public)?;
        log::info!(target: "token", "token {:?}: imported {:?} key pair {label:?}", self.token.label, public_key.kind);
        Ok(pair)
    }

    fn generate_secret(&self, label: &str, len: usize) -> Result<ObjectHandle, TokenError> {
        if len == 0 || len > MAX_SECRET_LEN {
            return Err(TokenError::MechanismInvalid);
        }
        self.check_free(label)?;
        if let Err(missing) = self.generates(KeyKind::GenericSecret) {
            let soft = self.fallback(
                missing,
                "HMAC keys are generated and kept on the fallback software token",
            )?;
            return soft.generate_secret(label, len).map(with_soft_bit);
        }
        let mut template = secret_attributes(label);
        template.extend([
            Attribute::Class(CkClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen((len as u64).into()),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ]);
        let handle = self.call(|s| {
            let key = s.generate_key(&CkMechanism::GenericSecretKeyGen, &template)?;
            self.adopt(s, key)
        })?;
        lock(&self.kinds).insert(
            handle.raw(),
            (ObjectClass::SecretKey, KeyKind::GenericSecret),
        );
        Ok(handle)
    }

    fn import_secret(&self, label: &str, secret: &[u8]) -> Result<ObjectHandle, TokenError> {
        if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
            return Err(TokenError::MechanismInvalid);
        }
        self.check_free(label)?;
        if !self.signs(KeyKind::GenericSecret) {
            let soft = self.fallback(
                "CKM_SHA256_HMAC",
                "HMAC keys are kept on the fallback software token",
            )?;
            return soft.import_secret(label, secret).map(with_soft_bit);
        }
        let mut template = secret_attributes(label);
        template.extend([
            Attribute::Class(CkClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Value(secret.to_vec()),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ]);
        let handle = self.call(|s| {
            let key = s.create_object(&template)?;
            self.adopt(s, key)
        })?;
        lock(&self.kinds).insert(
            handle.raw(),
            (ObjectClass::SecretKey, KeyKind::GenericSecret),
        );
        Ok(handle)
    }

    fn hmac_sha256(&self, key: ObjectHandle, data: &[u8]) -> Result<[u8; 32], TokenError> {
        if let Some(h) = soft_handle(key) {
            return self.soft()?.hmac_sha256(h, data);
        }
        self.require_login()?;
        if self.kind(key)? != (ObjectClass::SecretKey, KeyKind::GenericSecret) {
            return Err(TokenError::KeyTypeInconsistent);
        }
        if !self.offers(MechanismType::SHA256_HMAC) {
            return Err(TokenError::MechanismInvalid);
        }
        let tag = self.call_on(key, |s, k| s.sign(&CkMechanism::Sha256Hmac, k, data))?;
        tag.as_slice().try_into().map_err(|_| TokenError::Crypto)
    }

    fn public_key(&self, handle: ObjectHandle) -> Result<PublicKeyInfo, TokenError> {
        if let Some(h) = soft_handle(handle) {
            return self.soft()?.public_key(h);
        }
        let (class, kind) = self.kind(handle)?;
        if class == ObjectClass::PrivateKey {
            self.require_login()?;
        }
        let read = |handle: ObjectHandle, types: &'static [AttributeType]| {
            self.call_on(handle, |s, ck| s.get_attributes(ck, types))
        };
        let der = match (class, kind) {
            (ObjectClass::SecretKey, _) | (_, KeyKind::GenericSecret) => {
                return Err(TokenError::KeyTypeInconsistent);
            }
            (_, KeyKind::Rsa) => {
                // Both halves of an RSA pair carry the public numbers.
                let (mut modulus, mut exponent) = (None, None);
                for attribute in read(
                    handle,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )? {
                    match attribute {
                        Attribute::Modulus(m) => modulus = Some(m),
                        Attribute::PublicExponent(e) => exponent = Some(e),
                        _ => {}
                    }
                }
                let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
                    return Err(TokenError::Crypto);
                };
                der::spki_rsa(&der::sequence(&[
                    &der::unsigned_integer(&modulus),
                    &der::unsigned_integer(&exponent),
                ]))
            }
            (_, KeyKind::EcP256 | KeyKind::Ed25519) => {
                let public = if class == ObjectClass::PublicKey {
                    handle
                } else {
                    self.partner(handle)?
                };
                let value = read(public, &[AttributeType::EcPoint])?
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::EcPoint(p) => Some(p),
                        _ => None,
                    })
                    .ok_or(TokenError::Crypto)?;
                if kind == KeyKind::EcP256 {
                    der::spki_ec_p256(ec_point(&value, 65).ok_or(TokenError::Crypto)?)
                } else {
                    der::spki_ed25519(ec_point(&value, 32).ok_or(TokenError::Crypto)?)
                }
            }
        };
        Ok(PublicKeyInfo { kind, der })
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
        if let Some(h) = soft_handle(handle) {
            return self.soft()?.sign(h, mechanism, data);
        }
        self.require_login()?;
        match self.kind(handle)? {
            (ObjectClass::PrivateKey, kind) if kind == needed => {}
            _ => return Err(TokenError::KeyTypeInconsistent),
        }
        self.sign_here(handle, mechanism, data)
    }

    fn digest_sha256(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let on_token = if self.offers(MechanismType::SHA256) {
            match self.call(|s| s.digest(&CkMechanism::Sha256, data)) {
                Ok(d) if d.len() == 32 => Some(d),
                Ok(_) | Err(_) => {
                    self.note(
                        "a working CKM_SHA256",
                        "SHA-256 digests are computed in software",
                    );
                    None
                }
            }
        } else {
            self.note("CKM_SHA256", "SHA-256 digests are computed in software");
            None
        };
        match on_token {
            Some(d) => out.copy_from_slice(&d),
            None => out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref()),
        }
        out
    }

    fn random(&self, buf: &mut [u8]) -> Result<(), TokenError> {
        if self.has_rng {
            match self.call(|s| s.generate_random_slice(buf)) {
                Ok(()) => return Ok(()),
                Err(e) => self.note(
                    "a working C_GenerateRandom",
                    &format!("random numbers come from the kernel ({e})"),
                ),
            }
        } else {
            self.note("a random generator", "random numbers come from the kernel");
        }
        self.rng.fill(buf).map_err(|_| TokenError::Crypto)
    }

    fn destroy(&self, handle: ObjectHandle) -> Result<(), TokenError> {
        if let Some(h) = soft_handle(handle) {
            return self.soft()?.destroy(h);
        }
        self.require_login()?;
        self.call_on(handle, |s, ck| s.destroy_object(ck))?;
        lock(&self.kinds).remove(&handle.raw());
        let mut objects = lock(&self.objects);
        if let Some((_, Some(module))) = objects.given.remove(&handle.raw()) {
            objects.ours.remove(&module);
        }
        Ok(())
    }

    fn blocks(&self) -> bool {
        true
    }

    fn operations(&self) -> Vec<OperationRoute> {
        Operation::ALL
            .iter()
            .map(|&operation| OperationRoute {
                operation,
                performer: self.route(operation),
            })
            .collect()
    }
}

impl Pkcs11Token {
    /// The public object of the pair a private key belongs to: same `CKA_ID` (when it
    /// has one) and label.
    fn partner(&self, private: ObjectHandle) -> Result<ObjectHandle, TokenError> {
        let (mut id, mut label) = (Vec::new(), Vec::new());
        for attribute in self.call_on(private, |s, ck| {
            s.get_attributes(ck, &[AttributeType::Id, AttributeType::Label])
        })? {
            match attribute {
                Attribute::Id(i) => id = i,
                Attribute::Label(l) => label = l,
                _ => {}
            }
        }
        let mut template = vec![
            Attribute::Class(CkClass::PUBLIC_KEY),
            Attribute::Label(label),
        ];
        if !id.is_empty() {
            template.push(Attribute::Id(id));
        }
        self.call(|s| {
            let found = s.find_objects(&template)?;
            found
                .first()
                .map(|&public| self.adopt(s, public))
                .unwrap_or_else(|| Err(no_such_object()))
        })
        .map_err(|e| match e {
            TokenError::NoSuchObject => {
                TokenError::Device("no public key object for this private key".to_string())
            }
            other => other,
        })
    }
}

/// The fallback token's own handle, when `handle` is one of its objects.
fn soft_handle(handle: ObjectHandle) -> Option<ObjectHandle> {
    (handle.raw() & SOFT_HANDLE_BIT != 0)
        .then(|| ObjectHandle::from_raw(handle.raw() & !SOFT_HANDLE_BIT))
}

fn with_soft_bit(handle: ObjectHandle) -> ObjectHandle {
    ObjectHandle::from_raw(handle.raw() | SOFT_HANDLE_BIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_der() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80;
        raw[63] = 1;
        let der = ecdsa_der(&raw).unwrap();
        let (tag, body, rest) = der::read_tlv(&der).unwrap();
        assert_eq!((tag, rest.len()), (der::TAG_SEQUENCE, 0));
        let (_, r, rest) = der::read_tlv(body).unwrap();
        let (_, s, rest) = der::read_tlv(rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(r.len(), 33, "a leading zero keeps r positive");
        assert_eq!(s, [1]);
        assert_eq!(ecdsa_der(&raw[..63]), Err(TokenError::Crypto));
    }

    #[test]
    fn ec_points_are_read_bare_or_wrapped() {
        let point = [4u8; 65];
        assert_eq!(ec_point(&point, 65), Some(&point[..]));
        let wrapped = der::wrap(der::TAG_OCTET_STRING, &point);
        assert_eq!(ec_point(&wrapped, 65), Some(&point[..]));
        assert_eq!(ec_point(&wrapped[..10], 65), None);
        assert_eq!(
            ec_point(&der::wrap(der::TAG_OCTET_STRING, &[1; 32]), 32),
            Some(&[1u8; 32][..])
        );
    }

    #[test]
    fn digest_info_prefixes_end_in_the_digest_length() {
        for hash in [&SHA256, &SHA384, &SHA512] {
            let info = hash.digest_info;
            assert_eq!(usize::from(info[info.len() - 1]), hash.ring.output_len());
            assert_eq!(
                usize::from(info[1]) + 2,
                info.len() + hash.ring.output_len()
            );
        }
    }

    #[test]
    fn soft_handles_round_trip() {
        let h = ObjectHandle::from_raw(7);
        assert_eq!(soft_handle(with_soft_bit(h)), Some(h));
        assert_eq!(soft_handle(h), None);
    }

    #[test]
    fn a_missing_module_is_a_clear_error() {
        let e = Pkcs11Token::open(Path::new("/nonexistent/libpkcs11.so"), "x", None).unwrap_err();
        let TokenError::Device(message) = e else {
            panic!("{e:?}");
        };
        assert!(
            message.contains("cannot load PKCS#11 module /nonexistent/libpkcs11.so"),
            "{message}"
        );
    }
}
