//! Share-partition state operations wherever the partitions' leaders are: the group
//! coordinator's side of AlterShareGroupOffsets, DeleteShareGroupOffsets,
//! DescribeShareGroupOffsets and DeleteGroups in a cluster (Kafka's group coordinator does them
//! through the share coordinator's Read/Write/DeleteShareGroupState RPCs), and the leader's side
//! that answers them.
//!
//! Contract:
//! - [`run`] applies one [`StateOp`] to a group's share-partitions on each partition's leader as
//!   this broker's metadata names it (`peer::leaders`): those it leads here (through the owner
//!   shards, as on a lone broker), the others in one [`StateCall`] per leader (at most
//!   `SHARE_STATE_PARTITIONS_PER_REQUEST` partitions each, all sent at once) to shard 0 of that
//!   broker over the peer links (a `peer::call`), answered by one reply frame routed to the
//!   asking shard. A
//!   partition answered not-leader (a leader that moved, or none known yet), or whose call
//!   could not be sent or was not answered within `SHARE_STATE_REQUEST_TIMEOUT_MS`, is tried
//!   again after re-reading the metadata, up to `SHARE_STATE_ATTEMPTS` rounds
//!   `SHARE_STATE_RETRY_MS` apart (as transaction markers are); then it is answered with its
//!   last error. Every other answer (including a partition the metadata does not have) is
//!   final. The operations are idempotent (read, set to an offset, forget), so a call that
//!   was carried out but whose answer was lost is safe to repeat.
//! - The leader's side (`StateCall`'s `PeerCall::serve`) answers every partition of a call: it
//!   applies the operation to those this broker leads (never forwarding further) and answers
//!   NOT_LEADER_OR_FOLLOWER, with the leader it knows, for the others.
//! - The wire format of the call and its answer is here (`StateCall`'s `PeerCall::put`,
//!   `take`, `put_answer`, `take_answer`) in `peer::wire`'s conventions: big-endian, a version
//!   byte, every count checked against the bytes left before anything is allocated. The
//!   transport (net's peer links, `peer::calls`) carries it as opaque payloads
//!   (`peer::PeerLink`).

use crate::error::PartitionError;
use crate::peer::call::{call, PeerCall};
use crate::peer::leaders::{by_leader, capped, leader_of, rounds, split_here, ByLeader, Leader, Round};
use crate::peer::wire::{put_name, Reader, WireError};
use crate::peer::CallKind;
use crate::route::Tagged;
use crate::shard::Shard;
use bytes::{BufMut, BytesMut};
use futures::future::{join, join_all};
use sluice_core::limits::{
    SHARE_STATE_ATTEMPTS, SHARE_STATE_PARTITIONS_PER_REQUEST, SHARE_STATE_REQUEST_TIMEOUT_MS, SHARE_STATE_RETRY_MS,
};
use sluice_core::TopicPartition;
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::rc::Rc;

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

/// The answer of a partition whose leader is not known here: gone (final) or none yet
/// (tried again while rounds are left).
fn unled(item: (usize, TopicPartition), gone: bool) -> Tagged<Option<i64>> {
    let e = if gone {
        PartitionError::UnknownTopicOrPartition
    } else {
        PartitionError::NotLeaderOrFollower { leader: None, epoch: -1 }
    };
    (item.0, Err(e))
}

/// Splits `items` by their leader as `leader` names it: this broker's, the other leaders',
/// and those answered already (no such partition, no leader known).
fn plan(items: Vec<(usize, TopicPartition)>, leader: impl Fn(&TopicPartition) -> Leader) -> Plan {
    let ByLeader { to, not_known, gone } = by_leader(items, |(_, tp)| leader(tp));
    let (here, remote) = split_here(to);
    let answered = not_known.into_iter().map(|i| unled(i, false)).chain(gone.into_iter().map(|i| unled(i, true)));
    Plan { here, remote, answered: answered.collect() }
}

/// Where one round sends each item.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    here: Vec<(usize, TopicPartition)>,
    remote: BTreeMap<i32, Vec<(usize, TopicPartition)>>,
    answered: Vec<Tagged<Option<i64>>>,
}

/// What is still to be asked, and what is answered for good.
type Progress = (Vec<(usize, TopicPartition)>, Vec<Tagged<Option<i64>>>);

/// The operation on every listed share-partition of the group, on its leader (module docs).
pub async fn run(
    shard: &Rc<Shard>,
    group_id: &str,
    items: Vec<(usize, TopicPartition)>,
    op: StateOp,
) -> Vec<Tagged<Option<i64>>> {
    let tps: HashMap<usize, TopicPartition> = items.iter().cloned().collect();
    let n = items.len();
    let start: Progress = (items, Vec::with_capacity(n));
    let end = rounds(SHARE_STATE_ATTEMPTS, SHARE_STATE_RETRY_MS, start, async |round, (pending, mut out)| {
        let got = run_round(shard, group_id, op, pending).await;
        let pending = settle(group_id, round, got, &tps, &mut out);
        if pending.is_empty() {
            ControlFlow::Break(out)
        } else {
            ControlFlow::Continue((pending, out))
        }
    })
    .await;
    // The last round settles every item, so the rounds end with a break.
    let mut out = end.unwrap_or_else(|(_, out)| out);
    out.sort_by_key(|(i, _)| *i);
    out
}

/// One round: this broker's partitions here, the others in calls to their leaders, at once.
async fn run_round(
    shard: &Rc<Shard>,
    group_id: &str,
    op: StateOp,
    pending: Vec<(usize, TopicPartition)>,
) -> Vec<(usize, Got)> {
    let Plan { here, remote, answered } = plan(pending, |tp| leader_of(shard, tp));
    let local = super::offsets_here(shard, group_id, here, op.as_set());
    let calls = capped(remote, SHARE_STATE_PARTITIONS_PER_REQUEST)
        .into_iter()
        .map(|(node, chunk)| ask(shard, node, group_id, op, chunk));
    let (local, remote) = join(local, join_all(calls)).await;
    answered.into_iter().chain(local).map(|(i, r)| (i, Got::Answer(r))).chain(remote.into_iter().flatten()).collect()
}

/// Puts the final outcomes of a round in `out`; returns the items to try again.
fn settle(
    group_id: &str,
    round: Round,
    got: Vec<(usize, Got)>,
    tps: &HashMap<usize, TopicPartition>,
    out: &mut Vec<Tagged<Option<i64>>>,
) -> Vec<(usize, TopicPartition)> {
    let mut pending = Vec::new();
    for (i, g) in got {
        let again = match &g {
            Got::Answer(Err(e)) => retriable(e),
            Got::Answer(Ok(_)) => false,
            Got::Lost => true,
        };
        if again && !round.last {
            tracing::debug!(group = %group_id, index = i, outcome = ?g, attempt = round.attempt, "share state call tried again");
            pending.push((i, tps[&i].clone()));
            continue;
        }
        out.push(match g {
            Got::Answer(r) => (i, r),
            Got::Lost => (i, Err(PartitionError::RequestTimedOut(SHARE_STATE_REQUEST_TIMEOUT_MS))),
        });
    }
    pending
}

/// One call to broker `node` for `items`.
async fn ask(
    shard: &Rc<Shard>,
    node: i32,
    group_id: &str,
    op: StateOp,
    items: Vec<(usize, TopicPartition)>,
) -> Vec<(usize, Got)> {
    let c =
        StateCall { group_id: group_id.to_string(), op, partitions: items.iter().map(|(_, tp)| tp.clone()).collect() };
    let reply_shard = u16::try_from(shard.id.index()).expect("shard ids fit u16");
    let answers = call(node, reply_shard, &c).await.ok().filter(|a| a.len() == items.len());
    tracing::debug!(node, group = %group_id, ?op, partitions = items.len(), answered = answers.is_some(), "share state call to another broker");
    match answers {
        Some(a) => items.into_iter().map(|(i, _)| i).zip(a.into_iter().map(Got::Answer)).collect(),
        None => items.into_iter().map(|(i, _)| (i, Got::Lost)).collect(),
    }
}

/// The leader's side: applies a call to the partitions this broker leads;
/// NOT_LEADER_OR_FOLLOWER, with the leader it knows, for the others.
async fn serve(shard: &Rc<Shard>, call: StateCall) -> Vec<PartAnswer> {
    let n = call.partitions.len();
    let items: Vec<(usize, TopicPartition)> = call.partitions.into_iter().enumerate().collect();
    let Plan { here, remote, answered } = plan(items, |tp| leader_of(shard, tp));
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

// --- wire format ---------------------------------------------------------------------

impl PeerCall for StateCall {
    type Answer = Vec<PartAnswer>;
    const KIND: CallKind = CallKind::ShareState;
    const TIMEOUT_MS: u64 = SHARE_STATE_REQUEST_TIMEOUT_MS;

    /// `op (0 read, 1 reset, 2 forget) | offset | group | count | (topic, partition)…`.
    fn put(&self, b: &mut BytesMut) {
        let (op, at) = match self.op {
            StateOp::Read => (0u8, -1i64),
            StateOp::Reset(at) => (1, at),
            StateOp::Forget => (2, -1),
        };
        b.put_u8(op);
        b.put_i64(at);
        put_name(b, &self.group_id);
        b.put_u32(u32::try_from(self.partitions.len()).expect("bounded by SHARE_STATE_PARTITIONS_PER_REQUEST"));
        for tp in &self.partitions {
            put_name(b, &tp.topic);
            b.put_i32(tp.partition.0);
        }
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let code = r.u8()?;
        let at = i64::from_be_bytes(r.array()?);
        let op = match code {
            0 => StateOp::Read,
            1 => StateOp::Reset(at),
            2 => StateOp::Forget,
            c => return Err(WireError::Code(c)),
        };
        let group_id = r.name()?;
        let n = r.count(2 + 4)?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let t = r.name()?;
            partitions.push(TopicPartition::new(t, i32::from_be_bytes(r.array()?)));
        }
        Ok(StateCall { group_id, op, partitions })
    }

    /// `count | per partition: code, value, aux, message` ([`answer_parts`]).
    fn put_answer(answers: &Vec<PartAnswer>, b: &mut BytesMut) {
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
            put_name(b, &msg[..end]);
        }
    }

    fn take_answer(r: &mut Reader<'_>) -> Result<Vec<PartAnswer>, WireError> {
        let n = r.count(ANSWER_FIXED_BYTES)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let code = r.u8()?;
            let value = i64::from_be_bytes(r.array()?);
            let aux = i32::from_be_bytes(r.array()?);
            let msg = r.name()?;
            out.push(answer_of(code, value, aux, msg)?);
        }
        Ok(out)
    }

    async fn serve(self, shard: Rc<Shard>, _from: i32) -> Vec<PartAnswer> {
        serve(&shard, self).await
    }
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

fn answer_of(code: u8, value: i64, aux: i32, msg: String) -> Result<PartAnswer, WireError> {
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
        c => return Err(WireError::Code(c)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::call::{decode_reply, decode_request, encode_reply, encode_request};
    use crate::peer::leaders::Dest;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn calls_round_trip_and_damage_is_refused() {
        for op in [StateOp::Read, StateOp::Reset(42), StateOp::Forget] {
            let call = StateCall { group_id: "g-é".into(), op, partitions: vec![tp("a", 0), tp("b", 7)] };
            let b = encode_request(9, 1, &call);
            assert_eq!(decode_request(&b), Ok((9, 1, call.clone())));
            for cut in 0..b.len() {
                assert!(decode_request::<StateCall>(&b[..cut]).is_err(), "a call cut at {cut} bytes must not decode");
            }
            let mut long = b.to_vec();
            long.push(0);
            assert_eq!(decode_request::<StateCall>(&long), Err(WireError::Trailing(1)));
        }
        let mut bad =
            encode_request(1, 0, &StateCall { group_id: "g".into(), op: StateOp::Read, partitions: vec![] }).to_vec();
        bad[11] = 9;
        assert_eq!(decode_request::<StateCall>(&bad), Err(WireError::Code(9)));
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
        let b = encode_reply::<StateCall>(3, &answers);
        assert_eq!(decode_reply::<StateCall>(&b), Ok((3, answers)));
        for cut in 0..b.len() {
            assert!(decode_reply::<StateCall>(&b[..cut]).is_err(), "an answer cut at {cut} bytes must not decode");
        }
        let mut huge = encode_reply::<StateCall>(3, &vec![]).to_vec();
        huge[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_reply::<StateCall>(&huge), Err(WireError::Count(u32::MAX)));
        // Errors a share-state operation never gives travel as storage errors with their text.
        let other = encode_reply::<StateCall>(4, &vec![Err(PartitionError::InvalidRequest("x".into()))]);
        assert_eq!(
            decode_reply::<StateCall>(&other),
            Ok((4, vec![Err(PartitionError::Storage("invalid request: x".into()))]))
        );
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
            ("gone", _) => Leader::Gone,
            (_, 0 | 3) => Leader::At(Dest::Here),
            (_, 1 | 4) => Leader::At(Dest::Broker(2)),
            _ => Leader::NotKnown,
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
