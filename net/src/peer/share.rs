//! Share-partition state calls between brokers: the transport of `sluice_shard::share::remote`
//! over the peer links (a share group's coordinator reads, resets or forgets the state of
//! share-partitions another broker leads).
//!
//! Contract: a call for broker N goes to shard 0 of N as one `PayloadKind::ShareState` frame
//! (queued at once or not at all: the coordinator then tries again after re-reading the
//! metadata); N answers with one `ShareStateReply` frame routed to the asking shard. The
//! payloads are `share::remote`'s own encoding, decoded (and checked) there. Why the peer
//! links rather than Kafka's share coordinator RPCs on the client listener: the same reasons
//! as the transaction markers' (`peer::txn`): authenticated by the cluster handshake, bounded
//! queues, liveness, and the reply reaches the exact shard that waits.

use super::{Delivery, PayloadKind, PeerFrame, PeerNet, Route};
use bytes::Bytes;
use sluice_core::cluster::NodeId;
use sluice_shard::share::remote::{self, ShareFrame, ShareLink};
use sluice_shard::Shard;
use std::rc::Rc;

struct Links(Rc<PeerNet>);

impl ShareLink for Links {
    fn send(&self, to: i32, to_shard: u16, kind: ShareFrame, payload: Bytes) -> bool {
        let kind = match kind {
            ShareFrame::Request => PayloadKind::ShareState,
            ShareFrame::Reply => PayloadKind::ShareStateReply,
        };
        let frame = PeerFrame { kind, route: Route::Shard(to_shard), payload };
        match self.0.try_send(NodeId(to), frame) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(to, error = %e, "share state frame not queued");
                false
            }
        }
    }
}

/// Installs this shard's share-state transport.
pub fn install(net: &Rc<PeerNet>) {
    remote::set_link(Rc::new(Links(net.clone())));
}

/// A share-state frame delivered on this shard.
pub fn on_frame(shard: &Rc<Shard>, d: Delivery) {
    match d.frame.kind {
        PayloadKind::ShareState => remote::on_request(shard, d.from.0, d.frame.payload),
        PayloadKind::ShareStateReply => remote::on_reply(d.from.0, d.frame.payload),
        other => tracing::debug!(from = %d.from, kind = ?other, "not a share state frame"),
    }
}
