//! Transaction markers wherever the partitions' leaders are: the coordinator's side (which
//! broker gets which marker, retries) and the receiving side (appending them), for a lone
//! broker and a cluster alike.
//!
//! Contract:
//! - [`deliver`] writes the COMMIT/ABORT markers of one prepared transaction: each data
//!   partition's marker goes to the partition's leader as this broker's metadata names it, and
//!   each group's staged offsets are completed by the leader of the group's `__consumer_offsets`
//!   partition. Markers for this broker are appended here ([`write_local`]); the others go, one
//!   [`MarkerEntry`] per transaction and broker, through a per-broker outbox: while a request to
//!   a broker is in flight, the entries for it queue, and the next request carries every queued
//!   one (at most `TXN_MARKERS_PER_REQUEST`) — Kafka's coordinator sends one WriteTxnMarkers per
//!   broker with all its pending markers the same way. A marker answered not-leader,
//!   unavailable or unanswered (the link is down, `TXN_MARKER_REQUEST_TIMEOUT_MS` passed) is
//!   retried after re-reading the metadata, up to `TXN_MARKER_ATTEMPTS` rounds; then
//!   [`deliver`] fails and the transaction stays prepared for the coordinator's sweep. A
//!   partition the metadata no longer has is skipped (deleted: nothing to mark).
//! - [`write_local`] (the receiver's side, also used for this broker's own partitions) appends
//!   every entry's markers through the produce path (acks=all: a replicated partition's marker
//!   is answered at its Raft commit, at most `COORDINATOR_APPEND_TIMEOUT_MS` later) and
//!   completes the groups' offsets on their coordinator shards, answering one [`Outcome`] per
//!   partition and group. Markers are idempotent for a partition (a repeated one finds no open
//!   transaction of its producer), so retries are safe.
//! - The wire format of the requests and replies between brokers is here ([`encode_request`],
//!   [`decode_request`], ...): big-endian, a version byte, every count and length checked
//!   against the bytes left before anything is allocated. The transport (net's peer links)
//!   carries them as opaque payloads ([`MarkerLink`]).
//! - Every `RefCell` borrow of the outbox ends before an `.await`.

use super::{CompleteOffsetsRequest, TxnError};
use crate::groups::OFFSETS_TOPIC;
use crate::msg::{Acks, ProduceItem};
use crate::shard::Shard;
use crate::PartitionError;
use bytes::{BufMut, Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{join_all, select, Either};
use sluice_core::batch;
use sluice_core::clock::now_ms;
use sluice_core::limits::{
    COORDINATOR_APPEND_TIMEOUT_MS, TXN_MARKERS_PER_REQUEST, TXN_MARKER_ATTEMPTS, TXN_MARKER_REQUEST_TIMEOUT_MS,
    TXN_MARKER_RETRY_MS,
};
use sluice_core::{PartitionId, TopicPartition};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// The markers of one transaction for one broker: its partitions there, and the groups whose
/// `__consumer_offsets` partition that broker leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
    pub partitions: Vec<TopicPartition>,
    pub groups: Vec<String>,
}

/// What became of one partition's marker, or of one group's staged offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// Not the leader (or the group's coordinator) there: retried after a metadata re-read.
    NotLeader,
    /// No such partition there.
    Unknown,
    /// Any other failure (storage, timeout, too few in-sync replicas): retried.
    Failed,
}

impl Outcome {
    fn code(self) -> u8 {
        match self {
            Outcome::Written => 0,
            Outcome::NotLeader => 1,
            Outcome::Unknown => 2,
            Outcome::Failed => 3,
        }
    }

    fn from_code(c: u8) -> Option<Outcome> {
        Some(match c {
            0 => Outcome::Written,
            1 => Outcome::NotLeader,
            2 => Outcome::Unknown,
            3 => Outcome::Failed,
            _ => return None,
        })
    }

    fn of_partition(r: &Result<crate::msg::Appended, PartitionError>) -> Outcome {
        match r {
            Ok(_) => Outcome::Written,
            Err(PartitionError::UnknownTopicOrPartition) => Outcome::Unknown,
            Err(
                PartitionError::NotLeaderOrFollower { .. }
                | PartitionError::FencedLeaderEpoch { .. }
                | PartitionError::UnknownLeaderEpoch { .. }
                | PartitionError::NotCommitted(_),
            ) => Outcome::NotLeader,
            Err(_) => Outcome::Failed,
        }
    }

    fn of_group(r: &Result<(), TxnError>) -> Outcome {
        match r {
            Ok(()) => Outcome::Written,
            Err(TxnError::NotCoordinator | TxnError::CoordinatorLoadInProgress | TxnError::CoordinatorNotAvailable) => {
                Outcome::NotLeader
            }
            Err(_) => Outcome::Failed,
        }
    }
}

/// One entry's outcomes, in the entry's order: its partitions, then its groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryOutcome {
    pub partitions: Vec<Outcome>,
    pub groups: Vec<Outcome>,
}

/// Appends every entry's markers on this broker and completes its groups' offsets (module
/// docs); one outcome per entry, in order.
pub async fn write_local(shard: &Rc<Shard>, entries: &[MarkerEntry]) -> Vec<EntryOutcome> {
    let now = now_ms();
    // One produce item per partition, its markers in entry order (two transactions of
    // different producers may end in the same partition).
    let mut slot: HashMap<&TopicPartition, usize> = HashMap::new();
    let mut items: Vec<ProduceItem> = Vec::new();
    for e in entries {
        let marker =
            Bytes::from(super::partition::build_marker(e.producer_id, e.epoch, e.commit, e.coordinator_epoch, now));
        let header = batch::validate(&marker).expect("a marker built here is a valid batch");
        for tp in &e.partitions {
            let i = *slot.entry(tp).or_insert_with(|| {
                items.push(ProduceItem {
                    index: items.len(),
                    tp: tp.clone(),
                    batches: Vec::new(),
                    commit_wait_ms: Some(COORDINATOR_APPEND_TIMEOUT_MS),
                });
                items.len() - 1
            });
            items[i].batches.push((header, marker.clone()));
        }
    }
    let results = crate::produce::produce(shard, Acks::All, items).await.await;
    let mut by_item = vec![Outcome::Failed; slot.len()];
    for (index, r) in &results {
        if let Some(o) = by_item.get_mut(*index) {
            *o = Outcome::of_partition(r);
        }
    }
    let groups = entries.iter().flat_map(|e| {
        e.groups.iter().map(move |g| {
            let req = CompleteOffsetsRequest { group_id: g.clone(), producer_id: e.producer_id, commit: e.commit };
            async move { Outcome::of_group(&super::on_group(shard, g, req).await) }
        })
    });
    let mut group_outcomes = join_all(groups).await.into_iter();
    entries
        .iter()
        .map(|e| EntryOutcome {
            partitions: e.partitions.iter().map(|tp| by_item[slot[tp]]).collect(),
            groups: e.groups.iter().map(|_| group_outcomes.next().unwrap_or(Outcome::Failed)).collect(),
        })
        .collect()
}

/// Where a marker goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Dest {
    Here,
    Broker(i32),
}

/// What the metadata says of a partition's leader: None when the partition is gone, `Err`
/// while no leader is known.
pub(crate) fn dest_of(shard: &Shard, tp: &TopicPartition) -> Option<Result<Dest, ()>> {
    let Some(me) = shard.replicas().map(|r| r.node().0) else {
        // A lone broker: every partition is here (an unknown one is answered as such).
        return shard.metadata().partition(&tp.topic, tp.partition, 0).map(|_| Ok(Dest::Here));
    };
    let state = shard.metadata().partition(&tp.topic, tp.partition, me)?;
    Some(match state.leader {
        l if l == me => Ok(Dest::Here),
        l if l >= 0 => Ok(Dest::Broker(l)),
        _ => Err(()),
    })
}

/// The leader of a group's `__consumer_offsets` partition (here when unknown: the group
/// coordinator's own answer then decides).
fn group_dest(shard: &Shard, group: &str) -> Dest {
    let partitions = shard.metadata().topics.get(OFFSETS_TOPIC).map_or(0, |t| t.shards.len());
    if partitions == 0 {
        return Dest::Here;
    }
    let tp = TopicPartition::new(OFFSETS_TOPIC, crate::groups::offsets_partition(group, partitions));
    match dest_of(shard, &tp) {
        Some(Ok(d)) => d,
        _ => Dest::Here,
    }
}

/// Writes the markers of a durable Prepare state everywhere (module docs): Ok once every
/// partition is marked (or gone) and every group's offsets completed.
pub async fn deliver(
    shard: &Rc<Shard>,
    meta: &super::state::TxnMeta,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<(), TxnError> {
    let mut partitions: Vec<TopicPartition> = meta
        .partitions
        .iter()
        .filter(|(t, _)| t != OFFSETS_TOPIC)
        .map(|(t, p)| TopicPartition::new(t.clone(), *p))
        .collect();
    let mut groups: Vec<String> = meta.groups.iter().cloned().collect();
    let mut why = String::new();
    for attempt in 0..TXN_MARKER_ATTEMPTS {
        if attempt > 0 {
            glommio::timer::sleep(Duration::from_millis(TXN_MARKER_RETRY_MS)).await;
        }
        let mut plan: BTreeMap<Dest, MarkerEntry> = BTreeMap::new();
        let mut waiting: Vec<TopicPartition> = Vec::new();
        let blank = MarkerEntry {
            producer_id: meta.producer_id,
            epoch: meta.producer_epoch,
            commit,
            coordinator_epoch,
            partitions: Vec::new(),
            groups: Vec::new(),
        };
        for tp in partitions.drain(..) {
            match dest_of(shard, &tp) {
                None => tracing::debug!(partition = %tp, "transaction marker skipped: the partition was deleted"),
                Some(Err(())) => waiting.push(tp),
                Some(Ok(d)) => plan.entry(d).or_insert_with(|| blank.clone()).partitions.push(tp),
            }
        }
        for g in groups.drain(..) {
            plan.entry(group_dest(shard, &g)).or_insert_with(|| blank.clone()).groups.push(g);
        }
        let sends = plan.into_iter().map(|(d, e)| async move {
            let outcome = match d {
                Dest::Here => write_local(shard, std::slice::from_ref(&e)).await.pop(),
                Dest::Broker(node) => send_remote(shard, node, e.clone()).await,
            };
            (d, e, outcome)
        });
        let done = join_all(sends).await;
        partitions = waiting;
        for (d, e, outcome) in done {
            let Some(o) =
                outcome.filter(|o| o.partitions.len() == e.partitions.len() && o.groups.len() == e.groups.len())
            else {
                why = format!("no answer from {d:?}");
                partitions.extend(e.partitions);
                groups.extend(e.groups);
                continue;
            };
            for (tp, r) in e.partitions.into_iter().zip(o.partitions) {
                match r {
                    Outcome::Written => {}
                    // Not open yet (its shard still recovers at start) unless deleted.
                    Outcome::Unknown if dest_of(shard, &tp).is_none() => {}
                    other => {
                        why = format!("{tp}: {other:?} at {d:?}");
                        partitions.push(tp);
                    }
                }
            }
            for (g, r) in e.groups.into_iter().zip(o.groups) {
                if r != Outcome::Written {
                    why = format!("offsets of group {g}: {r:?} at {d:?}");
                    groups.push(g);
                }
            }
        }
        if partitions.is_empty() && groups.is_empty() {
            return Ok(());
        }
        tracing::debug!(producer_id = meta.producer_id, partitions = partitions.len(), groups = groups.len(), attempt, %why, "transaction markers not all written yet");
    }
    Err(TxnError::Storage(format!(
        "{} transaction markers and {} groups' offsets not written yet ({why}); the sweep retries",
        partitions.len(),
        groups.len()
    )))
}

/// The peer transport as markers use it (net implements it).
pub trait MarkerLink {
    /// Queues `payload` for shard `to_shard` of broker `to`; false when it could not be queued.
    fn send(&self, to: i32, to_shard: u16, kind: MarkerFrame, payload: Bytes) -> bool;
}

/// What a marker frame between brokers is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerFrame {
    Request,
    Reply,
    /// A partition leader's verification call to the coordinator's broker (`super::verify`).
    VerifyRequest,
    VerifyReply,
}

/// The shard of a broker that takes marker requests (any shard could: the produce path routes
/// each partition to its owner; shard 0 exists on every broker).
pub(crate) const REQUEST_SHARD: u16 = 0;

/// Entries waiting for a request to one broker, each with its caller's reply.
type Queued = Vec<(MarkerEntry, oneshot::Sender<Option<EntryOutcome>>)>;

thread_local! {
    static LINK: RefCell<Option<Rc<dyn MarkerLink>>> = const { RefCell::new(None) };
    /// Entries for each broker not yet sent.
    static OUTBOX: RefCell<BTreeMap<i32, Queued>> = const { RefCell::new(BTreeMap::new()) };
    /// Brokers with a request in flight (its sender sends the queue's next request after it).
    static SENDING: RefCell<BTreeSet<i32>> = const { RefCell::new(BTreeSet::new()) };
    /// Requests waiting for their reply, by request id.
    static WAITING: RefCell<HashMap<u64, oneshot::Sender<Vec<EntryOutcome>>>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// Installs the transport markers to other brokers use (every shard, at start).
pub fn set_link(link: Rc<dyn MarkerLink>) {
    LINK.with(|l| *l.borrow_mut() = Some(link));
}

pub(crate) fn link() -> Option<Rc<dyn MarkerLink>> {
    LINK.with(|l| l.borrow().clone())
}

/// Queues one entry for broker `node` and waits for its outcome (None: unanswered).
async fn send_remote(shard: &Rc<Shard>, node: i32, entry: MarkerEntry) -> Option<EntryOutcome> {
    let (tx, rx) = oneshot::channel();
    OUTBOX.with(|o| o.borrow_mut().entry(node).or_default().push((entry, tx)));
    if SENDING.with(|s| s.borrow_mut().insert(node)) {
        glommio::spawn_local(drain(shard.id.index(), node)).detach();
    }
    rx.await.ok().flatten()
}

/// Sends the outbox of broker `node`, one request at a time, until it is empty.
async fn drain(my_shard: usize, node: i32) {
    let reply_shard = u16::try_from(my_shard).expect("shard ids fit u16");
    loop {
        let batch: Queued = OUTBOX.with(|o| {
            let mut o = o.borrow_mut();
            let q = o.entry(node).or_default();
            let n = q.len().min(TXN_MARKERS_PER_REQUEST);
            q.drain(..n).collect()
        });
        if batch.is_empty() {
            SENDING.with(|s| s.borrow_mut().remove(&node));
            return;
        }
        let entries: Vec<MarkerEntry> = batch.iter().map(|(e, _)| e.clone()).collect();
        let outcomes = request(node, reply_shard, &entries).await;
        tracing::debug!(
            node,
            transactions = entries.len(),
            answered = outcomes.is_some(),
            "transaction markers sent to a broker"
        );
        let mut outcomes = outcomes.filter(|o| o.len() == batch.len()).map(Vec::into_iter);
        for (_, reply) in batch {
            let _ = reply.send(outcomes.as_mut().and_then(Iterator::next));
        }
    }
}

/// One request to `node` and its reply (None: not sent, or unanswered in time).
async fn request(node: i32, reply_shard: u16, entries: &[MarkerEntry]) -> Option<Vec<EntryOutcome>> {
    let link = link()?;
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let (tx, rx) = oneshot::channel();
    WAITING.with(|w| w.borrow_mut().insert(id, tx));
    let sent = link.send(node, REQUEST_SHARD, MarkerFrame::Request, encode_request(id, reply_shard, entries));
    let answer = if sent {
        let limit = glommio::timer::sleep(Duration::from_millis(TXN_MARKER_REQUEST_TIMEOUT_MS));
        match select(rx, Box::pin(limit)).await {
            Either::Left((r, _)) => r.ok(),
            Either::Right(_) => None,
        }
    } else {
        None
    };
    WAITING.with(|w| w.borrow_mut().remove(&id));
    answer
}

/// A marker request from broker `from` (on this broker's `REQUEST_SHARD`): appends its
/// markers here and sends the reply back to the asking shard.
pub fn on_request(shard: &Rc<Shard>, from: i32, payload: Bytes) {
    let (id, reply_shard, entries) = match decode_request(&payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(from, error = %e, "undecodable transaction marker request dropped");
            return;
        }
    };
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let outcomes = write_local(&shard, &entries).await;
        let written = outcomes.iter().flat_map(|o| &o.partitions).filter(|o| **o == Outcome::Written).count();
        tracing::debug!(
            from,
            transactions = entries.len(),
            written,
            "transaction markers written for another broker's coordinator"
        );
        let sent = link().is_some_and(|l| l.send(from, reply_shard, MarkerFrame::Reply, encode_reply(id, &outcomes)));
        if !sent {
            tracing::debug!(from, "transaction marker reply not sent (the coordinator retries)");
        }
    })
    .detach();
}

/// A reply to one of this shard's marker requests.
pub fn on_reply(from: i32, payload: Bytes) {
    match decode_reply(&payload) {
        Ok((id, outcomes)) => {
            if let Some(tx) = WAITING.with(|w| w.borrow_mut().remove(&id)) {
                let _ = tx.send(outcomes);
            }
        }
        Err(e) => tracing::warn!(from, error = %e, "undecodable transaction marker reply dropped"),
    }
}

// --- wire format ---------------------------------------------------------------------

pub(crate) const WIRE_VERSION: u8 = 1;

/// Why marker bytes from a peer do not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MarkerWireError {
    #[error("truncated")]
    Truncated,
    #[error("version {0} (this broker speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("a count of {0} does not fit the bytes left")]
    Count(u32),
    #[error("a name is not UTF-8")]
    Name,
    #[error("unknown outcome code {0}")]
    Code(u8),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

pub(crate) fn put_name(b: &mut BytesMut, s: &str) {
    let n = u16::try_from(s.len()).expect("topic and group names are shorter than 64 KiB");
    b.put_u16(n);
    b.put_slice(s.as_bytes());
}

/// `version | id | reply shard | count | entries`.
pub fn encode_request(id: u64, reply_shard: u16, entries: &[MarkerEntry]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(WIRE_VERSION);
    b.put_u64(id);
    b.put_u16(reply_shard);
    b.put_u32(u32::try_from(entries.len()).expect("bounded by TXN_MARKERS_PER_REQUEST"));
    for e in entries {
        b.put_i64(e.producer_id);
        b.put_i16(e.epoch);
        b.put_u8(u8::from(e.commit));
        b.put_i32(e.coordinator_epoch);
        b.put_u32(u32::try_from(e.partitions.len()).expect("a transaction's partitions fit u32"));
        for tp in &e.partitions {
            put_name(&mut b, &tp.topic);
            b.put_i32(tp.partition.0);
        }
        b.put_u32(u32::try_from(e.groups.len()).expect("a transaction's groups fit u32"));
        for g in &e.groups {
            put_name(&mut b, g);
        }
    }
    b.freeze()
}

/// `version | id | count | per entry: partitions' codes, groups' codes`.
pub fn encode_reply(id: u64, outcomes: &[EntryOutcome]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(WIRE_VERSION);
    b.put_u64(id);
    b.put_u32(u32::try_from(outcomes.len()).expect("one per entry"));
    for o in outcomes {
        for list in [&o.partitions, &o.groups] {
            b.put_u32(u32::try_from(list.len()).expect("one per partition"));
            b.extend(list.iter().map(|c| c.code()));
        }
    }
    b.freeze()
}

pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], MarkerWireError> {
        if self.0.len() < n {
            return Err(MarkerWireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], MarkerWireError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, MarkerWireError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, MarkerWireError> {
        self.array().map(u16::from_be_bytes)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, MarkerWireError> {
        self.array().map(u32::from_be_bytes)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, MarkerWireError> {
        self.array().map(u64::from_be_bytes)
    }
    /// A count of items of at least `min_bytes` each, checked against the bytes left.
    pub(crate) fn count(&mut self, min_bytes: usize) -> Result<usize, MarkerWireError> {
        let c = self.u32()?;
        let n = usize::try_from(c).map_err(|_| MarkerWireError::Count(c))?;
        if n.checked_mul(min_bytes).is_none_or(|need| need > self.0.len()) {
            return Err(MarkerWireError::Count(c));
        }
        Ok(n)
    }
    pub(crate) fn name(&mut self) -> Result<String, MarkerWireError> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| MarkerWireError::Name)
    }
    pub(crate) fn version(&mut self) -> Result<(), MarkerWireError> {
        match self.u8()? {
            WIRE_VERSION => Ok(()),
            v => Err(MarkerWireError::Version(v)),
        }
    }
    pub(crate) fn end(&self) -> Result<(), MarkerWireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(MarkerWireError::Trailing(self.0.len()))
        }
    }
}

/// Bytes of the smallest encoded entry (no partitions, no groups).
const MIN_ENTRY_BYTES: usize = 8 + 2 + 1 + 4 + 4 + 4;

/// See [`encode_request`].
pub fn decode_request(b: &[u8]) -> Result<(u64, u16, Vec<MarkerEntry>), MarkerWireError> {
    let mut r = Reader(b);
    r.version()?;
    let id = r.u64()?;
    let reply_shard = r.u16()?;
    let n = r.count(MIN_ENTRY_BYTES)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let producer_id = i64::from_be_bytes(r.array()?);
        let epoch = i16::from_be_bytes(r.array()?);
        let commit = r.u8()? != 0;
        let coordinator_epoch = i32::from_be_bytes(r.array()?);
        let np = r.count(2 + 4)?;
        let mut partitions = Vec::with_capacity(np);
        for _ in 0..np {
            let topic = r.name()?;
            let p = i32::from_be_bytes(r.array()?);
            partitions.push(TopicPartition { topic, partition: PartitionId(p) });
        }
        let ng = r.count(2)?;
        let mut groups = Vec::with_capacity(ng);
        for _ in 0..ng {
            groups.push(r.name()?);
        }
        entries.push(MarkerEntry { producer_id, epoch, commit, coordinator_epoch, partitions, groups });
    }
    r.end()?;
    Ok((id, reply_shard, entries))
}

/// See [`encode_reply`].
pub fn decode_reply(b: &[u8]) -> Result<(u64, Vec<EntryOutcome>), MarkerWireError> {
    let mut r = Reader(b);
    r.version()?;
    let id = r.u64()?;
    let n = r.count(8)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let k = r.count(1)?;
            for c in r.take(k)? {
                list.push(Outcome::from_code(*c).ok_or(MarkerWireError::Code(*c))?);
            }
        }
        let [partitions, groups] = lists;
        out.push(EntryOutcome { partitions, groups });
    }
    r.end()?;
    Ok((id, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i64) -> MarkerEntry {
        MarkerEntry {
            producer_id: pid,
            epoch: 3,
            commit: pid % 2 == 0,
            coordinator_epoch: 7,
            partitions: vec![TopicPartition::new("a", 0), TopicPartition::new("bé", 5)],
            groups: vec!["g1".into()],
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let entries = vec![entry(1), entry(2), MarkerEntry { partitions: vec![], groups: vec![], ..entry(4) }];
        let b = encode_request(9, 2, &entries);
        assert_eq!(decode_request(&b), Ok((9, 2, entries)));
        let outcomes = vec![
            EntryOutcome { partitions: vec![Outcome::Written, Outcome::NotLeader], groups: vec![Outcome::Failed] },
            EntryOutcome { partitions: vec![Outcome::Unknown], groups: vec![] },
        ];
        let b = encode_reply(11, &outcomes);
        assert_eq!(decode_reply(&b), Ok((11, outcomes)));
    }

    #[test]
    fn bad_bytes_are_errors_not_allocations() {
        let b = encode_request(9, 2, &[entry(1)]);
        for cut in 0..b.len() {
            assert!(decode_request(&b[..cut]).is_err(), "a request cut at {cut} bytes must not decode");
        }
        let mut huge = vec![WIRE_VERSION];
        huge.extend(1u64.to_be_bytes());
        huge.extend(0u16.to_be_bytes());
        huge.extend(u32::MAX.to_be_bytes());
        assert_eq!(decode_request(&huge), Err(MarkerWireError::Count(u32::MAX)));
        let mut trailing = encode_reply(1, &[]).to_vec();
        trailing.push(0);
        assert_eq!(decode_reply(&trailing), Err(MarkerWireError::Trailing(1)));
        let mut bad = encode_reply(1, &[EntryOutcome { partitions: vec![Outcome::Written], groups: vec![] }]).to_vec();
        bad[8 + 1 + 4 + 4] = 9;
        assert_eq!(decode_reply(&bad), Err(MarkerWireError::Code(9)));
        assert_eq!(decode_reply(&[2]), Err(MarkerWireError::Version(2)));
    }
}
