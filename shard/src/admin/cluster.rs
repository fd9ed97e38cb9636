//! The metadata log in a cluster: the controller proposes records to group 0, every broker
//! applies what commits.
//!
//! Contract (brokers with peers; a lone broker never comes here):
//! - The controller is the leader of group 0 (`__cluster_metadata-0`, hosted by shard 0 of
//!   every member); Metadata and DescribeCluster name it. A change may reach shard 0 of any
//!   broker (Kafka 4 brokers forward admin requests to the controller, so clients send them
//!   anywhere): that broker decides it against its applied snapshot (caught up with what its
//!   log has committed), and proposes the records itself when it leads group 0, or forwards
//!   the batches to the leader (`MetadataForward` over the peer transport, answered with the
//!   committed offsets or an error), then answers once it has applied them itself. A decision
//!   made on a stale snapshot is caught at apply: every broker refuses a record that does not
//!   fit, the applier remembers the batches with a refused record, and the change is answered
//!   NOT_CONTROLLER (retriable: the client asks again and the next decision sees the newer
//!   state). No leader known: the change waits up to `METADATA_APPLY_TIMEOUT_MS` for one.
//! - [`start`] spawns, on shard 0 of every member, the applier: it reads committed batches of
//!   group 0 in order from the offset after the snapshot's `applied_offset`, applies their
//!   records ([`crate::metadata::apply`]; a record that does not fit is skipped the same way
//!   on every broker), saves the snapshot with the new `applied_offset` (the snapshot file is
//!   the checkpoint: a restart replays only what follows) and publishes it to every shard,
//!   which opens the logs of the replicas placed here and drops those of deleted topics.
//! - Leader changes of data partitions ([`follow_leaders`], on every shard with a runtime):
//!   when this broker wins a data group's election (a new term), its shard queues a
//!   `PartitionChanged` (leader = this broker, epoch = the term, ISR = the leader's in-sync
//!   replicas once followers answered, all replicas if it knows none), unless the snapshot
//!   already records that epoch or a newer one. Shard 0 proposes the queue through
//!   [`propose`] (here or forwarded to the controller), retrying a bounded number of times;
//!   apply refuses an epoch older than the recorded one, so a late record never overwrites a
//!   newer leader. Every broker's Metadata then names the new leader.
//! - [`controller`] is the group-0 leader as shard 0 last saw it, readable from any shard
//!   (one broker per process).

use super::{log_failures, publish, save};
use crate::error::PartitionError;
use crate::metadata::apply::{apply_all, Local};
use crate::metadata::records::{decode_batch, to_batches, MetadataRecord, PartitionChanged};
use crate::placement::recent_load;
use crate::raft::GroupId;
use crate::replica::Replicas;
use crate::shard::Shard;
use bytes::Bytes;
use futures::channel::oneshot;
use sluice_core::batch::BatchHeader;
use sluice_core::limits::METADATA_APPLY_TIMEOUT_MS;
use sluice_core::Offset;
use sluice_storage::watermark::Watermark;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// Bytes of committed metadata batches read per round.
const READ_BYTES: usize = 4 * 1024 * 1024;

/// The metadata log's leader as shard 0 last learned it (-1: none known).
static CONTROLLER: AtomicI32 = AtomicI32::new(-1);

thread_local! {
    /// The last metadata log offset applied on this shard (shard 0), for the controller's
    /// waits.
    static APPLIED: Rc<Watermark> = Rc::new(Watermark::new(-1));
    /// Base offsets of recently applied batches with a refused record (bounded).
    static REFUSED: RefCell<VecDeque<i64>> = const { RefCell::new(VecDeque::new()) };
    /// How this shard sends forwarded proposals and their answers (set by net at start).
    static LINK: RefCell<Option<Rc<dyn ForwardLink>>> = const { RefCell::new(None) };
    /// Forwarded proposals waiting for the controller's answer, by request id.
    static PENDING: RefCell<BTreeMap<u64, oneshot::Sender<ForwardAnswer>>> =
        const { RefCell::new(BTreeMap::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// The controller's answer to a forwarded proposal: the committed offsets (first batch's base,
/// last batch's last) or why not.
type ForwardAnswer = Result<(Offset, Offset), String>;

/// Refused batches remembered (a change waits for its own batches only briefly).
const REFUSED_KEPT: usize = 1024;

/// What kind of forwarded message a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    Request,
    Reply,
}

/// The peer transport as the metadata forwarding uses it (net implements it).
pub trait ForwardLink {
    /// Queues `payload` for shard 0 of broker `to`; false when it could not be queued.
    fn send(&self, to: i32, kind: Forwarded, payload: Bytes) -> bool;
}

/// Installs the transport forwarded proposals use (shard 0, at start).
pub fn set_link(link: Rc<dyn ForwardLink>) {
    LINK.with(|l| *l.borrow_mut() = Some(link));
}

/// Leadership wins of this broker's data groups waiting for shard 0 to record them (every
/// shard of the process pushes; one broker per process).
static WON: std::sync::Mutex<Vec<PartitionChanged>> = std::sync::Mutex::new(Vec::new());

/// How long a new leader waits for its followers before reading its ISR.
const ISR_SETTLE_MS: u64 = 500;
/// How often shard 0 looks for leadership wins to record.
const WON_POLL_MS: u64 = 50;
/// Attempts to record one leadership win.
const WON_ATTEMPTS: u32 = 20;

/// On every shard with a replication runtime: queues a `PartitionChanged` for each data group
/// this broker comes to lead (module docs).
pub fn follow_leaders(shard: &Rc<Shard>, r: &Rc<Replicas>) {
    let (shard_w, r_w) = (Rc::downgrade(shard), Rc::downgrade(r));
    let me = r.node();
    r.on_leader_change(Box::new(move |group, leader, epoch| {
        if group == GroupId::METADATA || leader != Some(me) {
            return;
        }
        let (shard_w, r_w) = (shard_w.clone(), r_w.clone());
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(ISR_SETTLE_MS)).await;
            let (Some(shard), Some(r)) = (shard_w.upgrade(), r_w.upgrade()) else { return };
            if let Some(c) = leader_change(&shard, &r, group, epoch) {
                tracing::info!(partition = c.partition, epoch = c.leader_epoch, isr = ?c.isr, "recording a leader change");
                WON.lock().expect("no panics while holding WON").push(c);
            }
        })
        .detach();
    }));
}

/// The record of this broker leading `group` at `epoch`, if it still does and the snapshot
/// records an older epoch.
fn leader_change(
    shard: &Shard,
    r: &Replicas,
    group: GroupId,
    epoch: sluice_core::LeaderEpoch,
) -> Option<PartitionChanged> {
    let (leader, now) = r.leader(group)?;
    if leader != Some(r.node()) || now != epoch {
        return None; // lost it meanwhile: the newer leader records itself
    }
    let tp = r.partition_of(group)?;
    let snap = shard.metadata();
    let id = snap.topics.get(&tp.topic)?.id;
    let state = snap.partition(&tp.topic, tp.partition, r.node().0)?;
    if epoch.0 <= state.leader_epoch {
        return None;
    }
    let mut isr: Vec<i32> = r.isr(group).unwrap_or_default().into_iter().map(|n| n.0).collect();
    isr.retain(|n| state.replicas.contains(n));
    if isr.is_empty() {
        isr = state.replicas.clone();
    }
    Some(PartitionChanged { id, partition: tp.partition.0, leader: r.node().0, leader_epoch: epoch.0, isr })
}

/// Shard 0: records queued leadership wins, forever.
async fn record_leaders(shard: Rc<Shard>, r: Rc<Replicas>) {
    let mut retry: Vec<(PartitionChanged, u32)> = Vec::new();
    while !shard.is_stopping() {
        glommio::timer::sleep(Duration::from_millis(WON_POLL_MS)).await;
        let fresh = std::mem::take(&mut *WON.lock().expect("no panics while holding WON"));
        retry.extend(fresh.into_iter().map(|c| (c, 0)));
        for (c, tries) in std::mem::take(&mut retry) {
            if !still_newer(&shard, &c) {
                continue;
            }
            if let Err(e) = propose(&r, &[MetadataRecord::PartitionChanged(c.clone())]).await {
                if tries + 1 < WON_ATTEMPTS {
                    tracing::debug!(error = %e, "recording a leader change failed; retrying");
                    retry.push((c, tries + 1));
                } else {
                    tracing::warn!(error = %e, "a leader change was not recorded");
                }
            }
        }
    }
}

/// Whether the snapshot still records an older epoch for `c`'s partition (same topic id).
fn still_newer(shard: &Shard, c: &PartitionChanged) -> bool {
    let snap = shard.metadata();
    let Some(name) = snap.topic_by_id(&c.id) else { return false };
    let Some(repl) = snap.replication.get(name) else { return false };
    usize::try_from(c.partition)
        .ok()
        .and_then(|p| repl.partitions.get(p))
        .is_some_and(|p| p.leader_epoch < c.leader_epoch)
}

/// The controller (the metadata log's leader), if one is known.
pub fn controller() -> Option<i32> {
    let c = CONTROLLER.load(Ordering::Relaxed);
    (c >= 0).then_some(c)
}

fn applied() -> Rc<Watermark> {
    APPLIED.with(|w| w.clone())
}

/// On shard 0 of a cluster member, once group 0 is open: follows the controller and starts
/// the applier.
pub fn start(shard: &Rc<Shard>, r: &Rc<Replicas>) {
    assert_eq!(shard.id.index(), 0, "the metadata log lives on shard 0");
    let set = |leader: Option<sluice_core::cluster::NodeId>| {
        CONTROLLER.store(leader.map_or(-1, |n| n.0), Ordering::Relaxed);
    };
    if let Some((leader, _)) = r.leader(GroupId::METADATA) {
        set(leader);
    }
    r.on_leader_change(Box::new(move |group, leader, _| {
        if group == GroupId::METADATA {
            set(leader);
        }
    }));
    applied().advance(shard.metadata().applied_offset);
    glommio::spawn_local(applier(shard.clone(), r.clone())).detach();
    glommio::spawn_local(record_leaders(shard.clone(), r.clone())).detach();
}

/// Applies committed metadata batches in order, forever (see the module docs).
async fn applier(shard: Rc<Shard>, r: Rc<Replicas>) {
    let mut next = Offset(shard.metadata().applied_offset + 1);
    while !shard.is_stopping() {
        r.wait_beyond(GroupId::METADATA, next).await;
        let (batches, after) = match r.read_committed(GroupId::METADATA, next, READ_BYTES).await {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "reading the metadata log failed; retrying");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if after <= next {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        }
        apply_batches(&shard, &batches, after).await;
        next = after;
    }
}

/// Applies `batches` (committed, in order, ending before `after`), saves and publishes.
async fn apply_batches(shard: &Rc<Shard>, batches: &[Bytes], after: Offset) {
    let mut decoded = Vec::new();
    for b in batches {
        let base = BatchHeader::parse(b).map(|h| h.base_offset).unwrap_or(-1);
        match decode_batch(b) {
            Ok(rs) => decoded.push((base, rs)),
            // Every broker refuses the same committed bytes: skipping keeps them in step.
            Err(e) => {
                tracing::error!(error = %e, "an undecodable metadata batch was skipped");
                refused(base);
            }
        }
    }
    let places = decoded
        .iter()
        .flat_map(|(_, rs)| rs)
        .any(|r| matches!(r, MetadataRecord::TopicCreated(_) | MetadataRecord::PartitionsAdded(_)));
    let rates = if places { recent_load(shard).await } else { Vec::new() };
    let local = Local { node: shard.config.node_id, n_shards: shard.n_shards, rates: &rates };
    let mut snap = (*shard.metadata()).clone();
    for (base, rs) in &decoded {
        let refusals = apply_all(&mut snap, rs, &local);
        for (r, e) in &refusals {
            tracing::warn!(record = ?r, error = %e, "a committed metadata record does not apply; skipped");
        }
        if !refusals.is_empty() {
            refused(*base);
        }
    }
    snap.applied_offset = after.0 - 1;
    snap.version += 1;
    if let Err(e) = save(shard, snap.clone()).await {
        // Published anyway: the shards agree, and the next batch saves again (a restart
        // replays from the last saved point).
        tracing::error!(error = %e, "persisting applied metadata failed");
    }
    log_failures(&publish(shard, snap).await, "applying the metadata log");
    applied().advance(after.0 - 1);
}

fn refused(base: i64) {
    REFUSED.with(|q| {
        let mut q = q.borrow_mut();
        if q.len() == REFUSED_KEPT {
            q.pop_front();
        }
        q.push_back(base);
    });
}

/// Proposes `records` to the metadata log (here when this broker leads it, else through the
/// leader) and waits until this broker applied them; NOT_CONTROLLER when they did not all
/// apply or no leader answered.
pub(super) async fn propose(r: &Rc<Replicas>, records: &[MetadataRecord]) -> Result<(), PartitionError> {
    let batches: Vec<Bytes> = to_batches(records, sluice_core::clock::now_ms()).into_iter().map(Bytes::from).collect();
    let (first, last) = if r.is_leader(GroupId::METADATA) {
        propose_here(r, batches).await.map_err(|e| not_controller(r, &e))
    } else {
        forward(r, batches).await
    }
    .inspect_err(|e| tracing::info!(error = %e, "a metadata proposal failed"))?;
    wait_applied(last).await?;
    let conflicted = REFUSED.with(|q| q.borrow().iter().any(|b| (first.0..=last.0).contains(b)));
    if conflicted {
        return Err(PartitionError::NotController("a concurrent metadata change decided first; retry".into()));
    }
    Ok(())
}

/// Proposes batches in order on the leader: the first batch's base offset and the last
/// batch's last offset.
async fn propose_here(r: &Replicas, batches: Vec<Bytes>) -> ForwardAnswer {
    let mut range: Option<(Offset, Offset)> = None;
    for b in batches {
        let c = r.propose(GroupId::METADATA, b).await.map_err(|e| e.to_string())?;
        range = Some((range.map_or(c.base, |(f, _)| f), c.last));
    }
    range.ok_or_else(|| "nothing to propose".to_string())
}

/// Sends `batches` to the metadata log's leader and waits for its answer.
async fn forward(r: &Replicas, batches: Vec<Bytes>) -> Result<(Offset, Offset), PartitionError> {
    let leader = wait_leader(r).await?;
    if leader == r.node().0 {
        // Elected here while waiting for a leader.
        return propose_here(r, batches).await.map_err(|e| not_controller(r, &e));
    }
    let link = LINK.with(|l| l.borrow().clone()).ok_or_else(|| not_controller(r, "no link to the controller"))?;
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let (tx, rx) = oneshot::channel();
    PENDING.with(|p| p.borrow_mut().insert(id, tx));
    let mut payload = id.to_be_bytes().to_vec();
    for b in &batches {
        payload.extend_from_slice(&u32::try_from(b.len()).expect("batches are at most MAX_BATCH_BYTES").to_be_bytes());
        payload.extend_from_slice(b);
    }
    let sent = link.send(leader, Forwarded::Request, Bytes::from(payload));
    let answer = if sent { with_deadline(rx).await } else { None };
    PENDING.with(|p| p.borrow_mut().remove(&id));
    match answer {
        Some(Ok(Ok(range))) => Ok(range),
        Some(Ok(Err(why))) => {
            Err(PartitionError::NotController(format!("the controller (node {leader}) refused: {why}")))
        }
        _ => Err(PartitionError::NotController(format!("the controller (node {leader}) did not answer in time"))),
    }
}

/// The metadata log's leader, waiting (bounded) for an election.
async fn wait_leader(r: &Replicas) -> Result<i32, PartitionError> {
    let deadline = std::time::Instant::now() + Duration::from_millis(METADATA_APPLY_TIMEOUT_MS);
    loop {
        if let Some((Some(l), _)) = r.leader(GroupId::METADATA) {
            return Ok(l.0);
        }
        if std::time::Instant::now() >= deadline {
            return Err(PartitionError::NotController("no controller is known yet".into()));
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

async fn with_deadline<F: std::future::Future>(f: F) -> Option<F::Output> {
    let deadline = glommio::timer::sleep(Duration::from_millis(METADATA_APPLY_TIMEOUT_MS));
    futures::pin_mut!(deadline);
    futures::pin_mut!(f);
    match futures::future::select(f, deadline).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}

/// A forwarded message from broker `from` (on shard 0): a request is proposed here and
/// answered; a reply resolves the waiting change. Malformed payloads are dropped.
pub fn on_forwarded(shard: &Rc<Shard>, from: i32, kind: Forwarded, payload: Bytes) {
    match kind {
        Forwarded::Request => {
            let Some(r) = shard.replicas() else { return };
            glommio::spawn_local(async move {
                let Some((id, answer)) = answer_forward(&r, &payload).await else { return };
                let mut out = id.to_be_bytes().to_vec();
                match answer {
                    Ok((first, last)) => {
                        out.push(0);
                        out.extend_from_slice(&first.0.to_be_bytes());
                        out.extend_from_slice(&last.0.to_be_bytes());
                    }
                    Err(why) => {
                        out.push(1);
                        out.extend_from_slice(why.as_bytes());
                    }
                }
                if let Some(link) = LINK.with(|l| l.borrow().clone()) {
                    link.send(from, Forwarded::Reply, Bytes::from(out));
                }
            })
            .detach();
        }
        Forwarded::Reply => {
            let Some((id, answer)) = parse_reply(&payload) else { return };
            if let Some(tx) = PENDING.with(|p| p.borrow_mut().remove(&id)) {
                let _ = tx.send(answer);
            }
        }
    }
}

/// Checks a forwarded request (every batch a valid metadata batch) and proposes it.
async fn answer_forward(r: &Replicas, payload: &[u8]) -> Option<(u64, ForwardAnswer)> {
    let id = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let mut rest = &payload[8..];
    let mut batches = Vec::new();
    while !rest.is_empty() {
        let len = usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
        if len > sluice_core::limits::MAX_BATCH_BYTES {
            return Some((id, Err("a forwarded batch is too large".into())));
        }
        let b = rest.get(4..4 + len)?;
        if let Err(e) = decode_batch(b) {
            return Some((id, Err(format!("a forwarded batch is not metadata: {e}"))));
        }
        batches.push(Bytes::copy_from_slice(b));
        rest = &rest[4 + len..];
    }
    if !r.is_leader(GroupId::METADATA) {
        return Some((id, Err("not the leader of the metadata log".into())));
    }
    Some((id, propose_here(r, batches).await))
}

fn parse_reply(payload: &[u8]) -> Option<(u64, ForwardAnswer)> {
    let id = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    match *payload.get(8)? {
        0 => {
            let first = i64::from_be_bytes(payload.get(9..17)?.try_into().ok()?);
            let last = i64::from_be_bytes(payload.get(17..25)?.try_into().ok()?);
            Some((id, Ok((Offset(first), Offset(last)))))
        }
        _ => Some((id, Err(String::from_utf8_lossy(payload.get(9..)?).into_owned()))),
    }
}

/// Before deciding: waits until everything this broker's metadata log has committed is
/// applied here, so decisions are made on the newest state it knows.
pub(super) async fn caught_up(r: &Rc<Replicas>) -> Result<(), PartitionError> {
    let Some(log) = r.log(GroupId::METADATA) else {
        return Err(PartitionError::NotController("the metadata log is not open".into()));
    };
    wait_applied(Offset(log.high_watermark().0 - 1)).await
}

async fn wait_applied(offset: Offset) -> Result<(), PartitionError> {
    let w = applied();
    let deadline = glommio::timer::sleep(Duration::from_millis(METADATA_APPLY_TIMEOUT_MS));
    futures::pin_mut!(deadline);
    let reached = w.wait_for(offset.0);
    futures::pin_mut!(reached);
    match futures::future::select(reached, deadline).await {
        futures::future::Either::Left(_) => Ok(()),
        futures::future::Either::Right(_) => Err(PartitionError::NotController(format!(
            "the metadata log was not applied up to offset {} in time",
            offset.0
        ))),
    }
}

fn not_controller(r: &Replicas, why: &str) -> PartitionError {
    let leader = r.leader(GroupId::METADATA).and_then(|(l, _)| l);
    PartitionError::NotController(match leader {
        Some(l) => format!("{why}; the controller is node {l}"),
        None => format!("{why}; no controller is known yet"),
    })
}
