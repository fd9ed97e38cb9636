//! Leader epochs as clients see them (KIP-320, KIP-101): the checks of a request's
//! `current_leader_epoch` and the epochs ListOffsets and OffsetForLeaderEpoch answer.
//!
//! Contract:
//! - A partition's current epoch on this broker is the Raft term its replica knows (the
//!   `partitionLeaderEpoch` its leader stamps on batches, and the epoch the leader records in
//!   the metadata log, which Metadata answers); an unreplicated partition is at epoch 0.
//! - [`check`] is Kafka's `Partition.localLogWithEpochOrThrow`: first the client's epoch
//!   (-1: no check; older: FENCED_LEADER_EPOCH with the known leader; newer:
//!   UNKNOWN_LEADER_EPOCH), then leadership (NOT_LEADER_OR_FOLLOWER with the known leader).
//! - [`epoch_at`]: the epoch of the batch holding an offset (the history entry covering it),
//!   -1 when the history has none; [`end_of`]: OffsetForLeaderEpoch's (end offset, epoch).

use super::Replicas;
use crate::error::PartitionError;
use crate::raft::GroupId;
use crate::shard::Shard;
use sluice_core::{LeaderEpoch, Offset, TopicPartition};
use sluice_storage::log::PartitionLog;
use std::cmp::Ordering;

/// The epoch of an unreplicated partition: every batch was written in it.
pub const UNREPLICATED_EPOCH: i32 = 0;

/// The client's epoch against the partition's: Ok when equal or when the client sent none
/// (-1). `leader` is the leader this broker knows, for the fenced client's hint (KIP-951).
pub fn compare(requested: i32, current: i32, leader: Option<i32>) -> Result<(), PartitionError> {
    if requested < 0 {
        return Ok(());
    }
    match requested.cmp(&current) {
        Ordering::Less => Err(PartitionError::FencedLeaderEpoch { got: requested, current, leader }),
        Ordering::Greater => Err(PartitionError::UnknownLeaderEpoch { got: requested, current }),
        Ordering::Equal => Ok(()),
    }
}

/// A replicated partition of this shard: its runtime and group.
fn replica(shard: &Shard, tp: &TopicPartition) -> Option<(std::rc::Rc<Replicas>, GroupId)> {
    let r = shard.replicas()?;
    let g = r.group_of(tp)?;
    Some((r, g))
}

/// Kafka's `localLogWithEpochOrThrow` for a leader-only request (module docs).
pub fn check(shard: &Shard, tp: &TopicPartition, requested: i32) -> Result<(), PartitionError> {
    let Some((r, group)) = replica(shard, tp) else {
        super::check_open(shard, tp)?;
        return compare(requested, UNREPLICATED_EPOCH, None);
    };
    let (leader, epoch) = r.leader(group).unwrap_or((None, LeaderEpoch(-1)));
    let leader = leader.map(|l| l.0);
    compare(requested, epoch.0, leader)?;
    if r.is_leader(group) {
        Ok(())
    } else {
        Err(PartitionError::NotLeaderOrFollower { leader, epoch: epoch.0 })
    }
}

/// The partition's current epoch on this broker (module docs).
pub fn current(shard: &Shard, tp: &TopicPartition) -> i32 {
    match replica(shard, tp) {
        Some((r, g)) => r.leader(g).map_or(-1, |(_, e)| e.0),
        None => UNREPLICATED_EPOCH,
    }
}

/// The epoch of the batch holding `offset` (module docs).
pub fn epoch_at(shard: &Shard, tp: &TopicPartition, offset: Offset) -> i32 {
    match replica(shard, tp) {
        Some((r, g)) => r.epoch_at(g, offset).map_or(-1, |e| e.0),
        None => UNREPLICATED_EPOCH,
    }
}

/// OffsetForLeaderEpoch on the owner: (end offset, epoch) of the largest epoch at or below
/// `epoch` in the replica's history (Kafka's `endOffsetFor`); an unreplicated partition has
/// only epoch 0, ending at its high watermark; (-1, -1) for an epoch it does not know.
pub fn end_of(shard: &Shard, tp: &TopicPartition, log: &PartitionLog, epoch: i32) -> (Offset, LeaderEpoch) {
    match replica(shard, tp) {
        Some((r, g)) => r.epoch_end(g, LeaderEpoch(epoch)).map_or((Offset(-1), LeaderEpoch(-1)), |(e, o)| (o, e)),
        None if epoch == UNREPLICATED_EPOCH => (log.high_watermark(), LeaderEpoch(UNREPLICATED_EPOCH)),
        None => (Offset(-1), LeaderEpoch(-1)),
    }
}

/// The history entry covering `offset` in `entries` (epoch → start offset, ascending).
fn covering(entries: &[(LeaderEpoch, Offset)], offset: Offset) -> Option<LeaderEpoch> {
    let after = entries.partition_point(|e| e.1 <= offset);
    after.checked_sub(1).map(|i| entries[i].0)
}

impl Replicas {
    /// The end offset of `epoch` (or the largest before it) in this replica's history.
    pub fn epoch_end(&self, group: GroupId, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.driver.borrow().store(group).map(|s| s.end_offset_for(epoch))
    }

    /// The epoch of the batch holding `offset` in this replica's history.
    pub fn epoch_at(&self, group: GroupId, offset: Offset) -> Option<LeaderEpoch> {
        self.driver.borrow().store(group).and_then(|s| covering(s.epochs().entries(), offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_epoch_is_never_checked() {
        assert!(compare(-1, 7, Some(1)).is_ok());
        assert!(compare(-1, 0, None).is_ok());
    }

    #[test]
    fn older_is_fenced_newer_is_unknown_equal_passes() {
        assert!(compare(3, 3, Some(2)).is_ok());
        match compare(2, 3, Some(1)) {
            Err(PartitionError::FencedLeaderEpoch { got: 2, current: 3, leader: Some(1) }) => {}
            other => panic!("expected fenced, got {other:?}"),
        }
        match compare(4, 3, Some(1)) {
            Err(PartitionError::UnknownLeaderEpoch { got: 4, current: 3 }) => {}
            other => panic!("expected unknown, got {other:?}"),
        }
        // An unreplicated partition is at epoch 0: a client believing in epoch 1 is ahead.
        assert!(matches!(compare(1, UNREPLICATED_EPOCH, None), Err(PartitionError::UnknownLeaderEpoch { .. })));
    }

    #[test]
    fn the_covering_entry_holds_an_offset() {
        let h = [(LeaderEpoch(1), Offset(0)), (LeaderEpoch(3), Offset(10)), (LeaderEpoch(4), Offset(25))];
        assert_eq!(covering(&h, Offset(0)), Some(LeaderEpoch(1)));
        assert_eq!(covering(&h, Offset(9)), Some(LeaderEpoch(1)));
        assert_eq!(covering(&h, Offset(10)), Some(LeaderEpoch(3)));
        assert_eq!(covering(&h, Offset(99)), Some(LeaderEpoch(4)));
        assert_eq!(covering(&h[1..], Offset(5)), None);
        assert_eq!(covering(&[], Offset(0)), None);
    }
}
