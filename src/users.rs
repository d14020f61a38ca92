//! The local user database on disk (`users.db` in the state directory) and the
//! `drawbridge password …` command. The database itself, with its secrets and stored
//! form, is `sasl::users`; this module only loads, saves and describes it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use crate::sasl::users::{UserDb, UserDbError};
use crate::sasl::{MIN_ITERATIONS, MechanismName};

/// The database's file in the state directory.
pub const USERS_FILE: &str = "users.db";
/// Salt for a new SCRAM secret: 16 random octets (RFC 5802 leaves the length open).
pub const SALT_LEN: usize = 16;
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
