//! `cargo xtask bench token`: the gateway with its TLS key on the software token, then in
//! SoftHSM2 through PKCS#11, in one run.
//!
//! For each backend: `--clients` parallel `openssl s_time -new` processes make full TLS
//! handshakes against the implicit-TLS port for `--seconds` (a handshake storm: each one
//! signs with the server key, on the token), the total count divided by the storm's wall
//! time. Meanwhile one plain SMTP session on the inbound port sends `NOOP` and times each
//! reply: the executor must keep serving it while PKCS#11 calls are in flight. The same
//! session is timed before the storm too, idle. Results go to `target/bench/token.json`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::bench::START_TIMEOUT;
use crate::bench_tls::s_time_connections;
use crate::options::{self, number};
use crate::process::{self, Guarded};
use crate::{Context, Failure};

/// Default length of each backend's handshake storm (`--seconds`).
const DEFAULT_SECONDS: u32 = 10;
/// Default number of parallel handshake clients (`--clients`).
const DEFAULT_CLIENTS: u32 = 4;
/// Most parallel clients: each is an openssl process.
const MAX_CLIENTS: u32 = 64;
/// How long the idle NOOP latency is measured before the storm.
const IDLE_SAMPLE: Duration = Duration::from_secs(2);
/// Longest one NOOP may take before the run fails.
const NOOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The token's label and PINs in the benchmark's SoftHSM2.
const LABEL: &str = "bench";
const PIN: &str = "bench-user-pin";
const SO_PIN: &str = "bench-so-pin";
/// Where Debian's softhsm2 package puts the module.
const MODULES: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/softhsm/libsofthsm2.so",
];

/// The options of `bench token`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub seconds: u32,
    pub clients: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: DEFAULT_SECONDS,
            clients: DEFAULT_CLIENTS,
        }
    }
}

impl Options {
    /// Parses the words after `bench token`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options::default();
        options::walk(
            args,
            |name, value, _| {
                match name {
                    "--seconds" => options.seconds = number(name, &value()?, 1, 600)?,
                    "--clients" => options.clients = number(name, &value()?, 1, MAX_CLIENTS)?,
                    _ => return Ok(false),
                }
                Ok(true)
            },
            "bench token",
        )?;
        Ok(options)
    }
}

/// NOOP round-trip times in microseconds: median, 99th percentile, worst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let at = |q: usize| {
            samples
                .get((samples.len() * q / 100).min(samples.len().saturating_sub(1)))
                .map_or(0, |d| d.as_micros() as u64)
        };
        Latency {
            count: samples.len(),
            p50_us: at(50),
            p99_us: at(99),
            max_us: samples.last().map_or(0, |d| d.as_micros() as u64),
        }
    }
}

/// What one backend measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    pub handshakes_per_s: f64,
    pub idle: Latency,
    pub storm: Latency,
}

pub fn run(options: &Options) -> Result<ExitCode, Failure> {
    process::catch_interrupts();
    let openssl = find("openssl", "openssl")?;
    let softhsm_util = find("softhsm2-util", "softhsm2")?;
    let module = MODULES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Failure::new("libsofthsm2.so not found: install Debian's softhsm2 package")
        })?;
    let root = crate::workspace_root();
    let target = crate::target_dir(&root);
    let drawbridge = crate::bench::build_drawbridge(&root, &target)?;
    let bench_dir = target.join("bench");
    let work = bench_dir.join(format!("token-{}", std::process::id()));
    crate::bench::make_shared_dir(&bench_dir)?;
    let _ = fs::remove_dir_all(&work);
    crate::bench::make_shared_dir(&work)?;
    println!(
        "token benchmark: {} parallel openssl s_time -new clients for {} s per backend, NOOP round trips on a plain session meanwhile",
        options.clients, options.seconds
    );
    let outcome = (|| {
        let soft = run_backend("soft", options, &openssl, &drawbridge, &work, None)?;
        let hsm = SoftHsm::init(&softhsm_util, &module, &work.join("softhsm"))?;
        let pkcs11 = run_backend("pkcs11", options, &openssl, &drawbridge, &work, Some(&hsm))?;
        Ok((soft, pkcs11))
    })();
    let (soft, pkcs11) = outcome.map_err(|failure: Failure| {
        Failure(format!(
            "{failure}\n(the run's files are kept in {})",
            work.display()
        ))
    })?;
    let _ = fs::remove_dir_all(&work);
    for (name, m) in [("soft", &soft), ("pkcs11", &pkcs11)] {
        println!(
            "{name:<7} handshakes/s {:>8.1}   NOOP µs idle p50 {} p99 {} max {}   during the storm p50 {} p99 {} max {}",
            m.handshakes_per_s,
            m.idle.p50_us,
            m.idle.p99_us,
            m.idle.max_us,
            m.storm.p50_us,
            m.storm.p99_us,
            m.storm.max_us
        );
    }
    println!(
        "ratio pkcs11/soft handshakes: {:.2}",
        pkcs11.handshakes_per_s / soft.handshakes_per_s
    );
    let json_path = bench_dir.join("token.json");
    fs::write(&json_path, token_json(options, &soft, &pkcs11))
        .context(format_args!("writing {}", json_path.display()))?;
    println!("wrote {}", json_path.display());
    Ok(ExitCode::SUCCESS)
}

fn find(name: &str, package: &str) -> Result<PathBuf, Failure> {
    process::find_program(name).ok_or_else(|| {
        Failure(format!(
            "{name} not found: install Debian's {package} package (`cargo xtask test` does)"
        ))
    })
}

/// The benchmark's SoftHSM2: its own token directory, configuration and token.
struct SoftHsm {
    conf: PathBuf,
    module: PathBuf,
    pin_file: PathBuf,
}

impl SoftHsm {
    fn init(util: &Path, module: &Path, dir: &Path) -> Result<SoftHsm, Failure> {
        let tokens = dir.join("tokens");
        fs::create_dir_all(&tokens).context(format_args!("creating {}", tokens.display()))?;
        let conf = dir.join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .context("writing softhsm2.conf")?;
        let output = Command::new(util)
            .args(["--init-token", "--free", "--label", LABEL])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .context("running softhsm2-util")?;
        if !output.status.success() {
            return Err(Failure(format!(
                "softhsm2-util --init-token: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let pin_file = dir.join("sslpassword.conf");
        fs::write(&pin_file, format!("{LABEL}:{PIN}\n")).context("writing the PIN file")?;
        Ok(SoftHsm {
            conf,
            module: module.to_path_buf(),
            pin_file,
        })
    }
}

fn config(inbound: u16, tls: u16, outbound: u16, hsm: Option<&SoftHsm>) -> String {
    let mut text = format!(
        "set system host-name gw.example.com\n\
         set system dns client-names no\n\
         set service inbound listen 127.0.0.1:{inbound}\n\
         set service inbound tls-listen 127.0.0.1:{tls}\n\
         set service inbound max-connections-per-ip 1000\n\
         set service outbound listen 127.0.0.1:{outbound}\n"
    );
    if let Some(hsm) = hsm {
        text.push_str(&format!(
            "set system token backend pkcs11\n\
             set system token module {}\n\
             set system token label {LABEL}\n\
             set system token pin-file {}\n",
            hsm.module.display(),
            hsm.pin_file.display()
        ));
    }
    text
}

fn run_backend(
    name: &str,
    options: &Options,
    openssl: &Path,
    binary: &Path,
    work: &Path,
    hsm: Option<&SoftHsm>,
) -> Result<Measurement, Failure> {
    let [inbound, tls, outbound] = process::free_ports::<3>()?;
    let config_path = work.join(format!("{name}.conf"));
    fs::write(&config_path, config(inbound, tls, outbound, hsm))
        .context(format_args!("writing {}", config_path.display()))?;
    let log = work.join(format!("{name}.log"));
    let state = work.join(format!("{name}-state"));
    let mut command = crate::bench::gateway_command(binary, &config_path, &state, &log)?;
    if let Some(hsm) = hsm {
        command.env("SOFTHSM2_CONF", &hsm.conf);
    }
    println!("{name}: starting drawbridge (a P-256 key made on the token at first boot)");
    let mut gateway = Guarded::spawn("drawbridge", &mut command)?;
    let mut health = || gateway.check_running_logged(&log);
    process::wait_for_listener("drawbridge", tls, START_TIMEOUT, &mut health)?;
    process::wait_for_listener("drawbridge", inbound, START_TIMEOUT, &mut health)?;

    let mut session = PlainSession::open(inbound)?;
    let idle = Latency::of(session.noops_for(IDLE_SAMPLE, &AtomicBool::new(false))?);
    let storm_over = Arc::new(AtomicBool::new(false));
    let prober = {
        let over = storm_over.clone();
        thread::spawn(move || -> Result<Vec<Duration>, Failure> {
            session.noops_for(Duration::MAX, &over)
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..options.clients)
        .map(|_| {
            Command::new(openssl)
                .args(["s_time", "-connect"])
                .arg(format!("127.0.0.1:{tls}"))
                .args(["-new", "-time"])
                .arg(options.seconds.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting openssl s_time")
        })
        .collect::<Result<_, _>>()?;
    let mut total = 0u64;
    let mut failure = None;
    for client in clients {
        let output = client
            .wait_with_output()
            .context("waiting for openssl s_time")?;
        let text = String::from_utf8_lossy(&output.stdout);
        match s_time_connections(&text).filter(|&n| output.status.success() && n > 0) {
            Some(n) => total += n,
            None => {
                failure = Some(format!(
                    "{name}: openssl s_time made no handshakes: {}{}",
                    text.trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        }
    }
    let wall = started.elapsed();
    storm_over.store(true, Ordering::SeqCst);
    let storm = prober
        .join()
        .map_err(|_| Failure::new("the NOOP prober panicked"))??;
    health()?;
    gateway.stop();
    if let Some(failure) = failure {
        return Err(Failure(failure));
    }
    let handshakes_per_s = total as f64 / wall.as_secs_f64().max(1e-9);
    println!(
        "{name}: {total} handshakes in {:.2} s: {handshakes_per_s:.1}/s; {} NOOPs during the storm",
        wall.as_secs_f64(),
        storm.len()
    );
    Ok(Measurement {
        handshakes_per_s,
        idle,
        storm: Latency::of(storm),
    })
}

/// A plain SMTP session that sends NOOPs.
struct PlainSession {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl PlainSession {
    fn open(port: u16) -> Result<PlainSession, Failure> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connecting for NOOPs")?;
        stream
            .set_read_timeout(Some(NOOP_TIMEOUT))
            .context("setting a read timeout")?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let reader = BufReader::new(stream.try_clone().context("cloning the socket")?);
        let mut session = PlainSession {
            writer: stream,
            reader,
        };
        session.reply()?;
        session
            .writer
            .write_all(b"EHLO load.example.org\r\n")
            .context("sending EHLO")?;
        session.reply()?;
        Ok(session)
    }

    /// Reads one reply, all its lines; fails on anything but 2yz.
    fn reply(&mut self) -> Result<(), Failure> {
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .context("reading a reply")?;
            if n == 0 || !line.starts_with('2') {
                return Err(Failure(format!("unexpected reply {line:?}")));
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }

    /// NOOP round trips until `limit` passes or `stop` is set; their durations.
    fn noops_for(&mut self, limit: Duration, stop: &AtomicBool) -> Result<Vec<Duration>, Failure> {
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < limit && !stop.load(Ordering::SeqCst) {
            let sent = Instant::now();
            self.writer.write_all(b"NOOP\r\n").context("sending NOOP")?;
            self.reply()?;
            samples.push(sent.elapsed());
        }
        Ok(samples)
    }
}

fn token_json(options: &Options, soft: &Measurement, pkcs11: &Measurement) -> String {
    let latency = |l: &Latency| {
        format!(
            "{{\"count\": {}, \"p50_us\": {}, \"p99_us\": {}, \"max_us\": {}}}",
            l.count, l.p50_us, l.p99_us, l.max_us
        )
    };
    let one = |m: &Measurement| {
        format!(
            "{{\"handshakes_per_s\": {:.1}, \"noop_idle\": {}, \"noop_during_storm\": {}}}",
            m.handshakes_per_s,
            latency(&m.idle),
            latency(&m.storm)
        )
    };
    format!(
        "{{\n  \"seconds\": {},\n  \"clients\": {},\n  \"soft\": {},\n  \"pkcs11_softhsm2\": {},\n  \"ratio_pkcs11_soft\": {:.3}\n}}\n",
        options.seconds,
        options.clients,
        one(soft),
        one(pkcs11),
        pkcs11.handshakes_per_s / soft.handshakes_per_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_bounds() {
        assert_eq!(Options::parse(&[]), Ok(Options::default()));
        assert_eq!(
            Options::parse(&["--seconds=3".into(), "--clients".into(), "8".into()]),
            Ok(Options {
                seconds: 3,
                clients: 8
            })
        );
        assert!(Options::parse(&["--clients=0".into()]).is_err());
        assert!(Options::parse(&["--clients=65".into()]).is_err());
        assert!(Options::parse(&["--handshakes=3".into()]).is_err());
    }

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = Latency::of(samples);
        assert_eq!((l.count, l.p50_us, l.p99_us, l.max_us), (100, 51, 100, 100));
        assert_eq!(Latency::of(Vec::new()).max_us, 0);
    }

    #[test]
    fn the_config_names_the_token_only_for_pkcs11() {
        assert!(!config(1, 2, 3, None).contains("token"));
        let hsm = SoftHsm {
            conf: "/w/softhsm2.conf".into(),
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            pin_file: "/w/pins".into(),
        };
        let text = config(1, 2, 3, Some(&hsm));
        assert!(text.contains("set system token module /usr/lib/softhsm/libsofthsm2.so\n"));
        assert!(text.contains("set system token pin-file /w/pins\n"));
    }
}
