//! Mixed membership (KIP-848's online upgrade and downgrade, as Kafka 4.x runs it): members
//! using the classic protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) inside a KIP-848
//! consumer group, and the conversions between a classic group and a consumer group.
//!
//! - Upgrade ([`upgrade`]): a ConsumerGroupHeartbeat joining a classic group that has members
//!   converts it when `group_consumer_migration_policy` allows it, the group uses the
//!   `consumer` protocol type and its size fits: every classic member becomes a member of the
//!   consumer group at the group's generation, owning its last assignment, which is also the
//!   target; waiting joins and syncs are told REBALANCE_IN_PROGRESS (Kafka's
//!   `convertToConsumerGroup` / `ConsumerGroup.fromClassicGroup`).
//! - Classic members of a consumer group (Kafka's `classicGroup*ToConsumerGroup`): JoinGroup
//!   updates the member from its subscription metadata, computes the target assignment and
//!   reconciles the member at once (the partitions it says it owns stand for the revocations
//!   done) and answers with its member epoch as the generation, without a leader (every
//!   classic member is a follower); SyncGroup answers the member's assigned partitions;
//!   Heartbeat answers REBALANCE_IN_PROGRESS when the member must rejoin (the group epoch
//!   moved past it, it has partitions to revoke, or partitions it waits for were released).
//!   A classic member is removed when its own session timeout passes without a request, when
//!   it does not sync within its rebalance timeout after a join, or does not rejoin within it
//!   after being told to.
//! - Downgrade ([`maybe_downgrade`]): when the last member using the consumer protocol leaves
//!   (or is fenced) and the others all use the classic protocol, the group becomes a classic
//!   group at the members' highest epoch, Stable with the target assignment, then rebalances (Kafka's
//!   `convertToClassicGroup` / `ClassicGroup.fromConsumerGroup`).
//!
//! Contract: synchronous, time is an argument; the caller persists the consumer group's record
//! after a change (a tombstone after a downgrade). Invariants as in [`super`]: no partition is
//! held by two members, before and after a conversion.

use super::super::group::{Group, Limits, Member, State};
use super::super::{GroupError, JoinRequest, JoinResponse, SyncRequest, SyncResponse};
use super::{protocol, ConsumerGroup, ConsumerMember, GroupEpoch, MemberEpoch, MemberState, Settings, Topics};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The protocol type of the classic consumer protocol, the only one a consumer group takes.
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// What a member using the classic protocol adds to a consumer group member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClassicMeta {
    pub session_timeout_ms: i32,
    /// JoinGroup's protocols (assignor name, subscription metadata), in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// Set when the member was told to rejoin: removed if it has not by then.
    pub join_deadline: Option<Instant>,
    /// Set by a join: removed if it has not synced by then.
    pub sync_deadline: Option<Instant>,
}

impl ClassicMeta {
    fn protocol_name(&self) -> String {
        self.protocols.first().map(|(n, _)| n.clone()).unwrap_or_default()
    }

    fn version(&self) -> i16 {
        self.protocols.first().map_or(0, |(_, m)| protocol::version(m))
    }

    fn supports(&self, name: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == name)
    }

    /// Whether the member's session, sync or rejoin deadline passed.
    pub fn expired(&self, last_seen: Instant, now: Instant) -> bool {
        let session = Duration::from_millis(u64::try_from(self.session_timeout_ms).unwrap_or(0));
        now > last_seen + session
            || self.join_deadline.is_some_and(|d| now > d)
            || self.sync_deadline.is_some_and(|d| now > d)
    }
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Upgrade: a classic group with members becomes a consumer group, if the policy, its
/// protocol type and its size allow (GROUP_ID_NOT_FOUND otherwise, as Kafka answers).
pub(crate) fn upgrade(g: &mut Group, s: &Settings, now: Instant) -> Result<(), GroupError> {
    if !s.migration.upgrade_enabled()
        || g.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE)
        || g.members.len() > s.max_size
    {
        return Err(GroupError::GroupIdNotFound);
    }
    let mut c =
        ConsumerGroup { epoch: GroupEpoch(g.generation), target_epoch: GroupEpoch(g.generation), ..Default::default() };
    let mut taken = BTreeSet::new();
    for m in &g.members {
        let meta = g.protocol.as_deref().and_then(|p| m.protocols.iter().find(|(n, _)| n == p)).or(m.protocols.first());
        let sub = meta.and_then(|(_, b)| protocol::decode_subscription(b)).ok_or(GroupError::GroupIdNotFound)?;
        let mut assigned = protocol::decode_assignment(&m.assignment).ok_or(GroupError::GroupIdNotFound)?;
        // A partition the classic leader gave twice stays with the first member only.
        for (t, ps) in assigned.iter_mut() {
            ps.retain(|p| taken.insert((t.clone(), *p)));
        }
        assigned.retain(|_, ps| !ps.is_empty());
        let mut cm = ConsumerMember::new(m.id.clone(), now);
        cm.instance_id.clone_from(&m.instance_id);
        cm.rack_id = sub.rack_id;
        cm.client_id.clone_from(&m.client_id);
        cm.client_host.clone_from(&m.client_host);
        cm.rebalance_timeout_ms = i32::try_from(m.rebalance_timeout.as_millis()).unwrap_or(i32::MAX);
        cm.topics = sub.topics;
        cm.topics.sort();
        cm.topics.dedup();
        cm.epoch = MemberEpoch(g.generation);
        cm.previous_epoch = cm.epoch;
        cm.assigned = assigned.clone();
        cm.classic = Some(ClassicMeta {
            session_timeout_ms: i32::try_from(m.session_timeout.as_millis()).unwrap_or(i32::MAX),
            protocols: m.protocols.clone(),
            join_deadline: None,
            sync_deadline: None,
        });
        c.target.insert(m.id.clone(), assigned);
        c.members.insert(m.id.clone(), cm);
    }
    for m in g.members.iter_mut() {
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(Err(GroupError::RebalanceInProgress));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(Err(GroupError::RebalanceInProgress));
        }
    }
    g.members.clear();
    g.pending.clear();
    g.state = State::Empty;
    g.protocol = None;
    g.leader = None;
    g.rebalance_deadline = None;
    g.initial_delay_until = None;
    c.check_invariants();
    tracing::info!(group = %g.id, members = c.members.len(), "classic group upgraded to a consumer group");
    g.consumer = Some(c);
    Ok(())
}

/// Downgrade, after `left` (a member using the consumer protocol) left or was fenced: when
/// every remaining member uses the classic protocol and the policy allows, the group becomes
/// a classic group and rebalances. Whether it did.
pub(crate) fn maybe_downgrade(
    g: &mut Group,
    left_consumer_member: bool,
    s: &Settings,
    now: Instant,
    limits: &Limits,
) -> bool {
    let Some(c) = g.consumer.as_ref() else { return false };
    if !left_consumer_member
        || !s.migration.downgrade_enabled()
        || c.members.is_empty()
        || c.members.values().any(|m| m.classic.is_none())
    {
        return false;
    }
    let mut members: Vec<Member> = c
        .members
        .values()
        .map(|m| {
            let meta = m.classic.as_ref().expect("checked: every member is classic");
            Member {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout: millis(meta.session_timeout_ms),
                rebalance_timeout: millis(m.rebalance_timeout_ms.max(meta.session_timeout_ms)),
                protocols: meta.protocols.clone(),
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            }
        })
        .collect();
    let mut classic = Group::new(&g.id);
    classic.members = std::mem::take(&mut members);
    let Some(protocol) = classic.select_protocol() else { return false };
    let c = g.consumer.take().expect("checked above");
    for m in classic.members.iter_mut() {
        let version = m.protocols.iter().find(|(n, _)| *n == protocol).map_or(0, |(_, b)| protocol::version(b));
        let target = c.target.get(&m.id).cloned().unwrap_or_default();
        m.assignment = protocol::encode_assignment(version, &target);
    }
    g.members = classic.members;
    // Kafka takes the group epoch from before the leave; the highest epoch of the members left
    // is that in a settled group, and their heartbeats at it are told to rejoin (a lower
    // generation gets ILLEGAL_GENERATION and rejoins too).
    g.generation = c.members.values().map(|m| m.epoch.0).max().unwrap_or(c.epoch.0).max(g.generation);
    g.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.to_string());
    g.protocol = Some(protocol);
    g.leader = g.members.first().map(|m| m.id.clone());
    g.state = State::Stable;
    g.pending.clear();
    tracing::info!(group = %g.id, members = g.members.len(), "consumer group downgraded to a classic group");
    g.prepare_rebalance(now, limits);
    true
}

impl ConsumerGroup {
    /// The classic member a request names (Kafka's `validateConsumerGroupMember` and
    /// `throwIfMemberDoesNotUseClassicProtocol`): with an instance id, that static member with
    /// this member id (FENCED_INSTANCE_ID otherwise); the member must use the classic protocol.
    fn classic_member(&self, member_id: &str, instance: Option<&str>) -> Result<&ConsumerMember, GroupError> {
        let m = match instance {
            Some(inst) => {
                let m = self.static_member(inst).ok_or(GroupError::UnknownMemberId)?;
                if m.id != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
                m
            }
            None => self.members.get(member_id).ok_or(GroupError::UnknownMemberId)?,
        };
        m.classic.as_ref().map(|_| m).ok_or(GroupError::UnknownMemberId)
    }

    /// JoinGroup of a classic member. The answer, and whether the group changed (persist it).
    pub(crate) fn classic_join(
        &mut self,
        req: JoinRequest,
        new_id: String,
        now: Instant,
        topics: &Topics,
        s: &Settings,
        limits: &Limits,
    ) -> Result<JoinResponse, GroupError> {
        if req.session_timeout_ms < limits.min_session || req.session_timeout_ms > limits.max_session {
            return Err(GroupError::InvalidSessionTimeout(req.session_timeout_ms));
        }
        self.check_classic_protocols(&req)?;
        let sub = req
            .protocols
            .first()
            .and_then(|(_, b)| protocol::decode_subscription(b))
            .ok_or(GroupError::InconsistentGroupProtocol)?;
        let id = if req.member_id.is_empty() { new_id } else { req.member_id.clone() };
        if req.member_id.is_empty() && req.group_instance_id.is_none() && req.require_known_member_id {
            return Err(GroupError::MemberIdRequired(id));
        }
        let start = self.epoch;
        let id = self.classic_admit(&req, id, now, s)?;
        if self.classic_update(&id, &req, sub.clone(), now) {
            self.bump();
        }
        self.refresh_metadata(topics);
        self.epoch = self.epoch.min(start.bumped());
        self.maybe_assign();
        self.reconcile(&id, Some(&sub.owned), now);
        let m = self.members.get_mut(&id).ok_or(GroupError::UnknownMemberId)?;
        // Classic members have join and sync timers instead of the revocation deadline.
        m.revoke_deadline = None;
        let meta = m.classic.as_ref().ok_or(GroupError::UnknownMemberId)?;
        Ok(JoinResponse {
            generation_id: m.epoch.0,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol_name: Some(meta.protocol_name()),
            leader: String::new(),
            member_id: id,
            members: Vec::new(),
            skip_assignment: false,
        })
    }

    /// Kafka's `throwIfClassicProtocolIsNotSupported`: the `consumer` protocol type, and (when
    /// the group has other classic members) a protocol every one of them supports.
    fn check_classic_protocols(&self, req: &JoinRequest) -> Result<(), GroupError> {
        if req.protocol_type != CONSUMER_PROTOCOL_TYPE || req.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let others: Vec<&ClassicMeta> = self
            .members
            .values()
            .filter(|m| m.id != req.member_id)
            .filter(|m| req.group_instance_id.is_none() || m.instance_id != req.group_instance_id)
            .filter_map(|m| m.classic.as_ref())
            .collect();
        let shared = req.protocols.iter().any(|(n, _)| others.iter().all(|o| o.supports(n)));
        if !shared {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    /// The member a classic join is about: a static member coming back under a new id takes
    /// over its instance (the old id is fenced), a known member is itself, anyone else is new.
    fn classic_admit(
        &mut self,
        req: &JoinRequest,
        id: String,
        now: Instant,
        s: &Settings,
    ) -> Result<String, GroupError> {
        if let Some(inst) = req.group_instance_id.as_deref() {
            if let Some(old) = self.static_member(inst).map(|m| m.id.clone()) {
                if old == id {
                    return Ok(id);
                }
                if !req.member_id.is_empty() {
                    return Err(GroupError::FencedInstanceId);
                }
                let mut m = self.members.remove(&old).ok_or(GroupError::UnknownMemberId)?;
                m.id = id.clone();
                self.members.insert(id.clone(), m);
                if let Some(t) = self.target.remove(&old) {
                    self.target.insert(id.clone(), t);
                }
                return Ok(id);
            }
        }
        if self.members.contains_key(&id) {
            return Ok(id);
        }
        if self.members.len() >= s.max_size {
            return Err(GroupError::GroupMaxSizeReached);
        }
        let mut m = ConsumerMember::new(id.clone(), now);
        m.instance_id.clone_from(&req.group_instance_id);
        self.members.insert(id.clone(), m);
        self.bump();
        Ok(id)
    }

    /// Takes a classic join's subscription; whether the subscribed topics changed.
    fn classic_update(&mut self, id: &str, req: &JoinRequest, sub: protocol::Subscription, now: Instant) -> bool {
        let Some(m) = self.members.get_mut(id) else { return false };
        m.last_seen = now;
        m.client_id.clone_from(&req.client_id);
        m.client_host.clone_from(&req.client_host);
        if sub.rack_id.is_some() {
            m.rack_id = sub.rack_id;
        }
        if req.rebalance_timeout_ms >= 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        let rebalance = millis(m.rebalance_timeout_ms.max(req.session_timeout_ms));
        m.classic = Some(ClassicMeta {
            session_timeout_ms: req.session_timeout_ms,
            protocols: req.protocols.clone(),
            join_deadline: None,
            sync_deadline: Some(now + rebalance),
        });
        let mut topics = sub.topics;
        topics.sort();
        topics.dedup();
        let changed = topics != m.topics || m.regex.is_some() || m.assignor.is_some();
        m.topics = topics;
        m.regex = None;
        m.assignor = None;
        changed
    }

    /// Kafka's `throwIfRebalanceInProgress`: the group epoch moved past the member (and it is
    /// not busy revoking): it must rejoin first; its rejoin deadline starts.
    fn rejoin_needed(&mut self, id: &str, now: Instant) -> Result<(), GroupError> {
        let group_epoch = self.epoch.as_member();
        let waiting = self.waiting_on_unreleased(id);
        let m = self.members.get_mut(id).ok_or(GroupError::UnknownMemberId)?;
        let rejoin = m.epoch < group_epoch
            || m.state == MemberState::UnrevokedPartitions
            || (m.state == MemberState::UnreleasedPartitions && !waiting);
        if rejoin {
            let timeout = millis(m.rebalance_timeout_ms);
            if let Some(meta) = m.classic.as_mut() {
                meta.join_deadline.get_or_insert(now + timeout);
            }
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Does the member wait for a partition of its target that another member still holds?
    fn waiting_on_unreleased(&self, id: &str) -> bool {
        let Some(m) = self.members.get(id) else { return false };
        let target = self.target.get(id).cloned().unwrap_or_default();
        let held = self.held_by_others(id);
        target.iter().any(|(t, ps)| {
            ps.iter().any(|p| !m.assigned.get(t).is_some_and(|a| a.contains(p)) && held.contains(&(t.clone(), *p)))
        })
    }

    /// SyncGroup of a classic member: its assigned partitions.
    pub(crate) fn classic_sync(&mut self, req: &SyncRequest, now: Instant) -> Result<SyncResponse, GroupError> {
        let m = self.classic_member(&req.member_id, req.group_instance_id.as_deref())?;
        let id = m.id.clone();
        let meta = m.classic.as_ref().ok_or(GroupError::UnknownMemberId)?;
        if req.generation_id != m.epoch.0 {
            return Err(GroupError::IllegalGeneration);
        }
        if req.protocol_type.as_deref().is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE)
            || req.protocol_name.as_ref().is_some_and(|p| *p != meta.protocol_name())
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let (group_epoch, state) = (self.epoch.as_member(), m.state);
        if group_epoch > m.epoch && state != MemberState::UnrevokedPartitions {
            let timeout = millis(m.rebalance_timeout_ms);
            if let Some(meta) = self.members.get_mut(&id).and_then(|m| m.classic.as_mut()) {
                meta.join_deadline.get_or_insert(now + timeout);
            }
            return Err(GroupError::RebalanceInProgress);
        }
        let m = self.members.get_mut(&id).ok_or(GroupError::UnknownMemberId)?;
        m.last_seen = now;
        let meta = m.classic.as_mut().ok_or(GroupError::UnknownMemberId)?;
        meta.sync_deadline = None;
        Ok(SyncResponse {
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol_name: Some(meta.protocol_name()),
            assignment: protocol::encode_assignment(meta.version(), &m.assigned),
        })
    }

    /// Heartbeat of a classic member: REBALANCE_IN_PROGRESS when it must rejoin.
    pub(crate) fn classic_heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        let m = self.classic_member(member_id, instance)?;
        if generation != m.epoch.0 {
            return Err(GroupError::IllegalGeneration);
        }
        let id = m.id.clone();
        if let Some(m) = self.members.get_mut(&id) {
            m.last_seen = now;
        }
        self.rejoin_needed(&id, now)
    }

    /// LeaveGroup of classic members (without a member id: the static member of that instance,
    /// an admin removing it); one result each. Whether any left.
    pub(crate) fn classic_leave(
        &mut self,
        members: &[(String, Option<String>)],
    ) -> (Vec<Result<(), GroupError>>, bool) {
        let mut any = false;
        let results = members
            .iter()
            .map(|(id, instance)| {
                let m = match (id.is_empty(), instance.as_deref()) {
                    (true, Some(inst)) => self.static_member(inst).ok_or(GroupError::UnknownMemberId)?,
                    _ => self.classic_member(id, instance.as_deref())?,
                };
                if m.classic.is_none() {
                    return Err(GroupError::UnknownMemberId);
                }
                let id = m.id.clone();
                self.remove(&id);
                any = true;
                Ok(())
            })
            .collect();
        (results, any)
    }
}

/// Partitions of an assignment, as (topic, partition) pairs (tests).
#[cfg(test)]
pub(crate) fn pairs(a: &super::Assignment) -> BTreeSet<(String, i32)> {
    a.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p))).collect()
}
