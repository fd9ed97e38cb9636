//! Kafka v2 record batches: header parsing, validation and the two fields the broker rewrites.
//!
//! Contract: [`validate`] accepts a byte slice only if it is exactly one magic-2 batch whose
//! length field matches and whose CRC-32C (covering `attributes` to the end) is correct. The
//! broker rewrites only `baseOffset` and `partitionLeaderEpoch` (and, for LogAppendTime,
//! nothing yet), which lie outside the CRC, so a stored batch stays verifiable byte for byte.

use bytes::Bytes;
use thiserror::Error;

/// Bytes of a v2 batch header before the first record.
pub const HEADER_LEN: usize = 61;
/// Bytes before and including the `batchLength` field.
pub const LOG_OVERHEAD: usize = 12;
const CRC_OFFSET: usize = 17;
const CRC_COVERED_FROM: usize = 21;

/// What is wrong with a batch.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch truncated: {have} bytes, need {need}")]
    Truncated { have: usize, need: usize },
    #[error("unsupported record batch magic {0} (only v2 batches are accepted)")]
    BadMagic(i8),
    #[error("record batch CRC-32C mismatch: header says {expected:#010x}, content is {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("invalid record batch header: {0}")]
    InvalidHeader(&'static str),
    #[error("record batch of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// The decoded fixed-size header of a v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the `batchLength` field.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Total bytes of the batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Parses the header without checking the CRC. Needs at least [`HEADER_LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated { have: buf.len(), need: HEADER_LEN });
        }
        let i64_at = |o: usize| i64::from_be_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
        let i32_at = |o: usize| i32::from_be_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
        let i16_at = |o: usize| i16::from_be_bytes(buf[o..o + 2].try_into().expect("2 bytes"));
        let header = BatchHeader {
            base_offset: i64_at(0),
            batch_length: i32_at(8),
            partition_leader_epoch: i32_at(12),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes(buf[CRC_OFFSET..CRC_OFFSET + 4].try_into().expect("4")),
            attributes: i16_at(21),
            last_offset_delta: i32_at(23),
            base_timestamp: i64_at(27),
            max_timestamp: i64_at(35),
            producer_id: i64_at(43),
            producer_epoch: i16_at(51),
            base_sequence: i32_at(53),
            records_count: i32_at(57),
        };
        if header.magic != 2 {
            return Err(BatchError::BadMagic(header.magic));
        }
        if (header.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::InvalidHeader("batchLength shorter than the header"));
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::InvalidHeader("negative lastOffsetDelta"));
        }
        if header.records_count < 0 {
            return Err(BatchError::InvalidHeader("negative record count"));
        }
        Ok(header)
    }
}

/// CRC-32C of the part of a batch the checksum covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_COVERED_FROM..])
}

/// Checks that `buf` is exactly one valid v2 batch and returns its header.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    if header.total_len() != buf.len() {
        return Err(BatchError::Truncated { have: buf.len(), need: header.total_len() });
    }
    let actual = compute_crc(buf);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch { expected: header.crc, actual });
    }
    Ok(header)
}

/// Splits a produce request's `records` blob into validated batches, sharing its memory.
pub fn split_batches(records: &Bytes, max_batch: usize) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated { have: rest.len(), need: LOG_OVERHEAD });
        }
        let len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        if len < 0 {
            return Err(BatchError::InvalidHeader("negative batchLength"));
        }
        let total = LOG_OVERHEAD + len as usize;
        if total > max_batch {
            return Err(BatchError::TooLarge(total));
        }
        if total > rest.len() {
            return Err(BatchError::Truncated { have: rest.len(), need: total });
        }
        let header = validate(&rest[..total])?;
        out.push((header, records.slice(pos..pos + total)));
        pos += total;
    }
    if out.is_empty() {
        return Err(BatchError::InvalidHeader("no record batch in produce data"));
    }
    Ok(out)
}

/// One record for [`build`].
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

/// Builds an uncompressed v2 batch (base offset 0, no producer id) whose records all carry
/// `timestamp`. Used by the load generator and by tests; the broker never builds batches.
pub fn build(records: &[Record<'_>], timestamp: i64) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = Vec::with_capacity(records.iter().map(|r| r.value.len() + 16).sum());
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0u8); // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        match r.key {
            None => put_varint(&mut rec, -1),
            Some(k) => {
                put_varint(&mut rec, k.len() as i64);
                rec.extend_from_slice(k);
            }
        }
        put_varint(&mut rec, r.value.len() as i64);
        rec.extend_from_slice(r.value);
        put_varint(&mut rec, 0); // no headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let n = records.len() as i32;
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// One record read back from an uncompressed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Decodes the records of an uncompressed batch (header included in `batch`). Compressed
/// batches and malformed records are refused.
pub fn records(batch: &[u8]) -> Result<Vec<RecordView<'_>>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != 0 {
        return Err(BatchError::InvalidHeader("compressed batch: records cannot be read in place"));
    }
    let end = header.total_len().min(batch.len());
    let mut cur = Cursor { buf: &batch[..end], pos: HEADER_LEN };
    // The count comes from the producer: never trust it for an allocation (a record takes at
    // least 7 bytes).
    let cap = (header.records_count.max(0) as usize).min(end.saturating_sub(HEADER_LEN) / 7);
    let mut out = Vec::with_capacity(cap);
    for _ in 0..header.records_count {
        let len = cur.varint()?;
        let start = cur.pos;
        let _attributes = cur.bytes(1)?;
        let timestamp_delta = cur.varint()?;
        let offset_delta = cur.varint()? as i32;
        let key = cur.nullable()?;
        let value = cur.nullable()?;
        let headers = cur.varint()?;
        for _ in 0..headers {
            let klen = cur.varint()?;
            cur.bytes(usize::try_from(klen).map_err(|_| BatchError::InvalidHeader("negative header key length"))?)?;
            cur.nullable()?;
        }
        if cur.pos - start != len as usize {
            return Err(BatchError::InvalidHeader("record length does not match its content"));
        }
        out.push(RecordView { offset_delta, timestamp_delta, key, value });
    }
    Ok(out)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<i64, BatchError> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(BatchError::InvalidHeader("record truncated"))?;
            self.pos += 1;
            z |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(BatchError::InvalidHeader("varint too long"))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(BatchError::InvalidHeader("record truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn nullable(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        self.bytes(len as usize).map(Some)
    }
}

/// Writes `baseOffset` and `partitionLeaderEpoch` into a batch (fields outside the CRC).
pub fn stamp(buf: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(buf.len() >= HEADER_LEN, "stamping a truncated batch");
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks a batch as LogAppendTime with `time` as its max timestamp and recomputes the CRC
/// (both fields are covered by it).
pub fn set_log_append_time(buf: &mut [u8], time: i64) {
    assert!(buf.len() >= HEADER_LEN, "stamping a truncated batch");
    let attributes = i16::from_be_bytes([buf[21], buf[22]]) | 0x08;
    buf[21..23].copy_from_slice(&attributes.to_be_bytes());
    buf[35..43].copy_from_slice(&time.to_be_bytes());
    let crc = compute_crc(buf);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_batch(n: i32, payload: &[u8]) -> Vec<u8> {
        let recs: Vec<Record<'_>> = (0..n).map(|_| Record { key: None, value: payload }).collect();
        build(&recs, 1000)
    }

    #[test]
    fn valid_batch_round_trips() {
        let b = make_batch(3, b"hello");
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.total_len(), b.len());
    }

    #[test]
    fn crc_mismatch_is_detected() {
        let mut b = make_batch(1, b"x");
        let last = b.len() - 2;
        b[last] ^= 0xff;
        assert!(matches!(validate(&b), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn stamping_keeps_crc_valid() {
        let mut b = make_batch(2, b"abc");
        stamp(&mut b, 42, 7);
        let h = validate(&b).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.partition_leader_epoch, 7);
    }

    #[test]
    fn split_rejects_truncated_and_accepts_many() {
        let mut two = make_batch(1, b"a");
        two.extend_from_slice(&make_batch(4, b"bb"));
        let all = Bytes::from(two.clone());
        let parts = split_batches(&all, MAX).unwrap();
        assert_eq!(parts.len(), 2);
        let cut = Bytes::from(two[..two.len() - 1].to_vec());
        assert!(split_batches(&cut, MAX).is_err());
        assert!(split_batches(&Bytes::new(), MAX).is_err());
    }

    const MAX: usize = 1 << 20;

    #[test]
    fn log_append_time_keeps_the_batch_valid() {
        let mut b = make_batch(2, b"z");
        set_log_append_time(&mut b, 123_456);
        let h = validate(&b).unwrap();
        assert_eq!(h.max_timestamp, 123_456);
        assert_eq!(h.attributes & 0x08, 0x08);
    }

    #[test]
    fn records_read_back() {
        let b = build(&[Record { key: Some(b"k1"), value: b"v1" }, Record { key: None, value: b"" }], 5);
        let r = records(&b).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].key, Some(&b"k1"[..]));
        assert_eq!(r[0].value, Some(&b"v1"[..]));
        assert_eq!(r[1].key, None);
        assert_eq!(r[1].offset_delta, 1);
        let mut cut = b.clone();
        cut.truncate(b.len() - 1);
        assert!(records(&cut).is_err());
    }

    #[test]
    fn rejects_old_magic() {
        let mut b = make_batch(1, b"a");
        b[16] = 1;
        assert_eq!(validate(&b), Err(BatchError::BadMagic(1)));
    }
}
