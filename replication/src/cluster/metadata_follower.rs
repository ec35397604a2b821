//! Keeps this broker in step with the metadata log, on the controller's shard: publishes each
//! newly applied image to the shards, mirrors its topics into the catalog (ids and configs
//! included), and has the owning shards run this broker's replicas of its partitions (and
//! delete its copies of partitions moved away). The catalog and the shards are driven from
//! the log, never the reverse, so that every broker ends up with what the log says.
//!
//! Mirroring a topic creates and deletes partition directories as a single broker does, adds
//! new partitions and replaces configs (reloading open logs). Each replica placed here runs on
//! the shard the log names (`engine::shard::ReplicaPlacement`, written before the replica
//! starts) through `ShardReplication::host_anywhere`, and is told its preferred leader (the
//! first replica, see `replica::preferred`) and its move's target (again when it changes). A
//! partition's directory is made again when it moves back to this broker
//! (`Catalog::restore_partition_directory`); this broker's copy is stopped and deleted once a
//! completed move leaves it out (after a restart, of every partition placed elsewhere).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use engine::catalog::{is_internal_topic, Catalog, CatalogError};
use engine::shard::{PartitionId, ShardContext};

use super::start::ClusterStart;
use super::ClusterState;
use crate::controller::Controller;
use crate::metadata::{MetadataImage, Replica, TopicImage};
use crate::shard::{Hosting, ShardReplication};
use crate::NodeId;

/// How often the controller's shard looks for newly applied metadata.
const SYNC_INTERVAL: Duration = Duration::from_millis(20);

/// Follows the metadata log until shutdown (see the module documentation), for the broker
/// `start` describes (its incarnation is this run's, as the broker registered).
pub(super) async fn follow_metadata(
    context: ShardContext,
    start: ClusterStart,
    controller: Controller,
    replication: Rc<ShardReplication>,
) {
    let ClusterStart {
        state,
        catalog,
        data_dir,
        incarnation,
        controller_leader_observed,
        ..
    } = start;
    let mut applied = 0;
    let mut cluster_id_settled = false;
    let mut hosted = Hosted {
        replicas: BTreeMap::new(),
        incarnation,
        swept: false,
    };
    while !context.is_shutting_down() {
        controller_leader_observed(controller.leader());
        if controller.applied_index() != applied {
            applied = controller.applied_index();
            let image = Arc::new(controller.image().borrow().clone());
            // Before the image: whoever waits for an index to be applied here authenticates
            // with its credentials and is authorized with its ACLs.
            if *state.credentials.table() != *image.credentials() {
                state.credentials.replace_all(image.credentials().clone());
            }
            if *state.quotas.table() != *image.quotas() {
                state.quotas.replace_all(image.quotas().clone());
            }
            if *state.acls.table() != *image.acls() {
                state.acls.replace_all(image.acls().clone());
            }
            state.image.store(image.clone());
            if !cluster_id_settled {
                cluster_id_settled = adopt_cluster_id(&state, &image, &data_dir);
            }
            if let Err(error) = mirror(
                &context,
                &state,
                &image,
                &replication,
                &catalog,
                &mut hosted,
            )
            .await
            {
                engine::log_rate_limited!("ferrite: applying the metadata log: {error}");
            }
        }
        let shutdown = std::pin::pin!(context.shutdown_requested());
        let pause = std::pin::pin!(glommio::timer::sleep(SYNC_INTERVAL));
        futures::future::select(shutdown, pause).await;
    }
}

/// What this broker runs of the metadata log's partitions.
struct Hosted {
    /// The partitions hosted here, with the target voters their replicas were last told.
    replicas: BTreeMap<PartitionId, Option<Vec<NodeId>>>,
    /// This run of the broker, as it registered.
    incarnation: u64,
    /// Whether the copies of partitions placed elsewhere were removed since this broker
    /// started (a move may have completed while it was down, leaving its copy behind).
    swept: bool,
}

impl Hosted {
    /// Whether `image` is at least as new as this run's registration. After a restart the
    /// metadata log is applied again from its start, and an older image may place on this
    /// broker partitions since moved away, or the reverse: copies are deleted or made again
    /// only from an image that has everything committed before this run began.
    fn is_current(&self, image: &MetadataImage, node_id: NodeId) -> bool {
        image.has_run(node_id, self.incarnation)
    }
}
/// Makes the catalog and the hosted replicas match `image`.
async fn mirror(
    context: &ShardContext,
    state: &ClusterState,
    image: &MetadataImage,
    replication: &Rc<ShardReplication>,
    catalog: &Catalog,
    hosted: &mut Hosted,
) -> Result<(), String> {
    let node_id = state.settings.node_id;
    let current = hosted.is_current(image, node_id);
    // The replicas placed here route to their shards before they start; those taken away
    // keep theirs until they are removed.
    let placed = placement_on(image, node_id);
    let mut during = (*state.placement.snapshot()).clone();
    during.extend(placed.clone());
    state.placement.set(during);
    for (name, topic) in image.topics() {
        let existing = catalog.topics().get(name).cloned();
        match existing {
            Some(existing) if existing.id == topic.id => {
                follow_changes(context, catalog, name, &existing, topic).await?
            }
            Some(_) => {
                // Deleted and created again under the same name while this broker was away.
                remove_topic(context, replication, catalog, state, name, hosted).await?;
                create_topic(catalog, name, topic)?;
            }
            None => create_topic(catalog, name, topic)?,
        }
        for (number, replicas) in (0u32..).zip(&topic.partitions) {
            let partition = PartitionId::new(name, number);
            let node_ids = |replicas: &[Replica]| -> Vec<NodeId> {
                replicas.iter().map(|replica| replica.node_id).collect()
            };
            let involved = node_ids(replicas);
            let moving = topic.reassignments.get(&number);
            if involved.contains(&node_id) {
                let target = moving.map(|moving| node_ids(&moving.target));
                if hosted.replicas.get(&partition) == Some(&target) {
                    continue;
                }
                // A replica new here starts with the group's voters from before the move (it
                // is not one of them, so it cannot campaign) and learns the changes from the
                // leader's log.
                // The first replica is the preferred leader (the first of the target's during
                // a move, as the image lists them).
                let preferred_leader = involved.first().copied();
                let voters = moving.map_or(involved, |moving| node_ids(&moving.original));
                let hosting = Hosting {
                    voters,
                    target: target.clone(),
                    preferred_leader,
                };
                if current && !hosted.replicas.contains_key(&partition) {
                    catalog
                        .restore_partition_directory(name, number)
                        .map_err(|error| format!("hosting {partition:?}: {error}"))?;
                }
                replication
                    .host_anywhere(partition.clone(), hosting)
                    .await
                    .map_err(|error| format!("hosting {partition:?}: {error}"))?;
                hosted.replicas.insert(partition, target);
            } else if current && (hosted.replicas.remove(&partition).is_some() || !hosted.swept) {
                // Moved away: the group goes on without this broker, and its copy goes.
                replication.unhost_anywhere(partition.clone()).await;
                context
                    .remove_partition(partition.clone())
                    .await
                    .map_err(|error| format!("removing {partition:?}: {error}"))?;
            }
        }
    }
    let gone: Vec<String> = catalog
        .topics()
        .iter()
        .map(|topic| topic.name.clone())
        .filter(|name| !is_internal_topic(name) && image.topic(name).is_none())
        .collect();
    for name in gone {
        remove_topic(context, replication, catalog, state, &name, hosted).await?;
    }
    state.placement.set(placed);
    hosted.swept |= current;
    Ok(())
}

/// The shard of each replica `image` places on broker `node_id`.
/// Takes the cluster id the log holds if this broker has none yet, and stores it in the data
/// directory (see `crate::cluster_id`); returns whether there is nothing more to do about it
/// (the id was taken, or this broker's own differs, which is said once).
fn adopt_cluster_id(state: &ClusterState, image: &MetadataImage, data_dir: &Path) -> bool {
    let Some(id) = image.cluster_id() else {
        return false;
    };
    if state.cluster_id.adopt(id) {
        match crate::cluster_id::store(data_dir, id) {
            Ok(()) => eprintln!("ferrite: this broker joined cluster {id}"),
            Err(error) => {
                eprintln!("ferrite: joined cluster {id}, but cannot store its id: {error}")
            }
        }
    } else if *state.cluster_id.get() != id {
        eprintln!(
            "ferrite: the metadata log names cluster {id}, but this broker's data directory \
             belongs to cluster {}; its peers of cluster {id} refuse it",
            state.cluster_id.get()
        );
    }
    true
}

fn placement_on(image: &MetadataImage, node_id: NodeId) -> HashMap<PartitionId, usize> {
    image
        .topics()
        .flat_map(|(name, topic)| {
            (0u32..)
                .zip(&topic.partitions)
                .filter_map(move |(partition, replicas)| {
                    let here = replicas.iter().find(|replica| replica.node_id == node_id)?;
                    let shard = usize::try_from(here.shard).ok()?;
                    Some((PartitionId::new(name, partition), shard))
                })
        })
        .collect()
}

/// Brings a topic this broker has up to the log's: partitions added, configs replaced (and
/// applied to its open logs).
async fn follow_changes(
    context: &ShardContext,
    catalog: &Catalog,
    name: &str,
    existing: &engine::catalog::Topic,
    topic: &TopicImage,
) -> Result<(), String> {
    let count = topic.partitions.len() as u32;
    if count > existing.partitions {
        catalog
            .add_partitions(name, i64::from(count), false)
            .map_err(|error| format!("adding partitions to '{name}': {error}"))?;
    }
    if existing.configs != topic.configs {
        catalog
            .alter_topic_configs(name, false, |_| Ok(topic.configs.clone()))
            .map_err(|error| format!("altering the configs of '{name}': {error}"))?;
        for partition in 0..count {
            context
                .reload_log_config(PartitionId::new(name, partition))
                .await
                .map_err(|error| format!("reloading the configs of '{name}': {error}"))?;
        }
    }
    Ok(())
}

fn create_topic(catalog: &Catalog, name: &str, topic: &TopicImage) -> Result<(), String> {
    match catalog.create_topic_as(
        name,
        topic.id,
        topic.partitions.len() as i64,
        topic.configs.clone(),
        false,
    ) {
        Ok(_) | Err(CatalogError::TopicExists(_)) => Ok(()),
        Err(error) => Err(format!("creating topic '{name}': {error}")),
    }
}

async fn remove_topic(
    context: &ShardContext,
    replication: &Rc<ShardReplication>,
    catalog: &Catalog,
    state: &ClusterState,
    name: &str,
    hosted: &mut Hosted,
) -> Result<(), String> {
    let topic = match catalog.delete_topic(name) {
        Ok(topic) => topic,
        Err(CatalogError::UnknownTopic(_)) => return Ok(()),
        Err(error) => return Err(format!("deleting topic '{name}': {error}")),
    };
    for partition in 0..topic.partitions {
        let partition = PartitionId::new(name, partition);
        replication.unhost_anywhere(partition.clone()).await;
        hosted.replicas.remove(&partition);
        context
            .remove_partition(partition.clone())
            .await
            .map_err(|error| format!("removing {partition:?}: {error}"))?;
    }
    state.leaders.forget_topic(name);
    Ok(())
}
