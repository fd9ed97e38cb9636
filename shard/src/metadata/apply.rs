//! Applying metadata log records to a snapshot.
//!
//! Contract: [`apply`] is a pure function of the snapshot, the record and the node-local
//! facts in [`Local`]; it changes the snapshot only when the record fits it (checked first,
//! then applied whole), and otherwise returns why and leaves the snapshot as it was. Every
//! broker applies the same committed records in the same order, so the cluster-wide part of
//! their snapshots (see [`cluster_part`]) is the same on all of them, whatever their shard
//! counts or loads; only `TopicMeta::shards` differs: a broker places on its own shards
//! (by count and recent load, [`crate::placement`]) exactly the partitions whose replicas name
//! it, and marks the others [`NOT_HOSTED`]. A record refused here was committed anyway (the
//! controller decided on an older state, or a leader reported a stale epoch): every broker
//! refuses it the same way and skips it. Placement of an existing partition never changes.

use super::records::{MetadataRecord, PartitionChanged, PartitionsAdded, ReplicasChanged, TopicCreated};
use super::{MetadataSnapshot, PartitionState, TopicMeta, TopicReplication, NOT_HOSTED};
use crate::placement::place_by_load;
use sluice_core::limits::MAX_PARTITIONS_PER_TOPIC;

/// What only this broker knows when applying: who it is and where its partitions go.
#[derive(Debug, Clone, Copy)]
pub struct Local<'a> {
    /// This broker's node id.
    pub node: i32,
    pub n_shards: usize,
    /// Each shard's recent append rate (bytes/s; may be empty).
    pub rates: &'a [u64],
}

/// Why a record does not fit the snapshot (it is skipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("no topic has id {0:02x?}")]
    UnknownTopic([u8; 16]),
    #[error("topic {0} exists already")]
    TopicExists(String),
    #[error("topic id {0:02x?} is in use")]
    IdInUse([u8; 16]),
    #[error("topic number {got} was given already (next is {next})")]
    NumberUsed { got: u32, next: u32 },
    #[error("new partitions start at {got}, the topic has {count}")]
    PartitionGap { got: i32, count: usize },
    #[error("more than MAX_PARTITIONS_PER_TOPIC partitions")]
    TooManyPartitions,
    #[error("partition {0} does not exist")]
    UnknownPartition(i32),
    #[error("topic has no replication state (a lone broker's topic)")]
    NotReplicated,
    #[error("leader epoch {got} is older than the recorded {recorded}")]
    StaleEpoch { got: i32, recorded: i32 },
    #[error("node {0} is not a replica of the partition")]
    NotAReplica(i32),
    #[error("more than MAX_ACLS ACLs")]
    TooManyAcls,
    #[error("more than MAX_QUOTA_ENTITIES quota entities")]
    TooManyQuotaEntities,
    #[error("more than MAX_GROUPS_WITH_CONFIGS groups with configs")]
    TooManyGroupConfigs,
    #[error("producer ids from {first} were handed out already (next block starts at {next})")]
    ProducerIdsReused { first: i64, next: i64 },
}

/// Applies one record (see the module docs).
pub fn apply(snap: &mut MetadataSnapshot, record: &MetadataRecord, local: &Local<'_>) -> Result<(), ApplyError> {
    match record {
        MetadataRecord::TopicCreated(t) => create(snap, t, local),
        MetadataRecord::PartitionsAdded(p) => add(snap, p, local),
        MetadataRecord::TopicDeleted { id } => {
            let name = name_of(snap, id)?;
            snap.topics.remove(&name);
            snap.replication.remove(&name);
            Ok(())
        }
        MetadataRecord::ConfigChanged { id, configs } => {
            let name = name_of(snap, id)?;
            snap.topics.get_mut(&name).expect("found by id").configs = configs.clone();
            Ok(())
        }
        MetadataRecord::PartitionChanged(c) => change(snap, c),
        MetadataRecord::ProducerIdsAllocated { first, size, .. } => {
            if *first < snap.next_producer_id_block {
                return Err(ApplyError::ProducerIdsReused { first: *first, next: snap.next_producer_id_block });
            }
            snap.next_producer_id_block = first.checked_add(*size).expect("checked at decode");
            Ok(())
        }
        MetadataRecord::AclCreated(a) => {
            if !snap.acls.contains(a) && snap.acls.len() >= sluice_core::limits::MAX_ACLS {
                return Err(ApplyError::TooManyAcls);
            }
            snap.acls.insert(a.clone());
            Ok(())
        }
        MetadataRecord::AclRemoved(a) => {
            snap.acls.remove(a);
            Ok(())
        }
        MetadataRecord::QuotaChanged { entity, key, value } => quota(snap, entity, key, *value),
        MetadataRecord::ReplicasChanged(c) => replicas_changed(snap, c, local),
        MetadataRecord::GroupConfigChanged { group, configs } => group_configs(snap, group, configs),
    }
}

/// Replaces a group's dynamic configs; a group left without any is forgotten.
fn group_configs(
    snap: &mut MetadataSnapshot,
    group: &str,
    configs: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApplyError> {
    if configs.is_empty() {
        snap.group_configs.remove(group);
        return Ok(());
    }
    if !snap.group_configs.contains_key(group)
        && snap.group_configs.len() >= sluice_core::limits::MAX_GROUPS_WITH_CONFIGS
    {
        return Err(ApplyError::TooManyGroupConfigs);
    }
    snap.group_configs.insert(group.to_string(), configs.clone());
    Ok(())
}

/// Sets or removes one quota of an entity; an entity without quotas left is forgotten.
fn quota(
    snap: &mut MetadataSnapshot,
    entity: &super::quota::QuotaEntity,
    key: &str,
    value: Option<super::quota::QuotaValue>,
) -> Result<(), ApplyError> {
    match value {
        Some(v) => {
            if !snap.quotas.contains_key(entity) && snap.quotas.len() >= sluice_core::limits::MAX_QUOTA_ENTITIES {
                return Err(ApplyError::TooManyQuotaEntities);
            }
            snap.quotas.entry(entity.clone()).or_default().insert(key.to_string(), v);
        }
        None => {
            if let Some(q) = snap.quotas.get_mut(entity) {
                q.remove(key);
                if q.is_empty() {
                    snap.quotas.remove(entity);
                }
            }
        }
    }
    Ok(())
}

/// Applies records in order, skipping (and returning) those that do not fit; bumps the
/// snapshot's version when any applied.
pub fn apply_all<'r>(
    snap: &mut MetadataSnapshot,
    records: impl IntoIterator<Item = &'r MetadataRecord>,
    local: &Local<'_>,
) -> Vec<(MetadataRecord, ApplyError)> {
    let mut refused = Vec::new();
    let mut applied = false;
    for r in records {
        match apply(snap, r, local) {
            Ok(()) => applied = true,
            Err(e) => refused.push((r.clone(), e)),
        }
    }
    if applied {
        snap.version += 1;
    }
    refused
}

/// The first topic number not given yet.
pub fn next_number(snap: &MetadataSnapshot) -> u32 {
    snap.next_topic_number.max(1)
}

fn name_of(snap: &MetadataSnapshot, id: &[u8; 16]) -> Result<String, ApplyError> {
    snap.topic_by_id(id).map(str::to_string).ok_or(ApplyError::UnknownTopic(*id))
}

/// Local shards for the partitions in `replicas` that name this node, [`NOT_HOSTED`] for
/// the others.
fn place_local(snap: &MetadataSnapshot, replicas: &[Vec<i32>], local: &Local<'_>) -> Vec<u16> {
    let hosted = replicas.iter().filter(|r| r.contains(&local.node)).count();
    let load = snap.partitions_per_shard(local.n_shards);
    let mut shards = place_by_load(&load, local.rates, hosted).into_iter();
    replicas
        .iter()
        .map(|r| if r.contains(&local.node) { shards.next().expect("one per hosted partition").0 } else { NOT_HOSTED })
        .collect()
}

fn create(snap: &mut MetadataSnapshot, t: &TopicCreated, local: &Local<'_>) -> Result<(), ApplyError> {
    if snap.topics.contains_key(&t.name) {
        return Err(ApplyError::TopicExists(t.name.clone()));
    }
    if snap.topic_by_id(&t.id).is_some() {
        return Err(ApplyError::IdInUse(t.id));
    }
    let next = next_number(snap);
    if t.number < next {
        return Err(ApplyError::NumberUsed { got: t.number, next });
    }
    let shards = place_local(snap, &t.replicas, local);
    snap.topics.insert(t.name.clone(), TopicMeta { id: t.id, shards, configs: t.configs.clone() });
    let partitions = t.replicas.iter().cloned().map(PartitionState::new).collect();
    snap.replication.insert(t.name.clone(), TopicReplication { number: t.number, partitions });
    snap.next_topic_number = t.number.checked_add(1).expect("topic numbers below u32::MAX");
    Ok(())
}

fn add(snap: &mut MetadataSnapshot, p: &PartitionsAdded, local: &Local<'_>) -> Result<(), ApplyError> {
    let name = name_of(snap, &p.id)?;
    let count = snap.topics[&name].shards.len();
    if usize::try_from(p.first).ok() != Some(count) {
        return Err(ApplyError::PartitionGap { got: p.first, count });
    }
    if count + p.replicas.len() > usize::try_from(MAX_PARTITIONS_PER_TOPIC).expect("positive") {
        return Err(ApplyError::TooManyPartitions);
    }
    let shards = place_local(snap, &p.replicas, local);
    snap.topics.get_mut(&name).expect("found by id").shards.extend(shards);
    // A lone broker's topic from before replication stays without replication state (this
    // broker the only replica of every partition).
    if let Some(repl) = snap.replication.get_mut(&name) {
        debug_assert_eq!(repl.partitions.len(), count);
        repl.partitions.extend(p.replicas.iter().cloned().map(PartitionState::new));
    }
    Ok(())
}

fn change(snap: &mut MetadataSnapshot, c: &PartitionChanged) -> Result<(), ApplyError> {
    let name = name_of(snap, &c.id)?;
    let repl = snap.replication.get_mut(&name).ok_or(ApplyError::NotReplicated)?;
    let p = usize::try_from(c.partition)
        .ok()
        .and_then(|p| repl.partitions.get_mut(p))
        .ok_or(ApplyError::UnknownPartition(c.partition))?;
    if c.leader_epoch < p.leader_epoch {
        return Err(ApplyError::StaleEpoch { got: c.leader_epoch, recorded: p.leader_epoch });
    }
    if let Some(n) = std::iter::once(&c.leader).filter(|l| **l != -1).chain(&c.isr).find(|n| !p.replicas.contains(n)) {
        return Err(ApplyError::NotAReplica(*n));
    }
    p.leader = c.leader;
    p.leader_epoch = c.leader_epoch;
    p.isr = c.isr.clone();
    Ok(())
}

/// A partition's replica set changed (a reassignment started, changed or completed): the
/// group's origin voters are kept from before the first change, a leader no longer a replica
/// is forgotten (the Raft group elects and records another), and this broker places the
/// partition on one of its shards when it became a replica here, or marks it not hosted when
/// it no longer is one (the shard then closes the replica and deletes its files).
fn replicas_changed(snap: &mut MetadataSnapshot, c: &ReplicasChanged, local: &Local<'_>) -> Result<(), ApplyError> {
    let name = name_of(snap, &c.id)?;
    let load = snap.partitions_per_shard(local.n_shards);
    let repl = snap.replication.get_mut(&name).ok_or(ApplyError::NotReplicated)?;
    let at = usize::try_from(c.partition)
        .ok()
        .filter(|p| *p < repl.partitions.len())
        .ok_or(ApplyError::UnknownPartition(c.partition))?;
    let p = &mut repl.partitions[at];
    if p.origin.is_empty() {
        p.origin = p.replicas.clone();
    }
    p.replicas = c.replicas.clone();
    p.adding = c.adding.clone();
    p.removing = c.removing.clone();
    p.isr = c.isr.clone();
    if !p.replicas.contains(&p.leader) {
        p.leader = -1;
    }
    let shards = &mut snap.topics.get_mut(&name).expect("found by id").shards;
    let here = c.replicas.contains(&local.node);
    if here && shards[at] == NOT_HOSTED {
        shards[at] = place_by_load(&load, local.rates, 1)[0].0;
    } else if !here {
        shards[at] = NOT_HOSTED;
    }
    Ok(())
}

/// The part of a snapshot every broker that applied the same records agrees on: everything
/// but the node-local placement and the snapshot's own version.
pub fn cluster_part(snap: &MetadataSnapshot) -> MetadataSnapshot {
    let mut s = snap.clone();
    s.version = 0;
    for t in s.topics.values_mut() {
        t.shards.iter_mut().for_each(|s| *s = 0);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn local(node: i32, n_shards: usize) -> Local<'static> {
        Local { node, n_shards, rates: &[] }
    }

    fn created(name: &str, id: u8, number: u32, replicas: &[&[i32]]) -> MetadataRecord {
        MetadataRecord::TopicCreated(TopicCreated {
            name: name.into(),
            id: [id; 16],
            number,
            replicas: replicas.iter().map(|r| r.to_vec()).collect(),
            configs: BTreeMap::new(),
        })
    }

    #[test]
    fn a_broker_places_only_its_own_replicas() {
        let mut s = MetadataSnapshot::default();
        apply(&mut s, &created("t", 1, 1, &[&[1, 2], &[2, 3], &[3, 1], &[1, 3]]), &local(1, 2)).unwrap();
        assert_eq!(s.topics["t"].shards, vec![0, NOT_HOSTED, 1, 0]);
        assert_eq!(s.owner("t", sluice_core::PartitionId(1)), None);
        assert_eq!(s.partition("t", sluice_core::PartitionId(1), 1).unwrap().replicas, vec![2, 3]);
        assert_eq!(s.partition("t", sluice_core::PartitionId(2), 1).unwrap().leader, 3);
        assert_eq!(s.next_topic_number, 2);
        assert_eq!(s.partitions_per_shard(2), vec![2, 1]);
        assert_eq!(s.reassign_for(1), 1, "only hosted partitions move when shards go");
        assert_eq!(s.topics["t"].shards, vec![0, NOT_HOSTED, 0, 0]);
    }

    #[test]
    fn records_that_do_not_fit_change_nothing() {
        let mut s = MetadataSnapshot::default();
        let l = local(1, 1);
        apply(&mut s, &created("t", 1, 5, &[&[1]]), &l).unwrap();
        let before = s.clone();
        let refused = [
            (created("t", 2, 6, &[&[1]]), ApplyError::TopicExists("t".into())),
            (created("u", 1, 6, &[&[1]]), ApplyError::IdInUse([1; 16])),
            (created("u", 2, 5, &[&[1]]), ApplyError::NumberUsed { got: 5, next: 6 }),
            (
                MetadataRecord::PartitionsAdded(PartitionsAdded { id: [1; 16], first: 3, replicas: vec![vec![1]] }),
                ApplyError::PartitionGap { got: 3, count: 1 },
            ),
            (MetadataRecord::TopicDeleted { id: [9; 16] }, ApplyError::UnknownTopic([9; 16])),
            (
                MetadataRecord::PartitionChanged(PartitionChanged {
                    id: [1; 16],
                    partition: 0,
                    leader: 4,
                    leader_epoch: 1,
                    isr: vec![1],
                }),
                ApplyError::NotAReplica(4),
            ),
            (
                MetadataRecord::PartitionChanged(PartitionChanged {
                    id: [1; 16],
                    partition: 1,
                    leader: 1,
                    leader_epoch: 1,
                    isr: vec![1],
                }),
                ApplyError::UnknownPartition(1),
            ),
        ];
        for (r, e) in refused {
            assert_eq!(apply(&mut s, &r, &l), Err(e));
            assert_eq!(s, before);
        }
        let epoch = |e: i32| {
            MetadataRecord::PartitionChanged(PartitionChanged {
                id: [1; 16],
                partition: 0,
                leader: -1,
                leader_epoch: e,
                isr: vec![],
            })
        };
        apply(&mut s, &epoch(3), &l).unwrap();
        assert_eq!(apply(&mut s, &epoch(2), &l), Err(ApplyError::StaleEpoch { got: 2, recorded: 3 }));
        let ids = |first, size| MetadataRecord::ProducerIdsAllocated { broker: 1, first, size };
        apply(&mut s, &ids(0, 1000), &l).unwrap();
        assert_eq!(apply(&mut s, &ids(999, 1000), &l), Err(ApplyError::ProducerIdsReused { first: 999, next: 1000 }));
        apply(&mut s, &ids(1000, 1000), &l).unwrap();
        assert_eq!(s.next_producer_id_block, 2000);
    }

    #[test]
    fn a_reassignment_places_joining_replicas_and_unplaces_leaving_ones() {
        let mut on2 = MetadataSnapshot::default();
        let mut on0 = MetadataSnapshot::default();
        let t = created("m", 1, 1, &[&[0, 1]]);
        apply(&mut on2, &t, &local(2, 2)).expect("fits");
        apply(&mut on0, &t, &local(0, 2)).expect("fits");
        assert_eq!(on2.topics["m"].shards, vec![NOT_HOSTED]);
        let start = MetadataRecord::ReplicasChanged(ReplicasChanged {
            id: [1; 16],
            partition: 0,
            replicas: vec![1, 2, 0],
            adding: vec![2],
            removing: vec![0],
            isr: vec![0, 1],
        });
        apply(&mut on2, &start, &local(2, 2)).expect("fits");
        apply(&mut on0, &start, &local(0, 2)).expect("fits");
        assert_ne!(on2.topics["m"].shards, vec![NOT_HOSTED], "the joining replica is placed");
        assert_ne!(on0.topics["m"].shards, vec![NOT_HOSTED], "the leaving one stays until done");
        let p = on2.partition("m", sluice_core::PartitionId(0), 2).expect("exists");
        assert!(p.moving());
        assert_eq!((p.target(), p.raft_origin().to_vec()), (vec![1, 2], vec![0, 1]));
        let done = MetadataRecord::ReplicasChanged(ReplicasChanged {
            id: [1; 16],
            partition: 0,
            replicas: vec![1, 2],
            adding: vec![],
            removing: vec![],
            isr: vec![1, 2],
        });
        apply(&mut on2, &done, &local(2, 2)).expect("fits");
        apply(&mut on0, &done, &local(0, 2)).expect("fits");
        assert_eq!(on0.topics["m"].shards, vec![NOT_HOSTED], "the left replica is no longer hosted");
        let p = on0.partition("m", sluice_core::PartitionId(0), 0).expect("exists");
        assert!(!p.moving());
        assert_eq!((p.leader, p.raft_origin().to_vec()), (-1, vec![0, 1]), "the origin stays; leader 0 left");
        assert_eq!(cluster_part(&on0), cluster_part(&on2));
        let unknown = MetadataRecord::ReplicasChanged(ReplicasChanged {
            partition: 3,
            ..match done {
                MetadataRecord::ReplicasChanged(c) => c,
                _ => unreachable!(),
            }
        });
        assert_eq!(apply(&mut on0, &unknown, &local(0, 2)), Err(ApplyError::UnknownPartition(3)));
    }

    #[test]
    fn deleting_and_reconfiguring_by_id() {
        let mut s = MetadataSnapshot::default();
        let l = local(1, 1);
        apply(&mut s, &created("t", 1, 1, &[&[1]]), &l).unwrap();
        let configs: BTreeMap<String, String> = [("retention.ms".to_string(), "5".to_string())].into();
        apply(&mut s, &MetadataRecord::ConfigChanged { id: [1; 16], configs: configs.clone() }, &l).unwrap();
        assert_eq!(s.topics["t"].configs, configs);
        apply(&mut s, &MetadataRecord::TopicDeleted { id: [1; 16] }, &l).unwrap();
        assert!(s.topics.is_empty() && s.replication.is_empty());
        assert_eq!(next_number(&s), 2, "numbers are never reused");
    }

    /// A random record over a small space of names, ids and nodes, so that many fit.
    fn record() -> impl Strategy<Value = MetadataRecord> {
        let replicas = proptest::collection::btree_set(1..5i32, 1..4).prop_map(|s| s.into_iter().collect::<Vec<_>>());
        let assignment = proptest::collection::vec(replicas, 1..6);
        prop_oneof![
            ("[abc]", 0..4u8, 0..8u32, assignment.clone()).prop_map(|(name, id, number, replicas)| {
                MetadataRecord::TopicCreated(TopicCreated {
                    name,
                    id: [id; 16],
                    number,
                    replicas,
                    configs: BTreeMap::new(),
                })
            }),
            (0..4u8, 0..6i32, assignment).prop_map(|(id, first, replicas)| MetadataRecord::PartitionsAdded(
                PartitionsAdded { id: [id; 16], first, replicas }
            )),
            (0..4u8).prop_map(|id| MetadataRecord::TopicDeleted { id: [id; 16] }),
            (0..4u8, 0..4i32, -1..5i32, 0..6i32, proptest::collection::btree_set(1..5i32, 0..3)).prop_map(
                |(id, partition, leader, leader_epoch, isr)| {
                    MetadataRecord::PartitionChanged(PartitionChanged {
                        id: [id; 16],
                        partition,
                        leader,
                        leader_epoch,
                        isr: isr.into_iter().collect(),
                    })
                }
            ),
            (0..3000i64).prop_map(|first| MetadataRecord::ProducerIdsAllocated { broker: 1, first, size: 1000 }),
        ]
    }

    proptest! {
        /// Brokers with different node ids and shard counts that apply the same records agree on
        /// the cluster-wide part, each places exactly its own replicas, and applying is
        /// repeatable.
        #[test]
        fn apply_is_deterministic_and_placement_is_local(rs in proptest::collection::vec(record(), 1..40)) {
            let mut a = MetadataSnapshot::default();
            let mut b = MetadataSnapshot::default();
            let mut a2 = MetadataSnapshot::default();
            let ra = apply_all(&mut a, &rs, &local(1, 3));
            let rb = apply_all(&mut b, &rs, &local(2, 1));
            apply_all(&mut a2, &rs, &local(1, 3));
            prop_assert_eq!(&a, &a2);
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(cluster_part(&a), cluster_part(&b));
            for (snap, node, shards) in [(&a, 1, 3u16), (&b, 2, 1)] {
                snap.check().map_err(TestCaseError::fail)?;
                for (name, t) in &snap.topics {
                    let r = &snap.replication[name];
                    for (s, p) in t.shards.iter().zip(&r.partitions) {
                        prop_assert_eq!(*s != NOT_HOSTED, p.replicas.contains(&node));
                        prop_assert!(*s == NOT_HOSTED || *s < shards);
                        prop_assert!(p.leader == -1 || p.replicas.contains(&p.leader));
                    }
                }
            }
        }
    }
}
