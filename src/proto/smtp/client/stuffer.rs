//! Dot-stuffing of outgoing message content (RFC 5321 §4.5.2), piece by piece.

use crate::proto::smtp::data;

/// Dot-stuffs message content piece by piece (RFC 5321 §4.5.2) and ends it with
/// `CRLF.CRLF`. Its state carries over between pieces, so where the content is cut makes
/// no difference to the wire.
///
/// A bare CR or LF becomes CRLF, so nothing in the content can end the data early or be
/// read differently by the server. Content not ending in a line break gets one.
#[derive(Debug)]
pub(super) struct Stuffer {
    /// The next octet starts a line (a dot there is doubled).
    line_start: bool,
    /// The last octet read was a CR whose line break is not written yet.
    pending_cr: bool,
}

impl Stuffer {
    pub(super) fn new() -> Stuffer {
        Stuffer {
            line_start: true,
            pending_cr: false,
        }
    }

    /// The wire form of the next piece of content: at most twice its length, plus the
    /// line break of a CR the previous piece ended with.
    pub(super) fn stuff(&mut self, input: &[u8]) -> Vec<u8> {
        // Worst case: every octet doubled.
        let mut out = Vec::with_capacity(input.len().saturating_mul(2));
        let mut rest = input;
        while let Some((&b, after)) = rest.split_first() {
            // A line that does not start with a dot needs nothing at its start: it is
            // inside the line from its first octet.
            if self.line_start && !self.pending_cr && b != b'.' {
                self.line_start = false;
            }
            // Inside a line, octets other than CR and LF go out as they are: a run of
            // them is copied whole.
            if !self.pending_cr && !self.line_start {
                let run = data::ordinary_run(rest);
                if let Some((piece, after_run)) = rest.split_at_checked(run).filter(|_| run > 0) {
                    out.extend_from_slice(piece);
                    rest = after_run;
                    continue;
                }
            }
            rest = after;
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                }
                _ => {
                    if self.line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    self.line_start = false;
                }
            }
        }
        out
    }

    /// The end of data: a line break the content lacked, then `.CRLF`; at most 5 octets.
    pub(super) fn finish(&mut self) -> Vec<u8> {
        const LINE_BREAK: &[u8] = b"\r\n";
        const END_OF_DATA: &[u8] = b".\r\n";
        let mut out = Vec::with_capacity(LINE_BREAK.len() + END_OF_DATA.len());
        if self.pending_cr || !self.line_start {
            out.extend_from_slice(LINE_BREAK);
        }
        out.extend_from_slice(END_OF_DATA);
        self.pending_cr = false;
        self.line_start = true;
        out
    }
}
