//! The running gateway: one executor, the spool, the queue manager and the listeners.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use smol::LocalExecutor;

use crate::clock::unix_now;
use crate::config::{Config, ServiceName};
use crate::dns::{Resolver, ResolverOptions};
use crate::filter::{Filter, Rule};
use crate::net::listener::{self, Counts};
use crate::net::throttle::{Limits, Throttle};
use crate::queue::{GroupCommit, Journal, Spool};
use crate::relay::callout::{Unreachable, Verifier, VerifyOptions};
use crate::relay::{QueueStore, Scheduler};
use crate::smtp::server::ServerConfig;
use crate::tls::setup::GatewayTls;

/// What every task of the running gateway shares.
pub struct Gateway {
    config: RefCell<Rc<Config>>,
    server_configs: RefCell<[Rc<ServerConfig>; 2]>,
    pub spool: Rc<Spool>,
    pub journal: Rc<RefCell<Journal>>,
    pub commit: Rc<GroupCommit>,
    pub scheduler: Rc<Scheduler>,
    pub executor: Rc<LocalExecutor<'static>>,
    /// The DNS client, for MX routes and access-filter name lookups.
    pub resolver: Option<Rc<Resolver>>,
    /// Each service's access filters, where it has any.
    filters: [Option<Filter>; 2],
    /// The state directory: the user database and the stores live there.
    pub state_dir: PathBuf,
    /// Authentication failures by client address, network and user.
    pub throttle: RefCell<Throttle>,
    /// The user database, as AUTH reads it.
    pub users: crate::users::UserCache,
    /// Turns at running a password derivation on the blocking pool.
    pub derivations: smol::lock::Semaphore,
    /// TLS for the services and for delivery; `None` when it could not be set up.
    pub tls: Option<Rc<GatewayTls>>,
    /// Recipient verification per service, where it is turned on.
    verifiers: [Option<Verifier>; 2],
    /// This host's addresses: a literal naming one of them is our host.
    our_addresses: Rc<[IpAddr]>,
}

impl Gateway {
    /// The running configuration. New sessions take it; running ones keep theirs.
    pub fn config(&self) -> Rc<Config> {
        self.config.borrow().clone()
    }

    pub fn server_config(&self, service: ServiceName) -> Rc<ServerConfig> {
        self.server_configs.borrow()[service as usize].clone()
    }

    pub fn filter(&self, service: ServiceName) -> Option<&Filter> {
        self.filters[service as usize].as_ref()
    }

    pub fn verifier(&self, service: ServiceName) -> Option<&Verifier> {
        self.verifiers[service as usize].as_ref()
    }

    /// This host's addresses, as routing knows them (see [`crate::net::local`]).
    pub fn our_addresses(&self) -> &[IpAddr] {
        &self.our_addresses
    }
}

/// A service's access filters, parsed (the configuration checked them already).
fn filters(config: &Config, service: ServiceName) -> Option<Filter> {
    let s = config.service(service);
    let mut filter = Filter {
        allow: Vec::new(),
        deny: Vec::new(),
    };
    filter
        .allow
        .extend(s.allow_filters.iter().filter_map(|t| Rule::parse(t).ok()));
    filter
        .deny
        .extend(s.deny_filters.iter().filter_map(|t| Rule::parse(t).ok()));
    for compact in s
        .compact_filters
        .iter()
        .filter_map(|t| Filter::parse_compact(t).ok())
    {
        filter.allow.extend(compact.allow);
        filter.deny.extend(compact.deny);
    }
    (!filter.allow.is_empty() || !filter.deny.is_empty()).then_some(filter)
}

fn verifiers(config: &Config) -> [Option<Verifier>; 2] {
    let make = |s: ServiceName| {
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
    };
    [make(ServiceName::Inbound), make(ServiceName::Outbound)]
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

/// An exclusive lock on the state directory, held for the life of the process.
pub struct StateLock(#[allow(dead_code)] File);

/// Takes the state directory for this process: two gateways on one spool would lose mail.
pub fn lock_state_dir(state_dir: &Path) -> io::Result<StateLock> {
    fs::create_dir_all(state_dir)?;
    let file = File::create(state_dir.join("lock"))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "state directory {} is in use by another drawbridge",
                state_dir.display()
            ),
        ));
    }
    Ok(StateLock(file))
}

/// Where the spool lives under the state directory.
pub fn spool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("spool")
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

/// Runs the gateway until the process is killed. Errors are start-up errors.
pub fn run(config: Config, state_dir: &Path) -> io::Result<()> {
    let _lock = lock_state_dir(state_dir)?;
    let (spool, files) = Spool::open(&spool_dir(state_dir))?;
    let (journal, journaled) = Journal::open(&spool_dir(state_dir))?;
    let spool = Rc::new(spool);
    let journal = Rc::new(RefCell::new(journal));
    let commit = Rc::new(GroupCommit::new(spool.clone(), journal.clone()));
    let config = Rc::new(config);
    let executor = Rc::new(LocalExecutor::new());
    let resolver = resolver(&config);
    let tls = match GatewayTls::setup(&config, state_dir, unix_now() as i64) {
        Ok(tls) => Some(Rc::new(tls)),
        Err(e) => {
            log::error!(target: "tls", "TLS is not available: {e}");
            None
        }
    };
    let our_addresses: Rc<[IpAddr]> = crate::net::local::our_addresses(&config).into();
    let scheduler = Scheduler::new(
        QueueStore {
            spool: spool.clone(),
            journal: journal.clone(),
            commit: commit.clone(),
        },
        resolver.clone(),
        tls.clone(),
        config.clone(),
        our_addresses.clone(),
        executor.clone(),
    );
    let gw = Rc::new(Gateway {
        server_configs: RefCell::new(server_configs(&config)),
        tls,
        verifiers: verifiers(&config),
        our_addresses,
        filters: [
            filters(&config, ServiceName::Inbound),
            filters(&config, ServiceName::Outbound),
        ],
        resolver,
        state_dir: state_dir.to_path_buf(),
        throttle: RefCell::new(Throttle::new(Limits::from(&config.system.auth_throttle))),
        users: crate::users::UserCache::new(state_dir)
            .map_err(|e| io::Error::other(format!("user database: {e}")))?,
        derivations: smol::lock::Semaphore::new(crate::net::session::MAX_CONCURRENT_DERIVATIONS),
        config: RefCell::new(config.clone()),
        commit,
        journal,
        spool,
        scheduler: scheduler.clone(),
        executor: executor.clone(),
    });
    let mut listeners = Vec::new();
    for service in ServiceName::ALL {
        let counts = Rc::new(RefCell::new(Counts::new(service)));
        for addr in &config.service(service).listen {
            let l = listener::bind(*addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr} for {service}: {e}"),
                )
            })?;
            log::info!(target: "main", "{service} service listening on {addr}");
            listeners.push((service, l, counts.clone(), false));
        }
        for addr in &config.service(service).tls_listen {
            let l = listener::bind(*addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr} for {service} (TLS): {e}"),
                )
            })?;
            log::info!(target: "main", "{service} service listening on {addr} (implicit TLS)");
            listeners.push((service, l, counts.clone(), true));
        }
    }
    scheduler.start();
    let recovered = scheduler.recover(files, journaled);
    log::info!(target: "main", "starting: {recovered} message(s) recovered from the queue");
    let control = crate::control::bind(state_dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open the control socket: {e}")))?;
    executor
        .spawn(crate::control::serve(
            scheduler.clone(),
            executor.clone(),
            control,
        ))
        .detach();
    for (service, l, counts, implicit_tls) in listeners {
        executor
            .spawn(listener::accept_loop(
                gw.clone(),
                service,
                l,
                counts,
                implicit_tls,
            ))
            .detach();
    }
    smol::block_on(executor.run(std::future::pending::<()>()));
    Ok(())
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
