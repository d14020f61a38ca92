//! The PROXY protocol header reader (HAProxy's v1 and v2): a balancer's first octets cut
//! into reads where the input's first octets say. Nothing may panic; the outcome (the
//! header and the octets after it, or the refusal) is the same however the input is cut
//! and whatever `decode` says of the whole.
#![no_main]

use std::time::Instant;

use drawbridge::proto::proxy::{Decoded, HeaderError, HeaderReader, Received, decode};
use libfuzzer_sys::fuzz_target;

#[path = "../common/pieces.rs"]
mod pieces;

/// Feeds `input` in pieces of the given lengths (cycled); the outcome, with what came
/// after the deciding read added to the octets after the header, and the end of the
/// input reported when nothing was decided.
fn read(input: &[u8], cuts: &[u8]) -> Result<Received, HeaderError> {
    let mut reader = HeaderReader::new(Instant::now());
    let mut outcome = None;
    let mut rest = Vec::new();
    for piece in pieces::pieces(input, cuts) {
        match outcome {
            None => {
                reader.handle_input(piece);
                outcome = reader.poll_outcome();
            }
            Some(_) => rest.extend_from_slice(piece),
        }
    }
    let outcome = outcome.unwrap_or_else(|| {
        reader.handle_end();
        reader.poll_outcome().expect("the end of the input decides")
    });
    assert_eq!(reader.poll_timeout(), None, "decided, yet a deadline");
    outcome.map(|mut received| {
        received.after.extend_from_slice(&rest);
        received
    })
}

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = data.split_at(data.len().min(4));
    let whole = read(input, &[]);
    match decode(input) {
        Ok(Decoded::Complete {
            version,
            header,
            length,
        }) => {
            let received = whole.as_ref().expect("decode took it");
            assert_eq!((received.version, received.header), (version, header));
            assert_eq!(received.after, &input[length..]);
        }
        Ok(Decoded::Incomplete) => {
            assert_eq!(whole, Err(HeaderError::Closed(input.len())));
        }
        Err(e) => assert_eq!(whole.as_ref(), Err(&e)),
    }
    assert_eq!(read(input, cuts), whole);
    assert_eq!(read(input, &[0]), whole);
});
