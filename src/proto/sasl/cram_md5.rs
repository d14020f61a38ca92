//! The CRAM-MD5 mechanism (RFC 2195): the server sends `<random.timestamp@hostname>`, the
//! client answers `user SP hex(HMAC-MD5(password, challenge))`.
//!
//! The challenge is built from values the caller passes in (a random number and the
//! current time), so the mechanism stays deterministic. The digest is checked against the
//! user's stored HMAC-MD5 pad states. Users without CRAM-MD5 enabled fail like unknown
//! users. CRAM-MD5 has no initial response; one is refused.

use super::md5::DIGEST_LEN;
use super::{
    AuthError, CramMd5Secret, Credentials, MAX_FIELD_LEN, Mechanism, Step, constant_time_eq,
    decode_response,
};

/// RFC 1035 §2.3.4: a host name is at most 255 octets. Worst-case challenge: 255 + 44.
pub const MAX_HOSTNAME_LEN: usize = 255;

#[derive(Debug, PartialEq, Eq)]
enum State {
    Fresh,
    AwaitDigest,
    Done,
}

/// A CRAM-MD5 exchange.
pub struct CramMd5<C: Credentials> {
    credentials: C,
    challenge: Vec<u8>,
    state: State,
    /// The user the client named, kept after the exchange.
    named: Option<String>,
}

/// Parses `user SP 32*lowercase-hex` into the user and the digest.
fn parse(response: &[u8]) -> Result<(String, [u8; DIGEST_LEN]), AuthError> {
    let mut words = response.rsplitn(2, |&b| b == b' ');
    let (Some(hex), Some(user)) = (words.next(), words.next()) else {
        return Err(AuthError::Malformed);
    };
    if user.is_empty() || user.len() > MAX_FIELD_LEN || user.contains(&0) {
        return Err(AuthError::Malformed);
    }
    let user = std::str::from_utf8(user).map_err(|_| AuthError::Malformed)?;
    if hex.len() != DIGEST_LEN * 2 {
        return Err(AuthError::Malformed);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(AuthError::Malformed),
    };
    let mut digest = [0u8; DIGEST_LEN];
    let mut nibbles = hex.iter().map(|&c| nibble(c));
    for out in &mut digest {
        // Two hex digits an octet, the high one first (`hex` is twice DIGEST_LEN long).
        let (Some(high), Some(low)) = (nibbles.next(), nibbles.next()) else {
            return Err(AuthError::Malformed);
        };
        *out = (high? << 4) | low?;
    }
    Ok((user.to_string(), digest))
}

impl<C: Credentials> CramMd5<C> {
    /// Prepares the challenge `<random.timestamp@hostname>`. `None` when the host name is
    /// empty, longer than [`MAX_HOSTNAME_LEN`] or holds anything but letters, digits,
    /// `-` and `.`.
    pub fn new(credentials: C, random: u64, timestamp: u64, hostname: &str) -> Option<CramMd5<C>> {
        let valid = !hostname.is_empty()
            && hostname.len() <= MAX_HOSTNAME_LEN
            && hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return None;
        }
        Some(CramMd5 {
            credentials,
            challenge: format!("<{random}.{timestamp}@{hostname}>").into_bytes(),
            state: State::Fresh,
            named: None,
        })
    }

    fn fail(&mut self, error: AuthError) -> Step {
        self.state = State::Done;
        Step::Failure(error)
    }
}

impl<C: Credentials> Mechanism for CramMd5<C> {
    fn start(&mut self, initial: Option<&[u8]>) -> Step {
        if self.state != State::Fresh || initial.is_some() {
            return self.fail(AuthError::Malformed);
        }
        self.state = State::AwaitDigest;
        Step::Challenge(self.challenge.clone())
    }

    fn step(&mut self, response: &[u8]) -> Step {
        if self.state != State::AwaitDigest {
            return self.fail(AuthError::Malformed);
        }
        self.state = State::Done;
        let (user, digest) = match decode_response(response).and_then(|raw| parse(&raw)) {
            Ok(parsed) => parsed,
            Err(error) => return Step::Failure(error),
        };
        self.named = Some(user.clone());
        // An unknown user (or one without CRAM-MD5) costs the same HMAC, against a secret
        // no digest matches but by chance.
        let (secret, known) = match self.credentials.cram_md5(&user) {
            Some(secret) => (secret, true),
            None => (CramMd5Secret::derive(""), false),
        };
        let matches = constant_time_eq(&secret.hmac(&self.challenge), &digest);
        if matches && known {
            Step::Success {
                authzid: None,
                user,
                final_data: None,
            }
        } else {
            Step::Failure(AuthError::BadCredentials)
        }
    }

    fn user(&self) -> Option<&str> {
        self.named.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::super::CramMd5Secret;
    use super::super::testing::{Fixture, b64, fuzz};
    use super::*;

    fn rfc2195(fixture: &Fixture) -> CramMd5<&Fixture> {
        CramMd5::new(fixture, 1896, 697170952, "postoffice.reston.mci.net").unwrap()
    }

    /// RFC 2195 §2 example exchange, as it is.
    #[test]
    fn rfc2195_example() {
        let fixture = Fixture::new();
        let mut cram = rfc2195(&fixture);
        let challenge = cram.start(None);
        assert_eq!(
            challenge,
            Step::Challenge(b"<1896.697170952@postoffice.reston.mci.net>".to_vec())
        );
        assert_eq!(
            crate::proto::sasl::base64::encode(b"<1896.697170952@postoffice.reston.mci.net>"),
            "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
        );
        assert_eq!(
            cram.step(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"),
            Step::Success {
                authzid: None,
                user: "tim".into(),
                final_data: None
            }
        );
        assert_eq!(cram.step(b""), Step::Failure(AuthError::Malformed));
    }

    #[test]
    fn stored_pad_states_give_the_rfc_digest() {
        let secret = CramMd5Secret::derive("tanstaaftanstaaf");
        let digest = secret.hmac(b"<1896.697170952@postoffice.reston.mci.net>");
        assert_eq!(
            parse(b"tim b913a602c7eda7a495b4e6e7334d3890").unwrap().1,
            digest
        );
    }

    #[test]
    fn bad_digest_and_unknown_user() {
        let fixture = Fixture::new();
        let mut cram = rfc2195(&fixture);
        cram.start(None);
        assert_eq!(
            cram.step(&b64(b"tim b913a602c7eda7a495b4e6e7334d3891")),
            Step::Failure(AuthError::BadCredentials)
        );
        let mut cram = rfc2195(&fixture);
        cram.start(None);
        assert_eq!(
            cram.step(&b64(b"tom b913a602c7eda7a495b4e6e7334d3890")),
            Step::Failure(AuthError::BadCredentials)
        );
        // Another challenge, same answer: a replay fails.
        let mut cram =
            CramMd5::new(&fixture, 1897, 697170952, "postoffice.reston.mci.net").unwrap();
        cram.start(None);
        assert_eq!(
            cram.step(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn cancel_malformed_overlong_utf8() {
        let fixture = Fixture::new();
        let cases: &[(Vec<u8>, AuthError)] = &[
            (b"*".to_vec(), AuthError::Cancelled),
            (b"dGlt".to_vec(), AuthError::Malformed),
            (
                b64(b"timb913a602c7eda7a495b4e6e7334d3890"),
                AuthError::Malformed,
            ),
            (
                b64(b"tim b913a602c7eda7a495b4e6e7334d389"),
                AuthError::Malformed,
            ),
            (
                b64(b"tim B913A602C7EDA7A495B4E6E7334D3890"),
                AuthError::Malformed,
            ),
            (
                b64(b" b913a602c7eda7a495b4e6e7334d3890"),
                AuthError::Malformed,
            ),
            (
                b64(b"t\xffm b913a602c7eda7a495b4e6e7334d3890"),
                AuthError::Malformed,
            ),
            (
                vec![b'A'; crate::proto::sasl::MAX_RESPONSE_LEN + 4],
                AuthError::TooLong,
            ),
        ];
        for (response, error) in cases {
            let mut cram = rfc2195(&fixture);
            cram.start(None);
            assert_eq!(cram.step(response), Step::Failure(*error), "{response:?}");
        }
        let mut cram = rfc2195(&fixture);
        assert_eq!(
            cram.start(Some(b"dGlt")),
            Step::Failure(AuthError::Malformed)
        );
    }

    #[test]
    fn user_names_may_hold_spaces_and_utf8() {
        assert_eq!(
            parse("tïm smith b913a602c7eda7a495b4e6e7334d3890".as_bytes())
                .unwrap()
                .0,
            "tïm smith"
        );
    }

    #[test]
    fn host_name_is_checked() {
        let fixture = Fixture::new();
        assert!(CramMd5::new(&fixture, 1, 2, "").is_none());
        assert!(CramMd5::new(&fixture, 1, 2, "a>b").is_none());
        assert!(CramMd5::new(&fixture, 1, 2, &"a".repeat(MAX_HOSTNAME_LEN + 1)).is_none());
        assert!(CramMd5::new(&fixture, 1, 2, "mx-1.example.org").is_some());
    }

    #[test]
    fn fuzz_decoder() {
        let fixture = Fixture::new();
        let successes = fuzz(
            2195,
            10_000,
            || rfc2195(&fixture),
            &[b"tim b913a602c7eda7a495b4e6e7334d3890"],
        );
        // Unmutated cases succeed; mutated ones almost never do.
        assert!(successes > 0 && successes < 10_000);
    }
}
