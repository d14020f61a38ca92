//! Queue operations for administrators: list, show, flush, hold, release, delete.
//!
//! The library API that the control socket (and later the console) calls. Holds are
//! written to the message's envelope, so they survive a restart.

use std::fmt;
use std::rc::Rc;

use super::core::ContentRef;
use super::{Scheduler, now};
use crate::queue::{Envelope, QueueId, RcptStatus};

/// One recipient as a queue listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRecipient {
    pub address: String,
    /// `pending`, `deferred`, `delivered` or `failed`.
    pub status: &'static str,
    /// The last reply, where there is one.
    pub reply: Option<String>,
}

/// One message as a queue listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: QueueId,
    pub arrived: u64,
    pub sender: String,
    pub size: u64,
    pub held: bool,
    /// A delivery attempt is running now.
    pub active: bool,
    pub attempts: u32,
    pub next_attempt: u64,
    pub recipients: Vec<EntryRecipient>,
}

impl QueueEntry {
    pub(crate) fn of(env: &Envelope, active: bool) -> QueueEntry {
        QueueEntry {
            id: env.id.clone(),
            arrived: env.arrived,
            sender: env.sender.clone(),
            size: env.size,
            held: env.held,
            active,
            attempts: env.attempts,
            next_attempt: env.next_attempt,
            recipients: env
                .recipients
                .iter()
                .map(|r| {
                    let (status, reply) = match &r.status {
                        RcptStatus::Pending => ("pending", None),
                        RcptStatus::Deferred { reply } => ("deferred", Some(reply.clone())),
                        RcptStatus::Delivered { reply } => ("delivered", Some(reply.clone())),
                        RcptStatus::Failed { reply } | RcptStatus::Returned { reply } => {
                            ("failed", Some(reply.clone()))
                        }
                        RcptStatus::Delayed { reply } => ("deferred", Some(reply.clone())),
                    };
                    EntryRecipient {
                        address: r.address.clone(),
                        status,
                        reply,
                    }
                })
                .collect(),
        }
    }
}

/// Why an operation could not be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    NoSuchMessage(QueueId),
    /// The message exists, but its content could not be read.
    Unreadable(QueueId, String),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::NoSuchMessage(id) => write!(f, "{id}: no such message in the queue"),
            OpError::Unreadable(id, e) => write!(f, "{id}: cannot read the message: {e}"),
        }
    }
}

impl Scheduler {
    /// Every message in the queue, oldest first.
    pub fn list(&self) -> Vec<QueueEntry> {
        self.core.borrow().list()
    }

    /// One message: its listing entry and its content as queued. The administrator's
    /// request reads a queue file on the spot.
    pub fn show(&self, id: &QueueId) -> Result<(QueueEntry, Vec<u8>), OpError> {
        let (entry, content) = self.core.borrow().entry(id)?;
        let content = match content {
            ContentRef::Memory(bytes) => bytes.to_vec(),
            ContentRef::File => self
                .spool
                .read_content(id)
                .map_err(|e| OpError::Unreadable(id.clone(), e.to_string()))?,
        };
        Ok((entry, content))
    }

    /// Tries every deferred message now, and forgets which hosts failed recently.
    /// Returns how many messages were woken.
    pub fn flush(self: &Rc<Self>) -> usize {
        let n = self.core.borrow_mut().flush(now());
        self.run_actions();
        n
    }

    /// Keeps a message from being delivered until it is released. An attempt already
    /// running finishes.
    pub fn hold(self: &Rc<Self>, id: &QueueId) -> Result<(), OpError> {
        let held = self.core.borrow_mut().hold(id);
        self.run_actions();
        held
    }

    /// Releases a held message and tries it at once.
    pub fn release(self: &Rc<Self>, id: &QueueId) -> Result<(), OpError> {
        let released = self.core.borrow_mut().release(id, now());
        self.run_actions();
        released
    }

    /// Like Postfix's `postsuper -r`: a held message is released, and the recipients
    /// still open are routed again by the running configuration and tried at once. An
    /// attempt already running finishes first.
    pub fn requeue(self: &Rc<Self>, id: &QueueId) -> Result<(), OpError> {
        let requeued = self.core.borrow_mut().requeue(id, now());
        self.run_actions();
        requeued
    }

    /// Tries now the messages with a recipient still to deliver in `domain` (any case),
    /// and forgets which hosts failed recently. Returns how many messages were woken.
    pub fn flush_domain(self: &Rc<Self>, domain: &str) -> usize {
        let n = self.core.borrow_mut().flush_domain(domain, now());
        self.run_actions();
        n
    }

    /// Removes a message from the queue without notifying anyone.
    pub fn delete(self: &Rc<Self>, id: &QueueId) -> Result<(), OpError> {
        let deleted = self.core.borrow_mut().delete(id);
        self.run_actions();
        deleted
    }
}
