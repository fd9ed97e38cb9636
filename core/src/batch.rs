//! Kafka v2 record batches: header parsing, validation, the one walk over a batch's records
//! ([`RecordCursor`], used by the broker and by the client side), building an uncompressed
//! batch ([`build`]), and the fields the broker rewrites ([`stamp`], [`set_log_append_time`]).
//!
//! Contract: [`validate`] accepts a byte slice only if it is exactly one magic-2 batch whose
//! length field matches and whose CRC-32C (covering `attributes` to the end) is correct.
//! [`split_batches`] (the Produce path) also applies Kafka's `LogValidator` checks for a batch
//! that comes from a client: exactly one batch per partition, `baseOffset` 0, a record count
//! above 0 equal to `lastOffsetDelta + 1`, no control batch, no negative base sequence with a
//! producer id, and — for an uncompressed batch — exactly that many well-formed records filling
//! the batch. A compressed batch's records are not decompressed, so only its header is
//! checked (Kafka also counts the records after decompression). The broker rewrites only
//! `baseOffset` and `partitionLeaderEpoch` (and, for LogAppendTime topics, the timestamp type
//! and `maxTimestamp`, recomputing the CRC), so a stored batch stays verifiable byte for byte.

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
    /// An intact batch Kafka refuses (`InvalidRecordException`, INVALID_RECORD on the wire).
    #[error("{0}")]
    Invalid(InvalidRecord),
}

/// Why an intact (CRC-valid) batch is refused: Kafka's `LogValidator` throws
/// `InvalidRecordException` for each of these, answered as INVALID_RECORD. Messages follow
/// Kafka's wording.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InvalidRecord {
    #[error("Batch has an invalid offset range: lastOffsetDelta {0}")]
    NegativeOffsetDelta(i32),
    #[error("Invalid reported count for record batch: {0}")]
    NonPositiveCount(i32),
    #[error(
        "Inconsistent batch offset range [0, {last_offset_delta}] and count of records {count} \
         (lastOffsetDelta + 1 must equal the record count)"
    )]
    CountMismatch { last_offset_delta: i32, count: i32 },
    #[error("The baseOffset of the record batch should be 0, but it is {0}")]
    BaseOffsetNotZero(i64),
    #[error("Clients are not allowed to write control records")]
    ControlBatch,
    #[error("Invalid sequence number {base_sequence} in record batch with producerId {producer_id}")]
    NegativeSequence { producer_id: i64, base_sequence: i32 },
    #[error("Compressed outer record has more than one batch (a partition takes one v2 batch per request)")]
    MoreThanOneBatch,
    #[error("Incorrect declared batch size: {0}")]
    RecordCount(&'static str),
    #[error("Found invalid record structure: {0}")]
    RecordStructure(&'static str),
}

impl From<InvalidRecord> for BatchError {
    fn from(e: InvalidRecord) -> Self {
        BatchError::Invalid(e)
    }
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
        LOG_OVERHEAD + usize::try_from(self.batch_length).expect("batchLength is checked when a header is decoded")
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

    /// A control batch that takes no offset (`lastOffsetDelta` -1: its last offset is the one
    /// before its base, which is the next batch's base). sluice's own Raft control batches
    /// have this shape (`shard/src/raft/control.rs`); Kafka never writes one, and a client
    /// may not produce one (every control batch is refused from clients).
    pub fn takes_no_offset(&self) -> bool {
        self.is_control() && self.last_offset_delta == -1
    }

    /// Parses the header without checking the CRC. Needs at least [`HEADER_LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let header = Self::decode(buf)?;
        header.check_ranges()?;
        Ok(header)
    }

    /// The fixed fields, with the magic and the length checked (what locating the batch needs).
    fn decode(buf: &[u8]) -> Result<BatchHeader, BatchError> {
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
        Ok(header)
    }

    /// Fields no batch may hold, whoever wrote it.
    fn check_ranges(&self) -> Result<(), InvalidRecord> {
        if self.last_offset_delta < 0 && !self.takes_no_offset() {
            return Err(InvalidRecord::NegativeOffsetDelta(self.last_offset_delta));
        }
        if self.records_count < 0 {
            return Err(InvalidRecord::NonPositiveCount(self.records_count));
        }
        Ok(())
    }

    /// Kafka's `LogValidator.validateBatch` for a batch from a client (origin CLIENT, magic 2).
    pub fn check_from_client(&self) -> Result<(), InvalidRecord> {
        if self.base_offset != 0 {
            return Err(InvalidRecord::BaseOffsetNotZero(self.base_offset));
        }
        if self.records_count <= 0 {
            return Err(InvalidRecord::NonPositiveCount(self.records_count));
        }
        if i64::from(self.last_offset_delta) + 1 != i64::from(self.records_count) {
            return Err(InvalidRecord::CountMismatch {
                last_offset_delta: self.last_offset_delta,
                count: self.records_count,
            });
        }
        if self.is_control() {
            return Err(InvalidRecord::ControlBatch);
        }
        if self.producer_id >= 0 && self.base_sequence < 0 {
            return Err(InvalidRecord::NegativeSequence {
                producer_id: self.producer_id,
                base_sequence: self.base_sequence,
            });
        }
        Ok(())
    }
}

/// CRC-32C of the part of a batch the checksum covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_COVERED_FROM..])
}

/// Checks that `buf` is exactly one valid v2 batch and returns its header. The CRC is checked
/// before the header's values (as Kafka does: a damaged batch is CORRUPT_MESSAGE, an intact
/// but invalid one INVALID_RECORD).
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::decode(buf)?;
    if header.total_len() != buf.len() {
        return Err(BatchError::Truncated { have: buf.len(), need: header.total_len() });
    }
    let actual = compute_crc(buf);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch { expected: header.crc, actual });
    }
    header.check_ranges()?;
    Ok(header)
}

/// [`validate`] plus every check Kafka applies to a batch a client produces
/// ([`BatchHeader::check_from_client`]; for an uncompressed batch also [`check_records`]).
pub fn validate_from_client(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate(buf)?;
    header.check_from_client()?;
    if header.compression() == 0 {
        check_records(buf, header.records_count)?;
    }
    Ok(header)
}

/// Walks the records of an uncompressed batch without copying them: exactly `count`
/// well-formed records must fill the batch (Kafka's record iterator: "premature EOF" or
/// "records still remaining").
pub fn check_records(batch: &[u8], count: i32) -> Result<(), InvalidRecord> {
    let mut cur = RecordCursor::new(batch, HEADER_LEN.min(batch.len()));
    for _ in 0..count {
        if cur.pos == batch.len() {
            return Err(InvalidRecord::RecordCount("premature EOF reached"));
        }
        next_record(&mut cur).map_err(|e| match e {
            BatchError::InvalidHeader(why) => InvalidRecord::RecordStructure(why),
            _ => InvalidRecord::RecordStructure("unreadable record"),
        })?;
    }
    if cur.pos != batch.len() {
        return Err(InvalidRecord::RecordCount("records still remaining in the batch"));
    }
    Ok(())
}

/// Splits a produce request's `records` blob for one partition into its batch, sharing its
/// memory. As in Kafka, the blob must hold exactly one v2 batch, valid for a client
/// ([`validate_from_client`]); the result is a list so that callers need not care.
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
        let total = LOG_OVERHEAD + usize::try_from(len).expect("checked not negative");
        if total > max_batch {
            return Err(BatchError::TooLarge(total));
        }
        if total > rest.len() {
            return Err(BatchError::Truncated { have: rest.len(), need: total });
        }
        if !out.is_empty() {
            return Err(InvalidRecord::MoreThanOneBatch.into());
        }
        let header = validate_from_client(&rest[..total])?;
        out.push((header, records.slice(pos..pos + total)));
        pos += total;
    }
    if out.is_empty() {
        return Err(BatchError::InvalidHeader("no record batch in produce data"));
    }
    Ok(out)
}

/// One refused record of a batch, as Kafka's `ProduceResponse.RecordError`: the record's index
/// in its batch and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

/// The records of one batch that Kafka's `LogValidator` refuses one by one (it fails the whole
/// batch: `RecordValidationException`, INVALID_RECORD with `record_errors`). Displayed as
/// Kafka's partition-level error message. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordErrors(Vec<RecordError>);

impl RecordErrors {
    /// `None` when nothing was refused.
    pub fn new(errors: Vec<RecordError>) -> Option<RecordErrors> {
        (!errors.is_empty()).then_some(RecordErrors(errors))
    }

    pub fn errors(&self) -> &[RecordError] {
        &self.0
    }
}

impl std::fmt::Display for RecordErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Kafka: "... only showing the first three errors at most: " + a Java List's toString
        // of RecordError(batchIndex=i, message='m').
        write!(
            f,
            "One or more records have been rejected due to {} record errors in total, and only showing the first \
             three errors at most: [",
            self.0.len()
        )?;
        for (i, e) in self.0.iter().take(3).enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}RecordError(batchIndex={}, message='{}')", e.batch_index, e.message)?;
        }
        write!(f, "]")
    }
}

/// The records without a key in an uncompressed batch (header included), refused as Kafka
/// refuses them on a compacted topic; `topic_partition` is Kafka's `topic-partition` text.
pub fn keyless_records(batch: &[u8], topic_partition: &str) -> Result<Option<RecordErrors>, BatchError> {
    let errors = records(batch)?
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| RecordError {
            batch_index: i32::try_from(i).unwrap_or(i32::MAX),
            message: format!("Compacted topic cannot accept message without key in topic partition {topic_partition}"),
        })
        .collect();
    Ok(RecordErrors::new(errors))
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
        put_varint(&mut rec, len_i64(r.value.len()));
        rec.extend_from_slice(r.value);
        put_varint(&mut rec, 0); // no headers
        put_varint(&mut body, len_i64(rec.len()));
        body.extend_from_slice(&rec);
    }
    let n = i32::try_from(records.len()).expect("a batch holds at most i32::MAX records");
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    let batch_length = i32::try_from(HEADER_LEN - LOG_OVERHEAD + body.len()).expect("a batch is at most 2 GiB");
    b.extend_from_slice(&batch_length.to_be_bytes());
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

/// A length as a varint value (lengths of slices in memory are below `isize::MAX`).
fn len_i64(len: usize) -> i64 {
    i64::try_from(len).expect("a slice length fits i64")
}

/// Zigzag varint (Kafka's record fields).
fn put_varint(out: &mut Vec<u8>, v: i64) {
    // Zigzag maps the sign to the low bit: a reinterpretation of the bits, not a conversion.
    let mut z = ((v << 1) ^ (v >> 63)).cast_unsigned();
    loop {
        let low = u8::try_from(z & 0x7f).expect("seven bits");
        if z < 0x80 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
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
    Ok(records_with_spans(batch)?.into_iter().map(|(r, _)| r).collect())
}

/// Like [`records`], with each record's byte range in `batch` (its length varint included), so
/// that records can be copied verbatim into a new batch (log compaction).
pub fn records_with_spans(batch: &[u8]) -> Result<Vec<(RecordView<'_>, std::ops::Range<usize>)>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != 0 {
        return Err(BatchError::InvalidHeader("compressed batch: records cannot be read in place"));
    }
    let end = header.total_len().min(batch.len());
    let mut cur = RecordCursor::new(&batch[..end], HEADER_LEN);
    // The count comes from the producer: never trust it for an allocation (a record takes at
    // least 7 bytes).
    let cap = usize::try_from(header.records_count).unwrap_or(0).min(end.saturating_sub(HEADER_LEN) / 7);
    let mut out = Vec::with_capacity(cap);
    for _ in 0..header.records_count {
        let start = cur.pos;
        let r = next_record(&mut cur)?;
        out.push((r, start..cur.pos));
    }
    Ok(out)
}

/// Reads one record (its length varint, then its body, which must be exactly that long).
fn next_record<'a>(cur: &mut RecordCursor<'a>) -> Result<RecordView<'a>, BatchError> {
    let len = usize::try_from(cur.varint()?).map_err(|_| BatchError::InvalidHeader("negative record length"))?;
    let start = cur.pos;
    let _attributes = cur.bytes(1)?;
    let timestamp_delta = cur.varint()?;
    let offset_delta = i32::try_from(cur.varint()?).map_err(|_| BatchError::InvalidHeader("offset delta overflows"))?;
    let key = cur.nullable()?;
    let value = cur.nullable()?;
    let headers = cur.varint()?;
    if headers < 0 {
        return Err(BatchError::InvalidHeader("negative number of record headers"));
    }
    for _ in 0..headers {
        let klen = cur.varint()?;
        cur.bytes(usize::try_from(klen).map_err(|_| BatchError::InvalidHeader("negative header key length"))?)?;
        cur.nullable()?;
    }
    if cur.pos - start != len {
        return Err(BatchError::InvalidHeader("record length does not match its content"));
    }
    Ok(RecordView { offset_delta, timestamp_delta, key, value })
}

/// Reads the fields of a v2 record (zig-zag varints, length-prefixed byte strings) from a
/// batch's bytes, refusing anything past their end. Shared with the client side, which also
/// decodes record headers.
pub struct RecordCursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> RecordCursor<'a> {
    /// A cursor over `buf` starting at byte `pos` (the first record of a batch is at
    /// [`HEADER_LEN`]).
    pub fn new(buf: &'a [u8], pos: usize) -> Self {
        RecordCursor { buf, pos }
    }

    /// The byte position of the next field.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// A zig-zag varint (as Kafka's `ByteUtils.readVarlong`).
    pub fn varint(&mut self) -> Result<i64, BatchError> {
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

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(BatchError::InvalidHeader("record truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A varint length then that many bytes; a negative length is null.
    pub fn nullable(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        // A length past the address space cannot be present: the same error as one past the end.
        self.bytes(usize::try_from(len).unwrap_or(usize::MAX)).map(Some)
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
    fn split_rejects_truncated_and_more_than_one() {
        let mut two = make_batch(1, b"a");
        two.extend_from_slice(&make_batch(4, b"bb"));
        let one = Bytes::from(two[..make_batch(1, b"a").len()].to_vec());
        let parts = split_batches(&one, MAX).unwrap();
        assert_eq!(parts.len(), 1);
        // Kafka takes one v2 batch per partition and request.
        assert!(split_batches(&Bytes::from(two.clone()), MAX).is_err());
        let cut = Bytes::from(two[..one.len() - 1].to_vec());
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

    /// `b` with the i32 at `at` set to `v` and its CRC recomputed (still intact).
    fn with_i32(mut b: Vec<u8>, at: usize, v: i32) -> Vec<u8> {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn client_check(b: &[u8]) -> Result<(), BatchError> {
        split_batches(&Bytes::copy_from_slice(b), MAX).map(|_| ())
    }

    #[test]
    fn count_must_match_last_offset_delta() {
        // lastOffsetDelta 5 with 3 records: Kafka's "Inconsistent batch offset range".
        let b = with_i32(make_batch(3, b"x"), 23, 5);
        assert!(validate(&b).is_ok(), "intact: storage-level validation accepts it");
        assert_eq!(
            client_check(&b),
            Err(BatchError::Invalid(InvalidRecord::CountMismatch { last_offset_delta: 5, count: 3 }))
        );
        // recordCount 6 to match: the records no longer fill the declared count.
        let b = with_i32(b, 57, 6);
        assert_eq!(client_check(&b), Err(BatchError::Invalid(InvalidRecord::RecordCount("premature EOF reached"))));
        // Fewer declared than present.
        let b = with_i32(with_i32(make_batch(3, b"x"), 23, 1), 57, 2);
        assert_eq!(
            client_check(&b),
            Err(BatchError::Invalid(InvalidRecord::RecordCount("records still remaining in the batch")))
        );
    }

    #[test]
    fn zero_and_negative_counts_are_invalid_records() {
        let b = with_i32(with_i32(make_batch(1, b"x"), 57, 0), 23, -1);
        assert_eq!(validate(&b), Err(BatchError::Invalid(InvalidRecord::NegativeOffsetDelta(-1))));
        let b = with_i32(make_batch(1, b"x"), 57, 0);
        assert!(matches!(client_check(&b), Err(BatchError::Invalid(InvalidRecord::NonPositiveCount(0)))));
        let b = with_i32(make_batch(1, b"x"), 57, -4);
        assert_eq!(validate(&b), Err(BatchError::Invalid(InvalidRecord::NonPositiveCount(-4))));
    }

    #[test]
    fn a_damaged_crc_is_reported_before_the_header_values() {
        let mut b = with_i32(make_batch(1, b"x"), 57, -4);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(validate(&b), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn client_batches_follow_kafkas_header_rules() {
        let mut b = make_batch(1, b"x");
        b[0..8].copy_from_slice(&7i64.to_be_bytes()); // baseOffset is outside the CRC
        assert_eq!(client_check(&b), Err(BatchError::Invalid(InvalidRecord::BaseOffsetNotZero(7))));
        // Control bit (0x20) in the attributes.
        let mut c = make_batch(1, b"x");
        c[22] |= 0x20;
        let crc = compute_crc(&c);
        c[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(client_check(&c), Err(BatchError::Invalid(InvalidRecord::ControlBatch)));
        // A producer id with a negative base sequence.
        let mut p = make_batch(1, b"x");
        p[43..51].copy_from_slice(&9i64.to_be_bytes());
        let p = with_i32(p, 53, -1);
        assert!(matches!(client_check(&p), Err(BatchError::Invalid(InvalidRecord::NegativeSequence { .. }))));
        // Two batches for one partition.
        let mut two = make_batch(1, b"a");
        two.extend_from_slice(&make_batch(1, b"b"));
        assert_eq!(client_check(&two), Err(BatchError::Invalid(InvalidRecord::MoreThanOneBatch)));
    }

    #[test]
    fn malformed_records_of_an_uncompressed_batch_are_refused() {
        // The first record's length varint (byte 61) claims one more byte than its body has.
        let b = make_batch(2, b"abc");
        let mut bad = b.clone();
        bad[HEADER_LEN] += 2; // zigzag: +1 in value
        let crc = compute_crc(&bad);
        bad[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(client_check(&bad), Err(BatchError::Invalid(InvalidRecord::RecordStructure(_)))));
        assert!(client_check(&b).is_ok());
    }

    #[test]
    fn compressed_batches_are_checked_at_the_header_only() {
        // gzip attribute on an uncompressed body: the records are not walked.
        let mut b = make_batch(2, b"abc");
        b[22] |= 1;
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(client_check(&b).is_ok());
        let b = with_i32(b, 23, 4);
        assert!(matches!(client_check(&b), Err(BatchError::Invalid(InvalidRecord::CountMismatch { .. }))));
    }

    #[test]
    fn keyless_records_are_listed_with_kafkas_messages() {
        let b = build(
            &[
                Record { key: Some(b"k"), value: b"1" },
                Record { key: None, value: b"2" },
                Record { key: Some(b""), value: b"3" },
                Record { key: None, value: b"4" },
            ],
            5,
        );
        let errs = keyless_records(&b, "t-0").unwrap().unwrap();
        let idx: Vec<i32> = errs.errors().iter().map(|e| e.batch_index).collect();
        assert_eq!(idx, vec![1, 3], "an empty key is a key; a null one is not");
        assert_eq!(
            errs.errors()[0].message,
            "Compacted topic cannot accept message without key in topic partition t-0"
        );
        assert!(errs.to_string().starts_with(
            "One or more records have been rejected due to 2 record errors in total, and only showing the first \
             three errors at most: [RecordError(batchIndex=1, message='Compacted topic"
        ));
        let keyed = build(&[Record { key: Some(b"k"), value: b"1" }], 5);
        assert_eq!(keyless_records(&keyed, "t-0").unwrap(), None);
    }

    #[test]
    fn rejects_old_magic() {
        let mut b = make_batch(1, b"a");
        b[16] = 1;
        assert_eq!(validate(&b), Err(BatchError::BadMagic(1)));
    }
}
