//! Picks one header field's value out of message content as it streams past, for the
//! `message-id=` log line: byte at a time, any split of the input gives the same
//! result, and memory is bounded by [`MAX_FIELD_VALUE`].

/// Longest value kept: RFC 5322 §2.1.1's 998-octet line. A longer (folded) value is cut
/// there; it only feeds a log line.
pub const MAX_FIELD_VALUE: usize = 998;

/// Where the scan stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a header line.
    LineStart,
    /// Reading a field name; `matched` octets of the wanted name (with its colon) so far,
    /// or `None` once it cannot be the wanted field.
    Name(Option<usize>),
    /// In the wanted field's value.
    Value,
    /// The wanted field's line ended: a continuation line (starting with space or tab)
    /// goes on with the value.
    ValueLineEnd,
    /// In a field we do not want.
    Skip,
    /// The header section ended or the field was found and complete.
    Done,
}

/// Reads the first occurrence of one header field (name matched without regard to case)
/// from content bytes: CRLF line ends, header section ended by an empty line.
#[derive(Clone, Debug)]
pub struct FieldScan {
    /// The field name with its colon, lowercase.
    name: &'static [u8],
    state: State,
    value: Vec<u8>,
    found: bool,
}

impl FieldScan {
    /// A scan for `name` (lowercase, with its colon, e.g. `b"message-id:"`).
    pub fn new(name: &'static [u8]) -> FieldScan {
        FieldScan {
            name,
            state: State::LineStart,
            value: Vec::new(),
            found: false,
        }
    }

    /// The `Message-ID` scan.
    pub fn message_id() -> FieldScan {
        FieldScan::new(b"message-id:")
    }

    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.state == State::Done {
                return;
            }
            self.step(b);
        }
    }

    fn step(&mut self, b: u8) {
        self.state = match self.state {
            State::LineStart | State::ValueLineEnd if b == b'\r' || b == b'\n' => {
                // An empty line ends the header section (its LF is not looked at).
                State::Done
            }
            State::ValueLineEnd if b == b' ' || b == b'\t' => {
                self.keep(b' ');
                State::Value
            }
            State::ValueLineEnd => {
                self.state = State::Done;
                return;
            }
            State::LineStart => self.name_octet(Some(0), b),
            State::Name(matched) => self.name_octet(matched, b),
            State::Value if b == b'\n' => State::ValueLineEnd,
            State::Value => {
                if b != b'\r' {
                    self.keep(b);
                }
                State::Value
            }
            State::Skip if b == b'\n' => State::LineStart,
            State::Skip => State::Skip,
            State::Done => State::Done,
        };
    }

    fn name_octet(&mut self, matched: Option<usize>, b: u8) -> State {
        if b == b'\n' {
            return State::LineStart;
        }
        match matched {
            Some(n) if self.name.get(n) == Some(&b.to_ascii_lowercase()) => {
                if n + 1 == self.name.len() {
                    self.found = true;
                    State::Value
                } else {
                    State::Name(Some(n + 1))
                }
            }
            _ if b == b':' => State::Skip,
            _ => State::Name(None),
        }
    }

    fn keep(&mut self, b: u8) {
        if self.value.len() < MAX_FIELD_VALUE {
            self.value.push(b);
        }
    }

    /// The value found (unfolded, trimmed), or `None` when the header section has no
    /// such field or none has been seen yet.
    pub fn value(&self) -> Option<String> {
        self.found
            .then(|| String::from_utf8_lossy(&self.value).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_whole(input: &[u8]) -> Option<String> {
        let mut s = FieldScan::message_id();
        s.push(input);
        s.value()
    }

    #[test]
    fn finds_the_field_in_any_case_and_unfolds_it() {
        let msg = b"Received: from x\r\n by y\r\nMESSAGE-ID:\r\n <a.b@example.org>\r\nSubject: s\r\n\r\nbody\r\n";
        assert_eq!(scan_whole(msg).as_deref(), Some("<a.b@example.org>"));
        let msg = b"Subject: s\r\nMessage-Id: <1@x>\r\n\r\n";
        assert_eq!(scan_whole(msg).as_deref(), Some("<1@x>"));
    }

    #[test]
    fn the_first_occurrence_counts_and_the_body_is_not_read() {
        let msg = b"Message-ID: <first@x>\r\nMessage-ID: <second@x>\r\n\r\n";
        assert_eq!(scan_whole(msg).as_deref(), Some("<first@x>"));
        let msg = b"Subject: s\r\n\r\nMessage-ID: <in-body@x>\r\n";
        assert_eq!(scan_whole(msg), None);
        // A field whose name only begins like it, or contains it, is another field.
        let msg = b"Message-IDs: <no@x>\r\nX-Message-ID: <no@x>\r\n\r\n";
        assert_eq!(scan_whole(msg), None);
    }

    #[test]
    fn the_value_is_bounded() {
        let mut msg = b"Message-ID: <".to_vec();
        msg.extend(std::iter::repeat_n(b'a', 5000));
        msg.extend_from_slice(b"@x>\r\n\r\n");
        // The space after the colon is kept, then trimmed.
        assert_eq!(scan_whole(&msg).unwrap().len(), MAX_FIELD_VALUE - 1);
    }

    #[test]
    fn any_split_gives_the_same_value() {
        let msg: &[u8] =
            b"From: a@x\r\nmessage-id: <s.p\r\n\tlit@x>\r\nTo: b@y\r\n\r\nMessage-ID: <body@x>\r\n";
        let whole = scan_whole(msg);
        assert_eq!(whole.as_deref(), Some("<s.p lit@x>"));
        for i in 0..=msg.len() {
            for j in i..=msg.len() {
                let mut s = FieldScan::message_id();
                s.push(&msg[..i]);
                s.push(&msg[i..j]);
                s.push(&msg[j..]);
                assert_eq!(s.value(), whole, "split at {i} and {j}");
            }
        }
    }
}
