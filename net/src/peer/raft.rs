//! Glue between the broker-to-broker transport and the shard's replication runtime
//! (`sluice_shard::replica`): the runtime's transport over this shard's links, the inbound
//! handler of `PayloadKind::Raft` frames, the metadata log opened on shard 0, and a test-only
//! probe of the metadata log.
//!
//! Contract: Raft frames are queued with `try_send` or dropped (Raft retransmits); a received
//! Raft frame goes to this shard's runtime (the transport already routed it to the shard its
//! route names); everything runs on the shard's executor.

use super::{Delivery, PayloadKind, PeerFrame, PeerNet, Route};
use bytes::Bytes;
use sluice_core::cluster::NodeId;
use std::rc::Rc;
#[cfg(feature = "fault-injection")]
use std::time::Duration;

/// The replication runtime's transport over this shard's links: Raft frames are queued at
/// once or dropped (Raft retransmits), routed by shard or by partition on the receiver.
pub struct RaftLinks(pub Rc<PeerNet>);

impl sluice_shard::replica::RaftTransport for RaftLinks {
    fn send(&self, to: NodeId, route: sluice_shard::replica::RaftRoute, payload: Bytes) -> bool {
        let route = match route {
            sluice_shard::replica::RaftRoute::Shard(s) => Route::Shard(s),
            sluice_shard::replica::RaftRoute::Partition(tp) => {
                Route::Partition { topic: tp.topic.to_string(), partition: tp.partition.0 }
            }
        };
        let frame = PeerFrame { kind: PayloadKind::Raft, route, payload };
        match self.0.try_send(to, frame) {
            Ok(()) => true,
            Err(e) => {
                tracing::trace!(%to, error = %e, "raft frame dropped");
                false
            }
        }
    }

    /// Heard within a session, and this shard's link to it connected: a kill -9 closes the
    /// dead broker's connections at once, so Raft's failover starts without waiting for the
    /// session to lapse (frames to it could not be queued anyway, `try_send`).
    fn is_live(&self, node: NodeId) -> bool {
        self.0.link_up(node) && self.0.view.is_live(node, std::time::Instant::now())
    }
}

/// Forwarded metadata proposals and their answers, to shard 0 of a member (queued at once or
/// dropped: the waiting change then times out and is answered NOT_CONTROLLER).
struct ForwardLinks(Rc<PeerNet>);

impl sluice_shard::admin::cluster::ForwardLink for ForwardLinks {
    fn send(&self, to: i32, kind: sluice_shard::admin::cluster::Forwarded, payload: Bytes) -> bool {
        let kind = match kind {
            sluice_shard::admin::cluster::Forwarded::Request => PayloadKind::MetadataForward,
            sluice_shard::admin::cluster::Forwarded::Reply => PayloadKind::MetadataForwardReply,
        };
        let frame = PeerFrame { kind, route: Route::Shard(0), payload };
        self.0.try_send(NodeId(to), frame).is_ok()
    }
}

/// Starts this shard's replication runtime over `net`: installs the inbound handler and, on
/// shard 0, opens the metadata log (group 0) with every member as a voter.
pub async fn start_replication(net: &Rc<PeerNet>) -> Result<Rc<sluice_shard::replica::Replicas>, String> {
    let shard = net.shard.clone();
    let mut members: Vec<NodeId> = net.identity.voters.iter().map(|v| v.id).collect();
    members.sort();
    let transport = Rc::new(RaftLinks(net.clone()));
    let r = sluice_shard::replica::Replicas::start(net.identity.node_id, &members, shard.id.index(), transport);
    shard.set_replicas(r.clone());
    let weak = Rc::downgrade(&r);
    let forwarded_to = shard.clone();
    net.set_handler(Box::new(move |d: Delivery| {
        use sluice_shard::admin::cluster::{on_forwarded, Forwarded};
        match d.frame.kind {
            PayloadKind::Raft => {}
            PayloadKind::MetadataForward => {
                return on_forwarded(&forwarded_to, d.from.0, Forwarded::Request, d.frame.payload)
            }
            PayloadKind::MetadataForwardReply => {
                return on_forwarded(&forwarded_to, d.from.0, Forwarded::Reply, d.frame.payload)
            }
            PayloadKind::ElectPreferred => return super::elect::on_elect(&forwarded_to, d.from, d.frame),
            PayloadKind::TxnMarkers
            | PayloadKind::TxnMarkersReply
            | PayloadKind::TxnVerify
            | PayloadKind::TxnVerifyReply
            | PayloadKind::ShareState
            | PayloadKind::ShareStateReply => return super::calls::on_frame(&forwarded_to, d),
            PayloadKind::QuorumDescribe | PayloadKind::QuorumDescribeReply => {
                return super::quorum::on_frame(&forwarded_to, d)
            }
        }
        if let Some(r) = weak.upgrade() {
            r.receive(d.from, d.frame.payload);
        }
    }));
    if shard.id.index() == 0 {
        r.open_metadata(shard.data_dir(), &members, shard.clean_start()).await.map_err(|e| e.to_string())?;
        sluice_shard::admin::cluster::set_link(Rc::new(ForwardLinks(net.clone())));
        sluice_shard::admin::cluster::start(&shard, &r);
        sluice_shard::replica::quorum::spawn_sampler(&r);
    }
    sluice_shard::admin::cluster::follow_leaders(&shard, &r);
    sluice_shard::replica::reassign::follow(&shard, &r);
    sluice_shard::internal::follow(&shard, &r);
    super::calls::install(net);
    super::quorum::install(net);
    sluice_shard::txn::partition::follow_commits(&shard, &r);
    sluice_shard::share::replicated::follow_commits(&shard, &r);
    sluice_shard::replica::rebalance::start(&shard, &r);
    {
        // The start-up recovery opened this shard's logs before the runtime existed.
        let shard = shard.clone();
        glommio::spawn_local(async move {
            shard.recovered().await;
            shard.open_replicas().await;
        })
        .detach();
    }
    #[cfg(feature = "fault-injection")]
    {
        spawn_raft_probe(net, &r);
        spawn_test_replication(net, &r);
    }
    Ok(r)
}

/// Test-only probe of the metadata log (`SLUICE_TEST_RAFT_PROBE=1`, fault-injection builds):
/// shard 0 proposes a small batch every 100 ms while it leads group 0, and logs every
/// committed batch it reads back (`raft probe batch offset=.. crc=..`), so a test can check
/// that every broker reads the same committed batches, through the API the metadata layer uses.
#[cfg(feature = "fault-injection")]
pub fn spawn_raft_probe(net: &Rc<PeerNet>, r: &Rc<sluice_shard::replica::Replicas>) {
    use sluice_shard::raft::GroupId;
    if net.shard.id.index() != 0 || std::env::var("SLUICE_TEST_RAFT_PROBE").is_err() {
        return;
    }
    let (shard, proposer) = (net.shard.clone(), r.clone());
    glommio::spawn_local(async move {
        let mut n = 0u64;
        while !shard.is_stopping() {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            if !proposer.is_leader(GroupId::METADATA) {
                continue;
            }
            n += 1;
            let value = format!("probe node={} n={n} t={}", proposer.node(), sluice_core::clock::now_ms());
            let b = sluice_core::batch::build(&[sluice_core::batch::Record { key: None, value: value.as_bytes() }], 0);
            match proposer.propose(GroupId::METADATA, Bytes::from(b)).await {
                Ok(c) => tracing::info!(base = c.base.0, term = c.term.0, "raft probe proposal committed"),
                Err(e) => tracing::info!(error = %e, "raft probe proposal failed"),
            }
        }
    })
    .detach();
    let (shard, reader) = (net.shard.clone(), r.clone());
    glommio::spawn_local(async move {
        let mut from = sluice_core::Offset(0);
        while !shard.is_stopping() {
            reader.wait_beyond(GroupId::METADATA, from).await;
            match reader.read_committed(GroupId::METADATA, from, 1 << 20).await {
                Ok((batches, next)) => {
                    for b in batches {
                        let h = sluice_core::batch::BatchHeader::parse(&b).expect("a committed batch");
                        tracing::info!("raft probe batch offset={} crc={}", h.base_offset, h.crc);
                    }
                    from = next;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "raft probe read failed");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .detach();
}

/// Test-only stand-in for replica lists in the metadata log (`SLUICE_TEST_REPLICATE_PREFIX`,
/// fault-injection builds): every partition this shard owns of a topic whose name starts with
/// the prefix becomes a Raft replica whose members are every cluster member, its group numbered
/// from a hash of the topic name (so every broker that created the same topic agrees). The
/// test creates the topic on every broker and waits before producing. Replaced by the
/// metadata layer's `open_replica` calls for replication factor > 1.
#[cfg(feature = "fault-injection")]
pub fn spawn_test_replication(net: &Rc<PeerNet>, r: &Rc<sluice_shard::replica::Replicas>) {
    let Ok(prefix) = std::env::var("SLUICE_TEST_REPLICATE_PREFIX") else { return };
    let (shard, r) = (net.shard.clone(), r.clone());
    let me = net.identity.node_id.0;
    let members: Vec<NodeId> = net.identity.voters.iter().map(|v| v.id).collect();
    glommio::spawn_local(async move {
        while !shard.is_stopping() {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            let meta = shard.metadata();
            for (name, t) in meta.topics.iter().filter(|(n, _)| n.starts_with(&prefix)) {
                for (p, owner) in t.shards.iter().enumerate() {
                    let part = i32::try_from(p).expect("few partitions");
                    let tp =
                        sluice_core::TopicPartition { topic: name.clone(), partition: sluice_core::PartitionId(part) };
                    if usize::from(*owner) != shard.id.index() || r.group_of(&tp).is_some() {
                        continue;
                    }
                    // Replicated through the metadata log: the real path opens it.
                    if meta.partition(name, tp.partition, me).is_some_and(|s| s.replicas.len() > 1) {
                        continue;
                    }
                    let Some(log) = shard.log(&tp) else { continue };
                    let fnv = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
                    let number = 1 + fnv % (u32::MAX - 1);
                    let group = sluice_shard::raft::GroupId::partition(number, u32::try_from(p).expect("few"));
                    if let Err(e) = r.open_replica(log, tp, group, &members).await {
                        tracing::error!(error = %e, "test replication: replica not opened");
                    }
                }
            }
        }
    })
    .detach();
}
