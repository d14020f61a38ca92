//! Brute-force throttling of authentication, per client address (SPEC §6): each failure
//! makes the next answer wait longer, and past a limit the address is blocked for a while.
//! A success forgets the address. Pure bookkeeping: the time comes in as an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures before the address is blocked.
pub const BLOCK_AFTER: u32 = 5;
/// How long a blocked address is refused.
pub const BLOCK_TIME: Duration = Duration::from_secs(600);
/// The first failure's delay; it doubles with each failure up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
pub const MAX_DELAY: Duration = Duration::from_secs(8);
/// A quiet address is forgotten after this long.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Addresses remembered at most: about 64 bytes each, 640 KiB in all.
pub const MAX_ADDRESSES: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Failure counts by client address.
#[derive(Default)]
pub struct Throttle {
    records: HashMap<IpAddr, Record>,
}

/// What to do with a failed authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Penalty {
    /// Answer 535 after this delay.
    Delay(Duration),
    /// The address is now blocked: answer 421 and close.
    Block,
}

impl Throttle {
    /// Until when `ip` is blocked, if it is.
    pub fn blocked(&mut self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let r = self.records.get_mut(&ip)?;
        match r.blocked_until {
            Some(until) if until > now => Some(until),
            Some(_) => {
                // The block is over; the count starts again.
                self.records.remove(&ip);
                None
            }
            None => None,
        }
    }

    /// Records a failure and says how to answer it.
    pub fn failure(&mut self, ip: IpAddr, now: Instant) -> Penalty {
        if self.records.len() >= MAX_ADDRESSES && !self.records.contains_key(&ip) {
            self.records
                .retain(|_, r| now.saturating_duration_since(r.last) < FORGET_AFTER);
            if self.records.len() >= MAX_ADDRESSES {
                // Full of recent attackers: the oldest makes room.
                if let Some(oldest) = self
                    .records
                    .iter()
                    .min_by_key(|(_, r)| r.last)
                    .map(|(ip, _)| *ip)
                {
                    self.records.remove(&oldest);
                }
            }
        }
        let r = self.records.entry(ip).or_insert(Record {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(r.last) >= FORGET_AFTER {
            r.failures = 0;
        }
        r.failures += 1;
        r.last = now;
        if r.failures >= BLOCK_AFTER {
            r.blocked_until = Some(now + BLOCK_TIME);
            return Penalty::Block;
        }
        let doubled = FIRST_DELAY.saturating_mul(1 << (r.failures - 1).min(10));
        Penalty::Delay(doubled.min(MAX_DELAY))
    }

    /// A successful login: the address is forgotten, so it is never slowed down.
    pub fn success(&mut self, ip: IpAddr) {
        self.records.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_slow_down_then_block_and_success_forgets() {
        let mut t = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let now = Instant::now();
        assert_eq!(t.failure(a, now), Penalty::Delay(FIRST_DELAY));
        assert_eq!(t.failure(a, now), Penalty::Delay(FIRST_DELAY * 2));
        assert_eq!(t.failure(a, now), Penalty::Delay(FIRST_DELAY * 4));
        for _ in 3..BLOCK_AFTER - 1 {
            assert!(matches!(t.failure(a, now), Penalty::Delay(d) if d <= MAX_DELAY));
        }
        assert_eq!(t.failure(a, now), Penalty::Block);
        assert!(t.blocked(a, now).is_some());
        assert!(
            t.blocked(b, now).is_none(),
            "another address is not touched"
        );
        assert!(t.blocked(a, now + BLOCK_TIME).is_none(), "the block ends");
        t.failure(b, now);
        t.success(b);
        assert_eq!(t.failure(b, now), Penalty::Delay(FIRST_DELAY));
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            t.failure(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.records.len() <= MAX_ADDRESSES);
    }
}
