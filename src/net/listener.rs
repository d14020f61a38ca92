//! Listening sockets: accept, classify, enforce the per-service connection limits,
//! and start a session for each client that gets in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use async_io::{Async, Timer};
use smol::channel::{Receiver, Sender, bounded};
use smol::future::FutureExt as _;
use smol::io::AsyncWriteExt;

use crate::config::{Classification, ServiceName};
use crate::filter::Decision;
use crate::gateway::Gateway;
use crate::log::{Escaped, Peer};
use crate::smtp::reply::Reply;

use super::{access, session};

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

/// A counted connection; dropping it gives the place back.
struct Slot {
    counts: Rc<RefCell<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.borrow_mut();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
        c.update_stress();
    }
}

/// Accepts connections on `listener` for `service` until the process ends.
pub async fn accept_loop(
    gw: Rc<Gateway>,
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
        let running = gw.running();
        let config = &running.config;
        let host = config.system.host_name.clone();
        let local = stream.get_ref().local_addr().ok().or(local);
        let category = local.map(|l| config.classify(l, peer));
        let category_name = match category {
            Some(Classification::Category(c)) => Some(c.to_string()),
            _ => None,
        };
        if let Some(Classification::Deny(text)) = category {
            log::info!(target: "smtpd", "reject: CONNECT from {}: 554 5.7.1 {text}", Peer { name: None, addr: peer });
            crate::stats::rejected(service, "CONNECT", 554, Some("5.7.1"));
            refuse(&gw, stream, Reply::new(554, "5.7.1", text.to_string()));
            continue;
        }
        let limits = config.service(service);
        let refusal = {
            let c = counts.borrow();
            if c.total >= limits.max_connections {
                Some(format!("{host} Error: too many connections"))
            } else if c.per_ip.get(&peer.ip()).copied().unwrap_or(0)
                >= limits.max_connections_per_ip
            {
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
            crate::stats::rejected(service, "CONNECT", 421, Some("4.7.0"));
            refuse(&gw, stream, Reply::new(421, "4.7.0", text));
            continue;
        }
        let (slot, stress) = {
            let mut c = counts.borrow_mut();
            c.total += 1;
            *c.per_ip.entry(peer.ip()).or_insert(0) += 1;
            c.stress_at = stress_threshold(limits.max_connections, limits.stress_threshold);
            c.update_stress();
            let slot = Slot {
                counts: counts.clone(),
                ip: peer.ip(),
            };
            (slot, c.stress.clone())
        };
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
                        crate::stats::rejected(service, "CONNECT", 554, Some("5.7.1"));
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
                ))
                .await;
                drop(slot);
            })
            .detach();
    }
}

/// Writes one reply to a client we will not serve, and closes.
fn refuse(gw: &Gateway, mut stream: Async<TcpStream>, reply: Reply) {
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
