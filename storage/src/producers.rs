//! Idempotent-producer state of one partition: per producer id, its epoch and the sequence
//! ranges of its last five batches, as Kafka keeps them.
//!
//! Contract: [`Producers::check`] decides, before anything is appended, whether a batch is
//! next in sequence (append it), a retry of one of the last five (answer with the original
//! offsets, append nothing), out of order, or from a fenced (older) epoch. The state is
//! derived from the batches in the log, so recovery and rollback rebuild it from the index.

use sluice_core::batch::BatchHeader;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer (Kafka: 5, the client's max in-flight requests).
pub const REMEMBERED_BATCHES: usize = 5;

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
}

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

#[derive(Debug, Default)]
pub struct Producers {
    map: HashMap<i64, Entry>,
}

impl Producers {
    pub fn check(&self, h: &BatchHeader) -> Result<SeqCheck, SeqError> {
        if h.producer_id < 0 {
            return Ok(SeqCheck::Append);
        }
        let Some(e) = self.map.get(&h.producer_id) else {
            // A producer we hold no state for (new, or its state predates this log).
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
        let expected = e.batches.back().map(|b| add_seq(b.last, 1)).unwrap_or(h.base_sequence);
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
        if producer_id < 0 {
            return;
        }
        let e = self.map.entry(producer_id).or_default();
        if epoch != e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        e.batches.push_back(SeqRange {
            first: base_sequence,
            last: add_seq(base_sequence, count_delta),
            base_offset,
            last_offset,
        });
        while e.batches.len() > REMEMBERED_BATCHES {
            e.batches.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Producers with state.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

pub(crate) const SNAPSHOT_FILE: &str = "producers.snapshot";
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";

/// Writes the producer state as of `next_offset` (at a clean close; not fsync'd: it is trusted
/// only with the clean-shutdown marker, written after a filesystem sync).
pub fn save_snapshot(dir: &std::path::Path, next_offset: i64, p: &Producers) -> std::io::Result<()> {
    crate::disk::Disk::Real.write_file(&dir.join(SNAPSHOT_FILE), &encode_snapshot(next_offset, p), false)
}

/// The snapshot file's bytes: magic, next offset, producers, CRC-32.
pub(crate) fn encode_snapshot(next_offset: i64, p: &Producers) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + p.map.len() * 64);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&next_offset.to_be_bytes());
    out.extend_from_slice(&(p.map.len() as u32).to_be_bytes());
    for (pid, e) in &p.map {
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.push(e.batches.len() as u8);
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

/// Loads the snapshot if it was taken at `next_offset` and is intact.
pub fn load_snapshot(dir: &std::path::Path, next_offset: i64) -> Option<Producers> {
    decode_snapshot(&std::fs::read(dir.join(SNAPSHOT_FILE)).ok()?, next_offset)
}

/// Decodes snapshot bytes taken at `next_offset`; None when from another offset or damaged.
pub(crate) fn decode_snapshot(b: &[u8], next_offset: i64) -> Option<Producers> {
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
    let mut p = Producers::default();
    for _ in 0..n {
        let pid = i64::from_be_bytes(take(8)?.try_into().ok()?);
        let epoch = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let k = take(1)?[0];
        let mut e = Entry { epoch, batches: VecDeque::new() };
        for _ in 0..k {
            let first = i32::from_be_bytes(take(4)?.try_into().ok()?);
            let last = i32::from_be_bytes(take(4)?.try_into().ok()?);
            let base_offset = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let last_offset = i64::from_be_bytes(take(8)?.try_into().ok()?);
            e.batches.push_back(SeqRange { first, last, base_offset, last_offset });
        }
        p.map.insert(pid, e);
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
