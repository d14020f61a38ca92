//! The drawbridge binary: parses the command line and runs the gateway.

use std::process::ExitCode;

use drawbridge::cli::{self, Command};
use drawbridge::config;

fn main() -> ExitCode {
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
            return printed(drawbridge::users::password(&action, &state_dir, password));
        }
        Ok(Command::Certificate {
            action,
            state_dir,
            config,
        }) => {
            let config = match load_config(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            return printed(drawbridge::tls::admin::certificate(
                &action,
                &state_dir,
                &config.system.token,
            ));
        }
        Ok(Command::Token {
            action,
            state_dir,
            config,
        }) => {
            let config = match load_config(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            return printed(drawbridge::token::admin::token(action, &config, &state_dir));
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
    let config = match load_config(opts.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
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

/// The configuration in `path`, or the host board's default; an unreadable or invalid
/// file is reported and gives exit code 2.
fn load_config(path: Option<&std::path::Path>) -> Result<config::Config, ExitCode> {
    let Some(path) = path else {
        return Ok(config::host_default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("drawbridge: cannot read {}: {e}", path.display());
        ExitCode::from(2)
    })?;
    config::text::parse(&text).map_err(|e| {
        eprintln!("drawbridge: {}: {e}", path.display());
        ExitCode::from(2)
    })
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
    let config = match load_config(o.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
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
