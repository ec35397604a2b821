//! The transport's frames, on the wire:
//!
//! ```text
//! [u32 frame_len][u8 kind][u32 header_len][header: header_len bytes][payload: the rest]
//! ```
//!
//! Big-endian; `frame_len` counts the bytes after itself. The header is an rkyv archive of a
//! structured message, the payload raw bytes (record batches travel as they are stored, never
//! re-encoded). Every length is the peer's to choose, so each is checked as soon as its bytes
//! are in (before anything is buffered for it): a frame over `frame_bytes_max`, one too short
//! for its fixed fields, an unknown kind or a header longer than its frame is a protocol error
//! that ends the connection. A header is copied into an aligned buffer and validated by
//! bytecheck before any field of it is read.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use thiserror::Error;

/// Bytes of the `frame_len` field.
pub const FRAME_LENGTH_BYTES: usize = 4;
/// Bytes of the fields every frame has after `frame_len`: its kind and `header_len`.
pub const FRAME_FIXED_BYTES: usize = 1 + 4;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The first frame of a connection: who is calling (see `handshake`).
    Hello = 1,
    /// A message of the transport's message type, with its payload.
    Message = 2,
    /// The acceptor's answer to a hello: its identity, nonce and proof (see `handshake`).
    Challenge = 3,
    /// The connector's proof, the last frame of the handshake.
    Proof = 4,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Hello),
            2 => Some(FrameKind::Message),
            3 => Some(FrameKind::Challenge),
            4 => Some(FrameKind::Proof),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame of {frame_bytes} bytes is over the {frame_bytes_max}-byte limit")]
    TooLarge {
        frame_bytes: usize,
        frame_bytes_max: usize,
    },
    #[error("frame of {frame_bytes} bytes is too short for its kind and header length")]
    TooShort { frame_bytes: usize },
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("header of {header_bytes} bytes does not fit a frame of {frame_bytes} bytes")]
    HeaderTooLong {
        header_bytes: usize,
        frame_bytes: usize,
    },
    #[error("header fails validation: {reason}")]
    InvalidHeader { reason: String },
    #[error("cannot encode a header: {reason}")]
    Encode { reason: String },
}

/// One whole frame taken off the wire; `header` and `payload` share the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub header: Bytes,
    pub payload: Bytes,
}

/// A frame ready to send: everything up to the payload in `head`, the payload apart so a large
/// one is written from where it is.
#[derive(Debug, Clone)]
pub struct OutboundFrame {
    pub head: Bytes,
    pub payload: Bytes,
}

impl OutboundFrame {
    /// Bytes on the wire, `frame_len` included.
    pub fn wire_bytes(&self) -> usize {
        self.head.len() + self.payload.len()
    }
}

/// A type the transport can carry as a header: rkyv-serializable, and its archive checkable
/// (bytecheck) and deserializable. Every `#[derive(Archive, Serialize, Deserialize)]` type of
/// checkable fields is one.
pub trait WireMessage:
    Sized
    + rkyv::Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + rkyv::Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
    + 'static
{
}

impl<T> WireMessage for T where
    T: rkyv::Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + 'static
{
}

/// Encodes `header` as an rkyv archive and frames it with `payload`; refuses a frame the
/// receiver would refuse (over `frame_bytes_max`, or over what the 32-bit length can say).
pub fn encode<M: WireMessage>(
    kind: FrameKind,
    header: &M,
    payload: Bytes,
    frame_bytes_max: usize,
) -> Result<OutboundFrame, FrameError> {
    let archive = rkyv::to_bytes::<rancor::Error>(header).map_err(|error| FrameError::Encode {
        reason: error.to_string(),
    })?;
    let frame_bytes = FRAME_FIXED_BYTES + archive.len() + payload.len();
    let frame_bytes_max = frame_bytes_max.min(u32::MAX as usize);
    if frame_bytes > frame_bytes_max {
        return Err(FrameError::TooLarge {
            frame_bytes,
            frame_bytes_max,
        });
    }
    Ok(OutboundFrame {
        head: encode_head(kind, &archive, payload.len()),
        payload,
    })
}

/// The bytes before the payload of a frame with `header` and `payload_bytes` of payload.
pub fn encode_head(kind: FrameKind, header: &[u8], payload_bytes: usize) -> Bytes {
    let frame_bytes = FRAME_FIXED_BYTES + header.len() + payload_bytes;
    let mut head = BytesMut::with_capacity(FRAME_LENGTH_BYTES + FRAME_FIXED_BYTES + header.len());
    head.put_u32(u32::try_from(frame_bytes).expect("frames are bounded far below 4 GiB"));
    head.put_u8(kind as u8);
    head.put_u32(u32::try_from(header.len()).expect("headers are bounded far below 4 GiB"));
    head.put_slice(header);
    head.freeze()
}

fn read_u32(bytes: &[u8], at: usize) -> usize {
    let field: [u8; 4] = bytes[at..at + 4].try_into().expect("four bytes");
    u32::from_be_bytes(field) as usize
}

/// Takes the next whole frame off the front of `buffer`, or `Ok(None)` if it has not all
/// arrived yet (then `buffer` is unchanged, with room reserved for the rest of the frame).
/// Each field is checked as soon as its bytes are in, so a bad length is refused before any
/// memory is reserved for it.
pub fn take_frame(
    buffer: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<Frame>, FrameError> {
    if buffer.len() < FRAME_LENGTH_BYTES {
        return Ok(None);
    }
    let frame_bytes = read_u32(buffer, 0);
    if frame_bytes > frame_bytes_max {
        return Err(FrameError::TooLarge {
            frame_bytes,
            frame_bytes_max,
        });
    }
    if frame_bytes < FRAME_FIXED_BYTES {
        return Err(FrameError::TooShort { frame_bytes });
    }
    let Some(&kind_byte) = buffer.get(FRAME_LENGTH_BYTES) else {
        return Ok(None);
    };
    let kind =
        FrameKind::from_byte(kind_byte).ok_or(FrameError::UnknownKind { kind: kind_byte })?;
    if buffer.len() < FRAME_LENGTH_BYTES + FRAME_FIXED_BYTES {
        return Ok(None);
    }
    let header_bytes = read_u32(buffer, FRAME_LENGTH_BYTES + 1);
    if header_bytes > frame_bytes - FRAME_FIXED_BYTES {
        return Err(FrameError::HeaderTooLong {
            header_bytes,
            frame_bytes,
        });
    }
    let frame_end = FRAME_LENGTH_BYTES + frame_bytes;
    if buffer.len() < frame_end {
        buffer.reserve(frame_end - buffer.len());
        return Ok(None);
    }
    buffer.advance(FRAME_LENGTH_BYTES + FRAME_FIXED_BYTES);
    let mut body = buffer.split_to(frame_bytes - FRAME_FIXED_BYTES).freeze();
    let header = body.split_to(header_bytes);
    Ok(Some(Frame {
        kind,
        header,
        payload: body,
    }))
}

/// Validates `header` (copied into `aligned`, a buffer reused across calls, since the archive's
/// fields must be aligned and a frame's header sits anywhere in the receive buffer) and
/// deserializes it.
pub fn decode_header<M: WireMessage>(
    header: &[u8],
    aligned: &mut AlignedVec,
) -> Result<M, FrameError> {
    aligned.clear();
    aligned.extend_from_slice(header);
    rkyv::from_bytes::<M, rancor::Error>(aligned).map_err(|error| FrameError::InvalidHeader {
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    struct Sample {
        term: u64,
        granted: bool,
        name: String,
        indexes: Vec<u32>,
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (
            any::<u64>(),
            any::<bool>(),
            ".{0,40}",
            proptest::collection::vec(any::<u32>(), 0..50),
        )
            .prop_map(|(term, granted, name, indexes)| Sample {
                term,
                granted,
                name,
                indexes,
            })
    }

    fn wire(frame: &OutboundFrame) -> BytesMut {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&frame.head);
        wire.extend_from_slice(&frame.payload);
        wire
    }

    const LIMIT: usize = 1 << 20;

    proptest! {
        #[test]
        fn decode_gives_back_what_was_encoded(
            message in sample(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let frame = encode(FrameKind::Message, &message, Bytes::from(payload.clone()), LIMIT)
                .unwrap();
            let mut buffer = wire(&frame);
            let taken = take_frame(&mut buffer, LIMIT).unwrap().unwrap();
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(taken.kind, FrameKind::Message);
            prop_assert_eq!(&taken.payload[..], &payload[..]);
            let decoded: Sample = decode_header(&taken.header, &mut AlignedVec::new()).unwrap();
            prop_assert_eq!(decoded, message);
        }

        #[test]
        fn any_truncation_of_a_frame_needs_more_bytes(
            message in sample(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            cut in any::<prop::sample::Index>(),
        ) {
            let frame = encode(FrameKind::Message, &message, Bytes::from(payload), LIMIT).unwrap();
            let whole = wire(&frame);
            let mut truncated = BytesMut::from(&whole[..cut.index(whole.len())]);
            let before = truncated.clone();
            prop_assert_eq!(take_frame(&mut truncated, LIMIT), Ok(None));
            prop_assert_eq!(truncated, before);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buffer = BytesMut::from(&bytes[..]);
            let mut aligned = AlignedVec::new();
            while let Ok(Some(frame)) = take_frame(&mut buffer, 150) {
                let _ = decode_header::<Sample>(&frame.header, &mut aligned);
            }
        }
    }

    #[test]
    fn frames_split_at_every_byte_come_out_whole_and_in_order() {
        let mut wire_bytes = BytesMut::new();
        for term in 0..3u64 {
            let message = Sample {
                term,
                granted: term == 1,
                name: format!("node {term}"),
                indexes: vec![1, 2, 3],
            };
            let payload = Bytes::from(vec![term as u8; term as usize * 7]);
            wire_bytes.extend_from_slice(&wire(
                &encode(FrameKind::Message, &message, payload, LIMIT).unwrap(),
            ));
        }
        let mut buffer = BytesMut::new();
        let mut terms = Vec::new();
        let mut aligned = AlignedVec::new();
        for byte in wire_bytes.iter() {
            buffer.put_u8(*byte);
            while let Some(frame) = take_frame(&mut buffer, LIMIT).unwrap() {
                let message: Sample = decode_header(&frame.header, &mut aligned).unwrap();
                assert_eq!(frame.payload.len(), message.term as usize * 7);
                terms.push(message.term);
            }
        }
        assert_eq!(terms, vec![0, 1, 2]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn bad_lengths_and_kinds_are_refused_as_soon_as_their_bytes_arrive() {
        let mut over = BytesMut::new();
        over.put_u32(LIMIT as u32 + 1);
        assert_eq!(
            take_frame(&mut over, LIMIT),
            Err(FrameError::TooLarge {
                frame_bytes: LIMIT + 1,
                frame_bytes_max: LIMIT
            })
        );
        let mut short = BytesMut::from(&[0, 0, 0, 4][..]);
        assert_eq!(
            take_frame(&mut short, LIMIT),
            Err(FrameError::TooShort { frame_bytes: 4 })
        );
        let mut unknown = BytesMut::from(&[0, 0, 0, 9, 7][..]);
        assert_eq!(
            take_frame(&mut unknown, LIMIT),
            Err(FrameError::UnknownKind { kind: 7 })
        );
        let mut long_header = BytesMut::from(&[0, 0, 0, 9, 2, 0, 0, 0, 5][..]);
        assert_eq!(
            take_frame(&mut long_header, LIMIT),
            Err(FrameError::HeaderTooLong {
                header_bytes: 5,
                frame_bytes: 9
            })
        );
    }

    #[test]
    fn a_header_that_is_not_an_archive_of_the_type_is_refused() {
        let garbage = [0xffu8; 5];
        assert!(matches!(
            decode_header::<Sample>(&garbage, &mut AlignedVec::new()),
            Err(FrameError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_when_sent() {
        let message = Sample {
            term: 1,
            granted: false,
            name: String::new(),
            indexes: vec![],
        };
        let result = encode(
            FrameKind::Message,
            &message,
            Bytes::from(vec![0u8; 100]),
            64,
        );
        assert!(matches!(result, Err(FrameError::TooLarge { .. })));
    }
}
