//! Client quotas as Kafka keeps them (KIP-13, KIP-55, KIP-124): per entity — a user, a client
//! id, either's default, or a user and a client id together — the limits `producer_byte_rate`,
//! `consumer_byte_rate` (bytes per second) and `request_percentage` (percent of one shard's
//! time). What they mean at run time (the windows, the throttle) is `net::quotas`'; here they are
//! data to keep, publish, and resolve to the entry that applies to a client.
//!
//! Every request of a connection that some quota may concern reads them, and a writer replaces
//! them whole (AlterClientQuotas, the cluster's metadata log): a `crate::published_table`, as
//! the credentials are, kept in `quotas.json` on a broker alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::published_table::{PublishedTable, TableKind};

/// A quota's kind, as Kafka names its configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuotaKey {
    #[serde(rename = "producer_byte_rate")]
    ProducerByteRate,
    #[serde(rename = "consumer_byte_rate")]
    ConsumerByteRate,
    #[serde(rename = "request_percentage")]
    RequestPercentage,
}

impl QuotaKey {
    pub const ALL: [QuotaKey; 3] = [
        QuotaKey::ProducerByteRate,
        QuotaKey::ConsumerByteRate,
        QuotaKey::RequestPercentage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
        }
    }

    pub fn from_name(name: &str) -> Option<QuotaKey> {
        Self::ALL.into_iter().find(|key| key.name() == name)
    }

    /// Whether Kafka types the key as a whole number (a LONG config): the byte rates.
    pub fn is_whole_number(self) -> bool {
        !matches!(self, QuotaKey::RequestPercentage)
    }
}

/// One part of an entity: a name, or the default of its type (null on the wire).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    /// Kafka's wire form: `None` is the default.
    pub fn from_wire(name: Option<&str>) -> EntityName {
        match name {
            None => EntityName::Default,
            Some(name) => EntityName::Named(name.to_owned()),
        }
    }

    pub fn to_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(name) => Some(name),
        }
    }
}

/// What a quota is set for: a user, a client id, or both (never neither).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

/// The limits set for one entity.
pub type QuotaValues = BTreeMap<QuotaKey, f64>;

/// Every entity's limits.
pub type QuotaTable = BTreeMap<QuotaEntity, QuotaValues>;

/// One change of [`ClientQuotas::alter`]: set `key` to `value`, or remove it (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaChange {
    pub entity: QuotaEntity,
    pub key: QuotaKey,
    pub value: Option<f64>,
}

/// The quota that applies to a client, and whose usage it is measured against: Kafka's metric
/// tags (`DefaultQuotaCallback.quotaMetricTags`). Every client whose tags are equal shares one
/// usage: all of a user's clients under a user quota, each user apart under the user default.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedQuota {
    pub limit: f64,
    /// The user the usage is counted for ("" when the quota does not name users).
    pub user_tag: String,
    /// The client id the usage is counted for ("" when the quota does not name client ids).
    pub client_id_tag: String,
}

/// The quota of kind `key` for `user`'s client `client_id`, by KIP-55's precedence: the first
/// of these entities that sets `key`:
/// 1. user and client id, 2. user and the default client id, 3. user,
/// 4. the default user and client id, 5. the default user and default client id,
/// 6. the default user, 7. client id, 8. the default client id.
pub fn resolve(
    table: &QuotaTable,
    key: QuotaKey,
    user: &str,
    client_id: &str,
) -> Option<AppliedQuota> {
    use EntityName::{Default, Named};
    let named_user = || Some(Named(user.to_owned()));
    let named_client = || Some(Named(client_id.to_owned()));
    // (entity, whether usage is counted per user, per client id)
    let order = [
        (named_user(), named_client(), true, true),
        (named_user(), Some(Default), true, true),
        (named_user(), None, true, false),
        (Some(Default), named_client(), true, true),
        (Some(Default), Some(Default), true, true),
        (Some(Default), None, true, false),
        (None, named_client(), false, true),
        (None, Some(Default), false, true),
    ];
    order
        .into_iter()
        .find_map(|(user_name, client_name, per_user, per_client)| {
            let entity = QuotaEntity {
                user: user_name,
                client_id: client_name,
            };
            let limit = *table.get(&entity)?.get(&key)?;
            Some(AppliedQuota {
                limit,
                user_tag: if per_user {
                    user.to_owned()
                } else {
                    String::new()
                },
                client_id_tag: if per_client {
                    client_id.to_owned()
                } else {
                    String::new()
                },
            })
        })
}

/// Applies `changes` to `table`, in order; entities left without a limit go.
pub fn apply(table: &mut QuotaTable, changes: &[QuotaChange]) {
    for change in changes {
        match change.value {
            Some(value) => {
                table
                    .entry(change.entity.clone())
                    .or_default()
                    .insert(change.key, value);
            }
            None => {
                if let Some(values) = table.get_mut(&change.entity) {
                    values.remove(&change.key);
                    if values.is_empty() {
                        table.remove(&change.entity);
                    }
                }
            }
        }
    }
}

/// The quotas' table kind (`crate::published_table`): `quotas.json`.
pub struct QuotasKind;

/// The quotas file's contents besides its version: the entries as a list (an entity is not a
/// JSON object key).
#[derive(Serialize, Deserialize)]
pub struct QuotasFile {
    entries: Vec<(QuotaEntity, QuotaValues)>,
}

impl TableKind for QuotasKind {
    type Table = QuotaTable;
    type Change = QuotaChange;
    type File = QuotasFile;
    const FILE_NAME: &'static str = "quotas.json";
    const WHAT: &'static str = "a quotas";

    fn to_file(table: &QuotaTable) -> QuotasFile {
        QuotasFile {
            entries: table
                .iter()
                .map(|(entity, values)| (entity.clone(), values.clone()))
                .collect(),
        }
    }

    fn from_file(file: QuotasFile) -> QuotaTable {
        file.entries.into_iter().collect()
    }

    fn apply(table: &mut QuotaTable, changes: &[QuotaChange]) {
        apply(table, changes)
    }
}

/// The client quotas every shard enforces (shared by the shards, `Arc`).
pub type ClientQuotas = PublishedTable<QuotasKind>;

impl PublishedTable<QuotasKind> {
    /// Whether no quota is set at all (the request path's shortcut: nothing to measure).
    pub fn is_empty(&self) -> bool {
        self.load().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::published_table::TableFileError;

    fn entity(user: Option<Option<&str>>, client_id: Option<Option<&str>>) -> QuotaEntity {
        QuotaEntity {
            user: user.map(EntityName::from_wire),
            client_id: client_id.map(EntityName::from_wire),
        }
    }

    fn set(table: &mut QuotaTable, entity: QuotaEntity, limit: f64) {
        apply(
            table,
            &[QuotaChange {
                entity,
                key: QuotaKey::ProducerByteRate,
                value: Some(limit),
            }],
        );
    }

    fn applied(table: &QuotaTable, user: &str, client_id: &str) -> Option<(f64, String, String)> {
        resolve(table, QuotaKey::ProducerByteRate, user, client_id)
            .map(|quota| (quota.limit, quota.user_tag, quota.client_id_tag))
    }

    #[test]
    fn the_most_specific_entity_wins_in_kip_55_order() {
        let mut table = QuotaTable::new();
        assert_eq!(applied(&table, "alice", "app"), None);
        let order = [
            (entity(None, Some(None)), 8.0, "", "app"),
            (entity(None, Some(Some("app"))), 7.0, "", "app"),
            (entity(Some(None), None), 6.0, "alice", ""),
            (entity(Some(None), Some(None)), 5.0, "alice", "app"),
            (entity(Some(None), Some(Some("app"))), 4.0, "alice", "app"),
            (entity(Some(Some("alice")), None), 3.0, "alice", ""),
            (entity(Some(Some("alice")), Some(None)), 2.0, "alice", "app"),
            (
                entity(Some(Some("alice")), Some(Some("app"))),
                1.0,
                "alice",
                "app",
            ),
        ];
        // Adding each more specific entity in turn takes over from the one before.
        for (entity, limit, user_tag, client_id_tag) in order {
            set(&mut table, entity, limit);
            assert_eq!(
                applied(&table, "alice", "app"),
                Some((limit, user_tag.to_owned(), client_id_tag.to_owned()))
            );
        }
        // Another user of the same client falls back to the default user's entries.
        assert_eq!(
            applied(&table, "bob", "app"),
            Some((4.0, "bob".to_owned(), "app".to_owned()))
        );
        // Another key is not set anywhere.
        assert_eq!(
            resolve(&table, QuotaKey::ConsumerByteRate, "alice", "app"),
            None
        );
    }

    #[test]
    fn a_client_id_quota_is_shared_by_every_user_of_it() {
        let mut table = QuotaTable::new();
        set(&mut table, entity(None, Some(Some("app"))), 100.0);
        assert_eq!(
            applied(&table, "alice", "app"),
            Some((100.0, String::new(), "app".to_owned()))
        );
        assert_eq!(applied(&table, "alice", "other"), None);
    }

    #[test]
    fn changes_survive_a_reopen_and_an_entity_without_limits_goes() {
        let dir = tempfile::tempdir().unwrap();
        let quotas = ClientQuotas::open(dir.path()).unwrap();
        assert!(quotas.is_empty());
        let alice = entity(Some(Some("alice")), None);
        let default_client = entity(None, Some(None));
        quotas
            .alter(&[
                QuotaChange {
                    entity: alice.clone(),
                    key: QuotaKey::ProducerByteRate,
                    value: Some(1024.0),
                },
                QuotaChange {
                    entity: default_client.clone(),
                    key: QuotaKey::RequestPercentage,
                    value: Some(12.5),
                },
            ])
            .unwrap();
        quotas
            .alter(&[QuotaChange {
                entity: default_client.clone(),
                key: QuotaKey::RequestPercentage,
                value: None,
            }])
            .unwrap();
        let reopened = ClientQuotas::open(dir.path()).unwrap();
        assert_eq!(reopened.table(), quotas.table());
        assert_eq!(
            reopened.table()[&alice][&QuotaKey::ProducerByteRate],
            1024.0
        );
        assert!(!reopened.table().contains_key(&default_client));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(QuotasKind::FILE_NAME),
            b"{\"version\":1,\"ent",
        )
        .unwrap();
        assert!(matches!(
            ClientQuotas::open(dir.path()),
            Err(TableFileError::Format { .. })
        ));
    }
}
