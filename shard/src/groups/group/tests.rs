//! Unit tests of the group state machine.
//!
//! Contract: time is an input (`now`), so expiry and timeouts are tested without sleeping.

use super::*;

fn limits() -> Limits {
    Limits { initial_delay: Duration::ZERO, min_session: 1000, max_session: 600_000 }
}

fn join_req(member: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from_static(b"m"))).collect(),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: true,
    }
}

fn wait<T>(step: Step<T>) -> Result<T, GroupError> {
    match step {
        Step::Now(r) => r,
        Step::Wait(mut rx) => rx.try_recv().ok().flatten().expect("answered"),
    }
}

#[test]
fn two_members_join_sync_and_one_leaves() {
    let mut g = Group::new("g");
    let now = Instant::now();
    let l = limits();
    let Step::Now(Err(GroupError::MemberIdRequired(a))) = g.join(join_req("", &["range"]), "a".into(), now, &l) else {
        panic!("first join must ask for a member id")
    };
    let ra = match g.join(join_req(&a, &["range"]), "x".into(), now, &l) {
        Step::Wait(rx) => rx,
        Step::Now(r) => panic!("{r:?}"),
    };
    let ja = wait(Step::Wait(ra)).unwrap();
    assert_eq!((ja.generation_id, ja.leader.as_str()), (1, "a"));
    assert_eq!(g.state, State::CompletingRebalance);
    // Second member triggers a rebalance: the first must rejoin.
    let _ = g.join(join_req("", &["roundrobin", "range"]), "b".into(), now, &l);
    let rb = g.join(join_req("b", &["roundrobin", "range"]), "y".into(), now, &l);
    assert_eq!(g.state, State::PreparingRebalance);
    assert_eq!(g.heartbeat("a", None, 1, now), Err(GroupError::RebalanceInProgress));
    let ra = g.join(join_req("a", &["range"]), "z".into(), now, &l);
    let (ja, jb) = (wait(ra).unwrap(), wait(rb).unwrap());
    assert_eq!(ja.generation_id, 2);
    assert_eq!(ja.protocol_name.as_deref(), Some("range"), "only range is shared");
    assert_eq!(ja.members.len(), 2, "the leader sees every member");
    assert!(jb.members.is_empty());
    let sync = |member: &str, assignments: Vec<(String, Bytes)>| super::super::SyncRequest {
        group_id: "g".into(),
        generation_id: 2,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments,
    };
    let (sb, _) = g.sync(sync("b", vec![]), now);
    let (sa, stable) =
        g.sync(sync("a", vec![("a".into(), Bytes::from_static(b"A")), ("b".into(), Bytes::from_static(b"B"))]), now);
    assert!(stable);
    assert_eq!(&wait(sb).unwrap().assignment[..], b"B");
    assert_eq!(&wait(sa).unwrap().assignment[..], b"A");
    assert_eq!(g.heartbeat("a", None, 1, now), Err(GroupError::IllegalGeneration));
    assert_eq!(g.heartbeat("a", None, 2, now), Ok(()));
    // b leaves: a must rejoin alone.
    assert_eq!(g.leave(&[("b".into(), None)], now, &l), vec![Ok(())]);
    assert_eq!(g.state, State::PreparingRebalance);
    let ja = wait(g.join(join_req("a", &["range"]), "q".into(), now, &l)).unwrap();
    assert_eq!((ja.generation_id, ja.members.len()), (3, 1));
}

#[test]
fn silent_members_expire() {
    let mut g = Group::new("g");
    let now = Instant::now();
    let l = limits();
    let mut r = join_req("", &["range"]);
    r.require_known_member_id = false;
    let j = wait(g.join(r, "a".into(), now, &l)).unwrap();
    assert_eq!(j.member_id, "a");
    g.tick(now + Duration::from_secs(11), &l);
    assert_eq!(g.state, State::Empty);
    assert!(g.members.is_empty());
}

#[test]
fn static_member_rejoins_without_rebalance() {
    let mut g = Group::new("g");
    let now = Instant::now();
    let l = limits();
    let mut r = join_req("", &["range"]);
    r.group_instance_id = Some("i1".into());
    let j = wait(g.join(r.clone(), "a".into(), now, &l)).unwrap();
    let s = super::super::SyncRequest {
        group_id: "g".into(),
        generation_id: j.generation_id,
        member_id: "a".into(),
        group_instance_id: Some("i1".into()),
        protocol_type: None,
        protocol_name: None,
        assignments: vec![("a".into(), Bytes::from_static(b"P"))],
    };
    let (step, _) = g.sync(s, now);
    assert!(wait(step).is_ok());
    let gen = g.generation;
    // Restart: new join without member id, same instance id.
    let j2 = wait(g.join(r, "a2".into(), now, &l)).unwrap();
    assert_eq!(g.generation, gen, "no rebalance");
    assert_eq!(j2.member_id, "a2");
    assert_eq!(g.state, State::Stable);
    assert_eq!(&g.member("a2").unwrap().assignment[..], b"P");
    assert!(g.member("a").is_none());
}

#[test]
fn subscription_parse() {
    let mut m = vec![0, 1, 0, 0, 0, 2];
    for t in ["a", "bc"] {
        m.extend_from_slice(&i16::try_from(t.len()).expect("a short topic name").to_be_bytes());
        m.extend_from_slice(t.as_bytes());
    }
    assert_eq!(parse_subscription(&m), vec!["a".to_string(), "bc".to_string()]);
}

// ---------------------------------------------------------------- helpers for the tests below

use super::super::SyncRequest;

/// A join with one "cooperative-sticky" protocol whose metadata is `meta`.
fn static_req(member: &str, instance: &str, meta: &'static [u8]) -> JoinRequest {
    let mut r = join_req(member, &[]);
    r.protocols = vec![("cooperative-sticky".into(), Bytes::from_static(meta))];
    r.group_instance_id = Some(instance.into());
    r
}

fn sync_req(
    member: &str,
    instance: Option<&str>,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: instance.map(String::from),
        protocol_type: None,
        protocol_name: None,
        assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from_static(a))).collect(),
    }
}

/// Still waiting (a rebalance has to complete first).
fn pending<T>(step: &mut Step<T>) -> bool {
    match step {
        Step::Now(_) => false,
        Step::Wait(rx) => matches!(rx.try_recv(), Ok(None)),
    }
}

/// A Stable group of two static members: "a" (instance i1, the leader) and "b" (instance
/// i2), generation 1, assignments "A" and "B". Both join within the initial delay.
fn stable_static_pair(now: Instant) -> Group {
    let l = Limits { initial_delay: Duration::from_secs(3), ..limits() };
    let mut g = Group::new("g");
    let mut ja = g.join(static_req("", "i1", b"m1"), "a".into(), now, &l);
    let mut jb = g.join(static_req("", "i2", b"m2"), "b".into(), now, &l);
    assert!(pending(&mut ja) && pending(&mut jb), "the initial delay holds the first rebalance");
    assert_eq!(g.state, State::PreparingRebalance);
    g.tick(now + Duration::from_secs(3), &l);
    let (ja, jb) = (wait(ja).unwrap(), wait(jb).unwrap());
    assert_eq!((ja.generation_id, ja.leader.as_str(), ja.members.len()), (1, "a", 2));
    assert!(jb.members.is_empty(), "only the leader sees the members");
    let (sb, _) = g.sync(sync_req("b", Some("i2"), 1, &[]), now);
    let (sa, stable) = g.sync(sync_req("a", Some("i1"), 1, &[("a", b"A"), ("b", b"B")]), now);
    assert!(stable);
    assert_eq!(&wait(sa).unwrap().assignment[..], b"A");
    assert_eq!(&wait(sb).unwrap().assignment[..], b"B");
    assert_eq!(g.state, State::Stable);
    g
}

/// The case: the leader of a Stable group of static members rejoins with its member id
/// (a cooperative-sticky leader after members gave up partitions). Kafka rebalances; sluice
/// used to answer with the same generation and never ran the follow-up rebalance.
#[test]
fn static_leader_rejoin_in_stable_rebalances() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let mut ja = g.join(static_req("a", "i1", b"m1"), "x".into(), now, &l);
    assert!(pending(&mut ja), "the leader's rejoin waits for a new generation");
    assert_eq!(g.state, State::PreparingRebalance);
    assert_eq!(g.heartbeat("b", Some("i2"), 1, now), Err(GroupError::RebalanceInProgress));
    let jb = g.join(static_req("b", "i2", b"m2"), "y".into(), now, &l);
    let (ja, jb) = (wait(ja).unwrap(), wait(jb).unwrap());
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    assert_eq!((ja.member_id.as_str(), jb.member_id.as_str()), ("a", "b"), "known member ids are kept");
    assert_eq!(ja.members.len(), 2);
    assert!(!ja.skip_assignment, "the leader must assign again");
    assert_eq!(g.state, State::CompletingRebalance);
}

/// A static follower rejoining with changed metadata (cooperative-sticky: its owned partitions
/// changed) makes the group rebalance.
#[test]
fn static_follower_with_changed_metadata_rebalances() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let mut jb = g.join(static_req("b", "i2", b"m2-revoked"), "x".into(), now, &l);
    assert!(pending(&mut jb));
    assert_eq!(g.state, State::PreparingRebalance);
    assert_eq!(g.heartbeat("a", Some("i1"), 1, now), Err(GroupError::RebalanceInProgress));
    let ja = wait(g.join(static_req("a", "i1", b"m1"), "y".into(), now, &l)).unwrap();
    let jb = wait(jb).unwrap();
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    let meta: Vec<&[u8]> = ja.members.iter().map(|m| &m.metadata[..]).collect();
    assert!(meta.contains(&&b"m2-revoked"[..]), "the leader sees the new metadata: {meta:?}");
}

/// A static follower rejoining with unchanged metadata gets the current generation back at
/// once, without a rebalance (and keeps its assignment).
#[test]
fn static_follower_unchanged_rejoin_keeps_generation() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let jb = wait(g.join(static_req("b", "i2", b"m2"), "x".into(), now, &l)).unwrap();
    assert_eq!((jb.generation_id, jb.member_id.as_str(), jb.leader.as_str()), (1, "b", "a"));
    assert!(jb.members.is_empty() && !jb.skip_assignment);
    assert_eq!(g.state, State::Stable);
    let sb = wait(g.sync(sync_req("b", Some("i2"), 1, &[]), now).0).unwrap();
    assert_eq!(&sb.assignment[..], b"B");
}

/// A static member restarting (no member id, known instance id) replaces the old member id;
/// the old id is fenced everywhere; the group stays Stable and the assignment is kept.
#[test]
fn static_member_replaced_and_old_id_fenced() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let jb = wait(g.join(static_req("", "i2", b"m2"), "b2".into(), now, &l)).unwrap();
    assert_eq!((jb.generation_id, jb.member_id.as_str()), (1, "b2"));
    assert_eq!(g.state, State::Stable, "no rebalance");
    assert!(g.member("b").is_none());
    assert_eq!(&g.member("b2").unwrap().assignment[..], b"B");
    let fenced = Err(GroupError::FencedInstanceId);
    assert_eq!(g.heartbeat("b", Some("i2"), 1, now), fenced);
    assert_eq!(wait(g.sync(sync_req("b", Some("i2"), 1, &[]), now).0).map(|_| ()), fenced);
    assert_eq!(g.validate_commit("b", Some("i2"), 1), fenced);
    assert_eq!(wait(g.join(static_req("b", "i2", b"m2"), "z".into(), now, &l)).map(|_| ()), fenced);
    assert_eq!(g.leave(&[("b".into(), Some("i2".into()))], now, &l), vec![fenced.clone()]);
    // Without its instance id the old id is simply unknown.
    assert_eq!(g.heartbeat("b", None, 1, now), Err(GroupError::UnknownMemberId));
    // The new id works.
    assert_eq!(g.heartbeat("b2", Some("i2"), 1, now), Ok(()));
    assert_eq!(g.validate_commit("b2", Some("i2"), 1), Ok(()));
    assert_eq!(g.state, State::Stable);
}

/// The leader restarting keeps leadership; Kafka tells it (v9+) to skip the assignment and
/// hands it the members.
#[test]
fn static_leader_replaced_skips_assignment() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let ja = wait(g.join(static_req("", "i1", b"m1"), "a2".into(), now, &l)).unwrap();
    assert_eq!((ja.generation_id, ja.leader.as_str(), ja.member_id.as_str()), (1, "a2", "a2"));
    assert!(ja.skip_assignment);
    assert_eq!(ja.members.len(), 2);
    assert_eq!(g.state, State::Stable);
    assert_eq!(g.heartbeat("a", Some("i1"), 1, now), Err(GroupError::FencedInstanceId));
}

/// A restarted static member whose protocols change the group's protocol forces a rebalance.
#[test]
fn static_member_replaced_with_other_protocol_rebalances() {
    let now = Instant::now();
    let l = limits();
    let mut g = Group::new("g");
    let mut r = join_req("", &["range", "roundrobin"]);
    r.group_instance_id = Some("i1".into());
    let j = wait(g.join(r, "a".into(), now, &l)).unwrap();
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    let _ = wait(g.sync(sync_req("a", Some("i1"), 1, &[("a", b"A")]), now).0).unwrap();
    let mut r = join_req("", &["roundrobin"]);
    r.group_instance_id = Some("i1".into());
    let j = wait(g.join(r, "a2".into(), now, &l)).unwrap();
    assert_eq!((j.generation_id, j.protocol_name.as_deref()), (2, Some("roundrobin")));
    assert_eq!(g.state, State::CompletingRebalance);
}

/// A static member replaced while its old id waits: the old join (or sync) is answered
/// FENCED_INSTANCE_ID.
#[test]
fn static_member_replaced_while_waiting() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    // The leader rejoins and so does b: generation 2, CompletingRebalance.
    let ja = g.join(static_req("a", "i1", b"m1"), "x".into(), now, &l);
    let jb = g.join(static_req("b", "i2", b"m2"), "y".into(), now, &l);
    assert_eq!(wait(ja).unwrap().generation_id, 2);
    assert_eq!(wait(jb).unwrap().generation_id, 2);
    // CompletingRebalance: b waits for its assignment.
    let (mut sb, _) = g.sync(sync_req("b", Some("i2"), 2, &[]), now);
    assert!(pending(&mut sb));
    // b restarts: its old sync is fenced and the group rebalances (the leader may be assigning
    // to the old id).
    let mut jb2 = g.join(static_req("", "i2", b"m2"), "b2".into(), now, &l);
    assert_eq!(wait(sb).map(|_| ()), Err(GroupError::FencedInstanceId));
    assert!(pending(&mut jb2));
    assert_eq!(g.state, State::PreparingRebalance);
    // And once more while b2 waits in the join phase: b2's join is fenced by b3.
    let mut jb3 = g.join(static_req("", "i2", b"m2"), "b3".into(), now, &l);
    assert_eq!(wait(jb2).map(|_| ()), Err(GroupError::FencedInstanceId));
    assert!(pending(&mut jb3));
    let ja = wait(g.join(static_req("a", "i1", b"m1"), "q".into(), now, &l)).unwrap();
    let jb3 = wait(jb3).unwrap();
    assert_eq!((ja.generation_id, jb3.generation_id, jb3.member_id.as_str()), (3, 3, "b3"));
    let ids: Vec<&str> = ja.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b3"]);
}

/// A member id with an instance id the group does not know is UNKNOWN_MEMBER_ID; a member id
/// that does not match the instance's current one is FENCED_INSTANCE_ID.
#[test]
fn static_member_id_checks() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let unknown = Err(GroupError::UnknownMemberId);
    assert_eq!(wait(g.join(static_req("b", "i9", b"m2"), "z".into(), now, &l)).map(|_| ()), unknown);
    assert_eq!(g.heartbeat("b", Some("i9"), 1, now), unknown);
    assert_eq!(
        wait(g.join(static_req("a", "i2", b"m2"), "z".into(), now, &l)).map(|_| ()),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(g.heartbeat("a", Some("i2"), 1, now), Err(GroupError::FencedInstanceId));
    assert_eq!(g.state, State::Stable);
    assert_eq!(g.generation, 1);
}

/// LeaveGroup of static members: by instance id without a member id (admin removal), by both,
/// fenced with a stale member id, unknown for an unknown instance.
#[test]
fn static_member_leave() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let r = g.leave(&[("".into(), Some("i9".into())), ("a".into(), Some("i2".into())), ("".into(), None)], now, &l);
    assert_eq!(
        r,
        vec![Err(GroupError::UnknownMemberId), Err(GroupError::FencedInstanceId), Err(GroupError::UnknownMemberId)]
    );
    assert_eq!(g.state, State::Stable, "failed leaves change nothing");
    assert_eq!(g.leave(&[("".into(), Some("i2".into()))], now, &l), vec![Ok(())]);
    assert_eq!(g.state, State::PreparingRebalance);
    assert!(g.member("b").is_none());
    let ja = wait(g.join(static_req("a", "i1", b"m1"), "z".into(), now, &l)).unwrap();
    assert_eq!((ja.generation_id, ja.members.len()), (2, 1));
    assert_eq!(g.leave(&[("a".into(), Some("i1".into()))], now, &l), vec![Ok(())]);
    assert_eq!(g.state, State::Empty);
    assert!(g.members.is_empty());
}

// ---------------------------------------------------------------- the classic protocol's transitions

fn dyn_req(member: &str) -> JoinRequest {
    join_req(member, &["range"])
}

/// Joins a dynamic member the v4+ way (MEMBER_ID_REQUIRED, then the join with its id).
fn join_dynamic(g: &mut Group, id: &str, now: Instant, l: &Limits) -> Step<JoinResponse> {
    let Step::Now(Err(GroupError::MemberIdRequired(given))) = g.join(dyn_req(""), id.into(), now, l) else {
        panic!("a v4+ join without a member id must get MEMBER_ID_REQUIRED")
    };
    assert_eq!(given, id);
    g.join(dyn_req(id), "unused".into(), now, l)
}

#[test]
fn empty_preparing_completing_stable_with_initial_delay() {
    let now = Instant::now();
    let l = Limits { initial_delay: Duration::from_secs(3), ..limits() };
    let mut g = Group::new("g");
    assert_eq!((g.state, g.generation), (State::Empty, 0));
    let mut ja = join_dynamic(&mut g, "a", now, &l);
    assert_eq!(g.state, State::PreparingRebalance, "Empty -> PreparingRebalance on the first join");
    g.tick(now + Duration::from_millis(2900), &l);
    assert!(pending(&mut ja), "the initial delay holds the join phase");
    let jb = join_dynamic(&mut g, "b", now + Duration::from_secs(1), &l);
    g.tick(now + Duration::from_secs(3), &l);
    assert_eq!(g.state, State::CompletingRebalance, "PreparingRebalance -> CompletingRebalance");
    let (ja, jb) = (wait(ja).unwrap(), wait(jb).unwrap());
    assert_eq!((ja.generation_id, jb.generation_id, ja.leader.as_str()), (1, 1, "a"));
    assert_eq!(g.heartbeat("b", None, 1, now), Ok(()), "heartbeats are fine while assignments are pending");
    let (mut sb, stable) = g.sync(sync_req("b", None, 1, &[]), now);
    assert!(!stable && pending(&mut sb), "a follower's sync waits for the leader's");
    let (sa, stable) = g.sync(sync_req("a", None, 1, &[("a", b"A")]), now);
    assert!(stable);
    assert_eq!(g.state, State::Stable, "CompletingRebalance -> Stable on the leader's sync");
    assert_eq!(&wait(sa).unwrap().assignment[..], b"A");
    assert!(wait(sb).unwrap().assignment.is_empty(), "a member the leader left out gets an empty assignment");
    // Stable: a sync is answered at once with the member's assignment.
    assert_eq!(&wait(g.sync(sync_req("a", None, 1, &[]), now).0).unwrap().assignment[..], b"A");
    // Stable -> PreparingRebalance -> Empty when everyone leaves.
    assert_eq!(g.leave(&[("a".into(), None), ("b".into(), None)], now, &l), vec![Ok(()), Ok(())]);
    assert_eq!(g.state, State::Empty);
    assert_eq!(g.generation, 2, "the generation moves on even when the group empties");
    assert!(g.leader.is_none() && g.protocol.is_none());
}

#[test]
fn member_id_required_and_pending_ids() {
    let now = Instant::now();
    let l = limits();
    let mut g = Group::new("g");
    let Step::Now(Err(GroupError::MemberIdRequired(id))) = g.join(dyn_req(""), "p1".into(), now, &l) else {
        panic!("MEMBER_ID_REQUIRED expected")
    };
    assert_eq!(g.state, State::Empty, "a pending id alone starts nothing");
    assert!(g.member(&id).is_none());
    // Before v4 a member joins at once, but the join phase waits for the pending id too...
    let mut r = dyn_req("");
    r.require_known_member_id = false;
    let mut j = g.join(r, "old".into(), now, &l);
    assert!(pending(&mut j));
    assert_eq!(g.state, State::PreparingRebalance);
    // ...until it expires, unused, after the session timeout; then it is unknown.
    g.tick(now + Duration::from_secs(11), &l);
    assert!(g.pending.is_empty());
    let j = wait(j).unwrap();
    assert_eq!((j.member_id.as_str(), j.generation_id), ("old", 1));
    let r = wait(g.join(dyn_req("p1"), "x".into(), now + Duration::from_secs(11), &l));
    assert_eq!(r.map(|_| ()), Err(GroupError::UnknownMemberId));
    // An unknown member id is refused; so is a pending id that left.
    let Step::Now(Err(GroupError::MemberIdRequired(p2))) = g.join(dyn_req(""), "p2".into(), now, &l) else { panic!() };
    assert_eq!(g.leave(&[(p2.clone(), None)], now, &l), vec![Ok(())], "a pending member can leave");
    assert_eq!(wait(g.join(dyn_req(&p2), "x".into(), now, &l)).map(|_| ()), Err(GroupError::UnknownMemberId));
    assert_eq!(wait(g.join(dyn_req("never-given"), "x".into(), now, &l)).map(|_| ()), Err(GroupError::UnknownMemberId));
}

#[test]
fn a_pending_member_holds_the_join_phase() {
    let now = Instant::now();
    let l = limits();
    let mut g = Group::new("g");
    let _ = wait(join_dynamic(&mut g, "a", now, &l)).unwrap();
    let _ = wait(g.sync(sync_req("a", None, 1, &[("a", b"A")]), now).0).unwrap();
    // b is told its id, then a rejoins (leader): the phase waits for the pending b too.
    let Step::Now(Err(GroupError::MemberIdRequired(_))) = g.join(dyn_req(""), "b".into(), now, &l) else { panic!() };
    let mut ja = g.join(dyn_req("a"), "x".into(), now, &l);
    assert!(pending(&mut ja), "the pending member has not joined yet");
    let jb = g.join(dyn_req("b"), "x".into(), now, &l);
    assert_eq!((wait(ja).unwrap().generation_id, wait(jb).unwrap().generation_id), (2, 2));
}

#[test]
fn rebalance_timeout_removes_members_that_did_not_rejoin() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let mut ja = g.join(static_req("a", "i1", b"m1"), "x".into(), now, &l);
    let deadline = g.rebalance_deadline.expect("a rebalance deadline");
    assert_eq!(deadline, now + Duration::from_secs(10), "the largest rebalance timeout of the members");
    // b keeps heartbeating (REBALANCE_IN_PROGRESS) but never rejoins.
    g.tick(now + Duration::from_millis(9_999), &l);
    assert!(pending(&mut ja));
    assert_eq!(g.heartbeat("b", Some("i2"), 1, now + Duration::from_secs(9)), Err(GroupError::RebalanceInProgress));
    g.tick(deadline, &l);
    let ja = wait(ja).unwrap();
    assert_eq!((ja.generation_id, ja.members.len()), (2, 1), "b was dropped at the rebalance timeout");
    assert_eq!(g.heartbeat("b", Some("i2"), 1, deadline), Err(GroupError::UnknownMemberId));
}

#[test]
fn the_leader_missing_at_the_rebalance_timeout_hands_leadership_over() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let jb = g.join(static_req("b", "i2", b"changed"), "x".into(), now, &l);
    g.tick(now + Duration::from_secs(10), &l);
    let jb = wait(jb).unwrap();
    assert_eq!((jb.leader.as_str(), jb.generation_id, jb.members.len()), ("b", 2, 1));
}

#[test]
fn session_expiry_only_for_silent_members_not_waiting_ones() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    // a heartbeats, b is silent.
    for s in 1..=10 {
        assert_eq!(g.heartbeat("a", Some("i1"), 1, now + Duration::from_secs(s)), Ok(()));
        g.tick(now + Duration::from_secs(s), &l);
    }
    assert_eq!(g.state, State::Stable, "10 s is the session timeout: not expired yet");
    g.tick(now + Duration::from_millis(10_001), &l);
    assert_eq!(g.state, State::PreparingRebalance, "b expired: rebalance");
    assert!(g.member("b").is_none());
    // a waits in the join phase longer than its session timeout: not expired while waiting.
    let t = now + Duration::from_secs(11);
    let ja = g.join(static_req("a", "i1", b"m1"), "x".into(), t, &l);
    let ja = wait(ja).unwrap();
    assert_eq!(ja.generation_id, 2);
    let (mut sa, _) = g.sync(sync_req("a", Some("i1"), 2, &[]), t);
    // Not the leader's sync? a is the only member, so it is the leader: Stable at once.
    assert!(!pending(&mut sa));
    assert_eq!(g.state, State::Stable);
}

#[test]
fn generation_and_member_fencing() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    assert_eq!(g.heartbeat("a", Some("i1"), 0, now), Err(GroupError::IllegalGeneration));
    assert_eq!(g.heartbeat("a", Some("i1"), 2, now), Err(GroupError::IllegalGeneration));
    assert_eq!(g.heartbeat("zz", None, 1, now), Err(GroupError::UnknownMemberId));
    let r = wait(g.sync(sync_req("a", Some("i1"), 0, &[]), now).0);
    assert_eq!(r.map(|_| ()), Err(GroupError::IllegalGeneration));
    let r = wait(g.sync(sync_req("zz", None, 1, &[]), now).0);
    assert_eq!(r.map(|_| ()), Err(GroupError::UnknownMemberId));
    let mut s = sync_req("a", Some("i1"), 1, &[]);
    s.protocol_name = Some("range".into());
    assert_eq!(wait(g.sync(s, now).0).map(|_| ()), Err(GroupError::InconsistentGroupProtocol));
    assert_eq!(g.validate_commit("a", Some("i1"), 0), Err(GroupError::IllegalGeneration));
    assert_eq!(g.validate_commit("", None, -1), Err(GroupError::UnknownMemberId), "the group has members");
    assert_eq!(g.leave(&[("zz".into(), None)], now, &l), vec![Err(GroupError::UnknownMemberId)]);
    assert_eq!(g.state, State::Stable);
}

#[test]
fn heartbeat_and_sync_during_a_rebalance() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let ja = g.join(static_req("a", "i1", b"m1"), "x".into(), now, &l);
    assert_eq!(g.heartbeat("b", Some("i2"), 1, now), Err(GroupError::RebalanceInProgress));
    let r = wait(g.sync(sync_req("b", Some("i2"), 1, &[]), now).0);
    assert_eq!(r.map(|_| ()), Err(GroupError::RebalanceInProgress));
    let jb = g.join(static_req("b", "i2", b"m2"), "y".into(), now, &l);
    let _ = (wait(ja).unwrap(), wait(jb).unwrap());
    assert_eq!(g.state, State::CompletingRebalance);
    assert_eq!(g.validate_commit("a", Some("i1"), 2), Err(GroupError::RebalanceInProgress));
    // b waits for its assignment; a new member arrives: the waiting sync is told to rejoin.
    let (mut sb, _) = g.sync(sync_req("b", Some("i2"), 2, &[]), now);
    assert!(pending(&mut sb));
    let mut c = static_req("", "unused", b"m3");
    c.group_instance_id = None;
    c.require_known_member_id = false;
    let mut jc = g.join(c, "c".into(), now, &l);
    assert!(pending(&mut jc));
    assert_eq!(wait(sb).map(|_| ()), Err(GroupError::RebalanceInProgress));
    assert_eq!(g.state, State::PreparingRebalance);
}

#[test]
fn the_leader_leaving_while_completing_elects_another() {
    let now = Instant::now();
    let l = limits();
    let mut g = stable_static_pair(now);
    let ja = g.join(static_req("a", "i1", b"m1"), "x".into(), now, &l);
    let jb = g.join(static_req("b", "i2", b"m2"), "y".into(), now, &l);
    let _ = (wait(ja).unwrap(), wait(jb).unwrap());
    let (mut sb, _) = g.sync(sync_req("b", Some("i2"), 2, &[]), now);
    assert!(pending(&mut sb));
    assert_eq!(g.leave(&[("a".into(), Some("i1".into()))], now, &l), vec![Ok(())]);
    assert_eq!(wait(sb).map(|_| ()), Err(GroupError::RebalanceInProgress));
    let jb = wait(g.join(static_req("b", "i2", b"m2"), "z".into(), now, &l)).unwrap();
    assert_eq!((jb.generation_id, jb.leader.as_str(), jb.members.len()), (3, "b", 1));
}

#[test]
fn join_request_checks() {
    let now = Instant::now();
    let l = limits();
    let mut g = Group::new("g");
    let mut r = dyn_req("");
    r.session_timeout_ms = 999;
    assert_eq!(wait(g.join(r, "x".into(), now, &l)).map(|_| ()), Err(GroupError::InvalidSessionTimeout(999)));
    let mut r = dyn_req("");
    r.session_timeout_ms = 600_001;
    assert_eq!(wait(g.join(r, "x".into(), now, &l)).map(|_| ()), Err(GroupError::InvalidSessionTimeout(600_001)));
    let mut r = dyn_req("");
    r.protocols.clear();
    assert_eq!(wait(g.join(r, "x".into(), now, &l)).map(|_| ()), Err(GroupError::InconsistentGroupProtocol));
    let _ = wait(join_dynamic(&mut g, "a", now, &l)).unwrap();
    let mut r = join_req("", &["roundrobin"]);
    r.require_known_member_id = false;
    assert_eq!(wait(g.join(r, "x".into(), now, &l)).map(|_| ()), Err(GroupError::InconsistentGroupProtocol));
    let mut r = dyn_req("");
    r.protocol_type = "connect".into();
    assert_eq!(wait(g.join(r, "x".into(), now, &l)).map(|_| ()), Err(GroupError::InconsistentGroupProtocol));
    assert_eq!(g.members.len(), 1);
}

#[test]
fn dynamic_rejoins_follow_kafka() {
    let now = Instant::now();
    let l = limits();
    let mut g = Group::new("g");
    let _ = wait(join_dynamic(&mut g, "a", now, &l)).unwrap();
    let jb = join_dynamic(&mut g, "b", now, &l);
    let ja = g.join(dyn_req("a"), "x".into(), now, &l);
    let (ja, _) = (wait(ja).unwrap(), wait(jb).unwrap());
    assert_eq!(ja.generation_id, 2);
    // CompletingRebalance: a rejoin with the same metadata (a lost answer) gets it again.
    let again = wait(g.join(dyn_req("a"), "x".into(), now, &l)).unwrap();
    assert_eq!((again.generation_id, again.members.len()), (2, 2));
    assert_eq!(g.state, State::CompletingRebalance);
    let _ = g.sync(sync_req("b", None, 2, &[]), now);
    let _ = g.sync(sync_req("a", None, 2, &[("a", b"A"), ("b", b"B")]), now);
    assert_eq!(g.state, State::Stable);
    // Stable: an unchanged follower gets the generation; the leader rebalances.
    let jb = wait(g.join(dyn_req("b"), "x".into(), now, &l)).unwrap();
    assert_eq!((jb.generation_id, g.state), (2, State::Stable));
    let mut ja = g.join(dyn_req("a"), "x".into(), now, &l);
    assert!(pending(&mut ja));
    assert_eq!(g.state, State::PreparingRebalance);
}
