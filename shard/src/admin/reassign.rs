//! Partition reassignments (AlterPartitionReassignments) as metadata changes: the controller's
//! decisions, without I/O.
//!
//! Contract: like every metadata change, a reassignment is decided on shard 0 against the
//! caught-up snapshot and its record ([`ReplicasChanged`]) goes through the metadata log, so
//! every broker sees it and it survives restarts. Per partition, as Kafka's controller
//! (`ReplicationControlManager.changePartitionReassignment`) answers:
//! - unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION;
//! - a target that is empty, lists a broker twice or names a broker that is not a cluster
//!   member: INVALID_REPLICA_ASSIGNMENT (Kafka's messages); a target of another size when the
//!   request does not allow it (KIP-860): INVALID_REPLICATION_FACTOR;
//! - a partition with a single replica is reassigned like any other (as Kafka does; it is how
//!   a topic's replication factor is raised): the record makes it a Raft group, and its broker
//!   converts its direct-path log into a one-voter group over the same batches
//!   (`crate::replica::convert`) before the new replicas join; a target of one replica keeps a
//!   one-voter Raft group (`PartitionState::raft_backed`);
//! - a null target (cancel) where no reassignment is in progress: NO_REASSIGNMENT_IN_PROGRESS;
//!   otherwise a cancel is a move back to the replicas the partition had before it (the
//!   replicas that were joining become replicas leaving, so the Raft group drops them).
//! - A target equal to the settled replicas records nothing; a reordering only is recorded at
//!   once as complete. Otherwise the partition's replicas become the target followed by the
//!   current replicas not in it (KRaft's merged list), `adding` = the target's replicas that
//!   are not already full replicas, `removing` = the replicas not in the target.
//!
//! The membership change itself is driven by the partition's Raft leader
//! (`crate::replica::reassign`); when its group's voters are the target it asks for
//! [`CompleteReassignment`], recorded only while the same target is still in progress.

use super::{each_failed, record, run, MetadataChange, Placing};
use crate::error::PartitionError;
use crate::metadata::records::{MetadataRecord, ReplicasChanged};
use crate::metadata::{MetadataSnapshot, PartitionState};
use crate::msg::{AlterReassignments, CompleteReassignment, ReassignTarget};
use crate::shard::Shard;
use std::rc::Rc;

/// Starts, changes or cancels reassignments; one result per item, in order.
pub async fn alter(
    shard: &Rc<Shard>,
    items: Vec<ReassignTarget>,
    members: Vec<i32>,
    allow_rf_change: bool,
) -> Vec<Result<(), PartitionError>> {
    let n = items.len();
    run(shard, AlterReassignments { items, members, allow_rf_change }).await.unwrap_or_else(|e| vec![Err(e); n])
}

/// Records a reassignment as complete (its Raft group's voters are the target).
pub async fn complete(shard: &Rc<Shard>, c: CompleteReassignment) -> Result<(), PartitionError> {
    run(shard, c).await?
}

/// A decided move: (replicas, adding, removing, ISR) of the record.
pub type Moved = (Vec<i32>, Vec<i32>, Vec<i32>, Vec<i32>);

/// The record that moves `p` to `target` (None: nothing to record).
pub fn decide(
    p: &PartitionState,
    target: Option<&[i32]>,
    members: &[i32],
    allow_rf_change: bool,
) -> Result<Option<Moved>, PartitionError> {
    let target: Vec<i32> = match target {
        Some(t) => {
            check_target(t, members)?;
            let settled = p.replicas.len() - p.removing.len() - p.adding.len();
            let before = if p.moving() { p.replicas.len() - p.adding.len() } else { settled };
            if !allow_rf_change && t.len() != before {
                return Err(PartitionError::InvalidReplicationFactor(format!(
                    "The replication factor is changed from {before} to {} but allowReplicationFactorChange is false",
                    t.len()
                )));
            }
            t.to_vec()
        }
        None if !p.moving() => return Err(PartitionError::NoReassignmentInProgress),
        // Cancel: back to the replicas that were there before the move.
        None => p.replicas.iter().copied().filter(|n| !p.adding.contains(n)).collect(),
    };
    if !p.moving() && target == p.replicas {
        return Ok(None);
    }
    let full: Vec<i32> = p.replicas.iter().copied().filter(|n| !p.adding.contains(n)).collect();
    let adding: Vec<i32> = target.iter().copied().filter(|n| !full.contains(n)).collect();
    let removing: Vec<i32> = p.replicas.iter().copied().filter(|n| !target.contains(n)).collect();
    let mut replicas = target.clone();
    replicas.extend(removing.iter().copied());
    let mut isr: Vec<i32> = p.isr.iter().copied().filter(|n| replicas.contains(n)).collect();
    isr.sort_unstable();
    Ok(Some((replicas, adding, removing, isr)))
}

/// Kafka's checks of a manual assignment (`validateManualPartitionAssignment`).
fn check_target(t: &[i32], members: &[i32]) -> Result<(), PartitionError> {
    if t.is_empty() {
        return Err(PartitionError::InvalidReplicaAssignment(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    for (i, n) in t.iter().enumerate() {
        if t[..i].contains(n) {
            return Err(PartitionError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes the broker {n} more than once."
            )));
        }
        if !members.contains(n) {
            return Err(PartitionError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes broker {n}, but no such broker is registered."
            )));
        }
    }
    Ok(())
}

fn one(
    snap: &mut MetadataSnapshot,
    placing: &Placing<'_>,
    records: &mut Vec<MetadataRecord>,
    item: &ReassignTarget,
    members: &[i32],
    allow_rf_change: bool,
) -> Result<(), PartitionError> {
    let tp = &item.tp;
    let p = snap.partition(&tp.topic, tp.partition, placing.node).ok_or(PartitionError::UnknownTopicOrPartition)?;
    if !snap.replication.contains_key(&tp.topic) {
        return Err(PartitionError::InvalidReplicaAssignment("a lone broker's topic has no replicas to move".into()));
    }
    let Some((replicas, adding, removing, isr)) = decide(&p, item.target.as_deref(), members, allow_rf_change)? else {
        return Ok(());
    };
    let id = snap.topics[&tp.topic].id;
    let c = ReplicasChanged { id, partition: tp.partition.0, replicas, adding, removing, isr };
    record(snap, placing, records, vec![MetadataRecord::ReplicasChanged(c)])
}

impl MetadataChange for AlterReassignments {
    type Reply = Vec<Result<(), PartitionError>>;
    const ADDS_PARTITIONS: bool = true;

    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        let replies = self
            .items
            .iter()
            .map(|item| one(snap, placing, &mut records, item, &self.members, self.allow_rf_change))
            .collect();
        (replies, records)
    }

    fn not_saved(reply: Self::Reply, err: &PartitionError) -> Self::Reply {
        each_failed(reply, err)
    }
}

impl MetadataChange for CompleteReassignment {
    type Reply = Result<(), PartitionError>;
    const ADDS_PARTITIONS: bool = false;

    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        let tp = &self.tp;
        let Some(p) = snap.partition(&tp.topic, tp.partition, placing.node) else {
            return (Err(PartitionError::UnknownTopicOrPartition), records);
        };
        if !p.moving() || p.target() != self.target {
            return (Err(PartitionError::NoReassignmentInProgress), records);
        }
        let id = snap.topics[&tp.topic].id;
        let mut isr: Vec<i32> = self.isr.into_iter().filter(|n| self.target.contains(n)).collect();
        isr.sort_unstable();
        let c = ReplicasChanged {
            id,
            partition: tp.partition.0,
            replicas: self.target,
            adding: Vec::new(),
            removing: Vec::new(),
            isr,
        };
        let r = record(snap, placing, &mut records, vec![MetadataRecord::ReplicasChanged(c)]);
        (r, records)
    }

    fn not_saved(reply: Self::Reply, err: &PartitionError) -> Self::Reply {
        reply.and(Err(err.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(replicas: &[i32], adding: &[i32], removing: &[i32]) -> PartitionState {
        PartitionState {
            adding: adding.to_vec(),
            removing: removing.to_vec(),
            ..PartitionState::new(replicas.to_vec())
        }
    }

    const MEMBERS: &[i32] = &[0, 1, 2, 3];

    #[test]
    fn a_move_lists_the_target_then_the_leaving_replicas() {
        let p = state(&[0, 1], &[], &[]);
        let (replicas, adding, removing, isr) = decide(&p, Some(&[1, 2]), MEMBERS, true).unwrap().unwrap();
        assert_eq!((replicas, adding, removing, isr), (vec![1, 2, 0], vec![2], vec![0], vec![0, 1]));
    }

    #[test]
    fn targets_are_checked_as_kafka_checks_them() {
        let p = state(&[0, 1], &[], &[]);
        let code = |t: &[i32]| decide(&p, Some(t), MEMBERS, true).unwrap_err();
        assert!(matches!(code(&[]), PartitionError::InvalidReplicaAssignment(m) if m.contains("empty")));
        assert!(matches!(code(&[1, 1]), PartitionError::InvalidReplicaAssignment(m) if m.contains("more than once")));
        assert!(matches!(code(&[1, 7]), PartitionError::InvalidReplicaAssignment(m) if m.contains("broker 7")));
        assert!(matches!(
            decide(&p, Some(&[0, 1, 2]), MEMBERS, false),
            Err(PartitionError::InvalidReplicationFactor(_))
        ));
        assert!(decide(&p, Some(&[0, 1, 2]), MEMBERS, true).unwrap().is_some());
    }

    #[test]
    fn single_replica_partitions_move_and_a_target_may_be_one_replica() {
        // RF 1 → 3: the old replica stays, two join.
        let p = state(&[0], &[], &[]);
        let (replicas, adding, removing, isr) = decide(&p, Some(&[0, 1, 2]), MEMBERS, true).unwrap().unwrap();
        assert_eq!((replicas, adding, removing, isr), (vec![0, 1, 2], vec![1, 2], vec![], vec![0]));
        // RF 1 → 1 elsewhere: one joins, one leaves.
        let (replicas, adding, removing, _) = decide(&p, Some(&[3]), MEMBERS, false).unwrap().unwrap();
        assert_eq!((replicas, adding, removing), (vec![3, 0], vec![3], vec![0]));
        // RF 3 → 1.
        let p = state(&[0, 1, 2], &[], &[]);
        let (replicas, adding, removing, isr) = decide(&p, Some(&[1]), MEMBERS, true).unwrap().unwrap();
        assert_eq!((replicas, adding, removing, isr), (vec![1, 0, 2], vec![], vec![0, 2], vec![0, 1, 2]));
        assert!(matches!(decide(&p, Some(&[1]), MEMBERS, false), Err(PartitionError::InvalidReplicationFactor(_))));
    }

    #[test]
    fn nothing_to_do_and_cancelling_nothing() {
        let p = state(&[0, 1], &[], &[]);
        assert_eq!(decide(&p, Some(&[0, 1]), MEMBERS, false).unwrap(), None);
        assert!(matches!(decide(&p, None, MEMBERS, true), Err(PartitionError::NoReassignmentInProgress)));
        // A reordering alone completes at once.
        let (replicas, adding, removing, _) = decide(&p, Some(&[1, 0]), MEMBERS, false).unwrap().unwrap();
        assert_eq!((replicas, adding, removing), (vec![1, 0], vec![], vec![]));
    }

    #[test]
    fn a_cancel_moves_back_and_drops_the_joining_replicas() {
        let p = state(&[1, 2, 0], &[2], &[0]);
        let (replicas, adding, removing, _) = decide(&p, None, MEMBERS, true).unwrap().unwrap();
        assert_eq!((replicas, adding, removing), (vec![1, 0, 2], vec![], vec![2]));
    }

    #[test]
    fn a_new_target_replaces_the_one_in_progress() {
        let p = state(&[1, 2, 0], &[2], &[0]);
        let (replicas, adding, removing, _) = decide(&p, Some(&[1, 3]), MEMBERS, true).unwrap().unwrap();
        assert_eq!((replicas, adding, removing), (vec![1, 3, 2, 0], vec![3], vec![2, 0]));
        // Back to the original replicas: nothing joins, the joining one leaves.
        let (replicas, adding, removing, _) = decide(&p, Some(&[0, 1]), MEMBERS, false).unwrap().unwrap();
        assert_eq!((replicas, adding, removing), (vec![0, 1, 2], vec![], vec![2]));
    }
}
