//! The queue's core: what a queued message is (`envelope`, with its versioned,
//! checksummed file format, and `id`), every decision of the queue manager (`core`:
//! routing to destinations, concurrency, which host next, retries, expiry, delay notices,
//! holds), the delivery status notifications it writes (`dsn`) and what the
//! administrator's queue operations answer (`listing`). **Invariant:** no I/O and no
//! clock read: the time comes in as an argument and the decisions go out as `Action`s,
//! which `crate::io::relay` carries out; a report is queued before the message that
//! caused it leaves the queue; envelope variants are only ever appended.

pub mod core;
pub mod dsn;
pub mod envelope;
pub mod id;
pub mod listing;

pub use envelope::{
    ENVELOPE_HEADER_LEN, ENVELOPE_MAGIC, ENVELOPE_MAX_FILE, ENVELOPE_MAX_PAYLOAD, ENVELOPE_VERSION,
    Envelope, EnvelopeError, Origin, RcptStatus, Recipient, Recovered, Ret,
};
pub use id::{QUEUE_ID_MAX_LEN, QUEUE_ID_MIN_LEN, QueueId, QueueIdError, Target};
