//! Sparse offset and time indexes of a segment, in Kafka's on-disk formats.
//!
//! ```text
//! <base>.index      entries of 8 bytes:  relative offset u32 | position u32      (big-endian)
//! <base>.timeindex  entries of 12 bytes: timestamp i64      | relative offset u32
//! ```
//!
//! One offset entry is added each time `index.interval.bytes` of batches were appended since
//! the previous one; a time entry whenever the segment's max timestamp grew and the same
//! interval passed. Contract: [`SparseIndex::decode`] accepts a file only if its entries are
//! strictly increasing in offset and position and lie inside the segment; anything else is
//! reported as corrupt so the caller rebuilds the index by scanning.

/// The in-memory sparse indexes of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseIndex {
    /// (offset relative to the segment base, byte position)
    pub offsets: Vec<(u32, u32)>,
    /// (max timestamp so far, relative offset)
    pub times: Vec<(i64, u32)>,
}

impl SparseIndex {
    /// Position to start scanning from to find `rel` (the greatest entry at or below it).
    pub fn position_for(&self, rel: u32) -> u32 {
        let i = self.offsets.partition_point(|(o, _)| *o <= rel);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].1
        }
    }

    /// Relative offset to start scanning from for the first batch with timestamp ≥ `ts`.
    pub fn offset_for_time(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|(t, _)| *t < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].1
        }
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * 8);
        for (o, p) in &self.offsets {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * 12);
        for (t, o) in &self.times {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    /// Decodes both files, checking them against the segment's size and last offset.
    pub fn decode(offsets: &[u8], times: &[u8], segment_size: u64, last_rel: u32) -> Result<SparseIndex, String> {
        if !offsets.len().is_multiple_of(8) || !times.len().is_multiple_of(12) {
            return Err("index file length is not a whole number of entries".into());
        }
        let mut idx = SparseIndex::default();
        for e in offsets.chunks_exact(8) {
            let o = u32::from_be_bytes(e[0..4].try_into().expect("4"));
            let p = u32::from_be_bytes(e[4..8].try_into().expect("4"));
            if let Some((po, pp)) = idx.offsets.last() {
                if o <= *po || p <= *pp {
                    return Err("offset index entries are not increasing".into());
                }
            }
            if p as u64 >= segment_size || o > last_rel || (p == 0) != (o == 0) {
                return Err("offset index entry points past the end of the segment".into());
            }
            idx.offsets.push((o, p));
        }
        for e in times.chunks_exact(12) {
            let t = i64::from_be_bytes(e[0..8].try_into().expect("8"));
            let o = u32::from_be_bytes(e[8..12].try_into().expect("4"));
            if let Some((pt, po)) = idx.times.last() {
                if t < *pt || o < *po {
                    return Err("time index entries are not increasing".into());
                }
            }
            if o > last_rel {
                return Err("time index entry points past the end of the segment".into());
            }
            idx.times.push((t, o));
        }
        Ok(idx)
    }
}

/// Decides when to add index entries while batches are appended or scanned.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexCursor {
    bytes_since: u64,
    max_ts: i64,
}

impl IndexCursor {
    pub fn new() -> Self {
        IndexCursor { bytes_since: 0, max_ts: i64::MIN }
    }

    /// Records a batch at `pos` (relative offset `rel`, max timestamp `ts`, `len` bytes).
    pub fn add(&mut self, idx: &mut SparseIndex, interval: u64, rel: u32, pos: u32, ts: i64, len: u32) {
        if self.bytes_since >= interval {
            if idx.offsets.last().is_none_or(|(o, p)| rel > *o && pos > *p) {
                idx.offsets.push((rel, pos));
            }
            if ts > self.max_ts && idx.times.last().is_none_or(|(t, o)| ts > *t && rel >= *o) {
                idx.times.push((ts, rel));
            }
            self.bytes_since = 0;
        }
        self.max_ts = self.max_ts.max(ts);
        self.bytes_since += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(n: u32, batch: u32, interval: u64) -> SparseIndex {
        let mut idx = SparseIndex::default();
        let mut cur = IndexCursor::new();
        for i in 0..n {
            cur.add(&mut idx, interval, i * 10, i * batch, 1000 + i as i64, batch);
        }
        idx
    }

    #[test]
    fn lookup_gives_the_greatest_entry_below() {
        let idx = build(100, 1000, 4096);
        assert!(!idx.offsets.is_empty());
        for rel in [0u32, 5, 10, 333, 999] {
            let pos = idx.position_for(rel);
            // The entry found never lies past the batch holding `rel` (batch i holds 10i..10i+9).
            assert!(pos <= (rel / 10) * 1000, "rel {rel} pos {pos}");
            // And is within one index interval plus one batch of it.
            assert!((rel / 10) * 1000 - pos <= 4096 + 1000, "rel {rel} pos {pos}");
        }
    }

    #[test]
    fn files_round_trip_and_corruption_is_refused() {
        let idx = build(50, 3000, 4096);
        let back = SparseIndex::decode(&idx.encode_offsets(), &idx.encode_times(), 50 * 3000, 49 * 10 + 9).unwrap();
        assert_eq!(back, idx);
        let mut bad = idx.encode_offsets();
        bad.truncate(bad.len() - 3);
        assert!(SparseIndex::decode(&bad, &[], 150_000, 499).is_err());
        let mut swapped = idx.encode_offsets();
        let n = swapped.len();
        swapped.copy_within(0..8, n - 8);
        assert!(SparseIndex::decode(&swapped, &[], 150_000, 499).is_err());
        // Entries beyond the segment (e.g. an index left from a longer segment) are refused.
        assert!(SparseIndex::decode(&idx.encode_offsets(), &[], 3000, 499).is_err());
    }

    #[test]
    fn time_lookup() {
        let idx = build(100, 5000, 4096);
        let rel = idx.offset_for_time(1050);
        assert!(rel <= 500);
        assert_eq!(idx.offset_for_time(0), 0);
    }
}
