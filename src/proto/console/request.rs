//! What the console core asks of the gateway, and the answers it gets.
//!
//! The core parses a line into a [`Command`] or a configuration request and hands it
//! out as a [`Request`]; whoever drives the core carries it out (with the gateway's
//! queue, configuration engine, stores and network) and feeds back an [`Answer`]. The
//! core never waits on anything itself.

use std::net::IpAddr;
use std::time::Duration;

use crate::proto::config::Candidate;
use crate::proto::config::{Config, LoginClass};

/// A password typed at the console: kept out of `Debug` and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

pub use crate::proto::queue::id::Target;

/// Things the gateway names that a command's argument may be, completed and listed by
/// `?` and TAB once the gateway has said them ([`Request::Names`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// Queue ids, as `show queue` lists them.
    QueueId,
    /// Mail users (`password …`).
    MailUser,
    /// Console logins (`login delete`).
    ConsoleLogin,
    /// Stored certificates (`certificate delete`, `request`).
    Certificate,
}

/// Most names of one kind the console keeps for completion: a list of a queue of
/// thousands helps nobody, and the console prints each candidate on a row.
pub const MAX_NAMES: usize = 500;

/// The names the gateway gave, by kind; what has not been asked for is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    known: Vec<(NameKind, Vec<String>)>,
}

impl Names {
    pub fn get(&self, kind: NameKind) -> Option<&[String]> {
        self.known
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, names)| names.as_slice())
    }

    /// Keeps the names of `kind`, at most [`MAX_NAMES`] of them.
    pub fn insert(&mut self, kind: NameKind, mut names: Vec<String>) {
        names.truncate(MAX_NAMES);
        self.known.retain(|(k, _)| *k != kind);
        self.known.push((kind, names));
    }

    /// Forgets them all: a command may have changed them.
    pub fn clear(&mut self) {
        self.known.clear();
    }
}

/// An operational command, parsed and checked, for the gateway to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    ShowStatus,
    ShowConnections,
    /// `show queue`, or with `summary` the table by domain and age.
    ShowQueue {
        summary: bool,
    },
    ShowStats,
    ShowLog,
    ShowCertificates,
    ShowUsers,
    ShowToken,
    /// `token login`: log in with the PIN file's PIN unless logged in; the keys.
    TokenLogin,
    /// `token init-key`: make the keys the gateway needs that are missing.
    TokenInitKey,
    ShowConfiguration,
    /// `show system commit`: the commits kept.
    ShowCommits,
    ClearStats,
    QueueFlush {
        domain: Option<String>,
    },
    QueueHold(Target),
    QueueRelease(Target),
    QueueDelete(Target),
    QueueRequeue(Target),
    PasswordAdd {
        user: String,
        cram_md5: bool,
        password: Secret,
    },
    PasswordSet {
        user: String,
        password: Secret,
    },
    PasswordDelete {
        user: String,
    },
    PasswordShow {
        pattern: String,
    },
    /// `login add USER`: a new console login with this password.
    LoginAdd {
        user: String,
        password: Secret,
    },
    /// `login delete USER`: not one's own, nor the last.
    LoginDelete {
        user: String,
    },
    CertificateGenerate {
        host: Option<String>,
    },
    CertificateImport {
        name: String,
        chain: String,
        key: String,
    },
    CertificateRequest {
        name: String,
    },
    CertificateShow,
    CertificateDelete {
        name: String,
    },
    TestSmtp {
        host: String,
        port: u16,
    },
    TestDns {
        name: String,
        mx: bool,
    },
    Explain {
        from_ip: IpAddr,
        mail: String,
        rcpt: String,
        tls: bool,
        auth: Option<String>,
        outbound: bool,
    },
    Restart,
    FactoryReset,
    /// `system update FILE`: verify the image, write it to the inactive firmware slot.
    SystemUpdate {
        file: String,
    },
    /// `system reboot`: PID 1 stops the gateway, writes everything out and restarts.
    SystemReboot,
    /// `system power-off`: the same, then powers off.
    SystemPowerOff,
    /// `system watchdog-test`: stop the event loop, so that the supervisor's watchdog
    /// must kill the gateway and start it again; with `hardware`, have PID 1 stop
    /// feeding the hardware watchdog, so that it must reset the machine.
    SystemWatchdogTest {
        hardware: bool,
    },
}

impl Command {
    /// The least login class that may run it. Every command is named, so a new one
    /// must be given its class.
    pub fn class_needed(&self) -> LoginClass {
        use Command as C;
        match self {
            C::ShowStatus
            | C::ShowConnections
            | C::ShowQueue { .. }
            | C::ShowStats
            | C::ShowLog
            | C::ShowCertificates
            | C::ShowUsers
            | C::ShowToken
            | C::ShowConfiguration
            | C::ShowCommits
            | C::PasswordShow { .. }
            | C::CertificateShow
            | C::Explain { .. } => LoginClass::ReadOnly,
            // Acting on the mail, and reaching other hosts from the gateway.
            C::ClearStats
            | C::QueueFlush { .. }
            | C::QueueHold(_)
            | C::QueueRelease(_)
            | C::QueueDelete(_)
            | C::QueueRequeue(_)
            | C::TestSmtp { .. }
            | C::TestDns { .. } => LoginClass::Operator,
            // Keys, users, logins and the system.
            C::TokenLogin
            | C::TokenInitKey
            | C::PasswordAdd { .. }
            | C::PasswordSet { .. }
            | C::PasswordDelete { .. }
            | C::LoginAdd { .. }
            | C::LoginDelete { .. }
            | C::CertificateGenerate { .. }
            | C::CertificateImport { .. }
            | C::CertificateRequest { .. }
            | C::CertificateDelete { .. }
            | C::Restart
            | C::FactoryReset
            | C::SystemUpdate { .. }
            | C::SystemReboot
            | C::SystemPowerOff
            | C::SystemWatchdogTest { .. } => LoginClass::SuperUser,
        }
    }
}

/// A request for whoever drives the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Check a login: [`Answer::LoggedIn`] or [`Answer::Refused`].
    Login { user: String, password: Secret },
    /// Set the password of a console login (the forced change at the first login, or
    /// `login password`): [`Answer::LoggedIn`] or [`Answer::Error`], or
    /// [`Answer::Closing`] when the login is gone or, with `factory` (the forced
    /// change), the factory password is no longer in force.
    SetLoginPassword {
        user: String,
        password: Secret,
        factory: bool,
    },
    /// Carry out a command: [`Answer::Text`] or [`Answer::Error`].
    Run(Command),
    /// A candidate for configuration mode: [`Answer::Candidate`].
    Configure,
    /// The running configuration, for `show | compare`: [`Answer::Running`].
    Running,
    /// `commit check`: [`Answer::Text`] or [`Answer::Error`].
    Check(Box<Candidate>),
    /// `commit`: [`Answer::Committed`] or [`Answer::Error`].
    Commit {
        candidate: Box<Candidate>,
        comment: String,
        confirm_minutes: Option<u64>,
    },
    /// `rollback N`: the configuration of N commits ago as a candidate.
    Rollback(usize),
    /// `load … FILE`: the file's text, [`Answer::File`].
    ReadFile(String),
    /// The names of this kind, for completing an argument: [`Answer::Names`].
    Names(NameKind),
}

/// What came of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The login is good; `must_change` when it still has the factory password.
    LoggedIn {
        must_change: bool,
        /// What the login may do, from the running configuration.
        class: LoginClass,
    },
    /// The login is refused; the next try may come after `delay`.
    Refused {
        delay: Duration,
    },
    Text(String),
    Error(String),
    Candidate(Box<Candidate>),
    Running(Box<Config>),
    /// A commit happened: what to say, and a fresh candidate from it.
    Committed {
        text: String,
        candidate: Box<Candidate>,
    },
    File(String),
    /// The names of a kind, sorted.
    Names(NameKind, Vec<String>),
    /// The request was given up (Ctrl-C while it ran).
    Cancelled,
    /// Say this and end the session: the gateway is going away (`restart`).
    Closing(String),
}
