//! The resolver's answer cache: TTLs honoured and capped, negative answers kept per
//! RFC 2308, bounded in entries with least-recently-used eviction. Time is an argument.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::message::{Answer, RecordType};
use super::name::Name;

/// Entries kept. Each costs its key name (at most 253 octets), at most
/// `MAX_ANSWER_RECORDS` (16) records of at most ~300 octets and ~150 octets of
/// bookkeeping: worst case about 10 000 × 5.5 KB = 55 MB, typically well under 1 MB.
pub const MAX_CACHE_ENTRIES: usize = 10_000;
/// Longest we keep a positive answer, whatever its TTL: one day (RFC 8767 §4 suggests
/// capping at 604 800 s; a gateway gains nothing from stale MX data past a day).
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Longest we keep a negative answer: RFC 2308 §5 recommends one to three hours.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(3 * 3600);
/// Negative TTL when the server sent no SOA to take it from.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    name: Name,
    record_type: RecordType,
}

struct Entry {
    answer: Answer,
    expires: Instant,
    /// Position in `Cache::recency`.
    used: u64,
}

/// Answers by name and type.
pub struct Cache {
    capacity: usize,
    entries: HashMap<Key, Entry>,
    /// Use counter → key, oldest first.
    recency: BTreeMap<u64, Key>,
    clock: u64,
}

impl Cache {
    /// A cache of at most `capacity` entries (callers pass `MAX_CACHE_ENTRIES` or less;
    /// larger values are clamped). Capacity 0 keeps nothing.
    pub fn new(capacity: usize) -> Cache {
        Cache {
            capacity: capacity.min(MAX_CACHE_ENTRIES),
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The answer for `name`/`record_type` if one is cached and unexpired at `now`.
    pub fn lookup(&mut self, name: &Name, record_type: RecordType, now: Instant) -> Option<Answer> {
        let key = Key {
            name: name.clone(),
            record_type,
        };
        let entry = self.entries.get(&key)?;
        if now >= entry.expires {
            self.remove(&key);
            return None;
        }
        let answer = entry.answer.clone();
        self.touch(&key);
        Some(answer)
    }

    /// Keeps `answer` for its TTL (capped), evicting the least recently used entry when
    /// full. A TTL of 0 keeps nothing.
    pub fn insert(&mut self, name: &Name, record_type: RecordType, answer: &Answer, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let ttl = match answer {
            Answer::Records { ttl, .. } | Answer::Alias { ttl, .. } => {
                Duration::from_secs(u64::from(*ttl)).min(MAX_TTL)
            }
            Answer::NoData { ttl } | Answer::NxDomain { ttl } => ttl
                .map_or(DEFAULT_NEGATIVE_TTL, |t| Duration::from_secs(u64::from(t)))
                .min(MAX_NEGATIVE_TTL),
        };
        let key = Key {
            name: name.clone(),
            record_type,
        };
        if ttl.is_zero() {
            self.remove(&key);
            return;
        }
        let Some(expires) = now.checked_add(ttl) else {
            return;
        };
        self.remove(&key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.clock += 1;
        self.recency.insert(self.clock, key.clone());
        self.entries.insert(
            key,
            Entry {
                answer: answer.clone(),
                expires,
                used: self.clock,
            },
        );
    }

    fn touch(&mut self, key: &Key) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(entry) = self.entries.get_mut(key) {
            if let Some(k) = self.recency.remove(&entry.used) {
                self.recency.insert(clock, k);
            }
            entry.used = clock;
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.entries.remove(key) {
            self.recency.remove(&entry.used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::dns::message::RecordData;

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    fn a_answer(ttl: u32) -> Answer {
        Answer::Records {
            records: vec![RecordData::A("192.0.2.1".parse().unwrap())],
            ttl,
        }
    }

    #[test]
    fn honours_ttl() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert(&name("a.test"), RecordType::A, &a_answer(60), t0);
        assert_eq!(
            cache.lookup(&name("a.test"), RecordType::A, t0 + Duration::from_secs(59)),
            Some(a_answer(60))
        );
        assert_eq!(cache.lookup(&name("a.test"), RecordType::AAAA, t0), None);
        assert_eq!(
            cache.lookup(&name("a.test"), RecordType::A, t0 + Duration::from_secs(60)),
            None
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_ttl_is_not_kept() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert(&name("a.test"), RecordType::A, &a_answer(0), t0);
        assert_eq!(cache.lookup(&name("a.test"), RecordType::A, t0), None);
    }

    #[test]
    fn ttl_is_capped() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert(&name("a.test"), RecordType::A, &a_answer(u32::MAX), t0);
        assert!(
            cache
                .lookup(
                    &name("a.test"),
                    RecordType::A,
                    t0 + MAX_TTL - Duration::from_secs(1)
                )
                .is_some()
        );
        assert!(
            cache
                .lookup(&name("a.test"), RecordType::A, t0 + MAX_TTL)
                .is_none()
        );
    }

    #[test]
    fn negative_answers() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10);
        let nx = Answer::NxDomain { ttl: None };
        cache.insert(&name("nx.test"), RecordType::MX, &nx, t0);
        let before = t0 + DEFAULT_NEGATIVE_TTL - Duration::from_secs(1);
        assert_eq!(
            cache.lookup(&name("nx.test"), RecordType::MX, before),
            Some(nx)
        );
        assert_eq!(
            cache.lookup(&name("nx.test"), RecordType::MX, t0 + DEFAULT_NEGATIVE_TTL),
            None
        );
        // From the SOA, but capped.
        let nodata = Answer::NoData { ttl: Some(30) };
        cache.insert(&name("a.test"), RecordType::MX, &nodata, t0);
        assert!(
            cache
                .lookup(
                    &name("a.test"),
                    RecordType::MX,
                    t0 + Duration::from_secs(29)
                )
                .is_some()
        );
        assert!(
            cache
                .lookup(
                    &name("a.test"),
                    RecordType::MX,
                    t0 + Duration::from_secs(30)
                )
                .is_none()
        );
        let long = Answer::NoData { ttl: Some(86_400) };
        cache.insert(&name("a.test"), RecordType::MX, &long, t0);
        assert!(
            cache
                .lookup(&name("a.test"), RecordType::MX, t0 + MAX_NEGATIVE_TTL)
                .is_none()
        );
    }

    #[test]
    fn evicts_least_recently_used() {
        let t0 = Instant::now();
        let mut cache = Cache::new(3);
        for n in ["a.test", "b.test", "c.test"] {
            cache.insert(&name(n), RecordType::A, &a_answer(60), t0);
        }
        // Use a, so b is the oldest.
        assert!(cache.lookup(&name("a.test"), RecordType::A, t0).is_some());
        cache.insert(&name("d.test"), RecordType::A, &a_answer(60), t0);
        assert_eq!(cache.len(), 3);
        assert!(cache.lookup(&name("b.test"), RecordType::A, t0).is_none());
        for n in ["a.test", "c.test", "d.test"] {
            assert!(cache.lookup(&name(n), RecordType::A, t0).is_some(), "{n}");
        }
        // Replacing an entry does not evict another.
        cache.insert(&name("a.test"), RecordType::A, &a_answer(30), t0);
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.lookup(&name("a.test"), RecordType::A, t0),
            Some(a_answer(30))
        );
    }

    #[test]
    fn bounded_under_churn() {
        let t0 = Instant::now();
        let mut cache = Cache::new(100);
        for i in 0..1000 {
            let n = name(&format!("h{i}.test"));
            cache.insert(&n, RecordType::A, &a_answer(60), t0);
            assert!(cache.len() <= 100);
        }
        assert_eq!(cache.len(), 100);
        assert_eq!(cache.recency.len(), 100);
        assert!(
            cache
                .lookup(&name("h999.test"), RecordType::A, t0)
                .is_some()
        );
        assert!(
            cache
                .lookup(&name("h899.test"), RecordType::A, t0)
                .is_none()
        );
        assert_eq!(Cache::new(usize::MAX).capacity, MAX_CACHE_ENTRIES);
        let mut off = Cache::new(0);
        off.insert(&name("a.test"), RecordType::A, &a_answer(60), t0);
        assert!(off.is_empty());
    }
}
