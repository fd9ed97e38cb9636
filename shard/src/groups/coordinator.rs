//! One shard's group coordinator: the groups whose `__consumer_offsets` partition this shard
//! owns, their committed offsets, persistence and the periodic sweep. The decisions are in
//! [`super::table`] (no I/O); this file reads the clock, holds the table and writes records.
//!
//! Contract: every `RefCell` borrow of the group map ends before an `.await`; waiting joins
//! and syncs hold oneshot receivers, not borrows. A commit is answered only after its records
//! are durable in the offsets partition; the in-memory offsets change after that, so a fetch
//! never returns an offset a crash could lose.

use super::group::{Limits, Step};
use super::store;
use super::table::{self, Groups, Records};
use super::{
    GroupAnswer, GroupDescription, GroupError, GroupListing, GroupOp, JoinRequest, JoinResponse, MemberRef, OffsetList,
    OffsetToCommit, SyncRequest, SyncResponse, OFFSETS_TOPIC,
};
use crate::shard::Shard;
use sluice_core::batch::{self, Record};
use sluice_core::{Offset, PartitionId, TopicPartition};
use sluice_storage::PartitionLog;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

const SWEEP_EVERY: Duration = Duration::from_millis(sluice_core::limits::GROUP_SWEEP_INTERVAL_MS);
const EXPIRE_OFFSETS_EVERY: Duration = Duration::from_millis(sluice_core::limits::OFFSETS_EXPIRY_CHECK_INTERVAL_MS);

use sluice_core::clock::now_ms;

#[derive(Default)]
pub struct Coordinator {
    groups: RefCell<Groups>,
    next_member: Cell<u64>,
    /// Records that could not be decoded while loading (reported, never applied).
    pub skipped_records: Cell<u64>,
}

fn limits(shard: &Shard) -> Limits {
    Limits {
        initial_delay: Duration::from_millis(shard.config.group_initial_rebalance_delay_ms),
        min_session: shard.config.group_min_session_timeout_ms,
        max_session: shard.config.group_max_session_timeout_ms,
    }
}

async fn wait<T>(step: Step<T>) -> Result<T, GroupError> {
    match step {
        Step::Now(r) => r,
        Step::Wait(rx) => rx.await.unwrap_or(Err(GroupError::RebalanceInProgress)),
    }
}

/// Writes records in the background (a group record, expired offsets' tombstones): a failure
/// is logged, nothing waits for it.
fn write_later(shard: &Rc<Shard>, group_id: String, records: Records, what: &'static str) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        if let Err(e) = write(&shard, &group_id, records).await {
            tracing::warn!(group = %group_id, error = %e, "could not record {what}");
        }
    })
    .detach();
}

impl Coordinator {
    fn new_member_id(&self, shard: &Shard, client_id: &str) -> String {
        let n = self.next_member.get() + 1;
        self.next_member.set(n);
        let r = crate::metadata::random_bytes();
        let client = if client_id.is_empty() { "member" } else { client_id };
        format!("{client}-{}-{n}-{:016x}", shard.id, u64::from_le_bytes(r[..8].try_into().expect("8")))
    }

    pub async fn handle(&self, shard: &Rc<Shard>, op: GroupOp) -> GroupAnswer {
        match op {
            GroupOp::Join(r) => GroupAnswer::Join(self.join(shard, r).await),
            GroupOp::Sync(r) => GroupAnswer::Sync(self.sync(shard, r).await),
            GroupOp::Heartbeat(m) => GroupAnswer::Heartbeat(self.heartbeat(m)),
            GroupOp::Leave { group_id, members } => GroupAnswer::Leave(self.leave(shard, &group_id, &members)),
            GroupOp::Commit { member, offsets } => GroupAnswer::Commit(self.commit(shard, member, offsets).await),
            GroupOp::FetchOffsets { group_id, topics } => GroupAnswer::FetchOffsets(Ok(self.fetch(&group_id, topics))),
            GroupOp::Describe(g) => GroupAnswer::Describe(self.describe(&g)),
            GroupOp::Delete(g) => GroupAnswer::Delete(self.delete(shard, &g).await),
            GroupOp::DeleteOffsets { group_id, partitions } => {
                GroupAnswer::DeleteOffsets(self.delete_offsets(shard, &group_id, partitions).await)
            }
            GroupOp::List => GroupAnswer::List(self.list()),
        }
    }

    async fn join(&self, shard: &Shard, req: JoinRequest) -> Result<JoinResponse, GroupError> {
        let new_id = self.new_member_id(shard, &req.client_id);
        let step = table::join(&mut self.groups.borrow_mut(), req, new_id, Instant::now(), &limits(shard));
        wait(step).await
    }

    async fn sync(&self, shard: &Rc<Shard>, req: SyncRequest) -> Result<SyncResponse, GroupError> {
        let group_id = req.group_id.clone();
        let (step, record) = table::sync(&mut self.groups.borrow_mut(), req, Instant::now());
        if let Some(r) = record {
            let records = vec![(store::group_key(&group_id), store::group_value(&r))];
            write_later(shard, group_id, records, "the group's generation");
        }
        wait(step).await
    }

    fn heartbeat(&self, m: MemberRef) -> Result<(), GroupError> {
        table::heartbeat(&mut self.groups.borrow_mut(), &m, Instant::now())
    }

    fn leave(
        &self,
        shard: &Shard,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        table::leave(&mut self.groups.borrow_mut(), group_id, members, Instant::now(), &limits(shard))
    }

    async fn commit(
        &self,
        shard: &Rc<Shard>,
        member: MemberRef,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        table::check_commit(&self.groups.borrow(), &member)?;
        let meta = shard.metadata();
        let plan =
            table::plan_commit(&member.group_id, offsets, now_ms(), |t, p| meta.owner(t, PartitionId(p)).is_some());
        if !plan.records.is_empty() {
            write(shard, &member.group_id, plan.records).await?;
            table::apply_commit(&mut self.groups.borrow_mut(), &member.group_id, plan.accepted);
        }
        Ok(plan.results)
    }

    /// Commits offsets without a member check (a transaction's staged offsets, at its
    /// COMMIT): durable first, then visible.
    pub(crate) async fn commit_unchecked(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(), GroupError> {
        let meta = shard.metadata();
        let plan = table::plan_commit(group_id, offsets, now_ms(), |t, p| meta.owner(t, PartitionId(p)).is_some());
        if !plan.records.is_empty() {
            write(shard, group_id, plan.records).await?;
            table::apply_commit(&mut self.groups.borrow_mut(), group_id, plan.accepted);
        }
        Ok(())
    }

    fn fetch(&self, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> OffsetList {
        table::fetch(&self.groups.borrow(), group_id, topics)
    }

    fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        table::describe(&self.groups.borrow(), group_id)
    }

    async fn delete(&self, shard: &Rc<Shard>, group_id: &str) -> Result<(), GroupError> {
        let records = table::plan_delete(&self.groups.borrow(), group_id)?;
        write(shard, group_id, records).await?;
        table::finish_delete(&mut self.groups.borrow_mut(), group_id);
        Ok(())
    }

    async fn delete_offsets(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let (results, records) = table::plan_delete_offsets(&self.groups.borrow(), group_id, &partitions)?;
        if !records.is_empty() {
            write(shard, group_id, records).await?;
            table::finish_delete_offsets(&mut self.groups.borrow_mut(), group_id, &partitions, &results);
        }
        Ok(results)
    }

    fn list(&self) -> Vec<GroupListing> {
        table::list(&self.groups.borrow())
    }

    /// (groups, members) coordinated here.
    pub fn counts(&self) -> (u64, u64) {
        let g = self.groups.borrow();
        (g.len() as u64, g.values().map(|g| g.members.len() as u64).sum())
    }

    /// Replays one `__consumer_offsets` partition into memory (when the shard opens it).
    pub async fn load(&self, log: &PartitionLog) -> Result<(), sluice_storage::StorageError> {
        let mut offset = log.log_start();
        let end = log.high_watermark();
        let mut applied = 0u64;
        while offset < end {
            let read = log.read(offset, sluice_core::limits::OFFSETS_LOAD_READ_BYTES).await?;
            if read.records.is_empty() {
                break;
            }
            let mut pos = 0;
            while pos < read.records.len() {
                let Ok(h) = batch::BatchHeader::parse(&read.records[pos..]) else { break };
                let bytes = &read.records[pos..(pos + h.total_len()).min(read.records.len())];
                match batch::records(bytes) {
                    Ok(recs) => {
                        for r in recs {
                            match r.key.and_then(|k| store::decode(k, r.value)) {
                                Some(e) => {
                                    table::apply(&mut self.groups.borrow_mut(), e);
                                    applied += 1;
                                }
                                None => self.skipped_records.set(self.skipped_records.get() + 1),
                            }
                        }
                    }
                    Err(_) => self.skipped_records.set(self.skipped_records.get() + 1),
                }
                offset = Offset(h.last_offset() + 1);
                pos += h.total_len();
            }
        }
        tracing::debug!(partition = log.name(), records = applied, "group coordinator state loaded");
        Ok(())
    }

    /// Expires silent members and finishes rebalances; every minute also expires the offsets
    /// of groups without members (`offsets_retention_minutes`).
    fn tick(&self, shard: &Rc<Shard>, expire_offsets: bool) {
        // Validated (`limits::MAX_OFFSETS_RETENTION_MINUTES`); saturating all the same.
        let retention_ms =
            i64::try_from(shard.config.offsets_retention_minutes).unwrap_or(i64::MAX).saturating_mul(60_000);
        let horizon = expire_offsets.then(|| now_ms().saturating_sub(retention_ms));
        let expired = table::tick(&mut self.groups.borrow_mut(), Instant::now(), &limits(shard), horizon);
        for (group, keys) in expired {
            let records = table::expiry_records(&group, &keys);
            write_later(shard, group, records, "expired offsets");
        }
    }
}

/// Appends records to the group's offsets partition and waits until they are durable.
async fn write(shard: &Shard, group_id: &str, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), GroupError> {
    let partitions = shard.metadata().topics.get(OFFSETS_TOPIC).map(|t| t.shards.len()).unwrap_or(0);
    if partitions == 0 {
        return Err(GroupError::CoordinatorNotAvailable);
    }
    let tp = TopicPartition::new(OFFSETS_TOPIC, super::offsets_partition(group_id, partitions));
    let log = shard.log(&tp).ok_or(GroupError::CoordinatorNotAvailable)?;
    let recs: Vec<Record<'_>> = records.iter().map(|(k, v)| Record { key: Some(k), value: v }).collect();
    let bytes = batch::build(&recs, now_ms());
    let header = batch::validate(&bytes).map_err(|e| GroupError::Storage(e.to_string()))?;
    let info = log.append(&bytes, &header, None).map_err(|e| GroupError::Storage(e.to_string()))?;
    log.wait_durable(&info).await.map_err(|e| GroupError::Storage(e.to_string()))
}

/// Runs the coordinator's periodic sweep until the shard stops.
pub fn spawn_sweeper(shard: Rc<Shard>) {
    glommio::spawn_local(async move {
        let mut last_expiry = Instant::now();
        while !shard.is_stopping() {
            glommio::timer::sleep(SWEEP_EVERY).await;
            let expire = last_expiry.elapsed() >= EXPIRE_OFFSETS_EVERY;
            if expire {
                last_expiry = Instant::now();
            }
            shard.groups.tick(&shard, expire);
        }
    })
    .detach();
}
