//! Brute-force throttling of authentication (SPEC §6). Pure bookkeeping: the time comes
//! in as an argument.
//!
//! Every failure counts against four keys: the client's address, its network (the /24 of
//! an IPv4 address, the /64 of an IPv6 one), the user name it tried, and the pair of
//! address and user name. Each failure makes the next answer wait longer; the address, the
//! network and the user name each have a limit ([`Limits`]) past which that key is
//! blocked for a while. A success forgives exactly the failures of that user from that
//! address, in every count they were added to: a client that logs in as itself between
//! guesses at someone else's password gains nothing, while a user who mistyped and then
//! got it right is not held to the typos.
//!
//! The table is bounded ([`Limits::table_size`] entries). When it is full, the least
//! threatening entry makes room: never a blocked one before its block ends, and a
//! network last, since every failure of an address is also counted on its network: losing
//! the address's entry only makes the throttle coarser, never forgetful. When every entry
//! is a block, clients of networks the table does not hold are refused until room comes
//! back, rather than let through uncounted.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::proto::config::AuthThrottle;

/// The first failure's delay; it doubles with each failure up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
pub const MAX_DELAY: Duration = Duration::from_secs(8);
/// A key without failures for this long is forgotten (unless blocked).
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// IPv4 networks are counted by /24, IPv6 ones by /64: what one customer or one
/// attacker usually holds.
pub const IPV4_NETWORK_BITS: u8 = 24;
pub const IPV6_NETWORK_BITS: u8 = 64;

/// The limits, from the configuration (`set system auth-throttle …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub address: u32,
    pub network: u32,
    pub user: u32,
    pub block_time: Duration,
    /// Entries at most. An entry costs at most about 330 octets (a 255-octet user name,
    /// an address and the record), so 10 000 entries cost about 3.2 MiB.
    pub table_size: usize,
}

impl From<&AuthThrottle> for Limits {
    fn from(c: &AuthThrottle) -> Limits {
        Limits {
            address: c.address_limit.max(1),
            network: c.network_limit.max(1),
            user: c.user_limit.max(1),
            block_time: c.block_time,
            table_size: c.table_size as usize,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from(&AuthThrottle::default())
    }
}

/// What a count is kept for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Address(IpAddr),
    /// The network's address, host bits cleared.
    Network(IpAddr),
    User(String),
    /// Failures for this user from this address: what a success forgives.
    Pair(IpAddr, String),
}

impl Key {
    /// Lower keeps longer when the table is full.
    fn keep_rank(&self) -> u8 {
        match self {
            Key::Network(_) => 3,
            Key::User(_) => 2,
            Key::Address(_) => 1,
            Key::Pair(..) => 0,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Address(ip) => write!(f, "address {ip}"),
            Key::Network(ip) if ip.is_ipv4() => write!(f, "network {ip}/{IPV4_NETWORK_BITS}"),
            Key::Network(ip) => write!(f, "network {ip}/{IPV6_NETWORK_BITS}"),
            Key::User(u) => write!(f, "user {}", crate::proto::logtext::Escaped(u)),
            Key::Pair(ip, u) => write!(f, "user {} from {ip}", crate::proto::logtext::Escaped(u)),
        }
    }
}

/// The network an address counts against.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & (u32::MAX << (32 - u32::from(IPV4_NETWORK_BITS)));
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => {
                let bits = u128::from(a) & (u128::MAX << (128 - u32::from(IPV6_NETWORK_BITS)));
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[derive(Clone, Copy, Debug)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

impl Record {
    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| until > now)
    }
}

/// A block in force: which key, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub key: Key,
    pub until: Instant,
}

/// What to do with a failed authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Penalty {
    /// Answer 535 after this delay; when a user name just got blocked, it is given.
    Delay(Duration, Option<Block>),
    /// The address or its network is now blocked: answer 421 and close.
    Block(Block),
}

/// Failure counts by address, network, user and pair, with their blocks.
#[derive(Default)]
pub struct Throttle {
    limits: Limits,
    records: HashMap<Key, Record>,
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            limits,
            records: HashMap::new(),
        }
    }

    /// New limits; the counts so far are kept.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn block_of(&mut self, key: &Key, now: Instant) -> Option<Block> {
        let r = self.records.get_mut(key)?;
        match r.blocked_until {
            Some(until) if until > now => Some(Block {
                key: key.clone(),
                until,
            }),
            Some(_) => {
                // The block is over; the count starts again.
                self.records.remove(key);
                None
            }
            None => None,
        }
    }

    /// The block that keeps `ip` from authenticating now, if any: its address's, its
    /// network's, or, when the table is full of blocks and holds nothing of its network,
    /// one on the network for the shortest remaining block.
    pub fn client_blocked(&mut self, ip: IpAddr, now: Instant) -> Option<Block> {
        if let Some(b) = self.block_of(&Key::Address(ip), now) {
            return Some(b);
        }
        let net = Key::Network(network_of(ip));
        if let Some(b) = self.block_of(&net, now) {
            return Some(b);
        }
        if self.records.len() >= self.limits.table_size && !self.records.contains_key(&net) {
            self.prune(now);
            if !self.has_room_for(now) {
                let until = self
                    .records
                    .values()
                    .filter_map(|r| r.blocked_until)
                    .min()
                    .unwrap_or(now);
                return Some(Block { key: net, until });
            }
        }
        None
    }

    /// The block on this user name, if any.
    pub fn user_blocked(&mut self, user: &str, now: Instant) -> Option<Block> {
        self.block_of(&Key::User(user.to_string()), now)
    }

    /// Records a failure of `ip`, for `user` when the client named one, and says how to
    /// answer it.
    pub fn failure(&mut self, ip: IpAddr, user: Option<&str>, now: Instant) -> Penalty {
        let mut keys = vec![Key::Network(network_of(ip)), Key::Address(ip)];
        if let Some(user) = user {
            keys.push(Key::User(user.to_string()));
            keys.push(Key::Pair(ip, user.to_string()));
        }
        let mut worst = 0;
        let mut blocks = Vec::new();
        for key in keys {
            let Some(failures) = self.count(&key, now) else {
                continue;
            };
            let limit = match &key {
                Key::Address(_) => Some(self.limits.address),
                Key::Network(_) => Some(self.limits.network),
                Key::User(_) => Some(self.limits.user),
                Key::Pair(..) => None,
            };
            if matches!(key, Key::Address(_) | Key::User(_)) {
                worst = worst.max(failures);
            }
            if let Some(limit) = limit.filter(|&l| failures >= l) {
                let until = now + self.limits.block_time;
                if let Some(r) = self.records.get_mut(&key) {
                    r.blocked_until = Some(until);
                }
                log::warn!(target: "smtpd", "authentication throttle: {key} blocked for {}s after {failures} failures (limit {limit})",
                    self.limits.block_time.as_secs());
                blocks.push(Block { key, until });
            }
        }
        if let Some(b) = blocks
            .iter()
            .find(|b| matches!(b.key, Key::Address(_) | Key::Network(_)))
        {
            return Penalty::Block(b.clone());
        }
        let delay = FIRST_DELAY.saturating_mul(1 << worst.saturating_sub(1).min(10));
        Penalty::Delay(delay.min(MAX_DELAY), blocks.pop())
    }

    /// A successful login of `user` from `ip`: the failures of that user from that address
    /// are forgiven in every count they were added to. Nothing else changes.
    pub fn success(&mut self, ip: IpAddr, user: &str, now: Instant) {
        let Some(pair) = self.records.remove(&Key::Pair(ip, user.to_string())) else {
            return;
        };
        let forgiven = pair.failures;
        for key in [
            Key::Address(ip),
            Key::Network(network_of(ip)),
            Key::User(user.to_string()),
        ] {
            let gone = match self.records.get_mut(&key) {
                Some(r) if !r.blocked(now) => {
                    r.failures = r.failures.saturating_sub(forgiven);
                    r.failures == 0
                }
                _ => false,
            };
            if gone {
                self.records.remove(&key);
            }
        }
    }

    /// Adds one failure to `key`, making room if the table is full; the new count, or
    /// `None` when no room could be made (the table is full of blocks).
    fn count(&mut self, key: &Key, now: Instant) -> Option<u32> {
        if !self.records.contains_key(key) && self.records.len() >= self.limits.table_size {
            self.prune(now);
            if self.records.len() >= self.limits.table_size && !self.evict(now) {
                log::warn!(target: "smtpd", "authentication throttle: table full of blocks ({} entries), {key} not counted",
                    self.records.len());
                return None;
            }
        }
        let r = self.records.entry(key.clone()).or_insert(Record {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(r.last) >= FORGET_AFTER && !r.blocked(now) {
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        Some(r.failures)
    }

    /// Forgets blocks that ended and keys quiet for [`FORGET_AFTER`].
    fn prune(&mut self, now: Instant) {
        self.records.retain(|_, r| match r.blocked_until {
            Some(until) => until > now,
            None => now.saturating_duration_since(r.last) < FORGET_AFTER,
        });
    }

    fn has_room_for(&self, now: Instant) -> bool {
        self.records.len() < self.limits.table_size
            || self.records.values().any(|r| !r.blocked(now))
    }

    /// Removes the least threatening entry that is not blocked: pairs, then addresses,
    /// then users, then networks; fewest failures, then quietest, first. False when every
    /// entry is blocked.
    fn evict(&mut self, now: Instant) -> bool {
        let victim = self
            .records
            .iter()
            .filter(|(_, r)| !r.blocked(now))
            .min_by_key(|(k, r)| (k.keep_rank(), r.failures, r.last))
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                self.records.remove(&k);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits() -> Limits {
        Limits {
            address: 5,
            network: 20,
            user: 10,
            block_time: Duration::from_secs(600),
            table_size: 10_000,
        }
    }

    fn is_block(p: &Penalty) -> bool {
        matches!(p, Penalty::Block(_))
    }

    #[test]
    fn failures_slow_down_then_block_the_address() {
        let mut t = Throttle::new(limits());
        let a = ip("192.0.2.1");
        let now = Instant::now();
        assert_eq!(t.failure(a, None, now), Penalty::Delay(FIRST_DELAY, None));
        assert_eq!(
            t.failure(a, None, now),
            Penalty::Delay(FIRST_DELAY * 2, None)
        );
        assert_eq!(
            t.failure(a, None, now),
            Penalty::Delay(FIRST_DELAY * 4, None)
        );
        assert!(matches!(t.failure(a, None, now), Penalty::Delay(d, None) if d <= MAX_DELAY));
        let p = t.failure(a, None, now);
        assert_eq!(
            p,
            Penalty::Block(Block {
                key: Key::Address(a),
                until: now + Duration::from_secs(600)
            })
        );
        assert!(t.client_blocked(a, now).is_some());
        assert!(
            t.client_blocked(ip("192.0.2.2"), now).is_none(),
            "a neighbour is not"
        );
        assert!(
            t.client_blocked(a, now + Duration::from_secs(600))
                .is_none(),
            "the block ends"
        );
    }

    #[test]
    fn a_network_is_blocked_when_its_addresses_together_fail_too_often() {
        let mut t = Throttle::new(limits());
        let now = Instant::now();
        // 20 addresses of one /24, one failure each: none reaches its own limit.
        for i in 1..20 {
            let p = t.failure(ip(&format!("198.51.100.{i}")), None, now);
            assert!(!is_block(&p), "{i}");
        }
        let p = t.failure(ip("198.51.100.20"), None, now);
        assert!(matches!(&p, Penalty::Block(b) if b.key == Key::Network(ip("198.51.100.0"))));
        let b = t.client_blocked(ip("198.51.100.200"), now).unwrap();
        assert_eq!(b.key.to_string(), "network 198.51.100.0/24");
        assert!(t.client_blocked(ip("198.51.101.1"), now).is_none());
        // IPv6 by /64.
        assert_eq!(network_of(ip("2001:db8:1:2:3::4")), ip("2001:db8:1:2::"));
        assert_eq!(network_of(ip("::ffff:192.0.2.9")), ip("192.0.2.0"));
    }

    #[test]
    fn a_user_is_blocked_when_guessed_at_from_many_networks() {
        let mut t = Throttle::new(limits());
        let now = Instant::now();
        for i in 0..9 {
            let p = t.failure(ip(&format!("203.0.{i}.1")), Some("bob"), now);
            assert!(matches!(p, Penalty::Delay(_, None)), "{i}: {p:?}");
        }
        let p = t.failure(ip("203.0.99.1"), Some("bob"), now);
        assert!(matches!(&p, Penalty::Delay(_, Some(b)) if b.key == Key::User("bob".into())));
        assert!(t.user_blocked("bob", now).is_some());
        assert!(t.user_blocked("alice", now).is_none());
        assert!(
            t.client_blocked(ip("203.0.99.1"), now).is_none(),
            "only the user"
        );
    }

    #[test]
    fn a_success_between_guesses_forgives_nothing_of_the_guesses() {
        // The walk-around: log in as yourself between wrong passwords for another user.
        let mut t = Throttle::new(limits());
        let a = ip("192.0.2.7");
        let now = Instant::now();
        let mut blocked = false;
        for _ in 0..5 {
            t.success(a, "mallory", now);
            blocked = is_block(&t.failure(a, Some("victim"), now));
        }
        assert!(blocked, "the fifth wrong password blocks the address");
        assert!(t.client_blocked(a, now).is_some());
    }

    #[test]
    fn a_success_forgives_that_users_own_failures_from_that_address() {
        let mut t = Throttle::new(limits());
        let a = ip("192.0.2.8");
        let now = Instant::now();
        for _ in 0..4 {
            t.failure(a, Some("alice"), now);
        }
        t.success(a, "alice", now);
        // Alice's typos are forgiven: four more failures do not block.
        for _ in 0..4 {
            assert!(!is_block(&t.failure(a, Some("alice"), now)));
        }
        // But failures for others from that address are not forgiven by her success.
        let b = ip("192.0.2.9");
        for _ in 0..3 {
            t.failure(b, Some("carol"), now);
        }
        t.success(b, "alice", now);
        t.failure(b, Some("carol"), now);
        assert!(is_block(&t.failure(b, Some("carol"), now)));
    }

    #[test]
    fn a_full_table_never_forgets_a_block() {
        let mut t = Throttle::new(Limits {
            table_size: 100,
            ..limits()
        });
        let now = Instant::now();
        let attacker = ip("192.0.2.66");
        for _ in 0..5 {
            t.failure(attacker, None, now);
        }
        assert!(t.client_blocked(attacker, now).is_some());
        // One failure each from thousands of other addresses (the flush attack).
        for i in 0..10_050u32 {
            let other = IpAddr::from((0x0a00_0000 + i * 7).to_be_bytes());
            t.failure(other, None, now);
            assert!(t.len() <= 100);
        }
        assert!(t.client_blocked(attacker, now).is_some(), "still blocked");
        // What the flood left is counted by network: many of its /24s are blocked.
        let blocked_networks = (0..10_050u32)
            .map(|i| IpAddr::from((0x0a00_0000 + i * 7).to_be_bytes()))
            .filter(|ip| t.client_blocked(*ip, now).is_some())
            .count();
        assert!(blocked_networks > 0);
    }

    #[test]
    fn a_table_full_of_blocks_refuses_untracked_networks() {
        let mut t = Throttle::new(Limits {
            table_size: 100,
            address: 1,
            network: 1,
            ..limits()
        });
        let now = Instant::now();
        // Each failure blocks its address and its network: two blocked entries each.
        for i in 0..50u32 {
            t.failure(
                IpAddr::from((0x0a00_0000 + (i << 8)).to_be_bytes()),
                None,
                now,
            );
        }
        assert_eq!(t.len(), 100);
        let stranger = ip("198.51.100.1");
        let b = t
            .client_blocked(stranger, now)
            .expect("refused rather than forgotten");
        assert_eq!(b.key, Key::Network(ip("198.51.100.0")));
        // Once the blocks end, there is room again.
        assert!(
            t.client_blocked(stranger, now + Duration::from_secs(601))
                .is_none()
        );
    }

    #[test]
    fn quiet_keys_are_forgotten_and_blocks_end() {
        let mut t = Throttle::new(limits());
        let a = ip("192.0.2.1");
        let now = Instant::now();
        for _ in 0..4 {
            t.failure(a, None, now);
        }
        let later = now + FORGET_AFTER;
        assert_eq!(t.failure(a, None, later), Penalty::Delay(FIRST_DELAY, None));
    }
}
