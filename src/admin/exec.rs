//! Carries out what a console session asks, against the running gateway: the
//! operational commands, configuration mode's candidate and commits, logins.
//!
//! Work that blocks (key derivation, files, token calls) runs on the blocking pool, so
//! a console command never stalls the mail.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use super::accounts::{self, Verdict};
use crate::admin::certificate::CertificateAction;
use crate::gateway::Gateway;
use crate::io::clock::unix_now;
use crate::io::config::admin;
use crate::io::config::engine::CommitRequest;
use crate::io::users::PasswordAction;
use crate::proto::calendar::mailq_stamp;
use crate::proto::console::request::{MAX_NAMES, NameKind};
use crate::proto::console::{Answer, Command, MAX_PASTE, Request};
use crate::proto::queue::listing::{QueueOp, qshape};

/// The wait after the first failed login; it doubles with each failure in a row, up to
/// [`MAX_LOGIN_DELAY`], for every console session together.
pub const FIRST_LOGIN_DELAY: Duration = Duration::from_secs(1);
pub const MAX_LOGIN_DELAY: Duration = Duration::from_secs(30);

/// The answer to one request of the session of `user` on `transport`.
pub async fn answer(gw: Rc<Gateway>, user: String, transport: String, request: Request) -> Answer {
    match request {
        Request::Login { user, password } => {
            login(&gw, &user, password.expose().to_string(), &transport).await
        }
        Request::SetLoginPassword {
            user,
            password,
            factory,
        } => {
            let dir = gw.state_dir.clone();
            let name = user.clone();
            let password = password.expose().to_string();
            let set = move || accounts::set_password(&dir, &name, &password, factory);
            match smol::unblock(set).await {
                Ok(()) => {
                    log::info!(target: "console", "{user} changed the console password on {transport}");
                    Answer::LoggedIn {
                        must_change: false,
                        class: gw.config().system.login_class(&user),
                    }
                }
                Err(accounts::PasswordError::Gone(text)) => {
                    log::warn!(target: "console", "{user} on {transport}: password not changed: {text}");
                    Answer::Closing(text)
                }
                Err(accounts::PasswordError::Io(e)) => Answer::Error(e.to_string()),
            }
        }
        Request::Run(command) => {
            let leaving = matches!(
                command,
                Command::Restart
                    | Command::FactoryReset
                    | Command::SystemReboot
                    | Command::SystemPowerOff
                    | Command::SystemWatchdogTest { hardware: false }
            );
            match run(&gw, &user, command).await {
                Ok(text) if leaving => Answer::Closing(text),
                Ok(text) => Answer::Text(text),
                Err(e) => Answer::Error(e),
            }
        }
        Request::Configure => Answer::Candidate(Box::new(gw.candidate())),
        Request::Running => Answer::Running(Box::new((*gw.config()).clone())),
        Request::Check(candidate) => match gw.check(&candidate) {
            Ok(()) => Answer::Text("configuration check succeeds\n".into()),
            Err(e) => Answer::Error(e.to_string()),
        },
        Request::Commit {
            candidate,
            comment,
            confirm_minutes,
        } => {
            // `commit` with nothing changed confirms a pending `commit confirmed`.
            if gw.pending_confirm().is_some()
                && confirm_minutes.is_none()
                && candidate.config == *gw.config()
            {
                return match gw.confirm(&user).await {
                    Ok(seq) => Answer::Committed {
                        text: format!("commit {}: commit confirmed", seq.unwrap_or(0)),
                        candidate: Box::new(gw.candidate()),
                    },
                    Err(e) => Answer::Error(e.to_string()),
                };
            }
            let request = CommitRequest {
                user,
                comment,
                confirm_minutes,
            };
            match gw.commit(&candidate, &request).await {
                Ok(seq) => {
                    let text = match confirm_minutes {
                        Some(m) => format!(
                            "commit {seq}: applied; it rolls back in {m} minute(s) unless committed again"
                        ),
                        None => format!("commit {seq}: applied"),
                    };
                    Answer::Committed {
                        text,
                        candidate: Box::new(gw.candidate()),
                    }
                }
                Err(e) => Answer::Error(e.to_string()),
            }
        }
        Request::Rollback(n) => match gw.rollback_candidate(n).await {
            Ok(c) => Answer::Candidate(Box::new(c)),
            Err(e) => Answer::Error(e.to_string()),
        },
        Request::ReadFile(path) => {
            let state_dir = gw.state_dir.clone();
            let read = smol::unblock(move || read_bounded(&path, &state_dir)).await;
            match read {
                Ok(text) => Answer::File(text),
                Err(e) => Answer::Error(e),
            }
        }
        Request::Names(kind) => match names(&gw, kind).await {
            Ok(names) => Answer::Names(kind, names),
            Err(e) => Answer::Error(e),
        },
    }
}

/// The names of `kind` the gateway has, sorted, for completing an argument; at most
/// [`MAX_NAMES`] of them (the oldest queue ids first, as `show queue` lists them).
async fn names(gw: &Rc<Gateway>, kind: NameKind) -> Result<Vec<String>, String> {
    let dir = gw.state_dir.clone();
    let mut names = match kind {
        NameKind::QueueId => {
            let mut ids = gw.net.queue.scheduler.ids();
            ids.truncate(MAX_NAMES);
            ids.into_iter().map(|id| id.to_string()).collect()
        }
        NameKind::MailUser => smol::unblock(move || crate::io::users::load(&dir))
            .await
            .map_err(|e| e.to_string())?
            .list("*")
            .into_iter()
            .map(|u| u.name)
            .collect(),
        NameKind::ConsoleLogin => smol::unblock(move || accounts::names(&dir))
            .await
            .map_err(|e| e.to_string())?,
        NameKind::Certificate => smol::unblock(move || {
            crate::io::tls::store::names_in(&dir.join(crate::io::tls::setup::STORE_DIR))
        })
        .await
        .map_err(|e| e.to_string())?,
    };
    names.sort();
    names.truncate(MAX_NAMES);
    Ok(names)
}

async fn login(gw: &Rc<Gateway>, user: &str, password: String, transport: &str) -> Answer {
    let dir = gw.state_dir.clone();
    let name = user.to_string();
    let verdict = smol::unblock(move || accounts::verify(&dir, &name, &password)).await;
    let shown = crate::proto::console::output::sanitize(user);
    match verdict {
        Ok(Verdict::Accepted { must_change }) => {
            gw.consoles.login_succeeded(user);
            log::info!(target: "console", "{shown} logged in on {transport}{}",
                if must_change { " with the factory password" } else { "" });
            Answer::LoggedIn {
                must_change,
                class: gw.config().system.login_class(user),
            }
        }
        Ok(verdict @ (Verdict::Refused | Verdict::Unknown)) => {
            let failures = gw.consoles.login_failed(user, std::time::Instant::now());
            let delay = FIRST_LOGIN_DELAY
                .saturating_mul(1 << failures.saturating_sub(1).min(16))
                .min(MAX_LOGIN_DELAY);
            // An unknown name is not logged: it may have been a password typed at
            // `login:`, and every login that may `show log` would read it.
            let who = if verdict == Verdict::Refused {
                shown.to_string()
            } else {
                "an unknown login".to_string()
            };
            log::warn!(target: "console", "login failed for {who} on {transport}: {failures} failure(s) in a row, next try in {}s",
                delay.as_secs());
            Answer::Refused { delay }
        }
        Err(e) => {
            log::error!(target: "console", "cannot check a login: {e}");
            Answer::Refused {
                delay: FIRST_LOGIN_DELAY,
            }
        }
    }
}

fn read_bounded(path: &str, state_dir: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read {path}: {e}");
    // The state directory holds the gateway's secrets (logins, token PIN, keys): the
    // console does not read it, whatever the path or link that leads there.
    let real = std::fs::canonicalize(path).map_err(cannot)?;
    if let Ok(state) = std::fs::canonicalize(state_dir) {
        if real.starts_with(&state) {
            return Err(format!(
                "cannot read {path}: the state directory is not loaded from"
            ));
        }
    }
    read_text_file(&real, path, MAX_PASTE)
}

/// The text of the regular file at `path` (`shown` as the console named it), at most
/// `limit` octets: opened without blocking on a FIFO or a device that never answers,
/// refused when it is not a regular file or is larger. For what a console names
/// (`load`, `certificate import`).
pub(super) fn read_text_file(path: &Path, shown: &str, limit: usize) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| format!("cannot read {shown}: {e}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(format!("cannot read {shown}: not a regular file"));
    }
    let mut text = String::new();
    file.take(limit as u64 + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() > limit {
        return Err(format!("{shown} is larger than {limit} octets"));
    }
    Ok(text)
}

/// Carries out one operational command; the text to show.
async fn run(gw: &Rc<Gateway>, user: &str, command: Command) -> Result<String, String> {
    let scheduler = &gw.net.queue.scheduler;
    match command {
        Command::ShowStatus => Ok(status(gw)),
        Command::ShowConnections => Ok(connections(gw)),
        Command::ShowQueue { summary: false } => Ok(crate::proto::queue::listing::list_text(
            &scheduler.list().await,
        )),
        Command::ShowQueue { summary: true } => Ok(qshape(&scheduler.list().await, unix_now())),
        Command::ShowStats => Ok(crate::proto::stats::text(&crate::proto::stats::report())),
        Command::ClearStats => {
            crate::proto::stats::clear(unix_now());
            log::info!(target: "console", "counters cleared by {user}");
            Ok("Counters cleared\n".into())
        }
        Command::ShowLog => {
            let mut out = crate::io::log::recent().join("\n");
            out.push('\n');
            Ok(out)
        }
        Command::ShowConfiguration => Ok(admin::show(&gw.config(), &gw.running_commit(), false)),
        Command::ShowCommits => Ok(admin::history_text(
            &gw.history().await,
            gw.pending_confirm(),
        )),
        Command::ShowToken => Ok(token(gw)),
        Command::TokenLogin | Command::TokenInitKey => token_command(gw, command).await,
        Command::ShowUsers => users(gw).await,
        Command::ShowCertificates | Command::CertificateShow => {
            certificate(gw, CertificateAction::Show).await
        }
        Command::CertificateGenerate { host } => {
            let host_name = host.unwrap_or_else(|| gw.config().system.host_name.clone());
            certificate(gw, CertificateAction::GenerateSelfSigned { host_name }).await
        }
        Command::CertificateImport { name, chain, key } => {
            certificate(
                gw,
                CertificateAction::Import {
                    name,
                    chain: PathBuf::from(chain),
                    key: PathBuf::from(key),
                },
            )
            .await
        }
        Command::CertificateRequest { name } => {
            certificate(gw, CertificateAction::Request { name }).await
        }
        Command::CertificateDelete { name } => {
            certificate(gw, CertificateAction::Delete { name }).await
        }
        Command::QueueFlush { domain } => {
            let n = match &domain {
                None => scheduler.flush(),
                Some(d) => scheduler.flush_domain(d),
            };
            Ok(format!("{n} message(s) flushed\n"))
        }
        Command::QueueHold(t) => scheduler.operate(QueueOp::Hold, &t),
        Command::QueueRelease(t) => scheduler.operate(QueueOp::Release, &t),
        Command::QueueDelete(t) => scheduler.operate(QueueOp::Delete, &t),
        Command::QueueRequeue(t) => scheduler.operate(QueueOp::Requeue, &t),
        Command::PasswordAdd {
            user: name,
            cram_md5,
            password,
        } => {
            let action = PasswordAction::Add {
                user: name,
                cram_md5,
                iterations: crate::io::users::DEFAULT_ITERATIONS,
            };
            password_command(gw, action, Some(password.expose().to_string())).await
        }
        Command::PasswordSet {
            user: name,
            password,
        } => {
            let action = PasswordAction::Set {
                user: name,
                iterations: crate::io::users::DEFAULT_ITERATIONS,
            };
            password_command(gw, action, Some(password.expose().to_string())).await
        }
        Command::PasswordDelete { user: name } => {
            password_command(gw, PasswordAction::Delete { user: name }, None).await
        }
        Command::PasswordShow { pattern } => {
            password_command(gw, PasswordAction::Show { pattern }, None).await
        }
        Command::LoginAdd {
            user: name,
            password,
        } => {
            let (dir, login, password) = (
                gw.state_dir.clone(),
                name.clone(),
                password.expose().to_string(),
            );
            smol::unblock(move || accounts::add(&dir, &login, &password))
                .await
                .map_err(|e| e.to_string())?;
            log::info!(target: "console", "{user} added the console login {name}");
            Ok(format!("Console login {name} added.\n"))
        }
        Command::LoginDelete { user: name } => {
            if name == user {
                return Err("you cannot delete your own login".into());
            }
            let (dir, login) = (gw.state_dir.clone(), name.clone());
            smol::unblock(move || accounts::delete(&dir, &login))
                .await
                .map_err(|e| e.to_string())?;
            log::info!(target: "console", "{user} deleted the console login {name}");
            // Its sessions end too: a deleted login keeps no way in.
            let open = gw.consoles.revoke(&name, &format!("deleted by {user}"));
            Ok(match open {
                0 => format!("Console login {name} deleted.\n"),
                1 => format!("Console login {name} deleted; its open session was logged out.\n"),
                n => format!(
                    "Console login {name} deleted; its {n} open sessions were logged out.\n"
                ),
            })
        }
        Command::TestSmtp { host, port } => super::probe::smtp(gw, &host, port).await,
        Command::TestDns { name, mx } => super::probe::dns(gw, &name, mx).await,
        Command::Explain {
            from_ip,
            mail,
            rcpt,
            tls,
            auth,
            outbound,
        } => {
            let running = gw.running();
            let explanation = crate::proto::policy::explain(
                &running.config,
                crate::proto::policy::ExplainInput {
                    from_ip,
                    tls,
                    auth_user: auth.as_deref(),
                    mail: &mail,
                    rcpt: &rcpt,
                    service: if outbound {
                        crate::proto::config::ServiceName::Outbound
                    } else {
                        crate::proto::config::ServiceName::Inbound
                    },
                    our_addresses: running.our_addresses(),
                },
            );
            Ok(explanation.steps.iter().map(|s| format!("{s}\n")).collect())
        }
        Command::Restart => {
            log::warn!(target: "console", "restart requested by {user}");
            super::request_restart(gw, format!("restart requested from the console by {user}"));
            Ok("Restarting.\n".into())
        }
        Command::SystemUpdate { file } => {
            log::warn!(target: "console", "firmware update from {file} requested by {user}");
            let token = gw.token();
            let text = smol::unblock(move || {
                crate::init::firmware::update_from_file(token.as_ref(), Path::new(&file))
            })
            .await?;
            log::warn!(target: "console", "{}", text.trim_end());
            Ok(text)
        }
        Command::SystemReboot | Command::SystemPowerOff => {
            let (kind, doing) = if command == Command::SystemReboot {
                (crate::init::Shutdown::Restart, "Rebooting")
            } else {
                (crate::init::Shutdown::PowerOff, "Powering off")
            };
            if crate::board::BOARD.kernel_package.is_none() {
                return Err(format!(
                    "board {} runs on a host's own system: restart or stop the host (restart restarts the gateway)",
                    crate::board::BOARD.name
                ));
            }
            log::warn!(target: "console", "{} requested by {user}", doing.to_lowercase());
            crate::init::request(kind).map_err(|e| format!("cannot ask init: {e}"))?;
            Ok(format!("{doing}.\n"))
        }
        Command::SystemWatchdogTest { hardware: true } => {
            let (Some(timeout), Some(device)) = (
                crate::io::notify::timeout(),
                crate::board::BOARD.watchdog_device,
            ) else {
                return Err(
                    "no hardware watchdog here: the board names none, or no PID 1 watches \
                     this gateway (set system watchdog timeout, read at boot)"
                        .into(),
                );
            };
            log::warn!(target: "console", "hardware watchdog test requested by {user}: PID 1 stops feeding {device}");
            crate::io::notify::tell(&[crate::proto::watchdog::Notice::StarveHardware]);
            Ok(format!(
                "PID 1 stops feeding {device}: the appliance should reset within {} s.\n",
                timeout.as_secs_f64().ceil()
            ))
        }
        Command::SystemWatchdogTest { hardware: false } => {
            let Some(timeout) = crate::io::notify::timeout() else {
                return Err(
                    "nothing watches this gateway's event loop (no NOTIFY_SOCKET and \
                            WATCHDOG_USEC from a supervisor): it would hang until killed"
                        .into(),
                );
            };
            log::warn!(target: "console", "watchdog test requested by {user}: the event loop stops now; \
                the supervisor should restart the gateway within {} s", timeout.as_secs_f64().ceil());
            // A moment for the answer to reach the console, then the executor thread
            // blocks for good: nothing it runs runs again, the beats included.
            gw.net
                .executor
                .spawn(async {
                    async_io::Timer::after(Duration::from_millis(300)).await;
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                })
                .detach();
            Ok(format!(
                "The event loop stops; the watchdog should restart the gateway within {} s.\n",
                timeout.as_secs_f64().ceil()
            ))
        }
        Command::FactoryReset => {
            log::warn!(target: "console", "factory reset requested by {user}");
            let (dir, token) = (gw.state_dir.clone(), gw.token());
            let keys = smol::unblock(move || super::factory_reset(&dir, &*token)).await?;
            log::warn!(target: "console", "factory reset: {keys} object(s) destroyed on the token");
            super::request_restart(gw, format!("factory reset from the console by {user}"));
            Ok(format!(
                "Configuration, users, console logins, next-hop secrets, certificates and \
                 the gateway's keys ({keys} on the token) erased; restarting.\n"
            ))
        }
    }
}

async fn password_command(
    gw: &Rc<Gateway>,
    action: PasswordAction,
    password: Option<String>,
) -> Result<String, String> {
    let dir = gw.state_dir.clone();
    smol::unblock(move || crate::io::users::password(&action, &dir, password.as_deref()))
        .await
        .map_err(|e| e.to_string())
}

/// A certificate command through the gateway, as `drawbridge certificate` does: a change
/// to the store is served at once.
async fn certificate(gw: &Rc<Gateway>, action: CertificateAction) -> Result<String, String> {
    let (request, pem) = smol::unblock(move || super::certificate::request_of(&action)).await?;
    crate::admin::certificate::on_gateway(gw, &request, &pem)
}

fn status(gw: &Rc<Gateway>) -> String {
    let now = unix_now();
    let report = crate::proto::stats::report();
    let commit = gw.running_commit();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Version:        drawbridge {}",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(out, "Host name:      {}", gw.config().system.host_name);
    let _ = writeln!(
        out,
        "Started:        {} (up {})",
        mailq_stamp(report.started),
        uptime(now.saturating_sub(report.started))
    );
    let _ = writeln!(out, "Running commit: {}", admin::describe(&commit));
    if let Some((deadline, back_to)) = gw.pending_confirm() {
        let _ = writeln!(
            out,
            "                rolls back to commit {back_to} at {} unless confirmed",
            mailq_stamp(deadline)
        );
    }
    let listening = gw.listening();
    let _ = writeln!(
        out,
        "Listening:      {}",
        if listening.is_empty() {
            "nowhere".to_string()
        } else {
            listening.join(", ")
        }
    );
    let counts = gw.net.queue.scheduler.counts();
    let _ = writeln!(
        out,
        "Queue:          {} message(s), {} held; {} whole in memory (active-limit {})",
        counts.total,
        counts.held,
        counts.in_picture,
        gw.config().queue.active_limit
    );
    let info = gw.token().info();
    let _ = writeln!(
        out,
        "Token:          {} ({}{})",
        info.label,
        info.model,
        if info.logged_in { ", logged in" } else { "" }
    );
    let _ = writeln!(
        out,
        "Console:        {} session(s)",
        gw.consoles.sessions().len()
    );
    let _ = match crate::io::notify::timeout() {
        Some(t) => writeln!(
            out,
            "Watchdog:       restarts the gateway after {} s without a beat",
            t.as_secs_f64()
        ),
        None => writeln!(out, "Watchdog:       none (no supervisor asks for beats)"),
    };
    out
}

fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// Most client addresses listed per service by `show connections`.
const MAX_LISTED_CLIENTS: usize = 20;

fn connections(gw: &Rc<Gateway>) -> String {
    let mut out = String::new();
    for (service, (total, mut per_ip)) in crate::proto::config::ServiceName::ALL
        .into_iter()
        .zip(gw.connections())
    {
        let _ = writeln!(out, "{service}: {total} open connection(s)");
        per_ip.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (ip, n) in per_ip.iter().take(MAX_LISTED_CLIENTS) {
            let _ = writeln!(out, "  {ip:<40} {n}");
        }
        if per_ip.len() > MAX_LISTED_CLIENTS {
            let _ = writeln!(
                out,
                "  … and {} more clients",
                per_ip.len() - MAX_LISTED_CLIENTS
            );
        }
    }
    let delivering = gw.net.queue.scheduler.counts().delivering;
    let _ = writeln!(out, "delivery: {delivering} message(s) being delivered");
    out
}

fn token(gw: &Rc<Gateway>) -> String {
    let token = gw.token();
    let info = token.info();
    let mut out = String::new();
    let settings = &gw.config().system.token;
    let _ = writeln!(
        out,
        "backend: {}",
        match settings.backend {
            crate::proto::config::TokenBackend::Soft => "soft",
            crate::proto::config::TokenBackend::Pkcs11 => "pkcs11",
        }
    );
    let _ = writeln!(
        out,
        "token: {} (manufacturer {}, model {}, serial {}){}",
        info.label,
        info.manufacturer,
        info.model,
        info.serial,
        if info.logged_in { ", logged in" } else { "" }
    );
    let _ = writeln!(out, "operations:");
    for route in token.operations() {
        let _ = writeln!(out, "  {}: {}", route.operation.name(), route.performer);
    }
    out
}

/// `token login` and `token init-key` against the running gateway's token, on the
/// blocking pool (PIN derivations, module calls, files).
async fn token_command(gw: &Rc<Gateway>, command: Command) -> Result<String, String> {
    let token = gw.token();
    let config = gw.config();
    let settings = config.system.token.clone();
    let host_name = config.system.host_name.clone();
    let state_dir = gw.state_dir.clone();
    let init = command == Command::TokenInitKey;
    smol::unblock(move || {
        if init {
            super::token::init_keys(&token, &host_name, &state_dir)
        } else {
            super::token::login_running(&token, &settings, &state_dir)
        }
    })
    .await
    .map_err(|e| e.to_string())
}

async fn users(gw: &Rc<Gateway>) -> Result<String, String> {
    let mut out = String::from("Console sessions:\n");
    for s in gw.consoles.sessions() {
        let _ = writeln!(
            out,
            "  {:<16} {:<24} since {}",
            s.user.as_deref().unwrap_or("(logging in)"),
            s.transport,
            mailq_stamp(s.since)
        );
    }
    let dir = gw.state_dir.clone();
    let logins = smol::unblock(move || accounts::names(&dir))
        .await
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out, "Console logins: {}", logins.join(", "));
    out.push_str("Mail users:\n");
    let listing = password_command(
        gw,
        PasswordAction::Show {
            pattern: "*".into(),
        },
        None,
    )
    .await?;
    for line in listing.lines() {
        let _ = writeln!(out, "  {line}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reads_regular_files_outside_the_state_directory_only() {
        let root = std::env::temp_dir().join(format!("drawbridge-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let state = root.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let conf = root.join("extra.conf");
        std::fs::write(&conf, "set system host-name file.example\n").unwrap();
        let read = |p: &Path| read_bounded(p.to_str().unwrap(), &state);
        assert_eq!(read(&conf).unwrap(), "set system host-name file.example\n");

        // The state directory's secrets, directly, by a relative path or through a link.
        let pin = state.join("token.pin");
        std::fs::write(&pin, "4711\n").unwrap();
        let link = root.join("innocent.conf");
        std::os::unix::fs::symlink(&pin, &link).unwrap();
        let sneaky = root.join("state/../state/token.pin");
        for path in [&pin, &link, &sneaky] {
            let e = read(path).unwrap_err();
            assert!(e.ends_with("the state directory is not loaded from"), "{e}");
        }

        // A FIFO nobody writes to would hold a thread for ever; a directory, a device.
        let fifo = root.join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_path(), root.as_path(), Path::new("/dev/zero")] {
            let e = read(path).unwrap_err();
            assert!(e.ends_with("not a regular file"), "{e}");
        }

        let big = root.join("big.conf");
        std::fs::write(&big, vec![b'#'; MAX_PASTE + 1]).unwrap();
        assert!(read(&big).unwrap_err().contains("is larger than"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
