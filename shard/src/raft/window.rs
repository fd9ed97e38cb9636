//! The index ↔ offset window of one partition: for each recent batch, its Raft index, term
//! (the batch's `partitionLeaderEpoch`), base and last offsets and file position.
//!
//! Contract:
//! - One Raft entry is one Kafka batch. Indexes are contiguous: the window holds indexes
//!   `floor.index + 1 ..= last_index()`, and each batch starts at the offset after the previous
//!   one's last (`floor.next_offset` for the first), so every replica with the same prefix of
//!   entries assigns the same offsets.
//! - Terms never decrease along the window.
//! - [`Floor`] is the entry just below the window (or the snapshot point): its index, term and
//!   the offset after its batch. Trimming the front moves the floor up; truncating the back
//!   never goes below it (a floor is always committed).
//! - The window is rebuilt at open by scanning the log's batch headers from a persisted floor
//!   ([`Window::rebuild`]).

use super::types::{RaftIndex, Term};
use sluice_core::Offset;
use std::collections::VecDeque;

/// One batch as the window knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub index: RaftIndex,
    pub term: Term,
    pub base: Offset,
    pub last: Offset,
    /// Where the batch starts in its log (a file position for the real log, an ordinal for
    /// the in-memory one).
    pub pos: u64,
}

impl BatchMeta {
    /// The offset after this batch.
    pub fn next_offset(&self) -> Offset {
        Offset(self.last.0 + 1)
    }
}

/// The entry just below the window: the persisted anchor of index ↔ offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Floor {
    pub index: RaftIndex,
    pub term: Term,
    pub next_offset: Offset,
}

/// Recent batches of one partition, by index.
#[derive(Debug, Clone)]
pub struct Window {
    floor: Floor,
    batches: VecDeque<BatchMeta>,
}

impl Window {
    pub fn new(floor: Floor) -> Window {
        Window { floor, batches: VecDeque::new() }
    }

    /// The window over the batches found after `floor` (their headers, in log order). Each
    /// batch gets the next index; its term is its epoch. A batch that does not start where the
    /// previous ended, or whose term goes back, ends the scan (the log is damaged past it):
    /// returns the window so far and the offset where the scan stopped.
    pub fn rebuild(
        floor: Floor,
        found: impl IntoIterator<Item = (Term, Offset, Offset, u64)>,
    ) -> (Window, Option<Offset>) {
        let mut w = Window::new(floor);
        for (term, base, last, pos) in found {
            if base != w.next_offset() || last < base || term < w.last_term() {
                return (w, Some(base));
            }
            let index = w.last_index().next();
            w.push(BatchMeta { index, term, base, last, pos });
        }
        (w, None)
    }

    pub fn floor(&self) -> Floor {
        self.floor
    }

    pub fn first_index(&self) -> RaftIndex {
        self.floor.index.next()
    }

    pub fn last_index(&self) -> RaftIndex {
        self.batches.back().map_or(self.floor.index, |b| b.index)
    }

    pub fn last_term(&self) -> Term {
        self.batches.back().map_or(self.floor.term, |b| b.term)
    }

    /// The offset the next appended batch starts at.
    pub fn next_offset(&self) -> Offset {
        self.batches.back().map_or(self.floor.next_offset, BatchMeta::next_offset)
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The batch at `index`, when it is in the window.
    pub fn get(&self, index: RaftIndex) -> Option<&BatchMeta> {
        let i = index.0.checked_sub(self.first_index().0)?;
        self.batches.get(usize::try_from(i).ok()?)
    }

    /// The term of `index`: the floor's or a batch's; None below the floor or past the end.
    pub fn term(&self, index: RaftIndex) -> Option<Term> {
        if index == self.floor.index {
            return Some(self.floor.term);
        }
        self.get(index).map(|b| b.term)
    }

    /// Adds the next batch. Panics when it does not follow the last one.
    pub fn push(&mut self, meta: BatchMeta) {
        assert_eq!(meta.index, self.last_index().next(), "indexes are contiguous");
        assert_eq!(meta.base, self.next_offset(), "a batch starts after the previous one");
        assert!(meta.last >= meta.base, "a batch holds at least one record");
        assert!(meta.term >= self.last_term(), "terms never decrease along the log");
        self.batches.push_back(meta);
    }

    /// Drops `from` and every later batch; returns the offset the log must be truncated to
    /// (the base of `from`). Panics when `from` is at or below the floor.
    pub fn truncate_from(&mut self, from: RaftIndex) -> Offset {
        assert!(from > self.floor.index, "never truncate a committed floor");
        let keep = usize::try_from(from.0 - self.first_index().0).expect("a window length fits usize");
        let to = self.get(from).map_or(self.next_offset(), |b| b.base);
        self.batches.truncate(keep);
        assert_eq!(self.next_offset(), to);
        to
    }

    /// Moves the floor up to `upto` (dropping batches at or below it). The caller passes an
    /// index at or below the commit index.
    pub fn trim_to(&mut self, upto: RaftIndex) {
        while let Some(front) = self.batches.front() {
            if front.index > upto {
                break;
            }
            self.floor = Floor { index: front.index, term: front.term, next_offset: front.next_offset() };
            self.batches.pop_front();
        }
    }

    /// Replaces everything with an empty window over `floor` (a snapshot was installed).
    pub fn reset(&mut self, floor: Floor) {
        self.batches.clear();
        self.floor = floor;
    }

    /// The index of the batch holding `offset`, if it is in the window.
    pub fn index_of_offset(&self, offset: Offset) -> Option<RaftIndex> {
        let i = self.batches.partition_point(|b| b.last < offset);
        self.batches.get(i).filter(|b| b.base <= offset).map(|b| b.index)
    }

    /// The high watermark when `commit` is the commit index: the offset after its batch.
    pub fn high_watermark(&self, commit: RaftIndex) -> Option<Offset> {
        if commit == self.floor.index {
            return Some(self.floor.next_offset);
        }
        self.get(commit).map(BatchMeta::next_offset)
    }

    /// The batches from `from` on, in order.
    pub fn iter_from(&self, from: RaftIndex) -> impl Iterator<Item = &BatchMeta> {
        let skip = from.0.saturating_sub(self.first_index().0);
        self.batches.iter().skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(w: &Window, term: u64, records: i64) -> BatchMeta {
        let base = w.next_offset();
        BatchMeta { index: w.last_index().next(), term: Term(term), base, last: Offset(base.0 + records - 1), pos: 0 }
    }

    fn build(floor: Floor, batches: &[(u64, i64)]) -> Window {
        let mut w = Window::new(floor);
        for &(t, n) in batches {
            let m = meta(&w, t, n);
            w.push(m);
        }
        w
    }

    #[test]
    fn offsets_map_to_indexes_and_back() {
        let w =
            build(Floor { index: RaftIndex(10), term: Term(2), next_offset: Offset(100) }, &[(2, 5), (3, 1), (3, 10)]);
        assert_eq!(w.first_index(), RaftIndex(11));
        assert_eq!(w.last_index(), RaftIndex(13));
        assert_eq!(w.index_of_offset(Offset(99)), None);
        assert_eq!(w.index_of_offset(Offset(100)), Some(RaftIndex(11)));
        assert_eq!(w.index_of_offset(Offset(104)), Some(RaftIndex(11)));
        assert_eq!(w.index_of_offset(Offset(105)), Some(RaftIndex(12)));
        assert_eq!(w.index_of_offset(Offset(115)), Some(RaftIndex(13)));
        assert_eq!(w.index_of_offset(Offset(116)), None);
        assert_eq!(w.high_watermark(RaftIndex(10)), Some(Offset(100)));
        assert_eq!(w.high_watermark(RaftIndex(12)), Some(Offset(106)));
        assert_eq!(w.high_watermark(RaftIndex(9)), None);
        assert_eq!(w.term(RaftIndex(10)), Some(Term(2)));
        assert_eq!(w.term(RaftIndex(12)), Some(Term(3)));
    }

    #[test]
    fn truncation_returns_the_offset_to_cut_at() {
        let mut w = build(Floor::default(), &[(1, 2), (1, 3), (2, 4)]);
        assert_eq!(w.truncate_from(RaftIndex(2)), Offset(2));
        assert_eq!(w.last_index(), RaftIndex(1));
        assert_eq!(w.next_offset(), Offset(2));
        // Truncating past the end is a no-op.
        assert_eq!(w.truncate_from(RaftIndex(5)), Offset(2));
    }

    #[test]
    #[should_panic(expected = "never truncate a committed floor")]
    fn truncation_below_the_floor_panics() {
        let mut w = build(Floor { index: RaftIndex(4), term: Term(1), next_offset: Offset(9) }, &[(1, 1)]);
        w.truncate_from(RaftIndex(4));
    }

    #[test]
    fn rebuild_stops_at_a_gap_or_a_term_going_back() {
        let floor = Floor { index: RaftIndex(3), term: Term(1), next_offset: Offset(10) };
        let (w, stop) =
            Window::rebuild(floor, [(Term(1), Offset(10), Offset(11), 0), (Term(2), Offset(12), Offset(12), 1)]);
        assert_eq!((w.last_index(), stop), (RaftIndex(5), None));
        let (w, stop) =
            Window::rebuild(floor, [(Term(1), Offset(10), Offset(11), 0), (Term(2), Offset(13), Offset(13), 1)]);
        assert_eq!((w.last_index(), stop), (RaftIndex(4), Some(Offset(13))));
        let (w, stop) =
            Window::rebuild(floor, [(Term(2), Offset(10), Offset(11), 0), (Term(1), Offset(12), Offset(12), 1)]);
        assert_eq!((w.last_index(), stop), (RaftIndex(4), Some(Offset(12))));
    }

    proptest! {
        /// Trimming and truncating keep indexes and offsets contiguous, and a rebuild from the
        /// floor over the remaining batches gives the same window.
        #[test]
        fn trim_truncate_rebuild(sizes in proptest::collection::vec((0u64..3, 1i64..20), 1..60),
                                 trim in 0u64..70, cut in 0u64..70) {
            let mut w = Window::new(Floor::default());
            let mut term = 1;
            for (bump, n) in sizes {
                term += bump;
                let m = meta(&w, term, n);
                w.push(m);
            }
            w.trim_to(RaftIndex(trim));
            let from = RaftIndex(cut.max(w.floor().index.0 + 1));
            let to = w.truncate_from(from);
            prop_assert_eq!(to, w.next_offset());
            let found: Vec<_> = w.iter_from(w.first_index()).map(|b| (b.term, b.base, b.last, b.pos)).collect();
            let (r, stop) = Window::rebuild(w.floor(), found);
            prop_assert_eq!(stop, None);
            prop_assert_eq!(r.last_index(), w.last_index());
            prop_assert_eq!(r.next_offset(), w.next_offset());
            for b in w.iter_from(w.first_index()) {
                prop_assert_eq!(r.index_of_offset(b.base), Some(b.index));
                prop_assert_eq!(r.index_of_offset(b.last), Some(b.index));
            }
        }
    }
}
