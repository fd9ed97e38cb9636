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
use crate::metadata::{new_topic_id, validate_topic_name, MetadataSnapshot, TopicMeta};
use crate::msg::{AdminOp, AdminResult, ConfigChange, ConfigOp, CreatedTopic, NewTopic, ShardMsg};
use crate::placement::{place, place_by_load, recent_load};
use crate::shard::{InstallError, Shard};
use futures::channel::oneshot;
use sluice_core::limits::MAX_PARTITIONS_PER_TOPIC;
use sluice_core::topic_config;
use sluice_core::ShardId;
use std::collections::BTreeSet;
use std::rc::Rc;

/// Creates topics (or only validates them). One result per topic, in order.
pub async fn create_topics(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<Result<CreatedTopic, PartitionError>> {
    let n = topics.len();
    match run(shard, AdminOp::CreateTopics { topics, validate_only }).await {
        Ok(AdminResult::Created(v)) => v,
        Ok(_) => unreachable!("create answered with another result"),
        Err(e) => vec![Err(e); n],
    }
}

/// Deletes topics by name. One result (the deleted topic's id) per name, in order.
pub async fn delete_topics(shard: &Rc<Shard>, names: Vec<String>) -> Vec<Result<[u8; 16], PartitionError>> {
    let n = names.len();
    match run(shard, AdminOp::DeleteTopics { names }).await {
        Ok(AdminResult::Deleted(v)) => v,
        Ok(_) => unreachable!("delete answered with another result"),
        Err(e) => vec![Err(e); n],
    }
}

use sluice_core::limits::PRODUCER_ID_BLOCK;

/// A producer id never handed out before (also across restarts): shard 0 reserves blocks
/// of ids in metadata and hands them out one by one.
pub async fn allocate_producer_id(shard: &Rc<Shard>) -> Result<i64, PartitionError> {
    match run(shard, AdminOp::AllocateProducerId).await? {
        AdminResult::ProducerId(r) => r,
        _ => unreachable!("producer id answered with another result"),
    }
}

/// Creates, with the broker defaults, those of `names` that do not exist yet.
pub async fn auto_create(shard: &Rc<Shard>, names: Vec<String>) {
    let topics = names
        .into_iter()
        .map(|name| NewTopic { name, partitions: -1, replication_factor: -1, configs: Default::default() })
        .collect();
    for r in create_topics(shard, topics, false).await {
        if let Err(e) = r {
            if !matches!(e, PartitionError::TopicAlreadyExists(_)) {
                tracing::debug!(error = %e, "auto-creation of a topic failed");
            }
        }
    }
}

async fn run(shard: &Rc<Shard>, op: AdminOp) -> Result<AdminResult, PartitionError> {
    if shard.id == ShardId(0) {
        return Ok(execute(shard, op).await);
    }
    let (reply, rx) = oneshot::channel();
    shard.send(ShardId(0), ShardMsg::Admin { op, reply }).await?;
    rx.await.map_err(|_| PartitionError::ShuttingDown)
}

/// Runs a metadata change on shard 0.
pub(crate) async fn execute(shard: &Rc<Shard>, op: AdminOp) -> AdminResult {
    assert_eq!(shard.id, ShardId(0), "only shard 0 writes metadata");
    // Another shard may already serve while this one still opens its logs: a change must start
    // from the recovered snapshot, not the empty one a shard starts with.
    shard.recovered().await;
    let _permit = shard.admin_lock.acquire_permit(1).await.expect("admin semaphore never closes");
    // Placement weighs each shard's recent append rate, asked for only when partitions are added.
    let rates = match &op {
        AdminOp::CreateTopics { .. } | AdminOp::CreatePartitions { .. } => recent_load(shard).await,
        _ => Vec::new(),
    };
    let before = shard.metadata();
    let mut snap = (*before).clone();
    if let AdminOp::AllocateProducerId = op {
        let (next, end) = shard.producer_ids.get();
        if next < end {
            shard.producer_ids.set((next + 1, end));
            return AdminResult::ProducerId(Ok(next));
        }
        let start = snap.next_producer_id_block;
        snap.next_producer_id_block = start + PRODUCER_ID_BLOCK;
        snap.version += 1;
        let dir = shard.config.data_dir.clone();
        let to_save = snap.clone();
        let saved = glommio::executor().spawn_blocking(move || to_save.save(&dir).map_err(|e| e.to_string())).await;
        if let Err(e) = saved {
            return AdminResult::ProducerId(Err(PartitionError::Storage(e)));
        }
        log_failures(&publish(shard, snap).await, "after reserving producer ids");
        shard.producer_ids.set((start + 1, start + PRODUCER_ID_BLOCK));
        return AdminResult::ProducerId(Ok(start));
    }
    let (result, changed) = match op {
        AdminOp::CreateTopics { topics, validate_only } => {
            let results: Vec<_> =
                topics.into_iter().map(|t| create_one(shard, &mut snap, t, validate_only, &rates)).collect();
            let changed = !validate_only && results.iter().any(|r| r.is_ok());
            (AdminResult::Created(results), changed)
        }
        AdminOp::DeleteTopics { names } => {
            let results: Vec<_> = names
                .into_iter()
                .map(|name| snap.topics.remove(&name).map(|t| t.id).ok_or(PartitionError::UnknownTopicOrPartition))
                .collect();
            let changed = results.iter().any(|r| r.is_ok());
            (AdminResult::Deleted(results), changed)
        }
        AdminOp::AllocateProducerId => unreachable!("handled above"),
        AdminOp::AlterConfigs { topic, changes, replace_all, validate_only } => {
            let r = alter_configs(&mut snap, &topic, &changes, replace_all);
            let changed = r.is_ok() && !validate_only;
            (AdminResult::Changed(r), changed)
        }
        AdminOp::CreatePartitions { topic, count, validate_only } => {
            let r = add_partitions(shard, &mut snap, &topic, count, &rates);
            let changed = r.is_ok() && !validate_only;
            (AdminResult::Changed(r), changed)
        }
    };
    if !changed {
        return result;
    }
    snap.version += 1;
    let to_save = snap.clone();
    let dir = shard.config.data_dir.clone();
    let saved = glommio::executor().spawn_blocking(move || to_save.save(&dir).map_err(|e| e.to_string())).await;
    if let Err(e) = saved {
        tracing::error!(error = %e, "persisting metadata failed; change not applied");
        let err = PartitionError::Storage(e);
        return match result {
            AdminResult::Created(v) => AdminResult::Created(v.into_iter().map(|r| r.and(Err(err.clone()))).collect()),
            AdminResult::Deleted(v) => AdminResult::Deleted(v.into_iter().map(|r| r.and(Err(err.clone()))).collect()),
            AdminResult::ProducerId(_) => AdminResult::ProducerId(Err(err)),
            AdminResult::Changed(_) => AdminResult::Changed(Err(err)),
        };
    }
    let failures = publish(shard, snap.clone()).await;
    if failures.is_empty() {
        return result;
    }
    let failed_topics: BTreeSet<String> =
        failures.iter().flat_map(|f| f.failed.iter().map(|(tp, _)| tp.topic.clone())).collect();
    let Some((back, undone)) = rollback(&before, &snap, &failed_topics) else {
        log_failures(&failures, "of topics this change did not create or grow");
        return result;
    };
    tracing::error!(topics = ?undone, "a shard could not open the new partitions; rolling the change back");
    let to_save = back.clone();
    let dir = shard.config.data_dir.clone();
    let saved = glommio::executor().spawn_blocking(move || to_save.save(&dir).map_err(|e| e.to_string())).await;
    if let Err(e) = saved {
        // Published anyway: every shard then agrees, and the next change saves from it.
        tracing::error!(error = %e, "persisting the rolled-back metadata failed");
    }
    log_failures(&publish(shard, back).await, "while rolling back");
    let reason = |topic: &str| PartitionError::Storage(rollback_reason(&failures, topic));
    match result {
        AdminResult::Created(v) => AdminResult::Created(
            v.into_iter()
                .map(|r| match r {
                    Ok(c) => match undone.iter().find(|t| snap.topics.get(*t).is_some_and(|m| m.id == c.id)) {
                        Some(t) => Err(reason(t)),
                        None => Ok(c),
                    },
                    Err(e) => Err(e),
                })
                .collect(),
        ),
        AdminResult::Changed(r) => AdminResult::Changed(match undone.iter().next() {
            Some(t) => r.and(Err(reason(t))),
            None => r,
        }),
        other => other,
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
            }
            Some(old) if old.id == now.id => continue,
            _ => {
                back.topics.remove(name);
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

/// Changes the configs of a topic in `snap`.
pub async fn change(shard: &Rc<Shard>, op: AdminOp) -> Result<(), PartitionError> {
    match run(shard, op).await? {
        AdminResult::Changed(r) => r,
        _ => unreachable!("a change answered with another result"),
    }
}

fn alter_configs(
    snap: &mut MetadataSnapshot,
    topic: &str,
    changes: &[ConfigChange],
    replace_all: bool,
) -> Result<(), PartitionError> {
    let t = snap.topics.get_mut(topic).ok_or(PartitionError::UnknownTopicOrPartition)?;
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
    t.configs = configs;
    Ok(())
}

fn add_partitions(
    shard: &Shard,
    snap: &mut MetadataSnapshot,
    topic: &str,
    count: i32,
    rates: &[u64],
) -> Result<(), PartitionError> {
    if is_internal(topic) {
        return Err(PartitionError::InvalidTopic(format!("{topic} is an internal topic")));
    }
    let current = snap.topics.get(topic).ok_or(PartitionError::UnknownTopicOrPartition)?.shards.len() as i32;
    if count <= current {
        return Err(PartitionError::InvalidPartitions(format!(
            "topic {topic} has {current} partitions; the new count must be larger, got {count}"
        )));
    }
    if count > MAX_PARTITIONS_PER_TOPIC {
        return Err(PartitionError::InvalidPartitions(format!("at most {MAX_PARTITIONS_PER_TOPIC} partitions")));
    }
    let load = snap.partitions_per_shard(shard.n_shards);
    let added: Vec<u16> = place_by_load(&load, rates, (count - current) as usize).into_iter().map(|s| s.0).collect();
    snap.topics.get_mut(topic).expect("checked above").shards.extend(added);
    Ok(())
}

fn create_one(
    shard: &Shard,
    snap: &mut MetadataSnapshot,
    t: NewTopic,
    validate_only: bool,
    rates: &[u64],
) -> Result<CreatedTopic, PartitionError> {
    validate_topic_name(&t.name).map_err(PartitionError::InvalidTopic)?;
    if snap.topics.contains_key(&t.name) {
        return Err(PartitionError::TopicAlreadyExists(t.name));
    }
    let partitions = if t.partitions == -1 { shard.config.num_partitions } else { t.partitions };
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(PartitionError::InvalidPartitions(format!(
            "number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, got {partitions}"
        )));
    }
    if t.replication_factor != -1 && t.replication_factor != 1 {
        return Err(PartitionError::InvalidReplicationFactor(format!(
            "replication factor {} is larger than the number of brokers (1)",
            t.replication_factor
        )));
    }
    for (k, v) in &t.configs {
        topic_config::validate(k, v).map_err(PartitionError::InvalidConfig)?;
    }
    let load = snap.partitions_per_shard(shard.n_shards);
    let shards = place_by_load(&load, rates, partitions as usize).into_iter().map(|s| s.0).collect();
    let meta = TopicMeta { id: new_topic_id(), shards, configs: t.configs.clone() };
    let created = CreatedTopic { id: meta.id, partitions, configs: t.configs };
    if !validate_only {
        snap.topics.insert(t.name, meta);
    }
    Ok(created)
}

/// Adds the internal `__consumer_offsets` topic to a snapshot that lacks it (at start-up,
/// before the shards run). Returns true when it was added.
pub fn ensure_offsets_topic(snap: &mut MetadataSnapshot, n_shards: usize, partitions: i32) -> bool {
    if snap.topics.contains_key(crate::groups::OFFSETS_TOPIC) {
        return false;
    }
    let load = snap.partitions_per_shard(n_shards);
    let shards = place(&load, partitions as usize).into_iter().map(|s| s.0).collect();
    snap.topics.insert(
        crate::groups::OFFSETS_TOPIC.to_string(),
        TopicMeta {
            id: new_topic_id(),
            shards,
            configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
        },
    );
    snap.version += 1;
    true
}

/// Adds the internal `__transaction_state` topic to a snapshot that lacks it (at start-up,
/// before the shards run). Returns true when it was added.
pub fn ensure_transaction_topic(snap: &mut MetadataSnapshot, n_shards: usize, partitions: i32) -> bool {
    if snap.topics.contains_key(crate::txn::TXN_TOPIC) {
        return false;
    }
    let load = snap.partitions_per_shard(n_shards);
    let count = usize::try_from(partitions).expect("validated: 1..=1000");
    let shards = place(&load, count).into_iter().map(|s| s.0).collect();
    snap.topics.insert(
        crate::txn::TXN_TOPIC.to_string(),
        TopicMeta {
            id: new_topic_id(),
            shards,
            configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
        },
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
        if shard.send(ShardId(other as u16), msg).await.is_ok() {
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
