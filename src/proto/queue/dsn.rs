//! Delivery status notifications: RFC 3464 bounces and delay notices, and the RFC 3461
//! NOTIFY rules for when to send one.
//!
//! Pure code: the queue manager passes the envelope, the queued content and the time, and
//! enqueues the bytes of [`build`] with the null sender to `env.sender`.
//!
//! Everything copied in from elsewhere (addresses, reply texts, host names, the ENVID and
//! ORCPT values) passes through one cleaner that turns control characters into spaces, so no
//! copied text can end a header or a line early. Generated lines are folded or cut to stay
//! within [`MAX_LINE`].

use std::fmt::Write as _;

use super::core::notify;
use crate::proto::calendar::rfc5322;
use crate::proto::queue::{Envelope, QueueId, RcptStatus, Ret};

/// RFC 5322 §2.1.1: a line is at most 998 octets without its CRLF.
pub const MAX_LINE: usize = 998;

/// RFC 5322 §2.1.1: lines should stay within 78 octets; folding aims for this width.
pub const FOLD_WIDTH: usize = 78;

/// Longest reply text copied into a report, in octets (the copy is ASCII): 4 KiB per
/// recipient, twice (once in the explanation and once in the delivery-status part). A stored reply is at most [`crate::proto::smtp::reply::MAX_REPLY_LINES`]
/// lines of 512 octets joined into one (RFC 5321 §4.5.3.1.5), some 32 KiB; the first 4096
/// characters carry the diagnosis, and the rest is cut with a marker.
pub const MAX_DIAGNOSTIC: usize = 4096;

/// Marker appended to a reply text cut at [`MAX_DIAGNOSTIC`].
const CUT_MARKER: &str = " [...]";

/// Room first made for a report before its returned message (headers, MIME framing,
/// explanation and status), not a limit: 2 KiB. Measured on the tests' reports: 1.7 KiB
/// (a failure) to 1.9 KiB (a delay) for one recipient, 2.1 KiB at most for two.
const REPORT_ROOM: usize = 2048;

/// Room first made for the explanation and for the status part, not a limit: 512 octets
/// each. Measured on the tests' reports for one recipient: 411 to 538 octets of
/// explanation, 417 to 469 of status; a second recipient adds some 40 and 200 more.
const PART_ROOM: usize = 512;

/// Which notification a report is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    /// The message will not be delivered to these recipients (`Action: failed`).
    Failure,
    /// The message is still queued for these recipients (`Action: delayed`).
    Delay,
}

/// Whether the sender asked for (or by default gets) a report of this kind about one
/// recipient: RFC 3461 §4.1.
///
/// * Never for the null sender: reports go to the reverse path, and a report about a report
///   would loop.
/// * `NOTIFY=NEVER` asks for none.
/// * No NOTIFY at all (bits 0) means failures, and delays at our discretion: we send both.
/// * Otherwise exactly the kinds named: `NOTIFY=SUCCESS` alone gets no failure report.
///
/// An index past the recipient list answers `false`.
pub fn wants_report(env: &Envelope, rcpt_index: usize, kind: ReportKind) -> bool {
    if env.sender.is_empty() {
        return false;
    }
    let Some(rcpt) = env.recipients.get(rcpt_index) else {
        return false;
    };
    let bits = rcpt.notify;
    if bits & notify::NEVER != 0 {
        return false;
    }
    if bits == 0 {
        return true;
    }
    match kind {
        ReportKind::Failure => bits & notify::FAILURE != 0,
        ReportKind::Delay => bits & notify::DELAY != 0,
    }
}

/// Everything a report is made from.
pub struct Report<'a> {
    pub env: &'a Envelope,
    /// Indices into `env.recipients` of the recipients reported on; indices past the list
    /// are skipped. RFC 3464 §2.3 expects at least one.
    pub rcpts: Vec<usize>,
    pub kind: ReportKind,
    /// The original message as queued: header section, blank line, body, CRLF lines; or
    /// only its beginning, see `content_complete`.
    pub content: &'a [u8],
    /// `content` is the whole message. When it is only its beginning (the queue manager
    /// reads at most `relay::RETURNED_CONTENT_MAX` octets), the report returns the
    /// header section even with `RET=FULL`: a cut message is no `message/rfc822`.
    pub content_complete: bool,
    /// Our host name, for `Reporting-MTA`, `From` and `Message-ID`.
    pub reporting_mta: &'a str,
    /// Unix seconds now: `Date`, `Last-Attempt-Date` and the Message-ID.
    pub now_unix: u64,
    /// Random bits for the MIME boundary.
    pub boundary_seed: u64,
    /// Per entry of `rcpts`, the next hop that answered, if any (`Remote-MTA`).
    pub remote_mta: Vec<Option<String>>,
    /// For delay notices: when the queue lifetime ends (`Will-Retry-Until`).
    pub retry_until_unix: Option<u64>,
}

/// A built report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The whole message, CRLF lines of at most [`MAX_LINE`] octets.
    pub bytes: Vec<u8>,
    /// Some octet is 0x80 or above: the report must go out with 8BITMIME (and, when the
    /// 8-bit text is in a header, such as a UTF-8 sender address, with SMTPUTF8).
    pub eight_bit: bool,
}

/// Builds the `multipart/report` message (RFC 6522) with its three parts: an explanation,
/// the `message/delivery-status` fields (RFC 3464 §2) and the returned message or headers
/// (RFC 3461 §4.3 `RET`).
pub fn build(r: &Report) -> Built {
    let env = r.env;
    let mta = clean(r.reporting_mta, Charset::Ascii).replace(' ', "");
    let rcpts: Vec<(usize, &crate::proto::queue::Recipient)> = r
        .rcpts
        .iter()
        .enumerate()
        .filter_map(|(k, &i)| env.recipients.get(i).map(|rcpt| (k, rcpt)))
        .collect();

    let explanation = explanation(r, &mta, &rcpts);
    let explanation_8bit = !explanation.is_ascii();
    let status = delivery_status(r, &mta, &rcpts);
    let returned = returned_part(r);

    let parts: [&[u8]; 3] = [explanation.as_bytes(), status.as_bytes(), &returned.body];
    let boundary = choose_boundary(r.boundary_seed, &env.id, &parts);

    let mut out = String::with_capacity(REPORT_ROOM);
    let subject = match r.kind {
        ReportKind::Failure => "Undelivered Mail Returned to Sender",
        ReportKind::Delay => "Delayed Mail (still being retried)",
    };
    let kind_tag = match r.kind {
        ReportKind::Failure => 'F',
        ReportKind::Delay => 'D',
    };
    header(
        &mut out,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{mta}>"),
    );
    header(
        &mut out,
        "To",
        &format!("<{}>", clean(&env.sender, Charset::Utf8)),
    );
    header(&mut out, "Subject", subject);
    header(&mut out, "Date", &rfc5322(r.now_unix));
    header(
        &mut out,
        "Message-ID",
        &format!("<{:X}.{}.{kind_tag}@{mta}>", r.now_unix, env.id),
    );
    header(&mut out, "Auto-Submitted", "auto-replied");
    header(&mut out, "MIME-Version", "1.0");
    header(
        &mut out,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    let any_8bit = explanation_8bit || returned.eight_bit;
    if any_8bit {
        header(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.push_str("\r\nThis is a MIME-encapsulated message.\r\n");

    let _ = write!(out, "\r\n--{boundary}\r\n");
    header(&mut out, "Content-Description", "Notification");
    if explanation_8bit {
        header(&mut out, "Content-Type", "text/plain; charset=utf-8");
        header(&mut out, "Content-Transfer-Encoding", "8bit");
    } else {
        header(&mut out, "Content-Type", "text/plain; charset=us-ascii");
    }
    out.push_str("\r\n");
    out.push_str(&explanation);

    let _ = write!(out, "\r\n--{boundary}\r\n");
    header(&mut out, "Content-Description", "Delivery report");
    header(&mut out, "Content-Type", "message/delivery-status");
    out.push_str("\r\n");
    out.push_str(&status);

    let _ = write!(out, "\r\n--{boundary}\r\n");
    header(&mut out, "Content-Description", returned.description);
    header(&mut out, "Content-Type", returned.content_type);
    if returned.eight_bit {
        header(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.push_str("\r\n");

    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&returned.body);
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let eight_bit = bytes.iter().any(|&b| b >= 0x80);
    Built { bytes, eight_bit }
}

/// What characters a cleaned text keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Charset {
    /// Printable US-ASCII; anything else becomes `?`.
    Ascii,
    /// Any character but controls.
    Utf8,
}

/// Copied-in text made safe for one header or body line: every control character (CR and
/// LF among them, C1 controls and the Unicode line and paragraph separators too) becomes a
/// space, and runs of spaces become one, with none at either end.
fn clean(s: &str, charset: Charset) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            ' '
        } else if charset == Charset::Ascii && !c.is_ascii() {
            '?'
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// A reply text as copied into a report: ASCII, one line, at most [`MAX_DIAGNOSTIC`]
/// characters plus the cut marker.
fn diagnostic(reply: &str) -> String {
    let mut text = clean(reply, Charset::Ascii);
    if text.len() > MAX_DIAGNOSTIC {
        // Clean text is ASCII, so every index is a character boundary.
        text.truncate(MAX_DIAGNOSTIC);
        text.push_str(CUT_MARKER);
    }
    text
}

/// Appends `first` then the words of `text` (already cleaned: no controls, single spaces),
/// breaking lines at spaces near [`FOLD_WIDTH`] and starting each further line with
/// `indent`. A word too long for [`MAX_LINE`] is cut across lines. Ends with CRLF.
fn push_wrapped(out: &mut String, first: &str, text: &str, indent: &str) {
    let mut line_len = first.len();
    out.push_str(first);
    let mut at_line_start = first.is_empty() || first.ends_with(' ');
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let sep = usize::from(!at_line_start);
        if !at_line_start && line_len + sep + word.len() > FOLD_WIDTH {
            out.push_str("\r\n");
            out.push_str(indent);
            line_len = indent.len();
            at_line_start = true;
        }
        if !at_line_start {
            out.push(' ');
            line_len += 1;
        }
        let mut rest = word;
        while line_len + rest.len() > MAX_LINE {
            let room = MAX_LINE.saturating_sub(line_len);
            let mut cut = room.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&rest[..cut]);
            rest = &rest[cut..];
            out.push_str("\r\n");
            out.push_str(indent);
            line_len = indent.len();
        }
        out.push_str(rest);
        line_len += rest.len();
        at_line_start = false;
    }
    out.push_str("\r\n");
}

/// One header field, folded. `value` is cleaned here as well, so no caller can break a
/// header with a stray CR or LF.
fn header(out: &mut String, name: &str, value: &str) {
    let value = clean(value, Charset::Utf8);
    push_wrapped(out, &format!("{name}: "), &value, " ");
}

/// How an address is written after `rfc822;` or `utf-8;` in a report field: RFC 3464 §2.3.2
/// for ASCII addresses, RFC 6533 §3 `utf-8-addr-xtext` (non-ASCII, `\`, `+`, `=` and
/// controls as `\x{HEX}`) otherwise, so the delivery-status part stays 7-bit.
fn typed_address(address: &str) -> String {
    if address.bytes().all(|b| (0x21..0x7F).contains(&b)) {
        return format!("rfc822; {address}");
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        if c.is_ascii_graphic() && !matches!(c, '\\' | '+' | '=') {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
        }
    }
    out
}

/// RFC 3461 §4: decodes xtext (`+XX` hex escapes). `None` when the encoding is broken or
/// decodes to anything but printable ASCII, in which case callers keep the xtext as it is.
fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if !out.iter().all(|&c| (0x20..0x7F).contains(&c)) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The ORCPT value (`addr-type;xtext`) as an `Original-Recipient` value: RFC 3464 §2.3.1,
/// `addr-type; address` with the address xtext-decoded when that gives printable ASCII.
fn original_recipient(orcpt: &str) -> String {
    let orcpt = clean(orcpt, Charset::Ascii);
    match orcpt.split_once(';') {
        Some((kind, addr)) => {
            let addr = addr.trim();
            let addr = xtext_decode(addr).unwrap_or_else(|| addr.to_string());
            format!("{}; {addr}", kind.trim())
        }
        None => format!("rfc822; {orcpt}"),
    }
}

/// The stored reply of a recipient, if there is one.
fn stored_reply(status: &RcptStatus) -> Option<&str> {
    match status {
        RcptStatus::Pending => None,
        RcptStatus::Deferred { reply }
        | RcptStatus::Delivered { reply }
        | RcptStatus::Failed { reply }
        | RcptStatus::Returned { reply }
        | RcptStatus::Delayed { reply } => Some(reply.as_str()).filter(|r| !r.trim().is_empty()),
    }
}

/// RFC 3464 §2.3.4 `Status`: the enhanced code after the reply code (`550 5.1.1 …`), or
/// `5.0.0` / `4.0.0` from the reply code alone. The class always follows the report kind,
/// so a failure never reads as transient nor a delay as permanent.
fn status_code(reply: Option<&str>, kind: ReportKind) -> String {
    let class = match kind {
        ReportKind::Failure => 5,
        ReportKind::Delay => 4,
    };
    let enhanced = reply.and_then(|text| {
        let mut words = text.split_whitespace();
        let code = words.next()?;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        words
            .next()
            .and_then(crate::proto::smtp::reply::Enhanced::parse)
    });
    match enhanced {
        Some(e) => format!("{class}.{}.{}", e.subject, e.detail),
        None => format!("{class}.0.0"),
    }
}

/// Part 1: the explanation for a person, in the manner of Postfix's bounce text.
fn explanation(
    r: &Report,
    mta: &str,
    rcpts: &[(usize, &crate::proto::queue::Recipient)],
) -> String {
    let mut out = String::with_capacity(PART_ROOM);
    push_wrapped(
        &mut out,
        "",
        &format!("This is the mail system at host {mta}."),
        "",
    );
    out.push_str("\r\n");
    let intro = match r.kind {
        ReportKind::Failure => {
            let attached = match (r.env.ret == Some(Ret::Full), r.content_complete) {
                (true, true) => "It's attached below.",
                (true, false) => {
                    "It was too large to return whole: its header section is attached below."
                }
                (false, _) => "Its header section is attached below.",
            };
            format!(
                "I'm sorry to have to inform you that your message could not be delivered to \
                 one or more recipients. {attached}"
            )
        }
        ReportKind::Delay => {
            let until = match r.retry_until_unix {
                Some(t) => format!("until {}, when the queue lifetime ends", rfc5322(t)),
                None => "until the queue lifetime ends".to_string(),
            };
            format!(
                "THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE. Your message \
                 could not be delivered yet to one or more recipients. It is still in the \
                 queue, and the mail system will keep trying {until}."
            )
        }
    };
    push_wrapped(&mut out, "", &intro, "");
    out.push_str("\r\n");
    push_wrapped(
        &mut out,
        "",
        "For further assistance, please send mail to postmaster. If you do so, please include \
         this problem report.",
        "",
    );
    out.push_str("\r\n");
    out.push_str("                   The mail system\r\n");
    for &(k, rcpt) in rcpts {
        out.push_str("\r\n");
        let address = clean(&rcpt.address, Charset::Utf8);
        let host = r
            .remote_mta
            .get(k)
            .and_then(Option::as_deref)
            .map(|h| clean(h, Charset::Ascii));
        let reply = stored_reply(&rcpt.status).map(diagnostic);
        let text = match (host, reply) {
            (Some(host), Some(reply)) => format!("<{address}>: host {host} said: {reply}"),
            (None, Some(reply)) => format!("<{address}>: {reply}"),
            (Some(host), None) => format!("<{address}>: host {host} gave no reply"),
            (None, None) => match r.kind {
                ReportKind::Failure => format!("<{address}>: delivery failed"),
                ReportKind::Delay => format!("<{address}>: not yet attempted"),
            },
        };
        push_wrapped(&mut out, "", &text, "    ");
    }
    out
}

/// Part 2: the `message/delivery-status` body, RFC 3464 §2.2 and §2.3.
fn delivery_status(
    r: &Report,
    mta: &str,
    rcpts: &[(usize, &crate::proto::queue::Recipient)],
) -> String {
    let env = r.env;
    let mut out = String::with_capacity(PART_ROOM);
    header(&mut out, "Reporting-MTA", &format!("dns; {mta}"));
    header(&mut out, "X-Drawbridge-Queue-ID", env.id.as_str());
    if let Some(envid) = &env.envid {
        let envid = clean(envid, Charset::Ascii);
        let envid = xtext_decode(&envid).unwrap_or(envid);
        header(&mut out, "Original-Envelope-Id", &envid);
    }
    header(&mut out, "Arrival-Date", &rfc5322(env.arrived));
    for &(k, rcpt) in rcpts {
        out.push_str("\r\n");
        header(&mut out, "Final-Recipient", &typed_address(&rcpt.address));
        if let Some(orcpt) = &rcpt.orcpt {
            header(&mut out, "Original-Recipient", &original_recipient(orcpt));
        }
        let action = match r.kind {
            ReportKind::Failure => "failed",
            ReportKind::Delay => "delayed",
        };
        header(&mut out, "Action", action);
        let reply = stored_reply(&rcpt.status);
        header(&mut out, "Status", &status_code(reply, r.kind));
        if let Some(host) = r.remote_mta.get(k).and_then(Option::as_deref) {
            let host = clean(host, Charset::Ascii).replace(' ', "");
            if !host.is_empty() {
                header(&mut out, "Remote-MTA", &format!("dns; {host}"));
            }
        }
        if let Some(reply) = reply {
            header(
                &mut out,
                "Diagnostic-Code",
                &format!("smtp; {}", diagnostic(reply)),
            );
        }
        header(&mut out, "Last-Attempt-Date", &rfc5322(r.now_unix));
        if r.kind == ReportKind::Delay
            && let Some(until) = r.retry_until_unix
        {
            header(&mut out, "Will-Retry-Until", &rfc5322(until));
        }
    }
    out
}

/// Part 3 as built: its body and how it is labelled.
struct Returned {
    body: Vec<u8>,
    content_type: &'static str,
    description: &'static str,
    eight_bit: bool,
}

/// Part 3: the whole message with `RET=FULL` (when the whole message is at hand),
/// otherwise its header section only.
fn returned_part(r: &Report) -> Returned {
    let full = r.env.ret == Some(Ret::Full) && r.content_complete;
    let source = if full {
        r.content
    } else {
        header_section(r.content)
    };
    let body = normalize_lines(source);
    let eight_bit = body.iter().any(|&b| b >= 0x80);
    if full {
        Returned {
            body,
            content_type: "message/rfc822",
            description: "Undelivered Message",
            eight_bit,
        }
    } else {
        Returned {
            body,
            content_type: "text/rfc822-headers",
            description: "Undelivered Message Headers",
            eight_bit,
        }
    }
}

/// The header section of a message: everything up to and including the CRLF that ends the
/// last header line, without the blank line. A message without a blank line is all header.
fn header_section(content: &[u8]) -> &[u8] {
    if content.starts_with(b"\r\n") || content.starts_with(b"\n") {
        return &[];
    }
    for (i, w) in content.windows(2).enumerate() {
        if w == b"\n\n" {
            return &content[..=i];
        }
        if w == b"\n\r" && content.get(i + 2) == Some(&b'\n') {
            return &content[..=i];
        }
    }
    content
}

/// A copy of `bytes` with every line ending made CRLF (a bare CR or LF becomes CRLF), every
/// line cut to at most [`MAX_LINE`] octets, and a final CRLF if it lacked one.
fn normalize_lines(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 64 + 2);
    let mut line_len = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                line_len = 0;
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                line_len = 0;
            }
            b => {
                if line_len == MAX_LINE {
                    out.extend_from_slice(b"\r\n");
                    line_len = 0;
                }
                out.push(b);
                line_len += 1;
            }
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Number `attempt` in the boundary sequence of one report. All candidates of one message
/// have the same length and differ in the attempt number, so they are distinct.
fn boundary_candidate(seed: u64, id: &QueueId, attempt: u64) -> String {
    let mixed = splitmix64(seed ^ splitmix64(attempt));
    format!("=_{id}.{mixed:016X}.{attempt:016X}")
}

/// The first boundary candidate that occurs in none of the parts (RFC 2046 §5.1.1).
///
/// Terminates within `total + 1` attempts, `total` the summed part lengths: candidates are
/// distinct and of one length, and the parts hold at most `total` distinct strings of that
/// length. Each attempt scans the parts once.
fn choose_boundary(seed: u64, id: &QueueId, parts: &[&[u8]]) -> String {
    let mut attempt = 0u64;
    loop {
        let candidate = boundary_candidate(seed, id, attempt);
        if !parts.iter().any(|p| contains(p, candidate.as_bytes())) {
            return candidate;
        }
        attempt = attempt.wrapping_add(1);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The splitmix64 finaliser: spreads the seed's bits over the boundary.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::proto::queue::{Origin, Recipient};

    const NOW: u64 = 1_795_297_301;
    const ORIGINAL: &[u8] = b"From: Alice <alice@example.org>\r\n\
        To: bob@example.com\r\n\
        Subject: quarterly figures\r\n\
        Message-ID: <1@example.org>\r\n\
        \r\n\
        Hello Bob,\r\n\
        the figures are attached.\r\n";

    fn rcpt(address: &str, notify: u8, status: RcptStatus) -> Recipient {
        Recipient {
            address: address.into(),
            orcpt: None,
            notify,
            status,
        }
    }

    fn envelope() -> Envelope {
        Envelope {
            id: "0123456789ABCDEF".parse().unwrap(),
            arrived: 1_700_000_000,
            origin: Origin::Inbound,
            client_ip: None,
            client_helo: "mx.example.org".into(),
            sender: "alice@example.org".into(),
            size: ORIGINAL.len() as u64,
            eight_bit: false,
            smtputf8: false,
            ret: Some(Ret::Hdrs),
            envid: Some("QQ314159".into()),
            recipients: vec![
                Recipient {
                    address: "bob@example.com".into(),
                    orcpt: Some("rfc822;bob+2Bfigures@example.com".into()),
                    notify: 0,
                    status: RcptStatus::Failed {
                        reply: "550 5.1.1 User unknown".into(),
                    },
                },
                rcpt(
                    "carol@example.com",
                    notify::FAILURE | notify::DELAY,
                    RcptStatus::Deferred {
                        reply: "451 4.3.0 try later".into(),
                    },
                ),
                rcpt("dave@example.com", 0, RcptStatus::Pending),
            ],
            attempts: 3,
            next_attempt: 0,
            held: false,
        }
    }

    fn report<'a>(env: &'a Envelope, kind: ReportKind, content: &'a [u8]) -> Report<'a> {
        Report {
            env,
            rcpts: vec![0, 1],
            kind,
            content,
            content_complete: true,
            reporting_mta: "gw.example.net",
            now_unix: NOW,
            boundary_seed: 42,
            remote_mta: vec![Some("mx1.example.com".into()), None],
            retry_until_unix: Some(NOW + 5 * 86_400),
        }
    }

    fn text(built: &Built) -> &str {
        std::str::from_utf8(&built.bytes).unwrap()
    }

    /// Every line ends in CRLF, is at most 998 octets, and no CR or LF stands alone.
    fn assert_well_formed(bytes: &[u8]) {
        assert!(bytes.ends_with(b"\r\n"));
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
            if b == b'\n' {
                assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}");
            }
        }
        for line in bytes.split(|&b| b == b'\n') {
            assert!(line.len() <= MAX_LINE + 1, "line of {} octets", line.len());
        }
    }

    /// The delivery-status part's body: from after its headers to the next boundary.
    fn status_part(s: &str) -> &str {
        let start = s
            .find("Content-Type: message/delivery-status\r\n\r\n")
            .unwrap();
        let body = &s[start + "Content-Type: message/delivery-status\r\n\r\n".len()..];
        &body[..body.find("\r\n--=_").unwrap()]
    }

    const VIEW: &str = r#"
import sys, email
m = email.message_from_bytes(sys.stdin.buffer.read())
n = lambda v: ' '.join(str(v).split())
print('type', m.get_content_type(), m.get_param('report-type'))
for k in ('From', 'To', 'Subject', 'Auto-Submitted', 'MIME-Version', 'Bcc'):
    print('hdr', k, n(m[k]))
print('top-defects', len(m.defects))
parts = m.get_payload()
print('parts', len(parts))
for p in parts:
    print('part', p.get_content_type(), len(p.defects))
for i, block in enumerate(parts[1].get_payload()):
    for k, v in block.items():
        print('ds', i, k + ':', n(v))
ret = parts[2]
if ret.get_content_type() == 'message/rfc822':
    inner = ret.get_payload()[0]
    print('inner-subject', n(inner['Subject']))
    print('inner-body', ascii(inner.get_payload(decode=True)))
else:
    print('headers-only', ascii(ret.get_payload()))
"#;

    /// The report as Python's `email` package reads it, one fact a line.
    fn python_view(bytes: &[u8]) -> String {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(VIEW)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn assert_has(view: &str, line: &str) {
        assert!(
            view.lines().any(|l| l == line),
            "no line {line:?} in\n{view}"
        );
    }

    #[test]
    fn notify_never_asks_for_nothing() {
        let mut env = envelope();
        env.recipients[0].notify = notify::NEVER;
        assert!(!wants_report(&env, 0, ReportKind::Failure));
        assert!(!wants_report(&env, 0, ReportKind::Delay));
    }

    #[test]
    fn notify_default_reports_failures_and_delays() {
        let env = envelope();
        assert!(wants_report(&env, 0, ReportKind::Failure));
        assert!(wants_report(&env, 0, ReportKind::Delay));
    }

    #[test]
    fn notify_names_exactly_the_kinds() {
        let mut env = envelope();
        env.recipients[0].notify = notify::SUCCESS;
        assert!(!wants_report(&env, 0, ReportKind::Failure));
        assert!(!wants_report(&env, 0, ReportKind::Delay));
        env.recipients[0].notify = notify::DELAY;
        assert!(!wants_report(&env, 0, ReportKind::Failure));
        assert!(wants_report(&env, 0, ReportKind::Delay));
        env.recipients[0].notify = notify::FAILURE;
        assert!(wants_report(&env, 0, ReportKind::Failure));
        assert!(!wants_report(&env, 0, ReportKind::Delay));
        env.recipients[0].notify = notify::SUCCESS | notify::FAILURE | notify::DELAY;
        assert!(wants_report(&env, 0, ReportKind::Failure));
        assert!(wants_report(&env, 0, ReportKind::Delay));
    }

    #[test]
    fn null_sender_never_gets_a_report() {
        let mut env = envelope();
        env.sender.clear();
        for notify in [0, notify::FAILURE, notify::FAILURE | notify::DELAY] {
            env.recipients[0].notify = notify;
            assert!(!wants_report(&env, 0, ReportKind::Failure));
            assert!(!wants_report(&env, 0, ReportKind::Delay));
        }
    }

    #[test]
    fn index_past_the_recipients_is_no() {
        let env = envelope();
        assert!(!wants_report(&env, 3, ReportKind::Failure));
        assert!(!wants_report(&env, usize::MAX, ReportKind::Delay));
    }

    #[test]
    fn failure_field_lines_are_exact() {
        let env = envelope();
        let built = build(&report(&env, ReportKind::Failure, ORIGINAL));
        assert!(!built.eight_bit);
        assert_well_formed(&built.bytes);
        let s = text(&built);
        assert_eq!(
            status_part(s),
            "Reporting-MTA: dns; gw.example.net\r\n\
             X-Drawbridge-Queue-ID: 0123456789ABCDEF\r\n\
             Original-Envelope-Id: QQ314159\r\n\
             Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
             \r\n\
             Final-Recipient: rfc822; bob@example.com\r\n\
             Original-Recipient: rfc822; bob+figures@example.com\r\n\
             Action: failed\r\n\
             Status: 5.1.1\r\n\
             Remote-MTA: dns; mx1.example.com\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\
             Last-Attempt-Date: Sat, 21 Nov 2026 21:41:41 +0000\r\n\
             \r\n\
             Final-Recipient: rfc822; carol@example.com\r\n\
             Action: failed\r\n\
             Status: 5.3.0\r\n\
             Diagnostic-Code: smtp; 451 4.3.0 try later\r\n\
             Last-Attempt-Date: Sat, 21 Nov 2026 21:41:41 +0000\r\n"
        );
        let head = &s[..s.find("\r\n\r\n").unwrap() + 2];
        let boundary = boundary_candidate(42, &env.id, 0);
        assert_eq!(
            head,
            format!(
                "From: Mail Delivery System <MAILER-DAEMON@gw.example.net>\r\n\
                 To: <alice@example.org>\r\n\
                 Subject: Undelivered Mail Returned to Sender\r\n\
                 Date: Sat, 21 Nov 2026 21:41:41 +0000\r\n\
                 Message-ID: <6B021015.0123456789ABCDEF.F@gw.example.net>\r\n\
                 Auto-Submitted: auto-replied\r\n\
                 MIME-Version: 1.0\r\n\
                 Content-Type: multipart/report; report-type=delivery-status;\r\n \
                 boundary=\"{boundary}\"\r\n"
            )
        );
        assert!(s.contains("<bob@example.com>: host mx1.example.com said: 550 5.1.1 User"));
        assert!(s.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(s.ends_with(&format!("\r\n--{boundary}--\r\n")));
    }

    #[test]
    fn delay_field_lines_are_exact() {
        let env = envelope();
        let mut r = report(&env, ReportKind::Delay, ORIGINAL);
        r.rcpts = vec![1, 2];
        r.remote_mta = vec![Some("mx2.example.com".into()), None];
        let built = build(&r);
        assert_well_formed(&built.bytes);
        let s = text(&built);
        let status = status_part(s);
        let groups: Vec<&str> = status.split("\r\n\r\n").collect();
        assert_eq!(groups.len(), 3);
        assert_eq!(
            groups[1],
            "Final-Recipient: rfc822; carol@example.com\r\n\
             Action: delayed\r\n\
             Status: 4.3.0\r\n\
             Remote-MTA: dns; mx2.example.com\r\n\
             Diagnostic-Code: smtp; 451 4.3.0 try later\r\n\
             Last-Attempt-Date: Sat, 21 Nov 2026 21:41:41 +0000\r\n\
             Will-Retry-Until: Thu, 26 Nov 2026 21:41:41 +0000"
        );
        assert_eq!(
            groups[2],
            "Final-Recipient: rfc822; dave@example.com\r\n\
             Action: delayed\r\n\
             Status: 4.0.0\r\n\
             Last-Attempt-Date: Sat, 21 Nov 2026 21:41:41 +0000\r\n\
             Will-Retry-Until: Thu, 26 Nov 2026 21:41:41 +0000\r\n"
        );
        assert!(s.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert!(s.contains(".D@gw.example.net>\r\n"));
        let flat = s.replace("\r\n", " ");
        assert!(flat.contains(
            "will keep trying until Thu, 26 Nov 2026 21:41:41 +0000, when the queue lifetime ends"
        ));
    }

    #[test]
    fn status_comes_from_the_reply() {
        use ReportKind::{Delay, Failure};
        assert_eq!(
            status_code(Some("550 5.1.1 User unknown"), Failure),
            "5.1.1"
        );
        assert_eq!(status_code(Some("554 no such user"), Failure), "5.0.0");
        assert_eq!(status_code(Some("421 4.4.2 timeout"), Delay), "4.4.2");
        assert_eq!(status_code(Some("450 mailbox busy"), Delay), "4.0.0");
        assert_eq!(status_code(Some("garbage 5.1.1"), Failure), "5.0.0");
        assert_eq!(status_code(Some("550 5.1"), Failure), "5.0.0");
        assert_eq!(status_code(None, Delay), "4.0.0");
        assert_eq!(
            status_code(
                Some("550 5.4.7 message expired after 3 attempts: 451 4.3.0 x"),
                Failure
            ),
            "5.4.7"
        );
    }

    #[test]
    fn python_reads_a_headers_only_failure() {
        let env = envelope();
        let built = build(&report(&env, ReportKind::Failure, ORIGINAL));
        let view = python_view(&built.bytes);
        assert_has(&view, "type multipart/report delivery-status");
        assert_has(
            &view,
            "hdr From Mail Delivery System <MAILER-DAEMON@gw.example.net>",
        );
        assert_has(&view, "hdr To <alice@example.org>");
        assert_has(&view, "hdr Subject Undelivered Mail Returned to Sender");
        assert_has(&view, "hdr Auto-Submitted auto-replied");
        assert_has(&view, "top-defects 0");
        assert_has(&view, "parts 3");
        assert_has(&view, "part text/plain 0");
        assert_has(&view, "part message/delivery-status 0");
        assert_has(&view, "part text/rfc822-headers 0");
        assert_has(&view, "ds 0 Reporting-MTA: dns; gw.example.net");
        assert_has(&view, "ds 0 Original-Envelope-Id: QQ314159");
        assert_has(&view, "ds 1 Final-Recipient: rfc822; bob@example.com");
        assert_has(
            &view,
            "ds 1 Original-Recipient: rfc822; bob+figures@example.com",
        );
        assert_has(&view, "ds 1 Action: failed");
        assert_has(&view, "ds 1 Status: 5.1.1");
        assert_has(&view, "ds 1 Diagnostic-Code: smtp; 550 5.1.1 User unknown");
        assert_has(&view, "ds 2 Final-Recipient: rfc822; carol@example.com");
        assert_has(&view, "ds 2 Status: 5.3.0");
        assert!(!view.contains("ds 3 "), "{view}");
        // Headers only: the header section, not a line of the body.
        assert_has(
            &view,
            "headers-only 'From: Alice <alice@example.org>\\r\\nTo: bob@example.com\\r\\n\
             Subject: quarterly figures\\r\\nMessage-ID: <1@example.org>\\r\\n'",
        );
        assert!(!view.contains("Hello Bob"));
    }

    #[test]
    fn python_reads_a_full_return() {
        let mut env = envelope();
        env.ret = Some(Ret::Full);
        let built = build(&report(&env, ReportKind::Failure, ORIGINAL));
        assert!(!built.eight_bit);
        assert_well_formed(&built.bytes);
        let view = python_view(&built.bytes);
        assert_has(&view, "parts 3");
        assert_has(&view, "part message/rfc822 0");
        assert_has(&view, "inner-subject quarterly figures");
        assert_has(
            &view,
            "inner-body b'Hello Bob,\\r\\nthe figures are attached.\\r\\n'",
        );
    }

    #[test]
    fn no_ret_returns_headers_only() {
        let mut env = envelope();
        env.ret = None;
        let built = build(&report(&env, ReportKind::Delay, ORIGINAL));
        let view = python_view(&built.bytes);
        assert_has(&view, "part text/rfc822-headers 0");
        assert_has(&view, "ds 1 Action: delayed");
        assert_has(
            &view,
            "ds 1 Will-Retry-Until: Thu, 26 Nov 2026 21:41:41 +0000",
        );
        assert!(!view.contains("Hello Bob"));
    }

    #[test]
    fn a_cut_message_is_returned_as_headers_even_with_ret_full() {
        let mut env = envelope();
        env.ret = Some(Ret::Full);
        let mut r = report(&env, ReportKind::Failure, ORIGINAL);
        r.content_complete = false;
        let built = build(&r);
        let view = python_view(&built.bytes);
        assert_has(&view, "part text/rfc822-headers 0");
        assert!(!view.contains("Hello Bob"));
        // The explanation says what came back, and why not the whole message.
        let text = String::from_utf8_lossy(&built.bytes).replace("\r\n", " ");
        assert!(text.contains("too large to return whole"), "{text}");
        assert!(!text.contains("It's attached below"), "{text}");
        r.content_complete = true;
        let whole = build(&r);
        assert_has(&python_view(&whole.bytes), "part message/rfc822 0");
        assert!(String::from_utf8_lossy(&whole.bytes).contains("It's attached below."));
    }

    #[test]
    fn eight_bit_full_return_is_flagged() {
        let mut env = envelope();
        env.ret = Some(Ret::Full);
        let content = b"Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve body\r\n";
        let built = build(&report(&env, ReportKind::Failure, content));
        assert!(built.eight_bit);
        assert_well_formed(&built.bytes);
        let s = String::from_utf8_lossy(&built.bytes);
        assert!(
            s.contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
        );
        let view = python_view(&built.bytes);
        assert_has(&view, "part message/rfc822 0");
        assert_has(&view, "inner-body b'na\\xc3\\xafve body\\r\\n'");
    }

    #[test]
    fn eight_bit_body_with_headers_only_stays_seven_bit() {
        let env = envelope();
        let content = b"Subject: plain\r\n\r\nna\xc3\xafve body\r\n";
        let built = build(&report(&env, ReportKind::Failure, content));
        assert!(!built.eight_bit);
        assert!(built.bytes.iter().all(|&b| b < 0x80));
        let view = python_view(&built.bytes);
        assert_has(&view, "headers-only 'Subject: plain\\r\\n'");
    }

    #[test]
    fn reply_text_cannot_inject_headers() {
        let mut env = envelope();
        env.recipients[0].status = RcptStatus::Failed {
            reply: "550 5.1.1 gone\r\nBcc: victim@example.net\r\n\r\nInjected body".into(),
        };
        env.recipients[0].address = "bob@example.com\r\nX-Evil: 1".into();
        env.recipients[0].orcpt = Some("rfc822;b+0D+0ABcc:+20x@y".into());
        env.sender = "alice@example.org\r\nBcc: victim@example.net".into();
        env.envid = Some("E\nBcc: v".into());
        let mut r = report(&env, ReportKind::Failure, ORIGINAL);
        r.reporting_mta = "gw.example.net\r\nBcc: victim@example.net";
        r.remote_mta = vec![Some("mx\r\nBcc: v".into()), None];
        let built = build(&r);
        assert_well_formed(&built.bytes);
        let s = text(&built);
        assert!(!s.contains("\r\nBcc:"), "{s}");
        assert!(!s.contains("\r\nX-Evil:"), "{s}");
        assert!(!s.contains("\r\nInjected"), "{s}");
        let view = python_view(&built.bytes);
        assert_has(&view, "hdr Bcc None");
        assert_has(&view, "parts 3");
        assert_has(
            &view,
            "ds 1 Diagnostic-Code: smtp; 550 5.1.1 gone Bcc: victim@example.net Injected body",
        );
        assert_has(
            &view,
            "ds 1 Final-Recipient: utf-8; bob@example.com\\x{D}\\x{A}X-Evil:\\x{20}1",
        );
        // The decoded ORCPT would hold CR LF, so it stays in its xtext form.
        assert_has(&view, "ds 1 Original-Recipient: rfc822; b+0D+0ABcc:+20x@y");
        // No delivery-status block gained a field of the injected names.
        for line in view.lines().filter(|l| l.starts_with("ds ")) {
            let field = line.split(' ').nth(2).unwrap();
            assert!(!matches!(field, "Bcc:" | "X-Evil:"), "{line}");
        }
        assert_has(&view, "ds 0 Original-Envelope-Id: E Bcc: v");
    }

    #[test]
    fn boundary_avoids_the_content() {
        let mut env = envelope();
        env.ret = Some(Ret::Full);
        let first = boundary_candidate(42, &env.id, 0);
        let second = boundary_candidate(42, &env.id, 1);
        assert_ne!(first, second);
        assert_eq!(first.len(), second.len());
        let content = format!(
            "Subject: trap\r\n\r\n--{first}\r\nContent-Type: text/plain\r\n\r\nfake\r\n--{first}--\r\n"
        );
        let built = build(&report(&env, ReportKind::Failure, content.as_bytes()));
        let s = text(&built);
        assert!(s.contains(&format!("boundary=\"{second}\"")));
        let view = python_view(&built.bytes);
        assert_has(&view, "parts 3");
        assert_has(&view, "part message/rfc822 0");
        assert!(view.contains(&format!("inner-body b'--{first}")), "{view}");

        // A boundary met in a reply text is skipped too.
        let mut env = envelope();
        env.recipients[0].status = RcptStatus::Failed {
            reply: format!("550 {first} {second}"),
        };
        let built = build(&report(&env, ReportKind::Failure, ORIGINAL));
        let third = boundary_candidate(42, &env.id, 2);
        assert!(text(&built).contains(&format!("boundary=\"{third}\"")));
        assert_has(&python_view(&built.bytes), "parts 3");
    }

    #[test]
    fn long_reply_text_is_folded_and_cut() {
        let mut env = envelope();
        let long_word = "x".repeat(3000);
        let words = "word ".repeat(1500);
        env.recipients[0].status = RcptStatus::Failed {
            reply: format!("550 5.7.1 {long_word} {words}"),
        };
        let built = build(&report(&env, ReportKind::Failure, ORIGINAL));
        assert_well_formed(&built.bytes);
        let s = text(&built);
        assert!(s.contains(CUT_MARKER.trim()));
        let view = python_view(&built.bytes);
        assert_has(&view, "parts 3");
        assert_has(&view, "ds 1 Status: 5.7.1");
        let diag = view
            .lines()
            .find(|l| l.starts_with("ds 1 Diagnostic-Code: smtp; 550 5.7.1 xxx"))
            .unwrap();
        assert!(diag.len() < MAX_DIAGNOSTIC + 64, "{}", diag.len());
    }

    #[test]
    fn content_lines_are_normalised() {
        let mut env = envelope();
        env.ret = Some(Ret::Full);
        let mut content = b"Subject: odd\n\nbare LF\nbare CR\rlong ".to_vec();
        content.extend(std::iter::repeat_n(b'y', 2500));
        let built = build(&report(&env, ReportKind::Failure, &content));
        assert_well_formed(&built.bytes);
        let view = python_view(&built.bytes);
        assert_has(&view, "inner-subject odd");
        assert!(view.contains("inner-body b'bare LF\\r\\nbare CR\\r\\nlong yyy"));
    }

    #[test]
    fn non_ascii_addresses_keep_the_status_part_seven_bit() {
        let mut env = envelope();
        env.recipients[0].address = "j\u{f6}rg@example.de".into();
        let built = build(&report(&env, ReportKind::Failure, ORIGINAL));
        assert!(built.eight_bit);
        assert_well_formed(&built.bytes);
        let s = text(&built);
        assert!(status_part(s).is_ascii());
        assert!(s.contains("Final-Recipient: utf-8; j\\x{F6}rg@example.de\r\n"));
        assert!(s.contains("Content-Type: text/plain; charset=utf-8\r\n"));
        assert_has(&python_view(&built.bytes), "parts 3");
    }

    #[test]
    fn eight_bit_headers_make_an_eight_bit_report() {
        let env = envelope();
        let content = b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n";
        let built = build(&report(&env, ReportKind::Failure, content));
        assert!(built.eight_bit);
        assert_well_formed(&built.bytes);
        let s = String::from_utf8_lossy(&built.bytes);
        assert!(s.contains(
            "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        ));
        assert_has(&python_view(&built.bytes), "part text/rfc822-headers 0");
    }

    #[test]
    fn odd_recipient_lists_do_not_panic() {
        let env = envelope();
        let mut r = report(&env, ReportKind::Failure, b"");
        r.rcpts = vec![7, usize::MAX, 0];
        r.remote_mta = Vec::new();
        let built = build(&r);
        assert_well_formed(&built.bytes);
        let s = text(&built);
        assert_eq!(s.matches("Final-Recipient:").count(), 1);
        assert!(!s.contains("Remote-MTA:"));
        r.rcpts.clear();
        let built = build(&r);
        assert!(!text(&built).contains("Final-Recipient:"));
        assert_has(&python_view(&built.bytes), "parts 3");
    }

    #[test]
    fn header_section_extraction() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\n\nbody\n"), b"A: 1\n");
        assert_eq!(header_section(b"\r\nbody\r\n"), b"");
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_section(b""), b"");
    }

    #[test]
    fn xtext_decoding() {
        assert_eq!(xtext_decode("a+2Bb@x").as_deref(), Some("a+b@x"));
        assert_eq!(xtext_decode("plain").as_deref(), Some("plain"));
        assert_eq!(xtext_decode("bad+2"), None);
        assert_eq!(xtext_decode("bad+ZZ"), None);
        assert_eq!(xtext_decode("crlf+0D+0A"), None);
        assert_eq!(xtext_decode("high+C3"), None);
        assert_eq!(original_recipient("rfc822;a+2Bb@x"), "rfc822; a+b@x");
        assert_eq!(original_recipient("nosemicolon"), "rfc822; nosemicolon");
    }

    #[test]
    fn wrapping_respects_both_widths() {
        let mut out = String::new();
        push_wrapped(&mut out, "Name: ", &"ab ".repeat(60), " ");
        for line in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= FOLD_WIDTH, "{line}");
        }
        assert!(out.starts_with("Name: ab ab"));
        assert!(out.contains("\r\n ab"));
        let mut out = String::new();
        push_wrapped(&mut out, "N: ", &"z".repeat(2500), " ");
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1].len(), MAX_LINE);
        assert_eq!(lines[3], "");
        assert_eq!(clean(" a\r\n\tb\u{85}c\u{2028} ", Charset::Utf8), "a b c");
        assert_eq!(clean("caf\u{e9}", Charset::Ascii), "caf?");
    }
}
