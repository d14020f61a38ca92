//! drawbridge's own DNS client, its I/O-free half: the message codec, a lookup state
//! machine and a TTL cache. **Invariant:** no sockets, timers or clock reads (the
//! resolver that has them is `crate::io::resolver`); the decoder checks the structure of
//! every name, and the characters only of the names it uses.

pub mod cache;
pub mod exchange;
pub mod message;
pub mod name;
pub mod rng;

#[cfg(test)]
mod fuzz;

use std::fmt;
use std::time::Duration;

pub use message::{Answer, DecodeError, Query, Rcode, Record, RecordData, RecordType, Response};
pub use name::{Name, NameError};

/// Default time to wait for one server's answer before asking the next one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of queries sent for one question, across the servers in order (a TCP
/// retry after a truncated answer belongs to the query it continues).
pub const DEFAULT_ATTEMPTS: usize = 4;

/// How a resolver asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverOptions {
    /// Per-query timeout.
    pub timeout: Duration,
    /// Queries per question, the servers taken in turn.
    pub attempts: usize,
    /// Cache capacity in entries; 0 turns the cache off.
    pub cache_entries: usize,
}

impl Default for ResolverOptions {
    fn default() -> ResolverOptions {
        ResolverOptions {
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            cache_entries: cache::MAX_CACHE_ENTRIES,
        }
    }
}

/// Why a lookup gave no answer. Only `NxDomain` is permanent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (RCODE 3).
    NxDomain,
    /// Every server we asked answered with this failure (SERVFAIL, REFUSED, …).
    ServerFailure(Rcode),
    /// No answer before the timeout, on the last attempt.
    Timeout,
    /// The last answer could not be decoded.
    Malformed(DecodeError),
    /// A socket error (unreachable server, refused connection, closed stream).
    Network,
    /// The resolver has no servers configured.
    NoServers,
    /// A CNAME chain longer than the resolver follows.
    AliasLoop,
}

impl DnsError {
    /// Whether retrying later cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DnsError::NxDomain)
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NxDomain => f.write_str("name does not exist"),
            DnsError::ServerFailure(rcode) => write!(f, "server failure ({rcode:?})"),
            DnsError::Timeout => f.write_str("timed out"),
            DnsError::Malformed(e) => write!(f, "malformed answer ({e})"),
            DnsError::Network => f.write_str("network error"),
            DnsError::NoServers => f.write_str("no resolvers configured"),
            DnsError::AliasLoop => f.write_str("CNAME chain too long"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nxdomain_is_permanent() {
        assert!(DnsError::NxDomain.is_permanent());
        for temporary in [
            DnsError::ServerFailure(Rcode::ServFail),
            DnsError::Timeout,
            DnsError::Malformed(DecodeError::TruncatedHeader),
            DnsError::Network,
            DnsError::NoServers,
            DnsError::AliasLoop,
        ] {
            assert!(!temporary.is_permanent());
        }
    }
}
