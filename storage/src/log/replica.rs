//! What a Raft replica needs from a [`PartitionLog`]: appends of batches already stamped (by
//! the leader's Raft append or received by a follower) keeping their offsets and epochs, a
//! synchronous cut of the log's end (Raft's follower truncation, called from raft-rs's Ready
//! handling, which cannot wait), reads up to the durable end (the replica's own view, for the
//! window rebuild at open), and the replicated high watermark.
//!
//! Contract:
//! - [`PartitionLog::append_replica`] appends a valid batch whose base offset is the log end
//!   as it is (offsets and `partitionLeaderEpoch` untouched) and records its producer state,
//!   so a new leader has the idempotent-producer state of every batch in its log.
//! - [`PartitionLog::cut_at`] removes every batch at or after `offset` (a batch boundary in
//!   the active segment, whose per-batch entry is still in memory) at once: offsets, index
//!   entries, producer state, the tail and the `written`/`durable` marks move back, a new
//!   write generation starts and the waiters of `written`/`durable` fail. The file work is
//!   the writer's (`flush.rs`): before its next write it loads the part of the last page the
//!   tail no longer holds and truncates the file at the cut, so stale bytes past the new end
//!   never follow a batch written later. A cut that is not durable yet may be undone by a
//!   crash (the old batches come back): Raft allows that (they were never committed, and the
//!   leader cuts them again), and the replica's saved commit index never covers them. The
//!   log's cut listeners ([`PartitionLog::on_cut`]) are told at once.
//! - [`PartitionLog::set_replicated`] makes readers, `wait_beyond`, ListOffsets and the
//!   high watermark use the commit mark ([`PartitionLog::advance_commit`]: the offset after
//!   Raft's applied index, which is at most the local durable end) instead of the durable end.
//!   A log with one replica never calls it: its high watermark stays the durable end.
//! - [`PartitionLog::reset_empty_at`] restarts the log empty at an offset (a Raft snapshot
//!   installed on a replica the leader's log start passed, as Kafka's follower truncates
//!   fully and starts at the leader's log start): the old segments' files are removed, a new
//!   active segment is created at the offset and the log start made durable there, then the
//!   state in memory moves at once (new write generation, every waiter failed, producer state
//!   emptied, the cut listeners told of a cut at offset 0: nothing of the old log is left). It is not
//!   atomic on disk: a crash part-way leaves old segments, or none, or the new one; the
//!   caller makes the install atomic by redoing it at open from its own durable record
//!   (`raft_state::write_install`).

use super::*;

impl PartitionLog {
    /// Appends a batch already stamped with its base offset (the log end) and leader epoch.
    pub fn append_replica(&self, bytes: &[u8]) -> Result<AppendInfo, StorageError> {
        let header = BatchHeader::parse(bytes)?;
        if header.total_len() != bytes.len() {
            return Err(StorageError::InvalidBatch(batch::BatchError::InvalidHeader(
                "length does not match the bytes",
            )));
        }
        let mut st = self.state.borrow_mut();
        if st.closing {
            return Err(StorageError::Closed);
        }
        let base = st.next_offset;
        assert_eq!(header.base_offset, base, "{}: a replicated batch goes at the log end", self.name);
        let pos = st.active().size;
        assert_eq!(pos, st.tail_start + st.tail.len() as u64, "tail out of step with the segment end");
        st.tail.extend_from_slice(bytes);
        Ok(self.commit_append(st, &header, pos))
    }

    /// The idempotent-producer check of `header` against the batches in this log (a leader
    /// checks its own log, appended but uncommitted batches included).
    pub fn check_producer(&self, header: &BatchHeader) -> Result<crate::producers::SeqCheck, StorageError> {
        Ok(self.state.borrow().producers.check(header)?)
    }

    /// Cuts the log at `offset` now (see the module contract), keeping the first `rank`
    /// batches that start there (Raft control batches taking no offset: several batches may
    /// share a base offset); the file follows in the writer.
    pub fn cut_at(&self, offset: Offset, rank: u32) -> Result<(), StorageError> {
        let off = offset.0;
        let mut st = self.state.borrow_mut();
        assert!(off <= st.next_offset, "{}: cut past the log end", self.name);
        let seg = st.active();
        let i = seg.dense.partition_point(|e| e.base < off) + usize::try_from(rank).expect("a rank fits usize");
        if off == st.next_offset && i >= seg.dense.len() {
            return Ok(());
        }
        let unsupported = |why: &str| StorageError::WriteFailed(format!("{}: cut at {off}: {why}", self.name));
        if off < st.active().base || off < st.log_start {
            return Err(unsupported("before the active segment (not supported yet)"));
        }
        let seg = st.active();
        let Some(entry) = seg.dense.get(i).filter(|e| e.base == off).copied() else {
            return Err(unsupported("not a batch boundary known in memory"));
        };
        let run_start = i - usize::try_from(rank).expect("a rank fits usize");
        if rank > 0 && run_start == 0 && seg.dense[0].pos > 0 {
            // The entries before the known ones may hold more batches at `off`: the rank
            // cannot be placed.
            return Err(unsupported("a rank among batches not known in memory"));
        }
        let pos = entry.pos;
        st.cut_active(i, off, pos);
        if st.roll_at.is_some_and(|at| at >= pos) {
            st.roll_at = None;
        }
        if pos >= st.tail_start {
            let keep = usize::try_from(pos - st.tail_start).expect("the tail is in memory");
            st.tail.truncate(keep);
        } else {
            let start = align_down(pos);
            st.tail = vec![0; usize::try_from(pos - start).expect("less than a page")];
            st.tail_start = start;
            st.tail_hole = Some(pos);
        }
        st.written_pos = st.written_pos.min(pos);
        st.flushed_pos = st.flushed_pos.min(pos);
        let bytes = i64::try_from(st.origin + st.flushed_pos).expect("a log's bytes fit i64");
        st.pending_cut = Some(st.pending_cut.map_or(pos, |p| p.min(pos)));
        drop(st);
        crate::cache::invalidate(self.state.borrow().active().file.key());
        self.generation.set(WriteGeneration(self.generation.get().0 + 1));
        self.written.reset(self.written.get().min(off));
        self.durable.reset(self.durable.get().min(off));
        self.written.fail_waiters();
        self.durable.fail_waiters();
        self.durable_bytes.reset(self.durable_bytes.get().min(bytes));
        self.durable_bytes.fail_waiters();
        assert!(!self.replicated.get() || self.commit.get() <= off, "{}: a cut below the committed end", self.name);
        self.notify_cut(offset);
        let _ = self.kick.try_send(());
        Ok(())
    }

    /// Restarts the log empty at `start` (see the module contract). Nothing may be appended
    /// meanwhile (the replica's Raft group is stopped).
    pub async fn reset_empty_at(&self, start: Offset) -> Result<(), StorageError> {
        let snapshot = self.dir.join(crate::producers::SNAPSHOT_FILE);
        if let Err(e) = self.disk.remove_file_off_thread(&snapshot).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(StorageError::io("remove", snapshot.display(), e));
            }
        }
        // Each segment's log file is freed later, once no reader holds it (`crate::reclaim`).
        let old: Vec<_> = self.state.borrow().segments.iter().map(|s| (s.file.clone(), s.path.clone())).collect();
        let delay = self.delete_delay();
        for (file, path) in &old {
            segment::retire_files(file, path, delay).await;
        }
        drop(old);
        let seg = Segment::create(&self.disk, &self.dir, start.0, now_ms()).await?;
        self.write_offset_file(LOG_START_FILE, start.0).await?;
        self.write_offset_file(CLEANER_CHECKPOINT_FILE, start.0).await?;
        {
            let mut st = self.state.borrow_mut();
            st.segments = vec![seg];
            st.next_offset = start.0;
            st.log_start = start.0;
            st.flushed_pos = 0;
            st.written_pos = 0;
            st.origin = 0;
            st.tail_start = 0;
            st.tail.clear();
            st.producers.clear();
            st.roll_at = None;
            st.pending_cut = None;
            st.tail_hole = None;
        }
        self.generation.set(WriteGeneration(self.generation.get().0 + 1));
        for w in [&self.written, &self.durable, &self.commit] {
            w.fail_waiters();
            w.reset(start.0);
        }
        self.durable_bytes.fail_waiters();
        self.durable_bytes.reset(0);
        self.first_dirty.set(start.0);
        if self.clean_limit.get().is_some() {
            self.clean_limit.set(Some(start.0));
        }
        self.clean_wanted.set(0);
        // Every batch is gone: the cut listeners (the transaction index) forget everything,
        // as Kafka's `truncateFullyAndStartAt` empties the producer state and the transaction
        // index; the batches appended from `start` on feed them again.
        self.notify_cut(Offset(0));
        Ok(())
    }

    /// Readers now see only what [`PartitionLog::advance_commit`] allows, starting at `commit`.
    pub fn set_replicated(&self, commit: Offset) {
        assert!(commit.0 <= self.durable.get(), "{}: a commit past the durable end", self.name);
        self.replicated.set(true);
        self.commit.reset(commit.0);
    }

    pub fn is_replicated(&self) -> bool {
        self.replicated.get()
    }

    /// The Raft group's floor is durable with next offset `floor_next`: compaction may clean
    /// below it, leaving gap batches (the field's docs). Never lowered but by a reset.
    pub fn set_clean_limit(&self, floor_next: Offset) {
        let now = self.clean_limit.get().unwrap_or(i64::MIN);
        self.clean_limit.set(Some(now.max(floor_next.0)));
    }

    /// Where the last compaction pass would have cleaned up to (its sealed segments' end) had
    /// the group's persisted floor been there: the group moves its floor that far once it
    /// applied it, so a compacted replicated log is cleaned as soon as a segment is sealed, as
    /// Kafka's is. None once the floor reached it.
    pub fn clean_wanted(&self) -> Option<Offset> {
        let wanted = self.clean_wanted.get();
        let limit = self.clean_limit.get()?;
        (wanted > limit).then_some(Offset(wanted))
    }

    /// Raft applied up to `to` (exclusive): readers and long polls see it.
    pub fn advance_commit(&self, to: Offset) {
        assert!(self.replicated.get(), "{}: a commit on a log that is not replicated", self.name);
        if to.0 > self.commit.get() {
            self.commit.advance(to.0);
        }
    }

    /// The end of the durable log (what a sync round made durable here).
    pub fn durable_end(&self) -> Offset {
        Offset(self.durable.get())
    }

    /// Reads whole batches up to the durable end (the replica's own log, committed or not),
    /// also below the log start while its segment is kept (the window rebuilt at open may
    /// begin below a log start DeleteRecords moved).
    pub async fn read_durable(&self, from: Offset, max_bytes: usize) -> Result<LogRead, StorageError> {
        self.read_below(from, max_bytes, self.durable.get(), true).await
    }

    /// A replica's read from the batch boundary (`from`, `rank`): the `rank`-th batch starting
    /// at `from` (the batches before it there take no offset) and the batches after it, below
    /// the durable end; with the number of batches at `from` at the start of what is returned
    /// that the caller must still pass over. Batches at `from` taking no offset may end the
    /// segment before the one starting at `from` (a roll right after a Raft control batch):
    /// they come first, as they lie in the log; a plain read at `from` starts in the later
    /// segment and misses them (Raft catch-up counts batches: it would number the next batch
    /// as the one it missed, or pass over a batch it was not fed).
    pub async fn read_durable_at(
        &self,
        from: Offset,
        rank: u32,
        max_bytes: usize,
    ) -> Result<(LogRead, u32), StorageError> {
        let mut rank = rank;
        if let Some(tail) = self.zero_width_tail_at(from, max_bytes).await? {
            let lens = crate::compact::batches(&tail).map_err(|e| super::compaction::compact_error(&self.name, e))?;
            let lens: Vec<usize> = lens.iter().map(|(_, b)| b.len()).collect();
            let here = u32::try_from(lens.len()).expect("a read holds fewer than 2^32 batches");
            if rank < here {
                let at: usize = lens[..usize::try_from(rank).expect("fits")].iter().sum();
                let read = LogRead {
                    records: tail.slice(at..),
                    high_watermark: Offset(self.durable.get()),
                    log_start: self.log_start(),
                };
                return Ok((read, 0));
            }
            rank -= here;
        }
        Ok((self.read_durable(from, max_bytes).await?, rank))
    }

    /// The writer's part of a cut: loads the tail's missing bytes and truncates the file at the
    /// cut. A second cut meanwhile leaves its own work pending.
    pub(super) async fn finish_cut(&self) -> Result<(), StorageError> {
        let (file, hole, cut, tail_start) = {
            let st = self.state.borrow();
            (st.active().file.clone(), st.tail_hole, st.pending_cut, st.tail_start)
        };
        let page = match hole {
            Some(h) => {
                let len = usize::try_from(h - tail_start).expect("less than a page");
                Some(super::read::read_exact(&file, &self.name, tail_start, len).await?)
            }
            None => None,
        };
        if let Some(at) = cut {
            file.truncate(at).await.map_err(|e| StorageError::io("truncate", &self.name, e))?;
        }
        let mut st = self.state.borrow_mut();
        if let Some(page) = page {
            if st.tail_hole == hole && st.tail_start == tail_start {
                st.tail[..page.len()].copy_from_slice(&page);
                st.tail_hole = None;
            }
        }
        if st.pending_cut == cut {
            st.pending_cut = None;
        }
        Ok(())
    }
}
