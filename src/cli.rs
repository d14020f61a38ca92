//! The command line (SPEC §12): `drawbridge`, `drawbridge run …`, `--help`.

use std::path::PathBuf;

use crate::admin::certificate::CertificateAction;
use crate::admin::token::TokenAction;
use crate::control::Request;
use crate::io::secrets::SecretAction;
use crate::io::tty::ConsoleDevice;
use crate::io::users::{DEFAULT_ITERATIONS, PasswordAction};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the gateway.
    Run(RunOptions),
    /// Show, step by step, how the policy decides one recipient.
    Explain(ExplainOptions),
    /// Work on the local user database of a state directory.
    Password {
        action: PasswordAction,
        state_dir: PathBuf,
    },
    /// Work on the certificates in a state directory's store.
    Certificate {
        action: CertificateAction,
        state_dir: PathBuf,
        /// The configuration naming the token; `None` means the host board's default.
        config: Option<PathBuf>,
    },
    /// Look at the crypto token, check its PIN, make the keys the gateway needs.
    Token {
        action: TokenAction,
        state_dir: PathBuf,
        /// The configuration naming the token; `None` means the host board's default.
        config: Option<PathBuf>,
    },
    /// Work on the passwords routes log in to their next hops with.
    Secret {
        action: SecretAction,
        state_dir: PathBuf,
        /// The configuration naming the token; `None` means the stored one's.
        config: Option<PathBuf>,
    },
    /// Ask the gateway running on a state directory to do a queue operation.
    Queue {
        request: Request,
        state_dir: PathBuf,
    },
    /// Work on the stored configuration: through the running gateway, or on a stopped
    /// one's state directory.
    Config(ConfigCommand),
    /// Build-machine work on firmware images.
    Image(ImageAction),
    /// `system update FILE`: verify a firmware image and write it to the inactive slot.
    SystemUpdate {
        file: PathBuf,
        state_dir: PathBuf,
    },
    /// Attach this terminal to the running gateway's console.
    Cli {
        state_dir: PathBuf,
        /// Log in even as root.
        login: bool,
    },
    /// Print the running gateway's counters.
    Stats {
        state_dir: PathBuf,
        json: bool,
    },
    Help,
    Version,
}

/// What `drawbridge image …` does (used by `cargo xtask build-image` and `verify-image`).
#[derive(Debug, PartialEq, Eq)]
pub enum ImageAction {
    /// Write a new Ed25519 signing key (PKCS#8) to a file.
    Keygen { out: PathBuf },
    /// Print a signing key's public key in hexadecimal.
    PublicKey { key: PathBuf },
    /// Fill in an assembled image's section hashes and sign it, in place.
    Seal { key: PathBuf, file: PathBuf },
    /// Check signature, section hashes and board; `public_keys` are hex key files, none
    /// meaning this build's trusted keys; `board` defaults to this build's board.
    Verify {
        file: PathBuf,
        board: Option<String>,
        public_keys: Vec<PathBuf>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Initial configuration as set-lines; `None` means the host board's default.
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Where the console is; `None` with `--no-console`.
    pub console: Option<ConsoleDevice>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            config: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            // The host board's console (board/host.toml).
            console: Some(ConsoleDevice::Stdio),
        }
    }
}

/// `drawbridge explain …`.
#[derive(Debug, PartialEq, Eq)]
pub struct ExplainOptions {
    /// The configuration to explain; `None` means the host board's default.
    pub config: Option<PathBuf>,
    pub from_ip: std::net::IpAddr,
    pub tls: bool,
    pub auth: Option<String>,
    pub mail: String,
    pub rcpt: String,
    pub outbound: bool,
}

/// `drawbridge config …`.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigCommand {
    /// `show`, `load`, `commit`, `rollback`, `history`: a request for the gateway.
    Request {
        request: crate::io::config::admin::ConfigRequest,
        /// For `load`: the file whose text is loaded.
        file: Option<PathBuf>,
        /// `load --no-apply`: commit to the slots only; SIGHUP or a restart applies it.
        no_apply: bool,
        state_dir: PathBuf,
    },
    /// Parse a file and run the commit checks on it.
    Check(PathBuf),
    /// Print the configuration reference.
    Reference,
}

/// The board keeps its state here (`storage.state-dir` of board/<name>.toml).
pub const DEFAULT_STATE_DIR: &str = crate::board::BOARD.state_dir;

pub const HELP: &str = "\
drawbridge: a hardened SMTP relay for a firewall or DMZ

USAGE:
    drawbridge                  run the gateway with the host board's built-in
                                default configuration, state in ./var
    drawbridge run [OPTIONS]    run the gateway
    drawbridge queue list [--json]        list the queue
    drawbridge queue show ID              one message: envelope, status, content
    drawbridge queue summary              open recipients by domain and age
                                          (as Postfix's qshape)
    drawbridge queue flush [DOMAIN]       try deferred messages now (all, or
                                          those with recipients in DOMAIN)
    drawbridge queue hold ID|all          keep messages from delivery (kept
                                          across restarts)
    drawbridge queue release ID|all       release held messages
    drawbridge queue requeue ID|all       release and route again, try at once
    drawbridge queue delete ID|all        remove messages, telling no one
                                          (queue commands take --state-dir DIR;
                                          list, show and summary also read a
                                          stopped gateway's queue)
    drawbridge explain --from-ip A [--tls] [--auth USER] --mail X --rcpt Y
                       [--service inbound|outbound] [--config FILE]
                                          show step by step how a recipient
                                          would be decided, and the reply
    drawbridge password add --user NAME [--cram-md5] [--iterations N]
                                          add a user; the password is read from
                                          standard input (one line)
    drawbridge password set --user NAME   change a password (from standard input)
    drawbridge password delete --user NAME
    drawbridge password show [--user PATTERN]
                                          names and mechanisms, never secrets
                                          (password commands take --state-dir DIR)
    drawbridge secret set NAME            the password a route logs in to its
                                          next hop with (set route … auth user
                                          NAME), read from standard input (one
                                          line); sealed by a key on the token
    drawbridge secret delete NAME
    drawbridge secret show                the names that have a password, never
                                          the passwords (secret commands take
                                          --state-dir DIR and --config FILE; a
                                          running gateway uses a change from its
                                          next connection on)
    drawbridge certificate show           the certificates in the store
    drawbridge certificate import NAME --chain FILE --key FILE
                                          import a PEM chain (leaf first) and
                                          its key; the key goes into the token
    drawbridge certificate request NAME   print a CSR for a stored key
    drawbridge certificate delete NAME    remove a certificate and its key
    drawbridge certificate generate-self-signed HOST
                                          first-boot certificate, by hand
                                          (certificate commands take
                                          --state-dir DIR and --config FILE;
                                          a running gateway serves a change at
                                          once)
    drawbridge config show [--json]       the running configuration as `set` lines
    drawbridge config check FILE          parse FILE and run the commit checks
    drawbridge config load merge|replace FILE [--confirm MINUTES]
                       [--comment TEXT] [--no-apply]
                                          commit FILE merged onto the running
                                          configuration, or replacing it; with
                                          --confirm it rolls back unless
                                          confirmed; with --no-apply it is only
                                          stored, for SIGHUP or the next start
    drawbridge config commit              confirm a pending commit confirmed
    drawbridge config rollback N          commit the configuration of N commits ago
    drawbridge config history             the commits kept, for rollback
    drawbridge config reference           every statement, its value and default
                                          (config commands take --state-dir DIR;
                                          a running gateway applies commits live)
    drawbridge token show                 the token: module, slot, label,
                                          mechanisms, and which operations run
                                          in hardware and which in software
    drawbridge token login                log in with the PIN file's PIN and
                                          list the gateway's keys
    drawbridge token init-key             make the keys the gateway needs: the
                                          TLS key (tls-0-self-signed, with its
                                          self-signed certificate) and the
                                          configuration HMAC key (config-hmac)
                                          (token commands take --state-dir DIR
                                          and --config FILE, whose `set system
                                          token …` lines name the token; the
                                          stored configuration names it otherwise)
    drawbridge system update FILE         verify a firmware image (signature,
                                          section hashes, board) and write it
                                          to the inactive slot; it is tried at
                                          the next restart and kept once it has
                                          booted well (takes --state-dir DIR)
    drawbridge image keygen FILE          build machine: a new Ed25519 image
                                          signing key (PKCS#8)
    drawbridge image public-key KEY       its public key, in hexadecimal
    drawbridge image seal --key KEY FILE  hash the sections of an assembled
                                          image and sign it, in place
    drawbridge image verify FILE [--board COMPATIBLE] [--public-key FILE]...
                                          check an image as `system update`
                                          would (default: this build's board
                                          and keys)
    drawbridge cli [--login]              the console of the running gateway on
                                          this terminal; root on the box needs
                                          no login unless --login (takes
                                          --state-dir DIR)
    drawbridge stats [--json]             the running gateway's counters (takes
                                          --state-dir DIR)
    drawbridge --help           show this text
    drawbridge --version        show the version

RUN OPTIONS:
    --config FILE      load FILE (`set …` lines) as a new commit at start; without
                       it the stored configuration runs, or on a first start the
                       host board's built-in default
    --state-dir DIR    where the spool, configuration slots and keys live
                       (default: ./var)
    --console DEVICE[:SPEED]
                       the console: stdin (the default) or a serial device
                       such as /dev/ttyS0:115200, set raw at SPEED (115200
                       unless given)
    --no-console       run without a console

SERVICES:
    inbound   takes internet mail for our domains and relays it to the
              internal servers named by `set route … relay …`
    outbound  takes mail from internal networks and delivers it out

A message is answered 250 only once it is on stable storage; a gateway that
is killed and restarted delivers everything it accepted.

Logs go to standard error, one line per event; RUST_LOG=debug shows more.
";

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter().map(String::as_str).peekable();
    match it.peek() {
        None => return Ok(Command::Run(RunOptions::default())),
        Some(&"-h" | &"--help" | &"help") => return Ok(Command::Help),
        Some(&"-V" | &"--version") => return Ok(Command::Version),
        Some(&"run") => {
            it.next();
        }
        Some(&"queue") => return parse_queue(&args[1..]),
        Some(&"certificate") => return parse_certificate(&args[1..]),
        Some(&"token") => return parse_token(&args[1..]),
        Some(&"secret") => return parse_secret(&args[1..]),
        Some(&"password") => return parse_password(&args[1..]),
        Some(&"explain") => return parse_explain(&args[1..]),
        Some(&"config") => return parse_config(&args[1..]).map(Command::Config),
        Some(&"image") => return parse_image(&args[1..]),
        Some(&"system") => return parse_system(&args[1..]),
        Some(&"cli") => return parse_cli(&args[1..]),
        Some(&"stats") => return parse_stats(&args[1..]),
        Some(a) if a.starts_with('-') => {}
        Some(other) => return Err(format!("unknown command '{other}' (try --help)")),
    }
    let mut opts = RunOptions::default();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs a value (try --help)"))
        };
        match arg {
            "--config" => opts.config = Some(value("--config")?),
            "--state-dir" => opts.state_dir = value("--state-dir")?,
            "--no-console" => opts.console = None,
            "--console" => {
                let device = it.next().ok_or("--console needs a value (try --help)")?;
                opts.console = Some(ConsoleDevice::parse(device)?);
            }
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown option '{other}' (try --help)")),
        }
    }
    Ok(Command::Run(opts))
}

/// A subcommand's arguments, split by what it takes: `--state-dir DIR`, the options
/// among `valued` with their values, the flags among `flags`, and (where it takes any)
/// its words. Anything else that starts with `-` is an unknown option.
struct Split {
    state_dir: PathBuf,
    values: Vec<(&'static str, String)>,
    flags: Vec<&'static str>,
    words: Vec<String>,
}

impl Split {
    fn new(
        args: &[String],
        valued: &[&'static str],
        flags: &[&'static str],
        takes_words: bool,
    ) -> Result<Split, String> {
        let mut split = Split {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            values: Vec::new(),
            flags: Vec::new(),
            words: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{arg} needs a value (try --help)"))
            };
            if arg == "--state-dir" {
                split.state_dir = PathBuf::from(value()?);
            } else if let Some(name) = valued.iter().find(|v| **v == arg) {
                split.values.push((name, value()?));
            } else if let Some(flag) = flags.iter().find(|f| **f == arg) {
                split.flags.push(flag);
            } else if takes_words && !arg.starts_with('-') {
                split.words.push(arg.clone());
            } else {
                return Err(format!("unknown option '{arg}' (try --help)"));
            }
        }
        Ok(split)
    }

    /// The last value given for `name`.
    fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The last value given for `name`, as a path.
    fn path(&self, name: &str) -> Option<PathBuf> {
        self.value(name).map(PathBuf::from)
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }
}

/// `cli [--login] [--state-dir DIR]`.
fn parse_cli(args: &[String]) -> Result<Command, String> {
    let split = Split::new(args, &[], &["--login"], false)?;
    Ok(Command::Cli {
        login: split.flag("--login"),
        state_dir: split.state_dir,
    })
}

/// `stats [--json] [--state-dir DIR]`.
fn parse_stats(args: &[String]) -> Result<Command, String> {
    let split = Split::new(args, &[], &["--json"], false)?;
    Ok(Command::Stats {
        json: split.flag("--json"),
        state_dir: split.state_dir,
    })
}

/// `config show|check|load|commit|rollback|history|reference …`.
fn parse_config(args: &[String]) -> Result<ConfigCommand, String> {
    use crate::io::config::admin::ConfigRequest;
    let split = Split::new(
        args,
        &["--confirm", "--comment"],
        &["--json", "--no-apply"],
        true,
    )?;
    let (json, no_apply) = (split.flag("--json"), split.flag("--no-apply"));
    let confirm = split
        .value("--confirm")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| format!("--confirm needs minutes, not '{v}'"))
        })
        .transpose()?;
    let comment = split.value("--comment").map(str::to_string);
    let state_dir = split.state_dir.clone();
    let words: Vec<&str> = split.words.iter().map(String::as_str).collect();
    let request = |request, file: Option<&str>| ConfigCommand::Request {
        request,
        file: file.map(PathBuf::from),
        no_apply,
        state_dir: state_dir.clone(),
    };
    let only_load = |what: &str| format!("{what} goes with 'config load' only");
    if !matches!(words.first(), Some(&"load"))
        && (no_apply || confirm.is_some() || comment.is_some())
    {
        return Err(only_load("--no-apply, --confirm and --comment"));
    }
    if json && words != ["show"] {
        return Err("--json goes with 'config show' only".into());
    }
    Ok(match words.as_slice() {
        ["show"] => request(ConfigRequest::Show { json }, None),
        ["check", file] => ConfigCommand::Check(PathBuf::from(file)),
        ["reference"] => ConfigCommand::Reference,
        ["load", how @ ("merge" | "replace"), file] => request(
            ConfigRequest::Load {
                replace: *how == "replace",
                confirm,
                comment: comment.unwrap_or_else(|| format!("loaded from {file}")),
            },
            Some(file),
        ),
        ["load", ..] => return Err("usage: config load merge|replace FILE".into()),
        rest => request(ConfigRequest::parse(rest)?, None),
    })
}

/// `explain --from-ip A [--tls] [--auth USER] --mail X --rcpt Y [--service S] [--config F]`.
fn parse_explain(args: &[String]) -> Result<Command, String> {
    let (mut config, mut from_ip, mut tls, mut auth, mut mail, mut rcpt, mut outbound) =
        (None, None, false, None, None, None, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value (try --help)"))
        };
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(value("--config")?)),
            "--from-ip" => {
                let v = value("--from-ip")?;
                from_ip = Some(
                    v.parse()
                        .map_err(|_| format!("'{v}' is not an IP address"))?,
                );
            }
            "--tls" => tls = true,
            "--auth" => auth = Some(value("--auth")?),
            "--mail" => mail = Some(value("--mail")?),
            "--rcpt" => rcpt = Some(value("--rcpt")?),
            "--service" => match value("--service")?.as_str() {
                "inbound" => outbound = false,
                "outbound" => outbound = true,
                other => return Err(format!("unknown service '{other}': inbound or outbound")),
            },
            other => return Err(format!("unknown option '{other}' (try --help)")),
        }
    }
    Ok(Command::Explain(ExplainOptions {
        config,
        from_ip: from_ip.ok_or("explain needs --from-ip A")?,
        tls,
        auth,
        mail: mail.ok_or("explain needs --mail ADDRESS (use '' for the null sender)")?,
        rcpt: rcpt.ok_or("explain needs --rcpt ADDRESS")?,
        outbound,
    }))
}

/// `password add|set|delete|show --user NAME [--cram-md5] [--iterations N]`.
fn parse_password(args: &[String]) -> Result<Command, String> {
    let split = Split::new(args, &["--user", "--iterations"], &["--cram-md5"], true)?;
    let (user, cram_md5) = (
        split.value("--user").map(str::to_string),
        split.flag("--cram-md5"),
    );
    let iterations = match split.value("--iterations") {
        Some(v) => v
            .parse()
            .map_err(|_| format!("--iterations needs a number, not '{v}'"))?,
        None => DEFAULT_ITERATIONS,
    };
    if let Some(extra) = split.words.get(1) {
        return Err(format!("unexpected '{extra}' (try --help)"));
    }
    let verb = split.words.first().map(String::as_str);
    let state_dir = split.state_dir.clone();
    let need_user = |user: Option<String>| user.ok_or("password commands need --user NAME");
    let action = match verb {
        Some("add") => PasswordAction::Add {
            user: need_user(user)?,
            cram_md5,
            iterations,
        },
        Some("set") => PasswordAction::Set {
            user: need_user(user)?,
            iterations,
        },
        Some("delete") => PasswordAction::Delete {
            user: need_user(user)?,
        },
        Some("show") => PasswordAction::Show {
            pattern: user.unwrap_or_else(|| "*".into()),
        },
        _ => return Err("usage: password add|set|delete|show --user NAME".into()),
    };
    Ok(Command::Password { action, state_dir })
}

/// `certificate show|import NAME --chain F --key F|request NAME|generate-self-signed HOST`.
fn parse_certificate(args: &[String]) -> Result<Command, String> {
    let split = Split::new(args, &["--chain", "--key", "--config"], &[], true)?;
    let (chain, key) = (split.path("--chain"), split.path("--key"));
    let words = &split.words;
    let action = match (words.first().map(String::as_str), words.len()) {
        (Some("show"), 1) => CertificateAction::Show,
        (Some("import"), 2) => CertificateAction::Import {
            name: words[1].clone(),
            chain: chain.ok_or("certificate import needs --chain FILE")?,
            key: key.ok_or("certificate import needs --key FILE")?,
        },
        (Some("request"), 2) => CertificateAction::Request {
            name: words[1].clone(),
        },
        (Some("delete"), 2) => CertificateAction::Delete {
            name: words[1].clone(),
        },
        (Some("generate-self-signed"), 2) => CertificateAction::GenerateSelfSigned {
            host_name: words[1].clone(),
        },
        _ => {
            return Err("usage: certificate show | import NAME --chain FILE --key FILE | delete NAME | request NAME | generate-self-signed HOST".into());
        }
    };
    Ok(Command::Certificate {
        action,
        config: split.path("--config"),
        state_dir: split.state_dir,
    })
}

/// `token show|login|init-key [--state-dir DIR] [--config FILE]`.
fn parse_token(args: &[String]) -> Result<Command, String> {
    let split = Split::new(args, &["--config"], &[], true)?;
    let action = match split.words.as_slice() {
        [verb] if verb == "show" => TokenAction::Show,
        [verb] if verb == "login" => TokenAction::Login,
        [verb] if verb == "init-key" => TokenAction::InitKey,
        _ => return Err("usage: token show | login | init-key".into()),
    };
    Ok(Command::Token {
        action,
        config: split.path("--config"),
        state_dir: split.state_dir,
    })
}

/// `image keygen FILE | public-key KEY | seal --key KEY FILE | verify FILE …`.
fn parse_image(args: &[String]) -> Result<Command, String> {
    let (mut key, mut board, mut public_keys, mut words) = (None, None, Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value (try --help)"))
        };
        match arg.as_str() {
            "--key" => key = Some(PathBuf::from(value("--key")?)),
            "--board" => board = Some(value("--board")?),
            "--public-key" => public_keys.push(PathBuf::from(value("--public-key")?)),
            other if other.starts_with('-') => {
                return Err(format!("unknown option '{other}' (try --help)"));
            }
            other => words.push(other.to_string()),
        }
    }
    let action = match (words.first().map(String::as_str), words.get(1), words.len()) {
        (Some("keygen"), Some(out), 2) => ImageAction::Keygen { out: out.into() },
        (Some("public-key"), Some(k), 2) => ImageAction::PublicKey { key: k.into() },
        (Some("seal"), Some(file), 2) => ImageAction::Seal {
            key: key.ok_or("image seal needs --key KEY")?,
            file: file.into(),
        },
        (Some("verify"), Some(file), 2) => ImageAction::Verify {
            file: file.into(),
            board,
            public_keys,
        },
        _ => {
            return Err("usage: image keygen FILE | public-key KEY | seal --key KEY FILE | verify FILE [--board B] [--public-key F]".into());
        }
    };
    Ok(Command::Image(action))
}

/// `secret set|delete NAME | show [--state-dir DIR] [--config FILE]`.
fn parse_secret(args: &[String]) -> Result<Command, String> {
    const USAGE: &str = "usage: secret set NAME | delete NAME | show";
    let split = Split::new(args, &["--config"], &[], true)?;
    let action = match split.words.as_slice() {
        [verb, name] if verb == "set" => SecretAction::Set { name: name.clone() },
        [verb, name] if verb == "delete" => SecretAction::Delete { name: name.clone() },
        [verb] if verb == "show" => SecretAction::Show,
        _ => return Err(USAGE.into()),
    };
    Ok(Command::Secret {
        action,
        config: split.path("--config"),
        state_dir: split.state_dir,
    })
}

/// `system update FILE [--state-dir DIR]`.
fn parse_system(args: &[String]) -> Result<Command, String> {
    let split = Split::new(args, &[], &[], true)?;
    match split.words.as_slice() {
        [verb, file] if verb == "update" => Ok(Command::SystemUpdate {
            file: PathBuf::from(file),
            state_dir: split.state_dir,
        }),
        _ => Err("usage: system update FILE".into()),
    }
}

/// `queue VERB [ID] [--json] [--state-dir DIR]`.
fn parse_queue(args: &[String]) -> Result<Command, String> {
    let split = Split::new(args, &[], &["--json"], true)?;
    let json = split.flag("--json");
    let (words, state_dir) = (split.words, split.state_dir);
    let mut line = String::from("queue");
    for w in &words {
        line.push(' ');
        line.push_str(w);
    }
    if json {
        if words.as_slice() != ["list"] {
            return Err("--json goes with 'queue list' only".into());
        }
        line.push_str(" json");
    }
    let request = Request::parse(&line)?;
    Ok(Command::Queue { request, state_dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn config_commands() {
        use crate::io::config::admin::ConfigRequest;
        let Ok(Command::Config(ConfigCommand::Request {
            request,
            file,
            no_apply,
            state_dir,
        })) = parse(&args(
            "config load merge edits.conf --confirm 5 --no-apply --state-dir /var/db",
        ))
        else {
            panic!("config load parses")
        };
        assert_eq!(
            request,
            ConfigRequest::Load {
                replace: false,
                confirm: Some(5),
                comment: "loaded from edits.conf".into()
            }
        );
        assert_eq!(file, Some(PathBuf::from("edits.conf")));
        assert!(no_apply);
        assert_eq!(state_dir, PathBuf::from("/var/db"));
        assert!(matches!(
            parse(&args("config show --json")),
            Ok(Command::Config(ConfigCommand::Request {
                request: ConfigRequest::Show { json: true },
                ..
            }))
        ));
        assert_eq!(
            parse(&args("config check x.conf")),
            Ok(Command::Config(ConfigCommand::Check(PathBuf::from(
                "x.conf"
            ))))
        );
        assert_eq!(
            parse(&args("config reference")),
            Ok(Command::Config(ConfigCommand::Reference))
        );
        for bad in [
            "config",
            "config load x.conf",
            "config load merge",
            "config show --confirm 3",
            "config history --json",
            "config rollback",
            "config frobnicate",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn forms() {
        assert_eq!(parse(&args("")), Ok(Command::Run(RunOptions::default())));
        assert_eq!(parse(&args("--help")), Ok(Command::Help));
        assert_eq!(parse(&args("run --help")), Ok(Command::Help));
        assert_eq!(
            parse(&args("run --config a.conf --state-dir /tmp/s --no-console")),
            Ok(Command::Run(RunOptions {
                config: Some("a.conf".into()),
                state_dir: "/tmp/s".into(),
                console: None
            }))
        );
        assert_eq!(
            parse(&args("run --console /dev/ttyS0:9600")),
            Ok(Command::Run(RunOptions {
                console: Some(ConsoleDevice::Serial {
                    path: "/dev/ttyS0".into(),
                    baud: 9600
                }),
                ..RunOptions::default()
            }))
        );
        assert!(matches!(
            parse(&args("run --console /dev/ttyS1")),
            Ok(Command::Run(RunOptions {
                console: Some(ConsoleDevice::Serial { baud: 115_200, .. }),
                ..
            }))
        ));
        for bad in [
            "run --console /dev/ttyS0:1234",
            "run --console ttyS0",
            "run --console",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            parse(&args("cli --login --state-dir /s")),
            Ok(Command::Cli {
                state_dir: "/s".into(),
                login: true
            })
        );
        assert_eq!(
            parse(&args("stats --json")),
            Ok(Command::Stats {
                state_dir: DEFAULT_STATE_DIR.into(),
                json: true
            })
        );
        assert!(parse(&args("stats --clear")).is_err());
        assert!(
            parse(&args("run --config"))
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            parse(&args("run --bogus"))
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(
            parse(&args("frobnicate"))
                .unwrap_err()
                .contains("unknown command")
        );
    }

    #[test]
    fn queue_and_certificate_commands() {
        assert_eq!(
            parse(&args("queue list --json --state-dir /s")),
            Ok(Command::Queue {
                request: Request::List { json: true },
                state_dir: "/s".into()
            })
        );
        assert_eq!(
            parse(&args("queue hold 0000000000ABCDEF")),
            Ok(Command::Queue {
                request: Request::Op(
                    crate::proto::queue::listing::QueueOp::Hold,
                    crate::proto::queue::id::Target::One("0000000000ABCDEF".parse().unwrap())
                ),
                state_dir: DEFAULT_STATE_DIR.into()
            })
        );
        assert!(parse(&args("queue hold")).is_err());
        assert!(parse(&args("queue flush --json")).is_err());
        assert!(parse(&args("queue delete ../../etc/passwd")).is_err());
        assert_eq!(
            parse(&args(
                "certificate import mx --chain c.pem --key k.pem --state-dir /s"
            )),
            Ok(Command::Certificate {
                action: CertificateAction::Import {
                    name: "mx".into(),
                    chain: "c.pem".into(),
                    key: "k.pem".into()
                },
                state_dir: "/s".into(),
                config: None
            })
        );
        assert!(
            parse(&args("certificate import mx --chain c.pem"))
                .unwrap_err()
                .contains("--key")
        );
        assert!(parse(&args("certificate frob")).is_err());
        assert_eq!(
            parse(&args("certificate show")),
            Ok(Command::Certificate {
                action: CertificateAction::Show,
                state_dir: DEFAULT_STATE_DIR.into(),
                config: None
            })
        );
    }

    #[test]
    fn token_commands() {
        assert_eq!(
            parse(&args("token show --config /etc/gw.conf --state-dir /s")),
            Ok(Command::Token {
                action: TokenAction::Show,
                state_dir: "/s".into(),
                config: Some("/etc/gw.conf".into())
            })
        );
        assert_eq!(
            parse(&args("token init-key")),
            Ok(Command::Token {
                action: TokenAction::InitKey,
                state_dir: DEFAULT_STATE_DIR.into(),
                config: None
            })
        );
        assert!(matches!(
            parse(&args("token login")),
            Ok(Command::Token {
                action: TokenAction::Login,
                ..
            })
        ));
        for bad in [
            "token",
            "token frob",
            "token show login",
            "token show --pin 1234",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_commands() {
        assert_eq!(
            parse(&args(
                "password add --user alice --cram-md5 --iterations 8192"
            )),
            Ok(Command::Password {
                action: PasswordAction::Add {
                    user: "alice".into(),
                    cram_md5: true,
                    iterations: 8192
                },
                state_dir: DEFAULT_STATE_DIR.into()
            })
        );
        assert_eq!(
            parse(&args("password show")),
            Ok(Command::Password {
                action: PasswordAction::Show {
                    pattern: "*".into()
                },
                state_dir: DEFAULT_STATE_DIR.into()
            })
        );
        assert!(
            parse(&args("password delete"))
                .unwrap_err()
                .contains("--user")
        );
        assert!(parse(&args("password add --user a --iterations many")).is_err());
    }

    #[test]
    fn image_and_system_commands() {
        assert_eq!(
            parse(&args("image seal --key k.pk8 x.img")),
            Ok(Command::Image(ImageAction::Seal {
                key: "k.pk8".into(),
                file: "x.img".into()
            }))
        );
        assert_eq!(
            parse(&args(
                "image verify x.img --board b --public-key p1 --public-key p2"
            )),
            Ok(Command::Image(ImageAction::Verify {
                file: "x.img".into(),
                board: Some("b".into()),
                public_keys: vec!["p1".into(), "p2".into()]
            }))
        );
        assert!(
            parse(&args("image seal x.img"))
                .unwrap_err()
                .contains("--key")
        );
        assert!(parse(&args("image frob")).is_err());
        assert_eq!(
            parse(&args("system update fw.img --state-dir /s")),
            Ok(Command::SystemUpdate {
                file: "fw.img".into(),
                state_dir: "/s".into()
            })
        );
        assert!(parse(&args("system update")).is_err());
        assert!(parse(&args("system reboot now")).is_err());
    }

    #[test]
    fn explain_options() {
        let Ok(Command::Explain(o)) = parse(&args(
            "explain --from-ip 192.0.2.7 --tls --auth alice --mail a@x.org --rcpt b@y.org",
        )) else {
            panic!("explain parses")
        };
        assert_eq!(o.from_ip.to_string(), "192.0.2.7");
        assert!(o.tls && !o.outbound);
        assert_eq!(o.auth.as_deref(), Some("alice"));
        assert!(
            parse(&args("explain --mail a --rcpt b"))
                .unwrap_err()
                .contains("--from-ip")
        );
        assert!(parse(&args("explain --from-ip nowhere --mail a --rcpt b")).is_err());
    }
}
