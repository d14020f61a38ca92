//! Splits one line of configuration text into words, undoing double quotes and escapes.
//!
//! Words are separated by blanks (space or tab). A word that starts with `"` runs to the
//! next unescaped `"`; inside it `\"` and `\\` stand for `"` and `\`, and no other escape
//! exists. A word remembers whether it was quoted: a quoted word is always a value, never
//! a keyword, so `"AUTH"` after `ehlo-keywords` is that value even where `auth` is also a
//! setting's name, and `"set"` is no verb.

use super::LineError;

/// Longest line of configuration text accepted, in octets.
///
/// The longest statement the grammar allows is a classify rule with a 500-octet deny text
/// (under 700 octets in all) or a route with 16 IPv6 relay hosts of at most 48 octets each
/// (under 850). A line is copied once into its words, so one line costs at most this much
/// memory again while it is parsed.
pub const MAX_LINE_OCTETS: usize = 2048;

/// Whether `line` is a comment or blank: a line whose first non-blank character is `#`,
/// or that has nothing but blanks.
pub fn is_comment_or_blank(line: &str) -> bool {
    let rest = line.trim_start_matches(is_blank);
    rest.is_empty() || rest.starts_with('#')
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// One word of a line: its text with quotes and escapes undone, and whether it was
/// written in quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub quoted: bool,
}

impl Word {
    /// A word written without quotes.
    pub fn bare(text: impl Into<String>) -> Word {
        Word {
            text: text.into(),
            quoted: false,
        }
    }

    /// A word written in quotes: a value, whatever its text.
    pub fn in_quotes(text: impl Into<String>) -> Word {
        Word {
            text: text.into(),
            quoted: true,
        }
    }

    /// The text, where the word may be a keyword: `None` for a quoted word.
    pub fn keyword(&self) -> Option<&str> {
        (!self.quoted).then_some(self.text.as_str())
    }

    /// The word as written: quoted if it was (canonically escaped), else its text.
    pub fn written(&self) -> String {
        if self.quoted {
            quoted(&self.text)
        } else {
            self.text.clone()
        }
    }
}

/// The words of one line.
pub fn split(line: &str) -> Result<Vec<Word>, LineError> {
    if line.len() > MAX_LINE_OCTETS {
        return Err(LineError::LineTooLong { octets: line.len() });
    }
    let mut words = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        while chars.next_if(|&(_, c)| is_blank(c)).is_some() {}
        let Some((start, first)) = chars.next() else {
            return Ok(words);
        };
        let mut word = String::new();
        let is_quoted = first == '"';
        if is_quoted {
            loop {
                match chars.next() {
                    None => return Err(LineError::UnterminatedQuote { column: start + 1 }),
                    Some((_, '"')) => break,
                    Some((at, '\\')) => match chars.next() {
                        Some((_, c @ ('"' | '\\'))) => word.push(c),
                        Some((_, c)) if !c.is_control() => {
                            return Err(LineError::UnknownEscape {
                                column: at + 1,
                                found: c,
                            });
                        }
                        Some((at, _)) => {
                            return Err(LineError::ControlCharacter { column: at + 1 });
                        }
                        None => return Err(LineError::UnterminatedQuote { column: start + 1 }),
                    },
                    Some((at, c)) if c.is_control() && c != '\t' => {
                        return Err(LineError::ControlCharacter { column: at + 1 });
                    }
                    Some((_, c)) => word.push(c),
                }
            }
            if let Some(&(at, c)) = chars.peek() {
                if !is_blank(c) {
                    return Err(LineError::TextAfterQuote { column: at + 1 });
                }
            }
        } else {
            let mut next = Some((start, first));
            while let Some((at, c)) = next {
                if c == '"' {
                    return Err(LineError::QuoteInsideWord { column: at + 1 });
                }
                if c.is_control() {
                    return Err(LineError::ControlCharacter { column: at + 1 });
                }
                word.push(c);
                next = chars.next_if(|&(_, c)| !is_blank(c));
            }
        }
        words.push(Word {
            text: word,
            quoted: is_quoted,
        });
    }
}

/// `text` as one word of configuration text: as it is when it needs no quotes, else
/// quoted with `"` and `\` escaped.
pub fn word(text: &str) -> String {
    let plain = !text.is_empty()
        && !text.starts_with('#')
        && !text
            .chars()
            .any(|c| is_blank(c) || c == '"' || c.is_control());
    if plain {
        text.to_string()
    } else {
        quoted(text)
    }
}

/// `text` in double quotes, with `"` and `\` escaped.
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + "\"\"".len());
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split(line).unwrap().into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn splits_on_blanks() {
        assert_eq!(
            words("set  system\thost-name gw"),
            ["set", "system", "host-name", "gw"]
        );
        assert_eq!(words("   "), Vec::<String>::new());
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words(" a "), ["a"]);
    }

    #[test]
    fn undoes_quotes_and_escapes() {
        assert_eq!(words(r#"deny "no relay here""#), ["deny", "no relay here"]);
        assert_eq!(words(r#""a \"b\" \\c""#), [r#"a "b" \c"#]);
        assert_eq!(words(r#""" x"#), ["", "x"]);
        assert_eq!(words("\"tab\there\""), ["tab\there"]);
        assert_eq!(words(r"a\b"), [r"a\b"]);
    }

    #[test]
    fn a_quoted_word_is_marked_and_is_no_keyword() {
        let split = split(r#"delete "set" ehlo-keywords "AUTH" AUTH """#).unwrap();
        assert_eq!(
            split,
            [
                Word::bare("delete"),
                Word::in_quotes("set"),
                Word::bare("ehlo-keywords"),
                Word::in_quotes("AUTH"),
                Word::bare("AUTH"),
                Word::in_quotes(""),
            ]
        );
        let keywords: Vec<Option<&str>> = split.iter().map(Word::keyword).collect();
        assert_eq!(
            keywords,
            [
                Some("delete"),
                None,
                Some("ehlo-keywords"),
                None,
                Some("AUTH"),
                None
            ]
        );
        let written: Vec<String> = split.iter().map(Word::written).collect();
        assert_eq!(
            written.join(" "),
            r#"delete "set" ehlo-keywords "AUTH" AUTH """#
        );
        assert_eq!(Word::in_quotes(r#"a "b""#).written(), r#""a \"b\"""#);
    }

    #[test]
    fn refuses_broken_quoting_with_its_column() {
        assert_eq!(
            split(r#"set "abc"#),
            Err(LineError::UnterminatedQuote { column: 5 })
        );
        assert_eq!(
            split(r#"set "abc\"#),
            Err(LineError::UnterminatedQuote { column: 5 })
        );
        assert_eq!(
            split(r#"x "a\nb""#),
            Err(LineError::UnknownEscape {
                column: 5,
                found: 'n'
            })
        );
        assert_eq!(
            split(r#"x "a"b"#),
            Err(LineError::TextAfterQuote { column: 6 })
        );
        assert_eq!(
            split(r#"x ab"c""#),
            Err(LineError::QuoteInsideWord { column: 5 })
        );
        assert_eq!(
            split("x a\rb"),
            Err(LineError::ControlCharacter { column: 4 })
        );
        assert_eq!(
            split("x \"a\u{0}\""),
            Err(LineError::ControlCharacter { column: 5 })
        );
        assert_eq!(
            split("x \"a\\\u{7}\""),
            Err(LineError::ControlCharacter { column: 6 })
        );
    }

    #[test]
    fn refuses_overlong_lines() {
        let line = "x".repeat(MAX_LINE_OCTETS + 1);
        assert_eq!(
            split(&line),
            Err(LineError::LineTooLong {
                octets: MAX_LINE_OCTETS + 1
            })
        );
        assert!(split(&line[1..]).is_ok());
    }

    #[test]
    fn comments_and_blank_lines() {
        assert!(is_comment_or_blank(""));
        assert!(is_comment_or_blank(" \t "));
        assert!(is_comment_or_blank("# set system host-name x"));
        assert!(is_comment_or_blank("   #"));
        assert!(!is_comment_or_blank("set # x"));
    }

    #[test]
    fn word_quotes_only_when_needed_and_round_trips() {
        assert_eq!(word("gw.example.com"), "gw.example.com");
        assert_eq!(word(""), "\"\"");
        assert_eq!(word("a b"), "\"a b\"");
        assert_eq!(word("#x"), "\"#x\"");
        assert_eq!(word(r#"say "hi""#), r#""say \"hi\"""#);
        for text in ["", "a b", r#"\"#, r#""\"#, "#", "plain", "x\ty", r"a\b"] {
            assert_eq!(words(&word(text)), [text], "{text:?}");
            assert_eq!(words(&quoted(text)), [text], "{text:?}");
        }
    }
}
