//! One segment of a partition log: its file, its sparse indexes and what is known about it.
//!
//! Contract: a segment covers offsets `[base, next_offset)` contiguously, and the next
//! segment starts at `next_offset`. Only the last segment of a log (the active one) is
//! written; the others are sealed: their file is cut to its logical size and their indexes
//! are on disk (`<base>.index`, `<base>.timeindex`). `dense` holds one entry per batch for
//! the part of the active segment appended or scanned in this run; sealed segments and the
//! earlier part of the active one are reached through the sparse index and a short scan.

use crate::disk::Disk;
use crate::file::SegFile;
use crate::format::segment_file_name;
use crate::index::{IndexCursor, SparseIndex};
use crate::log::Entry;
use crate::recovery::{scan, ScanFrom, Scanned};
use crate::StorageError;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub(crate) struct Segment {
    pub base: i64,
    pub next_offset: i64,
    pub file: Rc<SegFile>,
    pub path: PathBuf,
    /// Logical size: the end of the last batch (unwritten bytes included for the active one).
    pub size: u64,
    pub index: SparseIndex,
    pub cursor: IndexCursor,
    /// Largest batch max timestamp, and the base offset of that batch (-1, -1 when empty).
    pub max_ts: i64,
    pub max_ts_offset: i64,
    /// `(max_ts, max_ts_offset)` of the batches that are no longer in `dense` (found at open,
    /// or dropped from it once durable): with the entries in `dense`, what
    /// [`Segment::max_timestamp_before`] recomputes the maximum from when the segment is cut.
    pub settled_max: (i64, i64),
    /// Wall-clock ms when this segment was created or opened (for `segment.ms`).
    pub created_ms: i64,
    pub dense: Vec<Entry>,
}

fn index_paths(log: &Path) -> (PathBuf, PathBuf) {
    (log.with_extension("index"), log.with_extension("timeindex"))
}

/// Every file of the segment whose log file is `log`.
pub(crate) fn all_paths(log: &Path) -> [PathBuf; 3] {
    let (ip, tp) = index_paths(log);
    [log.to_path_buf(), ip, tp]
}

/// A segment's sparse index from its index files (`ip`, `tp`), when both read and decode for
/// a segment of `size` bytes.
async fn read_index(disk: &Disk, ip: &Path, tp: &Path, size: u64) -> Option<SparseIndex> {
    let [Ok(o), Ok(t)] = disk.read_files([ip.to_path_buf(), tp.to_path_buf()]).await else { return None };
    SparseIndex::decode(&o, &t, size.max(1), u32::MAX).ok()
}

/// Scans the active segment `file` (based at `base`) for its valid batches, extending `index`
/// (trusted from the index files, or empty): from its last entry when it has one, from the
/// start when it has none or that entry does not lead to a valid batch. The index as extended
/// and what the scan found.
async fn scan_active(
    file: &Rc<SegFile>,
    shown: &str,
    base: i64,
    mut index: SparseIndex,
    interval: u64,
) -> Result<(SparseIndex, Scanned), StorageError> {
    let whole = || ScanFrom { pos: 0, offset: base, segment_base: base, gaps: false };
    let from = match index.offsets.last() {
        Some((rel, pos)) => {
            ScanFrom { pos: u64::from(*pos), offset: base + i64::from(*rel), segment_base: base, gaps: false }
        }
        None => whole(),
    };
    let trusted_start = from.pos != 0 || from.offset != base;
    let s = scan(file, shown, from, &mut index, interval).await?;
    if !(s.entries.is_empty() && trusted_start) {
        return Ok((index, s));
    }
    // The trusted entry did not lead to a valid batch: scan everything.
    let mut index = SparseIndex::default();
    let s = scan(file, shown, whole(), &mut index, interval).await?;
    Ok((index, s))
}

/// Base offsets of the segments among the file names of a directory, sorted.
pub(crate) fn bases(names: &[String]) -> Vec<i64> {
    let mut bases: Vec<i64> = names
        .iter()
        .filter_map(|name| {
            let stem = name.strip_suffix(".log")?;
            (stem.len() == 20).then(|| stem.parse().ok()).flatten()
        })
        .collect();
    bases.sort_unstable();
    bases
}

impl Segment {
    /// Creates a new, empty segment file starting at `base`.
    pub async fn create(disk: &Disk, dir: &Path, base: i64, now_ms: i64) -> Result<Segment, StorageError> {
        let path = dir.join(segment_file_name(base));
        let file =
            SegFile::create(disk, path.clone()).await.map_err(|e| StorageError::io("create", path.display(), e))?;
        disk.sync_dir(dir).await.map_err(|e| StorageError::io("fsync directory", dir.display(), e))?;
        Ok(Segment::blank(base, base, file, path, 0, now_ms))
    }

    /// Opens a sealed segment whose offsets end at `next_offset` (the next segment's base):
    /// loads its indexes, or rebuilds them by scanning when missing or inconsistent.
    pub async fn open_sealed(
        disk: &Disk,
        dir: &Path,
        base: i64,
        next_offset: i64,
        interval: u64,
        now_ms: i64,
    ) -> Result<Segment, StorageError> {
        let path = dir.join(segment_file_name(base));
        let file = SegFile::existing(disk, path.clone());
        let size = file.size().await.map_err(|e| StorageError::io("stat", path.display(), e))?;
        let (ip, tp) = index_paths(&path);
        // A segment written by an older build may span more offsets than the index holds: its
        // entries are then all below the limit.
        let last_rel = u32::try_from((next_offset - base - 1).max(0)).unwrap_or(u32::MAX);
        let loaded = match disk.read_files([ip, tp]).await {
            [Ok(o), Ok(t)] => SparseIndex::decode(&o, &t, size.max(1), last_rel).ok(),
            _ => None,
        };
        let mut seg = Segment::blank(base, next_offset, file, path, size, now_ms);
        match loaded {
            Some(idx) => {
                if let Some((t, rel)) = idx.times.last() {
                    seg.max_ts = *t;
                    seg.max_ts_offset = base + i64::from(*rel);
                }
                seg.index = idx;
            }
            None => {
                tracing::info!(segment = %seg.path.display(), "rebuilding a missing or corrupt index");
                let shown = seg.path.display().to_string();
                let mut idx = SparseIndex::default();
                let s = scan(
                    &seg.file,
                    &shown,
                    ScanFrom { pos: 0, offset: base, segment_base: base, gaps: true },
                    &mut idx,
                    interval,
                )
                .await?;
                for e in &s.entries {
                    seg.note_timestamp(e);
                }
                seg.index = idx;
                seg.size = s.end_pos;
                seg.index_files().write(true).await?;
            }
        }
        Ok(seg)
    }

    /// Opens the active (last) segment. With `trust_index` (after a clean shutdown) only the
    /// part after its last index entry is scanned; otherwise the whole segment is. Returns the
    /// segment and the bytes of torn or corrupt tail cut off.
    pub async fn open_active(
        disk: &Disk,
        dir: &Path,
        base: i64,
        trust_index: bool,
        interval: u64,
        now_ms: i64,
    ) -> Result<(Segment, u64), StorageError> {
        let path = dir.join(segment_file_name(base));
        let file = SegFile::existing(disk, path.clone());
        let shown = path.display().to_string();
        let size = file.size().await.map_err(|e| StorageError::io("stat", &shown, e))?;
        let (ip, tp) = index_paths(&path);
        let trusted = if trust_index { read_index(disk, &ip, &tp, size).await } else { None };
        let (index, s) = scan_active(&file, &shown, base, trusted.unwrap_or_default(), interval).await?;
        // A torn tail, or zeros past the batches (prepared space a crash left): cut either.
        if s.truncated_bytes > 0 || size > crate::disk::align_up(s.end_pos) {
            file.truncate(s.end_pos).await.map_err(|e| StorageError::io("truncate", &shown, e))?;
            file.fdatasync().await.map_err(|e| StorageError::io("fdatasync", &shown, e))?;
        }
        let mut seg = Segment::blank(base, s.next_offset, file, path, s.end_pos, now_ms);
        seg.index = index;
        // Index entries can only point at batches that survived.
        seg.index.offsets.retain(|(_, p)| u64::from(*p) < s.end_pos);
        seg.index.times.retain(|(_, r)| base + i64::from(*r) < s.next_offset);
        if let Some((t, rel)) = seg.index.times.last() {
            seg.max_ts = *t;
            seg.max_ts_offset = base + i64::from(*rel);
        }
        for e in &s.entries {
            seg.note_timestamp(e);
        }
        // Every batch found at open is durable, so before any later roll point.
        seg.settled_max = (seg.max_ts, seg.max_ts_offset);
        seg.dense = s.entries;
        // Old index files describe a previous state of this segment: remove them until sealed.
        for p in [&ip, &tp] {
            if let Err(e) = disk.remove_file_off_thread(p).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(StorageError::io("remove stale index", p.display(), e));
                }
            }
        }
        Ok((seg, s.truncated_bytes))
    }

    /// A segment of `file` with no index entries and no timestamps yet.
    fn blank(base: i64, next_offset: i64, file: Rc<SegFile>, path: PathBuf, size: u64, now_ms: i64) -> Segment {
        Segment {
            base,
            next_offset,
            file,
            path,
            size,
            index: SparseIndex::default(),
            cursor: IndexCursor::new(),
            max_ts: -1,
            max_ts_offset: -1,
            settled_max: (-1, -1),
            created_ms: now_ms,
            dense: Vec::new(),
        }
    }

    pub fn note_timestamp(&mut self, e: &Entry) {
        if e.max_ts > self.max_ts {
            self.max_ts = e.max_ts;
            self.max_ts_offset = e.base;
        }
    }

    /// Drops the first `n` entries of `dense` (durable ones), keeping their largest timestamp.
    pub fn settle(&mut self, n: usize) {
        for e in self.dense.drain(..n) {
            if e.max_ts > self.settled_max.0 {
                self.settled_max = (e.max_ts, e.base);
            }
        }
    }

    /// Makes `max_ts`/`max_ts_offset` those of the batches before offset `end` only (the
    /// segment is cut there: sealed at a roll point, or rolled back to its durable end).
    /// Batches appended after the cut were noted at append and must not name this segment's
    /// largest timestamp (its time index would point past its end, and fail its checks at
    /// the next start).
    pub fn max_timestamp_before(&mut self, end: i64) {
        if self.max_ts_offset < end {
            return; // the first batch with the largest timestamp is kept, so it stays largest
        }
        let (mut ts, mut at) = self.settled_max;
        for e in self.dense.iter().take_while(|e| e.base < end) {
            if e.max_ts > ts {
                (ts, at) = (e.max_ts, e.base);
            }
        }
        self.max_ts = ts;
        self.max_ts_offset = at;
    }

    /// Both index files' paths and bytes, to write once no state is borrowed.
    pub fn index_files(&self) -> IndexFiles {
        let (ip, tp) = index_paths(&self.path);
        let mut times = self.index.clone();
        if self.max_ts >= 0 && times.times.last().is_none_or(|(t, _)| self.max_ts > *t) {
            match crate::index::relative_offset(self.base, self.max_ts_offset.max(self.base)) {
                Ok(rel) => times.times.push((self.max_ts, rel)),
                // Only a segment written by an older build spans that far: a lookup by time then
                // starts from an earlier entry.
                Err(e) => tracing::warn!(segment = %self.path.display(), error = %e, "max timestamp not indexed"),
            }
        }
        IndexFiles {
            disk: self.file.disk().clone(),
            segment: self.path.clone(),
            files: [(ip, self.index.encode_offsets()), (tp, times.encode_times())],
        }
    }

    /// Removes the segment's files (and its chunks from the read cache) at once: for a segment
    /// that holds next to nothing (one just created). Others are [`Segment::retire`]d.
    /// Unlinking a file runs off the shard's thread.
    pub async fn remove_files(&self) {
        // An open descriptor stays open for readers in flight (it outlives the unlink).
        crate::cache::invalidate(self.file.key());
        for p in all_paths(&self.path) {
            remove_quietly(self.file.disk(), &p).await;
        }
    }

    /// Deletes the segment (retention, truncation): its chunks leave the read cache, its index
    /// files are removed, and its log file goes to the shard's reclaiming task, which frees it
    /// in small steps `delay` (`file.delete.delay.ms`) from now, once no reader holds it
    /// (`crate::reclaim`).
    pub async fn retire(&self, delay: std::time::Duration) {
        retire_files(&self.file, &self.path, delay).await;
    }
}

/// [`Segment::retire`] for the segment whose log file is `file` at `path`.
pub(crate) async fn retire_files(file: &Rc<SegFile>, path: &Path, delay: std::time::Duration) {
    crate::cache::invalidate(file.key());
    let (ip, tp) = index_paths(path);
    for p in [&ip, &tp] {
        remove_quietly(file.disk(), p).await;
    }
    if let Err(e) = crate::reclaim::retire(file.disk(), path, delay, Rc::downgrade(file)).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "could not delete a segment's file");
        }
    }
}

/// Removes a file of a deleted segment; a failure other than its absence is logged.
async fn remove_quietly(disk: &Disk, p: &Path) {
    if let Err(e) = disk.remove_file_off_thread(p).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %p.display(), error = %e, "could not remove a deleted segment's file");
        }
    }
}

/// A segment's index files, encoded.
pub(crate) struct IndexFiles {
    disk: Disk,
    segment: PathBuf,
    files: [(PathBuf, Vec<u8>); 2],
}

impl IndexFiles {
    /// Writes them off the shard's thread: fsync'd at seal time (`durable`), without fsync at a
    /// clean close (the caller syncs the filesystem once before leaving the clean-shutdown
    /// marker, without which these files are not trusted).
    pub async fn write(self, durable: bool) -> Result<(), StorageError> {
        for (path, bytes) in self.files {
            self.disk
                .write_file_off_thread(&path, bytes, durable)
                .await
                .map_err(|e| StorageError::io("write index of", self.segment.display(), e))?;
        }
        Ok(())
    }
}
