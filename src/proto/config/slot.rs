//! One stored commit: the slot record format (SPEC §8), encoded and checked without I/O.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "DBCF"
//!      4     2  schema version, little-endian (see `wire::SCHEMA_VERSION`; older ones are read)
//!      6     8  sequence number of the commit, little-endian, from 1
//!     14     4  payload length, little-endian, at most MAX_PAYLOAD
//!     18     n  payload: postcard of (CommitMeta, the schema version's wire type)
//!   18+n    32  HMAC-SHA-256 of bytes 0 .. 18+n, keyed on the token
//! ```
//!
//! The HMAC is computed and checked by the caller through the token ([`Seal`]): the key
//! never leaves it. A record is accepted whole or not at all: a wrong magic, an unknown
//! version, a length that does not fit, a record cut short, trailing bytes or a failed
//! HMAC each reject it with a reason the log can show.

use serde::{Deserialize, Serialize};

use super::Config;
use super::wire::{self, OLDEST_SCHEMA_VERSION, SCHEMA_VERSION};

/// The first bytes of every slot record.
pub const MAGIC: &[u8; 4] = b"DBCF";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 18;
/// The HMAC-SHA-256 after the payload.
pub const MAC_LEN: usize = 32;
/// Largest payload accepted: 4 MiB. The largest configuration the schema's bounds allow
/// (about 3 MiB of rules, routes and filters) fits; a length field above it is refused
/// before anything is allocated.
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;
/// Longest commit comment, in octets.
pub const MAX_COMMENT: usize = 256;

/// What is recorded with each commit besides the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMeta {
    /// When the commit was made, unix seconds.
    pub time: u64,
    /// Who made it: a console user, `cli`, `boot`.
    pub user: String,
    pub comment: String,
    /// For `commit confirmed`: unless another commit comes first, this time (unix
    /// seconds) rolls the configuration back to `rollback_to`.
    pub confirm_by: Option<u64>,
    /// The commit a `commit confirmed` returns to.
    pub rollback_to: Option<u64>,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub meta: CommitMeta,
    pub config: Config,
}

/// Computes and checks the HMAC through the token.
pub trait Seal {
    fn mac(&self, data: &[u8]) -> Result<[u8; MAC_LEN], String>;

    /// Whether `mac` is the HMAC of `data`, compared in constant time.
    fn verify(&self, data: &[u8], mac: &[u8]) -> bool {
        match self.mac(data) {
            Ok(expected) => crate::proto::sasl::constant_time_eq(&expected, mac),
            Err(_) => false,
        }
    }
}

/// Why a record was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotError {
    Empty,
    BadMagic,
    UnknownVersion(u16),
    /// The length field is larger than [`MAX_PAYLOAD`].
    Oversized(usize),
    /// The record is cut short: `have` of `need` bytes.
    Torn {
        have: usize,
        need: usize,
    },
    /// Bytes after the HMAC.
    Trailing(usize),
    /// The HMAC does not match: damaged, or written with another key.
    BadMac,
    /// The HMAC matched but the payload does not decode (a bug, or a future format).
    Payload(String),
    /// The token could not compute the HMAC.
    Seal(String),
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotError::Empty => f.write_str("empty"),
            SlotError::BadMagic => f.write_str("not a configuration record (bad magic)"),
            SlotError::UnknownVersion(v) => write!(
                f,
                "schema version {v} is not one this firmware reads ({OLDEST_SCHEMA_VERSION} to {SCHEMA_VERSION})"
            ),
            SlotError::Oversized(n) => {
                write!(f, "length {n} is over the limit of {MAX_PAYLOAD}")
            }
            SlotError::Torn { have, need } => {
                write!(f, "torn write: {have} of {need} bytes")
            }
            SlotError::Trailing(n) => write!(f, "{n} unexpected bytes after the record"),
            SlotError::BadMac => f.write_str("HMAC mismatch: damaged, or signed with another key"),
            SlotError::Payload(e) => write!(f, "payload does not decode: {e}"),
            SlotError::Seal(e) => write!(f, "cannot compute the HMAC: {e}"),
        }
    }
}

/// The record of commit `sequence`.
pub fn encode(
    sequence: u64,
    meta: &CommitMeta,
    config: &Config,
    seal: &dyn Seal,
) -> Result<Vec<u8>, SlotError> {
    let payload = wire::encode_config(meta, config).map_err(|e| SlotError::Payload(e.0))?;
    if payload.len() > MAX_PAYLOAD {
        return Err(SlotError::Oversized(payload.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + MAC_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    // INVARIANT: payload.len() <= MAX_PAYLOAD < u32::MAX (checked above).
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    let mac = seal.mac(&out).map_err(SlotError::Seal)?;
    out.extend_from_slice(&mac);
    Ok(out)
}

/// The sequence number a record with the right magic claims, its HMAC unchecked: for
/// the log's account of a damaged slot, never for choosing one.
pub fn claimed_sequence(bytes: &[u8]) -> Option<u64> {
    let (magic, rest) = bytes.split_first_chunk::<4>()?;
    let (_version, rest) = rest.split_first_chunk::<2>()?;
    let (sequence, _) = rest.split_first_chunk()?;
    (magic == MAGIC).then(|| u64::from_le_bytes(*sequence))
}

/// Checks and decodes one record.
pub fn decode(bytes: &[u8], seal: &dyn Seal) -> Result<Record, SlotError> {
    decode_with(bytes, Some(seal))
}

/// Decodes one record without checking its HMAC (everything else is checked): only to
/// learn which token checks the HMAC.
pub fn decode_unchecked(bytes: &[u8]) -> Result<Record, SlotError> {
    decode_with(bytes, None)
}

fn decode_with(bytes: &[u8], seal: Option<&dyn Seal>) -> Result<Record, SlotError> {
    if bytes.is_empty() {
        return Err(SlotError::Empty);
    }
    let torn = |need: usize| SlotError::Torn {
        have: bytes.len(),
        need,
    };
    let (header, _) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(torn(HEADER_LEN))?;
    let [m0, m1, m2, m3, v0, v1, sequence @ .., l0, l1, l2, l3] = *header;
    if [m0, m1, m2, m3] != *MAGIC {
        return Err(SlotError::BadMagic);
    }
    let version = u16::from_le_bytes([v0, v1]);
    if !(OLDEST_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&version) {
        return Err(SlotError::UnknownVersion(version));
    }
    let sequence = u64::from_le_bytes(sequence);
    let length = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if length > MAX_PAYLOAD {
        return Err(SlotError::Oversized(length));
    }
    let need = HEADER_LEN + length + MAC_LEN;
    if bytes.len() < need {
        return Err(torn(need));
    }
    if bytes.len() > need {
        return Err(SlotError::Trailing(bytes.len() - need));
    }
    let (signed, mac) = bytes.split_at(HEADER_LEN + length);
    if seal.is_some_and(|seal| !seal.verify(signed, mac)) {
        return Err(SlotError::BadMac);
    }
    let payload = signed.get(HEADER_LEN..).unwrap_or_default();
    let (meta, config) =
        wire::decode_config(version, payload).map_err(|e| SlotError::Payload(e.0))?;
    Ok(Record {
        sequence,
        meta,
        config,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::config::host_default;

    /// An HMAC with a key in memory, standing in for the token.
    pub(crate) struct TestSeal(pub [u8; 32]);

    impl Seal for TestSeal {
        fn mac(&self, data: &[u8]) -> Result<[u8; MAC_LEN], String> {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
            let tag = ring::hmac::sign(&key, data);
            let mut out = [0; MAC_LEN];
            out.copy_from_slice(tag.as_ref());
            Ok(out)
        }
    }

    fn meta() -> CommitMeta {
        CommitMeta {
            time: 1_700_000_000,
            user: "admin".into(),
            comment: "first".into(),
            confirm_by: Some(1_700_000_600),
            rollback_to: Some(6),
        }
    }

    #[test]
    fn a_record_round_trips() {
        let seal = TestSeal([7; 32]);
        let bytes = encode(7, &meta(), &host_default(), &seal).unwrap();
        assert_eq!(&bytes[..4], MAGIC);
        assert_eq!(claimed_sequence(&bytes), Some(7));
        assert_eq!(&bytes[4..6], &SCHEMA_VERSION.to_le_bytes());
        let record = decode(&bytes, &seal).unwrap();
        assert_eq!(record.sequence, 7);
        assert_eq!(record.meta, meta());
        assert_eq!(record.config, host_default());
    }

    #[test]
    fn every_cut_every_flipped_bit_and_another_key_are_refused() {
        let seal = TestSeal([7; 32]);
        let bytes = encode(3, &meta(), &host_default(), &seal).unwrap();
        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut], &seal).unwrap_err();
            assert!(
                matches!(
                    err,
                    SlotError::Empty | SlotError::Torn { .. } | SlotError::BadMagic
                ),
                "cut at {cut}: {err}"
            );
        }
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&damaged, &seal).is_err(), "bit {bit}");
        }
        assert_eq!(
            decode(&bytes, &TestSeal([8; 32])).unwrap_err(),
            SlotError::BadMac
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer, &seal).unwrap_err(), SlotError::Trailing(1));
    }

    #[test]
    fn a_huge_length_is_refused_before_anything_is_read() {
        let seal = TestSeal([7; 32]);
        let mut bytes = encode(3, &meta(), &Config::default(), &seal).unwrap();
        bytes[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&bytes, &seal).unwrap_err(),
            SlotError::Oversized(_)
        ));
        bytes[4] = 9;
        assert_eq!(
            decode(&bytes, &seal).unwrap_err(),
            SlotError::UnknownVersion(9)
        );
    }

    /// Random garbage and mutated records never panic, and never decode unless whole.
    #[test]
    fn fuzzed_records_never_panic() {
        let seal = TestSeal([7; 32]);
        let good = encode(11, &meta(), &host_default(), &seal).unwrap();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut bytes = if next() % 4 == 0 {
                (0..next() % 300).map(|_| next() as u8).collect()
            } else {
                good.clone()
            };
            for _ in 0..1 + next() % 4 {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, next() as u8),
                }
            }
            if let Ok(r) = decode(&bytes, &seal) {
                assert_eq!(bytes, good);
                assert_eq!(r.config, host_default());
            }
        }
    }

    /// Decodes a committed record of an earlier schema version (sequence 1, sealed with
    /// the test key) and checks it reads to the configuration `expected` describes, and
    /// that what this firmware writes of it reads back the same.
    fn assert_fixture(bytes: &[u8], version: u16, comment: &str, time: u64, expected: &str) {
        assert_eq!(&bytes[4..6], &version.to_le_bytes());
        let record = decode(bytes, &TestSeal([0x5a; 32])).unwrap();
        assert_eq!(record.sequence, 1);
        assert_eq!(record.meta.comment, comment);
        assert_eq!(record.meta.time, time);
        let expected = crate::proto::config::text::parse(expected).unwrap();
        assert_eq!(record.config, expected);
        let now = encode(2, &record.meta, &record.config, &TestSeal([0x5a; 32])).unwrap();
        assert_eq!(&now[4..6], &SCHEMA_VERSION.to_le_bytes());
        assert_eq!(
            decode(&now, &TestSeal([0x5a; 32])).unwrap().config,
            expected
        );
    }

    /// A record written by schema version 6, with every setting versions 2 to 6 added.
    #[test]
    fn the_version_six_fixture_still_decodes() {
        use crate::proto::config::wire::tests::{
            EVERYTHING, VERSION_FIVE_SETTINGS, VERSION_FOUR_SETTINGS, VERSION_SIX_SETTINGS,
            VERSION_THREE_SETTINGS, VERSION_TWO_SETTINGS,
        };
        assert_fixture(
            include_bytes!("testdata/config-v6.bin"),
            6,
            "the version-6 fixture",
            1_796_342_400,
            &format!(
                "{EVERYTHING}{VERSION_TWO_SETTINGS}{VERSION_THREE_SETTINGS}{VERSION_FOUR_SETTINGS}{VERSION_FIVE_SETTINGS}{VERSION_SIX_SETTINGS}"
            ),
        );
    }

    /// A record written by schema version 5, with every setting versions 2 to 5 added.
    #[test]
    fn the_version_five_fixture_still_decodes() {
        use crate::proto::config::wire::tests::{
            EVERYTHING, VERSION_FIVE_SETTINGS, VERSION_FOUR_SETTINGS, VERSION_THREE_SETTINGS,
            VERSION_TWO_SETTINGS,
        };
        assert_fixture(
            include_bytes!("testdata/config-v5.bin"),
            5,
            "the version-5 fixture",
            1_796_342_400,
            &format!(
                "{EVERYTHING}{VERSION_TWO_SETTINGS}{VERSION_THREE_SETTINGS}{VERSION_FOUR_SETTINGS}{VERSION_FIVE_SETTINGS}"
            ),
        );
    }

    /// A record written by schema version 4, with every setting versions 2 to 4 added.
    #[test]
    fn the_version_four_fixture_still_decodes() {
        use crate::proto::config::wire::tests::{
            EVERYTHING, VERSION_FOUR_SETTINGS, VERSION_THREE_SETTINGS, VERSION_TWO_SETTINGS,
        };
        assert_fixture(
            include_bytes!("testdata/config-v4.bin"),
            4,
            "the version-4 fixture",
            1_796_342_400,
            &format!(
                "{EVERYTHING}{VERSION_TWO_SETTINGS}{VERSION_THREE_SETTINGS}{VERSION_FOUR_SETTINGS}"
            ),
        );
    }

    /// A record written by schema version 3, with every setting versions 2 and 3 added:
    /// every later firmware must read it to the same model.
    #[test]
    fn the_version_three_fixture_still_decodes() {
        use crate::proto::config::wire::tests::{
            EVERYTHING, VERSION_THREE_SETTINGS, VERSION_TWO_SETTINGS,
        };
        assert_fixture(
            include_bytes!("testdata/config-v3.bin"),
            3,
            "the version-3 fixture",
            1_796_256_000,
            &format!("{EVERYTHING}{VERSION_TWO_SETTINGS}{VERSION_THREE_SETTINGS}"),
        );
    }

    /// A record written by schema version 2, with every setting that version added.
    #[test]
    fn the_version_two_fixture_still_decodes() {
        use crate::proto::config::wire::tests::{EVERYTHING, VERSION_TWO_SETTINGS};
        assert_fixture(
            include_bytes!("testdata/config-v2.bin"),
            2,
            "the version-2 fixture",
            1_796_169_600,
            &format!("{EVERYTHING}{VERSION_TWO_SETTINGS}"),
        );
    }

    /// A record written by the first release of the stored form.
    #[test]
    fn the_version_one_fixture_still_decodes() {
        // A stored record holds every value, not only those that differed from the
        // factory values of its day: defaults changed since (max-connections-per-ip was
        // 20, max-line-length 1000) do not change what it says.
        assert_fixture(
            include_bytes!("testdata/config-v1.bin"),
            1,
            "the version-1 fixture",
            1_796_083_200,
            &format!(
                "{}set service inbound max-connections-per-ip 20\n\
                 set service outbound max-connections-per-ip 20\n\
                 set service inbound max-line-length 1000\n\
                 set service outbound max-line-length 1000\n",
                crate::proto::config::wire::tests::EVERYTHING
            ),
        );
    }
}
