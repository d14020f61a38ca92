//! drawbridge: the firmware of a hardened SMTP relay appliance. **Invariant:** imports
//! point down the layers below, never up, and never in a loop within one.
//!
//! Three layers, each importing only from the layers below it:
//!
//! * [`proto`]: the protocol cores. Bytes, values and `Instant`s in; bytes, events,
//!   decisions and deadlines out. No sockets, files, clock reads, executors or TLS types.
//! * [`io`]: the async layer. Sockets, files, timers, TLS, the token and the blocking pool,
//!   driving the cores.
//! * The wiring, at the top of this crate: the running gateway ([`gateway`]), the process
//!   ([`daemon`]), the administrator's console, control socket and command line
//!   ([`admin`], [`control`], [`cli`]), PID 1 ([`init`]), the board and the firmware image.
//!
//! `tests/tidy.rs` holds every file to its layer.

pub mod io;
pub mod proto;

pub mod admin;
pub mod board;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod gateway;
pub mod image;
pub mod init;
