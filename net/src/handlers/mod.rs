//! One module per Kafka API (a few closely related ones share a module).

pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod create_topics;
pub mod delete_records;
pub mod describe_configs;
pub mod fetch;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use kafka_protocol::protocol::StrBytes;

/// A string field from an owned string.
pub(crate) fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// Kafka's UUID type from the catalog's topic id.
pub(crate) fn uuid(id: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(id)
}
