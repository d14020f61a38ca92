//! The wall clock: the one place that reads it. What a time looks like written down is
//! `crate::proto::calendar`'s business.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now. The one place that reads the wall clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Microseconds since the Unix epoch, now.
pub fn unix_micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
