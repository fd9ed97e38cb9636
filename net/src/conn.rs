//! One client connection: read frames, dispatch in order, write responses in order.
//!
//! Contract: a connection lives on the shard that accepted it, which also runs its TLS
//! handshake and encryption (TLS listeners: `tls.rs`) and SASL exchange (`auth`). Plaintext
//! answers go out with vectored sends of their parts (`send.rs`); TLS answers through the TLS
//! stream. Before SASL authentication only ApiVersions, SaslHandshake and SaslAuthenticate
//! frames of at most `MAX_SASL_REQUEST_BYTES` are served, each within
//! `SECURITY_HANDSHAKE_TIMEOUT_MS`; anything else, or a failed authentication (once its answer
//! is written), closes the connection. The reader decodes a frame,
//! runs the handler's first phase to completion (so work is issued in request order), and
//! starts the second phase as its own task (detached, `sluice_shard::task`: it runs to the end
//! even if the connection closes first), except a Fetch's, which the writer runs when it
//! gets to it (so a connection runs one fetch at a time: its reads in flight and its answer
//! held); the writer awaits the answers in order and writes them. At most `MAX_IN_FLIGHT_PER_CONNECTION` requests are read but not answered:
//! past that the reader stops reading, and ends if the writer ends first (a write failed).
//! Memory: the reader reserves budget for a frame's announced size (waiting for room) before
//! it reads or allocates any of its body, in two parts held for different times:
//! - the connection's part (`MAX_IN_FLIGHT_BYTES_PER_CONNECTION`) until the reply is written
//!   (or the client leaves), so one connection never has more than that read but unanswered;
//! - the shard's part (`MAX_IN_FLIGHT_BYTES_PER_SHARD`, and the large frames' share of it)
//!   until the second phase has finished: by then the frame's memory is gone (the handler's
//!   phases, which hold the decoded request and its `Bytes` slices of the frame, are dropped;
//!   Produce batches were copied into their logs' tails, a remote owner's before it answered).
//!
//! Both parts are freed when the body stalls past `request_body_timeout_ms`. Large frames
//! (> `LARGE_REQUEST_BYTES`) may hold only part of the shard's budget, so ordinary requests are
//! served while huge ones wait or stall. A client that stops reading therefore holds its own
//! connection budget and, of the shard's request budget, only the Fetch frames it pipelined
//! behind a reply the writer cannot write (their second phases have not run; Fetch frames are
//! small in practice, but nothing else bounds them). Its answered-but-unwritten responses (at
//! most its in-flight count, at most one of them a Fetch answer) count in the shard's `metrics::response_bytes_held` from the moment the second phase
//! finishes until they are written or the connection closes; Fetch answers are cut to what
//! `max_response_bytes_per_shard` leaves (`api/fetch.rs`), so the frames held for clients
//! that do not read stay bounded per shard. There is no write timeout: such a client keeps its
//! connection, and what it holds, until it leaves.
//! Client quotas (KIP-219): a handler that finds its client over a quota mutes the
//! connection (`Ctx::muted_until`); the reader then reads no further frame until the throttle
//! ends (the answer itself goes out at once, carrying `throttle_time_ms`). Every request's
//! first phase (SASL's excepted) is timed against the client's `request_percentage` quota
//! (`request_quota`); its throttle goes into the answer's `throttle_time_ms` here, for every
//! API whose response has one (`throttled`, `response::with_throttle`).
//! A frame whose size is out of range, or whose header or body cannot be decoded, closes this
//! connection only (after logging why); an unknown API key or version is answered with
//! UNSUPPORTED_VERSION and the connection stays open. On shutdown the reader stops at a frame
//! boundary and the writer finishes what was queued.

use crate::api::{self, Ctx, Reply};
use crate::frame::{parse_header, peek_prefix, unsupported_response, FrameError, HeaderPrefix};
use crate::response::Frame;
use bytes::{Bytes, BytesMut};
use futures::future::{select, Either, Fuse, FusedFuture, LocalBoxFuture};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, WriteHalf};
use futures::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use kafka_protocol::messages::ApiKey;
use sluice_core::limits::{
    FRAME_READ_CHUNK, LARGE_REQUEST_BYTES, MAX_IN_FLIGHT_BYTES_PER_CONNECTION, MAX_IN_FLIGHT_BYTES_PER_SHARD,
    MAX_IN_FLIGHT_PER_CONNECTION, MAX_REQUEST_BYTES, MAX_SASL_REQUEST_BYTES, SECURITY_HANDSHAKE_TIMEOUT_MS,
    SMALL_REQUESTS_RESERVE_PER_SHARD,
};
use sluice_shard::metrics::{self, Stage};
use sluice_shard::task::spawn_awaited;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tracing::Instrument;

const READ_BUFFER: usize = sluice_core::limits::CONNECTION_READ_BUFFER_BYTES;

/// A request read but not yet answered: its second phase (a task already running, or for a
/// Fetch the future the writer runs when it gets to it), and the
/// connection's part of its budget, held until the reply is written.
struct Queued {
    answer: LocalBoxFuture<'static, Answer>,
    _connection: StaticPermit,
}

/// A finished second phase: the response frame (counted as held until it is written).
struct Answer {
    frame: Result<Option<Frame>, FrameError>,
    _held: Option<metrics::HeldResponse>,
}

impl Answer {
    /// The answer of a second phase run as its own task; `None` when that task was dropped
    /// unfinished (its executor stopping), which closes the connection.
    fn or_lost(answer: Option<Answer>) -> Answer {
        answer.unwrap_or(Answer { frame: Err(FrameError::Unanswered), _held: None })
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        metrics::inflight(-1);
    }
}

thread_local! {
    /// The part of this shard's in-flight budget large frames may hold together (one shard
    /// per thread): a large frame takes from it first, then from the shard's whole budget.
    static LARGE_FRAMES: Rc<Semaphore> =
        Rc::new(Semaphore::new((MAX_IN_FLIGHT_BYTES_PER_SHARD - SMALL_REQUESTS_RESERVE_PER_SHARD) as u64));
}

/// The in-flight budget one request frame holds from before its body is read, for the
/// announced size: its connection's (until its reply is written) and the shard's.
struct Reserved {
    connection: StaticPermit,
    shard: ShardReserved,
}

/// The shard's part of a frame's budget (and the large frames' share when it is large), held
/// while the frame's memory may be: until the request's second phase has finished.
struct ShardReserved {
    _large: Option<StaticPermit>,
    _shard: StaticPermit,
    bytes: u64,
}

impl Drop for ShardReserved {
    fn drop(&mut self) {
        metrics::request_bytes_reserved(-(self.bytes as i64));
    }
}

/// Reserves the budget of a frame of `size` bytes (at most `MAX_REQUEST_BYTES`), waiting for
/// it. Always in the same order (connection, large frames, shard); the frames that hold shard
/// budget are being read (until `request_body_timeout_ms` at most) or answered, never waiting
/// for more, so the waiters get their turn, first come first served. A large frame queues for
/// the large frames' share first, so ordinary requests never queue behind one.
async fn reserve(ctx: &Ctx, connection: &Rc<Semaphore>, size: usize) -> Result<Reserved, ConnError> {
    debug_assert!(size <= MAX_REQUEST_BYTES);
    let closed = |e: glommio::GlommioError<()>| ConnError::Io(e.into());
    let mine =
        connection.acquire_static_permit(size.min(MAX_IN_FLIGHT_BYTES_PER_CONNECTION) as u64).await.map_err(closed)?;
    let large = match size > LARGE_REQUEST_BYTES {
        true => Some(LARGE_FRAMES.with(Rc::clone).acquire_static_permit(size as u64).await.map_err(closed)?),
        false => None,
    };
    let shard = ctx.in_flight.acquire_static_permit(size as u64).await.map_err(closed)?;
    metrics::request_bytes_reserved(size as i64);
    Ok(Reserved { connection: mine, shard: ShardReserved { _large: large, _shard: shard, bytes: size as u64 } })
}

/// Runs `work` unless the shard stops first (then `None`).
async fn stop_or<T>(
    ctx: &Ctx,
    work: impl std::future::Future<Output = Result<T, ConnError>>,
) -> Result<Option<T>, ConnError> {
    let work = std::pin::pin!(work);
    match select(work, ctx.shard.stopping().boxed_local()).await {
        Either::Left((r, _)) => r.map(Some),
        Either::Right(_) => Ok(None),
    }
}

/// Serves one connection until the client leaves, it misbehaves, or the shard stops. On a
/// TLS listener the handshake runs first (bounded by `SECURITY_HANDSHAKE_TIMEOUT_MS`); a
/// failed one closes the connection.
pub async fn serve(ctx: Rc<Ctx>, stream: TcpStream) {
    metrics::connection(1);
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    match ctx.listener.tls.as_ref().map(|t| t.acceptor()) {
        None => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            let (reader, writer) = stream.split();
            serve_stream(ctx, reader, Out::Plain { writer, fd }, peer).await;
        }
        Some(acceptor) => match crate::tls::handshake(acceptor, stream).await {
            Ok(tls) => match certificate_principal(&ctx, &tls) {
                Ok(()) => {
                    let (reader, writer) = tls.split();
                    serve_stream(ctx, reader, Out::Tls(writer), peer).await;
                }
                Err(why) => tracing::info!(client = ?peer, listener = %ctx.listener.name, why, "closing connection"),
            },
            Err(e) => tracing::info!(client = ?peer, listener = %ctx.listener.name, error = %e, "closing connection"),
        },
    }
    metrics::connection(-1);
}

/// On an SSL listener the client is its certificate's subject mapped by
/// `principal_mapping_rules` (Kafka's default principal builder), or stays ANONYMOUS without
/// one; on SASL_SSL the SASL user is the principal. `Err` (the connection is closed, as Kafka
/// fails the authentication) when no mapping rule applies to the subject.
fn certificate_principal(ctx: &Ctx, tls: &futures_rustls::server::TlsStream<TcpStream>) -> Result<(), String> {
    if ctx.listener.protocol.sasl() {
        return Ok(());
    }
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    if let Some(dn) = cert.and_then(|c| crate::auth::x500::subject_name(c)) {
        let name = ctx
            .listener
            .principal_mapper
            .map(&dn)
            .ok_or_else(|| format!("no principal mapping rule applies to {dn}"))?;
        ctx.session.borrow_mut().principal = Some(name);
    }
    Ok(())
}

async fn serve_stream<R: AsyncRead + Unpin>(ctx: Rc<Ctx>, reader: R, out: Out, peer: Option<SocketAddr>) {
    let (tx, rx) = local_channel::new_bounded::<Queued>(MAX_IN_FLIGHT_PER_CONNECTION);
    // The writer runs Fetch second phases, which wait on remote shards: no glommio `Task`
    // (sluice_shard::task).
    let mut writer = spawn_awaited(write_loop(out, rx, peer)).boxed_local().fuse();
    let to_writer = ToWriter { tx: &tx, writer: &mut writer };
    if let Err(why) = read_loop(&ctx, BufReader::with_capacity(READ_BUFFER, reader), to_writer, peer).await {
        tracing::warn!(client = ?peer, shard = %ctx.shard.id, error = %why, "closing connection");
    }
    drop(tx);
    if !writer.is_terminated() {
        let _ = writer.await;
    }
}

/// The writer task's end (`None` if it was dropped unfinished).
type WriterEnd = Fuse<LocalBoxFuture<'static, Option<()>>>;

/// Where the reader hands requests to the writer: its queue, and its end.
struct ToWriter<'a> {
    tx: &'a LocalSender<Queued>,
    writer: &'a mut WriterEnd,
}

impl ToWriter<'_> {
    /// Queues a request for the writer; `false` if the writer is gone (a write failed). Waits
    /// for room only while the writer runs: glommio 0.9's bounded channel keeps a sender
    /// waiting for room after its receiver is gone, which left the reader of a connection
    /// reset with a full queue waiting forever, holding the connection and its budget.
    async fn queue(&mut self, queued: Queued) -> bool {
        if self.writer.is_terminated() {
            return false;
        }
        match select(self.tx.send(queued).boxed_local(), &mut *self.writer).await {
            Either::Left((sent, _)) => sent.is_ok(),
            Either::Right(_) => false,
        }
    }
}

/// Where a connection's answers go: the socket itself (vectored sends of the frames' parts),
/// or the TLS stream over it (which encrypts into its own buffer).
enum Out {
    Plain { writer: WriteHalf<TcpStream>, fd: std::os::fd::RawFd },
    Tls(WriteHalf<futures_rustls::server::TlsStream<TcpStream>>),
}

impl Out {
    async fn write_frame(&mut self, parts: &[Bytes]) -> std::io::Result<()> {
        match self {
            Out::Plain { writer, fd } => crate::send::write_parts(writer, *fd, parts).await,
            Out::Tls(writer) => {
                for part in parts {
                    writer.write_all(part).await?;
                }
                writer.flush().await
            }
        }
    }

    async fn close(&mut self) {
        let _ = match self {
            Out::Plain { writer, .. } => writer.close().await,
            Out::Tls(writer) => writer.close().await,
        };
    }
}

/// Why a connection is closed by the broker.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("request size {0} is out of range (1..={MAX_REQUEST_BYTES})")]
    BadSize(i32),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the body of a {0}-byte request did not arrive within request_body_timeout_ms (or the broker is stopping)"
    )]
    SlowBody(i32),
    #[error("{0:?} request (key {1}) before SASL authentication")]
    Unauthenticated(Option<ApiKey>, i16),
    #[error("the SASL session expired without re-authentication (connections_max_reauth_ms)")]
    SessionExpired,
    #[error("a {0}-byte request before SASL authentication (at most {MAX_SASL_REQUEST_BYTES})")]
    UnauthenticatedTooLarge(usize),
    #[error("a Produce v{0} request: versions 0-2 are listed by ApiVersions (as Kafka 4.x lists them) but not served")]
    RetiredProduceVersion(i16),
}

/// Reads a frame body of `size` bytes (its budget reserved), touching its memory at most one
/// chunk ahead of the data (the buffer is allocated whole, so it never moves; pages not yet
/// written are not resident).
async fn read_body<R: AsyncRead + Unpin>(reader: &mut BufReader<R>, size: usize) -> std::io::Result<BytesMut> {
    let mut frame = BytesMut::with_capacity(size);
    while frame.len() < size {
        let old = frame.len();
        frame.resize(old + (size - old).min(FRAME_READ_CHUNK), 0);
        reader.read_exact(&mut frame[old..]).await?;
    }
    Ok(frame)
}

async fn read_loop<R: AsyncRead + Unpin>(
    ctx: &Rc<Ctx>,
    mut reader: BufReader<R>,
    mut to_writer: ToWriter<'_>,
    peer: Option<SocketAddr>,
) -> Result<(), ConnError> {
    let budget = Rc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES_PER_CONNECTION as u64));
    loop {
        let Some(size) = read_size(ctx, &mut reader, peer).await? else { return Ok(()) };
        let Some(len) = usize::try_from(size).ok().filter(|l| (1..=MAX_REQUEST_BYTES).contains(l)) else {
            return Err(ConnError::BadSize(size));
        };
        // A client over its quota is muted (KIP-219): no further request is read until then.
        if stop_or(ctx, wait_unmuted(ctx).map(Ok)).await?.is_none() {
            return Ok(()); // the shard is stopping
        }
        let authenticated = ctx.session.borrow().authenticated();
        if !authenticated && len > MAX_SASL_REQUEST_BYTES {
            return Err(ConnError::UnauthenticatedTooLarge(len));
        }
        // The budget for the whole announced frame is reserved before any of its body is read
        // or allocated (waiting while other frames hold it), so the bodies in memory on this
        // shard never exceed its budget; the client then has `request_body_timeout_ms` to send
        // the body, and leaving or stalling frees what it reserved.
        let Some(reserved) = stop_or(ctx, reserve(ctx, &budget, len)).await? else {
            return Ok(()); // the shard is stopping
        };
        let frame = read_body_in_time(ctx, &mut reader, len).await.map_err(|e| match e {
            BodyError::Io(e) => ConnError::Io(e),
            BodyError::Late => ConnError::SlowBody(size),
        })?;
        let frame = frame.freeze();
        let received = std::time::Instant::now();
        let prefix = peek_prefix(&frame)?;
        let spec = api::lookup(prefix.api_key).filter(|s| s.supports(prefix.version));
        if retired_produce(&prefix) {
            return Err(ConnError::RetiredProduceVersion(prefix.version));
        }
        if !authenticated && !allowed_before_authentication(prefix.api_key) {
            return Err(ConnError::Unauthenticated(spec.map(|s| s.key), prefix.api_key));
        }
        if ctx.session.borrow().expired(received) && !is_sasl(prefix.api_key) {
            return Err(ConnError::SessionExpired);
        }
        // `frame` is moved into the first phase, so the reader keeps none of it past it.
        let reply = first_phase(ctx, spec, prefix, frame, peer).await?;
        let api = spec.map(|s| s.name).unwrap_or("Unsupported");
        let Reserved { connection, shard } = reserved;
        let second = second_phase(reply, shard, api, received);
        // A Fetch runs when the writer gets to it, so a connection runs one fetch at a time
        // (reads in flight, answers held); any other second phase runs now, as a task that
        // remote shards wake (no glommio `Task`: sluice_shard::task).
        let answer = match spec.map(|s| s.key) {
            Some(ApiKey::Fetch) => second.boxed_local(),
            _ => spawn_awaited(second).map(Answer::or_lost).boxed_local(),
        };
        metrics::inflight(1);
        if !to_writer.queue(Queued { answer, _connection: connection }).await {
            return Ok(()); // the writer is gone (write error): nothing left to do
        }
        if ctx.session.borrow().closing() {
            return Ok(()); // SASL failed: the answer is written, then the connection closes
        }
    }
}

/// What a SASL listener answers before authentication (Kafka's SaslServerAuthenticator):
/// anything else closes the connection.
fn allowed_before_authentication(api_key: i16) -> bool {
    api_key == ApiKey::ApiVersions as i16 || is_sasl(api_key)
}

/// Whether a request is part of a SASL exchange (re-authentication, KIP-368).
fn is_sasl(api_key: i16) -> bool {
    api_key == ApiKey::SaslHandshake as i16 || api_key == ApiKey::SaslAuthenticate as i16
}

/// Reads the next frame's size prefix; `Ok(None)` when the connection ends at this frame
/// boundary without an error (the client left, stayed idle too long, or the shard stops).
async fn read_size<R: AsyncRead + Unpin>(
    ctx: &Ctx,
    reader: &mut BufReader<R>,
    peer: Option<SocketAddr>,
) -> Result<Option<i32>, ConnError> {
    let mut size = [0u8; 4];
    // Stop at a frame boundary when the shard stops, or when the client stays idle for
    // `connections_max_idle_ms`; a client that leaves ends here too.
    let read = reader.read_exact(&mut size).boxed_local();
    // Before authentication each step of the exchange must come within the handshake timeout.
    let idle_ms = match ctx.session.borrow().authenticated() {
        true => ctx.shard.config.connections_max_idle_ms,
        false => SECURITY_HANDSHAKE_TIMEOUT_MS,
    };
    let idle = glommio::timer::sleep(Duration::from_millis(idle_ms));
    let stop_or_idle = select(ctx.shard.stopping().boxed_local(), idle.boxed_local());
    let ended = match select(read, stop_or_idle).await {
        Either::Right((Either::Right(_), _)) => {
            tracing::debug!(client = ?peer, "closing an idle connection");
            true
        }
        Either::Left((Ok(()), _)) => false,
        Either::Left((Err(e), _))
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            true // the client went away between requests
        }
        Either::Left((Err(e), _)) => return Err(e.into()),
        Either::Right(_) => true,
    };
    Ok((!ended).then(|| i32::from_be_bytes(size)))
}

/// Why a frame body was not read.
enum BodyError {
    Io(std::io::Error),
    /// Not all there within `request_body_timeout_ms`, or the shard is stopping.
    Late,
}

/// Reads a frame body of `len` bytes (its budget reserved) if it arrives within
/// `request_body_timeout_ms` and the shard does not stop first.
async fn read_body_in_time<R: AsyncRead + Unpin>(
    ctx: &Ctx,
    reader: &mut BufReader<R>,
    len: usize,
) -> Result<BytesMut, BodyError> {
    let deadline = glommio::timer::sleep(Duration::from_millis(ctx.shard.config.request_body_timeout_ms));
    match select(
        read_body(reader, len).boxed_local(),
        select(deadline.boxed_local(), ctx.shard.stopping().boxed_local()),
    )
    .await
    {
        Either::Left((r, _)) => r.map_err(BodyError::Io),
        Either::Right(_) => Err(BodyError::Late),
    }
}

/// A Produce request of a version ApiVersions lists but nobody serves (0–2): Kafka 4.x closes
/// the connection on it, so does sluice.
fn retired_produce(prefix: &HeaderPrefix) -> bool {
    prefix.api_key == ApiKey::Produce as i16
        && (api::produce::ADVERTISED_MIN_VERSION..api::produce::SPEC.min_version).contains(&prefix.version)
}

/// A request's first phase, run to completion before the next frame is read (so work is
/// issued in request order); an unknown API or version is answered UNSUPPORTED_VERSION.
/// Takes `frame` whole: nothing of it is kept past this but what the reply holds.
async fn first_phase(
    ctx: &Rc<Ctx>,
    spec: Option<&'static api::ApiSpec>,
    prefix: HeaderPrefix,
    frame: Bytes,
    peer: Option<SocketAddr>,
) -> Result<Reply, ConnError> {
    Ok(match spec {
        None if prefix.api_key == ApiKey::ApiVersions as i16 => {
            api::reply_now(api::api_versions::unsupported_version(prefix.correlation_id))
        }
        None => {
            tracing::debug!(client = ?peer, api_key = prefix.api_key, version = prefix.version, "unsupported API or version");
            api::reply_now(Ok(unsupported_response(prefix.correlation_id)))
        }
        Some(spec) => {
            let mut req = parse_header(spec.key, frame)?;
            req.peer = peer;
            let span = tracing::debug_span!(
                "request",
                shard = %ctx.shard.id,
                api = ?spec.key,
                v = req.version,
                corr = req.correlation_id,
                client = req.client_id.as_deref().unwrap_or(""),
            );
            // Timed for the request quota only when some quota is set (no cost otherwise).
            let quota = (!ctx.shard.metadata().quotas.is_empty() && !is_sasl(req.api_key))
                .then(|| (req.request_throttle_ms.clone(), req.client_id.clone(), std::time::Instant::now()));
            let version = req.version;
            let reply = (spec.handle)(ctx.clone(), req).instrument(span).await?;
            match quota {
                Some((throttle, client_id, started)) => {
                    let ms = request_quota(ctx, client_id, started.elapsed());
                    throttle.set(ms);
                    throttled(reply, spec.key, version, ms)
                }
                None => reply,
            }
        }
    })
}

/// Records a request's first-phase time against the client's `request_percentage` quota and
/// mutes the connection when it is over; returns the throttle (ms).
fn request_quota(ctx: &Ctx, client_id: Option<String>, took: Duration) -> i32 {
    let kind = sluice_shard::metadata::quota::QuotaKind::Request;
    let ms = crate::quota::record(ctx, client_id.as_deref(), kind, crate::quota::request_percentage(took));
    crate::quota::mute(ctx, ms);
    ms
}

/// The reply with the request-time throttle in its `throttle_time_ms`, whatever the API (the
/// one place it is filled in: `response::with_throttle`).
fn throttled(reply: Reply, key: ApiKey, version: i16, ms: i32) -> Reply {
    if ms <= 0 {
        return reply;
    }
    async move { reply.await.map(|f| f.map(|f| crate::response::with_throttle(f, key, version, ms))) }.boxed_local()
}

/// Waits until the connection is no longer muted by a quota throttle.
async fn wait_unmuted(ctx: &Ctx) {
    while let Some(until) = ctx.muted_until.get() {
        let now = std::time::Instant::now();
        if until <= now {
            ctx.muted_until.set(None);
            return;
        }
        glommio::timer::sleep(until - now).await;
    }
}

/// Runs a request's second phase (its own task, so it finishes even while the writer waits
/// for a client that does not read), then frees the shard's part of its budget: the phases,
/// and with them every slice of the request frame, are dropped by then.
async fn second_phase(reply: Reply, shard: ShardReserved, api: &'static str, received: std::time::Instant) -> Answer {
    let frame = reply.await;
    drop(shard);
    metrics::record_request(api, received.elapsed(), frame.is_err());
    // Counted in the same step as the handler finished (no await in between).
    let held = match &frame {
        Ok(Some(f)) => Some(metrics::HeldResponse::new(f.held_bytes() as u64)),
        _ => None,
    };
    Answer { frame, _held: held }
}

/// Writes the answers in order, then closes the connection's write side.
async fn write_loop(mut out: Out, rx: LocalReceiver<Queued>, peer: Option<SocketAddr>) {
    while let Some(mut queued) = rx.recv().await {
        let answer = (&mut queued.answer).await;
        match answer.frame {
            Ok(Some(frame)) => {
                let started = std::time::Instant::now();
                if let Err(e) = out.write_frame(frame.parts()).await {
                    tracing::debug!(client = ?peer, error = %e, "write failed");
                    return;
                }
                metrics::record_stage(Stage::Response, started.elapsed());
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(client = ?peer, error = %e, "cannot answer request; closing connection");
                out.close().await;
                return;
            }
        }
    }
    out.close().await;
}
