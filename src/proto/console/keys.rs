//! Terminal input decoding: bytes in, keys out, whatever way the bytes were split.
//!
//! A state machine over single bytes: UTF-8 sequences, the escape sequences VT100-style
//! terminals send for arrows, Home, End and Delete (`ESC [ …`, `ESC O …`), and line ends
//! (CR, LF or CR LF, and the CR NUL of some telnet-era terminals are one Enter). Anything
//! it does not know is dropped, never guessed at: a half-received sequence waits for its
//! next byte, so feeding bytes whole, one by one or split anywhere gives the same keys.

use super::editor::width;
use crate::proto::logtext::reorders;

/// One key press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable character (never a control character).
    Char(char),
    Enter,
    Tab,
    /// Erase the character before the cursor (DEL or Ctrl-H).
    Backspace,
    /// Erase the character under the cursor (`ESC [ 3 ~`).
    Delete,
    Left,
    Right,
    Up,
    Down,
    Home,
    End,
    /// Ctrl and a letter, as the lower-case letter: `Ctrl(b'a')` is Ctrl-A.
    Ctrl(u8),
}

/// Longest escape sequence parameter kept: real keys use one or two digits.
const MAX_CSI_PARAMS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ground,
    /// After ESC.
    Escape,
    /// After `ESC [`, with the parameter bytes so far.
    Csi {
        params: [u8; MAX_CSI_PARAMS],
        len: u8,
        overflow: bool,
    },
    /// After `ESC O`.
    Ss3,
    /// Inside a UTF-8 sequence: the code point so far and the bytes still to come.
    Utf8 {
        value: u32,
        left: u8,
        min: u32,
    },
}

/// The decoder. Feed it bytes with [`KeyDecoder::feed`].
#[derive(Clone, Debug)]
pub struct KeyDecoder {
    state: State,
    /// The last byte was a CR: an LF or NUL right after it belongs to the same Enter.
    after_cr: bool,
}

impl Default for KeyDecoder {
    fn default() -> Self {
        KeyDecoder {
            state: State::Ground,
            after_cr: false,
        }
    }
}

impl KeyDecoder {
    /// Decodes `bytes`, appending the keys they complete to `keys`.
    pub fn feed(&mut self, bytes: &[u8], keys: &mut Vec<Key>) {
        for &b in bytes {
            if let Some(key) = self.byte(b) {
                keys.push(key);
            }
        }
    }

    fn byte(&mut self, b: u8) -> Option<Key> {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match self.state {
            State::Ground => self.ground(b, after_cr),
            State::Escape => {
                self.state = match b {
                    b'[' => State::Csi {
                        params: [0; MAX_CSI_PARAMS],
                        len: 0,
                        overflow: false,
                    },
                    b'O' => State::Ss3,
                    // ESC ESC: the second one starts afresh.
                    0x1b => State::Escape,
                    // Meta and an unknown key: dropped.
                    _ => State::Ground,
                };
                None
            }
            State::Csi {
                mut params,
                mut len,
                mut overflow,
            } => match b {
                0x20..=0x3f => {
                    if let Some(param) = params.get_mut(usize::from(len)) {
                        *param = b;
                        len += 1;
                    } else {
                        overflow = true;
                    }
                    self.state = State::Csi {
                        params,
                        len,
                        overflow,
                    };
                    None
                }
                0x40..=0x7e => {
                    self.state = State::Ground;
                    if overflow {
                        return None;
                    }
                    csi_key(params.get(..usize::from(len))?, b)
                }
                // A control byte inside a sequence abandons it.
                _ => {
                    self.state = State::Ground;
                    None
                }
            },
            State::Ss3 => {
                self.state = State::Ground;
                match b {
                    b'A' => Some(Key::Up),
                    b'B' => Some(Key::Down),
                    b'C' => Some(Key::Right),
                    b'D' => Some(Key::Left),
                    b'H' => Some(Key::Home),
                    b'F' => Some(Key::End),
                    _ => None,
                }
            }
            State::Utf8 { value, left, min } => {
                if b & 0xc0 != 0x80 {
                    // A broken sequence: dropped, and this byte starts afresh.
                    self.state = State::Ground;
                    return self.ground(b, after_cr);
                }
                let value = (value << 6) | u32::from(b & 0x3f);
                if left > 1 {
                    self.state = State::Utf8 {
                        value,
                        left: left - 1,
                        min,
                    };
                    return None;
                }
                self.state = State::Ground;
                // Overlong forms, surrogates, C1 controls, characters that would
                // reorder the line around them and those a terminal draws over the one
                // before (a combining mark: terminals send the composed form) are
                // dropped.
                match char::from_u32(value) {
                    Some(c) if value >= min && !c.is_control() && !reorders(c) && width(c) > 0 => {
                        Some(Key::Char(c))
                    }
                    _ => None,
                }
            }
        }
    }

    fn ground(&mut self, b: u8, after_cr: bool) -> Option<Key> {
        match b {
            b'\r' => {
                self.after_cr = true;
                Some(Key::Enter)
            }
            b'\n' | 0 if after_cr => None,
            b'\n' => Some(Key::Enter),
            b'\t' => Some(Key::Tab),
            0x7f | 0x08 => Some(Key::Backspace),
            0x1b => {
                self.state = State::Escape;
                None
            }
            0x01..=0x1a => Some(Key::Ctrl(b - 1 + b'a')),
            0x00 | 0x1c..=0x1f => None,
            0x20..=0x7e => Some(Key::Char(char::from(b))),
            0xc2..=0xdf => self.start_utf8(u32::from(b & 0x1f), 1, 0x80),
            0xe0..=0xef => self.start_utf8(u32::from(b & 0x0f), 2, 0x800),
            0xf0..=0xf4 => self.start_utf8(u32::from(b & 0x07), 3, 0x10000),
            // Continuation bytes without a start, and bytes UTF-8 never uses.
            _ => None,
        }
    }

    fn start_utf8(&mut self, value: u32, left: u8, min: u32) -> Option<Key> {
        self.state = State::Utf8 { value, left, min };
        None
    }
}

/// The key of a complete `ESC [ params final` sequence.
fn csi_key(params: &[u8], last: u8) -> Option<Key> {
    match (params, last) {
        ([], b'A') => Some(Key::Up),
        ([], b'B') => Some(Key::Down),
        ([], b'C') => Some(Key::Right),
        ([], b'D') => Some(Key::Left),
        ([], b'H') => Some(Key::Home),
        ([], b'F') => Some(Key::End),
        (b"1" | b"7", b'~') => Some(Key::Home),
        (b"4" | b"8", b'~') => Some(Key::End),
        (b"3", b'~') => Some(Key::Delete),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut out = Vec::new();
        KeyDecoder::default().feed(bytes, &mut out);
        out
    }

    #[test]
    fn printable_controls_and_line_ends() {
        assert_eq!(
            keys(b"ab\x01\x05\x7f\x08\t"),
            [
                Key::Char('a'),
                Key::Char('b'),
                Key::Ctrl(b'a'),
                Key::Ctrl(b'e'),
                Key::Backspace,
                Key::Backspace,
                Key::Tab
            ]
        );
        assert_eq!(keys(b"\r\n"), [Key::Enter]);
        assert_eq!(keys(b"\r\0"), [Key::Enter]);
        assert_eq!(keys(b"\n\n"), [Key::Enter, Key::Enter]);
        assert_eq!(keys(b"\r\r"), [Key::Enter, Key::Enter]);
        assert_eq!(
            keys(b"\x03\x04\x15\x17"),
            [
                Key::Ctrl(b'c'),
                Key::Ctrl(b'd'),
                Key::Ctrl(b'u'),
                Key::Ctrl(b'w')
            ]
        );
    }

    #[test]
    fn escape_sequences() {
        assert_eq!(
            keys(b"\x1b[A\x1b[B\x1b[C\x1b[D\x1bOH\x1b[4~\x1b[3~\x1b[1~"),
            [
                Key::Up,
                Key::Down,
                Key::Right,
                Key::Left,
                Key::Home,
                Key::End,
                Key::Delete,
                Key::Home
            ]
        );
        // Unknown sequences, over-long parameters and a meta key vanish whole.
        assert_eq!(keys(b"\x1b[15~x"), [Key::Char('x')]);
        assert_eq!(keys(b"\x1b[1;2;3;4;5;6;7;8;9Ay"), [Key::Char('y')]);
        assert_eq!(keys(b"\x1bbz"), [Key::Char('z')]);
    }

    #[test]
    fn utf8_and_garbage() {
        assert_eq!(
            keys("é€😀".as_bytes()),
            [Key::Char('é'), Key::Char('€'), Key::Char('😀')]
        );
        // Overlong, surrogate, C1 control, stray continuation, broken sequence.
        assert_eq!(
            keys(b"\xc0\xaf\xed\xa0\x80\xc2\x85\x80\xc3a"),
            [Key::Char('a')]
        );
        // A bidirectional override, a combining accent, a zero-width space: dropped.
        assert_eq!(
            keys("a\u{202e}b\u{301}c\u{200b}日".as_bytes()),
            [
                Key::Char('a'),
                Key::Char('b'),
                Key::Char('c'),
                Key::Char('日')
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_keys() {
        let input = "ab\x1b[A\r\n\x1b[3~é😀\x1bOD\r\0x\x1b[1;5C\n".as_bytes();
        let whole = keys(input);
        for cut in 0..=input.len() {
            let mut d = KeyDecoder::default();
            let mut out = Vec::new();
            d.feed(&input[..cut], &mut out);
            d.feed(&input[cut..], &mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
        let mut d = KeyDecoder::default();
        let mut out = Vec::new();
        for b in input {
            d.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, whole);
    }
}
