//! The local user database on disk (`users.db` in the state directory) and the
//! `drawbridge password …` command. The database itself, with its secrets and stored
//! form, is `sasl::users`; this module only loads, saves and describes it, and keeps the
//! running gateway's copy ([`UserCache`]).

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};

use crate::proto::sasl::users::{UserDb, UserDbError, UserLookup};
use crate::proto::sasl::{MIN_ITERATIONS, MechanismName};

/// The database's file in the state directory.
pub const USERS_FILE: &str = "users.db";
/// Salt for a new SCRAM secret: 16 random octets (RFC 5802 leaves the length open).
pub const SALT_LEN: usize = crate::proto::sasl::STAND_IN_SALT_LEN;
/// PBKDF2 iterations for new secrets unless the administrator says otherwise; RFC 7677
/// asks for at least 4096.
pub const DEFAULT_ITERATIONS: u32 = MIN_ITERATIONS;

pub fn users_path(state_dir: &Path) -> PathBuf {
    state_dir.join(USERS_FILE)
}

/// Why the database could not be used.
#[derive(Debug)]
pub enum UsersError {
    Io(io::Error),
    Db(UserDbError),
}

impl std::fmt::Display for UsersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsersError::Io(e) => write!(f, "{e}"),
            UsersError::Db(UserDbError::BadName) => f.write_str("not a valid user name"),
            UsersError::Db(UserDbError::Exists) => f.write_str("that user exists already"),
            UsersError::Db(UserDbError::NotFound) => f.write_str("no such user"),
            UsersError::Db(UserDbError::Full) => f.write_str("the user database is full"),
            UsersError::Db(UserDbError::Secret(e)) => write!(f, "bad secret parameters: {e:?}"),
            UsersError::Db(UserDbError::Corrupt) => f.write_str("the user database is damaged"),
            UsersError::Db(UserDbError::Version(v)) => write!(
                f,
                "user database version {v} is not readable by this firmware"
            ),
        }
    }
}

/// The database in `state_dir`; empty when there is no file yet.
pub fn load(state_dir: &Path) -> Result<UserDb, UsersError> {
    match fs::read(users_path(state_dir)) {
        Ok(blob) => UserDb::decode(&blob).map_err(UsersError::Db),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(UserDb::new()),
        Err(e) => Err(UsersError::Io(e)),
    }
}

/// How long the running gateway trusts its copy of the database before it looks at the
/// file again: at most one look (a `stat`, on the blocking pool) per second, whatever
/// the rate of AUTH commands.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// What identifies one version of the database file: a `password` command replaces it by
/// rename, so the inode changes, and any other write changes the size or the times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The copy in memory and what it was read from.
struct Cached {
    lookup: Rc<UserLookup>,
    /// `None`: there was no file.
    stamp: Option<Stamp>,
    checked: Instant,
}

/// What a look at the file found.
enum Look {
    Unchanged,
    Changed(Option<Stamp>, UserDb),
}

/// The running gateway's copy of the user database: read on the blocking pool, kept in
/// memory, and read again only when the file has changed. The executor never waits for
/// the disk on an AUTH command.
pub struct UserCache {
    state_dir: PathBuf,
    /// Keys the stand-in secrets of unknown users (see [`UserLookup`]); drawn once.
    key: [u8; 32],
    cached: RefCell<Option<Cached>>,
}

impl UserCache {
    pub fn new(state_dir: &Path) -> Result<UserCache, UsersError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| UsersError::Io(io::Error::other("no randomness available")))?;
        Ok(UserCache {
            state_dir: state_dir.to_path_buf(),
            key,
            cached: RefCell::new(None),
        })
    }

    /// The database as it is on disk now, give or take [`RECHECK_AFTER`].
    pub async fn lookup(&self, now: Instant) -> Result<Rc<UserLookup>, UsersError> {
        let previous = match &*self.cached.borrow() {
            Some(c) if now.saturating_duration_since(c.checked) < RECHECK_AFTER => {
                return Ok(c.lookup.clone());
            }
            Some(c) => Some(c.stamp),
            None => None,
        };
        let path = users_path(&self.state_dir);
        let look = smol::unblock(move || look_at(&path, previous))
            .await
            .map_err(|e| {
                // A damaged or unreadable file leaves the last good copy in use.
                log::error!(target: "smtpd", "cannot read the user database: {e}");
                e
            });
        let mut cached = self.cached.borrow_mut();
        match (look, cached.as_mut()) {
            (Ok(Look::Unchanged), Some(c)) => {
                c.checked = now;
                Ok(c.lookup.clone())
            }
            (Ok(Look::Changed(stamp, db)), _) => {
                let lookup = Rc::new(UserLookup::new(Rc::new(db), self.key));
                if previous.is_some() {
                    log::info!(target: "smtpd", "user database changed: read again");
                }
                *cached = Some(Cached {
                    lookup: lookup.clone(),
                    stamp,
                    checked: now,
                });
                Ok(lookup)
            }
            (Err(_), Some(c)) => Ok(c.lookup.clone()),
            (Ok(Look::Unchanged), None) | (Err(_), None) => Err(UsersError::Io(io::Error::other(
                "the user database could not be read",
            ))),
        }
    }
}

/// Runs on the blocking pool: the file's stamp, and the database if the stamp differs
/// from `previous` (`Some(None)`: there was no file).
fn look_at(path: &Path, previous: Option<Option<Stamp>>) -> Result<Look, UsersError> {
    let stamp = match fs::metadata(path) {
        Ok(meta) => Some(Stamp::of(&meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(UsersError::Io(e)),
    };
    if previous == Some(stamp) {
        return Ok(Look::Unchanged);
    }
    let db = match stamp {
        None => UserDb::new(),
        Some(_) => match fs::read(path) {
            Ok(blob) => UserDb::decode(&blob).map_err(UsersError::Db)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => UserDb::new(),
            Err(e) => return Err(UsersError::Io(e)),
        },
    };
    Ok(Look::Changed(stamp, db))
}

/// Writes the database atomically: temporary file, fsync, rename, directory fsync.
pub fn save(state_dir: &Path, db: &UserDb) -> Result<(), UsersError> {
    let path = users_path(state_dir);
    let tmp = path.with_extension("db.tmp");
    let write = || -> io::Result<()> {
        fs::create_dir_all(state_dir)?;
        let mut f = File::create(&tmp)?;
        f.write_all(&db.encode())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(state_dir)?.sync_all()
    };
    write().map_err(UsersError::Io)
}

/// A fresh random salt.
pub fn salt() -> Result<[u8; SALT_LEN], UsersError> {
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| UsersError::Io(io::Error::other("no randomness available")))?;
    Ok(salt)
}

/// What `drawbridge password …` does.
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordAction {
    /// Add a user; the password comes on standard input.
    Add {
        user: String,
        cram_md5: bool,
        iterations: u32,
    },
    /// Change a user's password; the password comes on standard input.
    Set {
        user: String,
        iterations: u32,
    },
    Delete {
        user: String,
    },
    /// List the users matching a pattern (`*` wildcards): names and mechanisms only.
    Show {
        pattern: String,
    },
}

/// Carries out a password command on the state directory's database.
pub fn password(
    action: &PasswordAction,
    state_dir: &Path,
    password: Option<&str>,
) -> Result<String, UsersError> {
    let mut db = load(state_dir)?;
    let need = || {
        password
            .ok_or_else(|| UsersError::Io(io::Error::other("no password given on standard input")))
    };
    let text = match action {
        PasswordAction::Add {
            user,
            cram_md5,
            iterations,
        } => {
            db.add(user, need()?, *iterations, *cram_md5, &salt()?)
                .map_err(UsersError::Db)?;
            format!("added {user}\n")
        }
        PasswordAction::Set { user, iterations } => {
            db.set_password(user, need()?, *iterations, &salt()?)
                .map_err(UsersError::Db)?;
            format!("changed the password of {user}\n")
        }
        PasswordAction::Delete { user } => {
            db.delete(user).map_err(UsersError::Db)?;
            format!("deleted {user}\n")
        }
        PasswordAction::Show { pattern } => {
            let mut out = String::new();
            for u in db.list(pattern) {
                let mechs: Vec<&str> = u
                    .mechanisms
                    .iter()
                    .map(|m: MechanismName| m.as_str())
                    .collect();
                out.push_str(&format!("{}: {}\n", u.name, mechs.join(" ")));
            }
            return Ok(if out.is_empty() {
                "no users\n".into()
            } else {
                out
            });
        }
    };
    save(state_dir, &db)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::sasl::Credentials as _;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let path =
            std::env::temp_dir().join(format!("drawbridge-users-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn add(state: &Path, user: &str, iterations: u32) {
        password(
            &PasswordAction::Add {
                user: user.into(),
                cram_md5: false,
                iterations,
            },
            state,
            Some("pw"),
        )
        .unwrap();
    }

    #[test]
    fn the_cache_reads_again_only_when_the_file_changes() {
        let d = dir("cache");
        let cache = UserCache::new(&d.0).unwrap();
        let t0 = Instant::now();
        let lookup = |at| smol::block_on(cache.lookup(at)).unwrap();
        // No file: an empty database.
        assert!(lookup(t0).scram("alice").is_none());
        add(&d.0, "alice", MIN_ITERATIONS);
        // Trusted for a second, then looked at again and found changed.
        assert!(
            lookup(t0 + Duration::from_millis(500))
                .scram("alice")
                .is_none()
        );
        let first = lookup(t0 + RECHECK_AFTER);
        assert!(first.scram("alice").is_some());
        // Unchanged: the same copy.
        let again = lookup(t0 + RECHECK_AFTER * 3);
        assert!(Rc::ptr_eq(&first, &again));
        // A damaged file keeps the last good copy in use.
        fs::write(users_path(&d.0), b"DBUSR\x01\x00garbage").unwrap();
        assert!(lookup(t0 + RECHECK_AFTER * 5).scram("alice").is_some());
        // Deleted: nobody.
        fs::remove_file(users_path(&d.0)).unwrap();
        assert!(lookup(t0 + RECHECK_AFTER * 7).scram("alice").is_none());
    }

    #[test]
    fn stand_ins_use_the_iterations_most_users_have() {
        let d = dir("stand-in");
        add(&d.0, "a", 8192);
        add(&d.0, "b", 8192);
        add(&d.0, "c", MIN_ITERATIONS);
        let cache = UserCache::new(&d.0).unwrap();
        let lookup = smol::block_on(cache.lookup(Instant::now())).unwrap();
        let stand_in = lookup.stand_in("nobody");
        assert_eq!(stand_in.iterations(), 8192);
        assert_eq!(stand_in.salt().len(), SALT_LEN);
        assert_eq!(stand_in, lookup.stand_in("nobody"));
        assert_ne!(stand_in.salt(), lookup.stand_in("somebody").salt());
        // Another gateway (another key) makes other stand-ins: nobody can compute them.
        let other = UserCache::new(&d.0).unwrap();
        let other = smol::block_on(other.lookup(Instant::now())).unwrap();
        assert_ne!(other.stand_in("nobody").salt(), stand_in.salt());
    }
}
