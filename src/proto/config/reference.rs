//! The configuration reference, generated from the schema: every statement with its
//! value, factory value and one line of help. `drawbridge config reference` prints it,
//! and `src/proto/config/reference.md` is this text, checked by a test to match.

use super::schema::{List, Node, NodeKind, ROOT};

/// The reference in Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# drawbridge configuration reference\n\
         \n\
         Generated from the configuration schema by `drawbridge config reference`; do not \
         edit by hand.\n\
         \n\
         Every statement is written `set PATH VALUE` and removed with `delete PATH [VALUE]`. \
         Keywords may be abbreviated to any unambiguous prefix. Settings of one entry may \
         share a line (`set classify 10 remote 10.0.0.0/8 category INTERNAL`). A value with \
         blanks is written in double quotes, with `\\\"` and `\\\\` inside. A quoted word is \
         always a value, never a keyword: `delete service inbound ehlo-keywords \"AUTH\"` \
         removes that value, where an unquoted `AUTH` would name the `auth` setting.\n",
    );
    for node in ROOT {
        out.push_str(&format!("\n## {}\n\n{}.\n\n", node.name, node.help));
        out.push_str("| statement | value | factory value | |\n| --- | --- | --- | --- |\n");
        rows(node, node.name, &mut out);
    }
    out
}

fn rows(node: &Node, path: &str, out: &mut String) {
    match &node.kind {
        NodeKind::Container(children) => {
            for child in children.iter() {
                rows(child, &format!("{path} {}", child.name), out);
            }
        }
        NodeKind::List(list) => list_rows(list, path, out),
        NodeKind::Leaf(leaf) => {
            let (value, expected) = match leaf.value {
                Some(spec) => {
                    let suffix = spec.suffix.map(|s| format!(" {s}")).unwrap_or_default();
                    (
                        format!("`{}{suffix}`", spec.placeholder),
                        format!(": {}", spec.expected),
                    )
                }
                None => ("(none)".to_string(), String::new()),
            };
            let many = if leaf.multi {
                " Repeat the statement for each value."
            } else {
                ""
            };
            let default = (leaf.default)()
                .map(|d| {
                    if d.is_empty() {
                        "(empty)".into()
                    } else {
                        format!("`{d}`")
                    }
                })
                .unwrap_or_else(|| "(not set)".into());
            out.push_str(&row(&[
                format!("`set {path}`"),
                value,
                default,
                format!("{}{expected}.{many}", node.help),
            ]));
        }
    }
}

fn list_rows(list: &List, path: &str, out: &mut String) {
    let entry = format!("{path} {}", list.key.placeholder);
    if !list.fixed {
        out.push_str(&row(&[
            format!("`set {entry}`"),
            String::new(),
            String::new(),
            format!(
                "An entry ({}); at most {}.{}",
                list.key.expected,
                list.max_entries,
                if list.one_line {
                    " Shown on one line with all its settings."
                } else {
                    ""
                }
            ),
        ]));
    }
    for child in list.children {
        rows(child, &format!("{entry} {}", child.name), out);
    }
}

/// A table row, the `|` inside its cells escaped (GitHub Markdown splits cells on every
/// unescaped bar, even in code spans).
fn row(cells: &[String]) -> String {
    let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
    format!("| {} |\n", cells.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed reference is the generated one: `drawbridge config reference >
    /// src/proto/config/reference.md` brings it up to date.
    #[test]
    fn the_committed_reference_matches_the_schema() {
        let committed = include_str!("reference.md");
        assert!(
            committed == markdown(),
            "src/proto/config/reference.md is stale: run `cargo run -- config reference > src/proto/config/reference.md`"
        );
    }

    #[test]
    fn every_statement_is_in_the_reference() {
        let text = markdown();
        for needle in [
            "`set system host-name`",
            "`set route PATTERN relay`",
            "`set route PATTERN mx` | (none)",
            "`set service inbound\\|outbound max-connections` | `NUMBER` | `500`",
            "`set ruleset NAME restrict` | `MECHANISM tls`",
            "`set relay-rule N deny`",
            "`set classify N` |  |  | An entry",
        ] {
            assert!(text.contains(needle), "{needle}\n{text}");
        }
    }
}
