//! A person at a terminal: a program on a real pseudo-terminal (openpty(3)), keys typed
//! into it, and the screen a dumb terminal would show of what it writes back.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use drawbridge::proto::console::screen::Screen;

use super::WAIT;

/// A program running on a pseudo-terminal of 24 rows and 80 columns.
pub struct Terminal {
    master: File,
    pub child: Option<Child>,
    /// The other side, kept open while a program is to open it by name.
    slave: Option<File>,
    seen: Arc<Mutex<Vec<u8>>>,
    /// Where the next `expect` starts looking.
    mark: usize,
}

impl Terminal {
    /// Starts `command` with the terminal as its standard input, output and error.
    pub fn spawn(mut command: Command) -> Terminal {
        let (mut term, slave) = Terminal::open();
        let child = command
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("start the program");
        drop(command);
        term.child = Some(child);
        term
    }

    /// A terminal whose other side a program opens by its path, as a serial device.
    pub fn device() -> (Terminal, String) {
        let (mut term, slave) = Terminal::open();
        // SAFETY: ttyname on an open descriptor; the string is copied at once.
        let path = unsafe {
            std::ffi::CStr::from_ptr(libc::ttyname(std::os::fd::AsRawFd::as_raw_fd(&slave)))
                .to_string_lossy()
                .into_owned()
        };
        term.slave = Some(slave);
        (term, path)
    }

    /// A pseudo-terminal and its reader; the other side for the caller.
    fn open() -> (Terminal, File) {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors we then own.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: the descriptors are ours and open.
        let (master, slave) = unsafe { (File::from_raw_fd(master), File::from_raw_fd(slave)) };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last holder of the other side has gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let term = Terminal {
            master,
            child: None,
            slave: None,
            seen,
            mark: 0,
        };
        (term, slave)
    }

    /// Types `keys`.
    pub fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Types `keys` one key at a time, as a person does.
    pub fn type_keys(&mut self, keys: &str) {
        for c in keys.chars() {
            let mut b = [0u8; 4];
            self.master
                .write_all(c.encode_utf8(&mut b).as_bytes())
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until `needle` appears after the last match; returns what came before it
    /// and moves past it.
    pub fn expect(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let seen = self.seen.lock().unwrap().clone();
            let text = String::from_utf8_lossy(&seen[self.mark.min(seen.len())..]).into_owned();
            if let Some(at) = text.find(needle) {
                let before = text[..at].to_string();
                self.mark += text[..at + needle.len()].len();
                return before;
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out waiting for {needle:?}; the screen:\n{}",
                self.screen().text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What a dumb terminal shows now.
    pub fn screen(&self) -> Screen {
        let mut screen = Screen::default();
        screen.feed(&self.seen.lock().unwrap());
        screen
    }

    /// Waits for the program to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("a program runs");
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < WAIT, "the program did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
