//! The load generator's errors: what stops a run before it produces a result. Problems during
//! a run (failed deliveries, missing messages) are not errors but figures in the result.

use std::path::PathBuf;

use rdkafka::error::KafkaError;

use crate::commit::CommitError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Flags(String),
    #[error("{what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot commit a transaction: {0}")]
    Commit(#[source] CommitError),
    #[error("topic {topic:?}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("consumer groups: {0}")]
    Groups(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a JSON result: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl BenchError {
    pub fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> BenchError {
        let what = what.into();
        move |source| BenchError::Kafka { what, source }
    }
}
