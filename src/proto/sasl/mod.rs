//! SASL mechanisms (RFC 4422) for SMTP AUTH (RFC 4954), the local user database, and the
//! credential lookup between them. **Invariant:** a mechanism does no I/O, reads no
//! clock, draws no random number and derives no key itself; it names its failures
//! ([`AuthError`]) and knows nothing of SMTP.
//!
//! Every mechanism is a plain state machine behind [`Mechanism`]: it takes the client's
//! lines as they came off the wire (base64 text without CRLF) and returns the next
//! [`Step`]. It does no I/O, reads no clock and draws no random numbers: the caller passes
//! in the server nonce, the CRAM-MD5 timestamp and the verified certificate identity. Nor
//! does it run PBKDF2, which costs up to a second: when a password must be derived (PLAIN,
//! LOGIN) it returns [`Step::Derive`], the caller runs [`Derivation::run`] where it
//! costs no one a wait (the blocking pool) and hands the result back with
//! [`Mechanism::derived`].
//!
//! Calling order, for every mechanism:
//! 1. construct it for one AUTH command;
//! 2. call [`Mechanism::start`] once, with the initial response if the AUTH command had one;
//! 3. while the result is [`Step::Challenge`], send `334 <base64 of the challenge>` and
//!    pass the client's next line to [`Mechanism::step`]; on [`Step::Derive`], run the
//!    derivation and pass its result to [`Mechanism::derived`], which gives the next step;
//! 4. on [`Step::Success`] or [`Step::Failure`] the exchange is over; further calls fail
//!    with [`AuthError::Malformed`].
//!
//! On success with `final_data` (SCRAM's server-final message), RFC 4954 §4 has no room for
//! data in the 235 reply: the SMTP layer sends `334 <base64 of final_data>`, expects an
//! empty line, and only then replies 235 (any other line: 501 5.7.0 and no authentication).
//!
//! Nothing here implements SASLprep (RFC 4013): names and passwords are compared as the
//! exact UTF-8 octets the client sent.

pub mod base64;
pub mod client;
pub mod cram_md5;
pub mod external;
pub mod login;
pub mod md5;
pub mod plain;
pub mod scram;
pub mod users;

use std::num::NonZeroU32;
use std::rc::Rc;

use ring::{digest, hmac, pbkdf2};

pub use cram_md5::CramMd5;
pub use external::External;
pub use login::Login;
pub use plain::Plain;
pub use scram::{ScramSha256, ServerNonce};
pub use users::UserDb;

/// RFC 4954 §4: a server must accept at least 12288 octets of base64 in one response line
/// (without CRLF). Longer lines fail with [`AuthError::TooLong`]. Worst-case memory: the
/// line itself (held by the caller) plus 9216 decoded octets.
pub const MAX_RESPONSE_LEN: usize = 12288;

/// RFC 4616 §2: authzid, authcid and passwd are each at most 255 octets. Also the bound on
/// user names in the database and on LOGIN's fields.
pub const MAX_FIELD_LEN: usize = 255;

/// One result of feeding the mechanism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these raw octets (base64-encoded by the SMTP layer) in a 334 reply.
    Challenge(Vec<u8>),
    /// Authenticated as `user`, acting for `authzid` when one was given (always equal to
    /// `user` in this firmware: see the mechanisms).
    Success {
        authzid: Option<String>,
        user: String,
        /// Additional data with success (SCRAM's `v=`): see the module docs.
        final_data: Option<Vec<u8>>,
    },
    /// The exchange failed; reply with [`AuthError::reply`].
    Failure(AuthError),
    /// A password must be derived (RFC 5802 §3 `Hi()`, PBKDF2): run it and pass the
    /// result to [`Mechanism::derived`].
    Derive(Derivation),
}

/// A PBKDF2 derivation a mechanism needs done: the password the client sent, and the
/// salt and iterations of the secret it is checked against (a real user's, or a stand-in
/// with the same parameters: see [`Credentials::stand_in`]). `Send`, so it can run on
/// another thread; its `Debug` never shows the password, and the password is zeroed when
/// it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Derivation {
    hash: ScramHash,
    password: Vec<u8>,
    salt: Vec<u8>,
    iterations: NonZeroU32,
}

impl std::fmt::Debug for Derivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Derivation")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Drop for Derivation {
    fn drop(&mut self) {
        self.password.fill(0);
        std::hint::black_box(&self.password);
    }
}

impl Derivation {
    fn new(hash: ScramHash, password: &[u8], secret: &ScramSecret) -> Derivation {
        Derivation {
            hash,
            password: password.to_vec(),
            salt: secret.salt.clone(),
            iterations: secret.iterations,
        }
    }

    /// PBKDF2 iterations this costs.
    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    /// Runs the derivation: `iterations` HMAC-SHA-256 pairs, up to a second on a slow
    /// board. Pure computation.
    pub fn run(&self) -> DerivedKey {
        let secret =
            ScramSecret::derive_with(self.hash, &self.password, &self.salt, self.iterations.get());
        DerivedKey(secret.stored_key)
    }
}

/// The result of a [`Derivation`]: the SCRAM stored key of the password the client sent.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivedKey(Vec<u8>);

impl std::fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DerivedKey(..)")
    }
}

/// Why an exchange failed. Each knows its RFC 4954 reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The client sent `*`.
    Cancelled,
    /// Bad base64 or a message that does not follow the mechanism's syntax, or a call out
    /// of order.
    Malformed,
    /// Unknown user, wrong password or proof, or an identity we do not accept.
    BadCredentials,
    /// A response line longer than [`MAX_RESPONSE_LEN`].
    TooLong,
    /// The credential store could not answer; never returned by the mechanisms themselves,
    /// available to the caller (for example while the user database is not loaded).
    Temporary,
}

impl AuthError {
    /// Code, enhanced code and text of the RFC 4954 reply.
    pub fn parts(&self) -> (u16, &'static str, &'static str) {
        match self {
            AuthError::Cancelled => (501, "5.7.0", "Authentication aborted"),
            AuthError::Malformed => (501, "5.5.2", "Cannot decode response"),
            AuthError::BadCredentials => (535, "5.7.8", "Authentication credentials invalid"),
            AuthError::TooLong => (500, "5.5.6", "Authentication Exchange line is too long"),
            AuthError::Temporary => (454, "4.7.0", "Temporary authentication failure"),
        }
    }
}

/// One SASL exchange on the server side. See the module docs for the calling order.
pub trait Mechanism {
    /// Starts the exchange. `initial` is the AUTH command's initial response as sent:
    /// base64 text, or `=` for an empty one (RFC 4954 §4).
    fn start(&mut self, initial: Option<&[u8]>) -> Step;
    /// Feeds the client's response line as sent: base64 text without CRLF, or `*`.
    fn step(&mut self, response: &[u8]) -> Step;
    /// The result of the derivation the last [`Step::Derive`] asked for. Mechanisms that
    /// never ask fail it as out of order.
    fn derived(&mut self, _key: &DerivedKey) -> Step {
        Step::Failure(AuthError::Malformed)
    }
    /// The authentication identity the client has named so far, for throttling by user.
    fn user(&self) -> Option<&str> {
        None
    }
}

/// The mechanisms this firmware knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MechanismName {
    Plain,
    Login,
    CramMd5,
    ScramSha256,
    External,
}

impl MechanismName {
    pub const ALL: [MechanismName; 5] = [
        MechanismName::Plain,
        MechanismName::Login,
        MechanismName::CramMd5,
        MechanismName::ScramSha256,
        MechanismName::External,
    ];

    /// The IANA-registered name, as advertised in EHLO.
    pub fn as_str(&self) -> &'static str {
        match self {
            MechanismName::Plain => "PLAIN",
            MechanismName::Login => "LOGIN",
            MechanismName::CramMd5 => "CRAM-MD5",
            MechanismName::ScramSha256 => "SCRAM-SHA-256",
            MechanismName::External => "EXTERNAL",
        }
    }

    /// Parses a name from an AUTH command; case-insensitive (RFC 4422 §3.1 names are
    /// upper case, RFC 4954 clients may send any case).
    pub fn parse(name: &[u8]) -> Option<MechanismName> {
        MechanismName::ALL
            .into_iter()
            .find(|m| m.as_str().as_bytes().eq_ignore_ascii_case(name))
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// What the caller supplies to begin an exchange: the values a mechanism must not fetch
/// for itself.
#[derive(Clone, Copy, Debug)]
pub struct ExchangeInputs<'a> {
    /// Fresh random octets, at least [`scram::MIN_NONCE_RANDOM`]: SCRAM's server nonce;
    /// CRAM-MD5's random number is the first 8 of them.
    pub random: &'a [u8],
    /// The current time in seconds since the Unix epoch, for CRAM-MD5's challenge.
    pub timestamp: u64,
    /// Our host name, for CRAM-MD5's challenge.
    pub hostname: &'a str,
    /// The verified client certificate's identity (SAN email or CN), for EXTERNAL.
    pub cert_identity: Option<&'a str>,
}

/// Builds the mechanism `name` for one AUTH command. `None` when the inputs do not suit
/// it (too few random octets, an invalid host name): a fault of ours, so the caller
/// replies with [`AuthError::Temporary`].
pub fn new_mechanism<'c, C: Credentials + 'c>(
    name: MechanismName,
    credentials: C,
    inputs: &ExchangeInputs<'_>,
) -> Option<Box<dyn Mechanism + 'c>> {
    let mechanism: Box<dyn Mechanism + 'c> = match name {
        MechanismName::Plain => Box::new(Plain::new(credentials)),
        MechanismName::Login => Box::new(Login::new(credentials)),
        MechanismName::CramMd5 => {
            let random: [u8; 8] = inputs.random.get(..8)?.try_into().ok()?;
            Box::new(CramMd5::new(
                credentials,
                u64::from_le_bytes(random),
                inputs.timestamp,
                inputs.hostname,
            )?)
        }
        MechanismName::ScramSha256 => Box::new(ScramSha256::new(
            credentials,
            ServerNonce::from_random(inputs.random)?,
        )),
        MechanismName::External => Box::new(External::new(credentials, inputs.cert_identity)),
    };
    Some(mechanism)
}

/// A set of mechanisms, e.g. those enabled for a user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MechanismSet(u8);

impl MechanismSet {
    pub const EMPTY: MechanismSet = MechanismSet(0);

    pub fn with(self, name: MechanismName) -> MechanismSet {
        MechanismSet(self.0 | name.bit())
    }

    pub fn without(self, name: MechanismName) -> MechanismSet {
        MechanismSet(self.0 & !name.bit())
    }

    pub fn contains(&self, name: MechanismName) -> bool {
        self.0 & name.bit() != 0
    }

    pub fn iter(&self) -> impl Iterator<Item = MechanismName> + '_ {
        MechanismName::ALL.into_iter().filter(|m| self.contains(*m))
    }
}

/// Where mechanisms look up secrets. `None` means "no such user" or "not enabled".
pub trait Credentials {
    /// The SCRAM-SHA-256 secret; PLAIN and LOGIN verify passwords against it too.
    fn scram(&self, user: &str) -> Option<ScramSecret>;
    /// The secret an unknown user is checked against, so that nothing an attacker can
    /// time or see tells an unknown user from a known one: the same salt length and
    /// iterations as real secrets, and keys nobody's password or proof matches. The
    /// default is made with the minimum iterations and a salt from the name alone; a
    /// real store overrides it ([`users::UserLookup`]).
    fn stand_in(&self, user: &str) -> ScramSecret {
        stand_in_secret(b"", user, MIN_ITERATIONS)
    }
    /// The CRAM-MD5 secret, only for users with CRAM-MD5 enabled.
    fn cram_md5(&self, user: &str) -> Option<CramMd5Secret>;
    /// Maps a verified client certificate's identity (SAN email or CN) to a user.
    fn external(&self, cert_identity: &str) -> Option<String>;
}

impl<T: Credentials + ?Sized> Credentials for &T {
    fn scram(&self, user: &str) -> Option<ScramSecret> {
        (**self).scram(user)
    }
    fn stand_in(&self, user: &str) -> ScramSecret {
        (**self).stand_in(user)
    }
    fn cram_md5(&self, user: &str) -> Option<CramMd5Secret> {
        (**self).cram_md5(user)
    }
    fn external(&self, cert_identity: &str) -> Option<String> {
        (**self).external(cert_identity)
    }
}

impl<T: Credentials + ?Sized> Credentials for Rc<T> {
    fn scram(&self, user: &str) -> Option<ScramSecret> {
        (**self).scram(user)
    }
    fn stand_in(&self, user: &str) -> ScramSecret {
        (**self).stand_in(user)
    }
    fn cram_md5(&self, user: &str) -> Option<CramMd5Secret> {
        (**self).cram_md5(user)
    }
    fn external(&self, cert_identity: &str) -> Option<String> {
        (**self).external(cert_identity)
    }
}

/// RFC 7677 §4: at least 4096 PBKDF2 iterations.
pub const MIN_ITERATIONS: u32 = 4096;
/// Our ceiling on PBKDF2 iterations: each PLAIN or LOGIN attempt costs this many
/// HMAC-SHA-256 pairs, about a second on the slowest board at this value.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Shortest salt we store: 8 octets (NIST SP 800-132 asks for at least 128 bits; RFC 5802
/// examples use 16; we accept 8 for imported secrets and generate 16).
pub const MIN_SALT_LEN: usize = 8;
/// Longest salt we store: 64 octets.
pub const MAX_SALT_LEN: usize = 64;
/// SHA-256 output: 32 octets.
pub const SCRAM_KEY_LEN: usize = 32;

/// The hash under a SCRAM mechanism. Only SHA-256 is offered; SHA-1 exists to check the
/// algorithm against RFC 5802's vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScramHash {
    #[cfg_attr(not(test), allow(dead_code))]
    Sha1,
    Sha256,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            ScramHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => hmac::HMAC_SHA256,
        };
        hmac::sign(&hmac::Key::new(algorithm, key), data)
            .as_ref()
            .to_vec()
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            ScramHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => &digest::SHA256,
        };
        digest::digest(algorithm, data).as_ref().to_vec()
    }

    fn len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// RFC 5802 §3: SaltedPassword := Hi(Normalize(password), salt, i).
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
        let algorithm = match self {
            ScramHash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        };
        let mut out = vec![0u8; self.len()];
        pbkdf2::derive(algorithm, iterations, salt, password, &mut out);
        out
    }
}

/// Why a secret could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretError {
    /// Iterations outside [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`].
    Iterations,
    /// Salt length outside [`MIN_SALT_LEN`]..=[`MAX_SALT_LEN`].
    Salt,
    /// A key of the wrong length.
    KeyLength,
}

/// A user's SCRAM secret (RFC 5802 §3): what the server stores instead of the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    salt: Vec<u8>,
    iterations: NonZeroU32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramSecret {
    /// Derives the SCRAM-SHA-256 secret of `password`.
    pub fn derive(
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramSecret, SecretError> {
        check_salt_and_iterations(salt, iterations)?;
        Ok(ScramSecret::derive_with(
            ScramHash::Sha256,
            password.as_bytes(),
            salt,
            iterations,
        ))
    }

    /// Rebuilds a stored SCRAM-SHA-256 secret, checking every bound.
    pub fn from_parts(
        salt: &[u8],
        iterations: u32,
        stored_key: &[u8],
        server_key: &[u8],
    ) -> Result<ScramSecret, SecretError> {
        check_salt_and_iterations(salt, iterations)?;
        if stored_key.len() != SCRAM_KEY_LEN || server_key.len() != SCRAM_KEY_LEN {
            return Err(SecretError::KeyLength);
        }
        let iterations = NonZeroU32::new(iterations).ok_or(SecretError::Iterations)?;
        Ok(ScramSecret {
            salt: salt.to_vec(),
            iterations,
            stored_key: stored_key.to_vec(),
            server_key: server_key.to_vec(),
        })
    }

    /// Whether `password` is the one this secret was derived from (constant time in the
    /// comparison; the derivation costs the same for every password). Blocks for the
    /// derivation: run it off the executor.
    pub(crate) fn verify_password(&self, hash: ScramHash, password: &[u8]) -> bool {
        let candidate = ScramSecret::derive_with(hash, password, &self.salt, self.iterations.get());
        constant_time_eq(&candidate.stored_key, &self.stored_key)
    }

    /// Derivation without bounds, for any hash. `iterations` of 0 counts as 1.
    pub(crate) fn derive_with(
        hash: ScramHash,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramSecret {
        let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        let salted = hash.salted_password(password, salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        ScramSecret {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    pub fn stored_key(&self) -> &[u8] {
        &self.stored_key
    }

    pub fn server_key(&self) -> &[u8] {
        &self.server_key
    }
}

fn check_salt_and_iterations(salt: &[u8], iterations: u32) -> Result<(), SecretError> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(SecretError::Iterations);
    }
    if !(MIN_SALT_LEN..=MAX_SALT_LEN).contains(&salt.len()) {
        return Err(SecretError::Salt);
    }
    Ok(())
}

/// A user's CRAM-MD5 secret: the HMAC-MD5 chaining states after absorbing `key ^ ipad` and
/// `key ^ opad`, as Dovecot and Cyrus store it. Equivalent to the password for CRAM-MD5,
/// but it does not reveal the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct CramMd5Secret {
    pub inner_pad_state: [u8; md5::DIGEST_LEN],
    pub outer_pad_state: [u8; md5::DIGEST_LEN],
}

impl std::fmt::Debug for CramMd5Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CramMd5Secret").finish_non_exhaustive()
    }
}

impl CramMd5Secret {
    pub fn derive(password: &str) -> CramMd5Secret {
        let (inner, outer) = md5::hmac_pad_states(password.as_bytes());
        CramMd5Secret {
            inner_pad_state: inner.0,
            outer_pad_state: outer.0,
        }
    }

    /// HMAC-MD5 of `message` under the password this secret stands for.
    pub fn hmac(&self, message: &[u8]) -> [u8; md5::DIGEST_LEN] {
        md5::hmac_from_pad_states(
            &md5::ChainState(self.inner_pad_state),
            &md5::ChainState(self.outer_pad_state),
            message,
        )
    }
}

/// Compares two slices in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

/// Decodes a response line: `*` cancels, overlong lines and bad base64 fail.
pub(crate) fn decode_response(line: &[u8]) -> Result<Vec<u8>, AuthError> {
    if line.len() > MAX_RESPONSE_LEN {
        return Err(AuthError::TooLong);
    }
    if line == b"*" {
        return Err(AuthError::Cancelled);
    }
    base64::decode(line).ok_or(AuthError::Malformed)
}

/// Decodes an AUTH command's initial response: `=` is the empty response (RFC 4954 §4).
pub(crate) fn decode_initial(text: &[u8]) -> Result<Vec<u8>, AuthError> {
    if text.len() > MAX_RESPONSE_LEN {
        return Err(AuthError::TooLong);
    }
    match text {
        b"=" => Ok(Vec::new()),
        b"" => Err(AuthError::Malformed),
        _ => base64::decode(text).ok_or(AuthError::Malformed),
    }
}

/// Salt length of stand-in secrets: what new secrets get (`users::SALT_LEN`).
pub const STAND_IN_SALT_LEN: usize = 16;

/// A stand-in secret for `user`: salt and keys are HMAC-SHA-256 of the name under `key`
/// (a secret of the running gateway, so nobody can compute them to tell a stand-in
/// from a real salt), the same for every ask, with `iterations`. Its stored key is 32
/// octets no password derives but by chance (2^-256).
pub fn stand_in_secret(key: &[u8], user: &str, iterations: u32) -> ScramSecret {
    let mac = |label: &str| {
        let mut input = label.as_bytes().to_vec();
        input.push(0);
        input.extend_from_slice(user.as_bytes());
        ScramHash::Sha256.hmac(key, &input)
    };
    let mut salt = mac("drawbridge stand-in salt");
    salt.truncate(STAND_IN_SALT_LEN);
    ScramSecret {
        salt,
        iterations: NonZeroU32::new(iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS))
            .unwrap_or(NonZeroU32::MIN),
        stored_key: mac("drawbridge stand-in stored key"),
        server_key: mac("drawbridge stand-in server key"),
    }
}

/// A password check for PLAIN and LOGIN, started: the derivation to run, and what its
/// result must equal. An unknown user costs the same derivation as a known one, against
/// its stand-in secret.
pub(crate) struct PasswordCheck {
    stored_key: Vec<u8>,
}

impl PasswordCheck {
    pub(crate) fn start<C: Credentials>(
        credentials: &C,
        user: &str,
        password: &str,
    ) -> (PasswordCheck, Derivation) {
        let secret = credentials
            .scram(user)
            .unwrap_or_else(|| credentials.stand_in(user));
        let derivation = Derivation::new(ScramHash::Sha256, password.as_bytes(), &secret);
        (
            PasswordCheck {
                stored_key: secret.stored_key,
            },
            derivation,
        )
    }

    /// Whether the derived key is the secret's (constant time).
    pub(crate) fn matches(&self, key: &DerivedKey) -> bool {
        constant_time_eq(&key.0, &self.stored_key)
    }
}

/// Accepts an authorization identity only when it is absent, empty or the authenticated
/// user itself: this firmware has no proxy-authorization rules, so acting for someone
/// else is refused rather than silently ignored.
pub(crate) fn authorize(authzid: Option<String>, user: String) -> Step {
    match authzid {
        Some(authzid) if !authzid.is_empty() && authzid != user => {
            Step::Failure(AuthError::BadCredentials)
        }
        Some(authzid) if !authzid.is_empty() => Step::Success {
            authzid: Some(authzid),
            user,
            final_data: None,
        },
        _ => Step::Success {
            authzid: None,
            user,
            final_data: None,
        },
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared test fixtures: a credential store and a mutation fuzzer.

    use super::*;
    use crate::proto::dns::rng::Prng;

    /// Iterations in tests: the minimum, to keep the suite quick.
    pub const TEST_ITERATIONS: u32 = MIN_ITERATIONS;

    /// A mechanism whose derivations are run on the spot, as a caller that does not
    /// mind waiting would: `start` and `step` never return [`Step::Derive`].
    pub struct Resolving<M>(pub M);

    impl<M: Mechanism> Resolving<M> {
        fn resolve(&mut self, mut step: Step) -> Step {
            while let Step::Derive(d) = step {
                step = self.0.derived(&d.run());
            }
            step
        }
    }

    impl<M: Mechanism> Mechanism for Resolving<M> {
        fn start(&mut self, initial: Option<&[u8]>) -> Step {
            let step = self.0.start(initial);
            self.resolve(step)
        }
        fn step(&mut self, response: &[u8]) -> Step {
            let step = self.0.step(response);
            self.resolve(step)
        }
        fn derived(&mut self, key: &DerivedKey) -> Step {
            let step = self.0.derived(key);
            self.resolve(step)
        }
        fn user(&self) -> Option<&str> {
            self.0.user()
        }
    }

    /// One user `tim` with password `tanstaaftanstaaf` (RFC 2195), CRAM-MD5 enabled, and
    /// certificate identity `tim@example.org` mapped to `tim`.
    pub struct Fixture {
        pub scram: ScramSecret,
        pub cram: CramMd5Secret,
        /// Answer for every user name with tim's secret (no stand-in derivations).
        pub any_user: bool,
    }

    impl Fixture {
        pub fn new() -> Fixture {
            Fixture {
                scram: ScramSecret::derive(
                    "tanstaaftanstaaf",
                    b"saltsaltsaltsalt",
                    TEST_ITERATIONS,
                )
                .unwrap(),
                cram: CramMd5Secret::derive("tanstaaftanstaaf"),
                any_user: false,
            }
        }
    }

    impl Fixture {
        /// tim's password with a one-iteration secret (below the bound, built directly),
        /// given for every user name, so that fuzzing PLAIN and LOGIN through the whole
        /// mechanism stays quick: no 4096-iteration derivation per case.
        pub fn cheap() -> Fixture {
            Fixture {
                scram: ScramSecret::derive_with(
                    ScramHash::Sha256,
                    b"tanstaaftanstaaf",
                    b"saltsaltsalt",
                    1,
                ),
                cram: CramMd5Secret::derive("tanstaaftanstaaf"),
                any_user: true,
            }
        }
    }

    impl Credentials for Fixture {
        fn scram(&self, user: &str) -> Option<ScramSecret> {
            (self.any_user || user == "tim").then(|| self.scram.clone())
        }
        fn stand_in(&self, user: &str) -> ScramSecret {
            stand_in_secret(b"fixture", user, self.scram.iterations())
        }
        fn cram_md5(&self, user: &str) -> Option<CramMd5Secret> {
            (user == "tim").then(|| self.cram.clone())
        }
        fn external(&self, cert_identity: &str) -> Option<String> {
            (cert_identity == "tim@example.org").then(|| "tim".to_string())
        }
    }

    pub fn b64(data: &[u8]) -> Vec<u8> {
        base64::encode(data).into_bytes()
    }

    /// Mutates `seed` into a new raw message: flips, inserts, deletes, truncates.
    pub fn mutate(prng: &mut Prng, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..=prng.below(4) {
            match prng.below(6) {
                0 if !out.is_empty() => {
                    let i = prng.below(out.len());
                    out[i] ^= 1 << prng.below(8);
                }
                1 => {
                    let i = prng.below(out.len() + 1);
                    let interesting = [0u8, b',', b'=', b' ', 0xff, b'n', b'r', b'p', b'*'];
                    out.insert(i, interesting[prng.below(interesting.len())]);
                }
                2 if !out.is_empty() => {
                    let i = prng.below(out.len());
                    out.remove(i);
                }
                3 => {
                    let len = prng.below(out.len() + 1);
                    out.truncate(len);
                }
                4 => {
                    let i = prng.below(out.len() + 1);
                    out.insert(i, prng.next_u64() as u8);
                }
                _ => out.extend_from_slice(&[b'a'; 300][..prng.below(300)]),
            }
        }
        out
    }

    /// Feeds mutated exchanges (each message base64-encoded, sometimes raw) to fresh
    /// mechanisms; any panic fails the test. Returns how many exchanges succeeded.
    pub fn fuzz<M: Mechanism>(
        seed: u64,
        cases: usize,
        mut make: impl FnMut() -> M,
        messages: &[&[u8]],
    ) -> usize {
        let mut prng = Prng::from_seed(seed);
        let mut successes = 0;
        for _ in 0..cases {
            let mut mechanism = Resolving(make());
            let mutate_at = prng.below(messages.len() + 1);
            let mut inputs: Vec<Vec<u8>> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    if i == mutate_at {
                        mutate(&mut prng, m)
                    } else {
                        m.to_vec()
                    }
                })
                .map(|m| b64(&m))
                .collect();
            if prng.below(8) == 0 && !inputs.is_empty() {
                let i = prng.below(inputs.len());
                inputs[i] = mutate(&mut prng, &inputs[i]);
            }
            let mut step = if prng.below(2) == 0 || inputs.is_empty() {
                mechanism.start(None)
            } else {
                mechanism.start(Some(&inputs.remove(0)))
            };
            for input in &inputs {
                if !matches!(step, Step::Challenge(_)) {
                    break;
                }
                step = mechanism.step(input);
            }
            if matches!(step, Step::Success { .. }) {
                successes += 1;
            }
        }
        successes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_follow_rfc4954() {
        assert_eq!(AuthError::Cancelled.parts().0, 501);
        assert_eq!(
            AuthError::BadCredentials.parts(),
            (535, "5.7.8", "Authentication credentials invalid")
        );
        assert_eq!(AuthError::TooLong.parts().0, 500);
        assert_eq!(
            AuthError::Temporary.parts(),
            (454, "4.7.0", "Temporary authentication failure")
        );
    }

    #[test]
    fn response_decoding() {
        assert_eq!(decode_response(b"*"), Err(AuthError::Cancelled));
        assert_eq!(decode_response(b""), Ok(Vec::new()));
        assert_eq!(decode_response(b"Zm9v"), Ok(b"foo".to_vec()));
        assert_eq!(decode_response(b"Zm9"), Err(AuthError::Malformed));
        assert_eq!(decode_initial(b"="), Ok(Vec::new()));
        assert_eq!(decode_initial(b""), Err(AuthError::Malformed));
        let longest = vec![b'A'; MAX_RESPONSE_LEN];
        assert_eq!(decode_response(&longest).map(|d| d.len()), Ok(9216));
        let over = vec![b'A'; MAX_RESPONSE_LEN + 4];
        assert_eq!(decode_response(&over), Err(AuthError::TooLong));
        assert_eq!(decode_initial(&over), Err(AuthError::TooLong));
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(
            MechanismName::parse(b"scram-sha-256"),
            Some(MechanismName::ScramSha256)
        );
        assert_eq!(
            MechanismName::parse(b"CRAM-MD5"),
            Some(MechanismName::CramMd5)
        );
        assert_eq!(MechanismName::parse(b"SCRAM-SHA-1"), None);
        let set = MechanismSet::EMPTY
            .with(MechanismName::Plain)
            .with(MechanismName::External);
        assert!(set.contains(MechanismName::Plain));
        assert!(!set.contains(MechanismName::Login));
        let names: Vec<_> = set.iter().map(|m| m.as_str()).collect();
        assert_eq!(names, ["PLAIN", "EXTERNAL"]);
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn secrets_are_bounded_and_hidden_from_debug() {
        assert_eq!(
            ScramSecret::derive("pw", b"saltsalt", MIN_ITERATIONS - 1),
            Err(SecretError::Iterations)
        );
        assert_eq!(
            ScramSecret::derive("pw", b"short", MIN_ITERATIONS),
            Err(SecretError::Salt)
        );
        let secret = ScramSecret::derive("pw", b"saltsalt", MIN_ITERATIONS).unwrap();
        assert!(!format!("{secret:?}").contains(&format!("{:?}", secret.stored_key())));
        assert_eq!(
            ScramSecret::from_parts(b"saltsalt", MIN_ITERATIONS, &[0; 31], &[0; 32]),
            Err(SecretError::KeyLength)
        );
        let rebuilt = ScramSecret::from_parts(
            secret.salt(),
            secret.iterations(),
            secret.stored_key(),
            secret.server_key(),
        )
        .unwrap();
        assert_eq!(rebuilt, secret);
    }

    #[test]
    fn cram_secret_is_hmac_md5_of_the_password() {
        let secret = CramMd5Secret::derive("Jefe");
        assert_eq!(
            secret.hmac(b"what do ya want for nothing?"),
            md5::hmac(b"Jefe", b"what do ya want for nothing?")
        );
    }

    #[test]
    fn every_mechanism_can_be_built() {
        let fixture = testing::Fixture::new();
        let random = [7u8; 16];
        let inputs = ExchangeInputs {
            random: &random,
            timestamp: 697170952,
            hostname: "mx.example.org",
            cert_identity: Some("tim@example.org"),
        };
        let challenge = |name| {
            let mut mechanism = new_mechanism(name, &fixture, &inputs).unwrap();
            mechanism.start(None)
        };
        assert_eq!(challenge(MechanismName::Plain), Step::Challenge(Vec::new()));
        assert_eq!(
            challenge(MechanismName::Login),
            Step::Challenge(b"Username:".to_vec())
        );
        assert_eq!(
            challenge(MechanismName::CramMd5),
            Step::Challenge(b"<506381209866536711.697170952@mx.example.org>".to_vec())
        );
        assert_eq!(
            challenge(MechanismName::ScramSha256),
            Step::Challenge(Vec::new())
        );
        let mut external = new_mechanism(MechanismName::External, &fixture, &inputs).unwrap();
        assert!(matches!(external.start(Some(b"=")), Step::Success { .. }));
        let short = ExchangeInputs {
            random: &random[..8],
            hostname: "bad host",
            ..inputs
        };
        assert!(new_mechanism(MechanismName::ScramSha256, &fixture, &short).is_none());
        assert!(new_mechanism(MechanismName::CramMd5, &fixture, &short).is_none());
        assert!(new_mechanism(MechanismName::Plain, &fixture, &short).is_some());
    }
}
