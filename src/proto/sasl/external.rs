//! The EXTERNAL mechanism (RFC 4422 Appendix A): the identity comes from the verified TLS
//! client certificate the caller passes in; the message is only an authzid.
//!
//! The certificate identity (SAN email or CN, chosen by the TLS layer) is mapped to a user
//! through [`Credentials::external`]. An empty authzid means "the certificate's identity";
//! any other authzid must name that same user (see `authorize` in the module root).

use super::{
    AuthError, Credentials, MAX_FIELD_LEN, Mechanism, Step, authorize, decode_initial,
    decode_response,
};

#[derive(Debug, PartialEq, Eq)]
enum State {
    Fresh,
    AwaitAuthzid,
    Done,
}

/// An EXTERNAL exchange.
pub struct External<C: Credentials> {
    credentials: C,
    cert_identity: Option<String>,
    state: State,
}

impl<C: Credentials> External<C> {
    /// `cert_identity` is the verified client certificate's identity, `None` when the
    /// client presented no certificate (or not over TLS): then every attempt fails.
    pub fn new(credentials: C, cert_identity: Option<&str>) -> External<C> {
        External {
            credentials,
            cert_identity: cert_identity.map(str::to_string),
            state: State::Fresh,
        }
    }

    fn finish(&mut self, decoded: Result<Vec<u8>, AuthError>) -> Step {
        self.state = State::Done;
        let raw = match decoded {
            Ok(raw) => raw,
            Err(error) => return Step::Failure(error),
        };
        if raw.len() > MAX_FIELD_LEN || raw.contains(&0) {
            return Step::Failure(AuthError::Malformed);
        }
        let Ok(authzid) = String::from_utf8(raw) else {
            return Step::Failure(AuthError::Malformed);
        };
        let user = self
            .cert_identity
            .as_deref()
            .and_then(|identity| self.credentials.external(identity));
        match user {
            Some(user) => authorize(Some(authzid), user),
            None => Step::Failure(AuthError::BadCredentials),
        }
    }
}

impl<C: Credentials> Mechanism for External<C> {
    fn start(&mut self, initial: Option<&[u8]>) -> Step {
        if self.state != State::Fresh {
            return self.finish(Err(AuthError::Malformed));
        }
        match initial {
            None => {
                self.state = State::AwaitAuthzid;
                Step::Challenge(Vec::new())
            }
            Some(text) => self.finish(decode_initial(text)),
        }
    }

    fn step(&mut self, response: &[u8]) -> Step {
        if self.state != State::AwaitAuthzid {
            return self.finish(Err(AuthError::Malformed));
        }
        self.finish(decode_response(response))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Fixture, b64, fuzz};
    use super::*;

    fn tim(authzid: Option<&str>) -> Step {
        Step::Success {
            authzid: authzid.map(str::to_string),
            user: "tim".into(),
            final_data: None,
        }
    }

    #[test]
    fn certificate_identity_with_empty_authzid() {
        let fixture = Fixture::new();
        let mut external = External::new(&fixture, Some("tim@example.org"));
        assert_eq!(external.start(Some(b"=")), tim(None));
        let mut external = External::new(&fixture, Some("tim@example.org"));
        assert_eq!(external.start(None), Step::Challenge(Vec::new()));
        assert_eq!(external.step(b""), tim(None));
        assert_eq!(external.step(b""), Step::Failure(AuthError::Malformed));
    }

    #[test]
    fn authzid_must_name_the_certificate_user() {
        let fixture = Fixture::new();
        let mut external = External::new(&fixture, Some("tim@example.org"));
        assert_eq!(external.start(Some(b"dGlt")), tim(Some("tim")));
        let mut external = External::new(&fixture, Some("tim@example.org"));
        assert_eq!(
            external.start(Some(&b64(b"root"))),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn without_certificate_or_with_unknown_identity() {
        let fixture = Fixture::new();
        let mut external = External::new(&fixture, None);
        assert_eq!(
            external.start(Some(b"=")),
            Step::Failure(AuthError::BadCredentials)
        );
        let mut external = External::new(&fixture, None);
        assert_eq!(
            external.start(Some(b"dGlt")),
            Step::Failure(AuthError::BadCredentials)
        );
        let mut external = External::new(&fixture, Some("eve@example.org"));
        assert_eq!(
            external.start(Some(b"=")),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn cancel_malformed_overlong_utf8() {
        let fixture = Fixture::new();
        let cases: &[(Vec<u8>, AuthError)] = &[
            (b"*".to_vec(), AuthError::Cancelled),
            (b"dGl".to_vec(), AuthError::Malformed),
            (b64(b"t\xffm"), AuthError::Malformed),
            (b64(b"t\0m"), AuthError::Malformed),
            (b64(&[b'a'; MAX_FIELD_LEN + 1]), AuthError::Malformed),
            (
                vec![b'A'; crate::proto::sasl::MAX_RESPONSE_LEN + 4],
                AuthError::TooLong,
            ),
        ];
        for (response, error) in cases {
            let mut external = External::new(&fixture, Some("tim@example.org"));
            external.start(None);
            assert_eq!(external.step(response), Step::Failure(*error));
        }
    }

    #[test]
    fn fuzz_decoder() {
        let fixture = Fixture::new();
        let successes = fuzz(
            4422,
            10_000,
            || External::new(&fixture, Some("tim@example.org")),
            &[b"tim"],
        );
        assert!(successes > 0 && successes < 10_000);
    }
}
