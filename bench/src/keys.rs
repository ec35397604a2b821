//! `--key-distribution`: whether messages carry a key, and which. Without keys the producer
//! places messages round-robin itself (every broker gets the same spread); with keys drawn
//! uniformly from K, librdkafka's partitioner places them, as an application's keyed traffic
//! would be placed (and K bounds how many partitions can be busy).

use std::fmt;
use std::str::FromStr;

use engine::random::mix64;
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDistribution {
    /// No key: round-robin over the partitions, explicitly.
    None,
    /// A key drawn uniformly from this many distinct keys.
    Uniform(u64),
}

impl KeyDistribution {
    /// The key of message `sequence` of run `run_id`: 8 bytes, the big-endian index of one of
    /// the K keys, drawn by hashing the sequence number (uniform, the same for a given message,
    /// no state shared between producers).
    pub fn key(self, run_id: u64, sequence: u64) -> Option<[u8; 8]> {
        match self {
            KeyDistribution::None => None,
            KeyDistribution::Uniform(keys) => {
                Some((mix64(run_id ^ mix64(sequence)) % keys).to_be_bytes())
            }
        }
    }
}

impl FromStr for KeyDistribution {
    type Err = String;

    fn from_str(text: &str) -> Result<KeyDistribution, String> {
        if text == "none" {
            return Ok(KeyDistribution::None);
        }
        match text.strip_prefix("uniform:").map(str::parse::<u64>) {
            Some(Ok(keys)) if keys > 0 => Ok(KeyDistribution::Uniform(keys)),
            _ => Err(format!(
                "expected none or uniform:K with K at least 1, got {text:?}"
            )),
        }
    }
}

impl fmt::Display for KeyDistribution {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDistribution::None => write!(formatter, "none"),
            KeyDistribution::Uniform(keys) => write!(formatter, "uniform:{keys}"),
        }
    }
}

/// In the result's flags as on the command line.
impl Serialize for KeyDistribution {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_parses_and_prints_back() {
        for text in ["none", "uniform:1", "uniform:1000"] {
            let parsed: KeyDistribution = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(serde_json::to_value(parsed).unwrap(), text);
        }
        for bad in ["uniform:0", "uniform:", "uniform:x", "zipf:3", ""] {
            assert!(bad.parse::<KeyDistribution>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uniform_keys_cover_the_key_space_evenly() {
        assert_eq!(KeyDistribution::None.key(1, 2), None);
        let keys = KeyDistribution::Uniform(8);
        let mut counts = [0u32; 8];
        for sequence in 0..80_000 {
            let key = keys.key(42, sequence).unwrap();
            counts[u64::from_be_bytes(key) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
        assert_eq!(keys.key(42, 7), keys.key(42, 7), "a message's key is fixed");
    }
}
