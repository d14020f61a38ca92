//! The stored configuration's slot decoder (SPEC §8): a record is taken whole or refused
//! with a reason, never panics, and what it takes is a model that stores, prints and
//! parses back to itself. The HMAC is a plain fold here so that the fuzzer reaches the
//! payload through the checked path as well; a real token's HMAC is tested elsewhere.
#![no_main]

use drawbridge::proto::config::slot::{MAC_LEN, Seal, decode, decode_unchecked, encode};
use drawbridge::proto::config::text::{parse, print};
use libfuzzer_sys::fuzz_target;

/// Folds the data into 32 octets: cheap, deterministic, and reachable by the fuzzer.
struct Fold;

impl Seal for Fold {
    fn mac(&self, data: &[u8]) -> Result<[u8; MAC_LEN], String> {
        let mut out = [0u8; MAC_LEN];
        for (i, b) in data.iter().enumerate() {
            out[i % MAC_LEN] = out[i % MAC_LEN].rotate_left(1) ^ b;
        }
        Ok(out)
    }
}

fuzz_target!(|data: &[u8]| {
    let unchecked = decode_unchecked(data);
    if let Ok(record) = decode(data, &Fold) {
        assert_eq!(Ok(&record), unchecked.as_ref(), "checked and unchecked disagree");
    }
    let Ok(record) = unchecked else {
        return;
    };
    // Whatever a slot held is stored again as the current version and read back the same.
    let bytes = encode(record.sequence, &record.meta, &record.config, &Fold)
        .expect("a decoded configuration encodes");
    let again = decode(&bytes, &Fold).expect("a re-encoded record decodes");
    assert_eq!(again, record);
    // And it is a configuration the text form can show and take back.
    let printed = print(&record.config);
    let parsed = parse(&printed).expect("a stored configuration prints to valid lines");
    assert_eq!(parsed, record.config, "{printed}");
});
