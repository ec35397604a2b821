//! The append path: a batch checked, numbered and placed in the active segment's bookkeeping
//! and the tail cache, queued for the shard's commit cycle, and the waits for it to be written
//! or durable. Its own room because it is the hot path every produce and every replica's copy
//! takes, and the one place offsets are handed out (the producer check and the numbering sit
//! in one synchronous section, see the log's module doc).
//!
//! # What replication uses
//! A replica's Raft core decides offsets and epochs; the log keeps them and refuses what would
//! break them. [`PartitionLog::append`] refuses an epoch older than the log's latest
//! (`StaleLeaderEpoch`). [`PartitionLog::append_replicated`] keeps a batch's offsets and epoch, and
//! is refused after a failed write until [`PartitionLog::clear_fault`], since the batch was
//! numbered for a log end that is gone ([`PartitionLog::fault`] says why the log cannot take such
//! batches now; `flush.rs`). [`PartitionLog::check_holds`] and [`PartitionLog::check_duplicate`]
//! run before the core numbers a batch: once the core has numbered a batch, nothing about the batch
//! may make the log refuse it. [`PartitionLog::reset_to`] starts the log over at a leader's log
//! start. [`PartitionLog::set_replicated_high_watermark`] makes the high-water mark (what readers
//! see, and what retention, DeleteRecords and the cleaner stop at) the Raft commit point instead of
//! the written end. [`PartitionLog::read_verified`] is a follower's read: every batch's CRC
//! checked, a bad one recorded as damage (`damage.rs`) rather than sent.

use bytes::BytesMut;

use super::producers::{Verdict, VerificationGuard};
use super::transactions;
use super::{AppendReceipt, Attempt, LogState, PartitionLog, Shared, UnflushedBatch};
use crate::batch::{self, BatchError, BatchHeader, CheckedBatch};
use crate::error::LogError;
use crate::tail_cache::CachedBatch;

impl PartitionLog {
    /// Checks `batch` as a producer's ([`CheckedBatch::produced`], against this log's
    /// `batch_bytes_max`) and appends it ([`PartitionLog::append_checked`]): for callers that
    /// hold raw bytes (tools, tests, benchmarks). The broker's produce path checks once, at
    /// its edge, and appends the checked batch.
    pub async fn append(
        &self,
        batch: BytesMut,
        leader_epoch: i32,
    ) -> Result<AppendReceipt, LogError> {
        let batch = CheckedBatch::produced(batch, self.shared.config().batch_bytes_max)?;
        self.append_checked(batch, leader_epoch).await
    }

    /// Appends one checked record batch: checks an idempotent producer's epoch and sequence,
    /// gives the batch the next offsets and `leader_epoch`, and queues it for the commit cycle.
    /// Waits only when `unflushed_bytes_max` bytes are already waiting to be written
    /// (back-pressure), a maintenance operation is running, or `leader_epoch` is new to the
    /// log (it is recorded on disk first). A rejected batch leaves the log unchanged; a
    /// producer's retry of a batch already in the log is answered with that batch's offsets
    /// and `duplicate: true`.
    pub async fn append_checked(
        &self,
        batch: CheckedBatch,
        leader_epoch: i32,
    ) -> Result<AppendReceipt, LogError> {
        let header = *batch.header();
        let verification = batch.verification();
        let mut batch = batch.into_bytes();
        loop {
            self.wait_for_room(batch.len()).await?;
            match self.try_append(&mut batch, &header, verification, leader_epoch)? {
                Attempt::Appended(receipt) => {
                    self.shared.resources.tail_budget().trim();
                    return Ok(receipt);
                }
                Attempt::NewEpochAt(base_offset) => {
                    self.shared.record_epoch(leader_epoch, base_offset).await?
                }
            }
        }
    }

    /// [`PartitionLog::append`]'s synchronous part: checks and places the batch at the log
    /// end, unless its epoch must first be recorded.
    pub(super) fn try_append(
        &self,
        batch: &mut BytesMut,
        header: &BatchHeader,
        verification: Option<VerificationGuard>,
        leader_epoch: i32,
    ) -> Result<Attempt, LogError> {
        if let Some(receipt) = self.check_duplicate(header, verification)? {
            return Ok(Attempt::Appended(receipt));
        }
        self.check_transaction_marker(header, batch)?;
        let mut state = self.shared.state.borrow_mut();
        let base_offset = state.log_end_offset;
        if state.epoch_needs_recording(leader_epoch, base_offset)? {
            return Ok(Attempt::NewEpochAt(base_offset));
        }
        // Numbered here, at the end as it is now: a write that failed earlier is behind us.
        state.write_failure = None;
        batch::assign_offset_and_epoch(batch, base_offset as i64, leader_epoch);
        let header = BatchHeader {
            base_offset: base_offset as i64,
            leader_epoch,
            ..*header
        };
        Ok(Attempt::Appended(self.place(
            &mut state,
            std::mem::take(batch),
            &header,
        )))
    }

    /// Appends a batch exactly as another replica's log holds it: its offsets and epoch are
    /// kept (a follower copying its leader, or a leader placing a batch its Raft core
    /// numbered). The batch must start at or after the log end; a start after it is a gap the
    /// leader's cleaner left, recorded first so that recovery accepts it. Producer sequences
    /// are not checked (the leader checked them) but recorded, for when this replica leads.
    /// Its size is bounded only by what the log can hold unwritten, not by `batch_bytes_max`:
    /// a topic's `max.message.bytes` may have been lowered since its leader took the batch.
    pub async fn append_replicated(&self, batch: CheckedBatch) -> Result<AppendReceipt, LogError> {
        let header = *batch.header();
        let mut batch = batch.into_bytes();
        loop {
            self.wait_for_room(batch.len()).await?;
            match self.try_append_replicated(&mut batch, &header)? {
                Attempt::Appended(receipt) => {
                    self.shared.resources.tail_budget().trim();
                    return Ok(receipt);
                }
                Attempt::NewEpochAt(base_offset) => {
                    self.shared
                        .prepare_replicated(header.leader_epoch, base_offset)
                        .await?
                }
            }
        }
    }

    /// [`PartitionLog::append_replicated`]'s synchronous part: places the batch, unless a gap
    /// before it or its epoch must first be recorded (`NewEpochAt` then says to prepare).
    pub(super) fn try_append_replicated(
        &self,
        batch: &mut BytesMut,
        header: &BatchHeader,
    ) -> Result<Attempt, LogError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_open()?;
        if let Some(error) = &state.write_failure {
            return Err(error.clone());
        }
        let log_end_offset = state.log_end_offset;
        let base_offset = match u64::try_from(header.base_offset) {
            Ok(base_offset) if base_offset >= log_end_offset => base_offset,
            _ => {
                return Err(LogError::BelowLogEnd {
                    base_offset: header.base_offset,
                    log_end_offset,
                })
            }
        };
        let is_gap = base_offset > log_end_offset && base_offset > state.gaps_allowed_below;
        if is_gap || state.epoch_needs_recording(header.leader_epoch, base_offset)? {
            return Ok(Attempt::NewEpochAt(base_offset));
        }
        if base_offset > log_end_offset {
            state.active_segment_mut().end_offset = base_offset;
            state.log_end_offset = base_offset;
        }
        Ok(Attempt::Appended(self.place(
            &mut state,
            std::mem::take(batch),
            header,
        )))
    }

    /// An idempotent producer's retry of a batch the log already holds: its receipt (offsets and
    /// flush handle of the original), so a leader answers it without replicating it again.
    /// `None` for a new batch; an error for one the producer table refuses (sequence gap, old
    /// producer epoch, a transaction not verified with `verification`'s guard). Synchronous,
    /// so a caller that appends right after, with no await in between, appends exactly what
    /// this checked.
    pub fn check_duplicate(
        &self,
        header: &BatchHeader,
        verification: Option<VerificationGuard>,
    ) -> Result<Option<AppendReceipt>, LogError> {
        let mut state = self.shared.state.borrow_mut();
        state.check_open()?;
        match state.producers.check(header, verification)? {
            Verdict::Duplicate {
                base_offset,
                last_offset,
            } => {
                let ticket = state.ticket_covering(last_offset + 1);
                Ok(Some(AppendReceipt {
                    base_offset,
                    last_offset,
                    duplicate: true,
                    ticket,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Starts the verification of a transactional producer's request (KIP-890; Kafka's
    /// `UnifiedLog.maybeStartTransactionVerification`): the guard its batch must show to open
    /// the producer's transaction here, [`VerificationGuard::SENTINEL`] if it is open already
    /// (no need to ask the coordinator).
    pub fn start_transaction_verification(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Result<VerificationGuard, LogError> {
        let now_ms = self.shared.clock.now_ms();
        let mut state = self.shared.state.borrow_mut();
        state.check_open()?;
        Ok(state
            .producers
            .start_verification(producer_id, producer_epoch, base_sequence, now_ms))
    }

    /// Kafka's checks of a transaction marker (`bytes`, a batch with `header`) against its
    /// producer's state before it is numbered: not from an older producer epoch
    /// (`InvalidProducerEpoch`) nor from an older coordinator (`TransactionCoordinatorFenced`)
    /// than the producer's last marker. `Ok` for any other batch. [`PartitionLog::append`]
    /// runs it; a replica's leader runs it (with [`PartitionLog::check_duplicate`]) before its
    /// Raft core numbers a marker. Synchronous, like `check_duplicate`.
    pub fn check_transaction_marker(
        &self,
        header: &BatchHeader,
        bytes: &[u8],
    ) -> Result<(), LogError> {
        match transactions::marker_of(header, bytes) {
            Some(marker) => self.shared.state.borrow().producers.check_marker(&marker),
            None => Ok(()),
        }
    }

    /// Whether the log can take a batch of `size_bytes` at all: not beyond what it holds
    /// unwritten (`unflushed_bytes_max`, never below `batch_bytes_max`). A replica asks
    /// before its Raft core numbers a batch, since a batch numbered but not placed would leave
    /// the core and the log disagreeing.
    pub fn check_holds(&self, size_bytes: usize) -> Result<(), LogError> {
        let unflushed_bytes_max = self.shared.config().unflushed_bytes_max;
        if size_bytes > unflushed_bytes_max {
            return Err(LogError::InvalidBatch(BatchError::TooLarge {
                length_bytes: size_bytes,
                limit_bytes: unflushed_bytes_max,
            }));
        }
        Ok(())
    }

    /// Waits until a batch of `size_bytes` fits the back-pressure bound and no maintenance runs
    /// (or the log is closing or failed: the caller finds out). A batch larger than the bound
    /// itself would never fit: refused at once.
    pub(super) async fn wait_for_room(&self, size_bytes: usize) -> Result<(), LogError> {
        self.check_holds(size_bytes)?;
        // Fixed from the open on (`LogConfig::same_sizing`).
        let unflushed_bytes_max = self.shared.config().unflushed_bytes_max;
        self.shared
            .wait_until(|state| {
                state.closing
                    || state.failed.is_some()
                    || (!state.maintenance
                        && state.unflushed_bytes + size_bytes <= unflushed_bytes_max)
            })
            .await;
        Ok(())
    }

    /// Puts a batch whose offsets and epoch are final at the log end: the active segment (rolled
    /// first if due), the producer table (and the transaction a marker closes), the commit
    /// cycle's queue and the tail cache. Every append path ends here, so every batch, however
    /// it came, updates the transaction state.
    pub(super) fn place(
        &self,
        state: &mut LogState,
        batch: BytesMut,
        header: &BatchHeader,
    ) -> AppendReceipt {
        // Read at each append: a roll follows the settings of the moment it happens.
        let config = self.shared.config();
        let now_ms = self.shared.clock.now_ms();
        let size_bytes = batch.len();
        let base_offset = header.base_offset as u64;
        let records = header.records_count as u64;
        state.roll_if_due(&config, size_bytes as u64, records, now_ms);
        let active = state.active_segment_mut();
        assert_eq!(
            active.end_offset, base_offset,
            "appends are contiguous: the batch starts at the active segment's end"
        );
        let position = active.appended_bytes;
        active.note_batch(position, header, config.index_interval_bytes);
        let segment_base_offset = active.base_offset;
        let last_offset = header.last_offset() as u64;
        let marker = transactions::marker_of(header, &batch);
        if let Some(aborted) = state.producers.record(header, marker.as_ref(), now_ms) {
            state
                .active_segment_mut()
                .aborted_transactions
                .push(aborted);
        }
        let bytes = batch.freeze();
        state.log_end_offset = last_offset + 1;
        state.unflushed.push_back(UnflushedBatch {
            segment_base_offset,
            last_offset,
            bytes: bytes.clone(),
        });
        state.unflushed_bytes += size_bytes;
        state.tail_cache.push(CachedBatch {
            base_offset,
            last_offset,
            bytes,
        });
        Shared::note_tail_use(&self.shared);
        self.shared.request_commit();
        AppendReceipt {
            base_offset,
            last_offset,
            duplicate: false,
            ticket: state.open_ticket.clone(),
        }
    }

    /// Waits until the batch is written, in the shard's journal or its segment file (what
    /// Kafka's acks=1 promises: it survives the broker process, not a power loss).
    pub async fn wait_written(&self, receipt: &AppendReceipt) -> Result<(), LogError> {
        let ticket = &receipt.ticket;
        ticket
            .waiters
            .wait_for(|| ticket.written.borrow().clone())
            .await
    }

    /// Waits until the batch is written and covered by an `fdatasync` (acks=all on one node).
    pub async fn wait_durable(&self, receipt: &AppendReceipt) -> Result<(), LogError> {
        let ticket = &receipt.ticket;
        ticket.durable_wanted.set(true);
        ticket
            .waiters
            .wait_for(|| {
                if let Some(result) = &*ticket.durable.borrow() {
                    return Some(result.clone());
                }
                if matches!(&*ticket.written.borrow(), Some(Ok(()))) {
                    // Written by a write that nobody needed synced: ask for a sync now.
                    self.shared.state.borrow_mut().sync_requested = true;
                    self.shared.request_commit();
                }
                None
            })
            .await
    }

    /// Resolves once the high-water mark (what readers may see) is above `offset`, or the log
    /// is closing or failed.
    pub async fn wait_for_high_watermark_above(&self, offset: u64) {
        self.shared
            .wait_until(|state| {
                state.high_watermark() > offset || state.closing || state.failed.is_some()
            })
            .await
    }

    /// Resolves once the last stable offset (what `read_committed` readers may see) is above
    /// `offset`, or the log is closing or failed.
    pub async fn wait_for_stable_offset_above(&self, offset: u64) {
        self.shared
            .wait_until(|state| {
                state.last_stable_offset() > offset || state.closing || state.failed.is_some()
            })
            .await
    }

    /// Appends and waits for durability: the batch survives a crash once this returns `Ok`.
    pub async fn append_durable(
        &self,
        batch: BytesMut,
        leader_epoch: i32,
    ) -> Result<AppendReceipt, LogError> {
        let receipt = self.append(batch, leader_epoch).await?;
        self.wait_durable(&receipt).await?;
        Ok(receipt)
    }

    /// Makes everything appended so far durable.
    pub async fn sync(&self) -> Result<(), LogError> {
        let ticket = {
            let mut state = self.shared.state.borrow_mut();
            if let Some(error) = &state.failed {
                return Err(error.clone());
            }
            let log_end_offset = state.log_end_offset;
            state.ticket_covering(log_end_offset)
        };
        self.shared.request_commit();
        let receipt = AppendReceipt {
            base_offset: 0,
            last_offset: 0,
            duplicate: false,
            ticket,
        };
        self.wait_durable(&receipt).await
    }
}
