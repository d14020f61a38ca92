//! Tests of the software token through its `Token` methods and its files as a power cut,
//! a damaged disk or a meddler leave them.

use super::*;
use ring::signature::{UnparsedPublicKey, VerificationAlgorithm};

const RSA_PKCS8: &[u8] = include_bytes!("../testdata/rsa2048.pk8.der");
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
