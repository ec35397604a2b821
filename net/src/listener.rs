//! Listeners, Kafka's way: a broker listens on several addresses, each a *listener* with a name
//! and a security protocol (`PLAINTEXT://127.0.0.1:9092,SSL://0.0.0.0:9093`), and tells each
//! client, in Metadata and FindCoordinator, the advertised address of the listener that client
//! came in on, so a client that reached the broker over TLS is sent on to TLS addresses.
//!
//! Kafka also allows custom names with a `listener.security.protocol.map`; Ferrite accepts the
//! four security protocols' own names as listener names, each name then says its protocol.
//!
//! Every connection carries a [`ConnectionSecurity`]: its listener, its security protocol and
//! the principal it acts as (`User:ANONYMOUS` until a TLS client certificate or a SASL exchange
//! says otherwise). The broker's request dispatch sees it for every request
//! (`Broker::start`), which is where authentication gates and, later, authorization read it. It
//! is plain data (`Send`), so it moves with a connection handed to another shard.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use thiserror::Error;

use crate::sasl::Authentication;

/// Kafka's security protocols: how a listener's connections are protected and authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    /// The protocol's name as Kafka spells it.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the connection's bytes go through TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether a client must authenticate with SASL before anything else.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn from_name(name: &str) -> Option<SecurityProtocol> {
        SecurityProtocol::ALL
            .into_iter()
            .find(|protocol| protocol.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A listener's name (`PLAINTEXT`, `SSL`, …), upper case as Kafka writes it. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerName(Arc<str>);

impl ListenerName {
    /// The name of the listener `--listen` makes.
    pub fn plaintext() -> ListenerName {
        ListenerName::of(SecurityProtocol::Plaintext)
    }

    /// The listener named after `protocol`.
    pub fn of(protocol: SecurityProtocol) -> ListenerName {
        ListenerName(protocol.name().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The security protocol this name stands for (every accepted name is a protocol's).
    pub fn protocol(&self) -> SecurityProtocol {
        SecurityProtocol::from_name(&self.0)
            .expect("listener names are checked to be security protocols when parsed")
    }
}

impl fmt::Display for ListenerName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// One `NAME://HOST:PORT` of `--listeners` or `--advertised-listeners`, the host as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: ListenerName,
    /// Empty in a listener means every interface (Kafka's `PLAINTEXT://:9092`).
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn protocol(&self) -> SecurityProtocol {
        self.name.protocol()
    }

    /// The address to bind: the host resolved (empty: every IPv4 interface).
    pub fn bind_address(&self) -> Result<SocketAddr, ListenerError> {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        (host, self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| ListenerError::Unresolved(self.to_string()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(formatter, "{}://[{}]:{}", self.name, self.host, self.port)
        } else {
            write!(formatter, "{}://{}:{}", self.name, self.host, self.port)
        }
    }
}

/// A listener as the shards bind it: its name, and the address reserved for it (a port 0 of
/// `--listeners` already made a real one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAddress {
    pub name: ListenerName,
    pub address: SocketAddr,
}

/// Why a listener list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ListenerError {
    #[error("'{0}': expected NAME://HOST:PORT")]
    Shape(String),
    #[error(
        "'{0}': the listener name must be a security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT \
         or SASL_SSL"
    )]
    UnknownName(String),
    #[error("'{0}': '{1}' is not a port")]
    Port(String, String),
    #[error("listener {0} is named twice")]
    Duplicate(ListenerName),
    #[error("no listener given")]
    Empty,
    #[error("'{0}': the host does not resolve to an address")]
    Unresolved(String),
}

/// Parses a comma-separated list of `NAME://HOST:PORT` (`HOST` may be empty, or an IPv6 address
/// in brackets): each name once, each a security protocol's.
pub fn parse_endpoints(list: &str) -> Result<Vec<Endpoint>, ListenerError> {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for entry in list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let endpoint = parse_endpoint(entry)?;
        if endpoints.iter().any(|known| known.name == endpoint.name) {
            return Err(ListenerError::Duplicate(endpoint.name));
        }
        endpoints.push(endpoint);
    }
    if endpoints.is_empty() {
        return Err(ListenerError::Empty);
    }
    Ok(endpoints)
}

fn parse_endpoint(entry: &str) -> Result<Endpoint, ListenerError> {
    let shape = || ListenerError::Shape(entry.to_owned());
    let (name, address) = entry.split_once("://").ok_or_else(shape)?;
    let protocol = SecurityProtocol::from_name(name)
        .ok_or_else(|| ListenerError::UnknownName(entry.to_owned()))?;
    let (host, port) = address.rsplit_once(':').ok_or_else(shape)?;
    let port = port
        .parse()
        .map_err(|_| ListenerError::Port(entry.to_owned(), port.to_owned()))?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.strip_suffix(']').ok_or_else(shape)?,
        None if host.contains(':') => return Err(shape()),
        None => host,
    };
    Ok(Endpoint {
        name: ListenerName::of(protocol),
        host: host.to_owned(),
        port,
    })
}

/// Kafka's principal of a connection nobody authenticated.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// What a connection's requests are served as: the listener it came in on, that listener's
/// security protocol, and who the client proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSecurity {
    pub listener: ListenerName,
    pub protocol: SecurityProtocol,
    /// Kafka's `KafkaPrincipal` as text (`User:CN=client,O=example`): [`ANONYMOUS`] until a
    /// TLS client certificate or a SASL exchange authenticates the client.
    pub principal: String,
    /// Its SASL authentication (required on SASL_PLAINTEXT and SASL_SSL listeners).
    pub authentication: Authentication,
}

impl ConnectionSecurity {
    /// A connection accepted on `listener`, not authenticated (yet).
    pub fn anonymous(listener: ListenerName) -> ConnectionSecurity {
        ConnectionSecurity {
            protocol: listener.protocol(),
            authentication: Authentication::new(listener.protocol().uses_sasl()),
            listener,
            principal: ANONYMOUS.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: SecurityProtocol, host: &str, port: u16) -> Endpoint {
        Endpoint {
            name: ListenerName::of(name),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn every_security_protocol_names_a_listener() {
        let parsed = parse_endpoints(
            "PLAINTEXT://127.0.0.1:9092, SSL://:9093,sasl_plaintext://[::1]:9094,SASL_SSL://broker.example:9095",
        )
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                endpoint(SecurityProtocol::Plaintext, "127.0.0.1", 9092),
                endpoint(SecurityProtocol::Ssl, "", 9093),
                endpoint(SecurityProtocol::SaslPlaintext, "::1", 9094),
                endpoint(SecurityProtocol::SaslSsl, "broker.example", 9095),
            ]
        );
        assert_eq!(parsed[2].name.as_str(), "SASL_PLAINTEXT");
        assert_eq!(parsed[2].to_string(), "SASL_PLAINTEXT://[::1]:9094");
        assert_eq!(
            parsed[1].bind_address().unwrap(),
            "0.0.0.0:9093".parse::<SocketAddr>().unwrap()
        );
        assert!(parsed[3].protocol().uses_tls() && parsed[3].protocol().uses_sasl());
    }

    #[test]
    fn bad_listener_lists_say_what_is_wrong() {
        let cases = [
            ("", ListenerError::Empty),
            (
                "127.0.0.1:9092",
                ListenerError::Shape("127.0.0.1:9092".into()),
            ),
            (
                "INTERNAL://h:1",
                ListenerError::UnknownName("INTERNAL://h:1".into()),
            ),
            (
                "SSL://h:x",
                ListenerError::Port("SSL://h:x".into(), "x".into()),
            ),
            (
                "SSL://h:70000",
                ListenerError::Port("SSL://h:70000".into(), "70000".into()),
            ),
            ("SSL://::1:9", ListenerError::Shape("SSL://::1:9".into())),
            (
                "SSL://a:1,SSL://b:2",
                ListenerError::Duplicate(ListenerName::of(SecurityProtocol::Ssl)),
            ),
        ];
        for (list, error) in cases {
            assert_eq!(parse_endpoints(list), Err(error), "{list}");
        }
    }

    #[test]
    fn a_new_connection_is_anonymous_on_its_listener() {
        let security = ConnectionSecurity::anonymous(ListenerName::of(SecurityProtocol::SaslSsl));
        assert_eq!(security.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(security.principal, "User:ANONYMOUS");
    }
}
