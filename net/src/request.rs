//! Request headers, decoded without trusting the client: the API key and version are read
//! with bounds checks first (so a short frame is an error, not a panic), the version is checked
//! against what we implement (or answer UNSUPPORTED_VERSION: message formats v0/v1), and only
//! then is the header decoded in the layout that version uses (flexible versions add tagged
//! fields).

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use thiserror::Error;

use crate::api_versions;
use crate::old_versions::{self, Body};

/// Bytes every request starts with: api key (2), api version (2), correlation id (4).
const FIXED_HEADER_BYTES: usize = 8;

/// A request whose header was decoded and whose version we implement; the body is still
/// bytes, so hot paths (Produce) can parse it themselves.
#[derive(Debug)]
pub struct DecodedRequest {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Why a frame is not a request we can serve. Variants that know the correlation id carry it,
/// so the connection can answer where the protocol has an answer (ApiVersions' fallback) and
/// log what it closes the connection for otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("request of {length_bytes} bytes is shorter than a request header")]
    TooShort { length_bytes: usize },
    #[error("unknown or unimplemented API key {api_key} (correlation id {correlation_id})")]
    UnknownApi { api_key: i16, correlation_id: i32 },
    #[error(
        "{api_key:?} version {api_version} is not implemented (we speak {version_min}..={version_max})"
    )]
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        version_min: i16,
        version_max: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{api_version} request: {message}")]
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        message: String,
    },
}

impl DecodedRequest {
    /// Decodes the header of one frame's body.
    pub fn decode(mut frame: Bytes) -> Result<DecodedRequest, RequestError> {
        if frame.len() < FIXED_HEADER_BYTES {
            return Err(RequestError::TooShort {
                length_bytes: frame.len(),
            });
        }
        let raw_api_key = i16::from_be_bytes([frame[0], frame[1]]);
        let api_version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let (api_key, (version_min, version_max)) = ApiKey::try_from(raw_api_key)
            .ok()
            .and_then(|api_key| Some((api_key, api_versions::supported_range(api_key)?)))
            .ok_or(RequestError::UnknownApi {
                api_key: raw_api_key,
                correlation_id,
            })?;
        if !(version_min..=version_max).contains(&api_version)
            && !api_versions::is_message_format_v0_v1(api_key, api_version)
        {
            return Err(RequestError::UnsupportedVersion {
                api_key,
                api_version,
                version_min,
                version_max,
                correlation_id,
            });
        }
        let header_version = api_key.request_header_version(api_version);
        let header = RequestHeader::decode(&mut frame, header_version).map_err(|error| {
            RequestError::Malformed {
                api_key,
                api_version,
                correlation_id,
                message: format!("header: {error}"),
            }
        })?;
        Ok(DecodedRequest {
            api_key,
            api_version,
            header,
            body: frame,
        })
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }

    /// Decodes the body: with the generated codec, or in `old_versions` for a version older
    /// than it reads. Bytes after the body are ignored, as Kafka ignores them: librdkafka 2.16
    /// pads an all-topics Metadata request (v9+) with three.
    pub fn decode_body(&self) -> Result<Body, RequestError> {
        let malformed = |message: String| RequestError::Malformed {
            api_key: self.api_key,
            api_version: self.api_version,
            correlation_id: self.correlation_id(),
            message,
        };
        if old_versions::is_older_than_codec(self.api_key, self.api_version) {
            return old_versions::decode(self.api_key, self.api_version, self.body.clone())
                .map_err(|error| malformed(format!("body: {error}")));
        }
        let mut body = self.body.clone();
        RequestKind::decode(self.api_key, &mut body, self.api_version)
            .map(Body::Current)
            .map_err(|error| malformed(format!("body: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::ApiVersionsRequest;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use proptest::prelude::*;

    /// A request as a client would frame it (without the length prefix).
    fn encoded_api_versions(version: i16, correlation_id: i32) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("test-client")));
        let mut bytes = BytesMut::new();
        header
            .encode(
                &mut bytes,
                ApiKey::ApiVersions.request_header_version(version),
            )
            .unwrap();
        let body = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("ferrite-test"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        body.encode(&mut bytes, version).unwrap();
        bytes.freeze()
    }

    #[test]
    fn api_versions_decodes_in_its_classic_and_flexible_layouts() {
        for version in 0..=3 {
            let request = DecodedRequest::decode(encoded_api_versions(version, 77)).unwrap();
            assert_eq!(request.api_key, ApiKey::ApiVersions);
            assert_eq!(request.correlation_id(), 77);
            assert_eq!(
                request.header.client_id.as_deref(),
                Some("test-client"),
                "v{version}"
            );
            let Body::Current(RequestKind::ApiVersions(body)) = request.decode_body().unwrap()
            else {
                panic!("an ApiVersions body");
            };
            if version >= 3 {
                assert_eq!(&*body.client_software_name, "ferrite-test");
            }
        }
    }

    #[test]
    fn unknown_apis_and_versions_are_typed_errors_with_the_correlation_id() {
        let mut unknown = encoded_api_versions(0, 5).to_vec();
        unknown[0..2].copy_from_slice(&999i16.to_be_bytes());
        assert_eq!(
            DecodedRequest::decode(Bytes::from(unknown)).unwrap_err(),
            RequestError::UnknownApi {
                api_key: 999,
                correlation_id: 5
            }
        );
        match DecodedRequest::decode(encoded_api_versions(4, 6)) {
            Err(RequestError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                api_version: 4,
                correlation_id: 6,
                ..
            }) => {}
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
        assert_eq!(
            DecodedRequest::decode(Bytes::from_static(&[0, 18, 0])).unwrap_err(),
            RequestError::TooShort { length_bytes: 3 }
        );
    }

    #[test]
    fn truncated_bodies_are_malformed_and_padding_is_ignored() {
        let whole = encoded_api_versions(3, 9);
        for cut in 8..whole.len() {
            if let Ok(request) = DecodedRequest::decode(whole.slice(..cut)) {
                assert!(
                    matches!(request.decode_body(), Err(RequestError::Malformed { .. })),
                    "cut at {cut}"
                );
            }
        }
        // Trailing bytes are ignored, as Kafka ignores them (librdkafka 2.16 sends some).
        let mut padded = whole.to_vec();
        padded.extend_from_slice(&[0, 0, 0]);
        let request = DecodedRequest::decode(Bytes::from(padded)).unwrap();
        assert!(request.decode_body().is_ok());
    }

    proptest! {
        /// The fuzz target for request decoding, run in the normal tests: any bytes after a
        /// valid key and version give a request or a typed error, never a panic.
        #[test]
        fn arbitrary_requests_never_panic(
            version in 0i16..=3,
            tail in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = (ApiKey::ApiVersions as i16).to_be_bytes().to_vec();
            bytes.extend_from_slice(&version.to_be_bytes());
            bytes.extend_from_slice(&tail);
            if let Ok(request) = DecodedRequest::decode(Bytes::from(bytes)) {
                let _ = request.decode_body();
            }
        }
    }
}
