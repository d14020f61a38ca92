//! The durable spool: messages on disk, recovered at start-up, acknowledged after a group commit.
//! **Invariant:** a message is acknowledged only once its files are synced, and the sync
//! (what waits on the disk) runs on the blocking pool, never on the executor.
//!
//! * [`id`]: queue ids, generated and parsed.
//! * [`envelope`]: the envelope types and their versioned, checksummed file format.
//! * [`spool`]: the files of each message: receive, finish, update, remove, recover.
//! * [`journal`]: the fast path for small messages: appended whole to a segment file.
//! * [`commit`]: the group commit that makes finished messages durable before the 250.
//!
//! This module knows files and the blocking pool; it knows nothing of SMTP sessions or
//! sockets. Every log line starts with the queue id.

pub mod commit;
pub mod journal;
pub mod spool;

pub use commit::{GroupCommit, Pending, SyncWork};
pub use journal::{JOURNAL_MESSAGE_MAX, Journal, JournalSync, delete_segment};
pub use spool::{
    CONTENT_EXT, ENVELOPE_EXT, Finished, INCOMING_BUFFER, Incoming, QUEUE_SUBDIR, Spool,
    SpoolFiles, Unread, read_only,
};

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, deleted with everything in it on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "drawbridge-queue-{name}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
