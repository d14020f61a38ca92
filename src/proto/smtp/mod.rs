//! SMTP protocol cores. **Invariant:** they do no I/O: no sockets, no files, no clock
//! reads, no TLS. The async layer (`crate::io::net` for the server, `crate::io::relay`
//! for the clients) moves bytes and time in and out of them.

pub mod address;
pub mod client;
/// The recipient verification client lives beside the delivery client it shares its
/// connection core with; this path stays.
pub use client::callout;
pub mod client_reply;
pub mod command;
pub mod data;
pub mod header;
pub mod keywords;
pub mod received;
pub mod reply;
pub mod server;
