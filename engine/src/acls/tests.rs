//! The decision and the filters against the cases of Kafka's `StandardAuthorizerTest` and
//! `AclAuthorizerTest`, and the file's round trip.

use super::*;
use crate::published_table::TableFileError;

fn acl(
    resource_type: ResourceType,
    name: &str,
    pattern_type: PatternType,
    principal: &str,
    host: &str,
    operation: Operation,
    permission: Permission,
) -> AclBinding {
    AclBinding {
        resource_type,
        resource_name: name.into(),
        pattern_type,
        principal: principal.into(),
        host: host.into(),
        operation,
        permission,
    }
}

fn topic_acl(
    name: &str,
    pattern_type: PatternType,
    principal: &str,
    operation: Operation,
    permission: Permission,
) -> AclBinding {
    acl(
        ResourceType::Topic,
        name,
        pattern_type,
        principal,
        "*",
        operation,
        permission,
    )
}

fn table(acls: &[AclBinding]) -> AclTable {
    acls.iter().cloned().collect()
}

fn allowed(table: &AclTable, principal: &str, operation: Operation, topic: &str) -> bool {
    allowed_from(table, principal, "10.0.0.1", operation, topic)
}

fn allowed_from(
    table: &AclTable,
    principal: &str,
    host: &str,
    operation: Operation,
    topic: &str,
) -> bool {
    authorize(
        table,
        &AccessRequest {
            principal,
            host,
            operation,
            resource_type: ResourceType::Topic,
            resource_name: topic,
        },
        false,
    )
}

use Operation::*;
use PatternType::*;
use Permission::*;

#[test]
fn without_acls_the_fallback_decides() {
    let empty = AclTable::new();
    let request = AccessRequest {
        principal: "User:alice",
        host: "10.0.0.1",
        operation: Read,
        resource_type: ResourceType::Topic,
        resource_name: "orders",
    };
    assert!(!authorize(&empty, &request, false));
    assert!(authorize(&empty, &request, true));
    // An ACL on the resource for someone else: the fallback no longer applies.
    let others = table(&[topic_acl("orders", Literal, "User:bob", Read, Allow)]);
    assert!(!authorize(&others, &request, true));
    // An ACL on another resource leaves it.
    let elsewhere = table(&[topic_acl("payments", Literal, "User:bob", Read, Allow)]);
    assert!(authorize(&elsewhere, &request, true));
}

#[test]
fn literal_wildcard_and_prefixed_patterns_cover_their_resources() {
    let acls = table(&[
        topic_acl("orders", Literal, "User:alice", Read, Allow),
        topic_acl("*", Literal, "User:bob", Read, Allow),
        topic_acl("pay", Prefixed, "User:carol", Write, Allow),
    ]);
    assert!(allowed(&acls, "User:alice", Read, "orders"));
    assert!(!allowed(&acls, "User:alice", Read, "orders2"));
    assert!(allowed(&acls, "User:bob", Read, "anything"));
    assert!(allowed(&acls, "User:carol", Write, "payments"));
    assert!(allowed(&acls, "User:carol", Write, "pay"));
    assert!(!allowed(&acls, "User:carol", Write, "pa"));
    assert!(!allowed(&acls, "User:carol", Write, "orders"));
    // A PREFIXED `*` is a prefix, not a wildcard.
    let star_prefix = table(&[topic_acl("*", Prefixed, "User:dave", Read, Allow)]);
    assert!(!allowed(&star_prefix, "User:dave", Read, "orders"));
    assert!(allowed(&star_prefix, "User:dave", Read, "*orders"));
}

#[test]
fn principal_and_host_wildcards() {
    let acls = table(&[
        acl(
            ResourceType::Topic,
            "orders",
            Literal,
            "User:*",
            "*",
            Read,
            Allow,
        ),
        acl(
            ResourceType::Topic,
            "orders",
            Literal,
            "User:alice",
            "192.168.0.1",
            Write,
            Allow,
        ),
    ]);
    assert!(allowed(&acls, "User:anyone", Read, "orders"));
    assert!(allowed_from(
        &acls,
        "User:alice",
        "192.168.0.1",
        Write,
        "orders"
    ));
    assert!(!allowed_from(
        &acls,
        "User:alice",
        "192.168.0.2",
        Write,
        "orders"
    ));
    // The principal must match whole, type included.
    assert!(!allowed_from(
        &acls,
        "Group:alice",
        "192.168.0.1",
        Write,
        "orders"
    ));
}

#[test]
fn deny_wins_over_allow_wherever_they_come_from() {
    let acls = table(&[
        topic_acl("orders", Literal, "User:alice", Read, Allow),
        topic_acl("ord", Prefixed, "User:alice", Read, Deny),
        topic_acl("*", Literal, "User:*", All, Allow),
        acl(
            ResourceType::Topic,
            "secrets",
            Literal,
            "User:*",
            "10.0.0.1",
            All,
            Deny,
        ),
    ]);
    assert!(!allowed(&acls, "User:alice", Read, "orders"));
    // Denied READ does not deny WRITE, which the wildcard's ALL allows.
    assert!(allowed(&acls, "User:alice", Write, "orders"));
    assert!(allowed(&acls, "User:bob", Read, "orders"));
    // DENY of ALL denies every operation, from its host only.
    assert!(!allowed(&acls, "User:bob", Describe, "secrets"));
    assert!(allowed_from(
        &acls, "User:bob", "10.0.0.2", Describe, "secrets"
    ));
}

#[test]
fn implied_operations_are_kafkas() {
    for implying in [Read, Write, Delete, Alter, All] {
        let acls = table(&[topic_acl("t", Literal, "User:a", implying, Allow)]);
        assert!(allowed(&acls, "User:a", Describe, "t"), "{implying:?}");
    }
    for not_implying in [
        Create,
        DescribeConfigs,
        AlterConfigs,
        IdempotentWrite,
        ClusterAction,
    ] {
        let acls = table(&[topic_acl("t", Literal, "User:a", not_implying, Allow)]);
        assert!(!allowed(&acls, "User:a", Describe, "t"), "{not_implying:?}");
    }
    let alter_configs = table(&[topic_acl("t", Literal, "User:a", AlterConfigs, Allow)]);
    assert!(allowed(&alter_configs, "User:a", DescribeConfigs, "t"));
    // Implication is not the other way round, and READ does not imply WRITE.
    let describe = table(&[topic_acl("t", Literal, "User:a", Describe, Allow)]);
    assert!(!allowed(&describe, "User:a", Read, "t"));
    let read = table(&[topic_acl("t", Literal, "User:a", Read, Allow)]);
    assert!(!allowed(&read, "User:a", Write, "t"));
    let all = table(&[topic_acl("t", Literal, "User:a", All, Allow)]);
    for operation in Operation::ALL_VALUES {
        assert!(allowed(&all, "User:a", *operation, "t"), "{operation:?}");
    }
    // A DENY of READ does not deny DESCRIBE (Kafka denies only the operation itself or ALL).
    let deny_read = table(&[
        topic_acl("t", Literal, "User:a", Read, Deny),
        topic_acl("t", Literal, "User:a", Describe, Allow),
    ]);
    assert!(allowed(&deny_read, "User:a", Describe, "t"));
}

#[test]
fn resource_types_are_kept_apart() {
    let acls = table(&[acl(
        ResourceType::Group,
        "orders",
        Literal,
        "User:a",
        "*",
        Read,
        Allow,
    )]);
    assert!(!allowed(&acls, "User:a", Read, "orders"));
    assert!(authorize(
        &acls,
        &AccessRequest {
            principal: "User:a",
            host: "10.0.0.1",
            operation: Read,
            resource_type: ResourceType::Group,
            resource_name: "orders",
        },
        false
    ));
}

fn filter() -> AclFilter {
    AclFilter {
        resource_type: None,
        resource_name: None,
        pattern: PatternFilter::Any,
        principal: None,
        host: None,
        operation: None,
        permission: None,
    }
}

#[test]
fn filters_match_as_kafkas_resource_pattern_filter() {
    let literal = topic_acl("orders", Literal, "User:a", Read, Allow);
    let wildcard = topic_acl("*", Literal, "User:a", Read, Allow);
    let prefixed = topic_acl("ord", Prefixed, "User:a", Read, Allow);
    let all = [&literal, &wildcard, &prefixed];
    let matched = |filter: &AclFilter| -> Vec<&AclBinding> {
        all.iter()
            .copied()
            .filter(|binding| filter.matches(binding))
            .collect()
    };
    assert_eq!(matched(&filter()).len(), 3);
    let named = AclFilter {
        resource_name: Some("orders".into()),
        ..filter()
    };
    // ANY with a name: the patterns of that very name.
    assert_eq!(matched(&named), [&literal]);
    // MATCH: every pattern that applies to the name.
    assert_eq!(
        matched(&AclFilter {
            pattern: PatternFilter::Match,
            ..named.clone()
        }),
        all
    );
    assert_eq!(
        matched(&AclFilter {
            pattern: PatternFilter::Exactly(Prefixed),
            resource_name: Some("ord".into()),
            ..filter()
        }),
        [&prefixed]
    );
    assert_eq!(
        matched(&AclFilter {
            pattern: PatternFilter::Exactly(Prefixed),
            ..named.clone()
        }),
        Vec::<&AclBinding>::new()
    );
    assert!(matched(&AclFilter {
        resource_type: Some(ResourceType::Group),
        ..filter()
    })
    .is_empty());
    assert!(matched(&AclFilter {
        principal: Some("User:b".into()),
        ..filter()
    })
    .is_empty());
    assert!(matched(&AclFilter {
        operation: Some(Write),
        ..filter()
    })
    .is_empty());
    assert!(matched(&AclFilter {
        permission: Some(Deny),
        ..filter()
    })
    .is_empty());
}

#[test]
fn codes_and_names_are_kafkas() {
    assert_eq!(ResourceType::from_code(2), Some(ResourceType::Topic));
    assert_eq!(
        ResourceType::from_code(5),
        Some(ResourceType::TransactionalId)
    );
    assert_eq!(ResourceType::from_code(6), None);
    assert_eq!(Operation::IdempotentWrite.code(), 12);
    assert_eq!(
        Operation::from_name("describe_configs"),
        Some(DescribeConfigs)
    );
    assert_eq!(PatternFilter::from_code(2), Some(PatternFilter::Match));
    assert_eq!(
        PatternFilter::from_code(4),
        Some(PatternFilter::Exactly(Prefixed))
    );
    assert_eq!(Permission::from_code(3), Some(Allow));
}

#[test]
fn changes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let acls = Acls::open(dir.path()).unwrap();
    assert!(acls.table().is_empty());
    let read = topic_acl("orders", Literal, "User:a", Read, Allow);
    let write = topic_acl("pay", Prefixed, "User:b", Write, Deny);
    acls.alter(&[
        AclChange::Create(read.clone()),
        AclChange::Create(write.clone()),
        AclChange::Create(read.clone()),
    ])
    .unwrap();
    acls.alter(&[AclChange::Delete(read.clone())]).unwrap();
    let reopened = Acls::open(dir.path()).unwrap();
    assert_eq!(*reopened.table(), table(&[write]));
    let text = std::fs::read_to_string(dir.path().join(AclsKind::FILE_NAME)).unwrap();
    assert!(text.contains("PREFIXED") && text.contains("DENY"), "{text}");
}

#[test]
fn a_damaged_file_is_an_error_not_an_empty_table() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(AclsKind::FILE_NAME), b"{\"version\":1,\"ac").unwrap();
    assert!(matches!(
        Acls::open(dir.path()),
        Err(TableFileError::Format { .. })
    ));
}

#[test]
fn by_resource_type_as_kafkas_authorize_by_resource_type() {
    let by_type = |acls: &[AclBinding]| {
        authorize_by_resource_type(
            &table(acls),
            "User:a",
            "10.0.0.1",
            Write,
            ResourceType::Topic,
        )
    };
    assert!(!by_type(&[]));
    assert!(by_type(&[topic_acl(
        "orders", Literal, "User:a", Write, Allow
    )]));
    assert!(by_type(&[topic_acl(
        "orders", Literal, "User:*", All, Allow
    )]));
    // READ does not count, nor another principal, nor another type.
    assert!(!by_type(&[topic_acl(
        "orders", Literal, "User:a", Read, Allow
    )]));
    assert!(!by_type(&[topic_acl(
        "orders", Literal, "User:b", Write, Allow
    )]));
    assert!(!by_type(&[acl(
        ResourceType::Group,
        "g",
        Literal,
        "User:a",
        "*",
        Write,
        Allow
    )]));
    // A DENY of the same literal, or of a prefix of it, cancels an ALLOW; a wildcard DENY all.
    assert!(!by_type(&[
        topic_acl("orders", Literal, "User:a", Write, Allow),
        topic_acl("orders", Literal, "User:a", Write, Deny),
    ]));
    assert!(!by_type(&[
        topic_acl("orders", Prefixed, "User:a", Write, Allow),
        topic_acl("ord", Prefixed, "User:a", Write, Deny),
    ]));
    assert!(by_type(&[
        topic_acl("orders", Prefixed, "User:a", Write, Allow),
        topic_acl("orders-eu", Prefixed, "User:a", Write, Deny),
    ]));
    assert!(!by_type(&[
        topic_acl("*", Literal, "User:a", Write, Allow),
        topic_acl("*", Literal, "User:a", Write, Deny),
    ]));
    assert!(by_type(&[
        topic_acl("orders", Literal, "User:a", Write, Allow),
        topic_acl("payments", Literal, "User:a", Write, Allow),
        topic_acl("orders", Literal, "User:a", Write, Deny),
    ]));
}
