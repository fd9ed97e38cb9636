//! One group's state machine (classic protocol): Empty → PreparingRebalance →
//! CompletingRebalance → Stable, as Kafka's GroupCoordinator runs it.
//!
//! Contract: everything here is synchronous; waiting members hold oneshot senders that the
//! transitions fire. Invariants checked where state changes: a Stable or CompletingRebalance
//! group has a leader that is a member and a protocol every member supports; an Empty group
//! has no members.

use super::{Committed, GroupError, JoinMember, JoinRequest, JoinResponse, SyncResponse};
use bytes::Bytes;
use futures::channel::oneshot;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

pub(crate) type JoinWaiter = oneshot::Sender<Result<JoinResponse, GroupError>>;
pub(crate) type SyncWaiter = oneshot::Sender<Result<SyncResponse, GroupError>>;

pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen: Instant,
    pub join_waiter: Option<JoinWaiter>,
    pub sync_waiter: Option<SyncWaiter>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == protocol)
    }
}

pub(crate) struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order (the first member becomes leader).
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or expire.
    pub pending: Vec<(String, Instant)>,
    pub rebalance_deadline: Option<Instant>,
    pub initial_delay_until: Option<Instant>,
    pub offsets: HashMap<(String, i32), Committed>,
}

/// What a join or sync did: answered at once, or waits for the rebalance.
pub(crate) enum Step<T> {
    Now(Result<T, GroupError>),
    Wait(oneshot::Receiver<Result<T, GroupError>>),
}

/// Settings the coordinator passes down.
pub(crate) struct Limits {
    pub initial_delay: Duration,
    pub min_session: i32,
    pub max_session: i32,
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: Vec::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            offsets: HashMap::new(),
        }
    }

    fn index_of(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == member_id)
    }

    pub fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == member_id)
    }

    fn static_member(&self, instance: &str) -> Option<usize> {
        self.members.iter().position(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// Protocols every member supports, in the first member's order of preference.
    fn candidates(&self) -> Vec<String> {
        let Some(first) = self.members.first() else { return Vec::new() };
        first.protocols.iter().map(|(n, _)| n.clone()).filter(|n| self.members.iter().all(|m| m.supports(n))).collect()
    }

    /// Each member votes for its most preferred candidate; the most votes win (ties: earliest
    /// candidate).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes = vec![0usize; candidates.len()];
        for m in &self.members {
            if let Some(i) = m.protocols.iter().find_map(|(n, _)| candidates.iter().position(|c| c == n)) {
                votes[i] += 1;
            }
        }
        let best = votes.iter().enumerate().max_by_key(|(i, v)| (**v, std::cmp::Reverse(*i)))?;
        candidates.get(best.0).cloned()
    }

    fn response_for(&self, member_id: &str, skip_assignment: bool) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if member_id == leader {
            self.members
                .iter()
                .map(|m| JoinMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment,
        }
    }

    /// Starts a rebalance (a no-op while one is being prepared).
    pub fn prepare_rebalance(&mut self, now: Instant, limits: &Limits) {
        if self.state == State::PreparingRebalance {
            return;
        }
        if self.state == State::CompletingRebalance {
            for m in self.members.iter_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let was_empty = self.state == State::Empty;
        self.state = State::PreparingRebalance;
        let timeout = self.members.iter().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(300));
        self.rebalance_deadline = Some(now + timeout);
        self.initial_delay_until =
            (was_empty && !limits.initial_delay.is_zero()).then(|| now + limits.initial_delay.min(timeout));
    }

    /// Completes the join phase if every member rejoined (after the initial delay), or
    /// unconditionally when `force` (the rebalance timeout passed): members that did not
    /// rejoin are removed.
    pub fn try_complete_join(&mut self, now: Instant, force: bool) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let delayed = self.initial_delay_until.is_some_and(|t| now < t);
        let all_joined = self.members.iter().all(|m| m.join_waiter.is_some()) && self.pending.is_empty();
        if !force && (delayed || !all_joined) {
            return;
        }
        self.members.retain(|m| m.join_waiter.is_some());
        self.pending.clear();
        self.generation += 1;
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        assert!(self.protocol.is_some(), "members of a group always share a protocol");
        if self.leader.as_ref().is_none_or(|l| self.index_of(l).is_none()) {
            self.leader = Some(self.members[0].id.clone());
        }
        self.state = State::CompletingRebalance;
        let ids: Vec<String> = self.members.iter().map(|m| m.id.clone()).collect();
        for id in ids {
            let resp = self.response_for(&id, false);
            let m = self.members.iter_mut().find(|m| m.id == id).expect("member exists");
            m.assignment = Bytes::new();
            m.last_seen = now;
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Ok(resp));
            }
        }
    }

    /// JoinGroup.
    pub fn join(&mut self, req: JoinRequest, new_id: String, now: Instant, limits: &Limits) -> Step<JoinResponse> {
        if req.session_timeout_ms < limits.min_session || req.session_timeout_ms > limits.max_session {
            return Step::Now(Err(GroupError::InvalidSessionTimeout(req.session_timeout_ms)));
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Step::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        if self.state != State::Empty {
            let type_ok = self.protocol_type.as_deref() == Some(req.protocol_type.as_str());
            let others: Vec<&Member> = self.members.iter().filter(|m| m.id != req.member_id).collect();
            let shared = req.protocols.iter().any(|(n, _)| others.iter().all(|m| m.supports(n)));
            if !type_ok || !shared {
                return Step::Now(Err(GroupError::InconsistentGroupProtocol));
            }
        }
        let session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
        let rebalance_timeout =
            Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms).max(0) as u64);

        // A static member coming back (a restart within the session timeout).
        if let Some(instance) = req.group_instance_id.clone() {
            if let Some(i) = self.static_member(&instance) {
                if !req.member_id.is_empty() && req.member_id != self.members[i].id {
                    return Step::Now(Err(GroupError::FencedInstanceId));
                }
                let old_id = self.members[i].id.clone();
                let id = if req.member_id.is_empty() { new_id } else { old_id.clone() };
                let same_protocol = self.protocol.as_ref().is_some_and(|p| req.protocols.iter().any(|(n, _)| n == p));
                let m = &mut self.members[i];
                m.id = id.clone();
                m.protocols = req.protocols;
                m.session_timeout = session_timeout;
                m.rebalance_timeout = rebalance_timeout;
                m.client_id = req.client_id;
                m.client_host = req.client_host;
                m.last_seen = now;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(Err(GroupError::FencedInstanceId));
                }
                if self.leader.as_deref() == Some(old_id.as_str()) {
                    self.leader = Some(id.clone());
                }
                if self.state == State::Stable && same_protocol {
                    let is_leader = self.leader.as_deref() == Some(id.as_str());
                    return Step::Now(Ok(self.response_for(&id, is_leader)));
                }
                return self.await_join(&id, now, limits);
            }
        }

        let id = if req.member_id.is_empty() {
            if req.require_known_member_id && req.group_instance_id.is_none() {
                self.pending.push((new_id.clone(), now + session_timeout));
                return Step::Now(Err(GroupError::MemberIdRequired(new_id)));
            }
            new_id
        } else {
            req.member_id.clone()
        };
        if let Some(i) = self.index_of(&id) {
            let m = &mut self.members[i];
            m.protocols = req.protocols;
            m.session_timeout = session_timeout;
            m.rebalance_timeout = rebalance_timeout;
            m.last_seen = now;
        } else {
            let was_pending = self.pending.iter().position(|(p, _)| *p == id);
            if !req.member_id.is_empty() && was_pending.is_none() {
                return Step::Now(Err(GroupError::UnknownMemberId));
            }
            if let Some(p) = was_pending {
                self.pending.swap_remove(p);
            }
            if self.members.is_empty() {
                self.protocol_type = Some(req.protocol_type.clone());
            }
            self.members.push(Member {
                id: id.clone(),
                instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout,
                rebalance_timeout,
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            });
        }
        self.await_join(&id, now, limits)
    }

    fn await_join(&mut self, id: &str, now: Instant, limits: &Limits) -> Step<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        let m = self.members.iter_mut().find(|m| m.id == id).expect("joining member exists");
        if let Some(old) = m.join_waiter.replace(tx) {
            let _ = old.send(Err(GroupError::UnknownMemberId));
        }
        self.prepare_rebalance(now, limits);
        self.try_complete_join(now, false);
        Step::Wait(rx)
    }

    fn check_member(&self, member_id: &str, instance: Option<&str>, generation: i32) -> Result<usize, GroupError> {
        let i = self.index_of(member_id).ok_or_else(|| match instance.and_then(|s| self.static_member(s)) {
            Some(_) => GroupError::FencedInstanceId,
            None => GroupError::UnknownMemberId,
        })?;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(i)
    }

    /// SyncGroup. Returns true in the second field when the group became Stable.
    pub fn sync(&mut self, req: super::SyncRequest, now: Instant) -> (Step<SyncResponse>, bool) {
        let i = match self.check_member(&req.member_id, req.group_instance_id.as_deref(), req.generation_id) {
            Ok(i) => i,
            Err(e) => return (Step::Now(Err(e)), false),
        };
        if req.protocol_type.as_ref().is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || req.protocol_name.as_ref().is_some_and(|p| Some(p) != self.protocol.as_ref())
        {
            return (Step::Now(Err(GroupError::InconsistentGroupProtocol)), false);
        }
        self.members[i].last_seen = now;
        let answer = |g: &Group, i: usize| SyncResponse {
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment: g.members[i].assignment.clone(),
        };
        match self.state {
            State::Empty => (Step::Now(Err(GroupError::UnknownMemberId)), false),
            State::PreparingRebalance => (Step::Now(Err(GroupError::RebalanceInProgress)), false),
            State::Stable => (Step::Now(Ok(answer(self, i))), false),
            State::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.members[i].sync_waiter = Some(tx);
                if self.leader.as_deref() != Some(req.member_id.as_str()) {
                    return (Step::Wait(rx), false);
                }
                for m in self.members.iter_mut() {
                    m.assignment =
                        req.assignments.iter().find(|(id, _)| *id == m.id).map(|(_, a)| a.clone()).unwrap_or_default();
                }
                self.state = State::Stable;
                for j in 0..self.members.len() {
                    let resp = answer(self, j);
                    if let Some(w) = self.members[j].sync_waiter.take() {
                        let _ = w.send(Ok(resp));
                    }
                }
                (Step::Wait(rx), true)
            }
        }
    }

    /// Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        let i = self.check_member(member_id, instance, generation)?;
        self.members[i].last_seen = now;
        match self.state {
            State::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            State::Empty => Err(GroupError::UnknownMemberId),
            State::CompletingRebalance | State::Stable => Ok(()),
        }
    }

    /// Removes a member (leave or expiry) and rebalances the rest.
    pub fn remove_member(&mut self, i: usize, now: Instant, limits: &Limits) {
        let m = self.members.remove(i);
        if let Some(w) = m.join_waiter {
            let _ = w.send(Err(GroupError::UnknownMemberId));
        }
        if let Some(w) = m.sync_waiter {
            let _ = w.send(Err(GroupError::UnknownMemberId));
        }
        match self.state {
            State::Empty => {}
            State::Stable | State::CompletingRebalance => {
                self.prepare_rebalance(now, limits);
                self.try_complete_join(now, false);
            }
            State::PreparingRebalance => self.try_complete_join(now, false),
        }
    }

    /// LeaveGroup for (member id, instance id) pairs; one result each.
    pub fn leave(
        &mut self,
        members: &[(String, Option<String>)],
        now: Instant,
        limits: &Limits,
    ) -> Vec<Result<(), GroupError>> {
        members
            .iter()
            .map(|(id, instance)| {
                let i = if id.is_empty() {
                    instance.as_deref().and_then(|s| self.static_member(s))
                } else {
                    self.index_of(id)
                };
                match i {
                    Some(i) if instance.is_none() || self.members[i].instance_id == *instance => {
                        self.remove_member(i, now, limits);
                        Ok(())
                    }
                    Some(_) => Err(GroupError::FencedInstanceId),
                    None => Err(GroupError::UnknownMemberId),
                }
            })
            .collect()
    }

    /// Periodic work: expire silent members and pending ids, finish delayed or timed-out joins.
    pub fn tick(&mut self, now: Instant, limits: &Limits) {
        self.pending.retain(|(_, deadline)| *deadline > now);
        while let Some(i) = self.members.iter().position(|m| {
            m.join_waiter.is_none() && m.sync_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
        }) {
            tracing::info!(group = %self.id, member = %self.members[i].id, "member session expired");
            self.remove_member(i, now, limits);
        }
        if self.state == State::PreparingRebalance {
            let force = self.rebalance_deadline.is_some_and(|d| now >= d);
            self.try_complete_join(now, force);
        }
        debug_assert!(self.state != State::Empty || self.members.is_empty(), "an Empty group has no members");
    }

    /// Topics the members subscribed to (consumer protocol metadata), for OffsetDelete.
    pub fn subscribed_topics(&self) -> Vec<String> {
        let Some(protocol) = &self.protocol else { return Vec::new() };
        if self.protocol_type.as_deref() != Some("consumer") {
            return Vec::new();
        }
        let mut out = Vec::new();
        for m in &self.members {
            out.extend(parse_subscription(&m.metadata_for(protocol)));
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Topics of a ConsumerProtocolSubscription (version i16, then an array of i16-length strings).
fn parse_subscription(meta: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if meta.len() < 6 {
        return out;
    }
    let n = i32::from_be_bytes([meta[2], meta[3], meta[4], meta[5]]);
    let mut pos = 6;
    for _ in 0..n.max(0) {
        let Some(len) = meta.get(pos..pos + 2).map(|b| i16::from_be_bytes([b[0], b[1]])) else { break };
        pos += 2;
        let Some(name) = meta.get(pos..pos + len.max(0) as usize) else { break };
        out.push(String::from_utf8_lossy(name).into_owned());
        pos += len.max(0) as usize;
    }
    out
}

#[cfg(test)]
mod tests {
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
        let Step::Now(Err(GroupError::MemberIdRequired(a))) = g.join(join_req("", &["range"]), "a".into(), now, &l)
        else {
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
        let (sa, stable) = g
            .sync(sync("a", vec![("a".into(), Bytes::from_static(b"A")), ("b".into(), Bytes::from_static(b"B"))]), now);
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
            m.extend_from_slice(&(t.len() as i16).to_be_bytes());
            m.extend_from_slice(t.as_bytes());
        }
        assert_eq!(parse_subscription(&m), vec!["a".to_string(), "bc".to_string()]);
    }
}
