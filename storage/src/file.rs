//! Segment files opened on demand, with a per-shard bound on open descriptors, and space
//! reserved ahead of the writes.
//!
//! Contract: a [`SegFile`] names one segment file; its descriptor is opened at the first
//! operation and may be closed whenever the shard holds more than its limit of open segment
//! files (least recently used first) — the next operation reopens it. An operation in progress
//! keeps its descriptor until it ends, so the bound can be exceeded by the operations in
//! flight, never by idle files. Each file has a process-unique key for the read cache, known
//! without opening it. Writes reserve blocks ahead (fallocate, keeping the size) in steps that
//! grow with the file, so a partition written once reserves little and a busy one reserves
//! up to `SEGMENT_RESERVE_MAX_BYTES` at a time.

use crate::disk::{align_up, Disk, Handle, WriteBuf};
use sluice_core::limits::{
    DEFAULT_MAX_OPEN_SEGMENT_FILES_PER_SHARD, SEGMENT_RESERVE_MAX_BYTES, SEGMENT_RESERVE_MIN_BYTES,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct SegFile {
    disk: Disk,
    path: PathBuf,
    key: u64,
    handle: RefCell<Option<Rc<Handle>>>,
    /// The file's blocks are reserved up to here (0: not known).
    reserved: Cell<u64>,
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
        SegFile { disk: disk.clone(), path, key: next_key(), handle: RefCell::new(None), reserved: Cell::new(0) }
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

    /// Writes `buf` through `h` (from [`SegFile::writer`]) at the aligned `pos`, reserving
    /// space ahead first when the write reaches past what is reserved.
    pub async fn write_buf(&self, h: &Handle, pos: u64, buf: WriteBuf, len: usize) -> io::Result<usize> {
        let end = align_up(pos + len as u64);
        if end > self.reserved.get() {
            let step = end.clamp(SEGMENT_RESERVE_MIN_BYTES, SEGMENT_RESERVE_MAX_BYTES);
            let want = align_up(end + step);
            // Reserving is an optimisation: without it (a filesystem that cannot, or a full
            // disk) the write itself says whether the bytes fit.
            match h.reserve(want).await {
                Ok(()) => self.reserved.set(want),
                Err(e) => {
                    tracing::debug!(file = %self.path.display(), error = %e, "could not reserve space ahead");
                    self.reserved.set(end);
                }
            }
        }
        h.write_buf(pos, buf).await
    }

    pub async fn fdatasync(self: &Rc<Self>) -> io::Result<()> {
        self.handle().await?.fdatasync().await
    }

    /// Cuts the file to `len` bytes (this also releases blocks reserved beyond it).
    pub async fn truncate(self: &Rc<Self>, len: u64) -> io::Result<()> {
        self.handle().await?.truncate(len).await?;
        self.reserved.set(0);
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
