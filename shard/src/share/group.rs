//! Share-group membership (KIP-932) on the group's coordinator shard: ShareGroupHeartbeat and
//! ShareGroupDescribe decided without I/O.
//!
//! Contract: a share group has a group epoch, bumped whenever a member joins or leaves or the
//! subscribed topics or their partition counts change; every heartbeat brings a member to the
//! group epoch at once (share groups need no revocation: several members may consume one
//! partition, records are handed out by the share-partitions). The assignment is computed
//! from the sorted member ids: with at least as many partitions as members, the partitions are
//! spread round robin; with more members than partitions, member `i` gets partition
//! `i mod partitions`, so every partition has a member and members share partitions evenly.
//! A member silent for the session timeout is removed.
//!
//! Stored form ([`ShareGroup::encode`], the value of the group's `4u8 | group` record in
//! `__consumer_offsets`, written by the coordinator whenever a heartbeat changed it, as Kafka
//! writes its share group metadata records there): version u8 (1), group epoch i32, the
//! topics seen (count u32, then name (u16 length, bytes), partition count i32), the members
//! (count u32, then id, rack (u8 0: none, 1: then the string), client id, client host, topics (count u32,
//! names), member epoch i32, assignment (count u32, then topic, partitions (count u32, i32
//! each)))). Strings have a u16 length unless said; every count is checked against the bytes
//! left before anything is allocated. A loaded member's session restarts at the load.

use crate::groups::{Assignment, GroupError};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Topics the assignment can use: name → partition count.
pub type TopicCounts = BTreeMap<String, i32>;

#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone)]
pub struct HeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent when it changed for this member (or on join).
    pub assignment: Option<Assignment>,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub assignment: Assignment,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: &'static str,
    pub group_epoch: i32,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone)]
struct Member {
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    topics: Vec<String>,
    epoch: i32,
    assignment: Assignment,
    last_seen: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct ShareGroup {
    epoch: i32,
    members: BTreeMap<String, Member>,
    /// The topic metadata the current assignment was computed with.
    topics_seen: TopicCounts,
}

/// Settings a heartbeat needs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub session_timeout: Duration,
    pub heartbeat_interval_ms: i32,
    pub max_members: usize,
}

impl ShareGroup {
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_ids(&self) -> impl Iterator<Item = &String> {
        self.members.keys()
    }

    /// Removes members silent for longer than the session timeout; returns them.
    pub fn expire(&mut self, now: Instant, s: &Settings, topics: &TopicCounts) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > s.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
        }
        if !gone.is_empty() {
            self.rebalance(topics);
        }
        gone
    }

    /// One heartbeat. Returns the answer and the members that left (whose acquired records
    /// the share-partitions release).
    pub fn heartbeat(
        &mut self,
        req: &HeartbeatRequest,
        now: Instant,
        s: &Settings,
        topics: &TopicCounts,
    ) -> Result<(HeartbeatResponse, Vec<String>), GroupError> {
        if req.member_id.is_empty() {
            return Err(GroupError::InvalidRequest("MemberId can't be empty.".into()));
        }
        let mut left = self.expire(now, s, topics);
        if req.member_epoch == -1 {
            if self.members.remove(&req.member_id).is_some() {
                self.rebalance(topics);
                left.push(req.member_id.clone());
            }
            let resp = HeartbeatResponse {
                member_id: req.member_id.clone(),
                member_epoch: -1,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
            return Ok((resp, left));
        }
        let known = self.members.contains_key(&req.member_id);
        match (known, req.member_epoch) {
            (false, 0) => {
                if self.members.len() >= s.max_members {
                    return Err(GroupError::GroupMaxSizeReached);
                }
                let Some(names) = &req.subscribed_topic_names else {
                    return Err(GroupError::InvalidRequest(
                        "SubscribedTopicNames must be set in first request.".into(),
                    ));
                };
                let mut names = names.clone();
                names.sort();
                names.dedup();
                let m = Member {
                    rack_id: req.rack_id.clone(),
                    client_id: req.client_id.clone(),
                    client_host: req.client_host.clone(),
                    topics: names,
                    epoch: 0,
                    assignment: Assignment::new(),
                    last_seen: now,
                };
                self.members.insert(req.member_id.clone(), m);
                self.rebalance(topics);
            }
            (false, _) => return Err(GroupError::UnknownMemberId),
            (true, e) => {
                let m = self.members.get_mut(&req.member_id).expect("known");
                if e != 0 && e != m.epoch {
                    return Err(GroupError::FencedMemberEpoch);
                }
                m.last_seen = now;
                let mut changed = false;
                if let Some(names) = &req.subscribed_topic_names {
                    let mut names = names.clone();
                    names.sort();
                    names.dedup();
                    if names != m.topics {
                        m.topics = names;
                        changed = true;
                    }
                }
                if changed || &self.topics_seen != topics || e == 0 {
                    self.rebalance(topics);
                }
            }
        }
        let m = self.members.get_mut(&req.member_id).expect("present");
        let bumped = m.epoch != req.member_epoch || req.member_epoch == 0;
        let resp = HeartbeatResponse {
            member_id: req.member_id.clone(),
            member_epoch: m.epoch,
            heartbeat_interval_ms: s.heartbeat_interval_ms,
            assignment: bumped.then(|| m.assignment.clone()),
        };
        Ok((resp, left))
    }

    /// Recomputes every member's assignment and brings the changed ones to a new group epoch.
    fn rebalance(&mut self, topics: &TopicCounts) {
        self.topics_seen = topics.clone();
        let wanted: BTreeSet<&String> = self.members.values().flat_map(|m| m.topics.iter()).collect();
        // Each partition (in topic order) with the members subscribed to its topic.
        let mut targets: BTreeMap<String, Assignment> =
            self.members.keys().map(|k| (k.clone(), Assignment::new())).collect();
        for name in wanted {
            let Some(&count) = topics.get(name) else { continue };
            let subs: Vec<&String> =
                self.members.iter().filter(|(_, m)| m.topics.contains(name)).map(|(k, _)| k).collect();
            if subs.is_empty() || count <= 0 {
                continue;
            }
            let n = usize::try_from(count).expect("positive");
            if n >= subs.len() {
                for p in 0..n {
                    let who = subs[p % subs.len()];
                    targets.get_mut(who).expect("member").entry(name.clone()).or_default().insert(partition_index(p));
                }
            } else {
                for (i, who) in subs.iter().enumerate() {
                    targets
                        .get_mut(*who)
                        .expect("member")
                        .entry(name.clone())
                        .or_default()
                        .insert(partition_index(i % n));
                }
            }
        }
        let changed = self.members.iter().any(|(k, m)| targets.get(k) != Some(&m.assignment) || m.epoch == 0);
        if changed || self.epoch == 0 {
            self.epoch = self.epoch.saturating_add(1);
        }
        for (k, m) in self.members.iter_mut() {
            let t = targets.remove(k).unwrap_or_default();
            if t != m.assignment || m.epoch == 0 {
                m.assignment = t;
                m.epoch = self.epoch;
            }
        }
    }

    pub fn describe(&self) -> GroupDescription {
        GroupDescription {
            state: self.state(),
            group_epoch: self.epoch,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed: m.topics.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The partitions any member subscribes to (for offsets descriptions).
    pub fn subscribed(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.topics.iter().cloned()).collect()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&u16::try_from(b.len()).expect("cut to u16::MAX").to_be_bytes());
    out.extend_from_slice(b);
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).expect("counts bounded by the group size").to_be_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?));
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    /// A count of items of at least `min` bytes each, checked against the bytes left.
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = usize::try_from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)).ok()?;
        (n.checked_mul(min)? <= self.0.len()).then_some(n)
    }
}

const RECORD_VERSION: u8 = 1;

impl ShareGroup {
    /// The stored form (module docs); the members' last heartbeat times are not in it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        out.extend_from_slice(&self.epoch.to_be_bytes());
        put_count(&mut out, self.topics_seen.len());
        for (name, n) in &self.topics_seen {
            put_str(&mut out, name);
            out.extend_from_slice(&n.to_be_bytes());
        }
        put_count(&mut out, self.members.len());
        for (id, m) in &self.members {
            put_str(&mut out, id);
            match &m.rack_id {
                None => out.push(0),
                Some(r) => {
                    out.push(1);
                    put_str(&mut out, r);
                }
            }
            put_str(&mut out, &m.client_id);
            put_str(&mut out, &m.client_host);
            put_count(&mut out, m.topics.len());
            for t in &m.topics {
                put_str(&mut out, t);
            }
            out.extend_from_slice(&m.epoch.to_be_bytes());
            put_count(&mut out, m.assignment.len());
            for (t, parts) in &m.assignment {
                put_str(&mut out, t);
                put_count(&mut out, parts.len());
                for p in parts {
                    out.extend_from_slice(&p.to_be_bytes());
                }
            }
        }
        out
    }

    /// Reads a stored form; every member counts as seen at `now`. None: unreadable.
    pub fn decode(b: &[u8], now: Instant) -> Option<ShareGroup> {
        let mut r = Reader(b);
        if r.take(1)?[0] != RECORD_VERSION {
            return None;
        }
        let epoch = r.i32()?;
        let mut topics_seen = TopicCounts::new();
        for _ in 0..r.count(6)? {
            let name = r.str()?;
            topics_seen.insert(name, r.i32()?);
        }
        let mut members = BTreeMap::new();
        for _ in 0..r.count(2 + 1 + 2 + 2 + 4 + 4 + 4)? {
            let id = r.str()?;
            let rack_id = match r.take(1)?[0] {
                0 => None,
                1 => Some(r.str()?),
                _ => return None,
            };
            let client_id = r.str()?;
            let client_host = r.str()?;
            let mut topics = Vec::new();
            for _ in 0..r.count(2)? {
                topics.push(r.str()?);
            }
            let member_epoch = r.i32()?;
            let mut assignment = Assignment::new();
            for _ in 0..r.count(2 + 4)? {
                let t = r.str()?;
                let mut parts = BTreeSet::new();
                for _ in 0..r.count(4)? {
                    parts.insert(r.i32()?);
                }
                assignment.insert(t, parts);
            }
            let m = Member { rack_id, client_id, client_host, topics, epoch: member_epoch, assignment, last_seen: now };
            members.insert(id, m);
        }
        r.0.is_empty().then_some(ShareGroup { epoch, members, topics_seen })
    }
}

/// A partition index below a topic's partition count (an i32).
fn partition_index(p: usize) -> i32 {
    i32::try_from(p).expect("below the partition count, an i32")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings { session_timeout: Duration::from_secs(45), heartbeat_interval_ms: 5000, max_members: 10 }
    }

    fn join(id: &str, topics: &[&str]) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: id.into(),
            member_epoch: 0,
            rack_id: None,
            subscribed_topic_names: Some(topics.iter().map(|s| s.to_string()).collect()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    #[test]
    fn members_share_a_single_partition() {
        let now = Instant::now();
        let topics: TopicCounts = [("t".to_string(), 1)].into();
        let mut g = ShareGroup::default();
        let (a, _) = g.heartbeat(&join("a", &["t"]), now, &settings(), &topics).unwrap();
        let (b, _) = g.heartbeat(&join("b", &["t"]), now, &settings(), &topics).unwrap();
        let one: Assignment = [("t".to_string(), [0].into())].into();
        assert_eq!(a.assignment, Some(one.clone()));
        assert_eq!(b.assignment, Some(one));
        // A heartbeat at the current epoch gets no assignment.
        let mut hb = join("a", &["t"]);
        hb.member_epoch = a.member_epoch;
        hb.subscribed_topic_names = None;
        let (a2, _) = g.heartbeat(&hb, now, &settings(), &topics).unwrap();
        assert_eq!(a2.assignment, None);
        assert_eq!(a2.member_epoch, a.member_epoch);
        // A wrong epoch is fenced, an unknown member refused.
        hb.member_epoch = 99;
        assert_eq!(g.heartbeat(&hb, now, &settings(), &topics).unwrap_err(), GroupError::FencedMemberEpoch);
        hb.member_id = "zz".into();
        assert_eq!(g.heartbeat(&hb, now, &settings(), &topics).unwrap_err(), GroupError::UnknownMemberId);
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_damage() {
        let now = Instant::now();
        let topics: TopicCounts = [("t".to_string(), 3)].into();
        let mut g = ShareGroup::default();
        g.heartbeat(&join("a", &["t"]), now, &settings(), &topics).unwrap();
        let mut b = join("b", &["t"]);
        b.rack_id = Some("r1".into());
        g.heartbeat(&b, now, &settings(), &topics).unwrap();
        let bytes = g.encode();
        let back = ShareGroup::decode(&bytes, now).expect("readable");
        assert_eq!(back.encode(), bytes);
        let (d, e) = (g.describe(), back.describe());
        assert_eq!((d.group_epoch, d.members.len()), (e.group_epoch, e.members.len()));
        assert_eq!(e.members[1].rack_id.as_deref(), Some("r1"));
        assert_eq!(e.members[0].assignment, d.members[0].assignment);
        for cut in 0..bytes.len() {
            assert!(ShareGroup::decode(&bytes[..cut], now).is_none(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(ShareGroup::decode(&huge, now).is_none());
        // A loaded member keeps its epoch: its next heartbeat is not fenced.
        let mut hb = join("a", &[]);
        hb.member_epoch = d.members[0].member_epoch;
        hb.subscribed_topic_names = None;
        let mut loaded = back;
        assert!(loaded.heartbeat(&hb, now, &settings(), &topics).is_ok());
    }

    #[test]
    fn partitions_spread_over_members_and_leavers_go() {
        let now = Instant::now();
        let topics: TopicCounts = [("t".to_string(), 4)].into();
        let mut g = ShareGroup::default();
        g.heartbeat(&join("a", &["t"]), now, &settings(), &topics).unwrap();
        g.heartbeat(&join("b", &["t"]), now, &settings(), &topics).unwrap();
        let d = g.describe();
        let all: Vec<BTreeSet<i32>> = d.members.iter().map(|m| m.assignment["t"].clone()).collect();
        assert_eq!(all, vec![[0, 2].into(), [1, 3].into()]);
        let mut leave = join("b", &[]);
        leave.member_epoch = -1;
        let (_, left) = g.heartbeat(&leave, now, &settings(), &topics).unwrap();
        assert_eq!(left, vec!["b".to_string()]);
        assert_eq!(g.describe().members[0].assignment["t"].len(), 4);
        // Silent members expire.
        let gone = g.expire(now + Duration::from_secs(46), &settings(), &topics);
        assert_eq!(gone, vec!["a".to_string()]);
        assert_eq!(g.state(), "Empty");
    }
}
