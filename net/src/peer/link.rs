//! One outbound link: this shard's connection to one other member, its bounded send queue, and
//! the dial / handshake / heartbeat / reconnect loop that keeps it up.
//!
//! Contract: the queue holds at most `PEER_OUTBOUND_QUEUE_FRAMES` frames and
//! `PEER_OUTBOUND_QUEUE_BYTES` payload bytes (each frame's bytes are held by a permit until it
//! is written); frames queued while the connection drops are written after the reconnect.
//! Dials back off from `PEER_RECONNECT_MIN_BACKOFF_MS` doubling to
//! `PEER_RECONNECT_MAX_BACKOFF_MS` (reset once a connection stayed up a session). A heartbeat
//! goes out at least every `peer_heartbeat_interval_ms` even while data is queued; an answer
//! missing for `peer_session_timeout_ms` drops the connection. The same failure is logged
//! once (a warning), not on every redial.

use super::wire::{self, Header, Hello, PREAMBLE};
use super::{or_stopping, read_frame, within, write_frame, PeerError, PeerFrame, PeerNet, SendError};
use futures::future::{select, Either};
use futures::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use sluice_core::cluster::NodeId;
use sluice_core::limits::{
    PEER_CONNECT_TIMEOUT_MS, PEER_MAX_FRAME_BYTES, PEER_MAX_HEADER_BYTES, PEER_OUTBOUND_QUEUE_BYTES,
    PEER_OUTBOUND_QUEUE_FRAMES, PEER_RECONNECT_MAX_BACKOFF_MS, PEER_RECONNECT_MIN_BACKOFF_MS,
};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A frame waiting in the queue, holding its share of the byte bound.
struct Outgoing {
    frame: PeerFrame,
    _permit: StaticPermit,
}

/// Why a frame could not be queued (before the node is known).
pub(super) enum QueueError {
    Full,
    TooLarge(wire::WireError),
}

impl QueueError {
    pub(super) fn with_node(self, node: NodeId) -> SendError {
        match self {
            QueueError::Full => SendError::Full(node),
            QueueError::TooLarge(e) => SendError::TooLarge(e),
        }
    }
}

/// See the module docs.
pub struct Link {
    pub node: NodeId,
    pub address: SocketAddr,
    tx: LocalSender<Outgoing>,
    rx: LocalReceiver<Outgoing>,
    bytes: Rc<Semaphore>,
    connected: Cell<bool>,
}

impl Link {
    pub fn new(node: NodeId, address: SocketAddr) -> Link {
        let (tx, rx) = local_channel::new_bounded(PEER_OUTBOUND_QUEUE_FRAMES);
        let bytes = Rc::new(Semaphore::new(PEER_OUTBOUND_QUEUE_BYTES as u64));
        Link { node, address, tx, rx, bytes, connected: Cell::new(false) }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.get()
    }

    fn units(frame: &PeerFrame) -> Result<u64, QueueError> {
        let len = frame.payload.len();
        if len.saturating_add(PEER_MAX_HEADER_BYTES) > PEER_MAX_FRAME_BYTES {
            let l = u32::try_from(len).unwrap_or(u32::MAX);
            return Err(QueueError::TooLarge(wire::WireError::BadLength(l)));
        }
        Ok(u64::try_from(len.max(1)).unwrap_or(u64::MAX))
    }

    pub(super) fn try_push(&self, frame: PeerFrame) -> Result<(), QueueError> {
        let permit = self.bytes.try_acquire_static_permit(Self::units(&frame)?).map_err(|_| QueueError::Full)?;
        self.tx.try_send(Outgoing { frame, _permit: permit }).map_err(|_| QueueError::Full)
    }

    pub(super) async fn push(&self, frame: PeerFrame) -> Result<(), QueueError> {
        let permit = self.bytes.acquire_static_permit(Self::units(&frame)?).await.map_err(|_| QueueError::Full)?;
        self.tx.send(Outgoing { frame, _permit: permit }).await.map_err(|_| QueueError::Full)
    }
}

/// Keeps the link up until the shard stops.
pub async fn run(net: Rc<PeerNet>, link: Rc<Link>) {
    let min = Duration::from_millis(PEER_RECONNECT_MIN_BACKOFF_MS);
    let max = Duration::from_millis(PEER_RECONNECT_MAX_BACKOFF_MS);
    let mut backoff = min;
    let mut last_error: Option<String> = None;
    while !net.shard.is_stopping() {
        let started = Instant::now();
        let result = or_stopping(&net.shard, connect_and_serve(&net, &link)).await;
        link.connected.set(false);
        let Some(result) = result else { break };
        if started.elapsed() >= net.identity.session_timeout {
            backoff = min;
        }
        if let Err(e) = result {
            let text = e.to_string();
            if last_error.as_deref() != Some(text.as_str()) {
                tracing::warn!(shard = %net.shard.id, node = %link.node, address = %link.address, error = %text,
                    "peer link down; redialling with backoff");
                last_error = Some(text);
            }
        }
        if or_stopping(&net.shard, glommio::timer::sleep(backoff)).await.is_none() {
            break;
        }
        backoff = (backoff * 2).min(max);
    }
}

/// One connection's life: dial, handshake, then heartbeats and queued frames until it fails.
async fn connect_and_serve(net: &Rc<PeerNet>, link: &Rc<Link>) -> Result<(), PeerError> {
    let limit = Duration::from_millis(PEER_CONNECT_TIMEOUT_MS);
    let connect = async { TcpStream::connect(link.address).await.map_err(|e| std::io::Error::other(e.to_string())) };
    let stream = within(limit, "connecting", connect).await?;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    handshake(net, link, &mut reader, &mut writer, limit).await?;
    link.connected.set(true);
    tracing::info!(shard = %net.shard.id, node = %link.node, address = %link.address, "peer link up");
    let read = Box::pin(read_acks(net, link.node, &mut reader));
    let write = Box::pin(write_queue(net, link, &mut writer));
    let ended = match select(read, write).await {
        Either::Left((r, _)) | Either::Right((r, _)) => r,
    };
    ended
}

async fn handshake(
    net: &PeerNet,
    link: &Link,
    reader: &mut ReadHalf<TcpStream>,
    writer: &mut WriteHalf<TcpStream>,
    limit: Duration,
) -> Result<(), PeerError> {
    let id = &net.identity;
    let hello = Hello {
        version: wire::WIRE_VERSION,
        cluster_id: id.cluster_id.clone(),
        node_id: id.node_id.0,
        shard: net.shard.id.0,
        shards: id.shards,
        client_host: id.client_host.clone(),
        client_port: id.client_port,
    };
    within(limit, "sending the preamble", writer.write_all(&PREAMBLE)).await?;
    within(limit, "sending the hello", write_frame(writer, &Header::Hello(hello), &[])).await?;
    let (answer, _) = read_frame(reader, PEER_MAX_HEADER_BYTES, limit, "waiting for the handshake answer").await?;
    match answer {
        Header::Welcome(w) if w.node_id == link.node.0 => {
            net.view.welcomed(link.node, w.client_host, w.client_port, Instant::now());
            Ok(())
        }
        Header::Welcome(w) => {
            Err(PeerError::WrongNode { address: link.address.to_string(), got: w.node_id, expected: link.node })
        }
        Header::Refused { reason } => Err(PeerError::RefusedByPeer(reason)),
        _ => Err(PeerError::Unexpected("non-handshake")),
    }
}

/// Reads heartbeat answers; silence for a session drops the connection.
async fn read_acks(net: &PeerNet, node: NodeId, reader: &mut ReadHalf<TcpStream>) -> Result<(), PeerError> {
    loop {
        let (h, _) =
            read_frame(reader, PEER_MAX_HEADER_BYTES, net.identity.session_timeout, "waiting for a heartbeat answer")
                .await?;
        match h {
            Header::HeartbeatAck { .. } => net.view.heard(node, Instant::now()),
            _ => return Err(PeerError::Unexpected("non-ack")),
        }
    }
}

/// Writes queued frames, and a heartbeat whenever one is due.
async fn write_queue(net: &PeerNet, link: &Link, writer: &mut WriteHalf<TcpStream>) -> Result<(), PeerError> {
    let interval = net.identity.heartbeat_interval;
    let mut seq: u64 = 0;
    let mut last_beat: Option<Instant> = None;
    loop {
        if last_beat.is_none_or(|t| t.elapsed() >= interval) {
            seq = seq.wrapping_add(1);
            write_frame(writer, &Header::Heartbeat { seq }, &[]).await?;
            last_beat = Some(Instant::now());
        }
        let wait = interval.saturating_sub(last_beat.map(|t| t.elapsed()).unwrap_or_default());
        let next = select(Box::pin(link.rx.recv()), Box::pin(glommio::timer::sleep(wait))).await;
        if let Either::Left((Some(out), _)) = next {
            let header = Header::Data { kind: out.frame.kind, route: out.frame.route.clone() };
            write_frame(writer, &header, &out.frame.payload).await?;
            net.stats.frames_sent.set(net.stats.frames_sent.get() + 1);
        }
    }
}
