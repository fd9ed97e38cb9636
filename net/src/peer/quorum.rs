//! DescribeQuorum forwarded between brokers: a broker asked by a client while another broker
//! leads the metadata log asks that leader, as a Kafka broker forwards DescribeQuorum to the
//! active controller.
//!
//! Contract:
//! - [`ask`] queues one `PayloadKind::QuorumDescribe` frame for shard 0 of the leader (payload:
//!   version byte, the asking shard as u16, a request id as u64, big-endian) at once or fails,
//!   then waits at most `DESCRIBE_QUORUM_FORWARD_TIMEOUT_MS` for the answer. At most
//!   `DESCRIBE_QUORUM_FORWARDS_PER_SHARD` requests of a shard wait at once; a waiting request
//!   that ends (answered, timed out, or its client gone) is forgotten, and an answer for no
//!   waiting request is dropped.
//! - [`on_frame`] on the asked broker answers from its own state
//!   (`sluice_shard::replica::quorum::describe`, it is on shard 0), never forwarding further:
//!   one `QuorumDescribeReply` frame to the asking shard (version byte, the request id, then 0
//!   for "not the leader" or 1 and `replica::quorum::encode`'s bytes). A malformed frame is
//!   logged and dropped (the asker times out).
//! - Why the peer links and not a DescribeQuorum to the leader's client listener: as for the
//!   transaction markers (`peer::txn`), the links join every pair of members, authenticated by
//!   the cluster handshake, with bounded queues, and the reply reaches the shard that waits.

use super::{Delivery, PayloadKind, PeerFrame, PeerNet, Route, SendError};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{select, Either};
use sluice_core::cluster::NodeId;
use sluice_core::limits::{DESCRIBE_QUORUM_FORWARDS_PER_SHARD, DESCRIBE_QUORUM_FORWARD_TIMEOUT_MS};
use sluice_shard::replica::quorum::{self, QuorumState, QuorumWireError};
use sluice_shard::Shard;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

const VERSION: u8 = 1;
const REQUEST_BYTES: usize = 1 + 2 + 8;

/// Why a forwarded DescribeQuorum got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{DESCRIBE_QUORUM_FORWARDS_PER_SHARD} forwarded requests wait already")]
    Busy,
    #[error("not sent: {0}")]
    NotSent(#[from] SendError),
    #[error("no answer within {DESCRIBE_QUORUM_FORWARD_TIMEOUT_MS} ms")]
    Timeout,
    #[error("node {0} does not lead the metadata log")]
    NotLeader(NodeId),
    #[error("bad answer: {0}")]
    Bad(#[from] QuorumWireError),
}

thread_local! {
    /// This shard's links, for the answers it sends (set by [`install`]).
    static NET: RefCell<Option<Weak<PeerNet>>> = const { RefCell::new(None) };
    /// Requests of this shard waiting for their answer, by id.
    static PENDING: RefCell<HashMap<u64, oneshot::Sender<Bytes>>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
}

/// Installs this shard's links for answering forwarded requests.
pub fn install(net: &Rc<PeerNet>) {
    NET.with(|n| *n.borrow_mut() = Some(Rc::downgrade(net)));
}

/// Forgets a waiting request when its asker stops waiting, however that happens.
struct Waiting(u64);

impl Drop for Waiting {
    fn drop(&mut self) {
        PENDING.with(|p| p.borrow_mut().remove(&self.0));
    }
}

/// Asks `leader` for the quorum (module docs).
pub async fn ask(net: &PeerNet, leader: NodeId) -> Result<QuorumState, AskError> {
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id.wrapping_add(1));
        id
    });
    let (tx, rx) = oneshot::channel();
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= DESCRIBE_QUORUM_FORWARDS_PER_SHARD {
            return Err(AskError::Busy);
        }
        p.insert(id, tx);
        Ok(())
    })?;
    let _waiting = Waiting(id);
    let shard = u16::try_from(net.shard.id.index()).expect("shard indexes fit a u16 (the peer handshake's)");
    net.try_send(
        leader,
        PeerFrame { kind: PayloadKind::QuorumDescribe, route: Route::Shard(0), payload: request(shard, id) },
    )?;
    let limit = glommio::timer::sleep(Duration::from_millis(DESCRIBE_QUORUM_FORWARD_TIMEOUT_MS));
    let answer = match select(rx, Box::pin(limit)).await {
        Either::Left((Ok(answer), _)) => answer,
        Either::Left((Err(_), _)) | Either::Right(_) => return Err(AskError::Timeout),
    };
    match answer.first() {
        Some(1) => Ok(quorum::decode(&answer[1..])?),
        _ => Err(AskError::NotLeader(leader)),
    }
}

fn request(shard: u16, id: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(REQUEST_BYTES);
    b.put_u8(VERSION);
    b.put_u16(shard);
    b.put_u64(id);
    b.freeze()
}

/// (asking shard, request id) of a request payload.
fn parse_request(mut b: &[u8]) -> Option<(u16, u64)> {
    if b.len() != REQUEST_BYTES || b.get_u8() != VERSION {
        return None;
    }
    Some((b.get_u16(), b.get_u64()))
}

fn reply(id: u64, state: Option<&QuorumState>) -> Bytes {
    let body = state.map(quorum::encode);
    let mut b = BytesMut::with_capacity(1 + 8 + 1 + body.as_ref().map_or(0, Bytes::len));
    b.put_u8(VERSION);
    b.put_u64(id);
    match body {
        Some(body) => {
            b.put_u8(1);
            b.put_slice(&body);
        }
        None => b.put_u8(0),
    }
    b.freeze()
}

/// (request id, the answer from its status byte on) of a reply payload.
fn parse_reply(b: &Bytes) -> Option<(u64, Bytes)> {
    let mut head = b.get(..9)?;
    if head.get_u8() != VERSION || b.len() < 10 {
        return None;
    }
    Some((head.get_u64(), b.slice(9..)))
}

/// A forwarded request or its answer, delivered on this shard (module docs).
pub fn on_frame(shard: &Rc<Shard>, d: Delivery) {
    match d.frame.kind {
        PayloadKind::QuorumDescribe => answer(shard, d.from, &d.frame.payload),
        PayloadKind::QuorumDescribeReply => match parse_reply(&d.frame.payload) {
            Some((id, answer)) => {
                if let Some(tx) = PENDING.with(|p| p.borrow_mut().remove(&id)) {
                    drop(tx.send(answer));
                }
            }
            None => tracing::debug!(from = %d.from, "malformed quorum answer dropped"),
        },
        other => tracing::debug!(from = %d.from, kind = ?other, "not a quorum frame"),
    }
}

fn answer(shard: &Shard, from: NodeId, payload: &[u8]) {
    let Some((asking_shard, id)) = parse_request(payload) else {
        tracing::debug!(%from, "malformed quorum request dropped");
        return;
    };
    let state = shard.replicas().and_then(|r| quorum::describe(&r));
    let Some(net) = NET.with(|n| n.borrow().as_ref().and_then(Weak::upgrade)) else { return };
    let frame = PeerFrame {
        kind: PayloadKind::QuorumDescribeReply,
        route: Route::Shard(asking_shard),
        payload: reply(id, state.as_ref()),
    };
    if let Err(e) = net.try_send(from, frame) {
        tracing::debug!(%from, error = %e, "quorum answer not queued");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shard::replica::quorum::VoterState;

    #[test]
    fn requests_and_answers_round_trip() {
        assert_eq!(parse_request(&request(3, 77)), Some((3, 77)));
        assert_eq!(parse_request(&request(3, 77)[..REQUEST_BYTES - 1]), None);
        let q = QuorumState {
            leader: 2,
            leader_epoch: 4,
            high_watermark: 9,
            voters: vec![VoterState { node: 2, log_end_offset: 9, last_fetch_ms: 5, last_caught_up_ms: 5 }],
        };
        let (id, a) = parse_reply(&reply(77, Some(&q))).expect("parses");
        assert_eq!((id, a[0]), (77, 1));
        assert_eq!(quorum::decode(&a[1..]), Ok(q));
        let (id, a) = parse_reply(&reply(78, None)).expect("parses");
        assert_eq!((id, a.as_ref()), (78, &[0u8][..]));
        assert_eq!(parse_reply(&Bytes::from_static(&[VERSION, 0, 0])), None);
    }
}
