//! The queue manager's core on virtual time: messages arrive over hours of simulated
//! traffic, next hops go down and come back, recipients fail for a while or for good, the
//! administrator holds and releases mail and replaces the configuration. No socket, no
//! file, no sleep: the test plays the layer's part, and every run is the same run.
//!
//! What must hold: every message leaves the queue exactly once, nothing is delivered
//! twice, retries follow the schedule, a failed host is passed over for its avoid time
//! while the other host of its relay list carries the mail, expired mail and permanent
//! failures are reported exactly once, a delay notice goes exactly once, held mail stays
//! put, and mail waiting when the configuration changes goes by the new routes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use drawbridge::proto::config::{Config, DomainPattern, NextHop, RelayHost, Route};
use drawbridge::proto::queue::core::DestKey;
use drawbridge::proto::queue::core::{Action, Backing, Hop, QueueCore, Time, Unreachable};
use drawbridge::proto::queue::dsn::ReportKind;
use drawbridge::proto::queue::{Envelope, Origin, QueueId, RcptStatus, Recipient};
use drawbridge::proto::smtp::reply::Reply;

mod common;
use common::Rng;

const START: u64 = 1_700_000_000;
const RETRY: [u64; 3] = [60, 300, 900];
const AVOID: u64 = 60;
const LIFETIME: u64 = 4 * 3600;
const DELAY_NOTICE: u64 = 3600;
/// When the configuration is replaced: b.example moves from a dead host to a live one.
const RECONFIGURE_AT: u64 = 3000;
/// Messages arrive during the first this many seconds.
const ARRIVALS: u64 = 2400;

fn host(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 25))
}

fn route(hosts: &[u8]) -> Route {
    let mut r = Route::new(NextHop::Relay(
        hosts.iter().map(|&n| RelayHost::Address(host(n))).collect(),
    ));
    r.avoid_time = Duration::from_secs(AVOID);
    r.concurrency = 3;
    r
}

fn config(b_hosts: &[u8]) -> Rc<Config> {
    let mut c = Config::default();
    let mut add = |d: &str, r| {
        c.routes.insert(DomainPattern::Exact(d.into()), r);
    };
    add("a.example", route(&[1, 2]));
    add("b.example", route(b_hosts));
    add("c.example", route(&[5]));
    c.queue.retry = RETRY.iter().map(|&s| Duration::from_secs(s)).collect();
    c.queue.max_lifetime = Duration::from_secs(LIFETIME);
    c.queue.delay_notice = Duration::from_secs(DELAY_NOTICE);
    Rc::new(c)
}

/// Whether a host takes connections at `t` seconds into the run: host 1 is down for the
/// first 2000 s, host 3 and host 5 are always down.
fn host_up(h: SocketAddr, t: u64) -> bool {
    match h {
        h if h == host(1) => t >= 2000,
        h if h == host(3) || h == host(5) => false,
        _ => true,
    }
}

/// What a live host answers for a recipient at `t`: `bad…` fails for good, `slow…` fails
/// for now until 5000 s, the rest is accepted.
fn answer(address: &str, t: u64) -> Reply {
    if address.starts_with("bad") {
        Reply::new(550, "5.1.1", "no such user")
    } else if address.starts_with("slow") && t < 5000 {
        Reply::new(450, "4.2.0", "try later")
    } else {
        Reply::new(250, "2.0.0", "ok")
    }
}

fn envelope(n: u64, arrived: u64, rcpts: Vec<String>) -> Envelope {
    Envelope {
        id: format!("{:016X}", 0x1000 + n).parse().expect("a queue id"),
        arrived,
        origin: Origin::Inbound,
        client_ip: None,
        client_helo: "c.example.org".into(),
        sender: format!("sender{n}@example.org"),
        size: 100,
        eight_bit: false,
        smtputf8: false,
        ret: None,
        envid: None,
        recipients: rcpts
            .into_iter()
            .map(|address| Recipient {
                address,
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

/// Everything the simulated layer saw.
#[derive(Default)]
struct World {
    /// Envelope files on the simulated disk.
    disk: HashMap<QueueId, Envelope>,
    removed: Vec<QueueId>,
    /// (message, recipient address) → how many times delivered.
    delivered: HashMap<(QueueId, String), u32>,
    /// Reports queued: (message, kind, recipient addresses, time).
    reports: Vec<(QueueId, ReportKind, Vec<String>, u64)>,
    /// Per message, each retry decided: (when, attempts so far, next attempt), in
    /// seconds since the start.
    retries: HashMap<QueueId, Vec<(u64, u32, u64)>>,
    /// Per host, when it was marked failed; and when connections were made to it.
    failed_at: HashMap<SocketAddr, Vec<u64>>,
    connected_at: HashMap<SocketAddr, Vec<u64>>,
    /// Per message, the times a connection took one of its jobs.
    taken: HashMap<QueueId, Vec<u64>>,
    /// Parked messages read back from the disk.
    loads: usize,
    /// The most messages the core held whole at once.
    most_in_picture: usize,
}

struct Sim {
    core: QueueCore,
    world: World,
    /// Recipient addresses by message, as submitted.
    rcpts: HashMap<QueueId, Vec<String>>,
    /// Arrival time by message, unix seconds.
    arrived: HashMap<QueueId, u64>,
    now: u64,
}

impl Sim {
    fn t(&self) -> u64 {
        self.now - START
    }

    fn time(&self) -> Time {
        Time::from_secs(self.now)
    }

    /// Plays the layer: carries out every action, running connections to completion.
    fn settle(&mut self) {
        let mut open = Vec::new();
        loop {
            while let Some(action) = self.core.poll_action() {
                match action {
                    Action::Open(dest) => open.push(dest),
                    // No connection idles in this world: each one ends when it runs dry.
                    Action::Ring(..) => {}
                    Action::Update(env) => {
                        self.note_retry(&env);
                        let id = env.id.clone();
                        self.world.disk.insert(id.clone(), env);
                        self.core.updated(&id, true, self.time());
                    }
                    Action::MoveToFile { env, segment, .. } => {
                        self.note_retry(&env);
                        let id = env.id.clone();
                        self.world.disk.insert(id.clone(), env);
                        self.core.moved(&id, segment, true, self.time());
                    }
                    Action::Load(id) => {
                        let env = self.world.disk.get(&id).cloned();
                        self.world.loads += 1;
                        self.core
                            .loaded(&id, env.ok_or("no such file".into()), self.time());
                    }
                    Action::SetHeld { id, held } => {
                        if let Some(env) = self.world.disk.get_mut(&id) {
                            env.held = held;
                        }
                    }
                    Action::Remove { id, backing } => {
                        if backing == Backing::File {
                            self.world.disk.remove(&id);
                        }
                        if self.core.envelope(&id).is_none() && backing == Backing::File {
                            self.world.removed.push(id);
                        }
                    }
                    Action::Report { id, reports } => {
                        let env = self.core.envelope(&id).expect("reported message").clone();
                        for (kind, idx) in reports {
                            let who = idx
                                .iter()
                                .map(|&i| env.recipients[i].address.clone())
                                .collect();
                            self.world.reports.push((id.clone(), kind, who, self.t()));
                        }
                        self.core.reports_queued(&id, &[], self.time());
                    }
                }
            }
            let Some(dest) = open.pop() else { break };
            self.connection(dest);
        }
    }

    /// Notes a new retry decision in a written envelope.
    fn note_retry(&mut self, env: &Envelope) {
        let t = self.t();
        let list = self.world.retries.entry(env.id.clone()).or_default();
        if env.attempts > 0 && list.last().is_none_or(|&(_, a, _)| a != env.attempts) {
            list.push((t, env.attempts, env.next_attempt - START));
        }
    }

    /// One connection: hosts in the core's order, then jobs until there are none.
    fn connection(&mut self, dest: DestKey) {
        let epoch = self.core.epoch();
        let mut connected: Option<SocketAddr> = None;
        let t = self.t();
        while let Some(job) = self.core.take_job(&dest, Some(epoch)) {
            self.world.taken.entry(job.id.clone()).or_default().push(t);
            // All hosts passed over: the jobs fail below, as the layer's would.
            let mut why = Unreachable::from(Reply::new(451, "4.4.1", "connect failed"));
            let hosts = match connected {
                None => match self.core.hosts_to_try(&dest, None, self.time()) {
                    Ok(hosts) => hosts,
                    Err(passed_over) => {
                        why = passed_over;
                        Vec::new()
                    }
                },
                Some(_) => Vec::new(),
            };
            for (h, _) in hosts {
                if host_up(h, t) {
                    self.world.connected_at.entry(h).or_default().push(t);
                    connected = Some(h);
                    break;
                }
                self.world.failed_at.entry(h).or_default().push(t);
                self.core.host_failed(&dest, h, &why.reply, self.time());
            }
            let Some(h) = connected else {
                self.core.destination_failed(&dest, job, &why, self.time());
                break;
            };
            let (msg, _) = self.core.transaction(&job).expect("queued message");
            let replies: Vec<Reply> = msg.rcpts.iter().map(|r| answer(&r.address, t)).collect();
            for (r, reply) in msg.rcpts.iter().zip(&replies) {
                if reply.is_positive() {
                    *self
                        .world
                        .delivered
                        .entry((job.id.clone(), r.address.clone()))
                        .or_default() += 1;
                }
            }
            let hop = Hop {
                name: h.ip().to_string(),
                addr: h,
                conn_use: 1,
                setup: Duration::ZERO,
                transmit: Duration::ZERO,
            };
            self.core.record(&job, Some(&hop), &replies, self.time());
        }
        self.core.worker_gone(&dest);
    }
}

#[test]
fn hours_of_traffic_on_virtual_time() {
    for seed in [1u64, 7, 42] {
        run(seed, None);
    }
}

/// The same traffic with room for only a few whole messages: the rest wait parked in
/// their files, and everything above still holds.
#[test]
fn hours_of_traffic_with_a_small_active_limit() {
    for seed in [1u64, 7, 42] {
        run(seed, Some(4));
    }
}

fn limited(config: Rc<Config>, active_limit: Option<u32>) -> Rc<Config> {
    let mut c = (*config).clone();
    if let Some(limit) = active_limit {
        c.queue.active_limit = limit;
    }
    Rc::new(c)
}

fn run(seed: u64, active_limit: Option<u32>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut sim = Sim {
        core: QueueCore::new(limited(config(&[3]), active_limit), Rc::from(&[][..])),
        world: World::default(),
        rcpts: HashMap::new(),
        arrived: HashMap::new(),
        now: START,
    };
    // Arrivals: (time, envelope).
    let mut arrivals: BTreeMap<u64, Vec<Envelope>> = BTreeMap::new();
    let kinds = ["ok", "slow", "bad"];
    let domains = ["a.example", "b.example", "c.example"];
    for n in 0..120u64 {
        let t = START + rng.below(ARRIVALS as usize) as u64;
        let rcpts: Vec<String> = (0..1 + rng.below(3))
            .map(|k| {
                let kind = kinds[rng.below(kinds.len())];
                let domain = domains[rng.below(domains.len())];
                format!("{kind}{n}.{k}@{domain}")
            })
            .collect();
        arrivals.entry(t).or_default().push(envelope(n, t, rcpts));
    }
    let total: usize = arrivals.values().map(Vec::len).sum();
    // The administrator holds the first message to arrive after 500 s, and releases it
    // at 4000 s.
    let mut held: Option<(QueueId, u64)> = None;
    let mut reconfigured = false;
    let mut reconfigured_at = 0;
    let mut released = false;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(
            steps < 100_000,
            "seed {seed}: the simulation does not settle"
        );
        let next_arrival = arrivals.keys().next().copied();
        let next_timer = sim.core.poll_timeout().map(Time::secs);
        let mut events = [
            next_arrival,
            next_timer,
            (!reconfigured).then_some(START + RECONFIGURE_AT),
            (!released && held.is_some()).then_some(START + 4000),
        ];
        events.sort_by_key(|e| e.unwrap_or(u64::MAX));
        let Some(next) = events[0] else {
            break;
        };
        sim.now = sim.now.max(next);
        if let Some(list) = arrivals.remove(&sim.now) {
            for env in list {
                let id = env.id.clone();
                sim.rcpts.insert(
                    id.clone(),
                    env.recipients.iter().map(|r| r.address.clone()).collect(),
                );
                sim.arrived.insert(id.clone(), env.arrived);
                sim.world.disk.insert(id.clone(), env.clone());
                sim.core.submit(env, None, Backing::File, sim.time());
                if held.is_none() && sim.t() > 500 && sim.core.envelope(&id).is_some() {
                    sim.core.hold(&id).unwrap();
                    held = Some((id, sim.t()));
                }
            }
        }
        if !reconfigured && sim.t() >= RECONFIGURE_AT {
            reconfigured = true;
            reconfigured_at = sim.t();
            sim.core.reconfigure(
                limited(config(&[4]), active_limit),
                std::rc::Rc::from(Vec::new()),
                sim.time(),
            );
        }
        if !released && sim.t() >= 4000 {
            if let Some((id, _)) = &held {
                released = true;
                // It may have been settled by its first attempt before the hold.
                let _ = sim.core.release(id, sim.time());
            }
        }
        sim.core.handle_timeout(sim.time());
        sim.settle();
        let whole = sim.core.in_picture();
        sim.world.most_in_picture = sim.world.most_in_picture.max(whole);
    }
    let w = &sim.world;
    if let Some(limit) = active_limit {
        assert!(
            w.most_in_picture <= limit as usize,
            "seed {seed}: {} whole messages",
            w.most_in_picture
        );
        assert!(w.loads > 50, "seed {seed}: {} loads", w.loads);
    } else {
        assert_eq!(w.loads, 0, "seed {seed}");
    }

    // Nothing is lost and nothing leaves twice.
    assert!(sim.core.is_empty(), "seed {seed}: {} left", sim.core.len());
    let unique: HashSet<&QueueId> = w.removed.iter().collect();
    assert_eq!(unique.len(), w.removed.len(), "seed {seed}: removed twice");
    assert_eq!(w.removed.len(), total, "seed {seed}");
    assert!(w.disk.is_empty(), "seed {seed}: files left behind");

    // Each recipient: delivered exactly once, or reported exactly once.
    for (id, rcpts) in &sim.rcpts {
        for address in rcpts {
            let delivered = w
                .delivered
                .get(&(id.clone(), address.clone()))
                .copied()
                .unwrap_or(0);
            let failures = w
                .reports
                .iter()
                .filter(|(rid, kind, who, _)| {
                    rid == id && *kind == ReportKind::Failure && who.contains(address)
                })
                .count();
            let delays = w
                .reports
                .iter()
                .filter(|(rid, kind, who, _)| {
                    rid == id && *kind == ReportKind::Delay && who.contains(address)
                })
                .count();
            assert!(
                delays <= 1,
                "seed {seed}: {address}: {delays} delay notices"
            );
            if address.starts_with("bad") && !address.ends_with("c.example") {
                assert_eq!((delivered, failures), (0, 1), "seed {seed}: {address}");
            } else if address.ends_with("c.example") {
                // Never reachable: it expires, reported once, after a delay notice
                // (except a message whose report was owed before its first delay).
                assert_eq!((delivered, failures), (0, 1), "seed {seed}: {address}");
                let expired_at = w
                    .reports
                    .iter()
                    .find(|(rid, kind, who, _)| {
                        rid == id && *kind == ReportKind::Failure && who.contains(address)
                    })
                    .map(|r| r.3)
                    .unwrap();
                let arrived = sim.arrived[id];
                assert!(
                    expired_at + START >= arrived + LIFETIME,
                    "seed {seed}: {address} expired early"
                );
                assert_eq!(delays, 1, "seed {seed}: {address}");
            } else {
                assert_eq!((delivered, failures), (1, 0), "seed {seed}: {address}");
            }
        }
    }

    // Retries follow the schedule: after the k-th attempt the next is RETRY[k] later (the
    // last step repeats), and the message is tried exactly then, unless the administrator
    // held the message.
    let held_id = held.as_ref().map(|(id, _)| id.clone());
    let mut checked = 0;
    for (id, retries) in &w.retries {
        for (k, &(t, attempts, next)) in retries.iter().enumerate() {
            let step = RETRY[(attempts as usize - 1).min(RETRY.len() - 1)];
            assert_eq!(next - t, step, "seed {seed}: {id} attempt {attempts}");
            if Some(id) == held_id.as_ref() {
                continue;
            }
            if let Some(&(t2, a2, _)) = retries.get(k + 1) {
                // A waiting message whose route the new configuration changed is tried
                // again at once, by the new route.
                if t2 == reconfigured_at && t2 < next {
                    assert_eq!(a2, attempts + 1, "seed {seed}: {id}");
                    continue;
                }
                // A try whose hosts were all passed over (another message found them
                // down moments before) is no attempt: the attempt that counts may come
                // a retry step or more later, never earlier.
                assert_eq!(a2, attempts + 1, "seed {seed}: {id}");
                assert!(t2 >= next, "seed {seed}: {id} tried early");
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "seed {seed}: only {checked} retries checked");

    // A failed host is not tried again within its avoid time.
    for (h, fails) in &w.failed_at {
        for f in fails {
            let early = w
                .connected_at
                .get(h)
                .into_iter()
                .flatten()
                .chain(w.failed_at.get(h).into_iter().flatten().filter(|x| *x != f))
                .any(|c| c > f && *c < f + AVOID);
            assert!(
                !early,
                "seed {seed}: {h} tried within {AVOID}s of failing at {f}"
            );
        }
    }
    // Host 1 was down for 2000 s; host 2 carried a.example meanwhile.
    assert!(
        w.connected_at[&host(2)].iter().any(|&t| t < 2000),
        "seed {seed}"
    );
    assert!(
        w.failed_at[&host(1)].iter().all(|&t| t < 2000),
        "seed {seed}"
    );
    // b.example mail went nowhere before the new configuration, and only to host 4 after.
    assert!(!w.connected_at.contains_key(&host(3)), "seed {seed}");
    assert!(
        w.connected_at[&host(4)]
            .iter()
            .all(|&t| t >= RECONFIGURE_AT),
        "seed {seed}"
    );
    // The held message was not taken between its hold and its release.
    if let Some((id, at)) = &held {
        let during = w
            .taken
            .get(id)
            .into_iter()
            .flatten()
            .any(|&t| t > *at && t < 4000);
        assert!(!during, "seed {seed}: held message delivered");
    }
}
