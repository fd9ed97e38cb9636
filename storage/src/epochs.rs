//! A partition's leader-epoch history (Kafka's `leader-epoch-checkpoint`, KIP-101/279): for
//! each epoch that wrote batches, the offset of its first batch. It answers
//! OffsetForLeaderEpoch and tells a follower where to truncate.
//!
//! Contract: epochs strictly increase along the history, and so do their start offsets; an
//! epoch is added only by the first batch it writes ([`EpochHistory::assign`]); truncating the
//! log's end at `offset` drops the epochs that start at or after it; moving the log start keeps
//! the epoch that covers it (its start clamped), as Kafka's `truncateFromStart`.

use sluice_core::{LeaderEpoch, Offset};

/// Epoch → start offset, ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(LeaderEpoch, Offset)>,
}

/// Kafka's answer for an unknown epoch: epoch -1, offset -1.
pub const UNDEFINED: (LeaderEpoch, Offset) = (LeaderEpoch(-1), Offset(-1));

impl EpochHistory {
    pub fn from_entries(entries: Vec<(LeaderEpoch, Offset)>) -> Option<EpochHistory> {
        let ascending = entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        ascending.then_some(EpochHistory { entries })
    }

    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    pub fn latest(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|e| e.0)
    }

    /// Records that a batch of `epoch` starts at `start`. Returns false (and records nothing)
    /// when the epoch is older than the latest one or starts before it (a caller bug). A newer
    /// epoch starting where the latest one starts replaces it: the latest epoch took no
    /// offset (a Raft leader whose only entries were control batches that take none), and
    /// Kafka's leader-epoch cache drops such an entry too.
    pub fn assign(&mut self, epoch: LeaderEpoch, start: Offset) -> bool {
        match self.entries.last() {
            Some(&(e, _)) if e == epoch => true,
            Some(&(e, s)) if e > epoch || s > start => false,
            Some(&(_, s)) if s == start => {
                self.entries.pop();
                self.entries.push((epoch, start));
                true
            }
            _ => {
                self.entries.push((epoch, start));
                true
            }
        }
    }

    /// The log's end was cut at `offset`: forget epochs starting there or later.
    pub fn truncate_from_end(&mut self, offset: Offset) {
        let keep = self.entries.partition_point(|e| e.1 < offset);
        self.entries.truncate(keep);
    }

    /// The log's start moved to `offset`: epochs that ended before it go, the one covering it
    /// starts there.
    pub fn truncate_from_start(&mut self, offset: Offset) {
        let covering = self.entries.partition_point(|e| e.1 <= offset);
        if covering == 0 {
            return;
        }
        self.entries.drain(..covering - 1);
        self.entries[0].1 = offset;
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `requested` and the offset where the
    /// next higher epoch starts (the log end for the latest epoch); [`UNDEFINED`] for an epoch
    /// past the latest or an empty history. An epoch below the earliest answers the requested
    /// epoch with the earliest start (Kafka's `endOffsetFor`).
    pub fn end_offset_for(&self, requested: LeaderEpoch, log_end: Offset) -> (LeaderEpoch, Offset) {
        let Some(latest) = self.latest() else { return UNDEFINED };
        if requested == latest {
            return (latest, log_end);
        }
        let higher = self.entries.partition_point(|e| e.0 <= requested);
        let Some(&(_, higher_start)) = self.entries.get(higher) else { return UNDEFINED };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some((floor_epoch, _)) => (floor_epoch, higher_start),
            None => (requested, higher_start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(e: &[(i32, i64)]) -> EpochHistory {
        EpochHistory::from_entries(e.iter().map(|&(a, b)| (LeaderEpoch(a), Offset(b))).collect()).expect("ascending")
    }

    #[test]
    fn a_newer_epoch_at_the_same_start_replaces_an_epoch_that_took_no_offset() {
        let mut x = h(&[(1, 0), (2, 5)]);
        assert!(x.assign(LeaderEpoch(3), Offset(5)));
        assert_eq!(x, h(&[(1, 0), (3, 5)]));
        assert!(!x.assign(LeaderEpoch(4), Offset(4)), "an epoch never starts before the latest");
        assert!(!x.assign(LeaderEpoch(2), Offset(9)), "nor goes back");
        assert_eq!(x.end_offset_for(LeaderEpoch(2), Offset(9)), (LeaderEpoch(1), Offset(5)));
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let x = h(&[(1, 0), (3, 10), (4, 25)]);
        let end = Offset(40);
        assert_eq!(x.end_offset_for(LeaderEpoch(4), end), (LeaderEpoch(4), end));
        assert_eq!(x.end_offset_for(LeaderEpoch(3), end), (LeaderEpoch(3), Offset(25)));
        assert_eq!(x.end_offset_for(LeaderEpoch(2), end), (LeaderEpoch(1), Offset(10)));
        assert_eq!(x.end_offset_for(LeaderEpoch(0), end), (LeaderEpoch(0), Offset(0)));
        assert_eq!(x.end_offset_for(LeaderEpoch(5), end), UNDEFINED);
        assert_eq!(EpochHistory::default().end_offset_for(LeaderEpoch(1), end), UNDEFINED);
    }

    #[test]
    fn assign_only_adds_newer_epochs() {
        let mut x = EpochHistory::default();
        assert!(x.assign(LeaderEpoch(1), Offset(0)));
        assert!(x.assign(LeaderEpoch(1), Offset(5)));
        assert!(x.assign(LeaderEpoch(2), Offset(7)));
        assert!(!x.assign(LeaderEpoch(1), Offset(9)));
        assert_eq!(x, h(&[(1, 0), (2, 7)]));
    }

    #[test]
    fn truncations_from_both_ends() {
        let mut x = h(&[(1, 0), (3, 10), (4, 25)]);
        x.truncate_from_end(Offset(25));
        assert_eq!(x, h(&[(1, 0), (3, 10)]));
        x.truncate_from_start(Offset(12));
        assert_eq!(x, h(&[(3, 12)]));
        x.truncate_from_end(Offset(12));
        assert_eq!(x, EpochHistory::default());
        assert!(EpochHistory::from_entries(vec![(LeaderEpoch(2), Offset(0)), (LeaderEpoch(1), Offset(3))]).is_none());
    }
}
