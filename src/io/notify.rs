//! The gateway's side of the watchdog (`crate::proto::watchdog`): it tells the
//! supervisor named by `NOTIFY_SOCKET` when it is ready and when it stops, and beats
//! from the event loop while the supervisor asks for it (`WATCHDOG_USEC`). Without
//! `NOTIFY_SOCKET` every call here does nothing. While it starts, the long parts
//! (recovering the queue) say they progress ([`progress`]), so that a start that is
//! slow but moving is not taken for one that hangs.
//!
//! A beat is sent by a task on the executor, so it stops when the event loop stops
//! turning; the socket is non-blocking, so a supervisor that does not read never stalls
//! the gateway (a beat it cannot take is dropped).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::proto::watchdog::{self, Notice};

/// The supervisor's socket and what it asked for.
#[derive(Debug)]
struct Supervisor {
    socket: UnixDatagram,
    to: SocketAddr,
    /// `WATCHDOG_USEC`, when the supervisor watches the event loop.
    timeout: Option<Duration>,
}

static SUPERVISOR: OnceLock<Option<Supervisor>> = OnceLock::new();

/// The socket address `NOTIFY_SOCKET` names: a path, or `@name` for an abstract one.
fn address(name: &str) -> std::io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(name),
    }
}

fn from_env() -> Option<Supervisor> {
    let name = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|n| !n.is_empty())?;
    let opened = address(&name).and_then(|to| {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok((socket, to))
    });
    let (socket, to) = match opened {
        Ok(s) => s,
        Err(e) => {
            log::error!(target: "main", "NOTIFY_SOCKET {name}: {e}; the supervisor is not told");
            return None;
        }
    };
    let timeout = watchdog::timeout_from_env(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    );
    Some(Supervisor {
        socket,
        to,
        timeout,
    })
}

fn supervisor() -> Option<&'static Supervisor> {
    SUPERVISOR.get_or_init(from_env).as_ref()
}

/// Tells the supervisor `notices`, if there is one. Best effort: a supervisor that is
/// gone or full misses them.
pub fn tell(notices: &[Notice]) {
    if let Some(s) = supervisor()
        && let Err(e) = s
            .socket
            .send_to_addr(watchdog::encode(notices).as_bytes(), &s.to)
    {
        log::debug!(target: "main", "notifying the supervisor: {e}");
    }
}

/// How often [`progress`] tells the supervisor at most: often enough that a start
/// making progress is never near its deadline ([`watchdog::START_FLOOR`] from each),
/// seldom enough that telling costs nothing beside the work.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// When [`progress`] last told the supervisor.
static LAST_PROGRESS: Mutex<Option<Instant>> = Mutex::new(None);

/// The start is making progress (another segment of the journal read, another batch of
/// recovered messages taken): asks the supervisor for [`watchdog::START_FLOOR`] more
/// from now, at most every [`PROGRESS_EVERY`], the first call at once. A start that
/// hangs stops calling this, and is killed when its time runs out.
pub fn progress() {
    if supervisor().is_none() {
        return;
    }
    let now = Instant::now();
    let mut last = LAST_PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|at| now.saturating_duration_since(at) < PROGRESS_EVERY) {
        return;
    }
    *last = Some(now);
    tell(&[Notice::ExtendTimeout(watchdog::START_FLOOR)]);
}

/// The supervisor's watchdog timeout: how long the event loop may stop before the
/// gateway is killed and started again; none when nothing watches it.
pub fn timeout() -> Option<Duration> {
    supervisor().and_then(|s| s.timeout)
}

/// Beats from the executor this runs on, for as long as it runs, when the supervisor
/// watches; returns at once when it does not.
pub async fn beat() {
    let Some(timeout) = timeout() else { return };
    let every = watchdog::beat_every(timeout);
    log::info!(target: "main", "watchdog: the supervisor restarts the gateway after {} ms without a beat; beating every {} ms",
        timeout.as_millis(), every.as_millis());
    loop {
        tell(&[Notice::Beat]);
        async_io::Timer::after(every).await;
    }
}
