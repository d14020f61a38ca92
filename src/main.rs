//! The drawbridge binary: parses the command line and runs the gateway.

use std::process::ExitCode;

use drawbridge::cli::{self, Command};
use drawbridge::config;

fn main() -> ExitCode {
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
        Ok(Command::Explain(options)) => return explain(&options),
        Ok(Command::Password { action, state_dir }) => {
            let needs_password = matches!(
                action,
                drawbridge::users::PasswordAction::Add { .. }
                    | drawbridge::users::PasswordAction::Set { .. }
            );
            let mut line = String::new();
            if needs_password && std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("drawbridge: cannot read the password from standard input");
                return ExitCode::FAILURE;
            }
            let password = line.trim_end_matches(['\r', '\n']);
            let password = (needs_password && !password.is_empty()).then_some(password);
            return report(
                drawbridge::users::password(&action, &state_dir, password)
                    .map_err(|e| e.to_string()),
            );
        }
        Ok(Command::Certificate { action, state_dir }) => {
            return report(
                drawbridge::tls::admin::certificate(&action, &state_dir).map_err(|e| e.to_string()),
            );
        }
        Ok(Command::Image(action)) => return image(&action),
        Ok(Command::SystemUpdate { file, state_dir }) => return system_update(&file, &state_dir),
        Ok(Command::Version) => {
            println!("drawbridge {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("drawbridge: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match &opts.config {
        None => drawbridge::board::default_config(),
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("drawbridge: cannot read {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            match config::text::parse(&text) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("drawbridge: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
    };
    drawbridge::log::init(&config.system.host_name);
    if opts.console {
        log::info!(target: "main", "the serial console is not available yet; running without it");
    }
    match drawbridge::gateway::run(config, &opts.state_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!(target: "main", "{e}");
            eprintln!("drawbridge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a queue command against the gateway on `state_dir`.
fn queue(request: &drawbridge::control::Request, state_dir: &std::path::Path) -> ExitCode {
    match drawbridge::control::request(state_dir, request) {
        Ok(Ok(body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok(Err(reason)) => {
            eprintln!("drawbridge: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "drawbridge: no gateway answers on {}: {e}",
                drawbridge::control::socket_path(state_dir).display()
            );
            ExitCode::from(2)
        }
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
    let ours = drawbridge::net::local::our_addresses(&config);
    let explanation = drawbridge::policy::explain(
        &config,
        drawbridge::policy::ExplainInput {
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

/// Prints a command's text, or its error.
fn report(result: Result<String, String>) -> ExitCode {
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

/// `drawbridge image …`: the build machine's side of firmware images.
fn image(action: &cli::ImageAction) -> ExitCode {
    use drawbridge::image::{self as img, TransientToken};
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let token_for = |key: &std::path::Path| {
        TransientToken::with_key(&read(key)?).map_err(|e| format!("{}: {e}", key.display()))
    };
    report(match action {
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
    report((|| {
        let dir = drawbridge::init::firmware::slots_dir()
            .ok_or_else(|| drawbridge::init::firmware::UpdateError::NoSlots.to_string())?;
        let bytes = drawbridge::init::firmware::read_image(file)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let token =
            drawbridge::tls::open_soft_token(state_dir, drawbridge::tls::setup::TOKEN_LABEL)
                .map_err(|e| e.to_string())?;
        let slot = drawbridge::init::firmware::update(
            token.as_ref(),
            &drawbridge::init::firmware::trust(),
            &bytes,
            dir,
        )
        .map_err(|e| e.to_string())?;
        Ok(format!(
            "{} verified and written to slot {slot}; it starts at the next restart\n",
            file.display()
        ))
    })())
}
