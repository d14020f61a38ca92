//! Group commit: makes finished messages durable, many messages per disk sync.
//!
//! A commit joins the open batch. If no sync is running, the caller starts one for the open
//! batch (everything pending so far) and a fresh batch opens; callers arriving while a sync
//! runs join the fresh batch and wait, and when the running sync ends the first of them to
//! run starts the next sync, for all of them. So a busy spool does one sync per sync
//! duration, whatever the message rate.
//!
//! The sync itself runs on the blocking pool (`smol::unblock`); the executor thread never
//! waits on the disk. Journal members need one `fdatasync` of each journal segment written
//! since the last sync: one sequential write for the whole batch. File members need more:
//! on Linux one `syncfs(2)` on the queue directory's filesystem, which writes back every
//! dirty file and directory entry and commits the filesystem's own journal (and, since
//! Linux 5.8, reports writeback errors of the filesystem); elsewhere each file of the batch
//! is fsynced, then the queue directory.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use smol::channel::{Receiver, Sender};

use super::journal::{Journal, JournalSync};
use super::spool::{CONTENT_EXT, ENVELOPE_EXT, Finished, Spool};
use crate::proto::queue::id::QueueId;

/// What one batch must make durable. Built on the executor thread, run on the blocking pool.
pub struct SyncWork {
    /// The queue directory, open.
    pub dir: Arc<File>,
    pub dir_path: PathBuf,
    /// Members stored as files.
    pub files: Vec<QueueId>,
    /// Journal segments (and the journal directory) written since the last sync.
    pub journal: JournalSync,
}

/// Makes one batch durable. Runs on the blocking pool.
type SyncFn = dyn Fn(&SyncWork) -> io::Result<()> + Send + Sync;

/// A message written and waiting to be made durable.
pub enum Pending {
    /// In its own files ([`Spool`]).
    File(Finished),
    /// In the journal, in this segment.
    Journal { id: QueueId, segment: u64 },
}

impl Pending {
    pub fn id(&self) -> &QueueId {
        match self {
            Pending::File(f) => &f.id,
            Pending::Journal { id, .. } => id,
        }
    }
}

/// The group commit of one spool. Single-threaded: use it from the executor thread.
pub struct GroupCommit {
    spool: Rc<Spool>,
    journal: Rc<RefCell<Journal>>,
    state: RefCell<State>,
    syncs: Cell<u64>,
    sync: Arc<SyncFn>,
}

struct State {
    /// The batch that new commits join; not yet syncing.
    open: Rc<Batch>,
    /// The batch whose sync was started last; it may have finished since.
    running: Option<Rc<Batch>>,
}

/// Messages synced together, and the outcome they share.
struct Batch {
    members: RefCell<Vec<QueueId>>,
    /// Set by the sync, on the blocking pool, before `sender` is dropped.
    result: Arc<OnceLock<io::Result<()>>>,
    /// Closed when the sync ends: every waiting member wakes.
    done: Receiver<()>,
    /// Taken by the sync, which drops it when done.
    sender: RefCell<Option<Sender<()>>>,
}

impl Batch {
    fn new() -> Batch {
        let (sender, done) = smol::channel::bounded(1);
        Batch {
            members: RefCell::new(Vec::new()),
            result: Arc::new(OnceLock::new()),
            done,
            sender: RefCell::new(Some(sender)),
        }
    }
}

impl GroupCommit {
    pub fn new(spool: Rc<Spool>, journal: Rc<RefCell<Journal>>) -> GroupCommit {
        GroupCommit::with_sync(spool, journal, Arc::new(sync_batch))
    }

    fn with_sync(
        spool: Rc<Spool>,
        journal: Rc<RefCell<Journal>>,
        sync: Arc<SyncFn>,
    ) -> GroupCommit {
        GroupCommit {
            spool,
            journal,
            state: RefCell::new(State {
                open: Rc::new(Batch::new()),
                running: None,
            }),
            syncs: Cell::new(0),
            sync,
        }
    }

    /// Syncs started so far (one per batch).
    pub fn syncs(&self) -> u64 {
        self.syncs.get()
    }

    /// Returns once the message (its two files and their directory entries, or its journal
    /// record) is on stable storage. On error the message is not accepted and is deleted
    /// from the spool; the same happens if this future is dropped before it completes.
    pub async fn commit(&self, pending: Pending) -> io::Result<()> {
        let batch = {
            let state = self.state.borrow();
            if let Pending::File(f) = &pending {
                state.open.members.borrow_mut().push(f.id.clone());
            }
            Rc::clone(&state.open)
        };
        let mut guard = DeleteUnlessCommitted {
            spool: &self.spool,
            journal: &self.journal,
            pending: Some(pending),
        };
        loop {
            if let Some(result) = batch.result.get() {
                return match result {
                    Ok(()) => {
                        guard.pending = None;
                        Ok(())
                    }
                    Err(e) => {
                        if let Some(p) = &guard.pending {
                            log::warn!(
                                "{}: sync failed, message not accepted, deleted: {e}",
                                p.id()
                            );
                        }
                        Err(copy_error(e))
                    }
                };
            }
            let running = self.state.borrow().running.clone();
            match running {
                Some(running) if running.result.get().is_none() => {
                    // Wait for the running sync: ours, or the one before ours. The channel
                    // only ever closes, so this returns Err when the sync ends.
                    let _ = running.done.recv().await;
                }
                // Nothing running and our batch unfinished: ours is the open batch.
                _ => self.start_open_batch(),
            }
        }
    }

    /// Moves the open batch to running and starts its sync on the blocking pool.
    fn start_open_batch(&self) {
        let batch = {
            let mut state = self.state.borrow_mut();
            let batch = std::mem::replace(&mut state.open, Rc::new(Batch::new()));
            state.running = Some(Rc::clone(&batch));
            batch
        };
        self.syncs.set(self.syncs.get().saturating_add(1));
        let work = SyncWork {
            dir: self.spool.dir_handle(),
            dir_path: self.spool.dir().to_path_buf(),
            files: batch.members.take(),
            journal: self.journal.borrow_mut().take_sync(),
        };
        let result = Arc::clone(&batch.result);
        let sender = batch.sender.take();
        let sync = Arc::clone(&self.sync);
        smol::unblock(move || {
            // A panicking sync must still give every member an answer, or they would wait on
            // a batch that never ends.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sync(&work)))
                .unwrap_or_else(|_| Err(io::Error::other("the sync panicked")));
            // Only this closure sets the result, once.
            let _ = result.set(outcome);
            drop(sender);
        })
        .detach();
    }
}

/// Deletes a message whose commit failed, or whose commit future is dropped before the
/// sync answered: it was never acknowledged and must not come back after a restart.
struct DeleteUnlessCommitted<'a> {
    spool: &'a Spool,
    journal: &'a RefCell<Journal>,
    /// `None` once committed.
    pending: Option<Pending>,
}

impl Drop for DeleteUnlessCommitted<'_> {
    fn drop(&mut self) {
        let removed = match self.pending.take() {
            None => return,
            Some(Pending::File(f)) => self.spool.remove(&f.id).map(|()| f.id),
            Some(Pending::Journal { id, segment }) => {
                self.journal.borrow_mut().done(&id, segment).map(|()| id)
            }
        };
        if let Err(e) = removed {
            log::warn!("cannot delete an uncommitted message: {e}");
        }
    }
}

/// The sync of one batch: the journal's segments, then the files if there are any.
fn sync_batch(work: &SyncWork) -> io::Result<()> {
    work.journal.run()?;
    if work.files.is_empty() {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    return sync_filesystem(&work.dir);
    #[cfg(not(target_os = "linux"))]
    return sync_each_file(&work.dir, &work.dir_path, &work.files);
}

/// An equal error for every member of a failed batch (`io::Error` is not `Clone`).
fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// One `syncfs(2)` for the whole filesystem of the queue directory.
#[cfg(target_os = "linux")]
fn sync_filesystem(dir: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `dir` owns the descriptor and keeps it open for the duration of the call;
    // syncfs reads nothing from our memory.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// fsync of both files of every member, then of the queue directory. A member whose files
/// are gone (deleted meanwhile) needs nothing.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn sync_each_file(dir: &File, dir_path: &Path, members: &[QueueId]) -> io::Result<()> {
    for id in members {
        for ext in [CONTENT_EXT, ENVELOPE_EXT] {
            let mut path = dir_path.join(id.as_str());
            path.set_extension(ext);
            match File::open(&path) {
                Ok(file) => file.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    dir.sync_all()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Condvar, Mutex};

    use super::super::tests::TempDir;
    use super::*;
    use crate::proto::queue::envelope::tests::sample;

    fn finish_one(spool: &Spool, content: &[u8]) -> Pending {
        let mut incoming = spool.create(1_700_000_000).unwrap();
        incoming.write(content).unwrap();
        let env = sample(incoming.id.clone(), content.len() as u64);
        Pending::File(incoming.finish(&env).unwrap())
    }

    fn journal(tmp: &TempDir) -> Rc<RefCell<Journal>> {
        Rc::new(RefCell::new(Journal::open(tmp.path()).unwrap().0))
    }

    /// Runs `count` commits as concurrent tasks; `before_run` sees the executor once every
    /// task has been polled once.
    fn commit_concurrently(
        commit: &Rc<GroupCommit>,
        spool: &Spool,
        count: usize,
        before_run: impl FnOnce(),
    ) -> Vec<io::Result<()>> {
        let ex = smol::LocalExecutor::new();
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let finished = finish_one(spool, format!("message {i}\r\n").as_bytes());
                let commit = Rc::clone(commit);
                ex.spawn(async move { commit.commit(finished).await })
            })
            .collect();
        while ex.try_tick() {}
        before_run();
        smol::block_on(ex.run(async {
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await);
            }
            results
        }))
    }

    #[test]
    fn a_lone_commit_completes_and_survives_a_restart() {
        let tmp = TempDir::new("commit-lone");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let spool = Rc::new(spool);
        let commit = GroupCommit::new(Rc::clone(&spool), journal(&tmp));
        let finished = finish_one(&spool, b"hello\r\n");
        let id = finished.id().clone();
        smol::block_on(commit.commit(finished)).unwrap();
        assert_eq!(commit.syncs(), 1);
        let (_, queued) = Spool::open(tmp.path()).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, id);
    }

    #[test]
    fn concurrent_commits_share_syncs() {
        let tmp = TempDir::new("commit-many");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let spool = Rc::new(spool);
        let commit = Rc::new(GroupCommit::new(Rc::clone(&spool), journal(&tmp)));
        let results = commit_concurrently(&commit, &spool, 50, || {});
        assert_eq!(results.len(), 50);
        assert!(results.iter().all(|r| r.is_ok()));
        assert!(commit.syncs() >= 1);
        assert!(commit.syncs() < 50, "{} syncs", commit.syncs());
        let (_, queued) = Spool::open(tmp.path()).unwrap();
        assert_eq!(queued.len(), 50);
    }

    /// A sync that waits for the test to open a gate, then syncs for real.
    fn gated_sync(
        gate: Arc<(Mutex<bool>, Condvar)>,
        batches: Arc<Mutex<Vec<usize>>>,
    ) -> Arc<SyncFn> {
        Arc::new(move |work: &SyncWork| {
            let (open, cv) = &*gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            drop(open);
            batches.lock().unwrap().push(work.files.len());
            sync_each_file(&work.dir, &work.dir_path, &work.files)
        })
    }

    #[test]
    fn commits_arriving_during_a_sync_share_the_next_one() {
        let tmp = TempDir::new("commit-gated");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let spool = Rc::new(spool);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let sync = gated_sync(Arc::clone(&gate), Arc::clone(&batches));
        let commit = Rc::new(GroupCommit::with_sync(
            Rc::clone(&spool),
            journal(&tmp),
            sync,
        ));
        let results = commit_concurrently(&commit, &spool, 50, || {
            // Every commit has joined a batch; the first sync is still held at the gate.
            assert_eq!(commit.syncs(), 1);
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        });
        assert!(results.iter().all(|r| r.is_ok()));
        // The first caller's batch, then everyone who arrived while it ran.
        assert_eq!(commit.syncs(), 2);
        assert_eq!(*batches.lock().unwrap(), vec![1, 49]);
        let (_, queued) = Spool::open(tmp.path()).unwrap();
        assert_eq!(queued.len(), 50);
    }

    #[test]
    fn a_failed_sync_fails_every_member_and_deletes_them() {
        let tmp = TempDir::new("commit-fail");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let spool = Rc::new(spool);
        // The failing sync waits at a gate until every commit has joined a batch, so the
        // batches are the same on every run: the first caller's, then everyone else's.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let held = Arc::clone(&gate);
        let sync: Arc<SyncFn> = Arc::new(move |_: &SyncWork| {
            let (open, cv) = &*held;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Err(io::Error::from_raw_os_error(libc::EIO))
        });
        let commit = Rc::new(GroupCommit::with_sync(
            Rc::clone(&spool),
            journal(&tmp),
            sync,
        ));
        let results = commit_concurrently(&commit, &spool, 10, || {
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        });
        assert_eq!(results.len(), 10);
        for result in results {
            assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO));
        }
        assert_eq!(commit.syncs(), 2);
        assert_eq!(std::fs::read_dir(spool.dir()).unwrap().count(), 0);
        // The commit keeps working after a failure.
        let ok: Arc<SyncFn> = Arc::new(|_: &SyncWork| Ok(()));
        let commit = GroupCommit::with_sync(Rc::clone(&spool), journal(&tmp), ok);
        smol::block_on(commit.commit(finish_one(&spool, b"x"))).unwrap();
        assert_eq!(std::fs::read_dir(spool.dir()).unwrap().count(), 2);
    }

    #[test]
    fn a_dropped_commit_deletes_its_message_and_spares_the_others() {
        let tmp = TempDir::new("commit-drop");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let spool = Rc::new(spool);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let sync = gated_sync(Arc::clone(&gate), Arc::clone(&batches));
        let commit = GroupCommit::with_sync(Rc::clone(&spool), journal(&tmp), sync);
        let first = finish_one(&spool, b"first");
        let second = finish_one(&spool, b"second");
        let kept = second.id().clone();
        let ex = smol::LocalExecutor::new();
        // The first commit starts the sync, then is dropped while the sync waits at the gate.
        let mut first_commit = Box::pin(commit.commit(first));
        assert!(smol::block_on(smol::future::poll_once(&mut first_commit)).is_none());
        drop(first_commit);
        assert_eq!(std::fs::read_dir(spool.dir()).unwrap().count(), 2);
        let second_commit = ex.spawn(commit.commit(second));
        while ex.try_tick() {}
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        smol::block_on(ex.run(second_commit)).unwrap();
        assert_eq!(commit.syncs(), 2);
        let (_, queued) = Spool::open(tmp.path()).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, kept);
    }

    #[test]
    fn the_file_by_file_sync_tolerates_deleted_members() {
        let tmp = TempDir::new("commit-each");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let present = finish_one(&spool, b"here").id().clone();
        let gone = finish_one(&spool, b"gone").id().clone();
        spool.remove(&gone).unwrap();
        let dir = File::open(spool.dir()).unwrap();
        sync_each_file(&dir, spool.dir(), &[present, gone]).unwrap();
    }

    /// Appends `count` journal messages and commits them as concurrent tasks.
    fn commit_journal_concurrently(
        commit: &Rc<GroupCommit>,
        journal: &RefCell<Journal>,
        count: usize,
    ) -> Vec<io::Result<()>> {
        let ex = smol::LocalExecutor::new();
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let id = QueueId::from_value(0x5000 + i as u64);
                let content = format!("journal message {i}\r\n");
                let env = sample(id.clone(), content.len() as u64);
                let segment = journal
                    .borrow_mut()
                    .append(&env, content.as_bytes())
                    .unwrap();
                let commit = Rc::clone(commit);
                ex.spawn(async move { commit.commit(Pending::Journal { id, segment }).await })
            })
            .collect();
        smol::block_on(ex.run(async {
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await);
            }
            results
        }))
    }

    #[test]
    fn journal_commits_share_syncs_and_survive_a_restart() {
        let tmp = TempDir::new("commit-journal");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let spool = Rc::new(spool);
        let journal = journal(&tmp);
        let commit = Rc::new(GroupCommit::new(Rc::clone(&spool), Rc::clone(&journal)));
        let results = commit_journal_concurrently(&commit, &journal, 50);
        assert!(results.iter().all(|r| r.is_ok()));
        assert!(
            commit.syncs() >= 1 && commit.syncs() < 50,
            "{} syncs",
            commit.syncs()
        );
        drop(commit);
        drop(journal);
        let (_, recovered) = Journal::open(tmp.path()).unwrap();
        assert_eq!(recovered.len(), 50);
    }

    #[test]
    fn a_failed_journal_sync_retires_its_records() {
        let tmp = TempDir::new("commit-journal-fail");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let spool = Rc::new(spool);
        let journal = journal(&tmp);
        let sync: Arc<SyncFn> = Arc::new(|work: &SyncWork| {
            if work.files.is_empty() {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        });
        let commit = Rc::new(GroupCommit::with_sync(
            Rc::clone(&spool),
            Rc::clone(&journal),
            sync,
        ));
        let results = commit_journal_concurrently(&commit, &journal, 5);
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap_err().raw_os_error() == Some(libc::EIO))
        );
        drop(commit);
        drop(journal);
        // Refused with 451: none of them may come back after a restart.
        let (_, recovered) = Journal::open(tmp.path()).unwrap();
        assert!(recovered.is_empty());
    }

    #[test]
    fn a_message_appended_while_its_segment_failed_to_sync_is_refused_too() {
        let tmp = TempDir::new("commit-journal-poison");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let spool = Rc::new(spool);
        let journal = journal(&tmp);
        // The first sync is held until released, then its segment's fdatasync fails;
        // the disk answers every later sync.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let first = Arc::new(AtomicBool::new(true));
        let sync: Arc<SyncFn> = Arc::new({
            let gate = Arc::clone(&gate);
            move |work: &SyncWork| {
                let eio = |_: &File| Err(io::Error::from_raw_os_error(libc::EIO));
                let fine = |_: &File| Ok(());
                if first.swap(false, Ordering::SeqCst) {
                    let mut open = gate.0.lock().unwrap();
                    while !*open {
                        open = gate.1.wait(open).unwrap();
                    }
                    work.journal.run_with(&eio, &fine)
                } else {
                    work.journal.run_with(&fine, &fine)
                }
            }
        });
        let commit = Rc::new(GroupCommit::with_sync(
            Rc::clone(&spool),
            Rc::clone(&journal),
            sync,
        ));
        let ex = smol::LocalExecutor::new();
        let append = |n: u64| {
            let id = QueueId::from_value(0x6000 + n);
            let env = sample(id.clone(), 6);
            let segment = journal.borrow_mut().append(&env, b"body\r\n").unwrap();
            let commit = Rc::clone(&commit);
            (segment, async move {
                commit.commit(Pending::Journal { id, segment }).await
            })
        };
        let (segment_a, a) = append(1);
        let a = ex.spawn(a);
        while ex.try_tick() {}
        // The sync of A runs; B is written to the same segment meanwhile.
        let (segment_b, b) = append(2);
        assert_eq!(segment_a, segment_b);
        let b = ex.spawn(b);
        while ex.try_tick() {}
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let (a, b) = smol::block_on(ex.run(async { (a.await, b.await) }));
        assert_eq!(a.unwrap_err().raw_os_error(), Some(libc::EIO));
        // B's own fdatasync would succeed, over records the disk may never have taken.
        assert!(b.unwrap_err().to_string().contains("earlier sync"));
        // The next message goes to a new segment and is accepted.
        let (segment_c, c) = append(3);
        assert_ne!(segment_c, segment_a);
        smol::block_on(ex.run(c)).unwrap();
        drop(commit);
        drop(journal);
        let (_, recovered) = Journal::open(tmp.path()).unwrap();
        let ids: Vec<_> = recovered.iter().map(|r| r.env.id.clone()).collect();
        assert_eq!(ids, vec![QueueId::from_value(0x6003)]);
    }

    #[test]
    fn a_panicking_sync_fails_its_members_instead_of_hanging_them() {
        let tmp = TempDir::new("commit-panic");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let spool = Rc::new(spool);
        let sync: Arc<SyncFn> = Arc::new(|_: &SyncWork| panic!("disk driver bug"));
        let commit = Rc::new(GroupCommit::with_sync(
            Rc::clone(&spool),
            journal(&tmp),
            sync,
        ));
        let results = commit_concurrently(&commit, &spool, 5, || {});
        assert!(results.iter().all(|r| r.is_err()));
    }
}
