//! Queue operations for administrators: list, show, summary, flush, hold, release,
//! delete, requeue, on one message or all.
//!
//! The library API that the control socket and the console call. Holds are written to
//! the message's envelope, so they survive a restart. What they answer is
//! `relay::listing`'s.

use std::fmt::Write as _;
use std::rc::Rc;

use super::{Scheduler, now};
use crate::proto::queue::core::{ContentRef, QueueCounts};
use crate::proto::queue::id::Target;
use crate::proto::queue::listing::{OpError, QueueEntry, QueueOp};
use crate::proto::queue::{Envelope, QueueId};

impl Scheduler {
    /// Every message in the queue, oldest first. Parked messages (past the active limit)
    /// are read from their envelope files on the blocking pool.
    pub async fn list(&self) -> Vec<QueueEntry> {
        let (mut entries, parked) = {
            let core = self.core.borrow();
            (core.list(), core.parked_ids())
        };
        if !parked.is_empty() {
            let files = self.spool.files();
            let read = smol::unblock(move || {
                parked
                    .into_iter()
                    .filter_map(|(id, held)| match files.load(&id) {
                        Ok(env) => Some(parked_entry(&env, held)),
                        // Delivered or deleted since the list was taken.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => {
                            log::warn!(target: "qmgr", "{id}: cannot read the queue file for a listing: {e}");
                            None
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            entries.extend(read);
            entries.sort_by(|a, b| (a.arrived, &a.id).cmp(&(b.arrived, &b.id)));
        }
        entries
    }

    /// How many messages are queued, held and being delivered; nothing is read.
    pub fn counts(&self) -> QueueCounts {
        self.core.borrow().counts()
    }

    /// Every queued message's id, oldest first; nothing is read.
    pub fn ids(&self) -> Vec<QueueId> {
        self.core.borrow().ids()
    }

    /// One message: its listing entry and its content as queued, its files read on the
    /// blocking pool.
    pub async fn show(&self, id: &QueueId) -> Result<(QueueEntry, Vec<u8>), OpError> {
        let unreadable = |e: std::io::Error| OpError::Unreadable(id.clone(), e.to_string());
        let (files, read) = (self.spool.files(), id.clone());
        let parked = self.core.borrow().parked(id);
        if let Some(held) = parked {
            let (env, content) = smol::unblock(move || {
                Ok::<_, std::io::Error>((files.load(&read)?, files.read_content(&read)?))
            })
            .await
            .map_err(unreadable)?;
            return Ok((parked_entry(&env, held), content));
        }
        let (entry, content) = self.core.borrow().entry(id)?;
        let content = match content {
            ContentRef::Memory(bytes) => bytes.to_vec(),
            ContentRef::File => smol::unblock(move || files.read_content(&read))
                .await
                .map_err(unreadable)?,
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

    /// Does `op` to one message or to every one, as `postsuper` does with `ALL`: one
    /// line per message; for a single message, its error is the error.
    pub fn operate(self: &Rc<Self>, op: QueueOp, target: &Target) -> Result<String, String> {
        let ids: Vec<QueueId> = match target {
            Target::One(id) => vec![id.clone()],
            Target::All => self.ids(),
        };
        let done = op.words().1;
        let mut out = String::new();
        for id in &ids {
            let result = match op {
                QueueOp::Hold => self.hold(id),
                QueueOp::Release => self.release(id),
                QueueOp::Delete => self.delete(id),
                QueueOp::Requeue => self.requeue(id),
            };
            match result {
                Ok(()) => {
                    let _ = writeln!(out, "{id}: {done}");
                }
                Err(e) if ids.len() == 1 => return Err(e.to_string()),
                Err(e) => {
                    let _ = writeln!(out, "{e}");
                }
            }
        }
        if ids.is_empty() {
            out.push_str("Mail queue is empty\n");
        }
        Ok(out)
    }

    /// Removes a message from the queue without notifying anyone.
    pub fn delete(self: &Rc<Self>, id: &QueueId) -> Result<(), OpError> {
        let deleted = self.core.borrow_mut().delete(id, now());
        self.run_actions();
        deleted
    }
}

/// A parked message's listing entry from its envelope file, with the hold the queue
/// manager knows (its file may not say it yet).
fn parked_entry(env: &Envelope, held: bool) -> QueueEntry {
    QueueEntry {
        held,
        ..QueueEntry::of(env, false)
    }
}
