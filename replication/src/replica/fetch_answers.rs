//! A leader's answers to its followers' fetches, as the core's effects carry them out: the log
//! writes and messages of effects whose Raft state is durable go to the writer and the outbox;
//! a fetch with nothing new to send is held until the shard's next fetch round, or until the
//! log or the commit index moves (`unpark`), so that a round's answers to one broker travel
//! together; an answer with entries carries whole batches read from the log, each one's CRC
//! checked.

use std::time::Instant;

use bytes::Bytes;

use super::{entries, PartitionReplica, ReplicaEvent, ROUNDS_TIMED_MAX};
use crate::message::{FetchResult, Index, LogWrite, Message, NodeId};

impl PartitionReplica {
    /// The log writes (to the writer) and messages (to the outbox) of effects whose Raft state
    /// is durable.
    pub(super) fn dispatch(
        &self,
        log_writes: Vec<LogWrite>,
        messages: Vec<crate::message::Envelope>,
        parkable: Option<(NodeId, Message)>,
    ) {
        if !log_writes.is_empty() {
            self.inner.log_writes.borrow_mut().extend(log_writes);
            self.inner.changes.wake_all();
        }
        for envelope in messages {
            let Message::FetchResponse {
                result: FetchResult::Entries { .. },
                fetch_index,
                commit_index,
                ..
            } = envelope.message
            else {
                self.inner
                    .outbox
                    .send(envelope.to, envelope.message, Bytes::new());
                continue;
            };
            // Nothing to read from `fetch_index` on: it is past what the core holds (the usual
            // case, found without touching the log), or past what the log has placed.
            let nothing_to_read = fetch_index > self.inner.node.borrow().log().last_index
                || fetch_index > self.inner.log.log_end_offset();
            let nothing_new = nothing_to_read
                && self.inner.commit_sent.borrow().get(&envelope.to) == Some(&commit_index);
            if let Some((from, fetch)) = parkable.as_ref().filter(|_| nothing_new) {
                // Held until the shard's next fetch round: every fetch held meanwhile is
                // answered in the same turn, so a round's answers to one broker travel
                // together (and its next fetches come back together).
                let round_ticks = self.inner.config.fetch_wait_ticks.max(1);
                let until = (self.inner.ticks.get() / round_ticks + 1) * round_ticks;
                let mut parked = self.inner.parked.borrow_mut();
                // A follower's resent fetch replaces the one held for it.
                parked.retain(|(follower, _, _)| follower != from);
                parked.push((*from, fetch.clone(), until));
                self.inner.outbox.note(ReplicaEvent::FetchHeld);
                continue;
            }
            self.inner
                .commit_sent
                .borrow_mut()
                .insert(envelope.to, commit_index);
            if nothing_to_read {
                // The commit index is the news.
                self.inner
                    .outbox
                    .send(envelope.to, envelope.message, Bytes::new());
                continue;
            }
            {
                let last_index = self.inner.node.borrow().log().last_index;
                let mut rounds = self.inner.rounds.borrow_mut();
                let sent = rounds.entry(envelope.to).or_default();
                if sent.len() == ROUNDS_TIMED_MAX {
                    sent.pop_front();
                }
                sent.push_back((last_index, Instant::now()));
            }
            let replica = self.clone();
            glommio::spawn_local(async move {
                let payload = replica.read_batches(fetch_index).await;
                replica
                    .inner
                    .outbox
                    .send(envelope.to, envelope.message, payload);
            })
            .detach();
        }
    }

    /// The log or the commit index moved: held fetches are answered now.
    pub(super) fn unpark(&self) {
        if self.inner.parked.borrow().is_empty() {
            return;
        }
        self.catch_up();
        let parked: Vec<_> = self.inner.parked.borrow_mut().drain(..).collect();
        for (from, fetch, _) in parked {
            let effects = self.inner.node.borrow_mut().step(from, fetch);
            self.carry_out(effects, None);
        }
    }

    /// Whole batches from the entry at `fetch_index` on, up to the fetch byte budget, each
    /// one's CRC checked (a follower would store a damaged batch as it is sent); empty if there
    /// are none yet, or the read failed (the follower asks again; damage the read found is the
    /// next tick's business, see `damage`).
    async fn read_batches(&self, fetch_index: Index) -> Bytes {
        let log = &self.inner.log;
        let offset = entries::offset_of(fetch_index);
        if offset >= log.log_end_offset() {
            return Bytes::new();
        }
        match log
            .read_verified(
                offset,
                self.inner.config.fetch_bytes_max,
                log.log_end_offset(),
            )
            .await
        {
            Ok(bytes) => Bytes::from(bytes),
            Err(_) => Bytes::new(),
        }
    }
}
