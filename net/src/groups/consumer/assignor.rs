//! The server-side assignors of the consumer protocol (KIP-848), Kafka's `uniform` and `range`:
//! given the members' subscriptions, the subscribed topics' partition counts and the previous
//! target assignment, each computes the next target assignment. Pure functions; the group
//! (`super`) decides when to run one and moves its members towards the result.
//!
//! `uniform` is sticky and balanced: a partition stays with its previous owner while that member
//! is still subscribed to its topic and not over its share, the rest go to the eligible member
//! with the fewest partitions, and a last pass moves partitions from a member to an eligible one
//! with at least two fewer until none can move, so members with the same subscriptions end up
//! within one partition of each other. `range` is Kafka's classic per-topic range: the members
//! subscribed to a topic, sorted by member id, each take a contiguous range of its partitions,
//! the first ones one more when the count does not divide.

use std::collections::{BTreeMap, BTreeSet};

use super::{Assignment, TopicId};

/// Which server-side assignor computes a group's target assignment (`group.remote.assignor` on
/// the client, `group.consumer.assignors` on the broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssignorKind {
    Uniform,
    Range,
}

impl AssignorKind {
    /// The name clients and Kafka's records use.
    pub fn name(self) -> &'static str {
        match self {
            AssignorKind::Uniform => "uniform",
            AssignorKind::Range => "range",
        }
    }

    pub fn from_name(name: &str) -> Option<AssignorKind> {
        match name {
            "uniform" => Some(AssignorKind::Uniform),
            "range" => Some(AssignorKind::Range),
            _ => None,
        }
    }

    /// The target assignment of every member in `subscriptions` (member id to subscribed topic
    /// ids; only topics in `partition_counts` can be assigned), given the `previous` target.
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, BTreeSet<TopicId>>,
        partition_counts: &BTreeMap<TopicId, i32>,
        previous: &BTreeMap<String, Assignment>,
    ) -> BTreeMap<String, Assignment> {
        let target = match self {
            AssignorKind::Uniform => uniform(subscriptions, partition_counts, previous),
            AssignorKind::Range => range(subscriptions, partition_counts),
        };
        debug_assert!(target.keys().eq(subscriptions.keys()));
        target
    }
}

/// The members subscribed to each topic that exists.
fn subscribers(
    subscriptions: &BTreeMap<String, BTreeSet<TopicId>>,
    partition_counts: &BTreeMap<TopicId, i32>,
) -> BTreeMap<TopicId, Vec<String>> {
    let mut by_topic: BTreeMap<TopicId, Vec<String>> = BTreeMap::new();
    for (member_id, topics) in subscriptions {
        for topic in topics.iter().filter(|t| partition_counts.contains_key(*t)) {
            by_topic.entry(*topic).or_default().push(member_id.clone());
        }
    }
    by_topic
}

fn range(
    subscriptions: &BTreeMap<String, BTreeSet<TopicId>>,
    partition_counts: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    let mut target: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|member_id| (member_id.clone(), Assignment::new()))
        .collect();
    for (topic, members) in subscribers(subscriptions, partition_counts) {
        let partitions = partition_counts[&topic].max(0);
        let count = i32::try_from(members.len()).expect("group size is bounded");
        let (share, extra) = (partitions / count, partitions % count);
        let mut next = 0;
        for (index, member_id) in (0..).zip(&members) {
            let take = share + i32::from(index < extra);
            let assigned = target
                .get_mut(member_id)
                .expect("every member has a target");
            if take > 0 {
                assigned.insert(topic, (next..next + take).collect());
            }
            next += take;
        }
        assert_eq!(next, partitions, "range hands out every partition once");
    }
    target
}

fn uniform(
    subscriptions: &BTreeMap<String, BTreeSet<TopicId>>,
    partition_counts: &BTreeMap<TopicId, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let eligible = subscribers(subscriptions, partition_counts);
    let partitions_total: usize = eligible
        .keys()
        .map(|topic| usize::try_from(partition_counts[topic]).unwrap_or(0))
        .sum();
    // The most a member keeps of its previous partitions: a homogeneous group's share.
    let share_max = partitions_total.div_ceil(subscriptions.len().max(1));
    let mut owner: BTreeMap<(TopicId, i32), String> = BTreeMap::new();
    let mut counts: BTreeMap<&str, usize> =
        subscriptions.keys().map(|id| (id.as_str(), 0)).collect();
    for (member_id, assignment) in previous {
        let Some(topics) = subscriptions.get(member_id) else {
            continue;
        };
        for (topic, partitions) in assignment {
            let Some(&partition_count) = partition_counts.get(topic) else {
                continue;
            };
            if !topics.contains(topic) {
                continue;
            }
            for &partition in partitions.iter().filter(|&&p| p < partition_count) {
                let count = counts.get_mut(member_id.as_str()).expect("a member");
                if *count < share_max && !owner.contains_key(&(*topic, partition)) {
                    owner.insert((*topic, partition), member_id.clone());
                    *count += 1;
                }
            }
        }
    }
    for (topic, members) in &eligible {
        for partition in 0..partition_counts[topic] {
            if owner.contains_key(&(*topic, partition)) {
                continue;
            }
            let least = least_loaded(members, &counts).to_owned();
            *counts.get_mut(least.as_str()).expect("a member") += 1;
            owner.insert((*topic, partition), least);
        }
    }
    // Balance: each move lowers the sum of squared counts, so this ends; the bound is a
    // guard against a mistake, not a limit that is ever reached.
    let mut moves_left = partitions_total * partitions_total + 1;
    loop {
        let mut moved = false;
        for ((topic, partition), member_id) in owner.iter_mut() {
            let members = &eligible[topic];
            let least = least_loaded(members, &counts);
            if counts[least] + 1 < counts[member_id.as_str()] {
                let least = least.to_owned();
                *counts.get_mut(member_id.as_str()).expect("a member") -= 1;
                *counts.get_mut(least.as_str()).expect("a member") += 1;
                *member_id = least;
                moved = true;
                moves_left -= 1;
                assert!(
                    moves_left > 0,
                    "balancing {topic:?}-{partition} does not end"
                );
            }
        }
        if !moved {
            break;
        }
    }
    let mut target: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|member_id| (member_id.clone(), Assignment::new()))
        .collect();
    for ((topic, partition), member_id) in owner {
        target
            .get_mut(&member_id)
            .expect("owners are members")
            .entry(topic)
            .or_default()
            .insert(partition);
    }
    target
}

/// The member of `members` with the fewest partitions (the first by id on a tie).
fn least_loaded<'a>(members: &'a [String], counts: &BTreeMap<&str, usize>) -> &'a str {
    members
        .iter()
        .min_by_key(|member_id| counts[member_id.as_str()])
        .expect("a topic in `eligible` has a subscriber")
}
