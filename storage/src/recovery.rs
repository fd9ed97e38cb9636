//! Scanning a segment: recovery at open, rebuilding indexes, and the short scans of reads.
//!
//! Contract: [`scan`] reads batches from `start` and accepts one only if its length is sane,
//! its magic is 2, its CRC-32C matches and its base offset is the one expected; it stops at the
//! first batch that fails (or at the end). Bytes after the last valid batch are either zero
//! padding (the partial last page of a direct-I/O write, harmless) or a torn or corrupt write,
//! reported in [`Scanned::truncated_bytes`] for the caller to cut off.

use crate::file::SegFile;
use crate::index::{IndexCursor, SparseIndex};
use crate::log::Entry;
use crate::StorageError;
use sluice_core::batch::{self, LOG_OVERHEAD};
use sluice_core::limits::MAX_REQUEST_BYTES;
use std::rc::Rc;

const SCAN_CHUNK: usize = sluice_core::limits::RECOVERY_SCAN_CHUNK_BYTES;

/// A distance within the scan buffer, or a batch length already checked against
/// `MAX_REQUEST_BYTES`, as a `usize`: the buffer is in memory, so either fits.
fn in_buffer(n: u64) -> usize {
    usize::try_from(n).expect("a distance within an in-memory buffer fits usize")
}

pub(crate) struct Scanned {
    /// Every valid batch from `start`, in order.
    pub entries: Vec<Entry>,
    pub end_pos: u64,
    pub next_offset: i64,
    /// Non-zero bytes found after the last valid batch (a torn or corrupt tail).
    pub truncated_bytes: u64,
}

/// Where to start and what to expect there.
pub(crate) struct ScanFrom {
    pub pos: u64,
    pub offset: i64,
    /// Base offset of the segment (index entries are relative to it).
    pub segment_base: i64,
    /// Offsets may jump forward between batches (a sealed segment compaction rewrote); the
    /// active segment is never compacted, so there a jump is damage.
    pub gaps: bool,
}

/// Scans from `from` to the end of the file, extending `index` as batches pass.
pub(crate) async fn scan(
    file: &Rc<SegFile>,
    path: &str,
    from: ScanFrom,
    index: &mut SparseIndex,
    interval: u64,
) -> Result<Scanned, StorageError> {
    let size = file.size().await.map_err(|e| StorageError::io("stat", path, e))?;
    let mut entries = Vec::new();
    let mut cursor_idx = IndexCursor::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos: u64 = from.pos; // file position of buf[0]
    let mut read_pos: u64 = from.pos; // file position up to which buf is filled
    let mut cursor: u64 = from.pos; // file position of the next batch
    let mut next_offset = from.offset;
    let mut beyond_index = false;

    loop {
        // Buffer the next length field, then the whole batch it announces.
        let mut total: Option<u64> = None;
        loop {
            let have = read_pos - cursor;
            let need = total.unwrap_or(LOG_OVERHEAD as u64);
            if have >= need {
                if total.is_some() {
                    break;
                }
                let at = in_buffer(cursor - buf_pos);
                let len = i32::from_be_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
                let Some(len) = usize::try_from(len).ok().filter(|l| (1..=MAX_REQUEST_BYTES).contains(l)) else {
                    break;
                };
                total = Some((LOG_OVERHEAD + len) as u64);
                continue;
            }
            if read_pos >= size {
                break;
            }
            let consumed = in_buffer(cursor - buf_pos);
            if consumed > 0 {
                buf.drain(..consumed);
                buf_pos = cursor;
            }
            let want = SCAN_CHUNK.max(in_buffer(need - have));
            let chunk = file.read_at(read_pos, want).await.map_err(|e| StorageError::io("read", path, e))?;
            if chunk.is_empty() {
                break;
            }
            buf.extend_from_slice(&chunk[..]);
            read_pos += chunk.len() as u64;
        }
        let Some(need) = total else { break };
        if read_pos - cursor < need {
            break;
        }
        let at = in_buffer(cursor - buf_pos);
        let Ok(h) = batch::validate(&buf[at..at + in_buffer(need)]) else { break };
        if h.base_offset != next_offset && !(from.gaps && h.base_offset > next_offset) {
            break;
        }
        let len = u32::try_from(need).expect("a batch length is at most MAX_REQUEST_BYTES");
        // A segment written by an older build may hold batches the index cannot address: they
        // get no entry (a read or a lookup reaches them by scanning from an earlier one).
        match (crate::index::relative_offset(from.segment_base, h.base_offset), crate::index::position(cursor)) {
            (Ok(rel), Ok(pos)) => cursor_idx.add(index, interval, rel, pos, h.max_timestamp, len),
            (Err(e), _) | (_, Err(e)) => {
                if !beyond_index {
                    tracing::warn!(segment = path, error = %e, "segment spans more than its index can address");
                    beyond_index = true;
                }
            }
        }
        entries.push(Entry::new(&h, h.base_offset, cursor));
        next_offset = h.last_offset() + 1;
        cursor += need;
    }

    // Anything after `cursor` that is not zero padding is a torn or corrupt write.
    let mut truncated_bytes = 0;
    if cursor < size {
        let at = in_buffer(cursor.saturating_sub(buf_pos));
        let rest_in_buf = buf.get(at..).unwrap_or(&[]);
        let dirty = rest_in_buf.iter().any(|b| *b != 0) || read_pos < size;
        if dirty {
            truncated_bytes = size - cursor;
        }
    }
    Ok(Scanned { entries, end_pos: cursor, next_offset, truncated_bytes })
}
