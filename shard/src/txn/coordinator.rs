//! One shard's transaction coordinator: the transactional ids whose `__transaction_state`
//! partition this shard owns. The decisions are in [`super::state`] (no I/O); this file reads
//! the clock, holds the table, writes the transaction log, sends the markers and runs the
//! timeout sweep.
//!
//! Contract: a state change is appended to the id's `__transaction_state` partition and
//! fdatasync'd before it enters the table, is answered, or is acted on (markers are sent only
//! for a durable Prepare state), with one exception: the Complete state. One operation per id
//! runs at a time (`busy`). EndTxn is answered once its Prepare state is durable, as Kafka
//! answers it; its markers are then written by a task that keeps the id busy until every
//! marker is durable (or the markers failed: the sweep retries), then puts the Complete state
//! in the table unwritten. The next sweep writes it, unless a later change of the id (the
//! producer's next add, most often) was written first and replaced it. So a producer's next
//! transaction does not wait for a Complete write, and its add is the only sync round between
//! the markers and its records. A Complete state lost in a crash leaves the Prepare state in
//! the log: the reload sends its markers again (a partition that has them gets a second,
//! harmless one: it finds no open transaction of the producer) and completes it — what a
//! crash between the markers and the Complete write always did. An add (AddPartitionsToTxn, AddOffsetsToTxn, a version 2 implicit add)
//! finding the id busy — that task, or another add: a version 2 producer's partitions on
//! several brokers are added by each leader at once — queues for it, at most
//! `TXN_ADD_WAIT_MS` in all, and is answered CONCURRENT_TRANSACTIONS only past that (Kafka's
//! broker retries such a produce's add for up to 100 ms, 20 ms apart); InitProducerId, EndTxn
//! and the sweep get CONCURRENT_TRANSACTIONS (or skip the id) at once, which clients retry.
//! Every `RefCell` borrow ends before an `.await`. A Prepare state left by a crash or a failed
//! marker is completed by the sweep.

use super::busy::{Busy, IdLocks};
use super::state::{self, Change, EndInput, EndStep, InitInput, InitStep, TxnMeta, TxnState, Txns};
use super::{
    store, AddRequest, CompleteOffsetsRequest, DescribeRequest, EndRequest, InitRequest, ListRequest,
    StageOffsetsRequest, StageResult, TxnCall, TxnDescription, TxnError, TxnListing, TXN_TOPIC,
};
use crate::groups::store as groups_store;
use crate::groups::OffsetToCommit;
use crate::internal::{append_internal, read_to_hw, Leadership, Refusal};
use crate::shard::Shard;
use futures::future::join_all;
use sluice_core::batch;
use sluice_core::clock::now_ms;
use sluice_core::limits::TXN_ADD_WAIT_MS;
use sluice_core::{LeaderEpoch, TopicPartition};
use sluice_storage::PartitionLog;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

const SWEEP_EVERY: Duration = Duration::from_millis(sluice_core::limits::TXN_SWEEP_INTERVAL_MS);

#[derive(Default)]
pub struct TxnCoordinator {
    txns: RefCell<Txns>,
    /// Ids with an operation in flight (an answered EndTxn's completion included), each with
    /// the adds queued for it (woken when it ends).
    busy: IdLocks,
    /// Records that could not be decoded while loading (reported, never applied).
    pub skipped_records: Cell<u64>,
    /// Offsets TxnOffsetCommit staged, by (group, producer id), for the groups this shard
    /// coordinates: committed or dropped when the transaction ends. Each change is written to
    /// the group's `__consumer_offsets` partition (the whole set, `groups::store`) before it is
    /// answered, and replayed with the groups at start ([`Self::restore_staged`]).
    staged: RefCell<HashMap<(String, i64), Vec<OffsetToCommit>>>,
    /// The replicated `__transaction_state` partitions of this shard this broker leads
    /// (`crate::internal`); single-replica ones are not tracked.
    leadership: RefCell<Leadership>,
    /// Ids whose Complete state is in the table but not yet in the log (module docs): the
    /// sweep writes it unless a later change of the id is written first.
    unwritten: RefCell<BTreeSet<String>>,
}

/// Whether the coordinator of this call's transactional id (or, for staged offsets, of its
/// group) answers here.
fn admitted(shard: &Shard, call: &TxnCall) -> Result<(), Refusal> {
    let id = match call {
        TxnCall::Init(c) => &c.req.transactional_id,
        TxnCall::Add(c) => &c.req.transactional_id,
        TxnCall::Verify(c) => &c.req.transactional_id,
        TxnCall::End(c) => &c.req.transactional_id,
        TxnCall::StageOffsets(c) => return shard.groups.admits(shard, &c.req.group_id),
        TxnCall::CompleteOffsets(c) => return shard.groups.admits(shard, &c.req.group_id),
        TxnCall::PendingOffsets(c) => return shard.groups.admits(shard, &c.req.group_id),
        TxnCall::Describe(_) | TxnCall::List(_) => return Ok(()),
    };
    let tp = TopicPartition::new(TXN_TOPIC, super::txn_partition(id, txn_partitions(shard)));
    crate::internal::check(shard, &tp, &shard.txns.leadership.borrow())
}

fn txn_partitions(shard: &Shard) -> usize {
    shard.metadata().topics.get(TXN_TOPIC).map_or(0, |t| t.shards.len())
}

/// Answers a refused call with the refusal.
fn refuse(call: TxnCall, why: Refusal) {
    let e = TxnError::from(why);
    match call {
        TxnCall::Init(c) => drop(c.reply.send(Err(e))),
        TxnCall::Add(c) => drop(c.reply.send(Err(e))),
        TxnCall::Verify(c) => drop(c.reply.send(Err(e))),
        TxnCall::End(c) => drop(c.reply.send(Err(e))),
        TxnCall::StageOffsets(c) => drop(c.reply.send(Err(e))),
        TxnCall::CompleteOffsets(c) => drop(c.reply.send(Err(e))),
        TxnCall::PendingOffsets(c) => drop(c.reply.send(Err(e))),
        TxnCall::Describe(_) | TxnCall::List(_) => {}
    }
}

impl TxnCoordinator {
    fn claim(&self, id: &str) -> Result<Busy, TxnError> {
        self.busy.claim(id)
    }

    /// Claims the id for an add, queuing behind the operation in flight on it (an answered
    /// EndTxn's completion, another add) for at most `TXN_ADD_WAIT_MS` in all (module docs).
    async fn claim_for_add(&self, id: &str) -> Result<Busy, TxnError> {
        let started = Instant::now();
        match self.busy.claim_within(id, Duration::from_millis(TXN_ADD_WAIT_MS)).await {
            Ok((busy, waits)) => {
                if waits > 0 {
                    tracing::debug!(transactional_id = %id, waits, waited_us = micros(started), "add queued for the id's operation in flight");
                }
                Ok(busy)
            }
            Err(e) => {
                tracing::debug!(transactional_id = %id, waited_us = micros(started), "add still finds the id busy: CONCURRENT_TRANSACTIONS");
                Err(e)
            }
        }
    }

    pub async fn handle(&self, shard: &Rc<Shard>, call: TxnCall) {
        if let Err(why) = admitted(shard, &call) {
            return refuse(call, why);
        }
        match call {
            TxnCall::Init(c) => drop(c.reply.send(self.init(shard, c.req).await)),
            TxnCall::Add(c) => drop(c.reply.send(self.add(shard, c.req).await)),
            TxnCall::Verify(c) => drop(c.reply.send(self.verify(&c.req))),
            TxnCall::End(c) => drop(c.reply.send(self.end(shard, c.req).await)),
            TxnCall::Describe(c) => drop(c.reply.send(self.describe(c.req))),
            TxnCall::List(c) => drop(c.reply.send(self.list(&c.req))),
            TxnCall::StageOffsets(c) => drop(c.reply.send(self.stage_offsets(shard, c.req).await)),
            TxnCall::CompleteOffsets(c) => drop(c.reply.send(self.complete_offsets(shard, c.req).await)),
            TxnCall::PendingOffsets(c) => {
                let pending = self.pending_offsets(&c.req.group_id);
                tracing::debug!(group = %c.req.group_id, partitions = pending.len(), staged = self.staged.borrow().len(), "pending transactional offsets asked");
                drop(c.reply.send(Ok(pending)))
            }
        }
    }

    /// The partitions of `group` with offsets staged by an open transaction (any producer).
    pub fn pending_offsets(&self, group: &str) -> Vec<(String, i32)> {
        let staged = self.staged.borrow();
        let mut out: Vec<(String, i32)> = staged
            .iter()
            .filter(|((g, _), _)| g == group)
            .flat_map(|(_, list)| list.iter().map(|o| (o.topic.clone(), o.partition)))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// TxnOffsetCommit on the group's coordinator: offsets of existing partitions are staged
    /// (a later one for the same partition replaces the earlier), and the producer's whole
    /// staged set for the group is durable in `__consumer_offsets` before the answer.
    async fn stage_offsets(&self, shard: &Shard, req: StageOffsetsRequest) -> StageResult {
        if let Err(e) = shard.groups.check_txn_commit(&req.member) {
            tracing::debug!(group = %req.group_id, producer_id = req.producer_id, member = %req.member.member_id,
                generation = req.member.generation_id, error = %e, "transactional offsets refused: not the group's current member");
            return Ok(vec![Err(e); req.offsets.len()]);
        }
        let meta = shard.metadata();
        let mut results = Vec::with_capacity(req.offsets.len());
        let value = {
            let mut staged = self.staged.borrow_mut();
            let list = staged.entry((req.group_id.clone(), req.producer_id)).or_default();
            for o in req.offsets {
                if meta.partition(&o.topic, sluice_core::PartitionId(o.partition), -1).is_none() {
                    results.push(Err(crate::groups::GroupError::UnknownTopicOrPartition));
                    continue;
                }
                list.retain(|x| !(x.topic == o.topic && x.partition == o.partition));
                list.push(o);
                results.push(Ok(()));
            }
            groups_store::txn_offsets_value(list)
        };
        tracing::debug!(group = %req.group_id, producer_id = req.producer_id, "transactional offsets staged");
        let key = groups_store::txn_offsets_key(&req.group_id, req.producer_id);
        crate::groups::coordinator::write(shard, &req.group_id, vec![(key, value)])
            .await
            .map_err(|e| TxnError::Storage(e.to_string()))?;
        Ok(results)
    }

    /// The transaction's end reached the group: its staged offsets are committed (with the
    /// pending record's tombstone in the same batch) or dropped (the tombstone alone).
    /// Idempotent: a repeated end finds nothing staged.
    async fn complete_offsets(&self, shard: &Rc<Shard>, req: CompleteOffsetsRequest) -> Result<(), TxnError> {
        let key = (req.group_id.clone(), req.producer_id);
        let Some(offsets) = self.staged.borrow().get(&key).cloned() else { return Ok(()) };
        let tombstone = vec![(groups_store::txn_offsets_key(&req.group_id, req.producer_id), Vec::new())];
        let written = if req.commit {
            shard.groups.commit_unchecked(shard, &req.group_id, offsets, tombstone).await
        } else {
            crate::groups::coordinator::write(shard, &req.group_id, tombstone).await
        };
        written.map_err(|e| TxnError::Storage(e.to_string()))?;
        self.staged.borrow_mut().remove(&key);
        Ok(())
    }

    /// Installs the pending transactional offsets replayed from a `__consumer_offsets`
    /// partition (in log order: a later record of the same group and producer replaces the
    /// earlier, an ended one removes it).
    pub fn restore_staged(&self, replayed: Vec<crate::groups::PendingTxnOffsets>) {
        let mut staged = self.staged.borrow_mut();
        for (group, producer_id, value) in replayed {
            match value {
                Some(list) => staged.insert((group, producer_id), list),
                None => staged.remove(&(group, producer_id)),
            };
        }
        if !staged.is_empty() {
            tracing::debug!(pending = staged.len(), "pending transactional offsets restored");
        }
    }

    async fn init(&self, shard: &Rc<Shard>, req: InitRequest) -> Result<(i64, i16), TxnError> {
        if !store::storable(&req.transactional_id) {
            return Err(TxnError::InvalidRequest("transactional id too long".into()));
        }
        let _busy = self.claim(&req.transactional_id)?;
        // At most two rounds: an open transaction is aborted (fencing its producer), then the
        // epoch is bumped once more for the new producer.
        for _ in 0..2 {
            let fresh_id = self.needs_fresh_id(&req.transactional_id);
            let new_producer_id = if fresh_id {
                crate::admin::allocate_producer_id(shard).await.map_err(|e| TxnError::Storage(e.to_string()))?
            } else {
                -1
            };
            let input = InitInput {
                transactional_id: &req.transactional_id,
                timeout_ms: req.timeout_ms,
                given: req.given,
                new_producer_id,
                now_ms: now_ms(),
                max_timeout_ms: i32::try_from(shard.config.transaction_max_timeout_ms).unwrap_or(i32::MAX),
            };
            let step = state::init(&self.txns.borrow(), &input)?;
            match step {
                InitStep::Write(c) => {
                    let answer = (c.meta.producer_id, c.meta.producer_epoch);
                    assert!(answer.0 >= 0, "a transactional producer always gets an id");
                    self.persist(shard, c).await?;
                    tracing::info!(transactional_id = %req.transactional_id, producer_id = answer.0, epoch = answer.1, "transactional producer initialised");
                    return Ok(answer);
                }
                InitStep::AbortFirst(c) => {
                    tracing::info!(transactional_id = %req.transactional_id, "a new producer instance aborts the open transaction and fences the old one");
                    self.persist(shard, c.clone()).await?;
                    self.complete(shard, c).await?;
                }
            }
        }
        Err(TxnError::ConcurrentTransactions)
    }

    /// Whether InitProducerId needs a new producer id (unknown id, or epoch exhausted).
    fn needs_fresh_id(&self, id: &str) -> bool {
        self.txns.borrow().get(id).is_none_or(|m| state::epoch_exhausted(m.producer_epoch))
    }

    async fn add(&self, shard: &Rc<Shard>, req: AddRequest) -> Result<(), TxnError> {
        if req.partitions.iter().any(|(t, _)| !store::storable(t))
            || req.group.as_deref().is_some_and(|g| !store::storable(g))
        {
            return Err(TxnError::InvalidRequest("name too long".into()));
        }
        let _busy = self.claim_for_add(&req.transactional_id).await?;
        let started = Instant::now();
        let change = state::add(
            &self.txns.borrow(),
            &req.transactional_id,
            req.producer_id,
            req.epoch,
            &req.partitions,
            req.group.as_deref(),
            req.tv2,
            now_ms(),
        )?;
        if let Some(c) = change {
            self.persist(shard, c).await?;
            tracing::debug!(transactional_id = %req.transactional_id, persist_us = micros(started), "partitions added to the transaction");
        }
        Ok(())
    }

    /// The verify-only path: answered from the table, no claim (Kafka checks no pending
    /// state either: the append on the partition is the final check).
    fn verify(&self, req: &super::VerifyRequest) -> Result<Vec<bool>, TxnError> {
        let r = state::verify(&self.txns.borrow(), &req.transactional_id, req.producer_id, req.epoch, &req.partitions);
        if let Err(e) = &r {
            tracing::debug!(transactional_id = %req.transactional_id, error = %e, "partition verification refused");
        }
        r
    }

    /// EndTxn: answered once the Prepare state is durable (its markers and Complete state are
    /// written afterwards, [`Self::complete_later`]), with the producer id and epoch the
    /// producer goes on with (bumped by a version 2 end, a new id when its epoch was
    /// exhausted).
    async fn end(&self, shard: &Rc<Shard>, req: EndRequest) -> Result<(i64, i16), TxnError> {
        let id = &req.transactional_id;
        let busy = self.claim(id)?;
        let new_producer_id = if state::end_needs_fresh_id(&self.txns.borrow(), id, req.tv2) {
            crate::admin::allocate_producer_id(shard).await.map_err(|e| TxnError::Storage(e.to_string()))?
        } else {
            -1
        };
        let input = EndInput {
            producer_id: req.producer_id,
            epoch: req.epoch,
            commit: req.commit,
            tv2: req.tv2,
            new_producer_id,
            now_ms: now_ms(),
        };
        let step = state::end(&self.txns.borrow(), id, &input)?;
        let EndStep::Prepare(c) = step else {
            let next = self.txns.borrow().get(id).map(|m| (m.producer_id, m.producer_epoch));
            return next.ok_or(TxnError::InvalidProducerIdMapping);
        };
        if c.meta.producer_epoch != req.epoch {
            tracing::debug!(transactional_id = %id, producer_id = c.meta.producer_id, epoch = c.meta.producer_epoch, next_producer_id = c.meta.next_producer_id, "transaction version 2 end: the producer epoch is bumped");
        }
        let started = Instant::now();
        self.persist(shard, c.clone()).await?;
        tracing::debug!(transactional_id = %id, prepare_us = micros(started), "EndTxn answered: the Prepare state is durable");
        let answer = state::next_producer(&c.meta);
        self.complete_later(shard, busy, c);
        Ok(answer)
    }

    /// Writes the markers and the Complete state of an answered EndTxn's durable Prepare state
    /// in a task of its own, which keeps the id busy (`busy`, handed over by the EndTxn) until
    /// it is done, then wakes the adds queued meanwhile. A failure leaves the Prepare state to
    /// the sweep.
    fn complete_later(&self, shard: &Rc<Shard>, busy: Busy, prepared: Change) {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let _busy = busy;
            if let Err(e) = shard.txns.complete(&shard, prepared.clone()).await {
                tracing::warn!(transactional_id = %prepared.transactional_id, error = %e, "could not complete an answered transaction end; the sweep retries");
            }
        })
        .detach();
    }

    /// Sends the markers of a durable Prepare state, then makes its Complete state durable.
    async fn complete(&self, shard: &Rc<Shard>, prepared: Change) -> Result<(), TxnError> {
        let commit = prepared.meta.state == TxnState::PrepareCommit;
        let coordinator_epoch = coordinator_epoch(shard, &prepared.transactional_id);
        fault::delay_markers().await;
        let started = Instant::now();
        super::markers::deliver(shard, &prepared.meta, commit, coordinator_epoch).await?;
        let markers_us = micros(started);
        let done = Change {
            transactional_id: prepared.transactional_id.clone(),
            meta: state::complete(&prepared.meta, now_ms()),
        };
        state::install(&mut self.txns.borrow_mut(), done, false);
        self.unwritten.borrow_mut().insert(prepared.transactional_id.clone());
        tracing::debug!(
            transactional_id = %prepared.transactional_id,
            commit,
            partitions = prepared.meta.partitions.len(),
            markers_us,
            "transaction completed (its Complete state is written by the sweep unless a later change comes first)"
        );
        Ok(())
    }

    /// Writes the Complete states installed since the last sweep that no later change of
    /// their id replaced, all at once (their appends share the partitions' sync rounds). An
    /// id busy now is left for the next sweep; a write that fails leaves the Prepare state
    /// in the log, whose markers a reload sends again (a second marker is harmless).
    async fn write_completions(&self, shard: &Rc<Shard>) {
        if fault::hold_completions(self.unwritten.borrow().len()) {
            return;
        }
        let ids = std::mem::take(&mut *self.unwritten.borrow_mut());
        let mut writes = Vec::new();
        for id in ids {
            let Ok(busy) = self.claim(&id) else {
                self.unwritten.borrow_mut().insert(id);
                continue;
            };
            let Some(meta) = self.get(&id).filter(|m| m.state.is_complete()) else { continue };
            writes.push(async move {
                let _busy = busy;
                if let Err(e) = self.persist(shard, Change { transactional_id: id.clone(), meta }).await {
                    tracing::debug!(transactional_id = %id, error = %e, "could not write a Complete state; a reload sends its markers again");
                }
            });
        }
        join_all(writes).await;
    }

    /// Makes a change durable, then installs it (it replaces an unwritten Complete state).
    async fn persist(&self, shard: &Shard, c: Change) -> Result<(), TxnError> {
        let records = vec![(store::key(&c.transactional_id), store::value(&c.meta))];
        write(shard, &c.transactional_id, records).await?;
        self.unwritten.borrow_mut().remove(&c.transactional_id);
        state::install(&mut self.txns.borrow_mut(), c, false);
        Ok(())
    }

    fn describe(&self, req: DescribeRequest) -> Vec<TxnDescription> {
        let txns = self.txns.borrow();
        req.ids
            .into_iter()
            .map(|id| {
                let result = txns.get(&id).cloned().ok_or(TxnError::TransactionalIdNotFound);
                TxnDescription { transactional_id: id, result }
            })
            .collect()
    }

    fn list(&self, req: &ListRequest) -> Vec<TxnListing> {
        let now = now_ms();
        self.txns
            .borrow()
            .iter()
            .filter(|(_, m)| req.states.is_empty() || req.states.iter().any(|s| s == m.state.name()))
            .filter(|(_, m)| req.producer_ids.is_empty() || req.producer_ids.contains(&m.producer_id))
            .filter(|(_, m)| {
                req.duration_filter_ms < 0
                    || (m.state == TxnState::Ongoing && now.saturating_sub(m.start_ms) > req.duration_filter_ms)
            })
            .map(|(id, m)| (id.clone(), m.producer_id, m.state.name()))
            .collect()
    }

    /// Transactions this shard coordinates (for metrics and tests).
    pub fn count(&self) -> usize {
        self.txns.borrow().len()
    }

    /// A copy of one id's state.
    pub fn get(&self, id: &str) -> Option<TxnMeta> {
        self.txns.borrow().get(id).cloned()
    }

    /// Replays one `__transaction_state` partition into memory (when the shard opens it, or
    /// when this broker is elected its leader). `current` is asked before each chunk: false
    /// stops the replay (a newer load replaced this one).
    pub async fn load(
        &self,
        log: &PartitionLog,
        current: impl Fn() -> bool,
    ) -> Result<(), sluice_storage::StorageError> {
        let mut applied = 0u64;
        read_to_hw(log, |chunk| {
            if !current() {
                return false;
            }
            applied += self.replay(chunk);
            true
        })
        .await?;
        tracing::debug!(partition = log.name(), records = applied, "transaction coordinator state loaded");
        Ok(())
    }

    /// Applies whole batches of transaction-log records; returns how many applied.
    fn replay(&self, chunk: &[u8]) -> u64 {
        let mut applied = 0u64;
        let mut pos = 0;
        while pos < chunk.len() {
            let Ok(h) = batch::BatchHeader::parse(&chunk[pos..]) else { break };
            let bytes = &chunk[pos..(pos + h.total_len()).min(chunk.len())];
            match batch::records(bytes) {
                Ok(recs) => {
                    for r in recs {
                        match r.key.and_then(|k| store::decode(k, r.value.unwrap_or(&[]))) {
                            Some((id, Some(meta))) => {
                                state::install(
                                    &mut self.txns.borrow_mut(),
                                    Change { transactional_id: id, meta },
                                    true,
                                );
                                applied += 1;
                            }
                            Some((id, None)) => {
                                self.txns.borrow_mut().remove(&id);
                                applied += 1;
                            }
                            None => self.skipped_records.set(self.skipped_records.get() + 1),
                        }
                    }
                }
                Err(_) => self.skipped_records.set(self.skipped_records.get() + 1),
            }
            pos += h.total_len();
        }
        applied
    }

    /// This broker was elected leader of transaction-log partition `p` at `epoch`: true when
    /// its load starts (any state left from an earlier leadership is dropped first).
    pub(crate) fn elected(&self, shard: &Shard, p: i32, epoch: LeaderEpoch) -> bool {
        let start = self.leadership.borrow_mut().elected(p, epoch);
        if start {
            self.unload(shard, p);
        }
        start
    }

    /// Loads partition `p` as its leader at `epoch`: true when it is now coordinated here,
    /// false when the leadership moved meanwhile (the loss or the newer election dropped the
    /// state, and this load applied nothing after that: it checks before every chunk).
    pub(crate) async fn load_led(
        &self,
        log: &PartitionLog,
        p: i32,
        epoch: LeaderEpoch,
    ) -> Result<bool, sluice_storage::StorageError> {
        self.load(log, || self.leadership.borrow().loading(p, epoch)).await?;
        Ok(self.leadership.borrow_mut().loaded(p, epoch))
    }

    /// Another broker leads transaction-log partition `p`: true when this shard dropped its
    /// state.
    pub(crate) fn lost(&self, shard: &Shard, p: i32) -> bool {
        let had = self.leadership.borrow_mut().lost(p);
        if had {
            self.unload(shard, p);
        }
        had
    }

    /// Drops the transactional ids of partition `p` (an operation in flight on one fails at
    /// its next write: this broker no longer leads the partition).
    fn unload(&self, shard: &Shard, p: i32) {
        let partitions = txn_partitions(shard);
        self.txns.borrow_mut().retain(|id, _| super::txn_partition(id, partitions) != p);
        self.unwritten.borrow_mut().retain(|id| super::txn_partition(id, partitions) != p);
    }

    /// Drops the offsets staged for the groups `of` picks (their partition left this shard's
    /// group coordinator).
    pub(crate) fn drop_staged(&self, of: impl Fn(&str) -> bool) {
        self.staged.borrow_mut().retain(|(g, _), _| !of(g));
    }

    /// Aborts timed-out transactions, completes Prepare states left unfinished, and removes
    /// ids idle past `transactional_id_expiration_ms`. Ids busy with a request are skipped.
    async fn sweep(&self, shard: &Rc<Shard>) {
        self.write_completions(shard).await;
        let now = now_ms();
        let due = state::timed_out(&self.txns.borrow(), now);
        for c in due {
            let Ok(_busy) = self.claim(&c.transactional_id) else { continue };
            // Re-check under the claim: the producer may have ended it meanwhile.
            if !state::timed_out(&self.txns.borrow(), now).iter().any(|d| d.transactional_id == c.transactional_id) {
                continue;
            }
            tracing::info!(transactional_id = %c.transactional_id, producer_id = c.meta.producer_id, "transaction timed out: aborting it and fencing its producer");
            if let Err(e) = self.persist(shard, c.clone()).await {
                tracing::warn!(transactional_id = %c.transactional_id, error = %e, "could not abort a timed-out transaction");
                continue;
            }
            if let Err(e) = self.complete(shard, c.clone()).await {
                tracing::warn!(transactional_id = %c.transactional_id, error = %e, "could not complete an abort; retried");
            }
        }
        let pending = state::pending_completion(&self.txns.borrow());
        for c in pending {
            let Ok(_busy) = self.claim(&c.transactional_id) else { continue };
            tracing::info!(transactional_id = %c.transactional_id, state = c.meta.state.name(), "completing an unfinished transaction");
            if let Err(e) = self.complete(shard, c.clone()).await {
                tracing::warn!(transactional_id = %c.transactional_id, error = %e, "could not complete a transaction; retried");
            }
        }
        let expiration = i64::try_from(shard.config.transactional_id_expiration_ms).unwrap_or(i64::MAX);
        let expired = state::expired(&self.txns.borrow(), now, expiration);
        for id in expired {
            let Ok(_busy) = self.claim(&id) else { continue };
            if let Err(e) = write(shard, &id, vec![(store::key(&id), Vec::new())]).await {
                tracing::warn!(transactional_id = %id, error = %e, "could not expire a transactional id");
                continue;
            }
            tracing::debug!(transactional_id = %id, "transactional id expired");
            self.txns.borrow_mut().remove(&id);
            self.unwritten.borrow_mut().remove(&id);
        }
    }
}

/// The leader epoch of the id's transaction-log partition (Kafka's coordinator epoch, written
/// in each marker); 0 for a lone broker.
fn coordinator_epoch(shard: &Shard, transactional_id: &str) -> i32 {
    let tp = TopicPartition::new(TXN_TOPIC, super::txn_partition(transactional_id, txn_partitions(shard)));
    let me = shard.replicas().map_or(0, |r| r.node().0);
    shard.metadata().partition(&tp.topic, tp.partition, me).map_or(0, |s| s.leader_epoch.max(0))
}

/// Microseconds since `t` (for the debug timings of a transaction's path).
fn micros(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Test-only fault hooks (cargo feature `fault-injection`, as `crate::metrics::fault`), read
/// once per shard: `SLUICE_FAULT_TXN_MARKER_DELAY_MS=<ms>` delays every completion's markers by
/// that long, so tests can act between a durable Prepare state and its markers;
/// `SLUICE_FAULT_TXN_HOLD_COMPLETE=1` keeps the sweep from writing Complete states, so tests
/// can act between the markers and the Complete write.
mod fault {
    #[cfg(feature = "fault-injection")]
    thread_local!(static DELAY_MS: u64 = std::env::var("SLUICE_FAULT_TXN_MARKER_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0));
    #[cfg(feature = "fault-injection")]
    thread_local!(static HOLD: bool = std::env::var("SLUICE_FAULT_TXN_HOLD_COMPLETE").is_ok_and(|v| v == "1"));

    /// Whether the sweep leaves the `unwritten` Complete states unwritten (false without the
    /// feature or the variable).
    pub(super) fn hold_completions(unwritten: usize) -> bool {
        #[cfg(feature = "fault-injection")]
        if HOLD.with(|h| *h) {
            if unwritten > 0 {
                tracing::warn!(unwritten, "fault injection: Complete states held back");
            }
            return true;
        }
        let _ = unwritten;
        false
    }

    /// Sleeps the configured delay (nothing without the feature or the variable).
    pub(super) async fn delay_markers() {
        #[cfg(feature = "fault-injection")]
        {
            let ms = DELAY_MS.with(|d| *d);
            if ms > 0 {
                tracing::warn!(delay_ms = ms, "fault injection: transaction markers delayed");
                glommio::timer::sleep(std::time::Duration::from_millis(ms)).await;
            }
        }
    }
}

/// Appends records to the id's transaction-log partition and waits until they are durable.
async fn write(shard: &Shard, transactional_id: &str, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), TxnError> {
    let partition = |partitions| super::txn_partition(transactional_id, partitions);
    Ok(append_internal(shard, TXN_TOPIC, partition, &records).await?)
}

/// Runs the coordinator's periodic sweep until the shard stops.
pub fn spawn_sweeper(shard: Rc<Shard>) {
    glommio::spawn_local(async move {
        while !shard.is_stopping() {
            glommio::timer::sleep(SWEEP_EVERY).await;
            shard.txns.sweep(&shard).await;
        }
    })
    .detach();
}
