//! Moving a [`PartitionLog`]'s start and end: DeleteRecords (`delete_records_before`),
//! retention (`enforce_retention`) and `truncate_to` (for replication and recovery).
//!
//! Contract: the log start offset is made durable (`log-start-offset`) before anything in
//! memory moves past it; retention deletes whole sealed segments, never the active one;
//! `truncate_to` rolls the log back to an offset and starts a new write generation, so no
//! wait for a truncated append can be satisfied by a later batch at the same offsets.

use super::read::read_exact;
use super::*;
use sluice_core::batch::LOG_OVERHEAD;

impl PartitionLog {
    /// DeleteRecords: makes every offset below `to` unreadable by moving the log start
    /// offset forward (durably, in `log-start-offset`). `to` may be at most the high
    /// watermark. Returns the new log start offset.
    pub async fn delete_records_before(&self, to: Offset) -> Result<Offset, StorageError> {
        let hwm = self.durable.get();
        let start = self.state.borrow().log_start;
        if to.0 < 0 || to.0 > hwm {
            return Err(StorageError::OffsetOutOfRange { requested: to.0, start, end: hwm });
        }
        if to.0 <= start {
            return Ok(Offset(start));
        }
        self.persist_log_start(to.0).await?;
        let mut st = self.state.borrow_mut();
        st.log_start = st.log_start.max(to.0);
        Ok(Offset(st.log_start))
    }

    /// How long a deleted segment's file waits before it is freed (`file.delete.delay.ms`).
    pub(super) fn delete_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.get().file_delete_delay_ms)
    }

    async fn persist_log_start(&self, value: i64) -> Result<(), StorageError> {
        self.write_offset_file(LOG_START_FILE, value).await
    }

    /// Replaces the small file `name` of the partition's directory with `value`, durably
    /// (temporary file, fsync, rename, directory fsync).
    pub(super) async fn write_offset_file(&self, name: &str, value: i64) -> Result<(), StorageError> {
        let path = self.dir.join(name);
        self.disk
            .write_file_off_thread(&path, format!("{value}\n").into_bytes(), true)
            .await
            .map_err(|e| StorageError::io("write", path.display(), e))
    }

    /// Deletes sealed segments that retention (`retention.ms` against each segment's newest
    /// timestamp, `retention.bytes` against the log's size) or DeleteRecords no longer keep.
    /// Returns the number of segments deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let cfg = self.config.get();
        // Decide first; change nothing until the new log start is durable, so that the log
        // start in memory (which DeleteRecords answers from) is never ahead of the disk.
        let (keep_base, new_start) = {
            let st = self.state.borrow();
            let mut total: i64 = st.segments.iter().map(|s| s.size as i64).sum();
            let mut n = 0;
            while n + 1 < st.segments.len() {
                let s = &st.segments[n];
                let by_time = cfg.retention_ms >= 0 && s.max_ts >= 0 && s.max_ts < now_ms - cfg.retention_ms;
                let by_size = cfg.retention_bytes >= 0 && total - s.size as i64 >= cfg.retention_bytes;
                let below_start = s.next_offset <= st.log_start;
                if !(by_time || by_size || below_start) {
                    break;
                }
                total -= s.size as i64;
                n += 1;
            }
            if n == 0 {
                return Ok(0);
            }
            let keep_base = st.segments[n].base;
            (keep_base, st.log_start.max(keep_base))
        };
        self.persist_log_start(new_start).await?;
        let removed: Vec<Segment> = {
            let mut st = self.state.borrow_mut();
            // Only segments wholly below the kept one go, and never the active one.
            let n = st.segments.partition_point(|s| s.base < keep_base).min(st.segments.len() - 1);
            st.log_start = st.log_start.max(new_start);
            st.segments.drain(..n).collect()
        };
        let delay = self.delete_delay();
        for s in &removed {
            tracing::info!(partition = %self.name, segment = s.base, bytes = s.size, "retention deleted a segment");
            s.retire(delay).await;
        }
        Ok(removed.len())
    }

    /// Removes every batch at or after `offset`, which must be a batch boundary at or below
    /// the high watermark, with no write in flight. Kept for replication (leader change).
    pub async fn truncate_to(&self, offset: Offset) -> Result<(), StorageError> {
        let Some((seg_base, pos)) = self.batch_position(offset.0).await? else { return Ok(()) };
        let (drop_segments, active_file) = self.cut_state(offset.0, seg_base, pos);
        let delay = self.delete_delay();
        for s in &drop_segments {
            s.retire(delay).await;
        }
        crate::cache::invalidate(active_file.key());
        active_file.truncate(pos).await.map_err(|e| StorageError::io("truncate", &self.name, e))?;
        active_file.fdatasync().await.map_err(|e| StorageError::io("fdatasync", &self.name, e))?;
        let tail_start = align_down(pos);
        let tail = if tail_start < pos {
            let len = usize::try_from(pos - tail_start).expect("less than a page");
            read_exact(&active_file, &self.name, tail_start, len).await?.to_vec()
        } else {
            Vec::new()
        };
        {
            let mut st = self.state.borrow_mut();
            st.tail_start = tail_start;
            st.tail = tail;
        }
        self.written.reset(offset.0);
        self.durable.reset(offset.0);
        // Offsets appended again after the cut are dirty.
        if offset.0 < self.first_dirty.get() {
            self.first_dirty.set(offset.0);
            self.write_offset_file(CLEANER_CHECKPOINT_FILE, offset.0).await?;
        }
        Ok(())
    }

    /// The base of the segment holding the batch that starts at `offset`, and that batch's
    /// position in it; `None` when `offset` is the log's end (nothing to remove).
    async fn batch_position(&self, offset: i64) -> Result<Option<(i64, u64)>, StorageError> {
        let (file, seg_base, from_pos, seg_end) = {
            let st = self.state.borrow();
            assert!(st.next_offset == self.durable.get(), "truncate_to with appends in flight");
            assert!(offset <= st.next_offset, "truncate beyond the end");
            let i = st.segment_for(offset);
            let s = &st.segments[i];
            (s.file.clone(), s.base, s.index.position_for_offset(s.base, offset), s.size)
        };
        if offset == self.log_end().0 {
            return Ok(None);
        }
        let len = usize::try_from(seg_end - from_pos).expect("a segment's tail fits memory");
        let data = read_exact(&file, &self.name, from_pos, len).await?;
        let mut p = 0usize;
        while p + LOG_OVERHEAD <= data.len() {
            let h = BatchHeader::parse(&data[p..]).map_err(StorageError::InvalidBatch)?;
            if h.base_offset == offset {
                return Ok(Some((seg_base, from_pos + p as u64)));
            }
            assert!(h.base_offset < offset, "truncate_to must cut at a batch boundary");
            p += h.total_len();
        }
        panic!("truncate_to must cut at a batch boundary");
    }

    /// Cuts the state at `offset`, at position `pos` of the segment based at `seg_base`: the
    /// later segments are dropped (returned, with the file of the segment active now), the
    /// batches, index entries and producer state from `offset` on are forgotten, and a new
    /// write generation starts.
    fn cut_state(&self, offset: i64, seg_base: i64, pos: u64) -> (Vec<Segment>, Rc<SegFile>) {
        let mut st = self.state.borrow_mut();
        let keep = st.segments.partition_point(|s| s.base <= seg_base);
        let dropped: Vec<Segment> = st.segments.drain(keep..).collect();
        let seg = st.active_mut();
        seg.size = pos;
        seg.next_offset = offset;
        seg.dense.retain(|e| e.base < offset);
        seg.index.offsets.retain(|(_, p)| u64::from(*p) < pos);
        let base = seg.base;
        seg.index.times.retain(|(_, r)| base + i64::from(*r) < offset);
        debug_assert!(st.roll_at.is_none(), "a roll point means appends not yet durable");
        st.roll_at = None;
        st.next_offset = offset;
        st.flushed_pos = pos;
        st.written_pos = pos;
        st.tail.clear();
        st.producers.forget_from(offset);
        // A new generation from the moment the state moves: a roll or a write of the
        // writer that awaits meanwhile sees it and gives up.
        self.generation.set(WriteGeneration(self.generation.get().0 + 1));
        (dropped, st.active().file.clone())
    }
}
