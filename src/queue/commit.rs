//! Group commit: makes finished messages durable, many messages per disk sync.
//!
//! A commit joins the open batch. If no sync is running, the caller starts one for the open
//! batch (everything pending so far) and a fresh batch opens; callers arriving while a sync
//! runs join the fresh batch and wait, and when the running sync ends the first of them to
//! run starts the next sync, for all of them. So a busy spool does one sync per sync
//! duration, whatever the message rate.
//!
//! The sync itself runs on the blocking pool (`smol::unblock`); the executor thread never
//! waits on the disk. On Linux it is one `syncfs(2)` on the queue directory's filesystem,
//! which writes back every dirty file and directory entry and commits the journal (and,
//! since Linux 5.8, reports writeback errors of the filesystem). Elsewhere each file of the
//! batch is fsynced, then the queue directory.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use smol::channel::{Receiver, Sender};

use super::id::QueueId;
use super::spool::{CONTENT_EXT, ENVELOPE_EXT, Finished, Spool};

/// Makes one batch durable: `(queue directory handle, queue directory path, members)`.
/// Runs on the blocking pool.
type SyncFn = dyn Fn(&File, &Path, &[QueueId]) -> io::Result<()> + Send + Sync;

/// The group commit of one spool. Single-threaded: use it from the executor thread.
pub struct GroupCommit {
    spool: Rc<Spool>,
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
    pub fn new(spool: Rc<Spool>) -> GroupCommit {
        #[cfg(target_os = "linux")]
        let sync: Arc<SyncFn> = Arc::new(sync_filesystem);
        #[cfg(not(target_os = "linux"))]
        let sync: Arc<SyncFn> = Arc::new(sync_each_file);
        GroupCommit::with_sync(spool, sync)
    }

    fn with_sync(spool: Rc<Spool>, sync: Arc<SyncFn>) -> GroupCommit {
        GroupCommit {
            spool,
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

    /// Returns once the message's two files and their directory entries are on stable
    /// storage. On error the message is not accepted and is deleted from the spool; the same
    /// happens if this future is dropped before it completes.
    pub async fn commit(&self, finished: Finished) -> io::Result<()> {
        let id = finished.id;
        let batch = {
            let state = self.state.borrow();
            state.open.members.borrow_mut().push(id.clone());
            Rc::clone(&state.open)
        };
        let mut guard = DeleteUnlessCommitted {
            spool: &self.spool,
            id: Some(id),
        };
        loop {
            if let Some(result) = batch.result.get() {
                return match (result, guard.id.take()) {
                    (Ok(()), _) => Ok(()),
                    (Err(e), id) => {
                        if let Some(id) = id {
                            log::warn!("{id}: sync failed, message not accepted, deleted: {e}");
                            if let Err(e) = self.spool.remove(&id) {
                                log::warn!("{id}: cannot delete uncommitted message: {e}");
                            }
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
        let members = batch.members.take();
        let result = Arc::clone(&batch.result);
        let sender = batch.sender.take();
        let dir = self.spool.dir_handle();
        let dir_path: PathBuf = self.spool.dir().to_path_buf();
        let sync = Arc::clone(&self.sync);
        smol::unblock(move || {
            let outcome = sync(&dir, &dir_path, &members);
            // Only this closure sets the result, once.
            let _ = result.set(outcome);
            drop(sender);
        })
        .detach();
    }
}

/// Deletes a message whose commit future is dropped before the sync answered.
struct DeleteUnlessCommitted<'a> {
    spool: &'a Spool,
    /// `None` once committed.
    id: Option<QueueId>,
}

impl Drop for DeleteUnlessCommitted<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if let Err(e) = self.spool.remove(&id) {
                log::warn!("{id}: cannot delete uncommitted message: {e}");
            }
        }
    }
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
fn sync_filesystem(dir: &File, _: &Path, _: &[QueueId]) -> io::Result<()> {
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
    use std::sync::{Condvar, Mutex};

    use super::super::envelope::tests::sample;
    use super::super::tests::TempDir;
    use super::*;

    fn finish_one(spool: &Spool, content: &[u8]) -> Finished {
        let mut incoming = spool.create(1_700_000_000).unwrap();
        incoming.write(content).unwrap();
        let env = sample(incoming.id.clone(), content.len() as u64);
        incoming.finish(&env).unwrap()
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
        let commit = GroupCommit::new(Rc::clone(&spool));
        let finished = finish_one(&spool, b"hello\r\n");
        let id = finished.id.clone();
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
        let commit = Rc::new(GroupCommit::new(Rc::clone(&spool)));
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
        Arc::new(move |dir: &File, path: &Path, members: &[QueueId]| {
            let (open, cv) = &*gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            drop(open);
            batches.lock().unwrap().push(members.len());
            sync_each_file(dir, path, members)
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
        let commit = Rc::new(GroupCommit::with_sync(Rc::clone(&spool), sync));
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
        let sync: Arc<SyncFn> = Arc::new(|_: &File, _: &Path, _: &[QueueId]| {
            Err(io::Error::from_raw_os_error(libc::EIO))
        });
        let commit = Rc::new(GroupCommit::with_sync(Rc::clone(&spool), sync));
        let results = commit_concurrently(&commit, &spool, 10, || {});
        assert_eq!(results.len(), 10);
        for result in results {
            assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO));
        }
        assert!(commit.syncs() >= 1 && commit.syncs() < 10);
        assert_eq!(std::fs::read_dir(spool.dir()).unwrap().count(), 0);
        // The commit keeps working after a failure.
        let ok: Arc<SyncFn> = Arc::new(|_: &File, _: &Path, _: &[QueueId]| Ok(()));
        let commit = GroupCommit::with_sync(Rc::clone(&spool), ok);
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
        let commit = GroupCommit::with_sync(Rc::clone(&spool), sync);
        let first = finish_one(&spool, b"first");
        let second = finish_one(&spool, b"second");
        let kept = second.id.clone();
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
        let present = finish_one(&spool, b"here");
        let gone = finish_one(&spool, b"gone");
        spool.remove(&gone.id).unwrap();
        let dir = File::open(spool.dir()).unwrap();
        sync_each_file(&dir, spool.dir(), &[present.id, gone.id]).unwrap();
    }
}
