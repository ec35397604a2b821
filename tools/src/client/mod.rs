//! A small blocking Kafka client for the admin commands: one TCP connection per broker, one
//! request in flight at a time, versions negotiated with ApiVersions when the connection opens.
//!
//! The admin commands must work against any Kafka-compatible broker, so this speaks only the
//! wire protocol (message types from `kafka-protocol`) and knows nothing of Ferrite's insides.
//! A command runs a handful of requests and exits, so plain blocking I/O with timeouts is all it
//! needs; no runtime, no pipelining.
//!
//! Versions: each request type declares, in [`Api`], the versions this code fills in and reads
//! correctly; a request is sent in the highest version both that range and the broker's
//! ApiVersions answer contain, and fails with [`ClientError::UnsupportedVersion`] if they do not
//! meet.
//!
//! Trust: the 4-byte frame length is checked before anything is read for it (at most
//! [`FRAME_BYTES_MAX`]); the body is decoded by `kafka-protocol`, which reports short or
//! malformed input as an error.
//!
//! Above these connections, [`cluster`] keeps the brokers and partition leaders a Metadata answer
//! names, and sends the requests that must go to each partition's leader.

pub mod cluster;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterPartitionReassignmentsRequest, AlterUserScramCredentialsRequest,
    ApiVersionsRequest, ApiVersionsResponse, CreateAclsRequest, CreateTopicsRequest,
    DeleteAclsRequest, DeleteTopicsRequest, DescribeAclsRequest, DescribeClientQuotasRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, DescribeTransactionsRequest,
    DescribeUserScramCredentialsRequest, FetchRequest, FindCoordinatorRequest,
    IncrementalAlterConfigsRequest, ListGroupsRequest, ListOffsetsRequest,
    ListPartitionReassignmentsRequest, ListTransactionsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Request, StrBytes, VersionRange,
};

/// The client id sent in every request header (brokers log it).
const CLIENT_ID: &str = "ferrite-cli";

/// How long connecting to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may wait for its response beyond what the request itself asks the broker
/// to wait (a fetch's long poll, a produce's acknowledgement timeout).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest response frame accepted. Fetch responses are the largest and the consumer asks
/// for at most `consume::FETCH_RESPONSE_BYTES_MAX`; a broker may exceed that by one batch.
pub const FRAME_BYTES_MAX: usize = 128 << 20;

/// Kafka's error code for a version the broker does not speak (KIP-511's ApiVersions fallback).
const UNSUPPORTED_VERSION: i16 = 35;

/// A request this client sends, with the versions its code handles.
pub trait Api: Request {
    /// The name users know the API by, for error messages.
    const NAME: &'static str;
    /// The versions whose fields the callers fill in and whose responses they read correctly.
    /// (Fetch and Produce stop at 12: from 13 on they name topics by id only.)
    const CLIENT_VERSIONS: VersionRange;
}

macro_rules! client_versions {
    ($($request:ty => $name:literal, $min:literal..=$max:literal;)*) => {
        $(impl Api for $request {
            const NAME: &'static str = $name;
            const CLIENT_VERSIONS: VersionRange = VersionRange { min: $min, max: $max };
        })*
    };
}

client_versions! {
    ApiVersionsRequest => "ApiVersions", 0..=3;
    MetadataRequest => "Metadata", 1..=12;
    ProduceRequest => "Produce", 3..=12;
    FetchRequest => "Fetch", 4..=12;
    ListOffsetsRequest => "ListOffsets", 1..=10;
    CreateTopicsRequest => "CreateTopics", 2..=7;
    DeleteTopicsRequest => "DeleteTopics", 1..=6;
    DescribeConfigsRequest => "DescribeConfigs", 1..=4;
    IncrementalAlterConfigsRequest => "IncrementalAlterConfigs", 0..=1;
    AlterPartitionReassignmentsRequest => "AlterPartitionReassignments", 0..=0;
    ListPartitionReassignmentsRequest => "ListPartitionReassignments", 0..=0;
    FindCoordinatorRequest => "FindCoordinator", 0..=6;
    ListGroupsRequest => "ListGroups", 0..=5;
    DescribeGroupsRequest => "DescribeGroups", 0..=6;
    OffsetFetchRequest => "OffsetFetch", 2..=9;
    OffsetCommitRequest => "OffsetCommit", 2..=9;
    ListTransactionsRequest => "ListTransactions", 0..=1;
    DescribeTransactionsRequest => "DescribeTransactions", 0..=0;
    AlterUserScramCredentialsRequest => "AlterUserScramCredentials", 0..=0;
    DescribeUserScramCredentialsRequest => "DescribeUserScramCredentials", 0..=0;
    AlterClientQuotasRequest => "AlterClientQuotas", 0..=1;
    DescribeClientQuotasRequest => "DescribeClientQuotas", 0..=1;
    CreateAclsRequest => "CreateAcls", 1..=3;
    DescribeAclsRequest => "DescribeAcls", 1..=3;
    DeleteAclsRequest => "DeleteAcls", 1..=3;
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve {address}: {source}; give --bootstrap as HOST:PORT")]
    Resolve {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {address}: {}", connect_failure(source))]
    Connect {
        address: String,
        source: std::io::Error,
    },
    /// A request built from the command line does not fit the protocol (e.g. a name too long).
    #[error("cannot encode the {api} request: {reason}")]
    Encode { api: &'static str, reason: String },
    #[error("{api} request to {address} failed: {}", io_failure(source))]
    Io {
        address: String,
        api: &'static str,
        source: std::io::Error,
    },
    #[error("{api} response from {address} is malformed: {reason}")]
    Malformed {
        address: String,
        api: &'static str,
        reason: String,
    },
    #[error(
        "the broker at {address} does not speak {api} in a version this client knows (broker: \
         {}, ferrite: {client}); upgrade the broker or ferrite",
        broker.map_or("none".to_string(), |range| range.to_string())
    )]
    UnsupportedVersion {
        address: String,
        api: &'static str,
        broker: Option<VersionRange>,
        client: VersionRange,
    },
}

fn connect_failure(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "connection refused — is `ferrite serve` running, and is --bootstrap its address?"
                .to_string()
        }
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => format!(
            "no answer within {} s — is the address right and reachable?",
            CONNECT_TIMEOUT.as_secs()
        ),
        _ => error.to_string(),
    }
}

fn io_failure(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            "no response in time — is the broker overloaded or stuck?".to_string()
        }
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => {
            "the broker closed the connection (see its log for why)".to_string()
        }
        _ => error.to_string(),
    }
}

/// One connection to one broker, with the versions it supports.
pub struct Connection {
    address: String,
    stream: TcpStream,
    correlation_id_next: i32,
    /// The broker's ApiVersions answer: (api key, min version, max version).
    broker_versions: Vec<(i16, i16, i16)>,
}

impl Connection {
    /// Connects to `address` (HOST:PORT) and asks the broker which versions it speaks.
    pub fn open(address: &str) -> Result<Connection, ClientError> {
        let candidates: Vec<_> = address
            .to_socket_addrs()
            .map_err(|source| ClientError::Resolve {
                address: address.to_string(),
                source,
            })?
            .collect();
        let mut last_error = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name resolves to no address",
        );
        let mut stream = None;
        for candidate in candidates {
            match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let connect_error = |source| ClientError::Connect {
            address: address.to_string(),
            source,
        };
        let stream = stream.ok_or_else(|| connect_error(last_error))?;
        stream.set_nodelay(true).map_err(connect_error)?;
        stream
            .set_write_timeout(Some(RESPONSE_TIMEOUT))
            .map_err(connect_error)?;
        stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .map_err(connect_error)?;
        let mut connection = Connection {
            address: address.to_string(),
            stream,
            correlation_id_next: 0,
            broker_versions: Vec::new(),
        };
        connection.negotiate()?;
        Ok(connection)
    }

    /// Asks for the broker's versions with our highest ApiVersions. A broker that does not speak
    /// it answers (KIP-511) in version 0 with UNSUPPORTED_VERSION and its table, which serves
    /// just as well; both layouts start with the error code, so it decides how to decode.
    fn negotiate(&mut self) -> Result<(), ClientError> {
        let version = ApiVersionsRequest::CLIENT_VERSIONS.max;
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let correlation_id = self.write_request(&request, version)?;
        let mut body = self.read_response_body::<ApiVersionsRequest>(correlation_id, version)?;
        let error_code = body
            .get(..2)
            .map(|code| i16::from_be_bytes([code[0], code[1]]));
        let body_version = if error_code == Some(UNSUPPORTED_VERSION) {
            0
        } else {
            version
        };
        let response: ApiVersionsResponse =
            self.decode::<ApiVersionsRequest, _>(&mut body, body_version)?;
        if response.error_code != 0 && response.api_keys.is_empty() {
            return Err(self.malformed::<ApiVersionsRequest>(format!(
                "error code {} and no versions",
                response.error_code
            )));
        }
        self.broker_versions = response
            .api_keys
            .iter()
            .map(|key| (key.api_key, key.min_version, key.max_version))
            .collect();
        Ok(())
    }

    /// The version `R` is sent in: the highest both sides speak.
    pub fn version<R: Api>(&self) -> Result<i16, ClientError> {
        let broker = self
            .broker_versions
            .iter()
            .find(|(key, _, _)| *key == R::KEY)
            .map(|&(_, min, max)| VersionRange { min, max });
        let usable = broker.map(|range| range.intersect(&R::CLIENT_VERSIONS));
        match usable {
            Some(usable) if !usable.is_empty() => {
                debug_assert!(usable.max <= R::VERSIONS.max, "the crate encodes it");
                Ok(usable.max)
            }
            _ => Err(ClientError::UnsupportedVersion {
                address: self.address.clone(),
                api: R::NAME,
                broker,
                client: R::CLIENT_VERSIONS,
            }),
        }
    }

    /// Sends `request` in `version` (from [`Connection::version`]) and waits for its response.
    /// `extra_wait` is how long the request itself asks the broker to wait before answering.
    pub fn send<R: Api>(
        &mut self,
        request: &R,
        version: i16,
        extra_wait: Duration,
    ) -> Result<R::Response, ClientError> {
        let correlation_id = self.write_request(request, version)?;
        self.stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT + extra_wait))
            .map_err(|source| self.io_error::<R>(source))?;
        let mut body = self.read_response_body::<R>(correlation_id, version)?;
        let response = self.decode::<R, R::Response>(&mut body, version)?;
        if !body.is_empty() {
            return Err(self.malformed::<R>(format!("{} bytes after the response", body.len())));
        }
        Ok(response)
    }

    /// Sends `request` for which the broker sends no response (a Produce with acks=0).
    pub fn send_without_response<R: Api>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        self.write_request(request, version).map(|_| ())
    }

    fn write_request<R: Api>(&mut self, request: &R, version: i16) -> Result<i32, ClientError> {
        let correlation_id = self.correlation_id_next;
        self.correlation_id_next = self.correlation_id_next.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        // Room for the length, filled in once the size is known.
        let mut frame = BytesMut::from(&[0u8; 4][..]);
        header
            .encode(&mut frame, R::header_version(version))
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|error| ClientError::Encode {
                api: R::NAME,
                reason: error.to_string(),
            })?;
        let body_bytes = i32::try_from(frame.len() - 4).map_err(|_| ClientError::Encode {
            api: R::NAME,
            reason: format!("{} bytes is more than a frame can hold", frame.len()),
        })?;
        frame[..4].copy_from_slice(&body_bytes.to_be_bytes());
        self.stream
            .write_all(&frame)
            .map_err(|source| self.io_error::<R>(source))?;
        Ok(correlation_id)
    }

    /// Reads one response frame, checks its correlation id and returns the body after the header.
    fn read_response_body<R: Api>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<Bytes, ClientError> {
        let mut length = [0u8; 4];
        self.stream
            .read_exact(&mut length)
            .map_err(|source| self.io_error::<R>(source))?;
        let length = i32::from_be_bytes(length);
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length <= FRAME_BYTES_MAX)
            .ok_or_else(|| {
                self.malformed::<R>(format!(
                    "frame length {length} (at most {FRAME_BYTES_MAX} expected)"
                ))
            })?;
        let mut body = vec![0u8; length];
        self.stream
            .read_exact(&mut body)
            .map_err(|source| self.io_error::<R>(source))?;
        let mut body = Bytes::from(body);
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let header: ResponseHeader = self.decode::<R, _>(&mut body, header_version)?;
        if header.correlation_id != correlation_id {
            return Err(self.malformed::<R>(format!(
                "correlation id {} answers a request we did not send (expected {correlation_id})",
                header.correlation_id
            )));
        }
        Ok(body)
    }

    fn decode<R: Api, T: Decodable>(
        &self,
        body: &mut Bytes,
        version: i16,
    ) -> Result<T, ClientError> {
        T::decode(body, version).map_err(|error| self.malformed::<R>(error.to_string()))
    }

    fn io_error<R: Api>(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            address: self.address.clone(),
            api: R::NAME,
            source,
        }
    }

    fn malformed<R: Api>(&self, reason: String) -> ClientError {
        ClientError::Malformed {
            address: self.address.clone(),
            api: R::NAME,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::protocol::Message;

    fn within_crate<R: Api + Message>() {
        let range = R::CLIENT_VERSIONS;
        assert!(!range.is_empty(), "{}", R::NAME);
        assert!(
            range.min >= R::VERSIONS.min && range.max <= R::VERSIONS.max,
            "{}: {range} outside {}",
            R::NAME,
            R::VERSIONS
        );
    }

    #[test]
    fn client_versions_are_versions_the_crate_encodes() {
        within_crate::<ApiVersionsRequest>();
        within_crate::<MetadataRequest>();
        within_crate::<ProduceRequest>();
        within_crate::<FetchRequest>();
        within_crate::<ListOffsetsRequest>();
        within_crate::<CreateTopicsRequest>();
        within_crate::<DeleteTopicsRequest>();
        within_crate::<DescribeConfigsRequest>();
        within_crate::<IncrementalAlterConfigsRequest>();
        within_crate::<FindCoordinatorRequest>();
        within_crate::<ListGroupsRequest>();
        within_crate::<DescribeGroupsRequest>();
        within_crate::<OffsetFetchRequest>();
        within_crate::<OffsetCommitRequest>();
        within_crate::<ListTransactionsRequest>();
        within_crate::<DescribeTransactionsRequest>();
    }

    /// A one-connection broker that answers the first request (ApiVersions) with `answer`:
    /// the bytes after the correlation id, which it copies from the request.
    fn fake_broker(answer: Vec<u8>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut length = [0u8; 4];
            stream.read_exact(&mut length).unwrap();
            let mut request = vec![0u8; i32::from_be_bytes(length) as usize];
            stream.read_exact(&mut request).unwrap();
            let correlation_id = &request[4..8];
            let body_bytes = (correlation_id.len() + answer.len()) as i32;
            let frame = [&body_bytes.to_be_bytes()[..], correlation_id, &answer].concat();
            stream.write_all(&frame).unwrap();
            // Hold the connection open until the client is done with it.
            let _ = stream.read(&mut [0u8; 1]);
        });
        address
    }

    #[test]
    fn an_older_broker_s_fallback_answer_is_enough_to_pick_versions() {
        // KIP-511: a broker without our ApiVersions version answers in version 0 with
        // UNSUPPORTED_VERSION and its table; here Metadata 0..=5 and no Fetch at all.
        let mut answer = BytesMut::new();
        ApiVersionsResponse::default()
            .with_error_code(UNSUPPORTED_VERSION)
            .with_api_keys(vec![
                ApiVersion::default()
                    .with_api_key(ApiVersionsRequest::KEY)
                    .with_min_version(0)
                    .with_max_version(2),
                ApiVersion::default()
                    .with_api_key(MetadataRequest::KEY)
                    .with_min_version(0)
                    .with_max_version(5),
            ])
            .encode(&mut answer, 0)
            .unwrap();
        let connection = Connection::open(&fake_broker(answer.to_vec())).unwrap();
        assert_eq!(connection.version::<MetadataRequest>().unwrap(), 5);
        let error = connection
            .version::<FetchRequest>()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("does not speak Fetch in a version this client knows (broker: none, ferrite: 4..12)"),
            "{error}"
        );
    }

    #[test]
    fn a_lying_frame_length_is_an_error() {
        let address = fake_broker_with_frame((-7i32).to_be_bytes().to_vec());
        let error = Connection::open(&address).err().unwrap().to_string();
        assert!(error.contains("ApiVersions response from"), "{error}");
        assert!(error.contains("frame length -7"), "{error}");
    }

    /// A broker that answers the first request with `bytes`, framing and all.
    fn fake_broker_with_frame(bytes: Vec<u8>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(&bytes).unwrap();
            let _ = stream.read(&mut [0u8; 1]);
        });
        address
    }

    #[test]
    fn a_refused_connection_says_what_to_do() {
        // Bound, never listening (connections are refused), and held so nobody listens there.
        let free =
            engine::shard::listen::ListenReservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = free.address().to_string();
        let error = Connection::open(&address).err().unwrap();
        let message = error.to_string();
        assert!(
            message.contains(&format!("cannot connect to {address}")),
            "{message}"
        );
        assert!(message.contains("is `ferrite serve` running"), "{message}");
    }
}
