//! Record batches with headers for `produce`/`consume`, Kafka's default partitioner
//! (murmur2), and the consumer protocol's subscription and assignment bytes. Client side: the
//! batch format itself (header fields, length, CRC-32C) is sluice-core's [`batch`]; this file
//! keeps what only a client needs, writing records with headers and reading them back to print.
//!
//! Contract: [`build_batch`] writes one uncompressed magic-2 batch (base offset 0, no producer
//! id) whose CRC-32C is correct; [`parse_batches`] reads every complete batch of a Fetch
//! answer, checks it with [`batch::validate`] (header and CRC), and returns its records with
//! absolute offsets and timestamps (LogAppendTime batches report the batch's max timestamp).
//! Control batches are skipped; compressed batches are skipped and reported (this client
//! decodes no compression codec).

use sluice_core::batch::{self, compute_crc, BatchError, BatchHeader, RecordCursor, HEADER_LEN, LOG_OVERHEAD};

/// A record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Builds one uncompressed v2 batch of `records`, all stamped with `timestamp`.
pub fn build_batch(records: &[OutRecord], timestamp: i64) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0u8); // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        put_nullable(&mut rec, r.key.as_deref());
        put_nullable(&mut rec, r.value.as_deref());
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_varint(&mut rec, k.len() as i64);
            rec.extend_from_slice(k.as_bytes());
            put_nullable(&mut rec, v.as_deref());
        }
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let n = records.len() as i32;
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression, CreateTime
    b.extend_from_slice(&(n - 1).to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes()); // base timestamp
    b.extend_from_slice(&timestamp.to_be_bytes()); // max timestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// What [`parse_batches`] found.
#[derive(Debug, Default)]
pub struct Parsed {
    pub records: Vec<InRecord>,
    /// One past the last offset of the last complete batch (the next fetch position), if any.
    pub next_offset: Option<i64>,
    /// (base offset, codec) of compressed batches that were skipped.
    pub skipped_compressed: Vec<(i64, i16)>,
}

/// Decodes the complete batches in `data`, keeping records at or after `from`.
pub fn parse_batches(data: &[u8], from: i64) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut pos = 0usize;
    while let Some(batch) = next_batch(&data[pos..])? {
        pos += batch.len();
        let h = check_batch(batch)?;
        out.next_offset = Some(h.last_offset() + 1);
        if h.is_control() || h.last_offset() < from {
            continue;
        }
        if h.compression() != 0 {
            out.skipped_compressed.push((h.base_offset, h.compression()));
            continue;
        }
        decode_records(batch, &h, from, &mut out.records)?;
    }
    Ok(out)
}

/// The first complete batch of `rest` by its length field; `None` when only a partial batch
/// (normal at the end of a fetch answer) or nothing is left.
fn next_batch(rest: &[u8]) -> Result<Option<&[u8]>, String> {
    if rest.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
    let len = usize::try_from(len).map_err(|_| "negative batch length in fetch answer".to_string())?;
    let total = LOG_OVERHEAD.saturating_add(len);
    Ok(rest.get(..total))
}

/// One batch's header and CRC-32C, checked by sluice-core's [`batch::validate`], with this
/// client's messages for an old magic and a damaged batch.
fn check_batch(batch: &[u8]) -> Result<BatchHeader, String> {
    if batch.len() > 16 && batch[16] != 2 {
        return Err(format!("record batch with magic {} (only v2 batches are supported)", batch[16]));
    }
    batch::validate(batch).map_err(|e| match e {
        BatchError::CrcMismatch { .. } => {
            let base_offset = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
            format!("CRC-32C mismatch in the batch at offset {base_offset}")
        }
        e => e.to_string(),
    })
}

/// Appends the records (with their headers, which sluice-core's reader skips) of one
/// uncompressed batch at or after `from`.
fn decode_records(batch: &[u8], h: &BatchHeader, from: i64, out: &mut Vec<InRecord>) -> Result<(), String> {
    let log_append = h.attributes & 0x08 != 0;
    let mut cur = RecordCursor::new(batch, HEADER_LEN);
    for _ in 0..h.records_count {
        let len = cur.varint().map_err(why)?;
        let start = cur.pos();
        cur.bytes(1).map_err(why)?; // attributes
        let ts_delta = cur.varint().map_err(why)?;
        let off_delta = cur.varint().map_err(why)?;
        let key = cur.nullable().map_err(why)?.map(<[u8]>::to_vec);
        let value = cur.nullable().map_err(why)?.map(<[u8]>::to_vec);
        let nh = cur.varint().map_err(why)?;
        let mut headers = Vec::new();
        for _ in 0..nh.max(0) {
            let klen = cur.varint().map_err(why)?;
            if klen < 0 {
                return Err("negative header key length".into());
            }
            let k = cur.bytes(klen as usize).map_err(why)?.to_vec();
            let v = cur.nullable().map_err(why)?.map(<[u8]>::to_vec);
            headers.push((k, v));
        }
        if (cur.pos() - start) as i64 != len {
            return Err("record length does not match its content".into());
        }
        let offset = h.base_offset + off_delta;
        if offset < from {
            continue;
        }
        let timestamp = if log_append { h.max_timestamp } else { h.base_timestamp + ts_delta };
        out.push(InRecord { offset, timestamp, key, value, headers });
    }
    Ok(())
}

/// The client's messages for a malformed record: the reason alone, as before the cursor was
/// shared with sluice-core.
fn why(e: BatchError) -> String {
    match e {
        BatchError::InvalidHeader(why) => why.to_string(),
        other => other.to_string(),
    }
}

/// Kafka's `Utils.murmur2`, as used by its default partitioner for keyed records.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// ConsumerProtocolSubscription v0: the topics a member wants.
pub fn encode_subscription(topics: &[String]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        put_string(&mut b, t);
    }
    b.extend_from_slice(&(-1i32).to_be_bytes()); // user data: null
    b
}

/// The topics of a ConsumerProtocolSubscription (any version: later versions only append).
pub fn decode_subscription(data: &[u8]) -> Result<Vec<String>, String> {
    let mut r = Reader { buf: data, pos: 0 };
    r.i16()?;
    let n = r.i32()?;
    let mut topics = Vec::new();
    for _ in 0..n.max(0) {
        topics.push(r.string()?);
    }
    Ok(topics)
}

/// ConsumerProtocolAssignment v0: topic → partitions.
pub fn encode_assignment(assigned: &[(String, Vec<i32>)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(assigned.len() as i32).to_be_bytes());
    for (t, ps) in assigned {
        put_string(&mut b, t);
        b.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            b.extend_from_slice(&p.to_be_bytes());
        }
    }
    b.extend_from_slice(&(-1i32).to_be_bytes()); // user data: null
    b
}

/// A decoded ConsumerProtocolAssignment: (version, [(topic, partitions)], user data).
pub type Assignment = (i16, Vec<(String, Vec<i32>)>, Option<Vec<u8>>);

/// Decodes a ConsumerProtocolAssignment (any version: later versions only append).
pub fn decode_assignment(data: &[u8]) -> Result<Assignment, String> {
    if data.is_empty() {
        return Ok((0, Vec::new(), None));
    }
    let mut r = Reader { buf: data, pos: 0 };
    let version = r.i16()?;
    let n = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let topic = r.string()?;
        let np = r.i32()?;
        let mut ps = Vec::new();
        for _ in 0..np.max(0) {
            ps.push(r.i32()?);
        }
        out.push((topic, ps));
    }
    let user_data = if r.pos + 4 <= data.len() {
        let len = r.i32()?;
        if len < 0 {
            None
        } else {
            Some(r.take(len as usize)?.to_vec())
        }
    } else {
        None
    };
    Ok((version, out, user_data))
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("consumer protocol data truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn string(&mut self) -> Result<String, String> {
        let len = self.i16()?;
        if len < 0 {
            return Err("null topic name in consumer protocol data".into());
        }
        Ok(String::from_utf8_lossy(self.take(len as usize)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest.testMurmur2
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn batch_round_trips_with_headers() {
        let recs = vec![
            OutRecord {
                key: Some(b"k".to_vec()),
                value: Some(b"v1".to_vec()),
                headers: vec![("h".into(), Some(b"x".to_vec())), ("h".into(), None)],
            },
            OutRecord { key: None, value: Some(Vec::new()), headers: vec![] },
        ];
        let mut b = build_batch(&recs, 1234);
        sluice_core::batch::validate(&b).unwrap();
        b[0..8].copy_from_slice(&10i64.to_be_bytes());
        let p = parse_batches(&b, 11).unwrap();
        assert_eq!(p.next_offset, Some(12));
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.records[0].offset, 11);
        let p = parse_batches(&b, 0).unwrap();
        assert_eq!(p.records[0].headers, vec![(b"h".to_vec(), Some(b"x".to_vec())), (b"h".to_vec(), None)]);
        assert_eq!(p.records[0].timestamp, 1234);
        assert_eq!(p.records[1].key, None);
    }

    #[test]
    fn damaged_old_and_partial_batches() {
        let one = OutRecord { key: None, value: Some(b"v".to_vec()), headers: vec![] };
        let mut b = build_batch(&[one], 1);
        b[0..8].copy_from_slice(&7i64.to_be_bytes());
        let mut two = b.clone();
        two.extend_from_slice(&b[..b.len() - 1]);
        let p = parse_batches(&two, 0).unwrap();
        assert_eq!((p.records.len(), p.next_offset), (1, Some(8)), "a partial last batch is left for the next fetch");
        let mut damaged = b.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert_eq!(parse_batches(&damaged, 0).unwrap_err(), "CRC-32C mismatch in the batch at offset 7");
        let mut old = b.clone();
        old[16] = 1;
        assert_eq!(parse_batches(&old, 0).unwrap_err(), "record batch with magic 1 (only v2 batches are supported)");
        let mut negative = b;
        negative[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(parse_batches(&negative, 0).unwrap_err(), "negative batch length in fetch answer");
    }

    #[test]
    fn assignment_round_trips() {
        let a = vec![("t".to_string(), vec![0, 2]), ("u".to_string(), vec![1])];
        let (v, got, ud) = decode_assignment(&encode_assignment(&a)).unwrap();
        assert_eq!((v, got, ud), (0, a, None));
        assert_eq!(decode_subscription(&encode_subscription(&["a".into(), "b".into()])).unwrap(), vec!["a", "b"]);
    }
}
