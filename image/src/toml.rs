//! A reader for the small subset of TOML that board files use: `[table]` headers,
//! `key = value` lines with basic strings, non-negative integers, booleans and
//! one-line arrays of strings, and `#` comments.
//!
//! Anything outside the subset is an error with its line number, never a guess.

use std::collections::BTreeMap;
use std::fmt;

/// One value of the subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    String(String),
    Integer(u64),
    Boolean(bool),
    Strings(Vec<String>),
}

impl Value {
    /// What the value is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Boolean(_) => "a boolean",
            Value::Strings(_) => "an array of strings",
        }
    }
}

/// A parsed document: `(table, key)` to value; the top level is the table `""`.
pub type Document = BTreeMap<(String, String), Value>;

/// Why a document did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for Error {}

/// Longest board file accepted: 64 KiB, far above any real one.
pub const MAX_DOCUMENT: usize = 64 * 1024;

/// Parses a document of the subset.
pub fn parse(text: &str) -> Result<Document, Error> {
    if text.len() > MAX_DOCUMENT {
        return Err(Error {
            line: 0,
            message: format!("longer than {MAX_DOCUMENT} bytes"),
        });
    }
    let mut doc = Document::new();
    let mut table = String::new();
    let mut tables = std::collections::BTreeSet::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let err = |message: String| Error { line, message };
        let content = strip_comment(raw).map_err(err)?.trim();
        if content.is_empty() {
            continue;
        }
        if let Some(rest) = content.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| err("a table header must end with ']'".into()))?
                .trim();
            if !is_bare_key(name) {
                return Err(err(format!("'{name}' is not a table name")));
            }
            if !tables.insert(name.to_string()) {
                return Err(err(format!("table [{name}] appears twice")));
            }
            table = name.to_string();
            continue;
        }
        let (key, value) = content
            .split_once('=')
            .ok_or_else(|| err("expected 'key = value' or '[table]'".into()))?;
        let key = key.trim();
        if !is_bare_key(key) {
            return Err(err(format!("'{key}' is not a key")));
        }
        let value = parse_value(value.trim()).map_err(err)?;
        if doc
            .insert((table.clone(), key.to_string()), value)
            .is_some()
        {
            return Err(err(format!("key '{key}' is given twice")));
        }
    }
    Ok(doc)
}

fn is_bare_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The line without a `#` comment that starts outside a string.
fn strip_comment(line: &str) -> Result<&str, String> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '#' if !in_string => return Ok(&line[..i]),
            _ => {}
        }
    }
    if in_string {
        return Err("unterminated string".into());
    }
    Ok(line)
}

fn parse_value(text: &str) -> Result<Value, String> {
    if text.starts_with('"') {
        let (s, rest) = parse_string(text)?;
        if !rest.trim().is_empty() {
            return Err(format!("unexpected '{}' after the string", rest.trim()));
        }
        return Ok(Value::String(s));
    }
    if let Some(inner) = text.strip_prefix('[') {
        let mut rest = inner.trim_start();
        let mut items = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix(']') {
                if !after.trim().is_empty() {
                    return Err("unexpected text after ']'".into());
                }
                return Ok(Value::Strings(items));
            }
            let (s, after) = parse_string(rest)?;
            items.push(s);
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after.trim_start();
            } else if !rest.starts_with(']') {
                return Err(
                    "expected ',' or ']' in an array (arrays hold strings, on one line)".into(),
                );
            }
        }
    }
    match text {
        "true" => return Ok(Value::Boolean(true)),
        "false" => return Ok(Value::Boolean(false)),
        _ => {}
    }
    if text.starts_with(|c: char| c.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        && !text.ends_with('_')
        && !text.contains("__")
    {
        let digits: String = text.chars().filter(|&c| c != '_').collect();
        return digits
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("'{text}' is too large"));
    }
    Err(format!(
        "'{text}' is not a string, a non-negative integer, a boolean or an array of strings"
    ))
}

/// A basic string at the start of `text`, and what follows it.
fn parse_string(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or_else(|| format!("expected a string at '{text}'"))?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                other => {
                    return Err(format!(
                        "unknown escape '\\{}'",
                        other.map(|(_, c)| c).unwrap_or(' ')
                    ));
                }
            },
            c if c.is_control() && c != '\t' => {
                return Err("control character in a string".into());
            }
            c => out.push(c),
        }
    }
    Err("unterminated string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, k: &str) -> (String, String) {
        (t.to_string(), k.to_string())
    }

    #[test]
    fn the_subset_parses() {
        let doc = parse(
            "# board\nname = \"qemu\" # trailing\n[console]\nspeed = 115_200\n\
             device = \"/dev/ttyS0\"\n[kernel]\nmodules = [\"a\", \"b#c\",]\nquiet = true\n\
             empty = []\n",
        )
        .unwrap();
        assert_eq!(doc[&key("", "name")], Value::String("qemu".into()));
        assert_eq!(doc[&key("console", "speed")], Value::Integer(115_200));
        assert_eq!(
            doc[&key("kernel", "modules")],
            Value::Strings(vec!["a".into(), "b#c".into()])
        );
        assert_eq!(doc[&key("kernel", "quiet")], Value::Boolean(true));
        assert_eq!(doc[&key("kernel", "empty")], Value::Strings(vec![]));
        assert_eq!(
            parse("s = \"a\\\"b\\\\\"").unwrap()[&key("", "s")],
            Value::String("a\"b\\".into())
        );
    }

    #[test]
    fn everything_outside_the_subset_is_refused_with_its_line() {
        for (text, line) in [
            ("a = 1\nb = 1.5", 2),
            ("a = -1", 1),
            ("a = \"x", 1),
            ("a = [1, 2]", 1),
            ("[t\na = 1", 1),
            ("a = 1\na = 2", 2),
            ("[t]\n[t]", 2),
            ("a.b = 1", 1),
            ("a = \"x\" y", 1),
            ("just words", 1),
            ("a = 99999999999999999999999", 1),
            ("a = 1__0", 1),
            ("a = \"\\q\"", 1),
            ("a = [\"x\" \"y\"]", 1),
            ("a = [\"x\"", 1),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
        assert!(parse(&"#".repeat(MAX_DOCUMENT + 1)).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let seed = "name = \"x\"\n[a]\nb = [\"c\", \"d\"]\ne = 12\n";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % bytes.len();
                bytes[i] = (state >> 32) as u8;
            }
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
