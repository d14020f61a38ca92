//! The BDAT content checker: chunks of message content as a client sends them with
//! BDAT (RFC 3030), checked for bare CR and LF, NUL, line length and size. The verdict
//! and the content must not depend on where the chunks are cut.
#![no_main]

use drawbridge::smtp::data::ContentChecker;
use libfuzzer_sys::fuzz_target;

fn check(input: &[u8], cuts: &[u8]) -> (Vec<u8>, String, u64) {
    let mut checker = ContentChecker::new(200, 4096);
    let mut out = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < input.len() {
        let len = cuts
            .get(k % cuts.len().max(1))
            .map_or(input.len(), |&c| usize::from(c) + 1)
            .min(input.len() - at);
        k += 1;
        checker.push(&input[at..at + len], &mut out);
        at += len;
    }
    let size = checker.size();
    (out, format!("{:?}", checker.finish()), size)
}

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = data.split_at(data.len().min(4));
    let whole = check(input, &[]);
    assert_eq!(whole, check(input, cuts));
    assert!(whole.2 <= input.len() as u64);
});
