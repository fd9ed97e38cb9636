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
//!   when this broker wins a data group's election (a new term), its shard sends shard 0 a
//!   `PartitionChanged` (leader = this broker, epoch = the term, ISR = the recorded ISR
//!   without the replicas whose links are down, this broker added — as Kafka's controller
//!   drops a fenced broker), unless the snapshot already records that epoch or a newer one.
//! - ISR changes without a leader change ([`follow_isr`], every shard with a runtime): every
//!   `ISR_CHECK_INTERVAL_MS` the leader of each data group compares its followers' progress
//!   with the recorded ISR ([`LagTracker`], [`next_isr`]): a follower leaves when it has not
//!   caught up with the leader's log end (its last index one check earlier) for
//!   `replica_lag_time_max_ms` or its links are down that long; it rejoins once caught up
//!   again; the leader never leaves. A change is sent with the SAME leader epoch (apply
//!   accepts an equal epoch), again after `ISR_RESEND_MS` if still not applied.
//! - Shard 0 records what the shards send ([`ClusterMsg::Record`], a typed mesh message; one
//!   queued change per partition, the newest kept, at most `PARTITION_CHANGES_QUEUED`): all
//!   fresh changes in one proposal through [`propose`] (here or forwarded to the
//!   controller), retrying a bounded number of times; apply refuses an epoch older than the
//!   recorded one, so a late record never overwrites a newer leader. Every broker's Metadata
//!   then names the new leader and ISR.
//! - [`controller`] is the group-0 leader as this shard last heard: shard 0 follows it and
//!   announces every change to the other shards ([`ClusterMsg::Controller`], numbered; each
//!   shard keeps the newest in a thread-local). Nothing is shared between shards but
//!   messages.

use super::{log_failures, publish, save};
use crate::error::PartitionError;
use crate::metadata::apply::{apply_all, Local};
use crate::metadata::records::{decode_batch, to_batches, MetadataRecord, PartitionChanged};
use crate::msg::ShardMsg;
use crate::placement::recent_load;
use crate::raft::GroupId;
use crate::replica::Replicas;
use crate::shard::Shard;
use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use sluice_core::batch::BatchHeader;
use sluice_core::limits::{ISR_CHECK_INTERVAL_MS, METADATA_APPLY_TIMEOUT_MS, PARTITION_CHANGES_QUEUED};
use sluice_core::Offset;
use sluice_storage::watermark::Watermark;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

/// Bytes of committed metadata batches read per round.
const READ_BYTES: usize = 4 * 1024 * 1024;

thread_local! {
    /// The metadata log's leader as this shard last heard from shard 0, with the
    /// announcement's sequence number.
    static CONTROLLER: Cell<(u64, Option<i32>)> = const { Cell::new((0, None)) };
    /// Shard 0: partition changes waiting to be recorded, and the recorder's wake-up.
    static RECORDS: RefCell<Vec<PartitionChanged>> = const { RefCell::new(Vec::new()) };
    static RECORD_KICK: RefCell<Option<LocalSender<()>>> = const { RefCell::new(None) };
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

/// Cross-shard messages of the cluster layer (carried by `ShardMsg::Cluster`).
#[derive(Debug)]
pub enum ClusterMsg {
    /// To shard 0: record this change of a partition this broker leads (a new leader, or the
    /// same leader epoch with a new ISR).
    Record(PartitionChanged),
    /// From shard 0 to the other shards: the metadata log's leader (`seq` orders the
    /// announcements: a shard keeps the newest).
    Controller { seq: u64, leader: Option<i32> },
}

/// Handles a [`ClusterMsg`] on the shard it was sent to.
pub fn on_message(m: ClusterMsg) {
    match m {
        ClusterMsg::Record(c) => queue_record(c),
        ClusterMsg::Controller { seq, leader } => CONTROLLER.with(|c| {
            if seq > c.get().0 {
                c.set((seq, leader));
            }
        }),
    }
}

/// How long a shard-0 recorder waits before retrying changes that failed.
const RECORD_RETRY_MS: u64 = 100;
/// Attempts to record one change.
const RECORD_ATTEMPTS: u32 = 20;
/// How long a leader waits before sending the same ISR change again (the first was lost or
/// refused).
const ISR_RESEND_MS: u64 = 2_000;

/// Queues a change for shard 0's recorder (on shard 0): one per partition, the newest kept.
fn queue_record(c: PartitionChanged) {
    RECORDS.with(|q| {
        let mut q = q.borrow_mut();
        if let Some(old) = q.iter_mut().find(|o| o.id == c.id && o.partition == c.partition) {
            if c.leader_epoch >= old.leader_epoch {
                *old = c;
            }
        } else if q.len() < PARTITION_CHANGES_QUEUED {
            q.push(c);
        } else {
            tracing::warn!(
                partition = c.partition,
                "too many partition changes queued; one dropped (its leader sends it again)"
            );
        }
    });
    RECORD_KICK.with(|k| {
        if let Some(k) = &*k.borrow() {
            let _ = k.try_send(());
        }
    });
}

/// Sends a change to shard 0's recorder (a typed mesh message, or the queue when this is
/// shard 0).
fn send_record(shard: &Rc<Shard>, c: PartitionChanged) {
    if shard.id.index() == 0 {
        return queue_record(c);
    }
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let to = crate::shard::shard_id(0);
        if let Err(e) = shard.send(to, ShardMsg::Cluster(ClusterMsg::Record(c))).await {
            tracing::debug!(error = %e, "a partition change did not reach shard 0");
        }
    })
    .detach();
}

/// On every shard with a replication runtime: queues a `PartitionChanged` for each data group
/// this broker comes to lead, and starts the ISR follower (module docs).
pub fn follow_leaders(shard: &Rc<Shard>, r: &Rc<Replicas>) {
    let (shard_w, r_w) = (Rc::downgrade(shard), Rc::downgrade(r));
    let me = r.node();
    r.on_leader_change(Box::new(move |group, leader, epoch| {
        if group == GroupId::METADATA || leader != Some(me) {
            return;
        }
        let (shard_w, r_w) = (shard_w.clone(), r_w.clone());
        glommio::spawn_local(async move {
            let (Some(shard), Some(r)) = (shard_w.upgrade(), r_w.upgrade()) else { return };
            if let Some(c) = leader_change(&shard, &r, group, epoch) {
                tracing::info!(partition = c.partition, epoch = c.leader_epoch, isr = ?c.isr, "recording a leader change");
                send_record(&shard, c);
            }
        })
        .detach();
    }));
    glommio::spawn_local(follow_isr(shard.clone(), r.clone())).detach();
}

/// The record of this broker leading `group` at `epoch`, if it still does and the snapshot
/// records an older epoch. Its ISR is the recorded one without the replicas whose links are
/// down, this broker added (Kafka's controller drops a fenced broker from the ISR when it
/// elects); the ISR follower corrects it once the followers answered.
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
    let me = r.node().0;
    let mut isr: Vec<i32> =
        state.isr.iter().copied().filter(|n| *n == me || r.is_live(sluice_core::cluster::NodeId(*n))).collect();
    if !isr.contains(&me) {
        isr.push(me);
    }
    isr.sort_unstable();
    Some(PartitionChanged { id, partition: tp.partition.0, leader: me, leader_epoch: epoch.0, isr })
}

/// What a data group's leader knows of its followers' lag (Kafka's `lastCaughtUpTimeMs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagTracker {
    /// The leader epoch this tracks (a new term starts a new tracker).
    epoch: i32,
    /// The leader's last index at the previous observation: a follower that matched it since
    /// is caught up.
    prev_last: u64,
    /// Per replica, when it was last seen caught up (ms).
    caught_up_at: BTreeMap<i32, u64>,
    /// The last ISR sent for recording and when.
    sent: Option<(Vec<i32>, u64)>,
}

impl LagTracker {
    /// A tracker for a leader at `epoch` whose recorded ISR is `isr`: its members count as
    /// caught up now (as Kafka's new leader does); the first observation compares with the
    /// commit index.
    pub fn new(epoch: i32, isr: &[i32], committed: u64, now_ms: u64) -> LagTracker {
        LagTracker { epoch, prev_last: committed, caught_up_at: isr.iter().map(|n| (*n, now_ms)).collect(), sent: None }
    }

    /// One observation of the leader's progress: a live replica whose matched index reached
    /// the leader's last index of the previous observation is caught up now.
    pub fn observe(&mut self, now_ms: u64, last: u64, matched: &[(i32, u64)], live: impl Fn(i32) -> bool) {
        for (n, m) in matched {
            if *m >= self.prev_last && live(*n) {
                self.caught_up_at.insert(*n, now_ms);
            }
        }
        self.prev_last = last;
    }
}

/// The ISR a leader should record, if it differs from `recorded`: the leader itself and every
/// replica caught up within `lag_max_ms` (Kafka's `replica.lag.time.max.ms`). The ISR never
/// loses the leader; a follower rejoins once caught up again.
pub fn next_isr(
    me: i32,
    replicas: &[i32],
    recorded: &[i32],
    caught_up_at: &BTreeMap<i32, u64>,
    now_ms: u64,
    lag_max_ms: u64,
) -> Option<Vec<i32>> {
    let mut isr: Vec<i32> = replicas
        .iter()
        .copied()
        .filter(|n| *n == me || caught_up_at.get(n).is_some_and(|t| now_ms.saturating_sub(*t) <= lag_max_ms))
        .collect();
    isr.sort_unstable();
    isr.dedup();
    let mut rec = recorded.to_vec();
    rec.sort_unstable();
    (isr != rec).then_some(isr)
}

/// On every shard with a runtime: every `ISR_CHECK_INTERVAL_MS`, each data group this broker
/// leads compares its followers' progress with the recorded ISR and sends a change (same
/// leader epoch) for shard 0 to record.
async fn follow_isr(shard: Rc<Shard>, r: Rc<Replicas>) {
    let mut trackers: BTreeMap<GroupId, LagTracker> = BTreeMap::new();
    let lag_max = shard.config.replica_lag_time_max_ms;
    while !shard.is_stopping() {
        glommio::timer::sleep(Duration::from_millis(ISR_CHECK_INTERVAL_MS)).await;
        let now = u64::try_from(sluice_core::clock::now_ms()).unwrap_or(0);
        let led = r.led_groups();
        trackers.retain(|g, _| led.contains(g));
        for group in led {
            if let Some(c) = isr_change(&shard, &r, group, &mut trackers, now, lag_max) {
                tracing::info!(partition = c.partition, epoch = c.leader_epoch, isr = ?c.isr, "recording an ISR change");
                send_record(&shard, c);
            }
        }
    }
}

/// The ISR change `group`'s leader (this broker) should record now, if any.
fn isr_change(
    shard: &Shard,
    r: &Replicas,
    group: GroupId,
    trackers: &mut BTreeMap<GroupId, LagTracker>,
    now: u64,
    lag_max: u64,
) -> Option<PartitionChanged> {
    let me = r.node().0;
    let (_, epoch) = r.leader(group)?;
    let p = r.progress(group)?;
    let tp = r.partition_of(group)?;
    let snap = shard.metadata();
    let id = snap.topics.get(&tp.topic)?.id;
    let state = snap.partition(&tp.topic, tp.partition, me)?;
    if state.leader != me || state.leader_epoch != epoch.0 {
        return None; // the leader change is not recorded yet: it carries the ISR
    }
    let t = trackers.entry(group).or_insert_with(|| LagTracker::new(epoch.0, &state.isr, p.committed, now));
    if t.epoch != epoch.0 {
        *t = LagTracker::new(epoch.0, &state.isr, p.committed, now);
    }
    let matched: Vec<(i32, u64)> = p.matched.iter().map(|(n, m)| (n.0, *m)).collect();
    t.observe(now, p.last, &matched, |n| r.is_live(sluice_core::cluster::NodeId(n)));
    let isr = next_isr(me, &state.replicas, &state.isr, &t.caught_up_at, now, lag_max)?;
    if t.sent.as_ref().is_some_and(|(s, at)| *s == isr && now.saturating_sub(*at) < ISR_RESEND_MS) {
        return None; // sent already; wait for it to apply
    }
    t.sent = Some((isr.clone(), now));
    Some(PartitionChanged { id, partition: tp.partition.0, leader: me, leader_epoch: epoch.0, isr })
}

/// Shard 0: records the queued partition changes, forever (all fresh ones in one proposal).
async fn record_changes(shard: Rc<Shard>, r: Rc<Replicas>, kicks: LocalReceiver<()>) {
    let mut retry: Vec<(PartitionChanged, u32)> = Vec::new();
    while !shard.is_stopping() {
        let pause = if retry.is_empty() { METADATA_APPLY_TIMEOUT_MS } else { RECORD_RETRY_MS };
        let _ = within(pause, kicks.recv()).await;
        let fresh = RECORDS.with(|q| std::mem::take(&mut *q.borrow_mut()));
        for c in fresh {
            retry.retain(|(o, _)| o.id != c.id || o.partition != c.partition || o.leader_epoch > c.leader_epoch);
            retry.push((c, 0));
        }
        retry.retain(|(c, _)| still_needed(&shard, c));
        if retry.is_empty() {
            continue;
        }
        let records: Vec<MetadataRecord> =
            retry.iter().map(|(c, _)| MetadataRecord::PartitionChanged(c.clone())).collect();
        match propose(&r, &records).await {
            Ok(()) => retry.clear(),
            Err(e) => {
                tracing::debug!(error = %e, "recording partition changes failed; retrying");
                for (c, tries) in &mut retry {
                    *tries += 1;
                    if *tries >= RECORD_ATTEMPTS {
                        tracing::warn!(
                            partition = c.partition,
                            epoch = c.leader_epoch,
                            "a partition change was not recorded"
                        );
                    }
                }
                retry.retain(|(_, tries)| *tries < RECORD_ATTEMPTS);
            }
        }
    }
}

/// Whether the snapshot still lacks `c`: an older epoch recorded for its partition (same
/// topic id), or the same epoch with another leader or ISR.
fn still_needed(shard: &Shard, c: &PartitionChanged) -> bool {
    let snap = shard.metadata();
    let Some(name) = snap.topic_by_id(&c.id) else { return false };
    let Some(repl) = snap.replication.get(name) else { return false };
    let Some(p) = usize::try_from(c.partition).ok().and_then(|p| repl.partitions.get(p)) else { return false };
    let mut isr = p.isr.clone();
    isr.sort_unstable();
    p.leader_epoch < c.leader_epoch || (p.leader_epoch == c.leader_epoch && (p.leader != c.leader || isr != c.isr))
}

/// The controller (the metadata log's leader) as this shard last heard from shard 0.
pub fn controller() -> Option<i32> {
    CONTROLLER.with(|c| c.get().1)
}

fn applied() -> Rc<Watermark> {
    APPLIED.with(|w| w.clone())
}

/// On shard 0 of a cluster member, once group 0 is open: follows the controller (announcing
/// it to the other shards) and starts the applier and the recorder of partition changes.
pub fn start(shard: &Rc<Shard>, r: &Rc<Replicas>) {
    assert_eq!(shard.id.index(), 0, "the metadata log lives on shard 0");
    let weak = Rc::downgrade(shard);
    let announce = move |leader: Option<sluice_core::cluster::NodeId>| {
        let leader = leader.map(|n| n.0);
        let seq = CONTROLLER.with(|c| {
            let seq = c.get().0 + 1;
            c.set((seq, leader));
            seq
        });
        let Some(shard) = weak.upgrade() else { return };
        glommio::spawn_local(async move {
            for i in 1..shard.n_shards {
                let msg = ShardMsg::Cluster(ClusterMsg::Controller { seq, leader });
                if shard.send(crate::shard::shard_id(i), msg).await.is_err() {
                    return; // shutting down
                }
            }
        })
        .detach();
    };
    if let Some((leader, _)) = r.leader(GroupId::METADATA) {
        announce(leader);
    }
    r.on_leader_change(Box::new(move |group, leader, _| {
        if group == GroupId::METADATA {
            announce(leader);
        }
    }));
    applied().advance(shard.metadata().applied_offset);
    let (kick, kicks) = local_channel::new_bounded(1);
    RECORD_KICK.with(|k| *k.borrow_mut() = Some(kick));
    glommio::spawn_local(applier(shard.clone(), r.clone())).detach();
    glommio::spawn_local(record_changes(shard.clone(), r.clone(), kicks)).detach();
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
    within(METADATA_APPLY_TIMEOUT_MS, f).await
}

async fn within<F: std::future::Future>(ms: u64, f: F) -> Option<F::Output> {
    let deadline = glommio::timer::sleep(Duration::from_millis(ms));
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

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: u64 = 1_000;

    #[test]
    fn a_follower_that_stops_catching_up_leaves_after_the_lag_time() {
        let mut t = LagTracker::new(3, &[0, 1, 2], 10, 0);
        // Everyone matched the commit index at the first look.
        t.observe(100, 20, &[(0, 20), (1, 20), (2, 10)], |_| true);
        assert_eq!(next_isr(0, &[0, 1, 2], &[0, 1, 2], &t.caught_up_at, 100, LAG), None);
        // Node 2 stays at 10 while the leader moves on: still in within the lag time...
        t.observe(600, 30, &[(0, 30), (1, 30), (2, 10)], |_| true);
        assert_eq!(next_isr(0, &[0, 1, 2], &[0, 1, 2], &t.caught_up_at, 600, LAG), None);
        // ...out once it passed.
        t.observe(1_200, 40, &[(0, 40), (1, 40), (2, 10)], |_| true);
        assert_eq!(next_isr(0, &[0, 1, 2], &[0, 1, 2], &t.caught_up_at, 1_200, LAG), Some(vec![0, 1]));
    }

    #[test]
    fn a_follower_rejoins_once_caught_up() {
        let mut t = LagTracker::new(3, &[0, 1], 40, 0);
        t.observe(100, 50, &[(0, 50), (1, 50), (2, 20)], |_| true);
        assert_eq!(next_isr(0, &[0, 1, 2], &[0, 1], &t.caught_up_at, 100, LAG), None, "2 is behind");
        // It reached the leader's end of the previous look.
        t.observe(200, 60, &[(0, 60), (1, 60), (2, 50)], |_| true);
        assert_eq!(next_isr(0, &[0, 1, 2], &[0, 1], &t.caught_up_at, 200, LAG), Some(vec![0, 1, 2]));
    }

    #[test]
    fn a_dead_follower_leaves_even_when_nothing_is_written() {
        let mut t = LagTracker::new(1, &[0, 1, 2], 10, 0);
        let live = |n: i32| n != 2;
        for now in (0..=1_100).step_by(100) {
            t.observe(now, 10, &[(0, 10), (1, 10), (2, 10)], live);
        }
        assert_eq!(next_isr(0, &[0, 1, 2], &[0, 1, 2], &t.caught_up_at, 1_100, LAG), Some(vec![0, 1]));
    }

    #[test]
    fn the_leader_never_leaves_and_order_does_not_matter() {
        let t = LagTracker::new(1, &[], 0, 0);
        // Nobody caught up, not even the leader's own entry: the ISR is the leader alone.
        assert_eq!(next_isr(2, &[0, 1, 2], &[2, 0, 1], &t.caught_up_at, 5_000, LAG), Some(vec![2]));
        assert_eq!(next_isr(2, &[0, 1, 2], &[2], &t.caught_up_at, 5_000, LAG), None);
        let t = LagTracker::new(1, &[1, 0, 2], 0, 5_000);
        assert_eq!(next_isr(2, &[0, 1, 2], &[2, 0, 1], &t.caught_up_at, 5_000, LAG), None, "same set");
    }

    #[test]
    fn a_replica_outside_the_assignment_never_enters() {
        let mut t = LagTracker::new(1, &[0, 1], 0, 0);
        t.observe(10, 5, &[(0, 5), (1, 5), (7, 5)], |_| true);
        assert_eq!(next_isr(0, &[0, 1], &[0, 1], &t.caught_up_at, 10, LAG), None);
    }
}
