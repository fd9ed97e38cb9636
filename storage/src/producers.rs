//! Idempotent-producer state of one partition: per producer id, its epoch and the sequence
//! ranges of its last five batches, as Kafka keeps them.
//!
//! Contract: [`Producers::check`] decides, before anything is appended, whether a batch is
//! next in sequence (append it), a retry of one of the last five (answer with the original
//! offsets, append nothing), out of order, or from a fenced (older) epoch. Transaction markers
//! (control batches, no sequence) are always appended; they carry the producer's epoch, which
//! a fencing abort bumps, so older epochs are refused after it. The state is
//! derived from the batches in the log, so recovery and rollback rebuild it from the index.
//!
//! Expiration (Kafka's `producer.id.expiration.ms`, broker config `producer_id_expiration_ms`,
//! default one day): a producer whose last write here is that old is forgotten, as Kafka
//! removes it from the partition's producer state. A forgotten producer is an unknown one, and
//! Kafka (`ProducerAppendInfo.checkSequence`) accepts any sequence from a producer it has no
//! state for, so its next batch is appended and a very late retry is no longer deduplicated.
//! Each partition's state carries its expiration (from [`crate::LogConfig`]). Expired entries are
//! treated as absent by [`Producers::check`] at once, removed from the map by
//! [`Producers::expire`] (which `PartitionLog::expire_producers` calls from each shard's periodic
//! timer, every `PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS`), and left out of snapshots and
//! dropped when one is loaded. "Last write" is the wall-clock time the batch was recorded (appended, or found in
//! the log by a recovery scan), where Kafka uses the batch's max timestamp: a recovery scan
//! therefore restarts the clock of the producers it finds (state is kept longer, never less).

use sluice_core::batch::BatchHeader;
use sluice_core::clock::now_ms;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer (Kafka: 5, the client's max in-flight requests).
pub const REMEMBERED_BATCHES: usize = sluice_core::limits::REMEMBERED_BATCHES_PER_PRODUCER;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeqRange {
    first: i32,
    last: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    epoch: i16,
    batches: VecDeque<SeqRange>,
    /// Wall-clock time of this producer's last write here (ms since the epoch).
    last_ms: i64,
}

impl Entry {
    fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_ms) >= expiration_ms
    }
}

type Map = HashMap<i64, Entry>;

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    Append,
    /// A retry of a batch already in the log at these offsets.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
}

/// Why a batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SeqError {
    #[error("out of order sequence number for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrder { producer_id: i64, expected: i32, got: i32 },
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}")]
    FencedEpoch { producer_id: i64, current: i16, got: i16 },
}

/// Kafka's sequence arithmetic: sequences wrap from i32::MAX to 0.
pub fn add_seq(base: i32, delta: i32) -> i32 {
    if base > i32::MAX - delta {
        delta - (i32::MAX - base) - 1
    } else {
        base + delta
    }
}

/// One producer's state, as DescribeProducers reports it ([`Producers::describe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_ms: i64,
}

/// One partition's producer state.
#[derive(Debug)]
pub struct Producers {
    map: Map,
    /// How long a producer's state outlives its last write here (`producer_id_expiration_ms`).
    expiration_ms: i64,
}

impl Default for Producers {
    /// No producers, with the default expiration.
    fn default() -> Self {
        Producers::new(sluice_core::limits::DEFAULT_PRODUCER_ID_EXPIRATION_MS)
    }
}

impl Producers {
    /// No producers; a producer's state is forgotten `expiration_ms` after its last write here
    /// (`producer_id_expiration_ms`, validated positive by the broker config).
    pub fn new(expiration_ms: u64) -> Producers {
        assert!(expiration_ms > 0, "producer id expiration must be positive");
        Producers { map: Map::new(), expiration_ms: i64::try_from(expiration_ms).unwrap_or(i64::MAX) }
    }

    /// The expiration this state was made with (in ms; for a state rebuilt in its place).
    pub fn expiration_ms(&self) -> u64 {
        u64::try_from(self.expiration_ms).expect("the expiration is positive")
    }

    /// Removes the producers whose last write here is at least the expiration older than
    /// `now_ms` (wall clock, ms since the epoch); returns how many.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let before = self.map.len();
        let expiration_ms = self.expiration_ms;
        self.map.retain(|_, e| !e.expired(now_ms, expiration_ms));
        before - self.map.len()
    }

    pub fn check(&self, h: &BatchHeader) -> Result<SeqCheck, SeqError> {
        self.check_at(h, now_ms())
    }

    fn check_at(&self, h: &BatchHeader, now_ms: i64) -> Result<SeqCheck, SeqError> {
        if h.producer_id < 0 || h.is_control() {
            // Transaction markers carry no sequence (the coordinator writes them).
            return Ok(SeqCheck::Append);
        }
        let Some(e) = self.map.get(&h.producer_id).filter(|e| !e.expired(now_ms, self.expiration_ms)) else {
            // A producer we hold no state for (new, expired, or its state predates this log):
            // Kafka accepts any sequence from it.
            return Ok(SeqCheck::Append);
        };
        if h.producer_epoch < e.epoch {
            return Err(SeqError::FencedEpoch { producer_id: h.producer_id, current: e.epoch, got: h.producer_epoch });
        }
        if h.producer_epoch > e.epoch {
            return if h.base_sequence == 0 {
                Ok(SeqCheck::Append)
            } else {
                Err(SeqError::OutOfOrder { producer_id: h.producer_id, expected: 0, got: h.base_sequence })
            };
        }
        let last = add_seq(h.base_sequence, h.last_offset_delta);
        if let Some(b) = e.batches.iter().find(|b| b.first == h.base_sequence && b.last == last) {
            return Ok(SeqCheck::Duplicate { base_offset: b.base_offset, last_offset: b.last_offset });
        }
        // No batch remembered at this epoch: a transaction marker set it (a version 2 end bumps
        // the epoch at every commit and abort, and a fencing abort does too; an entry left with
        // no batch otherwise is forgotten), so the epoch's first batch starts at sequence 0, as
        // Kafka's `checkSequence` wants it (last sequence NO_SEQUENCE, the epoch known). Taking
        // any sequence here let a producer's later batch of the new epoch in before its
        // refused first one, which then could never be appended (issue #21).
        let expected = e.batches.back().map_or(0, |b| add_seq(b.last, 1));
        if h.base_sequence == expected {
            Ok(SeqCheck::Append)
        } else {
            Err(SeqError::OutOfOrder { producer_id: h.producer_id, expected, got: h.base_sequence })
        }
    }

    /// Records an appended batch (call after `check` returned `Append`).
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        count_delta: i32,
        base_offset: i64,
        last_offset: i64,
    ) {
        let range =
            SeqRange { first: base_sequence, last: add_seq(base_sequence, count_delta), base_offset, last_offset };
        self.record_at(producer_id, epoch, range, now_ms());
    }

    fn record_at(&mut self, producer_id: i64, epoch: i16, range: SeqRange, now_ms: i64) {
        if producer_id < 0 {
            return;
        }
        let e = self.map.entry(producer_id).or_default();
        if e.expired(now_ms, self.expiration_ms) {
            // Forgotten: start afresh, as for a producer never seen.
            *e = Entry::default();
        }
        e.last_ms = e.last_ms.max(now_ms);
        if epoch != e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        if range.first < 0 {
            // A transaction marker (the only batch with a producer id and no sequence): it may
            // bump the epoch (fencing the producer) but is no batch of the sequence.
            return;
        }
        e.batches.push_back(range);
        while e.batches.len() > REMEMBERED_BATCHES {
            e.batches.pop_front();
        }
    }

    /// Forgets every batch at or after `offset` (appends rolled back after a failed write or
    /// sync, or cut by a truncation). A producer left with no batch is forgotten: its next
    /// batch is accepted as from a producer never seen, as Kafka does.
    pub fn forget_from(&mut self, offset: i64) {
        self.map.retain(|_, e| {
            e.batches.retain(|b| b.last_offset < offset);
            !e.batches.is_empty()
        });
    }

    /// Each active (unexpired) producer's last entry, for log compaction: the last offset of
    /// its last remembered batch of the current epoch, or none when a marker bumped the epoch
    /// since (Kafka's `lastRecordsOfActiveProducers`).
    pub fn last_records(&self, now_ms: i64) -> HashMap<i64, crate::compact::txn::LastRecord> {
        self.map
            .iter()
            .filter(|(_, e)| !e.expired(now_ms, self.expiration_ms))
            .map(|(id, e)| {
                let last = crate::compact::txn::LastRecord {
                    last_data_offset: e.batches.back().map(|b| b.last_offset),
                    epoch: e.epoch,
                };
                (*id, last)
            })
            .collect()
    }

    /// Every unexpired producer's state as DescribeProducers answers it (Kafka's
    /// `activeProducers`): id, epoch, the last sequence of its last remembered batch (-1 when
    /// none), and when it last wrote here (ms since the epoch). In producer id order.
    pub fn describe(&self, now_ms: i64) -> Vec<ProducerSummary> {
        let mut out: Vec<ProducerSummary> = self
            .map
            .iter()
            .filter(|(_, e)| !e.expired(now_ms, self.expiration_ms))
            .map(|(id, e)| ProducerSummary {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last),
                last_ms: e.last_ms,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Producers with state (expired ones included until [`Producers::expire`] removes them).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

pub(crate) const SNAPSHOT_FILE: &str = "producers.snapshot";
/// Version 2 ("SLP2") adds each producer's last-write time; a version-1 file is ignored (the
/// state is rebuilt from the log, as without a snapshot).
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLP2";

/// Writes the producer state as of `next_offset` (at a clean close; not fsync'd: it is trusted
/// only with the clean-shutdown marker, written after a filesystem sync).
pub fn save_snapshot(dir: &std::path::Path, next_offset: i64, p: &Producers) -> std::io::Result<()> {
    crate::disk::Disk::Real.write_file(&dir.join(SNAPSHOT_FILE), &encode_snapshot(next_offset, p), false)
}

/// The snapshot file's bytes: magic, next offset, producers, CRC-32.
/// Expired producers are left out.
pub(crate) fn encode_snapshot(next_offset: i64, p: &Producers) -> Vec<u8> {
    encode_snapshot_at(next_offset, p, now_ms())
}

fn encode_snapshot_at(next_offset: i64, p: &Producers, now_ms: i64) -> Vec<u8> {
    let live: Vec<(&i64, &Entry)> = p.map.iter().filter(|(_, e)| !e.expired(now_ms, p.expiration_ms)).collect();
    let mut out = Vec::with_capacity(16 + live.len() * 64);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&next_offset.to_be_bytes());
    out.extend_from_slice(&u32::try_from(live.len()).expect("producers per partition fit u32").to_be_bytes());
    for (pid, e) in live {
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.extend_from_slice(&e.last_ms.to_be_bytes());
        out.push(u8::try_from(e.batches.len()).expect("at most REMEMBERED_BATCHES batches per producer"));
        for b in &e.batches {
            out.extend_from_slice(&b.first.to_be_bytes());
            out.extend_from_slice(&b.last.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset.to_be_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Loads the snapshot if it was taken at `next_offset` and is intact (default expiration).
pub fn load_snapshot(dir: &std::path::Path, next_offset: i64) -> Option<Producers> {
    let expiration_ms = sluice_core::limits::DEFAULT_PRODUCER_ID_EXPIRATION_MS;
    decode_snapshot(&std::fs::read(dir.join(SNAPSHOT_FILE)).ok()?, next_offset, expiration_ms)
}

/// Decodes snapshot bytes taken at `next_offset`; None when from another offset or damaged.
/// Producers expired by now (after `expiration_ms`) are dropped.
pub(crate) fn decode_snapshot(b: &[u8], next_offset: i64, expiration_ms: u64) -> Option<Producers> {
    decode_snapshot_at(b, next_offset, now_ms(), Producers::new(expiration_ms))
}

/// Decodes into `p` (empty, with its expiration).
fn decode_snapshot_at(b: &[u8], next_offset: i64, now_ms: i64, mut p: Producers) -> Option<Producers> {
    if b.len() < 20 || &b[..4] != SNAPSHOT_MAGIC {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = body.get(4..)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, rest) = (r.get(..n)?, r.get(n..)?);
        r = rest;
        Some(a)
    };
    let at = i64::from_be_bytes(take(8)?.try_into().ok()?);
    if at != next_offset {
        return None;
    }
    let n = u32::from_be_bytes(take(4)?.try_into().ok()?);
    for _ in 0..n {
        let pid = i64::from_be_bytes(take(8)?.try_into().ok()?);
        let epoch = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let last_ms = i64::from_be_bytes(take(8)?.try_into().ok()?);
        let k = take(1)?[0];
        let mut e = Entry { epoch, batches: VecDeque::new(), last_ms };
        for _ in 0..k {
            let first = i32::from_be_bytes(take(4)?.try_into().ok()?);
            let last = i32::from_be_bytes(take(4)?.try_into().ok()?);
            let base_offset = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let last_offset = i64::from_be_bytes(take(8)?.try_into().ok()?);
            e.batches.push_back(SeqRange { first, last, base_offset, last_offset });
        }
        if !e.expired(now_ms, p.expiration_ms) {
            p.map.insert(pid, e);
        }
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, n: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn in_order_duplicate_gap_and_fencing() {
        let mut p = Producers::default();
        let h = header(7, 0, 0, 3);
        assert_eq!(p.check(&h), Ok(SeqCheck::Append));
        p.record(7, 0, 0, 2, 100, 102);
        assert_eq!(p.check(&h), Ok(SeqCheck::Duplicate { base_offset: 100, last_offset: 102 }));
        assert_eq!(p.check(&header(7, 0, 3, 1)), Ok(SeqCheck::Append));
        assert!(matches!(p.check(&header(7, 0, 5, 1)), Err(SeqError::OutOfOrder { expected: 3, got: 5, .. })));
        p.record(7, 1, 0, 0, 103, 103);
        assert!(matches!(p.check(&header(7, 0, 4, 1)), Err(SeqError::FencedEpoch { current: 1, .. })));
        assert_eq!(p.check(&header(-1, -1, -1, 5)), Ok(SeqCheck::Append));
    }

    #[test]
    fn transaction_markers_skip_sequences_and_may_fence() {
        let mut p = Producers::default();
        p.record(7, 0, 0, 2, 100, 102);
        let mut marker = header(7, 0, -1, 1);
        marker.attributes = 0x30;
        assert_eq!(p.check(&marker), Ok(SeqCheck::Append));
        p.record(7, 0, -1, 0, 103, 103);
        // The sequence continues across a marker of the same epoch (transaction version 1).
        assert_eq!(p.check(&header(7, 0, 3, 1)), Ok(SeqCheck::Append));
        assert!(matches!(p.check(&header(7, 0, 0, 1)), Err(SeqError::OutOfOrder { .. })));
        // A fencing abort's marker carries a bumped epoch: the old epoch is refused after it.
        p.record(7, 1, -1, 0, 104, 104);
        assert!(matches!(p.check(&header(7, 0, 3, 1)), Err(SeqError::FencedEpoch { current: 1, .. })));
    }

    #[test]
    fn after_a_marker_bumped_the_epoch_its_first_batch_starts_at_zero() {
        // Transaction version 2: the COMMIT marker of the transaction at epoch 4 carries epoch
        // 5, the epoch the producer's next transaction writes with, sequences from 0.
        let mut p = Producers::default();
        p.record(7, 4, 0, 16, 100, 116);
        p.record(7, 5, -1, 0, 117, 117);
        // A later batch of the new epoch must wait for the first (the first was refused, say
        // CONCURRENT_TRANSACTIONS, and is retried): taking it would leave the first out of
        // order for ever.
        assert!(matches!(p.check(&header(7, 5, 6, 11)), Err(SeqError::OutOfOrder { expected: 0, got: 6, .. })));
        assert_eq!(p.check(&header(7, 5, 0, 6)), Ok(SeqCheck::Append));
        p.record(7, 5, 0, 5, 118, 123);
        assert_eq!(p.check(&header(7, 5, 6, 11)), Ok(SeqCheck::Append));
        // The same after a snapshot round trip of the marker-only state.
        let mut q = Producers::default();
        q.record(7, 5, -1, 0, 117, 117);
        let q = decode_snapshot(&encode_snapshot(118, &q), 118, 86_400_000).expect("snapshot");
        assert!(matches!(q.check(&header(7, 5, 6, 11)), Err(SeqError::OutOfOrder { expected: 0, .. })));
        // A producer this partition knows nothing of is still accepted at any sequence.
        assert_eq!(Producers::default().check(&header(8, 5, 6, 11)), Ok(SeqCheck::Append));
    }

    #[test]
    fn describe_lists_unexpired_producers_with_their_last_sequence() {
        let mut p = Producers::new(1000);
        p.record_at(7, 2, range(0, 4, 10), 100);
        p.record_at(7, 2, range(5, 2, 15), 200);
        p.record_at(3, 0, range(0, 1, 18), 150);
        p.record_at(9, 1, SeqRange { first: -1, last: -1, base_offset: 19, last_offset: 19 }, 50);
        let d = p.describe(1100);
        assert_eq!(
            d,
            vec![
                ProducerSummary { producer_id: 3, epoch: 0, last_sequence: 0, last_ms: 150 },
                ProducerSummary { producer_id: 7, epoch: 2, last_sequence: 6, last_ms: 200 },
            ],
            "by id; a marker-only producer has no sequence; producer 9 expired at 1050"
        );
        assert_eq!(p.describe(60)[0], ProducerSummary { producer_id: 3, epoch: 0, last_sequence: 0, last_ms: 150 });
        assert_eq!(p.describe(60).iter().find(|s| s.producer_id == 9).map(|s| s.last_sequence), Some(-1));
    }

    #[test]
    fn snapshot_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Producers::default();
        p.record(9, 2, 10, 4, 100, 104);
        p.record(11, 0, 0, 0, 105, 105);
        save_snapshot(d.path(), 106, &p).unwrap();
        assert!(load_snapshot(d.path(), 107).is_none(), "a snapshot of another log end is ignored");
        let back = load_snapshot(d.path(), 106).unwrap();
        assert_eq!(back.check(&header(9, 2, 10, 5)), Ok(SeqCheck::Duplicate { base_offset: 100, last_offset: 104 }));
        assert_eq!(back.len(), 2);
    }

    const DAY: i64 = 86_400_000;

    fn range(seq: i32, n: i32, base: i64) -> SeqRange {
        SeqRange { first: seq, last: add_seq(seq, n - 1), base_offset: base, last_offset: base + n as i64 - 1 }
    }

    fn day() -> Producers {
        Producers::new(u64::try_from(DAY).unwrap())
    }

    #[test]
    fn an_expired_producer_is_unknown_and_accepted_at_any_sequence() {
        let mut p = day();
        let t0 = 1_000_000;
        p.record_at(7, 0, range(0, 3, 100), t0);
        // Within the expiration: a retry is a duplicate, a gap is refused.
        let dup = Ok(SeqCheck::Duplicate { base_offset: 100, last_offset: 102 });
        assert_eq!(p.check_at(&header(7, 0, 0, 3), t0 + DAY - 1), dup);
        assert!(p.check_at(&header(7, 0, 9, 1), t0 + DAY - 1).is_err());
        // At the expiration: forgotten, so the old retry and any sequence are appended (Kafka).
        assert_eq!(p.check_at(&header(7, 0, 0, 3), t0 + DAY), Ok(SeqCheck::Append));
        assert_eq!(p.check_at(&header(7, 0, 9, 1), t0 + DAY), Ok(SeqCheck::Append));
        // A write after expiry starts afresh (old batches gone) and restarts the clock.
        p.record_at(7, 0, range(9, 1, 200), t0 + DAY);
        assert!(p.check_at(&header(7, 0, 0, 3), t0 + DAY + 1).is_err(), "seq 0 after seq 9 is out of order");
        assert_eq!(p.check_at(&header(7, 0, 10, 1), t0 + 2 * DAY - 1), Ok(SeqCheck::Append));
    }

    #[test]
    fn expire_removes_expired_producers_only() {
        let mut a = day();
        let t0 = 5_000_000;
        a.record_at(1, 0, range(0, 1, 0), t0);
        a.record_at(2, 0, range(0, 1, 1), t0 + 10);
        a.record_at(3, 0, range(0, 1, 2), t0);
        assert_eq!(a.expire(t0 + DAY - 1), 0);
        assert_eq!(a.expire(t0 + DAY), 2, "producers 1 and 3");
        assert_eq!(a.len(), 1);
        assert_eq!(a.expire(t0 + DAY + 10), 1);
        assert!(a.is_empty());
    }

    #[test]
    fn snapshots_leave_out_and_drop_expired_producers() {
        let mut p = day();
        let t0 = 9_000_000;
        p.record_at(1, 0, range(0, 2, 0), t0);
        p.record_at(2, 0, range(0, 2, 2), t0 + 100);
        let bytes = encode_snapshot_at(4, &p, t0 + DAY);
        let back = decode_snapshot_at(&bytes, 4, t0 + DAY, day()).unwrap();
        assert_eq!(back.len(), 1, "the expired producer is not written");
        let back = decode_snapshot_at(&bytes, 4, t0 + DAY + 100, day()).unwrap();
        assert_eq!(back.len(), 0, "a producer expired by load time is dropped");
        let back = decode_snapshot_at(&encode_snapshot_at(4, &p, t0), 4, t0 + 50, day()).unwrap();
        let dup = Ok(SeqCheck::Duplicate { base_offset: 2, last_offset: 3 });
        assert_eq!(back.check_at(&header(2, 0, 0, 2), t0 + 50), dup);
        let mut v1 = bytes.clone();
        v1[..4].copy_from_slice(b"SLPS");
        assert!(decode_snapshot_at(&v1, 4, t0, day()).is_none(), "a version-1 snapshot is ignored");
    }

    #[test]
    fn only_five_batches_are_remembered_and_sequences_wrap() {
        let mut p = Producers::default();
        for i in 0..7 {
            p.record(1, 0, i, 0, i as i64, i as i64);
        }
        assert_eq!(p.check(&header(1, 0, 6, 1)), Ok(SeqCheck::Duplicate { base_offset: 6, last_offset: 6 }));
        assert!(p.check(&header(1, 0, 0, 1)).is_err(), "the oldest batches are forgotten");
        assert_eq!(add_seq(i32::MAX, 1), 0);
        assert_eq!(add_seq(i32::MAX - 1, 3), 1);
    }
}
