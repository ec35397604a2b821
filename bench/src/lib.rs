//! Ferrite's benchmark drivers, as a library so the three binaries share one definition of a
//! latency distribution and so the load generator's logic (timetable, payload, accounting,
//! report, comparison) is unit-tested without a broker.
//!
//! - `engine-bench` drives one partition log in-process (no network).
//! - `cleaner-bench` measures what compaction costs in-process: its speed, and the latency of
//!   appends to another log of the same shard while it runs.
//! - `ferrite-bench` is a Kafka client benchmark built on librdkafka, so it measures Ferrite,
//!   Redpanda and Kafka the same way; `run` is its entry point.
//!
//! The modules that carry the method: `schedule` (the open-loop timetable: latency runs from
//! each message's scheduled time, so stalls are not hidden by coordinated omission), `payload`
//! (the 24-byte header every message carries: run id, sequence number, scheduled time),
//! `producer` and `consumer` (the clients and their exact accounting: every sequence number once
//! per consumer group, duplicates and foreign messages apart), `commit` (a transaction's commit
//! through librdkafka itself, without rust-rdkafka's 100 ms flush), `topic` (set-up before the clock
//! starts), `group` (`--consumer-group`: the group's start offsets committed before it is
//! joined, and the wait until every partition is assigned, so rebalancing stays out of the
//! measured window), `latency` (the one HdrHistogram configuration and percentile read-out,
//! shared with `engine-bench` and `cleaner-bench`), `report` (the JSON result and its summary),
//! `compare` (results side by side).
//!
//! Invariant: `bench` never depends on `net` or `tools`: it measures the broker from outside,
//! as users' clients do (librdkafka), so the same run measures Ferrite, Redpanda and Kafka.

pub mod client;
pub mod client_stats;
pub mod commit;
pub mod compare;
pub mod consumer;
pub mod error;
pub mod flags;
pub mod group;
pub mod keys;
pub mod latency;
pub mod machine;
pub mod payload;
pub mod producer;
pub mod progress;
pub mod report;
pub mod run;
pub mod schedule;
pub mod topic;
pub mod window;
pub mod workload;
