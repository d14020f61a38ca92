//! The software token's directory: atomic writes, bounded reads and the list of object files.
//!
//! **Invariant:** a file is replaced whole or not at all (temporary file, fsync, rename,
//! directory fsync), so a power cut leaves the old or the new record, never a mix; a read
//! never takes more than its limit into memory; a leftover temporary file is an object
//! that never existed and is removed.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::format::object_id;
use crate::io::token::TokenError;

/// An I/O failure as a token error, with what was being done.
pub(super) fn storage(what: &str, error: &std::io::Error) -> TokenError {
    TokenError::Storage(format!("{what}: {error}"))
}

/// The object files in `dir` with their numbers; leftover temporary files are removed.
pub(super) fn list_object_files(dir: &Path) -> Result<Vec<(u64, String)>, TokenError> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| storage("list token directory", &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| storage("list token directory", &e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.ends_with(".tmp") {
            // An interrupted write: the rename never happened, so the object never existed.
            let _ = fs::remove_file(entry.path());
            continue;
        }
        if let Some(id) = object_id(&name) {
            found.push((id, name));
        }
    }
    found.sort();
    Ok(found)
}

/// The bytes of `path`, refused when longer than `limit`.
pub(super) fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, TokenError> {
    use std::io::Read;
    let file = fs::File::open(path).map_err(|e| storage(&path.display().to_string(), &e))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| storage(&path.display().to_string(), &e))?;
    if bytes.len() > limit {
        return Err(TokenError::Storage(format!(
            "{}: larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> Result<(), TokenError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage("sync token directory", &e))
}

/// Writes `name` in `dir` atomically: temporary file, fsync, rename, directory fsync.
pub(super) fn write_file_synced(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TokenError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(storage(&format!("write {name}"), &e));
    }
    sync_dir(dir)
}

/// Removes `name` from `dir` and syncs the directory.
pub(super) fn remove_file_synced(dir: &Path, name: &str) -> Result<(), TokenError> {
    fs::remove_file(dir.join(name)).map_err(|e| storage(&format!("remove {name}"), &e))?;
    sync_dir(dir)
}
