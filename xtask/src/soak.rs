//! `cargo xtask soak`: the crash-durability test at length. It runs the kill-storm
//! integration test (`tests/kill_storm.rs`) with 100 SIGKILLs instead of the 20 that
//! `cargo xtask test` runs, and shows its report (messages acknowledged, lost,
//! duplicated).

use std::process::{Command, ExitCode};

use crate::options::{self, number};
use crate::{Context, Failure};

/// Kills of a soak run unless `--kills` says otherwise.
pub const DEFAULT_KILLS: u32 = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub kills: u32,
    /// Repeats a run: the seed its report printed.
    pub seed: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kills: DEFAULT_KILLS,
            seed: None,
        }
    }
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        options::walk(
            args,
            |name, value, _| {
                match name {
                    "--kills" => o.kills = number(name, &value()?, 1, 100_000)?,
                    "--seed" => o.seed = Some(number(name, &value()?, 0, u32::MAX)?),
                    _ => return Ok(false),
                }
                Ok(true)
            },
            "soak",
        )?;
        Ok(o)
    }
}

pub fn run(options: &Options) -> Result<ExitCode, Failure> {
    let root = crate::workspace_root();
    let mut command = Command::new(crate::cargo());
    command
        .args(["test", "--test", "kill_storm", "--", "--nocapture"])
        .env("DRAWBRIDGE_KILLS", options.kills.to_string())
        .current_dir(&root);
    if let Some(seed) = options.seed {
        command.env("DRAWBRIDGE_KILL_SEED", seed.to_string());
    }
    println!("xtask: kill storm with {} SIGKILLs", options.kills);
    let status = command.status().context("running cargo test")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_default_to_100() {
        assert_eq!(Options::parse(&[]).unwrap().kills, 100);
        let args: Vec<String> = ["--kills", "5", "--seed=7"].map(String::from).to_vec();
        assert_eq!(
            Options::parse(&args).unwrap(),
            Options {
                kills: 5,
                seed: Some(7)
            }
        );
        assert!(Options::parse(&["--kills".to_owned(), "0".to_owned()]).is_err());
    }
}
