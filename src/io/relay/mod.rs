//! The queue manager: routes queued messages to next hops, runs deliveries with
//! connection reuse and per-destination concurrency, and retries on a back-off schedule.
//! **Invariant:** it decides nothing the queue core decides, and carries out what it
//! decides with every file operation on the blocking pool.
//!
//! Its decisions are made by [`crate::proto::queue::core::QueueCore`], which does no I/O; [`Scheduler`] is the
//! layer that carries them out: connections, DNS, reports and every file operation (on
//! the blocking pool). The spool on disk is the truth the picture is rebuilt from at
//! start-up.

pub mod callout;
pub mod connection;
pub mod ops;
mod pump;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::Timer;
use smol::LocalExecutor;
use smol::channel::{Receiver, Sender, bounded, unbounded};
use smol::future::FutureExt as _;

use crate::io::clock::unix_micros_now;
use crate::io::queue::{
    CONTENT_EXT, GroupCommit, JOURNAL_MESSAGE_MAX, Journal, Pending, Spool, Unread, delete_segment,
};
use crate::io::resolver::{MxAnswer, Resolver};
use crate::io::secrets::SealKey;
use crate::io::tls::setup::GatewayTls;
use crate::proto::config::TlsUse;
use crate::proto::config::{Config, RelayHost, Route, ServiceName};
use crate::proto::dns::{DnsError, Name};
use crate::proto::logtext::{Escaped, NamedRelay};
use crate::proto::queue::core::{
    Action, ContentRef, DestKey, Hop, Job, QueueCore, Time, Unreachable,
};
use crate::proto::queue::core::{
    Backing, MAX_ADDRESSES_PER_ATTEMPT, MxHost, hosts_before_ourselves,
};
use crate::proto::queue::dsn::{Report, ReportKind};
use crate::proto::queue::{Envelope, Origin, QueueId, RcptStatus, Recipient, Recovered};
use crate::proto::sasl::client::{CLIENT_NONCE_RANDOM, ClientCredentials, ClientNonce};
use crate::proto::smtp::address::Domain;
use crate::proto::smtp::client::{ClientAuth, ClientConfig, TlsPolicy};
use crate::proto::smtp::reply::Reply;
use connection::{ConnectError, Connection, Content, OutgoingTls};
use ring::rand::{SecureRandom as _, SystemRandom};

/// How long an idle connection waits for more mail to the same next hop before QUIT.
pub const CONNECTION_REUSE_IDLE: Duration = Duration::from_secs(2);
/// The most of the original message a report returns with `RET=FULL`: 256 KiB (the
/// journal's message limit). A larger message is returned as its header section, which is
/// read up to this bound too; so a report never costs more memory than this.
pub const RETURNED_CONTENT_MAX: usize = JOURNAL_MESSAGE_MAX;

/// A channel that wakes whoever waits on it.
type Bell = (Sender<()>, Receiver<()>);

/// A file operation of the queue manager, run in order on the blocking pool.
enum FileOp {
    Update(Envelope),
    Remove(QueueId),
    DeleteSegment(std::path::PathBuf),
    /// Read a parked message's envelope back for the core.
    Load(QueueId),
    /// Set or clear a parked message's hold in its envelope file.
    SetHeld(QueueId, bool),
}

/// The queue manager's layer: carries out what [`QueueCore`] decides. Shared as
/// `Rc<Scheduler>` on the single-threaded executor.
pub struct Scheduler {
    core: RefCell<QueueCore>,
    spool: Rc<Spool>,
    journal: Rc<RefCell<Journal>>,
    commit: Rc<GroupCommit>,
    resolver: RefCell<Option<Rc<Resolver>>>,
    tls: RefCell<Option<Rc<GatewayTls>>>,
    executor: Rc<LocalExecutor<'static>>,
    /// Per destination, the bell its idle connections wait on.
    bells: RefCell<HashMap<DestKey, Bell>>,
    /// Rung whenever the core's next deadline may have moved.
    timer_bell: Bell,
    /// File operations, carried out one after the other so they keep their order.
    file_ops: (Sender<FileOp>, Receiver<FileOp>),
    /// Where the passwords for next hops are, and their key; `None` until given.
    secrets: RefCell<Option<Rc<SecretStore>>>,
    /// The gateway is stopping: no connection opens and no transaction begins.
    stopping: Cell<bool>,
    /// Messages being sent right now.
    sending: Cell<usize>,
    /// File operations handed to the worker and not done yet.
    files_pending: Cell<usize>,
}

/// The state directory's secret store and the key it is sealed with.
pub struct SecretStore {
    pub state_dir: std::path::PathBuf,
    pub key: SealKey,
}

/// Counts one thing under way for as long as it lives (dropped too when its future is).
struct Counted<'a>(&'a Cell<usize>);

impl Counted<'_> {
    fn new(count: &Cell<usize>) -> Counted<'_> {
        count.set(count.get() + 1);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// The durable queue the scheduler works on: the spool's files, the journal, and the
/// group commit that makes both durable.
pub struct QueueStore {
    pub spool: Rc<Spool>,
    pub journal: Rc<RefCell<Journal>>,
    pub commit: Rc<GroupCommit>,
}

/// The queue manager's clock: the wall clock in microseconds.
pub(crate) fn now() -> Time {
    Time(unix_micros_now())
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
            core: RefCell::new(QueueCore::new(config, our_addresses)),
            spool,
            journal,
            commit,
            resolver: RefCell::new(resolver),
            tls: RefCell::new(tls),
            executor,
            bells: RefCell::new(HashMap::new()),
            timer_bell: bounded(1),
            file_ops: unbounded(),
            secrets: RefCell::new(None),
            stopping: Cell::new(false),
            sending: Cell::new(0),
            files_pending: Cell::new(0),
        })
    }

    /// Gives the store routes with `auth user` take their passwords from.
    pub fn set_secrets(&self, store: SecretStore) {
        *self.secrets.borrow_mut() = Some(Rc::new(store));
    }

    /// The login for `route`, read from the secret store on the blocking pool (so a
    /// `drawbridge secret set` applies from the next connection on); `None` when the
    /// route logs in nowhere, a deferral when its password is missing.
    async fn login(&self, route: &Route) -> Result<Option<(ClientCredentials, bool)>, Reply> {
        let Some(user) = route.auth_user.clone() else {
            return Ok(None);
        };
        let missing = |why: String| {
            log::warn!(target: "smtp", "no password to log in as {}: {why}", Escaped(&user));
            Reply::new(
                454,
                "4.7.0",
                format!("No password to log in to the next hop as {user}: {why}"),
            )
        };
        let Some(store) = self.secrets.borrow().clone() else {
            return Err(missing("the secret store is not open".into()));
        };
        let (name, dir, key) = (user.clone(), store.state_dir.clone(), store.key.clone());
        let password = smol::unblock(move || {
            crate::io::secrets::load(&dir, &key).map(|s| s.get(&name).map(str::to_string))
        })
        .await;
        match password {
            Ok(Some(password)) => Ok(Some((
                ClientCredentials::new(user.clone(), password),
                route.danger_auth_cleartext,
            ))),
            Ok(None) => Err(missing(format!(
                "none is stored (drawbridge secret set {user})"
            ))),
            Err(e) => Err(missing(e.to_string())),
        }
    }

    fn config(&self) -> Rc<Config> {
        self.core.borrow().config().clone()
    }

    /// Starts the retry timer and the file worker. Call once.
    pub fn start(self: &Rc<Self>) {
        self.executor.spawn(self.clone().retry_loop()).detach();
        self.executor.spawn(self.clone().file_worker()).detach();
    }

    /// Takes the messages recovered at start-up: those in files (as the scan found them,
    /// in id order, from [`Spool::open_unread`]: each is checked and its envelope read
    /// as the core takes it), and those in the journal. Returns how many messages it took.
    pub fn recover(self: &Rc<Self>, files: Vec<Unread>, journaled: Vec<Recovered>) -> usize {
        for r in &journaled {
            self.spool.observe_id(&r.env.id);
        }
        let spool = self.spool.clone();
        let envelopes = files.into_iter().filter_map(move |f| spool.take(f));
        let count = self.core.borrow_mut().recover(
            envelopes,
            journaled,
            now(),
            crate::io::notify::progress,
        );
        self.run_actions();
        count
    }

    /// Takes a message that was just committed, with its content when it is in memory.
    pub fn submit(self: &Rc<Self>, env: Envelope, content: Option<Rc<[u8]>>, backing: Backing) {
        self.core.borrow_mut().submit(env, content, backing, now());
        self.run_actions();
    }

    /// Replaces the configuration: later decisions use the new routes, limits and retry
    /// schedule, and messages waiting for a connection are routed again under the new
    /// routes (see [`QueueCore::reconfigure`]). Connections opened under the old
    /// configuration finish their transaction and close. Nothing queued is lost.
    pub fn reconfigure(
        self: &Rc<Self>,
        config: Rc<Config>,
        our_addresses: Rc<[IpAddr]>,
        resolver: Option<Rc<Resolver>>,
        tls: Option<Rc<GatewayTls>>,
    ) {
        *self.resolver.borrow_mut() = resolver;
        *self.tls.borrow_mut() = tls;
        self.core
            .borrow_mut()
            .reconfigure(config, our_addresses, now());
        self.run_actions();
    }

    /// The gateway is stopping: transactions under way finish, no other begins, and idle
    /// connections say QUIT. What is not delivered stays queued for the next start.
    pub fn stop(&self) {
        self.stopping.set(true);
        for bell in self.bells.borrow().values() {
            let _ = bell.0.try_send(());
        }
    }

    /// Messages being sent to next hops right now.
    pub fn sending(&self) -> usize {
        self.sending.get()
    }

    /// Writes, reads and removals of queue files asked for and not done yet: a stop
    /// waits for them (a hold, a delivery's outcome, a removal would be lost with them).
    pub fn files_pending(&self) -> usize {
        self.files_pending.get()
    }

    /// Number of messages in the queue manager's picture (active, deferred or held).
    pub fn len(&self) -> usize {
        self.core.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Carries out what the core decided.
    fn run_actions(self: &Rc<Self>) {
        loop {
            let Some(action) = self.core.borrow_mut().poll_action() else {
                break;
            };
            match action {
                // Stopping, no connection opens: the message waits for the next start.
                Action::Open(_) if self.stopping.get() => {}
                Action::Open(dest) => {
                    self.executor.spawn(self.clone().worker(dest)).detach();
                }
                Action::Ring(dest, n) => {
                    let bell = self.bell(&dest);
                    for _ in 0..n {
                        let _ = bell.0.try_send(());
                    }
                }
                Action::Update(env) => self.file_op(FileOp::Update(env)),
                Action::Remove {
                    id,
                    backing: Backing::File,
                } => self.file_op(FileOp::Remove(id)),
                Action::Remove {
                    id,
                    backing: Backing::Journal(segment),
                } => {
                    // The `Done` record goes in place, in order with the sessions'
                    // appends; an emptied segment is deleted on the blocking pool.
                    match self.journal.borrow_mut().done_keeping_file(&id, segment) {
                        Ok(Some(path)) => self.file_op(FileOp::DeleteSegment(path)),
                        Ok(None) => {}
                        Err(e) => {
                            log::error!(target: "qmgr", "{id}: cannot mark the journal record done: {e}")
                        }
                    }
                }
                Action::MoveToFile {
                    env,
                    segment,
                    content,
                } => {
                    self.executor
                        .spawn(self.clone().move_to_file(env, segment, content))
                        .detach();
                }
                Action::Report { id, reports } => {
                    self.executor
                        .spawn(self.clone().report(id, reports))
                        .detach();
                }
                Action::Load(id) => self.file_op(FileOp::Load(id)),
                Action::SetHeld { id, held } => self.file_op(FileOp::SetHeld(id, held)),
            }
        }
        let _ = self.timer_bell.0.try_send(());
    }

    fn bell(&self, dest: &DestKey) -> Bell {
        self.bells
            .borrow_mut()
            .entry(dest.clone())
            .or_insert_with(unbounded)
            .clone()
    }

    fn file_op(&self, op: FileOp) {
        // The receiver lives as long as the scheduler.
        if self.file_ops.0.try_send(op).is_ok() {
            self.files_pending.set(self.files_pending.get() + 1);
        }
    }

    /// Runs the file operations in order, each on the blocking pool.
    async fn file_worker(self: Rc<Self>) {
        let files = self.spool.files();
        while let Ok(op) = self.file_ops.1.recv().await {
            let files = files.clone();
            match op {
                FileOp::Update(env) => {
                    let id = env.id.clone();
                    let written = smol::unblock(move || files.update(&env)).await;
                    if let Err(e) = &written {
                        log::error!(target: "qmgr", "{id}: cannot update queue file: {e}; the message stays whole in memory until it can be");
                    }
                    self.core.borrow_mut().updated(&id, written.is_ok(), now());
                    self.run_actions();
                }
                FileOp::Remove(id) => {
                    let doomed = id.clone();
                    if let Err(e) = smol::unblock(move || files.remove(&doomed)).await {
                        log::error!(target: "qmgr", "{id}: cannot remove from the queue: {e}");
                    }
                }
                FileOp::DeleteSegment(path) => {
                    smol::unblock(move || delete_segment(&path)).await;
                }
                FileOp::Load(id) => {
                    let read = id.clone();
                    let env = smol::unblock(move || files.load(&read))
                        .await
                        .map_err(|e| e.to_string());
                    self.core.borrow_mut().loaded(&id, env, now());
                    self.run_actions();
                }
                FileOp::SetHeld(id, held) => {
                    let held_id = id.clone();
                    let set = smol::unblock(move || {
                        let mut env = files.load(&held_id)?;
                        env.held = held;
                        files.update(&env)
                    })
                    .await;
                    if let Err(e) = set {
                        log::error!(target: "qmgr", "{id}: cannot write the hold to the queue file: {e}");
                    }
                }
            }
            self.files_pending
                .set(self.files_pending.get().saturating_sub(1));
        }
    }

    /// Wakes deferred messages when their time comes.
    async fn retry_loop(self: Rc<Self>) {
        loop {
            let next = self.core.borrow().poll_timeout();
            let wait = match next {
                Some(t) => Timer::after(t.since(now())),
                None => Timer::never(),
            };
            let bell = self.timer_bell.1.clone();
            async {
                let _ = bell.recv().await;
            }
            .or(async {
                wait.await;
            })
            .await;
            self.core.borrow_mut().handle_timeout(now());
            self.run_actions();
            // Our own ring: the next deadline is read afresh just below.
            let _ = self.timer_bell.1.try_recv();
        }
    }

    /// One connection's life: take jobs for `dest` until there are none for a while, or
    /// the configuration it was opened under is replaced.
    async fn worker(self: Rc<Self>, dest: DestKey) {
        let mut conn: Option<Open> = None;
        let mut idle_expired = false;
        loop {
            if self.stopping.get() {
                break;
            }
            let epoch = conn.as_ref().map(|o| o.epoch);
            let Some(job) = self.core.borrow_mut().take_job(&dest, epoch) else {
                let stale = epoch.is_some_and(|e| e != self.core.borrow().epoch());
                if conn.is_none() || idle_expired || stale {
                    break;
                }
                self.core.borrow_mut().worker_idle(&dest);
                let bell = self.bell(&dest).1;
                let rung = async { bell.recv().await.is_ok() }
                    .or(async {
                        Timer::after(CONNECTION_REUSE_IDLE).await;
                        false
                    })
                    .await;
                self.core.borrow_mut().worker_wakes(&dest);
                idle_expired = !rung;
                continue;
            };
            idle_expired = false;
            let mut setup = Duration::ZERO;
            if !conn.as_ref().is_some_and(|o| o.conn.is_usable()) {
                let epoch = self.core.borrow().epoch();
                let started = Instant::now();
                match self.connect(&dest).await {
                    Ok((c, name)) => {
                        setup = started.elapsed();
                        conn = Some(Open {
                            conn: c,
                            epoch,
                            name,
                            uses: 0,
                        });
                    }
                    Err(why) => {
                        self.core
                            .borrow_mut()
                            .destination_failed(&dest, job, &why, now());
                        self.run_actions();
                        break;
                    }
                }
            }
            // The branch above leaves a connection in place or breaks out.
            let Some(open) = conn.as_mut() else { break };
            let transaction = self.core.borrow().transaction(&job);
            let (msg, content) = match transaction {
                Ok(t) => t,
                Err(reply) => {
                    self.record(&job, None, &vec![reply; job.rcpts.len()]);
                    continue;
                }
            };
            let content = match content {
                ContentRef::Memory(bytes) => Content::Memory(bytes),
                ContentRef::File => match self.spool.files().path(&job.id, CONTENT_EXT) {
                    Ok(path) => Content::File(path),
                    Err(e) => {
                        log::error!(target: "qmgr", "{}: {e}", job.id);
                        let reply = Reply::new(451, "4.3.0", "Queue file read error");
                        self.record(&job, None, &vec![reply; job.rcpts.len()]);
                        continue;
                    }
                },
            };
            let sending = Instant::now();
            let replies = {
                let _counted = Counted::new(&self.sending);
                open.conn.send(msg, &content).await
            };
            open.uses += 1;
            let hop = Hop {
                name: open.name.clone(),
                addr: open.conn.peer(),
                conn_use: open.uses,
                setup,
                transmit: sending.elapsed(),
            };
            self.record(&job, Some(&hop), &replies);
            if !open.conn.is_usable() {
                conn = None;
            }
        }
        self.core.borrow_mut().worker_gone(&dest);
        self.run_actions();
        if let Some(open) = conn {
            open.conn.quit().await;
        }
    }

    fn record(self: &Rc<Self>, job: &Job, hop: Option<&Hop>, replies: &[Reply]) {
        self.core.borrow_mut().record(job, hop, replies, now());
        self.run_actions();
    }

    /// Opens a connection to the destination: a relay list's hosts in round-robin order,
    /// or a domain's MX hosts in preference order, passing over hosts that failed recently
    /// and failing over on error or timeout. The error is the reply every job waiting for
    /// this destination gets: temporary, or permanent where DNS says the domain cannot
    /// take mail. The connection comes with the name of the host it reached.
    async fn connect(&self, dest: &DestKey) -> Result<(Connection, String), Unreachable> {
        let config = self.config();
        let Some(route) = config.routes.get(dest.route()) else {
            return Err(Reply::new(451, "4.4.0", "Route removed from the configuration").into());
        };
        let resolver = self.resolver.borrow().clone();
        let resolved = match dest {
            DestKey::Route(_) => Some(relay_addresses(resolver.as_deref(), route.hosts()).await?),
            DestKey::Mx { domain, .. } => Some(self.mx_hosts(domain, route.mx_port).await?),
        };
        let hosts = self.core.borrow_mut().hosts_to_try(dest, resolved, now())?;
        // The destination channel decides how TLS is used (SPEC §3).
        let channel = config.channel(route.channel.as_deref());
        let use_tls = channel.tls_client();
        let login = self.login(route).await?;
        // Without TLS on this gateway (its setup failed at start), `maytlsclient` sends
        // in clear, as the sessions stop offering STARTTLS; `musttlsclient` still waits.
        let have_tls = self.tls.borrow().is_some();
        let base = ClientConfig {
            helo_name: config.system.host_name.clone(),
            tls: match use_tls {
                TlsUse::Never => TlsPolicy::Never,
                TlsUse::May if !have_tls => TlsPolicy::Never,
                TlsUse::May => TlsPolicy::Opportunistic,
                TlsUse::Must => TlsPolicy::Required,
            },
            ..ClientConfig::default()
        };
        // Each connection that logs in gets its own SCRAM nonce.
        let config_for = |tls: TlsPolicy| -> Result<Rc<ClientConfig>, Unreachable> {
            Ok(Rc::new(ClientConfig {
                auth: match &login {
                    Some((credentials, allow_cleartext)) => Some(ClientAuth {
                        credentials: credentials.clone(),
                        nonce: fresh_nonce()?,
                        allow_cleartext: *allow_cleartext,
                    }),
                    None => None,
                },
                tls,
                ..base.clone()
            }))
        };
        let mut last = Reply::new(451, "4.4.1", "no host could be reached");
        for (host, server_name) in hosts {
            let tls = self.tls.borrow().clone().map(|tls| OutgoingTls {
                tls: tls.clone(),
                server_name: server_name.clone(),
                verify: use_tls == TlsUse::Must && !route.danger_tls_no_verify,
            });
            let mut opened =
                Connection::open(host, route.failover_timeout, config_for(base.tls)?, tls).await;
            if let Err(ConnectError::TlsHandshake(_)) = &opened
                && base.tls == TlsPolicy::Opportunistic
            {
                // TLS was only ever opportunistic here: a next hop whose TLS is broken
                // gets the mail in clear on a new connection, as it would had it not
                // offered STARTTLS, rather than never.
                log::info!(target: "smtp", "{}: TLS is opportunistic: connecting again without it",
                    NamedRelay(&server_name, host));
                opened = Connection::open(
                    host,
                    route.failover_timeout,
                    config_for(TlsPolicy::Never)?,
                    None,
                )
                .await;
            }
            match opened {
                Ok(c) => return Ok((c, server_name)),
                Err(e) => {
                    let relay = NamedRelay(&server_name, host);
                    last = connect_failure(&relay, &e);
                    log::info!(target: "smtp", "connect to {relay}: {}", Escaped(&e.to_string()));
                    self.core.borrow_mut().host_failed(dest, host, &last, now());
                }
            }
        }
        Err(last.into())
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
            // The implicit MX: the domain itself, as if of preference 0.
            Ok(MxAnswer::NoMx) => vec![(0, name)],
            Ok(MxAnswer::Exchanges(list)) => list
                .into_iter()
                .map(|mx| (mx.preference, mx.exchange))
                .collect(),
            Err(e) => {
                log::info!(target: "smtp", "MX lookup for {}: {}", Escaped(domain), Escaped(&e.to_string()));
                return Err(dns_reply(&e));
            }
        };
        let mut found = Vec::new();
        let mut last = None;
        for (preference, exchange) in exchanges {
            match resolver.lookup_ip(&exchange).await {
                Ok(addresses) => found.push(MxHost {
                    preference,
                    name: exchange.as_str().to_string(),
                    addresses,
                }),
                Err(e) => {
                    log::info!(target: "smtp", "address lookup for {} (MX of {}): {}",
                        Escaped(exchange.as_str()), Escaped(domain), Escaped(&e.to_string()));
                    last = Some(e);
                }
            }
        }
        let (config, ours) = {
            let core = self.core.borrow();
            (core.config().clone(), core.ours())
        };
        // Where our own services take mail on the port delivery uses: a specific listening
        // address, or any of ours (loopback included) under a wildcard one.
        let listens_at = |ip: IpAddr| {
            ServiceName::ALL.iter().any(|&s| {
                let service = config.service(s);
                service.listen.iter().chain(&service.tls_listen).any(|l| {
                    l.port() == port
                        && (l.ip() == ip
                            || (l.ip().is_unspecified()
                                && (ip.is_loopback() || ours.contains(&ip))))
                })
            })
        };
        let Some(found) = hosts_before_ourselves(found, &config.system.host_name, listens_at)
        else {
            return Err(Reply::new(
                554,
                "5.4.6",
                format!("mail for {domain} loops back to myself"),
            ));
        };
        let hosts: Vec<(SocketAddr, String)> = found
            .into_iter()
            .flat_map(|h| {
                h.addresses
                    .into_iter()
                    .map(move |ip| (SocketAddr::new(ip, port), h.name.clone()))
            })
            .take(MAX_ADDRESSES_PER_ATTEMPT)
            .collect();
        if hosts.is_empty() {
            let reply = match last {
                Some(e) if !e.is_permanent() => dns_reply(&e),
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

    /// A journal message that has to wait: its files are written on the blocking pool and
    /// made durable; only then is it served from them and its journal record retired.
    async fn move_to_file(self: Rc<Self>, env: Envelope, segment: u64, content: Rc<[u8]>) {
        let id = env.id.clone();
        let files = self.spool.files();
        let bytes = content.to_vec();
        drop(content);
        let written = smol::unblock(move || files.write_message(&env, &bytes)).await;
        let ok = match written {
            Ok(finished) => match self.commit.commit(Pending::File(finished)).await {
                Ok(()) => true,
                Err(e) => {
                    log::error!(target: "qmgr", "{id}: queue file sync failed, keeping the journal copy: {e}");
                    false
                }
            },
            Err(e) => {
                // It stays in the journal and in memory; the next change tries again.
                log::warn!(target: "qmgr", "{id}: cannot move to a queue file: {e}");
                false
            }
        };
        self.core.borrow_mut().moved(&id, segment, ok, now());
        self.run_actions();
    }

    /// Builds the reports a message owes its sender, makes each durable and hands it to
    /// delivery like any other message; then the message goes on as the core planned.
    async fn report(self: Rc<Self>, id: QueueId, reports: Vec<(ReportKind, Vec<usize>)>) {
        let mut unqueued = Vec::new();
        let (env, memory) = {
            let core = self.core.borrow();
            (core.envelope(&id).cloned(), core.memory(&id))
        };
        if let Some(env) = env {
            let (content, whole) = match memory {
                Some(bytes) => {
                    let n = bytes.len().min(RETURNED_CONTENT_MAX);
                    (bytes[..n].to_vec(), n == bytes.len())
                }
                None => {
                    let files = self.spool.files();
                    let read_id = id.clone();
                    match smol::unblock(move || files.read_prefix(&read_id, RETURNED_CONTENT_MAX))
                        .await
                    {
                        Ok(read) => read,
                        Err(e) => {
                            log::error!(target: "qmgr", "{id}: cannot read the message for its report: {e}");
                            (Vec::new(), false)
                        }
                    }
                }
            };
            let config = self.config();
            let built = self.build_reports(&env, &reports, &config, &content, whole);
            for ((notice, bytes), report) in built.into_iter().zip(&reports) {
                if !self.queue_report(notice, bytes).await {
                    unqueued.push(report.clone());
                }
            }
        }
        self.core.borrow_mut().reports_queued(&id, &unqueued, now());
        self.run_actions();
    }

    /// The DSN messages for `reports`, each with its envelope: from `<>` to the sender.
    fn build_reports(
        &self,
        env: &Envelope,
        reports: &[(ReportKind, Vec<usize>)],
        config: &Config,
        content: &[u8],
        whole: bool,
    ) -> Vec<(Envelope, Vec<u8>)> {
        let now = now().secs();
        let mut out = Vec::new();
        for (kind, rcpts) in reports {
            let micros = unix_micros_now();
            let report = Report {
                env,
                rcpts: rcpts.clone(),
                kind: *kind,
                content,
                content_complete: whole,
                reporting_mta: &config.system.host_name,
                now_unix: now,
                boundary_seed: micros ^ env.id.value().unwrap_or(0),
                remote_mta: vec![None; rcpts.len()],
                retry_until_unix: (*kind == ReportKind::Delay).then(|| {
                    env.arrived
                        .saturating_add(config.queue.max_lifetime.as_secs())
                }),
            };
            let built = crate::proto::queue::dsn::build(&report);
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
            log::info!(target: "bounce", "{}: sender {what} notification: {}", env.id, notice.id);
            out.push((notice, built.bytes));
        }
        out
    }

    /// Makes a report durable and hands it to delivery like any other message: in the
    /// journal when it is small (appended in place, as the sessions append), otherwise in
    /// its own files written on the blocking pool. `false` when it could not be.
    async fn queue_report(self: &Rc<Self>, env: Envelope, bytes: Vec<u8>) -> bool {
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
            let files = self.spool.files();
            let (e, b) = (env.clone(), bytes.clone());
            smol::unblock(move || files.write_message(&e, &b))
                .await
                .map(|finished| (Pending::File(finished), Backing::File))
        };
        let result = match written {
            Ok((pending, backing)) => self.commit.commit(pending).await.map(|()| backing),
            Err(e) => Err(e),
        };
        match result {
            Ok(Backing::Journal(segment)) => {
                self.core.borrow_mut().submit(
                    env,
                    Some(bytes.into()),
                    Backing::Journal(segment),
                    now(),
                );
                self.run_actions();
            }
            Ok(Backing::File) => {
                self.core
                    .borrow_mut()
                    .submit(env, None, Backing::File, now());
                self.run_actions();
            }
            Err(e) => {
                log::error!(target: "bounce", "{id}: cannot queue the notification: {e}");
                return false;
            }
        }
        true
    }
}

/// A SCRAM client nonce from the system's random numbers.
fn fresh_nonce() -> Result<ClientNonce, Reply> {
    let mut random = [0u8; CLIENT_NONCE_RANDOM];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| Reply::new(451, "4.3.0", "No randomness available for AUTH"))?;
    Ok(ClientNonce::from_random(&random))
}

/// The connection a worker holds: the configuration epoch it was opened under, the name
/// of the host it reached, and how many transactions it has carried.
struct Open {
    conn: Connection,
    epoch: u64,
    name: String,
    uses: u32,
}

/// The reply a host's failure leaves its waiting jobs: a temporary reply the host gave
/// (such as `454 4.7.5` when TLS is required and cannot be had) is kept; anything else is
/// a temporary `451 4.4.1`: one bad host does not bounce mail.
fn connect_failure(host: &NamedRelay, e: &ConnectError) -> Reply {
    match e {
        ConnectError::Refused(Some(r)) | ConnectError::TlsHandshake(Some(r))
            if r.is_transient() =>
        {
            Reply {
                code: r.code,
                enhanced: r.enhanced,
                lines: vec![format!("{} (at {host})", r.lines.join(" "))],
            }
        }
        other => Reply::new(451, "4.4.1", format!("connect to {host}: {other}")),
    }
}

/// A relay list's or smarthost's hosts in their configured order, each with the name its
/// certificate must carry: an address literal as it is, a host name as its IPv4 then
/// IPv6 addresses, looked up through `resolver` (whose cache keeps them for their TTL).
/// A name that does not resolve is logged and left out; when nothing is left, the error
/// is a temporary reply saying why (RFC 3463 X.4.4 no address, X.4.3 DNS failure): a
/// configured next hop that DNS cannot find is a fault to fix, never a bounce.
pub async fn relay_addresses(
    resolver: Option<&Resolver>,
    hosts: &[RelayHost],
) -> Result<Vec<(SocketAddr, String)>, Reply> {
    let mut out = Vec::new();
    let mut last = None;
    for host in hosts {
        let (name, port) = match host {
            RelayHost::Address(a) => {
                out.push((*a, a.ip().to_string()));
                continue;
            }
            RelayHost::Name { name, port } => (name, *port),
        };
        let looked_up = match (resolver, Name::parse(name)) {
            (None, _) => Err(Reply::new(451, "4.4.3", "No DNS resolvers configured")),
            // The configuration checked the name; a failure here is our own bug.
            (_, Err(_)) => Err(Reply::new(
                451,
                "4.4.4",
                format!("Bad relay host name {name}"),
            )),
            (Some(resolver), Ok(parsed)) => match resolver.lookup_ip(&parsed).await {
                Ok(ips) if !ips.is_empty() => Ok(ips),
                Ok(_) | Err(DnsError::NxDomain) => Err(Reply::new(
                    451,
                    "4.4.4",
                    format!("No address found for relay host {name}"),
                )),
                Err(e) => Err(Reply::new(
                    451,
                    "4.4.3",
                    format!("Temporary DNS failure for relay host {name}: {e}"),
                )),
            },
        };
        match looked_up {
            Ok(ips) => out.extend(
                ips.into_iter()
                    .map(|ip| (SocketAddr::new(ip, port), name.clone())),
            ),
            Err(reply) => {
                log::info!(target: "smtp", "address lookup for relay host {name}: {}", reply.one_line());
                last = Some(reply);
            }
        }
    }
    match last {
        Some(reply) if out.is_empty() => Err(reply),
        _ => Ok(out),
    }
}

/// The reply a delivery attempt records for a failed lookup (RFC 3463: X.1.2 bad
/// destination system address, X.4.3 directory server failure): only NXDOMAIN is final.
fn dns_reply(e: &DnsError) -> Reply {
    match e {
        DnsError::NxDomain => Reply::new(550, "5.1.2", "Host or domain name not found"),
        other => Reply::new(451, "4.4.3", format!("Temporary DNS failure: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::dns::{DecodeError, Rcode};

    #[test]
    fn only_nxdomain_fails_a_lookup_for_good() {
        assert_eq!(dns_reply(&DnsError::NxDomain).code, 550);
        for temporary in [
            DnsError::ServerFailure(Rcode::ServFail),
            DnsError::Timeout,
            DnsError::Malformed(DecodeError::TruncatedHeader),
            DnsError::Network,
            DnsError::NoServers,
            DnsError::AliasLoop,
        ] {
            let reply = dns_reply(&temporary);
            assert_eq!(reply.code, 451);
            assert!(reply.is_transient());
        }
    }
}
