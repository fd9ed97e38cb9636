//! Recovery of a segment at open: scan batches from the start, stop at the first invalid one.
//!
//! Contract: every batch in the returned index has a valid length, magic and CRC-32C and the
//! base offset that follows its predecessor. Bytes after the last valid batch are either zero
//! padding (from the partial last page of a direct-I/O write, harmless) or a torn or corrupt
//! write, which is reported in [`Recovered::truncated_bytes`] and cut off by the caller.

use crate::log::Entry;
use crate::StorageError;
use glommio::io::DmaFile;
use sluice_core::batch::{self, LOG_OVERHEAD};
use sluice_core::limits::MAX_REQUEST_BYTES;

const SCAN_CHUNK: usize = 4 * 1024 * 1024;

pub(crate) struct Recovered {
    pub index: Vec<Entry>,
    pub end_pos: u64,
    pub next_offset: i64,
    /// Non-zero bytes found after the last valid batch (a torn or corrupt tail).
    pub truncated_bytes: u64,
}

pub(crate) async fn scan(file: &DmaFile, path: &str, base_offset: i64) -> Result<Recovered, StorageError> {
    let size = file.file_size().await.map_err(|e| StorageError::io("stat", path, e))?;
    let mut index = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos: u64 = 0; // file position of buf[0]
    let mut read_pos: u64 = 0; // file position up to which buf is filled
    let mut cursor: u64 = 0; // file position of the next batch
    let mut next_offset = base_offset;

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
                let at = (cursor - buf_pos) as usize;
                let len = i32::from_be_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
                if len <= 0 || len as usize > MAX_REQUEST_BYTES {
                    break;
                }
                total = Some(LOG_OVERHEAD as u64 + len as u64);
                continue;
            }
            if read_pos >= size {
                break;
            }
            let consumed = (cursor - buf_pos) as usize;
            if consumed > 0 {
                buf.drain(..consumed);
                buf_pos = cursor;
            }
            let want = SCAN_CHUNK.max((need - have) as usize);
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
        let at = (cursor - buf_pos) as usize;
        let bytes = &buf[at..at + need as usize];
        let Ok(h) = batch::validate(bytes) else { break };
        if h.base_offset != next_offset {
            break;
        }
        index.push(Entry::new(&h, h.base_offset, cursor));
        next_offset = h.last_offset() + 1;
        cursor += need;
    }

    // Anything after `cursor` that is not zero padding is a torn or corrupt write.
    let mut truncated_bytes = 0;
    if cursor < size {
        let at = (cursor.saturating_sub(buf_pos)) as usize;
        let rest_in_buf = buf.get(at..).unwrap_or(&[]);
        let mut dirty = rest_in_buf.iter().any(|b| *b != 0);
        if !dirty && read_pos < size {
            dirty = true; // unread remainder: be conservative
        }
        if dirty {
            truncated_bytes = size - cursor;
        }
    }
    Ok(Recovered { index, end_pos: cursor, next_offset, truncated_bytes })
}
