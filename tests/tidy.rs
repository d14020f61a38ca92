//! The tidy test: the invariants the README's code map states, checked on the source
//! text, so that a change that breaks one fails here rather than in review.
//!
//! * The protocol cores name no sockets, files, clocks, executors, threads, system
//!   calls, async or TLS types:
//!   they take bytes and `Instant`s and return bytes, events and deadlines. Their tests
//!   may (a `#[cfg(test)]` item is left out, as are comments and string literals).
//! * In the cores, every bound is a named constant whose doc comment says where its
//!   number comes from (`the_cores_name_their_bounds` says what counts as a bound).
//! * In the decoders of untrusted input, every `.unwrap()`, `.expect(…)` and index or
//!   slice of a value either goes or says in an `// INVARIANT:` comment why it cannot
//!   panic.
//! * Every source file opens with a `//!` header saying what it is.
//! * The layers point down: the cores (`src/proto/`) import nothing of the async layer
//!   (`src/io/`) or the wiring, the async layer nothing of the wiring, and no modules of
//!   one layer import one another in a loop.

use std::fs;
use std::path::{Path, PathBuf};

/// The cores: folders whose every file is one, and single files. Every core lives in
/// `src/proto/` (see `the_layers_point_down`).
const CORES: &[&str] = &["src/proto"];

/// What a core must not name, and why not.
const FORBIDDEN: &[(&str, &str)] = &[
    ("std::fs", "a core opens no files"),
    ("TcpStream", "a core opens no sockets"),
    ("TcpListener", "a core opens no sockets"),
    ("UdpSocket", "a core opens no sockets"),
    ("UnixStream", "a core opens no sockets"),
    (
        "Instant::now",
        "a core reads no clock: the time comes as an argument",
    ),
    ("SystemTime", "a core reads no wall clock"),
    ("rustls", "only src/io/tls names rustls"),
    ("smol", "a core knows no executor"),
    ("async_io", "a core knows no executor"),
    ("async fn", "a core is not async: the layer drives it"),
    (".await", "a core is not async: the layer drives it"),
    ("thread::", "a core starts no threads"),
];

/// The files that decode untrusted input: what a peer, a next hop, a DNS server, a load
/// balancer, an operator's paste or a disk after a power cut hands the gateway.
const DECODERS: &[&str] = &[
    // SMTP: command lines, DATA and BDAT content, addresses, header fields, replies
    // and EHLO keywords from next hops.
    "src/proto/smtp/command.rs",
    "src/proto/smtp/data.rs",
    "src/proto/smtp/address.rs",
    "src/proto/smtp/header.rs",
    "src/proto/smtp/client_reply.rs",
    "src/proto/smtp/client.rs",
    "src/proto/smtp/client",
    // DNS replies and their TCP framing.
    "src/proto/dns/message.rs",
    "src/proto/dns/name.rs",
    "src/proto/dns/exchange.rs",
    // SASL messages from clients and from next hops, and the stored user database.
    "src/proto/sasl/mod.rs",
    "src/proto/sasl/base64.rs",
    "src/proto/sasl/plain.rs",
    "src/proto/sasl/login.rs",
    "src/proto/sasl/cram_md5.rs",
    "src/proto/sasl/scram.rs",
    "src/proto/sasl/external.rs",
    "src/proto/sasl/client.rs",
    "src/proto/sasl/users.rs",
    // A load balancer's PROXY header.
    "src/proto/proxy.rs",
    // PEM and DER: certificates and keys pasted at the console or read from a token.
    "src/io/tls/pem.rs",
    "src/io/tls/cert.rs",
    "src/io/token/der.rs",
    "src/io/token/pkcs8.rs",
    "src/io/token/soft/format.rs",
    // The stored configuration.
    "src/proto/config/wire.rs",
    "src/proto/config/slot.rs",
    // The spool's envelopes and journal, as a power cut left them.
    "src/proto/queue/envelope.rs",
    "src/proto/queue/id.rs",
    "src/io/queue/journal.rs",
    // Ident (RFC 1413) replies from a client's host, and keys typed at the console.
    "src/proto/filter/ident.rs",
    "src/proto/console/keys.rs",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files under `path` (or `path` itself), tests files (`tests.rs`, `fuzz.rs`
/// and a module's `tests/` folder) left out.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "tests") {
                out.extend(rust_files(&p));
            }
        } else if p.extension().is_some_and(|e| e == "rs")
            && p.file_name()
                .is_some_and(|n| n != "tests.rs" && n != "fuzz.rs")
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The code of a Rust file without comments, without the contents of string and
/// character literals, and without items marked `#[cfg(test)]`: what the compiler
/// builds into the product, as text.
fn product_code(source: &str) -> String {
    let code = strip_comments_and_literals(source);
    let mut out = String::with_capacity(code.len());
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let next = skip_item(after);
        // The item's lines stay, empty, so that line numbers still match the source.
        out.extend(after[..after.len() - next.len()].matches('\n'));
        rest = next;
    }
    out.push_str(rest);
    out
}

/// After an attribute: the rest once the item it marks is skipped (up to its `;` or
/// its balanced braces).
fn skip_item(code: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in code.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &code[i + 1..];
                }
            }
            ';' if depth == 0 => return &code[i + 1..],
            _ => {}
        }
    }
    ""
}

/// Comments removed; string and character literals emptied (so braces and words in
/// them count for nothing). Every line break stays, so a line of the result is the
/// same line of the source.
fn strip_comments_and_literals(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if b[i] == b'\n' {
                            out.push(b'\n');
                        }
                        i += 1;
                    }
                }
            }
            b'r' if (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // A raw string: r"…", r#"…"#, and so on.
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                i += 2 + hashes;
                let start = i;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                let breaks = b[start..i].iter().filter(|&&c| c == b'\n').count();
                i += close.len();
                out.extend_from_slice(b"\"\"");
                out.extend(std::iter::repeat_n(b'\n', breaks));
            }
            b'"' => {
                i += 1;
                let start = i;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                let breaks = b[start..i.min(b.len())]
                    .iter()
                    .filter(|&&c| c == b'\n')
                    .count();
                i += 1;
                out.extend_from_slice(b"\"\"");
                out.extend(std::iter::repeat_n(b'\n', breaks));
            }
            b'\'' => {
                // A character literal ('x', '\n', '\u{7f}'), or a lifetime ('a).
                let end = if b.get(i + 1) == Some(&b'\\') {
                    // The escaped character itself may be a quote ('\'').
                    b.get(i + 3..)
                        .and_then(|rest| rest.iter().position(|&c| c == b'\''))
                        .map(|p| i + 3 + p)
                } else {
                    // One character (of up to four octets), then the closing quote; else
                    // a lifetime, as in `Reader<'a>(&'a [u8])`.
                    let len = source
                        .get(i + 1..)
                        .and_then(|rest| rest.chars().next())
                        .map_or(1, char::len_utf8);
                    Some(i + 1 + len).filter(|&j| b.get(j) == Some(&b'\''))
                };
                match end {
                    Some(j) if !source[i + 1..j].contains(char::is_whitespace) || j == i + 2 => {
                        out.extend_from_slice(b"' '");
                        i = j + 1;
                    }
                    _ => {
                        out.push(b'\'');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A call into libc (`libc::name(`); its constants (`libc::SIGTERM`) are plain data.
fn libc_call(code: &str) -> Option<String> {
    code.match_indices("libc::").find_map(|(at, _)| {
        let rest = &code[at + "libc::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let called = rest[name.len()..].trim_start().starts_with('(');
        (called && name.starts_with(|c: char| c.is_ascii_lowercase()))
            .then(|| format!("libc::{name}"))
    })
}

#[test]
fn the_cores_name_no_io_clock_async_or_tls() {
    let mut problems = Vec::new();
    for core in CORES {
        let files = rust_files(&root().join(core));
        assert!(!files.is_empty(), "{core}: no such core");
        for file in files {
            let code = product_code(&fs::read_to_string(&file).unwrap());
            let name = file.strip_prefix(root()).unwrap().display().to_string();
            for (word, what) in FORBIDDEN {
                if code.contains(word) {
                    problems.push(format!("{name}: names `{word}`: {what}"));
                }
            }
            if let Some(call) = libc_call(&code) {
                problems.push(format!(
                    "{name}: calls `{call}`: a core makes no system calls"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_source_file_says_what_it_is() {
    let mut missing = Vec::new();
    for dir in ["src", "xtask/src", "image/src"] {
        for file in rust_files(&root().join(dir)) {
            let text = fs::read_to_string(&file).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(file.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "no //! header: {missing:?}");
}

/// How far into its header a folder's root module states its invariant.
const INVARIANT_HEADER_LINES: usize = 8;

/// The root module of every folder of product code under `src/` (`src/lib.rs` for `src`
/// itself, `DIR/mod.rs`, or `DIR.rs` beside the folder); test and data folders left out.
fn folder_roots(dir: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let mut children = Vec::new();
    let mut has_rust = false;
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "tests") {
                children.push(p);
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            has_rust = true;
        }
    }
    if has_rust {
        let own = if dir == root().join("src") {
            dir.join("lib.rs")
        } else if dir.join("mod.rs").is_file() {
            dir.join("mod.rs")
        } else {
            dir.with_extension("rs")
        };
        roots.push(own);
    }
    children.sort();
    for child in children {
        roots.extend(folder_roots(&child));
    }
    roots
}

#[test]
fn every_folder_states_its_invariant() {
    let roots = folder_roots(&root().join("src"));
    assert!(roots.len() > 20, "{roots:?}");
    let mut missing = Vec::new();
    for file in roots {
        let text = fs::read_to_string(&file).unwrap_or_default();
        let head: Vec<&str> = text
            .lines()
            .take(INVARIANT_HEADER_LINES)
            .take_while(|l| l.starts_with("//!"))
            .collect();
        if !head.iter().any(|l| l.contains("**Invariant:**")) {
            missing.push(file.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "no **Invariant:** in the first {INVARIANT_HEADER_LINES} lines of: {missing:?}"
    );
}

#[test]
fn the_stripper_leaves_out_comments_literals_and_test_items() {
    let source = r##"
//! Header naming std::fs.
fn a() -> char { '{' }
/* smol */ fn b() -> &'static str { "Instant::now }" }
fn c() -> &'static str { r#"rustls"# }
#[cfg(test)]
mod tests {
    fn t() { let _ = std::fs::read("x"); if true { } }
}
#[cfg(test)]
use std::net::TcpStream;
fn d<'a>(x: &'a str) -> &'a str { x }
struct R<'a>(&'a [u8]);
fn e() -> [char; 2] { ['é', '\''] }
"##;
    let code = product_code(source);
    assert_eq!(libc_call("let s = libc::SIGTERM;"), None);
    assert_eq!(
        libc_call("unsafe { libc::kill(1, s) }").as_deref(),
        Some("libc::kill")
    );
    for word in ["std::fs", "smol", "Instant::now", "rustls", "TcpStream"] {
        assert!(!code.contains(word), "{word} in {code}");
    }
    for kept in [
        "fn a()",
        "fn b()",
        "fn c()",
        "fn d<'a>(x: &'a str)",
        "struct R<'a>(&'a [u8]);",
        "fn e() -> [char; 2] { [' ', ' '] }",
    ] {
        assert!(code.contains(kept), "{kept} lost from {code}");
    }
}

/// One token of product code: its text and the line (from 1) it is on.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    line: usize,
}

impl Token<'_> {
    fn is_word(&self) -> bool {
        self.text
            .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
    }

    fn is_number(&self) -> bool {
        self.text.starts_with(|c: char| c.is_ascii_digit())
    }
}

/// Rust's operators of more than one character, longest first.
const OPERATORS: &[&str] = &[
    "..=", "...", "<<=", ">>=", "::", "->", "=>", "==", "!=", "<=", ">=", "&&", "||", "..", "<<",
    ">>", "+=", "-=", "*=", "/=", "%=", "^=", "&=", "|=",
];

/// Product code (from `product_code`) cut into words, numbers, lifetimes, emptied
/// literals, operators and brackets.
fn tokens(code: &str) -> Vec<Token<'_>> {
    let b = code.as_bytes();
    let word = |j: usize| {
        b.get(j)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    };
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let start = i;
        if b[i] == b'\n' {
            line += 1;
            i += 1;
            continue;
        } else if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        } else if b[i].is_ascii_digit() {
            // Digits, a suffix, and a fraction (but not a range: `0..4`).
            while word(i)
                || (b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit))
            {
                i += 1;
            }
        } else if word(i) {
            while word(i) {
                i += 1;
            }
            // A byte or C string, or a byte character: b"", c"", b' '.
            if matches!(&code[start..i], "b" | "c") && b[i..].starts_with(b"\"\"") {
                i += 2;
            } else if &code[start..i] == "b" && b[i..].starts_with(b"' '") {
                i += 3;
            }
        } else if b[i..].starts_with(b"' '") || b[i..].starts_with(b"\"\"") {
            // An emptied character or string literal.
            i += if b[i] == b'"' { 2 } else { 3 };
        } else if b[i] == b'\'' && word(i + 1) {
            // A lifetime.
            i += 1;
            while word(i) {
                i += 1;
            }
        } else if let Some(op) = OPERATORS
            .iter()
            .find(|op| b[i..].starts_with(op.as_bytes()))
        {
            i += op.len();
        } else {
            i += code[i..].chars().next().map_or(1, char::len_utf8);
        }
        out.push(Token {
            text: &code[start..i],
            line,
        });
    }
    out
}

/// The value of a decimal integer literal (`512`, `1_000usize`); `None` for floats and
/// for literals written in hexadecimal, octal or binary.
fn decimal(text: &str) -> Option<u128> {
    let text = text.replace('_', "");
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let suffix = &text[end..];
    let integer = suffix.is_empty() || suffix.starts_with(['u', 'i']);
    let radix = text.starts_with("0x") || text.starts_with("0o") || text.starts_with("0b");
    (integer && !radix)
        .then(|| text[..end].parse().ok())
        .flatten()
}

/// Keywords: a `[` after one opens an array, a slice type or a slice pattern.
const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "static", "struct", "super", "trait", "type", "unsafe", "use", "where", "while", "Self",
];

/// Whether the `[` at `at` indexes or slices a value: it follows a name, a call, an
/// index, a `?` or a literal, not a keyword, an operator, `#` (an attribute), `!` (a
/// macro) or `;` (an array type's length).
fn indexes(t: &[Token], at: usize) -> bool {
    at.checked_sub(1).is_some_and(|p| {
        (t[p].is_word() && !KEYWORDS.contains(&t[p].text))
            || matches!(t[p].text, ")" | "]" | "?" | "\"\"")
    })
}

/// The position of the bracket that closes the group opened at `at`.
fn closer(t: &[Token], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, tok) in t.iter().enumerate().skip(at) {
        match tok.text {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// The position of the bracket that opens the group `at` is in.
fn opener(t: &[Token], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    for j in (0..at).rev() {
        match t[j].text {
            ")" | "]" | "}" => depth += 1,
            "(" | "[" | "{" if depth == 0 => return Some(j),
            "(" | "[" | "{" => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Whether a word names a type (`Vec`, `T`), so that a `<` after it opens generic
/// arguments; constants (`MAX_LEN`) are not types.
fn type_name(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_uppercase())
        && (text.len() == 1 || text.contains(|c: char| c.is_ascii_lowercase()))
}

/// For each token, whether it is inside a `const` or `static` item: what the compiler
/// evaluates, so that an index out of bounds there fails the build, and where a
/// constant's number is given its name.
fn const_items(t: &[Token]) -> Vec<bool> {
    let mut out = vec![false; t.len()];
    for i in 0..t.len() {
        let item = matches!(t[i].text, "const" | "static")
            && t.get(i + 1).is_some_and(Token::is_word)
            && t.get(i + 2).is_some_and(|t| t.text == ":");
        if !item || out[i] {
            continue;
        }
        let mut depth = 0usize;
        for (j, tok) in t.iter().enumerate().skip(i) {
            out[j] = true;
            match tok.text {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" => depth = depth.saturating_sub(1),
                ";" if depth == 0 => break,
                _ => {}
            }
        }
    }
    out
}

/// For each token, whether it is inside generic arguments (`String<64>`, `Vec::<u8>`,
/// `fn f<const N: usize>`): numbers there are sizes in types.
fn generic_args(t: &[Token]) -> Vec<bool> {
    let mut out = vec![false; t.len()];
    for i in 0..t.len() {
        let before = |k: usize| i.checked_sub(k).map_or("", |j| t[j].text);
        let generic = t[i].text == "<"
            && (type_name(before(1))
                || matches!(before(1), "::" | "impl")
                || matches!(before(2), "fn" | "struct" | "enum" | "type" | "trait"));
        if !generic {
            continue;
        }
        let mut depth = 0i32;
        for (j, tok) in t.iter().enumerate().skip(i) {
            match tok.text {
                "<" => depth += 1,
                ">" => depth -= 1,
                ">>" => depth -= 2,
                ";" | "{" | "}" => break,
                _ => {}
            }
            out[j] = true;
            if depth <= 0 {
                break;
            }
        }
    }
    out
}

/// Calls whose argument is a bound: a capacity, a length, a count or a limit.
/// (`saturating_` and `checked_` additions and subtractions count too; their
/// multiplications, divisions and shifts convert units, like `* 60`.)
const BOUND_CALLS: &[&str] = &[
    "with_capacity",
    "reserve",
    "reserve_exact",
    "resize",
    "truncate",
    "take",
    "min",
    "max",
    "clamp",
    "repeat",
    "saturating_add",
    "saturating_sub",
    "checked_add",
    "checked_sub",
];

/// Operators that scale, shift or mask: a number beside one is a unit, a radix or a
/// bit width (`* 60`, `% 10`, `>> 8`, `& 0xFF`), not a bound.
const SCALING: &[&str] = &["*", "/", "%", "<<", ">>", "&", "|", "^"];

/// The sum the number at `at` is a term of (`at` alone, or `len + 2`, `4 - pad`): the
/// positions of the tokens just before and just after it, or `None` when the number is
/// scaled, shifted or masked.
fn sum_around(t: &[Token], at: usize) -> Option<(usize, usize)> {
    let term = |tok: &Token| {
        tok.is_word() || tok.is_number() || matches!(tok.text, "." | "::" | "+" | "-" | "?")
    };
    let mut left = at;
    while let Some(j) = left.checked_sub(1) {
        if SCALING.contains(&t[j].text) {
            return None;
        }
        if matches!(t[j].text, ")" | "]") {
            left = opener(t, j)?;
        } else if term(&t[j]) && !KEYWORDS.contains(&t[j].text) {
            left = j;
        } else {
            break;
        }
    }
    let mut right = at;
    while let Some(tok) = t.get(right + 1) {
        if SCALING.contains(&tok.text) {
            return None;
        }
        if matches!(tok.text, "(" | "[") {
            right = closer(t, right + 1)?;
        } else if term(tok) && !KEYWORDS.contains(&tok.text) {
            right += 1;
        } else {
            break;
        }
    }
    Some((left.checked_sub(1)?, right + 1))
}

/// The decimal numbers of 2 or more that product code uses as bounds: each with its
/// line and what makes it a bound. See `the_cores_name_their_bounds`.
fn bare_bounds(code: &str) -> Vec<(usize, String)> {
    let t = tokens(code);
    let skip: Vec<bool> = const_items(&t)
        .into_iter()
        .zip(generic_args(&t))
        .map(|(item, generic)| item || generic)
        .collect();
    let comparison = |j: usize| !skip[j] && matches!(t[j].text, "<" | "<=" | ">" | ">=");
    let mut out = Vec::new();
    for (i, tok) in t.iter().enumerate() {
        if skip[i] || !tok.is_number() || decimal(tok.text).is_none_or(|v| v < 2) {
            continue;
        }
        let Some((before, after)) = sum_around(&t, i) else {
            continue;
        };
        let (prev, next) = (t[before].text, t.get(after).map_or("", |t| t.text));
        let what = if comparison(before) || t.get(after).is_some() && comparison(after) {
            Some("compared with".to_string())
        } else if matches!(prev, "(" | ",") && matches!(next, ")" | ",") {
            opener(&t, i)
                .filter(|&o| t[o].text == "(" && o > 0 && BOUND_CALLS.contains(&t[o - 1].text))
                .map(|o| format!("passed to `{}`", t[o - 1].text))
        } else if matches!(prev, "[" | ".." | "..=")
            && matches!(next, "]" | ".." | "..=")
            && (prev, next) != ("[", "]")
        {
            opener(&t, i)
                .filter(|&o| t[o].text == "[" && indexes(&t, o))
                .map(|_| "a slice's bound".to_string())
        } else {
            None
        };
        if let Some(what) = what {
            out.push((tok.line, format!("`{}` is {what}", tok.text)));
        }
    }
    out
}

/// Where product code can panic on what it reads: `.unwrap()`, `.expect(…)`, and
/// indexing or slicing a value (`[..]`, the whole, cannot panic), outside `const` and
/// `static` items (evaluated while building). One entry a line.
fn panic_sites(code: &str) -> Vec<(usize, String)> {
    let t = tokens(code);
    let compiled = const_items(&t);
    let mut out: Vec<(usize, String)> = Vec::new();
    for i in 0..t.len() {
        if compiled[i] {
            continue;
        }
        let next = |k: usize| t.get(i + k).map_or("", |t| t.text);
        let what = if t[i].text == "." && next(1) == "unwrap" && next(2) == "(" && next(3) == ")" {
            "`.unwrap()`"
        } else if t[i].text == "." && next(1) == "expect" && next(2) == "(" {
            "`.expect(…)`"
        } else if t[i].text == "[" && indexes(&t, i) && !(next(1) == ".." && next(2) == "]") {
            "`[…]`"
        } else {
            continue;
        };
        match out.last_mut() {
            Some((line, whats)) if *line == t[i].line => {
                if !whats.contains(what) {
                    whats.push_str(", ");
                    whats.push_str(what);
                }
            }
            _ => out.push((t[i].line, what.to_string())),
        }
    }
    out
}

/// How far above a possible panic its `// INVARIANT:` comment may start.
const INVARIANT_REACH: usize = 3;

/// Whether source line `line` (from 1), or one of the `INVARIANT_REACH` lines above
/// it, has an `// INVARIANT:` comment.
fn explained(source: &str, line: usize) -> bool {
    source
        .lines()
        .enumerate()
        .skip(line.saturating_sub(INVARIANT_REACH + 1))
        .take_while(|(i, _)| *i < line)
        .any(|(_, text)| text.contains("// INVARIANT:"))
}

/// The source files of `paths` (folders and files, relative to the crate), each with
/// its name and its text.
fn sources(paths: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in paths {
        let files = rust_files(&root().join(path));
        assert!(!files.is_empty(), "{path}: no such file or folder");
        for file in files {
            let name = file.strip_prefix(root()).unwrap().display().to_string();
            out.push((name, fs::read_to_string(&file).unwrap()));
        }
    }
    out
}

/// Every bound in a core is a named constant, whose doc comment says where the number
/// comes from (an RFC section, a Postfix default, a measurement) and so what changing
/// it means; a bare `512` says neither (STYLE 10).
///
/// A decimal integer literal of 2 or more in a core's product code is *used as a
/// bound* when it is, alone or as a term added or subtracted (`n + 2`, `4 - pad`):
///
/// * an operand of `<`, `<=`, `>` or `>=`;
/// * an argument of `with_capacity`, `reserve`, `reserve_exact`, `resize`,
///   `truncate`, `take`, `min`, `max`, `clamp`, `repeat`, or a `saturating_` or
///   `checked_` addition or subtraction;
/// * an end of a range that slices a value (`&b[..4]`, `&b[2..]`).
///
/// Left alone, as not bounds: numbers multiplied, divided, shifted or masked (units,
/// radixes and bit widths: `* 60`, `% 10`, `>> 8`, `& 0xFF`, and so `saturating_mul`);
/// numbers written in hexadecimal, octal or binary (bit patterns and code points:
/// `b >= 0x80` means "not ASCII"); 0 and 1 (emptiness, the first, one more);
/// single indexes (`b[4]`: a position, not a bound); match arms, equality and ranges
/// outside an index (SMTP's 250 is a protocol value, `(400..500).contains(&code)` a
/// class of them, `33..=126` a class of characters); `const` and `static` items, which
/// are where the names are made; array lengths and generic arguments in types
/// (`[u8; 4]`, `heapless::String<64>`); and tests.
///
/// Seen to fail: `Vec::with_capacity(4096)` put into `src/proto/smtp/reply.rs` failed this
/// test naming that line.
#[test]
fn the_cores_name_their_bounds() {
    let mut problems = Vec::new();
    for (name, source) in sources(CORES) {
        for (line, what) in bare_bounds(&product_code(&source)) {
            problems.push(format!(
                "{name}:{line}: {what}: make it a named `const` whose doc comment says \
                 where the number comes from (RFC section, Postfix default, measurement)"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// In a decoder, every `.unwrap()`, `.expect(…)` and index or slice of a value is a
/// panic that input might reach, and a panic aborts the gateway (STYLE 11, 12). So
/// each either goes (`get`, `split_at_checked`, `?`, iterators) or carries an
/// `// INVARIANT:` comment, on its line or on one of the three above, saying why it
/// cannot panic. Attributes, array and slice types, array expressions, slice patterns
/// and the whole-slice `[..]` are not indexes; tests are left out.
///
/// Seen to fail: `let first = line[0];` put into `src/proto/smtp/command.rs` failed this test
/// naming that line.
#[test]
fn decoders_explain_every_panic() {
    let mut problems = Vec::new();
    for (name, source) in sources(DECODERS) {
        for (line, what) in panic_sites(&product_code(&source)) {
            if !explained(&source, line) {
                problems.push(format!(
                    "{name}:{line}: {what} in a decoder: rewrite it so that it cannot panic \
                     (`get`, `split_at_checked`, `?`, iterators), or say why it cannot in an \
                     `// INVARIANT:` comment on that line or the {INVARIANT_REACH} above"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_bounds_rule_fires_on_bare_bounds_only() {
    let source = r##"
const MAX_LINE: usize = 512;
static TABLE: [u8; 16] = [0; 16];
fn f(line: &[u8], out: &mut Vec<u8>, n: usize) -> heapless::String<64> {
    if line.len() > 512 { return; }
    let mut v = Vec::with_capacity(1024);
    let head = &line[..4];
    let tail = &line[n + 2..];
    let room = n.min(2 - out.len());
    let t = n.saturating_sub(3);
    let pad = &line[..4 - n];
    if 998 <= n {}
    out.truncate(MAX_LINE);
    let code = match n { 250 => 1, 421 => 2, _ => 3 };
    let minutes = n * 60;
    let high = n >> 8;
    let low = n & 0xFF;
    let digit = n % 10;
    let micros = n.saturating_mul(1_000_000);
    let ascii = line[0] < 0x80;
    let byte = line[4];
    let empty = n > 1;
    let array: [u8; 32] = [0; 32];
    if n == 354 {}
    let generic = Vec::<u8>::with_capacity(MAX_LINE);
    let more = n < MAX_LINE - 1;
    let cases = [2, 3];
    let twice = line.len() < 2 * n;
    let permanent = (500..600).contains(&n);
    let name = "over 512";
}
#[cfg(test)]
mod tests {
    fn t() { assert!(super::f(&[0; 600]).len() < 600); }
}
"##;
    let found = bare_bounds(&product_code(source));
    let found: Vec<(usize, &str)> = found.iter().map(|(l, w)| (*l, w.as_str())).collect();
    assert_eq!(
        found,
        [
            (5, "`512` is compared with"),
            (6, "`1024` is passed to `with_capacity`"),
            (7, "`4` is a slice's bound"),
            (8, "`2` is a slice's bound"),
            (9, "`2` is passed to `min`"),
            (10, "`3` is passed to `saturating_sub`"),
            (11, "`4` is a slice's bound"),
            (12, "`998` is compared with"),
        ]
    );
}

#[test]
fn the_panic_rule_fires_on_unexplained_panics_only() {
    let source = r##"
#[derive(Debug)]
struct Header { magic: [u8; 4] }
fn decode(b: &[u8], v: Vec<u8>) -> Option<u8> {
    let n = b.first().copied().unwrap();
    let m = parse(b).expect("parsed");
    let x = b[2];
    let s = &b[1..n];
    let t = v[..][0];
    // INVARIANT: `b` is at least 4 octets long here.
    let ok = b[3];
    let whole = &b[..];
    let made = [0u8; 4];
    let [first, rest @ ..] = b else { return None };
    let list = vec![1, 2];
    let fine = b.get(9).copied().unwrap_or(0);
    let typed: &[u8] = &made;
    let msg = "b[0].unwrap()";
    f(b)[0]
}
static TABLE: [u8; 2] = { let t = [1, 2]; [t[1], t[0]] };
#[cfg(test)]
mod tests {
    fn t() { let x = [1u8][0]; Some(1).unwrap(); }
}
"##;
    let unexplained: Vec<(usize, String)> = panic_sites(&product_code(source))
        .into_iter()
        .filter(|(line, _)| !explained(source, *line))
        .collect();
    let unexplained: Vec<(usize, &str)> =
        unexplained.iter().map(|(l, w)| (*l, w.as_str())).collect();
    assert_eq!(
        unexplained,
        [
            (5, "`.unwrap()`"),
            (6, "`.expect(…)`"),
            (7, "`[…]`"),
            (8, "`[…]`"),
            (9, "`[…]`"),
            (19, "`[…]`"),
        ]
    );
}

/// A module's path in the crate from its file (`src/proto/queue/core.rs` →
/// `proto::queue::core`; a `mod.rs` is its folder's module, `src/lib.rs` the root).
fn module_path(file: &str) -> Vec<String> {
    let rel = file.trim_start_matches("src/").trim_end_matches(".rs");
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The paths from `t[at]` on (`a::b::{c, d::e}`), each appended to `prefix`; returns
/// them and where the path ends.
fn path_from(t: &[Token], mut at: usize, prefix: &[String]) -> (Vec<Vec<String>>, usize) {
    let mut path = prefix.to_vec();
    while let Some(tok) = t.get(at) {
        match tok.text {
            "{" => {
                let mut out = Vec::new();
                at += 1;
                while let Some(tok) = t.get(at) {
                    match tok.text {
                        "}" => break,
                        "," => at += 1,
                        _ => {
                            let (paths, next) = path_from(t, at, &path);
                            out.extend(paths);
                            at = next;
                            // What follows an item (`as name`, a glob's `*`).
                            while t.get(at).is_some_and(|t| t.text != "," && t.text != "}") {
                                at += 1;
                            }
                        }
                    }
                }
                return (out, at + 1);
            }
            "self" => at += 1,
            "super" => {
                path.pop();
                at += 1;
            }
            word if tok.is_word() => {
                path.push(word.to_string());
                at += 1;
            }
            _ => break,
        }
        if t.get(at).is_some_and(|t| t.text == "::") {
            at += 1;
        } else {
            break;
        }
    }
    (vec![path], at)
}

/// The module paths a file's product code names through `crate::`, `super::` or
/// `self::`, resolved from the crate root, with the line each is on.
fn named_paths(file: &str, code: &str) -> Vec<(usize, Vec<String>)> {
    let own = module_path(file);
    let t = tokens(code);
    let mut out = Vec::new();
    for (at, tok) in t.iter().enumerate() {
        let starts = at == 0 || t[at - 1].text != "::";
        let base = match tok.text {
            "crate" => Vec::new(),
            "super" | "self" => own.clone(),
            _ => continue,
        };
        if !starts || t.get(at + 1).is_none_or(|t| t.text != "::") {
            continue;
        }
        // `crate::` is the root itself; `super`/`self` are resolved by `path_from`.
        let from = if tok.text == "crate" { at + 2 } else { at };
        let (paths, _) = path_from(&t, from, &base);
        out.extend(paths.into_iter().map(|p| (tok.line, p)));
    }
    out
}

/// The layers, lowest first.
const LAYERS: [&str; 3] = [
    "the protocol cores (src/proto)",
    "the async layer (src/io)",
    "the wiring (the rest of src/)",
];

/// A module path's layer and its unit there: the module right under `proto` or `io`,
/// or a top-level module of the wiring.
fn unit(path: &[String]) -> (usize, String) {
    match path {
        [top, name, ..] if top == "proto" || top == "io" => {
            (usize::from(top == "io"), format!("{top}::{name}"))
        }
        [top] if top == "proto" || top == "io" => (usize::from(top == "io"), top.clone()),
        [name, ..] => (2, name.clone()),
        [] => (2, "crate".to_string()),
    }
}

/// Every import that points up a layer, as `file:line: message`.
fn upward_imports(files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, source) in files {
        let (layer, _) = unit(&module_path(file));
        for (line, path) in named_paths(file, &product_code(source)) {
            let (to, name) = unit(&path);
            if to > layer {
                problems.push(format!(
                    "{file}:{line}: {} names `{name}` of {}: a layer imports only from the layers below it (README, Architecture)",
                    LAYERS[layer], LAYERS[to]
                ));
            }
        }
    }
    problems
}

/// The imports between units (`proto::smtp` → `proto::sasl`, `gateway` → `io::net`),
/// and a loop among them if there is one, as the units around it.
fn import_loop(files: &[(String, String)]) -> Option<Vec<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, source) in files {
        let (_, from) = unit(&module_path(file));
        for (_, path) in named_paths(file, &product_code(source)) {
            let (_, to) = unit(&path);
            // A layer's root module (`proto`, `io`) only declares its units.
            if to != from && to != "proto" && to != "io" && from != "crate" {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search; a unit met again while still on the stack closes a loop.
    fn visit(
        unit: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|u| u == unit) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(unit.to_string());
            return Some(cycle);
        }
        if !done.insert(unit.to_string()) {
            return None;
        }
        stack.push(unit.to_string());
        for next in edges.get(unit).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for unit in edges.keys() {
        if let Some(cycle) = visit(unit, &edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// The layers point down (README, Architecture): the protocol cores (`src/proto/`)
/// import nothing of the async layer (`src/io/`) or the wiring; the async layer
/// nothing of the wiring. Within a layer the units (`proto::smtp`, `io::net`,
/// `gateway`) import one another without a loop, so each layer is ordered too. Read
/// from every `crate::`, `super::` and `self::` path of the product code, `use` groups
/// expanded.
///
/// Seen to fail: `use crate::io::clock::unix_now;` put into `src/proto/smtp/reply.rs`
/// failed the layers naming that line, and a `crate::control::bind` put into
/// `src/gateway.rs` failed the loop naming `admin → gateway → control → admin`.
#[test]
fn the_layers_point_down() {
    let files = sources(&["src"]);
    let problems = upward_imports(&files);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    if let Some(cycle) = import_loop(&files) {
        panic!(
            "the modules import one another in a loop: {}; move what the lower one needs into it (README, Architecture)",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_layer_rule_fires_on_upward_imports_and_loops_only() {
    let file = |name: &str, code: &str| (name.to_string(), code.to_string());
    let up = [
        file(
            "src/proto/smtp/reply.rs",
            "use crate::io::clock::unix_now;\nuse super::address::{self, Domain};\nfn f() { crate::proto::sasl::x(); }\n#[cfg(test)]\nmod tests { use crate::io::net; }\n",
        ),
        file(
            "src/io/net/session.rs",
            "use crate::{gateway::Gateway, proto::smtp};\nuse super::super::relay;\n",
        ),
        file(
            "src/gateway.rs",
            "use crate::io::net;\nuse crate::control;\n",
        ),
    ];
    let problems = upward_imports(&up);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("src/proto/smtp/reply.rs:1: "),
        "{}",
        problems[0]
    );
    assert!(problems[0].contains("`io::clock`"), "{}", problems[0]);
    assert!(
        problems[1].starts_with("src/io/net/session.rs:1: "),
        "{}",
        problems[1]
    );
    assert!(problems[1].contains("`gateway`"), "{}", problems[1]);
    assert_eq!(
        named_paths("src/io/net/session.rs", "use super::super::relay::x;"),
        [(
            1,
            vec!["io".to_string(), "relay".to_string(), "x".to_string()]
        )]
    );
    assert_eq!(import_loop(&up[..1]), None);
    assert_eq!(import_loop(&up).unwrap(), ["gateway", "io::net", "gateway"]);
    let looped = [
        file("src/gateway.rs", "use crate::control;\n"),
        file("src/control.rs", "fn f() { crate::admin::g() }\n"),
        file("src/admin/mod.rs", "use crate::gateway::Gateway;\n"),
        file("src/admin/exec.rs", "use super::session;\n"),
    ];
    assert_eq!(
        import_loop(&looped).unwrap(),
        ["admin", "gateway", "control", "admin"]
    );
}
