//! Deterministic fuzzing of the filter parser and evaluator: valid filters mutated by a
//! seeded PRNG (character pokes, token inserts, deletions, truncations, splices). Parsing
//! must never panic, a parsed tree must keep within the bounds the constants set, and
//! deciding on it must ask each lookup at most once.

use std::net::IpAddr;

use super::{
    ClientSpec, Decision, Filter, List, Lookups, MAX_COMPACT_LEN, MAX_ENTRIES, MAX_EXCEPT_DEPTH,
    MAX_RULE_LEN, NameLookup, ParseErrorKind, Request, Rule, ServerHost, ServiceSpec, decide,
};
use crate::proto::dns::rng::Prng;

/// Mutated filters parsed per run.
const CASES: usize = 20_000;

const SEEDS: [&str; 14] = [
    "ALL: ALL",
    "ALL: LOCAL @netgroup1",
    "ALL: .siroe.com EXCEPT externalserver.siroe.com",
    "ALL: externalserver.siroe1.com, .siroe.asia.com",
    "ALL EXCEPT pop: contractor.siroe1.com, .siroe.com",
    "ALL@msgServer.siroe1.com: @.siroe1.com",
    "pop, imap, http: .europe.siroe.com .newyork.siroe.com",
    "imap: srashad@xyz.europe.siroe.com",
    "ALL: 10. EXCEPT 10.1. EXCEPT 10.1.1.",
    "smtp@[::1]: 192.0.2.0/255.255.255.0 [2001:db8::]/32 10.0.0.0/8",
    "ALL: KNOWN@UNKNOWN DNSSPOOFER *@*",
    "+imap:ALL$+pop:ALL$+http:ALL",
    "-imap:*$-pop:*$-http:*",
    "+imap,pop,http:*",
];

/// Fragments that tend to hit edge cases of the grammar.
const FRAGMENTS: [&str; 24] = [
    " EXCEPT ",
    ":",
    ",",
    " ",
    "@",
    ".",
    "/",
    "[",
    "]",
    "$",
    "+",
    "-",
    "*",
    "ALL",
    "LOCAL",
    "::",
    "255.",
    "/24",
    "/255.0.0.0",
    "[::]",
    "é",
    "\t",
    "0",
    "@.",
];

struct Fake {
    calls: [usize; 3],
}

impl Lookups for Fake {
    fn client_name(&mut self) -> NameLookup {
        self.calls[0] += 1;
        NameLookup::Known("mx.siroe.com".into())
    }
    fn forward_confirmed(&mut self) -> Option<bool> {
        self.calls[1] += 1;
        Some(false)
    }
    fn ident_user(&mut self) -> Option<String> {
        self.calls[2] += 1;
        Some("bob".into())
    }
}

fn mutate(rng: &mut Prng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(6) {
            0 if at < chars.len() => {
                let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())];
                chars[at] = fragment.chars().next().unwrap_or(' ');
            }
            1 => {
                let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())];
                chars.splice(at..at, fragment.chars());
            }
            2 => chars.truncate(at),
            3 => {
                // Splice in the tail of another seed.
                let other: Vec<char> = SEEDS[rng.below(SEEDS.len())].chars().collect();
                let from = rng.below(other.len());
                chars.splice(at..at, other[from..].iter().copied());
            }
            4 => {
                // Repeat a stretch many times: long lists, deep EXCEPT chains, overlong text.
                let end = (at + 1 + rng.below(12)).min(chars.len());
                let stretch: Vec<char> = chars[at.min(end)..end].to_vec();
                for _ in 0..rng.below(200) {
                    chars.splice(at..at, stretch.iter().copied());
                }
            }
            _ => {
                if at < chars.len() {
                    chars.remove(at);
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// Entries and EXCEPT depth of a list.
fn shape<T>(list: &List<T>) -> (usize, usize) {
    assert!(!list.entries.is_empty(), "empty list in a checked tree");
    match &list.except {
        Some(except) => {
            let (entries, depth) = shape(except);
            (list.entries.len() + entries, depth + 1)
        }
        None => (list.entries.len(), 0),
    }
}

fn check_rule(rule: &Rule) {
    let (services, service_depth) = shape::<ServiceSpec>(&rule.services);
    let (clients, client_depth) = shape::<ClientSpec>(&rule.clients);
    assert!(services + clients <= MAX_ENTRIES);
    assert!(service_depth <= MAX_EXCEPT_DEPTH && client_depth <= MAX_EXCEPT_DEPTH);
}

fn check_decisions(allow: &[Rule], deny: &[Rule]) {
    let server = ServerHost {
        address: "::1".parse().unwrap(),
        name: Some("msgserver.siroe1.com"),
    };
    for client in ["10.1.1.1", "192.0.2.7", "2001:db8::5"] {
        let client_ip: IpAddr = client.parse().unwrap();
        for service in ["imap", "smtp"] {
            let request = Request {
                service,
                server_host: Some(server),
                client_ip,
            };
            let mut fake = Fake { calls: [0; 3] };
            let decision = decide(allow, deny, &request, &mut fake);
            assert!(fake.calls.iter().all(|&n| n <= 1), "{:?}", fake.calls);
            match decision {
                Decision::Allowed { rule } => assert!(rule < allow.len()),
                Decision::Denied { rule } => assert!(rule < deny.len()),
                Decision::AllowedByDefault => {}
            }
        }
    }
}

#[test]
fn seeds_are_valid() {
    for seed in SEEDS {
        if seed.starts_with(['+', '-']) {
            assert!(Filter::parse_compact(seed).is_ok(), "{seed}");
        } else {
            assert!(Rule::parse(seed).is_ok(), "{seed}");
        }
    }
}

#[test]
fn fuzz_parser_and_evaluator() {
    let mut rng = Prng::from_seed(0x0002_7c68);
    let mut parsed = 0;
    let mut kinds = Vec::new();
    for _ in 0..CASES {
        let seed = SEEDS[rng.below(SEEDS.len())];
        let text = mutate(&mut rng, seed);
        match Rule::parse(&text) {
            Ok(rule) => {
                assert!(text.len() <= MAX_RULE_LEN);
                check_rule(&rule);
                check_decisions(std::slice::from_ref(&rule), std::slice::from_ref(&rule));
                parsed += 1;
            }
            Err(error) => {
                assert!(
                    error.position <= text.len().min(MAX_RULE_LEN),
                    "{error:?} {text:?}"
                );
                if text.len() > MAX_RULE_LEN {
                    assert_eq!(error.kind, ParseErrorKind::TooLong);
                }
                if !kinds.contains(&error.kind) {
                    kinds.push(error.kind);
                }
            }
        }
        match Filter::parse_compact(&text) {
            Ok(filter) => {
                assert!(text.len() <= MAX_COMPACT_LEN);
                filter.allow.iter().chain(&filter.deny).for_each(check_rule);
                check_decisions(&filter.allow, &filter.deny);
            }
            Err(error) => assert!(error.position <= text.len(), "{error:?} {text:?}"),
        }
    }
    // The mutations must leave a good share valid, or the evaluator goes untested.
    assert!(parsed > CASES / 10, "only {parsed} parsed");
    // And they must reach the bounds.
    for kind in [
        ParseErrorKind::TooLong,
        ParseErrorKind::TooManyEntries,
        ParseErrorKind::TooDeep,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} never reached: {kinds:?}");
    }
}
