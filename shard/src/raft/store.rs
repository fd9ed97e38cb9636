//! One replica's Raft storage: the partition's Kafka log (behind [`ReplicaLog`]) seen as a Raft
//! log through the index ↔ offset [`Window`], plus the small persisted Raft state.
//!
//! Contract:
//! - Writes happen only in the driver's handling of a Ready ([`GroupStore::append_entries`],
//!   [`GroupStore::apply_snapshot`], [`GroupStore::set_hard_state`]); raft-rs reads through
//!   [`raft::Storage`]. Appends are written, not durable: the driver makes them durable with one
//!   sync round of all groups before it reports them persisted to raft-rs.
//! - An entry appended at an index the window already has first truncates the log there
//!   (a follower's conflicting suffix, never at or below the floor, which is committed).
//! - The persisted state ([`PersistedState`]: term, vote, commit, conf state, floor, epoch
//!   history) is handed to the log ([`ReplicaLog::save_state`]) whenever term, vote, conf
//!   state or epochs change; the log makes it durable with its next sync. The commit index
//!   alone is saved lazily (raft recomputes it), and so is the floor moved by a trim of the
//!   window (saved once it moved `RAFT_FLOOR_SAVE_BATCHES` batches or `RAFT_FLOOR_SAVE_BYTES`
//!   bytes: a reopen rebuilds from an older floor, reading that much more of the log; each
//!   save costs two fsyncs, which every round paid once the window was full). What is saved
//!   of the commit index is at most the last
//!   index known durable in the log as it is now ([`GroupStore::mark_synced`], lowered by a
//!   truncation): the state file and the log are not synced in a fixed order, so after a crash
//!   the saved state may be newer than the log, and a saved commit index must never cover
//!   entries the log may not have (or may have in an older, overwritten form).
//! - The window trims its front only at or below the commit index, keeping at most `cap`
//!   batches, and further up to the offset a compacted log wants cleanable
//!   ([`ReplicaLog::clean_wanted`]: its sealed segments' end), whose floor is then saved at
//!   once (the log cleans only below its saved floor). A follower needing older entries is fed from the log (catch-up, `catchup.rs`):
//!   while the log starts at offset 0 the store answers raft-rs for every index from 1 —
//!   `first_index` is 1, `entries` below the window answers from the batches of the last
//!   catch-up read or returns `LogTemporarilyUnavailable` and records a read request (only
//!   for raft-rs's asynchronous `SendAppend` context), which the runtime takes
//!   ([`GroupStore::take_catchup_reads`]), makes, and hands back
//!   ([`GroupStore::install_catchup`]) before calling raft-rs's `on_entries_fetched`. A
//!   read's answer is taken only by the log it was made of (`log_id`: new for every store and
//!   every installed snapshot).
//! - Snapshot: raft-rs sends one only when the old entries cannot be served (the log does not
//!   start at offset 0 — DeleteRecords or retention moved it — or a catch-up check failed).
//!   It is taken just before the batch holding the log start ([`GroupStore::snapshot_point`]:
//!   the follower's log then restarts at that batch's base and gets it and every later batch
//!   by appends, as Kafka's follower fetches from the leader's log start). Below the window
//!   that batch is first located (a locate read from the log start to the floor, `catchup.rs`;
//!   the snapshot answers `SnapshotTemporarilyUnavailable` meanwhile, and raft-rs asks again);
//!   once located, the store answers raft-rs from it (`first_index`, the term before it from
//!   the epoch history) and catch-up serves the batches from it. After a failed check the
//!   snapshot is the window's floor. None is given while the log starts at 0 (a failed
//!   catch-up check, compaction's gaps): it would drop what the leader still has below its
//!   window.
//!   Its data is [`SnapshotData`] — "the leader's log up to `next_offset`, with this epoch
//!   history". A follower installs it by restarting its log empty at `next_offset` (as Kafka's
//!   follower does when the leader's log start passed its end): the in-memory log at once, the
//!   real partition log by stopping the group with [`LogFault::Install`] and the new state,
//!   which the runtime makes durable, installs and reopens (`replica::install`).

use super::catchup::{LocatePlan, OldBatches, Origin, ReadPlan, ScanError, ScanOutcome};
use super::control::{self, ControlError};
use super::types::{RaftIndex, Term};
use super::window::{BatchMeta, Floor, Window};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use sluice_core::{LeaderEpoch, Offset};
use sluice_storage::epochs::EpochHistory;
use sluice_storage::raft_state::RaftStateRecord;
use std::cell::RefCell;

/// A write to the replica's log failed: the group stops and is reopened from what is durable
/// (fail-stop, as a crash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogFault {
    #[error("log write failed: {0}")]
    Io(String),
    #[error(transparent)]
    Entry(#[from] ControlError),
    /// The log cannot restart at a snapshot's offset at once (the real partition log: its files
    /// change asynchronously): the group stops and the runtime installs the snapshot — this
    /// state, whose floor is the snapshot — then reopens the group (`replica::install`).
    #[error("a snapshot to install: the log restarts empty at {}", .0.floor_next_offset)]
    Install(Box<RaftStateRecord>),
}

/// The state saved with the log (the raft-state file of a real partition).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PersistedState {
    pub hard: HardState,
    pub conf: ConfState,
    pub floor: Floor,
    pub epochs: EpochHistory,
}

impl PersistedState {
    /// The raft-state file's record (`sluice_storage::raft_state`).
    pub fn to_record(&self) -> RaftStateRecord {
        RaftStateRecord {
            term: self.hard.term,
            vote: self.hard.vote,
            commit: self.hard.commit,
            floor_index: self.floor.index.0,
            floor_term: self.floor.term.0,
            floor_next_offset: self.floor.next_offset,
            voters: self.conf.voters.clone(),
            learners: self.conf.learners.clone(),
            voters_outgoing: self.conf.voters_outgoing.clone(),
            learners_next: self.conf.learners_next.clone(),
            auto_leave: self.conf.auto_leave,
            epochs: self.epochs.clone(),
        }
    }

    pub fn from_record(r: RaftStateRecord) -> PersistedState {
        PersistedState {
            hard: HardState { term: r.term, vote: r.vote, commit: r.commit, ..Default::default() },
            conf: ConfState {
                voters: r.voters,
                learners: r.learners,
                voters_outgoing: r.voters_outgoing,
                learners_next: r.learners_next,
                auto_leave: r.auto_leave,
                ..Default::default()
            },
            floor: Floor {
                index: RaftIndex(r.floor_index),
                term: Term(r.floor_term),
                next_offset: r.floor_next_offset,
            },
            epochs: r.epochs,
        }
    }
}

/// A partition log as Raft storage needs it: the real `PartitionLog` in the broker, an
/// in-memory log in the simulation.
pub trait ReplicaLog {
    /// Appends a stamped batch at the log end; returns its position.
    fn append(&mut self, batch: Bytes) -> Result<u64, LogFault>;
    /// Drops every batch at or after `offset` except the first `rank` batches starting there
    /// (which take no offset): the batch boundary named (offset, rank) (`window.rs`).
    fn truncate_to(&mut self, offset: Offset, rank: u32) -> Result<(), LogFault>;
    /// The batch starting at `base` with rank `rank` there, when it can be read without
    /// waiting.
    fn read(&self, base: Offset, rank: u32) -> Option<Bytes>;
    /// How the control batches this log stores are written: taking no offset, unless the
    /// log cannot hold such batches yet.
    fn control_shape(&self) -> control::Shape {
        control::Shape::NoOffset
    }
    /// Drops everything; the log restarts empty at `start` (a snapshot was installed), its
    /// state `state` (saved as usual afterwards), or answers [`LogFault::Install`] with it.
    fn reset_to(&mut self, start: Offset, state: &PersistedState) -> Result<(), LogFault>;
    /// Records the Raft state to make durable with the next sync.
    fn save_state(&mut self, state: &PersistedState);
    /// The window no longer holds batches below `offset` (a log caching the window's batches
    /// may drop them).
    fn forget_below(&mut self, _offset: Offset) {}
    /// The log's first offset (batches below it were deleted, or the log was reset there).
    fn log_start(&self) -> Offset;
    /// Bytes of the window's batches the log keeps in memory.
    fn cached_bytes(&self) -> usize {
        0
    }
    /// The offset a compacted log would be cleaned up to were the persisted floor there (its
    /// sealed segments' end), when past the floor: the window moves its floor there.
    fn clean_wanted(&self) -> Option<Offset> {
        None
    }
    /// Changes whenever batches below the window may have moved (compaction folded some into
    /// gap batches): offsets remembered for catch-up no longer name batch starts.
    fn layout(&self) -> u64 {
        0
    }
}

/// Where entry `e` is stored when the log ends at `next`: there, except a data batch of
/// [`Term::DIRECT`] whose own base offset lies further on. Such an entry is a copy of a batch
/// written on the direct path, read back with its base from a log that single-replica
/// compaction left with a hole before it (`window.rs`); it keeps its offsets. A producer's
/// batch is never placed: clients' batches have base offset 0 (`net/src/api/produce.rs`),
/// and a Raft group's own entries are never of [`Term::DIRECT`].
fn placement(e: &Entry, next: Offset) -> Offset {
    if Term(e.term) != Term::DIRECT || e.entry_type != raft::eraftpb::EntryType::EntryNormal {
        return next;
    }
    match sluice_core::batch::BatchHeader::parse(&e.data) {
        Ok(h) if !h.is_control() && h.base_offset > next.0 => Offset(h.base_offset),
        _ => next,
    }
}

/// A catch-up read raft-rs waits for: what to read, and raft-rs's context to hand back.
pub struct CatchupRead {
    pub plan: ReadPlan,
    /// The log the read is for (`GroupStore::log_id`): a result for another one is dropped.
    pub log_id: u64,
    /// The log's layout when the read was planned (`ReplicaLog::layout`): of a result read
    /// while compaction moved batches only the batches are kept (raft-rs asks again on error).
    pub layout: u64,
    pub ctx: GetEntriesContext,
}

/// What a snapshot means: the leader's log below `next_offset`, with its epoch history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotData {
    pub next_offset: Offset,
    pub epochs: EpochHistory,
}

impl SnapshotData {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i64(self.next_offset.0);
        b.put_u32(u32::try_from(self.epochs.entries().len()).expect("epochs are few"));
        for &(e, o) in self.epochs.entries() {
            b.put_i32(e.0);
            b.put_i64(o.0);
        }
        b.freeze()
    }

    /// Checked decoding (the data comes from another broker).
    pub fn decode(mut b: &[u8]) -> Option<SnapshotData> {
        if b.remaining() < 12 {
            return None;
        }
        let next_offset = Offset(b.get_i64());
        let n = usize::try_from(b.get_u32()).ok()?;
        if b.remaining() != n.checked_mul(12)? {
            return None;
        }
        let entries = (0..n).map(|_| (LeaderEpoch(b.get_i32()), Offset(b.get_i64()))).collect();
        Some(SnapshotData { next_offset, epochs: EpochHistory::from_entries(entries)? })
    }
}

/// One replica's storage for raft-rs.
pub struct GroupStore<L: ReplicaLog> {
    log: L,
    hard: HardState,
    conf: ConfState,
    window: Window,
    epochs: EpochHistory,
    cap: usize,
    /// The last index durable in the log as it is now (the driver reports raft-rs's persisted
    /// index after each sync round; a truncation lowers it).
    synced: RaftIndex,
    /// The state changed in a way that must be saved (not only the commit index).
    dirty: bool,
    /// How far (batches, bytes) the window's floor moved since the state was last handed to
    /// the log: a trim alone is saved lazily (module docs).
    unsaved_trim: (usize, usize),
    /// Below the window: anchors and the batches of the last catch-up read.
    old: OldBatches,
    /// Catch-up reads raft-rs asked for (first index wanted, context), not yet taken.
    old_requests: RefCell<Vec<(RaftIndex, GetEntriesContext)>>,
    /// First indexes of the catch-up reads under way.
    old_in_flight: RefCell<Vec<RaftIndex>>,
    /// A moved log start raft-rs needs located (for a snapshot), not yet taken.
    locate_wanted: std::cell::Cell<Option<Offset>>,
    /// The log start a locate scan under way was asked for.
    locate_in_flight: Option<Offset>,
    /// Which log this store's catch-up reads are of: new for every store (a group reopened
    /// after an install is a new store over the same group id) and at every snapshot
    /// installed, so the answer of a read made before is never taken as this log's.
    log_id: u64,
}

/// A log id no store had (`GroupStore::log_id`).
fn fresh_log_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl<L: ReplicaLog> GroupStore<L> {
    /// A brand-new replica of a group whose members are `voters` (every replica starts with
    /// the same conf state and an empty log, so no bootstrap snapshot is needed).
    pub fn create(mut log: L, voters: Vec<u64>, start: Offset, cap: usize) -> GroupStore<L> {
        let conf = ConfState { voters, ..Default::default() };
        let floor = Floor { index: RaftIndex(0), term: Term(0), next_offset: start };
        let state = PersistedState { conf: conf.clone(), floor, ..Default::default() };
        log.save_state(&state);
        let window = Window::new(floor);
        GroupStore {
            log,
            hard: HardState::default(),
            conf,
            window,
            epochs: state.epochs,
            cap,
            synced: floor.index,
            dirty: false,
            unsaved_trim: (0, 0),
            old: OldBatches::default(),
            old_requests: RefCell::new(Vec::new()),
            old_in_flight: RefCell::new(Vec::new()),
            locate_wanted: std::cell::Cell::new(None),
            locate_in_flight: None,
            log_id: fresh_log_id(),
        }
    }

    /// Reopens a replica from its durable state and the batches found in its log after the
    /// saved floor (term, base, last, position), in order. Returns the store and the offset
    /// its log must be truncated to when the scan stopped at a damaged batch.
    pub fn open(
        log: L,
        state: PersistedState,
        found: impl IntoIterator<Item = (Term, Offset, Offset, u64)>,
        cap: usize,
    ) -> Result<GroupStore<L>, LogFault> {
        let (window, stop) = Window::rebuild(state.floor, found);
        let synced = window.last_index();
        let mut s = GroupStore {
            log,
            hard: state.hard,
            conf: state.conf,
            window,
            epochs: state.epochs,
            cap,
            synced,
            dirty: true,
            unsaved_trim: (0, 0),
            old: OldBatches::default(),
            old_requests: RefCell::new(Vec::new()),
            old_in_flight: RefCell::new(Vec::new()),
            locate_wanted: std::cell::Cell::new(None),
            locate_in_flight: None,
            log_id: fresh_log_id(),
        };
        if stop.is_some() {
            // Cut where the window ends (a hole batch before the damaged batch goes too).
            let (at, rank) = (s.window.next_offset(), s.window.rank_at_end());
            s.log.truncate_to(at, rank)?;
        }
        s.rebuild_epochs();
        // The commit index is saved lazily: never ahead of the entries found.
        s.hard.commit = s.hard.commit.clamp(s.window.floor().index.0, s.window.last_index().0);
        s.save();
        Ok(s)
    }

    /// Epochs above the floor are rebuilt from the scanned batches: the saved history may be
    /// newer or older than the batches that survived a crash (the state file and the log are
    /// synced together, but a crash may keep either's unsynced part); below the floor both are
    /// durable and agree.
    fn rebuild_epochs(&mut self) {
        self.epochs.truncate_from_end(self.window.floor().next_offset);
        let metas: Vec<BatchMeta> = self.window.iter_from(self.window.first_index()).copied().collect();
        for m in metas {
            self.assign_epoch(&m);
        }
    }

    fn assign_epoch(&mut self, m: &BatchMeta) {
        let epoch = m.term.epoch().expect("stored terms fit an epoch");
        if self.epochs.latest() != Some(epoch) {
            let ok = self.epochs.assign(epoch, m.base);
            assert!(ok, "epochs increase along the log");
            self.dirty = true;
        }
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    pub fn window(&self) -> &Window {
        &self.window
    }

    pub fn epochs(&self) -> &EpochHistory {
        &self.epochs
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    /// The high watermark for commit index `commit` (None when it lies outside the window).
    pub fn high_watermark(&self, commit: RaftIndex) -> Option<Offset> {
        self.window.high_watermark(commit)
    }

    /// OffsetForLeaderEpoch on this replica. Epoch 0 is the direct path's: the batches a
    /// single-replica partition took before it became a Raft group (`replica::convert`). A
    /// replica that received them from the converted group's leader stored them with epoch 1
    /// (`Term::DIRECT`, the term they travel with), so where the history starts at epoch 1,
    /// epoch 0 is answered as epoch 1: a consumer positioned on the direct path is not told
    /// that the log diverged at its start. (Elsewhere no batch carries epoch 0, and no client
    /// asks for it.)
    pub fn end_offset_for(&self, epoch: LeaderEpoch) -> (LeaderEpoch, Offset) {
        let direct = Term::DIRECT.epoch().expect("fits");
        let starts_direct = self.epochs.entries().first().is_some_and(|e| e.0 == direct);
        let epoch = if epoch == LeaderEpoch(0) && starts_direct { direct } else { epoch };
        self.epochs.end_offset_for(epoch, self.window.next_offset())
    }

    /// Writes the entries of a Ready (not yet durable). Returns where each landed.
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<Vec<BatchMeta>, LogFault> {
        let Some(first) = entries.first() else { return Ok(Vec::new()) };
        if first.index <= self.window.last_index().0 {
            self.truncate_from(RaftIndex(first.index))?;
        }
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            out.push(self.append_one(e)?);
        }
        Ok(out)
    }

    fn truncate_from(&mut self, from: RaftIndex) -> Result<(), LogFault> {
        assert!(from.0 > self.hard.commit.min(self.window.last_index().0), "never truncate committed entries");
        self.synced = self.synced.min(RaftIndex(from.0 - 1));
        let (to, rank) = self.window.truncate_from(from);
        self.log.truncate_to(to, rank)?;
        let before = self.epochs.clone();
        self.epochs.truncate_from_end(to);
        // Batches kept at `to` (taking no offset) may have started an epoch there.
        let kept: Vec<BatchMeta> =
            self.window.iter_from(self.window.first_index()).filter(|m| m.base == to).copied().collect();
        for m in kept {
            self.assign_epoch(&m);
        }
        self.dirty |= before != self.epochs;
        Ok(())
    }

    fn append_one(&mut self, e: &Entry) -> Result<BatchMeta, LogFault> {
        assert_eq!(e.index, self.window.last_index().0 + 1, "entries are appended in order");
        let base = placement(e, self.window.next_offset());
        self.fill_hole(self.window.next_offset(), base, e.term)?;
        let b = control::entry_to_batch(e, base, self.log.control_shape())?;
        let h = sluice_core::batch::BatchHeader::parse(&b).map_err(|x| ControlError::BadBatch(x.to_string()))?;
        let pos = self.log.append(b)?;
        let meta =
            BatchMeta { index: RaftIndex(e.index), term: Term(e.term), base, last: Offset(h.last_offset()), pos };
        self.window.push(meta);
        self.assign_epoch(&meta);
        Ok(meta)
    }

    /// Covers the offsets `from..to` (none when equal) with hole batches of `term`: a
    /// direct-path batch after a hole goes at its own base (`placement`), and the log's
    /// batches must still follow each other (`sluice_core::control::hole_batch`).
    fn fill_hole(&mut self, from: Offset, to: Offset, term: u64) -> Result<(), LogFault> {
        let epoch = Term(term).epoch().ok_or(ControlError::TermTooLarge(term))?;
        let mut at = from.0;
        while at < to.0 {
            let last = (to.0 - 1).min(at.saturating_add(i64::from(i32::MAX)));
            self.log.append(Bytes::from(sluice_core::control::hole_batch(at, last, epoch.0)))?;
            at = last + 1;
        }
        Ok(())
    }

    /// Entries up to `index` are durable in the log as it is now (after a sync round).
    pub fn mark_synced(&mut self, index: RaftIndex) {
        self.synced = index.min(self.window.last_index());
    }

    /// A Ready's hard state; saved now when term or vote changed, else with the next change.
    pub fn set_hard_state(&mut self, hs: HardState) {
        assert!(hs.term >= self.hard.term, "terms never go back");
        self.dirty |= hs.term != self.hard.term || hs.vote != self.hard.vote;
        self.hard = hs;
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf = cs;
        self.dirty = true;
    }

    /// Installs a snapshot: the log restarts at its offset.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> Result<(), LogFault> {
        let md = snap.get_metadata();
        let data =
            SnapshotData::decode(&snap.data).ok_or(LogFault::Entry(ControlError::BadControl("snapshot data")))?;
        assert!(md.index >= self.hard.commit, "a snapshot never goes back past the commit index");
        let floor = Floor { index: RaftIndex(md.index), term: Term(md.term), next_offset: data.next_offset };
        let mut hard = self.hard.clone();
        hard.term = hard.term.max(md.term);
        hard.commit = md.index;
        let state = PersistedState { hard, conf: md.get_conf_state().clone(), floor, epochs: data.epochs.clone() };
        self.log.reset_to(data.next_offset, &state)?;
        self.old.clear();
        self.old_requests.get_mut().clear();
        self.old_in_flight.get_mut().clear();
        self.locate_in_flight = None;
        self.log_id = fresh_log_id();
        self.window.reset(Floor { index: RaftIndex(md.index), term: Term(md.term), next_offset: data.next_offset });
        self.epochs = data.epochs;
        self.conf = md.get_conf_state().clone();
        self.hard.term = self.hard.term.max(md.term);
        self.hard.commit = md.index;
        self.synced = RaftIndex(md.index);
        self.dirty = true;
        Ok(())
    }

    /// Trims the window to its bound, never past `applied` (and so the commit index).
    /// Also trims while the log's cache of the window holds more than `RAFT_WINDOW_BYTES`.
    pub fn compact(&mut self, applied: RaftIndex) {
        let over = self.window.len().saturating_sub(self.cap);
        let mut upto = RaftIndex(self.window.floor().index.0 + u64::try_from(over).expect("fits"));
        let excess = self.log.cached_bytes().saturating_sub(sluice_core::limits::RAFT_WINDOW_BYTES);
        if excess > 0 {
            let mut freed = 0;
            for m in self.window.iter_from(self.window.first_index()) {
                if freed >= excess || m.index > applied {
                    break;
                }
                freed += self.log.read(m.base, self.window.rank(m.index)).map_or(0, |b| b.len());
                upto = upto.max(m.index);
            }
        }
        let wanted = self.clean_wanted();
        let upto = upto.max(wanted.unwrap_or(RaftIndex(0))).min(applied);
        if upto > self.window.floor().index {
            let before = self.window.floor();
            self.window.trim_to(upto);
            let after = self.window.floor();
            let cached = self.log.cached_bytes();
            self.log.forget_below(after.next_offset);
            let bytes = cached - self.log.cached_bytes();
            let batches = usize::try_from(after.index.0 - before.index.0).expect("a window's length fits");
            self.note_trim(batches, bytes);
            // The log waits for this floor to be durable before cleaning below it.
            self.dirty |= wanted.is_some_and(|w| self.window.floor().index >= w);
        }
    }

    /// The last entry of the window ending at or before the offset the log wants cleanable
    /// ([`ReplicaLog::clean_wanted`]), when past the floor: trimming the window to it (once
    /// applied) and saving that floor lets compaction clean the sealed segments.
    fn clean_wanted(&self) -> Option<RaftIndex> {
        let want = self.log.clean_wanted()?;
        if want <= self.window.floor().next_offset {
            return None;
        }
        let first = self.window.first_index();
        let end = self.window.iter_from(first).take_while(|m| m.next_offset() <= want);
        end.filter(|m| !m.takes_no_offset()).last().map(|m| m.index)
    }

    /// A trim alone need not be durable before the next round: a reopen from an older floor
    /// rebuilds the window from further back. It is saved once the floor moved
    /// `RAFT_FLOOR_SAVE_BATCHES` batches or `RAFT_FLOOR_SAVE_BYTES` bytes, which bounds what a
    /// reopen reads again, instead of with every round (a state file write is two fsyncs).
    fn note_trim(&mut self, batches: usize, bytes: usize) {
        self.unsaved_trim.0 += batches;
        self.unsaved_trim.1 += bytes;
        if self.unsaved_trim.0 >= sluice_core::limits::RAFT_FLOOR_SAVE_BATCHES
            || self.unsaved_trim.1 >= sluice_core::limits::RAFT_FLOOR_SAVE_BYTES
        {
            self.dirty = true;
        }
    }

    /// Hands the state to the log when it changed (called in each Ready round, before and
    /// after the committed entries are applied); whether it did.
    pub fn save_if_dirty(&mut self) -> bool {
        let dirty = self.dirty;
        if dirty {
            self.save();
        }
        dirty
    }

    fn save(&mut self) {
        let mut hard = self.hard.clone();
        hard.commit = hard.commit.min(self.synced.0).max(self.window.floor().index.0);
        let state =
            PersistedState { hard, conf: self.conf.clone(), floor: self.window.floor(), epochs: self.epochs.clone() };
        self.log.save_state(&state);
        self.dirty = false;
        self.unsaved_trim = (0, 0);
    }

    /// Where a snapshot is taken (index, term, next offset; the index at most `commit`): just
    /// before the batch holding the log start `start`, so the follower's log restarts at that
    /// batch's base and gets it and every later batch by ordinary appends, as Kafka's follower
    /// truncates fully and fetches from the leader's log start (the batch holding it, whole).
    /// In the window: its floor or the end of one of its batches, the last such point at or
    /// before `start`. Below the window: the located origin (catch-up serves the batches from
    /// there); None while it is being located (a locate read is asked for). When catch-up
    /// stopped for this group (a failed check), the window's floor: the batches between the
    /// log start and the floor are then not copied.
    fn snapshot_point(&self, commit: RaftIndex, start: Offset) -> Option<(RaftIndex, Term, Offset)> {
        let floor = self.window.floor();
        if start < floor.next_offset {
            if let Some(o) = self.old.origin(start) {
                return Some((RaftIndex(o.index.0 - 1), o.prev_term, o.base));
            }
            if self.old.is_disabled() {
                return Some((floor.index, floor.term, floor.next_offset));
            }
            self.locate_wanted.set(Some(start));
            return None;
        }
        let mut best = (floor.index, floor.term, floor.next_offset);
        for m in self.window.iter_from(self.window.first_index()).take_while(|m| m.index <= commit) {
            if m.next_offset() > start {
                break;
            }
            best = (m.index, m.term, m.next_offset());
        }
        Some(best)
    }

    /// Where counting below the window starts for the log as it is now (None: nothing below
    /// the window is served).
    fn origin(&self) -> Option<Origin> {
        self.old.origin(self.log.log_start())
    }

    /// Entries from `low` (below the window) out of the last catch-up read, when it holds
    /// `low` and the term of `low - 1` is known (raft-rs sends it with them).
    fn old_entries(&self, low: u64, high: u64, origin: Origin) -> Option<raft::Result<Vec<Entry>>> {
        let prev = RaftIndex(low - 1);
        let prev_known =
            prev.0 + 1 == origin.index.0 || self.old.get(prev).is_some() || prev >= self.window.floor().index;
        if !prev_known || self.old.get(RaftIndex(low)).is_none() {
            return None;
        }
        let mut out = Vec::new();
        let most = sluice_core::limits::RAFT_MAX_ENTRIES_PER_MSG; // what a receiver decodes
        for (m, b) in self.old.iter_from(RaftIndex(low)).take_while(|(m, _)| m.index.0 < high).take(most) {
            match control::batch_to_entry(m.index.0, m.term, b.clone()) {
                Ok(e) => out.push(e),
                Err(e) => return Some(Err(raft::Error::Store(StorageError::Other(Box::new(e))))),
            }
        }
        Some(Ok(out))
    }

    /// Records that raft-rs waits for the entries from `low` (below the window).
    fn request_old(&self, low: u64, ctx: GetEntriesContext, origin: Origin) {
        let want = RaftIndex(low.saturating_sub(1).max(origin.index.0));
        let mut reqs = self.old_requests.borrow_mut();
        let known = reqs.iter().any(|(w, _)| *w == want) || self.old_in_flight.borrow().contains(&want);
        if !known && reqs.len() < sluice_core::limits::RAFT_CATCHUP_MAX_REQUESTS {
            reqs.push((want, ctx));
        }
    }

    /// The catch-up reads raft-rs waits for (each then under way until installed), and the
    /// locate read a snapshot waits for (its context asks raft-rs for nothing: raft-rs asks
    /// for the snapshot again at its next attempt).
    pub fn take_catchup_reads(&mut self) -> Vec<CatchupRead> {
        let reqs = std::mem::take(self.old_requests.get_mut());
        let layout = self.log.layout();
        self.old.relayout(layout);
        let floor = self.window.floor();
        let mut out = Vec::with_capacity(reqs.len() + 1);
        let start = self.log.log_start();
        if let Some(s) = self.locate_wanted.take() {
            let needed = s == start && s < floor.next_offset && !self.old.is_disabled() && self.origin().is_none();
            if needed && self.locate_in_flight.is_none() {
                self.locate_in_flight = Some(s);
                out.push(CatchupRead {
                    plan: ReadPlan::Locate(LocatePlan { log_start: s, floor }),
                    log_id: self.log_id,
                    layout,
                    ctx: GetEntriesContext::empty(true),
                });
            }
        }
        for (want, ctx) in reqs {
            let Some(origin) = self.origin().filter(|o| want >= o.index && want <= floor.index) else {
                // The window moved down (a snapshot), the log start moved or serving stopped:
                // raft-rs asks again.
                continue;
            };
            self.old_in_flight.get_mut().push(want);
            let plan = ReadPlan::Scan(self.old.plan(want, floor, origin));
            out.push(CatchupRead { plan, log_id: self.log_id, layout, ctx });
        }
        out
    }

    /// A catch-up read's result: its batches answer raft-rs from now; a located log start
    /// becomes the origin; a failed check stops catch-up for this group (raft-rs falls back
    /// to a snapshot at the window's floor). The result of a read of another log (made before
    /// a snapshot was installed) is dropped.
    pub fn install_catchup(&mut self, read: &CatchupRead, result: Result<ScanOutcome, ScanError>) {
        if read.log_id != self.log_id {
            return;
        }
        match &read.plan {
            ReadPlan::Scan(p) => self.old_in_flight.get_mut().retain(|w| *w != p.want),
            ReadPlan::Locate(_) => self.locate_in_flight = None,
        }
        let moved = read.layout != self.log.layout();
        match result {
            // Compaction moved batches while the read ran. Batches that followed each other
            // are still the right entries (a gap batch counts the entries it folded), but the
            // offsets found may no longer start batches; a failed check proves nothing.
            Ok(mut out) if moved => {
                out.anchors.clear();
                out.front_is_anchor = false;
                out.located = None;
                self.old.install(out);
            }
            Err(_) if moved => {}
            Ok(out) => {
                if let Some(l) = out.located {
                    let prev_term = self.term_before(l.index, l.base, l.term);
                    let origin = Origin { index: l.index, base: l.base, prev_term, read_at: l.log_start, skip: l.skip };
                    self.old.set_located(l.log_start, origin);
                }
                self.old.install(out);
            }
            Err(ScanError::Io(_)) => {}
            Err(_) => self.old.disable(),
        }
    }

    /// The term of the entry before the batch at `index` starting at `base`, from the epoch
    /// history (which keeps every epoch's start: it is cut only at the log's end), at most
    /// `term` (that batch's). That entry is a batch taking no offset at `base` or the batch
    /// ending just before it; a new term's first entry takes no offset, so an epoch starting
    /// at `base` means that entry is at `base` and has the latest such epoch, and otherwise
    /// the epoch covering `base - 1` is its term. Raft needs it as the term of the entry before
    /// a located origin, which the log may no longer hold; when the history does not reach
    /// that far, `term` stands in: a term no lower than the real one and no higher than any
    /// later entry's, so an election still prefers every replica holding a later committed
    /// entry.
    fn term_before(&self, index: RaftIndex, base: Offset, term: Term) -> Term {
        if index.0 <= 1 {
            return Term(0);
        }
        let entries = self.epochs.entries();
        let covering = entries.partition_point(|e| e.1 <= base);
        let epoch = covering.checked_sub(1).map(|i| entries[i].0);
        epoch.and_then(Term::of_stored).map_or(term, |t| t.min(term))
    }

    /// Bytes of old batches held for catch-up.
    pub fn catchup_bytes(&self) -> usize {
        self.old.cached_bytes()
    }

    fn entry_at(&self, meta: &BatchMeta) -> raft::Result<Entry> {
        let rank = self.window.rank(meta.index);
        let b = self.log.read(meta.base, rank).ok_or(raft::Error::Store(StorageError::Unavailable))?;
        control::batch_to_entry(meta.index.0, meta.term, b)
            .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))
    }
}

impl<L: ReplicaLog> raft::Storage for GroupStore<L> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard.clone(), self.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.window.first_index().0 {
            let Some(origin) = self.origin().filter(|o| low >= o.index.0) else {
                return Err(raft::Error::Store(StorageError::Compacted));
            };
            if let Some(got) = self.old_entries(low, high, origin) {
                let mut out = got?;
                raft::util::limit_size(&mut out, max_size.into());
                return Ok(out);
            }
            if !ctx.can_async() {
                return Err(raft::Error::Store(StorageError::Compacted));
            }
            self.request_old(low, ctx, origin);
            return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
        }
        assert!(high <= self.window.last_index().0 + 1, "entries past the last index asked");
        let mut out = Vec::new();
        for m in self.window.iter_from(RaftIndex(low)).take_while(|m| m.index.0 < high) {
            out.push(self.entry_at(m)?);
        }
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.window.floor().index.0 {
            let Some(origin) = self.origin().filter(|o| idx + 1 >= o.index.0) else {
                return Err(raft::Error::Store(StorageError::Compacted));
            };
            if idx + 1 == origin.index.0 {
                return Ok(origin.prev_term.0);
            }
            return self
                .old
                .get(RaftIndex(idx))
                .map(|b| b.0.term.0)
                .ok_or(raft::Error::Store(StorageError::Unavailable));
        }
        self.window.term(RaftIndex(idx)).map(|t| t.0).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        let window = self.window.first_index();
        Ok(self.origin().map_or(window, |o| o.index.min(window)).0)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.window.last_index().0)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let commit = RaftIndex(self.hard.commit.min(self.window.last_index().0));
        if commit.0 < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let start = self.log.log_start();
        if start == Offset(0) {
            // Catch-up failed on a log that still starts at 0 (compaction left gaps in it): a
            // snapshot would restart the follower at the window and drop what the leader
            // still has below it (a compacted topic's keys); the follower waits instead.
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let Some((mut index, mut term, mut next_offset)) = self.snapshot_point(commit, start) else {
            // The log start is being located (a catch-up read): raft-rs asks again later.
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        };
        if request_index > index.0 {
            index = RaftIndex(request_index);
            term = self.window.term(index).expect("a requested snapshot index is in the window");
            next_offset = self.window.high_watermark(index).expect("in the window");
        }
        if index.0 == 0 {
            // raft-rs refuses an empty snapshot (index 0): nothing to send yet.
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut epochs = self.epochs.clone();
        epochs.truncate_from_end(next_offset);
        let mut md = SnapshotMetadata { index: index.0, term: term.0, ..Default::default() };
        md.set_conf_state(self.conf.clone());
        let mut snap = Snapshot { data: SnapshotData { next_offset, epochs }.encode(), ..Default::default() };
        snap.set_metadata(md);
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::memlog::{MemDisk, MemLog};
    use raft::Storage as _;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// An entry holding a data batch of `records` records (0: a leader's empty entry).
    /// A store over an empty in-memory log starting at offset 0, with its disk (`cap`: the
    /// window's capacity in entries).
    fn mem_store(voters: Vec<u64>, cap: usize) -> (Rc<RefCell<MemDisk>>, GroupStore<MemLog>) {
        let disk = Rc::new(RefCell::new(MemDisk::new(Offset(0))));
        let store = GroupStore::create(MemLog(disk.clone()), voters, Offset(0), cap);
        (disk, store)
    }

    fn entry(index: u64, term: u64, records: usize) -> Entry {
        let data = if records == 0 {
            Bytes::new()
        } else {
            let recs: Vec<_> = (0..records).map(|_| sluice_core::batch::Record { key: None, value: b"v" }).collect();
            Bytes::from(sluice_core::batch::build(&recs, 0))
        };
        Entry { index, term, data, ..Default::default() }
    }

    fn new_store() -> (Rc<RefCell<MemDisk>>, GroupStore<MemLog>) {
        let (disk, s) = mem_store(vec![1, 2, 3], 100);
        (disk, s)
    }

    fn reopen(disk: &Rc<RefCell<MemDisk>>, cap: usize) -> GroupStore<MemLog> {
        let rec = disk.borrow().recover();
        GroupStore::open(MemLog(disk.clone()), rec.state, rec.found, cap).expect("reopens")
    }

    #[test]
    fn entries_map_to_offsets_and_epochs() {
        let (_, mut s) = new_store();
        let metas = s.append_entries(&[entry(1, 1, 0), entry(2, 1, 3), entry(3, 2, 2)]).expect("appends");
        let spans: Vec<_> = metas.iter().map(|m| (m.index.0, m.base.0, m.last.0)).collect();
        // The new leader's empty entry takes no offset: the first record is at offset 0.
        assert_eq!(spans, vec![(1, 0, -1), (2, 0, 2), (3, 3, 4)]);
        assert_eq!(s.epochs().entries(), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(2), Offset(3))]);
        assert_eq!(s.high_watermark(RaftIndex(1)), Some(Offset(0)));
        assert_eq!(s.high_watermark(RaftIndex(2)), Some(Offset(3)));
        assert_eq!(s.end_offset_for(LeaderEpoch(1)), (LeaderEpoch(1), Offset(3)));
        assert_eq!(s.end_offset_for(LeaderEpoch(2)), (LeaderEpoch(2), Offset(5)));
        // raft-rs reads back what was appended: the empty entry, then the batches as stamped.
        let back = s.entries(1, 4, None, GetEntriesContext::empty(false)).expect("in the window");
        assert!(back[0].data.is_empty());
        let h = sluice_core::batch::validate(&back[2].data).expect("a valid stamped batch");
        assert_eq!((h.base_offset, h.partition_leader_epoch, back[2].term), (3, 2, 2));
    }

    #[test]
    fn the_direct_paths_epoch_is_answered_as_the_term_its_batches_travelled_with() {
        let (_, mut s) = new_store();
        // A converted partition's batches, as a new replica gets them (term 1), then term 3.
        s.append_entries(&[entry(1, 1, 3), entry(2, 1, 2), entry(3, 3, 0), entry(4, 3, 1)]).expect("appends");
        assert_eq!(s.epochs().entries(), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(3), Offset(5))]);
        assert_eq!(s.end_offset_for(LeaderEpoch(0)), (LeaderEpoch(1), Offset(5)), "not a divergence at 0");
        assert_eq!(s.end_offset_for(LeaderEpoch(1)), (LeaderEpoch(1), Offset(5)));
        assert_eq!(s.end_offset_for(LeaderEpoch(2)), (LeaderEpoch(1), Offset(5)));
    }

    #[test]
    fn a_conflicting_entry_truncates_the_log_and_the_epochs() {
        let (disk, mut s) = new_store();
        s.append_entries(&[entry(1, 1, 0), entry(2, 1, 3), entry(3, 2, 2), entry(4, 2, 1)]).expect("appends");
        s.append_entries(&[entry(3, 3, 1)]).expect("replaces index 3 on");
        assert_eq!(s.last_index().expect("infallible"), 3);
        assert_eq!(s.window().next_offset(), Offset(4));
        assert_eq!(disk.borrow().batches().len(), 3);
        assert_eq!(s.epochs().entries(), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(3), Offset(3))]);
        assert_eq!(s.end_offset_for(LeaderEpoch(2)), (LeaderEpoch(1), Offset(3)));
    }

    #[test]
    fn control_entries_take_no_offset_through_truncation_and_reopen() {
        let (disk, mut s) = new_store();
        // Leader 1's empty entry, two records, leaders 2 and 3's empty entries, one record.
        let metas = s
            .append_entries(&[entry(1, 1, 0), entry(2, 1, 2), entry(3, 2, 0), entry(4, 3, 0), entry(5, 3, 1)])
            .expect("appends");
        let spans: Vec<_> = metas.iter().map(|m| (m.base.0, m.last.0)).collect();
        assert_eq!(spans, vec![(0, -1), (0, 1), (2, 1), (2, 1), (2, 2)], "leader changes take no offset");
        assert_eq!(s.epochs().entries(), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(3), Offset(2))]);
        // Leader 4 keeps index 3 and replaces index 4 on: the log is cut at offset 2 after the
        // one batch there that stays.
        s.append_entries(&[entry(4, 4, 0), entry(5, 4, 1)]).expect("replaces index 4 on");
        assert_eq!(disk.borrow().batches().len(), 5);
        let terms: Vec<i32> = disk
            .borrow()
            .batches()
            .iter()
            .map(|(_, b)| sluice_core::batch::BatchHeader::parse(b).expect("parses").partition_leader_epoch)
            .collect();
        assert_eq!(terms, vec![1, 1, 2, 4, 4]);
        assert_eq!(s.epochs().entries(), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(4), Offset(2))]);
        assert_eq!(s.window().index_of_offset(Offset(2)), Some(RaftIndex(5)));
        let back = s.entries(3, 6, None, GetEntriesContext::empty(false)).expect("in the window");
        assert_eq!(
            back.iter().map(|e| (e.term, e.data.is_empty())).collect::<Vec<_>>(),
            [(2, true), (4, true), (4, false)]
        );
        // A reopen finds the same entries at the same offsets.
        s.mark_synced(RaftIndex(5));
        s.set_hard_state(HardState { term: 4, vote: 1, commit: 5, ..Default::default() });
        s.save_if_dirty();
        disk.borrow_mut().sync().expect("no fault");
        let r = reopen(&disk, 100);
        assert_eq!(r.last_index().expect("infallible"), 5);
        assert_eq!(r.window().next_offset(), Offset(3));
        assert_eq!(r.window().rank(RaftIndex(4)), 1);
        assert_eq!(r.epochs(), s.epochs());
        let again = r.entries(3, 6, None, GetEntriesContext::empty(false)).expect("in the window");
        assert_eq!(again, back);
    }

    #[test]
    fn reopening_rebuilds_the_window_from_the_saved_floor() {
        let (disk, mut s) = new_store();
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1 + i / 4, 2)).collect();
        s.append_entries(&entries).expect("appends");
        s.mark_synced(RaftIndex(10));
        s.set_hard_state(HardState { term: 3, vote: 1, commit: 8, ..Default::default() });
        s.compact(RaftIndex(8)); // cap 100: nothing to trim
        s.save();
        disk.borrow_mut().sync().expect("no fault");
        s.append_entries(&[entry(11, 3, 1)]).expect("appends, never synced");
        drop(s);
        disk.borrow_mut().crash(0, false);
        let r = reopen(&disk, 4);
        assert_eq!((r.window().first_index(), r.last_index().expect("infallible")), (RaftIndex(1), 10));
        assert_eq!(r.hard_state().commit, 8);
        assert_eq!(r.window().next_offset(), Offset(20));
        assert_eq!(r.window().index_of_offset(Offset(13)), Some(RaftIndex(7)));
        assert_eq!(r.epochs(), s_epochs(&[(1, 0), (2, 6), (3, 14)]).as_ref().expect("ascending"));
    }

    fn s_epochs(e: &[(i32, i64)]) -> Option<EpochHistory> {
        EpochHistory::from_entries(e.iter().map(|&(a, b)| (LeaderEpoch(a), Offset(b))).collect())
    }

    #[test]
    fn the_window_trims_only_committed_entries_and_then_answers_compacted() {
        let (disk, mut s) = mem_store(vec![1], 3);
        let entries: Vec<Entry> = (1..=8).map(|i| entry(i, 1, 1)).collect();
        s.append_entries(&entries).expect("appends");
        s.compact(RaftIndex(2));
        assert_eq!(s.window().first_index(), RaftIndex(3), "never past the applied index");
        s.compact(RaftIndex(8));
        assert_eq!(s.window().first_index(), RaftIndex(6));
        assert_eq!(s.first_index().expect("infallible"), 1, "older entries are read from the log");
        assert_eq!(s.term(5).expect("the floor's term"), 1);
        assert!(matches!(
            s.entries(4, 6, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        // The saved floor lets a reopen scan from offset 5 only.
        s.save();
        let rec = disk.borrow().recover();
        assert_eq!(rec.state.floor, Floor { index: RaftIndex(5), term: Term(1), next_offset: Offset(5) });
        assert_eq!(rec.found.len(), 3);
    }

    #[test]
    fn a_log_wanting_its_sealed_segments_cleaned_gets_its_floor_moved_and_saved_at_once() {
        let (disk, mut s) = mem_store(vec![1], 100);
        // Entries 1..=8 of two records each: offsets 0..16.
        let entries: Vec<Entry> = (1..=8).map(|i| entry(i, 1, 2)).collect();
        s.append_entries(&entries).expect("appends");
        s.mark_synced(RaftIndex(8));
        s.set_hard_state(HardState { term: 1, vote: 1, commit: 8, ..Default::default() });
        s.save_if_dirty();
        s.compact(RaftIndex(8));
        assert_eq!(s.window().first_index(), RaftIndex(1), "nothing wanted: a window under its cap stays");
        // Sealed segments end at offset 9, inside entry 5 (offsets 8..10): the floor goes to
        // entry 4's end, never into a batch, and is saved without waiting for 1,024 batches.
        disk.borrow_mut().clean_wanted = Some(Offset(9));
        s.compact(RaftIndex(3));
        assert_eq!(s.window().floor().index, RaftIndex(3), "never past the applied index");
        assert!(!s.save_if_dirty(), "a floor short of what is wanted waits for the next trim");
        s.compact(RaftIndex(8));
        assert_eq!(s.window().floor(), Floor { index: RaftIndex(4), term: Term(1), next_offset: Offset(8) });
        assert!(s.save_if_dirty(), "the floor the log waits for is saved at once");
        assert_eq!(disk.borrow().recover().state.floor.next_offset, Offset(8));
        s.compact(RaftIndex(8));
        assert!(!s.save_if_dirty(), "once the floor is there, nothing more is wanted");
        assert_eq!(s.window().first_index(), RaftIndex(5));
    }

    #[test]
    fn a_trim_alone_is_saved_lazily_and_a_reopen_from_the_older_floor_rebuilds() {
        let (disk, mut s) = mem_store(vec![1], 3);
        let entries: Vec<Entry> = (1..=8).map(|i| entry(i, 1, 1)).collect();
        s.append_entries(&entries).expect("appends");
        s.mark_synced(RaftIndex(8));
        s.set_hard_state(HardState { term: 1, vote: 1, commit: 8, ..Default::default() });
        s.save_if_dirty();
        let before = disk.borrow().recover().state.floor;
        s.compact(RaftIndex(8));
        assert_eq!(s.window().first_index(), RaftIndex(6));
        s.save_if_dirty();
        assert_eq!(disk.borrow().recover().state.floor, before, "a small trim is not saved");
        let r = reopen(&disk, 3);
        assert_eq!((r.window().first_index(), r.last_index().expect("infallible")), (RaftIndex(1), 8));
        assert_eq!(r.window().index_of_offset(Offset(6)), Some(RaftIndex(7)), "indexes as before the reopen");
        // Past the bound, the next round saves the floor.
        let many = sluice_core::limits::RAFT_FLOOR_SAVE_BATCHES as u64;
        let more: Vec<Entry> = (9..=8 + many).map(|i| entry(i, 1, 1)).collect();
        s.append_entries(&more).expect("appends");
        s.mark_synced(RaftIndex(8 + many));
        s.compact(RaftIndex(8 + many));
        s.save_if_dirty();
        assert_eq!(disk.borrow().recover().state.floor.index, RaftIndex(5 + many));
    }

    #[test]
    fn entries_below_the_window_are_read_from_the_log_then_served() {
        let (disk, mut s) = mem_store(vec![1], 4);
        let entries: Vec<Entry> = (1..=30).map(|i| entry(i, 1 + i / 10, usize::try_from(i % 3).unwrap())).collect();
        s.append_entries(&entries).expect("appends");
        s.set_hard_state(HardState { term: 4, vote: 1, commit: 30, ..Default::default() });
        s.compact(RaftIndex(30));
        assert_eq!(s.window().first_index(), RaftIndex(27));
        // Below the window: raft-rs's asynchronous context gets "temporarily unavailable" and
        // one read is recorded (asked twice, read once).
        for _ in 0..2 {
            assert!(matches!(
                s.entries(5, 12, None, GetEntriesContext::empty(true)),
                Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
            ));
        }
        assert_eq!(s.term(4), Err(raft::Error::Store(StorageError::Unavailable)));
        let reads = s.take_catchup_reads();
        assert_eq!(reads.len(), 1);
        let read = reads.into_iter().next().expect("one");
        let ReadPlan::Scan(plan) = read.plan else { panic!("a scan") };
        assert_eq!(plan.want, RaftIndex(4), "the entry before the first one is read too (its term)");
        assert!(s.take_catchup_reads().is_empty());
        // Under way: asking again records nothing new.
        let _ = s.entries(5, 12, None, GetEntriesContext::empty(true));
        assert!(s.take_catchup_reads().is_empty());
        let out = crate::raft::catchup::scan_batches(read.plan, disk.borrow().batches(), 1 << 20).expect("scans");
        s.install_catchup(&read, Ok(out));
        let got = s.entries(5, 12, None, GetEntriesContext::empty(true)).expect("served from the read");
        assert_eq!(got.len(), 7);
        for (g, want) in got.iter().zip(&entries[4..11]) {
            assert_eq!((g.index, g.term, g.data.is_empty()), (want.index, want.term, want.data.is_empty()));
            if !want.data.is_empty() {
                assert_eq!(&g.data[61..], &want.data[61..], "the records as appended");
            }
        }
        assert_eq!(s.term(4), Ok(1));
        assert_eq!(s.term(0), Ok(0));
        // Not for the synchronous contexts.
        assert!(matches!(
            s.entries(3, 12, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        // A log that no longer starts at 0 cannot be counted from the origin: a snapshot.
        disk.borrow_mut().set_log_start(Offset(3));
        assert_eq!(s.first_index().expect("infallible"), 27);
        assert!(matches!(
            s.entries(5, 12, None, GetEntriesContext::empty(true)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
    }

    #[test]
    fn catch_up_forgets_offsets_found_before_compaction_folded_their_batches() {
        let (disk, mut s) = mem_store(vec![1], 4);
        // 40 entries of two records each: entry i holds offsets 2(i-1) and 2(i-1)+1.
        let entries: Vec<Entry> = (1..=40).map(|i| entry(i, 1, 2)).collect();
        s.append_entries(&entries).expect("appends");
        disk.borrow_mut().sync().expect("syncs");
        s.set_hard_state(HardState { term: 1, vote: 1, commit: 40, ..Default::default() });
        s.compact(RaftIndex(40));
        let asked = |s: &GroupStore<MemLog>, low| s.entries(low, 37, None, GetEntriesContext::empty(true));
        let small_read = |s: &mut GroupStore<MemLog>, low| {
            assert!(asked(s, low).is_err(), "below the window: read first");
            let read = s.take_catchup_reads().pop().expect("a read");
            let out = crate::raft::catchup::scan_batches(read.plan, disk.borrow().batches(), 200).expect("scans");
            s.install_catchup(&read, Ok(out));
        };
        // The first read counts on to the floor (checking the origin); the next one, from the
        // cached batches, keeps a few and leaves an anchor after them: entry 16 at offset 30.
        small_read(&mut s, 10);
        small_read(&mut s, 14);
        // A read planned now, from that anchor, made after compaction folded entries 10..=20
        // (offsets 18..40) into one gap batch, fails its check: not a reason to stop serving.
        assert!(asked(&s, 20).is_err());
        let stale = s.take_catchup_reads().pop().expect("a read");
        let ReadPlan::Scan(plan) = stale.plan else { panic!("a scan") };
        assert_eq!(plan.start, (RaftIndex(16), Offset(30)), "the read starts at the anchor");
        disk.borrow_mut().fold_into_gap(9..20);
        let failed = crate::raft::catchup::scan_batches(stale.plan, disk.borrow().batches(), 200);
        assert!(matches!(failed, Err(ScanError::Gap { .. })), "{failed:?}");
        s.install_catchup(&stale, failed);
        assert!(!s.old.is_disabled(), "a read across compaction proves nothing wrong");
        // Asked again: counted from the origin, through the gap.
        assert!(asked(&s, 20).is_err());
        assert_eq!(serve_reads(&mut s, &disk), 1);
        let got = asked(&s, 20).expect("served after the fold");
        let control = |e: &Entry| sluice_core::batch::BatchHeader::parse(&e.data).expect("a batch").is_control();
        let got: Vec<(u64, bool)> = got.iter().map(|e| (e.index, control(e))).collect();
        let want: Vec<(u64, bool)> = (20..37).map(|i| (i, i == 20)).collect();
        assert_eq!(got, want, "entry 20 is the gap's last, later ones the records");
    }

    /// A single-replica log compacted on the direct path (epoch 0, holes before offsets 40, 50
    /// and 70, none before 51), as a conversion leaves it (`replica/convert.rs`).
    fn holed_direct_log() -> (Vec<(Offset, Bytes)>, Floor) {
        let mut log = Vec::new();
        for (base, n) in [(40i64, 2usize), (50, 1), (51, 3), (70, 1)] {
            let recs: Vec<_> = (0..n).map(|_| sluice_core::batch::Record { key: Some(b"k"), value: b"v" }).collect();
            let mut b = sluice_core::batch::build(&recs, 0);
            sluice_core::batch::stamp(&mut b, base, 0);
            log.push((Offset(base), Bytes::from(b)));
        }
        (log, Floor { index: RaftIndex(4), term: Term::DIRECT, next_offset: Offset(71) })
    }

    /// The entries `1..=4` of a log as catch-up serves them (`catchup.rs`, `batch_to_entry`).
    fn served(log: &[(Offset, Bytes)], floor: Floor) -> Vec<Entry> {
        let plan = OldBatches::default().plan(RaftIndex(1), floor, Origin::LOG_START_ZERO);
        let out =
            crate::raft::catchup::scan_batches(ReadPlan::Scan(plan), log, 1 << 20).expect("the scan counts the holes");
        assert!(out.verified, "the scan lands on the floor");
        out.kept.into_iter().map(|(m, b)| control::batch_to_entry(m.index.0, m.term, b).expect("an entry")).collect()
    }

    #[test]
    fn a_copy_of_a_log_compacted_before_it_was_a_raft_groups_keeps_its_offsets() {
        let (leader, floor) = holed_direct_log();
        let entries = served(&leader, floor);
        assert_eq!(entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), [(1, 1), (2, 1), (3, 1), (4, 1)]);
        let (disk, mut s) = new_store();
        let metas = s.append_entries(&entries).expect("appends");
        let spans: Vec<_> = metas.iter().map(|m| (m.base.0, m.last.0)).collect();
        assert_eq!(spans, [(40, 41), (50, 50), (51, 53), (70, 70)], "the leader's offsets");
        assert_eq!(s.window().next_offset(), Offset(71));
        // The copy's log follows offset after offset: hole batches cover the holes.
        let copy: Vec<(i64, i64, u64)> = disk
            .borrow()
            .batches()
            .iter()
            .map(|(_, b)| {
                let h = sluice_core::batch::BatchHeader::parse(b).expect("parses");
                (h.base_offset, h.last_offset(), sluice_core::control::entries_of(&h, b))
            })
            .collect();
        assert_eq!(copy, [(0, 39, 0), (40, 41, 1), (42, 49, 0), (50, 50, 1), (51, 53, 1), (54, 69, 0), (70, 70, 1)]);
        // Served again from the copy (a scan of its log; its window), the same entries (stored
        // there with epoch 1, the term they travel with, where the original has 0).
        let copy_floor = Floor { index: RaftIndex(4), term: Term::DIRECT, next_offset: Offset(71) };
        let again = served(disk.borrow().batches(), copy_floor);
        let from_window = s.entries(1, 5, None, GetEntriesContext::empty(false)).expect("in the window");
        for other in [&again, &from_window] {
            assert_eq!(
                other.iter().map(|e| (e.index, e.term, e.data.slice(16..))).collect::<Vec<_>>(),
                entries.iter().map(|e| (e.index, e.term, e.data.slice(16..))).collect::<Vec<_>>(),
            );
        }
        // A reopen rebuilds the window over the holes.
        s.mark_synced(RaftIndex(4));
        s.set_hard_state(HardState { term: 2, vote: 1, commit: 4, ..Default::default() });
        s.save_if_dirty();
        disk.borrow_mut().sync().expect("no fault");
        let r = reopen(&disk, 100);
        assert_eq!((r.last_index().expect("infallible"), r.window().next_offset()), (4, Offset(71)));
        assert_eq!(r.window().index_of_offset(Offset(51)), Some(RaftIndex(3)));
        assert_eq!(r.window().index_of_offset(Offset(45)), None, "no entry in a hole");
        // Entries of the group's own terms follow on at the log end.
        let mut r = r;
        let m = r.append_entries(&[entry(5, 2, 0), entry(6, 2, 2)]).expect("appends");
        assert_eq!(m.iter().map(|m| (m.base.0, m.last.0)).collect::<Vec<_>>(), [(71, 70), (71, 72)]);
    }

    #[test]
    fn a_group_entry_is_never_placed_by_its_batchs_base_offset() {
        let (_, mut s) = new_store();
        let mut data = sluice_core::batch::build(&[sluice_core::batch::Record { key: None, value: b"v" }], 0);
        sluice_core::batch::stamp(&mut data, 500, 0);
        // Term 2: a group's own entry (a producer's batch carries base 0; whatever it carries,
        // the entry goes at the log end).
        let e = Entry { index: 1, term: 2, data: Bytes::from(data), ..Default::default() };
        let m = s.append_entries(&[e]).expect("appends");
        assert_eq!((m[0].base, m[0].last), (Offset(0), Offset(0)));
    }

    #[test]
    fn a_failed_catch_up_check_falls_back_to_the_snapshot() {
        let (disk, mut s) = mem_store(vec![1], 2);
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1, 1)).collect();
        s.append_entries(&entries).expect("appends");
        s.set_hard_state(HardState { term: 1, vote: 1, commit: 10, ..Default::default() });
        s.compact(RaftIndex(10));
        let _ = s.entries(3, 5, None, GetEntriesContext::empty(true));
        let read = s.take_catchup_reads().into_iter().next().expect("a read");
        let mut holed = disk.borrow().batches().to_vec();
        holed.remove(1);
        let r = crate::raft::catchup::scan_batches(read.plan, &holed, 1 << 20);
        assert!(r.is_err());
        s.install_catchup(&read, r);
        assert_eq!(s.first_index().expect("infallible"), 9);
        // The log still starts at 0 (compaction's gaps failed the check): no snapshot, which
        // would drop what lies below the window.
        assert!(matches!(s.snapshot(0, 2), Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))));
        assert!(matches!(
            s.entries(3, 5, None, GetEntriesContext::empty(true)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
    }

    #[test]
    fn a_saved_commit_never_covers_entries_not_known_durable() {
        let (disk, mut s) = new_store();
        s.append_entries(&[entry(1, 1, 0), entry(2, 1, 1), entry(3, 1, 1)]).expect("appends");
        s.mark_synced(RaftIndex(2));
        s.set_hard_state(HardState { term: 1, vote: 2, commit: 3, ..Default::default() });
        s.save_if_dirty();
        assert_eq!(disk.borrow().recover().state.hard.commit, 2);
        // A truncation lowers what is known durable.
        let (disk, mut s) = new_store();
        s.append_entries(&[entry(1, 1, 0), entry(2, 1, 1), entry(3, 1, 1)]).expect("appends");
        s.mark_synced(RaftIndex(3));
        s.set_hard_state(HardState { term: 1, vote: 2, commit: 1, ..Default::default() });
        s.append_entries(&[entry(3, 2, 1), entry(4, 2, 1)]).expect("replaces index 3 on");
        s.set_hard_state(HardState { term: 2, vote: 2, commit: 4, ..Default::default() });
        s.save_if_dirty();
        assert_eq!(disk.borrow().recover().state.hard.commit, 2);
    }

    #[test]
    fn the_persisted_state_round_trips_through_the_state_file_record() {
        let (disk, mut s) = new_store();
        s.append_entries(&[entry(1, 1, 0), entry(2, 3, 2)]).expect("appends");
        s.mark_synced(RaftIndex(2));
        s.set_hard_state(HardState { term: 3, vote: 1, commit: 2, ..Default::default() });
        s.save_if_dirty();
        let state = disk.borrow().recover().state;
        let bytes = state.to_record().encode();
        let back = RaftStateRecord::decode(&bytes).expect("decodes");
        assert_eq!(PersistedState::from_record(back), state);
    }

    #[test]
    fn a_snapshot_restarts_the_log_at_its_offset() {
        let (leader_disk, mut leader) = new_store();
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 2, 2)).collect();
        leader.append_entries(&entries).expect("appends");
        leader.set_hard_state(HardState { term: 2, vote: 1, commit: 4, ..Default::default() });
        // Taken where the leader's log starts: at the end of the batch before offset 6...
        leader_disk.borrow_mut().set_log_start(Offset(6));
        let at_start = leader.snapshot(0, 2).expect("a snapshot at the log start");
        assert_eq!(at_start.get_metadata().index, 3);
        assert_eq!(SnapshotData::decode(&at_start.data).map(|d| d.next_offset), Some(Offset(6)));
        // ...or, when the log start is inside a batch, before that batch (the follower gets it
        // whole, as Kafka's follower fetches the batch holding the leader's log start).
        leader_disk.borrow_mut().delete_records(Offset(7));
        let snap = leader.snapshot(2, 2).expect("a snapshot at the log start");
        assert_eq!((snap.get_metadata().index, snap.get_metadata().term), (3, 2));
        assert_eq!(SnapshotData::decode(&snap.data).map(|d| d.next_offset), Some(Offset(6)));
        assert!(leader.snapshot(5, 2).is_err(), "nothing committed that far");

        let (disk, mut follower) = new_store();
        follower.append_entries(&[entry(1, 1, 1)]).expect("appends");
        follower.apply_snapshot(&snap).expect("installs");
        assert_eq!(disk.borrow().log_start(), Offset(6));
        assert!(disk.borrow().batches().is_empty());
        assert_eq!((follower.first_index().expect("infallible"), follower.last_index().expect("infallible")), (4, 3));
        assert_eq!(follower.high_watermark(RaftIndex(3)), Some(Offset(6)));
        assert_eq!(follower.epochs().entries(), &[(LeaderEpoch(2), Offset(0))]);
        follower.append_entries(&[entry(4, 2, 2)]).expect("continues after the snapshot");
        assert_eq!(follower.window().get(RaftIndex(4)).map(|m| (m.base, m.last)), Some((Offset(6), Offset(7))));
        assert_eq!(SnapshotData::decode(&snap.data[..3]), None);
    }

    /// Makes every catch-up read `s` asks for over the batches of `disk`; returns how many.
    fn serve_reads(s: &mut GroupStore<MemLog>, disk: &Rc<RefCell<MemDisk>>) -> usize {
        let reads = s.take_catchup_reads();
        let n = reads.len();
        for r in reads {
            let out = crate::raft::catchup::scan_batches(r.plan, disk.borrow().batches(), 1 << 20);
            s.install_catchup(&r, out);
        }
        n
    }

    #[test]
    fn a_log_start_below_the_window_is_located_and_the_follower_gets_every_batch_from_it() {
        let (disk, mut leader) = mem_store(vec![1], 4);
        // 40 batches of 3 records; terms 1 to 4.
        let entries: Vec<Entry> = (1..=40).map(|i| entry(i, 1 + i / 12, 3)).collect();
        leader.append_entries(&entries).expect("appends");
        leader.set_hard_state(HardState { term: 4, vote: 1, commit: 40, ..Default::default() });
        leader.compact(RaftIndex(40));
        assert_eq!(leader.window().floor().index, RaftIndex(36));
        // DeleteRecords into batch 13 (offsets 36..=38), far below the window.
        disk.borrow_mut().delete_records(Offset(37));
        assert_eq!(leader.first_index().expect("infallible"), 37, "not located yet: the window");
        // The snapshot waits for the log start to be located (one read, asked once).
        for _ in 0..2 {
            assert!(matches!(
                leader.snapshot(0, 2),
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
            ));
        }
        assert_eq!(serve_reads(&mut leader, &disk), 1);
        assert_eq!(leader.first_index().expect("infallible"), 13, "the batch holding the log start");
        // Batch 12 (term 2) is the entry before it; the snapshot is taken there.
        assert_eq!(leader.term(12), Ok(2));
        let snap = leader.snapshot(0, 2).expect("a snapshot before the log start's batch");
        assert_eq!((snap.get_metadata().index, snap.get_metadata().term), (12, 2));
        let data = SnapshotData::decode(&snap.data).expect("decodes");
        assert_eq!(data.next_offset, Offset(36));
        // Below the log start's batch: compacted (raft-rs sends the snapshot).
        assert!(matches!(
            leader.entries(5, 14, None, GetEntriesContext::empty(true)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));

        // The follower installs it and is fed from index 13 on, through catch-up reads.
        let fdisk = Rc::new(RefCell::new(MemDisk::new(Offset(0))));
        let mut follower = GroupStore::create(MemLog(fdisk.clone()), vec![1], Offset(0), 4);
        follower.append_entries(&entries[..2]).expect("an old start");
        follower.apply_snapshot(&snap).expect("installs");
        assert_eq!(fdisk.borrow().log_start(), Offset(36));
        let mut next = 13;
        for _ in 0..100 {
            if next > 40 {
                break;
            }
            match leader.entries(next, 41, None, GetEntriesContext::empty(true)) {
                Ok(got) => {
                    assert_eq!(leader.term(next - 1), follower.term(next - 1), "log matching at {}", next - 1);
                    follower.append_entries(&got).expect("appends");
                    next += u64::try_from(got.len()).expect("fits");
                }
                Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable)) => {
                    assert!(serve_reads(&mut leader, &disk) > 0, "a read for {next}");
                }
                Err(e) => panic!("entries from {next}: {e:?}"),
            }
        }
        assert_eq!(next, 41);
        let want: Vec<_> = disk.borrow().batches()[12..].iter().map(|(o, b)| (*o, b[61..].to_vec())).collect();
        let got: Vec<_> = fdisk.borrow().batches().iter().map(|(o, b)| (*o, b[61..].to_vec())).collect();
        assert_eq!(got, want, "the leader's batches from the one holding its log start, at their offsets");
        assert_eq!(follower.epochs(), leader.epochs());
    }

    #[test]
    fn a_moved_log_start_is_located_again_and_a_failed_locate_falls_back_to_the_floor() {
        let (disk, mut s) = mem_store(vec![1], 4);
        let entries: Vec<Entry> = (1..=20).map(|i| entry(i, 1, 2)).collect();
        s.append_entries(&entries).expect("appends");
        s.set_hard_state(HardState { term: 1, vote: 1, commit: 20, ..Default::default() });
        s.compact(RaftIndex(20));
        disk.borrow_mut().delete_records(Offset(4));
        assert!(s.snapshot(0, 1).is_err());
        serve_reads(&mut s, &disk);
        assert_eq!(s.first_index().expect("infallible"), 3);
        disk.borrow_mut().delete_records(Offset(10));
        assert_eq!(s.first_index().expect("infallible"), 17, "located for the old log start only");
        assert!(s.snapshot(0, 1).is_err());
        serve_reads(&mut s, &disk);
        assert_eq!(s.first_index().expect("infallible"), 6);
        // Retention removed the batches below offset 20 and a batch went missing in the middle
        // (compaction): the locate fails and the snapshot falls back to the window's floor.
        let mut holed = disk.borrow().batches().to_vec();
        holed.remove(12);
        disk.borrow_mut().delete_records(Offset(20));
        assert!(s.snapshot(0, 1).is_err());
        let reads = s.take_catchup_reads();
        assert_eq!(reads.len(), 1);
        let out = crate::raft::catchup::scan_batches(reads[0].plan, &holed, 1 << 20);
        assert!(out.is_err());
        s.install_catchup(&reads[0], out);
        let snap = s.snapshot(0, 1).expect("the floor");
        assert_eq!(snap.get_metadata().index, 16);
    }
}
