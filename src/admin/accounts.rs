//! Console logins: `admins.db` in the state directory, readable by its owner only.
//!
//! The file has the form of the mail users' database ([`crate::proto::sasl::users`]): a name
//! and a salted SCRAM-SHA-256 secret (PBKDF2), never a password. While there is no file
//! the factory account `admin` with the password `drawbridge` logs in, and must choose
//! a new password before anything else; choosing it writes the file. A factory reset
//! removes the file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::proto::console::{FACTORY_PASSWORD, FACTORY_USER};
use crate::proto::sasl::users::{UserDb, UserDbError};
use crate::proto::sasl::{Credentials, ScramHash, constant_time_eq};

/// The console logins' file in the state directory.
pub const ADMINS_FILE: &str = "admins.db";
/// PBKDF2 iterations for a console password: a login is rare, so each guess may cost
/// more than a mail user's (about 30 ms on a desktop core, under a second on the
/// slowest board).
pub const ADMIN_ITERATIONS: u32 = 100_000;

pub fn admins_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ADMINS_FILE)
}

/// What a login attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A login that exists, with a wrong password.
    Refused,
    /// No login of that name: not worth logging by name, since what was typed at
    /// `login:` may have been a password.
    Unknown,
    /// Good; `must_change` while it is the factory account's factory password.
    Accepted { must_change: bool },
}

fn load(state_dir: &Path) -> io::Result<Option<UserDb>> {
    match fs::read(admins_path(state_dir)) {
        Ok(blob) => UserDb::decode(&blob)
            .map(Some)
            .map_err(|e| io::Error::other(format!("{ADMINS_FILE} is damaged: {e:?}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks a login. Blocks for the key derivation: run it off the executor.
pub fn verify(state_dir: &Path, user: &str, password: &str) -> io::Result<Verdict> {
    let Some(db) = load(state_dir)? else {
        // The factory account. The comparison takes the same time for every password.
        let ok = user == FACTORY_USER
            && constant_time_eq(password.as_bytes(), FACTORY_PASSWORD.as_bytes());
        return Ok(if ok {
            Verdict::Accepted { must_change: true }
        } else if user == FACTORY_USER {
            Verdict::Refused
        } else {
            Verdict::Unknown
        });
    };
    let Some(secret) = db.scram(user) else {
        // Spend the same work on an unknown name as on a known one.
        let _ = crate::proto::sasl::ScramSecret::derive(password, &[0; 16], ADMIN_ITERATIONS);
        return Ok(Verdict::Unknown);
    };
    Ok(
        if secret.verify_password(ScramHash::Sha256, password.as_bytes()) {
            Verdict::Accepted { must_change: false }
        } else {
            Verdict::Refused
        },
    )
}

/// Serialises the changes of the file: each reads it, changes it and writes it back, on
/// the blocking pool, where two consoles' changes could otherwise run at once and one
/// be lost.
static CHANGES: Mutex<()> = Mutex::new(());

fn changing() -> MutexGuard<'static, ()> {
    CHANGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a password could not be set.
#[derive(Debug)]
pub enum PasswordError {
    /// The login changing its password is gone (deleted on another console), or, for the
    /// factory account, its factory password is no longer in force (changed on another
    /// console, or a first login added): the session must end.
    Gone(String),
    Io(io::Error),
}

impl std::fmt::Display for PasswordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordError::Gone(text) => f.write_str(text),
            PasswordError::Io(e) => e.fmt(f),
        }
    }
}

impl From<io::Error> for PasswordError {
    fn from(e: io::Error) -> Self {
        PasswordError::Io(e)
    }
}

/// Sets the password of a console login that exists, and writes the file. With
/// `factory`, the factory account's forced first change: it creates the file, and only
/// while there is none (the factory password still in force). Never adds a login: a
/// session whose login was deleted meanwhile cannot bring it back. Blocks for the key
/// derivation: run it off the executor.
pub fn set_password(
    state_dir: &Path,
    user: &str,
    password: &str,
    factory: bool,
) -> Result<(), PasswordError> {
    let salt = crate::io::users::salt().map_err(|e| io::Error::other(e.to_string()))?;
    let _changing = changing();
    let db = load(state_dir)?;
    let mut db = match (db, factory) {
        (None, true) if user == FACTORY_USER => UserDb::default(),
        (Some(_), true) | (None, true) => {
            return Err(PasswordError::Gone(format!(
                "the factory password of {FACTORY_USER} was changed on another console: \
                 log in again"
            )));
        }
        (Some(db), false) if db.scram(user).is_some() => db,
        (_, false) => {
            return Err(PasswordError::Gone(format!(
                "console login {user} no longer exists"
            )));
        }
    };
    let result = if factory {
        db.add(user, password, ADMIN_ITERATIONS, false, &salt)
    } else {
        db.set_password(user, password, ADMIN_ITERATIONS, &salt)
    };
    result.map_err(|e| io::Error::other(format!("cannot set the password: {e:?}")))?;
    save(state_dir, &db)?;
    Ok(())
}

/// Adds a console login. Refused when the name is taken. Added while the factory account
/// still has its factory password, it is the first login of the file, and the factory
/// account is gone. Blocks for the key derivation: run it off the executor.
pub fn add(state_dir: &Path, user: &str, password: &str) -> io::Result<()> {
    let salt = crate::io::users::salt().map_err(|e| io::Error::other(e.to_string()))?;
    let _changing = changing();
    let mut db = load(state_dir)?.unwrap_or_default();
    db.add(user, password, ADMIN_ITERATIONS, false, &salt)
        .map_err(|e| {
            io::Error::other(match e {
                UserDbError::Exists => format!("console login {user} exists"),
                other => format!("cannot add console login {user}: {other:?}"),
            })
        })?;
    save(state_dir, &db)
}

/// Deletes a console login; never the last one, which would leave the console without a
/// login (the factory account does not come back: that is `factory-reset`).
pub fn delete(state_dir: &Path, user: &str) -> io::Result<()> {
    let unknown = || io::Error::other(format!("no console login {user}"));
    let _changing = changing();
    let mut db = load(state_dir)?.ok_or_else(unknown)?;
    if db.scram(user).is_none() {
        return Err(unknown());
    }
    if db.len() == 1 {
        return Err(io::Error::other(format!(
            "{user} is the last console login: add another first"
        )));
    }
    db.delete(user).map_err(|_| unknown())?;
    save(state_dir, &db)
}

/// The login names, for `show users`.
pub fn names(state_dir: &Path) -> io::Result<Vec<String>> {
    Ok(match load(state_dir)? {
        Some(db) => db.list("*").into_iter().map(|u| u.name).collect(),
        None => vec![format!("{FACTORY_USER} (factory password)")],
    })
}

/// Writes the file atomically and readable by its owner only.
fn save(state_dir: &Path, db: &UserDb) -> io::Result<()> {
    let path = admins_path(state_dir);
    let tmp = path.with_extension("db.tmp");
    fs::create_dir_all(state_dir)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&db.encode())?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    fs::File::open(state_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn factory_login_then_a_chosen_password_in_a_private_file() {
        let dir = std::env::temp_dir().join(format!("drawbridge-admins-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(
            verify(&dir, "admin", "drawbridge").unwrap(),
            Verdict::Accepted { must_change: true }
        );
        assert_eq!(
            verify(&dir, "admin", "drawbridgE").unwrap(),
            Verdict::Refused
        );
        assert_eq!(
            verify(&dir, "root", "drawbridge").unwrap(),
            Verdict::Unknown
        );
        set_password(&dir, "admin", "correct horse", true).unwrap();
        assert_eq!(
            verify(&dir, "admin", "drawbridge").unwrap(),
            Verdict::Refused
        );
        assert_eq!(
            verify(&dir, "admin", "correct horse").unwrap(),
            Verdict::Accepted { must_change: false }
        );
        let mode = fs::metadata(admins_path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let blob = fs::read(admins_path(&dir)).unwrap();
        assert!(!blob.windows(13).any(|w| w == b"correct horse"));
        assert_eq!(names(&dir).unwrap(), ["admin"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn logins_are_added_and_deleted_but_never_the_last() {
        let dir =
            std::env::temp_dir().join(format!("drawbridge-admins-add-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(
            delete(&dir, "admin")
                .unwrap_err()
                .to_string()
                .contains("no console login admin")
        );
        set_password(&dir, "admin", "correct horse", true).unwrap();
        add(&dir, "bob", "battery staple").unwrap();
        let taken = add(&dir, "bob", "another one").unwrap_err();
        assert!(
            taken.to_string().contains("console login bob exists"),
            "{taken}"
        );
        assert_eq!(
            verify(&dir, "bob", "battery staple").unwrap(),
            Verdict::Accepted { must_change: false }
        );
        assert_eq!(names(&dir).unwrap(), ["admin", "bob"]);
        assert!(
            delete(&dir, "carol")
                .unwrap_err()
                .to_string()
                .contains("no console login carol")
        );
        delete(&dir, "admin").unwrap();
        assert_eq!(
            verify(&dir, "admin", "correct horse").unwrap(),
            Verdict::Unknown
        );
        let last = delete(&dir, "bob").unwrap_err();
        assert!(
            last.to_string().contains("bob is the last console login"),
            "{last}"
        );
        assert_eq!(names(&dir).unwrap(), ["bob"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_password_change_never_brings_back_a_login_or_the_factory_account() {
        let dir =
            std::env::temp_dir().join(format!("drawbridge-admins-gone-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // Only the factory account may make the first change, and not as a plain one.
        let gone = |r: Result<(), PasswordError>| match r {
            Err(PasswordError::Gone(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(gone(set_password(&dir, "root", "x", true)).contains("factory password"));
        assert!(gone(set_password(&dir, "admin", "x", false)).contains("no longer exists"));
        assert!(!admins_path(&dir).exists());
        // Two consoles logged in with the factory password: the first to choose wins.
        set_password(&dir, "admin", "first choice", true).unwrap();
        let late = gone(set_password(&dir, "admin", "second choice", true));
        assert!(late.contains("changed on another console"), "{late}");
        assert_eq!(
            verify(&dir, "admin", "first choice").unwrap(),
            Verdict::Accepted { must_change: false }
        );
        // A login deleted on another console cannot set a password to come back.
        add(&dir, "alice", "her own").unwrap();
        delete(&dir, "admin").unwrap();
        let text = gone(set_password(&dir, "admin", "resurrected", false));
        assert!(
            text.contains("console login admin no longer exists"),
            "{text}"
        );
        assert_eq!(names(&dir).unwrap(), ["alice"]);
        set_password(&dir, "alice", "changed", false).unwrap();
        assert_eq!(
            verify(&dir, "alice", "changed").unwrap(),
            Verdict::Accepted { must_change: false }
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
