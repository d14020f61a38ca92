//! Shared harness for the integration tests: the gateway as a real process, a test
//! sink that records what it receives, Postfix's tools and Python's smtplib as peers.
//! Everything talks over loopback.

#![allow(dead_code)]

pub mod softhsm;
pub mod terminal;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};

use drawbridge::proto::dns::{Name, Query, RecordType};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// How long a test waits for dnsmasq to answer its first query.
const STARTUP: Duration = Duration::from_secs(10);

/// Upper bound on any wait for something to happen over loopback.
pub const WAIT: Duration = Duration::from_secs(30);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// xorshift64*: small, deterministic choices for the tests that make many.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("drawbridge-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nothing listens on right now, and never one this test process has
/// handed out before: tests run in parallel, and the kernel may give a port one test
/// chose (and has not bound yet, or keeps dead on purpose) to another.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Polls `cond` until it holds or `WAIT` passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gateway, running as its own process.
pub struct Gateway {
    child: Option<Child>,
    pub state: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
    pub inbound: u16,
    pub outbound: u16,
    /// Extra environment for the gateway process (SOFTHSM2_CONF, a test's minute).
    pub env: Vec<(String, String)>,
    /// Starts pass `--config`; without it the stored configuration runs.
    pub with_config: bool,
    /// RLIMIT_NOFILE for the gateway process, when a test sets one.
    pub nofile: Option<u64>,
    /// Start the gateway with SIGHUP, SIGTERM and SIGINT blocked, as a parent that
    /// blocks them (PID 1) hands them down.
    pub blocked_signals: bool,
}

impl Gateway {
    /// A configuration with the inbound and outbound services on the given ports. Client
    /// names are not looked up (the host's resolvers are not on loopback); a test that
    /// wants them sets a resolver and `client-names yes` in `extra`.
    pub fn config_text(inbound: u16, outbound: u16, extra: &str) -> String {
        format!(
            "set system host-name gw.example.com\n\
             set system dns client-names no\n\
             set service inbound listen 127.0.0.1:{inbound}\n\
             set service outbound listen 127.0.0.1:{outbound}\n\
             {extra}\n"
        )
    }

    /// Starts the gateway with `extra` config lines in `dir` and waits until it listens.
    pub fn start(dir: &Path, extra: &str) -> Gateway {
        Self::launch(dir, extra, None, Vec::new())
    }

    /// As `start`, with the gateway limited to `nofile` open descriptors.
    pub fn start_with_nofile(dir: &Path, extra: &str, nofile: u64) -> Gateway {
        Self::launch(dir, extra, Some(nofile), Vec::new())
    }

    /// As `start`, the gateway started with its signals blocked.
    pub fn start_with_blocked_signals(dir: &Path, extra: &str) -> Gateway {
        let mut gw = Self::configured(dir, extra, None, Vec::new());
        gw.blocked_signals = true;
        gw.spawn();
        gw
    }

    /// Like `start`, with extra environment for the gateway process.
    pub fn start_env(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Gateway {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::launch(dir, extra, None, env)
    }

    fn launch(dir: &Path, extra: &str, nofile: Option<u64>, env: Vec<(String, String)>) -> Gateway {
        let mut gw = Self::configured(dir, extra, nofile, env);
        gw.spawn();
        gw
    }

    /// A gateway not started yet, its configuration file written with `extra` lines on
    /// two free ports.
    fn configured(
        dir: &Path,
        extra: &str,
        nofile: Option<u64>,
        env: Vec<(String, String)>,
    ) -> Gateway {
        let inbound = free_port();
        let outbound = free_port();
        let config = dir.join("gateway.conf");
        std::fs::write(&config, Self::config_text(inbound, outbound, extra)).unwrap();
        Self::unspawned(dir, config, inbound, outbound, nofile, env)
    }

    pub fn start_with(dir: &Path, config: PathBuf, inbound: u16, outbound: u16) -> Gateway {
        Self::launch_with(dir, config, inbound, outbound, None, Vec::new())
    }

    /// [`Gateway::start_with`] with environment variables for the gateway process.
    pub fn start_with_env(
        dir: &Path,
        config: PathBuf,
        inbound: u16,
        outbound: u16,
        env: Vec<(String, String)>,
    ) -> Gateway {
        Self::launch_with(dir, config, inbound, outbound, None, env)
    }

    fn launch_with(
        dir: &Path,
        config: PathBuf,
        inbound: u16,
        outbound: u16,
        nofile: Option<u64>,
        env: Vec<(String, String)>,
    ) -> Gateway {
        let mut gw = Self::unspawned(dir, config, inbound, outbound, nofile, env);
        gw.spawn();
        gw
    }

    fn unspawned(
        dir: &Path,
        config: PathBuf,
        inbound: u16,
        outbound: u16,
        nofile: Option<u64>,
        env: Vec<(String, String)>,
    ) -> Gateway {
        Gateway {
            child: None,
            state: dir.join("state"),
            log: dir.join("gateway.log"),
            config,
            inbound,
            outbound,
            env,
            with_config: true,
            nofile,
            blocked_signals: false,
        }
    }

    fn spawn(&mut self) {
        const READY: &str = "message(s) recovered from the queue";
        let starts = self.log_text().matches(READY).count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_drawbridge"));
        if let Some(limit) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only this child.
            unsafe {
                command.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if self.blocked_signals {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec only sigemptyset, sigaddset and sigprocmask
            // run, all async-signal-safe, on a set on the closure's stack.
            unsafe {
                command.pre_exec(|| {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    for s in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
                        libc::sigaddset(&mut set, s);
                    }
                    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    Ok(())
                });
            }
        }
        command.arg("run");
        if self.with_config {
            command.arg("--config").arg(&self.config);
        }
        let child = command
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--no-console")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start drawbridge");
        self.child = Some(child);
        // This start's own line: the log file spans restarts.
        wait_until("the gateway to start", || {
            self.log_text().matches(READY).count() > starts
        });
    }

    /// Kills the gateway with SIGKILL: no chance to tidy up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same state directory and configuration.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again from its stored configuration, without `--config`.
    pub fn restart_from_slots(&mut self) {
        self.with_config = false;
        self.restart();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends the gateway a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a child's pid and a signal number; no memory is passed.
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }

    /// Waits for the gateway to exit by itself; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < WAIT, "the gateway did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `drawbridge ARGS --state-dir STATE`: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
            .args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run drawbridge");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Types `script` to the console through `drawbridge cli` (root needs no login);
    /// what it printed.
    pub fn console_script(&self, script: &str) -> String {
        let mut child = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
            .arg("cli")
            .arg("--state-dir")
            .arg(&self.state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run drawbridge cli");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "drawbridge cli failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `needle` has been logged `n` times (the log spans restarts).
    pub fn wait_for_log_count(&self, needle: &str, n: usize) {
        wait_until(&format!("{n} log lines containing {needle:?}"), || {
            self.log_text().matches(needle).count() >= n
        });
    }

    pub fn wait_for_log(&self, needle: &str) {
        wait_until(&format!("log line containing {needle:?}"), || {
            self.log_text().contains(needle)
        });
    }

    /// Files in the spool's queue directory.
    pub fn queue_files(&self) -> Vec<String> {
        let dir = self.state.join("spool").join("queue");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn inbound_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.inbound))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the gateway said, so a failure on CI explains itself.
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL_LINES).collect();
            eprintln!("--- last {} lines of the gateway's log ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// How much of the gateway's log a failing test prints.
const LOG_TAIL_LINES: usize = 60;

/// One message as the test sink received it.
#[derive(Clone, Debug, Default)]
pub struct SinkMessage {
    pub helo: String,
    /// The MAIL command's argument line after `MAIL FROM:`.
    pub mail: String,
    pub rcpts: Vec<String>,
    /// The DATA bytes as they came over the wire, up to and including `.CRLF`.
    pub wire: Vec<u8>,
    /// The content with dot-stuffing undone and the final `.CRLF` removed.
    pub content: Vec<u8>,
}

/// A test next hop: an SMTP server that records every message it accepts.
pub struct Sink {
    pub addr: SocketAddr,
    pub messages: Arc<Mutex<Vec<SinkMessage>>>,
    stop: Arc<AtomicBool>,
}

/// How the sink answers.
#[derive(Clone, Default)]
pub struct SinkBehaviour {
    /// Recipients answered `550 5.1.1 User unknown`.
    pub reject: Vec<String>,
    /// Recipients answered `450 4.2.0 Try again`.
    pub defer: Vec<String>,
    /// How long a message's final reply waits: a slow next hop.
    pub delay: Duration,
    /// Counts the messages whose content began (the 354 was sent).
    pub data_begun: Arc<AtomicUsize>,
}

impl Sink {
    pub fn start() -> Sink {
        Self::start_on(0, SinkBehaviour::default())
    }

    pub fn start_on(port: u16, behaviour: SinkBehaviour) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let addr = listener.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (messages.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (m, b) = (m.clone(), behaviour.clone());
                std::thread::spawn(move || serve_sink(conn, m, b));
            }
        });
        Sink {
            addr,
            messages,
            stop,
        }
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub fn wait_for(&self, n: usize) -> Vec<SinkMessage> {
        wait_until(&format!("{n} message(s) at the sink"), || self.count() >= n);
        self.messages.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_sink(conn: TcpStream, messages: Arc<Mutex<Vec<SinkMessage>>>, b: SinkBehaviour) {
    let mut out = conn.try_clone().unwrap();
    let mut input = BufReader::new(conn);
    let mut msg = SinkMessage::default();
    let _ = out.write_all(b"220 sink.test ESMTP test sink\r\n");
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let upper = text.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            msg.helo = text[4..].trim().to_string();
            "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 100000000\r\n250 ENHANCEDSTATUSCODES\r\n".into()
        } else if upper.starts_with("HELO") {
            msg.helo = text[4..].trim().to_string();
            "250 sink.test\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            msg.mail = text[10..].to_string();
            msg.rcpts.clear();
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = text[8..].to_string();
            let bare = rcpt
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_string();
            if b.reject.contains(&bare) {
                "550 5.1.1 User unknown\r\n".into()
            } else if b.defer.contains(&bare) {
                "450 4.2.0 Try again later\r\n".into()
            } else {
                msg.rcpts.push(rcpt);
                "250 2.1.5 Ok\r\n".into()
            }
        } else if upper == "DATA" {
            if msg.rcpts.is_empty() {
                "554 5.5.1 No valid recipients\r\n".into()
            } else {
                let _ = out.write_all(b"354 go ahead\r\n");
                b.data_begun.fetch_add(1, Ordering::SeqCst);
                let mut wire = Vec::new();
                let mut content = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if input.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                        return;
                    }
                    wire.extend_from_slice(&l);
                    if l == b".\r\n" {
                        break;
                    }
                    let body = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                    content.extend_from_slice(body);
                }
                msg.wire = wire;
                msg.content = content;
                std::thread::sleep(b.delay);
                messages.lock().unwrap().push(msg.clone());
                "250 2.0.0 Ok: queued\r\n".into()
            }
        } else if upper == "RSET" {
            msg.rcpts.clear();
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "QUIT" {
            let _ = out.write_all(b"221 2.0.0 Bye\r\n");
            let _ = out.shutdown(Shutdown::Both);
            return;
        } else if upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else {
            "502 5.5.2 Not implemented\r\n".into()
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Runs a Python program; returns its standard output, failing the test on error.
pub fn python(script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a Python program that may fail; returns (success, stdout+stderr).
pub fn python_result(script: &str) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A raw SMTP conversation over TCP: write bytes, read what comes back.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Raw { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads until the text read so far has `n` complete final reply lines.
    pub fn replies(&mut self, n: usize) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            let finals = text
                .split("\r\n")
                .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
                .count();
            if finals >= n {
                return text;
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return text,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
    }

    /// Reads until the peer closes; returns everything read.
    pub fn until_close(&mut self) -> String {
        let mut got = Vec::new();
        let _ = self.stream.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// Postfix's smtp-sink on a loopback port, dumping each message into a directory.
pub struct PostfixSink {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl PostfixSink {
    pub fn start(dir: &Path) -> PostfixSink {
        let port = free_port();
        let dump = dir.join("sink-dump");
        std::fs::create_dir_all(&dump).unwrap();
        let mut cmd = Command::new("/usr/sbin/smtp-sink");
        // smtp-sink drops privileges to this user when started as root.
        if is_root() {
            std::process::Command::new("chown")
                .arg("postfix")
                .arg(&dump)
                .status()
                .unwrap();
            cmd.arg("-u").arg("postfix");
        }
        let child = cmd
            .arg("-d")
            .arg(format!("{}/%M.", dump.display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink (Debian package postfix)");
        wait_until("smtp-sink to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        PostfixSink {
            child,
            port,
            dir: dump,
        }
    }

    /// The dumped messages' text.
    pub fn dumps(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds a mail user with `drawbridge password add`, the password on standard input.
pub fn add_user(state: &Path, user: &str, password: &str, cram: bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drawbridge"));
    cmd.args(["password", "add", "--user", user]);
    if cram {
        cmd.arg("--cram-md5");
    }
    let mut child = cmd
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A dnsmasq serving only the records given on its command line; killed on drop.
pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
}

impl Dnsmasq {
    pub fn start(records: &[&str]) -> Dnsmasq {
        for _ in 0..5 {
            let port = free_udp_and_tcp_port();
            let mut command = Command::new(DNSMASQ);
            command
                .arg("--no-daemon")
                .arg(format!("--port={port}"))
                .args([
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--conf-file=/dev/null",
                    "--local=/test/",
                    "--local=/arpa/",
                    "--pid-file",
                ])
                .args(records)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } == 0 {
                command.arg("--user=root");
            }
            let child = command.spawn().expect("start dnsmasq");
            let mut server = Dnsmasq {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            if server.wait_ready() {
                return server;
            }
            let _ = server.child.kill();
        }
        panic!("dnsmasq did not start");
    }

    /// Polls with a plain query until dnsmasq answers or exits.
    fn wait_ready(&mut self) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let query = Query::new(7, Name::parse("ready.test").unwrap(), RecordType::A).encode();
        let start = Instant::now();
        let mut buffer = [0u8; 512];
        while start.elapsed() < STARTUP {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let _ = socket.send_to(&query, self.addr);
            if let Ok((_, from)) = socket.recv_from(&mut buffer) {
                if from == self.addr {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of asking.
pub fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A TCP connection to `to` from the loopback address `from` (any of 127.0.0.0/8), so a
/// test can play many clients.
pub fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    // SAFETY: plain socket calls on a descriptor we own; the addresses are built here and
    // live across the calls; on error the descriptor is closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = sockaddr(from, 0);
        let remote = sockaddr(*to.ip(), to.port());
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0
            || libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// Runs `openssl ARGS`, failing the test on error.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 test CA in a directory, which signs server certificates.
pub struct TestCa {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key.display().to_string(),
            "-out",
            &cert.display().to_string(),
            "-days",
            "2",
            "-subj",
            "/CN=drawbridge test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        TestCa {
            dir: dir.to_path_buf(),
            cert,
            key,
        }
    }

    /// A server certificate with common name `cn` and `subject_alt_name` (such as
    /// `IP:127.0.0.1` or `DNS:smtp.test`), as `NAME.pem` and `NAME.key`; their paths.
    pub fn server(&self, name: &str, cn: &str, subject_alt_name: &str) -> (PathBuf, PathBuf) {
        let path = |ext: &str| self.dir.join(format!("{name}.{ext}")).display().to_string();
        let (key, csr, cert, ext) = (path("key"), path("csr"), path("pem"), path("ext"));
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ]);
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={subject_alt_name}\n\
                 basicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.cert.display().to_string(),
            "-CAkey",
            &self.key.display().to_string(),
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        (cert.into(), key.into())
    }
}

/// `drawbridge SUBCOMMAND … --state-dir STATE` with `input` on standard input.
pub fn drawbridge_with_input(state: &std::path::Path, args: &[&str], input: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "drawbridge {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends one message from alice@example.org to `rcpts` through `gw`'s inbound service, as
/// an internal client; its queue id.
pub fn send_to(gw: &Gateway, rcpts: &[&str]) -> String {
    let list = rcpts
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(",");
    let out = python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    code, resp = s.docmd("EHLO", "client.example.org")
    s.mail("alice@example.org")
    for r in [{list}]:
        assert s.rcpt(r)[0] == 250
    code, resp = s.data(b"Subject: test\r\n\r\nhello\r\n")
    assert code == 250
    print(resp.decode())
"#,
        port = gw.inbound
    ));
    out.trim().rsplit(' ').next().unwrap().to_string()
}
