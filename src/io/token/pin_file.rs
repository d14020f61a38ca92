//! The PIN file, in the form of the seeds' `sslpassword.conf`: which PIN unlocks which token.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

/// Longest PIN file read: far more than any appliance has tokens.
pub const MAX_PIN_FILE_LEN: usize = 64 * 1024;

/// The PIN file, in the form of the seeds' `sslpassword.conf`: one `token-label:PIN` a
/// line, `#` starts a comment line, blank lines are skipped. The PIN is everything after
/// the first colon. Its `Debug` form never shows a PIN.
#[derive(Clone, Default)]
pub struct PinFile {
    entries: Vec<(String, String)>,
}

/// Why a PIN file was refused. Carries line numbers, never line contents (they hold PINs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinFileError {
    TooLarge,
    /// A line without a colon, or with an empty label.
    Malformed {
        line: usize,
    },
    DuplicateLabel {
        line: usize,
    },
    Read(String),
}

impl fmt::Display for PinFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinFileError::TooLarge => write!(f, "PIN file larger than {MAX_PIN_FILE_LEN} bytes"),
            PinFileError::Malformed { line } => {
                write!(f, "PIN file line {line}: expected token-label:PIN")
            }
            PinFileError::DuplicateLabel { line } => {
                write!(f, "PIN file line {line}: token label given twice")
            }
            PinFileError::Read(message) => write!(f, "PIN file: {message}"),
        }
    }
}

impl std::error::Error for PinFileError {}

impl PinFile {
    pub fn parse(text: &str) -> Result<PinFile, PinFileError> {
        if text.len() > MAX_PIN_FILE_LEN {
            return Err(PinFileError::TooLarge);
        }
        let mut entries: Vec<(String, String)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (label, pin) = line
                .split_once(':')
                .ok_or(PinFileError::Malformed { line: line_number })?;
            let label = label.trim();
            if label.is_empty() {
                return Err(PinFileError::Malformed { line: line_number });
            }
            if entries.iter().any(|(l, _)| l == label) {
                return Err(PinFileError::DuplicateLabel { line: line_number });
            }
            entries.push((label.to_string(), pin.to_string()));
        }
        Ok(PinFile { entries })
    }

    /// Reads and parses the PIN file at `path`.
    pub fn load(path: &Path) -> Result<PinFile, PinFileError> {
        let read_error = |e: std::io::Error| PinFileError::Read(format!("{}: {e}", path.display()));
        let file = fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_PIN_FILE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() > MAX_PIN_FILE_LEN {
            return Err(PinFileError::TooLarge);
        }
        let text =
            String::from_utf8(bytes).map_err(|_| PinFileError::Read("not UTF-8".to_string()))?;
        PinFile::parse(&text)
    }

    /// The PIN for the token with this label.
    pub fn pin(&self, label: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, pin)| pin.as_str())
    }
}

impl fmt::Debug for PinFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinFile")
            .field(
                "labels",
                &self.entries.iter().map(|(l, _)| l).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_file_gives_the_pin_for_a_label() {
        let text =
            "# token PINs\r\n\ninternal:1234\r\n  # indented comment\nNSS Certificate DB:pa:ss\n";
        let pins = PinFile::parse(text).unwrap();
        assert_eq!(pins.pin("internal"), Some("1234"));
        assert_eq!(pins.pin("NSS Certificate DB"), Some("pa:ss"));
        assert_eq!(pins.pin("missing"), None);
        let shown = format!("{pins:?}");
        assert!(shown.contains("internal") && !shown.contains("1234") && !shown.contains("pa:ss"));
        assert_eq!(
            PinFile::parse("a:1\nno colon here\n").unwrap_err(),
            PinFileError::Malformed { line: 2 }
        );
        assert_eq!(
            PinFile::parse(":1\n").unwrap_err(),
            PinFileError::Malformed { line: 1 }
        );
        assert_eq!(
            PinFile::parse("a:1\n#\na:2\n").unwrap_err(),
            PinFileError::DuplicateLabel { line: 3 }
        );
        let error = PinFile::parse("secret-pin-without-label\n").unwrap_err();
        assert!(!error.to_string().contains("secret"));
        assert_eq!(
            PinFile::parse(&"#".repeat(MAX_PIN_FILE_LEN + 1)).unwrap_err(),
            PinFileError::TooLarge
        );
    }

    #[test]
    fn pin_file_loads_from_disk() {
        let dir = std::env::temp_dir().join(format!("drawbridge-pinfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sslpassword.conf");
        fs::write(&path, "gateway:4711\n").unwrap();
        assert_eq!(PinFile::load(&path).unwrap().pin("gateway"), Some("4711"));
        assert!(matches!(
            PinFile::load(&dir.join("absent")),
            Err(PinFileError::Read(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
