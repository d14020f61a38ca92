//! The async resolver: moves bytes between sockets and `Exchange`, consults the cache,
//! and shapes answers for delivery (MX order, null MX, address lists, PTR names).
//!
//! Single-threaded: share one `Resolver` through `Rc`; its PRNG and cache sit in
//! `RefCell`s that are never borrowed across an `.await`.

use ring::rand::{SecureRandom, SystemRandom};
use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Instant;

use async_io::{Async, Timer};
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::proto::dns::cache::Cache;
use crate::proto::dns::exchange::{Exchange, Transmit, Transport};
use crate::proto::dns::message::{Answer, MAX_UDP_PAYLOAD, RecordData, RecordType, Response};
use crate::proto::dns::name::Name;
use crate::proto::dns::rng::Prng;
use crate::proto::dns::{DnsError, ResolverOptions};

/// Queries asked again for the target of a CNAME the answer did not resolve; together
/// with `MAX_CNAME_HOPS` per answer this bounds a chain at 5 × 9 names.
pub const MAX_ALIAS_QUERIES: usize = 4;
/// Bytes read from a TCP stream at a time (the stream buffer itself is bounded by the
/// exchange at 2 + 65 535 octets).
const TCP_READ_CHUNK: usize = 4096;
/// PTR names tried for forward confirmation of a client's name. Postfix tries them all;
/// an address with more names than this is a misconfiguration, and each costs lookups
/// while the client waits for its greeting.
pub const MAX_PTR_NAMES: usize = 4;

/// One mail exchanger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mx {
    pub preference: u16,
    pub exchange: Name,
}

/// What MX lookup tells delivery to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxAnswer {
    /// Try these in order: preference ascending, equal preferences in random order.
    Exchanges(Vec<Mx>),
    /// The domain exists but has no MX: deliver to its A/AAAA (RFC 5321 §5.1).
    NoMx,
    /// The domain accepts no mail (RFC 7505): bounce with 556 5.1.10.
    NullMx,
}

/// Asks the configured servers, caching answers. See the module documentation.
pub struct Resolver {
    servers: Vec<SocketAddr>,
    options: ResolverOptions,
    rng: RefCell<Prng>,
    cache: RefCell<Cache>,
}

impl Resolver {
    /// A resolver asking `servers` in order; the PRNG is seeded here.
    pub fn new(servers: Vec<SocketAddr>, options: ResolverOptions) -> Resolver {
        let cache = Cache::new(options.cache_entries);
        Resolver {
            servers,
            options,
            rng: RefCell::new(Prng::from_seed(entropy_seed())),
            cache: RefCell::new(cache),
        }
    }

    /// The MX records of `domain`, ready for delivery.
    pub async fn lookup_mx(&self, domain: &Name) -> Result<MxAnswer, DnsError> {
        let records = self.lookup(domain, RecordType::MX).await?;
        let mut exchanges: Vec<Mx> = records
            .into_iter()
            .filter_map(|data| match data {
                RecordData::Mx {
                    preference,
                    exchange,
                } => Some(Mx {
                    preference,
                    exchange,
                }),
                _ => None,
            })
            .collect();
        if exchanges.is_empty() {
            return Ok(MxAnswer::NoMx);
        }
        // RFC 7505 §3: "." as the only exchange means no mail. Mixed with real
        // exchanges (a misconfiguration the RFC forbids) the real ones are used.
        if exchanges.iter().all(|mx| mx.exchange.is_root()) {
            return Ok(MxAnswer::NullMx);
        }
        exchanges.retain(|mx| !mx.exchange.is_root());
        self.order(&mut exchanges);
        Ok(MxAnswer::Exchanges(exchanges))
    }

    /// The IPv4 then IPv6 addresses of `host` (A and AAAA asked together). Empty when the
    /// name exists without addresses. When one family fails and the other has
    /// addresses, those are returned.
    pub async fn lookup_ip(&self, host: &Name) -> Result<Vec<IpAddr>, DnsError> {
        let (v4, v6) = smol::future::zip(
            self.lookup(host, RecordType::A),
            self.lookup(host, RecordType::AAAA),
        )
        .await;
        let mut addresses = Vec::new();
        for records in [&v4, &v6].into_iter().flatten() {
            addresses.extend(records.iter().filter_map(|data| match data {
                RecordData::A(a) => Some(IpAddr::V4(*a)),
                RecordData::Aaaa(a) => Some(IpAddr::V6(*a)),
                _ => None,
            }));
        }
        if !addresses.is_empty() {
            return Ok(addresses);
        }
        // No addresses: a temporary failure of either family outranks NXDOMAIN, which
        // outranks "exists without addresses".
        let errors = [v4.err(), v6.err()];
        let mut errors = errors.iter().flatten();
        match errors.clone().find(|e| !e.is_permanent()).or(errors.next()) {
            Some(error) => Err(*error),
            None => Ok(addresses),
        }
    }

    /// The PTR names of `ip` (in-addr.arpa or ip6.arpa).
    pub async fn lookup_ptr(&self, ip: IpAddr) -> Result<Vec<Name>, DnsError> {
        let records = self.lookup(&Name::reverse(ip), RecordType::PTR).await?;
        Ok(records
            .into_iter()
            .filter_map(|data| match data {
                RecordData::Ptr(name) => Some(name),
                _ => None,
            })
            .collect())
    }

    /// The client name of `ip`: a PTR name whose own addresses include `ip` (forward
    /// confirmation, as Postfix's `smtpd_peername_lookup`). `None` when there is no PTR
    /// record, no name confirms, or a lookup fails. At most [`MAX_PTR_NAMES`] names are
    /// tried; answers come through the cache.
    pub async fn verified_name(&self, ip: IpAddr) -> Option<Name> {
        let ip = ip.to_canonical();
        let names = self.lookup_ptr(ip).await.ok()?;
        for name in names.into_iter().take(MAX_PTR_NAMES) {
            if let Ok(addresses) = self.lookup_ip(&name).await {
                if addresses.iter().any(|a| a.to_canonical() == ip) {
                    return Some(name);
                }
            }
        }
        None
    }

    /// Sorts by preference and shuffles each run of equal preferences (RFC 5321 §5.1).
    fn order(&self, exchanges: &mut [Mx]) {
        exchanges.sort_by_key(|mx| mx.preference);
        let mut rng = self.rng.borrow_mut();
        let mut start = 0;
        while start < exchanges.len() {
            let preference = exchanges[start].preference;
            let end = exchanges[start..]
                .iter()
                .position(|mx| mx.preference != preference)
                .map_or(exchanges.len(), |n| start + n);
            rng.shuffle(&mut exchanges[start..end]);
            start = end;
        }
    }

    /// The records of `record_type` for `name`, CNAMEs followed; empty for NODATA.
    async fn lookup(
        &self,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Vec<RecordData>, DnsError> {
        let mut current = name.clone();
        for _ in 0..=MAX_ALIAS_QUERIES {
            let cached = self
                .cache
                .borrow_mut()
                .lookup(&current, record_type, Instant::now());
            let answer = match cached {
                Some(answer) => answer,
                None => {
                    let response = self.query(&current, record_type).await?;
                    let answer = response
                        .answer(&current, record_type)
                        .map_err(DnsError::ServerFailure)?;
                    self.cache
                        .borrow_mut()
                        .insert(&current, record_type, &answer, Instant::now());
                    answer
                }
            };
            match answer {
                Answer::Records { records, .. } => return Ok(records),
                Answer::NoData { .. } => return Ok(Vec::new()),
                Answer::NxDomain { .. } => return Err(DnsError::NxDomain),
                Answer::Alias { target, .. } => current = target,
            }
        }
        Err(DnsError::AliasLoop)
    }

    /// Runs one exchange over real sockets.
    async fn query(&self, name: &Name, record_type: RecordType) -> Result<Response, DnsError> {
        let seed = entropy_seed();
        let mut exchange = Exchange::new(
            name.clone(),
            record_type,
            self.servers.clone(),
            &self.options,
            seed,
            Instant::now(),
        );
        let mut link: Option<Link> = None;
        let mut buffer = vec![0u8; usize::from(MAX_UDP_PAYLOAD).max(TCP_READ_CHUNK)];
        loop {
            if let Some(result) = exchange.poll_event() {
                return result;
            }
            let Some(deadline) = exchange.poll_timeout() else {
                // Invariant: an exchange without a result has an attempt and a deadline.
                return Err(DnsError::Timeout);
            };
            if let Some(transmit) = exchange.poll_transmit() {
                link = None;
                match with_deadline(open(&transmit), deadline).await {
                    Some(Ok(opened)) => link = Some(opened),
                    Some(Err(error)) => {
                        log::debug!(target: "dns", "{}: {}", transmit.server, crate::proto::logtext::Escaped(&error.to_string()));
                        exchange.handle_transport_error(Instant::now());
                        continue;
                    }
                    None => {
                        exchange.handle_timeout(Instant::now());
                        continue;
                    }
                }
            }
            let Some(current) = link.as_mut() else {
                exchange.handle_transport_error(Instant::now());
                continue;
            };
            let received = match current {
                Link::Udp(socket) => with_deadline(socket.recv_from(&mut buffer), deadline).await,
                Link::Tcp(stream, server) => {
                    let server = *server;
                    with_deadline(stream.read(&mut buffer[..TCP_READ_CHUNK]), deadline)
                        .await
                        .map(|read| read.map(|n| (n, server)))
                }
            };
            let now = Instant::now();
            match received {
                None => exchange.handle_timeout(now),
                Some(Ok((0, _))) if matches!(current, Link::Tcp(..)) => {
                    exchange.handle_transport_error(now);
                }
                Some(Ok((n, from))) => exchange.handle_input(from, &buffer[..n], now),
                Some(Err(error)) => {
                    log::debug!(target: "dns", "receive: {}", crate::proto::logtext::Escaped(&error.to_string()));
                    exchange.handle_transport_error(now);
                }
            }
        }
    }
}

/// The socket or connection of the current attempt.
enum Link {
    Udp(Async<UdpSocket>),
    Tcp(Async<TcpStream>, SocketAddr),
}

/// Opens a fresh socket (random source port) or connection and sends the payload.
async fn open(transmit: &Transmit) -> std::io::Result<Link> {
    match transmit.transport {
        Transport::Udp => {
            let local: SocketAddr = match transmit.server {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = Async::<UdpSocket>::bind(local)?;
            // Connected: the kernel drops datagrams from elsewhere and reports ICMP
            // unreachable, so a dead server fails fast instead of timing out.
            socket.get_ref().connect(transmit.server)?;
            socket.send(&transmit.payload).await?;
            Ok(Link::Udp(socket))
        }
        Transport::Tcp => {
            let mut stream = Async::<TcpStream>::connect(transmit.server).await?;
            stream.write_all(&transmit.payload).await?;
            stream.flush().await?;
            Ok(Link::Tcp(stream, transmit.server))
        }
    }
}

/// `future`'s output, or `None` once `deadline` passes.
async fn with_deadline<T>(future: impl Future<Output = T>, deadline: Instant) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await
}

/// 64 bits from the operating system's random numbers (ring's `SystemRandom`, the one
/// source of randomness in the firmware). Should the system refuse, the standard
/// library's hasher keys, which come from the same system call at start, mixed with the
/// clock.
pub fn entropy_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    use std::hash::{BuildHasher, Hasher, RandomState};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(crate::io::clock::unix_micros_now());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exchange_gets_a_fresh_seed() {
        let seeds: std::collections::HashSet<u64> = (0..64).map(|_| entropy_seed()).collect();
        assert_eq!(seeds.len(), 64);
    }

    fn mx(preference: u16, exchange: &str) -> Mx {
        Mx {
            preference,
            exchange: Name::parse(exchange).unwrap(),
        }
    }

    #[test]
    fn order_sorts_and_shuffles_equals() {
        let resolver = Resolver::new(Vec::new(), ResolverOptions::default());
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..100 {
            let mut list = vec![
                mx(20, "c.test"),
                mx(10, "a.test"),
                mx(30, "d.test"),
                mx(10, "b.test"),
            ];
            resolver.order(&mut list);
            let prefs: Vec<u16> = list.iter().map(|m| m.preference).collect();
            assert_eq!(prefs, [10, 10, 20, 30]);
            assert_eq!(list[2].exchange.as_str(), "c.test");
            firsts.insert(list[0].exchange.as_str().to_string());
        }
        assert_eq!(firsts.len(), 2);
    }

    #[test]
    fn no_servers_fails_at_once() {
        let resolver = Resolver::new(Vec::new(), ResolverOptions::default());
        let name = Name::parse("example.test").unwrap();
        let result = smol::block_on(resolver.lookup_mx(&name));
        assert_eq!(result, Err(DnsError::NoServers));
    }
}
