//! Kafka frames: a big-endian `i32` length, then that many bytes. The length is the first
//! thing a client controls, so it is checked before anything is buffered for it: a negative
//! length or one above `frame_bytes_max` is a protocol error that closes the connection.

use bytes::{Buf, BufMut, BytesMut};
use thiserror::Error;

/// Bytes of the length prefix.
pub const FRAME_LENGTH_BYTES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame length {length} is negative")]
    NegativeLength { length: i32 },
    #[error("frame of {length_bytes} bytes is over the {limit_bytes}-byte limit")]
    TooLarge {
        length_bytes: usize,
        limit_bytes: usize,
    },
}

/// The bytes of the frame at the front of `buffer`, its length prefix included, once that
/// prefix has arrived (`Ok(None)` before); a negative length or one over `frame_bytes_max` is
/// an error, before anything is buffered for it.
pub fn frame_bytes(buffer: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buffer.first_chunk::<FRAME_LENGTH_BYTES>() else {
        return Ok(None);
    };
    let length = i32::from_be_bytes(*prefix);
    let length_bytes =
        usize::try_from(length).map_err(|_| FrameError::NegativeLength { length })?;
    if length_bytes > frame_bytes_max {
        return Err(FrameError::TooLarge {
            length_bytes,
            limit_bytes: frame_bytes_max,
        });
    }
    Ok(Some(FRAME_LENGTH_BYTES + length_bytes))
}

/// Takes the next whole frame's body off the front of `buffer`, or `Ok(None)` if it has not
/// all arrived yet.
pub fn take_frame(
    buffer: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<BytesMut>, FrameError> {
    match frame_bytes(buffer, frame_bytes_max)? {
        Some(frame_end) if buffer.len() >= frame_end => {
            buffer.advance(FRAME_LENGTH_BYTES);
            Ok(Some(buffer.split_to(frame_end - FRAME_LENGTH_BYTES)))
        }
        _ => Ok(None),
    }
}

/// Appends `body` to `out` as one frame.
pub fn put_frame(out: &mut BytesMut, body: &[u8]) {
    let length = i32::try_from(body.len()).expect("responses are far below 2 GiB");
    out.reserve(FRAME_LENGTH_BYTES + body.len());
    out.put_i32(length);
    out.put_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_come_out_whole_and_in_order_however_the_bytes_arrive() {
        let mut wire = BytesMut::new();
        put_frame(&mut wire, b"first");
        put_frame(&mut wire, b"");
        put_frame(&mut wire, b"third frame");
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire.iter() {
            buffer.put_u8(*byte);
            while let Some(frame) = take_frame(&mut buffer, 100).unwrap() {
                frames.push(frame.to_vec());
            }
        }
        assert_eq!(
            frames,
            vec![b"first".to_vec(), vec![], b"third frame".to_vec()]
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn lying_lengths_are_refused_before_anything_is_buffered() {
        let mut buffer = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut buffer, 100),
            Err(FrameError::NegativeLength { length: -5 })
        );
        let mut buffer = BytesMut::from(&i32::MAX.to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut buffer, 100),
            Err(FrameError::TooLarge {
                length_bytes: i32::MAX as usize,
                limit_bytes: 100
            })
        );
        assert!(
            buffer.capacity() < 1 << 20,
            "no allocation for a refused frame"
        );
        let mut truncated = BytesMut::from(&10i32.to_be_bytes()[..]);
        truncated.put_slice(b"short");
        assert_eq!(take_frame(&mut truncated, 100), Ok(None));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_never_yield_oversize_frames(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = take_frame(&mut buffer, 64) {
                prop_assert!(frame.len() <= 64);
            }
        }
    }
}
