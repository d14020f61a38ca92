//! The patterns of `| match` and `| except`: regular expressions as Junos takes them,
//! found anywhere in a line, without regard to case.
//!
//! The syntax is POSIX extended: `.` any character, `[abc]`, `[a-z]` and `[^…]` classes,
//! `*`, `+`, `?` and the counts `{m}`, `{m,}` and `{m,n}` after an atom, `|` between
//! alternatives, `( )` to group, `^` and `$` for the start and end of the line, and `\`
//! before any character to take it as itself (`\.`, `\[`, `\|`). A `{` that does not
//! open a count after an atom is itself, as in GNU `grep -E`. A word with none of
//! these is the plain text it always was.
//!
//! **Invariant:** matching takes time linear in the line for a given pattern, whatever
//! the pattern: it is compiled to a Thompson NFA and run in lockstep over the line (a
//! set of states per character), never by backtracking; a pattern is at most
//! [`MAX_PATTERN`] characters, and its program, counts expanded, at most
//! [`MAX_PROGRAM`] steps.

use std::fmt;

/// The longest pattern taken, in characters.
pub const MAX_PATTERN: usize = 256;
/// The largest count in `{m,n}`: POSIX's `RE_DUP_MAX`.
pub const MAX_COUNT: u32 = 255;
/// The most steps a compiled pattern may have, counts expanded: a line is matched in
/// this many steps per character at worst. Patterns without counts stay under a
/// thousand; nested counts (`((a{9}){9}){9}`) could otherwise ask for millions.
pub const MAX_PROGRAM: usize = 2048;

/// A compiled pattern; two are equal when they were written the same way.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    program: Vec<Inst>,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl From<&str> for Pattern {
    /// A pattern that matches `text` as written (every special character escaped).
    fn from(text: &str) -> Pattern {
        let mut escaped = String::with_capacity(text.len() * 2);
        for c in text.chars() {
            if SPECIAL.contains(c) {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        let program = compile(&Node::Concat(text.chars().map(literal).collect()));
        Pattern {
            source: escaped,
            program,
        }
    }
}

/// What is wrong with a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError(pub &'static str);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The characters with a meaning of their own.
const SPECIAL: &str = ".[]()*+?{|^$\\";

impl Pattern {
    pub fn parse(source: &str) -> Result<Pattern, PatternError> {
        if source.chars().count() > MAX_PATTERN {
            return Err(PatternError("the pattern is longer than 256 characters"));
        }
        let mut parser = Parser {
            chars: source.chars().collect(),
            at: 0,
        };
        let node = parser.alternation()?;
        if parser.at < parser.chars.len() {
            // Only a `)` stops an alternation before the end.
            return Err(PatternError("a ')' has no '(' before it"));
        }
        if size(&node) + 1 > MAX_PROGRAM {
            return Err(PatternError(
                "the pattern is too large once its counts are expanded",
            ));
        }
        Ok(Pattern {
            source: source.to_string(),
            program: compile(&node),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern is found in `line`, case aside.
    pub fn is_match(&self, line: &str) -> bool {
        let n = self.program.len();
        let mut current = States::new(n);
        let mut next = States::new(n);
        let chars: Vec<char> = line.chars().flat_map(char::to_lowercase).collect();
        for at in 0..=chars.len() {
            // Unanchored: a match may begin at every position.
            self.add(&mut current, 0, at, chars.len());
            if current
                .list
                .iter()
                .any(|&pc| matches!(self.program[pc], Inst::Match))
            {
                return true;
            }
            let Some(&c) = chars.get(at) else { break };
            next.clear();
            for &pc in &current.list {
                let advance = match &self.program[pc] {
                    Inst::Char(want) => *want == c,
                    Inst::Any => true,
                    Inst::Class(class) => class.contains(c),
                    _ => false,
                };
                if advance {
                    self.add(&mut next, pc + 1, at + 1, chars.len());
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        false
    }

    /// Adds state `pc` at position `at` of a line of `len` characters, following the
    /// jumps, splits and assertions that consume nothing.
    fn add(&self, states: &mut States, pc: usize, at: usize, len: usize) {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if !states.insert(pc) {
                continue;
            }
            match self.program[pc] {
                Inst::Jump(to) => stack.push(to),
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::LineStart if at == 0 => stack.push(pc + 1),
                Inst::LineEnd if at == len => stack.push(pc + 1),
                _ => {}
            }
        }
    }
}

/// A set of program states, in the order they were added.
struct States {
    list: Vec<usize>,
    seen: Vec<bool>,
}

impl States {
    fn new(n: usize) -> States {
        States {
            list: Vec::with_capacity(n),
            seen: vec![false; n],
        }
    }

    fn insert(&mut self, pc: usize) -> bool {
        if self.seen[pc] {
            return false;
        }
        self.seen[pc] = true;
        self.list.push(pc);
        true
    }

    fn clear(&mut self) {
        for &pc in &self.list {
            self.seen[pc] = false;
        }
        self.list.clear();
    }
}

/// A character class: ranges, perhaps negated.
#[derive(Clone, Debug)]
struct Class {
    ranges: Vec<(char, char)>,
    negated: bool,
}

impl Class {
    /// `c` is lowercase; a range written in capitals matches it too.
    fn contains(&self, c: char) -> bool {
        let mut upper = c.to_uppercase();
        let upper = match (upper.next(), upper.next()) {
            (Some(u), None) => u,
            _ => c,
        };
        let inside = self
            .ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&c) || (lo..=hi).contains(&upper));
        inside != self.negated
    }
}

#[derive(Clone, Debug)]
enum Inst {
    Char(char),
    Any,
    Class(Class),
    LineStart,
    LineEnd,
    Jump(usize),
    Split(usize, usize),
    Match,
}

#[derive(Debug)]
enum Node {
    Char(char),
    Any,
    Class(Class),
    LineStart,
    LineEnd,
    Concat(Vec<Node>),
    Alternation(Vec<Node>),
    /// `*` (none or more), `+` (one or more), `?` (none or one).
    Repeat(Box<Node>, char),
    /// `{m}`, `{m,}`, `{m,n}`: at least `m`, at most `n` (no bound: none).
    Count(Box<Node>, u32, Option<u32>),
}

fn literal(c: char) -> Node {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => Node::Char(l),
        // A character whose lowercase is two (İ): the lowercased line holds both.
        _ => Node::Concat(c.to_lowercase().map(Node::Char).collect()),
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn alternation(&mut self) -> Result<Node, PatternError> {
        let mut branches = vec![self.concatenation()?];
        while self.peek() == Some('|') {
            self.at += 1;
            branches.push(self.concatenation()?);
        }
        Ok(if branches.len() == 1 {
            branches.remove(0)
        } else {
            Node::Alternation(branches)
        })
    }

    fn concatenation(&mut self) -> Result<Node, PatternError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let mut atom = self.atom()?;
            loop {
                match self.peek() {
                    Some(op @ ('*' | '+' | '?')) => {
                        self.at += 1;
                        atom = Node::Repeat(Box::new(atom), op);
                    }
                    Some('{') => match self.count()? {
                        Some((min, max)) => atom = Node::Count(Box::new(atom), min, max),
                        None => break,
                    },
                    _ => break,
                }
            }
            items.push(atom);
        }
        Ok(Node::Concat(items))
    }

    fn atom(&mut self) -> Result<Node, PatternError> {
        let c = self
            .peek()
            .ok_or(PatternError("the pattern ends too soon"))?;
        self.at += 1;
        Ok(match c {
            '.' => Node::Any,
            '^' => Node::LineStart,
            '$' => Node::LineEnd,
            '*' | '+' | '?' => return Err(PatternError("a '*', '+' or '?' has nothing to repeat")),
            '(' => {
                let inner = self.alternation()?;
                if self.peek() != Some(')') {
                    return Err(PatternError("a '(' has no ')' after it"));
                }
                self.at += 1;
                inner
            }
            '[' => Node::Class(self.class()?),
            '\\' => {
                let escaped = self
                    .peek()
                    .ok_or(PatternError("the pattern ends with a lone '\\'"))?;
                self.at += 1;
                literal(escaped)
            }
            c => literal(c),
        })
    }

    /// At `{`: the count it opens, `{m}`, `{m,}` or `{m,n}`, consumed; none (nothing
    /// consumed) when the text there is not a count, so that the `{` is itself.
    fn count(&mut self) -> Result<Option<(u32, Option<u32>)>, PatternError> {
        let start = self.at;
        self.at += 1;
        let min = self.number();
        let max = if self.peek() == Some(',') {
            self.at += 1;
            self.number()
        } else {
            min
        };
        if min.is_none() || self.peek() != Some('}') {
            self.at = start;
            return Ok(None);
        }
        self.at += 1;
        let min = min.unwrap_or_default();
        if min > MAX_COUNT || max.is_some_and(|n| n > MAX_COUNT) {
            return Err(PatternError("a count in '{m,n}' is above 255"));
        }
        if max.is_some_and(|n| n < min) {
            return Err(PatternError("a '{m,n}' has m above n"));
        }
        Ok(Some((min, max)))
    }

    /// Decimal digits at the cursor, consumed; none if there are none. A number too
    /// large for u32 comes out as `u32::MAX`, above any count.
    fn number(&mut self) -> Option<u32> {
        let mut n: Option<u32> = None;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            self.at += 1;
            n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d));
        }
        n
    }

    /// After `[`: the members up to `]` (a `]` first is a member, as is a `-` first or
    /// last).
    fn class(&mut self) -> Result<Class, PatternError> {
        let unterminated = PatternError("a '[' has no ']' after it");
        let negated = self.peek() == Some('^');
        if negated {
            self.at += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.peek().ok_or_else(|| unterminated.clone())?;
            self.at += 1;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                let e = self.peek().ok_or_else(|| unterminated.clone())?;
                self.at += 1;
                e
            } else {
                c
            };
            let ranged = self.peek() == Some('-') && self.chars.get(self.at + 1) != Some(&']');
            if ranged {
                self.at += 1;
                let mut hi = self.peek().ok_or_else(|| unterminated.clone())?;
                self.at += 1;
                if hi == '\\' {
                    hi = self.peek().ok_or_else(|| unterminated.clone())?;
                    self.at += 1;
                }
                if hi < lo {
                    return Err(PatternError("a range in '[ ]' runs backwards"));
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Class { ranges, negated })
    }
}

/// The most steps `emit` writes around a part it repeats or offers as an alternative:
/// a split and a jump (`*`, a branch before the last), or a split alone (`+`, `?`).
const WRAP_STEPS: usize = 2;

/// How many steps `emit` writes for `node`; saturating, so that nested counts cannot
/// overflow it.
fn size(node: &Node) -> usize {
    match node {
        Node::Char(_) | Node::Any | Node::Class(_) | Node::LineStart | Node::LineEnd => 1,
        Node::Concat(items) => items.iter().map(size).fold(0, usize::saturating_add),
        Node::Alternation(branches) => branches
            .iter()
            .map(|b| size(b).saturating_add(WRAP_STEPS))
            .fold(0, usize::saturating_add),
        Node::Repeat(inner, _) => size(inner).saturating_add(WRAP_STEPS),
        Node::Count(inner, min, max) => {
            let copies = match max {
                Some(n) => *n as usize,
                None => *min as usize + 1,
            };
            size(inner)
                .saturating_add(WRAP_STEPS)
                .saturating_mul(copies)
        }
    }
}

fn compile(node: &Node) -> Vec<Inst> {
    let mut program = Vec::new();
    emit(node, &mut program);
    program.push(Inst::Match);
    program
}

fn emit(node: &Node, p: &mut Vec<Inst>) {
    match node {
        Node::Char(c) => p.push(Inst::Char(*c)),
        Node::Any => p.push(Inst::Any),
        Node::Class(class) => p.push(Inst::Class(class.clone())),
        Node::LineStart => p.push(Inst::LineStart),
        Node::LineEnd => p.push(Inst::LineEnd),
        Node::Concat(items) => items.iter().for_each(|n| emit(n, p)),
        Node::Alternation(branches) => {
            // split L1, next; L1: branch; jump end; next: split …; last branch; end:
            let mut jumps = Vec::new();
            for (i, branch) in branches.iter().enumerate() {
                if i + 1 < branches.len() {
                    let split = p.len();
                    p.push(Inst::Split(split + 1, 0));
                    emit(branch, p);
                    jumps.push(p.len());
                    p.push(Inst::Jump(0));
                    let next = p.len();
                    p[split] = Inst::Split(split + 1, next);
                } else {
                    emit(branch, p);
                }
            }
            let end = p.len();
            for j in jumps {
                p[j] = Inst::Jump(end);
            }
        }
        Node::Count(inner, min, max) => {
            // x{2,4} is x x x? x?; x{2,} is x x x*.
            for _ in 0..*min {
                emit(inner, p);
            }
            match max {
                None => emit_repeat(inner, '*', p),
                Some(n) => {
                    for _ in *min..*n {
                        emit_repeat(inner, '?', p);
                    }
                }
            }
        }
        Node::Repeat(inner, op) => emit_repeat(inner, *op, p),
    }
}

fn emit_repeat(inner: &Node, op: char, p: &mut Vec<Inst>) {
    match op {
        '*' => {
            // L: split body, end; body; jump L; end:
            let split = p.len();
            p.push(Inst::Split(split + 1, 0));
            emit(inner, p);
            p.push(Inst::Jump(split));
            let end = p.len();
            p[split] = Inst::Split(split + 1, end);
        }
        '+' => {
            // L: body; split L, end
            let start = p.len();
            emit(inner, p);
            let split = p.len();
            p.push(Inst::Split(start, split + 1));
        }
        _ => {
            // split body, end; body; end:
            let split = p.len();
            p.push(Inst::Split(split + 1, 0));
            emit(inner, p);
            let end = p.len();
            p[split] = Inst::Split(split + 1, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, line: &str) -> bool {
        Pattern::parse(pattern).unwrap().is_match(line)
    }

    #[test]
    fn a_plain_word_is_found_anywhere_whatever_its_case() {
        assert!(m("smtpd", "Dec 1 gw drawbridge/SMTPD[7]: connect"));
        assert!(!m("qmgr", "smtpd: connect"));
        assert!(m("", "anything"));
        assert!(m("", ""));
    }

    #[test]
    fn alternatives_classes_and_repetition() {
        let p = Pattern::parse("reject|defer").unwrap();
        assert!(p.is_match("NOQUEUE: reject: RCPT"));
        assert!(p.is_match("status=deferred"));
        assert!(!p.is_match("status=sent"));
        assert!(m("status=(sent|bounced)", "x status=bounced (y)"));
        assert!(!m("status=(sent|bounced)", "status=deferred"));
        assert!(m("relay=[a-z]+\\.example", "relay=MX.example.com"));
        assert!(m("\\[127\\.0\\.0\\.1\\]", "from localhost[127.0.0.1]"));
        assert!(!m("\\[127\\.0\\.0\\.1\\]", "from localhost[127.0.0.12]"));
        assert!(m("[^0-9]42$", "size=x42"));
        assert!(!m("[^0-9]42$", "size=142"));
        assert!(m("a.c", "abc") && !m("a.c", "ac"));
        assert!(m("colou?r", "color") && m("colou?r", "colour") && !m("colou?r", "colouur"));
        assert!(m("^dec", "Dec 1") && !m("^ec", "Dec 1"));
        assert!(m("x*$", "abc"));
        assert!(m("[]x]", "a]b") && m("[a-]", "-") && m("[\\]]", "]"));
        assert!(m("(ab)+c", "xxababc") && !m("^(ab)+c", "xxababc"));
    }

    #[test]
    fn counts_repeat_an_atom_between_their_bounds() {
        assert!(m("^a{3}$", "aaa") && !m("^a{3}$", "aa") && !m("^a{3}$", "aaaa"));
        assert!(m("^a{2,}$", "aa") && m("^a{2,}$", "aaaaaaa") && !m("^a{2,}$", "a"));
        let p = Pattern::parse("^(ab){1,2}c$").unwrap();
        assert!(p.is_match("abc") && p.is_match("ababc"));
        assert!(!p.is_match("c") && !p.is_match("abababc"));
        assert!(m("^x{0}y$", "y") && m("^x{0,0}y$", "y") && !m("^x{0}y$", "xy"));
        assert!(m("[0-9]{1,3}(\\.[0-9]{1,3}){3}", "client=[192.0.2.10]"));
        assert!(!m("^[0-9]{1,3}(\\.[0-9]{1,3}){3}$", "1.2.3"));
        // A `{` that opens no count is itself, as in grep -E.
        assert!(m("a{x", "a{x") && m("{2}", "{2}") && m("a{,2}", "a{,2}") && m("a{1", "a{1"));
        assert!(m("a{2}{2}", "aaaa") && !m("^a{2}{2}$", "aaa"));
    }

    #[test]
    fn counts_are_bounded() {
        let err = |p: &str| Pattern::parse(p).unwrap_err().0;
        assert_eq!(err("a{256}"), "a count in '{m,n}' is above 255");
        assert_eq!(err("a{1,99999999999}"), "a count in '{m,n}' is above 255");
        assert_eq!(err("a{3,2}"), "a '{m,n}' has m above n");
        assert!(Pattern::parse("a{255}").is_ok());
        assert_eq!(
            err("((a{9}){9}){9}"),
            "the pattern is too large once its counts are expanded"
        );
        assert_eq!(
            err("(((((a{255}){255}){255}){255}){255}){255}"),
            "the pattern is too large once its counts are expanded"
        );
        // Linear in the line at the largest program taken.
        let p = Pattern::parse("(a{1,150}){1,4}b").unwrap();
        assert!(p.program.len() <= MAX_PROGRAM);
        assert!(!p.is_match(&"a".repeat(2_000)));
    }

    #[test]
    fn a_text_taken_as_written_escapes_every_special_character() {
        let p = Pattern::from("[1.2.3.4]|x{2}");
        assert_eq!(p.as_str(), "\\[1\\.2\\.3\\.4\\]\\|x\\{2}");
        assert!(p.is_match("from a[1.2.3.4]|x{2}"));
        assert!(!p.is_match("from a[1.2.3.4]|xx"));
        assert_eq!(Pattern::parse(p.as_str()).unwrap(), p);
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        let err = |p: &str| Pattern::parse(p).unwrap_err().0;
        assert_eq!(err("a(b"), "a '(' has no ')' after it");
        assert_eq!(err("ab)"), "a ')' has no '(' before it");
        assert_eq!(err("[ab"), "a '[' has no ']' after it");
        assert_eq!(err("*a"), "a '*', '+' or '?' has nothing to repeat");
        assert_eq!(err("a|+"), "a '*', '+' or '?' has nothing to repeat");
        assert_eq!(err("ab\\"), "the pattern ends with a lone '\\'");
        assert_eq!(err("[z-a]"), "a range in '[ ]' runs backwards");
        assert_eq!(
            err(&"a".repeat(MAX_PATTERN + 1)),
            "the pattern is longer than 256 characters"
        );
        assert!(Pattern::parse(&"a".repeat(MAX_PATTERN)).is_ok());
    }

    #[test]
    fn patterns_that_make_backtrackers_explode_take_linear_time() {
        // (a*)*b, (a|a)*b and a?^n a^n against a long run of a's: exponential for a
        // backtracking matcher, a few thousand steps here.
        let line = "a".repeat(10_000);
        assert!(!m("(a*)*b", &line));
        assert!(!m("(a|a)*b", &line));
        let n = 30;
        let nested = format!("{}{}", "a?".repeat(n), "a".repeat(n));
        assert!(m(&nested, &"a".repeat(n)));
        assert!(!m(&format!("^{nested}$"), &"a".repeat(n - 1)));
    }

    #[test]
    fn case_is_ignored_in_classes_and_odd_lowercases() {
        assert!(m("[A-Z]+d", "smtpd"));
        assert!(m("[a-z]+D", "SMTPD"));
        assert!(m("İ", "İstanbul") && m("i̇stanbul", "İSTANBUL"));
    }
}
