//! The same token tests against both backends: the software token and a PKCS#11 token
//! in SoftHSM2. Then what only the PKCS#11 backend has: keys `pkcs11-tool` shows as
//! never extractable, per-mechanism fallback logged once, many threads signing at once,
//! and clear errors for a wrong PIN or a missing token.

mod common;

use std::sync::{Arc, Mutex};

use common::TempDir;
use common::softhsm::{PIN, SoftHsm, in_own_softhsm, list_objects, module};
use drawbridge::io::token::{
    KeyKind, Mechanism, ObjectClass, ObjectHandle, Operation, Performer, Pkcs11Token, SoftToken,
    Token, TokenError, hmac_key,
};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, VerificationAlgorithm};

const RSA_PKCS8: &[u8] = include_bytes!("../src/io/token/testdata/rsa2048.pk8.der");

/// The software token, logged in, in a fresh directory.
fn soft_token(dir: &TempDir) -> SoftToken {
    let token =
        SoftToken::init_with_iterations(&dir.path().join("token"), "gateway", None, PIN, 10)
            .unwrap();
    token.login(PIN).unwrap();
    token
}

/// The SoftHSM2 token of this child process, logged in, with a fallback software token.
fn pkcs11_token(hsm: &SoftHsm) -> Pkcs11Token {
    let token = Pkcs11Token::open(&module(), &hsm.label, Some(&hsm.root.join("fallback"))).unwrap();
    token.login(PIN).unwrap();
    token
}

fn verify(
    token: &dyn Token,
    key: ObjectHandle,
    algorithm: &'static dyn VerificationAlgorithm,
    message: &[u8],
    sig: &[u8],
) -> bool {
    let spki = token.public_key(key).unwrap();
    signature::UnparsedPublicKey::new(algorithm, spki.subject_public_key().unwrap())
        .verify(message, sig)
        .is_ok()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The suite: each function takes a fresh, logged-in token of either backend.
mod suite {
    use super::*;

    pub fn generated_keys_sign_and_verify(token: &dyn Token) {
        let message = b"MAIL FROM:<a@example.test>";
        for (kind, mechanism, algorithm, label) in [
            (
                KeyKind::EcP256,
                Mechanism::EcdsaP256Sha256,
                &signature::ECDSA_P256_SHA256_ASN1 as &'static dyn VerificationAlgorithm,
                "ec",
            ),
            (
                KeyKind::Ed25519,
                Mechanism::Ed25519,
                &signature::ED25519,
                "ed",
            ),
        ] {
            let (private, public) = token.generate_key_pair(kind, label).unwrap();
            assert_eq!(token.public_key(private), token.public_key(public));
            assert_eq!(token.public_key(private).unwrap().kind, kind);
            for _ in 0..3 {
                let sig = token.sign(private, mechanism, message).unwrap();
                assert!(verify(token, private, algorithm, message, &sig), "{kind:?}");
                assert!(
                    !verify(token, private, algorithm, b"other", &sig),
                    "{kind:?}"
                );
            }
        }
        let mut found = token.find_objects("ec");
        found.sort();
        assert_eq!(found.len(), 2);
    }

    pub fn imported_rsa_keys_sign_every_scheme(token: &dyn Token) {
        let message = b"RCPT TO:<b@example.test>";
        let (rsa, _) = token.import_private_key("rsa", RSA_PKCS8).unwrap();
        let cases: [(Mechanism, &'static dyn VerificationAlgorithm); 6] = [
            (
                Mechanism::RsaPkcs1Sha256,
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
            (
                Mechanism::RsaPkcs1Sha384,
                &signature::RSA_PKCS1_2048_8192_SHA384,
            ),
            (
                Mechanism::RsaPkcs1Sha512,
                &signature::RSA_PKCS1_2048_8192_SHA512,
            ),
            (
                Mechanism::RsaPssSha256,
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
            (
                Mechanism::RsaPssSha384,
                &signature::RSA_PSS_2048_8192_SHA384,
            ),
            (
                Mechanism::RsaPssSha512,
                &signature::RSA_PSS_2048_8192_SHA512,
            ),
        ];
        for (mechanism, algorithm) in cases {
            let sig = token.sign(rsa, mechanism, message).unwrap();
            assert_eq!(sig.len(), 256, "{mechanism:?}");
            assert!(
                verify(token, rsa, algorithm, message, &sig),
                "{mechanism:?}"
            );
        }
        assert_eq!(
            token.sign(rsa, Mechanism::EcdsaP256Sha256, message),
            Err(TokenError::KeyTypeInconsistent)
        );
        assert_eq!(
            token.sign(rsa, Mechanism::HmacSha256, message),
            Err(TokenError::MechanismInvalid)
        );
        assert_eq!(token.object_info(rsa).unwrap().kind, KeyKind::Rsa);
    }

    pub fn imported_ec_and_ed25519_keys_keep_their_public_keys(token: &dyn Token) {
        let rng = SystemRandom::new();
        let ec =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let ec_pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            ec.as_ref(),
            &rng,
        )
        .unwrap();
        let (private, _) = token.import_private_key("ec-in", ec.as_ref()).unwrap();
        let spki = token.public_key(private).unwrap();
        assert_eq!(
            spki.subject_public_key(),
            Some(ec_pair.public_key().as_ref())
        );
        let sig = token
            .sign(private, Mechanism::EcdsaP256Sha256, b"m")
            .unwrap();
        assert!(verify(
            token,
            private,
            &signature::ECDSA_P256_SHA256_ASN1,
            b"m",
            &sig
        ));

        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed_pair = Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap();
        let (private, _) = token.import_private_key("ed-in", ed.as_ref()).unwrap();
        assert_eq!(
            token.public_key(private).unwrap().subject_public_key(),
            Some(ed_pair.public_key().as_ref())
        );
        // Ed25519 is deterministic: the token's signature is ring's.
        assert_eq!(
            token.sign(private, Mechanism::Ed25519, b"m").unwrap(),
            ed_pair.sign(b"m").as_ref()
        );
        assert_eq!(
            token.import_private_key("bad", b"not a key"),
            Err(TokenError::Crypto)
        );
        assert!(token.find_objects("bad").is_empty());
    }

    pub fn hmac_uses_a_secret_on_the_token(token: &dyn Token) {
        // RFC 4231 test case 6: a 131-octet key (keys shorter than the hash are weaker
        // and some modules refuse them).
        let key = token.import_secret("rfc4231", &[0xaa; 131]).unwrap();
        assert_eq!(
            token
                .hmac_sha256(
                    key,
                    b"Test Using Larger Than Block-Size Key - Hash Key First"
                )
                .unwrap()
                .to_vec(),
            hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
        let config = hmac_key(token, "config-hmac").unwrap();
        assert_eq!(hmac_key(token, "config-hmac").unwrap(), config);
        let other = token.generate_secret("other", 32).unwrap();
        let tag = token.hmac_sha256(config, b"slot record").unwrap();
        assert_eq!(token.hmac_sha256(config, b"slot record").unwrap(), tag);
        assert_ne!(token.hmac_sha256(other, b"slot record").unwrap(), tag);
        assert_ne!(token.hmac_sha256(config, b"slot recorD").unwrap(), tag);
        assert_eq!(
            token.object_info(config).unwrap().class,
            ObjectClass::SecretKey
        );
        assert_eq!(
            token.public_key(config),
            Err(TokenError::KeyTypeInconsistent)
        );
        let (ec, _) = token.generate_key_pair(KeyKind::EcP256, "ec").unwrap();
        assert_eq!(
            token.hmac_sha256(ec, b"m"),
            Err(TokenError::KeyTypeInconsistent)
        );
        assert_eq!(
            token.generate_secret("s", 0),
            Err(TokenError::MechanismInvalid)
        );
    }

    pub fn labels_find_and_destroy(token: &dyn Token) {
        let (private, public) = token.generate_key_pair(KeyKind::EcP256, "tls").unwrap();
        assert_eq!(
            token.generate_key_pair(KeyKind::EcP256, "tls"),
            Err(TokenError::LabelInUse)
        );
        assert_eq!(
            token.import_secret("tls", &[1; 32]),
            Err(TokenError::LabelInUse)
        );
        assert_eq!(
            token.import_secret("", &[1; 32]),
            Err(TokenError::LabelInvalid)
        );
        assert_eq!(
            token.import_secret(&"l".repeat(65), &[1; 32]),
            Err(TokenError::LabelInvalid)
        );
        let info = token.object_info(private).unwrap();
        assert_eq!(
            (info.label.as_str(), info.class, info.kind),
            ("tls", ObjectClass::PrivateKey, KeyKind::EcP256)
        );
        assert_eq!(
            token.object_info(public).unwrap().class,
            ObjectClass::PublicKey
        );
        assert!(token.find_objects("nothing").is_empty());
        token.destroy(private).unwrap();
        assert_eq!(token.find_objects("tls"), vec![public]);
        assert_eq!(
            token.sign(private, Mechanism::EcdsaP256Sha256, b"m"),
            Err(TokenError::NoSuchObject)
        );
        token.destroy(public).unwrap();
        assert!(token.find_objects("tls").is_empty());
        // The label is free again.
        token.generate_key_pair(KeyKind::EcP256, "tls").unwrap();
    }

    pub fn logout_hides_private_objects(token: &dyn Token) {
        let (private, public) = token.generate_key_pair(KeyKind::EcP256, "k").unwrap();
        let secret = token.generate_secret("s", 32).unwrap();
        assert!(token.info().logged_in);
        token.logout();
        assert!(!token.info().logged_in);
        assert_eq!(token.find_objects("k"), vec![public]);
        assert!(token.find_objects("s").is_empty());
        assert_eq!(
            token.sign(private, Mechanism::EcdsaP256Sha256, b"m"),
            Err(TokenError::NotLoggedIn)
        );
        assert_eq!(
            token.hmac_sha256(secret, b"m"),
            Err(TokenError::NotLoggedIn)
        );
        assert_eq!(
            token.generate_key_pair(KeyKind::EcP256, "new"),
            Err(TokenError::NotLoggedIn)
        );
        assert_eq!(token.object_info(private), Err(TokenError::NotLoggedIn));
        assert_eq!(token.public_key(public).unwrap().kind, KeyKind::EcP256);
        assert_eq!(token.login("wrong PIN"), Err(TokenError::PinIncorrect));
        assert!(!token.info().logged_in);
        token.login(PIN).unwrap();
        // PKCS#11 modules may give private objects new handles at each login: find again.
        let found = token.find_objects("k");
        assert_eq!(found.len(), 2);
        let private = found
            .into_iter()
            .find(|h| token.object_info(*h).unwrap().class == ObjectClass::PrivateKey)
            .unwrap();
        assert!(
            token
                .sign(private, Mechanism::EcdsaP256Sha256, b"m")
                .is_ok()
        );
    }

    pub fn digest_and_random(token: &dyn Token) {
        assert_eq!(
            token.digest_sha256(b"abc").to_vec(),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        token.random(&mut a).unwrap();
        token.random(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
        let mut empty = [0u8; 0];
        token.random(&mut empty).unwrap();
    }
}

/// One test per backend for each suite function.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod soft {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dir = TempDir::new(concat!("soft-", stringify!($name)));
                    suite::$name(&soft_token(&dir));
                }
            )*
        }
        mod pkcs11 {
            use super::*;
            $(
                #[test]
                fn $name() {
                    in_own_softhsm(concat!("pkcs11::", stringify!($name)), &[], |hsm| {
                        suite::$name(&pkcs11_token(hsm));
                    });
                }
            )*
        }
    };
}

both_backends!(
    generated_keys_sign_and_verify,
    imported_rsa_keys_sign_every_scheme,
    imported_ec_and_ed25519_keys_keep_their_public_keys,
    hmac_uses_a_secret_on_the_token,
    labels_find_and_destroy,
    logout_hides_private_objects,
    digest_and_random,
);

/// Log lines of this process, to see what the token logged.
struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn record_logs() -> &'static Recorder {
    let recorder: &'static Recorder = Box::leak(Box::new(Recorder(Mutex::new(Vec::new()))));
    log::set_logger(recorder).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    recorder
}

#[test]
fn keys_made_on_softhsm_are_sensitive_and_never_extractable() {
    in_own_softhsm(
        "keys_made_on_softhsm_are_sensitive_and_never_extractable",
        &[],
        |hsm| {
            let token = pkcs11_token(hsm);
            token.generate_key_pair(KeyKind::EcP256, "tls-key").unwrap();
            token.generate_key_pair(KeyKind::Rsa, "rsa-key").unwrap();
            token.generate_secret("hmac-key", 32).unwrap();
            token.import_private_key("imported", RSA_PKCS8).unwrap();
            let objects = list_objects(&hsm.pkcs11_tool(&["--list-objects"]));
            let keys: Vec<_> = objects.iter().filter(|o| o.is_key()).collect();
            assert_eq!(keys.len(), 4, "{objects:#?}");
            for key in keys {
                assert!(key.stays_on_token(), "{key:?}");
                if key.label != "imported" {
                    // Made on the token: it never existed outside it.
                    assert!(
                        key.access.iter().any(|a| a == "never extractable")
                            && key.access.iter().any(|a| a == "always sensitive"),
                        "{key:?}"
                    );
                }
            }
            // No fallback: the software token holds nothing.
            assert_eq!(
                std::fs::read_dir(hsm.root.join("fallback"))
                    .unwrap()
                    .filter(|e| e
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("obj-"))
                    .count(),
                0
            );
        },
    );
}

#[test]
fn missing_mechanisms_fall_back_per_operation_and_are_logged_once() {
    in_own_softhsm(
        "missing_mechanisms_fall_back_per_operation_and_are_logged_once",
        &[
            "CKM_EDDSA",
            "CKM_EC_EDWARDS_KEY_PAIR_GEN",
            "CKM_SHA256_HMAC",
            "CKM_SHA256_RSA_PKCS_PSS",
            "CKM_SHA256",
        ],
        |hsm| {
            let logs = record_logs();
            let token = pkcs11_token(hsm);
            let routes = token.operations();
            let route = |op: Operation| {
                routes
                    .iter()
                    .find(|r| r.operation == op)
                    .unwrap()
                    .performer
                    .clone()
            };
            assert_eq!(
                route(Operation::SignEcdsaP256),
                Performer::Hardware("CKM_ECDSA; SHA-256 in software".to_string())
            );
            assert!(matches!(
                route(Operation::SignEd25519),
                Performer::Software(_)
            ));
            assert!(matches!(
                route(Operation::HmacSha256),
                Performer::Software(_)
            ));
            assert!(matches!(
                route(Operation::DigestSha256),
                Performer::Software(_)
            ));
            assert!(matches!(
                route(Operation::SignRsaPkcs1),
                Performer::Hardware(_)
            ));
            for _ in 0..3 {
                suite::generated_keys_sign_and_verify(&token);
                let (rsa, _) = token.import_private_key("rsa", RSA_PKCS8).unwrap();
                let sig = token.sign(rsa, Mechanism::RsaPssSha256, b"m").unwrap();
                assert!(verify(
                    &token,
                    rsa,
                    &signature::RSA_PSS_2048_8192_SHA256,
                    b"m",
                    &sig
                ));
                let key = token.generate_secret("hmac", 32).unwrap();
                token.hmac_sha256(key, b"m").unwrap();
                token.digest_sha256(b"abc");
                for label in ["ec", "ed", "rsa", "hmac"] {
                    for handle in token.find_objects(label) {
                        token.destroy(handle).unwrap();
                    }
                }
            }
            // Ed25519 and HMAC keys went to the fallback token, P-256 and RSA did not.
            let (ed, _) = token.generate_key_pair(KeyKind::Ed25519, "ed").unwrap();
            let (ec, _) = token.generate_key_pair(KeyKind::EcP256, "ec").unwrap();
            assert!(ed.raw() & drawbridge::io::token::pkcs11::SOFT_HANDLE_BIT != 0);
            assert!(ec.raw() & drawbridge::io::token::pkcs11::SOFT_HANDLE_BIT == 0);
            let lines = logs.0.lock().unwrap().clone();
            for mechanism in [
                "CKM_EC_EDWARDS_KEY_PAIR_GEN",
                "CKM_SHA256_HMAC",
                "CKM_SHA256_RSA_PKCS_PSS",
                "CKM_ECDSA_SHA256",
                "CKM_SHA256:",
            ] {
                let count = lines
                    .iter()
                    .filter(|l| l.contains(&format!("the module lacks {mechanism}")))
                    .count();
                assert_eq!(count, 1, "{mechanism}: {lines:#?}");
            }
        },
    );
}

#[test]
fn many_threads_sign_at_once_on_the_session_pool() {
    in_own_softhsm(
        "many_threads_sign_at_once_on_the_session_pool",
        &[],
        |hsm| {
            let token = Arc::new(pkcs11_token(hsm));
            let (ec, _) = token.generate_key_pair(KeyKind::EcP256, "ec").unwrap();
            let (rsa, _) = token.import_private_key("rsa", RSA_PKCS8).unwrap();
            let threads: Vec<_> = (0..24)
                .map(|i| {
                    let token = token.clone();
                    std::thread::spawn(move || {
                        for j in 0..10 {
                            let message = format!("handshake {i} {j}");
                            let (key, mechanism, algorithm): (
                                ObjectHandle,
                                Mechanism,
                                &'static dyn VerificationAlgorithm,
                            ) = if (i + j) % 2 == 0 {
                                (
                                    ec,
                                    Mechanism::EcdsaP256Sha256,
                                    &signature::ECDSA_P256_SHA256_ASN1,
                                )
                            } else {
                                (
                                    rsa,
                                    Mechanism::RsaPssSha256,
                                    &signature::RSA_PSS_2048_8192_SHA256,
                                )
                            };
                            let sig = token.sign(key, mechanism, message.as_bytes()).unwrap();
                            assert!(verify(&*token, key, algorithm, message.as_bytes(), &sig));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        },
    );
}

#[test]
fn keys_still_sign_after_the_token_forgets_its_login() {
    in_own_softhsm(
        "keys_still_sign_after_the_token_forgets_its_login",
        &[],
        |hsm| {
            let logs = record_logs();
            let token = pkcs11_token(hsm);
            let (ec, _) = token.generate_key_pair(KeyKind::EcP256, "ec").unwrap();
            let (rsa, _) = token.import_private_key("rsa", RSA_PKCS8).unwrap();
            let mac = token.import_secret("mac", &[7u8; 32]).unwrap();
            let sign_all = |when: &str| {
                let sig = token
                    .sign(ec, Mechanism::EcdsaP256Sha256, when.as_bytes())
                    .unwrap_or_else(|e| panic!("{when}: {e:?}"));
                assert!(verify(
                    &token,
                    ec,
                    &signature::ECDSA_P256_SHA256_ASN1,
                    when.as_bytes(),
                    &sig
                ));
                let sig = token
                    .sign(rsa, Mechanism::RsaPssSha256, when.as_bytes())
                    .unwrap_or_else(|e| panic!("{when}: {e:?}"));
                assert!(verify(
                    &token,
                    rsa,
                    &signature::RSA_PSS_2048_8192_SHA256,
                    when.as_bytes(),
                    &sig
                ));
                token
                    .hmac_sha256(mac, when.as_bytes())
                    .unwrap_or_else(|e| panic!("{when}: {e:?}"))
            };
            let mac_before = sign_all("before");

            // A token reset, as the module sees it: the application's login is gone (here
            // another caller in the process logs out, which PKCS#11 makes everyone's), and
            // the module may number private objects afresh when they are found again.
            let other = cryptoki::context::Pkcs11::new(module()).unwrap();
            let _ = other.initialize(cryptoki::context::CInitializeArgs::new(
                cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
            ));
            let slot = other
                .get_slots_with_initialized_token()
                .unwrap()
                .into_iter()
                .find(|s| other.get_token_info(*s).unwrap().label().trim_end() == hsm.label)
                .unwrap();
            let session = other.open_ro_session(slot).unwrap();
            session.logout().unwrap();
            drop(session);

            // The same handles sign again, the login restored by the token.
            let mac_after = sign_all("before");
            assert_eq!(mac_before, mac_after);
            sign_all("after");
            let lines = logs.0.lock().unwrap().clone();
            let relogins = lines
                .iter()
                .filter(|l| l.contains("the login was lost; logging in again"))
                .count();
            assert_eq!(relogins, 1, "{lines:#?}");
            // Handles stay ours: the labels still find the same ones.
            assert_eq!(token.find_objects("mac"), [mac]);
            assert!(token.find_objects("ec").contains(&ec));
        },
    );
}

#[test]
fn wrong_pins_and_missing_tokens_are_clear_errors() {
    in_own_softhsm(
        "wrong_pins_and_missing_tokens_are_clear_errors",
        &[],
        |hsm| {
            let token = Pkcs11Token::open(&module(), &hsm.label, None).unwrap();
            assert_eq!(token.login("not the PIN"), Err(TokenError::PinIncorrect));
            assert!(!token.info().logged_in);
            assert_eq!(
                token.generate_key_pair(KeyKind::EcP256, "k"),
                Err(TokenError::NotLoggedIn)
            );
            token.login(PIN).unwrap();
            // RSA keys are generated on the module (the software token cannot make them).
            let (rsa, _) = token.generate_key_pair(KeyKind::Rsa, "rsa").unwrap();
            let sig = token.sign(rsa, Mechanism::RsaPssSha256, b"m").unwrap();
            assert!(verify(
                &token,
                rsa,
                &signature::RSA_PSS_2048_8192_SHA256,
                b"m",
                &sig
            ));
            let e = Pkcs11Token::open(&module(), "no-such-token", None).unwrap_err();
            let message = e.to_string();
            assert!(
                message.contains("has no token labelled \"no-such-token\"")
                    && message.contains(&hsm.label),
                "{message}"
            );
        },
    );
}
