//! The line editor: the line being typed, its cursor and history, and how it is drawn on
//! a dumb terminal.
//!
//! Drawing uses nothing but printable characters, space, backspace (to move left), CR and
//! LF: no cursor-position queries, no colours, no other escape sequences, so it works on
//! any serial terminal. The screen keeps what it last drew and writes only the difference.
//! The line is kept on one screen row: a line longer than the row scrolls sideways under
//! the cursor. A character takes the columns a terminal gives it ([`width`]): two for
//! the wide forms of East Asian scripts and emoji, none for a combining mark, one for
//! the rest.

use std::collections::VecDeque;

/// Most characters in one line: the configuration grammar's longest line
/// ([`crate::proto::config::text::lex::MAX_LINE_OCTETS`], 2048 octets) in characters. A key that
/// would make it longer rings the bell.
pub const MAX_LINE_CHARS: usize = crate::proto::config::text::lex::MAX_LINE_OCTETS;
/// Lines kept in each history: 100 lines of at most [`MAX_LINE_CHARS`] (at most 800 KiB
/// in the worst case, a few KiB in practice).
pub const HISTORY_LINES: usize = 100;
/// The narrowest room the line is given after the prompt, in columns.
const MIN_LINE_COLUMNS: usize = 10;
/// The narrowest row assumed, in columns: the narrowest line after a one-column prompt,
/// and the last column, left free.
const MIN_COLUMNS: usize = MIN_LINE_COLUMNS + 2;
/// The terminal bell.
pub const BELL: &[u8] = b"\x07";

/// Code points a terminal shows two columns wide (Unicode's East Asian Wide and
/// Fullwidth: Hangul, CJK, kana, fullwidth forms, emoji), sorted.
const WIDE: &[(u32, u32)] = &[
    (0x1100, 0x115F),
    (0x231A, 0x231B),
    (0x2329, 0x232A),
    (0x23E9, 0x23EC),
    (0x23F0, 0x23F0),
    (0x23F3, 0x23F3),
    (0x25FD, 0x25FE),
    (0x2614, 0x2615),
    (0x2648, 0x2653),
    (0x267F, 0x267F),
    (0x2693, 0x2693),
    (0x26A1, 0x26A1),
    (0x26AA, 0x26AB),
    (0x26BD, 0x26BE),
    (0x26C4, 0x26C5),
    (0x26CE, 0x26CE),
    (0x26D4, 0x26D4),
    (0x26EA, 0x26EA),
    (0x26F2, 0x26F3),
    (0x26F5, 0x26F5),
    (0x26FA, 0x26FA),
    (0x26FD, 0x26FD),
    (0x2705, 0x2705),
    (0x270A, 0x270B),
    (0x2728, 0x2728),
    (0x274C, 0x274C),
    (0x274E, 0x274E),
    (0x2753, 0x2755),
    (0x2757, 0x2757),
    (0x2795, 0x2797),
    (0x27B0, 0x27B0),
    (0x27BF, 0x27BF),
    (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50),
    (0x2B55, 0x2B55),
    (0x2E80, 0x303E),
    (0x3041, 0x33FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xA000, 0xA4CF),
    (0xA960, 0xA97F),
    (0xAC00, 0xD7A3),
    (0xF900, 0xFAFF),
    (0xFE10, 0xFE19),
    (0xFE30, 0xFE6F),
    (0xFF00, 0xFF60),
    (0xFFE0, 0xFFE6),
    (0x16FE0, 0x16FE4),
    (0x17000, 0x18CFF),
    (0x1B000, 0x1B2FF),
    (0x1F004, 0x1F004),
    (0x1F0CF, 0x1F0CF),
    (0x1F18E, 0x1F18E),
    (0x1F191, 0x1F19A),
    (0x1F200, 0x1F251),
    (0x1F300, 0x1F64F),
    (0x1F680, 0x1F6FF),
    (0x1F7E0, 0x1F7EB),
    (0x1F90C, 0x1F9FF),
    (0x1FA70, 0x1FAFF),
    (0x20000, 0x2FFFD),
    (0x30000, 0x3FFFD),
];

/// Code points a terminal draws over the character before them, taking no column of
/// their own: combining marks, the zero-width space and joiners, variation selectors,
/// and Hangul's medial and final jamo; sorted.
const ZERO_WIDTH: &[(u32, u32)] = &[
    (0x0300, 0x036F),
    (0x0483, 0x0489),
    (0x0591, 0x05BD),
    (0x0610, 0x061A),
    (0x064B, 0x065F),
    (0x1160, 0x11FF),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x200B, 0x200D),
    (0x20D0, 0x20FF),
    (0x302A, 0x302D),
    (0x3099, 0x309A),
    (0xFE00, 0xFE0F),
    (0xFE20, 0xFE2F),
    (0xE0100, 0xE01EF),
];

fn within(table: &[(u32, u32)], c: char) -> bool {
    let c = u32::from(c);
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The columns a terminal gives `c`: 2, 0 or 1 (see the module documentation).
pub fn width(c: char) -> usize {
    if within(ZERO_WIDTH, c) {
        0
    } else if within(WIDE, c) {
        2
    } else {
        1
    }
}

/// The columns `text` takes on a terminal.
pub fn columns(text: &str) -> usize {
    text.chars().map(width).sum()
}

fn columns_of(chars: &[char]) -> usize {
    chars.iter().copied().map(width).sum()
}

/// The line being typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Line {
    chars: Vec<char>,
    cursor: usize,
}

impl Line {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The text before the cursor.
    pub fn before_cursor(&self) -> String {
        self.chars[..self.cursor].iter().collect()
    }

    /// Replaces the line, the cursor at its end.
    pub fn set(&mut self, text: &str) {
        self.chars = text.chars().take(MAX_LINE_CHARS).collect();
        self.cursor = self.chars.len();
    }

    pub fn clear(&mut self) {
        self.chars.clear();
        self.cursor = 0;
    }

    /// Inserts at the cursor; false (and nothing changes) when the line is full.
    pub fn insert(&mut self, c: char) -> bool {
        if self.chars.len() >= MAX_LINE_CHARS {
            return false;
        }
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
        true
    }

    /// Inserts `text` at the cursor, as far as it fits; false when it did not all fit.
    pub fn insert_str(&mut self, text: &str) -> bool {
        text.chars().all(|c| self.insert(c))
    }

    /// Replaces the `len` characters before the cursor with `text`.
    pub fn replace_before_cursor(&mut self, len: usize, text: &str) -> bool {
        let start = self.cursor.saturating_sub(len);
        self.chars.drain(start..self.cursor);
        self.cursor = start;
        self.insert_str(text)
    }

    pub fn backspace(&mut self) -> bool {
        if self.cursor == 0 {
            return false;
        }
        self.cursor -= 1;
        self.chars.remove(self.cursor);
        true
    }

    pub fn delete(&mut self) -> bool {
        if self.cursor >= self.chars.len() {
            return false;
        }
        self.chars.remove(self.cursor);
        true
    }

    pub fn left(&mut self) -> bool {
        let moved = self.cursor > 0;
        self.cursor = self.cursor.saturating_sub(1);
        moved
    }

    pub fn right(&mut self) -> bool {
        let moved = self.cursor < self.chars.len();
        self.cursor = (self.cursor + 1).min(self.chars.len());
        moved
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.chars.len();
    }

    /// Ctrl-K: erases from the cursor to the end.
    pub fn kill_to_end(&mut self) {
        self.chars.truncate(self.cursor);
    }

    /// Ctrl-W: erases the word before the cursor and the blanks after it.
    pub fn kill_word(&mut self) -> bool {
        let mut start = self.cursor;
        while start > 0 && self.chars[start - 1] == ' ' {
            start -= 1;
        }
        while start > 0 && self.chars[start - 1] != ' ' {
            start -= 1;
        }
        if start == self.cursor {
            return false;
        }
        self.chars.drain(start..self.cursor);
        self.cursor = start;
        true
    }

    /// Whether the cursor is inside an open double quote.
    pub fn in_quotes(&self) -> bool {
        let mut open = false;
        let mut escaped = false;
        for &c in &self.chars[..self.cursor] {
            if escaped {
                escaped = false;
            } else if open && c == '\\' {
                escaped = true;
            } else if c == '"' {
                open = !open;
            }
        }
        open
    }
}

/// Lines entered before, newest last, with a position while browsing.
#[derive(Clone, Debug, Default)]
pub struct History {
    lines: VecDeque<String>,
    /// The index being shown while browsing, and the line typed before browsing began.
    browsing: Option<(usize, String)>,
}

impl History {
    /// Remembers an entered line (not a blank one, nor a repeat of the last).
    pub fn push(&mut self, line: &str) {
        self.browsing = None;
        if line.trim().is_empty() || self.lines.back().is_some_and(|l| l == line) {
            return;
        }
        if self.lines.len() >= HISTORY_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_string());
    }

    /// Up: the line before; `None` at the oldest.
    pub fn older(&mut self, current: &str) -> Option<String> {
        let index = match &self.browsing {
            None => self.lines.len().checked_sub(1)?,
            Some((i, _)) => i.checked_sub(1)?,
        };
        let saved = match self.browsing.take() {
            Some((_, saved)) => saved,
            None => current.to_string(),
        };
        self.browsing = Some((index, saved));
        self.lines.get(index).cloned()
    }

    /// Down: the line after, or back to what was being typed.
    pub fn newer(&mut self) -> Option<String> {
        let (index, saved) = self.browsing.take()?;
        if index + 1 < self.lines.len() {
            self.browsing = Some((index + 1, saved));
            self.lines.get(index + 1).cloned()
        } else {
            Some(saved)
        }
    }

    /// Leaves browsing (the line shown is being edited or was entered).
    pub fn reset(&mut self) {
        self.browsing = None;
    }
}

/// What is on the screen's current row: a prompt, the visible part of the line and the
/// cursor, so that the next drawing writes only what changed.
#[derive(Clone, Debug)]
pub struct Screen {
    columns: usize,
    prompt: String,
    /// The characters drawn after the prompt.
    shown: Vec<char>,
    /// The cursor's column after the prompt.
    column: usize,
    /// The cursor's place in `shown`, in characters.
    at: usize,
    /// The index of the line's first visible character.
    offset: usize,
    /// The line is drawn at all (not for passwords).
    echo: bool,
}

impl Screen {
    /// A row of `columns`; 0 for output that is not a terminal (a script), where a
    /// line never scrolls.
    pub fn new(columns: u16) -> Screen {
        let columns = match columns {
            0 => usize::MAX / 4,
            n => usize::from(n).max(MIN_COLUMNS),
        };
        Screen {
            columns,
            prompt: String::new(),
            shown: Vec::new(),
            column: 0,
            at: 0,
            offset: 0,
            echo: true,
        }
    }

    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Room for the line after the prompt; the last column stays free so that no
    /// terminal wraps.
    fn room(&self) -> usize {
        self.columns
            .saturating_sub(columns(&self.prompt) + 1)
            .max(MIN_LINE_COLUMNS)
    }

    /// Starts a new row with `prompt` and draws `line` after it (the cursor is at the
    /// start of an empty row).
    pub fn start(&mut self, prompt: &str, echo: bool, line: &Line, out: &mut Vec<u8>) {
        self.prompt = prompt.to_string();
        self.echo = echo;
        self.shown.clear();
        self.column = 0;
        self.at = 0;
        self.offset = 0;
        out.extend_from_slice(prompt.as_bytes());
        self.draw(line, out);
    }

    /// Brings the row up to date with `line`, writing only the difference.
    pub fn draw(&mut self, line: &Line, out: &mut Vec<u8>) {
        if !self.echo {
            return;
        }
        let room = self.room();
        let (chars, cursor) = (line.chars(), line.cursor());
        // Keep the cursor (and the whole character under it) in view, and as much of
        // the line as fits.
        let under = chars.get(cursor).map_or(1, |&c| width(c).max(1));
        self.offset = self.offset.min(cursor);
        while self.offset < cursor && columns_of(&chars[self.offset..cursor]) + under > room {
            self.offset += 1;
        }
        while self.offset > 0 && columns_of(&chars[self.offset - 1..]) < room {
            self.offset -= 1;
        }
        let mut end = self.offset;
        let mut used = 0;
        while let Some(&c) = chars.get(end) {
            if used + width(c) > room {
                break;
            }
            used += width(c);
            end += 1;
        }
        let wanted: Vec<char> = chars[self.offset..end].to_vec();
        let at = cursor - self.offset;
        let column = columns_of(&wanted[..at]);
        let same = self
            .shown
            .iter()
            .zip(&wanted)
            .take_while(|(a, b)| a == b)
            .count();
        // To the first difference: back with backspaces, forward by writing again.
        if same < self.at {
            back(out, self.column - columns_of(&wanted[..same]));
        } else {
            put(out, &wanted[self.at..same]);
        }
        put(out, &wanted[same..]);
        let mut pos = columns_of(&wanted);
        let shown = columns_of(&self.shown);
        if shown > pos {
            let extra = shown - pos;
            out.extend(std::iter::repeat_n(b' ', extra));
            back(out, extra);
        }
        if column < pos {
            back(out, pos - column);
            pos = column;
        }
        debug_assert_eq!(pos, column);
        self.shown = wanted;
        self.column = column;
        self.at = at;
    }

    /// Erases the row (prompt and line) and leaves the cursor at its start, for text
    /// that must appear above the line; [`Screen::redraw`] puts it back.
    pub fn erase(&self, out: &mut Vec<u8>) {
        let width = columns(&self.prompt) + columns_of(&self.shown);
        out.push(b'\r');
        out.extend(std::iter::repeat_n(b' ', width));
        out.push(b'\r');
    }

    /// Draws the row again after [`Screen::erase`] and the text written above it.
    pub fn redraw(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prompt.as_bytes());
        put(out, &self.shown);
        back(out, columns_of(&self.shown) - self.column);
    }

    /// The cursor moves to the end of the row and a new row starts; the row's content
    /// stays on the screen as it is.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        put(out, &self.shown[self.at..]);
        out.extend_from_slice(b"\r\n");
        self.prompt.clear();
        self.shown.clear();
        self.column = 0;
        self.at = 0;
        self.offset = 0;
    }
}

fn put(out: &mut Vec<u8>, chars: &[char]) {
    let mut buf = [0u8; 4];
    for c in chars {
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

fn back(out: &mut Vec<u8>, n: usize) {
    out.extend(std::iter::repeat_n(b'\x08', n));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::console::screen::Screen as Dumb;

    #[test]
    fn editing_anywhere_redraws_only_the_difference() {
        let mut screen = Screen::new(80);
        let mut line = Line::default();
        let mut out = Vec::new();
        screen.start("a> ", true, &line, &mut out);
        line.insert_str("show stats");
        screen.draw(&line, &mut out);
        assert_eq!(out, b"a> show stats");
        out.clear();
        for _ in 0..6 {
            line.left();
        }
        screen.draw(&line, &mut out);
        assert_eq!(out, b"\x08\x08\x08\x08\x08\x08");
        out.clear();
        line.insert_str("-");
        screen.draw(&line, &mut out);
        // The changed tail is written again, and the cursor steps back.
        assert_eq!(out, b"- stats\x08\x08\x08\x08\x08\x08");
        let mut term = Dumb::default();
        let mut all = Vec::new();
        let mut screen = Screen::new(80);
        let mut line = Line::default();
        screen.start("a> ", true, &line, &mut all);
        for c in "show statistics".chars() {
            line.insert(c);
            screen.draw(&line, &mut all);
        }
        line.kill_word();
        screen.draw(&line, &mut all);
        line.home();
        line.delete();
        screen.draw(&line, &mut all);
        term.feed(&all);
        assert_eq!(term.current(), "a> how");
        assert_eq!(term.column(), 3);
    }

    #[test]
    fn a_long_line_scrolls_under_the_cursor() {
        let mut screen = Screen::new(20);
        let mut line = Line::default();
        let mut out = Vec::new();
        screen.start("> ", true, &line, &mut out);
        let text = "abcdefghijklmnopqrstuvwxyz0123456789";
        for c in text.chars() {
            line.insert(c);
            screen.draw(&line, &mut out);
        }
        let mut term = Dumb::default();
        term.feed(&out);
        // 20 columns: the prompt, 17 characters, the last column free.
        assert_eq!(term.current(), "> uvwxyz0123456789");
        assert!(term.lines().len() == 1 && term.column() < 20);
        out.clear();
        line.home();
        screen.draw(&line, &mut out);
        term.feed(&out);
        assert_eq!(term.current(), "> abcdefghijklmnopq");
        assert_eq!(term.column(), 2);
    }

    #[test]
    fn wide_characters_and_combining_marks_take_their_columns() {
        assert_eq!(columns("set 日本"), 8);
        assert_eq!(columns("e\u{301}"), 1);
        assert_eq!(width('한'), 2);
        assert_eq!(width('😀'), 2);
        assert_eq!(width('a'), 1);
        assert_eq!(width('\u{ff21}'), 2);
        let mut screen = Screen::new(20);
        let mut line = Line::default();
        let mut out = Vec::new();
        screen.start("> ", true, &line, &mut out);
        for c in "commit comment 設定を変更しました".chars() {
            line.insert(c);
            screen.draw(&line, &mut out);
        }
        let mut term = Dumb::default();
        term.feed(&out);
        // 20 columns: the prompt (2), 17 columns of the line, the cursor's free column.
        // The cursor stays in view: the last 16 columns of the line.
        assert_eq!(term.current(), "> 定を変更しました");
        assert_eq!(term.column(), 18);
        out.clear();
        line.home();
        screen.draw(&line, &mut out);
        term.feed(&out);
        assert_eq!(term.current(), "> commit comment 設");
        assert_eq!(term.column(), 2);
    }

    /// Random editing of lines mixing narrow, wide and combining characters: after every
    /// drawing the terminal shows the prompt and a window of the line that holds the
    /// cursor, within the row, with the cursor where the line's cursor is.
    #[test]
    fn random_edits_of_mixed_widths_keep_the_row_true() {
        // Combining marks never reach a line: the key decoder drops them.
        let alphabet = ['a', 'b', ' ', '日', '本', 'ａ', '😀', 'é', '한'];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for cols in [15u16, 17, 30] {
            let mut screen = Screen::new(cols);
            let mut line = Line::default();
            let mut term = Dumb::default();
            let mut out = Vec::new();
            screen.start("p> ", true, &line, &mut out);
            for _ in 0..3000 {
                match next() % 9 {
                    0..=3 => {
                        line.insert(alphabet[(next() % alphabet.len() as u64) as usize]);
                    }
                    4 => {
                        line.left();
                    }
                    5 => {
                        line.right();
                    }
                    6 => {
                        line.backspace();
                    }
                    7 => line.home(),
                    _ => line.end(),
                }
                screen.draw(&line, &mut out);
                term.feed(&out);
                out.clear();
                let row = term.current();
                // The row is trimmed: an empty line leaves the prompt's blank out.
                let Some(shown) = format!("{row} ").strip_prefix("p> ").map(str::to_string) else {
                    panic!("the prompt is gone: {row:?}, line {:?}", line.text());
                };
                let shown = shown.as_str();
                let text = line.text();
                assert!(
                    text.contains(shown.trim_end()),
                    "{row:?} is not part of {text:?}"
                );
                assert!(
                    columns(&row) < usize::from(cols),
                    "{row:?} overflows: line {text:?}, cursor {}, shown {:?} from {}",
                    line.cursor(),
                    screen.shown,
                    screen.offset
                );
                // What the row shows left of the cursor (blanks the row trimmed given
                // back) is what the line has before its cursor, marks aside.
                let at = term.column() - 3;
                let mut chars = shown.chars();
                let (mut used, mut upto) = (0, String::new());
                while used < at {
                    let c = chars.next().unwrap_or(' ');
                    used += width(c);
                    upto.push(c);
                }
                assert_eq!(used, at, "the cursor is inside a character of {row:?}");
                let visible = |s: &str| s.chars().filter(|&c| width(c) > 0).collect::<String>();
                let before: String = line.chars()[..line.cursor()].iter().collect();
                assert!(
                    visible(&before).ends_with(&visible(&upto)),
                    "cursor at {at} of {row:?}, line {text:?} cursor {}",
                    line.cursor()
                );
            }
        }
    }

    #[test]
    fn history_browses_and_returns_to_the_typed_line() {
        let mut h = History::default();
        h.push("show status");
        h.push("show status");
        h.push("   ");
        h.push("show queue");
        assert_eq!(h.older("sh").as_deref(), Some("show queue"));
        assert_eq!(h.older("").as_deref(), Some("show status"));
        assert_eq!(h.older(""), None);
        assert_eq!(h.newer().as_deref(), Some("show queue"));
        assert_eq!(h.newer().as_deref(), Some("sh"));
        assert_eq!(h.newer(), None);
        for i in 0..HISTORY_LINES + 5 {
            h.push(&format!("line {i}"));
        }
        assert_eq!(h.lines.len(), HISTORY_LINES);
    }

    #[test]
    fn line_bounds_and_quotes() {
        let mut line = Line::default();
        line.set(&"x".repeat(MAX_LINE_CHARS + 10));
        assert_eq!(line.chars().len(), MAX_LINE_CHARS);
        assert!(!line.insert('y'));
        let mut line = Line::default();
        line.set(r#"set deny "a \" b"#);
        assert!(line.in_quotes());
        line.insert('"');
        assert!(!line.in_quotes());
    }
}
