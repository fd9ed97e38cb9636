//! Scanning a segment: recovery at open, rebuilding indexes, and the short scans of reads.
//!
//! Contract: [`scan`] reads batches from `start` and accepts one only if its length is sane,
//! its magic is 2, its CRC-32C matches and its base offset is the one expected; it stops at the
//! first batch that fails (or at the end). Bytes after the last valid batch are zeros (the
//! partial last page of a direct-I/O write, or space prepared ahead of the appends: `file/mod.rs`)
//! or a torn or corrupt write, reported in [`Scanned::truncated_bytes`]; the caller cuts
//! either off.

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
    /// The bytes after the last valid batch when the part of them read holds a non-zero byte
    /// (a torn or corrupt tail); 0 when that part is zeros (padding or prepared space).
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
    let mut reader = Reader { file, path, size, buf: Vec::new(), buf_pos: from.pos, read_pos: from.pos };
    let mut entries = Vec::new();
    let mut cursor_idx = IndexCursor::new();
    let mut cursor: u64 = from.pos; // file position of the next batch
    let mut next_offset = from.offset;
    let mut beyond_index = false;
    while let Some(need) = reader.next_batch(cursor).await? {
        let Ok(h) = batch::validate(reader.batch(cursor, need)) else { break };
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
    let truncated_bytes = reader.torn_after(cursor);
    Ok(Scanned { entries, end_pos: cursor, next_offset, truncated_bytes })
}

/// The part of a segment file a scan has read and not passed yet.
struct Reader<'a> {
    file: &'a Rc<SegFile>,
    path: &'a str,
    size: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// File position up to which `buf` is filled.
    read_pos: u64,
}

impl Reader<'_> {
    /// Buffers the batch at file position `cursor`: its length field, then the whole batch it
    /// announces. Its length (with the log overhead), or `None` where the batches end (the end
    /// of the file, a length out of range, a batch cut short).
    async fn next_batch(&mut self, cursor: u64) -> Result<Option<u64>, StorageError> {
        let mut total: Option<u64> = None;
        loop {
            let have = self.read_pos - cursor;
            let need = total.unwrap_or(LOG_OVERHEAD as u64);
            if have >= need {
                if total.is_some() {
                    break;
                }
                let at = in_buffer(cursor - self.buf_pos);
                let len = i32::from_be_bytes(self.buf[at + 8..at + 12].try_into().expect("4 bytes"));
                let Some(len) = usize::try_from(len).ok().filter(|l| (1..=MAX_REQUEST_BYTES).contains(l)) else {
                    break;
                };
                total = Some((LOG_OVERHEAD + len) as u64);
                continue;
            }
            if self.read_pos >= self.size {
                break;
            }
            let consumed = in_buffer(cursor - self.buf_pos);
            if consumed > 0 {
                self.buf.drain(..consumed);
                self.buf_pos = cursor;
            }
            let want = SCAN_CHUNK.max(in_buffer(need - have));
            let chunk =
                self.file.read_at(self.read_pos, want).await.map_err(|e| StorageError::io("read", self.path, e))?;
            if chunk.is_empty() {
                break;
            }
            self.buf.extend_from_slice(&chunk[..]);
            self.read_pos += chunk.len() as u64;
        }
        Ok(total.filter(|need| self.read_pos - cursor >= *need))
    }

    /// The `need` bytes buffered at file position `cursor` (after [`Reader::next_batch`]).
    fn batch(&self, cursor: u64, need: u64) -> &[u8] {
        let at = in_buffer(cursor - self.buf_pos);
        &self.buf[at..at + in_buffer(need)]
    }

    /// The bytes after `cursor` (the end of the valid batches) when the part of them read
    /// (the rest of the scan's last chunk) holds a non-zero byte: a torn or corrupt write; 0
    /// otherwise. Zeros there are padding or prepared space, whatever follows unread: appends
    /// are sequential, so a torn write starts at the end of the valid batches.
    fn torn_after(&self, cursor: u64) -> u64 {
        if cursor >= self.size {
            return 0;
        }
        let at = in_buffer(cursor.saturating_sub(self.buf_pos));
        let rest_in_buf = self.buf.get(at..).unwrap_or(&[]);
        let dirty = rest_in_buf.iter().any(|b| *b != 0) || rest_in_buf.is_empty();
        if dirty {
            self.size - cursor
        } else {
            0
        }
    }
}
