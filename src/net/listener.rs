//! Listening sockets: accept, classify, enforce the per-service connection limits,
//! and start a session for each client that gets in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use async_io::{Async, Timer};
use smol::future::FutureExt as _;
use smol::io::AsyncWriteExt;

use crate::config::{Classification, ServiceName};
use crate::gateway::Gateway;
use crate::log::Peer;
use crate::smtp::reply::Reply;

use super::{access, session};

/// The service name access filters know SMTP by (`smtp: …`), as in the seeds.
pub const FILTER_SERVICE: &str = "smtp";

/// How long we try to deliver a refusal to a client we will not serve.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (for example out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open connections of one service, in total and per client address.
#[derive(Default)]
pub struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
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
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
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
        let slot = {
            let mut c = counts.borrow_mut();
            c.total += 1;
            *c.per_ip.entry(peer.ip()).or_insert(0) += 1;
            Slot {
                counts: counts.clone(),
                ip: peer.ip(),
            }
        };
        let gw2 = gw.clone();
        gw.executor
            .spawn(async move {
                if let (Some(filter), Some(local)) = (running.filter(service), local) {
                    let decision = access::decide(
                        filter,
                        FILTER_SERVICE,
                        local,
                        peer,
                        running.resolver.as_deref(),
                    )
                    .await;
                    if !decision.is_allowed() {
                        log::info!(target: "smtpd", "reject: CONNECT from {}: 554 5.7.1 access denied by filter ({decision:?})",
                            Peer { name: None, addr: peer });
                        crate::stats::rejected(service, "CONNECT", 554, Some("5.7.1"));
                        refuse(&gw2, stream, Reply::new(554, "5.7.1", "Access denied"));
                        return;
                    }
                }
                session::serve(gw2, service, stream, peer, category_name, implicit_tls).await;
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

/// Binds a listening socket now, so a bad address is reported at start-up.
pub fn bind(addr: SocketAddr) -> std::io::Result<Async<TcpListener>> {
    Async::<TcpListener>::bind(addr)
}
