//! The read path of a [`PartitionLog`]: `read` (whole durable batches from one segment,
//! through the shard's read cache), `offset_for_timestamp`, `max_timestamp`, and the checks a
//! read applies to bytes coming back from a segment file.
//!
//! Contract: a read returns whole, CRC-valid batches with contiguous offsets (increasing
//! offsets, gaps allowed, in a sealed segment compaction rewrote), the first at or before the
//! offset asked for (or the first after it left by compaction), never beyond the high watermark; bytes that break that are a
//! storage error naming the position ("segment damaged on disk"), never served and never an
//! empty read below the high watermark. A batch's CRC-32C is checked once per copy in memory,
//! not on every read: bytes this process wrote (the in-memory tail, chunks filled by the
//! flusher's writes) were validated by produce; bytes read from the device are checked the
//! first time they are read, and their cached chunk remembers the range checked
//! ([`crate::cache::Got`]), so only a chunk loaded again from the device is checked again.

use super::*;
use sluice_core::batch::{HEADER_LEN, LOG_OVERHEAD};

impl PartitionLog {
    /// Reads whole durable batches starting with the one containing `from`, up to `max_bytes`
    /// (at least one batch, however large), from one segment.
    pub async fn read(&self, from: Offset, max_bytes: usize) -> Result<LogRead, StorageError> {
        self.read_below(from, max_bytes, self.visible().get(), false).await
    }

    /// The batches at `from` taking no offset that end the segment before the one starting at
    /// `from` (a roll right after a Raft control batch leaves it there), CRC-checked, about
    /// `max_bytes` of them at most; None when there are none.
    pub(super) async fn zero_width_tail_at(
        &self,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, StorageError> {
        let (file, pos, end) = {
            let st = self.state.borrow();
            let i = st.segment_for(from.0);
            if i == 0 || st.segments[i].base != from.0 || st.segments[i - 1].next_offset != from.0 {
                return Ok(None);
            }
            let prev = &st.segments[i - 1];
            (prev.file.clone(), prev.index.position_for_offset(prev.base, from.0), prev.size)
        };
        let hwm = self.durable.get();
        let got = scan_read(&file, &self.name, pos, end, from.0, hwm, max_bytes, true).await?;
        if got.bytes.is_empty() {
            return Ok(None);
        }
        Ok(Some(checked(got, &self.name)?))
    }

    /// [`PartitionLog::read`] below `hwm` (at most the durable end); `below_start`: also below
    /// the log start, while the segment holding `from` is still there (the Raft replica's own
    /// reads: its window may begin below a log start DeleteRecords moved).
    pub(super) async fn read_below(
        &self,
        from: Offset,
        max_bytes: usize,
        hwm: i64,
        below_start: bool,
    ) -> Result<LogRead, StorageError> {
        debug_assert!(hwm <= self.durable.get(), "reads stay below the durable end");
        let Some((plan, log_start)) = self.plan_read(from.0, hwm, max_bytes, below_start)? else {
            // `from` is the high watermark: nothing to read yet.
            return Ok(LogRead { records: Bytes::new(), high_watermark: Offset(hwm), log_start: self.log_start() });
        };
        let done = |records: Bytes| LogRead { records, high_watermark: Offset(hwm), log_start: Offset(log_start) };
        if let ReadPlan::Done(_) = plan {
            crate::stats::with(|s| s.memory_reads += 1);
        }
        let read = match plan {
            ReadPlan::Done(r) => return Ok(r),
            ReadPlan::Exact { file, pos, len, final_end, growing } => {
                crate::cache::read(&file, &self.name, pos, len, final_end, growing).await
            }
            ReadPlan::Scan { file, pos, end, next } => {
                match scan_read(&file, &self.name, pos, end, from.0, hwm, max_bytes, next.is_some()).await {
                    // The scan reached this sealed segment's end cleanly without a batch at
                    // or after `from`: compaction removed the rest of it. (A damaged batch is
                    // never skipped over: it comes back and fails its check below.)
                    Ok(got) if got.bytes.is_empty() => {
                        let next = next.expect("only a sealed segment's scan comes back empty");
                        let next = Offset(next.max(from.0 + 1));
                        return Box::pin(self.read_below(next, max_bytes, hwm, below_start)).await;
                    }
                    other => other,
                }
            }
        };
        match read {
            Ok(got) => Ok(done(checked(got, &self.name)?)),
            // Retention deleted the segment meanwhile (its closed file cannot be reopened).
            Err(_) if from.0 < self.log_start().0 => Err(StorageError::OffsetOutOfRange {
                requested: from.0,
                start: self.log_start().0,
                end: self.durable.get(),
            }),
            Err(e) => Err(e),
        }
    }

    /// What a read of `from` must fetch once the state borrow is released, with the log start;
    /// `None` when `from` is the high watermark (nothing to read).
    fn plan_read(
        &self,
        from: i64,
        hwm: i64,
        max_bytes: usize,
        below_start: bool,
    ) -> Result<Option<(ReadPlan, i64)>, StorageError> {
        let st = self.state.borrow();
        let kept = below_start && st.segments.first().is_some_and(|s| s.base <= from);
        if (from < st.log_start && !kept) || from > hwm {
            return Err(StorageError::OffsetOutOfRange { requested: from, start: st.log_start, end: hwm });
        }
        // A replica's own read at its durable end may still find batches there taking no
        // offset (Raft control batches).
        let at_end = |st: &State| st.active().dense.last().is_none_or(|e| e.base < from);
        if from == hwm && (!below_start || at_end(&st)) {
            return Ok(None);
        }
        let i = st.segment_for(from);
        let seg = &st.segments[i];
        let plan = match seg.dense.first() {
            Some(first) if from >= first.base => dense_plan(&st, i, from, hwm, max_bytes),
            _ => {
                let pos = seg.index.position_for_offset(seg.base, from);
                // Everything before the dense part (or a sealed segment) is durable.
                let end = seg.dense.first().map(|e| e.pos).unwrap_or(seg.size);
                let next = (i + 1 < st.segments.len()).then(|| st.segments[i + 1].base);
                ReadPlan::Scan { file: seg.file.clone(), pos, end, next }
            }
        };
        Ok(Some((plan, st.log_start)))
    }

    /// The first offset whose timestamp is at or after `ts`, with that timestamp. Record
    /// precision for uncompressed CreateTime batches, batch precision otherwise.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(Offset, i64)>, StorageError> {
        let hwm = self.visible().get();
        let start = self.log_start().0;
        let mut from = start;
        loop {
            // Find the next segment whose newest batch reaches `ts`.
            let plan = {
                let st = self.state.borrow();
                st.segments
                    .iter()
                    .find(|s| s.next_offset > from && s.max_ts >= ts)
                    .map(|s| (s.base + s.index.offset_for_time(ts) as i64).max(from).max(s.base))
            };
            let Some(scan_from) = plan else { return Ok(None) };
            if scan_from >= hwm {
                return Ok(None);
            }
            let read = self.read(Offset(scan_from), 1 << 20).await?;
            if read.records.is_empty() {
                return Ok(None);
            }
            let mut pos = 0;
            while pos + LOG_OVERHEAD <= read.records.len() {
                let Ok(h) = BatchHeader::parse(&read.records[pos..]) else { break };
                let end = (pos + h.total_len()).min(read.records.len());
                if h.last_offset() >= start && h.max_timestamp >= ts {
                    return Ok(Some(first_record_at(&read.records[pos..end], &h, ts, start)));
                }
                from = h.last_offset() + 1;
                pos += h.total_len();
            }
            if from >= hwm {
                return Ok(None);
            }
        }
    }

    /// The record with the largest timestamp (KIP-734, as Kafka 4.x answers ListOffsets
    /// MAX_TIMESTAMP): the first segment holding the largest batch max timestamp, the first
    /// batch there with it, and the first record of that batch with it (read from the records,
    /// decompressed when the batch is compressed; a LogAppendTime batch's first record). Its
    /// offset, timestamp and the batch's leader epoch; `None` for an empty log.
    pub async fn max_timestamp(&self) -> Result<Option<(Offset, i64, LeaderEpoch)>, StorageError> {
        let found = {
            let st = self.state.borrow();
            let mut best: Option<(i64, i64)> = None;
            for s in &st.segments {
                let live = s.max_ts >= 0 && s.max_ts_offset < self.durable.get() && s.max_ts_offset >= st.log_start;
                if live && best.is_none_or(|(t, _)| s.max_ts > t) {
                    best = Some((s.max_ts, s.max_ts_offset));
                }
            }
            best
        };
        let Some((ts, batch_base)) = found else { return Ok(None) };
        let read = self.read(Offset(batch_base), 1).await?;
        let mut pos = 0;
        while pos + LOG_OVERHEAD <= read.records.len() {
            let h = BatchHeader::parse(&read.records[pos..]).map_err(StorageError::InvalidBatch)?;
            let end = (pos + h.total_len()).min(read.records.len());
            if h.max_timestamp == ts {
                let offset = record_with_timestamp(&read.records[pos..end], &h, &self.name)?;
                return Ok(Some((Offset(offset), ts, LeaderEpoch(h.partition_leader_epoch))));
            }
            pos = end;
        }
        // The index named a batch the read did not return (retention removed it meanwhile).
        Ok(None)
    }
}

/// The plan of a read of `from` in segment `i`, whose per-batch entries cover `from`: the
/// batches from the one containing it, below `hwm`, up to `max_bytes` (at least one) and
/// within one cache chunk; copied from the in-memory tail when they are there.
fn dense_plan(st: &State, i: usize, from: i64, hwm: i64, max_bytes: usize) -> ReadPlan {
    let seg = &st.segments[i];
    let active = i + 1 == st.segments.len();
    let d = &seg.dense;
    // From the batch holding `from`, or the first starting at it (a batch taking no offset
    // starts at the offset of the batch after it).
    let start = d.partition_point(|e| e.last < from && e.base < from);
    let read = |records| LogRead { records, high_watermark: Offset(hwm), log_start: Offset(st.log_start) };
    if start == d.len() {
        return ReadPlan::Done(read(Bytes::new()));
    }
    let (end, total) = dense_run(d, start, hwm, max_bytes);
    if end == start {
        return ReadPlan::Done(read(Bytes::new()));
    }
    let pos = d[start].pos;
    if active && pos >= st.tail_start && st.tail_hole.is_none_or(|hole| pos >= hole) {
        let at = usize::try_from(pos - st.tail_start).expect("a tail position fits in usize");
        return ReadPlan::Done(read(Bytes::copy_from_slice(&st.tail[at..at + total])));
    }
    let final_end = if active { st.flushed_pos } else { seg.size };
    ReadPlan::Exact { file: seg.file.clone(), pos, len: total, final_end, growing: active }
}

/// The end (exclusive) and byte length of the run of entries from `start` that one read
/// takes: below `hwm`, up to `max_bytes` (at least one batch taking offsets, with the batches
/// taking none before it: a consumer is never answered only Raft control batches it cannot
/// pass), staying within one cache chunk when more is taken.
fn dense_run(d: &[Entry], start: usize, hwm: i64, max_bytes: usize) -> (usize, usize) {
    let mut end = start;
    let mut total = 0usize;
    let mut has_data = false;
    let chunk = crate::cache::chunk_of(d[start].pos);
    while end < d.len() && d[end].last < hwm {
        let l = usize::try_from(d[end].len).expect("a batch length fits in usize");
        if has_data && (total + l > max_bytes || crate::cache::chunk_of(d[end].pos + l as u64 - 1) != chunk) {
            break;
        }
        total += l;
        has_data |= d[end].last >= d[end].base;
        end += 1;
    }
    (end, total)
}

/// The offset of the first record of `bytes` (one batch) whose timestamp is the batch's max
/// timestamp (the first record of a LogAppendTime batch: all its records carry that time).
fn record_with_timestamp(bytes: &[u8], h: &BatchHeader, name: &str) -> Result<i64, StorageError> {
    if h.attributes & 0x08 != 0 {
        return Ok(h.base_offset);
    }
    let plain = crate::codec::uncompressed(bytes, h).map_err(|e| {
        StorageError::io("decompress", name, std::io::Error::other(format!("batch at offset {}: {e}", h.base_offset)))
    })?;
    let recs = batch::records(&plain).map_err(StorageError::InvalidBatch)?;
    Ok(recs
        .iter()
        .find(|r| h.base_timestamp + r.timestamp_delta == h.max_timestamp)
        .map(|r| h.base_offset + r.offset_delta as i64)
        // A max timestamp no record carries (a producer's mistake): the batch, as before.
        .unwrap_or(h.base_offset))
}

/// The bytes of a read, their CRC-32Cs checked unless they were known valid ([`check_stored`]);
/// a check that passes is remembered by their cached chunk. When a batch fails, the whole
/// batches before it are answered (a consumer gets them and its next read starts at the
/// damaged batch); a read that starts at a damaged batch is a storage error.
fn checked(got: crate::cache::Got, name: &str) -> Result<Bytes, StorageError> {
    let (pos, len) = (got.pos(), got.bytes.len());
    if got.is_verified(pos, len) {
        return Ok(got.bytes);
    }
    let (good, bad) = check_stored(&got.bytes);
    crate::stats::with(|s| s.bytes_crc_checked += len as u64);
    got.mark_verified(pos, good);
    match bad {
        None => Ok(got.bytes),
        Some(_) if good > 0 => Ok(got.bytes.slice(..good)),
        Some(offset) => Err(damaged(name, format!("the batch at offset {offset} fails its CRC-32C check"))),
    }
}

/// Checks the CRC-32C of every batch read back from a segment file. Recovery checks the tail
/// it scans, but batches before a trusted index entry (after a clean shutdown) and sealed
/// segments are not rescanned at start: a batch damaged on disk since it was written is found
/// here, and answered with a storage error instead of being served. Returns the length of
/// the valid batches before the first that fails, and that one's base offset (-1 when its
/// header does not parse).
fn check_stored(records: &Bytes) -> (usize, Option<i64>) {
    let mut pos = 0;
    while pos + LOG_OVERHEAD <= records.len() {
        match BatchHeader::parse(&records[pos..]) {
            Ok(h)
                if pos + h.total_len() <= records.len()
                    && batch::validate(&records[pos..pos + h.total_len()]).is_ok() =>
            {
                pos += h.total_len();
            }
            Ok(h) => return (pos, Some(h.base_offset)),
            Err(_) => return (pos, Some(-1)),
        }
    }
    (pos, None)
}

/// The error for a stored batch that cannot be what was written (its CRC fails, or its length
/// runs past the end of its segment): logged, and answered as a storage error, never served.
fn damaged(name: &str, what: String) -> StorageError {
    tracing::error!(partition = %name, %what, "a stored batch fails its checks: the segment is damaged on disk");
    StorageError::io(
        "read",
        name,
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: segment damaged on disk")),
    )
}

/// Whether the header-sized start of `b` is all zeros: the padding of an aligned write.
fn is_padding(b: &[u8]) -> bool {
    b[..HEADER_LEN.min(b.len())].iter().all(|x| *x == 0)
}

fn past_end(name: &str, offset: i64) -> StorageError {
    damaged(name, format!("the batch at offset {offset} runs past the end of its segment"))
}

fn missing(name: &str, from: i64, pos: u64) -> StorageError {
    damaged(name, format!("offset {from} is below the high watermark but its segment's batches end at byte {pos}"))
}

fn bad_header(name: &str, pos: u64, e: batch::BatchError) -> StorageError {
    damaged(name, format!("the batch header at byte {pos} does not parse ({e})"))
}

/// Checks the CRC-32C of the batch a scan skipped last, before a gap in offsets: only an
/// intact batch's last offset says the offsets after it are gone (compacted), not damaged.
async fn check_skipped(file: &Rc<SegFile>, name: &str, skipped: Option<(u64, usize)>) -> Result<(), StorageError> {
    let Some((pos, len)) = skipped else { return Ok(()) };
    let bytes = crate::cache::read_direct(file, name, pos, len).await?;
    batch::validate(&bytes)
        .map(|_| ())
        .map_err(|e| damaged(name, format!("the batch at byte {pos}, before a gap in offsets, fails its check ({e})")))
}

/// Reads exactly `len` bytes at `pos`.
pub(crate) async fn read_exact(file: &Rc<SegFile>, name: &str, pos: u64, len: usize) -> Result<Bytes, StorageError> {
    crate::cache::read_direct(file, name, pos, len).await
}

/// The short scan of a read: from an index position, skip batches before `from`, then take
/// whole batches below `hwm` up to `max_bytes` (at least one). Reads go through the chunk
/// cache, one chunk at a time; a batch that crosses a chunk boundary is read directly.
///
/// `end` is a batch boundary below which every byte is durable and was written as whole
/// batches with contiguous offsets, the first at or before `from` (segments start at their
/// base, index positions point at batch starts; a sealed segment may end in the zero padding
/// of its last aligned write when its trim was lost in a crash), so a header that does not
/// parse, a length
/// that runs past `end`, a first batch after `from` or a jump in offsets can only be damage (in
/// a prefix trusted at a clean start and not rescanned): it is answered with [`damaged`],
/// never served, and never turned into an empty or short read.
///
/// In a sealed segment (`sealed`), which compaction may have rewritten, offsets only have to
/// increase (gaps are normal), the first batch may start after `from`, and finding no batch
/// at or after `from` answers empty (the caller goes on with the next segment). A gap is
/// taken as compaction's only when the batch skipped before it passes its CRC-32C check (its
/// last offset is covered by it); the batches served are checked by the caller, so a read
/// that starts at a damaged batch fails and one before it gets the valid batches before it.
#[allow(clippy::too_many_arguments)]
async fn scan_read(
    file: &Rc<SegFile>,
    name: &str,
    pos: u64,
    end: u64,
    from: i64,
    hwm: i64,
    max_bytes: usize,
    sealed: bool,
) -> Result<crate::cache::Got, StorageError> {
    let mut scan = Scan { file, name, end, from, hwm, max_bytes, sealed, skipped: None, prev_last: None };
    let mut at = pos;
    let mut exact: Option<usize> = None;
    for _ in 0..1024 {
        if at >= end {
            // Every batch from the index position on was before `from`: it is not here.
            return scan.not_here(at).await;
        }
        let got = scan.load(at, exact.take()).await?;
        let (p, mut need) = match scan.walk(&got.bytes, at).await? {
            Step::Found(first, stop) => return Ok(got.slice(first..stop)),
            Step::Padding(p) => return scan.not_here(at + p as u64).await,
            Step::Next { p, need } => (p, need),
        };
        if p == 0 && need.is_none() {
            // Not even one header parsed.
            match scan.across_edge(got.bytes.len(), at).await? {
                Some(len) => need = Some(len),
                None => return scan.not_here(at).await,
            }
        }
        at += p as u64;
        exact = need;
    }
    Err(StorageError::io("scan", name, std::io::Error::other("scan did not converge")))
}

/// The state of one [`scan_read`]: what it looks for, and what it saw of the batches so far.
struct Scan<'a> {
    file: &'a Rc<SegFile>,
    name: &'a str,
    end: u64,
    from: i64,
    hwm: i64,
    max_bytes: usize,
    sealed: bool,
    /// The last batch skipped as before `from` (file position, length): when the batches end
    /// before `from` or the next one starts after it, its CRC-32C decides between a gap
    /// compaction left and damage (a last offset damaged on disk would hide offsets).
    skipped: Option<(u64, usize)>,
    /// The last offset of the batch before the scan's position (None before the first one).
    prev_last: Option<i64>,
}

/// What the batches of one chunk came to.
enum Step {
    /// Batches to answer: this range of the chunk.
    Found(usize, usize),
    /// The segment's data ends in padding at this position of the chunk.
    Padding(usize),
    /// Go on `p` bytes further; the next batch is read whole when its length is known (`need`).
    Next { p: usize, need: Option<usize> },
}

/// A batch header looked for in a chunk.
enum Parsed {
    Header(BatchHeader),
    /// Too few bytes left in the chunk, more before the end: the header crosses the chunk edge.
    Edge,
    /// Zeros: the padding of the last aligned write.
    Padding,
}

impl Scan<'_> {
    /// The bytes at `at`: exactly `exact` bytes read directly (a batch crossing a chunk edge),
    /// or through the cache up to the end of `at`'s chunk.
    async fn load(&self, at: u64, exact: Option<usize>) -> Result<crate::cache::Got, StorageError> {
        use crate::cache::{self, CHUNK};
        match exact {
            Some(len) => {
                crate::stats::with(|s| s.disk_reads += 1);
                Ok(cache::Got::unverified(cache::read_direct(self.file, self.name, at, len).await?, at))
            }
            None => {
                let w = usize::try_from((CHUNK - at % CHUNK).min(self.end - at)).expect("at most a chunk");
                cache::read(self.file, self.name, at, w, self.end, false).await
            }
        }
    }

    /// Walks the batches of `data` (read at file position `at`): skips those before `from`,
    /// takes whole ones below the high watermark up to `max_bytes` (at least one taking
    /// offsets, with the batches taking none before it, as [`dense_run`]), and stops at the
    /// chunk's end, at padding, or at a batch that crosses the chunk's end.
    async fn walk(&mut self, data: &[u8], at: u64) -> Result<Step, StorageError> {
        let (mut p, mut stop) = (0usize, 0usize);
        let mut first: Option<usize> = None;
        let mut need: Option<usize> = None;
        let mut padding = false;
        // A batch taking offsets is among those taken.
        let mut has_data = false;
        while p + LOG_OVERHEAD <= data.len() {
            let h = match self.parse(data, p, at)? {
                Parsed::Header(h) => h,
                Parsed::Edge => break,
                Parsed::Padding => {
                    padding = true;
                    break;
                }
            };
            let len = h.total_len();
            self.check_batch(&h, at + p as u64)?;
            if p + len > data.len() {
                match first {
                    None => need = Some(len), // the next useful batch crosses the chunk: read it whole
                    // Only batches taking no offset so far: read them and this one whole.
                    Some(f) if !has_data => return Ok(Step::Next { p: f, need: Some(p - f + len) }),
                    Some(_) => {}
                }
                break;
            }
            if h.last_offset() < self.from && h.base_offset < self.from {
                self.skipped = Some((at + p as u64, len));
                p += len;
                self.prev_last = Some(h.last_offset());
                continue;
            }
            if h.last_offset() >= self.hwm {
                if first.is_none() {
                    return Err(self.crosses_hwm(&h, at + p as u64));
                }
                break;
            }
            if first.is_none() && h.base_offset > self.from {
                // A gap before `from` (only a sealed segment gets here).
                check_skipped(self.file, self.name, self.skipped).await?;
            }
            let f = *first.get_or_insert(p);
            if has_data && p + len - f > self.max_bytes {
                break;
            }
            stop = p + len;
            p += len;
            has_data |= !h.takes_no_offset();
            self.prev_last = Some(h.last_offset());
        }
        Ok(match first {
            Some(f) if stop > f => Step::Found(f, stop),
            _ if padding => Step::Padding(p),
            _ => Step::Next { p, need },
        })
    }

    /// The batch header at `p` of `data` (read at file position `at`).
    fn parse(&self, data: &[u8], p: usize, at: u64) -> Result<Parsed, StorageError> {
        match BatchHeader::parse(&data[p..]) {
            Ok(h) => Ok(Parsed::Header(h)),
            Err(batch::BatchError::Truncated { .. }) if at + (data.len() as u64) < self.end => Ok(Parsed::Edge),
            // The padding of the last aligned write, kept in a sealed segment whose trim was
            // lost in a crash: the data of this segment ends here.
            Err(_) if is_padding(&data[p..]) => Ok(Parsed::Padding),
            Err(e) => Err(bad_header(self.name, at + p as u64, e)),
        }
    }

    /// Checks a batch header found at file position `pos` against the batch before it (its
    /// offsets follow on) and the scan's end (its length stays within).
    fn check_batch(&self, h: &BatchHeader, pos: u64) -> Result<(), StorageError> {
        let expected = match self.prev_last {
            Some(last) if self.sealed => h.base_offset > last,
            Some(last) => h.base_offset == last.saturating_add(1),
            None => self.sealed || h.base_offset <= self.from,
        };
        if !expected {
            let from = self.from;
            let after =
                self.prev_last.map_or(format!("the first batch read for offset {from}"), |l| format!("after {l}"));
            return Err(damaged(
                self.name,
                format!("the batch at byte {pos} has base offset {} ({after})", h.base_offset),
            ));
        }
        if pos + h.total_len() as u64 > self.end {
            // Recovery keeps only whole batches, so a length past the end is damage in a
            // prefix trusted at a clean start (finding 5 of the log_recovery fuzz target).
            return Err(past_end(self.name, h.base_offset));
        }
        Ok(())
    }

    /// The error for the first batch taken crossing the high watermark: batches end at the
    /// high watermark, so one containing `from` cannot cross it.
    fn crosses_hwm(&self, h: &BatchHeader, pos: u64) -> StorageError {
        let (base, last, hwm) = (h.base_offset, h.last_offset(), self.hwm);
        damaged(
            self.name,
            format!("the batch at byte {pos} (offsets {base}..={last}) crosses the high watermark {hwm}"),
        )
    }

    /// When no header parsed in the `len` bytes read at `at`: a header split by the chunk edge
    /// gives the length of its batch (to read whole); a remainder too short for one, or
    /// padding, gives `None` (nothing more here).
    async fn across_edge(&self, len: usize, at: u64) -> Result<Option<usize>, StorageError> {
        use crate::cache::{self, CHUNK};
        if (len as u64) >= (self.end - at).min(CHUNK) {
            return Ok(None);
        }
        let rest = usize::try_from(self.end - at).unwrap_or(usize::MAX);
        let h = cache::read_direct(self.file, self.name, at, rest.min(cache::CHUNK_BYTES)).await?;
        match BatchHeader::parse(&h) {
            Ok(hd) if hd.total_len() > rest => Err(past_end(self.name, hd.base_offset)),
            Ok(hd) => Ok(Some(hd.total_len())),
            Err(_) if is_padding(&h) => Ok(None),
            Err(e) => Err(bad_header(self.name, at, e)),
        }
    }

    /// What a scan answers when no batch at or after `from` is before `at`: in a sealed
    /// segment, after checking the last batch skipped, nothing (the offsets after it were
    /// compacted away: the caller goes on with the next segment); elsewhere, an offset that
    /// should be here is not.
    async fn not_here(&self, at: u64) -> Result<crate::cache::Got, StorageError> {
        if !self.sealed {
            return Err(missing(self.name, self.from, at));
        }
        check_skipped(self.file, self.name, self.skipped).await?;
        Ok(crate::cache::Got::unverified(Bytes::new(), at))
    }
}

/// The first record of a batch with timestamp ≥ `ts` (record precision when readable).
fn first_record_at(bytes: &[u8], h: &BatchHeader, ts: i64, start: i64) -> (Offset, i64) {
    let log_append = h.attributes & 0x08 != 0;
    if !log_append && h.compression() == 0 {
        if let Ok(recs) = batch::records(bytes) {
            for r in recs {
                let t = h.base_timestamp + r.timestamp_delta;
                let o = h.base_offset + r.offset_delta as i64;
                if t >= ts && o >= start {
                    return (Offset(o), t);
                }
            }
        }
    }
    (Offset(h.base_offset.max(start)), h.max_timestamp)
}
