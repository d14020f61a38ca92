//! Which recipients a client may send to: the closed-relay baseline.
//!
//! A recipient is accepted when its domain is routed to our internal relays (one of
//! our own domains), or when the client is classified INTERNAL and the domain has a
//! route at all. Everything else is refused: no open relay, ever.

use crate::config::{Config, DomainPattern};
use crate::smtp::reply::Reply;

/// The recipient's domain, lower case, or `None` for a bare `postmaster` and other
/// addresses without one.
pub fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

/// Decides one RCPT: `Ok` with the route's pattern, or the reply to refuse it with.
pub fn check_rcpt(config: &Config, internal: bool, rcpt: &str) -> Result<DomainPattern, Reply> {
    let domain = match domain_of(rcpt) {
        Some(d) => d,
        // RFC 5321 §4.5.1: a bare "postmaster" is our own postmaster.
        None => config.system.host_name.to_ascii_lowercase(),
    };
    match config.route_for(&domain) {
        Some((pattern, route)) if internal || route.is_internal_relay() => Ok(pattern.clone()),
        Some(_) => Err(relay_denied(rcpt)),
        None if internal => Err(Reply::new(
            550,
            "5.4.4",
            format!("<{rcpt}>: Recipient address rejected: no route to domain"),
        )),
        None => Err(relay_denied(rcpt)),
    }
}

fn relay_denied(rcpt: &str) -> Reply {
    Reply::new(550, "5.7.1", format!("<{rcpt}>: Relay access denied"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NextHop, Route};

    fn config() -> Config {
        let mut c = Config::default();
        c.system.host_name = "gw.example.com".into();
        let relay = Route::new(NextHop::Relay(vec!["127.0.0.1:2526".parse().unwrap()]));
        c.routes
            .insert(DomainPattern::Exact("example.com".into()), relay.clone());
        c.routes
            .insert(DomainPattern::Suffix("example.com".into()), relay);
        c
    }

    #[test]
    fn external_clients_reach_only_our_domains() {
        let c = config();
        assert!(check_rcpt(&c, false, "a@example.com").is_ok());
        assert!(check_rcpt(&c, false, "a@Sub.Example.COM.").is_ok());
        assert!(check_rcpt(&c, false, "postmaster").is_ok());
        let r = check_rcpt(&c, false, "a@example.org").unwrap_err();
        assert_eq!(
            r.one_line(),
            "550 5.7.1 <a@example.org>: Relay access denied"
        );
        assert_eq!(
            check_rcpt(&c, false, "a@[192.0.2.1]").unwrap_err().code,
            550
        );
    }

    #[test]
    fn internal_clients_need_a_route() {
        let mut c = config();
        let r = check_rcpt(&c, true, "a@example.org").unwrap_err();
        assert_eq!(r.enhanced.unwrap().to_string(), "5.4.4");
        let smarthost = Route::new(NextHop::Smarthost(vec!["127.0.0.1:2600".parse().unwrap()]));
        c.routes.insert(DomainPattern::Any, smarthost);
        assert_eq!(
            check_rcpt(&c, true, "a@example.org"),
            Ok(DomainPattern::Any)
        );
        assert!(check_rcpt(&c, false, "a@example.org").is_err());
    }
}
