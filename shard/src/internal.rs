//! The internal topics a coordinator keeps its log in (`__consumer_offsets` for the group
//! coordinator, `__transaction_state` for the transaction coordinator): appends, the one
//! reader both coordinators load their state with, and, in a cluster, which partitions a
//! shard coordinates (it leads them and has loaded them).
//!
//! Contract:
//! - [`append_internal`] writes its records as one batch (keys and values, the time now) to
//!   the partition of the topic the caller names, on this shard, and returns only once the
//!   batch is durable: appended and fdatasync'd on a single-replica partition, proposed to the
//!   partition's Raft group and committed on a replicated one (answered NOT_COORDINATOR when
//!   this broker does not lead it; a commit not reached within `COORDINATOR_APPEND_TIMEOUT_MS`
//!   is [`InternalError::TimedOut`], never a hang). A topic not created yet, or a partition this shard does
//!   not hold, is [`InternalError::Unavailable`]; the caller maps the errors to its own.
//! - [`read_to_hw`] hands its callback every whole data batch of a partition from the log
//!   start to the high watermark (the commit point of a replicated partition), in order, in
//!   `OFFSETS_LOAD_READ_BYTES` chunks, with sluice's Raft control batches left out; it stops
//!   early when the callback says so (a newer load replaced this one).
//! - [`Leadership`] is a pure state machine per internal partition of a replicated topic:
//!   Follower → (this broker elected at epoch e) Loading(e) → (the log read up to the commit
//!   point) Leader(e); losing the leadership at any point → Follower, and the coordinator
//!   drops the partition's state. Only Leader answers: Loading is COORDINATOR_LOAD_IN_PROGRESS,
//!   Follower NOT_COORDINATOR. Partitions with one replica (and every partition of a lone
//!   broker) are not tracked: loaded when their shard opens them, always answered.
//! - [`ensure_topic`] (a cluster member, when a coordinator is looked for and its topic does
//!   not exist): creates the topic once through the controller (the metadata log) with
//!   `cleanup.policy=compact`, the configured partition count and replication factor
//!   min(`offsets_topic_replication_factor` or `transaction_state_replication_factor`, cluster
//!   members), over the live brokers; refused (COORDINATOR_NOT_AVAILABLE) while fewer brokers
//!   than that are live, as Kafka refuses until enough brokers registered. A lone broker
//!   creates both topics itself at start, at one replica.
//! - [`follow`] (every shard with a replication runtime) turns the runtime's leader changes of
//!   internal partitions into loads and unloads on the coordinators of the shard.

use crate::groups::GroupError;
use crate::raft::GroupId;
use crate::replica::Replicas;
use crate::shard::Shard;
use crate::txn::TxnError;
use bytes::Bytes;
use futures::FutureExt;
use sluice_core::batch::{self, BatchHeader, Record};
use sluice_core::clock::now_ms;
use sluice_core::{LeaderEpoch, Offset, TopicPartition};
use sluice_storage::{PartitionLog, StorageError};
use std::collections::HashMap;
use std::rc::Rc;

/// Why an internal append failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InternalError {
    /// The topic has no partitions yet, or this shard does not hold the partition.
    Unavailable,
    /// The partition is replicated and this broker does not lead it (any more).
    NotCoordinator,
    /// The batch was refused or could not be made durable.
    Storage(String),
    /// The replicated batch did not commit within `COORDINATOR_APPEND_TIMEOUT_MS` (it may
    /// still commit later); answered COORDINATOR_NOT_AVAILABLE, retriable, as Kafka's
    /// coordinators answer an append that timed out.
    TimedOut,
}

/// Appends `records` (key, value) as one batch to the partition of internal `topic` that
/// `partition` picks from the topic's partition count, and waits until they are durable
/// (committed, on a replicated partition).
pub async fn append_internal(
    shard: &Shard,
    topic: &str,
    partition: impl FnOnce(usize) -> i32,
    records: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), InternalError> {
    let partitions = shard.metadata().topics.get(topic).map(|t| t.shards.len()).unwrap_or(0);
    if partitions == 0 {
        return Err(InternalError::Unavailable);
    }
    let tp = TopicPartition::new(topic, partition(partitions));
    let log = shard.log(&tp).ok_or(InternalError::Unavailable)?;
    let recs: Vec<Record<'_>> = records.iter().map(|(k, v)| Record { key: Some(k), value: v }).collect();
    let bytes = batch::build(&recs, now_ms());
    let header = batch::validate(&bytes).map_err(|e| InternalError::Storage(e.to_string()))?;
    if let Some((r, group)) = crate::replica::group_of(shard, &tp) {
        let commit = r.propose(group, Bytes::from(bytes)).boxed_local();
        let limit = std::time::Duration::from_millis(sluice_core::limits::COORDINATOR_APPEND_TIMEOUT_MS);
        let expired = glommio::timer::sleep(limit).boxed_local();
        let committed = match futures::future::select(commit, expired).await {
            futures::future::Either::Left((committed, _)) => committed,
            futures::future::Either::Right(_) => return Err(InternalError::TimedOut),
        };
        return committed.map(|_| ()).map_err(|e| match e {
            crate::raft::driver::ProposeError::NotLeader { .. } => InternalError::NotCoordinator,
            other => InternalError::Storage(other.to_string()),
        });
    }
    if crate::replica::awaiting_group(shard, &tp) {
        return Err(InternalError::NotCoordinator);
    }
    let info = log.append(&bytes, &header, None).map_err(|e| InternalError::Storage(e.to_string()))?;
    log.wait_durable(&info).await.map_err(|e| InternalError::Storage(e.to_string()))
}

/// Reads `log` from its start to its high watermark and hands `each` the whole data batches
/// of every chunk read (Raft control batches left out), until `each` returns false. Returns
/// the batches handed over.
pub async fn read_to_hw(log: &PartitionLog, mut each: impl FnMut(&[u8]) -> bool) -> Result<u64, StorageError> {
    let mut offset = log.log_start();
    let end = log.high_watermark();
    let mut handed = 0u64;
    while offset < end {
        let read = log.read(offset, sluice_core::limits::OFFSETS_LOAD_READ_BYTES).await?;
        let (data, next) = whole_data_batches(&read.records, offset);
        // No whole batch at the start of what was read: nothing more can be read.
        let Some(next) = next else { break };
        if !data.is_empty() {
            handed += 1;
            if !each(&data) {
                break;
            }
        }
        offset = next;
    }
    Ok(handed)
}

/// The whole batches of `records` that end at or after `from`, Raft control batches left out,
/// and the offset after the last whole batch (None: not one whole batch).
fn whole_data_batches(records: &Bytes, from: Offset) -> (Vec<u8>, Option<Offset>) {
    let mut out = Vec::with_capacity(records.len());
    let mut next = None;
    let mut pos = 0usize;
    while pos < records.len() {
        let Ok(h) = BatchHeader::parse(&records[pos..]) else { break };
        let end = pos + h.total_len();
        if end > records.len() {
            break;
        }
        let one = &records[pos..end];
        if h.last_offset() >= from.0 && !crate::raft::control::is_raft_control(&h, one) {
            out.extend_from_slice(one);
        }
        next = Some(Offset(h.last_offset() + 1));
        pos = end;
    }
    (out, next)
}

/// What this broker is for one internal partition of a replicated topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    Loading(LeaderEpoch),
    Leader(LeaderEpoch),
}

/// Why a coordinator does not answer for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotCoordinator,
    LoadInProgress,
}

/// The roles of one coordinator's replicated internal partitions (module docs).
#[derive(Debug, Default)]
pub struct Leadership {
    roles: HashMap<i32, Role>,
}

impl Leadership {
    /// This broker was elected leader of `partition` at `epoch`: true when a load must start
    /// (the partition was not already loading or loaded at that epoch).
    pub fn elected(&mut self, partition: i32, epoch: LeaderEpoch) -> bool {
        let role = self.roles.entry(partition).or_insert(Role::Follower);
        match *role {
            Role::Loading(e) | Role::Leader(e) if e >= epoch => false,
            _ => {
                *role = Role::Loading(epoch);
                true
            }
        }
    }

    /// Another broker (or none) leads `partition` now: true when this coordinator held or was
    /// loading its state, which must be dropped.
    pub fn lost(&mut self, partition: i32) -> bool {
        let was = self.roles.insert(partition, Role::Follower);
        matches!(was, Some(Role::Loading(_) | Role::Leader(_)))
    }

    /// The load started at `epoch` finished: true when it is still the current one (the
    /// partition is now led here), false when leadership moved meanwhile.
    pub fn loaded(&mut self, partition: i32, epoch: LeaderEpoch) -> bool {
        match self.roles.get_mut(&partition) {
            Some(role) if *role == Role::Loading(epoch) => {
                *role = Role::Leader(epoch);
                true
            }
            _ => false,
        }
    }

    /// Whether the load started at `epoch` is still the current one.
    pub fn loading(&self, partition: i32, epoch: LeaderEpoch) -> bool {
        self.roles.get(&partition) == Some(&Role::Loading(epoch))
    }

    /// Whether the coordinator answers for `partition` (a replicated one).
    pub fn check(&self, partition: i32) -> Result<(), Refusal> {
        match self.roles.get(&partition) {
            Some(Role::Leader(_)) => Ok(()),
            Some(Role::Loading(_)) => Err(Refusal::LoadInProgress),
            Some(Role::Follower) | None => Err(Refusal::NotCoordinator),
        }
    }

    pub fn role(&self, partition: i32) -> Role {
        self.roles.get(&partition).copied().unwrap_or(Role::Follower)
    }
}

/// Whether the coordinator of `tp` (an internal partition this shard owns) answers: always for
/// a partition that is not a Raft group here, else as `leadership` says.
pub fn check(shard: &Shard, tp: &TopicPartition, leadership: &Leadership) -> Result<(), Refusal> {
    match shard.replicas().and_then(|r| r.group_of(tp)) {
        None if crate::replica::awaiting_group(shard, tp) => Err(Refusal::NotCoordinator),
        None => Ok(()),
        Some(_) => leadership.check(tp.partition.0),
    }
}

/// Whether a partition's coordinator state is loaded when its shard opens it: true unless it
/// will be a Raft group here (a cluster member holding one of several replicas), whose state
/// is loaded when this broker is elected its leader.
pub fn loads_at_open(shard: &Shard, tp: &TopicPartition) -> bool {
    if shard.config.controller_quorum_voters.is_empty() {
        return true;
    }
    let me = shard.config.node_id;
    shard.metadata().partition(&tp.topic, tp.partition, me).is_none_or(|p| !p.raft_backed())
}

/// In a cluster: creates internal `topic` through the controller unless it exists (module
/// docs). `live`: the node ids of the live brokers. Err: why it could not be created yet.
pub async fn ensure_topic(shard: &Rc<Shard>, topic: &str, live: Vec<i32>) -> Result<(), String> {
    if shard.metadata().topics.contains_key(topic) || shard.replicas().is_none() {
        return Ok(());
    }
    let c = &shard.config;
    let (partitions, wanted) = match topic {
        crate::groups::OFFSETS_TOPIC => (c.offsets_topic_num_partitions, c.offsets_topic_replication_factor),
        crate::txn::TXN_TOPIC => (c.transaction_state_num_partitions, c.transaction_state_replication_factor),
        other => return Err(format!("{other} is not an internal topic")),
    };
    let members = sluice_core::cluster::parse_voters(&c.controller_quorum_voters).map_or(1, |v| v.len());
    let rf = internal_replication_factor(wanted, members);
    if live.len() < usize::try_from(rf).unwrap_or(usize::MAX) {
        return Err(format!(
            "{topic} needs {rf} live brokers (offsets/transaction state replication factor), {} are live",
            live.len()
        ));
    }
    let new = crate::msg::NewTopic {
        name: topic.to_string(),
        partitions,
        replication_factor: rf,
        configs: internal_topic_configs(),
    };
    match crate::admin::create_topics(shard, vec![new], false, live).await.pop() {
        Some(Ok(_)) | Some(Err(crate::PartitionError::TopicAlreadyExists(_))) => Ok(()),
        Some(Err(e)) => Err(format!("creating {topic}: {e}")),
        None => Err(format!("creating {topic}: no answer")),
    }
}

/// The replication factor of an internal topic: the configured one, at most the members.
pub fn internal_replication_factor(configured: i16, members: usize) -> i16 {
    configured.min(i16::try_from(members).unwrap_or(i16::MAX)).max(1)
}

/// On every shard with a replication runtime: loads a coordinator's partition when this broker
/// is elected its leader, unloads it when another one is (module docs).
pub fn follow(shard: &Rc<Shard>, r: &Rc<Replicas>) {
    let (shard_w, r_w) = (Rc::downgrade(shard), Rc::downgrade(r));
    let me = r.node();
    r.on_leader_change(Box::new(move |group, leader, epoch| {
        if group == GroupId::METADATA {
            return;
        }
        let (Some(shard), Some(r)) = (shard_w.upgrade(), r_w.upgrade()) else { return };
        let Some(tp) = r.partition_of(group) else { return };
        let kind = match tp.topic.as_str() {
            crate::groups::OFFSETS_TOPIC => Kind::Groups,
            crate::txn::TXN_TOPIC => Kind::Txns,
            _ => return,
        };
        if leader == Some(me) {
            glommio::spawn_local(take_over(shard, r, group, tp, kind, epoch)).detach();
        } else {
            hand_over(&shard, &tp, kind);
        }
    }));
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Groups,
    Txns,
}

/// Elected leader of an internal partition: waits until everything in its log is committed
/// (what earlier leaders wrote), then loads it into the coordinator.
async fn take_over(
    shard: Rc<Shard>,
    r: Rc<Replicas>,
    group: GroupId,
    tp: TopicPartition,
    kind: Kind,
    epoch: LeaderEpoch,
) {
    let p = tp.partition.0;
    let started = match kind {
        Kind::Groups => shard.groups.elected(&shard, p, epoch),
        Kind::Txns => shard.txns.elected(&shard, p, epoch),
    };
    if !started {
        return;
    }
    let Some(log) = r.log(group) else { return };
    let end = log.log_end();
    if end > log.high_watermark() {
        r.wait_beyond(group, Offset(end.0 - 1)).await;
    }
    tracing::info!(partition = %tp, epoch = epoch.0, "loading coordinator state as the partition's new leader");
    let done = match kind {
        Kind::Groups => shard.groups.load_led(&shard, &log, p, epoch).await,
        Kind::Txns => shard.txns.load_led(&log, p, epoch).await,
    };
    match done {
        Ok(true) => tracing::info!(partition = %tp, epoch = epoch.0, "coordinator state loaded"),
        Ok(false) => tracing::debug!(partition = %tp, "leadership moved while loading"),
        Err(e) => tracing::error!(partition = %tp, error = %e, "cannot load coordinator state"),
    }
}

/// Another broker leads an internal partition: its state leaves this coordinator.
fn hand_over(shard: &Rc<Shard>, tp: &TopicPartition, kind: Kind) {
    let p = tp.partition.0;
    let dropped = match kind {
        Kind::Groups => shard.groups.lost(shard, p),
        Kind::Txns => shard.txns.lost(shard, p),
    };
    if dropped {
        tracing::info!(partition = %tp, "no longer the coordinator of the partition; state unloaded");
    }
}

impl From<InternalError> for GroupError {
    fn from(e: InternalError) -> Self {
        match e {
            InternalError::Unavailable | InternalError::TimedOut => GroupError::CoordinatorNotAvailable,
            InternalError::NotCoordinator => GroupError::NotCoordinator,
            InternalError::Storage(e) => GroupError::Storage(e),
        }
    }
}

impl From<InternalError> for TxnError {
    fn from(e: InternalError) -> Self {
        match e {
            InternalError::Unavailable | InternalError::TimedOut => TxnError::CoordinatorNotAvailable,
            InternalError::NotCoordinator => TxnError::NotCoordinator,
            InternalError::Storage(e) => TxnError::Storage(e),
        }
    }
}

impl From<Refusal> for GroupError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotCoordinator => GroupError::NotCoordinator,
            Refusal::LoadInProgress => GroupError::CoordinatorLoadInProgress,
        }
    }
}

impl From<Refusal> for TxnError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotCoordinator => TxnError::NotCoordinator,
            Refusal::LoadInProgress => TxnError::CoordinatorLoadInProgress,
        }
    }
}

/// The configs an internal topic is created with: compacted, with Kafka's 100 MiB segments.
pub(crate) fn internal_topic_configs() -> std::collections::BTreeMap<String, String> {
    [
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), sluice_core::limits::INTERNAL_TOPIC_SEGMENT_BYTES.to_string()),
    ]
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1: LeaderEpoch = LeaderEpoch(1);
    const E2: LeaderEpoch = LeaderEpoch(2);

    #[test]
    fn a_partition_answers_only_once_loaded_at_the_current_epoch() {
        let mut l = Leadership::default();
        assert_eq!(l.check(3), Err(Refusal::NotCoordinator), "unknown partitions are not coordinated here");
        assert!(l.elected(3, E1));
        assert_eq!(l.check(3), Err(Refusal::LoadInProgress));
        assert!(!l.elected(3, E1), "the same election does not start a second load");
        assert!(l.loaded(3, E1));
        assert_eq!(l.check(3), Ok(()));
        assert_eq!(l.role(3), Role::Leader(E1));
        assert_eq!(l.check(4), Err(Refusal::NotCoordinator), "other partitions stay apart");
    }

    #[test]
    fn losing_the_leadership_unloads_and_a_stale_load_is_discarded() {
        let mut l = Leadership::default();
        assert!(!l.lost(0), "nothing to unload for a partition never led");
        assert!(l.elected(0, E1));
        assert!(l.lost(0), "a load in progress is abandoned");
        assert!(!l.loaded(0, E1), "its end does not make this broker the coordinator");
        assert_eq!(l.check(0), Err(Refusal::NotCoordinator));
        assert!(l.elected(0, E1));
        assert!(l.elected(0, E2), "a newer election restarts the load");
        assert!(!l.loading(0, E1) && l.loading(0, E2));
        assert!(!l.loaded(0, E1), "the older load is superseded");
        assert!(l.loaded(0, E2));
        assert!(!l.elected(0, E1), "an older epoch never replaces a newer leadership");
        assert!(l.lost(0));
        assert_eq!(l.role(0), Role::Follower);
    }

    #[test]
    fn internal_topics_take_at_most_one_replica_per_member() {
        assert_eq!(internal_replication_factor(3, 5), 3);
        assert_eq!(internal_replication_factor(3, 2), 2);
        assert_eq!(internal_replication_factor(1, 3), 1);
    }

    fn batch_at(base: i64, n: usize) -> Vec<u8> {
        let recs: Vec<Record<'_>> = (0..n).map(|_| Record { key: Some(b"k"), value: b"v" }).collect();
        let mut b = batch::build(&recs, 1);
        b[..8].copy_from_slice(&base.to_be_bytes());
        b
    }

    #[test]
    fn whole_batches_are_kept_and_a_torn_tail_is_left_for_the_next_read() {
        let (a, b) = (batch_at(0, 2), batch_at(2, 3));
        let mut bytes = a.clone();
        bytes.extend_from_slice(&b);
        bytes.extend_from_slice(&batch_at(5, 1)[..20]);
        let (data, next) = whole_data_batches(&Bytes::from(bytes), Offset(0));
        assert_eq!(next, Some(Offset(5)));
        assert_eq!(data.len(), a.len() + b.len());
        let (data, next) = whole_data_batches(&Bytes::from(b.clone()), Offset(3));
        assert_eq!((data.len(), next), (b.len(), Some(Offset(5))), "a batch reaching past `from` is kept");
        let (data, next) = whole_data_batches(&Bytes::from(a), Offset(2));
        assert_eq!((data.len(), next), (0, Some(Offset(2))), "a batch wholly before `from` is skipped");
        assert_eq!(whole_data_batches(&Bytes::new(), Offset(0)).1, None);
    }
}
