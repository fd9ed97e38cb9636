//! Property tests of the group state machine: random sequences of join, sync, heartbeat,
//! leave and clock ticks from a few clients (some static) keep the group's invariants.
//!
//! Contract: each client behaves as a (sometimes stale, sometimes restarting) real client
//! would: it remembers the member id and generation of its last answer and uses them, and a
//! leader assigns `"<generation>:<instance or member id>"` to every member it was told about,
//! so the test can check where every assignment came from.

use super::super::SyncRequest;
use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const CLIENTS: usize = 4;
/// Clients 0 and 1 are static (instance ids "i0", "i1").
const STATIC: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    /// Join; `fresh` forgets the member id first (a restart); `meta` picks the metadata.
    Join {
        c: usize,
        fresh: bool,
        meta: u8,
        protocols: u8,
    },
    /// Sync with the remembered generation, or with one that is off by `skew`.
    Sync {
        c: usize,
        skew: i8,
    },
    Heartbeat {
        c: usize,
        skew: i8,
    },
    Leave {
        c: usize,
        by_instance: bool,
    },
    /// Advance the clock by this many milliseconds and run the sweep.
    Tick {
        ms: u32,
    },
    /// Well-behaved clients: every client that has a member id and no join in flight rejoins
    /// with what it last sent (a rebalance still waiting after that runs to its timeout), then
    /// every client syncs, the leader last.
    Round,
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    prop_oneof![
        4 => (c.clone(), prop::bool::weighted(0.2), 0u8..3, 0u8..2)
            .prop_map(|(c, fresh, meta, protocols)| Op::Join { c, fresh, meta, protocols }),
        3 => (c.clone(), prop_oneof![4 => Just(0i8), 1 => -1i8..=1]).prop_map(|(c, skew)| Op::Sync { c, skew }),
        2 => (c.clone(), prop_oneof![4 => Just(0i8), 1 => -1i8..=1]).prop_map(|(c, skew)| Op::Heartbeat { c, skew }),
        1 => (c, any::<bool>()).prop_map(|(c, by_instance)| Op::Leave { c, by_instance }),
        2 => prop_oneof![4 => 0u32..2_000, 1 => 5_000u32..40_000].prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::Round),
    ]
}

#[derive(Default)]
struct Client {
    member_id: String,
    generation: i32,
    /// The members a leader was told about (empty for followers).
    members: Vec<JoinMember>,
    /// The metadata byte and protocol choice of its last join.
    last_join: (u8, u8),
    join: Option<oneshot::Receiver<Result<JoinResponse, GroupError>>>,
    sync: Option<oneshot::Receiver<Result<SyncResponse, GroupError>>>,
}

struct World {
    g: Group,
    now: Instant,
    limits: Limits,
    clients: Vec<Client>,
    next_id: u64,
    /// Every member id that was ever a member and is no longer.
    gone: HashSet<String>,
    members_before: HashSet<String>,
    generation_before: i32,
    /// What the leader of a generation was shown: generation, and metadata by instance or
    /// member id.
    leader_view: Option<(i32, HashMap<String, Bytes>)>,
    /// Static members that restarted in a Stable group without a rebalance (Kafka keeps the
    /// assignment even if their metadata changed), until the next generation.
    restarted: HashSet<String>,
}

fn instance(c: usize) -> Option<String> {
    (c < STATIC).then(|| format!("i{c}"))
}

fn assignment_for(generation: i32, m: &JoinMember) -> Bytes {
    let who = m.group_instance_id.clone().unwrap_or_else(|| m.member_id.clone());
    Bytes::from(format!("{generation}:{who}"))
}

impl World {
    fn new(initial_delay_ms: u64) -> World {
        World {
            g: Group::new("g"),
            now: Instant::now(),
            limits: Limits {
                initial_delay: Duration::from_millis(initial_delay_ms),
                min_session: 1000,
                max_session: 60_000,
            },
            clients: (0..CLIENTS).map(|_| Client::default()).collect(),
            next_id: 0,
            gone: HashSet::new(),
            members_before: HashSet::new(),
            generation_before: 0,
            leader_view: None,
            restarted: HashSet::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Join { c, fresh, meta, protocols } => {
                if fresh {
                    self.clients[c].member_id.clear();
                }
                self.clients[c].last_join = (meta, protocols);
                self.next_id += 1;
                let new_id = format!("m{}", self.next_id);
                let names: &[&str] = if protocols == 0 { &["range"] } else { &["roundrobin", "range"] };
                let req = JoinRequest {
                    group_id: "g".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 15_000,
                    member_id: self.clients[c].member_id.clone(),
                    group_instance_id: instance(c),
                    protocol_type: "consumer".into(),
                    protocols: names.iter().map(|n| (n.to_string(), Bytes::from(vec![meta]))).collect(),
                    client_id: format!("c{c}"),
                    client_host: "/127.0.0.1".into(),
                    require_known_member_id: true,
                };
                match self.g.join(req, new_id, self.now, &self.limits) {
                    Step::Now(r) => self.joined(c, r),
                    Step::Wait(rx) => self.clients[c].join = Some(rx),
                }
            }
            Op::Sync { c, skew } => {
                let cl = &self.clients[c];
                let assignments =
                    cl.members.iter().map(|m| (m.member_id.clone(), assignment_for(cl.generation, m))).collect();
                let req = SyncRequest {
                    group_id: "g".into(),
                    generation_id: cl.generation + i32::from(skew),
                    member_id: cl.member_id.clone(),
                    group_instance_id: instance(c),
                    protocol_type: None,
                    protocol_name: None,
                    assignments,
                };
                let sent_by_leader = self.g.leader.as_deref() == Some(cl.member_id.as_str());
                let (step, stable) = self.g.sync(req, self.now);
                assert!(!stable || sent_by_leader, "only the leader's sync makes the group Stable");
                match step {
                    Step::Now(r) => {
                        if let Ok(s) = r {
                            assert_eq!(self.g.state, State::Stable, "a sync is answered at once only in Stable");
                            let _ = s;
                        }
                    }
                    Step::Wait(rx) => self.clients[c].sync = Some(rx),
                }
            }
            Op::Heartbeat { c, skew } => {
                let cl = &self.clients[c];
                let r =
                    self.g.heartbeat(&cl.member_id, instance(c).as_deref(), cl.generation + i32::from(skew), self.now);
                if r.is_ok() {
                    assert!(matches!(self.g.state, State::Stable | State::CompletingRebalance));
                    assert_eq!(cl.generation + i32::from(skew), self.g.generation);
                }
            }
            Op::Leave { c, by_instance } => {
                let id = if by_instance && c < STATIC { String::new() } else { self.clients[c].member_id.clone() };
                let _ = self.g.leave(&[(id, instance(c))], self.now, &self.limits);
            }
            Op::Tick { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                self.g.tick(self.now, &self.limits);
            }
            Op::Round => self.round(),
        }
        self.poll();
        self.check();
    }

    fn round(&mut self) {
        for c in 0..CLIENTS {
            let cl = &self.clients[c];
            if !cl.member_id.is_empty() && cl.join.is_none() {
                let (meta, protocols) = cl.last_join;
                self.apply(&Op::Join { c, fresh: false, meta, protocols });
            }
        }
        if let (State::PreparingRebalance, Some(deadline)) = (self.g.state, self.g.rebalance_deadline) {
            let ms = deadline.saturating_duration_since(self.now).as_millis();
            self.apply(&Op::Tick { ms: u32::try_from(ms).expect("a rebalance timeout fits") });
        }
        let leader = self.g.leader.clone();
        let mut order: Vec<usize> = (0..CLIENTS).collect();
        order.sort_by_key(|c| Some(&self.clients[*c].member_id) == leader.as_ref());
        for c in order {
            self.apply(&Op::Sync { c, skew: 0 });
        }
    }

    fn joined(&mut self, c: usize, r: Result<JoinResponse, GroupError>) {
        match r {
            Ok(j) => {
                assert!(j.generation_id <= self.g.generation);
                assert!(self.g.member(&j.member_id).is_some(), "an answered join names a member: {j:?}");
                assert_eq!(self.g.member(&j.member_id).unwrap().instance_id, instance(c));
                if !j.members.is_empty() {
                    assert_eq!(j.leader, j.member_id, "only the leader gets the member list");
                    let view = j
                        .members
                        .iter()
                        .map(|m| {
                            (m.group_instance_id.clone().unwrap_or_else(|| m.member_id.clone()), m.metadata.clone())
                        })
                        .collect();
                    if !j.skip_assignment {
                        self.leader_view = Some((j.generation_id, view));
                    }
                }
                if j.skip_assignment
                    || (c < STATIC && self.g.state == State::Stable && self.clients[c].member_id != j.member_id)
                {
                    self.restarted.extend(instance(c));
                }
                let cl = &mut self.clients[c];
                cl.member_id = j.member_id;
                cl.generation = j.generation_id;
                cl.members = j.members;
            }
            Err(GroupError::MemberIdRequired(id)) => {
                assert!(self.g.pending.iter().any(|(p, _)| *p == id));
                assert!(self.g.member(&id).is_none());
                self.clients[c].member_id = id;
            }
            Err(_) => {}
        }
    }

    /// Collects the answers that arrived.
    fn poll(&mut self) {
        for c in 0..CLIENTS {
            if let Some(rx) = self.clients[c].join.as_mut() {
                match rx.try_recv() {
                    Ok(None) => {}
                    Ok(Some(r)) => {
                        self.clients[c].join = None;
                        self.joined(c, r);
                    }
                    Err(_) => self.clients[c].join = None,
                }
            }
            if let Some(rx) = self.clients[c].sync.as_mut() {
                match rx.try_recv() {
                    Ok(None) => {}
                    Ok(Some(_)) | Err(_) => self.clients[c].sync = None,
                }
            }
        }
    }

    fn check(&mut self) {
        let g = &self.g;
        assert!(g.generation >= self.generation_before, "the generation never decreases");
        if g.generation != self.generation_before {
            self.restarted.clear();
        }
        self.generation_before = g.generation;
        let ids: HashSet<String> = g.members.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids.len(), g.members.len(), "member ids are unique");
        let instances: Vec<&String> = g.members.iter().filter_map(|m| m.instance_id.as_ref()).collect();
        assert_eq!(instances.iter().collect::<HashSet<_>>().len(), instances.len(), "instance ids are unique");
        for id in self.members_before.difference(&ids) {
            self.gone.insert(id.clone());
        }
        assert!(ids.is_disjoint(&self.gone), "a member id that left is never a member again");
        self.members_before = ids;
        for (p, _) in &g.pending {
            assert!(g.member(p).is_none(), "a pending id is not a member");
        }
        match g.state {
            State::Empty => {
                assert!(g.members.is_empty() && g.leader.is_none() && g.protocol.is_none());
            }
            State::PreparingRebalance => {
                assert!(g.members.iter().all(|m| m.sync_waiter.is_none()), "no sync waits while joining");
                assert!(g.rebalance_deadline.is_some());
            }
            State::CompletingRebalance | State::Stable => {
                let leader = g.leader.as_deref().expect("a leader");
                assert!(g.member(leader).is_some(), "the leader is a member");
                let protocol = g.protocol.as_deref().expect("a protocol");
                assert!(g.members.iter().all(|m| m.supports(protocol)), "every member supports the protocol");
                assert!(g.members.iter().all(|m| m.join_waiter.is_none()), "no join waits after the join phase");
            }
        }
        if g.state == State::Stable {
            // The leader assigned from what every member subscribed with: a member whose
            // metadata changed since must have caused a rebalance.
            let protocol = g.protocol.as_deref().expect("a protocol");
            let (view_generation, view) = self.leader_view.as_ref().expect("a Stable group had a leader answer");
            assert_eq!(*view_generation, g.generation, "the leader's view is of this generation");
            for m in &g.members {
                let who = m.instance_id.clone().unwrap_or_else(|| m.id.clone());
                if !self.restarted.contains(&who) {
                    assert_eq!(
                        view.get(&who),
                        Some(&m.metadata_for(protocol)),
                        "member {who}'s metadata changed without a rebalance"
                    );
                }
            }
            assert!(g.members.iter().all(|m| m.sync_waiter.is_none()), "no sync waits in Stable");
            for m in &g.members {
                let who = m.instance_id.clone().unwrap_or_else(|| m.id.clone());
                let want = format!("{}:{who}", g.generation);
                assert!(
                    m.assignment[..] == *want.as_bytes(),
                    "member {} has assignment {:?}, want {want} (from the leader of generation {})",
                    m.id,
                    m.assignment,
                    g.generation
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_invariants(initial_delay in prop_oneof![Just(0u64), Just(3000u64)],
                                             ops in prop::collection::vec(op(), 1..120)) {
        let mut w = World::new(initial_delay);
        for op in &ops {
            w.apply(op);
        }
    }
}

/// A fixed scenario with the same checker: every client joins and syncs repeatedly, so the
/// property test's checks are exercised on a group that does reach Stable.
#[test]
fn scripted_clients_reach_stable() {
    let mut w = World::new(0);
    let mut stable = 0;
    for round in 0..6u8 {
        for c in 0..CLIENTS {
            w.apply(&Op::Join { c, fresh: false, meta: round % 2, protocols: 0 });
            w.apply(&Op::Join { c, fresh: false, meta: round % 2, protocols: 0 });
        }
        for c in 0..CLIENTS {
            w.apply(&Op::Join { c, fresh: false, meta: round % 2, protocols: 0 });
        }
        for c in (0..CLIENTS).rev() {
            w.apply(&Op::Sync { c, skew: 0 });
        }
        stable += usize::from(w.g.state == State::Stable);
        w.apply(&Op::Tick { ms: 500 });
    }
    assert!(stable > 0, "the scripted clients reach Stable");
    assert!(w.g.members.iter().all(|m| !m.assignment.is_empty()));
}
