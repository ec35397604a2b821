//! A transaction's commit, through librdkafka's own `rd_kafka_commit_transaction`.
//!
//! rust-rdkafka's `Producer::commit_transaction` (0.38, and its main branch as of 2026-12)
//! calls its own `BaseProducer::flush` first. That flush asks librdkafka whether any message is
//! still in flight and, if one is, polls the event queue for `min(timeout, 100 ms)`; its
//! `BaseProducer::poll` serves events until that time is up and only then returns, however
//! early the last delivery report came. A commit follows its transaction's last send at once,
//! so a message is always in flight then, and every commit took at least 100 ms: a floor set by
//! the client, which hid the broker's commit latency (a few milliseconds).
//!
//! librdkafka's commit flushes too, but by waiting on a condition variable until the delivery
//! reports have been served, which the `ThreadedProducer`'s polling thread does as they
//! arrive; then it sends EndTxn and waits for the coordinator's answer. That call is what the
//! other librdkafka bindings make (confluent-kafka's `commit_transaction`), so the latency
//! measured here is the same as theirs. rust-rdkafka keeps its error type's constructor to
//! itself, so the error is read here, into `CommitError`.

use std::ffi::{c_int, CStr};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};
use rdkafka::types::RDKafkaErrorCode;

/// Why librdkafka could not commit a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct CommitError {
    pub code: RDKafkaErrorCode,
    pub reason: String,
    /// The transaction must be aborted, after which the producer can go on (librdkafka's
    /// `rd_kafka_error_txn_requires_abort`); otherwise the error is fatal or the commit's
    /// outcome unknown, and the run cannot go on.
    pub requires_abort: bool,
}

/// Commits the producer's open transaction: flushes its messages, then waits for the
/// coordinator's answer to EndTxn, up to `timeout` in all. Someone must serve the producer's
/// delivery reports meanwhile (the `ThreadedProducer`'s polling thread), or the flush waits for
/// the whole timeout.
pub fn commit_transaction<C: ClientContext>(
    producer: &Client<C>,
    timeout: Duration,
) -> Result<(), CommitError> {
    let timeout_ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
    // SAFETY: the handle belongs to `producer`, alive for the whole call; librdkafka's
    // transactional API may be called from any thread (one call at a time: the caller's sender
    // thread is the only one that begins, commits or aborts).
    let error = unsafe { rdsys::rd_kafka_commit_transaction(producer.native_ptr(), timeout_ms) };
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: `error` is a valid error object that librdkafka handed over to us; its string
    // lives as long as it does and is copied out before it is destroyed, here and only here.
    unsafe {
        let failure = CommitError {
            code: RDKafkaErrorCode::from(rdsys::rd_kafka_error_code(error)),
            reason: CStr::from_ptr(rdsys::rd_kafka_error_string(error))
                .to_string_lossy()
                .into_owned(),
            requires_abort: rdsys::rd_kafka_error_txn_requires_abort(error) != 0,
        };
        rdsys::rd_kafka_error_destroy(error);
        Err(failure)
    }
}
