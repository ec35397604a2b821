//! The shard's partition logs: opened once, on first use or at start-up
//! ([`ShardContext::partition_log`], [`ShardContext::open_owned_partitions`]), brought up to
//! their topic's configuration, held to the retention limits, removed with their topic, and
//! closed at shutdown.
//!
//! An open also runs the runtime's one-time record rewrite (`RuntimeConfig::record_rewrite`) on
//! a log of its topic whose directory has no marker of it, before the log is handed to anyone:
//! so no reader, coordinator or follower ever sees a record in the format it replaces.
//!
//! During the start-up load, requests wait on the partition's slot. Logs are opened and closed
//! `PARTITIONS_OPENING_MAX` and `PARTITIONS_CLOSING_MAX` at a time, so their I/O and syncs
//! overlap without opening every file of the shard at once.
//!
//! In a cluster (`RuntimeConfig::replicated_partitions`) a partition whose replica this broker
//! does not run (yet) is refused with `NotLeader`, and its log is opened by its replica, never at
//! start-up: after a restart the logs are on disk before the metadata log says which replicas
//! to run, and a produce taken into a bare log would be acknowledged without the other replicas.
//! This includes the internal topics.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::future::LocalBoxFuture;
use futures::StreamExt;

use super::calls::ShardCall;
use super::context::ShardContext;
use super::replicated::ClientAccess;
use super::{PartitionId, PartitionStats};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::log::PartitionLog;

/// A partition log opened at most once, on first use, by whichever task gets there first.
pub(super) type PartitionSlot = Rc<futures::lock::Mutex<Option<Rc<PartitionLog>>>>;

/// Partition logs a shard opens at once at start-up, and closes at once at shutdown: enough to
/// keep the disk busy with the reads of recovery and the syncs of closing (which io_uring runs
/// concurrently, and the filesystem commits together), few enough that their files (three
/// descriptors each while in use) stay well within the shard's share of `--open-files-max`.
/// Redpanda bounds the same (`storage_max_concurrent_replay`, its close flushes).
const PARTITIONS_OPENING_MAX: usize = 64;
const PARTITIONS_CLOSING_MAX: usize = 64;

impl ShardContext {
    /// Closes `partition`'s log and deletes its directory.
    pub async fn remove_partition(&self, partition: PartitionId) -> Result<(), LogError> {
        self.dispatch(&partition.clone(), RemoveRequest { partition })
            .await
    }

    /// Brings `partition`'s log, if open, up to its topic's configuration as the catalog has
    /// it now (after the topic's configs were altered there). Reading the catalog on the owning
    /// shard, rather than taking a configuration from the caller, means concurrent alterations
    /// cannot leave an older one in effect.
    pub async fn reload_log_config(&self, partition: PartitionId) -> Result<(), LogError> {
        self.dispatch(&partition.clone(), ReloadConfigRequest { partition })
            .await
    }

    async fn remove_local(&self, partition: &PartitionId) -> Result<(), LogError> {
        // The slot stays in the map, locked, until the directory is gone: a request that
        // arrives meanwhile waits on it and then finds no directory (`UnknownPartition`). Taken
        // out of the map first, a request arriving during the close would make a new slot,
        // reopen the log from the directory about to be deleted, and leave an open log with no
        // files for the shutdown to close.
        let known = self.state.partitions.borrow().get(partition).cloned();
        let Some(slot) = known else {
            return self.delete_partition_directory(partition);
        };
        let mut opened = slot.lock().await;
        let closed = match opened.take() {
            Some(log) => {
                // A task still holding the log (a long poll, the cleaner) keeps its
                // descriptors and reads what they still see; a cleaning of it stops, and the
                // log closes under it, so none of its writes comes after the files are gone.
                log.stop_cleaning();
                log.close_while_held().await
            }
            None => Ok(()),
        };
        let removed = closed.and_then(|()| self.delete_partition_directory(partition));
        self.forget_slot(partition, &slot);
        removed
    }

    /// Takes `partition`'s slot out of the map if it is still `slot` (a topic created again
    /// under the same name has a slot of its own).
    fn forget_slot(&self, partition: &PartitionId, slot: &PartitionSlot) {
        let mut partitions = self.state.partitions.borrow_mut();
        if partitions
            .get(partition)
            .is_some_and(|current| Rc::ptr_eq(current, slot))
        {
            partitions.remove(partition);
        }
    }

    fn delete_partition_directory(&self, partition: &PartitionId) -> Result<(), LogError> {
        let dir = self.state.data_dir.join(partition.directory_name());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(LogError::io("deleting a partition directory", error)),
        }
    }

    async fn reload_config_local(&self, partition: &PartitionId) -> Result<(), LogError> {
        let slot = self.state.partitions.borrow().get(partition).cloned();
        let Some(slot) = slot else {
            return Ok(());
        };
        // Waits for an open in progress, which may have read the configuration before the
        // alteration.
        let opened = slot.lock().await;
        match opened.as_ref() {
            Some(log) => log.set_config(self.log_config_for(&partition.topic)),
            None => Ok(()),
        }
    }

    /// The log configuration of `topic`'s partitions: the broker's with the topic's overrides,
    /// as the catalog has them now.
    fn log_config_for(&self, topic: &str) -> LogConfig {
        match &self.state.topic_log_config {
            Some(topic_log_config) => topic_log_config.for_topic(topic),
            None => self.state.log_config.clone(),
        }
    }

    /// The partition's log, opened (and recovered, and its records rewritten once if the
    /// runtime has a rewrite for its topic) on first use; its directory must exist. Only on the
    /// owning shard.
    pub async fn partition_log(
        &self,
        partition: &PartitionId,
    ) -> Result<Rc<PartitionLog>, LogError> {
        if self.owner_of(partition) != self.state.shard_id {
            // Only the owning shard opens a partition. In a cluster the owner changes when the
            // metadata log places a replica here or takes it away, and a request may have been
            // sent to the old owner: the client asks again.
            assert!(
                self.partitions_replicated(),
                "only the owning shard opens a partition"
            );
            return Err(LogError::NotLeader { leader: None });
        }
        // Looked up before it is inserted, so the common case clones no name.
        let known = self.state.partitions.borrow().get(partition).cloned();
        let slot = known.unwrap_or_else(|| {
            self.state
                .partitions
                .borrow_mut()
                .entry(partition.clone())
                .or_default()
                .clone()
        });
        let mut opened = slot.lock().await;
        if let Some(log) = opened.as_ref() {
            return Ok(log.clone());
        }
        // Only the catalog creates partition directories (with their topic): a request that
        // races a topic's deletion must not bring the partition back.
        let dir = self.state.data_dir.join(partition.directory_name());
        if !dir.is_dir() {
            return Err(LogError::UnknownPartition(partition.directory_name()));
        }
        let log_config = self.log_config_for(&partition.topic);
        let log = PartitionLog::open_in_after_replay(
            &self.state.committer,
            dir,
            log_config,
            self.state.clock.clone(),
            &self.state.replayed_logs,
        )
        .await?;
        if let Err(error) = self.rewrite_records_once(partition, &log).await {
            // Closed as it is: the next open rewrites what is left (see `rewrite_records`).
            let _ = log.close().await;
            return Err(error);
        }
        let log = Rc::new(log);
        *opened = Some(log.clone());
        Ok(log)
    }

    /// Runs the runtime's record rewrite ([`RuntimeConfig::record_rewrite`]) on `log`, just
    /// opened, if it is of the rewrite's topic and has not been rewritten yet, then marks its
    /// directory; the broker's log says what was rewritten.
    ///
    /// [`RuntimeConfig::record_rewrite`]: super::RuntimeConfig::record_rewrite
    async fn rewrite_records_once(
        &self,
        partition: &PartitionId,
        log: &PartitionLog,
    ) -> Result<(), LogError> {
        let Some(rewrite) = &self.state.record_rewrite else {
            return Ok(());
        };
        let marker = rewrite.done_marker();
        if rewrite.topic() != partition.topic || log.directory().join(marker).exists() {
            return Ok(());
        }
        let mut partition_rewrite = rewrite.start();
        let stats = log
            .rewrite_records(partition_rewrite.as_mut(), self.now_ms())
            .await
            .map_err(|error| match error {
                LogError::Closed => LogError::Closed,
                error => LogError::Corrupt(format!(
                    "the one-time rewrite of {}'s records failed: {error}",
                    partition.directory_name()
                )),
            })?;
        crate::durable_file::replace_file_durably(log.directory(), marker, b"")
            .map_err(|error| LogError::io("marking a partition's records rewritten", error))?;
        if stats.records_rewritten > 0 {
            eprintln!(
                "ferrite: {}: rewrote {} records in place ({}), once (marked by {marker})",
                partition.directory_name(),
                stats.records_rewritten,
                partition_rewrite.summary(),
            );
        }
        Ok(())
    }

    /// The partition's log if it is open now, without waiting (`None` while it is being opened
    /// or closed).
    pub(super) fn open_log(&self, partition: &PartitionId) -> Option<Rc<PartitionLog>> {
        let slot = self.state.partitions.borrow().get(partition).cloned()?;
        let opened = slot.try_lock()?;
        opened.clone()
    }

    /// Offsets and size of every partition log this shard has open, read without waiting (a
    /// log being opened right now is left out until it is). Partitions nobody used since the
    /// shard started are not open, so not listed.
    pub fn partition_stats(&self) -> Vec<PartitionStats> {
        self.state
            .partitions
            .borrow()
            .iter()
            .filter_map(|(partition, slot)| {
                let opened = slot.try_lock()?;
                let log = opened.as_ref()?;
                let replica_faulted = self.client_access(partition) == Some(ClientAccess::Faulted);
                Some(PartitionStats {
                    partition: partition.clone(),
                    log_start_offset: log.log_start_offset(),
                    high_watermark: log.high_watermark(),
                    size_bytes: log.size_bytes(),
                    segment_count: log.segment_count(),
                    healthy: log.fault().is_none() && !replica_faulted,
                    damaged_offsets: log.damaged_offsets(),
                    damage_found: log.damage_found(),
                    last_stable_offset: log.last_stable_offset(),
                    open_transactions: log.open_transaction_count(),
                })
            })
            .collect()
    }

    /// Opens (recovering) the log of every partition this shard owns that has a directory
    /// under the data directory, as a broker loads its logs at start-up: retention, metrics
    /// and consumer lag then cover partitions nobody has asked for since the start. Returns
    /// how many were opened; a log that fails to open is reported and left for its first
    /// request to retry.
    pub async fn open_owned_partitions(&self) -> usize {
        if self.partitions_replicated() {
            // A cluster's replicas open their own logs, on the shards the metadata log puts
            // them on, once it has.
            return 0;
        }
        let entries = match std::fs::read_dir(&self.state.data_dir) {
            Ok(entries) => entries,
            Err(error) => {
                eprintln!(
                    "ferrite: cannot list the data directory {}: {error}",
                    self.state.data_dir.display()
                );
                return 0;
            }
        };
        let mut owned: Vec<PartitionId> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let (topic, partition) = name.rsplit_once('-')?;
                let partition = PartitionId::new(topic, partition.parse().ok()?);
                (partition.directory_name() == name
                    && partition.topic != crate::catalog::CLUSTER_METADATA_TOPIC)
                    .then_some(partition)
            })
            .filter(|partition| self.owner_of(partition) == self.state.shard_id)
            .collect();
        owned.sort();
        let opened = Cell::new(0);
        futures::stream::iter(owned)
            .for_each_concurrent(PARTITIONS_OPENING_MAX, |partition| {
                let opened = &opened;
                async move {
                    if self.is_shutting_down() {
                        return;
                    }
                    match self.partition_log(&partition).await {
                        Ok(_) => opened.set(opened.get() + 1),
                        Err(error) => eprintln!(
                            "ferrite: cannot open {} at start-up: {error}",
                            partition.directory_name()
                        ),
                    }
                }
            })
            .await;
        opened.get()
    }

    /// Resolves once the runtime's start-up open of the partitions this shard owns
    /// ([`ShardContext::open_owned_partitions`]) finished: what a layer above that reads those
    /// logs from the start (a group coordinator loading its state) waits for.
    pub async fn owned_partitions_opened(&self) {
        let state = &self.state;
        state
            .owned_partitions_opened_waiters
            .until(|| state.owned_partitions_opened.get())
            .await
    }

    /// The start-up open of the partitions this shard owns finished.
    pub(super) fn set_owned_partitions_opened(&self) {
        self.state.owned_partitions_opened.set(true);
        self.state.owned_partitions_opened_waiters.wake_all();
    }

    /// Every partition log this shard has open (waiting for opens in progress).
    pub(super) async fn open_logs(&self) -> Vec<(PartitionId, Rc<PartitionLog>)> {
        let slots: Vec<(PartitionId, PartitionSlot)> = self
            .state
            .partitions
            .borrow()
            .iter()
            .map(|(partition, slot)| (partition.clone(), slot.clone()))
            .collect();
        let mut logs = Vec::with_capacity(slots.len());
        for (partition, slot) in slots {
            if let Some(log) = slot.lock().await.clone() {
                logs.push((partition, log));
            }
        }
        logs
    }

    /// Applies the retention limits to every partition log this shard has open: whole
    /// sealed segments past the age or size limit are deleted. Returns how many were.
    pub async fn enforce_retention(&self) -> usize {
        let mut deleted = 0;
        for (partition, log) in self.open_logs().await {
            match log.enforce_retention().await {
                Ok(segments) => deleted += segments,
                Err(LogError::Closed) => {}
                Err(error) => eprintln!(
                    "ferrite: retention of {} failed: {error}",
                    partition.directory_name()
                ),
            }
        }
        deleted
    }

    /// At shutdown: closes every partition log this shard opened (write, `fdatasync`, indexes,
    /// clean marker; no Forget record each, the journal is released whole afterwards),
    /// [`PARTITIONS_CLOSING_MAX`] at a time; a log nobody changed since a clean open costs
    /// nothing. Returns the first error, with its partition; closes the rest regardless.
    ///
    /// Each slot stays in the map, locked, while its log closes, as in a removal: a topic
    /// deletion still being applied (the metadata log's follower runs until the shard stops)
    /// waits for the close and then deletes the directory of a closed log, instead of deleting
    /// it under the close.
    pub(super) async fn close_partitions(&self) -> Result<(), (PartitionId, LogError)> {
        let slots: Vec<(PartitionId, PartitionSlot)> = self
            .state
            .partitions
            .borrow()
            .iter()
            .map(|(partition, slot)| (partition.clone(), slot.clone()))
            .collect();
        let first_error = RefCell::new(None);
        futures::stream::iter(slots)
            .for_each_concurrent(PARTITIONS_CLOSING_MAX, |(partition, slot)| {
                let first_error = &first_error;
                async move {
                    let mut opened = slot.lock().await;
                    // A log a task that outlived the drain still holds is closed as well.
                    let result = match opened.take() {
                        None => Ok(()),
                        Some(log) => log.close_at_shutdown().await,
                    };
                    self.forget_slot(&partition, &slot);
                    drop(opened);
                    if let Err(error) = result {
                        first_error.borrow_mut().get_or_insert((partition, error));
                    }
                }
            })
            .await;
        first_error.into_inner().map_or(Ok(()), Err)
    }

    /// After every partition log closed: the shard's journal holds nothing (its clean
    /// shutdown). A log whose close failed keeps its journal records for the next replay.
    pub(super) async fn close_committer(&self) -> Result<(), LogError> {
        self.state.committer.close().await
    }
}

/// Closes the partition's log and deletes its directory (its topic was deleted).
pub(super) struct RemoveRequest {
    partition: PartitionId,
}

impl ShardCall for RemoveRequest {
    type Answer = Result<(), LogError>;

    fn closed(&self) -> Self::Answer {
        Err(LogError::Closed)
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move { context.remove_local(&self.partition).await })
    }
}

/// Brings the partition's open log up to its topic's current configuration (the topic's
/// configs were altered); a log not open reads it when it opens.
pub(super) struct ReloadConfigRequest {
    partition: PartitionId,
}

impl ShardCall for ReloadConfigRequest {
    type Answer = Result<(), LogError>;

    fn closed(&self) -> Self::Answer {
        Err(LogError::Closed)
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move { context.reload_config_local(&self.partition).await })
    }
}
