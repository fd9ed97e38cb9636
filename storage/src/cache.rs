//! The per-shard read cache: aligned 1 MiB chunks of segment files, least recently used out.
//!
//! Contract: a chunk is cached only up to the file position below which its content is final
//! (durable batches of a sealed or active segment), and a lookup hits only when the whole
//! range lies below that point, so a cached chunk never serves bytes that a later write could
//! still change. Files that are truncated or deleted are invalidated. The cache is
//! thread-local (one shard per thread) and bounded by `READ_CACHE_BYTES_PER_SHARD`; hits are
//! served as `Bytes` slices of the chunk, without copying.

use crate::file::SegFile;
use crate::StorageError;
use bytes::Bytes;
use sluice_core::limits::READ_CACHE_BYTES_PER_SHARD;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Size and alignment of a cached chunk.
pub const CHUNK: u64 = 1 << 20;

struct Chunk {
    data: Bytes,
    last_use: u64,
}

#[derive(Default)]
struct Cache {
    chunks: HashMap<(u64, u64), Chunk>,
    bytes: usize,
    clock: u64,
}

thread_local!(static CACHE: RefCell<Cache> = RefCell::new(Cache::default()));

/// Forgets every chunk of a file (it was truncated or deleted).
pub fn invalidate(key: u64) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let before = c.chunks.len();
        let mut freed = 0;
        c.chunks.retain(|(k, _), ch| {
            let keep = *k != key;
            if !keep {
                freed += ch.data.len();
            }
            keep
        });
        if c.chunks.len() != before {
            c.bytes -= freed;
        }
    });
}

/// The chunk index of a position.
pub fn chunk_of(pos: u64) -> u64 {
    pos / CHUNK
}

/// Reads `len` bytes at `pos`, all below `final_end` (content that can no longer change),
/// through the cache when the range lies within one chunk.
pub(crate) async fn read(
    file: &Rc<SegFile>,
    name: &str,
    pos: u64,
    len: usize,
    final_end: u64,
) -> Result<Bytes, StorageError> {
    debug_assert!(pos + len as u64 <= final_end, "reading bytes that are not final");
    let idx = chunk_of(pos);
    // Ranges that cross a chunk, or reach bytes not known to be final, bypass the cache.
    if len == 0 || chunk_of(pos + len as u64 - 1) != idx || pos + len as u64 > final_end {
        crate::stats::with(|s| s.disk_reads += 1);
        return read_direct(file, name, pos, len).await;
    }
    let key = (file.key(), idx);
    let start = idx * CHUNK;
    let at = (pos - start) as usize;
    let hit = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.clock += 1;
        let now = c.clock;
        let ch = c.chunks.get_mut(&key)?;
        if at + len > ch.data.len() {
            return None;
        }
        ch.last_use = now;
        Some(ch.data.slice(at..at + len))
    });
    if let Some(b) = hit {
        crate::stats::with(|s| s.memory_reads += 1);
        return Ok(b);
    }
    crate::stats::with(|s| s.disk_reads += 1);
    let want = (final_end.min(start + CHUNK) - start) as usize;
    let data = file.read_at(start, want).await.map_err(|e| StorageError::io("read", name, e))?;
    if data.len() < at + len {
        return Err(StorageError::io("read", name, std::io::Error::other("short read")));
    }
    let data = data.slice(..want.min(data.len()));
    let out = data.slice(at..at + len);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.clock += 1;
        let now = c.clock;
        c.bytes += data.len();
        if let Some(old) = c.chunks.insert(key, Chunk { data, last_use: now }) {
            c.bytes -= old.data.len();
        }
        while c.bytes > READ_CACHE_BYTES_PER_SHARD {
            let Some(victim) = c.chunks.iter().min_by_key(|(_, ch)| ch.last_use).map(|(k, _)| *k) else { break };
            if let Some(ch) = c.chunks.remove(&victim) {
                c.bytes -= ch.data.len();
            }
        }
    });
    Ok(out)
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
