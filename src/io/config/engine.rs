//! Candidate and running configuration (SPEC §8): the start-up rules, commits with their
//! checks, `commit confirmed` and its automatic rollback, `rollback N`, and the history.
//!
//! The engine owns the running configuration and the store. It does not apply anything:
//! the gateway asks it to write a commit once the commit may take effect (listeners
//! bound), then swaps in the new configuration. Time is given by the caller, in unix
//! seconds, so that a pending rollback survives a restart.

use std::path::Path;
use std::sync::Arc;

use super::store::{HISTORY, Scan, Store, StoreError};
use crate::io::token::{ObjectHandle, Token, TokenError};
use crate::proto::config::Candidate;
use crate::proto::config::Config;
use crate::proto::config::check::{Problem, check};
use crate::proto::config::slot::{CommitMeta, MAC_LEN, Record, Seal, SlotError};

/// Longest `commit confirmed N`: a day.
pub const MAX_CONFIRM_MINUTES: u64 = 24 * 60;

/// The slots' HMAC through the token: the key is a secret object on it.
pub struct TokenSeal {
    token: Arc<dyn Token>,
    key: ObjectHandle,
}

impl TokenSeal {
    /// The HMAC key on `token` (logged in), created there on first use.
    pub fn open(token: Arc<dyn Token>) -> Result<TokenSeal, TokenError> {
        let key =
            crate::io::token::hmac_key(token.as_ref(), crate::io::token::CONFIG_HMAC_KEY_LABEL)?;
        Ok(TokenSeal { token, key })
    }
}

impl Seal for TokenSeal {
    fn mac(&self, data: &[u8]) -> Result<[u8; MAC_LEN], String> {
        self.token
            .hmac_sha256(self.key, data)
            .map_err(|e| e.to_string())
    }
}

/// A commit checked and ready to be written: [`PendingCommit::write`] takes the store's
/// lock, reads the slots, seals the record and syncs it to disk, so the running gateway
/// calls it on its blocking pool and hands the result to [`Engine::written`].
pub struct PendingCommit {
    slots: Slots,
    config: Config,
    meta: CommitMeta,
    parent: Option<u64>,
}

impl PendingCommit {
    /// Writes the commit durably (refused as stale when its parent is no longer the
    /// newest commit).
    pub fn write(self) -> Result<Written, CommitError> {
        let Slots { store, seal } = &self.slots;
        let sequence = store
            .commit(&self.config, &self.meta, seal.as_ref(), self.parent)
            .map_err(CommitError::Store)?;
        Ok(Written {
            sequence,
            config: self.config,
            meta: self.meta,
        })
    }
}

/// The slots and the key that checks them, apart from the engine.
pub struct Slots {
    store: Store,
    seal: Arc<dyn Seal + Send + Sync>,
}

impl Slots {
    /// Every slot, read and checked.
    pub fn scan(&self) -> Scan {
        self.store.scan(self.seal.as_ref())
    }
}

/// The commits of `scan`, newest first.
pub fn history(scan: &Scan) -> Vec<Commit> {
    scan.records.iter().map(|(_, r)| commit_of(r)).collect()
}

/// A commit on disk, for [`Engine::written`].
pub struct Written {
    sequence: u64,
    config: Config,
    meta: CommitMeta,
}

/// One commit of the history, for `show system commit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub sequence: u64,
    pub meta: CommitMeta,
}

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError {
    /// The semantic checks failed; every problem is listed.
    Check(Vec<Problem>),
    Store(StoreError),
    /// Something else the caller must say (a listener that cannot bind, a bad request).
    Refused(String),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Check(problems) => {
                write!(f, "commit failed: {} problem(s)", problems.len())?;
                for p in problems {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
            CommitError::Store(e) => write!(f, "commit failed: {e}"),
            CommitError::Refused(e) => write!(f, "commit failed: {e}"),
        }
    }
}

/// What a commit is asked to be.
#[derive(Clone, Debug, Default)]
pub struct CommitRequest {
    pub user: String,
    pub comment: String,
    /// `commit confirmed N`: roll back after this many minutes unless confirmed.
    pub confirm_minutes: Option<u64>,
}

/// How the running configuration came to be at start-up, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The newest good commit in the slots.
    Stored,
    /// `run --config FILE`, loaded as a new commit (or already the newest).
    File { changed: bool },
    /// No slots: the board's factory configuration, committed as the first.
    Factory,
}

/// The running configuration and its store.
pub struct Engine {
    store: Store,
    seal: Arc<dyn Seal + Send + Sync>,
    running: Config,
    commit: Commit,
    /// The length of a minute for `commit confirmed`, in seconds (60; tests shorten it).
    minute: u64,
}

impl Engine {
    /// Starts from the slots in `state_dir` (SPEC §8, start-up rules): the newest good
    /// commit; `file` (its path for the comment, and its configuration) loaded as a new
    /// commit when given; the board's `factory` configuration as commit 1 when there
    /// is no good commit at all. Lines for the log come back with the engine.
    pub fn boot(
        state_dir: &Path,
        seal: Arc<dyn Seal + Send + Sync>,
        file: Option<(&Path, Config)>,
        factory: Config,
        now: u64,
        minute: u64,
    ) -> Result<(Engine, Origin, Vec<String>), CommitError> {
        let store = Store::open(state_dir).map_err(|e| CommitError::Store(e.into()))?;
        let scan = store.scan(seal.as_ref());
        let mut log = fallback_lines(&scan);
        // Whole records that fail only their HMAC were written with another key (the
        // token was changed, or did not answer): they may be the administrator's whole
        // history, and the factory configuration is not written over them.
        let unauthenticated = scan
            .damaged
            .iter()
            .filter(|d| matches!(d.error, SlotError::BadMac | SlotError::Seal(_)))
            .count();
        let (running, commit, mut origin) = match scan.newest() {
            Some(r) => (r.config.clone(), commit_of(r), Origin::Stored),
            None => {
                if !scan.damaged.is_empty() {
                    log.push(format!(
                        "no good configuration in {} slot(s): starting from the factory configuration",
                        scan.damaged.len()
                    ));
                }
                let problems = check(&factory);
                if !problems.is_empty() && file.is_none() {
                    return Err(CommitError::Check(problems));
                }
                (
                    factory,
                    Commit {
                        sequence: 0,
                        meta: CommitMeta::default(),
                    },
                    Origin::Factory,
                )
            }
        };
        let mut engine = Engine {
            store,
            seal,
            running,
            commit,
            minute,
        };
        if let Some((path, config)) = file {
            let changed = engine.commit.sequence == 0 || config != engine.running;
            if changed {
                let request = CommitRequest {
                    user: "boot".into(),
                    comment: loaded_from(path),
                    confirm_minutes: None,
                };
                engine.commit_now(config, &request, now)?;
            }
            origin = Origin::File { changed };
        } else if origin == Origin::Factory && unauthenticated > 0 {
            log.push(format!(
                "{unauthenticated} slot(s) hold records this token's key does not check: \
                 running the factory configuration without storing it, the slots untouched \
                 (the token it was sealed with restores them; a commit writes over them)"
            ));
        } else if origin == Origin::Factory {
            let request = CommitRequest {
                user: "boot".into(),
                comment: "factory default".into(),
                confirm_minutes: None,
            };
            let factory = engine.running.clone();
            engine.commit_now(factory, &request, now)?;
        }
        Ok((engine, origin, log))
    }

    pub fn running(&self) -> &Config {
        &self.running
    }

    /// The running commit.
    pub fn commit(&self) -> &Commit {
        &self.commit
    }

    /// A new candidate: a copy of the running configuration.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            base: self.commit.sequence,
            config: self.running.clone(),
        }
    }

    /// `commit check`: the problems that would refuse `candidate`.
    pub fn check(&self, candidate: &Candidate) -> Result<(), CommitError> {
        let problems = check(&candidate.config);
        if !problems.is_empty() {
            return Err(CommitError::Check(problems));
        }
        if candidate.base != self.commit.sequence {
            return Err(CommitError::Store(StoreError::Stale {
                parent: candidate.base,
                newest: self.commit.sequence,
                by: self.commit.meta.user.clone(),
            }));
        }
        Ok(())
    }

    /// Writes `candidate` as the new running configuration, after the checks; returns
    /// its commit. The caller has made sure it can take effect.
    pub fn commit_candidate(
        &mut self,
        candidate: &Candidate,
        request: &CommitRequest,
        now: u64,
    ) -> Result<u64, CommitError> {
        let pending = self.prepare_candidate(candidate, request, now)?;
        self.write(pending)
    }

    /// [`Engine::commit_candidate`] up to the write, which the caller does.
    pub fn prepare_candidate(
        &self,
        candidate: &Candidate,
        request: &CommitRequest,
        now: u64,
    ) -> Result<PendingCommit, CommitError> {
        self.check(candidate)?;
        self.prepare(candidate.config.clone(), request, now, Some(candidate.base))
    }

    /// Commits `config` whatever the running one is (start-up, rollbacks).
    fn commit_now(
        &mut self,
        config: Config,
        request: &CommitRequest,
        now: u64,
    ) -> Result<u64, CommitError> {
        let pending = self.prepare_now(config, request, now, None)?;
        self.write(pending)
    }

    /// The checks of `config` alone, then [`Engine::prepare`] after `parent` (`None`:
    /// whatever is newest).
    fn prepare_now(
        &self,
        config: Config,
        request: &CommitRequest,
        now: u64,
        parent: Option<u64>,
    ) -> Result<PendingCommit, CommitError> {
        let problems = check(&config);
        if !problems.is_empty() {
            return Err(CommitError::Check(problems));
        }
        self.prepare(config, request, now, parent)
    }

    /// Writes a prepared commit here and now, and takes it in (start-up and scripts; the
    /// running gateway writes on its blocking pool instead).
    fn write(&mut self, pending: PendingCommit) -> Result<u64, CommitError> {
        let written = pending.write()?;
        Ok(self.written(written))
    }

    /// A commit written durably ([`PendingCommit::write`]) becomes the running one,
    /// unless a later one was written meanwhile. Returns its sequence number.
    pub fn written(&mut self, written: Written) -> u64 {
        let sequence = written.sequence;
        if sequence > self.commit.sequence {
            self.running = written.config;
            self.commit = Commit {
                sequence,
                meta: written.meta,
            };
        }
        sequence
    }

    /// The checks of a commit, then what to write: the record's metadata, the parent it
    /// must follow (`None`: whatever the newest is).
    fn prepare(
        &self,
        config: Config,
        request: &CommitRequest,
        now: u64,
        parent: Option<u64>,
    ) -> Result<PendingCommit, CommitError> {
        if request.comment.len() > crate::proto::config::slot::MAX_COMMENT {
            return Err(CommitError::Refused(format!(
                "the comment is longer than {} octets",
                crate::proto::config::slot::MAX_COMMENT
            )));
        }
        let confirm = match request.confirm_minutes {
            Some(0) => {
                return Err(CommitError::Refused(
                    "commit confirmed needs 1 minute or more".into(),
                ));
            }
            Some(m) if m > MAX_CONFIRM_MINUTES => {
                return Err(CommitError::Refused(format!(
                    "commit confirmed takes at most {MAX_CONFIRM_MINUTES} minutes"
                )));
            }
            Some(m) => Some(now.saturating_add(m.saturating_mul(self.minute))),
            None => None,
        };
        // A `commit confirmed` made while another is pending returns, unless confirmed,
        // to the last confirmed commit, not to the unconfirmed one it follows.
        let back_to = self
            .pending_confirm()
            .map_or(self.commit.sequence, |(_, back_to)| back_to);
        let meta = CommitMeta {
            time: now,
            user: request.user.clone(),
            comment: request.comment.clone(),
            confirm_by: confirm,
            rollback_to: confirm.map(|_| back_to),
        };
        Ok(PendingCommit {
            slots: self.slots(),
            config,
            meta,
            parent,
        })
    }

    /// `rollback N`: the configuration of the Nth commit before the running one (0 is
    /// the running one), as a candidate to commit.
    pub fn rollback_candidate(&self, n: usize) -> Result<Candidate, CommitError> {
        self.rollback_in(&self.slots().scan(), n)
    }

    /// [`Engine::rollback_candidate`] from slots read already.
    pub fn rollback_in(&self, scan: &Scan, n: usize) -> Result<Candidate, CommitError> {
        if n > HISTORY {
            return Err(CommitError::Refused(format!(
                "rollback reaches {HISTORY} commits back at most"
            )));
        }
        let record = scan
            .records
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.sequence <= self.commit.sequence)
            .nth(n)
            .ok_or_else(|| CommitError::Refused(format!("there is no commit {n} back")))?;
        Ok(Candidate {
            base: self.commit.sequence,
            config: record.config.clone(),
        })
    }

    /// The commits kept, newest first.
    pub fn history(&self) -> Vec<Commit> {
        history(&self.slots().scan())
    }

    /// What reads the slots, for reading them away from the engine (on the blocking
    /// pool: it reads files and asks the token for an HMAC per slot).
    pub fn slots(&self) -> Slots {
        Slots {
            store: self.store.clone(),
            seal: Arc::clone(&self.seal),
        }
    }

    /// When a `commit confirmed` rolls back by itself, and to which commit.
    pub fn pending_confirm(&self) -> Option<(u64, u64)> {
        let meta = &self.commit.meta;
        Some((meta.confirm_by?, meta.rollback_to?))
    }

    /// Confirms a pending `commit confirmed` with a new commit of the same
    /// configuration; `Ok(None)` when nothing is pending. Refused once its time has run
    /// out: it rolls back.
    pub fn confirm(&mut self, user: &str, now: u64) -> Result<Option<u64>, CommitError> {
        match self.prepare_confirm(user, now)? {
            Some(pending) => self.write(pending).map(Some),
            None => Ok(None),
        }
    }

    /// [`Engine::confirm`] up to the write, which the caller does.
    pub fn prepare_confirm(
        &self,
        user: &str,
        now: u64,
    ) -> Result<Option<PendingCommit>, CommitError> {
        let Some((deadline, back_to)) = self.pending_confirm() else {
            return Ok(None);
        };
        if now >= deadline {
            return Err(CommitError::Refused(format!(
                "too late: commit {} was to be confirmed {} s ago, and returns to commit {back_to}",
                self.commit.sequence,
                now - deadline
            )));
        }
        let request = CommitRequest {
            user: user.into(),
            comment: format!("confirmed commit {}", self.commit.sequence),
            confirm_minutes: None,
        };
        self.prepare_candidate(&self.candidate(), &request, now)
            .map(Some)
    }

    /// A pending `commit confirmed` whose time has come: commits the configuration it
    /// replaced and returns the new commit; `Ok(None)` when none is due.
    pub fn expire_confirm(&mut self, now: u64) -> Result<Option<u64>, CommitError> {
        match self.prepare_expiry(&self.slots().scan(), now)? {
            Some(pending) => self.write(pending).map(Some),
            None => Ok(None),
        }
    }

    /// [`Engine::expire_confirm`] up to the write, which the caller does, from slots
    /// read already.
    pub fn prepare_expiry(
        &self,
        scan: &Scan,
        now: u64,
    ) -> Result<Option<PendingCommit>, CommitError> {
        let Some((deadline, back_to)) = self.pending_confirm() else {
            return Ok(None);
        };
        if now < deadline {
            return Ok(None);
        }
        let Some(record) = scan
            .records
            .iter()
            .map(|(_, r)| r)
            .find(|r| r.sequence == back_to)
        else {
            return Err(CommitError::Refused(format!(
                "commit {back_to} to roll back to is no longer stored"
            )));
        };
        let request = CommitRequest {
            user: "system".into(),
            comment: format!(
                "rollback: commit {} was not confirmed in time",
                self.commit.sequence
            ),
            confirm_minutes: None,
        };
        // Written only over the commit it undoes: one confirmed meanwhile stays.
        let config = record.config.clone();
        self.prepare_now(config, &request, now, Some(self.commit.sequence))
            .map(Some)
    }

    /// SIGHUP: takes the newest good commit from the slots (one written by
    /// `drawbridge config load --no-apply`, say), read already. Returns whether it changed
    /// anything.
    pub fn reload(&mut self, scan: &Scan) -> (bool, Vec<String>) {
        let log = fallback_lines(scan);
        match scan.newest() {
            Some(r) if r.sequence != self.commit.sequence => {
                let changed = r.config != self.running;
                self.running = r.config.clone();
                self.commit = commit_of(r);
                (changed, log)
            }
            _ => (false, log),
        }
    }

    /// Commits `config` as `request` says, without a candidate (scripts' `load`).
    pub fn load(
        &mut self,
        config: Config,
        request: &CommitRequest,
        now: u64,
    ) -> Result<u64, CommitError> {
        let candidate = Candidate {
            base: self.commit.sequence,
            config,
        };
        self.commit_candidate(&candidate, request, now)
    }
}

/// The comment of a commit loaded from a file at start-up, within the comment limit
/// (a long path keeps its end, the file's name).
fn loaded_from(path: &Path) -> String {
    let path = path.display().to_string();
    let room = crate::proto::config::slot::MAX_COMMENT - "loaded from …".len();
    if path.len() <= room + "…".len() {
        return format!("loaded from {path}");
    }
    let mut cut = path.len() - room;
    while !path.is_char_boundary(cut) {
        cut += 1;
    }
    format!("loaded from …{}", &path[cut..])
}

fn commit_of(r: &Record) -> Commit {
    Commit {
        sequence: r.sequence,
        meta: r.meta.clone(),
    }
}

/// One log line per damaged slot newer than the good record started from.
fn fallback_lines(scan: &Scan) -> Vec<String> {
    let newest = scan.newest().map(|r| r.sequence);
    scan.newer_damaged()
        .into_iter()
        .map(|d| {
            format!(
                "slot {} (commit {}) is damaged: {}; fell back to {}",
                d.slot,
                d.claimed.unwrap_or(0),
                d.error,
                newest.map_or_else(|| "nothing".into(), |n| format!("commit {n}"))
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::config::host_default;
    use crate::proto::config::slot::tests::TestSeal;
    use crate::proto::config::text::parse_into;

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("drawbridge-engine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn boot(dir: &Path, file: Option<Config>, now: u64) -> (Engine, Origin) {
        let (e, o, _) = Engine::boot(
            dir,
            Arc::new(TestSeal([3; 32])),
            file.map(|c| (Path::new("/etc/gw.conf"), c)),
            host_default(),
            now,
            60,
        )
        .unwrap();
        (e, o)
    }

    fn edited(e: &Engine, text: &str) -> Candidate {
        let mut c = e.candidate();
        parse_into(&mut c.config, text).unwrap();
        c
    }

    fn req(comment: &str, confirm: Option<u64>) -> CommitRequest {
        CommitRequest {
            user: "admin".into(),
            comment: comment.into(),
            confirm_minutes: confirm,
        }
    }

    #[test]
    fn start_up_takes_the_factory_default_then_the_slots_then_a_file() {
        let dir = tempdir("boot");
        let (e, origin) = boot(&dir, None, 100);
        assert_eq!(origin, Origin::Factory);
        assert_eq!(e.commit().sequence, 1);
        assert_eq!(e.commit().meta.comment, "factory default");
        let (mut e, origin) = boot(&dir, None, 200);
        assert_eq!(origin, Origin::Stored);
        assert_eq!(e.commit().sequence, 1);
        let c = edited(&e, "set system host-name edited.example\n");
        assert_eq!(e.commit_candidate(&c, &req("edit", None), 300).unwrap(), 2);
        let (e, _) = boot(&dir, None, 400);
        assert_eq!(e.running().system.host_name, "edited.example");
        // A file: loaded as a commit when it differs, not again when it is the same.
        let (e, origin) = boot(&dir, Some(host_default()), 500);
        assert_eq!(origin, Origin::File { changed: true });
        assert_eq!(e.commit().sequence, 3);
        assert_eq!(e.commit().meta.comment, "loaded from /etc/gw.conf");
        let (e, origin) = boot(&dir, Some(host_default()), 600);
        assert_eq!(origin, Origin::File { changed: false });
        assert_eq!(e.commit().sequence, 3);
        let history: Vec<u64> = e.history().iter().map(|c| c.sequence).collect();
        assert_eq!(history, [3, 2, 1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_another_key_sealed_are_not_written_over_at_start() {
        let dir = tempdir("other-key");
        let (mut e, _) = boot(&dir, None, 100);
        let c = edited(&e, "set system host-name mine.example\n");
        e.commit_candidate(&c, &req("edit", None), 200).unwrap();
        drop(e);
        // Started with another token's key: nothing checks, the factory configuration
        // runs, and the slots are left as they were.
        let before: Vec<Vec<u8>> = (0..2)
            .map(|n| std::fs::read(dir.join("config").join(format!("slot-{n:02}"))).unwrap())
            .collect();
        let (other, origin, log) = Engine::boot(
            &dir,
            Arc::new(TestSeal([9; 32])),
            None,
            host_default(),
            300,
            60,
        )
        .unwrap();
        assert_eq!(origin, Origin::Factory);
        assert_eq!(other.running(), &host_default());
        assert!(
            log.iter().any(|l| l.contains("without storing it")),
            "{log:?}"
        );
        for (n, bytes) in before.iter().enumerate() {
            let now = std::fs::read(dir.join("config").join(format!("slot-{n:02}"))).unwrap();
            assert_eq!(&now, bytes, "slot {n} was written over");
        }
        drop(other);
        // The right key again: the history is all there.
        let (e, origin) = boot(&dir, None, 400);
        assert_eq!(origin, Origin::Stored);
        assert_eq!(e.running().system.host_name, "mine.example");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_candidate_is_refused_and_checks_list_every_problem() {
        let dir = tempdir("stale");
        let (mut e, _) = boot(&dir, None, 1);
        let first = edited(&e, "set system host-name one.example\n");
        let second = edited(&e, "set system host-name two.example\n");
        e.commit_candidate(&first, &req("1", None), 2).unwrap();
        let err = e.commit_candidate(&second, &req("2", None), 3).unwrap_err();
        assert!(err.to_string().contains("was committed since"), "{err}");
        assert_eq!(e.running().system.host_name, "one.example");
        let bad = edited(
            &e,
            "set route x.example concurrency 2\nset category INTERNAL ruleset NOPE\n",
        );
        match e.commit_candidate(&bad, &req("bad", None), 4).unwrap_err() {
            CommitError::Check(p) => assert_eq!(p.len(), 2, "{p:#?}"),
            other => panic!("{other}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unconfirmed_commit_rolls_back_even_across_a_restart() {
        let dir = tempdir("confirm");
        let (mut e, _) = boot(&dir, None, 1000);
        let c = edited(&e, "set system host-name risky.example\n");
        let seq = e.commit_candidate(&c, &req("try", Some(2)), 1000).unwrap();
        assert_eq!(e.pending_confirm(), Some((1120, 1)));
        assert_eq!(e.expire_confirm(1119).unwrap(), None);
        // A restart in between keeps the pending rollback.
        let (mut e, _) = boot(&dir, None, 1100);
        assert_eq!(e.commit().sequence, seq);
        assert_eq!(e.pending_confirm(), Some((1120, 1)));
        let back = e.expire_confirm(1120).unwrap().unwrap();
        assert_eq!(back, seq + 1);
        assert_eq!(e.running(), &host_default());
        assert!(e.commit().meta.comment.contains("was not confirmed"));
        assert_eq!(e.pending_confirm(), None);
        // Confirmed in time, it stays.
        let c = edited(&e, "set system host-name kept.example\n");
        e.commit_candidate(&c, &req("try again", Some(1)), 2000)
            .unwrap();
        assert!(e.confirm("admin", 2030).unwrap().is_some());
        assert_eq!(e.expire_confirm(5000).unwrap(), None);
        assert_eq!(e.running().system.host_name, "kept.example");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rollback_prepared_as_the_commit_is_confirmed_does_not_overwrite_it() {
        let dir = tempdir("confirm-race");
        let (mut e, _) = boot(&dir, None, 1000);
        let c = edited(&e, "set system host-name risky.example\n");
        e.commit_candidate(&c, &req("try", Some(1)), 1000).unwrap();
        // The timer's rollback has read the slots when the administrator confirms.
        let expiry = e.prepare_expiry(&e.slots().scan(), 1060).unwrap().unwrap();
        let confirmed = e.prepare_confirm("admin", 1059).unwrap().unwrap();
        e.write(confirmed).unwrap();
        let Err(err) = expiry.write() else {
            panic!("the rollback was written over the confirmed commit");
        };
        assert!(err.to_string().contains("committed since"), "{err}");
        let (e, _) = boot(&dir, None, 1061);
        assert_eq!(e.running().system.host_name, "risky.example");
        assert_eq!(e.pending_confirm(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_commit_confirmed_returns_to_the_last_confirmed_commit() {
        let dir = tempdir("confirm-twice");
        let (mut e, _) = boot(&dir, None, 1000);
        let c = edited(&e, "set system host-name risky.example\n");
        e.commit_candidate(&c, &req("try", Some(5)), 1000).unwrap();
        let c = edited(&e, "set system host-name riskier.example\n");
        e.commit_candidate(&c, &req("and more", Some(5)), 1100)
            .unwrap();
        assert_eq!(e.pending_confirm(), Some((1400, 1)));
        e.expire_confirm(1400).unwrap().unwrap();
        assert_eq!(e.running(), &host_default());
        assert_eq!(e.pending_confirm(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_run_of_commit_confirmed_keeps_the_commit_it_returns_to() {
        let dir = tempdir("confirm-run");
        let (mut e, _) = boot(&dir, None, 1000);
        // More unconfirmed commits than there are slots: the oldest is overwritten each
        // time, but never the last confirmed commit, which the rollback needs.
        for n in 0..crate::io::config::store::SLOTS as u64 + 3 {
            let c = edited(&e, &format!("set system host-name try{n}.example\n"));
            e.commit_candidate(&c, &req("again", Some(5)), 1000 + n)
                .unwrap();
            assert_eq!(e.pending_confirm().map(|p| p.1), Some(1));
        }
        let deadline = e.pending_confirm().unwrap().0;
        e.expire_confirm(deadline).unwrap().expect("rolled back");
        assert_eq!(e.running(), &host_default());
        assert_eq!(e.pending_confirm(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_confirmation_after_the_deadline_is_refused_and_the_commit_rolls_back() {
        let dir = tempdir("confirm-late");
        let (mut e, _) = boot(&dir, None, 1000);
        let c = edited(&e, "set system host-name risky.example\n");
        e.commit_candidate(&c, &req("try", Some(1)), 1000).unwrap();
        let err = e.confirm("cli", 5000).unwrap_err();
        assert!(err.to_string().contains("too late"), "{err}");
        assert_eq!(e.pending_confirm(), Some((1060, 1)));
        e.expire_confirm(5000).unwrap().unwrap();
        assert_eq!(e.running(), &host_default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_with_a_long_path_is_loaded_with_the_end_of_its_path() {
        let dir = tempdir("long-path");
        let long = format!("/{}gw.conf", "d/".repeat(200));
        let mut file = host_default();
        file.system.host_name = "from-file.example".into();
        let (e, origin, _) = Engine::boot(
            &dir,
            Arc::new(TestSeal([3; 32])),
            Some((Path::new(&long), file)),
            host_default(),
            1,
            60,
        )
        .unwrap();
        assert_eq!(origin, Origin::File { changed: true });
        let comment = &e.commit().meta.comment;
        assert!(
            comment.len() <= crate::proto::config::slot::MAX_COMMENT,
            "{comment}"
        );
        assert!(comment.starts_with("loaded from …") && comment.ends_with("/d/gw.conf"));
        assert_eq!(
            loaded_from(Path::new("/etc/gw.conf")),
            "loaded from /etc/gw.conf"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rollback_reaches_back_through_the_history() {
        let dir = tempdir("rollback");
        let (mut e, _) = boot(&dir, None, 1);
        for n in 1..=12 {
            let c = edited(&e, &format!("set service inbound max-connections {n}\n"));
            e.commit_candidate(&c, &req(&n.to_string(), None), n)
                .unwrap();
        }
        assert_eq!(e.rollback_candidate(0).unwrap().config, *e.running());
        let one = e.rollback_candidate(1).unwrap();
        assert_eq!(one.config.inbound.max_connections, 11);
        assert_eq!(
            e.rollback_candidate(10)
                .unwrap()
                .config
                .inbound
                .max_connections,
            2
        );
        assert!(e.rollback_candidate(11).is_err());
        e.commit_candidate(&one, &req("rollback 1", None), 99)
            .unwrap();
        assert_eq!(e.running().inbound.max_connections, 11);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_takes_a_commit_written_by_another_process() {
        let dir = tempdir("reload");
        let (mut e, _) = boot(&dir, None, 1);
        let (mut other, _) = boot(&dir, None, 2);
        let c = edited(&other, "set system host-name from-cli.example\n");
        other.commit_candidate(&c, &req("cli", None), 3).unwrap();
        let (changed, _) = e.reload(&e.slots().scan());
        assert!(changed);
        assert_eq!(e.running().system.host_name, "from-cli.example");
        assert_eq!(e.reload(&e.slots().scan()), (false, Vec::new()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
