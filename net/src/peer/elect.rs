//! ElectLeaders forwarded between brokers: a broker asked for a preferred election of a
//! partition it holds no replica of hands the request to the preferred replica's broker, as a
//! Kafka broker forwards ElectLeaders to the controller.
//!
//! Contract: [`forward`] queues one `PayloadKind::ElectPreferred` frame (route: the partition,
//! payload: the node to lead, 4 bytes big-endian) for `to` at once, or says it could not
//! (peer down, queue full); nothing waits for an answer: the asking handler watches its
//! metadata snapshot for the new leader, as it does for a local transfer. [`on_elect`] runs on
//! the shard the frame was routed to (the partition's owner there) and starts the transfer
//! through that broker's replica ([`sluice_shard::replica::elect::transfer_local`]); a frame
//! with a bad payload, or for a partition without a replica there, is logged and dropped.

use super::{PayloadKind, PeerFrame, PeerNet, Route};
use bytes::Bytes;
use sluice_core::cluster::NodeId;
use sluice_core::TopicPartition;
use sluice_shard::Shard;

/// Asks broker `to` to move the leadership of `tp` to node `leader` (module docs).
pub fn forward(net: &PeerNet, to: NodeId, tp: &TopicPartition, leader: i32) -> bool {
    let route = Route::Partition { topic: tp.topic.clone(), partition: tp.partition.0 };
    let payload = Bytes::copy_from_slice(&leader.to_be_bytes());
    let frame = PeerFrame { kind: PayloadKind::ElectPreferred, route, payload };
    match net.try_send(to, frame) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(%to, %tp, error = %e, "preferred election not forwarded");
            false
        }
    }
}

/// A forwarded election received from `from` (module docs).
pub fn on_elect(shard: &Shard, from: NodeId, frame: PeerFrame) {
    let Route::Partition { topic, partition } = frame.route else {
        tracing::debug!(%from, "forwarded election without a partition dropped");
        return;
    };
    let Ok(leader) = <[u8; 4]>::try_from(frame.payload.as_ref()).map(i32::from_be_bytes) else {
        tracing::debug!(%from, "forwarded election with a bad payload dropped");
        return;
    };
    let tp = TopicPartition::new(topic, partition);
    let started = sluice_shard::replica::elect::transfer_local(shard, vec![(0, tp.clone(), leader)]);
    if started.iter().any(|(_, s)| s.is_err()) {
        tracing::debug!(%from, %tp, "forwarded election: no replica of the partition here");
    }
}
