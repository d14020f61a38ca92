//! The text form of the configuration: Junos-style `set` and `delete` lines, parsed into
//! and printed from the typed model in [`crate::proto::config`], all by walking the one schema
//! in [`super::schema`]. **Invariant:** what it prints parses back to the same model (the
//! random configuration tests hold it), and it knows no setting the schema does not name.
//!
//! A line is one statement; blank lines and lines whose first non-blank character is `#`
//! are ignored. [`lex`] splits a line into words (undoing quotes, remembering which
//! words were quoted); the walk below follows the words down the schema: containers and
//! list entries by keyword and key, then one or more settings of the same container
//! (`set classify 10 remote 10.0.0.0/8 category INTERNAL`), each value parsed by
//! [`value`]. Keywords may be abbreviated to any unambiguous prefix. A quoted word is
//! always a key or a value, never a keyword. Printing walks the schema in order and
//! writes one line per setting that differs from the factory value (a rule's settings
//! on one line).
//!
//! `delete PATH` removes what PATH names: a setting returns to its factory value, one
//! value of a multi-valued setting goes (`delete service inbound listen 0.0.0.0:25`), a
//! list entry goes whole (`delete route .example.com`), a container returns to its
//! factory values. After a setting, an unquoted word that names another setting of the
//! same container starts that setting; any other word is the value to delete. Printing
//! quotes a value that would read as such a name (`ehlo-keywords "AUTH"`, not the `auth`
//! setting), so every `set` line printed is also a valid `delete` line for what it set.
//!
//! This module does no I/O: the console, the command line and the board build hand it
//! text and get a model or a [`ParseError`] back.

pub mod lex;
pub mod value;

use super::Config;
use super::schema::{Key, Keys, Leaf, List, Node, NodeKind, ROOT, ValueSpec};
use lex::Word;
use std::fmt;

/// Why a text did not parse: the 1-based line number and what was wrong on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// What is wrong with one line. Its `Display` is the message an administrator reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    /// The line is longer than [`lex::MAX_LINE_OCTETS`].
    LineTooLong { octets: usize },
    /// A `"` at `column` (1-based, in octets) is never closed.
    UnterminatedQuote { column: usize },
    /// A `\` inside quotes is followed by something other than `"` or `\`.
    UnknownEscape { column: usize, found: char },
    /// A control character (other than tab inside quotes).
    ControlCharacter { column: usize },
    /// A closing quote is followed by something other than a blank.
    TextAfterQuote { column: usize },
    /// A `"` in the middle of an unquoted word.
    QuoteInsideWord { column: usize },
    /// A word that is not one of the keywords allowed where it stands.
    UnknownKeyword {
        after: String,
        found: String,
        expected: Vec<&'static str>,
    },
    /// A quoted word where a keyword is needed: a quoted word is always a value.
    QuotedKeyword {
        after: String,
        found: String,
        expected: Vec<&'static str>,
    },
    /// The line ends where a keyword is needed.
    Incomplete {
        after: String,
        expected: Vec<&'static str>,
    },
    /// The line ends where a value is needed.
    MissingValue { after: String, expected: String },
    /// Words after a complete statement.
    Trailing { after: String, found: String },
    /// A value that does not parse; `problem` reads after the quoted value.
    Value { value: String, problem: String },
    /// A value that parses but is outside what `setting` accepts.
    OutOfRange {
        value: String,
        setting: String,
        reason: String,
    },
    /// A rule option given twice; `after` ends with the second one.
    Repeated { after: String },
    /// Applying the statement would exceed a bound of the model.
    TooMany { what: &'static str, limit: usize },
    /// A keyword abbreviated so far that several keywords start with it.
    Ambiguous {
        after: String,
        found: String,
        candidates: Vec<&'static str>,
    },
    /// `delete` of something that is not configured.
    NotConfigured { path: String },
}

/// Longest piece of the administrator's text quoted back in a message, in characters.
const MAX_SHOWN_CHARS: usize = 60;

/// ` after 'WORD'` for an error message, or nothing at the start of a line.
fn after_word(after: &str) -> String {
    if after.is_empty() {
        String::new()
    } else {
        format!(" after '{}'", shown(after))
    }
}

/// `text` shortened for a message.
fn shown(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn one_of(expected: &[&str]) -> String {
    match expected {
        [one] => format!("'{one}'"),
        _ => format!("one of {}", expected.join(", ")),
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::LineTooLong { octets } => write!(
                f,
                "line is {octets} octets long: at most {} are accepted",
                lex::MAX_LINE_OCTETS
            ),
            LineError::UnterminatedQuote { column } => {
                write!(
                    f,
                    "unterminated quote: the '\"' at column {column} is never closed"
                )
            }
            LineError::UnknownEscape { column, found } => write!(
                f,
                "unknown escape '\\{found}' at column {column}: only \\\" and \\\\ may follow a backslash"
            ),
            LineError::ControlCharacter { column } => {
                write!(
                    f,
                    "control character at column {column}: only printable text is accepted"
                )
            }
            LineError::TextAfterQuote { column } => write!(
                f,
                "text right after a closing quote at column {column}: expected a blank between words"
            ),
            LineError::QuoteInsideWord { column } => write!(
                f,
                "'\"' inside a word at column {column}: quote the whole word instead"
            ),
            LineError::UnknownKeyword {
                after,
                found,
                expected,
            } if after.is_empty() => {
                write!(
                    f,
                    "unknown keyword '{}': expected {}",
                    shown(found),
                    one_of(expected)
                )
            }
            LineError::UnknownKeyword {
                after,
                found,
                expected,
            } => write!(
                f,
                "unknown keyword '{}' after '{}': expected {}",
                shown(found),
                shown(after),
                one_of(expected)
            ),
            LineError::QuotedKeyword {
                after,
                found,
                expected,
            } => {
                let at = after_word(after);
                write!(
                    f,
                    "quoted word {}{at} where a keyword belongs: a quoted word is a value, and keywords are written without quotes; expected {}",
                    lex::quoted(&shown(found)),
                    one_of(expected)
                )
            }
            LineError::Incomplete { after, expected } => write!(
                f,
                "incomplete statement '{}': expected {}",
                shown(after),
                one_of(expected)
            ),
            LineError::MissingValue { after, expected } => {
                write!(
                    f,
                    "missing value after '{}': expected {expected}",
                    shown(after)
                )
            }
            LineError::Trailing { after, found } => {
                write!(
                    f,
                    "unexpected '{}' after the complete statement '{}'",
                    shown(found),
                    shown(after)
                )?;
                if found.starts_with('#') {
                    f.write_str(" (a comment must be on a line of its own)")?;
                }
                Ok(())
            }
            LineError::Value { value, problem } => write!(f, "'{}' {problem}", shown(value)),
            LineError::OutOfRange {
                value,
                setting,
                reason,
            } => {
                write!(
                    f,
                    "'{}' is out of range for {setting}: {reason}",
                    shown(value)
                )
            }
            LineError::Repeated { after } => {
                write!(
                    f,
                    "a setting is given twice in '{}': each may appear once in a statement",
                    shown(after)
                )
            }
            LineError::TooMany { what, limit } => {
                write!(f, "too many {what}: at most {limit} are accepted")
            }
            LineError::Ambiguous {
                after,
                found,
                candidates,
            } => {
                let at = after_word(after);
                write!(
                    f,
                    "ambiguous keyword '{}'{at}: it could be {}",
                    shown(found),
                    candidates.join(", ")
                )
            }
            LineError::NotConfigured { path } => {
                write!(f, "nothing to delete: '{}' is not configured", shown(path))
            }
        }
    }
}

impl std::error::Error for LineError {}

/// A configuration from `Config::default()` and the statements in `text`.
pub fn parse(text: &str) -> Result<Config, ParseError> {
    let mut config = Config::default();
    parse_into(&mut config, text)?;
    Ok(config)
}

/// Applies the statements in `text` to `config`, in order. Nothing half-applies: on
/// error `config` is unchanged.
pub fn parse_into(config: &mut Config, text: &str) -> Result<(), ParseError> {
    parse_lines(config, text, LineError::to_string)
}

/// As [`parse_into`], each line's error told by `describe`.
fn parse_lines(
    config: &mut Config,
    text: &str,
    describe: impl Fn(&LineError) -> String,
) -> Result<(), ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut staged = config.clone();
    for (index, line) in text.lines().enumerate() {
        apply_line(&mut staged, line).map_err(|e| ParseError {
            line: index + 1,
            message: describe(&e),
        })?;
    }
    *config = staged;
    Ok(())
}

/// Applies one line (`set …`, `delete …`, a comment or a blank line) to `config`. On
/// error `config` is unchanged.
pub fn apply_line(config: &mut Config, line: &str) -> Result<(), LineError> {
    if lex::is_comment_or_blank(line) {
        return Ok(());
    }
    let words = lex::split(line)?;
    apply_words(config, &words)
}

/// Applies the statement made of `words` to `config`. On error `config` is unchanged.
pub fn apply_words(config: &mut Config, words: &[Word]) -> Result<(), LineError> {
    let mut staged = config.clone();
    Walk::new(words)?.apply(&mut staged)?;
    *config = staged;
    Ok(())
}

/// The two verbs of a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Set,
    Delete,
}

/// The keyword rule of every command line here: `word` names the item whose name it
/// is (any case), else the one item whose name it is a prefix of. `Err` lists the items
/// it could be: none, or several (ambiguous).
pub fn abbreviation<'a, T>(
    items: &'a [T],
    name: impl Fn(&T) -> &str,
    word: &str,
) -> Result<&'a T, Vec<&'a T>> {
    if let Some(item) = items.iter().find(|i| name(i).eq_ignore_ascii_case(word)) {
        return Ok(item);
    }
    let lower = word.to_ascii_lowercase();
    let matches: Vec<&T> = items
        .iter()
        .filter(|i| !word.is_empty() && name(i).starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        _ => Err(matches),
    }
}

/// Finds the node named `word` (any case, or an unambiguous prefix) among `nodes`.
fn lookup<'n>(nodes: &'n [Node], word: &str, after: &str) -> Result<&'n Node, LineError> {
    match abbreviation(nodes, |n| n.name, word) {
        Ok(n) => Ok(n),
        Err(m) if m.is_empty() => Err(LineError::UnknownKeyword {
            after: after.to_string(),
            found: word.to_string(),
            expected: nodes.iter().map(|n| n.name).collect(),
        }),
        Err(many) => Err(LineError::Ambiguous {
            after: after.to_string(),
            found: word.to_string(),
            candidates: many.iter().map(|n| n.name).collect(),
        }),
    }
}

/// Whether `word` is, written without quotes, the name of one of `nodes` (any case, in
/// full). After a setting in a `delete`, such a word starts that setting rather than
/// being the value to delete.
fn names_node(nodes: &[Node], word: &Word) -> bool {
    word.keyword()
        .is_some_and(|k| nodes.iter().any(|n| n.name.eq_ignore_ascii_case(k)))
}

/// Where a walk stands: the nodes that may come next, and the innermost list entry.
struct Level<'n> {
    nodes: &'n [Node],
    /// The list whose entry the walk is in, and how many keys deep that entry is.
    entry: Option<(&'static List, usize)>,
}

/// One statement's words, walked down the schema.
struct Walk<'w> {
    words: &'w [Word],
    verb: Verb,
    next: usize,
}

impl<'w> Walk<'w> {
    fn new(words: &'w [Word]) -> Result<Walk<'w>, LineError> {
        const VERBS: [(&str, Verb); 2] = [("set", Verb::Set), ("delete", Verb::Delete)];
        let Some(first) = words.first() else {
            return Err(LineError::Incomplete {
                after: String::new(),
                expected: vec!["set", "delete"],
            });
        };
        let Some(verb_word) = first.keyword() else {
            return Err(LineError::QuotedKeyword {
                after: String::new(),
                found: first.text.clone(),
                expected: vec!["set", "delete"],
            });
        };
        let lower = verb_word.to_ascii_lowercase();
        let Some(&(_, verb)) = VERBS
            .iter()
            .find(|(name, _)| !lower.is_empty() && name.starts_with(&lower))
        else {
            return Err(LineError::UnknownKeyword {
                after: String::new(),
                found: first.text.clone(),
                expected: vec!["set", "delete"],
            });
        };
        Ok(Walk {
            words,
            verb,
            next: 1,
        })
    }

    /// The words read so far, as written.
    fn after(&self) -> String {
        written(&self.words[..self.next])
    }

    fn peek(&self) -> Option<&'w Word> {
        self.words.get(self.next)
    }

    /// The next word's text, whether it was quoted or not: a key or a value.
    fn take(&mut self) -> Option<&'w str> {
        let w = self.peek()?;
        self.next += 1;
        Some(&w.text)
    }

    /// The node among `nodes` that `word`, standing where a keyword belongs, names.
    fn keyword<'n>(&self, nodes: &'n [Node], word: &Word) -> Result<&'n Node, LineError> {
        match word.keyword() {
            Some(k) => lookup(nodes, k, &self.after()),
            None => Err(LineError::QuotedKeyword {
                after: self.after(),
                found: word.text.clone(),
                expected: nodes.iter().map(|n| n.name).collect(),
            }),
        }
    }

    fn apply(mut self, config: &mut Config) -> Result<(), LineError> {
        let mut keys = Keys::default();
        let mut level = Level {
            nodes: ROOT,
            entry: None,
        };
        // What the words so far name, for a `delete` that stops there.
        let mut named: Option<&Node> = None;
        let mut settings: Vec<&'static str> = Vec::new();
        loop {
            let Some(word) = self.peek() else {
                return self.finish(config, &keys, &level, named, !settings.is_empty());
            };
            let node = match self.keyword(level.nodes, word) {
                Ok(node) => node,
                Err(_) if !settings.is_empty() => {
                    return Err(LineError::Trailing {
                        after: self.after(),
                        found: word.text.clone(),
                    });
                }
                Err(e) => return Err(e),
            };
            self.next += 1;
            match &node.kind {
                NodeKind::Container(children) if settings.is_empty() => {
                    named = Some(node);
                    level.nodes = children;
                }
                NodeKind::List(list) if settings.is_empty() => {
                    let Some(text) = self.take() else {
                        if self.verb == Verb::Delete {
                            remove_all(config, list, &mut keys);
                            return Ok(());
                        }
                        return Err(LineError::MissingValue {
                            after: self.after(),
                            expected: list.key.expected.to_string(),
                        });
                    };
                    let key = (list.key.parse)(text).map_err(|e| match e {
                        LineError::UnknownKeyword {
                            found, expected, ..
                        } => LineError::UnknownKeyword {
                            after: written(&self.words[..self.next - 1]),
                            found,
                            expected,
                        },
                        other => other,
                    })?;
                    keys.0.push(key);
                    match self.verb {
                        Verb::Set => (list.create)(config, &keys)?,
                        Verb::Delete if !exists(config, list, &keys) => {
                            return Err(LineError::NotConfigured { path: self.path() });
                        }
                        Verb::Delete => {}
                    }
                    named = Some(node);
                    level = Level {
                        nodes: list.children,
                        entry: Some((list, keys.0.len())),
                    };
                }
                NodeKind::Leaf(leaf) => {
                    if settings.contains(&node.name) {
                        return Err(LineError::Repeated {
                            after: self.after(),
                        });
                    }
                    settings.push(node.name);
                    self.leaf(config, &keys, node, leaf, level.nodes)?;
                }
                _ => {
                    return Err(LineError::Trailing {
                        after: written(&self.words[..self.next - 1]),
                        found: word.text.clone(),
                    });
                }
            }
        }
    }

    /// A setting and its value, set or deleted.
    fn leaf(
        &mut self,
        config: &mut Config,
        keys: &Keys,
        node: &Node,
        leaf: &Leaf,
        siblings: &[Node],
    ) -> Result<(), LineError> {
        let value = match leaf.value {
            None => None,
            Some(spec) => {
                // A `delete` may name the value; the next word is one unless, unquoted,
                // it names another setting of the same container.
                match (self.verb, self.peek()) {
                    (Verb::Delete, Some(w)) if names_node(siblings, w) => None,
                    (Verb::Delete, None) => None,
                    (_, Some(_)) => self.take(),
                    (Verb::Set, None) => {
                        return Err(LineError::MissingValue {
                            after: self.after(),
                            expected: spec.expected.to_string(),
                        });
                    }
                }
                .map(|v| (v, spec))
            }
        };
        if let Some((_, spec)) = value
            && let Some(suffix) = spec.suffix
            && !self.suffix(suffix)?
            && self.verb == Verb::Set
        {
            return Err(LineError::Incomplete {
                after: self.after(),
                expected: vec![suffix],
            });
        }
        match self.verb {
            Verb::Set => (leaf.set)(config, keys, value.map_or("", |(v, _)| v), node.name),
            Verb::Delete => {
                let current = (leaf.get)(config, keys);
                let wanted = match value {
                    Some((v, _)) => Some((leaf.canonical)(v, node.name)?),
                    None => None,
                };
                let present = match &wanted {
                    Some(w) => current.contains(w),
                    None => !current.is_empty(),
                };
                if !present {
                    return Err(LineError::NotConfigured { path: self.path() });
                }
                (leaf.delete)(config, keys, wanted.as_deref().filter(|_| leaf.multi));
                Ok(())
            }
        }
    }

    /// Reads the fixed word written after a value (`tls` in `restrict PLAIN tls`):
    /// `true` when it is there. A `delete` may leave it out; in a `set` only the end of
    /// the line may stand in its place (the caller decides what that means).
    fn suffix(&mut self, suffix: &'static str) -> Result<bool, LineError> {
        let Some(w) = self.peek() else {
            return Ok(false);
        };
        if w.keyword().is_some_and(|k| k.eq_ignore_ascii_case(suffix)) {
            self.next += 1;
            return Ok(true);
        }
        let found = w.text.clone();
        let (after, expected) = (self.after(), vec![suffix]);
        match self.verb {
            Verb::Delete => Ok(false),
            Verb::Set if w.quoted => Err(LineError::QuotedKeyword {
                after,
                found,
                expected,
            }),
            Verb::Set => Err(LineError::UnknownKeyword {
                after,
                found,
                expected,
            }),
        }
    }

    /// The words of the statement after the verb, for messages.
    fn path(&self) -> String {
        written(&self.words[1..self.next])
    }

    /// The statement ends here: a `set` must have set something or made an entry; a
    /// `delete` removes what the path names; then an emptied list entry goes.
    fn finish(
        &self,
        config: &mut Config,
        keys: &Keys,
        level: &Level<'_>,
        named: Option<&Node>,
        set_something: bool,
    ) -> Result<(), LineError> {
        match (self.verb, set_something, named) {
            (_, true, _) => {}
            (
                Verb::Set,
                false,
                Some(Node {
                    kind: NodeKind::List(list),
                    ..
                }),
            ) if !list.fixed => {}
            (Verb::Set, false, _) | (Verb::Delete, false, None) => {
                return Err(LineError::Incomplete {
                    after: self.after(),
                    expected: level.nodes.iter().map(|n| n.name).collect(),
                });
            }
            (Verb::Delete, false, Some(node)) => match &node.kind {
                NodeKind::List(list) => (list.remove)(config, keys),
                _ => {
                    let mut keys = keys.clone();
                    reset(config, level.nodes, &mut keys);
                }
            },
        }
        if self.verb == Verb::Delete
            && let Some((list, depth)) = level.entry
            && !list.fixed
            && keys.0.len() == depth
            && exists(config, list, keys)
            && is_empty(config, list.children, &mut keys.clone())
        {
            (list.remove)(config, keys);
        }
        Ok(())
    }
}

/// `words` as written, for messages.
fn written(words: &[Word]) -> String {
    words
        .iter()
        .map(Word::written)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the entry named by the last of `keys` exists in `list`.
fn exists(config: &Config, list: &List, keys: &Keys) -> bool {
    let mut parent = keys.clone();
    let Some(key) = parent.0.pop() else {
        return false;
    };
    (list.entries)(config, &parent).contains(&key)
}

/// Whether every setting under `nodes` has its factory value.
fn is_empty(config: &Config, nodes: &[Node], keys: &mut Keys) -> bool {
    nodes.iter().all(|node| match &node.kind {
        NodeKind::Leaf(leaf) => (leaf.get)(config, keys).is_empty(),
        NodeKind::Container(children) => is_empty(config, children, keys),
        NodeKind::List(list) => (list.entries)(config, keys).is_empty(),
    })
}

/// Returns everything under `nodes` to its factory value.
fn reset(config: &mut Config, nodes: &[Node], keys: &mut Keys) {
    for node in nodes {
        match &node.kind {
            NodeKind::Leaf(leaf) => (leaf.delete)(config, keys, None),
            NodeKind::Container(children) => reset(config, children, keys),
            NodeKind::List(list) => remove_all(config, list, keys),
        }
    }
}

/// Removes every entry of `list` (returns fixed ones to their factory values).
fn remove_all(config: &mut Config, list: &List, keys: &mut Keys) {
    for key in (list.entries)(config, keys) {
        keys.0.push(key);
        (list.remove)(config, keys);
        keys.0.pop();
    }
}

// ---- printing ----------------------------------------------------------------------------

/// The canonical text of `config`: one `set` line for each setting that differs from
/// `Config::default()`, in schema order; a rule's settings on one line; an entry with
/// nothing set as a bare `set LIST KEY` line.
///
/// Parsing the result gives `config` back for any model the parser could have built.
pub fn print(config: &Config) -> String {
    let mut out = String::new();
    for line in lines(config) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The canonical lines of `config`, without line ends.
pub fn lines(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    print_nodes(config, ROOT, &mut Keys::default(), "set", &mut out);
    out
}

/// The line of one entry of a one-line list, such as `relay-rule 10 … deny "…"` (without
/// `set`), for traces; `None` when there is no such entry.
pub fn entry_text(config: &Config, list_name: &str, key: &Key) -> Option<String> {
    let node = ROOT.iter().find(|n| n.name == list_name)?;
    let NodeKind::List(list) = &node.kind else {
        return None;
    };
    let mut keys = Keys(vec![key.clone()]);
    exists(config, list, &keys).then(|| {
        let mut out = Vec::new();
        print_entry(config, node.name, list, &mut keys, "", &mut out);
        out.join(" ").trim_start().to_string()
    })
}

fn print_nodes(
    config: &Config,
    nodes: &[Node],
    keys: &mut Keys,
    prefix: &str,
    out: &mut Vec<String>,
) {
    for node in nodes {
        match &node.kind {
            NodeKind::Container(children) => print_nodes(
                config,
                children,
                keys,
                &format!("{prefix} {}", node.name),
                out,
            ),
            NodeKind::List(list) => {
                for key in (list.entries)(config, keys) {
                    keys.0.push(key);
                    print_entry(config, node.name, list, keys, prefix, out);
                    keys.0.pop();
                }
            }
            NodeKind::Leaf(leaf) => {
                for value in (leaf.get)(config, keys) {
                    out.push(format!(
                        "{prefix} {}",
                        setting_text(nodes, node, leaf, &value)
                    ));
                }
            }
        }
    }
}

fn print_entry(
    config: &Config,
    name: &str,
    list: &List,
    keys: &mut Keys,
    prefix: &str,
    out: &mut Vec<String>,
) {
    let key = keys
        .0
        .last()
        .map(|k| lex::word(&k.to_string()))
        .unwrap_or_default();
    let entry = format!("{prefix} {name} {key}");
    if list.one_line {
        let mut parts = vec![entry];
        for node in list.children {
            if let NodeKind::Leaf(leaf) = &node.kind {
                for value in (leaf.get)(config, keys) {
                    parts.push(setting_text(list.children, node, leaf, &value));
                }
            }
        }
        if parts.len() > 1 || !list.fixed {
            out.push(parts.join(" "));
        }
    } else {
        let before = out.len();
        print_nodes(config, list.children, keys, &entry, out);
        if out.len() == before && !list.fixed {
            out.push(entry);
        }
    }
}

/// `name value [suffix]` for `node` among its `siblings`, the value written as
/// [`value_word`] writes it.
fn setting_text(siblings: &[Node], node: &Node, leaf: &Leaf, value: &str) -> String {
    let Some(spec) = leaf.value else {
        return node.name.to_string();
    };
    let value = value_word(spec, siblings, value);
    match spec.suffix {
        Some(suffix) => format!("{} {value} {suffix}", node.name),
        None => format!("{} {value}", node.name),
    }
}

/// A setting's value (canonical text) as written after the setting's name among
/// `siblings`: in quotes where its kind is a quoted list or text, where it needs them
/// (blanks, `"`, a leading `#`, empty), and where without them it would name one of the
/// `siblings`, which a `delete` would read as that setting.
fn value_word(spec: &ValueSpec, siblings: &[Node], value: &str) -> String {
    if spec.placeholder.starts_with('"') || names_node(siblings, &Word::bare(value)) {
        lex::quoted(value)
    } else {
        lex::word(value)
    }
}

// ---- help and completion -------------------------------------------------------------------

/// One thing that may come next in a statement being typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// A keyword, an existing key or value as it is written (in quotes where a value
    /// needs them), or a placeholder such as `<DURATION>`.
    pub word: String,
    pub help: String,
    /// `word` is a placeholder to be replaced, not a word to complete to.
    pub placeholder: bool,
}

impl Candidate {
    pub fn keyword(word: &str, help: &str) -> Candidate {
        Candidate {
            word: word.to_string(),
            help: help.to_string(),
            placeholder: false,
        }
    }

    /// `<WORD>`: a value to be typed.
    pub fn placeholder(word: &str, help: &str) -> Candidate {
        Candidate {
            word: format!("<{word}>"),
            help: help.to_string(),
            placeholder: true,
        }
    }

    /// The word with its quotes undone, to compare with what is being typed.
    pub fn text(&self) -> String {
        match lex::split(&self.word).as_deref() {
            Ok([one]) => one.text.clone(),
            _ => self.word.clone(),
        }
    }
}

/// The placeholder shown where the statement may end.
pub const END_OF_STATEMENT: &str = "<[Enter]>";

/// What may come after `words` (a `set` or `delete` statement's complete words, the verb
/// first), for `?` help and TAB completion: keywords with their help, the existing
/// entries of a list, a value's placeholder and choices, and [`END_OF_STATEMENT`] where
/// the statement may end. An error says where the words stop making sense.
pub fn candidates(config: &Config, words: &[Word]) -> Result<Vec<Candidate>, LineError> {
    if words.is_empty() {
        return Ok(vec![
            Candidate::keyword("set", "Set a configuration value"),
            Candidate::keyword("delete", "Delete a configuration value or statement"),
        ]);
    }
    let mut walk = Walk::new(words)?;
    let mut keys = Keys::default();
    let mut nodes: &[Node] = ROOT;
    let mut settings = 0;
    let mut can_end = false;
    loop {
        let Some(word) = walk.peek() else {
            let mut out: Vec<Candidate> = nodes
                .iter()
                .map(|n| Candidate::keyword(n.name, n.help))
                .collect();
            if can_end {
                out.push(Candidate::keyword(END_OF_STATEMENT, "End of the statement"));
            }
            return Ok(out);
        };
        let node = walk.keyword(nodes, word)?;
        walk.next += 1;
        can_end = match &node.kind {
            NodeKind::Container(children) if settings == 0 => {
                nodes = children;
                walk.verb == Verb::Delete
            }
            NodeKind::List(list) if settings == 0 => {
                let Some(text) = walk.take() else {
                    let mut out: Vec<Candidate> = (list.entries)(config, &keys)
                        .into_iter()
                        .map(|k| Candidate::keyword(&lex::word(&k.to_string()), node.help))
                        .collect();
                    if walk.verb == Verb::Set && !list.fixed {
                        out.push(Candidate::placeholder(
                            list.key.placeholder,
                            list.key.expected,
                        ));
                    }
                    if walk.verb == Verb::Delete {
                        out.push(Candidate::keyword(END_OF_STATEMENT, "Delete every entry"));
                    }
                    return Ok(out);
                };
                keys.0.push((list.key.parse)(text)?);
                nodes = list.children;
                walk.verb == Verb::Delete || !list.fixed
            }
            NodeKind::Leaf(leaf) => {
                settings += 1;
                // As `Walk::leaf` reads it: in a `delete`, the value may be left out
                // where the next word names another setting of this container.
                let value_left_out =
                    walk.verb == Verb::Delete && walk.peek().is_some_and(|w| names_node(nodes, w));
                if let Some(spec) = leaf.value.filter(|_| !value_left_out) {
                    let Some(_) = walk.take() else {
                        let mut out: Vec<Candidate> = Vec::new();
                        if walk.verb == Verb::Delete {
                            for v in (leaf.get)(config, &keys) {
                                out.push(Candidate::keyword(
                                    &value_word(spec, nodes, &v),
                                    "configured",
                                ));
                            }
                            out.push(Candidate::keyword(END_OF_STATEMENT, "End of the statement"));
                        } else {
                            out.extend(
                                spec.choices
                                    .iter()
                                    .map(|c| Candidate::keyword(c, spec.expected)),
                            );
                            out.push(Candidate::placeholder(spec.placeholder, spec.expected));
                        }
                        return Ok(out);
                    };
                    if let Some(suffix) = spec.suffix {
                        if walk.peek().is_none() {
                            return Ok(vec![Candidate::keyword(suffix, node.help)]);
                        }
                        walk.suffix(suffix)?;
                    }
                }
                true
            }
            _ => {
                return Err(LineError::Trailing {
                    after: written(&walk.words[..walk.next - 1]),
                    found: word.text.clone(),
                });
            }
        };
    }
}

/// Whether `path` (the words a `set` would take before its setting) names a place
/// statements go under: a container, or an entry of a list with its key, not a setting
/// or a list without its key. The empty path is the top. What the console's `edit`
/// may enter.
pub fn is_place(path: &[Word]) -> bool {
    let mut words = vec![Word::bare("set")];
    words.extend(path.iter().cloned());
    let Ok(mut walk) = Walk::new(&words) else {
        return false;
    };
    let mut nodes: &[Node] = ROOT;
    while let Some(word) = walk.peek() {
        let Ok(node) = walk.keyword(nodes, word) else {
            return false;
        };
        walk.next += 1;
        match &node.kind {
            NodeKind::Container(children) => nodes = children,
            NodeKind::List(list) => {
                let Some(Ok(_)) = walk.take().map(list.key.parse) else {
                    return false;
                };
                nodes = list.children;
            }
            NodeKind::Leaf(_) => return false,
        }
    }
    true
}

/// Applies a loaded text to a candidate: merged onto it (`load merge`), or replacing it
/// (`load replace`, which starts from the factory values). The text's `set` and
/// `delete` lines apply in order; a bad line refuses the whole load, naming it.
pub fn load_into(candidate: &mut Config, text: &str, replace: bool) -> Result<(), String> {
    load_lines(candidate, text, replace, LineError::to_string)
}

/// As [`load_into`], for a file named at the console, which may be any file on the
/// gateway: a line that is not a `set` or `delete` statement is refused without being
/// quoted, so that loading a key or PIN file does not show its first line.
pub fn load_file_into(candidate: &mut Config, text: &str, replace: bool) -> Result<(), String> {
    load_lines(candidate, text, replace, |e| match e {
        LineError::UnknownKeyword { after, .. } | LineError::QuotedKeyword { after, .. }
            if after.is_empty() =>
        {
            "not a set or delete statement (the line is not shown)".to_string()
        }
        other => other.to_string(),
    })
}

fn load_lines(
    candidate: &mut Config,
    text: &str,
    replace: bool,
    describe: impl Fn(&LineError) -> String,
) -> Result<(), String> {
    let mut loaded = if replace {
        Config::default()
    } else {
        candidate.clone()
    };
    parse_lines(&mut loaded, text, describe).map_err(|e| format!("load: {e}"))?;
    *candidate = loaded;
    Ok(())
}

#[cfg(test)]
mod tests;
