//! The index ↔ offset window of one partition: for each recent batch, its Raft index, term
//! (the batch's `partitionLeaderEpoch`), base and last offsets and file position.
//!
//! Contract:
//! - One Raft entry is one Kafka batch. Indexes are contiguous: the window holds indexes
//!   `floor.index + 1 ..= last_index()`, and each batch starts at the offset after the previous
//!   one's last (`floor.next_offset` for the first), so every replica with the same prefix of
//!   entries assigns the same offsets. One exception: a data batch of [`Term::DIRECT`] (written
//!   on the direct path before a single-replica log became a Raft group's) may start further
//!   on, after offsets compaction removed then ([`Window::follows`]); every replica stores it
//!   at that base (a copy's log covers the hole with a hole batch the window does not list,
//!   `store.rs`), and a truncation of it cuts the log where the batch before it ended.
//! - A batch may take no offset (a Raft control batch, `control.rs`: last = base - 1); it
//!   shares its base offset with the batches after it up to the next one taking offsets. A
//!   batch is therefore named in the log by its base offset and its rank among the batches
//!   starting there ([`Window::rank`]): a truncation cuts at (offset, rank), a read asks for
//!   (offset, rank).
//! - The floor is never a batch that takes no offset (a trim stops before one): so every batch
//!   starting at `floor.next_offset` or later is in the window, and a scan of the log from
//!   `floor.next_offset` finds exactly the window's batches.
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

    /// The batch takes no offset (a Raft control batch: last = base - 1).
    pub fn takes_no_offset(&self) -> bool {
        self.last.0 < self.base.0
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
            if !w.follows(term, base, last) || last.0 < base.0 - 1 || term < w.last_term() {
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

    /// Whether a batch of `term` over `base..=last` may come next: it starts at the next offset,
    /// or it is a direct-path data batch after a hole (module docs).
    pub fn follows(&self, term: Term, base: Offset, last: Offset) -> bool {
        let next = self.next_offset();
        base == next || (base > next && term == Term::DIRECT && last >= base)
    }

    /// Adds the next batch. Panics when it does not follow the last one.
    pub fn push(&mut self, meta: BatchMeta) {
        assert_eq!(meta.index, self.last_index().next(), "indexes are contiguous");
        assert!(
            self.follows(meta.term, meta.base, meta.last),
            "a batch starts after the previous one ({:?} after {:?})",
            meta,
            self.next_offset()
        );
        assert!(meta.last.0 >= meta.base.0 - 1, "a batch takes at least no offset");
        assert!(meta.term >= self.last_term(), "terms never decrease along the log");
        self.batches.push_back(meta);
    }

    /// Drops `from` and every later batch; returns where the log must be cut: where the batches
    /// kept end and the batches taking no offset there that stay (the base of `from` and its
    /// rank there, but before a hole: module docs). Panics when `from` is at or below the floor.
    pub fn truncate_from(&mut self, from: RaftIndex) -> (Offset, u32) {
        assert!(from > self.floor.index, "never truncate a committed floor");
        let keep = usize::try_from(from.0 - self.first_index().0).expect("a window length fits usize");
        let named = self.get(from).map(|b| (b.base, self.rank(b.index)));
        self.batches.truncate(keep);
        let to = (self.next_offset(), self.rank_at_end());
        assert!(named.is_none_or(|(base, rank)| base > to.0 || (base, rank) == to), "a cut where the batches kept end");
        to
    }

    /// The rank of the batch at `index` among the batches starting at its base offset (the
    /// number before it there, each taking no offset); 0 outside the window.
    pub fn rank(&self, index: RaftIndex) -> u32 {
        let Some(b) = self.get(index) else { return 0 };
        let mut n = 0u32;
        while let Some(prev) = index.0.checked_sub(u64::from(n) + 1).and_then(|i| self.get(RaftIndex(i))) {
            if prev.base != b.base {
                break;
            }
            n += 1;
        }
        n
    }

    /// The rank the next appended batch will have: the batches at the log end taking no offset.
    pub fn rank_at_end(&self) -> u32 {
        let n = self.batches.iter().rev().take_while(|m| m.takes_no_offset()).count();
        u32::try_from(n).expect("a window's length fits u32")
    }

    /// Moves the floor up to the last batch at or below `upto` that takes offsets (dropping
    /// the batches up to it; a floor never takes no offset, module docs). The caller passes an
    /// index at or below the commit index.
    pub fn trim_to(&mut self, upto: RaftIndex) {
        let target = self.batches.iter().take_while(|b| b.index <= upto).filter(|b| !b.takes_no_offset()).last();
        let Some(target) = target.map(|b| b.index) else { return };
        while let Some(front) = self.batches.front() {
            if front.index > target {
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

    /// The next batch of `records` records (0: a control batch taking no offset).
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
        assert_eq!(w.truncate_from(RaftIndex(2)), (Offset(2), 0));
        assert_eq!(w.last_index(), RaftIndex(1));
        assert_eq!(w.next_offset(), Offset(2));
        // Truncating past the end is a no-op.
        assert_eq!(w.truncate_from(RaftIndex(5)), (Offset(2), 0));
    }

    #[test]
    fn a_direct_batch_may_follow_a_hole_and_a_cut_there_ends_where_the_batch_before_ended() {
        let direct = |index: u64, base: i64, last: i64| BatchMeta {
            index: RaftIndex(index),
            term: Term::DIRECT,
            base: Offset(base),
            last: Offset(last),
            pos: 0,
        };
        let mut w = Window::new(Floor::default());
        w.push(direct(1, 40, 41));
        w.push(direct(2, 50, 50));
        assert_eq!((w.next_offset(), w.index_of_offset(Offset(45))), (Offset(51), None));
        // A group's own term never jumps.
        assert!(!w.follows(Term(2), Offset(60), Offset(60)));
        assert!(w.follows(Term(2), Offset(51), Offset(50)));
        // Rebuilt from the headers alike; a jump of another term stops the rebuild.
        let (r, stop) = Window::rebuild(
            Floor::default(),
            [
                (Term::DIRECT, Offset(40), Offset(41), 0),
                (Term::DIRECT, Offset(50), Offset(50), 1),
                (Term(2), Offset(52), Offset(52), 2),
            ],
        );
        assert_eq!((r.last_index(), stop), (RaftIndex(2), Some(Offset(52))));
        assert_eq!(w.truncate_from(RaftIndex(2)), (Offset(42), 0), "the hole batch before it goes too");
        assert_eq!(w.truncate_from(RaftIndex(1)), (Offset(0), 0));
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

    #[test]
    fn batches_taking_no_offset_share_the_next_ones_base_and_are_named_by_rank() {
        // A new leader's entry (0 records), data, two elections without data, data.
        let mut w = build(Floor::default(), &[(1, 0), (1, 3), (2, 0), (3, 0), (3, 2)]);
        let bases: Vec<_> = w.iter_from(RaftIndex(1)).map(|b| (b.base.0, b.last.0)).collect();
        assert_eq!(bases, vec![(0, -1), (0, 2), (3, 2), (3, 2), (3, 4)]);
        assert_eq!((w.rank(RaftIndex(2)), w.rank(RaftIndex(4)), w.rank(RaftIndex(5))), (1, 1, 2));
        assert_eq!(w.index_of_offset(Offset(0)), Some(RaftIndex(2)));
        assert_eq!(w.index_of_offset(Offset(3)), Some(RaftIndex(5)));
        assert_eq!(w.high_watermark(RaftIndex(1)), Some(Offset(0)), "the first record is at 0");
        assert_eq!(w.high_watermark(RaftIndex(4)), Some(Offset(3)));
        // A trim never leaves a floor taking no offset.
        w.trim_to(RaftIndex(1));
        assert_eq!(w.floor().index, RaftIndex(0));
        w.trim_to(RaftIndex(4));
        assert_eq!(w.floor(), Floor { index: RaftIndex(2), term: Term(1), next_offset: Offset(3) });
        assert_eq!(w.truncate_from(RaftIndex(4)), (Offset(3), 1), "index 3 stays at offset 3");
        assert_eq!(w.rank_at_end(), 1);
    }

    proptest! {
        /// Trimming and truncating keep indexes and offsets contiguous, and a rebuild from the
        /// floor over the remaining batches gives the same window; batches taking no offset
        /// (size 0) are named by (base, rank) exactly as a log holding them in order finds them.
        #[test]
        fn trim_truncate_rebuild(sizes in proptest::collection::vec((0u64..3, 0i64..20), 1..60),
                                 trim in 0u64..70, cut in 0u64..70) {
            let mut w = Window::new(Floor::default());
            let mut term = 1;
            let mut log = Vec::new();
            for (bump, n) in sizes {
                term += bump;
                let m = meta(&w, term, n);
                w.push(m);
                log.push(m);
            }
            w.trim_to(RaftIndex(trim));
            let floor_batch = log.iter().find(|b| b.index == w.floor().index);
            prop_assert!(floor_batch.is_none_or(|b| !b.takes_no_offset()), "a floor takes offsets");
            for b in w.iter_from(w.first_index()) {
                let at = log.partition_point(|x| x.base < b.base) + usize::try_from(w.rank(b.index)).unwrap();
                prop_assert_eq!(log[at].index, b.index, "(base, rank) names the batch in the log");
            }
            let from = RaftIndex(cut.max(w.floor().index.0 + 1));
            let (to, rank) = w.truncate_from(from);
            prop_assert_eq!(to, w.next_offset());
            let keep = log.partition_point(|x| x.base < to) + usize::try_from(rank).unwrap();
            prop_assert_eq!(keep as u64, w.last_index().0, "the log cut keeps exactly the window");
            let found: Vec<_> = w.iter_from(w.first_index()).map(|b| (b.term, b.base, b.last, b.pos)).collect();
            let (r, stop) = Window::rebuild(w.floor(), found);
            prop_assert_eq!(stop, None);
            prop_assert_eq!(r.last_index(), w.last_index());
            prop_assert_eq!(r.next_offset(), w.next_offset());
            for b in w.iter_from(w.first_index()).filter(|b| !b.takes_no_offset()) {
                prop_assert_eq!(r.index_of_offset(b.base), Some(b.index));
                prop_assert_eq!(r.index_of_offset(b.last), Some(b.index));
            }
        }
    }
}
