//! The configuration slots on disk: commits written durably, the newest good one found
//! at boot, the history kept for `rollback`.
//!
//! The slots are [`SLOTS`] files `slot-00` … in `STATE/config/`, each holding one
//! record ([`crate::proto::config::slot`]). A commit takes the next sequence number and writes the slot
//! holding the oldest (or no, or a damaged) record: to a temporary file, fsynced,
//! renamed over the slot, and the directory fsynced; only then is it done. So the
//! newest good record is never the one being overwritten, and boot takes the valid
//! record with the highest sequence number whatever a power cut left. Commits from
//! several processes (the gateway, `drawbridge config` on a stopped gateway) are
//! serialized by an exclusive lock on `STATE/config/lock`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::proto::config::Config;
use crate::proto::config::slot::{self, CommitMeta, Record, Seal, SlotError};

/// Slot files: the current commit, ten for `rollback 1` … `rollback 10`, and one free.
pub const SLOTS: usize = 12;
/// How many earlier commits `rollback N` reaches.
pub const HISTORY: usize = SLOTS - 2;
/// The folder in the state directory.
pub const DIR: &str = "config";

/// A slot that did not hold a good record, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    pub slot: usize,
    /// The sequence number the record claims, if it got that far.
    pub claimed: Option<u64>,
    pub error: SlotError,
}

/// What a scan of the slots found.
#[derive(Debug)]
pub struct Scan {
    /// Good records, newest first.
    pub records: Vec<(usize, Record)>,
    /// Slots with something in them that is not a good record.
    pub damaged: Vec<Damaged>,
}

impl Scan {
    pub fn newest(&self) -> Option<&Record> {
        self.records.first().map(|(_, r)| r)
    }

    /// Damaged slots that claim to be newer than the newest good record: the log says
    /// start-up fell back past them.
    pub fn newer_damaged(&self) -> Vec<&Damaged> {
        let newest = self.newest().map_or(0, |r| r.sequence);
        self.damaged
            .iter()
            .filter(|d| d.claimed.is_some_and(|c| c > newest))
            .collect()
    }
}

/// The slots of one state directory.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Why a commit could not be written.
#[derive(Debug)]
pub enum StoreError {
    Io(io::Error),
    Slot(SlotError),
    /// The candidate was made from commit `parent`, but `newest` (by `by`) came since.
    Stale {
        parent: u64,
        newest: u64,
        by: String,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "configuration store: {e}"),
            StoreError::Slot(e) => write!(f, "configuration store: {e}"),
            StoreError::Stale { parent, newest, by } => write!(
                f,
                "the configuration was committed since this candidate was made from commit {parent}: commit {newest} by {by} is newer; nothing was merged, start again from it"
            ),
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> StoreError {
        StoreError::Io(e)
    }
}

/// Holds the store's lock until dropped.
struct Lock(#[allow(dead_code)] File);

impl Store {
    /// The store under `state_dir`, its folder made (mode 0700) when missing.
    pub fn open(state_dir: &Path) -> io::Result<Store> {
        let dir = state_dir.join(DIR);
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(Store { dir })
    }

    fn slot_path(&self, slot: usize) -> PathBuf {
        self.dir.join(format!("slot-{slot:02}"))
    }

    fn lock(&self) -> io::Result<Lock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join("lock"))?;
        // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Lock(file))
    }

    /// Every slot, checked.
    pub fn scan(&self, seal: &dyn Seal) -> Scan {
        let mut records = Vec::new();
        let mut damaged = Vec::new();
        for slot in 0..SLOTS {
            let bytes = match fs::read(self.slot_path(slot)) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    damaged.push(Damaged {
                        slot,
                        claimed: None,
                        error: SlotError::Payload(format!("unreadable: {e}")),
                    });
                    continue;
                }
            };
            match slot::decode(&bytes, seal) {
                Ok(record) => records.push((slot, record)),
                Err(error) => damaged.push(Damaged {
                    slot,
                    claimed: slot::claimed_sequence(&bytes),
                    error,
                }),
            }
        }
        records.sort_by_key(|(_, r)| std::cmp::Reverse(r.sequence));
        Scan { records, damaged }
    }

    /// The configuration of the record with the highest sequence number that decodes,
    /// its HMAC not checked: only for choosing the token that checks it (see
    /// `gateway::token_settings`).
    pub fn peek_newest(&self) -> Option<Config> {
        (0..SLOTS)
            .filter_map(|slot| fs::read(self.slot_path(slot)).ok())
            .filter_map(|bytes| slot::decode_unchecked(&bytes).ok())
            .max_by_key(|r| r.sequence)
            .map(|r| r.config)
    }

    /// Writes `config` as the next commit, durably; returns its sequence number. With
    /// `parent`, refuses unless the newest good commit is that one (a candidate made
    /// from an older configuration is stale).
    pub fn commit(
        &self,
        config: &Config,
        meta: &CommitMeta,
        seal: &dyn Seal,
        parent: Option<u64>,
    ) -> Result<u64, StoreError> {
        let _lock = self.lock()?;
        let scan = self.scan(seal);
        let newest = scan.newest().map_or(0, |r| r.sequence);
        if let Some(parent) = parent.filter(|p| *p != newest) {
            return Err(StoreError::Stale {
                parent,
                newest,
                by: scan
                    .newest()
                    .map(|r| r.meta.user.clone())
                    .unwrap_or_default(),
            });
        }
        // What a damaged slot claims is not trusted: the next number follows the newest
        // good record, and a damaged one never counts at boot.
        let sequence = scan.newest().map_or(0, |r| r.sequence).saturating_add(1);
        let slot = self.free_slot(&scan, meta.rollback_to);
        let bytes = slot::encode(sequence, meta, config, seal).map_err(StoreError::Slot)?;
        let tmp = self.dir.join(format!("slot-{slot:02}.tmp"));
        {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.slot_path(slot))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(sequence)
    }

    /// A damaged slot, else an empty one, else the one with the oldest record but
    /// `keep`: the commit a `commit confirmed` returns to, which must outlive any run of
    /// unconfirmed commits, or the rollback would find it gone.
    fn free_slot(&self, scan: &Scan, keep: Option<u64>) -> usize {
        if let Some(d) = scan.damaged.first() {
            return d.slot;
        }
        let used: Vec<usize> = scan.records.iter().map(|(s, _)| *s).collect();
        if let Some(empty) = (0..SLOTS).find(|s| !used.contains(s)) {
            return empty;
        }
        // INVARIANT: every slot holds a good record, oldest last; with SLOTS > 1 one
        // other than `keep` is always there.
        scan.records
            .iter()
            .rev()
            .find(|(_, r)| Some(r.sequence) != keep)
            .map_or(0, |(s, _)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::config::host_default;
    use crate::proto::config::slot::tests::TestSeal;
    use crate::proto::config::text::parse_into;

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("drawbridge-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn meta(comment: &str) -> CommitMeta {
        CommitMeta {
            time: 1,
            user: "test".into(),
            comment: comment.into(),
            ..CommitMeta::default()
        }
    }

    fn config_with(host: &str) -> Config {
        let mut c = host_default();
        parse_into(&mut c, &format!("set system host-name {host}\n")).unwrap();
        c
    }

    #[test]
    fn commits_count_up_and_the_newest_wins() {
        let dir = tempdir("count");
        let store = Store::open(&dir).unwrap();
        let seal = TestSeal([1; 32]);
        assert!(store.scan(&seal).newest().is_none());
        for n in 1..=30u64 {
            let seq = store
                .commit(
                    &config_with(&format!("h{n}.example")),
                    &meta("c"),
                    &seal,
                    None,
                )
                .unwrap();
            assert_eq!(seq, n);
        }
        let scan = store.scan(&seal);
        assert_eq!(scan.records.len(), SLOTS);
        assert_eq!(scan.newest().unwrap().sequence, 30);
        assert_eq!(
            scan.newest().unwrap().config.system.host_name,
            "h30.example"
        );
        assert_eq!(
            scan.records.last().unwrap().1.sequence,
            30 - SLOTS as u64 + 1
        );
        let mode = fs::metadata(dir.join(DIR)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let mode = fs::metadata(dir.join(DIR).join("slot-00"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Power loss: the newest record cut at every byte offset, or with any bit flipped,
    /// or signed with another key, or replaced by garbage, falls back to the one before.
    #[test]
    fn a_damaged_newest_record_falls_back_to_the_previous_good_one() {
        let dir = tempdir("damage");
        let store = Store::open(&dir).unwrap();
        let seal = TestSeal([1; 32]);
        store
            .commit(&config_with("old.example"), &meta("old"), &seal, None)
            .unwrap();
        store
            .commit(&config_with("new.example"), &meta("new"), &seal, None)
            .unwrap();
        let newest_slot = store.scan(&seal).records[0].0;
        let path = store.slot_path(newest_slot);
        let good = fs::read(&path).unwrap();
        let check = |what: &str| {
            let scan = store.scan(&seal);
            let newest = scan
                .newest()
                .unwrap_or_else(|| panic!("{what}: nothing good"));
            assert_eq!(newest.config.system.host_name, "old.example", "{what}");
            assert_eq!(newest.sequence, 1, "{what}");
        };
        for cut in 0..good.len() {
            fs::write(&path, &good[..cut]).unwrap();
            check(&format!("cut at {cut}"));
        }
        let mut x = 0x9e37_79b9_u64;
        for _ in 0..200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let bit = (x >> 33) as usize % (good.len() * 8);
            let mut damaged = good.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            fs::write(&path, &damaged).unwrap();
            check(&format!("bit {bit}"));
        }
        fs::write(
            &path,
            slot::encode(
                2,
                &meta("x"),
                &config_with("evil.example"),
                &TestSeal([2; 32]),
            )
            .unwrap(),
        )
        .unwrap();
        check("another key");
        let scan = store.scan(&seal);
        assert_eq!(scan.newer_damaged().len(), 1);
        assert_eq!(scan.newer_damaged()[0].error, SlotError::BadMac);
        // The next commit follows the newest good one and replaces the damaged record.
        let seq = store
            .commit(&config_with("next.example"), &meta("n"), &seal, None)
            .unwrap();
        assert_eq!(seq, 2);
        assert!(store.scan(&seal).damaged.is_empty());
        assert_eq!(
            store.scan(&seal).newest().unwrap().config.system.host_name,
            "next.example"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_parent_is_refused() {
        let dir = tempdir("stale");
        let store = Store::open(&dir).unwrap();
        let seal = TestSeal([1; 32]);
        assert_eq!(
            store
                .commit(&host_default(), &meta("a"), &seal, Some(0))
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .commit(&config_with("b.example"), &meta("b"), &seal, Some(1))
                .unwrap(),
            2
        );
        let err = store
            .commit(&config_with("c.example"), &meta("c"), &seal, Some(1))
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Stale {
                    parent: 1,
                    newest: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(store.scan(&seal).newest().unwrap().sequence, 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_of_garbage_has_no_good_record_and_does_not_panic() {
        let dir = tempdir("garbage");
        let store = Store::open(&dir).unwrap();
        let seal = TestSeal([1; 32]);
        for slot in 0..SLOTS {
            fs::write(store.slot_path(slot), vec![slot as u8; slot * 37]).unwrap();
        }
        let scan = store.scan(&seal);
        assert!(scan.newest().is_none());
        assert_eq!(scan.damaged.len(), SLOTS);
        assert!(scan.newer_damaged().is_empty(), "garbage claims nothing");
        let seq = store
            .commit(&host_default(), &meta("fresh"), &seal, None)
            .unwrap();
        assert_eq!(store.scan(&seal).newest().unwrap().sequence, seq);
        fs::remove_dir_all(&dir).unwrap();
    }
}
