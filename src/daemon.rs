//! The gateway process: opens the gateway, its control socket and its console, runs the
//! executor until a signal or a console command stops it, and says why it stopped.
//!
//! The top of the wiring: it names the gateway, the control socket and the console; none
//! of them names it.

use std::io;

use smol::future::FutureExt as _;

use crate::gateway::{self, Start};
use crate::io::signal::{Signal, Signals};

/// Runs the gateway until it is told to stop; returns why it stopped. Errors are
/// start-up errors.
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
        stopped.or(signalled).await
    }));
    log::info!(target: "main", "stopping: {why}");
    crate::control::unbind(state_dir);
    drop(ready);
    Ok(why)
}
