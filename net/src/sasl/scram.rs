//! SCRAM (RFC 5802) with SHA-256 and SHA-512 (RFC 7677), the server's side, as Kafka speaks it:
//! no channel binding (`n,,`, or `y,,`, whose `c=` is then `eSws`), an authorization id only if
//! it names the user itself, no extensions but an unset `tokenauth` (Ferrite has no delegation
//! tokens).
//!
//! A credential is derived once, where the password is known (the client of
//! AlterUserScramCredentials sends `SaltedPassword`; `ferrite user set` derives it offline);
//! the broker keeps only `StoredKey` and `ServerKey` ([`engine::credentials`]). A proof is
//! checked by recomputing `StoredKey` from it and comparing in constant time; PLAIN's password
//! is checked the same way against the same credential ([`check_password`]).
//!
//! As Kafka's `ScramSaslServer`, the final message's nonce need only end with the one the server
//! sent: librdkafka up to 2.1 (Debian 12's kcat) repeats its own nonce in front of it.
//!
//! The exchange is a state machine fed the client's messages ([`ScramExchange`]); the server's
//! nonce comes in from outside (the caller's CSPRNG), so the RFC's test vector replays exactly.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use engine::credentials::{ScramCredential, ScramMechanism};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Kafka's bounds on a credential's iterations (`ScramMechanism.minIterations`, and the
/// controller's `maxIterations`): fewer make guessing passwords from a stolen credential cheap,
/// more make every PLAIN login and every credential change slow.
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;

/// Salt bytes of credentials made here (`ferrite user set`), as Kafka's `ScramFormatter`.
pub const SALT_BYTES: usize = 32;

/// The longest user name a SCRAM message may carry (bytes after decoding).
pub const USER_NAME_BYTES_MAX: usize = 1024;

/// Why an exchange failed. The client is told only that authentication failed; these say why
/// in the broker's log, each with the RFC's `server-error-value` where one fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("e=invalid-encoding: {0}")]
    InvalidEncoding(&'static str),
    #[error("e=channel-bindings-not-supported")]
    ChannelBindingNotSupported,
    #[error("e=invalid-username-encoding")]
    InvalidUserName,
    #[error("e=unknown-user")]
    UnknownUser,
    #[error("e=other-error: an authorization id other than the user")]
    AuthorizationIdNotUser,
    #[error("e=extensions-not-supported: delegation tokens are not supported")]
    TokenAuthNotSupported,
    #[error("e=channel-binding-not-supported: the channel binding changed")]
    ChannelBindingChanged,
    #[error("e=other-error: the nonce is not the one the server sent")]
    NonceMismatch,
    #[error("e=invalid-proof")]
    InvalidProof,
}

/// The derived keys of one password for one mechanism and salt.
pub fn credential_from_salted_password(
    mechanism: ScramMechanism,
    salt: &[u8],
    iterations: u32,
    salted_password: &[u8],
) -> ScramCredential {
    let client_key = hmac(mechanism, salted_password, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        iterations,
        stored_key: hash(mechanism, &client_key),
        server_key: hmac(mechanism, salted_password, b"Server Key"),
    }
}

/// `SaltedPassword := Hi(Normalize(password), salt, i)`. Passwords are taken as their UTF-8
/// bytes, as Kafka's `ScramFormatter` does (no SASLprep).
pub fn salted_password(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => {
            let mut out = vec![0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
            out
        }
        ScramMechanism::Sha512 => {
            let mut out = vec![0u8; 64];
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
            out
        }
    }
}

/// Whether `password` is the one `credential` was made from (PLAIN): its `StoredKey`
/// recomputed with the credential's salt and iterations, compared in constant time.
pub fn check_password(
    mechanism: ScramMechanism,
    credential: &ScramCredential,
    password: &[u8],
) -> bool {
    let salted = salted_password(mechanism, password, &credential.salt, credential.iterations);
    let derived = credential_from_salted_password(
        mechanism,
        &credential.salt,
        credential.iterations,
        &salted,
    );
    bool::from(derived.stored_key.ct_eq(&credential.stored_key))
}

fn hmac(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        ScramMechanism::Sha512 => {
            let mut mac =
                Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(mechanism: ScramMechanism, data: &[u8]) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
        ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// What the client's first message said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name, `=2C` and `=3D` decoded.
    pub user: String,
    /// The GS2 header as sent (`n,,`), which the final message's `c=` must repeat.
    gs2_header: String,
    client_nonce: String,
    /// `client-first-message-bare`, part of the AuthMessage.
    bare: String,
}

impl ClientFirst {
    pub fn parse(message: &[u8]) -> Result<ClientFirst, ScramError> {
        let message = std::str::from_utf8(message)
            .map_err(|_| ScramError::InvalidEncoding("the first message is not UTF-8"))?;
        let mut parts = message.splitn(3, ',');
        let binding = parts.next().unwrap_or_default();
        let authorization_id = parts
            .next()
            .ok_or(ScramError::InvalidEncoding("no GS2 header"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::InvalidEncoding("no client-first-message-bare"))?;
        match binding {
            "n" | "y" => {}
            binding if binding.starts_with("p=") => {
                return Err(ScramError::ChannelBindingNotSupported)
            }
            _ => return Err(ScramError::InvalidEncoding("a GS2 header flag")),
        }
        let mut attributes = bare.split(',');
        let user = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("n="))
            .ok_or(ScramError::InvalidEncoding("no user name (n=)"))?;
        let user = decode_sasl_name(user)?;
        let client_nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("r="))
            .filter(|nonce| is_printable(nonce))
            .ok_or(ScramError::InvalidEncoding("no client nonce (r=)"))?;
        for extension in attributes {
            if extension == "tokenauth=true" {
                return Err(ScramError::TokenAuthNotSupported);
            }
        }
        if let Some(authorization_id) = authorization_id.strip_prefix("a=") {
            if decode_sasl_name(authorization_id)? != user {
                return Err(ScramError::AuthorizationIdNotUser);
            }
        } else if !authorization_id.is_empty() {
            return Err(ScramError::InvalidEncoding("the authorization id"));
        }
        Ok(ClientFirst {
            user,
            gs2_header: format!("{binding},{authorization_id},"),
            client_nonce: client_nonce.to_owned(),
            bare: bare.to_owned(),
        })
    }
}

/// `printable` of RFC 5802: what a nonce may hold (no comma).
fn is_printable(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| (0x21..=0x7e).contains(&byte) && byte != b',')
}

/// A `saslname` (`=2C` for a comma, `=3D` for `=`, no other `=`).
fn decode_sasl_name(name: &str) -> Result<String, ScramError> {
    if name.is_empty() || name.len() > USER_NAME_BYTES_MAX {
        return Err(ScramError::InvalidUserName);
    }
    let mut decoded = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        decoded.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => decoded.push(','),
            Some("=3D") => decoded.push('='),
            _ => return Err(ScramError::InvalidUserName),
        }
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    Ok(decoded)
}

/// The server's side of one SCRAM exchange, after the client's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramExchange {
    mechanism: ScramMechanism,
    client_first: ClientFirst,
    credential: ScramCredential,
    /// `client-nonce` followed by the server's.
    nonce: String,
    server_first: String,
}

impl ScramExchange {
    /// Answers `client_first` for a user whose credential is `credential` (`None`: unknown, the
    /// exchange fails as Kafka's does), with `server_nonce` (printable, from a CSPRNG). Returns
    /// the exchange and the server's first message.
    pub fn start(
        mechanism: ScramMechanism,
        client_first: ClientFirst,
        credential: Option<ScramCredential>,
        server_nonce: &str,
    ) -> Result<(ScramExchange, Vec<u8>), ScramError> {
        let credential = credential.ok_or(ScramError::UnknownUser)?;
        debug_assert!(is_printable(server_nonce));
        let nonce = format!("{}{server_nonce}", client_first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let first = server_first.clone().into_bytes();
        Ok((
            ScramExchange {
                mechanism,
                client_first,
                credential,
                nonce,
                server_first,
            },
            first,
        ))
    }

    pub fn user(&self) -> &str {
        &self.client_first.user
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Checks the client's final message; returns the server's final message (`v=`).
    pub fn finish(&self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let message = std::str::from_utf8(message)
            .map_err(|_| ScramError::InvalidEncoding("the final message is not UTF-8"))?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or(ScramError::InvalidEncoding("no proof (p=)"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("c="))
            .ok_or(ScramError::InvalidEncoding("no channel binding (c=)"))?;
        let binding = BASE64
            .decode(binding)
            .map_err(|_| ScramError::InvalidEncoding("the channel binding's base64"))?;
        if binding != self.client_first.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingChanged);
        }
        let nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("r="))
            .ok_or(ScramError::InvalidEncoding("no nonce (r=)"))?;
        // Kafka accepts a nonce that ends with the one it sent (`endsWith`), and librdkafka
        // before 2.2 sends its own nonce twice; the server's fresh part still guards replays.
        if !nonce.ends_with(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::InvalidEncoding("the proof's base64"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first.bare, self.server_first
        );
        let client_signature = hmac(
            self.mechanism,
            &self.credential.stored_key,
            auth_message.as_bytes(),
        );
        if proof.len() != client_signature.len() {
            return Err(ScramError::InvalidProof);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(proof, signature)| proof ^ signature)
            .collect();
        let stored_key = hash(self.mechanism, &client_key);
        if !bool::from(stored_key.ct_eq(&self.credential.stored_key)) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(
            self.mechanism,
            &self.credential.server_key,
            auth_message.as_bytes(),
        );
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

/// Characters of a server nonce made here: letters and digits only, as Kafka's
/// (`ScramFormatter.secureRandomString`); librdkafka 2.0 refused nonces with base64's `+` and `/`.
const NONCE_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const NONCE_CHARACTERS: usize = 32;

/// A server nonce: 32 letters and digits from the operating system's CSPRNG (about 190 bits).
pub fn server_nonce() -> Result<String, getrandom::Error> {
    let mut nonce = String::with_capacity(NONCE_CHARACTERS);
    // Bytes at or above the largest multiple of the alphabet's size are drawn again, so every
    // character is equally likely.
    let unbiased_below = (256 / NONCE_ALPHABET.len() * NONCE_ALPHABET.len()) as u8;
    let mut bytes = [0u8; 64];
    while nonce.len() < NONCE_CHARACTERS {
        getrandom::getrandom(&mut bytes)?;
        nonce.extend(
            bytes
                .iter()
                .filter(|&&byte| byte < unbiased_below)
                .map(|&byte| char::from(NONCE_ALPHABET[usize::from(byte) % NONCE_ALPHABET.len()]))
                .take(NONCE_CHARACTERS - nonce.len()),
        );
    }
    Ok(nonce)
}

/// A new salt from the operating system's CSPRNG.
pub fn new_salt() -> Result<Vec<u8>, getrandom::Error> {
    let mut salt = vec![0u8; SALT_BYTES];
    getrandom::getrandom(&mut salt)?;
    Ok(salt)
}

/// A SCRAM client for tests: what librdkafka and the Java client compute.
#[cfg(test)]
pub(crate) mod test_client {
    use super::*;

    pub(crate) struct ScramClient {
        mechanism: ScramMechanism,
        bare: String,
        password: Vec<u8>,
    }

    impl ScramClient {
        pub(crate) fn new(mechanism: ScramMechanism, user: &str, password: &[u8]) -> Self {
            ScramClient {
                mechanism,
                bare: format!("n={user},r=clientnonce"),
                password: password.to_vec(),
            }
        }

        pub(crate) fn first(&self) -> Vec<u8> {
            format!("n,,{}", self.bare).into_bytes()
        }

        /// The final message answering `server_first`, and the server's final message it
        /// expects.
        pub(crate) fn finish(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
            let mechanism = self.mechanism;
            let server_first = std::str::from_utf8(server_first).unwrap();
            let mut attributes = server_first.split(',');
            let nonce = attributes.next().unwrap().strip_prefix("r=").unwrap();
            let salt = BASE64
                .decode(attributes.next().unwrap().strip_prefix("s=").unwrap())
                .unwrap();
            let iterations = attributes.next().unwrap()[2..].parse().unwrap();
            let salted = salted_password(mechanism, &self.password, &salt, iterations);
            let without_proof = format!("c=biws,r={nonce}");
            let auth_message = format!("{},{server_first},{without_proof}", self.bare);
            let client_key = hmac(mechanism, &salted, b"Client Key");
            let signature = hmac(
                mechanism,
                &hash(mechanism, &client_key),
                auth_message.as_bytes(),
            );
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(a, b)| a ^ b)
                .collect();
            let server_key = hmac(mechanism, &salted, b"Server Key");
            let expected = hmac(mechanism, &server_key, auth_message.as_bytes());
            (
                format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes(),
                format!("v={}", BASE64.encode(expected)).into_bytes(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil", SCRAM-SHA-256, 4096 iterations.
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> ScramCredential {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        credential_from_salted_password(ScramMechanism::Sha256, &salt, 4096, &salted)
    }

    fn rfc_exchange() -> ScramExchange {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        let (exchange, server_first) = ScramExchange::start(
            ScramMechanism::Sha256,
            first,
            Some(rfc_credential()),
            SERVER_NONCE,
        )
        .unwrap();
        assert_eq!(String::from_utf8(server_first).unwrap(), SERVER_FIRST);
        exchange
    }

    #[test]
    fn rfc_7677_test_vector() {
        let exchange = rfc_exchange();
        assert_eq!(exchange.user(), "user");
        let server_final = exchange.finish(CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(server_final).unwrap(), SERVER_FINAL);
    }

    #[test]
    fn a_wrong_proof_nonce_or_binding_is_refused() {
        let exchange = rfc_exchange();
        let wrong_proof = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert_eq!(
            exchange.finish(wrong_proof.as_bytes()),
            Err(ScramError::InvalidProof)
        );
        let wrong_nonce = CLIENT_FINAL.replace("$k0,", "$k1,");
        assert_eq!(
            exchange.finish(wrong_nonce.as_bytes()),
            Err(ScramError::NonceMismatch)
        );
        // The server's part of the nonce must be there: a final message of the client's nonce
        // alone is a replay's.
        let clients_alone = CLIENT_FINAL.replace("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "");
        assert_eq!(
            exchange.finish(clients_alone.as_bytes()),
            Err(ScramError::NonceMismatch)
        );
        // `eSws` is `y,,`: the client claims to support channel binding it did not announce.
        let wrong_binding = CLIENT_FINAL.replace("c=biws", "c=eSws");
        assert_eq!(
            exchange.finish(wrong_binding.as_bytes()),
            Err(ScramError::ChannelBindingChanged)
        );
        assert_eq!(
            exchange.finish(b"c=biws"),
            Err(ScramError::InvalidEncoding("no proof (p=)"))
        );
        assert_eq!(
            ScramError::InvalidProof.to_string(),
            "e=invalid-proof",
            "the RFC's server-error value"
        );
    }

    #[test]
    fn first_messages_as_kafka_clients_send_them() {
        // The Java client's: an authorization id may only name the user itself.
        let first = ClientFirst::parse(b"n,a=al=2Cice,n=al=2Cice,r=abc").unwrap();
        assert_eq!(first.user, "al,ice");
        assert_eq!(
            ClientFirst::parse(b"n,a=bob,n=alice,r=abc"),
            Err(ScramError::AuthorizationIdNotUser)
        );
        assert_eq!(
            ClientFirst::parse(b"n,,n=alice,r=abc,tokenauth=true"),
            Err(ScramError::TokenAuthNotSupported)
        );
        assert_eq!(
            ClientFirst::parse(b"p=tls-unique,,n=alice,r=abc"),
            Err(ScramError::ChannelBindingNotSupported)
        );
        assert_eq!(
            ClientFirst::parse(b"n,,n=a=3Db=,r=abc"),
            Err(ScramError::InvalidUserName)
        );
        assert_eq!(ClientFirst::parse(b"n,,n=a=3Db,r=abc").unwrap().user, "a=b");
        assert!(ClientFirst::parse(b"n,,n=alice").is_err());
        assert!(ClientFirst::parse(b"n,,n=alice,r=").is_err());
        assert!(ClientFirst::parse(&[0xff, 0xfe]).is_err());
        let (_, unknown) = (
            (),
            ScramExchange::start(
                ScramMechanism::Sha256,
                ClientFirst::parse(b"n,,n=nobody,r=abc").unwrap(),
                None,
                "xyz",
            ),
        );
        assert_eq!(unknown.err(), Some(ScramError::UnknownUser));
    }

    /// A SCRAM-SHA-512 client, as librdkafka computes its side, against the server.
    #[test]
    fn sha_512_round_trip() {
        let mechanism = ScramMechanism::Sha512;
        let salt = new_salt().unwrap();
        let salted = salted_password(mechanism, b"secret", &salt, 4096);
        let credential = credential_from_salted_password(mechanism, &salt, 4096, &salted);
        let client = test_client::ScramClient::new(mechanism, "alice", b"secret");
        let first = ClientFirst::parse(&client.first()).unwrap();
        let (exchange, server_first) =
            ScramExchange::start(mechanism, first, Some(credential), &server_nonce().unwrap())
                .unwrap();
        let (client_final, expected) = client.finish(&server_first);
        assert_eq!(exchange.finish(&client_final).unwrap(), expected);
    }

    #[test]
    fn server_nonces_are_letters_and_digits_and_differ() {
        let nonce = server_nonce().unwrap();
        assert_eq!(nonce.len(), NONCE_CHARACTERS);
        assert!(
            nonce.bytes().all(|byte| byte.is_ascii_alphanumeric()),
            "{nonce}"
        );
        assert_ne!(nonce, server_nonce().unwrap());
    }

    #[test]
    fn plain_passwords_check_against_the_scram_credential() {
        let credential = rfc_credential();
        assert!(check_password(
            ScramMechanism::Sha256,
            &credential,
            b"pencil"
        ));
        assert!(!check_password(
            ScramMechanism::Sha256,
            &credential,
            b"pencil2"
        ));
        assert!(!check_password(
            ScramMechanism::Sha512,
            &credential,
            b"pencil"
        ));
    }
}
