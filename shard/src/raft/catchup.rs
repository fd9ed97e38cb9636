//! Catch-up below the window: a follower far behind (down while the leader appended more than
//! the window, or a new replica fed from index 1) is sent the batches below the leader's
//! window, read back from the segments through raft-rs's asynchronous entry fetch.
//!
//! Contract:
//! - Raft index ↔ offset below the window is found by counting batch headers from a known
//!   point: an *anchor* (index, base offset of the batch at that index). The [`Origin`] is
//!   the first anchor: index 1 at offset 0 while the log starts at offset 0 (a group's log
//!   starts empty at offset 0 and every index is one batch); once the log start moved
//!   (DeleteRecords, retention), the batch holding the log start, found by a *locate* scan
//!   ([`LocateScan`]): it counts the batches from the one holding the log start up to the
//!   window's floor, whose index is known, so the first one's index is the floor's minus the
//!   count plus one. Other anchors are remembered from earlier scans (one every
//!   `RAFT_CATCHUP_ANCHOR_STRIDE` batches, at most `RAFT_CATCHUP_MAX_ANCHORS`); none below the
//!   origin is used.
//! - A scan ([`OldScan`]) checks what it counts: each batch must start where the previous one
//!   ended, its epoch must not go back, and a scan that reaches the window's floor must land
//!   exactly on it (same index, term and next offset). The first scan from the origin always
//!   runs to the floor to check the origin; a failed check disables catch-up for the group
//!   (raft-rs then gets `Compacted`, the old snapshot path) — the log does not start with the
//!   group, or batches went missing without a gap batch counting them (a log compacted before
//!   it became a Raft group's).
//! - A locate scan checks the same (batches follow each other, epochs never go back) and
//!   must land exactly on the floor (its next offset and term) with no more batches than
//!   the floor's index; it keeps no batch. A located origin is valid for the log start it was
//!   found for only: a log start that moves again is located again. Batches taking no offset
//!   at the log start, before the batch holding it, are not counted (they are older entries);
//!   so the origin may not be the first batch at its base, and a scan from it starts its first
//!   read at the log start, skipping those batches ([`Origin`]'s `read_at` and `skip`; a read
//!   from inside a batch starts at that batch, past the ones before it at its base). The term
//!   of the entry before the origin comes from the epoch history (`store.rs`).
//! - A batch taking no offset (a Raft control batch, `control.rs`) shares its base with the
//!   batches after it: an anchor is only taken at a batch that is the first at its base
//!   offset (the batch before it takes offsets), so that reading from the anchor's offset
//!   starts at the anchor's batch; a scan that reads again from where it stopped skips the
//!   batches at that offset it was already fed ([`OldScan::skip_at_next`]).
//! - A gap batch (`sluice_core::control::gap_batch`: compaction removed the batches of its
//!   entries) is counted as the entries it stands for; a scan keeps each of those entries as a
//!   gap batch of one entry (all but the last taking no offset at the gap's base, the last
//!   covering its offsets), so a follower stores one batch per entry and its offsets follow
//!   the leader's. An anchor is only taken at a batch's first entry.
//! - A log converted from a single replica (`replica/convert.rs`) may have holes that
//!   compaction left before the conversion: offsets no batch covers, standing for no entry (the
//!   conversion counted the batches that remained). A scan accepts a hole before a data batch
//!   of leader epoch 0 (written on the direct path; no Raft group writes epoch 0) and keeps it
//!   with its own base; a replica stores it there (`store.rs`), covering the hole with a
//!   *hole batch* (`sluice_core::control::hole_batch`), which a scan passes over as no entry.
//! - Compaction below the floor folds batches into gap batches while the group runs: anchors
//!   and a located origin are valid for the log's layout they were found in only
//!   ([`OldBatches::relayout`], `ReplicaLog::layout`); a read made across a layout change
//!   keeps its batches when its checks passed and proves nothing when they failed (the store
//!   drops it: `store.rs` `install_catchup`).
//! - Memory: a scan keeps at most `max_bytes` of batches (at least one), as slices of the
//!   chunks it reads; the group keeps the batches of its last scan ([`OldBatches`]) until the
//!   next one replaces them.
//! - Nothing here waits: the runtime reads the log (asynchronously) and feeds the batches in.

use super::types::{RaftIndex, Term};
use super::window::{BatchMeta, Floor};
use bytes::Bytes;
use sluice_core::batch::BatchHeader;
use sluice_core::{limits, LeaderEpoch, Offset};
use std::collections::{BTreeMap, VecDeque};

/// Why a scan below the window stopped without an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("a batch below the window is unreadable: {0}")]
    BadBatch(String),
    #[error("batches below the window do not follow each other at index {index} (expected offset {expected}, found {found})")]
    Gap { index: u64, expected: Offset, found: Offset },
    #[error("counting batches below the window does not land on the floor (index {index})")]
    FloorMismatch { index: u64 },
    #[error("the log ended before the floor at index {index}")]
    Short { index: u64 },
    #[error("log read failed: {0}")]
    Io(String),
}

/// A read the runtime must make for a group: count from `start` (index, offset), keep the
/// batches from `want` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPlan {
    pub start: (RaftIndex, Offset),
    /// Where the first read starts and how many batches starting there it skips, so that the
    /// first batch fed is the one at `start`: `(start.1, 0)` from an anchor (the first batch at
    /// its base); from a located origin, the log start and the batches taking no offset before
    /// the origin at that offset ([`Origin`]).
    pub first_read: (Offset, u32),
    pub want: RaftIndex,
    pub floor: Floor,
    /// Count on to the floor (checks the origin anchor).
    pub verify: bool,
}

/// A locate scan (module docs): count from the batch holding `log_start` to the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocatePlan {
    pub log_start: Offset,
    pub floor: Floor,
}

/// A read the runtime makes for a group below its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPlan {
    /// Batches from an anchor on.
    Scan(ScanPlan),
    /// The index of the batch holding the log start.
    Locate(LocatePlan),
}

/// Where counting below the window starts: the batch at `index` starts at `base`; the entry
/// before it (index − 1, no longer in the log unless `index` is 1) has term `prev_term`. A read
/// from `read_at` (the log start, at or after `base`) skipping `skip` batches at that offset
/// starts at this batch: batches taking no offset may precede it at its base (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub index: RaftIndex,
    pub base: Offset,
    pub prev_term: Term,
    pub read_at: Offset,
    pub skip: u32,
}

impl Origin {
    /// A log that still starts at offset 0: index 1 is its first batch.
    pub const LOG_START_ZERO: Origin =
        Origin { index: RaftIndex(1), base: Offset(0), prev_term: Term(0), read_at: Offset(0), skip: 0 };
}

/// What a locate scan found: the batch holding `log_start` is at `index`, starts at `base`
/// and has term `term`; a read from `log_start` meets `skip` batches taking no offset before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub log_start: Offset,
    pub index: RaftIndex,
    pub base: Offset,
    pub term: Term,
    pub skip: u32,
}

/// What a finished scan found.
#[derive(Debug, Clone, Default)]
pub struct ScanOutcome {
    pub kept: Vec<(BatchMeta, Bytes)>,
    pub anchors: Vec<(RaftIndex, Offset)>,
    /// The scan reached the floor and landed on it.
    pub verified: bool,
    /// A locate scan's answer.
    pub located: Option<Located>,
    /// The first kept batch is the first at its base offset (a scan may start there).
    pub front_is_anchor: bool,
}

/// One scan below the window (module docs).
#[derive(Debug)]
pub struct OldScan {
    plan: ScanPlan,
    index: RaftIndex,
    next: Offset,
    last_term: Term,
    max_bytes: usize,
    kept_bytes: usize,
    /// The last batch fed took no offset.
    prev_no_offset: bool,
    /// Batches fed that start at `next` (each taking no offset).
    fed_at_next: u32,
    out: ScanOutcome,
}

impl OldScan {
    pub fn new(plan: ScanPlan, max_bytes: usize) -> OldScan {
        assert!(plan.start.0 .0 >= 1 && plan.start.0 <= plan.want, "a scan starts at or below what it keeps");
        assert!(plan.want <= plan.floor.index, "a scan keeps batches below the window");
        OldScan {
            plan,
            index: plan.start.0,
            next: plan.start.1,
            last_term: Term(0),
            max_bytes,
            kept_bytes: 0,
            // Batches taking no offset may precede a start that is not an anchor's.
            prev_no_offset: plan.first_read != (plan.start.1, 0),
            fed_at_next: 0,
            out: ScanOutcome::default(),
        }
    }

    fn nothing_fed(&self) -> bool {
        self.index == self.plan.start.0
    }

    /// Where the next read starts.
    pub fn next_offset(&self) -> Offset {
        if self.nothing_fed() {
            self.plan.first_read.0
        } else {
            self.next
        }
    }

    /// How many batches starting at [`OldScan::next_offset`] a read from there must skip
    /// (they were fed already: batches taking no offset; or, for the first read, the batches
    /// before the start).
    pub fn skip_at_next(&self) -> u32 {
        if self.nothing_fed() {
            self.plan.first_read.1
        } else {
            self.fed_at_next
        }
    }

    /// The scan needs no more batches.
    pub fn is_done(&self) -> bool {
        self.index > self.plan.floor.index || (self.kept_bytes >= self.max_bytes && !self.plan.verify)
    }

    /// Feeds the next batch of the log (whole, in order).
    pub fn feed(&mut self, batch: Bytes) -> Result<(), ScanError> {
        assert!(!self.is_done(), "a finished scan is fed no more");
        let h = BatchHeader::parse(&batch).map_err(|e| ScanError::BadBatch(e.to_string()))?;
        let base = Offset(h.base_offset);
        let term = stored_term(&h)?;
        if !follows(&h, self.next) {
            return Err(ScanError::Gap { index: self.index.0, expected: self.next, found: base });
        }
        if term < self.last_term {
            return Err(ScanError::BadBatch(format!("epoch goes back at index {}", self.index.0)));
        }
        let slots = sluice_core::control::entries_of(&h, &batch);
        if slots == 0 {
            // A hole batch: offsets, no entry.
            self.last_term = term;
            self.prev_no_offset = false;
            self.fed_at_next = 0;
            self.next = Offset(h.last_offset() + 1);
            return Ok(());
        }
        let last_index =
            RaftIndex(self.index.0.checked_add(slots - 1).ok_or(ScanError::FloorMismatch { index: u64::MAX })?);
        let meta = BatchMeta { index: self.index, term, base, last: Offset(h.last_offset()), pos: 0 };
        let floor = self.plan.floor;
        if (self.index..=last_index).contains(&floor.index) {
            if last_index != floor.index || term != floor.term || meta.next_offset() != floor.next_offset {
                return Err(ScanError::FloorMismatch { index: floor.index.0 });
            }
            self.out.verified = true;
        }
        // An anchor is the first entry of a batch that is the first at its base offset.
        let stride = limits::RAFT_CATCHUP_ANCHOR_STRIDE;
        if last_index.0 / stride != (self.index.0 - 1) / stride && !self.prev_no_offset {
            self.out.anchors.push((self.index, base));
        }
        if slots == 1 {
            self.keep(meta, batch, true);
        } else {
            self.keep_gap(&meta, last_index, h.partition_leader_epoch);
        }
        self.last_term = term;
        self.index = last_index.next();
        self.prev_no_offset = meta.takes_no_offset();
        self.fed_at_next = if meta.takes_no_offset() { self.fed_at_next + 1 } else { 0 };
        self.next = meta.next_offset();
        Ok(())
    }

    /// Keeps the entry `meta` (from `want` on, within the byte bound); `first` says it is its
    /// batch's first entry.
    fn keep(&mut self, meta: BatchMeta, batch: Bytes, first: bool) {
        if meta.index >= self.plan.want && self.kept_bytes < self.max_bytes {
            if self.out.kept.is_empty() {
                self.out.front_is_anchor = first && !self.prev_no_offset;
            }
            self.kept_bytes += batch.len();
            self.out.kept.push((meta, batch));
        }
    }

    /// Keeps the entries `gap.index..=last` of a gap batch standing for them, one gap batch of
    /// one entry each (`sluice_core::control`): every one but the last takes no offset at the
    /// gap's base, the last covers the gap's offsets. `epoch`: the gap's stored leader epoch.
    fn keep_gap(&mut self, gap: &BatchMeta, last: RaftIndex, epoch: i32) {
        for i in gap.index.0.max(self.plan.want.0)..=last.0 {
            if self.kept_bytes >= self.max_bytes {
                break;
            }
            let end = if i == last.0 { gap.last } else { Offset(gap.base.0 - 1) };
            let b = Bytes::from(sluice_core::control::gap_batch(gap.base.0, end.0, epoch, 1));
            let meta = BatchMeta { index: RaftIndex(i), last: end, ..*gap };
            self.keep(meta, b, i == gap.index.0);
        }
    }

    /// The log ended (nothing more to read before the durable end).
    pub fn end_of_log(&self) -> ScanError {
        ScanError::Short { index: self.index.0 }
    }

    pub fn finish(mut self) -> ScanOutcome {
        assert!(self.is_done(), "a scan finishes when it needs nothing more");
        // The batch after the last kept one is an anchor too (the next read starts there),
        // when it is the first at its offset.
        if !self.prev_no_offset {
            self.out.anchors.push((self.index, self.next));
        }
        self.out
    }
}

/// A locate scan (module docs): counts the batches from the one holding the log start to the
/// floor; keeps none.
#[derive(Debug)]
pub struct LocateScan {
    plan: LocatePlan,
    next: Offset,
    /// Base and term of the batch holding the log start, once fed.
    first: Option<(Offset, Term)>,
    count: u64,
    last_term: Term,
    /// (batches counted before it, base) every `RAFT_CATCHUP_ANCHOR_STRIDE` batches.
    rel_anchors: Vec<(u64, Offset)>,
    done: bool,
    /// The last batch fed (or passed over before the first) took no offset.
    prev_no_offset: bool,
    /// Batches taking no offset fed at `next` (a read from `next` returns them again).
    fed_at_next: u32,
    /// Batches taking no offset passed over before the first (at the log start).
    skipped: u32,
}

impl LocateScan {
    pub fn new(plan: LocatePlan) -> LocateScan {
        assert!(plan.log_start < plan.floor.next_offset, "a locate scan ends at the floor, after the log start");
        LocateScan {
            plan,
            next: plan.log_start,
            first: None,
            count: 0,
            last_term: Term(0),
            rel_anchors: Vec::new(),
            done: false,
            prev_no_offset: false,
            fed_at_next: 0,
            skipped: 0,
        }
    }

    /// How many batches at [`LocateScan::next_offset`] a read from there must skip.
    pub fn skip_at_next(&self) -> u32 {
        self.fed_at_next
    }

    pub fn next_offset(&self) -> Offset {
        self.next
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds the next batch of the log (whole, in order; the first one holds the log start).
    pub fn feed(&mut self, batch: Bytes) -> Result<(), ScanError> {
        assert!(!self.done, "a finished scan is fed no more");
        let h = BatchHeader::parse(&batch).map_err(|e| ScanError::BadBatch(e.to_string()))?;
        let (base, last) = (Offset(h.base_offset), Offset(h.last_offset()));
        let no_offset = last.0 < base.0;
        if self.first.is_none() && no_offset && base <= self.plan.log_start {
            // An entry before the batch holding the log start (at the same base offset).
            self.prev_no_offset = true;
            self.fed_at_next += 1;
            self.skipped += 1;
            return Ok(());
        }
        let term = stored_term(&h)?;
        let in_order = match self.first {
            None => base <= self.plan.log_start && last >= self.plan.log_start,
            Some(_) => follows(&h, self.next),
        };
        if !in_order || last.0 < base.0 - 1 {
            return Err(ScanError::Gap { index: self.plan.floor.index.0, expected: self.next, found: base });
        }
        if term < self.last_term {
            return Err(ScanError::BadBatch(format!("epoch goes back at offset {}", base.0)));
        }
        // A gap batch counts the entries it stands for, a hole batch none (`sluice_core::control`).
        let slots = sluice_core::control::entries_of(&h, &batch);
        if slots == 0 && self.first.is_none() {
            // A hole batch holding the log start: the batch holding the next entry comes after it.
            return Err(ScanError::Gap { index: self.plan.floor.index.0, expected: self.next, found: base });
        }
        if slots == 0 {
            self.prev_no_offset = false;
            self.fed_at_next = 0;
            self.last_term = term;
            self.next = Offset(last.0 + 1);
            return self.check_floor(term);
        }
        self.first.get_or_insert((base, term));
        let stride = limits::RAFT_CATCHUP_ANCHOR_STRIDE;
        let crosses = self.count == 0 || (self.count + slots - 1) / stride != (self.count - 1) / stride;
        if crosses && !self.prev_no_offset {
            self.rel_anchors.push((self.count, base));
            if self.rel_anchors.len() > limits::RAFT_CATCHUP_MAX_ANCHORS {
                let thinned = self.rel_anchors.iter().copied().step_by(2).collect();
                self.rel_anchors = thinned;
            }
        }
        self.prev_no_offset = no_offset;
        self.fed_at_next = if no_offset { self.fed_at_next + 1 } else { 0 };
        self.count = self.count.saturating_add(slots);
        self.last_term = term;
        self.next = Offset(last.0 + 1);
        self.check_floor(term)
    }

    /// After a batch: the scan may not pass the floor; it is done on it.
    fn check_floor(&mut self, term: Term) -> Result<(), ScanError> {
        let floor = self.plan.floor;
        let mismatch = ScanError::FloorMismatch { index: floor.index.0 };
        if self.count > floor.index.0 || self.next > floor.next_offset {
            return Err(mismatch);
        }
        if self.next == floor.next_offset {
            if term != floor.term {
                return Err(mismatch);
            }
            self.done = true;
        }
        Ok(())
    }

    pub fn end_of_log(&self) -> ScanError {
        ScanError::Short { index: self.plan.floor.index.0 }
    }

    pub fn finish(self) -> ScanOutcome {
        assert!(self.done, "a locate scan finishes on the floor");
        let (base, term) = self.first.expect("a finished scan was fed");
        let index = RaftIndex(self.plan.floor.index.0 + 1 - self.count);
        let anchors = self.rel_anchors.iter().map(|&(n, o)| (RaftIndex(index.0 + n), o)).collect();
        let located = Located { log_start: self.plan.log_start, index, base, term, skip: self.skipped };
        ScanOutcome { kept: Vec::new(), anchors, verified: true, located: Some(located), front_is_anchor: false }
    }
}

/// The term a stored batch's leader epoch stands for.
fn stored_term(h: &BatchHeader) -> Result<Term, ScanError> {
    Term::of_stored(LeaderEpoch(h.partition_leader_epoch))
        .ok_or_else(|| ScanError::BadBatch(format!("epoch {}", h.partition_leader_epoch)))
}

/// Whether the batch `h` may follow a batch ending before `next`: it starts at `next`; or it
/// is a data batch written on the direct path (leader epoch 0, which no Raft group writes: a
/// single-replica log converted into a Raft group, `replica/convert.rs`) after offsets that
/// compaction removed then, leaving no batch (the conversion counted the batches that
/// remained). A copy of such a log covers the hole with a hole batch instead (`store.rs`).
fn follows(h: &BatchHeader, next: Offset) -> bool {
    let base = Offset(h.base_offset);
    let direct_hole = base > next && h.partition_leader_epoch == 0 && !h.is_control();
    (base == next || direct_hole) && h.last_offset() >= h.base_offset - 1
}

/// Either scan, as the runtime drives it.
#[derive(Debug)]
pub enum Scanner {
    Old(OldScan),
    Locate(LocateScan),
}

impl Scanner {
    pub fn new(plan: ReadPlan, max_bytes: usize) -> Scanner {
        match plan {
            ReadPlan::Scan(p) => Scanner::Old(OldScan::new(p, max_bytes)),
            ReadPlan::Locate(p) => Scanner::Locate(LocateScan::new(p)),
        }
    }

    pub fn next_offset(&self) -> Offset {
        match self {
            Scanner::Old(s) => s.next_offset(),
            Scanner::Locate(s) => s.next_offset(),
        }
    }

    /// How many batches at the next offset a read from there must skip (fed already).
    pub fn skip_at_next(&self) -> u32 {
        match self {
            Scanner::Old(s) => s.skip_at_next(),
            Scanner::Locate(s) => s.skip_at_next(),
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            Scanner::Old(s) => s.is_done(),
            Scanner::Locate(s) => s.is_done(),
        }
    }

    pub fn feed(&mut self, batch: Bytes) -> Result<(), ScanError> {
        match self {
            Scanner::Old(s) => s.feed(batch),
            Scanner::Locate(s) => s.feed(batch),
        }
    }

    pub fn end_of_log(&self) -> ScanError {
        match self {
            Scanner::Old(s) => s.end_of_log(),
            Scanner::Locate(s) => s.end_of_log(),
        }
    }

    pub fn finish(self) -> ScanOutcome {
        match self {
            Scanner::Old(s) => s.finish(),
            Scanner::Locate(s) => s.finish(),
        }
    }
}

/// A group's state below its window: anchors, the batches of the last scan, and the reads
/// raft-rs asked for.
#[derive(Debug, Default)]
pub struct OldBatches {
    batches: VecDeque<(BatchMeta, Bytes)>,
    anchors: BTreeMap<RaftIndex, Offset>,
    /// The first cached batch is the first at its base offset (a scan may start there).
    front_is_anchor: bool,
    verified: bool,
    disabled: bool,
    /// The origin of a log whose start moved, and the log start it was found for.
    located: Option<(Offset, Origin)>,
    /// The log's layout the anchors and the located origin were found in.
    layout: u64,
}

impl OldBatches {
    /// Where counting starts for a log starting at `log_start`: None when no check failed
    /// but the moved log start is not located yet, or a check failed.
    pub fn origin(&self, log_start: Offset) -> Option<Origin> {
        if self.disabled {
            return None;
        }
        if log_start == Offset(0) {
            return Some(Origin::LOG_START_ZERO);
        }
        self.located.filter(|(s, _)| *s == log_start).map(|(_, o)| o)
    }

    /// Batches below the window can be served (the origin is usable, no check failed).
    pub fn servable(&self, log_start: Offset) -> bool {
        self.origin(log_start).is_some()
    }

    /// A check failed: nothing below the window is served any more.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// A locate scan found the origin of the log starting at `log_start`.
    pub fn set_located(&mut self, log_start: Offset, origin: Origin) {
        self.located = Some((log_start, origin));
    }

    /// The cached batch at `index`.
    pub fn get(&self, index: RaftIndex) -> Option<&(BatchMeta, Bytes)> {
        let first = self.batches.front()?.0.index;
        let i = usize::try_from(index.0.checked_sub(first.0)?).ok()?;
        self.batches.get(i)
    }

    /// The cached batches from `from` on, in order.
    pub fn iter_from(&self, from: RaftIndex) -> impl Iterator<Item = &(BatchMeta, Bytes)> {
        let skip = self.batches.front().map_or(0, |f| from.0.saturating_sub(f.0.index.0));
        self.batches.iter().skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }

    /// The read to make so that `want` (at or after `origin`, and the batches after it) are
    /// cached.
    pub fn plan(&self, want: RaftIndex, floor: Floor, origin: Origin) -> ScanPlan {
        assert!(want >= origin.index, "nothing below the origin is read");
        let first = (origin.index, origin.base);
        let start = self.anchors.range(origin.index..=want).next_back().map_or(first, |(i, o)| (*i, *o));
        let start = match self.batches.front() {
            Some((m, _)) if m.index <= want && m.index > start.0 && self.front_is_anchor => (m.index, m.base),
            _ => start,
        };
        let first_read = if start == first { (origin.read_at, origin.skip) } else { (start.1, 0) };
        ScanPlan { start, first_read, want, floor, verify: !self.verified }
    }

    /// Takes a scan's outcome: its batches replace the cached ones; its anchors are kept.
    pub fn install(&mut self, out: ScanOutcome) {
        if out.verified {
            self.verified = true;
        }
        for (i, o) in out.anchors {
            self.anchors.insert(i, o);
        }
        while self.anchors.len() > limits::RAFT_CATCHUP_MAX_ANCHORS {
            let keys: Vec<RaftIndex> = self.anchors.keys().copied().skip(1).step_by(2).collect();
            for k in keys {
                self.anchors.remove(&k);
            }
        }
        self.front_is_anchor = out.front_is_anchor;
        self.batches = out.kept.into_iter().collect();
        for w in self.batches.iter().zip(self.batches.iter().skip(1)) {
            assert_eq!(w.0 .0.index.next(), w.1 .0.index, "cached batches are contiguous");
        }
    }

    /// A check failed: nothing below the window is served any more (raft-rs sends a snapshot).
    pub fn disable(&mut self) {
        self.disabled = true;
        self.batches.clear();
    }

    /// Everything is forgotten (the log was reset to a snapshot).
    pub fn clear(&mut self) {
        *self = OldBatches { disabled: self.disabled, ..Default::default() };
    }

    /// The log's layout is now `layout` (`ReplicaLog::layout`): when compaction changed it,
    /// the anchors and the located origin name batches that may now lie inside a gap batch,
    /// so they are forgotten (found again by the next scans). The cached batches are still
    /// the entries they were and stay.
    pub fn relayout(&mut self, layout: u64) {
        if layout != self.layout {
            self.layout = layout;
            self.anchors.clear();
            self.located = None;
            self.front_is_anchor = false;
        }
    }

    /// Anchors at or past `from` are dropped (the log is cut there).
    pub fn cut_from(&mut self, from: RaftIndex) {
        let _ = self.anchors.split_off(&from);
        while self.batches.back().is_some_and(|b| b.0.index >= from) {
            self.batches.pop_back();
        }
    }

    pub fn cached_bytes(&self) -> usize {
        self.batches.iter().map(|b| b.1.len()).sum()
    }
}

/// Runs a scan over batches already in memory (the simulation's log, unit tests).
pub fn scan_batches(plan: ReadPlan, log: &[(Offset, Bytes)], max_bytes: usize) -> Result<ScanOutcome, ScanError> {
    let mut scan = Scanner::new(plan, max_bytes);
    // The first batch read is the first one starting at the scan's first offset (batches
    // taking no offset share it with the batch after them), or the batch holding it; then
    // the batches there the scan skips.
    let at = scan.next_offset();
    let mut i = log.partition_point(|(b, _)| *b < at);
    if i > 0 && BatchHeader::parse(&log[i - 1].1).is_ok_and(|h| h.last_offset() >= at.0) {
        i -= 1;
    }
    let skip = usize::try_from(scan.skip_at_next()).expect("fits");
    i += log[i.min(log.len())..].iter().take(skip).take_while(|(b, _)| *b == at).count();
    while !scan.is_done() {
        let Some((_, b)) = log.get(i) else { return Err(scan.end_of_log()) };
        scan.feed(b.clone())?;
        i += 1;
    }
    Ok(scan.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A log of batches of `sizes` records with epochs `terms`, from offset 0 (0 records: a
    /// Raft control batch taking no offset).
    fn log(batches: &[(u64, usize)]) -> Vec<(Offset, Bytes)> {
        let mut out = Vec::new();
        let mut next = 0i64;
        for &(term, n) in batches {
            let b = if n == 0 {
                let e = raft::eraftpb::Entry { term, ..Default::default() };
                crate::raft::control::entry_to_batch(&e, Offset(next), crate::raft::control::Shape::NoOffset)
                    .expect("a control batch")
            } else {
                let recs: Vec<_> = (0..n).map(|_| sluice_core::batch::Record { key: None, value: b"v" }).collect();
                let mut b = sluice_core::batch::build(&recs, 0);
                sluice_core::batch::stamp(&mut b, next, i32::try_from(term).unwrap());
                Bytes::from(b)
            };
            out.push((Offset(next), b));
            next += i64::try_from(n).unwrap();
        }
        out
    }

    /// A scan fed as the runtime's reader feeds it (`kafkalog::read_catchup`): reads of at
    /// most `chunk` batches from the first batch starting at the scan's next offset, skipping
    /// the batches there it was fed already.
    fn scan_in_chunks(plan: ScanPlan, l: &[(Offset, Bytes)], chunk: usize) -> Result<ScanOutcome, ScanError> {
        let mut scan = OldScan::new(plan, 1 << 30);
        let mut size = chunk;
        while !scan.is_done() {
            let at = scan.next_offset();
            let first = l.partition_point(|(b, _)| *b < at);
            let read = &l[first..(first + size).min(l.len())];
            let mut skip = scan.skip_at_next();
            let mut fed = false;
            for (base, b) in read {
                if scan.is_done() {
                    break;
                }
                if !fed && *base == at && skip > 0 {
                    skip -= 1;
                    continue;
                }
                scan.feed(b.clone())?;
                fed = true;
            }
            if !fed && read.len() < size {
                return Err(scan.end_of_log());
            }
            // Every batch read was fed before: read more from the same offset.
            size = if fed { chunk } else { size * 2 };
        }
        Ok(scan.finish())
    }

    fn floor_after(l: &[(Offset, Bytes)], index: usize, terms: &[(u64, usize)]) -> Floor {
        let (base, _) = l[index - 1];
        Floor {
            index: RaftIndex(u64::try_from(index).unwrap()),
            term: Term(terms[index - 1].0),
            next_offset: Offset(base.0 + i64::try_from(terms[index - 1].1).unwrap()),
        }
    }

    #[test]
    fn counting_from_the_origin_finds_each_index_and_checks_the_floor() {
        let spec: Vec<(u64, usize)> = (0..50u64).map(|i| (1 + i / 20, 1 + usize::try_from(i % 3).unwrap())).collect();
        let l = log(&spec);
        let floor = floor_after(&l, 40, &spec);
        let mut old = OldBatches::default();
        let plan = old.plan(RaftIndex(10), floor, Origin::LOG_START_ZERO);
        assert_eq!(plan.start, (RaftIndex(1), Offset(0)));
        assert!(plan.verify);
        let out = scan_batches(ReadPlan::Scan(plan), &l, 200).expect("scans");
        assert!(out.verified, "the first scan runs to the floor");
        assert_eq!(out.kept[0].0.index, RaftIndex(10));
        assert_eq!(out.kept[0].0.base, l[9].0);
        old.install(out);
        let (m, b) = old.get(RaftIndex(11)).expect("cached");
        assert_eq!((m.base, b), (l[10].0, &l[10].1));
        assert_eq!(m.term, Term(1));
        // A later plan starts from what is cached, without checking again.
        let last = old.iter_from(RaftIndex(10)).last().expect("some").0;
        let plan = old.plan(last.index.next(), floor, Origin::LOG_START_ZERO);
        assert!(!plan.verify);
        assert!(plan.start.0 > RaftIndex(1));
        let out = scan_batches(ReadPlan::Scan(plan), &l, 200).expect("scans");
        assert_eq!(out.kept[0].0.index, last.index.next());
        assert_eq!(out.kept[0].0.base, last.next_offset());
    }

    #[test]
    fn a_log_that_does_not_start_with_the_group_fails_the_check() {
        let spec: Vec<(u64, usize)> = (0..30).map(|_| (1, 2)).collect();
        let l = log(&spec);
        // The floor says index 20 ends at offset 40 (20 batches of 2): claim index 19 instead.
        let mut floor = floor_after(&l, 20, &spec);
        floor.index = RaftIndex(19);
        let plan = OldBatches::default().plan(RaftIndex(2), floor, Origin::LOG_START_ZERO);
        assert_eq!(
            scan_batches(ReadPlan::Scan(plan), &l, 1 << 20).unwrap_err(),
            ScanError::FloorMismatch { index: 19 }
        );
        // A batch missing in the middle (compaction removed it) is a gap.
        let mut holed = l.clone();
        holed.remove(5);
        let plan = OldBatches::default().plan(RaftIndex(2), floor_after(&l, 20, &spec), Origin::LOG_START_ZERO);
        assert!(matches!(scan_batches(ReadPlan::Scan(plan), &holed, 1 << 20), Err(ScanError::Gap { index: 6, .. })));
    }

    /// The index of the batch holding `offset` in `l` (1-based) and its base.
    fn holding(l: &[(Offset, Bytes)], offset: i64) -> (RaftIndex, Offset) {
        let i = l.partition_point(|(b, _)| b.0 <= offset) - 1;
        (RaftIndex(u64::try_from(i).unwrap() + 1), l[i].0)
    }

    #[test]
    fn a_moved_log_start_is_located_by_counting_back_from_the_floor() {
        let spec: Vec<(u64, usize)> = (0..60u64).map(|i| (1 + i / 25, 1 + usize::try_from(i % 4).unwrap())).collect();
        let l = log(&spec);
        let floor = floor_after(&l, 50, &spec);
        // A log start inside a batch (DeleteRecords to any offset): the batch holding it.
        let start = l[21].0 .0 + 1;
        assert!(BatchHeader::parse(&l[21].1).unwrap().last_offset() >= start, "inside batch 22");
        let out = scan_batches(ReadPlan::Locate(LocatePlan { log_start: Offset(start), floor }), &l, 1 << 20)
            .expect("locates");
        let located = out.located.expect("located");
        assert_eq!((located.index, located.base), holding(&l, start));
        assert_eq!(located.term, Term(1));
        assert!(out.verified && out.kept.is_empty());
        // Counting from there serves the batches at their indexes.
        let mut old = OldBatches::default();
        assert!(!old.servable(Offset(start)), "not before it is located");
        old.install(out);
        old.set_located(
            Offset(start),
            Origin {
                index: located.index,
                base: located.base,
                prev_term: Term(1),
                read_at: Offset(start),
                skip: located.skip,
            },
        );
        let origin = old.origin(Offset(start)).expect("located");
        assert_eq!(old.origin(Offset(start + 1)), None, "located for that log start only");
        let plan = old.plan(RaftIndex(30), floor, origin);
        assert!(!plan.verify, "the locate checked the floor");
        let out = scan_batches(ReadPlan::Scan(plan), &l, 300).expect("scans");
        assert_eq!(out.kept[0].0.index, RaftIndex(30));
        assert_eq!(out.kept[0].1, l[29].1);
        // A log start at a batch boundary is the batch starting there.
        let at = l[7].0;
        let out = scan_batches(ReadPlan::Locate(LocatePlan { log_start: at, floor }), &l, 0).expect("locates");
        assert_eq!(out.located.map(|x| (x.index, x.base)), Some((RaftIndex(8), at)));
    }

    #[test]
    fn a_locate_that_does_not_land_on_the_floor_fails() {
        let spec: Vec<(u64, usize)> = (0..30).map(|_| (1, 2)).collect();
        let l = log(&spec);
        let mut floor = floor_after(&l, 20, &spec);
        floor.term = Term(2);
        let plan = ReadPlan::Locate(LocatePlan { log_start: Offset(9), floor });
        assert_eq!(scan_batches(plan, &l, 0).unwrap_err(), ScanError::FloorMismatch { index: 20 });
        // More batches than the floor's index: the log does not end there as the window says.
        let mut floor = floor_after(&l, 20, &spec);
        floor.index = RaftIndex(3);
        let plan = ReadPlan::Locate(LocatePlan { log_start: Offset(9), floor });
        assert!(matches!(scan_batches(plan, &l, 0), Err(ScanError::FloorMismatch { .. })));
        let mut holed = l.clone();
        holed.remove(10);
        let plan = ReadPlan::Locate(LocatePlan { log_start: Offset(9), floor: floor_after(&l, 20, &spec) });
        assert!(matches!(scan_batches(plan, &holed, 0), Err(ScanError::Gap { .. })));
    }

    /// `l` (built by [`log`] from `spec`) after a compaction removed the batches `removed`
    /// says: each run of removed batches of one term becomes one gap batch standing for them,
    /// as `storage/src/compact/clean.rs` writes it.
    fn compacted(l: &[(Offset, Bytes)], spec: &[(u64, usize)], removed: &[bool]) -> Vec<(Offset, Bytes)> {
        let mut out = Vec::new();
        let mut run: Option<(i64, i64, u64, u64)> = None; // base, last, term, slots
        let flush = |run: &mut Option<(i64, i64, u64, u64)>, out: &mut Vec<(Offset, Bytes)>| {
            if let Some((base, last, term, slots)) = run.take() {
                let epoch = i32::try_from(term).unwrap();
                out.push((Offset(base), Bytes::from(sluice_core::control::gap_batch(base, last, epoch, slots))));
            }
        };
        for (i, (base, b)) in l.iter().enumerate() {
            let (term, n) = spec[i];
            let last = base.0 + i64::try_from(n).unwrap() - 1;
            if !removed[i] {
                flush(&mut run, &mut out);
                out.push((*base, b.clone()));
                continue;
            }
            match &mut run {
                Some(r) if r.2 == term => {
                    r.1 = last;
                    r.3 += 1;
                }
                _ => {
                    flush(&mut run, &mut out);
                    run = Some((base.0, last, term, 1));
                }
            }
        }
        flush(&mut run, &mut out);
        out
    }

    /// A log of batches of `sizes` records (terms changing every 7 batches, the last one the
    /// floor, taking one offset), and the same log after compaction removed the batches
    /// `removed` marks (never the floor).
    struct Case {
        spec: Vec<(u64, usize)>,
        l: Vec<(Offset, Bytes)>,
        removed: Vec<bool>,
        c: Vec<(Offset, Bytes)>,
        floor: Floor,
    }

    fn compacted_case(sizes: &[usize], removed: &[bool]) -> Case {
        let mut spec: Vec<(u64, usize)> = sizes.iter().enumerate().map(|(i, n)| (1 + i as u64 / 7, *n)).collect();
        spec.last_mut().unwrap().1 = 1;
        let l = log(&spec);
        let mut removed = removed[..l.len()].to_vec();
        *removed.last_mut().unwrap() = false; // the floor stays
        let c = compacted(&l, &spec, &removed);
        let floor = floor_after(&l, l.len(), &spec);
        Case { spec, l, removed, c, floor }
    }

    #[test]
    fn a_gap_batch_is_counted_as_its_entries_and_served_one_entry_at_a_time() {
        let spec: Vec<(u64, usize)> = (0..40u64).map(|i| (1 + i / 15, 2)).collect();
        let l = log(&spec);
        // Batches 5..=12 (term 1) and 14..=17 (terms 1 and 2) removed.
        let removed: Vec<bool> = (1..=40).map(|i| (5..=12).contains(&i) || (14..=17).contains(&i)).collect();
        let c = compacted(&l, &spec, &removed);
        assert_eq!(c.len(), 40 - 12 + 3, "one gap per run and term");
        let floor = floor_after(&l, 30, &spec);
        let plan = OldBatches::default().plan(RaftIndex(3), floor, Origin::LOG_START_ZERO);
        let out = scan_batches(ReadPlan::Scan(plan), &c, 1 << 20).expect("counts through the gaps");
        assert!(out.verified);
        let idx: Vec<u64> = out.kept.iter().map(|(m, _)| m.index.0).collect();
        assert_eq!(idx, (3..=30).collect::<Vec<_>>(), "every entry once, in order");
        for (m, b) in &out.kept {
            let i = usize::try_from(m.index.0).unwrap() - 1;
            let h = BatchHeader::parse(b).unwrap();
            assert_eq!(m.term, Term(spec[i].0), "entry {} keeps its term", m.index.0);
            if removed[i] {
                assert_eq!(sluice_core::control::gap_slots(&h, b), Some(1), "entry {} is a gap of one", m.index.0);
            } else {
                assert_eq!(b, &l[i].1, "entry {} is its batch", m.index.0);
            }
        }
        // The offsets the entries take follow each other, as a follower stores them.
        let mut next = out.kept[0].0.base;
        for (m, _) in &out.kept {
            assert_eq!(m.base, next, "entry {}", m.index.0);
            next = m.next_offset();
        }
        assert_eq!(next, floor.next_offset);
        // A locate from a log start inside a gap finds the gap's first entry.
        let start = l[7].0;
        let out = scan_batches(ReadPlan::Locate(LocatePlan { log_start: start, floor }), &c, 0).expect("locates");
        assert_eq!(out.located.map(|x| (x.index, x.base)), Some((RaftIndex(5), l[4].0)));
    }

    proptest! {
        /// Whatever the batch sizes, the byte bound and the index asked, a scan keeps the
        /// batches at the indexes asked (their offsets those of the log), at most the bound
        /// plus one batch, and a scan started from any anchor it left finds the same batches.
        #[test]
        fn scans_map_indexes_to_the_log(sizes in proptest::collection::vec(0usize..5, 2..200),
                                        want in 1usize..200, max in 1usize..4000, chunk in 1usize..6) {
            let mut spec: Vec<(u64, usize)> = sizes.iter().enumerate().map(|(i, n)| (1 + i as u64 / 7, *n)).collect();
            // A floor takes offsets (`window.rs`).
            spec.last_mut().unwrap().1 = 1;
            let l = log(&spec);
            let floor_idx = l.len();
            let want = want.min(floor_idx);
            let floor = floor_after(&l, floor_idx, &spec);
            let mut old = OldBatches::default();
            let out = scan_batches(ReadPlan::Scan(old.plan(RaftIndex(want as u64), floor, Origin::LOG_START_ZERO)), &l, max).expect("scans");
            prop_assert!(out.verified);
            let biggest = l.iter().map(|b| b.1.len()).max().unwrap();
            prop_assert!(out.kept.iter().map(|b| b.1.len()).sum::<usize>() < max + biggest);
            for (k, (m, b)) in out.kept.iter().enumerate() {
                let i = want - 1 + k;
                prop_assert_eq!(m.index, RaftIndex(i as u64 + 1));
                prop_assert_eq!(m.base, l[i].0);
                prop_assert_eq!(b, &l[i].1);
            }
            // Read in chunks, as the runtime reads, the same batches come at the same indexes.
            let chunked = scan_in_chunks(OldBatches::default().plan(RaftIndex(want as u64), floor, Origin::LOG_START_ZERO), &l, chunk)
                .expect("scans in chunks");
            prop_assert!(chunked.verified);
            prop_assert_eq!(chunked.kept.first().map(|b| b.0), out.kept.first().map(|b| b.0));
            for (a, _) in &chunked.anchors {
                let i = usize::try_from(a.0).unwrap() - 1;
                prop_assert!(i == 0 || i >= l.len() || l[i - 1].0 < l[i].0, "an anchor is the first batch at its offset");
            }
            old.install(out);
            let again = scan_batches(ReadPlan::Scan(old.plan(RaftIndex(want as u64), floor, Origin::LOG_START_ZERO)), &l, max).expect("scans");
            prop_assert_eq!(again.kept.first().map(|b| b.0), old.get(RaftIndex(want as u64)).map(|b| b.0));
            for (a, o) in &again.anchors {
                let i = usize::try_from(a.0).unwrap() - 1;
                if i < l.len() {
                    prop_assert_eq!(l[i].0, *o);
                }
            }
        }

        /// Whatever batches compaction removed (gap batches standing for them), a scan from
        /// the origin, or from any anchor it left, keeps every entry at its index with its
        /// term: a batch that stayed as it was, a removed one as a gap of one entry; their
        /// offsets follow each other up to the floor.
        #[test]
        fn scans_count_gap_batches_as_their_entries(sizes in proptest::collection::vec(0usize..5, 2..200),
                                                    removed in proptest::collection::vec(any::<bool>(), 200),
                                                    want in 1usize..200, max in 1usize..4000, chunk in 1usize..6) {
            let Case { spec, l, removed, c, floor } = compacted_case(&sizes, &removed);
            let want = want.min(l.len());
            let check = |out: &ScanOutcome, from: usize| -> Result<(), TestCaseError> {
                let mut next = None;
                for (k, (m, b)) in out.kept.iter().enumerate() {
                    let i = from - 1 + k;
                    prop_assert_eq!(m.index, RaftIndex(i as u64 + 1));
                    prop_assert_eq!(m.term, Term(spec[i].0));
                    if !removed[i] {
                        prop_assert_eq!(b, &l[i].1);
                    }
                    if let Some(n) = next {
                        prop_assert_eq!(m.base, n);
                    }
                    next = Some(m.next_offset());
                }
                Ok(())
            };
            let mut old = OldBatches::default();
            let out = scan_batches(ReadPlan::Scan(old.plan(RaftIndex(want as u64), floor, Origin::LOG_START_ZERO)), &c, max).expect("scans");
            prop_assert!(out.verified);
            check(&out, want)?;
            prop_assert_eq!(out.kept.first().map(|b| b.0.index), Some(RaftIndex(want as u64)));
            let chunked = scan_in_chunks(OldBatches::default().plan(RaftIndex(want as u64), floor, Origin::LOG_START_ZERO), &c, chunk)
                .expect("scans in chunks");
            check(&chunked, want)?;
            old.install(out);
            // From the anchors and the cached batches, any later entry is found again.
            for w in [want, (want + l.len()) / 2, l.len()] {
                let again = scan_batches(ReadPlan::Scan(old.plan(RaftIndex(w as u64), floor, Origin::LOG_START_ZERO)), &c, max).expect("scans");
                check(&again, w)?;
                prop_assert_eq!(again.kept.first().map(|b| b.0.index), Some(RaftIndex(w as u64)));
            }
        }

        /// A follower whose log ends anywhere — inside a run compaction later removed on the
        /// leader included — and stores the entries a scan hands out after it as a follower
        /// stores them (`control::entry_to_batch` at its own log end) has every batch that
        /// stayed at the leader's offsets, and ends at the floor's offset.
        #[test]
        fn a_follower_ending_anywhere_stores_the_gaps_at_the_leaders_offsets(
            sizes in proptest::collection::vec(0usize..5, 2..150),
            removed in proptest::collection::vec(any::<bool>(), 150),
            had in 0usize..150) {
            let Case { spec: _, l, removed, c, floor } = compacted_case(&sizes, &removed);
            // The follower had the leader's first `had` batches as they were before compaction.
            let had = had % l.len();
            let mut next = if had == 0 { Offset(0) } else { Offset(BatchHeader::parse(&l[had - 1].1).unwrap().last_offset() + 1) };
            let mut want = had + 1;
            while want <= l.len() {
                let plan = OldBatches::default().plan(RaftIndex(want as u64), floor, Origin::LOG_START_ZERO);
                let out = scan_batches(ReadPlan::Scan(plan), &c, 300).expect("scans");
                for (m, b) in &out.kept {
                    let e = crate::raft::control::batch_to_entry(m.index.0, m.term, b.clone()).expect("an entry");
                    let stored = crate::raft::control::entry_to_batch(&e, next, crate::raft::control::Shape::NoOffset)
                        .expect("the follower stores it");
                    let h = BatchHeader::parse(&stored).unwrap();
                    let i = usize::try_from(m.index.0).unwrap() - 1;
                    if !removed[i] {
                        prop_assert_eq!(h.base_offset, l[i].0 .0, "entry {} at the leader's offset", m.index.0);
                    }
                    next = Offset(h.last_offset() + 1);
                }
                want = usize::try_from(out.kept.last().expect("a scan keeps one").0.index.0).unwrap() + 1;
            }
            prop_assert_eq!(next, floor.next_offset);
        }

        /// Whatever the batch sizes (batches taking no offset among them) and the log start
        /// below the floor, a locate finds the index and base of the batch holding the log
        /// start, and a scan from that origin feeds every batch at its index.
        #[test]
        fn a_locate_finds_the_batch_holding_any_log_start(sizes in proptest::collection::vec(0usize..5, 2..300),
                                                         floor_at in 1usize..300, start in 0i64..1200,
                                                         want_at in 0usize..300) {
            let spec: Vec<(u64, usize)> = sizes.iter().enumerate().map(|(i, n)| (1 + i as u64 / 9, *n)).collect();
            let l = log(&spec);
            // The floor is a batch taking offsets (window.rs), after offset 0.
            let takes = |i: usize| spec[i - 1].1 > 0 && l[i - 1].0 .0 + i64::try_from(spec[i - 1].1).unwrap() > 1;
            let Some(floor_at) = (floor_at.min(l.len())..=l.len()).find(|&i| takes(i)) else { return Ok(()) };
            let floor = floor_after(&l, floor_at, &spec);
            let start = 1 + start % (floor.next_offset.0 - 1);
            let out = scan_batches(ReadPlan::Locate(LocatePlan { log_start: Offset(start), floor }), &l, 0)
                .expect("locates");
            let located = out.located.expect("located");
            prop_assert_eq!((located.index, located.base), holding(&l, start));
            for (i, o) in &out.anchors {
                prop_assert_eq!(l[usize::try_from(i.0).unwrap() - 1].0, *o);
            }
            let mut old = OldBatches::default();
            old.install(out);
            let origin = Origin {
                index: located.index,
                base: located.base,
                prev_term: Term(0),
                read_at: Offset(start),
                skip: located.skip,
            };
            old.set_located(Offset(start), origin);
            let first = usize::try_from(located.index.0).unwrap();
            let want = first + want_at % (floor_at + 1 - first);
            let plan = old.plan(RaftIndex(u64::try_from(want).unwrap()), floor, origin);
            let got = scan_batches(ReadPlan::Scan(plan), &l, 1 << 20).expect("scans from the origin");
            for (m, b) in &got.kept {
                prop_assert_eq!(b, &l[usize::try_from(m.index.0).unwrap() - 1].1, "index {}", m.index.0);
            }
            prop_assert_eq!(got.kept.first().map(|(m, _)| m.index.0), Some(u64::try_from(want).unwrap()));
        }
    }
}
