//! The protocol cores. **Invariant:** no sockets, files, clock reads, executors, threads,
//! `async` or TLS types; everything here can be driven byte by byte and tick by tick
//! from a test. The time comes in as an argument; randomness comes in as a seed.
//! Nothing here imports `crate::io` or the wiring (`tests/tidy.rs` holds them to it).
//!
//! Lowest first: the shared formats (`calendar`, `json`, `logtext`, `stats`), then SASL
//! and the DNS codec, SMTP, access filters, the configuration model, policy, the queue
//! core, the console, the PROXY header, PID 1's boot plan and the watchdog's notifications.

// What clippy can hold the cores to (clippy.toml lists the clock, file, socket, thread
// and exit calls and types); their tests may read the clock and open files.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr, clippy::exit)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod boot;
pub mod calendar;
pub mod config;
pub mod console;
pub mod dns;
pub mod filter;
pub mod json;
pub mod logtext;
pub mod policy;
pub mod proxy;
pub mod queue;
pub mod sasl;
pub mod smtp;
pub mod stats;
pub mod watchdog;
