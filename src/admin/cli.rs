//! `drawbridge cli`: attaches this terminal to the running gateway's console through the
//! control socket.
//!
//! Standard input goes raw (when it is a terminal) and every byte goes to the gateway;
//! every byte back goes to standard output. The terminal's size is sent first, for the
//! pager; when standard input is not a terminal (a script), output is never paged. The
//! terminal is put back as it was when the session ends.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::io::tty;

/// Runs a console session on the gateway of `state_dir` until it ends.
pub fn run(state_dir: &Path, login: bool) -> io::Result<()> {
    let path = crate::gateway::socket_path(state_dir);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("no gateway answers on {}: {e}", path.display()),
        )
    })?;
    let stdin = io::stdin();
    let fd = stdin.as_raw_fd();
    let terminal = tty::is_terminal(fd);
    let (rows, columns) = if terminal {
        tty::window_size(io::stdout().as_raw_fd())
            .or_else(|| tty::window_size(fd))
            .unwrap_or((24, 80))
    } else {
        // A script: nothing paged, no line scrolled.
        (0, 0)
    };
    stream.write_all(super::cli_request(rows, columns, login).as_bytes())?;
    if terminal {
        tty::make_raw(fd)?;
    }
    let mut sending = stream.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut input = io::stdin();
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sending.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        // The end of a script: the gateway finishes what it was given, then closes.
        let _ = sending.shutdown(std::net::Shutdown::Write);
    });
    let mut stdout = io::stdout();
    let mut buf = [0u8; 4096];
    let result = loop {
        match stream.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()) {
                    break Err(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    tty::restore();
    result
}
