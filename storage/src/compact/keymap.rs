//! The key map of a compaction pass: for every key in the dirty range, the offset of its last
//! record (Kafka's `OffsetMap`, here with whole keys, so no two keys can be confused).
//!
//! Contract: the map holds at most `COMPACTION_KEY_MAP_BYTES` (keys plus a fixed overhead per
//! entry). Batches are added in offset order, a segment at a time; [`KeyMap::add_segment`]
//! adds a whole segment or, when its new keys do not fit, nothing (the map is left as it was
//! before the segment), so a pass always covers whole segments. Keyless records, control
//! batches and the batches of aborted transactions add nothing (an aborted record must not
//! hide the committed value before it). Compressed batches are decompressed with their codec.

use super::txn::CleanedTxns;
use super::{batches, CompactError};
use crate::codec::uncompressed;
use sluice_core::batch::records;
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
        let mut seg: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut new_bytes = 0usize;
        for (h, batch) in batches(segment)? {
            if h.is_control() {
                txns.on_control(&h, batch);
                continue;
            }
            if txns.on_batch(&h) {
                continue; // aborted
            }
            let plain;
            let body: &[u8] = if h.compression() == 0 {
                batch
            } else {
                plain = uncompressed(batch, &h)?;
                &plain
            };
            for r in records(body)? {
                let Some(key) = r.key else { continue };
                let offset = h.base_offset + i64::from(r.offset_delta);
                if let Some(o) = seg.get_mut(key) {
                    *o = offset;
                    continue;
                }
                if !self.latest.contains_key(key) {
                    new_bytes += key.len() + COMPACTION_KEY_MAP_ENTRY_OVERHEAD;
                }
                seg.insert(key.to_vec(), offset);
            }
            if self.bytes + new_bytes > self.budget {
                return Ok(false);
            }
        }
        self.latest.extend(seg);
        self.bytes += new_bytes;
        assert!(self.bytes <= self.budget, "key map over its budget");
        Ok(true)
    }
}
