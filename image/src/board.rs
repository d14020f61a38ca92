//! Board files (`board/<name>.toml`): what one kind of appliance is, as data.
//!
//! The firmware's build script turns the selected board into constants, and
//! `cargo xtask build-image` reads the same file for the kernel, the modules and the
//! size budgets. Unknown keys are errors, so a misspelt setting never goes unnoticed.

use std::collections::BTreeSet;
use std::fmt;

use crate::toml::{self, Value};

/// How the firmware binary is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Against the machine's shared C library: the host board.
    Dynamic,
    /// Fully static (`-C target-feature=+crt-static`): an appliance's `/init`.
    Static,
}

/// Which token backend holds the board's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenBackend {
    Soft,
    Pkcs11,
}

/// One board, as its file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardFile {
    pub name: String,
    /// What an image for this board says it is for; an image is installed only on a
    /// board with the same string.
    pub compatible: String,
    /// The factory configuration, relative to `board/`.
    pub default_config: String,
    pub token: TokenBackend,
    pub target: String,
    pub link: Link,
    /// `stdin`, or a serial device such as `/dev/ttyS0`.
    pub console_device: String,
    /// Line speed in bit/s for a serial console; 0 for stdin.
    pub console_speed: u32,
    /// Network interfaces the firmware brings up from the configuration.
    pub interfaces: Vec<String>,
    pub storage: Storage,
    pub kernel: Option<Kernel>,
    /// The hardware watchdog PID 1 feeds (`/dev/watchdog`); none where there is none.
    pub watchdog_device: Option<String>,
    pub budget: Budget,
}

/// Where state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    /// The block device of the data disk, formatted on first boot; none on the host.
    pub data_device: Option<String>,
    /// Where the data disk is mounted.
    pub data_mount: Option<String>,
    /// The state directory: configuration slots (`config/`), spool (`spool/`), token and
    /// certificates. On an appliance it is on the data disk.
    pub state_dir: String,
    /// Where `system update` keeps the two firmware slots; none on boards without updates.
    pub firmware_slots: Option<String>,
}

/// The kernel an image carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The Debian package that provides it (`linux-image-amd64`).
    pub package: String,
    pub command_line: String,
    /// Modules loaded at boot, by name; their dependencies come along.
    pub modules: Vec<String>,
    /// Programs from the build machine copied into the initramfs with their libraries.
    pub tools: Vec<String>,
}

/// Size budgets in bytes; absent means unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    pub binary: Option<u64>,
    pub kernel: Option<u64>,
    pub initramfs: Option<u64>,
    pub image: Option<u64>,
}

/// Why a board file is not valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardError(pub String);

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BoardError {}

impl From<toml::Error> for BoardError {
    fn from(e: toml::Error) -> Self {
        BoardError(e.to_string())
    }
}

/// Every key a board file may have, by table.
const KEYS: &[(&str, &str)] = &[
    ("", "name"),
    ("", "compatible"),
    ("", "default-config"),
    ("", "token"),
    ("build", "target"),
    ("build", "link"),
    ("console", "device"),
    ("console", "speed"),
    ("network", "interfaces"),
    ("storage", "data-device"),
    ("storage", "data-mount"),
    ("storage", "state-dir"),
    ("storage", "firmware-slots"),
    ("kernel", "package"),
    ("kernel", "command-line"),
    ("kernel", "modules"),
    ("kernel", "tools"),
    ("watchdog", "device"),
    ("budget", "binary"),
    ("budget", "kernel"),
    ("budget", "initramfs"),
    ("budget", "image"),
];

/// Longest board compatibility string: the image header's field (see `format`).
pub const MAX_COMPATIBLE: usize = crate::format::BOARD_LEN;

struct Reader {
    doc: toml::Document,
}

impl Reader {
    fn take(&mut self, table: &str, key: &str) -> Option<Value> {
        self.doc.remove(&(table.to_string(), key.to_string()))
    }

    fn string(&mut self, table: &str, key: &str) -> Result<Option<String>, BoardError> {
        match self.take(table, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong(table, key, "a string", &v)),
        }
    }

    fn required(&mut self, table: &str, key: &str) -> Result<String, BoardError> {
        self.string(table, key)?
            .ok_or_else(|| BoardError(format!("{} is missing", path(table, key))))
    }

    fn integer(&mut self, table: &str, key: &str) -> Result<Option<u64>, BoardError> {
        match self.take(table, key) {
            None => Ok(None),
            Some(Value::Integer(n)) => Ok(Some(n)),
            Some(v) => Err(wrong(table, key, "an integer", &v)),
        }
    }

    fn strings(&mut self, table: &str, key: &str) -> Result<Vec<String>, BoardError> {
        match self.take(table, key) {
            None => Ok(Vec::new()),
            Some(Value::Strings(s)) => Ok(s),
            Some(v) => Err(wrong(table, key, "an array of strings", &v)),
        }
    }
}

fn path(table: &str, key: &str) -> String {
    if table.is_empty() {
        format!("'{key}'")
    } else {
        format!("'{table}.{key}'")
    }
}

fn wrong(table: &str, key: &str, expected: &str, found: &Value) -> BoardError {
    BoardError(format!(
        "{} must be {expected}, not {}",
        path(table, key),
        found.kind()
    ))
}

impl BoardFile {
    /// Parses and checks a board file's text.
    pub fn parse(text: &str) -> Result<BoardFile, BoardError> {
        let doc = toml::parse(text)?;
        for (table, key) in doc.keys() {
            if !KEYS.iter().any(|(t, k)| t == table && k == key) {
                return Err(BoardError(format!("unknown key {}", path(table, key))));
            }
        }
        let mut r = Reader { doc };
        let name = r.required("", "name")?;
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            || name.is_empty()
        {
            return Err(BoardError(format!(
                "board name '{name}': only lower-case letters, digits, '-' and '_'"
            )));
        }
        let compatible = r
            .string("", "compatible")?
            .unwrap_or_else(|| format!("drawbridge,{name}"));
        if compatible.is_empty()
            || compatible.len() > MAX_COMPATIBLE
            || !compatible.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(BoardError(format!(
                "'compatible' must be 1 to {MAX_COMPATIBLE} printable ASCII characters"
            )));
        }
        let default_config = r.required("", "default-config")?;
        let token = match r.required("", "token")?.as_str() {
            "soft" => TokenBackend::Soft,
            "pkcs11" => TokenBackend::Pkcs11,
            other => {
                return Err(BoardError(format!(
                    "'token' is soft or pkcs11, not '{other}'"
                )));
            }
        };
        let target = r.required("build", "target")?;
        let link = match r.required("build", "link")?.as_str() {
            "static" => Link::Static,
            "dynamic" => Link::Dynamic,
            other => {
                return Err(BoardError(format!(
                    "'build.link' is static or dynamic, not '{other}'"
                )));
            }
        };
        let console_device = r.required("console", "device")?;
        let console_speed = match r.integer("console", "speed")? {
            None if console_device == "stdin" => 0,
            None => return Err(BoardError("'console.speed' is missing".into())),
            Some(s) if SPEEDS.contains(&s) => s as u32,
            Some(s) => {
                return Err(BoardError(format!(
                    "'console.speed' {s} is not a serial line speed ({})",
                    SPEEDS.map(|s| s.to_string()).join(", ")
                )));
            }
        };
        let interfaces = r.strings("network", "interfaces")?;
        let storage = Storage {
            data_device: r.string("storage", "data-device")?,
            data_mount: r.string("storage", "data-mount")?,
            state_dir: r.required("storage", "state-dir")?,
            firmware_slots: r.string("storage", "firmware-slots")?,
        };
        if storage.data_device.is_some() != storage.data_mount.is_some() {
            return Err(BoardError(
                "'storage.data-device' and 'storage.data-mount' go together".into(),
            ));
        }
        if let Some(mount) = &storage.data_mount {
            for (key, dir) in [
                ("state-dir", Some(&storage.state_dir)),
                ("firmware-slots", storage.firmware_slots.as_ref()),
            ] {
                if let Some(dir) = dir
                    && !dir.starts_with(&format!("{mount}/"))
                {
                    return Err(BoardError(format!(
                        "'storage.{key}' {dir} must be on the data disk ({mount})"
                    )));
                }
            }
        }
        let kernel = match r.string("kernel", "package")? {
            None => None,
            Some(package) => Some(Kernel {
                package,
                command_line: r.required("kernel", "command-line")?,
                modules: r.strings("kernel", "modules")?,
                tools: r.strings("kernel", "tools")?,
            }),
        };
        let watchdog_device = r.string("watchdog", "device")?;
        let budget = Budget {
            binary: r.integer("budget", "binary")?,
            kernel: r.integer("budget", "kernel")?,
            initramfs: r.integer("budget", "initramfs")?,
            image: r.integer("budget", "image")?,
        };
        if let Some((table, key)) = r.doc.keys().next() {
            return Err(BoardError(format!(
                "{} needs [kernel] package",
                path(table, key)
            )));
        }
        if watchdog_device.is_some() && kernel.is_none() {
            return Err(BoardError(
                "'watchdog.device' is fed by PID 1 of a board that boots its own kernel: [kernel] is missing".into(),
            ));
        }
        if link == Link::Static && kernel.is_none() {
            return Err(BoardError(
                "a statically linked board boots its own kernel: [kernel] is missing".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for i in &interfaces {
            if i.is_empty() || i.len() > MAX_INTERFACE_NAME || !seen.insert(i) {
                return Err(BoardError(format!(
                    "interface '{i}': names are 1 to {MAX_INTERFACE_NAME} characters, each once"
                )));
            }
        }
        Ok(BoardFile {
            name,
            compatible,
            default_config,
            token,
            target,
            link,
            console_device,
            console_speed,
            interfaces,
            storage,
            kernel,
            watchdog_device,
            budget,
        })
    }
}

/// Linux's `IFNAMSIZ` is 16 with the terminating NUL.
pub const MAX_INTERFACE_NAME: usize = 15;

/// The serial line speeds the firmware can set (termios `B…` constants).
pub const SPEEDS: [u64; 8] = [9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600];

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: &str = r#"
name = "q"
default-config = "q/default.conf"
token = "soft"
[build]
target = "x86_64-unknown-linux-gnu"
link = "static"
[console]
device = "/dev/ttyS0"
speed = 115200
[network]
interfaces = ["eth0"]
[storage]
data-device = "/dev/vda"
data-mount = "/data"
state-dir = "/data/state"
firmware-slots = "/data/firmware"
[kernel]
package = "linux-image-amd64"
command-line = "console=ttyS0"
modules = ["virtio_net"]
[watchdog]
device = "/dev/watchdog"
[budget]
image = 100
"#;

    #[test]
    fn a_full_board_parses() {
        let b = BoardFile::parse(QEMU).unwrap();
        assert_eq!(b.compatible, "drawbridge,q");
        assert_eq!(b.link, Link::Static);
        assert_eq!(b.console_speed, 115200);
        assert_eq!(b.kernel.unwrap().modules, ["virtio_net"]);
        assert_eq!(b.budget.image, Some(100));
        assert_eq!(b.budget.kernel, None);
        assert_eq!(b.watchdog_device.as_deref(), Some("/dev/watchdog"));
    }

    #[test]
    fn mistakes_are_named() {
        for (from, to, expect) in [
            ("token = \"soft\"", "token = \"tpm\"", "'token'"),
            ("speed = 115200", "speed = 115201", "serial line speed"),
            ("speed = 115200", "speed = \"fast\"", "must be an integer"),
            ("link = \"static\"", "link = \"both\"", "build.link"),
            (
                "[budget]",
                "[budget]\nflash = 1",
                "unknown key 'budget.flash'",
            ),
            (
                "state-dir = \"/data/state\"",
                "state-dir = \"/var\"",
                "data disk",
            ),
            ("name = \"q\"", "name = \"Q!\"", "board name"),
            (
                "interfaces = [\"eth0\"]",
                "interfaces = [\"eth0\", \"eth0\"]",
                "each once",
            ),
            (
                "package = \"linux-image-amd64\"\n",
                "",
                "needs [kernel] package",
            ),
            ("data-device = \"/dev/vda\"\n", "", "go together"),
            (
                "[kernel]\npackage = \"linux-image-amd64\"\ncommand-line = \"console=ttyS0\"\nmodules = [\"virtio_net\"]\n",
                "",
                "'watchdog.device' is fed by PID 1",
            ),
        ] {
            let text = QEMU.replace(from, to);
            let e = BoardFile::parse(&text).unwrap_err();
            assert!(e.0.contains(expect), "{to:?}: {e}");
        }
    }
}
