//! Kafka's default partitioner for keyed messages: murmur2 of the key bytes, made positive,
//! modulo the partition count. It must match the Java client (`Utils.murmur2`, `toPositive`)
//! and librdkafka's `murmur2_random` bit for bit, or the same key would land in different
//! partitions depending on which client wrote it, and per-key ordering would be lost.

/// Kafka's murmur2 (MurmurHash2, 32-bit, seed 0x9747b28c), as `org.apache.kafka.common.utils.
/// Utils.murmur2` computes it; Java's signed result.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java takes the length as an int; keys are far below 2 GiB (the frame limit).
    let mut hash = SEED ^ (data.len() as u32);
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (index, &byte) in tail.iter().enumerate().rev() {
            hash ^= u32::from(byte) << (8 * index);
        }
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash as i32
}

/// The partition the Java client and librdkafka's `murmur2_random` choose for `key`.
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    // Java's `toPositive`: clear the sign bit (not `abs`, which overflows on i32::MIN).
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for &(key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partitions_are_the_positive_hash_modulo_the_count() {
        // -973932308 & 0x7fffffff = 1173551340.
        assert_eq!(partition_for_key(b"21", 7), 1173551340 % 7);
        assert_eq!(partition_for_key(b"abc", 10), 479470107 % 10);
        assert_eq!(partition_for_key(b"foobar", 1), 0);
        for key in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"abcde"] {
            let partition = partition_for_key(key, 3);
            assert!((0..3).contains(&partition));
        }
    }
}
