//! KIP-848 consumer groups (the "consumer" protocol): ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe decided on the coordinator shard, without I/O.
//!
//! A group has a group epoch (bumped when a member joins or leaves, a subscription or the
//! chosen assignor changes, or the metadata of the subscribed topics changes), a target
//! assignment computed by a server assignor at some epoch (the assignment epoch), and members,
//! each with its own member epoch that reaches the assignment epoch through incremental
//! reconciliation ([`reconcile`]): partitions are revoked before they are given to another
//! member. Static members (an instance id) leave with epoch -2 and keep their partitions until
//! they come back under a new member id or their session times out.
//!
//! Contract: everything here is synchronous, time comes in as `now`; the group lives in the
//! coordinator's table ([`super::group::Group::consumer`]), shares its committed offsets, and
//! [`ConsumerGroup::snapshot`] is what [`super::coordinator`] writes to `__consumer_offsets`
//! (one record per group, key kind 2, see [`record`]) whenever it changes. Invariant checked
//! after every change (debug builds): no partition is held by two members.

pub(crate) mod assignor;
pub(crate) mod classic;
pub(crate) mod protocol;
pub(crate) mod reconcile;
pub(crate) mod record;

use super::group::{Group, Limits};
use super::table::Groups;
use super::GroupError;
use assignor::Assignor;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Regexes are not resolved again sooner than this after a resolution (Kafka's
/// `REGEX_BATCH_REFRESH_MIN_INTERVAL_MS`), so a burst of new topics costs one rebalance.
const REGEX_REFRESH_MIN_INTERVAL: Duration =
    Duration::from_millis(sluice_core::limits::CONSUMER_GROUP_REGEX_REFRESH_MIN_INTERVAL_MS);

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;
pub(crate) type TopicPartition = (String, i32);

/// A member's epoch: 0 to join, -1 to leave, -2 for a static member that will come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberEpoch(pub i32);

impl MemberEpoch {
    pub const JOIN: MemberEpoch = MemberEpoch(0);
    pub const LEAVE: MemberEpoch = MemberEpoch(-1);
    pub const LEAVE_STATIC: MemberEpoch = MemberEpoch(-2);
}

/// A group's epoch (also the epoch of its target assignment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GroupEpoch(pub i32);

impl GroupEpoch {
    fn bumped(self) -> GroupEpoch {
        GroupEpoch(self.0.saturating_add(1))
    }
    fn as_member(self) -> MemberEpoch {
        MemberEpoch(self.0)
    }
}

/// A topic as the coordinator sees it in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub id: [u8; 16],
    pub partitions: i32,
}

/// Every topic of the cluster, by name.
pub type Topics = BTreeMap<String, TopicInfo>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

impl MemberState {
    pub fn code(self) -> u8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }
    pub fn from_code(c: u8) -> Option<MemberState> {
        [MemberState::Stable, MemberState::UnrevokedPartitions, MemberState::UnreleasedPartitions]
            .into_iter()
            .find(|s| s.code() == c)
    }
}

/// A subscription regex, as given and compiled (full match, ASCII classes: see [`compile`]).
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionRegex {
    pub source: String,
    pub compiled: regex::bytes::Regex,
}

impl PartialEq for SubscriptionRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Compiles a subscription regex as Kafka matches it (RE2/J `matches()`: the whole topic name).
/// The `regex` crate is, like RE2/J, a linear-time automaton engine without backreferences or
/// look-around; with Unicode off, `\d`, `\w`, `\s` and `\b` are ASCII as in RE2/J. Differences
/// left: RE2/J's `\pN`-style classes and `(?U)` are refused or read differently here (topic
/// names are ASCII, so matching results agree for the patterns clients use).
pub(crate) fn compile(source: &str) -> Result<SubscriptionRegex, GroupError> {
    if source.len() > sluice_core::limits::MAX_SUBSCRIPTION_REGEX_BYTES {
        return Err(GroupError::InvalidRegularExpression("the regex is too long".into()));
    }
    let compiled = regex::bytes::RegexBuilder::new(&format!("^(?:{source})$"))
        .unicode(false)
        .size_limit(sluice_core::limits::MAX_SUBSCRIPTION_REGEX_COMPILED_BYTES)
        .build()
        .map_err(|e| GroupError::InvalidRegularExpression(e.to_string()))?;
    Ok(SubscriptionRegex { source: source.to_string(), compiled })
}

#[derive(Debug, Clone)]
pub(crate) struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    /// Subscribed topic names, sorted.
    pub topics: Vec<String>,
    pub regex: Option<SubscriptionRegex>,
    pub assignor: Option<String>,
    pub epoch: MemberEpoch,
    pub previous_epoch: MemberEpoch,
    pub state: MemberState,
    /// Partitions the member owns (it may consume them).
    pub assigned: Assignment,
    /// Partitions the member must give up before others get them.
    pub revoking: Assignment,
    pub last_seen: Instant,
    /// When a member that must revoke partitions is fenced if it has not (its rebalance timeout).
    pub revoke_deadline: Option<Instant>,
    /// Set for a member using the classic protocol (JoinGroup/SyncGroup/Heartbeat, [`classic`]).
    pub classic: Option<classic::ClassicMeta>,
}

impl ConsumerMember {
    fn new(id: String, now: Instant) -> ConsumerMember {
        ConsumerMember {
            id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            topics: Vec::new(),
            regex: None,
            assignor: None,
            epoch: MemberEpoch::JOIN,
            previous_epoch: MemberEpoch::JOIN,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            last_seen: now,
            revoke_deadline: None,
            classic: None,
        }
    }

    /// Whether the member's session (or its revocation, sync or rejoin deadline) ran out.
    fn expired(&self, now: Instant, session: Duration) -> bool {
        match &self.classic {
            Some(c) => c.expired(self.last_seen, now),
            None => now > self.last_seen + session || self.revoke_deadline.is_some_and(|d| now > d),
        }
    }

    /// The source of the member's subscription regex, if any.
    fn regex_source(&self) -> Option<&str> {
        self.regex.as_ref().map(|r| r.source.as_str())
    }

    /// Back to epoch 0 with nothing owned (a rejoin after being fenced).
    fn reset(&mut self) {
        self.epoch = MemberEpoch::JOIN;
        self.previous_epoch = MemberEpoch::JOIN;
        self.state = MemberState::Stable;
        self.assigned.clear();
        self.revoking.clear();
        self.revoke_deadline = None;
    }
}

/// Broker settings a heartbeat needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub session_timeout: Duration,
    /// The interval given to a member with nothing to wait for (`group_consumer_heartbeat_interval_ms`).
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
    pub migration: sluice_core::config::MigrationPolicy,
    /// Regexes are resolved again at least this often (Kafka's
    /// `group.consumer.regex.refresh.interval.ms`), so ACL changes are picked up.
    pub regex_refresh_interval: Duration,
}

impl Settings {
    /// The heartbeat interval a member in `state` is given. A member waiting for partitions
    /// that others still hold (UNRELEASED_PARTITIONS) gets the interval divided by
    /// `CONSUMER_GROUP_RECONCILING_INTERVAL_DIVISOR` (at least the smallest interval accepted,
    /// at most the normal one), so it takes them soon after their owners report them revoked;
    /// every other member gets the normal interval. The Java client adopts the interval of
    /// every answer (`HeartbeatRequestState.updateHeartbeatIntervalMs`). Members that must
    /// revoke need no short interval: the client heartbeats at once when its revocation is done.
    pub fn interval_for(&self, state: MemberState) -> i32 {
        use sluice_core::limits::{
            CONSUMER_GROUP_RECONCILING_INTERVAL_DIVISOR, MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS,
        };
        match state {
            MemberState::UnreleasedPartitions => (self.heartbeat_interval_ms
                / CONSUMER_GROUP_RECONCILING_INTERVAL_DIVISOR)
                .max(MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS)
                .min(self.heartbeat_interval_ms),
            MemberState::Stable | MemberState::UnrevokedPartitions => self.heartbeat_interval_ms,
        }
    }
}

/// What resolving the group's regexes on a heartbeat reads besides the topics (Kafka's request
/// context and metadata image): whether the member that sent the heartbeat may DESCRIBE a
/// topic (Kafka's `TopicRegexResolver` filters with that member's principal and address), and
/// the metadata's topic-creation counter (a resolution older than the newest topic is redone).
pub(crate) struct RegexContext<'a> {
    pub may_describe: &'a dyn Fn(&str) -> bool,
    pub topics_version: u32,
}

/// ConsumerGroupHeartbeat, as the coordinator needs it.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// Owned partitions by topic name (`None`: unchanged since the last heartbeat).
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// The connection's principal (`User:<name>`; empty: `User:ANONYMOUS`) and IP address:
    /// the context the group's regexes are resolved with when this heartbeat resolves them.
    pub principal: String,
    pub client_address: String,
    /// The request version (v1+: the client generates its member id).
    pub version: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment, when it changed or the request was a full one (as Kafka).
    pub assignment: Option<Assignment>,
}

/// ConsumerGroupDescribe of one group id.
#[derive(Debug, Clone)]
pub struct ConsumerDescribeRequest(pub String);

#[derive(Debug, Clone)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    pub assignment: Assignment,
    pub target: Assignment,
    /// The member uses the classic protocol (JoinGroup/SyncGroup/Heartbeat).
    pub classic: bool,
}

#[derive(Debug, Clone)]
pub struct ConsumerGroupDescription {
    pub state: &'static str,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: &'static str,
    pub members: Vec<ConsumerMemberDescription>,
}

/// One KIP-848 consumer group.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConsumerGroup {
    pub epoch: GroupEpoch,
    pub target_epoch: GroupEpoch,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// Metadata of the subscribed topics when the epoch was last bumped.
    pub metadata: Topics,
    /// Each regex a member subscribes with, resolved (Kafka's `ResolvedRegularExpression`):
    /// the topics it matched that the member whose heartbeat resolved it may DESCRIBE. Shared
    /// by every member with the same regex; a regex missing here contributes no topic yet.
    pub resolved: BTreeMap<String, BTreeSet<String>>,
    /// The metadata's topic-creation counter when the regexes were last resolved.
    pub resolved_version: u32,
    /// When they were last resolved (a load counts as a resolution when it brought some).
    pub resolved_at: Option<Instant>,
}

impl ConsumerGroup {
    /// "Empty", "Assigning", "Reconciling" or "Stable" (Kafka's ConsumerGroupState).
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.target_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.target_epoch.as_member() || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor most members ask for (ties: by name), else `uniform`.
    pub fn assignor(&self) -> Assignor {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for a in self.members.values().filter_map(|m| m.assignor.as_deref()) {
            *votes.entry(a).or_default() += 1;
        }
        let best = votes.iter().max_by_key(|(n, v)| (**v, std::cmp::Reverse(**n)));
        best.and_then(|(n, _)| Assignor::from_name(n)).unwrap_or(Assignor::DEFAULT)
    }

    fn static_member(&self, instance: &str) -> Option<&ConsumerMember> {
        self.members.values().find(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// Topics subscribed by some member, by name (for OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC).
    pub fn subscribed_topics(&self, topics: &Topics) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.members.values().flat_map(|m| self.subscription(m, topics)).collect();
        out.extend(self.members.values().flat_map(|m| m.topics.iter().cloned()));
        out
    }

    fn bump(&mut self) {
        self.epoch = self.epoch.bumped();
    }

    /// The existing topics a member subscribes to: its topic names, and the topics its regex
    /// resolved to ([`ConsumerGroup::resolved`], nothing while unresolved).
    fn subscription(&self, m: &ConsumerMember, topics: &Topics) -> BTreeSet<String> {
        let by_regex = m.regex_source().and_then(|r| self.resolved.get(r)).into_iter().flatten();
        m.topics.iter().chain(by_regex).filter(|t| topics.contains_key(*t)).cloned().collect()
    }

    /// How many members subscribe with each regex.
    fn subscribed_regexes(&self) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for r in self.members.values().filter_map(ConsumerMember::regex_source) {
            *out.entry(r).or_default() += 1;
        }
        out
    }

    /// Kafka's `maybeUpdateRegularExpressions` after a heartbeat of member `id` whose regex was
    /// `old`: a regex no other member has is resolved now; otherwise every regex is resolved
    /// again when the last resolution is older than [`REGEX_REFRESH_MIN_INTERVAL`] and a regex
    /// is unresolved, a topic was created since, or the refresh interval passed. Kafka runs the
    /// resolution on an executor and applies it at its next event; here it is synchronous (a
    /// linear-time match of each regex against the topic names). Whether the resolved topics
    /// changed (an epoch bump).
    fn maybe_resolve(
        &mut self,
        id: &str,
        old: Option<&str>,
        topics: &Topics,
        rx: &RegexContext<'_>,
        s: &Settings,
        now: Instant,
    ) -> bool {
        let new = self.members.get(id).and_then(ConsumerMember::regex_source);
        let subscribed = self.subscribed_regexes();
        let mut required = new.is_some() && old != new && new.and_then(|n| subscribed.get(n)) == Some(&1);
        if subscribed.is_empty() {
            self.resolved.clear();
            return false;
        }
        if self.resolved_at.is_some_and(|at| now <= at + REGEX_REFRESH_MIN_INTERVAL) {
            return false;
        }
        required |= subscribed.keys().any(|r| !self.resolved.contains_key(*r))
            || self.resolved_version < rx.topics_version
            || self.resolved_at.is_none_or(|at| now > at + s.regex_refresh_interval);
        required && self.resolve(topics, rx, now)
    }

    /// Resolves every subscribed regex against the topic names and leaves out, from all of
    /// them, each matched topic the heartbeat's sender may not DESCRIBE (Kafka's
    /// `filterTopicDescribeAuthorizedTopics`). Whether some regex's topics changed.
    fn resolve(&mut self, topics: &Topics, rx: &RegexContext<'_>, now: Instant) -> bool {
        let mut regexes: BTreeMap<&str, &SubscriptionRegex> = BTreeMap::new();
        for r in self.members.values().filter_map(|m| m.regex.as_ref()) {
            regexes.entry(r.source.as_str()).or_insert(r);
        }
        let mut out: BTreeMap<String, BTreeSet<String>> =
            regexes.keys().map(|r| (r.to_string(), BTreeSet::new())).collect();
        for name in topics.keys() {
            for (source, r) in &regexes {
                if r.compiled.is_match(name.as_bytes()) {
                    out.entry(source.to_string()).or_default().insert(name.clone());
                }
            }
        }
        let matched: BTreeSet<&String> = out.values().flatten().collect();
        let denied: BTreeSet<String> = matched.into_iter().filter(|t| !(rx.may_describe)(t)).cloned().collect();
        for ts in out.values_mut() {
            ts.retain(|t| !denied.contains(t));
        }
        let changed = out.iter().any(|(r, ts)| self.resolved.get(r).map_or(!ts.is_empty(), |old| old != ts));
        tracing::debug!(regexes = ?out.keys().collect::<Vec<_>>(), topics = topics.len(), denied = denied.len(), changed, "regular expressions resolved");
        self.resolved = out;
        self.resolved_version = rx.topics_version;
        self.resolved_at = Some(now);
        changed
    }

    /// Bumps the epoch when the metadata of the subscribed topics changed. Runs on every
    /// heartbeat, so it copies no topic unless something changed, and looks at a subscription
    /// once for a run of members with the same one (usually every member has the same).
    fn refresh_metadata(&mut self, topics: &Topics) {
        let changed = {
            let mut names: BTreeSet<&str> = BTreeSet::new();
            let mut last: Option<(&[String], Option<&str>)> = None;
            for m in self.members.values() {
                let key = (m.topics.as_slice(), m.regex_source());
                if last == Some(key) {
                    continue;
                }
                last = Some(key);
                names.extend(m.topics.iter().map(String::as_str));
                if let Some(ts) = m.regex_source().and_then(|r| self.resolved.get(r)) {
                    names.extend(ts.iter().map(String::as_str));
                }
            }
            let present: Vec<(&str, &TopicInfo)> =
                names.iter().filter_map(|t| topics.get(*t).map(|i| (*t, i))).collect();
            let same =
                present.len() == self.metadata.len() && present.iter().all(|(t, i)| self.metadata.get(*t) == Some(*i));
            (!same).then(|| present.iter().map(|(t, i)| (t.to_string(), (*i).clone())).collect::<Topics>())
        };
        if let Some(now) = changed {
            self.metadata = now;
            self.bump();
        }
    }

    /// Computes a new target assignment when the group epoch moved past it.
    fn maybe_assign(&mut self) {
        if self.target_epoch >= self.epoch {
            return;
        }
        let subs = self.members.iter().map(|(id, m)| (id.clone(), self.subscription(m, &self.metadata))).collect();
        let counts = self.metadata.iter().map(|(t, i)| (t.clone(), i.partitions)).collect();
        self.target = assignor::assign(self.assignor(), &subs, &counts, &self.target);
        self.target_epoch = self.epoch;
    }

    /// Partitions held (assigned or being revoked) by members other than `id`.
    fn held_by_others(&self, id: &str) -> BTreeSet<TopicPartition> {
        let mut out = BTreeSet::new();
        for m in self.members.values().filter(|m| m.id != id) {
            for (t, ps) in m.assigned.iter().chain(&m.revoking) {
                out.extend(ps.iter().map(|p| (t.clone(), *p)));
            }
        }
        out
    }

    /// One reconciliation step of a member; whether its assignment changed. A member that is
    /// Stable at the target epoch has nothing to do (the step would not change it): answered
    /// without looking at the other members, as most heartbeats are.
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Instant) -> bool {
        let epoch = self.target_epoch.as_member();
        if self.members.get(id).is_none_or(|m| m.state == MemberState::Stable && m.epoch == epoch) {
            return false;
        }
        let held = self.held_by_others(id);
        let partitions = self.target.get(id).cloned().unwrap_or_default();
        let Some(m) = self.members.get_mut(id) else { return false };
        let before = m.assigned.clone();
        reconcile::step(m, &reconcile::Target { partitions: &partitions, epoch, held_by_others: &held, owned, now });
        self.check_invariants();
        self.members.get(id).is_some_and(|m| m.assigned != before)
    }

    /// No partition held by two members (debug builds).
    pub fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            let mut seen = BTreeSet::new();
            for m in self.members.values() {
                for (t, ps) in m.assigned.iter().chain(&m.revoking) {
                    for p in ps {
                        assert!(seen.insert((t.clone(), *p)), "{t}-{p} held by two members");
                    }
                }
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.bump();
            // A regex no member subscribes with any more is forgotten (Kafka's tombstone).
            let used: BTreeSet<String> = self.subscribed_regexes().keys().map(|r| r.to_string()).collect();
            self.resolved.retain(|r, _| used.contains(r));
        }
    }

    /// Removes members whose session or revocation (classic: sync or rejoin) deadline passed:
    /// (whether any was, whether one of them used the consumer protocol).
    pub fn tick(&mut self, now: Instant, session: Duration) -> (bool, bool) {
        let expired: Vec<(String, bool)> = self
            .members
            .values()
            .filter(|m| m.expired(now, session))
            .map(|m| (m.id.clone(), m.classic.is_none()))
            .collect();
        for (id, _) in &expired {
            tracing::info!(member = %id, "consumer group member expired");
            self.remove(id);
        }
        (!expired.is_empty(), expired.iter().any(|(_, consumer)| *consumer))
    }

    pub fn describe(&self) -> ConsumerGroupDescription {
        ConsumerGroupDescription {
            state: self.state_name(),
            epoch: self.epoch.0,
            assignment_epoch: self.target_epoch.0,
            assignor: self.assignor().name(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch.0,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    topics: m.topics.clone(),
                    regex: m.regex.as_ref().map(|r| r.source.clone()),
                    assignment: m.assigned.clone(),
                    target: self.target.get(&m.id).cloned().unwrap_or_default(),
                    classic: m.classic.is_some(),
                })
                .collect(),
        }
    }

    /// OffsetCommit from a member: with members, the committer must be one of them at its
    /// current epoch (STALE_MEMBER_EPOCH otherwise); without, anyone may commit (an admin).
    pub fn validate_commit(&self, member_id: &str, epoch: i32) -> Result<(), GroupError> {
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        self.validate_member(Some(member_id), epoch)
    }

    /// OffsetFetch v9 from a member, and OffsetCommit's check: it must be one of them
    /// (UNKNOWN_MEMBER_ID), at its current epoch (STALE_MEMBER_EPOCH; ILLEGAL_GENERATION for a
    /// classic member, whose generation is its member epoch), as Kafka's
    /// `ConsumerGroup.validateOffsetFetch` / `validateOffsetCommit`.
    pub fn validate_member(&self, member_id: Option<&str>, epoch: i32) -> Result<(), GroupError> {
        let m = member_id.and_then(|id| self.members.get(id)).ok_or(GroupError::UnknownMemberId)?;
        if m.epoch.0 != epoch {
            return Err(if m.classic.is_some() { GroupError::IllegalGeneration } else { GroupError::StaleMemberEpoch });
        }
        Ok(())
    }
}

/// The request's own checks, as Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`.
fn validate(req: &ConsumerHeartbeatRequest) -> Result<(), GroupError> {
    let invalid = |s: &str| Err(GroupError::InvalidRequest(s.to_string()));
    if req.group_id.is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if req.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if req.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    if req.member_id.is_empty() && (req.version >= 1 || req.member_epoch != 0) {
        return invalid("MemberId can't be empty.");
    }
    match MemberEpoch(req.member_epoch) {
        MemberEpoch::JOIN => validate_join(req),
        MemberEpoch::LEAVE_STATIC if req.instance_id.is_none() => invalid("InstanceId can't be null."),
        MemberEpoch(e) if e < MemberEpoch::LEAVE_STATIC.0 => invalid("MemberEpoch is invalid."),
        _ => Ok(()),
    }
    .and_then(|()| match req.server_assignor.as_deref() {
        Some(a) if Assignor::from_name(a).is_none() => Err(GroupError::UnsupportedAssignor(a.to_string())),
        _ => Ok(()),
    })
}

fn validate_join(req: &ConsumerHeartbeatRequest) -> Result<(), GroupError> {
    let invalid = |s: &str| Err(GroupError::InvalidRequest(s.to_string()));
    if req.rebalance_timeout_ms == -1 {
        return invalid("RebalanceTimeoutMs must be provided in first request.");
    }
    if req.owned.as_ref().is_some_and(|o| o.values().any(|ps| !ps.is_empty())) {
        return invalid("TopicPartitions must be empty when (re-)joining.");
    }
    if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
        return invalid("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.");
    }
    Ok(())
}

/// The group of an id, as a consumer group; with `create` (a join), made if missing, an empty
/// classic group becomes one (its offsets kept), and a classic group with members is upgraded
/// if the migration policy allows ([`classic::upgrade`]; GROUP_ID_NOT_FOUND otherwise).
fn group_of<'a>(
    groups: &'a mut Groups,
    id: &str,
    create: bool,
    s: &Settings,
    now: Instant,
) -> Result<&'a mut Group, GroupError> {
    if create && !groups.contains_key(id) {
        groups.insert(id.to_string(), Group::new(id));
    }
    let g = groups.get_mut(id).ok_or(GroupError::GroupIdNotFound)?;
    if g.consumer.is_none() {
        if !create {
            return Err(GroupError::GroupIdNotFound);
        }
        if g.members.is_empty() {
            g.consumer = Some(ConsumerGroup::default());
        } else {
            classic::upgrade(g, s, now)?;
        }
    }
    Ok(g)
}

/// What a heartbeat did: the answer, and whether the group's durable state changed.
#[derive(Debug)]
pub(crate) struct Beat {
    pub response: ConsumerHeartbeatResponse,
    pub changed: bool,
}

/// ConsumerGroupHeartbeat. `new_id` is used when a v0 client joins without a member id.
#[allow(clippy::too_many_arguments)] // the request, the clock and the coordinator's read-only context
pub(crate) fn heartbeat(
    groups: &mut Groups,
    req: ConsumerHeartbeatRequest,
    new_id: String,
    now: Instant,
    topics: &Topics,
    rx: &RegexContext<'_>,
    s: &Settings,
    limits: &Limits,
) -> Result<Beat, GroupError> {
    validate(&req)?;
    let regex = req.subscribed_topic_regex.as_deref().filter(|r| !r.is_empty()).map(compile).transpose()?;
    let epoch = MemberEpoch(req.member_epoch);
    let group = group_of(groups, &req.group_id, epoch == MemberEpoch::JOIN, s, now)?;
    let g = group.consumer.as_mut().ok_or(GroupError::GroupIdNotFound)?;
    let before = record::fingerprint(g, &req.member_id);
    let response = match epoch {
        MemberEpoch::LEAVE | MemberEpoch::LEAVE_STATIC => g.leave(&req)?,
        _ => g.beat(req, regex, new_id, now, (topics, rx), s)?,
    };
    g.check_invariants();
    let changed = record::fingerprint(g, &response.member_id) != before;
    if epoch == MemberEpoch::LEAVE && classic::maybe_downgrade(group, true, s, now, limits) {
        return Ok(Beat { response, changed: true });
    }
    Ok(Beat { response, changed })
}

impl ConsumerGroup {
    fn leave(&mut self, req: &ConsumerHeartbeatRequest) -> Result<ConsumerHeartbeatResponse, GroupError> {
        let m = self.members.get(&req.member_id).ok_or(GroupError::UnknownMemberId)?;
        if req.instance_id.is_some() && m.instance_id != req.instance_id {
            return Err(GroupError::FencedInstanceId);
        }
        let epoch = MemberEpoch(req.member_epoch);
        if epoch == MemberEpoch::LEAVE_STATIC {
            let m = self.members.get_mut(&req.member_id).ok_or(GroupError::UnknownMemberId)?;
            if m.epoch != MemberEpoch::LEAVE_STATIC {
                m.previous_epoch = m.epoch;
                m.epoch = MemberEpoch::LEAVE_STATIC;
            }
        } else {
            self.remove(&req.member_id);
        }
        Ok(ConsumerHeartbeatResponse {
            member_id: req.member_id.clone(),
            member_epoch: epoch.0,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    fn beat(
        &mut self,
        req: ConsumerHeartbeatRequest,
        regex: Option<SubscriptionRegex>,
        new_id: String,
        now: Instant,
        (topics, rx): (&Topics, &RegexContext<'_>),
        s: &Settings,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        let joining = req.member_epoch == MemberEpoch::JOIN.0;
        let start = self.epoch;
        let id = if joining { self.admit(&req, new_id, now, s)? } else { self.check(&req)? };
        let old_regex = self.members.get(&id).and_then(|m| m.regex_source().map(str::to_string));
        if self.update(&id, &req, regex, now) {
            self.bump();
        }
        if self.maybe_resolve(&id, old_regex.as_deref(), topics, rx, s, now) {
            self.bump();
        }
        self.refresh_metadata(topics);
        // A join, a new subscription and new metadata in one heartbeat: one epoch.
        self.epoch = self.epoch.min(start.bumped());
        self.maybe_assign();
        let changed = self.reconcile(&id, req.owned.as_ref(), now);
        let m = self.members.get(&id).ok_or(GroupError::UnknownMemberId)?;
        // Kafka's "full request": a join, or a heartbeat carrying everything (rebalance timeout,
        // subscription and owned partitions), as a client sends after an error.
        let subscription = req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some();
        let full = joining || (req.rebalance_timeout_ms != -1 && subscription && req.owned.is_some());
        Ok(ConsumerHeartbeatResponse {
            member_id: id,
            member_epoch: m.epoch.0,
            heartbeat_interval_ms: s.interval_for(m.state),
            assignment: (changed || full).then(|| m.assigned.clone()),
        })
    }

    /// A heartbeat of a member in the group: known id, its own instance id, a valid epoch
    /// (a lower one only if it is the previous epoch and the member owns no more than its
    /// assignment: a lost response).
    fn check(&self, req: &ConsumerHeartbeatRequest) -> Result<String, GroupError> {
        if let Some(inst) = req.instance_id.as_deref() {
            let m = self.static_member(inst).ok_or(GroupError::UnknownMemberId)?;
            if m.id != req.member_id {
                return Err(GroupError::FencedInstanceId);
            }
        }
        let m = self.members.get(&req.member_id).ok_or(GroupError::UnknownMemberId)?;
        let received = MemberEpoch(req.member_epoch);
        let lost_response =
            received == m.previous_epoch && req.owned.as_ref().is_some_and(|o| reconcile::is_subset(o, &m.assigned));
        if received > m.epoch || (received < m.epoch && !lost_response) {
            return Err(GroupError::FencedMemberEpoch);
        }
        Ok(m.id.clone())
    }

    /// A member joining (epoch 0): a new member, a known one starting over, or a static member
    /// taking back its instance (which must have left with epoch -2).
    fn admit(
        &mut self,
        req: &ConsumerHeartbeatRequest,
        new_id: String,
        now: Instant,
        s: &Settings,
    ) -> Result<String, GroupError> {
        let id = if req.member_id.is_empty() { new_id } else { req.member_id.clone() };
        if let Some(inst) = req.instance_id.as_deref() {
            if let Some(old) = self.static_member(inst).map(|m| (m.id.clone(), m.epoch)) {
                return self.replace_static(old, id);
            }
        }
        if let Some(m) = self.members.get_mut(&id) {
            m.reset();
            return Ok(id);
        }
        if self.members.len() >= s.max_size {
            return Err(GroupError::GroupMaxSizeReached);
        }
        let mut m = ConsumerMember::new(id.clone(), now);
        m.instance_id = req.instance_id.clone();
        self.members.insert(id.clone(), m);
        self.bump();
        Ok(id)
    }

    fn replace_static(&mut self, (old_id, old_epoch): (String, MemberEpoch), id: String) -> Result<String, GroupError> {
        if old_id == id {
            self.members.get_mut(&id).ok_or(GroupError::UnknownMemberId)?.reset();
            return Ok(id);
        }
        if old_epoch != MemberEpoch::LEAVE_STATIC {
            return Err(GroupError::UnreleasedInstanceId);
        }
        let mut m = self.members.remove(&old_id).ok_or(GroupError::UnknownMemberId)?;
        m.id = id.clone();
        m.epoch = m.previous_epoch;
        self.members.insert(id.clone(), m);
        if let Some(t) = self.target.remove(&old_id) {
            self.target.insert(id.clone(), t);
        }
        Ok(id)
    }

    /// Takes what the heartbeat changed; whether the subscription or assignor did (an epoch bump).
    fn update(
        &mut self,
        id: &str,
        req: &ConsumerHeartbeatRequest,
        regex: Option<SubscriptionRegex>,
        now: Instant,
    ) -> bool {
        let Some(m) = self.members.get_mut(id) else { return false };
        m.last_seen = now;
        m.classic = None;
        m.client_id.clone_from(&req.client_id);
        m.client_host.clone_from(&req.client_host);
        if req.rack_id.is_some() {
            m.rack_id.clone_from(&req.rack_id);
        }
        if req.rebalance_timeout_ms >= 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        let mut changed = false;
        if let Some(names) = &req.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            changed |= names != m.topics;
            m.topics = names;
        }
        if req.subscribed_topic_regex.is_some() {
            changed |= regex != m.regex;
            m.regex = regex;
        }
        if req.server_assignor.is_some() && req.server_assignor != m.assignor {
            m.assignor.clone_from(&req.server_assignor);
            changed = true;
        }
        changed
    }
}

/// ConsumerGroupDescribe: GROUP_ID_NOT_FOUND for a missing or classic group, as Kafka.
pub(crate) fn describe(groups: &Groups, id: &str) -> Result<ConsumerGroupDescription, GroupError> {
    let g = groups.get(id).and_then(|g| g.consumer.as_ref()).ok_or(GroupError::GroupIdNotFound)?;
    Ok(g.describe())
}

/// The sweep of consumer groups: the groups whose members expired, with their new record (a
/// tombstone, empty, when the group was downgraded to a classic group). `settings`: a group's
/// settings by id (its group configs over the broker's).
pub(crate) fn tick(
    groups: &mut Groups,
    now: Instant,
    settings: &dyn Fn(&str) -> Settings,
    limits: &Limits,
) -> Vec<(String, Vec<u8>)> {
    let mut changed = Vec::new();
    for g in groups.values_mut() {
        let Some(c) = g.consumer.as_mut() else { continue };
        let s = settings(&g.id);
        let (expired, consumer_member) = c.tick(now, s.session_timeout);
        if !expired {
            continue;
        }
        if classic::maybe_downgrade(g, consumer_member, &s, now, limits) {
            changed.push((g.id.clone(), Vec::new()));
        } else if let Some(c) = g.consumer.as_ref() {
            changed.push((g.id.clone(), record::encode(c)));
        }
    }
    changed
}

#[cfg(test)]
mod tests;
