//! The dumb terminal the console draws for, as a model: printable characters on rows,
//! CR to the row's start, LF to a new row, backspace one column left, the bell
//! ignored. Whatever else arrives is counted as stray (the console sends none). Tests
//! read from it what a person would see.

/// The rows written so far and the cursor.
#[derive(Clone, Debug, Default)]
pub struct Screen {
    rows: Vec<Vec<char>>,
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
                c => {
                    let column = self.column;
                    if let Some(row) = self.rows.last_mut() {
                        if row.len() <= column {
                            row.resize(column + 1, ' ');
                        }
                        row[column] = c;
                    }
                    self.column += 1;
                }
            }
        }
    }

    /// Every row, without trailing blanks.
    pub fn lines(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| r.iter().collect::<String>().trim_end().to_string())
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
