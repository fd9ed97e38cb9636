//! Transactions as a compaction pass sees them (Kafka's `CleanedTransactionMetadata` and the
//! producer state the cleaner consults), without I/O.
//!
//! Contract:
//! - [`scan`] reads a log's batches in offset order and answers the aborted transactions
//!   (producer, first offset, marker offset) and the first offset of each transaction still
//!   open at the end of what it read (the pass must end before the oldest of them).
//! - [`CleanedTxns`] is fed every batch a pass traverses, in offset order from where the pass
//!   starts, with the aborted transactions whose marker lies at or after that start. For a data
//!   batch it answers whether the batch belongs to an aborted transaction (its records are
//!   discarded); for a control batch whether the marker can go (a COMMIT whose transaction had
//!   no batch in what was traversed, an ABORT whose transaction had none left, or an already
//!   emptied marker) — the marker then only goes once past its delete horizon.
//! - [`LastRecord`]: an active producer's last data offset (or none, when its last entry is a
//!   marker that bumped its epoch) and epoch; the batch holding it is kept, emptied if need be,
//!   so the producer's last sequence and epoch survive cleaning.

use sluice_core::batch::BatchHeader;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Attribute bit of a transactional batch.
pub const TRANSACTIONAL: i16 = 0x10;

/// An aborted transaction of one producer: its data lies in `[first_offset, marker_offset)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub marker_offset: i64,
}

/// An active producer's last entry in the log (Kafka's `LastRecord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRecord {
    /// Last offset of its last data batch of the current epoch, if any.
    pub last_data_offset: Option<i64>,
    pub epoch: i16,
}

/// Whether `h` holds the last entry of an active producer (Kafka's `isBatchLastRecordOfProducer`).
pub fn is_last_of_producer(h: &BatchHeader, producers: &HashMap<i64, LastRecord>) -> bool {
    h.producer_id >= 0
        && producers.get(&h.producer_id).is_some_and(|l| match l.last_data_offset {
            Some(last) => h.last_offset() == last,
            None => h.is_control() && h.producer_epoch == l.epoch,
        })
}

/// The type of a control batch's marker (`Some(true)` COMMIT, `Some(false)` ABORT, `None`
/// another type or no record), from its first record's key (version i16, type i16).
pub fn marker_type(control_batch: &[u8]) -> Option<bool> {
    let recs = sluice_core::batch::records(control_batch).ok()?;
    let key = recs.into_iter().next()?.key?;
    match i16::from_be_bytes(key.get(2..4)?.try_into().ok()?) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

fn is_transactional(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.attributes & TRANSACTIONAL != 0
}

/// What [`scan`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// In marker order.
    pub aborted: Vec<AbortedTxn>,
    /// Producer id → first offset of its transaction still open at the end of the scan.
    pub open: BTreeMap<i64, i64>,
    /// Whether any transactional batch was seen.
    pub transactional: bool,
}

impl Scan {
    /// Takes one batch (the whole batch's bytes, needed for control batches).
    pub fn observe(&mut self, h: &BatchHeader, batch: &[u8]) {
        if !is_transactional(h) {
            return;
        }
        self.transactional = true;
        if !h.is_control() {
            self.open.entry(h.producer_id).or_insert(h.base_offset);
            return;
        }
        let Some(first) = self.open.remove(&h.producer_id) else { return };
        if marker_type(batch) == Some(false) {
            self.aborted.push(AbortedTxn {
                producer_id: h.producer_id,
                first_offset: first,
                marker_offset: h.base_offset,
            });
        }
    }

    /// The first offset of the oldest transaction still open.
    pub fn first_unstable(&self) -> Option<i64> {
        self.open.values().copied().min()
    }

    /// Whether a transaction that began before `offset` is still open.
    pub fn open_before(&self, offset: i64) -> bool {
        self.first_unstable().is_some_and(|f| f < offset)
    }
}

/// Every batch of `batches` fed to a [`Scan`].
pub fn scan<'a>(batches: impl IntoIterator<Item = (BatchHeader, &'a [u8])>) -> Scan {
    let mut s = Scan::default();
    for (h, b) in batches {
        s.observe(&h, b);
    }
    s
}

/// The transactions of a pass, carried from batch to batch in offset order.
#[derive(Debug, Default)]
pub struct CleanedTxns {
    /// Aborted transactions not reached yet, by first offset.
    pending: Vec<AbortedTxn>,
    /// Producer → whether a batch of its aborted transaction was traversed.
    ongoing_aborted: HashMap<i64, bool>,
    /// Producers with a traversed batch of a (so far not aborted) transaction.
    ongoing_committed: HashSet<i64>,
    /// A segment of the pass went unread: no marker may go from there on.
    blind: bool,
    /// Offsets of the ABORT markers met with no batch of their transaction left.
    emptied_aborts: Vec<i64>,
}

impl CleanedTxns {
    /// `aborted`: the aborted transactions whose marker lies at or after where the pass starts.
    pub fn new(mut aborted: Vec<AbortedTxn>) -> CleanedTxns {
        // Consumed from the end: sorted by first offset, descending.
        aborted.sort_by_key(|a| std::cmp::Reverse(a.first_offset));
        CleanedTxns { pending: aborted, ..CleanedTxns::default() }
    }

    fn consume_aborted_up_to(&mut self, offset: i64) {
        while self.pending.last().is_some_and(|a| a.first_offset <= offset) {
            let a = self.pending.pop().expect("checked");
            self.ongoing_aborted.entry(a.producer_id).or_insert(false);
        }
    }

    /// A data batch: whether it belongs to an aborted transaction (Kafka's `onBatchRead`).
    pub fn on_batch(&mut self, h: &BatchHeader) -> bool {
        self.consume_aborted_up_to(h.last_offset());
        if !is_transactional(h) {
            return false;
        }
        match self.ongoing_aborted.get_mut(&h.producer_id) {
            Some(seen) => {
                *seen = true;
                true
            }
            None => {
                self.ongoing_committed.insert(h.producer_id);
                false
            }
        }
    }

    /// The offsets of the ABORT markers whose transaction had no batch left in what was
    /// traversed: readers need no aborted-transaction entry for them any more (Kafka leaves
    /// them out of the cleaned transaction index).
    pub fn emptied_aborts(&self) -> &[i64] {
        &self.emptied_aborts
    }

    /// The pass skips a segment (too large to read whole): markers after it may belong to
    /// transactions whose batches went unseen, so none is discarded from now on.
    pub fn lose_sight(&mut self) {
        self.blind = true;
    }

    /// A control batch: whether the marker may be discarded (Kafka's `onControlBatchRead`).
    pub fn on_control(&mut self, h: &BatchHeader, batch: &[u8]) -> bool {
        self.consume_aborted_up_to(h.last_offset());
        let discard = if h.records_count == 0 {
            true // an emptied marker, cleaned before
        } else {
            match marker_type(batch) {
                Some(false) => {
                    let empty = !self.ongoing_aborted.remove(&h.producer_id).unwrap_or(false);
                    if empty && !self.blind {
                        self.emptied_aborts.push(h.base_offset);
                    }
                    empty
                }
                Some(true) => !self.ongoing_committed.remove(&h.producer_id),
                None => false,
            }
        };
        discard && !self.blind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::batch::{build, compute_crc, stamp, validate, Record};

    /// A batch at `base` of `n` records of producer `pid` (transactional when `txn`).
    fn data(base: i64, n: usize, pid: i64, txn: bool) -> Vec<u8> {
        let recs: Vec<Record<'_>> = (0..n).map(|_| Record { key: Some(b"k"), value: b"v" }).collect();
        let mut b = build(&recs, 0);
        if pid >= 0 {
            b[21..23].copy_from_slice(&(if txn { TRANSACTIONAL } else { 0 }).to_be_bytes());
            b[43..51].copy_from_slice(&pid.to_be_bytes());
            b[51..53].copy_from_slice(&0i16.to_be_bytes());
            b[53..57].copy_from_slice(&0i32.to_be_bytes());
            let crc = compute_crc(&b);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        stamp(&mut b, base, 0);
        b
    }

    /// A COMMIT (`commit`) or ABORT marker of `pid` at `base`.
    fn marker(base: i64, pid: i64, commit: bool) -> Vec<u8> {
        let mut key = [0u8; 4];
        key[2..4].copy_from_slice(&i16::from(commit).to_be_bytes());
        let mut b = build(&[Record { key: Some(&key), value: &[0u8; 6] }], 0);
        b[21..23].copy_from_slice(&(TRANSACTIONAL | 0x20).to_be_bytes());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        stamp(&mut b, base, 0);
        b
    }

    fn h(b: &[u8]) -> BatchHeader {
        validate(b).unwrap()
    }

    #[test]
    fn the_scan_finds_aborted_and_open_transactions() {
        let log = [
            data(0, 2, 1, true),
            data(2, 1, 2, true),
            marker(3, 1, false),
            data(4, 1, 3, false),
            marker(5, 2, true),
            data(6, 1, 1, true),
        ];
        let s = scan(log.iter().map(|b| (h(b), &b[..])));
        assert!(s.transactional);
        assert_eq!(s.aborted, vec![AbortedTxn { producer_id: 1, first_offset: 0, marker_offset: 3 }]);
        assert_eq!(s.first_unstable(), Some(6));
        assert!(s.open_before(7) && !s.open_before(6));
        let plain = [data(0, 1, -1, false), data(1, 1, 4, false)];
        assert!(!scan(plain.iter().map(|b| (h(b), &b[..]))).transactional);
    }

    #[test]
    fn aborted_batches_are_discarded_and_their_marker_kept_while_one_is_traversed() {
        let aborted = vec![AbortedTxn { producer_id: 1, first_offset: 0, marker_offset: 3 }];
        let mut t = CleanedTxns::new(aborted.clone());
        let (a, c, m) = (data(0, 2, 1, true), data(2, 1, 2, true), marker(3, 1, false));
        assert!(t.on_batch(&h(&a)), "the aborted transaction's batch");
        assert!(!t.on_batch(&h(&c)), "another producer's transaction");
        assert!(!t.on_control(&h(&m), &m), "an ABORT marker stays while its data was traversed");
        let commit = marker(4, 2, true);
        assert!(!t.on_control(&h(&commit), &commit), "a COMMIT stays while its data was traversed");
        // Next pass: the aborted data is gone, so is the committed data: both markers may go.
        let mut t = CleanedTxns::new(aborted);
        assert!(t.on_control(&h(&m), &m));
        assert!(t.on_control(&h(&commit), &commit));
        assert_eq!(t.emptied_aborts(), &[3], "the emptied aborted transaction needs no index entry");
        // A later transaction of the same producer is not taken for the aborted one.
        let later = data(5, 1, 1, true);
        assert!(!t.on_batch(&h(&later)));
    }

    #[test]
    fn an_emptied_marker_is_discardable_and_plain_batches_never_aborted() {
        let mut t = CleanedTxns::new(Vec::new());
        let mut m = marker(3, 1, true);
        // Empty it: no records, the count 0.
        m.truncate(sluice_core::batch::HEADER_LEN);
        let len = i32::try_from(m.len() - sluice_core::batch::LOG_OVERHEAD).unwrap();
        m[8..12].copy_from_slice(&len.to_be_bytes());
        m[57..61].copy_from_slice(&0i32.to_be_bytes());
        let crc = compute_crc(&m);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(t.on_control(&h(&m), &m));
        assert!(!t.on_batch(&h(&data(0, 1, 1, false))));
    }

    #[test]
    fn the_producers_last_batch_or_marker_is_recognised() {
        let mut p = HashMap::new();
        p.insert(1, LastRecord { last_data_offset: Some(1), epoch: 0 });
        p.insert(2, LastRecord { last_data_offset: None, epoch: 0 });
        assert!(is_last_of_producer(&h(&data(0, 2, 1, false)), &p));
        assert!(!is_last_of_producer(&h(&data(0, 1, 1, false)), &p));
        assert!(is_last_of_producer(&h(&marker(5, 2, false)), &p));
        assert!(!is_last_of_producer(&h(&data(5, 1, 2, true)), &p));
        assert!(!is_last_of_producer(&h(&data(0, 2, -1, false)), &p));
    }
}
