//! One incoming SMTP connection: a TCP stream driven by the server session core,
//! with the spool, the relay policy and the queue manager behind it.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use smol::future::FutureExt as _;

use crate::clock::{rfc5322, unix_micros_now, unix_now};
use crate::config::{ChannelKeyword, Config, ServiceName, TlsUse};
use crate::gateway::Gateway;
use crate::log::{Escaped, Peer};
use crate::net::throttle::{Block, Penalty};
use crate::policy;
use crate::queue::{
    self, Envelope, Incoming, JOURNAL_MESSAGE_MAX, Origin, Pending, QueueId, RcptStatus, Ret,
};
use crate::relay::callout::Outcome;
use crate::relay::{Backing, notify};
use crate::sasl::{
    AuthError, Derivation, DerivedKey, ExchangeInputs, Mechanism, MechanismName, Step,
    new_mechanism,
};
use crate::smtp::address::Recipient;
use crate::smtp::received::Trace;
use crate::smtp::reply::Reply;
use crate::smtp::server::{
    self, Body, CloseReason, Event, PeerCertificate, ServerConfig, Session, TlsInfo, Transaction,
    Verdict,
};
use crate::tls::Transport;
use crate::tls::setup::describe;
use ring::rand::{SecureRandom, SystemRandom};

use super::listener::Stress;
use super::{READ_BUFFER, SESSION_READ_START, timer_at};

/// Where the message being received is kept until it is committed.
enum Store {
    /// Small messages stay in memory and go to the journal whole.
    Memory(Vec<u8>),
    /// A message that outgrew the journal's limit streams into its own file.
    File(Incoming),
    /// The spool failed mid-message: it is refused at its end with this reply.
    Failed(Reply),
}

/// The message being received: its queue id and where its bytes are.
struct Spooling {
    id: QueueId,
    store: Store,
    written: u64,
    eight_bit: bool,
}

/// Serves one accepted connection until it closes. With `implicit_tls` the TLS
/// handshake comes first (RFC 8314).
pub async fn serve(
    gw: Rc<Gateway>,
    service: ServiceName,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    category: Option<String>,
    implicit_tls: bool,
    stress: Rc<Stress>,
) {
    let local = stream.get_ref().local_addr().ok();
    let config = session_config(&gw, service, category.as_deref());
    let write_timeout = config.command_timeout;
    let client = Peer {
        name: None,
        addr: peer,
    };
    log::info!(target: "smtpd", "connect from {client}");
    let mut transport = Transport::Plain(stream);
    let mut session = if implicit_tls {
        let Some(tls) = gw.tls.clone() else {
            log::warn!(target: "smtpd", "TLS is not available: dropping implicit-TLS client {client}");
            return;
        };
        match Box::pin(tls.accept(transport)).await {
            Ok(t) => {
                transport = t;
                let info = tls_established(&gw, service, category.as_deref(), &transport, &client);
                Session::new_tls(config, info, Instant::now())
            }
            Err(e) => {
                log::info!(target: "smtpd", "TLS handshake with {client} failed: {}", Escaped(&e.to_string()));
                return;
            }
        }
    } else {
        Session::new(config, Instant::now())
    };
    let mut buf = vec![0u8; SESSION_READ_START];
    let mut helo = String::new();
    let mut esmtp = false;
    let mut rcpts: Vec<String> = Vec::new();
    let mut from = String::new();
    let mut spooling: Option<Spooling> = None;
    let mut out = Vec::new();
    let mut auth = Auth::default();
    // Set when a reply must be the last thing the client hears (a throttling block).
    let mut close_after_write = false;
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                Event::Helo { name, esmtp: e } => {
                    helo = name;
                    esmtp = e;
                    rcpts.clear();
                }
                Event::CheckMail { from: f, .. } => {
                    from = f;
                    rcpts.clear();
                    session.answer(Verdict::Accept, Instant::now());
                }
                Event::CheckRcpt {
                    to,
                    had_source_route,
                    ..
                } => {
                    let asked = RcptAsked {
                        service,
                        category: category.as_deref(),
                        tls: session.is_tls(),
                        auth_user: session.authenticated_user().map(str::to_string),
                        local: local.map(|l| l.ip()),
                        from: &from,
                        had_source_route,
                    };
                    match Box::pin(check_rcpt(&gw, &asked, &to)).await {
                        Ok(deliver_to) => {
                            rcpts.push(deliver_to.clone());
                            session.accept_rcpt(deliver_to, Instant::now());
                        }
                        Err(reply) => session.answer(Verdict::Reject(reply), Instant::now()),
                    }
                }
                Event::MessageBegin => {
                    spooling = Some(begin_message(
                        &gw,
                        peer,
                        &helo,
                        esmtp,
                        session.tls(),
                        session.is_authenticated(),
                        &rcpts,
                    ));
                }
                Event::MessageData(bytes) => {
                    if let Some(s) = spooling.as_mut() {
                        s.write(&gw, &bytes);
                    }
                }
                Event::MessageAbort => spooling = None,
                Event::AuthStart { mechanism, initial } => {
                    let step =
                        Box::pin(auth.start(&gw, &session, &mechanism, initial.as_deref())).await;
                    if !Box::pin(answer_auth(&gw, &mut session, &mut auth, step, &client)).await {
                        close_after_write = true;
                    }
                }
                Event::AuthResponse(line) => {
                    let step = auth.step(&line);
                    if !Box::pin(answer_auth(&gw, &mut session, &mut auth, step, &client)).await {
                        close_after_write = true;
                    }
                }
                Event::StartTlsRequested => {
                    let Some(tls) = gw.tls.clone() else {
                        session.tls_unavailable(Instant::now());
                        continue;
                    };
                    // The 220 goes out in plaintext with every reply before it; what the
                    // client sent after STARTTLS was thrown away by the session core.
                    session.start_tls(Instant::now());
                    while let Some(bytes) = session.poll_transmit() {
                        out.extend_from_slice(&bytes);
                    }
                    if !write_out(&mut transport, &mut out, write_timeout).await {
                        log::info!(target: "smtpd", "lost connection after STARTTLS from {client}");
                        return;
                    }
                    match Box::pin(tls.accept(transport)).await {
                        Ok(t) => {
                            transport = t;
                            let info = tls_established(
                                &gw,
                                service,
                                category.as_deref(),
                                &transport,
                                &client,
                            );
                            session.tls_established(info, Instant::now());
                        }
                        Err(e) => {
                            log::info!(target: "smtpd", "TLS handshake with {client} failed: {}", Escaped(&e.to_string()));
                            return;
                        }
                    }
                }
                Event::MessageEnd(tx) => {
                    let result = match spooling.take() {
                        Some(s) => Box::pin(commit(&gw, service, peer, s, tx)).await,
                        None => Err(spool_error()),
                    };
                    session.commit_done(result, Instant::now());
                }
                Event::Rejected { command, reply } => {
                    log::info!(target: "smtpd", "NOQUEUE: reject: {} from {client}: {}; from=<{}> proto={} helo=<{}>",
                        Escaped(&command), Escaped(&reply.one_line()), Escaped(&from),
                        if esmtp { "ESMTP" } else { "SMTP" }, Escaped(&helo));
                }
                Event::Closing(reason) => {
                    let why = match reason {
                        CloseReason::Quit => None,
                        CloseReason::Timeout => Some("timeout"),
                        CloseReason::TooSlow => Some("too slow (deadline exceeded)"),
                        CloseReason::TooManyErrors => Some("too many errors"),
                        CloseReason::EarlyTalker => Some("talked before the greeting"),
                        CloseReason::SessionLimit => Some("session limit"),
                        CloseReason::Shutdown => Some("shutdown"),
                        CloseReason::TlsFailed => Some("TLS handshake failed"),
                    };
                    if let Some(why) = why {
                        log::info!(target: "smtpd", "{why} from {client}");
                    }
                }
            }
        }
        while let Some(bytes) = session.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        if !write_out(&mut transport, &mut out, write_timeout).await {
            log::info!(target: "smtpd", "lost connection after write to {client}");
            break;
        }
        if close_after_write {
            break;
        }
        if session.is_closed() {
            break;
        }
        session.set_stress(stress.is_on());
        let deadline = session.poll_timeout();
        let changed = stress.changed();
        let read = async { Woke::Input(transport.read(&mut buf).await) };
        let timeout = async {
            timer_at(deadline).await;
            Woke::Time
        };
        let stress_changed = async {
            let _ = changed.recv().await;
            Woke::Stress
        };
        match read.or(timeout).or(stress_changed).await {
            Woke::Input(Ok(0)) | Woke::Input(Err(_)) => {
                log::info!(target: "smtpd", "lost connection from {client}");
                break;
            }
            Woke::Input(Ok(n)) => {
                session.handle_input(&buf[..n], Instant::now());
                if n == buf.len() && buf.len() < READ_BUFFER {
                    buf.resize(READ_BUFFER, 0);
                }
            }
            Woke::Time => session.handle_timeout(Instant::now()),
            // The limits changed: the loop takes them and waits again.
            Woke::Stress => {}
        }
    }
    let _ = transport.close().await;
    log::info!(target: "smtpd", "disconnect from {client}");
}

/// What ended a wait for the client.
enum Woke {
    Input(std::io::Result<usize>),
    Time,
    Stress,
}

/// The SASL exchange in progress, if any.
#[derive(Default)]
struct Auth {
    mechanism: Option<Box<dyn Mechanism>>,
    name: String,
}

impl Auth {
    /// Starts a mechanism with the user database as it is on disk now (the gateway's
    /// copy, read again when the file changed; never read on the executor).
    async fn start(
        &mut self,
        gw: &Gateway,
        session: &Session,
        name: &str,
        initial: Option<&[u8]>,
    ) -> Step {
        self.mechanism = None;
        self.name = name.to_ascii_uppercase();
        let Some(mech) = MechanismName::parse(name.as_bytes()) else {
            return Step::Failure(AuthError::Temporary);
        };
        let db = match gw.users.lookup(Instant::now()).await {
            Ok(db) => db,
            Err(_) => return Step::Failure(AuthError::Temporary),
        };
        let mut random = [0u8; 32];
        if SystemRandom::new().fill(&mut random).is_err() {
            return Step::Failure(AuthError::Temporary);
        }
        let identity = session
            .tls()
            .and_then(|t| t.peer_certificate.as_ref())
            .map(certificate_identity);
        let host = gw.config().system.host_name.clone();
        let inputs = ExchangeInputs {
            random: &random,
            timestamp: unix_now(),
            hostname: &host,
            cert_identity: identity.as_deref(),
        };
        let Some(mut mechanism) = new_mechanism(mech, db, &inputs) else {
            return Step::Failure(AuthError::Temporary);
        };
        let step = mechanism.start(initial);
        self.mechanism = Some(mechanism);
        step
    }

    fn step(&mut self, line: &[u8]) -> Step {
        match self.mechanism.as_mut() {
            Some(m) => m.step(line),
            None => Step::Failure(AuthError::Malformed),
        }
    }

    /// The user name the client gave, once it has.
    fn user(&self) -> Option<&str> {
        self.mechanism.as_ref().and_then(|m| m.user())
    }
}

/// The identity a client certificate proves for AUTH EXTERNAL: its first SAN email,
/// else its subject's common name (SPEC §5).
fn certificate_identity(cert: &PeerCertificate) -> String {
    cert.san_emails.first().cloned().unwrap_or_else(|| {
        cert.subject
            .split(',')
            .find_map(|part| part.trim().strip_prefix("CN="))
            .unwrap_or(&cert.subject)
            .to_string()
    })
}

/// Gives the session the mechanism's answer, running the password derivations it asks
/// for on the blocking pool. Failures are throttled by client address, network and user
/// name (see [`crate::net::throttle`]): a growing delay, then a block; a blocked address
/// or network ends the connection (false), a blocked user name is answered 454.
async fn answer_auth(
    gw: &Gateway,
    session: &mut Session,
    auth: &mut Auth,
    mut step: Step,
    client: &Peer<'_>,
) -> bool {
    let ip = client.addr.ip();
    let blocked = gw.throttle.borrow_mut().client_blocked(ip, Instant::now());
    if let Some(block) = blocked {
        log_refusal(client, &block);
        auth.mechanism = None;
        session.auth_failure(blocked_reply(&gw.config().system.host_name), Instant::now());
        return false;
    }
    while let Step::Derive(derivation) = step {
        if let Some(user) = auth.user().map(str::to_string) {
            let blocked = gw.throttle.borrow_mut().user_blocked(&user, Instant::now());
            if let Some(block) = blocked {
                log_refusal(client, &block);
                auth.mechanism = None;
                // Asking for a blocked user still counts against the address.
                let _ = gw.throttle.borrow_mut().failure(ip, None, Instant::now());
                session.auth_failure(AuthError::Temporary.reply(), Instant::now());
                return true;
            }
        }
        let key = derive(gw, derivation).await;
        step = match auth.mechanism.as_mut() {
            Some(m) => m.derived(&key),
            None => Step::Failure(AuthError::Malformed),
        };
    }
    let user = auth.user().map(str::to_string);
    match step {
        Step::Challenge(challenge) => session.auth_challenge(&challenge, Instant::now()),
        Step::Success {
            user, final_data, ..
        } => {
            gw.throttle.borrow_mut().success(ip, &user, Instant::now());
            log::info!(target: "smtpd", "{client}: sasl_method={}, sasl_username={}", auth.name, Escaped(&user));
            auth.mechanism = None;
            session.auth_success(user, final_data.as_deref(), Instant::now());
        }
        Step::Failure(error) => {
            auth.mechanism = None;
            if error != AuthError::BadCredentials {
                session.auth_failure(error.reply(), Instant::now());
                return true;
            }
            match &user {
                Some(user) => {
                    log::warn!(target: "smtpd", "{client}: SASL {} authentication failed for {}", auth.name, Escaped(user))
                }
                None => {
                    log::warn!(target: "smtpd", "{client}: SASL {} authentication failed", auth.name)
                }
            }
            let penalty = gw
                .throttle
                .borrow_mut()
                .failure(ip, user.as_deref(), Instant::now());
            match penalty {
                Penalty::Delay(delay, _) => {
                    Timer::after(delay).await;
                    session.auth_failure(error.reply(), Instant::now());
                }
                Penalty::Block(_) => {
                    log::warn!(target: "smtpd", "{client}: blocked after repeated authentication failures");
                    session
                        .auth_failure(blocked_reply(&gw.config().system.host_name), Instant::now());
                    return false;
                }
            }
        }
        // The loop above ran every derivation.
        Step::Derive(_) => session.auth_failure(AuthError::Temporary.reply(), Instant::now()),
    }
    true
}

/// Logs an AUTH refused because of a block in force.
fn log_refusal(client: &Peer<'_>, block: &Block) {
    let left = block
        .until
        .saturating_duration_since(Instant::now())
        .as_secs();
    log::warn!(target: "smtpd", "{client}: authentication refused: {} blocked for {left}s after repeated failures", block.key);
}

/// Password derivations at once, at most: the blocking pool could run many more, but each
/// takes a core for up to a second, and the cores also serve every session.
pub const MAX_CONCURRENT_DERIVATIONS: usize = 2;

/// Runs a derivation on the blocking pool, at most [`MAX_CONCURRENT_DERIVATIONS`] at a
/// time; the executor meanwhile serves everyone else.
async fn derive(gw: &Gateway, derivation: Derivation) -> DerivedKey {
    let _turn = gw.derivations.acquire().await;
    smol::unblock(move || derivation.run()).await
}

fn blocked_reply(host: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{host} Error: too many failed authentications from your address"),
    )
}

/// Writes and empties `out`; false when the client is gone or stopped reading.
async fn write_out(transport: &mut Transport, out: &mut Vec<u8>, timeout: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    let written = async { transport.write_all(out).await.is_ok() }
        .or(async {
            Timer::after(timeout).await;
            false
        })
        .await;
    out.clear();
    written
}

/// Logs a TLS session the Postfix way and says what it settled, for the session core;
/// switches the channel where the source channel says `tlsswitchchannel`.
fn tls_established(
    gw: &Gateway,
    service: ServiceName,
    category: Option<&str>,
    transport: &Transport,
    client: &Peer<'_>,
) -> TlsInfo {
    let info = transport.tls_info().unwrap_or_default();
    let trust = if info.client_subject.is_some() {
        "Trusted"
    } else {
        "Anonymous"
    };
    log::info!(target: "smtpd", "{trust} TLS connection established from {client}: {}{}",
        describe(&info),
        info.client_subject.as_deref().map(|s| format!(" (client certificate {})", Escaped(s))).unwrap_or_default());
    let config = gw.config();
    let plain = source_channel(&config, service, category, false);
    let secure = source_channel(&config, service, category, true);
    if plain != secure {
        log::info!(target: "smtpd", "{client}: switched to channel {secure} after TLS");
    }
    TlsInfo {
        version: info.version,
        cipher: info.cipher_suite,
        peer_certificate: info.client_subject.map(|subject| PeerCertificate {
            subject,
            san_emails: info.client_emails,
        }),
    }
}

/// What the relay policy needs to know about the session at a RCPT.
struct RcptAsked<'a> {
    service: ServiceName,
    category: Option<&'a str>,
    tls: bool,
    auth_user: Option<String>,
    local: Option<IpAddr>,
    from: &'a str,
    had_source_route: bool,
}

/// The session settings for a client of `category` on `service`: its source channel
/// decides TLS (`notls`, `musttls`) and SASL (`maysaslserver`, `mustsaslserver`), its
/// ruleset which mechanisms are offered and which need TLS first.
fn session_config(gw: &Gateway, service: ServiceName, category: Option<&str>) -> Rc<ServerConfig> {
    let config = gw.config();
    let channel = config.channel(Some(&source_channel(&config, service, category, false)));
    let use_tls = channel.tls_server();
    let sasl = channel.keywords.iter().any(|k| {
        matches!(
            k,
            ChannelKeyword::MaySaslServer | ChannelKeyword::MustSaslServer
        )
    });
    let auth = policy::auth_policy(&config, category);
    let mut c = (*gw.server_config(service)).clone();
    c.tls_available = gw.tls.is_some() && use_tls != TlsUse::Never;
    c.require_tls = use_tls == TlsUse::Must;
    c.require_auth = channel.keywords.contains(&ChannelKeyword::MustSaslServer);
    if sasl {
        // The service's own list, where it has one, narrows the ruleset's.
        let service_list = config.service(service).auth_mechanisms;
        c.auth_mechanisms = auth
            .advertised
            .into_iter()
            .filter(|m| {
                service_list.is_none_or(|set| {
                    MechanismName::parse(m.as_bytes()).is_some_and(|n| set.contains(n))
                })
            })
            .collect();
        c.auth_needs_tls = auth.needs_tls;
    }
    Rc::new(c)
}

/// The session's source channel, before or after TLS (not yet authenticated).
fn source_channel(
    config: &Config,
    service: ServiceName,
    category: Option<&str>,
    tls: bool,
) -> String {
    let client = policy::Client {
        service,
        category,
        tls,
        auth_user: None,
        our_addresses: &[],
    };
    policy::source_channel(config, &client, &mut Vec::new())
}

/// The relay policy, then, for our own domains where the service asks for it, a live
/// check with the internal server that the recipient exists. Gives the address to
/// deliver to, which routing may have turned to our host name.
async fn check_rcpt(gw: &Gateway, asked: &RcptAsked<'_>, to: &Recipient) -> Result<String, Reply> {
    let config = gw.config();
    let mut ours = gw.our_addresses().to_vec();
    ours.extend(asked.local);
    let client = policy::Client {
        service: asked.service,
        category: asked.category,
        tls: asked.tls,
        auth_user: asked.auth_user.as_deref(),
        our_addresses: &ours,
    };
    let check = policy::RcptCheck {
        mail_from: asked.from,
        rcpt: to,
        had_source_route: asked.had_source_route,
    };
    let decision = policy::decide(&config, &client, &check);
    let routed = match decision.verdict {
        policy::Verdict::Allow(routed) => routed,
        policy::Verdict::Deny(reply) => {
            log::debug!(target: "smtpd", "RCPT <{}> refused: {}", Escaped(&to.to_string()), Escaped(&decision.trace.join("; ")));
            return Err(reply);
        }
    };
    let Some(verifier) = gw.verifier(asked.service) else {
        return Ok(routed.address);
    };
    let Some(route) = routed.route(&config).filter(|r| r.is_internal_relay()) else {
        return Ok(routed.address);
    };
    match verifier
        .verify(&routed.address, route.next_hop.hosts(), Instant::now())
        .await
        .outcome
    {
        Outcome::Accept => Ok(routed.address),
        Outcome::Reject(reply) | Outcome::TempFail(reply) => Err(reply),
    }
}

fn spool_error() -> Reply {
    Reply::new(451, "4.3.0", "Error: queue file write error")
}

/// The reply for a message the spool could not take: `452 4.3.1` when the disk is full
/// (RFC 3463 §3.4: mail system full, a temporary condition the client retries), else
/// `451 4.3.0`.
fn spool_reply(e: &std::io::Error) -> Reply {
    let full = matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull;
    if full {
        Reply::new(452, "4.3.1", "Error: insufficient system storage")
    } else {
        spool_error()
    }
}

/// Starts a message: a queue id, and our trace header first.
fn begin_message(
    gw: &Gateway,
    peer: SocketAddr,
    helo: &str,
    esmtp: bool,
    tls: Option<&TlsInfo>,
    authenticated: bool,
    rcpts: &[String],
) -> Spooling {
    let tls_text = tls.map(|t| format!("using {} with cipher {}", t.version, t.cipher));
    let id = gw.spool.allocate_id(unix_micros_now());
    let id_text = id.to_string();
    let trace = Trace {
        helo,
        client_ip: peer.ip(),
        client_name: None,
        by: &gw.config().system.host_name,
        // RFC 3848.
        protocol: match (esmtp, tls.is_some(), authenticated) {
            (true, true, true) => "ESMTPSA",
            (true, false, true) => "ESMTPA",
            (true, true, false) => "ESMTPS",
            (true, false, false) => "ESMTP",
            (false, true, _) => "SMTPS",
            (false, false, _) => "SMTP",
        },
        tls: tls_text.as_deref(),
        id: &id_text,
        for_rcpt: (rcpts.len() == 1).then(|| rcpts[0].as_str()),
        date: &rfc5322(unix_now()),
    };
    log::info!(target: "smtpd", "{id}: client={}", Peer { name: None, addr: peer });
    let mut s = Spooling {
        id,
        store: Store::Memory(Vec::with_capacity(4096)),
        written: 0,
        eight_bit: false,
    };
    s.write(gw, trace.header().as_bytes());
    s
}

impl Spooling {
    fn write(&mut self, gw: &Gateway, bytes: &[u8]) {
        if let Store::Memory(buf) = &mut self.store {
            if buf.len() + bytes.len() <= JOURNAL_MESSAGE_MAX {
                buf.extend_from_slice(bytes);
                self.note(bytes);
                return;
            }
            // Too big for the journal: the rest streams into the message's own file.
            let buf = std::mem::take(buf);
            self.store = match gw.spool.create_named(self.id.clone()) {
                Ok(mut incoming) => match incoming.write(&buf) {
                    Ok(()) => Store::File(incoming),
                    Err(e) => self.fail(&e),
                },
                Err(e) => self.fail(&e),
            };
        }
        if let Store::File(incoming) = &mut self.store {
            if let Err(e) = incoming.write(bytes) {
                self.store = self.fail(&e);
                return;
            }
            self.note(bytes);
        }
    }

    fn note(&mut self, bytes: &[u8]) {
        self.written += bytes.len() as u64;
        self.eight_bit |= bytes.iter().any(|b| *b >= 0x80);
    }

    fn fail(&self, e: &std::io::Error) -> Store {
        log::error!(target: "smtpd", "{}: queue file write error: {e}", self.id);
        Store::Failed(spool_reply(e))
    }
}

/// Writes the message to the journal or finishes its file, waits for the group commit,
/// and hands the message to the queue manager. Only after this returns `Ok` may the client
/// hear 250.
async fn commit(
    gw: &Rc<Gateway>,
    service: ServiceName,
    peer: SocketAddr,
    s: Spooling,
    tx: Transaction,
) -> Result<String, Reply> {
    let id = s.id;
    let env = envelope(&id, service, peer, &tx, s.written, s.eight_bit);
    let written = match s.store {
        Store::Memory(buf) => {
            let appended = gw.journal.borrow_mut().append(&env, &buf);
            appended.map(|segment| {
                (
                    Pending::Journal {
                        id: id.clone(),
                        segment,
                    },
                    Some(Rc::from(buf)),
                    Backing::Journal(segment),
                )
            })
        }
        Store::File(incoming) => incoming
            .finish(&env)
            .map(|finished| (Pending::File(finished), None, Backing::File)),
        Store::Failed(reply) => return Err(reply),
    };
    let (pending, content, backing) = match written {
        Ok(w) => w,
        Err(e) => {
            log::error!(target: "smtpd", "{id}: queue file write error: {e}");
            return Err(spool_reply(&e));
        }
    };
    if let Err(e) = gw.commit.commit(pending).await {
        log::error!(target: "smtpd", "{id}: queue sync error: {e}");
        return Err(spool_reply(&e));
    }
    gw.scheduler.submit(env, content, backing);
    Ok(id.to_string())
}

/// The spool envelope of an accepted transaction.
fn envelope(
    id: &QueueId,
    service: ServiceName,
    peer: SocketAddr,
    tx: &Transaction,
    size: u64,
    eight_bit: bool,
) -> Envelope {
    let p = &tx.mail_params;
    Envelope {
        id: id.clone(),
        arrived: unix_now(),
        origin: match service {
            ServiceName::Inbound => Origin::Inbound,
            ServiceName::Outbound => Origin::Outbound,
        },
        client_ip: Some(peer.ip()),
        client_helo: tx.helo.clone(),
        sender: tx.from.clone(),
        size,
        eight_bit: eight_bit || p.body == Some(Body::EightBitMime),
        smtputf8: p.smtputf8,
        ret: p.ret.map(|r| match r {
            server::Ret::Full => Ret::Full,
            server::Ret::Hdrs => Ret::Hdrs,
        }),
        envid: p.envid.clone(),
        recipients: tx
            .rcpts
            .iter()
            .map(|(address, params)| queue::Recipient {
                address: address.clone(),
                orcpt: params.orcpt.clone(),
                notify: params.notify.map_or(0, |n| {
                    let bit = |on: bool, b: u8| if on { b } else { 0 };
                    bit(n.never, notify::NEVER)
                        | bit(n.success, notify::SUCCESS)
                        | bit(n.failure, notify::FAILURE)
                        | bit(n.delay, notify::DELAY)
                }),
                status: RcptStatus::Pending,
            })
            .collect(),
        attempts: 0,
        next_attempt: 0,
        held: false,
    }
}
