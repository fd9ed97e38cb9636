//! Transaction markers between brokers: the transport of `sluice_shard::txn::markers` over
//! the peer links; also the partition leaders' verification calls to a transaction coordinator
//! on another broker (`sluice_shard::txn::verify`, same transport, same reasons).
//!
//! Contract: a coordinator shard's marker request for broker N goes to shard 0 of N as one
//! `PayloadKind::TxnMarkers` frame (queued at once or not at all: the coordinator then retries
//! after re-reading the metadata, as for an unanswered request); N answers on its own outbound
//! link with one `TxnMarkersReply` frame routed to the asking shard. The payloads are the
//! marker module's own encoding, decoded (and checked) there. Why the peer links and not a
//! Kafka WriteTxnMarkers request to the leader's client listener: the links already join every
//! pair of members, authenticated by the cluster handshake, with bounded queues and liveness,
//! so no broker needs client credentials for another broker's listeners (SASL, TLS, ACLs) nor a
//! Kafka client of its own; and the reply reaches the exact coordinator shard that waits.

use super::{Delivery, PayloadKind, PeerFrame, PeerNet, Route};
use bytes::Bytes;
use sluice_core::cluster::NodeId;
use sluice_shard::txn::markers::{self, MarkerFrame, MarkerLink};
use sluice_shard::txn::verify;
use sluice_shard::Shard;
use std::rc::Rc;

struct Links(Rc<PeerNet>);

impl MarkerLink for Links {
    fn send(&self, to: i32, to_shard: u16, kind: MarkerFrame, payload: Bytes) -> bool {
        let kind = match kind {
            MarkerFrame::Request => PayloadKind::TxnMarkers,
            MarkerFrame::Reply => PayloadKind::TxnMarkersReply,
            MarkerFrame::VerifyRequest => PayloadKind::TxnVerify,
            MarkerFrame::VerifyReply => PayloadKind::TxnVerifyReply,
        };
        let frame = PeerFrame { kind, route: Route::Shard(to_shard), payload };
        match self.0.try_send(NodeId(to), frame) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(to, error = %e, "transaction marker frame not queued");
                false
            }
        }
    }
}

/// Installs this shard's marker transport and the transaction index's commit feed.
pub fn install(net: &Rc<PeerNet>, r: &sluice_shard::replica::Replicas) {
    markers::set_link(Rc::new(Links(net.clone())));
    sluice_shard::txn::partition::follow_commits(&net.shard, r);
}

/// A marker frame delivered on this shard.
pub fn on_frame(shard: &Rc<Shard>, d: Delivery) {
    match d.frame.kind {
        PayloadKind::TxnMarkers => markers::on_request(shard, d.from.0, d.frame.payload),
        PayloadKind::TxnMarkersReply => markers::on_reply(d.from.0, d.frame.payload),
        PayloadKind::TxnVerify => verify::on_request(shard, d.from.0, d.frame.payload),
        PayloadKind::TxnVerifyReply => verify::on_reply(d.from.0, d.frame.payload),
        other => tracing::debug!(from = %d.from, kind = ?other, "not a transaction marker frame"),
    }
}
