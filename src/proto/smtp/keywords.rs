//! The EHLO extension keywords a server may advertise (RFC 5321 §4.1.1.1 and each
//! extension's RFC), as a set: the SMTP core offers from it and checks MAIL and RCPT
//! parameters against it; the configuration (`ehlo-keywords`) narrows it.

/// A set of EHLO extension keywords, by bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EhloKeywords(u16);

impl EhloKeywords {
    pub const PIPELINING: EhloKeywords = EhloKeywords(1 << 0);
    pub const SIZE: EhloKeywords = EhloKeywords(1 << 1);
    pub const EIGHTBITMIME: EhloKeywords = EhloKeywords(1 << 2);
    pub const ENHANCEDSTATUSCODES: EhloKeywords = EhloKeywords(1 << 3);
    pub const STARTTLS: EhloKeywords = EhloKeywords(1 << 4);
    pub const AUTH: EhloKeywords = EhloKeywords(1 << 5);
    pub const DSN: EhloKeywords = EhloKeywords(1 << 6);
    pub const SMTPUTF8: EhloKeywords = EhloKeywords(1 << 7);
    pub const CHUNKING: EhloKeywords = EhloKeywords(1 << 8);
    pub const NONE: EhloKeywords = EhloKeywords(0);
    pub const ALL: EhloKeywords = EhloKeywords(0x1ff);

    /// Every keyword with its name, in the order EHLO advertises them.
    pub const NAMES: [(EhloKeywords, &'static str); 9] = [
        (Self::PIPELINING, "PIPELINING"),
        (Self::SIZE, "SIZE"),
        (Self::EIGHTBITMIME, "8BITMIME"),
        (Self::ENHANCEDSTATUSCODES, "ENHANCEDSTATUSCODES"),
        (Self::STARTTLS, "STARTTLS"),
        (Self::AUTH, "AUTH"),
        (Self::DSN, "DSN"),
        (Self::SMTPUTF8, "SMTPUTF8"),
        (Self::CHUNKING, "CHUNKING"),
    ];

    pub fn contains(self, other: EhloKeywords) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn with(self, other: EhloKeywords) -> EhloKeywords {
        EhloKeywords(self.0 | other.0)
    }

    pub fn without(self, other: EhloKeywords) -> EhloKeywords {
        EhloKeywords(self.0 & !other.0)
    }

    /// The keyword named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<EhloKeywords> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(k, _)| *k)
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(k, _)| self.contains(*k))
            .map(|(_, n)| n)
    }
}
