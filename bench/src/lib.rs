//! Ferrite's benchmark drivers, as a library so the two binaries share one definition of a
//! latency distribution and so the load generator's logic (timetable, payload, accounting,
//! report, comparison) is unit-tested without a broker.
//!
//! - `engine-bench` drives one partition log in-process (no network).
//! - `ferrite-bench` is a Kafka client benchmark built on librdkafka, so it measures Ferrite,
//!   Redpanda and Kafka the same way; `run` is its entry point.

pub mod client;
pub mod client_stats;
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
