//! The crypto token: a PKCS#11-shaped trait through which every private-key and keyed-hash operation goes.
//!
//! A [`Token`] hands out opaque [`ObjectHandle`]s; private and secret key bytes never leave
//! it (there is no method that returns them). The software token [`soft::SoftToken`] is the
//! default backend and just one implementation; the TLS layer reaches a token only through
//! the rustls adapter in `crate::tls::signing`.
//!
//! Calling order: [`Token::login`] before any operation on private or secret objects
//! (generate, import, sign, HMAC, destroy); [`Token::info`], [`Token::mechanisms`],
//! [`Token::digest_sha256`] and [`Token::random`] work at any time, and
//! [`Token::find_objects`] sees only public objects until login.

pub mod der;
pub mod pin_file;
pub mod soft;
pub mod verify;
pub mod x509;

use std::fmt;

pub use pin_file::{PinFile, PinFileError};
pub use soft::SoftToken;

/// What a token says about itself (PKCS#11 `CK_TOKEN_INFO`, reduced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub logged_in: bool,
}

/// An operation a token can perform (PKCS#11 `CKM_*`, the subset the gateway uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// ECDSA over P-256 with SHA-256; the signature is ASN.1 DER, as TLS wants.
    EcdsaP256Sha256,
    Ed25519,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
    /// RSASSA-PSS with MGF1 over the same hash and a salt as long as the hash (RFC 8446 §4.2.3).
    RsaPssSha256,
    RsaPssSha384,
    RsaPssSha512,
    HmacSha256,
    Sha256,
    Random,
    GenerateEcP256,
    GenerateEd25519,
}

impl Mechanism {
    /// The key type a signing mechanism needs, or `None` for mechanisms that do not sign.
    pub fn signing_key_kind(self) -> Option<KeyKind> {
        match self {
            Mechanism::EcdsaP256Sha256 => Some(KeyKind::EcP256),
            Mechanism::Ed25519 => Some(KeyKind::Ed25519),
            Mechanism::RsaPkcs1Sha256
            | Mechanism::RsaPkcs1Sha384
            | Mechanism::RsaPkcs1Sha512
            | Mechanism::RsaPssSha256
            | Mechanism::RsaPssSha384
            | Mechanism::RsaPssSha512 => Some(KeyKind::Rsa),
            Mechanism::HmacSha256
            | Mechanism::Sha256
            | Mechanism::Random
            | Mechanism::GenerateEcP256
            | Mechanism::GenerateEd25519 => None,
        }
    }
}

/// The type of key an object holds (PKCS#11 `CKK_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    EcP256,
    Ed25519,
    /// RSA of 2048 to 8192 bits; imported from PKCS#8 only, never generated.
    Rsa,
    /// A secret for HMAC-SHA-256.
    GenericSecret,
}

/// The class of an object (PKCS#11 `CKO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectClass {
    PrivateKey,
    PublicKey,
    SecretKey,
}

/// An opaque reference to an object on one token; meaningless on any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectHandle(u64);

impl ObjectHandle {
    /// Wraps a backend's own handle value (a file number, a `CK_OBJECT_HANDLE`).
    pub fn from_raw(raw: u64) -> ObjectHandle {
        ObjectHandle(raw)
    }

    /// The backend's own handle value.
    pub fn raw(self) -> u64 {
        self.0
    }
}

/// The attributes of an object that anyone may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub label: String,
    pub class: ObjectClass,
    pub kind: KeyKind,
}

/// A public key as it goes into certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyInfo {
    pub kind: KeyKind,
    /// The X.509 SubjectPublicKeyInfo, DER encoded.
    pub der: Vec<u8>,
}

impl PublicKeyInfo {
    /// The contents of the SubjectPublicKeyInfo's BIT STRING: the uncompressed point for
    /// P-256, the 32 key bytes for Ed25519, the PKCS#1 `RSAPublicKey` for RSA. This is the
    /// form signature verifiers (ring's `UnparsedPublicKey`) take.
    pub fn subject_public_key(&self) -> Option<&[u8]> {
        der::spki_subject_public_key(&self.der)
    }
}

/// Why a token operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// The operation needs a login first.
    NotLoggedIn,
    PinIncorrect,
    /// Too many consecutive wrong PINs; the token stays locked until it is initialized again.
    PinLocked,
    NoSuchObject,
    /// The token does not offer this mechanism, or not for this operation.
    MechanismInvalid,
    /// The object's key type does not fit the mechanism.
    KeyTypeInconsistent,
    LabelInUse,
    /// A label that is empty or longer than the token allows.
    LabelInvalid,
    /// The token's storage failed or holds something it did not write.
    Storage(String),
    /// The key material was rejected, or a cryptographic primitive failed.
    Crypto,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::NotLoggedIn => f.write_str("token: not logged in"),
            TokenError::PinIncorrect => f.write_str("token: PIN incorrect"),
            TokenError::PinLocked => f.write_str("token: PIN locked after too many wrong PINs"),
            TokenError::NoSuchObject => f.write_str("token: no such object"),
            TokenError::MechanismInvalid => f.write_str("token: mechanism not supported"),
            TokenError::KeyTypeInconsistent => {
                f.write_str("token: key type does not fit the mechanism")
            }
            TokenError::LabelInUse => f.write_str("token: label already in use"),
            TokenError::LabelInvalid => f.write_str("token: label empty or too long"),
            TokenError::Storage(message) => write!(f, "token storage: {message}"),
            TokenError::Crypto => f.write_str("token: cryptographic operation failed"),
        }
    }
}

impl std::error::Error for TokenError {}

/// A PKCS#11-shaped crypto token. Object safe; shared as `Arc<dyn Token>` (rustls needs
/// `Send + Sync` for its signing keys). See the module documentation for the calling order.
pub trait Token: Send + Sync {
    fn info(&self) -> TokenInfo;

    /// The mechanisms this token performs itself.
    fn mechanisms(&self) -> Vec<Mechanism>;

    /// Unlocks private and secret objects with the user PIN.
    fn login(&self, pin: &str) -> Result<(), TokenError>;

    /// Locks private and secret objects again.
    fn logout(&self);

    /// Every object with this label visible in the current login state, in handle order.
    fn find_objects(&self, label: &str) -> Vec<ObjectHandle>;

    /// The label, class and key type of an object.
    fn object_info(&self, handle: ObjectHandle) -> Result<ObjectInfo, TokenError>;

    /// Generates a key pair on the token; returns (private, public), both under `label`.
    fn generate_key_pair(
        &self,
        kind: KeyKind,
        label: &str,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError>;

    /// Imports a private key from PKCS#8 DER (RSA, P-256, Ed25519); returns (private, public).
    fn import_private_key(
        &self,
        label: &str,
        pkcs8_der: &[u8],
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError>;

    /// Generates a random secret of `len` bytes for HMAC-SHA-256.
    fn generate_secret(&self, label: &str, len: usize) -> Result<ObjectHandle, TokenError>;

    /// Imports a secret for HMAC-SHA-256.
    fn import_secret(&self, label: &str, secret: &[u8]) -> Result<ObjectHandle, TokenError>;

    fn hmac_sha256(&self, key: ObjectHandle, data: &[u8]) -> Result<[u8; 32], TokenError>;

    /// The public half of a key pair, from either its private or its public object.
    fn public_key(&self, handle: ObjectHandle) -> Result<PublicKeyInfo, TokenError>;

    /// Signs `data` (the message, not a digest) with a private key.
    fn sign(
        &self,
        handle: ObjectHandle,
        mechanism: Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError>;

    fn digest_sha256(&self, data: &[u8]) -> [u8; 32];

    /// Fills `buf` from the token's random generator.
    fn random(&self, buf: &mut [u8]) -> Result<(), TokenError>;

    fn destroy(&self, handle: ObjectHandle) -> Result<(), TokenError>;

    /// Verifies a signature over `data` (the message, not a digest) with a public key in
    /// the form [`PublicKeyInfo::subject_public_key`] gives; [`TokenError::Crypto`] when
    /// it does not verify. Works without login. Tokens that cannot verify keep this
    /// default, which does it in software (SPEC §7's per-mechanism fallback).
    fn verify(
        &self,
        mechanism: Mechanism,
        public_key: &[u8],
        data: &[u8],
        signature: &[u8],
    ) -> Result<(), TokenError> {
        verify::software(mechanism, public_key, data, signature)
    }
}
