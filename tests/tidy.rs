//! The tidy test: the invariants the README's code map states, checked on the source
//! text, so that a change that breaks one fails here rather than in review.
//!
//! * The protocol cores name no sockets, files, clocks, executors, threads, system
//!   calls, async or TLS types:
//!   they take bytes and `Instant`s and return bytes, events and deadlines. Their tests
//!   may (a `#[cfg(test)]` item is left out, as are comments and string literals).
//! * Every source file opens with a `//!` header saying what it is.

use std::fs;
use std::path::{Path, PathBuf};

/// The cores: folders whose every file is one, and single files.
const CORES: &[&str] = &[
    "src/smtp",
    "src/sasl",
    "src/policy",
    "src/filter",
    "src/console",
    "src/dns/message.rs",
    "src/dns/name.rs",
    "src/dns/exchange.rs",
    "src/dns/cache.rs",
    "src/relay/core.rs",
    "src/relay/dsn.rs",
    "src/config/mod.rs",
    "src/config/schema.rs",
    "src/config/text.rs",
    "src/config/text/lex.rs",
    "src/config/text/value.rs",
    "src/config/check.rs",
    "src/config/wire.rs",
    "src/config/slot.rs",
    "src/config/reference.rs",
    "src/init/plan.rs",
    "src/proxy.rs",
];

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
    ("rustls", "only src/tls names rustls"),
    ("smol", "a core knows no executor"),
    ("async_io", "a core knows no executor"),
    ("async fn", "a core is not async: the layer drives it"),
    (".await", "a core is not async: the layer drives it"),
    ("thread::", "a core starts no threads"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files under `path` (or `path` itself), tests files left out.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
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
        rest = skip_item(&rest[at + "#[cfg(test)]".len()..]);
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
/// them count for nothing).
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
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.extend_from_slice(b"\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.extend_from_slice(b"\"\"");
            }
            b'\'' => {
                // A character literal ('x', '\n', '\u{7f}'), or a lifetime ('a).
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| i + 2 + p)
                } else {
                    // One character of up to four octets, then the closing quote.
                    (2..=5).map(|n| i + n).find(|&j| b.get(j) == Some(&b'\''))
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
    for kept in ["fn a()", "fn b()", "fn c()", "fn d<'a>(x: &'a str)"] {
        assert!(code.contains(kept), "{kept} lost from {code}");
    }
}
