//! One partition's log: ordered appends, a group-committing flusher, and reads.
//!
//! Contract:
//! - Only one shard touches a `PartitionLog`; every `RefCell` borrow ends before an `.await`.
//! - [`PartitionLog::append`] assigns offsets synchronously, so appends are ordered exactly as
//!   they are called. It copies the batch once into the in-memory tail and stamps the base
//!   offset and leader epoch (outside the CRC-covered bytes).
//! - One flusher task per log writes the whole unwritten tail with one aligned DMA write
//!   (re-writing the partial last page from memory, never reading it back), then one
//!   fdatasync. Everything appended while a round is in flight goes in the next round: that
//!   is the group commit. `written` advances after the write, `durable` after the sync.
//! - Readers see only durable batches (`durable` is the high watermark).
//! - A failed write or sync rolls the log back to the last durable batch and fails every
//!   waiter; the log stays readable and accepts new appends.

use crate::producers::{Producers, SeqCheck};
use crate::recovery;
use crate::watermark::Watermark;
use crate::StorageError;
use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::io::{DmaFile, OpenOptions};
use glommio::task::JoinHandle;
use sluice_core::batch::{self, BatchHeader};
use sluice_core::{LeaderEpoch, Offset};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Settings of one partition log.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// Epoch written into every appended batch.
    pub leader_epoch: LeaderEpoch,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { leader_epoch: LeaderEpoch(0) }
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
}

/// The result of a read.
#[derive(Debug, Clone)]
pub struct LogRead {
    /// Whole batches, contiguous, possibly empty.
    pub records: Bytes,
    pub high_watermark: Offset,
    pub log_start: Offset,
}

/// One stored batch, as the in-memory index knows it.
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

/// Rebuilds idempotent-producer state from the index (after recovery or a rollback).
fn producers_from(index: &[Entry]) -> Producers {
    let mut p = Producers::default();
    for e in index {
        p.record(e.producer_id, e.producer_epoch, e.base_sequence, (e.last - e.base) as i32, e.base, e.last);
    }
    p
}

struct State {
    next_offset: i64,
    log_start: i64,
    index: Vec<Entry>,
    /// Logical end of the segment, unwritten bytes included.
    end_pos: u64,
    /// End of the bytes a completed write has put on disk.
    flushed_pos: u64,
    /// Aligned file position of `tail[0]`.
    tail_start: u64,
    /// File bytes `[tail_start, end_pos)`: the partial last page plus everything unwritten.
    tail: Vec<u8>,
    producers: Producers,
    closing: bool,
}

pub struct PartitionLog {
    name: String,
    dir: PathBuf,
    path: String,
    config: LogConfig,
    file: DmaFile,
    state: RefCell<State>,
    written: Watermark,
    durable: Watermark,
    kick: LocalSender<()>,
    flusher: RefCell<Option<JoinHandle<()>>>,
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir` and recovers it. Returns the log and the
    /// number of corrupt or torn tail bytes that recovery cut off.
    pub async fn open(dir: &Path, name: &str, config: LogConfig) -> Result<(Rc<PartitionLog>, u64), StorageError> {
        let created = !dir.exists();
        if let Some(parent) = dir.parent() {
            crate::probe_direct_io(parent).await?;
        }
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create partition directory", dir.display(), e))?;
        let seg = dir.join(crate::format::segment_file_name(0));
        let path = seg.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(&seg)
            .await
            .map_err(|e| StorageError::io("open", &path, e))?;
        if created {
            sync_dir(dir)?;
        }
        let rec = recovery::scan(&file, &path, 0).await?;
        if rec.truncated_bytes > 0 {
            file.truncate(rec.end_pos).await.map_err(|e| StorageError::io("truncate", &path, e))?;
            file.fdatasync().await.map_err(|e| StorageError::io("fdatasync", &path, e))?;
        }
        let tail_start = file.align_down(rec.end_pos);
        let tail = if tail_start < rec.end_pos {
            let page = file
                .read_at(tail_start, (rec.end_pos - tail_start) as usize)
                .await
                .map_err(|e| StorageError::io("read", &path, e))?;
            let want = (rec.end_pos - tail_start) as usize;
            if page.len() < want {
                return Err(StorageError::io("read", &path, std::io::Error::other("short read of the last page")));
            }
            page[..want].to_vec()
        } else {
            Vec::new()
        };
        let first = rec.index.first().map(|e| e.base).unwrap_or(rec.next_offset);
        let log_start = read_log_start(dir).unwrap_or(first).clamp(first, rec.next_offset);
        let (kick, rx) = local_channel::new_bounded(1);
        let log = Rc::new(PartitionLog {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            path,
            config,
            file,
            state: RefCell::new(State {
                next_offset: rec.next_offset,
                log_start,
                producers: producers_from(&rec.index),
                index: rec.index,
                end_pos: rec.end_pos,
                flushed_pos: rec.end_pos,
                tail_start,
                tail,
                closing: false,
            }),
            written: Watermark::new(rec.next_offset),
            durable: Watermark::new(rec.next_offset),
            kick,
            flusher: RefCell::new(None),
        });
        let handle = glommio::spawn_local(flusher(log.clone(), rx)).detach();
        *log.flusher.borrow_mut() = Some(handle);
        Ok((log, rec.truncated_bytes))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The high watermark: end of the durable (and therefore visible) log.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.durable.get())
    }

    pub fn log_start(&self) -> Offset {
        Offset(self.state.borrow().log_start)
    }

    /// Bytes the log occupies on disk (its segment's logical size).
    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().end_pos
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
        let path = self.dir.join(LOG_START_FILE);
        let value = to.0;
        glommio::executor()
            .spawn_blocking(move || write_durably(&path, format!("{value}\n").as_bytes()))
            .await
            .map_err(|e| StorageError::io("write", self.dir.join(LOG_START_FILE).display(), e))?;
        let mut st = self.state.borrow_mut();
        st.log_start = st.log_start.max(value);
        Ok(Offset(st.log_start))
    }

    /// Next offset to be assigned (end of the log, unwritten appends included).
    pub fn log_end(&self) -> Offset {
        Offset(self.state.borrow().next_offset)
    }

    /// Appends one validated batch; ordered with every other append on this log. With
    /// `log_append_time` (topics with `message.timestamp.type=LogAppendTime`) the stored
    /// batch carries that time as its max timestamp and the LogAppendTime attribute, and
    /// its CRC is recomputed.
    pub fn append(
        &self,
        batch: &[u8],
        header: &BatchHeader,
        log_append_time: Option<i64>,
    ) -> Result<AppendInfo, StorageError> {
        debug_assert_eq!(batch.len(), header.total_len());
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
            });
        }
        let base = st.next_offset;
        let pos = st.end_pos;
        assert_eq!(pos, st.tail_start + st.tail.len() as u64, "tail out of step with end");
        let at = st.tail.len();
        st.tail.extend_from_slice(batch);
        batch::stamp(&mut st.tail[at..], base, self.config.leader_epoch.0);
        let mut header = *header;
        if let Some(t) = log_append_time {
            batch::set_log_append_time(&mut st.tail[at..], t);
            header.max_timestamp = t;
        }
        let last = base + header.last_offset_delta as i64;
        st.index.push(Entry::new(&header, base, pos));
        st.producers.record(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            header.last_offset_delta,
            base,
            last,
        );
        st.end_pos += batch.len() as u64;
        st.next_offset = last + 1;
        let log_start = st.log_start;
        drop(st);
        let _ = self.kick.try_send(());
        Ok(AppendInfo {
            base_offset: Offset(base),
            last_offset: Offset(last),
            log_start: Offset(log_start),
            duplicate: false,
        })
    }

    /// Completes when every append up to `last` has been written (acks=1).
    pub async fn wait_written(&self, last: Offset) -> Result<(), StorageError> {
        self.written
            .wait_for(last.0 + 1)
            .await
            .map_err(|_| StorageError::WriteFailed(format!("write of {} failed", self.name)))
    }

    /// Completes when every append up to `last` is fdatasync'd (acks=all).
    pub async fn wait_durable(&self, last: Offset) -> Result<(), StorageError> {
        self.durable
            .wait_for(last.0 + 1)
            .await
            .map_err(|_| StorageError::WriteFailed(format!("sync of {} failed", self.name)))
    }

    /// Completes when the high watermark passes `offset` (or a write fails). Used by long polls.
    pub fn wait_beyond(&self, offset: Offset) -> impl std::future::Future<Output = ()> {
        let fut = self.durable.wait_for(offset.0 + 1);
        async move {
            let _ = fut.await;
        }
    }

    /// Reads whole durable batches starting with the one containing `from`, up to `max_bytes`
    /// (at least one batch, however large).
    pub async fn read(&self, from: Offset, max_bytes: usize) -> Result<LogRead, StorageError> {
        let hwm = self.durable.get();
        let (pos, len, log_start) = {
            let st = self.state.borrow();
            if from.0 < st.log_start || from.0 > hwm {
                return Err(StorageError::OffsetOutOfRange { requested: from.0, start: st.log_start, end: hwm });
            }
            let first = st.index.partition_point(|e| e.last < from.0);
            let mut end = first;
            let mut total = 0usize;
            while end < st.index.len() && st.index[end].last < hwm {
                let l = st.index[end].len as usize;
                if end > first && total + l > max_bytes {
                    break;
                }
                total += l;
                end += 1;
            }
            if end == first {
                return Ok(LogRead {
                    records: Bytes::new(),
                    high_watermark: Offset(hwm),
                    log_start: Offset(st.log_start),
                });
            }
            let pos = st.index[first].pos;
            if pos >= st.tail_start {
                let at = (pos - st.tail_start) as usize;
                return Ok(LogRead {
                    records: Bytes::copy_from_slice(&st.tail[at..at + total]),
                    high_watermark: Offset(hwm),
                    log_start: Offset(st.log_start),
                });
            }
            (pos, total, st.log_start)
        };
        let data = self.file.read_at(pos, len).await.map_err(|e| StorageError::io("read", &self.path, e))?;
        if data.len() != len {
            return Err(StorageError::io("read", &self.path, std::io::Error::other("short read")));
        }
        Ok(LogRead {
            records: Bytes::copy_from_slice(&data[..]),
            high_watermark: Offset(hwm),
            log_start: Offset(log_start),
        })
    }

    /// The first offset whose batch has a max timestamp at or after `ts` (batch precision),
    /// with that batch's max timestamp; `None` when every batch is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Option<(Offset, i64)> {
        let hwm = self.durable.get();
        let st = self.state.borrow();
        st.index.iter().take_while(|e| e.last < hwm).find(|e| e.max_ts >= ts).map(|e| (Offset(e.base), e.max_ts))
    }

    /// The batch with the largest max timestamp: (its base offset, timestamp).
    pub fn max_timestamp(&self) -> Option<(Offset, i64)> {
        let hwm = self.durable.get();
        let st = self.state.borrow();
        let mut best: Option<&Entry> = None;
        for e in st.index.iter().take_while(|e| e.last < hwm) {
            if best.is_none_or(|b| e.max_ts > b.max_ts) {
                best = Some(e);
            }
        }
        best.map(|e| (Offset(e.base), e.max_ts))
    }

    /// Removes every batch at or after `offset`, which must be a batch boundary at or below the
    /// high watermark, with no write in flight. Kept for replication (leader change).
    pub async fn truncate_to(&self, offset: Offset) -> Result<(), StorageError> {
        let (end_pos, tail_start) = {
            let mut st = self.state.borrow_mut();
            assert!(st.next_offset == self.durable.get(), "truncate_to with appends in flight");
            assert!(offset.0 <= st.next_offset, "truncate beyond the end");
            let keep = st.index.partition_point(|e| e.base < offset.0);
            assert!(
                keep == st.index.len() || st.index[keep].base == offset.0,
                "truncate_to must cut at a batch boundary"
            );
            let end_pos = st.index.get(keep).map(|e| e.pos).unwrap_or(st.end_pos);
            st.index.truncate(keep);
            st.producers = producers_from(&st.index);
            st.next_offset = offset.0;
            st.end_pos = end_pos;
            st.flushed_pos = end_pos;
            st.tail_start = self.file.align_down(end_pos);
            st.tail.clear();
            (end_pos, st.tail_start)
        };
        self.file.truncate(end_pos).await.map_err(|e| StorageError::io("truncate", &self.path, e))?;
        self.file.fdatasync().await.map_err(|e| StorageError::io("fdatasync", &self.path, e))?;
        if tail_start < end_pos {
            let page = self
                .file
                .read_at(tail_start, (end_pos - tail_start) as usize)
                .await
                .map_err(|e| StorageError::io("read", &self.path, e))?;
            self.state.borrow_mut().tail = page[..(end_pos - tail_start) as usize].to_vec();
        }
        self.written.reset(offset.0);
        self.durable.reset(offset.0);
        Ok(())
    }

    /// Stops accepting appends, waits until everything appended is durable, and stops the
    /// flusher. Idempotent.
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
        Ok(())
    }
}

/// The flusher: one aligned write of the whole unwritten tail, then one fdatasync, per round.
async fn flusher(log: Rc<PartitionLog>, rx: LocalReceiver<()>) {
    loop {
        let (pending, closing) = {
            let st = log.state.borrow();
            (st.end_pos > st.flushed_pos, st.closing)
        };
        if pending {
            flush_round(&log).await;
        } else if closing || rx.recv().await.is_none() {
            return;
        }
    }
}

async fn flush_round(log: &PartitionLog) {
    let (buf, tail_start, end_pos, end_offset) = {
        let st = log.state.borrow();
        let len = st.tail.len();
        let mut buf = log.file.alloc_dma_buffer(log.file.align_up(len as u64) as usize);
        let bytes = buf.as_bytes_mut();
        bytes[..len].copy_from_slice(&st.tail);
        bytes[len..].fill(0);
        (buf, st.tail_start, st.end_pos, st.next_offset)
    };
    let result = async {
        log.file.write_at(buf, tail_start).await.map_err(|e| StorageError::io("write", &log.path, e))?;
        log.written.advance(end_offset);
        log.file.fdatasync().await.map_err(|e| StorageError::io("fdatasync", &log.path, e))?;
        Ok::<(), StorageError>(())
    }
    .await;
    match result {
        Ok(()) => {
            let mut st = log.state.borrow_mut();
            st.flushed_pos = end_pos;
            let new_start = log.file.align_down(end_pos);
            let drop_bytes = (new_start - st.tail_start) as usize;
            st.tail.drain(..drop_bytes);
            st.tail_start = new_start;
            drop(st);
            log.durable.advance(end_offset);
        }
        Err(e) => {
            let durable = log.durable.get();
            let mut st = log.state.borrow_mut();
            let keep = st.index.partition_point(|x| x.base < durable);
            let end = st.index.get(keep).map(|x| x.pos).unwrap_or(st.end_pos);
            let lost = st.next_offset - durable;
            st.index.truncate(keep);
            st.producers = producers_from(&st.index);
            st.next_offset = durable;
            st.end_pos = end;
            st.flushed_pos = end;
            let tail_len = (end - st.tail_start) as usize;
            st.tail.truncate(tail_len);
            drop(st);
            log.written.reset(durable);
            log.written.fail_waiters();
            log.durable.fail_waiters();
            tracing::error!(partition = %log.name, error = %e, rolled_back_offsets = lost, "append failed; rolled back to the last durable batch");
        }
    }
}

/// File holding a partition's log start offset once DeleteRecords moved it.
const LOG_START_FILE: &str = "log-start-offset";

fn read_log_start(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join(LOG_START_FILE)).ok()?.trim().parse().ok()
}

/// Writes a small file so that a crash leaves either the old or the new content.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let d = std::fs::File::open(dir).map_err(|e| StorageError::io("open directory", dir.display(), e))?;
    d.sync_all().map_err(|e| StorageError::io("fsync directory", dir.display(), e))?;
    if let Some(parent) = dir.parent() {
        if let Ok(p) = std::fs::File::open(parent) {
            let _ = p.sync_all();
        }
    }
    Ok(())
}
