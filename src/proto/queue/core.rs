//! The queue manager's decisions, without I/O: which recipients go to which destination,
//! which job a connection takes next, which host it tries, when a message is tried
//! again, when it expires, which reports its sender is owed, and what must be written to
//! the spool for each of these.
//!
//! [`QueueCore`] keeps the in-memory picture of the queue. It reads no clock, opens no
//! file or socket and spawns nothing: the time comes in as an argument ([`Time`]), and
//! what the layer must do comes out as [`Action`]s.
//!
//! Calling order, for the layer (`relay::Scheduler`):
//!
//! 1. Feed it: [`QueueCore::recover`] once at start-up, [`QueueCore::submit`] for every
//!    committed message, [`QueueCore::handle_timeout`] when [`QueueCore::poll_timeout`]
//!    has come, the operations (`flush`, `hold`, `release`, `delete`) and
//!    [`QueueCore::reconfigure`] as the administrator asks.
//! 2. After every call, drain [`QueueCore::poll_action`] and carry each action out.
//! 3. A connection for a destination ([`Action::Open`]) asks for hosts with
//!    [`QueueCore::hosts_to_try`], reports a host it could not use with
//!    [`QueueCore::host_failed`] (or every waiting job's failure with
//!    [`QueueCore::destination_failed`]), takes jobs with [`QueueCore::take_job`],
//!    builds each transaction with [`QueueCore::transaction`] and reports its outcome
//!    with [`QueueCore::record`]. An idle connection says so with
//!    [`QueueCore::worker_idle`] / [`QueueCore::worker_wakes`]; one that ends says
//!    [`QueueCore::worker_gone`].
//! 4. Actions that need the layer's answer are answered: [`Action::MoveToFile`] with
//!    [`QueueCore::moved`], [`Action::Report`] with [`QueueCore::reports_queued`].
//!
//! Invariant: a message leaves the picture only through [`Action::Remove`], which comes
//! after every report it caused was handed over ([`Action::Report`] answered); nothing
//! here loses a message, whatever the configuration is replaced with.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use super::dsn::{self, ReportKind};
use super::listing::{OpError, QueueEntry};
use crate::proto::config::{Config, DomainPattern, RelayHost, Route};
use crate::proto::logtext::{Escaped, NamedRelay, Seconds2};
use crate::proto::policy::route;
use crate::proto::queue::{Envelope, QueueId, RcptStatus, Recovered, Ret};
use crate::proto::smtp::address;
use crate::proto::smtp::client::{OutgoingMessage, OutgoingRcpt};
use crate::proto::smtp::reply::{Enhanced, Reply};
use crate::proto::stats;

/// RFC 5321 §4.5.3.1.8 servers must take 100 recipients; we send no more per transaction.
pub const MAX_RCPTS_PER_TRANSACTION: usize = 100;
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
    pub fn route(&self) -> &DomainPattern {
        match self {
            DestKey::Route(r) | DestKey::Mx { route: r, .. } => r,
        }
    }
}

/// Most addresses one delivery attempt tries for a destination: RFC 5321 §5.1 asks for
/// at least two, Postfix's `smtp_mx_address_limit` is 5. Sixteen MX hosts of many
/// addresses each would otherwise hold a connection for hours of connect timeouts.
pub const MAX_ADDRESSES_PER_ATTEMPT: usize = 10;

/// An MX host of a destination, with its preference and the addresses of its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// RFC 5321 §5.1 on the MX hosts of a domain, in the order they are tried: a host that
/// is this gateway (named by our host name, or at an address where `listens_at` says
/// one of our services takes mail on the port delivery would use) and every host of an
/// equal or higher preference are dropped, since mail sent there comes back. `None`
/// when that leaves nothing: the mail loops, and must be returned rather than sent to
/// ourselves.
pub fn hosts_before_ourselves(
    hosts: Vec<MxHost>,
    host_name: &str,
    listens_at: impl Fn(IpAddr) -> bool,
) -> Option<Vec<MxHost>> {
    let is_us = |h: &MxHost| {
        h.name.trim_end_matches('.').eq_ignore_ascii_case(host_name)
            || h.addresses.iter().any(|ip| listens_at(ip.to_canonical()))
    };
    let Some(ours) = hosts
        .iter()
        .filter(|h| is_us(h))
        .map(|h| h.preference)
        .min()
    else {
        return Some(hosts);
    };
    let kept: Vec<MxHost> = hosts.into_iter().filter(|h| h.preference < ours).collect();
    (!kept.is_empty()).then_some(kept)
}

/// Where mail for a queued recipient goes, by the routing function the policy decided
/// with ([`crate::proto::policy::route`]); a refusal when it cannot be routed.
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

/// A moment on the queue manager's clock: microseconds since the Unix epoch. The layer
/// passes the wall clock; tests pass virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    pub fn from_secs(secs: u64) -> Time {
        Time(secs.saturating_mul(1_000_000))
    }

    /// Whole seconds since the epoch, as envelopes keep them.
    pub fn secs(self) -> u64 {
        self.0 / 1_000_000
    }

    pub fn after(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }

    /// How long after `earlier` this is; zero when it is not after.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Where a message's durable copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A record in this journal segment; the content is held in memory.
    Journal(u64),
    /// Its own files in the spool.
    File,
}

/// Recipients of one message bound for one destination: one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: QueueId,
    /// Indices into the envelope's recipients.
    pub rcpts: Vec<usize>,
}

/// Where the content of a transaction comes from.
#[derive(Clone, Debug)]
pub enum ContentRef {
    /// In memory: a journal message.
    Memory(Rc<[u8]>),
    /// In the message's content file in the spool.
    File,
}

/// What the layer must do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Start one connection (a worker) for this destination.
    Open(DestKey),
    /// Wake this many idle connections of this destination: jobs are waiting.
    Ring(DestKey, usize),
    /// Write this envelope over the message's envelope file (not synced), then answer
    /// with [`QueueCore::updated`].
    Update(Envelope),
    /// Write a journal message to its own files and make them durable, then answer with
    /// [`QueueCore::moved`].
    MoveToFile {
        env: Envelope,
        segment: u64,
        content: Rc<[u8]>,
    },
    /// The message left the queue (or moved out of the journal): delete its files, or
    /// mark its journal record done.
    Remove { id: QueueId, backing: Backing },
    /// Build these reports about the message (RFC 3464) and queue them, then answer with
    /// [`QueueCore::reports_queued`].
    Report {
        id: QueueId,
        reports: Vec<(ReportKind, Vec<usize>)>,
    },
    /// Read a parked message's envelope from its file, in order with the file writes
    /// before it, and answer with [`QueueCore::loaded`].
    Load(QueueId),
    /// Write a parked message's hold into its envelope file (read it, set `held`, write
    /// it back), in order with the other file operations.
    SetHeld { id: QueueId, held: bool },
}

/// What happens to a message once its attempt is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every recipient is settled: the message leaves the queue.
    Remove,
    /// Some recipients wait: try again at this unix time (seconds).
    Retry(u64),
}

/// The next hop a job's replies came from, for the delivery log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The host's name: the MX or relay host name, or an address literal's address.
    pub name: String,
    pub addr: SocketAddr,
    /// Which transaction on its connection this was, 1 for the first (`conn_use=`).
    pub conn_use: u32,
    /// Connecting, greeting, EHLO and TLS, when this job opened the connection; zero on
    /// a reused one.
    pub setup: Duration,
    /// The transaction itself.
    pub transmit: Duration,
}

/// Why a destination could not be used: the reply every waiting job gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    pub reply: Reply,
    /// A host was tried or DNS asked: it counts as a delivery attempt. Not so when every
    /// host was passed over for a recent failure.
    pub attempted: bool,
}

impl From<Reply> for Unreachable {
    fn from(reply: Reply) -> Unreachable {
        Unreachable {
            reply,
            attempted: true,
        }
    }
}

/// Most octets of journal messages' content the queue manager keeps in memory. A journal
/// message is queued with its content in memory, so a backlog of small messages waiting
/// for a slow or absent next hop would otherwise cost its whole size in RAM (about 5 KiB
/// a 4 KiB message, measured with `cargo xtask bench slow-downstream`): past this, a
/// message that is not being delivered moves to its own files at once, as a deferred one
/// does, and is read from them in pieces when its turn comes. 32 MiB is a sixteenth of a
/// 512 MiB appliance and some 8000 waiting 4 KiB messages.
pub const MEMORY_CONTENT_LIMIT: usize = 32 * 1024 * 1024;

/// What `show status` counts of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QueueCounts {
    pub total: usize,
    pub held: usize,
    /// Messages whole in memory; the others wait in their files.
    pub in_picture: usize,
    /// Messages a connection is delivering now.
    pub delivering: usize,
}

/// How many recovered messages [`QueueCore::recover`] takes between two calls of its
/// progress callback: a few seconds of log lines at 115 200 baud.
pub const RECOVER_BATCH: usize = 256;

/// A message the queue manager knows about.
struct Message {
    env: Envelope,
    backing: Backing,
    /// The content, for journal messages.
    memory: Option<Rc<[u8]>>,
    /// Jobs waiting at a destination.
    queued: usize,
    /// Jobs taken by a connection and not yet recorded.
    running: usize,
    /// When it was accepted, for `delay=`; `None` for recovered messages.
    accepted: Option<Time>,
    /// A delivery was attempted since the message was last settled: the attempt counts.
    attempted: bool,
    /// Its reports are being queued: nothing may dispatch it until they are.
    reporting: Option<Plan>,
    /// A move to its own files is under way.
    moving: bool,
    /// It came when the picture was full: it leaves the picture once its move to its
    /// own files is done.
    parking: bool,
    /// Writes of its envelope ([`Action::Update`]) not answered yet.
    writes: u32,
    /// The last write of its envelope failed: its file holds an older state (recipients
    /// delivered since still pending in it), so it is not parked and read back from it.
    unwritten: bool,
}

impl Message {
    /// Something is under way for it: jobs waiting or running, reports being queued, or
    /// its move to its files before it waits for room. Nothing dispatches it meanwhile.
    fn in_flight(&self) -> bool {
        self.queued + self.running > 0 || self.reporting.is_some() || self.parking
    }

    /// Nothing here needs it: it is in its files as it is now, no connection has it and
    /// no report or move waits for it, so it may leave the picture.
    fn idle(&self) -> bool {
        self.backing == Backing::File
            && !self.in_flight()
            && !self.moving
            && self.writes == 0
            && !self.unwritten
    }
}

/// A message out of the picture ([`QueueCore`] keeps at most `queue active-limit`
/// messages whole): its files hold it, and only its schedule is kept here (with its map
/// entry and its place in `deferred`, about 380 octets of resident memory measured by
/// `bench dead-downstream`, where a whole message takes about 1.2 KiB).
struct Parked {
    /// Unix seconds of its next attempt, as in `deferred`.
    due: u64,
    held: bool,
    /// Its envelope is being read back: [`Action::Load`] is not answered yet.
    loading: bool,
    /// It is in `ready`, waiting for room: it is not put there twice.
    ready: bool,
    /// The domains of its recipients still open, hashed, for a flush by domain.
    domains: Domains,
}

/// Hashed recipient domains of a parked message: one, the common case, without an
/// allocation of its own.
enum Domains {
    One(u64),
    Many(Box<[u64]>),
}

impl Domains {
    fn contains(&self, hash: u64) -> bool {
        match self {
            Domains::One(one) => *one == hash,
            Domains::Many(many) => many.contains(&hash),
        }
    }
}

/// One destination: its waiting jobs and its connections.
#[derive(Default)]
struct Destination {
    jobs: VecDeque<Job>,
    /// Connections open or opening.
    workers: u32,
    /// Connections waiting for a job.
    idle: u32,
    /// Where the round robin of a relay list starts next.
    next_host: usize,
    /// Hosts that failed, passed over until then, with the reply each failure gave.
    avoid: HashMap<SocketAddr, (Time, Reply)>,
}

/// The queue manager's picture of the queue and every decision on it.
pub struct QueueCore {
    config: Rc<Config>,
    /// This host's addresses, for routing (the sessions route with the same ones).
    ours: Rc<[IpAddr]>,
    messages: HashMap<QueueId, Message>,
    destinations: HashMap<DestKey, Destination>,
    /// (unix seconds of the next attempt, id); stale entries are skipped when popped.
    deferred: BinaryHeap<Reverse<(u64, QueueId)>>,
    /// Bumped by every reconfiguration: a connection opened before takes no more jobs.
    epoch: u64,
    actions: VecDeque<Action>,
    /// Octets of content held in `messages` (journal messages not yet moved to files).
    in_memory: usize,
    /// Messages out of the picture, in their files.
    parked: HashMap<QueueId, Parked>,
    /// Parked messages whose time has come, waiting for room in the picture, first come
    /// first. Entries no longer parked, or held, are skipped.
    ready: VecDeque<QueueId>,
    /// Loads asked of the layer and not answered: each will take a place in the picture.
    loading: usize,
    /// Messages of the picture that became idle, oldest first, that may be parked to make
    /// room; entries that are no longer idle are skipped.
    evictable: VecDeque<QueueId>,
}

impl QueueCore {
    pub fn new(config: Rc<Config>, ours: Rc<[IpAddr]>) -> QueueCore {
        QueueCore {
            config,
            ours,
            messages: HashMap::new(),
            destinations: HashMap::new(),
            deferred: BinaryHeap::new(),
            epoch: 0,
            actions: VecDeque::new(),
            in_memory: 0,
            parked: HashMap::new(),
            ready: VecDeque::new(),
            loading: 0,
            evictable: VecDeque::new(),
        }
    }

    /// Most messages the picture holds whole: the configuration's `queue active-limit`.
    fn active_limit(&self) -> usize {
        usize::try_from(self.config.queue.active_limit.max(1)).unwrap_or(usize::MAX)
    }

    /// The picture has no room for another message.
    fn full(&self) -> bool {
        self.messages.len() + self.loading >= self.active_limit()
    }

    /// Notes that a message of the picture may have become idle.
    fn mark_idle(&mut self, id: &QueueId) {
        if !self.messages.get(id).is_some_and(Message::idle) {
            return;
        }
        self.evictable.push_back(id.clone());
        // Stale entries (messages dispatched or gone since) are dropped now and then, so
        // the queue stays in proportion to the picture.
        if self.evictable.len() > 2 * self.messages.len() + 64 {
            let mut seen = HashSet::new();
            let messages = &self.messages;
            self.evictable.retain(|id| {
                messages.get(id).is_some_and(Message::idle) && seen.insert(id.clone())
            });
        }
    }

    /// Parks the idle message that became idle first; `false` when none is.
    fn evict_one(&mut self, now: Time) -> bool {
        while let Some(id) = self.evictable.pop_front() {
            if self.messages.get(&id).is_some_and(Message::idle) {
                self.park(&id, now);
                return true;
            }
        }
        false
    }

    /// Takes an idle message out of the picture; its files hold it as it is. One whose
    /// time has come (new, flushed, released, or due and not yet dispatched) waits for
    /// room in `ready`; the others come back by their entry in `deferred`.
    fn park(&mut self, id: &QueueId, now: Time) {
        let Some(m) = self.messages.remove(id) else {
            return;
        };
        self.release_content(m.memory);
        let domains = open_domains(&m.env);
        self.parked.insert(
            id.clone(),
            Parked {
                due: m.env.next_attempt,
                held: m.env.held,
                loading: false,
                ready: false,
                domains,
            },
        );
        if m.env.next_attempt <= now.secs() {
            self.make_ready(id);
        }
    }

    /// A parked message is to be tried: it waits for room in `ready`, once, unless it is
    /// held or being read back.
    fn make_ready(&mut self, id: &QueueId) {
        if let Some(p) = self
            .parked
            .get_mut(id)
            .filter(|p| !p.held && !p.loading && !p.ready)
        {
            p.ready = true;
            self.ready.push_back(id.clone());
        }
    }

    /// Brings parked messages whose time has come back into the picture, while it has
    /// room or an idle message can make some.
    fn fill(&mut self, now: Time) {
        while let Some(id) = self.ready.front().cloned() {
            let wanted = self.parked.get(&id).is_some_and(|p| !p.held && !p.loading);
            if wanted && self.full() && !self.evict_one(now) {
                return;
            }
            self.ready.pop_front();
            if let Some(p) = self.parked.get_mut(&id) {
                p.ready = false;
                if wanted {
                    p.loading = true;
                    self.loading += 1;
                    self.actions.push_back(Action::Load(id));
                }
            }
        }
    }

    /// The answer to [`Action::Load`]: a parked message's envelope as its file holds it,
    /// or why it could not be read. The message comes into the picture and is
    /// dispatched, unless it was held or deleted meanwhile. One that cannot be read stays
    /// parked and is tried again at the shortest retry interval: nothing is dropped.
    pub fn loaded(&mut self, id: &QueueId, env: Result<Envelope, String>, now: Time) {
        let retry = self.shortest_retry();
        let Some(p) = self.parked.get_mut(id).filter(|p| p.loading) else {
            return;
        };
        p.loading = false;
        self.loading = self.loading.saturating_sub(1);
        match env {
            Ok(_) if p.held => {}
            Ok(mut env) => {
                self.parked.remove(id);
                env.held = false;
                self.messages
                    .insert(id.clone(), Message::new(env, Backing::File, None, None));
                self.dispatch(id, now);
            }
            Err(e) => {
                let due = now.secs() + retry;
                log::error!(target: "qmgr", "{id}: cannot read the queued message back: {}; tried again in {} s",
                    Escaped(&e), due - now.secs());
                p.due = due;
                self.deferred.push(Reverse((due, id.clone())));
            }
        }
        self.fill(now);
    }

    /// Counts a message's content as held, and moves it to its files when the queue
    /// holds more than [`MEMORY_CONTENT_LIMIT`] and no connection is delivering it.
    fn hold_content(&mut self, id: &QueueId) {
        let Some(m) = self.messages.get(id) else {
            return;
        };
        self.in_memory += m.memory.as_ref().map_or(0, |c| c.len());
        if self.in_memory > MEMORY_CONTENT_LIMIT && m.running == 0 && m.memory.is_some() {
            self.persist(id);
        }
    }

    /// The content of a message that leaves memory (moved to files, or removed).
    fn release_content(&mut self, content: Option<Rc<[u8]>>) {
        self.in_memory = self
            .in_memory
            .saturating_sub(content.map_or(0, |c| c.len()));
    }

    /// Octets of content the queue manager holds in memory now.
    pub fn content_in_memory(&self) -> usize {
        self.in_memory
    }

    /// The configuration decisions are made with now.
    pub fn config(&self) -> &Rc<Config> {
        &self.config
    }

    /// The next thing the layer must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` must be called next: the earliest deferred message.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deferred
            .peek()
            .map(|Reverse((due, _))| Time::from_secs(*due))
    }

    /// Number of messages queued (active, deferred or held), parked ones included.
    pub fn len(&self) -> usize {
        self.messages.len() + self.parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages in the picture, whole in memory (at most `queue active-limit` but for
    /// journal messages, which are in memory anyway).
    pub fn in_picture(&self) -> usize {
        self.messages.len()
    }

    /// Messages out of the picture, in their files.
    pub fn parked_count(&self) -> usize {
        self.parked.len()
    }

    /// How many messages are queued, how many of them held, and how many being
    /// delivered now.
    pub fn counts(&self) -> QueueCounts {
        QueueCounts {
            total: self.len(),
            held: self.messages.values().filter(|m| m.env.held).count()
                + self.parked.values().filter(|p| p.held).count(),
            in_picture: self.messages.len(),
            delivering: self.messages.values().filter(|m| m.running > 0).count(),
        }
    }

    /// Every queued message's id, in order (ids grow with their arrival).
    pub fn ids(&self) -> Vec<QueueId> {
        let mut ids: Vec<QueueId> = self
            .messages
            .keys()
            .chain(self.parked.keys())
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// The parked messages, each with whether it is held (which its file may not say
    /// yet), in id order: a listing reads their envelopes from their files.
    pub fn parked_ids(&self) -> Vec<(QueueId, bool)> {
        let mut ids: Vec<(QueueId, bool)> = self
            .parked
            .iter()
            .map(|(id, p)| (id.clone(), p.held))
            .collect();
        ids.sort();
        ids
    }

    /// Whether a message is parked, and if so whether it is held.
    pub fn parked(&self, id: &QueueId) -> Option<bool> {
        self.parked.get(id).map(|p| p.held)
    }

    /// This host's addresses, as routing knows them.
    pub fn ours(&self) -> Rc<[IpAddr]> {
        self.ours.clone()
    }

    /// The current epoch, for a connection being opened: see [`QueueCore::take_job`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Takes the messages recovered at start-up: those in files (`files`, in id order,
    /// read one at a time: past the active limit each is parked as it comes, so a large
    /// queue is never whole in memory) and those in the journal. The two are taken
    /// merged in id order, which is the order ids were given out in. A message in both
    /// was being moved to its files: the files are the newer copy and the journal record
    /// is retired. Calls `progress` after every [`RECOVER_BATCH`] messages taken (each is
    /// logged, and a log on a slow serial console takes its time), so that the layer can
    /// tell a supervisor the start moves. Returns how many messages it took.
    pub fn recover(
        &mut self,
        files: impl IntoIterator<Item = Envelope>,
        mut journaled: Vec<Recovered>,
        now: Time,
        mut progress: impl FnMut(),
    ) -> usize {
        journaled.sort_by(|a, b| a.env.id.cmp(&b.env.id));
        let mut journaled = journaled.into_iter().peekable();
        let mut files = files.into_iter().peekable();
        let mut count = 0;
        let mut last_file: Option<QueueId> = None;
        loop {
            let from_file = match (files.peek(), journaled.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(f), Some(j)) => {
                    if f.id == j.env.id {
                        // Being moved to its files: the files are the newer copy.
                        if let Some(r) = journaled.next() {
                            self.actions.push_back(Action::Remove {
                                id: r.env.id,
                                backing: Backing::Journal(r.segment),
                            });
                        }
                        continue;
                    }
                    f.id < j.env.id
                }
            };
            let m = if from_file {
                let Some(env) = files.next() else { break };
                debug_assert!(
                    last_file.as_ref().is_none_or(|last| *last < env.id),
                    "files in id order"
                );
                last_file = Some(env.id.clone());
                Message::new(env, Backing::File, None, None)
            } else {
                let Some(r) = journaled.next() else { break };
                Message::new(
                    r.env,
                    Backing::Journal(r.segment),
                    Some(r.content.into()),
                    None,
                )
            };
            if count % RECOVER_BATCH == 0 {
                progress();
            }
            count += 1;
            let env = &m.env;
            let state = if env.held {
                "hold"
            } else if env.next_attempt > now.secs() {
                "deferred"
            } else {
                "active"
            };
            log::info!(target: "qmgr", "{}: from=<{}>, size={}, nrcpt={} (queue {state})",
                env.id, crate::proto::logtext::Escaped(&env.sender), env.size, env.recipients.len());
            let (id, due, held) = (env.id.clone(), env.next_attempt, env.held);
            // Past the active limit, messages in files wait there; journal messages are
            // in memory anyway.
            let parks = m.backing == Backing::File && self.full();
            self.messages.insert(id.clone(), m);
            self.hold_content(&id);
            if !held && due > now.secs() {
                self.deferred.push(Reverse((due, id.clone())));
            }
            if parks {
                self.park(&id, now);
                continue;
            }
            if !held && due <= now.secs() {
                self.dispatch(&id, now);
            }
            self.mark_idle(&id);
        }
        self.fill(now);
        count
    }

    /// Takes a message that was just committed, with its content when it is in memory.
    pub fn submit(&mut self, env: Envelope, memory: Option<Rc<[u8]>>, backing: Backing, now: Time) {
        log::info!(target: "qmgr", "{}: from=<{}>, size={}, nrcpt={} (queue active)",
            env.id, crate::proto::logtext::Escaped(&env.sender), env.size, env.recipients.len());
        let id = env.id.clone();
        let room = !self.full() || self.evict_one(now);
        self.messages
            .insert(id.clone(), Message::new(env, backing, memory, Some(now)));
        if room {
            self.dispatch(&id, now);
            self.hold_content(&id);
            return;
        }
        // The picture is full of messages in flight: this one waits in its files for
        // room, as the first come; a journal message is moved to its files first.
        log::info!(target: "qmgr", "{id}: waits for room in the active queue ({} messages)", self.messages.len() - 1);
        match backing {
            Backing::File => self.park(&id, now),
            Backing::Journal(_) => {
                if let Some(m) = self.messages.get_mut(&id) {
                    m.parking = true;
                }
                self.hold_content(&id);
                self.persist(&id);
            }
        }
    }

    /// Dispatches every deferred message whose time has come.
    pub fn handle_timeout(&mut self, now: Time) {
        let mut due = Vec::new();
        while let Some(Reverse((t, _))) = self.deferred.peek() {
            if *t > now.secs() {
                break;
            }
            let Some(Reverse((t, id))) = self.deferred.pop() else {
                break;
            };
            let current = self
                .messages
                .get(&id)
                .is_some_and(|m| m.env.next_attempt == t && !m.env.held);
            if current {
                due.push(id);
            } else if self
                .parked
                .get(&id)
                .is_some_and(|p| p.due == t && !p.held && !p.loading)
            {
                self.make_ready(&id);
            }
        }
        for id in due {
            self.dispatch(&id, now);
        }
        self.fill(now);
    }

    /// Replaces the configuration: every later decision uses the new routes, limits and
    /// schedule. Jobs waiting at a destination (of messages none of whose jobs is running)
    /// are taken back and routed afresh under the new routes; connections opened before
    /// take no more jobs ([`QueueCore::take_job`]); deferred and held messages keep their
    /// schedule and are routed under the new routes when their time comes. No message is
    /// dropped.
    pub fn reconfigure(&mut self, config: Rc<Config>, ours: Rc<[IpAddr]>, now: Time) {
        // Waiting messages whose recipients the new routes send elsewhere go now, not
        // at their next retry.
        let target = |c: &Config, ours: &[IpAddr], address: &str| {
            destination(c, ours, address).ok().map(|d| {
                let hop = c
                    .routes
                    .get(d.route())
                    .map(|r| (r.next_hop.clone(), r.mx_port));
                (d, hop)
            })
        };
        let moved: Vec<QueueId> = self
            .messages
            .values()
            .filter(|m| !m.env.held && !m.in_flight())
            .filter(|m| {
                m.env
                    .recipients
                    .iter()
                    .filter(|r| r.status.is_open())
                    .any(|r| {
                        target(&self.config, &self.ours, &r.address)
                            != target(&config, &ours, &r.address)
                    })
            })
            .map(|m| m.env.id.clone())
            .collect();
        self.config = config;
        self.ours = ours;
        self.epoch = self.epoch.wrapping_add(1);
        let mut rerouted: Vec<QueueId> = moved;
        for d in self.destinations.values_mut() {
            let mut kept = VecDeque::new();
            for job in d.jobs.drain(..) {
                match self.messages.get_mut(&job.id) {
                    Some(m) if m.running == 0 => {
                        m.queued = m.queued.saturating_sub(1);
                        if m.queued == 0 {
                            rerouted.push(job.id.clone());
                        }
                    }
                    Some(_) => kept.push_back(job),
                    None => {}
                }
            }
            d.jobs = kept;
        }
        log::info!(target: "qmgr", "new configuration: {} message(s) routed again", rerouted.len());
        rerouted.sort();
        for id in rerouted {
            self.dispatch(&id, now);
            // A held one whose jobs were taken back is idle now: it may make room.
            self.mark_idle(&id);
        }
        // Idle connections wake to find they belong to the old configuration.
        let idle: Vec<(DestKey, usize)> = self
            .destinations
            .iter()
            .filter(|(_, d)| d.idle > 0)
            .map(|(k, d)| (k.clone(), d.idle as usize))
            .collect();
        for (dest, n) in idle {
            self.actions.push_back(Action::Ring(dest, n));
        }
        // Destinations with waiting jobs and no connection get one under the new limits.
        let waiting: Vec<(DestKey, usize)> = self
            .destinations
            .iter()
            .filter(|(_, d)| !d.jobs.is_empty())
            .map(|(k, d)| (k.clone(), d.jobs.len()))
            .collect();
        for (dest, n) in waiting {
            self.wake(dest, n);
        }
        // A lower active limit: idle messages leave the picture down to it.
        while self.messages.len() + self.loading > self.active_limit() && self.evict_one(now) {}
        self.fill(now);
    }

    /// Splits a message's open recipients into jobs per destination; recipients that
    /// cannot be routed fail at once.
    fn dispatch(&mut self, id: &QueueId, now: Time) {
        let (config, ours) = (self.config.clone(), self.ours.clone());
        let Some(m) = self.messages.get_mut(id) else {
            return;
        };
        if m.in_flight() || m.env.held {
            return;
        }
        let mut by_dest: BTreeMap<DestKey, Vec<usize>> = BTreeMap::new();
        let mut unroutable = Vec::new();
        for (i, r) in m.env.recipients.iter().enumerate() {
            if !r.status.is_open() {
                continue;
            }
            match destination(&config, &ours, &r.address) {
                Ok(key) => by_dest.entry(key).or_default().push(i),
                Err(reply) => unroutable.push((i, reply)),
            }
        }
        for (i, reply) in unroutable {
            log_status(&m.env, i, None, m.accepted, &reply, now);
            m.env.recipients[i].status = RcptStatus::Failed {
                reply: reply.one_line(),
            };
        }
        let mut woken = Vec::new();
        for (dest, rcpts) in by_dest {
            let d = self.destinations.entry(dest.clone()).or_default();
            let mut count = 0;
            for chunk in rcpts.chunks(MAX_RCPTS_PER_TRANSACTION) {
                d.jobs.push_back(Job {
                    id: id.clone(),
                    rcpts: chunk.to_vec(),
                });
                count += 1;
            }
            m.queued += count;
            woken.push((dest, count));
        }
        if woken.is_empty() {
            self.finish(id, now);
            return;
        }
        for (dest, count) in woken {
            self.wake(dest, count);
        }
    }

    /// The route's limit on connections to a destination.
    fn concurrency(&self, dest: &DestKey) -> u32 {
        self.config
            .routes
            .get(dest.route())
            .map_or(1, |r| r.concurrency.max(1))
    }

    /// Gets `count` new jobs at `dest` moving: idle connections first, then new ones up
    /// to the route's concurrency limit.
    fn wake(&mut self, dest: DestKey, count: usize) {
        let limit = self.concurrency(&dest);
        let d = self.destinations.entry(dest.clone()).or_default();
        let ring = (d.idle as usize).min(count);
        let room = limit.saturating_sub(d.workers) as usize;
        let open = (count - ring).min(room);
        d.workers += open as u32;
        if ring > 0 {
            self.actions.push_back(Action::Ring(dest.clone(), ring));
        }
        for _ in 0..open {
            self.actions.push_back(Action::Open(dest.clone()));
        }
    }

    /// The next job for a connection to `dest`. `epoch` is the epoch the connection was
    /// opened in (`None` before it has one): a connection from before the last
    /// reconfiguration gets nothing and should close, since its host may no longer be
    /// the route's.
    pub fn take_job(&mut self, dest: &DestKey, epoch: Option<u64>) -> Option<Job> {
        if epoch.is_some_and(|e| e != self.epoch) {
            return None;
        }
        let job = self.destinations.get_mut(dest)?.jobs.pop_front()?;
        if let Some(m) = self.messages.get_mut(&job.id) {
            m.queued = m.queued.saturating_sub(1);
            m.running += 1;
        }
        Some(job)
    }

    /// A connection of `dest` waits for a job.
    pub fn worker_idle(&mut self, dest: &DestKey) {
        self.destinations.entry(dest.clone()).or_default().idle += 1;
    }

    /// A connection of `dest` stopped waiting (rung, or its wait is over).
    pub fn worker_wakes(&mut self, dest: &DestKey) {
        if let Some(d) = self.destinations.get_mut(dest) {
            d.idle = d.idle.saturating_sub(1);
        }
    }

    /// A connection of `dest` has ended. Jobs still waiting get a new one.
    pub fn worker_gone(&mut self, dest: &DestKey) {
        let Some(d) = self.destinations.get_mut(dest) else {
            return;
        };
        d.workers = d.workers.saturating_sub(1);
        let waiting = d.jobs.len();
        if waiting > 0 && d.workers == 0 {
            self.wake(dest.clone(), waiting);
        }
    }

    /// The route of a destination, when the configuration still has it.
    pub fn route(&self, dest: &DestKey) -> Option<&Route> {
        self.config.routes.get(dest.route())
    }

    /// The hosts a connection to `dest` tries, in order, each with the name its
    /// certificate must carry: a relay list's or smarthost's hosts in round-robin order,
    /// a host name's addresses (from `resolved`, the layer's lookups) in their order in its
    /// place, or for MX routing the `resolved` hosts in preference order; hosts that
    /// failed within the route's avoid time are passed over. The error is the reply every
    /// job waiting there gets.
    pub fn hosts_to_try(
        &mut self,
        dest: &DestKey,
        resolved: Option<Vec<(SocketAddr, String)>>,
        now: Time,
    ) -> Result<Vec<(SocketAddr, String)>, Unreachable> {
        let Some(route) = self.config.routes.get(dest.route()) else {
            return Err(Reply::new(451, "4.4.0", "Route removed from the configuration").into());
        };
        let d = self.destinations.entry(dest.clone()).or_default();
        let hosts = match (dest, resolved) {
            (DestKey::Mx { .. }, Some(resolved)) => resolved,
            (DestKey::Mx { .. }, None) => Vec::new(),
            (DestKey::Route(_), resolved) => {
                let hosts = route.hosts();
                if hosts.is_empty() {
                    return Err(Reply::new(451, "4.4.0", "Route has no hosts").into());
                }
                let start = d.next_host;
                d.next_host = d.next_host.wrapping_add(1);
                let resolved = resolved.unwrap_or_default();
                (0..hosts.len())
                    .flat_map(|k| addresses_of(&hosts[(start + k) % hosts.len()], &resolved))
                    .collect()
            }
        };
        let avoided = |host: &SocketAddr| {
            d.avoid
                .get(host)
                .filter(|(until, _)| *until > now)
                .map(|(_, reply)| reply)
        };
        // Every host passed over: the first one's own last error is the reason.
        if let Some(reply) = hosts.first().and_then(|(h, _)| avoided(h)) {
            if hosts.iter().all(|(h, _)| avoided(h).is_some()) {
                return Err(Unreachable {
                    reply: reply.clone(),
                    attempted: false,
                });
            }
        }
        if hosts.is_empty() {
            return Err(Reply::new(451, "4.4.4", "No hosts to try").into());
        }
        Ok(hosts
            .into_iter()
            .filter(|(host, _)| avoided(host).is_none())
            .collect())
    }

    /// A host of `dest` could not be used, with `reply`: it is passed over for the route's
    /// avoid time, but never past the shortest retry interval, so that a retry always
    /// tries a host again.
    pub fn host_failed(&mut self, dest: &DestKey, host: SocketAddr, reply: &Reply, now: Time) {
        let avoid = self
            .config
            .routes
            .get(dest.route())
            .map_or(Duration::ZERO, |r| r.avoid_time);
        let shortest_retry = self.config.queue.retry.iter().min().copied();
        let avoid = shortest_retry.map_or(avoid, |r| avoid.min(r));
        self.destinations
            .entry(dest.clone())
            .or_default()
            .avoid
            .insert(host, (now.after(avoid), reply.clone()));
    }

    /// The envelope of a job's transaction and where its content is; a reply for all its
    /// recipients when the message is gone.
    pub fn transaction(&self, job: &Job) -> Result<(OutgoingMessage, ContentRef), Reply> {
        let Some(m) = self.messages.get(&job.id) else {
            return Err(Reply::new(451, "4.3.0", "Message vanished from the queue"));
        };
        let env = &m.env;
        let rcpts: Vec<OutgoingRcpt> = job
            .rcpts
            .iter()
            .filter_map(|&i| env.recipients.get(i))
            .map(|r| OutgoingRcpt {
                address: r.address.clone(),
                notify: notify::to_param(r.notify),
                orcpt: r.orcpt.clone(),
            })
            .collect();
        // SMTPUTF8 goes on only for a message that needs it (RFC 6531 §3.2): a UTF-8
        // address in this transaction, or 8-bit content, where a UTF-8 header may be.
        // An ASCII message that merely arrived with the flag then reaches a next hop
        // without the extension, instead of being refused 5.6.7.
        let needs_utf8 =
            !env.sender.is_ascii() || rcpts.iter().any(|r| !r.address.is_ascii()) || env.eight_bit;
        let msg = OutgoingMessage {
            from: env.sender.clone(),
            rcpts,
            size: env.size,
            eight_bit: env.eight_bit,
            smtputf8: env.smtputf8 && needs_utf8,
            ret: env.ret.map(|r| match r {
                Ret::Full => "FULL".to_string(),
                Ret::Hdrs => "HDRS".to_string(),
            }),
            envid: env.envid.clone(),
        };
        let content = match &m.memory {
            Some(bytes) => ContentRef::Memory(bytes.clone()),
            None => ContentRef::File,
        };
        Ok((msg, content))
    }

    /// The outcome of a job: one reply per recipient, from `hop` when a next hop gave
    /// them. The last job of a message settles it.
    pub fn record(&mut self, job: &Job, hop: Option<&Hop>, replies: &[Reply], now: Time) {
        self.settle_job(job, hop, replies, hop.is_some(), now);
    }

    fn settle_job(
        &mut self,
        job: &Job,
        hop: Option<&Hop>,
        replies: &[Reply],
        attempted: bool,
        now: Time,
    ) {
        let Some(m) = self.messages.get_mut(&job.id) else {
            return;
        };
        m.attempted |= attempted;
        for (&i, reply) in job.rcpts.iter().zip(replies) {
            if i >= m.env.recipients.len() {
                continue;
            }
            log_status(&m.env, i, hop, m.accepted, reply, now);
            let text = reply.one_line();
            let status = &mut m.env.recipients[i].status;
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
        m.running = m.running.saturating_sub(1);
        if !m.in_flight() {
            self.finish(&job.id, now);
        }
    }

    /// A destination cannot be reached: `first` (a job already taken) and every job
    /// waiting there get its reply.
    pub fn destination_failed(&mut self, dest: &DestKey, first: Job, why: &Unreachable, now: Time) {
        let mut jobs = vec![first];
        if let Some(d) = self.destinations.get_mut(dest) {
            for job in d.jobs.drain(..) {
                if let Some(m) = self.messages.get_mut(&job.id) {
                    m.queued = m.queued.saturating_sub(1);
                    m.running += 1;
                }
                jobs.push(job);
            }
        }
        for job in jobs {
            let replies = vec![why.reply.clone(); job.rcpts.len()];
            self.settle_job(&job, None, &replies, why.attempted, now);
        }
    }

    /// A message with nothing in flight: removed when every recipient is settled,
    /// otherwise scheduled for its next attempt (or expired). Failures and long delays are
    /// reported first: the report is durable before the message that caused it goes.
    fn finish(&mut self, id: &QueueId, now: Time) {
        let config = self.config.clone();
        let Some(m) = self.messages.get_mut(id) else {
            return;
        };
        let attempted = std::mem::take(&mut m.attempted);
        let plan = plan_next(&mut m.env, &config, now.secs(), attempted);
        let reports = take_reports(&mut m.env, &config, now.secs(), plan);
        if reports.is_empty() {
            self.settle(id, plan, now);
            return;
        }
        m.reporting = Some(plan);
        self.actions.push_back(Action::Report {
            id: id.clone(),
            reports,
        });
    }

    /// The reports of [`Action::Report`] are queued, but for `unqueued` (those the
    /// layer could not make durable: a full spool). The message goes on as planned; the
    /// recipients of an unqueued report are owed it still, and a message that was to
    /// leave the queue stays for it, tried again at the shortest retry interval (RFC
    /// 5321 §6.1: a failure accepted for delivery is reported, whatever it takes).
    pub fn reports_queued(
        &mut self,
        id: &QueueId,
        unqueued: &[(ReportKind, Vec<usize>)],
        now: Time,
    ) {
        let retry = self.shortest_retry();
        let Some(m) = self.messages.get_mut(id) else {
            return;
        };
        let Some(mut plan) = m.reporting.take() else {
            return;
        };
        for (kind, rcpts) in unqueued {
            for &i in rcpts {
                let Some(r) = m.env.recipients.get_mut(i) else {
                    continue;
                };
                r.status = match (&r.status, kind) {
                    (RcptStatus::Returned { reply }, ReportKind::Failure) => RcptStatus::Failed {
                        reply: reply.clone(),
                    },
                    (RcptStatus::Delayed { reply }, ReportKind::Delay) => RcptStatus::Deferred {
                        reply: reply.clone(),
                    },
                    (other, _) => other.clone(),
                };
            }
        }
        if !unqueued.is_empty() && plan == Plan::Remove {
            log::warn!(target: "qmgr", "{id}: kept in the queue until its report can be queued; tried again in {retry} s");
            plan = Plan::Retry(now.secs() + retry);
        }
        self.settle(id, plan, now);
    }

    /// The shortest retry interval of the configuration, in seconds (at least 1).
    fn shortest_retry(&self) -> u64 {
        let retry = self.config.queue.retry.iter().min().copied();
        retry.map_or(300, |d| d.as_secs()).max(1)
    }

    /// Carries out the plan for a message with nothing in flight.
    fn settle(&mut self, id: &QueueId, plan: Plan, now: Time) {
        let Some(m) = self.messages.get_mut(id) else {
            return;
        };
        match plan {
            Plan::Retry(due) => {
                m.env.next_attempt = due;
                self.persist(id);
                self.deferred.push(Reverse((due, id.clone())));
                self.mark_idle(id);
            }
            Plan::Remove => {
                let backing = m.backing;
                let gone = self.messages.remove(id).and_then(|m| m.memory);
                self.release_content(gone);
                log::info!(target: "qmgr", "{id}: removed");
                self.actions.push_back(Action::Remove {
                    id: id.clone(),
                    backing,
                });
            }
        }
        self.fill(now);
    }

    /// Writes a message's envelope down: over its envelope file, or, for a journal
    /// message, by moving it to its own files (the journal keeps envelopes as they came).
    fn persist(&mut self, id: &QueueId) {
        let Some(m) = self.messages.get_mut(id) else {
            return;
        };
        match (m.backing, &m.memory) {
            (Backing::Journal(segment), Some(content)) => {
                if !m.moving {
                    m.moving = true;
                    self.actions.push_back(Action::MoveToFile {
                        env: m.env.clone(),
                        segment,
                        content: content.clone(),
                    });
                }
            }
            _ => {
                m.writes += 1;
                self.actions.push_back(Action::Update(m.env.clone()));
            }
        }
    }

    /// The answer to [`Action::Update`]: `ok` when the envelope file holds it. A message
    /// whose file could not be written (a full disk) stays whole in the picture, where
    /// its state is, until a later write succeeds; one that became idle may leave it.
    /// A message parked meanwhile (a journal message just moved) needs no answer.
    pub fn updated(&mut self, id: &QueueId, ok: bool, now: Time) {
        let Some(m) = self.messages.get_mut(id) else {
            return;
        };
        m.writes = m.writes.saturating_sub(1);
        m.unwritten = !ok;
        if m.writes == 0 {
            self.mark_idle(id);
            self.fill(now);
        }
    }

    /// The answer to [`Action::MoveToFile`]: `ok` when the files are durable. The message
    /// is then served from its files and its journal record retired; if it left the
    /// queue meanwhile, the new files go too. On failure it stays in the journal, and
    /// the next change tries again.
    pub fn moved(&mut self, id: &QueueId, segment: u64, ok: bool, now: Time) {
        let Some(m) = self.messages.get_mut(id) else {
            if ok {
                self.actions.push_back(Action::Remove {
                    id: id.clone(),
                    backing: Backing::File,
                });
            }
            return;
        };
        m.moving = false;
        if !ok && m.parking {
            // It cannot wait in files it does not have: it is delivered from memory.
            m.parking = false;
            self.dispatch(id, now);
            return;
        }
        if !ok || m.backing != Backing::Journal(segment) {
            return;
        }
        m.backing = Backing::File;
        let moved = m.memory.take();
        self.release_content(moved);
        // The files hold the envelope as it was when the move began.
        self.persist(id);
        self.actions.push_back(Action::Remove {
            id: id.clone(),
            backing: Backing::Journal(segment),
        });
        if let Some(m) = self.messages.get_mut(id).filter(|m| m.parking) {
            m.parking = false;
            self.park(id, now);
        } else {
            self.mark_idle(id);
        }
        self.fill(now);
    }

    /// Every message, oldest first.
    pub fn list(&self) -> Vec<QueueEntry> {
        let mut out: Vec<QueueEntry> = self
            .messages
            .values()
            .map(|m| QueueEntry::of(&m.env, m.running > 0))
            .collect();
        out.sort_by(|a, b| (a.arrived, &a.id).cmp(&(b.arrived, &b.id)));
        out
    }

    /// One message's listing entry and where its content is.
    pub fn entry(&self, id: &QueueId) -> Result<(QueueEntry, ContentRef), OpError> {
        let m = self
            .messages
            .get(id)
            .ok_or_else(|| OpError::NoSuchMessage(id.clone()))?;
        let content = match &m.memory {
            Some(bytes) => ContentRef::Memory(bytes.clone()),
            None => ContentRef::File,
        };
        Ok((QueueEntry::of(&m.env, m.running > 0), content))
    }

    /// The envelope of a queued message.
    pub fn envelope(&self, id: &QueueId) -> Option<&Envelope> {
        self.messages.get(id).map(|m| &m.env)
    }

    /// The content of a journal message, when it is in memory.
    pub fn memory(&self, id: &QueueId) -> Option<Rc<[u8]>> {
        self.messages.get(id).and_then(|m| m.memory.clone())
    }

    /// Tries every deferred message now, and forgets which hosts failed recently.
    /// Returns how many messages were woken.
    pub fn flush(&mut self, now: Time) -> usize {
        self.flush_matching(now, |_| true, |_| true)
    }

    /// [`QueueCore::flush`] for the messages with a recipient still to deliver in
    /// `domain` (any case).
    pub fn flush_domain(&mut self, domain: &str, now: Time) -> usize {
        let hash = domain_hash(domain);
        self.flush_matching(
            now,
            |env| {
                env.recipients.iter().any(|r| {
                    r.status.is_open()
                        && r.address
                            .rsplit_once('@')
                            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
                })
            },
            // A hash that matches another domain only tries that message early.
            |p| p.domains.contains(hash),
        )
    }

    fn flush_matching(
        &mut self,
        now: Time,
        wanted: impl Fn(&Envelope) -> bool,
        wanted_parked: impl Fn(&Parked) -> bool,
    ) -> usize {
        for d in self.destinations.values_mut() {
            d.avoid.clear();
        }
        let mut due: Vec<QueueId> = self
            .messages
            .values_mut()
            .filter(|m| !m.env.held && !m.in_flight() && wanted(&m.env))
            .map(|m| {
                m.env.next_attempt = now.secs();
                m.env.id.clone()
            })
            .collect();
        due.sort();
        let mut parked: Vec<QueueId> = self
            .parked
            .iter_mut()
            .filter(|(_, p)| !p.held && !p.loading && wanted_parked(p))
            .map(|(id, p)| {
                p.due = now.secs();
                id.clone()
            })
            .collect();
        parked.sort();
        let count = due.len() + parked.len();
        log::info!(target: "qmgr", "flush: {count} message(s)");
        for id in &due {
            self.dispatch(id, now);
        }
        for id in &parked {
            self.make_ready(id);
        }
        self.fill(now);
        count
    }

    /// Keeps a message from being delivered until it is released; written down so that a
    /// restart keeps it. An attempt already running finishes.
    pub fn hold(&mut self, id: &QueueId) -> Result<(), OpError> {
        self.set_held(id, true)?;
        log::info!(target: "qmgr", "{id}: held by the administrator");
        Ok(())
    }

    /// Releases a held message and tries it at once.
    /// Releases a held message and tries its open recipients at once, routed by the
    /// running configuration; a message in flight is left to finish.
    pub fn requeue(&mut self, id: &QueueId, now: Time) -> Result<(), OpError> {
        if self.parked.contains_key(id) {
            self.set_held(id, false)?;
            log::info!(target: "qmgr", "{id}: requeued by the administrator");
            self.wake_parked(id, now);
            return Ok(());
        }
        let m = self
            .messages
            .get(id)
            .ok_or_else(|| OpError::NoSuchMessage(id.clone()))?;
        if m.env.held {
            self.set_held(id, false)?;
        }
        log::info!(target: "qmgr", "{id}: requeued by the administrator");
        if let Some(m) = self.messages.get_mut(id).filter(|m| !m.in_flight()) {
            m.env.next_attempt = now.secs();
        }
        self.dispatch(id, now);
        Ok(())
    }

    pub fn release(&mut self, id: &QueueId, now: Time) -> Result<(), OpError> {
        self.set_held(id, false)?;
        log::info!(target: "qmgr", "{id}: released by the administrator");
        if self.parked.contains_key(id) {
            self.wake_parked(id, now);
            return Ok(());
        }
        if let Some(m) = self.messages.get_mut(id) {
            m.env.next_attempt = now.secs();
        }
        self.dispatch(id, now);
        Ok(())
    }

    /// A parked message is to be tried now: it waits for room with the others.
    fn wake_parked(&mut self, id: &QueueId, now: Time) {
        if let Some(p) = self.parked.get_mut(id).filter(|p| !p.loading) {
            p.due = now.secs();
        }
        self.make_ready(id);
        self.fill(now);
    }

    fn set_held(&mut self, id: &QueueId, held: bool) -> Result<(), OpError> {
        if let Some(p) = self.parked.get_mut(id) {
            if p.held != held {
                p.held = held;
                self.actions.push_back(Action::SetHeld {
                    id: id.clone(),
                    held,
                });
            }
            return Ok(());
        }
        let m = self
            .messages
            .get_mut(id)
            .ok_or_else(|| OpError::NoSuchMessage(id.clone()))?;
        m.env.held = held;
        self.persist(id);
        if held {
            self.mark_idle(id);
        }
        Ok(())
    }

    /// Removes a message from the queue without notifying anyone.
    pub fn delete(&mut self, id: &QueueId, now: Time) -> Result<(), OpError> {
        let backing = if let Some(p) = self.parked.remove(id) {
            if p.loading {
                // Its load's answer finds it gone.
                self.loading = self.loading.saturating_sub(1);
            }
            Backing::File
        } else {
            let m = self
                .messages
                .remove(id)
                .ok_or_else(|| OpError::NoSuchMessage(id.clone()))?;
            self.release_content(m.memory);
            m.backing
        };
        log::info!(target: "qmgr", "{id}: removed by the administrator");
        self.actions.push_back(Action::Remove {
            id: id.clone(),
            backing,
        });
        self.fill(now);
        Ok(())
    }
}

impl Message {
    fn new(
        env: Envelope,
        backing: Backing,
        memory: Option<Rc<[u8]>>,
        accepted: Option<Time>,
    ) -> Message {
        Message {
            env,
            backing,
            memory,
            queued: 0,
            running: 0,
            accepted,
            attempted: false,
            reporting: None,
            moving: false,
            parking: false,
            writes: 0,
            unwritten: false,
        }
    }
}

/// A domain as a parked message remembers it: a hash of its lower-case form.
fn domain_hash(domain: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::hash::DefaultHasher::new();
    domain.to_ascii_lowercase().hash(&mut h);
    h.finish()
}

/// The hashed domains of a message's recipients still open, each once.
fn open_domains(env: &Envelope) -> Domains {
    let mut domains: Vec<u64> = env
        .recipients
        .iter()
        .filter(|r| r.status.is_open())
        .filter_map(|r| r.address.rsplit_once('@'))
        .map(|(_, d)| domain_hash(d))
        .collect();
    domains.sort_unstable();
    domains.dedup();
    match domains[..] {
        [one] => Domains::One(one),
        _ => Domains::Many(domains.into_boxed_slice()),
    }
}

/// The addresses of one relay host, each with the name its certificate must carry: an
/// address literal's own, or those `resolved` holds for a host name and its port.
fn addresses_of(host: &RelayHost, resolved: &[(SocketAddr, String)]) -> Vec<(SocketAddr, String)> {
    match host {
        RelayHost::Address(a) => vec![(*a, a.ip().to_string())],
        RelayHost::Name { name, port } => resolved
            .iter()
            .filter(|(a, n)| n == name && a.port() == *port)
            .cloned()
            .collect(),
    }
}

/// Decides a message's next step; recipients still open past the queue lifetime become
/// failures. Only an `attempted` delivery counts as an attempt (and moves the retry
/// schedule on): one whose hosts were all passed over does not.
pub fn plan_next(env: &mut Envelope, config: &Config, now: u64, attempted: bool) -> Plan {
    if !env.recipients.iter().any(|r| r.status.is_open()) {
        return Plan::Remove;
    }
    if attempted {
        env.attempts = env.attempts.saturating_add(1);
    }
    if now.saturating_sub(env.arrived) < config.queue.max_lifetime.as_secs() {
        let schedule = &config.queue.retry;
        let step = (env.attempts as usize)
            .saturating_sub(1)
            .min(schedule.len().saturating_sub(1));
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
        let text = match attempts {
            1 => format!("message expired after 1 delivery attempt: {last}"),
            n => format!("message expired after {n} delivery attempts: {last}"),
        };
        log::info!(target: "qmgr", "{id}: to=<{}>, dsn=4.4.7, status=expired ({})",
            Escaped(&r.address), Escaped(&text));
        stats::delivery(stats::Delivery::Bounced);
        r.status = RcptStatus::Failed {
            reply: format!("550 5.4.7 {text}"),
        };
    }
    Plan::Remove
}

/// The reports the sender is owed now, by kind, with the recipients each covers. Every
/// failure is marked returned and every delay noticed, so nothing is reported twice.
pub fn take_reports(
    env: &mut Envelope,
    config: &Config,
    now: u64,
    plan: Plan,
) -> Vec<(ReportKind, Vec<usize>)> {
    let mut out = Vec::new();
    let failed = mark(env, ReportKind::Failure, |status| match status {
        RcptStatus::Failed { reply } => Some(RcptStatus::Returned {
            reply: reply.clone(),
        }),
        _ => None,
    });
    if !failed.is_empty() {
        out.push((ReportKind::Failure, failed));
    }
    let notice = config.queue.delay_notice.as_secs();
    let late = notice > 0 && now.saturating_sub(env.arrived) >= notice;
    if late && matches!(plan, Plan::Retry(_)) {
        let delayed = mark(env, ReportKind::Delay, |status| match status {
            RcptStatus::Deferred { reply } => Some(RcptStatus::Delayed {
                reply: reply.clone(),
            }),
            _ => None,
        });
        if !delayed.is_empty() {
            out.push((ReportKind::Delay, delayed));
        }
    }
    out
}

/// Moves every recipient whose status `next` maps on to its new status; gives those the
/// sender wants a report of `kind` about (RFC 3461).
fn mark(
    env: &mut Envelope,
    kind: ReportKind,
    next: impl Fn(&RcptStatus) -> Option<RcptStatus>,
) -> Vec<usize> {
    let mut wanted = Vec::new();
    for i in 0..env.recipients.len() {
        let Some(status) = next(&env.recipients[i].status) else {
            continue;
        };
        if dsn::wants_report(env, i, kind) {
            wanted.push(i);
        }
        env.recipients[i].status = status;
    }
    wanted
}

/// One Postfix-shaped delivery line: `ID: to=<…>, relay=HOST[IP]:PORT, conn_use=N,
/// delay=…, delays=a/b/c/d, dsn=…, status=… (…)`. `delays` splits `delay` as Postfix
/// does: a, before the queue manager (it takes a message the moment it is committed,
/// so 0); b, in the queue; c, connection setup; d, the transaction. The reply text came
/// from a next hop: it is escaped.
fn log_status(
    env: &Envelope,
    i: usize,
    hop: Option<&Hop>,
    accepted: Option<Time>,
    reply: &Reply,
    now: Time,
) {
    let delay = match accepted {
        Some(at) => now.since(at),
        None => Duration::from_secs(now.secs().saturating_sub(env.arrived)),
    };
    let (status, outcome) = if reply.is_positive() {
        ("sent", stats::Delivery::Delivered)
    } else if reply.is_permanent() {
        ("bounced", stats::Delivery::Bounced)
    } else {
        ("deferred", stats::Delivery::Deferred)
    };
    stats::delivery(outcome);
    let class = Enhanced::new((reply.code / 100) as u8, 0, 0);
    let dsn = reply.enhanced.unwrap_or(class);
    let named = hop.map(|h| NamedRelay(&h.name, h.addr));
    let relay: &dyn std::fmt::Display = match &named {
        Some(named) => named,
        None => &"none",
    };
    let conn_use = match hop {
        Some(h) if h.conn_use > 1 => format!(", conn_use={}", h.conn_use),
        _ => String::new(),
    };
    let (setup, transmit) = hop.map_or((Duration::ZERO, Duration::ZERO), |h| (h.setup, h.transmit));
    let queued = delay.saturating_sub(setup).saturating_sub(transmit);
    log::info!(target: "smtp", "{}: to=<{}>, relay={relay}{conn_use}, delay={}, delays=0.00/{}/{}/{}, dsn={dsn}, status={status} ({})",
        env.id, Escaped(&env.recipients[i].address), Seconds2(delay), Seconds2(queued),
        Seconds2(setup), Seconds2(transmit), Escaped(&reply.one_line()));
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
    use crate::proto::config::{DomainPattern, NextHop, RelayHost, Route};
    use crate::proto::queue::{Origin, Recipient};

    const T0: u64 = 1_700_000_000;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn relay(hosts: &[&str]) -> Route {
        let mut route = Route::new(NextHop::Relay(
            hosts.iter().map(|h| RelayHost::Address(sa(h))).collect(),
        ));
        route.avoid_time = Duration::from_secs(60);
        route.concurrency = 2;
        route
    }

    fn config(routes: &[(&str, Route)]) -> Rc<Config> {
        let mut c = Config::default();
        for (pattern, route) in routes {
            c.routes
                .insert(DomainPattern::Exact((*pattern).into()), route.clone());
        }
        c.queue.retry = vec![Duration::from_secs(60), Duration::from_secs(300)];
        c.queue.max_lifetime = Duration::from_secs(3600);
        Rc::new(c)
    }

    fn core(config: Rc<Config>) -> QueueCore {
        QueueCore::new(config, Rc::from(&[][..]))
    }

    fn env(n: u64, rcpts: &[&str]) -> Envelope {
        Envelope {
            id: QueueId::from_value(QueueId::value_at(T0 * 1_000_000, n)),
            arrived: T0,
            origin: Origin::Inbound,
            client_ip: None,
            client_helo: "c.example".into(),
            sender: "s@example.org".into(),
            size: 3,
            eight_bit: false,
            smtputf8: false,
            ret: None,
            envid: None,
            recipients: rcpts
                .iter()
                .map(|a| Recipient {
                    address: (*a).into(),
                    orcpt: None,
                    notify: 0,
                    status: RcptStatus::Pending,
                })
                .collect(),
            attempts: 0,
            next_attempt: 0,
            held: false,
        }
    }

    fn at(secs: u64) -> Time {
        Time::from_secs(T0 + secs)
    }

    fn actions(c: &mut QueueCore) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    fn opens(actions: &[Action]) -> Vec<DestKey> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Open(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    fn dest(pattern: &str) -> DestKey {
        DestKey::Route(DomainPattern::Exact(pattern.into()))
    }

    fn ok() -> Reply {
        Reply::new(250, "2.0.0", "ok")
    }

    fn later() -> Reply {
        Reply::new(451, "4.3.0", "later")
    }

    /// The next hop of a delivery that reached one.
    fn hop() -> Hop {
        Hop {
            name: "10.0.0.1".into(),
            addr: sa("10.0.0.1:25"),
            conn_use: 1,
            setup: Duration::ZERO,
            transmit: Duration::ZERO,
        }
    }

    fn refused(host: &str) -> Reply {
        Reply::new(
            451,
            "4.4.1",
            format!("connect to {host}: Connection refused"),
        )
    }

    #[test]
    fn recipients_go_by_destination_in_transactions_of_at_most_100() {
        let mut c = core(config(&[
            ("a.example", relay(&["10.0.0.1:25"])),
            ("b.example", relay(&["10.0.0.2:25"])),
        ]));
        let mut rcpts: Vec<String> = (0..150).map(|i| format!("u{i}@a.example")).collect();
        rcpts.push("v@b.example".into());
        rcpts.push("w@nowhere.example".into());
        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        c.submit(env(1, &refs), None, Backing::File, at(0));
        let a = actions(&mut c);
        // Two jobs at a.example, concurrency 2: two connections; one at b.example.
        assert_eq!(
            opens(&a),
            vec![dest("a.example"), dest("a.example"), dest("b.example")]
        );
        let first = c.take_job(&dest("a.example"), None).unwrap();
        let second = c.take_job(&dest("a.example"), None).unwrap();
        assert_eq!((first.rcpts.len(), second.rcpts.len()), (100, 50));
        assert_eq!(c.take_job(&dest("a.example"), None), None);
        // The unroutable recipient failed at once.
        let e = c.envelope(&first.id).unwrap();
        assert!(
            matches!(&e.recipients[151].status, RcptStatus::Failed { reply } if reply.starts_with("550 5.4.4"))
        );
    }

    #[test]
    fn waiting_jobs_wake_idle_connections_before_opening_new_ones() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        c.submit(env(1, &["u@a.example"]), None, Backing::File, at(0));
        assert_eq!(opens(&actions(&mut c)).len(), 1);
        let job = c.take_job(&dest("a.example"), None).unwrap();
        c.record(&job, Some(&hop()), &[ok()], at(1));
        actions(&mut c);
        c.worker_idle(&dest("a.example"));
        c.submit(env(2, &["u@a.example"]), None, Backing::File, at(2));
        let a = actions(&mut c);
        assert!(opens(&a).is_empty(), "{a:?}");
        assert!(matches!(&a[0], Action::Ring(d, 1) if *d == dest("a.example")));
    }

    #[test]
    fn retries_follow_the_schedule_and_the_last_step_repeats() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let e = env(1, &["u@a.example"]);
        let id = e.id.clone();
        c.submit(e, None, Backing::File, at(0));
        let mut tried = vec![];
        let mut now = at(0);
        for _ in 0..4 {
            actions(&mut c);
            let job = c.take_job(&dest("a.example"), None).unwrap();
            tried.push(now.secs() - T0);
            c.record(&job, Some(&hop()), &[later()], now);
            let a = actions(&mut c);
            assert!(
                a.iter()
                    .any(|a| matches!(a, Action::Update(e) if e.id == id))
            );
            let due = c.poll_timeout().unwrap();
            c.handle_timeout(Time(due.0 - 1));
            assert!(
                c.take_job(&dest("a.example"), None).is_none(),
                "not before its time"
            );
            c.worker_gone(&dest("a.example"));
            now = due;
            c.handle_timeout(now);
        }
        assert_eq!(tried, vec![0, 60, 360, 660]);
        assert_eq!(c.envelope(&id).unwrap().attempts, 4);
    }

    #[test]
    fn failed_hosts_are_passed_over_for_the_avoid_time_and_the_others_tried() {
        let mut c = core(config(&[(
            "a.example",
            relay(&["10.0.0.1:25", "10.0.0.2:25"]),
        )]));
        let d = dest("a.example");
        let hosts = |c: &mut QueueCore, now| -> Vec<SocketAddr> {
            c.hosts_to_try(&d, None, now)
                .map(|h| h.into_iter().map(|(a, _)| a).collect())
                .unwrap_or_default()
        };
        // Round robin: each connection starts at the next host.
        assert_eq!(hosts(&mut c, at(0)), [sa("10.0.0.1:25"), sa("10.0.0.2:25")]);
        assert_eq!(hosts(&mut c, at(0)), [sa("10.0.0.2:25"), sa("10.0.0.1:25")]);
        c.host_failed(&d, sa("10.0.0.1:25"), &refused("10.0.0.1"), at(10));
        assert_eq!(hosts(&mut c, at(11)), [sa("10.0.0.2:25")]);
        assert_eq!(hosts(&mut c, at(69)), [sa("10.0.0.2:25")]);
        c.host_failed(&d, sa("10.0.0.2:25"), &refused("10.0.0.2"), at(69));
        // Every host passed over: the first one's own error is the reason, and it is no
        // delivery attempt.
        let err = c.hosts_to_try(&d, None, at(69)).unwrap_err();
        assert!(!err.attempted);
        assert_eq!(err.reply, refused("10.0.0.1"));
        assert_eq!(
            hosts(&mut c, at(70)).len(),
            1,
            "the first host's time is over"
        );
        // A flush forgets every failure.
        c.flush(at(71));
        assert_eq!(hosts(&mut c, at(71)).len(), 2);
        // MX hosts come from the layer; avoidance applies to them too.
        let mx = DestKey::Mx {
            route: DomainPattern::Exact("a.example".into()),
            domain: "a.example".into(),
        };
        c.host_failed(&mx, sa("192.0.2.1:25"), &refused("mx1"), at(100));
        let resolved = vec![
            (sa("192.0.2.1:25"), "mx1".to_string()),
            (sa("192.0.2.2:25"), "mx2".to_string()),
        ];
        assert_eq!(
            c.hosts_to_try(&mx, Some(resolved), at(100)).unwrap(),
            [(sa("192.0.2.2:25"), "mx2".to_string())]
        );
    }

    #[test]
    fn the_avoid_time_never_outlasts_the_shortest_retry_interval() {
        let mut route = relay(&["10.0.0.1:25"]);
        route.avoid_time = Duration::from_secs(3600);
        let mut c = core(config(&[("a.example", route)]));
        let d = dest("a.example");
        c.host_failed(&d, sa("10.0.0.1:25"), &refused("10.0.0.1"), at(0));
        assert!(c.hosts_to_try(&d, None, at(59)).is_err());
        // The retry 60 s later connects again.
        assert_eq!(
            c.hosts_to_try(&d, None, at(60)).unwrap(),
            [(sa("10.0.0.1:25"), "10.0.0.1".to_string())]
        );
    }

    #[test]
    fn only_real_attempts_count() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let e = env(1, &["u@a.example"]);
        let id = e.id.clone();
        c.submit(e, None, Backing::File, at(0));
        actions(&mut c);
        let d = dest("a.example");
        // Every host passed over: no attempt, and the retry schedule stays where it was.
        let job = c.take_job(&d, None).unwrap();
        let passed_over = Unreachable {
            reply: refused("10.0.0.1"),
            attempted: false,
        };
        c.destination_failed(&d, job, &passed_over, at(1));
        actions(&mut c);
        assert_eq!(c.envelope(&id).unwrap().attempts, 0);
        assert_eq!(c.poll_timeout(), Some(at(61)));
        // A host tried and refused: one attempt.
        c.handle_timeout(at(61));
        actions(&mut c);
        let job = c.take_job(&d, None).unwrap();
        c.destination_failed(&d, job, &refused("10.0.0.1").into(), at(62));
        actions(&mut c);
        assert_eq!(c.envelope(&id).unwrap().attempts, 1);
        // The deferral keeps the host's own words.
        let entry = c.list().into_iter().next().unwrap();
        assert_eq!(
            entry.recipients[0].reply.as_deref(),
            Some("451 4.4.1 connect to 10.0.0.1: Connection refused")
        );
    }

    #[test]
    fn a_host_name_brings_its_addresses_in_its_place_in_the_round_robin() {
        let name = |n: &str, port| RelayHost::Name {
            name: n.into(),
            port,
        };
        let mut route = relay(&["10.0.0.9:25"]);
        route.next_hop = Some(NextHop::Relay(vec![
            name("relay.example", 2525),
            RelayHost::Address(sa("10.0.0.9:25")),
        ]));
        let mut c = core(config(&[("a.example", route)]));
        let d = dest("a.example");
        // What the layer looked up: both addresses of the name, in DNS order, and the
        // literal as it is; a pair for another port of the same name is not this host's.
        let resolved = vec![
            (sa("192.0.2.1:2525"), "relay.example".to_string()),
            (sa("[2001:db8::1]:2525"), "relay.example".to_string()),
            (sa("192.0.2.7:26"), "relay.example".to_string()),
            (sa("10.0.0.9:25"), "10.0.0.9".to_string()),
        ];
        let pairs = |v: &[(&str, &str)]| -> Vec<(SocketAddr, String)> {
            v.iter().map(|(a, n)| (sa(a), n.to_string())).collect()
        };
        assert_eq!(
            c.hosts_to_try(&d, Some(resolved.clone()), at(0)).unwrap(),
            pairs(&[
                ("192.0.2.1:2525", "relay.example"),
                ("[2001:db8::1]:2525", "relay.example"),
                ("10.0.0.9:25", "10.0.0.9"),
            ])
        );
        // The next connection starts at the literal; the name's addresses keep their order.
        assert_eq!(
            c.hosts_to_try(&d, Some(resolved.clone()), at(0)).unwrap(),
            pairs(&[
                ("10.0.0.9:25", "10.0.0.9"),
                ("192.0.2.1:2525", "relay.example"),
                ("[2001:db8::1]:2525", "relay.example"),
            ])
        );
        // A failed address is passed over like any host.
        c.host_failed(&d, sa("192.0.2.1:2525"), &refused("relay.example"), at(1));
        assert_eq!(
            c.hosts_to_try(&d, Some(resolved), at(2)).unwrap(),
            pairs(&[
                ("[2001:db8::1]:2525", "relay.example"),
                ("10.0.0.9:25", "10.0.0.9"),
            ])
        );
        // A name that did not resolve contributes nothing; the literal is still tried.
        assert_eq!(
            c.hosts_to_try(&d, None, at(3)).unwrap(),
            pairs(&[("10.0.0.9:25", "10.0.0.9")])
        );
    }

    #[test]
    fn an_unreachable_destination_defers_every_waiting_job() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        for n in 1..=3 {
            c.submit(env(n, &["u@a.example"]), None, Backing::File, at(0));
        }
        actions(&mut c);
        let d = dest("a.example");
        let first = c.take_job(&d, None).unwrap();
        c.destination_failed(&d, first, &later().into(), at(1));
        let a = actions(&mut c);
        let updates = a.iter().filter(|a| matches!(a, Action::Update(_))).count();
        assert_eq!(updates, 3);
        assert_eq!(c.take_job(&d, None), None);
        assert_eq!(c.poll_timeout(), Some(at(61)));
    }

    #[test]
    fn expiry_reports_once_then_removes() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let e = env(1, &["u@a.example", "v@a.example"]);
        let id = e.id.clone();
        c.submit(e, None, Backing::File, at(0));
        actions(&mut c);
        let job = c.take_job(&dest("a.example"), None).unwrap();
        // One recipient delivered, one deferred past the queue lifetime.
        c.record(&job, Some(&hop()), &[ok(), later()], at(3600));
        let a = actions(&mut c);
        let reports: Vec<_> = a
            .iter()
            .filter_map(|a| match a {
                Action::Report { id, reports } => Some((id.clone(), reports.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            reports,
            vec![(id.clone(), vec![(ReportKind::Failure, vec![1])])]
        );
        assert!(
            !a.iter().any(|a| matches!(a, Action::Remove { .. })),
            "report first"
        );
        // Nothing dispatches it while its report is being queued.
        c.flush(at(3601));
        assert!(c.take_job(&dest("a.example"), None).is_none());
        c.reports_queued(&id, &[], at(3602));
        let a = actions(&mut c);
        assert!(
            matches!(&a[..], [Action::Remove { id: gone, backing: Backing::File }] if *gone == id)
        );
        assert!(c.is_empty());
    }

    #[test]
    fn a_report_that_could_not_be_queued_keeps_the_message_until_it_is() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let mut disk = Disk::default();
        let e = env(1, &["u@a.example"]);
        disk.write(&e);
        let id = e.id.clone();
        c.submit(e, None, Backing::File, at(0));
        disk.run(&mut c, at(0));
        let job = c.take_job(&dest("a.example"), None).unwrap();
        c.record(
            &job,
            Some(&hop()),
            &[Reply::new(550, "5.1.1", "no such user")],
            at(1),
        );
        let owed = vec![(ReportKind::Failure, vec![0])];
        let reported = |a: &[Action]| {
            a.iter()
                .any(|a| matches!(a, Action::Report { reports, .. } if *reports == owed))
        };
        assert!(reported(&disk.run(&mut c, at(1))));
        // The spool is full: the report is not queued, and the message stays for it.
        c.reports_queued(&id, &owed, at(1));
        let a = disk.run(&mut c, at(1));
        assert!(
            !a.iter().any(|a| matches!(a, Action::Remove { .. })),
            "{a:?}"
        );
        assert!(disk.0.contains_key(&id));
        assert!(matches!(
            disk.0[&id].recipients[0].status,
            RcptStatus::Failed { .. }
        ));
        let again = 1 + c.shortest_retry();
        assert_eq!(c.poll_timeout(), Some(at(again)));
        // At the shortest retry interval the report is made again; queued, the message
        // goes.
        c.handle_timeout(at(again));
        assert!(reported(&disk.run(&mut c, at(again))));
        c.reports_queued(&id, &[], at(again));
        disk.run(&mut c, at(again));
        assert!(c.is_empty() && disk.0.is_empty());
    }

    #[test]
    fn a_delay_notice_goes_once() {
        let mut cfg = (*config(&[("a.example", relay(&["10.0.0.1:25"]))])).clone();
        cfg.queue.delay_notice = Duration::from_secs(100);
        let mut c = core(Rc::new(cfg));
        let e = env(1, &["u@a.example"]);
        let id = e.id.clone();
        c.submit(e, None, Backing::File, at(0));
        let mut notices = 0;
        let mut now = at(0);
        for _ in 0..4 {
            actions(&mut c);
            let job = c.take_job(&dest("a.example"), None).unwrap();
            c.record(&job, Some(&hop()), &[later()], now);
            for a in actions(&mut c) {
                if let Action::Report { reports, .. } = a {
                    assert_eq!(reports, vec![(ReportKind::Delay, vec![0])]);
                    notices += 1;
                    c.reports_queued(&id, &[], now);
                }
            }
            c.worker_gone(&dest("a.example"));
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now);
        }
        assert_eq!(notices, 1);
        assert!(matches!(
            c.envelope(&id).unwrap().recipients[0].status,
            RcptStatus::Delayed { .. }
        ));
    }

    #[test]
    fn held_messages_wait_until_released() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let e = env(1, &["u@a.example"]);
        let id = e.id.clone();
        c.submit(e, None, Backing::File, at(0));
        actions(&mut c);
        let job = c.take_job(&dest("a.example"), None).unwrap();
        c.record(&job, Some(&hop()), &[later()], at(0));
        c.hold(&id).unwrap();
        let a = actions(&mut c);
        assert!(a.iter().any(|a| matches!(a, Action::Update(e) if e.held)));
        c.handle_timeout(at(10_000));
        c.flush(at(10_000));
        assert!(c.take_job(&dest("a.example"), None).is_none());
        assert!(c.list()[0].held);
        c.release(&id, at(10_001)).unwrap();
        let a = actions(&mut c);
        assert!(a.iter().any(|a| matches!(a, Action::Update(e) if !e.held)));
        assert!(c.take_job(&dest("a.example"), None).is_some());
        assert_eq!(
            c.hold(&"AAAAAAAAAAAAAAAA".parse().unwrap()),
            Err(OpError::NoSuchMessage("AAAAAAAAAAAAAAAA".parse().unwrap()))
        );
    }

    #[test]
    fn smtputf8_is_asked_of_the_next_hop_only_when_the_message_needs_it() {
        let mut c = core(config(&[
            ("a.example", relay(&["10.0.0.1:25"])),
            ("b.example", relay(&["10.0.0.2:25"])),
        ]));
        let flagged = |n: u64, rcpts: &[&str], eight_bit: bool| {
            let mut e = env(n, rcpts);
            e.smtputf8 = true;
            e.eight_bit = eight_bit;
            e
        };
        // ASCII addresses, 7-bit content: the flag is not needed.
        c.submit(
            flagged(1, &["u@a.example"], false),
            None,
            Backing::File,
            at(0),
        );
        // A UTF-8 recipient, or 8-bit content that may hold UTF-8 headers: needed.
        c.submit(
            flagged(2, &["jörg@b.example"], false),
            None,
            Backing::File,
            at(0),
        );
        actions(&mut c);
        let job = c.take_job(&dest("a.example"), None).unwrap();
        assert!(!c.transaction(&job).unwrap().0.smtputf8);
        let job = c.take_job(&dest("b.example"), None).unwrap();
        assert!(c.transaction(&job).unwrap().0.smtputf8);
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        c.submit(
            flagged(3, &["u@a.example"], true),
            None,
            Backing::File,
            at(0),
        );
        actions(&mut c);
        let job = c.take_job(&dest("a.example"), None).unwrap();
        assert!(c.transaction(&job).unwrap().0.smtputf8);
        // Without the flag at reception it is never added.
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        c.submit(env(4, &["u@a.example"]), None, Backing::File, at(0));
        actions(&mut c);
        let job = c.take_job(&dest("a.example"), None).unwrap();
        assert!(!c.transaction(&job).unwrap().0.smtputf8);
    }

    #[test]
    fn a_journal_message_that_must_wait_moves_to_its_files() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let e = env(1, &["u@a.example"]);
        let id = e.id.clone();
        c.submit(e, Some(Rc::from(&b"x\r\n"[..])), Backing::Journal(7), at(0));
        actions(&mut c);
        let job = c.take_job(&dest("a.example"), None).unwrap();
        assert!(matches!(
            c.transaction(&job).unwrap().1,
            ContentRef::Memory(_)
        ));
        c.record(&job, Some(&hop()), &[later()], at(0));
        let a = actions(&mut c);
        assert!(
            matches!(&a[..], [Action::MoveToFile { segment: 7, .. }]),
            "{a:?}"
        );
        // Until the files are durable it is served from memory.
        c.flush(at(1));
        actions(&mut c);
        let job = c.take_job(&dest("a.example"), None).unwrap();
        assert!(matches!(
            c.transaction(&job).unwrap().1,
            ContentRef::Memory(_)
        ));
        c.moved(&id, 7, true, at(1));
        let a = actions(&mut c);
        assert!(matches!(&a[0], Action::Update(_)));
        assert!(matches!(
            &a[1],
            Action::Remove {
                backing: Backing::Journal(7),
                ..
            }
        ));
        assert!(matches!(c.transaction(&job).unwrap().1, ContentRef::File));
        // Delivered now: the files go.
        c.record(&job, Some(&hop()), &[ok()], at(2));
        let a = actions(&mut c);
        assert!(matches!(
            &a[..],
            [Action::Remove {
                backing: Backing::File,
                ..
            }]
        ));
    }

    #[test]
    fn waiting_content_beyond_the_memory_limit_moves_to_files() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let piece = 1024 * 1024;
        let under = MEMORY_CONTENT_LIMIT / piece;
        let content: Rc<[u8]> = Rc::from(vec![b'x'; piece]);
        // Up to the limit, waiting messages keep their content in memory.
        for n in 0..under {
            c.submit(
                env(n as u64 + 1, &["u@a.example"]),
                Some(content.clone()),
                Backing::Journal(1),
                at(0),
            );
        }
        let a = actions(&mut c);
        assert!(
            !a.iter().any(|a| matches!(a, Action::MoveToFile { .. })),
            "{a:?}"
        );
        assert_eq!(c.content_in_memory(), MEMORY_CONTENT_LIMIT);
        // The next one goes to its files at once, and leaves memory when they are durable.
        let e = env(under as u64 + 1, &["u@a.example"]);
        let id = e.id.clone();
        c.submit(e, Some(content.clone()), Backing::Journal(1), at(0));
        let a = actions(&mut c);
        assert!(
            matches!(&a[..], [Action::MoveToFile { segment: 1, env, .. }] if env.id == id),
            "{a:?}"
        );
        assert_eq!(c.content_in_memory(), MEMORY_CONTENT_LIMIT + piece);
        c.moved(&id, 1, true, at(1));
        actions(&mut c);
        assert_eq!(c.content_in_memory(), MEMORY_CONTENT_LIMIT);
        // A delivered message gives its place back.
        let job = c.take_job(&dest("a.example"), None).unwrap();
        c.record(&job, Some(&hop()), &[ok()], at(1));
        actions(&mut c);
        assert_eq!(c.content_in_memory(), MEMORY_CONTENT_LIMIT - piece);
        // A file message is never "moved" again.
        let f = env(under as u64 + 2, &["u@a.example"]);
        c.submit(f, None, Backing::File, at(1));
        let a = actions(&mut c);
        assert!(
            !a.iter()
                .any(|a| matches!(a, Action::Update(_) | Action::MoveToFile { .. })),
            "{a:?}"
        );
    }

    #[test]
    fn a_message_gone_before_its_move_ends_leaves_no_files() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let e = env(1, &["u@a.example"]);
        let id = e.id.clone();
        c.submit(e, Some(Rc::from(&b"x\r\n"[..])), Backing::Journal(7), at(0));
        c.hold(&id).unwrap();
        c.delete(&id, at(0)).unwrap();
        let a = actions(&mut c);
        assert!(a.iter().any(|a| matches!(a, Action::MoveToFile { .. })));
        assert!(a.iter().any(|a| matches!(
            a,
            Action::Remove {
                backing: Backing::Journal(7),
                ..
            }
        )));
        c.moved(&id, 7, true, at(1));
        let a = actions(&mut c);
        assert!(matches!(
            &a[..],
            [Action::Remove {
                backing: Backing::File,
                ..
            }]
        ));
    }

    #[test]
    fn reconfigure_routes_waiting_mail_again_and_retires_old_connections() {
        let old = config(&[("a.example", relay(&["10.0.0.1:25"]))]);
        let mut c = core(old);
        let d = dest("a.example");
        c.submit(env(1, &["u@a.example"]), None, Backing::File, at(0));
        c.submit(env(2, &["v@a.example"]), None, Backing::File, at(0));
        c.submit(env(3, &["w@a.example"]), None, Backing::File, at(0));
        actions(&mut c);
        let epoch = c.epoch();
        // One job runs on a connection of the old configuration.
        let running = c.take_job(&d, Some(epoch)).unwrap();
        // The new configuration sends a.example elsewhere, by a suffix route.
        let mut new = Config::clone(&config(&[]));
        new.routes.insert(
            DomainPattern::Suffix("example".into()),
            relay(&["10.9.9.9:25"]),
        );
        c.reconfigure(Rc::new(new), Rc::from(Vec::new()), at(1));
        let a = actions(&mut c);
        let moved_to = DestKey::Route(DomainPattern::Suffix("example".into()));
        // Two jobs for a route of concurrency 2: two new connections.
        assert_eq!(opens(&a), vec![moved_to.clone(), moved_to.clone()], "{a:?}");
        assert!(
            c.take_job(&d, Some(epoch)).is_none(),
            "old connections take nothing"
        );
        let mut jobs = vec![];
        while let Some(job) = c.take_job(&moved_to, None) {
            jobs.push(job);
        }
        assert_eq!(jobs.len(), 2);
        for job in &jobs {
            assert_eq!(
                c.hosts_to_try(&moved_to, None, at(1)).unwrap()[0].0,
                sa("10.9.9.9:25")
            );
            c.record(job, Some(&hop()), &[ok()], at(2));
        }
        // The running job finishes on its old connection; nothing is lost.
        c.record(&running, Some(&hop()), &[ok()], at(2));
        let removed = actions(&mut c)
            .iter()
            .filter(|a| matches!(a, Action::Remove { .. }))
            .count();
        assert_eq!(removed, 3);
        assert!(c.is_empty());
    }

    #[test]
    fn recovery_prefers_files_and_keeps_schedules() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let mut later_one = env(2, &["v@a.example"]);
        later_one.next_attempt = T0 + 500;
        let mut held = env(3, &["w@a.example"]);
        held.held = true;
        let both = env(1, &["u@a.example"]);
        let journaled = vec![
            Recovered {
                env: both.clone(),
                content: b"x\r\n".to_vec(),
                segment: 4,
            },
            Recovered {
                env: env(4, &["x@a.example"]),
                content: b"y\r\n".to_vec(),
                segment: 4,
            },
        ];
        let n = c.recover(vec![both, later_one, held], journaled, at(0), || {});
        assert_eq!(n, 4);
        let a = actions(&mut c);
        assert!(matches!(
            &a[0],
            Action::Remove {
                backing: Backing::Journal(4),
                ..
            }
        ));
        let mut jobs = 0;
        while c.take_job(&dest("a.example"), None).is_some() {
            jobs += 1;
        }
        assert_eq!(jobs, 2, "the deferred and the held message wait");
        assert_eq!(c.poll_timeout(), Some(at(500)));
    }

    #[test]
    fn recovery_says_it_progresses_every_batch() {
        let mut c = core(config(&[("a.example", relay(&["10.0.0.1:25"]))]));
        let n = 2 * RECOVER_BATCH + 1;
        let files: Vec<Envelope> = (0..n as u64)
            .map(|i| env(i + 1, &["u@a.example"]))
            .collect();
        let mut calls = 0;
        assert_eq!(c.recover(files, Vec::new(), at(0), || calls += 1), n);
        assert_eq!(calls, 3);
        let mut calls = 0;
        assert_eq!(c.recover(Vec::new(), Vec::new(), at(0), || calls += 1), 0);
        assert_eq!(calls, 0);
    }

    /// The spool's envelope files as the core's file actions leave them: it carries out
    /// updates, removals, holds and loads (answering each load at once), and returns the
    /// other actions.
    #[derive(Default)]
    struct Disk(HashMap<QueueId, Envelope>);

    impl Disk {
        /// A message the sessions wrote to its files.
        fn write(&mut self, e: &Envelope) {
            self.0.insert(e.id.clone(), e.clone());
        }

        fn run(&mut self, c: &mut QueueCore, now: Time) -> Vec<Action> {
            let mut others = Vec::new();
            while let Some(action) = c.poll_action() {
                match action {
                    Action::Update(e) => {
                        self.write(&e);
                        c.updated(&e.id, true, now);
                    }
                    Action::Remove {
                        id,
                        backing: Backing::File,
                    } => {
                        self.0.remove(&id);
                    }
                    Action::SetHeld { id, held } => {
                        if let Some(e) = self.0.get_mut(&id) {
                            e.held = held;
                        }
                    }
                    Action::Load(id) => {
                        let e = self.0.get(&id).cloned().ok_or("no such file".to_string());
                        c.loaded(&id, e, now);
                    }
                    other => others.push(other),
                }
            }
            others
        }
    }

    /// Messages `ns` to `rcpt`, written to the disk and submitted from their files, the
    /// file actions carried out; their ids.
    fn submit_files(
        c: &mut QueueCore,
        disk: &mut Disk,
        ns: impl IntoIterator<Item = u64>,
        rcpt: &str,
        now: Time,
    ) -> Vec<QueueId> {
        ns.into_iter()
            .map(|n| {
                let e = env(n, &[rcpt]);
                disk.write(&e);
                c.submit(e.clone(), None, Backing::File, now);
                disk.run(c, now);
                e.id
            })
            .collect()
    }

    fn limited(routes: &[(&str, Route)], active_limit: u32) -> QueueCore {
        let mut c = (*config(routes)).clone();
        c.queue.active_limit = active_limit;
        core(Rc::new(c))
    }

    /// Takes every job waiting at `d` and records `reply` for each; the ids, in order.
    fn answer_all(
        c: &mut QueueCore,
        disk: &mut Disk,
        d: &DestKey,
        reply: &Reply,
        now: Time,
    ) -> Vec<QueueId> {
        let mut done = Vec::new();
        while let Some(job) = c.take_job(d, None) {
            done.push(job.id.clone());
            let replies = vec![reply.clone(); job.rcpts.len()];
            c.record(&job, Some(&hop()), &replies, now);
            disk.run(c, now);
            assert!(c.in_picture() <= 2, "{} whole messages", c.in_picture());
        }
        done
    }

    #[test]
    fn past_the_active_limit_messages_wait_in_their_files_and_each_has_its_turn() {
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 2);
        let mut disk = Disk::default();
        let d = dest("a.example");
        let ids = submit_files(&mut c, &mut disk, 1..=5, "u@a.example", at(0));
        // Two whole messages, delivering; three wait in their files for room.
        assert_eq!((c.len(), c.in_picture(), c.parked_count()), (5, 2, 3));
        assert_eq!(c.counts().total, 5);
        assert_eq!(c.ids(), ids);
        // Every one is tried once, first come first served, the picture never past two.
        let tried = answer_all(&mut c, &mut disk, &d, &later(), at(0));
        assert_eq!(tried, ids);
        // All deferred now: the last two stay whole, the others are parked with their
        // schedule, and their files hold what the attempt left.
        assert_eq!((c.in_picture(), c.parked_count()), (2, 3));
        for id in &ids {
            assert_eq!(disk.0[id].attempts, 1, "{id}");
            assert!(matches!(
                disk.0[id].recipients[0].status,
                RcptStatus::Deferred { .. }
            ));
        }
        // At their retry all five come back, two at a time, and are delivered.
        c.handle_timeout(at(60));
        disk.run(&mut c, at(60));
        let delivered = answer_all(&mut c, &mut disk, &d, &ok(), at(60));
        assert_eq!(delivered.len(), 5);
        assert!(c.is_empty() && disk.0.is_empty(), "{:?}", disk.0.keys());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn new_mail_takes_the_place_of_a_deferred_message_at_once() {
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 2);
        let mut disk = Disk::default();
        let d = dest("a.example");
        submit_files(&mut c, &mut disk, 1..=2, "u@a.example", at(0));
        answer_all(&mut c, &mut disk, &d, &later(), at(0));
        // The picture is full of deferred messages; new mail goes straight to delivery.
        let fresh = env(3, &["u@a.example"]);
        disk.write(&fresh);
        c.submit(fresh.clone(), None, Backing::File, at(1));
        disk.run(&mut c, at(1));
        assert_eq!((c.in_picture(), c.parked_count()), (2, 1));
        assert_eq!(c.take_job(&d, None).map(|j| j.id), Some(fresh.id));
        // The first deferred message was parked for it.
        assert_eq!(c.parked(&env(1, &[]).id), Some(false));
    }

    #[test]
    fn parked_messages_are_held_released_flushed_and_deleted() {
        let mut c = limited(
            &[
                ("a.example", relay(&["10.0.0.1:25"])),
                ("b.example", relay(&["10.0.0.2:25"])),
            ],
            1,
        );
        let mut disk = Disk::default();
        let (a, b) = (dest("a.example"), dest("b.example"));
        let [first, second, third, fourth] = [
            (1, "u@a.example"),
            (2, "u@b.example"),
            (3, "u@a.example"),
            (4, "u@b.example"),
        ]
        .map(|(n, r)| {
            let e = env(n, &[r]);
            disk.write(&e);
            c.submit(e.clone(), None, Backing::File, at(0));
            disk.run(&mut c, at(0));
            e.id
        });
        assert_eq!(c.parked_count(), 3);
        // A hold is written to the parked message's file; a held one is not loaded.
        c.hold(&second).unwrap();
        disk.run(&mut c, at(0));
        assert!(disk.0[&second].held);
        assert_eq!(c.parked(&second), Some(true));
        assert_eq!(c.counts().held, 1);
        // A delete removes its files; it is gone.
        c.delete(&third, at(0)).unwrap();
        disk.run(&mut c, at(0));
        assert!(!disk.0.contains_key(&third));
        assert_eq!(
            c.delete(&third, at(0)),
            Err(OpError::NoSuchMessage(third.clone()))
        );
        // The first is deferred; the fourth (not held) takes its place.
        assert_eq!(
            answer_all(&mut c, &mut disk, &a, &later(), at(0)),
            std::slice::from_ref(&first)
        );
        let delivering = c.take_job(&b, None).unwrap();
        assert_eq!(delivering.id, fourth);
        // A release puts the held one in line for room.
        c.release(&second, at(1)).unwrap();
        disk.run(&mut c, at(1));
        assert!(!disk.0[&second].held);
        assert_eq!(c.parked(&second), Some(false));
        assert_eq!(c.ids(), [first.clone(), second.clone(), fourth.clone()]);
        // A flush by domain wakes the parked message with a recipient there, only.
        assert_eq!(c.flush_domain("A.EXAMPLE", at(2)), 1);
        // Each delivery makes room for the next in line: the released one, then the
        // flushed one.
        c.record(&delivering, Some(&hop()), &[ok()], at(3));
        disk.run(&mut c, at(3));
        assert_eq!(answer_all(&mut c, &mut disk, &b, &ok(), at(3)), [second]);
        assert_eq!(answer_all(&mut c, &mut disk, &a, &ok(), at(3)), [first]);
        assert!(c.is_empty() && disk.0.is_empty());
    }

    #[test]
    fn a_journal_message_past_the_limit_moves_to_its_files_and_waits_there() {
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 1);
        let mut disk = Disk::default();
        let d = dest("a.example");
        submit_files(&mut c, &mut disk, [1], "u@a.example", at(0));
        disk.run(&mut c, at(0));
        let job = c.take_job(&d, None).unwrap();
        let e = env(2, &["u@a.example"]);
        let id = e.id.clone();
        c.submit(e, Some(Rc::from(&b"x\r\n"[..])), Backing::Journal(7), at(0));
        let a = disk.run(&mut c, at(0));
        assert!(
            matches!(&a[..], [Action::MoveToFile { segment: 7, env, .. }] if env.id == id),
            "{a:?}"
        );
        assert!(c.take_job(&d, None).is_none(), "it waits for room");
        // Moved, it leaves memory and waits in its files.
        let moved = match &a[0] {
            Action::MoveToFile { env, .. } => env.clone(),
            _ => unreachable!(),
        };
        disk.write(&moved);
        c.moved(&id, 7, true, at(1));
        let a = disk.run(&mut c, at(1));
        assert!(matches!(
            &a[..],
            [Action::Remove {
                backing: Backing::Journal(7),
                ..
            }]
        ));
        assert_eq!(c.parked(&id), Some(false));
        assert_eq!(c.content_in_memory(), 0);
        // Room comes: it is delivered from its files.
        c.record(&job, Some(&hop()), &[ok()], at(2));
        disk.run(&mut c, at(2));
        let job = c.take_job(&d, None).unwrap();
        assert_eq!(job.id, id);
        assert!(matches!(c.transaction(&job).unwrap().1, ContentRef::File));
    }

    /// Room for one message, taken by a delivery from files; a journal message came and
    /// is being moved to its files to wait (its move not answered yet).
    fn full_with_a_journal_message_moving() -> (QueueCore, Disk, QueueId) {
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 1);
        let mut disk = Disk::default();
        submit_files(&mut c, &mut disk, [1], "u@a.example", at(0));
        let e = env(2, &["u@a.example"]);
        let id = e.id.clone();
        c.submit(e, Some(Rc::from(&b"x\r\n"[..])), Backing::Journal(7), at(0));
        disk.run(&mut c, at(0));
        (c, disk, id)
    }

    #[test]
    fn a_flush_leaves_a_journal_message_on_its_way_to_wait_in_its_files() {
        let (mut c, mut disk, id) = full_with_a_journal_message_moving();
        assert_eq!(c.flush(at(1)), 0);
        disk.run(&mut c, at(1));
        let d = dest("a.example");
        let ids: Vec<QueueId> = std::iter::from_fn(|| c.take_job(&d, None).map(|j| j.id)).collect();
        assert_eq!(ids, [env(1, &[]).id]);
        assert_eq!(c.parked(&id), None);
    }

    #[test]
    fn a_journal_message_that_cannot_move_is_delivered_from_memory() {
        let (mut c, mut disk, id) = full_with_a_journal_message_moving();
        c.moved(&id, 7, false, at(1));
        disk.run(&mut c, at(1));
        let d = dest("a.example");
        let ids: Vec<QueueId> = std::iter::from_fn(|| c.take_job(&d, None).map(|j| j.id)).collect();
        assert_eq!(ids.last(), Some(&id));
    }

    #[test]
    fn recovery_past_the_limit_parks_messages_in_files_by_their_schedule() {
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 2);
        let mut disk = Disk::default();
        let mut files = Vec::new();
        for (n, due, held) in [
            (1, 0, false),
            (2, 0, false),
            (3, 0, false),
            (4, 600, false),
            (5, 0, true),
        ] {
            let mut e = env(n, &["u@a.example"]);
            e.next_attempt = if due == 0 { 0 } else { T0 + due };
            e.held = held;
            disk.write(&e);
            files.push(e);
        }
        assert_eq!(c.recover(files, Vec::new(), at(0), || {}), 5);
        disk.run(&mut c, at(0));
        assert_eq!((c.in_picture(), c.parked_count()), (2, 3));
        assert_eq!(c.counts().held, 1);
        // The due ones are delivered in turn; the deferred one waits for its time and
        // the held one for a release.
        let d = dest("a.example");
        assert_eq!(answer_all(&mut c, &mut disk, &d, &ok(), at(1)).len(), 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.poll_timeout(), Some(at(600)));
        c.handle_timeout(at(600));
        disk.run(&mut c, at(600));
        assert_eq!(answer_all(&mut c, &mut disk, &d, &ok(), at(600)).len(), 1);
        assert_eq!(c.ids(), [env(5, &[]).id]);
    }

    #[test]
    fn a_parked_message_that_cannot_be_read_stays_and_is_tried_again() {
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 1);
        let mut disk = Disk::default();
        let d = dest("a.example");
        submit_files(&mut c, &mut disk, 1..=2, "u@a.example", at(0));
        let second = env(2, &[]).id;
        let lost = disk.0.remove(&second).unwrap();
        answer_all(&mut c, &mut disk, &d, &ok(), at(0));
        // Its load failed: still queued, tried again at the shortest retry interval.
        assert_eq!(c.parked(&second), Some(false));
        assert_eq!(c.poll_timeout(), Some(at(60)));
        disk.write(&lost);
        c.handle_timeout(at(60));
        disk.run(&mut c, at(60));
        assert_eq!(answer_all(&mut c, &mut disk, &d, &ok(), at(60)), [second]);
        assert!(c.is_empty());
    }

    #[test]
    fn a_lower_active_limit_parks_idle_messages_down_to_it() {
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 2);
        let mut disk = Disk::default();
        submit_files(&mut c, &mut disk, 1..=2, "u@a.example", at(0));
        answer_all(&mut c, &mut disk, &dest("a.example"), &later(), at(0));
        assert_eq!(c.in_picture(), 2);
        let mut lower = (**c.config()).clone();
        lower.queue.active_limit = 1;
        c.reconfigure(Rc::new(lower), Rc::from(&[][..]), at(1));
        disk.run(&mut c, at(1));
        assert_eq!((c.in_picture(), c.parked_count()), (1, 1));
    }

    #[test]
    fn a_due_message_parked_while_others_are_dispatched_is_still_tried() {
        // Four deferred messages without a sender (no report is owed), room for two; the
        // first has nowhere to go and leaves the queue as its time comes, and the room it
        // makes is filled by parking the second before it is dispatched.
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 2);
        let mut disk = Disk::default();
        let files: Vec<Envelope> = [(1, "u@nowhere.example"), (2, "u@a.example")]
            .into_iter()
            .chain((3..=4).map(|n| (n, "u@a.example")))
            .map(|(n, rcpt)| {
                let mut e = env(n, &[rcpt]);
                e.sender.clear();
                e.next_attempt = T0 + 60;
                disk.write(&e);
                e
            })
            .collect();
        c.recover(files, Vec::new(), at(0), || {});
        disk.run(&mut c, at(0));
        assert_eq!((c.in_picture(), c.parked_count()), (2, 2));
        c.handle_timeout(at(60));
        disk.run(&mut c, at(60));
        let delivered = answer_all(&mut c, &mut disk, &dest("a.example"), &ok(), at(60));
        assert_eq!(delivered.len(), 3, "{delivered:?}");
        assert!(c.is_empty(), "{:?} left", c.ids());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn a_held_message_whose_jobs_a_new_configuration_took_back_makes_room() {
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 1);
        let mut disk = Disk::default();
        let held = submit_files(&mut c, &mut disk, [1], "u@a.example", at(0));
        c.hold(&held[0]).unwrap();
        disk.run(&mut c, at(0));
        let same = c.config().clone();
        c.reconfigure(same, Rc::from(&[][..]), at(1));
        disk.run(&mut c, at(1));
        let fresh = submit_files(&mut c, &mut disk, [2], "u@a.example", at(2));
        assert_eq!(
            c.take_job(&dest("a.example"), None).map(|j| j.id),
            Some(fresh[0].clone())
        );
        assert_eq!(c.parked(&held[0]), Some(true));
    }

    #[test]
    fn a_second_flush_does_not_try_parked_messages_twice() {
        let mut c = limited(&[("a.example", relay(&["10.0.0.1:25"]))], 1);
        let mut disk = Disk::default();
        let ids = submit_files(&mut c, &mut disk, 1..=3, "u@a.example", at(0));
        c.flush(at(1));
        c.flush(at(1));
        disk.run(&mut c, at(1));
        let tried = answer_all(&mut c, &mut disk, &dest("a.example"), &later(), at(1));
        assert_eq!(tried, ids);
        for id in &ids {
            assert_eq!(disk.0[id].attempts, 1, "{id}");
        }
    }

    #[test]
    fn a_message_whose_envelope_could_not_be_written_stays_whole() {
        let mut c = limited(
            &[
                ("a.example", relay(&["10.0.0.1:25"])),
                ("b.example", relay(&["10.0.0.2:25"])),
            ],
            1,
        );
        let mut disk = Disk::default();
        let first = env(1, &["u@a.example", "u@b.example"]);
        disk.write(&first);
        c.submit(first.clone(), None, Backing::File, at(0));
        disk.run(&mut c, at(0));
        let (a, b) = (dest("a.example"), dest("b.example"));
        let job = c.take_job(&a, None).unwrap();
        c.record(&job, Some(&hop()), &[ok()], at(0));
        let job = c.take_job(&b, None).unwrap();
        c.record(&job, Some(&hop()), &[later()], at(0));
        // The disk is full: its file still says both recipients are to be delivered.
        for action in actions(&mut c) {
            if let Action::Update(e) = action {
                c.updated(&e.id, false, at(0));
            }
        }
        assert_eq!(disk.0[&first.id].recipients[0].status, RcptStatus::Pending);
        // New mail finds no room: the message is not parked to make some, which would
        // read it back from that file.
        let fresh = submit_files(&mut c, &mut disk, [2], "u@a.example", at(1));
        assert_eq!(c.parked(&first.id), None);
        assert_eq!(c.parked(&fresh[0]), Some(false));
        // At its retry only the deferred recipient is tried; then the new mail goes.
        c.handle_timeout(at(60));
        disk.run(&mut c, at(60));
        assert!(c.take_job(&a, None).is_none());
        assert_eq!(answer_all(&mut c, &mut disk, &b, &ok(), at(60)), [first.id]);
        assert_eq!(answer_all(&mut c, &mut disk, &a, &ok(), at(60)), fresh);
        assert!(c.is_empty());
    }

    #[test]
    fn mx_hosts_from_our_own_preference_on_are_dropped() {
        let mx = |preference: u16, name: &str, ip: [u8; 4]| MxHost {
            preference,
            name: name.into(),
            addresses: vec![IpAddr::from(ip)],
        };
        let us = IpAddr::from([192, 0, 2, 1]);
        let listens_at = |ip: IpAddr| ip == us;
        let hosts = vec![
            mx(10, "mx1.a.example", [198, 51, 100, 25]),
            mx(20, "backup.a.example", [192, 0, 2, 1]),
            mx(20, "other.a.example", [198, 51, 100, 26]),
            mx(30, "last.a.example", [198, 51, 100, 27]),
        ];
        let kept = hosts_before_ourselves(hosts.clone(), "gw.example.com", listens_at).unwrap();
        assert_eq!(kept, hosts[..1]);
        // Named by our host name, whatever its address.
        let named = vec![
            mx(5, "mx0.a.example", [198, 51, 100, 24]),
            mx(10, "GW.example.com.", [198, 51, 100, 99]),
        ];
        let kept = hosts_before_ourselves(named.clone(), "gw.example.com", listens_at).unwrap();
        assert_eq!(kept, named[..1]);
        // We are the best (or the only) host: the mail loops.
        assert_eq!(
            hosts_before_ourselves(hosts[1..].to_vec(), "gw.example.com", listens_at),
            None
        );
        // Without us, all stay in their order.
        assert_eq!(
            hosts_before_ourselves(hosts.clone(), "gw.example.com", |_| false),
            Some(hosts)
        );
    }

    #[test]
    fn time_arithmetic_saturates() {
        assert_eq!(Time::from_secs(u64::MAX).secs(), u64::MAX / 1_000_000);
        assert_eq!(Time(5).since(Time(9)), Duration::ZERO);
        assert_eq!(Time(u64::MAX).after(Duration::from_secs(1)), Time(u64::MAX));
        assert_eq!(at(2).since(at(1)), Duration::from_secs(1));
    }
}
