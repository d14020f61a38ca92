//! The BDAT content checker: chunks of message content as a client sends them with
//! BDAT (RFC 3030), checked for bare CR and LF, NUL, line length and size. The verdict
//! and the content must not depend on where the chunks are cut.
#![no_main]

use drawbridge::proto::smtp::data::ContentChecker;
use libfuzzer_sys::fuzz_target;

#[path = "../common/pieces.rs"]
mod pieces;

fn check(input: &[u8], cuts: &[u8]) -> (Vec<u8>, String, u64) {
    let mut checker = ContentChecker::new(200, 4096);
    let mut out = Vec::new();
    for piece in pieces::pieces(input, cuts) {
        checker.push(piece, &mut out);
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
