//! The durable spool. (Interface placeholder: the implementation replaces this file.)

use std::io;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueId(pub heapless::String<16>);

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    Inbound,
    Outbound,
    Local,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    Full,
    Hdrs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RcptStatus {
    Pending,
    Deferred { reply: String },
    Delivered { reply: String },
    Failed { reply: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    pub orcpt: Option<String>,
    pub notify: u8,
    pub status: RcptStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: QueueId,
    pub arrived: u64,
    pub origin: Origin,
    pub client_ip: Option<IpAddr>,
    pub client_helo: String,
    pub sender: String,
    pub size: u64,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    pub recipients: Vec<Recipient>,
    pub attempts: u32,
    pub next_attempt: u64,
    pub held: bool,
}

pub struct Spool;
pub struct Incoming {
    pub id: QueueId,
}
pub struct Finished {
    pub id: QueueId,
}

impl Spool {
    pub fn open(_dir: &Path) -> io::Result<(Spool, Vec<Envelope>)> {
        todo!()
    }
    pub fn create(&self, _now_unix: u64) -> io::Result<Incoming> {
        todo!()
    }
    pub fn read_content(&self, _id: &QueueId) -> io::Result<Vec<u8>> {
        todo!()
    }
    pub fn update(&self, _env: &Envelope) -> io::Result<()> {
        todo!()
    }
    pub fn remove(&self, _id: &QueueId) -> io::Result<()> {
        todo!()
    }
}

impl Incoming {
    pub fn write(&mut self, _bytes: &[u8]) -> io::Result<()> {
        todo!()
    }
    pub fn finish(self, _env: &Envelope) -> io::Result<Finished> {
        todo!()
    }
    pub fn abort(self) {
        todo!()
    }
}

pub struct GroupCommit;

impl GroupCommit {
    pub fn new(_spool: std::rc::Rc<Spool>) -> GroupCommit {
        todo!()
    }
    pub async fn commit(&self, _f: Finished) -> io::Result<()> {
        todo!()
    }
}
