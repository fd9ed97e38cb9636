//! The key map of a compaction pass: for every key in the dirty range, the offset of its last
//! record (Kafka's `OffsetMap`, here with whole keys, so no two keys can be confused).
//!
//! Contract: the map holds at most `COMPACTION_KEY_MAP_BYTES` (keys plus a fixed overhead per
//! entry). Batches are added in offset order, a segment at a time; [`KeyMap::add_segment`]
//! adds a whole segment or, when its new keys do not fit, nothing (the map is left as it was
//! before the segment), so a pass always covers whole segments. [`KeyMap::add_batch`] and
//! [`KeyMap::commit`] do the same a batch at a time (a pass yields between batches): a
//! segment's keys reach the map only at its commit. Keyless records, control
//! batches and the batches of aborted transactions add nothing (an aborted record must not
//! hide the committed value before it). Compressed batches are decompressed with their codec.

use super::txn::CleanedTxns;
use super::{Batches, CompactError};
use crate::codec::uncompressed;
use sluice_core::batch::{records, BatchHeader};
use sluice_core::limits::{COMPACTION_KEY_MAP_BYTES, COMPACTION_KEY_MAP_ENTRY_OVERHEAD};
use std::collections::HashMap;

/// Key → offset of its last record in the range added so far.
#[derive(Debug, Default)]
pub struct KeyMap {
    latest: HashMap<Vec<u8>, i64>,
    bytes: usize,
    budget: usize,
}

impl KeyMap {
    pub fn new() -> KeyMap {
        KeyMap::with_budget(COMPACTION_KEY_MAP_BYTES)
    }

    /// A map bounded by `budget` bytes (tests use small ones).
    pub fn with_budget(budget: usize) -> KeyMap {
        KeyMap { latest: HashMap::new(), bytes: 0, budget }
    }

    /// The offset of the last record of `key` in the mapped range.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Adds every keyed record of the segment's batches (`segment`: a segment file's bytes,
    /// batches with their stored base offsets); `txns` tells the batches of aborted transactions
    /// (it follows the map's range in offset order). `Ok(false)`: the segment's keys do not fit;
    /// the map is unchanged.
    pub fn add_segment(&mut self, segment: &[u8], txns: &mut CleanedTxns) -> Result<bool, CompactError> {
        let mut keys = SegmentKeys::default();
        for b in Batches::new(segment) {
            let (h, batch) = b?;
            if !self.add_batch(&mut keys, &h, batch, txns)? {
                return Ok(false);
            }
        }
        self.commit(keys);
        Ok(true)
    }

    /// [`KeyMap::add_segment`] one batch at a time: adds the batch's keys to `keys` (the
    /// segment's so far, not yet in the map); `Ok(false)`: they do not fit with the map's, and
    /// the segment is to be dropped (`keys` is not committed).
    pub fn add_batch(
        &self,
        keys: &mut SegmentKeys,
        h: &BatchHeader,
        batch: &[u8],
        txns: &mut CleanedTxns,
    ) -> Result<bool, CompactError> {
        if h.is_control() {
            txns.on_control(h, batch);
            return Ok(true);
        }
        if txns.on_batch(h) {
            return Ok(true); // aborted
        }
        let plain;
        let body: &[u8] = if h.compression() == 0 {
            batch
        } else {
            plain = uncompressed(batch, h)?;
            &plain
        };
        for r in records(body)? {
            let Some(key) = r.key else { continue };
            let offset = h.base_offset + i64::from(r.offset_delta);
            if let Some(o) = keys.seg.get_mut(key) {
                *o = offset;
                continue;
            }
            if !self.latest.contains_key(key) {
                keys.new_bytes += key.len() + COMPACTION_KEY_MAP_ENTRY_OVERHEAD;
            }
            keys.seg.insert(key.to_vec(), offset);
        }
        Ok(self.bytes + keys.new_bytes <= self.budget)
    }

    /// Adds a whole segment's keys (every batch of it went through [`KeyMap::add_batch`]).
    pub fn commit(&mut self, keys: SegmentKeys) {
        self.latest.extend(keys.seg);
        self.bytes += keys.new_bytes;
        assert!(self.bytes <= self.budget, "key map over its budget");
    }
}

/// The keys of a segment being added to a [`KeyMap`], not in it yet.
#[derive(Debug, Default)]
pub struct SegmentKeys {
    seg: HashMap<Vec<u8>, i64>,
    new_bytes: usize,
}
