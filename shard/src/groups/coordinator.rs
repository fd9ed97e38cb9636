//! One shard's group coordinator: the groups whose `__consumer_offsets` partition this shard
//! owns, their committed offsets, persistence and the periodic sweep.
//!
//! Contract: every `RefCell` borrow of the group map ends before an `.await`; waiting joins
//! and syncs hold oneshot receivers, not borrows. A commit is answered only after its records
//! are durable in the offsets partition; the in-memory offsets change after that, so a fetch
//! never returns an offset a crash could lose.

use super::group::{Group, Limits, State, Step};
use super::store::{self, Entry, GroupRecord};
use super::{
    Committed, GroupAnswer, GroupDescription, GroupError, GroupListing, GroupOp, JoinRequest, JoinResponse,
    MemberDescription, MemberRef, OffsetList, OffsetToCommit, SyncRequest, SyncResponse, OFFSETS_TOPIC,
};
use crate::shard::Shard;
use sluice_core::batch::{self, Record};
use sluice_core::{Offset, PartitionId, TopicPartition};
use sluice_storage::PartitionLog;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SWEEP_EVERY: Duration = Duration::from_millis(100);
const EXPIRE_OFFSETS_EVERY: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Default)]
pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
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
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let step = {
            let mut groups = self.groups.borrow_mut();
            if !req.member_id.is_empty() && !groups.contains_key(&req.group_id) {
                return Err(GroupError::UnknownMemberId);
            }
            let new_id = self.new_member_id(shard, &req.client_id);
            let g = groups.entry(req.group_id.clone()).or_insert_with(|| Group::new(&req.group_id));
            g.join(req, new_id, Instant::now(), &limits(shard))
        };
        wait(step).await
    }

    async fn sync(&self, shard: &Rc<Shard>, req: SyncRequest) -> Result<SyncResponse, GroupError> {
        let group_id = req.group_id.clone();
        let (step, stable) = {
            let mut groups = self.groups.borrow_mut();
            let g = groups.get_mut(&req.group_id).ok_or(GroupError::UnknownMemberId)?;
            g.sync(req, Instant::now())
        };
        if stable {
            let record = self.groups.borrow().get(&group_id).map(|g| GroupRecord {
                generation: g.generation,
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocol: g.protocol.clone().unwrap_or_default(),
            });
            if let Some(r) = record {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let records = vec![(store::group_key(&group_id), store::group_value(&r))];
                    if let Err(e) = write(&shard, &group_id, records).await {
                        tracing::warn!(group = %group_id, error = %e, "could not record the group's generation");
                    }
                })
                .detach();
            }
        }
        wait(step).await
    }

    fn heartbeat(&self, m: MemberRef) -> Result<(), GroupError> {
        let mut groups = self.groups.borrow_mut();
        let g = groups.get_mut(&m.group_id).ok_or(GroupError::UnknownMemberId)?;
        g.heartbeat(&m.member_id, m.group_instance_id.as_deref(), m.generation_id, Instant::now())
    }

    fn leave(
        &self,
        shard: &Shard,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let mut groups = self.groups.borrow_mut();
        let g = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        Ok(g.leave(members, Instant::now(), &limits(shard)))
    }

    async fn commit(
        &self,
        shard: &Rc<Shard>,
        member: MemberRef,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if member.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        {
            let groups = self.groups.borrow();
            match groups.get(&member.group_id) {
                None | Some(Group { state: State::Empty, .. })
                    if member.generation_id < 0 && member.member_id.is_empty() => {}
                None => return Err(GroupError::UnknownMemberId),
                Some(g) => {
                    g.validate_commit(&member.member_id, member.group_instance_id.as_deref(), member.generation_id)?
                }
            }
        }
        let meta = shard.metadata();
        let ts = now_ms();
        let mut results = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for o in offsets {
            if meta.owner(&o.topic, PartitionId(o.partition)).is_none() {
                results.push(Err(GroupError::UnknownTopicOrPartition));
                continue;
            }
            let c = Committed {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata,
                commit_timestamp_ms: ts,
            };
            records.push((store::offset_key(&member.group_id, &o.topic, o.partition), store::offset_value(&c)));
            accepted.push(((o.topic, o.partition), c));
            results.push(Ok(()));
        }
        if !records.is_empty() {
            write(shard, &member.group_id, records).await?;
            let mut groups = self.groups.borrow_mut();
            let g = groups.entry(member.group_id.clone()).or_insert_with(|| Group::new(&member.group_id));
            g.offsets.extend(accepted);
        }
        Ok(results)
    }

    fn fetch(&self, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> OffsetList {
        let groups = self.groups.borrow();
        let g = groups.get(group_id);
        match topics {
            Some(topics) => topics
                .into_iter()
                .flat_map(|(t, ps)| {
                    ps.into_iter()
                        .map(|p| {
                            let c = g.and_then(|g| g.offsets.get(&(t.clone(), p))).cloned();
                            (t.clone(), p, c)
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
            None => {
                let mut all: OffsetList = g
                    .map(|g| g.offsets.iter().map(|((t, p), c)| (t.clone(), *p, Some(c.clone()))).collect())
                    .unwrap_or_default();
                all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                all
            }
        }
    }

    fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.borrow();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    async fn delete(&self, shard: &Rc<Shard>, group_id: &str) -> Result<(), GroupError> {
        let keys: Vec<(String, i32)> = {
            let groups = self.groups.borrow();
            let g = groups.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
            if !g.members.is_empty() || g.state != State::Empty {
                return Err(GroupError::NonEmptyGroup);
            }
            g.offsets.keys().cloned().collect()
        };
        let mut records: Vec<(Vec<u8>, Vec<u8>)> =
            keys.iter().map(|(t, p)| (store::offset_key(group_id, t, *p), Vec::new())).collect();
        records.push((store::group_key(group_id), Vec::new()));
        write(shard, group_id, records).await?;
        let mut groups = self.groups.borrow_mut();
        if groups.get(group_id).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group_id);
        }
        Ok(())
    }

    async fn delete_offsets(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let subscribed = {
            let groups = self.groups.borrow();
            let g = groups.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
            g.subscribed_topics()
        };
        let results: Vec<Result<(), GroupError>> = partitions
            .iter()
            .map(|(t, _)| if subscribed.contains(t) { Err(GroupError::GroupSubscribedToTopic) } else { Ok(()) })
            .collect();
        let records: Vec<(Vec<u8>, Vec<u8>)> = partitions
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|((t, p), _)| (store::offset_key(group_id, t, *p), Vec::new()))
            .collect();
        if !records.is_empty() {
            write(shard, group_id, records).await?;
            if let Some(g) = self.groups.borrow_mut().get_mut(group_id) {
                for ((t, p), r) in partitions.iter().zip(&results) {
                    if r.is_ok() {
                        g.offsets.remove(&(t.clone(), *p));
                    }
                }
            }
        }
        Ok(results)
    }

    fn list(&self) -> Vec<GroupListing> {
        self.groups
            .borrow()
            .values()
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.name(),
            })
            .collect()
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
            let read = log.read(offset, 8 << 20).await?;
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
                                    self.apply(e);
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

    fn apply(&self, e: Entry) {
        let mut groups = self.groups.borrow_mut();
        match e {
            Entry::Offset { group, topic, partition, value } => {
                let g = groups.entry(group.clone()).or_insert_with(|| Group::new(&group));
                match value {
                    Some(c) => {
                        g.offsets.insert((topic, partition), c);
                    }
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            }
            Entry::Group { group, value: Some(r) } => {
                let g = groups.entry(group.clone()).or_insert_with(|| Group::new(&group));
                g.generation = r.generation;
                g.protocol_type = (!r.protocol_type.is_empty()).then_some(r.protocol_type);
            }
            Entry::Group { group, value: None } => {
                groups.remove(&group);
            }
        }
    }

    /// Expires silent members and finishes rebalances; every minute also expires the offsets
    /// of groups without members (`offsets_retention_minutes`).
    fn tick(&self, shard: &Rc<Shard>, expire_offsets: bool) {
        let now = Instant::now();
        let l = limits(shard);
        let mut expired: Vec<(String, Vec<(String, i32)>)> = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            for g in groups.values_mut() {
                g.tick(now, &l);
            }
            if expire_offsets {
                let horizon = now_ms() - (shard.config.offsets_retention_minutes as i64).saturating_mul(60_000);
                for g in groups.values_mut().filter(|g| g.state == State::Empty) {
                    let old: Vec<(String, i32)> = g
                        .offsets
                        .iter()
                        .filter(|(_, c)| c.commit_timestamp_ms < horizon)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in &old {
                        g.offsets.remove(k);
                    }
                    if !old.is_empty() {
                        expired.push((g.id.clone(), old));
                    }
                }
                groups.retain(|_, g| !(g.state == State::Empty && g.offsets.is_empty() && g.members.is_empty()));
            }
        }
        for (group, keys) in expired {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let records = keys.iter().map(|(t, p)| (store::offset_key(&group, t, *p), Vec::new())).collect();
                if let Err(e) = write(&shard, &group, records).await {
                    tracing::warn!(group = %group, error = %e, "could not record expired offsets");
                }
            })
            .detach();
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
