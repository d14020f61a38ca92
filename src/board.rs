//! The board this firmware was built for: constants generated at build time from
//! `board/<name>.toml` (selected with `DRAWBRIDGE_BOARD`, default `host`) by `build.rs`.
//!
//! Code asks these constants what the board has (a data disk, firmware slots, a serial
//! console); there is no `cfg` branch per board anywhere.

use crate::proto::config::Config;

pub use drawbridge_image::board::{Link, TokenBackend};

/// What one board is, as the firmware needs it at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    pub name: &'static str,
    /// What images for this board say they are for (the image header's board field).
    pub compatible: &'static str,
    pub target: &'static str,
    pub link: Link,
    pub token: TokenBackend,
    /// `stdin`, or the serial device the console runs on.
    pub console_device: &'static str,
    /// The serial line's speed in bit/s; 0 for stdin.
    pub console_speed: u32,
    /// The interfaces brought up from the configuration at boot.
    pub interfaces: &'static [&'static str],
    /// The data disk's block device, formatted on first boot.
    pub data_device: Option<&'static str>,
    pub data_mount: Option<&'static str>,
    /// Configuration slots (`config/`), spool (`spool/`), token and certificates.
    pub state_dir: &'static str,
    /// Where `system update` writes firmware slots; none where updates are not taken.
    pub firmware_slots: Option<&'static str>,
    pub kernel_package: Option<&'static str>,
    pub kernel_command_line: Option<&'static str>,
    /// The hardware watchdog device PID 1 feeds, when the board has one.
    pub watchdog_device: Option<&'static str>,
    pub budget: Budget,
}

/// Size budgets in bytes, checked when an image is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub binary: Option<u64>,
    pub kernel: Option<u64>,
    pub initramfs: Option<u64>,
    pub image: Option<u64>,
}

include!(concat!(env!("OUT_DIR"), "/board.rs"));

/// The board's factory configuration, parsed.
pub fn default_config() -> Config {
    // INVARIANT: every board's default configuration is tested to parse (tests/boards.rs).
    crate::proto::config::text::parse(DEFAULT_CONFIG)
        .expect("the board's default configuration parses")
}
