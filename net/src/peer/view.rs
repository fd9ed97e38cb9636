//! One shard's view of the cluster: which members are live and where their clients connect.
//!
//! Contract: shard-local (no locks, no sharing between threads): each shard's copy is updated
//! only by messages its own links receive (a peer's `Welcome` gives its client address, every
//! `HeartbeatAck` renews its session). A member is live while its last message is at most
//! `session_timeout` old (Raft's failover follows that); it stays *listed* to clients while
//! heard within `PEER_LISTED_SESSIONS` sessions, so one late heartbeat of a busy broker does
//! not drop it from Metadata. This broker is always live. [`ClusterView::brokers`] lists the
//! listed members in node-id order, which is what Metadata, DescribeCluster and FindCoordinator
//! answer, and [`ClusterView::controller`] the controller they name. Borrows never cross an
//! `.await`.

use sluice_core::cluster::{NodeId, Voter};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A live broker as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
}

/// What this shard knows about one other member.
#[derive(Debug, Clone, Default)]
struct Member {
    /// The client address from its `Welcome` (unknown until the first handshake).
    client: Option<(String, u16)>,
    /// When a message from it last arrived.
    last_heard: Option<Instant>,
    /// Liveness as last reported by [`ClusterView::transitions`].
    reported_live: bool,
}

/// A change of liveness, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Online(NodeId),
    Offline(NodeId),
}

/// See the module docs.
pub struct ClusterView {
    me: BrokerEndpoint,
    session_timeout: Duration,
    members: RefCell<BTreeMap<NodeId, Member>>,
}

impl ClusterView {
    /// A view of `voters` (this broker among them or not: a lone broker lists none).
    pub fn new(me: BrokerEndpoint, voters: &[Voter], session_timeout: Duration) -> ClusterView {
        let members = voters.iter().filter(|v| v.id != me.node_id).map(|v| (v.id, Member::default())).collect();
        ClusterView { me, session_timeout, members: RefCell::new(members) }
    }

    /// The controller as clients are told (Metadata's and DescribeCluster's controller id):
    /// the metadata log's leader when known (shard 0 follows it), else this broker (a lone
    /// broker is its own controller; a cluster without a leader yet names this broker, whose
    /// NOT_CONTROLLER answers make clients ask again).
    pub fn controller(&self) -> NodeId {
        sluice_shard::admin::cluster::controller().map_or(self.me.node_id, NodeId)
    }

    /// Every cluster member, live or not, this broker among them, in node-id order.
    pub fn member_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.members.borrow().keys().copied().collect();
        v.push(self.me.node_id);
        v.sort();
        v.dedup();
        v
    }

    pub fn me(&self) -> &BrokerEndpoint {
        &self.me
    }

    /// Records a handshake with `node` (its client address) and renews its session.
    pub fn welcomed(&self, node: NodeId, host: String, port: u16, now: Instant) {
        let mut members = self.members.borrow_mut();
        if let Some(m) = members.get_mut(&node) {
            m.client = Some((host, port));
            m.last_heard = Some(now);
        }
    }

    /// Renews `node`'s session (a heartbeat answered).
    pub fn heard(&self, node: NodeId, now: Instant) {
        if let Some(m) = self.members.borrow_mut().get_mut(&node) {
            m.last_heard = Some(now);
        }
    }

    /// Whether `node` is live at `now`.
    pub fn is_live(&self, node: NodeId, now: Instant) -> bool {
        node == self.me.node_id || self.members.borrow().get(&node).is_some_and(|m| self.live(m, now))
    }

    fn live(&self, m: &Member, now: Instant) -> bool {
        m.client.is_some() && m.last_heard.is_some_and(|t| now.saturating_duration_since(t) <= self.session_timeout)
    }

    /// Whether clients are told `node` is up (Metadata's brokers, not an offline replica):
    /// heard within `PEER_LISTED_SESSIONS` sessions. Raft's failover follows [`Self::is_live`]
    /// (one session); a busy broker whose heartbeats were late once stays listed, as a Kafka
    /// broker stays unfenced until its longer session lapses.
    pub fn is_listed(&self, node: NodeId, now: Instant) -> bool {
        node == self.me.node_id || self.members.borrow().get(&node).is_some_and(|m| self.listed(m, now))
    }

    fn listed(&self, m: &Member, now: Instant) -> bool {
        let grace = self.session_timeout.saturating_mul(sluice_core::limits::PEER_LISTED_SESSIONS);
        m.client.is_some() && m.last_heard.is_some_and(|t| now.saturating_duration_since(t) <= grace)
    }

    /// Listed brokers ([`Self::is_listed`]), this one included, in node-id order.
    pub fn brokers(&self, now: Instant) -> Vec<BrokerEndpoint> {
        let members = self.members.borrow();
        let mut out: Vec<BrokerEndpoint> = members
            .iter()
            .filter(|(_, m)| self.listed(m, now))
            .filter_map(|(id, m)| m.client.clone().map(|(host, port)| BrokerEndpoint { node_id: *id, host, port }))
            .collect();
        out.push(self.me.clone());
        out.sort_by_key(|b| b.node_id);
        out
    }

    /// Liveness changes since the last call (for logs and metrics).
    pub fn transitions(&self, now: Instant) -> Vec<Transition> {
        let mut members = self.members.borrow_mut();
        let mut out = Vec::new();
        for (id, m) in members.iter_mut() {
            let live = m.client.is_some()
                && m.last_heard.is_some_and(|t| now.saturating_duration_since(t) <= self.session_timeout);
            if live != m.reported_live {
                m.reported_live = live;
                out.push(if live { Transition::Online(*id) } else { Transition::Offline(*id) });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ClusterView {
        let voters: Vec<Voter> = (0..3).map(|i| Voter { id: NodeId(i), host: "127.0.0.1".into(), port: 1 }).collect();
        let me = BrokerEndpoint { node_id: NodeId(1), host: "127.0.0.1".into(), port: 9092 };
        ClusterView::new(me, &voters, Duration::from_millis(100))
    }

    #[test]
    fn a_member_is_live_only_after_a_handshake_and_within_its_session() {
        let v = view();
        let t0 = Instant::now();
        assert_eq!(v.brokers(t0).iter().map(|b| b.node_id.0).collect::<Vec<_>>(), vec![1]);
        v.heard(NodeId(0), t0); // no handshake yet: address unknown
        assert!(!v.is_live(NodeId(0), t0));
        v.welcomed(NodeId(0), "127.0.0.1".into(), 9000, t0);
        v.welcomed(NodeId(2), "127.0.0.1".into(), 9002, t0);
        assert_eq!(v.brokers(t0).iter().map(|b| b.node_id.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(v.transitions(t0), vec![Transition::Online(NodeId(0)), Transition::Online(NodeId(2))]);
        assert!(v.transitions(t0).is_empty());
        let later = t0 + Duration::from_millis(150);
        v.heard(NodeId(2), later);
        assert!(!v.is_live(NodeId(0), later), "one session missed: not live for Raft");
        assert!(v.is_listed(NodeId(0), later), "still listed to clients within the grace");
        let gone = t0 + Duration::from_millis(100 * u64::from(sluice_core::limits::PEER_LISTED_SESSIONS) + 50);
        v.heard(NodeId(2), gone);
        assert_eq!(
            v.brokers(gone).iter().map(|b| (b.node_id.0, b.port)).collect::<Vec<_>>(),
            vec![(1, 9092), (2, 9002)]
        );
        assert_eq!(v.transitions(later), vec![Transition::Offline(NodeId(0))]);
        v.heard(NodeId(0), later);
        assert!(v.is_live(NodeId(0), later));
        assert_eq!(v.transitions(later), vec![Transition::Online(NodeId(0))]);
    }

    #[test]
    fn strangers_are_ignored_and_this_broker_is_always_live() {
        let v = view();
        let t0 = Instant::now();
        v.welcomed(NodeId(7), "h".into(), 1, t0);
        assert!(!v.is_live(NodeId(7), t0));
        assert!(v.is_live(NodeId(1), t0 + Duration::from_secs(3600)));
    }
}
