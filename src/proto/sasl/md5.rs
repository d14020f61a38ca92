//! MD5 (RFC 1321) and HMAC-MD5 (RFC 2104), only for CRAM-MD5.
//!
//! MD5 is broken for collision resistance; CRAM-MD5 needs it anyway, and HMAC-MD5 has no
//! known practical attack. Nothing else in the firmware may use this module. The hasher
//! can start from a saved chaining state, which is how the user database keeps a CRAM-MD5
//! secret without the password: the states after absorbing `key ^ ipad` and `key ^ opad`.

/// MD5's block size: 64 octets.
pub const BLOCK_LEN: usize = 64;
/// MD5's digest size: 16 octets.
pub const DIGEST_LEN: usize = 16;

const INITIAL_STATE: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// RFC 1321 §3.4: per-round shift amounts.
const SHIFTS: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15,
    21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// RFC 1321 §3.4: T[i] = floor(2^32 * abs(sin(i + 1))).
const SINES: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// An MD5 chaining state between whole blocks, as 16 octets (little-endian words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainState(pub [u8; DIGEST_LEN]);

/// An incremental MD5 computation. Memory: 96 octets.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    /// Octets absorbed so far, including those of a resumed state.
    length: u64,
    pending: [u8; BLOCK_LEN],
    pending_len: usize,
}

impl Md5 {
    pub fn new() -> Md5 {
        Md5 {
            state: INITIAL_STATE,
            length: 0,
            pending: [0; BLOCK_LEN],
            pending_len: 0,
        }
    }

    /// Resumes from a state saved after exactly one block.
    pub fn resume_after_one_block(saved: &ChainState) -> Md5 {
        let mut state = [0u32; 4];
        for (word, bytes) in state.iter_mut().zip(saved.0.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        Md5 {
            state,
            length: BLOCK_LEN as u64,
            pending: [0; BLOCK_LEN],
            pending_len: 0,
        }
    }

    /// The chaining state; meaningful only on a block boundary with nothing pending.
    pub fn chain_state(&self) -> ChainState {
        debug_assert_eq!(self.pending_len, 0);
        let mut out = [0u8; DIGEST_LEN];
        for (bytes, word) in out.chunks_exact_mut(4).zip(self.state) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        ChainState(out)
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.length = self.length.wrapping_add(data.len() as u64);
        if self.pending_len > 0 {
            let take = (BLOCK_LEN - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < BLOCK_LEN {
                return;
            }
            let block = self.pending;
            compress(&mut self.state, &block);
            self.pending_len = 0;
        }
        let mut blocks = data.chunks_exact(BLOCK_LEN);
        for block in &mut blocks {
            compress(&mut self.state, block);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    pub fn finish(mut self) -> [u8; DIGEST_LEN] {
        let bit_length = self.length.wrapping_mul(8);
        self.update(&[0x80]);
        while self.pending_len != BLOCK_LEN - 8 {
            self.update(&[0]);
        }
        self.update(&bit_length.to_le_bytes());
        debug_assert_eq!(self.pending_len, 0);
        self.chain_state().0
    }
}

impl Default for Md5 {
    fn default() -> Md5 {
        Md5::new()
    }
}

fn compress(state: &mut [u32; 4], block: &[u8]) {
    let mut words = [0u32; 16];
    for (word, bytes) in words.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let rotated = a
            .wrapping_add(f)
            .wrapping_add(SINES[i])
            .wrapping_add(words[g])
            .rotate_left(SHIFTS[i]);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(rotated);
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// The MD5 digest of `data`.
pub fn digest(data: &[u8]) -> [u8; DIGEST_LEN] {
    let mut md5 = Md5::new();
    md5.update(data);
    md5.finish()
}

/// The HMAC-MD5 chaining states after `key ^ ipad` and `key ^ opad` (RFC 2104 §2).
pub fn hmac_pad_states(key: &[u8]) -> (ChainState, ChainState) {
    let mut block = [0u8; BLOCK_LEN];
    if key.len() > BLOCK_LEN {
        block[..DIGEST_LEN].copy_from_slice(&digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad_state = |pad: u8| {
        let mut md5 = Md5::new();
        let padded: [u8; BLOCK_LEN] = std::array::from_fn(|i| block[i] ^ pad);
        md5.update(&padded);
        md5.chain_state()
    };
    (pad_state(0x36), pad_state(0x5c))
}

/// HMAC-MD5 of `message` from precomputed pad states.
pub fn hmac_from_pad_states(inner: &ChainState, outer: &ChainState, message: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::resume_after_one_block(inner);
    md5.update(message);
    let inner_digest = md5.finish();
    let mut md5 = Md5::resume_after_one_block(outer);
    md5.update(&inner_digest);
    md5.finish()
}

/// HMAC-MD5 of `message` under `key`.
pub fn hmac(key: &[u8], message: &[u8]) -> [u8; DIGEST_LEN] {
    let (inner, outer) = hmac_pad_states(key);
    hmac_from_pad_states(&inner, &outer, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 1321 Appendix A.5.
    #[test]
    fn rfc1321_test_suite() {
        let suite: &[(&[u8], &str)] = &[
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (message, expected) in suite {
            assert_eq!(hex(&digest(message)), *expected);
        }
    }

    #[test]
    fn split_updates_match_one_update() {
        let message: Vec<u8> = (0..200u8).collect();
        let whole = digest(&message);
        for split in 0..message.len() {
            let mut md5 = Md5::new();
            md5.update(&message[..split]);
            md5.update(&message[split..]);
            assert_eq!(md5.finish(), whole, "split at {split}");
        }
        let mut md5 = Md5::new();
        for byte in &message {
            md5.update(std::slice::from_ref(byte));
        }
        assert_eq!(md5.finish(), whole);
    }

    /// RFC 2202 §2: HMAC-MD5 test cases 1 to 7.
    #[test]
    fn rfc2202_hmac_md5_vectors() {
        let cases: &[(Vec<u8>, Vec<u8>, &str)] = &[
            (
                vec![0x0b; 16],
                b"Hi There".to_vec(),
                "9294727a3638bb1c13f48ef8158bfc9d",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "750c783e6ab0b503eaa86e310a5db738",
            ),
            (
                vec![0xaa; 16],
                vec![0xdd; 50],
                "56be34521d144c88dbb8c733f0e8b3f6",
            ),
            (
                (1..=25u8).collect(),
                vec![0xcd; 50],
                "697eaf0aca3a3aea3a75164746ffaa79",
            ),
            (
                vec![0x0c; 16],
                b"Test With Truncation".to_vec(),
                "56461ef2342edc00f9bab995690efd4c",
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"
                    .to_vec(),
                "6f630fad67cda0ee1fb1f562db3aa53e",
            ),
        ];
        for (key, message, expected) in cases {
            assert_eq!(hex(&hmac(key, message)), *expected);
        }
    }
}
