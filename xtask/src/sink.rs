//! Postfix's smtp-sink as the relay benchmark's final next hop, with its running message
//! counter read live.
//!
//! `smtp-sink -c` writes a record `sess=S quit=Q mesg=M` followed by CR whenever a session
//! ends, QUIT arrives or a message's final "." is received, and flushes each one; `mesg`
//! is the number of messages received so far. That counter is how the benchmark knows the
//! sink has all N messages.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::Failure;
use crate::process::{self, Guarded};

/// Longest counter record kept while waiting for its CR. A record is
/// `sess=N quit=N mesg=N`, under 80 bytes with 20-digit counters; anything longer is not a
/// counter record and is dropped.
const MAX_RECORD: usize = 128;

/// smtp-sink's listen backlog argument.
const BACKLOG: &str = "1000";

/// How long smtp-sink gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads smtp-sink's counter output in whatever pieces the pipe delivers.
#[derive(Debug, Default)]
pub struct CounterReader {
    record: Vec<u8>,
    overlong: bool,
    messages: u64,
}

impl CounterReader {
    pub fn handle_input(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\r' || byte == b'\n' {
                if !self.overlong
                    && let Some(messages) = parse_messages(&self.record)
                {
                    self.messages = self.messages.max(messages);
                }
                self.record.clear();
                self.overlong = false;
            } else if self.record.len() < MAX_RECORD {
                self.record.push(byte);
            } else {
                self.overlong = true;
            }
        }
    }

    /// The highest message count seen in a complete record.
    pub fn messages(&self) -> u64 {
        self.messages
    }
}

/// The `mesg=` figure of one counter record.
fn parse_messages(record: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(record).ok()?;
    text.split_ascii_whitespace()
        .find_map(|field| field.strip_prefix("mesg="))?
        .parse()
        .ok()
}

/// A running smtp-sink and the live count of messages it has received.
pub struct Sink {
    process: Guarded,
    messages: Arc<AtomicU64>,
    reader: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts smtp-sink on 127.0.0.1:`port` and waits until it accepts connections. Its
    /// diagnostics go to `log`.
    pub fn start(program: &Path, port: u16, log: &Path) -> Result<Sink, Failure> {
        Self::start_with(program, port, log, &[])
    }

    /// Like [`Sink::start`], with more smtp-sink options (`-w 1`: wait a second before
    /// answering each DATA).
    pub fn start_with(
        program: &Path,
        port: u16,
        log: &Path,
        options: &[&str],
    ) -> Result<Sink, Failure> {
        let mut command = Command::new(program);
        command.args(options);
        if process::is_root() {
            // smtp-sink refuses to run as root without a user to switch to.
            command.args(["-u", "postfix"]);
        }
        command
            .arg("-c")
            .arg(format!("127.0.0.1:{port}"))
            .arg(BACKLOG)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(process::log_file(log)?);
        let mut process = Guarded::spawn("smtp-sink", &mut command)?;
        let mut stdout = process
            .take_stdout()
            .ok_or_else(|| Failure::new("smtp-sink's output is not a pipe"))?;
        let messages = Arc::new(AtomicU64::new(0));
        let published = Arc::clone(&messages);
        let reader = thread::spawn(move || {
            let mut counter = CounterReader::default();
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stdout.read(&mut buffer) {
                let Some(bytes) = buffer.get(..read).filter(|bytes| !bytes.is_empty()) else {
                    break;
                };
                counter.handle_input(bytes);
                published.store(counter.messages(), Ordering::SeqCst);
            }
        });
        let mut sink = Sink {
            process,
            messages,
            reader: Some(reader),
        };
        process::wait_for_listener("smtp-sink", port, START_TIMEOUT, || {
            sink.process.check_running_logged(log)
        })?;
        Ok(sink)
    }

    /// Messages received so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::SeqCst)
    }

    pub fn check_running(&mut self) -> Result<(), Failure> {
        self.process.check_running()
    }

    pub fn stop(&mut self) {
        self.process.stop();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real `smtp-sink -c` output for 3 messages over 2 sessions.
    const OUTPUT: &[u8] = b"sess=0 quit=0 mesg=1\rsess=1 quit=1 mesg=1\rsess=1 quit=1 mesg=2\rsess=2 quit=2 mesg=2\rsess=2 quit=2 mesg=3\r";

    fn read_in_pieces(pieces: &[&[u8]]) -> u64 {
        let mut reader = CounterReader::default();
        for piece in pieces {
            reader.handle_input(piece);
        }
        reader.messages()
    }

    #[test]
    fn whole_output_counts_all_messages() {
        assert_eq!(read_in_pieces(&[OUTPUT]), 3);
    }

    #[test]
    fn splitting_does_not_change_the_count() {
        let bytes: Vec<&[u8]> = OUTPUT.chunks(1).collect();
        assert_eq!(read_in_pieces(&bytes), 3);
        for split in 0..=OUTPUT.len() {
            let (a, b) = OUTPUT.split_at(split);
            assert_eq!(read_in_pieces(&[a, b]), 3, "split at {split}");
        }
    }

    #[test]
    fn an_unfinished_record_does_not_count() {
        assert_eq!(
            read_in_pieces(&[b"sess=0 quit=0 mesg=1\rsess=0 quit=0 mesg=2"]),
            1
        );
    }

    #[test]
    fn newlines_also_end_records() {
        assert_eq!(read_in_pieces(&[b"sess=0 quit=0 mesg=4\n"]), 4);
    }

    #[test]
    fn junk_and_overlong_records_are_ignored() {
        let mut reader = CounterReader::default();
        reader.handle_input(b"smtp-sink: warning: something\rmesg=x\r");
        assert_eq!(reader.messages(), 0);
        let mut overlong = vec![b' '; MAX_RECORD];
        overlong.extend_from_slice(b"mesg=9\r");
        reader.handle_input(&overlong);
        assert_eq!(reader.messages(), 0);
        reader.handle_input(b"mesg=5\r");
        assert_eq!(reader.messages(), 5);
    }

    #[test]
    fn the_count_never_goes_back() {
        assert_eq!(read_in_pieces(&[b"mesg=7\rmesg=6\r"]), 7);
    }
}
