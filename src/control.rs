//! The control socket: how `drawbridge queue …` and `drawbridge config …` talk to a
//! running gateway.
//!
//! A Unix socket `control.sock` in the state directory, readable by its owner only. A
//! client sends one request line, then for `config load` the configuration text, then
//! shuts its side down, and reads the answer until the gateway closes: a first line
//! `ok` or `error <text>`, then the body. The socket is removed on a clean shutdown.
//!
//! The request line `cli ROWS COLUMNS [login]` instead turns the connection into a
//! console session (`drawbridge cli`): from then on it carries terminal bytes both ways
//! until the session ends (see [`crate::admin`]).

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use async_io::{Async, Timer};
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::gateway::Gateway;
use crate::gateway::socket_path;
use crate::io::config::admin;
use crate::io::config::engine::CommitRequest;
use crate::io::relay::Scheduler;
use crate::proto::json::json_string;
use crate::proto::queue::QueueId;
use crate::proto::queue::id::Target;
use crate::proto::queue::listing::{QueueEntry, QueueOp, list_text, qshape};

/// Longest request line; requests are a few words.
const MAX_REQUEST: usize = 1024;
/// Longest request body (a configuration for `config load`): 4 MiB, the stored form's
/// own limit.
pub const MAX_BODY: usize = crate::proto::config::slot::MAX_PAYLOAD;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    List {
        json: bool,
    },
    Show(QueueId),
    /// `queue summary`: open recipients by domain and age (qshape).
    Summary,
    /// `queue flush [DOMAIN]`.
    Flush(Option<String>),
    /// `queue hold|release|delete|requeue ID|all`.
    Op(QueueOp, Target),
    /// `config …`: see [`admin::ConfigRequest`].
    Config(admin::ConfigRequest),
    /// `certificate …`: an import's PEM chain and key are the body.
    Certificate(crate::admin::certificate::CertificateRequest),
    /// `stats [json]`: the counters.
    Stats {
        json: bool,
    },
}

impl Request {
    /// Parses `queue list [json]`, `queue show ID`, `queue summary`, `queue flush
    /// [DOMAIN]`, `queue hold|release|delete|requeue ID|all`, and the `config`,
    /// `certificate` and `stats` requests.
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let id = |w: Option<&&str>| -> Result<QueueId, String> {
            let w = w.ok_or("a queue id is needed")?;
            w.parse()
                .map_err(|e| format!("'{w}' is not a queue id: {e}"))
        };
        let request = match words.as_slice() {
            ["queue", "list"] => Request::List { json: false },
            ["queue", "list", "json"] => Request::List { json: true },
            ["queue", "summary"] => Request::Summary,
            ["queue", "flush"] => Request::Flush(None),
            ["queue", "flush", domain] => {
                let checked = crate::proto::smtp::address::Domain::parse(domain, true)
                    .map_err(|_| format!("'{domain}' is not a domain"))?;
                Request::Flush(Some(checked.to_string()))
            }
            ["queue", "show", rest @ ..] if rest.len() <= 1 => Request::Show(id(rest.first())?),
            ["queue", verb, rest @ ..] if rest.len() <= 1 => {
                let op = match *verb {
                    "hold" => QueueOp::Hold,
                    "release" => QueueOp::Release,
                    "delete" => QueueOp::Delete,
                    "requeue" => QueueOp::Requeue,
                    _ => return Err(format!("unknown request '{}'", line.trim())),
                };
                let word = rest.first().ok_or("a queue id or all is needed")?;
                Request::Op(op, Target::parse(word)?)
            }
            ["config", rest @ ..] => Request::Config(admin::ConfigRequest::parse(rest)?),
            ["certificate", rest @ ..] => {
                Request::Certificate(crate::admin::certificate::CertificateRequest::parse(rest)?)
            }
            ["stats"] => Request::Stats { json: false },
            ["stats", "json"] => Request::Stats { json: true },
            _ => return Err(format!("unknown request '{}'", line.trim())),
        };
        Ok(request)
    }

    /// The request line, as a client sends it.
    pub fn line(&self) -> String {
        match self {
            Request::List { json: false } => "queue list".into(),
            Request::List { json: true } => "queue list json".into(),
            Request::Show(id) => format!("queue show {id}"),
            Request::Summary => "queue summary".into(),
            Request::Flush(None) => "queue flush".into(),
            Request::Flush(Some(domain)) => format!("queue flush {domain}"),
            Request::Op(op, target) => format!("queue {} {target}", op.words().0),
            Request::Config(c) => format!("config {}", c.line()),
            Request::Certificate(c) => format!("certificate {}", c.line()),
            Request::Stats { json: false } => "stats".into(),
            Request::Stats { json: true } => "stats json".into(),
        }
    }
}

/// Runs a request against the running gateway: `Ok(body)` or `Err(reason)`. `body` is
/// what the client sent after the request line.
pub async fn execute(gw: &Rc<Gateway>, request: &Request, body: &str) -> Result<String, String> {
    match request {
        Request::Config(c) => config(gw, c, body).await,
        Request::Certificate(c) => crate::admin::certificate::on_gateway(gw, c, body),
        Request::Stats { json } => {
            let report = crate::proto::stats::report();
            Ok(if *json {
                crate::proto::stats::json(&report)
            } else {
                crate::proto::stats::text(&report)
            })
        }
        queue => execute_queue(&gw.net.queue.scheduler, queue).await,
    }
}

/// A `config …` request, on the running gateway: commits apply live.
async fn config(
    gw: &Rc<Gateway>,
    request: &admin::ConfigRequest,
    body: &str,
) -> Result<String, String> {
    use admin::ConfigRequest as C;
    let user = "cli";
    match request {
        C::Show { json } => Ok(admin::show(&gw.config(), &gw.running_commit(), *json)),
        C::History => Ok(admin::history_text(
            &gw.history().await,
            gw.pending_confirm(),
        )),
        C::Commit => match gw.confirm(user).await.map_err(|e| e.to_string())? {
            Some(seq) => Ok(format!("commit {seq}: commit confirmed\n")),
            None => Ok("nothing to confirm: no commit confirmed is pending\n".into()),
        },
        C::Rollback(n) => {
            let candidate = gw.rollback_candidate(*n).await.map_err(|e| e.to_string())?;
            let request = CommitRequest {
                user: user.into(),
                comment: format!("rollback {n}"),
                confirm_minutes: None,
            };
            let seq = gw
                .commit(&candidate, &request)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("commit {seq}: rolled back {n}\n"))
        }
        C::Load {
            replace,
            confirm,
            comment,
        } => {
            let mut candidate = gw.candidate();
            crate::proto::config::text::load_into(&mut candidate.config, body, *replace)?;
            if candidate.config == *gw.config() && confirm.is_none() {
                return Ok(format!(
                    "commit {}: no change\n",
                    gw.running_commit().sequence
                ));
            }
            let request = CommitRequest {
                user: user.into(),
                comment: comment.clone(),
                confirm_minutes: *confirm,
            };
            let seq = gw
                .commit(&candidate, &request)
                .await
                .map_err(|e| e.to_string())?;
            Ok(admin::committed_text(seq, *confirm))
        }
    }
}

/// Runs a queue request against the queue manager.
async fn execute_queue(scheduler: &Rc<Scheduler>, request: &Request) -> Result<String, String> {
    match request {
        Request::List { json: false } => Ok(list_text(&scheduler.list().await)),
        Request::List { json: true } => Ok(list_json(&scheduler.list().await)),
        Request::Show(id) => {
            let (entry, content) = scheduler.show(id).await.map_err(|e| e.to_string())?;
            Ok(show_text(&entry, &content))
        }
        Request::Summary => Ok(qshape(
            &scheduler.list().await,
            crate::io::clock::unix_now(),
        )),
        Request::Flush(None) => Ok(format!("{} message(s) flushed\n", scheduler.flush())),
        Request::Flush(Some(domain)) => Ok(format!(
            "{} message(s) flushed\n",
            scheduler.flush_domain(domain)
        )),
        Request::Op(op, target) => scheduler.operate(*op, target),
        Request::Config(_) | Request::Certificate(_) | Request::Stats { .. } => {
            Err("not a queue request".into())
        }
    }
}

/// A queue request on a stopped gateway's state directory: `queue list`, `show` and
/// `summary` read the spool without changing it, under the state lock (so never beside
/// a running gateway); the rest need the gateway.
pub fn offline(state_dir: &Path, request: &Request) -> Result<String, String> {
    if !matches!(
        request,
        Request::List { .. } | Request::Show(_) | Request::Summary
    ) {
        return Err("this needs the running gateway".into());
    }
    let _lock = crate::gateway::lock_state_dir(state_dir)
        .map_err(|e| format!("{e}, but its control socket does not answer"))?;
    let messages = crate::io::queue::read_only(&crate::gateway::spool_dir(state_dir))
        .map_err(|e| format!("cannot read the spool: {e}"))?;
    let entries: Vec<QueueEntry> = messages
        .iter()
        .map(|(env, _)| QueueEntry::of(env, false))
        .collect();
    match request {
        Request::List { json: false } => Ok(list_text(&entries)),
        Request::List { json: true } => Ok(list_json(&entries)),
        Request::Summary => Ok(qshape(&entries, crate::io::clock::unix_now())),
        Request::Show(id) => {
            let (env, content) =
                messages
                    .iter()
                    .find(|(env, _)| env.id == *id)
                    .ok_or_else(|| {
                        crate::proto::queue::listing::OpError::NoSuchMessage(id.clone()).to_string()
                    })?;
            Ok(show_text(&QueueEntry::of(env, false), content))
        }
        _ => Err("this needs the running gateway".into()),
    }
}

/// `queue show`: the listing entry, then the content as queued.
fn show_text(entry: &QueueEntry, content: &[u8]) -> String {
    let mut out = list_text(std::slice::from_ref(entry));
    out.push_str("\n*** MESSAGE CONTENTS ***\n");
    out.push_str(&String::from_utf8_lossy(content).replace("\r\n", "\n"));
    out
}

/// Binds the control socket, replacing a stale one (the caller holds the state lock).
pub fn bind(state_dir: &Path) -> io::Result<Async<UnixListener>> {
    let path = socket_path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Async::new(listener)
}

/// Removes the control socket (a clean shutdown).
pub fn unbind(state_dir: &Path) {
    let _ = std::fs::remove_file(socket_path(state_dir));
}

/// Serves the control socket until the process ends.
pub async fn serve(gw: Rc<Gateway>, listener: Async<UnixListener>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        gw.net.executor.spawn(answer(gw.clone(), stream)).detach();
    }
}

/// Reads the request line; returns it and the bytes read after it. A client that
/// closes first has sent its whole request as the line.
async fn read_line(stream: &mut Async<UnixStream>) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let rest = buf.split_off(end + 1);
            buf.pop();
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return Some((String::from_utf8_lossy(&buf).into_owned(), Vec::new())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
}

/// Reads a request's body: what follows the line until the client shuts its side down.
async fn read_body(stream: &mut Async<UnixStream>, mut buf: Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if buf.len() > MAX_BODY {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn read_request(
    stream: &mut Async<UnixStream>,
    line: String,
    rest: Vec<u8>,
) -> Option<(String, String)> {
    let body = read_body(stream, rest).await?;
    Some((line, body))
}

/// Nothing, once a client has had [`REQUEST_TIMEOUT`] to send its request.
async fn too_slow<T>() -> Option<T> {
    Timer::after(REQUEST_TIMEOUT).await;
    None
}

async fn answer(gw: Rc<Gateway>, mut stream: Async<UnixStream>) {
    let (line, rest) = match read_line(&mut stream).or(too_slow()).await {
        Some(first) => first,
        None => {
            let _ = stream
                .write_all(b"error the request is too long, or came too slowly\n")
                .await;
            return;
        }
    };
    if line.split_whitespace().next() == Some("cli") {
        return crate::admin::serve_cli(gw, stream, &line, rest).await;
    }
    let reply = match read_request(&mut stream, line, rest).or(too_slow()).await {
        None => "error the request is too long, or came too slowly\n".to_string(),
        Some((line, body)) => match Request::parse(&line) {
            Ok(request) => match execute(&gw, &request, &body).await {
                Ok(body) => format!("ok\n{body}"),
                Err(e) => format!("error {}\n", e.replace('\n', "\n  ")),
            },
            Err(e) => format!("error {e}\n"),
        },
    };
    let _ = stream.write_all(reply.as_bytes()).await;
}

/// The client side: sends one request (and its body) to the gateway running on
/// `state_dir`. `Ok(Ok(body))`, `Ok(Err(reason))` for a refused request, `Err` when no
/// gateway answers.
pub fn request(
    state_dir: &Path,
    request: &Request,
    body: &str,
) -> io::Result<Result<String, String>> {
    let mut stream = UnixStream::connect(socket_path(state_dir))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(format!("{}\n", request.line()).as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    match text.split_once('\n') {
        Some(("ok", body)) => Ok(Ok(body.to_string())),
        Some((first, rest)) => Ok(Err(format!(
            "{}{}",
            first.strip_prefix("error ").unwrap_or(first),
            if rest.is_empty() {
                String::new()
            } else {
                format!("\n{}", rest.trim_end())
            }
        ))),
        None => Ok(Err(format!("unexpected answer: {text}"))),
    }
}

/// The listing as JSON: an array of messages with their recipients.
pub fn list_json(entries: &[QueueEntry]) -> String {
    let mut out = String::from("[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{},\"arrived\":{},\"sender\":{},\"size\":{},\"held\":{},\"active\":{},\"attempts\":{},\"next_attempt\":{},\"recipients\":[",
            json_string(e.id.as_str()),
            e.arrived,
            json_string(&e.sender),
            e.size,
            e.held,
            e.active,
            e.attempts,
            e.next_attempt
        ));
        for (k, r) in e.recipients.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"address\":{},\"status\":{},\"reply\":{}}}",
                json_string(&r.address),
                json_string(r.status),
                r.reply.as_deref().map_or("null".to_string(), json_string)
            ));
        }
        out.push_str("]}");
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::queue::listing::EntryRecipient;

    #[test]
    fn requests_parse_and_print_back() {
        let id: QueueId = "0000000000ABCDEF".parse().unwrap();
        for r in [
            Request::List { json: false },
            Request::List { json: true },
            Request::Flush(None),
            Request::Flush(Some("example.com".into())),
            Request::Summary,
            Request::Show(id.clone()),
            Request::Op(QueueOp::Hold, Target::One(id.clone())),
            Request::Op(QueueOp::Release, Target::All),
            Request::Op(QueueOp::Delete, Target::One(id.clone())),
            Request::Op(QueueOp::Requeue, Target::One(id)),
        ] {
            assert_eq!(Request::parse(&r.line()), Ok(r));
        }
        assert!(
            Request::parse("queue hold")
                .unwrap_err()
                .contains("queue id or all is needed")
        );
        assert_eq!(
            Request::parse("queue delete ALL"),
            Ok(Request::Op(QueueOp::Delete, Target::All))
        );
        assert!(Request::parse("queue flush exa$mple.com").is_err());
        assert!(
            Request::parse("queue hold ../etc")
                .unwrap_err()
                .contains("not a queue id")
        );
        assert!(Request::parse("queue hold A B").is_err());
        assert!(
            Request::parse("reboot")
                .unwrap_err()
                .contains("unknown request")
        );
    }

    fn entry() -> QueueEntry {
        QueueEntry {
            id: "18E0F3A2C41B0700".parse().unwrap(),
            arrived: 1_795_297_301,
            sender: "a\"b@example.org".into(),
            size: 2048,
            held: true,
            active: false,
            attempts: 2,
            next_attempt: 1_795_297_601,
            recipients: vec![EntryRecipient {
                address: "bob@example.com".into(),
                status: "deferred",
                reply: Some("451 4.4.1 connect to x: refused\r\n".into()),
            }],
        }
    }

    #[test]
    fn json_listing_escapes_and_parses() {
        let json = list_json(&[entry()]);
        assert!(json.starts_with(
            "[{\"id\":\"18E0F3A2C41B0700\",\"arrived\":1795297301,\"sender\":\"a\\\"b@example.org\""
        ));
        assert!(json.contains("\"reply\":\"451 4.4.1 connect to x: refused\\r\\n\""));
        assert_eq!(list_json(&[]), "[]\n");
    }

    #[test]
    fn text_listing_looks_like_mailq() {
        let text = list_text(&[entry()]);
        assert!(
            text.contains("18E0F3A2C41B0700!     2048 Sat Nov 21 21:41:41 a\"b@example.org\n"),
            "{text}"
        );
        assert!(text.contains("(deferred: 451 4.4.1"));
        assert!(text.ends_with("-- 2 Kbytes in 1 Request.\n"));
        assert_eq!(list_text(&[]), "Mail queue is empty\n");
    }
}
