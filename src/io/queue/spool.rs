//! The spool directory: one `<id>.msg` (content) and one `<id>.env` (envelope) per message.
//!
//! Life of a message, and what a crash at each point leaves behind:
//!
//! 1. [`Spool::create`] makes `<id>.msg` (create-new) and [`Incoming::write`] streams the
//!    content into it. A crash leaves a `.msg` without `.env`: discarded at start-up.
//! 2. [`Incoming::finish`] writes `<id>.env`, without fsync. A crash may leave a torn `.env`,
//!    or a `.msg` shorter than the envelope says: discarded at start-up. The client has not
//!    been answered yet, so nothing acknowledged is lost.
//! 3. [`GroupCommit::commit`](super::GroupCommit::commit) makes both files and their directory
//!    entries durable; only then does the SMTP layer answer 250.
//! 4. [`Spool::update`] replaces the envelope by rename, without fsync: a lost update only
//!    means a recipient may be tried again.
//! 5. [`Spool::remove`] unlinks the envelope, then the content: a crash in between leaves a
//!    `.msg` alone, discarded at start-up.
//!
//! Sessions write a message's files with plain `std::fs` calls on the executor thread: they
//! go to the page cache and do not wait for the disk, and the commit's sync runs on the
//! blocking pool. The queue manager does every file operation of its own through
//! [`SpoolFiles`] on the blocking pool.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::io::notify;
use crate::proto::queue::envelope::{ENVELOPE_MAX_FILE, Envelope, EnvelopeError};
use crate::proto::queue::id::{QUEUE_ID_MAX_LEN, QueueId};

/// The spool's folder under the state directory given to [`Spool::open`].
pub const QUEUE_SUBDIR: &str = "queue";

/// Extension of a message's content file.
pub const CONTENT_EXT: &str = "msg";

/// Extension of a message's envelope file.
pub const ENVELOPE_EXT: &str = "env";

/// Extension of an envelope being replaced by [`Spool::update`].
const UPDATE_EXT: &str = "env.tmp";

/// Write buffer of one message being received: 64 KiB, allocated when the message is
/// created, so the worst case is 64 KiB times the number of concurrent DATA transactions.
/// Writes of that size or more go straight to the file.
pub const INCOMING_BUFFER: usize = 64 * 1024;

/// How many consecutive ids [`Spool::create`] tries when the file already exists (a clock
/// that went backwards over ids still in the spool) before it gives up.
const CREATE_ATTEMPTS: u32 = 64;

/// The spool of one gateway. Single-threaded: share it with `Rc`.
pub struct Spool {
    /// `<state dir>/queue`.
    queue_dir: PathBuf,
    /// The same folder, for the file operations that run on the blocking pool.
    files: SpoolFiles,
    /// The queue directory, open for the commit's sync. `Arc` because the sync runs on the
    /// blocking pool.
    dir_handle: Arc<File>,
    /// The value of the last id handed out or recovered; new ids are larger.
    last_id: Cell<u64>,
}

/// The spool's per-message file operations, which need nothing but the folder's path:
/// cheap to clone and `Send`, so the queue manager runs them on the blocking pool.
#[derive(Clone, Debug)]
pub struct SpoolFiles {
    queue_dir: PathBuf,
}

impl SpoolFiles {
    /// `<queue dir>/<id>.<ext>`, for a valid id only: a forged id never names a path.
    pub fn path(&self, id: &QueueId, ext: &str) -> io::Result<PathBuf> {
        if !id.is_valid() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid queue id {:?}", id.as_str()),
            ));
        }
        Ok(file_path_in(&self.queue_dir, id, ext))
    }

    /// Replaces a message's envelope atomically (write a temporary file, rename it over).
    /// Not synced: after a crash the previous envelope may come back, which only means a
    /// recipient may be tried again.
    pub fn update(&self, env: &Envelope) -> io::Result<()> {
        let bytes = env.encode()?;
        let tmp = self.path(&env.id, UPDATE_EXT)?;
        let path = self.path(&env.id, ENVELOPE_EXT)?;
        let written = write_new_file(&tmp, &bytes).and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            remove_if_present(&tmp);
        }
        written
    }

    /// The envelope of a queued message.
    pub fn load(&self, id: &QueueId) -> io::Result<Envelope> {
        let env = read_envelope(&self.path(id, ENVELOPE_EXT)?)?;
        if env.id != *id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{id}: envelope names another id ({})", env.id),
            ));
        }
        Ok(env)
    }

    /// The whole content of a queued message.
    pub fn read_content(&self, id: &QueueId) -> io::Result<Vec<u8>> {
        fs::read(self.path(id, CONTENT_EXT)?)
    }

    /// Deletes a message. Missing files are not an error.
    pub fn remove(&self, id: &QueueId) -> io::Result<()> {
        // Envelope first: a crash in between leaves content alone, which start-up discards.
        for ext in [ENVELOPE_EXT, CONTENT_EXT] {
            match fs::remove_file(self.path(id, ext)?) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes a whole message (content, then envelope) under `env.id`, not synced: give
    /// the result to the group commit. On error nothing is left behind.
    pub fn write_message(&self, env: &Envelope, content: &[u8]) -> io::Result<Finished> {
        let mut incoming = self.create(env.id.clone())?;
        incoming.write(content)?;
        incoming.finish(env)
    }

    /// The first `max` octets of a message's content, and whether that is all of it.
    pub fn read_prefix(&self, id: &QueueId, max: usize) -> io::Result<(Vec<u8>, bool)> {
        let file = File::open(self.path(id, CONTENT_EXT)?)?;
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        let mut bytes = Vec::with_capacity(max.min(64 * 1024));
        file.take(limit).read_to_end(&mut bytes)?;
        let whole = bytes.len() <= max;
        bytes.truncate(max);
        Ok((bytes, whole))
    }

    /// Starts a message under `id`; fails with `AlreadyExists` if its content file is
    /// there already.
    fn create(&self, id: QueueId) -> io::Result<Incoming> {
        let path = self.path(&id, CONTENT_EXT)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Incoming {
            id,
            writer: Some(BufWriter::with_capacity(INCOMING_BUFFER, file)),
            written: 0,
            path,
            finished: false,
        })
    }
}

/// A message being received: its content file is open and growing.
///
/// Call [`Incoming::write`] for each piece of content, then [`Incoming::finish`] with the
/// envelope, or [`Incoming::abort`]. Dropping it unfinished deletes the content file.
pub struct Incoming {
    pub id: QueueId,
    /// `Some` until the value is dropped; `Option` so that drop can close the file without
    /// flushing a buffer that is about to be deleted.
    writer: Option<BufWriter<File>>,
    /// Octets handed to `write` so far.
    written: u64,
    /// `<id>.msg`.
    path: PathBuf,
    /// Set once both files are written; until then drop deletes them.
    finished: bool,
}

/// A message whose two files are written but not yet durable: give it to
/// [`GroupCommit::commit`](super::GroupCommit::commit). One that is never committed is still
/// in the spool (and comes back after a restart): remove it with [`Spool::remove`].
#[derive(Debug)]
pub struct Finished {
    pub id: QueueId,
}

/// What the start-up scan found of one queued message, not yet read: give it to
/// [`Spool::take`].
pub struct Unread {
    id: QueueId,
    found: Found,
}

/// What start-up found for one id.
#[derive(Default)]
struct Found {
    /// Length of `<id>.msg`, if there is one, or why it could not be examined.
    content_len: Option<io::Result<u64>>,
    envelope: bool,
    /// Leftover temporary files of this id.
    stale: Vec<PathBuf>,
}

/// How reading an envelope file went wrong: the disk, or the bytes.
enum ReadError {
    Io(io::Error),
    Bad(EnvelopeError),
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Io(e) => e,
            ReadError::Bad(e) => e.into(),
        }
    }
}

impl Spool {
    /// Opens (creating if needed) the spool under the state directory `dir`, discards what a
    /// crash left half-written, and returns the queued messages sorted by arrival.
    pub fn open(dir: &Path) -> io::Result<(Spool, Vec<Envelope>)> {
        let (spool, found) = Spool::open_unread(dir)?;
        let mut queued: Vec<Envelope> = found.into_iter().filter_map(|f| spool.take(f)).collect();
        sort_by_arrival(&mut queued);
        Ok((spool, queued))
    }

    /// [`Spool::open`] without reading the envelopes: what the scan found of each message,
    /// in id order (the order ids were given out in). [`Spool::take`] checks each one,
    /// reading its envelope once, so that a start with a large queue never holds every
    /// envelope at once.
    pub fn open_unread(dir: &Path) -> io::Result<(Spool, Vec<Unread>)> {
        let queue_dir = dir.join(QUEUE_SUBDIR);
        let existed = queue_dir.is_dir();
        fs::create_dir_all(&queue_dir)?;
        let dir_handle = File::open(&queue_dir)?;
        if !existed {
            // A new spool: make its own directory entry durable once, so that the commits'
            // syncs of the queue directory are enough from now on.
            dir_handle.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        let spool = Spool {
            files: SpoolFiles {
                queue_dir: queue_dir.clone(),
            },
            queue_dir,
            dir_handle: Arc::new(dir_handle),
            last_id: Cell::new(0),
        };
        let found = spool.scan()?;
        let last = found.iter().filter_map(|f| f.id.value()).max();
        spool.last_id.set(last.unwrap_or(0));
        Ok((spool, found))
    }

    /// The queue directory (`<state dir>/queue`), which holds the message files.
    pub fn dir(&self) -> &Path {
        &self.queue_dir
    }

    /// The per-message file operations, for the blocking pool.
    pub fn files(&self) -> SpoolFiles {
        self.files.clone()
    }

    /// The open queue directory, for the commit's sync.
    pub(crate) fn dir_handle(&self) -> Arc<File> {
        Arc::clone(&self.dir_handle)
    }

    /// Starts a new message; `now_unix` is the time in unix seconds.
    pub fn create(&self, now_unix: u64) -> io::Result<Incoming> {
        self.create_at(now_unix.saturating_mul(1_000_000))
    }

    /// Starts a new message; `now_micros` is the time in unix microseconds. The id comes from
    /// the time and a counter, and is larger than every id this spool handed out or
    /// recovered, so ids stay unique even if the clock stalls or steps back.
    pub fn create_at(&self, now_micros: u64) -> io::Result<Incoming> {
        for _ in 0..CREATE_ATTEMPTS {
            match self.create_named(self.allocate_id(now_micros)) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => return other,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free queue id",
        ))
    }

    /// A fresh id for `now_micros` (unix microseconds): larger than every id this spool
    /// handed out or saw, so ids stay unique even if the clock stalls or steps back.
    pub fn allocate_id(&self, now_micros: u64) -> QueueId {
        let value = QueueId::value_at(now_micros, 0).max(self.last_id.get().wrapping_add(1));
        self.last_id.set(value);
        QueueId::from_value(value)
    }

    /// Records an id in use elsewhere (the journal), so it is never handed out again.
    pub fn observe_id(&self, id: &QueueId) {
        if let Some(value) = id.value() {
            self.last_id.set(self.last_id.get().max(value));
        }
    }

    /// Starts a message under `id` (from [`Spool::allocate_id`]); fails with
    /// `AlreadyExists` if its content file is there already.
    pub fn create_named(&self, id: QueueId) -> io::Result<Incoming> {
        self.files.create(id)
    }

    /// The whole content of a queued message.
    pub fn read_content(&self, id: &QueueId) -> io::Result<Vec<u8>> {
        self.files.read_content(id)
    }

    /// The envelope of a queued message.
    pub fn load(&self, id: &QueueId) -> io::Result<Envelope> {
        self.files.load(id)
    }

    /// Every readable envelope in the spool, sorted by arrival. This includes messages that
    /// are finished but whose commit is still running. Unreadable envelopes are logged and
    /// skipped; start-up is what cleans them up.
    pub fn list(&self) -> io::Result<Vec<Envelope>> {
        let mut envelopes = Vec::new();
        for entry in fs::read_dir(&self.queue_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(FileName::Envelope(id)) = name.to_str().map(classify) else {
                continue;
            };
            match self.load(&id) {
                Ok(env) => envelopes.push(env),
                // Removed since the directory was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("{id}: envelope unreadable, skipped: {e}"),
            }
        }
        sort_by_arrival(&mut envelopes);
        Ok(envelopes)
    }

    /// Replaces a message's envelope atomically (write a temporary file, rename it over).
    /// Not synced: after a crash the previous envelope may come back, which only means a
    /// recipient may be tried again.
    pub fn update(&self, env: &Envelope) -> io::Result<()> {
        self.files.update(env)
    }

    /// Deletes a message. Missing files are not an error.
    pub fn remove(&self, id: &QueueId) -> io::Result<()> {
        self.files.remove(id)
    }

    /// `<queue dir>/<id>.<ext>`, for a valid id only: a forged id never names a path.
    pub(crate) fn file_path(&self, id: &QueueId, ext: &str) -> io::Result<PathBuf> {
        self.files.path(id, ext)
    }

    /// The start-up scan: what each id has in the spool, by id.
    fn scan(&self) -> io::Result<Vec<Unread>> {
        let mut found: BTreeMap<QueueId, Found> = BTreeMap::new();
        for entry in fs::read_dir(&self.queue_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(kind) = name.to_str().map(classify) else {
                log::warn!("{:?}: ignoring unknown file in the spool", name);
                continue;
            };
            match kind {
                FileName::Content(id) => {
                    // Metadata from the directory entry: gone since, or not a file, is no
                    // content; a disk that fails to tell is not.
                    let len = match entry.metadata() {
                        Ok(m) if m.is_file() => Some(Ok(m.len())),
                        Ok(_) => None,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => Some(Err(e)),
                    };
                    found.entry(id).or_default().content_len = len;
                }
                FileName::Envelope(id) => found.entry(id).or_default().envelope = true,
                FileName::Temporary(id) => found.entry(id).or_default().stale.push(entry.path()),
                FileName::Unknown => {
                    log::warn!("{:?}: ignoring unknown file in the spool", name);
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|(id, found)| Unread { id, found })
            .collect())
    }

    /// Checks what the scan found of one id, reading its envelope: a complete message's
    /// envelope (its leftover temporary files deleted), or `None` after deleting a
    /// half-written one (or leaving it alone when the disk fails, logged).
    pub fn take(&self, unread: Unread) -> Option<Envelope> {
        notify::progress();
        let Unread { id, found } = unread;
        match self.check(&id, &found) {
            Ok(Some(env)) => {
                for path in &found.stale {
                    log::warn!("{id}: removing stale temporary file {}", path.display());
                    remove_if_present(path);
                }
                Some(env)
            }
            Ok(None) => None,
            Err(reason) => {
                log::warn!("{id}: discarding half-written message: {reason}");
                for path in &found.stale {
                    remove_if_present(path);
                }
                for ext in [ENVELOPE_EXT, CONTENT_EXT] {
                    if let Ok(path) = self.file_path(&id, ext) {
                        remove_if_present(&path);
                    }
                }
                None
            }
        }
    }

    /// Whether one id's files make a complete message: `Ok(Some)` yes, `Err(reason)` no (to
    /// be deleted), `Ok(None)` cannot tell because the disk failed (left alone, logged).
    fn check(&self, id: &QueueId, found: &Found) -> Result<Option<Envelope>, String> {
        if !found.envelope {
            return Err(match found.content_len {
                Some(_) => "content without envelope".into(),
                None => "stale temporary file".into(),
            });
        }
        let path = self
            .file_path(id, ENVELOPE_EXT)
            .map_err(|e| e.to_string())?;
        let env = match read_envelope(&path) {
            Ok(env) => env,
            Err(ReadError::Bad(e)) => return Err(e.to_string()),
            Err(ReadError::Io(e)) => {
                log::warn!("{id}: envelope unreadable, left in place: {e}");
                return Ok(None);
            }
        };
        if env.id != *id {
            return Err(format!("envelope names another id ({})", env.id));
        }
        match &found.content_len {
            None => Err("content missing".into()),
            Some(Err(e)) => {
                log::warn!("{id}: content cannot be examined, left in place: {e}");
                Ok(None)
            }
            Some(Ok(len)) if *len != env.size => Err(format!(
                "content has {len} octets, envelope says {}",
                env.size
            )),
            Some(Ok(_)) => Ok(Some(env)),
        }
    }
}

impl Incoming {
    /// Appends content.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            // Unreachable: the writer is only taken by drop.
            return Err(io::Error::other("message already closed"));
        };
        writer.write_all(bytes)?;
        // A usize always fits u64 on our targets; the sum cannot reach 2^64 octets of disk.
        self.written = self.written.saturating_add(bytes.len() as u64);
        Ok(())
    }

    /// Octets written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Completes the content and writes the envelope, without syncing (that is the commit's
    /// job). `env` must carry this message's id and `env.size` must equal the octets written;
    /// otherwise, or if the disk fails, both files are deleted and the error returned.
    pub fn finish(mut self, env: &Envelope) -> io::Result<Finished> {
        if env.id != self.id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: envelope names another id ({})", self.id, env.id),
            ));
        }
        if env.size != self.written {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: envelope says {} octets, {} were written",
                    self.id, env.size, self.written
                ),
            ));
        }
        let bytes = env.encode()?;
        if let Some(writer) = self.writer.as_mut() {
            writer.flush()?;
        }
        // Close the content file now; its buffer is empty.
        if let Some(writer) = self.writer.take() {
            drop(writer.into_parts());
        }
        let env_path = self.path.with_extension(ENVELOPE_EXT);
        if let Err(e) = write_new_file(&env_path, &bytes) {
            remove_if_present(&env_path);
            return Err(e);
        }
        self.finished = true;
        Ok(Finished {
            id: self.id.clone(),
        })
    }

    /// Gives up on the message and deletes what was written.
    pub fn abort(self) {
        // Drop does the work.
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(writer) = self.writer.take() {
            // Close without flushing: the file is about to go.
            drop(writer.into_parts());
        }
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("{}: cannot delete unfinished content: {e}", self.id);
            }
        }
    }
}

/// What a name in the queue directory is.
enum FileName {
    Content(QueueId),
    Envelope(QueueId),
    /// A leftover of an interrupted write (`<id>.<anything>.tmp`).
    Temporary(QueueId),
    Unknown,
}

fn classify(name: &str) -> FileName {
    let Some((stem, ext)) = name.split_once('.') else {
        return FileName::Unknown;
    };
    let Ok(id) = stem.parse::<QueueId>() else {
        return FileName::Unknown;
    };
    match ext {
        CONTENT_EXT => FileName::Content(id),
        ENVELOPE_EXT => FileName::Envelope(id),
        _ if ext.ends_with(".tmp") || ext == "tmp" => FileName::Temporary(id),
        _ => FileName::Unknown,
    }
}

fn file_path_in(dir: &Path, id: &QueueId, ext: &str) -> PathBuf {
    let dir = dir.as_os_str();
    let mut path = PathBuf::with_capacity(dir.len() + 2 + QUEUE_ID_MAX_LEN + ext.len());
    path.push(dir);
    path.push(id.as_str());
    path.set_extension(ext);
    path
}

/// Reads and decodes an envelope file, reading at most one octet past the largest valid file
/// so a huge file costs no more memory than a valid one.
fn read_envelope(path: &Path) -> Result<Envelope, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::with_capacity(512);
    file.take(ENVELOPE_MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    Envelope::decode(&bytes).map_err(ReadError::Bad)
}

/// Writes a whole file, replacing any previous one.
fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)
}

fn remove_if_present(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            log::warn!("{}: cannot delete: {e}", path.display());
        }
    }
}

/// The messages a stopped gateway's spool (`spool_dir`, as [`Spool::open`] takes it)
/// holds, with their contents, read without changing a byte: the message files, then the
/// journal's live records (a message in both is taken from its files), sorted by
/// arrival. What start-up would discard (an envelope without its content, a torn
/// record) is left out.
pub fn read_only(spool_dir: &Path) -> io::Result<Vec<(Envelope, Vec<u8>)>> {
    let queue_dir = spool_dir.join(QUEUE_SUBDIR);
    let mut found: BTreeMap<QueueId, (Envelope, Vec<u8>)> = BTreeMap::new();
    let entries = match fs::read_dir(&queue_dir) {
        Ok(entries) => Some(entries),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    for entry in entries.into_iter().flatten() {
        let name = entry?.file_name();
        let Some(FileName::Envelope(id)) = name.to_str().map(classify) else {
            continue;
        };
        let env = read_envelope(&file_path_in(&queue_dir, &id, ENVELOPE_EXT));
        let content = fs::read(file_path_in(&queue_dir, &id, CONTENT_EXT));
        match (env, content) {
            (Ok(env), Ok(content)) if env.id == id => {
                found.insert(id, (env, content));
            }
            _ => log::warn!("{id}: not a whole message, left out"),
        }
    }
    for (env, content) in super::journal::read_only(spool_dir)? {
        found.entry(env.id.clone()).or_insert((env, content));
    }
    let mut messages: Vec<(Envelope, Vec<u8>)> = found.into_values().collect();
    messages.sort_by(|a, b| {
        a.0.arrived
            .cmp(&b.0.arrived)
            .then_with(|| a.0.id.cmp(&b.0.id))
    });
    Ok(messages)
}

fn sort_by_arrival(envelopes: &mut [Envelope]) {
    envelopes.sort_by(|a, b| a.arrived.cmp(&b.arrived).then_with(|| a.id.cmp(&b.id)));
}

#[cfg(test)]
mod tests {
    use super::super::tests::TempDir;
    use super::*;
    use crate::proto::queue::envelope::tests::sample;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Receives one message with `content` and finishes it (no commit).
    fn receive(spool: &Spool, now_micros: u64, content: &[u8]) -> Envelope {
        let mut incoming = spool.create_at(now_micros).unwrap();
        incoming.write(content).unwrap();
        let mut env = sample(incoming.id.clone(), content.len() as u64);
        env.arrived = now_micros / 1_000_000;
        incoming.finish(&env).unwrap();
        env
    }

    #[test]
    fn open_creates_the_directories() {
        let tmp = TempDir::new("open-creates");
        let state = tmp.path().join("a/b");
        let (spool, queued) = Spool::open(&state).unwrap();
        assert!(queued.is_empty());
        assert_eq!(spool.dir(), state.join("queue"));
        assert!(spool.dir().is_dir());
        // Opening again finds the same empty spool.
        let (_, queued) = Spool::open(&state).unwrap();
        assert!(queued.is_empty());
    }

    #[test]
    fn a_finished_message_reads_back() {
        let tmp = TempDir::new("read-back");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let mut incoming = spool.create(1_700_000_000).unwrap();
        let id = incoming.id.clone();
        incoming.write(b"Subject: hi\r\n").unwrap();
        incoming.write(b"\r\nbody\r\n").unwrap();
        assert_eq!(incoming.written(), 21);
        let env = sample(id.clone(), 21);
        let finished = incoming.finish(&env).unwrap();
        assert_eq!(finished.id, id);
        assert_eq!(
            spool.read_content(&id).unwrap(),
            b"Subject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(spool.load(&id).unwrap(), env);
        assert_eq!(spool.list().unwrap(), vec![env]);
        assert_eq!(
            names(spool.dir()),
            vec![format!("{id}.env"), format!("{id}.msg")]
        );
    }

    #[test]
    fn large_writes_pass_the_buffer() {
        let tmp = TempDir::new("large");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let content: Vec<u8> = (0..3 * INCOMING_BUFFER + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut incoming = spool.create(1).unwrap();
        let id = incoming.id.clone();
        for piece in content.chunks(1000).chain([&content[..0]]) {
            incoming.write(piece).unwrap();
        }
        incoming
            .finish(&sample(id.clone(), content.len() as u64))
            .unwrap();
        assert_eq!(spool.read_content(&id).unwrap(), content);
    }

    #[test]
    fn pool_operations_write_read_and_remove_whole_messages() {
        let tmp = TempDir::new("pool-ops");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let files = spool.files();
        let id = spool.allocate_id(1_000_000);
        let content = b"Subject: x\r\n\r\nbody\r\n";
        let env = sample(id.clone(), content.len() as u64);
        let finished = std::thread::spawn({
            let (files, env) = (files.clone(), env.clone());
            move || files.write_message(&env, content)
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(finished.id, id);
        assert_eq!(spool.load(&id).unwrap(), env);
        assert_eq!(
            files.read_prefix(&id, 100).unwrap(),
            (content.to_vec(), true)
        );
        assert_eq!(
            files.read_prefix(&id, content.len()).unwrap(),
            (content.to_vec(), true)
        );
        assert_eq!(
            files.read_prefix(&id, 4).unwrap(),
            (b"Subj".to_vec(), false)
        );
        // A second write of the same id is refused and leaves the first intact.
        assert!(files.write_message(&env, b"other").is_err());
        assert_eq!(spool.read_content(&id).unwrap(), content);
        files.remove(&id).unwrap();
        assert!(names(spool.dir()).is_empty());
        let forged = QueueId(heapless::String::try_from("../x").unwrap());
        assert_eq!(
            files.read_prefix(&forged, 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn ids_are_unique_and_increasing_even_at_one_instant() {
        let tmp = TempDir::new("ids");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let mut ids = Vec::new();
        let mut open = Vec::new();
        for _ in 0..5000 {
            let incoming = spool.create_at(1_700_000_000_000_000).unwrap();
            ids.push(incoming.id.clone());
            if open.len() < 10 {
                open.push(incoming);
            }
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // A clock that steps back still gets fresh ids.
        let earlier = spool.create_at(1_600_000_000_000_000).unwrap();
        assert!(earlier.id > *ids.last().unwrap());
    }

    #[test]
    fn create_skips_ids_whose_file_exists() {
        let tmp = TempDir::new("collide");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let t = 1_700_000_000_000_000;
        let taken = QueueId::from_value(QueueId::value_at(t, 0));
        let taken_next = QueueId::from_value(QueueId::value_at(t, 1));
        for id in [&taken, &taken_next] {
            fs::write(spool.file_path(id, CONTENT_EXT).unwrap(), b"other").unwrap();
        }
        let incoming = spool.create_at(t).unwrap();
        assert_eq!(incoming.id, QueueId::from_value(QueueId::value_at(t, 2)));
        assert_eq!(
            fs::read(spool.file_path(&taken, CONTENT_EXT).unwrap()).unwrap(),
            b"other"
        );
    }

    #[test]
    fn dropped_incoming_leaves_no_file() {
        let tmp = TempDir::new("drop");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let mut incoming = spool.create(1).unwrap();
        incoming.write(&[b'x'; 100]).unwrap();
        assert_eq!(names(spool.dir()).len(), 1);
        drop(incoming);
        assert!(names(spool.dir()).is_empty());
    }

    #[test]
    fn aborted_incoming_leaves_no_file() {
        let tmp = TempDir::new("abort");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let mut incoming = spool.create(1).unwrap();
        incoming.write(&vec![b'x'; INCOMING_BUFFER + 1]).unwrap();
        incoming.abort();
        assert!(names(spool.dir()).is_empty());
    }

    #[test]
    fn finish_with_the_wrong_size_fails_and_leaves_no_file() {
        let tmp = TempDir::new("wrong-size");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        for claimed in [9, 11, 0] {
            let mut incoming = spool.create(1).unwrap();
            incoming.write(b"0123456789").unwrap();
            let env = sample(incoming.id.clone(), claimed);
            let err = incoming.finish(&env).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(names(spool.dir()).is_empty());
        }
    }

    #[test]
    fn finish_with_another_id_fails() {
        let tmp = TempDir::new("wrong-id");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let incoming = spool.create(1).unwrap();
        let env = sample("0123456789ABCDEF".parse().unwrap(), 0);
        assert_eq!(
            incoming.finish(&env).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(names(spool.dir()).is_empty());
    }

    #[test]
    fn update_replaces_the_envelope() {
        let tmp = TempDir::new("update");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let mut env = receive(&spool, 5_000_000, b"data");
        env.attempts += 1;
        env.held = true;
        spool.update(&env).unwrap();
        assert_eq!(spool.load(&env.id).unwrap(), env);
        assert_eq!(names(spool.dir()).len(), 2);
        let (_, queued) = Spool::open(tmp.path()).unwrap();
        assert_eq!(queued, vec![env]);
    }

    #[test]
    fn remove_deletes_both_files_and_tolerates_missing_ones() {
        let tmp = TempDir::new("remove");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let env = receive(&spool, 5_000_000, b"data");
        spool.remove(&env.id).unwrap();
        assert!(names(spool.dir()).is_empty());
        spool.remove(&env.id).unwrap();
        assert_eq!(
            spool.load(&env.id).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn list_skips_unreadable_envelopes_and_content_in_progress() {
        let tmp = TempDir::new("list");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let second = receive(&spool, 7_000_000, b"second");
        let first = receive(&spool, 6_000_000, b"first");
        let broken = receive(&spool, 8_000_000, b"broken");
        fs::write(
            file_path_in(spool.dir(), &broken.id, ENVELOPE_EXT),
            b"DBENV",
        )
        .unwrap();
        let mut receiving = spool.create(9).unwrap();
        receiving.write(b"in progress").unwrap();
        assert_eq!(spool.list().unwrap(), vec![first, second]);
        assert_eq!(
            spool.load(&broken.id).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn forged_ids_never_become_paths() {
        let tmp = TempDir::new("forged");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let forged = QueueId(heapless::String::try_from("../../x").unwrap());
        assert_eq!(
            spool.remove(&forged).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            spool.read_content(&forged).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            spool.load(&forged).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let env = sample(forged, 0);
        assert_eq!(
            spool.update(&env).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn recovery_keeps_complete_messages_and_discards_the_rest() {
        let tmp = TempDir::new("recover");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let dir = spool.dir().to_path_buf();
        let path = |id: &QueueId, ext: &str| file_path_in(&dir, id, ext);

        // Two complete messages, received out of arrival order.
        let late = receive(&spool, 9_000_000, b"late message\r\n");
        let early = receive(&spool, 8_000_000, b"early\r\n");
        let mut early = early;
        early.arrived = 1;
        spool.update(&early).unwrap();
        // A complete message with a stale update file next to it.
        let kept = receive(&spool, 9_500_000, b"kept\r\n");
        fs::write(path(&kept.id, UPDATE_EXT), b"DBENV torn").unwrap();

        // Content without envelope (a crash during DATA).
        let mut orphan = spool.create_at(10_000_000).unwrap();
        orphan.write(b"partial").unwrap();
        let orphan_id = orphan.id.clone();
        orphan.finished = true; // leave the file behind as a crash would
        drop(orphan);

        // An envelope with a torn payload.
        let torn = receive(&spool, 11_000_000, b"torn");
        let bytes = fs::read(path(&torn.id, ENVELOPE_EXT)).unwrap();
        fs::write(path(&torn.id, ENVELOPE_EXT), &bytes[..bytes.len() - 3]).unwrap();

        // Content shorter than the envelope says.
        let short = receive(&spool, 12_000_000, b"short content");
        fs::write(path(&short.id, CONTENT_EXT), b"short").unwrap();

        // Envelope whose content is missing.
        let lost = receive(&spool, 13_000_000, b"lost");
        fs::remove_file(path(&lost.id, CONTENT_EXT)).unwrap();

        // Envelope naming another id.
        let swapped = receive(&spool, 14_000_000, b"swap");
        let mut other = swapped.clone();
        other.id = "AAAAAAAAAAAAAAAA".parse().unwrap();
        fs::write(path(&swapped.id, ENVELOPE_EXT), other.encode().unwrap()).unwrap();

        // Garbage envelope, empty envelope, lone temporary files.
        let garbage: QueueId = "0000000000000AAA".parse().unwrap();
        fs::write(path(&garbage, ENVELOPE_EXT), [0xFF; 40]).unwrap();
        fs::write(path(&garbage, CONTENT_EXT), b"").unwrap();
        let empty: QueueId = "0000000000000BBB".parse().unwrap();
        fs::write(path(&empty, ENVELOPE_EXT), b"").unwrap();
        let stray: QueueId = "0000000000000CCC".parse().unwrap();
        fs::write(path(&stray, UPDATE_EXT), b"x").unwrap();

        // Files that are not ours are left alone.
        fs::write(dir.join("README"), b"admin notes").unwrap();
        fs::write(dir.join("zzzzzzzzzzzz.msg"), b"?").unwrap();
        fs::create_dir(dir.join("lost+found")).unwrap();
        drop(spool);

        let (spool, queued) = Spool::open(tmp.path()).unwrap();
        assert_eq!(queued, vec![early.clone(), late.clone(), kept.clone()]);
        let mut expected = vec![
            "README".to_string(),
            "lost+found".into(),
            "zzzzzzzzzzzz.msg".into(),
        ];
        for env in [&early, &late, &kept] {
            expected.push(format!("{}.env", env.id));
            expected.push(format!("{}.msg", env.id));
        }
        expected.sort();
        assert_eq!(names(spool.dir()), expected);
        assert_ne!(orphan_id, early.id);
        assert_eq!(spool.read_content(&late.id).unwrap(), b"late message\r\n");
        assert_eq!(spool.list().unwrap(), queued);

        // New ids continue after the recovered ones.
        let next = spool.create_at(0).unwrap();
        assert!(next.id > kept.id);
    }

    #[test]
    fn a_message_whose_content_the_disk_cannot_examine_is_left_in_place() {
        let tmp = TempDir::new("unexamined");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let env = receive(&spool, 9_000_000, b"kept\r\n");
        // The scan's examination of `<id>.msg` failed (EIO): the message is not taken,
        // and not deleted as half-written either.
        let unread = Unread {
            id: env.id.clone(),
            found: Found {
                content_len: Some(Err(io::Error::from_raw_os_error(5))),
                envelope: true,
                stale: Vec::new(),
            },
        };
        assert_eq!(spool.take(unread), None);
        drop(spool);
        let (_, queued) = Spool::open(tmp.path()).unwrap();
        assert_eq!(queued, vec![env]);
    }

    #[test]
    fn recovery_survives_arbitrary_envelope_bytes() {
        let tmp = TempDir::new("garbage");
        let (spool, _) = Spool::open(tmp.path()).unwrap();
        let env = receive(&spool, 1_000_000, b"x");
        let good = fs::read(file_path_in(spool.dir(), &env.id, ENVELOPE_EXT)).unwrap();
        drop(spool);
        // Every truncation of a valid envelope is discarded, never a panic.
        for cut in 0..good.len() {
            let (spool, _) = Spool::open(tmp.path()).unwrap();
            let mut incoming = spool.create_at(2_000_000).unwrap();
            incoming.write(b"x").unwrap();
            let id = incoming.id.clone();
            incoming.finish(&sample(id.clone(), 1)).unwrap();
            let path = file_path_in(spool.dir(), &id, ENVELOPE_EXT);
            let mut bytes = fs::read(&path).unwrap();
            bytes.truncate(cut);
            fs::write(&path, &bytes).unwrap();
            drop(spool);
            let (spool, queued) = Spool::open(tmp.path()).unwrap();
            assert_eq!(queued.len(), 1, "cut at {cut}");
            assert_eq!(queued[0].id, env.id);
            assert_eq!(names(spool.dir()).len(), 2);
        }
    }
}
