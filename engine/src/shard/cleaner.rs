//! The log cleaner of one shard: the task that decides when the compacted partitions it owns
//! are cleaned ([`PartitionLog::clean`] does the cleaning).
//!
//! Every `cleaner_check_interval` (Kafka's `log.cleaner.backoff.ms`) it asks each open log
//! whose cleanup policy compacts whether a cleaning is due ([`PartitionLog::cleaning_due`]:
//! dirty ratio against `min.cleanable.dirty.ratio`, or `max.compaction.lag.ms`) and cleans
//! those that are, dirtiest first, one at a time: a shard's cleanings never compete with
//! each other for its disk and memory (`cleaner_map_bytes_max` is then the shard's bound).
//!
//! It runs in a task queue of its own with few shares and no latency requirement, so that
//! when requests are waiting the reactor runs them first; the cleaning yields at each batch
//! once its time slice is used up. A failed cleaning is reported and the next check tries
//! again. A round counts as work in flight (the shutdown drain closes no log under it), and
//! shutdown stops the cleaning under way at its next batch (before its next commit point),
//! so the drain does not wait for a whole cleaning.

use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use glommio::{Latency, Shares};

use super::context::ShardContext;
use super::PartitionId;
use crate::error::LogError;
use crate::log::PartitionLog;

/// The cleaner's share of the shard against the default queue's 1000 (where requests run):
/// about 5 % of the CPU while requests wait, all of it while none do.
const CLEANER_SHARES: usize = 50;

/// Starts the shard's cleaner task; it ends when shutdown is requested.
pub(super) fn start(context: ShardContext, check_interval: Duration) {
    let queue = glommio::executor().create_task_queue(
        Shares::Static(CLEANER_SHARES),
        Latency::NotImportant,
        "cleaner",
    );
    glommio::spawn_local_into(run(context, check_interval), queue)
        .expect("the cleaner's task queue was just created on this executor")
        .detach();
}

async fn run(context: ShardContext, check_interval: Duration) {
    context
        .every(check_interval, || clean_due_partitions(&context))
        .await
}

/// Cleans every open compacted log whose cleaning is due, dirtiest first; returns how many
/// were cleaned.
async fn clean_due_partitions(context: &ShardContext) -> usize {
    let now_ms = context.now_ms();
    let mut due: Vec<(f64, PartitionId, Rc<PartitionLog>)> = context
        .open_logs()
        .await
        .into_iter()
        .filter(|(_, log)| log.config().cleanup_policy.compacts())
        .filter_map(|(partition, log)| {
            let dirty_ratio = log.cleaning_due(now_ms)?;
            Some((dirty_ratio, partition, log))
        })
        .collect();
    due.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut cleaned = 0;
    for (_, partition, log) in due {
        if context.is_shutting_down() {
            break;
        }
        match clean_until_shutdown(context, &log).await {
            Ok(_) => cleaned += 1,
            Err(LogError::Closed) => {}
            Err(error) => eprintln!(
                "ferrite: cleaning {} failed: {error}",
                partition.directory_name()
            ),
        }
    }
    cleaned
}

/// Cleans `log`, stopping the cleaning at its next batch if shutdown is requested meanwhile.
async fn clean_until_shutdown(
    context: &ShardContext,
    log: &PartitionLog,
) -> Result<crate::log::CleanStats, LogError> {
    let cleaning = std::pin::pin!(log.clean(context.now_ms()));
    let shutdown = std::pin::pin!(context.shutdown_requested());
    match select(cleaning, shutdown).await {
        Either::Left((result, _)) => result,
        Either::Right(((), cleaning)) => {
            log.stop_cleaning();
            cleaning.await
        }
    }
}
