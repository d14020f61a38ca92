//! The SMTP command parser: one command line (without CRLF) as a client sends it, its
//! parameters, and the addresses in it. Nothing may panic. (The line's length is the
//! framer's to bound, in the session: see the `smtp_session` target.)
#![no_main]

use drawbridge::proto::config::EhloKeywords;
use drawbridge::proto::smtp::address::Recipient;
use drawbridge::proto::smtp::command::{Command, mail_params, rcpt_params, verb_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = verb_of(line);
    let Ok(command) = Command::parse(line) else {
        return;
    };
    for offered in [EhloKeywords::ALL, EhloKeywords::NONE] {
        match &command {
            Command::Mail { params, .. } => {
                let _ = mail_params(params, offered, 35 * 1024 * 1024);
            }
            Command::Rcpt { path, params } => {
                let _ = rcpt_params(params, offered);
                let _ = Recipient::parse(&path.target.to_address());
            }
            _ => {}
        }
    }
});
