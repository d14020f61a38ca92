//! The DNS resolver against a real dnsmasq on loopback, and against small responders
//! written here for what dnsmasq cannot be made to do (TC, silence, counting, SERVFAIL).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

mod common;

use common::{Dnsmasq, free_udp_and_tcp_port};
use drawbridge::io::resolver::{MxAnswer, Resolver};
use drawbridge::proto::dns::{DnsError, Name, RecordType, ResolverOptions};

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

fn options(timeout_ms: u64, cache_entries: usize) -> ResolverOptions {
    ResolverOptions {
        timeout: Duration::from_millis(timeout_ms),
        attempts: 4,
        cache_entries,
    }
}

/// Where the question of a query ends (after QTYPE and QCLASS).
fn question_end(query: &[u8]) -> usize {
    let mut pos = 12;
    while query[pos] != 0 {
        pos += 1 + usize::from(query[pos]);
    }
    pos + 5
}

fn question_type(query: &[u8]) -> u16 {
    let end = question_end(query);
    u16::from_be_bytes([query[end - 4], query[end - 3]])
}

/// A response to `query` echoing its id and question, with `rcode`, TC as given and
/// answer records `(type, ttl, rdata)` owned by the question name.
fn respond(query: &[u8], rcode: u8, tc: bool, answers: &[(u16, u32, Vec<u8>)]) -> Vec<u8> {
    let end = question_end(query);
    let mut out = query[..2].to_vec();
    out.push(0x81 | if tc { 0x02 } else { 0 });
    out.push(0x80 | rcode);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..end]);
    for (rtype, ttl, rdata) in answers {
        out.extend_from_slice(&[0xc0, 12]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    out
}

/// MX RDATA: preference and an uncompressed exchange.
fn mx_rdata(preference: u16, exchange: &str) -> Vec<u8> {
    let mut out = preference.to_be_bytes().to_vec();
    name(exchange).write_wire(&mut out);
    out
}

type Behaviour = dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync;

/// A UDP (and optionally TCP, same port) responder on a thread; counts queries.
struct Responder {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Responder {
    /// `udp` answers datagrams (`None`: stay silent); `tcp`, if given, answers queries
    /// on a TCP listener at the same port.
    fn start(udp: Box<Behaviour>, tcp: Option<Box<Behaviour>>) -> Responder {
        let port = free_udp_and_tcp_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let socket = UdpSocket::bind(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        {
            let stop = stop.clone();
            let count = udp_queries.clone();
            threads.push(std::thread::spawn(move || {
                let mut buffer = [0u8; 1500];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, from)) = socket.recv_from(&mut buffer) else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Some(reply) = udp(&buffer[..n]) {
                        let _ = socket.send_to(&reply, from);
                    }
                }
            }));
        }
        if let Some(tcp) = tcp {
            let listener = TcpListener::bind(addr).unwrap();
            listener.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            let count = tcp_queries.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((mut conn, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    serve_tcp(&mut conn, &*tcp, &count);
                }
            }));
        }
        Responder {
            addr,
            udp_queries,
            tcp_queries,
            stop,
            threads,
        }
    }

    fn udp_queries(&self) -> usize {
        self.udp_queries.load(Ordering::SeqCst)
    }

    fn tcp_queries(&self) -> usize {
        self.tcp_queries.load(Ordering::SeqCst)
    }
}

fn serve_tcp(conn: &mut TcpStream, behaviour: &Behaviour, count: &AtomicUsize) {
    let mut prefix = [0u8; 2];
    while conn.read_exact(&mut prefix).is_ok() {
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        if conn.read_exact(&mut query).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        let Some(reply) = behaviour(&query) else {
            return;
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        // Written in two parts to exercise reassembly.
        let (a, b) = framed.split_at(framed.len() / 2);
        if conn.write_all(a).is_err() || conn.flush().is_err() || conn.write_all(b).is_err() {
            return;
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn exchanges(answer: MxAnswer) -> Vec<(u16, String)> {
    match answer {
        MxAnswer::Exchanges(list) => list
            .into_iter()
            .map(|mx| (mx.preference, mx.exchange.to_string()))
            .collect(),
        other => panic!("expected exchanges, got {other:?}"),
    }
}

#[test]
fn mx_sorted_by_preference() {
    let dns = Dnsmasq::start(&[
        "--mx-host=order.test,mx30.order.test,30",
        "--mx-host=order.test,mx10.order.test,10",
        "--mx-host=order.test,mx20.order.test,20",
    ]);
    let resolver = Resolver::new(vec![dns.addr], ResolverOptions::default());
    let answer = smol::block_on(resolver.lookup_mx(&name("Order.Test."))).unwrap();
    assert_eq!(
        exchanges(answer),
        vec![
            (10, "mx10.order.test".to_string()),
            (20, "mx20.order.test".to_string()),
            (30, "mx30.order.test".to_string()),
        ]
    );
}

#[test]
fn equal_preferences_are_shuffled() {
    let dns = Dnsmasq::start(&[
        "--mx-host=eq.test,a.eq.test,10",
        "--mx-host=eq.test,b.eq.test,10",
        "--mx-host=eq.test,c.eq.test,20",
    ]);
    // No cache: every lookup reaches dnsmasq, which gives one fixed order.
    let resolver = Resolver::new(vec![dns.addr], options(2000, 0));
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..40 {
        let list = exchanges(smol::block_on(resolver.lookup_mx(&name("eq.test"))).unwrap());
        assert_eq!(list.len(), 3);
        assert_eq!(list[2], (20, "c.eq.test".to_string()));
        firsts.insert(list[0].1.clone());
    }
    // Both orders appear; the chance of 40 identical draws is 2^-39.
    assert_eq!(firsts.len(), 2, "{firsts:?}");
}

#[test]
fn no_mx_falls_back_to_addresses() {
    let dns = Dnsmasq::start(&["--host-record=plain.test,192.0.2.7,2001:db8::7"]);
    let resolver = Resolver::new(vec![dns.addr], ResolverOptions::default());
    let host = name("plain.test");
    assert_eq!(
        smol::block_on(resolver.lookup_mx(&host)),
        Ok(MxAnswer::NoMx)
    );
    let addresses = smol::block_on(resolver.lookup_ip(&host)).unwrap();
    assert_eq!(
        addresses,
        vec![
            "192.0.2.7".parse::<IpAddr>().unwrap(),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        ]
    );
}

#[test]
fn null_mx() {
    let dns = Dnsmasq::start(&["--mx-host=nullmx.test,.,0"]);
    let resolver = Resolver::new(vec![dns.addr], ResolverOptions::default());
    assert_eq!(
        smol::block_on(resolver.lookup_mx(&name("nullmx.test"))),
        Ok(MxAnswer::NullMx)
    );
}

#[test]
fn nxdomain_is_permanent() {
    let dns = Dnsmasq::start(&["--host-record=exists.test,192.0.2.1"]);
    let resolver = Resolver::new(vec![dns.addr], ResolverOptions::default());
    let missing = name("missing.test");
    let error = smol::block_on(resolver.lookup_mx(&missing)).unwrap_err();
    assert_eq!(error, DnsError::NxDomain);
    assert!(error.is_permanent());
    assert_eq!(
        smol::block_on(resolver.lookup_ip(&missing)),
        Err(DnsError::NxDomain)
    );
}

#[test]
fn cname_followed() {
    let dns = Dnsmasq::start(&[
        "--host-record=real.test,192.0.2.8",
        "--cname=alias.test,real.test",
    ]);
    let resolver = Resolver::new(vec![dns.addr], ResolverOptions::default());
    assert_eq!(
        smol::block_on(resolver.lookup_ip(&name("alias.test"))),
        Ok(vec!["192.0.2.8".parse::<IpAddr>().unwrap()])
    );
}

#[test]
fn ptr_lookup() {
    let dns = Dnsmasq::start(&[
        "--ptr-record=25.2.0.192.in-addr.arpa,mail.example.test",
        "--ptr-record=5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa,mail6.example.test",
    ]);
    let resolver = Resolver::new(vec![dns.addr], ResolverOptions::default());
    assert_eq!(
        smol::block_on(resolver.lookup_ptr("192.0.2.25".parse().unwrap())),
        Ok(vec![name("mail.example.test")])
    );
    assert_eq!(
        smol::block_on(resolver.lookup_ptr("2001:db8::25".parse().unwrap())),
        Ok(vec![name("mail6.example.test")])
    );
    assert_eq!(
        smol::block_on(resolver.lookup_ptr("192.0.2.26".parse().unwrap())),
        Err(DnsError::NxDomain)
    );
}

#[test]
fn silent_server_then_second_server() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = Dnsmasq::start(&["--mx-host=second.test,mx.second.test,5"]);
    let resolver = Resolver::new(
        vec![silent.local_addr().unwrap(), dns.addr],
        options(300, 0),
    );
    let answer = smol::block_on(resolver.lookup_mx(&name("second.test"))).unwrap();
    assert_eq!(exchanges(answer), vec![(5, "mx.second.test".to_string())]);
    // The first server was asked first.
    silent.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 512];
    let (n, _) = silent
        .recv_from(&mut buffer)
        .expect("query at the silent server");
    assert_eq!(question_type(&buffer[..n]), RecordType::MX.0);
}

#[test]
fn all_servers_silent_is_a_timeout() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = Resolver::new(vec![silent.local_addr().unwrap()], options(100, 0));
    let error = smol::block_on(resolver.lookup_mx(&name("nowhere.test"))).unwrap_err();
    assert_eq!(error, DnsError::Timeout);
    assert!(!error.is_permanent());
}

#[test]
fn servfail_then_second_server() {
    let failing = Responder::start(Box::new(|q: &[u8]| Some(respond(q, 2, false, &[]))), None);
    let dns = Dnsmasq::start(&["--mx-host=sf.test,mx.sf.test,1"]);
    let resolver = Resolver::new(vec![failing.addr, dns.addr], options(2000, 0));
    let answer = smol::block_on(resolver.lookup_mx(&name("sf.test"))).unwrap();
    assert_eq!(exchanges(answer), vec![(1, "mx.sf.test".to_string())]);
    assert_eq!(failing.udp_queries(), 1);
    // Only the failing server: the failure is reported, and it is temporary.
    let resolver = Resolver::new(vec![failing.addr], options(2000, 0));
    let error = smol::block_on(resolver.lookup_mx(&name("sf.test"))).unwrap_err();
    assert!(matches!(error, DnsError::ServerFailure(_)), "{error:?}");
    assert!(!error.is_permanent());
}

#[test]
fn truncated_answer_retried_over_tcp() {
    let big = |q: &[u8]| {
        let records: Vec<(u16, u32, Vec<u8>)> = (0..3)
            .map(|i| (15, 60, mx_rdata(10 * (i + 1), &format!("mx{i}.tc.test"))))
            .collect();
        Some(respond(q, 0, false, &records))
    };
    let responder = Responder::start(
        Box::new(|q: &[u8]| Some(respond(q, 0, true, &[]))),
        Some(Box::new(big)),
    );
    let resolver = Resolver::new(vec![responder.addr], options(2000, 0));
    let answer = smol::block_on(resolver.lookup_mx(&name("tc.test"))).unwrap();
    assert_eq!(
        exchanges(answer),
        vec![
            (10, "mx0.tc.test".to_string()),
            (20, "mx1.tc.test".to_string()),
            (30, "mx2.tc.test".to_string()),
        ]
    );
    assert_eq!(responder.udp_queries(), 1);
    assert_eq!(responder.tcp_queries(), 1);
}

#[test]
fn cache_hit_does_not_reach_the_server() {
    let responder = Responder::start(
        Box::new(|q: &[u8]| {
            let end = question_end(q);
            let cached = b"\x06cached\x04test\x00";
            if q[12..end - 4].eq_ignore_ascii_case(cached) {
                Some(respond(
                    q,
                    0,
                    false,
                    &[(15, 300, mx_rdata(10, "mx.cached.test"))],
                ))
            } else {
                Some(respond(q, 3, false, &[]))
            }
        }),
        None,
    );
    let resolver = Resolver::new(vec![responder.addr], options(2000, 100));
    let domain = name("cached.test");
    for _ in 0..3 {
        let answer = smol::block_on(resolver.lookup_mx(&domain)).unwrap();
        assert_eq!(exchanges(answer), vec![(10, "mx.cached.test".to_string())]);
    }
    assert_eq!(responder.udp_queries(), 1);
    // NXDOMAIN is cached too (no SOA: the default negative TTL).
    let gone = name("gone.test");
    for _ in 0..3 {
        assert_eq!(
            smol::block_on(resolver.lookup_mx(&gone)),
            Err(DnsError::NxDomain)
        );
    }
    assert_eq!(responder.udp_queries(), 2);
    // A resolver without a cache asks every time.
    let uncached = Resolver::new(vec![responder.addr], options(2000, 0));
    for _ in 0..2 {
        smol::block_on(uncached.lookup_mx(&domain)).unwrap();
    }
    assert_eq!(responder.udp_queries(), 4);
}
