//! The command tree: every operational and configuration-mode command, declared once as
//! data, like the configuration schema. Parsing a line, `?` help, TAB completion,
//! abbreviations and syntax errors all walk this one tree, so they cannot disagree.
//!
//! In configuration mode `set` and `delete` hand the rest of the line to the
//! configuration schema ([`crate::proto::config::text`]), which parses, helps and completes it
//! the same way, and `show` walks the schema's paths. A command whose output can be
//! piped accepts `| match TEXT`, `| except TEXT`, `| count`, `| last N`, `| no-more`
//! and, for `show` in configuration mode, `| compare`.
//!
//! As in the configuration text, a quoted word is always a value: never a command, a
//! flag, an option's name or a pipe command (`commit comment "check"` comments, and
//! `commit confirmed "check"` is no flag).

use std::cell::Cell;
use std::net::IpAddr;

use super::pattern::Pattern;
use super::request::{Command, NameKind, Names, Target};
use super::words::Word;
use crate::proto::config::text::{self, Candidate, END_OF_STATEMENT, abbreviation as find, lex};
use crate::proto::config::{Config, LoginClass};

/// One word of the tree.
pub struct Cmd {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: CmdKind,
}

pub enum CmdKind {
    /// A word that leads to more words.
    Menu(&'static [Cmd]),
    /// A command with its arguments.
    Run(&'static Spec),
    /// `set` and `delete`: the rest is a configuration statement, walked by the schema.
    Statement,
    /// Configuration mode's `show`: the rest is a path into the configuration.
    ConfigPath,
    /// Configuration mode's `edit`: the rest is a place in the configuration to work
    /// under.
    EditPath,
    /// `run`: the rest is an operational command.
    Operational,
}

/// A command's arguments and what they make.
pub struct Spec {
    pub args: &'static [Arg],
    /// The output may go through a pipe.
    pub piped: bool,
    pub build: fn(&Args) -> Result<Action, String>,
}

pub struct Arg {
    /// The keyword of a flag or option; the placeholder of a value.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: ArgKind,
}

pub enum ArgKind {
    /// A value in its place, in the order given. `choices` are offered for completion;
    /// when `closed` nothing else is accepted (and a choice may be abbreviated).
    Value {
        required: bool,
        choices: &'static [&'static str],
        closed: bool,
        /// Names the gateway knows that it may be, offered beside `choices`.
        names: Option<NameKind>,
    },
    /// A keyword alone, anywhere after the values.
    Flag,
    /// A keyword and a value, anywhere after the values; the value may be left out
    /// when `optional`.
    Option {
        placeholder: &'static str,
        optional: bool,
    },
}

/// The arguments of one command as typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub values: Vec<String>,
    pub flags: Vec<&'static str>,
    pub options: Vec<(&'static str, Option<String>)>,
}

impl Args {
    pub fn value(&self, i: usize) -> Option<&str> {
        self.values.get(i).map(String::as_str)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    /// `Some(value)` for an option given; `Some(None)` for one given without its value.
    pub fn option(&self, name: &str) -> Option<Option<&str>> {
        self.options
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_deref())
    }
}

/// What a line asks for, once parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A command the gateway carries out.
    Run(Command),
    /// Ask for a password (twice, without echo), then run what it is for.
    AskPassword(PasswordFor),
    /// Ask yes or no, then run the command.
    Confirm {
        question: &'static str,
        command: Command,
    },
    Configure,
    Exit,
    /// `set …` or `delete …`: the statement's words, the verb first.
    Statement(Vec<lex::Word>),
    /// Configuration mode's `show [PATH]`: keywords in full, keys and values as typed,
    /// the level being edited first.
    ShowCandidate(Vec<lex::Word>),
    /// `edit PATH`: work under this place (the whole path from the top, as for `show`).
    Edit(Vec<lex::Word>),
    /// `up [N]`: this many places up (one by default).
    Up(usize),
    /// `top`: back to the top of the configuration.
    Top,
    Commit {
        check: bool,
        confirm_minutes: Option<u64>,
        comment: String,
        and_quit: bool,
    },
    Rollback(usize),
    Load {
        replace: bool,
        /// A file on the gateway, or `None` for text pasted at the terminal.
        file: Option<String>,
    },
}

impl Action {
    /// The least login class that may take it: configuration mode and everything that
    /// changes users, keys or the system is a super-user's; one's own password anyone's.
    pub fn class_needed(&self) -> LoginClass {
        match self {
            Action::Run(command) | Action::Confirm { command, .. } => command.class_needed(),
            Action::AskPassword(PasswordFor::Login) | Action::Exit => LoginClass::ReadOnly,
            Action::AskPassword(_)
            | Action::Configure
            | Action::Statement(_)
            | Action::ShowCandidate(_)
            | Action::Edit(_)
            | Action::Up(_)
            | Action::Top
            | Action::Commit { .. }
            | Action::Rollback(_)
            | Action::Load { .. } => LoginClass::SuperUser,
        }
    }
}

/// What a password typed at the console is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordFor {
    AddUser {
        user: String,
        cram_md5: bool,
    },
    SetUser {
        user: String,
    },
    /// The console login's own password.
    Login,
    /// A new console login's.
    AddLogin {
        user: String,
    },
}

/// One stage of a pipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pipe {
    Match(Pattern),
    Except(Pattern),
    Count,
    Last(usize),
    NoMore,
    Compare,
}

/// A parsed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub action: Action,
    pub pipes: Vec<Pipe>,
}

/// Why a line does not parse: the word to point at (its index; the number of words
/// for the end of the line), what is wrong, and the candidates where that helps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: usize,
    pub message: String,
    pub candidates: Vec<Candidate>,
}

impl SyntaxError {
    fn new(at: usize, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            at,
            message: message.into(),
            candidates: Vec::new(),
        }
    }
}

/// The two modes, each with its own tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Operational,
    Configuration,
}

impl Mode {
    pub fn root(self) -> &'static [Cmd] {
        match self {
            Mode::Operational => OPERATIONAL,
            Mode::Configuration => CONFIGURATION,
        }
    }
}

fn keyword(word: &str, help: &str) -> Candidate {
    Candidate::keyword(word, help)
}

fn placeholder(word: &str, help: &str) -> Candidate {
    Candidate::placeholder(word, help)
}

fn end() -> Candidate {
    keyword(END_OF_STATEMENT, "Execute this command")
}

fn pipe_candidate() -> Candidate {
    keyword("|", "Pipe through a command")
}

/// The item `word` names where a keyword may stand ([`find`]'s rule); a quoted word is a
/// value and names none.
fn find_keyword<'a, T>(
    items: &'a [T],
    name: impl Fn(&T) -> &str,
    word: &Word,
) -> Result<&'a T, Vec<&'a T>> {
    if word.quoted {
        return Err(Vec::new());
    }
    find(items, name, &word.text)
}

fn ambiguous(at: usize, word: &str, candidates: Vec<Candidate>) -> SyntaxError {
    SyntaxError {
        at,
        message: format!("'{word}' is ambiguous."),
        candidates,
    }
}

/// What may come after `words`, for `?` and TAB: the candidates, or where the words
/// stop making sense. `config` is the candidate configuration in configuration mode
/// (its list entries are offered), the running one otherwise.
pub fn candidates(
    mode: Mode,
    config: &Config,
    level: &[lex::Word],
    words: &[Word],
) -> Result<Vec<Candidate>, SyntaxError> {
    candidates_named(mode, config, level, &Names::default(), words).map(|(found, _)| found)
}

/// [`candidates`], with the names the gateway gave offered for arguments; and the kind
/// of names that would be offered here but were not given yet, to ask for them.
pub fn candidates_named(
    mode: Mode,
    config: &Config,
    level: &[lex::Word],
    names: &Names,
    words: &[Word],
) -> Result<(Vec<Candidate>, Option<NameKind>), SyntaxError> {
    let wanted = Cell::new(None);
    let at = Place {
        config,
        level,
        names,
        wanted: &wanted,
    };
    help_at(mode, at, words).map(|found| (found, wanted.get()))
}

fn help_at(mode: Mode, at: Place, words: &[Word]) -> Result<Vec<Candidate>, SyntaxError> {
    let (command, pipes) = split_pipes(words);
    match pipes {
        None => walk(mode.root(), at, command, 0, Walk::Help).map(|done| match done {
            Walked::Help(c) => c,
            Walked::Parsed(..) => Vec::new(),
        }),
        Some(pipe_words) => {
            let piped = match walk(mode.root(), at, command, 0, Walk::Parse)? {
                Walked::Parsed(_, piped, compare) => (piped, compare),
                Walked::Help(_) => (false, false),
            };
            if !piped.0 {
                return Err(SyntaxError::new(
                    command.len(),
                    "this command's output cannot be piped",
                ));
            }
            pipe_help(pipe_words, command.len(), piped.1)
        }
    }
}

/// Parses a whole line's words.
pub fn parse(
    mode: Mode,
    config: &Config,
    level: &[lex::Word],
    words: &[Word],
) -> Result<Parsed, SyntaxError> {
    let (command, pipes) = split_pipes(words);
    let (names, wanted) = (Names::default(), Cell::new(None));
    let at = Place {
        config,
        level,
        names: &names,
        wanted: &wanted,
    };
    let Walked::Parsed(action, piped, compare) = walk(mode.root(), at, command, 0, Walk::Parse)?
    else {
        return Err(SyntaxError::new(command.len(), "syntax error."));
    };
    let pipes = match pipes {
        None => Vec::new(),
        Some(_) if !piped => {
            return Err(SyntaxError::new(
                command.len(),
                "this command's output cannot be piped",
            ));
        }
        Some(rest) => parse_pipes(rest, command.len(), compare)?,
    };
    Ok(Parsed { action, pipes })
}

/// The command's words, and the words from the first `|` on.
fn split_pipes(words: &[Word]) -> (&[Word], Option<&[Word]>) {
    match words.iter().position(Word::is_pipe) {
        Some(i) => (&words[..i], Some(&words[i..])),
        None => (words, None),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    Parse,
    Help,
}

enum Walked {
    /// The action, whether its output may be piped, and whether `| compare` applies.
    Parsed(Action, bool, bool),
    Help(Vec<Candidate>),
}

/// What a line is walked against: the candidate (or an empty configuration in
/// operational mode), the level `edit` chose (empty at the top), which `set`,
/// `delete`, `show` and `edit` take as their start, and the names the gateway gave.
#[derive(Clone, Copy)]
struct Place<'a> {
    config: &'a Config,
    level: &'a [lex::Word],
    /// Names the gateway gave for arguments.
    names: &'a Names,
    /// Set when help reached an argument whose names the gateway has not given yet.
    wanted: &'a Cell<Option<NameKind>>,
}

fn walk(
    nodes: &'static [Cmd],
    place: Place,
    words: &[Word],
    base: usize,
    how: Walk,
) -> Result<Walked, SyntaxError> {
    let Some(first) = words.first() else {
        let mut out: Vec<Candidate> = nodes.iter().map(|n| keyword(n.name, n.help)).collect();
        if how == Walk::Parse {
            let expected = if base == 0 {
                "syntax error, expecting <command>.".to_string()
            } else {
                format!("syntax error, expecting one of: {}.", names(nodes))
            };
            return Err(SyntaxError {
                at: base,
                message: expected,
                candidates: out,
            });
        }
        out.sort_by(|a, b| a.word.cmp(&b.word));
        return Ok(Walked::Help(out));
    };
    let node = match find_keyword(nodes, |n| n.name, first) {
        Ok(node) => node,
        Err(many) if many.len() > 1 => {
            return Err(ambiguous(
                base,
                &first.text,
                many.iter().map(|n| keyword(n.name, n.help)).collect(),
            ));
        }
        Err(_) => {
            let message = if base == 0 {
                "unknown command.".to_string()
            } else {
                format!("syntax error, expecting one of: {}.", names(nodes))
            };
            return Err(SyntaxError::new(base, message));
        }
    };
    let rest = &words[1..];
    let at = base + 1;
    let config = place.config;
    match &node.kind {
        CmdKind::Menu(children) => walk(children, place, rest, at, how),
        CmdKind::Run(spec) => run_args(place, spec, rest, at, how),
        CmdKind::Operational => {
            let top = Place {
                level: &[],
                ..place
            };
            match walk(OPERATIONAL, top, rest, at, how)? {
                Walked::Parsed(Action::Configure | Action::Exit, ..) => Err(SyntaxError::new(
                    at,
                    "'run' takes commands that show or act on the gateway, not configure, exit or quit.",
                )),
                walked => Ok(walked),
            }
        }
        CmdKind::Statement => {
            let mut statement = vec![lex::Word::bare(node.name)];
            statement.extend(place.level.iter().cloned());
            statement.extend(rest.iter().map(Word::config_word));
            match how {
                Walk::Help => text::candidates(config, &statement)
                    .map(Walked::Help)
                    .map_err(|e| schema_error(e, rest, at)),
                // The schema decides now, so that the error points at the word.
                Walk::Parse => match text::apply_words(&mut config.clone(), &statement) {
                    Ok(()) => Ok(Walked::Parsed(Action::Statement(statement), false, false)),
                    Err(e) => Err(schema_error(e, rest, at)),
                },
            }
        }
        CmdKind::ConfigPath | CmdKind::EditPath => {
            let edit = matches!(node.kind, CmdKind::EditPath);
            let path = config_path(place, rest, at)?;
            match how {
                Walk::Parse if edit => {
                    if rest.is_empty() {
                        return Err(SyntaxError::new(
                            at,
                            "syntax error, expecting a place in the configuration.",
                        ));
                    }
                    if !text::is_place(&path) {
                        return Err(SyntaxError::new(
                            at + rest.len() - 1,
                            "not a place to edit: edit goes to a group of settings or to a list's entry, with its key",
                        ));
                    }
                    Ok(Walked::Parsed(Action::Edit(path), false, false))
                }
                Walk::Parse => Ok(Walked::Parsed(Action::ShowCandidate(path), true, true)),
                Walk::Help => {
                    let mut statement = vec![lex::Word::bare("set")];
                    statement.extend(path.iter().cloned());
                    let mut out: Vec<Candidate> = text::candidates(config, &statement)
                        .map_err(|e| schema_error(e, rest, at))?
                        .into_iter()
                        .filter(|c| c.word != END_OF_STATEMENT)
                        .collect();
                    if !edit {
                        out.push(pipe_candidate());
                    }
                    if !edit || (!rest.is_empty() && text::is_place(&path)) {
                        out.push(end());
                    }
                    Ok(Walked::Help(out))
                }
            }
        }
    }
}

fn names(nodes: &[Cmd]) -> String {
    nodes.iter().map(|n| n.name).collect::<Vec<_>>().join(", ")
}

/// A schema error, pointed at the word it names where it names one.
fn schema_error(e: text::LineError, rest: &[Word], at: usize) -> SyntaxError {
    use text::LineError as E;
    let found = match &e {
        E::UnknownKeyword { found, .. }
        | E::QuotedKeyword { found, .. }
        | E::Ambiguous { found, .. }
        | E::Trailing { found, .. } => Some(found.as_str()),
        E::Value { value, .. } | E::OutOfRange { value, .. } => Some(value.as_str()),
        _ => None,
    };
    let index = found
        .and_then(|f| rest.iter().rposition(|w| w.text == f))
        .map_or(at + rest.len(), |i| at + i);
    let candidates = match &e {
        E::Ambiguous { candidates, .. } => candidates.iter().map(|c| keyword(c, "")).collect(),
        _ => Vec::new(),
    };
    SyntaxError {
        at: index,
        message: e.to_string(),
        candidates,
    }
}

/// The canonical words of a configuration path (keywords written out in full), checked
/// against the schema. A quoted word is a key or a value, never a keyword.
fn config_path(place: Place, words: &[Word], at: usize) -> Result<Vec<lex::Word>, SyntaxError> {
    let config = place.config;
    let mut path: Vec<lex::Word> = place.level.to_vec();
    for (i, w) in words.iter().enumerate() {
        let mut statement = vec![lex::Word::bare("set")];
        statement.extend(path.iter().cloned());
        let next = text::candidates(config, &statement).map_err(|e| schema_error(e, words, at))?;
        let keywords: Vec<&Candidate> = next
            .iter()
            .filter(|c| !c.placeholder && c.word != END_OF_STATEMENT)
            .collect();
        let takes_value = next.iter().any(|c| c.placeholder);
        match find_keyword(&keywords, |c| c.word.as_str(), w) {
            Ok(c) => path.push(lex::Word::bare(c.word.clone())),
            Err(_) if takes_value => path.push(w.config_word()),
            Err(_) if w.quoted => {
                // The schema says whether a key or a value stands here.
                statement.push(w.config_word());
                text::candidates(config, &statement).map_err(|e| schema_error(e, words, at))?;
                path.push(w.config_word());
            }
            Err(many) if many.len() > 1 => {
                return Err(ambiguous(
                    at + i,
                    &w.text,
                    many.into_iter().map(|c| (*c).clone()).collect(),
                ));
            }
            Err(_) => {
                return Err(SyntaxError::new(
                    at + i,
                    format!("'{}' is not in the configuration here", w.text),
                ));
            }
        }
    }
    Ok(path)
}

/// The arguments of a command, parsed, or what may come after them.
fn run_args(
    place: Place,
    spec: &'static Spec,
    words: &[Word],
    at: usize,
    how: Walk,
) -> Result<Walked, SyntaxError> {
    let mut args = Args::default();
    let values: Vec<&Arg> = spec
        .args
        .iter()
        .filter(|a| matches!(a.kind, ArgKind::Value { .. }))
        .collect();
    let keywords: Vec<&Arg> = spec
        .args
        .iter()
        .filter(|a| !matches!(a.kind, ArgKind::Value { .. }))
        .collect();
    let mut i = 0;
    // An option whose value comes next.
    let mut waiting: Option<&Arg> = None;
    while i < words.len() {
        let w = &words[i];
        if let Some(option) = waiting.take() {
            args.options.push((option.name, Some(w.text.clone())));
            i += 1;
            continue;
        }
        let next_value = values.get(args.values.len()).copied();
        let value_required = matches!(
            next_value,
            Some(Arg {
                kind: ArgKind::Value { required: true, .. },
                ..
            })
        );
        let unused: Vec<&Arg> = keywords
            .iter()
            .copied()
            .filter(|a| {
                !args.flags.contains(&a.name) && !args.options.iter().any(|(n, _)| *n == a.name)
            })
            .collect();
        let as_keyword = if value_required {
            None
        } else {
            match find_keyword(&unused, |a| a.name, w) {
                Ok(a) => Some(*a),
                Err(many) if many.len() > 1 && next_value.is_none() => {
                    return Err(ambiguous(
                        at + i,
                        &w.text,
                        many.iter().map(|a| keyword(a.name, a.help)).collect(),
                    ));
                }
                Err(_) => None,
            }
        };
        match (as_keyword, next_value) {
            (Some(a), _) => match a.kind {
                ArgKind::Flag => args.flags.push(a.name),
                ArgKind::Option { optional, .. } => {
                    let next_is_keyword = words
                        .get(i + 1)
                        .is_some_and(|n| find_keyword(&unused, |a| a.name, n).is_ok());
                    if optional && (i + 1 >= words.len() || next_is_keyword) {
                        if i + 1 >= words.len() && how == Walk::Help {
                            waiting = Some(a);
                        } else {
                            args.options.push((a.name, None));
                        }
                    } else {
                        waiting = Some(a);
                    }
                }
                ArgKind::Value { .. } => {}
            },
            (None, Some(v)) => {
                // `values` holds value arguments only.
                let (choices, closed) = match v.kind {
                    ArgKind::Value {
                        choices, closed, ..
                    } => (choices, closed),
                    _ => (&[][..], false),
                };
                if closed {
                    match find(choices, |c| c, &w.text) {
                        Ok(c) => args.values.push((*c).to_string()),
                        Err(many) if many.len() > 1 => {
                            return Err(ambiguous(
                                at + i,
                                &w.text,
                                many.iter().map(|c| keyword(c, v.help)).collect(),
                            ));
                        }
                        Err(_) => {
                            return Err(SyntaxError::new(
                                at + i,
                                format!("syntax error, expecting {}.", choices.join(" or ")),
                            ));
                        }
                    }
                } else {
                    args.values.push(w.text.clone());
                }
            }
            (None, None) => {
                return Err(SyntaxError::new(
                    at + i,
                    format!("syntax error: unexpected '{}'.", w.text),
                ));
            }
        }
        i += 1;
    }
    if how == Walk::Help {
        return Ok(Walked::Help(next_args(place, spec, &args, waiting)));
    }
    if let Some(option) = waiting {
        // Only options wait for a value.
        let (placeholder, optional) = match option.kind {
            ArgKind::Option {
                placeholder,
                optional,
            } => (placeholder, optional),
            _ => ("VALUE", false),
        };
        if !optional {
            return Err(SyntaxError::new(
                at + words.len(),
                format!(
                    "syntax error, expecting <{placeholder}> after '{}'.",
                    option.name
                ),
            ));
        }
        args.options.push((option.name, None));
    }
    if let Some(missing) = values.get(args.values.len())
        && matches!(missing.kind, ArgKind::Value { required: true, .. })
    {
        return Err(SyntaxError {
            at: at + words.len(),
            message: format!("syntax error, expecting <{}>.", missing.name),
            candidates: vec![placeholder(missing.name, missing.help)],
        });
    }
    let action = (spec.build)(&args).map_err(|e| SyntaxError::new(at + words.len(), e))?;
    Ok(Walked::Parsed(action, spec.piped, false))
}

/// What may follow the arguments given so far.
fn next_args(place: Place, spec: &Spec, args: &Args, waiting: Option<&Arg>) -> Vec<Candidate> {
    if let Some(option) = waiting {
        let ArgKind::Option {
            placeholder: p,
            optional,
        } = option.kind
        else {
            return Vec::new();
        };
        let mut out = vec![placeholder(p, option.help)];
        if optional {
            out.push(end());
        }
        return out;
    }
    let mut out = Vec::new();
    let next_value = spec
        .args
        .iter()
        .filter(|a| matches!(a.kind, ArgKind::Value { .. }))
        .nth(args.values.len());
    if let Some(v) = next_value
        && let ArgKind::Value {
            required,
            choices,
            closed,
            names,
        } = v.kind
    {
        out.extend(choices.iter().map(|c| keyword(c, v.help)));
        if let Some(kind) = names {
            match place.names.get(kind) {
                Some(known) => out.extend(known.iter().map(|n| keyword(n, v.help))),
                None => place.wanted.set(Some(kind)),
            }
        }
        if !closed {
            out.push(placeholder(v.name, v.help));
        }
        if required {
            return out;
        }
    }
    for a in spec.args {
        let used = args.flags.contains(&a.name) || args.options.iter().any(|(n, _)| *n == a.name);
        if !used && !matches!(a.kind, ArgKind::Value { .. }) {
            out.push(keyword(a.name, a.help));
        }
    }
    if spec.piped {
        out.push(pipe_candidate());
    }
    out.push(end());
    out
}

const PIPES: &[(&str, &str)] = &[
    (
        "compare",
        "Compare the candidate with the running configuration",
    ),
    ("count", "Count the lines of output"),
    (
        "except",
        "Show only the lines without the pattern (a regular expression)",
    ),
    ("last", "Show only the last lines"),
    (
        "match",
        "Show only the lines with the pattern (a regular expression)",
    ),
    ("no-more", "Do not page the output"),
];

/// The pipes after a command: `| match TEXT | count` …
fn parse_pipes(words: &[Word], at: usize, compare: bool) -> Result<Vec<Pipe>, SyntaxError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        // INVARIANT: split_pipes starts the pipe words at a `|`, and each stage below
        // ends at the next `|` or the end.
        if !words[i].is_pipe() {
            return Err(SyntaxError::new(
                at + i,
                format!("syntax error: unexpected '{}'.", words[i].text),
            ));
        }
        i += 1;
        let offered: Vec<&(&str, &str)> = PIPES
            .iter()
            .filter(|(n, _)| compare || *n != "compare")
            .collect();
        let Some(w) = words.get(i) else {
            return Err(SyntaxError {
                at: at + i,
                message: "syntax error, expecting a pipe command.".into(),
                candidates: offered.iter().map(|(n, h)| keyword(n, h)).collect(),
            });
        };
        let name = match find_keyword(&offered, |(n, _)| n, w) {
            Ok((n, _)) => *n,
            Err(many) if many.len() > 1 => {
                return Err(ambiguous(
                    at + i,
                    &w.text,
                    many.iter().map(|(n, h)| keyword(n, h)).collect(),
                ));
            }
            Err(_) => {
                return Err(SyntaxError::new(
                    at + i,
                    format!(
                        "syntax error, expecting one of: {}.",
                        offered
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        };
        i += 1;
        let value = |i: usize, what: &str| {
            words
                .get(i)
                .filter(|w| !w.is_pipe())
                .map(|w| w.text.clone())
                .ok_or_else(|| {
                    SyntaxError::new(
                        at + i,
                        format!("syntax error, expecting <{what}> after '{name}'."),
                    )
                })
        };
        let pipe = match name {
            "match" | "except" => {
                let text = value(i, "PATTERN")?;
                let pattern = Pattern::parse(&text).map_err(|e| {
                    SyntaxError::new(at + i, format!("'{text}' is not a valid pattern: {e}."))
                })?;
                if name == "match" {
                    Pipe::Match(pattern)
                } else {
                    Pipe::Except(pattern)
                }
            }
            "last" => {
                let n = value(i, "N")?;
                Pipe::Last(n.parse().map_err(|_| {
                    SyntaxError::new(at + i, format!("'{n}' is not a number of lines."))
                })?)
            }
            "count" => Pipe::Count,
            "no-more" => Pipe::NoMore,
            _ => Pipe::Compare,
        };
        if matches!(pipe, Pipe::Match(_) | Pipe::Except(_) | Pipe::Last(_)) {
            i += 1;
        }
        out.push(pipe);
    }
    Ok(out)
}

fn pipe_help(words: &[Word], at: usize, compare: bool) -> Result<Vec<Candidate>, SyntaxError> {
    // The last stage decides: after `|`, the pipe commands; after one taking a value,
    // its placeholder; otherwise another pipe or the end.
    let last = words.iter().rposition(Word::is_pipe).unwrap_or(0);
    parse_pipes(&words[..last], at, compare)?;
    let stage = &words[last + 1..];
    let offered = PIPES.iter().filter(|(n, _)| compare || *n != "compare");
    match stage {
        [] => Ok(offered.map(|(n, h)| keyword(n, h)).collect()),
        [name, rest @ ..] => {
            let candidates: Vec<&(&str, &str)> = offered.collect();
            let found = find_keyword(&candidates, |(n, _)| n, name).map_err(|_| {
                SyntaxError::new(
                    at + last + 1,
                    format!("syntax error: unexpected '{}'.", name.text),
                )
            })?;
            let takes = match found.0 {
                "match" | "except" => Some("PATTERN"),
                "last" => Some("N"),
                _ => None,
            };
            match (takes, rest) {
                (Some(p), []) => Ok(vec![placeholder(p, found.1)]),
                (Some(_), [_]) | (None, []) => Ok(vec![pipe_candidate(), end()]),
                (_, [extra, ..]) => Err(SyntaxError::new(
                    at + last + 2 + usize::from(takes.is_some()),
                    format!("syntax error: unexpected '{}'.", extra.text),
                )),
            }
        }
    }
}

// ---- the operational tree ------------------------------------------------------------

const fn value(name: &'static str, help: &'static str) -> Arg {
    Arg {
        name,
        help,
        kind: ArgKind::Value {
            required: true,
            choices: &[],
            closed: false,
            names: None,
        },
    }
}

const fn optional_value(name: &'static str, help: &'static str) -> Arg {
    Arg {
        name,
        help,
        kind: ArgKind::Value {
            required: false,
            choices: &[],
            closed: false,
            names: None,
        },
    }
}

const fn flag(name: &'static str, help: &'static str) -> Arg {
    Arg {
        name,
        help,
        kind: ArgKind::Flag,
    }
}

const fn option(name: &'static str, placeholder: &'static str, help: &'static str) -> Arg {
    Arg {
        name,
        help,
        kind: ArgKind::Option {
            placeholder,
            optional: false,
        },
    }
}

/// A command without arguments.
macro_rules! plain {
    ($name:literal, $help:literal, $piped:expr, $action:expr) => {
        Cmd {
            name: $name,
            help: $help,
            kind: CmdKind::Run(&Spec {
                args: &[],
                piped: $piped,
                build: |_| Ok($action),
            }),
        }
    };
}

fn run(command: Command) -> Result<Action, String> {
    Ok(Action::Run(command))
}

/// `ID` or `all`.
const TARGET: Arg = Arg {
    name: "ID",
    help: "A queue id (see show queue), or all",
    kind: ArgKind::Value {
        required: true,
        choices: &["all"],
        closed: false,
        names: Some(NameKind::QueueId),
    },
};

/// A value that names something the gateway has, completed from its names.
const fn named(name: &'static str, help: &'static str, kind: NameKind) -> Arg {
    Arg {
        name,
        help,
        kind: ArgKind::Value {
            required: true,
            choices: &[],
            closed: false,
            names: Some(kind),
        },
    }
}

fn target(args: &Args) -> Result<Target, String> {
    match args.value(0) {
        Some(word) => Target::parse(word),
        None => Err("a queue id or all is needed".into()),
    }
}

fn user(args: &Args) -> Result<String, String> {
    let name = args.value(0).unwrap_or_default();
    crate::proto::sasl::users::UserName::parse(name)
        .map(|u| u.as_str().to_string())
        .ok_or_else(|| format!("'{name}' is not a valid user name"))
}

/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address; port 25 unless given.
pub fn host_port(text: &str) -> Result<(String, u16), String> {
    const SMTP_PORT: u16 = 25;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip.to_string(), SMTP_PORT));
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("'{p}' is not a port"))?,
        ),
        None => (text, SMTP_PORT),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || port == 0
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
    {
        return Err(format!(
            "'{text}' is not a host name or address with an optional port"
        ));
    }
    Ok((host.to_string(), port))
}

static SHOW: &[Cmd] = &[
    plain!(
        "certificates",
        "The certificates in the store",
        true,
        Action::Run(Command::ShowCertificates)
    ),
    plain!(
        "configuration",
        "The running configuration as set lines",
        true,
        Action::Run(Command::ShowConfiguration)
    ),
    plain!(
        "connections",
        "Open connections per service and client",
        true,
        Action::Run(Command::ShowConnections)
    ),
    plain!(
        "log",
        "The latest log lines",
        true,
        Action::Run(Command::ShowLog)
    ),
    Cmd {
        name: "queue",
        help: "The mail queue, like mailq",
        kind: CmdKind::Run(&Spec {
            args: &[flag(
                "summary",
                "Messages by recipient domain and age, like qshape",
            )],
            piped: true,
            build: |a| {
                run(Command::ShowQueue {
                    summary: a.flag("summary"),
                })
            },
        }),
    },
    plain!(
        "stats",
        "Counters since the start and since clear stats",
        true,
        Action::Run(Command::ShowStats)
    ),
    plain!(
        "status",
        "Version, uptime, running commit, listeners, queue and token",
        true,
        Action::Run(Command::ShowStatus)
    ),
    Cmd {
        name: "system",
        help: "System information",
        kind: CmdKind::Menu(&[plain!(
            "commit",
            "The commits kept, for rollback",
            true,
            Action::Run(Command::ShowCommits)
        )]),
    },
    plain!(
        "token",
        "The crypto token and where each operation runs",
        true,
        Action::Run(Command::ShowToken)
    ),
    plain!(
        "users",
        "Console sessions and the mail users",
        true,
        Action::Run(Command::ShowUsers)
    ),
];

static QUEUE: &[Cmd] = &[
    Cmd {
        name: "delete",
        help: "Remove messages from the queue, telling no one",
        kind: CmdKind::Run(&Spec {
            args: &[TARGET],
            piped: false,
            build: |a| run(Command::QueueDelete(target(a)?)),
        }),
    },
    Cmd {
        name: "flush",
        help: "Try deferred messages now, for one domain or all",
        kind: CmdKind::Run(&Spec {
            args: &[optional_value(
                "DOMAIN",
                "Only messages with recipients in this domain",
            )],
            piped: false,
            build: |a| {
                run(Command::QueueFlush {
                    domain: a.value(0).map(str::to_ascii_lowercase),
                })
            },
        }),
    },
    Cmd {
        name: "hold",
        help: "Keep messages from delivery until released",
        kind: CmdKind::Run(&Spec {
            args: &[TARGET],
            piped: false,
            build: |a| run(Command::QueueHold(target(a)?)),
        }),
    },
    Cmd {
        name: "release",
        help: "Release held messages and try them now",
        kind: CmdKind::Run(&Spec {
            args: &[TARGET],
            piped: false,
            build: |a| run(Command::QueueRelease(target(a)?)),
        }),
    },
    Cmd {
        name: "requeue",
        help: "Route messages again by the running configuration and try them now",
        kind: CmdKind::Run(&Spec {
            args: &[TARGET],
            piped: false,
            build: |a| run(Command::QueueRequeue(target(a)?)),
        }),
    },
];

static LOGIN: &[Cmd] = &[
    Cmd {
        name: "add",
        help: "Add a console login; its password is asked for",
        kind: CmdKind::Run(&Spec {
            args: &[value("USER", "The new login's name")],
            piped: false,
            build: |a| {
                Ok(Action::AskPassword(PasswordFor::AddLogin {
                    user: user(a)?,
                }))
            },
        }),
    },
    Cmd {
        name: "delete",
        help: "Delete a console login (not your own, nor the last one)",
        kind: CmdKind::Run(&Spec {
            args: &[named("USER", "The login's name", NameKind::ConsoleLogin)],
            piped: false,
            build: |a| run(Command::LoginDelete { user: user(a)? }),
        }),
    },
    plain!(
        "password",
        "Change your console password",
        false,
        Action::AskPassword(PasswordFor::Login)
    ),
];

static PASSWORD: &[Cmd] = &[
    Cmd {
        name: "add",
        help: "Add a mail user; the password is asked for",
        kind: CmdKind::Run(&Spec {
            args: &[
                value("USER", "The new user's name"),
                flag("cram-md5", "Also keep the secret CRAM-MD5 needs"),
            ],
            piped: false,
            build: |a| {
                Ok(Action::AskPassword(PasswordFor::AddUser {
                    user: user(a)?,
                    cram_md5: a.flag("cram-md5"),
                }))
            },
        }),
    },
    Cmd {
        name: "delete",
        help: "Delete a mail user",
        kind: CmdKind::Run(&Spec {
            args: &[named("USER", "The user's name", NameKind::MailUser)],
            piped: false,
            build: |a| run(Command::PasswordDelete { user: user(a)? }),
        }),
    },
    Cmd {
        name: "set",
        help: "Change a mail user's password; the password is asked for",
        kind: CmdKind::Run(&Spec {
            args: &[named("USER", "The user's name", NameKind::MailUser)],
            piped: false,
            build: |a| Ok(Action::AskPassword(PasswordFor::SetUser { user: user(a)? })),
        }),
    },
    Cmd {
        name: "show",
        help: "The mail users and their mechanisms, never secrets",
        kind: CmdKind::Run(&Spec {
            args: &[optional_value(
                "PATTERN",
                "Names to show, * matching anything",
            )],
            piped: true,
            build: |a| {
                run(Command::PasswordShow {
                    pattern: a.value(0).unwrap_or("*").to_string(),
                })
            },
        }),
    },
];

static CERTIFICATE: &[Cmd] = &[
    Cmd {
        name: "delete",
        help: "Remove a certificate and its key",
        kind: CmdKind::Run(&Spec {
            args: &[named(
                "NAME",
                "The certificate's name",
                NameKind::Certificate,
            )],
            piped: false,
            build: |a| {
                run(Command::CertificateDelete {
                    name: a.value(0).unwrap_or_default().to_string(),
                })
            },
        }),
    },
    Cmd {
        name: "generate-self-signed",
        help: "Make a self-signed certificate when the store is empty",
        kind: CmdKind::Run(&Spec {
            args: &[optional_value(
                "HOST",
                "The name it is for (default: the host name)",
            )],
            piped: false,
            build: |a| {
                run(Command::CertificateGenerate {
                    host: a.value(0).map(str::to_string),
                })
            },
        }),
    },
    Cmd {
        name: "import",
        help: "Import a PEM chain (leaf first) and its key; the key goes into the token",
        kind: CmdKind::Run(&Spec {
            args: &[
                value("NAME", "The name to store it under"),
                option("chain", "FILE", "The PEM chain, leaf first"),
                option("key", "FILE", "The PEM private key"),
            ],
            piped: false,
            build: |a| {
                let chain = a
                    .option("chain")
                    .flatten()
                    .ok_or("certificate import needs chain FILE")?;
                let key = a
                    .option("key")
                    .flatten()
                    .ok_or("certificate import needs key FILE")?;
                run(Command::CertificateImport {
                    name: a.value(0).unwrap_or_default().to_string(),
                    chain: chain.to_string(),
                    key: key.to_string(),
                })
            },
        }),
    },
    Cmd {
        name: "request",
        help: "Print a certificate request (CSR) for a stored key",
        kind: CmdKind::Run(&Spec {
            args: &[named(
                "NAME",
                "The certificate's name",
                NameKind::Certificate,
            )],
            piped: true,
            build: |a| {
                run(Command::CertificateRequest {
                    name: a.value(0).unwrap_or_default().to_string(),
                })
            },
        }),
    },
    plain!(
        "show",
        "The certificates in the store",
        true,
        Action::Run(Command::CertificateShow)
    ),
];

static TEST: &[Cmd] = &[
    Cmd {
        name: "dns",
        help: "Ask the configured resolvers for a name's addresses or MX records",
        kind: CmdKind::Run(&Spec {
            args: &[
                value("NAME", "The domain name"),
                flag("mx", "Ask for MX records"),
            ],
            piped: true,
            build: |a| {
                run(Command::TestDns {
                    name: a.value(0).unwrap_or_default().to_string(),
                    mx: a.flag("mx"),
                })
            },
        }),
    },
    Cmd {
        name: "smtp",
        help: "Connect, EHLO, STARTTLS with the certificate verdict, QUIT; each step timed",
        kind: CmdKind::Run(&Spec {
            args: &[value("HOST[:PORT]", "A next hop; port 25 unless given")],
            piped: true,
            build: |a| {
                let (host, port) = host_port(a.value(0).unwrap_or_default())?;
                run(Command::TestSmtp { host, port })
            },
        }),
    },
];

static EXPLAIN_ARGS: &[Arg] = &[
    option("from-ip", "ADDRESS", "The client's address"),
    option(
        "mail",
        "ADDRESS",
        "The envelope sender (\"\" for the null sender)",
    ),
    option("rcpt", "ADDRESS", "The recipient"),
    flag("tls", "The client used TLS"),
    option("auth", "USER", "The client authenticated as this user"),
    Arg {
        name: "service",
        help: "The service the client connected to (default inbound)",
        kind: ArgKind::Option {
            placeholder: "inbound|outbound",
            optional: false,
        },
    },
];

fn explain(a: &Args) -> Result<Action, String> {
    let ip = a
        .option("from-ip")
        .flatten()
        .ok_or("explain needs from-ip ADDRESS")?;
    let from_ip = ip
        .parse()
        .map_err(|_| format!("'{ip}' is not an IP address"))?;
    let mail = a
        .option("mail")
        .flatten()
        .ok_or("explain needs mail ADDRESS (\"\" for the null sender)")?;
    let rcpt = a
        .option("rcpt")
        .flatten()
        .ok_or("explain needs rcpt ADDRESS")?;
    let outbound = match a.option("service").flatten() {
        None => false,
        Some(s) if "inbound".starts_with(&s.to_ascii_lowercase()) && !s.is_empty() => false,
        Some(s) if "outbound".starts_with(&s.to_ascii_lowercase()) && !s.is_empty() => true,
        Some(s) => return Err(format!("'{s}' is not a service: inbound or outbound")),
    };
    run(Command::Explain {
        from_ip,
        mail: mail.to_string(),
        rcpt: rcpt.to_string(),
        tls: a.flag("tls"),
        auth: a.option("auth").flatten().map(str::to_string),
        outbound,
    })
}

/// Operational mode, `USER@HOST> `.
pub static OPERATIONAL: &[Cmd] = &[
    Cmd {
        name: "certificate",
        help: "Show, import, request or make TLS certificates",
        kind: CmdKind::Menu(CERTIFICATE),
    },
    Cmd {
        name: "clear",
        help: "Clear counters",
        kind: CmdKind::Menu(&[plain!(
            "stats",
            "Start the since-clear counters afresh",
            false,
            Action::Run(Command::ClearStats)
        )]),
    },
    plain!(
        "configure",
        "Enter configuration mode",
        false,
        Action::Configure
    ),
    plain!("exit", "Log out", false, Action::Exit),
    Cmd {
        name: "explain",
        help: "How the policy decides one recipient, step by step",
        kind: CmdKind::Run(&Spec {
            args: EXPLAIN_ARGS,
            piped: true,
            build: explain,
        }),
    },
    plain!(
        "factory-reset",
        "Erase the configuration, users, logins, secrets, certificates and keys; restart",
        false,
        Action::Confirm {
            question: "Erase the configuration, mail users, console logins, next-hop secrets, certificates and the gateway's keys, and restart with the factory configuration? Queued mail is kept.",
            command: Command::FactoryReset,
        }
    ),
    Cmd {
        name: "login",
        help: "Console logins: your password, and adding or deleting others",
        kind: CmdKind::Menu(LOGIN),
    },
    Cmd {
        name: "password",
        help: "Add, change, delete or list mail users",
        kind: CmdKind::Menu(PASSWORD),
    },
    Cmd {
        name: "queue",
        help: "Flush, hold, release, delete or requeue queued mail",
        kind: CmdKind::Menu(QUEUE),
    },
    plain!("quit", "Log out", false, Action::Exit),
    plain!(
        "restart",
        "Restart the gateway with its stored configuration",
        false,
        Action::Confirm {
            question: "Restart the gateway? Open sessions are cut.",
            command: Command::Restart
        }
    ),
    Cmd {
        name: "show",
        help: "Show information about the gateway",
        kind: CmdKind::Menu(SHOW),
    },
    Cmd {
        name: "system",
        help: "Firmware update, reboot, power-off and the watchdog of the appliance",
        kind: CmdKind::Menu(SYSTEM),
    },
    Cmd {
        name: "test",
        help: "Try a next hop or a DNS name from the gateway",
        kind: CmdKind::Menu(TEST),
    },
    Cmd {
        name: "token",
        help: "Log in to the crypto token, or make the keys the gateway needs",
        kind: CmdKind::Menu(TOKEN),
    },
];

static SYSTEM: &[Cmd] = &[
    plain!(
        "power-off",
        "Stop the gateway, write everything out and power the appliance off",
        false,
        Action::Confirm {
            question: "Power the appliance off? Open sessions are cut; it stays off until someone turns it on.",
            command: Command::SystemPowerOff,
        }
    ),
    plain!(
        "reboot",
        "Stop the gateway, write everything out and restart the appliance (and a new firmware)",
        false,
        Action::Confirm {
            question: "Reboot the appliance? Open sessions are cut.",
            command: Command::SystemReboot,
        }
    ),
    Cmd {
        name: "update",
        help: "Verify a firmware image and write it to the inactive slot, for the next reboot",
        kind: CmdKind::Run(&Spec {
            args: &[value("FILE", "The signed image, on the data disk")],
            piped: false,
            build: |a| {
                run(Command::SystemUpdate {
                    file: a.value(0).unwrap_or_default().to_string(),
                })
            },
        }),
    },
    Cmd {
        name: "watchdog-test",
        help: "Stop the gateway's event loop, to see the watchdog restart it",
        kind: CmdKind::Run(&Spec {
            args: &[Arg {
                name: "hardware",
                help: "Instead, stop feeding the hardware watchdog, to see it reset the appliance",
                kind: ArgKind::Value {
                    required: false,
                    choices: &["hardware"],
                    closed: true,
                    names: None,
                },
            }],
            piped: false,
            build: |a| {
                Ok(if a.value(0) == Some("hardware") {
                    Action::Confirm {
                        question: "Stop feeding the hardware watchdog until it resets the appliance? Open sessions are cut; accepted mail is kept.",
                        command: Command::SystemWatchdogTest { hardware: true },
                    }
                } else {
                    Action::Confirm {
                        question: "Stall the gateway until its watchdog restarts it? Open sessions are cut; accepted mail is kept.",
                        command: Command::SystemWatchdogTest { hardware: false },
                    }
                })
            },
        }),
    },
];

static TOKEN: &[Cmd] = &[
    plain!(
        "init-key",
        "Make the missing keys: the TLS key with a self-signed certificate, the configuration HMAC key",
        false,
        Action::Run(Command::TokenInitKey)
    ),
    plain!(
        "login",
        "Log in with the PIN file's PIN and list the gateway's keys",
        false,
        Action::Run(Command::TokenLogin)
    ),
];

fn commit(a: &Args) -> Result<Action, String> {
    let confirm_minutes = match a.option("confirmed") {
        None => None,
        // Junos's default for `commit confirmed` without minutes.
        Some(None) => Some(10),
        Some(Some(m)) => Some(
            m.parse::<u64>()
                .map_err(|_| format!("'{m}' is not a number of minutes"))?,
        ),
    };
    let check = a.flag("check");
    if check && (confirm_minutes.is_some() || a.flag("and-quit") || a.option("comment").is_some()) {
        return Err("commit check takes nothing else".into());
    }
    Ok(Action::Commit {
        check,
        confirm_minutes,
        comment: a
            .option("comment")
            .flatten()
            .unwrap_or_default()
            .to_string(),
        and_quit: a.flag("and-quit"),
    })
}

/// Configuration mode, `USER@HOST# `.
pub static CONFIGURATION: &[Cmd] = &[
    Cmd {
        name: "commit",
        help: "Commit the candidate configuration: it applies at once",
        kind: CmdKind::Run(&Spec {
            args: &[
                flag("and-quit", "Leave configuration mode once committed"),
                flag("check", "Only run the commit checks"),
                option("comment", "TEXT", "A comment kept with the commit"),
                Arg {
                    name: "confirmed",
                    help: "Roll back after some minutes (10 by default) unless committed again",
                    kind: ArgKind::Option {
                        placeholder: "MINUTES",
                        optional: true,
                    },
                },
            ],
            piped: false,
            build: commit,
        }),
    },
    Cmd {
        name: "delete",
        help: "Delete a configuration value or statement",
        kind: CmdKind::Statement,
    },
    Cmd {
        name: "edit",
        help: "Work under a place of the configuration: set, delete and show start there",
        kind: CmdKind::EditPath,
    },
    plain!(
        "exit",
        "Back to the level before the last edit; at the top, leave configuration mode",
        false,
        Action::Exit
    ),
    Cmd {
        name: "load",
        help: "Load set lines into the candidate, from a file or pasted at the terminal",
        kind: CmdKind::Run(&Spec {
            args: &[
                Arg {
                    name: "merge|replace",
                    help: "Merge onto the candidate, or replace it",
                    kind: ArgKind::Value {
                        required: true,
                        choices: &["merge", "replace"],
                        closed: true,
                        names: None,
                    },
                },
                Arg {
                    name: "FILE",
                    help: "A file on the gateway, or terminal to paste (end with Ctrl-D)",
                    kind: ArgKind::Value {
                        required: true,
                        choices: &["terminal"],
                        closed: false,
                        names: None,
                    },
                },
            ],
            piped: false,
            build: |a| {
                Ok(Action::Load {
                    replace: a.value(0) == Some("replace"),
                    file: a.value(1).filter(|f| *f != "terminal").map(str::to_string),
                })
            },
        }),
    },
    plain!(
        "quit",
        "Back to the level before the last edit; at the top, leave configuration mode",
        false,
        Action::Exit
    ),
    Cmd {
        name: "rollback",
        help: "Load the configuration of N commits ago into the candidate (0: the running one)",
        kind: CmdKind::Run(&Spec {
            args: &[optional_value("N", "How many commits back")],
            piped: false,
            build: |a| {
                let n = a.value(0).unwrap_or("0");
                Ok(Action::Rollback(n.parse().map_err(|_| {
                    format!("'{n}' is not a number of commits")
                })?))
            },
        }),
    },
    Cmd {
        name: "run",
        help: "Run an operational command",
        kind: CmdKind::Operational,
    },
    Cmd {
        name: "set",
        help: "Set a configuration value",
        kind: CmdKind::Statement,
    },
    Cmd {
        name: "show",
        help: "Show the candidate configuration",
        kind: CmdKind::ConfigPath,
    },
    plain!(
        "top",
        "Back to the top of the configuration",
        false,
        Action::Top
    ),
    Cmd {
        name: "up",
        help: "Up one place of the configuration, or N",
        kind: CmdKind::Run(&Spec {
            args: &[optional_value("N", "How many places up")],
            piped: false,
            build: |a| {
                let n = a.value(0).unwrap_or("1");
                match n.parse() {
                    Ok(n) if n > 0 => Ok(Action::Up(n)),
                    _ => Err(format!("'{n}' is not a number of places")),
                }
            },
        }),
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::console::words::split_str;

    fn parse_line(mode: Mode, line: &str) -> Result<Parsed, SyntaxError> {
        parse_at(mode, &[], line)
    }

    /// Parses `line` with `level` being edited.
    fn parse_at(mode: Mode, level: &[&str], line: &str) -> Result<Parsed, SyntaxError> {
        let level: Vec<lex::Word> = level.iter().map(|w| lex::Word::bare(*w)).collect();
        parse(
            mode,
            &crate::proto::config::host_default(),
            &level,
            &split_str(line).words,
        )
    }

    fn help(mode: Mode, line: &str) -> Vec<String> {
        help_at(mode, &[], line)
    }

    fn help_at(mode: Mode, level: &[&str], line: &str) -> Vec<String> {
        let level: Vec<lex::Word> = level.iter().map(|w| lex::Word::bare(*w)).collect();
        candidates(
            mode,
            &crate::proto::config::host_default(),
            &level,
            &split_str(line).words,
        )
        .unwrap()
        .into_iter()
        .map(|c| c.word)
        .collect()
    }

    #[test]
    fn edit_moves_the_start_of_set_delete_show_and_edit() {
        use Mode::Configuration as C;
        let words =
            |p: &[&str]| -> Vec<lex::Word> { p.iter().map(|w| lex::Word::bare(*w)).collect() };
        assert_eq!(
            parse_line(C, "ed serv inb").unwrap().action,
            Action::Edit(words(&["service", "inbound"]))
        );
        let at = ["service", "inbound"];
        assert_eq!(
            parse_at(C, &at, "set listen 127.0.0.1:2525")
                .unwrap()
                .action,
            Action::Statement(vec![
                lex::Word::bare("set"),
                lex::Word::bare("service"),
                lex::Word::bare("inbound"),
                lex::Word::bare("listen"),
                lex::Word::bare("127.0.0.1:2525"),
            ])
        );
        assert_eq!(
            parse_at(C, &at, "del listen").unwrap().action,
            Action::Statement(words(&["delete", "service", "inbound", "listen"]))
        );
        assert_eq!(
            parse_at(C, &at, "show").unwrap().action,
            Action::ShowCandidate(words(&at))
        );
        assert_eq!(
            parse_at(C, &["system"], "show watch").unwrap().action,
            Action::ShowCandidate(words(&["system", "watchdog"]))
        );
        assert_eq!(
            parse_at(C, &["system"], "edit watch").unwrap().action,
            Action::Edit(words(&["system", "watchdog"]))
        );
        // What the level does not hold is an error at the word, as at the top.
        let e = parse_at(C, &at, "set host-name x").unwrap_err();
        assert_eq!(e.at, 1, "{e:?}");
        // Help starts at the level too.
        assert!(help_at(C, &at, "set ").contains(&"listen".to_string()));
        assert!(!help_at(C, &at, "set ").contains(&"service".to_string()));
        // Only places: a group of settings or a list's entry with its key.
        let e = parse_line(C, "edit system host-name").unwrap_err();
        assert_eq!(e.at, 2);
        assert!(e.message.starts_with("not a place to edit"), "{e:?}");
        assert!(parse_line(C, "edit route").is_err());
        assert_eq!(
            parse_line(C, "edit route example.com").unwrap().action,
            Action::Edit(words(&["route", "example.com"]))
        );
        assert!(parse_line(C, "edit").is_err());
        assert!(help(C, "edit ").contains(&"service".to_string()));
        assert!(!help(C, "edit ").contains(&END_OF_STATEMENT.to_string()));
        assert!(help(C, "edit service inbound ").contains(&END_OF_STATEMENT.to_string()));
        assert!(!help(C, "edit ").contains(&"|".to_string()));
        // up, top; run is not moved.
        assert_eq!(parse_at(C, &at, "up").unwrap().action, Action::Up(1));
        assert_eq!(parse_at(C, &at, "up 2").unwrap().action, Action::Up(2));
        assert!(parse_at(C, &at, "up 0").is_err());
        assert_eq!(parse_at(C, &at, "top").unwrap().action, Action::Top);
        assert_eq!(
            parse_at(C, &at, "run show status").unwrap().action,
            Action::Run(Command::ShowStatus)
        );
        assert!(parse_line(Mode::Operational, "edit service").is_err());
    }

    #[test]
    fn abbreviations_and_ambiguity() {
        let p = parse_line(Mode::Operational, "sh sta").unwrap_err();
        assert_eq!(p.message, "'sta' is ambiguous.");
        assert_eq!(p.at, 1);
        let words: Vec<&str> = p.candidates.iter().map(|c| c.word.as_str()).collect();
        assert_eq!(words, ["stats", "status"]);
        assert_eq!(
            parse_line(Mode::Operational, "sh conf").unwrap().action,
            Action::Run(Command::ShowConfiguration)
        );
        assert_eq!(
            parse_line(Mode::Operational, "sh stats").unwrap().action,
            Action::Run(Command::ShowStats)
        );
        assert_eq!(
            parse_line(Mode::Operational, "SHOW STATUS").unwrap().action,
            Action::Run(Command::ShowStatus)
        );
        let e = parse_line(Mode::Operational, "c").unwrap_err();
        assert_eq!(e.message, "'c' is ambiguous.");
        assert_eq!(e.candidates.len(), 3);
        let e = parse_line(Mode::Operational, "shw status").unwrap_err();
        assert_eq!((e.at, e.message.as_str()), (0, "unknown command."));
        let e = parse_line(Mode::Operational, "show").unwrap_err();
        assert_eq!(e.at, 1);
        assert!(
            e.message
                .starts_with("syntax error, expecting one of: certificates,")
        );
    }

    #[test]
    fn arguments_flags_and_options() {
        assert_eq!(
            parse_line(Mode::Operational, "test dns example.org mx")
                .unwrap()
                .action,
            Action::Run(Command::TestDns {
                name: "example.org".into(),
                mx: true
            })
        );
        assert_eq!(
            parse_line(Mode::Operational, "test smtp [::1]:2526")
                .unwrap()
                .action,
            Action::Run(Command::TestSmtp {
                host: "::1".into(),
                port: 2526
            })
        );
        assert_eq!(
            parse_line(Mode::Operational, "queue hold all")
                .unwrap()
                .action,
            Action::Run(Command::QueueHold(Target::All))
        );
        assert!(
            parse_line(Mode::Operational, "queue hold ../x")
                .unwrap_err()
                .message
                .contains("not a queue id")
        );
        assert_eq!(
            parse_line(Mode::Operational, "queue flush Example.COM")
                .unwrap()
                .action,
            Action::Run(Command::QueueFlush {
                domain: Some("example.com".into())
            })
        );
        assert_eq!(
            parse_line(Mode::Configuration, "commit confirmed comment \"a b\"")
                .unwrap()
                .action,
            Action::Commit {
                check: false,
                confirm_minutes: Some(10),
                comment: "a b".into(),
                and_quit: false
            }
        );
        assert_eq!(
            parse_line(Mode::Configuration, "com conf 1 and")
                .unwrap()
                .action,
            Action::Commit {
                check: false,
                confirm_minutes: Some(1),
                comment: String::new(),
                and_quit: true
            }
        );
        assert_eq!(
            parse_line(Mode::Configuration, "load rep terminal")
                .unwrap()
                .action,
            Action::Load {
                replace: true,
                file: None
            }
        );
        assert!(parse_line(Mode::Configuration, "load sideways x").is_err());
        assert_eq!(
            parse_line(
                Mode::Operational,
                "explain from-ip 192.0.2.7 mail \"\" rcpt a@example.com service out tls"
            )
            .unwrap()
            .action,
            Action::Run(Command::Explain {
                from_ip: "192.0.2.7".parse().unwrap(),
                mail: String::new(),
                rcpt: "a@example.com".into(),
                tls: true,
                auth: None,
                outbound: true
            })
        );
        let e = parse_line(Mode::Operational, "password add").unwrap_err();
        assert_eq!(e.message, "syntax error, expecting <USER>.");
    }

    #[test]
    fn a_quoted_word_is_a_value_never_a_keyword() {
        // A statement keeps which words were quoted, for the schema to read.
        let p = parse_line(
            Mode::Configuration,
            "delete service inbound ehlo-keywords \"AUTH\"",
        );
        let e = p.unwrap_err();
        assert!(
            e.message.contains("nothing to delete"),
            "the factory keywords are not AUTH alone: {e:?}"
        );
        assert_eq!(
            parse_line(
                Mode::Configuration,
                "set service inbound ehlo-keywords \"AUTH\""
            )
            .unwrap()
            .action,
            Action::Statement(vec![
                lex::Word::bare("set"),
                lex::Word::bare("service"),
                lex::Word::bare("inbound"),
                lex::Word::bare("ehlo-keywords"),
                lex::Word::in_quotes("AUTH"),
            ])
        );
        let e = parse_line(Mode::Configuration, "set \"system\" host-name x").unwrap_err();
        assert_eq!(e.at, 1);
        assert!(
            e.message.starts_with("quoted word \"system\" after 'set'"),
            "{e:?}"
        );
        // Commands, flags, options and pipe commands.
        let e = parse_line(Mode::Operational, "\"show\" status").unwrap_err();
        assert_eq!((e.at, e.message.as_str()), (0, "unknown command."));
        let e = parse_line(Mode::Operational, "show \"status\"").unwrap_err();
        assert_eq!(e.at, 1);
        let e = parse_line(Mode::Operational, "test dns example.org \"mx\"").unwrap_err();
        assert_eq!(e.at, 3);
        let e = parse_line(Mode::Configuration, "commit confirmed \"check\"").unwrap_err();
        assert!(e.message.contains("check"), "{e:?}");
        assert_eq!(
            parse_line(Mode::Configuration, "commit comment \"check\"")
                .unwrap()
                .action,
            Action::Commit {
                check: false,
                confirm_minutes: None,
                comment: "check".into(),
                and_quit: false
            }
        );
        let e = parse_line(Mode::Operational, "show log | \"count\"").unwrap_err();
        assert_eq!(e.at, 3);
        assert!(
            candidates(
                Mode::Operational,
                &crate::proto::config::host_default(),
                &[],
                &split_str("show log | \"match\" ").words
            )
            .is_err()
        );
        // In `show`, a quoted key is a key, and a quoted keyword is refused.
        assert_eq!(
            parse_line(Mode::Configuration, "show service \"inbound\"")
                .unwrap()
                .action,
            Action::ShowCandidate(vec![
                lex::Word::bare("service"),
                lex::Word::in_quotes("inbound")
            ])
        );
        assert!(parse_line(Mode::Configuration, "show \"route\"").is_err());
    }

    #[test]
    fn pipes() {
        let p = parse_line(Mode::Operational, "show log | match smtpd | count").unwrap();
        assert_eq!(p.pipes, [Pipe::Match("smtpd".into()), Pipe::Count]);
        let p = parse_line(Mode::Configuration, "show route | compare").unwrap();
        assert_eq!(
            p.action,
            Action::ShowCandidate(vec![lex::Word::bare("route")])
        );
        assert_eq!(p.pipes, [Pipe::Compare]);
        assert!(parse_line(Mode::Operational, "show log | compare").is_err());
        assert!(parse_line(Mode::Operational, "queue flush | count").is_err());
        assert_eq!(
            help(Mode::Operational, "show log | "),
            ["count", "except", "last", "match", "no-more"]
        );
        assert_eq!(help(Mode::Operational, "show log | match "), ["<PATTERN>"]);
        let p = parse_line(Mode::Operational, "show log | except \"reject|defer\"").unwrap();
        assert_eq!(
            p.pipes,
            [Pipe::Except(Pattern::parse("reject|defer").unwrap())]
        );
        let e = parse_line(Mode::Operational, "show log | match a(b").unwrap_err();
        assert_eq!(
            e.message,
            "'a(b' is not a valid pattern: a '(' has no ')' after it."
        );
        assert_eq!(
            help(Mode::Operational, "show log | match x "),
            ["|", END_OF_STATEMENT]
        );
    }

    #[test]
    fn help_lists_what_may_come_next() {
        assert!(help(Mode::Operational, "").contains(&"show".to_string()));
        assert_eq!(
            help(Mode::Operational, "test dns x "),
            ["mx", "|", END_OF_STATEMENT]
        );
        assert_eq!(
            help(Mode::Operational, "show queue "),
            ["summary", "|", END_OF_STATEMENT]
        );
        assert_eq!(help(Mode::Operational, "queue hold "), ["all", "<ID>"]);
        // The configuration schema answers inside set and delete.
        let routes = help(Mode::Configuration, "set route ");
        assert!(routes.contains(&".example.com".to_string()), "{routes:?}");
        assert!(routes.contains(&"<PATTERN>".to_string()));
        assert!(help(Mode::Configuration, "show ").contains(&"route".to_string()));
        assert!(help(Mode::Configuration, "run show ").contains(&"queue".to_string()));
        assert_eq!(
            parse_line(Mode::Configuration, "run show stats")
                .unwrap()
                .action,
            Action::Run(Command::ShowStats)
        );
        assert!(parse_line(Mode::Configuration, "run configure").is_err());
        assert!(parse_line(Mode::Configuration, "run exit").is_err());
    }

    /// Help and parsing cannot disagree: for generated lines from the tree's own words,
    /// whenever a line parses, `?` before its last word offers that word (as a keyword
    /// it abbreviates, or a placeholder it fills); nothing panics, and an error points
    /// inside the line.
    #[test]
    fn help_and_parsing_agree_on_generated_lines() {
        let vocabulary = [
            "show",
            "sh",
            "status",
            "stat",
            "queue",
            "summary",
            "log",
            "|",
            "match",
            "x",
            "count",
            "test",
            "smtp",
            "dns",
            "mx",
            "127.0.0.1:25",
            "example.org",
            "set",
            "delete",
            "route",
            "example.com",
            ".example.com",
            "relay",
            "[127.0.0.1]:25",
            "system",
            "host-name",
            "gw.example.org",
            "commit",
            "confirmed",
            "2",
            "comment",
            "check",
            "and-quit",
            "rollback",
            "1",
            "load",
            "merge",
            "terminal",
            "run",
            "configure",
            "exit",
            "hold",
            "all",
            "password",
            "add",
            "alice",
            "cram-md5",
            "explain",
            "from-ip",
            "192.0.2.1",
            "mail",
            "rcpt",
            "a@example.com",
            "no-more",
            "last",
            "compare",
            "",
            "syslog",
            "host",
            "failover-timeout",
            "3s",
            "clear",
            "stats",
            "certificate",
            "import",
            "chain",
            "/tmp/c.pem",
            "key",
            "edit",
            "up",
            "top",
            "2",
            "listen",
            "watchdog",
        ];
        let config = crate::proto::config::host_default();
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut parsed = 0;
        for _ in 0..30_000 {
            let len = 1 + (next() % 6) as usize;
            let line: Vec<String> = (0..len)
                .map(|_| {
                    crate::proto::config::text::lex::word(
                        vocabulary[(next() % vocabulary.len() as u64) as usize],
                    )
                })
                .collect();
            let line = line.join(" ");
            let inbound = [lex::Word::bare("service"), lex::Word::bare("inbound")];
            for (mode, level) in [
                (Mode::Operational, &[][..]),
                (Mode::Configuration, &[][..]),
                (Mode::Configuration, &inbound[..]),
            ] {
                let words = split_str(&line).words;
                let _ = candidates(mode, &config, level, &words);
                match parse(mode, &config, level, &words) {
                    Err(e) => assert!(e.at <= words.len(), "{line}: {e:?}"),
                    Ok(p) => {
                        parsed += 1;
                        let (last, before) = words.split_last().unwrap();
                        let offered =
                            candidates(mode, &config, level, before).unwrap_or_else(|e| {
                                panic!("{line}: parses, but help before its last word fails: {e:?}")
                            });
                        let fits = offered.iter().any(|c| {
                            c.placeholder
                                || c.text()
                                    .to_lowercase()
                                    .starts_with(&last.text.to_lowercase())
                        });
                        assert!(
                            fits,
                            "{line} parses as {p:?}, but help before '{}' offers {offered:?}",
                            last.text
                        );
                    }
                }
            }
        }
        assert!(parsed > 200, "only {parsed} lines parsed");
    }
}
