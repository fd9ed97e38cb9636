//! [`ReplicaLog`] over the real [`PartitionLog`]: what a Raft group on a shard stores.
//!
//! Contract:
//! - Appends go to the log at once (`append_replica`: offsets and epoch as stamped, producer
//!   state recorded); the last one's [`AppendInfo`] is kept so the shard's runtime can wait
//!   until it is durable (one sync round of the shard for every group of a Ready round).
//! - Reads raft-rs asks for (entries to send to followers) never wait: every batch of the
//!   window is kept in memory here (`cache`, by base offset) from its append (or, at open,
//!   read back before the group starts) until the window trims it. raft-rs therefore never
//!   sees `Unavailable` for an entry in the window. Below the window the batches are read
//!   back from the segments on demand ([`read_catchup`], catch-up: `catchup.rs`). The cache
//!   is bounded by the window: `RAFT_WINDOW_BATCHES` batches and `RAFT_WINDOW_BYTES` (the
//!   store trims the window, never past the applied index, while either is exceeded).
//! - Truncation is the log's synchronous cut (`PartitionLog::cut_at`; the file work follows
//!   in its writer). A reset (snapshot install, sent by a leader only when catch-up cannot
//!   serve: its log start moved) stops the group with [`LogFault::Install`] and the new
//!   state: the runtime restarts the log at the snapshot's offset, durably, and reopens the
//!   group (`replica::install`).
//! - The Raft state handed over by the store is kept as `pending_state` until the runtime
//!   writes it (tmp + fsync + rename + directory fsync) in the same round as the log sync.

use super::catchup::{ReadPlan, ScanError, ScanOutcome, Scanner};
use super::store::{LogFault, PersistedState, ReplicaLog};
use super::types::Term;
use bytes::Bytes;
use sluice_core::batch::BatchHeader;
use sluice_core::{LeaderEpoch, Offset};
use sluice_storage::log::{AppendInfo, PartitionLog};
use sluice_storage::raft_state::RaftStateRecord;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Makes a catch-up read below the window: reads the log from the plan's anchor in chunks of
/// `RAFT_CATCHUP_READ_BYTES` (direct reads of the segments, never past the durable end) and
/// counts batches until the scan has what it wants (`catchup.rs`; a locate scan starts at the
/// batch holding the log start, read below it while its segment is kept).
pub async fn read_catchup(log: &PartitionLog, plan: ReadPlan) -> Result<ScanOutcome, ScanError> {
    let chunk = sluice_core::limits::RAFT_CATCHUP_READ_BYTES;
    let mut scan = Scanner::new(plan, chunk);
    let mut size = chunk;
    while !scan.is_done() {
        let at = scan.next_offset();
        // From the batch boundary (at, rank), wherever the batches at `at` taking no offset
        // lie (`PartitionLog::read_durable_at`); `skip`: those at the read's start the scan
        // was fed already.
        let (r, mut skip) =
            log.read_durable_at(at, scan.skip_at_next(), size).await.map_err(|e| ScanError::Io(e.to_string()))?;
        let got = r.records.len();
        if r.records.is_empty() {
            return Err(scan.end_of_log());
        }
        let mut rest = r.records;
        let mut fed = false;
        while !rest.is_empty() && !scan.is_done() {
            let whole = BatchHeader::parse(&rest).ok().filter(|h| h.total_len() <= rest.len());
            let Some(h) = whole else {
                if fed {
                    break; // a read may end inside a batch: the next one starts at it
                }
                return Err(ScanError::BadBatch(format!("no whole batch at offset {at}")));
            };
            let b = rest.split_to(h.total_len());
            if h.base_offset < at.0 && h.last_offset() < at.0 {
                continue; // the read began at a batch holding an earlier offset
            }
            if !fed && h.base_offset == at.0 && skip > 0 {
                skip -= 1;
                continue;
            }
            scan.feed(b)?;
            fed = true;
        }
        if !fed && got < size {
            return Err(scan.end_of_log());
        }
        // Every batch read was fed before (a run of batches taking no offset longer than the
        // read) or lay before `at`: read more from the same offset.
        size = if fed { chunk } else { size.saturating_mul(2) };
    }
    Ok(scan.finish())
}

/// A partition log as a Raft replica's storage.
pub struct KafkaLog {
    pub log: Rc<PartitionLog>,
    /// The window's batches by (base offset, rank there).
    cache: BTreeMap<(Offset, u32), Bytes>,
    /// Bytes in `cache`.
    cache_bytes: usize,
    last_append: Option<AppendInfo>,
    pending_state: Option<RaftStateRecord>,
}

/// What the runtime must make durable for this log in a sync round.
pub struct SyncWork {
    pub log: Rc<PartitionLog>,
    pub append: Option<AppendInfo>,
    pub state: Option<RaftStateRecord>,
}

impl KafkaLog {
    pub fn new(log: Rc<PartitionLog>) -> KafkaLog {
        KafkaLog { log, cache: BTreeMap::new(), cache_bytes: 0, last_append: None, pending_state: None }
    }

    /// Reads every batch from `from` to the durable end into the cache; returns each batch's
    /// (term, base, last, position) in order, as the window rebuild wants them (hole batches,
    /// which stand for no entry, left out). `from` is the
    /// window's floor: every batch starting there or later is the window's (`window.rs`).
    pub async fn load_from(&mut self, from: Offset) -> Result<Vec<(Term, Offset, Offset, u64)>, LogFault> {
        let mut found = Vec::new();
        let mut at = from;
        // Batches taking no offset already taken at `at` (a read from `at` returns them again).
        let mut seen_at = 0u32;
        loop {
            let r = self.log.read_durable(at, 1 << 20).await.map_err(|e| LogFault::Io(e.to_string()))?;
            let mut rest = r.records;
            let mut took = false;
            let mut skip = seen_at;
            while !rest.is_empty() {
                let h = BatchHeader::parse(&rest).map_err(|e| LogFault::Io(e.to_string()))?;
                let b = rest.split_to(h.total_len());
                if h.base_offset < at.0 || (h.base_offset == at.0 && skip > 0) {
                    skip = skip.saturating_sub(u32::from(h.base_offset == at.0));
                    continue;
                }
                let term = Term::of_stored(LeaderEpoch(h.partition_leader_epoch)).unwrap_or_default();
                let base = Offset(h.base_offset);
                // A hole batch is no entry: the window does not list it (`store.rs`).
                if !(h.is_control() && sluice_core::control::is_hole(&h, &b)) {
                    found.push((term, base, Offset(h.last_offset()), 0));
                }
                self.cache_insert(base, b);
                took = true;
                let next = Offset(h.last_offset() + 1);
                seen_at = if next == at { seen_at + 1 } else { 0 };
                at = next;
            }
            if !took {
                break;
            }
        }
        Ok(found)
    }

    /// Takes what the next sync round must cover for this log.
    pub fn take_sync_work(&mut self) -> SyncWork {
        SyncWork { log: self.log.clone(), append: self.last_append.take(), state: self.pending_state.take() }
    }

    /// The cached batches whose base offset is in `[from, to)`, in order.
    pub fn cached_between(&self, from: Offset, to: Offset) -> Vec<(Offset, Bytes)> {
        self.cache.range((from, 0)..(to, 0)).map(|((o, _), b)| (*o, b.clone())).collect()
    }

    /// Batches no longer in the window leave the cache.
    pub fn forget_below(&mut self, offset: Offset) {
        let keep = self.cache.split_off(&(offset, 0));
        self.cache_bytes -= self.cache.values().map(Bytes::len).sum::<usize>();
        self.cache = keep;
    }

    /// Caches the batch appended (or found) at `base`, after the batches cached there.
    fn cache_insert(&mut self, base: Offset, b: Bytes) {
        let rank = self.cache.range((base, 0)..=(base, u32::MAX)).count();
        let rank = u32::try_from(rank).expect("a window's length fits u32");
        self.cache_bytes += b.len();
        self.cache.insert((base, rank), b);
    }
}

impl ReplicaLog for KafkaLog {
    fn append(&mut self, batch: Bytes) -> Result<u64, LogFault> {
        let info = self.log.append_replica(&batch).map_err(|e| LogFault::Io(e.to_string()))?;
        self.cache_insert(info.base_offset, batch);
        self.last_append = Some(info);
        Ok(0)
    }

    fn truncate_to(&mut self, offset: Offset, rank: u32) -> Result<(), LogFault> {
        self.log.cut_at(offset, rank).map_err(|e| LogFault::Io(e.to_string()))?;
        let cut = self.cache.split_off(&(offset, rank));
        self.cache_bytes -= cut.values().map(Bytes::len).sum::<usize>();
        if self.last_append.is_some_and(|a| a.base_offset > offset || (a.base_offset == offset && !cut.is_empty())) {
            self.last_append = None;
        }
        Ok(())
    }

    fn read(&self, base: Offset, rank: u32) -> Option<Bytes> {
        self.cache.get(&(base, rank)).cloned()
    }

    fn reset_to(&mut self, start: Offset, state: &PersistedState) -> Result<(), LogFault> {
        assert_eq!(state.floor.next_offset, start, "the state's floor is the snapshot's offset");
        Err(LogFault::Install(Box::new(state.to_record())))
    }

    fn save_state(&mut self, state: &PersistedState) {
        self.pending_state = Some(state.to_record());
    }

    fn forget_below(&mut self, offset: Offset) {
        KafkaLog::forget_below(self, offset);
    }

    fn log_start(&self) -> Offset {
        self.log.log_start()
    }

    fn cached_bytes(&self) -> usize {
        self.cache_bytes
    }

    fn clean_wanted(&self) -> Option<Offset> {
        self.log.clean_wanted()
    }

    fn layout(&self) -> u64 {
        self.log.layout()
    }
}
