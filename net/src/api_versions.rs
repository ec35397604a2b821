//! ApiVersions: the table of API versions this broker implements, and the handler that tells
//! clients about it.
//!
//! The table is the only place versions are declared, and a version goes in only once its
//! handler implements it fully, so what we advertise is what we serve. Every API in it is served
//! down to the oldest version Kafka 3.9 serves (0 for all of them but CreateAcls, DescribeAcls
//! and DeleteAcls, served from Kafka 4's floor of 1: their version 0, ACLs without a pattern
//! type from before KIP-290, is gone from Kafka 4 (KIP-896) and no client since Kafka 2.0 sends
//! it; versions older than the generated codec reads are decoded and encoded in
//! `old_versions`), except Produce v0–2 and
//! Fetch v0–3: those carry message formats v0 and v1 (magic 0 and 1), which Ferrite does not
//! store. They are [`MESSAGE_FORMAT_V0_V1`]: each partition of such a request is answered
//! UNSUPPORTED_VERSION in a response of the request's own version, so the client is told why
//! instead of being cut off. Fetch v0–3 are not advertised (Kafka 4 advertises Fetch from 4,
//! KIP-896). Produce is advertised from 0, the one place where the table says more than is
//! served, as Kafka 4 does since KAFKA-18659: librdkafka before 2.8 (Debian 12's kcat among its
//! users) compresses with gzip, snappy or lz4 only if the broker advertises Produce v0, and
//! otherwise sends every batch uncompressed without a word; a client that negotiates picks the
//! highest version both sides speak, never 0–2, and one that does not is answered
//! UNSUPPORTED_VERSION either way.
//!
//! Any other version outside the table is closed on, as Kafka does (its SocketServer refuses a
//! header whose version it does not serve, logs "Received request for api with key ... and
//! unsupported version ...", and closes the connection; 3.9 and 4.x alike), except ApiVersions
//! itself: a client that asks with a newer ApiVersions version than ours gets Kafka's fallback
//! (KIP-511), a version-0 response with UNSUPPORTED_VERSION and our table, from which it picks a
//! version we speak.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// Kafka's error code for a version the broker does not speak.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// The version ApiVersions' fallback answer is encoded in: every client can read it.
pub const FALLBACK_RESPONSE_VERSION: i16 = 0;

/// Each implemented API with the versions we serve in full.
const IMPLEMENTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 0, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 5),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    // OffsetCommit v9 and OffsetFetch v9 are the new (KIP-848) consumer protocol's.
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    // v0 of SaslHandshake: the tokens follow as raw frames (`sasl`).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // From 1, Kafka 4's floor (see the module doc).
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// Versions of message formats v0 and v1 (magic 0 and 1): answered UNSUPPORTED_VERSION on every
/// partition; advertised only for Produce (see [`advertised_min_version`]).
pub const MESSAGE_FORMAT_V0_V1: &[(ApiKey, i16, i16)] =
    &[(ApiKey::Produce, 0, 2), (ApiKey::Fetch, 0, 3)];

/// Whether `api_version` of `api_key` is one of [`MESSAGE_FORMAT_V0_V1`].
pub fn is_message_format_v0_v1(api_key: ApiKey, api_version: i16) -> bool {
    MESSAGE_FORMAT_V0_V1
        .iter()
        .any(|&(key, min, max)| key == api_key && (min..=max).contains(&api_version))
}

/// The versions of `api_key` we implement, or `None` if we do not implement it.
pub fn supported_range(api_key: ApiKey) -> Option<(i16, i16)> {
    IMPLEMENTED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, min, max)| (min, max))
}

/// The lowest version ApiVersions advertises for `api_key`, served from `served_min`: Produce
/// from 0 for librdkafka before 2.8 (KAFKA-18659, see the module doc), the others as served.
fn advertised_min_version(api_key: ApiKey, served_min: i16) -> i16 {
    if api_key == ApiKey::Produce {
        0
    } else {
        served_min
    }
}

/// The answer to an ApiVersions request we could decode.
pub fn response() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        IMPLEMENTED
            .iter()
            .map(|&(api_key, min_version, max_version)| {
                ApiVersion::default()
                    .with_api_key(api_key as i16)
                    .with_min_version(advertised_min_version(api_key, min_version))
                    .with_max_version(max_version)
            })
            .collect(),
    )
}

/// The answer to an ApiVersions request in a version we do not speak; encode it at
/// [`FALLBACK_RESPONSE_VERSION`].
pub fn fallback_response() -> ApiVersionsResponse {
    response().with_error_code(UNSUPPORTED_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_advertises_exactly_what_is_implemented() {
        let advertised = response();
        assert_eq!(advertised.error_code, 0);
        assert_eq!(advertised.api_keys.len(), IMPLEMENTED.len());
        for (api_key, min, max) in IMPLEMENTED {
            let entry = advertised
                .api_keys
                .iter()
                .find(|entry| entry.api_key == *api_key as i16)
                .unwrap();
            // Produce's floor is the one exception: advertised from 0, served from 3.
            let min_advertised = if *api_key == ApiKey::Produce { 0 } else { *min };
            assert_eq!(
                (entry.min_version, entry.max_version),
                (min_advertised, *max)
            );
            assert_eq!(supported_range(*api_key), Some((*min, *max)));
        }
        assert_eq!(
            supported_range(ApiKey::WriteTxnMarkers),
            None,
            "markers are written between brokers over their own transport"
        );
        assert_eq!(fallback_response().error_code, UNSUPPORTED_VERSION);
    }

    /// Served from Kafka 4's floor rather than 3.9's (see the module doc).
    const SERVED_FROM_KAFKA_4S_FLOOR: &[ApiKey] =
        &[ApiKey::CreateAcls, ApiKey::DescribeAcls, ApiKey::DeleteAcls];

    #[test]
    fn every_api_is_served_down_to_kafka_3_9s_floor_or_refused_in_words() {
        for &(api_key, served_min, _) in IMPLEMENTED {
            // Kafka 3.9 serves every one of these from version 0.
            let refused = MESSAGE_FORMAT_V0_V1
                .iter()
                .find(|(key, _, _)| *key == api_key);
            match refused {
                None if SERVED_FROM_KAFKA_4S_FLOOR.contains(&api_key) => {
                    assert_eq!(served_min, 1, "{api_key:?}")
                }
                None => assert_eq!(served_min, 0, "{api_key:?}"),
                Some(&(_, refused_min, refused_max)) => {
                    assert_eq!(
                        (refused_min, refused_max + 1),
                        (0, served_min),
                        "{api_key:?}"
                    );
                    assert!(
                        (0..served_min).all(|version| is_message_format_v0_v1(api_key, version))
                    );
                    assert!(!is_message_format_v0_v1(api_key, served_min));
                }
            }
        }
        assert!(!is_message_format_v0_v1(ApiKey::ListOffsets, 0));
    }
}
