//! SMTP command lines: the raw line as read becomes a checked `Command`, and MAIL/RCPT
//! parameters become `MailParams`/`RcptParams` (RFC 5321 §4.1, RFC 1870, 3030, 3461,
//! 6152, 6531).
//!
//! Line framing (CRLF, bare CR/LF, NUL, length) is checked before a line gets here; see
//! `LineError`. Nothing here knows about session state beyond what it is passed.

use crate::proto::smtp::address::{AddressError, Domain, Path, PathTarget};
use crate::proto::smtp::keywords::EhloKeywords;
use crate::proto::smtp::reply::Reply;

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF.
pub const MAX_COMMAND_LINE: usize = 512;
/// MAIL and RCPT lines may be longer: "SMTP extensions may be used to increase this
/// limit" (§4.5.3.1.4), and SIZE, BODY, RET, ENVID (100), AUTH= (RFC 4954 §5), NOTIFY and
/// ORCPT (500, RFC 3461 §4.2) add to a path of up to 256 octets. At most 2048 octets with
/// the CRLF, as Postfix's `line_length_limit`; the session never buffers more of one
/// command line.
pub const MAX_EXTENDED_COMMAND_LINE: usize = 2048;
/// RFC 3461 §4.4: ENVID is at most 100 characters.
pub const MAX_ENVID: usize = 100;
/// RFC 3461 §4.2: ORCPT is at most 500 characters.
pub const MAX_ORCPT: usize = 500;
/// Longest verb kept for logs when a line is refused before it is parsed.
pub const MAX_VERB: usize = 16;
/// RFC 4422 §3.1: a SASL mechanism name is 1 to 20 characters.
pub const MAX_MECHANISM_NAME: usize = 20;

/// What is wrong with the framing of a command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineError {
    /// Over `MAX_COMMAND_LINE` octets (`MAX_EXTENDED_COMMAND_LINE` for MAIL and RCPT);
    /// discarded up to the next LF.
    TooLong,
    /// The line ended in LF without CR.
    BareLf,
    /// A CR inside the line was not followed by LF.
    BareCr,
    Nul,
}

impl LineError {
    pub fn reply(self) -> Reply {
        match self {
            LineError::TooLong => Reply::new(500, "5.5.2", "Error: line too long"),
            LineError::BareLf => Reply::new(500, "5.5.2", "Error: bare <LF> received"),
            LineError::BareCr => Reply::new(500, "5.5.2", "Error: bare <CR> received"),
            LineError::Nul => Reply::new(500, "5.5.2", "Error: NUL in command"),
        }
    }
}

/// One ESMTP parameter as written: `KEYWORD[=value]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub keyword: String,
    pub value: Option<String>,
}

/// A checked command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Ehlo(Domain),
    Helo(Domain),
    Mail {
        path: Path,
        params: Vec<Param>,
    },
    Rcpt {
        path: Path,
        params: Vec<Param>,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    Expn,
    Starttls,
    /// RFC 4954 §4: `AUTH mechanism [initial-response]`. The mechanism is upper-cased;
    /// the initial response is kept as sent (base64 text, or `=` for an empty one): the
    /// SASL layer decodes and checks it.
    Auth {
        mechanism: String,
        initial: Option<Vec<u8>>,
    },
}

/// Why a command line is refused, before any session state is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    Unrecognized,
    /// Wrong arguments for a known verb; carries the usage text.
    Syntax(&'static str),
    BadSender,
    BadRecipient,
    /// A verb that takes no parameters was given some (RFC 3207 §4: `STARTTLS` CRLF).
    NoParameters,
}

impl CommandError {
    pub fn reply(self) -> Reply {
        match self {
            CommandError::Unrecognized => Reply::new(500, "5.5.2", "Error: command not recognized"),
            CommandError::Syntax(usage) => Reply::new(501, "5.5.4", format!("Syntax: {usage}")),
            CommandError::BadSender => Reply::new(501, "5.1.7", "Bad sender address syntax"),
            CommandError::BadRecipient => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
            CommandError::NoParameters => {
                Reply::new(501, "5.5.4", "Syntax error (no parameters allowed)")
            }
        }
    }
}

/// The verb of a raw line, upper-cased, for logs: the leading letters, at most
/// `MAX_VERB` of them; "UNKNOWN" when there are none.
pub fn verb_of(line: &[u8]) -> String {
    let verb: String = line
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .take(MAX_VERB)
        .map(|b| b.to_ascii_uppercase() as char)
        .collect();
    if verb.is_empty() {
        "UNKNOWN".to_string()
    } else {
        verb
    }
}

impl Command {
    /// Parses one command line without its CRLF. Verbs are case-insensitive.
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        let mut words = line.splitn(2, |&b| b == b' ');
        let verb = words.next().unwrap_or_default();
        let args = words.next().unwrap_or_default();
        let args = trim_trailing_space(args);
        let is = |name: &str| verb.eq_ignore_ascii_case(name.as_bytes());
        let no_args = |c: Command, usage| {
            if args.is_empty() {
                Ok(c)
            } else {
                Err(CommandError::Syntax(usage))
            }
        };
        if is("EHLO") || is("HELO") {
            let usage = if is("EHLO") {
                "EHLO hostname"
            } else {
                "HELO hostname"
            };
            let name = std::str::from_utf8(args).map_err(|_| CommandError::Syntax(usage))?;
            let domain = Domain::parse(name, false).map_err(|_| CommandError::Syntax(usage))?;
            Ok(if is("EHLO") {
                Command::Ehlo(domain)
            } else {
                Command::Helo(domain)
            })
        } else if is("MAIL") {
            let (path, params) = path_and_params(
                args,
                b"FROM:",
                "MAIL FROM:<address>",
                CommandError::BadSender,
            )?;
            Ok(Command::Mail { path, params })
        } else if is("RCPT") {
            let (path, params) = path_and_params(
                args,
                b"TO:",
                "RCPT TO:<address>",
                CommandError::BadRecipient,
            )?;
            if path.target == PathTarget::Null {
                return Err(CommandError::BadRecipient);
            }
            Ok(Command::Rcpt { path, params })
        } else if is("DATA") {
            no_args(Command::Data, "DATA")
        } else if is("BDAT") {
            bdat(args)
        } else if is("RSET") {
            no_args(Command::Rset, "RSET")
        } else if is("NOOP") {
            Ok(Command::Noop)
        } else if is("QUIT") {
            no_args(Command::Quit, "QUIT")
        } else if is("VRFY") {
            Ok(Command::Vrfy)
        } else if is("HELP") {
            Ok(Command::Help)
        } else if is("EXPN") {
            Ok(Command::Expn)
        } else if is("STARTTLS") {
            if args.is_empty() {
                Ok(Command::Starttls)
            } else {
                Err(CommandError::NoParameters)
            }
        } else if is("AUTH") {
            auth(args)
        } else {
            Err(CommandError::Unrecognized)
        }
    }
}

fn trim_trailing_space(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `FROM:<path> params` / `TO:<path> params`; one space after the colon is tolerated.
fn path_and_params(
    args: &[u8],
    prefix: &[u8],
    usage: &'static str,
    bad: CommandError,
) -> Result<(Path, Vec<Param>), CommandError> {
    let rest = match args.split_at_checked(prefix.len()) {
        Some((head, rest)) if head.eq_ignore_ascii_case(prefix) => rest,
        _ => return Err(CommandError::Syntax(usage)),
    };
    let rest = std::str::from_utf8(rest).map_err(|_| bad)?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (path, rest) = Path::parse_prefix(rest).map_err(|_: AddressError| bad)?;
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(bad);
    }
    let mut params = Vec::new();
    for word in rest.split(' ').filter(|w| !w.is_empty()) {
        params.push(param(word).ok_or(CommandError::Syntax(usage))?);
    }
    Ok((path, params))
}

/// RFC 5321 §4.1.2 esmtp-param: keyword `ALPHA / DIGIT *(ALPHA / DIGIT / "-")`, value
/// printable without `=` (UTF-8 allowed, RFC 6531 §3.3).
fn param(word: &str) -> Option<Param> {
    let (keyword, value) = match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    };
    let first_ok = keyword
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || !keyword
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return None;
    }
    if let Some(v) = value {
        let ok = |c: char| (c.is_ascii_graphic() && c != '=') || !c.is_ascii();
        if v.is_empty() || !v.chars().all(ok) {
            return None;
        }
    }
    Some(Param {
        keyword: keyword.to_string(),
        value: value.map(str::to_string),
    })
}

/// RFC 4954 §4: `AUTH SP sasl-mech [SP initial-response]`, the mechanism name of upper-case
/// letters, digits, `-` and `_` (RFC 4422 §3.1, any case accepted here), the initial
/// response one word of printable ASCII (whether it is base64 is the SASL layer's
/// business).
fn auth(args: &[u8]) -> Result<Command, CommandError> {
    let bad = CommandError::Syntax("AUTH mechanism [initial-response]");
    let mut words = args.split(|&b| b == b' ');
    let name = words.next().ok_or(bad)?;
    let name_ok = (1..=MAX_MECHANISM_NAME).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !name_ok {
        return Err(bad);
    }
    let initial = match words.next() {
        None => None,
        Some(w) if !w.is_empty() && w.iter().all(u8::is_ascii_graphic) => Some(w.to_vec()),
        Some(_) => return Err(bad),
    };
    if words.next().is_some() {
        return Err(bad);
    }
    let mechanism = name
        .iter()
        .map(|b| b.to_ascii_uppercase() as char)
        .collect();
    Ok(Command::Auth { mechanism, initial })
}

/// `BDAT <size> [LAST]`, RFC 3030 §3.
fn bdat(args: &[u8]) -> Result<Command, CommandError> {
    const USAGE: &str = "BDAT size [LAST]";
    let bad = CommandError::Syntax(USAGE);
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = words.next().ok_or(bad)?;
    if !size.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    // Digits only, so this fails only on overflow of u64.
    let size: u64 = std::str::from_utf8(size)
        .map_err(|_| bad)?
        .parse()
        .map_err(|_| bad)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(bad),
    };
    if words.next().is_some() {
        return Err(bad);
    }
    Ok(Command::Bdat { size, last })
}

/// Why MAIL or RCPT parameters are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamError {
    /// Not offered in EHLO (or the session used HELO), or an unsupported value.
    Unsupported(String),
    BadValue(String),
    Duplicate(String),
    /// SIZE= over the fixed limit (RFC 1870 §6).
    TooBig,
}

impl ParamError {
    pub fn reply(&self) -> Reply {
        match self {
            ParamError::Unsupported(k) => {
                Reply::new(555, "5.5.4", format!("Unsupported option: {k}"))
            }
            ParamError::BadValue(k) => {
                Reply::new(501, "5.5.4", format!("Bad parameter value: {k}"))
            }
            ParamError::Duplicate(k) => {
                Reply::new(501, "5.5.4", format!("Duplicate parameter: {k}"))
            }
            ParamError::TooBig => Reply::new(552, "5.3.4", "Message size exceeds fixed limit"),
        }
    }
}

/// Interprets MAIL parameters. `offered` is what EHLO advertised (none after HELO).
pub fn mail_params(
    params: &[Param],
    offered: EhloKeywords,
    max_size: u64,
) -> Result<MailParams, ParamError> {
    let mut out = MailParams::default();
    let mut seen = Vec::new();
    for p in params {
        let key = p.keyword.to_ascii_uppercase();
        let needs = match key.as_str() {
            "SIZE" => EhloKeywords::SIZE,
            "BODY" => EhloKeywords::EIGHTBITMIME,
            "SMTPUTF8" => EhloKeywords::SMTPUTF8,
            "RET" | "ENVID" => EhloKeywords::DSN,
            "AUTH" => EhloKeywords::AUTH,
            _ => return Err(ParamError::Unsupported(p.keyword.clone())),
        };
        if !offered.contains(needs) {
            return Err(ParamError::Unsupported(p.keyword.clone()));
        }
        if seen.contains(&key) {
            return Err(ParamError::Duplicate(p.keyword.clone()));
        }
        let bad = || ParamError::BadValue(p.keyword.clone());
        let value = p.value.as_deref();
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                if !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                // A number too large for u64 is certainly over the limit.
                let n = v.parse::<u64>().unwrap_or(u64::MAX);
                if n > max_size {
                    return Err(ParamError::TooBig);
                }
                out.size = Some(n);
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => out.body = Some(Body::SevenBit),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                out.body = Some(Body::EightBitMime)
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("BINARYMIME") => {
                return Err(ParamError::Unsupported(format!("{}={v}", p.keyword)));
            }
            ("SMTPUTF8", None) => out.smtputf8 = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => out.ret = Some(Ret::Full),
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => out.ret = Some(Ret::Hdrs),
            ("ENVID", Some(v)) if v.len() <= MAX_ENVID && is_xtext(v) => {
                out.envid = Some(v.to_string())
            }
            ("AUTH", Some("<>")) => out.auth = Some(String::new()),
            ("AUTH", Some(v)) => out.auth = Some(xtext_decode(v).ok_or_else(bad)?),
            _ => return Err(bad()),
        }
        seen.push(key);
    }
    Ok(out)
}

/// Interprets RCPT parameters. `offered` is what EHLO advertised (none after HELO).
pub fn rcpt_params(params: &[Param], offered: EhloKeywords) -> Result<RcptParams, ParamError> {
    let mut out = RcptParams::default();
    for p in params {
        let key = p.keyword.to_ascii_uppercase();
        if !matches!(key.as_str(), "NOTIFY" | "ORCPT") || !offered.contains(EhloKeywords::DSN) {
            return Err(ParamError::Unsupported(p.keyword.clone()));
        }
        let bad = || ParamError::BadValue(p.keyword.clone());
        let value = p.value.as_deref().ok_or_else(bad)?;
        if key == "NOTIFY" {
            if out.notify.is_some() {
                return Err(ParamError::Duplicate(p.keyword.clone()));
            }
            out.notify = Some(notify(value).ok_or_else(bad)?);
        } else {
            if out.orcpt.is_some() {
                return Err(ParamError::Duplicate(p.keyword.clone()));
            }
            out.orcpt = Some(orcpt(value).ok_or_else(bad)?.to_string());
        }
    }
    Ok(out)
}

/// RFC 3461 §4.1: `NEVER`, or a comma list of SUCCESS, FAILURE, DELAY.
fn notify(v: &str) -> Option<Notify> {
    let mut n = Notify::default();
    if v.eq_ignore_ascii_case("NEVER") {
        n.never = true;
        return Some(n);
    }
    for word in v.split(',') {
        let flag = if word.eq_ignore_ascii_case("SUCCESS") {
            &mut n.success
        } else if word.eq_ignore_ascii_case("FAILURE") {
            &mut n.failure
        } else if word.eq_ignore_ascii_case("DELAY") {
            &mut n.delay
        } else {
            return None;
        };
        if *flag {
            return None;
        }
        *flag = true;
    }
    Some(n)
}

/// RFC 3461 §4.2: `addr-type ";" xtext`, addr-type an atom such as `rfc822`.
fn orcpt(v: &str) -> Option<&str> {
    let (kind, addr) = v.split_once(';')?;
    let atom_ok = !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (atom_ok && !addr.is_empty() && v.len() <= MAX_ORCPT && is_xtext(addr)).then_some(v)
}

/// RFC 3461 §4: xtext is printable ASCII except `+` and `=`, or `+` and two upper-case
/// hex digits.
fn is_xtext(s: &str) -> bool {
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => {
                let hex = |c: Option<u8>| {
                    c.is_some_and(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                };
                if !(hex(bytes.next()) && hex(bytes.next())) {
                    return false;
                }
            }
            b'=' => return false,
            33..=126 => {}
            _ => return false,
        }
    }
    true
}

/// Decodes RFC 3461 §4 xtext (`+XX` for an octet); `None` when it is not xtext or does not
/// decode to UTF-8.
fn xtext_decode(s: &str) -> Option<String> {
    if !is_xtext(s) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'+' {
            // `is_xtext` checked that two hex digits follow every `+`.
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 6152 `BODY=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// RFC 3461 `RET=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// The parameters of MAIL FROM (RFC 1870, 6152, 6531, 3461, 4954).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// As written (still xtext-encoded), at most [`MAX_ENVID`] characters.
    pub envid: Option<String>,
    /// RFC 4954 §5 `AUTH=`, xtext-decoded; `<>` is `Some("")`. The session records
    /// `Some("")` whatever was sent when the client has not authenticated.
    pub auth: Option<String>,
}

/// RFC 3461 NOTIFY: `never` or any of success/failure/delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// The parameters of RCPT TO (RFC 3461).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// `addr-type;xtext` as written (still xtext-encoded).
    pub orcpt: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, CommandError> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn starttls_takes_no_parameters() {
        assert_eq!(parse("STARTTLS"), Ok(Command::Starttls));
        assert_eq!(parse("starttls "), Ok(Command::Starttls));
        assert_eq!(parse("STARTTLS x"), Err(CommandError::NoParameters));
        assert_eq!(parse("STARTTLS  NOOP"), Err(CommandError::NoParameters));
        let wire = CommandError::NoParameters.reply().to_wire();
        assert_eq!(wire, b"501 5.5.4 Syntax error (no parameters allowed)\r\n");
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse("noop"), Ok(Command::Noop));
        assert_eq!(parse("NoOp anything"), Ok(Command::Noop));
        assert_eq!(parse("quit"), Ok(Command::Quit));
        assert_eq!(parse("DATA "), Ok(Command::Data));
        assert_eq!(parse("data x"), Err(CommandError::Syntax("DATA")));
        assert_eq!(parse("RSET x"), Err(CommandError::Syntax("RSET")));
        assert_eq!(parse("FOO"), Err(CommandError::Unrecognized));
        assert_eq!(parse(""), Err(CommandError::Unrecognized));
        assert_eq!(parse("MAILX FROM:<>"), Err(CommandError::Unrecognized));
        assert_eq!(
            parse("ehlo mx.example").unwrap(),
            Command::Ehlo(Domain::parse("mx.example", false).unwrap())
        );
        assert_eq!(
            parse("HELO [192.0.2.1]").unwrap(),
            Command::Helo(Domain::parse("[192.0.2.1]", false).unwrap())
        );
        assert_eq!(parse("EHLO"), Err(CommandError::Syntax("EHLO hostname")));
        assert_eq!(
            parse("EHLO a b"),
            Err(CommandError::Syntax("EHLO hostname"))
        );
        assert_eq!(
            parse("HELO bad..name"),
            Err(CommandError::Syntax("HELO hostname"))
        );
    }

    #[test]
    fn mail_and_rcpt() {
        let Ok(Command::Mail { path, params }) = parse("mail from:<a@b> SIZE=10 body=8BITMIME")
        else {
            panic!()
        };
        assert_eq!(path.target.to_address(), "a@b");
        assert_eq!(params.len(), 2);
        assert_eq!(
            params[1],
            Param {
                keyword: "body".into(),
                value: Some("8BITMIME".into())
            }
        );
        let Ok(Command::Mail { path, params }) = parse("MAIL FROM: <>") else {
            panic!()
        };
        assert_eq!(path.target, PathTarget::Null);
        assert!(params.is_empty());
        assert_eq!(parse("MAIL FROM:a@b"), Err(CommandError::BadSender));
        assert_eq!(parse("MAIL FROM:<a@b>X"), Err(CommandError::BadSender));
        assert_eq!(
            parse("MAIL TO:<a@b>"),
            Err(CommandError::Syntax("MAIL FROM:<address>"))
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> =x"),
            Err(CommandError::Syntax("MAIL FROM:<address>"))
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> K="),
            Err(CommandError::Syntax("MAIL FROM:<address>"))
        );
        assert_eq!(parse("RCPT TO:<>"), Err(CommandError::BadRecipient));
        assert_eq!(parse("RCPT TO:<a@@b>"), Err(CommandError::BadRecipient));
        let Ok(Command::Rcpt { path, .. }) = parse("RCPT TO:<postmaster>") else {
            panic!()
        };
        assert_eq!(path.target.to_address(), "postmaster");
        assert_eq!(
            Command::parse(b"MAIL FROM:<\xff@b>"),
            Err(CommandError::BadSender)
        );
    }

    #[test]
    fn bdat_arguments() {
        assert_eq!(
            parse("BDAT 10"),
            Ok(Command::Bdat {
                size: 10,
                last: false
            })
        );
        assert_eq!(
            parse("bdat 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 1 FIRST",
            "BDAT 1 LAST x",
            "BDAT 99999999999999999999",
        ] {
            assert_eq!(
                parse(bad),
                Err(CommandError::Syntax("BDAT size [LAST]")),
                "{bad}"
            );
        }
    }

    fn p(k: &str, v: Option<&str>) -> Param {
        Param {
            keyword: k.into(),
            value: v.map(Into::into),
        }
    }

    #[test]
    fn mail_parameters() {
        let all = EhloKeywords::ALL;
        let got = mail_params(
            &[
                p("size", Some("100")),
                p("BODY", Some("8bitmime")),
                p("SMTPUTF8", None),
                p("RET", Some("HDRS")),
                p("ENVID", Some("a+2Bb")),
            ],
            all,
            1000,
        )
        .unwrap();
        assert_eq!(got.size, Some(100));
        assert_eq!(got.body, Some(Body::EightBitMime));
        assert!(got.smtputf8);
        assert_eq!(got.ret, Some(Ret::Hdrs));
        assert_eq!(got.envid.as_deref(), Some("a+2Bb"));
        assert_eq!(
            mail_params(&[p("SIZE", Some("1001"))], all, 1000),
            Err(ParamError::TooBig)
        );
        assert_eq!(
            mail_params(&[p("SIZE", Some("99999999999999999999999"))], all, 1000),
            Err(ParamError::TooBig)
        );
        assert_eq!(
            mail_params(&[p("SIZE", Some("1x"))], all, 1000),
            Err(ParamError::BadValue("SIZE".into()))
        );
        assert_eq!(
            mail_params(&[p("SIZE", Some("1")), p("size", Some("1"))], all, 9),
            Err(ParamError::Duplicate("size".into()))
        );
        assert_eq!(
            mail_params(&[p("BODY", Some("BINARYMIME"))], all, 9),
            Err(ParamError::Unsupported("BODY=BINARYMIME".into()))
        );
        assert_eq!(
            mail_params(&[p("X-FOO", None)], all, 9),
            Err(ParamError::Unsupported("X-FOO".into()))
        );
        let no_dsn = all.without(EhloKeywords::DSN);
        assert_eq!(
            mail_params(&[p("RET", Some("FULL"))], no_dsn, 9),
            Err(ParamError::Unsupported("RET".into()))
        );
        assert!(mail_params(&[p("ENVID", Some(&"a".repeat(101)))], all, 9).is_err());
        assert!(mail_params(&[p("ENVID", Some("a+2b"))], all, 9).is_err());
        assert!(mail_params(&[p("SMTPUTF8", Some("x"))], all, 9).is_err());
        assert_eq!(
            ParamError::TooBig.reply().to_wire(),
            b"552 5.3.4 Message size exceeds fixed limit\r\n"
        );
    }

    #[test]
    fn rcpt_parameters() {
        let all = EhloKeywords::ALL;
        let got = rcpt_params(
            &[
                p("NOTIFY", Some("SUCCESS,delay")),
                p("ORCPT", Some("rfc822;a+40b")),
            ],
            all,
        )
        .unwrap();
        assert_eq!(
            got.notify,
            Some(Notify {
                never: false,
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(got.orcpt.as_deref(), Some("rfc822;a+40b"));
        let never = rcpt_params(&[p("notify", Some("never"))], all).unwrap();
        assert!(never.notify.unwrap().never);
        for bad in ["NEVER,SUCCESS", "SUCCESS,SUCCESS", "", "SOMETIMES"] {
            assert!(
                rcpt_params(&[p("NOTIFY", Some(bad))], all).is_err(),
                "{bad}"
            );
        }
        assert!(rcpt_params(&[p("ORCPT", Some("rfc822"))], all).is_err());
        assert!(rcpt_params(&[p("ORCPT", Some(";a"))], all).is_err());
        assert!(rcpt_params(&[p("NOTIFY", None)], all).is_err());
        let no_dsn = all.without(EhloKeywords::DSN);
        assert_eq!(
            rcpt_params(&[p("NOTIFY", Some("NEVER"))], no_dsn),
            Err(ParamError::Unsupported("NOTIFY".into()))
        );
    }

    #[test]
    fn auth_command() {
        assert_eq!(
            parse("auth plain AHVzZXIAcGFzcw=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some(b"AHVzZXIAcGFzcw==".to_vec())
            })
        );
        assert_eq!(
            parse("AUTH SCRAM-SHA-256 "),
            Ok(Command::Auth {
                mechanism: "SCRAM-SHA-256".into(),
                initial: None
            })
        );
        assert_eq!(
            parse("AUTH EXTERNAL ="),
            Ok(Command::Auth {
                mechanism: "EXTERNAL".into(),
                initial: Some(b"=".to_vec())
            })
        );
        let twenty = format!("AUTH {}", "A".repeat(MAX_MECHANISM_NAME));
        assert!(parse(&twenty).is_ok());
        let usage = Err(CommandError::Syntax("AUTH mechanism [initial-response]"));
        for bad in [
            "AUTH",
            "AUTH  PLAIN",
            "AUTH PLAIN a b",
            "AUTH PLAIN  a",
            "AUTH PL.AIN",
            "AUTH PLAIN \x7f",
        ] {
            assert_eq!(parse(bad), usage, "{bad}");
        }
        let over = format!("AUTH {}", "A".repeat(MAX_MECHANISM_NAME + 1));
        assert_eq!(parse(&over), usage);
        assert_eq!(Command::parse(b"AUTH PLAIN \xff"), usage);
    }

    #[test]
    fn mail_auth_parameter() {
        let all = EhloKeywords::ALL;
        let got = mail_params(&[p("auth", Some("a+2Bb+3Dc@example.org"))], all, 9).unwrap();
        assert_eq!(got.auth.as_deref(), Some("a+b=c@example.org"));
        let got = mail_params(&[p("AUTH", Some("<>"))], all, 9).unwrap();
        assert_eq!(got.auth.as_deref(), Some(""));
        let got = mail_params(&[p("AUTH", Some("+C3+A9@x"))], all, 9).unwrap();
        assert_eq!(got.auth.as_deref(), Some("\u{e9}@x"));
        for bad in ["a+2b", "a+", "+FF", "\u{e9}@x", "a=b"] {
            assert_eq!(
                mail_params(&[p("AUTH", Some(bad))], all, 9),
                Err(ParamError::BadValue("AUTH".into())),
                "{bad}"
            );
        }
        assert!(mail_params(&[p("AUTH", None)], all, 9).is_err());
        assert_eq!(
            mail_params(&[p("AUTH", Some("<>")), p("AUTH", Some("<>"))], all, 9),
            Err(ParamError::Duplicate("AUTH".into()))
        );
        assert_eq!(
            mail_params(&[p("AUTH", Some("<>"))], all.without(EhloKeywords::AUTH), 9),
            Err(ParamError::Unsupported("AUTH".into()))
        );
    }

    #[test]
    fn verbs_for_logs() {
        assert_eq!(verb_of(b"mail from:<>"), "MAIL");
        assert_eq!(verb_of(b"\x00abc"), "UNKNOWN");
        assert_eq!(verb_of(&[b'a'; 100]).len(), MAX_VERB);
    }
}
