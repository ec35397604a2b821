//! How one member moves towards its target assignment, as Kafka's CurrentAssignmentBuilder does
//! it: a partition changes hands only after its previous owner has let it go. A member whose
//! target drops partitions keeps its epoch and is asked to revoke them (UnrevokedPartitions)
//! until a heartbeat reports it no longer owns them; only then does it take the target's epoch
//! and the new partitions that nobody else still holds (UnreleasedPartitions while some are
//! still held elsewhere, Stable once it has its whole target).

use super::{Assignment, MemberState, TopicId};

/// A member's assignment as the reconciliation changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberAssignment {
    pub state: MemberState,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// The member's next assignment, given its target at `target_epoch`, the partitions it says it
/// still owns (`None` when the heartbeat did not say), and whether another member still holds
/// a partition (assigned or pending revocation).
pub(crate) fn next_assignment(
    current: &MemberAssignment,
    target_epoch: i32,
    target: &Assignment,
    owned_reported: Option<&Assignment>,
    held_elsewhere: impl Fn(TopicId, i32) -> bool,
) -> MemberAssignment {
    match current.state {
        MemberState::UnrevokedPartitions => {
            let revoked =
                owned_reported.is_some_and(|owned| !intersects(owned, &current.pending_revocation));
            if !revoked {
                return current.clone();
            }
        }
        MemberState::Stable if current.member_epoch == target_epoch => return current.clone(),
        MemberState::Stable | MemberState::UnreleasedPartitions => {}
    }
    let mut kept = Assignment::new();
    let mut to_revoke = Assignment::new();
    for (topic, partitions) in &current.assigned {
        for &partition in partitions {
            let bucket = if contains(target, *topic, partition) {
                &mut kept
            } else {
                &mut to_revoke
            };
            bucket.entry(*topic).or_default().insert(partition);
        }
    }
    if !to_revoke.is_empty() {
        return MemberAssignment {
            state: MemberState::UnrevokedPartitions,
            member_epoch: current.member_epoch,
            previous_member_epoch: current.previous_member_epoch,
            assigned: kept,
            pending_revocation: to_revoke,
        };
    }
    let mut assigned = kept;
    let mut unreleased = false;
    for (topic, partitions) in target {
        for &partition in partitions {
            if contains(&assigned, *topic, partition) {
                continue;
            }
            if held_elsewhere(*topic, partition) {
                unreleased = true;
            } else {
                assigned.entry(*topic).or_default().insert(partition);
            }
        }
    }
    let (member_epoch, previous_member_epoch) = if current.member_epoch == target_epoch {
        (current.member_epoch, current.previous_member_epoch)
    } else {
        (target_epoch, current.member_epoch)
    };
    MemberAssignment {
        state: if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        },
        member_epoch,
        previous_member_epoch,
        assigned,
        pending_revocation: Assignment::new(),
    }
}

pub(crate) fn contains(assignment: &Assignment, topic: TopicId, partition: i32) -> bool {
    assignment
        .get(&topic)
        .is_some_and(|partitions| partitions.contains(&partition))
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter().any(|(topic, partitions)| {
        b.get(topic)
            .is_some_and(|other| partitions.iter().any(|p| other.contains(p)))
    })
}

/// Whether every partition of `a` is in `b`.
pub(crate) fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter().all(|(topic, partitions)| {
        partitions.is_empty()
            || b.get(topic)
                .is_some_and(|other| partitions.iter().all(|p| other.contains(p)))
    })
}
