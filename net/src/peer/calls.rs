//! Calls between brokers over the peer links: the transport of `sluice_shard::peer` —
//! transaction markers a coordinator sends to partition leaders (`sluice_shard::txn::markers`),
//! a partition leader's verification calls to a transaction coordinator
//! (`sluice_shard::txn::verify`), and a share group coordinator's reads, resets and forgets of
//! share-partition state (`sluice_shard::share::remote`).
//!
//! Contract: a request for broker N goes to the shard of N it names (shard 0) as one frame of
//! its kind's `PayloadKind` (queued at once or not at all: the caller then tries again after
//! re-reading the metadata, as for an unanswered request); N answers on its own outbound link
//! with one reply frame of the kind, routed to the asking shard. The payloads are the shard
//! modules' own encodings, decoded (and checked) there. Why the peer links and not Kafka's
//! WriteTxnMarkers, AddPartitionsToTxn or share coordinator RPCs on the client listener: the
//! links already join every pair of members, authenticated by the cluster handshake, with
//! bounded queues and liveness, so no broker needs client credentials for another broker's
//! listeners (SASL, TLS, ACLs) nor a Kafka client of its own; and the reply reaches the exact
//! shard that waits.

use super::{Delivery, PayloadKind, PeerFrame, PeerNet, Route};
use bytes::Bytes;
use sluice_core::cluster::NodeId;
use sluice_shard::peer::{self, CallKind, Dir, Frame, PeerLink};
use sluice_shard::Shard;
use std::rc::Rc;

/// The frame kind on the links of each call frame.
fn payload_kind(f: Frame) -> PayloadKind {
    match (f.kind, f.dir) {
        (CallKind::TxnMarkers, Dir::Request) => PayloadKind::TxnMarkers,
        (CallKind::TxnMarkers, Dir::Reply) => PayloadKind::TxnMarkersReply,
        (CallKind::TxnVerify, Dir::Request) => PayloadKind::TxnVerify,
        (CallKind::TxnVerify, Dir::Reply) => PayloadKind::TxnVerifyReply,
        (CallKind::ShareState, Dir::Request) => PayloadKind::ShareState,
        (CallKind::ShareState, Dir::Reply) => PayloadKind::ShareStateReply,
    }
}

/// The call frame a frame kind on the links is, if it is one.
fn call_frame(k: &PayloadKind) -> Option<Frame> {
    let (kind, dir) = match k {
        PayloadKind::TxnMarkers => (CallKind::TxnMarkers, Dir::Request),
        PayloadKind::TxnMarkersReply => (CallKind::TxnMarkers, Dir::Reply),
        PayloadKind::TxnVerify => (CallKind::TxnVerify, Dir::Request),
        PayloadKind::TxnVerifyReply => (CallKind::TxnVerify, Dir::Reply),
        PayloadKind::ShareState => (CallKind::ShareState, Dir::Request),
        PayloadKind::ShareStateReply => (CallKind::ShareState, Dir::Reply),
        PayloadKind::Raft
        | PayloadKind::MetadataForward
        | PayloadKind::MetadataForwardReply
        | PayloadKind::ElectPreferred
        | PayloadKind::QuorumDescribe
        | PayloadKind::QuorumDescribeReply => return None,
    };
    Some(Frame { kind, dir })
}

struct Links(Rc<PeerNet>);

impl PeerLink for Links {
    fn send(&self, to: i32, to_shard: u16, f: Frame, payload: Bytes) -> bool {
        let frame = PeerFrame { kind: payload_kind(f), route: Route::Shard(to_shard), payload };
        match self.0.try_send(NodeId(to), frame) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(to, kind = ?f.kind, error = %e, "peer call frame not queued");
                false
            }
        }
    }
}

/// Installs this shard's call transport.
pub fn install(net: &Rc<PeerNet>) {
    peer::set_link(Rc::new(Links(net.clone())));
}

/// A call frame delivered on this shard.
pub fn on_frame(shard: &Rc<Shard>, d: Delivery) {
    match call_frame(&d.frame.kind) {
        Some(f) => peer::on_frame(shard, d.from.0, f, d.frame.payload),
        None => tracing::debug!(from = %d.from, kind = ?d.frame.kind, "not a peer call frame"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_frame_has_its_own_kind_on_the_links_and_back() {
        let mut seen = Vec::new();
        for kind in [CallKind::TxnMarkers, CallKind::TxnVerify, CallKind::ShareState] {
            for dir in [Dir::Request, Dir::Reply] {
                let f = Frame { kind, dir };
                let k = payload_kind(f);
                assert_eq!(call_frame(&k), Some(f));
                assert!(!seen.contains(&k), "{k:?} used twice");
                seen.push(k);
            }
        }
        assert_eq!(call_frame(&PayloadKind::Raft), None);
    }
}
