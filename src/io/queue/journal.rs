//! The journal: the spool's fast path for small messages.
//!
//! A message small enough to hold in memory while it is received is appended, envelope and
//! content in one record, to the current segment file. One `fdatasync` of that file makes a
//! whole batch of messages durable with a single sequential write, where a file per message
//! costs a write and an inode per file. When a message is delivered, a `Done` record is
//! appended to the segment that holds it (not synced: a lost `Done` only means a message
//! may be delivered twice after a crash). A segment whose messages are all done is deleted.
//! A message that must wait for a retry is moved to the file spool, and marked done here
//! once its files are durable.
//!
//! Record layout, little-endian:
//!
//! ```text
//! magic "DBJ1" | kind u8 | 0 0 0 | payload length u32 | CRC-32 of the payload u32 | payload
//! kind 1, message: envelope length u32 | envelope file bytes | content
//! kind 2, done:    queue id (ASCII)
//! ```
//!
//! At start-up every segment is read in order. A record that is cut short or fails its
//! checksum ends the segment: it was being written when the power went, it was never
//! acknowledged, and the segment is truncated there so that later appends stay readable.
//!
//! A failed sync poisons what it could not make durable. When `fdatasync` of a segment
//! fails, Linux marks the pages it could not write clean, and a later `fdatasync` of the
//! same file can succeed without writing them: the failed records may be garbage on
//! disk, and at start-up the garbage would end the segment, taking every later record,
//! acknowledged or not, with it. So a segment whose sync failed takes no new message
//! (the next one starts a new segment), and every later sync that includes it fails too:
//! messages appended to it meanwhile are refused, never acknowledged. A failed sync of
//! the journal directory poisons the segments whose directory entries it was to make
//! durable, and the directory is synced again with the next segment.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::io::notify;
use crate::proto::queue::envelope::{Envelope, Recovered, crc32};
use crate::proto::queue::id::QueueId;

/// The journal's folder under the spool directory.
pub const JOURNAL_SUBDIR: &str = "journal";
/// Extension of a segment file; the name is the segment number in 16 hex digits.
pub const SEGMENT_EXT: &str = "jnl";
/// A segment is closed to new messages once it holds this much: 8 MiB. Old segments only
/// take `Done` records, and go away when their last message is done.
pub const SEGMENT_TARGET: u64 = 8 * 1024 * 1024;
/// Largest message content the journal takes; larger messages are streamed to their own
/// files. Each session buffers at most this much in memory: 256 KiB times the number of
/// concurrent DATA transactions in the worst case.
pub const JOURNAL_MESSAGE_MAX: usize = 256 * 1024;
/// Largest record read back: a message of the maximum size plus its envelope, with room.
const MAX_RECORD_PAYLOAD: u32 = (JOURNAL_MESSAGE_MAX as u32) + 8 * 1024 * 1024;

const MAGIC: [u8; 4] = *b"DBJ1";
const HEADER_LEN: usize = 16;
const KIND_MESSAGE: u8 = 1;
const KIND_DONE: u8 = 2;

/// One segment file and how many of its messages are not yet done.
struct Segment {
    file: Arc<File>,
    /// Set (on the blocking pool) when a sync of this segment, or of the directory entry
    /// that names it, failed: see the module documentation.
    poisoned: Arc<AtomicBool>,
    len: u64,
    live: u32,
}

impl Segment {
    fn new(file: File, len: u64, live: u32) -> Segment {
        Segment {
            file: Arc::new(file),
            poisoned: Arc::new(AtomicBool::new(false)),
            len,
            live,
        }
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

/// A segment as a sync sees it.
pub struct SegmentSync {
    pub number: u64,
    pub file: Arc<File>,
    poisoned: Arc<AtomicBool>,
}

/// The journal directory as a sync sees it, with the segments whose directory entries
/// that sync makes durable.
pub struct DirectorySync {
    pub file: Arc<File>,
    entries: Vec<Arc<AtomicBool>>,
}

/// Deletes a segment file that holds no live message; a failure is only logged (the
/// segment is read again at start-up and found empty).
pub fn delete_segment(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        log::warn!(target: "spool", "{}: cannot delete: {e}", path.display());
    }
}

/// What a group commit must sync for the journal: the segments written since the last
/// sync started, and the journal directory when a segment was created.
#[derive(Default)]
pub struct JournalSync {
    pub segments: Vec<SegmentSync>,
    pub directory: Option<DirectorySync>,
}

impl JournalSync {
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.directory.is_none()
    }

    /// Runs on the blocking pool: `fdatasync` of each segment, then `fsync` of the
    /// directory.
    pub fn run(&self) -> io::Result<()> {
        self.run_with(&File::sync_data, &File::sync_all)
    }

    /// As [`run`](Self::run), with the two syncs given (tests make them fail). Every
    /// segment is synced even after one failed, so that each failure poisons its own
    /// segment; the first error is returned. A segment poisoned before fails at once.
    pub fn run_with(
        &self,
        sync_segment: &dyn Fn(&File) -> io::Result<()>,
        sync_directory: &dyn Fn(&File) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut first_error = None;
        for segment in &self.segments {
            let result = if segment.poisoned.load(Ordering::Acquire) {
                Err(io::Error::other(format!(
                    "journal segment {:016X}: an earlier sync of it failed, so its later \
                     records cannot be made durable",
                    segment.number
                )))
            } else {
                sync_segment(&segment.file).inspect_err(|_| {
                    segment.poisoned.store(true, Ordering::Release);
                })
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if let Some(dir) = &self.directory {
            if let Err(e) = sync_directory(&dir.file) {
                for entry in &dir.entries {
                    entry.store(true, Ordering::Release);
                }
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The journal of one gateway. Single-threaded: share it with `Rc<RefCell<_>>`.
pub struct Journal {
    dir: PathBuf,
    dir_handle: Arc<File>,
    segments: BTreeMap<u64, Segment>,
    current: u64,
    dirty: BTreeSet<u64>,
    /// Segments created since the directory was last handed to a sync: their entries
    /// are not yet durable. Not empty means the directory needs a sync.
    new_entries: Vec<u64>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `<spool dir>/journal`, reads back every
    /// message not yet done, and starts a fresh segment for new messages.
    pub fn open(spool_dir: &Path) -> io::Result<(Journal, Vec<Recovered>)> {
        let dir = spool_dir.join(JOURNAL_SUBDIR);
        let existed = dir.is_dir();
        fs::create_dir_all(&dir)?;
        let dir_handle = Arc::new(File::open(&dir)?);
        if !existed {
            dir_handle.sync_all()?;
            File::open(spool_dir)?.sync_all()?;
        }
        let mut numbers = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name();
            match name.to_str().and_then(segment_number) {
                Some(n) => numbers.push(n),
                None => {
                    log::warn!(target: "spool", "{name:?}: ignoring unknown file in the journal")
                }
            }
        }
        numbers.sort_unstable();
        let mut journal = Journal {
            dir,
            dir_handle,
            segments: BTreeMap::new(),
            current: 0,
            dirty: BTreeSet::new(),
            new_entries: Vec::new(),
        };
        let mut recovered = Vec::new();
        for n in numbers {
            notify::progress();
            journal.recover_segment(n, &mut recovered)?;
        }
        let next = journal.segments.keys().next_back().map_or(1, |n| n + 1);
        journal.start_segment(next)?;
        // The new segment's directory entry is synced by the first commit that needs it.
        Ok((journal, recovered))
    }

    fn path(&self, n: u64) -> PathBuf {
        segment_path(&self.dir, n)
    }

    fn recover_segment(&mut self, n: u64, out: &mut Vec<Recovered>) -> io::Result<()> {
        let path = self.path(n);
        let bytes = fs::read(&path)?;
        let (live, good_end) = parse_segment(n, &bytes);
        if live.is_empty() {
            fs::remove_file(&path)?;
            return Ok(());
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        if good_end < bytes.len() {
            file.set_len(good_end as u64)?;
            file.sync_all()?;
        }
        self.segments
            .insert(n, Segment::new(file, good_end as u64, live.len() as u32));
        for (env, content) in live {
            out.push(Recovered {
                env,
                content,
                segment: n,
            });
        }
        Ok(())
    }

    fn start_segment(&mut self, n: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path(n))?;
        self.segments.insert(n, Segment::new(file, 0, 0));
        self.current = n;
        self.new_entries.push(n);
        Ok(())
    }

    /// Appends a message; it is durable once a group commit that started after this call
    /// has finished. Returns the segment that holds it.
    pub fn append(&mut self, env: &Envelope, content: &[u8]) -> io::Result<u64> {
        let (current_len, poisoned) = self
            .segments
            .get(&self.current)
            .map_or((0, false), |s| (s.len, s.is_poisoned()));
        if current_len >= SEGMENT_TARGET || poisoned {
            let old = self.current;
            if poisoned {
                log::warn!(target: "spool", "journal segment {old:016X}: a sync failed, \
                    new messages go to a new segment");
            }
            self.start_segment(old + 1)?;
            self.retire_if_empty(old);
        }
        let env_bytes = env.encode()?;
        let payload_len = 4 + env_bytes.len() + content.len();
        let payload_len = u32::try_from(payload_len)
            .ok()
            .filter(|&l| l <= MAX_RECORD_PAYLOAD)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "message too large for the journal",
                )
            })?;
        let mut record = Vec::with_capacity(HEADER_LEN + payload_len as usize);
        record.extend_from_slice(&[0; HEADER_LEN]);
        // Invariant: the envelope length was checked just above, within the u32 payload.
        record.extend_from_slice(&(env_bytes.len() as u32).to_le_bytes());
        record.extend_from_slice(&env_bytes);
        record.extend_from_slice(content);
        fill_header(&mut record, KIND_MESSAGE);
        let n = self.current;
        self.write_record(n, &record)?;
        if let Some(seg) = self.segments.get_mut(&n) {
            seg.live += 1;
        }
        self.dirty.insert(n);
        Ok(n)
    }

    /// Marks a message done: appends a `Done` record to its segment (not synced) and
    /// deletes the segment when that was its last message.
    pub fn done(&mut self, id: &QueueId, segment: u64) -> io::Result<()> {
        let retired = self.done_keeping_file(id, segment);
        if let Ok(Some(path)) = &retired {
            delete_segment(path);
        }
        retired.map(|_| ())
    }

    /// As [`Journal::done`], but a segment left without live messages is only forgotten:
    /// its path is returned for the caller to delete, for example on the blocking pool.
    /// The `Done` record itself is appended in place, in order with the appends, so that
    /// only the last record of a segment can ever be torn.
    pub fn done_keeping_file(&mut self, id: &QueueId, segment: u64) -> io::Result<Option<PathBuf>> {
        let mut record = Vec::with_capacity(HEADER_LEN + id.as_str().len());
        record.extend_from_slice(&[0; HEADER_LEN]);
        record.extend_from_slice(id.as_str().as_bytes());
        fill_header(&mut record, KIND_DONE);
        let written = self.write_record(segment, &record);
        if let Some(seg) = self.segments.get_mut(&segment) {
            seg.live = seg.live.saturating_sub(1);
        }
        let retired = self.forget_if_empty(segment);
        written.map(|()| retired)
    }

    fn write_record(&mut self, n: u64, record: &[u8]) -> io::Result<()> {
        let seg = self.segments.get_mut(&n).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no journal segment {n:016X}"),
            )
        })?;
        if let Err(e) = seg.file.write_all_at(record, seg.len) {
            // Cut off whatever part went in, so the segment stays readable to its end.
            let _ = seg.file.set_len(seg.len);
            return Err(e);
        }
        seg.len += record.len() as u64;
        Ok(())
    }

    /// Deletes a segment that is not current and holds no live message.
    fn retire_if_empty(&mut self, n: u64) {
        if let Some(path) = self.forget_if_empty(n) {
            delete_segment(&path);
        }
    }

    /// Forgets a segment that is not current and holds no live message; its path, to be
    /// deleted.
    fn forget_if_empty(&mut self, n: u64) -> Option<PathBuf> {
        let empty = self.segments.get(&n).is_some_and(|s| s.live == 0);
        if n == self.current || !empty {
            return None;
        }
        self.segments.remove(&n);
        self.dirty.remove(&n);
        self.new_entries.retain(|&e| e != n);
        Some(self.path(n))
    }

    /// Hands the work of the next sync to a group commit and starts a fresh list.
    pub fn take_sync(&mut self) -> JournalSync {
        let segments = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|n| {
                self.segments.get(&n).map(|s| SegmentSync {
                    number: n,
                    file: Arc::clone(&s.file),
                    poisoned: Arc::clone(&s.poisoned),
                })
            })
            .collect();
        // After a failed directory sync the segments it named are poisoned, and the
        // next message starts a segment whose own entry is synced then.
        let directory = (!self.new_entries.is_empty()).then(|| DirectorySync {
            file: Arc::clone(&self.dir_handle),
            entries: std::mem::take(&mut self.new_entries)
                .into_iter()
                .filter_map(|n| self.segments.get(&n).map(|s| Arc::clone(&s.poisoned)))
                .collect(),
        });
        JournalSync {
            segments,
            directory,
        }
    }

    /// Segments on disk, for tests and status.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Messages not yet done, over all segments.
    pub fn live(&self) -> u64 {
        self.segments.values().map(|s| u64::from(s.live)).sum()
    }
}

fn segment_number(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

/// Writes magic, kind, payload length and checksum into the first `HEADER_LEN` bytes.
fn fill_header(record: &mut [u8], kind: u8) {
    // Both callers make the record with `HEADER_LEN` octets of room first.
    let Some((header, payload)) = record.split_first_chunk_mut::<HEADER_LEN>() else {
        return;
    };
    let [m0, m1, m2, m3] = MAGIC;
    let [l0, l1, l2, l3] = (payload.len() as u32).to_le_bytes();
    let [c0, c1, c2, c3] = crc32(payload).to_le_bytes();
    *header = [
        m0, m1, m2, m3, kind, 0, 0, 0, l0, l1, l2, l3, c0, c1, c2, c3,
    ];
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016X}.{SEGMENT_EXT}"))
}

/// The messages of segment `n` not marked done, and where its last whole record ends
/// (what follows is half-written). Reads only.
fn parse_segment(n: u64, bytes: &[u8]) -> (Vec<(Envelope, Vec<u8>)>, usize) {
    let mut messages: Vec<(Envelope, Vec<u8>)> = Vec::new();
    let mut done: HashSet<QueueId> = HashSet::new();
    let mut at = 0usize;
    let good_end = loop {
        // `at` is the end of a record read from `bytes`, so within it.
        match read_record(bytes.get(at..).unwrap_or_default()) {
            Ok(None) => break at,
            Ok(Some(RawRecord { kind, payload, len })) => {
                match kind {
                    KIND_MESSAGE => match decode_message(payload) {
                        Some(m) => messages.push(m),
                        None => {
                            log::warn!(target: "spool", "segment {n:016X}: unreadable message record at {at}, skipped");
                        }
                    },
                    KIND_DONE => {
                        if let Some(id) = std::str::from_utf8(payload)
                            .ok()
                            .and_then(|s| s.parse().ok())
                        {
                            done.insert(id);
                        }
                    }
                    other => {
                        log::warn!(target: "spool", "segment {n:016X}: unknown record kind {other} at {at}, skipped")
                    }
                }
                at += len;
            }
            Err(reason) => {
                log::warn!(target: "spool", "segment {n:016X}: discarding a half-written record at {at}: {reason}");
                break at;
            }
        }
    };
    let live = messages
        .into_iter()
        .filter(|(env, _)| !done.contains(&env.id))
        .collect();
    (live, good_end)
}

/// The messages the journal of a stopped gateway holds, with their content, read without
/// changing a byte (start-up is what trims and removes segments).
pub fn read_only(spool_dir: &Path) -> io::Result<Vec<(Envelope, Vec<u8>)>> {
    let dir = spool_dir.join(JOURNAL_SUBDIR);
    let mut numbers = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                if let Some(n) = entry?.file_name().to_str().and_then(segment_number) {
                    numbers.push(n);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    numbers.sort_unstable();
    let mut out = Vec::new();
    for n in numbers {
        let bytes = fs::read(segment_path(&dir, n))?;
        out.extend(parse_segment(n, &bytes).0);
    }
    Ok(out)
}

/// One record read from a segment.
struct RawRecord<'a> {
    kind: u8,
    payload: &'a [u8],
    /// The whole record's length, header included.
    len: usize,
}

/// One record from the front of `bytes`: `Ok(None)` at a clean end; `Err` for a torn or
/// corrupt record.
fn read_record(bytes: &[u8]) -> Result<Option<RawRecord<'_>>, &'static str> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err("record header cut short");
    };
    let [magic @ .., kind, z0, z1, z2, l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    if magic != MAGIC || [z0, z1, z2] != [0; 3] {
        return Err("bad record magic");
    }
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    if len > MAX_RECORD_PAYLOAD {
        return Err("record length out of range");
    }
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    let payload = rest.get(..len as usize).ok_or("record cut short")?;
    if crc32(payload) != crc {
        return Err("record checksum mismatch");
    }
    Ok(Some(RawRecord {
        kind,
        payload,
        len: HEADER_LEN + payload.len(),
    }))
}

fn decode_message(payload: &[u8]) -> Option<(Envelope, Vec<u8>)> {
    let env_len = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?) as usize;
    let env_end = 4usize.checked_add(env_len)?;
    let env = Envelope::decode(payload.get(4..env_end)?).ok()?;
    let content = payload.get(env_end..)?.to_vec();
    (content.len() as u64 == env.size).then_some((env, content))
}

#[cfg(test)]
mod tests {
    use super::super::tests::TempDir;
    use super::*;
    use crate::proto::queue::envelope::tests::sample;

    fn id(n: u64) -> QueueId {
        QueueId::from_value(0x1000 + n)
    }

    fn add(j: &mut Journal, n: u64, content: &[u8]) -> u64 {
        j.append(&sample(id(n), content.len() as u64), content)
            .unwrap()
    }

    #[test]
    fn messages_come_back_until_done() {
        let tmp = TempDir::new("journal-basic");
        let (mut j, rec) = Journal::open(tmp.path()).unwrap();
        assert!(rec.is_empty());
        let s1 = add(&mut j, 1, b"one\r\n");
        let s2 = add(&mut j, 2, b"two\r\n");
        assert_eq!(s1, s2);
        j.done(&id(1), s1).unwrap();
        drop(j);
        let (j, rec) = Journal::open(tmp.path()).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].env.id, id(2));
        assert_eq!(rec[0].content, b"two\r\n");
        assert_eq!(j.live(), 1);
    }

    #[test]
    fn an_emptied_segment_can_be_left_for_the_caller_to_delete() {
        let tmp = TempDir::new("journal-keep");
        let (mut j, _) = Journal::open(tmp.path()).unwrap();
        let s = add(&mut j, 1, b"x");
        drop(j);
        let (mut j, rec) = Journal::open(tmp.path()).unwrap();
        let doomed = j.done_keeping_file(&rec[0].env.id, s).unwrap();
        let path = doomed.expect("the emptied segment");
        assert!(path.is_file(), "not deleted yet");
        assert_eq!(j.segment_count(), 1, "but forgotten");
        delete_segment(&path);
        assert!(!path.exists());
        // The current segment is never handed out, even when empty.
        let s = add(&mut j, 2, b"y");
        assert_eq!(j.done_keeping_file(&id(2), s).unwrap(), None);
    }

    #[test]
    fn a_segment_whose_messages_are_all_done_is_deleted() {
        let tmp = TempDir::new("journal-retire");
        let (mut j, _) = Journal::open(tmp.path()).unwrap();
        let s = add(&mut j, 1, b"x");
        drop(j);
        // Reopening starts a new segment; the old one keeps its live message.
        let (mut j, rec) = Journal::open(tmp.path()).unwrap();
        assert_eq!(j.segment_count(), 2);
        j.done(&rec[0].env.id, s).unwrap();
        assert_eq!(j.segment_count(), 1);
        assert_eq!(
            fs::read_dir(tmp.path().join(JOURNAL_SUBDIR))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn a_torn_tail_is_discarded_and_cut_off_at_every_length() {
        let tmp = TempDir::new("journal-torn");
        let (mut j, _) = Journal::open(tmp.path()).unwrap();
        let seg = add(&mut j, 1, b"kept\r\n");
        add(&mut j, 2, b"torn message\r\n");
        let path = j.path(seg);
        drop(j);
        let full = fs::read(&path).unwrap();
        let first_end = HEADER_LEN + u32::from_le_bytes(full[8..12].try_into().unwrap()) as usize;
        for cut in first_end..full.len() {
            let _ = fs::remove_dir_all(tmp.path());
            fs::create_dir_all(tmp.path().join(JOURNAL_SUBDIR)).unwrap();
            fs::write(&path, &full[..cut]).unwrap();
            let (mut j, rec) = Journal::open(tmp.path()).unwrap();
            assert_eq!(rec.len(), 1, "cut at {cut}");
            assert_eq!(rec[0].content, b"kept\r\n");
            assert_eq!(
                fs::metadata(&path).unwrap().len() as usize,
                first_end,
                "cut at {cut}"
            );
            // A Done appended after the cut is read back: the message does not return.
            j.done(&id(1), seg).unwrap();
            drop(j);
            let (_, rec) = Journal::open(tmp.path()).unwrap();
            assert!(rec.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn corrupt_records_never_panic() {
        let tmp = TempDir::new("journal-corrupt");
        let (mut j, _) = Journal::open(tmp.path()).unwrap();
        let seg = add(&mut j, 1, b"hello\r\n");
        let path = j.path(seg);
        drop(j);
        let full = fs::read(&path).unwrap();
        for i in 0..full.len() {
            let mut bad = full.clone();
            bad[i] ^= 0x5A;
            let _ = fs::remove_dir_all(tmp.path());
            fs::create_dir_all(tmp.path().join(JOURNAL_SUBDIR)).unwrap();
            fs::write(&path, &bad).unwrap();
            let (_, rec) = Journal::open(tmp.path()).unwrap();
            // Any flipped byte is caught by the magic, the length or the checksum.
            assert!(rec.is_empty(), "flip at {i}");
        }
    }

    #[test]
    fn segments_rotate_and_sync_work_names_what_was_written() {
        let tmp = TempDir::new("journal-rotate");
        let (mut j, _) = Journal::open(tmp.path()).unwrap();
        let sync = j.take_sync();
        assert_eq!(sync.segments.len(), 0);
        assert!(
            sync.directory.is_some(),
            "a new segment's directory entry must be synced"
        );
        let big = vec![b'x'; JOURNAL_MESSAGE_MAX];
        let first = add(&mut j, 0, &big);
        let mut n = 1;
        while add(&mut j, n, &big) == first {
            n += 1;
        }
        let sync = j.take_sync();
        assert_eq!(sync.segments.len(), 2);
        assert!(sync.directory.is_some());
        sync.run().unwrap();
        assert!(j.take_sync().is_empty());
        // Done with every message of the first segment: it goes away.
        for k in 0..n {
            j.done(&id(k), first).unwrap();
        }
        assert_eq!(j.segment_count(), 1);
    }

    fn eio(_: &File) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }

    fn fine(_: &File) -> io::Result<()> {
        Ok(())
    }

    #[test]
    fn a_segment_whose_sync_failed_takes_no_new_message_and_never_syncs_again() {
        let tmp = TempDir::new("journal-poison");
        let (mut j, _) = Journal::open(tmp.path()).unwrap();
        j.take_sync().run().unwrap();
        let first = add(&mut j, 0, b"refused\r\n");
        let failing = j.take_sync();
        // Appended while the failing sync runs: in the same segment.
        assert_eq!(add(&mut j, 1, b"raced in\r\n"), first);
        let e = failing.run_with(&eio, &fine).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        // The next sync of that segment fails though the disk would now say yes: the
        // message that raced in is refused, not acknowledged over the lost records.
        let next = j.take_sync();
        assert_eq!(next.segments.len(), 1);
        let e = next.run_with(&fine, &fine).unwrap_err();
        assert!(e.to_string().contains("earlier sync"), "{e}");
        // A new message goes to a new segment, whose entry is synced with it.
        let second = add(&mut j, 2, b"accepted\r\n");
        assert_ne!(second, first);
        let sync = j.take_sync();
        assert_eq!(sync.segments.len(), 1);
        assert_eq!(sync.segments[0].number, second);
        assert!(sync.directory.is_some());
        sync.run_with(&fine, &fine).unwrap();
        // The poisoned segment still takes Done records and goes when they are all in.
        j.done(&id(0), first).unwrap();
        j.done(&id(1), first).unwrap();
        assert_eq!(j.segment_count(), 1);
    }

    #[test]
    fn a_failed_directory_sync_poisons_the_new_segment_and_the_next_one_is_synced() {
        let tmp = TempDir::new("journal-dir-poison");
        let (mut j, _) = Journal::open(tmp.path()).unwrap();
        let first = add(&mut j, 0, b"refused\r\n");
        let sync = j.take_sync();
        assert!(sync.directory.is_some());
        sync.run_with(&fine, &eio).unwrap_err();
        // Its entry may never reach the disk: nothing more is acknowledged in it.
        assert_eq!(add(&mut j, 1, b"next\r\n"), first + 1);
        let sync = j.take_sync();
        assert!(
            sync.directory.is_some(),
            "the new segment's entry is synced"
        );
        sync.run_with(&fine, &fine).unwrap();
        assert_eq!(add(&mut j, 2, b"later\r\n"), first + 1);
        let sync = j.take_sync();
        assert!(sync.directory.is_none());
        sync.run_with(&fine, &fine).unwrap();
    }

    #[test]
    fn segment_names_parse_strictly() {
        assert_eq!(segment_number("00000000000000FF.jnl"), Some(255));
        for bad in [
            "FF.jnl",
            "00000000000000FF.msg",
            "00000000000000FG.jnl",
            "x",
            ".jnl",
        ] {
            assert_eq!(segment_number(bad), None, "{bad}");
        }
    }
}
