//! Deterministic fuzzing of the DNS decoder: real captured answers mutated by a seeded
//! PRNG (bit flips, byte pokes, truncations, splices, count and length edits). The
//! decoder must never panic, and its work must stay within the bound its constants set.

use super::message::tests::{captured, steps};
use super::message::{MAX_POINTER_HOPS, MAX_RECORDS, RecordType, Response};
use super::rng::Prng;

/// Mutated messages decoded per run.
const CASES: usize = 20_000;
/// Upper bound on `read_name` steps for one message: one question name and at most two
/// names in each of `MAX_RECORDS` records (SOA has two), each at most 127 labels plus
/// `MAX_POINTER_HOPS` pointers, plus the terminating octet.
const MAX_STEPS: usize = (1 + 2 * MAX_RECORDS) * (127 + MAX_POINTER_HOPS + 1);

/// Octets that tend to hit edge cases: pointer and label-type bits, maxima, zero.
const INTERESTING: [u8; 8] = [0x00, 0x01, 0x3f, 0x40, 0x80, 0xc0, 0xff, 0x0c];

fn mutate(rng: &mut Prng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(7) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => bytes.truncate(at),
            3 => {
                // Splice: our prefix, then the other message from some offset.
                let from = rng.below(other.len().max(1));
                bytes.truncate(at);
                bytes.extend_from_slice(&other[from.min(other.len())..]);
            }
            4 => {
                // Edit a header count (4..12) by a small amount either way.
                let field = 4 + 2 * rng.below(4);
                if field + 1 < bytes.len() {
                    let delta = rng.below(5) as u8;
                    bytes[field + 1] = if rng.below(2) == 0 {
                        bytes[field + 1].wrapping_add(delta)
                    } else {
                        bytes[field + 1].wrapping_sub(delta)
                    };
                }
            }
            5 => {
                // Insert random octets.
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    let b = rng.next_u64() as u8;
                    bytes.insert(at, b);
                }
            }
            _ => {
                // Point somewhere: write a compression pointer.
                if at + 1 < bytes.len() {
                    let target = rng.below(bytes.len());
                    bytes[at] = 0xc0 | ((target >> 8) as u8 & 0x3f);
                    bytes[at + 1] = target as u8;
                }
            }
        }
    }
    bytes
}

#[test]
fn decoder_survives_mutations() {
    let corpus = captured();
    let mut rng = Prng::from_seed(0xd15e_a5e5);
    let mut accepted = 0usize;
    let mut rejected = 0usize;
    let mut worst = 0usize;
    for _ in 0..CASES {
        let (seed, query) = &corpus[rng.below(corpus.len())];
        let (other, _) = &corpus[rng.below(corpus.len())];
        let bytes = mutate(&mut rng, seed, other);
        let before = steps();
        let decoded = Response::decode(&bytes, query);
        let taken = steps() - before;
        worst = worst.max(taken);
        assert!(taken <= MAX_STEPS, "{taken} steps for {bytes:02x?}");
        match decoded {
            Ok(response) => {
                accepted += 1;
                let records =
                    response.answers.len() + response.authority.len() + response.additional.len();
                assert!(records <= MAX_RECORDS);
                for record in response
                    .answers
                    .iter()
                    .chain(&response.authority)
                    .chain(&response.additional)
                {
                    assert!(record.name.wire_len() <= 255);
                    assert!(record.ttl < 0x8000_0000);
                }
                // Interpreting the answer is bounded too, whatever the records say.
                for record_type in [RecordType::A, RecordType::MX, RecordType::PTR] {
                    let _ = response.answer(&query.name, record_type);
                }
            }
            Err(_) => rejected += 1,
        }
    }
    // The mutations must exercise both paths, or the test proves little.
    assert!(accepted > 100, "accepted {accepted}");
    assert!(rejected > CASES / 2, "rejected {rejected}");
    assert!(worst > 0);
}
