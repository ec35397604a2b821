//! Who leads each partition as far as this broker knows ([`LeaderTable`]), shared by the
//! broker's shards.
//!
//! Other brokers' leaderships come from their reports, sent as soon as a broker wins a
//! leadership (at the tick that notes it) and every 500 ms: with the periodic report alone, a
//! broker without a replica of a partition would answer LEADER_NOT_AVAILABLE for up to a report
//! interval after the others named the new leader. Leaders put their in-sync voters in their
//! reports, which is the ISR every broker's Metadata gives.

use std::collections::HashMap;
use std::sync::RwLock;

use engine::shard::PartitionId;

use super::wire::LeaderReport;
use crate::message::{NodeId, TermLimit, TERM_MAX};

/// Who leads each partition as far as this broker knows: its own replicas' view, and what
/// other brokers reported (the report of the highest term wins). Shared by the broker's
/// shards.
///
/// It also keeps the latest term it knows of for a partition whose leader it no longer
/// knows: a client is told of partition leaders with their epoch (the term) and ignores any
/// later answer with an older one (librdkafka does), so a broker that can only guess at a
/// leader must still give the term it knows, or its guess is thrown away.
#[derive(Debug, Default)]
pub struct LeaderTable {
    leaders: RwLock<HashMap<PartitionId, KnownLeader>>,
    /// The in-sync voters a leader reported, with its term.
    in_sync: RwLock<HashMap<PartitionId, (u64, Vec<NodeId>)>>,
}

/// The latest term known for a partition and its leader in that term, if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KnownLeader {
    leader: Option<NodeId>,
    term: u64,
}

fn report_leader(
    leaders: &mut HashMap<PartitionId, KnownLeader>,
    partition: &PartitionId,
    leader: NodeId,
    term: u64,
) {
    let reported = KnownLeader {
        leader: Some(leader),
        term,
    };
    match leaders.get(partition) {
        Some(known) if known.term > term || *known == reported => {}
        _ => {
            leaders.insert(partition.clone(), reported);
        }
    }
}

fn forget_stale_leader(
    leaders: &mut HashMap<PartitionId, KnownLeader>,
    partition: &PartitionId,
    own: NodeId,
    term: u64,
) {
    match leaders.get_mut(partition) {
        Some(known) => {
            if known.leader == Some(own) || known.term < term {
                *known = KnownLeader {
                    leader: None,
                    term: known.term.max(term),
                };
            }
        }
        None => {
            leaders.insert(partition.clone(), KnownLeader { leader: None, term });
        }
    }
}

impl LeaderTable {
    /// Records that `leader` leads `partition` in `term`, unless a later term is known.
    pub fn report(&self, partition: &PartitionId, leader: NodeId, term: u64) {
        report_leader(&mut self.write_leaders(), partition, leader, term);
    }

    /// This broker's replica of `partition` knows of no leader in its `term`: an entry naming
    /// this broker (`own`: it does not lead) or an older term is stale, and its leader goes
    /// (the term stays), so Metadata does not send clients to a deposed leader, such as a
    /// leader cut off from the others that stepped down.
    pub fn forget_stale(&self, partition: &PartitionId, own: NodeId, term: u64) {
        forget_stale_leader(&mut self.write_leaders(), partition, own, term);
    }

    /// What this broker's replicas (`own` is this broker) now know of their partitions'
    /// leaders, `(partition, leader, term)`, written together under one lock: a known leader
    /// as [`LeaderTable::report`], none as [`LeaderTable::forget_stale`].
    pub fn note_own<'a>(
        &self,
        own: NodeId,
        views: impl IntoIterator<Item = (&'a PartitionId, Option<NodeId>, u64)>,
    ) {
        let mut leaders = self.write_leaders();
        for (partition, leader, term) in views {
            match leader {
                Some(leader) => report_leader(&mut leaders, partition, leader, term),
                None => forget_stale_leader(&mut leaders, partition, own, term),
            }
        }
    }

    fn write_leaders(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PartitionId, KnownLeader>> {
        self.leaders
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What broker `from` reported of a partition it leads; refused if its term does not fit
    /// a Kafka leader epoch (Metadata would name it as epoch `i32::MAX`, and clients would
    /// ignore every true answer after it).
    pub fn note_report(&self, from: NodeId, report: LeaderReport) -> Option<TermLimit> {
        if report.term > TERM_MAX {
            return Some(TermLimit::PeerTerm {
                from,
                term: report.term,
            });
        }
        let partition = PartitionId::new(report.topic, report.partition);
        self.report(&partition, from, report.term);
        self.report_in_sync(&partition, report.term, &report.in_sync);
        None
    }

    /// `partition`'s leader and its term, if known.
    pub fn leader(&self, partition: &PartitionId) -> Option<(NodeId, u64)> {
        let known = self.latest(partition)?;
        Some((known.leader?, known.term))
    }

    /// The latest term this broker knows of for `partition` and its leader in it, if known
    /// (a term without a leader: an election, or the leader known to be deposed).
    pub fn latest_term(&self, partition: &PartitionId) -> Option<(u64, Option<NodeId>)> {
        let known = self.latest(partition)?;
        Some((known.term, known.leader))
    }

    fn latest(&self, partition: &PartitionId) -> Option<KnownLeader> {
        self.leaders
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(partition)
            .copied()
    }

    /// Records the in-sync voters of `partition`'s leader in `term`, unless a later term's
    /// are known.
    pub fn report_in_sync(&self, partition: &PartitionId, term: u64, in_sync: &[NodeId]) {
        let mut known = self
            .in_sync
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match known.get(partition) {
            Some((known_term, _)) if *known_term > term => {}
            Some((known_term, voters)) if *known_term == term && voters == in_sync => {}
            _ => {
                known.insert(partition.clone(), (term, in_sync.to_vec()));
            }
        }
    }

    /// `partition`'s in-sync voters, if its current leader (as known here) reported them.
    pub fn in_sync(&self, partition: &PartitionId) -> Option<Vec<NodeId>> {
        let (_, term) = self.leader(partition)?;
        self.in_sync
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(partition)
            .filter(|(reported_term, _)| *reported_term == term)
            .map(|(_, in_sync)| in_sync.clone())
    }

    /// Forgets a deleted topic's partitions.
    pub fn forget_topic(&self, topic: &str) {
        self.leaders
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|partition, _| partition.topic != topic);
        self.in_sync
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|partition, _| partition.topic != topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_table_keeps_the_latest_term_and_drops_what_a_replica_knows_is_stale() {
        let table = LeaderTable::default();
        let partition = PartitionId::new("t", 0);
        table.report(&partition, 2, 5);
        table.report(&partition, 3, 4);
        assert_eq!(
            table.leader(&partition),
            Some((2, 5)),
            "an older term's report loses"
        );
        // Broker 1's replica, in term 5 and knowing no leader, does not contradict node 2.
        table.forget_stale(&partition, 1, 5);
        assert_eq!(table.leader(&partition), Some((2, 5)));
        // Broker 2's own replica stepped down (cut off): it knows it does not lead, and
        // still knows term 5 is the latest.
        table.forget_stale(&partition, 2, 5);
        assert_eq!(table.leader(&partition), None);
        assert_eq!(table.latest_term(&partition), Some((5, None)));
        table.report(&partition, 3, 4);
        assert_eq!(table.leader(&partition), None, "term 4 is over");
        table.report(&partition, 3, 6);
        assert_eq!(table.leader(&partition), Some((3, 6)));
        // A replica already in term 7 knows term 6's leader is gone.
        table.forget_stale(&partition, 1, 7);
        assert_eq!(table.leader(&partition), None);
        assert_eq!(table.latest_term(&partition), Some((7, None)));
        let past_max = LeaderReport {
            topic: "t".into(),
            partition: 0,
            term: TERM_MAX + 1,
            in_sync: vec![3],
        };
        assert_eq!(
            table.note_report(3, past_max),
            Some(TermLimit::PeerTerm {
                from: 3,
                term: TERM_MAX + 1
            })
        );
        assert_eq!(
            table.latest_term(&partition),
            Some((7, None)),
            "a term past the last leader epoch is refused"
        );
        let unknown = PartitionId::new("t", 1);
        assert_eq!(table.latest_term(&unknown), None);
        table.forget_stale(&unknown, 1, 3);
        assert_eq!(table.leader(&unknown), None);
        assert_eq!(table.latest_term(&unknown), Some((3, None)));
    }
}
