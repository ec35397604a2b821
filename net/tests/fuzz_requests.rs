//! The fuzz target for request decoding, run with the normal tests for a bounded number of
//! cases (`PROPTEST_CASES` raises it): valid requests of every implemented API and version,
//! cut, flipped and spliced at random, and random bytes behind every valid header. Decoding
//! gives a request or a typed error; it never panics and never reserves memory the frame
//! cannot account for (a lying count would abort the process, failing the test run).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use net::api_versions;
use net::request::DecodedRequest;
use proptest::prelude::*;

/// Every (API, version) we serve, and those we answer UNSUPPORTED_VERSION (message formats v0/v1).
fn served() -> Vec<(ApiKey, i16)> {
    let mut all = Vec::new();
    for key in 0..100i16 {
        let Ok(api_key) = ApiKey::try_from(key) else {
            continue;
        };
        if let Some((min, max)) = api_versions::supported_range(api_key) {
            all.extend((min..=max).map(|version| (api_key, version)));
        }
    }
    for &(api_key, min, max) in api_versions::MESSAGE_FORMAT_V0_V1 {
        all.extend((min..=max).map(|version| (api_key, version)));
    }
    all
}

/// A small valid body of a version older than the generated codec writes, from its layout in
/// Kafka 3.9's message specs: topic "t", partition 0, group "g".
fn old_body(api_key: ApiKey, version: i16) -> Vec<u8> {
    let mut body = Vec::new();
    let i16_ = |body: &mut Vec<u8>, value: i16| body.extend_from_slice(&value.to_be_bytes());
    let i32_ = |body: &mut Vec<u8>, value: i32| body.extend_from_slice(&value.to_be_bytes());
    let i64_ = |body: &mut Vec<u8>, value: i64| body.extend_from_slice(&value.to_be_bytes());
    let string = |body: &mut Vec<u8>, value: &str| {
        body.extend_from_slice(&(value.len() as i16).to_be_bytes());
        body.extend_from_slice(value.as_bytes());
    };
    match (api_key, version) {
        (ApiKey::ListOffsets, 0) => {
            i32_(&mut body, -1);
            i32_(&mut body, 1);
            string(&mut body, "t");
            i32_(&mut body, 1);
            i32_(&mut body, 0);
            i64_(&mut body, -1);
            i32_(&mut body, 2);
        }
        (ApiKey::OffsetCommit, 0 | 1) => {
            string(&mut body, "g");
            if version == 1 {
                i32_(&mut body, -1);
                string(&mut body, "");
            }
            i32_(&mut body, 1);
            string(&mut body, "t");
            i32_(&mut body, 1);
            i32_(&mut body, 0);
            i64_(&mut body, 5);
            if version == 1 {
                i64_(&mut body, -1);
            }
            string(&mut body, "m");
        }
        (ApiKey::OffsetFetch, 0) => {
            string(&mut body, "g");
            i32_(&mut body, 1);
            string(&mut body, "t");
            i32_(&mut body, 1);
            i32_(&mut body, 0);
        }
        (ApiKey::CreateTopics, 0 | 1) => {
            i32_(&mut body, 1);
            string(&mut body, "t");
            i32_(&mut body, 1);
            i16_(&mut body, 1);
            i32_(&mut body, 0);
            i32_(&mut body, 0);
            i32_(&mut body, 1000);
            if version == 1 {
                body.push(0);
            }
        }
        (ApiKey::DeleteTopics, 0) => {
            i32_(&mut body, 1);
            string(&mut body, "t");
            i32_(&mut body, 1000);
        }
        (ApiKey::DescribeConfigs, 0) => {
            i32_(&mut body, 1);
            body.push(2);
            string(&mut body, "t");
            i32_(&mut body, -1);
        }
        (ApiKey::Produce, 0..=2) => {
            i16_(&mut body, 1);
            i32_(&mut body, 1000);
            i32_(&mut body, 1);
            string(&mut body, "t");
            i32_(&mut body, 1);
            i32_(&mut body, 0);
            i32_(&mut body, 4);
            body.extend_from_slice(&[0, 1, 2, 3]);
        }
        (ApiKey::Fetch, 0..=3) => {
            i32_(&mut body, -1);
            i32_(&mut body, 0);
            i32_(&mut body, 1);
            if version == 3 {
                i32_(&mut body, 1 << 20);
            }
            i32_(&mut body, 1);
            string(&mut body, "t");
            i32_(&mut body, 1);
            i32_(&mut body, 0);
            i64_(&mut body, 0);
            i32_(&mut body, 1 << 20);
        }
        other => panic!("add an old {other:?} body to the fuzz target"),
    }
    body
}

/// A small valid request of `api_key` at `version`, framed as a client sends it (no length).
fn valid(api_key: ApiKey, version: i16) -> Bytes {
    let mut bytes = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut bytes, api_key.request_header_version(version))
        .unwrap();
    if version < api_key.valid_versions().min {
        bytes.extend_from_slice(&old_body(api_key, version));
        return bytes.freeze();
    }
    let topic = || TopicName(StrBytes::from_static_str("t"));
    let group = || GroupId(StrBytes::from_static_str("g"));
    let transactional_id = || TransactionalId(StrBytes::from_static_str("tx"));
    let out = &mut bytes;
    match api_key {
        ApiKey::Produce => ProduceRequest::default()
            .with_transactional_id(None)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_records(Some(Bytes::from(engine::batch::build::batch_of(2, 4, 1)))),
                ])])
            .encode(out, version),
        ApiKey::Fetch => FetchRequest::default()
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![fetch_request::FetchPartition::default()])])
            .encode(out, version),
        ApiKey::Metadata => MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(topic()))]))
            .encode(out, version),
        ApiKey::CreateTopics => CreateTopicsRequest::default()
            .with_topics(vec![
                create_topics_request::CreatableTopic::default().with_name(topic())
            ])
            .encode(out, version),
        ApiKey::InitProducerId => InitProducerIdRequest::default()
            .with_transactional_id(None)
            .encode(out, version),
        ApiKey::ListOffsets => ListOffsetsRequest::default().encode(out, version),
        ApiKey::ApiVersions => ApiVersionsRequest::default().encode(out, version),
        ApiKey::DeleteTopics => DeleteTopicsRequest::default().encode(out, version),
        ApiKey::DeleteRecords => DeleteRecordsRequest::default().encode(out, version),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::default().encode(out, version),
        ApiKey::CreatePartitions => CreatePartitionsRequest::default().encode(out, version),
        ApiKey::FindCoordinator if version >= 4 => FindCoordinatorRequest::default()
            .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
            .encode(out, version),
        ApiKey::FindCoordinator => FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("g"))
            .encode(out, version),
        ApiKey::JoinGroup => JoinGroupRequest::default()
            .with_group_id(group())
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"m"))])
            .encode(out, version),
        ApiKey::SyncGroup => SyncGroupRequest::default()
            .with_group_id(group())
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_static_str("member"))
                    .with_assignment(Bytes::from_static(b"a")),
            ])
            .encode(out, version),
        ApiKey::Heartbeat => HeartbeatRequest::default()
            .with_group_id(group())
            .encode(out, version),
        ApiKey::LeaveGroup if version >= 3 => LeaveGroupRequest::default()
            .with_group_id(group())
            .with_members(vec![leave_group_request::MemberIdentity::default()])
            .encode(out, version),
        ApiKey::LeaveGroup => LeaveGroupRequest::default()
            .with_group_id(group())
            .encode(out, version),
        ApiKey::OffsetCommit => OffsetCommitRequest::default()
            .with_group_id(group())
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default(),
                    ]),
            ])
            .encode(out, version),
        ApiKey::OffsetFetch if version >= 8 => OffsetFetchRequest::default()
            .with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(group()),
            ])
            .encode(out, version),
        ApiKey::OffsetFetch => OffsetFetchRequest::default()
            .with_group_id(group())
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0, 1]),
            ]))
            .encode(out, version),
        ApiKey::ListGroups => ListGroupsRequest::default().encode(out, version),
        ApiKey::DescribeGroups => DescribeGroupsRequest::default()
            .with_groups(vec![group()])
            .encode(out, version),
        ApiKey::DeleteGroups => DeleteGroupsRequest::default()
            .with_groups_names(vec![group()])
            .encode(out, version),
        ApiKey::OffsetDelete => OffsetDeleteRequest::default()
            .with_group_id(group())
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default(),
                    ]),
            ])
            .encode(out, version),
        ApiKey::AlterConfigs => AlterConfigsRequest::default()
            .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("1000")))])])
            .encode(out, version),
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default()
            .with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("cleanup.policy"))
                            .with_config_operation(2)
                            .with_value(Some(StrBytes::from_static_str("compact"))),
                    ]),
            ])
            .encode(out, version),
        ApiKey::AlterPartitionReassignments => AlterPartitionReassignmentsRequest::default()
            .with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_replicas(Some(vec![BrokerId(1), BrokerId(2)])),
                    ]),
            ])
            .encode(out, version),
        ApiKey::ListPartitionReassignments => ListPartitionReassignmentsRequest::default()
            .with_topics(Some(vec![
                list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0]),
            ]))
            .encode(out, version),
        ApiKey::ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group())
            .with_member_id(StrBytes::from_static_str("member"))
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![topic()]))
            .with_topic_partitions(Some(vec![
                consumer_group_heartbeat_request::TopicPartitions::default()
                    .with_partitions(vec![0, 1]),
            ]))
            .encode(out, version),
        ApiKey::ConsumerGroupDescribe => ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![group()])
            .encode(out, version),
        ApiKey::TxnOffsetCommit => TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str("txn")))
            .with_group_id(group())
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default(),
                    ]),
            ])
            .encode(out, version),
        ApiKey::AddPartitionsToTxn => {
            let topics = vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![0, 1]),
            ];
            let request = AddPartitionsToTxnRequest::default();
            match version {
                0..=3 => request
                    .with_v3_and_below_transactional_id(transactional_id())
                    .with_v3_and_below_topics(topics),
                _ => request.with_transactions(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(transactional_id())
                        .with_topics(topics),
                ]),
            }
            .encode(out, version)
        }
        ApiKey::AddOffsetsToTxn => AddOffsetsToTxnRequest::default()
            .with_transactional_id(transactional_id())
            .with_group_id(group())
            .encode(out, version),
        ApiKey::EndTxn => EndTxnRequest::default()
            .with_transactional_id(transactional_id())
            .with_committed(true)
            .encode(out, version),
        ApiKey::DescribeTransactions => DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![transactional_id()])
            .encode(out, version),
        ApiKey::ListTransactions => ListTransactionsRequest::default()
            .with_state_filters(vec![StrBytes::from_static_str("Ongoing")])
            .encode(out, version),
        ApiKey::DescribeProducers => DescribeProducersRequest::default()
            .with_topics(vec![describe_producers_request::TopicRequest::default()
                .with_name(topic())
                .with_partition_indexes(vec![0])])
            .encode(out, version),
        ApiKey::SaslHandshake => SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"))
            .encode(out, version),
        ApiKey::SaslAuthenticate => SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from_static(b"n,,n=alice,r=nonce"))
            .encode(out, version),
        ApiKey::AlterUserScramCredentials => AlterUserScramCredentialsRequest::default()
            .with_deletions(vec![
                alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_static_str("alice"))
                    .with_mechanism(1),
            ])
            .with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_static_str("bob"))
                    .with_mechanism(2)
                    .with_iterations(4096)
                    .with_salt(Bytes::from_static(b"salt"))
                    .with_salted_password(Bytes::from_static(b"salted")),
            ])
            .encode(out, version),
        ApiKey::DescribeUserScramCredentials => DescribeUserScramCredentialsRequest::default()
            .with_users(Some(vec![
                describe_user_scram_credentials_request::UserName::default()
                    .with_name(StrBytes::from_static_str("alice")),
            ]))
            .encode(out, version),
        ApiKey::AlterClientQuotas => AlterClientQuotasRequest::default()
            .with_entries(vec![alter_client_quotas_request::EntryData::default()
                .with_entity(vec![
                    alter_client_quotas_request::EntityData::default()
                        .with_entity_type(StrBytes::from_static_str("user"))
                        .with_entity_name(Some(StrBytes::from_static_str("alice"))),
                    alter_client_quotas_request::EntityData::default()
                        .with_entity_type(StrBytes::from_static_str("client-id")),
                ])
                .with_ops(vec![alter_client_quotas_request::OpData::default()
                    .with_key(StrBytes::from_static_str("producer_byte_rate"))
                    .with_value(1024.0)])])
            .encode(out, version),
        ApiKey::DescribeClientQuotas => DescribeClientQuotasRequest::default()
            .with_components(vec![
                describe_client_quotas_request::ComponentData::default()
                    .with_entity_type(StrBytes::from_static_str("user"))
                    .with_match_type(0)
                    .with_match(Some(StrBytes::from_static_str("alice"))),
            ])
            .with_strict(true)
            .encode(out, version),
        ApiKey::CreateAcls => CreateAclsRequest::default()
            .with_creations(vec![create_acls_request::AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("orders-"))
                .with_resource_pattern_type(4)
                .with_principal(StrBytes::from_static_str("User:alice"))
                .with_host(StrBytes::from_static_str("*"))
                .with_operation(4)
                .with_permission_type(3)])
            .encode(out, version),
        ApiKey::DescribeAcls => DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_resource_name_filter(Some(StrBytes::from_static_str("orders")))
            .with_pattern_type_filter(2)
            .with_principal_filter(Some(StrBytes::from_static_str("User:alice")))
            .with_operation(1)
            .with_permission_type(1)
            .encode(out, version),
        ApiKey::DeleteAcls => DeleteAclsRequest::default()
            .with_filters(vec![delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(2)
                .with_pattern_type_filter(1)
                .with_host_filter(Some(StrBytes::from_static_str("*")))
                .with_operation(1)
                .with_permission_type(2)])
            .encode(out, version),
        other => panic!("add a valid {other:?} request to the fuzz target"),
    }
    .unwrap();
    bytes.freeze()
}

fn decode_never_panics(frame: Bytes) {
    if let Ok(request) = DecodedRequest::decode(frame) {
        let _ = request.decode_body();
    }
}

#[test]
fn every_served_request_decodes_whole() {
    for (api_key, version) in served() {
        let request = DecodedRequest::decode(valid(api_key, version))
            .unwrap_or_else(|error| panic!("{api_key:?} v{version}: {error}"));
        request
            .decode_body()
            .unwrap_or_else(|error| panic!("{api_key:?} v{version}: {error}"));
    }
}

proptest! {
    #[test]
    fn mangled_requests_decode_or_fail_cleanly(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        spliced in prop::collection::vec(any::<u8>(), 0..16),
        splice_at in any::<prop::sample::Index>(),
    ) {
        let cases = served();
        let (api_key, version) = cases[which.index(cases.len())];
        let mut bytes = valid(api_key, version).to_vec();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value;
        }
        let at = splice_at.index(bytes.len() + 1);
        bytes.splice(at..at, spliced);
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep.max(bytes.len() / 2));
        decode_never_panics(Bytes::from(bytes));
    }

    #[test]
    fn random_bodies_behind_valid_headers_fail_cleanly(
        which in any::<prop::sample::Index>(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let cases = served();
        let (api_key, version) = cases[which.index(cases.len())];
        let mut bytes = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .encode(&mut bytes, api_key.request_header_version(version))
            .unwrap();
        bytes.extend_from_slice(&body);
        decode_never_panics(bytes.freeze());
    }
}
