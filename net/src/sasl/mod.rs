//! SASL authentication of client connections, as Kafka does it: SaslHandshake (v0-v1) picks
//! a mechanism, SaslAuthenticate (v0-v2) carries its tokens; with handshake v0 the tokens come
//! as raw length-prefixed frames without a Kafka header instead (clients from before Kafka
//! 1.0), which the connection's frame reader cuts all the same. Mechanisms: PLAIN (RFC 4616)
//! and SCRAM-SHA-256/512 (`scram.rs`), both against the SCRAM credentials of
//! [`engine::credentials`].
//!
//! Each connection holds an [`Authentication`]: on a SASL listener only ApiVersions,
//! SaslHandshake and SaslAuthenticate are served until it has a session; anything else closes
//! the connection, as Kafka's `SaslServerAuthenticator` does. A failed authentication is
//! answered SASL_AUTHENTICATION_FAILED, then the connection is closed. With
//! `--connections-max-reauth-ms` (KIP-368) a session lasts that long: SaslAuthenticate v1+ tells
//! the client, which re-authenticates on the same connection (as the same user) before it ends;
//! past it, anything but a re-authentication closes the connection. The state is plain data,
//! carried with the connection when it moves to another shard (`handover::Carried`).
//!
//! The state changes only where requests are started, in arrival order (`Broker::start`), so
//! a pipelined request is judged by the state its predecessors left.

pub mod scram;

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::credentials::{Credentials, ScramMechanism};
use kafka_protocol::messages::{ApiKey, SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use scram::{ClientFirst, ScramExchange};

/// The largest frame a connection may send before it has a session (Kafka's
/// `sasl.server.max.receive.size`): an unauthenticated client cannot make the broker read
/// 100 MiB requests.
pub const UNAUTHENTICATED_FRAME_BYTES_MAX: usize = 512 << 10;

/// A mechanism a SASL listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(mechanism) => mechanism.name(),
        }
    }

    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        match name {
            "PLAIN" => Some(SaslMechanism::Plain),
            name => ScramMechanism::from_name(name).map(SaslMechanism::Scram),
        }
    }
}

/// The default of `--sasl-mechanisms`: the SCRAM ones, then PLAIN. (Kafka's default is GSSAPI,
/// which Ferrite does not have; every mechanism it has checks the same stored credential.)
pub const DEFAULT_MECHANISMS: [SaslMechanism; 3] = [
    SaslMechanism::Scram(ScramMechanism::Sha256),
    SaslMechanism::Scram(ScramMechanism::Sha512),
    SaslMechanism::Plain,
];

/// The broker's SASL settings.
#[derive(Debug, Clone)]
pub struct SaslConfig {
    /// What SaslHandshake accepts (`--sasl-mechanisms`).
    pub mechanisms: Vec<SaslMechanism>,
    /// How long a session lasts before the client must re-authenticate (KIP-368,
    /// `--connections-max-reauth-ms`); `None`: for the connection's life (Kafka's default).
    pub reauthentication_max: Option<Duration>,
}

impl Default for SaslConfig {
    fn default() -> Self {
        SaslConfig {
            mechanisms: DEFAULT_MECHANISMS.to_vec(),
            reauthentication_max: None,
        }
    }
}

/// Who a connection authenticated as: Kafka's `KafkaPrincipal` of type `User`, shown as
/// `User:NAME` (what ACLs will name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
}

impl fmt::Display for Principal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "User:{}", self.user)
    }
}

/// An authenticated session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    principal: Principal,
    mechanism: SaslMechanism,
    /// When the client must have re-authenticated (KIP-368).
    expires_at: Option<Instant>,
}

/// Where a connection is in an authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exchange {
    None,
    /// SaslHandshake accepted `mechanism`; tokens follow (raw frames after handshake v0).
    Handshaken {
        mechanism: SaslMechanism,
        raw_tokens: bool,
    },
    /// SCRAM's first round was answered.
    ScramFirstAnswered {
        exchange: Box<ScramExchange>,
        raw_tokens: bool,
    },
}

/// One connection's authentication: plain data, moved with the connection between shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// The listener requires SASL (SASL_PLAINTEXT, SASL_SSL).
    required: bool,
    session: Option<Session>,
    exchange: Exchange,
    /// Why the connection must close once the reply just started is written.
    closing: Option<String>,
}

/// What a SaslAuthenticate (or a raw token) is answered.
pub struct Authenticated {
    pub auth_bytes: Bytes,
    pub session_lifetime_ms: i64,
}

/// A failed authentication: answered with `code` and `message`, then the connection closes.
#[derive(Debug)]
pub struct AuthenticationFailure {
    pub code: i16,
    /// What the client is told.
    pub message: String,
}

impl Authentication {
    /// A new connection's, on a listener that does (`required`) or does not require SASL.
    pub fn new(required: bool) -> Authentication {
        Authentication {
            required,
            session: None,
            exchange: Exchange::None,
            closing: None,
        }
    }

    /// The principal of the connection's session, if it has one.
    pub fn principal(&self) -> Option<&Principal> {
        self.session.as_ref().map(|session| &session.principal)
    }

    /// Whether the next frame is a raw SASL token (after SaslHandshake v0), not a request.
    pub fn expects_raw_token(&self) -> bool {
        match &self.exchange {
            Exchange::None => false,
            Exchange::Handshaken { raw_tokens, .. }
            | Exchange::ScramFirstAnswered { raw_tokens, .. } => *raw_tokens,
        }
    }

    /// The largest frame the connection may send now.
    pub fn frame_bytes_max(&self, configured: usize, now: Instant) -> usize {
        if self.required && !self.has_live_session(now) {
            configured.min(UNAUTHENTICATED_FRAME_BYTES_MAX)
        } else {
            configured
        }
    }

    fn has_live_session(&self, now: Instant) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| session.expires_at.is_none_or(|expires| now < expires))
    }

    /// Whether a request of `api_key` may be served now; `Err` says why the connection closes.
    pub fn admit(&self, api_key: ApiKey, now: Instant) -> Result<(), String> {
        if !self.required || self.has_live_session(now) {
            return Ok(());
        }
        match (api_key, &self.session) {
            (ApiKey::SaslHandshake | ApiKey::SaslAuthenticate, _) => Ok(()),
            (ApiKey::ApiVersions, None) => Ok(()),
            (api_key, None) => Err(format!(
                "{api_key:?} before SASL authentication on a SASL listener"
            )),
            (api_key, Some(session)) => Err(format!(
                "{api_key:?} after the session of {} expired (--connections-max-reauth-ms) \
                 without re-authentication",
                session.principal
            )),
        }
    }

    /// Why the connection must close after the reply just started, if it must.
    pub fn take_closing(&mut self) -> Option<String> {
        self.closing.take()
    }

    /// Answers SaslHandshake `version` asking for `requested`.
    pub fn handshake(
        &mut self,
        version: i16,
        requested: &str,
        config: &SaslConfig,
    ) -> SaslHandshakeResponse {
        let enabled: Vec<StrBytes> = if self.required {
            config
                .mechanisms
                .iter()
                .map(|mechanism| StrBytes::from_static_str(mechanism.name()))
                .collect()
        } else {
            Vec::new()
        };
        let response = SaslHandshakeResponse::default().with_mechanisms(enabled);
        let refuse = |this: &mut Self, error: ResponseError, why: String| {
            this.closing = Some(why);
            response.clone().with_error_code(error.code())
        };
        if !self.required {
            return refuse(
                self,
                ResponseError::IllegalSaslState,
                "SaslHandshake on a listener without SASL".to_owned(),
            );
        }
        let Some(mechanism) = SaslMechanism::from_name(requested)
            .filter(|mechanism| config.mechanisms.contains(mechanism))
        else {
            return refuse(
                self,
                ResponseError::UnsupportedSaslMechanism,
                format!("SaslHandshake for mechanism {requested:?}, which is not enabled"),
            );
        };
        if !matches!(self.exchange, Exchange::None) {
            return refuse(
                self,
                ResponseError::IllegalSaslState,
                "SaslHandshake in the middle of an authentication".to_owned(),
            );
        }
        if let Some(session) = &self.session {
            // KIP-368: re-authentication (SaslHandshake v1 on an authenticated connection)
            // keeps the mechanism.
            if version == 0 || session.mechanism != mechanism {
                return refuse(
                    self,
                    ResponseError::IllegalSaslState,
                    format!(
                        "re-authentication with SaslHandshake v{version} and {} (the session \
                         used {})",
                        mechanism.name(),
                        session.mechanism.name()
                    ),
                );
            }
        }
        self.exchange = Exchange::Handshaken {
            mechanism,
            raw_tokens: version == 0,
        };
        response
    }

    /// Takes one SASL token (SaslAuthenticate's `auth_bytes`, or a raw frame after handshake
    /// v0) and answers it; a failure leaves the connection to be closed after its answer.
    pub fn authenticate(
        &mut self,
        token: &[u8],
        config: &SaslConfig,
        credentials: &Credentials,
        now: Instant,
    ) -> Result<Authenticated, AuthenticationFailure> {
        let answered = self.step(token, config, credentials, now);
        if let Err(failure) = &answered {
            self.exchange = Exchange::None;
            self.closing = Some(format!("SASL authentication failed: {}", failure.message));
        }
        answered
    }

    fn step(
        &mut self,
        token: &[u8],
        config: &SaslConfig,
        credentials: &Credentials,
        now: Instant,
    ) -> Result<Authenticated, AuthenticationFailure> {
        match std::mem::replace(&mut self.exchange, Exchange::None) {
            Exchange::None => Err(AuthenticationFailure {
                code: ResponseError::IllegalSaslState.code(),
                message: "SaslAuthenticate before a SaslHandshake".to_owned(),
            }),
            Exchange::Handshaken {
                mechanism: SaslMechanism::Plain,
                ..
            } => {
                let user = check_plain(token, credentials)
                    .map_err(|why| invalid_credentials(SaslMechanism::Plain, why))?;
                self.open_session(user, SaslMechanism::Plain, Bytes::new(), config, now)
            }
            Exchange::Handshaken {
                mechanism: SaslMechanism::Scram(mechanism),
                raw_tokens,
            } => {
                let failed =
                    |why: String| invalid_credentials(SaslMechanism::Scram(mechanism), why);
                let first = ClientFirst::parse(token).map_err(|error| failed(error.to_string()))?;
                let credential = credentials.get(&first.user, mechanism);
                let nonce = scram::server_nonce()
                    .map_err(|error| failed(format!("no random server nonce: {error}")))?;
                let (exchange, server_first) =
                    ScramExchange::start(mechanism, first, credential, &nonce)
                        .map_err(|error| failed(error.to_string()))?;
                self.exchange = Exchange::ScramFirstAnswered {
                    exchange: Box::new(exchange),
                    raw_tokens,
                };
                Ok(Authenticated {
                    auth_bytes: Bytes::from(server_first),
                    session_lifetime_ms: 0,
                })
            }
            Exchange::ScramFirstAnswered { exchange, .. } => {
                let mechanism = SaslMechanism::Scram(exchange.mechanism());
                let server_final = exchange
                    .finish(token)
                    .map_err(|error| invalid_credentials(mechanism, error.to_string()))?;
                self.open_session(
                    exchange.user().to_owned(),
                    mechanism,
                    Bytes::from(server_final),
                    config,
                    now,
                )
            }
        }
    }

    fn open_session(
        &mut self,
        user: String,
        mechanism: SaslMechanism,
        auth_bytes: Bytes,
        config: &SaslConfig,
        now: Instant,
    ) -> Result<Authenticated, AuthenticationFailure> {
        let principal = Principal { user };
        if let Some(session) = &self.session {
            if session.principal != principal {
                return Err(AuthenticationFailure {
                    code: ResponseError::SaslAuthenticationFailed.code(),
                    message: format!(
                        "Cannot change principals during re-authentication from {}: {}",
                        session.principal, principal
                    ),
                });
            }
        }
        self.session = Some(Session {
            principal,
            mechanism,
            expires_at: config.reauthentication_max.map(|lifetime| now + lifetime),
        });
        Ok(Authenticated {
            auth_bytes,
            session_lifetime_ms: config
                .reauthentication_max
                .map_or(0, |lifetime| lifetime.as_millis() as i64),
        })
    }
}

/// Kafka's answer to wrong credentials, whatever was wrong (the broker's log says what).
fn invalid_credentials(mechanism: SaslMechanism, why: String) -> AuthenticationFailure {
    AuthenticationFailure {
        code: ResponseError::SaslAuthenticationFailed.code(),
        message: format!(
            "Authentication failed during authentication due to invalid credentials with SASL \
             mechanism {} ({why})",
            mechanism.name()
        ),
    }
}

/// A PLAIN token (`[authzid] NUL authcid NUL passwd`), checked against the user's SCRAM
/// credential of the first mechanism it has; the user on success.
fn check_plain(token: &[u8], credentials: &Credentials) -> Result<String, String> {
    let mut fields = token.split(|&byte| byte == 0);
    let (Some(authorization_id), Some(user), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("a PLAIN message is [authzid] NUL authcid NUL passwd".to_owned());
    };
    let user = std::str::from_utf8(user)
        .map_err(|_| "the user name is not UTF-8".to_owned())?
        .to_owned();
    if user.is_empty() || password.is_empty() {
        return Err("an empty user name or password".to_owned());
    }
    if !authorization_id.is_empty() && authorization_id != user.as_bytes() {
        return Err("an authorization id other than the user".to_owned());
    }
    let checked = ScramMechanism::ALL.into_iter().find_map(|mechanism| {
        credentials
            .get(&user, mechanism)
            .map(|credential| scram::check_password(mechanism, &credential, password))
    });
    match checked {
        Some(true) => Ok(user),
        Some(false) => Err("a wrong password".to_owned()),
        None => Err("an unknown user".to_owned()),
    }
}

/// The answer to a SaslAuthenticate.
pub fn authenticate_response(
    answered: Result<Authenticated, AuthenticationFailure>,
) -> SaslAuthenticateResponse {
    match answered {
        Ok(authenticated) => SaslAuthenticateResponse::default()
            .with_auth_bytes(authenticated.auth_bytes)
            .with_session_lifetime_ms(authenticated.session_lifetime_ms),
        Err(failure) => SaslAuthenticateResponse::default()
            .with_error_code(failure.code)
            .with_error_message(Some(StrBytes::from_string(failure.message))),
    }
}

#[cfg(test)]
mod tests;
