//! The writer of a [`PartitionLog`] and its part in the shard's sync rounds.
//!
//! The writer is one task per log: it writes the whole unwritten tail of the active segment
//! with one aligned DMA write, advances `written`, registers the log for the shard's next sync
//! round (`sync.rs`) and goes on with the next write at once, without waiting for the sync.
//! The round's result ([`SyncTarget::synced`]) advances `durable`, feeds the bytes it made
//! final to the read cache and drops them from the in-memory tail.
//!
//! Contract: `written` advances only after a complete write, `durable` only after an fdatasync
//! that began after the write completed; a failed or short write or a failed sync rolls the
//! log back to its last durable batch, fails every waiter and starts a new write generation,
//! and the result of a write or sync begun in an earlier generation is discarded. A round
//! never writes past a roll point (a batch that does not fit the active segment's index): the
//! segment rolls there first, and a roll point that cannot be rolled to (the new segment
//! cannot be created) fails the batches after it like a failed write.
//!
//! Rolling: the new segment file is created (and its directory synced) while the old
//! segment's last bytes are synced, and no byte goes into the new segment before the old one
//! is durable up to its end (so a crash never leaves a later segment past a hole; an empty
//! last segment left by a crash is removed at open). The sealed segment's index files and
//! its trim run in a background task, never before an ack.

use super::sync::{self, SyncPoint, SyncTarget};
use super::*;
use glommio::channels::local_channel::LocalReceiver;
use sluice_core::limits::DENSE_ENTRIES_KEPT;

/// The writer: one aligned write of the whole unwritten tail per round, without waiting for
/// its sync; rolls the active segment when due.
pub(super) async fn flusher(log: Rc<PartitionLog>, rx: LocalReceiver<()>) {
    loop {
        let (pending, closing, roll_now) = {
            let st = log.state.borrow();
            let cut = st.pending_cut.is_some() || st.tail_hole.is_some();
            (st.active().size > st.written_pos || cut, st.closing, st.roll_at == Some(st.written_pos))
        };
        if roll_now {
            // Everything before the roll point is written: the next batch starts a segment.
            roll(&log, true).await;
        } else if pending {
            if write_round(&log).await && roll_due(&log) {
                roll(&log, false).await;
            }
        } else if closing {
            let written = log.written.get();
            if log.durable.get() >= written {
                return;
            }
            // A failed sync rolls back and fails this wait: look again.
            let _ = log.durable.wait_for(written).await;
        } else if rx.recv().await.is_none() {
            return;
        }
    }
}

/// One write of the unwritten tail. Returns true when it succeeded.
async fn write_round(log: &Rc<PartitionLog>) -> bool {
    let cut = {
        let st = log.state.borrow();
        st.pending_cut.is_some() || st.tail_hole.is_some()
    };
    if cut {
        if let Err(e) = log.finish_cut().await {
            // The file cannot be made to match the log in memory: fail whole (restart at once).
            panic!("{}: cannot finish a replication cut: {e}", log.name);
        }
        let st = log.state.borrow();
        if st.active().size <= st.written_pos {
            return true;
        }
    }
    let generation = log.generation.get();
    let file = log.state.borrow().active().file.clone();
    let h = match file.writer().await {
        Ok(h) => h,
        Err(e) => {
            if log.generation.get() == generation {
                roll_back_to_durable(log, &StorageError::io("open", &log.name, e));
            }
            return false;
        }
    };
    // No await between here and the write: the tail copied is the tail written.
    let (buf, len, start, end_pos, end_offset) = {
        let st = log.state.borrow();
        if log.generation.get() != generation || !Rc::ptr_eq(&st.active().file, &file) {
            return false; // rolled back or rolled while opening: look again
        }
        let (end_pos, end_offset) = st.write_end();
        let start = align_down(st.written_pos);
        let from = usize::try_from(start - st.tail_start).expect("the tail is in memory");
        let len = usize::try_from(end_pos - start).expect("the tail is in memory");
        let aligned = usize::try_from(crate::disk::align_up(end_pos - start)).expect("the tail is in memory");
        let mut buf = h.alloc(aligned);
        let bytes = buf.as_mut();
        bytes[..len].copy_from_slice(&st.tail[from..from + len]);
        bytes[len..].fill(0);
        (buf, len, start, end_pos, end_offset)
    };
    let result = {
        let _io = crate::inflight::Guard::start();
        let began = std::time::Instant::now();
        let r = file.write_buf(&h, start, buf, len).await;
        let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        crate::stats::with(|s| s.write_us.saturating_record(us));
        r
    };
    if log.generation.get() != generation {
        // A failed sync rolled the log back while this write ran: its bytes are void (the
        // next write starts again from the durable end).
        return false;
    }
    let error = match result {
        // A direct-I/O write that runs out of space part way reports the bytes it wrote.
        Ok(n) if n < len => Some(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {n} of {len} bytes at {start} (disk full?)"),
        )),
        Ok(_) => None,
        Err(e) => Some(e),
    };
    if let Some(e) = error {
        roll_back_to_durable(log, &StorageError::io("write", &log.name, e));
        return false;
    }
    crate::stats::with(|s| s.bytes_written += u64::try_from(len).unwrap_or(u64::MAX));
    log.state.borrow_mut().written_pos = end_pos;
    log.written.advance(end_offset);
    if !log.sync_queued.replace(true) {
        sync::request(log.clone());
    }
    true
}

impl SyncTarget for PartitionLog {
    fn take_sync_point(&self) -> Option<SyncPoint> {
        self.sync_queued.set(false);
        let written = self.written.get();
        let st = self.state.borrow();
        // Bytes written past the durable ones with no offset (batches taking none) count too.
        if written <= self.durable.get() && st.written_pos <= st.flushed_pos {
            return None;
        }
        Some(SyncPoint {
            file: st.active().file.clone(),
            pos: st.written_pos,
            offset: written,
            generation: self.generation.get().0,
        })
    }

    fn synced(&self, point: SyncPoint, result: std::io::Result<()>) {
        if point.generation != self.generation.get().0 {
            return; // rolled back since the point was taken: nothing of it counts
        }
        if let Err(e) = result {
            roll_back_to_durable(self, &StorageError::io("fdatasync", &self.name, e));
            return;
        }
        {
            let mut st = self.state.borrow_mut();
            // A roll waits for its old segment's sync, so a point is always of the active one.
            assert!(Rc::ptr_eq(&st.active().file, &point.file), "a sync point of a sealed segment");
            if point.pos > st.flushed_pos {
                // The bytes this sync made final go to the read cache (write-through).
                let from = usize::try_from(st.flushed_pos - st.tail_start).expect("the tail is in memory");
                let to = usize::try_from(point.pos - st.tail_start).expect("the tail is in memory");
                crate::cache::write_through(point.file.key(), st.flushed_pos, &st.tail[from..to]);
                st.flushed_pos = point.pos;
                let new_start = align_down(point.pos);
                let drop_bytes = usize::try_from(new_start - st.tail_start).expect("the tail is in memory");
                st.tail.drain(..drop_bytes);
                st.tail_start = new_start;
                // A burst leaves a large buffer behind; idle partitions must not keep it.
                if st.tail.capacity() > TAIL_KEEP_CAPACITY && st.tail.len() < TAIL_KEEP_CAPACITY / 4 {
                    let keep = st.tail.len().max(8192);
                    st.tail.shrink_to(keep);
                }
            }
            st.trim_dense();
        }
        if point.offset > self.durable.get() {
            self.durable.advance(point.offset);
        }
        let st = self.state.borrow();
        let bytes = i64::try_from(st.origin + st.flushed_pos).expect("a log's bytes fit i64");
        drop(st);
        if bytes > self.durable_bytes.get() {
            self.durable_bytes.advance(bytes);
        }
    }
}

impl State {
    /// Cuts the active segment's in-memory state before its `keep`-th per-batch entry, the
    /// batch at offset `offset` and position `pos` (a batch boundary): entries, size, sparse
    /// index, max timestamp, log end and the producer state of the batches cut. The tail and
    /// the write marks are the caller's.
    pub(super) fn cut_active(&mut self, keep: usize, offset: i64, pos: u64) {
        let seg = self.active_mut();
        seg.max_timestamp_before(offset);
        seg.dense.truncate(keep);
        seg.size = pos;
        seg.next_offset = offset;
        seg.index.offsets.retain(|(_, p)| u64::from(*p) < pos);
        let base = seg.base;
        seg.index.times.retain(|(_, r)| base + i64::from(*r) < offset);
        self.next_offset = offset;
        self.producers.forget_from(offset);
    }

    /// Drops the oldest durable per-batch entries of the active segment when it holds twice
    /// [`DENSE_ENTRIES_KEPT`] (amortised: one drain per `DENSE_ENTRIES_KEPT` batches).
    pub(super) fn trim_dense(&mut self) {
        let flushed = self.flushed_pos;
        let seg = self.active_mut();
        let dense = &seg.dense;
        if dense.len() < 2 * DENSE_ENTRIES_KEPT {
            return;
        }
        // Durable by position: a batch taking no offset is not durable for its offsets.
        let durable_entries = dense.partition_point(|e| e.pos + u64::from(e.len) <= flushed);
        let drop = durable_entries.min(dense.len() - DENSE_ENTRIES_KEPT);
        seg.settle(drop);
    }
}

/// Drops every batch after the last durable one (they are in memory only, or written but not
/// synced), fails their waiters and starts a new write generation.
fn roll_back_to_durable(log: &PartitionLog, e: &StorageError) {
    let durable = log.durable.get();
    let mut st = log.state.borrow_mut();
    let lost = st.next_offset - durable;
    // The durable end of the active segment (a roll waits for its old segment to be durable,
    // so the durable end is always in the active one).
    let end = st.flushed_pos;
    let dense = &st.active().dense;
    // The batches within the durable bytes stay (with batches taking no offset, an offset
    // does not tell them apart).
    let keep = dense.partition_point(|x| x.pos < end);
    debug_assert!(dense.get(keep).is_none_or(|x| x.pos == end), "the durable end is a batch boundary");
    st.cut_active(keep, durable, end);
    st.written_pos = end;
    // A roll point is never durable: it went with the batches.
    st.roll_at = None;
    let tail_len = usize::try_from(end - st.tail_start).expect("the tail is in memory");
    st.tail.truncate(tail_len);
    drop(st);
    log.written.reset(durable);
    log.generation.set(WriteGeneration(log.generation.get().0 + 1));
    log.written.fail_waiters();
    log.durable.fail_waiters();
    log.durable_bytes.fail_waiters();
    tracing::error!(partition = %log.name, error = %e, rolled_back_offsets = lost, "append failed; rolled back to the last durable batch");
}

/// The active segment reached `segment.bytes` or `segment.ms`.
fn roll_due(log: &PartitionLog) -> bool {
    let cfg = log.config.get();
    let st = log.state.borrow();
    let written = st.written_pos;
    let by_size = written >= cfg.segment_bytes;
    let by_age = written > 0 && now_ms() - st.active().created_ms >= i64::try_from(cfg.segment_ms).unwrap_or(i64::MAX);
    by_size || by_age
}

/// Rolls the active segment at the end of what is written (`forced`: that is its roll point,
/// the next batch does not fit its index); batches appended later move to the new segment.
async fn roll(log: &Rc<PartitionLog>, forced: bool) {
    let generation = log.generation.get();
    let (roll_pos, roll_base) = {
        let st = log.state.borrow();
        let a = st.active();
        let pos = st.written_pos;
        let i = a.dense.partition_point(|e| e.pos < pos);
        (pos, a.dense.get(i).map(|e| e.base).unwrap_or(st.next_offset))
    };
    if roll_pos == 0 {
        // Any one batch fits an empty segment (limits.rs): never reached. Do not loop on it.
        debug_assert!(!forced, "a roll point at the start of a segment");
        if forced {
            tracing::error!(partition = %log.name, "a roll point at the start of a segment; ignored");
            log.state.borrow_mut().roll_at = None;
        }
        return;
    }
    // The old segment's bytes become durable (the shard's next round) while the new file is
    // created: a crash between leaves an empty last segment, removed at open.
    // Durable by position: batches taking no offset before the roll point count too.
    let roll_bytes = i64::try_from(log.state.borrow().origin + roll_pos).expect("a log's bytes fit i64");
    let old_file = log.state.borrow().active().file.clone();
    let (synced, cut, created) = futures::join!(
        log.durable_bytes.wait_for(roll_bytes),
        cut_prepared(&old_file, roll_pos),
        Segment::create(&log.disk, &log.dir, roll_base, now_ms())
    );
    if synced.is_err() || log.generation.get() != generation {
        // Rolled back: the roll point went with its batches.
        if let Ok(seg) = created {
            seg.remove_files().await;
        }
        return;
    }
    // The sealed segment ends at its last batch on disk before the next one gets a byte.
    let created = match (created, cut) {
        (Ok(seg), Err(e)) => {
            seg.remove_files().await;
            Err(StorageError::io("cut the segment to its batches", &log.name, e))
        }
        (created, _) => created,
    };
    let new = match created {
        Ok(s) => s,
        Err(e) if forced => {
            // The batches after the roll point cannot go into this segment: fail them.
            roll_back_to_durable(log, &e);
            return;
        }
        Err(e) => {
            tracing::error!(partition = %log.name, error = %e, "cannot roll to a new segment; appending to the old one");
            return;
        }
    };
    let sealed = swap_segment(log, new, roll_pos, roll_base);
    // The previous seal first (so close awaits only the last one), then this one.
    let previous = log.sealing.borrow_mut().take();
    let name = log.name.clone();
    let handle = glommio::spawn_local(async move {
        if let Some(p) = previous {
            p.await;
        }
        seal(&name, sealed).await;
    })
    .detach();
    *log.sealing.borrow_mut() = Some(handle);
    tracing::debug!(partition = %log.name, base = roll_base, "rolled to a new segment");
}

/// Cuts the space prepared past a segment's batches (`file/mod.rs`), durably: the segment is
/// sealed at `end`.
async fn cut_prepared(file: &Rc<crate::file::SegFile>, end: u64) -> std::io::Result<()> {
    file.truncate(end).await?;
    file.fdatasync().await
}

/// What sealing a segment leaves to do off the write path.
struct Sealed {
    file: Rc<crate::file::SegFile>,
    index_files: crate::segment::IndexFiles,
    size: u64,
}

/// Makes `new` the active segment; the old one ends at `roll_pos` (offset `roll_base`), which
/// is durable. Batches appended after the roll point move to the new segment.
fn swap_segment(log: &PartitionLog, new: Segment, roll_pos: u64, roll_base: i64) -> Sealed {
    let mut st = log.state.borrow_mut();
    assert_eq!(
        st.flushed_pos,
        roll_pos,
        "a segment rolls once durable to its end (base {roll_base}, durable {}, written {} at {})",
        log.durable.get(),
        log.written.get(),
        st.written_pos
    );
    let old = st.active_mut();
    let split = old.dense.partition_point(|e| e.pos < roll_pos);
    assert_eq!(old.dense.get(split).map(|e| e.base).unwrap_or(old.next_offset), roll_base);
    // The batches moved on were noted at append: the sealed segment's largest timestamp (the
    // last entry of its time index) is that of its own batches.
    old.max_timestamp_before(roll_base);
    let moved = old.dense.split_off(split);
    old.dense.clear();
    old.size = roll_pos;
    old.next_offset = roll_base;
    old.index.offsets.retain(|(_, p)| u64::from(*p) < roll_pos);
    let base = old.base;
    old.index.times.retain(|(_, r)| base + i64::from(*r) < roll_base);
    let index_files = old.index_files();
    let old_file = old.file.clone();
    let unwritten_from = usize::try_from(roll_pos - st.tail_start).expect("the tail is in memory");
    let unwritten = st.tail.split_off(unwritten_from);
    let interval = log.config.get().index_interval_bytes.max(1);
    let mut seg = new;
    // The moved batches are indexed against the new base, up to the next roll point if they
    // do not all fit (a run of batches spanning more offsets than one segment holds).
    let mut roll_at = None;
    for mut e in moved {
        e.pos -= roll_pos;
        if roll_at.is_none() && crate::index::fits(roll_base, e.last.max(e.base), e.pos + u64::from(e.len)).is_err() {
            roll_at = Some(e.pos);
        }
        if roll_at.is_none() {
            let rel = crate::index::relative_offset(roll_base, e.base).expect("fits the index");
            let at = crate::index::position(e.pos).expect("fits the index");
            let Segment { index, cursor, .. } = &mut seg;
            cursor.add(index, interval, rel, at, e.max_ts, e.len);
            seg.note_timestamp(&e);
        }
        seg.next_offset = e.last + 1;
        seg.dense.push(e);
    }
    seg.size = u64::try_from(unwritten.len()).expect("usize fits u64");
    st.roll_at = roll_at;
    st.segments.push(seg);
    st.tail = unwritten;
    st.tail_start = 0;
    st.flushed_pos = 0;
    st.written_pos = 0;
    st.origin += roll_pos;
    Sealed { file: old_file, index_files, size: roll_pos }
}

/// Writes a sealed segment's indexes (fsync'd off the shard's thread; rebuilt at start if
/// lost) and cuts its file to its logical size (drops the zero padding of the last page).
async fn seal(name: &str, s: Sealed) {
    crate::cache::seal(s.file.key());
    if let Err(e) = s.index_files.write(true).await {
        tracing::warn!(partition = %name, error = %e, "could not write a sealed segment's index; it will be rebuilt");
    }
    if let Err(e) = s.file.truncate(s.size).await {
        tracing::warn!(partition = %name, error = %e, "could not trim a sealed segment");
    }
}
