//! Segment files opened on demand, with a per-shard bound on open descriptors, and space
//! prepared ahead of the appends.
//!
//! Contract: a [`SegFile`] names one segment file; its descriptor is opened at the first
//! operation and may be closed whenever the shard holds more than its limit of open segment
//! files (least recently used first) — the next operation reopens it. An operation in progress
//! keeps its descriptor until it ends, so the bound can be exceeded by the operations in
//! flight, never by idle files. Each file has a process-unique key for the read cache, known
//! without opening it.
//!
//! Prepared space: ahead of the appends ([`SegFile::write_buf`]), the shard's preparing task
//! ([`preparer`]) writes zeros past the data in small chunks, each issued when none of the
//! shard's request-path writes and syncs is in flight, and syncs them, in steps that grow with
//! the file (up to `SEGMENT_PREPARE_MAX_BYTES`). An append into prepared space overwrites
//! written blocks within the file's size: io_uring issues it inline (an append that extends
//! the file goes to a kernel worker), and its fdatasync has no new size to write before the
//! device flush (ARCHITECTURE.md, "Prepared segment space"). A shard that keeps the device
//! busy prepares nothing (its appends extend the file, and the device is not asked to write
//! twice). A zero chunk never overlaps data: it starts at or after the furthest append issued,
//! and an append reaching into the chunk being written waits for it first. So the file may
//! hold zeros past its last batch: recovery cuts them, a roll cuts the sealed segment to its
//! batches before anything goes to the next one, and a clean close cuts the active one. A
//! failed zero write stops preparing the file until it is cut (appends then extend it).

use crate::disk::{align_up, Disk, Handle, WriteBuf};
use crate::watermark::Watermark;
use sluice_core::limits::{
    DEFAULT_MAX_OPEN_SEGMENT_FILES_PER_SHARD, SEGMENT_PREPARE_MAX_BYTES, SEGMENT_PREPARE_MIN_BYTES,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

mod preparer;

pub(crate) struct SegFile {
    disk: Disk,
    path: PathBuf,
    key: u64,
    handle: RefCell<Option<Rc<Handle>>>,
    prep: Prepared,
}

/// The space prepared ahead of a segment's appends (module doc).
#[derive(Default)]
struct Prepared {
    /// The file holds written blocks (zeros or data) within its size up to here.
    end: Cell<u64>,
    /// The end of the furthest append issued.
    data_end: Cell<u64>,
    /// The zero chunk being written, if any.
    chunk: Cell<Option<(u64, u64)>>,
    /// Counts the zero chunks that completed, for an append waiting on one.
    chunks_done: Watermark,
    /// Where the space being prepared ends.
    target: Cell<u64>,
    /// The file is in the shard's preparing queue, or being prepared.
    queued: Cell<bool>,
    /// Bumped when the file is cut: a running task stops.
    epoch: Cell<u64>,
    /// A zero write failed: no more preparing until the file is cut.
    failed: Cell<bool>,
}

struct OpenFiles {
    limit: usize,
    clock: u64,
    /// Open segment files of this shard by key, with their last use.
    files: HashMap<u64, (Weak<SegFile>, u64)>,
    reopens: u64,
}

thread_local!(static OPEN: RefCell<OpenFiles> = RefCell::new(OpenFiles {
    limit: DEFAULT_MAX_OPEN_SEGMENT_FILES_PER_SHARD,
    clock: 0,
    files: HashMap::new(),
    reopens: 0,
}));

/// Sets how many segment files this shard (thread) keeps open at most.
pub fn set_open_file_limit(limit: usize) {
    OPEN.with(|o| o.borrow_mut().limit = limit.max(1));
}

/// Segment files this shard has open now, and how many times one was opened again after
/// being closed for the bound.
pub fn open_file_stats() -> (usize, u64) {
    OPEN.with(|o| {
        let o = o.borrow();
        (o.files.len(), o.reopens)
    })
}

fn next_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl SegFile {
    /// Creates the file (it must not exist) and keeps it open.
    pub async fn create(disk: &Disk, path: PathBuf) -> io::Result<Rc<SegFile>> {
        let h = disk.open(&path, true).await?;
        let f = Rc::new(SegFile::new(disk, path));
        f.install(Rc::new(h), false);
        Ok(f)
    }

    /// Names an existing file; it is opened at its first use.
    pub fn existing(disk: &Disk, path: PathBuf) -> Rc<SegFile> {
        Rc::new(SegFile::new(disk, path))
    }

    fn new(disk: &Disk, path: PathBuf) -> SegFile {
        SegFile { disk: disk.clone(), path, key: next_key(), handle: RefCell::new(None), prep: Prepared::default() }
    }

    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// Identity of the file for the read cache.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The open descriptor, opening the file when needed.
    async fn handle(self: &Rc<Self>) -> io::Result<Rc<Handle>> {
        if let Some(h) = self.handle.borrow().clone() {
            OPEN.with(|o| {
                let mut o = o.borrow_mut();
                o.clock += 1;
                let now = o.clock;
                if let Some(e) = o.files.get_mut(&self.key) {
                    e.1 = now;
                }
            });
            return Ok(h);
        }
        let h = Rc::new(self.disk.open(&self.path, false).await?);
        // Another task may have opened it while this one waited.
        if let Some(h) = self.handle.borrow().clone() {
            return Ok(h);
        }
        self.install(h.clone(), true);
        Ok(h)
    }

    fn install(self: &Rc<Self>, h: Rc<Handle>, reopen: bool) {
        *self.handle.borrow_mut() = Some(h);
        let evict: Vec<Rc<SegFile>> = OPEN.with(|o| {
            let mut o = o.borrow_mut();
            o.clock += 1;
            let now = o.clock;
            if reopen {
                o.reopens += 1;
            }
            o.files.insert(self.key, (Rc::downgrade(self), now));
            let mut out = Vec::new();
            while o.files.len() > o.limit {
                let Some((&k, _)) = o.files.iter().filter(|(k, _)| **k != self.key).min_by_key(|(_, (_, t))| *t) else {
                    break;
                };
                if let Some((w, _)) = o.files.remove(&k) {
                    out.extend(w.upgrade());
                }
            }
            out
        });
        for f in evict {
            f.handle.borrow_mut().take();
        }
    }

    pub async fn size(self: &Rc<Self>) -> io::Result<u64> {
        self.handle().await?.size().await
    }

    pub async fn read_at(self: &Rc<Self>, pos: u64, len: usize) -> io::Result<bytes::Bytes> {
        let data = self.handle().await?.read_at(pos, len).await?;
        crate::stats::with(|s| s.bytes_read += data.len() as u64);
        Ok(data)
    }

    /// The open descriptor, for [`SegFile::write_buf`] (allocating its buffer without holding
    /// state across the open).
    pub async fn writer(self: &Rc<Self>) -> io::Result<Rc<Handle>> {
        self.handle().await
    }

    /// Writes `buf` through `h` (from [`SegFile::writer`]) at the aligned `pos`, an append at
    /// the end of the data: first waits for a zero chunk in flight that the write reaches
    /// into, then starts preparing space ahead when due.
    pub async fn write_buf(self: &Rc<Self>, h: &Rc<Handle>, pos: u64, buf: WriteBuf, len: usize) -> io::Result<usize> {
        let end = align_up(pos + len as u64);
        let p = &self.prep;
        p.data_end.set(p.data_end.get().max(end));
        self.wait_for_chunk(|from| from < end).await;
        self.prepare_ahead(end);
        let wrote = h.write_buf(pos, buf).await;
        if let Ok(n) = &wrote {
            p.end.set(p.end.get().max(pos + *n as u64));
        }
        wrote
    }

    /// Waits while a zero chunk is in flight whose start `blocks` (one chunk at a time).
    async fn wait_for_chunk(&self, blocks: impl Fn(u64) -> bool) {
        let p = &self.prep;
        while let Some((from, _)) = p.chunk.get().filter(|(from, _)| blocks(*from)) {
            let done = p.chunks_done.get();
            let _ = p.chunks_done.wait_for(done + 1).await;
            debug_assert!(p.chunk.get().is_none_or(|(f, _)| f != from), "a zero chunk waited for is still in flight");
        }
    }

    /// Queues the file for the shard's preparing task when the prepared space ends less than
    /// half a step past `end` (unless queued already, or preparing it failed).
    fn prepare_ahead(self: &Rc<Self>, end: u64) {
        let p = &self.prep;
        let step = end.clamp(SEGMENT_PREPARE_MIN_BYTES, SEGMENT_PREPARE_MAX_BYTES);
        if p.failed.get() || end + step / 2 <= p.end.get() {
            return;
        }
        p.target.set(p.target.get().max(align_up(end + step)));
        if !p.queued.replace(true) {
            preparer::queue(self.clone());
        }
    }

    pub async fn fdatasync(self: &Rc<Self>) -> io::Result<()> {
        self.handle().await?.fdatasync().await
    }

    /// Cuts the file to `len` bytes (this also drops the space prepared beyond it); a zero
    /// chunk in flight completes first.
    pub async fn truncate(self: &Rc<Self>, len: u64) -> io::Result<()> {
        let p = &self.prep;
        p.epoch.set(p.epoch.get() + 1);
        self.wait_for_chunk(|_| true).await;
        self.handle().await?.truncate(len).await?;
        p.end.set(len);
        p.data_end.set(len);
        // Nothing to prepare until the next append asks: a file still queued (a sealed or
        // closed segment) must not get zeros past the cut.
        p.target.set(len);
        p.failed.set(false);
        Ok(())
    }
}

impl Drop for SegFile {
    fn drop(&mut self) {
        if self.handle.get_mut().is_some() {
            let key = self.key;
            let _ = OPEN.try_with(|o| o.borrow_mut().files.remove(&key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_file_cut_while_queued_for_preparing_gets_no_zeros_past_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let f = SegFile::create(&Disk::Real, path).await.unwrap();
                let h = f.writer().await.unwrap();
                // A request-path write in flight: the preparing task finds no idle moment and
                // puts the file back in its queue.
                let busy = crate::inflight::Guard::start();
                let mut buf = h.alloc(4096);
                buf.as_mut().fill(1);
                assert_eq!(f.write_buf(&h, 0, buf, 4096).await.unwrap(), 4096);
                assert!(f.prep.queued.get(), "the append queued the file for preparing");
                // Past one busy attempt: the file waits in the queue while the task backs off.
                let attempt = sluice_core::limits::SEGMENT_PREPARE_IDLE_CHECKS as u64
                    * sluice_core::limits::SEGMENT_PREPARE_IDLE_CHECK_MICROS;
                glommio::timer::sleep(Duration::from_micros(2 * attempt)).await;
                f.truncate(4096).await.unwrap();
                drop(busy);
                // Longer than a busy attempt and its back-off: the task has taken the file again.
                glommio::timer::sleep(Duration::from_millis(4 * sluice_core::limits::SEGMENT_PREPARE_BUSY_BACKOFF_MS))
                    .await;
                assert!(!f.prep.queued.get(), "the preparing task took the file again");
                assert_eq!(f.size().await.unwrap(), 4096);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
