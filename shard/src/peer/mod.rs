//! Calls from one broker to another over the peer links: transaction markers
//! (`txn::markers`), a partition leader's transaction verification (`txn::verify`) and
//! share-partition state operations (`share::remote`). Each kind states what it sends and what
//! a lost call means; the sending, waiting, answering ([`call`]), the per-leader split of a
//! call's partitions and the retry rounds ([`leaders`]), and the wire conventions ([`wire`])
//! are here, once.
//!
//! Contract:
//! - One transport for every kind ([`PeerLink`], installed on every shard at start by net's
//!   `peer::calls`): a frame is queued at once or not at all. A request goes to shard
//!   [`REQUEST_SHARD`] of the callee broker (it routes each partition to its owner); the reply
//!   goes to the shard the request names, the one that waits.
//! - [`on_frame`] hands every delivered frame to its kind's request or reply handler: the one
//!   table of the kinds there are.

pub mod call;
pub mod leaders;
pub mod wire;

use crate::shard::Shard;
use crate::share::remote::StateCall;
use crate::txn::markers::MarkerRequest;
use crate::txn::verify::CoordinatorCall;
use bytes::Bytes;
use std::cell::RefCell;
use std::rc::Rc;

/// The kinds of call between brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// COMMIT/ABORT markers from a transaction coordinator to partition leaders.
    TxnMarkers,
    /// A partition leader's verification (or addition) call to a transaction coordinator.
    TxnVerify,
    /// A share group coordinator's read, reset or forget of share-partition state.
    ShareState,
}

impl CallKind {
    /// Names the kind in logs.
    pub fn what(self) -> &'static str {
        match self {
            CallKind::TxnMarkers => "transaction markers",
            CallKind::TxnVerify => "transaction verification",
            CallKind::ShareState => "share state",
        }
    }
}

/// A request or its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Request,
    Reply,
}

/// What a frame between brokers carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub kind: CallKind,
    pub dir: Dir,
}

/// The peer transport as calls use it (net implements it).
pub trait PeerLink {
    /// Queues `payload` for shard `to_shard` of broker `to`; false when it could not be queued.
    fn send(&self, to: i32, to_shard: u16, frame: Frame, payload: Bytes) -> bool;
}

/// The shard of a broker that takes requests (any shard could: each kind routes partitions to
/// their owners; shard 0 exists on every broker).
pub(crate) const REQUEST_SHARD: u16 = 0;

thread_local! {
    static LINK: RefCell<Option<Rc<dyn PeerLink>>> = const { RefCell::new(None) };
}

/// Installs the transport to other brokers (every shard, at start, in a cluster).
pub fn set_link(link: Rc<dyn PeerLink>) {
    LINK.with(|l| *l.borrow_mut() = Some(link));
}

pub(crate) fn link() -> Option<Rc<dyn PeerLink>> {
    LINK.with(|l| l.borrow().clone())
}

/// A frame from broker `from` delivered on this shard, handed to its kind's handler.
pub fn on_frame(shard: &Rc<Shard>, from: i32, frame: Frame, payload: Bytes) {
    use call::{on_reply, on_request};
    match (frame.kind, frame.dir) {
        (CallKind::TxnMarkers, Dir::Request) => on_request::<MarkerRequest>(shard, from, payload),
        (CallKind::TxnMarkers, Dir::Reply) => on_reply::<MarkerRequest>(from, payload),
        (CallKind::TxnVerify, Dir::Request) => on_request::<CoordinatorCall>(shard, from, payload),
        (CallKind::TxnVerify, Dir::Reply) => on_reply::<CoordinatorCall>(from, payload),
        (CallKind::ShareState, Dir::Request) => on_request::<StateCall>(shard, from, payload),
        (CallKind::ShareState, Dir::Reply) => on_reply::<StateCall>(from, payload),
    }
}
