//! The local user database: user names with their SCRAM-SHA-256 secret, an optional
//! CRAM-MD5 secret and the mechanisms enabled, and its stored binary form.
//!
//! No password is kept: PLAIN, LOGIN and SCRAM use the SCRAM secret (SPEC §6); CRAM-MD5
//! needs a password-equivalent secret, so it is stored only for users the administrator
//! enabled it for. Listing shows names and mechanisms, never secrets.
//!
//! Stored form ([`UserDb::encode`]), integers little-endian:
//!
//! | offset | size | field                                |
//! |--------|------|--------------------------------------|
//! | 0      | 5    | magic `DBUSR`                        |
//! | 5      | 2    | format version ([`USER_DB_VERSION`]) |
//! | 7      | rest | postcard of [`UserDbV1`]             |
//!
//! This module does no file access: the caller writes and reads the blob.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::{
    CramMd5Secret, Credentials, MAX_FIELD_LEN, MIN_ITERATIONS, MechanismName, MechanismSet,
    ScramSecret, SecretError, stand_in_secret,
};

/// Most users in one database: 4096. Worst-case memory: about 4096 × 450 octets ≈ 1.8 MiB
/// (name 255, salt 64, keys 64, CRAM-MD5 pads 32, overhead).
pub const MAX_USERS: usize = 4096;

/// Largest stored blob we read: [`MAX_USERS`] records of at most 512 octets each, plus the
/// header. Anything larger is refused before decoding.
pub const MAX_BLOB_LEN: usize = MAX_USERS * 512 + 16;

const MAGIC: [u8; 5] = *b"DBUSR";
const HEADER_LEN: usize = MAGIC.len() + 2;

/// Format version of the stored user database.
///
/// Changelog:
/// * 1: first version ([`UserDbV1`]).
pub const USER_DB_VERSION: u16 = 1;

/// Mechanisms every user has: those the SCRAM secret serves, and EXTERNAL (when a client
/// certificate's identity is the user's name).
fn base_mechanisms() -> MechanismSet {
    MechanismSet::EMPTY
        .with(MechanismName::Plain)
        .with(MechanismName::Login)
        .with(MechanismName::ScramSha256)
        .with(MechanismName::External)
}

/// A user name: 1 to [`MAX_FIELD_LEN`] octets of UTF-8 without control characters and
/// without `*` (kept for patterns in [`UserDb::list`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(String);

impl UserName {
    pub fn parse(name: &str) -> Option<UserName> {
        let valid = !name.is_empty()
            && name.len() <= MAX_FIELD_LEN
            && !name.chars().any(|c| c.is_control() || c == '*');
        valid.then(|| UserName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a database operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserDbError {
    /// Not a valid [`UserName`].
    BadName,
    /// `add` of a user that exists.
    Exists,
    /// `set_password` or `delete` of a user that does not exist.
    NotFound,
    /// [`MAX_USERS`] reached.
    Full,
    /// Iterations or salt out of bounds.
    Secret(SecretError),
    /// A stored blob that is not ours, damaged, too large, or holds invalid records.
    Corrupt,
    /// A stored blob of a version this firmware does not read.
    Version(u16),
}

/// One user as [`UserDb::list`] shows it: no secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserListing {
    pub name: String,
    pub mechanisms: MechanismSet,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct UserRecord {
    scram: ScramSecret,
    cram_md5: Option<CramMd5Secret>,
    mechanisms: MechanismSet,
}

/// The local user database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserDb {
    users: BTreeMap<UserName, UserRecord>,
}

/// Version 1 of the stored database. Never reorder or change fields: add a new version.
#[derive(Serialize, Deserialize)]
pub struct UserDbV1 {
    pub users: Vec<UserV1>,
}

/// One user in [`UserDbV1`].
#[derive(Serialize, Deserialize)]
pub struct UserV1 {
    pub name: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    /// CRAM-MD5 inner and outer pad states, when enabled.
    pub cram_md5: Option<([u8; 16], [u8; 16])>,
    /// Bit `1 << MechanismName as u8` for each enabled mechanism.
    pub mechanisms: u8,
}

/// Matches `name` against `pattern`, where `*` stands for any run of characters.
/// O(name × pattern) at worst, both bounded by the caller.
fn matches_pattern(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it is currently stretched to.
    let mut backtrack: Option<(usize, usize)> = None;
    while let Some(&c) = name.get(n) {
        let at = pattern.get(p).copied();
        if at == Some('*') {
            backtrack = Some((p, n));
            p += 1;
        } else if at == Some(c) {
            p += 1;
            n += 1;
        } else if let Some((star, stretched)) = backtrack {
            p = star + 1;
            n = stretched + 1;
            backtrack = Some((star, stretched + 1));
        } else {
            return false;
        }
    }
    pattern.iter().skip(p).all(|&c| c == '*')
}

impl UserDb {
    pub fn new() -> UserDb {
        UserDb::default()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds a user. `salt` is fresh random octets from the caller; `iterations` at least
    /// [`super::MIN_ITERATIONS`]. With `enable_cram`, the CRAM-MD5 secret is kept too.
    pub fn add(
        &mut self,
        user: &str,
        password: &str,
        iterations: u32,
        enable_cram: bool,
        salt: &[u8],
    ) -> Result<(), UserDbError> {
        let name = UserName::parse(user).ok_or(UserDbError::BadName)?;
        if self.users.contains_key(&name) {
            return Err(UserDbError::Exists);
        }
        if self.users.len() >= MAX_USERS {
            return Err(UserDbError::Full);
        }
        let scram = ScramSecret::derive(password, salt, iterations).map_err(UserDbError::Secret)?;
        let (cram_md5, mechanisms) = if enable_cram {
            (
                Some(CramMd5Secret::derive(password)),
                base_mechanisms().with(MechanismName::CramMd5),
            )
        } else {
            (None, base_mechanisms())
        };
        self.users.insert(
            name,
            UserRecord {
                scram,
                cram_md5,
                mechanisms,
            },
        );
        Ok(())
    }

    /// Replaces a user's password; CRAM-MD5 stays enabled or disabled as it was.
    pub fn set_password(
        &mut self,
        user: &str,
        password: &str,
        iterations: u32,
        salt: &[u8],
    ) -> Result<(), UserDbError> {
        let name = UserName::parse(user).ok_or(UserDbError::BadName)?;
        let record = self.users.get_mut(&name).ok_or(UserDbError::NotFound)?;
        record.scram =
            ScramSecret::derive(password, salt, iterations).map_err(UserDbError::Secret)?;
        if record.cram_md5.is_some() {
            record.cram_md5 = Some(CramMd5Secret::derive(password));
        }
        Ok(())
    }

    pub fn delete(&mut self, user: &str) -> Result<(), UserDbError> {
        let name = UserName::parse(user).ok_or(UserDbError::BadName)?;
        self.users
            .remove(&name)
            .map(|_| ())
            .ok_or(UserDbError::NotFound)
    }

    /// Users whose names match `pattern` (`*` matches any run), in name order.
    pub fn list(&self, pattern: &str) -> Vec<UserListing> {
        self.users
            .iter()
            .filter(|(name, _)| matches_pattern(pattern, name.as_str()))
            .map(|(name, record)| UserListing {
                name: name.as_str().to_string(),
                mechanisms: record.mechanisms,
            })
            .collect()
    }

    /// The stored form: header then postcard of [`UserDbV1`].
    pub fn encode(&self) -> Vec<u8> {
        let wire = UserDbV1 {
            users: self
                .users
                .iter()
                .map(|(name, record)| UserV1 {
                    name: name.as_str().to_string(),
                    salt: record.scram.salt().to_vec(),
                    iterations: record.scram.iterations(),
                    stored_key: record.scram.stored_key().to_vec(),
                    server_key: record.scram.server_key().to_vec(),
                    cram_md5: record
                        .cram_md5
                        .as_ref()
                        .map(|c| (c.inner_pad_state, c.outer_pad_state)),
                    mechanisms: record.mechanisms.0,
                })
                .collect(),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + self.users.len() * 160);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&USER_DB_VERSION.to_le_bytes());
        match postcard::to_extend(&wire, out) {
            Ok(out) => out,
            // Serializing plain vectors, strings and integers into a Vec cannot fail.
            Err(_) => unreachable!("postcard into a Vec does not fail"),
        }
    }

    /// Reads the stored form, checking every record as `add` would.
    pub fn decode(blob: &[u8]) -> Result<UserDb, UserDbError> {
        if blob.len() > MAX_BLOB_LEN {
            return Err(UserDbError::Corrupt);
        }
        let (magic, rest) = blob.split_first_chunk().ok_or(UserDbError::Corrupt)?;
        let (version, payload) = rest.split_first_chunk().ok_or(UserDbError::Corrupt)?;
        if *magic != MAGIC {
            return Err(UserDbError::Corrupt);
        }
        let version = u16::from_le_bytes(*version);
        if version != USER_DB_VERSION {
            return Err(UserDbError::Version(version));
        }
        let (wire, rest) =
            postcard::take_from_bytes::<UserDbV1>(payload).map_err(|_| UserDbError::Corrupt)?;
        if !rest.is_empty() || wire.users.len() > MAX_USERS {
            return Err(UserDbError::Corrupt);
        }
        let known = MechanismName::ALL
            .into_iter()
            .fold(MechanismSet::EMPTY, MechanismSet::with);
        let mut users = BTreeMap::new();
        for user in wire.users {
            let name = UserName::parse(&user.name).ok_or(UserDbError::Corrupt)?;
            let scram = ScramSecret::from_parts(
                &user.salt,
                user.iterations,
                &user.stored_key,
                &user.server_key,
            )
            .map_err(|_| UserDbError::Corrupt)?;
            let mechanisms = MechanismSet(user.mechanisms);
            if mechanisms.0 & !known.0 != 0
                || mechanisms.contains(MechanismName::CramMd5) != user.cram_md5.is_some()
            {
                return Err(UserDbError::Corrupt);
            }
            let record = UserRecord {
                scram,
                cram_md5: user.cram_md5.map(|(inner, outer)| CramMd5Secret {
                    inner_pad_state: inner,
                    outer_pad_state: outer,
                }),
                mechanisms,
            };
            if users.insert(name, record).is_some() {
                return Err(UserDbError::Corrupt);
            }
        }
        Ok(UserDb { users })
    }

    fn record(&self, user: &str) -> Option<&UserRecord> {
        self.users.get(&UserName::parse(user)?)
    }

    /// Whether any user has a CRAM-MD5 secret: only then is CRAM-MD5 offered.
    pub fn any_cram_md5(&self) -> bool {
        self.users.values().any(|r| r.cram_md5.is_some())
    }

    /// The iterations a stand-in secret gets: those most users have (the larger on a
    /// tie), so that an unknown user costs what a typical real one does; the minimum for
    /// an empty database.
    pub fn stand_in_iterations(&self) -> u32 {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for record in self.users.values() {
            *counts.entry(record.scram.iterations()).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|&(iterations, n)| (n, iterations))
            .map_or(MIN_ITERATIONS, |(iterations, _)| iterations)
    }
}

/// The user database as the mechanisms see it: its users, and stand-in secrets for
/// every other name, keyed by a secret of the running gateway and made with the
/// database's typical iterations (see [`Credentials::stand_in`]).
pub struct UserLookup {
    db: Rc<UserDb>,
    key: [u8; 32],
    stand_in_iterations: u32,
}

impl UserLookup {
    /// `key` is random octets drawn once by the caller.
    pub fn new(db: Rc<UserDb>, key: [u8; 32]) -> UserLookup {
        let stand_in_iterations = db.stand_in_iterations();
        UserLookup {
            db,
            key,
            stand_in_iterations,
        }
    }

    /// Whether CRAM-MD5 can succeed for anyone: some user has its secret.
    pub fn offers_cram_md5(&self) -> bool {
        self.db.any_cram_md5()
    }

    /// A known user without a CRAM-MD5 secret, for the log line of a CRAM-MD5 failure
    /// (the client hears the same 535 as for a wrong password).
    pub fn lacks_cram_md5(&self, user: &str) -> bool {
        self.db.scram(user).is_some() && self.db.cram_md5(user).is_none()
    }
}

impl Credentials for UserLookup {
    fn scram(&self, user: &str) -> Option<ScramSecret> {
        self.db.scram(user)
    }
    fn stand_in(&self, user: &str) -> ScramSecret {
        stand_in_secret(&self.key, user, self.stand_in_iterations)
    }
    fn cram_md5(&self, user: &str) -> Option<CramMd5Secret> {
        self.db.cram_md5(user)
    }
    fn external(&self, cert_identity: &str) -> Option<String> {
        self.db.external(cert_identity)
    }
}

impl Credentials for UserDb {
    fn scram(&self, user: &str) -> Option<ScramSecret> {
        self.record(user).map(|record| record.scram.clone())
    }

    fn cram_md5(&self, user: &str) -> Option<CramMd5Secret> {
        let record = self.record(user)?;
        if !record.mechanisms.contains(MechanismName::CramMd5) {
            return None;
        }
        record.cram_md5.clone()
    }

    /// The certificate identity must be a user name, exactly (users named by their email
    /// address match a SAN email; others match a CN).
    fn external(&self, cert_identity: &str) -> Option<String> {
        let record = self.record(cert_identity)?;
        record
            .mechanisms
            .contains(MechanismName::External)
            .then(|| cert_identity.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Resolving, TEST_ITERATIONS, b64};
    use super::super::{CramMd5, Login, Mechanism, Plain, Step};
    use super::*;

    const SALT: &[u8] = b"0123456789abcdef";

    fn sample() -> UserDb {
        let mut db = UserDb::new();
        db.add("tim", "tanstaaftanstaaf", TEST_ITERATIONS, true, SALT)
            .unwrap();
        db.add(
            "alice@example.org",
            "wonderland",
            TEST_ITERATIONS,
            false,
            SALT,
        )
        .unwrap();
        db.add("bob", "builder", TEST_ITERATIONS, false, b"saltsalt")
            .unwrap();
        db
    }

    fn names(listing: &[UserListing]) -> Vec<&str> {
        listing.iter().map(|u| u.name.as_str()).collect()
    }

    #[test]
    fn add_list_delete() {
        let mut db = sample();
        assert_eq!(db.len(), 3);
        assert_eq!(names(&db.list("*")), ["alice@example.org", "bob", "tim"]);
        assert_eq!(names(&db.list("*@example.org")), ["alice@example.org"]);
        assert_eq!(names(&db.list("t*m")), ["tim"]);
        assert_eq!(names(&db.list("b*b*")), ["bob"]);
        assert_eq!(names(&db.list("tim")), ["tim"]);
        assert!(db.list("ti").is_empty());
        assert_eq!(
            db.add("tim", "other", TEST_ITERATIONS, false, SALT),
            Err(UserDbError::Exists)
        );
        db.delete("bob").unwrap();
        assert_eq!(db.delete("bob"), Err(UserDbError::NotFound));
        assert_eq!(names(&db.list("*")), ["alice@example.org", "tim"]);
    }

    #[test]
    fn bad_names_and_secrets_are_refused() {
        let mut db = UserDb::new();
        for name in ["", "a*b", "a\nb", "a\0b", &"x".repeat(MAX_FIELD_LEN + 1)] {
            assert_eq!(
                db.add(name, "pw", TEST_ITERATIONS, false, SALT),
                Err(UserDbError::BadName)
            );
        }
        assert_eq!(
            db.add("u", "pw", 1, false, SALT),
            Err(UserDbError::Secret(SecretError::Iterations))
        );
        assert_eq!(
            db.add("u", "pw", TEST_ITERATIONS, false, b"salt"),
            Err(UserDbError::Secret(SecretError::Salt))
        );
        assert!(db.is_empty());
    }

    #[test]
    fn listing_shows_mechanisms_and_no_secrets() {
        let db = sample();
        let listing = db.list("*");
        let shown = format!("{listing:?}");
        let tim = db.scram("tim").unwrap();
        for secret in [tim.stored_key(), tim.server_key(), tim.salt()] {
            assert!(!shown.contains(&format!("{secret:?}")));
        }
        let mechanisms = |name: &str| -> Vec<&str> {
            let user = listing.iter().find(|u| u.name == name).unwrap();
            user.mechanisms.iter().map(|m| m.as_str()).collect()
        };
        assert_eq!(
            mechanisms("tim"),
            ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "EXTERNAL"]
        );
        assert_eq!(
            mechanisms("bob"),
            ["PLAIN", "LOGIN", "SCRAM-SHA-256", "EXTERNAL"]
        );
        // Nor does the database's own debug output show the keys.
        assert!(!format!("{db:?}").contains(&format!("{:?}", tim.stored_key())));
    }

    #[test]
    fn cram_md5_only_when_enabled() {
        let db = sample();
        assert!(db.cram_md5("tim").is_some());
        assert!(db.cram_md5("bob").is_none());
        let mut cram = CramMd5::new(&db, 1896, 697170952, "postoffice.reston.mci.net").unwrap();
        cram.start(None);
        assert!(matches!(
            cram.step(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"),
            Step::Success { .. }
        ));
    }

    #[test]
    fn mechanisms_authenticate_against_the_database() {
        let mut db = sample();
        let mut plain = Resolving(Plain::new(&db));
        assert!(matches!(
            plain.start(Some(&b64(b"\0bob\0builder"))),
            Step::Success { .. }
        ));
        db.set_password("bob", "fixer", TEST_ITERATIONS, SALT)
            .unwrap();
        let mut login = Resolving(Login::new(&db));
        login.start(Some(&b64(b"bob")));
        assert!(matches!(login.step(&b64(b"builder")), Step::Failure(_)));
        let mut login = Resolving(Login::new(&db));
        login.start(Some(&b64(b"bob")));
        assert!(matches!(login.step(&b64(b"fixer")), Step::Success { .. }));
        assert_eq!(
            db.set_password("carol", "x", TEST_ITERATIONS, SALT),
            Err(UserDbError::NotFound)
        );
        // The new password reaches the CRAM-MD5 secret too.
        db.set_password("tim", "new", TEST_ITERATIONS, SALT)
            .unwrap();
        assert_eq!(db.cram_md5("tim"), Some(CramMd5Secret::derive("new")));
        assert_eq!(
            db.external("alice@example.org").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(db.external("mallory@example.org"), None);
    }

    #[test]
    fn stored_form_round_trip() {
        let db = sample();
        let blob = db.encode();
        assert_eq!(&blob[..7], b"DBUSR\x01\x00");
        assert_eq!(UserDb::decode(&blob), Ok(db));
        assert_eq!(UserDb::decode(&UserDb::new().encode()), Ok(UserDb::new()));
    }

    #[test]
    fn corrupt_or_wrong_version_blob_refused() {
        let blob = sample().encode();
        let mut other_version = blob.clone();
        other_version[5] = 2;
        assert_eq!(UserDb::decode(&other_version), Err(UserDbError::Version(2)));
        let mut bad_magic = blob.clone();
        bad_magic[0] = b'X';
        assert_eq!(UserDb::decode(&bad_magic), Err(UserDbError::Corrupt));
        for len in 0..blob.len() {
            assert!(UserDb::decode(&blob[..len]).is_err(), "truncated at {len}");
        }
        let mut trailing = blob.clone();
        trailing.push(0);
        assert_eq!(UserDb::decode(&trailing), Err(UserDbError::Corrupt));
        // Records that decode but break the rules.
        let record = |name: &str, key_len: usize, mechanisms: u8| UserV1 {
            name: name.into(),
            salt: SALT.to_vec(),
            iterations: TEST_ITERATIONS,
            stored_key: vec![0; key_len],
            server_key: vec![0; 32],
            cram_md5: None,
            mechanisms,
        };
        let blob_of = |users: Vec<UserV1>| {
            let mut out = b"DBUSR\x01\x00".to_vec();
            out.extend_from_slice(&postcard::to_allocvec(&UserDbV1 { users }).unwrap());
            out
        };
        assert!(UserDb::decode(&blob_of(vec![record("ok", 32, 1)])).is_ok());
        for users in [
            vec![record("a*", 32, 1)],
            vec![record("ok", 31, 1)],
            vec![record("ok", 32, 0x80)],
            vec![record("ok", 32, 1 << MechanismName::CramMd5 as u8)],
            vec![record("ok", 32, 1), record("ok", 32, 1)],
        ] {
            assert_eq!(UserDb::decode(&blob_of(users)), Err(UserDbError::Corrupt));
        }
    }

    #[test]
    fn fuzz_stored_form() {
        let blob = sample().encode();
        let mut prng = crate::proto::dns::rng::Prng::from_seed(1);
        let mut accepted = 0;
        for _ in 0..10_000 {
            let mutated = super::super::testing::mutate(&mut prng, &blob);
            if UserDb::decode(&mutated).is_ok() {
                accepted += 1;
            }
        }
        assert!(accepted < 10_000);
    }

    #[test]
    fn patterns() {
        assert!(matches_pattern("*", ""));
        assert!(matches_pattern("a*c", "abbbc"));
        assert!(matches_pattern("a*b*c", "axxbyyc"));
        assert!(!matches_pattern("a*b*c", "axxbyy"));
        assert!(matches_pattern("**", "x"));
        assert!(!matches_pattern("", "x"));
        assert!(matches_pattern("ü*", "über"));
    }
}
