//! One compaction pass over a live log ([`PartitionLog::compact`]): plan, key map, cleaning of
//! the sealed segments up to the pass's end, adjacent cleaned segments grouped to merge
//! (within `segment.bytes`, at most `COMPACTION_MAX_SEGMENT_BYTES`, and `segment.index.bytes`),
//! crash-safe swap, then the in-memory segments replaced.
//!
//! Contract: the active segment is never read or changed. Segments are read whole, one at a
//! time (memory: one segment of at most `COMPACTION_MAX_SEGMENT_BYTES`, its cleaned copy, the
//! key map, and up to `COMPACTION_REUSE_BYTES` of dirty segments the key map read, kept for the
//! cleaning; a larger segment ends the key map's range and is not rewritten, nor merged).
//! Only segments whose bytes changed, and groups of merged segments, are swapped; the rewrites
//! of a pass are held in memory until the swap.
//! The caller runs passes one at a time per log, in turn with retention (the shard's timer
//! runs both, one after the other); a segment that left the log while the pass ran (retention,
//! DeleteRecords) is not replaced in memory, and its file, if the swap recreated it, lies below
//! the log start and goes at the next retention check. Readers that planned a read before the
//! swap keep their old file (its descriptor outlives the rename). Its cached chunks are
//! forgotten. Where a pass ended is written to `cleaner-offset-checkpoint` after its swap
//! (atomically, not synced: a checkpoint lost to a crash only makes the next pass clean again
//! what it already cleaned), so a restart starts at the first dirty offset instead of cleaning
//! the whole sealed part again.
//!
//! Transactions: before cleaning, the log is read from its start (the sealed segments below
//! the high watermark by their batch headers, control batches whole; beyond them through the
//! read path, up to the high watermark) until every transaction begun before the pass's end
//! is resolved, so the pass knows the aborted transactions and ends before the oldest open one
//! (the last stable offset, as Kafka's first uncleanable offset). The log itself is the source,
//! so a replica's pass and a pass after a restart decide alike.

use super::read::read_exact;
use super::*;
use crate::compact::clean::{CleanContext, SegmentCleaner};
use crate::compact::keymap::{KeyMap, SegmentKeys};
use crate::compact::merge::{Group, Grouper, MergeLimits, Piece};
use crate::compact::swap::{swap_in_owned, Indexer, NewSegment};
use crate::compact::txn::TRANSACTIONAL;
use crate::compact::txn::{AbortedTxn, CleanedTxns, Scan};
use crate::compact::{plan, Batches, CompactError, CompactionConfig, Pace, SegmentInfo};
use sluice_core::batch::{BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use sluice_core::limits::{
    COMPACTION_MAX_SEGMENT_BYTES, COMPACTION_READS_IN_FLIGHT, COMPACTION_READ_CHUNK_BYTES, COMPACTION_REUSE_BYTES,
    COMPACTION_SCAN_WINDOW_BYTES, OFFSETS_LOAD_READ_BYTES,
};
use std::collections::HashMap;
use std::time::Instant;

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactStats {
    /// Offsets `[first_dirty, cleaned_upto)` were deduplicated.
    pub first_dirty: i64,
    pub cleaned_upto: i64,
    pub dirty_ratio: f64,
    pub segments_rewritten: usize,
    /// Segments merged into the one before them (so the log has this many fewer).
    pub segments_merged: usize,
    /// Bytes of the sealed segments the pass read whole to clean them (Kafka's cleaner reports
    /// the same, "MB of log processed").
    pub bytes_read: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// Marker offsets of the aborted transactions with no batch left in the log: the owner's
    /// aborted-transaction index drops them (their marker may go at a later pass, and a
    /// read_committed reader told of an aborted transaction whose marker it never meets would
    /// skip the producer's later batches).
    pub aborted_gone: Vec<i64>,
    /// Where the pass's time went.
    pub times: PassTimes,
}

/// Seconds a pass spent in each of its phases (`compaction pass` log line; BENCHMARKS.md's
/// compaction profile).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassTimes {
    /// Transaction scan (batch headers from the log start).
    pub scan: f64,
    /// Key map of the dirty segments (their reads included).
    pub map: f64,
    /// Cleaning and grouping (reads of the segments not kept from the key map included).
    pub clean: f64,
    /// Swap: writing, syncing and renaming the new segments, reopening them.
    pub swap: f64,
    /// Of `map` and `clean`: waiting for segment reads (and the pauses between them).
    pub read: f64,
}

/// One rewrite of a pass: `new` replaces the segments at `bases` (the first is `new.base`;
/// more than one when adjacent cleaned segments merge), up to offset `next`.
struct Rewrite {
    next: i64,
    bases: Vec<i64>,
    new: NewSegment,
}

/// A cleaned segment waiting in the open merge group.
struct CleanedSeg {
    changed: bool,
    new: NewSegment,
}

/// A sealed segment as the pass sees it.
struct Sealed {
    base: i64,
    next: i64,
    size: u64,
    max_ts: i64,
    file: Rc<SegFile>,
}

pub(super) fn compact_error(name: &str, e: CompactError) -> StorageError {
    StorageError::io("compact", name, std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

impl PartitionLog {
    /// Runs one compaction pass if the log is due one (see `crate::compact::plan`).
    pub async fn compact(&self, cfg: &CompactionConfig, now_ms: i64) -> Result<Option<CompactStats>, StorageError> {
        let started = std::time::Instant::now();
        let result = self.compact_pass(cfg, now_ms).await;
        crate::stats::with(|s| match &result {
            Ok(Some(st)) => {
                s.compaction_passes += 1;
                s.compaction_segments_rewritten += u64::try_from(st.segments_rewritten).unwrap_or(u64::MAX);
                s.compaction_bytes_before += st.bytes_before;
                s.compaction_bytes_after += st.bytes_after;
                s.compaction_records_removed += st.records_removed;
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let seconds = started.elapsed().as_secs_f64();
                let t = st.times;
                tracing::info!(
                    partition = %self.name,
                    bytes_read = st.bytes_read,
                    seconds,
                    scan_s = t.scan,
                    map_s = t.map,
                    clean_s = t.clean,
                    swap_s = t.swap,
                    read_s = t.read,
                    "compaction pass"
                );
                s.compaction_max_pass_us = s.compaction_max_pass_us.max(us);
                s.compaction_last_dirty_ratio = st.dirty_ratio;
            }
            Ok(None) => {}
            Err(_) => s.compaction_failures += 1,
        });
        result
    }

    /// [`PartitionLog::compact`] without its counters.
    async fn compact_pass(&self, cfg: &CompactionConfig, now_ms: i64) -> Result<Option<CompactStats>, StorageError> {
        let (sealed, sealed_end) = self.sealed_segments();
        let interval = self.config.get().index_interval_bytes.max(1);
        let Some(first) = sealed.first() else { return Ok(None) };
        let first_dirty = self.first_dirty.get().max(first.base);
        let infos: Vec<SegmentInfo> = sealed
            .iter()
            .map(|s| SegmentInfo { base: s.base, bytes: s.size, first_ts: s.max_ts, max_ts: s.max_ts })
            .collect();
        // Never past the high watermark, nor into an open transaction (the last stable offset),
        // nor, in a Raft group's log, past its persisted floor (`clean_limit`).
        let hwm = Some(self.high_watermark().0.min(self.clean_limit.get().unwrap_or(i64::MAX)));
        if self.clean_limit.get().is_some_and(|limit| limit < sealed_end) {
            self.clean_wanted.set(sealed_end);
        }
        let Some(p) = plan(&infos, sealed_end, first_dirty, hwm, now_ms, cfg) else { return Ok(None) };
        let mut pace = Pace::new();
        let mut times = PassTimes::default();
        let mut clock = Instant::now();
        let mut lap = |t: &mut f64| {
            let now = Instant::now();
            *t += now.duration_since(clock).as_secs_f64();
            clock = now;
        };
        let txns = self.txn_scan(&sealed, p.clean_upto, &mut pace).await?;
        lap(&mut times.scan);
        let p = match txns.first_unstable().filter(|f| *f < p.clean_upto) {
            None => p,
            Some(lso) => match plan(&infos, sealed_end, first_dirty, Some(lso), now_ms, cfg) {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let (map, upto, reuse) =
            self.key_map(&sealed, p.first_dirty, p.clean_upto, &txns.aborted, &mut pace, &mut times.read).await?;
        lap(&mut times.map);
        if upto <= p.first_dirty {
            return Ok(None);
        }
        let producers = self.state.borrow().producers.last_records(now_ms);
        let ctx = CleanContext {
            map: &map,
            now_ms,
            delete_retention_ms: cfg.delete_retention_ms,
            upper_bound: p.clean_upto,
            producers: &producers,
            raft: self.clean_limit.get().is_some(),
        };
        let mut stats = CompactStats {
            first_dirty: p.first_dirty,
            cleaned_upto: upto,
            dirty_ratio: p.dirty_ratio,
            ..CompactStats::default()
        };
        let mut cleaned_txns = CleanedTxns::new(txns.aborted);
        let limits = MergeLimits {
            max_log_bytes: self.config.get().segment_bytes.min(COMPACTION_MAX_SEGMENT_BYTES),
            max_index_bytes: cfg.max_index_bytes,
        };
        let pass = CleanPass { ctx: &ctx, upto, interval, limits };
        let news = self
            .clean_segments(&sealed, &pass, reuse, &mut cleaned_txns, &mut stats, &mut pace, &mut times.read)
            .await?;
        lap(&mut times.clean);
        stats.aborted_gone = cleaned_txns.emptied_aborts().to_vec();
        if !news.is_empty() {
            stats.segments_rewritten = news.len();
            stats.segments_merged = news.iter().map(|r| r.bases.len() - 1).sum();
            self.install(news, interval, now_ms, &mut pace).await?;
        }
        // The checkpoint follows the swap (durable before it): a crash between the two cleans
        // the same range again, which changes nothing.
        self.first_dirty.set(upto);
        self.write_checkpoint(upto).await?;
        lap(&mut times.swap);
        stats.times = times;
        if stats.segments_rewritten > 0 {
            tracing::info!(partition = %self.name, ?stats, "compacted");
        }
        Ok(Some(stats))
    }

    /// Replaces `cleaner-offset-checkpoint` with `upto` (temporary file and rename) without
    /// syncing it: the checkpoint only spares work. A crash may leave the previous value, a
    /// new name whose content never reached the device (read as no checkpoint), or the new
    /// value; the first two make the next pass clean from an earlier offset, which changes
    /// nothing but its cost, as a crash between swap and checkpoint always did. The rename
    /// becomes durable with the next directory fsync or journal commit. Two syncs less per
    /// pass (a file fsync and a directory fsync, each a journal commit that produce
    /// fdatasyncs on the same device queue behind: issue #23).
    async fn write_checkpoint(&self, upto: i64) -> Result<(), StorageError> {
        let path = self.dir.join(CLEANER_CHECKPOINT_FILE);
        self.disk
            .write_file_off_thread(&path, format!("{upto}\n").into_bytes(), false)
            .await
            .map_err(|e| StorageError::io("write", path.display(), e))
    }

    /// The sealed segments (every one but the active one), and the active one's base.
    fn sealed_segments(&self) -> (Vec<Sealed>, i64) {
        let st = self.state.borrow();
        let n = st.segments.len() - 1;
        let sealed = st.segments[..n]
            .iter()
            .map(|s| Sealed { base: s.base, next: s.next_offset, size: s.size, max_ts: s.max_ts, file: s.file.clone() })
            .collect();
        (sealed, st.segments[n].base)
    }

    /// A sealed segment's bytes, read whole, `COMPACTION_READ_CHUNK_BYTES` at a time with
    /// `COMPACTION_READS_IN_FLIGHT` reads in flight (paced between rounds), so the device never
    /// has a whole segment's read queued ahead of the shard's appends and syncs; a part the
    /// read cache holds is taken from it (bytes known final, so the same as the file's).
    /// `waited`: the seconds it took are added to it.
    async fn read_sealed(&self, s: &Sealed, pace: &mut Pace, waited: &mut f64) -> Result<Bytes, StorageError> {
        let started = Instant::now();
        let len = usize::try_from(s.size)
            .map_err(|_| StorageError::io("read", &self.name, std::io::Error::other("segment too large")))?;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = out.len();
            let reads = (0..COMPACTION_READS_IN_FLIGHT)
                .map(|i| at + i * COMPACTION_READ_CHUNK_BYTES)
                .take_while(|pos| *pos < len)
                .map(|pos| {
                    let n = COMPACTION_READ_CHUNK_BYTES.min(len - pos);
                    let at = u64::try_from(pos).expect("usize fits u64");
                    // Segments just sealed are usually still in the read cache (write-through):
                    // taken from there, the pass queues no read beside the shard's produce
                    // writes and syncs on the device.
                    let held = crate::cache::peek(s.file.key(), at, n);
                    async move {
                        match held {
                            Some(bytes) => Ok(bytes),
                            None => read_exact(&s.file, &self.name, at, n).await,
                        }
                    }
                });
            for chunk in futures::future::try_join_all(reads).await? {
                out.extend_from_slice(&chunk);
            }
            pace.tick().await;
        }
        *waited += started.elapsed().as_secs_f64();
        Ok(Bytes::from(out))
    }

    /// The key map of the dirty segments after `first_dirty` up to `clean_upto`: whole
    /// segments, as many as fit (a segment over `COMPACTION_MAX_SEGMENT_BYTES` ends it); with
    /// the offset it reaches, and the bytes of the first mapped segments (by base, up to
    /// `COMPACTION_REUSE_BYTES`), kept for the cleaning so it does not read them again.
    async fn key_map(
        &self,
        sealed: &[Sealed],
        first_dirty: i64,
        clean_upto: i64,
        aborted: &[AbortedTxn],
        pace: &mut Pace,
        waited: &mut f64,
    ) -> Result<(KeyMap, i64, HashMap<i64, Bytes>), StorageError> {
        let mut map = KeyMap::new();
        let mut upto = first_dirty;
        let mut reuse = HashMap::new();
        let mut kept = 0u64;
        let dirty = || sealed.iter().filter(|s| s.next > first_dirty && s.next <= clean_upto);
        let start = dirty().next().map_or(first_dirty, |s| s.base);
        let mut txns = CleanedTxns::new(aborted.iter().filter(|a| a.marker_offset >= start).copied().collect());
        for s in dirty() {
            if s.size > COMPACTION_MAX_SEGMENT_BYTES {
                break;
            }
            let bytes = self.read_sealed(s, pace, waited).await?;
            let mut keys = SegmentKeys::default();
            let mut fits = true;
            for b in Batches::new(&bytes) {
                let (h, batch) = b.map_err(|e| compact_error(&self.name, e))?;
                if !map.add_batch(&mut keys, &h, batch, &mut txns).map_err(|e| compact_error(&self.name, e))? {
                    fits = false;
                    break;
                }
                pace.tick().await;
            }
            if !fits {
                break;
            }
            map.commit(keys);
            upto = s.next;
            if kept + s.size <= COMPACTION_REUSE_BYTES {
                kept += s.size;
                reuse.insert(s.base, bytes);
            }
        }
        Ok((map, upto, reuse))
    }

    /// Cleans the sealed segments that end at or below `pass.upto` with `pass.ctx`, in offset
    /// order from the log's first segment (`txns` follows them), and groups adjacent cleaned
    /// segments to merge (`crate::compact::merge`): the rewrites, each a segment whose bytes
    /// changed or a merged group, counted in `stats`. A segment too large to read whole is left
    /// as it is (it joins no group), and from there on no marker is removed (its transactions'
    /// batches went unseen). Memory: the rewrites, and the open group's unchanged members.
    /// `reuse`: segments' bytes the key map read (and CRC-checked), by base, cleaned without a
    /// second read or check.
    #[allow(clippy::too_many_arguments)]
    async fn clean_segments(
        &self,
        sealed: &[Sealed],
        pass: &CleanPass<'_>,
        mut reuse: HashMap<i64, Bytes>,
        txns: &mut CleanedTxns,
        stats: &mut CompactStats,
        pace: &mut Pace,
        waited: &mut f64,
    ) -> Result<Vec<Rewrite>, StorageError> {
        let mut news = Vec::new();
        let mut grouper: Grouper<CleanedSeg> = Grouper::new(pass.limits);
        let err = |e| compact_error(&self.name, e);
        for s in sealed.iter().filter(|s| s.next <= pass.upto) {
            if s.size > COMPACTION_MAX_SEGMENT_BYTES {
                txns.lose_sight();
                news.extend(self.rewrite(grouper.skip(), pass.interval, pace).await?);
                continue;
            }
            let kept = reuse.remove(&s.base);
            let checked = kept.is_some();
            let bytes = match kept {
                Some(b) => b,
                None => self.read_sealed(s, pace, waited).await?,
            };
            stats.bytes_read += s.size;
            // Cleaned a batch at a time, the new segment's indexes built as its batches come.
            let mut cleaner =
                if checked { SegmentCleaner::checked_before(&bytes) } else { SegmentCleaner::new(&bytes) };
            let mut ix = Indexer::new(s.base, pass.interval);
            let mut at = 0;
            while cleaner.step(pass.ctx, txns).map_err(err)? {
                let written = cleaner.written();
                while written.len() > at {
                    let h = BatchHeader::parse(&written[at..]).map_err(|e| err(e.into()))?;
                    ix.add(&h, h.total_len()).map_err(err)?;
                    at += h.total_len();
                }
                pace.tick().await;
            }
            let out = cleaner.finish();
            if out.changed {
                stats.bytes_before += s.size;
                stats.bytes_after += u64::try_from(out.bytes.len()).unwrap_or(u64::MAX);
                stats.records_removed += out.records_removed;
            }
            let changed = out.changed;
            let new = ix.finish(out.bytes);
            let len = |v: &Vec<u8>| u64::try_from(v.len()).unwrap_or(u64::MAX);
            let piece = Piece {
                base: s.base,
                next: s.next,
                log_bytes: len(&new.log),
                index_bytes: len(&new.index),
                timeindex_bytes: len(&new.timeindex),
            };
            news.extend(self.rewrite(grouper.push(piece, CleanedSeg { changed, new }), pass.interval, pace).await?);
        }
        news.extend(self.rewrite(grouper.close(), pass.interval, pace).await?);
        Ok(news)
    }

    /// The rewrite of a closed merge group: none for a single unchanged segment, the segment
    /// for a single changed one, else the members' cleaned bytes one after the other as one
    /// segment at the first base, its indexes rebuilt (a batch at a time, paced).
    async fn rewrite(
        &self,
        group: Option<Group<CleanedSeg>>,
        interval: u64,
        pace: &mut Pace,
    ) -> Result<Option<Rewrite>, StorageError> {
        let Some(mut group) = group else { return Ok(None) };
        let next = group.last().expect("a group has members").0.next;
        if group.len() == 1 {
            let (_, c) = group.pop().expect("one member");
            return Ok(c.changed.then(|| Rewrite { next, bases: vec![c.new.base], new: c.new }));
        }
        let bases: Vec<i64> = group.iter().map(|(p, _)| p.base).collect();
        let mut log = Vec::with_capacity(group.iter().map(|(_, c)| c.new.log.len()).sum());
        let mut ix = Indexer::new(bases[0], interval);
        for (_, c) in &group {
            // The members' bytes are this pass's cleaned output: whole batches, no padding.
            let mut pos = 0;
            while pos < c.new.log.len() {
                let h = BatchHeader::parse(&c.new.log[pos..]).map_err(|e| compact_error(&self.name, e.into()))?;
                let b = c
                    .new
                    .log
                    .get(pos..pos + h.total_len())
                    .ok_or_else(|| compact_error(&self.name, CompactError::TooLarge(pos)))?;
                ix.add(&h, b.len()).map_err(|e| compact_error(&self.name, e))?;
                log.extend_from_slice(b);
                pos += b.len();
                pace.tick().await;
            }
        }
        Ok(Some(Rewrite { next, bases, new: ix.finish(log) }))
    }

    /// The log's transactions from its start, read until every transaction begun before `upto`
    /// is resolved (or the high watermark): the aborted ones, and those still open. The sealed
    /// segments wholly below the high watermark (`sealed`, the pass's) are scanned by their
    /// batch headers ([`PartitionLog::scan_headers`]); the rest, if the scan must go on, through
    /// the read path.
    async fn txn_scan(&self, sealed: &[Sealed], upto: i64, pace: &mut Pace) -> Result<Scan, StorageError> {
        let mut scan = Scan::default();
        let mut offset = self.log_start().0;
        let end = self.high_watermark().0;
        let more = |offset: i64, scan: &Scan| offset < end && (offset < upto || scan.open_before(upto));
        for s in sealed {
            if !more(offset, &scan) || s.next > end {
                break;
            }
            if s.next > offset {
                self.scan_headers(s, offset, &mut scan, pace).await?;
                offset = s.next;
            }
        }
        while more(offset, &scan) {
            let read = self.read(Offset(offset), OFFSETS_LOAD_READ_BYTES).await?;
            let mut pos = 0;
            let before = offset;
            while pos + HEADER_LEN <= read.records.len() {
                let h = BatchHeader::parse(&read.records[pos..]).map_err(|e| compact_error(&self.name, e.into()))?;
                let stop = pos + h.total_len();
                if stop > read.records.len() {
                    break;
                }
                scan.observe(&h, &read.records[pos..stop]);
                offset = offset.max(h.last_offset() + 1);
                pos = stop;
                pace.tick().await;
            }
            if offset == before {
                break; // nothing read: the rest is not readable yet
            }
        }
        Ok(scan)
    }

    /// Feeds `scan` the batches of the sealed segment `s` (wholly below the high watermark, so
    /// in its file) that end at or after `from`, reading their headers only, and control batches
    /// whole (a data batch's records say nothing about its transaction): a read of
    /// `COMPACTION_SCAN_WINDOW_BYTES` at a header after a large batch, of
    /// `COMPACTION_READ_CHUNK_BYTES` after a small one (the next headers are likely in it). Stops
    /// at the zero padding a crash may leave at a segment's end; a header that does not parse,
    /// or a batch running past the segment's size, fails the pass.
    async fn scan_headers(&self, s: &Sealed, from: i64, scan: &mut Scan, pace: &mut Pace) -> Result<(), StorageError> {
        let err = |e: CompactError| compact_error(&self.name, e);
        let size = usize::try_from(s.size).map_err(|_| err(CompactError::TooLarge(0)))?;
        let mut window = Bytes::new();
        let mut window_at = 0usize;
        let mut want = COMPACTION_SCAN_WINDOW_BYTES;
        let mut pos = 0usize;
        // Every round moves `pos` on by a whole batch (at least a header) or ends.
        while pos + LOG_OVERHEAD <= size {
            if pos + HEADER_LEN.min(size - pos) > window_at + window.len() {
                window =
                    read_exact(&s.file, &self.name, u64::try_from(pos).expect("usize fits u64"), want.min(size - pos))
                        .await?;
                window_at = pos;
            }
            let rest = &window[pos - window_at..];
            if rest[..LOG_OVERHEAD].iter().all(|b| *b == 0) {
                break; // zero padding
            }
            let h = BatchHeader::parse(rest).map_err(|e| err(CompactError::Batch { pos, err: e }))?;
            let total = h.total_len();
            if total > size - pos {
                let e = sluice_core::batch::BatchError::Truncated { have: size - pos, need: total };
                return Err(err(CompactError::Batch { pos, err: e }));
            }
            if h.last_offset() >= from && h.producer_id >= 0 && h.attributes & TRANSACTIONAL != 0 {
                if !h.is_control() {
                    scan.observe(&h, &rest[..HEADER_LEN]);
                } else if total <= rest.len() {
                    scan.observe(&h, &rest[..total]);
                } else {
                    let at = u64::try_from(pos).expect("usize fits u64");
                    scan.observe(&h, &read_exact(&s.file, &self.name, at, total).await?);
                }
            }
            want = if total < COMPACTION_SCAN_WINDOW_BYTES {
                COMPACTION_READ_CHUNK_BYTES
            } else {
                COMPACTION_SCAN_WINDOW_BYTES
            };
            pos += total;
            pace.tick().await;
        }
        Ok(())
    }

    /// Swaps the rewrites in, on disk (crash-safe) and then in memory. A rewrite goes in only
    /// while every segment it replaces is still a sealed segment of the log (a truncation
    /// during the pass may have cut into them; retention runs in turn with compaction, so it
    /// cannot have removed them): a rewrite whose segments changed is dropped before the swap.
    /// In memory each rewrite's segments are replaced by the one it wrote, and the replaced
    /// files' cached chunks are forgotten.
    async fn install(
        &self,
        news: Vec<Rewrite>,
        interval: u64,
        now_ms: i64,
        pace: &mut Pace,
    ) -> Result<(), StorageError> {
        let present = |r: &Rewrite| {
            let st = self.state.borrow();
            let sealed = &st.segments[..st.segments.len() - 1];
            let i = sealed.partition_point(|x| x.base < r.bases[0]);
            sealed.len() >= i + r.bases.len()
                && sealed[i..i + r.bases.len()].iter().zip(&r.bases).all(|(x, b)| x.base == *b)
                && sealed[i + r.bases.len() - 1].next_offset == r.next
        };
        let (news, segs): (Vec<(i64, Vec<i64>)>, Vec<NewSegment>) =
            news.into_iter().filter(|r| present(r)).map(|r| ((r.next, r.bases), r.new)).unzip();
        let removed: Vec<i64> = news.iter().flat_map(|(_, bases)| bases[1..].iter().copied()).collect();
        if segs.is_empty() {
            return Ok(());
        }
        let firsts: Vec<i64> = segs.iter().map(|s| s.base).collect();
        // Readers that locate batches by offsets found before (Raft catch-up anchors) learn
        // that batches may have moved, both while the files change and once the list did.
        self.relayout();
        let mut kept = swap_in_owned(&self.disk, &self.dir, segs, &removed, pace)
            .await
            .map_err(|e| StorageError::io("swap cleaned segments", self.dir.display(), e))?;
        let delay = self.delete_delay();
        for ((next, bases), base) in news.into_iter().zip(firsts) {
            let seg = Segment::open_sealed(&self.disk, &self.dir, base, next, interval, now_ms).await?;
            let mut st = self.state.borrow_mut();
            let last = st.segments.len() - 1;
            let Some(i) = st.segments[..last].iter().position(|x| x.base == base) else { continue };
            let n = st.segments[i..last].iter().take_while(|x| bases.contains(&x.base)).count();
            let old: Vec<Segment> = st.segments.splice(i..i + n, [seg]).collect();
            for o in old {
                crate::cache::invalidate(o.file.key());
                // Its blocks are freed once no reader holds it (`crate::reclaim`).
                if let Some(k) = kept.iter().position(|(b, _)| *b == o.base) {
                    crate::reclaim::queue(kept.swap_remove(k).1, delay, Rc::downgrade(&o.file));
                }
            }
        }
        // Kept files of segments no longer in the list (none expected): no reader to wait for.
        for (_, path) in kept {
            crate::reclaim::queue(path, delay, std::rc::Weak::new());
        }
        self.relayout();
        Ok(())
    }

    fn relayout(&self) {
        self.layout.set(self.layout.get() + 1);
    }

    /// Changes each time compaction rewrites batches (before and after a swap): a batch found
    /// at an offset under one value may lie inside a gap batch under a later one.
    pub fn layout(&self) -> u64 {
        self.layout.get()
    }
}

/// What every segment of a pass is cleaned and merged with.
struct CleanPass<'a> {
    ctx: &'a CleanContext<'a>,
    /// The pass cleans the sealed segments ending at or below this offset.
    upto: i64,
    interval: u64,
    limits: MergeLimits,
}
