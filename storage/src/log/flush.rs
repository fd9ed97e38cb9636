//! The flusher of a [`PartitionLog`]: one task per log that writes the whole unwritten tail of
//! the active segment with one aligned DMA write, then fdatasyncs it (group commit), feeds the
//! bytes it made final to the read cache, and rolls the segment when due.
//!
//! Contract: `written` advances only after a complete write, `durable` only after the
//! fdatasync that covers it; a failed or short write or a failed sync rolls the log back to
//! its last durable batch, fails every waiter and starts a new write generation. A round never
//! writes past a roll point (a batch that does not fit the active segment's index): the
//! segment rolls there first, and a roll point that cannot be rolled to (the new segment
//! cannot be created) fails the batches after it like a failed write.

use super::*;
use glommio::channels::local_channel::LocalReceiver;

/// The flusher: one aligned write of the whole unwritten tail, then one fdatasync, per round;
/// rolls the active segment when due.
pub(super) async fn flusher(log: Rc<PartitionLog>, rx: LocalReceiver<()>) {
    loop {
        let (pending, closing, roll_now) = {
            let st = log.state.borrow();
            (st.active().size > st.flushed_pos, st.closing, st.roll_at == Some(st.flushed_pos))
        };
        if roll_now {
            // Everything before the roll point is written: the next batch starts a segment.
            maybe_roll(&log).await;
        } else if pending {
            if flush_round(&log).await {
                maybe_roll(&log).await;
            }
        } else if closing || rx.recv().await.is_none() {
            return;
        }
    }
}

/// Returns true when the round succeeded.
async fn flush_round(log: &PartitionLog) -> bool {
    let file = log.state.borrow().active().file.clone();
    let result = async {
        let h = file.writer().await.map_err(|e| StorageError::io("open", &log.name, e))?;
        // No await between here and the write: the tail copied is the tail written.
        let (buf, len, tail_start, end_pos, end_offset) = {
            let st = log.state.borrow();
            assert!(Rc::ptr_eq(&st.active().file, &file), "the active segment changed during a flush");
            let (end_pos, end_offset) = st.write_end();
            let len = usize::try_from(end_pos - st.tail_start).expect("the tail is in memory");
            let mut buf = h.alloc(crate::disk::align_up(len as u64) as usize);
            let bytes = buf.as_mut();
            bytes[..len].copy_from_slice(&st.tail[..len]);
            bytes[len..].fill(0);
            (buf, len, st.tail_start, end_pos, end_offset)
        };
        let n = file.write_buf(&h, tail_start, buf, len).await.map_err(|e| StorageError::io("write", &log.name, e))?;
        // A direct-I/O write that runs out of space part way reports the bytes it wrote.
        if n < len {
            let e = std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {n} of {len} bytes at {tail_start} (disk full?)"),
            );
            return Err(StorageError::io("write", &log.name, e));
        }
        log.written.advance(end_offset);
        let t = std::time::Instant::now();
        h.fdatasync().await.map_err(|e| StorageError::io("fdatasync", &log.name, e))?;
        crate::stats::with(|s| {
            s.fsync_us.saturating_record(t.elapsed().as_micros() as u64);
            s.bytes_written += n as u64;
        });
        Ok::<(u64, i64), StorageError>((end_pos, end_offset))
    }
    .await;
    match result {
        Ok((end_pos, end_offset)) => {
            let mut st = log.state.borrow_mut();
            // The bytes this round made final go to the read cache (write-through).
            let (from, to) = ((st.flushed_pos - st.tail_start) as usize, (end_pos - st.tail_start) as usize);
            crate::cache::write_through(file.key(), st.flushed_pos, &st.tail[from..to]);
            st.flushed_pos = end_pos;
            let new_start = align_down(end_pos);
            let drop_bytes = (new_start - st.tail_start) as usize;
            st.tail.drain(..drop_bytes);
            st.tail_start = new_start;
            // A burst leaves a large buffer behind; idle partitions must not keep it.
            if st.tail.capacity() > TAIL_KEEP_CAPACITY && st.tail.len() < TAIL_KEEP_CAPACITY / 4 {
                let keep = st.tail.len().max(8192);
                st.tail.shrink_to(keep);
            }
            drop(st);
            log.durable.advance(end_offset);
            true
        }
        Err(e) => {
            roll_back_to_durable(log, &e);
            false
        }
    }
}

/// Drops every batch after the last durable one (they are in memory only, or written but not
/// synced), fails their waiters and starts a new write generation.
fn roll_back_to_durable(log: &PartitionLog, e: &StorageError) {
    let durable = log.durable.get();
    let mut st = log.state.borrow_mut();
    let lost = st.next_offset - durable;
    let seg = st.active_mut();
    let keep = seg.dense.partition_point(|x| x.base < durable);
    let end = seg.dense.get(keep).map(|x| x.pos).unwrap_or(seg.size);
    seg.dense.truncate(keep);
    seg.size = end;
    seg.next_offset = durable;
    seg.index.offsets.retain(|(_, p)| u64::from(*p) < end);
    let base = seg.base;
    seg.index.times.retain(|(_, r)| base + i64::from(*r) < durable);
    st.next_offset = durable;
    st.flushed_pos = end;
    // A roll point is never durable: it went with the batches.
    st.roll_at = None;
    let tail_len = usize::try_from(end - st.tail_start).expect("the tail is in memory");
    st.tail.truncate(tail_len);
    st.rebuild_producers();
    drop(st);
    log.written.reset(durable);
    log.generation.set(WriteGeneration(log.generation.get().0 + 1));
    log.written.fail_waiters();
    log.durable.fail_waiters();
    tracing::error!(partition = %log.name, error = %e, rolled_back_offsets = lost, "append failed; rolled back to the last durable batch");
}

/// Rolls the active segment when it reached `segment.bytes` or `segment.ms`, or when what is
/// written reached its roll point (the next batch does not fit its index).
async fn maybe_roll(log: &PartitionLog) {
    let cfg = log.config.get();
    let (due, forced, roll_pos, roll_base) = {
        let st = log.state.borrow();
        let a = st.active();
        let flushed = st.flushed_pos;
        let by_size = flushed >= cfg.segment_bytes;
        let by_age = flushed > 0 && now_ms() - a.created_ms >= i64::try_from(cfg.segment_ms).unwrap_or(i64::MAX);
        let forced = st.roll_at == Some(flushed);
        // Roll at the end of what is on disk; batches appended later move to the new segment.
        let base = a.dense.iter().find(|e| e.pos >= flushed).map(|e| e.base).unwrap_or(st.next_offset);
        (by_size || by_age || forced, forced, flushed, base)
    };
    if forced && roll_pos == 0 {
        // Any one batch fits an empty segment (limits.rs): never reached. Do not loop on it.
        debug_assert!(false, "a roll point at the start of a segment");
        tracing::error!(partition = %log.name, "a roll point at the start of a segment; ignored");
        log.state.borrow_mut().roll_at = None;
        return;
    }
    if !due || roll_pos == 0 {
        return;
    }
    let new = match Segment::create(&log.disk, &log.dir, roll_base, now_ms()).await {
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
    let (old_file, index_files) = {
        let mut st = log.state.borrow_mut();
        let old = st.active_mut();
        assert_eq!(old.dense.iter().find(|e| e.pos >= roll_pos).map(|e| e.base).unwrap_or(old.next_offset), roll_base);
        // Batches appended during the roll move to the new segment.
        let moved: Vec<Entry> = old.dense.iter().filter(|e| e.pos >= roll_pos).copied().collect();
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
        // The moved batches are indexed against the new base, up to the next roll point if
        // they do not all fit (a run of batches spanning more offsets than one segment holds).
        let mut roll_at = None;
        for mut e in moved {
            e.pos -= roll_pos;
            if roll_at.is_none() && crate::index::fits(roll_base, e.last, e.pos + u64::from(e.len)).is_err() {
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
        seg.size = unwritten.len() as u64;
        st.roll_at = roll_at;
        st.segments.push(seg);
        st.tail = unwritten;
        st.tail_start = 0;
        st.flushed_pos = 0;
        (old_file, index_files)
    };
    crate::cache::seal(old_file.key());
    // The sealed segment's indexes, fsync'd off the shard's thread (rebuilt at start if lost).
    if let Err(e) = index_files.write(true).await {
        tracing::warn!(partition = %log.name, error = %e, "could not write a sealed segment's index; it will be rebuilt");
    }
    // Cut the sealed file to its logical size (drop the zero padding of the last page).
    if let Err(e) = old_file.truncate(roll_pos).await {
        tracing::warn!(partition = %log.name, error = %e, "could not trim a sealed segment");
    }
    tracing::debug!(partition = %log.name, base = roll_base, "rolled to a new segment");
}
