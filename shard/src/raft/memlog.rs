//! An in-memory [`ReplicaLog`] with a crash model, for the replication simulation and unit
//! tests: what was synced survives a crash, what was only written may survive in part.
//!
//! Contract: [`MemLog`] is a handle on a [`MemDisk`] shared with the simulation, so a crash
//! drops the driver and the handle and reopens from the same disk. `sync` makes the current
//! batches and the saved Raft state durable (or fails when a fault is armed, changing
//! nothing); `crash` keeps the durable image plus, at the caller's choice, a prefix of what was
//! appended after it (a write that reached the disk without its sync); the Raft state file is
//! replaced atomically, so it is either the last synced one or the newest saved one.

use super::store::{LogFault, PersistedState, ReplicaLog};
use super::types::Term;
use bytes::Bytes;
use sluice_core::batch::BatchHeader;
use sluice_core::{LeaderEpoch, Offset};
use std::cell::RefCell;
use std::rc::Rc;

/// One replica's simulated disk.
#[derive(Debug, Default)]
pub struct MemDisk {
    /// The log as written (base offset, batch), in order.
    current: Vec<(Offset, Bytes)>,
    start: Offset,
    state: PersistedState,
    /// The durable image.
    durable: Vec<(Offset, Bytes)>,
    durable_start: Offset,
    durable_state: PersistedState,
    /// `current[..same]` equals `durable[..same]`.
    same: usize,
    /// The next sync fails.
    pub fail_next_sync: bool,
    /// Snapshots installed on this disk (for the simulation's statistics).
    pub installs: u64,
    /// What `ReplicaLog::clean_wanted` answers (a compactor wanting sealed segments cleaned).
    pub clean_wanted: Option<Offset>,
    /// What `ReplicaLog::layout` answers: bumped by [`MemDisk::fold_into_gap`].
    layout: u64,
}

/// What a reopen finds.
pub struct Recovered {
    pub state: PersistedState,
    pub found: Vec<(Term, Offset, Offset, u64)>,
}

impl MemDisk {
    pub fn new(start: Offset) -> MemDisk {
        MemDisk { start, durable_start: start, ..Default::default() }
    }

    /// Makes everything written and saved durable.
    pub fn sync(&mut self) -> Result<(), LogFault> {
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(LogFault::Io("injected sync failure".into()));
        }
        self.durable.truncate(self.same);
        self.durable.extend_from_slice(&self.current[self.same..]);
        self.durable_start = self.start;
        self.durable_state = self.state.clone();
        self.same = self.current.len();
        Ok(())
    }

    /// Loses what was not synced, except the first `keep_unsynced` batches appended after the
    /// durable image (when the log was not cut below it since) and, if `keep_state`, the
    /// newest saved Raft state.
    pub fn crash(&mut self, keep_unsynced: usize, keep_state: bool) {
        let extends = self.same == self.durable.len() && self.start == self.durable_start;
        if extends {
            let keep = (self.same + keep_unsynced).min(self.current.len());
            self.durable.extend_from_slice(&self.current[self.same..keep]);
        }
        if keep_state {
            self.durable_state = self.state.clone();
        }
        self.current = self.durable.clone();
        self.start = self.durable_start;
        self.state = self.durable_state.clone();
        self.same = self.current.len();
    }

    /// The durable state and the batches after its floor, as a reopen scans them.
    pub fn recover(&self) -> Recovered {
        let from = self.state.floor.next_offset;
        let found = self
            .current
            .iter()
            .enumerate()
            .filter(|(_, (base, _))| *base >= from)
            .filter(|(_, (_, b))| {
                let h = BatchHeader::parse(b).expect("the memory log holds parsed batches");
                !sluice_core::control::is_hole(&h, b) // no entry (`store.rs`)
            })
            .map(|(i, (base, b))| {
                let h = BatchHeader::parse(b).expect("the memory log holds parsed batches");
                let term = Term::of_stored(LeaderEpoch(h.partition_leader_epoch)).unwrap_or_default();
                (term, *base, Offset(h.last_offset()), u64::try_from(i).expect("fits"))
            })
            .collect();
        Recovered { state: self.state.clone(), found }
    }

    /// The batches in the log now (for checkers).
    pub fn batches(&self) -> &[(Offset, Bytes)] {
        &self.current
    }

    pub fn log_start(&self) -> Offset {
        self.start
    }

    /// DeleteRecords: the log start moves to `to` (durably); the batches below it stay, as a
    /// segment keeps them until retention removes it (the window and a reopen still read
    /// them, as the real log's replica reads do).
    pub fn delete_records(&mut self, to: Offset) {
        assert!(to >= self.start, "the log start only moves forward");
        self.start = to;
        self.durable_start = to;
    }

    /// Compaction as a replica's compactor does it below the Raft floor (tests): the durable
    /// batches at positions `run`, all of one epoch, become one gap batch standing for their
    /// entries (`sluice_core::control::gap_batch`); the layout changes.
    pub fn fold_into_gap(&mut self, run: std::ops::Range<usize>) {
        assert!(run.end <= self.same && run.len() >= 2, "a run of durable batches");
        let headers: Vec<BatchHeader> =
            self.current[run.clone()].iter().map(|(_, b)| BatchHeader::parse(b).expect("parsed at append")).collect();
        let slots = self.current[run.clone()]
            .iter()
            .zip(&headers)
            .map(|((_, b), h)| sluice_core::control::entries_of(h, b))
            .sum();
        let (first, last) = (&headers[0], headers.last().expect("a run"));
        let gap =
            sluice_core::control::gap_batch(first.base_offset, last.last_offset(), first.partition_leader_epoch, slots);
        let tail = self.durable.split_off(self.same);
        self.current.splice(run.clone(), [(Offset(first.base_offset), Bytes::from(gap))]);
        self.same -= run.len() - 1;
        self.durable = self.current[..self.same].to_vec();
        self.durable.extend(tail);
        self.layout += 1;
    }

    /// Moves the log start (DeleteRecords or retention), dropping the batches below it.
    pub fn set_log_start(&mut self, start: Offset) {
        let keep = self.current.partition_point(|(b, _)| *b < start);
        self.current.drain(..keep);
        self.same = self.same.saturating_sub(keep);
        self.durable = self.current[..self.same].to_vec();
        self.start = start;
        self.durable_start = start;
    }
}

/// A [`ReplicaLog`] on a shared [`MemDisk`].
#[derive(Debug, Clone)]
pub struct MemLog(pub Rc<RefCell<MemDisk>>);

impl ReplicaLog for MemLog {
    fn append(&mut self, batch: Bytes) -> Result<u64, LogFault> {
        let mut d = self.0.borrow_mut();
        let h = BatchHeader::parse(&batch).map_err(|e| LogFault::Io(e.to_string()))?;
        let end = d
            .current
            .last()
            .map_or(d.start, |(_, b)| Offset(BatchHeader::parse(b).expect("parsed at append").last_offset() + 1));
        assert_eq!(Offset(h.base_offset), end, "appends go at the log end");
        d.current.push((end, batch));
        Ok(u64::try_from(d.current.len() - 1).expect("fits"))
    }

    fn truncate_to(&mut self, offset: Offset, rank: u32) -> Result<(), LogFault> {
        let mut d = self.0.borrow_mut();
        let at = d.current.partition_point(|(base, _)| *base < offset);
        let keep = (at + usize::try_from(rank).expect("fits")).min(d.current.len());
        d.current.truncate(keep);
        d.same = d.same.min(keep);
        Ok(())
    }

    fn read(&self, base: Offset, rank: u32) -> Option<Bytes> {
        let d = self.0.borrow();
        let i = d.current.partition_point(|(b, _)| *b < base) + usize::try_from(rank).ok()?;
        d.current.get(i).filter(|(b, _)| *b == base).map(|(_, bytes)| bytes.clone())
    }

    /// A snapshot install, durable at once with its state: the real log makes the install
    /// atomic through its install record (`replica/install.rs`).
    fn reset_to(&mut self, start: Offset, state: &PersistedState) -> Result<(), LogFault> {
        let mut d = self.0.borrow_mut();
        d.current.clear();
        d.durable.clear();
        d.start = start;
        d.durable_start = start;
        d.same = 0;
        d.state = state.clone();
        d.durable_state = state.clone();
        d.installs += 1;
        Ok(())
    }

    fn save_state(&mut self, state: &PersistedState) {
        self.0.borrow_mut().state = state.clone();
    }

    fn log_start(&self) -> Offset {
        self.0.borrow().start
    }

    fn clean_wanted(&self) -> Option<Offset> {
        self.0.borrow().clean_wanted
    }

    fn layout(&self) -> u64 {
        self.0.borrow().layout
    }
}
