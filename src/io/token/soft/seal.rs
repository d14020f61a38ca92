//! Key sealing for the software token: the PIN-derived key, and AES-256-GCM sealing under it.
//!
//! One PBKDF2-HMAC-SHA-256 derivation of the PIN (the [`Master`] key) yields two keys by
//! HMAC under distinct contexts: the check value kept in the header, and the wrapping key
//! that seals private and secret objects. A sealed object is nonce, ciphertext and tag; the
//! caller's associated data binds it to the object it belongs to.
//!
//! **Invariant:** the wrapping key and the plain key material never reach a file; a wrong
//! PIN is refused by the check value (compared in constant time) before anything is
//! unsealed; a nonce is fresh from the system's random source for every seal.

use std::num::NonZeroU32;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hmac, pbkdf2};

use super::super::TokenError;
use crate::proto::sasl::constant_time_eq;

/// PBKDF2 iterations for new tokens: OWASP's 2023 guidance for PBKDF2-HMAC-SHA256 is
/// 600 000; 100 000 keeps a login on the appliance's small CPU near a tenth of a second.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 100_000;
/// The most iterations a header may ask for, so a damaged header cannot stall a login for
/// hours (about ten seconds on the appliance).
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Length of a PBKDF2 salt: NIST SP 800-132 §5.1 asks for at least 128 bits.
pub(super) const SALT_LEN: usize = 16;
/// Length of a PIN check value: one HMAC-SHA-256 output.
pub(super) const CHECK_LEN: usize = 32;
/// Length of an AES-GCM tag.
const TAG_LEN: usize = 16;
const CHECK_CONTEXT: &[u8] = b"drawbridge token: PIN check";
const WRAP_CONTEXT: &[u8] = b"drawbridge token: object wrapping key";

/// The key derived from a PIN and a salt; the check value and the wrapping key come from it.
pub(super) struct Master([u8; 32]);

impl Master {
    /// Derives the key from `pin` (PBKDF2-HMAC-SHA-256, `iterations` rounds).
    pub(super) fn derive(pin: &str, salt: &[u8], iterations: NonZeroU32) -> Master {
        let mut master = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            salt,
            pin.as_bytes(),
            &mut master,
        );
        Master(master)
    }

    /// The check value a header keeps for this PIN.
    pub(super) fn check(&self) -> [u8; CHECK_LEN] {
        self.keyed(CHECK_CONTEXT)
    }

    /// Whether this PIN is the one `check` was made from; constant time.
    pub(super) fn matches(&self, check: &[u8; CHECK_LEN]) -> bool {
        constant_time_eq(&self.check(), check)
    }

    /// The key that seals and unseals the token's private and secret objects.
    pub(super) fn wrap_key(&self) -> Result<LessSafeKey, TokenError> {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.keyed(WRAP_CONTEXT))
            .map_err(|_| TokenError::Crypto)?;
        Ok(LessSafeKey::new(unbound))
    }

    fn keyed(&self, context: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), context).as_ref(),
        );
        out
    }
}

/// The check value of `pin` under `salt`.
pub(super) fn pin_check(pin: &str, salt: &[u8], iterations: NonZeroU32) -> [u8; CHECK_LEN] {
    Master::derive(pin, salt, iterations).check()
}

/// Overwrites key material before it is freed.
/// Best effort: `black_box` keeps the compiler from dropping the stores as dead.
pub(super) fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// Fills `buf` from the system's random source.
pub(super) fn fill(rng: &SystemRandom, buf: &mut [u8]) -> Result<(), TokenError> {
    rng.fill(buf).map_err(|_| TokenError::Crypto)
}

/// Seals `plain` under `key` with a fresh nonce: nonce, ciphertext and tag.
pub(super) fn seal(
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

/// Opens what [`seal`] made with the same key and associated data; anything else is
/// `Crypto`.
pub(super) fn open_sealed(
    key: &LessSafeKey,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, TokenError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn iterations() -> NonZeroU32 {
        NonZeroU32::new(10).unwrap()
    }

    #[test]
    fn only_the_same_pin_and_salt_match_the_check_value() {
        let check = pin_check("4711", b"salt-salt-salt-1", iterations());
        assert!(Master::derive("4711", b"salt-salt-salt-1", iterations()).matches(&check));
        assert!(!Master::derive("4712", b"salt-salt-salt-1", iterations()).matches(&check));
        assert!(!Master::derive("4711", b"salt-salt-salt-2", iterations()).matches(&check));
    }

    #[test]
    fn sealed_bytes_open_only_with_their_key_and_associated_data() {
        let rng = SystemRandom::new();
        let key = Master::derive("4711", b"salt", iterations())
            .wrap_key()
            .unwrap();
        let other = Master::derive("4712", b"salt", iterations())
            .wrap_key()
            .unwrap();
        let sealed = seal(&key, &rng, b"object 1", b"key bytes").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + b"key bytes".len() + TAG_LEN);
        assert!(!sealed.windows(9).any(|w| w == b"key bytes"));
        assert_eq!(
            open_sealed(&key, b"object 1", &sealed).unwrap(),
            b"key bytes"
        );
        assert_eq!(
            open_sealed(&key, b"object 2", &sealed),
            Err(TokenError::Crypto)
        );
        assert_eq!(
            open_sealed(&other, b"object 1", &sealed),
            Err(TokenError::Crypto)
        );
        for cut in 0..sealed.len() {
            assert_eq!(
                open_sealed(&key, b"object 1", &sealed[..cut]),
                Err(TokenError::Crypto),
                "cut at {cut}"
            );
        }
        // Two seals of the same bytes differ: each has its own nonce.
        assert_ne!(seal(&key, &rng, b"object 1", b"key bytes").unwrap(), sealed);
    }
}
