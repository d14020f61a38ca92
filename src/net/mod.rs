//! The async layer: moves bytes between sockets and the protocol cores, and arms timers.
//!
//! Nothing here parses SMTP; everything here is I/O.

pub mod access;
pub mod connection;
pub mod listener;
pub mod local;
pub mod session;
pub mod throttle;

use std::time::Instant;

use async_io::Timer;

/// Reading buffer per connection, at most: 16 KiB.
pub const READ_BUFFER: usize = 16 * 1024;

/// A client session's reading buffer when it starts: 1 KiB holds a burst of pipelined
/// commands; it grows to [`READ_BUFFER`] the first time a read fills it (message content).
/// An idle session so costs 1 KiB of buffer, not 16.
pub const SESSION_READ_START: usize = 1024;

/// A timer for a core's `poll_timeout()`: fires at the deadline, or never.
pub fn timer_at(deadline: Option<Instant>) -> Timer {
    match deadline {
        Some(at) => Timer::at(at),
        None => Timer::never(),
    }
}
