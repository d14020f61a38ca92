//! The LOGIN mechanism (draft-murchison-sasl-login): `Username:` and `Password:` prompts.
//!
//! An initial response, when given, is the user name. Both fields are UTF-8, not empty,
//! at most [`MAX_FIELD_LEN`] octets; the password is checked against the SCRAM secret, by
//! a derivation the caller runs ([`Step::Derive`]).

use super::{
    AuthError, Credentials, DerivedKey, MAX_FIELD_LEN, Mechanism, PasswordCheck, Step,
    decode_initial, decode_response,
};

/// The first challenge, as every deployed client expects it.
pub const USERNAME_PROMPT: &[u8] = b"Username:";
/// The second challenge.
pub const PASSWORD_PROMPT: &[u8] = b"Password:";

enum State {
    Fresh,
    AwaitUser,
    AwaitPassword { user: String },
    AwaitDerived { check: PasswordCheck, user: String },
    Done,
}

/// A LOGIN exchange.
pub struct Login<C: Credentials> {
    credentials: C,
    state: State,
    /// The user name the client gave, kept after the exchange.
    named: Option<String>,
}

fn field(raw: Vec<u8>) -> Result<String, AuthError> {
    if raw.is_empty() || raw.len() > MAX_FIELD_LEN || raw.contains(&0) {
        return Err(AuthError::Malformed);
    }
    String::from_utf8(raw).map_err(|_| AuthError::Malformed)
}

impl<C: Credentials> Login<C> {
    pub fn new(credentials: C) -> Login<C> {
        Login {
            credentials,
            state: State::Fresh,
            named: None,
        }
    }

    fn fail(&mut self, error: AuthError) -> Step {
        self.state = State::Done;
        Step::Failure(error)
    }

    fn take_user(&mut self, decoded: Result<Vec<u8>, AuthError>) -> Step {
        match decoded.and_then(field) {
            Ok(user) => {
                self.named = Some(user.clone());
                self.state = State::AwaitPassword { user };
                Step::Challenge(PASSWORD_PROMPT.to_vec())
            }
            Err(error) => self.fail(error),
        }
    }
}

impl<C: Credentials> Mechanism for Login<C> {
    fn start(&mut self, initial: Option<&[u8]>) -> Step {
        if !matches!(self.state, State::Fresh) {
            return self.fail(AuthError::Malformed);
        }
        match initial {
            None => {
                self.state = State::AwaitUser;
                Step::Challenge(USERNAME_PROMPT.to_vec())
            }
            Some(text) => self.take_user(decode_initial(text)),
        }
    }

    fn step(&mut self, response: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitUser => self.take_user(decode_response(response)),
            State::AwaitPassword { user } => {
                let password = match decode_response(response).and_then(field) {
                    Ok(password) => password,
                    Err(error) => return self.fail(error),
                };
                let (check, derivation) = PasswordCheck::start(&self.credentials, &user, &password);
                self.state = State::AwaitDerived { check, user };
                Step::Derive(derivation)
            }
            State::Fresh | State::AwaitDerived { .. } | State::Done => {
                self.fail(AuthError::Malformed)
            }
        }
    }

    fn derived(&mut self, key: &DerivedKey) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitDerived { check, user } if check.matches(key) => Step::Success {
                authzid: None,
                user,
                final_data: None,
            },
            State::AwaitDerived { .. } => Step::Failure(AuthError::BadCredentials),
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
    use super::*;

    fn tim() -> Step {
        Step::Success {
            authzid: None,
            user: "tim".into(),
            final_data: None,
        }
    }

    #[test]
    fn success_with_prompts() {
        let fixture = Fixture::new();
        let mut login = Resolving(Login::new(&fixture));
        assert_eq!(login.start(None), Step::Challenge(b"Username:".to_vec()));
        assert_eq!(login.step(b"dGlt"), Step::Challenge(b"Password:".to_vec()));
        assert_eq!(login.step(&b64(b"tanstaaftanstaaf")), tim());
        assert_eq!(login.step(b""), Step::Failure(AuthError::Malformed));
    }

    #[test]
    fn success_with_initial_user_name() {
        let fixture = Fixture::new();
        let mut login = Resolving(Login::new(&fixture));
        assert_eq!(
            login.start(Some(b"dGlt")),
            Step::Challenge(b"Password:".to_vec())
        );
        assert_eq!(login.step(&b64(b"tanstaaftanstaaf")), tim());
    }

    #[test]
    fn bad_password_and_unknown_user() {
        let fixture = Fixture::new();
        let mut login = Resolving(Login::new(&fixture));
        login.start(Some(b"dGlt"));
        assert_eq!(
            login.step(&b64(b"wrong")),
            Step::Failure(AuthError::BadCredentials)
        );
        let mut login = Resolving(Login::new(&fixture));
        login.start(Some(&b64(b"tom")));
        assert_eq!(
            login.step(&b64(b"tanstaaftanstaaf")),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn the_password_is_derived_by_the_caller() {
        let fixture = Fixture::new();
        let mut login = Login::new(&fixture);
        login.start(Some(b"dGlt"));
        assert_eq!(login.user(), Some("tim"));
        let Step::Derive(d) = login.step(&b64(b"tanstaaftanstaaf")) else {
            panic!("no derivation asked for");
        };
        assert_eq!(d.iterations(), fixture.scram.iterations());
        assert_eq!(login.step(b""), Step::Failure(AuthError::Malformed));
        let mut login = Login::new(&fixture);
        login.start(Some(b"dGlt"));
        let Step::Derive(d) = login.step(&b64(b"tanstaaftanstaaf")) else {
            panic!("no derivation asked for");
        };
        assert_eq!(login.derived(&d.run()), tim());
        assert_eq!(login.derived(&d.run()), Step::Failure(AuthError::Malformed));
    }

    #[test]
    fn cancel_at_either_prompt() {
        let fixture = Fixture::new();
        let mut login = Resolving(Login::new(&fixture));
        login.start(None);
        assert_eq!(login.step(b"*"), Step::Failure(AuthError::Cancelled));
        let mut login = Resolving(Login::new(&fixture));
        login.start(Some(b"dGlt"));
        assert_eq!(login.step(b"*"), Step::Failure(AuthError::Cancelled));
    }

    #[test]
    fn malformed_overlong_and_utf8() {
        let fixture = Fixture::new();
        for response in [
            &b"dGl"[..],
            b"",
            &b64(b"t\0m"),
            &b64(b"t\xffm"),
            &b64(&[b'u'; MAX_FIELD_LEN + 1]),
        ] {
            let mut login = Resolving(Login::new(&fixture));
            login.start(None);
            assert_eq!(login.step(response), Step::Failure(AuthError::Malformed));
        }
        let mut login = Resolving(Login::new(&fixture));
        login.start(None);
        let long = vec![b'A'; crate::proto::sasl::MAX_RESPONSE_LEN + 4];
        assert_eq!(login.step(&long), Step::Failure(AuthError::TooLong));
        let mut login = Resolving(Login::new(&fixture));
        login.start(Some(b"dGlt"));
        assert_eq!(
            login.step(&b64(b"tan\xc3")),
            Step::Failure(AuthError::Malformed)
        );
    }

    #[test]
    fn fuzz_decoder() {
        let fixture = Fixture::cheap();
        let successes = fuzz(
            2195,
            10_000,
            || Login::new(&fixture),
            &[b"tim", b"tanstaaftanstaaf"],
        );
        assert!(successes > 0 && successes < 10_000);
    }
}
