//! The per-shard read cache: aligned 1 MiB chunks of segment files, least recently used out.
//!
//! Contract: a chunk is cached only up to the file position below which its content is final
//! (durable batches of a sealed or active segment), and a lookup hits only when the whole
//! range lies below that point, so a cached chunk never serves bytes that a later write could
//! still change. Files that are truncated or deleted are invalidated. The cache is
//! thread-local (one shard per thread) and bounded by [`set_capacity`] (the broker's
//! `read_cache_bytes_per_shard`, default `DEFAULT_READ_CACHE_BYTES_PER_SHARD`); hits of at
//! least half a chunk are served as `Bytes` slices of the chunk, without copying, and shorter
//! ones as copies, so a reader that holds its bytes (a response to a stalled client) never
//! keeps a chunk alive for much less than the chunk ([`SHARED_SLICE_MIN`]). A miss joins the load of its chunk
//! already in flight; every cached read loads the next chunk ahead (sequential consumers read
//! from memory while their previous answer is sent). A load that an invalidation overtook
//! does not cache what it read. In a chunk that is not wholly final (the growing end of an
//! active segment) the final part is loaded once; a later miss past it reads just its range.
//!
//! Write-through: the flusher hands over the bytes each successful round made final
//! ([`write_through`]); they fill their file's current chunk in memory (at most
//! `WRITE_THROUGH_CHUNKS_PER_SHARD` files at once, or a `WRITE_THROUGH_CACHE_DIVISOR`th of the
//! cache when that is more, a fill starting only at a chunk boundary),
//! which serves reads of the growing end by copy and enters the cache when whole — or when
//! its segment is sealed ([`seal`]) — without a device read. A consumer following producers
//! reads from memory.

use crate::file::SegFile;
use crate::StorageError;
use bytes::Bytes;
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use sluice_core::limits::{
    DEFAULT_READ_CACHE_BYTES_PER_SHARD, READ_AHEAD_CHUNKS_PER_SHARD, READ_AHEAD_DEPTH, WRITE_THROUGH_CACHE_DIVISOR,
    WRITE_THROUGH_CHUNKS_PER_SHARD,
};
use std::cell::Cell;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;

/// Size and alignment of a cached chunk.
pub const CHUNK: u64 = CHUNK_BYTES as u64;
/// [`CHUNK`] as a length in memory.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Ranges of a chunk at least this long are handed out as slices of it (a reference count);
/// shorter ones are copied, so a reader's bytes keep at most twice their length in memory.
pub const SHARED_SLICE_MIN: usize = CHUNK_BYTES / 2;

/// `len` bytes at `at` of `chunk` for a reader: a slice when it is at least half the chunk,
/// a copy otherwise. A slice keeps the whole chunk in memory for as long as the reader holds
/// it (a response to a client that does not read), cached or evicted; a copy keeps only
/// itself, so what responses hold is what they count (`SHARED_SLICE_MIN`).
fn hand_out(chunk: &Bytes, at: usize, len: usize) -> Bytes {
    if len >= SHARED_SLICE_MIN {
        chunk.slice(at..at + len)
    } else {
        Bytes::copy_from_slice(&chunk[at..at + len])
    }
}

struct Chunk {
    data: Bytes,
    last_use: u64,
    /// Loaded ahead and not read yet.
    ahead: bool,
    /// Numbers this chunk's content (a chunk replaced or reloaded gets a new number), so a
    /// reader marks as verified only the content it checked.
    id: u64,
    /// The range of `data` (chunk-relative) made of whole batches whose CRC-32C was checked:
    /// all of it for bytes this process wrote (produce validated them), a growing range for
    /// a chunk loaded from the device (each read checks what is not in it, then widens it).
    verified: Range<usize>,
}

/// What [`read`] answers: the bytes, and which of them are known CRC-valid.
pub(crate) struct Got {
    pub bytes: Bytes,
    /// File position of `bytes[0]`.
    pos: u64,
    /// Absolute file range known verified when the bytes were handed out (may be empty).
    verified: Range<u64>,
    /// The cached chunk the bytes came from, to widen its verified range.
    source: Option<((u64, u64), u64)>,
}

impl Got {
    pub(crate) fn unverified(bytes: Bytes, pos: u64) -> Got {
        Got { bytes, pos, verified: 0..0, source: None }
    }

    fn all_verified(bytes: Bytes, pos: u64) -> Got {
        let end = pos + bytes.len() as u64;
        Got { bytes, pos, verified: pos..end, source: None }
    }

    /// The bytes `range` of these (relative to the first), with what is known of them.
    pub fn slice(&self, range: Range<usize>) -> Got {
        let pos = self.pos + range.start as u64;
        Got { bytes: self.bytes.slice(range), pos, verified: self.verified.clone(), source: self.source }
    }

    /// File position of the first byte.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Whether the `len` bytes at file position `pos` were known CRC-valid when read.
    pub fn is_verified(&self, pos: u64, len: usize) -> bool {
        len == 0 || (self.verified.start <= pos && pos + len as u64 <= self.verified.end)
    }

    /// The `len` bytes at `pos` (whole batches) passed their CRC check: their chunk, if
    /// still cached with the same content, remembers it and later reads skip the check.
    pub fn mark_verified(&self, pos: u64, len: usize) {
        let Some((key, id)) = self.source else { return };
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            let Some(ch) = c.chunks.get_mut(&key).filter(|ch| ch.id == id) else { return };
            let base = key.1 * CHUNK;
            let (Some(lo), Some(hi)) = (
                pos.checked_sub(base).and_then(|v| usize::try_from(v).ok()),
                (pos + len as u64).checked_sub(base).and_then(|v| usize::try_from(v).ok()),
            ) else {
                return;
            };
            if hi > ch.data.len() || lo >= hi {
                return;
            }
            let v = &mut ch.verified;
            if v.start >= v.end || hi - lo > v.end - v.start && !(lo <= v.end && v.start <= hi) {
                *v = lo..hi;
            } else if lo <= v.end && v.start <= hi {
                *v = v.start.min(lo)..v.end.max(hi);
            }
        });
    }
}

/// A chunk being filled from flushed writes: `data` holds the chunk's first `data.len()`
/// bytes, all final.
struct Filling {
    idx: u64,
    data: Vec<u8>,
    last_use: u64,
}

#[derive(Default)]
struct Cache {
    /// Chunks being filled, by file key (counted in `bytes` at a whole chunk each).
    filling: HashMap<u64, Filling>,
    chunks: HashMap<(u64, u64), Chunk>,
    bytes: usize,
    clock: u64,
    /// Numbers the loads.
    next_load: u64,
    /// Loads in flight, by (file key, chunk index), with their number. Invalidating a file drops
    /// its entries: a load that finds its entry gone does not cache what it read.
    loading: HashMap<(u64, u64), (u64, Load)>,
    /// Recent read-ahead outcomes (halved as they grow): chunks read after being loaded ahead,
    /// and chunks evicted before anyone read them.
    ahead_used: u32,
    ahead_wasted: u32,
    /// Read-aheads skipped while they were being wasted (every 64th goes ahead as a probe).
    ahead_skipped: u32,
    /// Cached chunks loaded ahead and not read yet.
    ahead_unread: usize,
}

thread_local!(static CACHE: RefCell<Cache> = RefCell::new(Cache::default()));
thread_local!(static CAPACITY: Cell<usize> = const { Cell::new(DEFAULT_READ_CACHE_BYTES_PER_SHARD) });

/// Bounds this shard's cache (set once at shard start, before any read).
pub fn set_capacity(bytes: usize) {
    CAPACITY.with(|c| c.set(bytes));
}

/// Forgets every chunk of a file (it was truncated or deleted).
pub fn invalidate(key: u64) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.loading.retain(|(k, _), _| *k != key);
        if c.filling.remove(&key).is_some() {
            c.bytes -= CHUNK_BYTES;
        }
        let before = c.chunks.len();
        let mut freed = 0;
        let mut unread = 0;
        c.chunks.retain(|(k, _), ch| {
            let keep = *k != key;
            if !keep {
                freed += ch.data.len();
                unread += usize::from(ch.ahead);
            }
            keep
        });
        c.ahead_unread -= unread;
        if c.chunks.len() != before {
            c.bytes -= freed;
        }
    });
}

/// The chunk index of a position.
pub fn chunk_of(pos: u64) -> u64 {
    pos / CHUNK
}

/// The chunk holding all of the `len` bytes at `pos`; None when they are none or cross a chunk.
fn one_chunk(pos: u64, len: usize) -> Option<u64> {
    let idx = chunk_of(pos);
    (len > 0 && chunk_of(pos + len as u64 - 1) == idx).then_some(idx)
}

/// Reads `len` bytes at `pos`, all below `final_end` (content that can no longer change;
/// `growing` when it is an active segment's flushed end, which moves on), through the cache
/// when the range lies within one chunk. A miss joins a load of the chunk
/// already in flight, or starts one; every cached read also starts loading the next chunk
/// (read-ahead, when it is wholly final), so a sequential reader finds it in memory while its
/// previous answer is still being sent.
pub(crate) async fn read(
    file: &Rc<SegFile>,
    name: &str,
    pos: u64,
    len: usize,
    final_end: u64,
    growing: bool,
) -> Result<Got, StorageError> {
    let end = pos + len as u64;
    debug_assert!(end <= final_end, "reading bytes that are not final");
    // Ranges that cross a chunk, or reach bytes not known to be final, bypass the cache.
    let Some(idx) = one_chunk(pos, len).filter(|_| end <= final_end) else {
        crate::stats::with(|s| s.disk_reads += 1);
        return Ok(Got::unverified(read_direct(file, name, pos, len).await?, pos));
    };
    let key = (file.key(), idx);
    read_ahead(file, idx, final_end);
    if let Some(got) = cached(key, pos, len) {
        crate::stats::with(|s| s.memory_reads += 1);
        return Ok(got);
    }
    // With `growing`, `final_end` is the flushed end of an active segment, which moves with
    // every flush. Such a read is served from the chunk being filled by write-through when it
    // can be. Otherwise the chunk's final part so far is loaded and cached once; a read past
    // what is cached or loading takes just its range from the device, since loading the final
    // part again for each read of new data would make a consumer at the tail re-read the chunk
    // on every fetch (~55x the bytes produced, measured). The chunk is loaded whole once final.
    if growing && final_end < idx * CHUNK + CHUNK {
        if let Some(got) = read_growing(file, name, key, pos, len).await? {
            return Ok(got);
        }
    }
    crate::stats::with(|s| s.disk_reads += 1);
    load_and_read(file, name, key, pos, len, final_end).await
}

/// `len` bytes at `pos` of file `key` (within one chunk) when the cache holds them, without a
/// device read or a read-ahead: for a compaction pass, which reads sealed segments whole and
/// so finds the ones just written in memory (their CRCs it checks itself).
pub(crate) fn peek(key: u64, pos: u64, len: usize) -> Option<Bytes> {
    let got = cached((key, one_chunk(pos, len)?), pos, len)?;
    crate::stats::with(|s| s.memory_reads += 1);
    Some(got.bytes)
}

/// `len` bytes at `pos` from the cached chunk `key`, when it holds them.
fn cached(key: (u64, u64), pos: u64, len: usize) -> Option<Got> {
    let (base, at) = (key.1 * CHUNK, offset_in_chunk(pos));
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.clock += 1;
        let now = c.clock;
        let ch = c.chunks.get_mut(&key)?;
        if at + len > ch.data.len() {
            return None;
        }
        ch.last_use = now;
        let got = Got {
            bytes: hand_out(&ch.data, at, len),
            pos,
            verified: base + ch.verified.start as u64..base + ch.verified.end as u64,
            source: Some((key, ch.id)),
        };
        c.first_read(key);
        Some(got)
    })
}

/// A read of an active segment's chunk not wholly final yet (see [`read`]): from the chunk
/// being filled by write-through when it holds the range, else directly from the device when
/// the chunk is cached or loading already; `None` to load it.
async fn read_growing(
    file: &Rc<SegFile>,
    name: &str,
    key: (u64, u64),
    pos: u64,
    len: usize,
) -> Result<Option<Got>, StorageError> {
    let at = offset_in_chunk(pos);
    let (filled, known) = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let known = c.chunks.contains_key(&key) || c.loading.contains_key(&key);
        c.clock += 1;
        let now = c.clock;
        let f = c.filling.get_mut(&file.key()).filter(|f| f.idx == key.1 && at + len <= f.data.len());
        (
            f.map(|f| {
                f.last_use = now;
                Bytes::copy_from_slice(&f.data[at..at + len])
            }),
            known,
        )
    });
    if let Some(b) = filled {
        crate::stats::with(|s| s.memory_reads += 1);
        // Bytes being filled were written by this process: produce validated them.
        return Ok(Some(Got::all_verified(b, pos)));
    }
    if known {
        crate::stats::with(|s| s.disk_reads += 1);
        return Ok(Some(Got::unverified(read_direct(file, name, pos, len).await?, pos)));
    }
    Ok(None)
}

/// Loads chunk `key` (or joins its load in flight) and answers `len` bytes at `pos` from it.
async fn load_and_read(
    file: &Rc<SegFile>,
    name: &str,
    key: (u64, u64),
    pos: u64,
    len: usize,
    final_end: u64,
) -> Result<Got, StorageError> {
    let at = offset_in_chunk(pos);
    let loaded = load(file, key.1, final_end, false).await;
    // A read that joined a load started ahead used it.
    let source = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.first_read(key);
        c.chunks.get(&key).map(|ch| (key, ch.id))
    });
    match loaded {
        // Loaded from the device: nothing in it is verified yet. When it was cached, the
        // reader's check widens the cached chunk's verified range (`source`: the chunk cached
        // now holds these very bytes unless a later load replaced it, which gets a new id).
        Some((data, id)) if at + len <= data.len() => Ok(Got {
            bytes: hand_out(&data, at, len),
            pos,
            verified: 0..0,
            source: source.filter(|(_, cached)| *cached == id),
        }),
        // A failed load, or one started for a shorter final part: read directly, which also
        // reports the error.
        _ => Ok(Got::unverified(read_direct(file, name, pos, len).await?, pos)),
    }
}

/// Chunks this shard may be filling from flushed writes at once.
fn filling_limit() -> usize {
    let share = CAPACITY.with(Cell::get) / WRITE_THROUGH_CACHE_DIVISOR / CHUNK_BYTES;
    share.max(WRITE_THROUGH_CHUNKS_PER_SHARD)
}

/// Where `pos` lies in its chunk.
fn offset_in_chunk(pos: u64) -> usize {
    usize::try_from(pos % CHUNK).expect("a chunk offset fits in usize")
}

/// Bytes `[pos, pos + bytes.len())` of file `key` became final (a flush round's write and
/// fdatasync completed): they continue the file's chunk being filled, start one at a chunk
/// boundary, and a chunk filled whole is cached. Bytes that continue nothing are dropped
/// (the chunk will be read from the device if anyone wants it).
pub(crate) fn write_through(key: u64, pos: u64, bytes: &[u8]) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let mut p = pos;
        let mut rest = bytes;
        while !rest.is_empty() {
            let idx = chunk_of(p);
            let n = usize::try_from((idx + 1) * CHUNK - p).map_or(rest.len(), |n| n.min(rest.len()));
            c.fill(key, idx, p, &rest[..n]);
            p += n as u64;
            rest = &rest[n..];
        }
    });
}

/// File `key` stops growing (its segment was sealed): a chunk being filled is cached as it is.
pub(crate) fn seal(key: u64) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(f) = c.filling.remove(&key) {
            c.bytes -= CHUNK_BYTES;
            if !f.data.is_empty() {
                let mut data = f.data;
                data.shrink_to_fit();
                let len = data.len();
                c.insert((key, f.idx), Bytes::from(data), false, 0..len);
            }
        }
    });
}

/// A chunk load in flight, shared by every reader that misses on it: the bytes read and the
/// load's number, which is the cached chunk's id if it was cached (None if it failed).
type Load = Shared<LocalBoxFuture<'static, Option<(Bytes, u64)>>>;

/// The load of chunk `idx` (its final part, up to `final_end`): the one in flight, or a new
/// one. On completion the chunk is cached, unless its file was invalidated meanwhile.
fn load(file: &Rc<SegFile>, idx: u64, final_end: u64, ahead: bool) -> Load {
    let key = (file.key(), idx);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, l)) = c.loading.get(&key) {
            return l.clone();
        }
        let start = idx * CHUNK;
        let want = usize::try_from(final_end.min(start + CHUNK) - start).expect("at most a chunk");
        let id = c.new_id();
        let file = file.clone();
        let l = async move {
            let data = file.read_at(start, want).await.ok().map(|d| d.slice(..want.min(d.len())));
            CACHE.with(|c| {
                let mut c = c.borrow_mut();
                // After an invalidation of its file this load is no longer listed (a newer one
                // may be): then what it read may be stale and is not cached.
                if c.loading.get(&key).is_some_and(|(n, _)| *n == id) {
                    c.loading.remove(&key);
                    if let Some(d) = &data {
                        c.insert_with_id(key, d.clone(), ahead, 0..0, id);
                    }
                }
            });
            data.map(|d| (d, id))
        }
        .boxed_local()
        .shared();
        c.loading.insert(key, (id, l.clone()));
        l
    })
}

/// Starts loading, in the background, the chunks after `idx` up to `READ_AHEAD_DEPTH` ahead
/// that are wholly final and neither cached nor loading, while fewer than
/// `READ_AHEAD_CHUNKS_PER_SHARD` chunks are loaded ahead and unread and read-ahead is paying
/// off on this shard: when more chunks loaded ahead are evicted unread than are read (readers
/// cycle over more data than the cache holds, as with a consumer of a thousand partitions),
/// read-ahead only adds disk reads, so it stops, but for one probe in 64. Several chunks
/// ahead keep a consumer catching up from waiting on the device between fetches: its next
/// fetch finds the chunk after this one loaded, and the loads behind it in flight.
fn read_ahead(file: &Rc<SegFile>, idx: u64, final_end: u64) {
    for next in idx + 1..=idx + READ_AHEAD_DEPTH {
        let key = (file.key(), next);
        if (next + 1) * CHUNK > final_end {
            return;
        }
        let due = CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.chunks.contains_key(&key) || c.loading.contains_key(&key) {
                return Some(false);
            }
            if c.loading.len() + c.ahead_unread >= READ_AHEAD_CHUNKS_PER_SHARD {
                return None;
            }
            if c.ahead_wasted <= c.ahead_used + 4 {
                return Some(true);
            }
            c.ahead_skipped = c.ahead_skipped.wrapping_add(1);
            c.ahead_skipped.is_multiple_of(64).then_some(true)
        });
        match due {
            None => return,
            Some(false) => {}
            Some(true) => {
                let l = load(file, next, final_end, true);
                glommio::spawn_local(async move {
                    let _ = l.await;
                })
                .detach();
            }
        }
    }
}

impl Cache {
    /// One piece of [`write_through`], within chunk `idx`.
    fn fill(&mut self, key: u64, idx: u64, pos: u64, piece: &[u8]) {
        self.clock += 1;
        let now = self.clock;
        let continues =
            self.filling.get(&key).is_some_and(|f| f.idx == idx && idx * CHUNK + f.data.len() as u64 == pos);
        if !continues {
            if self.filling.remove(&key).is_some() {
                self.bytes -= CHUNK_BYTES;
            }
            if pos != idx * CHUNK {
                return;
            }
            if self.filling.len() >= filling_limit() {
                // The file filled least recently gives its place up.
                let Some(old) = self.filling.iter().min_by_key(|(_, f)| f.last_use).map(|(k, _)| *k) else { return };
                self.filling.remove(&old);
                self.bytes -= CHUNK_BYTES;
            }
            self.filling.insert(key, Filling { idx, data: Vec::with_capacity(CHUNK_BYTES), last_use: now });
            self.bytes += CHUNK_BYTES;
            self.evict();
        }
        let f = self.filling.get_mut(&key).expect("a chunk being filled");
        f.data.extend_from_slice(piece);
        f.last_use = now;
        assert!(f.data.len() <= CHUNK_BYTES, "a chunk filled past its end");
        if f.data.len() == CHUNK_BYTES {
            let f = self.filling.remove(&key).expect("a chunk being filled");
            self.bytes -= CHUNK_BYTES;
            // Written by this process: produce validated every batch in it.
            self.insert((key, idx), Bytes::from(f.data), false, 0..CHUNK_BYTES);
        }
    }

    /// A new chunk or load number.
    fn new_id(&mut self) -> u64 {
        self.next_load += 1;
        self.next_load
    }

    /// Caches a chunk whose `verified` range was checked, evicting the least recently used
    /// beyond the per-shard bound.
    fn insert(&mut self, key: (u64, u64), data: Bytes, ahead: bool, verified: Range<usize>) {
        let id = self.new_id();
        self.insert_with_id(key, data, ahead, verified, id);
    }

    fn insert_with_id(&mut self, key: (u64, u64), data: Bytes, ahead: bool, verified: Range<usize>, id: u64) {
        assert!(verified.end <= data.len(), "a verified range past the chunk's data");
        self.clock += 1;
        let now = self.clock;
        self.bytes += data.len();
        self.ahead_unread += usize::from(ahead);
        if let Some(old) = self.chunks.insert(key, Chunk { data, last_use: now, ahead, id, verified }) {
            self.bytes -= old.data.len();
            self.ahead_unread -= usize::from(old.ahead);
        }
        self.evict();
    }

    /// Evicts cached chunks, least recently used first, while the cache is over its bound
    /// (chunks being filled are not evicted; there are few of them).
    fn evict(&mut self) {
        let capacity = CAPACITY.with(Cell::get);
        while self.bytes > capacity {
            let Some(victim) = self.chunks.iter().min_by_key(|(_, ch)| ch.last_use).map(|(k, _)| *k) else { break };
            if let Some(ch) = self.chunks.remove(&victim) {
                self.bytes -= ch.data.len();
                if ch.ahead {
                    self.ahead_unread -= 1;
                    self.note_ahead(false);
                }
            }
        }
    }

    /// A chunk was read: if it was loaded ahead, that read-ahead was used.
    fn first_read(&mut self, key: (u64, u64)) {
        if let Some(true) = self.chunks.get_mut(&key).map(|ch| std::mem::take(&mut ch.ahead)) {
            self.ahead_unread -= 1;
            self.note_ahead(true);
        }
    }

    /// Counts a chunk loaded ahead as read (`used`) or evicted unread.
    fn note_ahead(&mut self, used: bool) {
        if used {
            self.ahead_used += 1;
        } else {
            self.ahead_wasted += 1;
        }
        if self.ahead_used + self.ahead_wasted > 64 {
            self.ahead_used /= 2;
            self.ahead_wasted /= 2;
        }
    }
}

/// Reads exactly `len` bytes at `pos` without the cache.
pub(crate) async fn read_direct(file: &Rc<SegFile>, name: &str, pos: u64, len: usize) -> Result<Bytes, StorageError> {
    let data = file.read_at(pos, len).await.map_err(|e| StorageError::io("read", name, e))?;
    if data.len() != len {
        return Err(StorageError::io("read", name, std::io::Error::other("short read")));
    }
    Ok(data)
}

/// Bytes held (for metrics and tests).
pub fn held_bytes() -> usize {
    CACHE.with(|c| c.borrow().bytes)
}

#[cfg(test)]
// Test positions are small constants: plain casts keep the arithmetic readable.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
mod tests {
    use super::*;
    use crate::disk::Disk;

    #[test]
    fn a_load_overtaken_by_an_invalidation_does_not_cache_its_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        std::fs::write(&path, vec![5u8; 3 * CHUNK_BYTES]).unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let file = SegFile::existing(&Disk::Real, path);
                // Started before the invalidation of its file, completed after it.
                let stale = load(&file, 0, 3 * CHUNK, false);
                invalidate(file.key());
                assert_eq!(stale.await.map(|d| d.0.len()), Some(CHUNK_BYTES), "the load still answers its reader");
                assert_eq!(held_bytes(), 0, "but does not cache what an invalidation overtook");
                // The invalidation of another file changes nothing for this one's load.
                let other = load(&file, 2, 3 * CHUNK, false);
                invalidate(file.key() + 1_000_000);
                assert!(other.await.is_some());
                assert_eq!(held_bytes(), CHUNK_BYTES, "cached despite another file's invalidation");
                assert!(CACHE.with(|c| c.borrow().loading.is_empty()), "a finished load left its entry");
                invalidate(file.key());
                // A reader joining a load in flight gets the same bytes; one chunk is cached.
                let (a, b) = (load(&file, 1, 3 * CHUNK, false), load(&file, 1, 3 * CHUNK, false));
                let (a, b) = futures::join!(a, b);
                assert_eq!(a.unwrap().0.as_ptr(), b.unwrap().0.as_ptr(), "one load, shared");
                assert_eq!(held_bytes(), CHUNK_BYTES);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn flushed_writes_fill_chunks_that_are_read_without_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        let content: Vec<u8> = (0..3 * CHUNK_BYTES).map(|i| (i % 249) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let file = SegFile::existing(&Disk::Real, path);
                let key = file.key();
                let read_bytes = || crate::stats::snapshot().bytes_read;
                let before = read_bytes();
                // Rounds of 100,000 bytes from a chunk boundary make the file final up to `end`.
                let mut end = 0u64;
                while end + 100_000 <= 2 * CHUNK + 300_000 {
                    write_through(key, end, &content[end as usize..end as usize + 100_000]);
                    end += 100_000;
                }
                assert_eq!(held_bytes(), 3 * CHUNK_BYTES, "two whole chunks and one being filled");
                // Whole chunks and the growing end are served from memory.
                for pos in [0, CHUNK - 500, CHUNK + 7, 2 * CHUNK + 1000, end - 1000] {
                    let len = 1000.min((end - pos) as usize);
                    let got = read(&file, "t-0", pos, len, end, true).await.unwrap().bytes;
                    assert_eq!(&got[..], &content[pos as usize..pos as usize + len], "at {pos}");
                }
                assert_eq!(read_bytes() - before, 1000, "only the read crossing a chunk boundary reached the device");
                // Bytes that continue nothing (a gap) are dropped, and so is the chunk being filled.
                write_through(key, end + 4096, &content[end as usize + 4096..end as usize + 8192]);
                assert_eq!(held_bytes(), 2 * CHUNK_BYTES);
                // Sealing caches the part filled; invalidation forgets everything.
                write_through(key + 1, 0, &content[..5000]);
                seal(key + 1);
                assert_eq!(held_bytes(), 2 * CHUNK_BYTES + 5000);
                invalidate(key);
                invalidate(key + 1);
                assert_eq!(held_bytes(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_peek_answers_from_cached_chunks_only_and_never_reads_the_device() {
        let content: Vec<u8> = (0..CHUNK_BYTES + 5000).map(|i| (i % 241) as u8).collect();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let key = 77;
                let read_bytes = || crate::stats::snapshot().bytes_read;
                let before = read_bytes();
                assert!(peek(key, 0, 4096).is_none(), "nothing cached yet");
                write_through(key, 0, &content);
                seal(key);
                let whole = peek(key, 0, CHUNK_BYTES).expect("the first chunk, filled whole");
                assert_eq!(&whole[..], &content[..CHUNK_BYTES]);
                let tail = peek(key, CHUNK, 5000).expect("the sealed segment's last chunk");
                assert_eq!(&tail[..], &content[CHUNK_BYTES..]);
                assert!(peek(key, CHUNK, 5001).is_none(), "past what the chunk holds");
                assert!(peek(key, CHUNK - 10, 20).is_none(), "across a chunk boundary");
                assert!(peek(key, 0, 0).is_none());
                invalidate(key);
                assert!(peek(key, 0, 4096).is_none(), "forgotten with its file");
                assert_eq!(read_bytes(), before, "no device read");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_growing_end_of_an_active_segment_is_loaded_once_then_read_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        let content: Vec<u8> = (0..2 * CHUNK_BYTES).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let file = SegFile::existing(&Disk::Real, path);
                let read_bytes = || crate::stats::snapshot().bytes_read;
                let check =
                    |got: Bytes, pos: u64| assert_eq!(&got[..], &content[pos as usize..pos as usize + got.len()]);
                // The second chunk is final up to 600 KiB and growing. The first read loads
                // and caches that final part.
                let flushed = CHUNK + 600 * 1024;
                let before = read_bytes();
                check(read(&file, "t-0", CHUNK + 1000, 1000, flushed, true).await.unwrap().bytes, CHUNK + 1000);
                assert_eq!(held_bytes(), 600 * 1024);
                // 100 reads of new data, each 1000 bytes past the last, read about their range.
                for i in 0..100u64 {
                    let pos = flushed + i * 1000;
                    check(read(&file, "t-0", pos, 1000, pos + 1000, true).await.unwrap().bytes, pos);
                }
                let read = read_bytes() - before;
                assert!(read <= 600 * 1024 + 100 * 3 * 4096, "{read} bytes read from the device");
                assert_eq!(held_bytes(), 600 * 1024, "the final part was loaded again");
                // Once the chunk is wholly final it is loaded whole.
                check(super::read(&file, "t-0", flushed, 1000, 2 * CHUNK, true).await.unwrap().bytes, flushed);
                assert_eq!(held_bytes(), CHUNK_BYTES);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
