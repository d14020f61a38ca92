//! The async layer's server side: listeners and client sessions move bytes between
//! sockets and the protocol cores, and arm timers. It hands messages to the queue manager
//! (`relay`), which never imports it back. **Invariant:** nothing here parses SMTP or
//! decides policy; everything here is I/O, and it reaches the gateway only through its
//! narrow [`context::Context`].

pub mod access;
pub mod context;
pub mod listener;
pub mod local;
pub mod session;
pub mod throttle;

/// A client session's reading buffer when it starts: 1 KiB holds a burst of pipelined
/// commands; it grows to [`crate::io::runtime::READ_BUFFER`] the first time a read fills it (message content).
/// An idle session so costs 1 KiB of buffer, not 16.
pub const SESSION_READ_START: usize = 1024;
