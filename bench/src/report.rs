//! The result of a run: the contract's fields (`produced`, `consumed`, `produce_msgs_per_s`,
//! `produce_mb_per_s`, `ack_latency_ms`, `e2e_latency_ms` with `p50` … `max`; with
//! `--transactional-id`, `transactions` and its `commit_latency_ms`), what else the run
//! counted, and the context needed to compare it with another run: the machine, the time, the
//! librdkafka version and every flag.
//!
//! MB means MiB (2^20 bytes) of message values, as in Kafka's own producer benchmark; keys,
//! headers and the batch format's overhead are not counted.

use std::time::Duration;

use serde::Serialize;

use crate::client_stats::{ProducerLatencySplit, SideLatencyMs};
use crate::consumer::ConsumeTally;
use crate::flags::RunFlags;
use crate::group;
use crate::latency::PercentilesMs;
use crate::machine::{utc_timestamp, Machine};
use crate::producer::ProducerOutcome;
use crate::window::Window;

#[derive(Serialize, Debug)]
pub struct Report {
    pub tool: &'static str,
    pub tool_version: &'static str,
    pub librdkafka_version: String,
    pub started_at: String,
    pub started_unix_s: u64,
    pub machine: Machine,
    pub flags: RunFlags,
    pub topic_created: bool,
    /// With `--consumer-group`: milliseconds from the consumers' subscriptions until every
    /// partition was assigned to a member of each group (the clock started then); null without.
    pub group_settle_ms: Option<f64>,
    /// Seconds the throughputs are measured over (`--duration-s`).
    pub measured_s: f64,
    /// Messages handed to librdkafka, warm-up included.
    pub sent: u64,
    /// Messages of a paced run never sent: librdkafka's queue stayed full until the run's end.
    pub produce_unsent: u64,
    /// Messages acknowledged by the broker, warm-up included.
    pub produced: u64,
    pub produce_errors: u64,
    pub produce_unacknowledged: u64,
    pub producer_queue_full_waits: u64,
    /// Distinct messages of this run received by the consumers, warm-up included; with several
    /// consumer groups, by the group that received the fewest (each group reads every message).
    pub consumed: u64,
    /// The same for each consumer group (one entry without `--consumer-groups`).
    pub consumed_per_group: Vec<u64>,
    pub consume_duplicates: u64,
    pub consume_foreign: u64,
    pub consume_errors: u64,
    /// librdkafka error events (reconnections, timed-out requests) of all clients.
    pub client_errors: u64,
    pub produce_msgs_per_s: f64,
    pub produce_mb_per_s: f64,
    /// Every consumer group's distinct messages, added up (N groups: N times the produce rate).
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    /// Messages acknowledged in each whole second of the measured window.
    pub produce_per_second: Vec<u64>,
    /// Distinct messages received (every group's, added up) in each whole second of the
    /// measured window.
    pub consume_per_second: Vec<u64>,
    pub ack_latency_ms: PercentilesMs,
    /// The producer's librdkafka on where that time went: its own queue, the broker round trip.
    pub producer_latency_split: ProducerLatencySplit,
    pub e2e_latency_ms: PercentilesMs,
    /// With `--transactional-id`: the transactions' commits; null without.
    pub transactions: Option<TransactionsReport>,
    pub error_samples: Vec<String>,
    /// Why the run does not count as clean; empty when every message was acknowledged and
    /// consumed exactly once.
    pub problems: Vec<String>,
}

/// A transactional run's commits.
#[derive(Serialize, Debug)]
pub struct TransactionsReport {
    /// Transactions committed, warm-up included.
    pub committed: u64,
    /// Commits that failed (their transactions aborted).
    pub failed: u64,
    /// From the call of `commit_transaction` to its return, for commits called inside the
    /// measured window.
    pub commit_latency_ms: PercentilesMs,
}

/// Where and when a run happened.
pub struct RunContext {
    pub librdkafka_version: String,
    pub started_unix_s: u64,
    pub machine: Machine,
    pub topic_created: bool,
    pub window: Window,
    /// How long the consumer groups took to settle (`--consumer-group`).
    pub group_settle: Option<Duration>,
}

impl Report {
    pub fn new(
        context: RunContext,
        flags: RunFlags,
        produced: &ProducerOutcome,
        consumed: &ConsumeTally,
        consumer_client_errors: u64,
    ) -> Report {
        let seconds = context.window.seconds();
        let mib_per_message = flags.message_bytes as f64 / f64::from(1 << 20);
        let per_second = |count: u64| count as f64 / seconds;
        let acks = &produced.tally;
        let flags_transactional = flags.transactional_id.is_some();
        let mut error_samples = acks.error_samples.clone();
        error_samples.extend(consumed.error_samples.iter().cloned());
        let mut report = Report {
            tool: "ferrite-bench",
            tool_version: env!("CARGO_PKG_VERSION"),
            librdkafka_version: context.librdkafka_version,
            started_at: utc_timestamp(context.started_unix_s),
            started_unix_s: context.started_unix_s,
            machine: context.machine,
            flags,
            topic_created: context.topic_created,
            group_settle_ms: context
                .group_settle
                .map(|settle| settle.as_micros() as f64 / 1000.0),
            measured_s: seconds,
            sent: produced.sent,
            produce_unsent: produced.unsent,
            produced: acks.acked,
            produce_errors: acks.failed,
            produce_unacknowledged: produced.unacknowledged,
            producer_queue_full_waits: produced.queue_full_waits,
            consumed: consumed
                .consumed
                .iter()
                .copied()
                .min()
                .expect("a run has a consumer group"),
            consumed_per_group: consumed.consumed.clone(),
            consume_duplicates: consumed.duplicates,
            consume_foreign: consumed.foreign,
            consume_errors: consumed.errors,
            client_errors: produced.client_errors + consumer_client_errors,
            produce_msgs_per_s: per_second(acks.acked_in_window),
            produce_mb_per_s: per_second(acks.acked_in_window) * mib_per_message,
            consume_msgs_per_s: per_second(consumed.consumed_in_window),
            consume_mb_per_s: per_second(consumed.consumed_in_window) * mib_per_message,
            produce_per_second: acks.acked_per_second.counts.clone(),
            consume_per_second: consumed.consumed_per_second.counts.clone(),
            ack_latency_ms: PercentilesMs::of(&acks.latency_us),
            producer_latency_split: acks.latency_split.clone(),
            e2e_latency_ms: PercentilesMs::of(&consumed.latency_us),
            transactions: flags_transactional.then(|| TransactionsReport {
                committed: acks.commits.committed,
                failed: acks.commits.failed,
                commit_latency_ms: PercentilesMs::of(&acks.commits.latency_us),
            }),
            error_samples,
            problems: Vec::new(),
        };
        report.problems = report.find_problems();
        report
    }

    fn find_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.produce_unsent > 0 {
            problems.push(format!(
                "{} messages due were never sent (librdkafka's queue stayed full)",
                self.produce_unsent
            ));
        }
        if self.produce_errors > 0 {
            problems.push(format!("{} deliveries failed", self.produce_errors));
        }
        if self.produce_unacknowledged > 0 {
            problems.push(format!(
                "{} messages were never acknowledged",
                self.produce_unacknowledged
            ));
        }
        let names = group::names(&self.flags);
        for (index, &consumed) in self.consumed_per_group.iter().enumerate() {
            if consumed != self.produced {
                let group = names
                    .get(index)
                    .map_or_else(String::new, |name| format!("consumer group {name} "));
                problems.push(format!(
                    "{group}consumed {consumed} distinct messages, but {} were acknowledged",
                    self.produced
                ));
            }
        }
        if self.consume_duplicates > 0 {
            problems.push(format!(
                "{} messages arrived twice",
                self.consume_duplicates
            ));
        }
        if self.produced > 0 && self.ack_latency_ms.count == 0 {
            problems.push("no message was acknowledged inside the measured window".into());
        }
        if let Some(transactions) = &self.transactions {
            if transactions.failed > 0 {
                problems.push(format!(
                    "{} transactions failed to commit",
                    transactions.failed
                ));
            }
        }
        problems
    }

    /// A few lines for a person: what ran, the counts, the rates and the latencies.
    pub fn summary(&self) -> String {
        let flags = &self.flags;
        let rate = match flags.rate {
            0 => "as fast as possible".to_string(),
            rate => format!("{rate} msg/s"),
        };
        let percentiles = |name: &str, latency: &PercentilesMs| {
            format!(
                "  {name} latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  \
                 max {:.3}  ({} samples)\n",
                latency.p50,
                latency.p90,
                latency.p99,
                latency.p99_9,
                latency.p99_99,
                latency.max,
                latency.count
            )
        };
        let mut text = format!(
            "ferrite-bench: {} to {}, topic {} ({} partitions), {} B messages, acks={}, {} s \
             measured after {} s warm-up\n",
            rate,
            flags.bootstrap,
            flags.topic,
            flags.partitions,
            flags.message_bytes,
            flags.acks.config_value(),
            flags.duration_s,
            flags.warmup_s
        );
        text += &format!(
            "  produced {} of {} sent ({} failed, {} unacknowledged); consumed {} ({} \
             duplicates, {} foreign)\n",
            self.produced,
            self.sent,
            self.produce_errors,
            self.produce_unacknowledged,
            self.consumed,
            self.consume_duplicates,
            self.consume_foreign
        );
        if let (Some(name), Some(settle_ms)) = (&flags.consumer_group, self.group_settle_ms) {
            text += &format!(
                "  consumer group {name}: {} x {} members ({}), every partition assigned \
                 {settle_ms:.0} ms after subscribing; consumed per group {:?}\n",
                flags.consumer_groups,
                flags.consumers,
                flags.assignment_strategy.config_value(),
                self.consumed_per_group
            );
        }
        text += &format!(
            "  produce {:.1} msg/s, {:.2} MiB/s; consume {:.1} msg/s, {:.2} MiB/s\n",
            self.produce_msgs_per_s,
            self.produce_mb_per_s,
            self.consume_msgs_per_s,
            self.consume_mb_per_s
        );
        text += &percentiles("ack", &self.ack_latency_ms);
        text += &percentiles("e2e", &self.e2e_latency_ms);
        if let Some(transactions) = &self.transactions {
            text += &format!(
                "  transactions of {} messages: {} committed, {} failed; consumers {}\n",
                flags.transaction_messages,
                transactions.committed,
                transactions.failed,
                flags.isolation_level.config_value()
            );
            text += &percentiles("commit", &transactions.commit_latency_ms);
        }
        let split = &self.producer_latency_split;
        if split.intervals > 0 {
            let side = |latency: &SideLatencyMs| {
                format!(
                    "mean {:.3}  p99 {:.3} (worst interval)  max {:.3}",
                    latency.mean, latency.p99_worst_interval, latency.max
                )
            };
            text += &format!(
                "  librdkafka, ms over {} intervals: in its queue {}; broker round trip {}\n",
                split.intervals,
                side(&split.producer_queue_ms),
                side(&split.broker_round_trip_ms)
            );
        }
        for problem in &self.problems {
            text += &format!("  PROBLEM: {problem}\n");
        }
        for sample in &self.error_samples {
            text += &format!("  error: {sample}\n");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Acks;
    use crate::producer::AckTally;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        flags: RunFlags,
    }

    const WINDOW: Window = Window {
        start_ns: 1_000_000_000,
        end_ns: 3_000_000_000,
    };

    /// A run of 3000 messages at 1000 msg/s with `arguments`, of which each consumer group
    /// received the first `consumed_per_group[g]`.
    fn report(arguments: &[&str], consumed_per_group: &[u64]) -> Report {
        let base = [
            "ferrite-bench",
            "--rate",
            "1000",
            "--message-bytes",
            "1024",
            "--duration-s",
            "2",
            "--warmup-s",
            "1",
        ];
        let flags = Command::parse_from(base.iter().chain(arguments)).flags;
        assert_eq!(flags.acks, Acks::All);
        assert_eq!(group::names(&flags).len().max(1), consumed_per_group.len());
        let mut acks = AckTally::new(WINDOW);
        let mut consumed = ConsumeTally::new(1, WINDOW, consumed_per_group.len());
        let mut payload = crate::payload::PayloadWriter::new(1024, 1);
        for sequence in 0..3000u64 {
            let scheduled_ns = sequence * 1_000_000;
            acks.note(Ok(()), scheduled_ns, scheduled_ns + 2_000_000);
            for (group, &received) in consumed_per_group.iter().enumerate() {
                if sequence < received {
                    let message = payload.stamp(sequence, scheduled_ns);
                    consumed.note(group, Some(message), scheduled_ns + 3_000_000, 3000);
                }
            }
        }
        let produced = ProducerOutcome {
            sent: 3000,
            unsent: 0,
            unacknowledged: 0,
            queue_full_waits: 0,
            tally: acks,
            client_errors: 0,
        };
        let context = RunContext {
            librdkafka_version: "2.12.1".into(),
            started_unix_s: 0,
            machine: Machine::current(),
            topic_created: true,
            window: WINDOW,
            group_settle: flags
                .consumer_group
                .as_ref()
                .map(|_| Duration::from_millis(1500)),
        };
        Report::new(context, flags, &produced, &consumed, 0)
    }

    #[test]
    fn the_json_holds_the_contract_fields() {
        let json = serde_json::to_value(report(&[], &[3000])).unwrap();
        for field in ["produced", "consumed"] {
            assert_eq!(json[field], 3000, "{field}");
        }
        assert_eq!(json["produce_msgs_per_s"], 1000.0);
        assert_eq!(json["produce_mb_per_s"], 1000.0 / 1024.0);
        // Acked 2 ms and received 3 ms after the schedule: the first second of the window
        // (1 s to 2 s) gets the messages scheduled from 998 ms and 997 ms on.
        assert_eq!(json["produce_per_second"], serde_json::json!([1000, 1000]));
        assert_eq!(json["consume_per_second"], serde_json::json!([1000, 1000]));
        for latency in ["ack_latency_ms", "e2e_latency_ms"] {
            for quantile in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
                assert!(json[latency][quantile].is_f64(), "{latency}.{quantile}");
            }
        }
        assert_eq!(json["ack_latency_ms"]["p99"], 2.0);
        let e2e_max = json["e2e_latency_ms"]["max"].as_f64().unwrap();
        assert!(
            (e2e_max - 3.0).abs() < 0.003,
            "{e2e_max}: 3 ms to the histogram's precision"
        );
        assert_eq!(json["ack_latency_ms"]["count"], 2000, "warm-up excluded");
        for flag in [
            "bootstrap",
            "topic",
            "partitions",
            "message_bytes",
            "rate",
            "duration_s",
        ] {
            assert!(!json["flags"][flag].is_null(), "flags.{flag}");
        }
        assert_eq!(json["flags"]["acks"], "all");
        assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
        assert_eq!(json["started_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["problems"], serde_json::json!([]));
        assert_eq!(json["consumed_per_group"], serde_json::json!([3000]));
        assert!(json["group_settle_ms"].is_null(), "no consumer group");
    }

    #[test]
    fn a_transactional_run_reports_its_commits() {
        let plain = serde_json::to_value(report(&[], &[3000])).unwrap();
        assert!(plain["transactions"].is_null(), "not transactional");
        let mut run = report(&["--transactional-id", "tx"], &[3000]);
        assert_eq!(run.transactions.as_ref().unwrap().committed, 0);
        // 30 commits of 100 messages, 10 of them called in the warm-up, each taking 4 ms.
        let mut acks = AckTally::new(WINDOW);
        for commit in 0..30u64 {
            let called_ns = commit * 100_000_000;
            acks.note_commit(Ok(()), called_ns, called_ns + 4_000_000);
        }
        acks.note_commit(Err("fenced".into()), 2_000_000_000, 2_001_000_000);
        run.transactions = Some(TransactionsReport {
            committed: acks.commits.committed,
            failed: acks.commits.failed,
            commit_latency_ms: PercentilesMs::of(&acks.commits.latency_us),
        });
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["transactions"]["committed"], 30);
        assert_eq!(json["transactions"]["failed"], 1);
        let latency = &json["transactions"]["commit_latency_ms"];
        assert_eq!(latency["count"], 20, "warm-up commits excluded");
        for quantile in ["p50", "p99", "p99.9"] {
            let value = latency[quantile].as_f64().unwrap();
            assert!((value - 4.0).abs() < 0.005, "{quantile} {value}: 4 ms");
        }
        assert_eq!(acks.error_samples, ["commit: fenced"]);
        assert_eq!(json["flags"]["transaction_messages"], 100);
        assert_eq!(json["flags"]["isolation_level"], "read_uncommitted");
        assert!(run.summary().contains("commit latency ms: p50 4.00"));
    }

    #[test]
    fn missing_messages_are_a_problem() {
        let report = report(&[], &[2999]);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.summary().contains("PROBLEM: consumed 2999"));
    }

    #[test]
    fn every_consumer_group_must_get_every_message() {
        let arguments = ["--consumer-group", "g", "--consumer-groups", "2"];
        let short = report(&arguments, &[3000, 2999]);
        let json = serde_json::to_value(&short).unwrap();
        assert_eq!(json["produced"], 3000);
        assert_eq!(json["consumed"], 2999, "the group that got the fewest");
        assert_eq!(json["consumed_per_group"], serde_json::json!([3000, 2999]));
        assert_eq!(json["group_settle_ms"], 1500.0);
        // Both groups received 2000 messages each in the 2 s window.
        assert_eq!(json["consume_msgs_per_s"], 2000.0);
        assert_eq!(
            short.problems,
            ["consumer group g-1 consumed 2999 distinct messages, but 3000 were acknowledged"]
        );
        let summary = short.summary();
        assert!(
            summary.contains(
                "consumer group g: 2 x 1 members (range), every partition assigned 1500 ms"
            ),
            "{summary}"
        );
        assert!(report(&arguments, &[3000, 3000]).problems.is_empty());
    }
}
