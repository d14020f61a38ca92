//! Firmware updates with two slots on the data disk, A and B (`storage.firmware-slots`
//! of the board; `/data/firmware` on `qemu-x86_64`):
//!
//! ```text
//! a.img, b.img   whole signed images, as `system update` received them
//! state          active=a|b|none, pending=a|b|none, trying=yes|no
//! ```
//!
//! The firmware the machine starts (on QEMU: `-kernel`/`-initrd`, the factory image) is
//! the boot stage. Its PID 1 reads `state` after mounting the data disk: a pending slot
//! is tried once (`trying=yes` is written first), verified again and started with
//! `kexec_file_load(2)`, its kernel command line saying `drawbridge.slot=X`. That
//! firmware marks the slot active once its gateway has been ready (serving, and beating
//! for the watchdog) for [`CONFIRM_AFTER`]. A boot that never gets there (a panic
//! reboots the machine; a gateway that exits, or hangs once ready, restarts it) finds
//! `trying=yes` on the next start, and the boot stage drops the slot and falls back to
//! the active slot, or to itself. A slot that fails verification is dropped the same
//! way.
//!
//! [`decide`] and [`confirm`] make the decisions; the rest is files and system calls.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use drawbridge_image::format::SectionKind;

use crate::board::BOARD;
use crate::image::{Trust, VerifyError};
use crate::io::token::Token;

/// One of the two firmware slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    fn parse(s: &str) -> Option<Option<Slot>> {
        match s {
            "a" => Some(Some(Slot::A)),
            "b" => Some(Some(Slot::B)),
            "none" => Some(None),
            _ => None,
        }
    }

    fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The slot's image file in the slots folder.
    pub fn file(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.img", self.name()))
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The slots' state file, parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootState {
    /// The slot that booted and confirmed last; none: the boot stage runs itself.
    pub active: Option<Slot>,
    /// A slot written by `system update` and not yet confirmed.
    pub pending: Option<Slot>,
    /// The pending slot has been started once already.
    pub trying: bool,
}

fn show(slot: Option<Slot>) -> &'static str {
    slot.map_or("none", Slot::name)
}

impl BootState {
    /// Parses the state file; anything unexpected is `None`, which callers treat as no
    /// state at all (the boot stage runs itself).
    pub fn parse(text: &str) -> Option<BootState> {
        let mut state = BootState::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once('=')?;
            match key.trim() {
                "active" => state.active = Slot::parse(value.trim())?,
                "pending" => state.pending = Slot::parse(value.trim())?,
                "trying" => {
                    state.trying = match value.trim() {
                        "yes" => true,
                        "no" => false,
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        Some(state)
    }

    pub fn print(&self) -> String {
        format!(
            "active={}\npending={}\ntrying={}\n",
            show(self.active),
            show(self.pending),
            if self.trying { "yes" } else { "no" }
        )
    }
}

/// What the boot stage does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootAction {
    /// Run this firmware.
    Stay,
    /// Start the slot's firmware.
    Start(Slot),
}

/// The boot stage's decision and the state to write before acting on it; the second
/// value names a pending slot that failed its trial boot.
pub fn decide(state: BootState) -> (BootState, BootAction, Option<Slot>) {
    match (state.pending, state.trying) {
        (Some(p), false) => (
            BootState {
                trying: true,
                ..state
            },
            BootAction::Start(p),
            None,
        ),
        (Some(p), true) => {
            let next = BootState {
                active: state.active.filter(|a| *a != p),
                pending: None,
                trying: false,
            };
            let action = next.active.map_or(BootAction::Stay, BootAction::Start);
            (next, action, Some(p))
        }
        (None, _) => (
            BootState {
                trying: false,
                ..state
            },
            state.active.map_or(BootAction::Stay, BootAction::Start),
            None,
        ),
    }
}

/// The state after `slot` could not be started (it failed verification or loading).
pub fn drop_slot(state: BootState, slot: Slot) -> BootState {
    BootState {
        active: state.active.filter(|a| *a != slot),
        pending: state.pending.filter(|p| *p != slot),
        trying: state.trying && state.pending != Some(slot),
    }
}

/// The state once the firmware booted from `slot` has run well: the pending slot it was
/// booted on trial from becomes active. `None` when nothing changes (a slot written
/// since, but never booted, is not confirmed by another's run).
pub fn confirm(state: BootState, slot: Slot) -> Option<BootState> {
    (state.trying && state.pending == Some(slot)).then_some(BootState {
        active: Some(slot),
        pending: None,
        trying: false,
    })
}

/// Whether a boot from `slot` is its trial boot. A boot of the confirmed slot is not:
/// its gateway dying early is restarted with backoff like any other, not a reason to
/// restart the machine (which would start the same slot again, in a loop).
pub fn on_trial(state: BootState, slot: Slot) -> bool {
    state.trying && state.pending == Some(slot)
}

/// The slot `system update` writes: the one not active.
pub fn inactive(state: BootState) -> Slot {
    state.active.map_or(Slot::A, Slot::other)
}

/// The slot named by `drawbridge.slot=` on a kernel command line.
pub fn booted_slot(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(SLOT_PARAMETER))
        .and_then(|v| Slot::parse(v).flatten())
}

/// The kernel command-line parameter that tells a slot's firmware which slot it is.
pub const SLOT_PARAMETER: &str = "drawbridge.slot=";
/// How long a slot's gateway must have been ready before the slot counts as booted well.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(20);
/// The state file in the slots folder.
const STATE_FILE: &str = "state";
/// The largest image read into memory: 256 MiB, five times the `qemu-x86_64` image
/// budget (48 MiB) and half the QEMU guest's memory.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// Reads an image file, refusing one larger than [`MAX_IMAGE_BYTES`] before reading it.
pub fn read_image(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_IMAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes: an image is at most {MAX_IMAGE_BYTES}"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_IMAGE_BYTES + 1),
        &mut bytes,
    )?;
    if bytes.len() as u64 > MAX_IMAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the image grew while it was read",
        ));
    }
    Ok(bytes)
}

/// The slots folder, if this board takes updates.
pub fn slots_dir() -> Option<&'static Path> {
    BOARD.firmware_slots.map(Path::new)
}

/// Reads the state; a missing or damaged file is the empty state.
pub fn read_state(dir: &Path) -> BootState {
    fs::read_to_string(dir.join(STATE_FILE))
        .ok()
        .and_then(|t| BootState::parse(&t))
        .unwrap_or_default()
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, folder fsync.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

pub fn write_state(dir: &Path, state: BootState) -> io::Result<()> {
    write_durably(&dir.join(STATE_FILE), state.print().as_bytes())
}

/// Why an update was not installed.
#[derive(Debug)]
pub enum UpdateError {
    /// This board keeps no firmware slots.
    NoSlots,
    /// A slot is on trial: it may be the one running, and its confirmation would make
    /// an image never booted the active one.
    OnTrial(Slot),
    Verify(VerifyError),
    Io(io::Error),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::NoSlots => write!(f, "board {} takes no firmware updates", BOARD.name),
            UpdateError::OnTrial(slot) => write!(
                f,
                "slot {slot} is on trial and not yet confirmed (its gateway must run 20 s): update once it is, or after the reboot that falls back"
            ),
            UpdateError::Verify(e) => write!(f, "image refused: {e}"),
            UpdateError::Io(e) => write!(f, "writing the firmware slot: {e}"),
        }
    }
}

impl std::error::Error for UpdateError {}

/// `system update`: verifies `image` completely, then writes it to the inactive slot
/// and marks that slot pending. Nothing is written unless the image verifies.
pub fn update(
    token: &dyn Token,
    trust: &Trust<'_>,
    image: &[u8],
    dir: &Path,
) -> Result<Slot, UpdateError> {
    crate::image::verify(token, trust, image).map_err(UpdateError::Verify)?;
    let state = read_state(dir);
    if let Some(trial) = state.pending.filter(|_| state.trying) {
        return Err(UpdateError::OnTrial(trial));
    }
    let slot = inactive(state);
    write_durably(&slot.file(dir), image).map_err(UpdateError::Io)?;
    write_state(
        dir,
        BootState {
            pending: Some(slot),
            trying: false,
            ..state
        },
    )
    .map_err(UpdateError::Io)?;
    Ok(slot)
}

/// `system update FILE`, from the command line or the console: reads the image at
/// `file` (bounded), verifies it through `token` against this build's trust and writes
/// it to the inactive slot; what to tell the administrator.
pub fn update_from_file(token: &dyn Token, file: &Path) -> Result<String, String> {
    let dir = slots_dir().ok_or_else(|| UpdateError::NoSlots.to_string())?;
    let bytes = read_image(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let slot = update(token, &trust(), &bytes, dir).map_err(|e| e.to_string())?;
    Ok(format!(
        "{} verified and written to slot {slot}; it starts at the next system reboot\n",
        file.display()
    ))
}

/// The trust of this build: its compiled-in keys and its board.
pub fn trust() -> Trust<'static> {
    Trust {
        keys: crate::board::TRUSTED_IMAGE_KEYS,
        compatible: BOARD.compatible,
    }
}

/// The boot stage's work, called by PID 1 once the data disk is mounted: returns the
/// slot this firmware was started from when that boot is its trial (to be confirmed, or
/// fallen back from if the gateway dies first). Starting a slot does not return.
pub fn at_boot(state_dir: &Path) -> Option<Slot> {
    let dir = slots_dir()?;
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(slot) = booted_slot(&cmdline) {
        let trial = on_trial(read_state(dir), slot);
        log::info!(target: "init", "firmware: running from slot {slot}{}",
            if trial { ", on trial" } else { "" });
        return trial.then_some(slot);
    }
    let mut state = read_state(dir);
    loop {
        let (next, action, failed) = decide(state);
        if let Some(slot) = failed {
            log::error!(target: "init", "firmware: slot {slot} did not boot; falling back to {}", show(next.active));
        }
        if next != state && write_state(dir, next).is_err() {
            log::error!(target: "init", "firmware: cannot write the slot state; staying on this firmware");
            return None;
        }
        state = next;
        let BootAction::Start(slot) = action else {
            return None;
        };
        match start(state_dir, dir, slot, &cmdline) {
            Ok(never) => match never {},
            Err(e) => {
                log::error!(target: "init", "firmware: cannot start slot {slot}: {e}");
                state = drop_slot(state, slot);
                if write_state(dir, state).is_err() {
                    return None;
                }
            }
        }
    }
}

/// Called by PID 1 when the gateway has been ready for [`CONFIRM_AFTER`]: the slot it booted
/// from becomes the active one.
pub fn confirm_boot(slot: Slot) {
    let Some(dir) = slots_dir() else { return };
    if let Some(next) = confirm(read_state(dir), slot) {
        match write_state(dir, next) {
            Ok(()) => {
                log::info!(target: "init", "firmware: slot {slot} booted well and is now active")
            }
            Err(e) => log::error!(target: "init", "firmware: confirming slot {slot}: {e}"),
        }
    }
}

/// An empty enum: a function returning `Result<Never, E>` returns only on error.
pub enum Never {}

/// Verifies a slot and starts its kernel with `kexec_file_load(2)`.
fn start(state_dir: &Path, dir: &Path, slot: Slot, cmdline: &str) -> io::Result<Never> {
    let bytes = read_image(&slot.file(dir))?;
    // Verifying needs no key of ours and no login: a transient token, not the gateway's
    // (whose PIN file may be a PKCS#11 token's, which the boot stage does not load).
    let token = crate::image::TransientToken::new_in(state_dir)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let image = crate::image::verify(&token.token, &trust(), &bytes)
        .map_err(|e| io::Error::other(e.to_string()))?;
    // Gone before the kexec, which does not return to drop it.
    drop(token);
    let section = |kind| {
        image
            .section(kind)
            .map(|s| image.bytes(&bytes, s))
            .ok_or_else(|| io::Error::other("section missing"))
    };
    let kernel = memfd("kernel", section(SectionKind::Kernel)?)?;
    let initramfs = memfd("initramfs", section(SectionKind::Initramfs)?)?;
    let line = format!("{} {SLOT_PARAMETER}{slot}", cmdline.trim());
    let cline = std::ffi::CString::new(line.clone()).map_err(io::Error::other)?;
    // SAFETY: valid descriptors and a NUL-terminated command line of the given length.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initramfs.as_raw_fd(),
            line.len() + 1,
            cline.as_ptr(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    log::info!(target: "init", "firmware: starting slot {slot} (version {})", image.metadata.version);
    super::sys::sync();
    if let Some(mount) = BOARD.data_mount {
        let _ = super::sys::unmount_or_read_only(mount);
    }
    super::sys::sync();
    // SAFETY: reboot(2) into the loaded kernel.
    unsafe { libc::reboot(libc::RB_KEXEC) };
    Err(io::Error::last_os_error())
}

/// An anonymous in-memory file holding `bytes`, at offset 0.
fn memfd(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a valid name; the descriptor is owned below.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = File::from(owned);
    file.write_all(bytes)?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: BootState = BootState {
        active: None,
        pending: None,
        trying: false,
    };

    #[test]
    fn state_file_round_trips_and_damage_is_empty_state() {
        let s = BootState {
            active: Some(Slot::A),
            pending: Some(Slot::B),
            trying: true,
        };
        assert_eq!(BootState::parse(&s.print()), Some(s));
        assert_eq!(BootState::parse(""), Some(EMPTY));
        assert_eq!(BootState::parse("active=c\n"), None);
        assert_eq!(BootState::parse("trying=maybe\n"), None);
        assert_eq!(BootState::parse("other=a\n"), None);
    }

    #[test]
    fn a_pending_slot_is_tried_once_then_dropped() {
        let updated = BootState {
            active: Some(Slot::A),
            pending: Some(Slot::B),
            trying: false,
        };
        let (trying, action, failed) = decide(updated);
        assert_eq!(action, BootAction::Start(Slot::B));
        assert!(trying.trying && failed.is_none());
        // The trial boot never confirmed: back to the active slot.
        let (after, action, failed) = decide(trying);
        assert_eq!(failed, Some(Slot::B));
        assert_eq!(action, BootAction::Start(Slot::A));
        assert_eq!(
            after,
            BootState {
                active: Some(Slot::A),
                pending: None,
                trying: false
            }
        );
        // With no active slot, the boot stage runs itself.
        let first = BootState {
            pending: Some(Slot::A),
            trying: true,
            ..EMPTY
        };
        assert_eq!(decide(first).1, BootAction::Stay);
        assert_eq!(decide(EMPTY), (EMPTY, BootAction::Stay, None));
    }

    #[test]
    fn confirmation_makes_the_pending_slot_active() {
        let trying = BootState {
            active: Some(Slot::A),
            pending: Some(Slot::B),
            trying: true,
        };
        let confirmed = confirm(trying, Slot::B).unwrap();
        assert_eq!(confirmed.active, Some(Slot::B));
        assert_eq!(decide(confirmed).1, BootAction::Start(Slot::B));
        assert_eq!(confirm(confirmed, Slot::B), None);
        assert_eq!(inactive(confirmed), Slot::A);
        assert_eq!(inactive(EMPTY), Slot::A);
    }

    #[test]
    fn only_the_boot_of_a_slot_on_trial_is_a_trial() {
        let trying = BootState {
            active: Some(Slot::A),
            pending: Some(Slot::B),
            trying: true,
        };
        assert!(on_trial(trying, Slot::B));
        // The confirmed slot: its gateway dying early is restarted, not the machine.
        assert!(!on_trial(trying, Slot::A));
        let confirmed = confirm(trying, Slot::B).unwrap();
        assert!(!on_trial(confirmed, Slot::B));
        // Written but not yet started: not on trial either.
        let written = BootState {
            trying: false,
            ..trying
        };
        assert!(!on_trial(written, Slot::B));
    }

    #[test]
    fn a_slot_that_cannot_start_is_dropped() {
        let s = BootState {
            active: Some(Slot::A),
            pending: Some(Slot::B),
            trying: true,
        };
        assert_eq!(
            drop_slot(s, Slot::B),
            BootState {
                active: Some(Slot::A),
                pending: None,
                trying: false
            }
        );
        assert_eq!(
            drop_slot(s, Slot::A),
            BootState {
                active: None,
                pending: Some(Slot::B),
                trying: true
            }
        );
    }

    #[test]
    fn images_over_the_bound_are_refused_before_they_are_read() {
        let dir = std::env::temp_dir().join(format!("drawbridge-big-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.img");
        let f = File::create(&path).unwrap();
        f.set_len(MAX_IMAGE_BYTES).unwrap();
        assert_eq!(read_image(&path).unwrap().len() as u64, MAX_IMAGE_BYTES);
        f.set_len(MAX_IMAGE_BYTES + 1).unwrap();
        let e = read_image(&path).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_booted_slot_comes_from_the_command_line() {
        assert_eq!(
            booted_slot("console=ttyS0 quiet drawbridge.slot=b"),
            Some(Slot::B)
        );
        assert_eq!(booted_slot("console=ttyS0"), None);
        assert_eq!(booted_slot("drawbridge.slot=c"), None);
    }

    #[test]
    fn update_verifies_before_writing_and_writes_the_inactive_slot() {
        use crate::image::{TransientToken, generate_key, raw_public_key, seal};
        let (t, key) = TransientToken::with_key(&generate_key().unwrap()).unwrap();
        let public = raw_public_key(&t.token, key).unwrap();
        let trust = Trust {
            keys: &[public],
            compatible: "drawbridge,test",
        };
        let mut image = crate::image::tests::unsealed("drawbridge,test");
        seal(&t.token, key, &mut image).unwrap();
        let dir = std::env::temp_dir().join(format!("drawbridge-slots-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut bad = image.clone();
        bad[700] ^= 1;
        assert!(matches!(
            update(&t.token, &trust, &bad, &dir),
            Err(UpdateError::Verify(_))
        ));
        assert!(!dir.exists(), "nothing is written for a refused image");
        assert_eq!(update(&t.token, &trust, &image, &dir).unwrap(), Slot::A);
        assert_eq!(fs::read(Slot::A.file(&dir)).unwrap(), image);
        let state = read_state(&dir);
        assert_eq!(state.pending, Some(Slot::A));
        // Written but never booted, it is not confirmed.
        assert_eq!(confirm(state, Slot::A), None);
        // Booted on trial (the boot stage says so before it starts the slot): no update
        // goes in while it is, and its run confirms it.
        let trial = BootState {
            trying: true,
            ..state
        };
        write_state(&dir, trial).unwrap();
        assert!(matches!(
            update(&t.token, &trust, &image, &dir),
            Err(UpdateError::OnTrial(Slot::A))
        ));
        assert_eq!(read_state(&dir), trial);
        write_state(&dir, confirm(trial, Slot::A).unwrap()).unwrap();
        assert_eq!(update(&t.token, &trust, &image, &dir).unwrap(), Slot::B);
        assert_eq!(
            read_state(&dir),
            BootState {
                active: Some(Slot::A),
                pending: Some(Slot::B),
                trying: false
            }
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
