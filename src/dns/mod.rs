//! drawbridge's own DNS client: an I/O-free message codec, a lookup state machine, a
//! TTL cache, and a thin async resolver over UDP with TCP fallback.

pub mod message;
pub mod name;
