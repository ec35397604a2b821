//! Response framing: length prefix, the response header in the layout the API and version
//! call for (flexible versions add tagged fields; ApiVersions always uses the classic header so
//! that any client can read it), then the body.

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use crate::frame::put_frame;

/// Appends one framed response to `out`. Fails only if the body cannot be encoded in
/// `api_version` (a handler bug: it built a field that version lacks).
pub fn put_response(
    out: &mut BytesMut,
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> Result<(), String> {
    put_response_with(out, api_key, api_version, correlation_id, |encoded| {
        body.encode(encoded, api_version)
            .map_err(|error| error.to_string())
    })
}

/// [`put_response`] with a body written by `encode_body` (a version the generated codec does
/// not write: `old_versions`).
pub fn put_response_with(
    out: &mut BytesMut,
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    encode_body: impl FnOnce(&mut BytesMut) -> Result<(), String>,
) -> Result<(), String> {
    let mut encoded = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut encoded, api_key.response_header_version(api_version))
        .map_err(|error| format!("encoding a {api_key:?} response header: {error}"))?;
    encode_body(&mut encoded)
        .map_err(|error| format!("encoding a {api_key:?} v{api_version} response: {error}"))?;
    put_frame(out, &encoded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_versions;
    use crate::frame::take_frame;
    use kafka_protocol::messages::ApiVersionsResponse;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn an_api_versions_response_reads_back_as_a_client_would_read_it() {
        for version in 0..=3 {
            let mut wire = BytesMut::new();
            put_response(
                &mut wire,
                ApiKey::ApiVersions,
                version,
                42,
                &api_versions::response(),
            )
            .unwrap();
            let mut frame = take_frame(&mut wire, 1 << 20).unwrap().unwrap().freeze();
            let header = ResponseHeader::decode(&mut frame, 0).unwrap();
            assert_eq!(header.correlation_id, 42);
            let body = ApiVersionsResponse::decode(&mut frame, version).unwrap();
            assert_eq!(body, api_versions::response(), "v{version}");
            assert!(frame.is_empty());
        }
    }
}
