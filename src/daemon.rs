//! The gateway process: opens the gateway, its control socket and its console, runs the
//! executor until a signal or a console command stops it, and says why it stopped.
//!
//! The top of the wiring: it names the gateway, the control socket and the console; none
//! of them names it.

use std::io;
use std::time::Duration;

use smol::future::FutureExt as _;

use crate::gateway::{self, Start};
use crate::io::notify;
use crate::io::signal::{Signal, Signals};
use crate::proto::watchdog::Notice;

/// What the gateway asks its supervisor for beyond its stopping grace: time to close
/// the spool and exit.
const STOP_MARGIN: Duration = Duration::from_secs(2);

/// Runs the gateway until it is told to stop; returns why it stopped. Errors are
/// start-up errors. Stopping drains the sessions for `system stop-grace` (they end their
/// transactions and leave with 421, RFC 5321 §3.8), having told the supervisor to wait
/// that long; a second SIGTERM or SIGINT meanwhile stops at once.
pub fn run(start: Start) -> io::Result<String> {
    let mut ready = gateway::open(&start)?;
    let gw = ready.gw.clone();
    let state_dir = start.state_dir.as_path();
    let control = crate::control::bind(state_dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open the control socket: {e}")))?;
    let executor = gw.net.executor.clone();
    executor
        .spawn(crate::control::serve(gw.clone(), control))
        .detach();
    let mut signals = Signals::install()?;
    ready.serve();
    if let Some(device) = start.console.clone()
        && let Err(e) = crate::admin::spawn_console(&gw, device.clone())
    {
        log::error!(target: "console", "cannot open the console {device:?}: {e}");
    }
    // The listeners are bound and the queue recovered: a supervisor may time us now.
    notify::tell(&[Notice::Ready]);
    executor.spawn(notify::beat()).detach();
    let stopped = ready.stopped.clone();
    let why = smol::block_on(executor.run(async {
        let stopped = async { stopped.recv().await.unwrap_or_else(|_| "stopped".into()) };
        let signalled = async {
            loop {
                match signals.next().await {
                    Signal::Hangup => {
                        log::info!(target: "config", "SIGHUP: reloading the committed configuration");
                        gw.reload().await;
                    }
                    other => break format!("{} received", other.name()),
                }
            }
        };
        let why = stopped.or(signalled).await;
        let (open, sending) = (gw.open_sessions(), gw.deliveries_in_progress());
        log::info!(target: "main", "stopping: {why}");
        let grace = gw.config().system.stop_grace;
        notify::tell(&[Notice::Stopping, Notice::ExtendTimeout(grace + STOP_MARGIN)]);
        let busy = open > 0 || sending > 0;
        if busy {
            log::info!(target: "main", "stopping: {open} session(s) and {sending} delivery(ies) in progress have {}s to finish",
                grace.as_secs_f64());
        }
        let drained = async { Some(gw.drain(grace).await) };
        let again = async {
            loop {
                if let Signal::Terminate | Signal::Interrupt = signals.next().await {
                    break None;
                }
            }
        };
        match drained.or(again).await {
            Some((0, 0)) if busy => {
                log::info!(target: "main", "stopping: every session and delivery ended")
            }
            Some((0, 0)) => {}
            Some((cut, sending)) => log::warn!(target: "main",
                "stopping: {cut} session(s) and {sending} delivery(ies) cut at the deadline; what was not delivered stays queued"),
            None => log::warn!(target: "main", "stopping at once: signalled again"),
        }
        why
    }));
    crate::control::unbind(state_dir);
    drop(ready);
    Ok(why)
}
