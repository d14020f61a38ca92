//! The administrator's configuration commands for scripts (`drawbridge config …`),
//! the same whether a running gateway answers them through its control socket (its
//! commits apply live) or they work on a stopped gateway's state directory.
//!
//! This module parses the requests and writes the answers; it does no I/O.

use super::engine::Commit;
use super::store::HISTORY;
use crate::proto::calendar::mailq_stamp;
use crate::proto::config::Config;
use crate::proto::config::text;
use crate::proto::json::json_string;

/// A `config` request on the control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigRequest {
    /// The running configuration as `set` lines, or as JSON.
    Show {
        json: bool,
    },
    /// Loads the request's body into a candidate (merged onto the running
    /// configuration, or replacing it) and commits it.
    Load {
        replace: bool,
        confirm: Option<u64>,
        comment: String,
    },
    /// Confirms a pending `commit confirmed`.
    Commit,
    /// Commits the configuration of N commits ago.
    Rollback(usize),
    History,
}

impl ConfigRequest {
    /// Parses the words after `config`: `show [json]`, `load merge|replace [confirm
    /// MINUTES] [comment WORDS…]`, `commit`, `rollback N`, `history`.
    pub fn parse(words: &[&str]) -> Result<ConfigRequest, String> {
        let number = |w: &str, what: &str| {
            w.parse::<u64>()
                .map_err(|_| format!("'{w}' is not a number of {what}"))
        };
        Ok(match words {
            ["show"] => ConfigRequest::Show { json: false },
            ["show", "json"] => ConfigRequest::Show { json: true },
            ["commit"] => ConfigRequest::Commit,
            ["history"] => ConfigRequest::History,
            ["rollback", n] => ConfigRequest::Rollback(
                usize::try_from(number(n, "commits")?).map_err(|_| "too far back")?,
            ),
            ["load", how, rest @ ..] => {
                let replace = match *how {
                    "merge" => false,
                    "replace" => true,
                    other => return Err(format!("load {other}: expected merge or replace")),
                };
                let (confirm, rest) = match rest {
                    ["confirm", m, rest @ ..] => (Some(number(m, "minutes")?), rest),
                    _ => (None, rest),
                };
                let comment = match rest {
                    [] => String::new(),
                    ["comment", words @ ..] => words.join(" "),
                    _ => return Err(format!("unexpected '{}'", rest.join(" "))),
                };
                ConfigRequest::Load {
                    replace,
                    confirm,
                    comment,
                }
            }
            _ => return Err(format!("unknown config request '{}'", words.join(" "))),
        })
    }

    /// The request as a client sends it.
    pub fn line(&self) -> String {
        match self {
            ConfigRequest::Show { json: false } => "show".into(),
            ConfigRequest::Show { json: true } => "show json".into(),
            ConfigRequest::Commit => "commit".into(),
            ConfigRequest::History => "history".into(),
            ConfigRequest::Rollback(n) => format!("rollback {n}"),
            ConfigRequest::Load {
                replace,
                confirm,
                comment,
            } => {
                let mut line = format!("load {}", if *replace { "replace" } else { "merge" });
                if let Some(m) = confirm {
                    line.push_str(&format!(" confirm {m}"));
                }
                if !comment.is_empty() {
                    line.push_str(&format!(" comment {comment}"));
                }
                line
            }
        }
    }
}

/// The answer to a commit.
pub fn committed_text(sequence: u64, confirm: Option<u64>) -> String {
    match confirm {
        Some(m) => format!(
            "commit {sequence}: applied; it rolls back in {m} minute(s) unless confirmed with `drawbridge config commit`\n"
        ),
        None => format!("commit {sequence}: applied\n"),
    }
}

/// `config show`: the configuration in canonical `set` lines after a comment naming
/// the commit, or as JSON.
pub fn show(config: &Config, commit: &Commit, json: bool) -> String {
    if json {
        let lines: Vec<String> = text::lines(config).iter().map(|l| json_string(l)).collect();
        return format!(
            "{{\"commit\":{},\"time\":{},\"user\":{},\"comment\":{},\"statements\":[{}]}}\n",
            commit.sequence,
            commit.meta.time,
            json_string(&commit.meta.user),
            json_string(&commit.meta.comment),
            lines.join(",")
        );
    }
    format!("# commit {}\n{}", describe(commit), text::print(config))
}

/// A commit in one line: `7 of Sat Nov 21 21:41:41 by admin: new relay`.
pub fn describe(commit: &Commit) -> String {
    format!(
        "{} of {} by {}{}",
        commit.sequence,
        mailq_stamp(commit.meta.time),
        commit.meta.user,
        if commit.meta.comment.is_empty() {
            String::new()
        } else {
            format!(": {}", commit.meta.comment)
        }
    )
}

/// `show system commit`: the commits kept, newest first, numbered for `rollback N`.
pub fn history_text(commits: &[Commit], pending: Option<(u64, u64)>) -> String {
    let mut out = String::new();
    for (n, c) in commits.iter().enumerate().take(HISTORY + 1) {
        let pending_note = match (n, pending) {
            (0, Some((deadline, back_to))) => format!(
                " [confirm by {}, else back to commit {back_to}]",
                mailq_stamp(deadline)
            ),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{n:>2}  commit {:<6} {}  by {:<10} {}{pending_note}\n",
            c.sequence,
            mailq_stamp(c.meta.time),
            c.meta.user,
            c.meta.comment
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::config::host_default;
    use crate::proto::config::slot::CommitMeta;

    #[test]
    fn requests_parse_and_print_back() {
        for words in [
            "show",
            "show json",
            "commit",
            "history",
            "rollback 3",
            "load merge",
            "load replace confirm 5",
            "load merge confirm 1 comment open the partner relay",
            "load replace comment x",
        ] {
            let parsed = ConfigRequest::parse(&words.split(' ').collect::<Vec<_>>()).unwrap();
            assert_eq!(parsed.line(), words);
        }
        for bad in [
            "",
            "show xml",
            "load",
            "load append",
            "rollback x",
            "load merge confirm",
        ] {
            let words: Vec<&str> = bad.split(' ').filter(|w| !w.is_empty()).collect();
            assert!(ConfigRequest::parse(&words).is_err(), "{bad}");
        }
    }

    #[test]
    fn show_and_history_name_the_commits() {
        let commit = Commit {
            sequence: 7,
            meta: CommitMeta {
                time: 1_795_297_301,
                user: "admin".into(),
                comment: "open \"x\"".into(),
                ..CommitMeta::default()
            },
        };
        let text = show(&host_default(), &commit, false);
        assert!(text.starts_with("# commit 7 of "), "{text}");
        assert_eq!(
            crate::proto::config::text::parse(&text).unwrap(),
            host_default()
        );
        let json = show(&host_default(), &commit, true);
        assert!(json.starts_with("{\"commit\":7,\"time\":1795297301,\"user\":\"admin\",\"comment\":\"open \\\"x\\\"\",\"statements\":[\"set system host-name gw.example.com\""), "{json}");
        let history = history_text(
            &[
                commit.clone(),
                Commit {
                    sequence: 6,
                    ..commit
                },
            ],
            Some((1_795_297_901, 6)),
        );
        let lines: Vec<&str> = history.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(" 0  commit 7"), "{history}");
        assert!(lines[0].contains("else back to commit 6"), "{history}");
        assert!(lines[1].starts_with(" 1  commit 6"), "{history}");
    }
}
