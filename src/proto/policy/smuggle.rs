//! Recipient forms that hide a second hop inside an address we would accept (SPEC §3):
//! percent hack, source routes, bang paths, a quoted `@`. From a client that is neither
//! INTERNAL nor authenticated they never relay. A second `@` cannot reach here (it is not
//! a [`Recipient`]), and address literals are judged by routing, which knows our own.

use crate::proto::smtp::address::Recipient;

/// Why `rcpt` smuggles a route, or `None` when it names one mailbox plainly.
///
/// `had_source_route` says whether the path carried an RFC 5321 §4.1.1.3 source route,
/// which the session core strips.
pub fn smuggles_route(rcpt: &Recipient, had_source_route: bool) -> Option<&'static str> {
    if had_source_route {
        return Some("source route (@a,@b:user@c)");
    }
    let local = rcpt.local_part();
    let (text, quoted) = match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(inner) => (inner, true),
        None => (local, false),
    };
    if quoted && text.contains('@') {
        return Some("quoted local part hiding an @ (\"user@foreign\"@ours)");
    }
    if text.contains('%') {
        return Some("percent hack (user%foreign@ours)");
    }
    if text.contains('!') {
        return Some("bang path (foreign!user@ours)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_smuggling_form_is_named() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("user@example.com", false, None),
            ("first.last+tag@example.com", false, None),
            ("\"first last\"@example.com", false, None),
            ("postmaster", false, None),
            ("user@example.com", true, Some("source route")),
            (
                "user%foreign.example@example.com",
                false,
                Some("percent hack"),
            ),
            ("foreign.example!user@example.com", false, Some("bang path")),
            (
                "\"user@foreign.example\"@example.com",
                false,
                Some("quoted local part"),
            ),
            ("\"user%foreign\"@example.com", false, Some("percent hack")),
            ("\"a\\\"@b\"@example.com", false, Some("quoted local part")),
            ("\"foreign!user\"@example.com", false, Some("bang path")),
        ];
        for (rcpt, route, want) in cases {
            let parsed = Recipient::parse(rcpt).unwrap();
            let got = smuggles_route(&parsed, *route);
            match want {
                None => assert_eq!(got, None, "{rcpt}"),
                Some(w) => assert!(got.is_some_and(|g| g.starts_with(w)), "{rcpt}: {got:?}"),
            }
        }
    }
}
