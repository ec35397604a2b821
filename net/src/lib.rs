//! The Kafka wire protocol for Ferrite: what turns client bytes into calls on the shard, the
//! catalog or the cluster, and their answers back into bytes.
//!
//! Decoding and encoding of the many message types come from the `kafka-protocol` crate, which
//! is generated from Kafka's own JSON message specs (every version, flexible encodings, tagged
//! fields). This crate adds what sits around them, one module per concern: framing with a size
//! bound (`frame`; `response` frames the answers), request headers decoded defensively so a
//! client's bytes never panic the broker (`request`), the table of API versions we implement
//! (`api_versions`) and the versions older than the generated codec reads (`old_versions`), the dispatch of a request to its handler (`broker`), one module per API
//! handler (`handlers`), as Redpanda lays them out, the one mapping of errors to Kafka codes
//! (`errors`), the connection loop and its writes (`connection`, `send_gathered`,
//! `send_file`), connections moving between shards (`handover`), the listeners (`server`,
//! `connection_limits`; `listener`: Kafka's named listeners and each connection's security;
//! `tls`: rustls for the SSL ones), the cluster as the handlers see it (`cluster`), the consumer-group
//! coordinator (`groups`: Kafka's group protocol as a state machine, and its driver on the shards
//! that own `__consumer_offsets`) and the metrics (`metrics`).
//!
//! # Invariants
//! - Responses leave a connection in request order, whatever order their work finishes in and
//!   whichever shard serves it: a connection moves only once every request it started was answered
//!   and written, and its first request on the new shard is the first it had not started.
//! - A connection's produce requests reach each partition in the order they were sent: the appends
//!   of request N are submitted (offsets assigned locally, or queued on the FIFO mesh to the owner,
//!   whose reader assigns offsets before it reads its next message) before request N+1 is started;
//!   across a move, request N was answered (so numbered) before N+1 is started.
//! - What a version lacks stays at its default in a response (kafka-protocol refuses to encode
//!   otherwise); handlers set version-dependent fields only where the version has them.
//! - No client bytes can panic the broker (`tests/fuzz_requests.rs` mangles a valid request of
//!   every served API and version; `tests/bad_input.rs`).
//! - `net` never touches segment files itself: it gets batches and file ranges from `engine`.

pub mod api_versions;
pub mod authorizer;
pub mod broker;
pub mod cluster;
pub mod connection;
pub mod connection_limits;
pub mod coordinator_log;
pub mod errors;
pub mod frame;
pub mod groups;
pub mod handlers;
pub mod handover;
pub mod listener;
pub mod metrics;
pub mod old_versions;
pub mod quotas;
pub mod request;
pub mod response;
pub mod sasl;
pub mod send_file;
pub mod send_gathered;
pub mod server;
pub mod tls;
pub mod transactions;
