//! Access filters at connection time: the filter language decides (`crate::proto::filter`),
//! this layer answers its questions — the client's name and its forward confirmation
//! from our DNS client, the ident user from an RFC 1413 query — only when a rule asks.
//!
//! The evaluator's lookups are synchronous, so it runs in rounds: a round that asks for
//! something not known yet is thrown away, the answers are fetched, and the next round
//! starts. There are three kinds of question, so there are at most four rounds.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::io::resolver::Resolver;
use crate::proto::dns::Name;
use crate::proto::filter::ident::IdentExchange;
use crate::proto::filter::{Decision, Filter, Lookups, NameLookup, Request, ServerHost};

/// How long an ident query may take before the user counts as unknown: shorter than
/// RFC 1413's suggestion, since a client waits for its greeting meanwhile.
pub const IDENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers fetched so far.
#[derive(Default)]
struct Known {
    name: Option<NameLookup>,
    forward: Option<Option<bool>>,
    ident: Option<Option<String>>,
}

/// The questions a round asked that had no answer yet.
#[derive(Default)]
struct Asked {
    name: bool,
    forward: bool,
    ident: bool,
}

impl Asked {
    fn any(&self) -> bool {
        self.name || self.forward || self.ident
    }
}

struct Round<'a> {
    known: &'a Known,
    asked: Asked,
}

impl Lookups for Round<'_> {
    fn client_name(&mut self) -> NameLookup {
        self.known.name.clone().unwrap_or_else(|| {
            self.asked.name = true;
            NameLookup::Failed
        })
    }

    fn forward_confirmed(&mut self) -> Option<bool> {
        self.known.forward.unwrap_or_else(|| {
            self.asked.forward = true;
            None
        })
    }

    fn ident_user(&mut self) -> Option<String> {
        self.known.ident.clone().unwrap_or_else(|| {
            self.asked.ident = true;
            None
        })
    }
}

/// Whether the filter lets the client at `peer`, connected to `local`, use `service`. Both
/// as the listener gives them: an IPv4 client of a dual-stack socket is IPv4 already, so
/// its PTR name is looked up in in-addr.arpa.
pub async fn decide(
    filter: &Filter,
    service: &str,
    local: SocketAddr,
    peer: SocketAddr,
    resolver: Option<&Resolver>,
) -> Decision {
    let request = Request {
        service,
        server_host: Some(ServerHost {
            address: local.ip(),
            name: None,
        }),
        client_ip: peer.ip(),
    };
    let mut known = Known::default();
    loop {
        let mut round = Round {
            known: &known,
            asked: Asked::default(),
        };
        let decision = filter.decide(&request, &mut round);
        let asked = round.asked;
        if !asked.any() {
            return decision;
        }
        if asked.name {
            known.name = Some(client_name(resolver, peer.ip()).await);
        }
        if asked.forward {
            known.forward = Some(match &known.name {
                Some(NameLookup::Known(name)) => forward_confirmed(resolver, name, peer.ip()).await,
                _ => None,
            });
        }
        if asked.ident {
            known.ident = Some(ident_user(local, peer).await);
        }
    }
}

/// The client's name by PTR lookup; `Unknown` when it has none.
async fn client_name(resolver: Option<&Resolver>, ip: IpAddr) -> NameLookup {
    let Some(resolver) = resolver else {
        return NameLookup::Failed;
    };
    match resolver.lookup_ptr(ip).await {
        Ok(names) => match names.first() {
            Some(name) => NameLookup::Known(name.as_str().to_string()),
            None => NameLookup::Unknown,
        },
        Err(e) if e.is_permanent() => NameLookup::Unknown,
        Err(_) => NameLookup::Failed,
    }
}

/// Whether `name`'s addresses include `ip` (forward-confirmed reverse DNS).
async fn forward_confirmed(resolver: Option<&Resolver>, name: &str, ip: IpAddr) -> Option<bool> {
    let resolver = resolver?;
    let name = Name::parse(name).ok()?;
    match resolver.lookup_ip(&name).await {
        Ok(ips) => Some(ips.contains(&ip)),
        Err(e) if e.is_permanent() => Some(false),
        Err(_) => None,
    }
}

/// The user the client host's ident server names for this connection (RFC 1413).
async fn ident_user(local: SocketAddr, peer: SocketAddr) -> Option<String> {
    let query = async {
        let mut stream = Async::<TcpStream>::connect(SocketAddr::new(peer.ip(), 113))
            .await
            .ok()?;
        let mut exchange = IdentExchange::new(peer.port(), local.port(), Instant::now());
        if let Some(line) = exchange.poll_transmit() {
            stream.write_all(line.as_bytes()).await.ok()?;
        }
        let mut buf = [0u8; 512];
        loop {
            if let Some(result) = exchange.poll_event() {
                return result
                    .ok()
                    .and_then(|reply| reply.user().map(str::to_string));
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => exchange.handle_end_of_stream(),
                Ok(n) => exchange.handle_input(&buf[..n]),
            }
        }
    };
    let expire = async {
        Timer::after(IDENT_TIMEOUT).await;
        None
    };
    query.or(expire).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> Filter {
        Filter::parse_compact(text).unwrap()
    }

    fn run(f: &Filter, peer: &str) -> Decision {
        let local: SocketAddr = "127.0.0.1:25".parse().unwrap();
        smol::block_on(decide(f, "smtp", local, peer.parse().unwrap(), None))
    }

    #[test]
    fn address_rules_need_no_lookups() {
        let f = filter("+smtp: 127.0.0.1$-smtp: ALL");
        assert!(run(&f, "127.0.0.1:5000").is_allowed());
        assert!(!run(&f, "127.0.0.2:5000").is_allowed());
    }

    #[test]
    fn name_rules_without_a_resolver_fall_back_to_unknown_names() {
        // Without DNS the name lookup fails: a domain rule cannot match, UNKNOWN does.
        let f = filter("-smtp: .example.com$-smtp: UNKNOWN");
        assert!(!run(&f, "127.0.0.2:5000").is_allowed());
        let f = filter("-smtp: .example.com");
        assert!(run(&f, "127.0.0.2:5000").is_allowed());
    }
}
