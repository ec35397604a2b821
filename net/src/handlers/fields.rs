//! Conversions between kafka-protocol's field types and the broker's own, shared by the
//! handlers so each conversion is written once.

use kafka_protocol::protocol::StrBytes;

/// A string field from an owned string.
pub(crate) fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// An owned string from a nullable string field.
pub(crate) fn optional_string(value: Option<StrBytes>) -> Option<String> {
    value.map(|value| value.to_string())
}

/// Kafka's UUID type from the catalog's topic id.
pub(crate) fn uuid(id: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(id)
}
