//! The mapping between the Raft core's entries and the partition log's record batches.
//!
//! Raft index `i` is Kafka offset `i - 1` (index 0 is "before everything"), an entry is one
//! batch, and its term is the batch's partitionLeaderEpoch. The core's own entries (a new
//! leader's LEADER_CHANGE, a voter set) are control batches, which consumers skip.

use bytes::BytesMut;
use engine::batch::{self, BatchHeader, CheckedBatch, ControlType};
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

/// The entry a batch is.
pub(crate) fn entry_of(batch: &CheckedBatch) -> Result<EntryMeta, EntryError> {
    let header = batch.header();
    let term = Term::try_from(header.leader_epoch)
        .map_err(|_| EntryError::NegativeEpoch(header.leader_epoch))?;
    let kind = match batch::read_control(batch.bytes())
        .map_err(|error| EntryError::Malformed(format!("{error:?}")))?
    {
        Some((ControlType::LeaderChange, _)) => EntryKind::LeaderChange,
        Some((ControlType::Voters, value)) => EntryKind::Voters(decode_voters(&value)?),
        Some((ControlType::Abort | ControlType::Commit | ControlType::Other(_), _)) | None => {
            EntryKind::Records
        }
    };
    let base_offset = header.base_offset as u64;
    Ok(EntryMeta {
        first_index: base_offset + 1,
        last_index: header.last_offset() as u64 + 1,
        term,
        kind,
    })
}

/// Splits concatenated batches (a fetch response's payload) into entries and their batches,
/// each checked as a stored batch once, here, where it enters this broker; one larger than
/// `batch_bytes_max` (what the log can hold unwritten) is refused with the rest, so the core
/// never hears of an entry the log could not take.
pub(crate) fn split_entries(
    mut bytes: &[u8],
    batch_bytes_max: usize,
) -> Result<Vec<(EntryMeta, CheckedBatch)>, EntryError> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let header = BatchHeader::parse(bytes)
            .ok_or_else(|| EntryError::Malformed("a truncated batch header".into()))?;
        let size = usize::try_from(header.size_bytes)
            .ok()
            .filter(|size| *size <= bytes.len())
            .ok_or_else(|| EntryError::Malformed("a truncated batch".into()))?;
        let batch = CheckedBatch::stored(BytesMut::from(&bytes[..size]), batch_bytes_max)
            .map_err(|error| EntryError::Malformed(error.to_string()))?;
        entries.push((entry_of(&batch)?, batch));
        bytes = &bytes[size..];
    }
    Ok(entries)
}

/// The control batch for one of the core's own entries, placed at its index and term.
pub(crate) fn control_batch(meta: &EntryMeta, leader: NodeId, now_ms: i64) -> CheckedBatch {
    let (control_type, value) = match &meta.kind {
        EntryKind::LeaderChange => (ControlType::LeaderChange, leader.to_string()),
        EntryKind::Voters(voters) => (ControlType::Voters, encode_voters(voters)),
        EntryKind::Records => unreachable!("records come from producers or fetches"),
    };
    assert_eq!(
        meta.first_index, meta.last_index,
        "a control entry has one index"
    );
    let bytes = batch::encode_control(control_type, value.as_bytes(), now_ms);
    let mut batch = CheckedBatch::stored(BytesMut::from(&bytes[..]), usize::MAX)
        .expect("the broker encodes well-formed control batches");
    stamp(&mut batch, meta);
    batch
}

/// Gives a batch the offsets and epoch of `meta`.
pub(crate) fn stamp(batch: &mut CheckedBatch, meta: &EntryMeta) {
    let epoch = i32::try_from(meta.term).expect("terms fit a Kafka leader epoch (TERM_MAX)");
    batch.assign_offset_and_epoch(offset_of(meta.first_index) as i64, epoch);
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
            let batch = control_batch(&meta, 3, 1_000);
            assert_eq!(entry_of(&batch).unwrap(), meta);
            assert!(batch.header().is_control());
        }
    }

    #[test]
    fn fetched_bytes_split_into_entries_and_garbage_is_refused() {
        let records = BytesMut::from(
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
        let mut records = CheckedBatch::produced(records, usize::MAX).unwrap();
        stamp(&mut records, &meta);
        let leader_change = EntryMeta {
            first_index: 13,
            last_index: 13,
            term: 3,
            kind: EntryKind::LeaderChange,
        };
        let mut payload = records.bytes().to_vec();
        payload.extend_from_slice(control_batch(&leader_change, 1, 0).bytes());
        let entries = split_entries(&payload, 1 << 20).unwrap();
        let metas: Vec<EntryMeta> = entries.into_iter().map(|(meta, _)| meta).collect();
        assert_eq!(metas, vec![meta, leader_change]);
        assert!(split_entries(&payload[..payload.len() - 1], 1 << 20).is_err());
        let mut corrupt = payload.clone();
        corrupt[70] ^= 1;
        assert!(split_entries(&corrupt, 1 << 20).is_err());
        assert!(
            split_entries(&payload, records.size_bytes() - 1).is_err(),
            "a batch the log could not hold is refused"
        );
    }
}
