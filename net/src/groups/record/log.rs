//! The records of a `__consumer_offsets` log as a load reads them, batch by batch, folded into
//! what [`GroupCoordinator::replay`] rebuilds a coordinator from: the latest record of each
//! key, in the order they were written (the log is compacted: gaps and removed tombstones
//! change nothing), and the transactions still open at the log's end.
//!
//! A transaction's records (a TxnOffsetCommit's transactional batch) wait for their producer's
//! marker, as Kafka's `loadGroupsAndOffsets` keeps them: a COMMIT makes each the latest of its
//! key unless a later record of the key was written first (Kafka keeps the most recent
//! commit), an ABORT drops them, and those still waiting at the end come back pending in their
//! transactions (superseded where a later record of the key is in the log). Pure: the driver
//! (`shard/loaded.rs`) reads the log and feeds it; tests feed it a run's effects.

use std::collections::HashMap;

use bytes::Bytes;
use engine::batch::TransactionMarker;

use super::{GroupRecord, RecordError};
use crate::groups::{GroupConfig, GroupCoordinator, TransactionProducer};

/// A log being read, oldest batch first (see the module documentation).
#[derive(Debug, Default)]
pub struct LogReplay {
    /// By key: the place of its latest record and its value (`None`: a tombstone).
    latest: HashMap<Bytes, (u64, Option<Bytes>)>,
    /// By producer id: its open transaction's epoch and records, each with its place.
    open: HashMap<i64, (i16, Vec<(u64, GroupRecord)>)>,
    /// Places records in the order they were read.
    place_last: u64,
}

impl LogReplay {
    /// A record of a plain batch.
    pub fn plain(&mut self, record: GroupRecord) {
        self.place_last += 1;
        self.latest
            .insert(record.key, (self.place_last, record.value));
    }

    /// A record of `producer`'s transactional batch.
    pub fn transactional(&mut self, producer: TransactionProducer, record: GroupRecord) {
        self.place_last += 1;
        let (epoch, records) = self
            .open
            .entry(producer.producer_id)
            .or_insert((producer.producer_epoch, Vec::new()));
        *epoch = (*epoch).max(producer.producer_epoch);
        records.push((self.place_last, record));
    }

    /// A transaction's marker: its producer's records are committed or dropped.
    pub fn marker(&mut self, marker: &TransactionMarker) {
        let Some((_, records)) = self.open.remove(&marker.producer_id) else {
            return;
        };
        if !marker.committed {
            return;
        }
        for (place, record) in records {
            let newer = self
                .latest
                .get(&record.key)
                .is_none_or(|(last, _)| *last < place);
            if newer {
                self.latest.insert(record.key, (place, record.value));
            }
        }
    }

    /// The coordinator the log describes (see [`GroupCoordinator::replay`]), with the
    /// transactions still open pending.
    pub fn replay(
        self,
        config: GroupConfig,
        seed: u64,
        now_ms: i64,
    ) -> Result<GroupCoordinator, RecordError> {
        let LogReplay { latest, open, .. } = self;
        let mut open: Vec<(TransactionProducer, u64, GroupRecord, bool)> = open
            .into_iter()
            .flat_map(|(producer_id, (producer_epoch, records))| {
                let producer = TransactionProducer {
                    producer_id,
                    producer_epoch,
                };
                let latest = &latest;
                records.into_iter().map(move |(place, record)| {
                    let superseded = latest
                        .get(&record.key)
                        .is_some_and(|(last, _)| *last > place);
                    (producer, place, record, superseded)
                })
            })
            .collect();
        open.sort_unstable_by_key(|(_, place, _, _)| *place);
        let mut records: Vec<(u64, GroupRecord)> = latest
            .into_iter()
            .map(|(key, (place, value))| (place, GroupRecord { key, value }))
            .collect();
        records.sort_unstable_by_key(|(place, _)| *place);
        let mut coordinator = GroupCoordinator::replay(
            config,
            seed,
            records.iter().map(|(_, record)| record),
            now_ms,
        )?;
        for (producer, _, record, superseded) in open {
            coordinator.restore_transactional_offset(producer, &record, superseded)?;
        }
        Ok(coordinator)
    }
}
