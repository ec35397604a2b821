//! Kafka's record compression codecs, for the one place the engine looks inside a batch's
//! records: the cleaner decompresses a batch to read its keys and re-compresses the records it
//! keeps with the batch's own codec (Kafka's `LogCleaner` does the same). Everywhere else the
//! log stores and serves batches as the producer compressed them.
//!
//! Formats are those of Kafka's Java client: gzip (a gzip stream), snappy (xerial's framing:
//! a 16-byte header, then blocks of a 4-byte big-endian length and raw snappy; raw snappy is
//! also read, as the Java client does), lz4 (the LZ4 frame format) and zstd (a zstd frame).
//!
//! Decompression is bounded by the caller ([`decompress`]'s `bytes_max`; the cleaner passes 256 MiB
//! per batch): a batch's bytes are a client's, and a small compressed batch can claim any size.

use std::io::{Read, Write};

use thiserror::Error;

/// Codec ids of a batch's attributes (bits 0..2).
pub const CODEC_NONE: i16 = 0;
pub const CODEC_GZIP: i16 = 1;
pub const CODEC_SNAPPY: i16 = 2;
pub const CODEC_LZ4: i16 = 3;
pub const CODEC_ZSTD: i16 = 4;

const SNAPPY_XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// xerial's block size (`SnappyOutputStream`'s default).
const SNAPPY_BLOCK_BYTES: usize = 32 * 1024;
/// zstd's default level, as Kafka's producer uses.
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("unknown compression codec {0}")]
    Unknown(i16),
    #[error("compressed records do not decode ({0})")]
    Corrupt(String),
    #[error("decompressed records exceed {bytes_max} bytes")]
    TooLarge { bytes_max: usize },
}

/// The records section `compressed` decoded with `codec`, refused beyond `bytes_max` bytes
/// (a few bytes of a hostile batch can expand to gigabytes).
pub fn decompress(codec: i16, compressed: &[u8], bytes_max: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        CODEC_NONE => read_bounded(compressed, bytes_max),
        CODEC_GZIP => read_bounded(flate2::read::MultiGzDecoder::new(compressed), bytes_max),
        CODEC_SNAPPY => decompress_snappy(compressed, bytes_max),
        CODEC_LZ4 => {
            let decoder = lz4::Decoder::new(compressed).map_err(corrupt)?;
            read_bounded(decoder, bytes_max)
        }
        CODEC_ZSTD => {
            let decoder = zstd::stream::read::Decoder::new(compressed).map_err(corrupt)?;
            read_bounded(decoder, bytes_max)
        }
        other => Err(CodecError::Unknown(other)),
    }
}

/// `plain` encoded with `codec`.
pub fn compress(codec: i16, plain: &[u8]) -> Result<Vec<u8>, CodecError> {
    match codec {
        CODEC_NONE => Ok(plain.to_vec()),
        CODEC_GZIP => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(plain).map_err(corrupt)?;
            encoder.finish().map_err(corrupt)
        }
        CODEC_SNAPPY => {
            let mut out = SNAPPY_XERIAL_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for block in plain.chunks(SNAPPY_BLOCK_BYTES) {
                let compressed = encoder.compress_vec(block).map_err(corrupt)?;
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        CODEC_LZ4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .build(Vec::new())
                .map_err(corrupt)?;
            encoder.write_all(plain).map_err(corrupt)?;
            let (out, result) = encoder.finish();
            result.map_err(corrupt)?;
            Ok(out)
        }
        CODEC_ZSTD => zstd::stream::encode_all(plain, ZSTD_LEVEL).map_err(corrupt),
        other => Err(CodecError::Unknown(other)),
    }
}

fn decompress_snappy(compressed: &[u8], bytes_max: usize) -> Result<Vec<u8>, CodecError> {
    let mut decoder = snap::raw::Decoder::new();
    let Some(mut blocks) = compressed.strip_prefix(&SNAPPY_XERIAL_HEADER[..]) else {
        if snap::raw::decompress_len(compressed).map_err(corrupt)? > bytes_max {
            return Err(CodecError::TooLarge { bytes_max });
        }
        return decoder.decompress_vec(compressed).map_err(corrupt);
    };
    let mut out = Vec::new();
    while !blocks.is_empty() {
        let (length, rest) = blocks
            .split_first_chunk::<4>()
            .ok_or_else(|| CodecError::Corrupt("torn snappy block length".into()))?;
        let length = u32::from_be_bytes(*length) as usize;
        let block = rest
            .get(..length)
            .ok_or_else(|| CodecError::Corrupt("torn snappy block".into()))?;
        let block_length = snap::raw::decompress_len(block).map_err(corrupt)?;
        if out.len() + block_length > bytes_max {
            return Err(CodecError::TooLarge { bytes_max });
        }
        let start = out.len();
        out.resize(start + block_length, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(corrupt)?;
        blocks = &rest[length..];
    }
    Ok(out)
}

fn read_bounded(reader: impl Read, bytes_max: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    reader
        .take(bytes_max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() > bytes_max {
        return Err(CodecError::TooLarge { bytes_max });
    }
    Ok(out)
}

fn corrupt(error: impl std::fmt::Display) -> CodecError {
    CodecError::Corrupt(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_codec_round_trips(plain in proptest::collection::vec(0u8..4, 0..40_000)) {
            for codec in [CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
                let compressed = compress(codec, &plain).expect("compresses");
                prop_assert_eq!(&decompress(codec, &compressed, plain.len()).expect("decodes"), &plain);
                if !plain.is_empty() {
                    prop_assert_eq!(
                        decompress(codec, &compressed, plain.len() - 1),
                        Err(CodecError::TooLarge { bytes_max: plain.len() - 1 })
                    );
                }
            }
        }
    }

    #[test]
    fn raw_snappy_is_read_too_and_garbage_is_an_error() {
        let plain = b"raw snappy, as some clients write it".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        assert_eq!(decompress(CODEC_SNAPPY, &raw, 1 << 20).unwrap(), plain);
        for codec in [CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            assert!(decompress(codec, b"not compressed at all", 1 << 20).is_err());
        }
        assert_eq!(decompress(7, b"", 1), Err(CodecError::Unknown(7)));
    }
}
