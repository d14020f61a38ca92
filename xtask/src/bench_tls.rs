//! `cargo xtask bench tls`: drawbridge against Postfix with TLS, in two parts.
//!
//! (a) Full TLS handshakes per second against each system's implicit-TLS port (drawbridge's
//! `tls-listen`, Postfix's smtpd with `smtpd_tls_wrappermode=yes`), both with a P-256
//! certificate. The client is `openssl s_time -new`: one process that makes full handshakes
//! back to back (no resumption) and closes each connection. s_time runs for whole seconds,
//! not for a number of handshakes, and its own rate divides by the client's user CPU time;
//! so xtask runs it in slices of [`HANDSHAKE_SLICE_SECONDS`] until `--handshakes` are done,
//! takes the count each slice prints, and divides the total by the wall time of all slices.
//! The process start of each slice (a few ms in seconds) counts against both systems alike.
//!
//! (b) TLS relay throughput: `--messages` over `--sessions` parallel sessions, each an
//! `openssl s_client -starttls smtp -quiet` process fed by a thread that pipelines
//! MAIL/RCPT/DATA groups (RFC 2920) and sends each message's content after its 354. Both
//! systems relay example.com to one smtp-sink; the clock runs from the start of the clients
//! until the sink has counted every message. smtp-source has no TLS, hence this client.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::bench::{self, POLL_INTERVAL, RECIPIENT, RUN_TIMEOUT, SENDER, START_TIMEOUT};
use crate::options::{self, number};
use crate::postfix::{self, Instance, Layout};
use crate::process::{self, Guarded};
use crate::sink::Sink;
use crate::{Context, Failure};

/// Default number of full handshakes per system (`--handshakes`).
const DEFAULT_HANDSHAKES: u32 = 2_000;
/// Default number of messages per system (`--messages`).
const DEFAULT_MESSAGES: u32 = 2_000;
/// Default number of parallel TLS sessions (`--sessions`).
const DEFAULT_SESSIONS: u32 = 10;
/// Most parallel sessions: Postfix's `default_process_limit` (100 smtpd processes), so that
/// no Postfix session waits for a free smtpd.
const MAX_SESSIONS: u32 = 100;

/// Length of one `openssl s_time -time` slice.
const HANDSHAKE_SLICE_SECONDS: u32 = 2;
/// Payload bytes per message, as in `bench relay`'s default.
const PAYLOAD_SIZE: usize = bench::DEFAULT_SIZE as usize;
/// Payload line length: short of RFC 5322 §2.1.1's 78 characters.
const PAYLOAD_LINE: usize = 76;

const CLIENT_NAME: &str = "load.example.org";

/// The options of `bench tls`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub handshakes: u32,
    pub messages: u32,
    pub sessions: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            handshakes: DEFAULT_HANDSHAKES,
            messages: DEFAULT_MESSAGES,
            sessions: DEFAULT_SESSIONS,
        }
    }
}

impl Options {
    /// Parses the words after `bench tls`; `--name value` and `--name=value` both work.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options::default();
        options::walk(
            args,
            |name, value, _| {
                match name {
                    "--handshakes" => options.handshakes = number(name, &value()?, 1, u32::MAX)?,
                    "--messages" => options.messages = number(name, &value()?, 1, u32::MAX)?,
                    "--sessions" => options.sessions = number(name, &value()?, 1, MAX_SESSIONS)?,
                    _ => return Ok(false),
                }
                Ok(true)
            },
            "bench tls",
        )?;
        Ok(options)
    }

    /// How many messages session `index` of `sessions` sends: N/S, the first N%S one more.
    fn messages_of_session(&self, index: u32) -> u32 {
        let base = self.messages / self.sessions;
        base + u32::from(index < self.messages % self.sessions)
    }
}

/// What the two parts measured for one system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    pub handshakes_per_s: f64,
    pub messages_per_s: f64,
}

/// The programs and files both systems' runs share.
struct Load<'a> {
    openssl: PathBuf,
    smtp_sink: PathBuf,
    options: &'a Options,
    work: PathBuf,
}

impl Load<'_> {
    fn file(&self, system: &str, what: &str) -> PathBuf {
        self.work.join(format!("{system}-{what}"))
    }
}

fn find_tool(name: &str, package: &str) -> Result<PathBuf, Failure> {
    process::find_program(name).ok_or_else(|| {
        Failure(format!(
            "{name} not found: install Debian's {package} package (`cargo xtask test` does)"
        ))
    })
}

pub fn run(options: &Options) -> Result<ExitCode, Failure> {
    process::catch_interrupts();
    if !process::is_root() {
        return Err(Failure::new(
            "bench tls runs a private Postfix instance, which needs root (`postfix start`)",
        ));
    }
    let openssl = find_tool("openssl", "openssl")?;
    let smtp_sink = find_tool("smtp-sink", "postfix")?;
    let postfix_program = find_tool("postfix", "postfix")?;
    let version = postfix::installed_version(&find_tool("postconf", "postfix")?)?;

    let root = crate::workspace_root();
    let target = crate::target_dir(&root);
    let drawbridge = crate::bench::build_drawbridge(&root, &target)?;
    let bench_dir = target.join("bench");
    let work = bench_dir.join(format!("tls-{}", std::process::id()));
    crate::bench::make_shared_dir(&bench_dir)?;
    crate::bench::make_shared_dir(&work)?;
    let load = Load {
        openssl,
        smtp_sink,
        options,
        work,
    };
    println!(
        "tls benchmark: {} full handshakes (openssl s_time -new); {} messages of {} bytes over {} STARTTLS sessions",
        options.handshakes, options.messages, PAYLOAD_SIZE, options.sessions
    );

    let outcome = (|| {
        let ours = run_drawbridge(&load, &drawbridge)?;
        let theirs = run_postfix(&load, &postfix_program, &version)?;
        Ok((ours, theirs))
    })();
    let (ours, theirs) = outcome.map_err(|failure: Failure| {
        Failure(format!(
            "{failure}\n(the run's files are kept in {})",
            load.work.display()
        ))
    })?;
    let _ = fs::remove_dir_all(&load.work);

    println!(
        "handshakes/s  drawbridge {:>9.1}  postfix {:>9.1}  ratio {:.2}",
        ours.handshakes_per_s,
        theirs.handshakes_per_s,
        ours.handshakes_per_s / theirs.handshakes_per_s
    );
    println!(
        "messages/s    drawbridge {:>9.1}  postfix {:>9.1}  ratio {:.2}",
        ours.messages_per_s,
        theirs.messages_per_s,
        ours.messages_per_s / theirs.messages_per_s
    );
    let json_path = bench_dir.join("tls.json");
    fs::write(&json_path, tls_json(options, &version, &ours, &theirs))
        .context(format_args!("writing {}", json_path.display()))?;
    println!("wrote {}", json_path.display());
    Ok(ExitCode::SUCCESS)
}

/// drawbridge's configuration: STARTTLS on `inbound`, implicit TLS on `tls`, example.com
/// relayed to the sink. The session limits are lifted to match Postfix's (no per-session
/// message limit; `default_process_limit` sessions at once).
fn drawbridge_config(inbound: u16, tls: u16, outbound: u16, sink: u16) -> String {
    format!(
        "\
set system host-name gw.example.com
set system dns client-names no
set service inbound listen 127.0.0.1:{inbound}
set service inbound tls-listen 127.0.0.1:{tls}
set service inbound max-messages-per-session 1000000
set service inbound max-connections-per-ip {MAX_SESSIONS}
set service outbound listen 127.0.0.1:{outbound}
set classify 10 remote 127.0.0.0/8 category INTERNAL
set route example.com relay [127.0.0.1]:{sink}
"
    )
}

fn run_drawbridge(load: &Load, binary: &Path) -> Result<Measurement, Failure> {
    let [sink_port, inbound, tls, outbound] = process::free_ports::<4>()?;
    let mut sink = Sink::start(
        &load.smtp_sink,
        sink_port,
        &load.file("drawbridge", "sink.log"),
    )?;
    let config = load.file("drawbridge", "config");
    fs::write(
        &config,
        drawbridge_config(inbound, tls, outbound, sink_port),
    )
    .context(format_args!("writing {}", config.display()))?;
    let state = load.file("drawbridge", "state");
    fs::create_dir_all(&state).context(format_args!("creating {}", state.display()))?;
    let log = load.file("drawbridge", "out.log");
    println!("drawbridge: starting (its first boot makes a self-signed P-256 certificate)");
    let mut gateway = Guarded::spawn(
        "drawbridge",
        &mut bench::gateway_command(binary, &config, &state, &log)?,
    )?;
    let mut health = || gateway.check_running_logged(&log);
    process::wait_for_listener("drawbridge", tls, START_TIMEOUT, &mut health)?;
    process::wait_for_listener("drawbridge", inbound, START_TIMEOUT, &mut health)?;
    let handshakes_per_s = handshakes("drawbridge", load, tls, &mut health)?;
    let messages_per_s = relay("drawbridge", load, inbound, &mut sink, &mut health)?;
    gateway.stop();
    sink.stop();
    Ok(Measurement {
        handshakes_per_s,
        messages_per_s,
    })
}

/// main.cf settings for Postfix's TLS server side, added to the relay instance's.
pub fn postfix_tls_settings(cert: &Path, key: &Path) -> String {
    format!(
        "smtpd_tls_cert_file = {}\n\
         smtpd_tls_key_file = {}\n\
         smtpd_tls_security_level = may\n\
         smtpd_tls_loglevel = 0\n",
        cert.display(),
        key.display()
    )
}

/// master.cf: smtpd with STARTTLS on `smtpd_port`, smtps (wrapper mode) on `smtps_port`,
/// and tlsmgr besides the relay instance's daemons.
fn postfix_master_cf(smtpd_port: u16, smtps_port: u16) -> String {
    format!(
        "# Private Postfix instance of `cargo xtask bench tls` (generated).\n\
         127.0.0.1:{smtpd_port} inet n - n - - smtpd\n\
         127.0.0.1:{smtps_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n\
         tlsmgr     unix  -       -       n       1000?   1       tlsmgr\n\
         {}",
        postfix::SERVICES
    )
}

fn make_certificate(load: &Load, dir: &Path) -> Result<(PathBuf, PathBuf), Failure> {
    certificate(&load.openssl, dir)
}

/// A self-signed P-256 certificate for Postfix, the key type drawbridge generates.
pub fn certificate(openssl: &Path, dir: &Path) -> Result<(PathBuf, PathBuf), Failure> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let output = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bench.invalid",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .context("running openssl req")?;
    if !output.status.success() {
        return Err(Failure(format!(
            "openssl req failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok((cert, key))
}

fn run_postfix(load: &Load, program: &Path, version: &str) -> Result<Measurement, Failure> {
    let [sink_port, smtpd_port, smtps_port] = process::free_ports::<3>()?;
    let mut sink = Sink::start(
        &load.smtp_sink,
        sink_port,
        &load.file("postfix", "sink.log"),
    )?;
    let layout = Layout::under(&load.file("postfix", "instance"));
    crate::bench::make_shared_dir(&layout.root)?;
    let (cert, key) = make_certificate(load, &layout.root)?;
    println!("postfix: starting {version} with a self-signed P-256 certificate");
    let main = format!(
        "{}{}",
        postfix::main_cf(&layout, postfix::compatibility_level(version), sink_port),
        postfix_tls_settings(&cert, &key)
    );
    let mut instance = Instance::start_with(
        program,
        layout,
        &main,
        &postfix_master_cf(smtpd_port, smtps_port),
    )?;
    let log = instance.log_file().to_path_buf();
    let mut health = || {
        instance
            .check_running()
            .map_err(|failure| Failure(format!("{failure}\n{}", process::log_tail(&log))))
    };
    process::wait_for_listener("postfix", smtps_port, START_TIMEOUT, &mut health)?;
    process::wait_for_listener("postfix", smtpd_port, START_TIMEOUT, &mut health)?;
    let handshakes_per_s = handshakes("postfix", load, smtps_port, &mut health)?;
    let messages_per_s = relay("postfix", load, smtpd_port, &mut sink, &mut health)?;
    instance.stop();
    sink.stop();
    Ok(Measurement {
        handshakes_per_s,
        messages_per_s,
    })
}

/// The count of `openssl s_time`'s summary line `N connections in X real seconds`.
pub(crate) fn s_time_connections(output: &str) -> Option<u64> {
    output
        .lines()
        .find(|line| line.contains(" connections in ") && line.contains(" real seconds"))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|count| count.parse().ok())
}

/// Full handshakes per second against the implicit-TLS port: s_time slices until
/// `--handshakes` are done, total count over total wall time.
fn handshakes(
    name: &str,
    load: &Load,
    port: u16,
    health: &mut impl FnMut() -> Result<(), Failure>,
) -> Result<f64, Failure> {
    let wanted = u64::from(load.options.handshakes);
    println!("{name}: handshakes on 127.0.0.1:{port}");
    let mut done = 0u64;
    let mut wall = Duration::ZERO;
    while done < wanted {
        let started = Instant::now();
        let output = Command::new(&load.openssl)
            .args(["s_time", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-new", "-time"])
            .arg(HANDSHAKE_SLICE_SECONDS.to_string())
            .stdin(Stdio::null())
            .output()
            .context("running openssl s_time")?;
        wall += started.elapsed();
        let text = String::from_utf8_lossy(&output.stdout);
        let count = s_time_connections(&text)
            .filter(|&count| output.status.success() && count > 0)
            .ok_or_else(|| {
                Failure(format!(
                    "{name}: openssl s_time made no handshakes ({}): {}{}",
                    output.status,
                    text.trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            })?;
        done += count;
        process::check_interrupted()?;
        health()?;
        if wall > RUN_TIMEOUT {
            return Err(Failure(format!(
                "{name}: {done} of {wanted} handshakes after {} s",
                RUN_TIMEOUT.as_secs()
            )));
        }
    }
    let rate = done as f64 / wall.as_secs_f64().max(1e-9);
    println!(
        "{name}: {done} handshakes in {:.2} s: {rate:.1}/s",
        wall.as_secs_f64()
    );
    Ok(rate)
}

/// The message content every session sends: a few headers and [`PAYLOAD_SIZE`] bytes of
/// body in lines of [`PAYLOAD_LINE`], dot-terminated. No line starts with a dot.
fn message_content() -> String {
    let mut text = format!("From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: bench tls\r\n\r\n");
    let mut left = PAYLOAD_SIZE;
    while left > 0 {
        let line = left.min(PAYLOAD_LINE);
        text.push_str(&"x".repeat(line));
        text.push_str("\r\n");
        left -= line;
    }
    text.push_str(".\r\n");
    text
}

/// The SMTP text a session writes, in the order it writes it, and the reply it then waits
/// for: pipelined groups of (end of previous message,) MAIL, RCPT, DATA; the content after
/// each 354; QUIT at the end.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    write: String,
    /// Reply codes expected, in order, before the next step.
    expect: Vec<u16>,
}

fn session_script(messages: u32, content: &str) -> Vec<Step> {
    let mut steps = vec![Step {
        write: format!("EHLO {CLIENT_NAME}\r\n"),
        expect: vec![250],
    }];
    let envelope = format!("MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n");
    for index in 0..messages {
        let (write, expect) = if index == 0 {
            (envelope.clone(), vec![250, 250, 354])
        } else {
            (format!("{content}{envelope}"), vec![250, 250, 250, 354])
        };
        steps.push(Step { write, expect });
    }
    if messages > 0 {
        steps.push(Step {
            write: format!("{content}QUIT\r\n"),
            expect: vec![250, 221],
        });
    } else {
        steps.push(Step {
            write: "QUIT\r\n".to_owned(),
            expect: vec![221],
        });
    }
    steps
}

/// The code of a final reply line (`NNN ` or a bare `NNN`); None for a continuation line.
fn final_reply_code(line: &str) -> Option<u16> {
    let line = line.trim_end_matches(['\r', '\n']);
    let code = line.get(..3)?.parse().ok()?;
    match line.as_bytes().get(3) {
        None | Some(b' ') => Some(code),
        _ => None,
    }
}

/// One STARTTLS session through `openssl s_client`, sending `messages` messages.
fn run_session(
    openssl: &Path,
    port: u16,
    messages: u32,
    content: &str,
    log: &Path,
) -> Result<(), Failure> {
    let mut command = Command::new(openssl);
    command
        .args(["s_client", "-starttls", "smtp", "-quiet", "-nocommands"])
        .args(["-name", CLIENT_NAME, "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(process::log_file(log)?);
    let mut client = Guarded::spawn("openssl s_client", &mut command)?;
    let mut input = client
        .take_stdin()
        .ok_or_else(|| Failure::new("s_client's input is not a pipe"))?;
    let mut output = BufReader::new(
        client
            .take_stdout()
            .ok_or_else(|| Failure::new("s_client's output is not a pipe"))?,
    );
    let mut line = String::new();
    for step in session_script(messages, content) {
        input
            .write_all(step.write.as_bytes())
            .context("writing to s_client")?;
        input.flush().context("writing to s_client")?;
        for &wanted in &step.expect {
            let code = loop {
                line.clear();
                let read = output.read_line(&mut line).context("reading s_client")?;
                if read == 0 {
                    return Err(Failure(format!(
                        "s_client's session ended while waiting for {wanted}; {}",
                        process::log_tail(log)
                    )));
                }
                if let Some(code) = final_reply_code(&line) {
                    break code;
                }
            };
            if code != wanted {
                return Err(Failure(format!(
                    "expected {wanted}, got: {}",
                    line.trim_end()
                )));
            }
        }
    }
    drop(input);
    client.stop();
    Ok(())
}

/// Messages per second relayed over `--sessions` parallel STARTTLS sessions to `port`,
/// from the start of the clients until the sink has them all.
fn relay(
    name: &str,
    load: &Load,
    port: u16,
    sink: &mut Sink,
    health: &mut impl FnMut() -> Result<(), Failure>,
) -> Result<f64, Failure> {
    let options = load.options;
    let wanted = u64::from(options.messages);
    let before = sink.messages();
    println!(
        "{name}: relaying {wanted} messages over {} STARTTLS sessions to 127.0.0.1:{port}",
        options.sessions
    );
    let content = message_content();
    let started = Instant::now();
    let mut sessions: Vec<Option<thread::JoinHandle<Result<(), Failure>>>> = (0..options.sessions)
        .map(|index| {
            let openssl = load.openssl.clone();
            let content = content.clone();
            let log = load.file(name, &format!("client-{index}.log"));
            let messages = options.messages_of_session(index);
            Some(thread::spawn(move || {
                run_session(&openssl, port, messages, &content, &log)
            }))
        })
        .collect();
    let elapsed = loop {
        let received = sink.messages().saturating_sub(before);
        if received >= wanted {
            break started.elapsed();
        }
        // A session that failed fails the run now rather than at the timeout.
        for slot in &mut sessions {
            if slot.as_ref().is_some_and(|session| session.is_finished())
                && let Some(session) = slot.take()
            {
                join_session(name, session)?;
            }
        }
        process::check_interrupted()?;
        sink.check_running()?;
        health()?;
        if started.elapsed() > RUN_TIMEOUT {
            return Err(Failure(format!(
                "{name}: timed out after {} s with {received} of {wanted} messages at the sink",
                RUN_TIMEOUT.as_secs()
            )));
        }
        thread::sleep(POLL_INTERVAL);
    };
    for session in sessions.into_iter().flatten() {
        join_session(name, session)?;
    }
    let rate = f64::from(options.messages) / elapsed.as_secs_f64().max(1e-9);
    println!(
        "{name}: {wanted} messages in {:.3} s: {rate:.1}/s",
        elapsed.as_secs_f64()
    );
    Ok(rate)
}

fn join_session(
    name: &str,
    session: thread::JoinHandle<Result<(), Failure>>,
) -> Result<(), Failure> {
    session
        .join()
        .map_err(|_| Failure(format!("{name}: a client thread panicked")))?
        .map_err(|failure| Failure(format!("{name}: {failure}")))
}

/// `target/bench/tls.json`.
fn tls_json(options: &Options, version: &str, ours: &Measurement, theirs: &Measurement) -> String {
    let float = |x: f64, places: usize| {
        if x.is_finite() {
            format!("{x:.places$}")
        } else {
            "null".to_owned()
        }
    };
    let fields = [
        (
            "drawbridge_handshakes_per_s",
            float(ours.handshakes_per_s, 2),
        ),
        (
            "postfix_handshakes_per_s",
            float(theirs.handshakes_per_s, 2),
        ),
        (
            "handshake_ratio",
            float(ours.handshakes_per_s / theirs.handshakes_per_s, 4),
        ),
        ("drawbridge_msgs_per_s", float(ours.messages_per_s, 2)),
        ("postfix_msgs_per_s", float(theirs.messages_per_s, 2)),
        (
            "relay_ratio",
            float(ours.messages_per_s / theirs.messages_per_s, 4),
        ),
        ("handshakes", options.handshakes.to_string()),
        ("messages", options.messages.to_string()),
        ("sessions", options.sessions.to_string()),
        ("size", PAYLOAD_SIZE.to_string()),
        ("postfix_version", crate::bench::json_string(version)),
    ];
    crate::bench::json_object(&fields)
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
        assert_eq!(
            parse(&[]).unwrap(),
            Options {
                handshakes: 2000,
                messages: 2000,
                sessions: 10
            }
        );
    }

    #[test]
    fn options_take_separate_and_inline_values() {
        assert_eq!(
            parse(&["--handshakes", "30", "--messages=40", "--sessions", "3"]).unwrap(),
            Options {
                handshakes: 30,
                messages: 40,
                sessions: 3
            }
        );
    }

    #[test]
    fn bad_options_are_refused() {
        for words in [
            &["--handshakes"][..],
            &["--handshakes", "0"],
            &["--messages", "-1"],
            &["--sessions", "101"],
            &["--sessions", "0"],
            &["--size", "10"],
            &["--only", "postfix"],
            &["200"],
        ] {
            assert!(parse(words).is_err(), "{words:?}");
        }
    }

    #[test]
    fn sessions_share_the_messages_exactly() {
        let options = parse(&["--messages", "10", "--sessions", "4"]).unwrap();
        let shares: Vec<u32> = (0..4).map(|i| options.messages_of_session(i)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        let few = parse(&["--messages", "2", "--sessions", "3"]).unwrap();
        let shares: Vec<u32> = (0..3).map(|i| few.messages_of_session(i)).collect();
        assert_eq!(shares, [1, 1, 0]);
    }

    #[test]
    fn s_time_count_comes_from_the_real_seconds_line() {
        let output = "***\n\n758 connections in 0.37s; 2048.65 connections/user sec, bytes read 0\n\
                      758 connections in 2 real seconds, 0 bytes read per connection\n";
        assert_eq!(s_time_connections(output), Some(758));
        assert_eq!(
            s_time_connections("Collecting connection statistics\n"),
            None
        );
        assert_eq!(
            s_time_connections("x connections in 2 real seconds, 0 bytes\n"),
            None
        );
    }

    #[test]
    fn final_reply_lines_are_told_from_continuations() {
        assert_eq!(final_reply_code("250 2.0.0 Ok\r\n"), Some(250));
        assert_eq!(final_reply_code("354\r\n"), Some(354));
        assert_eq!(final_reply_code("250-PIPELINING\r\n"), None);
        assert_eq!(final_reply_code("25"), None);
        assert_eq!(final_reply_code("abc def"), None);
    }

    #[test]
    fn message_content_has_the_payload_and_no_leading_dots() {
        let content = message_content();
        let (headers, body) = content.split_once("\r\n\r\n").unwrap();
        assert!(headers.contains("Subject: bench tls"));
        let body = body.strip_suffix(".\r\n").unwrap();
        let payload: usize = body.split("\r\n").map(str::len).sum();
        assert_eq!(payload, PAYLOAD_SIZE);
        assert!(body.split("\r\n").all(|l| l.len() <= PAYLOAD_LINE));
        assert!(!body.split("\r\n").any(|l| l.starts_with('.')));
    }

    #[test]
    fn session_script_pipelines_each_end_of_data_with_the_next_envelope() {
        let steps = session_script(2, "C\r\n.\r\n");
        let envelope = "MAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n";
        assert_eq!(
            steps,
            [
                Step {
                    write: "EHLO load.example.org\r\n".to_owned(),
                    expect: vec![250]
                },
                Step {
                    write: envelope.to_owned(),
                    expect: vec![250, 250, 354]
                },
                Step {
                    write: format!("C\r\n.\r\n{envelope}"),
                    expect: vec![250, 250, 250, 354]
                },
                Step {
                    write: "C\r\n.\r\nQUIT\r\n".to_owned(),
                    expect: vec![250, 221]
                },
            ]
        );
        let idle = session_script(0, "C\r\n.\r\n");
        assert_eq!(idle.len(), 2);
        assert_eq!(idle[1].write, "QUIT\r\n");
        assert_eq!(idle[1].expect, [221]);
    }

    #[test]
    fn drawbridge_config_listens_with_and_without_implicit_tls() {
        let text = drawbridge_config(3000, 3001, 3002, 3003);
        for line in [
            "set service inbound listen 127.0.0.1:3000",
            "set service inbound tls-listen 127.0.0.1:3001",
            "set service outbound listen 127.0.0.1:3002",
            "set route example.com relay [127.0.0.1]:3003",
            "set service inbound max-connections-per-ip 100",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }

    #[test]
    fn postfix_gets_starttls_and_a_wrapper_mode_port() {
        let master = postfix_master_cf(2600, 2601);
        assert!(master.contains("\n127.0.0.1:2600 inet n - n - - smtpd\n"));
        assert!(
            master.contains("\n127.0.0.1:2601 inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n")
        );
        assert!(master.lines().any(|l| l.starts_with("tlsmgr ")));
        assert!(master.lines().any(|l| l.starts_with("postlog ")));
        let main = postfix_tls_settings(Path::new("/w/c.pem"), Path::new("/w/k.pem"));
        assert!(main.contains("smtpd_tls_cert_file = /w/c.pem\n"));
        assert!(main.contains("smtpd_tls_key_file = /w/k.pem\n"));
        assert!(main.contains("smtpd_tls_security_level = may\n"));
    }

    #[test]
    fn json_has_every_field() {
        let ours = Measurement {
            handshakes_per_s: 1000.0,
            messages_per_s: 800.0,
        };
        let theirs = Measurement {
            handshakes_per_s: 500.0,
            messages_per_s: 0.0,
        };
        let json = tls_json(&Options::default(), "3.7.11", &ours, &theirs);
        for line in [
            "\"drawbridge_handshakes_per_s\": 1000.00,",
            "\"postfix_handshakes_per_s\": 500.00,",
            "\"handshake_ratio\": 2.0000,",
            "\"drawbridge_msgs_per_s\": 800.00,",
            "\"postfix_msgs_per_s\": 0.00,",
            "\"relay_ratio\": null,",
            "\"postfix_version\": \"3.7.11\"",
        ] {
            assert!(json.contains(line), "missing {line} in\n{json}");
        }
        assert!(json.starts_with("{\n") && json.ends_with("\n}\n"));
    }
}
