//! The drawbridge binary: parses the command line and runs the gateway.

use std::process::ExitCode;

use drawbridge::cli::{self, Command};
use drawbridge::proto::config;

fn main() -> ExitCode {
    // Everything the gateway creates (spool, keys, users, configuration slots) is its
    // own: files 0600, folders 0700.
    // SAFETY: umask(2) only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    if drawbridge::init::should_run() {
        drawbridge::init::main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cli::parse(&args) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Queue { request, state_dir }) => return queue(&request, &state_dir),
        Ok(Command::Config(command)) => return config_command(command),
        Ok(Command::Explain(options)) => return explain(&options),
        Ok(Command::Password { action, state_dir }) => {
            let needs_password = matches!(
                action,
                drawbridge::io::users::PasswordAction::Add { .. }
                    | drawbridge::io::users::PasswordAction::Set { .. }
            );
            let mut line = String::new();
            if needs_password && std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("drawbridge: cannot read the password from standard input");
                return ExitCode::FAILURE;
            }
            let password = line.trim_end_matches(['\r', '\n']);
            let password = (needs_password && !password.is_empty()).then_some(password);
            return printed(drawbridge::io::users::password(
                &action, &state_dir, password,
            ));
        }
        Ok(Command::Secret {
            action,
            state_dir,
            config,
        }) => return secret_command(&action, &state_dir, config.as_deref()),
        Ok(Command::Certificate {
            action,
            state_dir,
            config,
        }) => {
            return certificate_command(&action, &state_dir, config.as_deref());
        }
        Ok(Command::Token {
            action,
            state_dir,
            config,
        }) => {
            let file = match config.as_deref().map(read_config).transpose() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("drawbridge: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut config = file
                .clone()
                .unwrap_or_else(drawbridge::board::default_config);
            config.system.token = drawbridge::gateway::token_settings(&state_dir, file.as_ref());
            return printed(drawbridge::admin::token::token(action, &config, &state_dir));
        }
        Ok(Command::Image(action)) => return image(&action),
        Ok(Command::SystemUpdate { file, state_dir }) => return system_update(&file, &state_dir),
        Ok(Command::Cli { state_dir, login }) => {
            return match drawbridge::admin::cli::run(&state_dir, login) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("drawbridge: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Ok(Command::Stats { state_dir, json }) => {
            return queue(&drawbridge::control::Request::Stats { json }, &state_dir);
        }
        Ok(Command::Version) => {
            println!("drawbridge {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("drawbridge: {e}");
            return ExitCode::from(2);
        }
    };
    let file = match &opts.config {
        None => None,
        Some(path) => match read_config(path) {
            Ok(c) => Some((path.clone(), c)),
            Err(e) => {
                eprintln!("drawbridge: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let host_name = file.as_ref().map_or_else(
        || drawbridge::board::default_config().system.host_name,
        |(_, c)| c.system.host_name.clone(),
    );
    drawbridge::io::log::init(&host_name);
    let start = drawbridge::gateway::Start {
        state_dir: opts.state_dir.clone(),
        file,
        factory: drawbridge::board::default_config(),
        console: opts.console.clone(),
    };
    let result = drawbridge::daemon::run(start);
    drawbridge::io::tty::restore();
    match result {
        Ok(_) if drawbridge::admin::restart_requested() => restart(&args),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!(target: "main", "{e}");
            eprintln!("drawbridge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `restart` and `factory-reset` from the console: the same program again, in this
/// process (as PID 1 too), from the stored configuration: without `--config FILE`,
/// which would otherwise be loaded over what was committed since.
fn restart(args: &[String]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let mut again = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--config" {
            it.next();
            continue;
        }
        again.push(arg.clone());
    }
    if again.is_empty() {
        again.push("run".into());
    }
    let program = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let e = std::process::Command::new(program).args(&again).exec();
    eprintln!("drawbridge: cannot restart: {e}");
    ExitCode::FAILURE
}

/// The token settings for a command on `state_dir`: those of `--config FILE` when
/// given, else the stored configuration's (see `gateway::token_settings`).
fn token_settings(
    file: Option<&std::path::Path>,
    state_dir: &std::path::Path,
) -> Result<config::TokenSettings, ExitCode> {
    let file = match file.map(read_config).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("drawbridge: {e}");
            return Err(ExitCode::from(2));
        }
    };
    Ok(drawbridge::gateway::token_settings(
        state_dir,
        file.as_ref(),
    ))
}

/// `drawbridge certificate …`: through the running gateway, which serves a change at
/// once, else on the state directory.
fn certificate_command(
    action: &drawbridge::admin::certificate::CertificateAction,
    state_dir: &std::path::Path,
    config: Option<&std::path::Path>,
) -> ExitCode {
    let (request, pem) = match drawbridge::admin::certificate::request_of(action) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("drawbridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let through_gateway = drawbridge::control::request(
        state_dir,
        &drawbridge::control::Request::Certificate(request.clone()),
        &pem,
    );
    if let Ok(answer) = through_gateway {
        return printed(answer);
    }
    let settings = match token_settings(config, state_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    printed(drawbridge::admin::certificate::offline(
        &request, &pem, state_dir, &settings,
    ))
}

/// `drawbridge secret …`: on the state directory's store, with the key from the token.
fn secret_command(
    action: &drawbridge::io::secrets::SecretAction,
    state_dir: &std::path::Path,
    config: Option<&std::path::Path>,
) -> ExitCode {
    let mut line = String::new();
    if matches!(action, drawbridge::io::secrets::SecretAction::Set { .. })
        && std::io::stdin().read_line(&mut line).is_err()
    {
        eprintln!("drawbridge: cannot read the password from standard input");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    let password = (!password.is_empty()).then_some(password);
    let settings = match token_settings(config, state_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let key = drawbridge::io::tls::open_token(&settings, state_dir)
        .map_err(|e| e.to_string())
        .and_then(|token| {
            drawbridge::io::secrets::SealKey::derive(token.as_ref()).map_err(|e| e.to_string())
        });
    match key {
        Ok(key) => printed(drawbridge::io::secrets::secret(
            action, state_dir, &key, password,
        )),
        Err(e) => {
            eprintln!("drawbridge: cannot open the token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command's text, or its error and exit code 1.
fn printed<E: std::fmt::Display>(result: Result<String, E>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("drawbridge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A configuration file of `set …` lines, parsed.
fn read_config(path: &std::path::Path) -> Result<config::Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    config::text::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `drawbridge config …`: through the running gateway when one answers, else on the
/// state directory itself.
fn config_command(command: cli::ConfigCommand) -> ExitCode {
    let (request, file, no_apply, state_dir) = match command {
        cli::ConfigCommand::Reference => {
            print!("{}", config::reference::markdown());
            return ExitCode::SUCCESS;
        }
        cli::ConfigCommand::Check(path) => {
            let config = match read_config(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("drawbridge: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let problems = config::check::check(&config);
            if problems.is_empty() {
                println!("configuration check succeeds");
                return ExitCode::SUCCESS;
            }
            for p in &problems {
                eprintln!("drawbridge: {}: {p}", path.display());
            }
            eprintln!(
                "drawbridge: {} problem(s); nothing would be committed",
                problems.len()
            );
            return ExitCode::FAILURE;
        }
        cli::ConfigCommand::Request {
            request,
            file,
            no_apply,
            state_dir,
        } => (request, file, no_apply, state_dir),
    };
    let body = match &file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("drawbridge: cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => String::new(),
    };
    let outcome = if no_apply {
        None
    } else {
        let r = drawbridge::control::Request::Config(request.clone());
        drawbridge::control::request(&state_dir, &r, &body).ok()
    };
    let result = match outcome {
        Some(answer) => answer,
        // No gateway answers (or --no-apply): work on the slots themselves.
        None => offline(&request, &body, &state_dir, no_apply),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("drawbridge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A `config` request on the slots of a state directory, without a gateway.
fn offline(
    request: &drawbridge::io::config::admin::ConfigRequest,
    body: &str,
    state_dir: &std::path::Path,
    no_apply: bool,
) -> Result<String, String> {
    use drawbridge::io::clock::unix_now;
    use drawbridge::io::config::admin::{self, ConfigRequest};
    use drawbridge::io::config::engine::CommitRequest;
    // Reading and committing take the store's own lock; without --no-apply the gateway
    // must not be running (it would not see the commit until SIGHUP).
    let _lock = if no_apply {
        None
    } else {
        Some(
            drawbridge::gateway::lock_state_dir(state_dir)
                .map_err(|e| format!("{e}; its control socket does not answer either"))?,
        )
    };
    let opened =
        drawbridge::gateway::open_engine(state_dir, None, drawbridge::board::default_config())?;
    let mut engine = opened.engine;
    for line in opened.log {
        eprintln!("drawbridge: {line}");
    }
    // The gateway is stopped: a `commit confirmed` that ran out meanwhile rolls back
    // first, as its next start would, before anything reads or commits.
    if !no_apply {
        match engine.expire_confirm(unix_now()) {
            Ok(Some(seq)) => eprintln!(
                "drawbridge: commit confirmed ran out while the gateway was stopped: rolled back as commit {seq}"
            ),
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "commit confirmed ran out and could not roll back: {e}"
                ));
            }
        }
    }
    let user = "cli".to_string();
    let note = if no_apply {
        "; send the gateway SIGHUP (or restart it) to apply it"
    } else {
        ""
    };
    let done = |seq: u64, what: &str| format!("commit {seq}: {what}{note}\n");
    match request {
        ConfigRequest::Show { json } => Ok(admin::show(engine.running(), engine.commit(), *json)),
        ConfigRequest::History => Ok(admin::history_text(
            &engine.history(),
            engine.pending_confirm(),
        )),
        ConfigRequest::Commit => match engine
            .confirm(&user, unix_now())
            .map_err(|e| e.to_string())?
        {
            Some(seq) => Ok(done(seq, "commit confirmed")),
            None => Ok("nothing to confirm: no commit confirmed is pending\n".into()),
        },
        ConfigRequest::Rollback(n) => {
            let candidate = engine.rollback_candidate(*n).map_err(|e| e.to_string())?;
            let r = CommitRequest {
                user,
                comment: format!("rollback {n}"),
                confirm_minutes: None,
            };
            let seq = engine
                .commit_candidate(&candidate, &r, unix_now())
                .map_err(|e| e.to_string())?;
            Ok(done(seq, &format!("rolled back {n}")))
        }
        ConfigRequest::Load {
            replace,
            confirm,
            comment,
        } => {
            let mut config = engine.running().clone();
            drawbridge::proto::config::text::load_into(&mut config, body, *replace)?;
            let r = CommitRequest {
                user,
                comment: comment.clone(),
                confirm_minutes: *confirm,
            };
            let seq = engine
                .load(config, &r, unix_now())
                .map_err(|e| e.to_string())?;
            Ok(done(seq, "stored"))
        }
    }
}

/// Runs a queue command against the gateway on `state_dir`.
fn queue(request: &drawbridge::control::Request, state_dir: &std::path::Path) -> ExitCode {
    match drawbridge::control::request(state_dir, request, "") {
        Ok(Ok(body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok(Err(reason)) => {
            eprintln!("drawbridge: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => match drawbridge::control::offline(state_dir, request) {
            // A stopped gateway's queue, read as it lies.
            Ok(body) => {
                print!("{body}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!(
                    "drawbridge: no gateway answers on {}: {e}; {why}",
                    drawbridge::gateway::socket_path(state_dir).display()
                );
                ExitCode::from(2)
            }
        },
    }
}

/// Prints how the policy decides one recipient, step by step.
fn explain(o: &cli::ExplainOptions) -> ExitCode {
    let config = match &o.config {
        None => drawbridge::board::default_config(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| config::text::parse(&t).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("drawbridge: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let ours = drawbridge::io::net::local::our_addresses(&config);
    let explanation = drawbridge::proto::policy::explain(
        &config,
        drawbridge::proto::policy::ExplainInput {
            from_ip: o.from_ip,
            tls: o.tls,
            auth_user: o.auth.as_deref(),
            mail: &o.mail,
            rcpt: &o.rcpt,
            service: if o.outbound {
                config::ServiceName::Outbound
            } else {
                config::ServiceName::Inbound
            },
            our_addresses: &ours,
        },
    );
    // The last step states the decision and its reply.
    for step in &explanation.steps {
        println!("{step}");
    }
    ExitCode::SUCCESS
}

/// `drawbridge image …`: the build machine's side of firmware images.
fn image(action: &cli::ImageAction) -> ExitCode {
    use drawbridge::image::{self as img, TransientToken};
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let token_for = |key: &std::path::Path| {
        TransientToken::with_key(&read(key)?).map_err(|e| format!("{}: {e}", key.display()))
    };
    printed(match action {
        cli::ImageAction::Keygen { out } => img::generate_key()
            .map_err(|e| e.to_string())
            .and_then(|key| {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(out)
                    .and_then(|mut f| f.write_all(&key))
                    .map_err(|e| format!("{}: {e}", out.display()))
            })
            .map(|()| format!("wrote a new signing key to {}\n", out.display())),
        cli::ImageAction::PublicKey { key } => token_for(key).and_then(|(t, key)| {
            img::raw_public_key(&t.token, key)
                .map(|k| format!("{}\n", img::hex(&k)))
                .map_err(|e| e.to_string())
        }),
        cli::ImageAction::Seal { key, file } => token_for(key).and_then(|(t, key)| {
            let mut bytes = read(file)?;
            img::seal(&t.token, key, &mut bytes).map_err(|e| format!("{}: {e}", file.display()))?;
            std::fs::write(file, &bytes).map_err(|e| format!("{}: {e}", file.display()))?;
            Ok(format!("sealed {}\n", file.display()))
        }),
        cli::ImageAction::Verify {
            file,
            board,
            public_keys,
        } => (|| {
            let mut keys = Vec::new();
            for p in public_keys {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                keys.push(img::parse_hex_key(&text).ok_or_else(|| {
                    format!("{}: not a hexadecimal Ed25519 public key", p.display())
                })?);
            }
            if public_keys.is_empty() {
                keys.extend_from_slice(drawbridge::board::TRUSTED_IMAGE_KEYS);
            }
            let trust = img::Trust {
                keys: &keys,
                compatible: board
                    .as_deref()
                    .unwrap_or(drawbridge::board::BOARD.compatible),
            };
            let bytes = read(file)?;
            let t = TransientToken::new().map_err(|e| e.to_string())?;
            img::verify(&t.token, &trust, &bytes)
                .map(|image| img::describe(&image, file))
                .map_err(|e| format!("{}: {e}", file.display()))
        })(),
    })
}

/// `drawbridge system update FILE`: verify through the token, then write the inactive slot.
fn system_update(file: &std::path::Path, state_dir: &std::path::Path) -> ExitCode {
    printed((|| -> Result<String, String> {
        let token = drawbridge::io::tls::open_soft_token(
            state_dir,
            drawbridge::io::tls::setup::TOKEN_LABEL,
        )
        .map_err(|e| e.to_string())?;
        drawbridge::init::firmware::update_from_file(token.as_ref(), file)
    })())
}
