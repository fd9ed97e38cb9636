//! Inbound broker-to-broker connections: every shard accepts on the shared peer port
//! (SO_REUSEPORT), checks the handshake, answers heartbeats and routes data frames.
//!
//! Contract: a shard holds at most `MAX_PEER_CONNECTIONS_PER_SHARD` inbound connections; more
//! are closed at accept. Until the handshake passed, a connection must send the preamble and a
//! `Hello` of at most `PEER_MAX_HEADER_BYTES` within `PEER_CONNECT_TIMEOUT_MS`, so an unknown
//! client can make a shard hold at most that many bytes per connection. A refused handshake
//! gets a `Refused` frame with the reason, then the connection is closed; every failure
//! (garbage, oversize, stall, another cluster) is logged with the remote address and ends only
//! that connection. A heartbeat's answer is dropped, not queued without bound, if the peer
//! does not read them.

use super::wire::{check_preamble, Header, Welcome};
use super::{or_stopping, read_frame, within, write_frame, Delivery, PeerError, PeerFrame, PeerNet};
use futures::future::{select, Either};
use futures::io::{AsyncReadExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use sluice_core::cluster::NodeId;
use sluice_core::limits::{
    ACCEPT_RETRY_PAUSE_MS, MAX_PEER_CONNECTIONS_PER_SHARD, PEER_CONNECT_TIMEOUT_MS, PEER_MAX_FRAME_BYTES,
    PEER_MAX_HEADER_BYTES, PEER_PENDING_ACKS,
};
use std::cell::Cell;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Accepts peer connections on this shard until it stops.
pub async fn run(net: Rc<PeerNet>, socket: socket2::Socket) {
    // SAFETY: the fd comes from a bound, listening socket we own and hand over whole.
    let listener = unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) };
    let open = Rc::new(Cell::new(0usize));
    while let Some(accepted) = or_stopping(&net.shard, listener.accept()).await {
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard = %net.shard.id, error = %e, "peer accept failed");
                glommio::timer::sleep(Duration::from_millis(ACCEPT_RETRY_PAUSE_MS)).await;
                continue;
            }
        };
        if open.get() >= MAX_PEER_CONNECTIONS_PER_SHARD {
            net.stats.connections_refused.set(net.stats.connections_refused.get() + 1);
            tracing::warn!(shard = %net.shard.id, remote = ?stream.peer_addr().ok(), "peer connection refused: too many open");
            continue;
        }
        open.set(open.get() + 1);
        let (net, open) = (net.clone(), open.clone());
        glommio::spawn_local(async move {
            let remote = stream.peer_addr().ok();
            if let Some(Err(e)) = or_stopping(&net.shard, serve(&net, stream)).await {
                net.stats.connections_refused.set(net.stats.connections_refused.get() + 1);
                tracing::warn!(shard = %net.shard.id, remote = ?remote, error = %e, "peer connection closed");
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// One inbound connection: handshake, then frames until it fails or ends.
async fn serve(net: &Rc<PeerNet>, stream: TcpStream) -> Result<(), PeerError> {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    let node = handshake(net, &mut reader, &mut writer).await?;
    let (acks, pending) = local_channel::new_bounded::<u64>(PEER_PENDING_ACKS);
    let read = Box::pin(read_frames(net, node, &mut reader, acks));
    let write = Box::pin(write_acks(&mut writer, pending));
    let ended = match select(read, write).await {
        Either::Left((r, _)) | Either::Right((r, _)) => r,
    };
    ended
}

/// Reads the preamble and the `Hello`, answers it; the dialer's node id when welcome.
async fn handshake(
    net: &PeerNet,
    reader: &mut ReadHalf<TcpStream>,
    writer: &mut WriteHalf<TcpStream>,
) -> Result<NodeId, PeerError> {
    let limit = Duration::from_millis(PEER_CONNECT_TIMEOUT_MS);
    let mut preamble = [0u8; 8];
    within(limit, "waiting for the preamble", reader.read_exact(&mut preamble)).await?;
    check_preamble(preamble)?;
    let (first, _) = read_frame(reader, PEER_MAX_HEADER_BYTES, limit, "waiting for the hello").await?;
    let Header::Hello(hello) = first else { return Err(PeerError::Unexpected("non-hello first")) };
    if let Err(e) = net.identity.check_hello(&hello) {
        let refused = Header::Refused { reason: e.to_string() };
        let _ = within(limit, "sending the refusal", write_frame(writer, &refused, &[])).await;
        return Err(e.into());
    }
    let id = &net.identity;
    let welcome = Welcome {
        node_id: id.node_id.0,
        shards: id.shards,
        client_host: id.client_host.clone(),
        client_port: id.client_port,
    };
    within(limit, "sending the welcome", write_frame(writer, &Header::Welcome(welcome), &[])).await?;
    let node = NodeId(hello.node_id);
    net.view.welcomed(node, hello.client_host, hello.client_port, Instant::now());
    Ok(node)
}

/// Reads heartbeats and data frames; any frame renews the peer's session.
async fn read_frames(
    net: &Rc<PeerNet>,
    node: NodeId,
    reader: &mut ReadHalf<TcpStream>,
    acks: LocalSender<u64>,
) -> Result<(), PeerError> {
    loop {
        let (header, payload) =
            read_frame(reader, PEER_MAX_FRAME_BYTES, net.identity.session_timeout, "waiting for a frame").await?;
        net.view.heard(node, Instant::now());
        match header {
            Header::Heartbeat { seq } => {
                let _ = acks.try_send(seq);
            }
            Header::Data { kind, route } => {
                net.route(Delivery { from: node, frame: PeerFrame { kind, route, payload } }).await;
            }
            _ => return Err(PeerError::Unexpected("handshake-only")),
        }
    }
}

async fn write_acks(writer: &mut WriteHalf<TcpStream>, pending: LocalReceiver<u64>) -> Result<(), PeerError> {
    while let Some(seq) = pending.recv().await {
        write_frame(writer, &Header::HeartbeatAck { seq }, &[]).await?;
    }
    Ok(())
}
