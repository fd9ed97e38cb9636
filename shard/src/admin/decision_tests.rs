//! The decisions of metadata changes, without I/O: what CreateTopics, DeleteTopics,
//! AlterConfigs and CreatePartitions do to a snapshot, and their replies when saving fails or
//! a part is rolled back.

use super::*;
use crate::metadata::TopicMeta;
use proptest::prelude::*;
use std::collections::BTreeMap;

const PLACING: Placing<'static> =
    Placing { n_shards: 3, default_partitions: 2, rates: &[], node: 0, brokers: &[0], default_replication_factor: 1 };

/// Applies a decision's records, as the lone broker does.
fn applied(s: &mut MetadataSnapshot, records: Vec<MetadataRecord>, placing: &Placing<'_>) {
    for r in &records {
        apply(s, r, &placing.local()).expect("a decision's records apply");
    }
}

fn create_one(
    s: &mut MetadataSnapshot,
    t: NewTopic,
    validate_only: bool,
    placing: &Placing<'_>,
) -> Result<CreatedTopic, PartitionError> {
    let (created, records) = super::create_one(s, t, validate_only, placing)?;
    applied(s, records, placing);
    Ok(created)
}

fn alter_configs(
    s: &mut MetadataSnapshot,
    topic: &str,
    changes: &[ConfigChange],
    replace_all: bool,
) -> Result<(), PartitionError> {
    let records = super::alter_configs(s, topic, changes, replace_all)?;
    applied(s, records, &PLACING);
    Ok(())
}

fn add_partitions(
    s: &mut MetadataSnapshot,
    topic: &str,
    count: i32,
    placing: &Placing<'_>,
) -> Result<(), PartitionError> {
    let records = super::add_partitions(s, topic, count, placing)?;
    applied(s, records, placing);
    Ok(())
}

fn new_topic(name: &str, partitions: i32) -> NewTopic {
    NewTopic { name: name.into(), partitions, replication_factor: -1, configs: BTreeMap::new() }
}

fn with_topic(name: &str, shards: &[u16], configs: &[(&str, &str)]) -> MetadataSnapshot {
    let mut s = MetadataSnapshot { version: 3, ..Default::default() };
    let configs = configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.topics.insert(name.into(), TopicMeta { id: [7; 16], shards: shards.to_vec(), configs });
    s
}

fn set(key: &str, value: &str) -> ConfigChange {
    ConfigChange { key: key.into(), op: ConfigOp::Set, value: Some(value.into()) }
}

fn op(key: &str, op: ConfigOp, value: Option<&str>) -> ConfigChange {
    ConfigChange { key: key.into(), op, value: value.map(String::from) }
}

#[test]
fn create_checks_name_existence_counts_and_replication() {
    let mut s = with_topic("t", &[0], &[]);
    assert!(matches!(
        create_one(&mut s, new_topic("bad name", 1), false, &PLACING),
        Err(PartitionError::InvalidTopic(_))
    ));
    assert_eq!(
        create_one(&mut s, new_topic("t", 1), false, &PLACING).unwrap_err(),
        PartitionError::TopicAlreadyExists("t".into())
    );
    for n in [0, -2, MAX_PARTITIONS_PER_TOPIC + 1] {
        let r = create_one(&mut s, new_topic("u", n), false, &PLACING);
        assert!(matches!(r, Err(PartitionError::InvalidPartitions(_))), "{n} partitions: {r:?}");
    }
    for rf in [0, 2, 3] {
        let t = NewTopic { replication_factor: rf, ..new_topic("u", 1) };
        assert!(matches!(create_one(&mut s, t, false, &PLACING), Err(PartitionError::InvalidReplicationFactor(_))));
    }
    let t = NewTopic { configs: [("retention.ms".to_string(), "soon".to_string())].into(), ..new_topic("u", 1) };
    assert!(matches!(create_one(&mut s, t, false, &PLACING), Err(PartitionError::InvalidConfig(_))));
    assert_eq!(s.topics.len(), 1, "nothing refused was added");
}

#[test]
fn create_uses_the_default_count_and_validate_only_adds_nothing() {
    let mut s = MetadataSnapshot::default();
    let c = create_one(&mut s, new_topic("a", -1), true, &PLACING).unwrap();
    assert_eq!(c.partitions, 2, "-1 takes the broker's num_partitions");
    assert!(s.topics.is_empty(), "validate_only changes nothing");
    let t = NewTopic { replication_factor: 1, ..new_topic("a", 5) };
    let c = create_one(&mut s, t, false, &PLACING).unwrap();
    let meta = &s.topics["a"];
    assert_eq!((c.partitions, meta.shards.len(), c.id), (5, 5, meta.id));
    assert_eq!(meta.shards, vec![0, 1, 2, 0, 1], "spread over the shards by count");
}

#[test]
fn create_topics_changes_only_when_one_was_created_for_real() {
    let mut s = with_topic("t", &[0], &[]);
    let change =
        CreateTopics { topics: vec![new_topic("t", 1), new_topic("a", 1)], validate_only: true, brokers: vec![] };
    let (r, records) = change.apply(&mut s, &PLACING);
    assert!(records.is_empty() && r[0].is_err() && r[1].is_ok());
    let change = CreateTopics { topics: vec![new_topic("t", 1)], validate_only: false, brokers: vec![] };
    assert!(change.apply(&mut s, &PLACING).1.is_empty(), "all refused: nothing to save");
    let change =
        CreateTopics { topics: vec![new_topic("t", 1), new_topic("a", 1)], validate_only: false, brokers: vec![] };
    let (r, records) = change.apply(&mut s, &PLACING);
    assert!(records.len() == 1 && r[0].is_err() && r[1].is_ok() && s.topics.contains_key("a"));
}

#[test]
fn delete_topics_answers_ids_and_unknown_names() {
    let mut s = with_topic("t", &[0, 1], &[]);
    let (r, records) = DeleteTopics { names: vec!["x".into(), "t".into()] }.apply(&mut s, &PLACING);
    assert_eq!(records, vec![MetadataRecord::TopicDeleted { id: [7; 16] }]);
    assert_eq!(r, vec![Err(PartitionError::UnknownTopicOrPartition), Ok([7; 16])]);
    assert!(s.topics.is_empty());
    let (_, records) = DeleteTopics { names: vec!["t".into()] }.apply(&mut s, &PLACING);
    assert!(records.is_empty(), "deleting nothing saves nothing");
}

#[test]
fn alter_configs_replaces_or_merges() {
    let base = with_topic("t", &[0], &[("retention.ms", "1000"), ("segment.bytes", "1048576")]);
    let mut s = base.clone();
    alter_configs(&mut s, "t", &[set("retention.ms", "2000")], true).unwrap();
    assert_eq!(s.topics["t"].configs, [("retention.ms".to_string(), "2000".to_string())].into(), "others dropped");
    let mut s = base.clone();
    alter_configs(&mut s, "t", &[set("retention.ms", "2000"), op("segment.bytes", ConfigOp::Delete, None)], false)
        .unwrap();
    assert_eq!(s.topics["t"].configs, [("retention.ms".to_string(), "2000".to_string())].into());
    let mut s = base.clone();
    assert_eq!(alter_configs(&mut s, "u", &[], false), Err(PartitionError::UnknownTopicOrPartition));
}

#[test]
fn alter_configs_refuses_unknown_keys_bad_values_and_list_ops_on_scalars() {
    let base = with_topic("t", &[0], &[("retention.ms", "1000")]);
    for changes in [
        vec![set("retention.ms", "2000"), set("no.such.key", "1")],
        vec![set("retention.ms", "-7")],
        vec![op("retention.ms", ConfigOp::Append, Some("5"))],
    ] {
        let mut s = base.clone();
        let r = alter_configs(&mut s, "t", &changes, false);
        assert!(matches!(r, Err(PartitionError::InvalidConfig(_))), "{changes:?}: {r:?}");
        assert_eq!(s, base, "a refused change leaves every key as it was");
    }
}

#[test]
fn append_and_subtract_edit_list_configs() {
    let mut s = with_topic("t", &[0], &[("cleanup.policy", "delete")]);
    let append = op("cleanup.policy", ConfigOp::Append, Some("compact, delete"));
    alter_configs(&mut s, "t", &[append], false).unwrap();
    assert_eq!(s.topics["t"].configs["cleanup.policy"], "delete,compact", "no duplicates");
    alter_configs(&mut s, "t", &[op("cleanup.policy", ConfigOp::Subtract, Some("delete"))], false).unwrap();
    assert_eq!(s.topics["t"].configs["cleanup.policy"], "compact");
}

#[test]
fn add_partitions_checks_then_grows_keeping_the_old_placement() {
    let mut s = with_topic("t", &[0, 0], &[]);
    s.topics.insert(
        crate::groups::OFFSETS_TOPIC.into(),
        TopicMeta { id: [1; 16], shards: vec![1], configs: BTreeMap::new() },
    );
    let before = s.clone();
    let refused = |r: Result<(), PartitionError>| matches!(r, Err(PartitionError::InvalidPartitions(_)));
    assert!(refused(add_partitions(&mut s, "t", 2, &PLACING)), "not larger");
    assert!(refused(add_partitions(&mut s, "t", 1, &PLACING)), "smaller");
    assert!(refused(add_partitions(&mut s, "t", MAX_PARTITIONS_PER_TOPIC + 1, &PLACING)));
    assert!(matches!(
        add_partitions(&mut s, crate::groups::OFFSETS_TOPIC, 5, &PLACING),
        Err(PartitionError::InvalidTopic(_))
    ));
    assert_eq!(add_partitions(&mut s, "u", 5, &PLACING), Err(PartitionError::UnknownTopicOrPartition));
    assert_eq!(s, before);
    add_partitions(&mut s, "t", 4, &PLACING).unwrap();
    assert_eq!(s.topics["t"].shards, vec![0, 0, 2, 1], "the least loaded shards (2, then 1) take the new ones");
    let op = CreatePartitions { topic: "t".into(), count: 6, validate_only: true, brokers: vec![] };
    let (r, records) = op.apply(&mut s, &PLACING);
    assert_eq!((r, records), (Ok(()), vec![]), "validate_only: checked, not saved");
}

#[test]
fn replies_when_not_saved() {
    let err = PartitionError::Storage("disk full".into());
    let created = CreatedTopic { id: [1; 16], partitions: 1, configs: BTreeMap::new(), replicas: vec![vec![0]] };
    let reply = vec![Ok(created), Err(PartitionError::TopicAlreadyExists("t".into()))];
    let r = CreateTopics::not_saved(reply, &err);
    assert_eq!(r[0].as_ref().unwrap_err(), &err, "created, but not saved: not created");
    assert_eq!(r[1].as_ref().unwrap_err(), &PartitionError::TopicAlreadyExists("t".into()), "the first error stays");
    let r = DeleteTopics::not_saved(vec![Ok([1; 16]), Err(PartitionError::UnknownTopicOrPartition)], &err);
    assert_eq!(r, vec![Err(err.clone()), Err(PartitionError::UnknownTopicOrPartition)]);
    assert_eq!(AlterConfigs::not_saved(Ok(()), &err), Err(err.clone()));
    assert_eq!(CreatePartitions::not_saved(Ok(()), &err), Err(err));
}

#[test]
fn replies_after_a_rollback_name_only_the_undone_topics() {
    let mut after = with_topic("a", &[0], &[]);
    after.topics.insert("b".into(), TopicMeta { id: [8; 16], shards: vec![1], configs: BTreeMap::new() });
    let created =
        |id: u8| Ok(CreatedTopic { id: [id; 16], partitions: 1, configs: BTreeMap::new(), replicas: vec![vec![0]] });
    let undone: BTreeSet<String> = ["a".to_string()].into();
    let reason = |t: &str| PartitionError::Storage(format!("{t} rolled back"));
    let r = CreateTopics::rolled_back(
        vec![created(7), created(8), Err(PartitionError::UnknownTopicId)],
        &after,
        &undone,
        reason,
    );
    assert_eq!(r[0].as_ref().unwrap_err(), &PartitionError::Storage("a rolled back".into()));
    assert!(r[1].is_ok(), "b was not rolled back");
    assert_eq!(r[2].as_ref().unwrap_err(), &PartitionError::UnknownTopicId);
    let deleted = vec![Ok([7; 16])];
    assert_eq!(DeleteTopics::rolled_back(deleted.clone(), &after, &undone, reason), deleted);
    assert_eq!(CreatePartitions::rolled_back(Ok(()), &after, &undone, reason), Err(reason("a")));
    assert_eq!(AlterConfigs::rolled_back(Ok(()), &after, &BTreeSet::new(), reason), Ok(()));
}

#[test]
fn the_offsets_topic_is_added_once_and_compacted() {
    let mut s = MetadataSnapshot::default();
    assert!(ensure_offsets_topic(&mut s, 2, 4));
    let t = &s.topics[crate::groups::OFFSETS_TOPIC];
    assert_eq!((t.shards.clone(), s.version), (vec![0, 1, 0, 1], 1));
    assert_eq!(t.configs["cleanup.policy"], "compact");
    assert!(!ensure_offsets_topic(&mut s, 2, 8), "already there");
    assert_eq!((s.topics[crate::groups::OFFSETS_TOPIC].shards.len(), s.version), (4, 1));
}

proptest! {
    /// Creating and growing topics never moves an existing partition, places every new one on
    /// a real shard, keeps shards within one partition of each other when load is not weighed,
    /// and keeps every count within bounds.
    #[test]
    fn placement_only_adds(n_shards in 1usize..6, steps in proptest::collection::vec((0u8..4, 1i32..9), 1..20)) {
        let placing = Placing { n_shards, default_partitions: 1, rates: &[], node: 0, brokers: &[0], default_replication_factor: 1 };
        let mut s = MetadataSnapshot::default();
        for (topic, grow) in steps {
            let name = format!("t{topic}");
            let before = s.clone();
            let r = match s.topics.get(&name).map(|t| i32::try_from(t.shards.len()).expect("a test topic has few partitions")) {
                None => create_one(&mut s, new_topic(&name, grow), false, &placing).map(|_| ()),
                Some(now) => add_partitions(&mut s, &name, now + grow, &placing),
            };
            prop_assert!(r.is_ok(), "{:?}", r);
            for (n, t) in &before.topics {
                prop_assert_eq!(&s.topics[n].shards[..t.shards.len()], &t.shards[..]);
            }
            let load = s.partitions_per_shard(n_shards);
            prop_assert!(s.topics.values().flat_map(|t| &t.shards).all(|o| usize::from(*o) < n_shards));
            prop_assert!(load.iter().max().unwrap() - load.iter().min().unwrap() <= 1, "{:?}", load);
        }
    }
}

#[test]
fn a_cluster_spreads_replicas_and_refuses_a_factor_above_its_brokers() {
    let brokers = [1, 2, 3];
    let placing = Placing {
        n_shards: 2,
        default_partitions: 1,
        rates: &[],
        node: 2,
        brokers: &brokers,
        default_replication_factor: 1,
    };
    let mut s = MetadataSnapshot::default();
    let t = NewTopic { replication_factor: 3, ..new_topic("r3", 3) };
    let c = create_one(&mut s, t, false, &placing).unwrap();
    assert_eq!(c.replicas.len(), 3);
    let leaders: BTreeSet<i32> = c.replicas.iter().map(|r| r[0]).collect();
    assert_eq!(leaders.len(), 3, "one preferred leader per broker: {:?}", c.replicas);
    assert!(c.replicas.iter().all(|r| r.len() == 3));
    assert_eq!(
        s.replication["r3"].partitions.iter().map(|p| p.leader).collect::<Vec<_>>(),
        c.replicas.iter().map(|r| r[0]).collect::<Vec<_>>()
    );
    assert!(s.topics["r3"].shards.iter().all(|sh| *sh < 2), "node 2 holds a replica of every partition");
    let t = NewTopic { replication_factor: 4, ..new_topic("r4", 1) };
    let e = create_one(&mut s, t, false, &placing).unwrap_err();
    assert!(matches!(&e, PartitionError::InvalidReplicationFactor(m) if m.contains("only 3 broker(s)")), "{e:?}");
    add_partitions(&mut s, "r3", 5, &placing).unwrap();
    let parts = &s.replication["r3"].partitions;
    assert_eq!(parts.len(), 5);
    assert!(parts.iter().all(|p| p.replicas.len() == 3), "new partitions keep the factor");
    let t = NewTopic { replication_factor: 1, ..new_topic("r1", 3) };
    create_one(&mut s, t, false, &placing).unwrap();
    let hosted = s.topics["r1"].shards.iter().filter(|sh| **sh != crate::metadata::NOT_HOSTED).count();
    let mine = s.replication["r1"].partitions.iter().filter(|p| p.replicas == vec![2]).count();
    assert_eq!(hosted, mine, "only this broker's replicas are placed here");
    assert_eq!(s.replication["r1"].number, 2);
}

#[test]
fn a_topic_without_a_factor_takes_the_brokers_default() {
    let brokers = [0, 1, 2];
    let placing = Placing {
        n_shards: 1,
        default_partitions: 2,
        rates: &[],
        node: 0,
        brokers: &brokers,
        default_replication_factor: 3,
    };
    let mut s = MetadataSnapshot::default();
    let c = create_one(&mut s, new_topic("auto", -1), false, &placing).unwrap();
    assert_eq!(c.replicas.len(), 2, "num_partitions");
    assert!(c.replicas.iter().all(|r| r.len() == 3), "default_replication_factor: {:?}", c.replicas);
    let one = Placing { default_replication_factor: 1, ..placing };
    let c = create_one(&mut s, new_topic("auto1", -1), false, &one).unwrap();
    assert!(c.replicas.iter().all(|r| r.len() == 1), "Kafka's default of 1");
    let four = Placing { default_replication_factor: 4, ..one };
    let e = create_one(&mut s, new_topic("auto4", -1), false, &four).unwrap_err();
    assert!(matches!(e, PartitionError::InvalidReplicationFactor(_)), "{e:?}");
}
