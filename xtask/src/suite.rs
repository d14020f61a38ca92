//! The benchmark suite: `cargo xtask bench relay|latency|churn|handshakes|idle|
//! slow-downstream|dead-downstream|size|loadgen|all`, drawbridge against a private Postfix instance on the same machine in the
//! same invocation, interleaved (each measurement runs drawbridge, then Postfix, under the
//! same load), with both figures and their ratio printed and written as JSON under
//! `target/bench/`.
//!
//! The load comes from the project's own generator ([`crate::loadgen`]); the final next hop
//! is Postfix's smtp-sink, whose counter says when every message has arrived. CPU is the
//! whole process tree of each system (drawbridge's one process; Postfix's master, its
//! daemons and the children they reaped) from `/proc/PID/stat`; memory is the summed PSS
//! of the same tree, sampled every 50 ms. Postfix runs with its defaults except where a
//! loopback benchmark needs otherwise (no DNS, no local delivery, no chroot; a 20 MB
//! message size limit and, for `idle`, a process limit to match the connections); it
//! fsyncs each message, and so does drawbridge before its 250.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::bench::{self, START_TIMEOUT, System, json_object, json_string};
use crate::loadgen::{self, Report, Spec};
use crate::options::{self, number};
use crate::postfix::{self, Instance, Layout};
use crate::process::{self, Guarded, PeakPss};
use crate::sink::Sink;
use crate::{Context, Failure};

/// Message sizes of `bench relay` unless `--sizes` says otherwise.
pub const RELAY_SIZES: &str = "1k,4k,100k,10m";
/// Octets each size of `bench relay` sends by default: the message count is this over
/// the size, within [`MIN_MESSAGES`]..=[`MAX_DEFAULT_MESSAGES`].
const RELAY_VOLUME: usize = 200 << 20;
const MIN_MESSAGES: u64 = 50;
const MAX_DEFAULT_MESSAGES: u64 = 20_000;
/// Parallel sessions unless `--sessions` says otherwise.
const DEFAULT_SESSIONS: u32 = 10;
/// Messages of `bench latency` and of each `bench churn` run.
const LATENCY_MESSAGES: u64 = 5_000;
const CHURN_MESSAGES: u64 = 3_000;
/// The size of `latency`, `churn` and `slow-downstream` messages.
const SMALL_SIZE: usize = 4096;
/// Full STARTTLS handshakes of `bench handshakes`.
const HANDSHAKES: u64 = 3_000;
/// Connection counts of `bench idle`.
const IDLE_COUNTS: &str = "1000,10000";
/// Most idle connections Postfix is given: it spends one smtpd process on each (about
/// 1.2 MiB of PSS plain, 1.7 MiB with TLS, and 20–35 ms of CPU to start), so 10 000 would
/// take 12–17 GiB and minutes to open. Its memory per connection is flat in the count,
/// so the largest count it runs stands for the others.
const POSTFIX_IDLE_LIMIT: u32 = 2000;
/// Threads that open idle connections at once.
const IDLE_OPENERS: u32 = 8;
/// How long idle connections sit before their memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// smtp-sink's delay before each DATA reply in `slow-downstream`, and the messages sent.
const SLOW_SINK_DELAY: &str = "1";
const SLOW_MESSAGES: u64 = 3_000;
/// How long `slow-downstream` watches after the load has been accepted.
const SLOW_WATCH: Duration = Duration::from_secs(20);
/// Messages of `dead-downstream`: three times the queue manager's default active limit.
const DEAD_MESSAGES: u64 = 30_000;
/// How long `dead-downstream` lets the queue settle after the load has been accepted:
/// every message tried once and deferred.
const DEAD_SETTLE: Duration = Duration::from_secs(15);
/// Postfix's message size limit in the suite: above the largest relay size.
const POSTFIX_SIZE_LIMIT: u64 = 20_971_520;
/// Longest one measurement may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the run loop looks at the sink and the sampler.
const POLL: Duration = Duration::from_millis(5);
/// File descriptors xtask asks for (it holds the client side of every idle connection).
const FILE_LIMIT: u32 = 65_536;

/// The suite's options; each benchmark reads what concerns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub sizes: String,
    pub messages: Option<u64>,
    pub sessions: u32,
    pub counts: String,
    pub only: Option<System>,
    /// `--binary PATH`: this drawbridge instead of a release build of the tree, to put
    /// a change beside the code before it.
    pub binary: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sizes: RELAY_SIZES.to_owned(),
            messages: None,
            sessions: DEFAULT_SESSIONS,
            counts: IDLE_COUNTS.to_owned(),
            only: None,
            binary: None,
        }
    }
}

impl Options {
    pub fn parse(args: &[String], what: &str) -> Result<Options, String> {
        let mut o = Options::default();
        options::walk(
            args,
            |name, value, _| {
                match name {
                    "--sizes" => {
                        let text = value()?;
                        loadgen::parse_sizes(&text)?;
                        o.sizes = text;
                    }
                    "--messages" => {
                        o.messages = Some(u64::from(number(name, &value()?, 1, u32::MAX)?))
                    }
                    "--sessions" => o.sessions = number(name, &value()?, 1, loadgen::MAX_SESSIONS)?,
                    "--connections" => {
                        let text = value()?;
                        parse_counts(&text)?;
                        o.counts = text;
                    }
                    "--binary" => o.binary = Some(PathBuf::from(value()?)),
                    "--only" => {
                        o.only = Some(match value()?.as_str() {
                            "drawbridge" => System::Drawbridge,
                            "postfix" => System::Postfix,
                            other => {
                                return Err(format!(
                                    "--only takes drawbridge or postfix, not `{other}`"
                                ));
                            }
                        })
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            },
            what,
        )?;
        Ok(o)
    }

    fn systems(&self) -> Vec<System> {
        [System::Drawbridge, System::Postfix]
            .into_iter()
            .filter(|s| self.only.is_none_or(|only| only == *s))
            .collect()
    }
}

fn parse_counts(text: &str) -> Result<Vec<u32>, String> {
    text.split(',')
        .map(|n| number("--connections", n, 1, loadgen::MAX_SESSIONS))
        .collect()
}

/// The default message count of one relay size.
fn relay_messages(size: usize) -> u64 {
    ((RELAY_VOLUME / size.max(1)) as u64).clamp(MIN_MESSAGES, MAX_DEFAULT_MESSAGES)
}

/// What one measurement of one system found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub seconds: f64,
    pub messages: u64,
    pub octets: u64,
    pub cpu_seconds: f64,
    pub peak_pss_kib: u64,
    pub p50_us: Option<u32>,
    pub p99_us: Option<u32>,
    pub p999_us: Option<u32>,
}

impl Figures {
    pub fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }
    pub fn mb_per_s(&self) -> f64 {
        self.octets as f64 / 1e6 / self.seconds.max(1e-9)
    }
    pub fn cpu_per_1000(&self) -> f64 {
        self.cpu_seconds * 1000.0 / (self.messages.max(1) as f64)
    }
}

/// What every benchmark of the suite shares: programs, the work directory, the clock.
pub struct Bench {
    drawbridge: Option<PathBuf>,
    postfix: Option<(PathBuf, String)>,
    smtp_sink: PathBuf,
    work: PathBuf,
    out: PathBuf,
    ticks: u64,
    serial: u32,
}

impl Bench {
    pub fn prepare(systems: &[System], binary: Option<&Path>) -> Result<Bench, Failure> {
        process::catch_interrupts();
        if systems.contains(&System::Postfix) && !process::is_root() {
            return Err(Failure::new(
                "the Postfix runs need root (`postfix start`): run as root, or pass --only drawbridge",
            ));
        }
        let tool = |name: &str| {
            process::find_program(name).ok_or_else(|| {
                Failure(format!(
                    "{name} not found: install Debian's postfix package (`cargo xtask test` does)"
                ))
            })
        };
        let smtp_sink = tool("smtp-sink")?;
        let postfix = if systems.contains(&System::Postfix) {
            let program = tool("postfix")?;
            let version = postfix::installed_version(&tool("postconf")?)?;
            Some((program, version))
        } else {
            None
        };
        let root = crate::workspace_root();
        let target = crate::target_dir(&root);
        let drawbridge = match binary {
            _ if !systems.contains(&System::Drawbridge) => None,
            Some(b) if b.is_file() => Some(b.to_path_buf()),
            Some(b) => return Err(Failure(format!("--binary {}: no such file", b.display()))),
            None => Some(bench::build_drawbridge(&root, &target)?),
        };
        let out = target.join("bench");
        let work = out.join(format!("suite-{}", std::process::id()));
        bench::make_shared_dir(&out)?;
        bench::make_shared_dir(&work)?;
        raise_file_limit();
        Ok(Bench {
            drawbridge,
            postfix,
            smtp_sink,
            work,
            out,
            ticks: process::clock_ticks_per_second(),
            serial: 0,
        })
    }

    fn postfix_version(&self) -> Option<&str> {
        self.postfix.as_ref().map(|(_, v)| v.as_str())
    }

    /// A fresh directory for one run.
    fn run_dir(&mut self, system: System, what: &str) -> Result<PathBuf, Failure> {
        self.serial += 1;
        let dir = self
            .work
            .join(format!("{:03}-{}-{what}", self.serial, system.name()));
        bench::make_shared_dir(&dir)?;
        Ok(dir)
    }

    /// Starts `system` relaying example.com to a sink on `sink_port`.
    fn start(
        &mut self,
        system: System,
        what: &str,
        sink_port: u16,
        tuning: &Tuning,
    ) -> Result<Subject, Failure> {
        let dir = self.run_dir(system, what)?;
        match system {
            System::Drawbridge => {
                let binary = self
                    .drawbridge
                    .clone()
                    .ok_or_else(|| Failure::new("drawbridge was not built"))?;
                start_drawbridge(&binary, &dir, sink_port, tuning)
            }
            System::Postfix => {
                let (program, version) = self
                    .postfix
                    .clone()
                    .ok_or_else(|| Failure::new("Postfix is not set up"))?;
                start_postfix(&program, &version, &dir, sink_port, tuning)
            }
        }
    }

    fn sink(&mut self, what: &str, options: &[&str]) -> Result<(Sink, u16), Failure> {
        let [port] = process::free_ports::<1>()?;
        self.serial += 1;
        let log = self
            .work
            .join(format!("{:03}-sink-{what}.log", self.serial));
        Ok((
            Sink::start_with(&self.smtp_sink, port, &log, options)?,
            port,
        ))
    }

    fn write_json(&self, name: &str, text: &str) -> Result<(), Failure> {
        let path = self.out.join(format!("{name}.json"));
        fs::write(&path, text).context(format_args!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
        Ok(())
    }

    pub fn finish(self) {
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// Asks for more file descriptors for xtask (and so for the systems it starts), up to
/// what the hard limit allows. std has no setrlimit; util-linux's prlimit does it.
fn raise_file_limit() {
    let _ = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={FILE_LIMIT}:{FILE_LIMIT}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// How a run differs from the plain relay setup.
#[derive(Debug, Clone, Default)]
struct Tuning {
    /// The most connections the system must hold at once (0: its defaults).
    connections: u32,
    /// STARTTLS offered with a P-256 certificate.
    tls: bool,
}

impl Tuning {
    /// Room for `sessions` connections from one address (drawbridge's per-address limit
    /// and Postfix's process limit are both below a few hundred by default).
    fn sessions(sessions: u32) -> Tuning {
        Tuning {
            connections: sessions,
            tls: false,
        }
    }
}

/// A system under test, stopped when dropped.
struct Subject {
    system: System,
    port: u16,
    root: u32,
    running: Running,
}

enum Running {
    Drawbridge { process: Guarded, log: PathBuf },
    Postfix(Instance),
}

impl Subject {
    fn pids(&self) -> impl Fn() -> Vec<u32> + Send + 'static {
        let (system, root) = (self.system, self.root);
        move || match system {
            System::Drawbridge => vec![root],
            System::Postfix => process::descendants(&process::process_table(), root),
        }
    }

    fn pss_kib(&self) -> u64 {
        (self.pids())().into_iter().map(process::pss_kib).sum()
    }

    fn cpu_seconds(&self, ticks: u64) -> f64 {
        process::tree_cpu_seconds(self.root, ticks)
    }

    fn check_running(&mut self) -> Result<(), Failure> {
        match &mut self.running {
            Running::Drawbridge { process, log } => process.check_running_logged(log),
            Running::Postfix(instance) => instance.check_running(),
        }
    }

    fn target(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Drawbridge { process, .. } => process.stop(),
            Running::Postfix(instance) => instance.stop(),
        }
    }
}

/// drawbridge's configuration for the suite: inbound relays example.com to the sink, no
/// per-session message limit (Postfix has none), client names off (Postfix names loopback
/// from /etc/hosts; ours would ask the host's resolver).
fn drawbridge_config(inbound: u16, outbound: u16, sink: u16, tuning: &Tuning) -> String {
    let mut text = format!(
        "\
set system host-name gw.example.com
set system dns client-names no
set service inbound listen 127.0.0.1:{inbound}
set service inbound max-messages-per-session 1000000
set service inbound max-message-size {POSTFIX_SIZE_LIMIT}
set service outbound listen 127.0.0.1:{outbound}
set classify 10 remote 127.0.0.0/8 category INTERNAL
set route example.com relay [127.0.0.1]:{sink}
"
    );
    if tuning.connections > 0 {
        let most = tuning.connections + 100;
        text.push_str(&format!(
            "set service inbound max-connections {most}\nset service inbound max-connections-per-ip {most}\n"
        ));
    }
    text
}

fn start_drawbridge(
    binary: &Path,
    dir: &Path,
    sink_port: u16,
    tuning: &Tuning,
) -> Result<Subject, Failure> {
    let [inbound, outbound] = process::free_ports::<2>()?;
    let config = dir.join("config");
    fs::write(
        &config,
        drawbridge_config(inbound, outbound, sink_port, tuning),
    )
    .context(format_args!("writing {}", config.display()))?;
    let state = dir.join("state");
    fs::create_dir_all(&state).context(format_args!("creating {}", state.display()))?;
    let log = dir.join("out.log");
    let mut process = Guarded::spawn(
        "drawbridge",
        &mut bench::gateway_command(binary, &config, &state, &log)?,
    )?;
    process::wait_for_listener("drawbridge", inbound, START_TIMEOUT, || {
        process.check_running_logged(&log)
    })?;
    let root = process.id();
    Ok(Subject {
        system: System::Drawbridge,
        port: inbound,
        root,
        running: Running::Drawbridge { process, log },
    })
}

fn start_postfix(
    program: &Path,
    version: &str,
    dir: &Path,
    sink_port: u16,
    tuning: &Tuning,
) -> Result<Subject, Failure> {
    let [smtpd] = process::free_ports::<1>()?;
    let layout = Layout::under(&dir.join("instance"));
    bench::make_shared_dir(&layout.root)?;
    let mut main_cf = postfix::main_cf(&layout, postfix::compatibility_level(version), sink_port);
    main_cf.push_str(&format!("message_size_limit = {POSTFIX_SIZE_LIMIT}\n"));
    if tuning.connections > 0 {
        main_cf.push_str(&format!(
            "default_process_limit = {}\n",
            tuning.connections + 100
        ));
    }
    let mut master_cf = postfix::master_cf(smtpd);
    if tuning.tls {
        let openssl = process::find_program("openssl")
            .ok_or_else(|| Failure::new("openssl not found (Debian's openssl package)"))?;
        let (cert, key) = crate::bench_tls::certificate(&openssl, dir)?;
        main_cf.push_str(&crate::bench_tls::postfix_tls_settings(&cert, &key));
        master_cf.push_str("tlsmgr     unix  -       -       n       1000?   1       tlsmgr\n");
    }
    let instance = Instance::start_with(program, layout, &main_cf, &master_cf)?;
    let mut subject = Subject {
        system: System::Postfix,
        port: smtpd,
        root: instance.master_pid(),
        running: Running::Postfix(instance),
    };
    process::wait_for_listener("postfix", smtpd, START_TIMEOUT, || subject.check_running())?;
    Ok(subject)
}

/// Sends `spec` to `subject` and measures until the sink has every message.
fn measure(
    bench: &Bench,
    subject: &mut Subject,
    sink: &Sink,
    spec: Spec,
) -> Result<Figures, Failure> {
    let name = subject.system.name();
    let wanted = spec.messages;
    let at_sink_before = sink.messages();
    let sampler = PeakPss::start(subject.pids());
    let cpu_before = subject.cpu_seconds(bench.ticks);
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let done_seen = Arc::clone(&done);
    let load = thread::spawn(move || {
        let outcome = loadgen::run(&spec);
        done_seen.store(true, Ordering::SeqCst);
        outcome
    });
    let mut generator: Option<Report> = None;
    let mut load = Some(load);
    let elapsed = loop {
        let received = sink.messages() - at_sink_before;
        if generator.is_none() && done.load(Ordering::SeqCst) {
            let handle = load.take().ok_or_else(|| Failure::new("load lost"))?;
            let report = handle
                .join()
                .map_err(|_| Failure::new("the load generator panicked"))?
                .map_err(|f| Failure(format!("{name}: {f}")))?;
            generator = Some(report);
        }
        if generator.is_some() && received >= wanted {
            break started.elapsed();
        }
        process::check_interrupted()?;
        subject.check_running()?;
        if started.elapsed() > RUN_TIMEOUT {
            return Err(Failure(format!(
                "{name}: {received} of {wanted} messages at the sink after {} s",
                RUN_TIMEOUT.as_secs()
            )));
        }
        thread::sleep(POLL);
    };
    let cpu_seconds = subject.cpu_seconds(bench.ticks) - cpu_before;
    let peak_pss_kib = sampler.finish();
    let report = generator.unwrap_or_default();
    Ok(Figures {
        seconds: elapsed.as_secs_f64(),
        messages: report.messages,
        octets: report.octets,
        cpu_seconds,
        peak_pss_kib,
        p50_us: report.latency_us(0.5),
        p99_us: report.latency_us(0.99),
        p999_us: report.latency_us(0.999),
    })
}

/// One measurement of every system under the same load, interleaved.
fn compare(
    bench: &mut Bench,
    systems: &[System],
    what: &str,
    tuning: &Tuning,
    spec: &dyn Fn(SocketAddr) -> Spec,
) -> Result<Vec<(System, Figures)>, Failure> {
    let mut all = Vec::new();
    for &system in systems {
        let (sink, sink_port) = bench.sink(what, &[])?;
        let mut subject = bench.start(system, what, sink_port, tuning)?;
        let spec = spec(subject.target());
        println!(
            "{what}: {} sending {} messages over {} sessions",
            system.name(),
            spec.messages,
            spec.sessions
        );
        let figures = measure(bench, &mut subject, &sink, spec)?;
        drop(subject);
        drop(sink);
        print_figures(system, &figures);
        all.push((system, figures));
    }
    Ok(all)
}

fn print_figures(system: System, f: &Figures) {
    let us = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    println!(
        "  {:<10} {:>9.1} msg/s {:>8.1} MB/s  CPU {:>7.3} s/1000  PSS {:>7} KiB  ack p50/p99/p99.9 {}/{}/{} µs",
        system.name(),
        f.messages_per_s(),
        f.mb_per_s(),
        f.cpu_per_1000(),
        f.peak_pss_kib,
        us(f.p50_us),
        us(f.p99_us),
        us(f.p999_us)
    );
}

/// drawbridge's figure over Postfix's, when both ran.
fn ratio(results: &[(System, Figures)], figure: impl Fn(&Figures) -> f64) -> Option<f64> {
    let of = |s| {
        results
            .iter()
            .find(|(x, _)| *x == s)
            .map(|(_, f)| figure(f))
    };
    let r = of(System::Drawbridge)? / of(System::Postfix)?;
    r.is_finite().then_some(r)
}

fn float(value: Option<f64>) -> String {
    match value {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        _ => "null".to_owned(),
    }
}

fn figures_json(results: &[(System, Figures)]) -> String {
    let of = |s| results.iter().find(|(x, _)| *x == s).map(|(_, f)| f);
    let mut fields = Vec::new();
    for system in [System::Drawbridge, System::Postfix] {
        let f = of(system);
        let n = system.name();
        let us = |v: Option<Option<u32>>| v.flatten().map_or("null".to_owned(), |v| v.to_string());
        fields.push((
            format!("{n}_msgs_per_s"),
            float(f.map(Figures::messages_per_s)),
        ));
        fields.push((format!("{n}_mb_per_s"), float(f.map(Figures::mb_per_s))));
        fields.push((
            format!("{n}_cpu_s_per_1000"),
            float(f.map(Figures::cpu_per_1000)),
        ));
        fields.push((
            format!("{n}_peak_pss_kib"),
            f.map_or("null".to_owned(), |f| f.peak_pss_kib.to_string()),
        ));
        fields.push((format!("{n}_p50_us"), us(f.map(|f| f.p50_us))));
        fields.push((format!("{n}_p99_us"), us(f.map(|f| f.p99_us))));
        fields.push((format!("{n}_p999_us"), us(f.map(|f| f.p999_us))));
        fields.push((format!("{n}_seconds"), float(f.map(|f| f.seconds))));
    }
    fields.push((
        "ratio_msgs_per_s".to_owned(),
        float(ratio(results, Figures::messages_per_s)),
    ));
    fields.push((
        "ratio_cpu_per_message".to_owned(),
        float(ratio(results, Figures::cpu_per_1000)),
    ));
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    format!("{{{}}}", body.join(", "))
}

/// `bench relay`: each size in turn, both systems, pipelined sessions kept open.
pub fn relay(bench: &mut Bench, o: &Options) -> Result<String, Failure> {
    let systems = o.systems();
    let mut entries = Vec::new();
    for (size, _) in loadgen::parse_sizes(&o.sizes).map_err(Failure)? {
        let messages = o.messages.unwrap_or_else(|| relay_messages(size));
        let sessions = o.sessions;
        println!(
            "relay: {messages} messages of {} over {sessions} sessions",
            loadgen::size_name(size)
        );
        let results = compare(
            bench,
            &systems,
            "relay",
            &Tuning::sessions(sessions),
            &|target| Spec {
                target,
                sessions,
                messages,
                per_connection: 0,
                sizes: vec![(size, 1)],
                pipelining: true,
                starttls: false,
            },
        )?;
        print_ratios(&results);
        entries.push(format!(
            "{{\"size\": {size}, \"messages\": {messages}, \"sessions\": {sessions}, \"figures\": {}}}",
            figures_json(&results)
        ));
    }
    record(bench, "relay", &entries)
}

fn print_ratios(results: &[(System, Figures)]) {
    if let (Some(rate), Some(cpu)) = (
        ratio(results, Figures::messages_per_s),
        ratio(results, Figures::cpu_per_1000),
    ) {
        println!(
            "  drawbridge/postfix: {rate:.2}× the messages per second, {:.1}× less CPU per message",
            1.0 / cpu
        );
    }
}

/// Writes one benchmark's runs to `target/bench/NAME.json` and returns the text, which
/// `all` gathers.
fn record(bench: &Bench, name: &str, entries: &[String]) -> Result<String, Failure> {
    let json = json_object(&[
        ("benchmark", json_string(name)),
        (
            "postfix_version",
            bench
                .postfix_version()
                .map_or_else(|| "null".to_owned(), json_string),
        ),
        ("runs", format!("[\n    {}\n  ]", entries.join(",\n    "))),
    ]);
    bench.write_json(name, &json)?;
    Ok(json)
}

/// `bench latency`: one session, one message at a time (no pipelining), acknowledgement
/// latency percentiles.
pub fn latency(bench: &mut Bench, o: &Options) -> Result<String, Failure> {
    let messages = o.messages.unwrap_or(LATENCY_MESSAGES);
    let results = compare(
        bench,
        &o.systems(),
        "latency",
        &Tuning::default(),
        &|target| Spec {
            target,
            sessions: 1,
            messages,
            per_connection: 0,
            sizes: vec![(SMALL_SIZE, 1)],
            pipelining: false,
            starttls: false,
        },
    )?;
    let p99 = ratio(&results, |f| f64::from(f.p99_us.unwrap_or(0)));
    if let Some(r) = p99 {
        println!("  drawbridge/postfix p99 latency: {r:.3}");
    }
    record(
        bench,
        "latency",
        &[format!(
            "{{\"size\": {SMALL_SIZE}, \"messages\": {messages}, \"ratio_p99\": {}, \"figures\": {}}}",
            float(p99),
            figures_json(&results)
        )],
    )
}

/// `bench churn`: a new connection for every message, plain and with STARTTLS (a full
/// handshake each time).
pub fn churn(bench: &mut Bench, o: &Options) -> Result<String, Failure> {
    let messages = o.messages.unwrap_or(CHURN_MESSAGES);
    let sessions = o.sessions;
    let mut entries = Vec::new();
    for tls in [false, true] {
        println!(
            "churn: {messages} messages, a new {}connection each",
            if tls { "TLS " } else { "" }
        );
        let results = compare(
            bench,
            &o.systems(),
            "churn",
            &Tuning {
                connections: sessions,
                tls,
            },
            &|target| Spec {
                target,
                sessions,
                messages,
                per_connection: 1,
                sizes: vec![(SMALL_SIZE, 1)],
                pipelining: true,
                starttls: tls,
            },
        )?;
        print_ratios(&results);
        entries.push(format!(
            "{{\"tls\": {tls}, \"messages\": {messages}, \"sessions\": {sessions}, \"figures\": {}}}",
            figures_json(&results)
        ));
    }
    record(bench, "churn", &entries)
}

/// `bench handshakes`: full STARTTLS handshakes (no resumption) over parallel sessions,
/// each a new connection: handshakes per second and CPU per 1000 of each system's tree.
pub fn handshakes(bench: &mut Bench, o: &Options) -> Result<String, Failure> {
    let count = o.messages.unwrap_or(HANDSHAKES);
    let sessions = o.sessions;
    let mut results = Vec::new();
    for system in o.systems() {
        let (sink, sink_port) = bench.sink("handshakes", &[])?;
        let tuning = Tuning {
            connections: sessions,
            tls: true,
        };
        let mut subject = bench.start(system, "handshakes", sink_port, &tuning)?;
        let sampler = PeakPss::start(subject.pids());
        let cpu_before = subject.cpu_seconds(bench.ticks);
        let elapsed = loadgen::handshakes(subject.target(), sessions, count)
            .map_err(|f| Failure(format!("{}: {f}", system.name())))?;
        subject.check_running()?;
        let figures = Figures {
            seconds: elapsed.as_secs_f64(),
            messages: count,
            cpu_seconds: subject.cpu_seconds(bench.ticks) - cpu_before,
            peak_pss_kib: sampler.finish(),
            ..Figures::default()
        };
        println!(
            "handshakes: {:<10} {:>8.1} handshakes/s  CPU {:.3} s/1000  PSS {} KiB",
            system.name(),
            figures.messages_per_s(),
            figures.cpu_per_1000(),
            figures.peak_pss_kib
        );
        drop(subject);
        drop(sink);
        results.push((system, figures));
    }
    let rate = ratio(&results, Figures::messages_per_s);
    let cpu = ratio(&results, Figures::cpu_per_1000);
    if let (Some(rate), Some(cpu)) = (rate, cpu) {
        println!(
            "  drawbridge/postfix: {rate:.2}× the handshakes per second, {:.1}× less CPU each",
            1.0 / cpu
        );
    }
    record(
        bench,
        "handshakes",
        &[format!(
            "{{\"handshakes\": {count}, \"sessions\": {sessions}, \"figures\": {}}}",
            figures_json(&results)
        )],
    )
}

/// `bench idle`: memory (PSS) per idle connection, greeted and past EHLO (and STARTTLS),
/// at each connection count.
pub fn idle(bench: &mut Bench, o: &Options) -> Result<String, Failure> {
    let counts = parse_counts(&o.counts).map_err(Failure)?;
    let mut entries = Vec::new();
    for &count in &counts {
        for tls in [false, true] {
            let mut per_system = Vec::new();
            for system in o.systems() {
                if system == System::Postfix && count > POSTFIX_IDLE_LIMIT {
                    println!(
                        "idle: postfix    {count} connections skipped: one process each (see POSTFIX_IDLE_LIMIT)"
                    );
                    continue;
                }
                let (sink, sink_port) = bench.sink("idle", &[])?;
                let tuning = Tuning {
                    connections: count,
                    tls,
                };
                let mut subject = bench.start(system, "idle", sink_port, &tuning)?;
                thread::sleep(IDLE_SETTLE);
                let before = subject.pss_kib();
                let opened = Instant::now();
                let connections = loadgen::open_idle(subject.target(), count, tls, IDLE_OPENERS)
                    .map_err(|f| Failure(format!("{}: {f}", system.name())))?;
                let open_seconds = opened.elapsed().as_secs_f64();
                thread::sleep(IDLE_SETTLE);
                subject.check_running()?;
                let after = subject.pss_kib();
                drop(connections);
                drop(subject);
                drop(sink);
                let per = (after.saturating_sub(before)) as f64 / f64::from(count);
                println!(
                    "idle: {:<10} {count} {} connections: PSS {before} → {after} KiB, {per:.1} KiB each (opened in {open_seconds:.1} s)",
                    system.name(),
                    if tls { "TLS" } else { "plain" },
                );
                per_system.push((system, per, before, after));
            }
            let of = |s| per_system.iter().find(|(x, ..)| *x == s);
            let kib = |s| of(s).map(|(_, per, ..)| *per);
            let r = kib(System::Drawbridge)
                .zip(kib(System::Postfix))
                .map(|(d, p)| d / p);
            if let Some(r) = r {
                println!("  drawbridge/postfix memory per connection: {r:.4}");
            }
            entries.push(format!(
                "{{\"connections\": {count}, \"tls\": {tls}, \"drawbridge_kib_per_connection\": {}, \"postfix_kib_per_connection\": {}, \"ratio\": {}}}",
                float(kib(System::Drawbridge)),
                float(kib(System::Postfix)),
                float(r)
            ));
        }
    }
    record(bench, "idle", &entries)
}

/// Sends `messages` 4 KiB messages over `sessions` pipelined sessions kept open, as fast
/// as `subject` takes them: the generator's report and the seconds it took.
fn flood(subject: &Subject, sessions: u32, messages: u64) -> Result<(Report, f64), Failure> {
    let spec = Spec {
        target: subject.target(),
        sessions,
        messages,
        per_connection: 0,
        sizes: vec![(SMALL_SIZE, 1)],
        pipelining: true,
        starttls: false,
    };
    let started = Instant::now();
    let report =
        loadgen::run(&spec).map_err(|f| Failure(format!("{}: {f}", subject.system.name())))?;
    Ok((report, started.elapsed().as_secs_f64()))
}

/// `bench slow-downstream`: the sink waits a second before each DATA reply; the load is
/// accepted much faster than it can leave. The queue grows on disk; memory must not.
pub fn slow_downstream(bench: &mut Bench, o: &Options) -> Result<String, Failure> {
    let messages = o.messages.unwrap_or(SLOW_MESSAGES);
    let sessions = o.sessions;
    let mut entries = Vec::new();
    for system in o.systems() {
        let (sink, sink_port) = bench.sink("slow", &["-w", SLOW_SINK_DELAY])?;
        let mut subject = bench.start(system, "slow", sink_port, &Tuning::sessions(sessions))?;
        let idle_pss = subject.pss_kib();
        let sampler = PeakPss::start(subject.pids());
        let (report, accepted_after) = flood(&subject, sessions, messages)?;
        let delivered_at_accept = sink.messages();
        let mut peak_depth = messages.saturating_sub(delivered_at_accept);
        let watch = Instant::now();
        while watch.elapsed() < SLOW_WATCH {
            process::check_interrupted()?;
            subject.check_running()?;
            peak_depth = peak_depth.max(report.messages.saturating_sub(sink.messages()));
            thread::sleep(Duration::from_millis(200));
        }
        let delivered = sink.messages();
        let peak = sampler.finish();
        println!(
            "slow-downstream: {:<10} {messages} accepted in {accepted_after:.1} s, queue up to {peak_depth}, {delivered} delivered after {:.0} s more; PSS idle {idle_pss} KiB, peak {peak} KiB",
            system.name(),
            SLOW_WATCH.as_secs_f64()
        );
        entries.push(format!(
            "{{\"system\": {}, \"messages\": {messages}, \"accept_seconds\": {accepted_after:.3}, \"peak_queue\": {peak_depth}, \"delivered\": {delivered}, \"idle_pss_kib\": {idle_pss}, \"peak_pss_kib\": {peak}}}",
            json_string(system.name())
        ));
        drop(subject);
        drop(sink);
    }
    record(bench, "slow-downstream", &entries)
}

/// `bench size`: the gateway built static (`+crt-static`) and stripped, against the
/// installed size of Debian's postfix package and of its programs.
pub fn size(bench: &mut Bench) -> Result<String, Failure> {
    let root = crate::workspace_root();
    let target_dir = crate::target_dir(&root).join("size");
    let triple = host_triple()?;
    println!("size: building the static, stripped gateway for {triple}");
    let status = Command::new(crate::cargo())
        .args([
            "build",
            "--release",
            "-p",
            "drawbridge",
            "--bin",
            "drawbridge",
        ])
        .args(["--target", &triple])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-C\u{1f}target-feature=+crt-static",
        )
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env_remove("RUSTFLAGS")
        .current_dir(&root)
        .stdin(Stdio::null())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        return Err(Failure(format!("the static build failed ({status})")));
    }
    let binary = target_dir.join(&triple).join("release").join("drawbridge");
    let ours = fs::metadata(&binary)
        .context(format_args!("reading {}", binary.display()))?
        .len();
    let package_kib = Command::new("dpkg-query")
        .args(["-W", "-f", "${Installed-Size}", "postfix"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse::<u64>().ok());
    let programs = postfix_program_bytes();
    println!(
        "size: drawbridge {ours} bytes ({:.2} MiB) static and stripped; Postfix package {} KiB installed, its programs {} bytes",
        ours as f64 / 1048576.0,
        package_kib.map_or("?".to_owned(), |k| k.to_string()),
        programs
    );
    let json = json_object(&[
        ("benchmark", json_string("size")),
        ("drawbridge_bytes", ours.to_string()),
        (
            "postfix_package_kib",
            package_kib.map_or("null".to_owned(), |k| k.to_string()),
        ),
        ("postfix_program_bytes", programs.to_string()),
        (
            "ratio_to_postfix_programs",
            float(Some(ours as f64 / programs.max(1) as f64)),
        ),
    ]);
    bench.write_json("size", &json)?;
    Ok(json)
}

/// Bytes of Postfix's daemons and commands (`/usr/lib/postfix/sbin` and the `post*`
/// programs in `/usr/sbin`) and of its own shared libraries (`libpostfix-*.so`), the
/// same kind of thing as our one binary. Postfix's still need the C library, OpenSSL
/// and more installed beside them; ours carries its C library inside.
fn postfix_program_bytes() -> u64 {
    let mut total = 0;
    for (dir, prefix) in [
        ("/usr/lib/postfix/sbin", ""),
        ("/usr/sbin", "post"),
        ("/usr/lib/postfix", "libpostfix-"),
    ] {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(prefix)
                    && let Ok(meta) = entry.metadata()
                    && meta.is_file()
                {
                    total += meta.len();
                }
            }
        }
    }
    total
}

fn host_triple() -> Result<String, Failure> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| Failure::new("rustc -vV names no host"))
}

/// `bench loadgen`: the generator checked against smtp-source. The same load (2 KiB,
/// 10 sessions, connections kept open, one command at a time) from each, to smtp-sink
/// directly and to each system; where both can keep up they must agree. Then the
/// generator pipelined to the sink alone, to show its own ceiling.
pub fn loadgen_check(bench: &mut Bench, o: &Options) -> Result<String, Failure> {
    let source = process::find_program("smtp-source")
        .ok_or_else(|| Failure::new("smtp-source not found (Debian's postfix package)"))?;
    let messages = o.messages.unwrap_or(10_000);
    let sessions = o.sessions;
    let size = bench::DEFAULT_SIZE as usize;
    let mut entries = Vec::new();
    let mut targets: Vec<Option<System>> = vec![None];
    targets.extend(o.systems().into_iter().map(Some));
    for target in targets {
        let name = target.map_or("smtp-sink", System::name);
        let mut rates = Vec::new();
        for generator in ["smtp-source", "loadgen", "loadgen-pipelined"] {
            if generator == "loadgen-pipelined" && target.is_some() {
                continue;
            }
            let (sink, sink_port) = bench.sink("loadgen", &[])?;
            let mut subject = match target {
                Some(system) => {
                    Some(bench.start(system, "loadgen", sink_port, &Tuning::default())?)
                }
                None => None,
            };
            let port = subject.as_ref().map_or(sink_port, |s| s.port);
            let started = Instant::now();
            match generator {
                "smtp-source" => {
                    let log = bench.work.join(format!("source-{name}.log"));
                    let out = process::log_file(&log)?;
                    let status = Command::new(&source)
                        .args(["-s", &sessions.to_string(), "-m", &messages.to_string()])
                        .args(["-l", &size.to_string(), "-d"])
                        .args(["-f", bench::SENDER, "-t", bench::RECIPIENT])
                        .arg(format!("127.0.0.1:{port}"))
                        .stdin(Stdio::null())
                        .stdout(out)
                        .status()
                        .context("running smtp-source")?;
                    if !status.success() {
                        return Err(Failure(format!(
                            "smtp-source failed ({status}): {}",
                            process::log_tail(&log)
                        )));
                    }
                }
                _ => {
                    loadgen::run(&Spec {
                        target: SocketAddr::from(([127, 0, 0, 1], port)),
                        sessions,
                        messages,
                        per_connection: 0,
                        sizes: vec![(size, 1)],
                        pipelining: generator == "loadgen-pipelined",
                        starttls: false,
                    })?;
                }
            }
            while sink.messages() < messages {
                process::check_interrupted()?;
                if let Some(s) = subject.as_mut() {
                    s.check_running()?;
                }
                if started.elapsed() > RUN_TIMEOUT {
                    return Err(Failure(format!("loadgen: {name} never got every message")));
                }
                thread::sleep(POLL);
            }
            let rate = messages as f64 / started.elapsed().as_secs_f64();
            println!("loadgen: {generator:<18} → {name:<11} {rate:>9.1} msg/s");
            rates.push(format!("\"{generator}\": {rate:.2}"));
            drop(subject);
            drop(sink);
        }
        entries.push(format!(
            "{{\"target\": {}, {}}}",
            json_string(name),
            rates.join(", ")
        ));
    }
    record(bench, "loadgen", &entries)
}

/// `bench dead-downstream`: nothing listens at the next hop, so every message is deferred
/// and the whole load stays queued. The queue is on disk; memory is the gateway's picture
/// of it, measured once it has settled, per queued message.
pub fn dead_downstream(bench: &mut Bench, o: &Options) -> Result<String, Failure> {
    let messages = o.messages.unwrap_or(DEAD_MESSAGES);
    let sessions = o.sessions;
    let mut entries = Vec::new();
    for system in o.systems() {
        let [dead_port] = process::free_ports::<1>()?;
        let mut subject = bench.start(system, "dead", dead_port, &Tuning::sessions(sessions))?;
        let idle_pss = subject.pss_kib();
        let sampler = PeakPss::start(subject.pids());
        let (_, accepted_after) = flood(&subject, sessions, messages)?;
        let settle = Instant::now();
        while settle.elapsed() < DEAD_SETTLE {
            process::check_interrupted()?;
            subject.check_running()?;
            thread::sleep(Duration::from_millis(200));
        }
        let settled = subject.pss_kib();
        let peak = sampler.finish();
        let per_message = settled.saturating_sub(idle_pss) * 1024 / messages.max(1);
        println!(
            "dead-downstream: {:<10} {messages} accepted in {accepted_after:.1} s; PSS idle {idle_pss} KiB, peak {peak} KiB, settled {settled} KiB after {:.0} s: {per_message} octets per queued message",
            system.name(),
            DEAD_SETTLE.as_secs_f64()
        );
        entries.push(format!(
            "{{\"system\": {}, \"messages\": {messages}, \"accept_seconds\": {accepted_after:.3}, \"idle_pss_kib\": {idle_pss}, \"peak_pss_kib\": {peak}, \"settled_pss_kib\": {settled}, \"octets_per_message\": {per_message}}}",
            json_string(system.name())
        ));
        drop(subject);
    }
    record(bench, "dead-downstream", &entries)
}

/// Runs one named benchmark of the suite, or all of them.
pub fn run(what: &str, o: &Options) -> Result<ExitCode, Failure> {
    let systems = if what == "size" {
        Vec::new()
    } else {
        o.systems()
    };
    let mut bench = Bench::prepare(&systems, o.binary.as_deref())?;
    let outcome = match what {
        "relay" => relay(&mut bench, o).map(drop),
        "latency" => latency(&mut bench, o).map(drop),
        "churn" => churn(&mut bench, o).map(drop),
        "handshakes" => handshakes(&mut bench, o).map(drop),
        "idle" => idle(&mut bench, o).map(drop),
        "slow-downstream" => slow_downstream(&mut bench, o).map(drop),
        "dead-downstream" => dead_downstream(&mut bench, o).map(drop),
        "size" => size(&mut bench).map(drop),
        "loadgen" => loadgen_check(&mut bench, o).map(drop),
        "all" => all(&mut bench, o),
        other => Err(Failure(format!("no benchmark `{other}` in the suite"))),
    };
    match outcome {
        Ok(()) => {
            bench.finish();
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => Err(Failure(format!(
            "{f}\n(the run's files are kept in {})",
            bench.work.display()
        ))),
    }
}

/// Every benchmark, one after the other, then the TLS benchmark and a summary.
fn all(bench: &mut Bench, o: &Options) -> Result<(), Failure> {
    let parts = [
        ("loadgen", loadgen_check(bench, o)?),
        ("relay", relay(bench, o)?),
        ("latency", latency(bench, o)?),
        ("churn", churn(bench, o)?),
        ("handshakes", handshakes(bench, o)?),
        ("idle", idle(bench, o)?),
        ("slow-downstream", slow_downstream(bench, o)?),
        ("dead-downstream", dead_downstream(bench, o)?),
        ("size", size(bench)?),
    ];
    let tls = crate::bench_tls::run(&crate::bench_tls::Options::default()).map(drop);
    let body: Vec<String> = parts
        .iter()
        .map(|(name, json)| format!("\"{name}\": {}", json.trim()))
        .collect();
    bench.write_json("all", &format!("{{\n{}\n}}\n", body.join(",\n")))?;
    tls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Options, String> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        Options::parse(&words, "bench relay")
    }

    #[test]
    fn options_default_and_parse() {
        assert_eq!(parse(&[]), Ok(Options::default()));
        let o = parse(&["--sizes", "4k", "--messages=100", "--only", "postfix"]).unwrap();
        assert_eq!(
            parse(&["--binary", "/tmp/db"]).unwrap().binary,
            Some(PathBuf::from("/tmp/db"))
        );
        assert_eq!(o.sizes, "4k");
        assert_eq!(o.messages, Some(100));
        assert_eq!(o.systems(), vec![System::Postfix]);
        assert!(parse(&["--sizes", "huge"]).is_err());
        assert!(parse(&["--connections", "0"]).is_err());
        assert!(parse(&["--only", "exim"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn relay_counts_follow_the_volume_within_bounds() {
        assert_eq!(relay_messages(1024), MAX_DEFAULT_MESSAGES);
        assert_eq!(relay_messages(100 * 1024), 2048);
        assert_eq!(relay_messages(10 << 20), MIN_MESSAGES);
    }

    #[test]
    fn figures_derive_rates() {
        let f = Figures {
            seconds: 2.0,
            messages: 1000,
            octets: 4_000_000,
            cpu_seconds: 0.5,
            ..Figures::default()
        };
        assert_eq!(f.messages_per_s(), 500.0);
        assert_eq!(f.mb_per_s(), 2.0);
        assert_eq!(f.cpu_per_1000(), 0.5);
        let results = [
            (System::Drawbridge, f.clone()),
            (
                System::Postfix,
                Figures {
                    seconds: 10.0,
                    cpu_seconds: 5.0,
                    ..f
                },
            ),
        ];
        assert_eq!(ratio(&results, Figures::messages_per_s), Some(5.0));
        assert_eq!(ratio(&results, Figures::cpu_per_1000), Some(0.1));
        let json = figures_json(&results);
        assert!(json.contains("\"ratio_msgs_per_s\": 5.0000"), "{json}");
        assert!(json.contains("\"postfix_p99_us\": null"), "{json}");
    }

    #[test]
    fn drawbridge_config_sizes_and_connections() {
        let text = drawbridge_config(
            2500,
            2501,
            2502,
            &Tuning {
                connections: 10_000,
                tls: false,
            },
        );
        for line in [
            "set service inbound listen 127.0.0.1:2500",
            "set route example.com relay [127.0.0.1]:2502",
            "set service inbound max-connections 10100",
            "set service inbound max-connections-per-ip 10100",
            "set service inbound max-message-size 20971520",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }
}
