//! The `Received:` trace header we prepend to every accepted message (RFC 5321 §4.4).

use std::net::IpAddr;

/// What the trace header records about one accepted message.
pub struct Trace<'a> {
    /// The name the client gave in HELO/EHLO.
    pub helo: &'a str,
    pub client_ip: IpAddr,
    /// The client's verified reverse-DNS name, when known.
    pub client_name: Option<&'a str>,
    /// Our own host name.
    pub by: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA` or `ESMTPSA` (RFC 3848).
    pub protocol: &'a str,
    /// TLS version and cipher, e.g. `TLSv1.3 TLS13_AES_256_GCM_SHA384`.
    pub tls: Option<&'a str>,
    pub id: &'a str,
    /// Named only when the message has one recipient, so others stay private.
    pub for_rcpt: Option<&'a str>,
    /// RFC 5322 date-time.
    pub date: &'a str,
}

/// Longest HELO name copied into the header; it was checked by the session already.
const MAX_HELO_IN_HEADER: usize = 255;
/// Room the field is built in at first: a usual one (host names, an address, the TLS
/// cipher, a recipient, a date) fits without growing it.
const HEADER_ROOM: usize = 384;

impl Trace<'_> {
    /// The header field, folded, ending in CRLF.
    pub fn header(&self) -> String {
        use std::fmt::Write as _;
        let mut h = String::with_capacity(HEADER_ROOM);
        h.push_str("Received: from ");
        h.extend(
            self.helo
                .chars()
                .filter(|c| !c.is_control() && *c != '(' && *c != ')')
                .take(MAX_HELO_IN_HEADER),
        );
        let v6 = if self.client_ip.is_ipv6() {
            "IPv6:"
        } else {
            ""
        };
        // Writing into a String cannot fail.
        let _ = write!(
            h,
            " ({} [{v6}{}])\r\n\tby {} (drawbridge) with {}",
            self.client_name.unwrap_or("unknown"),
            self.client_ip,
            self.by,
            self.protocol
        );
        if let Some(tls) = self.tls {
            let _ = write!(h, " ({tls})");
        }
        let _ = write!(h, " id {}", self.id);
        if let Some(rcpt) = self.for_rcpt {
            let _ = write!(h, "\r\n\tfor <{rcpt}>");
        }
        let _ = write!(h, ";\r\n\t{}\r\n", self.date);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_shape() {
        let t = Trace {
            helo: "client.example.org",
            client_ip: "192.0.2.7".parse().unwrap(),
            client_name: None,
            by: "gw.example.com",
            protocol: "ESMTP",
            tls: None,
            id: "18E0F3A2C41B07",
            for_rcpt: Some("a@example.com"),
            date: "Sat, 21 Nov 2026 21:41:41 +0000",
        };
        assert_eq!(
            t.header(),
            "Received: from client.example.org (unknown [192.0.2.7])\r\n\tby gw.example.com \
             (drawbridge) with ESMTP id 18E0F3A2C41B07\r\n\tfor <a@example.com>;\r\n\t\
             Sat, 21 Nov 2026 21:41:41 +0000\r\n"
        );
    }

    #[test]
    fn hostile_helo_cannot_break_the_header() {
        let t = Trace {
            helo: "evil\r\nX-Injected: 1 (x)",
            client_ip: "2001:db8::1".parse().unwrap(),
            client_name: Some("h.example.org"),
            by: "gw",
            protocol: "SMTP",
            tls: Some("TLSv1.3 TLS13_AES_128_GCM_SHA256"),
            id: "1",
            for_rcpt: None,
            date: "d",
        };
        let h = t.header();
        assert!(
            h.starts_with("Received: from evilX-Injected: 1 x (h.example.org [IPv6:2001:db8::1])")
        );
        assert!(h.contains("with SMTP (TLSv1.3 TLS13_AES_128_GCM_SHA256) id 1;"));
        assert_eq!(h.matches("\r\n").count(), 3);
    }
}
