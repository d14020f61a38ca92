//! The client side of SASL, for SMTP AUTH to a next hop (RFC 4954): SCRAM-SHA-256
//! (RFC 5802, RFC 7677, without channel binding), PLAIN (RFC 4616) and LOGIN.
//!
//! [`SaslClient`] is a state machine like the server mechanisms: it takes the server's
//! challenges (decoded from their base64) and returns what to answer. It does no I/O,
//! reads no clock and draws no random numbers: the caller passes the client nonce. It
//! does not run PBKDF2 either, which costs what the server's iteration count says: when
//! SCRAM needs the salted password it returns [`ClientStep::Derive`], the caller runs
//! [`ClientDerivation::run`] where it costs no one a wait and hands the result back with
//! [`SaslClient::derived`].
//!
//! Calling order:
//! 1. [`ClientMechanism::choose`] picks the mechanism from the server's EHLO AUTH list;
//!    [`SaslClient::new`] makes the client for one AUTH command;
//! 2. [`SaslClient::initial`] gives the initial response to send with the command
//!    (`AUTH NAME base64`), or `None` for a mechanism that waits for the server;
//! 3. each `334` challenge goes to [`SaslClient::challenge`]; a [`ClientStep::Respond`]
//!    is sent as one base64 line, a [`ClientStep::Derive`] is run and its result passed
//!    to [`SaslClient::derived`], a [`ClientStep::Failed`] ends the exchange (the caller
//!    closes the connection: a server that fails to prove itself is not talked to);
//! 4. on `235`, [`SaslClient::succeeded`] says whether we accept it: SCRAM only once the
//!    server has proven it knows the password (its signature in server-final), so a
//!    man in the middle cannot pretend the login worked.
//!
//! Like the server side, nothing here implements SASLprep (RFC 4013): names and
//! passwords are sent as their exact UTF-8 octets.

use std::num::NonZeroU32;

use super::scram::is_printable;
use super::{MAX_ITERATIONS, ScramHash, base64, constant_time_eq};

/// Longest salt we take from a server: 128 octets (servers use 16 to 32; the bound keeps
/// a hostile server from making us hold or hash more).
pub const MAX_SERVER_SALT_LEN: usize = 128;
/// Longest combined nonce we take from a server: 256 characters (ours is 24 of them).
pub const MAX_SERVER_NONCE_CHARS: usize = 256;
/// Random octets in our SCRAM nonce: 18, as 24 base64 characters (RFC 5802 §5.1 asks for
/// a "sufficiently random" nonce; 144 bits is more than enough).
pub const CLIENT_NONCE_RANDOM: usize = 18;

/// A client mechanism we can use, in our order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMechanism {
    /// The password never crosses the wire and the server proves it knows it.
    ScramSha256,
    Plain,
    Login,
}

impl ClientMechanism {
    /// Strongest first: SCRAM-SHA-256, then PLAIN, then LOGIN (the same secret as PLAIN,
    /// in more round trips).
    pub const PREFERENCE: [ClientMechanism; 3] = [
        ClientMechanism::ScramSha256,
        ClientMechanism::Plain,
        ClientMechanism::Login,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClientMechanism::ScramSha256 => "SCRAM-SHA-256",
            ClientMechanism::Plain => "PLAIN",
            ClientMechanism::Login => "LOGIN",
        }
    }

    /// The mechanism an EHLO keyword names (case-insensitive), if we can use it.
    pub fn parse(name: &str) -> Option<ClientMechanism> {
        Self::PREFERENCE
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Our most preferred of the mechanisms the server offers.
    pub fn choose(offered: &[ClientMechanism]) -> Option<ClientMechanism> {
        Self::PREFERENCE.into_iter().find(|m| offered.contains(m))
    }
}

/// The user name and password a route logs in with. The password is wiped from memory
/// when dropped and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub user: String,
    password: String,
}

impl ClientCredentials {
    pub fn new(user: String, password: String) -> ClientCredentials {
        ClientCredentials { user, password }
    }
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Drop for ClientCredentials {
    fn drop(&mut self) {
        wipe(&mut self.password);
    }
}

/// Zeroes the string's octets where they are (the same allocation) and leaves it empty.
fn wipe(text: &mut String) {
    let mut octets = std::mem::take(text).into_bytes();
    octets.fill(0);
    std::hint::black_box(&octets);
}

/// Our part of a SCRAM nonce: printable ASCII except `,` (RFC 5802 §7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientNonce(String);

impl ClientNonce {
    /// A nonce from [`CLIENT_NONCE_RANDOM`] octets the caller drew.
    pub fn from_random(random: &[u8; CLIENT_NONCE_RANDOM]) -> ClientNonce {
        ClientNonce(base64::encode(random))
    }

    /// Takes a nonce as it is, e.g. a test vector's; `None` unless printable.
    pub fn parse(text: &str) -> Option<ClientNonce> {
        is_printable(text).then(|| ClientNonce(text.to_string()))
    }
}

/// What the client does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientStep {
    /// Send this (the caller base64-encodes it) as the next line.
    Respond(Vec<u8>),
    /// Run this derivation, then pass its result to [`SaslClient::derived`].
    Derive(ClientDerivation),
    Failed(ClientAuthError),
}

/// Why we gave up on an exchange. The server's refusals are the caller's to report; these
/// are the server's misbehaviour as we see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthError {
    /// A challenge that does not follow the mechanism, or one too many.
    Malformed,
    /// SCRAM: the server's nonce does not extend ours.
    NonceMismatch,
    /// SCRAM: a salt or iteration count outside our bounds.
    Parameters,
    /// SCRAM: the server's signature is wrong, or it said 235 without one: it does not
    /// know the password, so it is not the server we mean to talk to.
    ServerNotVerified,
    /// SCRAM: the server sent `e=` (RFC 5802 §7 server-error).
    ServerError,
}

impl std::fmt::Display for ClientAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientAuthError::Malformed => "malformed challenge",
            ClientAuthError::NonceMismatch => "the server's SCRAM nonce does not extend ours",
            ClientAuthError::Parameters => "SCRAM salt or iteration count out of bounds",
            ClientAuthError::ServerNotVerified => {
                "the server did not prove it knows the password (SCRAM server signature)"
            }
            ClientAuthError::ServerError => "the server reported a SCRAM error",
        })
    }
}

/// SCRAM's expensive step: `Hi(password, salt, i)` (RFC 5802 §2.2), PBKDF2-HMAC-SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientDerivation {
    hash: ScramHash,
    password: Vec<u8>,
    salt: Vec<u8>,
    iterations: NonZeroU32,
}

impl std::fmt::Debug for ClientDerivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientDerivation")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Drop for ClientDerivation {
    fn drop(&mut self) {
        self.password.fill(0);
        std::hint::black_box(&self.password);
    }
}

impl ClientDerivation {
    /// PBKDF2 iterations this costs: at most [`MAX_ITERATIONS`].
    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    /// Pure computation; run it off the executor.
    pub fn run(&self) -> SaltedPassword {
        SaltedPassword(
            self.hash
                .salted_password(&self.password, &self.salt, self.iterations),
        )
    }
}

/// The result of a [`ClientDerivation`].
#[derive(Clone, PartialEq, Eq)]
pub struct SaltedPassword(Vec<u8>);

impl std::fmt::Debug for SaltedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaltedPassword(..)")
    }
}

/// SCRAM's state between messages.
#[derive(Debug)]
enum Scram {
    /// client-first sent; waiting for server-first.
    SentFirst { client_first_bare: String },
    /// Waiting for the salted password of server-first's parameters.
    Deriving {
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    /// client-final sent; the signature the server must send back.
    SentFinal { server_signature: Vec<u8> },
    /// The server's signature checked out; only the 235 is owed.
    Verified,
}

#[derive(Debug)]
enum State {
    Scram(Scram),
    /// PLAIN: everything went with the command.
    PlainSent,
    /// LOGIN: which prompt comes next (0: user name, 1: password, 2: none).
    Login(u8),
    Done,
}

/// One client exchange for one AUTH command.
#[derive(Debug)]
pub struct SaslClient {
    mechanism: ClientMechanism,
    credentials: ClientCredentials,
    nonce: ClientNonce,
    hash: ScramHash,
    state: State,
}

/// RFC 5802 §7 `saslname`: `,` and `=` escaped.
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl SaslClient {
    pub fn new(
        mechanism: ClientMechanism,
        credentials: ClientCredentials,
        nonce: ClientNonce,
    ) -> SaslClient {
        SaslClient {
            mechanism,
            credentials,
            nonce,
            hash: ScramHash::Sha256,
            state: State::Done,
        }
    }

    pub fn mechanism(&self) -> ClientMechanism {
        self.mechanism
    }

    /// The initial response for the AUTH command (RFC 4954 §4), or `None` when the
    /// mechanism waits for the server's first challenge (LOGIN). Call once.
    pub fn initial(&mut self) -> Option<Vec<u8>> {
        match self.mechanism {
            ClientMechanism::ScramSha256 => {
                let client_first_bare = format!(
                    "n={},r={}",
                    escape_name(&self.credentials.user),
                    self.nonce.0
                );
                let message = format!("n,,{client_first_bare}").into_bytes();
                self.state = State::Scram(Scram::SentFirst { client_first_bare });
                Some(message)
            }
            ClientMechanism::Plain => {
                self.state = State::PlainSent;
                let c = &self.credentials;
                // RFC 4616 §2: an empty authzid, NUL, authcid, NUL, passwd.
                const NUL: &[u8] = b"\0";
                Some([NUL, c.user.as_bytes(), NUL, c.password.as_bytes()].concat())
            }
            ClientMechanism::Login => {
                self.state = State::Login(0);
                None
            }
        }
    }

    /// A `334` challenge, decoded.
    pub fn challenge(&mut self, data: &[u8]) -> ClientStep {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Scram(Scram::SentFirst { client_first_bare }) => {
                self.server_first(client_first_bare, data)
            }
            State::Scram(Scram::SentFinal { server_signature }) => {
                self.server_final(&server_signature, data)
            }
            // RFC 4954 has no fixed prompts for LOGIN; servers say "Username:" and
            // "Password:", in that order, and the order is what counts.
            State::Login(0) => {
                self.state = State::Login(1);
                ClientStep::Respond(self.credentials.user.as_bytes().to_vec())
            }
            State::Login(1) => {
                self.state = State::Login(2);
                ClientStep::Respond(self.credentials.password.as_bytes().to_vec())
            }
            _ => ClientStep::Failed(ClientAuthError::Malformed),
        }
    }

    /// The derivation asked for has run: the client-final message to send.
    pub fn derived(&mut self, salted: &SaltedPassword) -> ClientStep {
        let State::Scram(Scram::Deriving {
            client_first_bare,
            server_first,
            nonce,
        }) = std::mem::replace(&mut self.state, State::Done)
        else {
            return ClientStep::Failed(ClientAuthError::Malformed);
        };
        let hash = self.hash;
        // "biws" is base64 of the GS2 header "n,," (no channel binding).
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_key = hash.hmac(&salted.0, b"Client Key");
        let stored_key = hash.digest(&client_key);
        let client_signature = hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hash.hmac(&salted.0, b"Server Key");
        self.state = State::Scram(Scram::SentFinal {
            server_signature: hash.hmac(&server_key, auth_message.as_bytes()),
        });
        ClientStep::Respond(format!("{without_proof},p={}", base64::encode(&proof)).into_bytes())
    }

    /// The server said `235`: whether we take the login as done. SCRAM needs the server's
    /// signature checked first.
    pub fn succeeded(&self) -> Result<(), ClientAuthError> {
        match (&self.state, self.mechanism) {
            (State::Scram(Scram::Verified), _) => Ok(()),
            (_, ClientMechanism::ScramSha256) => Err(ClientAuthError::ServerNotVerified),
            (State::PlainSent, _) | (State::Login(2), _) => Ok(()),
            _ => Err(ClientAuthError::Malformed),
        }
    }

    fn server_first(&mut self, client_first_bare: String, data: &[u8]) -> ClientStep {
        let Some(text) = std::str::from_utf8(data).ok() else {
            return ClientStep::Failed(ClientAuthError::Malformed);
        };
        let mut attributes = text.split(',');
        if text.starts_with("m=") {
            // RFC 5802 §5.1: a mandatory extension we do not know.
            return ClientStep::Failed(ClientAuthError::Malformed);
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (
            attributes.next().and_then(|a| a.strip_prefix("r=")),
            attributes.next().and_then(|a| a.strip_prefix("s=")),
            attributes.next().and_then(|a| a.strip_prefix("i=")),
        ) else {
            return ClientStep::Failed(ClientAuthError::Malformed);
        };
        if nonce.len() > MAX_SERVER_NONCE_CHARS || !is_printable(nonce) {
            return ClientStep::Failed(ClientAuthError::Malformed);
        }
        // The server appends its part to ours; an empty part would be our nonce replayed.
        if nonce.len() <= self.nonce.0.len() || !nonce.starts_with(&self.nonce.0) {
            return ClientStep::Failed(ClientAuthError::NonceMismatch);
        }
        let salt = base64::decode(salt.as_bytes())
            .filter(|s| !s.is_empty() && s.len() <= MAX_SERVER_SALT_LEN);
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|i| *i <= MAX_ITERATIONS)
            .and_then(NonZeroU32::new);
        let (Some(salt), Some(iterations)) = (salt, iterations) else {
            return ClientStep::Failed(ClientAuthError::Parameters);
        };
        self.state = State::Scram(Scram::Deriving {
            client_first_bare,
            server_first: text.to_string(),
            nonce: nonce.to_string(),
        });
        ClientStep::Derive(ClientDerivation {
            hash: self.hash,
            password: self.credentials.password.as_bytes().to_vec(),
            salt,
            iterations,
        })
    }

    fn server_final(&mut self, expected: &[u8], data: &[u8]) -> ClientStep {
        if data.starts_with(b"e=") {
            return ClientStep::Failed(ClientAuthError::ServerError);
        }
        let signature = data
            .strip_prefix(b"v=")
            .map(|v| v.split(|&b| b == b',').next().unwrap_or(v))
            .and_then(base64::decode);
        match signature {
            Some(s) if constant_time_eq(&s, expected) => {
                self.state = State::Scram(Scram::Verified);
                // RFC 4954 §4: the server-final came as a challenge; the answer is empty.
                ClientStep::Respond(Vec::new())
            }
            Some(_) => ClientStep::Failed(ClientAuthError::ServerNotVerified),
            None => ClientStep::Failed(ClientAuthError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::scram::ScramSha256;
    use super::super::testing::Fixture;
    use super::super::{Mechanism, ServerNonce, Step};
    use super::*;

    fn credentials(user: &str, password: &str) -> ClientCredentials {
        ClientCredentials::new(user.into(), password.into())
    }

    fn derive(step: ClientStep) -> SaltedPassword {
        match step {
            ClientStep::Derive(d) => d.run(),
            other => panic!("expected a derivation, got {other:?}"),
        }
    }

    /// RFC 7677 §3, the SCRAM-SHA-256 example, from the client's side.
    #[test]
    fn rfc7677_example() {
        let nonce = ClientNonce::parse("rOprNGfwEbeRWgbNEkqO").unwrap();
        let mut c = SaslClient::new(
            ClientMechanism::ScramSha256,
            credentials("user", "pencil"),
            nonce,
        );
        assert_eq!(
            c.initial().unwrap(),
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec()
        );
        let salted = derive(c.challenge(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ));
        assert_eq!(
            c.derived(&salted),
            ClientStep::Respond(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=".to_vec()
            )
        );
        assert_eq!(
            c.succeeded(),
            Err(ClientAuthError::ServerNotVerified),
            "235 before server-final"
        );
        assert_eq!(
            c.challenge(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            ClientStep::Respond(Vec::new())
        );
        assert_eq!(c.succeeded(), Ok(()));
        // Nothing more is expected.
        assert_eq!(
            c.challenge(b""),
            ClientStep::Failed(ClientAuthError::Malformed)
        );
    }

    fn at_final(password: &str) -> SaslClient {
        let mut c = SaslClient::new(
            ClientMechanism::ScramSha256,
            credentials("user", password),
            ClientNonce::parse("rOprNGfwEbeRWgbNEkqO").unwrap(),
        );
        c.initial();
        let salted = derive(c.challenge(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ));
        c.derived(&salted);
        c
    }

    #[test]
    fn a_wrong_server_signature_is_refused() {
        // A server that does not know the password cannot make the signature: one bit off.
        let mut c = at_final("pencil");
        assert_eq!(
            c.challenge(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            ClientStep::Failed(ClientAuthError::ServerNotVerified)
        );
        assert_eq!(c.succeeded(), Err(ClientAuthError::ServerNotVerified));
        // The right signature for another password is wrong too.
        let mut c = at_final("pen");
        assert_eq!(
            c.challenge(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            ClientStep::Failed(ClientAuthError::ServerNotVerified)
        );
        let mut c = at_final("pencil");
        assert_eq!(
            c.challenge(b"e=invalid-proof"),
            ClientStep::Failed(ClientAuthError::ServerError)
        );
        let mut c = at_final("pencil");
        assert_eq!(
            c.challenge(b"v=not base64"),
            ClientStep::Failed(ClientAuthError::Malformed)
        );
    }

    #[test]
    fn bad_server_first_messages_are_refused() {
        let first = |text: &[u8]| {
            let mut c = SaslClient::new(
                ClientMechanism::ScramSha256,
                credentials("user", "pencil"),
                ClientNonce::parse("abc").unwrap(),
            );
            c.initial();
            match c.challenge(text) {
                ClientStep::Failed(e) => Some(e),
                _ => None,
            }
        };
        use ClientAuthError as E;
        assert_eq!(first(b"r=abcdef,s=c2FsdA==,i=4096"), None);
        for (text, error) in [
            (&b"r=xyzdef,s=c2FsdA==,i=4096"[..], E::NonceMismatch),
            (b"r=abc,s=c2FsdA==,i=4096", E::NonceMismatch),
            (b"r=ab,s=c2FsdA==,i=4096", E::NonceMismatch),
            (b"r=abcdef,s=c2FsdA==,i=0", E::Parameters),
            (b"r=abcdef,s=c2FsdA==,i=1000001", E::Parameters),
            (b"r=abcdef,s=c2FsdA==,i=-1", E::Parameters),
            (b"r=abcdef,s=,i=4096", E::Parameters),
            (b"r=abcdef,s=!!!!,i=4096", E::Parameters),
            (b"m=ext,r=abcdef,s=c2FsdA==,i=4096", E::Malformed),
            (b"r=abcdef,i=4096,s=c2FsdA==", E::Malformed),
            (b"r=abcdef,s=c2FsdA==", E::Malformed),
            (b"r=abc\x01def,s=c2FsdA==,i=4096", E::Malformed),
            (b"\xff", E::Malformed),
            (b"", E::Malformed),
        ] {
            assert_eq!(
                first(text),
                Some(error),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        let long_salt = format!("r=abcdef,s={},i=4096", base64::encode(&[7; 129]));
        assert_eq!(first(long_salt.as_bytes()), Some(E::Parameters));
        let long_nonce = format!("r=abc{},s=c2FsdA==,i=4096", "x".repeat(254));
        assert_eq!(first(long_nonce.as_bytes()), Some(E::Malformed));
    }

    #[test]
    fn names_with_commas_and_equals_signs_are_escaped() {
        let mut c = SaslClient::new(
            ClientMechanism::ScramSha256,
            credentials("a,b=c", "pw"),
            ClientNonce::parse("n0nce").unwrap(),
        );
        assert_eq!(c.initial().unwrap(), b"n,,n=a=2Cb=3Dc,r=n0nce".to_vec());
    }

    /// Our client against our server: the whole exchange, for a right and a wrong
    /// password, with random nonces.
    #[test]
    fn our_client_logs_in_to_our_server() {
        for (password, ok) in [("tanstaaftanstaaf", true), ("wrong", false)] {
            let mut server =
                ScramSha256::new(Fixture::new(), ServerNonce::from_random(&[9; 18]).unwrap());
            let mut client = SaslClient::new(
                ClientMechanism::ScramSha256,
                credentials("tim", password),
                ClientNonce::from_random(&[3; CLIENT_NONCE_RANDOM]),
            );
            let first = base64::encode(&client.initial().unwrap());
            let Step::Challenge(server_first) = server.start(Some(first.as_bytes())) else {
                panic!("no server-first");
            };
            let salted = derive(client.challenge(&server_first));
            let ClientStep::Respond(last) = client.derived(&salted) else {
                panic!("no client-final");
            };
            match server.step(base64::encode(&last).as_bytes()) {
                Step::Success {
                    final_data: Some(v),
                    ..
                } => {
                    assert!(ok);
                    assert_eq!(client.challenge(&v), ClientStep::Respond(Vec::new()));
                    assert_eq!(client.succeeded(), Ok(()));
                }
                Step::Failure(_) => assert!(!ok),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn plain_and_login() {
        let mut c = SaslClient::new(
            ClientMechanism::Plain,
            credentials("tim", "tanstaaftanstaaf"),
            ClientNonce::parse("x").unwrap(),
        );
        // RFC 4616 §4's example, without an authorization identity.
        assert_eq!(c.initial().unwrap(), b"\0tim\0tanstaaftanstaaf".to_vec());
        assert_eq!(c.succeeded(), Ok(()));
        assert_eq!(
            c.challenge(b"more?"),
            ClientStep::Failed(ClientAuthError::Malformed)
        );

        let mut c = SaslClient::new(
            ClientMechanism::Login,
            credentials("tim", "secret"),
            ClientNonce::parse("x").unwrap(),
        );
        assert_eq!(c.initial(), None);
        assert_eq!(c.succeeded(), Err(ClientAuthError::Malformed));
        assert_eq!(
            c.challenge(b"Username:"),
            ClientStep::Respond(b"tim".to_vec())
        );
        assert_eq!(
            c.challenge(b"Password:"),
            ClientStep::Respond(b"secret".to_vec())
        );
        assert_eq!(c.succeeded(), Ok(()));
        assert_eq!(
            c.challenge(b"Again:"),
            ClientStep::Failed(ClientAuthError::Malformed)
        );
    }

    #[test]
    fn the_strongest_offered_mechanism_is_chosen() {
        use ClientMechanism as M;
        assert_eq!(
            M::choose(&[M::Login, M::Plain, M::ScramSha256]),
            Some(M::ScramSha256)
        );
        assert_eq!(M::choose(&[M::Login, M::Plain]), Some(M::Plain));
        assert_eq!(M::choose(&[M::Login]), Some(M::Login));
        assert_eq!(M::choose(&[]), None);
        assert_eq!(M::parse("scram-sha-256"), Some(M::ScramSha256));
        assert_eq!(M::parse("CRAM-MD5"), None);
    }

    /// Mutated server-first and server-final messages never panic the client and never
    /// pass for the real server's signature.
    #[test]
    fn fuzzed_challenges_are_refused_without_panic() {
        use super::super::testing::mutate;
        let mut prng = crate::proto::dns::rng::Prng::from_seed(7677);
        let first: &[u8] =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1";
        let last: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
        for _ in 0..2000 {
            let mut c = SaslClient::new(
                ClientMechanism::ScramSha256,
                credentials("user", "pencil"),
                ClientNonce::parse("rOprNGfwEbeRWgbNEkqO").unwrap(),
            );
            c.initial();
            let mutated = mutate(&mut prng, first);
            if let ClientStep::Derive(d) = c.challenge(&mutated) {
                // Cheap parameters only: a mutation may raise the iteration count.
                if d.iterations() > 10 {
                    continue;
                }
                c.derived(&d.run());
                let mutated = mutate(&mut prng, last);
                if c.challenge(&mutated) == ClientStep::Respond(Vec::new()) {
                    panic!("accepted {:?}", String::from_utf8_lossy(&mutated));
                }
            }
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = SaslClient::new(
            ClientMechanism::Plain,
            credentials("tim", "hunter2"),
            ClientNonce::parse("x").unwrap(),
        );
        let shown = format!("{c:?}");
        assert!(
            shown.contains("tim") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
