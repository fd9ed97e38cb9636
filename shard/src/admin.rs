//! Metadata changes: CreateTopics, DeleteTopics and auto-creation, all executed on shard 0.
//!
//! Contract: shard 0 is the single writer. It applies one change at a time (a semaphore),
//! persists the new snapshot durably, then publishes it to every shard and waits until each
//! has installed it (opened or removed its logs) before answering. So once a client sees
//! CreateTopics or DeleteTopics answered, every shard agrees, and concurrent changes to the
//! same topic end in one consistent state. A change is all or nothing per topic: when a shard
//! cannot open a partition of a topic this change created (or grew), shard 0 takes that part
//! of the change back ([`rollback`]: the topic removed, or its partition count restored),
//! saves and publishes the result, which closes and deletes the logs the other shards opened,
//! and answers KAFKA_STORAGE_ERROR for that topic with the reason. No change starts before
//! shard 0 has recovered its own logs at start.

use crate::error::PartitionError;
use crate::metadata::apply::{apply, next_number, Local};
use crate::metadata::assign::assign;
use crate::metadata::records::{MetadataRecord, PartitionsAdded, TopicCreated};
use crate::metadata::{new_topic_id, validate_topic_name, MetadataSnapshot, TopicMeta};
use crate::msg::{
    AdminCall, AllocateProducerId, AlterConfigs, Call, ConfigChange, ConfigOp, CreatePartitions, CreateTopics,
    CreatedTopic, DeleteTopics, NewTopic, Operation, ShardMsg,
};
use crate::placement::{place, recent_load};
use crate::replica::Replicas;
use crate::shard::{InstallError, Shard};
use futures::channel::oneshot;
use sluice_core::limits::{MAX_PARTITIONS_PER_TOPIC, METADATA_RECORD_MAX_CONFIGS, METADATA_RECORD_MAX_STRING_BYTES};
use sluice_core::topic_config;
use sluice_core::ShardId;
use std::collections::BTreeSet;
use std::rc::Rc;

/// Creates topics (or only validates them). One result per topic, in order.
/// `brokers`: the live brokers replicas may go to (empty: this broker alone).
pub async fn create_topics(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
    brokers: Vec<i32>,
) -> Vec<Result<CreatedTopic, PartitionError>> {
    let n = topics.len();
    run(shard, CreateTopics { topics, validate_only, brokers }).await.unwrap_or_else(|e| vec![Err(e); n])
}

/// Deletes topics by name. One result (the deleted topic's id) per name, in order.
pub async fn delete_topics(shard: &Rc<Shard>, names: Vec<String>) -> Vec<Result<[u8; 16], PartitionError>> {
    let n = names.len();
    run(shard, DeleteTopics { names }).await.unwrap_or_else(|e| vec![Err(e); n])
}

use sluice_core::limits::PRODUCER_ID_BLOCK;

/// A producer id never handed out before (also across restarts): shard 0 reserves blocks
/// of ids in metadata and hands them out one by one.
pub async fn allocate_producer_id(shard: &Rc<Shard>) -> Result<i64, PartitionError> {
    run(shard, AllocateProducerId).await?
}

/// Changes a topic: its configs ([`AlterConfigs`]) or its partition count ([`CreatePartitions`]).
pub async fn change<C>(shard: &Rc<Shard>, change: C) -> Result<(), PartitionError>
where
    C: Operation<AdminCall, Reply = Result<(), PartitionError>>,
{
    run(shard, change).await?
}

/// Creates, with the broker defaults (`num_partitions`, `default_replication_factor` over the
/// live members in a cluster), those of `names` that do not exist yet.
pub async fn auto_create(shard: &Rc<Shard>, names: Vec<String>) {
    let topics = names
        .into_iter()
        .map(|name| NewTopic { name, partitions: -1, replication_factor: -1, configs: Default::default() })
        .collect();
    for r in create_topics(shard, topics, false, Vec::new()).await {
        if let Err(e) = r {
            if !matches!(e, PartitionError::TopicAlreadyExists(_)) {
                tracing::debug!(error = %e, "auto-creation of a topic failed");
            }
        }
    }
}

/// Runs `op` on shard 0 (here when this is shard 0) and waits for its reply.
async fn run<O: Operation<AdminCall>>(shard: &Rc<Shard>, op: O) -> Result<O::Reply, PartitionError> {
    let (reply, rx) = oneshot::channel();
    let call = op.into_call(reply);
    if shard.id == ShardId(0) {
        execute(shard, call).await;
    } else {
        shard.send(ShardId(0), ShardMsg::Admin(call)).await?;
    }
    rx.await.map_err(|_| PartitionError::ShuttingDown)
}

/// Runs a metadata change on shard 0 and sends its reply.
pub(crate) async fn execute(shard: &Rc<Shard>, call: AdminCall) {
    assert_eq!(shard.id, ShardId(0), "only shard 0 writes metadata");
    // Another shard may already serve while this one still opens its logs: a change must start
    // from the recovered snapshot, not the empty one a shard starts with.
    shard.recovered().await;
    let _permit = shard.admin_lock.acquire_permit(1).await.expect("admin semaphore never closes");
    // A dropped receiver: the asking client went away; the change stands all the same.
    match call {
        AdminCall::CreateTopics(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
        AdminCall::DeleteTopics(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
        AdminCall::AlterConfigs(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
        AdminCall::CreatePartitions(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
        AdminCall::AllocateProducerId(Call { reply, .. }) => drop(reply.send(next_producer_id(shard).await)),
        AdminCall::CreateAcls(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
        AdminCall::DeleteAcls(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
        AdminCall::AlterClientQuotas(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
        AdminCall::AlterReassignments(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
        AdminCall::CompleteReassignment(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
        AdminCall::AlterGroupConfigs(Call { req, reply }) => drop(reply.send(apply_change(shard, req).await)),
    }
}

/// Hands out the next reserved producer id, reserving (saving and publishing) a new block when
/// the current one is used up.
async fn next_producer_id(shard: &Rc<Shard>) -> Result<i64, PartitionError> {
    let (next, end) = shard.producer_ids.get();
    if next < end {
        shard.producer_ids.set((next + 1, end));
        return Ok(next);
    }
    if let Some(r) = shard.replicas() {
        let start = reserve_in_cluster(shard, &r).await?;
        shard.producer_ids.set((start + 1, start + PRODUCER_ID_BLOCK));
        return Ok(start);
    }
    let mut snap = (*shard.metadata()).clone();
    let start = snap.next_producer_id_block;
    let block =
        MetadataRecord::ProducerIdsAllocated { broker: shard.config.node_id, first: start, size: PRODUCER_ID_BLOCK };
    let local = Local { node: shard.config.node_id, n_shards: shard.n_shards, rates: &[] };
    apply(&mut snap, &block, &local).map_err(|e| PartitionError::Storage(e.to_string()))?;
    snap.version += 1;
    save(shard, snap.clone()).await.map_err(PartitionError::Storage)?;
    log_failures(&publish(shard, snap).await, "after reserving producer ids");
    shard.producer_ids.set((start + 1, start + PRODUCER_ID_BLOCK));
    Ok(start)
}

/// Reserves a producer-id block through the metadata log (every broker hands out ids from
/// blocks the log gave it, so no two brokers share one): decided on the caught-up snapshot;
/// a block another broker reserved first is refused at apply, and the reservation is tried
/// again on the newer snapshot, a bounded number of times.
async fn reserve_in_cluster(shard: &Rc<Shard>, r: &Rc<Replicas>) -> Result<i64, PartitionError> {
    let mut last = PartitionError::NotController("no producer-id block reserved".into());
    for _ in 0..sluice_core::limits::PRODUCER_ID_BLOCK_ATTEMPTS {
        if let Err(e) = cluster::caught_up(r).await {
            last = e;
            continue;
        }
        let first = shard.metadata().next_producer_id_block;
        let block =
            MetadataRecord::ProducerIdsAllocated { broker: shard.config.node_id, first, size: PRODUCER_ID_BLOCK };
        match cluster::propose(r, &[block]).await {
            Ok(()) => return Ok(first),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What a change places its new partitions with.
pub(crate) struct Placing<'a> {
    pub n_shards: usize,
    /// The broker's `num_partitions` (a topic created with -1 partitions gets it).
    pub default_partitions: i32,
    /// Each shard's recent append rate (empty when the change adds no partitions).
    pub rates: &'a [u64],
    /// This broker's node id.
    pub node: i32,
    /// The live brokers replicas may be assigned to (this one alone without a cluster).
    pub brokers: &'a [i32],
    /// The broker's `default_replication_factor` (a topic created with -1 gets it).
    pub default_replication_factor: i16,
}

impl Placing<'_> {
    /// A lone one-shard broker (node 0) placing nothing: for tests of changes that add no
    /// partitions.
    #[cfg(test)]
    pub(crate) fn lone() -> Placing<'static> {
        Placing {
            n_shards: 1,
            default_partitions: 1,
            rates: &[],
            node: 0,
            brokers: &[0],
            default_replication_factor: 1,
        }
    }

    fn local(&self) -> Local<'_> {
        Local { node: self.node, n_shards: self.n_shards, rates: self.rates }
    }
}

/// Applies the records a decision made to the working snapshot (so that the next topic of
/// the same request sees them) and keeps them for the log.
fn record(
    snap: &mut MetadataSnapshot,
    placing: &Placing<'_>,
    records: &mut Vec<MetadataRecord>,
    new: Vec<MetadataRecord>,
) -> Result<(), PartitionError> {
    for r in new {
        apply(snap, &r, &placing.local())
            .map_err(|e| PartitionError::Storage(format!("metadata record does not apply: {e}")))?;
        records.push(r);
    }
    Ok(())
}

/// A metadata change, decided without I/O: the metadata records it makes (applied to the
/// working snapshot as they are made), and what its reply becomes when the new snapshot
/// cannot be saved or part of it is rolled back.
pub(crate) trait MetadataChange {
    type Reply;
    /// Whether it places new partitions (and so needs the shards' recent load).
    const ADDS_PARTITIONS: bool;
    /// The live brokers its new replicas may go to, as the asking shard saw them.
    fn brokers(&self) -> &[i32] {
        &[]
    }
    /// Decides the change against `snap` and applies its records to it; returns the reply
    /// and the records (none when nothing changed).
    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>);
    /// The reply once saving the changed snapshot failed with `err`: nothing was applied.
    fn not_saved(reply: Self::Reply, err: &PartitionError) -> Self::Reply;
    /// The reply once the change to the topics in `undone` was taken back (`after` is the
    /// snapshot the change had made); `reason` is the error for such a topic. By default the
    /// reply stands: a change that opens no partitions (a deletion, an ACL change) has nothing
    /// a failed install could take back.
    fn rolled_back(
        reply: Self::Reply,
        _after: &MetadataSnapshot,
        _undone: &BTreeSet<String>,
        _reason: impl Fn(&str) -> PartitionError,
    ) -> Self::Reply {
        reply
    }
}

/// Per-topic replies once the change was not saved: what succeeded fails with `err`.
fn each_failed<T>(reply: Vec<Result<T, PartitionError>>, err: &PartitionError) -> Vec<Result<T, PartitionError>> {
    reply.into_iter().map(|r| r.and(Err(err.clone()))).collect()
}

impl MetadataChange for CreateTopics {
    type Reply = Vec<Result<CreatedTopic, PartitionError>>;
    const ADDS_PARTITIONS: bool = true;

    fn brokers(&self) -> &[i32] {
        &self.brokers
    }

    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>) {
        let validate_only = self.validate_only;
        let mut records = Vec::new();
        let results: Vec<_> = self
            .topics
            .into_iter()
            .map(|t| {
                let (created, new) = create_one(snap, t, validate_only, placing)?;
                record(snap, placing, &mut records, new)?;
                Ok(created)
            })
            .collect();
        (results, records)
    }

    fn not_saved(reply: Self::Reply, err: &PartitionError) -> Self::Reply {
        each_failed(reply, err)
    }

    fn rolled_back(
        reply: Self::Reply,
        after: &MetadataSnapshot,
        undone: &BTreeSet<String>,
        reason: impl Fn(&str) -> PartitionError,
    ) -> Self::Reply {
        reply
            .into_iter()
            .map(|r| {
                let c = r?;
                match undone.iter().find(|t| after.topics.get(*t).is_some_and(|m| m.id == c.id)) {
                    Some(t) => Err(reason(t)),
                    None => Ok(c),
                }
            })
            .collect()
    }
}

impl MetadataChange for DeleteTopics {
    type Reply = Vec<Result<[u8; 16], PartitionError>>;
    const ADDS_PARTITIONS: bool = false;

    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        let results: Vec<_> = self
            .names
            .into_iter()
            .map(|name| {
                let id = snap.topics.get(&name).map(|t| t.id).ok_or(PartitionError::UnknownTopicOrPartition)?;
                record(snap, placing, &mut records, vec![MetadataRecord::TopicDeleted { id }])?;
                Ok(id)
            })
            .collect();
        (results, records)
    }

    fn not_saved(reply: Self::Reply, err: &PartitionError) -> Self::Reply {
        each_failed(reply, err)
    }
}

/// A change to one existing topic (its configs or its partition count), whose reply is that
/// topic's result.
pub(crate) trait TopicChange {
    /// Whether it places new partitions (and so needs the shards' recent load).
    const ADDS_PARTITIONS: bool;
    /// The live brokers its new replicas may go to.
    fn brokers(&self) -> &[i32] {
        &[]
    }
    /// Checks the change against `snap` and returns its records.
    fn change(&self, snap: &MetadataSnapshot, placing: &Placing<'_>) -> Result<Vec<MetadataRecord>, PartitionError>;
    /// Only checked, never saved.
    fn validate_only(&self) -> bool;
}

impl<T: TopicChange> MetadataChange for T {
    type Reply = Result<(), PartitionError>;
    const ADDS_PARTITIONS: bool = T::ADDS_PARTITIONS;

    fn brokers(&self) -> &[i32] {
        TopicChange::brokers(self)
    }

    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        let r = self.change(snap, placing).and_then(|new| {
            if self.validate_only() {
                Ok(())
            } else {
                record(snap, placing, &mut records, new)
            }
        });
        (r, records)
    }

    fn not_saved(_: Self::Reply, err: &PartitionError) -> Self::Reply {
        Err(err.clone())
    }

    /// The reason, when anything was taken back.
    fn rolled_back(
        reply: Self::Reply,
        _: &MetadataSnapshot,
        undone: &BTreeSet<String>,
        reason: impl Fn(&str) -> PartitionError,
    ) -> Self::Reply {
        match undone.iter().next() {
            Some(t) => reply.and(Err(reason(t))),
            None => reply,
        }
    }
}

impl TopicChange for AlterConfigs {
    const ADDS_PARTITIONS: bool = false;

    fn change(&self, snap: &MetadataSnapshot, _: &Placing<'_>) -> Result<Vec<MetadataRecord>, PartitionError> {
        alter_configs(snap, &self.topic, &self.changes, self.replace_all)
    }

    fn validate_only(&self) -> bool {
        self.validate_only
    }
}

impl TopicChange for CreatePartitions {
    const ADDS_PARTITIONS: bool = true;

    fn brokers(&self) -> &[i32] {
        &self.brokers
    }

    fn change(&self, snap: &MetadataSnapshot, placing: &Placing<'_>) -> Result<Vec<MetadataRecord>, PartitionError> {
        add_partitions(snap, &self.topic, self.count, placing)
    }

    fn validate_only(&self) -> bool {
        self.validate_only
    }
}

/// The brokers new replicas may go to: the live ones the asking shard saw (this broker
/// alone when it named none, as auto-creation does).
fn assignable_brokers(node: i32, live: &[i32]) -> Vec<i32> {
    if live.is_empty() {
        vec![node]
    } else {
        live.to_vec()
    }
}

/// Saves a snapshot in the data directory (on the blocking pool).
async fn save(shard: &Shard, snap: MetadataSnapshot) -> Result<(), String> {
    let dir = shard.config.data_dir.clone();
    sluice_storage::disk::blocking(move || snap.save(&dir).map_err(|e| e.to_string())).await
}

/// Applies a change to the current snapshot; when it changed anything, saves and publishes
/// the result, and takes back what a shard could not install.
async fn apply_change<C: MetadataChange>(shard: &Rc<Shard>, change: C) -> C::Reply {
    // Placement weighs each shard's recent append rate, asked for only when partitions are added.
    let rates = if C::ADDS_PARTITIONS { recent_load(shard).await } else { Vec::new() };
    let node = shard.config.node_id;
    let brokers = match shard.replicas() {
        // Auto-creation names no brokers: in a cluster, the members this shard hears from.
        Some(r) if change.brokers().is_empty() => r.live_members().into_iter().map(|n| n.0).collect(),
        _ => assignable_brokers(node, change.brokers()),
    };
    let placing = Placing {
        n_shards: shard.n_shards,
        default_partitions: shard.config.num_partitions,
        rates: &rates,
        node,
        brokers: &brokers,
        default_replication_factor: shard.config.default_replication_factor,
    };
    if let Some(r) = shard.replicas() {
        return in_cluster(shard, &r, change, &placing).await;
    }
    let before = shard.metadata();
    let mut snap = (*before).clone();
    let (reply, records) = change.apply(&mut snap, &placing);
    if records.is_empty() {
        return reply;
    }
    snap.version += 1;
    if let Err(e) = save(shard, snap.clone()).await {
        tracing::error!(error = %e, "persisting metadata failed; change not applied");
        return C::not_saved(reply, &PartitionError::Storage(e));
    }
    let failures = publish(shard, snap.clone()).await;
    if failures.is_empty() {
        return reply;
    }
    let failed_topics: BTreeSet<String> =
        failures.iter().flat_map(|f| f.failed.iter().map(|(tp, _)| tp.topic.clone())).collect();
    let Some((back, undone)) = rollback(&before, &snap, &failed_topics) else {
        log_failures(&failures, "of topics this change did not create or grow");
        return reply;
    };
    tracing::error!(topics = ?undone, "a shard could not open the new partitions; rolling the change back");
    if let Err(e) = save(shard, back.clone()).await {
        // Published anyway: every shard then agrees, and the next change saves from it.
        tracing::error!(error = %e, "persisting the rolled-back metadata failed");
    }
    log_failures(&publish(shard, back).await, "while rolling back");
    C::rolled_back(reply, &snap, &undone, |topic| PartitionError::Storage(rollback_reason(&failures, topic)))
}

/// A change in a cluster: decided on the controller's caught-up snapshot, its records
/// proposed to the metadata log; answered once applied here (or NOT_CONTROLLER).
async fn in_cluster<C: MetadataChange>(
    shard: &Rc<Shard>,
    r: &Rc<Replicas>,
    change: C,
    placing: &Placing<'_>,
) -> C::Reply {
    if let Err(e) = cluster::caught_up(r).await {
        let (reply, _) = change.apply(&mut (*shard.metadata()).clone(), placing);
        return C::not_saved(reply, &e);
    }
    let mut snap = (*shard.metadata()).clone();
    let (reply, records) = change.apply(&mut snap, placing);
    if records.is_empty() {
        return reply;
    }
    match cluster::propose(r, &records).await {
        Ok(()) => reply,
        Err(e) => C::not_saved(reply, &e),
    }
}

/// The snapshot that takes back the part of the change `before` → `after` that touched a topic
/// in `failed` (a shard could not open one of its partitions), and the topics it takes back:
/// a topic the change created is removed, a topic it grew gets its old partitions back. A
/// failed topic the change did not create or grow is left as it is. `None` when nothing is
/// taken back. The result's version follows `after`'s.
pub(crate) fn rollback(
    before: &MetadataSnapshot,
    after: &MetadataSnapshot,
    failed: &BTreeSet<String>,
) -> Option<(MetadataSnapshot, BTreeSet<String>)> {
    let mut back = after.clone();
    let mut undone = BTreeSet::new();
    for name in failed {
        let Some(now) = after.topics.get(name) else { continue };
        match before.topics.get(name) {
            Some(old) if old.id == now.id && old.shards.len() < now.shards.len() => {
                back.topics.get_mut(name).expect("in after").shards.truncate(old.shards.len());
                if let Some(r) = back.replication.get_mut(name) {
                    r.partitions.truncate(old.shards.len());
                }
            }
            Some(old) if old.id == now.id => continue,
            _ => {
                back.topics.remove(name);
                back.replication.remove(name);
            }
        }
        undone.insert(name.clone());
    }
    if undone.is_empty() {
        return None;
    }
    back.version = after.version + 1;
    Some((back, undone))
}

/// What a client is told about a topic whose change was taken back.
fn rollback_reason(failures: &[InstallError], topic: &str) -> String {
    let why: Vec<String> = failures
        .iter()
        .flat_map(|f| {
            f.failed
                .iter()
                .filter(|(tp, _)| tp.topic == topic)
                .map(move |(tp, e)| format!("partition {tp} could not be created on shard {}: {e}", f.shard))
        })
        .collect();
    format!("{}; the change to topic {topic} was rolled back", why.join("; "))
}

fn log_failures(failures: &[InstallError], when: &str) {
    for f in failures {
        tracing::error!(error = %f, "installing metadata failed {when}");
    }
}

fn alter_configs(
    snap: &MetadataSnapshot,
    topic: &str,
    changes: &[ConfigChange],
    replace_all: bool,
) -> Result<Vec<MetadataRecord>, PartitionError> {
    let t = snap.topics.get(topic).ok_or(PartitionError::UnknownTopicOrPartition)?;
    let mut configs = if replace_all { Default::default() } else { t.configs.clone() };
    for c in changes {
        let def = topic_config::lookup(&c.key)
            .ok_or_else(|| PartitionError::InvalidConfig(format!("unknown topic config `{}`", c.key)))?;
        match c.op {
            ConfigOp::Set => {
                let v = c.value.clone().unwrap_or_default();
                configs.insert(c.key.clone(), v);
            }
            ConfigOp::Delete => {
                configs.remove(&c.key);
            }
            ConfigOp::Append | ConfigOp::Subtract => {
                if !matches!(def.kind, topic_config::Kind::ListOf(_)) {
                    return Err(PartitionError::InvalidConfig(format!(
                        "`{}` is not a list: APPEND and SUBTRACT do not apply",
                        c.key
                    )));
                }
                let current = topic_config::effective(&configs, &c.key).unwrap_or_default().to_string();
                let mut items: Vec<String> =
                    current.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                for v in c.value.as_deref().unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if c.op == ConfigOp::Append && !items.iter().any(|i| i == v) {
                        items.push(v.to_string());
                    } else if c.op == ConfigOp::Subtract {
                        items.retain(|i| i != v);
                    }
                }
                configs.insert(c.key.clone(), items.join(","));
            }
        }
        if let Some(v) = configs.get(&c.key) {
            topic_config::validate(&c.key, v).map_err(PartitionError::InvalidConfig)?;
        }
    }
    check_config_bounds(&configs)?;
    Ok(vec![MetadataRecord::ConfigChanged { id: t.id, configs }])
}

/// A topic's configs must fit one metadata record.
fn check_config_bounds(configs: &std::collections::BTreeMap<String, String>) -> Result<(), PartitionError> {
    if configs.len() > METADATA_RECORD_MAX_CONFIGS {
        return Err(PartitionError::InvalidConfig(format!(
            "{} configs set on one topic, at most {METADATA_RECORD_MAX_CONFIGS}",
            configs.len()
        )));
    }
    match configs.iter().find(|(k, v)| k.len().max(v.len()) > METADATA_RECORD_MAX_STRING_BYTES) {
        Some((k, _)) => Err(PartitionError::InvalidConfig(format!(
            "config `{k}`: names and values are at most {METADATA_RECORD_MAX_STRING_BYTES} bytes"
        ))),
        None => Ok(()),
    }
}

fn add_partitions(
    snap: &MetadataSnapshot,
    topic: &str,
    count: i32,
    placing: &Placing<'_>,
) -> Result<Vec<MetadataRecord>, PartitionError> {
    if is_internal(topic) {
        return Err(PartitionError::InvalidTopic(format!("{topic} is an internal topic")));
    }
    let t = snap.topics.get(topic).ok_or(PartitionError::UnknownTopicOrPartition)?;
    let current = t.shards.len();
    let current_i32 = i32::try_from(current).expect("a topic has at most MAX_PARTITIONS_PER_TOPIC partitions");
    if count <= current_i32 {
        return Err(PartitionError::InvalidPartitions(format!(
            "topic {topic} has {current_i32} partitions; the new count must be larger, got {count}"
        )));
    }
    if count > MAX_PARTITIONS_PER_TOPIC {
        return Err(PartitionError::InvalidPartitions(format!("at most {MAX_PARTITIONS_PER_TOPIC} partitions")));
    }
    let added = usize::try_from(count - current_i32).expect("count > current, checked above");
    // New partitions keep the topic's replication factor (that of its partition 0).
    let (rf, seed) = match snap.replication.get(topic) {
        Some(r) => (r.partitions.first().map_or(1, |p| p.replicas.len()), r.number),
        None => (1, 0),
    };
    let replicas = assign(placing.brokers, rf, current, added, seed)
        .map_err(|e| PartitionError::InvalidReplicationFactor(e.to_string()))?;
    Ok(vec![MetadataRecord::PartitionsAdded(PartitionsAdded { id: t.id, first: current_i32, replicas })])
}

fn create_one(
    snap: &MetadataSnapshot,
    t: NewTopic,
    validate_only: bool,
    placing: &Placing<'_>,
) -> Result<(CreatedTopic, Vec<MetadataRecord>), PartitionError> {
    validate_topic_name(&t.name).map_err(PartitionError::InvalidTopic)?;
    if snap.topics.contains_key(&t.name) {
        return Err(PartitionError::TopicAlreadyExists(t.name));
    }
    let partitions = if t.partitions == -1 { placing.default_partitions } else { t.partitions };
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(PartitionError::InvalidPartitions(format!(
            "number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, got {partitions}"
        )));
    }
    let rf = match t.replication_factor {
        -1 => usize::try_from(placing.default_replication_factor).unwrap_or(1),
        rf => usize::try_from(rf).map_err(|_| {
            PartitionError::InvalidReplicationFactor("Replication factor must be larger than 0.".to_string())
        })?,
    };
    for (k, v) in &t.configs {
        topic_config::validate(k, v).map_err(PartitionError::InvalidConfig)?;
    }
    check_config_bounds(&t.configs)?;
    let number = next_number(snap);
    let n = usize::try_from(partitions).expect("1..=MAX_PARTITIONS_PER_TOPIC, checked above");
    let replicas = assign(placing.brokers, rf, 0, n, number)
        .map_err(|e| PartitionError::InvalidReplicationFactor(e.to_string()))?;
    let id = new_topic_id();
    let created = CreatedTopic { id, partitions, configs: t.configs.clone(), replicas: replicas.clone() };
    if validate_only {
        return Ok((created, Vec::new()));
    }
    let record = TopicCreated { name: t.name, id, number, replicas, configs: t.configs };
    Ok((created, vec![MetadataRecord::TopicCreated(record)]))
}

/// Adds the internal `__consumer_offsets` topic to a snapshot that lacks it (at start-up,
/// before the shards run). Returns true when it was added.
pub fn ensure_offsets_topic(snap: &mut MetadataSnapshot, n_shards: usize, partitions: i32) -> bool {
    ensure_compacted_topic(snap, n_shards, crate::groups::OFFSETS_TOPIC, partitions)
}

/// Adds the internal `__transaction_state` topic to a snapshot that lacks it (at start-up,
/// before the shards run). Returns true when it was added.
pub fn ensure_transaction_topic(snap: &mut MetadataSnapshot, n_shards: usize, partitions: i32) -> bool {
    ensure_compacted_topic(snap, n_shards, crate::txn::TXN_TOPIC, partitions)
}

/// Adds internal topic `name` with `partitions` partitions (validated to 1..=1000 by the
/// config) and `cleanup.policy=compact`, placed over the shards, unless it exists. This broker
/// (`node`) is its only replica: at start-up a lone broker creates it itself.
fn ensure_compacted_topic(snap: &mut MetadataSnapshot, n_shards: usize, name: &str, partitions: i32) -> bool {
    if snap.topics.contains_key(name) {
        return false;
    }
    let load = snap.partitions_per_shard(n_shards);
    let n = usize::try_from(partitions).expect("internal topic partition counts are validated to 1..=1000");
    let shards = place(&load, n).into_iter().map(|s| s.0).collect();
    snap.topics.insert(
        name.to_string(),
        TopicMeta { id: new_topic_id(), shards, configs: crate::internal::internal_topic_configs() },
    );
    snap.version += 1;
    true
}

/// Internal topics (Kafka's double-underscore names) are not produced to, created or deleted
/// by clients.
pub fn is_internal(topic: &str) -> bool {
    topic == crate::groups::OFFSETS_TOPIC || topic == crate::txn::TXN_TOPIC
}

/// Sends the snapshot to every other shard, installs it here, and waits for all; returns what
/// each shard could not install.
async fn publish(shard: &Rc<Shard>, snap: MetadataSnapshot) -> Vec<InstallError> {
    let mut acks = Vec::new();
    for other in 0..shard.n_shards {
        if other == shard.id.index() {
            continue;
        }
        let (reply, rx) = oneshot::channel();
        let msg = ShardMsg::Publish { snapshot: Box::new(snap.clone()), reply };
        if shard.send(crate::shard::shard_id(other), msg).await.is_ok() {
            acks.push(rx);
        }
    }
    let mut failures = Vec::new();
    if let Err(e) = shard.install(snap).await {
        failures.push(e);
    }
    for rx in acks {
        // A dropped reply means that shard is stopping: nothing more to learn from it.
        if let Ok(Err(e)) = rx.await {
            failures.push(e);
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicMeta;

    fn topic(id: u8, shards: &[u16]) -> TopicMeta {
        TopicMeta { id: [id; 16], shards: shards.to_vec(), configs: Default::default() }
    }

    fn snap(version: u64, topics: &[(&str, TopicMeta)]) -> MetadataSnapshot {
        MetadataSnapshot {
            version,
            topics: topics.iter().map(|(n, t)| (n.to_string(), t.clone())).collect(),
            ..Default::default()
        }
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_created_topic_that_failed_is_removed_and_the_others_stay() {
        let before = snap(4, &[("old", topic(1, &[0]))]);
        let after = snap(5, &[("old", topic(1, &[0])), ("a", topic(2, &[0, 1])), ("b", topic(3, &[1, 0]))]);
        let (back, undone) = rollback(&before, &after, &names(&["a"])).expect("a is taken back");
        assert_eq!(undone, names(&["a"]));
        assert_eq!(back.version, 6, "a rollback is a new version");
        assert!(!back.topics.contains_key("a"));
        assert_eq!(back.topics["b"], after.topics["b"]);
        assert_eq!(back.topics["old"], before.topics["old"]);
    }

    #[test]
    fn a_rollback_takes_back_the_replication_state_too() {
        use crate::metadata::{PartitionState, TopicReplication};
        let repl = |number, n| TopicReplication { number, partitions: vec![PartitionState::new(vec![0]); n] };
        let mut before = snap(1, &[("g", topic(1, &[0]))]);
        before.replication.insert("g".into(), repl(1, 1));
        before.next_topic_number = 2;
        let mut after = snap(2, &[("g", topic(1, &[0, 1, 0])), ("a", topic(2, &[1]))]);
        after.replication.insert("g".into(), repl(1, 3));
        after.replication.insert("a".into(), repl(2, 1));
        after.next_topic_number = 3;
        let (back, _) = rollback(&before, &after, &names(&["a", "g"])).unwrap();
        back.check().expect("a consistent snapshot");
        assert!(!back.replication.contains_key("a"));
        assert_eq!(back.replication["g"].partitions.len(), 1);
        assert_eq!(back.next_topic_number, 3, "a number given is never given again");
    }

    #[test]
    fn grown_partitions_are_taken_back_and_unrelated_failures_ignored() {
        let before = snap(7, &[("t", topic(1, &[0, 1])), ("u", topic(2, &[1]))]);
        let after = snap(8, &[("t", topic(1, &[0, 1, 0, 1])), ("u", topic(2, &[1]))]);
        let (back, undone) = rollback(&before, &after, &names(&["t", "u"])).expect("t is taken back");
        assert_eq!(undone, names(&["t"]), "u was not changed: its failure is not this change's");
        assert_eq!(back.topics["t"].shards, vec![0, 1]);
        assert_eq!(back.topics["u"], before.topics["u"]);
        // Only a failure of an unchanged topic: nothing to undo.
        assert_eq!(rollback(&before, &after, &names(&["u"])), None);
        // A failed topic that the change deleted (absent after): nothing to undo.
        assert_eq!(rollback(&after, &before, &names(&["gone"])), None);
    }

    #[test]
    fn a_recreated_topic_counts_as_created() {
        let before = snap(1, &[("t", topic(1, &[0]))]);
        let after = snap(2, &[("t", topic(9, &[0, 1]))]);
        let (back, undone) = rollback(&before, &after, &names(&["t"])).unwrap();
        assert_eq!(undone, names(&["t"]));
        assert!(!back.topics.contains_key("t"));
    }

    #[test]
    fn the_reason_names_each_failed_partition_of_the_topic() {
        let e = PartitionError::Storage("File exists".into());
        let failures = vec![
            InstallError {
                shard: ShardId(1),
                failed: vec![
                    (sluice_core::TopicPartition::new("a", 1), e.clone()),
                    (sluice_core::TopicPartition::new("b", 0), e.clone()),
                ],
            },
            InstallError { shard: ShardId(0), failed: vec![(sluice_core::TopicPartition::new("a", 2), e)] },
        ];
        let r = rollback_reason(&failures, "a");
        assert!(r.contains("a-1 could not be created on shard 1"), "{r}");
        assert!(r.contains("a-2 could not be created on shard 0"), "{r}");
        assert!(!r.contains("b-0"), "{r}");
        assert!(r.ends_with("the change to topic a was rolled back"), "{r}");
    }
}

#[cfg(test)]
mod decision_tests;

pub mod acls;
pub mod cluster;
pub mod group_configs;
pub mod quotas;
pub mod reassign;
