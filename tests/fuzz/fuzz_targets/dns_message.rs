//! The DNS message codec: a response as a server sends it, decoded against the query it
//! claims to answer (its own id and question, when that question is a name we could have
//! asked), then read for the answer with CNAMEs followed. Nothing may panic, and what
//! decodes stays within the decoder's bounds.
#![no_main]

use drawbridge::proto::dns::message::MAX_ANSWER_RECORDS;
use drawbridge::proto::dns::{Answer, Name, Query, RecordType, Response};
use libfuzzer_sys::fuzz_target;

/// The question of a message, read naively (uncompressed labels), as a query.
fn question(msg: &[u8]) -> Option<Query> {
    let id = u16::from_be_bytes([*msg.first()?, *msg.get(1)?]);
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(at)?);
        if len == 0 || len > 63 {
            break;
        }
        labels.push(std::str::from_utf8(msg.get(at + 1..at + 1 + len)?).ok()?);
        at += 1 + len;
    }
    let name = if labels.is_empty() {
        Name::root()
    } else {
        Name::parse(&labels.join(".")).ok()?
    };
    let t = u16::from_be_bytes([*msg.get(at + 1)?, *msg.get(at + 2)?]);
    Some(Query::new(id, name, RecordType(t)))
}

fuzz_target!(|data: &[u8]| {
    let fallback = Query::new(
        0,
        Name::parse("a.test").unwrap_or_else(|_| Name::root()),
        RecordType::MX,
    );
    let query = question(data).unwrap_or(fallback);
    let Ok(response) = Response::decode(data, &query) else {
        return;
    };
    for record_type in [query.record_type, RecordType::A, RecordType::CNAME] {
        if let Ok(Answer::Records { records, .. }) =
            response.answer(&query.name, record_type)
        {
            assert!(records.len() <= MAX_ANSWER_RECORDS);
        }
    }
});
