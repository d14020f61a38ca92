//! The SCRAM-SHA-256 mechanism, server side (RFC 5802, RFC 7677), without channel binding.
//!
//! Exchange: client-first (GS2 header + `n=user,r=cnonce`), server-first
//! (`r=cnonce+snonce,s=salt,i=iterations`), client-final (`c=...,r=...,p=proof`),
//! server-final (`v=signature`, returned as the `final_data` of [`Step::Success`]).
//!
//! The GS2 flag `n` (client does not support channel binding) and `y` (client supports it
//! but thinks we do not; we advertise no `-PLUS` variant, so that is true) are accepted;
//! `p=` (channel binding required) is refused as [`AuthError::Malformed`], since we never
//! offered it. The `m=` mandatory extension is refused (RFC 5802 §5.1). An authzid that
//! differs from the user is refused (see `authorize` in the module root).
//!
//! An unknown user gets a server-first message like anyone else's, with a salt derived
//! from the name, so the exchange does not reveal which users exist; it fails at the proof.

use super::{
    AuthError, Credentials, MAX_FIELD_LEN, Mechanism, ScramHash, ScramSecret, Step, authorize,
    base64, constant_time_eq, decode_initial, decode_response,
};

/// Shortest random input for a server nonce: 16 octets (128 bits), encoded as 24 base64
/// characters. RFC 5802 §5.1 asks for a nonce that is "sufficiently random".
pub const MIN_NONCE_RANDOM: usize = 16;
/// Longest server nonce we send: 128 characters (caller input, not peer input).
pub const MAX_SERVER_NONCE_LEN: usize = 128;

/// The server's part of the nonce: printable ASCII except `,` (RFC 5802 §7 `printable`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerNonce(String);

pub(super) fn is_printable(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ServerNonce {
    /// Builds a nonce from caller-drawn random octets (base64, so printable). `None` when
    /// fewer than [`MIN_NONCE_RANDOM`] octets or more than fit [`MAX_SERVER_NONCE_LEN`].
    pub fn from_random(random: &[u8]) -> Option<ServerNonce> {
        if random.len() < MIN_NONCE_RANDOM || random.len() > MAX_SERVER_NONCE_LEN / 4 * 3 {
            return None;
        }
        Some(ServerNonce(base64::encode(random)))
    }

    /// Takes a nonce as it is, e.g. a test vector's. `None` unless 1 to
    /// [`MAX_SERVER_NONCE_LEN`] printable characters.
    pub fn parse(text: &str) -> Option<ServerNonce> {
        (is_printable(text) && text.len() <= MAX_SERVER_NONCE_LEN)
            .then(|| ServerNonce(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything kept between server-first and client-final. Worst case: about twice
/// [`super::MAX_RESPONSE_LEN`] (the client-first message and the nonce it carries).
struct Pending {
    gs2_header: String,
    authzid: Option<String>,
    user: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    secret: ScramSecret,
}

enum State {
    Fresh,
    AwaitClientFirst,
    AwaitClientFinal(Box<Pending>),
    Done,
}

/// A SCRAM-SHA-256 exchange.
pub struct ScramSha256<C: Credentials> {
    credentials: C,
    hash: ScramHash,
    server_nonce: ServerNonce,
    state: State,
    /// The user the client named, kept after the exchange.
    named: Option<String>,
}

/// The checked client-first message.
#[derive(Debug, PartialEq, Eq)]
struct ClientFirst {
    gs2_header: String,
    authzid: Option<String>,
    user: String,
    client_nonce: String,
    bare: String,
}

/// RFC 5802 §7 `saslname`: `=2C` stands for `,` and `=3D` for `=`; nothing else may
/// follow `=`. Not empty, at most [`MAX_FIELD_LEN`] octets once decoded.
fn sasl_name(raw: &str) -> Result<String, AuthError> {
    /// What may follow `=`, and what it stands for.
    const ESCAPES: [(&str, char); 2] = [("2C", ','), ("3D", '=')];
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((plain, escaped)) = rest.split_once('=') {
        out.push_str(plain);
        let (c, after) = ESCAPES
            .iter()
            .find_map(|&(code, c)| escaped.strip_prefix(code).map(|after| (c, after)))
            .ok_or(AuthError::Malformed)?;
        out.push(c);
        rest = after;
    }
    out.push_str(rest);
    if out.is_empty() || out.len() > MAX_FIELD_LEN || out.contains('\0') {
        return Err(AuthError::Malformed);
    }
    Ok(out)
}

/// An optional extension attribute `x=value` after the mandatory ones: we ignore them
/// (RFC 5802 §5), but they must have the attribute shape.
fn is_extension(attribute: &str) -> bool {
    matches!(attribute.as_bytes(), [name, b'=', ..] if name.is_ascii_alphabetic())
}

fn parse_client_first(message: &[u8]) -> Result<ClientFirst, AuthError> {
    let text = std::str::from_utf8(message).map_err(|_| AuthError::Malformed)?;
    // Channel binding required (`p=`): never offered, so refused.
    let after_flag = text
        .strip_prefix("n,")
        .or_else(|| text.strip_prefix("y,"))
        .ok_or(AuthError::Malformed)?;
    let (authzid, bare) = after_flag.split_once(',').ok_or(AuthError::Malformed)?;
    let authzid = match authzid {
        "" => None,
        field => Some(sasl_name(
            field.strip_prefix("a=").ok_or(AuthError::Malformed)?,
        )?),
    };
    let gs2_header = text.strip_suffix(bare).ok_or(AuthError::Malformed)?;
    let mut attributes = bare.split(',');
    let user = attributes
        .next()
        .and_then(|a| a.strip_prefix("n="))
        .ok_or(AuthError::Malformed)?;
    let user = sasl_name(user)?;
    let client_nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|nonce| is_printable(nonce))
        .ok_or(AuthError::Malformed)?;
    if !attributes.all(is_extension) {
        return Err(AuthError::Malformed);
    }
    Ok(ClientFirst {
        gs2_header: gs2_header.to_string(),
        authzid,
        user,
        client_nonce: client_nonce.to_string(),
        bare: bare.to_string(),
    })
}

/// The checked client-final message.
#[derive(Debug, PartialEq, Eq)]
struct ClientFinal {
    channel_binding: Vec<u8>,
    nonce: String,
    without_proof: String,
    proof: Vec<u8>,
}

fn parse_client_final(message: &[u8]) -> Result<ClientFinal, AuthError> {
    let text = std::str::from_utf8(message).map_err(|_| AuthError::Malformed)?;
    let (without_proof, proof) = text.rsplit_once(',').ok_or(AuthError::Malformed)?;
    let proof = proof.strip_prefix("p=").ok_or(AuthError::Malformed)?;
    let proof = base64::decode(proof.as_bytes()).ok_or(AuthError::Malformed)?;
    let mut attributes = without_proof.split(',');
    let channel_binding = attributes
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .and_then(|c| base64::decode(c.as_bytes()))
        .ok_or(AuthError::Malformed)?;
    let nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|nonce| is_printable(nonce))
        .ok_or(AuthError::Malformed)?;
    if !attributes.all(is_extension) {
        return Err(AuthError::Malformed);
    }
    Ok(ClientFinal {
        channel_binding,
        nonce: nonce.to_string(),
        without_proof: without_proof.to_string(),
        proof,
    })
}

impl<C: Credentials> ScramSha256<C> {
    pub fn new(credentials: C, server_nonce: ServerNonce) -> ScramSha256<C> {
        ScramSha256::with_hash(credentials, server_nonce, ScramHash::Sha256)
    }

    pub(crate) fn with_hash(
        credentials: C,
        server_nonce: ServerNonce,
        hash: ScramHash,
    ) -> ScramSha256<C> {
        ScramSha256 {
            credentials,
            hash,
            server_nonce,
            state: State::Fresh,
            named: None,
        }
    }

    fn fail(&mut self, error: AuthError) -> Step {
        self.state = State::Done;
        Step::Failure(error)
    }

    fn client_first(&mut self, decoded: Result<Vec<u8>, AuthError>) -> Step {
        let first = match decoded.and_then(|raw| parse_client_first(&raw)) {
            Ok(first) => first,
            Err(error) => return self.fail(error),
        };
        self.named = Some(first.user.clone());
        // An unknown user gets its stand-in: the same salt length and iterations as
        // real users, keys no proof matches.
        let secret = match self.credentials.scram(&first.user) {
            Some(secret) => secret,
            None => self.credentials.stand_in(&first.user),
        };
        let nonce = format!("{}{}", first.client_nonce, self.server_nonce.as_str());
        let server_first = format!(
            "r={nonce},s={},i={}",
            base64::encode(secret.salt()),
            secret.iterations()
        );
        let challenge = server_first.clone().into_bytes();
        self.state = State::AwaitClientFinal(Box::new(Pending {
            gs2_header: first.gs2_header,
            authzid: first.authzid,
            user: first.user,
            client_first_bare: first.bare,
            server_first,
            nonce,
            secret,
        }));
        Step::Challenge(challenge)
    }

    fn client_final(&mut self, pending: Pending, response: &[u8]) -> Step {
        let last = match decode_response(response).and_then(|raw| parse_client_final(&raw)) {
            Ok(last) => last,
            Err(error) => return self.fail(error),
        };
        self.state = State::Done;
        if last.channel_binding != pending.gs2_header.as_bytes() || last.nonce != pending.nonce {
            return Step::Failure(AuthError::BadCredentials);
        }
        let auth_message = format!(
            "{},{},{}",
            pending.client_first_bare, pending.server_first, last.without_proof
        );
        let hash = self.hash;
        let client_signature = hash.hmac(&pending.secret.stored_key, auth_message.as_bytes());
        if last.proof.len() != client_signature.len() {
            return Step::Failure(AuthError::BadCredentials);
        }
        let client_key: Vec<u8> = last
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(&hash.digest(&client_key), &pending.secret.stored_key) {
            return Step::Failure(AuthError::BadCredentials);
        }
        let server_signature = hash.hmac(&pending.secret.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", base64::encode(&server_signature)).into_bytes();
        match authorize(pending.authzid, pending.user) {
            Step::Success { authzid, user, .. } => Step::Success {
                authzid,
                user,
                final_data: Some(server_final),
            },
            refused => refused,
        }
    }
}

impl<C: Credentials> Mechanism for ScramSha256<C> {
    fn start(&mut self, initial: Option<&[u8]>) -> Step {
        if !matches!(self.state, State::Fresh) {
            return self.fail(AuthError::Malformed);
        }
        match initial {
            None => {
                self.state = State::AwaitClientFirst;
                Step::Challenge(Vec::new())
            }
            Some(text) => self.client_first(decode_initial(text)),
        }
    }

    fn step(&mut self, response: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitClientFirst => self.client_first(decode_response(response)),
            State::AwaitClientFinal(pending) => self.client_final(*pending, response),
            State::Fresh | State::Done => self.fail(AuthError::Malformed),
        }
    }

    fn user(&self) -> Option<&str> {
        self.named.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Fixture, b64, fuzz};
    use super::super::{CramMd5Secret, ScramSecret};
    use super::*;

    /// One user `user`, password `pencil`, with the RFC's salt: the RFC 7677 (or, with
    /// SHA-1, RFC 5802) fixture.
    struct Rfc {
        secret: ScramSecret,
    }

    impl Rfc {
        fn new(hash: ScramHash, salt_base64: &str) -> Rfc {
            let salt = base64::decode(salt_base64.as_bytes()).unwrap();
            Rfc {
                secret: ScramSecret::derive_with(hash, b"pencil", &salt, 4096),
            }
        }
    }

    impl Credentials for Rfc {
        fn scram(&self, user: &str) -> Option<ScramSecret> {
            (user == "user").then(|| self.secret.clone())
        }
        fn cram_md5(&self, _: &str) -> Option<CramMd5Secret> {
            None
        }
        fn external(&self, _: &str) -> Option<String> {
            None
        }
    }

    const RFC7677_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC7677_CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC7677_SERVER_FIRST: &[u8] =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC7677_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC7677_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc7677() -> Rfc {
        Rfc::new(ScramHash::Sha256, "W22ZaJ0SNY7soEsUEjb6gQ==")
    }

    fn rfc7677_server(rfc: &Rfc) -> ScramSha256<&Rfc> {
        ScramSha256::new(rfc, ServerNonce::parse(RFC7677_SERVER_NONCE).unwrap())
    }

    /// RFC 7677 §3, byte for byte.
    #[test]
    fn rfc7677_exchange() {
        let rfc = rfc7677();
        let mut scram = rfc7677_server(&rfc);
        assert_eq!(
            scram.start(Some(&b64(RFC7677_CLIENT_FIRST))),
            Step::Challenge(RFC7677_SERVER_FIRST.to_vec())
        );
        assert_eq!(
            scram.step(&b64(RFC7677_CLIENT_FINAL)),
            Step::Success {
                authzid: None,
                user: "user".into(),
                final_data: Some(RFC7677_SERVER_FINAL.to_vec())
            }
        );
        assert_eq!(scram.step(b""), Step::Failure(AuthError::Malformed));
    }

    /// RFC 5802 §5, with SHA-1 under the same code.
    #[test]
    fn rfc5802_exchange_with_sha1() {
        let rfc = Rfc::new(ScramHash::Sha1, "QSXCR+Q6sek8bf92");
        let nonce = ServerNonce::parse("3rfcNHYJY1ZVvWVs7j").unwrap();
        let mut scram = ScramSha256::with_hash(&rfc, nonce, ScramHash::Sha1);
        assert_eq!(scram.start(None), Step::Challenge(Vec::new()));
        assert_eq!(
            scram.step(&b64(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")),
            Step::Challenge(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096".to_vec()
            )
        );
        assert_eq!(
            scram.step(&b64(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
            )),
            Step::Success {
                authzid: None,
                user: "user".into(),
                final_data: Some(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec())
            }
        );
    }

    fn final_after(scram: &mut ScramSha256<&Rfc>, first: &[u8], last: &[u8]) -> Step {
        assert!(matches!(scram.start(Some(&b64(first))), Step::Challenge(_)));
        scram.step(&b64(last))
    }

    #[test]
    fn wrong_proof() {
        let rfc = rfc7677();
        let mut scram = rfc7677_server(&rfc);
        let last = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=";
        assert_eq!(
            final_after(&mut scram, RFC7677_CLIENT_FIRST, last),
            Step::Failure(AuthError::BadCredentials)
        );
        // A proof of the wrong length.
        let mut scram = rfc7677_server(&rfc);
        let last = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzb";
        assert_eq!(
            final_after(&mut scram, RFC7677_CLIENT_FIRST, last),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn nonce_and_channel_binding_must_match() {
        let rfc = rfc7677();
        let mut scram = rfc7677_server(&rfc);
        let last = b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            final_after(&mut scram, RFC7677_CLIENT_FIRST, last),
            Step::Failure(AuthError::BadCredentials)
        );
        // c= says "y,," but the client-first said "n,,".
        let mut scram = rfc7677_server(&rfc);
        let last = b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            final_after(&mut scram, RFC7677_CLIENT_FIRST, last),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn gs2_flags() {
        let rfc = rfc7677();
        // "y,,": accepted, and c= must then carry "y,,".
        let mut scram = rfc7677_server(&rfc);
        let step = final_after(
            &mut scram,
            b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        );
        // The proof is wrong (the RFC's proof covers "n,,"), but the exchange got there.
        assert_eq!(step, Step::Failure(AuthError::BadCredentials));
        // "p=": refused at once.
        let mut scram = rfc7677_server(&rfc);
        assert_eq!(
            scram.start(Some(&b64(b"p=tls-unique,,n=user,r=rOprNGfwEbeRWgbNEkqO"))),
            Step::Failure(AuthError::Malformed)
        );
    }

    #[test]
    fn unknown_user_gets_a_plausible_server_first() {
        let rfc = rfc7677();
        let mut scram = rfc7677_server(&rfc);
        let Step::Challenge(first) = scram.start(Some(&b64(b"n,,n=nobody,r=abc"))) else {
            panic!("expected server-first");
        };
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=abc%hvY"), "{first}");
        assert!(first.ends_with(",i=4096"), "{first}");
        let last = format!(
            "c=biws,r=abc{RFC7677_SERVER_NONCE},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            scram.step(&b64(last.as_bytes())),
            Step::Failure(AuthError::BadCredentials)
        );
        // Same name, same salt.
        let mut again = rfc7677_server(&rfc);
        assert_eq!(
            again.start(Some(&b64(b"n,,n=nobody,r=abc"))),
            Step::Challenge(first.into_bytes())
        );
    }

    #[test]
    fn an_unknown_user_is_offered_the_parameters_of_known_ones() {
        // A database whose users have 8192 iterations offers an unknown user 8192 too,
        // and a salt of the same length that nobody can compute.
        let mut db = crate::proto::sasl::UserDb::new();
        db.add("tim", "pw", 8192, false, b"0123456789abcdef")
            .unwrap();
        let lookup = crate::proto::sasl::users::UserLookup::new(std::rc::Rc::new(db), [9; 32]);
        let first = |user: &str| {
            let mut scram = ScramSha256::new(&lookup, ServerNonce::parse("s").unwrap());
            let Step::Challenge(first) =
                scram.start(Some(&b64(format!("n,,n={user},r=c").as_bytes())))
            else {
                panic!("expected server-first");
            };
            let text = String::from_utf8(first).unwrap();
            let (salt, iterations) = text.split_once(",s=").unwrap().1.split_once(",i=").unwrap();
            (
                base64::decode(salt.as_bytes()).unwrap().len(),
                iterations.to_string(),
            )
        };
        assert_eq!(first("tim"), first("nobody"));
        assert_eq!(first("nobody"), (16, "8192".to_string()));
    }

    #[test]
    fn authzid_rules_and_escapes() {
        assert_eq!(
            parse_client_first(b"n,a=us=3Der,n=us=2Cer,r=x").unwrap(),
            ClientFirst {
                gs2_header: "n,a=us=3Der,".into(),
                authzid: Some("us=er".into()),
                user: "us,er".into(),
                client_nonce: "x".into(),
                bare: "n=us=2Cer,r=x".into(),
            }
        );
        let rfc = rfc7677();
        let mut scram = rfc7677_server(&rfc);
        let first = b"n,a=admin,n=user,r=rOprNGfwEbeRWgbNEkqO";
        let Step::Challenge(_) = scram.start(Some(&b64(first))) else {
            panic!("expected server-first");
        };
        // Build a correct proof for this exchange from the RFC's password.
        let server_first = format!(
            "r=rOprNGfwEbeRWgbNEkqO{RFC7677_SERVER_NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let without_proof = format!(
            "c={},r=rOprNGfwEbeRWgbNEkqO{RFC7677_SERVER_NONCE}",
            base64::encode(b"n,a=admin,")
        );
        let auth_message = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},{without_proof}");
        let salt = base64::decode(b"W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = ScramHash::Sha256.salted_password(
            b"pencil",
            &salt,
            std::num::NonZeroU32::new(4096).unwrap(),
        );
        let client_key = ScramHash::Sha256.hmac(&salted, b"Client Key");
        let stored_key = ScramHash::Sha256.digest(&client_key);
        let signature = ScramHash::Sha256.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let last = format!("{without_proof},p={}", base64::encode(&proof));
        assert_eq!(
            scram.step(&b64(last.as_bytes())),
            Step::Failure(AuthError::BadCredentials)
        );
    }

    #[test]
    fn cancel_malformed_overlong_utf8() {
        let rfc = rfc7677();
        for first in [
            &b"n,,m=ext,n=user,r=abc"[..],
            b"n,,n=user",
            b"n,,n=,r=abc",
            b"n,,n=us=41r,r=abc",
            b"n,,n=user,r=a,bc",
            b"n,,n=us\xffer,r=abc",
            b"x,,n=user,r=abc",
            b"n,n=user,r=abc",
            b"n,b=x,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"",
        ] {
            let mut scram = rfc7677_server(&rfc);
            assert_eq!(
                scram.start(Some(&b64(first))),
                Step::Failure(AuthError::Malformed),
                "{first:?}"
            );
        }
        // Extensions are ignored; non-ASCII user names are fine.
        let mut scram = rfc7677_server(&rfc);
        assert!(matches!(
            scram.start(Some(&b64("n,,n=üser,r=abc,x=ext".as_bytes()))),
            Step::Challenge(_)
        ));
        for last in [
            &b"*"[..],
            b"!!!!",
            &vec![b'A'; crate::proto::sasl::MAX_RESPONSE_LEN + 4],
        ] {
            let mut scram = rfc7677_server(&rfc);
            scram.start(Some(&b64(RFC7677_CLIENT_FIRST)));
            let expected = match last {
                b"*" => AuthError::Cancelled,
                b"!!!!" => AuthError::Malformed,
                _ => AuthError::TooLong,
            };
            assert_eq!(scram.step(last), Step::Failure(expected));
        }
        for last in [
            &b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"[..],
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzb",
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHz",
        ] {
            let mut scram = rfc7677_server(&rfc);
            assert_eq!(
                final_after(&mut scram, RFC7677_CLIENT_FIRST, last),
                Step::Failure(AuthError::Malformed)
            );
        }
    }

    #[test]
    fn server_nonces() {
        assert_eq!(ServerNonce::from_random(&[0; 15]), None);
        assert_eq!(
            ServerNonce::from_random(&[0; 16]).unwrap().as_str(),
            "AAAAAAAAAAAAAAAAAAAAAA=="
        );
        assert_eq!(ServerNonce::parse("a,b"), None);
        assert_eq!(ServerNonce::parse(""), None);
        assert_eq!(ServerNonce::parse("a b"), None);
    }

    #[test]
    fn fuzz_decoder() {
        let rfc = rfc7677();
        let successes = fuzz(
            7677,
            10_000,
            || rfc7677_server(&rfc),
            &[RFC7677_CLIENT_FIRST, RFC7677_CLIENT_FINAL],
        );
        assert!(successes > 0 && successes < 10_000);
        // The fixture with an unknown-user path too.
        let fixture = Fixture::new();
        fuzz(
            5802,
            200,
            || ScramSha256::new(&fixture, ServerNonce::parse("srv").unwrap()),
            &[b"n,,n=tim,r=abc", b"c=biws,r=abcsrv,p=AAAA"],
        );
    }
}
