//! The access-filter parser (seed 002's syntax, both forms) and the evaluator on what it
//! parsed: nothing may panic, and the evaluator asks each lookup at most once.
#![no_main]

use std::net::IpAddr;

use drawbridge::proto::filter::{Decision, Filter, Lookups, NameLookup, Request, Rule, ServerHost, decide};
use libfuzzer_sys::fuzz_target;

/// Answers lookups from the input's last octet, counting the questions.
struct Fake {
    answer: u8,
    calls: [u32; 3],
}

impl Lookups for Fake {
    fn client_name(&mut self) -> NameLookup {
        self.calls[0] += 1;
        match self.answer % 3 {
            0 => NameLookup::Known("host.siroe.com".into()),
            1 => NameLookup::Unknown,
            _ => NameLookup::Failed,
        }
    }
    fn forward_confirmed(&mut self) -> Option<bool> {
        self.calls[1] += 1;
        [Some(true), Some(false), None][usize::from(self.answer / 3 % 3)]
    }
    fn ident_user(&mut self) -> Option<String> {
        self.calls[2] += 1;
        (self.answer & 0x80 != 0).then(|| "srashad".into())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (allow, deny) = if text.starts_with(['+', '-']) {
        match Filter::parse_compact(text) {
            Ok(f) => (f.allow, f.deny),
            Err(_) => return,
        }
    } else {
        match Rule::parse(text) {
            Ok(rule) => (vec![rule.clone()], vec![rule]),
            Err(_) => return,
        }
    };
    let server = ServerHost {
        address: "::1".parse().unwrap_or(IpAddr::from([0u8; 16])),
        name: Some("msgserver.siroe1.com"),
    };
    for client in ["10.1.1.1", "192.0.2.7", "2001:db8::5"] {
        let Ok(client_ip) = client.parse() else {
            continue;
        };
        for service in ["imap", "smtp"] {
            let request = Request {
                service,
                server_host: Some(server),
                client_ip,
            };
            let mut fake = Fake {
                answer: data.last().copied().unwrap_or(0),
                calls: [0; 3],
            };
            match decide(&allow, &deny, &request, &mut fake) {
                Decision::Allowed { rule } => assert!(rule < allow.len()),
                Decision::Denied { rule } => assert!(rule < deny.len()),
                Decision::AllowedByDefault => {}
            }
            assert!(fake.calls.iter().all(|&n| n <= 1), "{:?}", fake.calls);
        }
    }
});
