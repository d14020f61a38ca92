//! The words of a console line, with where each stands, for `?`, TAB, the `^` under an
//! error and the `|` that starts a pipe.
//!
//! The rules are those of the configuration text ([`crate::proto::config::text::lex`]): blanks
//! separate words, a word in double quotes may hold blanks, `\"` and `\\` inside quotes.
//! That module stays the authority on what a valid line is and on its error messages;
//! this one also reads a line still being typed (an open quote is a partial word) and
//! says which words were quoted, so that a quoted `"|"` is text, not a pipe.

use crate::proto::config::text::lex;

/// One word: its text with quotes undone, and its span in characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub quoted: bool,
}

impl Word {
    /// An unquoted `|`: the start of a pipe.
    pub fn is_pipe(&self) -> bool {
        !self.quoted && self.text == "|"
    }

    /// The word as the configuration text reads it: quoted, it is a value.
    pub fn config_word(&self) -> lex::Word {
        lex::Word {
            text: self.text.clone(),
            quoted: self.quoted,
        }
    }
}

/// The words of a line (or of the part before the cursor).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Words {
    pub words: Vec<Word>,
    /// The line ends inside the last word (no blank after it): it is partial.
    pub partial: bool,
}

impl Words {
    /// The complete words, and the partial last word's text if there is one.
    pub fn split_partial(&self) -> (&[Word], Option<&Word>) {
        match (self.partial, self.words.split_last()) {
            (true, Some((last, rest))) => (rest, Some(last)),
            _ => (&self.words, None),
        }
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits `chars` into words. Never fails: text the configuration lexer would refuse
/// (a quote inside a word, text right after a closing quote) still yields words, and
/// the caller asks that lexer for the error when the line is entered.
pub fn split(chars: &[char]) -> Words {
    let mut words = Vec::new();
    let mut i = 0;
    let mut partial = false;
    loop {
        while i < chars.len() && is_blank(chars[i]) {
            i += 1;
        }
        if i >= chars.len() {
            return Words { words, partial };
        }
        let start = i;
        let mut text = String::new();
        let quoted = chars[i] == '"';
        if quoted {
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    '\\' if i + 1 < chars.len() => {
                        text.push(chars[i + 1]);
                        i += 2;
                    }
                    c => {
                        text.push(c);
                        i += 1;
                    }
                }
            }
            // Text glued to the closing quote belongs to the same word.
            while i < chars.len() && !is_blank(chars[i]) {
                text.push(chars[i]);
                i += 1;
            }
            partial = !closed || i >= chars.len();
        } else {
            while i < chars.len() && !is_blank(chars[i]) {
                text.push(chars[i]);
                i += 1;
            }
            partial = i >= chars.len();
        }
        words.push(Word {
            text,
            start,
            end: i,
            quoted,
        });
    }
}

/// The words of `text`.
pub fn split_str(text: &str) -> Words {
    let chars: Vec<char> = text.chars().collect();
    split(&chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        split_str(line).words.into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn words_spans_and_partial() {
        let w = split_str("show  log | match \"a | b\"");
        let t: Vec<&str> = w.words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(t, ["show", "log", "|", "match", "a | b"]);
        assert!(w.words[2].is_pipe() && !w.words[4].is_pipe());
        assert_eq!((w.words[1].start, w.words[1].end), (6, 9));
        assert!(w.partial);
        assert!(!split_str("show ").partial);
        assert!(split_str("set deny \"no re").partial);
        assert_eq!(texts("set deny \"no re"), ["set", "deny", "no re"]);
        assert_eq!(split_str("").words, []);
        assert!(!split_str("\"quoted|\" ").words[0].is_pipe());
    }

    /// Wherever the configuration lexer accepts a line, the words are its words.
    #[test]
    fn the_same_words_as_the_configuration_lexer() {
        let alphabet = ['a', ' ', '"', '\\', '|', '\t', 'é', '#'];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 12) as usize;
            let line: String = (0..len)
                .map(|i| alphabet[((x >> (i * 3 + 8)) % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(words) = lex::split(&line) {
                let mine: Vec<lex::Word> = split_str(&line)
                    .words
                    .iter()
                    .map(Word::config_word)
                    .collect();
                assert_eq!(mine, words, "{line:?}");
            }
        }
    }
}
