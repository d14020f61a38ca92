//! The console core (SPEC §9): keystrokes in any order never panic, whatever is typed
//! or answered reaches the terminal as printable text, CR, LF, backspace and the bell
//! only, and input split anywhere writes the same bytes as input fed whole (Ctrl-C
//! aside, whose meaning depends on whether a request is still running).
//!
//! The first octet chooses where to split the rest; a stand-in gateway answers every
//! request at once, echoing the request into its answer so that typed text comes back
//! through every kind of output.
#![no_main]

use std::time::Instant;

use drawbridge::proto::config::Candidate;
use drawbridge::proto::config::{LoginClass, host_default};
use drawbridge::proto::console::request::{Answer, Command, Request};
use drawbridge::proto::console::{Console, Event, MAX_TYPEAHEAD, Options};
use libfuzzer_sys::fuzz_target;

#[path = "../common/pieces.rs"]
mod pieces;

fn answer(request: Request, sequence: &mut u64) -> Answer {
    let candidate = |sequence: u64| {
        Box::new(Candidate {
            base: sequence,
            config: host_default(),
        })
    };
    match request {
        // A login named for a class gets it; any other is a super-user.
        Request::Login { user, .. } | Request::SetLoginPassword { user, .. } => {
            Answer::LoggedIn {
                must_change: false,
                class: match user.as_str() {
                    "operator" => LoginClass::Operator,
                    "read-only" => LoginClass::ReadOnly,
                    _ => LoginClass::SuperUser,
                },
            }
        }
        Request::Run(Command::Restart) => Answer::Closing("Restarting.".into()),
        Request::Run(c) => Answer::Text(format!("ran {c:?}\n")),
        Request::Configure | Request::Rollback(_) => Answer::Candidate(candidate(*sequence)),
        Request::Running => Answer::Running(Box::new(host_default())),
        Request::Check(c) => Answer::Error(format!("check {:?}", c.base)),
        Request::Commit { comment, .. } => {
            *sequence += 1;
            Answer::Committed {
                text: format!("commit {sequence}: {comment}"),
                candidate: candidate(*sequence),
            }
        }
        Request::ReadFile(name) => Answer::File(format!("set system host-name {name}\n")),
        Request::Names(kind) => Answer::Names(kind, vec!["AB12CD34".into(), "alice".into()]),
    }
}

/// Feeds the pieces, answering requests as they come; returns what the terminal got.
fn run<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let now = Instant::now();
    let mut console = Console::new(
        Options {
            user: Some("admin".into()),
            ..Options::default()
        },
        now,
    );
    let mut sequence = 1;
    let mut out = Vec::new();
    let mut pump = |console: &mut Console, out: &mut Vec<u8>| {
        loop {
            while let Some(bytes) = console.poll_transmit() {
                out.extend_from_slice(&bytes);
            }
            match console.poll_event() {
                Some(Event::Request(r)) => console.handle_answer(answer(r, &mut sequence), now),
                // Every request is answered the moment it is seen: there is nothing
                // left to give up.
                Some(Event::Cancel | Event::Closed) => {}
                None => break,
            }
        }
    };
    pump(&mut console, &mut out);
    for piece in pieces {
        console.handle_input(piece, now);
        pump(&mut console, &mut out);
    }
    out
}

/// Only what a dumb terminal shows as text, and its line controls.
fn check_alphabet(out: &[u8]) {
    for &b in out {
        assert!(
            matches!(b, b'\r' | b'\n' | 0x08 | 0x07) || b >= 0x20 && b != 0x7f,
            "the terminal got {b:#04x}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    // Within what the console holds while a request runs (keys, each one octet or more).
    let input = &input[..input.len().min(MAX_TYPEAHEAD)];
    let whole = run(std::iter::once(input));
    check_alphabet(&whole);
    check_alphabet(&run(pieces::pieces(input, &[cut])));
    // Ctrl-C while a request runs gives it up; typed later it clears the line: where the
    // input is cut decides which, so the comparison leaves it out.
    let calm: Vec<u8> = input.iter().copied().filter(|&b| b != 0x03).collect();
    let whole = run(std::iter::once(&calm[..]));
    let split = run(pieces::pieces(&calm, &[cut]));
    assert_eq!(whole, split, "split at every {} octets", usize::from(cut) + 1);
});
