//! The typed configuration model: the single source of truth for every setting.
//! **Invariant:** a setting is declared once, in the model and its [`schema`], which the
//! text form, the stored form and the console all walk; a value read in any form is held
//! to the schema's bounds.
//!
//! The text form (`set …` lines) lives in [`text`]; it parses into and prints from
//! these types and nothing else. Every field has a default, and the defaults are the
//! factory configuration.

pub mod check;
pub mod reference;
pub mod schema;
pub mod slot;
pub mod text;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::proto::filter::{Filter, Rule};
use crate::proto::sasl::{MechanismName, MechanismSet};
pub use crate::proto::smtp::keywords::EhloKeywords;
use crate::proto::smtp::server::ServerConfig;

/// The whole configuration of one gateway.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Config {
    pub system: System,
    /// The service facing the internet: mail for our domains, relayed inside.
    pub inbound: Service,
    /// The service facing the inside: mail from internal networks, delivered out.
    pub outbound: Service,
    /// Connection classification rules, ordered by their number.
    pub classify: BTreeMap<u32, ClassifyRule>,
    /// Routing by recipient domain pattern.
    pub routes: BTreeMap<DomainPattern, Route>,
    pub queue: QueueSettings,
    /// TLS versions, cipher suites and trusted client CAs.
    pub tls: Tls,
    /// Named bundles of keywords that govern a session or a delivery (the seeds' channels).
    /// A name not configured here may still be one of the [`BUILTIN_CHANNELS`].
    pub channels: BTreeMap<String, Channel>,
    /// What each classification category selects: its security ruleset and source channel.
    pub categories: BTreeMap<String, Category>,
    /// Named security rulesets: which SASL mechanisms are offered, and which need TLS.
    pub rulesets: BTreeMap<String, Ruleset>,
    /// Relay rules (the seeds' ORIG_SEND_ACCESS), ordered by their number; first match wins.
    pub relay_rules: BTreeMap<u32, RelayRule>,
    /// Network interfaces by name, as an appliance brings them up at boot.
    pub interfaces: BTreeMap<String, Interface>,
}

/// One network interface of an appliance (`set interface NAME …`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Interface {
    /// Static addresses, each with its prefix length.
    pub addresses: Vec<InterfaceAddress>,
}

/// An interface address with its prefix length: `10.0.2.15/24` (host bits kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceAddress {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which of the two services a setting or a session belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceName {
    Inbound,
    Outbound,
}

impl ServiceName {
    pub const ALL: [ServiceName; 2] = [ServiceName::Inbound, ServiceName::Outbound];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Inbound => "inbound",
            ServiceName::Outbound => "outbound",
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Config {
    pub fn service(&self, name: ServiceName) -> &Service {
        match name {
            ServiceName::Inbound => &self.inbound,
            ServiceName::Outbound => &self.outbound,
        }
    }

    pub fn service_mut(&mut self, name: ServiceName) -> &mut Service {
        match name {
            ServiceName::Inbound => &mut self.inbound,
            ServiceName::Outbound => &mut self.outbound,
        }
    }

    /// The category of a client at `remote`, by the first matching classify rule.
    /// `None` when no rule matches or the matching rule denies. A rule without an
    /// action (possible only in a candidate that has not passed the commit checks)
    /// matches nothing.
    pub fn classify(&self, local: SocketAddr, remote: SocketAddr) -> Classification<'_> {
        for rule in self.classify.values() {
            let Some(action) = &rule.action else { continue };
            if rule.matches(local, remote) {
                return match action {
                    ClassifyAction::Category(c) => Classification::Category(c),
                    ClassifyAction::Deny(text) => Classification::Deny(text),
                };
            }
        }
        Classification::Unclassified
    }

    /// The route for a domain name: an exact pattern first, then the longest `.suffix`,
    /// then `*`. Recipients are routed by [`crate::proto::policy::route`], which calls this.
    pub fn route_for(&self, domain: &str) -> Option<(&DomainPattern, &Route)> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some((p, r)) = self
            .routes
            .get_key_value(&DomainPattern::Exact(domain.clone()))
        {
            return Some((p, r));
        }
        let mut rest = domain.as_str();
        while let Some(dot) = rest.find('.') {
            let suffix = &rest[dot..];
            let key = DomainPattern::Suffix(suffix[1..].to_string());
            if let Some((p, r)) = self.routes.get_key_value(&key) {
                return Some((p, r));
            }
            rest = &rest[dot + 1..];
        }
        self.routes.get_key_value(&DomainPattern::Any)
    }
}

/// The result of classifying a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classification<'a> {
    Category(&'a str),
    Deny(&'a str),
    Unclassified,
}

/// System-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    /// The name we give in greetings, EHLO and Received headers.
    pub host_name: String,
    /// DNS resolvers for MX routing and reverse lookups, asked in order.
    pub dns_resolvers: Vec<SocketAddr>,
    /// How long one DNS query waits for an answer before the next resolver is asked.
    pub dns_timeout: Duration,
    /// The default gateway of an appliance's network; none on the host.
    pub gateway: Option<IpAddr>,
    /// Clients are named by a reverse lookup confirmed forward (`name[IP]` in logs and
    /// Received headers); off, every client is `unknown`.
    pub client_names: bool,
    /// Which crypto token holds the keys (SPEC §7).
    pub token: TokenSettings,
    /// Where mail to our postmaster goes (a bare `postmaster`, `postmaster@HOST-NAME`,
    /// `postmaster@[our address]`); `None`: `postmaster@HOST-NAME` by its route.
    pub postmaster: Option<crate::proto::smtp::address::Mailbox>,
    /// Brute-force throttling of authentication (SPEC §6).
    pub auth_throttle: AuthThrottle,
    /// Remote syslog receivers: every log line also goes to each as RFC 5424 over UDP
    /// (SPEC §11).
    pub syslog_hosts: Vec<SocketAddr>,
    /// A console session nobody has typed at for this long is logged out (SPEC §9);
    /// zero: never.
    pub console_idle_timeout: Duration,
    /// On an appliance, PID 1 kills and starts again a gateway whose event loop has not
    /// beaten for this long, and the hardware watchdog resets a machine whose PID 1 has
    /// not for this long; zero: neither. Read at boot.
    pub watchdog_timeout: Duration,
    /// How long the SMTP sessions and deliveries in progress have to finish when the
    /// gateway stops (SIGTERM, `restart`, a reboot); zero: they are cut at once.
    pub stop_grace: Duration,
    /// What each console login may do, by name; a login not named here is a
    /// super-user, as every login was before classes.
    pub logins: BTreeMap<String, Login>,
}

/// A console login's settings (its password is kept apart, in `admins.db`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Login {
    pub class: LoginClass,
}

/// What a console login may do, as Junos's login classes: each class may do what the
/// ones before it may.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoginClass {
    /// Look: every `show`, `test` and `explain`, and change its own password.
    ReadOnly,
    /// Also act on the queue (`queue flush|hold|release|delete|requeue`) and clear the
    /// counters.
    Operator,
    /// Everything: configuration, mail users, console logins, certificates, the token
    /// and the system.
    #[default]
    SuperUser,
}

impl LoginClass {
    pub fn name(self) -> &'static str {
        match self {
            LoginClass::ReadOnly => "read-only",
            LoginClass::Operator => "operator",
            LoginClass::SuperUser => "super-user",
        }
    }
}

impl System {
    /// The class of the console login `user`.
    pub fn login_class(&self, user: &str) -> LoginClass {
        self.logins.get(user).map(|l| l.class).unwrap_or_default()
    }
}

/// Limits of the authentication throttle: failures count per client address, per
/// network (/24 for IPv4, /64 for IPv6) and per target user name; each count that
/// reaches its limit blocks its key for `block_time`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthThrottle {
    /// Failures from one address before it is blocked.
    pub address_limit: u32,
    /// Failures from one network before the whole network is blocked.
    pub network_limit: u32,
    /// Failures for one user name, from anywhere, before that name is blocked.
    pub user_limit: u32,
    /// How long a block lasts.
    pub block_time: Duration,
    /// Entries (addresses, networks, user names) the throttle remembers at most.
    pub table_size: u32,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            address_limit: 5,
            network_limit: 20,
            user_limit: 10,
            block_time: Duration::from_secs(600),
            table_size: 10_000,
        }
    }
}

/// The crypto token backend: the software token, or a PKCS#11 module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TokenBackend {
    /// Keys sealed in files under the state directory.
    #[default]
    Soft,
    /// A PKCS#11 module (a shared library) loaded at start.
    Pkcs11,
}

/// Where the token is and how to log in to it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TokenSettings {
    pub backend: TokenBackend,
    /// The PKCS#11 module's path (the `pkcs11` backend needs one).
    pub module: Option<String>,
    /// The token's label; `None` means `drawbridge`.
    pub label: Option<String>,
    /// The PIN file (`label:PIN` lines); `None` means `sslpassword.conf` in the state
    /// directory.
    pub pin_file: Option<String>,
}

/// Default DNS query timeout.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// A logged-in console left untouched this long is logged out: ten minutes, the
/// `exec-timeout` routers ship with, so a console left open on a serial server does not
/// stay an administrator's session.
pub const DEFAULT_CONSOLE_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// A gateway silent this long is taken for hung: a minute, far beyond any stall of a
/// working event loop (which beats every quarter of it) and short enough that a hang
/// costs a minute of mail, not a night.
pub const DEFAULT_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for the sessions in progress to finish at a stop: enough for a message being
/// sent over a good line to end (RFC 5321 §3.8 asks servers to let transactions end),
/// short enough that a restart stays a matter of seconds.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(8);

impl Default for System {
    fn default() -> Self {
        System {
            host_name: "drawbridge.invalid".to_string(),
            dns_resolvers: Vec::new(),
            dns_timeout: DEFAULT_DNS_TIMEOUT,
            gateway: None,
            client_names: true,
            token: TokenSettings::default(),
            postmaster: None,
            auth_throttle: AuthThrottle::default(),
            syslog_hosts: Vec::new(),
            console_idle_timeout: DEFAULT_CONSOLE_IDLE_TIMEOUT,
            watchdog_timeout: DEFAULT_WATCHDOG_TIMEOUT,
            stop_grace: DEFAULT_STOP_GRACE,
            logins: BTreeMap::new(),
        }
    }
}

/// Default maximum message size: 35 MiB, as common MTAs ship.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 35 * 1024 * 1024;
/// RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted.
pub const MIN_RECIPIENTS: u32 = 100;
/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF. That is
/// advice to senders; a server must take lines at least this long.
pub const DEFAULT_TEXT_LINE: u32 = 1000;
/// The longest text line accepted by default: 64 KiB with its CRLF. Real mail (HTML
/// newsletters, some signed mail) has lines far over 1000 octets, and the gateway's job
/// is to pass mail on intact, as Postfix does; a session buffers at most one line.
pub const DEFAULT_MAX_LINE: u32 = 64 * 1024;

/// Longest certificate name: with the `tls-` prefix of its key's label it stays well
/// under the token's label limit ([`crate::io::token::MAX_LABEL_LEN`]).
pub const MAX_CERTIFICATE_NAME_LEN: usize = 32;

/// Whether `name` can name a stored certificate (`set service NAME certificate NAME`,
/// the certificate store's directories): 1 to [`MAX_CERTIFICATE_NAME_LEN`] lower-case
/// ASCII letters, digits and hyphens, safe as a file name and inside a token label.
pub fn is_certificate_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CERTIFICATE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// One SMTP service (the seeds' dispatcher service) and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Plain listening addresses (STARTTLS is offered on these).
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listening addresses (RFC 8314), the seeds' `TLS_PORT`.
    pub tls_listen: Vec<SocketAddr>,
    /// The source channel of this service's sessions.
    pub channel: Option<String>,
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    /// Connections from `proxy_from` begin with a PROXY protocol header (HAProxy's, v1
    /// or v2) naming the client a load balancer relays for; that client is then the
    /// session's client for everything.
    pub proxy_protocol: bool,
    /// The load balancers' networks: only connections from these may carry a PROXY
    /// header, and with `proxy_protocol` on they must.
    pub proxy_from: Vec<Cidr>,
    /// RFC 5321 §4.5.3.2.7: server timeout waiting for the next command, 5 min.
    pub idle_timeout: Duration,
    /// RFC 5321 §4.5.3.2.5/6: data block timeout, 3 min.
    pub data_timeout: Duration,
    /// A command line must be complete this long after its first octet; octets arriving
    /// do not extend it (Postfix's `smtpd_per_request_deadline`).
    pub command_deadline: Duration,
    /// Message content (DATA, or one BDAT chunk) must be complete this long after it
    /// starts, plus one second per `min_data_rate` octets received.
    pub data_deadline: Duration,
    /// Octets per second a client must keep up in message content (Postfix's
    /// `smtpd_min_data_rate`).
    pub min_data_rate: u32,
    /// Percent of `max_connections` open at which the service is under stress: every
    /// session's timeouts and deadlines shrink to `stress_timeout` (Postfix's stress mode).
    pub stress_threshold: u32,
    /// The longest timeout or deadline of any session while the service is under stress.
    pub stress_timeout: Duration,
    pub max_session_time: Duration,
    pub max_messages_per_session: u32,
    pub max_message_size: u64,
    pub max_recipients: u32,
    /// Longest text line accepted in message data, octets with CRLF.
    pub max_line_length: u32,
    /// Errors a client may make before it is disconnected with 421.
    pub error_limit: u32,
    /// Wait this long before the greeting; a client that talks meanwhile is refused.
    pub greet_delay: Duration,
    /// Which EHLO extensions are advertised (the seeds' `EhloKeywords`).
    pub ehlo_keywords: EhloKeywords,
    /// Recipient verification against the internal servers (callouts).
    pub verify: Verify,
    /// Access filters in seed 002's syntax (`service: client-list [EXCEPT …]`), checked
    /// when a client connects: allow filters first, then deny; no match allows.
    pub allow_filters: Vec<AccessRule>,
    pub deny_filters: Vec<AccessRule>,
    /// Filters in the compact `+service:list$-service:list` form.
    pub compact_filters: Vec<CompactFilter>,
    /// SASL mechanisms this service offers at most; the client's ruleset narrows them.
    /// `None` leaves it to the ruleset.
    pub auth_mechanisms: Option<crate::proto::sasl::MechanismSet>,
    /// Turned off on purpose: it listens nowhere, and the commit checks accept that.
    pub disabled: bool,
    /// The stored certificate served without SNI and on STARTTLS; `None`: the one for
    /// the host name (an imported one before the first-boot self-signed one).
    pub certificate: Option<String>,
    /// Whether AUTH is offered at all; `None`: the service's default (see
    /// [`Config::offers_auth`]).
    pub auth: Option<bool>,
}

impl Service {
    /// Whether a connection from `peer` must begin with a PROXY header: the service takes
    /// the protocol and `peer` is in one of its `proxy-from` networks (an IPv4-mapped
    /// IPv6 address, as a dual-stack listener sees an IPv4 peer, counts as IPv4:
    /// [`Cidr::contains`]).
    pub fn expects_proxy_header(&self, peer: IpAddr) -> bool {
        self.proxy_protocol && self.proxy_from.iter().any(|n| n.contains(peer))
    }

    /// The statement of deny rule `k` in the order the gateway checks them (the
    /// `deny-filter` rules, then each `access-filter`'s `-` rules), in the administrator's
    /// words, for the log line of a refused client.
    pub fn deny_rule_source(&self, k: usize) -> Option<String> {
        if let Some(rule) = self.deny_filters.get(k) {
            return Some(format!("deny-filter \"{}\"", rule.text()));
        }
        let mut k = k - self.deny_filters.len();
        for compact in &self.compact_filters {
            let n = compact.filter().deny.len();
            if k < n {
                return Some(format!("access-filter \"{}\"", compact.text()));
            }
            k -= n;
        }
        None
    }
}

/// One access-filter rule: the text as the administrator wrote it, and its checked tree.
/// Made only by [`AccessRule::parse`], so the two always agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    text: String,
    rule: Rule,
}

impl AccessRule {
    pub fn parse(text: &str) -> Result<AccessRule, crate::proto::filter::ParseError> {
        Ok(AccessRule {
            rule: Rule::parse(text)?,
            text: text.to_string(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn rule(&self) -> &Rule {
        &self.rule
    }
}

/// A compact `+…$-…` filter: its text and its checked rules, made only by
/// [`CompactFilter::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactFilter {
    text: String,
    filter: Filter,
}

impl CompactFilter {
    pub fn parse(text: &str) -> Result<CompactFilter, crate::proto::filter::ParseError> {
        Ok(CompactFilter {
            filter: Filter::parse_compact(text)?,
            text: text.to_string(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }
}

/// Recipient verification: RCPT for a domain routed to internal relays is checked live
/// against the internal server before we answer, so unknown users are refused at the door.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verify {
    pub enabled: bool,
    /// How long a "user exists" answer is remembered.
    pub positive_ttl: Duration,
    /// How long a "no such user" answer is remembered.
    pub negative_ttl: Duration,
    /// With every internal server unreachable: accept (true) or answer 451 (false).
    pub accept_when_unreachable: bool,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            enabled: false,
            positive_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(600),
            accept_when_unreachable: false,
        }
    }
}

impl Default for Service {
    fn default() -> Self {
        Service {
            listen: Vec::new(),
            tls_listen: Vec::new(),
            channel: None,
            max_connections: 500,
            // 25 addresses can hold at most half of the default 500 connections.
            max_connections_per_ip: 10,
            proxy_protocol: false,
            proxy_from: Vec::new(),
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            command_deadline: Duration::from_secs(60),
            data_deadline: Duration::from_secs(60),
            min_data_rate: 500,
            stress_threshold: 75,
            stress_timeout: Duration::from_secs(10),
            max_session_time: Duration::from_secs(3600),
            max_messages_per_session: 1000,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: MIN_RECIPIENTS,
            max_line_length: DEFAULT_MAX_LINE,
            error_limit: 10,
            greet_delay: Duration::ZERO,
            ehlo_keywords: EhloKeywords::ALL,
            verify: Verify::default(),
            allow_filters: Vec::new(),
            deny_filters: Vec::new(),
            compact_filters: Vec::new(),
            auth_mechanisms: None,
            disabled: false,
            certificate: None,
            auth: None,
        }
    }
}

/// A network in CIDR form; the address is stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `None` when the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        Some(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One connection classification rule (the seeds' PORT_ACCESS).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClassifyRule {
    pub local: Option<Cidr>,
    pub local_port: Option<u16>,
    pub remote: Option<Cidr>,
    pub remote_port: Option<u16>,
    /// `None` only in a candidate: the commit checks refuse a rule without an action.
    pub action: Option<ClassifyAction>,
}

impl ClassifyRule {
    pub fn matches(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        self.local.is_none_or(|c| c.contains(local.ip()))
            && self.local_port.is_none_or(|p| p == local.port())
            && self.remote.is_none_or(|c| c.contains(remote.ip()))
            && self.remote_port.is_none_or(|p| p == remote.port())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassifyAction {
    /// A category name such as INTERNAL or EXTERNAL.
    Category(String),
    /// Refuse the connection with this text.
    Deny(String),
}

/// The category name that makes a client internal: it may relay anywhere.
pub const INTERNAL: &str = "INTERNAL";

/// A recipient domain pattern.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DomainPattern {
    /// The domain itself, lower case, no trailing dot.
    Exact(String),
    /// Any subdomain of this domain (written `.example.com`), not the domain itself.
    Suffix(String),
    /// Every domain (written `*`).
    Any,
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Suffix(d) => write!(f, ".{d}"),
            DomainPattern::Any => f.write_str("*"),
        }
    }
}

/// Where mail for a domain pattern goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `None` only in a candidate: the commit checks refuse a route without a next hop.
    pub next_hop: Option<NextHop>,
    /// How long to wait for a relay host to answer before trying the next.
    pub failover_timeout: Duration,
    /// How long a relay host that failed is passed over.
    pub avoid_time: Duration,
    /// Most connections open at once to this route's next hop.
    pub concurrency: u32,
    /// The port of the hosts an MX lookup finds (RFC 5321 §4.5.4.2: 25).
    pub mx_port: u16,
    /// The destination channel of deliveries on this route.
    pub channel: Option<String>,
    /// Skip verifying the next hop's certificate even where TLS is required. Risky: a
    /// man in the middle can read the mail.
    pub danger_tls_no_verify: bool,
    /// Log in to the next hop as this user (client SMTP AUTH, RFC 4954); the password is
    /// in the state directory's secret store under the same name.
    pub auth_user: Option<String>,
    /// Send the credentials even over a connection without TLS. Risky: anyone on the
    /// path reads the password.
    pub danger_auth_cleartext: bool,
}

/// The SMTP port, for MX hosts.
pub const SMTP_PORT: u16 = 25;

/// Default failover timeout: the seeds' `FailoverTimeout 10`.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Route {
    fn default() -> Self {
        Route {
            next_hop: None,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            avoid_time: Duration::from_secs(60),
            concurrency: 20,
            mx_port: SMTP_PORT,
            channel: None,
            danger_tls_no_verify: false,
            auth_user: None,
            danger_auth_cleartext: false,
        }
    }
}

impl Route {
    pub fn new(next_hop: NextHop) -> Route {
        Route {
            next_hop: Some(next_hop),
            ..Route::default()
        }
    }

    /// Our own domains are those routed to internal relays.
    pub fn is_internal_relay(&self) -> bool {
        matches!(self.next_hop, Some(NextHop::Relay(_)))
    }

    /// Whether the next hop is an MX lookup of the recipient's domain.
    pub fn is_mx(&self) -> bool {
        self.next_hop == Some(NextHop::Mx)
    }

    /// The fixed hosts of a relay list or smarthost; none for MX routing.
    pub fn hosts(&self) -> &[RelayHost] {
        self.next_hop.as_ref().map_or(&[], NextHop::hosts)
    }
}

/// The kind of next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// Internal relay list `host:port,…`, used round-robin.
    Relay(Vec<RelayHost>),
    /// One smarthost for everything the route matches.
    Smarthost(Vec<RelayHost>),
    /// The recipient domain's MX records (RFC 5321 §5.1), looked up by our DNS client.
    Mx,
}

impl NextHop {
    /// The fixed hosts of a relay list or smarthost; none for MX routing.
    pub fn hosts(&self) -> &[RelayHost] {
        match self {
            NextHop::Relay(h) | NextHop::Smarthost(h) => h,
            NextHop::Mx => &[],
        }
    }
}

/// One host of a relay list or smarthost.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RelayHost {
    /// An address literal, `[192.0.2.1]:25`: connected to as it is.
    Address(SocketAddr),
    /// A host name, `smtp.example.com:587`: its A and AAAA addresses are looked up at
    /// connect time (never its MX), and it is the name TLS verifies. Lower case, no
    /// trailing dot.
    Name { name: String, port: u16 },
}

impl RelayHost {
    pub fn port(&self) -> u16 {
        match self {
            RelayHost::Address(a) => a.port(),
            RelayHost::Name { port, .. } => *port,
        }
    }
}

impl fmt::Display for RelayHost {
    /// The canonical text: `[address]:port` or `name:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayHost::Address(a) => write!(f, "[{}]:{}", a.ip(), a.port()),
            RelayHost::Name { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

/// Queue and retry settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// Delays between delivery attempts; the last repeats.
    pub retry: Vec<Duration>,
    /// A message older than this is returned to its sender.
    pub max_lifetime: Duration,
    /// After this long undelivered, the sender gets one delay notice; zero means never.
    pub delay_notice: Duration,
    /// Most messages the queue manager keeps in memory (Postfix's
    /// `qmgr_message_active_limit`): the rest wait in their files, with only their
    /// schedule in memory, until there is room.
    pub active_limit: u32,
}

/// The factory `queue active-limit`: 10 000 messages of about 1.2 KiB each in memory.
pub const DEFAULT_ACTIVE_LIMIT: u32 = 10_000;

impl Default for QueueSettings {
    fn default() -> Self {
        let m = |mins: u64| Duration::from_secs(mins * 60);
        QueueSettings {
            retry: vec![m(5), m(15), m(30), m(60), m(120), m(240)],
            max_lifetime: Duration::from_secs(5 * 24 * 3600),
            delay_notice: Duration::ZERO,
            active_limit: DEFAULT_ACTIVE_LIMIT,
        }
    }
}

/// TLS settings shared by both services and by delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub tls12: bool,
    pub tls13: bool,
    /// Cipher suites by the provider's names; empty means the provider's default set.
    pub cipher_suites: Vec<String>,
    /// A PEM file of CA certificates: when set, servers ask clients for a certificate
    /// and verify it against these.
    pub client_ca_file: Option<String>,
    /// A PEM file of CA certificates trusted for next hops besides the public roots.
    pub server_ca_file: Option<String>,
    /// The stored certificate our client presents to a next hop that asks for one.
    pub client_certificate: Option<String>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            tls12: true,
            tls13: true,
            cipher_suites: Vec::new(),
            client_ca_file: None,
            server_ca_file: None,
            client_certificate: None,
        }
    }
}

/// One channel keyword (SPEC §3).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChannelKeyword {
    NoTls,
    MayTls,
    MustTls,
    NoTlsServer,
    MayTlsServer,
    MustTlsServer,
    NoTlsClient,
    MayTlsClient,
    MustTlsClient,
    TlsSwitchChannel(String),
    MaySaslServer,
    MustSaslServer,
    SaslSwitchChannel(String),
    AllowSwitchChannel,
    NoSwitchChannel,
}

impl ChannelKeyword {
    /// The keyword as written.
    pub fn name(&self) -> &'static str {
        match self {
            ChannelKeyword::NoTls => "notls",
            ChannelKeyword::MayTls => "maytls",
            ChannelKeyword::MustTls => "musttls",
            ChannelKeyword::NoTlsServer => "notlsserver",
            ChannelKeyword::MayTlsServer => "maytlsserver",
            ChannelKeyword::MustTlsServer => "musttlsserver",
            ChannelKeyword::NoTlsClient => "notlsclient",
            ChannelKeyword::MayTlsClient => "maytlsclient",
            ChannelKeyword::MustTlsClient => "musttlsclient",
            ChannelKeyword::TlsSwitchChannel(_) => "tlsswitchchannel",
            ChannelKeyword::MaySaslServer => "maysaslserver",
            ChannelKeyword::MustSaslServer => "mustsaslserver",
            ChannelKeyword::SaslSwitchChannel(_) => "saslswitchchannel",
            ChannelKeyword::AllowSwitchChannel => "allowswitchchannel",
            ChannelKeyword::NoSwitchChannel => "noswitchchannel",
        }
    }
}

/// What a channel says about TLS on one side of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsUse {
    Never,
    May,
    Must,
}

/// A named bundle of keywords.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Channel {
    pub keywords: Vec<ChannelKeyword>,
}

impl Channel {
    /// Whether sessions on this channel may switch to another one (`tlsswitchchannel`,
    /// `saslswitchchannel`): yes unless it says `noswitchchannel`. `allowswitchchannel`
    /// is the default written out; when both are written, the later one wins.
    pub fn switching_allowed(&self) -> bool {
        self.keywords
            .iter()
            .rev()
            .find_map(|k| match k {
                ChannelKeyword::AllowSwitchChannel => Some(true),
                ChannelKeyword::NoSwitchChannel => Some(false),
                _ => None,
            })
            .unwrap_or(true)
    }

    /// The channel named by `tlsswitchchannel`, whether or not switching is allowed.
    pub fn tls_switch_target(&self) -> Option<&str> {
        self.keywords.iter().find_map(|k| match k {
            ChannelKeyword::TlsSwitchChannel(to) => Some(to.as_str()),
            _ => None,
        })
    }

    /// The channel named by `saslswitchchannel`, whether or not switching is allowed.
    pub fn sasl_switch_target(&self) -> Option<&str> {
        self.keywords.iter().find_map(|k| match k {
            ChannelKeyword::SaslSwitchChannel(to) => Some(to.as_str()),
            _ => None,
        })
    }

    /// The channel a session switches to once it has authenticated, if switching is
    /// allowed.
    pub fn sasl_switch(&self) -> Option<&str> {
        self.sasl_switch_target()
            .filter(|_| self.switching_allowed())
    }

    /// TLS as a server (for sessions whose source channel this is): the `…server` form
    /// wins over the plain one; the default is `maytls`.
    pub fn tls_server(&self) -> TlsUse {
        self.tls_use([
            ChannelKeyword::NoTlsServer,
            ChannelKeyword::MayTlsServer,
            ChannelKeyword::MustTlsServer,
        ])
    }

    /// TLS as a client (for deliveries whose destination channel this is).
    pub fn tls_client(&self) -> TlsUse {
        self.tls_use([
            ChannelKeyword::NoTlsClient,
            ChannelKeyword::MayTlsClient,
            ChannelKeyword::MustTlsClient,
        ])
    }

    fn tls_use(&self, specific: [ChannelKeyword; 3]) -> TlsUse {
        let of = |k: &ChannelKeyword, set: &[ChannelKeyword; 3]| {
            [TlsUse::Never, TlsUse::May, TlsUse::Must]
                .into_iter()
                .zip(set.iter())
                .find(|(_, s)| *s == k)
                .map(|(u, _)| u)
        };
        let general = [
            ChannelKeyword::NoTls,
            ChannelKeyword::MayTls,
            ChannelKeyword::MustTls,
        ];
        let specific_use = self.keywords.iter().rev().find_map(|k| of(k, &specific));
        let general_use = self.keywords.iter().rev().find_map(|k| of(k, &general));
        specific_use.or(general_use).unwrap_or(TlsUse::May)
    }

    /// The channel a session switches to once TLS is up, if switching is allowed.
    pub fn tls_switch(&self) -> Option<&str> {
        self.tls_switch_target()
            .filter(|_| self.switching_allowed())
    }
}

/// The source channel of unauthenticated clients of any category but INTERNAL, and the
/// destination channel of routes that leave the organisation (MX and smarthost).
pub const CHANNEL_LOCAL: &str = "tcp_local";
/// The source channel of INTERNAL clients.
pub const CHANNEL_INTRANET: &str = "tcp_intranet";
/// Where `tcp_local` switches after AUTH (`saslswitchchannel tcp_auth`).
pub const CHANNEL_AUTH: &str = "tcp_auth";
/// The destination channel of routes to internal relays (our own domains).
pub const CHANNEL_INTERNAL: &str = "tcp_internal";

/// The channels that exist without configuration, with their keywords (the seeds'
/// sample channel block). `set channel NAME keywords …` with one of these names replaces
/// the built-in keywords.
pub const BUILTIN_CHANNELS: [(&str, &str); 4] = [
    (
        CHANNEL_LOCAL,
        "maytls maysaslserver saslswitchchannel tcp_auth",
    ),
    (CHANNEL_INTRANET, "maytls maysaslserver"),
    (CHANNEL_AUTH, "maytlsserver mustsaslserver noswitchchannel"),
    (CHANNEL_INTERNAL, "maytls"),
];

/// A built-in channel by name, or `None` for any other name.
pub fn builtin_channel(name: &str) -> Option<Channel> {
    let (_, words) = BUILTIN_CHANNELS.iter().find(|(n, _)| *n == name)?;
    // The keyword texts above are constants checked by a test to parse.
    let keywords = text::value::channel_keywords(words).ok()?;
    Some(Channel { keywords })
}

impl Config {
    /// A named channel: the configured one, else a built-in one of that name, else (for
    /// an unknown or absent name) the default channel.
    pub fn channel(&self, name: Option<&str>) -> Channel {
        let Some(name) = name else {
            return Channel::default();
        };
        match self.channels.get(name) {
            Some(c) => c.clone(),
            None => builtin_channel(name).unwrap_or_default(),
        }
    }

    /// Whether `service` offers AUTH at all: as set, else not on the inbound (MX)
    /// service, which faces the whole internet (as Postfix's `smtpd_sasl_auth_enable`
    /// defaults to no), and on the outbound one (SPEC §6).
    pub fn offers_auth(&self, service: ServiceName) -> bool {
        self.service(service)
            .auth
            .unwrap_or(service == ServiceName::Outbound)
    }

    /// Whether `name` is a configured or built-in channel.
    pub fn has_channel(&self, name: &str) -> bool {
        self.channels.contains_key(name) || BUILTIN_CHANNELS.iter().any(|(n, _)| *n == name)
    }
}

/// What one classification category selects (`set category NAME …`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Category {
    /// The security ruleset; absent means the ruleset named like the category, else
    /// `DEFAULT`, else the factory ruleset.
    pub ruleset: Option<String>,
    /// The source channel; absent means the service's channel, else the built-in one
    /// (`tcp_intranet` for INTERNAL, `tcp_local` for the others).
    pub channel: Option<String>,
}

/// The ruleset a category without one of its own falls back to, by name.
pub const DEFAULT_RULESET: &str = "DEFAULT";

/// A security ruleset (the seeds' `[RULESET=…]` with `ENABLE` and `RESTRICT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// The SASL mechanisms offered.
    pub mechanisms: MechanismSet,
    /// Mechanisms offered only once TLS is up (the seeds' `RESTRICT=PLAIN:40`).
    pub needs_tls: MechanismSet,
}

/// Every mechanism this firmware knows.
pub fn all_mechanisms() -> MechanismSet {
    MechanismName::ALL
        .into_iter()
        .fold(MechanismSet::EMPTY, MechanismSet::with)
}

impl Default for Ruleset {
    /// A new ruleset: every mechanism, none restricted.
    fn default() -> Self {
        Ruleset {
            mechanisms: all_mechanisms(),
            needs_tls: MechanismSet::EMPTY,
        }
    }
}

impl Ruleset {
    /// The ruleset of a category that selects none: every mechanism, with PLAIN and LOGIN
    /// (which carry the password itself) only under TLS.
    pub fn factory() -> Ruleset {
        Ruleset {
            mechanisms: all_mechanisms(),
            // AUTH only ever over TLS (SPEC §6): nothing a password can be guessed or
            // read through goes in clear; EXTERNAL needs a client certificate anyway.
            needs_tls: MechanismSet::EMPTY
                .with(MechanismName::Plain)
                .with(MechanismName::Login)
                .with(MechanismName::CramMd5)
                .with(MechanismName::ScramSha256),
        }
    }
}

/// A pattern on an envelope address: `*` matches any run of characters, everything else
/// itself, ignoring ASCII case. Stored lower case. `*` alone matches every address,
/// including the null sender.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressPattern(String);

impl AddressPattern {
    /// A pattern from its checked text (see `text::value::address_pattern`).
    pub fn new(text: &str) -> AddressPattern {
        AddressPattern(text.to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `address` matches, ignoring ASCII case.
    ///
    /// Glob matching with one backtrack point: at most `pattern × address` steps, and
    /// both are bounded (256 octets each, RFC 5321 §4.5.3.1.3).
    pub fn matches(&self, address: &str) -> bool {
        let p = self.0.as_bytes();
        let a = address.as_bytes();
        let (mut pi, mut ai) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ai < a.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ai));
                pi += 1;
            } else if pi < p.len() && p[pi] == a[ai].to_ascii_lowercase() {
                pi += 1;
                ai += 1;
            } else if let Some((sp, sa)) = star {
                pi = sp + 1;
                ai = sa + 1;
                star = Some((sp, sa + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

impl fmt::Display for AddressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a relay rule decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayAction {
    Allow,
    /// Refuse the recipient; the text is the reply, optionally starting with an
    /// enhanced status code (`5.7.1 Relaying denied`).
    Deny(String),
}

/// One relay rule: `source | from | destination | to`, each absent meaning "any".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RelayRule {
    /// The session's source channel, after any TLS or SASL switch.
    pub source: Option<String>,
    /// The envelope sender (MAIL FROM).
    pub from: Option<AddressPattern>,
    /// The destination channel of the recipient's route.
    pub destination: Option<String>,
    /// The recipient (RCPT TO).
    pub to: Option<AddressPattern>,
    /// `None` only in a candidate: the commit checks refuse a rule without an action.
    pub action: Option<RelayAction>,
}

/// The host board's default configuration, in the text form.
pub const HOST_DEFAULT: &str = include_str!("../../../board/host/default.conf");

/// The host board's default configuration, parsed.
pub fn host_default() -> Config {
    // The file is part of the build and tested to parse (see text::tests).
    text::parse(HOST_DEFAULT).expect("board/host/default.conf parses")
}

/// The SMTP server core gets its settings as plain values: the configuration builds them
/// from a service (the core imports nothing of the configuration).
impl ServerConfig {
    pub fn from_service(host_name: &str, s: &Service) -> ServerConfig {
        ServerConfig {
            host_name: host_name.to_string(),
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_line_length: s.max_line_length,
            command_timeout: s.idle_timeout,
            data_timeout: s.data_timeout,
            command_deadline: s.command_deadline,
            data_deadline: s.data_deadline,
            min_data_rate: s.min_data_rate,
            stress_timeout: s.stress_timeout,
            max_session_time: s.max_session_time,
            max_messages: s.max_messages_per_session,
            error_limit: s.error_limit,
            greet_delay: s.greet_delay,
            ehlo_keywords: s.ehlo_keywords,
            tls_available: false,
            require_tls: false,
            auth_mechanisms: Vec::new(),
            auth_needs_tls: Vec::new(),
            require_auth: false,
        }
    }
}

/// A configuration being edited, and the commit it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub base: u64,
    pub config: Config,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_refusing_rule_is_named_by_its_statement() {
        let config = text::parse(
            "set service inbound deny-filter \"smtp: 10.0.0.1\"\n\
             set service inbound deny-filter \"smtp: 10.0.0.2\"\n\
             set service inbound access-filter \"+smtp: 10.1.0.1$-smtp: 10.1.0.2$-smtp: ALL\"\n",
        )
        .unwrap();
        let s = config.service(ServiceName::Inbound);
        assert_eq!(
            s.deny_rule_source(1).as_deref(),
            Some("deny-filter \"smtp: 10.0.0.2\"")
        );
        assert_eq!(
            s.deny_rule_source(3).as_deref(),
            Some("access-filter \"+smtp: 10.1.0.1$-smtp: 10.1.0.2$-smtp: ALL\"")
        );
        assert_eq!(s.deny_rule_source(4), None);
    }

    #[test]
    fn a_proxy_header_is_expected_only_from_the_balancers_when_the_protocol_is_on() {
        let mut s = Service::default();
        let balancer: IpAddr = "10.1.0.5".parse().unwrap();
        assert!(!s.expects_proxy_header(balancer));
        s.proxy_from
            .push(Cidr::new("10.1.0.0".parse().unwrap(), 16).unwrap());
        assert!(!s.expects_proxy_header(balancer), "the protocol is off");
        s.proxy_protocol = true;
        assert!(s.expects_proxy_header(balancer));
        assert!(s.expects_proxy_header("::ffff:10.1.0.5".parse().unwrap()));
        assert!(!s.expects_proxy_header("10.2.0.5".parse().unwrap()));
        assert!(!s.expects_proxy_header("2001:db8::5".parse().unwrap()));
    }

    #[test]
    fn cidr_contains_and_masks() {
        let c = Cidr::new("10.1.2.3".parse().unwrap(), 8).unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.200.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let any = Cidr::new("0.0.0.0".parse().unwrap(), 0).unwrap();
        assert!(any.contains("192.0.2.1".parse().unwrap()));
        assert!(Cidr::new("10.0.0.0".parse().unwrap(), 33).is_none());
        let v6 = Cidr::new("2001:db8::1".parse().unwrap(), 32).unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
    }

    #[test]
    fn routes_prefer_exact_then_longest_suffix_then_any() {
        let mut cfg = Config::default();
        let hop = |p: u16| {
            Route::new(NextHop::Relay(vec![RelayHost::Address(sa(&format!(
                "127.0.0.1:{p}"
            )))]))
        };
        cfg.routes
            .insert(DomainPattern::Exact("example.com".into()), hop(1));
        cfg.routes
            .insert(DomainPattern::Suffix("example.com".into()), hop(2));
        cfg.routes
            .insert(DomainPattern::Suffix("b.example.com".into()), hop(3));
        cfg.routes.insert(DomainPattern::Any, hop(4));
        let port = |d: &str| cfg.route_for(d).unwrap().1.hosts()[0].port();
        assert_eq!(port("example.com"), 1);
        assert_eq!(port("EXAMPLE.com."), 1);
        assert_eq!(port("a.example.com"), 2);
        assert_eq!(port("x.b.example.com"), 3);
        assert_eq!(port("b.example.com"), 2);
        assert_eq!(port("example.org"), 4);
        cfg.routes.remove(&DomainPattern::Any);
        assert!(cfg.route_for("example.org").is_none());
    }

    #[test]
    fn classification_first_match_wins() {
        let mut cfg = Config::default();
        cfg.classify.insert(
            10,
            ClassifyRule {
                local: None,
                local_port: None,
                remote: Cidr::new("127.0.0.0".parse().unwrap(), 8),
                remote_port: None,
                action: Some(ClassifyAction::Category(INTERNAL.into())),
            },
        );
        cfg.classify.insert(
            20,
            ClassifyRule {
                local: None,
                local_port: Some(7633),
                remote: None,
                remote_port: None,
                action: Some(ClassifyAction::Deny("no web interface here".into())),
            },
        );
        let local = sa("127.0.0.1:25");
        assert_eq!(
            cfg.classify(local, sa("127.0.0.9:4000")),
            Classification::Category(INTERNAL)
        );
        assert_eq!(
            cfg.classify(sa("192.0.2.1:7633"), sa("192.0.2.9:4000")),
            Classification::Deny("no web interface here")
        );
        assert_eq!(
            cfg.classify(local, sa("192.0.2.9:4000")),
            Classification::Unclassified
        );
    }

    #[test]
    fn ehlo_keyword_names_round_trip() {
        for (k, n) in EhloKeywords::NAMES {
            assert_eq!(EhloKeywords::from_name(n), Some(k));
            assert_eq!(EhloKeywords::from_name(&n.to_lowercase()), Some(k));
        }
        let some = EhloKeywords::NONE
            .with(EhloKeywords::SIZE)
            .with(EhloKeywords::DSN);
        assert_eq!(some.names().collect::<Vec<_>>(), ["SIZE", "DSN"]);
        assert!(
            EhloKeywords::ALL
                .without(EhloKeywords::SIZE)
                .contains(EhloKeywords::DSN)
        );
    }

    #[test]
    fn channel_tls_keywords_specific_forms_win() {
        let ch = |words: &[ChannelKeyword]| Channel {
            keywords: words.to_vec(),
        };
        use ChannelKeyword as K;
        assert_eq!(ch(&[]).tls_server(), TlsUse::May);
        assert_eq!(ch(&[K::MustTls]).tls_server(), TlsUse::Must);
        assert_eq!(ch(&[K::MustTls]).tls_client(), TlsUse::Must);
        assert_eq!(ch(&[K::MustTls, K::MayTlsClient]).tls_client(), TlsUse::May);
        assert_eq!(
            ch(&[K::NoTlsServer, K::MustTls]).tls_server(),
            TlsUse::Never
        );
        assert_eq!(ch(&[K::MustTlsServer]).tls_client(), TlsUse::May);
        let switch = ch(&[K::TlsSwitchChannel("tcp_tls".into())]);
        assert_eq!(switch.tls_switch(), Some("tcp_tls"));
        let mut blocked = switch.clone();
        blocked.keywords.push(K::NoSwitchChannel);
        assert_eq!(blocked.tls_switch(), None);
    }

    #[test]
    fn built_in_channels_exist_until_configured() {
        for (name, words) in BUILTIN_CHANNELS {
            let ch = builtin_channel(name).expect("built-in keywords parse");
            assert_eq!(text::value::format_channel_keywords(&ch.keywords), words);
        }
        let mut cfg = Config::default();
        assert_eq!(
            cfg.channel(Some(CHANNEL_LOCAL)).sasl_switch(),
            Some(CHANNEL_AUTH)
        );
        assert_eq!(cfg.channel(Some(CHANNEL_AUTH)).sasl_switch(), None);
        assert!(!cfg.channel(Some(CHANNEL_AUTH)).switching_allowed());
        assert!(cfg.has_channel(CHANNEL_INTERNAL));
        assert!(!cfg.has_channel("tcp_other"));
        assert_eq!(cfg.channel(Some("tcp_other")), Channel::default());
        assert_eq!(cfg.channel(None), Channel::default());
        cfg.channels
            .insert(CHANNEL_LOCAL.into(), Channel::default());
        assert_eq!(cfg.channel(Some(CHANNEL_LOCAL)).sasl_switch(), None);
    }

    #[test]
    fn certificate_names_are_short_lower_case_words() {
        let longest = "x".repeat(MAX_CERTIFICATE_NAME_LEN);
        for good in ["mail-2026", "0-self-signed", longest.as_str()] {
            assert!(is_certificate_name(good), "{good:?}");
            let line = format!("set service inbound certificate {good}\n");
            let config = text::parse(&line).unwrap();
            assert_eq!(
                config.service(ServiceName::Inbound).certificate.as_deref(),
                Some(good)
            );
        }
        let too_long = "x".repeat(MAX_CERTIFICATE_NAME_LEN + 1);
        for bad in ["", "Mail", "a/b", "..", "a.b", "a_b", too_long.as_str()] {
            assert!(!is_certificate_name(bad), "{bad:?}");
        }
        let refused = text::parse("set service inbound certificate Mail-2026\n").unwrap_err();
        assert!(
            refused.to_string().contains(
                "'Mail-2026' is not a certificate name: 1 to 32 lower-case letters, digits and hyphens"
            ),
            "{refused}"
        );
    }
}
