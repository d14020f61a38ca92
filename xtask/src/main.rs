//! Build tool for drawbridge: `cargo xtask test`, `cargo xtask bench
//! relay|latency|churn|handshakes|idle|slow-downstream|dead-downstream|size|loadgen|all|tls|token|delivery|
//! auth-stall|boot`, `cargo xtask soak`, `build-image`,
//! `verify-image` and `qemu`.
//!
//! std only, but for rustls (the load generator's STARTTLS, built once for the gateway and
//! xtask alike), so that it compiles quickly on a fresh machine. Linux only: it reads
//! `/proc` and drives Debian's packages and Postfix's tools.

mod bench;
mod bench_robust;
mod bench_tls;
mod bench_token;
mod fuzz;
mod image;
mod loadgen;
mod options;
mod postfix;
mod process;
mod sink;
mod soak;
mod suite;
mod test_runner;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [CARGO-TEST-ARGS...]
      Install the Debian packages the tests drive when one is missing
      (postfix, swaks, python3, openssl, dnsmasq-base, testssl.sh, softhsm2, opensc;
      installing needs root),
      then run `cargo test --workspace --all-targets [CARGO-TEST-ARGS...]`
      and exit with its status.

  bench relay|latency|churn|handshakes|idle|slow-downstream|dead-downstream|
        size|loadgen|all
        [--sizes LIST] [--messages N] [--sessions S] [--connections LIST]
        [--only drawbridge|postfix] [--binary PATH]
      The benchmark suite: drawbridge (release build, or PATH) against a private
      Postfix relay on this machine, one after the other under the same load
      from xtask's own SMTP load generator, relaying to one smtp-sink. Prints
      both figures and the ratio, writes target/bench/NAME.json. Needs root
      for Postfix unless --only drawbridge.
      relay: each size of LIST (default 1k,4k,100k,10m; k and m are KiB and
        MiB) over S pipelined sessions kept open (default 10): messages/s end
        to end, MB/s, CPU seconds per 1000 messages of each whole process
        tree, peak PSS. N defaults to 200 MiB worth, 50 to 20000.
      latency: one session, one 4 KiB message at a time (N, default 5000):
        acknowledgement latency p50/p99/p99.9.
      churn: a new connection per 4 KiB message, then a new STARTTLS
        connection (full handshake) per message (N, default 3000).
      handshakes: N full STARTTLS handshakes (default 3000, no resumption),
        a new connection each, over S sessions: handshakes/s, CPU per 1000.
      idle: connections (LIST, default 1000,10000) greeted and past EHLO, plain
        and after STARTTLS, held open: PSS per connection.
      slow-downstream: the sink waits 1 s before each DATA reply; N messages
        (default 3000) are accepted far faster than they can leave: queue
        depth and peak memory.
      dead-downstream: nothing listens at the next hop; N messages (default
        30000) are accepted and deferred: memory per queued message once
        the queue has settled.
      size: the static (+crt-static), stripped binary against Postfix's
        programs and installed package.
      loadgen: the generator against smtp-source, same load, to smtp-sink and
        to each system; they must agree where both keep up.
      all: every one of them, then bench tls; target/bench/all.json.

  bench tls [--handshakes N] [--messages N] [--sessions S]
      drawbridge against a private Postfix instance over TLS, both with a
      self-signed P-256 certificate. (a) Full TLS handshakes per second
      against each implicit-TLS port (drawbridge's tls-listen, Postfix's
      smtpd in wrapper mode), made back to back by `openssl s_time -new`
      until N handshakes (default 2000) are done. (b) N messages (default
      2000) of 2048 bytes over S parallel STARTTLS sessions (default 10),
      each an `openssl s_client -starttls smtp` process fed pipelined
      MAIL/RCPT/DATA groups, relayed by each system to one smtp-sink.
      Prints both rates and their ratios and writes target/bench/tls.json.
      Needs root.

  bench token [--seconds N] [--clients C]
      drawbridge with its TLS key on the software token, then in SoftHSM2
      through PKCS#11 (a token set up in target/bench for the run). For each,
      C parallel `openssl s_time -new` clients (default 4) make full
      handshakes against the implicit-TLS port for N seconds (default 10),
      while one plain SMTP session times NOOP round trips, idle first and
      then during the handshakes. Prints handshakes/s, their ratio and the
      NOOP latencies, and writes target/bench/token.json.

  bench delivery [--messages N] [--size BYTES]
      Accepts N messages (default 20) of BYTES each (default 34000000) over N
      parallel sessions while the next hop is down, then starts smtp-sink and
      lets the retry deliver them all at once. Prints the gateway's peak RSS
      (VmHWM) and its peak PSS while delivering; writes
      target/bench/delivery.json.

  bench auth-stall [--attempts A] [--iterations I]
      Adds a user with I PBKDF2 iterations (default 600000), then A sessions
      (default 50) send AUTH PLAIN for it at once while one probe session
      times the replies to NOOP, MAIL and RSET. Prints the probe's p50, p99
      and worst reply latency; writes target/bench/auth-stall.json.

  fuzz [--seconds N] [--jobs J] [TARGET...]
      Runs the cargo-fuzz (libFuzzer) targets of tests/fuzz (all, or the ones
      named), each for N seconds (default 60), J at a time (default 1),
      installing cargo-fuzz first when it is missing. Prints and writes
      (target/fuzz/report.json) the executions, coverage and corpus of each;
      fails when a target crashes (its input is in tests/fuzz/artifacts/).

  soak [--kills N] [--seed S]
      The crash-durability test at length: the kill-storm test
      (tests/kill_storm.rs) with N SIGKILLs (default 100) instead of 20,
      showing its report (acknowledged, lost, duplicated). --seed repeats a
      run whose report printed that seed.
  bench boot [--board NAME] [--boots N]
      Build the board's image (default qemu-x86_64) and time boot to SMTP
      ready under QEMU in software emulation: from the start of QEMU until
      the guest's inbound service greets through a forwarded loopback port,
      once on a blank data disk (which the firmware formats) and N more
      times (default 3; the median is reported). Prints the image's size too
      and writes target/bench/boot.json.

  build-image [--board NAME] [--key FILE]
      Build the signed firmware image of a board (default qemu-x86_64):
      the firmware linked statically as /init, the kernel and modules from
      the board's Debian kernel package (apt-get download, nothing is
      installed), the tools the board names, and the factory configuration.
      Writes target/image/NAME/drawbridge-VERSION.img, signed with the key in
      FILE (PKCS#8 Ed25519) or with a development key generated in
      target/image/dev-signing-key.pk8. The board's size budgets are checked.

  verify-image FILE [--board NAME] [--public-key FILE]
      Check an image's signature (default: the development key), every
      section's SHA-256 and that it is for the board (default qemu-x86_64).

  qemu [--board NAME] [--image FILE] [--disk FILE] [--smtp-port N]
       [--submission-port N]
      Boot an image (default: build one) under QEMU in software emulation,
      the serial console on this terminal, the data disk in
      target/image/NAME/data.img (created blank when missing), and the
      guest's inbound (25) and outbound (587) services forwarded from
      127.0.0.1:2525 and 127.0.0.1:2587.

  help, --help, -h
      Print this text.
";

/// Why a command failed, as a message for the person who ran it.
#[derive(Debug)]
pub struct Failure(pub String);

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure(message.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Turns any error into a [`Failure`] that says what was being done.
pub trait Context<T> {
    fn context(self, doing: impl fmt::Display) -> Result<T, Failure>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, doing: impl fmt::Display) -> Result<T, Failure> {
        self.map_err(|error| Failure(format!("{doing}: {error}")))
    }
}

/// A command line, checked.
#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Test { cargo_args: Vec<String> },
    BenchSuite(String, suite::Options),
    BenchTls(bench_tls::Options),
    BenchToken(bench_token::Options),
    BenchDelivery(bench_robust::DeliveryOptions),
    BenchAuthStall(bench_robust::StallOptions),
    Soak(soak::Options),
    BuildImage(image::BuildOptions),
    VerifyImage(image::VerifyOptions),
    Qemu(image::QemuOptions),
    BenchBoot(image::BootBenchOptions),
    Fuzz(fuzz::Options),
}

/// The benchmarks of the suite (`suite.rs`).
const SUITE: [&str; 10] = [
    "relay",
    "latency",
    "churn",
    "handshakes",
    "idle",
    "slow-downstream",
    "dead-downstream",
    "size",
    "loadgen",
    "all",
];

fn parse(args: &[String]) -> Result<Command, String> {
    match args.split_first() {
        None => Err("no command given".to_owned()),
        Some((command, rest)) => match command.as_str() {
            "help" | "--help" | "-h" => Ok(Command::Help),
            "test" => Ok(Command::Test {
                cargo_args: rest.to_vec(),
            }),
            "bench" => match rest.split_first() {
                Some((what, options)) if SUITE.contains(&what.as_str()) => {
                    suite::Options::parse(options, &format!("bench {what}"))
                        .map(|o| Command::BenchSuite(what.clone(), o))
                }
                Some((what, options)) if what == "tls" => {
                    bench_tls::Options::parse(options).map(Command::BenchTls)
                }
                Some((what, options)) if what == "token" => {
                    bench_token::Options::parse(options).map(Command::BenchToken)
                }
                Some((what, options)) if what == "delivery" => {
                    bench_robust::DeliveryOptions::parse(options).map(Command::BenchDelivery)
                }
                Some((what, options)) if what == "auth-stall" => {
                    bench_robust::StallOptions::parse(options).map(Command::BenchAuthStall)
                }
                Some((what, options)) if what == "boot" => {
                    image::BootBenchOptions::parse(options).map(Command::BenchBoot)
                }
                Some((what, _)) => Err(format!("unknown benchmark `{what}`")),
                None => Err(
                    "`bench` needs a benchmark name: relay, latency, churn, handshakes, idle, \
                     slow-downstream, dead-downstream, size, loadgen, all, tls, token, delivery, auth-stall \
                     or boot"
                        .to_owned(),
                ),
            },
            "soak" => soak::Options::parse(rest).map(Command::Soak),
            "build-image" => image::BuildOptions::parse(rest).map(Command::BuildImage),
            "verify-image" => image::VerifyOptions::parse(rest).map(Command::VerifyImage),
            "qemu" => image::QemuOptions::parse(rest).map(Command::Qemu),
            "fuzz" => fuzz::Options::parse(rest).map(Command::Fuzz),
            other => Err(format!("unknown command `{other}`")),
        },
    }
}

/// The workspace root: the parent of the folder that holds xtask's manifest.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory for this workspace (honours `CARGO_TARGET_DIR`).
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// The cargo that runs xtask, so that the same toolchain builds and tests.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = match command {
        Command::Help => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { cargo_args } => test_runner::run(&cargo_args),
        Command::BenchSuite(what, options) => suite::run(&what, &options),
        Command::BenchTls(options) => bench_tls::run(&options),
        Command::BenchToken(options) => bench_token::run(&options),
        Command::BenchDelivery(options) => bench_robust::run_delivery(&options),
        Command::BenchAuthStall(options) => bench_robust::run_auth_stall(&options),
        Command::Soak(options) => soak::run(&options),
        Command::BuildImage(options) => image::build(&options),
        Command::VerifyImage(options) => image::verify(&options),
        Command::Qemu(options) => image::qemu(&options),
        Command::BenchBoot(options) => image::bench_boot(&options),
        Command::Fuzz(options) => fuzz::run(&options),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("xtask: error: {failure}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn help_forms_parse() {
        for word in ["help", "--help", "-h"] {
            assert_eq!(parse(&args(&[word])), Ok(Command::Help));
        }
    }

    #[test]
    fn test_passes_its_arguments_to_cargo() {
        assert_eq!(
            parse(&args(&["test", "smtp::", "--", "--nocapture"])),
            Ok(Command::Test {
                cargo_args: args(&["smtp::", "--", "--nocapture"])
            })
        );
    }

    #[test]
    fn bench_relay_parses_with_defaults() {
        assert_eq!(
            parse(&args(&["bench", "relay"])),
            Ok(Command::BenchSuite(
                "relay".to_owned(),
                suite::Options::default()
            ))
        );
        for what in SUITE {
            assert!(matches!(
                parse(&args(&["bench", what, "--messages", "5"])),
                Ok(Command::BenchSuite(..))
            ));
        }
    }

    #[test]
    fn bench_tls_parses_with_defaults_and_options() {
        assert_eq!(
            parse(&args(&["bench", "tls"])),
            Ok(Command::BenchTls(bench_tls::Options::default()))
        );
        assert_eq!(
            parse(&args(&[
                "bench",
                "tls",
                "--handshakes",
                "50",
                "--sessions=2"
            ])),
            Ok(Command::BenchTls(bench_tls::Options {
                handshakes: 50,
                sessions: 2,
                ..bench_tls::Options::default()
            }))
        );
    }

    #[test]
    fn unknown_commands_are_refused() {
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["build"])).is_err());
        assert!(parse(&args(&["bench"])).is_err());
        assert!(parse(&args(&["bench", "smtp"])).is_err());
    }

    #[test]
    fn usage_lists_every_command() {
        for command in [
            "test",
            "bench relay",
            "bench tls",
            "bench token",
            "bench delivery",
            "bench auth-stall",
            "soak",
            "bench boot",
            "build-image",
            "verify-image",
            "qemu",
            "fuzz",
            "help",
        ] {
            assert!(USAGE.contains(command), "{command}");
        }
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("xtask").join("Cargo.toml").is_file());
    }

    #[test]
    fn context_names_what_was_being_done() {
        let result: Result<(), &str> = Err("boom");
        assert_eq!(
            result.context("starting x").unwrap_err().0,
            "starting x: boom"
        );
    }
}
