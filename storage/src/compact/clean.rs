//! Rewriting one segment's batches for a compaction pass (Kafka's `LogCleaner.cleanInto` and
//! `MemoryRecords.filterTo`), in memory.
//!
//! Contract: see the module above: which records stay, and that a rewritten batch keeps its
//! offsets, producer fields and codec. The output is whole, CRC-valid v2 batches back to back,
//! in the input's order, with no zero padding; a batch whose every record stays is copied byte
//! for byte.

use super::keymap::KeyMap;
use super::{batches, CompactError};
use crate::codec::{compressed, uncompressed};
use sluice_core::batch::{compute_crc, records_with_spans, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

/// What decides a pass's retention, besides the records themselves.
#[derive(Debug)]
pub struct CleanContext<'a> {
    /// Last offsets of the keys of the dirty range.
    pub map: &'a KeyMap,
    /// Tombstones in batches whose max timestamp is at or before this are removed.
    pub tombstone_horizon: i64,
}

/// What became of one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every record stays: the batch is copied as it is.
    Kept,
    /// Some records stay (or none, for a producer's batch): the rebuilt batch.
    Rewritten(Vec<u8>),
    /// No record stays.
    Removed,
}

/// One segment after cleaning.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// The new segment's bytes.
    pub bytes: Vec<u8>,
    pub records_kept: u64,
    pub records_removed: u64,
}

/// Cleans every batch of `segment` (a segment file's bytes).
pub fn clean_segment(segment: &[u8], ctx: &CleanContext<'_>) -> Result<Cleaned, CompactError> {
    let mut out = Cleaned { bytes: Vec::with_capacity(segment.len()), ..Cleaned::default() };
    for (h, batch) in batches(segment)? {
        let before = u64::try_from(h.records_count).unwrap_or(0);
        match clean_batch(batch, &h, ctx)? {
            Outcome::Kept => {
                out.bytes.extend_from_slice(batch);
                out.records_kept += before;
            }
            Outcome::Rewritten(b) => {
                let kept = u64::try_from(i32::from_be_bytes(b[57..61].try_into().expect("4 bytes"))).unwrap_or(0);
                out.bytes.extend_from_slice(&b);
                out.records_kept += kept;
                out.records_removed += before.saturating_sub(kept);
            }
            Outcome::Removed => out.records_removed += before,
        }
    }
    Ok(out)
}

/// Whether a record stays (Kafka's `shouldRetainRecord`).
fn retain(h: &BatchHeader, offset: i64, key: Option<&[u8]>, tombstone: bool, ctx: &CleanContext<'_>) -> bool {
    let Some(key) = key else { return false };
    let latest = ctx.map.latest(key).is_none_or(|l| offset >= l);
    latest && (!tombstone || h.max_timestamp > ctx.tombstone_horizon)
}

/// Cleans one CRC-checked batch.
pub fn clean_batch(batch: &[u8], h: &BatchHeader, ctx: &CleanContext<'_>) -> Result<Outcome, CompactError> {
    if h.is_control() {
        return Ok(Outcome::Kept);
    }
    let plain_owned;
    let plain: &[u8] = if h.compression() == 0 {
        batch
    } else {
        plain_owned = uncompressed(batch, h)?;
        &plain_owned
    };
    let recs = records_with_spans(plain)?;
    let kept: Vec<_> = recs
        .iter()
        .filter(|(r, _)| retain(h, h.base_offset + i64::from(r.offset_delta), r.key, r.value.is_none(), ctx))
        .collect();
    if kept.len() == recs.len() {
        return Ok(Outcome::Kept);
    }
    if kept.is_empty() && h.producer_id < 0 {
        return Ok(Outcome::Removed);
    }
    let mut body = Vec::with_capacity(plain.len() - HEADER_LEN);
    let mut max_delta = None;
    for (r, span) in &kept {
        body.extend_from_slice(&plain[span.clone()]);
        max_delta = max_delta.max(Some(r.timestamp_delta));
    }
    let codec = if kept.is_empty() { 0 } else { h.compression() };
    let body = compressed(&body, codec)?;
    rebuild(batch, h, codec, &body, kept.len(), max_delta)
}

/// The batch with `body` as its records section: `count` records, codec bits `codec`, the max
/// timestamp recomputed from the kept records (CreateTime; LogAppendTime keeps the batch's),
/// the CRC recomputed; every other header field as it was.
fn rebuild(
    batch: &[u8],
    h: &BatchHeader,
    codec: i16,
    body: &[u8],
    count: usize,
    max_delta: Option<i64>,
) -> Result<Outcome, CompactError> {
    let too_large = || CompactError::TooLarge(0);
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend_from_slice(&batch[..HEADER_LEN]);
    b.extend_from_slice(body);
    let len = i32::try_from(b.len() - LOG_OVERHEAD).map_err(|_| too_large())?;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let attributes = (h.attributes & !0x07) | codec;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    let log_append_time = h.attributes & 0x08 != 0;
    if let (false, Some(d)) = (log_append_time, max_delta) {
        b[35..43].copy_from_slice(&h.base_timestamp.saturating_add(d).to_be_bytes());
    }
    let n = i32::try_from(count).map_err(|_| too_large())?;
    b[57..61].copy_from_slice(&n.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Outcome::Rewritten(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::batch::{build, records, stamp, validate, Record};

    /// A segment of batches, each a list of (key, value: None for a tombstone) at `ts`, stamped
    /// with consecutive offsets from 0.
    /// (key, value) of a test record; `None` value: a tombstone.
    type Rec<'a> = (Option<&'a str>, Option<&'a str>);

    fn segment(batches: &[(&[Rec<'_>], i64, i16)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut next = 0i64;
        for (recs, ts, codec) in batches {
            let mut b = build_with_nulls(recs, *ts);
            if *codec != 0 {
                b = recompress(&b, *codec);
            }
            stamp(&mut b, next, 3);
            next += i64::try_from(recs.len()).unwrap();
            out.extend_from_slice(&b);
        }
        out
    }

    /// `build` has no null values: build with a placeholder and then null those values.
    fn build_with_nulls(recs: &[Rec<'_>], ts: i64) -> Vec<u8> {
        // Records with a null value are encoded by hand through a tiny builder.
        let plain: Vec<Record<'_>> =
            recs.iter().map(|(k, v)| Record { key: k.map(str::as_bytes), value: v.unwrap_or("").as_bytes() }).collect();
        let b = build(&plain, ts);
        if recs.iter().all(|(_, v)| v.is_some()) {
            return b;
        }
        // Rewrite each record, turning the empty values marked None into nulls.
        let spans = records_with_spans(&b).unwrap();
        let mut body = Vec::new();
        for ((r, span), (_, v)) in spans.iter().zip(recs) {
            if v.is_some() {
                body.extend_from_slice(&b[span.clone()]);
                continue;
            }
            let mut rec = vec![0u8];
            varint(&mut rec, r.timestamp_delta);
            varint(&mut rec, i64::from(r.offset_delta));
            match r.key {
                Some(k) => {
                    varint(&mut rec, i64::try_from(k.len()).unwrap());
                    rec.extend_from_slice(k);
                }
                None => varint(&mut rec, -1),
            }
            varint(&mut rec, -1);
            varint(&mut rec, 0);
            varint(&mut body, i64::try_from(rec.len()).unwrap());
            body.extend_from_slice(&rec);
        }
        let h = BatchHeader::parse(&b).unwrap();
        match rebuild(&b, &h, 0, &body, recs.len(), None).unwrap() {
            Outcome::Rewritten(x) => x,
            _ => unreachable!(),
        }
    }

    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)).cast_unsigned();
        while z >= 0x80 {
            out.push(u8::try_from(z & 0x7f).unwrap() | 0x80);
            z >>= 7;
        }
        out.push(u8::try_from(z).unwrap());
    }

    fn recompress(b: &[u8], codec: i16) -> Vec<u8> {
        let h = BatchHeader::parse(b).unwrap();
        let body = compressed(&b[HEADER_LEN..], codec).unwrap();
        match rebuild(b, &h, codec, &body, usize::try_from(h.records_count).unwrap(), None).unwrap() {
            Outcome::Rewritten(x) => x,
            _ => unreachable!(),
        }
    }

    /// (offset, key, value) of every record of a segment.
    fn contents(seg: &[u8]) -> Vec<(i64, Option<String>, Option<String>)> {
        let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
        let mut out = Vec::new();
        for (h, b) in batches(seg).unwrap() {
            validate(b).unwrap();
            let plain = uncompressed(b, &h).unwrap();
            for r in records(&plain).unwrap() {
                out.push((h.base_offset + i64::from(r.offset_delta), s(r.key), s(r.value)));
            }
        }
        out
    }

    fn pass(seg: &[u8], horizon: i64) -> Cleaned {
        let mut map = KeyMap::new();
        assert!(map.add_segment(seg).unwrap());
        clean_segment(seg, &CleanContext { map: &map, tombstone_horizon: horizon }).unwrap()
    }

    #[test]
    fn the_last_record_of_each_key_stays_at_its_offset() {
        for codec in [0i16, 1, 2, 3, 4] {
            let seg = segment(&[
                (&[(Some("a"), Some("1")), (Some("b"), Some("1")), (Some("a"), Some("2"))], 100, codec),
                (&[(Some("c"), Some("1")), (Some("b"), Some("2"))], 200, codec),
                (&[(Some("a"), Some("3"))], 300, codec),
            ]);
            let out = pass(&seg, 0);
            assert_eq!(
                contents(&out.bytes),
                vec![
                    (3, Some("c".into()), Some("1".into())),
                    (4, Some("b".into()), Some("2".into())),
                    (5, Some("a".into()), Some("3".into()))
                ],
                "codec {codec}"
            );
            assert_eq!((out.records_kept, out.records_removed), (3, 3));
            // The first batch went away; the second is rebuilt with its codec and offsets.
            let bs = batches(&out.bytes).unwrap();
            assert_eq!(bs.len(), 2);
            assert_eq!((bs[0].0.base_offset, bs[0].0.last_offset_delta, bs[0].0.records_count), (3, 1, 2));
            assert_eq!(bs[0].0.compression(), codec);
            assert_eq!(bs[0].0.partition_leader_epoch, 3);
            // The third is untouched, byte for byte.
            assert_eq!(bs[1].1, batches(&seg).unwrap()[2].1);
        }
    }

    #[test]
    fn a_partly_kept_batch_keeps_its_last_offset() {
        let seg = segment(&[(
            &[(Some("a"), Some("1")), (Some("b"), Some("1")), (Some("a"), Some("2")), (Some("b"), Some("0"))],
            100,
            0,
        )]);
        let out = pass(&seg, 0);
        let bs = batches(&out.bytes).unwrap();
        assert_eq!((bs[0].0.base_offset, bs[0].0.last_offset(), bs[0].0.records_count), (0, 3, 2));
        assert_eq!(contents(&out.bytes).iter().map(|c| c.0).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn tombstones_stay_until_the_horizon_then_go() {
        let seg =
            segment(&[(&[(Some("a"), Some("1")), (Some("b"), Some("1"))], 100, 0), (&[(Some("a"), None)], 200, 0)]);
        // Horizon before the tombstone's batch: the tombstone stays, the value it deletes goes.
        let out = pass(&seg, 150);
        assert_eq!(contents(&out.bytes), vec![(1, Some("b".into()), Some("1".into())), (2, Some("a".into()), None)]);
        // Horizon past it: the tombstone goes too, and a second pass changes nothing more.
        let out = pass(&seg, 200);
        assert_eq!(contents(&out.bytes), vec![(1, Some("b".into()), Some("1".into()))]);
        let again = pass(&out.bytes, 200);
        assert_eq!(again.bytes, out.bytes);
        assert_eq!(again.records_removed, 0);
    }

    #[test]
    fn keyless_records_are_dropped_and_keys_outside_the_map_kept() {
        let seg = segment(&[(&[(None, Some("x")), (Some("k"), Some("1"))], 100, 0)]);
        let empty = KeyMap::new();
        let out = clean_segment(&seg, &CleanContext { map: &empty, tombstone_horizon: 0 }).unwrap();
        assert_eq!(contents(&out.bytes), vec![(1, Some("k".into()), Some("1".into()))]);
    }

    #[test]
    fn a_producers_emptied_batch_stays_empty_and_control_batches_stay() {
        let mut seg = segment(&[(&[(Some("a"), Some("1"))], 100, 0), (&[(Some("a"), Some("2"))], 100, 0)]);
        let first_len = batches(&seg).unwrap()[0].1.len();
        // Give the first batch a producer id (43..51) and sequence (53..57), CRC fixed.
        seg[43..51].copy_from_slice(&7i64.to_be_bytes());
        seg[53..57].copy_from_slice(&0i32.to_be_bytes());
        let crc = compute_crc(&seg[..first_len]);
        seg[17..21].copy_from_slice(&crc.to_be_bytes());
        let out = pass(&seg, 0);
        let bs = batches(&out.bytes).unwrap();
        assert_eq!(bs.len(), 2);
        assert_eq!((bs[0].0.producer_id, bs[0].0.records_count, bs[0].0.last_offset()), (7, 0, 0));
        assert_eq!(contents(&out.bytes), vec![(1, Some("a".into()), Some("2".into()))]);
        // A control batch (attribute bit 0x20) is never touched, whatever the map says.
        let mut control = segment(&[(&[(Some("a"), Some("0"))], 100, 0)]);
        control[22] |= 0x20;
        let crc = compute_crc(&control);
        control[17..21].copy_from_slice(&crc.to_be_bytes());
        let map = {
            let mut m = KeyMap::new();
            m.add_segment(&seg).unwrap();
            m
        };
        let h = validate(&control).unwrap();
        let ctx = CleanContext { map: &map, tombstone_horizon: 1_000 };
        assert_eq!(clean_batch(&control, &h, &ctx).unwrap(), Outcome::Kept);
    }

    #[test]
    fn a_small_key_map_takes_whole_segments_only() {
        let one = segment(&[(&[(Some("aaaa"), Some("1")), (Some("bbbb"), Some("1"))], 100, 0)]);
        let mut map = KeyMap::with_budget(2 * (4 + sluice_core::limits::COMPACTION_KEY_MAP_ENTRY_OVERHEAD));
        assert!(map.add_segment(&one).unwrap());
        let other = segment(&[(&[(Some("cccc"), Some("1"))], 100, 0)]);
        assert!(!map.add_segment(&other).unwrap());
        assert_eq!(map.len(), 2, "a refused segment adds nothing");
        assert!(map.add_segment(&one).unwrap(), "known keys take no room");
    }
}
