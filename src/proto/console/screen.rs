//! The dumb terminal the console draws for, as a model: printable characters on rows,
//! CR to the row's start, LF to a new row, backspace one column left, the bell
//! ignored. A character takes the columns [`super::editor::width`] says, as a terminal
//! gives them: a wide one two cells, a combining mark none (it joins the cell before).
//! Whatever else arrives is counted as stray (the console sends none). Tests read from
//! it what a person would see.

use super::editor::width;

/// The rows written so far and the cursor. A cell holds what is drawn there; the
/// second cell of a wide character is empty.
#[derive(Clone, Debug, Default)]
pub struct Screen {
    rows: Vec<Vec<String>>,
    column: usize,
    stray: usize,
}

impl Screen {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.rows.is_empty() {
            self.rows.push(Vec::new());
        }
        for c in String::from_utf8_lossy(bytes).chars() {
            match c {
                '\r' => self.column = 0,
                '\n' => {
                    self.rows.push(Vec::new());
                    self.column = 0;
                }
                '\x08' => self.column = self.column.saturating_sub(1),
                '\x07' => {}
                c if c.is_control() => self.stray += 1,
                c => self.put(c),
            }
        }
    }

    fn put(&mut self, c: char) {
        let (column, w) = (self.column, width(c));
        let Some(row) = self.rows.last_mut() else {
            return;
        };
        if w == 0 {
            if let Some(cell) = column.checked_sub(1).and_then(|at| row.get_mut(at)) {
                cell.push(c);
            }
            return;
        }
        if row.len() < column + w {
            row.resize(column + w, " ".to_string());
        }
        // Half of a wide character overwritten: the other half goes blank.
        if row[column].is_empty() && column > 0 {
            row[column - 1] = " ".to_string();
        }
        if let Some(next) = row.get(column + w)
            && next.is_empty()
        {
            row[column + w] = " ".to_string();
        }
        row[column] = c.to_string();
        if w == 2 {
            row[column + 1] = String::new();
        }
        self.column += w;
    }

    /// Every row, without trailing blanks.
    pub fn lines(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| r.concat().trim_end().to_string())
            .collect()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// The row the cursor is on.
    pub fn current(&self) -> String {
        self.lines().last().cloned().unwrap_or_default()
    }

    pub fn column(&self) -> usize {
        self.column
    }

    /// Control characters other than CR, LF, backspace and the bell.
    pub fn stray(&self) -> usize {
        self.stray
    }
}
