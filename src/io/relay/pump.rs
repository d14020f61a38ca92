//! The async driver both outgoing SMTP connections share, delivery
//! ([`connection`](super::connection)) and recipient verification
//! ([`callout`](super::callout)): connecting, and the pump that moves bytes between a
//! socket and a client core and arms the core's deadline.
//!
//! What differs stays with each: delivery runs STARTTLS, SCRAM derivations and streamed
//! content between turns of the pump and waits for the answer to QUIT; a callout never
//! waits for a goodbye.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::io::runtime::timer_at;
use crate::io::tls::Transport;
use crate::proto::smtp::callout::{CalloutClient, CalloutEvent};
use crate::proto::smtp::client::{Client, ClientEvent};

/// A client core as its driver sees it: bytes and time in; bytes, events and a deadline
/// out (the method vocabulary every core has).
pub trait ClientCore {
    type Event;
    fn handle_input(&mut self, bytes: &[u8], now: Instant);
    fn handle_timeout(&mut self, now: Instant);
    fn handle_eof(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    fn poll_event(&mut self) -> Option<Self::Event>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn is_closed(&self) -> bool;
}

/// Implements [`ClientCore`] by the core's own methods of the same names.
macro_rules! client_core {
    ($core:ty, $event:ty) => {
        impl ClientCore for $core {
            type Event = $event;
            fn handle_input(&mut self, bytes: &[u8], now: Instant) {
                <$core>::handle_input(self, bytes, now)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$core>::handle_timeout(self, now)
            }
            fn handle_eof(&mut self, now: Instant) {
                <$core>::handle_eof(self, now)
            }
            fn poll_transmit(&mut self) -> Option<Vec<u8>> {
                <$core>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> Option<$event> {
                <$core>::poll_event(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$core>::poll_timeout(self)
            }
            fn is_closed(&self) -> bool {
                <$core>::is_closed(self)
            }
        }
    };
}

client_core!(Client, ClientEvent);
client_core!(CalloutClient, CalloutEvent);

/// A byte stream to a server: plain TCP, or TLS after STARTTLS.
pub trait ByteStream {
    /// Reads what has come; `Ok(0)` at the end of the stream.
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    async fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
}

impl ByteStream for Transport {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Transport::read(self, buf).await
    }
    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        Transport::write_all(self, data).await
    }
}

impl ByteStream for Async<TcpStream> {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        AsyncReadExt::read(self, buf).await
    }
    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        AsyncWriteExt::write_all(self, data).await
    }
}

/// Opens a TCP connection to `peer`, with Nagle off: commands are short and a pipelined
/// group is one write. The caller bounds the time.
pub async fn connect(peer: SocketAddr) -> io::Result<Async<TcpStream>> {
    let stream = Async::<TcpStream>::connect(peer).await?;
    let _ = stream.get_ref().set_nodelay(true);
    Ok(stream)
}

/// One socket under a core: where it goes, how long a write may stall, and which log
/// target speaks of it.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// A peer that takes none of our bytes for this long is given up on.
    pub write_timeout: Duration,
    pub log_target: &'static str,
}

/// Writes everything the core has to send; false (after telling the core) when the peer
/// is gone or takes nothing for the write timeout.
pub async fn flush<C: ClientCore, S: ByteStream>(core: &mut C, stream: &mut S, peer: Peer) -> bool {
    while let Some(mut out) = core.poll_transmit() {
        // Everything the core has queued goes out in one write (one segment where it
        // fits): the end of data with the last piece of content, pipelined commands
        // together. The delivery core queues at most one content piece, so its memory
        // bound stands.
        while let Some(more) = core.poll_transmit() {
            out.extend_from_slice(&more);
        }
        let write = stream.write_all(&out);
        let stalled = async {
            Timer::after(peer.write_timeout).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer stopped reading",
            ))
        };
        if let Err(e) = write.or(stalled).await {
            log::debug!(target: peer.log_target, "write to {}: {e}", peer.addr);
            core.handle_eof(Instant::now());
            return false;
        }
    }
    true
}

/// One turn of the pump: writes what the core has, then either hands over an event
/// already waiting, or waits for input or the core's deadline and hands over what that
/// brought. `None` when there is nothing yet, or the core is closed.
pub async fn turn<C: ClientCore, S: ByteStream>(
    core: &mut C,
    stream: &mut S,
    buf: &mut [u8],
    peer: Peer,
) -> Option<C::Event> {
    if let Some(event) = core.poll_event() {
        return Some(event);
    }
    if !flush(core, stream, peer).await {
        return core.poll_event();
    }
    if let Some(event) = core.poll_event() {
        return Some(event);
    }
    if core.is_closed() {
        return None;
    }
    let deadline = core.poll_timeout();
    let read = async { Some(stream.read(buf).await) };
    let timeout = async {
        timer_at(deadline).await;
        None
    };
    match read.or(timeout).await {
        Some(Ok(0)) | Some(Err(_)) => core.handle_eof(Instant::now()),
        Some(Ok(n)) => core.handle_input(&buf[..n], Instant::now()),
        None => core.handle_timeout(Instant::now()),
    }
    core.poll_event()
}
