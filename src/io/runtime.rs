//! What the async layer's two sides share: the server side (`net`, sessions and listeners)
//! and the delivery side (`relay`, the queue manager and its outgoing connections) each
//! import these from here, not from each other.

use std::time::Instant;

use async_io::Timer;

/// Reading buffer per connection, at most: 16 KiB.
pub const READ_BUFFER: usize = 16 * 1024;

/// A timer for a core's `poll_timeout()`: fires at the deadline, or never.
pub fn timer_at(deadline: Option<Instant>) -> Timer {
    match deadline {
        Some(at) => Timer::at(at),
        None => Timer::never(),
    }
}
