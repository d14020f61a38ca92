//! PID 1 on a board that boots its own kernel (`qemu-x86_64`): mount what the firmware
//! needs, load the kernel modules, open the serial console, format and mount the data
//! disk, bring the network up from the configuration, run the gateway as a child and
//! start it again if it dies or its event loop stops beating (the watchdog), feed the
//! hardware watchdog, reap every child, and on a restart or power-off request stop the
//! gateway, write everything out, unmount and call `reboot(2)`.
//! **Invariant:** PID 1 runs no SMTP, TLS or DNS code (the gateway is its child), and
//! what it decides is decided in the pure [`plan`].
//!
//! The decisions are in [`plan`] (pure, tested); the system calls in `sys`; the
//! netlink messages in [`netlink`]. This module is the sequence that joins them.
//!
//! Two processes, on purpose: PID 1 stays small and never runs network code, so a crash
//! of the gateway is a restart of one process, not a kernel panic; and the gateway is
//! the same `drawbridge run` that runs on a developer machine.

pub mod firmware;
pub mod netlink;
mod sys;

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use drawbridge_image::initramfs;

use crate::board::BOARD;
pub use crate::proto::boot::Shutdown;
use crate::proto::boot::{Backoff, ConfigChoice, NetStep};
use crate::proto::config::Config;
use crate::proto::watchdog::{Notice, START_FLOOR, Verdict, Watch};

/// Whether this process is to act as init: it is PID 1 on a board with its own kernel.
pub fn should_run() -> bool {
    std::process::id() == 1 && BOARD.kernel_package.is_some()
}

/// Asks PID 1 to restart or power off the appliance (the console's `restart` and
/// power-off call this). PID 1 stops the gateway, this process included.
pub fn request(kind: Shutdown) -> io::Result<()> {
    // SAFETY: kill(2) has no memory arguments.
    if unsafe { libc::kill(1, crate::proto::boot::signal_for(kind)) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How long PID 1 waits for a device (the data disk, a NIC) to appear after its driver
/// is loaded; probing is asynchronous. Generous: emulated machines are slow.
const DEVICE_WAIT: Duration = Duration::from_secs(60);
/// How long the gateway has to exit after SIGTERM before it is killed, unless it asks
/// for longer (`EXTEND_TIMEOUT_USEC`, its `system stop-grace` and a margin).
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest a gateway may ask for: the longest stopping grace and a minute.
const MAX_STOP_WAIT: Duration = Duration::from_secs(11 * 60);
/// The program that formats the data disk: the board's `kernel.tools` put it in the
/// initramfs with its libraries.
const MKE2FS: &str = "/usr/sbin/mke2fs";
/// The data disk's file system label.
const DATA_LABEL: &str = "drawbridge";

/// Runs as PID 1. Never returns: the machine powers off or restarts.
pub fn main() -> ! {
    let signals = sys::handled_signals();
    let _ = sys::block(&signals);
    let _ = sys::ctrl_alt_del_to_signal();
    let early = early_mounts();
    let console = open_console();
    crate::io::log::init(&crate::board::default_config().system.host_name);
    log::info!(target: "init", "drawbridge {} for board {} starting as PID 1", env!("CARGO_PKG_VERSION"), BOARD.name);
    if let Err(e) = early {
        log::error!(target: "init", "mounting /proc, /sys and /dev: {e}");
    }
    if let Err(e) = console {
        log::error!(target: "init", "console {}: {e}", BOARD.console_device);
    }
    load_modules();
    let data = match mount_data_disk() {
        Ok(()) => true,
        Err(e) => {
            log::error!(target: "init", "data disk: {e}; state stays in memory and is lost at power-off");
            false
        }
    };
    let state_dir = PathBuf::from(BOARD.state_dir);
    let _ = std::fs::create_dir_all(&state_dir);
    let slot = if data {
        firmware::at_boot(&state_dir)
    } else {
        None
    };
    let config = boot_config(&state_dir);
    bring_up_network(&config);
    let watchdog = Watchdog::open(config.system.watchdog_timeout);
    let kind = supervise(&signals, &state_dir, slot, &watchdog);
    power_down(kind, &watchdog)
}

fn early_mounts() -> io::Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    sys::mount("proc", "/proc", "proc", flags, "")?;
    sys::mount("sysfs", "/sys", "sysfs", flags, "")?;
    sys::mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")
}

/// Opens the board's serial console, sets its line and makes it stdin, stdout and stderr.
fn open_console() -> io::Result<()> {
    if BOARD.console_device == "stdin" {
        return Ok(());
    }
    let speed = crate::proto::boot::termios_speed(BOARD.console_speed)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "unknown line speed"))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(BOARD.console_device)?;
    sys::console_termios(&file, speed)?;
    sys::make_stdio(&file)
}

fn load_modules() {
    let dir = Path::new("/").join(initramfs::MODULE_DIR);
    let order =
        std::fs::read_to_string(Path::new("/").join(initramfs::MODULE_ORDER)).unwrap_or_default();
    let mut loaded = 0;
    for name in crate::proto::boot::module_order(&order) {
        match sys::load_module(&dir.join(name)) {
            Ok(()) => loaded += 1,
            Err(e) => log::error!(target: "init", "kernel module {name}: {e}"),
        }
    }
    log::info!(target: "init", "{loaded} kernel module(s) loaded");
}

/// Polls until `path` exists or [`DEVICE_WAIT`] passes.
fn wait_for(path: &Path) -> bool {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > DEVICE_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Formats the data disk if it holds no file system, then mounts it.
fn mount_data_disk() -> io::Result<()> {
    let (Some(device), Some(mount)) = (BOARD.data_device, BOARD.data_mount) else {
        return Ok(());
    };
    if !wait_for(Path::new(device)) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{device} did not appear"),
        ));
    }
    let mut head = vec![0u8; crate::proto::boot::PROBE_LEN];
    File::open(device)?.read_exact(&mut head)?;
    if crate::proto::boot::needs_format(&head) {
        log::warn!(target: "init", "{device} holds no file system: formatting it (first boot)");
        let status = Command::new(MKE2FS)
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                DATA_LABEL,
                "-E",
                "nodiscard",
                device,
            ])
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!("{MKE2FS} failed ({status})")));
        }
    }
    sys::mount(
        device,
        mount,
        "ext4",
        libc::MS_NOATIME | libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOEXEC,
        "",
    )?;
    log::info!(target: "init", "data disk {device} mounted on {mount}");
    Ok(())
}

/// The configuration to boot with, which the gateway then runs from the stored slots.
/// An `initial.conf` on the data disk is a drop box: it is committed as a new
/// configuration at boot (by this process, before the gateway starts) and renamed
/// `initial.conf.loaded`, so that changes made since, at the console, survive restarts.
/// Without one the stored configuration rules; on a first boot, the factory one.
fn boot_config(state_dir: &Path) -> Config {
    let path = state_dir.join(crate::proto::boot::INITIAL_CONFIG);
    let text = std::fs::read_to_string(&path).ok();
    match crate::proto::boot::choose_config(text.as_deref()) {
        ConfigChoice::Factory => {}
        ConfigChoice::Initial(config) => {
            match crate::gateway::open_engine(
                state_dir,
                Some((path.as_path(), *config)),
                crate::board::default_config(),
            ) {
                Ok(opened) => {
                    log::info!(target: "init", "configuration: {} committed", path.display());
                    let done = path.with_extension("conf.loaded");
                    if let Err(e) = std::fs::rename(&path, &done) {
                        log::error!(target: "init", "cannot rename {}: {e}", path.display());
                    }
                    return opened.engine.running().clone();
                }
                Err(e) => log::error!(target: "init", "{}: {e}", path.display()),
            }
        }
        ConfigChoice::Broken(why) => {
            log::error!(target: "init", "{why}; it is left as it is and not used");
        }
    }
    if let Some(config) = stored_config(state_dir) {
        log::info!(target: "init", "configuration: the stored configuration");
        return config;
    }
    log::info!(target: "init", "configuration: the factory configuration");
    crate::board::default_config()
}

/// The newest stored configuration whose HMAC checks, when there is one.
fn stored_config(state_dir: &Path) -> Option<Config> {
    let store = crate::io::config::store::Store::open(state_dir).ok()?;
    store.peek_newest()?;
    match crate::gateway::open_engine(state_dir, None, crate::board::default_config()) {
        Ok(opened) => Some(opened.engine.running().clone()),
        Err(e) => {
            log::error!(target: "init", "the stored configuration: {e}");
            None
        }
    }
}

fn bring_up_network(config: &Config) {
    for (seq, step) in crate::proto::boot::network_plan(BOARD.interfaces, config)
        .into_iter()
        .enumerate()
    {
        let seq = seq as u32 + 1;
        let result = match &step {
            NetStep::Up(name) => {
                if name != "lo" {
                    wait_for(&Path::new("/sys/class/net").join(name));
                }
                sys::interface_up(name).map(|_| ())
            }
            NetStep::Address(name, a) => sys::interface_up(name)
                .and_then(|index| netlink::transact(&netlink::new_address(seq, index, *a), seq)),
            NetStep::DefaultRoute(gw) => netlink::transact(&netlink::default_route(seq, *gw), seq),
            NetStep::Unknown(name) => {
                log::warn!(target: "init", "interface {name} is configured but this board has no such interface");
                continue;
            }
        };
        match result {
            Ok(()) => log::info!(target: "init", "network: {}", describe(&step)),
            Err(e) => log::error!(target: "init", "network: {}: {e}", describe(&step)),
        }
    }
}

fn describe(step: &NetStep) -> String {
    match step {
        NetStep::Up(name) => format!("{name} up"),
        NetStep::Address(name, a) => format!("{name} address {a}"),
        NetStep::DefaultRoute(gw) => format!("default route via {gw}"),
        NetStep::Unknown(name) => format!("{name} unknown"),
    }
}

/// Where the gateway's notifications (`READY=1`, `WATCHDOG=1`) come in.
const NOTIFY_SOCKET: &str = "/run/drawbridge/notify";
/// The hardware watchdog's timeout while PID 1 writes everything out and unmounts,
/// which on a slow disk may take longer than a short gateway timeout: a hang there
/// still resets the machine, later.
const POWER_DOWN_WATCHDOG: Duration = Duration::from_secs(300);

/// What watches for hangs: the gateway's beats on [`NOTIFY_SOCKET`] (`system watchdog
/// timeout`, see `crate::proto::watchdog`), and the board's hardware watchdog, fed by
/// this loop, for a hang of PID 1 or the kernel.
struct Watchdog {
    /// Zero: the gateway's beats are not timed and the hardware watchdog stays closed.
    timeout: Duration,
    notify: Option<std::os::unix::net::UnixDatagram>,
    hardware: Option<sys::HardwareWatchdog>,
    /// The watchdog test asked PID 1 to stop feeding the hardware watchdog.
    starving: std::cell::Cell<bool>,
}

impl Watchdog {
    fn open(timeout: Duration) -> Watchdog {
        let notify = match notify_socket() {
            Ok(socket) => Some(socket),
            Err(e) => {
                log::error!(target: "init", "{NOTIFY_SOCKET}: {e}; the gateway's readiness and beats are not heard");
                None
            }
        };
        let mut hardware = None;
        if timeout.is_zero() {
            log::warn!(target: "init", "watchdog: off (system watchdog timeout 0s)");
        } else if let Some(device) = BOARD.watchdog_device {
            match sys::HardwareWatchdog::open(device, timeout) {
                Ok((dog, secs)) => {
                    log::info!(target: "init", "watchdog: {device} armed, {secs} s");
                    hardware = Some(dog);
                }
                Err(e) => {
                    log::error!(target: "init", "watchdog: {device}: {e}; a hang of PID 1 or the kernel is not caught")
                }
            }
        }
        Watchdog {
            timeout,
            notify,
            hardware,
            starving: std::cell::Cell::new(false),
        }
    }

    fn feed(&self) {
        if self.starving.get() {
            return;
        }
        if let Some(dog) = &self.hardware {
            dog.feed();
        }
    }

    /// `system watchdog-test hardware`: feeds no more, so that the hardware watchdog
    /// resets the machine, as it would if PID 1 or the kernel hung.
    fn starve(&self) {
        match (&self.hardware, BOARD.watchdog_device) {
            (Some(_), Some(device)) => {
                log::warn!(target: "init", "watchdog test: {device} is fed no more; the machine resets within {} s",
                    self.timeout.as_secs());
                self.starving.set(true);
            }
            _ => {
                log::warn!(target: "init", "watchdog test: no hardware watchdog is armed; nothing to starve")
            }
        }
    }

    /// The notices waiting on the socket, oldest first.
    fn notices(&self) -> Vec<Notice> {
        let mut out = Vec::new();
        let Some(socket) = &self.notify else {
            return out;
        };
        let mut buf = [0u8; crate::proto::watchdog::MAX_DATAGRAM];
        while let Ok(n) = socket.recv(&mut buf) {
            out.extend(crate::proto::watchdog::parse(&buf[..n]));
        }
        out
    }
}

fn notify_socket() -> io::Result<std::os::unix::net::UnixDatagram> {
    let path = Path::new(NOTIFY_SOCKET);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let socket = std::os::unix::net::UnixDatagram::bind(path)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn start_gateway(state_dir: &Path, watchdog: &Watchdog) -> io::Result<Child> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/init"));
    // Standard input and output are the serial console this process opened: the
    // gateway runs its console there.
    let mut command = Command::new(exe);
    command.arg("run").arg("--state-dir").arg(state_dir);
    if watchdog.notify.is_some() {
        command.env("NOTIFY_SOCKET", NOTIFY_SOCKET);
        if !watchdog.timeout.is_zero() {
            command.env("WATCHDOG_USEC", watchdog.timeout.as_micros().to_string());
        }
    }
    // Notices of a gateway that is gone are not this one's.
    let _ = watchdog.notices();
    // This process blocks the signals it waits for; a mask survives exec, so the child
    // starts with none blocked (else SIGTERM and SIGHUP would never reach the gateway).
    sys::unblock_signals_in_child(&mut command);
    command.spawn()
}

/// Runs the gateway until a shutdown request; returns the request.
fn supervise(
    signals: &libc::sigset_t,
    state_dir: &Path,
    mut unconfirmed: Option<firmware::Slot>,
    watchdog: &Watchdog,
) -> Shutdown {
    let mut backoff = Backoff::default();
    // The gateway, when it runs: its process, when it started, what it said.
    let mut gateway: Option<(Child, Instant, Watch)> = None;
    let mut start_at = Some(Instant::now());
    loop {
        watchdog.feed();
        if let Some(at) = start_at
            && Instant::now() >= at
        {
            start_at = None;
            match start_gateway(state_dir, watchdog) {
                Ok(child) => {
                    let now = Instant::now();
                    gateway = Some((child, now, Watch::new(watchdog.timeout, now)))
                }
                Err(e) => {
                    log::error!(target: "init", "cannot start the gateway: {e}");
                    start_at = Some(Instant::now() + backoff.after_exit(Duration::ZERO));
                }
            }
        }
        if let Some((child, _, watch)) = &mut gateway {
            let now = Instant::now();
            for notice in watchdog.notices() {
                if notice == Notice::Ready && watch.ready_at().is_none() {
                    log::info!(target: "init", "the gateway is ready");
                }
                if notice == Notice::StarveHardware {
                    watchdog.starve();
                }
                watch.notice(notice, now);
            }
            let why = match watch.verdict(now) {
                _ if watchdog.timeout.is_zero() => None,
                Verdict::Silent(silent) => Some(format!(
                    "the gateway's event loop has been silent for {} s (system watchdog timeout {} s)",
                    silent.as_secs(),
                    watchdog.timeout.as_secs()
                )),
                Verdict::NotReady(since) => Some(format!(
                    "the gateway started {} s ago and is not ready, with no progress reported (system watchdog timeout {} s, at least {} s to start)",
                    since.as_secs(),
                    watchdog.timeout.as_secs(),
                    START_FLOOR.as_secs()
                )),
                Verdict::StopOverdue(since) => Some(format!(
                    "the gateway began to stop {} s ago and has neither ended nor been heard from since the time it asked for",
                    since.as_secs()
                )),
                Verdict::Starting | Verdict::Stopping | Verdict::Alive | Verdict::Untimed => None,
            };
            if let Some(why) = why {
                log::error!(target: "init", "{why}: killing it ({})", process_state(child.id()));
                sys::kill(child.id() as i32, libc::SIGKILL);
                // Killed once: not timed again, what follows is its exit (below).
                watch.killed();
            }
        }
        if let (Some(slot), Some((_, started, watch))) = (unconfirmed, &gateway) {
            // Booted well: the gateway has served (or, where its notices cannot be
            // heard, run) for a while.
            let since = if watchdog.notify.is_some() {
                watch.ready_at()
            } else {
                Some(*started)
            };
            if since.is_some_and(|at| at.elapsed() >= firmware::CONFIRM_AFTER) {
                firmware::confirm_boot(slot);
                unconfirmed = None;
            }
        }
        let mut timeout = start_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        if unconfirmed.is_some() || watchdog.notify.is_some() || watchdog.hardware.is_some() {
            timeout = timeout.min(Duration::from_secs(1));
        }
        let Some(signal) = sys::wait_signal(signals, timeout) else {
            continue;
        };
        if let Some(kind) = crate::proto::boot::signal_request(signal) {
            log::info!(target: "init", "{} requested", match kind {
                Shutdown::PowerOff => "power-off",
                Shutdown::Restart => "restart",
            });
            stop_gateway(gateway.take().map(|(c, _, _)| c), watchdog);
            return kind;
        }
        while let Some((pid, status)) = sys::reap() {
            if let Some((child, started, _)) = &gateway
                && child.id() as i32 == pid
            {
                let status = std::process::ExitStatus::from_raw(status);
                if let Some(slot) = unconfirmed {
                    // A slot on trial whose gateway dies has not booted well: restart,
                    // and the boot stage falls back.
                    log::error!(target: "init", "the gateway of slot {slot} exited ({status}) before the slot was confirmed; restarting to fall back");
                    return Shutdown::Restart;
                }
                let wait = backoff.after_exit(started.elapsed());
                log::error!(target: "init", "the gateway exited ({status}); starting it again in {}s", wait.as_secs());
                gateway = None;
                start_at = Some(Instant::now() + wait);
            }
        }
    }
}

/// SIGTERM to the gateway, SIGKILL after [`STOP_GRACE`] or the longer time it asks for;
/// then the same for anything else still running.
fn stop_gateway(gateway: Option<Child>, watchdog: &Watchdog) {
    if let Some(mut child) = gateway {
        sys::kill(child.id() as i32, libc::SIGTERM);
        let start = Instant::now();
        let mut deadline = start + STOP_GRACE;
        loop {
            watchdog.feed();
            for notice in watchdog.notices() {
                if let Notice::ExtendTimeout(more) = notice {
                    deadline = deadline.max(Instant::now() + more.min(MAX_STOP_WAIT));
                }
            }
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    log::warn!(target: "init", "the gateway did not stop in {}s: killing it ({})",
                        start.elapsed().as_secs(), process_state(child.id()));
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    sys::kill(-1, libc::SIGKILL);
    while sys::reap().is_some() {}
}

/// What the kernel says of a process that does not stop or has hung: its state, the
/// signals it blocks and has pending, and where each of its threads waits.
fn process_state(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut out: Vec<String> = status
        .lines()
        .filter(|l| {
            [
                "State:", "SigPnd:", "ShdPnd:", "SigBlk:", "SigCgt:", "Threads:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let wchan = std::fs::read_to_string(task.path().join("wchan")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("?");
            out.push(format!(
                "task {} {state} {wchan}",
                task.file_name().to_string_lossy()
            ));
        }
    }
    out.join(", ")
}

/// Writes everything out, unmounts the data disk and powers off or restarts.
fn power_down(kind: Shutdown, watchdog: &Watchdog) -> ! {
    if let Some(dog) = &watchdog.hardware {
        let _ = dog.set_timeout(POWER_DOWN_WATCHDOG);
        dog.feed();
    }
    sys::sync();
    if let Some(mount) = BOARD.data_mount
        && let Err(e) = sys::unmount_or_read_only(mount)
    {
        log::error!(target: "init", "unmounting {mount}: {e}");
    }
    sys::sync();
    log::info!(target: "init", "{}", match kind {
        Shutdown::PowerOff => "powering off",
        Shutdown::Restart => "restarting",
    });
    let e = sys::reboot(kind == Shutdown::PowerOff);
    log::error!(target: "init", "reboot(2) failed: {e}");
    // PID 1 must not exit: the kernel would panic. Wait for a person.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
