//! One partition's log: segments, ordered appends, a writer feeding the shard's sync rounds,
//! reads, retention and recovery. This file holds the types, `open`, appends, the waits on
//! them and `close`; the writer is in `flush.rs`, the shard's sync rounds in `sync.rs`, reads
//! in `read.rs`, DeleteRecords, retention and `truncate_to` in `retention.rs`.
//!
//! Contract:
//! - Only one shard touches a `PartitionLog`; every `RefCell` borrow ends before an `.await`.
//! - [`PartitionLog::append`] assigns offsets synchronously, so appends are ordered exactly as
//!   they are called. It copies the batch once into the in-memory tail of the active segment
//!   and stamps the base offset and leader epoch (outside the CRC-covered bytes).
//! - One writer task per log writes the whole unwritten tail with one aligned DMA write
//!   (re-writing the partial last page from memory, never reading it back); everything
//!   appended while a write is in flight goes in the next one. `written` advances after the
//!   write; the log then joins the shard's next sync round (`sync.rs`), which fdatasyncs every
//!   log with written bytes at once and advances each one's `durable` to what it had written
//!   when the round began. The writer never waits for a sync, except at a roll: after a write,
//!   it rolls the active segment when it reached `segment.bytes` or `segment.ms`, and the new
//!   segment gets no byte before the old one is durable; batches appended meanwhile move to
//!   the new segment.
//! - Memory does not grow with the batch count: the active segment keeps per-batch entries
//!   for its unsynced batches and the most recent durable ones (`DENSE_ENTRIES_KEPT`).
//! - A segment never holds a batch whose last offset lies more than
//!   `MAX_SEGMENT_RELATIVE_OFFSET` past its base or whose end lies past
//!   `MAX_SEGMENT_POSITION` (the 32-bit index fields): the append of such a batch marks its
//!   position as a roll point (`State::roll_at`), the flusher writes only up to it, rolls, and
//!   the batch starts the new segment. Batches past a roll point get no index entry until
//!   they are moved.
//! - Readers see only durable batches (`durable` is the high watermark).
//! - A failed write or sync rolls the log back to the last durable batch, fails every
//!   waiter and starts a new write generation; the log stays readable and accepts new
//!   appends (which reuse the rolled-back offsets). A wait names the append it waits for
//!   ([`AppendInfo`], carrying its generation), so a wait that starts after the rollback of
//!   its append fails instead of being satisfied by a later batch at the same offsets.
//! - Retention deletes whole sealed segments, never the active one, and moves the log start.
//! - A Raft control batch taking no offset (`lastOffsetDelta` -1, only through
//!   `append_replica`) shares its base with the batch after it: offsets cannot say it is
//!   durable, so the log also marks its durable bytes (`durable_bytes`), a sync round is due
//!   while written bytes pass the flushed ones, its wait and a roll wait on bytes, and
//!   per-batch entries are kept and dropped by position.

mod compaction;
mod flush;
mod read;
mod replica;
mod retention;
mod sync;

pub use compaction::CompactStats;
use flush::flusher;

use crate::disk::{align_down, Disk};
use crate::file::SegFile;
use crate::producers::{Producers, SeqCheck};
use crate::segment::{self, Segment};
use crate::watermark::Watermark;
use crate::StorageError;
use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::task::JoinHandle;
use sluice_core::batch::{self, BatchHeader};
use sluice_core::{LeaderEpoch, Offset};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Settings of one partition log (from its topic's configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Epoch written into every appended batch.
    pub leader_epoch: LeaderEpoch,
    /// Roll the active segment at this size (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll the active segment at this age (`segment.ms`).
    pub segment_ms: u64,
    /// Bytes between sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// Delete segments whose newest batch is older (`retention.ms`, -1: never).
    pub retention_ms: i64,
    /// Delete old segments while the log is larger (`retention.bytes`, -1: never).
    pub retention_bytes: i64,
    /// Forget a producer's state this long after its last write (`producer_id_expiration_ms`,
    /// fixed when the log opens).
    pub producer_id_expiration_ms: u64,
    /// A deleted segment's file stays this long under a `.deleted` name before it is freed
    /// (`file.delete.delay.ms`).
    pub file_delete_delay_ms: u64,
}

impl Default for LogConfig {
    /// Kafka's topic defaults, as `sluice_core::topic_config` defines them.
    fn default() -> Self {
        use sluice_core::topic_config::default_i64;
        let positive = |k| u64::try_from(default_i64(k)).expect("a positive topic default");
        LogConfig {
            leader_epoch: LeaderEpoch(0),
            segment_bytes: positive("segment.bytes"),
            segment_ms: positive("segment.ms"),
            index_interval_bytes: positive("index.interval.bytes"),
            retention_ms: default_i64("retention.ms"),
            retention_bytes: default_i64("retention.bytes"),
            producer_id_expiration_ms: sluice_core::limits::DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            file_delete_delay_ms: u64::try_from(default_i64("file.delete.delay.ms")).unwrap_or(0),
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub log_start: Offset,
    /// The batch was a producer's retry of one already in the log: nothing was appended and
    /// the offsets are the original ones.
    pub duplicate: bool,
    /// The log's write generation when the batch was appended (see [`PartitionLog::wait_durable`]).
    pub generation: WriteGeneration,
    /// The byte position (counted since the log was opened) of the batch's end: a batch
    /// taking no offset (a Raft control batch) is durable when the durable bytes reach it.
    pub end_pos: i64,
}

/// Counts the rollbacks of a log: a failed write or sync starts a new generation, and the
/// offsets appended in the old one are given out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct WriteGeneration(pub u64);

/// The result of a read.
#[derive(Debug, Clone)]
pub struct LogRead {
    /// Whole batches, contiguous, possibly empty.
    pub records: Bytes,
    pub high_watermark: Offset,
    pub log_start: Offset,
}

/// One stored batch, as a dense index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub base: i64,
    pub last: i64,
    pub pos: u64,
    pub len: u32,
    pub max_ts: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Entry {
    pub fn new(h: &BatchHeader, base: i64, pos: u64) -> Entry {
        Entry {
            base,
            last: base + i64::from(h.last_offset_delta),
            pos,
            len: u32::try_from(h.total_len()).expect("a parsed batch length (i32) fits u32"),
            max_ts: h.max_timestamp,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
        }
    }
}

use sluice_core::clock::now_ms;

struct State {
    /// Sorted by base offset; the last one is active.
    segments: Vec<Segment>,
    next_offset: i64,
    log_start: i64,
    /// End of the durable bytes of the active segment (a sync covered them).
    flushed_pos: u64,
    /// End of the bytes a completed write has put into the active segment (at or after
    /// `flushed_pos`).
    written_pos: u64,
    /// Aligned position (in the active segment) of `tail[0]`: `align_down(flushed_pos)`.
    tail_start: u64,
    /// Active-segment bytes `[tail_start, size)`: the partial last durable page plus everything
    /// not yet durable.
    tail: Vec<u8>,
    producers: Producers,
    closing: bool,
    /// The bytes of the segments rolled since the log was opened, before the active one: the
    /// active segment's position `p` is the log's byte `origin + p` (`durable_bytes`).
    origin: u64,
    /// Position in the active segment of the first batch that must go into the next segment
    /// (its offsets or its end do not fit this one's index); the flusher writes up to here,
    /// then rolls.
    roll_at: Option<u64>,
    /// Replication cut the active segment at this position while its file may hold bytes past
    /// it: the writer truncates the file there before its next write (`replica.rs`).
    pending_cut: Option<u64>,
    /// The tail's bytes `[tail_start, hole)` are not loaded (a cut below the in-memory tail):
    /// reads take them from the file and the writer loads them before its next write.
    tail_hole: Option<u64>,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("a log always has an active segment")
    }

    /// Index of the segment holding `offset` (the last one whose base is at or below it).
    fn segment_for(&self, offset: i64) -> usize {
        self.segments.partition_point(|s| s.base <= offset).saturating_sub(1)
    }

    /// The state of a log just opened: its segments (the last active, its durable size
    /// `flushed_pos`), its log start (the stored one, within the segments' offsets), the tail
    /// read back, producers rebuilt from the active segment's batches.
    fn recovered(
        segments: Vec<Segment>,
        stored_log_start: Option<i64>,
        tail_start: u64,
        tail: Vec<u8>,
        producer_id_expiration_ms: u64,
    ) -> State {
        let active = segments.last().expect("at least one segment");
        let (next_offset, flushed_pos) = (active.next_offset, active.size);
        let first = segments[0].base;
        let log_start = stored_log_start.unwrap_or(first).clamp(first, next_offset);
        let mut state = State {
            segments,
            next_offset,
            log_start,
            flushed_pos,
            written_pos: flushed_pos,
            tail_start,
            tail,
            producers: Producers::new(producer_id_expiration_ms),
            closing: false,
            roll_at: None,
            pending_cut: None,
            tail_hole: None,
            origin: 0,
        };
        state.rebuild_producers();
        state.trim_dense();
        state
    }

    /// Producer state from the active segment's per-batch entries (at open, before they are
    /// trimmed).
    fn rebuild_producers(&mut self) {
        let mut p = Producers::new(self.producers.expiration_ms());
        for e in &self.active().dense {
            let delta = i32::try_from(e.last - e.base).expect("a batch spans at most its i32 lastOffsetDelta");
            p.record(e.producer_id, e.producer_epoch, e.base_sequence, delta, e.base, e.last);
        }
        self.producers = p;
    }

    /// Where the next flush round ends: the roll point if any, else the end of the segment;
    /// with the offset that follows what it writes.
    fn write_end(&self) -> (u64, i64) {
        let a = self.active();
        match self.roll_at {
            None => (a.size, self.next_offset),
            Some(at) => {
                let i = a.dense.partition_point(|e| e.pos < at);
                let entry = a.dense.get(i).expect("a roll point is the position of an appended batch");
                debug_assert_eq!(entry.pos, at, "a roll point is a batch boundary");
                (at, entry.base)
            }
        }
    }
}

pub struct PartitionLog {
    name: String,
    dir: PathBuf,
    disk: Disk,
    config: Cell<LogConfig>,
    state: RefCell<State>,
    written: Watermark,
    durable: Watermark,
    /// The durable bytes, as positions counted since the log was opened (`State::origin` +
    /// `flushed_pos`): what makes a batch taking no offset durable (its offsets cannot).
    durable_bytes: Watermark,
    /// Bumped by every rollback (failed write or sync, truncation).
    generation: Cell<WriteGeneration>,
    kick: LocalSender<()>,
    flusher: RefCell<Option<JoinHandle<()>>>,
    /// The log is registered for the shard's next sync round.
    sync_queued: Cell<bool>,
    /// The last background seal of a rolled segment (each awaits the previous one).
    sealing: RefCell<Option<JoinHandle<()>>>,
    /// Where the next compaction pass's dirty range starts (the previous pass's end; the log
    /// start after open).
    first_dirty: Cell<i64>,
    /// A Raft replica's log (`replica.rs`): readers see up to `commit`, not `durable`.
    replicated: Cell<bool>,
    /// A Raft group's log is cleaned only below this offset (the next offset of its persisted
    /// floor: the batches a reopen counts from there stay as they are) and its cleaning
    /// leaves gap batches (`compact/clean.rs`); None: not a Raft group's log.
    clean_limit: Cell<Option<i64>>,
    /// Where a Raft group's log would be cleaned up to were its floor there (the sealed
    /// segments' end the last pass saw past `clean_limit`): its group moves its floor there
    /// (`replica.rs` `clean_wanted`). 0: nothing wanted.
    clean_wanted: Cell<i64>,
    /// Bumped by compaction around each swap ([`PartitionLog::layout`]).
    layout: Cell<u64>,
    /// The replicated high watermark (Raft's applied index); unused otherwise.
    commit: Watermark,
    /// Called with the offset of every Raft cut of the log's end ([`PartitionLog::on_cut`]).
    cut_listeners: RefCell<Vec<CutListener>>,
}

/// What a cut of a replicated log's uncommitted end tells its observers: the offset cut at.
pub type CutListener = Box<dyn Fn(Offset)>;

/// What a read must fetch once the state borrow is released.
enum ReadPlan {
    Done(LogRead),
    Exact {
        file: Rc<SegFile>,
        pos: u64,
        len: usize,
        final_end: u64,
        growing: bool,
    },
    /// `next`: the next segment's base when this one is sealed (a read that finds nothing at
    /// or after its offset here, because compaction removed it, goes on there).
    Scan {
        file: Rc<SegFile>,
        pos: u64,
        end: u64,
        next: Option<i64>,
    },
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir` and recovers it. A new `dir` is not yet a
    /// durable entry of its parent: the caller fsyncs the parent (once for many logs). `clean` says the broker
    /// shut down cleanly, so the active segment's index can be trusted and only its tail is
    /// scanned. Returns the log and the bytes of torn or corrupt tail that recovery cut off.
    pub async fn open(
        dir: &Path,
        name: &str,
        config: LogConfig,
        clean: bool,
    ) -> Result<(Rc<PartitionLog>, u64), StorageError> {
        Self::open_on(&Disk::Real, dir, name, config, clean).await
    }

    /// [`PartitionLog::open`] on a given disk (the simulated one in crash tests).
    pub async fn open_on(
        disk: &Disk,
        dir: &Path,
        name: &str,
        config: LogConfig,
        clean: bool,
    ) -> Result<(Rc<PartitionLog>, u64), StorageError> {
        if let (Some(parent), true) = (dir.parent(), disk.is_real()) {
            crate::probe_direct_io(parent).await?;
        }
        disk.create_dir_all(dir).await.map_err(|e| StorageError::io("create partition directory", dir.display(), e))?;
        let now = now_ms();
        // A compaction swap a crash interrupted is finished or discarded before segments are listed.
        let swap = crate::compact::swap::recover_swap(disk, dir)
            .await
            .map_err(|e| StorageError::io("recover compaction swap", dir.display(), e))?;
        if swap != crate::compact::swap::SwapRecovery::Nothing {
            tracing::info!(partition = name, ?swap, "recovered an interrupted compaction swap");
        }
        let names = disk.list(dir).await.map_err(|e| StorageError::io("list", dir.display(), e))?;
        crate::reclaim::sweep(disk, dir, &names).await;
        let mut bases = segment::bases(&names);
        remove_empty_last_segment(disk, dir, &mut bases).await?;
        let [log_start_file, producers_file, checkpoint_file, raft_state_file] = disk
            .read_files([
                dir.join(LOG_START_FILE),
                dir.join(crate::producers::SNAPSHOT_FILE),
                dir.join(CLEANER_CHECKPOINT_FILE),
                dir.join(crate::raft_state::FILE_NAME),
            ])
            .await;
        let stored_log_start = parse_offset_file(log_start_file.ok());
        let interval = config.index_interval_bytes.max(1);
        let (segments, cut) = open_segments(disk, dir, &bases, stored_log_start, clean, interval, now).await?;
        let (tail_start, tail) = read_tail(segments.last().expect("at least one segment")).await?;
        let mut state =
            State::recovered(segments, stored_log_start, tail_start, tail, config.producer_id_expiration_ms);
        if clean {
            let next_offset = state.next_offset;
            if let Some(p) = producers_file
                .ok()
                .and_then(|b| crate::producers::decode_snapshot(&b, next_offset, config.producer_id_expiration_ms))
            {
                state.producers = p;
            }
        }
        let log = Self::start(name, dir, disk, config, state);
        // Where the last compaction pass ended (a value past the log end after a crash or
        // a truncation is taken back to it).
        if let Some(cleaned) = parse_offset_file(checkpoint_file.ok()) {
            let (start, end) = (log.log_start().0, log.log_end().0);
            log.first_dirty.set(cleaned.clamp(start, end));
        }
        // A Raft group's log: nothing is cleaned until its group opens and says where its
        // persisted floor is (`set_clean_limit`).
        if raft_state_file.is_ok() {
            log.clean_limit.set(Some(log.log_start().0));
        }
        Ok((log, cut))
    }

    /// The log around its recovered state, with its flusher running.
    fn start(name: &str, dir: &Path, disk: &Disk, config: LogConfig, state: State) -> Rc<PartitionLog> {
        let (next_offset, log_start) = (state.next_offset, state.log_start);
        let flushed = i64::try_from(state.origin + state.flushed_pos).expect("a log's bytes fit i64");
        let (kick, rx) = local_channel::new_bounded(1);
        let log = Rc::new(PartitionLog {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            disk: disk.clone(),
            config: Cell::new(config),
            state: RefCell::new(state),
            written: Watermark::new(next_offset),
            durable: Watermark::new(next_offset),
            durable_bytes: Watermark::new(flushed),
            generation: Cell::new(WriteGeneration(0)),
            kick,
            flusher: RefCell::new(None),
            sync_queued: Cell::new(false),
            sealing: RefCell::new(None),
            first_dirty: Cell::new(log_start),
            replicated: Cell::new(false),
            clean_limit: Cell::new(None),
            clean_wanted: Cell::new(0),
            layout: Cell::new(0),
            commit: Watermark::new(next_offset),
            cut_listeners: RefCell::new(Vec::new()),
        });
        let handle = glommio::spawn_local(flusher(log.clone(), rx)).detach();
        *log.flusher.borrow_mut() = Some(handle);
        log
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.get()
    }

    /// Applies new topic configs (retention, rolling) from the next decision on.
    pub fn set_config(&self, config: LogConfig) {
        self.config.set(config);
    }

    /// Removes the state of producers whose last write here is `producer_id_expiration_ms`
    /// older than `now_ms`; returns how many (the shard's periodic expiry calls it).
    pub fn expire_producers(&self, now_ms: i64) -> usize {
        self.state.borrow_mut().producers.expire(now_ms)
    }

    /// Registers `f` to learn of every cut of this log's end ([`PartitionLog::cut_at`]: a Raft
    /// follower's uncommitted suffix removed), right after the cut, synchronously: state
    /// derived from the log above the cut (a partition's transaction index) follows it.
    pub fn on_cut(&self, f: CutListener) {
        self.cut_listeners.borrow_mut().push(f);
    }

    /// Tells the cut listeners (no borrow of the log's state is held).
    fn notify_cut(&self, offset: Offset) {
        for f in self.cut_listeners.borrow().iter() {
            f(offset);
        }
    }

    /// The state of every unexpired producer of this log (DescribeProducers).
    pub fn describe_producers(&self, now_ms: i64) -> Vec<crate::producers::ProducerSummary> {
        self.state.borrow().producers.describe(now_ms)
    }

    /// The high watermark: end of the durable (and therefore visible) log; for a replicated
    /// log, the end of the committed (applied) batches.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.visible().get())
    }

    /// What readers may see: `durable`, or `commit` for a replicated log.
    fn visible(&self) -> &Watermark {
        if self.replicated.get() {
            &self.commit
        } else {
            &self.durable
        }
    }

    pub fn log_start(&self) -> Offset {
        Offset(self.state.borrow().log_start)
    }

    /// Next offset to be assigned (end of the log, unwritten appends included).
    pub fn log_end(&self) -> Offset {
        Offset(self.state.borrow().next_offset)
    }

    /// Bytes the log's segments occupy.
    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.iter().map(|s| s.size).sum()
    }

    /// Number of segments (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Size of each segment, oldest first.
    pub fn segment_sizes(&self) -> Vec<u64> {
        self.state.borrow().segments.iter().map(|s| s.size).collect()
    }

    /// Appends one validated batch; ordered with every other append on this log. With
    /// `log_append_time` (topics with `message.timestamp.type=LogAppendTime`) the stored
    /// batch carries that time as its max timestamp and the LogAppendTime attribute, and
    /// its CRC is recomputed.
    pub fn append(
        &self,
        bytes: &[u8],
        header: &BatchHeader,
        log_append_time: Option<i64>,
    ) -> Result<AppendInfo, StorageError> {
        debug_assert_eq!(bytes.len(), header.total_len());
        let mut st = self.state.borrow_mut();
        if st.closing {
            return Err(StorageError::Closed);
        }
        if let SeqCheck::Duplicate { base_offset, last_offset } = st.producers.check(header)? {
            return Ok(AppendInfo {
                base_offset: Offset(base_offset),
                last_offset: Offset(last_offset),
                log_start: Offset(st.log_start),
                duplicate: true,
                generation: self.generation.get(),
                end_pos: 0,
            });
        }
        let base = st.next_offset;
        let pos = st.active().size;
        assert_eq!(pos, st.tail_start + st.tail.len() as u64, "tail out of step with the segment end");
        let header = self.stamp_into_tail(&mut st, bytes, header, base, log_append_time);
        Ok(self.commit_append(st, &header, pos))
    }

    /// The end of every append, once the batch (stamped with `next_offset` as its base) is in
    /// the tail at `pos`: its entry in the active segment, its producer state, the new log
    /// end; the borrow ends and the writer is kicked.
    fn commit_append(&self, mut st: std::cell::RefMut<'_, State>, header: &BatchHeader, pos: u64) -> AppendInfo {
        crate::inflight::appended();
        let base = st.next_offset;
        let entry = Entry::new(header, base, pos);
        let last = entry.last;
        let end_pos = i64::try_from(st.origin + pos + u64::from(entry.len)).expect("a log's bytes fit i64");
        self.add_entry(&mut st, entry);
        let (id, epoch, sequence, delta) =
            (header.producer_id, header.producer_epoch, header.base_sequence, header.last_offset_delta);
        st.producers.record(id, epoch, sequence, delta, base, last);
        st.next_offset = last + 1;
        let log_start = st.log_start;
        drop(st);
        let _ = self.kick.try_send(());
        AppendInfo {
            base_offset: Offset(base),
            last_offset: Offset(last),
            log_start: Offset(log_start),
            duplicate: false,
            generation: self.generation.get(),
            end_pos,
        }
    }

    /// Copies a batch to the end of the tail, stamped with its base offset and the leader
    /// epoch (and with `log_append_time` when given); returns its header as stored.
    fn stamp_into_tail(
        &self,
        st: &mut State,
        bytes: &[u8],
        header: &BatchHeader,
        base: i64,
        log_append_time: Option<i64>,
    ) -> BatchHeader {
        let at = st.tail.len();
        st.tail.extend_from_slice(bytes);
        batch::stamp(&mut st.tail[at..], base, self.config.get().leader_epoch.0);
        let mut header = *header;
        if let Some(t) = log_append_time {
            batch::set_log_append_time(&mut st.tail[at..], t);
            header.max_timestamp = t;
        }
        header
    }

    /// Adds an appended batch to the active segment: its per-batch entry, size and next
    /// offset, and (unless it starts the next segment: the roll point is set when its offsets
    /// or its end do not fit this one's index) its sparse index entry and max timestamp.
    fn add_entry(&self, st: &mut State, entry: Entry) {
        let interval = self.config.get().index_interval_bytes.max(1);
        let (pos, last) = (entry.pos, entry.last);
        let end = pos + u64::from(entry.len);
        if st.roll_at.is_none() {
            // A batch taking no offset (last = base - 1) spans its base in the index.
            if let Err(e) = crate::index::fits(st.active().base, last.max(entry.base), end) {
                tracing::debug!(partition = %self.name, reason = %e, "the next segment starts at this batch");
                st.roll_at = Some(pos);
            }
        }
        let before_roll = st.roll_at.is_none();
        let seg = st.active_mut();
        if before_roll {
            // Checked by `fits` above: both conversions succeed.
            let rel = crate::index::relative_offset(seg.base, entry.base).expect("fits the index");
            let at = crate::index::position(pos).expect("fits the index");
            let Segment { index, cursor, .. } = seg;
            cursor.add(index, interval, rel, at, entry.max_ts, entry.len);
            seg.note_timestamp(&entry);
        }
        seg.dense.push(entry);
        seg.size = end;
        seg.next_offset = last + 1;
    }

    /// Completes when every append up to `appended` has been written (acks=1); fails when a
    /// write failed after the append, even if the wait starts later.
    pub async fn wait_written(&self, appended: &AppendInfo) -> Result<(), StorageError> {
        self.wait(&self.written, appended, "write").await
    }

    /// Completes when every append up to `appended` is fdatasync'd (acks=all); fails when a
    /// write or sync failed after the append, even if the wait starts later.
    pub async fn wait_durable(&self, appended: &AppendInfo) -> Result<(), StorageError> {
        if appended.last_offset < appended.base_offset && !appended.duplicate {
            // A batch taking no offset: durable when the bytes up to its end are.
            if self.generation.get() != appended.generation {
                return Err(StorageError::WriteFailed(format!("sync of {} failed", self.name)));
            }
            let failed = || StorageError::WriteFailed(format!("sync of {} failed", self.name));
            return self.durable_bytes.wait_for(appended.end_pos).await.map_err(|_| failed());
        }
        self.wait(&self.durable, appended, "sync").await
    }

    async fn wait(&self, mark: &Watermark, appended: &AppendInfo, what: &str) -> Result<(), StorageError> {
        let failed = || StorageError::WriteFailed(format!("{what} of {} failed", self.name));
        // Checked and registered in one step: a later rollback fails the registered waiter.
        if self.generation.get() != appended.generation {
            return Err(failed());
        }
        mark.wait_for(appended.last_offset.0 + 1).await.map_err(|_| failed())
    }

    /// Completes when the high watermark passes `offset` (or a write fails). Used by long polls.
    pub fn wait_beyond(&self, offset: Offset) -> impl std::future::Future<Output = ()> {
        let fut = self.visible().wait_for(offset.0 + 1);
        async move {
            let _ = fut.await;
        }
    }

    /// Deletes this closed log's directory (its partition deleted or moved away): renamed at
    /// once, its files freed `file.delete.delay.ms` later in small steps, each once no reader
    /// holds it (`crate::reclaim`).
    pub async fn retire_dir(&self) -> std::io::Result<()> {
        let holders = self
            .state
            .borrow()
            .segments
            .iter()
            .filter_map(|s| Some((s.path.file_name()?.to_str()?.to_string(), Rc::downgrade(&s.file))))
            .collect();
        crate::reclaim::retire_dir(&self.dir, self.delete_delay(), holders).await
    }

    /// Stops accepting appends, waits until everything appended is durable, stops the flusher,
    /// and writes the active segment's indexes and the producer snapshot (so a clean restart
    /// need not scan). Idempotent.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.state.borrow_mut().closing = true;
        let _ = self.kick.try_send(());
        let handle = self.flusher.borrow_mut().take();
        if let Some(h) = handle {
            h.await;
        }
        let sealing = self.sealing.borrow_mut().take();
        if let Some(h) = sealing {
            h.await;
        }
        let (index_files, snapshot) = {
            let st = self.state.borrow();
            if self.durable.get() != st.next_offset {
                return Err(StorageError::WriteFailed(format!(
                    "{}: {} appended offsets not durable at close",
                    self.name,
                    st.next_offset - self.durable.get()
                )));
            }
            // A small active segment is cheaper to scan at the next start than to index now
            // (this keeps shutdown fast with many partitions).
            let index_files = (st.active().size >= INDEX_AT_CLOSE_MIN_BYTES).then(|| st.active().index_files());
            let snapshot =
                (!st.producers.is_empty()).then(|| crate::producers::encode_snapshot(st.next_offset, &st.producers));
            (index_files, snapshot)
        };
        // The active segment ends at its last batch (no prepared space past it: `file/mod.rs`).
        let (active, size) = {
            let st = self.state.borrow();
            (st.active().file.clone(), st.active().size)
        };
        active.truncate(size).await.map_err(|e| StorageError::io("truncate", &self.name, e))?;
        // Without per-file fsync: the caller syncs the filesystem once before leaving the
        // clean-shutdown marker, without which these files are not trusted.
        if let Some(files) = index_files {
            files.write(false).await?;
        }
        if let Some(bytes) = snapshot {
            self.disk
                .write_file_off_thread(&self.dir.join(crate::producers::SNAPSHOT_FILE), bytes, false)
                .await
                .map_err(|e| StorageError::io("write producer snapshot in", self.dir.display(), e))?;
        }
        Ok(())
    }
}

/// Active segments smaller than this are not indexed at close: scanning them is cheap.
const INDEX_AT_CLOSE_MIN_BYTES: u64 = 1 << 20;

/// Tail buffer capacity kept after a flush; more is released.
const TAIL_KEEP_CAPACITY: usize = 256 * 1024;

/// File holding a partition's log start offset once DeleteRecords or retention moved it.
const LOG_START_FILE: &str = "log-start-offset";

/// File holding where the last compaction pass ended (Kafka's cleaner-offset-checkpoint, one
/// per partition here): the first dirty offset after a restart.
const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Opens a log's segments (`bases`, sorted): every one but the last sealed, the last active
/// (recovered, `clean` as at open); a new empty segment at the stored log start when there is
/// none. With the bytes recovery cut from the active segment.
async fn open_segments(
    disk: &Disk,
    dir: &Path,
    bases: &[i64],
    stored_log_start: Option<i64>,
    clean: bool,
    interval: u64,
    now: i64,
) -> Result<(Vec<Segment>, u64), StorageError> {
    let mut segments = Vec::with_capacity(bases.len().max(1));
    let mut cut = 0;
    if bases.is_empty() {
        segments.push(Segment::create(disk, dir, stored_log_start.unwrap_or(0).max(0), now).await?);
    } else {
        for (i, base) in bases.iter().enumerate() {
            if i + 1 < bases.len() {
                segments.push(Segment::open_sealed(disk, dir, *base, bases[i + 1], interval, now).await?);
            } else {
                let (seg, truncated) = Segment::open_active(disk, dir, *base, clean, interval, now).await?;
                cut = truncated;
                segments.push(seg);
            }
        }
    }
    Ok((segments, cut))
}

/// The active segment's partial last page (its aligned start, and its bytes up to the
/// segment's size), kept in memory as the start of the tail appends continue.
async fn read_tail(active: &Segment) -> Result<(u64, Vec<u8>), StorageError> {
    let tail_start = align_down(active.size);
    if tail_start >= active.size {
        return Ok((tail_start, Vec::new()));
    }
    let want = usize::try_from(active.size - tail_start).expect("less than a page");
    let page =
        active.file.read_at(tail_start, want).await.map_err(|e| StorageError::io("read", active.path.display(), e))?;
    if page.len() < want {
        let short = std::io::Error::other("short read of the last page");
        return Err(StorageError::io("read", active.path.display(), short));
    }
    Ok((tail_start, page[..want].to_vec()))
}

/// A crash while rolling (the new segment created, nothing written to it yet) leaves an empty
/// last segment after a previous one: it is removed, and the previous segment is the active
/// one again (it is scanned as such). An empty only segment is kept (its name is the log's
/// start). So is an empty last segment whose previous one was sealed (its index files exist):
/// that one may have been compacted (offsets with gaps, which an active segment's scan would
/// take for a torn tail), and the empty segment's base is where offsets go on.
async fn remove_empty_last_segment(disk: &Disk, dir: &Path, bases: &mut Vec<i64>) -> Result<(), StorageError> {
    let [.., prev, last] = bases[..] else { return Ok(()) };
    let path = dir.join(crate::format::segment_file_name(last));
    let size =
        SegFile::existing(disk, path.clone()).size().await.map_err(|e| StorageError::io("stat", path.display(), e))?;
    if size > 0 {
        return Ok(());
    }
    let prev_index = dir.join(crate::format::segment_file_name(prev)).with_extension("index");
    if let [Ok(_)] = disk.read_files([prev_index]).await {
        return Ok(());
    }
    tracing::info!(segment = %path.display(), "removing an empty last segment left by an interrupted roll");
    for p in [path.clone(), path.with_extension("index"), path.with_extension("timeindex")] {
        if let Err(e) = disk.remove_file_off_thread(&p).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(StorageError::io("remove", p.display(), e));
            }
        }
    }
    disk.sync_dir(dir).await.map_err(|e| StorageError::io("fsync directory", dir.display(), e))?;
    bases.pop();
    Ok(())
}

/// The offset in a small text file (`log-start-offset`, `cleaner-offset-checkpoint`).
fn parse_offset_file(file: Option<Vec<u8>>) -> Option<i64> {
    String::from_utf8(file?).ok()?.trim().parse().ok()
}
