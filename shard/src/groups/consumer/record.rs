//! The durable form of a KIP-848 consumer group: one `__consumer_offsets` record per group
//! (key `2u8 | group`, see [`super::super::store`]) holding the whole group — epochs, the
//! subscribed topics' metadata, every member (subscription, epochs, reconciliation state,
//! assigned and pending-revocation partitions) and the target assignment. Kafka writes several
//! record kinds (ConsumerGroupMetadata, member metadata, target assignment, current member
//! assignment); one snapshot per change is simpler and compaction keeps only the last.
//!
//! ```text
//! group:      version u8 (=0) | epoch i32 | target epoch i32 | topics (u32 n, [name, id 16B, partitions i32])
//!             | members (u32 n, [member]) | target (u32 n, [member id, assignment])
//!             | v2+: resolved regexes (u32 n, [regex, u32 m, [topic]]) | topic counter u32
//! member:     id | instance? | rack? | client id | client host | rebalance timeout i32
//!             | topic names (u32 n, [name]) | regex? | assignor? | epoch i32 | previous epoch i32
//!             | state u8 | assigned | revoking | v1+: classic (u8 0 | u8 1 + session timeout i32
//!             | protocols (u32 n, [name, metadata (u32 len + bytes)]))
//! assignment: u32 n, [topic, u32 m, [partition i32]]
//! string: u32 len + UTF-8; optional (?): u8 0 | u8 1 + string.  Big-endian.
//! ```
//!
//! Contract: [`decode`] never panics on any bytes and returns `None` for anything it cannot
//! read whole; counts are checked against the bytes left before allocating. Session timers
//! restart at load (`now`): a member's session runs from the coordinator's start. The regexes'
//! resolution (Kafka persists it too, as ConsumerGroupRegularExpression records) is kept with
//! its topic counter; its time is not, so a loaded resolution counts as made at load.

use super::classic::ClassicMeta;
use super::{
    compile, Assignment, ConsumerGroup, ConsumerMember, GroupEpoch, MemberEpoch, MemberState, TopicInfo, Topics,
};
use std::collections::BTreeMap;
use std::time::Instant;

/// Version 1 adds the classic protocol metadata of members (mixed groups), version 2 the
/// resolved regexes; 0 and 1 are still read.
const VERSION: u8 = 2;

struct W(Vec<u8>);

impl W {
    fn u32(&mut self, n: usize) {
        // Counts of in-memory collections bounded by limits (members, partitions, name lengths).
        self.0.extend_from_slice(&u32::try_from(n).expect("a count below 2^32").to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.str(s);
            }
        }
    }
    fn assignment(&mut self, a: &Assignment) {
        self.u32(a.len());
        for (t, ps) in a {
            self.str(t);
            self.u32(ps.len());
            for p in ps {
                self.i32(*p);
            }
        }
    }
    fn member(&mut self, m: &ConsumerMember) {
        self.str(&m.id);
        self.opt(m.instance_id.as_deref());
        self.opt(m.rack_id.as_deref());
        self.str(&m.client_id);
        self.str(&m.client_host);
        self.i32(m.rebalance_timeout_ms);
        self.u32(m.topics.len());
        for t in &m.topics {
            self.str(t);
        }
        self.opt(m.regex.as_ref().map(|r| r.source.as_str()));
        self.opt(m.assignor.as_deref());
        self.i32(m.epoch.0);
        self.i32(m.previous_epoch.0);
        self.0.push(m.state.code());
        self.assignment(&m.assigned);
        self.assignment(&m.revoking);
        match &m.classic {
            None => self.0.push(0),
            Some(c) => {
                self.0.push(1);
                self.i32(c.session_timeout_ms);
                self.u32(c.protocols.len());
                for (name, meta) in &c.protocols {
                    self.str(name);
                    self.u32(meta.len());
                    self.0.extend_from_slice(meta);
                }
            }
        }
    }
}

/// The record value of a group.
pub(crate) fn encode(g: &ConsumerGroup) -> Vec<u8> {
    let mut w = W(vec![VERSION]);
    w.i32(g.epoch.0);
    w.i32(g.target_epoch.0);
    w.u32(g.metadata.len());
    for (name, info) in &g.metadata {
        w.str(name);
        w.0.extend_from_slice(&info.id);
        w.i32(info.partitions);
    }
    w.u32(g.members.len());
    for m in g.members.values() {
        w.member(m);
    }
    w.u32(g.target.len());
    for (id, a) in &g.target {
        w.str(id);
        w.assignment(a);
    }
    w.u32(g.resolved.len());
    for (regex, topics) in &g.resolved {
        w.str(regex);
        w.u32(topics.len());
        for t in topics {
            w.str(t);
        }
    }
    w.0.extend_from_slice(&g.resolved_version.to_be_bytes());
    w.0
}

/// What a heartbeat of `member` can change in the record: the epochs, the member count and
/// that member (a heartbeat changes no other member; the target only with the epoch). Cheaper
/// than [`encode`] for telling whether a heartbeat must write.
pub(crate) fn fingerprint(g: &ConsumerGroup, member: &str) -> Vec<u8> {
    let mut w = W(Vec::new());
    w.i32(g.epoch.0);
    w.i32(g.target_epoch.0);
    w.u32(g.members.len());
    if let Some(m) = g.members.get(member) {
        w.member(m);
    }
    w.0
}

struct R<'a>(&'a [u8]);

impl R<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes(b.try_into().expect("4")))
    }
    /// A count, refused when even one byte per item would not fit in what is left.
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(u32::from_be_bytes(self.take(4)?.try_into().expect("4"))).ok()?;
        (n <= self.0.len()).then_some(n)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.count()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn opt(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.str().map(Some),
            _ => None,
        }
    }
    fn assignment(&mut self) -> Option<Assignment> {
        let mut a = Assignment::new();
        for _ in 0..self.count()? {
            let t = self.str()?;
            let mut ps = std::collections::BTreeSet::new();
            for _ in 0..self.count()? {
                ps.insert(self.i32()?);
            }
            a.insert(t, ps);
        }
        Some(a)
    }
    fn classic(&mut self) -> Option<Option<ClassicMeta>> {
        match self.u8()? {
            0 => Some(None),
            1 => {
                let session_timeout_ms = self.i32()?;
                let mut protocols = Vec::new();
                for _ in 0..self.count()? {
                    let name = self.str()?;
                    let n = self.count()?;
                    protocols.push((name, bytes::Bytes::copy_from_slice(self.take(n)?)));
                }
                Some(Some(ClassicMeta { session_timeout_ms, protocols, join_deadline: None, sync_deadline: None }))
            }
            _ => None,
        }
    }
    fn member(&mut self, now: Instant, version: u8) -> Option<ConsumerMember> {
        let mut m = ConsumerMember::new(self.str()?, now);
        m.instance_id = self.opt()?;
        m.rack_id = self.opt()?;
        m.client_id = self.str()?;
        m.client_host = self.str()?;
        m.rebalance_timeout_ms = self.i32()?;
        for _ in 0..self.count()? {
            m.topics.push(self.str()?);
        }
        // A regex that compiled when taken compiles again; one that no longer does is dropped.
        m.regex = self.opt()?.and_then(|s| compile(&s).ok());
        m.assignor = self.opt()?;
        m.epoch = MemberEpoch(self.i32()?);
        m.previous_epoch = MemberEpoch(self.i32()?);
        m.state = MemberState::from_code(self.u8()?)?;
        m.assigned = self.assignment()?;
        m.revoking = self.assignment()?;
        if version >= 1 {
            m.classic = self.classic()?;
        }
        if m.classic.is_none() && m.state == MemberState::UnrevokedPartitions {
            let timeout = u64::try_from(m.rebalance_timeout_ms).unwrap_or(0);
            m.revoke_deadline = Some(now + std::time::Duration::from_millis(timeout));
        }
        Some(m)
    }
}

/// A group from its record value; `now` starts the members' sessions.
pub(crate) fn decode(bytes: &[u8], now: Instant) -> Option<ConsumerGroup> {
    let mut r = R(bytes);
    let version = r.u8()?;
    if version > VERSION {
        return None;
    }
    let mut g = ConsumerGroup { epoch: GroupEpoch(r.i32()?), target_epoch: GroupEpoch(r.i32()?), ..Default::default() };
    let mut metadata = Topics::new();
    for _ in 0..r.count()? {
        let name = r.str()?;
        let id: [u8; 16] = r.take(16)?.try_into().ok()?;
        metadata.insert(name, TopicInfo { id, partitions: r.i32()? });
    }
    g.metadata = metadata;
    for _ in 0..r.count()? {
        let m = r.member(now, version)?;
        g.members.insert(m.id.clone(), m);
    }
    let mut target = BTreeMap::new();
    for _ in 0..r.count()? {
        let id = r.str()?;
        target.insert(id, r.assignment()?);
    }
    g.target = target;
    if version >= 2 {
        for _ in 0..r.count()? {
            let regex = r.str()?;
            let mut topics = std::collections::BTreeSet::new();
            for _ in 0..r.count()? {
                topics.insert(r.str()?);
            }
            g.resolved.insert(regex, topics);
        }
        g.resolved_version = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
        g.resolved_at = (!g.resolved.is_empty()).then_some(now);
    }
    r.0.is_empty().then_some(g)
}
