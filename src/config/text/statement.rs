//! One `set` statement: parsed from a line's words into a checked [`Statement`], applied
//! to a [`Config`], and printed back in canonical form.

use super::LineError;
use super::lex;
use super::value;
use crate::config::{
    AddressPattern, Channel, ChannelKeyword, ClassifyAction, ClassifyRule, Config, DomainPattern,
    EhloKeywords, NextHop, RelayAction, RelayRule, Route, Ruleset, ServiceName,
};
use crate::sasl::{MechanismName, MechanismSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

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
    min: crate::config::MIN_RECIPIENTS,
    max: u32::MAX,
    source: Some("RFC 5321 §4.5.3.1.8 requires accepting at least 100 recipients"),
};
/// RFC 5321 §4.5.3.1.6: a text line of 1000 octets with its CRLF must be accepted. At most
/// 64 KiB: a session may buffer one line of this length.
pub const LINE_LENGTH_LIMIT: Limit = Limit {
    min: crate::config::DEFAULT_TEXT_LINE,
    max: 65536,
    source: Some("RFC 5321 §4.5.3.1.6 requires accepting text lines of 1000 octets"),
};
/// Client errors before a disconnect: at least one.
pub const ERROR_LIMIT: Limit = Limit::new(1, u32::MAX);
/// Connections at once to one route's next hop.
pub const CONCURRENCY_LIMIT: Limit = Limit::new(1, 1000);
/// Classify rule numbers.
pub const RULE_NUMBER_LIMIT: Limit = Limit::new(1, 65535);
/// At most this many channels: the seeds' sites used a few dozen.
pub const MAX_CHANNELS: usize = 256;
/// At most this many DNS resolvers: resolv.conf's own limit is 3; a few more cost nothing.
pub const MAX_DNS_RESOLVERS: usize = 8;
/// Most interfaces configured: 16, more than any appliance has ports.
pub const MAX_INTERFACES: usize = 16;
/// Most static addresses on one interface: 8, 32 octets each in memory.
pub const MAX_INTERFACE_ADDRESSES: usize = 8;
/// RFC 1870 leaves the size limit to the server; below 1 KiB no real message fits.
pub const MIN_MESSAGE_SIZE: u64 = 1024;

/// One checked `set` statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    /// `set system host-name NAME`
    HostName(String),
    /// `set system dns resolver ADDR`: adds a resolver unless it is there already.
    DnsResolver(SocketAddr),
    /// `set system dns timeout DUR`
    DnsTimeout(Duration),
    /// `set service SVC …`
    Service(ServiceName, ServiceSetting),
    /// `set classify N …`: replaces rule N as a whole.
    Classify(u32, ClassifyRule),
    /// `set route PATTERN …`
    Route(DomainPattern, RouteSetting),
    /// `set queue …`
    Queue(QueueSetting),
    /// `set tls …`
    Tls(TlsSetting),
    /// `set channel NAME keywords "…"`: replaces the channel's keywords.
    Channel(String, Vec<ChannelKeyword>),
    /// `set category NAME …`
    Category(String, CategorySetting),
    /// `set ruleset NAME …`
    Ruleset(String, RulesetSetting),
    /// `set relay-rule N …`: replaces rule N as a whole.
    RelayRule(u32, RelayRule),
    /// `set system gateway ADDR`: the default route of an appliance.
    Gateway(std::net::IpAddr),
    /// `set interface NAME address ADDR/PREFIX`: adds a static address unless it is
    /// there already.
    InterfaceAddress(String, crate::config::InterfaceAddress),
}

/// One setting of a category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CategorySetting {
    /// `ruleset NAME`
    Ruleset(String),
    /// `channel NAME`: the source channel of the category's sessions.
    Channel(String),
}

/// One setting of a security ruleset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RulesetSetting {
    /// `mechanisms "…"`: replaces the offered mechanisms.
    Mechanisms(MechanismSet),
    /// `restrict MECH tls`: the mechanism is offered only under TLS.
    RestrictTls(MechanismName),
}

/// One TLS setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSetting {
    /// `versions "1.2 1.3"`: (TLS 1.2, TLS 1.3).
    Versions(bool, bool),
    CipherSuites(Vec<String>),
    ClientCaFile(String),
    ServerCaFile(String),
}

/// One setting of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceSetting {
    /// Adds a listening address unless it is there already.
    Listen(SocketAddr),
    MaxConnections(u32),
    MaxConnectionsPerIp(u32),
    IdleTimeout(Duration),
    DataTimeout(Duration),
    MaxSessionTime(Duration),
    MaxMessagesPerSession(u32),
    MaxMessageSize(u64),
    MaxRecipients(u32),
    MaxLineLength(u32),
    ErrorLimit(u32),
    GreetDelay(Duration),
    EhloKeywords(EhloKeywords),
    /// Adds an implicit-TLS listening address unless it is there already.
    TlsListen(SocketAddr),
    Channel(String),
    AuthMechanisms(crate::sasl::MechanismSet),
    /// Adds an allow filter (seed 002 syntax).
    AllowFilter(String),
    /// Adds a deny filter.
    DenyFilter(String),
    /// Adds a compact `+…$-…` filter.
    AccessFilter(String),
    VerifyRecipients(bool),
    VerifyPositiveTtl(Duration),
    VerifyNegativeTtl(Duration),
    /// `accept` (true) or `tempfail` (false).
    VerifyUnreachable(bool),
}

/// One setting of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteSetting {
    /// `relay HOSTS` or `smarthost HOSTS`: creates the route or changes its next hop.
    NextHop(NextHop),
    /// Needs the route to exist already, as do the others below.
    FailoverTimeout(Duration),
    AvoidTime(Duration),
    Concurrency(u32),
    MxPort(u16),
    Channel(String),
    DangerTlsNoVerify(bool),
}

/// One setting of the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueSetting {
    Retry(Vec<Duration>),
    MaxLifetime(Duration),
    DelayNotice(Duration),
}

#[derive(Clone, Copy)]
enum Top {
    System,
    Service,
    Classify,
    Route,
    Queue,
    Tls,
    Channel,
    Category,
    Ruleset,
    RelayRule,
    Interface,
}

#[derive(Clone, Copy)]
enum CategoryKey {
    Ruleset,
    Channel,
}

#[derive(Clone, Copy)]
enum RulesetKey {
    Mechanisms,
    Restrict,
}

#[derive(Clone, Copy)]
enum RelayKey {
    Source,
    From,
    Destination,
    To,
    Allow,
    Deny,
}

#[derive(Clone, Copy)]
enum ServiceKey {
    Listen,
    MaxConnections,
    MaxConnectionsPerIp,
    IdleTimeout,
    DataTimeout,
    MaxSessionTime,
    MaxMessagesPerSession,
    MaxMessageSize,
    MaxRecipients,
    MaxLineLength,
    ErrorLimit,
    GreetDelay,
    EhloKeywords,
    TlsListen,
    AuthMechanisms,
    AllowFilter,
    DenyFilter,
    AccessFilter,
    Channel,
    VerifyRecipients,
    VerifyPositiveTtl,
    VerifyNegativeTtl,
    VerifyUnreachable,
}

#[derive(Clone, Copy)]
enum ClassifyKey {
    Local,
    LocalPort,
    Remote,
    RemotePort,
    Category,
    Deny,
}

#[derive(Clone, Copy)]
enum RouteKey {
    Relay,
    Smarthost,
    Mx,
    FailoverTimeout,
    AvoidTime,
    Concurrency,
    MxPort,
    Channel,
    DangerTlsNoVerify,
}

#[derive(Clone, Copy)]
enum TlsKey {
    Versions,
    CipherSuites,
    ClientCaFile,
    ServerCaFile,
}

#[derive(Clone, Copy)]
enum QueueKey {
    Retry,
    MaxLifetime,
    DelayNotice,
}

#[derive(Clone, Copy)]
enum SystemKey {
    HostName,
    Dns,
    Gateway,
}

#[derive(Clone, Copy)]
enum DnsKey {
    Resolver,
    Timeout,
}

type Keywords<T> = [(&'static str, T)];

const SET: &Keywords<()> = &[("set", ())];
const TOP: &Keywords<Top> = &[
    ("system", Top::System),
    ("service", Top::Service),
    ("classify", Top::Classify),
    ("route", Top::Route),
    ("queue", Top::Queue),
    ("tls", Top::Tls),
    ("channel", Top::Channel),
    ("category", Top::Category),
    ("ruleset", Top::Ruleset),
    ("relay-rule", Top::RelayRule),
    ("interface", Top::Interface),
];
const CATEGORY_KEYS: &Keywords<CategoryKey> = &[
    ("ruleset", CategoryKey::Ruleset),
    ("channel", CategoryKey::Channel),
];
const RULESET_KEYS: &Keywords<RulesetKey> = &[
    ("mechanisms", RulesetKey::Mechanisms),
    ("restrict", RulesetKey::Restrict),
];
const RESTRICT_KINDS: &Keywords<()> = &[("tls", ())];
const RELAY_KEYS: &Keywords<RelayKey> = &[
    ("source", RelayKey::Source),
    ("from", RelayKey::From),
    ("destination", RelayKey::Destination),
    ("to", RelayKey::To),
    ("allow", RelayKey::Allow),
    ("deny", RelayKey::Deny),
];
const TLS_KEYS: &Keywords<TlsKey> = &[
    ("versions", TlsKey::Versions),
    ("cipher-suites", TlsKey::CipherSuites),
    ("client-ca-file", TlsKey::ClientCaFile),
    ("server-ca-file", TlsKey::ServerCaFile),
];
const CHANNEL_KEYS: &Keywords<()> = &[("keywords", ())];
const SYSTEM: &Keywords<SystemKey> = &[
    ("host-name", SystemKey::HostName),
    ("dns", SystemKey::Dns),
    ("gateway", SystemKey::Gateway),
];
const INTERFACE_KEYS: &Keywords<()> = &[("address", ())];
const DNS_KEYS: &Keywords<DnsKey> = &[("resolver", DnsKey::Resolver), ("timeout", DnsKey::Timeout)];
const YES_NO: &Keywords<bool> = &[("yes", true), ("no", false)];
const UNREACHABLE: &Keywords<bool> = &[("accept", true), ("tempfail", false)];
const SERVICES: &Keywords<ServiceName> = &[
    ("inbound", ServiceName::Inbound),
    ("outbound", ServiceName::Outbound),
];
const SERVICE_KEYS: &Keywords<ServiceKey> = &[
    ("listen", ServiceKey::Listen),
    ("max-connections", ServiceKey::MaxConnections),
    ("max-connections-per-ip", ServiceKey::MaxConnectionsPerIp),
    ("idle-timeout", ServiceKey::IdleTimeout),
    ("data-timeout", ServiceKey::DataTimeout),
    ("max-session-time", ServiceKey::MaxSessionTime),
    (
        "max-messages-per-session",
        ServiceKey::MaxMessagesPerSession,
    ),
    ("max-message-size", ServiceKey::MaxMessageSize),
    ("max-recipients", ServiceKey::MaxRecipients),
    ("max-line-length", ServiceKey::MaxLineLength),
    ("error-limit", ServiceKey::ErrorLimit),
    ("greet-delay", ServiceKey::GreetDelay),
    ("ehlo-keywords", ServiceKey::EhloKeywords),
    ("tls-listen", ServiceKey::TlsListen),
    ("auth-mechanisms", ServiceKey::AuthMechanisms),
    ("allow-filter", ServiceKey::AllowFilter),
    ("deny-filter", ServiceKey::DenyFilter),
    ("access-filter", ServiceKey::AccessFilter),
    ("channel", ServiceKey::Channel),
    ("verify-recipients", ServiceKey::VerifyRecipients),
    ("verify-positive-ttl", ServiceKey::VerifyPositiveTtl),
    ("verify-negative-ttl", ServiceKey::VerifyNegativeTtl),
    ("verify-unreachable", ServiceKey::VerifyUnreachable),
];
const CLASSIFY_KEYS: &Keywords<ClassifyKey> = &[
    ("local", ClassifyKey::Local),
    ("local-port", ClassifyKey::LocalPort),
    ("remote", ClassifyKey::Remote),
    ("remote-port", ClassifyKey::RemotePort),
    ("category", ClassifyKey::Category),
    ("deny", ClassifyKey::Deny),
];
const ROUTE_KEYS: &Keywords<RouteKey> = &[
    ("relay", RouteKey::Relay),
    ("smarthost", RouteKey::Smarthost),
    ("mx", RouteKey::Mx),
    ("failover-timeout", RouteKey::FailoverTimeout),
    ("avoid-time", RouteKey::AvoidTime),
    ("concurrency", RouteKey::Concurrency),
    ("mx-port", RouteKey::MxPort),
    ("channel", RouteKey::Channel),
    ("danger-tls-no-verify", RouteKey::DangerTlsNoVerify),
];
const QUEUE_KEYS: &Keywords<QueueKey> = &[
    ("retry", QueueKey::Retry),
    ("max-lifetime", QueueKey::MaxLifetime),
    ("delay-notice", QueueKey::DelayNotice),
];

fn names<T>(keywords: &Keywords<T>) -> Vec<&'static str> {
    keywords.iter().map(|(name, _)| *name).collect()
}

/// Whether a duration setting accepts zero.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Zero {
    Allowed,
    Refused,
}

/// The words of one line and how far they have been read.
struct Cursor<'w> {
    words: &'w [String],
    next: usize,
}

impl<'w> Cursor<'w> {
    /// The words read so far, as written.
    fn after(&self) -> String {
        let shown: Vec<String> = self.words[..self.next]
            .iter()
            .map(|w| lex::word(w))
            .collect();
        shown.join(" ")
    }

    /// The next word as one of `keywords` (any case).
    fn keyword<T: Copy>(&mut self, keywords: &Keywords<T>) -> Result<T, LineError> {
        let Some(word) = self.words.get(self.next) else {
            return Err(LineError::Incomplete {
                after: self.after(),
                expected: names(keywords),
            });
        };
        match keywords
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
        {
            Some((_, found)) => {
                self.next += 1;
                Ok(*found)
            }
            None => Err(LineError::UnknownKeyword {
                after: self.after(),
                found: word.clone(),
                expected: names(keywords),
            }),
        }
    }

    /// The next word as a value; `expected` says what it should look like.
    fn value(&mut self, expected: &str) -> Result<&'w str, LineError> {
        let Some(word) = self.words.get(self.next) else {
            return Err(LineError::MissingValue {
                after: self.after(),
                expected: expected.to_string(),
            });
        };
        self.next += 1;
        Ok(word)
    }

    /// The next word as a number within `limit`; `setting` names it for messages.
    fn number(&mut self, setting: &str, limit: Limit) -> Result<u32, LineError> {
        let text = self.value(&limit.expected())?;
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
            _ => Err(LineError::OutOfRange {
                value: text.to_string(),
                setting: setting.to_string(),
                reason: match limit.source {
                    Some(source) if n < u64::from(limit.min) => source.to_string(),
                    _ => format!("expected {}", limit.expected()),
                },
            }),
        }
    }

    /// The next word as a duration; `setting` names it for messages.
    fn duration(&mut self, setting: &str, zero: Zero) -> Result<Duration, LineError> {
        let text = self.value(value::DURATION_EXPECTED)?;
        let d = value::duration(text)?;
        if d.is_zero() && zero == Zero::Refused {
            return Err(LineError::OutOfRange {
                value: text.to_string(),
                setting: setting.to_string(),
                reason: "expected more than 0s".to_string(),
            });
        }
        Ok(d)
    }

    /// Succeeds when every word has been read.
    fn finish(&self) -> Result<(), LineError> {
        match self.words.get(self.next) {
            None => Ok(()),
            Some(found) => Err(LineError::Trailing {
                after: self.after(),
                found: found.clone(),
            }),
        }
    }
}

impl Statement {
    /// The statement on one line of text; `None` for a blank or comment line.
    pub fn parse(line: &str) -> Result<Option<Statement>, LineError> {
        if lex::is_comment_or_blank(line) {
            return Ok(None);
        }
        let words = lex::split(line)?;
        Statement::from_words(&words).map(Some)
    }

    /// The statement made of `words`, which are not empty.
    pub fn from_words(words: &[String]) -> Result<Statement, LineError> {
        let mut c = Cursor { words, next: 0 };
        c.keyword(SET)?;
        let statement = match c.keyword(TOP)? {
            Top::System => match c.keyword(SYSTEM)? {
                SystemKey::HostName => {
                    Statement::HostName(value::host_name(c.value(value::HOST_NAME_EXPECTED)?)?)
                }
                SystemKey::Dns => match c.keyword(DNS_KEYS)? {
                    DnsKey::Resolver => {
                        Statement::DnsResolver(value::resolver(c.value(value::RESOLVER_EXPECTED)?)?)
                    }
                    DnsKey::Timeout => {
                        Statement::DnsTimeout(c.duration("dns timeout", Zero::Refused)?)
                    }
                },
                SystemKey::Gateway => {
                    Statement::Gateway(value::gateway(c.value(value::GATEWAY_EXPECTED)?)?)
                }
            },
            Top::Interface => {
                let name = value::interface_name(c.value(value::INTERFACE_EXPECTED)?)?;
                c.keyword(INTERFACE_KEYS)?;
                Statement::InterfaceAddress(
                    name,
                    value::interface_address(c.value(value::INTERFACE_ADDRESS_EXPECTED)?)?,
                )
            }
            Top::Service => {
                let name = c.keyword(SERVICES)?;
                let key = c.keyword(SERVICE_KEYS)?;
                Statement::Service(name, service_setting(&mut c, key)?)
            }
            Top::Classify => {
                let number = c.number("a classify rule number", RULE_NUMBER_LIMIT)?;
                Statement::Classify(number, classify_rule(&mut c)?)
            }
            Top::Route => {
                let pattern = value::pattern(c.value(value::PATTERN_EXPECTED)?)?;
                Statement::Route(pattern, route_setting(&mut c)?)
            }
            Top::Queue => Statement::Queue(match c.keyword(QUEUE_KEYS)? {
                QueueKey::Retry => {
                    QueueSetting::Retry(value::retry(c.value(value::RETRY_EXPECTED)?)?)
                }
                QueueKey::MaxLifetime => {
                    QueueSetting::MaxLifetime(c.duration("max-lifetime", Zero::Refused)?)
                }
                QueueKey::DelayNotice => {
                    QueueSetting::DelayNotice(c.duration("delay-notice", Zero::Allowed)?)
                }
            }),
            Top::Tls => Statement::Tls(match c.keyword(TLS_KEYS)? {
                TlsKey::Versions => {
                    let (tls12, tls13) =
                        value::tls_versions(c.value(value::TLS_VERSIONS_EXPECTED)?)?;
                    TlsSetting::Versions(tls12, tls13)
                }
                TlsKey::CipherSuites => TlsSetting::CipherSuites(value::cipher_suites(
                    c.value(value::CIPHER_SUITES_EXPECTED)?,
                )?),
                TlsKey::ClientCaFile => {
                    TlsSetting::ClientCaFile(value::path(c.value(value::PATH_EXPECTED)?)?)
                }
                TlsKey::ServerCaFile => {
                    TlsSetting::ServerCaFile(value::path(c.value(value::PATH_EXPECTED)?)?)
                }
            }),
            Top::Channel => {
                let name = value::channel_name(c.value(value::CHANNEL_EXPECTED)?)?;
                c.keyword(CHANNEL_KEYS)?;
                Statement::Channel(
                    name,
                    value::channel_keywords(c.value(value::KEYWORDS_EXPECTED)?)?,
                )
            }
            Top::Category => {
                let name = value::category(c.value(value::CATEGORY_EXPECTED)?)?;
                let setting = match c.keyword(CATEGORY_KEYS)? {
                    CategoryKey::Ruleset => CategorySetting::Ruleset(value::ruleset_name(
                        c.value(value::RULESET_EXPECTED)?,
                    )?),
                    CategoryKey::Channel => CategorySetting::Channel(value::channel_name(
                        c.value(value::CHANNEL_EXPECTED)?,
                    )?),
                };
                Statement::Category(name, setting)
            }
            Top::Ruleset => {
                let name = value::ruleset_name(c.value(value::RULESET_EXPECTED)?)?;
                let setting = match c.keyword(RULESET_KEYS)? {
                    RulesetKey::Mechanisms => RulesetSetting::Mechanisms(value::mechanisms(
                        c.value(value::MECHANISMS_EXPECTED)?,
                    )?),
                    RulesetKey::Restrict => {
                        let m = value::mechanism(c.value(value::MECHANISM_EXPECTED)?)?;
                        c.keyword(RESTRICT_KINDS)?;
                        RulesetSetting::RestrictTls(m)
                    }
                };
                Statement::Ruleset(name, setting)
            }
            Top::RelayRule => {
                let number = c.number("a relay rule number", RULE_NUMBER_LIMIT)?;
                Statement::RelayRule(number, relay_rule(&mut c)?)
            }
        };
        c.finish()?;
        Ok(statement)
    }

    /// Applies the statement to `config`. On error `config` is unchanged.
    pub fn apply(&self, config: &mut Config) -> Result<(), LineError> {
        match self {
            Statement::HostName(name) => config.system.host_name = name.clone(),
            Statement::DnsResolver(addr) => {
                let resolvers = &mut config.system.dns_resolvers;
                if !resolvers.contains(addr) {
                    if resolvers.len() >= MAX_DNS_RESOLVERS {
                        return Err(LineError::TooMany {
                            what: "DNS resolvers",
                            limit: MAX_DNS_RESOLVERS,
                        });
                    }
                    resolvers.push(*addr);
                }
            }
            Statement::DnsTimeout(d) => config.system.dns_timeout = *d,
            Statement::Gateway(addr) => config.system.gateway = Some(*addr),
            Statement::InterfaceAddress(name, addr) => {
                let count = config.interfaces.len();
                let interface = match config.interfaces.get_mut(name) {
                    Some(i) => i,
                    None if count >= MAX_INTERFACES => {
                        return Err(LineError::TooMany {
                            what: "interfaces",
                            limit: MAX_INTERFACES,
                        });
                    }
                    None => config.interfaces.entry(name.clone()).or_default(),
                };
                if !interface.addresses.contains(addr) {
                    if interface.addresses.len() >= MAX_INTERFACE_ADDRESSES {
                        return Err(LineError::TooMany {
                            what: "addresses on one interface",
                            limit: MAX_INTERFACE_ADDRESSES,
                        });
                    }
                    interface.addresses.push(*addr);
                }
            }
            Statement::Service(name, setting) => {
                let s = config.service_mut(*name);
                match setting {
                    ServiceSetting::Listen(addr) => {
                        if !s.listen.contains(addr) {
                            if s.listen.len() >= MAX_LISTEN_ADDRESSES {
                                return Err(LineError::TooMany {
                                    what: "listen addresses in one service",
                                    limit: MAX_LISTEN_ADDRESSES,
                                });
                            }
                            s.listen.push(*addr);
                        }
                    }
                    ServiceSetting::MaxConnections(n) => s.max_connections = *n,
                    ServiceSetting::MaxConnectionsPerIp(n) => s.max_connections_per_ip = *n,
                    ServiceSetting::IdleTimeout(d) => s.idle_timeout = *d,
                    ServiceSetting::DataTimeout(d) => s.data_timeout = *d,
                    ServiceSetting::MaxSessionTime(d) => s.max_session_time = *d,
                    ServiceSetting::MaxMessagesPerSession(n) => s.max_messages_per_session = *n,
                    ServiceSetting::MaxMessageSize(n) => s.max_message_size = *n,
                    ServiceSetting::MaxRecipients(n) => s.max_recipients = *n,
                    ServiceSetting::MaxLineLength(n) => s.max_line_length = *n,
                    ServiceSetting::ErrorLimit(n) => s.error_limit = *n,
                    ServiceSetting::GreetDelay(d) => s.greet_delay = *d,
                    ServiceSetting::EhloKeywords(k) => s.ehlo_keywords = *k,
                    ServiceSetting::AuthMechanisms(m) => s.auth_mechanisms = Some(*m),
                    ServiceSetting::AllowFilter(f) => push_filter(&mut s.allow_filters, f)?,
                    ServiceSetting::DenyFilter(f) => push_filter(&mut s.deny_filters, f)?,
                    ServiceSetting::AccessFilter(f) => push_filter(&mut s.compact_filters, f)?,
                    ServiceSetting::TlsListen(addr) => {
                        if !s.tls_listen.contains(addr) {
                            if s.tls_listen.len() >= MAX_LISTEN_ADDRESSES {
                                return Err(LineError::TooMany {
                                    what: "TLS listen addresses in one service",
                                    limit: MAX_LISTEN_ADDRESSES,
                                });
                            }
                            s.tls_listen.push(*addr);
                        }
                    }
                    ServiceSetting::Channel(name) => s.channel = Some(name.clone()),
                    ServiceSetting::VerifyRecipients(on) => s.verify.enabled = *on,
                    ServiceSetting::VerifyPositiveTtl(d) => s.verify.positive_ttl = *d,
                    ServiceSetting::VerifyNegativeTtl(d) => s.verify.negative_ttl = *d,
                    ServiceSetting::VerifyUnreachable(a) => s.verify.accept_when_unreachable = *a,
                }
            }
            Statement::Classify(number, rule) => {
                if !config.classify.contains_key(number)
                    && config.classify.len() >= MAX_CLASSIFY_RULES
                {
                    return Err(LineError::TooMany {
                        what: "classify rules",
                        limit: MAX_CLASSIFY_RULES,
                    });
                }
                config.classify.insert(*number, rule.clone());
            }
            Statement::Route(pattern, RouteSetting::NextHop(hop)) => {
                let count = config.routes.len();
                match config.routes.get_mut(pattern) {
                    Some(route) => route.next_hop = hop.clone(),
                    None if count >= MAX_ROUTES => {
                        return Err(LineError::TooMany {
                            what: "routes",
                            limit: MAX_ROUTES,
                        });
                    }
                    None => {
                        config
                            .routes
                            .insert(pattern.clone(), Route::new(hop.clone()));
                    }
                }
            }
            Statement::Route(pattern, setting) => {
                let Some(route) = config.routes.get_mut(pattern) else {
                    return Err(LineError::NoNextHop {
                        pattern: pattern.to_string(),
                    });
                };
                match setting {
                    RouteSetting::NextHop(hop) => route.next_hop = hop.clone(),
                    RouteSetting::FailoverTimeout(d) => route.failover_timeout = *d,
                    RouteSetting::AvoidTime(d) => route.avoid_time = *d,
                    RouteSetting::Concurrency(n) => route.concurrency = *n,
                    RouteSetting::MxPort(p) => route.mx_port = *p,
                    RouteSetting::Channel(name) => route.channel = Some(name.clone()),
                    RouteSetting::DangerTlsNoVerify(on) => route.danger_tls_no_verify = *on,
                }
            }
            Statement::Queue(QueueSetting::Retry(steps)) => config.queue.retry = steps.clone(),
            Statement::Queue(QueueSetting::MaxLifetime(d)) => config.queue.max_lifetime = *d,
            Statement::Queue(QueueSetting::DelayNotice(d)) => config.queue.delay_notice = *d,
            Statement::Tls(TlsSetting::Versions(tls12, tls13)) => {
                config.tls.tls12 = *tls12;
                config.tls.tls13 = *tls13;
            }
            Statement::Tls(TlsSetting::CipherSuites(names)) => {
                config.tls.cipher_suites = names.clone()
            }
            Statement::Tls(TlsSetting::ClientCaFile(p)) => {
                config.tls.client_ca_file = Some(p.clone())
            }
            Statement::Tls(TlsSetting::ServerCaFile(p)) => {
                config.tls.server_ca_file = Some(p.clone())
            }
            Statement::Channel(name, keywords) => {
                if !config.channels.contains_key(name) && config.channels.len() >= MAX_CHANNELS {
                    return Err(LineError::TooMany {
                        what: "channels",
                        limit: MAX_CHANNELS,
                    });
                }
                config.channels.insert(
                    name.clone(),
                    Channel {
                        keywords: keywords.clone(),
                    },
                );
            }
            Statement::Category(name, setting) => {
                let count = config.categories.len();
                let category = match config.categories.get_mut(name) {
                    Some(c) => c,
                    None if count >= MAX_CATEGORIES => {
                        return Err(LineError::TooMany {
                            what: "categories",
                            limit: MAX_CATEGORIES,
                        });
                    }
                    None => config.categories.entry(name.clone()).or_default(),
                };
                match setting {
                    CategorySetting::Ruleset(r) => category.ruleset = Some(r.clone()),
                    CategorySetting::Channel(ch) => category.channel = Some(ch.clone()),
                }
            }
            Statement::Ruleset(name, setting) => {
                let count = config.rulesets.len();
                let ruleset = match config.rulesets.get_mut(name) {
                    Some(r) => r,
                    None if count >= MAX_RULESETS => {
                        return Err(LineError::TooMany {
                            what: "rulesets",
                            limit: MAX_RULESETS,
                        });
                    }
                    None => config.rulesets.entry(name.clone()).or_default(),
                };
                match setting {
                    RulesetSetting::Mechanisms(set) => ruleset.mechanisms = *set,
                    RulesetSetting::RestrictTls(m) => {
                        ruleset.needs_tls = ruleset.needs_tls.with(*m)
                    }
                }
            }
            Statement::RelayRule(number, rule) => {
                if !config.relay_rules.contains_key(number)
                    && config.relay_rules.len() >= MAX_RELAY_RULES
                {
                    return Err(LineError::TooMany {
                        what: "relay rules",
                        limit: MAX_RELAY_RULES,
                    });
                }
                config.relay_rules.insert(*number, rule.clone());
            }
        }
        Ok(())
    }
}

fn service_setting(c: &mut Cursor<'_>, key: ServiceKey) -> Result<ServiceSetting, LineError> {
    use ServiceSetting as S;
    Ok(match key {
        ServiceKey::Listen => S::Listen(value::listen(c.value(value::LISTEN_EXPECTED)?)?),
        ServiceKey::MaxConnections => {
            S::MaxConnections(c.number("max-connections", CONNECTIONS_LIMIT)?)
        }
        ServiceKey::MaxConnectionsPerIp => {
            S::MaxConnectionsPerIp(c.number("max-connections-per-ip", CONNECTIONS_LIMIT)?)
        }
        ServiceKey::IdleTimeout => S::IdleTimeout(c.duration("idle-timeout", Zero::Refused)?),
        ServiceKey::DataTimeout => S::DataTimeout(c.duration("data-timeout", Zero::Refused)?),
        ServiceKey::MaxSessionTime => {
            S::MaxSessionTime(c.duration("max-session-time", Zero::Refused)?)
        }
        ServiceKey::MaxMessagesPerSession => S::MaxMessagesPerSession(
            c.number("max-messages-per-session", MESSAGES_PER_SESSION_LIMIT)?,
        ),
        ServiceKey::MaxMessageSize => {
            let text = c.value(value::SIZE_EXPECTED)?;
            let size = value::size(text)?;
            if size < MIN_MESSAGE_SIZE {
                return Err(LineError::OutOfRange {
                    value: text.to_string(),
                    setting: "max-message-size".to_string(),
                    reason: "expected at least 1024 bytes (1k)".to_string(),
                });
            }
            S::MaxMessageSize(size)
        }
        ServiceKey::MaxRecipients => {
            S::MaxRecipients(c.number("max-recipients", RECIPIENTS_LIMIT)?)
        }
        ServiceKey::MaxLineLength => {
            S::MaxLineLength(c.number("max-line-length", LINE_LENGTH_LIMIT)?)
        }
        ServiceKey::ErrorLimit => S::ErrorLimit(c.number("error-limit", ERROR_LIMIT)?),
        ServiceKey::GreetDelay => S::GreetDelay(c.duration("greet-delay", Zero::Allowed)?),
        ServiceKey::EhloKeywords => {
            S::EhloKeywords(value::ehlo_keywords(c.value(value::EHLO_EXPECTED)?)?)
        }
        ServiceKey::TlsListen => S::TlsListen(value::listen(c.value(value::LISTEN_EXPECTED)?)?),
        ServiceKey::AuthMechanisms => {
            S::AuthMechanisms(value::mechanisms(c.value(value::MECHANISMS_EXPECTED)?)?)
        }
        ServiceKey::AllowFilter => {
            S::AllowFilter(value::filter_rule(c.value(value::FILTER_EXPECTED)?)?)
        }
        ServiceKey::DenyFilter => {
            S::DenyFilter(value::filter_rule(c.value(value::FILTER_EXPECTED)?)?)
        }
        ServiceKey::AccessFilter => S::AccessFilter(value::compact_filter(
            c.value(value::COMPACT_FILTER_EXPECTED)?,
        )?),
        ServiceKey::Channel => S::Channel(value::channel_name(c.value(value::CHANNEL_EXPECTED)?)?),
        ServiceKey::VerifyRecipients => S::VerifyRecipients(c.keyword(YES_NO)?),
        ServiceKey::VerifyPositiveTtl => {
            S::VerifyPositiveTtl(c.duration("verify-positive-ttl", Zero::Allowed)?)
        }
        ServiceKey::VerifyNegativeTtl => {
            S::VerifyNegativeTtl(c.duration("verify-negative-ttl", Zero::Allowed)?)
        }
        ServiceKey::VerifyUnreachable => S::VerifyUnreachable(c.keyword(UNREACHABLE)?),
    })
}

fn classify_rule(c: &mut Cursor<'_>) -> Result<ClassifyRule, LineError> {
    let (mut local, mut local_port, mut remote, mut remote_port) = (None, None, None, None);
    loop {
        let action = match c.keyword(CLASSIFY_KEYS)? {
            ClassifyKey::Local => {
                option_once(c, &mut local, value::CIDR_EXPECTED, value::cidr)?;
                continue;
            }
            ClassifyKey::LocalPort => {
                option_once(c, &mut local_port, value::PORT_EXPECTED, value::port)?;
                continue;
            }
            ClassifyKey::Remote => {
                option_once(c, &mut remote, value::CIDR_EXPECTED, value::cidr)?;
                continue;
            }
            ClassifyKey::RemotePort => {
                option_once(c, &mut remote_port, value::PORT_EXPECTED, value::port)?;
                continue;
            }
            ClassifyKey::Category => {
                ClassifyAction::Category(value::category(c.value(value::CATEGORY_EXPECTED)?)?)
            }
            ClassifyKey::Deny => {
                ClassifyAction::Deny(value::deny_text(c.value(value::DENY_EXPECTED)?)?)
            }
        };
        return Ok(ClassifyRule {
            local,
            local_port,
            remote,
            remote_port,
            action,
        });
    }
}

/// Reads the value of an option into `slot`, which must still be empty.
fn option_once<T>(
    c: &mut Cursor<'_>,
    slot: &mut Option<T>,
    expected: &str,
    parse: fn(&str) -> Result<T, LineError>,
) -> Result<(), LineError> {
    if slot.is_some() {
        return Err(LineError::Repeated { after: c.after() });
    }
    *slot = Some(parse(c.value(expected)?)?);
    Ok(())
}

/// The options of a relay rule, in any order, each at most once, then its action.
fn relay_rule(c: &mut Cursor<'_>) -> Result<RelayRule, LineError> {
    let mut source: Option<Option<String>> = None;
    let mut from: Option<Option<AddressPattern>> = None;
    let mut destination: Option<Option<String>> = None;
    let mut to: Option<Option<AddressPattern>> = None;
    loop {
        let action = match c.keyword(RELAY_KEYS)? {
            RelayKey::Source => {
                option_once(
                    c,
                    &mut source,
                    value::RULE_CHANNEL_EXPECTED,
                    value::rule_channel,
                )?;
                continue;
            }
            RelayKey::From => {
                option_once(
                    c,
                    &mut from,
                    value::ADDRESS_PATTERN_EXPECTED,
                    value::address_pattern,
                )?;
                continue;
            }
            RelayKey::Destination => {
                option_once(
                    c,
                    &mut destination,
                    value::RULE_CHANNEL_EXPECTED,
                    value::rule_channel,
                )?;
                continue;
            }
            RelayKey::To => {
                option_once(
                    c,
                    &mut to,
                    value::ADDRESS_PATTERN_EXPECTED,
                    value::address_pattern,
                )?;
                continue;
            }
            RelayKey::Allow => RelayAction::Allow,
            RelayKey::Deny => RelayAction::Deny(value::deny_text(c.value(value::DENY_EXPECTED)?)?),
        };
        return Ok(RelayRule {
            source: source.flatten(),
            from: from.flatten(),
            destination: destination.flatten(),
            to: to.flatten(),
            action,
        });
    }
}

fn route_setting(c: &mut Cursor<'_>) -> Result<RouteSetting, LineError> {
    Ok(match c.keyword(ROUTE_KEYS)? {
        RouteKey::Relay => RouteSetting::NextHop(NextHop::Relay(value::hosts(
            c.value(value::HOSTS_EXPECTED)?,
        )?)),
        RouteKey::Smarthost => RouteSetting::NextHop(NextHop::Smarthost(value::hosts(
            c.value(value::HOSTS_EXPECTED)?,
        )?)),
        RouteKey::Mx => RouteSetting::NextHop(NextHop::Mx),
        RouteKey::FailoverTimeout => {
            RouteSetting::FailoverTimeout(c.duration("failover-timeout", Zero::Refused)?)
        }
        RouteKey::AvoidTime => RouteSetting::AvoidTime(c.duration("avoid-time", Zero::Allowed)?),
        RouteKey::Concurrency => {
            RouteSetting::Concurrency(c.number("concurrency", CONCURRENCY_LIMIT)?)
        }
        RouteKey::MxPort => RouteSetting::MxPort(value::port(c.value(value::PORT_EXPECTED)?)?),
        RouteKey::Channel => {
            RouteSetting::Channel(value::channel_name(c.value(value::CHANNEL_EXPECTED)?)?)
        }
        RouteKey::DangerTlsNoVerify => RouteSetting::DangerTlsNoVerify(c.keyword(YES_NO)?),
    })
}

/// The statements that build `config` from `Config::default()`, in canonical order:
/// system; the inbound then the outbound service, listen addresses first; classify rules
/// by number; routes in pattern order, each next hop first; the queue; TLS; channels,
/// categories and rulesets by name; relay rules by number. Settings equal to their
/// default are left out.
pub fn statements(config: &Config) -> Vec<Statement> {
    let mut out = Vec::new();
    let default = Config::default();
    if config.system.host_name != default.system.host_name {
        out.push(Statement::HostName(config.system.host_name.clone()));
    }
    for addr in &config.system.dns_resolvers {
        out.push(Statement::DnsResolver(*addr));
    }
    if config.system.dns_timeout != default.system.dns_timeout {
        out.push(Statement::DnsTimeout(config.system.dns_timeout));
    }
    if let Some(addr) = config.system.gateway {
        out.push(Statement::Gateway(addr));
    }
    for (name, interface) in &config.interfaces {
        for addr in &interface.addresses {
            out.push(Statement::InterfaceAddress(name.clone(), *addr));
        }
    }
    for name in ServiceName::ALL {
        let s = config.service(name);
        let d = default.service(name);
        let mut push = |setting| out.push(Statement::Service(name, setting));
        for addr in &s.listen {
            push(ServiceSetting::Listen(*addr));
        }
        for addr in &s.tls_listen {
            push(ServiceSetting::TlsListen(*addr));
        }
        if let Some(m) = s.auth_mechanisms {
            push(ServiceSetting::AuthMechanisms(m));
        }
        for f in &s.allow_filters {
            push(ServiceSetting::AllowFilter(f.clone()));
        }
        for f in &s.deny_filters {
            push(ServiceSetting::DenyFilter(f.clone()));
        }
        for f in &s.compact_filters {
            push(ServiceSetting::AccessFilter(f.clone()));
        }
        if let Some(name) = &s.channel {
            push(ServiceSetting::Channel(name.clone()));
        }
        use ServiceSetting as S;
        let pairs = [
            (
                s.max_connections != d.max_connections,
                S::MaxConnections(s.max_connections),
            ),
            (
                s.max_connections_per_ip != d.max_connections_per_ip,
                S::MaxConnectionsPerIp(s.max_connections_per_ip),
            ),
            (
                s.idle_timeout != d.idle_timeout,
                S::IdleTimeout(s.idle_timeout),
            ),
            (
                s.data_timeout != d.data_timeout,
                S::DataTimeout(s.data_timeout),
            ),
            (
                s.max_session_time != d.max_session_time,
                S::MaxSessionTime(s.max_session_time),
            ),
            (
                s.max_messages_per_session != d.max_messages_per_session,
                S::MaxMessagesPerSession(s.max_messages_per_session),
            ),
            (
                s.max_message_size != d.max_message_size,
                S::MaxMessageSize(s.max_message_size),
            ),
            (
                s.max_recipients != d.max_recipients,
                S::MaxRecipients(s.max_recipients),
            ),
            (
                s.max_line_length != d.max_line_length,
                S::MaxLineLength(s.max_line_length),
            ),
            (s.error_limit != d.error_limit, S::ErrorLimit(s.error_limit)),
            (s.greet_delay != d.greet_delay, S::GreetDelay(s.greet_delay)),
            (
                s.ehlo_keywords != d.ehlo_keywords,
                S::EhloKeywords(s.ehlo_keywords),
            ),
            (
                s.verify.enabled != d.verify.enabled,
                S::VerifyRecipients(s.verify.enabled),
            ),
            (
                s.verify.positive_ttl != d.verify.positive_ttl,
                S::VerifyPositiveTtl(s.verify.positive_ttl),
            ),
            (
                s.verify.negative_ttl != d.verify.negative_ttl,
                S::VerifyNegativeTtl(s.verify.negative_ttl),
            ),
            (
                s.verify.accept_when_unreachable != d.verify.accept_when_unreachable,
                S::VerifyUnreachable(s.verify.accept_when_unreachable),
            ),
        ];
        for (differs, setting) in pairs {
            if differs {
                push(setting);
            }
        }
    }
    for (number, rule) in &config.classify {
        out.push(Statement::Classify(*number, rule.clone()));
    }
    for (pattern, route) in &config.routes {
        let d = Route::new(route.next_hop.clone());
        let mut push = |setting| out.push(Statement::Route(pattern.clone(), setting));
        push(RouteSetting::NextHop(route.next_hop.clone()));
        if route.failover_timeout != d.failover_timeout {
            push(RouteSetting::FailoverTimeout(route.failover_timeout));
        }
        if route.avoid_time != d.avoid_time {
            push(RouteSetting::AvoidTime(route.avoid_time));
        }
        if route.concurrency != d.concurrency {
            push(RouteSetting::Concurrency(route.concurrency));
        }
        if route.mx_port != d.mx_port {
            push(RouteSetting::MxPort(route.mx_port));
        }
        if let Some(name) = &route.channel {
            push(RouteSetting::Channel(name.clone()));
        }
        if route.danger_tls_no_verify {
            push(RouteSetting::DangerTlsNoVerify(true));
        }
    }
    if config.queue.retry != default.queue.retry {
        out.push(Statement::Queue(QueueSetting::Retry(
            config.queue.retry.clone(),
        )));
    }
    if config.queue.max_lifetime != default.queue.max_lifetime {
        out.push(Statement::Queue(QueueSetting::MaxLifetime(
            config.queue.max_lifetime,
        )));
    }
    if config.queue.delay_notice != default.queue.delay_notice {
        out.push(Statement::Queue(QueueSetting::DelayNotice(
            config.queue.delay_notice,
        )));
    }
    let (tls, dtls) = (&config.tls, &default.tls);
    if (tls.tls12, tls.tls13) != (dtls.tls12, dtls.tls13) {
        out.push(Statement::Tls(TlsSetting::Versions(tls.tls12, tls.tls13)));
    }
    if tls.cipher_suites != dtls.cipher_suites {
        out.push(Statement::Tls(TlsSetting::CipherSuites(
            tls.cipher_suites.clone(),
        )));
    }
    if let Some(p) = &tls.client_ca_file {
        out.push(Statement::Tls(TlsSetting::ClientCaFile(p.clone())));
    }
    if let Some(p) = &tls.server_ca_file {
        out.push(Statement::Tls(TlsSetting::ServerCaFile(p.clone())));
    }
    for (name, channel) in &config.channels {
        out.push(Statement::Channel(name.clone(), channel.keywords.clone()));
    }
    for (name, category) in &config.categories {
        if let Some(r) = &category.ruleset {
            out.push(Statement::Category(
                name.clone(),
                CategorySetting::Ruleset(r.clone()),
            ));
        }
        if let Some(ch) = &category.channel {
            out.push(Statement::Category(
                name.clone(),
                CategorySetting::Channel(ch.clone()),
            ));
        }
    }
    for (name, ruleset) in &config.rulesets {
        let restricted: Vec<MechanismName> = ruleset.needs_tls.iter().collect();
        // The mechanisms line also stands for a ruleset that is all defaults, so that
        // it exists after a round trip.
        if ruleset.mechanisms != Ruleset::default().mechanisms || restricted.is_empty() {
            out.push(Statement::Ruleset(
                name.clone(),
                RulesetSetting::Mechanisms(ruleset.mechanisms),
            ));
        }
        for m in restricted {
            out.push(Statement::Ruleset(
                name.clone(),
                RulesetSetting::RestrictTls(m),
            ));
        }
    }
    for (number, rule) in &config.relay_rules {
        out.push(Statement::RelayRule(*number, rule.clone()));
    }
    out
}

/// The canonical line, without its line end.
impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dur = |d: &Duration| value::format_duration(*d);
        match self {
            Statement::HostName(name) => write!(f, "set system host-name {}", lex::word(name)),
            Statement::DnsResolver(addr) => write!(f, "set system dns resolver {addr}"),
            Statement::DnsTimeout(d) => write!(f, "set system dns timeout {}", dur(d)),
            Statement::Gateway(addr) => write!(f, "set system gateway {addr}"),
            Statement::InterfaceAddress(name, addr) => {
                write!(f, "set interface {name} address {addr}")
            }
            Statement::Service(name, setting) => {
                write!(f, "set service {name} ")?;
                match setting {
                    ServiceSetting::Listen(a) => write!(f, "listen {a}"),
                    ServiceSetting::MaxConnections(n) => write!(f, "max-connections {n}"),
                    ServiceSetting::MaxConnectionsPerIp(n) => {
                        write!(f, "max-connections-per-ip {n}")
                    }
                    ServiceSetting::IdleTimeout(d) => write!(f, "idle-timeout {}", dur(d)),
                    ServiceSetting::DataTimeout(d) => write!(f, "data-timeout {}", dur(d)),
                    ServiceSetting::MaxSessionTime(d) => {
                        write!(f, "max-session-time {}", dur(d))
                    }
                    ServiceSetting::MaxMessagesPerSession(n) => {
                        write!(f, "max-messages-per-session {n}")
                    }
                    ServiceSetting::MaxMessageSize(n) => {
                        write!(f, "max-message-size {}", value::format_size(*n))
                    }
                    ServiceSetting::MaxRecipients(n) => write!(f, "max-recipients {n}"),
                    ServiceSetting::MaxLineLength(n) => write!(f, "max-line-length {n}"),
                    ServiceSetting::ErrorLimit(n) => write!(f, "error-limit {n}"),
                    ServiceSetting::GreetDelay(d) => write!(f, "greet-delay {}", dur(d)),
                    ServiceSetting::EhloKeywords(k) => write!(
                        f,
                        "ehlo-keywords {}",
                        lex::quoted(&value::format_ehlo_keywords(*k))
                    ),
                    ServiceSetting::TlsListen(a) => write!(f, "tls-listen {a}"),
                    ServiceSetting::AuthMechanisms(m) => {
                        write!(
                            f,
                            "auth-mechanisms {}",
                            lex::quoted(&value::format_mechanisms(*m))
                        )
                    }
                    ServiceSetting::AllowFilter(r) => write!(f, "allow-filter {}", lex::quoted(r)),
                    ServiceSetting::DenyFilter(r) => write!(f, "deny-filter {}", lex::quoted(r)),
                    ServiceSetting::AccessFilter(r) => {
                        write!(f, "access-filter {}", lex::quoted(r))
                    }
                    ServiceSetting::Channel(name) => write!(f, "channel {name}"),
                    ServiceSetting::VerifyRecipients(on) => {
                        write!(f, "verify-recipients {}", if *on { "yes" } else { "no" })
                    }
                    ServiceSetting::VerifyPositiveTtl(d) => {
                        write!(f, "verify-positive-ttl {}", dur(d))
                    }
                    ServiceSetting::VerifyNegativeTtl(d) => {
                        write!(f, "verify-negative-ttl {}", dur(d))
                    }
                    ServiceSetting::VerifyUnreachable(accept) => write!(
                        f,
                        "verify-unreachable {}",
                        if *accept { "accept" } else { "tempfail" }
                    ),
                }
            }
            Statement::Classify(number, rule) => {
                write!(f, "set classify {number}")?;
                if let Some(c) = &rule.local {
                    write!(f, " local {c}")?;
                }
                if let Some(p) = rule.local_port {
                    write!(f, " local-port {p}")?;
                }
                if let Some(c) = &rule.remote {
                    write!(f, " remote {c}")?;
                }
                if let Some(p) = rule.remote_port {
                    write!(f, " remote-port {p}")?;
                }
                match &rule.action {
                    ClassifyAction::Category(name) => write!(f, " category {}", lex::word(name)),
                    ClassifyAction::Deny(text) => write!(f, " deny {}", lex::quoted(text)),
                }
            }
            Statement::Route(pattern, setting) => {
                write!(f, "set route {} ", lex::word(&pattern.to_string()))?;
                match setting {
                    RouteSetting::NextHop(NextHop::Relay(hosts)) => {
                        write!(f, "relay {}", lex::word(&value::format_hosts(hosts)))
                    }
                    RouteSetting::NextHop(NextHop::Smarthost(hosts)) => {
                        write!(f, "smarthost {}", lex::word(&value::format_hosts(hosts)))
                    }
                    RouteSetting::NextHop(NextHop::Mx) => f.write_str("mx"),
                    RouteSetting::FailoverTimeout(d) => write!(f, "failover-timeout {}", dur(d)),
                    RouteSetting::AvoidTime(d) => write!(f, "avoid-time {}", dur(d)),
                    RouteSetting::Concurrency(n) => write!(f, "concurrency {n}"),
                    RouteSetting::MxPort(p) => write!(f, "mx-port {p}"),
                    RouteSetting::Channel(name) => write!(f, "channel {name}"),
                    RouteSetting::DangerTlsNoVerify(on) => {
                        write!(f, "danger-tls-no-verify {}", if *on { "yes" } else { "no" })
                    }
                }
            }
            Statement::Queue(QueueSetting::Retry(steps)) => {
                write!(
                    f,
                    "set queue retry {}",
                    lex::quoted(&value::format_retry(steps))
                )
            }
            Statement::Queue(QueueSetting::MaxLifetime(d)) => {
                write!(f, "set queue max-lifetime {}", dur(d))
            }
            Statement::Queue(QueueSetting::DelayNotice(d)) => {
                write!(f, "set queue delay-notice {}", dur(d))
            }
            Statement::Tls(TlsSetting::Versions(tls12, tls13)) => {
                write!(
                    f,
                    "set tls versions {}",
                    lex::quoted(&value::format_tls_versions(*tls12, *tls13))
                )
            }
            Statement::Tls(TlsSetting::CipherSuites(names)) => {
                write!(f, "set tls cipher-suites {}", lex::quoted(&names.join(" ")))
            }
            Statement::Tls(TlsSetting::ClientCaFile(p)) => {
                write!(f, "set tls client-ca-file {}", lex::quoted(p))
            }
            Statement::Tls(TlsSetting::ServerCaFile(p)) => {
                write!(f, "set tls server-ca-file {}", lex::quoted(p))
            }
            Statement::Channel(name, keywords) => {
                write!(
                    f,
                    "set channel {name} keywords {}",
                    lex::quoted(&value::format_channel_keywords(keywords))
                )
            }
            Statement::Category(name, CategorySetting::Ruleset(r)) => {
                write!(f, "set category {name} ruleset {r}")
            }
            Statement::Category(name, CategorySetting::Channel(ch)) => {
                write!(f, "set category {name} channel {ch}")
            }
            Statement::Ruleset(name, RulesetSetting::Mechanisms(set)) => write!(
                f,
                "set ruleset {name} mechanisms {}",
                lex::quoted(&value::format_mechanisms(*set))
            ),
            Statement::Ruleset(name, RulesetSetting::RestrictTls(m)) => {
                write!(f, "set ruleset {name} restrict {} tls", m.as_str())
            }
            Statement::RelayRule(number, rule) => {
                write!(f, "set relay-rule {number}")?;
                if let Some(ch) = &rule.source {
                    write!(f, " source {ch}")?;
                }
                if let Some(p) = &rule.from {
                    write!(f, " from {}", lex::word(p.as_str()))?;
                }
                if let Some(ch) = &rule.destination {
                    write!(f, " destination {ch}")?;
                }
                if let Some(p) = &rule.to {
                    write!(f, " to {}", lex::word(p.as_str()))?;
                }
                match &rule.action {
                    RelayAction::Allow => f.write_str(" allow"),
                    RelayAction::Deny(text) => write!(f, " deny {}", lex::quoted(text)),
                }
            }
        }
    }
}

/// Most filters of one kind on one service.
pub const MAX_FILTERS: usize = 64;

/// Adds a filter unless it is there already.
fn push_filter(list: &mut Vec<String>, filter: &str) -> Result<(), LineError> {
    if list.iter().any(|f| f == filter) {
        return Ok(());
    }
    if list.len() >= MAX_FILTERS {
        return Err(LineError::TooMany {
            what: "filters of one kind in one service",
            limit: MAX_FILTERS,
        });
    }
    list.push(filter.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Statement {
        Statement::parse(line).unwrap().unwrap()
    }

    #[test]
    fn comments_and_blank_lines_are_no_statement() {
        assert_eq!(Statement::parse(""), Ok(None));
        assert_eq!(Statement::parse("  # set queue retry x"), Ok(None));
    }

    #[test]
    fn keywords_are_case_insensitive_and_print_in_lower_case() {
        let s = one("SET Service INBOUND Max-Connections 7");
        assert_eq!(
            s,
            Statement::Service(ServiceName::Inbound, ServiceSetting::MaxConnections(7))
        );
        assert_eq!(s.to_string(), "set service inbound max-connections 7");
        assert_eq!(
            one("\"set\" \"queue\" max-lifetime \"2d\"").to_string(),
            "set queue max-lifetime 2d"
        );
    }

    #[test]
    fn classify_options_come_in_any_order_and_print_in_one() {
        let a = one("set classify 5 remote-port 99 local 10.0.0.1 category A");
        let b = one("set classify 5 local 10.0.0.1/32 remote-port 99 category A");
        assert_eq!(a, b);
        assert_eq!(
            a.to_string(),
            "set classify 5 local 10.0.0.1/32 remote-port 99 category A"
        );
    }

    #[test]
    fn route_attributes_need_the_route() {
        let mut cfg = Config::default();
        let attr = one("set route * concurrency 4");
        assert_eq!(
            attr.apply(&mut cfg),
            Err(LineError::NoNextHop {
                pattern: "*".into()
            })
        );
        assert_eq!(cfg, Config::default());
        one("set route * smarthost [192.0.2.25]:587")
            .apply(&mut cfg)
            .unwrap();
        attr.apply(&mut cfg).unwrap();
        let route = &cfg.routes[&DomainPattern::Any];
        assert_eq!(route.concurrency, 4);
        assert_eq!(
            route.failover_timeout,
            crate::config::DEFAULT_FAILOVER_TIMEOUT
        );
    }

    #[test]
    fn listen_adds_an_address_once() {
        let mut cfg = Config::default();
        let listen = one("set service outbound listen [::1]:587");
        listen.apply(&mut cfg).unwrap();
        listen.apply(&mut cfg).unwrap();
        assert_eq!(cfg.outbound.listen.len(), 1);
        assert!(cfg.inbound.listen.is_empty());
    }

    #[test]
    fn statements_of_the_default_are_none() {
        assert!(statements(&Config::default()).is_empty());
        let mut cfg = Config::default();
        cfg.inbound.max_recipients = 200;
        cfg.queue.retry = vec![Duration::from_secs(60)];
        let lines: Vec<String> = statements(&cfg).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            lines,
            [
                "set service inbound max-recipients 200",
                "set queue retry \"1m\""
            ]
        );
    }

    #[test]
    fn interface_and_gateway_settings_round_trip_and_are_bounded() {
        let text = "set system gateway 10.0.2.2\n\
                    set interface eth0 address 10.0.2.15/24\n\
                    set interface eth0 address fd00::15/64\n\
                    set interface eth1 address 192.0.2.1/32\n";
        let cfg = crate::config::text::parse(text).unwrap();
        assert_eq!(cfg.system.gateway, Some("10.0.2.2".parse().unwrap()));
        let eth0 = &cfg.interfaces["eth0"].addresses;
        assert_eq!(eth0[0].to_string(), "10.0.2.15/24");
        assert_eq!(eth0[1].prefix, 64);
        let printed = crate::config::text::print(&cfg);
        assert_eq!(printed, text);
        assert_eq!(crate::config::text::parse(&printed).unwrap(), cfg);
        for bad in [
            "set system gateway router",
            "set interface eth0 address 10.0.2.15",
            "set interface eth0 address 10.0.2.15/33",
            "set interface eth0 address fd00::1/129",
            "set interface averyveryverylongname address 10.0.0.1/8",
            "set interface eth0 dhcp",
            "set interface eth0 address 10.0.2.15/24 extra",
        ] {
            assert!(Statement::parse(bad).is_err(), "{bad}");
        }
        let mut cfg = Config::default();
        for i in 0..MAX_INTERFACE_ADDRESSES {
            let line = format!("set interface eth0 address 10.0.0.{i}/24");
            Statement::parse(&line)
                .unwrap()
                .unwrap()
                .apply(&mut cfg)
                .unwrap();
        }
        let over = Statement::parse("set interface eth0 address 10.0.1.0/24")
            .unwrap()
            .unwrap();
        assert!(matches!(
            over.apply(&mut cfg),
            Err(LineError::TooMany { .. })
        ));
        let mut cfg = Config::default();
        for i in 0..MAX_INTERFACES {
            let line = format!("set interface eth{i} address 10.0.0.1/24");
            Statement::parse(&line)
                .unwrap()
                .unwrap()
                .apply(&mut cfg)
                .unwrap();
        }
        let over = Statement::parse("set interface ethx address 10.0.0.1/24")
            .unwrap()
            .unwrap();
        assert!(matches!(
            over.apply(&mut cfg),
            Err(LineError::TooMany { .. })
        ));
    }

    #[test]
    fn dns_mx_delay_notice_and_verification_settings_round_trip() {
        let text = "set system dns resolver 127.0.0.1\n\
                    set system dns resolver [::1]:5353\n\
                    set system dns timeout 5s\n\
                    set service inbound verify-recipients yes\n\
                    set service inbound verify-positive-ttl 2h\n\
                    set service inbound verify-negative-ttl 0s\n\
                    set service inbound verify-unreachable accept\n\
                    set route * mx\n\
                    set route * mx-port 2525\n\
                    set queue delay-notice 4h\n";
        let cfg = crate::config::text::parse(text).unwrap();
        assert_eq!(
            cfg.system.dns_resolvers,
            [
                "127.0.0.1:53".parse().unwrap(),
                "[::1]:5353".parse().unwrap()
            ]
        );
        assert_eq!(cfg.system.dns_timeout, Duration::from_secs(5));
        assert!(cfg.inbound.verify.enabled && cfg.inbound.verify.accept_when_unreachable);
        assert_eq!(cfg.inbound.verify.negative_ttl, Duration::ZERO);
        assert_eq!(cfg.routes[&DomainPattern::Any].next_hop, NextHop::Mx);
        assert_eq!(cfg.routes[&DomainPattern::Any].mx_port, 2525);
        assert_eq!(cfg.queue.delay_notice, Duration::from_secs(4 * 3600));
        let printed = crate::config::text::print(&cfg);
        assert_eq!(
            printed,
            text.replace("resolver 127.0.0.1\n", "resolver 127.0.0.1:53\n")
        );
        assert_eq!(crate::config::text::parse(&printed).unwrap(), cfg);
        for bad in [
            "set system dns resolver nameserver.example",
            "set system dns resolver 127.0.0.1:0",
            "set service inbound verify-recipients maybe",
            "set service inbound verify-unreachable bounce",
            "set route * mx extra",
        ] {
            assert!(Statement::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_and_channel_settings_round_trip() {
        let text = "set service inbound listen 127.0.0.1:25\n\
                    set service inbound tls-listen 127.0.0.1:465\n\
                    set service inbound channel tcp_local\n\
                    set route example.com relay [127.0.0.1]:2526\n\
                    set route example.com channel tcp_internal\n\
                    set route example.com danger-tls-no-verify yes\n\
                    set tls versions \"1.3\"\n\
                    set tls cipher-suites \"TLS13_AES_256_GCM_SHA384 TLS13_CHACHA20_POLY1305_SHA256\"\n\
                    set tls client-ca-file \"/etc/drawbridge/client ca.pem\"\n\
                    set channel tcp_auth keywords \"maytlsserver mustsaslserver noswitchchannel\"\n\
                    set channel tcp_local keywords \"maytls maysaslserver saslswitchchannel tcp_auth tlsswitchchannel tcp_tls\"\n";
        let cfg = crate::config::text::parse(text).unwrap();
        assert_eq!(cfg.inbound.tls_listen, ["127.0.0.1:465".parse().unwrap()]);
        assert!(cfg.routes[&DomainPattern::Exact("example.com".into())].danger_tls_no_verify);
        assert!(!cfg.tls.tls12 && cfg.tls.tls13);
        let local = cfg.channel(Some("tcp_local"));
        assert_eq!(local.tls_switch(), Some("tcp_tls"));
        assert_eq!(crate::config::text::print(&cfg), text);
        for bad in [
            "set tls versions \"1.1 1.2\"",
            "set tls versions \"\"",
            "set tls cipher-suites \"aes128\"",
            "set tls client-ca-file relative.pem",
            "set channel Tcp_Local keywords \"maytls\"",
            "set channel tcp_local keywords \"maytls sometimes\"",
            "set channel tcp_local keywords \"tlsswitchchannel\"",
        ] {
            assert!(Statement::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn category_ruleset_and_relay_rule_statements_round_trip() {
        let text = "set category EXTERNAL ruleset EXTERNAL\n\
                    set category EXTERNAL channel tcp_local\n\
                    set category PARTNER channel tcp_partner\n\
                    set ruleset EMPTY mechanisms \"\"\n\
                    set ruleset EXTERNAL restrict PLAIN tls\n\
                    set ruleset EXTERNAL restrict LOGIN tls\n\
                    set ruleset FULL mechanisms \"PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 EXTERNAL\"\n\
                    set ruleset INTERNAL mechanisms \"PLAIN SCRAM-SHA-256\"\n\
                    set ruleset INTERNAL restrict SCRAM-SHA-256 tls\n\
                    set relay-rule 1 allow\n\
                    set relay-rule 10 source tcp_local destination tcp_local deny \"5.7.1 SMTP relaying not permitted\"\n\
                    set relay-rule 20 source tcp_auth from *@example.com destination tcp_local to \"*@*.example.org\" deny \"no\"\n\
                    set relay-rule 65535 to postmaster@* allow\n";
        let cfg = crate::config::text::parse(text).unwrap();
        assert_eq!(
            cfg.categories["EXTERNAL"],
            crate::config::Category {
                ruleset: Some("EXTERNAL".into()),
                channel: Some("tcp_local".into()),
            }
        );
        assert_eq!(cfg.rulesets["EMPTY"].mechanisms, MechanismSet::EMPTY);
        assert_eq!(cfg.rulesets["FULL"], Ruleset::default());
        let external = cfg.rulesets["EXTERNAL"];
        assert_eq!(external.mechanisms, Ruleset::default().mechanisms);
        assert!(external.needs_tls.contains(MechanismName::Plain));
        assert!(!external.needs_tls.contains(MechanismName::CramMd5));
        let rule = &cfg.relay_rules[&20];
        assert_eq!(rule.source.as_deref(), Some("tcp_auth"));
        assert_eq!(
            rule.to.as_ref().map(|p| p.as_str()),
            Some("*@*.example.org")
        );
        assert_eq!(rule.action, RelayAction::Deny("no".into()));
        assert_eq!(cfg.relay_rules[&1].source, None);
        // "to" needs no quotes: the canonical form writes it bare.
        let printed = crate::config::text::print(&cfg);
        assert_eq!(
            printed,
            text.replace("\"*@*.example.org\"", "*@*.example.org")
        );
        assert_eq!(crate::config::text::parse(&printed).unwrap(), cfg);
    }

    #[test]
    fn relay_rule_options_come_in_any_order_and_star_means_any() {
        let a =
            one("set relay-rule 7 TO *@X.example DESTINATION * FROM * source tcp_local Deny \"x\"");
        let b = one("set relay-rule 7 source tcp_local to *@x.example deny \"x\"");
        assert_eq!(a, b);
        assert_eq!(
            a.to_string(),
            "set relay-rule 7 source tcp_local to *@x.example deny \"x\""
        );
        let mut cfg = Config::default();
        one("set relay-rule 7 allow").apply(&mut cfg).unwrap();
        a.apply(&mut cfg).unwrap();
        assert_eq!(cfg.relay_rules.len(), 1);
        assert_eq!(cfg.relay_rules[&7].action, RelayAction::Deny("x".into()));
    }

    #[test]
    fn new_statements_refuse_bad_values_clearly() {
        let cases: &[(&str, &str)] = &[
            (
                "set category external ruleset X",
                "'external' is not a category name: category names are upper case (write 'EXTERNAL')",
            ),
            (
                "set category EXTERNAL ruleset external",
                "'external' is not a ruleset name: ruleset names are upper case (write 'EXTERNAL')",
            ),
            (
                "set category EXTERNAL",
                "incomplete statement 'set category EXTERNAL': expected one of ruleset, channel",
            ),
            (
                "set category EXTERNAL channel Tcp",
                "'Tcp' is not a channel name",
            ),
            (
                "set ruleset EXTERNAL mechanisms \"PLAIN GSSAPI\"",
                "names 'GSSAPI', which is not a SASL mechanism: expected a SASL mechanism: PLAIN, LOGIN",
            ),
            (
                "set ruleset EXTERNAL mechanisms \"PLAIN plain\"",
                "names PLAIN twice",
            ),
            (
                "set ruleset EXTERNAL restrict PLAIN",
                "incomplete statement 'set ruleset EXTERNAL restrict PLAIN': expected 'tls'",
            ),
            (
                "set ruleset EXTERNAL restrict PLAIN:40 tls",
                "'PLAIN:40' is not a SASL mechanism",
            ),
            (
                "set ruleset EXTERNAL restrict PLAIN ssl",
                "unknown keyword 'ssl' after 'set ruleset EXTERNAL restrict PLAIN': expected 'tls'",
            ),
            (
                "set relay-rule 0 allow",
                "'0' is out of range for a relay rule number: expected a number from 1 to 65535",
            ),
            (
                "set relay-rule 10 source tcp_local",
                "incomplete statement 'set relay-rule 10 source tcp_local': expected one of source, from, destination, to, allow, deny",
            ),
            (
                "set relay-rule 10 source tcp_local source tcp_auth allow",
                "an option is given twice in 'set relay-rule 10 source tcp_local source': each of source, from, destination and to may appear once",
            ),
            (
                "set relay-rule 10 source TCP allow",
                "'TCP' is not a channel: expected a channel name such as tcp_local, or * for any",
            ),
            (
                "set relay-rule 10 to \"a b\" allow",
                "'a b' is not an address pattern",
            ),
            (
                "set relay-rule 10 deny",
                "missing value after 'set relay-rule 10 deny': expected a quoted reply text",
            ),
            (
                "set relay-rule 10 deny \"\"",
                "is not a deny text: it is empty",
            ),
            (
                "set relay-rule 10 allow source tcp_local",
                "unexpected 'source' after the complete statement 'set relay-rule 10 allow'",
            ),
            (
                "set relay-rule 10 from \"\" allow",
                "'' is not an address pattern",
            ),
        ];
        let mut failures = Vec::new();
        for (line, fragment) in cases {
            match Statement::parse(line) {
                Err(e) if e.to_string().contains(fragment) => {}
                other => failures.push(format!("{line}\n  got:  {other:?}\n  want: {fragment}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let long = format!("set relay-rule 1 to {} allow", "a".repeat(257));
        assert!(
            Statement::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("at most 256 octets")
        );
    }

    #[test]
    fn relay_rules_rulesets_and_categories_are_bounded() {
        let mut cfg = Config::default();
        for i in 1..=MAX_RELAY_RULES as u32 {
            one(&format!("set relay-rule {i} allow"))
                .apply(&mut cfg)
                .unwrap();
        }
        one("set relay-rule 1 deny \"x\"").apply(&mut cfg).unwrap();
        assert_eq!(
            one("set relay-rule 5000 allow").apply(&mut cfg),
            Err(LineError::TooMany {
                what: "relay rules",
                limit: MAX_RELAY_RULES
            })
        );
        let name = |i: usize| format!("R{i}");
        for i in 0..MAX_RULESETS {
            one(&format!("set ruleset {} restrict PLAIN tls", name(i)))
                .apply(&mut cfg)
                .unwrap();
            one(&format!("set category {} channel tcp_x", name(i)))
                .apply(&mut cfg)
                .unwrap();
        }
        assert!(
            one("set ruleset EXTRA mechanisms \"\"")
                .apply(&mut cfg)
                .is_err()
        );
        assert!(
            one("set category EXTRA ruleset R1")
                .apply(&mut cfg)
                .is_err()
        );
        one("set category R1 ruleset R1").apply(&mut cfg).unwrap();
    }

    #[test]
    fn access_filters_round_trip_and_are_checked() {
        let text = "set service inbound allow-filter \"smtp: 127.0.0.1, .example.com EXCEPT bad.example.com\"\n\
                    set service inbound deny-filter \"smtp: ALL\"\n\
                    set service outbound auth-mechanisms \"PLAIN SCRAM-SHA-256\"\n\
                    set service outbound access-filter \"+smtp:LOCAL$-smtp:*\"\n";
        let cfg = crate::config::text::parse(text).unwrap();
        assert_eq!(cfg.inbound.deny_filters, ["smtp: ALL"]);
        assert_eq!(crate::config::text::print(&cfg), text);
        assert!(Statement::parse("set service inbound allow-filter \"smtp 127.0.0.1\"").is_err());
        assert!(Statement::parse("set service inbound access-filter \"smtp:ALL\"").is_err());
    }
}
