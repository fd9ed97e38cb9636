//! Unit tests of mixed membership: the upgrade of a classic group by a KIP-848 member, classic
//! members' join, sync, heartbeat and leave inside a consumer group, their timers, the
//! downgrade when the last KIP-848 member leaves or expires, the migration policy's refusals,
//! commits of classic members and the record with classic members.

use super::*;
use crate::groups::consumer::classic::{pairs, ClassicMeta};
use crate::groups::consumer::protocol::{self, Subscription};
use crate::groups::group::{Group, Member, State};
use crate::groups::{JoinRequest, SyncRequest};
use bytes::Bytes;
use sluice_core::config::MigrationPolicy;

fn sub(topics: &[&str], owned: &Assignment) -> Bytes {
    protocol::encode_subscription(&Subscription {
        version: 3,
        topics: topics.iter().map(|t| t.to_string()).collect(),
        owned: owned.clone(),
        rack_id: None,
    })
}

fn classic_join(member: &str, owned: &Assignment) -> JoinRequest {
    JoinRequest {
        group_id: G.into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![("cooperative-sticky".into(), sub(&["a"], owned)), ("range".into(), sub(&["a"], owned))],
        client_id: "classic".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: true,
    }
}

fn sync_req(member: &str, generation: i32) -> SyncRequest {
    SyncRequest {
        group_id: G.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("cooperative-sticky".into()),
        assignments: Vec::new(),
    }
}

fn cg(gs: &mut Groups) -> &mut ConsumerGroup {
    gs.get_mut(G).unwrap().consumer.as_mut().unwrap()
}

fn settings_with(migration: MigrationPolicy) -> Settings {
    Settings { migration, ..settings() }
}

/// A Stable classic group at generation 5: c1 owns a-0..a-2, c2 owns a-3..a-5 (topic "a", 6).
fn classic_group(gs: &mut Groups, now: Instant) {
    let mut g = Group::new(G);
    for (id, ps) in [("c1", [0, 1, 2]), ("c2", [3, 4, 5])] {
        g.members.push(Member {
            id: id.into(),
            instance_id: None,
            client_id: "classic".into(),
            client_host: "h".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(20),
            protocols: vec![("cooperative-sticky".into(), sub(&["a"], &Assignment::new()))],
            assignment: protocol::encode_assignment(3, &asg(&[("a", &ps)])),
            last_seen: now,
            join_waiter: None,
            sync_waiter: None,
        });
    }
    g.generation = 5;
    g.protocol_type = Some("consumer".into());
    g.protocol = Some("cooperative-sticky".into());
    g.leader = Some("c1".into());
    g.state = State::Stable;
    gs.insert(G.into(), g);
}

/// A classic member's rejoin (reporting what it owns) and sync; its assignment.
fn rejoin(gs: &mut Groups, id: &str, owned: &Assignment, now: Instant, t: &Topics) -> (i32, Assignment) {
    let j = cg(gs).classic_join(classic_join(id, owned), "x".into(), now, t, &settings(), &limits()).unwrap();
    let s = cg(gs).classic_sync(&sync_req(id, j.generation_id), now).unwrap();
    (j.generation_id, protocol::decode_assignment(&s.assignment).unwrap())
}

#[test]
fn a_kip848_member_upgrades_a_classic_group_which_keeps_its_assignment() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 6)]));
    classic_group(&mut gs, now);
    let r = hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    assert_eq!(r.assignment.as_ref().map(parts), Some(0), "everything is still owned by c1 and c2");
    let g = &gs[G];
    assert!(g.members.is_empty() && g.state == State::Empty, "the classic part is gone");
    let c = group(&gs);
    assert_eq!(c.epoch.0, 6, "the generation, bumped once by the join");
    assert_eq!(c.members["c1"].assigned, asg(&[("a", &[0, 1, 2])]));
    assert_eq!(c.members["c1"].epoch.0, 5);
    assert!(c.members["c1"].classic.is_some() && c.members["n1"].classic.is_none());
    // c1 is told to rejoin by its heartbeat; it gives up a partition to n1.
    assert_eq!(cg(&mut gs).classic_heartbeat("c1", None, 5, now), Err(GroupError::RebalanceInProgress));
    let (generation, got) = rejoin(&mut gs, "c1", &asg(&[("a", &[0, 1, 2])]), now, &t);
    assert_eq!(generation, 5, "still revoking: the generation stays");
    assert_eq!(parts(&got), 2);
    assert_eq!(cg(&mut gs).classic_heartbeat("c1", None, 5, now), Err(GroupError::RebalanceInProgress));
    let (generation, got2) = rejoin(&mut gs, "c1", &got, now, &t);
    assert_eq!((generation, got2), (6, got.clone()));
    assert_eq!(cg(&mut gs).classic_heartbeat("c1", None, 6, now), Ok(()));
    let (_, got_c2) = rejoin(&mut gs, "c2", &asg(&[("a", &[3, 4, 5])]), now, &t);
    rejoin(&mut gs, "c2", &got_c2, now, &t);
    let r = hb(&mut gs, beat_req("n1", 6, None), now, &t).unwrap();
    assert_eq!(r.assignment.as_ref().map(parts), Some(2));
    let all: BTreeSet<_> = group(&gs).members.values().flat_map(|m| pairs(&m.assigned)).collect();
    assert_eq!(all.len(), 6, "every partition owned, none twice");
}

#[test]
fn waiting_classic_joins_and_syncs_are_told_to_rejoin_at_the_upgrade() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 6)]));
    classic_group(&mut gs, now);
    let (tx, mut rx) = futures::channel::oneshot::channel();
    gs.get_mut(G).unwrap().members[1].sync_waiter = Some(tx);
    hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    assert!(matches!(rx.try_recv(), Ok(Some(Err(GroupError::RebalanceInProgress)))));
}

#[test]
fn the_migration_policy_and_the_protocol_type_can_refuse_the_upgrade() {
    let (now, t) = (Instant::now(), topics(&[("a", 6)]));
    for policy in [MigrationPolicy::Disabled, MigrationPolicy::Downgrade] {
        let mut gs = Groups::new();
        classic_group(&mut gs, now);
        let r = heartbeat(
            &mut gs,
            join_req("n1", &["a"]),
            "x".into(),
            now,
            &t,
            &super::open(),
            &settings_with(policy),
            &limits(),
        );
        assert_eq!(r.map(|_| ()), Err(GroupError::GroupIdNotFound), "{policy:?}");
        assert_eq!(gs[G].members.len(), 2, "still classic");
    }
    let mut gs = Groups::new();
    classic_group(&mut gs, now);
    gs.get_mut(G).unwrap().protocol_type = Some("connect".into());
    assert_eq!(hb(&mut gs, join_req("n1", &["a"]), now, &t).map(|_| ()), Err(GroupError::GroupIdNotFound));
    let mut gs = Groups::new();
    classic_group(&mut gs, now);
    let r = heartbeat(
        &mut gs,
        join_req("n1", &["a"]),
        "x".into(),
        now,
        &t,
        &super::open(),
        &settings_with(MigrationPolicy::Upgrade),
        &limits(),
    );
    assert!(r.is_ok(), "upgrade alone is enough to upgrade");
}

#[test]
fn a_classic_member_joins_a_consumer_group_as_a_follower() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 4)]));
    hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    let s = settings();
    let mut j = classic_join("", &Assignment::new());
    assert_eq!(
        cg(&mut gs).classic_join(j.clone(), "k1".into(), now, &t, &s, &limits()).map(|_| ()),
        Err(GroupError::MemberIdRequired("k1".into()))
    );
    j.member_id = "k1".into();
    let r = cg(&mut gs).classic_join(j, "unused".into(), now, &t, &s, &limits()).unwrap();
    assert_eq!((r.member_id.as_str(), r.leader.as_str(), r.members.len()), ("k1", "", 0));
    assert_eq!((r.generation_id, r.protocol_name.as_deref()), (2, Some("cooperative-sticky")));
    // Nothing free yet (n1 holds all four): the sync gives nothing, the heartbeat waits.
    let sync = cg(&mut gs).classic_sync(&sync_req("k1", 2), now).unwrap();
    assert_eq!(protocol::decode_assignment(&sync.assignment), Some(Assignment::new()));
    assert_eq!(protocol::version(&sync.assignment), 3, "in the subscription's version");
    assert_eq!(cg(&mut gs).classic_heartbeat("k1", None, 2, now), Ok(()), "waits for n1");
    // n1 revokes; then k1 is told to rejoin and gets two.
    let r = hb(&mut gs, beat_req("n1", 1, None), now, &t).unwrap();
    let kept = r.assignment.unwrap();
    hb(&mut gs, beat_req("n1", 1, Some(kept)), now, &t).unwrap();
    assert_eq!(cg(&mut gs).classic_heartbeat("k1", None, 2, now), Err(GroupError::RebalanceInProgress));
    let (_, got) = rejoin(&mut gs, "k1", &Assignment::new(), now, &t);
    assert_eq!(parts(&got), 2);
    assert_eq!(group(&gs).state_name(), "Stable");
    let d = group(&gs).describe();
    assert_eq!(d.members.iter().filter(|m| m.classic).count(), 1, "describe tells the kinds apart");
}

#[test]
fn classic_requests_are_checked_as_kafka_checks_them() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 2)]));
    hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    let s = settings();
    let r = cg(&mut gs).classic_join(classic_join("k1", &Assignment::new()), "x".into(), now, &t, &s, &limits());
    let generation = r.unwrap().generation_id;
    assert_eq!(
        cg(&mut gs).classic_sync(&sync_req("k1", generation + 1), now).map(|_| ()),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(cg(&mut gs).classic_heartbeat("k1", None, generation + 1, now), Err(GroupError::IllegalGeneration));
    assert_eq!(cg(&mut gs).classic_heartbeat("zz", None, generation, now), Err(GroupError::UnknownMemberId));
    assert_eq!(cg(&mut gs).classic_heartbeat("n1", None, 2, now), Err(GroupError::UnknownMemberId), "not classic");
    let mut wrong = sync_req("k1", generation);
    wrong.protocol_name = Some("roundrobin".into());
    assert_eq!(cg(&mut gs).classic_sync(&wrong, now).map(|_| ()), Err(GroupError::InconsistentGroupProtocol));
    // Another classic member must share a protocol with k1; the protocol type must be "consumer".
    let mut other = classic_join("k2", &Assignment::new());
    other.protocols = vec![("roundrobin".into(), sub(&["a"], &Assignment::new()))];
    let r = cg(&mut gs).classic_join(other.clone(), "x".into(), now, &t, &s, &limits());
    assert_eq!(r.map(|_| ()), Err(GroupError::InconsistentGroupProtocol));
    other.protocols = vec![("range".into(), sub(&["a"], &Assignment::new()))];
    other.protocol_type = "connect".into();
    let r = cg(&mut gs).classic_join(other.clone(), "x".into(), now, &t, &s, &limits());
    assert_eq!(r.map(|_| ()), Err(GroupError::InconsistentGroupProtocol));
    other.protocol_type = "consumer".into();
    other.session_timeout_ms = 1;
    let r = cg(&mut gs).classic_join(other, "x".into(), now, &t, &s, &limits());
    assert_eq!(r.map(|_| ()), Err(GroupError::InvalidSessionTimeout(1)));
    // Commits: a classic member's generation is its member epoch (ILLEGAL_GENERATION otherwise).
    assert_eq!(group(&gs).validate_commit("k1", generation), Ok(()));
    assert_eq!(group(&gs).validate_commit("k1", generation - 1), Err(GroupError::IllegalGeneration));
}

#[test]
fn a_static_classic_member_restarting_takes_over_its_instance() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 2)]));
    hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    let s = settings();
    let mut j = classic_join("", &Assignment::new());
    j.group_instance_id = Some("i1".into());
    let first = cg(&mut gs).classic_join(j.clone(), "k1".into(), now, &t, &s, &limits()).unwrap();
    let epoch = group(&gs).epoch;
    let second = cg(&mut gs).classic_join(j.clone(), "k2".into(), now, &t, &s, &limits()).unwrap();
    assert_eq!((first.member_id.as_str(), second.member_id.as_str()), ("k1", "k2"));
    assert_eq!(group(&gs).epoch, epoch, "a replacement is not a rebalance");
    assert!(!group(&gs).members.contains_key("k1"));
    let mut stale = j;
    stale.member_id = "k1".into();
    let r = cg(&mut gs).classic_join(stale, "x".into(), now, &t, &s, &limits());
    assert_eq!(r.map(|_| ()), Err(GroupError::FencedInstanceId));
    assert_eq!(
        cg(&mut gs).classic_heartbeat("k1", Some("i1"), second.generation_id, now),
        Err(GroupError::FencedInstanceId)
    );
}

#[test]
fn a_classic_leave_frees_its_partitions_and_refuses_kip848_members() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 2)]));
    hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    rejoin(&mut gs, "k1", &Assignment::new(), now, &t);
    let epoch = group(&gs).epoch;
    let (results, any) = cg(&mut gs).classic_leave(&[("k1".into(), None), ("n1".into(), None), ("zz".into(), None)]);
    assert!(any);
    assert_eq!(results, vec![Ok(()), Err(GroupError::UnknownMemberId), Err(GroupError::UnknownMemberId)]);
    assert_eq!(group(&gs).epoch, epoch.bumped());
    assert!(gs[G].consumer.is_some(), "a classic member leaving never downgrades");
}

#[test]
fn the_last_kip848_member_leaving_downgrades_the_group_which_rebalances() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 6)]));
    classic_group(&mut gs, now);
    hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    // The classic members' generation (they rejoin at once, not after ILLEGAL_GENERATION).
    let epoch = group(&gs).members["c1"].epoch.0;
    let r = heartbeat(&mut gs, beat_req("n1", -1, None), "x".into(), now, &t, &super::open(), &settings(), &limits())
        .unwrap();
    assert!(r.changed);
    let g = &gs[G];
    assert!(g.consumer.is_none(), "a classic group again");
    assert_eq!(g.members.len(), 2);
    assert_eq!(g.state, State::PreparingRebalance);
    assert_eq!((g.generation, g.protocol.as_deref()), (epoch, Some("cooperative-sticky")));
    let held: Vec<Assignment> = g.members.iter().map(|m| protocol::decode_assignment(&m.assignment).unwrap()).collect();
    // Their targets (two each, n1 had the other two), as classic assignments; the rebalance
    // that follows hands out the rest.
    assert_eq!(held.iter().map(parts).collect::<Vec<_>>(), vec![2, 2]);
}

#[test]
fn no_downgrade_when_the_policy_refuses_or_kip848_members_remain() {
    let (now, t) = (Instant::now(), topics(&[("a", 6)]));
    for policy in [MigrationPolicy::Upgrade, MigrationPolicy::Disabled] {
        let mut gs = Groups::new();
        classic_group(&mut gs, now);
        hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
        heartbeat(
            &mut gs,
            beat_req("n1", -1, None),
            "x".into(),
            now,
            &t,
            &super::open(),
            &settings_with(policy),
            &limits(),
        )
        .unwrap();
        assert!(gs[G].consumer.is_some(), "{policy:?}");
    }
    let mut gs = Groups::new();
    classic_group(&mut gs, now);
    hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    hb(&mut gs, join_req("n2", &["a"]), now, &t).unwrap();
    hb(&mut gs, beat_req("n1", -1, None), now, &t).unwrap();
    assert!(gs[G].consumer.is_some(), "n2 still uses the consumer protocol");
    hb(&mut gs, beat_req("n2", -1, None), now, &t).unwrap();
    assert!(gs[G].consumer.is_none(), "the last one left");
}

#[test]
fn classic_members_expire_by_their_own_timers_and_an_expired_kip848_member_downgrades() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 6)]));
    hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    // k1 joins but never syncs: removed after its 20 s rebalance timeout.
    cg(&mut gs)
        .classic_join(classic_join("k1", &Assignment::new()), "x".into(), now, &t, &settings(), &limits())
        .unwrap();
    hb(&mut gs, beat_req("n1", 2, None), now + Duration::from_secs(15), &t).ok();
    tick(&mut gs, now + Duration::from_secs(21), &|_: &str| settings(), &limits());
    assert!(!group(&gs).members.contains_key("k1"), "sync timeout");
    // k2 joins and syncs, then goes silent: its own 10 s session, not the 45 s of KIP-848.
    let later = now + Duration::from_secs(30);
    let e = group(&gs).members["n1"].epoch.0;
    hb(&mut gs, beat_req("n1", e, None), later, &t).ok();
    rejoin(&mut gs, "k2", &Assignment::new(), later, &t);
    let k2 = &group(&gs).members["k2"];
    assert_eq!(k2.classic.as_ref().map(|c| c.sync_deadline), Some(None));
    tick(&mut gs, later + Duration::from_secs(11), &|_: &str| settings(), &limits());
    assert!(!group(&gs).members.contains_key("k2"), "session timeout");
    // k3 stays; n1 goes silent past 45 s: the group is classic again.
    let later = later + Duration::from_secs(12);
    rejoin(&mut gs, "k3", &Assignment::new(), later, &t);
    for s in 1..=5 {
        let at = later + Duration::from_secs(9 * s);
        let e = group(&gs).members["k3"].epoch.0;
        let _ = cg(&mut gs).classic_heartbeat("k3", None, e, at);
    }
    let changed = tick(&mut gs, now + Duration::from_secs(76), &|_: &str| settings(), &limits());
    assert_eq!(changed, vec![(G.to_string(), Vec::new())], "a tombstone of the consumer group's record");
    assert!(gs[G].consumer.is_none());
    assert_eq!(gs[G].members.len(), 1);
}

#[test]
fn the_record_keeps_classic_members_and_reads_version_zero() {
    let (mut gs, now, t) = (Groups::new(), Instant::now(), topics(&[("a", 2)]));
    hb(&mut gs, join_req("n1", &["a"]), now, &t).unwrap();
    let v0 = record::encode(group(&gs));
    rejoin(&mut gs, "k1", &Assignment::new(), now, &t);
    let back = record::decode(&record::encode(group(&gs)), now).unwrap();
    let meta: &ClassicMeta = back.members["k1"].classic.as_ref().unwrap();
    assert_eq!((meta.session_timeout_ms, meta.protocols.len()), (10_000, 2));
    assert!(back.members["n1"].classic.is_none());
    // A version-0 record (before mixed groups): the same layout without the member's classic
    // flag, which comes right before the target (count 4 + "n1" 6 + assignment of a-0, a-1 21).
    let mut old = v0.clone();
    old[0] = 0;
    // Version 2's tail (the resolved regexes, none here: count 4, then the resolution's
    // topic version 4) goes too.
    old.truncate(old.len() - 8);
    let flag = old.len() - 32;
    assert_eq!(old.remove(flag), 0);
    let back = record::decode(&old, now).unwrap();
    assert_eq!(back.members["n1"].assigned, asg(&[("a", &[0, 1])]));
}
