//! Swapping cleaned segments in for the old ones so that a crash at any point leaves either
//! every old segment or every new one of a pass, never a mix, with their index files. A pass
//! that merges segments replaces the first of each group and removes the others.
//!
//! Contract, [`swap_in`] (the steps, in order):
//! 1. each new segment's `.log`, `.index` and `.timeindex` is written as `<name>.cleaned`
//!    through direct I/O, a chunk at a time, cut to its length, then fdatasync'd (no
//!    temporary file and no directory fsync per file: a `.cleaned` file is never read before
//!    the marker, and a crash before the marker discards them all); then the directory is
//!    fsync'd once, which makes every `.cleaned` name durable;
//! 2. the swap marker (`compaction.swap`: the bases of the new segments, the bases of the
//!    segments merged into them, and a CRC-32) is written durably (temporary file, fsync,
//!    rename, directory fsync): the commit point;
//! 3. every `.cleaned` file is renamed over its final name, the replaced log file first given
//!    a second, `.deleted` name; the merged-away segments' index files are removed and their
//!    log files renamed to `.deleted` names; the directory is fsync'd. The `.deleted` files
//!    ([`Kept`]) are freed later by the shard's reclaiming task (`crate::reclaim`; the
//!    simulated disk keeps none);
//! 4. the marker is removed and the directory fsync'd.
//!
//! [`recover_swap`] runs when a log opens, before its segments are listed: with a valid marker
//! it finishes step 3 (renaming the `.cleaned` files still there, removing or keeping the
//! merged-away files still there) and removes the marker; with no marker (or one that fails its CRC: it
//! never became durable) it removes every `.cleaned` file. A crash before step 2 therefore
//! leaves the old segments, from step 2 on the new ones. `.cleaned` names never end in `.log`,
//! so segment listing never sees them. A marker written by an older build (version 1: new
//! bases only) is read as a swap that merged nothing.

use super::{batches, CompactError, Pace};
use crate::disk::{align_up, Disk};
use crate::format::segment_file_name;
use crate::index::{position, relative_offset, IndexCursor, SparseIndex};
use crate::reclaim::{set_aside, Aside};
use sluice_core::batch::BatchHeader;
use sluice_core::limits::COMPACTION_WRITE_CHUNK_BYTES;
use std::io;
use std::path::{Path, PathBuf};

/// The swap marker's name in a partition directory.
pub const SWAP_MARKER: &str = "compaction.swap";
/// Suffix of a cleaned file not swapped in yet.
pub const CLEANED_SUFFIX: &str = ".cleaned";
const MARKER_MAGIC_V1: &str = "sluice-compaction-swap 1";
const MARKER_MAGIC: &str = "sluice-compaction-swap 2";

/// One cleaned segment's three files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSegment {
    pub base: i64,
    pub log: Vec<u8>,
    pub index: Vec<u8>,
    pub timeindex: Vec<u8>,
}

impl NewSegment {
    /// The cleaned `log` bytes of the segment at `base`, with its sparse indexes built as the
    /// append path builds them (an entry per `interval` bytes; offsets relative to `base`).
    pub fn with_indexes(base: i64, log: Vec<u8>, interval: u64) -> Result<NewSegment, CompactError> {
        let mut ix = Indexer::new(base, interval);
        for b in batches(&log)? {
            let (h, b) = b;
            ix.add(&h, b.len())?;
        }
        Ok(ix.finish(log))
    }
}

/// Builds a new segment's sparse indexes a batch at a time, as the append path does (an entry
/// per `interval` bytes; offsets relative to `base`), from the headers of the batches written
/// one after the other from position 0.
#[derive(Debug)]
pub struct Indexer {
    base: i64,
    interval: u64,
    idx: SparseIndex,
    cursor: IndexCursor,
    pos: usize,
}

impl Indexer {
    pub fn new(base: i64, interval: u64) -> Indexer {
        Indexer { base, interval: interval.max(1), idx: SparseIndex::default(), cursor: IndexCursor::new(), pos: 0 }
    }

    /// The next batch of the segment: its header and length.
    pub fn add(&mut self, h: &BatchHeader, len: usize) -> Result<(), CompactError> {
        let pos = self.pos;
        let too_large = || CompactError::TooLarge(pos);
        let rel = relative_offset(self.base, h.base_offset).map_err(|_| too_large())?;
        let at = position(u64::try_from(pos).map_err(|_| too_large())?).map_err(|_| too_large())?;
        let n = u32::try_from(len).map_err(|_| too_large())?;
        self.cursor.add(&mut self.idx, self.interval, rel, at, h.max_timestamp, n);
        self.pos += len;
        Ok(())
    }

    /// The segment, `log` being the bytes of every batch added, in order (and nothing else
    /// but, from an old segment, zero padding).
    pub fn finish(self, log: Vec<u8>) -> NewSegment {
        assert!(self.pos <= log.len(), "the indexes cover batches of the segment");
        NewSegment { base: self.base, index: self.idx.encode_offsets(), timeindex: self.idx.encode_times(), log }
    }
}

/// The files a swap changes: the segments written (each replacing the segment at its base, or
/// new at that base) and the bases of the segments merged into them (removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwapPlan {
    pub replaced: Vec<i64>,
    pub removed: Vec<i64>,
}

/// What [`recover_swap`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapRecovery {
    /// No swap was under way.
    Nothing,
    /// A committed swap of this many segments was finished.
    Completed(usize),
    /// This many cleaned files of an uncommitted swap were removed.
    Discarded(usize),
}

/// The three final names of the segment at `base`.
fn final_names(base: i64) -> [String; 3] {
    let log = segment_file_name(base);
    let stem = log.trim_end_matches(".log").to_string();
    [log, format!("{stem}.index"), format!("{stem}.timeindex")]
}

fn cleaned(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{CLEANED_SUFFIX}"))
}

fn encode_marker(plan: &SwapPlan) -> Vec<u8> {
    let mut text = format!("{MARKER_MAGIC}\n");
    for b in &plan.replaced {
        text.push_str(&format!("new {b}\n"));
    }
    for b in &plan.removed {
        text.push_str(&format!("gone {b}\n"));
    }
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("crc {crc:08x}\n"));
    text.into_bytes()
}

/// The swap a marker names, or `None` when it is not a whole, valid marker.
fn decode_marker(bytes: &[u8]) -> Option<SwapPlan> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (body, crc_line) = text.trim_end_matches('\n').rsplit_once('\n')?;
    let crc = u32::from_str_radix(crc_line.strip_prefix("crc ")?, 16).ok()?;
    let body = format!("{body}\n");
    if crc32fast::hash(body.as_bytes()) != crc {
        return None;
    }
    let mut lines = body.lines();
    let mut plan = SwapPlan::default();
    match lines.next()? {
        MARKER_MAGIC_V1 => {
            plan.replaced = lines.map(|l| l.parse().ok()).collect::<Option<_>>()?;
        }
        MARKER_MAGIC => {
            for l in lines {
                match l.split_once(' ')? {
                    ("new", b) => plan.replaced.push(b.parse().ok()?),
                    ("gone", b) => plan.removed.push(b.parse().ok()?),
                    _ => return None,
                }
            }
        }
        _ => return None,
    }
    Some(plan)
}

fn io_at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// A replaced or merged-away log file kept under a `.deleted` name by a swap: the segment's
/// base and the name.
pub type Kept = (i64, PathBuf);

/// Replaces the segments at the bases of `segs` (sealed; or, for a merge, absent) with `segs`
/// and removes the sealed segments at the bases in `removed` (merged into `segs`). Returns
/// the old log files kept under `.deleted` names, for the caller to queue.
pub async fn swap_in(disk: &Disk, dir: &Path, segs: &[NewSegment], removed: &[i64]) -> io::Result<Vec<Kept>> {
    swap_in_owned(disk, dir, segs.to_vec(), removed, &mut Pace::new()).await
}

/// [`swap_in`] taking the segments' bytes (none is copied whole on the caller's thread), and
/// writing each `.cleaned` file through direct I/O `COMPACTION_WRITE_CHUNK_BYTES` at a time,
/// one write in flight, paced with `pace` between writes (so a pass never queues a whole
/// segment's write on the device ahead of the shard's appends), then its fdatasync.
pub async fn swap_in_owned(
    disk: &Disk,
    dir: &Path,
    segs: Vec<NewSegment>,
    removed: &[i64],
    pace: &mut Pace,
) -> io::Result<Vec<Kept>> {
    assert!(removed.iter().all(|r| segs.iter().all(|s| s.base != *r)), "a merged-away segment is not also written");
    let plan = SwapPlan { replaced: segs.iter().map(|s| s.base).collect(), removed: removed.to_vec() };
    for s in segs {
        let [log, index, time] = final_names(s.base);
        for (name, bytes) in [(log, s.log), (index, s.index), (time, s.timeindex)] {
            let path = cleaned(dir, &name);
            write_cleaned(disk, &path, &bytes, pace).await.map_err(io_at("write", &path))?;
        }
    }
    // One directory fsync for every `.cleaned` name of the pass (issue #23: each sync of a
    // pass is a journal commit the shard's produce fdatasyncs queue behind).
    disk.sync_dir(dir).await?;
    let marker = dir.join(SWAP_MARKER);
    disk.write_file_off_thread(&marker, encode_marker(&plan), true).await.map_err(io_at("write", &marker))?;
    finish(disk, dir, &plan).await
}

/// Writes `bytes` as the new file `path` (a stale one of a failed pass is replaced) and makes
/// its content durable (its name is made durable by the caller's directory fsync): aligned
/// direct-I/O writes of at most `COMPACTION_WRITE_CHUNK_BYTES`, the file cut to the exact
/// length, fdatasync. On the executor's own ring, so no trip to the blocking thread either.
async fn write_cleaned(disk: &Disk, path: &Path, bytes: &[u8], pace: &mut Pace) -> io::Result<()> {
    let file = match disk.open(path, true).await {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            disk.remove_file_off_thread(path).await?;
            disk.open(path, true).await?
        }
        other => other?,
    };
    let len = u64::try_from(bytes.len()).map_err(io::Error::other)?;
    if len > 0 {
        file.reserve(align_up(len)).await?;
    }
    let mut pos = 0usize;
    for chunk in bytes.chunks(COMPACTION_WRITE_CHUNK_BYTES) {
        let n = usize::try_from(align_up(u64::try_from(chunk.len()).map_err(io::Error::other)?))
            .map_err(io::Error::other)?;
        let mut buf = file.alloc(n);
        let b = buf.as_mut();
        b[..chunk.len()].copy_from_slice(chunk);
        b[chunk.len()..].fill(0);
        let at = u64::try_from(pos).map_err(io::Error::other)?;
        let wrote = file.write_buf(at, buf).await?;
        if wrote != n {
            return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write: {wrote} of {n} bytes")));
        }
        pos += chunk.len();
        pace.tick().await;
    }
    file.truncate(len).await?;
    file.fdatasync().await
}

/// Steps 3 and 4: every `.cleaned` file still there over its final name (the log file it
/// replaces kept under a `.deleted` name), every merged-away file still there removed (its
/// log file kept likewise), then the marker away. Returns the kept files.
async fn finish(disk: &Disk, dir: &Path, plan: &SwapPlan) -> io::Result<Vec<Kept>> {
    let present = disk.list(dir).await?;
    let listed = |p: &Path| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| present.iter().any(|n| n == f));
    let mut kept = Vec::new();
    for base in &plan.replaced {
        for (i, name) in final_names(*base).into_iter().enumerate() {
            let (from, to) = (cleaned(dir, &name), dir.join(&name));
            if !listed(&from) {
                continue; // renamed before a crash
            }
            // Only while its `.cleaned` file is there does the final name hold the old file.
            if i == 0 && listed(&to) {
                let deleted = set_aside(disk, &to, Aside::Link).await.map_err(io_at("link", &to))?;
                kept.extend(deleted.map(|d| (*base, d)));
            }
            disk.rename_off_thread(&from, &to).await.map_err(io_at("rename", &from))?;
        }
    }
    for base in &plan.removed {
        for (i, name) in final_names(*base).into_iter().enumerate() {
            let path = dir.join(&name);
            if !listed(&path) {
                continue;
            }
            if i == 0 {
                let deleted = set_aside(disk, &path, Aside::Rename).await.map_err(io_at("rename", &path))?;
                kept.extend(deleted.map(|d| (*base, d)));
            } else {
                disk.remove_file_off_thread(&path).await.map_err(io_at("remove", &path))?;
            }
        }
    }
    disk.sync_dir(dir).await?;
    let marker = dir.join(SWAP_MARKER);
    disk.remove_file_off_thread(&marker).await.map_err(io_at("remove", &marker))?;
    disk.sync_dir(dir).await?;
    Ok(kept)
}

/// Finishes a committed swap or discards an uncommitted one (see the module contract).
pub async fn recover_swap(disk: &Disk, dir: &Path) -> io::Result<SwapRecovery> {
    let names = disk.list(dir).await?;
    let has_marker = names.iter().any(|n| n == SWAP_MARKER);
    let marker = dir.join(SWAP_MARKER);
    let plan = if has_marker {
        let [bytes] = disk.read_files([marker.clone()]).await;
        decode_marker(&bytes?)
    } else {
        None
    };
    if let Some(plan) = plan {
        // The kept files are freed by the sweep that follows when the log opens.
        finish(disk, dir, &plan).await?;
        return Ok(SwapRecovery::Completed(plan.replaced.len()));
    }
    let stale: Vec<&String> = names.iter().filter(|n| n.ends_with(CLEANED_SUFFIX)).collect();
    for n in &stale {
        disk.remove_file_off_thread(&dir.join(n)).await?;
    }
    if has_marker {
        disk.remove_file_off_thread(&marker).await?;
    }
    if stale.is_empty() && !has_marker {
        return Ok(SwapRecovery::Nothing);
    }
    disk.sync_dir(dir).await?;
    Ok(SwapRecovery::Discarded(stale.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cleaned_segments_indexes_decode_and_point_at_its_batches() {
        use sluice_core::batch::{build, stamp, Record};
        let mut log = Vec::new();
        // Offsets with gaps: batches at 10, 15, 40, … (as compaction leaves them).
        for i in 0..50i64 {
            let v = vec![u8::try_from(i).unwrap(); 300];
            let mut b = build(&[Record { key: Some(b"k"), value: &v }], 1_000 + i);
            stamp(&mut b, 10 + i * 5, 0);
            log.extend_from_slice(&b);
        }
        let seg = NewSegment::with_indexes(10, log.clone(), 1024).unwrap();
        let size = u64::try_from(log.len()).unwrap();
        let idx = SparseIndex::decode(&seg.index, &seg.timeindex, size, 49 * 5).unwrap();
        assert!(idx.offsets.len() > 5);
        for (rel, p) in &idx.offsets {
            let at = usize::try_from(*p).unwrap();
            let h = sluice_core::batch::BatchHeader::parse(&log[at..]).unwrap();
            assert_eq!(h.base_offset, 10 + i64::from(*rel), "an entry points at its batch");
        }
    }

    #[test]
    fn markers_round_trip_and_damage_is_seen() {
        let plan = SwapPlan { replaced: vec![0, 4096, 9_000_000_000], removed: vec![100, 200] };
        let m = encode_marker(&plan);
        assert_eq!(decode_marker(&m), Some(plan));
        // (Only the final newline may go: the content is whole without it.)
        for cut in 0..m.len() - 1 {
            assert_eq!(decode_marker(&m[..cut]), None, "a prefix of {cut} bytes");
        }
        let mut bad = m.clone();
        bad[26] ^= 1;
        assert_eq!(decode_marker(&bad), None);
    }

    #[test]
    fn a_version_1_marker_is_a_swap_that_merged_nothing() {
        let mut text = format!("{MARKER_MAGIC_V1}\n0\n4096\n");
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!("crc {crc:08x}\n"));
        assert_eq!(decode_marker(text.as_bytes()), Some(SwapPlan { replaced: vec![0, 4096], removed: vec![] }));
    }
}
