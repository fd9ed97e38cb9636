//! One compaction pass over a live log ([`PartitionLog::compact`]): plan, key map, cleaning of
//! the sealed segments up to the pass's end, adjacent cleaned segments grouped to merge
//! (within `segment.bytes`, at most `COMPACTION_MAX_SEGMENT_BYTES`, and `segment.index.bytes`),
//! crash-safe swap, then the in-memory segments replaced.
//!
//! Contract: the active segment is never read or changed. Segments are read whole, one at a
//! time (memory: one segment of at most `COMPACTION_MAX_SEGMENT_BYTES`, its cleaned copy and
//! the key map; a larger segment ends the key map's range and is not rewritten, nor merged).
//! Only segments whose bytes changed, and groups of merged segments, are swapped; the rewrites
//! of a pass are held in memory until the swap.
//! The caller runs passes one at a time per log, in turn with retention (the shard's timer
//! runs both, one after the other); a segment that left the log while the pass ran (retention,
//! DeleteRecords) is not replaced in memory, and its file, if the swap recreated it, lies below
//! the log start and goes at the next retention check. Readers that planned a read before the
//! swap keep their old file (its descriptor outlives the rename). Its cached chunks are
//! forgotten. Where a pass ended is written durably to `cleaner-offset-checkpoint` after its
//! swap, so a restart starts at the first dirty offset instead of cleaning the whole sealed
//! part again.
//!
//! Transactions: before cleaning, the log is read from its start (through the read path, up
//! to the high watermark) until every transaction begun before the pass's end is resolved, so
//! the pass knows the aborted transactions and ends before the oldest open one (the last
//! stable offset, as Kafka's first uncleanable offset). The log itself is the source, so a
//! replica's pass and a pass after a restart decide alike.

use super::read::read_exact;
use super::*;
use crate::compact::clean::{CleanContext, SegmentCleaner};
use crate::compact::keymap::{KeyMap, SegmentKeys};
use crate::compact::merge::{Group, Grouper, MergeLimits, Piece};
use crate::compact::swap::{swap_in_owned, Indexer, NewSegment};
use crate::compact::txn::{AbortedTxn, CleanedTxns, Scan};
use crate::compact::{plan, Batches, CompactError, CompactionConfig, Pace, SegmentInfo};
use sluice_core::batch::BatchHeader;
use sluice_core::limits::{COMPACTION_MAX_SEGMENT_BYTES, COMPACTION_READ_CHUNK_BYTES, OFFSETS_LOAD_READ_BYTES};

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

fn compact_error(name: &str, e: CompactError) -> StorageError {
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
                tracing::info!(partition = %self.name, bytes_read = st.bytes_read, seconds, "compaction pass");
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
        // Never past the high watermark, nor into an open transaction (the last stable offset).
        let hwm = Some(self.high_watermark().0);
        let Some(p) = plan(&infos, sealed_end, first_dirty, hwm, now_ms, cfg) else { return Ok(None) };
        let mut pace = Pace::new();
        let txns = self.txn_scan(p.clean_upto, &mut pace).await?;
        let p = match txns.first_unstable().filter(|f| *f < p.clean_upto) {
            None => p,
            Some(lso) => match plan(&infos, sealed_end, first_dirty, Some(lso), now_ms, cfg) {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let (map, upto) = self.key_map(&sealed, p.first_dirty, p.clean_upto, &txns.aborted, &mut pace).await?;
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
        let news = self.clean_segments(&sealed, &pass, &mut cleaned_txns, &mut stats, &mut pace).await?;
        stats.aborted_gone = cleaned_txns.emptied_aborts().to_vec();
        if !news.is_empty() {
            stats.segments_rewritten = news.len();
            stats.segments_merged = news.iter().map(|r| r.bases.len() - 1).sum();
            self.install(news, interval, now_ms, &mut pace).await?;
            tracing::info!(partition = %self.name, ?stats, "compacted");
        }
        // The checkpoint follows the swap (durable before it): a crash between the two cleans
        // the same range again, which changes nothing.
        self.first_dirty.set(upto);
        self.write_offset_file(CLEANER_CHECKPOINT_FILE, upto).await?;
        Ok(Some(stats))
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

    /// A sealed segment's bytes, read whole, `COMPACTION_READ_CHUNK_BYTES` at a time (one
    /// read in flight, paced between reads), so the device never has a whole segment's read
    /// queued ahead of the shard's appends and syncs.
    async fn read_sealed(&self, s: &Sealed, pace: &mut Pace) -> Result<Bytes, StorageError> {
        let len = usize::try_from(s.size)
            .map_err(|_| StorageError::io("read", &self.name, std::io::Error::other("segment too large")))?;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = COMPACTION_READ_CHUNK_BYTES.min(len - out.len());
            let pos = u64::try_from(out.len()).expect("usize fits u64");
            out.extend_from_slice(&read_exact(&s.file, &self.name, pos, n).await?);
            pace.tick().await;
        }
        Ok(Bytes::from(out))
    }

    /// The key map of the dirty segments after `first_dirty` up to `clean_upto`: whole
    /// segments, as many as fit (a segment over `COMPACTION_MAX_SEGMENT_BYTES` ends it); with
    /// the offset it reaches.
    async fn key_map(
        &self,
        sealed: &[Sealed],
        first_dirty: i64,
        clean_upto: i64,
        aborted: &[AbortedTxn],
        pace: &mut Pace,
    ) -> Result<(KeyMap, i64), StorageError> {
        let mut map = KeyMap::new();
        let mut upto = first_dirty;
        let dirty = || sealed.iter().filter(|s| s.next > first_dirty && s.next <= clean_upto);
        let start = dirty().next().map_or(first_dirty, |s| s.base);
        let mut txns = CleanedTxns::new(aborted.iter().filter(|a| a.marker_offset >= start).copied().collect());
        for s in dirty() {
            if s.size > COMPACTION_MAX_SEGMENT_BYTES {
                break;
            }
            let bytes = self.read_sealed(s, pace).await?;
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
        }
        Ok((map, upto))
    }

    /// Cleans the sealed segments that end at or below `pass.upto` with `pass.ctx`, in offset
    /// order from the log's first segment (`txns` follows them), and groups adjacent cleaned
    /// segments to merge (`crate::compact::merge`): the rewrites, each a segment whose bytes
    /// changed or a merged group, counted in `stats`. A segment too large to read whole is left
    /// as it is (it joins no group), and from there on no marker is removed (its transactions'
    /// batches went unseen). Memory: the rewrites, and the open group's unchanged members.
    async fn clean_segments(
        &self,
        sealed: &[Sealed],
        pass: &CleanPass<'_>,
        txns: &mut CleanedTxns,
        stats: &mut CompactStats,
        pace: &mut Pace,
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
            let bytes = self.read_sealed(s, pace).await?;
            stats.bytes_read += s.size;
            // Cleaned a batch at a time, the new segment's indexes built as its batches come.
            let mut cleaner = SegmentCleaner::new(&bytes);
            let mut ix = Indexer::new(s.base, pass.interval);
            let mut at = 0;
            while cleaner.step(pass.ctx, txns).map_err(err)? {
                let written = cleaner.written();
                if written.len() > at {
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
    /// is resolved (or the high watermark): the aborted ones, and those still open.
    async fn txn_scan(&self, upto: i64, pace: &mut Pace) -> Result<Scan, StorageError> {
        let mut scan = Scan::default();
        let mut offset = self.log_start().0;
        let end = self.high_watermark().0;
        while offset < end && (offset < upto || scan.open_before(upto)) {
            let read = self.read(Offset(offset), OFFSETS_LOAD_READ_BYTES).await?;
            let mut pos = 0;
            let before = offset;
            while pos + sluice_core::batch::HEADER_LEN <= read.records.len() {
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
        swap_in_owned(&self.disk, &self.dir, segs, &removed, pace)
            .await
            .map_err(|e| StorageError::io("swap cleaned segments", self.dir.display(), e))?;
        for ((next, bases), base) in news.into_iter().zip(firsts) {
            let seg = Segment::open_sealed(&self.disk, &self.dir, base, next, interval, now_ms).await?;
            let mut st = self.state.borrow_mut();
            let last = st.segments.len() - 1;
            let Some(i) = st.segments[..last].iter().position(|x| x.base == base) else { continue };
            let n = st.segments[i..last].iter().take_while(|x| bases.contains(&x.base)).count();
            let old: Vec<Segment> = st.segments.splice(i..i + n, [seg]).collect();
            for o in old {
                crate::cache::invalidate(o.file.key());
            }
        }
        Ok(())
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
