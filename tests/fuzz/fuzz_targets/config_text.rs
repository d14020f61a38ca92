//! The configuration's text form (`set …` lines): whatever parses prints to a text that
//! parses back to the same model, and prints the same again (canonical printing).
#![no_main]

use drawbridge::proto::config::text::{parse, print};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = parse(text) else {
        return;
    };
    let printed = print(&config);
    let back = parse(&printed).expect("printed configuration parses");
    assert_eq!(back, config, "{printed}");
    assert_eq!(print(&back), printed);
});
