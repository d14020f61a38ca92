//! The system calls PID 1 makes, each wrapped once: mount, unmount, module loading,
//! the serial line's termios, interface flags, signals, the hardware watchdog, reboot.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2). `EBUSY` (already mounted there) counts as done.
pub fn mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    let (source, target, fstype, data) = (
        cstring(source)?,
        cstring(target)?,
        cstring(fstype)?,
        cstring(data)?,
    );
    // SAFETY: every pointer is a valid NUL-terminated string for the call's duration.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    match check(rc) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => other,
    }
}

/// Unmounts `target`; if something still holds it, remounts it read-only instead, which
/// also writes everything out.
pub fn unmount_or_read_only(target: &str) -> io::Result<()> {
    let t = cstring(target)?;
    // SAFETY: t is a valid NUL-terminated string.
    if unsafe { libc::umount2(t.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let none = cstring("")?;
    // SAFETY: as above; a remount needs no source or type.
    check(unsafe {
        libc::mount(
            none.as_ptr(),
            t.as_ptr(),
            none.as_ptr(),
            libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        )
    })
}

/// finit_module(2) from a file. `EEXIST` (already loaded) counts as done.
pub fn load_module(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let params = cstring("")?;
    // SAFETY: a valid descriptor and NUL-terminated parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    match check(rc as libc::c_int) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Puts a serial line into the console's mode: `speed` bit/s, 8N1, receiver on, no
/// modem control; input raw (no line editing, echo, signals or flow control: the
/// console reads byte by byte); output keeps its newline translation so log lines end
/// in CR LF on the terminal.
pub fn console_termios(file: &File, speed: libc::speed_t) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; t is valid for writes.
    check(unsafe { libc::tcgetattr(fd, &mut t) })?;
    t.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON);
    t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
    t.c_cflag &= !(libc::CSIZE | libc::PARENB | libc::CSTOPB | libc::CRTSCTS);
    t.c_cflag |= libc::CS8 | libc::CREAD | libc::CLOCAL;
    t.c_oflag |= libc::OPOST | libc::ONLCR;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    crate::io::tty::set_speed(&mut t, speed);
    // SAFETY: fd is open; t is valid.
    check(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) })
}

/// Makes `file` standard input, output and error.
pub fn make_stdio(file: &File) -> io::Result<()> {
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; file stays open.
        check(unsafe { libc::dup2(file.as_raw_fd(), target) })?;
    }
    Ok(())
}

/// Sets an interface up (`SIOCSIFFLAGS` with `IFF_UP`) and returns its index.
pub fn interface_up(name: &str) -> io::Result<u32> {
    let cname = cstring(name)?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket(2); closed below through OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned here.
    let _owner = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: req is valid for the ioctl's reads and writes.
    check(unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the union's flags member is what SIOCGIFFLAGS filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    check(unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) })?;
    Ok(index)
}

/// The signals PID 1 handles synchronously.
pub fn handled_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPWR,
            libc::SIGHUP,
        ] {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Blocks `set`, so that its signals wait for [`wait_signal`].
pub fn block(set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: set is a valid sigset.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) })
}

/// Waits up to `timeout` for one of the blocked signals; `None` on timeout.
pub fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: set and ts are valid; no siginfo wanted.
    let s = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (s > 0).then_some(s)
}

/// Makes `command`'s child start with no signal blocked, whatever this process blocks.
pub fn unblock_signals_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls sigemptyset and
    // sigprocmask, both async-signal-safe, on a set on its own stack.
    unsafe {
        command.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            check(libc::sigprocmask(
                libc::SIG_SETMASK,
                &none,
                std::ptr::null_mut(),
            ))
        });
    }
}

/// Ctrl-Alt-Del sends SIGINT to PID 1 instead of restarting at once.
pub fn ctrl_alt_del_to_signal() -> io::Result<()> {
    // SAFETY: reboot(2) with the CAD-off command changes only that setting.
    check(unsafe { libc::reboot(libc::RB_DISABLE_CAD) })
}

/// A dead child, if any: its pid and wait status. Never blocks.
pub fn reap() -> Option<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    // SAFETY: status is valid for writes.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// Sends `signal` to a process (or, with -1, to every process but PID 1).
pub fn kill(pid: libc::pid_t, signal: i32) {
    // SAFETY: kill(2) has no memory arguments.
    unsafe { libc::kill(pid, signal) };
}

/// sync(2): everything written reaches the disks.
pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() };
}

/// reboot(2): power off or restart now. Returns only on failure.
pub fn reboot(power_off: bool) -> io::Error {
    let cmd = if power_off {
        libc::RB_POWER_OFF
    } else {
        libc::RB_AUTOBOOT
    };
    // SAFETY: reboot(2) with a documented command.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// `WDIOC_KEEPALIVE` and `WDIOC_SETTIMEOUT` of `<linux/watchdog.h>`: `_IOR('W', 5,
/// int)` and `_IOWR('W', 6, int)`.
const WDIOC_KEEPALIVE: libc::c_ulong = 0x8004_5705;
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;

/// A hardware watchdog, open: it resets the machine unless fed within its timeout. It
/// is never closed on purpose (closing without the magic `V` leaves it counting).
pub struct HardwareWatchdog {
    file: File,
}

impl HardwareWatchdog {
    /// Opens `device` (which starts it) and asks for `timeout`; returns it with the
    /// timeout the driver set, which may be rounded to what the hardware counts.
    pub fn open(device: &str, timeout: Duration) -> io::Result<(HardwareWatchdog, u32)> {
        let file = std::fs::OpenOptions::new().write(true).open(device)?;
        let dog = HardwareWatchdog { file };
        let set = dog.set_timeout(timeout)?;
        Ok((dog, set))
    }

    /// Asks for a new timeout; the one the driver set.
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<u32> {
        let mut secs: libc::c_int = timeout.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
        // SAFETY: the descriptor is open; secs is valid for the ioctl's read and write.
        check(unsafe { libc::ioctl(self.file.as_raw_fd(), WDIOC_SETTIMEOUT, &mut secs) })?;
        Ok(secs.max(0) as u32)
    }

    /// Feeds it: the timeout starts again.
    pub fn feed(&self) {
        let mut unused: libc::c_int = 0;
        // SAFETY: as above.
        unsafe { libc::ioctl(self.file.as_raw_fd(), WDIOC_KEEPALIVE, &mut unused) };
    }
}
