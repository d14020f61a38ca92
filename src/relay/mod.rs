//! The queue manager: routes queued messages to next hops, runs deliveries with
//! connection reuse and per-destination concurrency, and retries on a back-off schedule.
//!
//! It owns the in-memory picture of the queue; the spool on disk is the truth it is
//! rebuilt from at start-up.

pub mod callout;
pub mod dsn;
pub mod ops;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::Timer;
use smol::LocalExecutor;
use smol::channel::{Receiver, Sender, unbounded};
use smol::future::FutureExt as _;

use crate::clock::unix_micros_now;
use crate::clock::unix_now;
use crate::config::TlsUse;
use crate::config::{Config, DomainPattern, Route};
use crate::dns::{MxAnswer, Name, Resolver};
use crate::log::Relay;
use crate::net::connection::{ConnectError, Connection, OutgoingTls};
use crate::policy::route;
use crate::queue::{
    Envelope, GroupCommit, JOURNAL_MESSAGE_MAX, Journal, Origin, Pending, QueueId, RcptStatus,
    Recipient, Recovered, Ret, Spool,
};
use crate::smtp::address::{self, Domain};
use crate::smtp::client::TlsPolicy;
use crate::smtp::client::{ClientConfig, OutgoingMessage, OutgoingRcpt};
use crate::smtp::reply::Reply;
use crate::stats;
use crate::tls::setup::GatewayTls;
use dsn::{Report, ReportKind};

/// RFC 5321 §4.5.3.1.8 servers must take 100 recipients; we send no more per transaction.
pub const MAX_RCPTS_PER_TRANSACTION: usize = 100;
/// How long an idle connection waits for more mail to the same next hop before QUIT.
pub const CONNECTION_REUSE_IDLE: Duration = Duration::from_secs(2);

/// RFC 3461 NOTIFY, as bits in the envelope's `notify` byte.
pub mod notify {
    pub const NEVER: u8 = 1;
    pub const SUCCESS: u8 = 2;
    pub const FAILURE: u8 = 4;
    pub const DELAY: u8 = 8;

    /// The NOTIFY parameter value for these bits, or `None` when none are set.
    pub fn to_param(bits: u8) -> Option<String> {
        if bits & NEVER != 0 {
            return Some("NEVER".into());
        }
        let names: Vec<&str> = [(SUCCESS, "SUCCESS"), (FAILURE, "FAILURE"), (DELAY, "DELAY")]
            .into_iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| n)
            .collect();
        (!names.is_empty()).then(|| names.join(","))
    }
}

/// Where a job goes: the fixed hosts of a route, or the MX hosts of one domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestKey {
    /// A relay list or smarthost: every domain the route matches shares its hosts.
    Route(DomainPattern),
    /// MX routing: each recipient domain is its own destination.
    Mx {
        route: DomainPattern,
        domain: String,
    },
}

impl DestKey {
    fn route(&self) -> &DomainPattern {
        match self {
            DestKey::Route(r) | DestKey::Mx { route: r, .. } => r,
        }
    }
}

/// Recipients of one message bound for one destination: one transaction.
struct Job {
    id: QueueId,
    rcpts: Vec<usize>,
}

/// Where a message's durable copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A record in this journal segment; the content is held in memory.
    Journal(u64),
    /// Its own files in the spool.
    File,
}

/// A message the queue manager knows about.
struct Active {
    env: Envelope,
    backing: Backing,
    /// Jobs handed out and not yet reported back.
    in_flight: usize,
    /// When this process accepted it, for `delay=`; `None` for recovered messages.
    accepted: Option<Instant>,
    /// The content: always for journal messages, read once while jobs are in flight for
    /// file messages.
    content: Option<Rc<[u8]>>,
}

/// One next hop (a route) with its waiting jobs and its connections.
struct Destination {
    jobs: VecDeque<Job>,
    workers: u32,
    idle: u32,
    bell: (Sender<()>, Receiver<()>),
    next_host: usize,
    avoid: HashMap<SocketAddr, Instant>,
}

impl Destination {
    fn new() -> Destination {
        Destination {
            jobs: VecDeque::new(),
            workers: 0,
            idle: 0,
            bell: unbounded(),
            next_host: 0,
            avoid: HashMap::new(),
        }
    }
}

#[derive(Default)]
struct Inner {
    messages: HashMap<QueueId, Active>,
    destinations: HashMap<DestKey, Destination>,
    /// (unix time of the next attempt, id); stale entries are skipped when popped.
    deferred: BinaryHeap<Reverse<(u64, QueueId)>>,
}

/// The queue manager. Shared as `Rc<Scheduler>` on the single-threaded executor.
pub struct Scheduler {
    inner: RefCell<Inner>,
    spool: Rc<Spool>,
    journal: Rc<RefCell<Journal>>,
    commit: Rc<GroupCommit>,
    config: RefCell<Rc<Config>>,
    /// This host's addresses, for routing (the sessions route with the same ones).
    our_addresses: RefCell<Rc<[IpAddr]>>,
    client_config: RefCell<Rc<ClientConfig>>,
    resolver: RefCell<Option<Rc<Resolver>>>,
    tls: RefCell<Option<Rc<GatewayTls>>>,
    executor: Rc<LocalExecutor<'static>>,
    retry_bell: (Sender<()>, Receiver<()>),
}

/// The durable queue the scheduler works on: the spool's files, the journal, and the
/// group commit that makes both durable.
pub struct QueueStore {
    pub spool: Rc<Spool>,
    pub journal: Rc<RefCell<Journal>>,
    pub commit: Rc<GroupCommit>,
}

impl Scheduler {
    pub fn new(
        store: QueueStore,
        resolver: Option<Rc<Resolver>>,
        tls: Option<Rc<GatewayTls>>,
        config: Rc<Config>,
        our_addresses: Rc<[IpAddr]>,
        executor: Rc<LocalExecutor<'static>>,
    ) -> Rc<Scheduler> {
        let QueueStore {
            spool,
            journal,
            commit,
        } = store;
        Rc::new(Scheduler {
            inner: RefCell::new(Inner::default()),
            spool,
            journal,
            commit,
            client_config: RefCell::new(client_config(&config)),
            config: RefCell::new(config),
            our_addresses: RefCell::new(our_addresses),
            resolver: RefCell::new(resolver),
            tls: RefCell::new(tls),
            executor,
            retry_bell: unbounded(),
        })
    }

    /// A commit changed the configuration: later decisions use `config`, and a waiting
    /// message whose recipients it routes elsewhere is tried again now, by the new
    /// routes. Deliveries under way finish where they started.
    pub fn reconfigure(
        self: &Rc<Self>,
        config: Rc<Config>,
        our_addresses: Rc<[IpAddr]>,
        resolver: Option<Rc<Resolver>>,
        tls: Option<Rc<GatewayTls>>,
    ) {
        let old = self.config();
        let old_ours = self.our_addresses.borrow().clone();
        *self.client_config.borrow_mut() = client_config(&config);
        *self.resolver.borrow_mut() = resolver;
        *self.tls.borrow_mut() = tls;
        *self.our_addresses.borrow_mut() = our_addresses.clone();
        *self.config.borrow_mut() = config.clone();
        // Where each open recipient went and goes now, with the route behind it.
        let target = |c: &Config, ours: &[IpAddr], address: &str| {
            destination(c, ours, address)
                .ok()
                .map(|d| (d.clone(), c.routes.get(d.route()).cloned()))
        };
        let moved: Vec<QueueId> = self
            .inner
            .borrow()
            .messages
            .values()
            .filter(|a| !a.env.held && a.in_flight == 0)
            .filter(|a| {
                a.env
                    .recipients
                    .iter()
                    .filter(|r| r.status.is_open())
                    .any(|r| {
                        target(&old, &old_ours, &r.address)
                            != target(&config, &our_addresses, &r.address)
                    })
            })
            .map(|a| a.env.id.clone())
            .collect();
        if !moved.is_empty() {
            log::info!(target: "qmgr", "new configuration: {} waiting message(s) rerouted", moved.len());
        }
        for id in &moved {
            self.dispatch(id);
        }
    }

    fn config(&self) -> Rc<Config> {
        self.config.borrow().clone()
    }

    /// Starts the retry timer. Call once.
    pub fn start(self: &Rc<Self>) {
        self.executor.spawn(self.clone().retry_loop()).detach();
    }

    /// Takes the messages recovered at start-up: those in files, and those in the journal.
    /// A message in both was being moved to its files; the files are the newer copy.
    /// Returns how many messages it took.
    pub fn recover(self: &Rc<Self>, files: Vec<Envelope>, journaled: Vec<Recovered>) -> usize {
        let now = unix_now();
        let in_files: std::collections::HashSet<QueueId> =
            files.iter().map(|e| e.id.clone()).collect();
        let recovered = |env, backing, content| Active {
            env,
            backing,
            in_flight: 0,
            accepted: None,
            content,
        };
        let mut all: Vec<Active> = files
            .into_iter()
            .map(|e| recovered(e, Backing::File, None))
            .collect();
        for r in journaled {
            self.spool.observe_id(&r.env.id);
            if in_files.contains(&r.env.id) {
                if let Err(e) = self.journal.borrow_mut().done(&r.env.id, r.segment) {
                    log::warn!(target: "qmgr", "{}: cannot mark journal copy done: {e}", r.env.id);
                }
                continue;
            }
            all.push(recovered(
                r.env,
                Backing::Journal(r.segment),
                Some(r.content.into()),
            ));
        }
        all.sort_by(|a, b| (a.env.arrived, &a.env.id).cmp(&(b.env.arrived, &b.env.id)));
        let count = all.len();
        for active in all {
            let env = &active.env;
            log::info!(target: "qmgr", "{}: from=<{}>, size={}, nrcpt={} (queue {})",
                env.id, env.sender, env.size, env.recipients.len(),
                if env.held { "hold" } else if env.next_attempt > now { "deferred" } else { "active" });
            let id = env.id.clone();
            let due = env.next_attempt;
            let held = env.held;
            self.inner.borrow_mut().messages.insert(id.clone(), active);
            if held {
                continue;
            }
            if due > now {
                self.inner.borrow_mut().deferred.push(Reverse((due, id)));
            } else {
                self.dispatch(&id);
            }
        }
        let _ = self.retry_bell.0.try_send(());
        count
    }

    /// Takes a message that was just committed, with its content when it is in memory.
    pub fn submit(
        self: &Rc<Self>,
        env: Envelope,
        accepted: Instant,
        content: Option<Rc<[u8]>>,
        backing: Backing,
    ) {
        log::info!(target: "qmgr", "{}: from=<{}>, size={}, nrcpt={} (queue active)",
            env.id, env.sender, env.size, env.recipients.len());
        let id = env.id.clone();
        let active = Active {
            env,
            backing,
            in_flight: 0,
            accepted: Some(accepted),
            content,
        };
        self.inner.borrow_mut().messages.insert(id.clone(), active);
        self.dispatch(&id);
    }

    /// Number of messages in the queue manager's picture (active, deferred or held).
    pub fn len(&self) -> usize {
        self.inner.borrow().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Splits a message's undelivered recipients into jobs per destination.
    fn dispatch(self: &Rc<Self>, id: &QueueId) {
        let config = self.config();
        let mut woken: Vec<(DestKey, usize)> = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let Some(active) = inner.messages.get_mut(id) else {
                return;
            };
            if active.in_flight > 0 || active.env.held {
                return;
            }
            let mut by_dest: BTreeMap<DestKey, Vec<usize>> = BTreeMap::new();
            let mut unroutable = Vec::new();
            for (i, r) in active.env.recipients.iter().enumerate() {
                if !r.status.is_open() {
                    continue;
                }
                match destination(&config, &self.our_addresses.borrow(), &r.address) {
                    Ok(key) => by_dest.entry(key).or_default().push(i),
                    Err(reply) => unroutable.push((i, reply)),
                }
            }
            for (i, reply) in unroutable {
                log_status(&active.env, i, None, active.accepted, &reply);
                active.env.recipients[i].status = RcptStatus::Failed {
                    reply: reply.one_line(),
                };
            }
            let mut jobs = Vec::new();
            for (dest, rcpts) in by_dest {
                let mut count = 0;
                for chunk in rcpts.chunks(MAX_RCPTS_PER_TRANSACTION) {
                    jobs.push((
                        dest.clone(),
                        Job {
                            id: id.clone(),
                            rcpts: chunk.to_vec(),
                        },
                    ));
                    count += 1;
                }
                woken.push((dest, count));
            }
            active.in_flight = jobs.len();
            for (dest, job) in jobs {
                inner
                    .destinations
                    .entry(dest)
                    .or_insert_with(Destination::new)
                    .jobs
                    .push_back(job);
            }
        }
        if woken.is_empty() {
            self.finish(id);
            return;
        }
        for (dest, count) in woken {
            self.wake(&config, dest, count);
        }
    }

    /// Gets `count` new jobs at `dest` moving: idle connections first, then new ones
    /// up to the route's concurrency limit.
    fn wake(self: &Rc<Self>, config: &Config, dest: DestKey, count: usize) {
        let limit = config
            .routes
            .get(dest.route())
            .map_or(1, |r| r.concurrency.max(1));
        let mut spawn = 0;
        {
            let mut inner = self.inner.borrow_mut();
            let d = inner
                .destinations
                .entry(dest.clone())
                .or_insert_with(Destination::new);
            let ring = (d.idle as usize).min(count);
            for _ in 0..ring {
                let _ = d.bell.0.try_send(());
            }
            let room = limit.saturating_sub(d.workers) as usize;
            spawn = spawn.max((count - ring).min(room));
            d.workers += spawn as u32;
        }
        for _ in 0..spawn {
            self.executor
                .spawn(self.clone().worker(dest.clone()))
                .detach();
        }
    }

    fn take_job(&self, dest: &DestKey) -> Option<Job> {
        self.inner
            .borrow_mut()
            .destinations
            .get_mut(dest)?
            .jobs
            .pop_front()
    }

    /// One connection's life: take jobs for `dest` until there are none for a while.
    async fn worker(self: Rc<Self>, dest: DestKey) {
        let mut conn: Option<Connection> = None;
        let mut idle_expired = false;
        loop {
            let Some(job) = self.take_job(&dest) else {
                if conn.is_none() || idle_expired {
                    break;
                }
                let bell = self.set_idle(&dest, true);
                let rung = async { bell.recv().await.is_ok() }
                    .or(async {
                        Timer::after(CONNECTION_REUSE_IDLE).await;
                        false
                    })
                    .await;
                self.set_idle(&dest, false);
                idle_expired = !rung;
                continue;
            };
            idle_expired = false;
            if !conn.as_ref().is_some_and(Connection::is_usable) {
                match self.connect(&dest).await {
                    Ok(c) => conn = Some(c),
                    Err(reply) => {
                        self.fail_destination(&dest, job, &reply);
                        break;
                    }
                }
            }
            // The branch above leaves a connection in place or breaks out.
            let Some(c) = conn.as_mut() else { break };
            let outgoing = match self.outgoing(&job) {
                Ok(m) => m,
                Err(reply) => {
                    let replies = vec![reply; job.rcpts.len()];
                    self.record(&job, None, &replies);
                    continue;
                }
            };
            let replies = c.send(outgoing).await;
            self.record(&job, Some(c.peer()), &replies);
            if !c.is_usable() {
                conn = None;
            }
        }
        if let Some(d) = self.inner.borrow_mut().destinations.get_mut(&dest) {
            d.workers = d.workers.saturating_sub(1);
        }
        if let Some(c) = conn {
            c.quit().await;
        }
    }

    fn set_idle(&self, dest: &DestKey, idle: bool) -> Receiver<()> {
        let mut inner = self.inner.borrow_mut();
        let d = inner
            .destinations
            .entry(dest.clone())
            .or_insert_with(Destination::new);
        if idle {
            d.idle += 1;
        } else {
            d.idle = d.idle.saturating_sub(1);
        }
        d.bell.1.clone()
    }

    /// Opens a connection to the destination: a relay list's hosts in round-robin order,
    /// or a domain's MX hosts in preference order, passing over hosts that failed recently
    /// and failing over on error or timeout. The error is the reply every job waiting for
    /// this destination gets: temporary, or permanent where DNS says the domain cannot
    /// take mail.
    async fn connect(&self, dest: &DestKey) -> Result<Connection, Reply> {
        let config = self.config();
        let Some(route) = config.routes.get(dest.route()) else {
            return Err(Reply::new(
                451,
                "4.4.0",
                "Route removed from the configuration",
            ));
        };
        let hosts = match dest {
            DestKey::Route(_) => {
                let hosts = route.hosts();
                if hosts.is_empty() {
                    return Err(Reply::new(451, "4.4.0", "Route has no hosts"));
                }
                let start = {
                    let mut inner = self.inner.borrow_mut();
                    let d = inner
                        .destinations
                        .entry(dest.clone())
                        .or_insert_with(Destination::new);
                    let start = d.next_host;
                    d.next_host = d.next_host.wrapping_add(1);
                    start
                };
                (0..hosts.len())
                    .map(|k| {
                        let host = hosts[(start + k) % hosts.len()];
                        (host, host.ip().to_string())
                    })
                    .collect()
            }
            DestKey::Mx { domain, .. } => self.mx_hosts(domain, route.mx_port).await?,
        };
        // The destination channel decides how TLS is used (SPEC §3).
        let channel = config.channel(route.channel.as_deref());
        let use_tls = channel.tls_client();
        let client_config = Rc::new(ClientConfig {
            tls: match use_tls {
                TlsUse::Never => TlsPolicy::Never,
                TlsUse::May => TlsPolicy::Opportunistic,
                TlsUse::Must => TlsPolicy::Required,
            },
            ..(**self.client_config.borrow()).clone()
        });
        let mut last = Reply::new(
            451,
            "4.4.1",
            "all hosts failed recently and are passed over for now",
        );
        for (host, server_name) in hosts {
            let now = Instant::now();
            let avoided = self
                .inner
                .borrow()
                .destinations
                .get(dest)
                .and_then(|d| d.avoid.get(&host))
                .is_some_and(|until| *until > now);
            if avoided {
                continue;
            }
            let tls = self.tls.borrow().clone().map(|tls| OutgoingTls {
                tls: tls.clone(),
                server_name,
                verify: use_tls == TlsUse::Must && !route.danger_tls_no_verify,
            });
            match Connection::open(host, route.failover_timeout, client_config.clone(), tls).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    last = connect_failure(host, &e);
                    log::info!(target: "smtp", "connect to {}: {e}", Relay(host));
                    let until = Instant::now() + route.avoid_time;
                    if let Some(d) = self.inner.borrow_mut().destinations.get_mut(dest) {
                        d.avoid.insert(host, until);
                    }
                }
            }
        }
        Err(last)
    }

    /// The hosts mail for `domain` goes to (RFC 5321 §5.1): its MX hosts by preference
    /// (equal preferences in random order), or its own address when it has no MX, or
    /// the address of an address literal. A null MX (RFC 7505) is a permanent failure.
    /// Each host comes with the name its certificate must carry.
    async fn mx_hosts(&self, domain: &str, port: u16) -> Result<Vec<(SocketAddr, String)>, Reply> {
        if let Some(ip) = Domain::parse(domain, true)
            .ok()
            .and_then(|d| d.literal_address())
        {
            return Ok(vec![(SocketAddr::new(ip, port), ip.to_string())]);
        }
        let Some(resolver) = self.resolver.borrow().clone() else {
            return Err(Reply::new(451, "4.4.3", "No DNS resolvers configured"));
        };
        let name = Name::parse(domain)
            .map_err(|_| Reply::new(550, "5.1.2", format!("Bad destination domain {domain}")))?;
        let exchanges = match resolver.lookup_mx(&name).await {
            Ok(MxAnswer::NullMx) => {
                return Err(Reply::new(
                    556,
                    "5.1.10",
                    format!("Domain {domain} does not accept mail (null MX)"),
                ));
            }
            Ok(MxAnswer::NoMx) => vec![name],
            Ok(MxAnswer::Exchanges(list)) => list.into_iter().map(|mx| mx.exchange).collect(),
            Err(e) => {
                log::info!(target: "smtp", "MX lookup for {domain}: {e}");
                return Err(e.reply());
            }
        };
        let mut hosts = Vec::new();
        let mut last = None;
        for exchange in exchanges {
            match resolver.lookup_ip(&exchange).await {
                Ok(ips) => hosts.extend(
                    ips.into_iter()
                        .map(|ip| (SocketAddr::new(ip, port), exchange.as_str().to_string())),
                ),
                Err(e) => {
                    log::info!(target: "smtp", "address lookup for {exchange} (MX of {domain}): {e}");
                    last = Some(e);
                }
            }
        }
        if hosts.is_empty() {
            let reply = match last {
                Some(e) if !e.is_permanent() => e.reply(),
                _ => Reply::new(
                    451,
                    "4.4.4",
                    format!("No address found for the mail hosts of {domain}"),
                ),
            };
            return Err(reply);
        }
        Ok(hosts)
    }

    /// The transaction for a job, reading the content once per message.
    fn outgoing(&self, job: &Job) -> Result<OutgoingMessage, Reply> {
        let mut inner = self.inner.borrow_mut();
        let Some(active) = inner.messages.get_mut(&job.id) else {
            return Err(Reply::new(451, "4.3.0", "Message vanished from the queue"));
        };
        let content = match &active.content {
            Some(c) => c.clone(),
            None => match self.spool.read_content(&job.id) {
                Ok(bytes) => {
                    let c: Rc<[u8]> = bytes.into();
                    active.content = Some(c.clone());
                    c
                }
                Err(e) => {
                    log::error!(target: "qmgr", "{}: cannot read queue file: {e}", job.id);
                    return Err(Reply::new(451, "4.3.0", "Queue file read error"));
                }
            },
        };
        let env = &active.env;
        Ok(OutgoingMessage {
            from: env.sender.clone(),
            rcpts: job
                .rcpts
                .iter()
                .map(|&i| {
                    let r = &env.recipients[i];
                    OutgoingRcpt {
                        address: r.address.clone(),
                        notify: notify::to_param(r.notify),
                        orcpt: r.orcpt.clone(),
                    }
                })
                .collect(),
            content,
            eight_bit: env.eight_bit,
            smtputf8: env.smtputf8,
            ret: env.ret.map(|r| match r {
                Ret::Full => "FULL".to_string(),
                Ret::Hdrs => "HDRS".to_string(),
            }),
            envid: env.envid.clone(),
        })
    }

    /// Gives every job waiting at `dest`, and `first`, the reply that ended the attempt.
    fn fail_destination(self: &Rc<Self>, dest: &DestKey, first: Job, reply: &Reply) {
        let mut jobs = vec![first];
        if let Some(d) = self.inner.borrow_mut().destinations.get_mut(dest) {
            jobs.extend(d.jobs.drain(..));
        }
        for job in jobs {
            let replies = vec![reply.clone(); job.rcpts.len()];
            self.record(&job, None, &replies);
        }
    }

    /// Records a job's per-recipient outcome; the last job of a message settles it.
    fn record(self: &Rc<Self>, job: &Job, relay: Option<SocketAddr>, replies: &[Reply]) {
        let settled = {
            let mut inner = self.inner.borrow_mut();
            let Some(active) = inner.messages.get_mut(&job.id) else {
                return;
            };
            for (&i, reply) in job.rcpts.iter().zip(replies) {
                log_status(&active.env, i, relay, active.accepted, reply);
                let text = reply.one_line();
                let status = &mut active.env.recipients[i].status;
                *status = if reply.is_positive() {
                    RcptStatus::Delivered { reply: text }
                } else if reply.is_permanent() {
                    RcptStatus::Failed { reply: text }
                } else if matches!(status, RcptStatus::Delayed { .. }) {
                    // The sender has had the delay notice already.
                    RcptStatus::Delayed { reply: text }
                } else {
                    RcptStatus::Deferred { reply: text }
                };
            }
            active.in_flight = active.in_flight.saturating_sub(1);
            active.in_flight == 0
        };
        if settled {
            self.finish(&job.id);
        }
    }

    /// A message with no jobs in flight: removed when every recipient is settled,
    /// otherwise scheduled for its next attempt (or expired). Failures and long delays
    /// are reported to the sender first: the report is durable before the message that
    /// caused it is removed.
    fn finish(self: &Rc<Self>, id: &QueueId) {
        let config = self.config();
        let now = unix_now();
        let (plan, reports) = {
            let mut inner = self.inner.borrow_mut();
            let Some(active) = inner.messages.get_mut(id) else {
                return;
            };
            let plan = plan_next(&mut active.env, &config, now);
            let reports = take_reports(&mut active.env, &config, now, plan);
            if !reports.is_empty() {
                // Nothing may dispatch the message while its reports are being queued.
                active.in_flight = 1;
            }
            (plan, reports)
        };
        if reports.is_empty() {
            self.settle(id, plan);
            return;
        }
        let built = self.build_reports(id, &reports, &config, now);
        let this = self.clone();
        let id = id.clone();
        self.executor
            .spawn(async move {
                for (env, bytes) in built {
                    this.queue_report(env, bytes).await;
                }
                if let Some(active) = this.inner.borrow_mut().messages.get_mut(&id) {
                    active.in_flight = 0;
                }
                this.settle(&id, plan);
            })
            .detach();
    }

    /// Carries out the plan for a message with nothing in flight.
    fn settle(self: &Rc<Self>, id: &QueueId, plan: Plan) {
        let mut inner = self.inner.borrow_mut();
        let Some(active) = inner.messages.get_mut(id) else {
            return;
        };
        match plan {
            Plan::Retry(due) => {
                active.env.next_attempt = due;
                match active.backing {
                    Backing::File => {
                        active.content = None;
                        if let Err(e) = self.spool.update(&active.env) {
                            log::error!(target: "qmgr", "{id}: cannot update queue file: {e}");
                        }
                    }
                    Backing::Journal(segment) => self.move_to_file(active, segment),
                }
                inner.deferred.push(Reverse((due, id.clone())));
                let _ = self.retry_bell.0.try_send(());
            }
            Plan::Remove => {
                let removed = match active.backing {
                    Backing::File => self.spool.remove(id),
                    Backing::Journal(segment) => self.journal.borrow_mut().done(id, segment),
                };
                if let Err(e) = removed {
                    log::error!(target: "qmgr", "{id}: cannot remove from the queue: {e}");
                }
                log::info!(target: "qmgr", "{id}: removed");
                inner.messages.remove(id);
            }
        }
    }

    /// The DSN messages for `reports`, each with its envelope: from `<>` to the sender.
    fn build_reports(
        &self,
        id: &QueueId,
        reports: &[(ReportKind, Vec<usize>)],
        config: &Config,
        now: u64,
    ) -> Vec<(Envelope, Vec<u8>)> {
        let inner = self.inner.borrow();
        let Some(active) = inner.messages.get(id) else {
            return Vec::new();
        };
        let content: Rc<[u8]> = match &active.content {
            Some(c) => c.clone(),
            None => match self.spool.read_content(id) {
                Ok(bytes) => bytes.into(),
                Err(e) => {
                    log::error!(target: "qmgr", "{id}: cannot read the message for its report: {e}");
                    Rc::from(&[][..])
                }
            },
        };
        let env = &active.env;
        let mut out = Vec::new();
        for (kind, rcpts) in reports {
            let micros = unix_micros_now();
            let report = Report {
                env,
                rcpts: rcpts.clone(),
                kind: *kind,
                content: &content,
                reporting_mta: &config.system.host_name,
                now_unix: now,
                boundary_seed: micros ^ id.value().unwrap_or(0),
                remote_mta: vec![None; rcpts.len()],
                retry_until_unix: (*kind == ReportKind::Delay).then(|| {
                    env.arrived
                        .saturating_add(config.queue.max_lifetime.as_secs())
                }),
            };
            let built = dsn::build(&report);
            let notice = Envelope {
                id: self.spool.allocate_id(micros),
                arrived: now,
                origin: Origin::Local,
                client_ip: None,
                client_helo: String::new(),
                sender: String::new(),
                size: built.bytes.len() as u64,
                eight_bit: built.eight_bit,
                smtputf8: !env.sender.is_ascii(),
                ret: None,
                envid: None,
                recipients: vec![Recipient {
                    address: env.sender.clone(),
                    orcpt: None,
                    notify: 0,
                    status: RcptStatus::Pending,
                }],
                attempts: 0,
                next_attempt: 0,
                held: false,
            };
            let what = match kind {
                ReportKind::Failure => "non-delivery",
                ReportKind::Delay => "delay",
            };
            log::info!(target: "bounce", "{id}: sender {what} notification: {}", notice.id);
            out.push((notice, built.bytes));
        }
        out
    }

    /// Makes a report durable and hands it to delivery like any other message.
    async fn queue_report(self: &Rc<Self>, env: Envelope, bytes: Vec<u8>) {
        let id = env.id.clone();
        let written = if bytes.len() <= JOURNAL_MESSAGE_MAX {
            self.journal
                .borrow_mut()
                .append(&env, &bytes)
                .map(|segment| {
                    (
                        Pending::Journal {
                            id: id.clone(),
                            segment,
                        },
                        Backing::Journal(segment),
                    )
                })
        } else {
            self.spool
                .create_named(id.clone())
                .and_then(|mut incoming| {
                    incoming.write(&bytes)?;
                    Ok((Pending::File(incoming.finish(&env)?), Backing::File))
                })
        };
        let result = match written {
            Ok((pending, backing)) => self.commit.commit(pending).await.map(|()| backing),
            Err(e) => Err(e),
        };
        match result {
            Ok(Backing::Journal(segment)) => {
                self.submit(
                    env,
                    Instant::now(),
                    Some(bytes.into()),
                    Backing::Journal(segment),
                );
            }
            Ok(Backing::File) => self.submit(env, Instant::now(), None, Backing::File),
            Err(e) => log::error!(target: "bounce", "{id}: cannot queue the notification: {e}"),
        }
    }

    /// A journal message that has to wait: its files are written now and it is served from
    /// them; its journal record is retired once the files are durable.
    fn move_to_file(self: &Rc<Self>, active: &mut Active, segment: u64) {
        let id = active.env.id.clone();
        let Some(content) = active.content.clone() else {
            return;
        };
        let written = self
            .spool
            .create_named(id.clone())
            .and_then(|mut incoming| {
                incoming.write(&content)?;
                incoming.finish(&active.env)
            });
        let finished = match written {
            Ok(f) => f,
            Err(e) => {
                // It stays in the journal and in memory; the next deferral tries again.
                log::warn!(target: "qmgr", "{id}: cannot move to a queue file: {e}");
                return;
            }
        };
        active.backing = Backing::File;
        active.content = None;
        let this = self.clone();
        self.executor
            .spawn(async move {
                let synced = this.commit.commit(Pending::File(finished)).await;
                let mut inner = this.inner.borrow_mut();
                let active = inner.messages.get_mut(&id);
                match (synced, active) {
                    (Err(e), Some(active)) => {
                        // The files are gone with the failed sync: back to the journal copy.
                        log::error!(target: "qmgr", "{id}: queue file sync failed, keeping the journal copy: {e}");
                        active.backing = Backing::Journal(segment);
                        active.content = Some(content);
                    }
                    _ => {
                        if let Err(e) = this.journal.borrow_mut().done(&id, segment) {
                            log::warn!(target: "qmgr", "{id}: cannot retire journal record: {e}");
                        }
                    }
                }
            })
            .detach();
    }

    /// Wakes deferred messages when their time comes.
    async fn retry_loop(self: Rc<Self>) {
        loop {
            let next = self
                .inner
                .borrow()
                .deferred
                .peek()
                .map(|Reverse((t, _))| *t);
            let wait = match next {
                Some(t) => Timer::after(Duration::from_secs(t.saturating_sub(unix_now()))),
                None => Timer::never(),
            };
            let bell = self.retry_bell.1.clone();
            async {
                let _ = bell.recv().await;
            }
            .or(async {
                wait.await;
            })
            .await;
            let now = unix_now();
            let mut due = Vec::new();
            {
                let mut inner = self.inner.borrow_mut();
                while let Some(Reverse((t, _))) = inner.deferred.peek() {
                    if *t > now {
                        break;
                    }
                    let Some(Reverse((t, id))) = inner.deferred.pop() else {
                        break;
                    };
                    let current = inner
                        .messages
                        .get(&id)
                        .is_some_and(|a| a.env.next_attempt == t);
                    if current {
                        due.push(id);
                    }
                }
            }
            for id in due {
                self.dispatch(&id);
            }
        }
    }
}

/// What happens to a message once its attempt is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Every recipient is settled: the message leaves the queue.
    Remove,
    /// Some recipients wait: try again at this unix time.
    Retry(u64),
}

/// Decides the message's next step; recipients still open past the queue lifetime
/// become failures.
fn plan_next(env: &mut Envelope, config: &Config, now: u64) -> Plan {
    if !env.recipients.iter().any(|r| r.status.is_open()) {
        return Plan::Remove;
    }
    env.attempts = env.attempts.saturating_add(1);
    if now.saturating_sub(env.arrived) < config.queue.max_lifetime.as_secs() {
        let schedule = &config.queue.retry;
        let step = (env.attempts as usize - 1).min(schedule.len().saturating_sub(1));
        let delay = schedule.get(step).map_or(300, Duration::as_secs).max(1);
        return Plan::Retry(now + delay);
    }
    let id = env.id.clone();
    let attempts = env.attempts;
    for r in env.recipients.iter_mut() {
        let last = match &r.status {
            RcptStatus::Deferred { reply } | RcptStatus::Delayed { reply } => reply.clone(),
            RcptStatus::Pending => String::new(),
            _ => continue,
        };
        let text = format!("message expired after {attempts} attempts: {last}");
        log::info!(target: "qmgr", "{id}: to=<{}>, dsn=4.4.7, status=expired ({text})", r.address);
        stats::delivery(stats::Delivery::Bounced);
        r.status = RcptStatus::Failed {
            reply: format!("550 5.4.7 {text}"),
        };
    }
    Plan::Remove
}

/// The reports the sender is owed now, by kind, with the recipients each covers. Every
/// failure is marked returned and every delay noticed, so nothing is reported twice.
fn take_reports(
    env: &mut Envelope,
    config: &Config,
    now: u64,
    plan: Plan,
) -> Vec<(ReportKind, Vec<usize>)> {
    let mut out = Vec::new();
    let failed: Vec<usize> = (0..env.recipients.len())
        .filter(|&i| matches!(env.recipients[i].status, RcptStatus::Failed { .. }))
        .collect();
    let wanted: Vec<usize> = failed
        .iter()
        .copied()
        .filter(|&i| dsn::wants_report(env, i, ReportKind::Failure))
        .collect();
    for &i in &failed {
        if let RcptStatus::Failed { reply } = &env.recipients[i].status {
            env.recipients[i].status = RcptStatus::Returned {
                reply: reply.clone(),
            };
        }
    }
    if !wanted.is_empty() {
        out.push((ReportKind::Failure, wanted));
    }
    let notice = config.queue.delay_notice.as_secs();
    let late = notice > 0 && now.saturating_sub(env.arrived) >= notice;
    if late && matches!(plan, Plan::Retry(_)) {
        let deferred: Vec<usize> = (0..env.recipients.len())
            .filter(|&i| matches!(env.recipients[i].status, RcptStatus::Deferred { .. }))
            .collect();
        let wanted: Vec<usize> = deferred
            .iter()
            .copied()
            .filter(|&i| dsn::wants_report(env, i, ReportKind::Delay))
            .collect();
        for &i in &deferred {
            if let RcptStatus::Deferred { reply } = &env.recipients[i].status {
                env.recipients[i].status = RcptStatus::Delayed {
                    reply: reply.clone(),
                };
            }
        }
        if !wanted.is_empty() {
            out.push((ReportKind::Delay, wanted));
        }
    }
    out
}

/// One Postfix-shaped delivery line: `ID: to=<…>, relay=…, delay=…, dsn=…, status=… (…)`.
fn log_status(
    env: &Envelope,
    i: usize,
    relay: Option<SocketAddr>,
    accepted: Option<Instant>,
    reply: &Reply,
) {
    let delay = match accepted {
        Some(at) => at.elapsed().as_secs_f64(),
        None => unix_now().saturating_sub(env.arrived) as f64,
    };
    let (status, outcome) = if reply.is_positive() {
        ("sent", stats::Delivery::Delivered)
    } else if reply.is_permanent() {
        ("bounced", stats::Delivery::Bounced)
    } else {
        ("deferred", stats::Delivery::Deferred)
    };
    stats::delivery(outcome);
    let dsn = reply
        .enhanced
        .map_or_else(|| format!("{}.0.0", reply.code / 100), |e| e.to_string());
    let relay = relay.map_or_else(|| "none".to_string(), |r| Relay(r).to_string());
    log::info!(target: "smtp", "{}: to=<{}>, relay={relay}, delay={delay:.2}, dsn={dsn}, status={status} ({})",
        env.id, env.recipients[i].address, reply.one_line());
}

/// The reply a host's failure leaves its waiting jobs: a temporary reply the host gave
/// (such as `454 4.7.5` when TLS is required and cannot be had) is kept; anything else is
/// a temporary `451 4.4.1`: one bad host does not bounce mail.
fn connect_failure(host: SocketAddr, e: &ConnectError) -> Reply {
    match e {
        ConnectError::Refused(Some(r)) if r.is_transient() => Reply {
            code: r.code,
            enhanced: r.enhanced,
            lines: vec![format!("{} (at {})", r.lines.join(" "), Relay(host))],
        },
        other => Reply::new(451, "4.4.1", format!("connect to {}: {other}", Relay(host))),
    }
}

/// The delivery settings that follow from the configuration.
fn client_config(config: &Config) -> Rc<ClientConfig> {
    Rc::new(ClientConfig {
        helo_name: config.system.host_name.clone(),
        // The destination channel decides TLS per connection (see `connect`).
        tls: TlsPolicy::Never,
        ..ClientConfig::default()
    })
}

/// Where mail for a queued recipient goes, by the routing function the policy decided
/// with ([`crate::policy::route`]); a refusal when it cannot be routed.
pub fn destination(config: &Config, ours: &[IpAddr], address: &str) -> Result<DestKey, Reply> {
    let rcpt = address::Recipient::parse(address)
        .map_err(|_| Reply::new(550, "5.1.3", "Bad recipient address syntax in the queue"))?;
    let routed = route::route(config, ours, &rcpt)
        .map_err(|_| Reply::new(550, "5.4.4", "No route to the recipient's domain"))?;
    let mx = routed.route(config).is_some_and(Route::is_mx);
    Ok(if mx {
        DestKey::Mx {
            route: routed.pattern,
            domain: routed.domain,
        }
    } else {
        DestKey::Route(routed.pattern)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_parameters() {
        assert_eq!(notify::to_param(0), None);
        assert_eq!(notify::to_param(notify::NEVER), Some("NEVER".into()));
        assert_eq!(
            notify::to_param(notify::SUCCESS | notify::DELAY),
            Some("SUCCESS,DELAY".into())
        );
    }
}
