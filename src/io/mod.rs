//! The async layer: sockets, files, timers, TLS and the token, on one smol executor with
//! a blocking pool. **Invariant:** it drives the cores in `crate::proto` and decides
//! nothing they can decide; it parses no SMTP; nothing slow runs on the executor thread
//! (disk syncs, password derivations and token operations go to the blocking pool). It
//! imports the cores, never the wiring above it.
//!
//! Lowest first: `clock`, `runtime`, `log`, `tty`, `signal`, `notify`; the `token` and `tls`; the
//! `queue` (the spool, the journal, the group commit), the `resolver`, `users` and `secrets`; the stored configuration (`config`);
//! the queue manager and its outgoing connections (`relay`); then listeners and
//! sessions (`net`), which hand messages to the relay.

pub mod clock;
pub mod config;
pub mod log;
pub mod net;
pub mod notify;
pub mod queue;
pub mod relay;
pub mod resolver;
pub mod runtime;
pub mod secrets;
pub mod signal;
pub mod tls;
pub mod token;
pub mod tty;
pub mod users;
