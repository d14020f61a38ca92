//! The DATA reader: message content as a client sends it after the 354, cut into pieces
//! where the input's first octets say. The end of data must be found the same however the
//! input is cut, and the content handed out must be the same too.
#![no_main]

use drawbridge::proto::smtp::data::DataReader;
use libfuzzer_sys::fuzz_target;

#[path = "../common/pieces.rs"]
mod pieces;

/// Feeds `input` in pieces of the given lengths (cycled); returns the content and
/// where the end of data was found.
fn read(input: &[u8], cuts: &[u8]) -> (Vec<u8>, Option<usize>, String) {
    let mut reader = DataReader::new(1000, 1 << 20);
    let mut out = Vec::new();
    let mut at = 0;
    for piece in pieces::pieces(input, cuts) {
        if let Some(used) = reader.feed(piece, &mut out) {
            return (out, Some(at + used), format!("{:?}", reader.finish()));
        }
        at += piece.len();
    }
    (out, None, String::new())
}

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = data.split_at(data.len().min(4));
    let whole = read(input, &[]);
    let cut = read(input, cuts);
    assert_eq!(whole, cut);
    let bytewise = read(input, &[0]);
    assert_eq!(whole, bytewise);
});
