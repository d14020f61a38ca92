//! The gateway's own addresses: those of the host's interfaces and those its services
//! listen on. An address literal naming one of them is our host (SPEC §3), for the
//! sessions' policy, for `explain` and for delivery alike.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::proto::config::{Config, ServiceName};

/// Every address of this host and every specific address a service listens on, each
/// once. Interfaces that cannot be listed (a sandbox without netlink) leave the
/// listening addresses and loopback.
pub fn our_addresses(config: &Config) -> Vec<IpAddr> {
    let mut out = interface_addresses().unwrap_or_else(|e| {
        log::warn!(target: "main", "cannot list the host's addresses: {e}");
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    });
    for name in ServiceName::ALL {
        let s = config.service(name);
        out.extend(
            s.listen
                .iter()
                .chain(&s.tls_listen)
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified()),
        );
    }
    let mut unique: Vec<IpAddr> = Vec::with_capacity(out.len());
    for ip in out {
        if !unique.contains(&ip) {
            unique.push(ip);
        }
    }
    unique
}

/// The IPv4 and IPv6 addresses of the host's interfaces (getifaddrs(3)).
fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let node = unsafe { &*cursor };
        if !node.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*node.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(node.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(node.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cursor = node.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listening_addresses_are_ours() {
        let mut config = Config::default();
        crate::proto::config::text::parse_into(
            &mut config,
            "set service inbound listen 192.0.2.25:25\nset service outbound listen 0.0.0.0:587\n",
        )
        .unwrap();
        let ours = our_addresses(&config);
        assert!(ours.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ours:?}");
        assert!(ours.contains(&"192.0.2.25".parse().unwrap()));
        assert!(!ours.iter().any(IpAddr::is_unspecified));
        let mut sorted = ours.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ours.len());
    }
}
