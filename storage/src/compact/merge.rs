//! Which adjacent cleaned segments a compaction pass rewrites into one (Kafka's
//! `LogCleaner.groupSegmentsBySize`), without I/O.
//!
//! Contract: [`Grouper`] takes the segments of a pass's cleaned range one at a time, in offset
//! order, each with the sizes of its cleaned `.log`, `.index` and `.timeindex`, and closes
//! groups of adjacent segments whose summed sizes stay within `segment.bytes` (the log) and
//! `segment.index.bytes` (each index), and whose offsets `[first base, last next)` fit the
//! indexes' 32-bit relative offsets. A segment that cannot join the open group closes it and
//! opens the next one; a segment the pass does not rewrite (too large to read whole) closes
//! the open group and joins none. Every segment belongs to at most one group and a group's
//! members are adjacent in the log. Sizes are the cleaned ones (Kafka groups by the sizes
//! before cleaning, so a segment cleaned in a pass merges only at the next one; here it
//! merges in the same pass).

use sluice_core::limits::{MAX_SEGMENT_POSITION, MAX_SEGMENT_RELATIVE_OFFSET};

/// The limits of one merged segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeLimits {
    /// `segment.bytes`: the merged `.log` stays within it.
    pub max_log_bytes: u64,
    /// `segment.index.bytes`: the merged `.index` and `.timeindex` each stay within it.
    pub max_index_bytes: u64,
}

/// What the grouping knows of one cleaned segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub base: i64,
    /// The offset after the segment (the next segment's base).
    pub next: i64,
    pub log_bytes: u64,
    pub index_bytes: u64,
    pub timeindex_bytes: u64,
}

/// The group being formed, each member with what the caller keeps of it (`T`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouper<T> {
    limits: MergeLimits,
    open: Vec<(Piece, T)>,
}

/// A closed group: its members in offset order (possibly a single segment).
pub type Group<T> = Vec<(Piece, T)>;

impl<T> Grouper<T> {
    pub fn new(limits: MergeLimits) -> Grouper<T> {
        Grouper { limits, open: Vec::new() }
    }

    /// Whether `p` can join the open group (false when none is open).
    fn fits(&self, p: &Piece) -> bool {
        let (Some((first, _)), Some((last, _))) = (self.open.first(), self.open.last()) else { return false };
        let sum = |f: fn(&Piece) -> u64| self.open.iter().map(|(x, _)| f(x)).fold(0u64, u64::saturating_add);
        let log = sum(|x| x.log_bytes).saturating_add(p.log_bytes);
        let index = sum(|x| x.index_bytes).saturating_add(p.index_bytes);
        let time = sum(|x| x.timeindex_bytes).saturating_add(p.timeindex_bytes);
        last.next == p.base
            && log <= self.limits.max_log_bytes.min(MAX_SEGMENT_POSITION)
            && index <= self.limits.max_index_bytes
            && time <= self.limits.max_index_bytes
            && p.next.saturating_sub(1).saturating_sub(first.base) <= MAX_SEGMENT_RELATIVE_OFFSET
    }

    /// Adds the next segment; returns the group it closed, if it closed one.
    #[must_use]
    pub fn push(&mut self, p: Piece, item: T) -> Option<Group<T>> {
        if self.open.is_empty() || self.fits(&p) {
            self.open.push((p, item));
            return None;
        }
        Some(std::mem::replace(&mut self.open, vec![(p, item)]))
    }

    /// A segment that joins no group (the pass leaves it as it is): closes the open group.
    #[must_use]
    pub fn skip(&mut self) -> Option<Group<T>> {
        self.close()
    }

    /// Closes the open group, if there is one.
    #[must_use]
    pub fn close(&mut self) -> Option<Group<T>> {
        (!self.open.is_empty()).then(|| std::mem::take(&mut self.open))
    }
}

/// The groups of `pieces` (in offset order, all rewritten), as [`Grouper`] forms them.
pub fn group_by_size(pieces: &[Piece], limits: MergeLimits) -> Vec<Vec<Piece>> {
    let mut g = Grouper::new(limits);
    let mut out: Vec<Group<()>> = pieces.iter().filter_map(|p| g.push(*p, ())).collect();
    out.extend(g.close());
    out.into_iter().map(|grp| grp.into_iter().map(|(p, ())| p).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: MergeLimits = MergeLimits { max_log_bytes: 1000, max_index_bytes: 80 };

    fn piece(base: i64, next: i64, log: u64, index: u64) -> Piece {
        Piece { base, next, log_bytes: log, index_bytes: index, timeindex_bytes: 0 }
    }

    fn bases(groups: &[Vec<Piece>]) -> Vec<Vec<i64>> {
        groups.iter().map(|g| g.iter().map(|p| p.base).collect()).collect()
    }

    #[test]
    fn small_neighbours_merge_up_to_the_segment_size() {
        let ps: Vec<Piece> = (0..10).map(|i| piece(i * 10, i * 10 + 10, 300, 8)).collect();
        // 300 × 3 = 900 fits 1000; a fourth would make 1200.
        assert_eq!(
            bases(&group_by_size(&ps, LIMITS)),
            vec![vec![0, 10, 20], vec![30, 40, 50], vec![60, 70, 80], vec![90]]
        );
    }

    #[test]
    fn exactly_the_limit_fits_and_one_byte_more_does_not() {
        let ps = [piece(0, 5, 600, 0), piece(5, 9, 400, 0), piece(9, 12, 1, 0)];
        assert_eq!(bases(&group_by_size(&ps, LIMITS)), vec![vec![0, 5], vec![9]]);
    }

    #[test]
    fn a_large_segment_stays_alone_and_empty_ones_merge() {
        let ps = [piece(0, 5, 0, 0), piece(5, 9, 0, 0), piece(9, 12, 1000, 8), piece(12, 20, 1, 0)];
        assert_eq!(bases(&group_by_size(&ps, LIMITS)), vec![vec![0, 5, 9], vec![12]]);
        let ps = [piece(0, 5, 10, 0), piece(5, 9, 1000, 8), piece(9, 12, 10, 0)];
        assert_eq!(bases(&group_by_size(&ps, LIMITS)), vec![vec![0], vec![5], vec![9]]);
    }

    #[test]
    fn the_index_sizes_bound_a_group() {
        // Offset index: 48 + 32 = 80 fits, + 8 does not.
        let ps = [piece(0, 1, 1, 48), piece(1, 2, 1, 32), piece(2, 3, 1, 8)];
        assert_eq!(bases(&group_by_size(&ps, LIMITS)), vec![vec![0, 1], vec![2]]);
        // Time index alone (12-byte entries) over the limit.
        let p = |b: i64, t: u64| Piece { base: b, next: b + 1, log_bytes: 1, index_bytes: 0, timeindex_bytes: t };
        assert_eq!(bases(&group_by_size(&[p(0, 60), p(1, 24), p(2, 12)], LIMITS)), vec![vec![0], vec![1, 2]]);
    }

    #[test]
    fn a_group_never_spans_more_offsets_than_the_index_holds() {
        let big = MAX_SEGMENT_RELATIVE_OFFSET;
        let ps = [piece(0, big, 1, 0), piece(big, big + 1, 1, 0), piece(big + 1, big + 2, 1, 0)];
        // [0, big + 1) spans relative offsets up to big: fits; one more does not.
        assert_eq!(bases(&group_by_size(&ps, LIMITS)), vec![vec![0, big], vec![big + 1]]);
    }

    #[test]
    fn a_skipped_segment_or_a_gap_separates_groups() {
        let mut g = Grouper::new(LIMITS);
        let items = |grp: Option<Group<char>>| grp.map(|v| v.into_iter().map(|(_, c)| c).collect::<String>());
        assert_eq!(items(g.push(piece(0, 5, 1, 0), 'a')), None);
        assert_eq!(items(g.push(piece(5, 9, 1, 0), 'b')), None);
        assert_eq!(items(g.skip()).as_deref(), Some("ab"));
        assert_eq!(items(g.skip()), None, "nothing open");
        assert_eq!(items(g.push(piece(20, 30, 1, 0), 'c')), None);
        // Not adjacent to 20..30: a new group.
        assert_eq!(items(g.push(piece(40, 50, 1, 0), 'd')).as_deref(), Some("c"));
        assert_eq!(items(g.close()).as_deref(), Some("d"));
        assert_eq!(items(g.close()), None);
    }

    #[test]
    fn every_segment_lands_in_exactly_one_group_in_order() {
        // A deterministic spread of sizes.
        let mut x: u64 = 0x9e37_79b9;
        let ps: Vec<Piece> = (0..200i64)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                piece(i * 3, i * 3 + 3, x % 700, (x >> 20) % 50)
            })
            .collect();
        let groups = group_by_size(&ps, LIMITS);
        let flat: Vec<Piece> = groups.iter().flatten().copied().collect();
        assert_eq!(flat, ps);
        for g in &groups {
            assert!(g.len() == 1 || g.iter().map(|p| p.log_bytes).sum::<u64>() <= 1000);
            assert!(g.len() == 1 || g.iter().map(|p| p.index_bytes).sum::<u64>() <= 80);
        }
        // Greedy: no two neighbouring groups could have been one.
        for w in groups.windows(2) {
            let both: u64 = w[0].iter().chain(&w[1][..1]).map(|p| p.log_bytes).sum();
            let idx: u64 = w[0].iter().chain(&w[1][..1]).map(|p| p.index_bytes).sum();
            let t: u64 = w[0].iter().chain(&w[1][..1]).map(|p| p.timeindex_bytes).sum();
            assert!(both > 1000 || idx > 80 || t > 80, "{:?} could take {:?}", w[0], w[1][0]);
        }
    }
}
