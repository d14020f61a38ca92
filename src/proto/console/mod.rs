//! The serial console (SPEC §9): a Junos-style command line for the whole appliance, as
//! a core without I/O. **Invariant:** every line, from the serial port, standard input
//! or `drawbridge cli`, runs through the one command tree, and no request but the login
//! check reaches the gateway before a login has succeeded.
//!
//! Bytes from the terminal go in ([`Console::handle_input`]); bytes for the terminal
//! ([`Console::poll_transmit`]) and requests for the gateway ([`Console::poll_event`])
//! come out; the gateway's answers ([`Console::handle_answer`]), log lines
//! ([`Console::handle_log`]) and the time ([`Console::handle_timeout`], for the wait
//! after a failed login) go in. Calling order: after any input, drain
//! `poll_event` and `poll_transmit`; answer each [`Event::Request`] exactly once, in
//! order; call `handle_timeout` at `poll_timeout`.
//!
//! The core asks `login:` and `Password:`, forces the factory password to be changed,
//! then edits lines (insert and delete anywhere, Ctrl-A/E/B/F/K/U/W/C/D/L, arrows and
//! history, TAB completion, `?` help anywhere) and runs them through the one command
//! tree ([`tree`]), whose configuration part is the configuration schema. Output is
//! filtered by pipes and paged. A log line that arrives while a line is being typed is
//! printed above it, and the line is drawn again as it was.
//!
//! It knows nothing of sockets, files, terminals' modes or the clock; a test drives it
//! byte by byte.

pub mod editor;
pub mod keys;
pub mod output;
pub mod pattern;
pub mod request;
pub mod screen;
pub mod tree;
pub mod words;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use editor::{BELL, History, Line, Screen};
use keys::{Key, KeyDecoder};
use output::Pager;
pub use request::{Answer, Command, Request, Secret, Target};
use request::{NameKind, Names};
use tree::{Action, Mode, PasswordFor, Pipe, SyntaxError};

use crate::proto::config::Candidate;
use crate::proto::config::text::lex::Word;
use crate::proto::config::text::{self, Candidate as Completion, END_OF_STATEMENT};
use crate::proto::config::{Config, LoginClass};

/// Keys typed while a request runs, kept to be handled after it: a few lines' worth.
pub const MAX_TYPEAHEAD: usize = 4096;
/// Largest configuration pasted for `load … terminal`: 1 MiB, a few thousand statements.
pub const MAX_PASTE: usize = 1024 * 1024;
/// Log lines kept back while a configuration is pasted: the newest are dropped past this.
pub const MAX_HELD_LOGS: usize = 100;
/// Shortest password accepted for a console login or a mail user.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The factory console account, documented in the README; its password must be changed
/// at the first login.
pub const FACTORY_USER: &str = "admin";
pub const FACTORY_PASSWORD: &str = "drawbridge";
/// Column of the help text in `?` listings, as on Junos.
const HELP_COLUMN: usize = 22;
/// What a listing's line cut to the terminal's width ends in.
const ELLIPSIS: &str = "...";

/// How a console session starts.
#[derive(Clone, Debug)]
pub struct Options {
    /// The gateway's host name, for the prompt.
    pub host_name: String,
    /// The terminal's size; 0 rows never pages, 0 columns never scrolls a line (a
    /// script rather than a terminal).
    pub rows: u16,
    pub columns: u16,
    /// A user already known (root on the box through `drawbridge cli`): no login.
    pub user: Option<String>,
    /// A logged-in session nobody types at for this long is logged out; `None`: never.
    /// A running request does not count as idle, and its answer starts the wait again.
    pub idle_timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host_name: "drawbridge".into(),
            rows: 24,
            columns: 80,
            user: None,
            idle_timeout: None,
        }
    }
}

/// What the core has for whoever drives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Carry this out and answer with [`Console::handle_answer`].
    Request(Request),
    /// Ctrl-C while the last request runs: give it up if it can be, and answer
    /// [`Answer::Cancelled`] (or its real answer, if it is done).
    Cancel,
    /// The session is over (`exit`, Ctrl-D): close the connection, or start a new
    /// session with a fresh core.
    Closed,
}

/// What a request's answer is for.
#[derive(Debug)]
enum Pending {
    Login {
        user: String,
    },
    SetLoginPassword {
        forced: bool,
    },
    Output {
        pipes: Vec<Pipe>,
    },
    Configure,
    Compare {
        path: Vec<Word>,
        pipes: Vec<Pipe>,
    },
    Commit {
        and_quit: bool,
    },
    Rollback,
    LoadFile {
        replace: bool,
    },
    /// Names for completing an argument; then `?` or TAB again.
    Names {
        kind: NameKind,
        then: AfterNames,
    },
}

/// What waits for the names the gateway is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterNames {
    Help,
    Complete,
}

#[derive(Debug)]
enum State {
    LoginName,
    LoginPassword {
        user: String,
    },
    /// After a failed login, until the deadline.
    Throttled,
    /// A new password, asked twice without echo.
    NewPassword {
        purpose: PasswordFor,
        forced: bool,
        first: Option<Secret>,
    },
    /// Editing a command line.
    Ready,
    /// A request runs.
    Busy(Pending),
    /// The pager waits at `--More--`.
    More,
    /// A yes-or-no question before a command.
    Confirm(Command),
    /// `exit` with uncommitted changes: yes or no.
    ConfirmExit,
    /// `load … terminal`: the pasted text so far.
    Paste {
        replace: bool,
        text: String,
    },
    Closed,
}

/// Configuration mode: the candidate, the configuration it started from, and where in
/// it the administrator works (`edit`).
struct Editing {
    candidate: Candidate,
    base: Config,
    /// The place `set`, `delete`, `show` and `edit` start from; empty at the top.
    level: Vec<Word>,
    /// The levels each `edit` left, for `exit` to go back to.
    back: Vec<Vec<Word>>,
}

impl Editing {
    fn new(candidate: Candidate) -> Editing {
        Editing {
            base: candidate.config.clone(),
            candidate,
            level: Vec::new(),
            back: Vec::new(),
        }
    }

    /// The banner of the level, `[edit]` or `[edit service inbound]`, shown when the
    /// level changes.
    fn banner(&self) -> String {
        let mut out = String::from("[edit");
        for w in &self.level {
            out.push(' ');
            out.push_str(&output::sanitize(&text::lex::word(&w.text)));
        }
        out.push(']');
        out
    }
}

/// One console session.
pub struct Console {
    host: String,
    decoder: KeyDecoder,
    out: Vec<u8>,
    events: VecDeque<Event>,
    state: State,
    line: Line,
    screen: Screen,
    histories: [History; 2],
    user: Option<String>,
    editing: Option<Editing>,
    /// What operational mode completes against (nothing of it, so far).
    empty: Config,
    /// Names the gateway gave for completing arguments, since the last command ran.
    names: Names,
    /// What the login may do (root's `drawbridge cli`, logged in by the kernel: all).
    class: LoginClass,
    typeahead: VecDeque<Key>,
    pager: Pager,
    deadline: Option<Instant>,
    held_logs: VecDeque<String>,
    cancelled: bool,
    idle_timeout: Option<Duration>,
    /// When the session is logged out for want of a keystroke, once someone is logged in.
    idle_deadline: Option<Instant>,
    /// Why the session was logged out other than by `exit`, once it was.
    logged_out: Option<Logout>,
    /// A revocation that came while a request ran: carried out when it is answered.
    revoked: Option<String>,
}

/// Why a session was logged out other than by `exit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Logout {
    /// Nobody typed for the idle timeout.
    Idle,
    /// Its login was taken away (deleted) while it was open; the text says by whom.
    Revoked(String),
}

impl Console {
    /// A session starting at `now`.
    pub fn new(options: Options, now: Instant) -> Console {
        let mut console = Console {
            host: options.host_name,
            decoder: KeyDecoder::default(),
            out: Vec::new(),
            events: VecDeque::new(),
            state: State::LoginName,
            line: Line::default(),
            screen: Screen::new(options.columns),
            histories: [History::default(), History::default()],
            user: None,
            editing: None,
            empty: Config::default(),
            names: Names::default(),
            class: LoginClass::SuperUser,
            typeahead: VecDeque::new(),
            pager: Pager::new(options.rows, options.columns),
            deadline: None,
            held_logs: VecDeque::new(),
            cancelled: false,
            idle_timeout: options.idle_timeout,
            idle_deadline: None,
            logged_out: None,
            revoked: None,
        };
        console.touch(now);
        match options.user {
            Some(user) => console.logged_in(user),
            None => {
                let host = output::sanitize(&console.host);
                console.write_line("");
                console.write_line(&format!(
                    "{host} (drawbridge {})",
                    env!("CARGO_PKG_VERSION")
                ));
                console.write_line("");
                console.prompt();
            }
        }
        console
    }

    // ---- the interface ---------------------------------------------------------------

    /// Bytes typed at the terminal at `now`.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.touch(now);
        let mut keys = Vec::new();
        self.decoder.feed(bytes, &mut keys);
        for key in keys {
            match self.state {
                State::Busy(_) => {
                    if key == Key::Ctrl(b'c') {
                        if !self.cancelled {
                            self.cancelled = true;
                            self.events.push_back(Event::Cancel);
                        }
                    } else if self.typeahead.len() < MAX_TYPEAHEAD {
                        self.typeahead.push_back(key);
                    }
                }
                // A guesser gets no head start while the login waits.
                State::Throttled | State::Closed => {}
                _ => self.key(key),
            }
        }
    }

    /// The answer to the oldest request not yet answered.
    pub fn handle_answer(&mut self, answer: Answer, now: Instant) {
        let State::Busy(pending) = std::mem::replace(&mut self.state, State::Ready) else {
            return;
        };
        self.cancelled = false;
        self.answered(pending, answer, now);
        self.touch(now);
        if let Some(why) = self.revoked.take() {
            self.revoke(&why);
            return;
        }
        self.replay_typeahead();
    }

    /// The session's login was taken away (`why`: "deleted by root"): it is logged out
    /// at once, or when the request it is running is answered, since a commit or a
    /// queue operation runs to its end. Before anyone logs in there is nothing to do.
    pub fn revoke(&mut self, why: &str) {
        if self.user.is_none() || matches!(self.state, State::Closed) {
            return;
        }
        if matches!(self.state, State::Busy(_)) {
            self.revoked = Some(why.to_owned());
            return;
        }
        let why = output::sanitize(why);
        self.log_out(
            &format!("This login was {why}: logged out."),
            Logout::Revoked(why),
        );
    }

    /// A log line to show.
    pub fn handle_log(&mut self, line: &str) {
        let line = output::sanitize(line);
        match &self.state {
            State::Closed => {}
            State::Paste { .. } => {
                if self.held_logs.len() < MAX_HELD_LOGS {
                    self.held_logs.push_back(line);
                }
            }
            // Waiting for names, the line being typed is on the screen.
            State::Busy(Pending::Names { .. }) => {
                self.screen.erase(&mut self.out);
                self.write_line(&line);
                self.screen.redraw(&mut self.out);
            }
            State::Busy(_) | State::Throttled => self.write_line(&line),
            State::More => {
                Pager::erase_more(&mut self.out);
                self.write_line(&line);
                self.out.extend_from_slice(output::MORE.as_bytes());
            }
            _ => {
                self.screen.erase(&mut self.out);
                self.write_line(&line);
                self.screen.redraw(&mut self.out);
            }
        }
    }

    /// The time has come (see [`Console::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Throttled) && self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            self.state = State::LoginName;
            self.prompt();
        }
        if self.idle_deadline().is_some_and(|d| now >= d) {
            self.idle_out();
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.idle_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Why the session was logged out, when it was not by `exit`.
    pub fn logged_out(&self) -> Option<&Logout> {
        self.logged_out.as_ref()
    }

    /// The user logged in, once one is.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    // ---- output helpers --------------------------------------------------------------

    fn write_line(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn bell(&mut self) {
        self.out.extend_from_slice(BELL);
    }

    fn mode(&self) -> Mode {
        if self.editing.is_some() {
            Mode::Configuration
        } else {
            Mode::Operational
        }
    }

    /// Starts a new row with the prompt of the state, and the (empty) line.
    fn prompt(&mut self) {
        self.line.clear();
        let (prompt, echo) = match &self.state {
            State::LoginName => ("login: ".to_string(), true),
            State::LoginPassword { .. } => ("Password:".to_string(), false),
            State::NewPassword { first: None, .. } => ("New password:".to_string(), false),
            State::NewPassword { first: Some(_), .. } => {
                ("Retype new password:".to_string(), false)
            }
            State::Confirm(_) | State::ConfirmExit => ("[yes,no] (no) ".to_string(), true),
            _ => {
                let user = self.user.as_deref().unwrap_or("-");
                let sign = if self.editing.is_some() { '#' } else { '>' };
                (
                    format!("{user}@{}{sign} ", output::sanitize(&self.host)),
                    true,
                )
            }
        };
        self.screen.start(&prompt, echo, &self.line, &mut self.out);
    }

    fn request(&mut self, request: Request, pending: Pending) {
        self.events.push_back(Event::Request(request));
        self.state = State::Busy(pending);
    }

    fn replay_typeahead(&mut self) {
        while !matches!(
            self.state,
            State::Busy(_) | State::Closed | State::Throttled
        ) {
            let Some(key) = self.typeahead.pop_front() else {
                return;
            };
            self.key(key);
        }
        if matches!(self.state, State::Closed | State::Throttled) {
            self.typeahead.clear();
        }
    }

    /// Shows `lines` through the pager, then the prompt.
    fn show(&mut self, lines: Vec<String>, paging: bool) {
        self.pager.start(lines, paging);
        self.page();
    }

    fn page(&mut self) {
        if self.pager.emit(&mut self.out) {
            self.state = State::Ready;
            self.prompt();
        } else {
            self.state = State::More;
        }
    }

    fn error(&mut self, message: &str) {
        for line in message.lines() {
            self.write_line(&output::sanitize(line));
        }
    }

    // ---- keys ------------------------------------------------------------------------

    fn key(&mut self, key: Key) {
        match self.state {
            State::More => return self.more_key(key),
            State::Paste { .. } => return self.paste_key(key),
            State::Busy(_) | State::Throttled | State::Closed => return,
            _ => {}
        }
        let ready = matches!(self.state, State::Ready);
        match key {
            Key::Enter => return self.enter(),
            Key::Char('?') if ready && !self.line.in_quotes() => return self.help(),
            Key::Tab if ready => return self.complete(),
            Key::Char(c) => {
                if !self.line.insert(c) {
                    self.bell();
                }
            }
            Key::Tab => self.bell(),
            Key::Backspace | Key::Ctrl(b'h') => {
                if !self.line.backspace() {
                    self.bell();
                }
            }
            Key::Delete => {
                self.line.delete();
            }
            Key::Left | Key::Ctrl(b'b') => {
                self.line.left();
            }
            Key::Right | Key::Ctrl(b'f') => {
                self.line.right();
            }
            Key::Home | Key::Ctrl(b'a') => self.line.home(),
            Key::End | Key::Ctrl(b'e') => self.line.end(),
            Key::Ctrl(b'k') => self.line.kill_to_end(),
            Key::Ctrl(b'u') => self.line.clear(),
            Key::Ctrl(b'w') => {
                self.line.kill_word();
            }
            Key::Up | Key::Ctrl(b'p') if ready => {
                let current = self.line.text();
                match self.histories[self.mode() as usize].older(&current) {
                    Some(l) => self.line.set(&l),
                    None => self.bell(),
                }
            }
            Key::Down | Key::Ctrl(b'n') if ready => {
                match self.histories[self.mode() as usize].newer() {
                    Some(l) => self.line.set(&l),
                    None => self.bell(),
                }
            }
            Key::Ctrl(b'l') => {
                self.screen.finish(&mut self.out);
                let line = std::mem::take(&mut self.line);
                self.prompt();
                self.line = line;
            }
            Key::Ctrl(b'c') => return self.interrupt(),
            Key::Ctrl(b'd') => {
                if self.line.is_empty() {
                    return self.end_of_input();
                }
                self.line.delete();
            }
            _ => self.bell(),
        }
        self.screen.draw(&self.line, &mut self.out);
    }

    /// Ctrl-C: the line is dropped (and a question answered no).
    fn interrupt(&mut self) {
        self.screen.finish(&mut self.out);
        match std::mem::replace(&mut self.state, State::Ready) {
            State::LoginName | State::LoginPassword { .. } => self.state = State::LoginName,
            // Before the forced change nothing else is allowed: back to the login.
            State::NewPassword { forced: true, .. } => {
                self.user = None;
                self.state = State::LoginName;
            }
            _ => {}
        }
        self.prompt();
    }

    /// Ctrl-D on an empty line: `exit`.
    fn end_of_input(&mut self) {
        match self.state {
            State::Ready => {
                self.screen.finish(&mut self.out);
                self.exit();
            }
            _ => self.bell(),
        }
    }

    fn more_key(&mut self, key: Key) {
        match key {
            Key::Char(' ') => self.pager.next_page(),
            Key::Enter | Key::Down => self.pager.next_line(),
            Key::Char('q' | 'Q') | Key::Ctrl(b'c') => self.pager.stop(),
            _ => return self.bell(),
        }
        Pager::erase_more(&mut self.out);
        self.page();
    }

    fn paste_key(&mut self, key: Key) {
        let State::Paste { replace, text } = &mut self.state else {
            return;
        };
        match key {
            Key::Ctrl(b'd') => {
                let (replace, text) = (*replace, std::mem::take(text));
                self.out.extend_from_slice(b"\r\n");
                self.state = State::Ready;
                self.load(&text, replace, false);
                let held: Vec<String> = self.held_logs.drain(..).collect();
                for line in held {
                    self.write_line(&line);
                }
                self.prompt();
            }
            Key::Ctrl(b'c') => {
                self.out.extend_from_slice(b"\r\n");
                self.state = State::Ready;
                self.write_line("load aborted");
                let held: Vec<String> = self.held_logs.drain(..).collect();
                for line in held {
                    self.write_line(&line);
                }
                self.prompt();
            }
            Key::Enter if text.len() >= MAX_PASTE => self.bell(),
            Key::Enter => {
                text.push('\n');
                self.out.extend_from_slice(b"\r\n");
            }
            Key::Backspace => match text.chars().last() {
                Some(c) if c != '\n' => {
                    text.pop();
                    self.out.extend_from_slice(b"\x08 \x08");
                }
                _ => self.bell(),
            },
            Key::Char(_) | Key::Tab if text.len() >= MAX_PASTE => self.bell(),
            Key::Char(c) => {
                text.push(c);
                let mut buf = [0u8; 4];
                self.out
                    .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            Key::Tab => {
                text.push('\t');
                self.out.push(b' ');
            }
            _ => self.bell(),
        }
    }

    // ---- lines -----------------------------------------------------------------------

    fn enter(&mut self) {
        self.screen.finish(&mut self.out);
        let text = self.line.text();
        match std::mem::replace(&mut self.state, State::Ready) {
            State::LoginName => {
                let user = text.trim().to_string();
                self.state = if user.is_empty() {
                    State::LoginName
                } else {
                    State::LoginPassword { user }
                };
                self.prompt();
            }
            State::LoginPassword { user } => {
                let password = Secret::new(text);
                self.request(
                    Request::Login {
                        user: user.clone(),
                        password,
                    },
                    Pending::Login { user },
                );
            }
            State::NewPassword {
                purpose,
                forced,
                first,
            } => self.new_password(purpose, forced, first, Secret::new(text)),
            State::Confirm(command) => {
                if is_yes(&text) {
                    self.request(Request::Run(command), Pending::Output { pipes: Vec::new() });
                } else {
                    self.prompt();
                }
            }
            State::ConfirmExit => {
                if is_yes(&text) {
                    self.leave_configuration();
                }
                self.prompt();
            }
            State::Ready => {
                self.histories[self.mode() as usize].push(&text);
                self.run_line(&text);
            }
            other => self.state = other,
        }
    }

    fn new_password(
        &mut self,
        purpose: PasswordFor,
        forced: bool,
        first: Option<Secret>,
        typed: Secret,
    ) {
        let Some(first) = first else {
            if typed.expose().chars().count() < MIN_PASSWORD_CHARS {
                self.write_line(&format!(
                    "The password must have at least {MIN_PASSWORD_CHARS} characters."
                ));
            } else if matches!(purpose, PasswordFor::Login | PasswordFor::AddLogin { .. })
                && typed.expose() == FACTORY_PASSWORD
            {
                self.write_line("The new password must not be the factory password.");
            } else {
                self.state = State::NewPassword {
                    purpose,
                    forced,
                    first: Some(typed),
                };
                return self.prompt();
            }
            self.state = State::NewPassword {
                purpose,
                forced,
                first: None,
            };
            return self.prompt();
        };
        if first != typed {
            self.write_line("The passwords do not match.");
            self.state = State::NewPassword {
                purpose,
                forced,
                first: None,
            };
            return self.prompt();
        }
        let password = first;
        match purpose {
            PasswordFor::Login => {
                let user = self.user.clone().unwrap_or_default();
                self.request(
                    Request::SetLoginPassword {
                        user,
                        password,
                        factory: forced,
                    },
                    Pending::SetLoginPassword { forced },
                );
            }
            PasswordFor::AddUser { user, cram_md5 } => self.request(
                Request::Run(Command::PasswordAdd {
                    user,
                    cram_md5,
                    password,
                }),
                Pending::Output { pipes: Vec::new() },
            ),
            PasswordFor::SetUser { user } => self.request(
                Request::Run(Command::PasswordSet { user, password }),
                Pending::Output { pipes: Vec::new() },
            ),
            PasswordFor::AddLogin { user } => self.request(
                Request::Run(Command::LoginAdd { user, password }),
                Pending::Output { pipes: Vec::new() },
            ),
        }
    }

    fn run_line(&mut self, text: &str) {
        // A command may add or remove what the names were.
        self.names.clear();
        let words = words::split_str(text);
        if words.words.is_empty() {
            return self.prompt();
        }
        if let Err(e) = text::lex::split(text) {
            self.error(&format!("syntax error: {e}"));
            return self.prompt();
        }
        let (config, level) = match &self.editing {
            Some(e) => (&e.candidate.config, &e.level[..]),
            None => (&self.empty, &[][..]),
        };
        match tree::parse(self.mode(), config, level, &words.words) {
            Ok(parsed) if parsed.action.class_needed() > self.class => {
                let needed = parsed.action.class_needed();
                self.error(&format!(
                    "error: permission denied: this needs the {} class; {} is {}",
                    needed.name(),
                    output::sanitize(self.user.as_deref().unwrap_or("-")),
                    self.class.name()
                ));
                self.prompt();
            }
            Ok(parsed) => self.act(parsed.action, parsed.pipes),
            Err(e) => {
                self.syntax_error(&e, &words.words);
                self.prompt();
            }
        }
    }

    /// A `^` under the word at fault, the message, and the candidates if any.
    fn syntax_error(&mut self, e: &SyntaxError, words: &[words::Word]) {
        let prompt = self.prompt_width();
        let column = match words.get(e.at) {
            Some(w) => w.start,
            None => words.last().map_or(0, |w| w.end + 1),
        };
        if prompt + column < self.screen.columns() {
            let caret = format!("{}^", " ".repeat(prompt + column));
            self.write_line(&caret);
        }
        self.error(&e.message);
        if !e.candidates.is_empty() {
            self.list(&e.candidates);
        }
    }

    fn prompt_width(&self) -> usize {
        let user = self.user.as_deref().unwrap_or("-");
        editor::columns(user) + 1 + editor::columns(&self.host) + 2
    }

    fn act(&mut self, action: Action, pipes: Vec<Pipe>) {
        let paging = !pipes.contains(&Pipe::NoMore);
        match action {
            Action::Run(command) => self.request(Request::Run(command), Pending::Output { pipes }),
            Action::AskPassword(purpose) => {
                self.state = State::NewPassword {
                    purpose,
                    forced: false,
                    first: None,
                };
                self.prompt();
            }
            Action::Confirm { question, command } => {
                self.write_line(question);
                self.state = State::Confirm(command);
                self.prompt();
            }
            Action::Configure => self.request(Request::Configure, Pending::Configure),
            Action::Exit => self.exit(),
            Action::Statement(words) => {
                if let Some(editing) = self.editing.as_mut()
                    && let Err(e) = text::apply_words(&mut editing.candidate.config, &words)
                {
                    self.error(&format!("error: {e}"));
                }
                self.prompt();
            }
            Action::ShowCandidate(path) => {
                if pipes.contains(&Pipe::Compare) {
                    return self.request(Request::Running, Pending::Compare { path, pipes });
                }
                let lines = match &self.editing {
                    Some(e) => under(&text::lines(&e.candidate.config), &path),
                    None => Vec::new(),
                };
                let lines = output::filter(&lines.join("\n"), &pipes);
                self.show(lines, paging);
            }
            Action::Commit {
                check,
                confirm_minutes,
                comment,
                and_quit,
            } => {
                let Some(editing) = &self.editing else {
                    return self.prompt();
                };
                let candidate = Box::new(editing.candidate.clone());
                if check {
                    self.request(
                        Request::Check(candidate),
                        Pending::Output { pipes: Vec::new() },
                    );
                } else {
                    self.request(
                        Request::Commit {
                            candidate,
                            comment,
                            confirm_minutes,
                        },
                        Pending::Commit { and_quit },
                    );
                }
            }
            Action::Edit(path) => self.move_level(|e| {
                let left = std::mem::replace(&mut e.level, path);
                e.back.push(left);
            }),
            Action::Up(n) => self.move_level(|e| {
                e.back.clear();
                // No more steps than there are places: `up 18446744073709551615` is the top
                // at once, not a loop that holds the executor.
                for _ in 0..n.min(e.level.len()) {
                    // A list's entry is one place with its key: up from it leaves both.
                    e.level.pop();
                    while !text::is_place(&e.level) {
                        e.level.pop();
                    }
                }
            }),
            Action::Top => self.move_level(|e| {
                e.back.clear();
                e.level.clear();
            }),
            Action::Rollback(n) => self.request(Request::Rollback(n), Pending::Rollback),
            Action::Load {
                replace,
                file: Some(file),
            } => self.request(Request::ReadFile(file), Pending::LoadFile { replace }),
            Action::Load {
                replace,
                file: None,
            } => {
                self.write_line("[Type ^D at a new line to end input]");
                self.state = State::Paste {
                    replace,
                    text: String::new(),
                };
            }
        }
    }

    /// Moves the level being edited, and shows the new one.
    fn move_level(&mut self, to: impl FnOnce(&mut Editing)) {
        if let Some(editing) = self.editing.as_mut() {
            to(editing);
            let banner = editing.banner();
            self.write_line(&banner);
        }
        self.prompt();
    }

    fn exit(&mut self) {
        if let Some(editing) = &self.editing {
            if !editing.level.is_empty() {
                return self.move_level(|e| e.level = e.back.pop().unwrap_or_default());
            }
            if editing.candidate.config != editing.base {
                self.write_line("The configuration has been changed but not committed.");
                self.write_line("Exit with uncommitted changes?");
                self.state = State::ConfirmExit;
            } else {
                self.leave_configuration();
            }
            return self.prompt();
        }
        self.state = State::Closed;
        self.events.push_back(Event::Closed);
    }

    /// Someone typed, or a request was answered, at `now`: the idle wait starts again.
    fn touch(&mut self, now: Instant) {
        self.idle_deadline = self.idle_timeout.and_then(|t| now.checked_add(t));
    }

    /// The idle deadline, while it applies: someone is logged in, the session is open
    /// and no request runs.
    fn idle_deadline(&self) -> Option<Instant> {
        if self.user.is_none() || matches!(self.state, State::Busy(_) | State::Closed) {
            return None;
        }
        self.idle_deadline
    }

    /// Logs the session out for want of a keystroke.
    fn idle_out(&mut self) {
        let idle = self
            .idle_timeout
            .map(text::value::format_duration)
            .unwrap_or_default();
        self.log_out(&format!("Idle for {idle}: logged out."), Logout::Idle);
    }

    /// Ends the session, saying `line`; a candidate not committed is dropped, as it is
    /// at any logout.
    fn log_out(&mut self, line: &str, why: Logout) {
        if matches!(self.state, State::More) {
            Pager::erase_more(&mut self.out);
        } else {
            self.screen.erase(&mut self.out);
        }
        self.write_line(line);
        if self
            .editing
            .as_ref()
            .is_some_and(|e| e.candidate.config != e.base)
        {
            self.write_line("The uncommitted changes were dropped.");
        }
        self.editing = None;
        self.logged_out = Some(why);
        self.state = State::Closed;
        self.events.push_back(Event::Closed);
    }

    fn leave_configuration(&mut self) {
        self.editing = None;
        self.state = State::Ready;
        self.write_line("Exiting configuration mode");
    }

    /// Loads `text` into the candidate: pasted, or `from_file` (see
    /// [`load_file_into`](crate::proto::config::text::load_file_into)).
    fn load(&mut self, text: &str, replace: bool, from_file: bool) {
        let Some(editing) = self.editing.as_mut() else {
            return;
        };
        let load = if from_file {
            crate::proto::config::text::load_file_into
        } else {
            crate::proto::config::text::load_into
        };
        match load(&mut editing.candidate.config, text, replace) {
            Ok(()) => self.write_line("load complete"),
            Err(e) => self.error(&format!("error: {e}")),
        }
    }

    fn logged_in(&mut self, user: String) {
        self.user = Some(user);
        self.write_line(&format!("--- drawbridge {} ---", env!("CARGO_PKG_VERSION")));
        self.state = State::Ready;
        self.prompt();
    }

    fn answered(&mut self, pending: Pending, answer: Answer, now: Instant) {
        match (pending, answer) {
            (_, Answer::Closing(text)) => {
                self.error(&text);
                self.state = State::Closed;
                self.events.push_back(Event::Closed);
            }
            (Pending::Login { user }, Answer::LoggedIn { must_change, class }) => {
                self.class = class;
                if must_change {
                    self.user = Some(user);
                    self.write_line("The factory password must be changed before anything else.");
                    self.state = State::NewPassword {
                        purpose: PasswordFor::Login,
                        forced: true,
                        first: None,
                    };
                    self.prompt();
                } else {
                    self.logged_in(user);
                }
            }
            (Pending::Login { .. }, answer) => {
                self.write_line("Login incorrect");
                let delay = match answer {
                    Answer::Refused { delay } => delay,
                    _ => Duration::from_secs(1),
                };
                self.state = State::Throttled;
                self.deadline = Some(now + delay);
                self.handle_timeout(now);
            }
            (Pending::SetLoginPassword { forced }, Answer::LoggedIn { .. }) => {
                if forced {
                    let user = self.user.take().unwrap_or_default();
                    self.write_line("Password changed.");
                    self.logged_in(user);
                } else {
                    self.write_line("Password changed.");
                    self.prompt();
                }
            }
            (Pending::SetLoginPassword { forced }, answer) => {
                self.error(&format!("error: {}", answer_text(answer)));
                self.state = if forced {
                    State::NewPassword {
                        purpose: PasswordFor::Login,
                        forced,
                        first: None,
                    }
                } else {
                    State::Ready
                };
                self.prompt();
            }
            (Pending::Output { pipes }, Answer::Text(text)) => {
                let paging = !pipes.contains(&Pipe::NoMore);
                let lines = output::filter(&text, &pipes);
                self.show(lines, paging);
            }
            (Pending::Configure, Answer::Candidate(candidate)) => {
                self.host = candidate.config.system.host_name.clone();
                let editing = Editing::new(*candidate);
                self.write_line("Entering configuration mode");
                self.write_line("");
                self.write_line(&editing.banner());
                self.editing = Some(editing);
                self.prompt();
            }
            (Pending::Compare { path, pipes }, Answer::Running(running)) => {
                let Some(editing) = &self.editing else {
                    return self.prompt();
                };
                let diff = output::compare(
                    &under(&text::lines(&running), &path),
                    &under(&text::lines(&editing.candidate.config), &path),
                );
                let paging = !pipes.contains(&Pipe::NoMore);
                let lines = output::filter(&diff, &pipes);
                self.show(lines, paging);
            }
            (Pending::Commit { and_quit }, Answer::Committed { text, candidate }) => {
                self.error(&text);
                self.host = candidate.config.system.host_name.clone();
                // A new base; the administrator stays where they work.
                let mut editing = Editing::new(*candidate);
                if let Some(old) = self.editing.take() {
                    (editing.level, editing.back) = (old.level, old.back);
                }
                self.editing = Some(editing);
                if and_quit {
                    self.leave_configuration();
                }
                self.prompt();
            }
            (Pending::Rollback, Answer::Candidate(candidate)) => {
                if let Some(editing) = self.editing.as_mut() {
                    editing.candidate = *candidate;
                    self.write_line("load complete");
                }
                self.prompt();
            }
            (Pending::LoadFile { replace }, Answer::File(text)) => {
                self.load(&text, replace, true);
                self.prompt();
            }
            (Pending::Names { kind, then }, answer) => {
                // Whatever came (the names, an error, Ctrl-C), the line is still there:
                // help or complete with what is known, not asking again for this kind.
                let names = match answer {
                    Answer::Names(k, names) if k == kind => names,
                    _ => Vec::new(),
                };
                self.names.insert(kind, names);
                match then {
                    AfterNames::Help => self.help(),
                    AfterNames::Complete => self.complete(),
                }
            }
            (_, answer) => {
                self.error(&format!("error: {}", answer_text(answer)));
                self.prompt();
            }
        }
    }

    // ---- help and completion ---------------------------------------------------------

    /// The words before the cursor, and what may come there. When an argument there
    /// names something the gateway has (queue ids, users) and the gateway has not said
    /// them yet, asks for them, to do `then` again with them: `None`.
    fn candidates(
        &mut self,
        then: AfterNames,
    ) -> Option<(words::Words, Result<Vec<Completion>, SyntaxError>)> {
        let before: Vec<char> = self.line.chars()[..self.line.cursor()].to_vec();
        let words = words::split(&before);
        let (complete, _) = words.split_partial();
        let (config, level) = match &self.editing {
            Some(e) => (&e.candidate.config, &e.level[..]),
            None => (&self.empty, &[][..]),
        };
        let found = tree::candidates_named(self.mode(), config, level, &self.names, complete);
        if let Ok((_, Some(kind))) = found {
            self.request(Request::Names(kind), Pending::Names { kind, then });
            return None;
        }
        Some((words, found.map(|(all, _)| all)))
    }

    /// `?`: what may come here, with help; then the line again.
    fn help(&mut self) {
        let Some((words, found)) = self.candidates(AfterNames::Help) else {
            return;
        };
        self.screen.finish(&mut self.out);
        match found {
            Ok(all) => {
                let partial = words.split_partial().1.map(|w| w.text.to_lowercase());
                let shown: Vec<Completion> = all
                    .into_iter()
                    .filter(|c| match &partial {
                        Some(p) => c.placeholder || c.text().to_lowercase().starts_with(p.as_str()),
                        None => true,
                    })
                    .collect();
                if shown.is_empty() {
                    self.write_line("No valid completions");
                } else {
                    self.list(&shown);
                }
            }
            Err(e) => {
                let (complete, _) = words.split_partial();
                let complete = complete.to_vec();
                self.syntax_error(&e, &complete);
            }
        }
        self.reprompt();
    }

    /// The prompt again with the line as it was, the cursor where it was.
    fn reprompt(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.prompt();
        self.line = line;
        self.screen.draw(&self.line, &mut self.out);
    }

    fn list(&mut self, candidates: &[Completion]) {
        self.write_line("Possible completions:");
        let width = self.screen.columns().saturating_sub(1);
        for c in candidates {
            let row =
                output::sanitize(&format!("  {:<w$} {}", c.word, c.help, w = HELP_COLUMN - 3));
            let row = if editor::columns(&row) > width {
                let mut cut = String::new();
                let mut used = 0;
                for ch in row.chars() {
                    used += editor::width(ch);
                    if used > width.saturating_sub(ELLIPSIS.len()) {
                        break;
                    }
                    cut.push(ch);
                }
                cut + ELLIPSIS
            } else {
                row
            };
            self.write_line(row.trim_end());
        }
    }

    /// TAB: completes the word when one candidate fits, as far as all agree when
    /// several do, and lists them when that adds nothing. A candidate goes in as it is
    /// written: a value that needs quotes (one that would read as a keyword) gets them.
    fn complete(&mut self) {
        let Some((words, found)) = self.candidates(AfterNames::Complete) else {
            return;
        };
        let Ok(all) = found else {
            return self.bell();
        };
        let (_, partial) = words.split_partial();
        if partial.is_some_and(|p| p.quoted) {
            return self.bell();
        }
        let typed = partial.map_or(String::new(), |p| p.text.to_lowercase());
        let fits: Vec<&Completion> = all
            .iter()
            .filter(|c| !c.placeholder && c.word != END_OF_STATEMENT)
            .filter(|c| c.text().to_lowercase().starts_with(&typed))
            .collect();
        let replaced = partial.map_or(0, |p| self.line.cursor() - p.start);
        match fits.as_slice() {
            [] => self.bell(),
            [one] if partial.is_some() || !all.iter().any(|c| c.placeholder) => {
                let word = format!("{} ", one.word);
                if !self.line.replace_before_cursor(replaced, &word) {
                    self.bell();
                }
                self.screen.draw(&self.line, &mut self.out);
            }
            many => {
                let texts: Vec<String> = many.iter().map(|c| c.text()).collect();
                let common = common_prefix(texts.iter().map(String::as_str));
                if common.chars().count() > typed.chars().count() {
                    if !self.line.replace_before_cursor(replaced, &common) {
                        self.bell();
                    }
                    self.screen.draw(&self.line, &mut self.out);
                } else {
                    self.screen.finish(&mut self.out);
                    let shown: Vec<Completion> = all
                        .iter()
                        .filter(|c| c.placeholder || c.text().to_lowercase().starts_with(&typed))
                        .cloned()
                        .collect();
                    self.list(&shown);
                    self.reprompt();
                }
            }
        }
    }
}

fn is_yes(text: &str) -> bool {
    matches!(text.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn answer_text(answer: Answer) -> String {
    match answer {
        Answer::Error(e) | Answer::Text(e) => e,
        Answer::Cancelled => "cancelled".into(),
        other => format!("unexpected answer {other:?}"),
    }
}

/// The lines of a configuration under a path (`route .example.com`): those whose words
/// after `set` start with the path's words, quoted or not.
fn under(lines: &[String], path: &[Word]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            text::lex::split(l).is_ok_and(|words| {
                words.len() > path.len()
                    && words[1..=path.len()]
                        .iter()
                        .zip(path)
                        .all(|(w, p)| w.text == p.text)
            })
        })
        .cloned()
        .collect()
}

/// The longest prefix the words share (ignoring case, spelled as the first has it).
fn common_prefix<'a>(mut words: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = words.next() else {
        return String::new();
    };
    let mut len = first.chars().count();
    for w in words {
        len = first
            .chars()
            .zip(w.chars())
            .take(len)
            .take_while(|(a, b)| a.eq_ignore_ascii_case(b))
            .count();
    }
    first.chars().take(len).collect()
}

#[cfg(test)]
mod tests;
