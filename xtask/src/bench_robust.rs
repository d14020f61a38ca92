//! `cargo xtask bench delivery` and `cargo xtask bench auth-stall`: the robustness figures
//! of a release build of drawbridge.
//!
//! * **delivery**: the memory a queue full of large mail costs while it is delivered. N
//!   messages of SIZE octets are accepted over N parallel sessions while the next hop is
//!   down, so they all wait in the queue; then Postfix's smtp-sink starts and the retry
//!   delivers them all at once (the route's concurrency is N). The figures are the
//!   gateway's peak RSS over its whole life (`VmHWM` in `/proc/PID/status`) and its peak
//!   PSS sampled every 50 ms while delivering.
//! * **auth-stall**: how long a plain SMTP client waits for its replies while other
//!   clients authenticate with an expensive password. A user is added with ITERATIONS
//!   PBKDF2 iterations; A sessions send `AUTH PLAIN` for it at the same moment while one
//!   probe session sends NOOP, MAIL and RSET in turn, timing each reply, until every AUTH
//!   is answered. The figures are the probe's median, 99th percentile and worst reply
//!   latency.
//!
//! Both write their figures to `target/bench/<name>.json`.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::bench::{RECIPIENT, SENDER, START_TIMEOUT};
use crate::options::{self, number};
use crate::process::{self, Guarded, PeakPss};
use crate::sink::Sink;
use crate::{Context, Failure};

/// Default messages of `bench delivery` (`--messages`), as in the issue that asked.
const DEFAULT_MESSAGES: u32 = 20;
/// Default octets per message (`--size`): 34 MB, under the default 35 MiB size limit.
const DEFAULT_SIZE: u32 = 34_000_000;
/// Largest message: the default size limit, 35 MiB.
const MAX_SIZE: u32 = 35 * 1024 * 1024;
/// Most messages (and parallel sessions) of `bench delivery`.
const MAX_MESSAGES: u32 = 100;
/// Default AUTH sessions of `bench auth-stall` (`--attempts`).
const DEFAULT_ATTEMPTS: u32 = 50;
/// Default PBKDF2 iterations of the user (`--iterations`).
const DEFAULT_ITERATIONS: u32 = 600_000;
/// The gateway's own bounds on a stored secret's iterations.
const MIN_ITERATIONS: u32 = 4096;
const MAX_ITERATIONS: u32 = 1_000_000;
/// Most AUTH sessions: below the per-address limit the configuration lifts to 200.
const MAX_ATTEMPTS: u32 = 190;

/// Longest any one step of a run may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(900);
/// Pause between two probes, so the probe measures latency without taking a core.
const PROBE_PAUSE: Duration = Duration::from_millis(20);
/// Payload line length: short of RFC 5322 §2.1.1's 78 characters.
const LINE: usize = 76;

const USER: &str = "bench";
const PASSWORD: &str = "correct horse battery staple";

/// The options of `bench delivery`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOptions {
    pub messages: u32,
    pub size: u32,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            messages: DEFAULT_MESSAGES,
            size: DEFAULT_SIZE,
        }
    }
}

impl DeliveryOptions {
    pub fn parse(args: &[String]) -> Result<DeliveryOptions, String> {
        let mut o = DeliveryOptions::default();
        options::walk(
            args,
            |name, value, _| {
                match name {
                    "--messages" => o.messages = number(name, &value()?, 1, MAX_MESSAGES)?,
                    "--size" => o.size = number(name, &value()?, 2, MAX_SIZE)?,
                    _ => return Ok(false),
                }
                Ok(true)
            },
            "bench delivery",
        )?;
        Ok(o)
    }
}

/// The options of `bench auth-stall`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct StallOptions {
    pub attempts: u32,
    pub iterations: u32,
}

impl Default for StallOptions {
    fn default() -> Self {
        StallOptions {
            attempts: DEFAULT_ATTEMPTS,
            iterations: DEFAULT_ITERATIONS,
        }
    }
}

impl StallOptions {
    pub fn parse(args: &[String]) -> Result<StallOptions, String> {
        let mut o = StallOptions::default();
        options::walk(
            args,
            |name, value, _| {
                match name {
                    "--attempts" => o.attempts = number(name, &value()?, 1, MAX_ATTEMPTS)?,
                    "--iterations" => {
                        o.iterations = number(name, &value()?, MIN_ITERATIONS, MAX_ITERATIONS)?
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            },
            "bench auth-stall",
        )?;
        Ok(o)
    }
}

/// A release build of drawbridge running on a configuration of its own.
struct Gateway {
    process: Guarded,
    log: PathBuf,
    inbound: u16,
}

impl Gateway {
    /// Writes `config` (with the two listeners prepended) and `state` under `work`, runs
    /// `prepare` on the state directory, then starts the gateway and waits for it.
    fn start(
        binary: &Path,
        work: &Path,
        config: &str,
        prepare: impl FnOnce(&Path) -> Result<(), Failure>,
    ) -> Result<Gateway, Failure> {
        let [inbound, outbound] = process::free_ports::<2>()?;
        let text = format!(
            "set system host-name gw.example.com\n\
             set system dns client-names no\n\
             set service inbound listen 127.0.0.1:{inbound}\n\
             set service outbound listen 127.0.0.1:{outbound}\n\
             {config}"
        );
        let config_path = work.join("config");
        fs::write(&config_path, text).context(format_args!("writing {}", config_path.display()))?;
        let state = work.join("state");
        fs::create_dir_all(&state).context(format_args!("creating {}", state.display()))?;
        prepare(&state)?;
        let log = work.join("gateway.log");
        let mut process = Guarded::spawn(
            "drawbridge",
            &mut crate::bench::gateway_command(binary, &config_path, &state, &log)?,
        )?;
        process::wait_for_listener("drawbridge", inbound, START_TIMEOUT, || {
            process.check_running_logged(&log)
        })?;
        Ok(Gateway {
            process,
            log,
            inbound,
        })
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.inbound))
    }

    fn check_running(&mut self) -> Result<(), Failure> {
        self.process.check_running_logged(&self.log)
    }

    /// The peak resident set of the process so far (`VmHWM`), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        fs::read_to_string(format!("/proc/{}/status", self.process.id()))
            .ok()
            .and_then(|text| parse_status_kib(&text, "VmHWM:"))
            .unwrap_or(0)
    }
}

/// One `Name:   N kB` figure of a `/proc/PID/status` text.
fn parse_status_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// A plain SMTP client over one TCP connection, blocking, for the load threads.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects and reads the greeting.
    fn connect(address: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(STEP_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        client.expect(220)?;
        Ok(client)
    }

    /// Reads one reply, multi-line or not; gives its code.
    fn reply(&mut self) -> io::Result<u16> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            if line.len() >= 4 && line.as_bytes()[3] == b' ' {
                return line[..3]
                    .parse()
                    .map_err(|_| io::Error::other(format!("not a reply: {line:?}")));
            }
        }
    }

    fn expect(&mut self, code: u16) -> io::Result<()> {
        let got = self.reply()?;
        if got == code {
            Ok(())
        } else {
            Err(io::Error::other(format!("expected {code}, got {got}")))
        }
    }

    fn command(&mut self, line: &str, code: u16) -> io::Result<()> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\r\n")?;
        self.expect(code)
    }
}

/// Payload lines of `size` octets in all (at least 2): CRLF lines of [`LINE`] characters,
/// the last one shorter or one character longer, without leading dots.
fn payload(size: usize) -> Vec<u8> {
    let full = LINE + 2;
    let (mut lines, rest) = (size / full, size % full);
    let mut lengths: Vec<usize> = vec![full; lines];
    match rest {
        0 => {}
        1 if lines > 0 => lengths[lines - 1] += 1,
        _ => {
            lengths.push(rest.max(2));
            lines += 1;
        }
    }
    let mut out = Vec::with_capacity(size);
    for (n, len) in lengths.into_iter().enumerate().take(lines) {
        let mut line = format!("{n:08} ").into_bytes();
        line.resize(len - 2, b'x');
        line.extend_from_slice(b"\r\n");
        out.extend_from_slice(&line);
    }
    out
}

/// Sends one message of `content` (already CRLF lines) over a new session.
fn send_message(address: SocketAddr, content: &[u8]) -> io::Result<()> {
    let mut c = Client::connect(address)?;
    c.command("EHLO load.example.org", 250)?;
    c.command(&format!("MAIL FROM:<{SENDER}> SIZE={}", content.len()), 250)?;
    c.command(&format!("RCPT TO:<{RECIPIENT}>"), 250)?;
    c.command("DATA", 354)?;
    c.writer.write_all(content)?;
    c.command(".", 250)?;
    c.command("QUIT", 221)
}

/// One benchmark run's surroundings: the release binary, and a work directory under
/// `target/bench` that is removed when the run succeeds and kept when it fails.
struct Run {
    binary: PathBuf,
    bench_dir: PathBuf,
    work: PathBuf,
}

impl Run {
    fn prepare(name: &str) -> Result<Run, Failure> {
        process::catch_interrupts();
        let root = crate::workspace_root();
        let target = crate::target_dir(&root);
        let binary = crate::bench::build_drawbridge(&root, &target)?;
        let bench_dir = target.join("bench");
        let work = bench_dir.join(format!("{name}-{}", std::process::id()));
        crate::bench::make_shared_dir(&bench_dir)?;
        crate::bench::make_shared_dir(&work)?;
        Ok(Run {
            binary,
            bench_dir,
            work,
        })
    }

    /// Runs `measure` in the work directory; the directory goes once it succeeded.
    fn measure<T>(
        &self,
        measure: impl FnOnce(&Path, &Path) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let measured = measure(&self.binary, &self.work).map_err(|f| {
            Failure(format!(
                "{f}\n(the run's files are kept in {})",
                self.work.display()
            ))
        })?;
        let _ = fs::remove_dir_all(&self.work);
        Ok(measured)
    }

    /// Writes `target/bench/<name>.json`.
    fn report(&self, name: &str, fields: &[(&str, String)]) -> Result<(), Failure> {
        let path = self.bench_dir.join(format!("{name}.json"));
        fs::write(&path, crate::bench::json_object(fields))
            .context(format_args!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
        Ok(())
    }
}

/// What `bench delivery` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryMeasurement {
    pub peak_rss_kib: u64,
    pub peak_pss_kib: u64,
    pub accept_seconds: f64,
    pub deliver_seconds: f64,
}

pub fn run_delivery(options: &DeliveryOptions) -> Result<ExitCode, Failure> {
    let smtp_sink = process::find_program("smtp-sink")
        .ok_or_else(|| Failure::new("smtp-sink not found: install Debian's postfix package"))?;
    let run = Run::prepare("delivery")?;
    println!(
        "delivery benchmark: {} messages of {} octets, accepted while the next hop is down, then delivered at once",
        options.messages, options.size
    );
    let measured =
        run.measure(|binary, work| measure_delivery(options, binary, &smtp_sink, work))?;
    println!(
        "accepted in {:.1} s, delivered in {:.1} s; peak RSS {} KiB ({:.1} MiB), peak PSS while delivering {} KiB",
        measured.accept_seconds,
        measured.deliver_seconds,
        measured.peak_rss_kib,
        measured.peak_rss_kib as f64 / 1024.0,
        measured.peak_pss_kib
    );
    run.report(
        "delivery",
        &[
            ("messages", options.messages.to_string()),
            ("size", options.size.to_string()),
            ("peak_rss_kib", measured.peak_rss_kib.to_string()),
            ("peak_pss_kib", measured.peak_pss_kib.to_string()),
            ("accept_seconds", format!("{:.3}", measured.accept_seconds)),
            (
                "deliver_seconds",
                format!("{:.3}", measured.deliver_seconds),
            ),
        ],
    )?;
    Ok(ExitCode::SUCCESS)
}

fn measure_delivery(
    options: &DeliveryOptions,
    binary: &Path,
    smtp_sink: &Path,
    work: &Path,
) -> Result<DeliveryMeasurement, Failure> {
    let [sink_port] = process::free_ports::<1>()?;
    let n = options.messages;
    let config = format!(
        "set service inbound max-connections-per-ip {n}\n\
         set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
         set route example.com relay [127.0.0.1]:{sink_port}\n\
         set route example.com concurrency {n}\n\
         set route example.com avoid-time 1s\n\
         set route example.com failover-timeout 5s\n\
         set queue retry \"1s\"\n"
    );
    let mut gateway = Gateway::start(binary, work, &config, |_| Ok(()))?;
    let address = gateway.address();
    let content = Arc::new(payload(options.size as usize));
    let started = Instant::now();
    let senders: Vec<_> = (0..n)
        .map(|_| {
            let content = Arc::clone(&content);
            thread::spawn(move || send_message(address, &content))
        })
        .collect();
    for sender in senders {
        sender
            .join()
            .map_err(|_| Failure::new("a sending thread panicked"))?
            .context("sending a message")?;
    }
    let accept_seconds = started.elapsed().as_secs_f64();
    gateway.check_running()?;
    println!(
        "accepted {n} messages in {accept_seconds:.1} s; peak RSS so far {} KiB",
        gateway.peak_rss_kib()
    );
    drop(content);

    let pid = gateway.process.id();
    let sampler = PeakPss::start(move || vec![pid]);
    let delivering = Instant::now();
    let mut sink = Sink::start(smtp_sink, sink_port, &work.join("sink.log"))?;
    loop {
        if sink.messages() >= u64::from(n) {
            break;
        }
        process::check_interrupted()?;
        sink.check_running()?;
        gateway.check_running()?;
        if delivering.elapsed() > STEP_TIMEOUT {
            return Err(Failure(format!(
                "only {} of {n} messages delivered after {} s",
                sink.messages(),
                STEP_TIMEOUT.as_secs()
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let deliver_seconds = delivering.elapsed().as_secs_f64();
    let peak_pss_kib = sampler.finish();
    let peak_rss_kib = gateway.peak_rss_kib();
    gateway.process.stop();
    sink.stop();
    Ok(DeliveryMeasurement {
        peak_rss_kib,
        peak_pss_kib,
        accept_seconds,
        deliver_seconds,
    })
}

/// What `bench auth-stall` measured: the probe's reply latencies.
#[derive(Debug, Clone, PartialEq)]
pub struct StallMeasurement {
    pub probes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub auth_seconds: f64,
}

/// The `q`-quantile (0..=1) of sorted latencies by the nearest-rank method.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    crate::bench::quantile(sorted, q).unwrap_or(Duration::ZERO)
}

pub fn run_auth_stall(options: &StallOptions) -> Result<ExitCode, Failure> {
    let run = Run::prepare("auth-stall")?;
    println!(
        "auth-stall benchmark: {} AUTH PLAIN at {} PBKDF2 iterations at once, one probe session timing its replies",
        options.attempts, options.iterations
    );
    let m = run.measure(|binary, work| measure_stall(options, binary, work))?;
    println!(
        "{} probes while the AUTHs ran ({:.1} s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        m.probes, m.auth_seconds, m.p50_ms, m.p99_ms, m.max_ms
    );
    run.report(
        "auth-stall",
        &[
            ("attempts", options.attempts.to_string()),
            ("iterations", options.iterations.to_string()),
            ("probes", m.probes.to_string()),
            ("p50_ms", format!("{:.3}", m.p50_ms)),
            ("p99_ms", format!("{:.3}", m.p99_ms)),
            ("max_ms", format!("{:.3}", m.max_ms)),
            ("auth_seconds", format!("{:.3}", m.auth_seconds)),
        ],
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Adds the benchmark's user with `iterations` through `drawbridge password add`.
fn add_user(binary: &Path, state: &Path, iterations: u32) -> Result<(), Failure> {
    let mut child = Command::new(binary)
        .args(["password", "add", "--user", USER, "--iterations"])
        .arg(iterations.to_string())
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running drawbridge password add")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .context("writing the password")?;
    }
    let status = child
        .wait()
        .context("waiting for drawbridge password add")?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(format!(
            "drawbridge password add failed ({status})"
        )))
    }
}

/// Standard base64 (RFC 4648 §4), for the AUTH PLAIN initial response.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn measure_stall(
    options: &StallOptions,
    binary: &Path,
    work: &Path,
) -> Result<StallMeasurement, Failure> {
    // AUTH on the inbound service (off by default), PLAIN in clear for the loopback
    // clients' own ruleset (the factory one offers it only under TLS).
    let config = "set service inbound max-connections-per-ip 200\n\
                  set service inbound auth yes\n\
                  set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
                  set ruleset INTERNAL mechanisms \"PLAIN\"\n";
    let iterations = options.iterations;
    let mut gateway = Gateway::start(binary, work, config, |state| {
        println!("adding user {USER} with {iterations} iterations");
        add_user(binary, state, iterations)
    })?;
    let address = gateway.address();
    let initial = base64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let attempts = options.attempts as usize;
    // The AUTH sessions connect and say EHLO first; all then send AUTH at once.
    let ready = Arc::new(Barrier::new(attempts + 1));
    let authers: Vec<_> = (0..attempts)
        .map(|_| {
            let ready = Arc::clone(&ready);
            let initial = initial.clone();
            thread::spawn(move || -> io::Result<()> {
                let connected = Client::connect(address).and_then(|mut c| {
                    c.command("EHLO auth.example.org", 250)?;
                    Ok(c)
                });
                ready.wait();
                let mut c = connected?;
                c.command(&format!("AUTH PLAIN {initial}"), 235)?;
                c.command("QUIT", 221)
            })
        })
        .collect();
    let mut probe = Client::connect(address).context("connecting the probe")?;
    probe
        .command("EHLO probe.example.org", 250)
        .context("probe EHLO")?;
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let finished = Arc::clone(&finished);
        thread::spawn(move || {
            let results: Vec<io::Result<()>> = authers
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(io::Error::other("panicked")))
                })
                .collect();
            finished.store(true, Ordering::SeqCst);
            results
        })
    };
    ready.wait();
    let started = Instant::now();
    let script: [(&str, u16); 3] = [
        ("NOOP", 250),
        ("MAIL FROM:<probe@example.org>", 250),
        ("RSET", 250),
    ];
    let mut latencies = Vec::new();
    let mut step = 0;
    while !finished.load(Ordering::SeqCst) {
        let (line, code) = script[step % script.len()];
        step += 1;
        let sent = Instant::now();
        probe.command(line, code).context("probe command")?;
        latencies.push(sent.elapsed());
        if started.elapsed() > STEP_TIMEOUT {
            return Err(Failure::new("the AUTH sessions did not finish in time"));
        }
        thread::sleep(PROBE_PAUSE);
    }
    let auth_seconds = started.elapsed().as_secs_f64();
    let results = watcher
        .join()
        .map_err(|_| Failure::new("the AUTH watcher panicked"))?;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(Failure(format!(
            "{failed} of {attempts} AUTH sessions failed, for example: {e}"
        )));
    }
    gateway.check_running()?;
    gateway.process.stop();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(StallMeasurement {
        probes: latencies.len(),
        p50_ms: ms(quantile(&latencies, 0.50)),
        p99_ms: ms(quantile(&latencies, 0.99)),
        max_ms: ms(latencies.last().copied().unwrap_or_default()),
        auth_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_have_the_documented_defaults_and_bounds() {
        assert_eq!(
            DeliveryOptions::parse(&[]).unwrap(),
            DeliveryOptions {
                messages: 20,
                size: 34_000_000
            }
        );
        assert_eq!(
            StallOptions::parse(&words(&["--attempts=5", "--iterations", "4096"])).unwrap(),
            StallOptions {
                attempts: 5,
                iterations: 4096
            }
        );
        for bad in [&["--messages", "0"][..], &["--size", "36700161"], &["--x"]] {
            assert!(DeliveryOptions::parse(&words(bad)).is_err(), "{bad:?}");
        }
        for bad in [&["--iterations", "4095"][..], &["--attempts", "191"]] {
            assert!(StallOptions::parse(&words(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn payload_has_the_exact_size_and_crlf_lines() {
        for size in [2, 3, 77, 78, 79, 80, 1000, 65_537] {
            let p = payload(size);
            assert_eq!(p.len(), size, "{size}");
            assert!(!p.split(|&b| b == b'\n').any(|l| l.starts_with(b".")));
        }
        assert!(payload(1000).ends_with(b"\r\n"));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&d, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&d, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&d[..1], 0.99), Duration::from_millis(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn status_figures_are_read() {
        let text = "Name:\tdrawbridge\nVmHWM:\t   12345 kB\nVmRSS:\t  100 kB\n";
        assert_eq!(parse_status_kib(text, "VmHWM:"), Some(12345));
        assert_eq!(parse_status_kib(text, "VmPeak:"), None);
    }
}
