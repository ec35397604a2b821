//! The controller leader's side: deciding requests one at a time against an image that has
//! applied the whole log, proposing the planned records, and watching brokers' liveness.
//!
//! Topic ids are version-4 UUIDs drawn from a [`SplitMix64`](crate::SplitMix64) seeded per
//! start (the crate's only randomness is seeded, so tests are reproducible).

use std::collections::BTreeMap;

use engine::batch::CheckedBatch;
use engine::catalog::PRODUCER_ID_BLOCK;
use engine::log_rate_limited;
use engine::topic_config;

use super::wire::{ControllerRequest, Outcome};
use super::{apply, random_uuid, within, Controller, Planned};
use crate::cluster_id;
use crate::metadata::{
    plan_allocate_producer_ids, plan_alter_acls, plan_alter_client_quotas, plan_alter_configs,
    plan_alter_credentials, plan_cancel_reassignment, plan_complete_reassignment,
    plan_create_partitions, plan_create_topic, plan_delete_topic, plan_liveness, plan_reassign,
    MetadataImage, MetadataRecord, NewTopic, PlanError,
};
use crate::replica::{Acks, PartitionReplica, ProduceError};
use crate::RoleKind;

/// Fresh topic ids drawn for one creation before giving up (a clash is 2^-122 likely).
const TOPIC_ID_DRAWS_MAX: usize = 8;

impl Controller {
    /// Decides `request` if this broker leads: the answer is `NotLeader` otherwise.
    pub(super) async fn lead(&self, request: ControllerRequest) -> Outcome {
        if let ControllerRequest::Heartbeat { node_id } = request {
            // Noted; only changes of liveness are proposed. A fenced broker heard from is
            // unfenced at once, as Kafka's controller does on a heartbeat (a restarted broker is
            // left out of every Metadata answer until then, and clients forget brokers left
            // out); the others by the periodic check.
            if let Err(not_leader) = self.leading_replica() {
                return not_leader;
            }
            self.note_heard_from(node_id);
            let fenced = self
                .inner
                .image
                .borrow()
                .broker(node_id)
                .is_some_and(|broker| broker.fenced);
            return if fenced {
                self.check_liveness().await
            } else {
                Outcome::Applied(self.applied_index())
            };
        }
        self.decide(|controller, image| controller.plan(image, request))
            .await
    }

    /// Fences the brokers not heard from within the session timeout and unfences those heard
    /// from again, if this broker leads.
    pub(super) async fn run_liveness_checks(self) {
        let config = &self.inner.config;
        while self.stopped().is_none() {
            glommio::timer::sleep(config.liveness_check_interval).await;
            if !self.is_leader() {
                continue;
            }
            // A check that cannot commit (leadership lost meanwhile) is simply not done.
            let _ = within(config.request_timeout, self.check_liveness()).await;
        }
    }

    /// One liveness check: fences the brokers not heard from within the session timeout and
    /// unfences those heard from since they were fenced.
    async fn check_liveness(&self) -> Outcome {
        let session_timeout_ms =
            u64::try_from(self.inner.config.session_timeout.as_millis()).unwrap_or(u64::MAX);
        self.decide(|controller, image| {
            let heartbeats_ms = controller.inner.heartbeats_ms.borrow();
            let mut records = plan_liveness(
                image,
                &heartbeats_ms,
                controller.now_ms(),
                session_timeout_ms,
            );
            // A new cluster (or one from before cluster ids) gets its id from its first
            // leader's first check (see `crate::cluster_id`).
            if image.cluster_id().is_none() {
                match cluster_id::generate() {
                    Ok(id) => records.push(MetadataRecord::ClusterId { id }),
                    Err(error) => log_rate_limited!("ferrite: controller: {error}"),
                }
            }
            Ok(records)
        })
        .await
    }

    /// Plans with `plan` against an image that has applied the whole log, proposes the records
    /// and answers once they are committed and applied. One decision at a time.
    async fn decide(&self, plan: impl FnOnce(&Controller, &MetadataImage) -> Planned) -> Outcome {
        let replica = match self.leading_replica() {
            Ok(replica) => replica,
            Err(not_leader) => return not_leader,
        };
        let _turn = self.inner.deciding.lock().await;
        let term = replica.term();
        // Everything in the leader's log (earlier leaders' entries, this term's LEADER_CHANGE)
        // is applied before planning: only then does the image hold all that committed.
        let caught_up = self
            .inner
            .changes
            .wait_for(|| {
                if self.stopped().is_some()
                    || replica.role() != RoleKind::Leader
                    || replica.term() != term
                {
                    Some(false)
                } else {
                    (self.applied_index() >= replica.log().log_end_offset()).then_some(true)
                }
            })
            .await;
        if !caught_up {
            return self.not_leader();
        }
        self.take_over(term);
        let planned = plan(self, &self.inner.image.borrow());
        match planned {
            Err(error) => Outcome::Refused(error.into()),
            Ok(records) if records.is_empty() => Outcome::Applied(self.applied_index()),
            Ok(records) => self.propose(&replica, &records).await,
        }
    }

    async fn propose(&self, replica: &PartitionReplica, records: &[MetadataRecord]) -> Outcome {
        let now_ms = i64::try_from(self.now_ms()).unwrap_or(i64::MAX);
        let batch = apply::entry_batch(records, now_ms);
        // Checked as any producer's batch is, before the group numbers it: an entry its log
        // would refuse must not reach the Raft core.
        let batch = match CheckedBatch::produced(batch, replica.log().config().batch_bytes_max) {
            Ok(batch) => batch,
            Err(error) => return Outcome::Failed(format!("the metadata entry: {error}")),
        };
        match replica.produce(batch, Acks::Committed).await {
            Ok(receipt) => {
                let index = receipt.last_offset + 1;
                // The next decision must see this one.
                match self.wait_applied(index).await {
                    Ok(()) => Outcome::Applied(index),
                    Err(error) => Outcome::Failed(error.to_string()),
                }
            }
            Err(ProduceError::NotLeader { leader_hint }) => Outcome::NotLeader { leader_hint },
            Err(error @ (ProduceError::Log(_) | ProduceError::Stopped)) => {
                Outcome::Failed(error.to_string())
            }
        }
    }

    /// What `request` changes in `image`. Heartbeats are not decided here.
    fn plan(&self, image: &MetadataImage, request: ControllerRequest) -> Planned {
        let broker_log_config = &self.inner.config.broker_log_config;
        match request {
            ControllerRequest::Heartbeat { .. } => Ok(vec![]),
            ControllerRequest::RegisterBroker(registration) => {
                self.note_heard_from(registration.node_id);
                let known = image
                    .broker(registration.node_id)
                    .is_some_and(|broker| broker.registration == registration);
                Ok(if known {
                    vec![]
                } else {
                    vec![MetadataRecord::RegisterBroker(Box::new(registration))]
                })
            }
            ControllerRequest::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                let mut topic = NewTopic {
                    name,
                    topic_id: [0; 16],
                    partitions,
                    replication_factor,
                    configs: configs.into_iter().collect(),
                };
                let mut draws = 0;
                loop {
                    topic.topic_id = random_uuid(&mut self.inner.topic_ids.borrow_mut());
                    draws += 1;
                    match plan_create_topic(image, broker_log_config, &topic) {
                        Err(PlanError::TopicIdInUse(_)) if draws < TOPIC_ID_DRAWS_MAX => continue,
                        planned => return planned,
                    }
                }
            }
            ControllerRequest::DeleteTopic { name } => plan_delete_topic(image, &name),
            ControllerRequest::CreatePartitions { name, count } => {
                plan_create_partitions(image, &name, count)
            }
            ControllerRequest::AlterConfigs { name, changes } => {
                plan_alter_configs(image, broker_log_config, &name, |current| {
                    let mut altered = current.clone();
                    for change in &changes {
                        topic_config::change(
                            broker_log_config,
                            &mut altered,
                            &change.key,
                            change.operation.into(),
                            change.value.as_deref(),
                        )?;
                    }
                    Ok(altered)
                })
            }
            ControllerRequest::Reassign {
                topic,
                partition,
                replicas: Some(replicas),
            } => plan_reassign(image, &topic, partition, &replicas),
            ControllerRequest::Reassign {
                topic,
                partition,
                replicas: None,
            } => plan_cancel_reassignment(image, &topic, partition),
            ControllerRequest::CompleteReassignment {
                topic,
                partition,
                voters,
            } => plan_complete_reassignment(image, &topic, partition, &voters),
            ControllerRequest::AllocateProducerIds {
                node_id,
                incarnation,
            } => plan_allocate_producer_ids(image, node_id, incarnation, PRODUCER_ID_BLOCK),
            ControllerRequest::AlterCredentials { records } => {
                plan_alter_credentials(image, records)
            }
            ControllerRequest::AlterClientQuotas { records } => {
                Ok(plan_alter_client_quotas(records))
            }
            ControllerRequest::AlterAcls { records } => plan_alter_acls(image, records),
        }
    }

    /// The first decision of a term: every broker the image knows counts as heard from now, so
    /// none is fenced for the silence of the election (heartbeats sent to the old leader).
    fn take_over(&self, term: u64) {
        if self.inner.leading_term.get() == Some(term) {
            return;
        }
        let now_ms = self.now_ms();
        let image = self.inner.image.borrow();
        let mut heartbeats_ms = self.inner.heartbeats_ms.borrow_mut();
        *heartbeats_ms = image
            .brokers()
            .map(|broker| (broker.registration.node_id, now_ms))
            .collect::<BTreeMap<_, _>>();
        self.inner.leading_term.set(Some(term));
    }

    fn note_heard_from(&self, node_id: crate::NodeId) {
        let now_ms = self.now_ms();
        self.inner
            .heartbeats_ms
            .borrow_mut()
            .insert(node_id, now_ms);
    }

    fn leading_replica(&self) -> Result<PartitionReplica, Outcome> {
        let replica = &self.inner.replica;
        if replica.role() == RoleKind::Leader && self.stopped().is_none() {
            Ok(replica.clone())
        } else {
            Err(self.not_leader())
        }
    }

    fn not_leader(&self) -> Outcome {
        Outcome::NotLeader {
            leader_hint: self.leader().filter(|leader| *leader != self.node_id()),
        }
    }
}
