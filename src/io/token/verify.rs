//! Signature verification in software: what [`super::Token::verify`] does unless a token
//! does it itself. Verification takes a public key only, so no key bytes are at stake.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

use super::{Mechanism, TokenError};

/// Verifies `signature` over `data` with `public_key` in the form
/// [`super::PublicKeyInfo::subject_public_key`] gives. A signature that does not verify
/// is [`TokenError::Crypto`], as is a mechanism that does not sign.
pub fn software(
    mechanism: Mechanism,
    public_key: &[u8],
    data: &[u8],
    signature: &[u8],
) -> Result<(), TokenError> {
    let algorithm: &'static dyn VerificationAlgorithm = match mechanism {
        Mechanism::Ed25519 => &signature::ED25519,
        Mechanism::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
        Mechanism::RsaPkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Mechanism::RsaPkcs1Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Mechanism::RsaPkcs1Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Mechanism::RsaPssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
        Mechanism::RsaPssSha384 => &signature::RSA_PSS_2048_8192_SHA384,
        Mechanism::RsaPssSha512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return Err(TokenError::MechanismInvalid),
    };
    UnparsedPublicKey::new(algorithm, public_key)
        .verify(data, signature)
        .map_err(|_| TokenError::Crypto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::token::{KeyKind, SoftToken, Token};

    #[test]
    fn verifies_what_the_token_signed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("drawbridge-verify-{}", std::process::id()));
        let token = SoftToken::init_with_iterations(&dir, "t", None, "1234", 1).unwrap();
        token.login("1234").unwrap();
        for (kind, mechanism, label) in [
            (KeyKind::Ed25519, Mechanism::Ed25519, "ed"),
            (KeyKind::EcP256, Mechanism::EcdsaP256Sha256, "ec"),
        ] {
            let (private, public) = token.generate_key_pair(kind, label).unwrap();
            let info = token.public_key(public).unwrap();
            let key = info.subject_public_key().unwrap();
            let sig = token.sign(private, mechanism, b"message").unwrap();
            assert_eq!(token.verify(mechanism, key, b"message", &sig), Ok(()));
            assert_eq!(
                token.verify(mechanism, key, b"messagE", &sig),
                Err(TokenError::Crypto)
            );
            assert_eq!(
                token.verify(Mechanism::HmacSha256, key, b"message", &sig),
                Err(TokenError::MechanismInvalid)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
