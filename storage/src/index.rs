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
//! reported as corrupt so the caller rebuilds the index by scanning. Offsets and positions
//! enter the 32-bit fields only through [`relative_offset`] and [`position`], which refuse what
//! does not fit; a log rolls its segment before a batch would not fit ([`fits`],
//! `MAX_SEGMENT_RELATIVE_OFFSET`, `MAX_SEGMENT_POSITION`), so that refusal only meets segments
//! written by an older build (whose batches then get no index entry and are found by scanning).

use sluice_core::limits::{MAX_SEGMENT_POSITION, MAX_SEGMENT_RELATIVE_OFFSET};

/// An offset or a position the index's 32-bit fields cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error(
        "offset {offset} lies {} past its segment's base {base}: beyond the index's relative-offset \
         range 0..={MAX_SEGMENT_RELATIVE_OFFSET}",
        offset.saturating_sub(*base)
    )]
    RelativeOffset { base: i64, offset: i64 },
    #[error("byte position {0} lies beyond the index's position range 0..={MAX_SEGMENT_POSITION}")]
    Position(u64),
}

/// `offset` relative to the segment base `base`, as the index stores it.
pub fn relative_offset(base: i64, offset: i64) -> Result<u32, IndexError> {
    offset
        .checked_sub(base)
        .filter(|rel| (0..=MAX_SEGMENT_RELATIVE_OFFSET).contains(rel))
        .and_then(|rel| u32::try_from(rel).ok())
        .ok_or(IndexError::RelativeOffset { base, offset })
}

/// A byte position within a segment, as the index stores it.
pub fn position(pos: u64) -> Result<u32, IndexError> {
    u32::try_from(pos).ok().filter(|p| u64::from(*p) <= MAX_SEGMENT_POSITION).ok_or(IndexError::Position(pos))
}

/// Whether a batch ending at offset `last` and byte `end` can go into the segment based at
/// `base` (otherwise the segment must roll first).
pub fn fits(base: i64, last: i64, end: u64) -> Result<(), IndexError> {
    relative_offset(base, last)?;
    position(end)?;
    Ok(())
}

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

    /// Byte position to start scanning from to find the absolute `offset` in the segment based
    /// at `base` (an offset beyond the relative range starts from the last entry).
    pub fn position_for_offset(&self, base: i64, offset: i64) -> u64 {
        let rel = offset.saturating_sub(base).clamp(0, i64::from(u32::MAX));
        u64::from(self.position_for(u32::try_from(rel).unwrap_or(u32::MAX)))
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
            if u64::from(p) >= segment_size || o > last_rel || (p == 0) != (o == 0) {
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
        self.bytes_since += u64::from(len);
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
    fn conversions_refuse_what_the_fields_cannot_hold() {
        assert_eq!(relative_offset(100, 100), Ok(0));
        assert_eq!(relative_offset(100, 100 + i32::MAX as i64), Ok(i32::MAX as u32));
        let past = 101 + i32::MAX as i64;
        assert_eq!(relative_offset(100, past), Err(IndexError::RelativeOffset { base: 100, offset: past }));
        assert!(relative_offset(100, 99).is_err(), "below the base");
        assert!(relative_offset(i64::MIN, i64::MAX).is_err(), "no overflow in the subtraction");
        assert_eq!(position(u32::MAX as u64), Ok(u32::MAX));
        assert_eq!(position(1 << 32), Err(IndexError::Position(1 << 32)));
        assert!(fits(0, i32::MAX as i64, 4096).is_ok());
        assert!(fits(0, i32::MAX as i64 + 1, 4096).is_err());
        assert!(fits(0, 5, (1 << 32) + 1).is_err());
        let msg = relative_offset(0, 1 << 33).unwrap_err().to_string();
        assert!(msg.contains("8589934592 past its segment's base 0"), "{msg}");
    }

    #[test]
    fn lookup_by_absolute_offset_clamps() {
        let idx = build(100, 1000, 4096);
        let last = idx.offsets.last().unwrap().1 as u64;
        assert_eq!(idx.position_for_offset(1000, 1000 + (1 << 40)), last, "far past the range: last entry");
        assert_eq!(idx.position_for_offset(1000, 5), 0, "below the base: the start");
        assert_eq!(idx.position_for_offset(1000, 1000 + 333), idx.position_for(333) as u64);
    }

    #[test]
    fn time_lookup() {
        let idx = build(100, 5000, 4096);
        let rel = idx.offset_for_time(1050);
        assert!(rel <= 500);
        assert_eq!(idx.offset_for_time(0), 0);
    }
}
