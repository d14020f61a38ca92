//! The envelope of a queued message and its on-disk form (`<id>.env`): header, checksum, postcard.
//!
//! File layout, all integers little-endian:
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 5    | magic `DBENV`                           |
//! | 5      | 2    | format version ([`ENVELOPE_VERSION`])   |
//! | 7      | 4    | payload length                          |
//! | 11     | 4    | CRC-32 (IEEE 802.3) of the payload      |
//! | 15     | n    | payload: the postcard-encoded envelope  |
//!
//! postcard carries no schema: the fields of these types are never reordered, removed or
//! retyped. A change is a new set of types under a new version number, and the decoder keeps
//! reading the old ones.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::QueueId;

/// Format version of `<id>.env`.
///
/// Changelog:
/// * 1: first version. `RcptStatus::Returned` and `RcptStatus::Delayed` were appended
///   later; postcard numbers enum variants in order, so earlier files still read.
pub const ENVELOPE_VERSION: u16 = 1;

/// The first five octets of every envelope file.
pub const ENVELOPE_MAGIC: [u8; 5] = *b"DBENV";

/// Size of the fixed header before the payload: magic, version, length, checksum.
pub const ENVELOPE_HEADER_LEN: usize = 5 + 2 + 4 + 4;

/// Largest payload we write or read: 4 MiB, which is also the worst-case transient memory of
/// one envelope load. Sizing: RFC 5321 §4.5.3.1.8 asks for at least 100 recipients; a
/// recipient costs at most about 1.3 KiB here (address 256 octets per §4.5.3.1.3, ORCPT up to
/// 500, one stored reply line of 512 per §4.5.3.1.5), so the bound holds some 3000 recipients
/// with room to spare, and a header that claims more is corrupt.
pub const ENVELOPE_MAX_PAYLOAD: u32 = 4 * 1024 * 1024;

/// Largest envelope file: header plus [`ENVELOPE_MAX_PAYLOAD`].
pub const ENVELOPE_MAX_FILE: u64 = ENVELOPE_HEADER_LEN as u64 + ENVELOPE_MAX_PAYLOAD as u64;

/// Which service a message came in through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    Inbound,
    Outbound,
    /// Made by the gateway itself (a bounce, a console test message).
    Local,
}

/// RFC 3461 §4.3 `RET=`: how much of the message a DSN carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    Full,
    Hdrs,
}

/// Where delivery to one recipient stands. Replies are kept as the next hop sent them, for
/// logs and DSNs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RcptStatus {
    Pending,
    /// Failed for now; to be tried again.
    Deferred {
        reply: String,
    },
    Delivered {
        reply: String,
    },
    /// Failed for good; the sender is still to be told.
    Failed {
        reply: String,
    },
    /// Failed for good, and the sender has been told (or asked not to be).
    Returned {
        reply: String,
    },
    /// Failed for now, and the sender has had a delay notice.
    Delayed {
        reply: String,
    },
}

impl RcptStatus {
    /// Still to be delivered: pending, deferred or delayed.
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            RcptStatus::Pending | RcptStatus::Deferred { .. } | RcptStatus::Delayed { .. }
        )
    }
}

/// One recipient and its delivery status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 §4.2 `ORCPT=`, as given.
    pub orcpt: Option<String>,
    /// RFC 3461 §4.1 `NOTIFY=` as bit flags (the SMTP layer defines the bits).
    pub notify: u8,
    pub status: RcptStatus,
}

/// Everything known about a queued message except its content. Field order is part of the
/// file format (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: QueueId,
    /// Arrival time, unix seconds.
    pub arrived: u64,
    pub origin: Origin,
    pub client_ip: Option<IpAddr>,
    pub client_helo: String,
    /// The reverse path; empty for the null sender.
    pub sender: String,
    /// Octets in `<id>.msg`.
    pub size: u64,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// RFC 3461 §4.4 `ENVID=`.
    pub envid: Option<String>,
    pub recipients: Vec<Recipient>,
    pub attempts: u32,
    /// Unix seconds of the next delivery attempt.
    pub next_attempt: u64,
    pub held: bool,
}

/// Why bytes are not an envelope file. Each is a torn or corrupted file, or one from a
/// future version; none is a bug of ours except [`EnvelopeError::Encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer bytes than the header, or than the header's payload length.
    Truncated,
    /// More bytes than the header's payload length.
    TrailingBytes,
    BadMagic,
    UnsupportedVersion(u16),
    /// The header claims a payload over [`ENVELOPE_MAX_PAYLOAD`].
    TooLarge(u32),
    BadChecksum,
    /// The checksum holds but the payload is not a postcard `Envelope`.
    Malformed,
    /// Encoding failed, or the encoding is over [`ENVELOPE_MAX_PAYLOAD`].
    Encode,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Truncated => f.write_str("envelope truncated"),
            EnvelopeError::TrailingBytes => f.write_str("envelope has trailing bytes"),
            EnvelopeError::BadMagic => f.write_str("not an envelope file (bad magic)"),
            EnvelopeError::UnsupportedVersion(v) => {
                write!(f, "envelope format version {v} unknown")
            }
            EnvelopeError::TooLarge(n) => write!(f, "envelope payload length {n} over the limit"),
            EnvelopeError::BadChecksum => f.write_str("envelope checksum mismatch"),
            EnvelopeError::Malformed => f.write_str("envelope payload malformed"),
            EnvelopeError::Encode => f.write_str("envelope cannot be encoded"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl From<EnvelopeError> for std::io::Error {
    fn from(e: EnvelopeError) -> std::io::Error {
        let kind = match e {
            EnvelopeError::Encode => std::io::ErrorKind::InvalidInput,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, e)
    }
}

/// Room for a typical envelope file (header, sender, a few recipients) in one
/// allocation; a larger one grows.
const ENVELOPE_TYPICAL_LEN: usize = 256;

impl Envelope {
    /// The whole envelope file: header then payload.
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut file = Vec::with_capacity(ENVELOPE_TYPICAL_LEN);
        // The header is written once the payload is known.
        file.extend_from_slice(&[0; ENVELOPE_HEADER_LEN]);
        let mut file = postcard::to_extend(self, file).map_err(|_| EnvelopeError::Encode)?;
        let Some((header, payload)) = file.split_first_chunk_mut::<ENVELOPE_HEADER_LEN>() else {
            return Err(EnvelopeError::Encode);
        };
        let payload_len = u32::try_from(payload.len())
            .ok()
            .filter(|&n| n <= ENVELOPE_MAX_PAYLOAD)
            .ok_or(EnvelopeError::Encode)?;
        let [m0, m1, m2, m3, m4] = ENVELOPE_MAGIC;
        let [v0, v1] = ENVELOPE_VERSION.to_le_bytes();
        let [l0, l1, l2, l3] = payload_len.to_le_bytes();
        let [c0, c1, c2, c3] = crc32(payload).to_le_bytes();
        *header = [m0, m1, m2, m3, m4, v0, v1, l0, l1, l2, l3, c0, c1, c2, c3];
        Ok(file)
    }

    /// Reads a whole envelope file. Never panics, whatever the bytes.
    pub fn decode(file: &[u8]) -> Result<Envelope, EnvelopeError> {
        let Some((header, payload)) = file.split_first_chunk::<ENVELOPE_HEADER_LEN>() else {
            // A short file with the wrong first octets is not ours at all.
            if file.iter().zip(&ENVELOPE_MAGIC).any(|(a, b)| a != b) {
                return Err(EnvelopeError::BadMagic);
            }
            return Err(EnvelopeError::Truncated);
        };
        let [magic @ .., v0, v1, l0, l1, l2, l3, c0, c1, c2, c3] = *header;
        if magic != ENVELOPE_MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let version = u16::from_le_bytes([v0, v1]);
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        if len > ENVELOPE_MAX_PAYLOAD {
            return Err(EnvelopeError::TooLarge(len));
        }
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        // len <= ENVELOPE_MAX_PAYLOAD, so it fits usize on every target we build for.
        let len = len as usize;
        match payload.len().cmp(&len) {
            std::cmp::Ordering::Less => return Err(EnvelopeError::Truncated),
            std::cmp::Ordering::Greater => return Err(EnvelopeError::TrailingBytes),
            std::cmp::Ordering::Equal => {}
        }
        if crc32(payload) != crc {
            return Err(EnvelopeError::BadChecksum);
        }
        match postcard::take_from_bytes::<Envelope>(payload) {
            Ok((envelope, [])) => Ok(envelope),
            _ => Err(EnvelopeError::Malformed),
        }
    }
}

/// CRC-32 as in IEEE 802.3 and zlib (reflected polynomial 0xEDB88320), eight octets at
/// a time ("slicing-by-8"): every journal record is checked with it, so it runs over
/// every octet of every message.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let t = &CRC32_TABLES;
    // INVARIANT: `table` is 0 to 7 below, and a value masked to 8 bits is below 256.
    let at = |table: usize, index: u32| t[table][(index & 0xFF) as usize];
    let mut crc = !0u32;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        // INVARIANT: chunks_exact(8) gives eight octets, so both halves have four.
        let lo = u32::from_le_bytes([word[0], word[1], word[2], word[3]]) ^ crc;
        let hi = u32::from_le_bytes([word[4], word[5], word[6], word[7]]);
        crc = at(7, lo)
            ^ at(6, lo >> 8)
            ^ at(5, lo >> 16)
            ^ at(4, lo >> 24)
            ^ at(3, hi)
            ^ at(2, hi >> 8)
            ^ at(1, hi >> 16)
            ^ at(0, hi >> 24);
    }
    for &b in words.remainder() {
        crc = at(0, crc ^ u32::from(b)) ^ (crc >> 8);
    }
    !crc
}

/// The tables of [`crc32`]: table 0 is the byte-at-a-time table, table k the CRC of an
/// octet followed by k zero octets. 8 KiB of read-only data.
static CRC32_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        tables[0][i] = c;
        i += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut i = 0;
        while i < 256 {
            let previous = tables[t - 1][i];
            tables[t][i] = (previous >> 8) ^ tables[0][(previous & 0xFF) as usize];
            i += 1;
        }
        t += 1;
    }
    tables
};

/// A message found in the journal at start-up, not yet done.
pub struct Recovered {
    pub env: Envelope,
    pub content: Vec<u8>,
    pub segment: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(id: QueueId, size: u64) -> Envelope {
        Envelope {
            id,
            arrived: 1_700_000_000,
            origin: Origin::Inbound,
            client_ip: Some("192.0.2.7".parse().unwrap()),
            client_helo: "mx.example.org".into(),
            sender: "alice@example.org".into(),
            size,
            eight_bit: true,
            smtputf8: false,
            ret: Some(Ret::Hdrs),
            envid: Some("QQ314159".into()),
            recipients: vec![
                Recipient {
                    address: "bob@example.com".into(),
                    orcpt: Some("rfc822;bob@example.com".into()),
                    notify: 0b101,
                    status: RcptStatus::Pending,
                },
                Recipient {
                    address: "carol@example.com".into(),
                    orcpt: None,
                    notify: 0,
                    status: RcptStatus::Deferred {
                        reply: "451 4.3.0 try later".into(),
                    },
                },
            ],
            attempts: 3,
            next_attempt: 1_700_000_900,
            held: false,
        }
    }

    fn id() -> QueueId {
        "0123456789ABCDEF".parse().unwrap()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        // Every length around the eight-octet step agrees with the octet-at-a-time form.
        let octetwise = |bytes: &[u8]| {
            let mut crc = !0u32;
            for &b in bytes {
                crc = CRC32_TABLES[0][((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
            }
            !crc
        };
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(crc32(&data[..len]), octetwise(&data[..len]), "length {len}");
        }
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn round_trip() {
        let env = sample(id(), 1234);
        let file = env.encode().unwrap();
        assert_eq!(&file[..5], b"DBENV");
        assert_eq!(&file[5..7], &[1, 0]);
        let len = u32::from_le_bytes(file[7..11].try_into().unwrap()) as usize;
        assert_eq!(len, file.len() - ENVELOPE_HEADER_LEN);
        assert_eq!(Envelope::decode(&file), Ok(env));

        let mut bare = sample(id(), 0);
        bare.client_ip = Some("2001:db8::1".parse().unwrap());
        bare.recipients.clear();
        bare.ret = None;
        bare.envid = None;
        bare.sender.clear();
        bare.origin = Origin::Local;
        bare.held = true;
        assert_eq!(Envelope::decode(&bare.encode().unwrap()), Ok(bare));
    }

    #[test]
    fn every_truncation_is_rejected() {
        let file = sample(id(), 1).encode().unwrap();
        for cut in 0..file.len() {
            let got = Envelope::decode(&file[..cut]);
            assert_eq!(got, Err(EnvelopeError::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn every_corrupted_byte_is_rejected() {
        let file = sample(id(), 1).encode().unwrap();
        for at in 0..file.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = file.clone();
                bad[at] ^= flip;
                assert!(Envelope::decode(&bad).is_err(), "byte {at} ^ {flip:#x}");
            }
        }
    }

    #[test]
    fn corrupt_checksum() {
        let mut file = sample(id(), 1).encode().unwrap();
        file[11] ^= 1;
        assert_eq!(Envelope::decode(&file), Err(EnvelopeError::BadChecksum));
        let mut file = sample(id(), 1).encode().unwrap();
        let last = file.len() - 1;
        file[last] ^= 0x40;
        assert_eq!(Envelope::decode(&file), Err(EnvelopeError::BadChecksum));
    }

    #[test]
    fn wrong_magic() {
        let mut file = sample(id(), 1).encode().unwrap();
        file[0] = b'X';
        assert_eq!(Envelope::decode(&file), Err(EnvelopeError::BadMagic));
        assert_eq!(Envelope::decode(b"From "), Err(EnvelopeError::BadMagic));
        assert_eq!(Envelope::decode(b"DBX"), Err(EnvelopeError::BadMagic));
        assert_eq!(Envelope::decode(b"DBE"), Err(EnvelopeError::Truncated));
    }

    #[test]
    fn wrong_version() {
        let mut file = sample(id(), 1).encode().unwrap();
        file[5..7].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            Envelope::decode(&file),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
        file[5..7].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(
            Envelope::decode(&file),
            Err(EnvelopeError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn oversize_length_field() {
        let mut file = sample(id(), 1).encode().unwrap();
        file[7..11].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Envelope::decode(&file),
            Err(EnvelopeError::TooLarge(u32::MAX))
        );
        file[7..11].copy_from_slice(&(ENVELOPE_MAX_PAYLOAD + 1).to_le_bytes());
        assert_eq!(
            Envelope::decode(&file),
            Err(EnvelopeError::TooLarge(ENVELOPE_MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn trailing_bytes() {
        let mut file = sample(id(), 1).encode().unwrap();
        file.push(0);
        assert_eq!(Envelope::decode(&file), Err(EnvelopeError::TrailingBytes));
    }

    #[test]
    fn good_checksum_over_garbage_is_malformed() {
        // A payload that checks out but is not an Envelope: a bare postcard string.
        let payload = [3, b'a', b'b', b'c'];
        let mut file = Vec::new();
        file.extend_from_slice(b"DBENV");
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        file.extend_from_slice(&crc32(&payload).to_le_bytes());
        file.extend_from_slice(&payload);
        assert_eq!(Envelope::decode(&file), Err(EnvelopeError::Malformed));

        // A valid envelope followed by extra bytes inside the checked payload.
        let mut file = sample(id(), 1).encode().unwrap();
        file.push(0);
        let len = (file.len() - ENVELOPE_HEADER_LEN) as u32;
        file[7..11].copy_from_slice(&len.to_le_bytes());
        let crc = crc32(&file[ENVELOPE_HEADER_LEN..]);
        file[11..15].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Envelope::decode(&file), Err(EnvelopeError::Malformed));
    }

    #[test]
    fn a_forged_long_id_is_malformed() {
        // 17 characters do not fit the 16-octet id: the decoder refuses, it does not panic.
        let mut env = sample(id(), 1);
        env.client_helo = "x".into();
        let file = env.encode().unwrap();
        let mut payload = file[ENVELOPE_HEADER_LEN..].to_vec();
        assert_eq!(payload[0], 16);
        payload[0] = 17;
        payload.insert(1, b'A');
        let mut forged = file[..ENVELOPE_HEADER_LEN].to_vec();
        forged[7..11].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        forged[11..15].copy_from_slice(&crc32(&payload).to_le_bytes());
        forged.extend_from_slice(&payload);
        assert_eq!(Envelope::decode(&forged), Err(EnvelopeError::Malformed));
    }
}
