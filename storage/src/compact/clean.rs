//! Rewriting one segment's batches for a compaction pass (Kafka's `LogCleaner.cleanInto` and
//! `MemoryRecords.filterTo`), in memory.
//!
//! Contract: see the module above: which records stay, and that a rewritten batch keeps its
//! offsets, producer fields and codec. The output is whole, CRC-valid v2 batches back to back,
//! in the input's order, with no zero padding; a batch whose every record stays is copied byte
//! for byte.
//!
//! A Raft group's log ([`CleanContext::raft`]) keeps count of its entries: each run of
//! consecutive removed batches of one leader epoch (gap batches already in the segment
//! included, with the entries they stand for) becomes one gap batch
//! (`sluice_core::control::gap_batch`) covering the run's offsets and standing for its
//! entries, so the segment's batches still follow each other offset after offset and counting
//! them still finds every Raft index (`shard/src/raft/catchup.rs`). A run that is one gap batch
//! alone is copied as it was. A run never spans segments (each segment ends its runs). A hole
//! batch (`sluice_core::control::hole_batch`: offsets holding no entry) is kept as it is and
//! ends the run before it.

use super::keymap::KeyMap;
use super::txn::{is_last_of_producer, CleanedTxns, LastRecord};
use super::{Batches, CompactError};
use crate::codec::{compressed, uncompressed};
use sluice_core::batch::{compute_crc, records_with_spans, BatchHeader, RecordCursor, HEADER_LEN, LOG_OVERHEAD};
use std::collections::HashMap;

/// Attribute bit of a batch whose base timestamp is its delete horizon (KIP-534).
pub const DELETE_HORIZON_FLAG: i16 = 0x40;
/// Attribute bit of a LogAppendTime batch.
const LOG_APPEND_TIME: i16 = 0x08;

/// What decides a pass's retention, besides the records themselves.
#[derive(Debug)]
pub struct CleanContext<'a> {
    /// Last offsets of the keys of the dirty range.
    pub map: &'a KeyMap,
    /// The time of the pass: tombstones and markers whose batch's delete horizon is at or
    /// before it go.
    pub now_ms: i64,
    /// `delete.retention.ms`: a batch given a delete horizon by this pass gets `now_ms` + this.
    pub delete_retention_ms: i64,
    /// The pass's upper bound (Kafka's first uncleanable offset): the batch ending right
    /// before it is kept, emptied if need be, so the last offset it covers stays known.
    pub upper_bound: i64,
    /// Active producers' last entries: the batch holding one is kept, emptied if need be.
    pub producers: &'a HashMap<i64, LastRecord>,
    /// The log is a Raft group's: removed batches leave gap batches (module docs).
    pub raft: bool,
}

/// What became of one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every record stays and no delete horizon is to be stamped: copied as it is.
    Kept,
    /// Some records stay (or none, for a batch kept empty): the rebuilt batch.
    Rewritten(Vec<u8>),
    /// The batch goes.
    Removed,
}

/// One segment after cleaning.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// The new segment's bytes.
    pub bytes: Vec<u8>,
    pub records_kept: u64,
    pub records_removed: u64,
    /// The bytes differ from the segment's (a batch was rewritten or removed, or the segment
    /// ended in zero padding).
    pub changed: bool,
}

/// Cleans every batch of `segment` (a segment file's bytes); `txns` carries the pass's
/// transactions from segment to segment.
pub fn clean_segment(segment: &[u8], ctx: &CleanContext<'_>, txns: &mut CleanedTxns) -> Result<Cleaned, CompactError> {
    let mut c = SegmentCleaner::new(segment);
    while c.step(ctx, txns)? {}
    Ok(c.finish())
}

/// [`clean_segment`] one batch at a time ([`SegmentCleaner::step`]), so the caller can yield
/// between batches.
#[derive(Debug)]
pub struct SegmentCleaner<'a> {
    batches: Batches<'a>,
    input_len: usize,
    out: Cleaned,
    /// The run of removed batches not written yet (Raft logs: module docs).
    run: Option<Run<'a>>,
}

/// Consecutive removed batches of one leader epoch, to be written as one gap batch.
#[derive(Debug)]
struct Run<'a> {
    base: i64,
    last: i64,
    epoch: i32,
    slots: u64,
    /// The run is this one gap batch of the input so far (copied as it was if nothing joins).
    alone: Option<&'a [u8]>,
}

impl<'a> SegmentCleaner<'a> {
    pub fn new(segment: &'a [u8]) -> SegmentCleaner<'a> {
        SegmentCleaner::over(Batches::new(segment), segment.len())
    }

    /// [`SegmentCleaner::new`] over bytes this pass already CRC-checked
    /// ([`Batches::checked_before`]: the key map's read, kept in memory).
    pub fn checked_before(segment: &'a [u8]) -> SegmentCleaner<'a> {
        SegmentCleaner::over(Batches::checked_before(segment), segment.len())
    }

    fn over(batches: Batches<'a>, input_len: usize) -> SegmentCleaner<'a> {
        SegmentCleaner {
            batches,
            input_len,
            out: Cleaned { bytes: Vec::with_capacity(input_len), ..Cleaned::default() },
            run: None,
        }
    }

    /// Cleans the next batch; `Ok(false)` when there was none left (a pending gap is
    /// written by the step that finds the end).
    pub fn step(&mut self, ctx: &CleanContext<'_>, txns: &mut CleanedTxns) -> Result<bool, CompactError> {
        let Some(next) = self.batches.next() else {
            return Ok(self.end_run());
        };
        let (h, batch) = next?;
        let before = u64::try_from(h.records_count).unwrap_or(0);
        if ctx.raft {
            if let Some(slots) = sluice_core::control::gap_slots(&h, batch) {
                self.join_run(&h, slots, Some(batch));
                return Ok(true);
            }
            if sluice_core::control::is_hole(&h, batch) {
                // Offsets with no entry (a copy of a log compacted before it was a Raft
                // group's): kept as they are, so the batches still follow each other.
                self.end_run();
                self.out.bytes.extend_from_slice(batch);
                return Ok(true);
            }
        }
        match clean_batch(batch, &h, ctx, txns)? {
            Outcome::Kept => {
                self.end_run();
                self.out.bytes.extend_from_slice(batch);
                self.out.records_kept += before;
            }
            Outcome::Rewritten(b) => {
                self.end_run();
                let kept = u64::try_from(i32::from_be_bytes(b[57..61].try_into().expect("4 bytes"))).unwrap_or(0);
                let out = &mut self.out;
                out.bytes.extend_from_slice(&b);
                out.records_kept += kept;
                out.records_removed += before.saturating_sub(kept);
                out.changed = true;
            }
            Outcome::Removed => {
                self.out.records_removed += before;
                self.out.changed = true;
                if ctx.raft {
                    self.join_run(&h, 1, None);
                }
            }
        }
        Ok(true)
    }

    /// Adds a removed batch (or a gap batch, `gap` its bytes) standing for `slots` entries to
    /// the run, ending the run first when its epoch differs or the batch does not follow it (a
    /// hole an earlier cleaning left before the log became a Raft group's).
    fn join_run(&mut self, h: &BatchHeader, slots: u64, gap: Option<&'a [u8]>) {
        if self.run.as_ref().is_some_and(|r| r.epoch != h.partition_leader_epoch || h.base_offset != r.last + 1) {
            self.end_run();
        }
        match &mut self.run {
            None => {
                self.run = Some(Run {
                    base: h.base_offset,
                    last: h.last_offset(),
                    epoch: h.partition_leader_epoch,
                    slots,
                    alone: gap,
                });
            }
            Some(r) => {
                r.last = h.last_offset();
                r.slots = r.slots.checked_add(slots).expect("entry counts fit u64");
                r.alone = None;
            }
        }
    }

    /// Writes the pending run as one gap batch; whether there was one.
    fn end_run(&mut self) -> bool {
        let Some(r) = self.run.take() else { return false };
        match r.alone {
            Some(b) => self.out.bytes.extend_from_slice(b),
            None => {
                let b = sluice_core::control::gap_batch(r.base, r.last, r.epoch, r.slots);
                self.out.bytes.extend_from_slice(&b);
                self.out.changed = true;
            }
        }
        true
    }

    /// The cleaned bytes so far (a step appends at most two batches: a gap, then the batch).
    pub fn written(&self) -> &[u8] {
        &self.out.bytes
    }

    /// The cleaned segment (after the last [`SegmentCleaner::step`]).
    pub fn finish(mut self) -> Cleaned {
        self.end_run();
        // Kept batches are copied byte for byte: same length, same bytes.
        self.out.changed |= self.out.bytes.len() != self.input_len;
        self.out
    }
}

/// The batch's delete horizon, when one was stamped (its base timestamp then).
pub fn delete_horizon(h: &BatchHeader) -> Option<i64> {
    (h.attributes & DELETE_HORIZON_FLAG != 0).then_some(h.base_timestamp)
}

/// Whether a record of a data batch stays (Kafka's `Cleaner.shouldRetainRecord`): the latest
/// of its key, and a value or a tombstone not yet past its batch's delete horizon.
fn retain(h: &BatchHeader, offset: i64, key: Option<&[u8]>, tombstone: bool, ctx: &CleanContext<'_>) -> bool {
    let Some(key) = key else { return false };
    let latest = ctx.map.latest(key).is_none_or(|l| offset >= l);
    latest && (!tombstone || delete_horizon(h).is_none_or(|t| ctx.now_ms < t))
}

/// Kafka's `BatchRetention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retention {
    /// The batch goes whatever its records.
    Delete,
    /// Kept, emptied if no record stays.
    RetainEmpty,
    /// Goes if no record stays.
    DeleteEmpty,
}

/// Cleans one CRC-checked batch (Kafka's `checkBatchRetention`, `shouldRetainRecord` and
/// `MemoryRecords.filterTo`).
pub fn clean_batch(
    batch: &[u8],
    h: &BatchHeader,
    ctx: &CleanContext<'_>,
    txns: &mut CleanedTxns,
) -> Result<Outcome, CompactError> {
    // Markers piggy-back on the tombstones' delete horizon: never removed before it, and never
    // while a batch of their transaction is left.
    let can_discard = if h.is_control() { txns.on_control(h, batch) } else { txns.on_batch(h) };
    let discard_records =
        if h.is_control() { can_discard && delete_horizon(h).is_some_and(|t| t <= ctx.now_ms) } else { can_discard };
    // An active producer's last entry keeps its sequence and epoch; the batch ending at the
    // pass's bound keeps the last offset it covers.
    let retention = if is_last_of_producer(h, ctx.producers) || h.last_offset() + 1 == ctx.upper_bound {
        Retention::RetainEmpty
    } else if discard_records {
        Retention::Delete
    } else {
        Retention::DeleteEmpty
    };
    if retention == Retention::Delete {
        return Ok(Outcome::Removed);
    }
    let marker_for_empty_txn = can_discard && h.is_control();
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
        .filter(|(r, _)| {
            !discard_records
                && (h.is_control()
                    || retain(h, h.base_offset + i64::from(r.offset_delta), r.key, r.value.is_none(), ctx))
        })
        .collect();
    if kept.is_empty() {
        return Ok(match retention {
            Retention::RetainEmpty => Outcome::Rewritten(empty_batch(batch, h)?),
            _ => Outcome::Removed,
        });
    }
    let tombstones = kept.iter().any(|(r, _)| r.value.is_none());
    let new_horizon = ((tombstones || marker_for_empty_txn) && delete_horizon(h).is_none())
        .then(|| ctx.now_ms.saturating_add(ctx.delete_retention_ms.max(0)));
    if kept.len() == recs.len() && new_horizon.is_none() {
        return Ok(Outcome::Kept);
    }
    // A new delete horizon becomes the base timestamp: every record's delta is rewritten so
    // that its timestamp stays what it was.
    let base_ts = new_horizon.unwrap_or(h.base_timestamp);
    let mut body = Vec::with_capacity(plain.len() - HEADER_LEN);
    let mut max_ts = None;
    for (r, span) in &kept {
        let ts = h.base_timestamp.saturating_add(r.timestamp_delta);
        max_ts = max_ts.max(Some(ts));
        if base_ts == h.base_timestamp {
            body.extend_from_slice(&plain[span.clone()]);
        } else {
            rebase_record(&plain[span.clone()], ts.saturating_sub(base_ts), &mut body)?;
        }
    }
    let body = compressed(&body, h.compression())?;
    let stamped = Stamp { codec: h.compression(), base_ts, horizon: new_horizon.is_some(), max_ts, count: kept.len() };
    rebuild(batch, h, &stamped, &body).map(Outcome::Rewritten)
}

/// How [`rebuild`] fills a batch's header.
struct Stamp {
    codec: i16,
    base_ts: i64,
    /// Set the delete-horizon flag (`base_ts` is the horizon).
    horizon: bool,
    /// The kept records' max timestamp (CreateTime batches take it; LogAppendTime keep theirs).
    max_ts: Option<i64>,
    count: usize,
}

/// A record (its length varint included) with `ts_delta` as its timestamp delta.
fn rebase_record(record: &[u8], ts_delta: i64, out: &mut Vec<u8>) -> Result<(), CompactError> {
    let mut cur = RecordCursor::new(record, 0);
    let _len = cur.varint()?;
    let attributes = cur.bytes(1)?[0];
    let _old_delta = cur.varint()?;
    let rest = &record[cur.pos()..];
    let mut rec = Vec::with_capacity(record.len() + 10);
    rec.push(attributes);
    put_varint(&mut rec, ts_delta);
    rec.extend_from_slice(rest);
    put_varint(out, i64::try_from(rec.len()).map_err(|_| CompactError::TooLarge(0))?);
    out.extend_from_slice(&rec);
    Ok(())
}

/// Zig-zag varint (the records' encoding).
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)).cast_unsigned();
    while z >= 0x80 {
        out.push(u8::try_from(z & 0x7f).expect("7 bits") | 0x80);
        z >>= 7;
    }
    out.push(u8::try_from(z).expect("7 bits"));
}

/// A batch emptied of its records but kept (Kafka's `DefaultRecordBatch.writeEmptyHeader`):
/// same offsets, producer fields, leader epoch and type bits; no records, no codec, no delete
/// horizon; both timestamps its max timestamp.
fn empty_batch(batch: &[u8], h: &BatchHeader) -> Result<Vec<u8>, CompactError> {
    let attributes = h.attributes & !(0x07 | DELETE_HORIZON_FLAG);
    let mut b = batch[..HEADER_LEN].to_vec();
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[27..35].copy_from_slice(&h.max_timestamp.to_be_bytes());
    let h2 = BatchHeader { attributes, base_timestamp: h.max_timestamp, ..*h };
    rebuild(&b, &h2, &Stamp { codec: 0, base_ts: h.max_timestamp, horizon: false, max_ts: None, count: 0 }, &[])
}

/// The batch with `body` as its records section and its header filled from `s`: length,
/// codec bits, delete-horizon flag and base timestamp, max timestamp (CreateTime), count,
/// CRC recomputed; every other header field as it was.
fn rebuild(batch: &[u8], h: &BatchHeader, s: &Stamp, body: &[u8]) -> Result<Vec<u8>, CompactError> {
    let too_large = || CompactError::TooLarge(0);
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend_from_slice(&batch[..HEADER_LEN]);
    b.extend_from_slice(body);
    let len = i32::try_from(b.len() - LOG_OVERHEAD).map_err(|_| too_large())?;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let mut attributes = (h.attributes & !0x07) | s.codec;
    if s.horizon {
        attributes |= DELETE_HORIZON_FLAG;
    }
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[27..35].copy_from_slice(&s.base_ts.to_be_bytes());
    if let (false, Some(ts)) = (h.attributes & LOG_APPEND_TIME != 0, s.max_ts) {
        b[35..43].copy_from_slice(&ts.to_be_bytes());
    }
    let n = i32::try_from(s.count).map_err(|_| too_large())?;
    b[57..61].copy_from_slice(&n.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::super::txn::AbortedTxn;
    use super::super::{batches, Batches};
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
        let st = Stamp { codec: 0, base_ts: h.base_timestamp, horizon: false, max_ts: None, count: recs.len() };
        rebuild(&b, &h, &st, &body).unwrap()
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
        let count = usize::try_from(h.records_count).unwrap();
        rebuild(b, &h, &Stamp { codec, base_ts: h.base_timestamp, horizon: false, max_ts: None, count }, &body).unwrap()
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

    /// A pass over `seg` alone at `now` (delete.retention.ms 100, no producer, no bound).
    fn pass(seg: &[u8], now: i64) -> Cleaned {
        let mut map = KeyMap::new();
        assert!(map.add_segment(seg, &mut CleanedTxns::default()).unwrap());
        clean_segment(seg, &ctx(&map, now, &HashMap::new()), &mut CleanedTxns::default()).unwrap()
    }

    fn ctx<'a>(map: &'a KeyMap, now: i64, producers: &'a HashMap<i64, LastRecord>) -> CleanContext<'a> {
        CleanContext { map, now_ms: now, delete_retention_ms: 100, upper_bound: i64::MAX, producers, raft: false }
    }

    /// Random segments (keys from a small set, some tombstones, every codec, batches of 1 to 6
    /// records) cleaned in one pass, at a time before any delete horizon: exactly the last record
    /// of each key stays, at its offset (a naive model); and cleaning the same bytes without a
    /// second CRC check (`SegmentCleaner::checked_before`, the pass's reuse of the key map's
    /// read) gives the same bytes as with it.
    #[test]
    fn a_pass_keeps_exactly_the_last_record_of_each_key() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let keys = ["a", "b", "c", "d", "e", "f", "g"];
        for round in 0..200 {
            let codec = i16::try_from(round % 5).unwrap();
            let mut spec: Vec<Vec<Rec<'_>>> = Vec::new();
            for _ in 0..1 + next(8) {
                let n = 1 + next(6);
                let recs = (0..n)
                    .map(|_| {
                        let k = keys[usize::try_from(next(7)).unwrap()];
                        (Some(k), (next(5) != 0).then_some("v"))
                    })
                    .collect();
                spec.push(recs);
            }
            let batches_spec: Vec<(&[Rec<'_>], i64, i16)> = spec.iter().map(|r| (r.as_slice(), 100, codec)).collect();
            let seg = segment(&batches_spec);
            // The model: each key's last (offset, tombstone) over the segment.
            let mut last = std::collections::BTreeMap::new();
            for (o, (k, v)) in spec.iter().flatten().enumerate() {
                last.insert(k.unwrap(), (i64::try_from(o).unwrap(), v.is_none()));
            }
            let mut want: Vec<i64> = last.values().map(|(o, _)| *o).collect();
            want.sort_unstable();
            let out = pass(&seg, 1_000);
            let got: Vec<i64> = contents(&out.bytes).iter().map(|c| c.0).collect();
            assert_eq!(got, want, "round {round}");
            let mut map = KeyMap::new();
            assert!(map.add_segment(&seg, &mut CleanedTxns::default()).unwrap());
            let none = HashMap::new();
            let c = ctx(&map, 1_000, &none);
            let mut trusted = SegmentCleaner::checked_before(&seg);
            while trusted.step(&c, &mut CleanedTxns::default()).unwrap() {}
            assert_eq!(trusted.finish(), out, "round {round}");
        }
    }

    /// A Raft pass over `seg` alone at `now`.
    fn raft_pass(seg: &[u8], now: i64) -> Cleaned {
        let mut map = KeyMap::new();
        assert!(map.add_segment(seg, &mut CleanedTxns::default()).unwrap());
        let none = HashMap::new();
        let c = CleanContext { raft: true, ..ctx(&map, now, &none) };
        clean_segment(seg, &c, &mut CleanedTxns::default()).unwrap()
    }

    /// (base, last, epoch, entries) of each batch: a gap batch stands for its entries.
    fn entries(seg: &[u8]) -> Vec<(i64, i64, i32, u64)> {
        let all = batches(seg).unwrap();
        all.iter()
            .map(|(h, b)| {
                let n = sluice_core::control::entries_of(h, b);
                (h.base_offset, h.last_offset(), h.partition_leader_epoch, n)
            })
            .collect()
    }

    #[test]
    fn a_raft_log_keeps_count_of_its_removed_batches_in_gap_batches() {
        let mut seg = segment(&[
            (&[(Some("a"), Some("1"))], 100, 0),
            (&[(Some("a"), Some("2")), (Some("b"), Some("1"))], 100, 0),
            (&[(Some("b"), Some("2"))], 100, 0),
            (&[(Some("a"), Some("3"))], 100, 0),
            (&[(Some("c"), Some("1"))], 100, 0),
            (&[(Some("c"), Some("2"))], 100, 0),
            (&[(Some("c"), Some("3"))], 100, 0),
            (&[(Some("b"), Some("3"))], 100, 0),
        ]);
        // Epochs 3, 3, 3, 3, 3, 4, 4, 4 (the segment helper stamps 3).
        let mut pos = 0;
        for (i, (h, _)) in batches(&seg.clone()).unwrap().iter().enumerate() {
            if i >= 5 {
                stamp(&mut seg[pos..], h.base_offset, 4);
            }
            pos += h.total_len();
        }
        let out = raft_pass(&seg, 1_000);
        assert!(out.changed);
        // Batches 1-3 (one run), 5 (epoch 3) then 6 (epoch 4: a run of its own) removed.
        assert_eq!(
            entries(&out.bytes),
            vec![(0, 3, 3, 3), (4, 4, 3, 1), (5, 5, 3, 1), (6, 6, 4, 1), (7, 7, 4, 1), (8, 8, 4, 1)]
        );
        assert_eq!(entries(&out.bytes).iter().map(|e| e.3).sum::<u64>(), 8, "every entry counted");
        let data: Vec<i64> =
            batches(&out.bytes).unwrap().iter().filter(|(h, _)| !h.is_control()).map(|(h, _)| h.base_offset).collect();
        assert_eq!(data, vec![4, 7, 8], "data as without Raft");
        // Cleaning again changes nothing: a gap alone is copied as it was.
        let again = raft_pass(&out.bytes, 1_000);
        assert!(!again.changed);
        assert_eq!(again.bytes, out.bytes);
        // A removed batch next to a gap joins it.
        let mut more = out.bytes.clone();
        let mut b = build(&[Record { key: Some(b"c"), value: b"4" }], 100);
        stamp(&mut b, 9, 4);
        more.extend_from_slice(&b);
        let joined = raft_pass(&more, 1_000);
        assert_eq!(
            entries(&joined.bytes),
            vec![(0, 3, 3, 3), (4, 4, 3, 1), (5, 5, 3, 1), (6, 7, 4, 2), (8, 8, 4, 1), (9, 9, 4, 1)]
        );
        // Without Raft the removed batches leave holes.
        assert_eq!(entries(&pass(&seg, 1_000).bytes).iter().map(|e| e.0).collect::<Vec<_>>(), vec![4, 7, 8]);
    }

    #[test]
    fn a_hole_batch_is_kept_and_the_removed_batches_around_it_count_their_entries() {
        // A copy of a log compacted before it was a Raft group's: a hole (offsets 1-9, no
        // entry), then data. Keys a and b are written again later.
        let mut seg = segment(&[(&[(Some("a"), Some("1"))], 100, 0)]);
        seg.extend_from_slice(&sluice_core::control::hole_batch(1, 9, 3));
        for (off, k, v) in [(10, "b", "1"), (11, "a", "2"), (12, "b", "2")] {
            let mut b = build(&[Record { key: Some(k.as_bytes()), value: v.as_bytes() }], 100);
            stamp(&mut b, off, 3);
            seg.extend_from_slice(&b);
        }
        let out = raft_pass(&seg, 1_000);
        assert_eq!(
            entries(&out.bytes),
            vec![(0, 0, 3, 1), (1, 9, 3, 0), (10, 10, 3, 1), (11, 11, 3, 1), (12, 12, 3, 1)]
        );
        let removed_first = batches(&out.bytes)
            .unwrap()
            .iter()
            .filter(|(h, b)| sluice_core::control::gap_slots(h, b).is_some())
            .count();
        assert_eq!(removed_first, 2, "a (offset 0) and b (offset 10) removed, each its own gap: the hole parts them");
        assert_eq!(entries(&out.bytes).iter().map(|e| e.3).sum::<u64>(), 4, "every entry counted, none for the hole");
        let again = raft_pass(&out.bytes, 1_000);
        assert_eq!(again.bytes, out.bytes, "cleaning again changes nothing");
    }

    #[test]
    fn checked_before_skips_the_crc_check_only() {
        let mut seg = segment(&[(&[(Some("a"), Some("1"))], 100, 0), (&[(Some("b"), Some("22"))], 100, 0)]);
        let last = seg.len() - 3;
        seg[last] ^= 1; // the second batch's value: its CRC no longer matches
        assert!(batches(&seg).is_err());
        assert_eq!(Batches::checked_before(&seg).count(), 2);
        assert!(Batches::checked_before(&seg).all(|b| b.is_ok()));
        seg[16] = 1; // the first batch's magic
        assert!(Batches::checked_before(&seg).next().unwrap().is_err());
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

    /// Delete horizon (the flag and base timestamp) of every batch.
    fn horizons(seg: &[u8]) -> Vec<Option<i64>> {
        batches(seg).unwrap().iter().map(|(h, _)| delete_horizon(h)).collect()
    }

    /// (offset, timestamp) of every record.
    fn timestamps(seg: &[u8]) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for (h, b) in batches(seg).unwrap() {
            for r in records(&uncompressed(b, &h).unwrap()).unwrap() {
                out.push((h.base_offset + i64::from(r.offset_delta), h.base_timestamp + r.timestamp_delta));
            }
        }
        out
    }

    #[test]
    fn a_tombstone_gets_a_delete_horizon_at_its_first_cleaning_and_goes_after_it() {
        for codec in [0i16, 3] {
            let seg = segment(&[
                (&[(Some("a"), Some("1")), (Some("b"), Some("1"))], 100, codec),
                (&[(Some("a"), None), (Some("c"), Some("1"))], 200, codec),
            ]);
            // First cleaning, long after the record's own timestamp: the tombstone stays, the
            // value it deletes goes, and its batch is stamped with now + delete.retention.ms.
            let out = pass(&seg, 10_000);
            assert_eq!(
                contents(&out.bytes),
                vec![
                    (1, Some("b".into()), Some("1".into())),
                    (2, Some("a".into()), None),
                    (3, Some("c".into()), Some("1".into()))
                ]
            );
            assert_eq!(horizons(&out.bytes), vec![None, Some(10_100)], "codec {codec}");
            let (h, _) = &batches(&out.bytes).unwrap()[1];
            assert_eq!(h.attributes & DELETE_HORIZON_FLAG, DELETE_HORIZON_FLAG);
            assert_eq!((h.compression(), h.max_timestamp), (codec, 200));
            // Records keep their timestamps (the deltas are rewritten against the horizon).
            assert_eq!(timestamps(&out.bytes), vec![(1, 100), (2, 200), (3, 200)]);
            // Before the horizon a pass changes nothing; at it the tombstone goes, the rest stays.
            let again = pass(&out.bytes, 10_099);
            assert_eq!((&again.bytes, again.records_removed), (&out.bytes, 0));
            let after = pass(&out.bytes, 10_100);
            assert_eq!(
                contents(&after.bytes),
                vec![(1, Some("b".into()), Some("1".into())), (3, Some("c".into()), Some("1".into()))]
            );
            assert_eq!(timestamps(&after.bytes), vec![(1, 100), (3, 200)]);
            assert_eq!(pass(&after.bytes, 20_000).bytes, after.bytes, "nothing more to do");
        }
    }

    #[test]
    fn a_batch_without_tombstones_gets_no_horizon() {
        let seg = segment(&[(&[(Some("a"), Some("1")), (Some("a"), Some("2"))], 100, 0)]);
        let out = pass(&seg, 10_000);
        assert_eq!(horizons(&out.bytes), vec![None]);
        assert_eq!(batches(&out.bytes).unwrap()[0].0.base_timestamp, 100);
    }

    #[test]
    fn keyless_records_are_dropped_and_keys_outside_the_map_kept() {
        let seg = segment(&[(&[(None, Some("x")), (Some("k"), Some("1"))], 100, 0)]);
        let empty = KeyMap::new();
        let none = HashMap::new();
        let out = clean_segment(&seg, &ctx(&empty, 0, &none), &mut CleanedTxns::default()).unwrap();
        assert_eq!(contents(&out.bytes), vec![(1, Some("k".into()), Some("1".into()))]);
    }

    /// Gives a segment's first batch (of `len` bytes) producer id `pid` and sequence 0.
    fn with_producer(seg: &mut [u8], len: usize, pid: i64) {
        seg[43..51].copy_from_slice(&pid.to_be_bytes());
        seg[53..57].copy_from_slice(&0i32.to_be_bytes());
        let crc = compute_crc(&seg[..len]);
        seg[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn an_emptied_batch_stays_only_as_its_producers_last_or_at_the_bound() {
        let mut seg = segment(&[(&[(Some("a"), Some("1"))], 100, 0), (&[(Some("a"), Some("2"))], 100, 0)]);
        let first_len = batches(&seg).unwrap()[0].1.len();
        with_producer(&mut seg, first_len, 7);
        let mut map = KeyMap::new();
        map.add_segment(&seg, &mut CleanedTxns::default()).unwrap();
        // Producer 7's last data offset is 0: its emptied batch stays, with no record.
        let last = HashMap::from([(7, LastRecord { last_data_offset: Some(0), epoch: 0 })]);
        let out = clean_segment(&seg, &ctx(&map, 0, &last), &mut CleanedTxns::default()).unwrap();
        let bs = batches(&out.bytes).unwrap();
        assert_eq!(bs.len(), 2);
        assert_eq!((bs[0].0.producer_id, bs[0].0.records_count, bs[0].0.last_offset()), (7, 0, 0));
        assert_eq!((bs[0].0.base_timestamp, bs[0].0.max_timestamp), (100, 100));
        assert_eq!(contents(&out.bytes), vec![(1, Some("a".into()), Some("2".into()))]);
        // A producer with later batches (or none known): the emptied batch goes.
        let later = HashMap::from([(7, LastRecord { last_data_offset: Some(5), epoch: 0 })]);
        let out = clean_segment(&seg, &ctx(&map, 0, &later), &mut CleanedTxns::default()).unwrap();
        assert_eq!(batches(&out.bytes).unwrap().len(), 1);
        // The batch ending at the pass's upper bound stays, emptied, whoever wrote it.
        let none = HashMap::new();
        let plain = segment(&[(&[(Some("a"), Some("1"))], 100, 0), (&[(Some("b"), Some("1"))], 100, 0)]);
        let mut map = KeyMap::new();
        let later_a = segment(&[(&[(Some("z"), Some("0")), (Some("z"), Some("0")), (Some("a"), Some("9"))], 100, 0)]);
        map.add_segment(&later_a, &mut CleanedTxns::default()).unwrap();
        let mut c = ctx(&map, 0, &none);
        c.upper_bound = 1;
        let out = clean_segment(&plain, &c, &mut CleanedTxns::default()).unwrap();
        let bs = batches(&out.bytes).unwrap();
        assert_eq!((bs.len(), bs[0].0.records_count, bs[0].0.base_offset), (2, 0, 0));
    }

    /// A transactional batch of producer `pid` at `base` with the given records.
    fn txn_batch(recs: &[Rec<'_>], base: i64, pid: i64) -> Vec<u8> {
        let mut b = build_with_nulls(recs, 100);
        b[21..23].copy_from_slice(&super::super::txn::TRANSACTIONAL.to_be_bytes());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&0i32.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        stamp(&mut b, base, 0);
        b
    }

    /// A COMMIT or ABORT marker of `pid` at `base`.
    fn marker(base: i64, pid: i64, commit: bool) -> Vec<u8> {
        let mut key = [0u8; 4];
        key[2..4].copy_from_slice(&i16::from(commit).to_be_bytes());
        let mut b = build(&[Record { key: Some(&key), value: &[0u8; 6] }], 100);
        b[21..23].copy_from_slice(&(super::super::txn::TRANSACTIONAL | 0x20).to_be_bytes());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        stamp(&mut b, base, 0);
        b
    }

    /// (base offset, count, control, delete horizon) of every batch.
    fn shape(seg: &[u8]) -> Vec<(i64, i32, bool, Option<i64>)> {
        batches(seg)
            .unwrap()
            .iter()
            .map(|(h, _)| (h.base_offset, h.records_count, h.is_control(), delete_horizon(h)))
            .collect()
    }

    /// One pass over `seg` at `now`, with `aborted` and no active producer.
    fn txn_pass(seg: &[u8], now: i64, aborted: &[AbortedTxn]) -> Vec<u8> {
        let mut map = KeyMap::new();
        assert!(map.add_segment(seg, &mut CleanedTxns::new(aborted.to_vec())).unwrap());
        let none = HashMap::new();
        clean_segment(seg, &ctx(&map, now, &none), &mut CleanedTxns::new(aborted.to_vec())).unwrap().bytes
    }

    #[test]
    fn aborted_records_go_and_markers_go_after_their_horizon() {
        // 0: "a"=1 plain; 1-2: producer 1's transaction (a=2, b=2), aborted at 3; 4: producer 2's
        // transaction (c=1), committed at 5; 6: b=3 plain.
        let seg: Vec<u8> = [
            segment(&[(&[(Some("a"), Some("1"))], 100, 0)]),
            txn_batch(&[(Some("a"), Some("2")), (Some("b"), Some("2"))], 1, 1),
            marker(3, 1, false),
            txn_batch(&[(Some("c"), Some("1"))], 4, 2),
            marker(5, 2, true),
            {
                let mut b = segment(&[(&[(Some("b"), Some("3"))], 100, 0)]);
                stamp(&mut b, 6, 0);
                b
            },
        ]
        .concat();
        let aborted = [AbortedTxn { producer_id: 1, first_offset: 1, marker_offset: 3 }];
        // The aborted a=2 must not shadow a=1 in the key map: a=1 stays, the aborted batch goes;
        // the ABORT marker (its transaction emptied) stays, stamped; the COMMIT stays as is (its
        // transaction's batch is there).
        let once = txn_pass(&seg, 1_000, &aborted);
        assert_eq!(
            contents(&once),
            vec![
                (0, Some("a".into()), Some("1".into())),
                (3, Some(String::from_utf8(vec![0, 0, 0, 0]).unwrap()), Some(String::from_utf8(vec![0; 6]).unwrap())),
                (4, Some("c".into()), Some("1".into())),
                (5, Some(String::from_utf8(vec![0, 0, 0, 1]).unwrap()), Some(String::from_utf8(vec![0; 6]).unwrap())),
                (6, Some("b".into()), Some("3".into())),
            ]
        );
        assert_eq!(
            shape(&once),
            vec![(0, 1, false, None), (3, 1, true, None), (4, 1, false, None), (5, 1, true, None), (6, 1, false, None)],
            "the ABORT marker stays as it is in the pass that saw its transaction's data"
        );
        // The next pass finds the transaction empty: the marker is stamped with its horizon;
        // before it the marker stays, at it the marker goes. The COMMIT stays while its data does.
        let twice = txn_pass(&once, 1_000, &aborted);
        assert_eq!(
            shape(&twice),
            vec![
                (0, 1, false, None),
                (3, 1, true, Some(1_100)),
                (4, 1, false, None),
                (5, 1, true, None),
                (6, 1, false, None)
            ]
        );
        assert_eq!(txn_pass(&twice, 1_099, &aborted), twice);
        let thrice = txn_pass(&twice, 1_100, &aborted);
        assert_eq!(
            shape(&thrice),
            vec![(0, 1, false, None), (4, 1, false, None), (5, 1, true, None), (6, 1, false, None)]
        );
        // The committed data overwritten by a later plain record: the COMMIT is stamped at the
        // pass after the one that removed the data, and removed after its horizon.
        let mut c2 = segment(&[(&[(Some("c"), Some("2"))], 100, 0)]);
        stamp(&mut c2, 7, 0);
        let more = [thrice, c2].concat();
        let p4 = txn_pass(&more, 2_000, &[]);
        assert_eq!(shape(&p4), vec![(0, 1, false, None), (5, 1, true, None), (6, 1, false, None), (7, 1, false, None)]);
        let p5 = txn_pass(&p4, 2_000, &[]);
        assert_eq!(
            shape(&p5),
            vec![(0, 1, false, None), (5, 1, true, Some(2_100)), (6, 1, false, None), (7, 1, false, None)]
        );
        let p6 = txn_pass(&p5, 2_100, &[]);
        assert_eq!(shape(&p6), vec![(0, 1, false, None), (6, 1, false, None), (7, 1, false, None)]);
    }

    #[test]
    fn a_producers_last_marker_stays_empty() {
        let seg = [marker(0, 1, false), segment(&[(&[(Some("a"), Some("1"))], 100, 0)])].concat();
        let mut seg = seg;
        let n = batches(&seg).unwrap()[0].1.len();
        stamp(&mut seg[n..], 1, 0);
        let mut map = KeyMap::new();
        map.add_segment(&seg, &mut CleanedTxns::default()).unwrap();
        let last = HashMap::from([(1, LastRecord { last_data_offset: None, epoch: 0 })]);
        let once = clean_segment(&seg, &ctx(&map, 0, &last), &mut CleanedTxns::default()).unwrap().bytes;
        assert_eq!(shape(&once), vec![(0, 1, true, Some(100)), (1, 1, false, None)]);
        let twice = clean_segment(&once, &ctx(&map, 100, &last), &mut CleanedTxns::default()).unwrap().bytes;
        assert_eq!(shape(&twice), vec![(0, 0, true, None), (1, 1, false, None)], "kept, emptied: the producer's epoch");
        let none = HashMap::new();
        let gone = clean_segment(&twice, &ctx(&map, 200, &none), &mut CleanedTxns::default()).unwrap().bytes;
        assert_eq!(shape(&gone), vec![(1, 1, false, None)], "an emptied marker goes once its producer is not active");
    }

    #[test]
    fn a_small_key_map_takes_whole_segments_only() {
        let one = segment(&[(&[(Some("aaaa"), Some("1")), (Some("bbbb"), Some("1"))], 100, 0)]);
        let mut map = KeyMap::with_budget(2 * (4 + sluice_core::limits::COMPACTION_KEY_MAP_ENTRY_OVERHEAD));
        let t = &mut CleanedTxns::default();
        assert!(map.add_segment(&one, t).unwrap());
        let other = segment(&[(&[(Some("cccc"), Some("1"))], 100, 0)]);
        assert!(!map.add_segment(&other, t).unwrap());
        assert_eq!(map.len(), 2, "a refused segment adds nothing");
        assert!(map.add_segment(&one, t).unwrap(), "known keys take no room");
    }
}
