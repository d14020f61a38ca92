//! What a server offers in its EHLO reply (RFC 5321 §4.1.1.1), read into the facts the
//! clients act on. Keyword names are those of [`EhloKeywords`], the set the server side
//! offers from, so both sides spell every extension the same way.

use crate::proto::sasl::client::ClientMechanism;
use crate::proto::smtp::keywords::EhloKeywords;
use crate::proto::smtp::reply::Reply;

/// The form of RFC 4954's AUTH keyword that some older servers still send
/// (`AUTH=LOGIN PLAIN`): read as AUTH.
const OLD_AUTH: &str = "AUTH=";

/// What the server offered in its EHLO reply. All false after a HELO.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Extensions {
    pub esmtp: bool,
    pub pipelining: bool,
    /// RFC 1870: `Some(0)` when SIZE is offered without a fixed limit.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
    /// The SASL mechanisms of RFC 4954's AUTH keyword that we can use, each once.
    pub auth: Vec<ClientMechanism>,
}

impl Extensions {
    /// Reads the keyword lines of a positive EHLO reply (RFC 5321 §4.1.1.1): the first
    /// line names the server; keywords are case-insensitive; unknown ones are ignored.
    pub(crate) fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions {
            esmtp: true,
            ..Extensions::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            // `AUTH=LOGIN PLAIN`: the first mechanism, when one follows the `=`.
            let old_auth = keyword
                .get(..OLD_AUTH.len())
                .filter(|k| k.eq_ignore_ascii_case(OLD_AUTH))
                .and_then(|_| keyword.get(OLD_AUTH.len()..))
                .filter(|m| !m.is_empty());
            match EhloKeywords::from_name(keyword) {
                Some(EhloKeywords::PIPELINING) => ext.pipelining = true,
                Some(EhloKeywords::SIZE) => {
                    // RFC 1870 §4: a missing, zero or unreadable limit means no fixed limit.
                    ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
                }
                Some(EhloKeywords::EIGHTBITMIME) => ext.eight_bit_mime = true,
                Some(EhloKeywords::SMTPUTF8) => ext.smtputf8 = true,
                Some(EhloKeywords::DSN) => ext.dsn = true,
                Some(EhloKeywords::STARTTLS) => ext.starttls = true,
                Some(EhloKeywords::CHUNKING) => ext.chunking = true,
                Some(EhloKeywords::ENHANCEDSTATUSCODES) => ext.enhanced_status_codes = true,
                Some(EhloKeywords::AUTH) => ext.add_auth(words),
                _ if old_auth.is_some() => ext.add_auth(old_auth.into_iter().chain(words)),
                _ => {}
            }
        }
        ext
    }

    /// The mechanisms we can use among `names`, each once.
    fn add_auth<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        for name in names {
            if let Some(m) = ClientMechanism::parse(name)
                && !self.auth.contains(&m)
            {
                self.auth.push(m);
            }
        }
    }
}
