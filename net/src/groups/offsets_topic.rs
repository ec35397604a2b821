//! Where groups live: the internal `__consumer_offsets` topic, which partition of it holds a
//! group (as Kafka places groups, so a client's FindCoordinator and every group call agree),
//! and its creation on a broker alone (in a cluster the controller creates it, with the same
//! settings: `ferrite_replication::cluster`).

use engine::catalog::{offsets_topic_configs, Catalog, CatalogError, OFFSETS_TOPIC};

use crate::coordinator_log::{partition_for_key, prepare_internal_topic};

/// The `__consumer_offsets` partition that holds `group_id`.
pub fn offsets_partition_for(group_id: &str, partitions: u32) -> u32 {
    partition_for_key(group_id, partitions)
}

/// Creates `__consumer_offsets` with `partitions` partitions and
/// [`offsets_topic_configs`] if it does not exist yet, and returns the partition count the
/// topic has: if it existed, its own (changing it would move groups away from their records),
/// and a topic made by a version that did not compact it (retention off instead) is made
/// compacted.
pub fn prepare_offsets_topic(catalog: &Catalog, partitions: u32) -> Result<u32, CatalogError> {
    if let Some(topic) = catalog.topics().get(OFFSETS_TOPIC) {
        if topic.configs.get("cleanup.policy").map(String::as_str) != Some("compact") {
            catalog.alter_internal_topic_configs(OFFSETS_TOPIC, |current| {
                let mut configs = current.clone();
                configs.extend(
                    offsets_topic_configs()
                        .into_iter()
                        .filter(|(name, _)| name == "cleanup.policy"),
                );
                Ok(configs)
            })?;
        }
    }
    prepare_internal_topic(catalog, OFFSETS_TOPIC, partitions, offsets_topic_configs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offsets_topic_is_compacted_including_one_made_before_compaction_existed() {
        let configs =
            |catalog: &Catalog| catalog.topics().get(OFFSETS_TOPIC).unwrap().configs.clone();
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(prepare_offsets_topic(&catalog, 16).unwrap(), 16);
        assert_eq!(configs(&catalog)["cleanup.policy"], "compact");

        // What an older version made: retention off instead of compaction.
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let old = [("retention.ms", "-1"), ("segment.bytes", "104857600")]
            .map(|(name, value)| (name.to_owned(), value.to_owned()));
        catalog
            .create_topic(OFFSETS_TOPIC, 3, old.into_iter().collect(), false)
            .unwrap();
        assert_eq!(
            prepare_offsets_topic(&catalog, 16).unwrap(),
            3,
            "the existing count is kept"
        );
        let reopened = Catalog::open(dir.path()).unwrap();
        let configs = configs(&reopened);
        assert_eq!(configs["cleanup.policy"], "compact", "and persisted");
        assert_eq!(configs["retention.ms"], "-1", "the other settings stay");
    }

    #[test]
    fn groups_land_where_kafka_puts_them() {
        // Java: "my-group".hashCode() == -1906497762, and Math.abs of it % 50 == 12.
        assert_eq!(offsets_partition_for("my-group", 50), 12);
        assert_eq!(offsets_partition_for("", 50), 0);
        for partitions in [1, 16, 50] {
            for group in ["a", "orders", "consumer-group-with-a-long-name-ü"] {
                assert!(offsets_partition_for(group, partitions) < partitions);
            }
        }
    }
}
