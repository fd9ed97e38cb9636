//! Share groups (KIP-932, "queues for Kafka"): membership on the group's coordinator shard,
//! share-partition state on the shard that owns the partition, share sessions on the shard the
//! client's connection landed on. No locks: every piece of state has one owning shard and is
//! reached with a typed [`ShareCall`] over the mesh.
//!
//! Contract: a share group's membership ([`group::ShareGroup`]) lives on the shard that would
//! coordinate a classic group of that id (`groups::coordinator_shard`). A share-partition
//! ([`partition::SharePartition`]) is created on the owner of the partition the first time a
//! member fetches it (SPSO from the group's `share.auto.offset.reset`, else the broker's: the high watermark for
//! "latest", the log start for "earliest"), or read back from its state file ([`store`]). Its
//! state is written durably when it is created and after every acknowledgement, before the
//! acknowledgement is answered — to the local file on a lone broker, through the partition's
//! Raft log when the partition is replicated ([`replicated`]: every replica applies it, so a
//! new leader has it); acquisitions are not written (after a restart, records that
//! were acquired are available again with the delivery count last written). When a member
//! leaves or is expired, every shard releases the records it held. A share session (ShareFetch
//! / ShareAcknowledge epochs, [`sessions`]) lives on the shard of the connection that opened it;
//! when it closes (epoch -1) or that connection ends, the member's acquired records are released
//! on every shard (Kafka's release on session close and on a dropped connection; the delivery
//! count stays as it is, as Kafka's). The admin operations on share-partition state (read,
//! reset, forget: [`offsets`]) run on each partition's leader; in a cluster the group's
//! coordinator reaches the leaders on other brokers over the peer links ([`remote`]).

pub mod group;
pub mod partition;
pub mod remote;
pub mod replicated;
pub mod sessions;
pub mod store;

use crate::error::PartitionError;
use crate::groups::{self, GroupError, GroupListing};
use crate::msg::ShardMsg;
use crate::route::{self, Tagged};
use crate::shard::Shard;
use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::join_all;
use group::{GroupDescription, HeartbeatRequest, HeartbeatResponse, Settings, ShareGroup, TopicCounts};
use partition::{AckError, AckType, AcquiredRange, Limits, SharePartition};
use sluice_core::{Offset, ShardId, TopicPartition};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A share-partition's key on its owner shard.
type PartKey = (String, TopicPartition);

pub use sessions::{ConnId, SessionError};

/// One shard's share-group state (each map holds what this shard owns).
pub struct ShareState {
    groups: RefCell<BTreeMap<String, ShareGroup>>,
    partitions: RefCell<HashMap<PartKey, SharePartition>>,
    sessions: RefCell<sessions::Sessions>,
    /// One state-file write at a time on this shard (later states never lose a race).
    writer: glommio::sync::Semaphore,
    /// Replicated partitions this broker leads and serves share-partitions of: the leader
    /// epoch in which it caught up with the state records committed before it (`replicated`).
    ready: RefCell<HashMap<TopicPartition, i32>>,
    /// Committed state waiting for its file write (`replicated`: the latest one per key).
    pending: RefCell<HashMap<PartKey, store::Stored>>,
}

impl Default for ShareState {
    fn default() -> Self {
        ShareState {
            groups: Default::default(),
            partitions: Default::default(),
            sessions: Default::default(),
            writer: glommio::sync::Semaphore::new(1),
            ready: Default::default(),
            pending: Default::default(),
        }
    }
}

/// One partition of a ShareFetch, for its owner.
#[derive(Debug, Clone)]
pub struct AcquireItem {
    pub index: usize,
    pub tp: TopicPartition,
    pub max_bytes: usize,
}

/// What a member got from one partition: whole batches from the log and the offsets in them
/// that are its to process.
#[derive(Debug, Clone, Default)]
pub struct Acquired {
    pub records: Bytes,
    pub ranges: Vec<AcquiredRange>,
}

/// One acknowledgement batch of one partition.
#[derive(Debug, Clone)]
pub struct AckBatch {
    pub first: i64,
    pub last: i64,
    pub types: Vec<AckType>,
}

/// One partition's acknowledgements, for its owner.
#[derive(Debug, Clone)]
pub struct AckItem {
    pub index: usize,
    pub tp: TopicPartition,
    pub batches: Vec<AckBatch>,
}

/// An operation on share-group state, run on the shard owning that state.
#[derive(Debug)]
pub enum ShareCall {
    Heartbeat {
        req: HeartbeatRequest,
        reply: oneshot::Sender<Result<HeartbeatResponse, GroupError>>,
    },
    Describe {
        group_id: String,
        reply: oneshot::Sender<Option<GroupDescription>>,
    },
    List {
        reply: oneshot::Sender<Vec<GroupListing>>,
    },
    Delete {
        group_id: String,
        reply: oneshot::Sender<Result<bool, GroupError>>,
    },
    Acquire {
        group_id: String,
        member_id: String,
        items: Vec<AcquireItem>,
        max_records: usize,
        reply: oneshot::Sender<Vec<Tagged<Acquired>>>,
    },
    Acknowledge {
        group_id: String,
        member_id: String,
        items: Vec<AckItem>,
        reply: oneshot::Sender<Vec<Tagged<Result<(), AckError>>>>,
    },
    Release {
        group_id: String,
        member_id: String,
    },
    /// Start offsets (`None`: not initialized); with `set`, first moves them (`Some(None)`:
    /// forget the share-partition).
    Offsets {
        group_id: String,
        items: Vec<(usize, TopicPartition)>,
        set: Option<Option<i64>>,
        reply: oneshot::Sender<Vec<Tagged<Option<i64>>>>,
    },
}

/// Runs a call on this shard (the owner of the state it names).
pub async fn handle(shard: Rc<Shard>, call: ShareCall) {
    match call {
        ShareCall::Heartbeat { req, reply } => drop(reply.send(heartbeat_local(&shard, req).await)),
        ShareCall::Describe { group_id, reply } => drop(reply.send(describe_local(&shard, &group_id).await)),
        ShareCall::List { reply } => drop(reply.send(list_local(&shard).await)),
        ShareCall::Delete { group_id, reply } => drop(reply.send(delete_local(&shard, &group_id).await)),
        ShareCall::Acquire { group_id, member_id, items, max_records, reply } => {
            drop(reply.send(acquire_local(&shard, &group_id, &member_id, items, max_records).await))
        }
        ShareCall::Acknowledge { group_id, member_id, items, reply } => {
            drop(reply.send(acknowledge_local(&shard, &group_id, &member_id, items).await))
        }
        ShareCall::Release { group_id, member_id } => release_local(&shard, &group_id, &member_id),
        ShareCall::Offsets { group_id, items, set, reply } => {
            drop(reply.send(offsets_local(&shard, &group_id, items, set).await))
        }
    }
}

async fn on_shard<R>(shard: &Rc<Shard>, to: ShardId, make: impl FnOnce(oneshot::Sender<R>) -> ShareCall) -> Option<R> {
    let (tx, rx) = oneshot::channel();
    let call = make(tx);
    if to == shard.id {
        handle(shard.clone(), call).await;
    } else {
        shard.send(to, ShardMsg::Share(call)).await.ok()?;
    }
    rx.await.ok()
}

fn coordinator(shard: &Shard, group_id: &str) -> Result<ShardId, GroupError> {
    groups::coordinator_shard(shard, group_id).ok_or_else(|| groups::not_hosted(shard))
}

// ---- membership (coordinator shard) ----

/// ShareGroupHeartbeat.
pub async fn heartbeat(shard: &Rc<Shard>, req: HeartbeatRequest) -> Result<HeartbeatResponse, GroupError> {
    let to = coordinator(shard, &req.group_id)?;
    on_shard(shard, to, |reply| ShareCall::Heartbeat { req, reply }).await.ok_or(GroupError::CoordinatorNotAvailable)?
}

/// ShareGroupDescribe of one group (`None`: no such share group).
pub async fn describe(shard: &Rc<Shard>, group_id: &str) -> Result<Option<GroupDescription>, GroupError> {
    let to = coordinator(shard, group_id)?;
    let group_id = group_id.to_string();
    on_shard(shard, to, |reply| ShareCall::Describe { group_id, reply })
        .await
        .ok_or(GroupError::CoordinatorNotAvailable)
}

/// Ok when `group_id` has no members (or is not a share group): offsets may then be altered
/// or deleted; NON_EMPTY_GROUP otherwise, or the coordinator's error.
pub async fn require_empty(shard: &Rc<Shard>, group_id: &str) -> Result<(), GroupError> {
    match describe(shard, group_id).await? {
        Some(d) if !d.members.is_empty() => Err(GroupError::NonEmptyGroup),
        _ => Ok(()),
    }
}

/// Every share group of every shard (for ListGroups).
pub async fn list_all(shard: &Rc<Shard>) -> Vec<GroupListing> {
    let mut all = Vec::new();
    for s in 0..shard.n_shards {
        all.extend(
            on_shard(shard, crate::shard::shard_id(s), |reply| ShareCall::List { reply }).await.unwrap_or_default(),
        );
    }
    all
}

/// DeleteGroups of a share group: `Ok(false)` when there is no such share group; its
/// share-partitions' state is forgotten everywhere.
pub async fn delete(shard: &Rc<Shard>, group_id: &str) -> Result<bool, GroupError> {
    let to = coordinator(shard, group_id)?;
    let g = group_id.to_string();
    let found = on_shard(shard, to, |reply| ShareCall::Delete { group_id: g, reply })
        .await
        .ok_or(GroupError::CoordinatorNotAvailable)??;
    if found {
        let items: Vec<(usize, TopicPartition)> = all_partitions(shard).into_iter().enumerate().collect();
        let failed: Vec<_> =
            offsets(shard, group_id, items, Some(None)).await.into_iter().filter_map(|(_, r)| r.err()).collect();
        if let Some(e) = failed.first() {
            tracing::warn!(group = %group_id, partitions = failed.len(), error = %e, "deleted share group's state not forgotten everywhere");
        }
    }
    Ok(found)
}

/// Every partition of every topic a share group can consume (not the internal ones).
fn all_partitions(shard: &Shard) -> Vec<TopicPartition> {
    let meta = shard.metadata();
    meta.topics
        .iter()
        .filter(|(name, _)| !name.starts_with("__"))
        .flat_map(|(name, t)| {
            (0..t.shards.len())
                .map(move |p| TopicPartition::new(name.clone(), i32::try_from(p).expect("a partition index is an i32")))
        })
        .collect()
}

/// The membership settings of a share group (its group configs over the broker's).
fn settings(shard: &Shard, group_id: &str) -> Settings {
    let g = crate::group_config::for_group(shard, group_id);
    Settings {
        session_timeout: Duration::from_millis(u64::try_from(g.share_session_timeout_ms).unwrap_or(45_000)),
        heartbeat_interval_ms: g.share_heartbeat_interval_ms,
        max_members: shard.config.group_share_max_size,
    }
}

fn topic_counts(shard: &Shard) -> TopicCounts {
    let meta = shard.metadata();
    meta.topics
        .iter()
        .filter(|(name, _)| !name.starts_with("__"))
        .map(|(name, t)| (name.clone(), i32::try_from(t.shards.len()).expect("partition count fits an i32")))
        .collect()
}

/// Takes in the share group records the coordinator met while loading `__consumer_offsets`
/// (at start, or when this broker was elected leader of an offsets partition), in log order.
fn adopt_loaded(shard: &Shard) {
    let loaded = std::mem::take(&mut *shard.groups.share_loaded.borrow_mut());
    if loaded.is_empty() {
        return;
    }
    let now = Instant::now();
    let mut groups = shard.share.groups.borrow_mut();
    for (id, value) in loaded {
        match value.and_then(|v| ShareGroup::decode(&v, now)) {
            Some(g) => {
                groups.insert(id, g);
            }
            None => {
                groups.remove(&id);
            }
        }
    }
}

/// Writes a share group's record (its stored form, or a tombstone when `value` is empty) to
/// its `__consumer_offsets` partition; Ok once durable (committed, in a cluster).
async fn write_group(shard: &Rc<Shard>, group_id: &str, value: Vec<u8>) -> Result<(), GroupError> {
    groups::coordinator::write(shard, group_id, vec![(groups::store::share_key(group_id), value)]).await
}

async fn heartbeat_local(shard: &Rc<Shard>, req: HeartbeatRequest) -> Result<HeartbeatResponse, GroupError> {
    adopt_loaded(shard);
    let topics = topic_counts(shard);
    let (resp, left, record) = {
        let mut groups = shard.share.groups.borrow_mut();
        let g = groups.entry(req.group_id.clone()).or_default();
        let before = g.encode();
        let (resp, left) = g.heartbeat(&req, Instant::now(), &settings(shard, &req.group_id), &topics)?;
        let after = g.encode();
        (resp, left, (after != before).then_some(after))
    };
    for member in left {
        broadcast_release(shard, &req.group_id, &member);
    }
    // Membership changes are durable before they are answered (as a KIP-848 group's).
    if let Some(value) = record {
        write_group(shard, &req.group_id, value).await?;
    }
    Ok(resp)
}

async fn describe_local(shard: &Rc<Shard>, group_id: &str) -> Option<GroupDescription> {
    adopt_loaded(shard);
    expire_local(shard, group_id).await;
    shard.share.groups.borrow().get(group_id).map(|g| g.describe())
}

/// Removes the group's members whose session ran out and releases their records on every
/// shard; returns the group's new stored form when some were removed (None: no change).
fn expire_members(shard: &Rc<Shard>, group_id: &str) -> Option<Vec<u8>> {
    let topics = topic_counts(shard);
    let (left, value) = {
        let mut groups = shard.share.groups.borrow_mut();
        let g = groups.get_mut(group_id)?;
        let left = g.expire(Instant::now(), &settings(shard, group_id), &topics);
        let value = (!left.is_empty()).then(|| g.encode());
        (left, value)
    };
    for member in left {
        broadcast_release(shard, group_id, &member);
    }
    value
}

/// [`expire_members`], and the removal made durable (as a heartbeat's), so a restart or a
/// coordinator failover does not bring the expired members back. A failed write is logged:
/// the members are gone from memory all the same, as after a heartbeat's failed write.
async fn expire_local(shard: &Rc<Shard>, group_id: &str) {
    if let Some(value) = expire_members(shard, group_id) {
        if let Err(e) = write_group(shard, group_id, value).await {
            tracing::warn!(group = %group_id, error = %e, "could not record the share group's expired members");
        }
    }
}

/// The periodic sweep of this shard's share groups (run with the group coordinator's, every
/// `GROUP_SWEEP_INTERVAL_MS`): members silent for the session timeout are removed and the
/// change written, even when nobody heartbeats, describes or lists the group any more (Kafka
/// expires share group members with a timer too). Groups this shard does not coordinate now
/// (a lost leadership) are left alone.
pub fn sweep(shard: &Rc<Shard>) {
    if shard.share.groups.borrow().is_empty() && shard.groups.share_loaded.borrow().is_empty() {
        return;
    }
    adopt_loaded(shard);
    let ids: Vec<String> = shard.share.groups.borrow().keys().cloned().collect();
    for id in ids {
        if shard.groups.admits(shard, &id).is_err() {
            continue;
        }
        if expire_members(shard, &id).is_some() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                // The group as it is when the write starts (a heartbeat may have changed it
                // since; a deleted group: its tombstone again).
                let value = shard.share.groups.borrow().get(&id).map(ShareGroup::encode).unwrap_or_default();
                if let Err(e) = write_group(&shard, &id, value).await {
                    tracing::warn!(group = %id, error = %e, "could not record the share group's expired members");
                }
            })
            .detach();
        }
    }
}

async fn list_local(shard: &Rc<Shard>) -> Vec<GroupListing> {
    adopt_loaded(shard);
    let ids: Vec<String> = shard.share.groups.borrow().keys().cloned().collect();
    for id in &ids {
        expire_local(shard, id).await;
    }
    shard
        .share
        .groups
        .borrow()
        .iter()
        .map(|(id, g)| GroupListing {
            group_id: id.clone(),
            protocol_type: "share".to_string(),
            state: g.state(),
            group_type: "share",
        })
        .collect()
}

async fn delete_local(shard: &Rc<Shard>, group_id: &str) -> Result<bool, GroupError> {
    adopt_loaded(shard);
    expire_local(shard, group_id).await;
    {
        let mut groups = shard.share.groups.borrow_mut();
        match groups.get(group_id) {
            None => return Ok(false),
            Some(g) if !g.is_empty() => return Err(GroupError::NonEmptyGroup),
            Some(_) => groups.remove(group_id),
        };
    }
    write_group(shard, group_id, Vec::new()).await?;
    Ok(true)
}

/// Tells every shard that `member` left `group_id` (fire and forget).
fn broadcast_release(shard: &Rc<Shard>, group_id: &str, member_id: &str) {
    for s in 0..shard.n_shards {
        let to = crate::shard::shard_id(s);
        let (g, m) = (group_id.to_string(), member_id.to_string());
        if to == shard.id {
            release_local(shard, &g, &m);
        } else {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let _ = shard.send(to, ShardMsg::Share(ShareCall::Release { group_id: g, member_id: m })).await;
            })
            .detach();
        }
    }
}

// ---- share-partitions (owner shard) ----

/// The share-partition settings of a share group (its group configs over the broker's).
fn limits(shard: &Shard, group_id: &str) -> Limits {
    let g = crate::group_config::for_group(shard, group_id);
    Limits {
        lock: Duration::from_millis(u64::try_from(g.share_record_lock_duration_ms).unwrap_or(30_000)),
        delivery_count_limit: u16::try_from(g.share_delivery_count_limit).unwrap_or(5),
        max_locks: g.share_partition_max_record_locks,
    }
}

fn state_path(shard: &Shard, group_id: &str, tp: &TopicPartition) -> Option<std::path::PathBuf> {
    let meta = shard.metadata();
    let id = meta.topics.get(&tp.topic)?.id;
    Some(store::file(shard.data_dir(), group_id, &id, tp.partition.0))
}

/// Makes sure the share-partition is in memory (read back from its file, or created from the
/// reset policy and written). `None`: this shard has no such partition.
async fn ensure(shard: &Rc<Shard>, group_id: &str, tp: &TopicPartition, create: bool) -> Option<()> {
    let key = (group_id.to_string(), tp.clone());
    if shard.share.partitions.borrow().contains_key(&key) {
        return Some(());
    }
    let path = state_path(shard, group_id, tp)?;
    let log = shard.log(tp)?;
    let p2 = path.clone();
    let stored = sluice_storage::disk::blocking(move || store::read(&p2)).await;
    let fresh = stored.is_none();
    let part = match stored {
        Some(s) => SharePartition::restore(s.spso, &s.entries, limits(shard, group_id)),
        None if !create => return None,
        None => {
            let start = match crate::group_config::for_group(shard, group_id).share_auto_offset_reset.as_str() {
                "earliest" => log.log_start().0,
                _ => log.high_watermark().0,
            };
            SharePartition::new(start, limits(shard, group_id))
        }
    };
    // Another task may have loaded it meanwhile: keep the first.
    let inserted = {
        let mut parts = shard.share.partitions.borrow_mut();
        match parts.contains_key(&key) {
            true => false,
            false => {
                parts.insert(key.clone(), part);
                true
            }
        }
    };
    if inserted && fresh {
        // The SPSO chosen now must survive a restart (else "latest" would move it).
        let _ = persist(shard, &key).await;
    }
    Some(())
}

/// The share-partition's durable state now (None: not in memory).
fn snapshot(shard: &Shard, key: &PartKey) -> Option<store::Stored> {
    let parts = shard.share.partitions.borrow();
    let (spso, entries) = parts.get(key)?.durable();
    Some(store::Stored { spso, entries })
}

/// Writes the share-partition's current state durably: through the partition's Raft log
/// when it is replicated (answered at commit), else to its local file.
async fn persist(shard: &Rc<Shard>, key: &PartKey) -> Result<(), PartitionError> {
    if replicated::group_of(shard, &key.1).is_some() {
        let Some(state) = snapshot(shard, key) else { return Ok(()) };
        return replicated::propose(shard, key, state).await;
    }
    let _permit = shard.share.writer.acquire_permit(1).await.map_err(|_| PartitionError::ShuttingDown)?;
    let Some(path) = state_path(shard, &key.0, &key.1) else { return Ok(()) };
    let Some(stored) = snapshot(shard, key) else { return Ok(()) };
    sluice_storage::disk::blocking(move || store::write(&path, &stored))
        .await
        .map_err(|e| PartitionError::Storage(e.to_string()))
}

/// The last offset of the last whole batch in `records` (None: no whole batch).
fn last_offset(records: &[u8]) -> Option<i64> {
    let mut at = 0usize;
    let mut last = None;
    while records.len() >= at + 27 {
        let base = i64::from_be_bytes(records[at..at + 8].try_into().ok()?);
        let len = usize::try_from(i32::from_be_bytes(records[at + 8..at + 12].try_into().ok()?)).ok()?;
        let delta = i64::from(i32::from_be_bytes(records[at + 23..at + 27].try_into().ok()?));
        if records.len() < at + 12 + len {
            break;
        }
        last = Some(base + delta);
        at += 12 + len;
    }
    last
}

async fn acquire_local(
    shard: &Rc<Shard>,
    group_id: &str,
    member_id: &str,
    items: Vec<AcquireItem>,
    max_records: usize,
) -> Vec<Tagged<Acquired>> {
    let member: Rc<str> = Rc::from(member_id);
    let mut left = max_records;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let r =
            if left == 0 { Ok(Acquired::default()) } else { acquire_one(shard, group_id, &member, &item, left).await };
        if let Ok(a) = &r {
            let n: i64 = a.ranges.iter().map(|(f, l, _)| l - f + 1).sum();
            left = left.saturating_sub(usize::try_from(n).unwrap_or(0));
        }
        out.push((item.index, r));
    }
    out
}

async fn acquire_one(
    shard: &Rc<Shard>,
    group_id: &str,
    member: &Rc<str>,
    item: &AcquireItem,
    max_records: usize,
) -> Result<Acquired, PartitionError> {
    leading(shard, &item.tp).await?;
    let log = shard.log(&item.tp).ok_or(PartitionError::UnknownTopicOrPartition)?;
    ensure(shard, group_id, &item.tp, true).await.ok_or(PartitionError::UnknownTopicOrPartition)?;
    let key = (group_id.to_string(), item.tp.clone());
    let now = Instant::now();
    let settings = limits(shard, group_id);
    let start = {
        let mut parts = shard.share.partitions.borrow_mut();
        let p = parts.get_mut(&key).ok_or(PartitionError::UnknownTopicOrPartition)?;
        // The group's configs may have changed since the share-partition was loaded.
        p.set_limits(settings);
        p.skip_below(log.log_start().0);
        p.next_fetch_offset(now, log.high_watermark().0)
    };
    let Some(start) = start else { return Ok(Acquired::default()) };
    let mut read = log.read(Offset(start), item.max_bytes).await.map_err(PartitionError::from)?;
    let mut skipped = Vec::new();
    if log.is_replicated() {
        skipped = replicated::control_spans(&read.records);
        read.records = crate::replica::strip_raft_control(std::mem::take(&mut read.records));
    }
    let Some(last) = last_offset(&read.records) else { return Ok(Acquired::default()) };
    let ranges = {
        let mut parts = shard.share.partitions.borrow_mut();
        let p = parts.get_mut(&key).ok_or(PartitionError::UnknownTopicOrPartition)?;
        for &(a, b) in &skipped {
            p.skip(a, b);
        }
        p.acquire(member, start, last, read.high_watermark.0, max_records, Instant::now())
    };
    if ranges.is_empty() {
        return Ok(Acquired::default());
    }
    Ok(Acquired { records: read.records, ranges })
}

async fn acknowledge_local(
    shard: &Rc<Shard>,
    group_id: &str,
    member_id: &str,
    items: Vec<AckItem>,
) -> Vec<Tagged<Result<(), AckError>>> {
    let mut out = Vec::with_capacity(items.len());
    let mut touched = Vec::new();
    for item in items {
        if let Err(e) = leading(shard, &item.tp).await {
            out.push((item.index, Err(e)));
            continue;
        }
        if ensure(shard, group_id, &item.tp, false).await.is_none() {
            let e = if shard.log(&item.tp).is_some() {
                Ok(Err(AckError::InvalidRecordState))
            } else {
                Err(PartitionError::UnknownTopicOrPartition)
            };
            out.push((item.index, e));
            continue;
        }
        let key = (group_id.to_string(), item.tp.clone());
        let now = Instant::now();
        let mut result = Ok(());
        if let Some(p) = shard.share.partitions.borrow_mut().get_mut(&key) {
            for b in &item.batches {
                if let Err(e) = p.acknowledge(member_id, b.first, b.last, &b.types, now) {
                    result = Err(e);
                }
            }
        }
        // RENEW alone changes no stored state: nothing to write.
        if item.batches.iter().any(|b| b.types.iter().any(|t| t.changes_durable_state())) {
            touched.push((out.len(), key));
        }
        out.push((item.index, Ok(result)));
    }
    // Durable before answered.
    for (i, key) in touched {
        if let Err(e) = persist(shard, &key).await {
            out[i].1 = Err(e);
        }
    }
    out
}

/// Ok when this broker may change `tp`'s share-partitions (it leads a replicated partition
/// and caught up, or the partition is not replicated).
async fn leading(shard: &Rc<Shard>, tp: &TopicPartition) -> Result<(), PartitionError> {
    crate::replica::check_leader(shard, tp)?;
    replicated::ready(shard, tp).await
}

fn release_local(shard: &Rc<Shard>, group_id: &str, member_id: &str) {
    for ((g, _), p) in shard.share.partitions.borrow_mut().iter_mut() {
        if g == group_id {
            p.release_member(member_id);
        }
    }
}

async fn offsets_local(
    shard: &Rc<Shard>,
    group_id: &str,
    items: Vec<(usize, TopicPartition)>,
    set: Option<Option<i64>>,
) -> Vec<Tagged<Option<i64>>> {
    let mut out = Vec::with_capacity(items.len());
    for (index, tp) in items {
        out.push((index, offsets_one(shard, group_id, tp, set).await));
    }
    out
}

/// One share-partition's start offset, read, moved or forgotten on its owner shard. In a
/// cluster only its leader does it (NOT_LEADER_OR_FOLLOWER elsewhere, so the coordinator asks
/// the leader): a follower's copy may be behind, and only the leader writes the state.
async fn offsets_one(
    shard: &Rc<Shard>,
    group_id: &str,
    tp: TopicPartition,
    set: Option<Option<i64>>,
) -> Result<Option<i64>, PartitionError> {
    if shard.replicas().is_some() {
        leading(shard, &tp).await?;
    }
    let key = (group_id.to_string(), tp.clone());
    let known = ensure(shard, group_id, &tp, false).await.is_some();
    match set {
        None => Ok(shard.share.partitions.borrow().get(&key).map(|p| p.spso())),
        Some(None) => forget(shard, &key, known).await.map(|()| None),
        Some(Some(at)) => {
            // State is written only where the partition's log is.
            shard.log(&tp).ok_or(PartitionError::UnknownTopicOrPartition)?;
            if !known {
                shard
                    .share
                    .partitions
                    .borrow_mut()
                    .insert(key.clone(), SharePartition::new(at, limits(shard, group_id)));
            }
            if let Some(p) = shard.share.partitions.borrow_mut().get_mut(&key) {
                p.reset_to(at);
            }
            persist(shard, &key).await.map(|_| Some(at))
        }
    }
}

/// Forgets a share-partition (DeleteShareGroupOffsets, DeleteGroups; `known`: this shard had
/// its state). A replicated partition's is forgotten by its leader through the partition's
/// Raft log, so every replica forgets it ([`replicated::forget`]; NOT_LEADER_OR_FOLLOWER on
/// another replica, as AlterShareGroupOffsets); else here, in memory and its file.
async fn forget(shard: &Rc<Shard>, key: &PartKey, known: bool) -> Result<(), PartitionError> {
    if replicated::group_of(shard, &key.1).is_some() {
        leading(shard, &key.1).await?;
        return if known { replicated::forget(shard, key).await } else { Ok(()) };
    }
    shard.share.partitions.borrow_mut().remove(key);
    let Some(path) = state_path(shard, &key.0, &key.1) else { return Ok(()) };
    sluice_storage::disk::blocking(move || store::remove(&path))
        .await
        .map_err(|e| PartitionError::Storage(e.to_string()))
}

// ---- routing of partition operations ----

async fn per_owner<T, R: 'static>(
    shard: &Rc<Shard>,
    items: Vec<T>,
    tp: impl Fn(&T) -> &TopicPartition,
    index: impl Fn(&T) -> usize,
    make: impl Fn(Vec<T>, oneshot::Sender<Vec<Tagged<R>>>) -> ShareCall,
) -> Vec<Tagged<R>> {
    let grouped = route::group_by_owner(shard, items, tp);
    let mut out: Vec<Tagged<R>> = route::unknown(grouped.unknown, &index);
    let mut parts = Vec::new();
    for (owner, items) in grouped.by_owner {
        let indexes: Vec<usize> = items.iter().map(&index).collect();
        let call = on_shard(shard, owner, |reply| make(items, reply));
        parts.push(async move {
            call.await.unwrap_or_else(|| indexes.into_iter().map(|i| (i, Err(PartitionError::ShuttingDown))).collect())
        });
    }
    for part in join_all(parts).await {
        out.extend(part);
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

/// Acquires records of the listed partitions for a member (ShareFetch).
pub async fn acquire(
    shard: &Rc<Shard>,
    group_id: &str,
    member_id: &str,
    items: Vec<AcquireItem>,
    max_records: usize,
) -> Vec<Tagged<Acquired>> {
    per_owner(
        shard,
        items,
        |i| &i.tp,
        |i| i.index,
        |items, reply| ShareCall::Acquire {
            group_id: group_id.to_string(),
            member_id: member_id.to_string(),
            items,
            max_records,
            reply,
        },
    )
    .await
}

/// Applies a member's acknowledgements (answered once durable).
pub async fn acknowledge(
    shard: &Rc<Shard>,
    group_id: &str,
    member_id: &str,
    items: Vec<AckItem>,
) -> Vec<Tagged<Result<(), AckError>>> {
    per_owner(
        shard,
        items,
        |i| &i.tp,
        |i| i.index,
        |items, reply| ShareCall::Acknowledge {
            group_id: group_id.to_string(),
            member_id: member_id.to_string(),
            items,
            reply,
        },
    )
    .await
}

/// Start offsets of a group's share-partitions; with `set`, moves (or forgets) them first.
/// In a cluster each partition's leader does it, wherever it is ([`remote`]).
pub async fn offsets(
    shard: &Rc<Shard>,
    group_id: &str,
    items: Vec<(usize, TopicPartition)>,
    set: Option<Option<i64>>,
) -> Vec<Tagged<Option<i64>>> {
    if shard.replicas().is_none() {
        return offsets_here(shard, group_id, items, set).await;
    }
    remote::run(shard, group_id, items, remote::StateOp::of_set(set)).await
}

/// [`offsets`] on this broker's owner shards of the partitions.
async fn offsets_here(
    shard: &Rc<Shard>,
    group_id: &str,
    items: Vec<(usize, TopicPartition)>,
    set: Option<Option<i64>>,
) -> Vec<Tagged<Option<i64>>> {
    per_owner(
        shard,
        items,
        |i| &i.1,
        |i| i.0,
        |items, reply| ShareCall::Offsets { group_id: group_id.to_string(), items, set, reply },
    )
    .await
}

/// Releases, on every shard, the records a member holds (its share session closed).
pub fn release(shard: &Rc<Shard>, group_id: &str, member_id: &str) {
    broadcast_release(shard, group_id, member_id);
}

// ---- share sessions (the connection's shard) ----

/// A new connection on this shard, for its share sessions.
pub fn connect(shard: &Shard) -> ConnId {
    shard.share.sessions.borrow_mut().connect()
}

/// Opens (epoch 0), continues (epoch > 0) or closes (epoch -1) a member's share session on
/// this shard, for connection `conn`. Returns the session's partitions after `add` and `forget`
/// (a closed session: the ones it had).
pub fn session(
    shard: &Shard,
    group_id: &str,
    member_id: &str,
    step: sessions::Step<'_>,
) -> Result<Vec<TopicPartition>, SessionError> {
    shard.share.sessions.borrow_mut().step(group_id, member_id, step)
}

/// Connection `conn` ended: its share sessions are closed and their members' acquired records
/// released on every shard, as when a session closes.
pub fn disconnect(shard: &Rc<Shard>, conn: ConnId) {
    let gone = shard.share.sessions.borrow_mut().disconnect(conn);
    for (group_id, member_id) in gone {
        broadcast_release(shard, &group_id, &member_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_offset_of_whole_batches() {
        let mut b = vec![0u8; 61 + 61];
        for (at, base, delta) in [(0usize, 10i64, 4i32), (61, 15, 2)] {
            b[at..at + 8].copy_from_slice(&base.to_be_bytes());
            b[at + 8..at + 12].copy_from_slice(&49i32.to_be_bytes());
            b[at + 23..at + 27].copy_from_slice(&delta.to_be_bytes());
        }
        assert_eq!(last_offset(&b), Some(17));
        assert_eq!(last_offset(&b[..100]), Some(14));
        assert_eq!(last_offset(&b[..20]), None);
    }
}
