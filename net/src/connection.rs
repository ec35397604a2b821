//! One client connection: frames in, responses out, in request order (Kafka clients rely on
//! it), one request at a time. Bad input ends this connection only, with a log line saying why;
//! the shard and every other connection carry on.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use kafka_protocol::messages::ApiKey;

use crate::api_versions;
use crate::frame::take_frame;
use crate::request::{DecodedRequest, RequestError};
use crate::response::put_response;

/// Bounds of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`, 100 MiB).
    pub frame_bytes_max: usize,
    /// Bytes read from the socket at a time.
    pub read_chunk_bytes: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            frame_bytes_max: 100 << 20,
            read_chunk_bytes: 64 << 10,
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
pub enum ConnectionEnd {
    /// The client closed it.
    ClientClosed,
    /// The client sent something we close connections for (logged by [`serve_connection`]).
    BadInput(String),
    /// Reading or writing the socket failed.
    Io(std::io::Error),
}

/// Serves `stream` until it ends, and logs why if it was not the client closing it.
pub async fn serve_connection<S>(mut stream: S, peer: SocketAddr, config: ConnectionConfig)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match run(&mut stream, config).await {
        ConnectionEnd::ClientClosed => {}
        ConnectionEnd::BadInput(reason) => {
            eprintln!("ferrite: closing the connection from {peer}: {reason}")
        }
        ConnectionEnd::Io(error) => eprintln!("ferrite: connection from {peer} failed: {error}"),
    }
}

async fn run<S>(stream: &mut S, config: ConnectionConfig) -> ConnectionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut received = BytesMut::new();
    let mut chunk = vec![0u8; config.read_chunk_bytes];
    let mut responses = BytesMut::new();
    loop {
        loop {
            let frame = match take_frame(&mut received, config.frame_bytes_max) {
                Ok(Some(frame)) => frame.freeze(),
                Ok(None) => break,
                Err(error) => return ConnectionEnd::BadInput(error.to_string()),
            };
            if let Err(reason) = answer(frame, &mut responses) {
                return ConnectionEnd::BadInput(reason);
            }
        }
        if !responses.is_empty() {
            if let Err(error) = stream.write_all(&responses).await {
                return ConnectionEnd::Io(error);
            }
            responses.clear();
        }
        match stream.read(&mut chunk).await {
            Ok(0) if received.is_empty() => return ConnectionEnd::ClientClosed,
            Ok(0) => {
                return ConnectionEnd::BadInput(format!(
                    "closed in the middle of a frame ({} bytes of it received)",
                    received.len()
                ))
            }
            Ok(read) => received.extend_from_slice(&chunk[..read]),
            Err(error) => return ConnectionEnd::Io(error),
        }
    }
}

/// Appends the response to one request frame to `out`, or says why the connection must close.
fn answer(frame: Bytes, out: &mut BytesMut) -> Result<(), String> {
    let request = match DecodedRequest::decode(frame) {
        Ok(request) => request,
        Err(RequestError::UnsupportedVersion {
            api_key: ApiKey::ApiVersions,
            correlation_id,
            ..
        }) => {
            return put_response(
                out,
                ApiKey::ApiVersions,
                api_versions::FALLBACK_RESPONSE_VERSION,
                correlation_id,
                &api_versions::fallback_response(),
            );
        }
        Err(error) => return Err(error.to_string()),
    };
    // Decoding the body checks it even where the handler needs nothing from it.
    request.decode_body().map_err(|error| error.to_string())?;
    match request.api_key {
        ApiKey::ApiVersions => put_response(
            out,
            ApiKey::ApiVersions,
            request.api_version,
            request.correlation_id(),
            &api_versions::response(),
        ),
        other => unreachable!("{other:?} is in the implemented table without a handler"),
    }
}
