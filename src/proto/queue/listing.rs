//! What the administrator's queue operations answer, as plain values: a message as a
//! listing shows it ([`QueueEntry`]), the operations and their errors, the `mailq`
//! listing and the `qshape` summary. No I/O: the queue manager (`relay::ops`) fills them
//! in and the control socket and the console print them.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use crate::proto::calendar::mailq_stamp;
use crate::proto::queue::{Envelope, QueueId, RcptStatus};

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

/// What an administrator does to queued messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueOp {
    Hold,
    Release,
    Delete,
    Requeue,
}

impl QueueOp {
    /// The word of the command, and what a message is once it is done.
    pub fn words(self) -> (&'static str, &'static str) {
        match self {
            QueueOp::Hold => ("hold", "held"),
            QueueOp::Release => ("release", "released"),
            QueueOp::Delete => ("delete", "deleted"),
            QueueOp::Requeue => ("requeue", "requeued"),
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

/// The domain column of `qshape`: Postfix's qshape prints 24 characters of a domain.
const SHAPE_NAME_WIDTH: usize = 24;

/// Age columns of `show queue summary`, in minutes, as Postfix's qshape has them.
const AGE_BUCKETS: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];
/// Most domains listed by `show queue summary`; the rest are summed in the last row.
const MAX_SHAPE_DOMAINS: usize = 50;

/// `show queue summary`: recipients still to deliver, by domain and by age, like
/// Postfix's qshape.
pub fn qshape(entries: &[QueueEntry], now: u64) -> String {
    let columns = AGE_BUCKETS.len() + 1;
    let mut rows: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut total = vec![0u64; columns + 1];
    for e in entries {
        let age = now.saturating_sub(e.arrived) / 60;
        let bucket = AGE_BUCKETS
            .iter()
            .position(|b| age < *b)
            .unwrap_or(AGE_BUCKETS.len());
        for r in e
            .recipients
            .iter()
            .filter(|r| r.status == "pending" || r.status == "deferred")
        {
            let domain = r
                .address
                .rsplit_once('@')
                .map_or("", |(_, d)| d)
                .to_ascii_lowercase();
            let row = rows.entry(domain).or_insert_with(|| vec![0; columns + 1]);
            row[0] += 1;
            row[bucket + 1] += 1;
            total[0] += 1;
            total[bucket + 1] += 1;
        }
    }
    let mut ordered: Vec<(String, Vec<u64>)> = rows.into_iter().collect();
    ordered.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then(a.0.cmp(&b.0)));
    if ordered.len() > MAX_SHAPE_DOMAINS {
        let rest = ordered.split_off(MAX_SHAPE_DOMAINS - 1);
        let mut sum = vec![0u64; columns + 1];
        for (_, row) in &rest {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v;
            }
        }
        ordered.push((format!("({} more)", rest.len()), sum));
    }
    let mut out = format!("{:>SHAPE_NAME_WIDTH$} {:>5}", "", "T");
    for b in AGE_BUCKETS {
        let _ = write!(out, " {b:>5}");
    }
    let _ = writeln!(out, " {:>5}+", AGE_BUCKETS[AGE_BUCKETS.len() - 1]);
    for (name, row) in std::iter::once(("TOTAL".to_string(), total)).chain(ordered) {
        let name: String = name.chars().take(SHAPE_NAME_WIDTH).collect();
        let _ = write!(out, "{name:>SHAPE_NAME_WIDTH$}");
        for v in row {
            let _ = write!(out, " {v:>5}");
        }
        out.push('\n');
    }
    out
}

/// A listing in the shape of Postfix's `mailq`: `*` marks a message being delivered,
/// `!` a held one.
pub fn list_text(entries: &[QueueEntry]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out =
        String::from("-Queue ID-        --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    let mut total = 0u64;
    for e in entries {
        total += e.size;
        let mark = if e.held {
            "!"
        } else if e.active {
            "*"
        } else {
            " "
        };
        let sender = if e.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &e.sender
        };
        out.push_str(&format!(
            "{}{mark} {:>8} {} {sender}\n",
            e.id,
            e.size,
            mailq_stamp(e.arrived)
        ));
        for r in &e.recipients {
            if let Some(reply) = r.reply.as_ref().filter(|_| r.status != "delivered") {
                out.push_str(&format!("{:49}({}: {reply})\n", "", r.status));
            }
            out.push_str(&format!("{:49}{}\n", "", r.address));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "-- {} Kbytes in {} Request{}.\n",
        total.div_ceil(1024),
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arrived: u64, rcpts: &[(&str, &'static str)]) -> QueueEntry {
        QueueEntry {
            id: "18E0F3A2C41B0700".parse().unwrap(),
            arrived,
            sender: "a@b".into(),
            size: 10,
            held: false,
            active: false,
            attempts: 1,
            next_attempt: 0,
            recipients: rcpts
                .iter()
                .map(|(a, s)| EntryRecipient {
                    address: a.to_string(),
                    status: s,
                    reply: None,
                })
                .collect(),
        }
    }

    #[test]
    fn qshape_counts_open_recipients_by_domain_and_age() {
        let now = 1_000_000;
        let entries = [
            entry(
                now - 60,
                &[
                    ("a@example.com", "deferred"),
                    ("b@Example.com", "pending"),
                    ("c@x.org", "delivered"),
                ],
            ),
            entry(now - 3 * 3600, &[("d@x.org", "deferred")]),
            entry(now - 2 * 86_400, &[("e@example.com", "deferred")]),
        ];
        let text = qshape(&entries, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"
            ]
        );
        let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        // 1 minute old: under 5; 3 hours: 160 to 320; 2 days: over 1280.
        assert_eq!(
            cells(lines[1]),
            [
                "TOTAL", "4", "2", "0", "0", "0", "0", "0", "1", "0", "0", "1"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                "example.com",
                "3",
                "2",
                "0",
                "0",
                "0",
                "0",
                "0",
                "0",
                "0",
                "0",
                "1"
            ]
        );
        assert_eq!(
            cells(lines[3]),
            [
                "x.org", "1", "0", "0", "0", "0", "0", "0", "1", "0", "0", "0"
            ]
        );
    }
}
