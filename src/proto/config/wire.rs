//! The stored form of the configuration: postcard wire types, one set per schema version
//! (SPEC §8). With `src/proto/queue/envelope.rs` these are the only types that derive serde.
//!
//! postcard carries no field names, so a wire type is never changed once released: a new
//! schema version adds new types (`ConfigV2`, …) and a conversion from the older ones,
//! and the decoder keeps reading every version it ever wrote. A committed blob of each
//! released version (`testdata/config-v1.bin` to `config-v6.bin`) is decoded by a
//! test to keep that promise.
//!
//! Values whose grammar is richer than their model (access filters, channel keywords,
//! address patterns) travel as their canonical text and are parsed again on the way in,
//! so a stored configuration passes the same checks as a typed one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::text::value;
use super::{
    Category, Channel, Cidr, ClassifyAction, ClassifyRule, Config, DomainPattern, EhloKeywords,
    Login, LoginClass, NextHop, QueueSettings, RelayAction, RelayHost, RelayRule, Route, Ruleset,
    Service, System, Tls, TokenBackend, TokenSettings, Verify,
};
use crate::proto::sasl::{MechanismName, MechanismSet};

/// The schema version of the stored configuration this firmware writes.
///
/// Changelog (each version's type wraps the one before and adds its fields, so a
/// conversion only ever handles what is new):
/// * 1 — the first stored form: system (with the token), services, classify, routes,
///   queue, TLS, channels, categories, rulesets and relay rules ([`ConfigV1`]).
/// * 2 — `system postmaster` and `auth-throttle`; each service's `certificate`, `auth`,
///   `command-deadline`, `data-deadline`, `min-data-rate`, `stress-threshold` and
///   `stress-timeout`; `system dns client-names`; `system gateway` and `interface`;
///   `system syslog host`; each route's host names in relay lists and smarthosts,
///   `auth user` and `auth danger-cleartext` ([`ConfigV2`], [`RouteV2`]).
/// * 3 — each service's `proxy-protocol` and `proxy-from` ([`ConfigV3`], [`ProxyV3`]).
/// * 4 — `system console idle-timeout` and `tls client-certificate` ([`ConfigV4`]).
/// * 5 — `system watchdog timeout` and `system stop-grace` ([`ConfigV5`]).
/// * 6 — `system login user NAME class` ([`ConfigV6`]).
/// * 7 — `queue active-limit` ([`ConfigV7`]).
pub const SCHEMA_VERSION: u16 = 7;

/// The oldest schema version this firmware still reads.
pub const OLDEST_SCHEMA_VERSION: u16 = 1;

/// Schema version 7: version 6 and the queue manager's active limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigV7 {
    pub v6: ConfigV6,
    pub queue_active_limit: u32,
}

impl From<&Config> for ConfigV7 {
    fn from(c: &Config) -> ConfigV7 {
        ConfigV7 {
            v6: c.into(),
            queue_active_limit: c.queue.active_limit,
        }
    }
}

impl TryFrom<ConfigV7> for Config {
    type Error = WireError;

    fn try_from(w: ConfigV7) -> Result<Config, WireError> {
        let mut c = Config::try_from(w.v6)?;
        c.queue.active_limit = w.queue_active_limit;
        Ok(c)
    }
}

/// Schema version 6: version 5 and the console logins' classes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigV6 {
    pub v5: ConfigV5,
    /// Each named login and its class: 0 read-only, 1 operator, 2 super-user.
    pub logins: Vec<(String, u8)>,
}

impl From<&Config> for ConfigV6 {
    fn from(c: &Config) -> ConfigV6 {
        ConfigV6 {
            v5: c.into(),
            logins: c
                .system
                .logins
                .iter()
                .map(|(name, login)| (name.clone(), login.class as u8))
                .collect(),
        }
    }
}

impl TryFrom<ConfigV6> for Config {
    type Error = WireError;

    fn try_from(w: ConfigV6) -> Result<Config, WireError> {
        let mut c = Config::try_from(w.v5)?;
        for (name, class) in w.logins {
            let class = match class {
                0 => LoginClass::ReadOnly,
                1 => LoginClass::Operator,
                2 => LoginClass::SuperUser,
                other => return Err(WireError(format!("unknown login class {other}"))),
            };
            c.system.logins.insert(name, Login { class });
        }
        Ok(c)
    }
}

/// Schema version 5: version 4, the watchdog's timeout and the stopping grace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigV5 {
    pub v4: ConfigV4,
    pub watchdog_timeout_ms: u64,
    pub stop_grace_ms: u64,
}

impl From<&Config> for ConfigV5 {
    fn from(c: &Config) -> ConfigV5 {
        ConfigV5 {
            v4: c.into(),
            watchdog_timeout_ms: ms(c.system.watchdog_timeout),
            stop_grace_ms: ms(c.system.stop_grace),
        }
    }
}

impl TryFrom<ConfigV5> for Config {
    type Error = WireError;

    fn try_from(w: ConfigV5) -> Result<Config, WireError> {
        let mut c = Config::try_from(w.v4)?;
        c.system.watchdog_timeout = dur(w.watchdog_timeout_ms);
        c.system.stop_grace = dur(w.stop_grace_ms);
        Ok(c)
    }
}

/// Schema version 4: version 3, the console's idle timeout and our client certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigV4 {
    pub v3: ConfigV3,
    pub console_idle_timeout_ms: u64,
    pub client_certificate: Option<String>,
}

impl From<&Config> for ConfigV4 {
    fn from(c: &Config) -> ConfigV4 {
        ConfigV4 {
            v3: c.into(),
            console_idle_timeout_ms: ms(c.system.console_idle_timeout),
            client_certificate: c.tls.client_certificate.clone(),
        }
    }
}

impl TryFrom<ConfigV4> for Config {
    type Error = WireError;

    fn try_from(w: ConfigV4) -> Result<Config, WireError> {
        let mut c = Config::try_from(w.v3)?;
        c.system.console_idle_timeout = dur(w.console_idle_timeout_ms);
        c.tls.client_certificate = w.client_certificate;
        Ok(c)
    }
}

/// Schema version 3: version 2 and the PROXY protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigV3 {
    pub v2: ConfigV2,
    pub inbound_proxy: ProxyV3,
    pub outbound_proxy: ProxyV3,
}

/// A service's PROXY protocol settings, new in version 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyV3 {
    pub enabled: bool,
    /// The load balancers' networks.
    pub from: Vec<CidrV1>,
}

impl From<&Service> for ProxyV3 {
    fn from(s: &Service) -> ProxyV3 {
        ProxyV3 {
            enabled: s.proxy_protocol,
            from: s
                .proxy_from
                .iter()
                .map(|n| CidrV1 {
                    addr: n.addr(),
                    prefix: n.prefix(),
                })
                .collect(),
        }
    }
}

impl ProxyV3 {
    fn apply(&self, s: &mut Service) -> Result<(), WireError> {
        if self.from.len() > super::schema::MAX_PROXY_NETWORKS {
            return Err(bad("too many proxy-from networks"));
        }
        s.proxy_protocol = self.enabled;
        s.proxy_from = self.from.iter().map(cidr).collect::<Result<_, _>>()?;
        Ok(())
    }
}

impl From<&Config> for ConfigV3 {
    fn from(c: &Config) -> ConfigV3 {
        ConfigV3 {
            v2: c.into(),
            inbound_proxy: (&c.inbound).into(),
            outbound_proxy: (&c.outbound).into(),
        }
    }
}

impl TryFrom<ConfigV3> for Config {
    type Error = WireError;

    fn try_from(w: ConfigV3) -> Result<Config, WireError> {
        let mut c = Config::try_from(w.v2)?;
        w.inbound_proxy.apply(&mut c.inbound)?;
        w.outbound_proxy.apply(&mut c.outbound)?;
        Ok(c)
    }
}

/// Schema version 2: version 1 and the postmaster address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigV2 {
    pub v1: ConfigV1,
    pub postmaster: Option<String>,
    pub inbound_certificate: Option<String>,
    pub outbound_certificate: Option<String>,
    pub inbound_auth: Option<bool>,
    pub outbound_auth: Option<bool>,
    /// Address, network and user limits, block time (ms), table size.
    pub auth_throttle: (u32, u32, u32, u64, u32),
    pub inbound_limits: ServiceLimitsV2,
    pub outbound_limits: ServiceLimitsV2,
    pub client_names: bool,
    pub gateway: Option<std::net::IpAddr>,
    /// Interfaces by name, each with its addresses and their prefix lengths.
    pub interfaces: Vec<(String, Vec<(std::net::IpAddr, u8)>)>,
    pub syslog_hosts: Vec<SocketAddr>,
    /// What version 2 adds to each route, in the order of `v1.routes`.
    pub routes: Vec<RouteV2>,
}

/// What version 2 adds to a route. Version 1's relay and smarthost lists hold addresses
/// only, so a list with a host name travels here whole, as its canonical text, and is
/// parsed again on the way in; version 1 then holds the list's address literals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteV2 {
    pub hosts: Option<String>,
    pub auth_user: Option<String>,
    pub danger_auth_cleartext: bool,
}

/// A service's slow-client limits, new in version 2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLimitsV2 {
    pub command_deadline_ms: u64,
    pub data_deadline_ms: u64,
    pub min_data_rate: u32,
    pub stress_threshold: u32,
    pub stress_timeout_ms: u64,
}

impl From<&Service> for ServiceLimitsV2 {
    fn from(s: &Service) -> ServiceLimitsV2 {
        ServiceLimitsV2 {
            command_deadline_ms: ms(s.command_deadline),
            data_deadline_ms: ms(s.data_deadline),
            min_data_rate: s.min_data_rate,
            stress_threshold: s.stress_threshold,
            stress_timeout_ms: ms(s.stress_timeout),
        }
    }
}

impl ServiceLimitsV2 {
    fn apply(&self, s: &mut Service) {
        s.command_deadline = dur(self.command_deadline_ms);
        s.data_deadline = dur(self.data_deadline_ms);
        s.min_data_rate = self.min_data_rate;
        s.stress_threshold = self.stress_threshold;
        s.stress_timeout = dur(self.stress_timeout_ms);
    }
}

impl From<&Config> for ConfigV2 {
    fn from(c: &Config) -> ConfigV2 {
        ConfigV2 {
            v1: c.into(),
            postmaster: c.system.postmaster.as_ref().map(ToString::to_string),
            inbound_certificate: c.inbound.certificate.clone(),
            outbound_certificate: c.outbound.certificate.clone(),
            inbound_auth: c.inbound.auth,
            outbound_auth: c.outbound.auth,
            auth_throttle: {
                let t = &c.system.auth_throttle;
                (
                    t.address_limit,
                    t.network_limit,
                    t.user_limit,
                    ms(t.block_time),
                    t.table_size,
                )
            },
            inbound_limits: (&c.inbound).into(),
            outbound_limits: (&c.outbound).into(),
            client_names: c.system.client_names,
            gateway: c.system.gateway,
            interfaces: c
                .interfaces
                .iter()
                .map(|(name, i)| {
                    let addresses = i.addresses.iter().map(|a| (a.addr, a.prefix)).collect();
                    (name.clone(), addresses)
                })
                .collect(),
            syslog_hosts: c.system.syslog_hosts.clone(),
            routes: c
                .routes
                .values()
                .map(|r| RouteV2 {
                    hosts: r
                        .hosts()
                        .iter()
                        .any(|h| matches!(h, RelayHost::Name { .. }))
                        .then(|| value::format_hosts(r.hosts())),
                    auth_user: r.auth_user.clone(),
                    danger_auth_cleartext: r.danger_auth_cleartext,
                })
                .collect(),
        }
    }
}

impl TryFrom<ConfigV2> for Config {
    type Error = WireError;

    fn try_from(w: ConfigV2) -> Result<Config, WireError> {
        let mut c = Config::try_from(w.v1)?;
        c.system.postmaster = w
            .postmaster
            .map(|p| {
                crate::proto::smtp::address::Mailbox::parse(&p, true)
                    .map_err(|_| bad(format!("bad postmaster {p}")))
            })
            .transpose()?;
        c.inbound.certificate = w.inbound_certificate;
        c.outbound.certificate = w.outbound_certificate;
        c.inbound.auth = w.inbound_auth;
        c.outbound.auth = w.outbound_auth;
        let (address_limit, network_limit, user_limit, block_ms, table_size) = w.auth_throttle;
        c.system.auth_throttle = super::AuthThrottle {
            address_limit,
            network_limit,
            user_limit,
            block_time: dur(block_ms),
            table_size,
        };
        w.inbound_limits.apply(&mut c.inbound);
        w.outbound_limits.apply(&mut c.outbound);
        c.system.client_names = w.client_names;
        c.system.gateway = w.gateway;
        if w.interfaces.len() > super::schema::MAX_INTERFACES {
            return Err(bad("too many interfaces"));
        }
        for (name, addresses) in w.interfaces {
            if addresses.len() > super::schema::MAX_INTERFACE_ADDRESSES {
                return Err(bad(format!("too many addresses on interface {name}")));
            }
            let name = value::interface_name(&name).map_err(bad)?;
            let mut interface = super::Interface::default();
            for (addr, prefix) in addresses {
                let text = format!("{addr}/{prefix}");
                interface
                    .addresses
                    .push(value::interface_address(&text).map_err(bad)?);
            }
            c.interfaces.insert(name, interface);
        }
        if w.syslog_hosts.len() > super::schema::MAX_SYSLOG_HOSTS {
            return Err(bad("too many syslog hosts"));
        }
        c.system.syslog_hosts = w.syslog_hosts;
        if w.routes.len() != c.routes.len() {
            return Err(bad("route additions do not match the routes"));
        }
        // Both in the routes' order: `v1.routes` was written from the same map.
        for (route, added) in c.routes.values_mut().zip(w.routes) {
            if let Some(text) = added.hosts {
                let hosts = value::hosts(&text).map_err(bad)?;
                route.next_hop = match route.next_hop {
                    Some(NextHop::Relay(_)) => Some(NextHop::Relay(hosts)),
                    Some(NextHop::Smarthost(_)) => Some(NextHop::Smarthost(hosts)),
                    _ => return Err(bad("host names on a route without hosts")),
                };
            }
            route.auth_user = added
                .auth_user
                .map(|u| value::auth_user(&u).map_err(bad))
                .transpose()?;
            route.danger_auth_cleartext = added.danger_auth_cleartext;
        }
        Ok(c)
    }
}

/// Decodes the payload's configuration as the record's `version` wrote it.
pub fn decode_config(
    version: u16,
    bytes: &[u8],
) -> Result<(super::slot::CommitMeta, Config), WireError> {
    let postcard = |e: postcard::Error| WireError(e.to_string());
    let (meta, config) = match version {
        1 => {
            let (meta, w): (super::slot::CommitMeta, ConfigV1) =
                postcard::from_bytes(bytes).map_err(postcard)?;
            (meta, Config::try_from(w)?)
        }
        2 => {
            let (meta, w): (super::slot::CommitMeta, ConfigV2) =
                postcard::from_bytes(bytes).map_err(postcard)?;
            (meta, Config::try_from(w)?)
        }
        3 => {
            let (meta, w): (super::slot::CommitMeta, ConfigV3) =
                postcard::from_bytes(bytes).map_err(postcard)?;
            (meta, Config::try_from(w)?)
        }
        4 => {
            let (meta, w): (super::slot::CommitMeta, ConfigV4) =
                postcard::from_bytes(bytes).map_err(postcard)?;
            (meta, Config::try_from(w)?)
        }
        5 => {
            let (meta, w): (super::slot::CommitMeta, ConfigV5) =
                postcard::from_bytes(bytes).map_err(postcard)?;
            (meta, Config::try_from(w)?)
        }
        6 => {
            let (meta, w): (super::slot::CommitMeta, ConfigV6) =
                postcard::from_bytes(bytes).map_err(postcard)?;
            (meta, Config::try_from(w)?)
        }
        7 => {
            let (meta, w): (super::slot::CommitMeta, ConfigV7) =
                postcard::from_bytes(bytes).map_err(postcard)?;
            (meta, Config::try_from(w)?)
        }
        v => return Err(WireError(format!("unknown schema version {v}"))),
    };
    within_schema(&config)?;
    Ok((meta, config))
}

/// A stored configuration holds only what the schema allows, bounds included: it is
/// checked as its `set` lines would be, by the one schema, so a value out of bounds (a
/// record from a firmware with looser bounds, or one damaged under a good HMAC) is
/// refused with the statement that is wrong instead of run.
fn within_schema(config: &Config) -> Result<(), WireError> {
    let printed = super::text::print(config);
    match super::text::parse(&printed) {
        Ok(back) if back == *config => Ok(()),
        Ok(_) => Err(WireError(
            "the stored configuration is not what its own statements say".to_string(),
        )),
        Err(e) => Err(WireError(format!("stored statement refused: {e}"))),
    }
}

/// Encodes `meta` and `config` as the current schema version.
pub fn encode_config(
    meta: &super::slot::CommitMeta,
    config: &Config,
) -> Result<Vec<u8>, WireError> {
    postcard::to_allocvec(&(meta, ConfigV7::from(config))).map_err(|e| WireError(e.to_string()))
}

/// Why a stored configuration cannot be turned back into a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stored configuration: {}", self.0)
    }
}

/// Schema version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigV1 {
    pub host_name: String,
    pub dns_resolvers: Vec<SocketAddr>,
    pub dns_timeout_ms: u64,
    /// The token: `true` for PKCS#11, its module, label and PIN file.
    pub token_pkcs11: bool,
    pub token_module: Option<String>,
    pub token_label: Option<String>,
    pub token_pin_file: Option<String>,
    pub inbound: ServiceV1,
    pub outbound: ServiceV1,
    pub classify: Vec<(u32, ClassifyV1)>,
    pub routes: Vec<(PatternV1, RouteV1)>,
    pub retry_ms: Vec<u64>,
    pub max_lifetime_ms: u64,
    pub delay_notice_ms: u64,
    pub tls12: bool,
    pub tls13: bool,
    pub cipher_suites: Vec<String>,
    pub client_ca_file: Option<String>,
    pub server_ca_file: Option<String>,
    /// Channel name and keywords in canonical text.
    pub channels: Vec<(String, String)>,
    /// Category name, ruleset, channel.
    pub categories: Vec<(String, Option<String>, Option<String>)>,
    /// Ruleset name, offered mechanisms, mechanisms restricted to TLS (by name).
    pub rulesets: Vec<(String, Vec<String>, Vec<String>)>,
    pub relay_rules: Vec<(u32, RelayRuleV1)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceV1 {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub channel: Option<String>,
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub idle_timeout_ms: u64,
    pub data_timeout_ms: u64,
    pub max_session_time_ms: u64,
    pub max_messages_per_session: u32,
    pub max_message_size: u64,
    pub max_recipients: u32,
    pub max_line_length: u32,
    pub error_limit: u32,
    pub greet_delay_ms: u64,
    /// EHLO keywords by name.
    pub ehlo_keywords: Vec<String>,
    pub verify_enabled: bool,
    pub verify_positive_ttl_ms: u64,
    pub verify_negative_ttl_ms: u64,
    pub verify_accept_when_unreachable: bool,
    pub allow_filters: Vec<String>,
    pub deny_filters: Vec<String>,
    pub compact_filters: Vec<String>,
    pub auth_mechanisms: Option<Vec<String>>,
    pub disabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CidrV1 {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassifyActionV1 {
    Category(String),
    Deny(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifyV1 {
    pub local: Option<CidrV1>,
    pub local_port: Option<u16>,
    pub remote: Option<CidrV1>,
    pub remote_port: Option<u16>,
    pub action: Option<ClassifyActionV1>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatternV1 {
    Exact(String),
    Suffix(String),
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextHopV1 {
    Relay(Vec<SocketAddr>),
    Smarthost(Vec<SocketAddr>),
    Mx,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteV1 {
    pub next_hop: Option<NextHopV1>,
    pub failover_timeout_ms: u64,
    pub avoid_time_ms: u64,
    pub concurrency: u32,
    pub mx_port: u16,
    pub channel: Option<String>,
    pub danger_tls_no_verify: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayActionV1 {
    Allow,
    Deny(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRuleV1 {
    pub source: Option<String>,
    pub from: Option<String>,
    pub destination: Option<String>,
    pub to: Option<String>,
    pub action: Option<RelayActionV1>,
}

// ---- model to wire -------------------------------------------------------------------

/// The address literals of a relay list: all that version 1 can hold (version 2 keeps
/// the whole list when it has names).
fn addresses(hosts: &[RelayHost]) -> Vec<SocketAddr> {
    hosts
        .iter()
        .filter_map(|h| match h {
            RelayHost::Address(a) => Some(*a),
            RelayHost::Name { .. } => None,
        })
        .collect()
}

/// A version 1 relay list: address literals only.
fn literals(hosts: Vec<SocketAddr>) -> Vec<RelayHost> {
    hosts.into_iter().map(RelayHost::Address).collect()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn mechanism_names(set: MechanismSet) -> Vec<String> {
    set.iter().map(|m| m.as_str().to_string()).collect()
}

fn cidr_v1(c: &Cidr) -> CidrV1 {
    CidrV1 {
        addr: c.addr(),
        prefix: c.prefix(),
    }
}

impl From<&Service> for ServiceV1 {
    fn from(s: &Service) -> ServiceV1 {
        ServiceV1 {
            listen: s.listen.clone(),
            tls_listen: s.tls_listen.clone(),
            channel: s.channel.clone(),
            max_connections: s.max_connections,
            max_connections_per_ip: s.max_connections_per_ip,
            idle_timeout_ms: ms(s.idle_timeout),
            data_timeout_ms: ms(s.data_timeout),
            max_session_time_ms: ms(s.max_session_time),
            max_messages_per_session: s.max_messages_per_session,
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_line_length: s.max_line_length,
            error_limit: s.error_limit,
            greet_delay_ms: ms(s.greet_delay),
            ehlo_keywords: s.ehlo_keywords.names().map(str::to_string).collect(),
            verify_enabled: s.verify.enabled,
            verify_positive_ttl_ms: ms(s.verify.positive_ttl),
            verify_negative_ttl_ms: ms(s.verify.negative_ttl),
            verify_accept_when_unreachable: s.verify.accept_when_unreachable,
            allow_filters: s.allow_filters.iter().map(|r| r.text().into()).collect(),
            deny_filters: s.deny_filters.iter().map(|r| r.text().into()).collect(),
            compact_filters: s.compact_filters.iter().map(|f| f.text().into()).collect(),
            auth_mechanisms: s.auth_mechanisms.map(mechanism_names),
            disabled: s.disabled,
        }
    }
}

impl From<&Config> for ConfigV1 {
    fn from(c: &Config) -> ConfigV1 {
        ConfigV1 {
            host_name: c.system.host_name.clone(),
            dns_resolvers: c.system.dns_resolvers.clone(),
            dns_timeout_ms: ms(c.system.dns_timeout),
            token_pkcs11: c.system.token.backend == TokenBackend::Pkcs11,
            token_module: c.system.token.module.clone(),
            token_label: c.system.token.label.clone(),
            token_pin_file: c.system.token.pin_file.clone(),
            inbound: (&c.inbound).into(),
            outbound: (&c.outbound).into(),
            classify: c
                .classify
                .iter()
                .map(|(n, r)| {
                    let rule = ClassifyV1 {
                        local: r.local.as_ref().map(cidr_v1),
                        local_port: r.local_port,
                        remote: r.remote.as_ref().map(cidr_v1),
                        remote_port: r.remote_port,
                        action: r.action.as_ref().map(|a| match a {
                            ClassifyAction::Category(c) => ClassifyActionV1::Category(c.clone()),
                            ClassifyAction::Deny(t) => ClassifyActionV1::Deny(t.clone()),
                        }),
                    };
                    (*n, rule)
                })
                .collect(),
            routes: c
                .routes
                .iter()
                .map(|(p, r)| {
                    let pattern = match p {
                        DomainPattern::Exact(d) => PatternV1::Exact(d.clone()),
                        DomainPattern::Suffix(d) => PatternV1::Suffix(d.clone()),
                        DomainPattern::Any => PatternV1::Any,
                    };
                    let route = RouteV1 {
                        next_hop: r.next_hop.as_ref().map(|h| match h {
                            NextHop::Relay(h) => NextHopV1::Relay(addresses(h)),
                            NextHop::Smarthost(h) => NextHopV1::Smarthost(addresses(h)),
                            NextHop::Mx => NextHopV1::Mx,
                        }),
                        failover_timeout_ms: ms(r.failover_timeout),
                        avoid_time_ms: ms(r.avoid_time),
                        concurrency: r.concurrency,
                        mx_port: r.mx_port,
                        channel: r.channel.clone(),
                        danger_tls_no_verify: r.danger_tls_no_verify,
                    };
                    (pattern, route)
                })
                .collect(),
            retry_ms: c.queue.retry.iter().map(|d| ms(*d)).collect(),
            max_lifetime_ms: ms(c.queue.max_lifetime),
            delay_notice_ms: ms(c.queue.delay_notice),
            tls12: c.tls.tls12,
            tls13: c.tls.tls13,
            cipher_suites: c.tls.cipher_suites.clone(),
            client_ca_file: c.tls.client_ca_file.clone(),
            server_ca_file: c.tls.server_ca_file.clone(),
            channels: c
                .channels
                .iter()
                .map(|(n, ch)| (n.clone(), value::format_channel_keywords(&ch.keywords)))
                .collect(),
            categories: c
                .categories
                .iter()
                .map(|(n, cat)| (n.clone(), cat.ruleset.clone(), cat.channel.clone()))
                .collect(),
            rulesets: c
                .rulesets
                .iter()
                .map(|(n, r)| {
                    (
                        n.clone(),
                        mechanism_names(r.mechanisms),
                        mechanism_names(r.needs_tls),
                    )
                })
                .collect(),
            relay_rules: c
                .relay_rules
                .iter()
                .map(|(n, r)| {
                    let rule = RelayRuleV1 {
                        source: r.source.clone(),
                        from: r.from.as_ref().map(|p| p.as_str().to_string()),
                        destination: r.destination.clone(),
                        to: r.to.as_ref().map(|p| p.as_str().to_string()),
                        action: r.action.as_ref().map(|a| match a {
                            RelayAction::Allow => RelayActionV1::Allow,
                            RelayAction::Deny(t) => RelayActionV1::Deny(t.clone()),
                        }),
                    };
                    (*n, rule)
                })
                .collect(),
        }
    }
}

// ---- wire to model -------------------------------------------------------------------

fn dur(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn bad(what: impl std::fmt::Display) -> WireError {
    WireError(what.to_string())
}

fn mechanisms(names: &[String]) -> Result<MechanismSet, WireError> {
    names.iter().try_fold(MechanismSet::EMPTY, |set, n| {
        MechanismName::parse(n.as_bytes())
            .map(|m| set.with(m))
            .ok_or_else(|| bad(format!("unknown SASL mechanism {n}")))
    })
}

fn cidr(c: &CidrV1) -> Result<Cidr, WireError> {
    Cidr::new(c.addr, c.prefix).ok_or_else(|| bad(format!("bad network {}/{}", c.addr, c.prefix)))
}

fn service(s: ServiceV1) -> Result<Service, WireError> {
    let ehlo = s
        .ehlo_keywords
        .iter()
        .try_fold(EhloKeywords::NONE, |set, n| {
            EhloKeywords::from_name(n)
                .map(|k| set.with(k))
                .ok_or_else(|| bad(format!("unknown EHLO keyword {n}")))
        })?;
    let parsed = |texts: &[String], parse: fn(&str) -> Result<super::AccessRule, _>| {
        texts
            .iter()
            .map(|t| parse(t).map_err(|e| bad(format!("filter {t:?}: {e:?}"))))
            .collect::<Result<Vec<_>, WireError>>()
    };
    Ok(Service {
        listen: s.listen,
        tls_listen: s.tls_listen,
        channel: s.channel,
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        idle_timeout: dur(s.idle_timeout_ms),
        data_timeout: dur(s.data_timeout_ms),
        max_session_time: dur(s.max_session_time_ms),
        max_messages_per_session: s.max_messages_per_session,
        max_message_size: s.max_message_size,
        max_recipients: s.max_recipients,
        max_line_length: s.max_line_length,
        error_limit: s.error_limit,
        greet_delay: dur(s.greet_delay_ms),
        ehlo_keywords: ehlo,
        verify: Verify {
            enabled: s.verify_enabled,
            positive_ttl: dur(s.verify_positive_ttl_ms),
            negative_ttl: dur(s.verify_negative_ttl_ms),
            accept_when_unreachable: s.verify_accept_when_unreachable,
        },
        allow_filters: parsed(&s.allow_filters, super::AccessRule::parse)?,
        deny_filters: parsed(&s.deny_filters, super::AccessRule::parse)?,
        compact_filters: s
            .compact_filters
            .iter()
            .map(|t| {
                super::CompactFilter::parse(t).map_err(|e| bad(format!("filter {t:?}: {e:?}")))
            })
            .collect::<Result<_, _>>()?,
        auth_mechanisms: s.auth_mechanisms.as_deref().map(mechanisms).transpose()?,
        disabled: s.disabled,
        certificate: None,
        auth: None,
        ..Service::default()
    })
}

fn pattern(text: Option<String>) -> Result<Option<super::AddressPattern>, WireError> {
    text.map(|t| value::address_pattern(&t).map_err(bad))
        .transpose()
        .map(Option::flatten)
}

impl TryFrom<ConfigV1> for Config {
    type Error = WireError;

    fn try_from(w: ConfigV1) -> Result<Config, WireError> {
        let mut c = Config {
            system: System {
                host_name: w.host_name,
                dns_resolvers: w.dns_resolvers,
                dns_timeout: dur(w.dns_timeout_ms),
                gateway: None,
                client_names: true,
                token: TokenSettings {
                    backend: if w.token_pkcs11 {
                        TokenBackend::Pkcs11
                    } else {
                        TokenBackend::Soft
                    },
                    module: w.token_module,
                    label: w.token_label,
                    pin_file: w.token_pin_file,
                },
                postmaster: None,
                auth_throttle: super::AuthThrottle::default(),
                syslog_hosts: Vec::new(),
                console_idle_timeout: super::DEFAULT_CONSOLE_IDLE_TIMEOUT,
                watchdog_timeout: super::DEFAULT_WATCHDOG_TIMEOUT,
                stop_grace: super::DEFAULT_STOP_GRACE,
                logins: BTreeMap::new(),
            },
            inbound: service(w.inbound)?,
            outbound: service(w.outbound)?,
            queue: QueueSettings {
                retry: w.retry_ms.into_iter().map(dur).collect(),
                max_lifetime: dur(w.max_lifetime_ms),
                delay_notice: dur(w.delay_notice_ms),
                active_limit: super::DEFAULT_ACTIVE_LIMIT,
            },
            tls: Tls {
                tls12: w.tls12,
                tls13: w.tls13,
                cipher_suites: w.cipher_suites,
                client_ca_file: w.client_ca_file,
                server_ca_file: w.server_ca_file,
                client_certificate: None,
            },
            ..Config::default()
        };
        for (n, r) in w.classify {
            let rule = ClassifyRule {
                local: r.local.as_ref().map(cidr).transpose()?,
                local_port: r.local_port,
                remote: r.remote.as_ref().map(cidr).transpose()?,
                remote_port: r.remote_port,
                action: r.action.map(|a| match a {
                    ClassifyActionV1::Category(c) => ClassifyAction::Category(c),
                    ClassifyActionV1::Deny(t) => ClassifyAction::Deny(t),
                }),
            };
            c.classify.insert(n, rule);
        }
        for (p, r) in w.routes {
            let pattern = match p {
                PatternV1::Exact(d) => DomainPattern::Exact(d),
                PatternV1::Suffix(d) => DomainPattern::Suffix(d),
                PatternV1::Any => DomainPattern::Any,
            };
            let route = Route {
                next_hop: r.next_hop.map(|h| match h {
                    NextHopV1::Relay(h) => NextHop::Relay(literals(h)),
                    NextHopV1::Smarthost(h) => NextHop::Smarthost(literals(h)),
                    NextHopV1::Mx => NextHop::Mx,
                }),
                failover_timeout: dur(r.failover_timeout_ms),
                avoid_time: dur(r.avoid_time_ms),
                concurrency: r.concurrency,
                mx_port: r.mx_port,
                channel: r.channel,
                danger_tls_no_verify: r.danger_tls_no_verify,
                ..Route::default()
            };
            c.routes.insert(pattern, route);
        }
        for (name, words) in w.channels {
            let keywords = value::channel_keywords(&words).map_err(bad)?;
            c.channels.insert(name, Channel { keywords });
        }
        for (name, ruleset, channel) in w.categories {
            c.categories.insert(name, Category { ruleset, channel });
        }
        for (name, offered, restricted) in w.rulesets {
            let r = Ruleset {
                mechanisms: mechanisms(&offered)?,
                needs_tls: mechanisms(&restricted)?,
            };
            c.rulesets.insert(name, r);
        }
        for (n, r) in w.relay_rules {
            let rule = RelayRule {
                source: r.source,
                from: pattern(r.from)?,
                destination: r.destination,
                to: pattern(r.to)?,
                action: r.action.map(|a| match a {
                    RelayActionV1::Allow => RelayAction::Allow,
                    RelayActionV1::Deny(t) => RelayAction::Deny(t),
                }),
            };
            c.relay_rules.insert(n, rule);
        }
        Ok(c)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::config::host_default;
    use crate::proto::config::text::parse;

    /// A configuration that sets something in every part of the model.
    pub(crate) const EVERYTHING: &str = "\
set system host-name mx1.example.org
set system dns resolver 10.1.1.53
set system dns resolver [::1]:5353
set system dns timeout 3s
set system token backend pkcs11
set system token module /usr/lib/softhsm/libsofthsm2.so
set system token label gateway
set system token pin-file /etc/drawbridge/pins
set service inbound listen 0.0.0.0:25
set service inbound tls-listen 0.0.0.0:465
set service inbound auth-mechanisms \"PLAIN SCRAM-SHA-256\"
set service inbound allow-filter \"smtp: 10.0.0.0/255.0.0.0 EXCEPT 10.9.\"
set service inbound deny-filter \"smtp: ALL\"
set service inbound access-filter \"+smtp:LOCAL$-smtp:ALL\"
set service inbound channel tcp_local
set service inbound max-connections 300
set service inbound idle-timeout 2m
set service inbound max-message-size 10m
set service inbound ehlo-keywords \"PIPELINING SIZE STARTTLS\"
set service inbound verify-recipients yes
set service inbound verify-unreachable accept
set service outbound disable
set classify 10 remote 10.0.0.0/8 category INTERNAL
set classify 20 local 192.0.2.1/32 local-port 7633 remote-port 1024 deny \"no web interface here\"
set route example.org relay [10.1.1.5]:25,[10.1.1.6]:2525
set route example.org failover-timeout 5s
set route .example.org smarthost [192.0.2.7]:587
set route * mx
set route * mx-port 2525
set route * channel tcp_out
set route * danger-tls-no-verify yes
set queue retry \"1m 10m 1h\"
set queue max-lifetime 3d
set queue delay-notice 4h
set tls versions 1.3
set tls cipher-suites \"TLS13_AES_256_GCM_SHA384\"
set tls client-ca-file /etc/drawbridge/clients.pem
set channel tcp_out keywords \"musttlsclient\"
set category INTERNAL ruleset INSIDE
set category INTERNAL channel tcp_intranet
set ruleset INSIDE mechanisms \"PLAIN LOGIN\"
set ruleset INSIDE restrict PLAIN tls
set relay-rule 5 source tcp_local from *@example.org destination tcp_out to *@partner.example allow
set relay-rule 10 source tcp_local destination tcp_local deny \"5.7.1 SMTP relaying not permitted\"
";

    fn round_trip(config: &Config) -> Config {
        let wire = ConfigV7::from(config);
        let bytes = postcard::to_allocvec(&wire).unwrap();
        let back: ConfigV7 = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, wire);
        Config::try_from(back).unwrap()
    }

    /// What schema version 2 added, set to values other than the factory ones: with
    /// [`EVERYTHING`], the configuration of the committed version-2 fixture.
    pub(crate) const VERSION_TWO_SETTINGS: &str = "\
set system postmaster hostmaster@example.org
set service inbound certificate mail-2026
set service inbound auth yes
set service outbound auth no
set system auth-throttle user-limit 3
set service outbound min-data-rate 20
set system dns client-names no
set system gateway 10.0.2.2
set interface eth0 address 10.0.2.15/24
set interface eth0 address fd00::15/64
set interface eth1
set system syslog host 192.0.2.9
set system syslog host [2001:db8::9]:5514
set route .example.org smarthost smtp.provider.example:587,[192.0.2.7]:587
set route .example.org auth user relay@example.org
set route * auth danger-cleartext yes
set route example.org relay relay.example.org
";

    /// What schema version 3 added.
    pub(crate) const VERSION_THREE_SETTINGS: &str = "\
set service inbound proxy-protocol yes
set service inbound proxy-from 10.1.0.0/16
set service inbound proxy-from 2001:db8:1::/48
set service outbound proxy-from 192.0.2.9
";

    /// What schema version 4 added.
    pub(crate) const VERSION_FOUR_SETTINGS: &str = "\
set system console idle-timeout 30m
set tls client-certificate relay-2026
";

    /// What schema version 5 added: with the earlier ones, the version-5 fixture.
    pub(crate) const VERSION_FIVE_SETTINGS: &str = "\
set system watchdog timeout 5m
set system stop-grace 20s
";

    /// What schema version 6 added: with the earlier ones, the version-6 fixture.
    pub(crate) const VERSION_SIX_SETTINGS: &str = "\
set system login user ops class operator
set system login user audit class read-only
";

    #[test]
    fn every_part_of_the_model_survives_the_wire() {
        let mut with_postmaster = parse(EVERYTHING).unwrap();
        crate::proto::config::text::parse_into(&mut with_postmaster, VERSION_TWO_SETTINGS).unwrap();
        let mut with_proxy = with_postmaster.clone();
        crate::proto::config::text::parse_into(&mut with_proxy, VERSION_THREE_SETTINGS).unwrap();
        let mut with_console = with_proxy.clone();
        crate::proto::config::text::parse_into(&mut with_console, VERSION_FOUR_SETTINGS).unwrap();
        let mut never_idle = with_proxy.clone();
        crate::proto::config::text::parse_into(
            &mut never_idle,
            "set system console idle-timeout 0s",
        )
        .unwrap();
        let mut with_watchdog = with_console.clone();
        crate::proto::config::text::parse_into(
            &mut with_watchdog,
            "set system watchdog timeout 5m",
        )
        .unwrap();
        let mut no_watchdog = with_console.clone();
        crate::proto::config::text::parse_into(
            &mut no_watchdog,
            "set system watchdog timeout 0s\nset system stop-grace 0s",
        )
        .unwrap();
        let mut with_logins = with_watchdog.clone();
        crate::proto::config::text::parse_into(
            &mut with_logins,
            "set system login user helpdesk class read-only\n\
             set system login user \"night shift\" class operator\n\
             set system login user admin class super-user",
        )
        .unwrap();
        assert_eq!(with_logins.system.logins.len(), 3);
        let mut small_active = with_logins.clone();
        crate::proto::config::text::parse_into(&mut small_active, "set queue active-limit 20")
            .unwrap();
        assert_eq!(small_active.queue.active_limit, 20);
        for config in [
            Config::default(),
            host_default(),
            parse(EVERYTHING).unwrap(),
            with_postmaster,
            with_proxy,
            with_console,
            never_idle,
            with_watchdog,
            no_watchdog,
            with_logins,
            small_active,
        ] {
            assert_eq!(round_trip(&config), config);
        }
        let mut wire = ConfigV6::from(&host_default());
        wire.logins.push(("eve".into(), 3));
        assert!(Config::try_from(wire).is_err());
    }

    #[test]
    fn values_are_checked_on_the_way_in() {
        let mut wire = ConfigV1::from(&parse(EVERYTHING).unwrap());
        wire.inbound.allow_filters[0] = "smtp: ".into();
        assert!(Config::try_from(wire.clone()).is_err());
        let mut wire = ConfigV1::from(&parse(EVERYTHING).unwrap());
        wire.rulesets[0].1.push("NTLM".into());
        assert!(Config::try_from(wire).unwrap_err().0.contains("NTLM"));
        let mut wire = ConfigV1::from(&parse(EVERYTHING).unwrap());
        wire.classify[0].1.remote = Some(CidrV1 {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 40,
        });
        assert!(Config::try_from(wire).is_err());
        let mut config = parse(EVERYTHING).unwrap();
        crate::proto::config::text::parse_into(&mut config, VERSION_THREE_SETTINGS).unwrap();
        let mut wire = ConfigV3::from(&config);
        wire.inbound_proxy.from[0].prefix = 33;
        assert!(
            Config::try_from(wire)
                .unwrap_err()
                .0
                .contains("bad network")
        );
        let mut wire = ConfigV3::from(&config);
        let network = wire.inbound_proxy.from[0].clone();
        wire.inbound_proxy.from =
            vec![network; crate::proto::config::schema::MAX_PROXY_NETWORKS + 1];
        assert!(Config::try_from(wire).unwrap_err().0.contains("too many"));
    }

    /// Found by the slot fuzz target: a retry step of 0 s decoded, though no `set` line
    /// can say it. A stored value is held to the schema's bounds as a typed one is.
    #[test]
    fn stored_values_are_held_to_the_schemas_bounds() {
        let meta = crate::proto::config::slot::CommitMeta::default();
        let mut config = parse(EVERYTHING).unwrap();
        config.queue.retry[0] = std::time::Duration::ZERO;
        let bytes = encode_config(&meta, &config).unwrap();
        let error = decode_config(SCHEMA_VERSION, &bytes).unwrap_err();
        assert!(error.0.contains("too short for a retry step"), "{error}");
        let good = parse(EVERYTHING).unwrap();
        let bytes = encode_config(&meta, &good).unwrap();
        assert_eq!(decode_config(SCHEMA_VERSION, &bytes).unwrap().1, good);
    }
}
