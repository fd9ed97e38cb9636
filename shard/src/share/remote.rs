//! Share-partition state operations wherever the partitions' leaders are: the group
//! coordinator's side of AlterShareGroupOffsets, DeleteShareGroupOffsets,
//! DescribeShareGroupOffsets and DeleteGroups in a cluster (Kafka's group coordinator does them
//! through the share coordinator's Read/Write/DeleteShareGroupState RPCs), and the leader's side
//! that answers them.
//!
//! Contract:
//! - [`run`] applies one [`StateOp`] to a group's share-partitions on each partition's leader as
//!   this broker's metadata names it: those it leads here (through the owner shards, as on a
//!   lone broker), the others in one [`StateCall`] per leader (at most
//!   `SHARE_STATE_PARTITIONS_PER_REQUEST` partitions each, all sent at once) to shard 0 of that
//!   broker over the peer links, answered by one reply frame routed to the asking shard. A
//!   partition answered not-leader (a leader that moved, or none known yet), or whose call
//!   could not be sent or was not answered within `SHARE_STATE_REQUEST_TIMEOUT_MS`, is tried
//!   again after re-reading the metadata, up to `SHARE_STATE_ATTEMPTS` rounds
//!   `SHARE_STATE_RETRY_MS` apart (as transaction markers are); then it is answered with its
//!   last error. Every other answer (including a partition the metadata does not have) is
//!   final. The operations are idempotent (read, set to an offset, forget), so a call that
//!   was carried out but whose answer was lost is safe to repeat.
//! - [`on_request`] (the leader's side) answers every partition of a call: it applies the
//!   operation to those this broker leads (never forwarding further) and answers
//!   NOT_LEADER_OR_FOLLOWER, with the leader it knows, for the others.
//! - The wire format is here ([`encode_call`], [`decode_call`], [`encode_answer`],
//!   [`decode_answer`]) in the transaction markers' conventions: big-endian, a version byte,
//!   every count checked against the bytes left before anything is allocated. The transport
//!   (net's peer links, `peer::share`) carries it as opaque payloads ([`ShareLink`]).

use crate::error::PartitionError;
use crate::route::Tagged;
use crate::shard::Shard;
use crate::txn::markers::{self, Dest, MarkerWireError, Reader};
use bytes::{BufMut, Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{join, join_all, select, Either};
use sluice_core::limits::{
    SHARE_STATE_ATTEMPTS, SHARE_STATE_PARTITIONS_PER_REQUEST, SHARE_STATE_REQUEST_TIMEOUT_MS, SHARE_STATE_RETRY_MS,
};
use sluice_core::TopicPartition;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// What is done to each share-partition of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOp {
    /// Its start offset (DescribeShareGroupOffsets; Kafka's ReadShareGroupStateSummary).
    Read,
    /// Its in-flight state dropped and its start offset set (AlterShareGroupOffsets; Kafka's
    /// WriteShareGroupState).
    Reset(i64),
    /// Forgotten (DeleteShareGroupOffsets, DeleteGroups; Kafka's DeleteShareGroupState).
    Forget,
}

impl StateOp {
    /// The form `share::offsets` takes (`None`: read; `Some(None)`: forget).
    pub fn as_set(self) -> Option<Option<i64>> {
        match self {
            StateOp::Read => None,
            StateOp::Reset(at) => Some(Some(at)),
            StateOp::Forget => Some(None),
        }
    }

    pub fn of_set(set: Option<Option<i64>>) -> StateOp {
        match set {
            None => StateOp::Read,
            Some(Some(at)) => StateOp::Reset(at),
            Some(None) => StateOp::Forget,
        }
    }
}

/// One call from a group coordinator to a partitions' leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCall {
    pub group_id: String,
    pub op: StateOp,
    pub partitions: Vec<TopicPartition>,
}

/// A share-partition's start offset (`None`: the group has no state for it), or why not.
pub type PartAnswer = Result<Option<i64>, PartitionError>;

/// The peer transport as share-state calls use it (net implements it).
pub trait ShareLink {
    /// Queues `payload` for shard `to_shard` of broker `to`; false when it could not be queued.
    fn send(&self, to: i32, to_shard: u16, kind: ShareFrame, payload: Bytes) -> bool;
}

/// What a share-state frame between brokers is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareFrame {
    Request,
    Reply,
}

/// The shard of a broker that takes share-state calls (it routes each partition to its owner).
const REQUEST_SHARD: u16 = 0;

thread_local! {
    static LINK: RefCell<Option<Rc<dyn ShareLink>>> = const { RefCell::new(None) };
    /// Calls waiting for their reply, by request id.
    static WAITING: RefCell<HashMap<u64, oneshot::Sender<Vec<PartAnswer>>>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// Installs the transport to other brokers (every shard, at start, in a cluster).
pub fn set_link(link: Rc<dyn ShareLink>) {
    LINK.with(|l| *l.borrow_mut() = Some(link));
}

fn link() -> Option<Rc<dyn ShareLink>> {
    LINK.with(|l| l.borrow().clone())
}

/// Whether a partition's answer is worth another round after re-reading the metadata (the
/// leader moved, or none is known yet; a call not answered is tried again too).
fn retriable(e: &PartitionError) -> bool {
    matches!(
        e,
        PartitionError::NotLeaderOrFollower { .. }
            | PartitionError::FencedLeaderEpoch { .. }
            | PartitionError::UnknownLeaderEpoch { .. }
            | PartitionError::NotCommitted(_)
            | PartitionError::ShuttingDown
    )
}

/// One partition's outcome of a round.
#[derive(Debug)]
enum Got {
    Answer(PartAnswer),
    /// The call could not be sent or was not answered in time.
    Lost,
}

/// Where one round sends each item.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    here: Vec<(usize, TopicPartition)>,
    remote: BTreeMap<i32, Vec<(usize, TopicPartition)>>,
    /// Answered already: no such partition (final), or no leader known (tried again).
    answered: Vec<Tagged<Option<i64>>>,
}

/// Splits `items` by the leader `dest` names (a pure function of it, for tests).
fn plan(items: Vec<(usize, TopicPartition)>, dest: impl Fn(&TopicPartition) -> Option<Result<Dest, ()>>) -> Plan {
    let mut p = Plan::default();
    for (i, tp) in items {
        match dest(&tp) {
            None => p.answered.push((i, Err(PartitionError::UnknownTopicOrPartition))),
            Some(Err(())) => p.answered.push((i, Err(PartitionError::NotLeaderOrFollower { leader: None, epoch: -1 }))),
            Some(Ok(Dest::Here)) => p.here.push((i, tp)),
            Some(Ok(Dest::Broker(n))) => p.remote.entry(n).or_default().push((i, tp)),
        }
    }
    p
}

/// The operation on every listed share-partition of the group, on its leader (module docs).
pub async fn run(
    shard: &Rc<Shard>,
    group_id: &str,
    items: Vec<(usize, TopicPartition)>,
    op: StateOp,
) -> Vec<Tagged<Option<i64>>> {
    let tps: HashMap<usize, TopicPartition> = items.iter().cloned().collect();
    let mut pending = items;
    let mut out: Vec<Tagged<Option<i64>>> = Vec::with_capacity(pending.len());
    for attempt in 0..SHARE_STATE_ATTEMPTS {
        if attempt > 0 {
            glommio::timer::sleep(Duration::from_millis(SHARE_STATE_RETRY_MS)).await;
        }
        let Plan { here, remote, answered } = plan(std::mem::take(&mut pending), |tp| markers::dest_of(shard, tp));
        let local = super::offsets_here(shard, group_id, here, op.as_set());
        let calls = remote.into_iter().flat_map(|(node, items)| {
            let chunks: Vec<Vec<(usize, TopicPartition)>> =
                items.chunks(SHARE_STATE_PARTITIONS_PER_REQUEST).map(<[_]>::to_vec).collect();
            chunks.into_iter().map(move |chunk| ask(shard, node, group_id, op, chunk))
        });
        let (local, remote) = join(local, join_all(calls)).await;
        let last = attempt + 1 == SHARE_STATE_ATTEMPTS;
        let got =
            answered.into_iter().chain(local).map(|(i, r)| (i, Got::Answer(r))).chain(remote.into_iter().flatten());
        for (i, g) in got {
            let again = match &g {
                Got::Answer(Err(e)) => retriable(e),
                Got::Answer(Ok(_)) => false,
                Got::Lost => true,
            };
            if again && !last {
                tracing::debug!(group = %group_id, index = i, outcome = ?g, attempt, "share state call tried again");
                pending.push((i, tps[&i].clone()));
                continue;
            }
            out.push(match g {
                Got::Answer(r) => (i, r),
                Got::Lost => (i, Err(PartitionError::RequestTimedOut(SHARE_STATE_REQUEST_TIMEOUT_MS))),
            });
        }
        if pending.is_empty() {
            break;
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

/// One call to broker `node` for `items`.
async fn ask(
    shard: &Rc<Shard>,
    node: i32,
    group_id: &str,
    op: StateOp,
    items: Vec<(usize, TopicPartition)>,
) -> Vec<(usize, Got)> {
    let call =
        StateCall { group_id: group_id.to_string(), op, partitions: items.iter().map(|(_, tp)| tp.clone()).collect() };
    let answers = request(shard, node, &call).await.filter(|a| a.len() == items.len());
    tracing::debug!(node, group = %group_id, ?op, partitions = items.len(), answered = answers.is_some(), "share state call to another broker");
    match answers {
        Some(a) => items.into_iter().map(|(i, _)| i).zip(a.into_iter().map(Got::Answer)).collect(),
        None => items.into_iter().map(|(i, _)| (i, Got::Lost)).collect(),
    }
}

async fn request(shard: &Rc<Shard>, node: i32, call: &StateCall) -> Option<Vec<PartAnswer>> {
    let link = link()?;
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let (tx, rx) = oneshot::channel();
    WAITING.with(|w| w.borrow_mut().insert(id, tx));
    let reply_shard = u16::try_from(shard.id.index()).expect("shard ids fit u16");
    let sent = link.send(node, REQUEST_SHARD, ShareFrame::Request, encode_call(id, reply_shard, call));
    let answer = if sent {
        let limit = glommio::timer::sleep(Duration::from_millis(SHARE_STATE_REQUEST_TIMEOUT_MS));
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

/// The leader's side: a call from broker `from`'s group coordinator, answered for every
/// partition (module docs).
pub fn on_request(shard: &Rc<Shard>, from: i32, payload: Bytes) {
    let (id, reply_shard, call) = match decode_call(&payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(from, error = %e, "undecodable share state call dropped");
            return;
        }
    };
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let answers = serve(&shard, call).await;
        let sent = link().is_some_and(|l| l.send(from, reply_shard, ShareFrame::Reply, encode_answer(id, &answers)));
        if !sent {
            tracing::debug!(from, "share state reply not sent (the coordinator tries again)");
        }
    })
    .detach();
}

/// Applies a call to the partitions this broker leads; NOT_LEADER_OR_FOLLOWER for the others.
async fn serve(shard: &Rc<Shard>, call: StateCall) -> Vec<PartAnswer> {
    let n = call.partitions.len();
    let items: Vec<(usize, TopicPartition)> = call.partitions.into_iter().enumerate().collect();
    let Plan { here, remote, answered } = plan(items, |tp| markers::dest_of(shard, tp));
    let mut out: Vec<Option<PartAnswer>> = vec![None; n];
    for (i, r) in answered {
        out[i] = Some(r);
    }
    for (leader, items) in remote {
        for (i, _) in items {
            out[i] = Some(Err(PartitionError::NotLeaderOrFollower { leader: Some(leader), epoch: -1 }));
        }
    }
    for (i, r) in super::offsets_here(shard, &call.group_id, here, call.op.as_set()).await {
        out[i] = Some(r);
    }
    out.into_iter().map(|r| r.unwrap_or(Err(PartitionError::ShuttingDown))).collect()
}

/// A reply to one of this shard's calls.
pub fn on_reply(from: i32, payload: Bytes) {
    match decode_answer(&payload) {
        Ok((id, answers)) => {
            if let Some(tx) = WAITING.with(|w| w.borrow_mut().remove(&id)) {
                let _ = tx.send(answers);
            }
        }
        Err(e) => tracing::warn!(from, error = %e, "undecodable share state reply dropped"),
    }
}

// --- wire format ---------------------------------------------------------------------

/// `version | id | reply shard | op (0 read, 1 reset, 2 forget) | offset | group | count |
/// (topic, partition)…`.
pub fn encode_call(id: u64, reply_shard: u16, c: &StateCall) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(markers::WIRE_VERSION);
    b.put_u64(id);
    b.put_u16(reply_shard);
    let (op, at) = match c.op {
        StateOp::Read => (0u8, -1i64),
        StateOp::Reset(at) => (1, at),
        StateOp::Forget => (2, -1),
    };
    b.put_u8(op);
    b.put_i64(at);
    markers::put_name(&mut b, &c.group_id);
    b.put_u32(u32::try_from(c.partitions.len()).expect("bounded by SHARE_STATE_PARTITIONS_PER_REQUEST"));
    for tp in &c.partitions {
        markers::put_name(&mut b, &tp.topic);
        b.put_i32(tp.partition.0);
    }
    b.freeze()
}

/// See [`encode_call`].
pub fn decode_call(b: &[u8]) -> Result<(u64, u16, StateCall), MarkerWireError> {
    let mut r = Reader(b);
    r.version()?;
    let id = r.u64()?;
    let reply_shard = r.u16()?;
    let code = r.u8()?;
    let at = i64::from_be_bytes(r.array()?);
    let op = match code {
        0 => StateOp::Read,
        1 => StateOp::Reset(at),
        2 => StateOp::Forget,
        c => return Err(MarkerWireError::Code(c)),
    };
    let group_id = r.name()?;
    let n = r.count(2 + 4)?;
    let mut partitions = Vec::with_capacity(n);
    for _ in 0..n {
        let t = r.name()?;
        partitions.push(TopicPartition::new(t, i32::from_be_bytes(r.array()?)));
    }
    r.end()?;
    Ok((id, reply_shard, StateCall { group_id, op, partitions }))
}

/// Bytes of one encoded answer without its message.
const ANSWER_FIXED_BYTES: usize = 1 + 8 + 4 + 2;

/// One answer's `code | value | aux | message`: code 0 is Ok with the start offset in `value`
/// (-1: none); the others name the error (`aux`: the leader, -1 when unknown).
fn answer_parts(a: &PartAnswer) -> (u8, i64, i32, String) {
    match a {
        Ok(v) => (0, v.unwrap_or(-1), 0, String::new()),
        Err(PartitionError::NotLeaderOrFollower { leader, epoch }) => {
            (1, i64::from(*epoch), leader.unwrap_or(-1), String::new())
        }
        Err(PartitionError::FencedLeaderEpoch { current, leader, .. }) => {
            (1, i64::from(*current), leader.unwrap_or(-1), String::new())
        }
        Err(PartitionError::UnknownLeaderEpoch { current, .. }) => (1, i64::from(*current), -1, String::new()),
        Err(PartitionError::UnknownTopicOrPartition) => (2, 0, 0, String::new()),
        Err(PartitionError::RequestTimedOut(ms)) => (3, i64::try_from(*ms).unwrap_or(i64::MAX), 0, String::new()),
        Err(PartitionError::NotCommitted(m)) => (4, 0, 0, m.clone()),
        Err(PartitionError::ShuttingDown) => (6, 0, 0, String::new()),
        Err(PartitionError::Storage(m)) => (5, 0, 0, m.clone()),
        // None of the others comes from a share-state operation; if one ever does, its text
        // travels as a storage error.
        Err(other) => (5, 0, 0, other.to_string()),
    }
}

fn answer_of(code: u8, value: i64, aux: i32, msg: String) -> Result<PartAnswer, MarkerWireError> {
    Ok(match code {
        0 => Ok((value >= 0).then_some(value)),
        1 => Err(PartitionError::NotLeaderOrFollower {
            leader: (aux >= 0).then_some(aux),
            epoch: i32::try_from(value).unwrap_or(-1),
        }),
        2 => Err(PartitionError::UnknownTopicOrPartition),
        3 => Err(PartitionError::RequestTimedOut(u64::try_from(value).unwrap_or(0))),
        4 => Err(PartitionError::NotCommitted(msg)),
        5 => Err(PartitionError::Storage(msg)),
        6 => Err(PartitionError::ShuttingDown),
        c => return Err(MarkerWireError::Code(c)),
    })
}

/// `version | id | count | per partition: code, value, aux, message`.
pub fn encode_answer(id: u64, answers: &[PartAnswer]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(markers::WIRE_VERSION);
    b.put_u64(id);
    b.put_u32(u32::try_from(answers.len()).expect("one per partition of a call"));
    for a in answers {
        let (code, value, aux, msg) = answer_parts(a);
        b.put_u8(code);
        b.put_i64(value);
        b.put_i32(aux);
        // A message longer than a name allows is cut at a character boundary.
        let mut end = msg.len().min(usize::from(u16::MAX));
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        markers::put_name(&mut b, &msg[..end]);
    }
    b.freeze()
}

/// See [`encode_answer`].
pub fn decode_answer(b: &[u8]) -> Result<(u64, Vec<PartAnswer>), MarkerWireError> {
    let mut r = Reader(b);
    r.version()?;
    let id = r.u64()?;
    let n = r.count(ANSWER_FIXED_BYTES)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let code = r.u8()?;
        let value = i64::from_be_bytes(r.array()?);
        let aux = i32::from_be_bytes(r.array()?);
        let msg = r.name()?;
        out.push(answer_of(code, value, aux, msg)?);
    }
    r.end()?;
    Ok((id, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn calls_round_trip_and_damage_is_refused() {
        for op in [StateOp::Read, StateOp::Reset(42), StateOp::Forget] {
            let call = StateCall { group_id: "g-é".into(), op, partitions: vec![tp("a", 0), tp("b", 7)] };
            let b = encode_call(9, 1, &call);
            assert_eq!(decode_call(&b), Ok((9, 1, call.clone())));
            for cut in 0..b.len() {
                assert!(decode_call(&b[..cut]).is_err(), "a call cut at {cut} bytes must not decode");
            }
            let mut long = b.to_vec();
            long.push(0);
            assert_eq!(decode_call(&long), Err(MarkerWireError::Trailing(1)));
        }
        let mut bad =
            encode_call(1, 0, &StateCall { group_id: "g".into(), op: StateOp::Read, partitions: vec![] }).to_vec();
        bad[11] = 9;
        assert_eq!(decode_call(&bad), Err(MarkerWireError::Code(9)));
    }

    #[test]
    fn answers_round_trip_and_a_huge_count_is_refused_before_allocating() {
        let answers: Vec<PartAnswer> = vec![
            Ok(Some(40)),
            Ok(None),
            Err(PartitionError::NotLeaderOrFollower { leader: Some(2), epoch: 5 }),
            Err(PartitionError::NotLeaderOrFollower { leader: None, epoch: -1 }),
            Err(PartitionError::UnknownTopicOrPartition),
            Err(PartitionError::RequestTimedOut(5000)),
            Err(PartitionError::NotCommitted("overwritten".into())),
            Err(PartitionError::Storage("disk full".into())),
            Err(PartitionError::ShuttingDown),
        ];
        let b = encode_answer(3, &answers);
        assert_eq!(decode_answer(&b), Ok((3, answers)));
        for cut in 0..b.len() {
            assert!(decode_answer(&b[..cut]).is_err(), "an answer cut at {cut} bytes must not decode");
        }
        let mut huge = encode_answer(3, &[]).to_vec();
        huge[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_answer(&huge), Err(MarkerWireError::Count(u32::MAX)));
        // Errors a share-state operation never gives travel as storage errors with their text.
        let other = encode_answer(4, &[Err(PartitionError::InvalidRequest("x".into()))]);
        assert_eq!(decode_answer(&other), Ok((4, vec![Err(PartitionError::Storage("invalid request: x".into()))])));
    }

    #[test]
    fn a_round_sends_each_partition_to_its_leader() {
        let items: Vec<(usize, TopicPartition)> = vec![
            (0, tp("t", 0)),
            (1, tp("t", 1)),
            (2, tp("t", 2)),
            (3, tp("gone", 0)),
            (4, tp("t", 3)),
            (5, tp("t", 4)),
        ];
        let p = plan(items, |tp| match (tp.topic.as_str(), tp.partition.0) {
            ("gone", _) => None,
            (_, 0 | 3) => Some(Ok(Dest::Here)),
            (_, 1 | 4) => Some(Ok(Dest::Broker(2))),
            _ => Some(Err(())),
        });
        assert_eq!(p.here, vec![(0, tp("t", 0)), (4, tp("t", 3))]);
        assert_eq!(p.remote.len(), 1);
        assert_eq!(p.remote[&2], vec![(1, tp("t", 1)), (5, tp("t", 4))], "one call per broker, in order");
        assert_eq!(
            p.answered,
            vec![
                (2, Err(PartitionError::NotLeaderOrFollower { leader: None, epoch: -1 })),
                (3, Err(PartitionError::UnknownTopicOrPartition)),
            ]
        );
    }

    #[test]
    fn only_leadership_changes_are_tried_again() {
        assert!(retriable(&PartitionError::NotLeaderOrFollower { leader: Some(1), epoch: 3 }));
        assert!(retriable(&PartitionError::NotCommitted("x".into())));
        assert!(!retriable(&PartitionError::UnknownTopicOrPartition));
        assert!(!retriable(&PartitionError::Storage("x".into())));
        assert!(!retriable(&PartitionError::RequestTimedOut(5000)), "a leader's own timeout is its answer");
    }
}
