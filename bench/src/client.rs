//! What every librdkafka client of a run shares: its base configuration, and what it does with
//! librdkafka's own warnings and errors. Those go to stderr, prefixed with the client's role,
//! and are counted in the result: a broker that makes clients reconnect or retry is misbehaving
//! even if every message arrives in the end.

use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

use crate::flags::RunFlags;

/// A client configuration for the run's broker: its bootstrap address, then the settings every
/// client of the run shares (`--client-config`: security, for one), then `extra` (the role's).
pub fn config(flags: &RunFlags, extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &flags.bootstrap);
    config.set("client.id", "ferrite-bench");
    for (key, value) in flags.client_config.iter().chain(extra) {
        config.set(key, value);
    }
    config
}

/// Reports one client's librdkafka warnings and errors.
pub struct Diagnostics {
    role: &'static str,
    errors: AtomicU64,
}

impl Diagnostics {
    pub fn new(role: &'static str) -> Diagnostics {
        Diagnostics {
            role,
            errors: AtomicU64::new(0),
        }
    }

    /// Errors librdkafka reported so far (connection failures, timed-out requests, ...).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                eprintln!(
                    "ferrite-bench: {} librdkafka {facility}: {message}",
                    self.role
                )
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {}
        }
    }

    pub fn error(&self, error: KafkaError, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "ferrite-bench: {} librdkafka error: {error}: {reason}",
            self.role
        );
    }
}

/// The context of the clients that need nothing but diagnostics (admin, consumer).
pub struct PlainContext(pub Diagnostics);

impl ClientContext for PlainContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl ConsumerContext for PlainContext {}
