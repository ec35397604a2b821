//! The bytes of one benchmark message: a 24-byte header, then filler up to the requested size.
//!
//! The header (little-endian) carries what the consumer needs to account for the message
//! without any side channel: the run id (messages of other runs or other producers on the
//! topic are counted apart), the sequence number (exact loss and duplicate detection) and the
//! scheduled send time (end-to-end latency from the same instant as the ack latency). The
//! filler is pseudo-random, so a broker or client that compresses gains nothing from it.

/// Bytes of the header; the smallest message the benchmark can send.
pub const HEADER_BYTES: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub run_id: u64,
    pub sequence: u64,
    /// Nanoseconds after the run's start.
    pub scheduled_ns: u64,
}

impl Header {
    /// The header at the start of `payload`; `None` if it is too short to hold one.
    pub fn read(payload: &[u8]) -> Option<Header> {
        let field = |index: usize| {
            let bytes = payload.get(index * 8..index * 8 + 8)?;
            Some(u64::from_le_bytes(bytes.try_into().ok()?))
        };
        Some(Header {
            run_id: field(0)?,
            sequence: field(1)?,
            scheduled_ns: field(2)?,
        })
    }
}

/// One reusable message buffer of a fixed size; `stamp` rewrites only the header.
pub struct PayloadWriter {
    buffer: Vec<u8>,
}

impl PayloadWriter {
    pub fn new(message_bytes: usize, run_id: u64) -> PayloadWriter {
        assert!(message_bytes >= HEADER_BYTES, "checked with the flags");
        let mut state = run_id | 1;
        let buffer = (0..message_bytes)
            .map(|index| {
                if index < 8 {
                    run_id.to_le_bytes()[index]
                } else {
                    // xorshift64: cheap, fixed per run, incompressible enough.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                }
            })
            .collect();
        PayloadWriter { buffer }
    }

    pub fn stamp(&mut self, sequence: u64, scheduled_ns: u64) -> &[u8] {
        self.buffer[8..16].copy_from_slice(&sequence.to_le_bytes());
        self.buffer[16..24].copy_from_slice(&scheduled_ns.to_le_bytes());
        &self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_message_has_the_exact_size_and_reads_back() {
        let mut writer = PayloadWriter::new(1024, 0xfeed);
        let payload = writer.stamp(7, 123_456_789).to_vec();
        assert_eq!(payload.len(), 1024);
        assert_eq!(
            Header::read(&payload),
            Some(Header {
                run_id: 0xfeed,
                sequence: 7,
                scheduled_ns: 123_456_789
            })
        );
        let next = writer.stamp(8, 5);
        assert_eq!(
            next[HEADER_BYTES..],
            payload[HEADER_BYTES..],
            "filler reused"
        );
    }

    #[test]
    fn the_smallest_message_is_the_header() {
        let mut writer = PayloadWriter::new(HEADER_BYTES, 1);
        assert_eq!(writer.stamp(1, 2).len(), HEADER_BYTES);
    }

    #[test]
    fn a_short_payload_has_no_header() {
        assert_eq!(Header::read(&[0; HEADER_BYTES - 1]), None);
        assert_eq!(Header::read(&[]), None);
    }

    #[test]
    fn the_filler_is_not_a_run_of_one_byte() {
        let mut writer = PayloadWriter::new(4096, 42);
        let payload = writer.stamp(0, 0);
        let distinct: std::collections::HashSet<u8> =
            payload[HEADER_BYTES..].iter().copied().collect();
        assert!(distinct.len() > 200, "{} distinct bytes", distinct.len());
    }
}
