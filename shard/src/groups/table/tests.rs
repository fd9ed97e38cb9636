//! Unit tests of the coordinator's decisions (no shard, no storage, no clock).

use super::*;
use crate::groups::{OffsetToCommit, SyncRequest};
use bytes::Bytes;
use std::time::Duration;

fn limits() -> Limits {
    Limits { initial_delay: Duration::ZERO, min_session: 1000, max_session: 600_000 }
}

fn join_req(group: &str, member: &str, topics: &[&str]) -> JoinRequest {
    // A ConsumerProtocolSubscription v0: version, topics, no user data.
    let mut meta = vec![0u8, 0];
    meta.extend_from_slice(&i32::try_from(topics.len()).expect("a few topics").to_be_bytes());
    for t in topics {
        meta.extend_from_slice(&i16::try_from(t.len()).expect("a short topic name").to_be_bytes());
        meta.extend_from_slice(t.as_bytes());
    }
    meta.extend_from_slice(&(-1i32).to_be_bytes());
    JoinRequest {
        group_id: group.into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from(meta))],
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: false,
    }
}

fn now_result<T>(step: Step<T>) -> Result<T, GroupError> {
    match step {
        Step::Now(r) => r,
        Step::Wait(mut rx) => rx.try_recv().ok().flatten().expect("answered"),
    }
}

fn member(group: &str, id: &str, generation: i32) -> MemberRef {
    MemberRef { group_id: group.into(), generation_id: generation, member_id: id.into(), group_instance_id: None }
}

fn offset(topic: &str, partition: i32, offset: i64) -> OffsetToCommit {
    OffsetToCommit { topic: topic.into(), partition, offset, leader_epoch: 1, metadata: Some("m".into()) }
}

/// A Stable group "g" with one member "a" of generation 1 subscribed to topic "t".
fn stable_group(groups: &mut Groups, now: Instant) {
    let j = now_result(join(groups, join_req("g", "", &["t"]), "a".into(), now, &limits())).unwrap();
    assert_eq!((j.member_id.as_str(), j.generation_id), ("a", 1));
    let sync_req = SyncRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: "a".into(),
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![("a".into(), Bytes::from_static(b"A"))],
    };
    let (step, record) = sync(groups, sync_req, now);
    assert_eq!(&now_result(step).unwrap().assignment[..], b"A");
    assert_eq!(
        record,
        Some(GroupRecord { generation: 1, protocol_type: "consumer".into(), protocol: "range".into() }),
        "becoming Stable writes the group record"
    );
}

#[test]
fn join_checks_group_and_member() {
    let mut groups = Groups::new();
    let now = Instant::now();
    let r = now_result(join(&mut groups, join_req("", "", &["t"]), "x".into(), now, &limits()));
    assert_eq!(r.map(|_| ()), Err(GroupError::InvalidGroupId));
    let r = now_result(join(&mut groups, join_req("g", "someone", &["t"]), "x".into(), now, &limits()));
    assert_eq!(r.map(|_| ()), Err(GroupError::UnknownMemberId), "a member id of a group that does not exist");
    assert!(groups.is_empty(), "failed joins create no group");
    stable_group(&mut groups, now);
    assert_eq!(list(&groups).iter().map(|l| (l.group_id.as_str(), l.state)).collect::<Vec<_>>(), vec![("g", "Stable")]);
}

#[test]
fn sync_heartbeat_leave_of_unknown_group() {
    let mut groups = Groups::new();
    let now = Instant::now();
    let req = SyncRequest {
        group_id: "nope".into(),
        generation_id: 1,
        member_id: "a".into(),
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    };
    let (step, record) = sync(&mut groups, req, now);
    assert_eq!(now_result(step).map(|_| ()), Err(GroupError::UnknownMemberId));
    assert!(record.is_none());
    assert_eq!(heartbeat(&mut groups, &member("nope", "a", 1), now), Err(GroupError::UnknownMemberId));
    assert_eq!(leave(&mut groups, "nope", &[("a".into(), None)], now, &limits()), Err(GroupError::UnknownMemberId));
}

#[test]
fn commits_are_checked_then_planned_then_applied() {
    let mut groups = Groups::new();
    // No group: only a commit without generation and member id (manual assignment).
    assert_eq!(check_commit(&groups, &member("", "", -1)), Err(GroupError::InvalidGroupId));
    assert_eq!(check_commit(&groups, &member("g", "", -1)), Ok(()));
    assert_eq!(check_commit(&groups, &member("g", "a", 1)), Err(GroupError::UnknownMemberId));
    let plan =
        plan_commit("g", vec![offset("t", 0, 5), offset("gone", 0, 1), offset("t", 1, 7)], 1000, |t, _| t == "t");
    assert_eq!(plan.results, vec![Ok(()), Err(GroupError::UnknownTopicOrPartition), Ok(())]);
    assert_eq!(plan.records.len(), 2);
    let decoded = store::decode(&plan.records[0].0, Some(&plan.records[0].1)).unwrap();
    let want = Committed { offset: 5, leader_epoch: 1, metadata: Some("m".into()), commit_timestamp_ms: 1000 };
    assert_eq!(
        decoded,
        Entry::Offset { group: "g".into(), topic: "t".into(), partition: 0, value: Some(want.clone()) }
    );
    apply_commit(&mut groups, "g", plan.accepted);
    assert_eq!(
        fetch(&groups, "g", Some(vec![("t".into(), vec![0, 2])])),
        vec![("t".into(), 0, Some(want)), ("t".into(), 2, None)]
    );
    let all: Vec<(String, i32)> = fetch(&groups, "g", None).into_iter().map(|(t, p, _)| (t, p)).collect();
    assert_eq!(all, vec![("t".into(), 0), ("t".into(), 1)], "all offsets, sorted");
    assert!(fetch(&groups, "other", None).is_empty());
    // OffsetFetch v9's member fields are checked only against KIP-848 groups.
    assert_eq!(check_fetch(&groups, "g", Some("x"), 3), Ok(()), "a classic group checks nothing");
    assert_eq!(check_fetch(&groups, "other", Some("x"), 3), Ok(()), "nor a missing one");
    // An Empty group that has offsets still takes them; a member's commit needs the group.
    assert_eq!(check_commit(&groups, &member("g", "", -1)), Ok(()));
    assert_eq!(check_commit(&groups, &member("g", "a", 1)), Err(GroupError::UnknownMemberId));
}

#[test]
fn commits_of_a_stable_group() {
    let mut groups = Groups::new();
    let now = Instant::now();
    stable_group(&mut groups, now);
    assert_eq!(check_commit(&groups, &member("g", "a", 1)), Ok(()));
    assert_eq!(check_commit(&groups, &member("g", "a", 0)), Err(GroupError::IllegalGeneration));
    assert_eq!(check_commit(&groups, &member("g", "b", 1)), Err(GroupError::UnknownMemberId));
    assert_eq!(check_commit(&groups, &member("g", "", -1)), Err(GroupError::UnknownMemberId), "group has members");
    // A transaction's commit (KIP-447): the same member and generation checks fence a zombie,
    // but a producer without group metadata may commit while the group has members.
    assert_eq!(check_txn_commit(&groups, &member("g", "a", 1)), Ok(()));
    assert_eq!(check_txn_commit(&groups, &member("g", "a", 0)), Err(GroupError::IllegalGeneration));
    assert_eq!(check_txn_commit(&groups, &member("g", "b", 1)), Err(GroupError::UnknownMemberId));
    assert_eq!(check_txn_commit(&groups, &member("g", "", -1)), Ok(()));
    assert_eq!(check_txn_commit(&groups, &member("none", "", -1)), Ok(()), "no group, no generation");
    assert_eq!(check_txn_commit(&groups, &member("none", "a", 3)), Err(GroupError::IllegalGeneration));
}

#[test]
fn describe_shows_members_metadata_and_assignment() {
    let mut groups = Groups::new();
    let now = Instant::now();
    assert!(describe(&groups, "g").is_none());
    stable_group(&mut groups, now);
    let d = describe(&groups, "g").unwrap();
    assert_eq!((d.state, d.protocol_type.as_str(), d.protocol.as_str()), ("Stable", "consumer", "range"));
    assert_eq!(d.members.len(), 1);
    let m = &d.members[0];
    assert_eq!((m.member_id.as_str(), m.client_id.as_str(), &m.assignment[..]), ("a", "client", &b"A"[..]));
    assert!(!m.metadata.is_empty());
}

#[test]
fn delete_only_empty_groups() {
    let mut groups = Groups::new();
    let now = Instant::now();
    assert_eq!(plan_delete(&groups, "g"), Err(GroupError::GroupIdNotFound));
    stable_group(&mut groups, now);
    apply_commit(&mut groups, "g", plan_commit("g", vec![offset("t", 0, 1)], 1, |_, _| true).accepted);
    assert_eq!(plan_delete(&groups, "g"), Err(GroupError::NonEmptyGroup));
    assert_eq!(leave(&mut groups, "g", &[("a".into(), None)], now, &limits()), Ok(vec![Ok(())]));
    assert_eq!(groups["g"].state, State::Empty);
    let records = plan_delete(&groups, "g").unwrap();
    let decoded: Vec<Entry> = records.iter().map(|(k, v)| store::decode(k, Some(v)).unwrap()).collect();
    assert_eq!(
        decoded,
        vec![
            Entry::Offset { group: "g".into(), topic: "t".into(), partition: 0, value: None },
            Entry::Group { group: "g".into(), value: None },
        ]
    );
    finish_delete(&mut groups, "g");
    assert!(!groups.contains_key("g"), "a deleted group is gone (Dead)");
}

#[test]
fn delete_offsets_refuses_subscribed_topics() {
    let mut groups = Groups::new();
    let now = Instant::now();
    assert_eq!(plan_delete_offsets(&groups, "g", &[]).map(|_| ()), Err(GroupError::GroupIdNotFound));
    stable_group(&mut groups, now);
    let plan = plan_commit("g", vec![offset("t", 0, 1), offset("u", 0, 2)], 1, |_, _| true);
    apply_commit(&mut groups, "g", plan.accepted);
    let parts = vec![("t".to_string(), 0), ("u".to_string(), 0)];
    let (results, records) = plan_delete_offsets(&groups, "g", &parts).unwrap();
    assert_eq!(results, vec![Err(GroupError::GroupSubscribedToTopic), Ok(())]);
    assert_eq!(records, vec![(store::offset_key("g", "u", 0), Vec::new())]);
    finish_delete_offsets(&mut groups, "g", &parts, &results);
    let left: Vec<String> = fetch(&groups, "g", None).into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(left, vec!["t".to_string()]);
}

#[test]
fn replay_applies_offsets_groups_and_tombstones() {
    let mut groups = Groups::new();
    let c = Committed { offset: 3, leader_epoch: 0, metadata: None, commit_timestamp_ms: 5 };
    apply(&mut groups, Entry::Offset { group: "g".into(), topic: "t".into(), partition: 1, value: Some(c.clone()) });
    apply(
        &mut groups,
        Entry::Group {
            group: "g".into(),
            value: Some(GroupRecord { generation: 7, protocol_type: "consumer".into(), protocol: "range".into() }),
        },
    );
    assert_eq!(groups["g"].generation, 7, "a restarted coordinator continues the generation");
    assert_eq!(groups["g"].protocol_type.as_deref(), Some("consumer"));
    assert_eq!(groups["g"].offsets.get(&("t".into(), 1)), Some(&c));
    apply(&mut groups, Entry::Offset { group: "g".into(), topic: "t".into(), partition: 1, value: None });
    assert!(groups["g"].offsets.is_empty());
    apply(&mut groups, Entry::Group { group: "g".into(), value: None });
    assert!(groups.is_empty());
}

#[test]
fn sweep_expires_members_then_old_offsets_of_empty_groups() {
    let mut groups = Groups::new();
    let now = Instant::now();
    stable_group(&mut groups, now);
    let plan = plan_commit("g", vec![offset("t", 0, 1)], 1_000, |_, _| true);
    apply_commit(&mut groups, "g", plan.accepted);
    let plan = plan_commit("g", vec![offset("t", 1, 1)], 5_000, |_, _| true);
    apply_commit(&mut groups, "g", plan.accepted);
    // Members are alive: nothing expires, even offsets past the horizon (the group is Stable).
    assert!(tick(&mut groups, now + Duration::from_secs(5), &limits(), Some(10_000)).is_empty());
    assert_eq!(groups["g"].state, State::Stable);
    apply_commit(&mut groups, "other", plan_commit("other", vec![offset("t", 0, 1)], 1_000, |_, _| true).accepted);
    // Without the expiry flag only sessions are swept: "a" expires after 10 s of silence.
    assert!(tick(&mut groups, now + Duration::from_secs(11), &limits(), None).is_empty());
    assert_eq!(groups["g"].state, State::Empty);
    assert_eq!(groups["g"].offsets.len(), 2);
    // Offsets committed before the horizon go; a group left with nothing goes too.
    let mut expired = tick(&mut groups, now + Duration::from_secs(12), &limits(), Some(2_000));
    expired.sort();
    assert_eq!(
        expired,
        vec![("g".to_string(), vec![("t".to_string(), 0)]), ("other".to_string(), vec![("t".to_string(), 0)])]
    );
    assert!(groups.contains_key("g") && !groups.contains_key("other"));
    assert_eq!(expiry_records("g", &expired[0].1), vec![(store::offset_key("g", "t", 0), Vec::new())]);
}

/// An offsets operation of the property test below.
#[derive(Debug, Clone)]
enum OffsetOp {
    Commit { group: usize, topic: usize, partition: i32, offset: i64 },
    DeleteOffset { group: usize, topic: usize, partition: i32 },
    DeleteGroup { group: usize },
    Expire { before_step: u64 },
}

fn offset_op() -> impl proptest::strategy::Strategy<Value = OffsetOp> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..4usize, 0..2usize, 0..3i32, 0..1000i64)
            .prop_map(|(group, topic, partition, offset)| OffsetOp::Commit { group, topic, partition, offset }),
        2 => (0..4usize, 0..2usize, 0..3i32).prop_map(|(group, topic, partition)| OffsetOp::DeleteOffset { group, topic, partition }),
        1 => (0..4usize).prop_map(|group| OffsetOp::DeleteGroup { group }),
        1 => (0..40u64).prop_map(|before_step| OffsetOp::Expire { before_step }),
    ]
}

/// Replays records into a second table, as a shard does when it opens `__consumer_offsets`.
fn replay(replica: &mut Groups, records: &Records) {
    for (k, v) in records {
        apply(replica, store::decode(k, Some(v)).expect("our own records decode"));
    }
}

proptest::proptest! {
    /// Commits, offset deletes, group deletes and expiry by offset retention, with groups "g0"
    /// to "g2" without members and "g" (a live member subscribed to "t") among them: the table
    /// keeps what a plain map of offsets says it should (a live group refuses member-less
    /// commits, deleting its subscribed topic's offsets and being deleted, and its offsets do
    /// not expire), and replaying the records written so far rebuilds the same offsets.
    #[test]
    fn offsets_follow_a_model_and_replay_to_the_same_table(ops in proptest::collection::vec(offset_op(), 1..40)) {
        let names = ["g0", "g1", "g2", "g"];
        let topics = ["t", "u"];
        let now = Instant::now();
        let mut groups = Groups::new();
        let mut replica = Groups::new();
        stable_group(&mut groups, now);
        let record = GroupRecord { generation: 1, protocol_type: "consumer".into(), protocol: "range".into() };
        replay(&mut replica, &vec![(store::group_key("g"), store::group_value(&record))]);
        // The model: (group, topic, partition) → (offset, commit time).
        let mut model: std::collections::BTreeMap<(String, String, i32), (i64, i64)> = Default::default();
        for (step, op) in ops.into_iter().enumerate() {
            let now_ms = step as i64 * 1000;
            match op {
                OffsetOp::Commit { group, topic, partition, offset: o } => {
                    let g = names[group];
                    let r = check_commit(&groups, &member(g, "", -1));
                    proptest::prop_assert_eq!(r.is_ok(), g != "g", "{:?}", r);
                    if r.is_ok() {
                        let plan = plan_commit(g, vec![offset(topics[topic], partition, o)], now_ms, |_, _| true);
                        replay(&mut replica, &plan.records);
                        apply_commit(&mut groups, g, plan.accepted);
                        model.insert((g.into(), topics[topic].into(), partition), (o, now_ms));
                    }
                }
                OffsetOp::DeleteOffset { group, topic, partition } => {
                    let g = names[group];
                    let key = (g.to_string(), topics[topic].to_string(), partition);
                    let parts = vec![(topics[topic].to_string(), partition)];
                    match plan_delete_offsets(&groups, g, &parts) {
                        Err(e) => proptest::prop_assert_eq!(e, GroupError::GroupIdNotFound),
                        Ok((results, records)) => {
                            let refused = g == "g" && topics[topic] == "t";
                            proptest::prop_assert_eq!(results[0].is_err(), refused);
                            replay(&mut replica, &records);
                            finish_delete_offsets(&mut groups, g, &parts, &results);
                            if !refused {
                                model.remove(&key);
                            }
                        }
                    }
                }
                OffsetOp::DeleteGroup { group } => {
                    let g = names[group];
                    match plan_delete(&groups, g) {
                        Err(e) if g == "g" => proptest::prop_assert_eq!(e, GroupError::NonEmptyGroup),
                        Err(e) => proptest::prop_assert_eq!(e, GroupError::GroupIdNotFound),
                        Ok(records) => {
                            replay(&mut replica, &records);
                            finish_delete(&mut groups, g);
                            model.retain(|(mg, _, _), _| mg != g);
                        }
                    }
                }
                OffsetOp::Expire { before_step } => {
                    let horizon = before_step as i64 * 1000;
                    for (g, keys) in tick(&mut groups, now, &limits(), Some(horizon)) {
                        replay(&mut replica, &expiry_records(&g, &keys));
                    }
                    model.retain(|(g, _, _), (_, at)| g == "g" || *at >= horizon);
                }
            }
            for g in names {
                let live = fetch(&groups, g, None);
                let expected: Vec<(String, i32, i64, i64)> =
                    model.iter().filter(|((mg, _, _), _)| mg == g).map(|((_, t, p), (o, at))| (t.clone(), *p, *o, *at)).collect();
                let got: Vec<(String, i32, i64, i64)> = live
                    .iter()
                    .map(|(t, p, c)| {
                        let c = c.as_ref().expect("every listed offset is committed");
                        (t.clone(), *p, c.offset, c.commit_timestamp_ms)
                    })
                    .collect();
                proptest::prop_assert_eq!(&got, &expected, "group {}", g);
                proptest::prop_assert_eq!(fetch(&replica, g, None), live, "replayed group {}", g);
            }
            proptest::prop_assert_eq!(groups["g"].state, State::Stable);
        }
    }
}

/// A v2 batch of `records` (key, value) placed at `base` offset.
fn batch_at(base: i64, records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let recs: Vec<sluice_core::batch::Record<'_>> =
        records.iter().map(|(k, v)| sluice_core::batch::Record { key: Some(k), value: v }).collect();
    let mut b = sluice_core::batch::build(&recs, 0);
    b[..8].copy_from_slice(&base.to_be_bytes());
    b
}

#[test]
fn replay_applies_what_decodes_and_skips_the_rest() {
    let c = Committed { offset: 42, leader_epoch: 1, metadata: None, commit_timestamp_ms: 7 };
    let g = GroupRecord { generation: 3, protocol_type: "consumer".into(), protocol: "range".into() };
    let (ok_key, ok_value) = (store::offset_key("g", "t", 0), store::offset_value(&c));
    let mut bytes = batch_at(0, &[(&ok_key, &ok_value), (&[9], b"not ours")]);
    let mut compressed = batch_at(2, &[(&ok_key, &ok_value)]);
    compressed[22] |= 1; // gzip: records cannot be read in place
    bytes.extend_from_slice(&compressed);
    bytes.extend_from_slice(&batch_at(5, &[(&store::group_key("g"), &store::group_value(&g))]));
    bytes.extend_from_slice(&[0, 0, 0]); // a cut tail: no header
    let mut groups = Groups::new();
    let done = replay_batches(&mut groups, &bytes);
    assert_eq!(
        done,
        Replayed { applied: 2, skipped: 2, next: Some(sluice_core::Offset(6)), pending: Vec::new(), share: Vec::new() }
    );
    assert_eq!(groups["g"].offsets[&("t".to_string(), 0)], c);
    assert_eq!(groups["g"].generation, 3);
    assert_eq!(replay_batches(&mut groups, &[1, 2, 3]), Replayed::default(), "nothing to walk");
}
