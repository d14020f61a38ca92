//! Unix signals as an async stream: SIGHUP (reload the committed configuration) and
//! SIGTERM or SIGINT (stop cleanly), delivered to the executor through a socket pair
//! (the self-pipe trick: the handler only writes one byte, which is async-signal-safe).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};

use async_io::Async;
use smol::io::AsyncReadExt;

/// A signal the gateway acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Hangup,
    Terminate,
    Interrupt,
}

impl Signal {
    fn from_raw(n: u8) -> Option<Signal> {
        match i32::from(n) {
            libc::SIGHUP => Some(Signal::Hangup),
            libc::SIGTERM => Some(Signal::Terminate),
            libc::SIGINT => Some(Signal::Interrupt),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        }
    }
}

/// The write end the handler uses; -1 until installed.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // The byte carries the signal number; all three fit in a byte.
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one byte on our stack. A
        // full socket loses the byte, which is harmless: one is enough to wake.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// The signals, read asynchronously.
pub struct Signals {
    read: Async<UnixStream>,
    // Kept open for the handler.
    _write: UnixStream,
}

impl Signals {
    /// Installs the handlers for SIGHUP, SIGTERM and SIGINT. Call once per process.
    pub fn install() -> io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        write.set_nonblocking(true)?;
        WRITE_FD.store(write.as_raw_fd() as RawFd, Ordering::Relaxed);
        // SAFETY: sigset_t is initialised by sigemptyset before use.
        let mut handled: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: handled is valid for writes.
        unsafe { libc::sigemptyset(&mut handled) };
        for signal in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
            // SAFETY: a zeroed sigaction with our handler and an empty mask is valid;
            // SA_RESTART keeps blocking system calls in other threads from failing.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::sigaddset(&mut handled, signal);
            }
        }
        // A parent may hand its blocked signals down (a mask survives exec): blocked,
        // ours would wait pending for ever and the gateway would never stop or reload.
        // SAFETY: handled is a valid set; no old mask is wanted.
        if unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &handled, std::ptr::null_mut()) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Signals {
            read: Async::new(read)?,
            _write: write,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        let mut byte = [0u8; 1];
        loop {
            if let Ok(1) = self.read.read(&mut byte).await
                && let Some(s) = Signal::from_raw(byte[0])
            {
                return s;
            }
        }
    }
}
