//! Recipient verification for domains routed to internal relays: each RCPT is checked
//! live against the internal server before it is accepted, so mail for people who do not
//! exist is refused at the door instead of bounced later (no backscatter).
//!
//! This is the async layer around [`CalloutClient`]: it connects, keeps a few idle
//! connections per host for reuse, and caches answers. The protocol is in the core.

use crate::proto::logtext::Escaped;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use smol::future::FutureExt as _;

use super::pump::{self, Peer};
use crate::proto::smtp::callout::{CalloutClient, CalloutConfig, CalloutEvent, CalloutOutcome};
use crate::proto::smtp::reply::Reply;

/// Idle connections kept per internal host. A verify that finds none opens a new one;
/// one that finds the pool full closes its connection after use. Each costs a socket and
/// a [`CALLOUT_READ_BUFFER`].
pub const MAX_IDLE_PER_HOST: usize = 4;

/// How long an idle connection is kept for reuse. Postfix's smtpd closes an idle client
/// after 300 s; we hang up well before, so a reused connection is rarely found dead.
pub const MAX_IDLE: Duration = Duration::from_secs(10);

/// Answers kept in the verdict cache. An entry holds a lower-cased address of at most
/// 254 octets (RFC 5321 §4.5.3.1.3) and a flag and expiry: about 3.2 MiB when full of
/// the longest addresses, well under 1 MiB for ordinary ones.
pub const MAX_CACHE_ENTRIES: usize = 10_000;

/// Read buffer per callout connection. Replies to callout commands are short; a longer
/// reply is simply read in more than one go.
pub const CALLOUT_READ_BUFFER: usize = 4 * 1024;

/// What to answer when no internal host can be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// `451 4.4.3`: the client tries again later.
    TempFail,
    /// Accept the recipient unverified (not cached); mail for unknown people may then
    /// bounce later.
    Accept,
}

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// How long a recipient found to exist stays known.
    pub positive_ttl: Duration,
    /// How long a recipient found not to exist stays known.
    pub negative_ttl: Duration,
    /// Bounds one host's connect, greeting, EHLO and answer together.
    pub timeout: Duration,
    pub unreachable: Unreachable,
    /// The name we give in EHLO/HELO.
    pub helo_name: String,
}

impl Default for VerifyOptions {
    /// Postfix's `address_verify_positive_expire_time` is days; an appliance in front of
    /// a changing directory forgets sooner: 1 h positive, 10 min negative, 10 s timeout.
    fn default() -> Self {
        VerifyOptions {
            positive_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            unreachable: Unreachable::TempFail,
            helo_name: "localhost".into(),
        }
    }
}

/// What the inbound service answers to the RCPT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    /// `550 5.1.1 <rcpt>: Recipient address rejected: User unknown`.
    Reject(Reply),
    /// `450 4.1.1` when the internal server had no answer, `451 4.4.3` when no internal
    /// server could be asked.
    TempFail(Reply),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Answered from the cache, without asking the internal server.
    pub cached: bool,
}

/// One cached answer.
#[derive(Clone, Copy, Debug)]
struct Cached {
    exists: bool,
    expires: Instant,
}

struct Idle {
    conn: CalloutConnection,
    since: Instant,
}

#[derive(Default)]
struct State {
    cache: HashMap<String, Cached>,
    idle: HashMap<SocketAddr, Vec<Idle>>,
}

/// Verifies recipients against internal servers, with connection reuse and a cache.
///
/// Single-threaded: clones share one cache and one pool.
#[derive(Clone)]
pub struct Verifier {
    options: Rc<VerifyOptions>,
    state: Rc<RefCell<State>>,
}

/// How one host's attempt ended.
enum Attempt {
    /// The host answered (or said it cannot now): no other host is asked.
    Answered(CalloutOutcome),
    /// The host could not be asked; the reason, for the log.
    Failed(String),
}

impl Verifier {
    pub fn new(options: VerifyOptions) -> Verifier {
        Verifier {
            options: Rc::new(options),
            state: Rc::new(RefCell::new(State::default())),
        }
    }

    /// Asks the first reachable of `hosts`, in order, whether `rcpt` exists; answers from
    /// the cache when it can. `now` is the time of the RCPT; it ages the cache and pool.
    pub async fn verify(&self, rcpt: &str, hosts: &[SocketAddr], now: Instant) -> Verdict {
        let key = rcpt.to_ascii_lowercase();
        self.prune_idle(now);
        if let Some(exists) = self.cached(&key, now) {
            let outcome = if exists {
                log::info!(target: "verify", "verify <{}>: exists (cached)", Escaped(rcpt));
                Outcome::Accept
            } else {
                log::info!(target: "verify", "verify <{}>: refused (cached)", Escaped(rcpt));
                Outcome::Reject(user_unknown(rcpt))
            };
            return Verdict {
                outcome,
                cached: true,
            };
        }
        let mut last_failure = String::from("no host to ask");
        for &host in hosts {
            let relay = relay_name(host);
            let attempt = self.attempt(rcpt, host, now).or(async {
                Timer::after(self.options.timeout).await;
                Attempt::Failed("timed out".into())
            });
            match attempt.await {
                Attempt::Answered(CalloutOutcome::Exists) => {
                    log::info!(target: "verify", "verify <{}>: exists at {relay}", Escaped(rcpt));
                    self.remember(key, true, now);
                    return fresh(Outcome::Accept);
                }
                Attempt::Answered(CalloutOutcome::Refused(reply)) => {
                    log::info!(target: "verify", "verify <{}>: refused by {relay}: {}", Escaped(rcpt), Escaped(&reply.to_string()));
                    self.remember(key, false, now);
                    return fresh(Outcome::Reject(user_unknown(rcpt)));
                }
                Attempt::Answered(CalloutOutcome::Unsure(reply)) => {
                    log::info!(target: "verify", "verify <{}>: unsure at {relay}: {}", Escaped(rcpt), Escaped(&reply.to_string()));
                    return fresh(Outcome::TempFail(Reply::new(
                        450,
                        "4.1.1",
                        format!("<{rcpt}>: Recipient address rejected: unverified address"),
                    )));
                }
                Attempt::Failed(reason) => {
                    log::debug!(target: "verify", "verify <{}>: {relay}: {}", Escaped(rcpt), Escaped(&reason));
                    last_failure = format!("{relay}: {reason}");
                }
            }
        }
        match self.options.unreachable {
            Unreachable::TempFail => {
                log::info!(target: "verify",
                    "verify <{}>: no internal host reachable ({}); deferred", Escaped(rcpt), Escaped(&last_failure));
                fresh(Outcome::TempFail(Reply::new(
                    451,
                    "4.4.3",
                    "Recipient verification temporarily unavailable",
                )))
            }
            Unreachable::Accept => {
                log::info!(target: "verify",
                    "verify <{}>: no internal host reachable ({}); accepted unverified", Escaped(rcpt), Escaped(&last_failure));
                fresh(Outcome::Accept)
            }
        }
    }

    /// Number of answers in the cache, expired ones included until they are pruned.
    pub fn cache_len(&self) -> usize {
        self.state.borrow().cache.len()
    }

    /// Number of idle connections kept for reuse.
    pub fn idle_connections(&self) -> usize {
        self.state.borrow().idle.values().map(Vec::len).sum()
    }

    /// One host: an idle connection if there is one, else a new one. A reused connection
    /// the server has since closed is replaced by a new one once.
    async fn attempt(&self, rcpt: &str, host: SocketAddr, now: Instant) -> Attempt {
        if let Some(mut conn) = self.take_idle(host) {
            let outcome = conn.verify(rcpt).await;
            if !conn.client.is_closed() {
                self.put_idle(conn, now);
                return Attempt::Answered(outcome);
            }
            if let Attempt::Answered(outcome) = settled_or_failed(outcome) {
                return Attempt::Answered(outcome);
            }
            log::debug!(target: "verify", "reused connection to {} had closed", relay_name(host));
        }
        let mut conn = match CalloutConnection::open(host, &self.options).await {
            Ok(conn) => conn,
            Err(reason) => return Attempt::Failed(reason),
        };
        let outcome = conn.verify(rcpt).await;
        if conn.client.is_closed() {
            return settled_or_failed(outcome);
        }
        self.put_idle(conn, now);
        Attempt::Answered(outcome)
    }

    fn cached(&self, key: &str, now: Instant) -> Option<bool> {
        let mut state = self.state.borrow_mut();
        let entry = *state.cache.get(key)?;
        if entry.expires <= now {
            state.cache.remove(key);
            return None;
        }
        Some(entry.exists)
    }

    fn remember(&self, key: String, exists: bool, now: Instant) {
        let ttl = if exists {
            self.options.positive_ttl
        } else {
            self.options.negative_ttl
        };
        let Some(expires) = now.checked_add(ttl) else {
            return;
        };
        let mut state = self.state.borrow_mut();
        let cache = &mut state.cache;
        if cache.len() >= MAX_CACHE_ENTRIES && !cache.contains_key(&key) {
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= MAX_CACHE_ENTRIES {
                let soonest = cache
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    cache.remove(&soonest);
                }
            }
        }
        cache.insert(key, Cached { exists, expires });
    }

    fn take_idle(&self, host: SocketAddr) -> Option<CalloutConnection> {
        let mut state = self.state.borrow_mut();
        let pool = state.idle.get_mut(&host)?;
        let idle = pool.pop()?;
        if pool.is_empty() {
            state.idle.remove(&host);
        }
        Some(idle.conn)
    }

    /// Keeps `conn` for reuse. Its RSET may still be unanswered: the next verify on it
    /// waits for that reply first.
    fn put_idle(&self, conn: CalloutConnection, now: Instant) {
        if !conn.client.is_open() {
            conn.hang_up();
            return;
        }
        let mut state = self.state.borrow_mut();
        let pool = state.idle.entry(conn.peer).or_default();
        if pool.len() >= MAX_IDLE_PER_HOST {
            drop(state);
            conn.hang_up();
            return;
        }
        pool.push(Idle { conn, since: now });
    }

    /// Hangs up connections idle for longer than [`MAX_IDLE`].
    fn prune_idle(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            for pool in state.idle.values_mut() {
                let (keep, old): (Vec<Idle>, Vec<Idle>) = std::mem::take(pool)
                    .into_iter()
                    .partition(|i| now.saturating_duration_since(i.since) < MAX_IDLE);
                *pool = keep;
                expired.extend(old);
            }
            state.idle.retain(|_, pool| !pool.is_empty());
        }
        for idle in expired {
            idle.conn.hang_up();
        }
    }
}

/// A verify on a connection that then closed: an answer given before the end (a 421
/// after the RCPT reply, an RSET refused) stands; an `Unsure` means the host could not be
/// asked.
fn settled_or_failed(outcome: CalloutOutcome) -> Attempt {
    match outcome {
        CalloutOutcome::Unsure(reply) => Attempt::Failed(reply.one_line()),
        answered => Attempt::Answered(answered),
    }
}

fn fresh(outcome: Outcome) -> Verdict {
    Verdict {
        outcome,
        cached: false,
    }
}

fn user_unknown(rcpt: &str) -> Reply {
    Reply::new(
        550,
        "5.1.1",
        format!("<{rcpt}>: Recipient address rejected: User unknown"),
    )
}

/// `host[ip]:port` as Postfix logs a relay; we know the host only by its address.
fn relay_name(addr: SocketAddr) -> String {
    format!("{}[{}]:{}", addr.ip(), addr.ip(), addr.port())
}

/// One callout connection: a TCP stream driven by the callout core.
struct CalloutConnection {
    stream: Async<TcpStream>,
    client: CalloutClient,
    peer: SocketAddr,
    buf: Box<[u8]>,
    /// A write that stalls this long ends the connection; the verify as a whole is
    /// bounded by the same timeout anyway.
    write_timeout: Duration,
}

impl CalloutConnection {
    /// Connects and runs the greeting and EHLO/HELO. The caller bounds the time.
    async fn open(peer: SocketAddr, options: &VerifyOptions) -> Result<Self, String> {
        let stream = pump::connect(peer).await.map_err(|e| e.to_string())?;
        let config = CalloutConfig {
            helo_name: options.helo_name.clone(),
            reply_timeout: options.timeout,
        };
        let mut conn = CalloutConnection {
            stream,
            client: CalloutClient::new(config, Instant::now()),
            peer,
            buf: vec![0; CALLOUT_READ_BUFFER].into_boxed_slice(),
            write_timeout: options.timeout,
        };
        loop {
            match conn.step().await {
                Some(CalloutEvent::Ready { .. }) => return Ok(conn),
                Some(CalloutEvent::Closed(Some(reply))) => {
                    return Err(format!("host refused to talk to us: {reply}"));
                }
                Some(CalloutEvent::Closed(None)) => return Err("connection closed".into()),
                None if conn.client.is_closed() => return Err("connection closed".into()),
                Some(CalloutEvent::Verified { .. }) | None => {}
            }
        }
    }

    /// Runs one verify to its answer.
    async fn verify(&mut self, rcpt: &str) -> CalloutOutcome {
        self.client.verify(rcpt, Instant::now());
        loop {
            match self.step().await {
                Some(CalloutEvent::Verified { outcome, .. }) => return outcome,
                Some(CalloutEvent::Closed(reason)) => {
                    // The core answers a pending verify before closing; this is reached
                    // only if it closed with none pending.
                    let reply = reason
                        .unwrap_or_else(|| Reply::new(451, "4.4.2", "Callout connection closed"));
                    return CalloutOutcome::Unsure(reply);
                }
                None if self.client.is_closed() => {
                    return CalloutOutcome::Unsure(Reply::new(
                        451,
                        "4.4.2",
                        "Callout connection closed",
                    ));
                }
                Some(CalloutEvent::Ready { .. }) | None => {}
            }
        }
    }

    /// Says QUIT without waiting: one attempt to write it, then the socket closes. The
    /// verdict never waits for a goodbye.
    fn hang_up(mut self) {
        self.client.quit(Instant::now());
        while let Some(out) = self.client.poll_transmit() {
            if self.stream.get_ref().write(&out).is_err() {
                break;
            }
        }
    }

    /// One turn of the pump: write what the core has, then either hand it an event
    /// already waiting, or wait for input or its deadline.
    async fn step(&mut self) -> Option<CalloutEvent> {
        let peer = Peer {
            addr: self.peer,
            write_timeout: self.write_timeout,
            log_target: "verify",
        };
        pump::turn(&mut self.client, &mut self.stream, &mut self.buf, peer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_evicts_the_soonest_expiry() {
        let verifier = Verifier::new(VerifyOptions::default());
        let now = Instant::now();
        // One negative answer, which expires first, then positives to fill the cache.
        verifier.remember("first@example.com".into(), false, now);
        for i in 1..MAX_CACHE_ENTRIES {
            verifier.remember(format!("u{i}@example.com"), true, now);
        }
        assert_eq!(verifier.cache_len(), MAX_CACHE_ENTRIES);
        verifier.remember("last@example.com".into(), true, now);
        assert_eq!(verifier.cache_len(), MAX_CACHE_ENTRIES);
        assert_eq!(verifier.cached("first@example.com", now), None);
        assert_eq!(verifier.cached("last@example.com", now), Some(true));
        assert_eq!(verifier.cached("u1@example.com", now), Some(true));
        // Refreshing a key already present evicts nothing.
        verifier.remember("u1@example.com".into(), false, now);
        assert_eq!(verifier.cached("u2@example.com", now), Some(true));
        assert_eq!(verifier.cached("u1@example.com", now), Some(false));
    }

    #[test]
    fn expired_answers_are_forgotten() {
        let verifier = Verifier::new(VerifyOptions::default());
        let now = Instant::now();
        verifier.remember("a@example.com".into(), true, now);
        verifier.remember("b@example.com".into(), false, now);
        let negative = VerifyOptions::default().negative_ttl;
        let positive = VerifyOptions::default().positive_ttl;
        assert_eq!(verifier.cached("b@example.com", now + negative), None);
        assert_eq!(verifier.cached("a@example.com", now + negative), Some(true));
        assert_eq!(verifier.cached("a@example.com", now + positive), None);
        assert_eq!(verifier.cache_len(), 0);
    }

    #[test]
    fn replies_and_relay_names() {
        assert_eq!(
            user_unknown("Bob@example.com").one_line(),
            "550 5.1.1 <Bob@example.com>: Recipient address rejected: User unknown"
        );
        assert_eq!(
            relay_name("127.0.0.1:2526".parse().unwrap()),
            "127.0.0.1[127.0.0.1]:2526"
        );
    }
}
