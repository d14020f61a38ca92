//! The software token's file format: the header and object records, their file names, and
//! the associated data that binds a sealed key to its object.
//!
//! `token.hdr`: magic `DBTOKEN\x01`, flags (locked, has an SO PIN), the count of
//! consecutive wrong PINs, the PBKDF2 iteration count (u32), the user PIN's salt and check
//! value, the SO PIN's (zeros when none), then the serial and the label (each a length
//! octet and bytes). `obj-XXXXXXXXXXXXXXXX.key` (the handle in hexadecimal): magic
//! `DBTKOBJ\x01`, class and key type codes, the label, then the SubjectPublicKeyInfo and
//! the sealed key (each a u16 length and bytes). Integers are big-endian.
//!
//! **Invariant:** no I/O; decoding any bytes never panics and refuses anything but a whole
//! record (no trailing bytes, labels at most [`MAX_LABEL_LEN`], iteration counts 1 to
//! [`MAX_PBKDF2_ITERATIONS`]); what [`Header::encode`] and [`StoredObject::encode`] write
//! decodes to the same record.

use std::num::NonZeroU32;

use super::seal::{CHECK_LEN, MAX_PBKDF2_ITERATIONS, SALT_LEN};
use crate::io::token::{KeyKind, MAX_LABEL_LEN, ObjectClass, TokenError};

/// Largest object file read back: a sealed PKCS#8 document, its public key and the label.
pub const MAX_OBJECT_FILE_LEN: usize = 16 * 1024;
/// Largest header file read back.
pub const MAX_HEADER_FILE_LEN: usize = 512;

/// The header's file name in the token directory.
pub(super) const HEADER_FILE: &str = "token.hdr";
const HEADER_MAGIC: &[u8; 8] = b"DBTOKEN\x01";
const OBJECT_MAGIC: &[u8; 8] = b"DBTKOBJ\x01";
const OBJECT_PREFIX: &str = "obj-";
const OBJECT_SUFFIX: &str = ".key";
const FLAG_LOCKED: u8 = 1;
const FLAG_HAS_SO_PIN: u8 = 2;
const AAD_CONTEXT: &[u8] = b"drawbridge token object v1";

/// The token's header: who it is, how its PINs are checked, whether it is locked.
#[derive(Clone)]
pub(super) struct Header {
    pub(super) label: String,
    pub(super) serial: String,
    pub(super) iterations: NonZeroU32,
    pub(super) failed_pins: u8,
    pub(super) locked: bool,
    pub(super) user_salt: [u8; SALT_LEN],
    pub(super) user_check: [u8; CHECK_LEN],
    /// Salt and check value of the security officer PIN, if one was set.
    pub(super) so: Option<([u8; SALT_LEN], [u8; CHECK_LEN])>,
}

/// One object as its file holds it.
pub(super) struct StoredObject {
    pub(super) label: String,
    pub(super) class: ObjectClass,
    pub(super) kind: KeyKind,
    /// The SubjectPublicKeyInfo for key pair halves; empty for secrets.
    pub(super) spki: Vec<u8>,
    /// Nonce, ciphertext and tag for private and secret keys; empty for public keys.
    pub(super) sealed: Vec<u8>,
}

/// The file name of object `id`.
pub(super) fn object_file_name(id: u64) -> String {
    format!("{OBJECT_PREFIX}{id:016x}{OBJECT_SUFFIX}")
}

/// The object number a file name carries, or `None` for a name that is not an object's.
pub(super) fn object_id(name: &str) -> Option<u64> {
    let hex = name
        .strip_prefix(OBJECT_PREFIX)
        .and_then(|rest| rest.strip_suffix(OBJECT_SUFFIX))?;
    u64::from_str_radix(hex, 16).ok()
}

/// The associated data a private or secret object is sealed with: its number, class, key
/// type and label, so that a file renamed or relabelled does not open.
pub(super) fn aad(id: u64, class: ObjectClass, kind: KeyKind, label: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + 11 + label.len());
    aad.extend_from_slice(AAD_CONTEXT);
    aad.extend_from_slice(&id.to_be_bytes());
    aad.push(class_code(class));
    aad.push(kind_code(kind));
    aad.push(label.len() as u8);
    aad.extend_from_slice(label.as_bytes());
    aad
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
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
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
    pub(super) fn encode(&self) -> Vec<u8> {
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

    pub(super) fn decode(bytes: &[u8]) -> Result<Header, TokenError> {
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
    pub(super) fn encode(&self) -> Vec<u8> {
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

    pub(super) fn decode(bytes: &[u8]) -> Option<StoredObject> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(so: bool) -> Header {
        Header {
            label: "gateway".to_string(),
            serial: "0011223344556677".to_string(),
            iterations: NonZeroU32::new(MAX_PBKDF2_ITERATIONS).unwrap(),
            failed_pins: 3,
            locked: true,
            user_salt: [1; SALT_LEN],
            user_check: [2; CHECK_LEN],
            so: so.then_some(([3; SALT_LEN], [4; CHECK_LEN])),
        }
    }

    #[test]
    fn records_decode_to_what_was_encoded() {
        for so in [false, true] {
            let h = Header::decode(&header(so).encode()).unwrap();
            assert_eq!(
                (h.label.as_str(), h.serial.as_str(), h.iterations.get()),
                ("gateway", "0011223344556677", MAX_PBKDF2_ITERATIONS)
            );
            assert_eq!((h.failed_pins, h.locked), (3, true));
            assert_eq!((h.user_salt, h.user_check), ([1; SALT_LEN], [2; CHECK_LEN]));
            assert_eq!(h.so, so.then_some(([3; SALT_LEN], [4; CHECK_LEN])));
        }
        let object = StoredObject {
            label: "tls-key".to_string(),
            class: ObjectClass::PrivateKey,
            kind: KeyKind::Ed25519,
            spki: vec![5; 44],
            sealed: vec![6; 300],
        };
        let back = StoredObject::decode(&object.encode()).unwrap();
        assert_eq!(
            (back.label, back.class, back.kind, back.spki, back.sealed),
            (
                object.label,
                object.class,
                object.kind,
                object.spki,
                object.sealed
            )
        );
    }

    #[test]
    fn out_of_range_fields_and_trailing_bytes_are_refused() {
        let mut bytes = header(false).encode();
        // The iteration count follows the magic, the flags and the PIN count.
        bytes[10..14].copy_from_slice(&(MAX_PBKDF2_ITERATIONS + 1).to_be_bytes());
        assert!(Header::decode(&bytes).is_err());
        bytes[10..14].copy_from_slice(&0u32.to_be_bytes());
        assert!(Header::decode(&bytes).is_err());
        let mut bytes = header(false).encode();
        bytes.push(0);
        assert!(Header::decode(&bytes).is_err());
        let mut long = header(false);
        long.label = "l".repeat(MAX_LABEL_LEN + 1);
        assert!(Header::decode(&long.encode()).is_err());
        let object = StoredObject {
            label: "k".to_string(),
            class: ObjectClass::SecretKey,
            kind: KeyKind::GenericSecret,
            spki: Vec::new(),
            sealed: vec![7; 60],
        };
        let good = object.encode();
        let mut bad_class = good.clone();
        bad_class[8] = 9;
        assert!(StoredObject::decode(&bad_class).is_none());
        let mut bad_kind = good.clone();
        bad_kind[9] = 0;
        assert!(StoredObject::decode(&bad_kind).is_none());
        let mut trailing = good;
        trailing.push(0);
        assert!(StoredObject::decode(&trailing).is_none());
    }

    #[test]
    fn object_file_names_carry_their_number() {
        for id in [0, 1, 0xfe, u64::MAX] {
            assert_eq!(object_id(&object_file_name(id)), Some(id));
        }
        assert_eq!(object_file_name(0x2a), "obj-000000000000002a.key");
        for name in [
            HEADER_FILE,
            "obj-.key",
            "obj-xyz.key",
            "obj-1.tmp",
            ".obj-1.key.tmp",
        ] {
            assert_eq!(object_id(name), None, "{name}");
        }
    }
}
