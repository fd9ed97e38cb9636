//! Newtypes of the replication layer: broker node ids, Raft group ids, terms and indexes.
//!
//! Contract: a [`NodeId`] is never 0 (raft-rs reserves 0 for "none"); a [`Term`] is the Kafka
//! partition leader epoch of the batches its leader wrote, so it always fits an `i32`
//! ([`Term::epoch`] checks); a [`RaftIndex`] is the ordinal of a batch in a partition's log
//! (1 for the first batch ever written), never an offset.

use sluice_core::LeaderEpoch;
use std::fmt;

/// A broker's node id within the cluster (raft-rs peer id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Checked: 0 means "no node" to raft-rs.
    pub fn new(id: u64) -> Option<NodeId> {
        (id != 0).then_some(NodeId(id))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One Raft group: the metadata log, or one topic-partition. A partition's group id is its
/// topic's cluster-wide number (assigned once by the metadata log, never reused) and its
/// partition index, so a group id costs 8 bytes on the wire instead of a topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

impl GroupId {
    /// The cluster metadata log (topics, replicas, leaders, configs).
    pub const METADATA: GroupId = GroupId(0);

    /// The group of partition `partition` of the topic numbered `topic` (numbers start at 1).
    pub fn partition(topic: u32, partition: u32) -> GroupId {
        assert!(topic != 0, "topic number 0 is the metadata log");
        GroupId((u64::from(topic) << 32) | u64::from(partition))
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == GroupId::METADATA {
            return f.write_str("metadata");
        }
        write!(f, "t{}-p{}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// A Raft term, which is the partition leader epoch written into the leader's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

impl Term {
    /// The leader epoch this term is stamped as; None when it does not fit Kafka's `i32`.
    pub fn epoch(self) -> Option<LeaderEpoch> {
        i32::try_from(self.0).ok().map(LeaderEpoch)
    }

    /// The term a stored batch's epoch stands for; None for a negative epoch (a batch
    /// written without replication, epoch -1).
    pub fn from_epoch(epoch: LeaderEpoch) -> Option<Term> {
        u64::try_from(epoch.0).ok().map(Term)
    }

    /// The term of a batch stored with `epoch` in a partition log: its epoch, except epoch 0,
    /// which only batches written on the direct path carry (a single-replica partition's,
    /// before it became a Raft group, `replica::convert`): they are entries of
    /// [`Term::DIRECT`], since raft-rs takes term 0 for "no entry" (an entry of term 0 would
    /// match a follower's missing entry and never be appended). None for a negative epoch.
    pub fn of_stored(epoch: LeaderEpoch) -> Option<Term> {
        match epoch.0 {
            0 => Some(Term::DIRECT),
            _ => Term::from_epoch(epoch),
        }
    }

    /// The term of the batches a partition took on the direct path, and the first term of the
    /// Raft group it became: its first election is term 2 (every Raft group's own terms start
    /// at 1, so a direct batch and a term-1 entry are never in one group's log).
    pub const DIRECT: Term = Term(1);
}

/// A Raft log index: the ordinal of a batch in a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RaftIndex(pub u64);

impl RaftIndex {
    pub fn next(self) -> RaftIndex {
        RaftIndex(self.0 + 1)
    }
}

impl fmt::Display for RaftIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_beyond_i32_have_no_epoch() {
        assert_eq!(Term(7).epoch(), Some(LeaderEpoch(7)));
        assert_eq!(Term(u64::from(u32::MAX)).epoch(), None);
        assert_eq!(Term::from_epoch(LeaderEpoch(-1)), None);
    }

    #[test]
    fn direct_path_batches_are_entries_of_term_one() {
        assert_eq!(Term::of_stored(LeaderEpoch(0)), Some(Term::DIRECT));
        assert_eq!(Term::of_stored(LeaderEpoch(1)), Some(Term(1)));
        assert_eq!(Term::of_stored(LeaderEpoch(9)), Some(Term(9)));
        assert_eq!(Term::of_stored(LeaderEpoch(-1)), None);
    }

    #[test]
    fn group_ids_keep_topic_and_partition_apart() {
        let g = GroupId::partition(3, 9);
        assert_ne!(g, GroupId::METADATA);
        assert_eq!(g.to_string(), "t3-p9");
        assert_ne!(GroupId::partition(1, 0), GroupId::partition(0x1, 1));
    }
}
