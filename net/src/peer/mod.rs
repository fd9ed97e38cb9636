//! Broker-to-broker transport: TCP between the brokers of a cluster, on the shards' own
//! executors (glommio; no extra threads, nothing blocking).
//!
//! Contract:
//! - Connections: every shard of a broker dials every other member once (an outbound
//!   [`link`]), so a (local shard, remote broker) pair has one connection, and accepts on the
//!   shared peer port (SO_REUSEPORT, [`accept`]). The dialer writes data and heartbeats; the
//!   acceptor writes only its handshake answer and heartbeat acks. See ARCHITECTURE.md
//!   ("Cluster") for why.
//! - Handshake: preamble (magic and wire version), then `Hello` (cluster id, node id, shard,
//!   shard count, client address). A peer of another cluster, an unknown node id, this broker's
//!   own id, another wire version or a bad shard is answered `Refused` with the reason and
//!   disconnected; the broker keeps serving.
//! - Frames: length-prefixed, rkyv headers validated before use ([`wire`]); before the
//!   handshake at most `PEER_MAX_HEADER_BYTES` are accepted, after it `PEER_MAX_FRAME_BYTES`.
//!   A bad frame, or a peer silent for `peer_session_timeout_ms`, drops the connection.
//! - Routing: a data frame is delivered on the shard its [`Route`] names, or on the shard
//!   that owns its partition here (this broker's placement, read from its metadata); frames
//!   that land on another shard cross over a bounded channel mesh of this module's own, so a
//!   full channel slows the reading connection (TCP backpressure), never grows memory.
//! - Sending: [`PeerNet::try_send`] refuses at once when the link's queue is full
//!   (`PEER_OUTBOUND_QUEUE_FRAMES` / `PEER_OUTBOUND_QUEUE_BYTES`) or the peer is down;
//!   [`PeerNet::send`] waits for room.
//! - Liveness: each shard keeps its own [`view::ClusterView`], updated only by what its own
//!   connections receive.

pub mod accept;
pub mod calls;
pub mod elect;
pub mod link;
pub mod quorum;
pub mod raft;
pub mod view;
pub mod wire;

use bytes::Bytes;
use futures::future::{select, Either};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
pub use raft::start_replication;
use sluice_core::cluster::{NodeId, Voter};
use sluice_core::PartitionId;
use sluice_shard::Shard;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
pub use view::{BrokerEndpoint, ClusterView};
use wire::{FrameHead, Header, WireError, PREFIX_BYTES};
pub use wire::{PayloadKind, Route};

/// A data frame as the Raft driver hands it over or receives it.
#[derive(Debug, Clone)]
pub struct PeerFrame {
    pub kind: PayloadKind,
    pub route: Route,
    pub payload: Bytes,
}

/// A data frame received from `from`, on the shard it was routed to.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub from: NodeId,
    pub frame: PeerFrame,
}

/// Receives the data frames routed to this shard (the Raft driver installs one).
pub type Handler = Box<dyn Fn(Delivery)>;

/// Why a connection to or from a peer ended, or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("refused by the peer: {0}")]
    RefusedByPeer(String),
    #[error("handshake refused: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
    #[error("the peer at {address} is node {got}, but controller_quorum_voters says node {expected}")]
    WrongNode { address: String, got: i32, expected: NodeId },
}

/// Why a `Hello` is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("wire version {got}, this broker speaks {want}")]
    Version { got: u16, want: u16 },
    #[error("cluster id {got:?} is not this cluster's ({want:?})")]
    OtherCluster { got: String, want: String },
    #[error("node {0} is not in controller_quorum_voters")]
    UnknownNode(i32),
    #[error("node {0} is this broker's own node id")]
    SameNode(i32),
    #[error("shard {shard} of a {shards}-shard broker is out of range")]
    BadShard { shard: u16, shards: u16 },
}

/// Who this broker is, as the handshake states and checks it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub shards: u16,
    pub client_host: String,
    pub client_port: u16,
    pub voters: Vec<Voter>,
    /// Each other member's peer address, resolved once at start.
    pub peer_addresses: BTreeMap<NodeId, std::net::SocketAddr>,
    pub heartbeat_interval: Duration,
    pub session_timeout: Duration,
}

impl Identity {
    /// Checks a dialer's `Hello` against this broker (see [`HandshakeError`]).
    pub fn check_hello(&self, hello: &wire::Hello) -> Result<(), HandshakeError> {
        if hello.version != wire::WIRE_VERSION {
            return Err(HandshakeError::Version { got: hello.version, want: wire::WIRE_VERSION });
        }
        if hello.cluster_id != self.cluster_id {
            return Err(HandshakeError::OtherCluster { got: hello.cluster_id.clone(), want: self.cluster_id.clone() });
        }
        if hello.node_id == self.node_id.0 {
            return Err(HandshakeError::SameNode(hello.node_id));
        }
        if !self.voters.iter().any(|v| v.id.0 == hello.node_id) {
            return Err(HandshakeError::UnknownNode(hello.node_id));
        }
        if hello.shards == 0 || hello.shard >= hello.shards {
            return Err(HandshakeError::BadShard { shard: hello.shard, shards: hello.shards });
        }
        Ok(())
    }
}

/// Counters of one shard's transport (read by tests through logs and by the metrics later).
#[derive(Debug, Default)]
pub struct PeerStats {
    pub frames_sent: Cell<u64>,
    pub frames_received: Cell<u64>,
    pub frames_unroutable: Cell<u64>,
    pub frames_without_handler: Cell<u64>,
    pub connections_refused: Cell<u64>,
}

/// One shard's part of the transport.
pub struct PeerNet {
    pub shard: Rc<Shard>,
    pub identity: Rc<Identity>,
    pub view: Rc<ClusterView>,
    pub stats: PeerStats,
    links: BTreeMap<NodeId, Rc<link::Link>>,
    mesh: Senders<Delivery>,
    handler: RefCell<Option<Handler>>,
}

/// Why a frame was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("node {0} is not a cluster member")]
    UnknownNode(NodeId),
    #[error("node {0} is not connected")]
    Unreachable(NodeId),
    #[error("the queue to node {0} is full")]
    Full(NodeId),
    #[error("frame too large: {0}")]
    TooLarge(WireError),
}

/// What a shard needs to start its part: the peer listener socket (bound by the server) and
/// the builder of the transport's own cross-shard mesh.
pub struct PeerSetup {
    pub socket: socket2::Socket,
    pub mesh: MeshBuilder<Delivery, Full>,
    pub identity: Identity,
}

impl PeerNet {
    /// Joins the mesh, then starts this shard's links, accept loop and mesh receivers.
    pub async fn start(shard: Rc<Shard>, view: Rc<ClusterView>, setup: PeerSetup) -> Result<Rc<PeerNet>, String> {
        let (senders, receivers) = setup.mesh.join().await.map_err(|e| format!("cannot join the peer mesh: {e}"))?;
        if senders.peer_id() != shard.id.index() {
            return Err(format!("peer mesh id {} is not shard {}", senders.peer_id(), shard.id));
        }
        let identity = Rc::new(setup.identity);
        let links =
            identity.peer_addresses.iter().map(|(id, addr)| (*id, Rc::new(link::Link::new(*id, *addr)))).collect();
        let net = Rc::new(PeerNet {
            shard,
            identity,
            view,
            stats: PeerStats::default(),
            links,
            mesh: senders,
            handler: RefCell::new(None),
        });
        for l in net.links.values() {
            glommio::spawn_local(link::run(net.clone(), l.clone())).detach();
        }
        glommio::spawn_local(accept::run(net.clone(), setup.socket)).detach();
        spawn_mesh_receivers(&net, receivers);
        spawn_liveness_log(&net);
        Ok(net)
    }

    /// Installs the receiver of this shard's data frames (replacing the previous one).
    pub fn set_handler(&self, handler: Handler) {
        *self.handler.borrow_mut() = Some(handler);
    }

    /// Whether this shard's link to `to` is connected now (handshake done, no read or write
    /// failed since: a peer that died closed it at once).
    pub fn link_up(&self, to: NodeId) -> bool {
        self.links.get(&to).is_some_and(|l| l.is_connected())
    }

    /// Queues `frame` for `to` at once, or says why not.
    pub fn try_send(&self, to: NodeId, frame: PeerFrame) -> Result<(), SendError> {
        let l = self.links.get(&to).ok_or(SendError::UnknownNode(to))?;
        if !l.is_connected() {
            return Err(SendError::Unreachable(to));
        }
        l.try_push(frame).map_err(|e| e.with_node(to))
    }

    /// Queues `frame` for `to`, waiting for room in its queue (not for the peer to be up).
    pub async fn send(&self, to: NodeId, frame: PeerFrame) -> Result<(), SendError> {
        let l = self.links.get(&to).ok_or(SendError::UnknownNode(to))?.clone();
        if !l.is_connected() {
            return Err(SendError::Unreachable(to));
        }
        l.push(frame).await.map_err(|e| e.with_node(to))
    }

    /// Delivers a received data frame on the shard its route names (see the module docs).
    async fn route(&self, delivery: Delivery) {
        let Some(target) = self.resolve(&delivery.frame.route) else {
            self.stats.frames_unroutable.set(self.stats.frames_unroutable.get() + 1);
            tracing::debug!(from = %delivery.from, route = ?delivery.frame.route, "peer frame for no shard here: dropped");
            return;
        };
        if target == self.shard.id.index() {
            self.deliver(delivery);
        } else if self.mesh.send_to(target, delivery).await.is_err() {
            tracing::debug!(shard = target, "peer frame not forwarded: the shard is stopping");
        }
    }

    /// The shard a route leads to on this broker, if any.
    fn resolve(&self, route: &Route) -> Option<usize> {
        match route {
            Route::Shard(s) => Some(usize::from(*s)).filter(|s| *s < self.shard.n_shards),
            Route::Partition { topic, partition } => {
                self.shard.metadata().owner(topic, PartitionId(*partition)).map(|s| s.index())
            }
        }
    }

    fn deliver(&self, delivery: Delivery) {
        self.stats.frames_received.set(self.stats.frames_received.get() + 1);
        match self.handler.borrow().as_ref() {
            Some(h) => h(delivery),
            None => {
                // No Raft driver yet: counted and dropped (Raft tolerates lost messages).
                self.stats.frames_without_handler.set(self.stats.frames_without_handler.get() + 1);
            }
        }
    }
}

/// Hands frames forwarded by other shards to this shard's handler.
fn spawn_mesh_receivers(net: &Rc<PeerNet>, mut receivers: glommio::channels::channel_mesh::Receivers<Delivery>) {
    for (_, rx) in receivers.streams() {
        let net = net.clone();
        glommio::spawn_local(async move {
            while let Some(d) = rx.recv().await {
                net.deliver(d);
            }
        })
        .detach();
    }
}

/// Shard 0 logs every member going offline or coming back (each shard's view changes alike).
fn spawn_liveness_log(net: &Rc<PeerNet>) {
    let net = net.clone();
    glommio::spawn_local(async move {
        let tick = net.identity.heartbeat_interval;
        while !net.shard.is_stopping() {
            glommio::timer::sleep(tick).await;
            for t in net.view.transitions(std::time::Instant::now()) {
                if net.shard.id.index() != 0 {
                    continue;
                }
                match t {
                    view::Transition::Online(n) => tracing::info!(node = %n, "peer broker online"),
                    view::Transition::Offline(n) => tracing::warn!(
                        node = %n, session_timeout_ms = millis(net.identity.session_timeout),
                        "peer broker offline: no heartbeat within the session timeout"
                    ),
                }
            }
        }
    })
    .detach();
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs `f`, failing with `Timeout(what)` after `limit`.
async fn within<T, E>(
    limit: Duration,
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, PeerError>
where
    PeerError: From<E>,
{
    match select(Box::pin(f), Box::pin(glommio::timer::sleep(limit))).await {
        Either::Left((r, _)) => r.map_err(PeerError::from),
        Either::Right(_) => Err(PeerError::Timeout(what)),
    }
}

/// Reads one frame: at most `max_rest` bytes after the prefix, the whole of it within `limit`.
async fn read_frame<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
    max_rest: usize,
    limit: Duration,
    what: &'static str,
) -> Result<(Header, Bytes), PeerError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    within(limit, what, reader.read_exact(&mut prefix)).await?;
    let head = FrameHead::parse(prefix)?;
    if head.rest > max_rest {
        return Err(WireError::Oversize { length: head.rest + 4, max: max_rest + 4 }.into());
    }
    let mut body = vec![0u8; head.rest];
    within(limit, what, reader.read_exact(&mut body)).await?;
    Ok(wire::split_body(head, Bytes::from(body))?)
}

/// Writes one frame (header, then the payload as is).
async fn write_frame<W: futures::io::AsyncWrite + Unpin>(
    writer: &mut W,
    header: &Header,
    payload: &[u8],
) -> Result<(), PeerError> {
    let head = wire::encode_frame(header, payload.len())?;
    writer.write_all(&head).await?;
    if !payload.is_empty() {
        writer.write_all(payload).await?;
    }
    writer.flush().await?;
    Ok(())
}

/// Stops with the shard: resolves `Right` once shutdown begins.
async fn or_stopping<T>(shard: &Shard, f: impl std::future::Future<Output = T>) -> Option<T> {
    match select(Box::pin(f), Box::pin(shard.stopping())).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::Hello;

    fn identity() -> Identity {
        Identity {
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            node_id: NodeId(1),
            shards: 2,
            client_host: "127.0.0.1".into(),
            client_port: 9092,
            voters: (0..3).map(|i| Voter { id: NodeId(i), host: "127.0.0.1".into(), port: 9093 }).collect(),
            peer_addresses: BTreeMap::new(),
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_millis(500),
        }
    }

    fn hello() -> Hello {
        Hello {
            version: wire::WIRE_VERSION,
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            node_id: 2,
            shard: 0,
            shards: 1,
            client_host: "127.0.0.1".into(),
            client_port: 9094,
        }
    }

    #[test]
    fn a_member_of_this_cluster_is_welcome() {
        identity().check_hello(&hello()).unwrap();
    }

    #[test]
    fn handshakes_are_refused_with_the_reason() {
        let id = identity();
        let cases = [
            (Hello { version: 9, ..hello() }, HandshakeError::Version { got: 9, want: wire::WIRE_VERSION }),
            (
                Hello { cluster_id: "AAAAAAAAAAAAAAAAAAAAAA".into(), ..hello() },
                HandshakeError::OtherCluster { got: "AAAAAAAAAAAAAAAAAAAAAA".into(), want: id.cluster_id.clone() },
            ),
            (Hello { node_id: 1, ..hello() }, HandshakeError::SameNode(1)),
            (Hello { node_id: 5, ..hello() }, HandshakeError::UnknownNode(5)),
            (Hello { shard: 1, shards: 1, ..hello() }, HandshakeError::BadShard { shard: 1, shards: 1 }),
            (Hello { shard: 0, shards: 0, ..hello() }, HandshakeError::BadShard { shard: 0, shards: 0 }),
        ];
        for (h, want) in cases {
            assert_eq!(id.check_hello(&h), Err(want));
        }
    }
}
