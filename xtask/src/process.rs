//! Child processes, signals, loopback ports and `/proc` sampling for xtask's commands.
//!
//! Linux only. The few libc calls std does not wrap (`signal`, `kill`, `geteuid`) are declared
//! here by hand, which keeps xtask free of dependencies.

use std::collections::HashSet;
use std::ffi::c_int;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{Context, Failure};

const SIGINT: c_int = 2;
const SIGKILL: c_int = 9;
const SIGTERM: c_int = 15;

/// How long a child gets between SIGTERM and SIGKILL when it is stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often the PSS sampler reads `/proc`.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// How often readiness waits retry.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// How long one readiness probe waits for a TCP handshake on loopback.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// How much of a log an error message quotes: the last few lines.
pub const LOG_TAIL_BYTES: usize = 2000;

unsafe extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    fn kill(pid: i32, signum: c_int) -> c_int;
    fn geteuid() -> u32;
}

/// Set by SIGINT or SIGTERM once [`catch_interrupts`] has run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_signum: c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag that every wait loop checks, so that the loops
/// return an error and the guards of the processes we started clean up.
pub fn catch_interrupts() {
    // SAFETY: `note_interrupt` only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, note_interrupt);
        signal(SIGTERM, note_interrupt);
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An error if SIGINT or SIGTERM arrived.
pub fn check_interrupted() -> Result<(), Failure> {
    if interrupted() {
        Err(Failure::new("interrupted"))
    } else {
        Ok(())
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() == 0 }
}

fn send_signal(pid: u32, signum: c_int) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    if pid > 0 {
        // SAFETY: kill has no memory-safety preconditions; a positive pid names one process.
        unsafe {
            kill(pid, signum);
        }
    }
}

/// A program from `PATH`, or from the sbin folders a non-root `PATH` often lacks.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A child process that is stopped (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and reaped
/// when dropped, so that no exit path leaves it running.
pub struct Guarded {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl Guarded {
    pub fn spawn(name: &str, command: &mut Command) -> Result<Guarded, Failure> {
        let child = command.spawn().context(format_args!(
            "starting {name} ({:?})",
            command.get_program()
        ))?;
        Ok(Guarded {
            name: name.to_owned(),
            child,
            status: None,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdin, if it was piped and not taken yet.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The child's stdout, if it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The exit status once the child has exited, without blocking.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>, Failure> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .context(format_args!("checking on {}", self.name))?;
        }
        Ok(self.status)
    }

    /// An error if the child has exited.
    /// Like [`Guarded::check_running`], with the end of the process's `log` in the
    /// failure, which is what says why it exited.
    pub fn check_running_logged(&mut self, log: &Path) -> Result<(), Failure> {
        self.check_running()
            .map_err(|failure| Failure(format!("{failure}; {}", log_tail(log))))
    }

    pub fn check_running(&mut self) -> Result<(), Failure> {
        match self.exit_status()? {
            None => Ok(()),
            Some(status) => Err(Failure(format!(
                "{} exited unexpectedly ({status})",
                self.name
            ))),
        }
    }

    pub fn stop(&mut self) {
        if matches!(self.exit_status(), Ok(Some(_))) {
            return;
        }
        send_signal(self.child.id(), SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.exit_status(), Ok(Some(_))) {
                return;
            }
            thread::sleep(RETRY_INTERVAL);
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `K` distinct loopback ports that were free a moment ago: bound to 127.0.0.1:0 all at
/// once (so they differ), read, and released for the caller's servers.
pub fn free_ports<const K: usize>() -> Result<[u16; K], Failure> {
    let mut listeners = Vec::with_capacity(K);
    let mut ports = [0u16; K];
    for port in &mut ports {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
        *port = listener
            .local_addr()
            .context("reading a bound port")?
            .port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`. `still_starting` is
/// asked between attempts and fails the wait when the server died.
pub fn wait_for_listener(
    what: &str,
    port: u16,
    timeout: Duration,
    mut still_starting: impl FnMut() -> Result<(), Failure>,
) -> Result<(), Failure> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).is_ok() {
            return Ok(());
        }
        check_interrupted()?;
        still_starting()?;
        if Instant::now() >= deadline {
            return Err(Failure(format!(
                "{what} did not accept connections on {address} within {} s",
                timeout.as_secs()
            )));
        }
        thread::sleep(RETRY_INTERVAL);
    }
}

/// The fields of `/proc/PID/stat` that xtask needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    pub pid: u32,
    pub parent: u32,
    pub zombie: bool,
    /// CPU time in clock ticks: user and system time of the process and of its children
    /// that it has waited for (`utime + stime + cutime + cstime`).
    pub cpu_ticks: u64,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid …`. The command name may hold spaces and
/// parentheses, so the fields are counted from its last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, tail) = text.rsplit_once(')')?;
    let pid = head.split_once(" (")?.0.trim().parse().ok()?;
    let mut fields = tail.split_ascii_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    // After ppid: pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt, then
    // utime stime cutime cstime (proc(5), fields 14 to 17).
    let cpu_ticks = fields
        .skip(9)
        .take(4)
        .map(|field| field.parse::<u64>().ok())
        .sum::<Option<u64>>()
        .unwrap_or(0);
    Some(ProcStat {
        pid,
        parent,
        zombie: state == "Z" || state == "X",
        cpu_ticks,
    })
}

/// Clock ticks per second of `/proc/PID/stat`'s times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&n: &u64| n > 0)
        .unwrap_or(100)
}

/// CPU seconds used so far by `root`'s process tree: every living process's own time
/// plus the time of the children each has reaped. The difference of two readings is the
/// tree's CPU between them, whether its processes lived through the interval or not, as
/// long as every process of the tree is reaped inside it (Postfix's master reaps its
/// daemons).
pub fn tree_cpu_seconds(root: u32, ticks_per_second: u64) -> f64 {
    let table = process_table();
    let members = descendants(&table, root);
    let ticks: u64 = table
        .iter()
        .filter(|stat| members.contains(&stat.pid))
        .map(|stat| stat.cpu_ticks)
        .sum();
    ticks as f64 / ticks_per_second.max(1) as f64
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// How long [`cpu_seconds_at_exit`] waits for a child that has closed its output to exit.
const EXIT_WAIT: Duration = Duration::from_secs(30);
/// How often it looks.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// The CPU seconds a child used in its whole life, its reaped descendants included: read
/// from its `/proc/PID/stat` once it has exited and before it is reaped (a zombie keeps
/// its times there), then reaped. `None` when its times could not be read, or it had not
/// exited within [`EXIT_WAIT`] of the call (it is then waited for all the same).
pub fn cpu_seconds_at_exit(child: &mut Child) -> io::Result<(ExitStatus, Option<f64>)> {
    let pid = child.id();
    let started = Instant::now();
    let mut cpu = None;
    while started.elapsed() < EXIT_WAIT {
        match read_stat(pid) {
            Some(stat) if stat.zombie => {
                cpu = Some(stat.cpu_ticks as f64 / clock_ticks_per_second() as f64);
                break;
            }
            Some(_) => thread::sleep(EXIT_POLL),
            None => break,
        }
    }
    Ok((child.wait()?, cpu))
}

/// Whether `pid` names a process that has not exited (zombies count as exited).
pub fn is_alive(pid: u32) -> bool {
    read_stat(pid).is_some_and(|stat| !stat.zombie)
}

/// Every process on the machine (those that vanish while being read are skipped).
pub fn process_table() -> Vec<ProcStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// `root` and all its living descendants in `table`.
pub fn descendants(table: &[ProcStat], root: u32) -> Vec<u32> {
    let mut found = vec![root];
    let mut seen: HashSet<u32> = HashSet::from([root]);
    let mut next = 0;
    while let Some(&parent) = found.get(next) {
        next += 1;
        for stat in table {
            if stat.parent == parent && !stat.zombie && seen.insert(stat.pid) {
                found.push(stat.pid);
            }
        }
    }
    found
}

/// Sends SIGKILL to each process in `pids` that is still alive.
pub fn kill_remaining(pids: &[u32]) {
    for &pid in pids {
        if is_alive(pid) {
            send_signal(pid, SIGKILL);
        }
    }
}

/// The `Pss:` figure (KiB) of a `/proc/PID/smaps_rollup` text.
pub fn parse_pss_kib(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix("Pss:")?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The proportional set size of one process in KiB (0 once it has gone).
pub fn pss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| parse_pss_kib(&text))
        .unwrap_or(0)
}

/// Samples the summed PSS of a set of processes every [`SAMPLE_INTERVAL`] on a thread of
/// its own and keeps the peak.
pub struct PeakPss {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl PeakPss {
    /// `processes` is asked for the current set of pids at every sample.
    pub fn start(processes: impl Fn() -> Vec<u32> + Send + 'static) -> PeakPss {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut peak = 0;
            loop {
                let total: u64 = processes().into_iter().map(pss_kib).sum();
                peak = peak.max(total);
                if stop_seen.load(Ordering::SeqCst) {
                    return peak;
                }
                thread::sleep(SAMPLE_INTERVAL);
            }
        });
        PeakPss {
            stop,
            thread: Some(thread),
        }
    }

    /// Takes a last sample and returns the peak in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or(0)
    }
}

impl Drop for PeakPss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The last [`LOG_TAIL_BYTES`] of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(LOG_TAIL_BYTES);
            let text = String::from_utf8_lossy(&bytes[start..]);
            if text.trim().is_empty() {
                format!("({} is empty)", path.display())
            } else {
                format!("last lines of {}:\n{}", path.display(), text.trim_end())
            }
        }
        Err(error) => format!("({}: {error})", path.display()),
    }
}

/// Opens a fresh log file for a child's output.
pub fn log_file(path: &Path) -> Result<fs::File, Failure> {
    fs::File::create(path).context(format_args!("creating {}", path.display()))
}

/// Whether an I/O error means "no such program".
pub fn is_not_found(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_s_cpu_is_read_before_it_is_reaped() {
        // The shell spins in its own loop, then a child it reaps spins too: both count.
        let spin = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done";
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{spin}; sh -c '{spin}'; exit 3"))
            .spawn()
            .unwrap();
        let (status, cpu) = cpu_seconds_at_exit(&mut child).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(cpu.is_some_and(|s| s > 0.0), "{cpu:?}");
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "5436 (master) S 1 5436 5436 0 -1 4194624 1234 0 0 0 250 30 7 3 20 0 1";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                pid: 5436,
                parent: 1,
                zombie: false,
                cpu_ticks: 290,
            })
        );
        let odd_name = "77 (a) b (c)) Z 42 77 77 0";
        assert_eq!(
            parse_stat(odd_name),
            Some(ProcStat {
                pid: 77,
                parent: 42,
                zombie: true,
                cpu_ticks: 0,
            })
        );
    }

    #[test]
    fn this_process_tree_has_used_cpu() {
        let ticks = clock_ticks_per_second();
        let before = tree_cpu_seconds(std::process::id(), ticks);
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(150) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = tree_cpu_seconds(std::process::id(), ticks);
        assert!(after - before >= 0.05, "{before} -> {after}");
    }

    #[test]
    fn broken_stat_lines_are_refused() {
        for text in ["", "12", "12 (x", "x (y) S 1", "12 (y) S", "12 (y) S one"] {
            assert_eq!(parse_stat(text), None, "{text:?}");
        }
    }

    #[test]
    fn pss_line_is_found() {
        let rollup = "00400000-7ffd [rollup]\nRss:                3000 kB\nPss:                1234 kB\nPss_Anon:            500 kB\n";
        assert_eq!(parse_pss_kib(rollup), Some(1234));
        assert_eq!(parse_pss_kib("Rss: 3 kB\n"), None);
        assert_eq!(parse_pss_kib("Pss: many kB\n"), None);
    }

    #[test]
    fn descendants_follow_the_tree_and_skip_zombies() {
        let stat = |pid, parent, zombie| ProcStat {
            pid,
            parent,
            zombie,
            cpu_ticks: 0,
        };
        let table = [
            stat(1, 0, false),
            stat(10, 1, false),
            stat(11, 10, false),
            stat(12, 10, true),
            stat(13, 11, false),
            stat(20, 1, false),
        ];
        let mut found = descendants(&table, 10);
        found.sort_unstable();
        assert_eq!(found, vec![10, 11, 13]);
        assert_eq!(descendants(&table, 99), vec![99]);
    }

    #[test]
    fn this_process_is_seen_in_proc() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(pss_kib(me) > 0);
        assert!(process_table().iter().any(|stat| stat.pid == me));
    }

    #[test]
    fn free_ports_differ() {
        let [a, b, c] = free_ports::<3>().unwrap();
        assert!(a != b && b != c && a != c);
        assert!(a > 0 && b > 0 && c > 0);
    }

    #[test]
    fn guarded_child_is_stopped_on_drop() {
        let mut sleeper = Guarded::spawn("sleep", Command::new("sleep").arg("60")).unwrap();
        let pid = sleeper.id();
        assert!(sleeper.check_running().is_ok());
        drop(sleeper);
        assert!(!is_alive(pid));
    }

    #[test]
    fn waiting_for_a_listener_gives_up_when_the_server_died() {
        let [port] = free_ports::<1>().unwrap();
        let result = wait_for_listener("nothing", port, Duration::from_secs(30), || {
            Err(Failure::new("server died"))
        });
        assert_eq!(result.unwrap_err().0, "server died");
    }

    #[test]
    fn waiting_for_a_listener_sees_it() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(wait_for_listener("test", port, Duration::from_secs(30), || Ok(())).is_ok());
    }
}
