//! A small non-cryptographic PRNG (xorshift64*) for query ids and the order of
//! equal-preference MX records. The caller seeds it: the resolver gives each exchange a
//! fresh seed from the operating system's random numbers (`resolver::entropy_seed`), so
//! an observer of one exchange's ids learns nothing of the next one's.
//!
//! Query ids are 16 bits; with a fresh random source port per query (chosen by the
//! kernel) this is the usual RFC 5452 defence.

/// xorshift64* (Vigna 2014): 64 bits of state, period 2^64 − 1.
#[derive(Clone, Debug)]
pub struct Prng(u64);

impl Prng {
    /// A generator from a fixed seed (tests, derived generators).
    pub fn from_seed(seed: u64) -> Prng {
        // splitmix64 finaliser: spreads small seeds, and the state must never be zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Prng(if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn next_u16(&mut self) -> u16 {
        // The high bits of xorshift64* are the best ones.
        (self.next_u64() >> 48) as u16
    }

    /// A value in `0..bound`; 0 when `bound` is 0. The modulo bias is below 2^-40 for
    /// the small bounds used here.
    pub fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            return 0;
        }
        (self.next_u64() % bound as u64) as usize
    }

    /// Shuffles a slice in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_from_seed() {
        let mut a = Prng::from_seed(7);
        let mut b = Prng::from_seed(7);
        let mut c = Prng::from_seed(8);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(Prng::from_seed(0).next_u64() != 0);
    }

    #[test]
    fn ids_spread() {
        let mut rng = Prng::from_seed(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            seen.insert(rng.next_u16());
        }
        // 1000 draws from 65 536 values: a handful of collisions at most.
        assert!(seen.len() > 980, "{}", seen.len());
    }

    #[test]
    fn shuffle_reaches_every_order() {
        let mut rng = Prng::from_seed(3);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut items = [1, 2, 3];
            rng.shuffle(&mut items);
            orders.insert(items);
        }
        assert_eq!(orders.len(), 6);
        assert_eq!(rng.below(0), 0);
    }
}
