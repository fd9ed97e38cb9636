//! One partition's transactions, as its owner keeps them: the first offset of each producer's
//! open transaction, the aborted transactions (producer, first offset, marker offset), and
//! from them the last stable offset (LSO) that `read_committed` consumers read up to.
//!
//! Contract: [`PartitionTxns::observe`] is called for every batch the partition holds, in
//! offset order — at append (data and markers alike) and, at open, for every batch of the log
//! (the rebuild after a crash) — so the state is a function of the log. The LSO is the first
//! offset of the oldest open transaction, or the high watermark when none is open; it never
//! exceeds the high watermark. Aborted entries below the log start are dropped by
//! [`PartitionTxns::forget_below`].
//!
//! A Raft cut of a replicated partition's uncommitted end (a follower's conflicting suffix,
//! `PartitionLog::cut_at`) rolls the state back to the cut ([`PartitionTxns::truncate_to`], as
//! Kafka's `ProducerStateManager.truncateAndReload` and `LogSegment.truncateTo` roll back its
//! producer state and transaction index): transactions whose first batch was cut are
//! forgotten, aborted entries whose marker was cut are dropped, and a transaction whose marker
//! was cut but whose data was not is open again. The state that needs comes from the
//! transactions ended by the batches above the last settled offset ([`Ended`]); batches at
//! or below an offset that every later observation passed are never cut (they were appended to
//! a log Raft does not cut, or committed), and at most `RAFT_WINDOW_BATCHES` batches are
//! uncommitted, which bounds what is kept. Only the open scan (the rebuild at open, which
//! reads the durable log, committed or not) leaves unsettled entries; every later observation
//! settles what lies below it.

use sluice_core::batch::{self, BatchHeader};
use sluice_core::limits::RAFT_WINDOW_BATCHES;
use std::collections::{BTreeMap, VecDeque};

/// Attribute bit of a transactional batch.
const TRANSACTIONAL: i16 = 0x10;

/// An aborted transaction of one producer: its data lies in `[first, marker)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted {
    pub producer_id: i64,
    pub first_offset: i64,
    pub marker_offset: i64,
}

/// A transaction a marker ended, kept while the marker may still be cut (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ended {
    producer_id: i64,
    epoch: i16,
    first_offset: i64,
    marker_offset: i64,
}

#[derive(Debug, Default, Clone)]
pub struct PartitionTxns {
    /// Producer id → first offset and epoch of its open transaction here.
    open: BTreeMap<i64, (i64, i16)>,
    /// In marker order (so by marker offset).
    aborted: Vec<Aborted>,
    /// The offset after the last transactional batch observed: a batch below it was seen
    /// already (a replicated partition's committed batches may follow a scan that read past
    /// the commit point at open).
    next: i64,
    /// Transactions ended by markers not yet settled, in marker order (at most
    /// `RAFT_WINDOW_BATCHES`): what a cut reopens.
    ended: VecDeque<Ended>,
}

/// The marker type of a control batch (`Some(true)` commit, `Some(false)` abort), read from
/// its one record's key (version i16, type i16).
pub fn marker_type(batch_bytes: &[u8]) -> Option<bool> {
    let recs = batch::records(batch_bytes).ok()?;
    let key = recs.into_iter().next()?.key?;
    let t = i16::from_be_bytes(key.get(2..4)?.try_into().ok()?);
    match t {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

impl PartitionTxns {
    /// Takes one batch of the log (`base` is its stored base offset; `bytes` the whole batch,
    /// needed for control batches only).
    pub fn observe(&mut self, h: &BatchHeader, base: i64, bytes: &[u8]) {
        if h.producer_id < 0 || h.attributes & TRANSACTIONAL == 0 || base < self.next {
            return;
        }
        self.next = base + (h.last_offset() - h.base_offset) + 1;
        if !h.is_control() {
            self.open.entry(h.producer_id).or_insert((base, h.producer_epoch));
            return;
        }
        let Some((first, epoch)) = self.open.remove(&h.producer_id) else { return };
        if marker_type(bytes) == Some(false) {
            self.aborted.push(Aborted { producer_id: h.producer_id, first_offset: first, marker_offset: base });
        }
        if self.ended.len() == RAFT_WINDOW_BATCHES {
            self.ended.pop_front();
        }
        self.ended.push_back(Ended { producer_id: h.producer_id, epoch, first_offset: first, marker_offset: base });
    }

    /// Everything below `offset` stays: forgets what a cut would need to undo there.
    pub fn settle_below(&mut self, offset: i64) {
        while self.ended.front().is_some_and(|e| e.marker_offset < offset) {
            self.ended.pop_front();
        }
    }

    /// Rolls the state back to the log cut at `offset` (module docs): as if only the batches
    /// below it had been observed.
    pub fn truncate_to(&mut self, offset: i64) {
        if self.next <= offset {
            return; // no transactional batch at or above the cut was taken
        }
        while let Some(e) = self.ended.back().copied().filter(|e| e.marker_offset >= offset) {
            self.ended.pop_back();
            if e.first_offset < offset {
                let reopened = self.open.insert(e.producer_id, (e.first_offset, e.epoch));
                debug_assert!(
                    reopened.is_none_or(|(first, _)| first >= offset),
                    "one open transaction per producer below the cut"
                );
            }
        }
        self.open.retain(|_, (first, _)| *first < offset);
        self.aborted.retain(|a| a.marker_offset < offset);
        self.next = offset;
        debug_assert!(self.open.values().all(|(first, _)| *first < offset));
    }

    /// The last stable offset, given the high watermark.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.open.values().map(|(first, _)| *first).min().map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Aborted transactions whose data overlaps `[from, to)` (Kafka's `collectAbortedTxns`).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<Aborted> {
        self.aborted.iter().filter(|a| a.marker_offset >= from && a.first_offset < to).copied().collect()
    }

    /// Forgets the aborted transactions whose marker is at one of `markers`: compaction left no
    /// batch of them (Kafka leaves such a transaction out of the cleaned transaction index).
    pub fn forget_aborted(&mut self, markers: &[i64]) {
        self.aborted.retain(|a| !markers.contains(&a.marker_offset));
    }

    /// Forgets aborted transactions whose marker is below `log_start` (deleted data).
    pub fn forget_below(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.marker_offset >= log_start);
        // Nothing below the log start can be cut any more.
        self.settle_below(log_start);
    }

    /// Open transactions here: (producer id, first offset).
    pub fn open(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.open.iter().map(|(p, (o, _))| (*p, *o))
    }

    /// Open transactions here: (producer id, first offset, epoch of its first batch).
    pub fn open_with_epochs(&self) -> Vec<(i64, i64, i16)> {
        self.open.iter().map(|(p, (o, e))| (*p, *o, *e)).collect()
    }

    /// Whether the producer has an open transaction here at this epoch: its partition was
    /// verified (or added) when the transaction's first batch came (KIP-890 part 1), so later
    /// batches need no verification (Kafka's `UnifiedLog.hasOngoingTransaction`).
    pub fn has_open(&self, producer_id: i64, epoch: i16) -> bool {
        self.open.get(&producer_id).is_some_and(|(_, e)| *e == epoch)
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.aborted.is_empty() && self.ended.is_empty()
    }
}

/// A COMMIT or ABORT control batch of a producer (Kafka's `EndTransactionMarker`: key version
/// 0 and type, value version 0 and the coordinator epoch).
pub fn build_marker(producer_id: i64, epoch: i16, commit: bool, coordinator_epoch: i32, timestamp: i64) -> Vec<u8> {
    let key: [u8; 4] = {
        let mut k = [0u8; 4];
        k[2..4].copy_from_slice(&i16::from(commit).to_be_bytes());
        k
    };
    let mut value = [0u8; 6];
    value[2..6].copy_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = batch::build(&[batch::Record { key: Some(&key), value: &value }], timestamp);
    // attributes (offset 21): transactional | control; producer id, epoch (43, 51); base
    // sequence stays -1 as Kafka writes it. The CRC covers these: recomputed.
    b[21..23].copy_from_slice(&(TRANSACTIONAL | 0x20).to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pid: i64) -> (BatchHeader, Vec<u8>) {
        let mut b = batch::build(&[batch::Record { key: None, value: b"v" }], 0);
        b[21..23].copy_from_slice(&TRANSACTIONAL.to_be_bytes());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&0i32.to_be_bytes());
        let crc = batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        (batch::validate(&b).expect("valid"), b)
    }

    #[test]
    fn lso_follows_open_transactions_and_aborts_are_indexed() {
        let mut p = PartitionTxns::default();
        assert_eq!(p.last_stable_offset(10), 10);
        let (h1, b1) = data(1);
        p.observe(&h1, 3, &b1);
        p.observe(&h1, 4, &b1);
        let (h2, b2) = data(2);
        p.observe(&h2, 5, &b2);
        assert_eq!(p.last_stable_offset(6), 3, "the oldest open transaction holds the LSO");
        assert!(p.has_open(1, 0) && !p.has_open(1, 1) && !p.has_open(3, 0), "by producer and epoch");
        let abort = build_marker(1, 0, false, 0, 0);
        let ha = batch::validate(&abort).expect("a marker is a valid batch");
        assert!(ha.is_control());
        assert_eq!(marker_type(&abort), Some(false));
        p.observe(&ha, 6, &abort);
        assert_eq!(p.last_stable_offset(7), 5);
        let commit = build_marker(2, 0, true, 0, 0);
        let hc = batch::validate(&commit).expect("valid");
        assert_eq!(marker_type(&commit), Some(true));
        p.observe(&hc, 7, &commit);
        assert_eq!(p.last_stable_offset(8), 8);
        assert_eq!(p.aborted_between(0, 8), vec![Aborted { producer_id: 1, first_offset: 3, marker_offset: 6 }]);
        assert!(p.aborted_between(7, 8).is_empty(), "data wholly before the range");
        assert!(p.aborted_between(0, 3).is_empty(), "data wholly after the range");
        p.forget_below(8);
        assert!(p.is_empty());
        // The LSO never passes the high watermark.
        p.observe(&h1, 20, &b1);
        assert_eq!(p.last_stable_offset(15), 15);
    }

    fn marker(pid: i64, commit: bool) -> (BatchHeader, Vec<u8>) {
        let b = build_marker(pid, 0, commit, 0, 0);
        (batch::validate(&b).expect("valid"), b)
    }

    #[test]
    fn a_cut_forgets_transactions_begun_above_it_and_takes_new_batches_there() {
        let mut p = PartitionTxns::default();
        let (h1, b1) = data(1);
        let (h2, b2) = data(2);
        p.observe(&h1, 0, &b1);
        p.observe(&h2, 5, &b2); // the uncommitted tail the open scan read
        assert_eq!(p.last_stable_offset(10), 0);
        p.truncate_to(5);
        assert_eq!(p.open().collect::<Vec<_>>(), vec![(1, 0)], "producer 2's batch was cut");
        // The new leader's batch at the same offset is taken (it was not seen before).
        let (h3, b3) = data(3);
        p.observe(&h3, 5, &b3);
        assert_eq!(p.open().collect::<Vec<_>>(), vec![(1, 0), (3, 5)]);
        p.truncate_to(0);
        assert!(p.is_empty(), "everything cut");
        assert_eq!(p.last_stable_offset(0), 0);
    }

    #[test]
    fn a_cut_marker_reopens_its_transaction_and_drops_its_abort() {
        let mut p = PartitionTxns::default();
        let (h1, b1) = data(1);
        let (h2, b2) = data(2);
        p.observe(&h1, 0, &b1);
        p.observe(&h2, 1, &b2);
        let (ha, ba) = marker(1, false);
        p.observe(&ha, 2, &ba);
        let (hc, bc) = marker(2, true);
        p.observe(&hc, 3, &bc);
        assert_eq!(p.last_stable_offset(4), 4);
        assert_eq!(p.aborted_between(0, 4).len(), 1);
        // The commit of producer 2 is cut: its transaction is open again; the abort stays.
        p.truncate_to(3);
        assert_eq!(p.open().collect::<Vec<_>>(), vec![(2, 1)]);
        assert!(p.has_open(2, 0), "with its epoch");
        assert_eq!(p.last_stable_offset(3), 1);
        assert_eq!(p.aborted_between(0, 3), vec![Aborted { producer_id: 1, first_offset: 0, marker_offset: 2 }]);
        // The abort is cut too: producer 1's transaction is open again, not aborted.
        p.truncate_to(2);
        assert_eq!(p.open().collect::<Vec<_>>(), vec![(1, 0), (2, 1)]);
        assert!(p.aborted_between(0, 10).is_empty());
        // A new marker from the new leader ends it again.
        let (ha2, ba2) = marker(1, true);
        p.observe(&ha2, 2, &ba2);
        assert_eq!(p.open().collect::<Vec<_>>(), vec![(2, 1)]);
        assert!(p.aborted_between(0, 10).is_empty(), "committed this time");
    }

    #[test]
    fn settled_markers_are_no_longer_kept_and_a_cut_above_changes_nothing() {
        let mut p = PartitionTxns::default();
        let (h1, b1) = data(1);
        let (hc, bc) = marker(1, false);
        p.observe(&h1, 0, &b1);
        p.observe(&hc, 1, &bc);
        p.settle_below(2);
        assert!(p.ended.is_empty());
        let before = p.aborted_between(0, 10);
        p.truncate_to(2);
        assert_eq!(p.aborted_between(0, 10), before, "nothing at or above the cut");
        assert!(p.open().next().is_none());
        // A registry settles below every batch it takes.
        let r = Registry::default();
        let tp = sluice_core::TopicPartition::new("t", 0);
        r.install(&tp, {
            let mut q = PartitionTxns::default();
            q.observe(&h1, 0, &b1);
            q.observe(&hc, 1, &bc);
            q
        });
        let (h2, b2) = data(2);
        r.observe(&tp, &h2, 2, &b2);
        assert!(r.parts.borrow()[&tp].ended.is_empty());
        assert_eq!(r.open_of(&tp), vec![(2, 2, 0)]);
        // The cut listener a log calls rolls the registry's partition back.
        (r.cut_listener(&tp))(sluice_core::Offset(2));
        assert!(r.open_of(&tp).is_empty());
    }

    /// A log of transactional batches: (producer, None for data or Some(commit) for a marker).
    type Op = (i64, Option<bool>);

    fn observe_op(p: &mut PartitionTxns, offset: i64, op: Op) {
        let (h, b) = match op.1 {
            None => data(op.0),
            Some(commit) => marker(op.0, commit),
        };
        p.observe(&h, offset, &b);
    }

    proptest::proptest! {
        /// Appends, cuts (never below what was settled: Raft never cuts committed batches) and
        /// settles in any order leave the same state as observing the resulting log afresh.
        #[test]
        fn cuts_leave_the_state_of_the_log_that_remains(
            steps in proptest::collection::vec((0u8..10, 1i64..4, proptest::bool::ANY, 0usize..40), 1..80)
        ) {
            let mut p = PartitionTxns::default();
            let mut log: Vec<Op> = Vec::new();
            let mut settled = 0usize;
            for (kind, pid, commit, at) in steps {
                match kind {
                    0..=4 => log.push((pid, None)),
                    5 | 6 => log.push((pid, Some(commit))),
                    7 | 8 => {
                        let cut = settled + at % (log.len() - settled + 1);
                        log.truncate(cut);
                        p.truncate_to(i64::try_from(cut).expect("small"));
                        continue;
                    }
                    _ => {
                        settled = settled.max(at.min(log.len()));
                        p.settle_below(i64::try_from(settled).expect("small"));
                        continue;
                    }
                }
                let offset = log.len() - 1;
                observe_op(&mut p, i64::try_from(offset).expect("small"), log[offset]);
            }
            let mut fresh = PartitionTxns::default();
            for (offset, op) in log.iter().enumerate() {
                observe_op(&mut fresh, i64::try_from(offset).expect("small"), *op);
            }
            proptest::prop_assert_eq!(p.open_with_epochs(), fresh.open_with_epochs());
            proptest::prop_assert_eq!(p.aborted_between(0, i64::MAX), fresh.aborted_between(0, i64::MAX));
            let end = i64::try_from(log.len()).expect("small");
            proptest::prop_assert_eq!(p.last_stable_offset(end), fresh.last_stable_offset(end));
        }
    }

    #[test]
    fn at_most_a_raft_window_of_ended_transactions_is_kept() {
        let mut p = PartitionTxns::default();
        let (h1, b1) = data(1);
        let (hc, bc) = marker(1, true);
        let n = i64::try_from(RAFT_WINDOW_BATCHES).expect("fits") + 10;
        for i in 0..n {
            p.observe(&h1, 2 * i, &b1);
            p.observe(&hc, 2 * i + 1, &bc);
        }
        assert_eq!(p.ended.len(), RAFT_WINDOW_BATCHES);
    }
}

/// Every partition's transactions on one shard (its owned partitions only).
type Parts = std::cell::RefCell<std::collections::HashMap<sluice_core::TopicPartition, PartitionTxns>>;

#[derive(Debug, Default)]
pub struct Registry {
    /// Shared with the partitions' cut listeners ([`Registry::cut_listener`]).
    parts: std::rc::Rc<Parts>,
}

/// What a read_committed answer needs of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnView {
    pub last_stable_offset: i64,
    pub aborted: Vec<Aborted>,
}

impl Registry {
    /// Takes an appended batch (see [`PartitionTxns::observe`]).
    pub fn observe(&self, tp: &sluice_core::TopicPartition, h: &BatchHeader, base: i64, bytes: &[u8]) {
        if h.producer_id < 0 || h.attributes & TRANSACTIONAL == 0 {
            return;
        }
        let mut parts = self.parts.borrow_mut();
        let p = parts.entry(tp.clone()).or_default();
        p.observe(h, base, bytes);
        // Appended to a log Raft does not cut, or committed: nothing below stays uncertain.
        p.settle_below(base);
    }

    /// The open transactions of a partition: (producer id, first offset, epoch).
    pub fn open_of(&self, tp: &sluice_core::TopicPartition) -> Vec<(i64, i64, i16)> {
        self.parts.borrow().get(tp).map(PartitionTxns::open_with_epochs).unwrap_or_default()
    }

    /// Rolls a partition's state back to a cut of its log at `offset` (see
    /// [`PartitionTxns::truncate_to`]).
    pub fn truncate(&self, tp: &sluice_core::TopicPartition, offset: i64) {
        truncate_in(&self.parts, tp, offset);
    }

    /// What the partition's log calls on a Raft cut of its end (`PartitionLog::on_cut`): the
    /// partition's state follows the cut at once.
    pub fn cut_listener(&self, tp: &sluice_core::TopicPartition) -> sluice_storage::log::CutListener {
        let parts = std::rc::Rc::downgrade(&self.parts);
        let tp = tp.clone();
        Box::new(move |offset| {
            if let Some(parts) = parts.upgrade() {
                truncate_in(&parts, &tp, offset.0);
            }
        })
    }

    /// See [`PartitionTxns::has_open`].
    pub fn has_open(&self, tp: &sluice_core::TopicPartition, producer_id: i64, epoch: i16) -> bool {
        self.parts.borrow().get(tp).is_some_and(|p| p.has_open(producer_id, epoch))
    }

    /// Installs the state a scan of the log rebuilt (at open).
    pub fn install(&self, tp: &sluice_core::TopicPartition, txns: PartitionTxns) {
        if txns.is_empty() {
            self.parts.borrow_mut().remove(tp);
        } else {
            self.parts.borrow_mut().insert(tp.clone(), txns);
        }
    }

    /// Forgets aborted transactions compaction emptied (see [`PartitionTxns::forget_aborted`]).
    pub fn forget_aborted(&self, tp: &sluice_core::TopicPartition, markers: &[i64]) {
        if markers.is_empty() {
            return;
        }
        if let Some(p) = self.parts.borrow_mut().get_mut(tp) {
            p.forget_aborted(markers);
        }
    }

    /// Forgets a partition (closed or deleted).
    pub fn remove(&self, tp: &sluice_core::TopicPartition) {
        self.parts.borrow_mut().remove(tp);
    }

    /// The LSO (at most `high_watermark`) and the aborted transactions overlapping
    /// `[from, lso)`; `log_start` prunes aborted entries of deleted data.
    pub fn view(&self, tp: &sluice_core::TopicPartition, high_watermark: i64, log_start: i64, from: i64) -> TxnView {
        let mut parts = self.parts.borrow_mut();
        let Some(p) = parts.get_mut(tp) else {
            return TxnView { last_stable_offset: high_watermark, aborted: Vec::new() };
        };
        p.forget_below(log_start);
        let lso = p.last_stable_offset(high_watermark);
        TxnView { last_stable_offset: lso, aborted: p.aborted_between(from, lso) }
    }
}

/// After the open scan: a partition with one replica is never cut by Raft, so nothing of its
/// scan needs keeping for a cut ([`PartitionTxns::settle_below`]); a replicated one keeps what
/// its uncommitted tail may need until later observations settle it.
pub fn settle_unless_replicated(
    txns: &mut PartitionTxns,
    snapshot: &crate::metadata::MetadataSnapshot,
    tp: &sluice_core::TopicPartition,
) {
    let raft = snapshot
        .replication
        .get(&tp.topic)
        .and_then(|r| r.partitions.get(usize::try_from(tp.partition.0).ok()?))
        .is_some_and(crate::metadata::PartitionState::raft_backed);
    if !raft {
        txns.settle_below(i64::MAX);
    }
}

fn truncate_in(parts: &Parts, tp: &sluice_core::TopicPartition, offset: i64) {
    let mut parts = parts.borrow_mut();
    let Some(p) = parts.get_mut(tp) else { return };
    p.truncate_to(offset);
    if p.is_empty() {
        parts.remove(tp);
    }
}

/// Feeds each replicated partition's transaction index with its batches as they commit (a
/// replicated partition's appends are Raft entries: on the leader and the followers alike the
/// index follows the committed log, so a follower elected leader answers the same LSO and
/// aborted transactions; the LSO never passes the high watermark anyway).
pub fn follow_commits(shard: &std::rc::Rc<crate::shard::Shard>, r: &crate::replica::Replicas) {
    let weak = std::rc::Rc::downgrade(shard);
    r.on_commit(Box::new(move |tp, batches| {
        let Some(shard) = weak.upgrade() else { return };
        for (base, bytes) in batches {
            if let Ok(h) = BatchHeader::parse(bytes) {
                shard.txn_partitions.observe(tp, &h, base.0, bytes);
            }
        }
    }));
}

/// Rebuilds a partition's transactions by reading its whole log (at open, after a crash or a
/// clean stop alike: the state is not persisted). Reads whole batches up to the high watermark.
/// A batch damaged on disk ends the rebuild there (logged): the partition still opens, as it
/// did before transactions existed, and reads report the damage to the consumers that reach it.
pub async fn rebuild(log: &sluice_storage::PartitionLog) -> Result<PartitionTxns, sluice_storage::StorageError> {
    let mut txns = PartitionTxns::default();
    let mut offset = log.log_start();
    let end = log.high_watermark();
    while offset < end {
        let read = match log.read(offset, sluice_core::limits::OFFSETS_LOAD_READ_BYTES).await {
            Ok(read) => read,
            Err(e) if e.is_damage() => {
                tracing::warn!(partition = log.name(), offset = offset.0, error = %e,
                    "transaction state rebuilt only up to a damaged batch");
                break;
            }
            Err(e) => return Err(e),
        };
        if read.records.is_empty() {
            break;
        }
        let mut pos = 0;
        while pos + batch::HEADER_LEN <= read.records.len() {
            let Ok(h) = BatchHeader::parse(&read.records[pos..]) else { break };
            let stop = (pos + h.total_len()).min(read.records.len());
            txns.observe(&h, h.base_offset, &read.records[pos..stop]);
            offset = sluice_core::Offset(h.last_offset() + 1);
            pos += h.total_len();
        }
        if pos == 0 {
            break;
        }
    }
    Ok(txns)
}
