//! The mapping between the Raft core's entries and the partition log's record batches.
//!
//! Raft index `i` is Kafka offset `i - 1` (index 0 is "before everything"), an entry is one
//! batch, and its term is the batch's partitionLeaderEpoch. The core's own entries (a new
//! leader's LEADER_CHANGE, a voter set) are control batches, which consumers skip.

use bytes::BytesMut;
use engine::batch::{self, BatchHeader, ControlType};
use engine::PartitionLog;

use super::state_file::ReplicaState;
use crate::log::{EpochRun, LogSummary};
use crate::message::{EntryKind, EntryMeta, Index, NodeId, Term};

/// A batch the replica cannot use as a Raft entry (a peer sent garbage, or a bug).
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("a fetched batch does not parse: {0}")]
    Malformed(String),
    #[error("epoch {0} is negative")]
    NegativeEpoch(i32),
}

pub(crate) fn offset_of(index: Index) -> u64 {
    assert!(index > 0, "index 0 holds no entry");
    index - 1
}

/// The entry a stored batch is, with its header.
pub(crate) fn entry_of(bytes: &[u8]) -> Result<(EntryMeta, BatchHeader), EntryError> {
    let header = batch::validate_stored(bytes, usize::MAX)
        .map_err(|error| EntryError::Malformed(error.to_string()))?;
    let term = Term::try_from(header.leader_epoch)
        .map_err(|_| EntryError::NegativeEpoch(header.leader_epoch))?;
    let kind = match batch::read_control(bytes)
        .map_err(|error| EntryError::Malformed(format!("{error:?}")))?
    {
        Some((ControlType::LeaderChange, _)) => EntryKind::LeaderChange,
        Some((ControlType::Voters, value)) => EntryKind::Voters(decode_voters(&value)?),
        Some((ControlType::Other(_), _)) | None => EntryKind::Records,
    };
    let base_offset = header.base_offset as u64;
    let meta = EntryMeta {
        first_index: base_offset + 1,
        last_index: header.last_offset() as u64 + 1,
        term,
        kind,
    };
    Ok((meta, header))
}

/// Splits concatenated batches (a fetch response's payload) into entries and their bytes.
pub(crate) fn split_entries(mut bytes: &[u8]) -> Result<Vec<(EntryMeta, BytesMut)>, EntryError> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let header = BatchHeader::parse(bytes)
            .ok_or_else(|| EntryError::Malformed("a truncated batch header".into()))?;
        let size = usize::try_from(header.size_bytes)
            .ok()
            .filter(|size| *size <= bytes.len())
            .ok_or_else(|| EntryError::Malformed("a truncated batch".into()))?;
        let (meta, _) = entry_of(&bytes[..size])?;
        entries.push((meta, BytesMut::from(&bytes[..size])));
        bytes = &bytes[size..];
    }
    Ok(entries)
}

/// The control batch for one of the core's own entries, placed at its index and term.
pub(crate) fn control_batch(meta: &EntryMeta, leader: NodeId, now_ms: i64) -> BytesMut {
    let (control_type, value) = match &meta.kind {
        EntryKind::LeaderChange => (ControlType::LeaderChange, leader.to_string()),
        EntryKind::Voters(voters) => (ControlType::Voters, encode_voters(voters)),
        EntryKind::Records => unreachable!("records come from producers or fetches"),
    };
    assert_eq!(
        meta.first_index, meta.last_index,
        "a control entry has one index"
    );
    let mut bytes =
        BytesMut::from(&batch::encode_control(control_type, value.as_bytes(), now_ms)[..]);
    stamp(&mut bytes, meta);
    bytes
}

/// Gives a batch the offsets and epoch of `meta`.
pub(crate) fn stamp(bytes: &mut BytesMut, meta: &EntryMeta) {
    let epoch = i32::try_from(meta.term).expect("terms fit a Kafka leader epoch");
    batch::assign_offset_and_epoch(bytes, offset_of(meta.first_index) as i64, epoch);
}

fn encode_voters(voters: &[NodeId]) -> String {
    voters
        .iter()
        .map(NodeId::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_voters(value: &[u8]) -> Result<Vec<NodeId>, EntryError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| {
            text.split(',')
                .map(|voter| voter.parse().ok())
                .collect::<Option<Vec<NodeId>>>()
        })
        .filter(|voters| !voters.is_empty())
        .ok_or_else(|| EntryError::Malformed("a voter-set entry without voters".into()))
}

/// What the core needs of the log after a restart: the engine's log start, end and leader
/// epochs as indexes and terms, and the voter sets from the state file.
pub(crate) fn summary_of(log: &PartitionLog, state: &ReplicaState) -> LogSummary {
    let log_start = log.log_start_offset() + 1;
    let last_index = log.log_end_offset();
    let epochs = log.epochs();
    let prev_term = if log_start > 1 {
        epochs
            .epoch_at(log_start - 2)
            .map_or(0, |epoch| epoch as Term)
    } else {
        0
    };
    let mut runs: Vec<EpochRun> = Vec::new();
    if last_index >= log_start {
        for run in epochs.runs() {
            let start_index = (run.start_offset + 1).max(log_start);
            if start_index > last_index {
                break;
            }
            match runs.last_mut() {
                // A run that began before the log start is clamped to it; a later run starting
                // there too replaces it.
                Some(last) if last.start_index == start_index => {
                    last.term = run.epoch as Term;
                }
                _ => runs.push(EpochRun {
                    term: run.epoch as Term,
                    start_index,
                }),
            }
        }
    }
    LogSummary {
        log_start,
        prev_term,
        epochs: runs,
        last_index,
        voters_base: state.voters_base.clone(),
        voter_changes: state
            .voter_changes
            .iter()
            .filter(|(index, _)| (log_start..=last_index).contains(index))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_entries_round_trip_through_their_batches() {
        for kind in [EntryKind::LeaderChange, EntryKind::Voters(vec![1, 2, 3])] {
            let meta = EntryMeta {
                first_index: 42,
                last_index: 42,
                term: 7,
                kind,
            };
            let bytes = control_batch(&meta, 3, 1_000);
            let (parsed, header) = entry_of(&bytes).unwrap();
            assert_eq!(parsed, meta);
            assert!(header.is_control());
        }
    }

    #[test]
    fn fetched_bytes_split_into_entries_and_garbage_is_refused() {
        let mut records = BytesMut::from(
            &batch::build::batch(&[
                batch::build::TestRecord {
                    key: None,
                    value: b"a".to_vec(),
                    timestamp_ms: 0,
                },
                batch::build::TestRecord {
                    key: None,
                    value: b"b".to_vec(),
                    timestamp_ms: 0,
                },
            ])[..],
        );
        let meta = EntryMeta {
            first_index: 11,
            last_index: 12,
            term: 2,
            kind: EntryKind::Records,
        };
        stamp(&mut records, &meta);
        let leader_change = EntryMeta {
            first_index: 13,
            last_index: 13,
            term: 3,
            kind: EntryKind::LeaderChange,
        };
        let mut payload = records.to_vec();
        payload.extend_from_slice(&control_batch(&leader_change, 1, 0));
        let entries = split_entries(&payload).unwrap();
        let metas: Vec<EntryMeta> = entries.into_iter().map(|(meta, _)| meta).collect();
        assert_eq!(metas, vec![meta, leader_change]);
        assert!(split_entries(&payload[..payload.len() - 1]).is_err());
        let mut corrupt = payload.clone();
        corrupt[70] ^= 1;
        assert!(split_entries(&corrupt).is_err());
    }
}
