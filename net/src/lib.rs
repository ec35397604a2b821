//! The Kafka wire protocol for Ferrite.
//!
//! Decoding and encoding of the many message types come from the `kafka-protocol` crate, which
//! is generated from Kafka's own JSON message specs (every version, flexible encodings, tagged
//! fields). This crate adds what sits around them: framing with a size bound, request headers
//! decoded defensively (a client's bytes never panic the broker), the table of API versions we
//! implement, and one module per API handler (`api_versions.rs`, …), as Redpanda lays them out.
//!
//! Status: framing, header decoding, the connection loop and per-shard listener, and
//! ApiVersions. The other handlers come next (issue 4).

pub mod api_versions;
pub mod broker;
pub mod cluster;
pub mod connection;
pub mod connection_limits;
pub mod errors;
pub mod frame;
pub mod handlers;
pub mod handover;
pub mod metrics;
pub mod request;
pub mod response;
pub mod send_file;
pub mod send_gathered;
pub mod server;
