//! The DNS message codec (RFC 1035 §4, RFC 3596 AAAA, RFC 6891 EDNS0): encodes one
//! query, decodes the response to it. No I/O, no clock.
//!
//! The decoder trusts nothing: every count and length is checked against the bytes
//! present, compression pointers must point strictly backwards, and work is bounded by
//! the constants below. A response that does not echo our id and question is rejected.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::name::{MAX_NAME_WIRE, Name, NameBuilder, NameError};

/// RFC 1035 §4.1.1: the header is 12 octets.
pub const HEADER_LEN: usize = 12;
/// RFC 1035 §4.1.2: a question's QTYPE and QCLASS after its name, 2 octets each.
const QUESTION_FIXED_LEN: usize = 4;
/// RFC 6891 §6.1.2: our OPT record, 11 octets: the root name (1), TYPE (2), CLASS (2),
/// TTL (4) and RDLENGTH (2) of an empty RDATA.
const OPT_RECORD_LEN: usize = 11;
/// RFC 1035 §4.2.2: the 16-bit length before a message sent over TCP.
pub const TCP_LENGTH_LEN: usize = 2;
/// RFC 1035 §3.3.13: an SOA's SERIAL, REFRESH, RETRY, EXPIRE and MINIMUM after its two
/// names, 32 bits each; MINIMUM is the last.
const SOA_FIELDS_LEN: usize = 5 * 4;
/// The UDP payload size we advertise in EDNS0 and the size of our receive buffer: the
/// 2020 DNS flag day value, 1232 octets, which avoids IP fragmentation on any path with
/// an MTU of 1280 (IPv6 minimum). Memory: one buffer of 1232 octets per query in flight.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// RFC 1035 §4.2.2: a TCP message is prefixed by a 16-bit length, so at most 65 535 octets.
/// Memory: the TCP receive buffer of one query grows to at most this plus the prefix.
pub const MAX_TCP_MESSAGE: usize = 65_535;
/// Compression pointers followed while reading one name. A well-formed compressor needs
/// at most one hop per label, and 255 octets hold at most 127 labels. Pointers must also
/// point strictly backwards, so this bounds the work, not the correctness.
pub const MAX_POINTER_HOPS: usize = 127;
/// Resource records read from one response (all three sections). Each costs about 64
/// octets plus its names (at most 2 × 253), so at most about 290 KB per response; real
/// answers hold a handful.
pub const MAX_RECORDS: usize = 512;
/// CNAME records followed inside one response before the alias is handed back to the
/// resolver to ask again.
pub const MAX_CNAME_HOPS: usize = 8;
/// Records of the asked type kept in one `Answer` (lowest MX preferences first when
/// there are more). A cache entry then costs at most 16 × 300 octets.
pub const MAX_ANSWER_RECORDS: usize = 16;

/// RFC 1035 §3.2.4: class IN.
const CLASS_IN: u16 = 1;
/// RFC 1035 §4.1.1 header flag bits.
const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;

/// An RR TYPE (RFC 1035 §3.2.2 and later registrations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordType(pub u16);

impl RecordType {
    pub const A: RecordType = RecordType(1);
    pub const NS: RecordType = RecordType(2);
    pub const CNAME: RecordType = RecordType(5);
    pub const SOA: RecordType = RecordType(6);
    pub const PTR: RecordType = RecordType(12);
    pub const MX: RecordType = RecordType(15);
    pub const AAAA: RecordType = RecordType(28);
    /// RFC 6891: the EDNS0 pseudo-record.
    pub const OPT: RecordType = RecordType(41);
}

/// RFC 1035 §4.1.1 RCODE, extended by EDNS0 (RFC 6891 §6.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    Other(u16),
}

impl Rcode {
    pub fn from_code(code: u16) -> Rcode {
        match code {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            other => Rcode::Other(other),
        }
    }
}

/// Why a response was rejected. Each names the field that lied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer than `HEADER_LEN` octets.
    TruncatedHeader,
    /// The id is not the one we sent (a stray or spoofed reply).
    IdMismatch,
    /// QR is 0, or the opcode is not QUERY.
    NotResponse,
    /// QDCOUNT is not 1.
    QuestionCount,
    /// The question section ends before its QTYPE and QCLASS.
    TruncatedQuestion,
    /// The echoed question is not ours (name, type or class).
    QuestionMismatch,
    /// A name runs past the end of the message.
    TruncatedName,
    /// A label length octet of 64..=191 (RFC 1035 §4.1.4 leaves these undefined).
    LabelTooLong,
    /// A name longer than 255 octets once decompressed.
    NameTooLong,
    /// A label with a byte that is not a letter, digit, `-`, `_` or `/`.
    BadLabel,
    /// A compression pointer to itself or to an offset it already passed.
    PointerLoop,
    /// A compression pointer to a later offset.
    ForwardPointer,
    /// More than `MAX_POINTER_HOPS` pointers in one name.
    TooManyPointers,
    /// A count says more records than the message holds.
    MissingRecords,
    /// A record ends inside its TYPE/CLASS/TTL/RDLENGTH.
    TruncatedRecord,
    /// RDLENGTH runs past the end of the message.
    RdataPastEnd,
    /// RDLENGTH does not match the data of a record we parse.
    BadRdataLength,
    /// More than `MAX_RECORDS` records.
    TooManyRecords,
    /// Octets left over after the last record the counts announce.
    TrailingBytes,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One question we ask: a fresh id, a name and a type, class IN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub name: Name,
    pub record_type: RecordType,
}

impl Query {
    pub fn new(id: u16, name: Name, record_type: RecordType) -> Query {
        Query {
            id,
            name,
            record_type,
        }
    }

    /// The query message: RD set, one question, and an EDNS0 OPT record advertising
    /// `MAX_UDP_PAYLOAD`. At most 12 + 255 + 4 + 11 = 282 octets.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_LEN + self.name.wire_len() + QUESTION_FIXED_LEN + OPT_RECORD_LEN,
        );
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&FLAG_RD.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
        out.extend_from_slice(&0u16.to_be_bytes()); // ANCOUNT
        out.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
        out.extend_from_slice(&1u16.to_be_bytes()); // ARCOUNT: the OPT record
        self.name.write_wire(&mut out);
        out.extend_from_slice(&self.record_type.0.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        // RFC 6891 §6.1.2: root owner, TYPE OPT, CLASS = payload size, TTL = extended
        // RCODE 0, version 0, no flags; no options.
        out.push(0);
        out.extend_from_slice(&RecordType::OPT.0.to_be_bytes());
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out
    }

    /// The query framed for TCP (RFC 1035 §4.2.2 length prefix).
    pub fn encode_tcp(&self) -> Vec<u8> {
        let message = self.encode();
        // Invariant: a query is at most 282 octets, far below 65 535.
        let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(TCP_LENGTH_LEN + message.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&message);
        out
    }
}

/// The data of a record type we understand. Other types are skipped by RDLENGTH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        preference: u16,
        exchange: Name,
    },
    Ptr(Name),
    Cname(Name),
    /// Only what negative caching needs (RFC 2308 §5).
    Soa {
        minimum: u32,
    },
}

impl RecordData {
    pub fn record_type(&self) -> RecordType {
        match self {
            RecordData::A(_) => RecordType::A,
            RecordData::Aaaa(_) => RecordType::AAAA,
            RecordData::Mx { .. } => RecordType::MX,
            RecordData::Ptr(_) => RecordType::PTR,
            RecordData::Cname(_) => RecordType::CNAME,
            RecordData::Soa { .. } => RecordType::SOA,
        }
    }
}

/// One resource record of class IN that we understand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    /// Seconds; RFC 2181 §8: a value with the top bit set is read as 0.
    pub ttl: u32,
    pub data: RecordData,
}

/// A decoded response whose header and question matched our query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: Rcode,
    /// TC: the answer did not fit; ask again over TCP.
    pub truncated: bool,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

/// What a response says about the question, CNAMEs followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Records of the asked type (at most `MAX_ANSWER_RECORDS`), with the smallest TTL of
    /// them and of the CNAMEs that led to them.
    Records { records: Vec<RecordData>, ttl: u32 },
    /// The name is an alias whose target the response does not answer: ask again.
    Alias { target: Name, ttl: u32 },
    /// NOERROR without records of the type. `ttl` from the SOA (RFC 2308 §5) if present.
    NoData { ttl: Option<u32> },
    /// NXDOMAIN. `ttl` from the SOA (RFC 2308 §5) if present.
    NxDomain { ttl: Option<u32> },
}

impl Response {
    /// Decodes `bytes` as the response to `query`.
    pub fn decode(bytes: &[u8], query: &Query) -> Result<Response, DecodeError> {
        let mut header = Fields::at(bytes, 0);
        let mut field = || header.u16().ok_or(DecodeError::TruncatedHeader);
        let (id, flags, questions) = (field()?, field()?, field()?);
        // Answer, authority and additional records.
        let counts = [field()?, field()?, field()?];
        if id != query.id {
            return Err(DecodeError::IdMismatch);
        }
        let opcode = (flags >> 11) & 0x0f;
        if flags & FLAG_QR == 0 || opcode != 0 {
            return Err(DecodeError::NotResponse);
        }
        if questions != 1 {
            return Err(DecodeError::QuestionCount);
        }
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > MAX_RECORDS {
            return Err(DecodeError::TooManyRecords);
        }

        let (qname, mut pos) = read_name(bytes, HEADER_LEN, Chars::IfValid)?;
        // A question name of other characters cannot be ours.
        let qname = qname.ok_or(DecodeError::QuestionMismatch)?;
        let mut fixed = Fields::at(bytes, pos);
        let qtype = fixed.u16().ok_or(DecodeError::TruncatedQuestion)?;
        let qclass = fixed.u16().ok_or(DecodeError::TruncatedQuestion)?;
        pos = fixed.at;
        if qname != query.name || qtype != query.record_type.0 || qclass != CLASS_IN {
            return Err(DecodeError::QuestionMismatch);
        }

        let mut extended_rcode = 0u16;
        let mut sections: [Vec<Record>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for (section, count) in sections.iter_mut().zip(counts) {
            for _ in 0..count {
                if pos == bytes.len() {
                    return Err(DecodeError::MissingRecords);
                }
                let (record, next) = read_record(bytes, pos)?;
                pos = next;
                match record {
                    Parsed::Record(record) => section.push(record),
                    Parsed::Opt { extended } => extended_rcode = extended,
                    Parsed::Skipped => {}
                }
            }
        }
        if pos != bytes.len() {
            return Err(DecodeError::TrailingBytes);
        }
        let [answers, authority, additional] = sections;
        Ok(Response {
            id,
            rcode: Rcode::from_code((extended_rcode << 4) | (flags & 0x0f)),
            truncated: flags & FLAG_TC != 0,
            authoritative: flags & FLAG_AA != 0,
            answers,
            authority,
            additional,
        })
    }

    /// What this response says about `name`/`record_type`, following CNAMEs in the answer
    /// section (at most `MAX_CNAME_HOPS`). Fails with the rcode when it is neither
    /// NOERROR nor NXDOMAIN.
    pub fn answer(&self, name: &Name, record_type: RecordType) -> Result<Answer, Rcode> {
        let negative_ttl = self.negative_ttl();
        match self.rcode {
            Rcode::NoError => {}
            Rcode::NxDomain => return Ok(Answer::NxDomain { ttl: negative_ttl }),
            other => return Err(other),
        }
        let mut owner = name;
        let mut ttl = u32::MAX;
        let mut hops = 0;
        loop {
            let mut records: Vec<(u32, &RecordData)> = self
                .answers
                .iter()
                .filter(|r| &r.name == owner && r.data.record_type() == record_type)
                .map(|r| (r.ttl, &r.data))
                .collect();
            if !records.is_empty() {
                if records.len() > MAX_ANSWER_RECORDS {
                    records.sort_by_key(|(_, data)| match data {
                        RecordData::Mx { preference, .. } => *preference,
                        _ => 0,
                    });
                    records.truncate(MAX_ANSWER_RECORDS);
                }
                let ttl = records.iter().map(|(t, _)| *t).fold(ttl, u32::min);
                let records = records.into_iter().map(|(_, d)| d.clone()).collect();
                return Ok(Answer::Records { records, ttl });
            }
            let alias = self.answers.iter().find_map(|r| match &r.data {
                RecordData::Cname(target) if &r.name == owner => Some((r.ttl, target)),
                _ => None,
            });
            match alias {
                None if hops == 0 => return Ok(Answer::NoData { ttl: negative_ttl }),
                None => {
                    return Ok(Answer::Alias {
                        target: owner.clone(),
                        ttl,
                    });
                }
                Some((alias_ttl, target)) => {
                    ttl = ttl.min(alias_ttl);
                    hops += 1;
                    owner = target;
                    if hops > MAX_CNAME_HOPS {
                        return Ok(Answer::Alias {
                            target: owner.clone(),
                            ttl,
                        });
                    }
                }
            }
        }
    }

    /// RFC 2308 §5: the negative TTL is the smaller of the SOA's TTL and its MINIMUM.
    fn negative_ttl(&self) -> Option<u32> {
        self.authority.iter().find_map(|r| match r.data {
            RecordData::Soa { minimum } => Some(r.ttl.min(minimum)),
            _ => None,
        })
    }
}

enum Parsed {
    Record(Record),
    Opt { extended: u16 },
    Skipped,
}

/// Reads one resource record at `pos`; returns it and the offset after it.
///
/// Every name's structure is checked. Characters are checked only where the name is
/// used: a record whose owner name has characters no name of ours has is about some
/// other name, and is skipped whole; the names an MX, CNAME or PTR record points to must
/// be valid; the SOA's names are never used, so only their structure counts.
fn read_record(msg: &[u8], pos: usize) -> Result<(Parsed, usize), DecodeError> {
    let (owner, pos) = read_name(msg, pos, Chars::IfValid)?;
    // Names in the data of a record that is skipped anyway are only walked.
    let data_chars = if owner.is_some() {
        Chars::Checked
    } else {
        Chars::Ignored
    };
    // TYPE, CLASS, TTL and RDLENGTH.
    let mut fixed = Fields::at(msg, pos);
    let (Some(rtype), Some(class), Some(raw_ttl), Some(rdlength)) =
        (fixed.u16(), fixed.u16(), fixed.u32(), fixed.u16())
    else {
        return Err(DecodeError::TruncatedRecord);
    };
    let rtype = RecordType(rtype);
    let start = fixed.at;
    let rdata = start
        .checked_add(usize::from(rdlength))
        .and_then(|end| msg.get(start..end))
        .ok_or(DecodeError::RdataPastEnd)?;
    let end = start + rdata.len();
    let ttl = if raw_ttl & 0x8000_0000 != 0 {
        0
    } else {
        raw_ttl
    };
    if rtype == RecordType::OPT {
        // RFC 6891 §6.1.3: the TTL field's top octet extends the RCODE.
        let [extended, ..] = raw_ttl.to_be_bytes();
        let extended = u16::from(extended);
        return Ok((Parsed::Opt { extended }, end));
    }
    if class != CLASS_IN {
        return Ok((Parsed::Skipped, end));
    }
    // A name inside RDATA must end exactly where RDLENGTH says.
    let name_at = |offset: usize, chars: Chars| -> Result<(Option<Name>, usize), DecodeError> {
        let (name, next) = read_name(msg, offset, chars)?;
        if next > end {
            return Err(DecodeError::BadRdataLength);
        }
        Ok((name, next))
    };
    // A name the record is used for: present unless the whole record is skipped.
    let used = |name: Option<Name>| name.ok_or(DecodeError::BadLabel);
    let exact = |used: usize| {
        if used == end {
            Ok(())
        } else {
            Err(DecodeError::BadRdataLength)
        }
    };
    let data = match rtype {
        RecordType::A => {
            let octets: [u8; 4] = rdata.try_into().map_err(|_| DecodeError::BadRdataLength)?;
            RecordData::A(Ipv4Addr::from(octets))
        }
        RecordType::AAAA => {
            let octets: [u8; 16] = rdata.try_into().map_err(|_| DecodeError::BadRdataLength)?;
            RecordData::Aaaa(Ipv6Addr::from(octets))
        }
        RecordType::MX => {
            let mut fields = Fields::at(rdata, 0);
            let preference = fields.u16().ok_or(DecodeError::BadRdataLength)?;
            let (exchange, next) = name_at(start + fields.at, data_chars)?;
            exact(next)?;
            if owner.is_none() {
                return Ok((Parsed::Skipped, end));
            }
            RecordData::Mx {
                preference,
                exchange: used(exchange)?,
            }
        }
        RecordType::PTR | RecordType::CNAME => {
            let (target, next) = name_at(start, data_chars)?;
            exact(next)?;
            if owner.is_none() {
                return Ok((Parsed::Skipped, end));
            }
            let target = used(target)?;
            if rtype == RecordType::PTR {
                RecordData::Ptr(target)
            } else {
                RecordData::Cname(target)
            }
        }
        RecordType::SOA => {
            let (_mname, next) = name_at(start, Chars::Ignored)?;
            let (_rname, next) = name_at(next, Chars::Ignored)?;
            let fields: [u8; SOA_FIELDS_LEN] = msg
                .get(next..end)
                .and_then(|fields| fields.try_into().ok())
                .ok_or(DecodeError::BadRdataLength)?;
            let [.., m0, m1, m2, m3] = fields;
            RecordData::Soa {
                minimum: u32::from_be_bytes([m0, m1, m2, m3]),
            }
        }
        _ => return Ok((Parsed::Skipped, end)),
    };
    let Some(name) = owner else {
        return Ok((Parsed::Skipped, end));
    };
    Ok((Parsed::Record(Record { name, ttl, data }), end))
}

/// Big-endian fields read one after another from `at` on: each `None` when the message
/// ends first.
struct Fields<'a> {
    msg: &'a [u8],
    /// The offset of the next field.
    at: usize,
}

impl<'a> Fields<'a> {
    fn at(msg: &'a [u8], at: usize) -> Fields<'a> {
        Fields { msg, at }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let field = *self.msg.get(self.at..)?.first_chunk::<N>()?;
        self.at += N;
        Some(field)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
}

/// What the decoder does with the characters of a name (its structure is always
/// checked: label lengths, pointers, the 255-octet limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chars {
    /// The name is used: characters outside [`Name`]'s set are an error.
    Checked,
    /// The name is used if its characters are valid; otherwise it is given as `None`.
    IfValid,
    /// The name is never used: it is walked, not built, and given as `None`.
    Ignored,
}

/// Reads a possibly compressed name at `start`; returns it and the offset after it in
/// the record (after the first pointer, if any).
///
/// Each pointer must point before the start of the labels read so far in this name
/// (so strictly backwards, and never into the current name), which rules out loops;
/// `MAX_POINTER_HOPS` and the 255-octet name limit bound the work.
fn read_name(msg: &[u8], start: usize, chars: Chars) -> Result<(Option<Name>, usize), DecodeError> {
    let mut builder = (chars != Chars::Ignored).then(NameBuilder::new);
    let mut pos = start;
    let mut segment_start = start;
    let mut after: Option<usize> = None;
    let mut hops = 0usize;
    let mut wire_len = 1usize;
    loop {
        #[cfg(test)]
        tests::count_step();
        let len = *msg.get(pos).ok_or(DecodeError::TruncatedName)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let next = after.unwrap_or(pos + 1);
                return Ok((builder.map(NameBuilder::finish), next));
            }
            0x00 => {
                let len = usize::from(len);
                wire_len += 1 + len;
                if wire_len > MAX_NAME_WIRE {
                    return Err(DecodeError::NameTooLong);
                }
                let label = msg
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(DecodeError::TruncatedName)?;
                if let Some(b) = builder.as_mut() {
                    match b.push_label(label) {
                        Ok(()) => {}
                        Err(NameError::BadCharacter) if chars == Chars::IfValid => builder = None,
                        Err(NameError::NameTooLong) => return Err(DecodeError::NameTooLong),
                        Err(NameError::LabelTooLong) => return Err(DecodeError::LabelTooLong),
                        Err(NameError::EmptyLabel | NameError::BadCharacter) => {
                            return Err(DecodeError::BadLabel);
                        }
                    }
                }
                pos += 1 + len;
            }
            0xc0 => {
                let low = *msg.get(pos + 1).ok_or(DecodeError::TruncatedName)?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                if target > pos {
                    return Err(DecodeError::ForwardPointer);
                }
                if target >= segment_start {
                    return Err(DecodeError::PointerLoop);
                }
                hops += 1;
                if hops > MAX_POINTER_HOPS {
                    return Err(DecodeError::TooManyPointers);
                }
                after.get_or_insert(pos + 2);
                segment_start = target;
                pos = target;
            }
            _ => return Err(DecodeError::LabelTooLong),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        static STEPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// One label or pointer read by `read_name` (the decoder's unit of work).
    pub(crate) fn count_step() {
        STEPS.with(|s| s.set(s.get() + 1));
    }

    /// Name-reading steps taken on this thread so far.
    pub(crate) fn steps() -> usize {
        STEPS.with(|s| s.get())
    }

    /// Decodes hex written in the test sources.
    pub(crate) fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(|b| b.is_ascii_hexdigit())
            .map(|b| match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => b - b'A' + 10,
            })
            .collect();
        assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
        digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
    }

    fn query(id: u16, name: &str, record_type: RecordType) -> Query {
        Query::new(id, Name::parse(name).unwrap(), record_type)
    }

    // Captured from dnsmasq 2.90 on loopback (--local=/test/ --local-ttl=300):
    // MX example.test → 10 mail.example.test, with A and AAAA of mail in the additional
    // section; the query carried an EDNS0 OPT record, echoed at the end.
    pub(crate) const MX_EXAMPLE: &str = "\
        100085800001000100000003076578616d706c65047465737400000f0001c00c000f00010000012c\
        0015000a046d61696c076578616d706c65047465737400c02c000100010000012c0004c0000219c0\
        2c001c00010000012c001020010db800000000000000000000002500002904d0000000000000";
    pub(crate) const A_MAIL: &str = "\
        100185800001000100000001046d61696c076578616d706c6504746573740000010001c00c000100\
        010000012c0004c000021900002904d0000000000000";
    pub(crate) const AAAA_MAIL: &str = "\
        100285800001000100000001046d61696c076578616d706c65047465737400001c0001c00c001c00\
        010000012c001020010db800000000000000000000002500002904d0000000000000";
    pub(crate) const NXDOMAIN: &str = "\
        100381830001000000000001076e6f7468657265076578616d706c65047465737400000f00010000\
        2904d0000000000000";
    pub(crate) const PTR_MAIL: &str = "\
        100485800001000100000001023235013201300331393207696e2d61646472046172706100000c00\
        01c00c000c00010000012c0013046d61696c076578616d706c6504746573740000002904d0000000\
        000000";
    pub(crate) const CNAME_ALIAS: &str = "\
        10058580000100020000000105616c696173076578616d706c6504746573740000010001c00c0005\
        00010000012c0013046d61696c076578616d706c65047465737400c030000100010000012c0004c0\
        00021900002904d0000000000000";
    pub(crate) const NULL_MX: &str = "\
        100685800001000100000001066e756c6c6d78047465737400000f0001c00c000f00010000012c00\
        0300000000002904d0000000000000";
    pub(crate) const NODATA_MX: &str = "\
        100781800001000000000001046d61696c076578616d706c65047465737400000f000100002904d0\
        000000000000";

    /// Every captured answer with the query it answers.
    pub(crate) fn captured() -> Vec<(Vec<u8>, Query)> {
        vec![
            (
                hex(MX_EXAMPLE),
                query(0x1000, "example.test", RecordType::MX),
            ),
            (
                hex(A_MAIL),
                query(0x1001, "mail.example.test", RecordType::A),
            ),
            (
                hex(AAAA_MAIL),
                query(0x1002, "mail.example.test", RecordType::AAAA),
            ),
            (
                hex(NXDOMAIN),
                query(0x1003, "nothere.example.test", RecordType::MX),
            ),
            (
                hex(PTR_MAIL),
                query(0x1004, "25.2.0.192.in-addr.arpa", RecordType::PTR),
            ),
            (
                hex(CNAME_ALIAS),
                query(0x1005, "alias.example.test", RecordType::A),
            ),
            (hex(NULL_MX), query(0x1006, "nullmx.test", RecordType::MX)),
            (
                hex(NODATA_MX),
                query(0x1007, "mail.example.test", RecordType::MX),
            ),
        ]
    }

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    #[test]
    fn encode_query() {
        let q = query(0x1000, "Example.TEST.", RecordType::MX);
        // What dnsmasq was sent for the MX_EXAMPLE capture.
        let expected = hex(
            "100001000001000000000001076578616d706c65047465737400000f0001\
             00002904d0000000000000",
        );
        assert_eq!(q.encode(), expected);
        let tcp = q.encode_tcp();
        assert_eq!(&tcp[..2], &[0, expected.len() as u8]);
        assert_eq!(&tcp[2..], &expected[..]);
    }

    #[test]
    fn decode_mx_with_additional() {
        let (bytes, q) = &captured()[0];
        let r = Response::decode(bytes, q).unwrap();
        assert_eq!(r.rcode, Rcode::NoError);
        assert!(!r.truncated);
        assert!(r.authoritative);
        assert_eq!(
            r.answers,
            vec![Record {
                name: name("example.test"),
                ttl: 300,
                data: RecordData::Mx {
                    preference: 10,
                    exchange: name("mail.example.test")
                }
            }]
        );
        assert!(r.authority.is_empty());
        assert_eq!(r.additional.len(), 2);
        assert_eq!(
            r.additional[0].data,
            RecordData::A("192.0.2.25".parse().unwrap())
        );
        assert_eq!(
            r.additional[1].data,
            RecordData::Aaaa("2001:db8::25".parse().unwrap())
        );
        assert_eq!(r.additional[1].name, name("mail.example.test"));
        assert_eq!(
            r.answer(&q.name, RecordType::MX),
            Ok(Answer::Records {
                records: vec![RecordData::Mx {
                    preference: 10,
                    exchange: name("mail.example.test")
                }],
                ttl: 300
            })
        );
    }

    #[test]
    fn decode_a_aaaa_ptr() {
        let all = captured();
        let r = Response::decode(&all[1].0, &all[1].1).unwrap();
        assert_eq!(
            r.answer(&all[1].1.name, RecordType::A),
            Ok(Answer::Records {
                records: vec![RecordData::A("192.0.2.25".parse().unwrap())],
                ttl: 300
            })
        );
        let r = Response::decode(&all[2].0, &all[2].1).unwrap();
        assert_eq!(
            r.answers[0].data,
            RecordData::Aaaa("2001:db8::25".parse().unwrap())
        );
        let r = Response::decode(&all[4].0, &all[4].1).unwrap();
        assert_eq!(
            r.answer(&all[4].1.name, RecordType::PTR),
            Ok(Answer::Records {
                records: vec![RecordData::Ptr(name("mail.example.test"))],
                ttl: 300
            })
        );
    }

    #[test]
    fn decode_negative_answers() {
        let all = captured();
        let r = Response::decode(&all[3].0, &all[3].1).unwrap();
        assert_eq!(r.rcode, Rcode::NxDomain);
        assert_eq!(
            r.answer(&all[3].1.name, RecordType::MX),
            Ok(Answer::NxDomain { ttl: None })
        );
        let r = Response::decode(&all[7].0, &all[7].1).unwrap();
        assert_eq!(r.rcode, Rcode::NoError);
        assert_eq!(
            r.answer(&all[7].1.name, RecordType::MX),
            Ok(Answer::NoData { ttl: None })
        );
    }

    #[test]
    fn decode_cname_chain() {
        let all = captured();
        let (bytes, q) = &all[5];
        let r = Response::decode(bytes, q).unwrap();
        assert_eq!(
            r.answers[0].data,
            RecordData::Cname(name("mail.example.test"))
        );
        assert_eq!(
            r.answer(&q.name, RecordType::A),
            Ok(Answer::Records {
                records: vec![RecordData::A("192.0.2.25".parse().unwrap())],
                ttl: 300
            })
        );
        // Without the A record the alias is handed back.
        let mut only_alias = r.clone();
        only_alias.answers.truncate(1);
        assert_eq!(
            only_alias.answer(&q.name, RecordType::A),
            Ok(Answer::Alias {
                target: name("mail.example.test"),
                ttl: 300
            })
        );
    }

    #[test]
    fn cname_loop_in_answer_is_bounded() {
        let a = name("a.test");
        let b = name("b.test");
        let cname = |from: &Name, to: &Name| Record {
            name: from.clone(),
            ttl: 60,
            data: RecordData::Cname(to.clone()),
        };
        let r = Response {
            id: 1,
            rcode: Rcode::NoError,
            truncated: false,
            authoritative: false,
            answers: vec![cname(&a, &b), cname(&b, &a)],
            authority: vec![],
            additional: vec![],
        };
        assert!(matches!(
            r.answer(&a, RecordType::A),
            Ok(Answer::Alias { .. })
        ));
    }

    #[test]
    fn decode_null_mx() {
        let all = captured();
        let (bytes, q) = &all[6];
        let r = Response::decode(bytes, q).unwrap();
        assert_eq!(
            r.answers[0].data,
            RecordData::Mx {
                preference: 0,
                exchange: Name::root()
            }
        );
    }

    #[test]
    fn servfail_is_not_an_answer() {
        let (mut bytes, q) = captured().swap_remove(3);
        bytes[3] = (bytes[3] & 0xf0) | 2;
        let r = Response::decode(&bytes, &q).unwrap();
        assert_eq!(r.rcode, Rcode::ServFail);
        assert_eq!(r.answer(&q.name, RecordType::MX), Err(Rcode::ServFail));
    }

    #[test]
    fn soa_gives_negative_ttl() {
        // NXDOMAIN with an SOA in the authority section: TTL 3600, MINIMUM 600.
        let mut bytes = hex(NXDOMAIN);
        bytes[9] = 1; // NSCOUNT
        let additional = bytes.split_off(bytes.len() - 11);
        // ns0.example.test, hostmaster.example.test, then the five numbers.
        let soa_rdata = hex("036e7330c014")
            .into_iter()
            .chain(hex("0a686f73746d6173746572c014"))
            .chain(hex("00000001 00000e10 00000384 00093a80 00000258"))
            .collect::<Vec<u8>>();
        bytes.extend_from_slice(&hex("c014 0006 0001 00000e10"));
        bytes.extend_from_slice(&(soa_rdata.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&soa_rdata);
        bytes.extend_from_slice(&additional);
        let q = query(0x1003, "nothere.example.test", RecordType::MX);
        let r = Response::decode(&bytes, &q).unwrap();
        assert_eq!(r.authority[0].name, name("example.test"));
        assert_eq!(
            r.answer(&q.name, RecordType::MX),
            Ok(Answer::NxDomain { ttl: Some(600) })
        );
    }

    /// NXDOMAIN for nothere.example.test with an SOA whose names are `mname` and `rname`
    /// (wire form, uncompressed), TTL 3600, MINIMUM 600.
    fn nxdomain_with_soa(mname: &[u8], rname: &[u8]) -> (Vec<u8>, Query) {
        let mut bytes = hex(NXDOMAIN);
        bytes[9] = 1; // NSCOUNT
        let additional = bytes.split_off(bytes.len() - 11);
        let mut soa_rdata = mname.to_vec();
        soa_rdata.extend_from_slice(rname);
        soa_rdata.extend_from_slice(&hex("00000001 00000e10 00000384 00093a80 00000258"));
        bytes.extend_from_slice(&hex("c014 0006 0001 00000e10"));
        bytes.extend_from_slice(&(soa_rdata.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&soa_rdata);
        bytes.extend_from_slice(&additional);
        (bytes, query(0x1003, "nothere.example.test", RecordType::MX))
    }

    #[test]
    fn odd_characters_in_names_never_used_do_not_fail_the_answer() {
        // The SOA's names hold a space, a star, an escape and 8-bit octets: only their
        // structure counts, and the answer is still NXDOMAIN (permanent), with its TTL.
        let (bytes, q) = nxdomain_with_soa(b"\x05n s*1\x00", b"\x06h\x1b\xffm\xc3\xa9\x00");
        let r = Response::decode(&bytes, &q).unwrap();
        assert_eq!(
            r.answer(&q.name, RecordType::MX),
            Ok(Answer::NxDomain { ttl: Some(600) })
        );
        // Their structure is still checked.
        let (bytes, q) = nxdomain_with_soa(b"\xc0\xff", b"\x00");
        assert_eq!(
            Response::decode(&bytes, &q),
            Err(DecodeError::ForwardPointer)
        );
        let (bytes, q) = nxdomain_with_soa(&[0x40, 0], b"\x00");
        assert_eq!(Response::decode(&bytes, &q), Err(DecodeError::LabelTooLong));
        // A SOA owned by an odd name is about another zone: skipped, so no TTL.
        let (mut bytes, q) = nxdomain_with_soa(b"\x00", b"\x00");
        let at = bytes.len() - 11 - 22 - 2 - 8 - 2;
        assert_eq!(&bytes[at..at + 2], &[0xc0, 0x14]);
        bytes.splice(at..at + 2, [1, b'*', 0]);
        let r = Response::decode(&bytes, &q).unwrap();
        assert!(r.authority.is_empty());
        assert_eq!(
            r.answer(&q.name, RecordType::MX),
            Ok(Answer::NxDomain { ttl: None })
        );
    }

    #[test]
    fn names_that_are_used_must_be_valid() {
        let q = query(1, "a.test", RecordType::MX);
        let mx = |exchange: &[u8]| {
            let mut msg = hex("0001 8180 0001 0001 0000 0000 0161 0474657374 00 000f 0001");
            msg.extend_from_slice(&hex("c00c 000f 0001 00000e10"));
            msg.extend_from_slice(&((exchange.len() + 2) as u16).to_be_bytes());
            msg.extend_from_slice(&[0, 10]);
            msg.extend_from_slice(exchange);
            msg
        };
        let good = Response::decode(&mx(b"\x02mx\xc0\x0c"), &q).unwrap();
        assert!(matches!(
            &good.answers[0].data,
            RecordData::Mx { exchange, .. } if exchange.as_str() == "mx.a.test"
        ));
        assert_eq!(
            Response::decode(&mx(b"\x02m\x1b\xc0\x0c"), &q),
            Err(DecodeError::BadLabel)
        );
        // A question name of odd characters is not ours.
        let mut odd = mx(b"\x02mx\xc0\x0c");
        odd[13] = b'*';
        assert_eq!(
            Response::decode(&odd, &q),
            Err(DecodeError::QuestionMismatch)
        );
    }

    #[test]
    fn truncation_at_every_index_is_an_error() {
        for (bytes, q) in captured() {
            assert!(Response::decode(&bytes, &q).is_ok());
            for cut in 0..bytes.len() {
                let err = Response::decode(&bytes[..cut], &q).unwrap_err();
                if cut < HEADER_LEN {
                    assert_eq!(err, DecodeError::TruncatedHeader);
                }
            }
        }
    }

    #[test]
    fn truncation_errors_name_the_field() {
        let bytes = hex(A_MAIL);
        let q = query(0x1001, "mail.example.test", RecordType::A);
        // Inside the question name, inside QTYPE, at a record boundary, inside a record
        // header, inside RDATA.
        assert_eq!(
            Response::decode(&bytes[..20], &q),
            Err(DecodeError::TruncatedName)
        );
        assert_eq!(
            Response::decode(&bytes[..32], &q),
            Err(DecodeError::TruncatedQuestion)
        );
        assert_eq!(
            Response::decode(&bytes[..35], &q),
            Err(DecodeError::MissingRecords)
        );
        assert_eq!(
            Response::decode(&bytes[..40], &q),
            Err(DecodeError::TruncatedRecord)
        );
        assert_eq!(
            Response::decode(&bytes[..49], &q),
            Err(DecodeError::RdataPastEnd)
        );
    }

    #[test]
    fn id_and_question_must_match() {
        let bytes = hex(A_MAIL);
        let wrong_id = query(0x1002, "mail.example.test", RecordType::A);
        assert_eq!(
            Response::decode(&bytes, &wrong_id),
            Err(DecodeError::IdMismatch)
        );
        let wrong_name = query(0x1001, "mail2.example.test", RecordType::A);
        assert_eq!(
            Response::decode(&bytes, &wrong_name),
            Err(DecodeError::QuestionMismatch)
        );
        let wrong_type = query(0x1001, "mail.example.test", RecordType::AAAA);
        assert_eq!(
            Response::decode(&bytes, &wrong_type),
            Err(DecodeError::QuestionMismatch)
        );
        // Case is not significant in the echo.
        let mut upper = bytes.clone();
        upper[13..17].make_ascii_uppercase();
        let q = query(0x1001, "mail.example.test", RecordType::A);
        assert!(Response::decode(&upper, &q).is_ok());
        // Class CH instead of IN.
        let mut chaos = bytes.clone();
        chaos[34] = 3;
        assert_eq!(
            Response::decode(&chaos, &q),
            Err(DecodeError::QuestionMismatch)
        );
        // A query (QR = 0) is not a response.
        let mut not_response = bytes.clone();
        not_response[2] &= 0x7f;
        assert_eq!(
            Response::decode(&not_response, &q),
            Err(DecodeError::NotResponse)
        );
    }

    #[test]
    fn lying_counts() {
        let q = query(0x1001, "mail.example.test", RecordType::A);
        let bytes = hex(A_MAIL);
        let mut qd = bytes.clone();
        qd[5] = 2;
        assert_eq!(Response::decode(&qd, &q), Err(DecodeError::QuestionCount));
        let mut qd0 = bytes.clone();
        qd0[5] = 0;
        assert_eq!(Response::decode(&qd0, &q), Err(DecodeError::QuestionCount));
        let mut an = bytes.clone();
        an[7] = 3;
        assert_eq!(Response::decode(&an, &q), Err(DecodeError::MissingRecords));
        let mut ar = bytes.clone();
        ar[11] = 0;
        assert_eq!(Response::decode(&ar, &q), Err(DecodeError::TrailingBytes));
        let mut many = bytes.clone();
        many[6] = 0xff;
        assert_eq!(
            Response::decode(&many, &q),
            Err(DecodeError::TooManyRecords)
        );
    }

    #[test]
    fn lying_rdlength() {
        let q = query(0x1001, "mail.example.test", RecordType::A);
        let bytes = hex(A_MAIL);
        // RDLENGTH of the A record is at 45..47 (value 4).
        assert_eq!(&bytes[45..47], &[0, 4]);
        let mut long = bytes.clone();
        long[46] = 200;
        assert_eq!(Response::decode(&long, &q), Err(DecodeError::RdataPastEnd));
        // 15 stays inside the message (the OPT record follows) but is no A record.
        let mut longish = bytes.clone();
        longish[46] = 15;
        assert_eq!(
            Response::decode(&longish, &q),
            Err(DecodeError::BadRdataLength)
        );
        let mut short = bytes.clone();
        short[46] = 3;
        assert_eq!(
            Response::decode(&short, &q),
            Err(DecodeError::BadRdataLength)
        );
        // MX: RDLENGTH 0x15 at 40..42 of the MX capture; one short cuts the name.
        let q = query(0x1000, "example.test", RecordType::MX);
        let mx = hex(MX_EXAMPLE);
        assert_eq!(&mx[40..42], &[0, 0x15]);
        let mut short = mx.clone();
        short[41] = 0x14;
        assert_eq!(
            Response::decode(&short, &q),
            Err(DecodeError::BadRdataLength)
        );
        let mut short = mx.clone();
        short[41] = 1;
        assert_eq!(
            Response::decode(&short, &q),
            Err(DecodeError::BadRdataLength)
        );
    }

    /// A response to `query(1, "a.test", A)` whose answer owner name is `owner` (raw).
    fn with_owner(owner: &[u8]) -> Vec<u8> {
        let mut bytes = hex("0001 8180 0001 0001 0000 0000 0161 0474657374 00 0001 0001");
        bytes.extend_from_slice(owner);
        bytes.extend_from_slice(&hex("0001 0001 0000003c 0004 c0000201"));
        bytes
    }

    #[test]
    fn compression_pointers() {
        let q = query(1, "a.test", RecordType::A);
        // Back to the question name at 12: fine.
        let ok = Response::decode(&with_owner(&[0xc0, 12]), &q).unwrap();
        assert_eq!(ok.answers[0].name, name("a.test"));
        // The owner starts at 24: a pointer to itself.
        assert_eq!(
            Response::decode(&with_owner(&[0xc0, 24]), &q),
            Err(DecodeError::PointerLoop)
        );
        // A forward pointer.
        assert_eq!(
            Response::decode(&with_owner(&[0xc0, 40]), &q),
            Err(DecodeError::ForwardPointer)
        );
        // Label "b" at 24, then a pointer back to 24: a loop through a label.
        assert_eq!(
            Response::decode(&with_owner(&[1, b'b', 0xc0, 24]), &q),
            Err(DecodeError::PointerLoop)
        );
        // Two names pointing at each other: 24 → 12 is fine, but a name at 12 pointing
        // to 24 is forward.
        let mut mutual = with_owner(&[0xc0, 12]);
        mutual[12] = 0xc0;
        mutual[13] = 24;
        assert_eq!(
            Response::decode(&mutual, &q),
            Err(DecodeError::ForwardPointer)
        );
        // Reserved label types (0x40, 0x80) and a 64-octet length.
        assert_eq!(
            Response::decode(&with_owner(&[0x40, 0]), &q),
            Err(DecodeError::LabelTooLong)
        );
        assert_eq!(
            Response::decode(&with_owner(&[0x80, 0]), &q),
            Err(DecodeError::LabelTooLong)
        );
        // A pointer cut in half.
        assert_eq!(
            Response::decode(&with_owner(&[0xc0])[..25], &q),
            Err(DecodeError::TruncatedName)
        );
        // An owner name of characters no name of ours has: that record is about some
        // other name, and skipped.
        let other = Response::decode(&with_owner(&[1, b' ', 0]), &q).unwrap();
        assert!(other.answers.is_empty());
    }

    /// A response to `query(1, "a.test", A)` whose first answer (a skipped type) holds
    /// `links` pointers, each to the one before it, the first to the question name; the
    /// second answer's owner points at the last link, so reading it takes `links + 1` hops.
    fn pointer_chain(links: usize) -> Vec<u8> {
        let mut msg = hex("0001 8180 0001 0002 0000 0000 0161 0474657374 00 0001 0001");
        msg.extend_from_slice(&[0xc0, 12]);
        msg.extend_from_slice(&hex("0063 0001 00000000"));
        msg.extend_from_slice(&u16::try_from(2 * links).unwrap().to_be_bytes());
        let chain_start = msg.len();
        for i in 0..links {
            let target = if i == 0 {
                12
            } else {
                chain_start + 2 * (i - 1)
            };
            msg.extend_from_slice(&[0xc0 | (target >> 8) as u8, target as u8]);
        }
        let last = chain_start + 2 * (links - 1);
        msg.extend_from_slice(&[0xc0 | (last >> 8) as u8, last as u8]);
        msg.extend_from_slice(&hex("0001 0001 0000003c 0004 c0000201"));
        msg
    }

    #[test]
    fn pointer_chain_is_bounded() {
        let q = query(1, "a.test", RecordType::A);
        let r = Response::decode(&pointer_chain(MAX_POINTER_HOPS - 1), &q).unwrap();
        assert_eq!(r.answers[0].name, name("a.test"));
        assert_eq!(
            Response::decode(&pointer_chain(MAX_POINTER_HOPS), &q),
            Err(DecodeError::TooManyPointers)
        );
    }

    #[test]
    fn name_length_limit_after_decompression() {
        // A 63-octet label repeated through pointers: 4 × 64 + 1 > 255.
        let q = query(1, "a.test", RecordType::A);
        let label = [&[63u8][..], &[b'x'; 63][..]].concat();
        let mut bytes = hex("0001 8180 0001 0002 0000 0000 0161 0474657374 00 0001 0001");
        // Answer 1: owner = three labels of 63 then the question name (at 12): 3×64 + 8 = 200.
        bytes.extend_from_slice(&label);
        bytes.extend_from_slice(&label);
        bytes.extend_from_slice(&label);
        bytes.extend_from_slice(&[0xc0, 12]);
        bytes.extend_from_slice(&hex("0063 0001 00000000 0000"));
        // Answer 2: one more label then a pointer to answer 1's owner at 24: 264 octets.
        bytes.extend_from_slice(&label);
        bytes.extend_from_slice(&[0xc0, 24]);
        bytes.extend_from_slice(&hex("0063 0001 00000000 0000"));
        assert_eq!(Response::decode(&bytes, &q), Err(DecodeError::NameTooLong));
        bytes[7] = 1;
        let cut = bytes.len() - (64 + 2 + 10);
        assert!(Response::decode(&bytes[..cut], &q).is_ok());
    }

    #[test]
    fn extended_rcode_from_opt() {
        let q = query(0x1001, "mail.example.test", RecordType::A);
        let mut bytes = hex(A_MAIL);
        // The OPT record's TTL starts 6 octets before the end; its first octet extends.
        let at = bytes.len() - 6;
        bytes[at] = 1;
        let r = Response::decode(&bytes, &q).unwrap();
        assert_eq!(r.rcode, Rcode::Other(16));
    }
}
