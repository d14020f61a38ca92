//! The initramfs archive: "newc" cpio (the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`),
//! written reproducibly: entries sorted by path, one fixed modification time, owner root,
//! inode numbers counted from 1.
//!
//! The reader exists for checking what was written (tests, `image show`), and rejects
//! anything it did not expect rather than guessing.

use std::collections::BTreeMap;
use std::fmt;

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
/// The fixed part of a newc header: the magic and 13 eight-digit hexadecimal fields.
const HEADER_LEN: usize = 6 + 13 * 8;
/// Longest path accepted: Linux's `PATH_MAX`.
pub const MAX_PATH: usize = 4096;

/// `S_IFDIR`, `S_IFREG`, `S_IFCHR`, `S_IFLNK` from `<sys/stat.h>`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFLNK: u32 = 0o120000;
const S_IFMT: u32 = 0o170000;

/// What one entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Directory,
    File(Vec<u8>),
    /// A character device with its major and minor numbers.
    CharDevice(u32, u32),
    Symlink(String),
}

/// One entry: its node and permission bits (`0o755`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub node: Node,
    pub mode: u32,
}

/// An archive being put together. Paths are relative (`init`, `lib/modules/x.ko`).
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds an entry, and every missing parent directory (mode 0755).
    pub fn add(&mut self, path: &str, node: Node, mode: u32) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            self.entries.entry(dir.to_string()).or_insert(Entry {
                node: Node::Directory,
                mode: 0o755,
            });
            parent = dir;
        }
        self.entries.insert(path, Entry { node, mode });
    }

    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// The archive's bytes: every entry in path order (a parent sorts before its
    /// children), each with modification time `mtime`, then the trailer.
    pub fn write(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (kind, data, rdev): (u32, &[u8], (u32, u32)) = match &entry.node {
                Node::Directory => (S_IFDIR, &[], (0, 0)),
                Node::File(d) => (S_IFREG, d, (0, 0)),
                Node::CharDevice(major, minor) => (S_IFCHR, &[], (*major, *minor)),
                Node::Symlink(target) => (S_IFLNK, target.as_bytes(), (0, 0)),
            };
            let nlink = if kind == S_IFDIR { 2 } else { 1 };
            header(
                &mut out,
                ino as u32 + 1,
                kind | (entry.mode & 0o7777),
                nlink,
                mtime,
                data.len() as u32,
                rdev,
                path,
            );
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 1, 0, 0, (0, 0), TRAILER);
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) {
    out.extend_from_slice(MAGIC);
    let name_size = name.len() as u32 + 1;
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    for field in [
        ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev.0, rdev.1, name_size, 0,
    ] {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// Why bytes are not an archive this module wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError(pub String);

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpio: {}", self.0)
    }
}

impl std::error::Error for ReadError {}

/// Reads an archive back; each entry's path, node and permission bits.
pub fn read(bytes: &[u8]) -> Result<Archive, ReadError> {
    let err = |m: &str| ReadError(m.to_string());
    let mut archive = Archive::new();
    let mut at = 0usize;
    loop {
        let head = bytes
            .get(at..at + HEADER_LEN)
            .ok_or_else(|| err("truncated header"))?;
        if &head[..6] != MAGIC {
            return Err(err("bad magic"));
        }
        let field = |i: usize| -> Result<u32, ReadError> {
            let hex = std::str::from_utf8(&head[6 + i * 8..14 + i * 8])
                .map_err(|_| err("header field is not hexadecimal"))?;
            u32::from_str_radix(hex, 16).map_err(|_| err("header field is not hexadecimal"))
        };
        let (mode, size, rdev_major, rdev_minor, name_size) =
            (field(1)?, field(6)?, field(9)?, field(10)?, field(11)?);
        let name_size = name_size as usize;
        if name_size == 0 || name_size > MAX_PATH {
            return Err(err("bad name length"));
        }
        let name_at = at + HEADER_LEN;
        let name = bytes
            .get(name_at..name_at + name_size)
            .ok_or_else(|| err("truncated name"))?;
        let (name, nul) = name.split_at(name_size - 1);
        if nul != [0] {
            return Err(err("name is not NUL-terminated"));
        }
        let name = std::str::from_utf8(name).map_err(|_| err("name is not UTF-8"))?;
        let data_at = (name_at + name_size).next_multiple_of(4);
        let data = bytes
            .get(data_at..data_at + size as usize)
            .ok_or_else(|| err("truncated data"))?;
        at = (data_at + size as usize).next_multiple_of(4);
        if name == TRAILER {
            return Ok(archive);
        }
        let node = match mode & S_IFMT {
            S_IFDIR => Node::Directory,
            S_IFREG => Node::File(data.to_vec()),
            S_IFCHR => Node::CharDevice(rdev_major, rdev_minor),
            S_IFLNK => Node::Symlink(
                String::from_utf8(data.to_vec()).map_err(|_| err("link target is not UTF-8"))?,
            ),
            _ => return Err(err("unsupported file type")),
        };
        archive.entries.insert(
            name.to_string(),
            Entry {
                node,
                mode: mode & 0o7777,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add("/init", Node::File(b"\x7fELF...".to_vec()), 0o755);
        a.add("dev/console", Node::CharDevice(5, 1), 0o600);
        a.add(
            "lib/modules/virtio_net.ko",
            Node::File(vec![1, 2, 3]),
            0o644,
        );
        a.add("lib64", Node::Symlink("lib".into()), 0o777);
        a
    }

    #[test]
    fn writes_what_it_reads_back_with_parents_first() {
        let a = sample();
        let bytes = a.write(1_700_000_000);
        assert_eq!(bytes.len() % 4, 0);
        let b = read(&bytes).unwrap();
        assert_eq!(a.entries(), b.entries());
        let names: Vec<&str> = b.entries().keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/virtio_net.ko",
                "lib64"
            ]
        );
        // The header layout of one entry, byte for byte: magic, ino 1, mode 040755 ...
        assert!(bytes.starts_with(b"07070100000001000041ed"));
        assert!(
            bytes
                .windows(TRAILER.len())
                .any(|w| w == TRAILER.as_bytes())
        );
    }

    #[test]
    fn same_entries_same_bytes_in_any_order() {
        let mut a = Archive::new();
        a.add("b", Node::File(vec![2]), 0o644);
        a.add("a", Node::File(vec![1]), 0o644);
        let mut b = Archive::new();
        b.add("a", Node::File(vec![1]), 0o644);
        b.add("b", Node::File(vec![2]), 0o644);
        assert_eq!(a.write(7), b.write(7));
        assert_ne!(a.write(7), a.write(8));
    }

    #[test]
    fn truncations_and_corruptions_are_errors_not_panics() {
        let bytes = sample().write(0);
        for cut in 0..bytes.len() {
            assert!(read(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut b = bytes.clone();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state as usize) % b.len();
            b[i] ^= 1 << (state >> 61);
            let _ = read(&b);
        }
    }
}
