//! Whether a compacted log should be cleaned now, and which offsets a pass covers (Kafka's
//! `LogCleanerManager.cleanableOffsets` and `grabFilthiestCompactedLog`), without I/O.
//!
//! Contract: [`plan`] takes the sealed segments only (the active segment is never cleaned),
//! the first dirty offset (where the last pass ended, or the log start), the time and the
//! topic's settings, and answers the range `[first_dirty, clean_upto)` to clean or `None`.
//! `clean_upto` is always a segment boundary at or before the first segment still inside
//! `min.compaction.lag.ms` and before the first unstable offset (an open transaction). A log is
//! cleaned when its dirty ratio (dirty bytes / all bytes of the sealed segments) reaches
//! `min.cleanable.dirty.ratio`, or when a dirty record is older than `max.compaction.lag.ms`.

/// The settings of one compacted topic that decide cleaning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionConfig {
    /// `min.cleanable.dirty.ratio` (0.0 to 1.0).
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record older than this makes its log eligible whatever its ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long tombstones and emptied transactions' markers stay after
    /// the pass that stamps their batch's delete horizon.
    pub delete_retention_ms: i64,
    /// `segment.index.bytes`: a segment merged from several stays within it (each index).
    pub max_index_bytes: u64,
}

impl Default for CompactionConfig {
    /// Kafka's topic defaults, as `sluice_core::topic_config` defines them.
    fn default() -> Self {
        use sluice_core::topic_config::{default_i64, lookup};
        let ratio = lookup("min.cleanable.dirty.ratio").and_then(|d| d.default.parse().ok()).unwrap_or(0.5);
        CompactionConfig {
            min_cleanable_dirty_ratio: ratio,
            min_compaction_lag_ms: default_i64("min.compaction.lag.ms"),
            max_compaction_lag_ms: default_i64("max.compaction.lag.ms"),
            delete_retention_ms: default_i64("delete.retention.ms"),
            max_index_bytes: u64::try_from(default_i64("segment.index.bytes")).unwrap_or(u64::MAX),
        }
    }
}

/// What [`plan`] needs to know of one sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Base offset (the segment's name).
    pub base: i64,
    /// Bytes in the file.
    pub bytes: u64,
    /// The smallest batch max-timestamp in it (when its oldest record was written).
    pub first_ts: i64,
    /// The largest batch max-timestamp in it.
    pub max_ts: i64,
}

/// One pass: clean the records in `[first_dirty, clean_upto)`, using the keys of that range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanPlan {
    pub first_dirty: i64,
    pub clean_upto: i64,
    pub dirty_ratio: f64,
    /// Chosen because of `max.compaction.lag.ms`, not the ratio.
    pub forced: bool,
}

/// The pass to run now, if any. `sealed` is sorted by base offset; `sealed_end` is the offset
/// after the last sealed segment (the active segment's base); `first_unstable` the log's first
/// offset of an open transaction, if any.
pub fn plan(
    sealed: &[SegmentInfo],
    sealed_end: i64,
    first_dirty: i64,
    first_unstable: Option<i64>,
    now_ms: i64,
    cfg: &CompactionConfig,
) -> Option<CleanPlan> {
    let lag_bound = now_ms.saturating_sub(cfg.min_compaction_lag_ms.max(0));
    let mut upto = first_unstable.map_or(sealed_end, |u| u.min(sealed_end));
    // The first dirty segment whose newest record is still inside min.compaction.lag.ms stops the pass.
    let dirty = |s: &&SegmentInfo| end_of(sealed, sealed_end, s) > first_dirty;
    if let Some(young) = sealed.iter().filter(dirty).find(|s| s.max_ts > lag_bound) {
        upto = upto.min(young.base.max(first_dirty));
    }
    // A pass ends at a segment boundary: the start of the segment holding `upto` (unless `upto`
    // is the end of the sealed part).
    if upto < sealed_end {
        upto = sealed.iter().rev().map(|s| s.base).find(|b| *b <= upto).unwrap_or(first_dirty).max(first_dirty);
    }
    let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
    for s in sealed {
        let end = end_of(sealed, sealed_end, s);
        if end <= first_dirty {
            clean_bytes += s.bytes;
        } else if end <= upto {
            dirty_bytes += s.bytes;
        }
    }
    if dirty_bytes == 0 || upto <= first_dirty {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // a ratio of byte counts
    let ratio = dirty_bytes as f64 / (clean_bytes + dirty_bytes) as f64;
    let max_lag_bound = now_ms.saturating_sub(cfg.max_compaction_lag_ms.max(0));
    let forced = cfg.max_compaction_lag_ms < i64::MAX
        && sealed.iter().filter(dirty).any(|s| s.base < upto && s.first_ts <= max_lag_bound);
    (ratio >= cfg.min_cleanable_dirty_ratio || forced).then_some(CleanPlan {
        first_dirty,
        clean_upto: upto,
        dirty_ratio: ratio,
        forced,
    })
}

/// The offset after segment `s` (the next segment's base, or `sealed_end` for the last).
fn end_of(sealed: &[SegmentInfo], sealed_end: i64, s: &SegmentInfo) -> i64 {
    sealed.iter().map(|n| n.base).find(|b| *b > s.base).unwrap_or(sealed_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, bytes: u64, ts: i64) -> SegmentInfo {
        SegmentInfo { base, bytes, first_ts: ts, max_ts: ts }
    }

    fn cfg(ratio: f64) -> CompactionConfig {
        CompactionConfig {
            min_cleanable_dirty_ratio: ratio,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 1000,
            max_index_bytes: 1 << 20,
        }
    }

    #[test]
    fn nothing_sealed_nothing_to_clean() {
        assert_eq!(plan(&[], 0, 0, None, 10_000, &cfg(0.0)), None);
    }

    #[test]
    fn a_fresh_log_is_all_dirty_and_cleaned_to_the_active_segment() {
        let s = [seg(0, 100, 1), seg(10, 100, 2)];
        let p = plan(&s, 20, 0, None, 10_000, &cfg(0.5)).unwrap();
        assert_eq!((p.first_dirty, p.clean_upto, p.dirty_ratio, p.forced), (0, 20, 1.0, false));
    }

    #[test]
    fn the_dirty_ratio_decides() {
        // Cleaned up to 10: 300 clean bytes, 100 dirty: ratio 0.25.
        let s = [seg(0, 300, 1), seg(10, 100, 2)];
        assert_eq!(plan(&s, 20, 10, None, 10_000, &cfg(0.5)), None);
        let p = plan(&s, 20, 10, None, 10_000, &cfg(0.25)).unwrap();
        assert_eq!((p.first_dirty, p.clean_upto), (10, 20));
    }

    #[test]
    fn min_compaction_lag_keeps_young_segments_out() {
        let s = [seg(0, 100, 1_000), seg(10, 100, 9_500), seg(20, 100, 9_900)];
        let mut c = cfg(0.0);
        c.min_compaction_lag_ms = 1_000; // records after 9_000 are too young
        let p = plan(&s, 30, 0, None, 10_000, &c).unwrap();
        assert_eq!(p.clean_upto, 10);
        c.min_compaction_lag_ms = 20_000;
        assert_eq!(plan(&s, 30, 0, None, 10_000, &c), None);
    }

    #[test]
    fn max_compaction_lag_forces_a_pass_below_the_ratio() {
        let s = [seg(0, 1_000, 1), seg(10, 10, 5_000)];
        let mut c = cfg(0.9);
        assert_eq!(plan(&s, 20, 10, None, 10_000, &c), None);
        c.max_compaction_lag_ms = 4_000; // the dirty segment's oldest record (5_000) is older than 6_000
        let p = plan(&s, 20, 10, None, 10_000, &c).unwrap();
        assert!(p.forced);
        assert_eq!((p.first_dirty, p.clean_upto), (10, 20));
    }

    #[test]
    fn an_open_transaction_bounds_the_pass_at_a_segment_boundary() {
        let s = [seg(0, 100, 1), seg(10, 100, 2), seg(20, 100, 3)];
        let p = plan(&s, 30, 0, Some(15), 10_000, &cfg(0.0)).unwrap();
        assert_eq!(p.clean_upto, 10);
        assert_eq!(plan(&s, 30, 0, Some(5), 10_000, &cfg(0.0)), None);
    }
}
