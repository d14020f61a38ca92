//! Listening sockets: accept, read a load balancer's PROXY header where the service
//! expects one, classify, enforce the per-service connection limits, and start a
//! session for each client that gets in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use smol::channel::{Receiver, Sender, bounded};
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::context::Context;
use crate::proto::config::{Classification, ServiceName};
use crate::proto::filter::Decision;
use crate::proto::logtext::{Escaped, Peer};
use crate::proto::proxy::{Header, HeaderError, HeaderReader};
use crate::proto::smtp::reply::Reply;

use super::{access, session};
use crate::io::runtime::timer_at;

/// The service name access filters know SMTP by (`smtp: …`), as in the seeds.
pub const FILTER_SERVICE: &str = "smtp";

/// A descriptor held back so that a client can still be told 421 when the process is out
/// of descriptors: when `accept` fails with EMFILE or ENFILE, it is given up, the waiting
/// client accepted, refused and closed, and the descriptor taken again. Without it the
/// client would hang in the listen queue with no answer.
struct Reserve(Option<std::fs::File>);

impl Reserve {
    fn take() -> Reserve {
        Reserve(std::fs::File::open("/").ok())
    }

    /// Out of descriptors: refuses one waiting client with the descriptor held back;
    /// whether there was one to refuse.
    fn refuse_one(&mut self, listener: &Async<TcpListener>, host: &str) -> bool {
        self.0 = None;
        let refused = listener.get_ref().accept();
        let accepted = refused.is_ok();
        if let Ok((mut stream, peer)) = refused {
            let reply = Reply::new(
                421,
                "4.3.2",
                format!("{host} Error: out of resources, try again later"),
            );
            // A fresh socket takes a short reply whole; it is closed either way.
            let _ = std::io::Write::write_all(&mut stream, &reply.to_wire());
            log::warn!(target: "smtpd", "out of file descriptors: refusing {}", Peer { name: None, addr: peer });
        }
        *self = Reserve::take();
        accepted && self.0.is_some()
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// How long we try to deliver a refusal to a client we will not serve.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (for example out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Whether a service is near its connection limit (under stress: Postfix's stress mode),
/// and a signal its sessions wait on to learn when that changes.
pub struct Stress {
    service: ServiceName,
    on: Cell<bool>,
    /// Closed and replaced whenever `on` changes: every session waiting on it wakes.
    signal: RefCell<(Sender<()>, Receiver<()>)>,
}

impl Stress {
    pub fn new(service: ServiceName) -> Stress {
        Stress {
            service,
            on: Cell::new(false),
            signal: RefCell::new(bounded(1)),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.get()
    }

    /// A receiver whose `recv` returns (with an error) once the state changes.
    pub fn changed(&self) -> Receiver<()> {
        self.signal.borrow().1.clone()
    }

    fn set(&self, on: bool, open: u32, threshold: u32) {
        if on == self.on.get() {
            return;
        }
        self.on.set(on);
        let (old, _) = std::mem::replace(&mut *self.signal.borrow_mut(), bounded(1));
        old.close();
        if on {
            log::warn!(target: "smtpd", "{} service under stress: {open} connections, stress threshold {threshold}: every session's timeouts shortened", self.service);
        } else {
            log::info!(target: "smtpd", "{} service no longer under stress: {open} connections", self.service);
        }
    }
}

/// Open connections of one service, in total and per client address.
pub struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
    /// Connections at which the service is under stress.
    stress_at: u32,
    pub stress: Rc<Stress>,
}

impl Counts {
    pub fn new(service: ServiceName) -> Counts {
        Counts {
            total: 0,
            per_ip: HashMap::new(),
            stress_at: u32::MAX,
            stress: Rc::new(Stress::new(service)),
        }
    }

    fn update_stress(&self) {
        self.stress
            .set(self.total >= self.stress_at, self.total, self.stress_at);
    }
}

/// The connection count at which a service with `max` connections and a threshold of
/// `percent` is under stress: at least 1.
pub fn stress_threshold(max: u32, percent: u32) -> u32 {
    let at = u64::from(max) * u64::from(percent.min(100)) / 100;
    u32::try_from(at).unwrap_or(u32::MAX).max(1)
}

impl Counts {
    /// Open connections in all.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Open connections by client address.
    pub fn per_ip(&self) -> Vec<(IpAddr, u32)> {
        self.per_ip.iter().map(|(ip, n)| (*ip, *n)).collect()
    }
}

/// A counted connection; dropping it gives the place back. A balancer's connection holds
/// a place in the total while its PROXY header is read (`ip` is `None`); the client the
/// header names is then counted by its address.
struct Slot {
    counts: Rc<RefCell<Counts>>,
    ip: Option<IpAddr>,
}

impl Slot {
    /// Takes a place in `counts` for a connection from `ip`, `None` while unknown.
    fn take(counts: &Rc<RefCell<Counts>>, ip: Option<IpAddr>, stress_at: u32) -> Slot {
        let mut c = counts.borrow_mut();
        c.total += 1;
        if let Some(ip) = ip {
            *c.per_ip.entry(ip).or_insert(0) += 1;
        }
        c.stress_at = stress_at;
        c.update_stress();
        Slot {
            counts: counts.clone(),
            ip,
        }
    }

    /// Counts the place held so far by the client's address, once it is known.
    fn name_client(&mut self, ip: IpAddr) {
        if self.ip.is_none() {
            *self.counts.borrow_mut().per_ip.entry(ip).or_insert(0) += 1;
            self.ip = Some(ip);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.borrow_mut();
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = c.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
        c.update_stress();
    }
}

/// Accepts connections on `listener` for `service` until the process ends.
pub async fn accept_loop(
    gw: Rc<Context>,
    service: ServiceName,
    listener: Async<TcpListener>,
    counts: Rc<RefCell<Counts>>,
    implicit_tls: bool,
) {
    let local = listener.get_ref().local_addr().ok();
    let mut reserve = Reserve::take();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) if out_of_descriptors(&e) => {
                if !reserve.refuse_one(&listener, &gw.config().system.host_name) {
                    Timer::after(ACCEPT_BACKOFF).await;
                }
                continue;
            }
            Err(e) => {
                log::warn!(target: "smtpd", "accept on {service}: {e}");
                Timer::after(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.get_ref().set_nodelay(true);
        // An IPv4 client of a dual-stack listener comes as `::ffff:a.b.c.d`: it is that
        // IPv4 address for classification, limits, filters and the logs, as Postfix
        // writes it.
        let peer = canonical(peer);
        let local = stream.get_ref().local_addr().ok().or(local).map(canonical);
        let accepted = Accepted {
            service,
            local,
            implicit_tls,
        };
        let running = gw.running();
        let limits = running.config.service(service);
        if !limits.expects_proxy_header(peer.ip()) {
            let client = Client::Named(peer);
            admit(&gw, &counts, accepted, stream, client, None, Vec::new());
            continue;
        }
        // A load balancer's connection: it holds a place in the service's total while
        // its header is read (within its own deadline), then is admitted as the client
        // the header names, by that client's address.
        if counts.borrow().total >= limits.max_connections {
            let text = format!(
                "{} Error: too many connections",
                running.config.system.host_name
            );
            log::warn!(target: "smtpd", "{text}: refusing {}", Peer { name: None, addr: peer });
            crate::proto::stats::rejected(service, "CONNECT", 421, Some("4.7.0"));
            refuse(&gw, stream, Reply::new(421, "4.7.0", text));
            continue;
        }
        let stress_at = stress_threshold(limits.max_connections, limits.stress_threshold);
        let pending = Slot::take(&counts, None, stress_at);
        let (gw2, counts) = (gw.clone(), counts.clone());
        gw.executor
            .spawn(async move {
                let mut stream = stream;
                let Some((client, already_read)) =
                    Box::pin(read_proxy_header(&mut stream, peer)).await
                else {
                    return;
                };
                admit(
                    &gw2,
                    &counts,
                    accepted,
                    stream,
                    client,
                    Some(pending),
                    already_read,
                );
            })
            .detach();
    }
}

/// Who a connection is from.
#[derive(Clone, Copy)]
enum Client {
    /// This address: the peer's, or the client a load balancer's header names.
    Named(SocketAddr),
    /// Someone a load balancer at this address relays without naming (PROXY `UNKNOWN`,
    /// or a version-2 client with no IP address): served as a client that no `classify`
    /// rule matches, counted and logged by the balancer's address.
    Unnamed(SocketAddr),
}

/// `addr` with an IPv4-mapped IPv6 address as the IPv4 address it maps.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Where a connection came in.
#[derive(Clone, Copy)]
struct Accepted {
    service: ServiceName,
    local: Option<SocketAddr>,
    implicit_tls: bool,
}

/// Reading buffer for a PROXY header: a whole v1 line, or a v2 header in a few reads.
const PROXY_READ: usize = 512;

/// Reads a load balancer's PROXY header (see [`crate::proto::proxy`]) within
/// [`HEADER_TIMEOUT`](crate::proto::proxy::HEADER_TIMEOUT): the client it names (the balancer
/// itself for its own connections, unnamed for those it does not say) and the octets
/// that followed the header. `None` when the connection is to be closed without a word:
/// the reason is logged here.
async fn read_proxy_header(
    stream: &mut Async<TcpStream>,
    balancer: SocketAddr,
) -> Option<(Client, Vec<u8>)> {
    let mut reader = HeaderReader::new(Instant::now());
    let mut buf = vec![0u8; PROXY_READ];
    loop {
        match reader.poll_outcome() {
            Some(Ok(received)) => {
                let client = match received.header {
                    Header::Relayed { client, .. } => {
                        log::debug!(target: "smtpd", "PROXY {} header from {balancer}: client {client}", received.version);
                        Client::Named(client)
                    }
                    Header::Local => {
                        log::debug!(target: "smtpd", "PROXY {} header from {balancer}: the balancer's own connection", received.version);
                        Client::Named(balancer)
                    }
                    Header::Unknown => {
                        log::info!(target: "smtpd", "PROXY {} header from {balancer}: a client it does not name, served unclassified", received.version);
                        Client::Unnamed(balancer)
                    }
                };
                return Some((client, received.after));
            }
            Some(Err(error)) => {
                if error == HeaderError::Closed(0) {
                    log::info!(target: "smtpd", "PROXY header from {balancer} refused: {error}");
                } else {
                    log::warn!(target: "smtpd", "PROXY header from {balancer} refused: {error}; closed without a greeting");
                }
                return None;
            }
            None => {}
        }
        let read = async { Some(stream.read(&mut buf).await) };
        let timeout = async {
            timer_at(reader.poll_timeout()).await;
            None
        };
        match read.or(timeout).await {
            Some(Ok(0)) | Some(Err(_)) => reader.handle_end(),
            Some(Ok(n)) => reader.handle_input(&buf[..n]),
            None => reader.handle_timeout(Instant::now()),
        }
    }
}

/// Admits a connection from `client`, the peer itself or the one a balancer's PROXY
/// header named: classification, the connection limits, the access filters, then the
/// session, which is given `already_read` first. `pending` is the place a balancer's
/// connection held while its header was read.
fn admit(
    gw: &Rc<Context>,
    counts: &Rc<RefCell<Counts>>,
    accepted: Accepted,
    stream: Async<TcpStream>,
    client: Client,
    pending: Option<Slot>,
    already_read: Vec<u8>,
) {
    let Accepted {
        service,
        local,
        implicit_tls,
    } = accepted;
    let running = gw.running();
    let config = &running.config;
    let host = config.system.host_name.clone();
    let (peer, named) = match client {
        Client::Named(addr) => (addr, true),
        Client::Unnamed(balancer) => (balancer, false),
    };
    let category = local.filter(|_| named).map(|l| config.classify(l, peer));
    let category_name = match category {
        Some(Classification::Category(c)) => Some(c.to_string()),
        _ => None,
    };
    if let Some(Classification::Deny(text)) = category {
        log::info!(target: "smtpd", "reject: CONNECT from {}: 554 5.7.1 {text}", Peer { name: None, addr: peer });
        crate::proto::stats::rejected(service, "CONNECT", 554, Some("5.7.1"));
        refuse(gw, stream, Reply::new(554, "5.7.1", text.to_string()));
        return;
    }
    let limits = config.service(service);
    let refusal = {
        let c = counts.borrow();
        // A balancer's connection was held to the total when it came in.
        if pending.is_none() && c.total >= limits.max_connections {
            Some(format!("{host} Error: too many connections"))
        } else if c.per_ip.get(&peer.ip()).copied().unwrap_or(0) >= limits.max_connections_per_ip {
            Some(format!(
                "{host} Error: too many connections from {}",
                peer.ip()
            ))
        } else {
            None
        }
    };
    if let Some(text) = refusal {
        log::warn!(target: "smtpd", "{text}: refusing {}", Peer { name: None, addr: peer });
        crate::proto::stats::rejected(service, "CONNECT", 421, Some("4.7.0"));
        refuse(gw, stream, Reply::new(421, "4.7.0", text));
        return;
    }
    let stress_at = stress_threshold(limits.max_connections, limits.stress_threshold);
    let slot = match pending {
        Some(mut slot) => {
            slot.name_client(peer.ip());
            slot
        }
        None => Slot::take(counts, Some(peer.ip()), stress_at),
    };
    let stress = counts.borrow().stress.clone();
    let gw2 = gw.clone();
    gw.executor
        .spawn(async move {
            // Big futures (name lookups, the session itself) are boxed: the task then
            // costs only what its state needs, not the largest state of every future
            // it might wait on (10 000 idle sessions: see the README).
            if let (Some(filter), Some(local)) = (running.filter(service), local) {
                let decision = Box::pin(access::decide(
                    filter,
                    FILTER_SERVICE,
                    local,
                    peer,
                    running.resolver.as_deref(),
                ))
                .await;
                if let Decision::Denied { rule } = decision {
                    let source = running
                        .config
                        .service(service)
                        .deny_rule_source(rule)
                        .unwrap_or_else(|| format!("deny rule {}", rule + 1));
                    log::info!(target: "smtpd", "reject: CONNECT from {}: 554 5.7.1 access denied by {}",
                        Peer { name: None, addr: peer }, Escaped(&source));
                    crate::proto::stats::rejected(service, "CONNECT", 554, Some("5.7.1"));
                    refuse(&gw2, stream, Reply::new(554, "5.7.1", "Access denied"));
                    return;
                }
            }
            Box::pin(session::serve(
                gw2,
                service,
                stream,
                peer,
                category_name,
                implicit_tls,
                stress,
                already_read,
            ))
            .await;
            drop(slot);
        })
        .detach();
}

/// Writes one reply to a client we will not serve, and closes.
fn refuse(gw: &Context, mut stream: Async<TcpStream>, reply: Reply) {
    gw.executor
        .spawn(async move {
            let _ = async {
                let _ = stream.write_all(&reply.to_wire()).await;
                let _ = stream.flush().await;
            }
            .or(async {
                Timer::after(REFUSAL_WRITE_TIMEOUT).await;
            })
            .await;
        })
        .detach();
}

/// Connections the kernel completes and queues for us before it drops new ones: 1024
/// (std's default is 128; Linux caps it at `net.core.somaxconn`, 4096 since 5.4). A burst
/// of clients faster than we accept then waits in the queue instead of retrying its SYN a
/// second later.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listening socket now, so a bad address is reported at start-up.
pub fn bind(addr: SocketAddr) -> std::io::Result<Async<TcpListener>> {
    let listener = Async::<TcpListener>::bind(addr)?;
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket we own and that is listening already: Linux takes the
    // new backlog.
    if unsafe { libc::listen(listener.get_ref().as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(listener)
}
