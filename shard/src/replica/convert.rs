//! A single-replica partition becomes a Raft group over its existing log (#18: reassigning
//! RF 1 → N). A partition created with one replica keeps the direct path (no Raft group, high
//! watermark = durable end) until a reassignment names more brokers; then its broker opens
//! the partition's group with the origin voters — itself — over a log that already holds
//! batches no Raft state accounts for. This module writes that state, so the existing batches
//! are the group's entries 1..=N and the ordinary reassignment path adds the new replicas:
//! they are fed from index 1, below the window, by catch-up from the segments
//! (`raft/catchup.rs`), which counts batches from offset 0 exactly as for any group.
//!
//! Contract:
//! - [`convert`] runs in `Replicas::open_group` for a data replica with no raft-state file
//!   and a non-empty log, before the group exists; the partition refuses clients meanwhile
//!   (`replica::awaiting_group`: the metadata names several replicas, or a Raft history, and
//!   no group is open), so no direct append lands while it runs. It waits until everything
//!   appended is durable, counts the batches from the log start to the log end
//!   ([`Count`], checked: each batch starts where the previous ended, epochs never go back)
//!   and writes the state ([`state_for`]) with `raft_state::write` (tmp + fsync + rename +
//!   directory fsync). A crash before the rename leaves the direct-path partition as it was
//!   (the next open converts again); after it, the converted one. Nothing else is written:
//!   the log's bytes do not change.
//! - The state: floor = (N, [`Term::DIRECT`], log end), commit N, term [`Term::DIRECT`], no
//!   vote, voters = this broker alone, epoch history = the epochs the batches carry (0 on the
//!   direct path). Direct batches carry epoch 0, which counts as term 1 wherever a stored
//!   batch's term is read (`Term::of_stored`); the group's first election is term 2. New
//!   replicas store their copies with epoch 1 (the term they receive them with).
//! - A log whose start moved (DeleteRecords, retention) is counted from the batch holding its
//!   start: that batch is entry 1, at its own base offset. Catch-up locates it (a locate scan,
//!   `raft/catchup.rs`) and a new replica stores it at that base, below it one hole batch
//!   (the original proposes its log start once it leads the converted group, so the copies
//!   take it: `delete_records.rs`). An empty log whose start moved has floor index 1 at its start, so a new
//!   replica is sent a snapshot there.
//! - Offsets compaction removed on the direct path leave holes between the batches (no batch
//!   covers them; [`Count::holes`]). The count is of the batches that remain, so the indexes
//!   are theirs; catch-up accepts a hole before a batch of [`Term::DIRECT`] and a new replica
//!   stores each such batch at its own base, covering the hole with a hole batch
//!   (`raft/catchup.rs`, `raft/window.rs`, `raft/store.rs`): the copies keep the offsets.
//! - The direct path of partitions never reassigned is untouched: this runs only when a
//!   metadata change makes the partition a Raft group.

use super::ReplicaError;
use crate::raft::types::Term;
use bytes::{Buf, Bytes};
use sluice_core::batch::BatchHeader;
use sluice_core::{LeaderEpoch, Offset};
use sluice_storage::epochs::EpochHistory;
use sluice_storage::log::PartitionLog;
use sluice_storage::raft_state::RaftStateRecord;

/// Why a log could not be counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    #[error("unreadable batch at offset {0}")]
    BadBatch(i64),
    #[error("the batch at offset {found} goes back before offset {expected}")]
    Overlap { expected: i64, found: i64 },
    #[error("the epoch goes back at offset {0}")]
    EpochBack(i64),
    #[error("appends not durable: durable end {durable}, log end {end}")]
    NotDurable { durable: i64, end: i64 },
}

/// The batches of a direct-path log, counted in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub batches: u64,
    /// The offset after the last batch counted.
    pub next: Offset,
    pub epochs: EpochHistory,
    /// Holes: offsets before a batch that no batch covers (compaction on the direct path).
    pub holes: u64,
}

impl Count {
    /// An empty count of a log starting at `start`.
    pub fn new(start: Offset) -> Count {
        Count { batches: 0, next: start, epochs: EpochHistory::default(), holes: 0 }
    }

    /// Counts the next batch of the log (its header), in order.
    /// The first batch may begin below the start (a log start inside a batch).
    pub fn feed(&mut self, h: &BatchHeader) -> Result<(), CountError> {
        let first = self.batches == 0;
        let back = if first { h.last_offset() < self.next.0 } else { h.base_offset < self.next.0 };
        if back || h.last_offset() < h.base_offset {
            return Err(CountError::Overlap { expected: self.next.0, found: h.base_offset });
        }
        self.holes += u64::from(h.base_offset > self.next.0);
        let epoch = LeaderEpoch(h.partition_leader_epoch.max(0));
        let from = Offset(h.base_offset.max(self.next.0));
        if self.epochs.latest() != Some(epoch) && !self.epochs.assign(epoch, from) {
            return Err(CountError::EpochBack(h.base_offset));
        }
        self.batches += 1;
        self.next = Offset(h.last_offset() + 1);
        Ok(())
    }
}

/// The Raft state of a direct-path log converted into a one-voter group (module docs):
/// `voter` is this broker's Raft id, `start` the log start.
pub fn state_for(count: &Count, start: Offset, voter: u64) -> RaftStateRecord {
    // An empty log that does not start at 0 still has its floor above index 0, so that a new
    // replica is sent a snapshot at its start rather than starting at offset 0.
    let floor_index = if start == Offset(0) { count.batches } else { count.batches.max(1) };
    let floor_term = if floor_index == 0 { 0 } else { Term::DIRECT.0 };
    RaftStateRecord {
        term: Term::DIRECT.0,
        vote: 0,
        commit: floor_index,
        floor_index,
        floor_term,
        floor_next_offset: count.next,
        voters: vec![voter],
        epochs: count.epochs.clone(),
        ..RaftStateRecord::default()
    }
}

/// Counts `log` from its start to its end, once every append is durable (module docs).
async fn count_log(log: &PartitionLog) -> Result<Count, ReplicaError> {
    let end = log.log_end();
    if end.0 > 0 {
        log.wait_beyond(Offset(end.0 - 1)).await;
    }
    let durable = log.durable_end();
    if durable != end || log.log_end() != end {
        return Err(ReplicaError::Raft(CountError::NotDurable { durable: durable.0, end: end.0 }.to_string()));
    }
    let start = log.log_start();
    let mut count = Count::new(start);
    let mut at = start;
    while at < end {
        let r = log.read_durable(at, sluice_core::limits::RAFT_CATCHUP_READ_BYTES).await?;
        if r.records.is_empty() {
            break;
        }
        let mut rest: Bytes = r.records;
        let mut fed = false;
        while !rest.is_empty() {
            let whole = BatchHeader::parse(&rest).ok().filter(|h| h.total_len() <= rest.len());
            let Some(h) = whole else {
                if fed {
                    break; // a read may end inside a batch: the next one starts at it
                }
                return Err(bad(CountError::BadBatch(at.0)));
            };
            rest.advance(h.total_len());
            if h.last_offset() < at.0 && count.batches > 0 {
                continue; // the read began at a batch holding an earlier offset
            }
            count.feed(&h).map_err(bad)?;
            at = count.next;
            fed = true;
        }
    }
    if count.next != end {
        return Err(bad(CountError::Overlap { expected: end.0, found: count.next.0 }));
    }
    Ok(count)
}

fn bad(e: CountError) -> ReplicaError {
    ReplicaError::Raft(e.to_string())
}

/// Converts the direct-path `log` into the one-voter group of `voter` (module docs); returns
/// the state written.
pub async fn convert(log: &PartitionLog, voter: u64) -> Result<RaftStateRecord, ReplicaError> {
    let count = count_log(log).await?;
    let start = log.log_start();
    let state = state_for(&count, start, voter);
    let dir = log.dir().to_path_buf();
    let s = state.clone();
    sluice_storage::disk::blocking(move || sluice_storage::raft_state::write(&dir, &s))
        .await
        .map_err(|e| ReplicaError::State(e.to_string()))?;
    tracing::info!(
        partition = log.name(),
        batches = count.batches,
        holes = count.holes,
        start = start.0,
        end = count.next.0,
        "a single-replica partition became a one-voter Raft group over its log"
    );
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::batch::{build, stamp, Record};

    fn batch(base: i64, records: usize, epoch: i32) -> BatchHeader {
        let recs: Vec<Record<'_>> = (0..records).map(|_| Record { key: None, value: b"v" }).collect();
        let mut b = bytes::BytesMut::from(&build(&recs, 0)[..]);
        stamp(&mut b, base, epoch);
        BatchHeader::parse(&b).expect("a batch")
    }

    #[test]
    fn a_direct_log_is_counted_batch_by_batch_with_its_epochs() {
        let mut c = Count::new(Offset(0));
        for (base, n) in [(0, 3), (3, 1), (4, 5)] {
            c.feed(&batch(base, n, 0)).expect("in order");
        }
        assert_eq!((c.batches, c.next, c.holes), (3, Offset(9), 0));
        assert_eq!(c.epochs.entries(), &[(LeaderEpoch(0), Offset(0))]);
        // A later batch may skip offsets (compaction): counted, its hole too.
        c.feed(&batch(12, 1, 0)).expect("a hole is counted");
        assert_eq!((c.batches, c.next, c.holes), (4, Offset(13), 1));
        // So may the first (compaction removed the log's first batches).
        let mut front = Count::new(Offset(0));
        front.feed(&batch(40, 2, 0)).expect("the first batch after a hole");
        assert_eq!((front.batches, front.next, front.holes), (1, Offset(42), 1));
        assert!(matches!(c.feed(&batch(10, 1, 0)), Err(CountError::Overlap { .. })), "never backwards");
        assert!(matches!(c.feed(&batch(13, 1, -1)), Ok(())), "a negative epoch counts as 0");
    }

    #[test]
    fn a_log_may_start_inside_its_first_batch() {
        let mut c = Count::new(Offset(5));
        c.feed(&batch(3, 4, 0)).expect("holds offset 5");
        assert_eq!((c.batches, c.next, c.holes), (1, Offset(7), 0));
        assert_eq!(c.epochs.entries(), &[(LeaderEpoch(0), Offset(5))]);
        assert!(Count::new(Offset(5)).feed(&batch(0, 2, 0)).is_err(), "a batch wholly below the start");
    }

    #[test]
    fn epochs_never_go_back() {
        let mut c = Count::new(Offset(0));
        c.feed(&batch(0, 1, 3)).expect("first");
        assert_eq!(c.feed(&batch(1, 1, 2)), Err(CountError::EpochBack(1)));
    }

    #[test]
    fn the_state_puts_the_floor_after_the_last_direct_batch() {
        let mut c = Count::new(Offset(0));
        for i in 0..10 {
            c.feed(&batch(i * 2, 2, 0)).expect("in order");
        }
        let s = state_for(&c, Offset(0), 4);
        assert_eq!((s.floor_index, s.floor_term, s.floor_next_offset), (10, Term::DIRECT.0, Offset(20)));
        assert_eq!((s.term, s.vote, s.commit), (Term::DIRECT.0, 0, 10));
        assert_eq!(s.voters, vec![4]);
        assert!(s.learners.is_empty() && s.voters_outgoing.is_empty() && !s.auto_leave);
        assert_eq!(s.epochs.entries(), &[(LeaderEpoch(0), Offset(0))]);
        // What is written is what is read back.
        let back = RaftStateRecord::decode(&s.encode()).expect("decodes");
        assert_eq!(back, s);
    }

    #[test]
    fn an_empty_log_is_a_group_created_at_its_start_and_a_moved_start_is_never_index_one() {
        let s = state_for(&Count::new(Offset(0)), Offset(0), 1);
        assert_eq!((s.floor_index, s.floor_term, s.floor_next_offset), (0, 0, Offset(0)));
        // DeleteRecords emptied a log at 7: index 1 must not be offset 0 on a new replica.
        let s = state_for(&Count::new(Offset(7)), Offset(7), 1);
        assert_eq!((s.floor_index, s.floor_next_offset, s.commit), (1, Offset(7), 1));
    }

    #[test]
    fn the_written_state_survives_a_reopen_and_a_crash_leaves_none_or_all() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = Count::new(Offset(0));
        c.feed(&batch(0, 2, 0)).expect("first");
        let s = state_for(&c, Offset(0), 2);
        // Before the write: no state (the partition stays on the direct path).
        assert_eq!(sluice_storage::raft_state::read(dir.path()).expect("reads"), None);
        // A crash after the temporary file but before the rename leaves no state either.
        std::fs::write(dir.path().join("raft-state.tmp"), &s.encode()[..10]).expect("tmp");
        assert_eq!(sluice_storage::raft_state::read(dir.path()).expect("reads"), None);
        sluice_storage::raft_state::write(dir.path(), &s).expect("writes");
        assert_eq!(sluice_storage::raft_state::read(dir.path()).expect("reads"), Some(s));
    }
}
