//! Every SASL decoder: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256 and EXTERNAL, each fed
//! the client's lines as they come off the wire (base64 text), against a user database
//! with one user. The first octet picks the mechanism and whether there is an initial
//! response; the rest, split at LF, is the client's lines. Nothing may panic, and an
//! exchange never succeeds for a user the database does not have.
#![no_main]

use std::rc::Rc;
use std::sync::OnceLock;

use drawbridge::proto::sasl::users::{UserDb, UserLookup};
use drawbridge::proto::sasl::{ExchangeInputs, MechanismName, Step, new_mechanism};
use libfuzzer_sys::fuzz_target;

fn database() -> &'static UserDb {
    static DB: OnceLock<UserDb> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = UserDb::new();
        db.add("tim", "tanstaaftanstaaf", 4096, true, b"0123456789abcdef")
            .expect("a valid user");
        db
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = MechanismName::ALL[usize::from(pick % 5)];
    let lookup = UserLookup::new(Rc::new(database().clone()), [7; 32]);
    let random = [pick; 32];
    let inputs = ExchangeInputs {
        random: &random,
        timestamp: 697_170_952,
        hostname: "mx.example.org",
        cert_identity: (pick & 0x40 != 0).then_some("tim"),
    };
    let Some(mut mechanism) = new_mechanism(name, &lookup, &inputs) else {
        return;
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let mut step = if pick & 0x80 != 0 {
        mechanism.start(lines.next())
    } else {
        mechanism.start(None)
    };
    for line in lines {
        match step {
            Step::Challenge(_) => step = mechanism.step(line),
            // PBKDF2 is the caller's; its result is a comparison, not decoding.
            Step::Derive(_) | Step::Success { .. } | Step::Failure(_) => break,
        }
    }
    if let Step::Success { user, .. } = step {
        assert_eq!(user, "tim");
    }
});
