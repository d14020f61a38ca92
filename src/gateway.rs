//! The running gateway: one executor, the spool, the queue manager, the listeners, and
//! the configuration engine whose commits it applies live.
//!
//! Everything derived from one committed configuration is a [`Running`] snapshot.
//! A session takes the snapshot current when it starts and keeps it to its end; a
//! commit makes a new snapshot for the sessions after it, rebinds the listeners whose
//! addresses changed (before the commit is written, so a bind that fails refuses the
//! commit), and hands the new routes to the queue manager.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use smol::LocalExecutor;
use smol::channel::{Receiver, Sender};

use crate::io::clock::unix_now;
use crate::io::config::engine::{
    self, Commit, CommitError, CommitRequest, Engine, Origin, PendingCommit, TokenSeal,
};
use crate::io::config::store::Scan;
use crate::io::net::context::{Context, Queue, Running};
use crate::io::net::listener::{self, Counts};
use crate::io::queue::{GroupCommit, Journal, Spool};
use crate::io::relay::{QueueStore, Scheduler};
use crate::io::token::Token;
use crate::proto::calendar::mailq_stamp;
use crate::proto::config::Candidate;
use crate::proto::config::{Config, ServiceName};

/// The length of a minute for `commit confirmed`, in seconds.
pub const MINUTE: u64 = 60;
/// Tests shorten `commit confirmed`'s minute to this many seconds through the
/// environment; an appliance never sets it.
pub const TEST_MINUTE_ENV: &str = "DRAWBRIDGE_TEST_MINUTE";

/// One listening socket: which service, where, and whether TLS comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ListenKey {
    service: ServiceName,
    addr: SocketAddr,
    implicit_tls: bool,
}

impl std::fmt::Display for ListenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.service, self.addr)?;
        if self.implicit_tls {
            f.write_str(" (implicit TLS)")?;
        }
        Ok(())
    }
}

fn listen_keys(config: &Config) -> Vec<ListenKey> {
    let mut out = Vec::new();
    for service in ServiceName::ALL {
        let s = config.service(service);
        for (addrs, implicit_tls) in [(&s.listen, false), (&s.tls_listen, true)] {
            out.extend(addrs.iter().map(|addr| ListenKey {
                service,
                addr: *addr,
                implicit_tls,
            }));
        }
    }
    out
}

/// Listeners bound for a commit, not yet serving.
struct Plan {
    added: Vec<(ListenKey, Async<TcpListener>)>,
    removed: Vec<ListenKey>,
}

/// One console session, for `show users`.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub id: u64,
    pub transport: String,
    pub user: Option<String>,
    pub since: u64,
    /// Tells the session its login was taken away, and why.
    revoke: Sender<String>,
}

/// What the console sessions share: failed logins in a row (the wait after a failure
/// grows for every session together) and who is connected.
#[derive(Default)]
pub struct Consoles {
    failures: RefCell<LoginFailures>,
    sessions: RefCell<Vec<SessionInfo>>,
    next: Cell<u64>,
}

impl Consoles {
    /// A session opens on `transport`; its id, and where it hears that its login was
    /// taken away (see [`Consoles::revoke`]).
    pub fn register(&self, transport: &str, user: Option<&str>) -> (u64, Receiver<String>) {
        let id = self.next.get() + 1;
        self.next.set(id);
        let (revoke, revoked) = smol::channel::bounded(1);
        self.sessions.borrow_mut().push(SessionInfo {
            id,
            transport: transport.to_string(),
            user: user.map(str::to_string),
            since: unix_now(),
            revoke,
        });
        (id, revoked)
    }

    /// Logs out every open session of `user`, whose login is gone (`why`: "deleted by
    /// root"); the number of sessions told.
    pub fn revoke(&self, user: &str, why: &str) -> usize {
        self.sessions
            .borrow()
            .iter()
            .filter(|s| s.user.as_deref() == Some(user))
            .filter(|s| s.revoke.try_send(why.to_string()).is_ok())
            .count()
    }

    pub fn unregister(&self, id: u64) {
        self.sessions.borrow_mut().retain(|s| s.id != id);
    }

    pub fn logged_in(&self, id: u64, user: &str) {
        if let Some(s) = self.sessions.borrow_mut().iter_mut().find(|s| s.id == id)
            && s.user.is_none()
        {
            s.user = Some(user.to_string());
        }
    }

    pub fn transport(&self, id: u64) -> String {
        self.sessions
            .borrow()
            .iter()
            .find(|s| s.id == id)
            .map_or_else(String::new, |s| s.transport.clone())
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions.borrow().clone()
    }

    /// A failed login for `user`; the failures in a row so far.
    pub fn login_failed(&self, user: &str, now: Instant) -> u32 {
        self.failures.borrow_mut().failed(user, now)
    }

    pub fn login_succeeded(&self, user: &str) {
        self.failures.borrow_mut().succeeded(user);
    }
}

/// Failed console logins in a row, for every console together: each failure doubles
/// the wait before the next try.
#[derive(Default)]
pub struct LoginFailures {
    count: u32,
    /// The name every failure of the row was for; `None` once they were for several.
    only: Option<String>,
    last: Option<Instant>,
}

/// A row of failures older than this is forgotten: the next failure starts a new one.
pub const LOGIN_FAILURES_FORGOTTEN: Duration = Duration::from_secs(15 * 60);

impl LoginFailures {
    pub fn failed(&mut self, user: &str, now: Instant) -> u32 {
        let stale = self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) >= LOGIN_FAILURES_FORGOTTEN);
        if stale || self.count == 0 {
            *self = LoginFailures::default();
            self.only = Some(user.to_string());
        } else if self.only.as_deref() != Some(user) {
            self.only = None;
        }
        self.count = self.count.saturating_add(1);
        self.last = Some(now);
        self.count
    }

    /// A login succeeded: the row ends only when every failure of it was this login's
    /// own (a mistyped password). A success of another login proves nothing about the
    /// names guessed, or guessing one password between logins of one's own would wait a
    /// second each time.
    pub fn succeeded(&mut self, user: &str) {
        if self.only.as_deref() == Some(user) {
            *self = LoginFailures::default();
        }
    }
}

/// How long after a failed rollback of an unconfirmed commit it is tried again.
const CONFIRM_RETRY: Duration = Duration::from_secs(60);

/// How long past the sessions' shutdown deadline a drain waits for their 421s to go out.
const DRAIN_FLUSH: Duration = Duration::from_millis(500);
/// How often a drain looks whether the sessions have ended.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// What every task of the running gateway shares.
pub struct Gateway {
    /// What the listeners and sessions are given: the running snapshot, the executor,
    /// the queue, the users and the throttle.
    pub net: Rc<Context>,
    engine: RefCell<Engine>,
    token: Arc<dyn Token>,
    /// The state directory: the user database and the stores live there.
    pub state_dir: PathBuf,
    /// The accept loops, by listening socket.
    listeners: RefCell<BTreeMap<ListenKey, smol::Task<()>>>,
    /// Open connections per service, shared by its listeners.
    counts: [Rc<RefCell<Counts>>; 2],
    /// The timer of a pending `commit confirmed`.
    confirm_timer: RefCell<Option<smol::Task<()>>>,
    /// Why the gateway is to stop, once it is.
    stop: smol::channel::Sender<String>,
    /// What the console sessions share.
    pub consoles: Consoles,
}

impl Gateway {
    /// The snapshot new sessions start with.
    pub fn running(&self) -> Rc<Running> {
        self.net.running()
    }

    /// The running configuration.
    pub fn config(&self) -> Rc<Config> {
        self.net.config()
    }

    /// The crypto token, open and logged in.
    pub fn token(&self) -> Arc<dyn Token> {
        self.token.clone()
    }

    /// The listening sockets, as `inbound 127.0.0.1:2525`.
    pub fn listening(&self) -> Vec<String> {
        self.listeners
            .borrow()
            .keys()
            .map(ToString::to_string)
            .collect()
    }

    /// Open connections of each service: in all, and by client address.
    pub fn connections(&self) -> [(u32, Vec<(IpAddr, u32)>); 2] {
        self.counts.each_ref().map(|c| {
            let c = c.borrow();
            (c.total(), c.per_ip())
        })
    }

    /// The running commit.
    pub fn running_commit(&self) -> Commit {
        self.engine.borrow().commit().clone()
    }

    /// A candidate for an editing session: the running configuration.
    pub fn candidate(&self) -> Candidate {
        self.engine.borrow().candidate()
    }

    /// `commit check`: the engine's checks, and that the certificates services name are
    /// stored.
    pub fn check(&self, candidate: &Candidate) -> Result<(), CommitError> {
        let stored =
            crate::io::tls::store::names_in(&self.state_dir.join(crate::io::tls::setup::STORE_DIR))
                .unwrap_or_default();
        let mut problems = crate::proto::config::check::check(&candidate.config);
        problems.extend(crate::proto::config::check::certificates(
            &candidate.config,
            &stored,
        ));
        if !problems.is_empty() {
            return Err(CommitError::Check(problems));
        }
        self.engine.borrow().check(candidate)
    }

    /// The slots, read and checked on the blocking pool.
    async fn scan(&self) -> Scan {
        let slots = self.engine.borrow().slots();
        smol::unblock(move || slots.scan()).await
    }

    /// The commits kept, newest first.
    pub async fn history(&self) -> Vec<Commit> {
        engine::history(&self.scan().await)
    }

    /// When a pending `commit confirmed` rolls back, and to which commit.
    pub fn pending_confirm(&self) -> Option<(u64, u64)> {
        self.engine.borrow().pending_confirm()
    }

    /// `rollback N` as a candidate.
    pub async fn rollback_candidate(&self, n: usize) -> Result<Candidate, CommitError> {
        let scan = self.scan().await;
        self.engine.borrow().rollback_in(&scan, n)
    }

    /// Commits `candidate` and applies it live (SPEC §8): the checks, then the new
    /// listeners are bound (a failure refuses the commit), then the commit is written
    /// durably, then new sessions and the queue manager get the new configuration.
    pub async fn commit(
        self: &Rc<Self>,
        candidate: &Candidate,
        request: &CommitRequest,
    ) -> Result<u64, CommitError> {
        self.check(candidate)?;
        let plan = self.plan(&candidate.config).await?;
        let pending = self
            .engine
            .borrow()
            .prepare_candidate(candidate, request, unix_now());
        let result = match pending {
            Ok(pending) => self.write_commit(pending).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(seq) => {
                self.activate(plan, request);
                Ok(seq)
            }
            Err(e) => {
                self.abandon(plan).await;
                Err(e)
            }
        }
    }

    /// Writes a prepared commit on the blocking pool (the store's lock, the token's HMACs
    /// and the disk's sync are no work for the executor), then takes it into the engine.
    async fn write_commit(&self, pending: PendingCommit) -> Result<u64, CommitError> {
        let written = smol::unblock(move || pending.write()).await?;
        Ok(self.engine.borrow_mut().written(written))
    }

    /// Confirms a pending `commit confirmed`.
    pub async fn confirm(self: &Rc<Self>, user: &str) -> Result<Option<u64>, CommitError> {
        let pending = self.engine.borrow().prepare_confirm(user, unix_now())?;
        let done = match pending {
            Some(pending) => Some(self.write_commit(pending).await?),
            None => None,
        };
        if let Some(seq) = done {
            log::info!(target: "config", "commit {seq}: confirmed by {user}");
            self.arm_confirm_timer();
        }
        Ok(done)
    }

    /// Binds the listeners `config` adds; the ones it moves are closed first (and bound
    /// again if their replacement cannot be).
    async fn plan(self: &Rc<Self>, config: &Config) -> Result<Plan, CommitError> {
        let wanted = listen_keys(config);
        let current: Vec<ListenKey> = self.listeners.borrow().keys().copied().collect();
        let removed: Vec<ListenKey> = current
            .iter()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        // An address that stays bound but changes hands must be let go first.
        let moving: Vec<ListenKey> = removed
            .iter()
            .filter(|old| wanted.iter().any(|w| w.addr == old.addr))
            .copied()
            .collect();
        for key in &moving {
            let task = self.listeners.borrow_mut().remove(key);
            if let Some(task) = task {
                task.cancel().await;
            }
        }
        let mut added = Vec::new();
        for key in wanted.iter().filter(|k| !current.contains(k)) {
            match listener::bind(key.addr) {
                Ok(l) => added.push((*key, l)),
                Err(e) => {
                    drop(added);
                    for key in &moving {
                        self.restart_listener(*key);
                    }
                    return Err(CommitError::Refused(format!(
                        "cannot listen on {} for {}: {e}",
                        key.addr, key.service
                    )));
                }
            }
        }
        Ok(Plan { added, removed })
    }

    /// A commit that failed after its listeners were bound: they go, the moved ones
    /// come back.
    async fn abandon(self: &Rc<Self>, plan: Plan) {
        drop(plan.added);
        let gone: Vec<ListenKey> = plan
            .removed
            .into_iter()
            .filter(|k| !self.listeners.borrow().contains_key(k))
            .collect();
        for key in gone {
            self.restart_listener(key);
        }
    }

    fn restart_listener(self: &Rc<Self>, key: ListenKey) {
        match listener::bind(key.addr) {
            Ok(l) => self.serve_listener(key, l),
            Err(e) => log::error!(target: "main", "cannot listen again on {key}: {e}"),
        }
    }

    /// A commit written: the new snapshot, listeners and routes take effect.
    fn activate(self: &Rc<Self>, plan: Plan, request: &CommitRequest) {
        let (config, commit) = {
            let engine = self.engine.borrow();
            (Rc::new(engine.running().clone()), engine.commit().clone())
        };
        self.swap(config, commit.sequence);
        for key in &plan.removed {
            if let Some(task) = self.listeners.borrow_mut().remove(key) {
                drop(task);
            }
            log::info!(target: "main", "{key}: no longer listening");
        }
        for (key, l) in plan.added {
            log::info!(target: "main", "{key}: listening");
            self.serve_listener(key, l);
        }
        let confirm = match request.confirm_minutes {
            Some(m) => format!(", to be confirmed within {m} minute(s)"),
            None => String::new(),
        };
        log::info!(target: "config", "commit {} by {}{}: applied{confirm}",
            commit.sequence, commit.meta.user,
            if commit.meta.comment.is_empty() { String::new() } else { format!(" ({})", commit.meta.comment) });
        self.arm_confirm_timer();
    }

    /// New sessions and the queue manager get `config`.
    fn swap(&self, config: Rc<Config>, commit: u64) {
        crate::io::log::configure(&config.system);
        let previous = self.running();
        let running = Rc::new(Running::build(
            config,
            commit,
            Some(&previous),
            &self.token,
            &self.state_dir,
        ));
        self.net.queue.scheduler.reconfigure(
            running.config.clone(),
            running.shared_addresses(),
            running.resolver.clone(),
            running.tls.clone(),
        );
        self.net.replace(running);
    }

    fn serve_listener(self: &Rc<Self>, key: ListenKey, l: Async<TcpListener>) {
        let task = self.net.executor.spawn(listener::accept_loop(
            self.net.clone(),
            key.service,
            l,
            self.counts[key.service as usize].clone(),
            key.implicit_tls,
        ));
        self.listeners.borrow_mut().insert(key, task);
    }

    /// (Re)arms the timer of a pending `commit confirmed`; disarms it when none is.
    fn arm_confirm_timer(self: &Rc<Self>) {
        let pending = self.pending_confirm();
        let timer = pending.map(|(deadline, back_to)| {
            let wait = Duration::from_secs(deadline.saturating_sub(unix_now()));
            log::info!(target: "config",
                "commit confirmed: unless confirmed by {} the configuration returns to commit {back_to}",
                mailq_stamp(deadline));
            self.expire_confirm_after(wait)
        });
        *self.confirm_timer.borrow_mut() = timer;
    }

    /// The task that rolls an unconfirmed commit back after `wait`.
    fn expire_confirm_after(self: &Rc<Self>, wait: Duration) -> smol::Task<()> {
        let gw = self.clone();
        self.net.executor.spawn(async move {
            Timer::after(wait).await;
            gw.expire_confirm().await;
        })
    }

    async fn expire_confirm(self: &Rc<Self>) {
        let scan = self.scan().await;
        let pending = self.engine.borrow().prepare_expiry(&scan, unix_now());
        let back = match pending {
            Ok(Some(pending)) => self.write_commit(pending).await.map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match back {
            Ok(Some(seq)) => {
                let config = self.engine.borrow().running().clone();
                match self.plan(&config).await {
                    Ok(plan) => {
                        log::warn!(target: "config", "commit confirmed was not confirmed in time: rolled back as commit {seq}");
                        self.activate(plan, &CommitRequest::default());
                    }
                    Err(e) => {
                        log::error!(target: "config", "rolled back as commit {seq}, but {e}; restart to apply it")
                    }
                }
            }
            Ok(None) => self.arm_confirm_timer(),
            Err(e) => {
                // A passing fault (the token, the disk) must not leave the unconfirmed
                // configuration running for good: the rollback is tried again.
                log::error!(target: "config", "commit confirmed could not roll back: {e}; trying again in {} s",
                    CONFIRM_RETRY.as_secs());
                *self.confirm_timer.borrow_mut() = Some(self.expire_confirm_after(CONFIRM_RETRY));
            }
        }
    }

    /// SIGHUP: the newest commit in the slots, applied when it is not the running one.
    pub async fn reload(self: &Rc<Self>) {
        let scan = self.scan().await;
        let (changed, lines) = self.engine.borrow_mut().reload(&scan);
        for line in lines {
            log::warn!(target: "config", "{line}");
        }
        let (config, commit) = {
            let e = self.engine.borrow();
            (e.running().clone(), e.commit().clone())
        };
        if commit.sequence == self.running().commit {
            log::info!(target: "config", "reload: commit {} is running already", commit.sequence);
            return;
        }
        match self.plan(&config).await {
            Ok(plan) => {
                if !changed {
                    log::info!(target: "config", "reload: commit {} has the running configuration", commit.sequence);
                }
                self.activate(plan, &CommitRequest::default());
            }
            Err(e) => {
                log::error!(target: "config", "reload: commit {} cannot take effect: {e}", commit.sequence)
            }
        }
    }

    /// New sessions and deliveries use the certificate store as it is now (after a
    /// certificate command changed it).
    pub fn reload_certificates(&self) {
        let running = self.running();
        self.swap(running.config.clone(), running.commit);
    }

    /// Asks the gateway to stop; `run` returns with `why`.
    pub fn shut_down(&self, why: String) {
        let _ = self.stop.try_send(why);
    }

    /// SMTP sessions open, on every service.
    pub fn open_sessions(&self) -> u32 {
        self.counts.iter().map(|c| c.borrow().total()).sum()
    }

    /// Messages being sent to next hops.
    pub fn deliveries_in_progress(&self) -> usize {
        self.net.queue.scheduler.sending()
    }

    /// Stops taking connections (the listening sockets close) and lets the sessions in
    /// progress end their transactions and leave with 421, and the deliveries under way
    /// finish (no other begins: the queue waits for the next start), for at most
    /// `grace`. What was still open when it gave up: sessions, deliveries.
    pub async fn drain(&self, grace: Duration) -> (u32, usize) {
        self.listeners.borrow_mut().clear();
        self.net.queue.scheduler.stop();
        let deadline = Instant::now() + grace;
        self.net.shutdown.begin(deadline);
        // A moment past the sessions' own deadline, for their 421 to go out.
        let give_up = deadline + DRAIN_FLUSH;
        let left = || (self.open_sessions(), self.deliveries_in_progress());
        // The queue's file writes (a delivery's outcome, a hold, a removal) finish too.
        let files = || self.net.queue.scheduler.files_pending();
        while (left() != (0, 0) || files() > 0) && Instant::now() < give_up {
            Timer::after(DRAIN_POLL).await;
        }
        if files() > 0 {
            log::warn!(target: "main", "stopping: {} queue file operation(s) not done at the deadline; the messages keep their last written state", files());
        }
        left()
    }
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

/// Mode bits no one but the owner may have on the state directory's contents.
const GROUP_AND_OTHER: u32 = 0o077;

/// Takes away every permission of group and others under `state_dir` (message content,
/// keys, users and configuration live there), logging each change. Symbolic links are
/// left alone; so is what cannot be read.
pub fn tighten_modes(state_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = vec![state_dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & GROUP_AND_OTHER != 0 {
            let tight = mode & !GROUP_AND_OTHER;
            match fs::set_permissions(&path, fs::Permissions::from_mode(tight)) {
                Ok(()) => log::warn!(target: "main",
                    "tightened the mode of {} from {mode:04o} to {tight:04o}: only the gateway reads its state",
                    path.display()),
                Err(e) => {
                    log::error!(target: "main", "cannot tighten the mode of {}: {e}", path.display())
                }
            }
        }
        if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            pending.extend(entries.filter_map(Result::ok).map(|e| e.path()));
        }
    }
}

/// The control socket's name in the state directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Where the control socket is (`drawbridge queue`, `drawbridge cli`).
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Where the spool lives under the state directory.
pub fn spool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("spool")
}

/// How the gateway is started.
pub struct Start {
    pub state_dir: PathBuf,
    /// `run --config FILE`: the file and its parsed configuration.
    pub file: Option<(PathBuf, Config)>,
    /// The board's factory configuration, committed when the slots hold nothing.
    pub factory: Config,
    /// Where the console is; `None` runs without one.
    pub console: Option<crate::io::tty::ConsoleDevice>,
}

/// The length of `commit confirmed`'s minute: 60 s, or what a test asks for.
fn confirm_minute() -> u64 {
    std::env::var(TEST_MINUTE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|m| *m > 0)
        .unwrap_or(MINUTE)
}

/// The token and the configuration engine of a state directory, opened.
pub struct Opened {
    pub token: Arc<dyn Token>,
    pub engine: Engine,
    pub origin: Origin,
    /// What start-up has to say about damaged slots.
    pub log: Vec<String>,
}

/// Which token to open for `state_dir`: the one `file` (`run --config FILE`) names, else
/// the one the newest stored commit names, else the board's (the software token).
///
/// The slots are checked with a key on the token, so the token cannot be chosen by a
/// checked slot: the newest one is read before its HMAC is checked, for this setting
/// only. Once the token is open the slots are checked as always.
pub fn token_settings(
    state_dir: &Path,
    file: Option<&Config>,
) -> crate::proto::config::TokenSettings {
    if let Some(config) = file {
        return config.system.token.clone();
    }
    crate::io::config::store::Store::open(state_dir)
        .ok()
        .and_then(|store| store.peek_newest())
        .map(|config| config.system.token)
        .unwrap_or_default()
}

/// Opens the token and the configuration engine of `state_dir` (the caller holds the
/// state lock).
pub fn open_engine(
    state_dir: &Path,
    file: Option<(&Path, Config)>,
    factory: Config,
) -> Result<Opened, String> {
    let settings = token_settings(state_dir, file.as_ref().map(|(_, c)| c));
    let token = crate::io::tls::open_token(&settings, state_dir)
        .map_err(|e| format!("cannot open the token: {e}"))?;
    let seal = TokenSeal::open(token.clone())
        .map_err(|e| format!("cannot open the configuration HMAC key: {e}"))?;
    let (engine, origin, log) = Engine::boot(
        state_dir,
        Arc::new(seal),
        file,
        factory,
        unix_now(),
        confirm_minute(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Opened {
        token,
        engine,
        origin,
        log,
    })
}

/// A gateway opened: its state directory locked, the configuration engine and the queue
/// recovered, its listeners bound but not yet serving.
pub struct Ready {
    pub gw: Rc<Gateway>,
    /// Says why the gateway is to stop ([`Gateway::stop`]).
    pub stopped: smol::channel::Receiver<String>,
    bound: Vec<(ListenKey, Async<TcpListener>)>,
    recovered: usize,
    _lock: StateLock,
}

impl Ready {
    /// Serves the bound listeners (once the executor runs) and arms a pending `commit
    /// confirmed`.
    pub fn serve(&mut self) {
        let names: Vec<String> = self.bound.iter().map(|(k, _)| k.to_string()).collect();
        for (key, l) in self.bound.drain(..) {
            self.gw.serve_listener(key, l);
        }
        self.gw.arm_confirm_timer();
        log::info!(target: "main", "drawbridge {} started: commit {}, listening on {}",
            env!("CARGO_PKG_VERSION"), self.gw.running().commit,
            if names.is_empty() { "nothing".to_string() } else { names.join(", ") });
        log::info!(target: "main", "starting: {} message(s) recovered from the queue", self.recovered);
    }
}

/// Opens the gateway `start` describes. Errors are start-up errors.
pub fn open(start: &Start) -> io::Result<Ready> {
    let state_dir = start.state_dir.as_path();
    let lock = lock_state_dir(state_dir)?;
    tighten_modes(state_dir);
    let file = start.file.as_ref().map(|(p, c)| (p.as_path(), c.clone()));
    let Opened {
        token,
        mut engine,
        origin,
        log: lines,
    } = open_engine(state_dir, file, start.factory.clone()).map_err(io::Error::other)?;
    for line in lines {
        log::warn!(target: "config", "{line}");
    }
    // A `commit confirmed` that ran out while the gateway was down rolls back now.
    match engine.expire_confirm(unix_now()) {
        Ok(Some(seq)) => {
            log::warn!(target: "config", "commit confirmed ran out while stopped: rolled back as commit {seq}")
        }
        Ok(None) => {}
        Err(e) => log::error!(target: "config", "commit confirmed could not roll back: {e}"),
    }
    let commit = engine.commit().clone();
    log::info!(target: "config", "{}", match &origin {
        Origin::Stored => format!("running commit {} of {} by {} ({})", commit.sequence,
            mailq_stamp(commit.meta.time), commit.meta.user, commit.meta.comment),
        Origin::File { changed: true } => format!("running commit {}: {}", commit.sequence, commit.meta.comment),
        Origin::File { changed: false } => format!("running commit {}: the --config file is the stored configuration", commit.sequence),
        Origin::Factory => format!("running commit {}: the board's factory default configuration", commit.sequence),
    });
    let config = Rc::new(engine.running().clone());
    crate::io::log::configure(&config.system);
    crate::proto::stats::started(unix_now());
    let (spool, files) = Spool::open_unread(&spool_dir(state_dir))?;
    let (journal, journaled) = Journal::open(&spool_dir(state_dir))?;
    let spool = Rc::new(spool);
    let journal = Rc::new(RefCell::new(journal));
    let commit_group = Rc::new(GroupCommit::new(spool.clone(), journal.clone()));
    let executor = Rc::new(LocalExecutor::new());
    let running = Rc::new(Running::build(
        config.clone(),
        commit.sequence,
        None,
        &token,
        state_dir,
    ));
    let scheduler = Scheduler::new(
        QueueStore {
            spool: spool.clone(),
            journal: journal.clone(),
            commit: commit_group.clone(),
        },
        running.resolver.clone(),
        running.tls.clone(),
        config.clone(),
        running.shared_addresses(),
        executor.clone(),
    );
    match crate::io::secrets::SealKey::derive(token.as_ref()) {
        Ok(key) => scheduler.set_secrets(crate::io::relay::SecretStore {
            state_dir: state_dir.to_path_buf(),
            key,
        }),
        Err(e) => {
            log::error!(target: "main", "the secret store's key is not available, routes that log in will defer: {e}")
        }
    }
    let mut bound = Vec::new();
    for key in listen_keys(&config) {
        let l = listener::bind(key.addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {} for {}: {e}", key.addr, key.service),
            )
        })?;
        bound.push((key, l));
    }
    let (stop, stopped) = smol::channel::bounded(1);
    let users = crate::io::users::UserCache::new(state_dir)
        .map_err(|e| io::Error::other(format!("user database: {e}")))?;
    let net = Rc::new(Context::new(
        running,
        executor.clone(),
        Queue {
            spool,
            journal,
            commit: commit_group,
            scheduler: scheduler.clone(),
        },
        users,
    ));
    let gw = Rc::new(Gateway {
        net,
        engine: RefCell::new(engine),
        token,
        state_dir: state_dir.to_path_buf(),
        listeners: RefCell::new(BTreeMap::new()),
        counts: ServiceName::ALL.map(|s| Rc::new(RefCell::new(Counts::new(s)))),
        confirm_timer: RefCell::new(None),
        stop,
        consoles: Consoles::default(),
    });
    scheduler.start();
    let recovered = scheduler.recover(files, journaled);
    Ok(Ready {
        gw,
        stopped,
        bound,
        recovered,
        _lock: lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_of_ones_own_does_not_end_a_row_of_failures_for_another() {
        let t0 = Instant::now();
        let mut f = LoginFailures::default();
        assert_eq!(f.failed("admin", t0), 1);
        // Guessing admin's password between logins of one's own: the row goes on.
        f.succeeded("mallory");
        assert_eq!(f.failed("admin", t0), 2);
        f.succeeded("mallory");
        assert_eq!(f.failed("admin", t0), 3);
        // A mistyped password of one's own ends with one's own login.
        let mut f = LoginFailures::default();
        f.failed("alice", t0);
        f.failed("alice", t0);
        f.succeeded("alice");
        assert_eq!(f.failed("alice", t0), 1);
        // Failures for several names: no one login ends the row.
        let mut f = LoginFailures::default();
        f.failed("alice", t0);
        f.failed("admin", t0);
        f.succeeded("alice");
        assert_eq!(f.failed("alice", t0), 3);
        // A row left alone long enough is forgotten.
        assert_eq!(f.failed("alice", t0 + LOGIN_FAILURES_FORGOTTEN), 1);
    }

    #[test]
    fn listening_sockets_are_listed_per_service() {
        let config = crate::proto::config::host_default();
        let keys: Vec<String> = listen_keys(&config)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(keys, ["inbound 127.0.0.1:2525", "outbound 127.0.0.1:2587"]);
    }
}
