//! One group's state machine (classic protocol): Empty → PreparingRebalance →
//! CompletingRebalance → Stable, as Kafka's GroupCoordinator runs it.
//!
//! Joins follow Kafka's `GroupMetadataManager` (`classicGroupJoinNewMember`,
//! `classicGroupJoinExistingMember`, `updateStaticMemberThenRebalanceOrCompleteJoin`): in a
//! Stable group the leader rejoining or a member rejoining with changed protocol metadata
//! starts a rebalance, a follower with unchanged metadata gets the current generation back,
//! and a static member rejoining without its member id replaces (and fences) its old id.
//!
//! Contract: everything here is synchronous and the time is an argument (`now`), never read
//! from the clock; waiting members hold oneshot senders that the transitions fire. Invariants checked where state changes: a Stable or CompletingRebalance
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
    /// Set when this is a KIP-848 consumer group (the classic fields then stay Empty).
    pub consumer: Option<super::consumer::ConsumerGroup>,
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
            consumer: None,
        }
    }

    /// No member of either protocol.
    pub fn has_no_members(&self) -> bool {
        self.members.is_empty() && self.consumer.as_ref().is_none_or(|c| c.members.is_empty())
    }

    fn index_of(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == member_id)
    }

    #[cfg(test)]
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
    pub(crate) fn select_protocol(&self) -> Option<String> {
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
        let timeout = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_millis(sluice_core::limits::DEFAULT_REBALANCE_TIMEOUT_MS));
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

    /// JoinGroup: checks the request, then a new member (no member id), a pending member (the
    /// id handed out with MEMBER_ID_REQUIRED) or an existing member joins.
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
        if req.member_id.is_empty() {
            return self.join_new(req, new_id, now, limits);
        }
        if req.group_instance_id.is_none() {
            if let Some(p) = self.pending.iter().position(|(p, _)| *p == req.member_id) {
                self.pending.swap_remove(p);
                let id = req.member_id.clone();
                self.add_member(id.clone(), req, now);
                return self.await_join(&id, now, limits);
            }
        }
        self.join_existing(req, now, limits)
    }

    /// A join without a member id: a static member whose instance id is known takes its place
    /// back; any other static member is added; a dynamic member is added, or (v4+) first told
    /// its id with MEMBER_ID_REQUIRED.
    fn join_new(&mut self, req: JoinRequest, new_id: String, now: Instant, limits: &Limits) -> Step<JoinResponse> {
        if let Some(i) = req.group_instance_id.as_deref().and_then(|s| self.static_member(s)) {
            return self.replace_static_member(i, req, new_id, now, limits);
        }
        if req.require_known_member_id && req.group_instance_id.is_none() {
            self.pending.push((new_id.clone(), now + session_timeout(&req)));
            return Step::Now(Err(GroupError::MemberIdRequired(new_id)));
        }
        self.add_member(new_id.clone(), req, now);
        self.await_join(&new_id, now, limits)
    }

    /// A member of the group joins again (as Kafka's `classicGroupJoinExistingMember`): while a
    /// rebalance is being prepared it waits for it; otherwise the leader, or a member whose
    /// protocols changed, starts a rebalance, and a follower with unchanged protocols gets the
    /// current generation back at once.
    fn join_existing(&mut self, req: JoinRequest, now: Instant, limits: &Limits) -> Step<JoinResponse> {
        let i = match self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            Ok(i) => i,
            Err(e) => return Step::Now(Err(e)),
        };
        let id = req.member_id.clone();
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let unchanged = self.members[i].protocols == req.protocols;
        match self.state {
            State::Empty => Step::Now(Err(GroupError::UnknownMemberId)),
            State::CompletingRebalance | State::Stable
                if unchanged && (self.state == State::CompletingRebalance || !is_leader) =>
            {
                self.members[i].last_seen = now;
                Step::Now(Ok(self.response_for(&id, false)))
            }
            State::PreparingRebalance | State::CompletingRebalance | State::Stable => {
                self.update_member(i, req, now);
                self.await_join(&id, now, limits)
            }
        }
    }

    /// A static member came back without its member id (a restart): it replaces the old member
    /// id, which is fenced (its waiting join or sync gets FENCED_INSTANCE_ID, its later requests
    /// too). In a Stable group whose protocol stays the same it gets its assignment back without
    /// a rebalance (the leader with `skip_assignment`); otherwise the group rebalances.
    fn replace_static_member(
        &mut self,
        i: usize,
        req: JoinRequest,
        new_id: String,
        now: Instant,
        limits: &Limits,
    ) -> Step<JoinResponse> {
        let m = &mut self.members[i];
        let old_id = std::mem::replace(&mut m.id, new_id.clone());
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(Err(GroupError::FencedInstanceId));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(Err(GroupError::FencedInstanceId));
        }
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        self.update_member(i, req, now);
        if self.state == State::Stable && self.select_protocol() == self.protocol {
            let is_leader = self.leader.as_deref() == Some(new_id.as_str());
            return Step::Now(Ok(self.response_for(&new_id, is_leader)));
        }
        self.await_join(&new_id, now, limits)
    }

    fn add_member(&mut self, id: String, req: JoinRequest, now: Instant) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.push(Member {
            id,
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout: session_timeout(&req),
            rebalance_timeout: rebalance_timeout(&req),
            protocols: req.protocols,
            assignment: Bytes::new(),
            last_seen: now,
            join_waiter: None,
            sync_waiter: None,
        });
    }

    fn update_member(&mut self, i: usize, req: JoinRequest, now: Instant) {
        let m = &mut self.members[i];
        m.session_timeout = session_timeout(&req);
        m.rebalance_timeout = rebalance_timeout(&req);
        m.protocols = req.protocols;
        m.last_seen = now;
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

    /// The member a request names (Kafka's `validateMember`): with an instance id, that static
    /// member must exist (else UNKNOWN_MEMBER_ID) and have this member id (else
    /// FENCED_INSTANCE_ID: a newer instance replaced it); the member id must be a member.
    pub fn validate_member(&self, member_id: &str, instance: Option<&str>) -> Result<usize, GroupError> {
        if let Some(instance) = instance {
            let i = self.static_member(instance).ok_or(GroupError::UnknownMemberId)?;
            if self.members[i].id != member_id {
                return Err(GroupError::FencedInstanceId);
            }
            return Ok(i);
        }
        self.index_of(member_id).ok_or(GroupError::UnknownMemberId)
    }

    fn check_member(&self, member_id: &str, instance: Option<&str>, generation: i32) -> Result<usize, GroupError> {
        let i = self.validate_member(member_id, instance)?;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(i)
    }

    /// OffsetCommit's checks (Kafka's `validateOffsetCommit`): a commit without a generation
    /// is taken only while the group is Empty; otherwise the member must be the current one
    /// (a replaced static member is fenced) of the current generation, and not in the middle
    /// of a rebalance's sync phase.
    pub fn validate_commit(&self, member_id: &str, instance: Option<&str>, generation: i32) -> Result<(), GroupError> {
        if generation < 0 && self.state == State::Empty {
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance.is_some() {
            self.check_member(member_id, instance, generation)?;
        } else if self.state != State::Empty {
            return Err(GroupError::UnknownMemberId);
        }
        if self.state == State::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// TxnOffsetCommit's checks (Kafka's `validateOffsetCommit` for a transactional commit,
    /// KIP-447): a commit with a generation, a member id or an instance id must come from the
    /// current member of the current generation (a zombie whose partitions a rebalance moved
    /// is fenced); one without any is taken (a producer that does not use group management).
    /// Unlike OffsetCommit, a rebalance's sync phase does not refuse it.
    pub fn validate_txn_commit(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if generation >= 0 || !member_id.is_empty() || instance.is_some() {
            self.check_member(member_id, instance, generation)?;
        }
        Ok(())
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

    /// LeaveGroup for (member id, instance id) pairs; one result each. Without a member id the
    /// static member of that instance id leaves (an admin removing it); a pending member id is
    /// forgotten; otherwise the member is checked as [`Group::validate_member`] does.
    pub fn leave(
        &mut self,
        members: &[(String, Option<String>)],
        now: Instant,
        limits: &Limits,
    ) -> Vec<Result<(), GroupError>> {
        members
            .iter()
            .map(|(id, instance)| {
                if id.is_empty() {
                    let i =
                        instance.as_deref().and_then(|s| self.static_member(s)).ok_or(GroupError::UnknownMemberId)?;
                    self.remove_member(i, now, limits);
                    return Ok(());
                }
                if let Some(p) = self.pending.iter().position(|(p, _)| p == id) {
                    self.pending.swap_remove(p);
                    self.try_complete_join(now, false);
                    return Ok(());
                }
                let i = self.validate_member(id, instance.as_deref())?;
                self.remove_member(i, now, limits);
                Ok(())
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

fn session_timeout(req: &JoinRequest) -> Duration {
    Duration::from_millis(u64::try_from(req.session_timeout_ms).unwrap_or(0))
}

/// At least the session timeout (JoinGroup v0 has no rebalance timeout).
fn rebalance_timeout(req: &JoinRequest) -> Duration {
    Duration::from_millis(u64::try_from(req.rebalance_timeout_ms.max(req.session_timeout_ms)).unwrap_or(0))
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
        // A negative length reads as empty.
        let len = usize::try_from(len).unwrap_or(0);
        let Some(name) = meta.get(pos..pos + len) else { break };
        out.push(String::from_utf8_lossy(name).into_owned());
        pos += len;
    }
    out
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
