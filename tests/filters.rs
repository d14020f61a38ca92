//! Access filters at the door, through the gateway: address patterns, names from a real
//! DNS server (dnsmasq) with forward confirmation (DNSSPOOFER), and the compact form.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// The first reply a client at `src` gets from `port`.
fn greeting(port: u16, src: &str) -> String {
    let socket = std::net::TcpListener::bind((src, 0)).unwrap();
    drop(socket);
    let out = python(&format!(
        r#"
import socket
s = socket.create_connection(("127.0.0.1", {port}), timeout=30, source_address=("{src}", 0))
print(s.recv(200).decode().strip())
"#
    ));
    out.trim().to_string()
}

#[test]
fn allow_then_deny_filters_decide_by_address() {
    let dir = TempDir::new("filters-addr");
    let gw = Gateway::start(
        dir.path(),
        "set service inbound allow-filter \"smtp: 127.0.0.2, 127.0.0.8/255.255.255.248 EXCEPT 127.0.0.9\"\n\
         set service inbound deny-filter \"smtp: ALL\"\n",
    );
    assert!(greeting(gw.inbound, "127.0.0.2").starts_with("220 "));
    assert!(greeting(gw.inbound, "127.0.0.10").starts_with("220 "));
    assert_eq!(greeting(gw.inbound, "127.0.0.9"), "554 5.7.1 Access denied");
    assert_eq!(greeting(gw.inbound, "127.0.0.3"), "554 5.7.1 Access denied");
    // The log names the statement that refused, as the administrator wrote it.
    gw.wait_for_log(
        "reject: CONNECT from unknown[127.0.0.3]: 554 5.7.1 access denied by deny-filter \"smtp: ALL\"",
    );
    // The outbound service has no filters.
    let _ = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], gw.outbound)),
        Duration::from_secs(5),
    )
    .unwrap();
}

#[test]
fn names_come_from_dns_and_spoofers_are_caught() {
    let dir = TempDir::new("filters-dns");
    // 127.0.0.4 is good.test both ways; 127.0.0.5 claims liar.test, which does not
    // point back; 127.0.0.6 has no name at all.
    let dns = Dnsmasq::start(&[
        "--ptr-record=4.0.0.127.in-addr.arpa,good.test",
        "--host-record=good.test,127.0.0.4",
        "--ptr-record=5.0.0.127.in-addr.arpa,liar.test",
        "--host-record=liar.test,127.0.0.99",
    ]);
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set system dns resolver {}\n\
             set service inbound access-filter \"-smtp: DNSSPOOFER$-smtp: UNKNOWN$-smtp: ALL EXCEPT .test\"\n",
            dns.addr
        ),
    );
    assert!(greeting(gw.inbound, "127.0.0.4").starts_with("220 "));
    assert_eq!(greeting(gw.inbound, "127.0.0.5"), "554 5.7.1 Access denied");
    assert_eq!(greeting(gw.inbound, "127.0.0.6"), "554 5.7.1 Access denied");
    drop(gw);
    // Allowing by name: a name that does not point back is no name to allow by, or
    // whoever writes their own PTR record would be let in.
    let dir = TempDir::new("filters-dns-allow");
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set system dns resolver {}
             set service inbound allow-filter \"smtp: .test\"
             set service inbound deny-filter \"smtp: ALL\"
",
            dns.addr
        ),
    );
    assert!(greeting(gw.inbound, "127.0.0.4").starts_with("220 "));
    assert_eq!(greeting(gw.inbound, "127.0.0.5"), "554 5.7.1 Access denied");
}

/// On a dual-stack listener an IPv4 client comes as `::ffff:a.b.c.d`; its rules, its
/// name (a PTR record in in-addr.arpa) and the logs are still those of its IPv4
/// address.
#[test]
fn an_ipv4_client_of_a_dual_stack_listener_is_judged_by_its_ipv4_address() {
    let dir = TempDir::new("filters-dual-stack");
    let dns = Dnsmasq::start(&[
        "--ptr-record=4.0.0.127.in-addr.arpa,good.test",
        "--host-record=good.test,127.0.0.4",
    ]);
    let port = free_port();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set system dns resolver {}\n\
             set service inbound listen [::]:{port}\n\
             set service inbound allow-filter \"smtp: .test 127.0.0.2\"\n\
             set service inbound deny-filter \"smtp: ALL\"\n",
            dns.addr
        ),
    );
    assert!(greeting(port, "127.0.0.2").starts_with("220 "));
    assert!(greeting(port, "127.0.0.4").starts_with("220 "));
    assert_eq!(greeting(port, "127.0.0.7"), "554 5.7.1 Access denied");
    gw.wait_for_log("reject: CONNECT from unknown[127.0.0.7]");
}

/// An RFC 1413 server on `ip`:113 that names every connection's user `user`.
fn ident_server(ip: &str, user: &'static str) -> std::net::TcpListener {
    let listener =
        std::net::TcpListener::bind((ip, 113)).expect("bind port 113 (tests run as root)");
    let l = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(
                &mut std::io::BufReader::new(conn.try_clone().unwrap()),
                &mut line,
            );
            let ports = line.trim();
            let _ = std::io::Write::write_all(
                &mut conn,
                format!("{ports} : USERID : UNIX : {user}\r\n").as_bytes(),
            );
        }
    });
    listener
}

#[test]
fn ident_users_are_asked_only_when_a_rule_names_one() {
    let dir = TempDir::new("filters-ident");
    let _ident = ident_server("127.0.0.7", "mallory");
    let gw = Gateway::start(
        dir.path(),
        "set service inbound deny-filter \"smtp: mallory@ALL\"\n",
    );
    assert_eq!(greeting(gw.inbound, "127.0.0.7"), "554 5.7.1 Access denied");
    // No ident server on 127.0.0.8: the user is unknown and the rule does not match.
    assert!(greeting(gw.inbound, "127.0.0.8").starts_with("220 "));
}
