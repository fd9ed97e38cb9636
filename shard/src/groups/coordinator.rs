//! One shard's group coordinator: the groups whose `__consumer_offsets` partition this shard
//! owns, their committed offsets, persistence and the periodic sweep. The decisions are in
//! [`super::table`] (no I/O); this file reads the clock, holds the table and writes records.
//!
//! Contract: every `RefCell` borrow of the group map ends before an `.await`; waiting joins
//! and syncs hold oneshot receivers, not borrows. A commit is answered only after its records
//! are durable in the offsets partition; the in-memory offsets change after that, so a fetch
//! never returns an offset a crash could lose.

use super::consumer::{self, ConsumerHeartbeatRequest, ConsumerHeartbeatResponse};
use super::group::{Limits, Step};
use super::store;
use super::table::{self, Groups, Records};
use super::{
    EachResult, GroupCall, GroupDescription, GroupError, GroupListing, JoinRequest, JoinResponse, MemberRef,
    OffsetList, OffsetToCommit, SyncRequest, SyncResponse, OFFSETS_TOPIC,
};
use crate::internal::{append_internal, read_to_hw, Leadership, Refusal};
use crate::metadata::MetadataSnapshot;
use crate::msg::Call;
use crate::shard::Shard;
use sluice_core::{LeaderEpoch, PartitionId, ShardId, TopicPartition};
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
    /// Share group records met while loading, for `share` to adopt (in log order).
    pub share_loaded: RefCell<Vec<(String, Option<Vec<u8>>)>>,
    /// The replicated `__consumer_offsets` partitions of this shard this broker leads
    /// (`crate::internal`); single-replica ones are not tracked.
    leadership: RefCell<Leadership>,
    /// The topics a KIP-848 heartbeat sees, built once per metadata snapshot (a snapshot is
    /// replaced, never changed, and the weak pointer keeps its address from being reused).
    topics: RefCell<Option<(std::rc::Weak<MetadataSnapshot>, Rc<consumer::Topics>)>>,
}

/// The group an operation is about (None: every group of the shard).
fn group_of(call: &GroupCall) -> Option<&str> {
    Some(match call {
        GroupCall::Join(c) => &c.req.group_id,
        GroupCall::Sync(c) => &c.req.group_id,
        GroupCall::Heartbeat(c) => &c.req.0.group_id,
        GroupCall::Leave(c) => &c.req.group_id,
        GroupCall::Commit(c) => &c.req.member.group_id,
        GroupCall::FetchOffsets(c) => &c.req.group_id,
        GroupCall::Describe(c) => &c.req.0,
        GroupCall::Delete(c) => &c.req.0,
        GroupCall::DeleteOffsets(c) => &c.req.group_id,
        GroupCall::List(_) => return None,
        GroupCall::ConsumerHeartbeat(c) => &c.req.group_id,
        GroupCall::ConsumerDescribe(c) => &c.req.0,
    })
}

/// Answers a call this coordinator refuses (not the leader of the group's partition, or still
/// loading it): NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS, DescribeGroups included, as
/// Kafka answers; ListGroups lists what this coordinator has.
fn refuse(call: GroupCall, why: Refusal) {
    let e = GroupError::from(why);
    match call {
        GroupCall::Join(c) => drop(c.reply.send(Err(e))),
        GroupCall::Sync(c) => drop(c.reply.send(Err(e))),
        GroupCall::Heartbeat(c) => drop(c.reply.send(Err(e))),
        GroupCall::Leave(c) => drop(c.reply.send(Err(e))),
        GroupCall::Commit(c) => drop(c.reply.send(Err(e))),
        GroupCall::FetchOffsets(c) => drop(c.reply.send(Err(e))),
        GroupCall::Delete(c) => drop(c.reply.send(Err(e))),
        GroupCall::DeleteOffsets(c) => drop(c.reply.send(Err(e))),
        GroupCall::ConsumerHeartbeat(c) => drop(c.reply.send(Err(e))),
        GroupCall::ConsumerDescribe(c) => drop(c.reply.send(Err(e))),
        GroupCall::Describe(c) => drop(c.reply.send(Err(e))),
        GroupCall::List(_) => {}
    }
}

/// The `__consumer_offsets` partition of a group, given the topic's partition count.
fn partition_of(group_id: &str, partitions: usize) -> TopicPartition {
    TopicPartition::new(OFFSETS_TOPIC, super::offsets_partition(group_id, partitions))
}

fn limits(shard: &Shard) -> Limits {
    Limits {
        initial_delay: Duration::from_millis(shard.config.group_initial_rebalance_delay_ms),
        min_session: shard.config.group_min_session_timeout_ms,
        max_session: shard.config.group_max_session_timeout_ms,
    }
}

/// Members of a KIP-848 group (0 for a classic group).
fn consumer_members(g: &super::group::Group) -> usize {
    g.consumer.as_ref().map_or(0, |c| c.members.len())
}

/// The KIP-848 settings of a group: its group configs (`consumer.heartbeat.interval.ms`,
/// `consumer.session.timeout.ms`) over the broker's.
fn consumer_settings(shard: &Shard, group_id: &str) -> consumer::Settings {
    let c = &shard.config;
    let g = crate::group_config::for_group(shard, group_id);
    consumer::Settings {
        session_timeout: Duration::from_millis(u64::try_from(g.consumer_session_timeout_ms).unwrap_or(0)),
        heartbeat_interval_ms: g.consumer_heartbeat_interval_ms,
        max_size: c.group_consumer_max_size,
        migration: c.group_consumer_migration_policy,
        regex_refresh_interval: Duration::from_millis(sluice_core::limits::CONSUMER_GROUP_REGEX_REFRESH_INTERVAL_MS),
    }
}

/// Whether `principal` connecting from `address` may DESCRIBE a topic, by this shard's copy of
/// the ACLs: the check a KIP-848 regex resolution applies with the context of the member whose
/// heartbeat resolves it (Kafka's `TopicRegexResolver`). Everything is allowed without an
/// authorizer; the ACL index is built only if a resolution asks.
fn describe_check(shard: &Shard, principal: String, address: String) -> impl Fn(&str) -> bool + '_ {
    use crate::metadata::acl::{op, resource, AclIndex, AuthorizerSettings, Requester};
    let enabled = shard.config.authorizer_enabled();
    let meta = shard.metadata();
    let config = &shard.config;
    let index: std::cell::OnceCell<(AclIndex, AuthorizerSettings)> = std::cell::OnceCell::new();
    let principal = if principal.is_empty() { "User:ANONYMOUS".to_string() } else { principal };
    move |topic: &str| {
        if !enabled {
            return true;
        }
        let (index, settings) = index.get_or_init(|| {
            let settings = AuthorizerSettings {
                super_users: config.super_users.clone(),
                allow_everyone_if_no_acl_found: config.allow_everyone_if_no_acl_found,
            };
            (AclIndex::new(&meta.acls), settings)
        });
        let who = Requester { principal: &principal, host: &address };
        index.authorize(settings, who, op::DESCRIBE, resource::TOPIC, topic)
    }
}

/// Every topic of the metadata (name, id, partition count) for KIP-848 groups.
fn consumer_topics(shard: &Shard) -> consumer::Topics {
    let meta = shard.metadata();
    meta.topics
        .iter()
        .filter_map(|(name, t)| {
            let partitions = i32::try_from(t.shards.len()).ok()?;
            Some((name.clone(), consumer::TopicInfo { id: t.id, partitions }))
        })
        .collect()
}

/// A new member's id, as Kafka builds one (client id, then something unique): the client id
/// (or "member"), the coordinator shard, a counter and a random part.
fn member_id(client_id: &str, shard: ShardId, n: u64, random: u64) -> String {
    let client = if client_id.is_empty() { "member" } else { client_id };
    format!("{client}-{shard}-{n}-{random:016x}")
}

/// The answer of a join or sync; one whose rebalance was abandoned (its waiter dropped)
/// is told to rejoin.
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
    /// TxnOffsetCommit's member check on this shard (`table::check_txn_commit`).
    pub fn check_txn_commit(&self, member: &MemberRef) -> Result<(), GroupError> {
        table::check_txn_commit(&self.groups.borrow(), member)
    }

    /// [`consumer_topics`] of the current metadata snapshot, built again only when the
    /// snapshot changed: a heartbeat does not copy every topic name of the cluster.
    fn consumer_topics(&self, shard: &Shard) -> Rc<consumer::Topics> {
        let meta = shard.metadata();
        if let Some((seen, topics)) = self.topics.borrow().as_ref() {
            if std::rc::Weak::ptr_eq(seen, &Rc::downgrade(&meta)) {
                return topics.clone();
            }
        }
        let topics = Rc::new(consumer_topics(shard));
        *self.topics.borrow_mut() = Some((Rc::downgrade(&meta), topics.clone()));
        topics
    }

    fn new_member_id(&self, shard: &Shard, client_id: &str) -> String {
        let n = self.next_member.get() + 1;
        self.next_member.set(n);
        let r = crate::metadata::random_bytes();
        member_id(client_id, shard.id, n, u64::from_le_bytes(r[..8].try_into().expect("8")))
    }

    /// Runs one operation and sends its reply (a dropped receiver: the client went away).
    /// Whether this shard coordinates `group_id` now (module `crate::internal`).
    pub(crate) fn admits(&self, shard: &Shard, group_id: &str) -> Result<(), Refusal> {
        let partitions = shard.metadata().topics.get(OFFSETS_TOPIC).map_or(0, |t| t.shards.len());
        crate::internal::check(shard, &partition_of(group_id, partitions), &self.leadership.borrow())
    }

    pub async fn handle(&self, shard: &Rc<Shard>, call: GroupCall) {
        if let Some(group_id) = group_of(&call) {
            if let Err(why) = self.admits(shard, group_id) {
                return refuse(call, why);
            }
        }
        match call {
            GroupCall::Join(Call { req, reply }) => drop(reply.send(self.join(shard, req).await)),
            GroupCall::Sync(Call { req, reply }) => drop(reply.send(self.sync(shard, req).await)),
            GroupCall::Heartbeat(Call { req, reply }) => drop(reply.send(self.heartbeat(req.0))),
            GroupCall::Leave(Call { req, reply }) => {
                drop(reply.send(self.leave(shard, &req.group_id, &req.members).await))
            }
            GroupCall::Commit(Call { req, reply }) => {
                drop(reply.send(self.commit(shard, req.member, req.offsets).await))
            }
            GroupCall::FetchOffsets(Call { req, reply }) => drop(reply.send(self.fetch(req))),
            GroupCall::Describe(Call { req, reply }) => drop(reply.send(Ok(self.describe(&req.0)))),
            GroupCall::Delete(Call { req, reply }) => drop(reply.send(self.delete(shard, &req.0).await)),
            GroupCall::DeleteOffsets(Call { req, reply }) => {
                drop(reply.send(self.delete_offsets(shard, &req.group_id, req.partitions).await))
            }
            GroupCall::List(Call { reply, .. }) => drop(reply.send(self.list())),
            GroupCall::ConsumerHeartbeat(Call { req, reply }) => {
                drop(reply.send(self.consumer_heartbeat(shard, req).await))
            }
            GroupCall::ConsumerDescribe(Call { req, reply }) => {
                drop(reply.send(consumer::describe(&self.groups.borrow(), &req.0)))
            }
        }
    }

    /// A KIP-848 group with members (classic requests to it go to [`consumer::classic`]).
    fn is_consumer_group(&self, group_id: &str) -> bool {
        self.groups.borrow().get(group_id).and_then(|g| g.consumer.as_ref()).is_some_and(|c| !c.members.is_empty())
    }

    async fn join(&self, shard: &Rc<Shard>, req: JoinRequest) -> Result<JoinResponse, GroupError> {
        let new_id = self.new_member_id(shard, &req.client_id);
        if self.is_consumer_group(&req.group_id) {
            return self.classic_join_to_consumer_group(shard, req, new_id).await;
        }
        let step = table::join(&mut self.groups.borrow_mut(), req, new_id, Instant::now(), &limits(shard));
        wait(step).await
    }

    /// JoinGroup of a classic member of a KIP-848 group: answered once the group's record is
    /// durable (when the join changed it).
    async fn classic_join_to_consumer_group(
        &self,
        shard: &Rc<Shard>,
        req: JoinRequest,
        new_id: String,
    ) -> Result<JoinResponse, GroupError> {
        let group_id = req.group_id.clone();
        let topics = consumer_topics(shard);
        let (resp, changed) = {
            let mut groups = self.groups.borrow_mut();
            let c = groups.get_mut(&group_id).and_then(|g| g.consumer.as_mut()).ok_or(GroupError::UnknownMemberId)?;
            let before = consumer::record::encode(c);
            let resp = c.classic_join(
                req,
                new_id,
                Instant::now(),
                &topics,
                &consumer_settings(shard, &group_id),
                &limits(shard),
            )?;
            c.check_invariants();
            (resp, consumer::record::encode(c) != before)
        };
        if changed {
            write(shard, &group_id, self.consumer_record(&group_id)).await?;
        }
        Ok(resp)
    }

    async fn sync(&self, shard: &Rc<Shard>, req: SyncRequest) -> Result<SyncResponse, GroupError> {
        let group_id = req.group_id.clone();
        if self.is_consumer_group(&group_id) {
            let mut groups = self.groups.borrow_mut();
            let c = groups.get_mut(&group_id).and_then(|g| g.consumer.as_mut()).ok_or(GroupError::UnknownMemberId)?;
            return c.classic_sync(&req, Instant::now());
        }
        let (step, record) = table::sync(&mut self.groups.borrow_mut(), req, Instant::now());
        if let Some(r) = record {
            let records = vec![(store::group_key(&group_id), store::group_value(&r))];
            write_later(shard, group_id, records, "the group's generation");
        }
        wait(step).await
    }

    fn heartbeat(&self, m: MemberRef) -> Result<(), GroupError> {
        let mut groups = self.groups.borrow_mut();
        if let Some(c) = groups.get_mut(&m.group_id).and_then(|g| g.consumer.as_mut()).filter(|c| !c.members.is_empty())
        {
            return c.classic_heartbeat(&m.member_id, m.group_instance_id.as_deref(), m.generation_id, Instant::now());
        }
        table::heartbeat(&mut groups, &m, Instant::now())
    }

    async fn leave(&self, shard: &Rc<Shard>, group_id: &str, members: &[(String, Option<String>)]) -> EachResult {
        if self.is_consumer_group(group_id) {
            let (results, changed) = {
                let mut groups = self.groups.borrow_mut();
                let c =
                    groups.get_mut(group_id).and_then(|g| g.consumer.as_mut()).ok_or(GroupError::UnknownMemberId)?;
                c.classic_leave(members)
            };
            if changed {
                write(shard, group_id, self.consumer_record(group_id)).await?;
            }
            return Ok(results);
        }
        table::leave(&mut self.groups.borrow_mut(), group_id, members, Instant::now(), &limits(shard))
    }

    async fn commit(&self, shard: &Rc<Shard>, member: MemberRef, offsets: Vec<OffsetToCommit>) -> EachResult {
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
    /// Commits `offsets` without member checks (a transaction's), with `extra` records (the
    /// transaction's pending-offsets tombstone) in the same durable batch.
    pub(crate) async fn commit_unchecked(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        offsets: Vec<OffsetToCommit>,
        extra: Records,
    ) -> Result<(), GroupError> {
        let meta = shard.metadata();
        let mut plan = table::plan_commit(group_id, offsets, now_ms(), |t, p| meta.owner(t, PartitionId(p)).is_some());
        plan.records.extend(extra);
        if !plan.records.is_empty() {
            write(shard, group_id, plan.records).await?;
            table::apply_commit(&mut self.groups.borrow_mut(), group_id, plan.accepted);
        }
        Ok(())
    }

    fn fetch(&self, req: super::OffsetFetchRequest) -> Result<OffsetList, GroupError> {
        let groups = self.groups.borrow();
        table::check_fetch(&groups, &req.group_id, req.member.0.as_deref(), req.member.1)?;
        Ok(table::fetch(&groups, &req.group_id, req.topics))
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

    async fn delete_offsets(&self, shard: &Rc<Shard>, group_id: &str, partitions: Vec<(String, i32)>) -> EachResult {
        let (results, records) = table::plan_delete_offsets(&self.groups.borrow(), group_id, &partitions)?;
        if !records.is_empty() {
            write(shard, group_id, records).await?;
            table::finish_delete_offsets(&mut self.groups.borrow_mut(), group_id, &partitions, &results);
        }
        Ok(results)
    }

    /// ConsumerGroupHeartbeat: decided in memory, answered once the group's record is durable
    /// (when the heartbeat changed it).
    async fn consumer_heartbeat(
        &self,
        shard: &Rc<Shard>,
        req: ConsumerHeartbeatRequest,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        let group_id = req.group_id.clone();
        // Only a v0 join without a member id takes one from the server.
        let new_id = if req.member_id.is_empty() { self.new_member_id(shard, &req.client_id) } else { String::new() };
        let topics = self.consumer_topics(shard);
        let may_describe = describe_check(shard, req.principal.clone(), req.client_address.clone());
        let rx =
            consumer::RegexContext { may_describe: &may_describe, topics_version: shard.metadata().next_topic_number };
        let beat = consumer::heartbeat(
            &mut self.groups.borrow_mut(),
            req,
            new_id,
            Instant::now(),
            &topics,
            &rx,
            &consumer_settings(shard, &group_id),
            &limits(shard),
        )?;
        if beat.changed {
            write(shard, &group_id, self.consumer_record(&group_id)).await?;
        }
        Ok(beat.response)
    }

    /// The record of a KIP-848 group as it is now (a tombstone if it is gone).
    fn consumer_record(&self, group_id: &str) -> Records {
        let groups = self.groups.borrow();
        let value = groups.get(group_id).and_then(|g| g.consumer.as_ref()).map(consumer::record::encode);
        vec![(store::consumer_key(group_id), value.unwrap_or_default())]
    }

    fn list(&self) -> Vec<GroupListing> {
        table::list(&self.groups.borrow())
    }

    /// (groups, members) coordinated here.
    pub fn counts(&self) -> (u64, u64) {
        let g = self.groups.borrow();
        (g.len() as u64, g.values().map(|g| (g.members.len() + consumer_members(g)) as u64).sum())
    }

    /// Replays one `__consumer_offsets` partition into memory (when the shard opens it, or
    /// when this broker is elected its leader). Returns the pending transactional offsets
    /// records met, in log order, for the shard's transaction coordinator. `current` is asked
    /// before each chunk: false stops the replay (a newer load replaced this one).
    pub async fn load(
        &self,
        log: &PartitionLog,
        current: impl Fn() -> bool,
    ) -> Result<Vec<table::PendingTxnOffsets>, sluice_storage::StorageError> {
        let mut applied = 0u64;
        let mut pending = Vec::new();
        read_to_hw(log, |chunk| {
            if !current() {
                return false;
            }
            let done = table::replay_batches(&mut self.groups.borrow_mut(), chunk);
            applied += done.applied;
            pending.extend(done.pending);
            self.share_loaded.borrow_mut().extend(done.share);
            self.skipped_records.set(self.skipped_records.get() + done.skipped);
            true
        })
        .await?;
        tracing::debug!(partition = log.name(), records = applied, "group coordinator state loaded");
        Ok(pending)
    }

    /// This broker was elected leader of offsets partition `p` at `epoch`: true when its load
    /// starts (any state left from an earlier leadership is dropped first).
    pub(crate) fn elected(&self, shard: &Shard, p: i32, epoch: LeaderEpoch) -> bool {
        let start = self.leadership.borrow_mut().elected(p, epoch);
        if start {
            self.unload(shard, p);
        }
        start
    }

    /// Loads partition `p` as its leader at `epoch`: true when it is now coordinated here,
    /// false when the leadership moved meanwhile.
    pub(crate) async fn load_led(
        &self,
        shard: &Shard,
        log: &PartitionLog,
        p: i32,
        epoch: LeaderEpoch,
    ) -> Result<bool, sluice_storage::StorageError> {
        let pending = self.load(log, || self.leadership.borrow().loading(p, epoch)).await?;
        // Superseded: the loss or the newer election already dropped the partition's state,
        // and this load applied nothing after that (it checks before every chunk).
        if !self.leadership.borrow_mut().loaded(p, epoch) {
            return Ok(false);
        }
        shard.txns.restore_staged(pending);
        Ok(true)
    }

    /// Another broker leads offsets partition `p`: true when this shard dropped its state.
    pub(crate) fn lost(&self, shard: &Shard, p: i32) -> bool {
        let had = self.leadership.borrow_mut().lost(p);
        if had {
            self.unload(shard, p);
        }
        had
    }

    /// Drops every group of offsets partition `p` (their waiting joins and syncs are told to
    /// rejoin) and the transactional offsets staged for them.
    fn unload(&self, shard: &Shard, p: i32) {
        let partitions = shard.metadata().topics.get(OFFSETS_TOPIC).map_or(0, |t| t.shards.len());
        let gone: Vec<String> = {
            let mut groups = self.groups.borrow_mut();
            let gone: Vec<String> =
                groups.keys().filter(|g| super::offsets_partition(g, partitions) == p).cloned().collect();
            for g in &gone {
                groups.remove(g);
            }
            gone
        };
        shard.txns.drop_staged(|g| super::offsets_partition(g, partitions) == p);
        if !gone.is_empty() {
            tracing::debug!(partition = p, groups = gone.len(), "groups unloaded");
        }
    }

    /// Expires silent members and finishes rebalances; every minute also expires the offsets
    /// of groups without members (`offsets_retention_minutes`).
    fn tick(&self, shard: &Rc<Shard>, expire_offsets: bool) {
        // Validated (`limits::MAX_OFFSETS_RETENTION_MINUTES`); saturating all the same.
        let retention_ms =
            i64::try_from(shard.config.offsets_retention_minutes).unwrap_or(i64::MAX).saturating_mul(60_000);
        let horizon = expire_offsets.then(|| now_ms().saturating_sub(retention_ms));
        let changed = consumer::tick(
            &mut self.groups.borrow_mut(),
            Instant::now(),
            &|group_id: &str| consumer_settings(shard, group_id),
            &limits(shard),
        );
        for (group, value) in changed {
            let records = vec![(store::consumer_key(&group), value)];
            write_later(shard, group, records, "the consumer group's expired members");
        }
        crate::share::sweep(shard);
        let expired = table::tick(&mut self.groups.borrow_mut(), Instant::now(), &limits(shard), horizon);
        for (group, keys) in expired {
            let records = table::expiry_records(&group, &keys);
            write_later(shard, group, records, "expired offsets");
        }
    }
}

/// Appends records to the group's offsets partition and waits until they are durable.
pub(crate) async fn write(shard: &Shard, group_id: &str, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), GroupError> {
    let partition = |partitions| super::offsets_partition(group_id, partitions);
    Ok(append_internal(shard, OFFSETS_TOPIC, partition, &records).await?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::oneshot;
    use futures::executor::block_on;

    #[test]
    fn member_ids_name_the_client_and_are_unique_per_counter() {
        assert_eq!(member_id("app", ShardId(2), 7, 0xab), "app-2-7-00000000000000ab");
        assert!(member_id("", ShardId(0), 1, 1).starts_with("member-0-1-"));
        assert_ne!(member_id("a", ShardId(0), 1, 5), member_id("a", ShardId(0), 2, 5));
    }

    #[test]
    fn an_abandoned_wait_asks_to_rejoin() {
        assert_eq!(block_on(wait(Step::Now(Ok(3)))), Ok(3));
        let (tx, rx) = oneshot::channel::<Result<i32, GroupError>>();
        tx.send(Err(GroupError::FencedInstanceId)).unwrap();
        assert_eq!(block_on(wait(Step::Wait(rx))), Err(GroupError::FencedInstanceId));
        let (tx, rx) = oneshot::channel::<Result<i32, GroupError>>();
        drop(tx);
        assert_eq!(block_on(wait(Step::Wait(rx))), Err(GroupError::RebalanceInProgress));
    }
}
