//! The first frame of every connection says who is calling, so the receiver can attribute each
//! message to a broker and shard and refuse a broker of another cluster (a mistyped `--peers`)
//! or of an incompatible version before it reads a single message.
//!
//! The protocol version travels in the hello's payload as a fixed big-endian `u32`, outside the
//! rkyv header: a later version may change the hello's own layout, and its peers must still be
//! able to read the version and say "wrong version" rather than "invalid header".

use bytes::{BufMut, BytesMut};
use rkyv::util::AlignedVec;

use super::frame::{self, Frame, FrameError, FrameKind, OutboundFrame};

/// The transport protocol this build speaks; bumped by any change of the framing, of the hello
/// or of the archived layout of the messages carried.
pub const PROTOCOL_VERSION: u32 = 2;

/// Bytes of the hello's payload: the protocol version.
const VERSION_BYTES: usize = 4;

/// Who opened a connection.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Hello {
    pub cluster_id: String,
    pub node_id: u64,
    pub shard: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the first frame is a {kind:?} frame, not a hello")]
    NotHello { kind: FrameKind },
    #[error("the hello's payload has {bytes} bytes, not a {VERSION_BYTES}-byte version")]
    VersionField { bytes: usize },
    #[error("protocol version {theirs}, we speak {PROTOCOL_VERSION}")]
    Version { theirs: u32 },
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("cluster id {theirs:?}, ours is {ours:?}")]
    Cluster { theirs: String, ours: String },
}

/// The hello frame of a connection from `hello`.
pub fn encode(hello: &Hello, frame_bytes_max: usize) -> Result<OutboundFrame, FrameError> {
    encode_with_version(hello, PROTOCOL_VERSION, frame_bytes_max)
}

/// A hello frame claiming protocol `version` (another version's hello, for tests of the
/// refusal).
pub fn encode_with_version(
    hello: &Hello,
    version: u32,
    frame_bytes_max: usize,
) -> Result<OutboundFrame, FrameError> {
    let mut payload = BytesMut::with_capacity(VERSION_BYTES);
    payload.put_u32(version);
    frame::encode(FrameKind::Hello, hello, payload.freeze(), frame_bytes_max)
}

/// Checks the first frame of a connection and says who sent it.
pub fn accept(
    frame: &Frame,
    cluster_id: &str,
    aligned: &mut AlignedVec,
) -> Result<Hello, HandshakeError> {
    if frame.kind != FrameKind::Hello {
        return Err(HandshakeError::NotHello { kind: frame.kind });
    }
    let version: [u8; VERSION_BYTES] =
        frame.payload[..]
            .try_into()
            .map_err(|_| HandshakeError::VersionField {
                bytes: frame.payload.len(),
            })?;
    let theirs = u32::from_be_bytes(version);
    if theirs != PROTOCOL_VERSION {
        return Err(HandshakeError::Version { theirs });
    }
    let hello: Hello = frame::decode_header(&frame.header, aligned)?;
    if hello.cluster_id != cluster_id {
        return Err(HandshakeError::Cluster {
            theirs: hello.cluster_id,
            ours: cluster_id.to_string(),
        });
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(frame: OutboundFrame) -> Frame {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&frame.head);
        wire.extend_from_slice(&frame.payload);
        frame::take_frame(&mut wire, 1 << 20).unwrap().unwrap()
    }

    fn hello() -> Hello {
        Hello {
            cluster_id: "cluster-a".to_string(),
            node_id: 3,
            shard: 1,
        }
    }

    #[test]
    fn a_hello_of_our_cluster_and_version_names_the_caller() {
        let frame = received(encode(&hello(), 1 << 20).unwrap());
        let accepted = accept(&frame, "cluster-a", &mut AlignedVec::new()).unwrap();
        assert_eq!(accepted, hello());
    }

    #[test]
    fn another_cluster_or_version_is_refused() {
        let frame = received(encode(&hello(), 1 << 20).unwrap());
        assert!(matches!(
            accept(&frame, "cluster-b", &mut AlignedVec::new()),
            Err(HandshakeError::Cluster { .. })
        ));
        let frame = received(encode_with_version(&hello(), PROTOCOL_VERSION + 1, 1 << 20).unwrap());
        assert!(matches!(
            accept(&frame, "cluster-a", &mut AlignedVec::new()),
            Err(HandshakeError::Version { theirs }) if theirs == PROTOCOL_VERSION + 1
        ));
    }
}
