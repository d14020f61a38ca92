//! Queue operations for administrators: list, show, flush, hold, release, delete.
//!
//! The library API that the control socket (and later the console) calls. Holds are
//! written to the message's envelope, so they survive a restart.

use std::fmt;
use std::rc::Rc;

use super::{Active, Backing, Scheduler};
use crate::clock::unix_now;
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
    fn of(active: &Active) -> QueueEntry {
        let env: &Envelope = &active.env;
        QueueEntry {
            id: env.id.clone(),
            arrived: env.arrived,
            sender: env.sender.clone(),
            size: env.size,
            held: env.held,
            active: active.in_flight > 0,
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
        let inner = self.inner.borrow();
        let mut out: Vec<QueueEntry> = inner.messages.values().map(QueueEntry::of).collect();
        out.sort_by(|a, b| (a.arrived, &a.id).cmp(&(b.arrived, &b.id)));
        out
    }

    /// One message: its listing entry and its content as queued.
    pub fn show(&self, id: &QueueId) -> Result<(QueueEntry, Vec<u8>), OpError> {
        let inner = self.inner.borrow();
        let active = inner
            .messages
            .get(id)
            .ok_or_else(|| OpError::NoSuchMessage(id.clone()))?;
        let content = match &active.content {
            Some(c) => c.to_vec(),
            None => self
                .spool
                .read_content(id)
                .map_err(|e| OpError::Unreadable(id.clone(), e.to_string()))?,
        };
        Ok((QueueEntry::of(active), content))
    }

    /// Tries every deferred message now, and forgets which hosts failed recently.
    /// Returns how many messages were woken.
    pub fn flush(self: &Rc<Self>) -> usize {
        self.flush_matching(|_| true)
    }

    /// Tries now the messages with a recipient still to deliver in `domain` (any case).
    pub fn flush_domain(self: &Rc<Self>, domain: &str) -> usize {
        let domain = domain.to_ascii_lowercase();
        self.flush_matching(|env| {
            env.recipients.iter().any(|r| {
                r.status.is_open()
                    && r.address
                        .rsplit_once('@')
                        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&domain))
            })
        })
    }

    fn flush_matching(self: &Rc<Self>, wanted: impl Fn(&Envelope) -> bool) -> usize {
        let now = unix_now();
        let due: Vec<QueueId> = {
            let mut inner = self.inner.borrow_mut();
            for d in inner.destinations.values_mut() {
                d.avoid.clear();
            }
            inner
                .messages
                .values_mut()
                .filter(|a| !a.env.held && a.in_flight == 0 && wanted(&a.env))
                .map(|a| {
                    a.env.next_attempt = now;
                    a.env.id.clone()
                })
                .collect()
        };
        log::info!(target: "qmgr", "flush: {} message(s)", due.len());
        for id in &due {
            self.dispatch(id);
        }
        due.len()
    }

    /// Keeps a message from being delivered until it is released. An attempt already
    /// running finishes.
    pub fn hold(self: &Rc<Self>, id: &QueueId) -> Result<(), OpError> {
        self.set_held(id, true)?;
        log::info!(target: "qmgr", "{id}: held by the administrator");
        Ok(())
    }

    /// Releases a held message and tries it at once.
    pub fn release(self: &Rc<Self>, id: &QueueId) -> Result<(), OpError> {
        self.set_held(id, false)?;
        log::info!(target: "qmgr", "{id}: released by the administrator");
        if let Some(a) = self.inner.borrow_mut().messages.get_mut(id) {
            a.env.next_attempt = unix_now();
        }
        self.dispatch(id);
        Ok(())
    }

    fn set_held(self: &Rc<Self>, id: &QueueId, held: bool) -> Result<(), OpError> {
        let mut inner = self.inner.borrow_mut();
        let active = inner
            .messages
            .get_mut(id)
            .ok_or_else(|| OpError::NoSuchMessage(id.clone()))?;
        active.env.held = held;
        // The hold is written down so that a restart keeps it.
        match active.backing {
            Backing::File => {
                if let Err(e) = self.spool.update(&active.env) {
                    log::error!(target: "qmgr", "{id}: cannot update queue file: {e}");
                }
            }
            Backing::Journal(segment) => self.move_to_file(active, segment),
        }
        Ok(())
    }

    /// Like Postfix's `postsuper -r`: a held message is released, and the recipients
    /// still open are routed again by the running configuration and tried at once. An
    /// attempt already running finishes first.
    pub fn requeue(self: &Rc<Self>, id: &QueueId) -> Result<(), OpError> {
        let held = self
            .inner
            .borrow()
            .messages
            .get(id)
            .map(|a| a.env.held)
            .ok_or_else(|| OpError::NoSuchMessage(id.clone()))?;
        if held {
            self.set_held(id, false)?;
        }
        if let Some(a) = self.inner.borrow_mut().messages.get_mut(id) {
            a.env.next_attempt = unix_now();
        }
        log::info!(target: "qmgr", "{id}: requeued by the administrator");
        self.dispatch(id);
        Ok(())
    }

    /// Removes a message from the queue without notifying anyone.
    pub fn delete(self: &Rc<Self>, id: &QueueId) -> Result<(), OpError> {
        let active = self
            .inner
            .borrow_mut()
            .messages
            .remove(id)
            .ok_or_else(|| OpError::NoSuchMessage(id.clone()))?;
        let removed = match active.backing {
            Backing::File => self.spool.remove(id),
            Backing::Journal(segment) => self.journal.borrow_mut().done(id, segment),
        };
        if let Err(e) = removed {
            log::error!(target: "qmgr", "{id}: cannot remove from the queue: {e}");
        }
        log::info!(target: "qmgr", "{id}: removed by the administrator");
        Ok(())
    }
}
