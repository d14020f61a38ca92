//! What the benchmarks share: the two systems compared, the release build of the gateway,
//! the shared work directories and the JSON they write. The suite itself (relay, latency,
//! churn, idle, slow-downstream, dead-downstream, size, loadgen, all) is in `suite.rs`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Context, Failure};

/// Payload bytes per message of the TLS relay benchmark and the generator check.
pub const DEFAULT_SIZE: u32 = 2048;

/// Longest a whole run of one system may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest a system may take to accept connections after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a run loop looks at the sink's counter; bounds the timing error.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);

pub const SENDER: &str = "sender@example.org";
pub const RECIPIENT: &str = "rcpt@example.com";

/// One of the two systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Drawbridge,
    Postfix,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Drawbridge => "drawbridge",
            System::Postfix => "postfix",
        }
    }
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

/// The command that runs the gateway as the benchmarks do: `run --config CONFIG
/// --state-dir STATE --no-console`, no input, its output and errors both to `log`.
pub fn gateway_command(
    binary: &Path,
    config: &Path,
    state: &Path,
    log: &Path,
) -> Result<Command, Failure> {
    let out = crate::process::log_file(log)?;
    let err = out.try_clone().context("sharing drawbridge's log")?;
    let mut command = Command::new(binary);
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .arg("--no-console")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    Ok(command)
}

/// The `q`-quantile (0..=1) of sorted samples by the nearest-rank method; `None` when
/// there are none.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
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

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
