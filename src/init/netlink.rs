//! rtnetlink (RFC 3549, Linux `rtnetlink(7)`) for addresses and routes: the messages are
//! built by pure functions, and one function sends a message and reads its
//! acknowledgement.

use std::io;
use std::net::IpAddr;

use crate::proto::config::InterfaceAddress;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
/// The route was installed at boot (`RTPROT_BOOT`).
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
/// The largest acknowledgement we read: an error message quotes the request.
const ACK_BUFFER: usize = 4096;

fn family(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Appends one route attribute (type, value), padded to 4 bytes.
fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// A whole message: header (length, type, flags, sequence, port 0), then `body`.
fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    out.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
    out
}

/// `RTM_NEWADDR`: the address on interface `index`, replacing an equal one.
pub fn new_address(seq: u32, index: u32, a: InterfaceAddress) -> Vec<u8> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut body = vec![family(a.addr), a.prefix, 0, RT_SCOPE_UNIVERSE];
    body.extend_from_slice(&index.to_ne_bytes());
    attribute(&mut body, IFA_LOCAL, &octets(a.addr));
    attribute(&mut body, IFA_ADDRESS, &octets(a.addr));
    message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq, &body)
}

/// `RTM_NEWROUTE`: the default route through `gateway` in the main table.
pub fn default_route(seq: u32, gateway: IpAddr) -> Vec<u8> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut body = vec![
        family(gateway),
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ];
    body.extend_from_slice(&0u32.to_ne_bytes());
    attribute(&mut body, RTA_GATEWAY, &octets(gateway));
    message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, &body)
}

/// The outcome an acknowledgement carries for request `seq`: `Ok` for error code 0,
/// the errno otherwise; `None` when the bytes are not that acknowledgement.
pub fn parse_ack(reply: &[u8], seq: u32) -> Option<Result<(), i32>> {
    let header = reply.get(..NLMSG_HDRLEN + 4)?;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    let got_seq = u32::from_ne_bytes(header[8..12].try_into().ok()?);
    if kind != NLMSG_ERROR || got_seq != seq {
        return None;
    }
    let code = i32::from_ne_bytes(header[16..20].try_into().ok()?);
    Some(if code == 0 { Ok(()) } else { Err(-code) })
}

/// Sends one request on a fresh `NETLINK_ROUTE` socket and waits for its acknowledgement.
pub fn transact(request: &[u8], seq: u32) -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: sockaddr_nl is plain data; zero is the kernel as destination.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: the buffer and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd,
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; ACK_BUFFER];
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        match parse_ack(&buf[..n as usize], seq) {
            Some(Ok(())) => return Ok(()),
            Some(Err(errno)) => return Err(io::Error::from_raw_os_error(errno)),
            None => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_message_bytes() {
        let a = InterfaceAddress {
            addr: "10.0.2.15".parse().unwrap(),
            prefix: 24,
        };
        let m = new_address(7, 2, a);
        assert_eq!(m.len(), 16 + 8 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWADDR);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x505);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 2);
        assert_eq!(&m[26..28], &IFA_LOCAL.to_ne_bytes());
        assert_eq!(&m[28..32], &[10, 0, 2, 15]);
        assert_eq!(&m[36..40], &[10, 0, 2, 15]);
    }

    #[test]
    fn route_message_bytes_for_both_families() {
        let m = default_route(1, "10.0.2.2".parse().unwrap());
        assert_eq!(m.len(), 16 + 12 + 8);
        assert_eq!(&m[16..24], &[2, 0, 0, 0, 254, 3, 0, 1]);
        assert_eq!(&m[32..36], &[10, 0, 2, 2]);
        let m = default_route(1, "fe80::1".parse().unwrap());
        assert_eq!(m.len(), 16 + 12 + 20);
        assert_eq!(m[16], libc::AF_INET6 as u8);
    }

    #[test]
    fn acknowledgements() {
        let ack = |seq: u32, code: i32| {
            let mut m = message(NLMSG_ERROR, 0, seq, &code.to_ne_bytes());
            m.extend_from_slice(&[0; 16]);
            m
        };
        assert_eq!(parse_ack(&ack(5, 0), 5), Some(Ok(())));
        assert_eq!(parse_ack(&ack(5, -17), 5), Some(Err(17)));
        assert_eq!(parse_ack(&ack(4, 0), 5), None);
        assert_eq!(parse_ack(&ack(5, 0)[..10], 5), None);
        assert_eq!(parse_ack(&message(RTM_NEWADDR, 0, 5, &[0; 8]), 5), None);
    }
}
