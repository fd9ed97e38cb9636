//! Transaction markers wherever the partitions' leaders are: the coordinator's side (which
//! broker gets which marker, retries) and the receiving side (appending them), for a lone
//! broker and a cluster alike.
//!
//! Contract:
//! - [`deliver`] writes the COMMIT/ABORT markers of one prepared transaction: each data
//!   partition's marker goes to the partition's leader as this broker's metadata names it, and
//!   each group's staged offsets are completed by the leader of the group's `__consumer_offsets`
//!   partition (`peer::leaders`). Markers for this broker are appended here ([`write_local`]);
//!   the others go, one [`MarkerEntry`] per transaction and broker, through a per-broker
//!   outbox: while a request to a broker is in flight, the entries for it queue, and the next
//!   request ([`MarkerRequest`], a `peer::call`) carries every queued one (at most
//!   `TXN_MARKERS_PER_REQUEST`) — Kafka's coordinator sends one WriteTxnMarkers per broker with
//!   all its pending markers the same way. A marker answered not-leader, unavailable or
//!   unanswered (the link is down, `TXN_MARKER_REQUEST_TIMEOUT_MS` passed) is retried after
//!   re-reading the metadata, up to `TXN_MARKER_ATTEMPTS` rounds `TXN_MARKER_RETRY_MS` apart;
//!   then [`deliver`] fails and the transaction stays prepared for the coordinator's sweep. A
//!   partition the metadata no longer has is skipped (deleted: nothing to mark).
//! - [`write_local`] (the receiver's side, also used for this broker's own partitions) appends
//!   every entry's markers through the produce path (acks=all: a replicated partition's marker
//!   is answered at its Raft commit, at most `COORDINATOR_APPEND_TIMEOUT_MS` later) and
//!   completes the groups' offsets on their coordinator shards, answering one [`Outcome`] per
//!   partition and group. Markers are idempotent for a partition (a repeated one finds no open
//!   transaction of its producer), so retries are safe.
//! - The wire format of the requests and replies between brokers is here ([`MarkerRequest`]'s
//!   `PeerCall::put`, `take`, `put_answer`, `take_answer`) in `peer::wire`'s conventions:
//!   big-endian, a version byte, every count and length checked against the bytes left before
//!   anything is allocated. The transport (net's peer links, `peer::calls`) carries them as
//!   opaque payloads (`peer::PeerLink`).
//! - Every `RefCell` borrow of the outbox ends before an `.await`.

use super::{CompleteOffsetsRequest, TxnError};
use crate::groups::OFFSETS_TOPIC;
use crate::msg::{Acks, ProduceItem};
use crate::peer::call::{call, PeerCall};
use crate::peer::leaders::{by_leader, leader_of, rounds, Dest, Leader};
use crate::peer::wire::{put_name, Reader, WireError};
use crate::peer::CallKind;
use crate::shard::Shard;
use crate::PartitionError;
use bytes::{BufMut, Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::join_all;
use sluice_core::batch;
use sluice_core::clock::now_ms;
use sluice_core::limits::{
    COORDINATOR_APPEND_TIMEOUT_MS, TXN_MARKERS_PER_REQUEST, TXN_MARKER_ATTEMPTS, TXN_MARKER_REQUEST_TIMEOUT_MS,
    TXN_MARKER_RETRY_MS,
};
use sluice_core::{PartitionId, TopicPartition};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::rc::Rc;

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

/// The leader of a group's `__consumer_offsets` partition (here when unknown: the group
/// coordinator's own answer then decides).
fn group_dest(shard: &Shard, group: &str) -> Dest {
    let partitions = shard.metadata().topics.get(OFFSETS_TOPIC).map_or(0, |t| t.shards.len());
    if partitions == 0 {
        return Dest::Here;
    }
    let tp = TopicPartition::new(OFFSETS_TOPIC, crate::groups::offsets_partition(group, partitions));
    match leader_of(shard, &tp) {
        Leader::At(d) => d,
        Leader::NotKnown | Leader::Gone => Dest::Here,
    }
}

/// What a transaction's markers still need after a round, and why.
#[derive(Debug, Default)]
struct Undone {
    partitions: Vec<TopicPartition>,
    groups: Vec<String>,
    why: String,
}

/// Writes the markers of a durable Prepare state everywhere (module docs): Ok once every
/// partition is marked (or gone) and every group's offsets completed.
pub async fn deliver(
    shard: &Rc<Shard>,
    meta: &super::state::TxnMeta,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<(), TxnError> {
    let blank = MarkerEntry {
        producer_id: meta.producer_id,
        epoch: meta.producer_epoch,
        commit,
        coordinator_epoch,
        partitions: Vec::new(),
        groups: Vec::new(),
    };
    let partitions = meta
        .partitions
        .iter()
        .filter(|(t, _)| t != OFFSETS_TOPIC)
        .map(|(t, p)| TopicPartition::new(t.clone(), *p))
        .collect();
    let undone = Undone { partitions, groups: meta.groups.iter().cloned().collect(), why: String::new() };
    let end = rounds(TXN_MARKER_ATTEMPTS, TXN_MARKER_RETRY_MS, undone, async |round, undone| {
        let left = deliver_round(shard, &blank, undone).await;
        if left.partitions.is_empty() && left.groups.is_empty() {
            return ControlFlow::Break(());
        }
        tracing::debug!(producer_id = meta.producer_id, partitions = left.partitions.len(), groups = left.groups.len(), attempt = round.attempt, why = %left.why, "transaction markers not all written yet");
        ControlFlow::Continue(left)
    })
    .await;
    end.map_err(|left| {
        TxnError::Storage(format!(
            "{} transaction markers and {} groups' offsets not written yet ({}); the sweep retries",
            left.partitions.len(),
            left.groups.len(),
            left.why
        ))
    })
}

/// Where one round sends the markers: one entry per leader (partitions, and groups by their
/// offsets partition's leader), and the partitions with no leader known yet.
fn plan(
    shard: &Shard,
    blank: &MarkerEntry,
    partitions: Vec<TopicPartition>,
    groups: Vec<String>,
) -> (BTreeMap<Dest, MarkerEntry>, Vec<TopicPartition>) {
    let split = by_leader(partitions, |tp| leader_of(shard, tp));
    for tp in &split.gone {
        tracing::debug!(partition = %tp, "transaction marker skipped: the partition was deleted");
    }
    let mut plan: BTreeMap<Dest, MarkerEntry> =
        split.to.into_iter().map(|(d, partitions)| (d, MarkerEntry { partitions, ..blank.clone() })).collect();
    for g in groups {
        plan.entry(group_dest(shard, &g)).or_insert_with(|| blank.clone()).groups.push(g);
    }
    (plan, split.not_known)
}

/// One round: every leader's entry written at once; what is left for the next.
async fn deliver_round(shard: &Rc<Shard>, blank: &MarkerEntry, undone: Undone) -> Undone {
    let (plan, waiting) = plan(shard, blank, undone.partitions, undone.groups);
    let sends = plan.into_iter().map(|(d, e)| async move {
        let outcome = match d {
            Dest::Here => write_local(shard, std::slice::from_ref(&e)).await.pop(),
            Dest::Broker(node) => send_remote(shard, node, e.clone()).await,
        };
        (d, e, outcome)
    });
    let done = join_all(sends).await;
    let mut left = Undone { partitions: waiting, groups: Vec::new(), why: undone.why };
    for (d, e, outcome) in done {
        left.keep(shard, d, e, outcome);
    }
    left
}

impl Undone {
    /// Keeps what `d` did not write of entry `e` (all of it when it did not answer).
    fn keep(&mut self, shard: &Shard, d: Dest, e: MarkerEntry, outcome: Option<EntryOutcome>) {
        let Some(o) = outcome.filter(|o| o.partitions.len() == e.partitions.len() && o.groups.len() == e.groups.len())
        else {
            self.why = format!("no answer from {d:?}");
            self.partitions.extend(e.partitions);
            self.groups.extend(e.groups);
            return;
        };
        for (tp, r) in e.partitions.into_iter().zip(o.partitions) {
            match r {
                Outcome::Written => {}
                // Not open yet (its shard still recovers at start) unless deleted.
                Outcome::Unknown if leader_of(shard, &tp) == Leader::Gone => {}
                other => {
                    self.why = format!("{tp}: {other:?} at {d:?}");
                    self.partitions.push(tp);
                }
            }
        }
        for (g, r) in e.groups.into_iter().zip(o.groups) {
            if r != Outcome::Written {
                self.why = format!("offsets of group {g}: {r:?} at {d:?}");
                self.groups.push(g);
            }
        }
    }
}

/// Entries waiting for a request to one broker, each with its caller's reply.
type Queued = Vec<(MarkerEntry, oneshot::Sender<Option<EntryOutcome>>)>;

thread_local! {
    /// Entries for each broker not yet sent.
    static OUTBOX: RefCell<BTreeMap<i32, Queued>> = const { RefCell::new(BTreeMap::new()) };
    /// Brokers with a request in flight (its sender sends the queue's next request after it).
    static SENDING: RefCell<BTreeSet<i32>> = const { RefCell::new(BTreeSet::new()) };
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
        let request = MarkerRequest(batch.iter().map(|(e, _)| e.clone()).collect());
        let outcomes = call(node, reply_shard, &request).await.ok();
        tracing::debug!(
            node,
            transactions = request.0.len(),
            answered = outcomes.is_some(),
            "transaction markers sent to a broker"
        );
        let mut outcomes = outcomes.filter(|o| o.len() == batch.len()).map(Vec::into_iter);
        for (_, reply) in batch {
            let _ = reply.send(outcomes.as_mut().and_then(Iterator::next));
        }
    }
}

/// One marker request between brokers: the entries queued for one broker (at most
/// `TXN_MARKERS_PER_REQUEST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerRequest(pub Vec<MarkerEntry>);

impl PeerCall for MarkerRequest {
    type Answer = Vec<EntryOutcome>;
    const KIND: CallKind = CallKind::TxnMarkers;
    const TIMEOUT_MS: u64 = TXN_MARKER_REQUEST_TIMEOUT_MS;

    /// `count | entries`.
    fn put(&self, b: &mut BytesMut) {
        b.put_u32(u32::try_from(self.0.len()).expect("bounded by TXN_MARKERS_PER_REQUEST"));
        for e in &self.0 {
            b.put_i64(e.producer_id);
            b.put_i16(e.epoch);
            b.put_u8(u8::from(e.commit));
            b.put_i32(e.coordinator_epoch);
            b.put_u32(u32::try_from(e.partitions.len()).expect("a transaction's partitions fit u32"));
            for tp in &e.partitions {
                put_name(b, &tp.topic);
                b.put_i32(tp.partition.0);
            }
            b.put_u32(u32::try_from(e.groups.len()).expect("a transaction's groups fit u32"));
            for g in &e.groups {
                put_name(b, g);
            }
        }
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let n = r.count(MIN_ENTRY_BYTES)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(take_entry(r)?);
        }
        Ok(MarkerRequest(entries))
    }

    /// `count | per entry: partitions' codes, groups' codes`.
    fn put_answer(outcomes: &Vec<EntryOutcome>, b: &mut BytesMut) {
        b.put_u32(u32::try_from(outcomes.len()).expect("one per entry"));
        for o in outcomes {
            for list in [&o.partitions, &o.groups] {
                b.put_u32(u32::try_from(list.len()).expect("one per partition"));
                b.extend(list.iter().map(|c| c.code()));
            }
        }
    }

    fn take_answer(r: &mut Reader<'_>) -> Result<Vec<EntryOutcome>, WireError> {
        let n = r.count(8)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut lists = [Vec::new(), Vec::new()];
            for list in &mut lists {
                let k = r.count(1)?;
                for c in r.take(k)? {
                    list.push(Outcome::from_code(*c).ok_or(WireError::Code(*c))?);
                }
            }
            let [partitions, groups] = lists;
            out.push(EntryOutcome { partitions, groups });
        }
        Ok(out)
    }

    /// Appends the markers here for another broker's coordinator.
    async fn serve(self, shard: Rc<Shard>, from: i32) -> Vec<EntryOutcome> {
        let outcomes = write_local(&shard, &self.0).await;
        let written = outcomes.iter().flat_map(|o| &o.partitions).filter(|o| **o == Outcome::Written).count();
        tracing::debug!(
            from,
            transactions = self.0.len(),
            written,
            "transaction markers written for another broker's coordinator"
        );
        outcomes
    }
}

// --- wire format ---------------------------------------------------------------------

/// Bytes of the smallest encoded entry (no partitions, no groups).
const MIN_ENTRY_BYTES: usize = 8 + 2 + 1 + 4 + 4 + 4;

/// One entry of a request ([`MarkerRequest`]'s `put`).
fn take_entry(r: &mut Reader<'_>) -> Result<MarkerEntry, WireError> {
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
    Ok(MarkerEntry { producer_id, epoch, commit, coordinator_epoch, partitions, groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::call::{decode_reply, decode_request, encode_reply, encode_request};
    use crate::peer::wire::WIRE_VERSION;

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
        let b = encode_request(9, 2, &MarkerRequest(entries.clone()));
        assert_eq!(decode_request(&b), Ok((9, 2, MarkerRequest(entries))));
        let outcomes = vec![
            EntryOutcome { partitions: vec![Outcome::Written, Outcome::NotLeader], groups: vec![Outcome::Failed] },
            EntryOutcome { partitions: vec![Outcome::Unknown], groups: vec![] },
        ];
        let b = encode_reply::<MarkerRequest>(11, &outcomes);
        assert_eq!(decode_reply::<MarkerRequest>(&b), Ok((11, outcomes)));
    }

    #[test]
    fn bad_bytes_are_errors_not_allocations() {
        let b = encode_request(9, 2, &MarkerRequest(vec![entry(1)]));
        for cut in 0..b.len() {
            assert!(
                decode_request::<MarkerRequest>(&b[..cut]).is_err(),
                "a request cut at {cut} bytes must not decode"
            );
        }
        let mut huge = vec![WIRE_VERSION];
        huge.extend(1u64.to_be_bytes());
        huge.extend(0u16.to_be_bytes());
        huge.extend(u32::MAX.to_be_bytes());
        assert_eq!(decode_request::<MarkerRequest>(&huge), Err(WireError::Count(u32::MAX)));
        let mut trailing = encode_reply::<MarkerRequest>(1, &vec![]).to_vec();
        trailing.push(0);
        assert_eq!(decode_reply::<MarkerRequest>(&trailing), Err(WireError::Trailing(1)));
        let one = vec![EntryOutcome { partitions: vec![Outcome::Written], groups: vec![] }];
        let mut bad = encode_reply::<MarkerRequest>(1, &one).to_vec();
        bad[8 + 1 + 4 + 4] = 9;
        assert_eq!(decode_reply::<MarkerRequest>(&bad), Err(WireError::Code(9)));
        assert_eq!(decode_reply::<MarkerRequest>(&[2]), Err(WireError::Version(2)));
    }
}
