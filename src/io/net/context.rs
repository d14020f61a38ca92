//! What the server side of the async layer is given by the wiring: the [`Running`]
//! snapshot of one committed configuration, and the [`Context`] every listener and
//! session shares (the executor, the queue it hands messages to, the user database, the
//! authentication throttle).
//!
//! A session takes the snapshot current when it starts and keeps it to its end; the
//! wiring replaces it on a commit ([`Context::replace`]). Nothing here knows of the
//! configuration engine, the console or the listeners' bookkeeping: `net` is given this
//! and nothing of the gateway above it.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use smol::LocalExecutor;
use smol::channel::{Receiver, Sender, bounded};

use crate::io::clock::unix_now;
use crate::io::queue::{GroupCommit, Journal, Spool};
use crate::io::relay::Scheduler;
use crate::io::relay::callout::{Unreachable, Verifier, VerifyOptions};
use crate::io::resolver::Resolver;
use crate::io::tls::setup::GatewayTls;
use crate::io::token::Token;
use crate::io::users::UserCache;
use crate::proto::config::{Config, ServiceName};
use crate::proto::dns::ResolverOptions;
use crate::proto::filter::Filter;
use crate::proto::smtp::server::ServerConfig;

use super::throttle::{Limits, Throttle};

/// What every listener and session shares.
pub struct Context {
    running: RefCell<Rc<Running>>,
    pub executor: Rc<LocalExecutor<'static>>,
    /// Where sessions hand their messages.
    pub queue: Queue,
    /// Authentication failures by client address, network and user.
    pub throttle: RefCell<Throttle>,
    /// The user database, as AUTH reads it.
    pub users: UserCache,
    /// Turns at running a password derivation on the blocking pool.
    pub derivations: smol::lock::Semaphore,
    /// Whether the gateway is stopping, and by when its sessions must end.
    pub shutdown: Shutdown,
}

/// The gateway stopping: once begun, every session ends its transaction in progress
/// and leaves with 421 ([`crate::proto::smtp::server::Session::shut_down`]), by the
/// deadline at the latest.
pub struct Shutdown {
    deadline: Cell<Option<Instant>>,
    /// Closed when the shutdown begins: every session waiting on it wakes.
    signal: (Sender<()>, Receiver<()>),
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown {
            deadline: Cell::new(None),
            signal: bounded(1),
        }
    }
}

impl Shutdown {
    /// Begins the shutdown: sessions must end by `deadline`. Only the first call counts.
    pub fn begin(&self, deadline: Instant) {
        if self.deadline.get().is_none() {
            self.deadline.set(Some(deadline));
            self.signal.0.close();
        }
    }

    /// By when sessions must end, once the shutdown has begun.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// A receiver whose `recv` returns (with an error) once the shutdown begins.
    pub fn begun(&self) -> Receiver<()> {
        self.signal.1.clone()
    }
}

/// The queue a session hands its messages to.
pub struct Queue {
    pub spool: Rc<Spool>,
    pub journal: Rc<RefCell<Journal>>,
    pub commit: Rc<GroupCommit>,
    pub scheduler: Rc<Scheduler>,
}

impl Context {
    pub fn new(
        running: Rc<Running>,
        executor: Rc<LocalExecutor<'static>>,
        queue: Queue,
        users: UserCache,
    ) -> Context {
        let limits = Limits::from(&running.config.system.auth_throttle);
        Context {
            running: RefCell::new(running),
            executor,
            queue,
            throttle: RefCell::new(Throttle::new(limits)),
            users,
            derivations: smol::lock::Semaphore::new(super::session::MAX_CONCURRENT_DERIVATIONS),
            shutdown: Shutdown::default(),
        }
    }

    /// The snapshot new sessions start with.
    pub fn running(&self) -> Rc<Running> {
        self.running.borrow().clone()
    }

    /// The running configuration.
    pub fn config(&self) -> Rc<Config> {
        self.running.borrow().config.clone()
    }

    /// A commit: new sessions and the authentication throttle get `running`; sessions
    /// already open keep the snapshot they started with.
    pub fn replace(&self, running: Rc<Running>) {
        self.throttle
            .borrow_mut()
            .set_limits(Limits::from(&running.config.system.auth_throttle));
        *self.running.borrow_mut() = running;
    }
}

/// Everything derived from one committed configuration.
pub struct Running {
    pub config: Rc<Config>,
    /// The commit it came from.
    pub commit: u64,
    server_configs: [Rc<ServerConfig>; 2],
    filters: [Option<Filter>; 2],
    verifiers: [Option<Verifier>; 2],
    our_addresses: Rc<[IpAddr]>,
    /// The DNS client, for MX routes and access-filter name lookups.
    pub resolver: Option<Rc<Resolver>>,
    /// TLS for the services and for delivery; `None` when it could not be set up.
    pub tls: Option<Rc<GatewayTls>>,
}

impl Running {
    pub fn server_config(&self, service: ServiceName) -> Rc<ServerConfig> {
        self.server_configs[service as usize].clone()
    }

    pub fn filter(&self, service: ServiceName) -> Option<&Filter> {
        self.filters[service as usize].as_ref()
    }

    pub fn verifier(&self, service: ServiceName) -> Option<&Verifier> {
        self.verifiers[service as usize].as_ref()
    }

    /// This host's addresses, as routing knows them (see [`super::local`]).
    pub fn our_addresses(&self) -> &[IpAddr] {
        &self.our_addresses
    }

    /// The same addresses, shared with the queue manager.
    pub fn shared_addresses(&self) -> Rc<[IpAddr]> {
        self.our_addresses.clone()
    }

    /// The snapshot of `config`, keeping what `previous` had where its settings did not
    /// change (the DNS cache, the callout caches).
    pub fn build(
        config: Rc<Config>,
        commit: u64,
        previous: Option<&Running>,
        token: &Arc<dyn Token>,
        state_dir: &Path,
    ) -> Running {
        let same_dns = previous.is_some_and(|p| p.config.system == config.system);
        let resolver = match previous {
            Some(p) if same_dns => p.resolver.clone(),
            _ => resolver(&config),
        };
        let verifier = |s: ServiceName| {
            let unchanged = previous.is_some_and(|p| {
                p.config.service(s).verify == config.service(s).verify
                    && p.config.system.host_name == config.system.host_name
            });
            match previous {
                Some(p) if unchanged => p.verifiers[s as usize].clone(),
                _ => verifier(&config, s),
            }
        };
        let tls = match GatewayTls::setup(&config, state_dir, token.clone(), unix_now() as i64) {
            Ok(tls) => {
                for service in ServiceName::ALL {
                    let (name, names) = tls.default_certificate(service);
                    log::info!(target: "tls", "{service} service serves certificate {name} ({}) without SNI and on STARTTLS", names.join(", "));
                }
                Some(Rc::new(tls))
            }
            Err(e) => {
                log::error!(target: "tls", "TLS is not available: {e}");
                previous.and_then(|p| p.tls.clone())
            }
        };
        Running {
            server_configs: server_configs(&config),
            filters: [
                filters(&config, ServiceName::Inbound),
                filters(&config, ServiceName::Outbound),
            ],
            verifiers: [
                verifier(ServiceName::Inbound),
                verifier(ServiceName::Outbound),
            ],
            our_addresses: super::local::our_addresses(&config).into(),
            resolver,
            tls,
            config,
            commit,
        }
    }
}

/// A service's access filters, as one filter (they were parsed when configured).
fn filters(config: &Config, service: ServiceName) -> Option<Filter> {
    let s = config.service(service);
    let mut filter = Filter {
        allow: Vec::new(),
        deny: Vec::new(),
    };
    filter
        .allow
        .extend(s.allow_filters.iter().map(|r| r.rule().clone()));
    filter
        .deny
        .extend(s.deny_filters.iter().map(|r| r.rule().clone()));
    for compact in &s.compact_filters {
        filter.allow.extend(compact.filter().allow.iter().cloned());
        filter.deny.extend(compact.filter().deny.iter().cloned());
    }
    (!filter.allow.is_empty() || !filter.deny.is_empty()).then_some(filter)
}

fn verifier(config: &Config, s: ServiceName) -> Option<Verifier> {
    let v = &config.service(s).verify;
    v.enabled.then(|| {
        Verifier::new(VerifyOptions {
            positive_ttl: v.positive_ttl,
            negative_ttl: v.negative_ttl,
            unreachable: if v.accept_when_unreachable {
                Unreachable::Accept
            } else {
                Unreachable::TempFail
            },
            helo_name: config.system.host_name.clone(),
            ..VerifyOptions::default()
        })
    })
}

/// Each service's session settings; each session then adds TLS and SASL as its
/// source channel and ruleset say.
fn server_configs(config: &Config) -> [Rc<ServerConfig>; 2] {
    let make = |s| {
        Rc::new(ServerConfig::from_service(
            &config.system.host_name,
            config.service(s),
        ))
    };
    [make(ServiceName::Inbound), make(ServiceName::Outbound)]
}

/// The DNS client: the configured resolvers, or on a host without any, the ones in
/// `/etc/resolv.conf`.
fn resolver(config: &Config) -> Option<Rc<Resolver>> {
    let mut servers = config.system.dns_resolvers.clone();
    if servers.is_empty() {
        servers = std::fs::read_to_string(RESOLV_CONF)
            .map(|text| resolv_conf_servers(&text))
            .unwrap_or_default();
        if !servers.is_empty() {
            log::info!(target: "main", "DNS: no resolvers configured, using those in {RESOLV_CONF}");
        }
    }
    if servers.is_empty() {
        log::warn!(target: "main", "DNS: no resolvers; MX routes will defer their mail");
        return None;
    }
    let options = ResolverOptions {
        timeout: config.system.dns_timeout,
        ..ResolverOptions::default()
    };
    Some(Rc::new(Resolver::new(servers, options)))
}

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` lines of a resolv.conf, on port 53.
fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nnameserver 10.0.0.53\nsearch example.com\nnameserver ::1\nnameserver bogus\n";
        assert_eq!(
            resolv_conf_servers(text),
            ["10.0.0.53:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}
