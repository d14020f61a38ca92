//! One incoming SMTP connection: a TCP stream driven by the server session core,
//! with the spool, the relay policy and the queue manager behind it.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use smol::future::FutureExt as _;

use super::context::{Context, Running};
use crate::io::clock::{unix_micros_now, unix_now};
use crate::io::net::throttle::{Block, Penalty};
use crate::io::queue::{Incoming, JOURNAL_MESSAGE_MAX, Pending};
use crate::io::relay::callout::Outcome;
use crate::io::tls::Transport;
use crate::io::tls::setup::describe;
use crate::proto::calendar::rfc5322;
use crate::proto::config::{ChannelKeyword, Config, ServiceName, TlsUse};
use crate::proto::logtext::{Escaped, Peer};
use crate::proto::policy;
use crate::proto::queue;
use crate::proto::queue::core::{Backing, notify};
use crate::proto::queue::{Envelope, Origin, QueueId, RcptStatus, Ret};
use crate::proto::sasl::users::UserLookup;
use crate::proto::sasl::{
    AuthError, Derivation, DerivedKey, ExchangeInputs, Mechanism, MechanismName, Step,
    new_mechanism,
};
use crate::proto::smtp::address::Recipient;
use crate::proto::smtp::command::{self, Body};
use crate::proto::smtp::header::FieldScan;
use crate::proto::smtp::received::Trace;
use crate::proto::smtp::reply::Reply;
use crate::proto::smtp::server::{
    CloseReason, Event, PeerCertificate, ServerConfig, Session, TlsInfo, Transaction, Verdict,
};
use ring::rand::{SecureRandom, SystemRandom};

use super::SESSION_READ_START;
use super::listener::Stress;
use crate::io::runtime::{READ_BUFFER, timer_at};

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
    /// The content's Message-ID, for the log.
    message_id: FieldScan,
}

/// How long the greeting waits for the client's name: PTR and forward lookups through
/// the cache are quick; a resolver that does not answer must not hold the client up.
pub const CLIENT_NAME_TIMEOUT: Duration = Duration::from_secs(3);

/// The client's forward-confirmed name, when `system dns client-names` is on and DNS
/// gives one within [`CLIENT_NAME_TIMEOUT`]; `None` logs as `unknown`.
async fn client_name(running: &Running, ip: IpAddr) -> Option<String> {
    let resolver = running
        .resolver
        .clone()
        .filter(|_| running.config.system.client_names)?;
    // Boxed: the lookup's query buffers would otherwise sit in every session's future,
    // lookups on or off, for as long as the session lasts.
    Box::pin(async move {
        let lookup = async {
            resolver
                .verified_name(ip)
                .await
                .map(|n| n.as_str().to_string())
        };
        let expire = async {
            Timer::after(CLIENT_NAME_TIMEOUT).await;
            None
        };
        lookup.or(expire).await
    })
    .await
}

/// Serves one accepted connection until it closes. With `implicit_tls` the TLS
/// handshake comes first (RFC 8314). `peer` is the client: the one a load balancer's
/// PROXY header named, behind one. `already_read` is what the client sent after that
/// header in the same reads: the session's (or the handshake's) first octets.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    gw: Rc<Context>,
    service: ServiceName,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    category: Option<String>,
    implicit_tls: bool,
    stress: Rc<Stress>,
    already_read: Vec<u8>,
) {
    let local = stream.get_ref().local_addr().ok();
    // The configuration this session started under stays its own to the end.
    let running = gw.running();
    // CRAM-MD5 is offered only when some user has its secret: the database as cached
    // (read again on the blocking pool at most once a second when it changed).
    let cram = match gw.users.lookup(Instant::now()).await {
        Ok(users) => users.offers_cram_md5(),
        Err(_) => false,
    };
    // The source channel, and with it what the session offers and requires, is the
    // TLS one (`tlsswitchchannel`) once TLS is up: at once for implicit TLS.
    let config_for = |tls: bool| session_config(&running, service, category.as_deref(), cram, tls);
    let config = config_for(implicit_tls);
    let write_timeout = config.command_timeout;
    let name = client_name(&running, peer.ip()).await;
    let client = Peer {
        name: name.as_deref(),
        addr: peer,
    };
    log::info!(target: "smtpd", "connect from {client}");
    crate::proto::stats::connection(service);
    let mut transport = Transport::Plain(stream);
    let mut session = if implicit_tls {
        let Some(tls) = running.tls.clone() else {
            log::warn!(target: "smtpd", "TLS is not available: dropping implicit-TLS client {client}");
            return;
        };
        match Box::pin(tls.accept_after(service, transport, already_read)).await {
            Ok(t) => {
                transport = t;
                let info =
                    tls_established(&running, service, category.as_deref(), &transport, &client);
                Session::new_tls(config, info, Instant::now())
            }
            Err(e) => {
                log::info!(target: "smtpd", "TLS handshake with {client} failed: {}", Escaped(&e.to_string()));
                return;
            }
        }
    } else {
        let mut session = Session::new(config, Instant::now());
        // A pipelining client's first commands, read with the PROXY header; moved here
        // so that their buffer is not kept for the session's life.
        let first = already_read;
        session.handle_input(&first, Instant::now());
        session
    };
    // Allocated when the client first has something to say (see `Transport::read_to`).
    let mut buf = Vec::new();
    let mut helo = String::new();
    let mut esmtp = false;
    let mut rcpts: Vec<String> = Vec::new();
    let mut from = String::new();
    // Boxed, as the message's own state: an idle session's future does not carry it.
    let mut spooling: Option<Box<Spooling>> = None;
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
                    match Box::pin(check_rcpt(&running, &asked, &to)).await {
                        Ok(deliver_to) => {
                            if !rcpts.contains(&deliver_to) {
                                rcpts.push(deliver_to.clone());
                            }
                            session.accept_rcpt(deliver_to, Instant::now());
                        }
                        Err(reply) => session.answer(Verdict::Reject(reply), Instant::now()),
                    }
                }
                Event::MessageBegin => {
                    spooling = Some(Box::new(begin_message(
                        &gw,
                        &running.config.system.host_name,
                        &client,
                        &helo,
                        esmtp,
                        &session,
                        &rcpts,
                    )));
                }
                Event::MessageData(bytes) => {
                    if let Some(s) = spooling.as_mut() {
                        s.write(&gw, &bytes);
                    }
                }
                Event::MessageAbort => spooling = None,
                Event::AuthStart { mechanism, initial } => {
                    let step = Box::pin(auth.start(
                        &gw,
                        &running,
                        &session,
                        &mechanism,
                        initial.as_deref(),
                    ))
                    .await;
                    if !Box::pin(answer_auth(
                        &gw,
                        &running,
                        &mut session,
                        &mut auth,
                        step,
                        &client,
                        service,
                    ))
                    .await
                    {
                        close_after_write = true;
                    }
                }
                Event::AuthResponse(line) => {
                    let step = auth.step(&line);
                    if !Box::pin(answer_auth(
                        &gw,
                        &running,
                        &mut session,
                        &mut auth,
                        step,
                        &client,
                        service,
                    ))
                    .await
                    {
                        close_after_write = true;
                    }
                }
                Event::StartTlsRequested => {
                    let Some(tls) = running.tls.clone() else {
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
                    match Box::pin(tls.accept(service, transport)).await {
                        Ok(t) => {
                            transport = t;
                            let info = tls_established(
                                &running,
                                service,
                                category.as_deref(),
                                &transport,
                                &client,
                            );
                            session.tls_established(info, Instant::now());
                            session.switch_channel(config_for(true));
                        }
                        Err(e) => {
                            log::info!(target: "smtpd", "TLS handshake with {client} failed: {}", Escaped(&e.to_string()));
                            return;
                        }
                    }
                }
                Event::MessageEnd(tx) => {
                    let result = match spooling.take() {
                        Some(s) => Box::pin(commit(&gw, service, peer, *s, *tx)).await,
                        None => Err(spool_error()),
                    };
                    if result.is_ok() {
                        crate::proto::stats::accepted(service);
                    }
                    session.commit_done(result, Instant::now());
                }
                Event::Rejected { command, to, reply } => {
                    let enhanced = reply.enhanced.map(|e| e.to_string());
                    crate::proto::stats::rejected(
                        service,
                        &command,
                        reply.code,
                        enhanced.as_deref(),
                    );
                    let to = to
                        .map(|to| format!(" to=<{}>", Escaped(&to)))
                        .unwrap_or_default();
                    log::info!(target: "smtpd", "NOQUEUE: reject: {} from {client}: {}; from=<{}>{to} proto={} helo=<{}>",
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
                        CloseReason::UnframedChunk => Some("BDAT size unreadable"),
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
        let stopping_by = gw.shutdown.deadline();
        if let Some(deadline) = stopping_by {
            session.shut_down(deadline, Instant::now());
            if session.is_closed() {
                // The 421 is written at the top of the loop, which then ends.
                continue;
            }
        }
        let deadline = session.poll_timeout();
        let changed = stress.changed();
        // Until the shutdown begins; then the session knows of it.
        let stopping = stopping_by.is_none().then(|| gw.shutdown.begun());
        let read = async { Woke::Input(transport.read_to(&mut buf, SESSION_READ_START).await) };
        let timeout = async {
            timer_at(deadline).await;
            Woke::Time
        };
        let stress_changed = async {
            let _ = changed.recv().await;
            Woke::Changed
        };
        let shutting_down = async {
            match stopping {
                Some(begun) => {
                    let _ = begun.recv().await;
                }
                None => std::future::pending().await,
            }
            Woke::Changed
        };
        match read.or(timeout).or(stress_changed).or(shutting_down).await {
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
            // The stress or the shutdown changed: the loop takes it in and waits again.
            Woke::Changed => {}
        }
    }
    let _ = transport.close().await;
    log::info!(target: "smtpd", "disconnect from {client}");
}

/// What ended a wait for the client.
enum Woke {
    Input(std::io::Result<usize>),
    Time,
    /// The service's stress, or the gateway's shutdown, changed.
    Changed,
}

/// The SASL exchange in progress, if any.
#[derive(Default)]
struct Auth {
    mechanism: Option<Box<dyn Mechanism>>,
    name: String,
    /// The user database the mechanism was started with.
    users: Option<Rc<UserLookup>>,
}

impl Auth {
    /// Starts a mechanism with the user database as it is on disk now (the gateway's
    /// copy, read again when the file changed; never read on the executor).
    async fn start(
        &mut self,
        gw: &Context,
        running: &Running,
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
        let host = running.config.system.host_name.clone();
        let inputs = ExchangeInputs {
            random: &random,
            timestamp: unix_now(),
            hostname: &host,
            cert_identity: identity.as_deref(),
        };
        self.users = Some(db.clone());
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
/// else its subject's common name (SPEC §5), else its whole subject (which names no
/// user).
fn certificate_identity(cert: &PeerCertificate) -> String {
    cert.san_emails
        .first()
        .or(cert.common_name.as_ref())
        .unwrap_or(&cert.subject)
        .clone()
}

/// A user name the throttle blocks, once the mechanism knows it: answered 454 before its
/// password is checked or its success taken, whatever the mechanism. Asking for a blocked
/// user still counts against the address.
fn user_refused(gw: &Context, session: &mut Session, auth: &mut Auth, client: &Peer<'_>) -> bool {
    let Some(user) = auth.user() else {
        return false;
    };
    let blocked = gw.throttle.borrow_mut().user_blocked(user, Instant::now());
    let Some(block) = blocked else {
        return false;
    };
    log_refusal(client, &block);
    auth.mechanism = None;
    let _ = gw
        .throttle
        .borrow_mut()
        .failure(client.addr.ip(), None, Instant::now());
    session.auth_failure(Reply::from(&AuthError::Temporary), Instant::now());
    true
}

/// Gives the session the mechanism's answer, running the password derivations it asks
/// for on the blocking pool. Failures are throttled by client address, network and user
/// name (see [`crate::io::net::throttle`]): a growing delay, then a block; a blocked address
/// or network ends the connection (false), a blocked user name is answered 454.
async fn answer_auth(
    gw: &Context,
    running: &Running,
    session: &mut Session,
    auth: &mut Auth,
    mut step: Step,
    client: &Peer<'_>,
    service: ServiceName,
) -> bool {
    let ip = client.addr.ip();
    let blocked = gw.throttle.borrow_mut().client_blocked(ip, Instant::now());
    if let Some(block) = blocked {
        log_refusal(client, &block);
        auth.mechanism = None;
        session.auth_failure(
            blocked_reply(&running.config.system.host_name),
            Instant::now(),
        );
        return false;
    }
    while let Step::Derive(derivation) = step {
        if user_refused(gw, session, auth, client) {
            return true;
        }
        let key = derive(gw, derivation).await;
        step = match auth.mechanism.as_mut() {
            Some(m) => m.derived(&key),
            None => Step::Failure(AuthError::Malformed),
        };
    }
    // Mechanisms that check without a derivation (SCRAM's stored keys, CRAM-MD5's
    // secret) are held to the block too, as soon as they know the user.
    if user_refused(gw, session, auth, client) {
        return true;
    }
    count_auth(service, &auth.name, &step);
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
                session.auth_failure(Reply::from(&error), Instant::now());
                return true;
            }
            let no_cram_secret = auth.name == "CRAM-MD5"
                && user
                    .as_deref()
                    .zip(auth.users.as_ref())
                    .is_some_and(|(u, users)| users.lacks_cram_md5(u));
            match &user {
                Some(user) if no_cram_secret => {
                    log::warn!(target: "smtpd", "{client}: SASL CRAM-MD5 authentication failed for {}: this user has no CRAM-MD5 secret (set the password again with --cram-md5 to give it one)", Escaped(user))
                }
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
                    session.auth_failure(Reply::from(&error), Instant::now());
                }
                Penalty::Block(_) => {
                    log::warn!(target: "smtpd", "{client}: blocked after repeated authentication failures");
                    session.auth_failure(
                        blocked_reply(&running.config.system.host_name),
                        Instant::now(),
                    );
                    return false;
                }
            }
        }
        // The loop above ran every derivation.
        Step::Derive(_) => session.auth_failure(Reply::from(&AuthError::Temporary), Instant::now()),
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
async fn derive(gw: &Context, derivation: Derivation) -> DerivedKey {
    let _turn = gw.derivations.acquire().await;
    smol::unblock(move || derivation.run()).await
}

/// Counts an authentication's outcome once the mechanism has decided it.
fn count_auth(service: ServiceName, mechanism: &str, step: &Step) {
    match step {
        Step::Success { .. } => crate::proto::stats::authenticated(service, mechanism, true),
        Step::Failure(AuthError::BadCredentials) => {
            crate::proto::stats::authenticated(service, mechanism, false)
        }
        _ => {}
    }
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
    running: &Running,
    service: ServiceName,
    category: Option<&str>,
    transport: &Transport,
    client: &Peer<'_>,
) -> TlsInfo {
    let info = transport.tls_info().unwrap_or_default();
    crate::proto::stats::tls(service, &info.version);
    let trust = if info.client_subject.is_some() {
        "Trusted"
    } else {
        "Anonymous"
    };
    log::info!(target: "smtpd", "{trust} TLS connection established from {client}: {}{}",
        describe(&info),
        info.client_subject.as_deref().map(|s| format!(" (client certificate {})", Escaped(s))).unwrap_or_default());
    let config = &running.config;
    let plain = source_channel(config, service, category, false);
    let secure = source_channel(config, service, category, true);
    if plain != secure {
        log::info!(target: "smtpd", "{client}: switched to channel {secure} after TLS");
    }
    TlsInfo {
        version: info.version,
        cipher: info.cipher_suite,
        peer_certificate: info.client_subject.map(|subject| PeerCertificate {
            subject,
            common_name: info.client_common_name,
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

/// The session settings for a client of `category` on `service`, before or after TLS:
/// its source channel (the one `tlsswitchchannel` names once TLS is up) decides TLS
/// (`notls`, `musttls`) and SASL (`maysaslserver`, `mustsaslserver`), its ruleset which
/// mechanisms are offered and which need TLS first.
fn session_config(
    running: &Running,
    service: ServiceName,
    category: Option<&str>,
    cram: bool,
    tls: bool,
) -> Rc<ServerConfig> {
    let config = &running.config;
    let channel = config.channel(Some(&source_channel(config, service, category, tls)));
    let use_tls = channel.tls_server();
    let sasl = config.offers_auth(service)
        && channel.keywords.iter().any(|k| {
            matches!(
                k,
                ChannelKeyword::MaySaslServer | ChannelKeyword::MustSaslServer
            )
        });
    let auth = policy::auth_policy(config, category);
    let mut c = (*running.server_config(service)).clone();
    c.tls_available = running.tls.is_some() && use_tls != TlsUse::Never;
    c.require_tls = use_tls == TlsUse::Must;
    c.require_auth = channel.keywords.contains(&ChannelKeyword::MustSaslServer);
    if sasl {
        // The service's own list, where it has one, narrows the ruleset's.
        let service_list = config.service(service).auth_mechanisms;
        c.auth_mechanisms = auth
            .advertised
            .into_iter()
            .filter(|m| {
                let name = MechanismName::parse(m.as_bytes());
                (cram || name != Some(MechanismName::CramMd5))
                    && service_list.is_none_or(|set| name.is_some_and(|n| set.contains(n)))
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
    policy::source_channel(config, &client, &mut policy::Trace::off())
}

/// The relay policy, then, for our own domains where the service asks for it, a live
/// check with the internal server that the recipient exists. Gives the address to
/// deliver to, which routing may have turned to our host name.
async fn check_rcpt(
    running: &Running,
    asked: &RcptAsked<'_>,
    to: &Recipient,
) -> Result<String, Reply> {
    let config = &running.config;
    let mut ours = running.our_addresses().to_vec();
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
    // Every RCPT is decided: the steps in words only when the debug log will show them.
    let explain = log::log_enabled!(target: "smtpd", log::Level::Debug);
    let (verdict, trace) = if explain {
        let decision = policy::decide(config, &client, &check);
        (decision.verdict, decision.trace)
    } else {
        (policy::verdict(config, &client, &check), Vec::new())
    };
    let routed = match verdict {
        policy::Verdict::Allow(routed) => routed,
        policy::Verdict::Deny(reply) => {
            log::debug!(target: "smtpd", "RCPT <{}> refused: {}", Escaped(&to.to_string()), Escaped(&trace.join("; ")));
            return Err(reply);
        }
    };
    let Some(verifier) = running.verifier(asked.service) else {
        return Ok(routed.address);
    };
    let Some(route) = routed.route(config).filter(|r| r.is_internal_relay()) else {
        return Ok(routed.address);
    };
    // Host names are looked up as delivery looks them up; none found leaves no host to
    // ask, which the verifier answers as it answers unreachable hosts.
    let hosts: Vec<SocketAddr> =
        crate::io::relay::relay_addresses(running.resolver.as_deref(), route.hosts())
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(address, _)| address)
            .collect();
    match verifier
        .verify(&routed.address, &hosts, Instant::now())
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
    gw: &Context,
    host_name: &str,
    client: &Peer,
    helo: &str,
    esmtp: bool,
    session: &Session,
    rcpts: &[String],
) -> Spooling {
    let tls = session.tls();
    let authenticated = session.is_authenticated();
    let tls_text = tls.map(|t| format!("using {} with cipher {}", t.version, t.cipher));
    let id = gw.queue.spool.allocate_id(unix_micros_now());
    let id_text = id.to_string();
    let trace = Trace {
        helo,
        client_ip: client.addr.ip(),
        client_name: client.name,
        by: host_name,
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
    log::info!(target: "smtpd", "{id}: client={client}");
    let mut s = Spooling {
        id,
        store: Store::Memory(Vec::with_capacity(4096)),
        written: 0,
        eight_bit: false,
        message_id: FieldScan::message_id(),
    };
    s.write(gw, trace.header().as_bytes());
    s
}

impl Spooling {
    fn write(&mut self, gw: &Context, bytes: &[u8]) {
        if let Store::Memory(buf) = &mut self.store {
            if buf.len() + bytes.len() <= JOURNAL_MESSAGE_MAX {
                buf.extend_from_slice(bytes);
                self.note(bytes);
                return;
            }
            // Too big for the journal: the rest streams into the message's own file.
            let buf = std::mem::take(buf);
            self.store = match gw.queue.spool.create_named(self.id.clone()) {
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
        self.message_id.push(bytes);
        self.written += bytes.len() as u64;
        // std's ASCII check goes a word at a time; once 8-bit, always 8-bit.
        self.eight_bit = self.eight_bit || !bytes.is_ascii();
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
    gw: &Rc<Context>,
    service: ServiceName,
    peer: SocketAddr,
    s: Spooling,
    tx: Transaction,
) -> Result<String, Reply> {
    let id = s.id;
    let message_id = s.message_id.value();
    let env = envelope(&id, service, peer, &tx, s.written, s.eight_bit);
    let written = match s.store {
        Store::Memory(buf) => {
            let appended = gw.queue.journal.borrow_mut().append(&env, &buf);
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
    if let Err(e) = gw.queue.commit.commit(pending).await {
        log::error!(target: "smtpd", "{id}: queue sync error: {e}");
        return Err(spool_reply(&e));
    }
    log::info!(target: "cleanup", "{id}: message-id={}", Escaped(&message_id.unwrap_or_default()));
    gw.queue.scheduler.submit(env, content, backing);
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
            command::Ret::Full => Ret::Full,
            command::Ret::Hdrs => Ret::Hdrs,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_proves_its_common_name_not_text_that_looks_like_one() {
        let cert = |subject: &str, cn: Option<&str>, emails: &[&str]| PeerCertificate {
            subject: subject.into(),
            common_name: cn.map(str::to_string),
            san_emails: emails.iter().map(|e| e.to_string()).collect(),
        };
        // An organisational unit whose value is `x,CN=alice` (escaped in the text).
        let forged = cert(r"OU=x\,CN=alice", None, &[]);
        assert_eq!(certificate_identity(&forged), r"OU=x\,CN=alice");
        let both = cert(r"CN=bob,OU=x\,CN=alice", Some("bob"), &[]);
        assert_eq!(certificate_identity(&both), "bob");
        let mail = cert("CN=bob", Some("bob"), &["carol@example.org"]);
        assert_eq!(certificate_identity(&mail), "carol@example.org");
    }
}
