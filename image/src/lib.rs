//! The firmware image format, the initramfs archive writer and the board file reader:
//! std only, shared by the firmware, its build script and `cargo xtask`.
//!
//! Nothing here hashes or signs: the format leaves room for the SHA-256 of each section
//! and for an Ed25519 signature, and the firmware fills and checks them with its own
//! crypto (see `image/FORMAT.md`).

pub mod board;
pub mod cpio;
pub mod format;
pub mod toml;
