//! The PLAIN mechanism (RFC 4616): `[authzid] NUL authcid NUL passwd` in one message.
//!
//! Each field is UTF-8 and at most [`MAX_FIELD_LEN`] octets; authcid and passwd are not
//! empty. The password is checked against the user's SCRAM secret: the mechanism asks for
//! the derivation ([`Step::Derive`]) and compares what the caller hands back. An authzid
//! that differs from the authcid is refused (see `authorize` in the module root).

use super::{
    AuthError, Credentials, DerivedKey, MAX_FIELD_LEN, Mechanism, PasswordCheck, Step, authorize,
    decode_initial, decode_response,
};

enum State {
    Fresh,
    /// Sent the empty challenge; waiting for the message.
    AwaitMessage,
    /// Asked for the password's derivation.
    AwaitDerived {
        check: PasswordCheck,
        authzid: Option<String>,
        authcid: String,
    },
    Done,
}

/// A PLAIN exchange.
pub struct Plain<C: Credentials> {
    credentials: C,
    state: State,
    /// The authentication identity the client named, kept after the exchange.
    named: Option<String>,
}

/// The checked form of a PLAIN message.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    authzid: Option<String>,
    authcid: String,
    password: String,
}

fn field(raw: &[u8]) -> Result<String, AuthError> {
    if raw.len() > MAX_FIELD_LEN {
        return Err(AuthError::Malformed);
    }
    String::from_utf8(raw.to_vec()).map_err(|_| AuthError::Malformed)
}

fn parse(message: &[u8]) -> Result<Message, AuthError> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(Message {
        authzid: if authzid.is_empty() {
            None
        } else {
            Some(field(authzid)?)
        },
        authcid: field(authcid)?,
        password: field(password)?,
    })
}

impl<C: Credentials> Plain<C> {
    pub fn new(credentials: C) -> Plain<C> {
        Plain {
            credentials,
            state: State::Fresh,
            named: None,
        }
    }

    fn finish(&mut self, decoded: Result<Vec<u8>, AuthError>) -> Step {
        self.state = State::Done;
        let message = match decoded.and_then(|raw| parse(&raw)) {
            Ok(message) => message,
            Err(error) => return Step::Failure(error),
        };
        self.named = Some(message.authcid.clone());
        let (check, derivation) =
            PasswordCheck::start(&self.credentials, &message.authcid, &message.password);
        self.state = State::AwaitDerived {
            check,
            authzid: message.authzid,
            authcid: message.authcid,
        };
        Step::Derive(derivation)
    }
}

impl<C: Credentials> Mechanism for Plain<C> {
    fn start(&mut self, initial: Option<&[u8]>) -> Step {
        if !matches!(self.state, State::Fresh) {
            self.state = State::Done;
            return Step::Failure(AuthError::Malformed);
        }
        match initial {
            None => {
                self.state = State::AwaitMessage;
                Step::Challenge(Vec::new())
            }
            Some(text) => self.finish(decode_initial(text)),
        }
    }

    fn step(&mut self, response: &[u8]) -> Step {
        if !matches!(self.state, State::AwaitMessage) {
            self.state = State::Done;
            return Step::Failure(AuthError::Malformed);
        }
        self.finish(decode_response(response))
    }

    fn derived(&mut self, key: &DerivedKey) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitDerived {
                check,
                authzid,
                authcid,
            } => {
                if check.matches(key) {
                    authorize(authzid, authcid)
                } else {
                    Step::Failure(AuthError::BadCredentials)
                }
            }
            _ => Step::Failure(AuthError::Malformed),
        }
    }

    fn user(&self) -> Option<&str> {
        self.named.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Fixture, Resolving, b64, fuzz};
    use super::super::{Derivation, MIN_ITERATIONS, ScramHash, ScramSecret};
    use super::*;

    fn run(initial: Option<&[u8]>, responses: &[&[u8]]) -> Step {
        let fixture = Fixture::new();
        let mut plain = Resolving(Plain::new(&fixture));
        let mut step = plain.start(initial);
        for response in responses {
            step = plain.step(response);
        }
        step
    }

    fn success(user: &str) -> Step {
        Step::Success {
            authzid: None,
            user: user.to_string(),
            final_data: None,
        }
    }

    /// RFC 4616 §4 examples, parsed as they are.
    #[test]
    fn rfc4616_examples_parse() {
        assert_eq!(
            parse(b"\0tim\0tanstaaftanstaaf"),
            Ok(Message {
                authzid: None,
                authcid: "tim".into(),
                password: "tanstaaftanstaaf".into()
            })
        );
        assert_eq!(
            parse(b"Ursel\0Kurt\0xipj3plmq"),
            Ok(Message {
                authzid: Some("Ursel".into()),
                authcid: "Kurt".into(),
                password: "xipj3plmq".into()
            })
        );
    }

    #[test]
    fn success_with_initial_response() {
        let initial = b64(b"\0tim\0tanstaaftanstaaf");
        assert_eq!(run(Some(&initial), &[]), success("tim"));
    }

    #[test]
    fn the_password_is_derived_by_the_caller() {
        let fixture = Fixture::new();
        let mut plain = Plain::new(&fixture);
        let Step::Derive(d) = plain.start(Some(&b64(b"\0tim\0tanstaaftanstaaf"))) else {
            panic!("no derivation asked for");
        };
        assert_eq!(plain.user(), Some("tim"));
        assert_eq!(d.iterations(), fixture.scram.iterations());
        assert!(!format!("{d:?}").contains("tanstaaf"), "{d:?}");
        // A key derived from another password fails; the exchange is then over.
        let wrong = Derivation::new(
            ScramHash::Sha256,
            b"wrong",
            &ScramSecret::derive("x", b"saltsaltsalt", MIN_ITERATIONS).unwrap(),
        );
        assert_eq!(
            plain.derived(&wrong.run()),
            Step::Failure(AuthError::BadCredentials)
        );
        assert_eq!(plain.derived(&d.run()), Step::Failure(AuthError::Malformed));
        // The right one succeeds.
        let mut plain = Plain::new(&fixture);
        let Step::Derive(d) = plain.start(Some(&b64(b"\0tim\0tanstaaftanstaaf"))) else {
            panic!("no derivation asked for");
        };
        assert_eq!(plain.derived(&d.run()), success("tim"));
        // Out of order: nothing was asked.
        let mut fresh = Plain::new(&fixture);
        assert_eq!(fresh.derived(&d.run()), Step::Failure(AuthError::Malformed));
    }

    #[test]
    fn an_unknown_user_costs_the_same_derivation() {
        let fixture = Fixture::new();
        let ask = |name: &[u8]| {
            let mut raw = b"\0".to_vec();
            raw.extend_from_slice(name);
            raw.extend_from_slice(b"\0secret");
            match Plain::new(&fixture).start(Some(&b64(&raw))) {
                Step::Derive(d) => d,
                other => panic!("{other:?}"),
            }
        };
        let known = ask(b"tim");
        let unknown = ask(b"tom");
        assert_eq!(known.iterations(), unknown.iterations());
        assert_eq!(known.salt.len(), unknown.salt.len());
        // The stand-in is stable per name and differs between names.
        assert_eq!(unknown.salt, ask(b"tom").salt);
        assert_ne!(unknown.salt, ask(b"tam").salt);
    }

    #[test]
    fn success_after_empty_challenge() {
        let fixture = Fixture::new();
        let mut plain = Resolving(Plain::new(&fixture));
        assert_eq!(plain.start(None), Step::Challenge(Vec::new()));
        assert_eq!(plain.step(&b64(b"\0tim\0tanstaaftanstaaf")), success("tim"));
        // The exchange is over.
        assert_eq!(plain.step(b""), Step::Failure(AuthError::Malformed));
    }

    #[test]
    fn bad_password_and_unknown_user() {
        let wrong = b64(b"\0tim\0tanstaaftanstaafX");
        assert_eq!(
            run(Some(&wrong), &[]),
            Step::Failure(AuthError::BadCredentials)
        );
        let unknown = b64(b"\0tom\0tanstaaftanstaaf");
        assert_eq!(
            run(Some(&unknown), &[]),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn cancel() {
        assert_eq!(run(None, &[b"*"]), Step::Failure(AuthError::Cancelled));
    }

    #[test]
    fn malformed() {
        for raw in [
            &b"tim\0tanstaaftanstaaf"[..],
            b"\0tim\0pw\0extra",
            b"\0\0pw",
            b"\0tim\0",
            b"",
        ] {
            assert_eq!(
                run(None, &[&b64(raw)]),
                Step::Failure(AuthError::Malformed),
                "{raw:?}"
            );
        }
        assert_eq!(
            run(None, &[b"not base64!"]),
            Step::Failure(AuthError::Malformed)
        );
        assert_eq!(run(Some(b"="), &[]), Step::Failure(AuthError::Malformed));
    }

    #[test]
    fn over_long_response() {
        let long = vec![b'A'; crate::proto::sasl::MAX_RESPONSE_LEN + 4];
        assert_eq!(run(None, &[&long]), Step::Failure(AuthError::TooLong));
        assert_eq!(run(Some(&long), &[]), Step::Failure(AuthError::TooLong));
    }

    #[test]
    fn field_length_limit() {
        let mut raw = b"\0tim\0".to_vec();
        raw.extend_from_slice(&[b'p'; MAX_FIELD_LEN]);
        assert_eq!(
            run(None, &[&b64(&raw)]),
            Step::Failure(AuthError::BadCredentials)
        );
        raw.push(b'p');
        assert_eq!(
            run(None, &[&b64(&raw)]),
            Step::Failure(AuthError::Malformed)
        );
    }

    #[test]
    fn utf8_rules() {
        assert_eq!(
            run(None, &[&b64(b"\0tim\0tanstaaf\xfftanstaaf")]),
            Step::Failure(AuthError::Malformed)
        );
        assert_eq!(
            run(None, &[&b64(b"\xc3\0tim\0tanstaaftanstaaf")]),
            Step::Failure(AuthError::Malformed)
        );
        // Well-formed non-ASCII is fine (and here simply wrong).
        assert_eq!(
            run(None, &[&b64("\0tim\0tanstaaftänstaaf".as_bytes())]),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn authzid_must_equal_authcid() {
        assert_eq!(
            run(None, &[&b64(b"tim\0tim\0tanstaaftanstaaf")]),
            Step::Success {
                authzid: Some("tim".into()),
                user: "tim".into(),
                final_data: None
            }
        );
        assert_eq!(
            run(None, &[&b64(b"root\0tim\0tanstaaftanstaaf")]),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn fuzz_decoder() {
        let fixture = Fixture::cheap();
        let successes = fuzz(
            4616,
            10_000,
            || Plain::new(&fixture),
            &[b"\0tim\0tanstaaftanstaaf"],
        );
        // Unmutated cases succeed; mutated ones almost never do.
        assert!(successes > 0 && successes < 10_000);
    }
}
