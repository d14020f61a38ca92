//! `cargo xtask bench relay`: drawbridge against Postfix, relaying the same load to the same
//! smtp-sink on this machine, with throughput end to end and peak PSS of each.
//!
//! One run of a system: a fresh smtp-sink on a free loopback port as the final next hop, the
//! system relaying example.com to it, then `smtp-source -s S -m N -l SIZE [-d]` against the
//! system's SMTP port. The clock starts when smtp-source starts and stops when the sink's
//! counter reaches N. A thread samples the system's PSS (`/proc/PID/smaps_rollup`) every
//! 50 ms: drawbridge's one process, or Postfix's master and all its children.
//!
//! Both systems keep their spool under `target/bench/`, on the same file system, and both
//! fsync (Postfix always does; so does drawbridge before it acknowledges a message).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::options::{self, number};
use crate::postfix::{self, Instance, Layout};
use crate::process::{self, Guarded, PeakPss};
use crate::sink::Sink;
use crate::{Context, Failure};

/// Default number of messages (`--messages`).
const DEFAULT_MESSAGES: u32 = 10_000;
/// Default number of parallel SMTP sessions (`--sessions`).
const DEFAULT_SESSIONS: u32 = 10;
/// Default payload bytes per message (`--size`).
pub const DEFAULT_SIZE: u32 = 2048;

/// Most parallel sessions: smtp-sink's default `-m`, the connections it serves at once.
const MAX_SESSIONS: u32 = 256;
/// Largest payload: below Postfix's default `message_size_limit` (10,240,000 bytes, headers
/// included), so the Postfix run never refuses a message for its size.
const MAX_SIZE: u32 = 10_000_000;

/// Longest a whole run of one system may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest the sink may see no new message once smtp-source has finished.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a system may take to accept connections after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the run loop looks at the sink's counter; bounds the timing error.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// How often a progress line is printed during a run.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

pub const SENDER: &str = "sender@example.org";
pub const RECIPIENT: &str = "rcpt@example.com";

/// One of the two systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Drawbridge,
    Postfix,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Drawbridge => "drawbridge",
            System::Postfix => "postfix",
        }
    }
}

/// The options of `bench relay`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub messages: u32,
    pub sessions: u32,
    pub size: u32,
    /// Run only this system.
    pub only: Option<System>,
    /// A new connection per message instead of `smtp-source -d`.
    pub reconnect: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            messages: DEFAULT_MESSAGES,
            sessions: DEFAULT_SESSIONS,
            size: DEFAULT_SIZE,
            only: None,
            reconnect: false,
        }
    }
}

impl Options {
    /// Parses the words after `bench relay`; `--name value` and `--name=value` both work.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options::default();
        options::walk(
            args,
            |name, value, inline| {
                match name {
                    "--messages" => options.messages = number(name, &value()?, 1, u32::MAX)?,
                    "--sessions" => options.sessions = number(name, &value()?, 1, MAX_SESSIONS)?,
                    "--size" => options.size = number(name, &value()?, 0, MAX_SIZE)?,
                    "--only" => {
                        options.only = Some(match value()?.as_str() {
                            "drawbridge" => System::Drawbridge,
                            "postfix" => System::Postfix,
                            other => {
                                return Err(format!(
                                    "--only takes drawbridge or postfix, not `{other}`"
                                ));
                            }
                        })
                    }
                    "--reconnect" if !inline => options.reconnect = true,
                    _ => return Ok(false),
                }
                Ok(true)
            },
            "bench relay",
        )?;
        Ok(options)
    }

    fn runs(&self, system: System) -> bool {
        self.only.is_none_or(|only| only == system)
    }

    /// smtp-source's arguments against 127.0.0.1:`port`.
    fn source_args(&self, port: u16) -> Vec<String> {
        let mut args = vec![
            "-s".to_owned(),
            self.sessions.to_string(),
            "-m".to_owned(),
            self.messages.to_string(),
            "-l".to_owned(),
            self.size.to_string(),
            "-f".to_owned(),
            SENDER.to_owned(),
            "-t".to_owned(),
            RECIPIENT.to_owned(),
        ];
        if !self.reconnect {
            args.push("-d".to_owned());
        }
        args.push(format!("127.0.0.1:{port}"));
        args
    }

    fn describe(&self) -> String {
        format!(
            "{} messages of {} bytes over {} sessions, {}",
            self.messages,
            self.size,
            self.sessions,
            if self.reconnect {
                "a new connection per message"
            } else {
                "connections kept open (smtp-source -d)"
            }
        )
    }
}

/// What one run of one system measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub seconds: f64,
    pub messages_per_s: f64,
    pub peak_pss_kib: u64,
}

/// What each system's run shares: the load generator, the sink, the options and the
/// work directory.
struct Load<'a> {
    smtp_sink: PathBuf,
    smtp_source: PathBuf,
    options: &'a Options,
    work: PathBuf,
}

impl Load<'_> {
    /// Where a file of one system's run goes, named `<system>-<what>`.
    fn file(&self, system: System, what: &str) -> PathBuf {
        self.work.join(format!("{}-{what}", system.name()))
    }
}

fn find_tool(name: &str) -> Result<PathBuf, Failure> {
    process::find_program(name).ok_or_else(|| {
        Failure(format!(
            "{name} not found: install Debian's postfix package (`cargo xtask test` does)"
        ))
    })
}

pub fn run_relay(options: &Options) -> Result<ExitCode, Failure> {
    process::catch_interrupts();
    if options.runs(System::Postfix) && !process::is_root() {
        return Err(Failure::new(
            "the Postfix run needs root (`postfix start`): run as root, or pass --only drawbridge",
        ));
    }
    let smtp_sink = find_tool("smtp-sink")?;
    let smtp_source = find_tool("smtp-source")?;
    let postfix_programs = if options.runs(System::Postfix) {
        let postfix = find_tool("postfix")?;
        let postconf = find_tool("postconf")?;
        let version = postfix::installed_version(&postconf)?;
        Some((postfix, version))
    } else {
        None
    };

    let root = crate::workspace_root();
    let target = crate::target_dir(&root);
    let drawbridge = if options.runs(System::Drawbridge) {
        Some(build_drawbridge(&root, &target)?)
    } else {
        None
    };

    let bench_dir = target.join("bench");
    let work = bench_dir.join(format!("relay-{}", std::process::id()));
    make_shared_dir(&bench_dir)?;
    make_shared_dir(&work)?;
    let load = Load {
        smtp_sink,
        smtp_source,
        options,
        work,
    };
    println!("relay benchmark: {}", options.describe());

    let outcome = (|| {
        let drawbridge = match &drawbridge {
            Some(binary) => Some(run_drawbridge(&load, binary)?),
            None => None,
        };
        let postfix = match &postfix_programs {
            Some((program, version)) => Some(run_postfix(&load, program, version)?),
            None => None,
        };
        Ok((drawbridge, postfix))
    })();
    let (drawbridge, postfix) = outcome.map_err(|failure: Failure| {
        Failure(format!(
            "{failure}\n(the run's files are kept in {})",
            load.work.display()
        ))
    })?;
    let _ = fs::remove_dir_all(&load.work);

    for (system, measurement) in [
        (System::Drawbridge, &drawbridge),
        (System::Postfix, &postfix),
    ] {
        if let Some(m) = measurement {
            println!(
                "{:<11} {:>10.1} msg/s  ({:.3} s)  peak PSS {:>7} KiB",
                format!("{}:", system.name()),
                m.messages_per_s,
                m.seconds,
                m.peak_pss_kib
            );
        }
    }
    if let Some(ratio) = ratio(drawbridge.as_ref(), postfix.as_ref()) {
        println!("ratio drawbridge/postfix: {ratio:.2}");
    }
    let json = relay_json(
        options,
        postfix_programs
            .as_ref()
            .map(|(_, version)| version.as_str()),
        drawbridge.as_ref(),
        postfix.as_ref(),
    );
    let json_path = bench_dir.join("relay.json");
    fs::write(&json_path, json).context(format_args!("writing {}", json_path.display()))?;
    println!("wrote {}", json_path.display());
    Ok(ExitCode::SUCCESS)
}

/// Creates `dir` readable and searchable by all, so Postfix's unprivileged daemons can
/// reach the queue inside it.
pub fn make_shared_dir(dir: &Path) -> Result<(), Failure> {
    fs::create_dir_all(dir).context(format_args!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .context(format_args!("setting the mode of {}", dir.display()))
}

pub fn build_drawbridge(root: &Path, target: &Path) -> Result<PathBuf, Failure> {
    println!("building drawbridge (release)");
    let status = Command::new(crate::cargo())
        .args(["build", "--release", "-p", "drawbridge"])
        .current_dir(root)
        .stdin(Stdio::null())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        return Err(Failure(format!(
            "cargo build --release -p drawbridge failed ({status})"
        )));
    }
    let binary = target.join("release").join("drawbridge");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(Failure(format!("{} was not built", binary.display())))
    }
}

/// drawbridge's configuration: inbound on `inbound`, example.com relayed to the sink.
/// Postfix's smtpd has no per-session message limit, and smtp-source -d sends N/S
/// messages per session, so ours is lifted to match. Postfix names the loopback client
/// from /etc/hosts; ours would ask the host's resolver, which need not be on loopback, so
/// client names are off.
fn drawbridge_config(inbound: u16, outbound: u16, sink: u16) -> String {
    format!(
        "\
set system host-name gw.example.com
set system dns client-names no
set service inbound listen 127.0.0.1:{inbound}
set service inbound max-messages-per-session 1000000
set service outbound listen 127.0.0.1:{outbound}
set classify 10 remote 127.0.0.0/8 category INTERNAL
set route example.com relay [127.0.0.1]:{sink}
set route .example.com relay [127.0.0.1]:{sink}
"
    )
}

fn run_drawbridge(load: &Load, binary: &Path) -> Result<Measurement, Failure> {
    let system = System::Drawbridge;
    let [sink_port, inbound, outbound] = process::free_ports::<3>()?;
    let mut sink = Sink::start(&load.smtp_sink, sink_port, &load.file(system, "sink.log"))?;
    let config = load.file(system, "config");
    fs::write(&config, drawbridge_config(inbound, outbound, sink_port))
        .context(format_args!("writing {}", config.display()))?;
    let state = load.file(system, "state");
    fs::create_dir_all(&state).context(format_args!("creating {}", state.display()))?;
    let log = load.file(system, "out.log");
    let log_out = process::log_file(&log)?;
    let log_err = log_out.try_clone().context("sharing drawbridge's log")?;

    println!("drawbridge: starting, relaying to smtp-sink on 127.0.0.1:{sink_port}");
    let mut gateway = Guarded::spawn(
        "drawbridge",
        Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .arg("--no-console")
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log_err),
    )?;
    let pid = gateway.id();
    let mut gateway_health = || {
        gateway
            .check_running()
            .map_err(|failure| Failure(format!("{failure}; {}", process::log_tail(&log))))
    };
    process::wait_for_listener("drawbridge", inbound, START_TIMEOUT, &mut gateway_health)?;
    let sampler = PeakPss::start(move || vec![pid]);
    let measurement = drive(system, load, inbound, &mut sink, sampler, gateway_health)?;
    gateway.stop();
    sink.stop();
    Ok(measurement)
}

fn run_postfix(load: &Load, program: &Path, version: &str) -> Result<Measurement, Failure> {
    let system = System::Postfix;
    let [sink_port, smtpd_port] = process::free_ports::<2>()?;
    let mut sink = Sink::start(&load.smtp_sink, sink_port, &load.file(system, "sink.log"))?;
    println!("postfix: starting {version}, relaying to smtp-sink on 127.0.0.1:{sink_port}");
    let layout = Layout::under(&load.file(system, "instance"));
    make_shared_dir(&layout.root)?;
    let mut instance = Instance::start(
        program,
        layout,
        postfix::compatibility_level(version),
        smtpd_port,
        sink_port,
    )?;
    process::wait_for_listener("postfix", smtpd_port, START_TIMEOUT, || {
        instance.check_running()
    })?;
    let master = instance.master_pid();
    let sampler = PeakPss::start(move || process::descendants(&process::process_table(), master));
    let measurement = drive(system, load, smtpd_port, &mut sink, sampler, || {
        instance.check_running()
    })
    .map_err(|failure| {
        if process::interrupted() {
            failure
        } else {
            Failure(format!(
                "{failure}\n{}",
                process::log_tail(instance.log_file())
            ))
        }
    })?;
    instance.stop();
    sink.stop();
    Ok(measurement)
}

/// Runs smtp-source against `port` and times it until the sink has every message.
fn drive(
    system: System,
    load: &Load,
    port: u16,
    sink: &mut Sink,
    sampler: PeakPss,
    mut system_health: impl FnMut() -> Result<(), Failure>,
) -> Result<Measurement, Failure> {
    let name = system.name();
    let options = load.options;
    let wanted = u64::from(options.messages);
    let source_log = load.file(system, "source.log");
    let log_out = process::log_file(&source_log)?;
    let log_err = log_out.try_clone().context("sharing smtp-source's log")?;
    let mut command = Command::new(&load.smtp_source);
    command
        .args(options.source_args(port))
        .stdin(Stdio::null())
        .stdout(log_out)
        .stderr(log_err);
    println!("{name}: sending");

    let started = Instant::now();
    let mut source = Guarded::spawn("smtp-source", &mut command)?;
    let mut all_received_after = None;
    let mut source_done = false;
    let mut last_count = 0;
    let mut last_progress = started;
    let mut next_report = started + PROGRESS_INTERVAL;
    let elapsed = loop {
        let now = Instant::now();
        let received = sink.messages();
        if received != last_count {
            last_count = received;
            last_progress = now;
        }
        if all_received_after.is_none() && received >= wanted {
            all_received_after = Some(now.duration_since(started));
        }
        if !source_done && let Some(status) = source.exit_status()? {
            if !status.success() {
                return Err(Failure(format!(
                    "{name}: smtp-source failed ({status}) with {received} of {wanted} messages at the sink; {}",
                    process::log_tail(&source_log)
                )));
            }
            source_done = true;
        }
        if source_done && let Some(elapsed) = all_received_after {
            break elapsed;
        }
        process::check_interrupted()?;
        sink.check_running()?;
        system_health()?;
        if now.duration_since(started) > RUN_TIMEOUT {
            return Err(Failure(format!(
                "{name}: timed out after {} s with {received} of {wanted} messages at the sink",
                RUN_TIMEOUT.as_secs()
            )));
        }
        if source_done && now.duration_since(last_progress) > STALL_TIMEOUT {
            return Err(Failure(format!(
                "{name}: smtp-source sent all {wanted} messages, but the sink has had {received} for {} s",
                STALL_TIMEOUT.as_secs()
            )));
        }
        if now >= next_report {
            println!(
                "{name}: {received} of {wanted} messages at the sink after {} s",
                now.duration_since(started).as_secs()
            );
            next_report += PROGRESS_INTERVAL;
        }
        thread::sleep(POLL_INTERVAL);
    };
    let peak_pss_kib = sampler.finish();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Ok(Measurement {
        seconds,
        messages_per_s: f64::from(options.messages) / seconds,
        peak_pss_kib,
    })
}

fn ratio(drawbridge: Option<&Measurement>, postfix: Option<&Measurement>) -> Option<f64> {
    let ratio = drawbridge?.messages_per_s / postfix?.messages_per_s;
    ratio.is_finite().then_some(ratio)
}

/// `target/bench/relay.json`; the figures of a system that did not run are null.
fn relay_json(
    options: &Options,
    postfix_version: Option<&str>,
    drawbridge: Option<&Measurement>,
    postfix: Option<&Measurement>,
) -> String {
    let float = |value: Option<f64>, places: usize| match value {
        Some(x) if x.is_finite() => format!("{x:.places$}"),
        _ => "null".to_owned(),
    };
    let integer = |value: Option<u64>| value.map_or_else(|| "null".to_owned(), |n| n.to_string());
    let fields = [
        (
            "drawbridge_msgs_per_s",
            float(drawbridge.map(|m| m.messages_per_s), 2),
        ),
        (
            "postfix_msgs_per_s",
            float(postfix.map(|m| m.messages_per_s), 2),
        ),
        ("ratio", float(ratio(drawbridge, postfix), 4)),
        (
            "drawbridge_pss_kib",
            integer(drawbridge.map(|m| m.peak_pss_kib)),
        ),
        ("postfix_pss_kib", integer(postfix.map(|m| m.peak_pss_kib))),
        (
            "drawbridge_seconds",
            float(drawbridge.map(|m| m.seconds), 4),
        ),
        ("postfix_seconds", float(postfix.map(|m| m.seconds), 4)),
        ("messages", options.messages.to_string()),
        ("sessions", options.sessions.to_string()),
        ("size", options.size.to_string()),
        ("connections_kept_open", (!options.reconnect).to_string()),
        (
            "postfix_version",
            postfix_version.map_or_else(|| "null".to_owned(), json_string),
        ),
    ];
    json_object(&fields)
}

/// A flat JSON object of already formatted values, one field a line.
pub fn json_object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("  \"{name}\": {value}"))
        .collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
}

pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Options, String> {
        let args: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        Options::parse(&args)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let options = parse(&[]).unwrap();
        assert_eq!(
            (options.messages, options.sessions, options.size),
            (10_000, 10, 2048)
        );
        assert_eq!(options.only, None);
        assert!(!options.reconnect);
    }

    #[test]
    fn options_take_separate_and_inline_values() {
        let options = parse(&[
            "--messages",
            "500",
            "--sessions=4",
            "--size",
            "0",
            "--only=postfix",
            "--reconnect",
        ])
        .unwrap();
        assert_eq!(
            options,
            Options {
                messages: 500,
                sessions: 4,
                size: 0,
                only: Some(System::Postfix),
                reconnect: true
            }
        );
        assert!(options.runs(System::Postfix));
        assert!(!options.runs(System::Drawbridge));
    }

    #[test]
    fn bad_options_are_refused() {
        for words in [
            &["--messages"][..],
            &["--messages", "0"],
            &["--messages", "-3"],
            &["--sessions", "257"],
            &["--size", "10000001"],
            &["--only", "sendmail"],
            &["--reconnect=yes"],
            &["--fast"],
            &["500"],
        ] {
            assert!(parse(words).is_err(), "{words:?}");
        }
    }

    #[test]
    fn smtp_source_gets_the_same_load_for_both_systems() {
        let options = parse(&["--messages", "7", "--sessions", "2", "--size", "100"]).unwrap();
        assert_eq!(
            options.source_args(2525).join(" "),
            "-s 2 -m 7 -l 100 -f sender@example.org -t rcpt@example.com -d 127.0.0.1:2525"
        );
        let reconnecting = Options {
            reconnect: true,
            ..options
        };
        assert!(!reconnecting.source_args(2525).contains(&"-d".to_owned()));
    }

    #[test]
    fn drawbridge_config_relays_example_com_to_the_sink() {
        let text = drawbridge_config(3000, 3001, 3002);
        assert!(text.contains("set service inbound listen 127.0.0.1:3000\n"));
        assert!(text.contains("set service outbound listen 127.0.0.1:3001\n"));
        assert!(text.contains("set route example.com relay [127.0.0.1]:3002\n"));
        assert!(text.contains("set route .example.com relay [127.0.0.1]:3002\n"));
    }

    #[test]
    fn json_has_every_field_and_nulls_for_a_system_not_run() {
        let postfix = Measurement {
            seconds: 2.0,
            messages_per_s: 250.0,
            peak_pss_kib: 40_000,
        };
        let drawbridge = Measurement {
            seconds: 0.5,
            messages_per_s: 1000.0,
            peak_pss_kib: 3_000,
        };
        let options = Options::default();
        let both = relay_json(&options, Some("3.7.11"), Some(&drawbridge), Some(&postfix));
        for line in [
            "\"drawbridge_msgs_per_s\": 1000.00,",
            "\"postfix_msgs_per_s\": 250.00,",
            "\"ratio\": 4.0000,",
            "\"drawbridge_pss_kib\": 3000,",
            "\"postfix_pss_kib\": 40000,",
            "\"messages\": 10000,",
            "\"postfix_version\": \"3.7.11\"",
        ] {
            assert!(both.contains(line), "missing {line} in\n{both}");
        }
        assert!(both.starts_with("{\n") && both.ends_with("\n}\n"));

        let only_postfix = relay_json(&options, Some("3.7.11"), None, Some(&postfix));
        assert!(only_postfix.contains("\"drawbridge_msgs_per_s\": null,"));
        assert!(only_postfix.contains("\"ratio\": null,"));
        assert!(only_postfix.contains("\"drawbridge_pss_kib\": null,"));
        assert!(only_postfix.contains("\"postfix_pss_kib\": 40000,"));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
