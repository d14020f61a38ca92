//! Command output on its way to the terminal: made safe to print, filtered by the pipes
//! (`match`, `except`, `count`, `last`), compared (`show | compare`), and paged for a
//! dumb 80×24 terminal (`--More--`: space for a page, Enter for a line, q to stop).

use std::collections::VecDeque;

use super::editor::{columns, width};
use super::tree::Pipe;
use crate::proto::logtext::reorders;

/// What the pager shows while it waits for a key.
pub const MORE: &str = "--More--";
/// Tab stops every eight columns.
const TAB: usize = 8;
/// The fewest rows the pager assumes: one line of output and the row of [`MORE`].
const MIN_PAGER_ROWS: usize = 2;

/// One line made safe for a terminal: tabs become spaces, and every other control
/// character (an escape sequence in a client's HELO name, say) becomes `?`, so nothing
/// from the network can drive the administrator's terminal; so does a character that
/// would reorder the text around it (a bidirectional override in a sender's address).
pub fn sanitize(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut column = 0;
    for c in line.chars() {
        if c == '\t' {
            let n = TAB - column % TAB;
            out.extend(std::iter::repeat_n(' ', n));
            column += n;
        } else if c.is_control() || reorders(c) {
            out.push('?');
            column += 1;
        } else {
            out.push(c);
            column += width(c);
        }
    }
    out
}

/// The lines of `text` after the filtering pipes (`compare` and `no-more` are not
/// filters: the caller has dealt with them).
pub fn filter(text: &str, pipes: &[Pipe]) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for pipe in pipes {
        match pipe {
            Pipe::Match(p) => lines.retain(|l| p.is_match(l)),
            Pipe::Except(p) => lines.retain(|l| !p.is_match(l)),
            Pipe::Count => lines = vec![format!("Count: {} lines", lines.len())],
            Pipe::Last(n) => {
                let skip = lines.len().saturating_sub(*n);
                lines.drain(..skip);
            }
            Pipe::NoMore | Pipe::Compare => {}
        }
    }
    lines
}

/// `show | compare`: the difference between the running and the candidate set lines, in
/// the configuration's order: `- set …` for what goes, `+ set …` for what comes.
///
/// Both lists are canonical, so a line in both stands in the same order in each: one
/// merge pass finds the difference, in time linear in the lines.
pub fn compare(running: &[String], candidate: &[String]) -> String {
    use std::collections::HashSet;
    let in_running: HashSet<&str> = running.iter().map(String::as_str).collect();
    let in_candidate: HashSet<&str> = candidate.iter().map(String::as_str).collect();
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < running.len() || j < candidate.len() {
        match (running.get(i), candidate.get(j)) {
            (Some(r), Some(c)) if r == c => {
                i += 1;
                j += 1;
            }
            (Some(r), Some(c))
                if in_running.contains(c.as_str()) && in_candidate.contains(r.as_str()) =>
            {
                // Both still to come on the other side: the order changed; treat the
                // running line as gone and come back.
                out.push_str(&format!("- {r}\n"));
                i += 1;
                let _ = c;
            }
            (Some(r), _) if !in_candidate.contains(r.as_str()) => {
                out.push_str(&format!("- {r}\n"));
                i += 1;
            }
            (_, Some(c)) if !in_running.contains(c.as_str()) => {
                out.push_str(&format!("+ {c}\n"));
                j += 1;
            }
            (Some(r), None) => {
                out.push_str(&format!("- {r}\n"));
                i += 1;
            }
            (None, Some(c)) => {
                out.push_str(&format!("+ {c}\n"));
                j += 1;
            }
            (Some(_), Some(c)) => {
                out.push_str(&format!("+ {c}\n"));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// The pager: lines waiting to be shown, and how many rows are left on this page.
#[derive(Debug)]
pub struct Pager {
    lines: VecDeque<String>,
    rows: usize,
    columns: usize,
    /// Rows that may still be written before `--More--`.
    left: usize,
    /// Page or not (`| no-more`).
    paging: bool,
    /// A terminal of no known height (0 rows): never page.
    never: bool,
}

impl Pager {
    /// A pager for a terminal of `rows` and `columns`; 0 rows never pages.
    pub fn new(rows: u16, columns: u16) -> Pager {
        let never = rows == 0;
        let rows = usize::from(rows).max(MIN_PAGER_ROWS);
        Pager {
            lines: VecDeque::new(),
            rows,
            columns: usize::from(columns).max(1),
            left: rows - 1,
            paging: true,
            never,
        }
    }

    /// Starts showing `lines` (each made safe to print).
    pub fn start(&mut self, lines: Vec<String>, paging: bool) {
        self.lines = lines.iter().map(|l| sanitize(l)).collect();
        self.left = self.rows - 1;
        self.paging = paging && !self.never;
    }

    /// Writes lines until the page is full; true when everything has been written,
    /// false when it waits at `--More--` (already written).
    pub fn emit(&mut self, out: &mut Vec<u8>) -> bool {
        while let Some(line) = self.lines.front() {
            let rows = columns(line).div_ceil(self.columns).max(1);
            if self.paging && rows > self.left && self.left < self.rows - 1 {
                out.extend_from_slice(MORE.as_bytes());
                return false;
            }
            self.left = self.left.saturating_sub(rows);
            if let Some(line) = self.lines.pop_front() {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        true
    }

    /// Erases `--More--` (the cursor is after it).
    pub fn erase_more(out: &mut Vec<u8>) {
        out.push(b'\r');
        out.extend(std::iter::repeat_n(b' ', MORE.len()));
        out.push(b'\r');
    }

    /// Space: one more page.
    pub fn next_page(&mut self) {
        self.left = self.rows - 1;
    }

    /// Enter: one more line.
    pub fn next_line(&mut self) {
        self.left = 1;
    }

    /// q: the rest is not shown.
    pub fn stop(&mut self) {
        self.lines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn network_text_cannot_drive_the_terminal() {
        assert_eq!(sanitize("helo=<\x1b[2Jevil\x07>"), "helo=<?[2Jevil?>");
        assert_eq!(sanitize("a\tb"), "a       b");
        assert_eq!(sanitize("\u{9b}31m"), "?31m");
        // A sender's address that would show reversed.
        assert_eq!(
            sanitize("<\u{202e}moc.elpmaxe@evil>"),
            "<?moc.elpmaxe@evil>"
        );
        // Tab stops count columns: a wide character takes two.
        assert_eq!(sanitize("日本\tx"), "日本    x");
    }

    #[test]
    fn filters() {
        let text = "smtpd: connect\nqmgr: from=<a>\nsmtpd: disconnect\n";
        assert_eq!(
            filter(text, &[Pipe::Match("SMTPD".into())]),
            lines("smtpd: connect\nsmtpd: disconnect")
        );
        assert_eq!(
            filter(text, &[Pipe::Except("smtpd".into())]),
            lines("qmgr: from=<a>")
        );
        assert_eq!(
            filter(text, &[Pipe::Match("smtpd".into()), Pipe::Count]),
            ["Count: 2 lines"]
        );
        assert_eq!(filter(text, &[Pipe::Last(1)]), ["smtpd: disconnect"]);
    }

    #[test]
    fn compare_lists_removed_and_added_lines_in_order() {
        let running =
            lines("set system host-name a\nset route x relay [1.2.3.4]:25\nset route z mx");
        let candidate = lines(
            "set system host-name a\nset route x relay [1.2.3.5]:25\nset route y mx\nset route z mx",
        );
        assert_eq!(
            compare(&running, &candidate),
            "- set route x relay [1.2.3.4]:25\n+ set route x relay [1.2.3.5]:25\n+ set route y mx\n"
        );
        assert_eq!(compare(&running, &running), "");
        assert_eq!(compare(&[], &lines("set a")), "+ set a\n");
        assert_eq!(
            compare(&lines("set a\nset b"), &lines("set b\nset a")),
            "- set a\n+ set a\n"
        );
    }

    #[test]
    fn pages_of_a_dumb_terminal() {
        let mut pager = Pager::new(24, 80);
        let text: Vec<String> = (1..=50).map(|i| format!("line {i}")).collect();
        pager.start(text, true);
        let mut out = Vec::new();
        assert!(!pager.emit(&mut out));
        let shown = String::from_utf8(out.clone()).unwrap();
        assert_eq!(shown.matches("\r\n").count(), 23);
        assert!(shown.ends_with("line 23\r\n--More--"));
        out.clear();
        pager.next_line();
        assert!(!pager.emit(&mut out));
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "line 24\r\n--More--"
        );
        out.clear();
        pager.next_page();
        assert!(!pager.emit(&mut out));
        pager.stop();
        out.clear();
        assert!(pager.emit(&mut out));
        assert!(out.is_empty());
        // A long line counts the rows it wraps to.
        let mut pager = Pager::new(4, 10);
        pager.start(vec!["x".repeat(25), "y".into(), "z".into()], true);
        let mut out = Vec::new();
        assert!(!pager.emit(&mut out));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{}\r\n--More--", "x".repeat(25))
        );
        // no-more writes everything at once.
        let mut pager = Pager::new(4, 10);
        pager.start((0..10).map(|i| i.to_string()).collect(), false);
        assert!(pager.emit(&mut Vec::new()));
    }
}
