//! Unit and property tests of KIP-848 consumer groups: joins, reconciliation (revoke before
//! reassign), fencing, static members, timeouts, metadata changes, regex subscriptions,
//! the assignors, commit validation and the durable record.

use super::assignor::{self, Assignor, PartitionCounts, Subscriptions};
use super::*;
use crate::groups::table::Groups;
use proptest::prelude::*;
use std::time::Duration;

const G: &str = "g";

fn topics(list: &[(&str, i32)]) -> Topics {
    list.iter()
        .enumerate()
        .map(|(i, (n, p))| {
            let mut id = [0u8; 16];
            id[0] = u8::try_from(i + 1).unwrap();
            (n.to_string(), TopicInfo { id, partitions: *p })
        })
        .collect()
}

fn settings() -> Settings {
    Settings {
        session_timeout: Duration::from_secs(45),
        heartbeat_interval_ms: 5000,
        max_size: 10,
        migration: sluice_core::config::MigrationPolicy::Bidirectional,
        regex_refresh_interval: Duration::from_secs(600),
    }
}

fn allow_all(_: &str) -> bool {
    true
}

/// The regex context of a sender that may describe everything, topic counter 0.
pub(super) fn open() -> RegexContext<'static> {
    RegexContext { may_describe: &allow_all, topics_version: 0 }
}

pub(super) fn limits() -> Limits {
    Limits { initial_delay: Duration::ZERO, min_session: 1000, max_session: 300_000 }
}

fn join_req(member: &str, subs: &[&str]) -> ConsumerHeartbeatRequest {
    ConsumerHeartbeatRequest {
        group_id: G.into(),
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(subs.iter().map(|s| s.to_string()).collect()),
        owned: Some(Assignment::new()),
        version: 1,
        ..Default::default()
    }
}

fn beat_req(member: &str, epoch: i32, owned: Option<Assignment>) -> ConsumerHeartbeatRequest {
    ConsumerHeartbeatRequest {
        group_id: G.into(),
        member_id: member.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned,
        version: 1,
        ..Default::default()
    }
}

fn hb(
    groups: &mut Groups,
    req: ConsumerHeartbeatRequest,
    now: Instant,
    t: &Topics,
) -> Result<ConsumerHeartbeatResponse, GroupError> {
    hb_as(groups, req, now, t, &open())
}

fn hb_as(
    groups: &mut Groups,
    req: ConsumerHeartbeatRequest,
    now: Instant,
    t: &Topics,
    rx: &RegexContext<'_>,
) -> Result<ConsumerHeartbeatResponse, GroupError> {
    heartbeat(groups, req, "server-id".into(), now, t, rx, &settings(), &limits()).map(|b| b.response)
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn regex_join(member: &str, regex: &str) -> ConsumerHeartbeatRequest {
    ConsumerHeartbeatRequest {
        subscribed_topic_names: None,
        subscribed_topic_regex: Some(regex.into()),
        ..join_req(member, &[])
    }
}

fn parts(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

fn group(groups: &Groups) -> &ConsumerGroup {
    groups[G].consumer.as_ref().unwrap()
}

fn asg(list: &[(&str, &[i32])]) -> Assignment {
    list.iter().map(|(t, ps)| (t.to_string(), ps.iter().copied().collect())).collect()
}

#[test]
fn a_first_member_gets_every_partition_at_epoch_one() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 3)]));
    let r = hb(&mut gs, join_req("m1", &["a"]), now, &t).unwrap();
    assert_eq!((r.member_id.as_str(), r.member_epoch, r.heartbeat_interval_ms), ("m1", 1, 5000));
    assert_eq!(r.assignment, Some(asg(&[("a", &[0, 1, 2])])));
    assert_eq!(group(&gs).state_name(), "Stable");
    // A heartbeat with nothing new gets no assignment back.
    let r = hb(&mut gs, beat_req("m1", 1, None), now, &t).unwrap();
    assert_eq!((r.member_epoch, r.assignment), (1, None));
}

#[test]
fn partitions_move_only_after_their_owner_revoked_them() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 4)]));
    hb(&mut gs, join_req("m1", &["a"]), now, &t).unwrap();
    // m2 joins: epoch 2, but what it is due is still m1's: nothing yet.
    let r = hb(&mut gs, join_req("m2", &["a"]), now, &t).unwrap();
    assert_eq!((r.member_epoch, r.assignment.as_ref().map(parts)), (2, Some(0)));
    assert_eq!(group(&gs).state_name(), "Reconciling");
    // m1 is told to keep two: it stays at epoch 1 until it says it revoked the others.
    let r = hb(&mut gs, beat_req("m1", 1, None), now, &t).unwrap();
    let kept = r.assignment.clone().unwrap();
    assert_eq!((r.member_epoch, parts(&kept)), (1, 2));
    let r = hb(&mut gs, beat_req("m1", 1, Some(asg(&[("a", &[0, 1, 2, 3])]))), now, &t).unwrap();
    assert_eq!(r.member_epoch, 1, "still owns the revoked partitions");
    assert_eq!(hb(&mut gs, beat_req("m2", 2, None), now, &t).unwrap().assignment, None, "m2 still waits");
    let r = hb(&mut gs, beat_req("m1", 1, Some(kept.clone())), now, &t).unwrap();
    assert_eq!(r.member_epoch, 2);
    let r = hb(&mut gs, beat_req("m2", 2, None), now, &t).unwrap();
    let got = r.assignment.unwrap();
    assert_eq!(parts(&got), 2);
    assert!(reconcile::intersect(&got, &kept).is_empty());
    assert_eq!(group(&gs).state_name(), "Stable");
}

#[test]
fn a_member_waiting_for_revocations_heartbeats_sooner_until_it_has_its_partitions() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 4)]));
    let r = hb(&mut gs, join_req("m1", &["a"]), now, &t).unwrap();
    assert_eq!(r.heartbeat_interval_ms, 5000, "nothing to wait for: the normal interval");
    // m2 joins: what it is due is still m1's, so it is told to come back five times sooner.
    let r = hb(&mut gs, join_req("m2", &["a"]), now, &t).unwrap();
    assert_eq!((r.member_epoch, r.heartbeat_interval_ms), (2, 1000));
    // m1 hears of its revocation (normal interval: the client heartbeats when it is done).
    let r = hb(&mut gs, beat_req("m1", 1, None), now, &t).unwrap();
    let kept = r.assignment.clone().unwrap();
    assert_eq!((r.member_epoch, parts(&kept), r.heartbeat_interval_ms), (1, 2, 5000));
    // m2 comes back before m1 revoked: still nothing, still the short interval.
    let r = hb(&mut gs, beat_req("m2", 2, None), now, &t).unwrap();
    assert_eq!((r.assignment, r.heartbeat_interval_ms), (None, 1000));
    // m1 reports the revocation: it reaches epoch 2 and its old partitions are free at once...
    let r = hb(&mut gs, beat_req("m1", 1, Some(kept.clone())), now, &t).unwrap();
    assert_eq!((r.member_epoch, r.heartbeat_interval_ms), (2, 5000));
    assert!(group(&gs).members["m1"].revoking.is_empty());
    // ...and m2's next heartbeat gets them, with the normal interval back.
    let r = hb(&mut gs, beat_req("m2", 2, None), now, &t).unwrap();
    let got = r.assignment.unwrap();
    assert_eq!((parts(&got), r.heartbeat_interval_ms), (2, 5000));
    assert!(reconcile::intersect(&got, &kept).is_empty(), "{got:?} {kept:?}");
    assert_eq!(group(&gs).state_name(), "Stable");
}

#[test]
fn the_short_interval_stays_within_the_accepted_bounds() {
    let with = |ms: i32| Settings { heartbeat_interval_ms: ms, ..settings() };
    assert_eq!(with(1000).interval_for(MemberState::UnreleasedPartitions), 200);
    assert_eq!(with(300).interval_for(MemberState::UnreleasedPartitions), 100, "at least the minimum");
    assert_eq!(with(100).interval_for(MemberState::UnreleasedPartitions), 100);
    for state in [MemberState::Stable, MemberState::UnrevokedPartitions] {
        assert_eq!(with(1000).interval_for(state), 1000);
    }
}

#[test]
fn fencing_errors_as_kafka_answers_them() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 2)]));
    assert_eq!(hb(&mut gs, beat_req("m1", 1, None), now, &t), Err(GroupError::GroupIdNotFound));
    hb(&mut gs, join_req("m1", &["a"]), now, &t).unwrap();
    assert_eq!(hb(&mut gs, beat_req("m9", 1, None), now, &t), Err(GroupError::UnknownMemberId));
    assert_eq!(hb(&mut gs, beat_req("m1", 7, None), now, &t), Err(GroupError::FencedMemberEpoch));
    // Epoch 2 after m2 joined; m1 missed the answer: the previous epoch with owned ⊆ assigned is fine.
    hb(&mut gs, join_req("m2", &["a"]), now, &t).unwrap();
    let r = hb(&mut gs, beat_req("m1", 1, None), now, &t).unwrap();
    let kept = r.assignment.unwrap();
    let r = hb(&mut gs, beat_req("m1", 1, Some(kept.clone())), now, &t).unwrap();
    assert_eq!(r.member_epoch, 2);
    assert!(hb(&mut gs, beat_req("m1", 1, Some(kept)), now, &t).is_ok(), "a lost answer");
    assert_eq!(
        hb(&mut gs, beat_req("m1", 1, Some(asg(&[("a", &[0, 1])]))), now, &t),
        Err(GroupError::FencedMemberEpoch),
        "owns more than it was given"
    );
    assert_eq!(hb(&mut gs, beat_req("m1", 0, None), now, &t).map(|_| ()), Err(invalid_join()));
}

fn invalid_join() -> GroupError {
    GroupError::InvalidRequest("RebalanceTimeoutMs must be provided in first request.".into())
}

#[test]
fn requests_are_validated() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 1)]));
    let mut r = join_req("m1", &["a"]);
    r.server_assignor = Some("sticky".into());
    assert_eq!(hb(&mut gs, r, now, &t), Err(GroupError::UnsupportedAssignor("sticky".into())));
    let mut r = join_req("", &["a"]);
    assert!(matches!(hb(&mut gs, r.clone(), now, &t), Err(GroupError::InvalidRequest(_))), "v1 needs a member id");
    r.version = 0;
    assert_eq!(hb(&mut gs, r, now, &t).unwrap().member_id, "server-id", "v0 gets one");
    let mut r = join_req("m2", &[]);
    r.subscribed_topic_names = None;
    assert!(matches!(hb(&mut gs, r, now, &t), Err(GroupError::InvalidRequest(_))));
    let mut r = join_req("m2", &[]);
    r.subscribed_topic_regex = Some("(".into());
    assert!(matches!(hb(&mut gs, r, now, &t), Err(GroupError::InvalidRegularExpression(_))));
    let r = beat_req("m2", -2, None);
    assert!(matches!(hb(&mut gs, r, now, &t), Err(GroupError::InvalidRequest(_))), "-2 needs an instance id");
    let mut r = join_req("m3", &["a"]);
    r.group_id.clear();
    assert!(matches!(hb(&mut gs, r, now, &t), Err(GroupError::InvalidRequest(_))));
}

fn static_join(member: &str, instance: &str) -> ConsumerHeartbeatRequest {
    ConsumerHeartbeatRequest { instance_id: Some(instance.into()), ..join_req(member, &["a"]) }
}

#[test]
fn a_static_member_leaves_with_minus_two_and_comes_back_to_its_partitions() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 4)]));
    hb(&mut gs, static_join("s1", "i1"), now, &t).unwrap();
    hb(&mut gs, static_join("s2", "i2"), now, &t).unwrap();
    // Reconcile both to the target.
    settle(&mut gs, now, &t, &["s1", "s2"]);
    let epoch = group(&gs).epoch;
    let mine = group(&gs).members["s1"].assigned.clone();
    assert_eq!(hb(&mut gs, static_join("s9", "i1"), now, &t), Err(GroupError::UnreleasedInstanceId));
    let leave = ConsumerHeartbeatRequest { instance_id: Some("i1".into()), ..beat_req("s1", -2, None) };
    assert_eq!(hb(&mut gs, leave, now, &t).unwrap().member_epoch, -2);
    assert_eq!(group(&gs).epoch, epoch, "a static leave keeps the group epoch");
    let r = hb(&mut gs, static_join("s1b", "i1"), now, &t).unwrap();
    assert_eq!((r.member_epoch, r.assignment), (epoch.0, Some(mine)));
    assert_eq!(group(&gs).epoch, epoch, "and so does its return");
    assert!(!group(&gs).members.contains_key("s1"));
    // The old id is fenced by the instance id.
    let stale = ConsumerHeartbeatRequest { instance_id: Some("i1".into()), ..beat_req("s1", epoch.0, None) };
    assert_eq!(hb(&mut gs, stale, now, &t), Err(GroupError::FencedInstanceId));
}

#[test]
fn a_leave_frees_partitions_and_bumps_the_epoch() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 2)]));
    hb(&mut gs, join_req("m1", &["a"]), now, &t).unwrap();
    hb(&mut gs, join_req("m2", &["a"]), now, &t).unwrap();
    settle(&mut gs, now, &t, &["m1", "m2"]);
    let e = group(&gs).epoch;
    assert_eq!(hb(&mut gs, beat_req("m1", -1, None), now, &t).unwrap().member_epoch, -1);
    assert_eq!(group(&gs).epoch, e.bumped());
    let r = hb(&mut gs, beat_req("m2", e.0, None), now, &t).unwrap();
    assert_eq!(r.assignment.map(|a| parts(&a)), Some(2));
}

/// Heartbeats every member (acknowledging its assignment at once) until nothing changes.
fn settle(gs: &mut Groups, now: Instant, t: &Topics, ids: &[&str]) {
    for _ in 0..10 {
        for id in ids {
            let m = &group(gs).members[*id];
            let req = beat_req(id, m.epoch.0, Some(m.assigned.clone()));
            hb(gs, req, now, t).unwrap();
        }
    }
    assert_eq!(group(gs).state_name(), "Stable");
}

#[test]
fn silent_members_expire_and_members_that_do_not_revoke_are_fenced() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 2)]));
    hb(&mut gs, join_req("m1", &["a"]), now, &t).unwrap();
    let later = now + Duration::from_secs(10);
    let mut r = join_req("m2", &["a"]);
    r.rebalance_timeout_ms = 1000;
    hb(&mut gs, r, later, &t).unwrap();
    assert!(!tick(&mut gs, later, &|_: &str| settings(), &limits()).iter().any(|(g, _)| g == G));
    // m1 never heartbeats again: expired after 45 s; its partitions go to m2.
    let changed = tick(&mut gs, now + Duration::from_secs(46), &|_: &str| settings(), &limits());
    assert_eq!(changed.len(), 1);
    assert!(!group(&gs).members.contains_key("m1"));
    let e = group(&gs).epoch.0;
    let r = hb(&mut gs, beat_req("m2", 2, None), later, &t).unwrap();
    assert_eq!((r.member_epoch, r.assignment.map(|a| parts(&a))), (e, Some(2)));
    // m3 joins; m2 must revoke one within its 1 s rebalance timeout and does not.
    hb(&mut gs, join_req("m3", &["a"]), later, &t).unwrap();
    hb(&mut gs, beat_req("m2", e, None), later, &t).unwrap();
    assert_eq!(group(&gs).members["m2"].state, MemberState::UnrevokedPartitions);
    tick(&mut gs, later + Duration::from_millis(1500), &|_: &str| settings(), &limits());
    assert!(!group(&gs).members.contains_key("m2"), "fenced at its rebalance timeout");
}

#[test]
fn new_partitions_and_new_matching_topics_bump_the_epoch() {
    let (mut gs, now) = (Groups::new(), Instant::now());
    let t1 = topics(&[("a", 1), ("other", 1)]);
    let mut r = join_req("m1", &[]);
    r.subscribed_topic_names = None;
    r.subscribed_topic_regex = Some("a|b.*".into());
    let r = hb(&mut gs, r, now, &t1).unwrap();
    assert_eq!(r.assignment, Some(asg(&[("a", &[0])])), "full match: not 'other'");
    // A new partition counts at once; a new topic only once the regex is resolved again, which
    // is at least 10 s after the last resolution (Kafka's batching of regex refreshes).
    let t2 = topics(&[("a", 2), ("other", 1), ("bee", 1)]);
    let created = RegexContext { topics_version: 1, ..open() };
    let r = hb_as(&mut gs, beat_req("m1", 1, None), now + Duration::from_secs(1), &t2, &created).unwrap();
    assert_eq!(r.member_epoch, 2);
    assert_eq!(r.assignment, Some(asg(&[("a", &[0, 1])])));
    let r = hb_as(&mut gs, beat_req("m1", 2, None), now + Duration::from_secs(11), &t2, &created).unwrap();
    assert_eq!(r.member_epoch, 3);
    assert_eq!(r.assignment, Some(asg(&[("a", &[0, 1]), ("bee", &[0])])));
}

#[test]
fn a_regex_leaves_out_the_topics_its_resolver_may_not_describe() {
    let (mut gs, now) = (Groups::new(), Instant::now());
    let t = topics(&[("pay-eu", 2), ("pay-us", 1), ("pay-secret", 1), ("other", 1)]);
    let alice = |t: &str| t != "pay-secret";
    let r =
        hb_as(&mut gs, regex_join("m1", "pay-.*"), now, &t, &RegexContext { may_describe: &alice, topics_version: 0 })
            .unwrap();
    assert_eq!(r.assignment, Some(asg(&[("pay-eu", &[0, 1]), ("pay-us", &[0])])));
    assert_eq!(group(&gs).resolved["pay-.*"], names(&["pay-eu", "pay-us"]));
    // A second member with the same regex shares the resolution made with alice's context
    // (Kafka resolves per group and regex), whatever it may describe itself.
    let bob = |t: &str| t == "pay-us";
    hb_as(&mut gs, regex_join("m2", "pay-.*"), now, &t, &RegexContext { may_describe: &bob, topics_version: 0 })
        .unwrap();
    let all: BTreeSet<String> = group(&gs).target.values().flat_map(|a| a.keys().cloned()).collect();
    assert_eq!(all, names(&["pay-eu", "pay-us"]));
    // A new regex waits for the 10 s since the last resolution; then every regex is resolved
    // again with the context of the member whose heartbeat does it.
    let bob_rx = RegexContext { may_describe: &bob, topics_version: 0 };
    let r = hb_as(&mut gs, regex_join("m3", "pay-(us|secret)"), now + Duration::from_secs(1), &t, &bob_rx).unwrap();
    assert!(!group(&gs).resolved.contains_key("pay-(us|secret)"));
    assert_eq!(r.assignment, Some(Assignment::new()));
    hb_as(&mut gs, beat_req("m3", r.member_epoch, None), now + Duration::from_secs(11), &t, &bob_rx).unwrap();
    assert_eq!(group(&gs).resolved["pay-.*"], names(&["pay-us"]));
    assert_eq!(group(&gs).resolved["pay-(us|secret)"], names(&["pay-us"]));
    let all: BTreeSet<String> = group(&gs).target.values().flat_map(|a| a.keys().cloned()).collect();
    assert_eq!(all, names(&["pay-us"]));
}

#[test]
fn a_later_resolution_picks_up_an_acl_change() {
    let (mut gs, now) = (Groups::new(), Instant::now());
    let t = topics(&[("x-1", 1), ("x-2", 1)]);
    let before = |t: &str| t == "x-1";
    let rx = RegexContext { may_describe: &before, topics_version: 0 };
    let r = hb_as(&mut gs, regex_join("m1", "x-.*"), now, &t, &rx).unwrap();
    assert_eq!(r.assignment, Some(asg(&[("x-1", &[0])])));
    // DESCRIBE on x-2 granted: nothing changes before the refresh interval, then x-2 comes.
    let mut e = r.member_epoch;
    let r = hb_as(&mut gs, beat_req("m1", e, None), now + Duration::from_secs(30), &t, &open()).unwrap();
    assert_eq!(r.member_epoch, e, "no refresh: no new topic and the interval has not passed");
    e = r.member_epoch;
    let r = hb_as(&mut gs, beat_req("m1", e, None), now + Duration::from_secs(601), &t, &open()).unwrap();
    assert_eq!(r.assignment, Some(asg(&[("x-1", &[0]), ("x-2", &[0])])));
    // The last member with the regex leaves: its resolution goes.
    hb(&mut gs, beat_req("m1", -1, None), now + Duration::from_secs(602), &t).unwrap();
    assert!(group(&gs).resolved.is_empty());
}

#[test]
fn the_regex_is_ascii_and_anchored_like_re2j_matches() {
    let re = compile(r"t\d+").unwrap();
    assert!(re.compiled.is_match(b"t12"));
    assert!(!re.compiled.is_match(b"xt12"));
    assert!(!re.compiled.is_match("t١".as_bytes()), "\\d is ASCII as in RE2/J");
    assert!(compile(&"a".repeat(sluice_core::limits::MAX_SUBSCRIPTION_REGEX_BYTES + 1)).is_err());
}

#[test]
fn the_most_requested_assignor_is_used() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 4), ("b", 4)]));
    let mut r = join_req("m1", &["a", "b"]);
    r.server_assignor = Some("range".into());
    hb(&mut gs, r, now, &t).unwrap();
    hb(&mut gs, join_req("m2", &["a", "b"]), now, &t).unwrap();
    assert_eq!(group(&gs).assignor(), Assignor::Range);
    let target = &group(&gs).target;
    assert_eq!(target["m1"], asg(&[("a", &[0, 1]), ("b", &[0, 1])]));
    assert_eq!(target["m2"], asg(&[("a", &[2, 3]), ("b", &[2, 3])]));
}

#[test]
fn range_gives_contiguous_ranges_first_members_one_more() {
    let subs: Subscriptions = ["x", "y", "z"].iter().map(|m| (m.to_string(), ["t".to_string()].into())).collect();
    let counts: PartitionCounts = [("t".to_string(), 7)].into();
    let out = assignor::assign(Assignor::Range, &subs, &counts, &BTreeMap::new());
    assert_eq!(out["x"], asg(&[("t", &[0, 1, 2])]));
    assert_eq!(out["y"], asg(&[("t", &[3, 4])]));
    assert_eq!(out["z"], asg(&[("t", &[5, 6])]));
}

#[test]
fn uniform_is_sticky() {
    let sub = |ms: &[&str]| -> Subscriptions { ms.iter().map(|m| (m.to_string(), ["t".to_string()].into())).collect() };
    let counts: PartitionCounts = [("t".to_string(), 6)].into();
    let two = assignor::assign(Assignor::Uniform, &sub(&["x", "y"]), &counts, &BTreeMap::new());
    let three = assignor::assign(Assignor::Uniform, &sub(&["x", "y", "z"]), &counts, &two);
    for m in ["x", "y"] {
        assert_eq!(parts(&three[m]), 2);
        assert!(reconcile::is_subset(&three[m], &two[m]), "{m} kept what it had");
    }
}

#[test]
fn commits_need_the_current_member_epoch() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 1)]));
    hb(&mut gs, join_req("m1", &["a"]), now, &t).unwrap();
    let g = group(&gs);
    assert_eq!(g.validate_commit("m1", 1), Ok(()));
    assert_eq!(g.validate_commit("m1", 0), Err(GroupError::StaleMemberEpoch));
    assert_eq!(g.validate_commit("nobody", 1), Err(GroupError::UnknownMemberId));
    assert_eq!(g.validate_commit("", -1), Err(GroupError::UnknownMemberId), "not while it has members");
    assert_eq!(ConsumerGroup::default().validate_commit("", -1), Ok(()));
}

#[test]
fn offset_fetch_from_a_member_wants_its_current_epoch() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 1)]));
    hb(&mut gs, join_req("m1", &["a"]), now, &t).unwrap();
    let g = group(&gs);
    assert_eq!(g.validate_member(Some("m1"), 1), Ok(()));
    assert_eq!(g.validate_member(Some("m1"), 2), Err(GroupError::StaleMemberEpoch));
    assert_eq!(g.validate_member(Some("m2"), 1), Err(GroupError::UnknownMemberId));
    assert_eq!(g.validate_member(None, 1), Err(GroupError::UnknownMemberId));
}

#[test]
fn the_record_round_trips_and_bad_bytes_are_refused() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 3), ("b", 2)]));
    hb(&mut gs, static_join("s1", "i1"), now, &t).unwrap();
    let mut r = join_req("m2", &[]);
    r.subscribed_topic_regex = Some("b".into());
    r.server_assignor = Some("range".into());
    hb(&mut gs, r, now, &t).unwrap();
    let bytes = record::encode(group(&gs));
    let back = record::decode(&bytes, now).unwrap();
    assert_eq!(record::encode(&back), bytes);
    assert_eq!(back.members["m2"].regex.as_ref().unwrap().source, "b");
    assert_eq!(back.resolved["b"], names(&["b"]), "the regex's resolution is kept");
    for cut in 0..bytes.len() {
        assert!(record::decode(&bytes[..cut], now).is_none(), "cut at {cut}");
    }
    let mut huge = bytes.clone();
    huge[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(record::decode(&huge, now).is_none());
}

#[test]
fn the_group_size_is_bounded() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 1)]));
    for i in 0..10 {
        hb(&mut gs, join_req(&format!("m{i}"), &["a"]), now, &t).unwrap();
    }
    assert_eq!(hb(&mut gs, join_req("m10", &["a"]), now, &t), Err(GroupError::GroupMaxSizeReached));
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Op {
    Join(u8),
    Beat(u8),
    Leave(u8),
    Expire(u8),
    Grow(i32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..6).prop_map(Op::Join),
        4 => (0u8..6).prop_map(Op::Beat),
        1 => (0u8..6).prop_map(Op::Leave),
        1 => (0u8..6).prop_map(Op::Expire),
        1 => (1i32..3).prop_map(Op::Grow),
    ]
}

/// A well-behaved client: it owns what it was last given and heartbeats with its epoch.
#[derive(Default, Clone)]
struct Client {
    epoch: i32,
    owned: Assignment,
}

fn held_twice(g: &ConsumerGroup) -> bool {
    let mut seen = BTreeSet::new();
    g.members
        .values()
        .flat_map(|m| m.assigned.iter().chain(&m.revoking))
        .any(|(t, ps)| ps.iter().any(|p| !seen.insert((t.clone(), *p))))
}

fn beat(gs: &mut Groups, clients: &mut BTreeMap<String, Client>, id: &str, now: Instant, t: &Topics) {
    let Some(c) = clients.get(id).cloned() else { return };
    match hb(gs, beat_req(id, c.epoch, Some(c.owned)), now, t) {
        Ok(r) => {
            let c = clients.get_mut(id).expect("client");
            c.epoch = r.member_epoch;
            if let Some(a) = r.assignment {
                c.owned = a;
            }
        }
        Err(_) => {
            clients.remove(id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_partition_is_held_twice_and_every_one_ends_assigned(ops in proptest::collection::vec(op(), 1..60)) {
        let now = Instant::now();
        let mut partitions = 3;
        let mut t = topics(&[("a", partitions), ("b", 2)]);
        let mut gs = Groups::new();
        let mut clients: BTreeMap<String, Client> = BTreeMap::new();
        for o in ops {
            match o {
                Op::Join(i) => {
                    let id = format!("m{i}");
                    let subs: &[&str] = if i % 2 == 0 { &["a", "b"] } else { &["a"] };
                    if let Ok(r) = hb(&mut gs, join_req(&id, subs), now, &t) {
                        clients.insert(id, Client { epoch: r.member_epoch, owned: r.assignment.unwrap_or_default() });
                    }
                }
                Op::Beat(i) => beat(&mut gs, &mut clients, &format!("m{i}"), now, &t),
                Op::Leave(i) => {
                    let id = format!("m{i}");
                    if let Some(c) = clients.remove(&id) {
                        prop_assert!(hb(&mut gs, beat_req(&id, -1, None), now, &t).is_ok() || c.epoch < 0);
                    }
                }
                Op::Expire(i) => {
                    // The member goes silent and is removed (as the session timeout would).
                    let id = format!("m{i}");
                    clients.remove(&id);
                    if let Some(g) = gs.get_mut(G).and_then(|g| g.consumer.as_mut()) {
                        g.remove(&id);
                    }
                }
                Op::Grow(n) => {
                    partitions += n;
                    t = topics(&[("a", partitions), ("b", 2)]);
                }
            }
            if let Some(g) = gs.get(G).and_then(|g| g.consumer.as_ref()) {
                prop_assert!(!held_twice(g));
            }
        }
        // Everyone keeps heartbeating: the group settles with every partition assigned once.
        for _ in 0..8 {
            let ids: Vec<String> = clients.keys().cloned().collect();
            for id in ids {
                beat(&mut gs, &mut clients, &id, now, &t);
                let g = group(&gs);
                prop_assert!(!held_twice(g));
            }
        }
        // Settled: everyone is back to the normal interval.
        for (id, c) in clients.clone() {
            let r = hb(&mut gs, beat_req(&id, c.epoch, Some(c.owned)), now, &t);
            prop_assert_eq!(r.map(|r| r.heartbeat_interval_ms), Ok(5000));
        }
        if let Some(g) = gs.get(G).and_then(|g| g.consumer.as_ref()) {
            if !clients.is_empty() {
                prop_assert_eq!(g.state_name(), "Stable");
                let held: usize = g.members.values().map(|m| parts(&m.assigned)).sum();
                let subscribed_b = g.members.values().any(|m| m.topics.contains(&"b".to_string()));
                prop_assert_eq!(held, usize::try_from(partitions).unwrap() + if subscribed_b { 2 } else { 0 });
                for (id, c) in &clients {
                    prop_assert_eq!(&c.owned, &g.members[id].assigned);
                }
            }
        }
    }
}

#[test]
fn classic_apis_see_a_consumer_group_as_kafka_does() {
    use crate::groups::group::{Limits, Step};
    use crate::groups::{table, JoinRequest};
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 1)]));
    hb(&mut gs, join_req("m1", &["a"]), now, &t).unwrap();
    let listed = table::list(&gs);
    assert_eq!(
        (listed[0].group_type, listed[0].protocol_type.as_str(), listed[0].state),
        ("consumer", "consumer", "Stable")
    );
    assert!(table::describe(&gs, G).is_none(), "DescribeGroups: not a classic group");
    assert!(describe(&gs, G).is_ok());
    let join = JoinRequest {
        group_id: G.into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        member_id: String::new(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), bytes::Bytes::new())],
        client_id: "c".into(),
        client_host: "h".into(),
        require_known_member_id: false,
    };
    let limits = Limits { initial_delay: Duration::ZERO, min_session: 1, max_session: 100_000 };
    let step = table::join(&mut gs, join.clone(), "classic-1".into(), now, &limits);
    assert!(matches!(step, Step::Now(Err(GroupError::InconsistentGroupProtocol))));
    // A heartbeat of the KIP-848 protocol on a classic group with members: not a consumer group.
    hb(&mut gs, beat_req("m1", -1, None), now, &t).unwrap();
    let _ = table::join(&mut gs, join, "classic-1".into(), now, &limits);
    assert!(gs[G].consumer.is_none(), "an empty consumer group became classic");
    assert_eq!(hb(&mut gs, join_req("m2", &["a"]), now, &t), Err(GroupError::GroupIdNotFound));
    assert_eq!(describe(&gs, G).map(|_| ()), Err(GroupError::GroupIdNotFound));
}

#[path = "classic_tests.rs"]
mod classic_tests;
