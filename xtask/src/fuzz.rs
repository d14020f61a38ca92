//! `cargo xtask fuzz [--seconds N] [--jobs J] [TARGET...]`: runs the coverage-guided fuzz
//! targets of `tests/fuzz` with cargo-fuzz (libFuzzer), each for N seconds, and reports
//! what each reached.
//!
//! The targets are the files of `tests/fuzz/fuzz_targets/`: adding one there (with its
//! `[[bin]]` entry) adds it here. Each run starts from the target's corpus
//! (`tests/fuzz/corpus/TARGET`, kept between runs, not in git) and its seeds
//! (`tests/fuzz/seeds/TARGET`, in git), with its dictionary when it has one
//! (`tests/fuzz/dicts/TARGET.dict`, in git). cargo-fuzz is installed with `cargo install` when
//! it is missing; it runs on the stable toolchain with `RUSTC_BOOTSTRAP=1`. A crash
//! leaves its input in `tests/fuzz/artifacts/TARGET/` and fails the command; the report
//! (`target/fuzz/report.json`) has the seconds, CPU seconds (read from the process before
//! it is reaped), executions, coverage (libFuzzer's `cov` and `ft`), corpus size and
//! result of each target: clean, crashed, or failed (it could not be built or started,
//! so nothing was fuzzed; a failure fails the command too, but is not called a crash).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;

use crate::options::{self, number};
use crate::process;
use crate::{Context, Failure};

/// Seconds per target unless `--seconds` says otherwise.
pub const DEFAULT_SECONDS: u32 = 60;
/// Where the fuzz crate lives, from the workspace root.
pub const FUZZ_DIR: &str = "tests/fuzz";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub seconds: u32,
    /// Targets run at once (each takes one core).
    pub jobs: u32,
    /// Only these targets; all when empty.
    pub targets: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: DEFAULT_SECONDS,
            jobs: 1,
            targets: Vec::new(),
        }
    }
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        let (flags, names): (Vec<String>, Vec<String>) = {
            let mut flags = Vec::new();
            let mut names = Vec::new();
            let mut words = args.iter();
            while let Some(w) = words.next() {
                if w.starts_with("--") {
                    flags.push(w.clone());
                    if !w.contains('=')
                        && let Some(v) = words.next()
                    {
                        flags.push(v.clone());
                    }
                } else {
                    names.push(w.clone());
                }
            }
            (flags, names)
        };
        options::walk(
            &flags,
            |name, value, _| {
                match name {
                    "--seconds" => o.seconds = number(name, &value()?, 1, 7 * 24 * 3600)?,
                    "--jobs" => o.jobs = number(name, &value()?, 1, 64)?,
                    _ => return Ok(false),
                }
                Ok(true)
            },
            "fuzz",
        )?;
        o.targets = names;
        Ok(o)
    }
}

/// What one target's run reached.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub target: String,
    pub seconds: u32,
    pub executions: u64,
    pub coverage: u64,
    pub features: u64,
    pub corpus: u64,
    /// CPU seconds of the run (cargo-fuzz and the fuzzer), when they could be read.
    pub cpu_seconds: Option<f64>,
    /// libFuzzer or AddressSanitizer reported an error: the input is in the artifacts.
    pub crashed: bool,
    /// The run ended in failure with no fuzzer error: cargo-fuzz could not build or
    /// start the target (its log says why), so nothing was fuzzed.
    pub failed: bool,
}

impl Outcome {
    /// Settles the run once its process exited, `success` or not.
    pub fn exited(&mut self, success: bool) {
        self.failed = !success && !self.crashed;
    }

    /// Whether the run fails the command.
    pub fn bad(&self) -> bool {
        self.crashed || self.failed
    }

    /// How the run ended.
    pub fn result(&self) -> Verdict {
        match (self.crashed, self.failed) {
            (true, _) => Verdict::Crashed,
            (false, true) => Verdict::Failed,
            (false, false) => Verdict::Clean,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// libFuzzer or AddressSanitizer reported an error.
    Crashed,
    /// Nothing was fuzzed: the target could not be built or started.
    Failed,
}

impl Verdict {
    /// The word in the report.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Crashed => "crashed",
            Verdict::Failed => "failed",
        }
    }
}

/// The targets: the files of `fuzz_targets/`, by name.
pub fn targets(fuzz_dir: &Path) -> Result<Vec<String>, Failure> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .context(format_args!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Reads libFuzzer's status lines (`#N ... cov: C ft: F corp: K/…`) and final stats.
pub fn scan_line(line: &str, outcome: &mut Outcome) {
    let field = |key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())?
            .parse()
            .ok()
    };
    if let Some(count) = line.strip_prefix('#') {
        if let Some(n) = count
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|s| s.parse().ok())
        {
            outcome.executions = outcome.executions.max(n);
        }
        if let Some(c) = field("cov: ") {
            outcome.coverage = outcome.coverage.max(c);
        }
        if let Some(f) = field("ft: ") {
            outcome.features = outcome.features.max(f);
        }
        if let Some(k) = field("corp: ") {
            outcome.corpus = k;
        }
    }
    if let Some(n) = line
        .strip_prefix("stat::number_of_executed_units:")
        .and_then(|s| s.trim().parse().ok())
    {
        outcome.executions = n;
    }
    if line.contains("ERROR: libFuzzer") || line.contains("==ERROR: AddressSanitizer") {
        outcome.crashed = true;
    }
}

fn ensure_cargo_fuzz() -> Result<(), Failure> {
    let present = Command::new(crate::cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("xtask: installing cargo-fuzz (cargo install cargo-fuzz)");
    let status = Command::new(crate::cargo())
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(format!(
            "cargo install cargo-fuzz failed ({status})"
        )))
    }
}

fn cargo_fuzz(root: &Path) -> Command {
    let mut c = Command::new(crate::cargo());
    c.arg("fuzz").current_dir(root).env("RUSTC_BOOTSTRAP", "1");
    c
}

/// The libFuzzer dictionary of `target`, `dicts/TARGET.dict` in the fuzz crate: words of
/// its input language (SMTP verbs, configuration keywords, base64 forms of SASL
/// messages), used when the file is there.
pub fn dictionary(fuzz_dir: &Path, target: &str) -> PathBuf {
    fuzz_dir.join("dicts").join(format!("{target}.dict"))
}

fn run_one(root: &Path, target: &str, seconds: u32) -> Result<Outcome, Failure> {
    let fuzz_dir = root.join(FUZZ_DIR);
    let corpus = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&corpus).context(format_args!("creating {}", corpus.display()))?;
    let seeds = fuzz_dir.join("seeds").join(target);
    let dict = dictionary(&fuzz_dir, target);
    let mut command = cargo_fuzz(root);
    command
        .args(["run", target, "--fuzz-dir", FUZZ_DIR])
        .arg(&corpus);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    command.arg("--").arg(format!("-max_total_time={seconds}"));
    if dict.is_file() {
        command.arg(format!("-dict={}", dict.display()));
    }
    command
        .arg("-print_final_stats=1")
        .arg("-rss_limit_mb=1024")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("running cargo fuzz run")?;
    let mut outcome = Outcome {
        target: target.to_owned(),
        seconds,
        ..Outcome::default()
    };
    let log_path = root
        .join("target")
        .join("fuzz")
        .join(format!("{target}.log"));
    let mut log = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            scan_line(&line, &mut outcome);
            log.push(line);
        }
    }
    let (status, cpu_seconds) =
        process::cpu_seconds_at_exit(&mut child).context("waiting for cargo fuzz")?;
    outcome.cpu_seconds = cpu_seconds;
    outcome.exited(status.success());
    let _ = fs::write(&log_path, log.join("\n"));
    Ok(outcome)
}

fn report_json(outcomes: &[Outcome]) -> String {
    let rows: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "  {{\"target\": \"{}\", \"seconds\": {}, \"cpu_seconds\": {}, \"executions\": {}, \"cov\": {}, \"ft\": {}, \"corpus\": {}, \"result\": \"{}\"}}",
                o.target,
                o.seconds,
                o.cpu_seconds.map_or("null".to_owned(), |s| format!("{s:.0}")),
                o.executions,
                o.coverage,
                o.features,
                o.corpus,
                o.result().word()
            )
        })
        .collect();
    format!("[\n{}\n]\n", rows.join(",\n"))
}

pub fn run(options: &Options) -> Result<ExitCode, Failure> {
    let root = crate::workspace_root();
    let fuzz_dir: PathBuf = root.join(FUZZ_DIR);
    ensure_cargo_fuzz()?;
    let all = targets(&fuzz_dir)?;
    let chosen: Vec<String> = if options.targets.is_empty() {
        all.clone()
    } else {
        for t in &options.targets {
            if !all.contains(t) {
                return Err(Failure(format!(
                    "no fuzz target `{t}`; there are: {}",
                    all.join(", ")
                )));
            }
        }
        options.targets.clone()
    };
    let report_dir = root.join("target").join("fuzz");
    fs::create_dir_all(&report_dir).context("creating target/fuzz")?;
    println!("xtask: building the fuzz targets");
    let built = cargo_fuzz(&root)
        .args(["build", "--fuzz-dir", FUZZ_DIR])
        .status()
        .context("running cargo fuzz build")?;
    if !built.success() {
        return Err(Failure(format!("cargo fuzz build failed ({built})")));
    }
    let mut outcomes = Vec::new();
    for batch in chosen.chunks(options.jobs as usize) {
        let handles: Vec<_> = batch
            .iter()
            .map(|t| {
                let (root, t) = (root.clone(), t.clone());
                let seconds = options.seconds;
                println!("xtask: fuzzing {t} for {seconds} s");
                thread::spawn(move || run_one(&root, &t, seconds))
            })
            .collect();
        for h in handles {
            let outcome = h
                .join()
                .map_err(|_| Failure::new("a fuzzing thread panicked"))??;
            println!(
                "{:<16} {:>6} s {:>8} CPU-s {:>12} runs  cov {:>6}  ft {:>7}  corpus {:>6}  {}",
                outcome.target,
                outcome.seconds,
                outcome
                    .cpu_seconds
                    .map_or("?".to_owned(), |s| format!("{s:.0}")),
                outcome.executions,
                outcome.coverage,
                outcome.features,
                outcome.corpus,
                match outcome.result() {
                    Verdict::Crashed => "CRASHED: see tests/fuzz/artifacts/".to_owned(),
                    Verdict::Failed => format!(
                        "FAILED, nothing fuzzed: see target/fuzz/{}.log",
                        outcome.target
                    ),
                    Verdict::Clean => "clean".to_owned(),
                }
            );
            outcomes.push(outcome);
        }
    }
    let path = report_dir.join("report.json");
    fs::write(&path, report_json(&outcomes)).context(format_args!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(if outcomes.iter().any(Outcome::bad) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_take_seconds_jobs_and_targets() {
        assert_eq!(Options::parse(&[]).unwrap(), Options::default());
        assert_eq!(
            Options::parse(&args(&[
                "--seconds",
                "30",
                "sasl",
                "--jobs=2",
                "dns_message"
            ]))
            .unwrap(),
            Options {
                seconds: 30,
                jobs: 2,
                targets: args(&["sasl", "dns_message"]),
            }
        );
        assert!(Options::parse(&args(&["--seconds", "0"])).is_err());
        assert!(Options::parse(&args(&["--fast"])).is_err());
    }

    #[test]
    fn libfuzzer_lines_are_read() {
        let mut o = Outcome::default();
        scan_line(
            "#123456\tREDUCE cov: 1234 ft: 5678 corp: 90/12Kb lim: 4096 exec/s: 4115 rss: 60Mb",
            &mut o,
        );
        scan_line("stat::number_of_executed_units: 200000", &mut o);
        assert_eq!(
            (o.executions, o.coverage, o.features, o.corpus, o.crashed),
            (200_000, 1234, 5678, 90, false)
        );
        scan_line("==4242== ERROR: libFuzzer: deadly signal", &mut o);
        o.exited(false);
        assert_eq!((o.result().word(), o.bad()), ("crashed", true));
    }

    #[test]
    fn a_run_that_ends_badly_without_a_fuzzer_error_failed_rather_than_crashed() {
        let mut o = Outcome::default();
        scan_line("error: could not compile `drawbridge` (lib)", &mut o);
        o.exited(false);
        assert_eq!((o.result().word(), o.bad()), ("failed", true));
        let mut o = Outcome::default();
        o.exited(true);
        assert_eq!((o.result().word(), o.bad()), ("clean", false));
    }

    #[test]
    fn every_target_file_is_a_target() {
        let fuzz_dir = crate::workspace_root().join(FUZZ_DIR);
        let names = targets(&fuzz_dir).unwrap();
        let manifest = fs::read_to_string(fuzz_dir.join("Cargo.toml")).unwrap();
        for name in &names {
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "{name} has no [[bin]] entry in tests/fuzz/Cargo.toml"
            );
        }
        assert!(names.len() >= 10, "{names:?}");
    }

    /// libFuzzer refuses to start on a dictionary line it cannot read: each line is a
    /// comment or one quoted token whose escapes are `\\`, `\"` and `\xAB`.
    #[test]
    fn every_dictionary_is_a_target_s_and_reads() {
        let fuzz_dir = crate::workspace_root().join(FUZZ_DIR);
        let names = targets(&fuzz_dir).unwrap();
        let mut seen = 0;
        for entry in fs::read_dir(fuzz_dir.join("dicts")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert!(names.contains(&name), "{} is no target's", path.display());
            assert_eq!(path, dictionary(&fuzz_dir, &name));
            for (n, line) in fs::read_to_string(&path).unwrap().lines().enumerate() {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                assert!(token(line), "{}:{}: {line}", path.display(), n + 1);
            }
            seen += 1;
        }
        assert!(seen >= 5);
    }

    fn token(line: &str) -> bool {
        let Some(inner) = line.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
            return false;
        };
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return false,
                '\\' => match chars.next() {
                    Some('\\' | '"') => {}
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        if hex.len() != 2 || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                            return false;
                        }
                    }
                    _ => return false,
                },
                c if !(' '..='~').contains(&c) => return false,
                _ => {}
            }
        }
        !inner.is_empty()
    }
}
