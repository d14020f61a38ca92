//! The firmware image format, the initramfs archive writer and the board file reader:
//! std only, shared by the firmware, its build script and `cargo xtask`.
//!
//! Nothing here hashes or signs: the format leaves room for the SHA-256 of each section
//! and for an Ed25519 signature, and the firmware fills and checks them with its own
//! crypto (see `image/FORMAT.md`).

pub mod board;
pub mod cpio;
pub mod format;
pub mod qemu;
pub mod toml;

/// Where things are in an appliance's initramfs: written by `cargo xtask build-image`,
/// read by the firmware running as PID 1.
pub mod initramfs {
    /// The firmware binary, which the kernel starts as PID 1.
    pub const INIT: &str = "init";
    /// The kernel modules, flat, by file name.
    pub const MODULE_DIR: &str = "lib/modules";
    /// The modules' file names in load order (dependencies first), one per line.
    pub const MODULE_ORDER: &str = "lib/modules/load-order";
}
