//! Where transactions live: the internal `__transaction_state` topic, which partition of it
//! holds a transactional id (as Kafka places them: Java's `String.hashCode`, made
//! non-negative, modulo the partition count, the same hash that places groups), and its
//! creation on a broker alone (in a cluster the controller creates it, with the same settings:
//! `ferrite_replication::cluster`).

use engine::catalog::{
    transaction_state_topic_configs, Catalog, CatalogError, TRANSACTION_STATE_TOPIC,
};

use crate::coordinator_log::{partition_for_key, prepare_internal_topic};

/// The `__transaction_state` partition that holds `transactional_id`.
pub fn transaction_state_partition_for(transactional_id: &str, partitions: u32) -> u32 {
    partition_for_key(transactional_id, partitions)
}

/// Creates `__transaction_state` with `partitions` partitions unless it exists, and returns
/// the partition count the topic has (if it existed, its own: changing it would move ids
/// away from their records).
pub fn prepare_transaction_state_topic(
    catalog: &Catalog,
    partitions: u32,
) -> Result<u32, CatalogError> {
    prepare_internal_topic(
        catalog,
        TRANSACTION_STATE_TOPIC,
        partitions,
        transaction_state_topic_configs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_is_made_once_compacted_and_keeps_its_count() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(prepare_transaction_state_topic(&catalog, 4).unwrap(), 4);
        assert_eq!(prepare_transaction_state_topic(&catalog, 50).unwrap(), 4);
        let topic = catalog
            .topics()
            .get(TRANSACTION_STATE_TOPIC)
            .unwrap()
            .clone();
        assert_eq!(topic.configs["cleanup.policy"], "compact");
        assert!(engine::catalog::is_internal_topic(TRANSACTION_STATE_TOPIC));
    }

    #[test]
    fn ids_land_where_kafka_puts_them() {
        // Java: "my-group".hashCode() == -1906497762, and Math.abs of it % 50 == 12.
        assert_eq!(transaction_state_partition_for("my-group", 50), 12);
    }
}
