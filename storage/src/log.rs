//! One partition's log: segments, ordered appends, a group-committing flusher, reads,
//! retention and recovery.
//!
//! Contract:
//! - Only one shard touches a `PartitionLog`; every `RefCell` borrow ends before an `.await`.
//! - [`PartitionLog::append`] assigns offsets synchronously, so appends are ordered exactly as
//!   they are called. It copies the batch once into the in-memory tail of the active segment
//!   and stamps the base offset and leader epoch (outside the CRC-covered bytes).
//! - One flusher task per log writes the whole unwritten tail with one aligned DMA write
//!   (re-writing the partial last page from memory, never reading it back), then one
//!   fdatasync. Everything appended while a round is in flight goes in the next round: that
//!   is the group commit. `written` advances after the write, `durable` after the sync. After
//!   a round, the flusher rolls the active segment when it reached `segment.bytes` or
//!   `segment.ms`; batches appended meanwhile move to the new segment.
//! - Readers see only durable batches (`durable` is the high watermark).
//! - A failed write or sync rolls the log back to the last durable batch, fails every
//!   waiter and starts a new write generation; the log stays readable and accepts new
//!   appends (which reuse the rolled-back offsets). A wait names the append it waits for
//!   ([`AppendInfo`], carrying its generation), so a wait that starts after the rollback of
//!   its append fails instead of being satisfied by a later batch at the same offsets.
//! - Retention deletes whole sealed segments, never the active one, and moves the log start.

use crate::disk::{align_down, Disk};
use crate::file::SegFile;
use crate::producers::{Producers, SeqCheck};
use crate::segment::{self, Segment};
use crate::watermark::Watermark;
use crate::StorageError;
use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::task::JoinHandle;
use sluice_core::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use sluice_core::{LeaderEpoch, Offset};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            leader_epoch: LeaderEpoch(0),
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
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
            last: base + h.last_offset_delta as i64,
            pos,
            len: h.total_len() as u32,
            max_ts: h.max_timestamp,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

struct State {
    /// Sorted by base offset; the last one is active.
    segments: Vec<Segment>,
    next_offset: i64,
    log_start: i64,
    /// End of the bytes a completed write has put into the active segment.
    flushed_pos: u64,
    /// Aligned position (in the active segment) of `tail[0]`.
    tail_start: u64,
    /// Active-segment bytes `[tail_start, size)`: the partial last page plus everything unwritten.
    tail: Vec<u8>,
    producers: Producers,
    closing: bool,
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

    fn rebuild_producers(&mut self) {
        let mut p = Producers::default();
        for e in &self.active().dense {
            p.record(e.producer_id, e.producer_epoch, e.base_sequence, (e.last - e.base) as i32, e.base, e.last);
        }
        self.producers = p;
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
    /// Bumped by every rollback (failed write or sync, truncation).
    generation: Cell<WriteGeneration>,
    kick: LocalSender<()>,
    flusher: RefCell<Option<JoinHandle<()>>>,
}

/// What a read must fetch once the state borrow is released.
enum ReadPlan {
    Done(LogRead),
    Exact { file: Rc<SegFile>, pos: u64, len: usize, final_end: u64, growing: bool },
    Scan { file: Rc<SegFile>, pos: u64, end: u64 },
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
        disk.create_dir_all(dir).map_err(|e| StorageError::io("create partition directory", dir.display(), e))?;
        let now = now_ms();
        let bases = segment::list(disk, dir)?;
        let interval = config.index_interval_bytes.max(1);
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut cut = 0;
        if bases.is_empty() {
            segments.push(Segment::create(disk, dir, read_log_start(disk, dir).unwrap_or(0).max(0), now).await?);
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
        let active = segments.last().expect("at least one segment");
        let next_offset = active.next_offset;
        let first = segments[0].base;
        let log_start = read_log_start(disk, dir).unwrap_or(first).clamp(first, next_offset);
        let tail_start = align_down(active.size);
        let tail = if tail_start < active.size {
            let want = (active.size - tail_start) as usize;
            let page = active
                .file
                .read_at(tail_start, want)
                .await
                .map_err(|e| StorageError::io("read", active.path.display(), e))?;
            if page.len() < want {
                return Err(StorageError::io(
                    "read",
                    active.path.display(),
                    std::io::Error::other("short read of the last page"),
                ));
            }
            page[..want].to_vec()
        } else {
            Vec::new()
        };
        let flushed_pos = active.size;
        let (kick, rx) = local_channel::new_bounded(1);
        let mut state = State {
            segments,
            next_offset,
            log_start,
            flushed_pos,
            tail_start,
            tail,
            producers: Producers::default(),
            closing: false,
        };
        state.rebuild_producers();
        if clean {
            let snapshot = disk.read(&dir.join(crate::producers::SNAPSHOT_FILE)).ok();
            if let Some(p) = snapshot.and_then(|b| crate::producers::decode_snapshot(&b, next_offset)) {
                state.producers = p;
            }
        }
        let log = Rc::new(PartitionLog {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            disk: disk.clone(),
            config: Cell::new(config),
            state: RefCell::new(state),
            written: Watermark::new(next_offset),
            durable: Watermark::new(next_offset),
            generation: Cell::new(WriteGeneration(0)),
            kick,
            flusher: RefCell::new(None),
        });
        let handle = glommio::spawn_local(flusher(log.clone(), rx)).detach();
        *log.flusher.borrow_mut() = Some(handle);
        Ok((log, cut))
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

    /// The high watermark: end of the durable (and therefore visible) log.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.durable.get())
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
        let interval = self.config.get().index_interval_bytes.max(1);
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
            });
        }
        let base = st.next_offset;
        let pos = st.active().size;
        assert_eq!(pos, st.tail_start + st.tail.len() as u64, "tail out of step with the segment end");
        let at = st.tail.len();
        st.tail.extend_from_slice(bytes);
        batch::stamp(&mut st.tail[at..], base, self.config.get().leader_epoch.0);
        let mut header = *header;
        if let Some(t) = log_append_time {
            batch::set_log_append_time(&mut st.tail[at..], t);
            header.max_timestamp = t;
        }
        let entry = Entry::new(&header, base, pos);
        let last = entry.last;
        let seg = st.active_mut();
        let rel = (base - seg.base) as u32;
        let Segment { index, cursor, .. } = seg;
        cursor.add(index, interval, rel, pos as u32, entry.max_ts, entry.len);
        seg.note_timestamp(&entry);
        seg.dense.push(entry);
        seg.size += bytes.len() as u64;
        seg.next_offset = last + 1;
        st.producers.record(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            header.last_offset_delta,
            base,
            last,
        );
        st.next_offset = last + 1;
        let log_start = st.log_start;
        drop(st);
        let _ = self.kick.try_send(());
        Ok(AppendInfo {
            base_offset: Offset(base),
            last_offset: Offset(last),
            log_start: Offset(log_start),
            duplicate: false,
            generation: self.generation.get(),
        })
    }

    /// Completes when every append up to `appended` has been written (acks=1); fails when a
    /// write failed after the append, even if the wait starts later.
    pub async fn wait_written(&self, appended: &AppendInfo) -> Result<(), StorageError> {
        self.wait(&self.written, appended, "write").await
    }

    /// Completes when every append up to `appended` is fdatasync'd (acks=all); fails when a
    /// write or sync failed after the append, even if the wait starts later.
    pub async fn wait_durable(&self, appended: &AppendInfo) -> Result<(), StorageError> {
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
        let fut = self.durable.wait_for(offset.0 + 1);
        async move {
            let _ = fut.await;
        }
    }

    /// Reads whole durable batches starting with the one containing `from`, up to `max_bytes`
    /// (at least one batch, however large), from one segment.
    pub async fn read(&self, from: Offset, max_bytes: usize) -> Result<LogRead, StorageError> {
        let hwm = self.durable.get();
        let (plan, log_start) = {
            let st = self.state.borrow();
            if from.0 < st.log_start || from.0 > hwm {
                return Err(StorageError::OffsetOutOfRange { requested: from.0, start: st.log_start, end: hwm });
            }
            let empty = LogRead { records: Bytes::new(), high_watermark: Offset(hwm), log_start: Offset(st.log_start) };
            if from.0 == hwm {
                return Ok(empty);
            }
            let i = st.segment_for(from.0);
            let seg = &st.segments[i];
            let active = i + 1 == st.segments.len();
            let plan = match seg.dense.first() {
                Some(first) if from.0 >= first.base => {
                    let d = &seg.dense;
                    let start = d.partition_point(|e| e.last < from.0);
                    let mut end = start;
                    let mut total = 0usize;
                    // Stay within one cache chunk when more than one batch is taken.
                    let chunk = crate::cache::chunk_of(d[start].pos);
                    while end < d.len() && d[end].last < hwm {
                        let l = d[end].len as usize;
                        if end > start
                            && (total + l > max_bytes || crate::cache::chunk_of(d[end].pos + l as u64 - 1) != chunk)
                        {
                            break;
                        }
                        total += l;
                        end += 1;
                    }
                    if end == start {
                        ReadPlan::Done(empty)
                    } else {
                        let pos = d[start].pos;
                        if active && pos >= st.tail_start {
                            let at = (pos - st.tail_start) as usize;
                            ReadPlan::Done(LogRead {
                                records: Bytes::copy_from_slice(&st.tail[at..at + total]),
                                high_watermark: Offset(hwm),
                                log_start: Offset(st.log_start),
                            })
                        } else {
                            let final_end = if active { st.flushed_pos } else { seg.size };
                            ReadPlan::Exact { file: seg.file.clone(), pos, len: total, final_end, growing: active }
                        }
                    }
                }
                _ => {
                    let pos = seg.index.position_for((from.0 - seg.base) as u32) as u64;
                    // Everything before the dense part (or a sealed segment) is durable.
                    let end = seg.dense.first().map(|e| e.pos).unwrap_or(seg.size);
                    ReadPlan::Scan { file: seg.file.clone(), pos, end }
                }
            };
            (plan, st.log_start)
        };
        let done = |records: Bytes| LogRead { records, high_watermark: Offset(hwm), log_start: Offset(log_start) };
        if let ReadPlan::Done(_) = plan {
            crate::stats::with(|s| s.memory_reads += 1);
        }
        let read = match plan {
            ReadPlan::Done(r) => return Ok(r),
            ReadPlan::Exact { file, pos, len, final_end, growing } => {
                crate::cache::read(&file, &self.name, pos, len, final_end, growing).await
            }
            ReadPlan::Scan { file, pos, end } => scan_read(&file, &self.name, pos, end, from.0, hwm, max_bytes).await,
        };
        match read {
            Ok(records) => {
                check_stored(&records, &self.name)?;
                Ok(done(records))
            }
            // Retention deleted the segment meanwhile (its closed file cannot be reopened).
            Err(_) if from.0 < self.log_start().0 => Err(StorageError::OffsetOutOfRange {
                requested: from.0,
                start: self.log_start().0,
                end: self.durable.get(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The first offset whose timestamp is at or after `ts`, with that timestamp. Record
    /// precision for uncompressed CreateTime batches, batch precision otherwise.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(Offset, i64)>, StorageError> {
        let hwm = self.durable.get();
        let start = self.log_start().0;
        let mut from = start;
        loop {
            // Find the next segment whose newest batch reaches `ts`.
            let plan = {
                let st = self.state.borrow();
                st.segments
                    .iter()
                    .find(|s| s.next_offset > from && s.max_ts >= ts)
                    .map(|s| (s.base + s.index.offset_for_time(ts) as i64).max(from).max(s.base))
            };
            let Some(scan_from) = plan else { return Ok(None) };
            if scan_from >= hwm {
                return Ok(None);
            }
            let read = self.read(Offset(scan_from), 1 << 20).await?;
            if read.records.is_empty() {
                return Ok(None);
            }
            let mut pos = 0;
            while pos + LOG_OVERHEAD <= read.records.len() {
                let Ok(h) = BatchHeader::parse(&read.records[pos..]) else { break };
                let end = (pos + h.total_len()).min(read.records.len());
                if h.last_offset() >= start && h.max_timestamp >= ts {
                    return Ok(Some(first_record_at(&read.records[pos..end], &h, ts, start)));
                }
                from = h.last_offset() + 1;
                pos += h.total_len();
            }
            if from >= hwm {
                return Ok(None);
            }
        }
    }

    /// The batch with the largest max timestamp: (its base offset, timestamp).
    pub fn max_timestamp(&self) -> Option<(Offset, i64)> {
        let st = self.state.borrow();
        st.segments
            .iter()
            .filter(|s| s.max_ts >= 0 && s.max_ts_offset < self.durable.get() && s.max_ts_offset >= st.log_start)
            .max_by_key(|s| s.max_ts)
            .map(|s| (Offset(s.max_ts_offset), s.max_ts))
    }

    /// DeleteRecords: makes every offset below `to` unreadable by moving the log start
    /// offset forward (durably, in `log-start-offset`). `to` may be at most the high
    /// watermark. Returns the new log start offset.
    pub async fn delete_records_before(&self, to: Offset) -> Result<Offset, StorageError> {
        let hwm = self.durable.get();
        let start = self.state.borrow().log_start;
        if to.0 < 0 || to.0 > hwm {
            return Err(StorageError::OffsetOutOfRange { requested: to.0, start, end: hwm });
        }
        if to.0 <= start {
            return Ok(Offset(start));
        }
        self.persist_log_start(to.0).await?;
        let mut st = self.state.borrow_mut();
        st.log_start = st.log_start.max(to.0);
        Ok(Offset(st.log_start))
    }

    async fn persist_log_start(&self, value: i64) -> Result<(), StorageError> {
        let path = self.dir.join(LOG_START_FILE);
        self.disk
            .write_file_off_thread(&path, format!("{value}\n").into_bytes(), true)
            .await
            .map_err(|e| StorageError::io("write", path.display(), e))
    }

    /// Deletes sealed segments that retention (`retention.ms` against each segment's newest
    /// timestamp, `retention.bytes` against the log's size) or DeleteRecords no longer keep.
    /// Returns the number of segments deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let cfg = self.config.get();
        // Decide first; change nothing until the new log start is durable, so that the log
        // start in memory (which DeleteRecords answers from) is never ahead of the disk.
        let (keep_base, new_start) = {
            let st = self.state.borrow();
            let mut total: i64 = st.segments.iter().map(|s| s.size as i64).sum();
            let mut n = 0;
            while n + 1 < st.segments.len() {
                let s = &st.segments[n];
                let by_time = cfg.retention_ms >= 0 && s.max_ts >= 0 && s.max_ts < now_ms - cfg.retention_ms;
                let by_size = cfg.retention_bytes >= 0 && total - s.size as i64 >= cfg.retention_bytes;
                let below_start = s.next_offset <= st.log_start;
                if !(by_time || by_size || below_start) {
                    break;
                }
                total -= s.size as i64;
                n += 1;
            }
            if n == 0 {
                return Ok(0);
            }
            let keep_base = st.segments[n].base;
            (keep_base, st.log_start.max(keep_base))
        };
        self.persist_log_start(new_start).await?;
        let removed: Vec<Segment> = {
            let mut st = self.state.borrow_mut();
            // Only segments wholly below the kept one go, and never the active one.
            let n = st.segments.partition_point(|s| s.base < keep_base).min(st.segments.len() - 1);
            st.log_start = st.log_start.max(new_start);
            st.segments.drain(..n).collect()
        };
        for s in &removed {
            tracing::info!(partition = %self.name, segment = s.base, bytes = s.size, "retention deleted a segment");
            s.remove_files().await;
        }
        Ok(removed.len())
    }

    /// Removes every batch at or after `offset`, which must be a batch boundary at or below
    /// the high watermark, with no write in flight. Kept for replication (leader change).
    pub async fn truncate_to(&self, offset: Offset) -> Result<(), StorageError> {
        // Find the position of `offset` in its segment.
        let (file, seg_base, from_pos, seg_end) = {
            let st = self.state.borrow();
            assert!(st.next_offset == self.durable.get(), "truncate_to with appends in flight");
            assert!(offset.0 <= st.next_offset, "truncate beyond the end");
            let i = st.segment_for(offset.0);
            let s = &st.segments[i];
            (s.file.clone(), s.base, s.index.position_for((offset.0 - s.base).max(0) as u32) as u64, s.size)
        };
        let pos = if offset.0 == self.log_end().0 {
            None
        } else {
            let data = read_exact(&file, &self.name, from_pos, (seg_end - from_pos) as usize).await?;
            let mut p = 0usize;
            let mut found = None;
            while p + LOG_OVERHEAD <= data.len() {
                let h = BatchHeader::parse(&data[p..]).map_err(StorageError::InvalidBatch)?;
                if h.base_offset == offset.0 {
                    found = Some(from_pos + p as u64);
                    break;
                }
                assert!(h.base_offset < offset.0, "truncate_to must cut at a batch boundary");
                p += h.total_len();
            }
            Some(found.expect("truncate_to must cut at a batch boundary"))
        };
        let Some(pos) = pos else { return Ok(()) };
        let (drop_segments, active_file) = {
            let mut st = self.state.borrow_mut();
            let keep = st.segments.partition_point(|s| s.base <= seg_base);
            let dropped: Vec<Segment> = st.segments.drain(keep..).collect();
            let seg = st.active_mut();
            seg.size = pos;
            seg.next_offset = offset.0;
            seg.dense.retain(|e| e.base < offset.0);
            seg.index.offsets.retain(|(_, p)| (*p as u64) < pos);
            let base = seg.base;
            seg.index.times.retain(|(_, r)| base + (*r as i64) < offset.0);
            st.next_offset = offset.0;
            st.flushed_pos = pos;
            st.tail.clear();
            st.rebuild_producers();
            (dropped, st.active().file.clone())
        };
        for s in &drop_segments {
            s.remove_files().await;
        }
        crate::cache::invalidate(active_file.key());
        active_file.truncate(pos).await.map_err(|e| StorageError::io("truncate", &self.name, e))?;
        active_file.fdatasync().await.map_err(|e| StorageError::io("fdatasync", &self.name, e))?;
        let tail_start = align_down(pos);
        let tail = if tail_start < pos {
            read_exact(&active_file, &self.name, tail_start, (pos - tail_start) as usize).await?.to_vec()
        } else {
            Vec::new()
        };
        {
            let mut st = self.state.borrow_mut();
            st.tail_start = tail_start;
            st.tail = tail;
        }
        self.written.reset(offset.0);
        self.durable.reset(offset.0);
        self.generation.set(WriteGeneration(self.generation.get().0 + 1));
        Ok(())
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
        if st.active().size >= INDEX_AT_CLOSE_MIN_BYTES {
            st.active().index_files().write_now()?;
        }
        if !st.producers.is_empty() {
            let bytes = crate::producers::encode_snapshot(st.next_offset, &st.producers);
            self.disk
                .write_file(&self.dir.join(crate::producers::SNAPSHOT_FILE), &bytes, false)
                .map_err(|e| StorageError::io("write producer snapshot in", self.dir.display(), e))?;
        }
        Ok(())
    }
}

/// Checks the CRC-32C of every batch read back from a segment file. Recovery checks the tail
/// it scans, but batches before a trusted index entry (after a clean shutdown) and sealed
/// segments are not rescanned at start: a batch damaged on disk since it was written is found
/// here, and answered with a storage error instead of being served.
fn check_stored(records: &Bytes, name: &str) -> Result<(), StorageError> {
    let mut pos = 0;
    while pos + LOG_OVERHEAD <= records.len() {
        let bad = match BatchHeader::parse(&records[pos..]) {
            Ok(h)
                if pos + h.total_len() <= records.len()
                    && batch::validate(&records[pos..pos + h.total_len()]).is_ok() =>
            {
                pos += h.total_len();
                None
            }
            Ok(h) => Some(h.base_offset),
            Err(_) => Some(-1),
        };
        if let Some(offset) = bad {
            return Err(damaged(name, format!("the batch at offset {offset} fails its CRC-32C check")));
        }
    }
    Ok(())
}

/// The error for a stored batch that cannot be what was written (its CRC fails, or its length
/// runs past the end of its segment): logged, and answered as a storage error, never served.
fn damaged(name: &str, what: String) -> StorageError {
    tracing::error!(partition = %name, %what, "a stored batch fails its checks: the segment is damaged on disk");
    StorageError::io(
        "read",
        name,
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: segment damaged on disk")),
    )
}

/// Whether the header-sized start of `b` is all zeros: the padding of an aligned write.
fn is_padding(b: &[u8]) -> bool {
    b[..HEADER_LEN.min(b.len())].iter().all(|x| *x == 0)
}

fn past_end(name: &str, offset: i64) -> StorageError {
    damaged(name, format!("the batch at offset {offset} runs past the end of its segment"))
}

fn missing(name: &str, from: i64, pos: u64) -> StorageError {
    damaged(name, format!("offset {from} is below the high watermark but its segment's batches end at byte {pos}"))
}

fn bad_header(name: &str, pos: u64, e: batch::BatchError) -> StorageError {
    damaged(name, format!("the batch header at byte {pos} does not parse ({e})"))
}

/// Reads exactly `len` bytes at `pos`.
async fn read_exact(file: &Rc<SegFile>, name: &str, pos: u64, len: usize) -> Result<Bytes, StorageError> {
    crate::cache::read_direct(file, name, pos, len).await
}

/// The short scan of a read: from an index position, skip batches before `from`, then take
/// whole batches below `hwm` up to `max_bytes` (at least one). Reads go through the chunk
/// cache, one chunk at a time; a batch that crosses a chunk boundary is read directly.
///
/// `end` is a batch boundary below which every byte is durable and was written as whole
/// batches with contiguous offsets, the first at or before `from` (segments start at their
/// base, index positions point at batch starts; a sealed segment may end in the zero padding
/// of its last aligned write when its trim was lost in a crash), so a header that does not
/// parse, a length
/// that runs past `end`, a first batch after `from` or a jump in offsets can only be damage (in
/// a prefix trusted at a clean start and not rescanned): it is answered with [`damaged`],
/// never served, and never turned into an empty or short read.
async fn scan_read(
    file: &Rc<SegFile>,
    name: &str,
    pos: u64,
    end: u64,
    from: i64,
    hwm: i64,
    max_bytes: usize,
) -> Result<Bytes, StorageError> {
    use crate::cache::{self, CHUNK};
    let mut at = pos;
    let mut exact: Option<usize> = None;
    // The last offset of the batch before `at` in this scan (None before the first one).
    let mut prev_last: Option<i64> = None;
    for _ in 0..1024 {
        if at >= end {
            // Every batch from the index position on was before `from`: it is not here.
            return Err(missing(name, from, at));
        }
        let data = match exact.take() {
            Some(len) => {
                crate::stats::with(|s| s.disk_reads += 1);
                cache::read_direct(file, name, at, len).await?
            }
            None => {
                let w = ((CHUNK - at % CHUNK).min(end - at)) as usize;
                cache::read(file, name, at, w, end, false).await?
            }
        };
        let mut p = 0usize;
        let mut first: Option<usize> = None;
        let mut stop = 0usize;
        let mut need: Option<usize> = None;
        let mut padding = false;
        while p + LOG_OVERHEAD <= data.len() {
            let h = match BatchHeader::parse(&data[p..]) {
                Ok(h) => h,
                // Too few bytes here, but more before `end`: the header crosses the chunk edge.
                Err(batch::BatchError::Truncated { .. }) if at + (data.len() as u64) < end => break,
                // Zeros: the padding of the last aligned write, kept in a sealed segment whose
                // trim was lost in a crash. The data of this segment ends here.
                Err(_) if is_padding(&data[p..]) => {
                    padding = true;
                    break;
                }
                Err(e) => return Err(bad_header(name, at + p as u64, e)),
            };
            let expected = match prev_last {
                Some(last) => h.base_offset == last.saturating_add(1),
                None => h.base_offset <= from,
            };
            if !expected {
                let after =
                    prev_last.map_or(format!("the first batch read for offset {from}"), |l| format!("after {l}"));
                return Err(damaged(
                    name,
                    format!("the batch at byte {} has base offset {} ({after})", at + p as u64, h.base_offset),
                ));
            }
            let len = h.total_len();
            if at + (p + len) as u64 > end {
                // Recovery keeps only whole batches, so a length past the end is damage in a
                // prefix trusted at a clean start (finding 5 of the log_recovery fuzz target).
                return Err(past_end(name, h.base_offset));
            }
            if p + len > data.len() {
                if first.is_none() {
                    need = Some(len); // the next useful batch crosses the chunk: read it whole
                }
                break;
            }
            if h.last_offset() < from {
                p += len;
                prev_last = Some(h.last_offset());
                continue;
            }
            if h.last_offset() >= hwm {
                if first.is_none() {
                    // Batches end at the high watermark: one containing `from` cannot cross it.
                    return Err(damaged(
                        name,
                        format!(
                            "the batch at byte {} (offsets {}..={}) crosses the high watermark {hwm}",
                            at + p as u64,
                            h.base_offset,
                            h.last_offset()
                        ),
                    ));
                }
                break;
            }
            let f = *first.get_or_insert(p);
            if p > f && p + len - f > max_bytes {
                break;
            }
            stop = p + len;
            p += len;
            prev_last = Some(h.last_offset());
        }
        if let Some(f) = first {
            if stop > f {
                return Ok(data.slice(f..stop));
            }
        }
        if padding {
            return Err(missing(name, from, at + p as u64));
        }
        if p == 0 && need.is_none() {
            // Not even one header parsed: a header split by the chunk edge, or a remainder
            // too short for one.
            if (data.len() as u64) < (end - at).min(CHUNK) {
                let rest = (end - at) as usize;
                let h = cache::read_direct(file, name, at, rest.min(crate::cache::CHUNK as usize)).await?;
                match BatchHeader::parse(&h) {
                    Ok(hd) if hd.total_len() > rest => return Err(past_end(name, hd.base_offset)),
                    Ok(hd) => need = Some(hd.total_len()),
                    Err(_) if is_padding(&h) => return Err(missing(name, from, at)),
                    Err(e) => return Err(bad_header(name, at, e)),
                }
            } else {
                return Err(missing(name, from, at));
            }
        }
        at += p as u64;
        exact = need;
    }
    Err(StorageError::io("scan", name, std::io::Error::other("scan did not converge")))
}

/// The first record of a batch with timestamp ≥ `ts` (record precision when readable).
fn first_record_at(bytes: &[u8], h: &BatchHeader, ts: i64, start: i64) -> (Offset, i64) {
    let log_append = h.attributes & 0x08 != 0;
    if !log_append && h.compression() == 0 {
        if let Ok(recs) = batch::records(bytes) {
            for r in recs {
                let t = h.base_timestamp + r.timestamp_delta;
                let o = h.base_offset + r.offset_delta as i64;
                if t >= ts && o >= start {
                    return (Offset(o), t);
                }
            }
        }
    }
    (Offset(h.base_offset.max(start)), h.max_timestamp)
}

/// The flusher: one aligned write of the whole unwritten tail, then one fdatasync, per round;
/// rolls the active segment when due.
async fn flusher(log: Rc<PartitionLog>, rx: LocalReceiver<()>) {
    loop {
        let (pending, closing) = {
            let st = log.state.borrow();
            (st.active().size > st.flushed_pos, st.closing)
        };
        if pending {
            if flush_round(&log).await {
                maybe_roll(&log).await;
            }
        } else if closing || rx.recv().await.is_none() {
            return;
        }
    }
}

/// Returns true when the round succeeded.
async fn flush_round(log: &PartitionLog) -> bool {
    let file = log.state.borrow().active().file.clone();
    let result = async {
        let h = file.writer().await.map_err(|e| StorageError::io("open", &log.name, e))?;
        // No await between here and the write: the tail copied is the tail written.
        let (buf, len, tail_start, end_pos, end_offset) = {
            let st = log.state.borrow();
            assert!(Rc::ptr_eq(&st.active().file, &file), "the active segment changed during a flush");
            let len = st.tail.len();
            let mut buf = h.alloc(crate::disk::align_up(len as u64) as usize);
            let bytes = buf.as_mut();
            bytes[..len].copy_from_slice(&st.tail);
            bytes[len..].fill(0);
            (buf, len, st.tail_start, st.active().size, st.next_offset)
        };
        let n = file.write_buf(&h, tail_start, buf, len).await.map_err(|e| StorageError::io("write", &log.name, e))?;
        // A direct-I/O write that runs out of space part way reports the bytes it wrote.
        if n < len {
            let e = std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {n} of {len} bytes at {tail_start} (disk full?)"),
            );
            return Err(StorageError::io("write", &log.name, e));
        }
        log.written.advance(end_offset);
        let t = std::time::Instant::now();
        h.fdatasync().await.map_err(|e| StorageError::io("fdatasync", &log.name, e))?;
        crate::stats::with(|s| {
            s.fsync_us.saturating_record(t.elapsed().as_micros() as u64);
            s.bytes_written += n as u64;
        });
        Ok::<(u64, i64), StorageError>((end_pos, end_offset))
    }
    .await;
    match result {
        Ok((end_pos, end_offset)) => {
            let mut st = log.state.borrow_mut();
            // The bytes this round made final go to the read cache (write-through).
            let (from, to) = ((st.flushed_pos - st.tail_start) as usize, (end_pos - st.tail_start) as usize);
            crate::cache::write_through(file.key(), st.flushed_pos, &st.tail[from..to]);
            st.flushed_pos = end_pos;
            let new_start = align_down(end_pos);
            let drop_bytes = (new_start - st.tail_start) as usize;
            st.tail.drain(..drop_bytes);
            st.tail_start = new_start;
            // A burst leaves a large buffer behind; idle partitions must not keep it.
            if st.tail.capacity() > TAIL_KEEP_CAPACITY && st.tail.len() < TAIL_KEEP_CAPACITY / 4 {
                let keep = st.tail.len().max(8192);
                st.tail.shrink_to(keep);
            }
            drop(st);
            log.durable.advance(end_offset);
            true
        }
        Err(e) => {
            let durable = log.durable.get();
            let mut st = log.state.borrow_mut();
            let lost = st.next_offset - durable;
            let seg = st.active_mut();
            let keep = seg.dense.partition_point(|x| x.base < durable);
            let end = seg.dense.get(keep).map(|x| x.pos).unwrap_or(seg.size);
            seg.dense.truncate(keep);
            seg.size = end;
            seg.next_offset = durable;
            seg.index.offsets.retain(|(_, p)| (*p as u64) < end);
            let base = seg.base;
            seg.index.times.retain(|(_, r)| base + (*r as i64) < durable);
            st.next_offset = durable;
            st.flushed_pos = end;
            let tail_len = (end - st.tail_start) as usize;
            st.tail.truncate(tail_len);
            st.rebuild_producers();
            drop(st);
            log.written.reset(durable);
            log.generation.set(WriteGeneration(log.generation.get().0 + 1));
            log.written.fail_waiters();
            log.durable.fail_waiters();
            tracing::error!(partition = %log.name, error = %e, rolled_back_offsets = lost, "append failed; rolled back to the last durable batch");
            false
        }
    }
}

/// Rolls the active segment when it reached `segment.bytes` or `segment.ms`.
async fn maybe_roll(log: &PartitionLog) {
    let cfg = log.config.get();
    let (due, roll_pos, roll_base) = {
        let st = log.state.borrow();
        let a = st.active();
        let flushed = st.flushed_pos;
        let by_size = flushed >= cfg.segment_bytes;
        let by_age = flushed > 0 && now_ms() - a.created_ms >= cfg.segment_ms as i64;
        // Roll at the end of what is on disk; batches appended later move to the new segment.
        let base = a.dense.iter().find(|e| e.pos >= flushed).map(|e| e.base).unwrap_or(st.next_offset);
        (by_size || by_age, flushed, base)
    };
    if !due || roll_pos == 0 {
        return;
    }
    let new = match Segment::create(&log.disk, &log.dir, roll_base, now_ms()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(partition = %log.name, error = %e, "cannot roll to a new segment; appending to the old one");
            return;
        }
    };
    let (old_file, index_files) = {
        let mut st = log.state.borrow_mut();
        let old = st.active_mut();
        assert_eq!(old.dense.iter().find(|e| e.pos >= roll_pos).map(|e| e.base).unwrap_or(old.next_offset), roll_base);
        // Batches appended during the roll move to the new segment.
        let moved: Vec<Entry> = old.dense.iter().filter(|e| e.pos >= roll_pos).copied().collect();
        old.dense.clear();
        old.size = roll_pos;
        old.next_offset = roll_base;
        old.index.offsets.retain(|(_, p)| (*p as u64) < roll_pos);
        let base = old.base;
        old.index.times.retain(|(_, r)| base + (*r as i64) < roll_base);
        let index_files = old.index_files();
        let old_file = old.file.clone();
        let unwritten_from = (roll_pos - st.tail_start) as usize;
        let unwritten = st.tail.split_off(unwritten_from);
        let interval = log.config.get().index_interval_bytes.max(1);
        let mut seg = new;
        for mut e in moved {
            e.pos -= roll_pos;
            let Segment { index, cursor, .. } = &mut seg;
            cursor.add(index, interval, (e.base - roll_base) as u32, e.pos as u32, e.max_ts, e.len);
            seg.note_timestamp(&e);
            seg.next_offset = e.last + 1;
            seg.dense.push(e);
        }
        seg.size = unwritten.len() as u64;
        st.segments.push(seg);
        st.tail = unwritten;
        st.tail_start = 0;
        st.flushed_pos = 0;
        (old_file, index_files)
    };
    crate::cache::seal(old_file.key());
    // The sealed segment's indexes, fsync'd off the shard's thread (rebuilt at start if lost).
    if let Err(e) = index_files.write(true).await {
        tracing::warn!(partition = %log.name, error = %e, "could not write a sealed segment's index; it will be rebuilt");
    }
    // Cut the sealed file to its logical size (drop the zero padding of the last page).
    if let Err(e) = old_file.truncate(roll_pos).await {
        tracing::warn!(partition = %log.name, error = %e, "could not trim a sealed segment");
    }
    tracing::debug!(partition = %log.name, base = roll_base, "rolled to a new segment");
}

/// Active segments smaller than this are not indexed at close: scanning them is cheap.
const INDEX_AT_CLOSE_MIN_BYTES: u64 = 1 << 20;

/// Tail buffer capacity kept after a flush; more is released.
const TAIL_KEEP_CAPACITY: usize = 256 * 1024;

/// File holding a partition's log start offset once DeleteRecords or retention moved it.
const LOG_START_FILE: &str = "log-start-offset";

fn read_log_start(disk: &Disk, dir: &Path) -> Option<i64> {
    String::from_utf8(disk.read(&dir.join(LOG_START_FILE)).ok()?).ok()?.trim().parse().ok()
}
