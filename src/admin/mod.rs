//! The console's side of the running gateway: its terminals and what its commands do.
//! **Invariant:** what a line means and who may run it is the console core's; this
//! folder carries bytes and requests, and never blocks the executor (terminal reads and
//! writes run on threads of their own).
//!
//! Three transports drive the one console core ([`crate::proto::console`]): the board's console
//! device (standard input and output on the host board, raw when a terminal; a serial
//! device such as `/dev/ttyS0` set raw at the board's speed), and `drawbridge cli`
//! through the control socket. Each is a [`session::Link`] of two byte channels; blocking
//! terminal reads and writes run on threads of their own, never on the executor.
//! [`exec`] carries out the core's requests against the [`Gateway`]; [`accounts`] keeps
//! the console logins; [`probe`] is `test smtp` and `test dns`; [`cli`] is the client
//! end of `drawbridge cli`. [`token`] and [`certificate`] are the `token …` and
//! `certificate …` commands, from the command line and the console alike: they work the
//! token and the certificate store through the TLS layer, which knows nothing of them.
//!
//! `drawbridge cli` run by root on the box itself needs no login: the control socket is
//! readable by its owner only, and root can read and replace every file the login
//! protects (the state directory, its keys and slots), so a password would protect
//! nothing from it. The kernel says who connected (`SO_PEERCRED`). Anyone else logs in,
//! and `drawbridge cli --login` asks root to log in too (to commit under a name).

pub mod accounts;
pub mod certificate;
pub mod cli;
pub mod exec;
pub mod probe;
pub mod session;
pub mod token;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_io::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::gateway::Gateway;
use crate::io::token::Token;
use crate::io::tty::{self, ConsoleDevice};
use crate::proto::console::Options;
use session::{Ended, Link};

/// Chunks of terminal bytes waiting in a link's channel, each way.
const LINK_CHUNKS: usize = 64;
/// Largest read from a terminal at once.
const READ_CHUNK: usize = 4096;
/// Most console sessions at once through the control socket; another is refused.
pub const MAX_CLI_SESSIONS: usize = 8;

/// Set when the gateway stops to be started again (`restart`, `factory-reset`).
static RESTART: AtomicBool = AtomicBool::new(false);

/// Whether the process should start the gateway again once `daemon::run` returns.
pub fn restart_requested() -> bool {
    RESTART.load(Ordering::SeqCst)
}

fn request_restart(gw: &Gateway, why: String) {
    RESTART.store(true, Ordering::SeqCst);
    gw.shut_down(why);
}

/// `factory-reset`: the stored configuration, mail users, console logins, next-hop
/// secrets, certificates and the gateway's keys go (on `token`: the keys
/// [`token::gateway_keys`] names, destroyed first, so that a token that refuses leaves
/// everything as it was; objects of other applications on the token stay); the queue
/// and the PIN file stay. The number of token objects destroyed.
pub fn factory_reset(state_dir: &Path, token: &dyn Token) -> Result<usize, String> {
    use std::fs;
    let keys = token::gateway_keys(state_dir)
        .map_err(|e| format!("cannot read the certificate store: {e}"))?;
    let mut destroyed = 0;
    // A key pair's public half shares its label: both go.
    for (label, _) in keys {
        for handle in token.find_objects(&label) {
            token
                .destroy(handle)
                .map_err(|e| format!("cannot destroy {label} on the token: {e}"))?;
            destroyed += 1;
        }
    }
    let dirs = [
        crate::io::config::store::DIR,
        crate::io::tls::setup::STORE_DIR,
        crate::io::tls::TOKEN_DIR,
        crate::io::tls::FALLBACK_TOKEN_DIR,
    ];
    for d in dirs {
        match fs::remove_dir_all(state_dir.join(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot erase {d}: {e}"));
            }
            _ => {}
        }
    }
    let files = [
        crate::io::users::USERS_FILE,
        accounts::ADMINS_FILE,
        crate::io::secrets::SECRETS_FILE,
    ];
    for f in files {
        match fs::remove_file(state_dir.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot erase {f}: {e}"));
            }
            _ => {}
        }
    }
    Ok(destroyed)
}

/// Starts the board's console on `device`: sessions one after another (a new login
/// prompt after each logout) until its input ends.
pub fn spawn_console(gw: &Rc<Gateway>, device: ConsoleDevice) -> std::io::Result<()> {
    let (link, name, size) = match &device {
        ConsoleDevice::Stdio => {
            let stdin = std::io::stdin();
            let fd = stdin.as_raw_fd();
            let terminal = tty::is_terminal(fd);
            if terminal {
                tty::make_raw(fd)?;
                // The console prints log lines itself, above the line being typed.
                if tty::is_terminal(std::io::stderr().as_raw_fd()) {
                    crate::io::log::set_stderr(false);
                }
            }
            let size = if terminal { tty::window_size(fd) } else { None };
            let link = threaded_link(std::io::stdin(), std::io::stdout());
            (link, "console (standard input)".to_string(), size)
        }
        ConsoleDevice::Serial { path, baud } => {
            let file = tty::open_serial(path, *baud)?;
            let writer = file.try_clone()?;
            (threaded_link(file, writer), format!("console {path}"), None)
        }
    };
    let (rows, columns) = size.unwrap_or((24, 80));
    let gw2 = gw.clone();
    gw.net
        .executor
        .spawn(async move {
            loop {
                let options = session_options(&gw2, rows, columns, None);
                if session::run(gw2.clone(), &link, options, &name).await == Ended::Gone {
                    // Nothing prints log lines on the terminal any more.
                    crate::io::log::set_stderr(true);
                    log::info!(target: "console", "{name}: input ended; the console is closed");
                    return;
                }
            }
        })
        .detach();
    Ok(())
}

/// How a console session starts on a terminal of `rows` × `columns`, by the running
/// configuration (the host name for the prompt, the idle timeout).
fn session_options(gw: &Gateway, rows: u16, columns: u16, user: Option<String>) -> Options {
    let config = gw.config();
    let idle = config.system.console_idle_timeout;
    Options {
        host_name: config.system.host_name.clone(),
        rows,
        columns,
        user,
        idle_timeout: (!idle.is_zero()).then_some(idle),
    }
}

/// A link over blocking reads and writes, each on a thread of its own.
fn threaded_link(
    mut input: impl Read + Send + 'static,
    mut output: impl Write + Send + 'static,
) -> Link {
    let (in_tx, in_rx) = smol::channel::bounded::<Vec<u8>>(LINK_CHUNKS);
    let (out_tx, out_rx) = smol::channel::bounded::<Vec<u8>>(LINK_CHUNKS);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if in_tx.send_blocking(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok(bytes) = out_rx.recv_blocking() {
            if output
                .write_all(&bytes)
                .and_then(|()| output.flush())
                .is_err()
            {
                return;
            }
        }
    });
    Link {
        input: in_rx,
        output: out_tx,
    }
}

/// The request line that starts a console session on the control socket:
/// `cli ROWS COLUMNS [login]` (0 rows: never page; 0 columns: never scroll a line).
pub fn cli_request(rows: u16, columns: u16, login: bool) -> String {
    format!(
        "cli {rows} {columns}{}\n",
        if login { " login" } else { "" }
    )
}

/// Who is on the other end of a Unix socket, by the kernel's word.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    // SAFETY: a zeroed ucred is valid; getsockopt fills at most `len` bytes of it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED on our own socket into the ucred above.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// A console session for `drawbridge cli` on a control socket connection whose request
/// line was `line`; `early` is what the client sent after it, already read.
pub async fn serve_cli(gw: Rc<Gateway>, stream: Async<UnixStream>, line: &str, early: Vec<u8>) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (rows, columns, login) = match words.as_slice() {
        ["cli", r, c, rest @ ..] if rest.is_empty() || rest == ["login"] => (
            r.parse().unwrap_or(24),
            c.parse().unwrap_or(80),
            !rest.is_empty(),
        ),
        _ => (24, 80, false),
    };
    let root = peer_uid(stream.get_ref()) == Some(0);
    let busy = gw
        .consoles
        .sessions()
        .iter()
        .filter(|s| s.transport.starts_with("cli"))
        .count()
        >= MAX_CLI_SESSIONS;
    let mut writer = match stream.get_ref().try_clone().and_then(Async::new) {
        Ok(w) => w,
        Err(_) => return,
    };
    if busy {
        let _ = writer
            .write_all(b"too many console sessions; try again later\r\n")
            .await;
        return;
    }
    let (in_tx, in_rx) = smol::channel::bounded::<Vec<u8>>(LINK_CHUNKS);
    let (out_tx, out_rx) = smol::channel::bounded::<Vec<u8>>(LINK_CHUNKS);
    let mut reader = stream;
    let reading = gw.net.executor.spawn(async move {
        if !early.is_empty() && in_tx.send(early).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if in_tx.send(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let writing = gw.net.executor.spawn(async move {
        while let Ok(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
        let _ = writer.get_ref().shutdown(std::net::Shutdown::Both);
    });
    let options = session_options(&gw, rows, columns, (root && !login).then(|| "root".into()));
    let link = Link {
        input: in_rx,
        output: out_tx,
    };
    let transport = if root { "cli (root)" } else { "cli" };
    session::run(gw.clone(), &link, options, transport).await;
    drop(link);
    drop(reading);
    writing.await;
}
