//! The configuration schema: one static description of the configuration tree, from which
//! parsing `set` and `delete`, canonical printing, help, completion and the reference
//! are all derived (see [`super::text`] and [`super::reference`]).
//!
//! The tree is made of [`Node`]s: containers (`system`, `queue`), keyed lists whose
//! entries are containers (`route PATTERN`, `classify N`), and leaves holding one value
//! (`max-connections 500`), several values (`listen …`, one per line) or none (a flag
//! such as `mx`). Each leaf reaches its place in the typed model through small accessor
//! functions (`get`, `set`, `delete`); everything else about the grammar is data here.
//!
//! The model stores parsed values only: a leaf's `set` parses the text with the leaf's
//! value kind and stores the checked value, or fails and changes nothing.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::text::LineError;
use super::text::value;
use super::{
    AccessRule, AddressPattern, Category, Channel, ClassifyAction, ClassifyRule, CompactFilter,
    Config, DomainPattern, Interface, InterfaceAddress, Login, LoginClass, NextHop, QueueSettings,
    RelayAction, RelayHost, RelayRule, Route, Ruleset, Service, ServiceName, System, Tls,
    TokenBackend, TokenSettings, Verify,
};
use crate::proto::sasl::{MechanismName, MechanismSet};

// ---- bounds ------------------------------------------------------------------------

/// Most listening addresses per service: 8, 32 octets each in memory.
pub const MAX_LISTEN_ADDRESSES: usize = 8;
/// Most classify rules: 1024. A rule costs at most about 600 octets (its deny text is at
/// most 500), so all rules together at most about 600 KiB.
pub const MAX_CLASSIFY_RULES: usize = 1024;
/// Most categories given settings: 256, each at most about 100 octets (two names).
pub const MAX_CATEGORIES: usize = 256;
/// Most security rulesets: 256, each 2 octets and a name of at most 32.
pub const MAX_RULESETS: usize = 256;
/// Most relay rules: 1024. A rule costs at most about 1.1 KiB (two 256-octet patterns,
/// two channel names and a 500-octet deny text), so all rules together at most about
/// 1.1 MiB.
pub const MAX_RELAY_RULES: usize = 1024;
/// Most routes: 1024. A route costs at most about 900 octets (a 253-octet pattern and 16
/// hosts of 32 octets), so all routes together at most about 900 KiB.
pub const MAX_ROUTES: usize = 1024;
/// At most this many channels: the seeds' sites used a few dozen.
pub const MAX_CHANNELS: usize = 256;
/// At most this many DNS resolvers: resolv.conf's own limit is 3; a few more cost nothing.
pub const MAX_DNS_RESOLVERS: usize = 8;
/// At most this many network interfaces: an appliance has a handful; the bound keeps a
/// hostile blob from making thousands.
pub const MAX_INTERFACES: usize = 16;
/// At most this many static addresses on one interface.
pub const MAX_INTERFACE_ADDRESSES: usize = 8;
/// Most access-filter rules of one kind per service: 64 rules of at most
/// `filter::MAX_RULE_LEN` (1 KiB) text and their trees (about 16 KiB each at worst).
pub const MAX_FILTERS: usize = 64;
/// At most this many remote syslog receivers: each log line is one datagram to each.
pub const MAX_SYSLOG_HOSTS: usize = 4;
/// RFC 5426 §3.3: syslog over UDP goes to port 514 unless told otherwise.
pub const SYSLOG_PORT: u16 = 514;
/// Most `proxy-from` networks per service: 16. A fleet's load balancers sit in a few
/// networks; each costs 18 octets, and each is checked at every connection.
pub const MAX_PROXY_NETWORKS: usize = 16;
/// RFC 1870 leaves the size limit to the server; below 1 KiB no real message fits.
pub const MIN_MESSAGE_SIZE: u64 = 1024;

/// The accepted range of one numeric setting and, where a standard sets it, the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub min: u32,
    pub max: u32,
    pub source: Option<&'static str>,
}

impl Limit {
    const fn new(min: u32, max: u32) -> Limit {
        Limit {
            min,
            max,
            source: None,
        }
    }

    /// What an accepted value looks like, for messages.
    pub fn expected(&self) -> String {
        if self.max == u32::MAX {
            format!("a number of at least {}", self.min)
        } else {
            format!("a number from {} to {}", self.min, self.max)
        }
    }
}

/// Connections at once, in all and per client address: at most 65535, one per port.
pub const CONNECTIONS_LIMIT: Limit = Limit::new(1, 65535);
/// Messages in one session: at least one.
pub const MESSAGES_PER_SESSION_LIMIT: Limit = Limit::new(1, u32::MAX);
/// RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients.
pub const RECIPIENTS_LIMIT: Limit = Limit {
    min: super::MIN_RECIPIENTS,
    max: u32::MAX,
    source: Some("RFC 5321 §4.5.3.1.8 requires accepting at least 100 recipients"),
};
/// RFC 5321 §4.5.3.1.6: a text line of 1000 octets with its CRLF must be accepted. At most
/// 64 KiB: a session may buffer one line of this length.
pub const LINE_LENGTH_LIMIT: Limit = Limit {
    min: super::DEFAULT_TEXT_LINE,
    max: 65536,
    source: Some("RFC 5321 §4.5.3.1.6 requires accepting text lines of 1000 octets"),
};
/// Client errors before a disconnect: at least one.
pub const ERROR_LIMIT: Limit = Limit::new(1, u32::MAX);
/// Connections at once to one route's next hop.
pub const CONCURRENCY_LIMIT: Limit = Limit::new(1, 1000);
/// Classify and relay rule numbers.
pub const RULE_NUMBER_LIMIT: Limit = Limit::new(1, 65535);
/// Octets per second a client must keep up in message content: at most a gigabyte.
pub const DATA_RATE_LIMIT: Limit = Limit::new(1, 1_000_000_000);
/// Percent of the connection limit at which a service is under stress.
pub const STRESS_THRESHOLD_LIMIT: Limit = Limit::new(1, 100);
/// Authentication failures before a block: at most a million.
pub const AUTH_FAILURES_LIMIT: Limit = Limit::new(1, 1_000_000);
/// Entries the authentication throttle remembers: 100 to 100 000, about 100 octets each.
pub const AUTH_TABLE_LIMIT: Limit = Limit::new(100, 100_000);
/// Messages the queue manager keeps in memory: at most a million, about 1.2 GiB.
pub const ACTIVE_LIMIT: Limit = Limit::new(1, 1_000_000);

// ---- the tree's types ----------------------------------------------------------------

/// One node of the configuration tree.
pub struct Node {
    /// The keyword, as written in `set` lines.
    pub name: &'static str,
    /// One line of help, for `?` and the reference.
    pub help: &'static str,
    pub kind: NodeKind,
}

pub enum NodeKind {
    /// A fixed group of settings.
    Container(&'static [Node]),
    /// Entries named by a key, each a group of settings.
    List(&'static List),
    /// One setting.
    Leaf(&'static Leaf),
}

/// A keyed list: `route PATTERN …`, `classify N …`.
pub struct List {
    pub key: KeySpec,
    /// Most entries; a `set` that would make one more is refused.
    pub max_entries: usize,
    pub children: &'static [Node],
    /// An entry prints on one line with all its settings (rules read best whole).
    pub one_line: bool,
    /// The entries there are cannot be added or removed (the two services).
    pub fixed: bool,
    /// The keys of the existing entries, in canonical order.
    pub entries: fn(&Config, &Keys) -> Vec<Key>,
    /// Makes the entry named by the last key exist (a no-op when it does).
    pub create: fn(&mut Config, &Keys) -> Result<(), LineError>,
    /// Removes the entry named by the last key (a fixed entry returns to its default).
    pub remove: fn(&mut Config, &Keys),
}

/// How a list key is written.
pub struct KeySpec {
    /// What the key is, in the reference: `PATTERN`, `N`, `NAME`.
    pub placeholder: &'static str,
    /// What an accepted key looks like, for messages and help.
    pub expected: &'static str,
    pub parse: fn(&str) -> Result<Key, LineError>,
}

/// The key of one list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Service(ServiceName),
    Number(u32),
    Pattern(DomainPattern),
    Name(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Service(s) => s.fmt(f),
            Key::Number(n) => n.fmt(f),
            Key::Pattern(p) => p.fmt(f),
            Key::Name(n) => f.write_str(n),
        }
    }
}

/// The keys of the list entries on the way from the root to a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys(pub Vec<Key>);

impl Keys {
    // INVARIANT for the accessors below: the schema passes each leaf the keys of the
    // lists above it, so the key an accessor asks for is always there. A missing one
    // (a bug) falls back to a value that names no entry.

    fn service(&self) -> ServiceName {
        self.0
            .iter()
            .find_map(|k| match k {
                Key::Service(s) => Some(*s),
                _ => None,
            })
            .unwrap_or(ServiceName::Inbound)
    }

    fn number(&self) -> u32 {
        self.0
            .iter()
            .rev()
            .find_map(|k| match k {
                Key::Number(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(0)
    }

    fn pattern(&self) -> DomainPattern {
        self.0
            .iter()
            .rev()
            .find_map(|k| match k {
                Key::Pattern(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap_or(DomainPattern::Exact(String::new()))
    }

    fn name(&self) -> String {
        self.0
            .iter()
            .rev()
            .find_map(|k| match k {
                Key::Name(n) => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// One setting.
pub struct Leaf {
    /// The value it takes; `None` for a flag, which takes none.
    pub value: Option<&'static ValueSpec>,
    /// Takes several values, one `set` line each (`listen`, `dns resolver`).
    pub multi: bool,
    /// The factory value in canonical text, where there is one.
    pub default: fn() -> Option<String>,
    /// The value in canonical text (parsed and printed back): how `delete … VALUE` finds
    /// the value to remove.
    pub canonical: fn(&str, &str) -> Result<String, LineError>,
    /// The values set, in canonical text; empty when the setting has its default. A set
    /// flag gives one empty string.
    pub get: fn(&Config, &Keys) -> Vec<String>,
    /// Parses and stores one value (adds it, for a multi-valued leaf); `""` for a flag.
    /// The second argument names the setting for messages.
    pub set: fn(&mut Config, &Keys, &str, &str) -> Result<(), LineError>,
    /// Returns the setting to its default; for a multi-valued leaf with `Some(value)`
    /// (canonical text) removes that one value.
    pub delete: fn(&mut Config, &Keys, Option<&str>),
}

/// What a value looks like.
pub struct ValueSpec {
    /// The placeholder in the reference: `DURATION`, `ADDRESS:PORT`.
    pub placeholder: &'static str,
    /// What an accepted value looks like, for messages and help.
    pub expected: &'static str,
    /// The words a value can be, for completion; empty when free-form.
    pub choices: &'static [&'static str],
    /// A fixed word written after the value (`restrict PLAIN tls`).
    pub suffix: Option<&'static str>,
}

/// A value kind: its spec, its parser (text and setting name) and its printer.
pub struct Kind<T: 'static> {
    pub spec: &'static ValueSpec,
    pub parse: fn(&str, &str) -> Result<T, LineError>,
    pub format: fn(&T) -> String,
}

impl<T> Kind<T> {
    fn canonical(&self, text: &str, setting: &str) -> Result<String, LineError> {
        (self.parse)(text, setting).map(|v| (self.format)(&v))
    }
}

// ---- value kinds ---------------------------------------------------------------------

fn out_of_range(text: &str, setting: &str, reason: String) -> LineError {
    LineError::OutOfRange {
        value: text.to_string(),
        setting: setting.to_string(),
        reason,
    }
}

/// A number within `limit`.
fn number(text: &str, setting: &str, limit: Limit) -> Result<u32, LineError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::Value {
            value: text.to_string(),
            problem: format!("is not a number: expected {}", limit.expected()),
        });
    }
    // All digits: `None` means larger than any u64, so above every limit.
    let n = value::number(text).unwrap_or(u64::MAX);
    match u32::try_from(n) {
        Ok(n) if (limit.min..=limit.max).contains(&n) => Ok(n),
        _ => Err(out_of_range(
            text,
            setting,
            match limit.source {
                Some(source) if n < u64::from(limit.min) => source.to_string(),
                _ => format!("expected {}", limit.expected()),
            },
        )),
    }
}

fn nonzero_duration(text: &str, setting: &str) -> Result<Duration, LineError> {
    let d = value::duration(text)?;
    if d.is_zero() {
        return Err(out_of_range(text, setting, "expected more than 0s".into()));
    }
    Ok(d)
}

/// The watchdog's timeout: off, or long enough that a busy machine is not taken for a
/// hung one and within what hardware watchdogs count (many stop near an hour).
fn watchdog_duration(text: &str, setting: &str) -> Result<Duration, LineError> {
    let d = value::duration(text)?;
    if !d.is_zero() && !(MIN_WATCHDOG..=MAX_WATCHDOG).contains(&d) {
        return Err(out_of_range(
            text,
            setting,
            "expected 0s (off) or from 5s to 30m".into(),
        ));
    }
    Ok(d)
}
const MIN_WATCHDOG: Duration = Duration::from_secs(5);
const MAX_WATCHDOG: Duration = Duration::from_secs(30 * 60);

/// The stopping grace: up to ten minutes, which a large message on a slow line may
/// need; beyond that a stop is an outage.
fn stop_grace_duration(text: &str, setting: &str) -> Result<Duration, LineError> {
    let d = value::duration(text)?;
    if d > MAX_STOP_GRACE {
        return Err(out_of_range(text, setting, "expected at most 10m".into()));
    }
    Ok(d)
}
const MAX_STOP_GRACE: Duration = Duration::from_secs(10 * 60);

fn format_duration(d: &Duration) -> String {
    value::format_duration(*d)
}

fn format_number(n: &u32) -> String {
    n.to_string()
}

fn format_addr(a: &SocketAddr) -> String {
    a.to_string()
}

macro_rules! number_kind {
    ($name:ident, $limit:expr, $expected:literal) => {
        const $name: Kind<u32> = Kind {
            spec: &ValueSpec {
                placeholder: "NUMBER",
                expected: $expected,
                choices: &[],
                suffix: None,
            },
            parse: |t, s| number(t, s, $limit),
            format: format_number,
        };
    };
}

number_kind!(CONNECTIONS, CONNECTIONS_LIMIT, "a number from 1 to 65535");
number_kind!(
    MESSAGES_PER_SESSION,
    MESSAGES_PER_SESSION_LIMIT,
    "a number of at least 1"
);
number_kind!(RECIPIENTS, RECIPIENTS_LIMIT, "a number of at least 100");
number_kind!(
    LINE_LENGTH,
    LINE_LENGTH_LIMIT,
    "a number from 1000 to 65536"
);
number_kind!(ERRORS, ERROR_LIMIT, "a number of at least 1");
number_kind!(CONCURRENCY, CONCURRENCY_LIMIT, "a number from 1 to 1000");
number_kind!(DATA_RATE, DATA_RATE_LIMIT, "a number from 1 to 1000000000");
number_kind!(
    STRESS_THRESHOLD,
    STRESS_THRESHOLD_LIMIT,
    "a number from 1 to 100"
);
number_kind!(
    AUTH_FAILURES,
    AUTH_FAILURES_LIMIT,
    "a number from 1 to 1000000"
);
number_kind!(AUTH_TABLE, AUTH_TABLE_LIMIT, "a number from 100 to 100000");
number_kind!(ACTIVE, ACTIVE_LIMIT, "a number from 1 to 1000000");

const DURATION_SPEC: ValueSpec = ValueSpec {
    placeholder: "DURATION",
    expected: value::DURATION_EXPECTED,
    choices: &[],
    suffix: None,
};
/// A duration of more than zero.
const NONZERO_DURATION: Kind<Duration> = Kind {
    spec: &DURATION_SPEC,
    parse: nonzero_duration,
    format: format_duration,
};
/// The watchdog's timeout: 0s, or 5s to 30m.
const WATCHDOG_DURATION: Kind<Duration> = Kind {
    spec: &DURATION_SPEC,
    parse: watchdog_duration,
    format: format_duration,
};
/// The stopping grace: 0s to 10m.
const STOP_GRACE_DURATION: Kind<Duration> = Kind {
    spec: &DURATION_SPEC,
    parse: stop_grace_duration,
    format: format_duration,
};
/// A duration, zero allowed.
const DURATION: Kind<Duration> = Kind {
    spec: &DURATION_SPEC,
    parse: |t, _| value::duration(t),
    format: format_duration,
};
const SIZE: Kind<u64> = Kind {
    spec: &ValueSpec {
        placeholder: "SIZE",
        expected: value::SIZE_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, s| {
        let size = value::size(t)?;
        if size < MIN_MESSAGE_SIZE {
            return Err(out_of_range(
                t,
                s,
                "expected at least 1024 bytes (1k)".into(),
            ));
        }
        Ok(size)
    },
    format: |n| value::format_size(*n),
};
const LISTEN: Kind<SocketAddr> = Kind {
    spec: &ValueSpec {
        placeholder: "ADDRESS:PORT",
        expected: value::LISTEN_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::listen(t),
    format: format_addr,
};
const RESOLVER: Kind<SocketAddr> = Kind {
    spec: &ValueSpec {
        placeholder: "ADDRESS[:PORT]",
        expected: value::RESOLVER_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::resolver(t),
    format: format_addr,
};
const GATEWAY: Kind<IpAddr> = Kind {
    spec: &ValueSpec {
        placeholder: "ADDRESS",
        expected: value::GATEWAY_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::gateway(t),
    format: IpAddr::to_string,
};
const INTERFACE_ADDRESS: Kind<InterfaceAddress> = Kind {
    spec: &ValueSpec {
        placeholder: "ADDRESS/PREFIX",
        expected: value::INTERFACE_ADDRESS_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::interface_address(t),
    format: InterfaceAddress::to_string,
};
const SYSLOG_HOST_EXPECTED: &str =
    "an IP address, with :port when not 514, such as 192.0.2.9 or [2001:db8::9]:5514";
const SYSLOG_HOST: Kind<SocketAddr> = Kind {
    spec: &ValueSpec {
        placeholder: "ADDRESS[:PORT]",
        expected: SYSLOG_HOST_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| {
        if let Ok(ip) = t.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, SYSLOG_PORT));
        }
        match t.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(addr),
            _ => Err(LineError::Value {
                value: t.to_string(),
                problem: format!("is not a syslog host: expected {SYSLOG_HOST_EXPECTED}"),
            }),
        }
    },
    format: format_addr,
};
const HOST_NAME: Kind<String> = Kind {
    spec: &ValueSpec {
        placeholder: "NAME",
        expected: value::HOST_NAME_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::host_name(t),
    format: String::clone,
};
const CERTIFICATE_NAME: Kind<String> = Kind {
    spec: &ValueSpec {
        placeholder: "CERTIFICATE",
        expected: "a certificate name from `certificate show`, such as mail-2026",
        choices: &[],
        suffix: None,
    },
    parse: |t, _| {
        if super::is_certificate_name(t) {
            Ok(t.to_string())
        } else {
            Err(LineError::Value {
                value: t.to_string(),
                problem: format!(
                    "is not a certificate name: 1 to {} lower-case letters, digits and hyphens",
                    super::MAX_CERTIFICATE_NAME_LEN
                ),
            })
        }
    },
    format: String::clone,
};
const CHANNEL_NAME: Kind<String> = Kind {
    spec: &ValueSpec {
        placeholder: "CHANNEL",
        expected: value::CHANNEL_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::channel_name(t),
    format: String::clone,
};
const RULESET_NAME: Kind<String> = Kind {
    spec: &ValueSpec {
        placeholder: "RULESET",
        expected: value::RULESET_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::ruleset_name(t),
    format: String::clone,
};
const CATEGORY_NAME: Kind<String> = Kind {
    spec: &ValueSpec {
        placeholder: "CATEGORY",
        expected: value::CATEGORY_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::category(t),
    format: String::clone,
};
const DENY_TEXT: Kind<String> = Kind {
    spec: &ValueSpec {
        placeholder: "\"TEXT\"",
        expected: value::DENY_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::deny_text(t),
    format: String::clone,
};
const PATH: Kind<String> = Kind {
    spec: &ValueSpec {
        placeholder: "PATH",
        expected: value::PATH_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::path(t),
    format: String::clone,
};
const PORT: Kind<u16> = Kind {
    spec: &ValueSpec {
        placeholder: "PORT",
        expected: value::PORT_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::port(t),
    format: |p| p.to_string(),
};
const CIDR: Kind<super::Cidr> = Kind {
    spec: &ValueSpec {
        placeholder: "NETWORK",
        expected: value::CIDR_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::cidr(t),
    format: |c| c.to_string(),
};
const HOSTS: Kind<Vec<RelayHost>> = Kind {
    spec: &ValueSpec {
        placeholder: "HOSTS",
        expected: value::HOSTS_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::hosts(t),
    format: |h| value::format_hosts(h),
};
const AUTH_USER: Kind<String> = Kind {
    spec: &ValueSpec {
        placeholder: "NAME",
        expected: value::AUTH_USER_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::auth_user(t),
    format: String::clone,
};
const EHLO: Kind<super::EhloKeywords> = Kind {
    spec: &ValueSpec {
        placeholder: "\"KEYWORDS\"",
        expected: value::EHLO_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::ehlo_keywords(t),
    format: |k| value::format_ehlo_keywords(*k),
};
const MECHANISMS: Kind<MechanismSet> = Kind {
    spec: &ValueSpec {
        placeholder: "\"MECHANISMS\"",
        expected: value::MECHANISMS_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::mechanisms(t),
    format: |m| value::format_mechanisms(*m),
};
const RESTRICTED_MECHANISM: Kind<MechanismName> = Kind {
    spec: &ValueSpec {
        placeholder: "MECHANISM",
        expected: value::MECHANISM_EXPECTED,
        choices: &["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "EXTERNAL"],
        suffix: Some("tls"),
    },
    parse: |t, _| value::mechanism(t),
    format: |m| m.as_str().to_string(),
};
const CHANNEL_KEYWORDS: Kind<Vec<super::ChannelKeyword>> = Kind {
    spec: &ValueSpec {
        placeholder: "\"KEYWORDS\"",
        expected: value::KEYWORDS_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::channel_keywords(t),
    format: |k| value::format_channel_keywords(k),
};
const RETRY: Kind<Vec<Duration>> = Kind {
    spec: &ValueSpec {
        placeholder: "\"DURATIONS\"",
        expected: value::RETRY_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::retry(t),
    format: |r| value::format_retry(r),
};
const TLS_VERSIONS: Kind<(bool, bool)> = Kind {
    spec: &ValueSpec {
        placeholder: "\"VERSIONS\"",
        expected: value::TLS_VERSIONS_EXPECTED,
        choices: &["\"1.2 1.3\"", "1.2", "1.3"],
        suffix: None,
    },
    parse: |t, _| value::tls_versions(t),
    format: |(a, b)| value::format_tls_versions(*a, *b),
};
const CIPHER_SUITES: Kind<Vec<String>> = Kind {
    spec: &ValueSpec {
        placeholder: "\"SUITES\"",
        expected: value::CIPHER_SUITES_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::cipher_suites(t),
    format: |s| s.join(" "),
};
const YES_NO: Kind<bool> = Kind {
    spec: &ValueSpec {
        placeholder: "yes|no",
        expected: "yes or no",
        choices: &["yes", "no"],
        suffix: None,
    },
    parse: |t, _| match t.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(LineError::Value {
            value: t.to_string(),
            problem: "is not yes or no".into(),
        }),
    },
    format: |b| if *b { "yes" } else { "no" }.to_string(),
};
const UNREACHABLE: Kind<bool> = Kind {
    spec: &ValueSpec {
        placeholder: "accept|tempfail",
        expected: "accept or tempfail",
        choices: &["accept", "tempfail"],
        suffix: None,
    },
    parse: |t, _| match t.to_ascii_lowercase().as_str() {
        "accept" => Ok(true),
        "tempfail" => Ok(false),
        _ => Err(LineError::Value {
            value: t.to_string(),
            problem: "is not accept or tempfail".into(),
        }),
    },
    format: |b| if *b { "accept" } else { "tempfail" }.to_string(),
};
const FILTER_RULE: Kind<AccessRule> = Kind {
    spec: &ValueSpec {
        placeholder: "\"RULE\"",
        expected: value::FILTER_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::filter_rule(t),
    format: |r| r.text().to_string(),
};
const COMPACT_FILTER: Kind<CompactFilter> = Kind {
    spec: &ValueSpec {
        placeholder: "\"FILTER\"",
        expected: value::COMPACT_FILTER_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::compact_filter(t),
    format: |f| f.text().to_string(),
};
/// A rule's channel: a name, or `*` for any (the same as not giving it).
const RULE_CHANNEL: Kind<Option<String>> = Kind {
    spec: &ValueSpec {
        placeholder: "CHANNEL",
        expected: value::RULE_CHANNEL_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::rule_channel(t),
    format: |c| c.clone().unwrap_or_else(|| "*".into()),
};
/// A rule's address pattern, or `*` for any.
const ADDRESS_PATTERN: Kind<Option<AddressPattern>> = Kind {
    spec: &ValueSpec {
        placeholder: "PATTERN",
        expected: value::ADDRESS_PATTERN_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::address_pattern(t),
    format: |p| p.as_ref().map_or_else(|| "*".into(), |p| p.to_string()),
};

// ---- accessors -----------------------------------------------------------------------

/// A leaf holding one value in `$field` of the entry `$entry(c, k)` (an `Option<&T>`),
/// `$entry_mut(c, k)` (a `&mut T`, the entry made by the list first) and
/// `$default` (the entry's factory value, a `T`).
macro_rules! scalar {
    ($name:literal, $help:literal, $kind:expr, $entry:path, $entry_mut:path, $default:expr, $($field:ident).+) => {
        Node {
            name: $name,
            help: $help,
            kind: NodeKind::Leaf(&Leaf {
                value: Some($kind.spec),
                multi: false,
                default: || Some(($kind.format)(&$default.$($field).+)),
                canonical: |t, s| $kind.canonical(t, s),
                get: |c, k| match $entry(c, k) {
                    Some(e) if e.$($field).+ != $default.$($field).+ => vec![($kind.format)(&e.$($field).+)],
                    _ => Vec::new(),
                },
                set: |c, k, t, s| {
                    let v = ($kind.parse)(t, s)?;
                    $entry_mut(c, k).$($field).+ = v;
                    Ok(())
                },
                delete: |c, k, _| $entry_mut(c, k).$($field).+ = $default.$($field).+,
            }),
        }
    };
}

/// A leaf holding an `Option` in `$field`: unset by default.
macro_rules! optional {
    ($name:literal, $help:literal, $kind:expr, $entry:path, $entry_mut:path, $($field:ident).+) => {
        Node {
            name: $name,
            help: $help,
            kind: NodeKind::Leaf(&Leaf {
                value: Some($kind.spec),
                multi: false,
                default: || None,
                canonical: |t, s| $kind.canonical(t, s),
                get: |c, k| $entry(c, k)
                    .and_then(|e| e.$($field).+.as_ref())
                    .map(|v| vec![($kind.format)(v)])
                    .unwrap_or_default(),
                set: |c, k, t, s| {
                    let v = ($kind.parse)(t, s)?;
                    $entry_mut(c, k).$($field).+ = Some(v);
                    Ok(())
                },
                delete: |c, k, _| $entry_mut(c, k).$($field).+ = None,
            }),
        }
    };
}

/// A leaf that itself parses to an `Option` (a rule's `*` means "any", as unset).
macro_rules! any_or {
    ($name:literal, $help:literal, $kind:expr, $entry:path, $entry_mut:path, $field:ident) => {
        Node {
            name: $name,
            help: $help,
            kind: NodeKind::Leaf(&Leaf {
                value: Some($kind.spec),
                multi: false,
                default: || Some("*".into()),
                canonical: |t, s| $kind.canonical(t, s),
                get: |c, k| match $entry(c, k) {
                    Some(e) if e.$field.is_some() => vec![($kind.format)(&e.$field)],
                    _ => Vec::new(),
                },
                set: |c, k, t, s| {
                    let v = ($kind.parse)(t, s)?;
                    $entry_mut(c, k).$field = v;
                    Ok(())
                },
                delete: |c, k, _| $entry_mut(c, k).$field = None,
            }),
        }
    };
}

/// A leaf holding a `Vec` of values in `$field`, at most `$max`; each `set` adds one.
macro_rules! multi {
    ($name:literal, $help:literal, $kind:expr, $entry:path, $entry_mut:path, $max:expr, $what:literal, $($field:ident).+) => {
        Node {
            name: $name,
            help: $help,
            kind: NodeKind::Leaf(&Leaf {
                value: Some($kind.spec),
                multi: true,
                default: || None,
                canonical: |t, s| $kind.canonical(t, s),
                get: |c, k| $entry(c, k)
                    .map(|e| e.$($field).+.iter().map($kind.format).collect())
                    .unwrap_or_default(),
                set: |c, k, t, s| {
                    let v = ($kind.parse)(t, s)?;
                    let list = &mut $entry_mut(c, k).$($field).+;
                    if !list.contains(&v) {
                        if list.len() >= $max {
                            return Err(LineError::TooMany { what: $what, limit: $max });
                        }
                        list.push(v);
                    }
                    Ok(())
                },
                delete: |c, k, value| {
                    let list = &mut $entry_mut(c, k).$($field).+;
                    match value {
                        Some(v) => list.retain(|x| ($kind.format)(x) != v),
                        None => list.clear(),
                    }
                },
            }),
        }
    };
}

fn system<'c>(c: &'c Config, _: &Keys) -> Option<&'c System> {
    Some(&c.system)
}
fn system_mut<'c>(c: &'c mut Config, _: &Keys) -> &'c mut System {
    &mut c.system
}
fn service<'c>(c: &'c Config, k: &Keys) -> Option<&'c Service> {
    Some(c.service(k.service()))
}
fn service_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut Service {
    c.service_mut(k.service())
}
fn classify<'c>(c: &'c Config, k: &Keys) -> Option<&'c ClassifyRule> {
    c.classify.get(&k.number())
}
fn classify_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut ClassifyRule {
    c.classify.entry(k.number()).or_default()
}
fn route<'c>(c: &'c Config, k: &Keys) -> Option<&'c Route> {
    c.routes.get(&k.pattern())
}
fn route_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut Route {
    c.routes.entry(k.pattern()).or_default()
}
fn queue<'c>(c: &'c Config, _: &Keys) -> Option<&'c QueueSettings> {
    Some(&c.queue)
}
fn queue_mut<'c>(c: &'c mut Config, _: &Keys) -> &'c mut QueueSettings {
    &mut c.queue
}
fn tls<'c>(c: &'c Config, _: &Keys) -> Option<&'c Tls> {
    Some(&c.tls)
}
fn tls_mut<'c>(c: &'c mut Config, _: &Keys) -> &'c mut Tls {
    &mut c.tls
}
fn interface<'c>(c: &'c Config, k: &Keys) -> Option<&'c Interface> {
    c.interfaces.get(&k.name())
}
fn interface_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut Interface {
    c.interfaces.entry(k.name()).or_default()
}
fn channel<'c>(c: &'c Config, k: &Keys) -> Option<&'c Channel> {
    c.channels.get(&k.name())
}
fn channel_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut Channel {
    c.channels.entry(k.name()).or_default()
}
fn category<'c>(c: &'c Config, k: &Keys) -> Option<&'c Category> {
    c.categories.get(&k.name())
}
fn category_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut Category {
    c.categories.entry(k.name()).or_default()
}
fn ruleset<'c>(c: &'c Config, k: &Keys) -> Option<&'c Ruleset> {
    c.rulesets.get(&k.name())
}
fn ruleset_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut Ruleset {
    c.rulesets.entry(k.name()).or_default()
}
fn relay_rule<'c>(c: &'c Config, k: &Keys) -> Option<&'c RelayRule> {
    c.relay_rules.get(&k.number())
}
fn relay_rule_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut RelayRule {
    c.relay_rules.entry(k.number()).or_default()
}

/// The factory values of the containers and entries, for defaults.
fn default_system() -> System {
    System::default()
}
fn default_service() -> Service {
    Service::default()
}
fn default_route() -> Route {
    Route::default()
}
fn default_queue() -> QueueSettings {
    QueueSettings::default()
}
fn default_verify() -> Verify {
    Verify::default()
}

/// `$entry(c, k)` for a service's recipient verification settings.
fn verify<'c>(c: &'c Config, k: &Keys) -> Option<&'c Verify> {
    service(c, k).map(|s| &s.verify)
}
fn verify_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut Verify {
    &mut service_mut(c, k).verify
}

fn tls_default() -> Tls {
    Tls::default()
}

/// A choice between variants of one field: the leaf is set when the field holds its
/// variant. `$get` maps the field to the variant's value (`None` when another variant
/// or nothing is there); `$make` builds the variant from a parsed value.
macro_rules! variant {
    ($name:literal, $help:literal, $kind:expr, $entry:path, $entry_mut:path, $field:ident, $get:expr, $make:expr) => {
        Node {
            name: $name,
            help: $help,
            kind: NodeKind::Leaf(&Leaf {
                value: Some($kind.spec),
                multi: false,
                default: || None,
                canonical: |t, s| $kind.canonical(t, s),
                get: |c, k| {
                    $entry(c, k)
                        .and_then(|e| e.$field.as_ref())
                        .and_then($get)
                        .map(|v| vec![($kind.format)(v)])
                        .unwrap_or_default()
                },
                set: |c, k, t, s| {
                    let v = ($kind.parse)(t, s)?;
                    $entry_mut(c, k).$field = Some($make(v));
                    Ok(())
                },
                delete: |c, k, _| {
                    let e = $entry_mut(c, k);
                    if e.$field.as_ref().and_then($get).is_some() {
                        e.$field = None;
                    }
                },
            }),
        }
    };
}

/// A valueless variant of a choice (`mx`, `allow`).
macro_rules! flag_variant {
    ($name:literal, $help:literal, $entry:path, $entry_mut:path, $field:ident, $value:expr) => {
        Node {
            name: $name,
            help: $help,
            kind: NodeKind::Leaf(&Leaf {
                value: None,
                multi: false,
                default: || None,
                canonical: |_, _| Ok(String::new()),
                get: |c, k| match $entry(c, k) {
                    Some(e) if e.$field == Some($value) => vec![String::new()],
                    _ => Vec::new(),
                },
                set: |c, k, _, _| {
                    $entry_mut(c, k).$field = Some($value);
                    Ok(())
                },
                delete: |c, k, _| {
                    let e = $entry_mut(c, k);
                    if e.$field == Some($value) {
                        e.$field = None;
                    }
                },
            }),
        }
    };
}

// ---- lists ---------------------------------------------------------------------------

fn too_many(what: &'static str, limit: usize) -> LineError {
    LineError::TooMany { what, limit }
}

const SERVICE_KEY: KeySpec = KeySpec {
    placeholder: "inbound|outbound",
    expected: "inbound or outbound",
    // A keyword like any other: any unambiguous prefix will do.
    parse: |t| {
        let lower = t.to_ascii_lowercase();
        ServiceName::ALL
            .into_iter()
            .find(|s| !lower.is_empty() && s.as_str().starts_with(&lower))
            .map(Key::Service)
            .ok_or_else(|| LineError::UnknownKeyword {
                after: String::new(),
                found: t.to_string(),
                expected: vec!["inbound", "outbound"],
            })
    },
};

fn rule_number_key(what: &'static str) -> impl Fn(&str) -> Result<Key, LineError> {
    move |t| number(t, what, RULE_NUMBER_LIMIT).map(Key::Number)
}

/// Keys in a map's order.
fn keys_of<K: Clone, V>(map: &std::collections::BTreeMap<K, V>, key: fn(K) -> Key) -> Vec<Key> {
    map.keys().cloned().map(key).collect()
}

/// Makes `map[key]` exist, refusing one more than `limit` entries.
fn create_in<K: Ord, V: Default>(
    map: &mut std::collections::BTreeMap<K, V>,
    key: K,
    what: &'static str,
    limit: usize,
) -> Result<(), LineError> {
    if !map.contains_key(&key) {
        if map.len() >= limit {
            return Err(too_many(what, limit));
        }
        map.insert(key, V::default());
    }
    Ok(())
}

static SERVICE: List = List {
    key: SERVICE_KEY,
    max_entries: 2,
    children: SERVICE_CHILDREN,
    one_line: false,
    fixed: true,
    entries: |_, _| ServiceName::ALL.into_iter().map(Key::Service).collect(),
    create: |_, _| Ok(()),
    remove: |c, k| *c.service_mut(k.service()) = Service::default(),
};

static CLASSIFY: List = List {
    key: KeySpec {
        placeholder: "N",
        expected: "a rule number from 1 to 65535",
        parse: |t| rule_number_key("a classify rule number")(t),
    },
    max_entries: MAX_CLASSIFY_RULES,
    children: CLASSIFY_CHILDREN,
    one_line: true,
    fixed: false,
    entries: |c, _| keys_of(&c.classify, Key::Number),
    create: |c, k| {
        create_in(
            &mut c.classify,
            k.number(),
            "classify rules",
            MAX_CLASSIFY_RULES,
        )
    },
    remove: |c, k| {
        c.classify.remove(&k.number());
    },
};

static ROUTE: List = List {
    key: KeySpec {
        placeholder: "PATTERN",
        expected: value::PATTERN_EXPECTED,
        parse: |t| value::pattern(t).map(Key::Pattern),
    },
    max_entries: MAX_ROUTES,
    children: ROUTE_CHILDREN,
    one_line: false,
    fixed: false,
    entries: |c, _| keys_of(&c.routes, Key::Pattern),
    create: |c, k| create_in(&mut c.routes, k.pattern(), "routes", MAX_ROUTES),
    remove: |c, k| {
        c.routes.remove(&k.pattern());
    },
};

static INTERFACE: List = List {
    key: KeySpec {
        placeholder: "NAME",
        expected: value::INTERFACE_EXPECTED,
        parse: |t| value::interface_name(t).map(Key::Name),
    },
    max_entries: MAX_INTERFACES,
    children: INTERFACE_CHILDREN,
    one_line: false,
    fixed: false,
    entries: |c, _| keys_of(&c.interfaces, Key::Name),
    create: |c, k| create_in(&mut c.interfaces, k.name(), "interfaces", MAX_INTERFACES),
    remove: |c, k| {
        c.interfaces.remove(&k.name());
    },
};

static INTERFACE_CHILDREN: &[Node] = &[multi!(
    "address",
    "A static address with its prefix length (read at boot on an appliance)",
    INTERFACE_ADDRESS,
    interface,
    interface_mut,
    MAX_INTERFACE_ADDRESSES,
    "addresses on one interface",
    addresses
)];

static CHANNEL: List = List {
    key: KeySpec {
        placeholder: "NAME",
        expected: value::CHANNEL_EXPECTED,
        parse: |t| value::channel_name(t).map(Key::Name),
    },
    max_entries: MAX_CHANNELS,
    children: CHANNEL_CHILDREN,
    one_line: false,
    fixed: false,
    entries: |c, _| keys_of(&c.channels, Key::Name),
    create: |c, k| create_in(&mut c.channels, k.name(), "channels", MAX_CHANNELS),
    remove: |c, k| {
        c.channels.remove(&k.name());
    },
};

static CATEGORY: List = List {
    key: KeySpec {
        placeholder: "NAME",
        expected: value::CATEGORY_EXPECTED,
        parse: |t| value::category(t).map(Key::Name),
    },
    max_entries: MAX_CATEGORIES,
    children: CATEGORY_CHILDREN,
    one_line: false,
    fixed: false,
    entries: |c, _| keys_of(&c.categories, Key::Name),
    create: |c, k| create_in(&mut c.categories, k.name(), "categories", MAX_CATEGORIES),
    remove: |c, k| {
        c.categories.remove(&k.name());
    },
};

static RULESET: List = List {
    key: KeySpec {
        placeholder: "NAME",
        expected: value::RULESET_EXPECTED,
        parse: |t| value::ruleset_name(t).map(Key::Name),
    },
    max_entries: MAX_RULESETS,
    children: RULESET_CHILDREN,
    one_line: false,
    fixed: false,
    entries: |c, _| keys_of(&c.rulesets, Key::Name),
    create: |c, k| create_in(&mut c.rulesets, k.name(), "rulesets", MAX_RULESETS),
    remove: |c, k| {
        c.rulesets.remove(&k.name());
    },
};

static RELAY_RULE: List = List {
    key: KeySpec {
        placeholder: "N",
        expected: "a rule number from 1 to 65535",
        parse: |t| rule_number_key("a relay rule number")(t),
    },
    max_entries: MAX_RELAY_RULES,
    children: RELAY_RULE_CHILDREN,
    one_line: true,
    fixed: false,
    entries: |c, _| keys_of(&c.relay_rules, Key::Number),
    create: |c, k| {
        create_in(
            &mut c.relay_rules,
            k.number(),
            "relay rules",
            MAX_RELAY_RULES,
        )
    },
    remove: |c, k| {
        c.relay_rules.remove(&k.number());
    },
};

// ---- the tree ------------------------------------------------------------------------

/// The top of the configuration tree, in canonical order.
pub static ROOT: &[Node] = &[
    Node {
        name: "system",
        help: "The gateway's name, its DNS client, token, remote syslog, console, watchdog and stopping",
        kind: NodeKind::Container(SYSTEM_CHILDREN),
    },
    Node {
        name: "service",
        help: "The inbound (internet-facing) and outbound (inside-facing) SMTP services",
        kind: NodeKind::List(&SERVICE),
    },
    Node {
        name: "classify",
        help: "Connection classification rules by number, first match wins (PORT_ACCESS)",
        kind: NodeKind::List(&CLASSIFY),
    },
    Node {
        name: "interface",
        help: "Network interfaces of an appliance and their static addresses",
        kind: NodeKind::List(&INTERFACE),
    },
    Node {
        name: "route",
        help: "Where mail for a domain pattern goes: relay list, smarthost or MX",
        kind: NodeKind::List(&ROUTE),
    },
    Node {
        name: "queue",
        help: "Retry schedule, queue lifetime and how many messages are kept whole in memory",
        kind: NodeKind::Container(QUEUE_CHILDREN),
    },
    Node {
        name: "tls",
        help: "TLS versions, cipher suites and trusted CAs, for both services and delivery",
        kind: NodeKind::Container(TLS_CHILDREN),
    },
    Node {
        name: "channel",
        help: "Named bundles of keywords that govern a session or a delivery",
        kind: NodeKind::List(&CHANNEL),
    },
    Node {
        name: "category",
        help: "What a classification category selects: its ruleset and source channel",
        kind: NodeKind::List(&CATEGORY),
    },
    Node {
        name: "ruleset",
        help: "Security rulesets: which SASL mechanisms are offered, and which need TLS",
        kind: NodeKind::List(&RULESET),
    },
    Node {
        name: "relay-rule",
        help: "Relay rules by number, first match wins (ORIG_SEND_ACCESS)",
        kind: NodeKind::List(&RELAY_RULE),
    },
];

static SYSTEM_CHILDREN: &[Node] = &[
    scalar!(
        "host-name",
        "The name given in the greeting, EHLO and Received headers",
        HOST_NAME,
        system,
        system_mut,
        default_system(),
        host_name
    ),
    Node {
        name: "dns",
        help: "The DNS client used for MX routes and client names",
        kind: NodeKind::Container(DNS_CHILDREN),
    },
    Node {
        name: "token",
        help: "The crypto token that holds the keys: the software token or a PKCS#11 module",
        kind: NodeKind::Container(TOKEN_CHILDREN),
    },
    Node {
        name: "auth-throttle",
        help: "Brute-force throttling of authentication by address, network and user",
        kind: NodeKind::Container(AUTH_THROTTLE_CHILDREN),
    },
    optional!(
        "postmaster",
        "Where mail to our postmaster goes (default postmaster@HOST-NAME by its route)",
        MAILBOX,
        system,
        system_mut,
        postmaster
    ),
    optional!(
        "gateway",
        "The default gateway of an appliance's network (read at boot; none on the host)",
        GATEWAY,
        system,
        system_mut,
        gateway
    ),
    Node {
        name: "syslog",
        help: "Remote syslog: every log line also goes out as RFC 5424 over UDP",
        kind: NodeKind::Container(SYSLOG_CHILDREN),
    },
    Node {
        name: "console",
        help: "The console sessions: serial line, standard input and drawbridge cli",
        kind: NodeKind::Container(CONSOLE_CHILDREN),
    },
    Node {
        name: "watchdog",
        help: "Restarting a hung gateway, resetting a hung appliance",
        kind: NodeKind::Container(WATCHDOG_CHILDREN),
    },
    Node {
        name: "login",
        help: "What console logins may do (their passwords: login add and login password)",
        kind: NodeKind::Container(LOGIN_CHILDREN),
    },
    scalar!(
        "stop-grace",
        "How long sessions and deliveries in progress have to finish when the gateway stops (0s: cut at once)",
        STOP_GRACE_DURATION,
        system,
        system_mut,
        default_system(),
        stop_grace
    ),
];

static LOGIN_CHILDREN: &[Node] = &[Node {
    name: "user",
    help: "A console login by name; one not named here is a super-user",
    kind: NodeKind::List(&LOGIN_USER),
}];

/// Most console logins given a class: far more administrators than an appliance has.
pub const MAX_LOGINS: usize = 64;

static LOGIN_USER: List = List {
    key: KeySpec {
        placeholder: "USER",
        expected: value::LOGIN_EXPECTED,
        parse: |t| value::login_name(t).map(Key::Name),
    },
    max_entries: MAX_LOGINS,
    children: LOGIN_USER_CHILDREN,
    one_line: true,
    fixed: false,
    entries: |c, _| keys_of(&c.system.logins, Key::Name),
    create: |c, k| create_in(&mut c.system.logins, k.name(), "console logins", MAX_LOGINS),
    remove: |c, k| {
        c.system.logins.remove(&k.name());
    },
};

fn login<'c>(c: &'c Config, k: &Keys) -> Option<&'c Login> {
    c.system.logins.get(&k.name())
}
fn login_mut<'c>(c: &'c mut Config, k: &Keys) -> &'c mut Login {
    c.system.logins.entry(k.name()).or_default()
}

const LOGIN_CLASS: Kind<LoginClass> = Kind {
    spec: &ValueSpec {
        placeholder: "super-user|operator|read-only",
        expected: "super-user (everything), operator (also the queue) or read-only (look)",
        choices: &["super-user", "operator", "read-only"],
        suffix: None,
    },
    parse: |t, _| {
        let t = t.to_ascii_lowercase();
        [
            LoginClass::SuperUser,
            LoginClass::Operator,
            LoginClass::ReadOnly,
        ]
        .into_iter()
        .find(|c| c.name() == t)
        .ok_or_else(|| LineError::Value {
            value: t.clone(),
            problem: "is not a login class: expected super-user, operator or read-only".into(),
        })
    },
    format: |c| c.name().to_string(),
};

static LOGIN_USER_CHILDREN: &[Node] = &[scalar!(
    "class",
    "What the login may do",
    LOGIN_CLASS,
    login,
    login_mut,
    Login::default(),
    class
)];

static WATCHDOG_CHILDREN: &[Node] = &[scalar!(
    "timeout",
    "Restart a gateway whose event loop is silent this long, reset an appliance whose PID 1 is (0s: off; read at boot)",
    WATCHDOG_DURATION,
    system,
    system_mut,
    default_system(),
    watchdog_timeout
)];

static CONSOLE_CHILDREN: &[Node] = &[scalar!(
    "idle-timeout",
    "Log out a console session nobody has typed at for this long (0s: never)",
    DURATION,
    system,
    system_mut,
    default_system(),
    console_idle_timeout
)];

const MAILBOX: Kind<crate::proto::smtp::address::Mailbox> = Kind {
    spec: &ValueSpec {
        placeholder: "ADDRESS",
        expected: "a mail address such as hostmaster@example.com",
        choices: &[],
        suffix: None,
    },
    parse: |t, _| {
        crate::proto::smtp::address::Mailbox::parse(t, true).map_err(|_| LineError::Value {
            value: t.to_string(),
            problem:
                "is not a mail address: expected a mail address such as hostmaster@example.com"
                    .into(),
        })
    },
    format: |m| m.to_string(),
};

static SYSLOG_CHILDREN: &[Node] = &[multi!(
    "host",
    "A syslog receiver (RFC 5424 over UDP, RFC 5426), port 514 unless given",
    SYSLOG_HOST,
    system,
    system_mut,
    MAX_SYSLOG_HOSTS,
    "syslog hosts",
    syslog_hosts
)];

fn token<'c>(c: &'c Config, _: &Keys) -> Option<&'c TokenSettings> {
    Some(&c.system.token)
}
fn token_mut<'c>(c: &'c mut Config, _: &Keys) -> &'c mut TokenSettings {
    &mut c.system.token
}

const TOKEN_BACKEND: Kind<TokenBackend> = Kind {
    spec: &ValueSpec {
        placeholder: "soft|pkcs11",
        expected: "soft or pkcs11",
        choices: &["soft", "pkcs11"],
        suffix: None,
    },
    parse: |t, _| match t.to_ascii_lowercase().as_str() {
        "soft" => Ok(TokenBackend::Soft),
        "pkcs11" => Ok(TokenBackend::Pkcs11),
        _ => Err(LineError::Value {
            value: t.to_string(),
            problem: "is not a token backend: expected soft or pkcs11".into(),
        }),
    },
    format: |b| {
        match b {
            TokenBackend::Soft => "soft",
            TokenBackend::Pkcs11 => "pkcs11",
        }
        .to_string()
    },
};
const TOKEN_LABEL: Kind<String> = Kind {
    spec: &ValueSpec {
        placeholder: "LABEL",
        expected: value::TOKEN_LABEL_EXPECTED,
        choices: &[],
        suffix: None,
    },
    parse: |t, _| value::token_label(t),
    format: String::clone,
};

static TOKEN_CHILDREN: &[Node] = &[
    scalar!(
        "backend",
        "soft: keys sealed in the state directory; pkcs11: a module loaded at start (read at start only)",
        TOKEN_BACKEND,
        token,
        token_mut,
        TokenSettings::default(),
        backend
    ),
    optional!(
        "module",
        "The PKCS#11 module (a shared library) of the pkcs11 backend",
        PATH,
        token,
        token_mut,
        module
    ),
    optional!(
        "label",
        "The token's label (default drawbridge)",
        TOKEN_LABEL,
        token,
        token_mut,
        label
    ),
    optional!(
        "pin-file",
        "The PIN file, label:PIN lines (default sslpassword.conf in the state directory)",
        PATH,
        token,
        token_mut,
        pin_file
    ),
];

fn auth_throttle<'c>(c: &'c Config, _: &Keys) -> Option<&'c super::AuthThrottle> {
    Some(&c.system.auth_throttle)
}
fn auth_throttle_mut<'c>(c: &'c mut Config, _: &Keys) -> &'c mut super::AuthThrottle {
    &mut c.system.auth_throttle
}

static AUTH_THROTTLE_CHILDREN: &[Node] = &[
    scalar!(
        "address-limit",
        "Failures from one client address before it is blocked",
        AUTH_FAILURES,
        auth_throttle,
        auth_throttle_mut,
        super::AuthThrottle::default(),
        address_limit
    ),
    scalar!(
        "network-limit",
        "Failures from one /24 or /64 before the whole network is blocked",
        AUTH_FAILURES,
        auth_throttle,
        auth_throttle_mut,
        super::AuthThrottle::default(),
        network_limit
    ),
    scalar!(
        "user-limit",
        "Failures for one user name, from anywhere, before that name is blocked",
        AUTH_FAILURES,
        auth_throttle,
        auth_throttle_mut,
        super::AuthThrottle::default(),
        user_limit
    ),
    scalar!(
        "block-time",
        "How long a block lasts",
        NONZERO_DURATION,
        auth_throttle,
        auth_throttle_mut,
        super::AuthThrottle::default(),
        block_time
    ),
    scalar!(
        "table-size",
        "Entries (addresses, networks, user names) remembered at most",
        AUTH_TABLE,
        auth_throttle,
        auth_throttle_mut,
        super::AuthThrottle::default(),
        table_size
    ),
];

static DNS_CHILDREN: &[Node] = &[
    multi!(
        "resolver",
        "A DNS resolver, asked in the order given (none: those of /etc/resolv.conf)",
        RESOLVER,
        system,
        system_mut,
        MAX_DNS_RESOLVERS,
        "DNS resolvers",
        dns_resolvers
    ),
    scalar!(
        "timeout",
        "How long one query waits before the next resolver is asked",
        NONZERO_DURATION,
        system,
        system_mut,
        default_system(),
        dns_timeout
    ),
    scalar!(
        "client-names",
        "Look up each client's name (PTR, confirmed by A/AAAA) for logs and Received headers",
        YES_NO,
        system,
        system_mut,
        default_system(),
        client_names
    ),
];

static SERVICE_CHILDREN: &[Node] = &[
    multi!(
        "listen",
        "An address and port to listen on, with STARTTLS",
        LISTEN,
        service,
        service_mut,
        MAX_LISTEN_ADDRESSES,
        "listen addresses in one service",
        listen
    ),
    multi!(
        "tls-listen",
        "An address and port to listen on with implicit TLS (RFC 8314)",
        LISTEN,
        service,
        service_mut,
        MAX_LISTEN_ADDRESSES,
        "TLS listen addresses in one service",
        tls_listen
    ),
    Node {
        name: "disable",
        help: "Turn the service off on purpose (it listens nowhere)",
        kind: NodeKind::Leaf(&Leaf {
            value: None,
            multi: false,
            default: || None,
            canonical: |_, _| Ok(String::new()),
            get: |c, k| match service(c, k) {
                Some(s) if s.disabled => vec![String::new()],
                _ => Vec::new(),
            },
            set: |c, k, _, _| {
                service_mut(c, k).disabled = true;
                Ok(())
            },
            delete: |c, k, _| service_mut(c, k).disabled = false,
        }),
    },
    optional!(
        "certificate",
        "The stored certificate served without SNI (default: the host name's)",
        CERTIFICATE_NAME,
        service,
        service_mut,
        certificate
    ),
    optional!(
        "auth",
        "Offer SMTP AUTH at all (default: no on inbound, yes on outbound)",
        YES_NO,
        service,
        service_mut,
        auth
    ),
    optional!(
        "auth-mechanisms",
        "Narrows the SASL mechanisms the client's ruleset offers",
        MECHANISMS,
        service,
        service_mut,
        auth_mechanisms
    ),
    multi!(
        "allow-filter",
        "An access filter that admits clients (seed 002 syntax), checked first",
        FILTER_RULE,
        service,
        service_mut,
        MAX_FILTERS,
        "allow filters in one service",
        allow_filters
    ),
    multi!(
        "deny-filter",
        "An access filter that refuses clients, checked after the allow filters",
        FILTER_RULE,
        service,
        service_mut,
        MAX_FILTERS,
        "deny filters in one service",
        deny_filters
    ),
    multi!(
        "access-filter",
        "A compact +allow$-deny access filter",
        COMPACT_FILTER,
        service,
        service_mut,
        MAX_FILTERS,
        "compact filters in one service",
        compact_filters
    ),
    optional!(
        "channel",
        "The source channel of this service's sessions",
        CHANNEL_NAME,
        service,
        service_mut,
        channel
    ),
    scalar!(
        "max-connections",
        "Most client connections at once",
        CONNECTIONS,
        service,
        service_mut,
        default_service(),
        max_connections
    ),
    scalar!(
        "max-connections-per-ip",
        "Most connections at once from one client address",
        CONNECTIONS,
        service,
        service_mut,
        default_service(),
        max_connections_per_ip
    ),
    scalar!(
        "proxy-protocol",
        "Connections from proxy-from must begin with a PROXY header (v1 or v2), whose client is then the client for everything",
        YES_NO,
        service,
        service_mut,
        default_service(),
        proxy_protocol
    ),
    multi!(
        "proxy-from",
        "A load balancer's network: the only addresses trusted to send a PROXY header",
        CIDR,
        service,
        service_mut,
        MAX_PROXY_NETWORKS,
        "proxy-from networks in one service",
        proxy_from
    ),
    scalar!(
        "idle-timeout",
        "How long the server waits for the next command (RFC 5321 §4.5.3.2.7)",
        NONZERO_DURATION,
        service,
        service_mut,
        default_service(),
        idle_timeout
    ),
    scalar!(
        "data-timeout",
        "How long the server waits for the next data block (RFC 5321 §4.5.3.2.5)",
        NONZERO_DURATION,
        service,
        service_mut,
        default_service(),
        data_timeout
    ),
    scalar!(
        "command-deadline",
        "A command line must be complete this long after its first octet (octets do not extend it)",
        NONZERO_DURATION,
        service,
        service_mut,
        default_service(),
        command_deadline
    ),
    scalar!(
        "data-deadline",
        "Message content must be complete this long after it starts, plus 1s per min-data-rate octets",
        NONZERO_DURATION,
        service,
        service_mut,
        default_service(),
        data_deadline
    ),
    scalar!(
        "min-data-rate",
        "Octets per second a client must keep up in message content",
        DATA_RATE,
        service,
        service_mut,
        default_service(),
        min_data_rate
    ),
    scalar!(
        "stress-threshold",
        "Percent of max-connections open at which the service is under stress",
        STRESS_THRESHOLD,
        service,
        service_mut,
        default_service(),
        stress_threshold
    ),
    scalar!(
        "stress-timeout",
        "The longest timeout or deadline of any session while the service is under stress",
        NONZERO_DURATION,
        service,
        service_mut,
        default_service(),
        stress_timeout
    ),
    scalar!(
        "max-session-time",
        "Longest a session may last",
        NONZERO_DURATION,
        service,
        service_mut,
        default_service(),
        max_session_time
    ),
    scalar!(
        "max-messages-per-session",
        "Most messages in one session",
        MESSAGES_PER_SESSION,
        service,
        service_mut,
        default_service(),
        max_messages_per_session
    ),
    scalar!(
        "max-message-size",
        "Largest message accepted, enforced while reading (RFC 1870 SIZE)",
        SIZE,
        service,
        service_mut,
        default_service(),
        max_message_size
    ),
    scalar!(
        "max-recipients",
        "Most recipients in one transaction (RFC 5321 §4.5.3.1.8: at least 100)",
        RECIPIENTS,
        service,
        service_mut,
        default_service(),
        max_recipients
    ),
    scalar!(
        "max-line-length",
        "Longest text line in message data, octets with CRLF (1000 for RFC 5321's advice to senders)",
        LINE_LENGTH,
        service,
        service_mut,
        default_service(),
        max_line_length
    ),
    scalar!(
        "error-limit",
        "Errors a client may make before it is disconnected with 421",
        ERRORS,
        service,
        service_mut,
        default_service(),
        error_limit
    ),
    scalar!(
        "greet-delay",
        "Wait before the greeting; a client that talks meanwhile is refused",
        DURATION,
        service,
        service_mut,
        default_service(),
        greet_delay
    ),
    scalar!(
        "ehlo-keywords",
        "Which EHLO extensions are advertised (EhloKeywords)",
        EHLO,
        service,
        service_mut,
        default_service(),
        ehlo_keywords
    ),
    scalar!(
        "verify-recipients",
        "Ask the internal server whether a recipient exists before accepting it",
        YES_NO,
        verify,
        verify_mut,
        default_verify(),
        enabled
    ),
    scalar!(
        "verify-positive-ttl",
        "How long a \"user exists\" answer is remembered",
        DURATION,
        verify,
        verify_mut,
        default_verify(),
        positive_ttl
    ),
    scalar!(
        "verify-negative-ttl",
        "How long a \"no such user\" answer is remembered",
        DURATION,
        verify,
        verify_mut,
        default_verify(),
        negative_ttl
    ),
    scalar!(
        "verify-unreachable",
        "With every internal server unreachable: accept, or answer 451",
        UNREACHABLE,
        verify,
        verify_mut,
        default_verify(),
        accept_when_unreachable
    ),
];

static CLASSIFY_CHILDREN: &[Node] = &[
    optional!(
        "local",
        "Matches the address the client connected to",
        CIDR,
        classify,
        classify_mut,
        local
    ),
    optional!(
        "local-port",
        "Matches the port the client connected to",
        PORT,
        classify,
        classify_mut,
        local_port
    ),
    optional!(
        "remote",
        "Matches the client's address",
        CIDR,
        classify,
        classify_mut,
        remote
    ),
    optional!(
        "remote-port",
        "Matches the client's port",
        PORT,
        classify,
        classify_mut,
        remote_port
    ),
    variant!(
        "category",
        "The category the client is in (INTERNAL may relay anywhere)",
        CATEGORY_NAME,
        classify,
        classify_mut,
        action,
        |a: &ClassifyAction| match a {
            ClassifyAction::Category(c) => Some(c),
            ClassifyAction::Deny(_) => None,
        },
        ClassifyAction::Category
    ),
    variant!(
        "deny",
        "Refuse the connection with this text",
        DENY_TEXT,
        classify,
        classify_mut,
        action,
        |a: &ClassifyAction| match a {
            ClassifyAction::Deny(t) => Some(t),
            ClassifyAction::Category(_) => None,
        },
        ClassifyAction::Deny
    ),
];

static ROUTE_CHILDREN: &[Node] = &[
    variant!(
        "relay",
        "Relay to these internal hosts, round-robin with failover (our own domains)",
        HOSTS,
        route,
        route_mut,
        next_hop,
        |h: &NextHop| match h {
            NextHop::Relay(hosts) => Some(hosts),
            _ => None,
        },
        NextHop::Relay
    ),
    variant!(
        "smarthost",
        "Send everything the route matches to these hosts",
        HOSTS,
        route,
        route_mut,
        next_hop,
        |h: &NextHop| match h {
            NextHop::Smarthost(hosts) => Some(hosts),
            _ => None,
        },
        NextHop::Smarthost
    ),
    flag_variant!(
        "mx",
        "Look up the recipient domain's MX hosts (RFC 5321 §5.1)",
        route,
        route_mut,
        next_hop,
        NextHop::Mx
    ),
    scalar!(
        "failover-timeout",
        "How long to wait for a relay host before trying the next",
        NONZERO_DURATION,
        route,
        route_mut,
        default_route(),
        failover_timeout
    ),
    scalar!(
        "avoid-time",
        "How long a relay host that failed is passed over",
        DURATION,
        route,
        route_mut,
        default_route(),
        avoid_time
    ),
    scalar!(
        "concurrency",
        "Most connections at once to this route's next hop",
        CONCURRENCY,
        route,
        route_mut,
        default_route(),
        concurrency
    ),
    scalar!(
        "mx-port",
        "The port of the hosts an MX lookup finds",
        PORT,
        route,
        route_mut,
        default_route(),
        mx_port
    ),
    optional!(
        "channel",
        "The destination channel of deliveries on this route",
        CHANNEL_NAME,
        route,
        route_mut,
        channel
    ),
    scalar!(
        "danger-tls-no-verify",
        "Skip verifying the next hop's certificate even where TLS is required",
        YES_NO,
        route,
        route_mut,
        default_route(),
        danger_tls_no_verify
    ),
    Node {
        name: "auth",
        help: "Log in to the next hop (client SMTP AUTH: SCRAM-SHA-256, PLAIN or LOGIN)",
        kind: NodeKind::Container(ROUTE_AUTH_CHILDREN),
    },
];

static ROUTE_AUTH_CHILDREN: &[Node] = &[
    optional!(
        "user",
        "The user to log in as; its password is set with `drawbridge secret set NAME`",
        AUTH_USER,
        route,
        route_mut,
        auth_user
    ),
    scalar!(
        "danger-cleartext",
        "Send the password even where the connection has no TLS",
        YES_NO,
        route,
        route_mut,
        default_route(),
        danger_auth_cleartext
    ),
];

static QUEUE_CHILDREN: &[Node] = &[
    scalar!(
        "retry",
        "Delays between delivery attempts; the last one repeats",
        RETRY,
        queue,
        queue_mut,
        default_queue(),
        retry
    ),
    scalar!(
        "max-lifetime",
        "A message older than this is returned to its sender",
        NONZERO_DURATION,
        queue,
        queue_mut,
        default_queue(),
        max_lifetime
    ),
    scalar!(
        "delay-notice",
        "After this long undelivered the sender is told once (0s: never)",
        DURATION,
        queue,
        queue_mut,
        default_queue(),
        delay_notice
    ),
    scalar!(
        "active-limit",
        "Most messages kept in memory; the rest wait in their files until there is room",
        ACTIVE,
        queue,
        queue_mut,
        default_queue(),
        active_limit
    ),
];

static TLS_CHILDREN: &[Node] = &[
    Node {
        name: "versions",
        help: "The TLS versions offered and accepted",
        kind: NodeKind::Leaf(&Leaf {
            value: Some(TLS_VERSIONS.spec),
            multi: false,
            default: || {
                let d = tls_default();
                Some((TLS_VERSIONS.format)(&(d.tls12, d.tls13)))
            },
            canonical: |t, s| TLS_VERSIONS.canonical(t, s),
            get: |c, _| {
                let d = tls_default();
                if (c.tls.tls12, c.tls.tls13) == (d.tls12, d.tls13) {
                    Vec::new()
                } else {
                    vec![(TLS_VERSIONS.format)(&(c.tls.tls12, c.tls.tls13))]
                }
            },
            set: |c, _, t, s| {
                let (tls12, tls13) = (TLS_VERSIONS.parse)(t, s)?;
                c.tls.tls12 = tls12;
                c.tls.tls13 = tls13;
                Ok(())
            },
            delete: |c, _, _| {
                let d = tls_default();
                c.tls.tls12 = d.tls12;
                c.tls.tls13 = d.tls13;
            },
        }),
    },
    scalar!(
        "cipher-suites",
        "The cipher suites, by the provider's names (none: the provider's default set)",
        CIPHER_SUITES,
        tls,
        tls_mut,
        tls_default(),
        cipher_suites
    ),
    optional!(
        "client-ca-file",
        "CA certificates (PEM): servers ask clients for a certificate and verify it",
        PATH,
        tls,
        tls_mut,
        client_ca_file
    ),
    optional!(
        "server-ca-file",
        "CA certificates (PEM) trusted for next hops besides the public roots",
        PATH,
        tls,
        tls_mut,
        server_ca_file
    ),
    optional!(
        "client-certificate",
        "The stored certificate presented to next hops that ask for one (default: none)",
        CERTIFICATE_NAME,
        tls,
        tls_mut,
        client_certificate
    ),
];

static CHANNEL_CHILDREN: &[Node] = &[scalar!(
    "keywords",
    "The channel's keywords, such as \"maytls maysaslserver saslswitchchannel tcp_auth\"",
    CHANNEL_KEYWORDS,
    channel,
    channel_mut,
    Channel::default(),
    keywords
)];

static CATEGORY_CHILDREN: &[Node] = &[
    optional!(
        "ruleset",
        "The security ruleset of the category's clients",
        RULESET_NAME,
        category,
        category_mut,
        ruleset
    ),
    optional!(
        "channel",
        "The source channel of the category's sessions",
        CHANNEL_NAME,
        category,
        category_mut,
        channel
    ),
];

static RULESET_CHILDREN: &[Node] = &[
    scalar!(
        "mechanisms",
        "The SASL mechanisms offered",
        MECHANISMS,
        ruleset,
        ruleset_mut,
        Ruleset::default(),
        mechanisms
    ),
    Node {
        name: "restrict",
        help: "Offer a mechanism only once TLS is up (RESTRICT=PLAIN:40)",
        kind: NodeKind::Leaf(&Leaf {
            value: Some(RESTRICTED_MECHANISM.spec),
            multi: true,
            default: || None,
            canonical: |t, s| RESTRICTED_MECHANISM.canonical(t, s),
            get: |c, k| {
                ruleset(c, k)
                    .map(|r| {
                        r.needs_tls
                            .iter()
                            .map(|m| (RESTRICTED_MECHANISM.format)(&m))
                            .collect()
                    })
                    .unwrap_or_default()
            },
            set: |c, k, t, s| {
                let m = (RESTRICTED_MECHANISM.parse)(t, s)?;
                let r = ruleset_mut(c, k);
                r.needs_tls = r.needs_tls.with(m);
                Ok(())
            },
            delete: |c, k, value| {
                let r = ruleset_mut(c, k);
                r.needs_tls = match value.and_then(|v| MechanismName::parse(v.as_bytes())) {
                    Some(m) => r.needs_tls.without(m),
                    None => MechanismSet::EMPTY,
                };
            },
        }),
    },
];

static RELAY_RULE_CHILDREN: &[Node] = &[
    any_or!(
        "source",
        "Matches the session's source channel (after TLS and SASL switching)",
        RULE_CHANNEL,
        relay_rule,
        relay_rule_mut,
        source
    ),
    any_or!(
        "from",
        "Matches the envelope sender",
        ADDRESS_PATTERN,
        relay_rule,
        relay_rule_mut,
        from
    ),
    any_or!(
        "destination",
        "Matches the destination channel of the recipient's route",
        RULE_CHANNEL,
        relay_rule,
        relay_rule_mut,
        destination
    ),
    any_or!(
        "to",
        "Matches the recipient",
        ADDRESS_PATTERN,
        relay_rule,
        relay_rule_mut,
        to
    ),
    flag_variant!(
        "allow",
        "Relay the recipient",
        relay_rule,
        relay_rule_mut,
        action,
        RelayAction::Allow
    ),
    variant!(
        "deny",
        "Refuse the recipient with this reply text (a leading enhanced code is used)",
        DENY_TEXT,
        relay_rule,
        relay_rule_mut,
        action,
        |a: &RelayAction| match a {
            RelayAction::Deny(t) => Some(t),
            RelayAction::Allow => None,
        },
        RelayAction::Deny
    ),
];
