//! KIP-890: a transactional batch is appended only to a partition that is in its producer's
//! open transaction (Kafka's `ReplicaManager.appendRecords` with
//! `transaction.partition.verification.enable`, its default): part 1 verifies it, part 2
//! (transaction version 2, Produce v12+) adds it.
//!
//! Contract: [`check`] runs before the produce's appends are issued (the connection's next
//! request waits, so order is kept). A partition whose owner already holds an open transaction
//! of the producer at the batch's epoch needs nothing more (its first batch was verified or
//! added: Kafka's `hasOngoingTransaction`; the owners' open-transaction state is the cache, one
//! entry per open transaction, dropped by the marker); the others are verified with the
//! transactional id's coordinator (AddPartitionsToTxn's verify-only path), or added to the
//! transaction from Produce v12 (Kafka's `addPartition` operation: the client of transaction
//! version 2 sends no AddPartitionsToTxn), one call per request, wherever the coordinator is
//! ([`coordinate`]): its shard here, or the broker leading the id's `__transaction_state`
//! partition, asked over the peer links (a `peer::call`: one `TxnVerify` frame, answered by one
//! `TxnVerifyReply` to the asking shard within `TXN_VERIFY_REQUEST_TIMEOUT_MS`; Kafka's leader
//! sends AddPartitionsToTxn v4+ to the coordinator's client listener). The refusals are Kafka
//! 4.x's for the produce version (`AddPartitionsToTxnManager`, `ReplicaManager`): not in the
//! transaction → INVALID_TXN_STATE up to Produce v10, TRANSACTION_ABORTABLE from v11; a fenced
//! producer → INVALID_PRODUCER_EPOCH; a coordinator that cannot answer, is not known, moved or
//! is unreachable (and CONCURRENT_TRANSACTIONS up to v11) → NOT_ENOUGH_REPLICAS, which every
//! client retries.

use super::{AddRequest, TxnError, VerifyRequest, TXN_TOPIC};
use crate::error::PartitionError;
use crate::msg::ShardMsg;
use crate::peer::call::{call, CallError, PeerCall};
use crate::peer::leaders::{leader_of, Dest, Leader};
use crate::peer::wire::{put_name, Reader, WireError};
use crate::peer::CallKind;
use crate::route::{self, group_by_owner, Tagged};
use crate::shard::Shard;
use bytes::{BufMut, BytesMut};
use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt;
use sluice_core::limits::TXN_VERIFY_REQUEST_TIMEOUT_MS;
use sluice_core::TopicPartition;
use std::rc::Rc;

/// The first Produce version whose client understands TRANSACTION_ABORTABLE (Kafka's
/// `GENERIC_ERROR_SUPPORTED`).
const FIRST_ABORTABLE_PRODUCE_VERSION: i16 = 11;
/// The first Produce version of transaction version 2 (Kafka's `ADD_PARTITION`): its
/// partitions are added to the transaction, and it gets CONCURRENT_TRANSACTIONS as it is.
const FIRST_TV2_PRODUCE_VERSION: i16 = 12;

/// One partition of a produce whose batch is transactional.
#[derive(Debug, Clone)]
pub struct VerifyItem {
    pub index: usize,
    pub tp: TopicPartition,
    pub producer_id: i64,
    pub epoch: i16,
}

/// On the owner: whether each partition has the producer's open transaction at its epoch.
pub fn open_local(shard: &Shard, items: Vec<VerifyItem>) -> Vec<Tagged<bool>> {
    items
        .into_iter()
        .map(|i| match shard.log(&i.tp) {
            None => (i.index, Err(PartitionError::UnknownTopicOrPartition)),
            Some(_) => (i.index, Ok(shard.txn_partitions.has_open(&i.tp, i.producer_id, i.epoch))),
        })
        .collect()
}

/// Asks the owners (local ones directly, one message per remote owner).
async fn open_on_owners(shard: &Rc<Shard>, items: Vec<VerifyItem>) -> Vec<Tagged<bool>> {
    let grouped = group_by_owner(shard, items, |i| &i.tp);
    let mut out = route::unknown(grouped.unknown, |i| i.index);
    let mut parts: Vec<LocalBoxFuture<'static, Vec<Tagged<bool>>>> = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            let local = open_local(shard, items);
            parts.push(async move { local }.boxed_local());
        } else {
            let indexes = items.iter().map(|i| i.index).collect();
            parts.push(route::ask(shard, owner, indexes, |reply| ShardMsg::TxnOpen { items, reply }).await);
        }
    }
    for part in join_all(parts).await {
        out.extend(part);
    }
    out
}

/// The partitions refused (by index), for a produce of `version` with `transactional_id`.
/// Partitions whose owner is unknown are left to the append, which answers for them.
pub async fn check(
    shard: &Rc<Shard>,
    transactional_id: &str,
    items: Vec<VerifyItem>,
    version: i16,
) -> Vec<(usize, PartitionError)> {
    if items.is_empty() {
        return Vec::new();
    }
    let open = open_on_owners(shard, items.clone()).await;
    let unverified: std::collections::HashSet<usize> =
        open.into_iter().filter(|(_, r)| matches!(r, Ok(false))).map(|(index, _)| index).collect();
    let needed: Vec<&VerifyItem> = items.iter().filter(|i| unverified.contains(&i.index)).collect();
    let mut refused = Vec::new();
    // One call per (producer id, epoch): a request's batches normally share them.
    let mut producers: Vec<(i64, i16)> = needed.iter().map(|i| (i.producer_id, i.epoch)).collect();
    producers.sort_unstable();
    producers.dedup();
    for (producer_id, epoch) in producers {
        let of: Vec<&&VerifyItem> =
            needed.iter().filter(|i| i.producer_id == producer_id && i.epoch == epoch).collect();
        let request = CoordinatorCall {
            transactional_id: transactional_id.to_string(),
            producer_id,
            epoch,
            partitions: of.iter().map(|i| (i.tp.topic.to_string(), i.tp.partition.0)).collect(),
            add: version >= FIRST_TV2_PRODUCE_VERSION,
            group: None,
        };
        match coordinate(shard, request).await {
            Ok(member) => {
                for (item, ok) in of.iter().zip(member) {
                    if !ok {
                        tracing::debug!(transactional_id, partition = %item.tp, producer_id, "transactional batch for a partition not in the transaction refused");
                        refused.push((item.index, not_in_transaction(version)));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(transactional_id, error = %e, "transactional batch not verified");
                let err = refusal(&e, version);
                refused.extend(of.iter().map(|i| (i.index, err.clone())));
            }
        }
    }
    refused
}

fn not_in_transaction(version: i16) -> PartitionError {
    if version >= FIRST_ABORTABLE_PRODUCE_VERSION {
        PartitionError::TransactionAbortable
    } else {
        PartitionError::NotInTransaction
    }
}

/// A coordinator's refusal as the produce answers it (Kafka's `AddPartitionsToTxnManager` and
/// `ReplicaManager` translations).
fn refusal(e: &TxnError, version: i16) -> PartitionError {
    match e {
        TxnError::ProducerFenced => {
            PartitionError::InvalidProducerEpoch("there is a newer producer with the same transactional id".into())
        }
        TxnError::InvalidProducerIdMapping => PartitionError::InvalidProducerIdMapping,
        TxnError::InvalidTxnState(_) => PartitionError::NotInTransaction,
        TxnError::InvalidRequest(m) => PartitionError::InvalidRequest(m.clone()),
        TxnError::ConcurrentTransactions if version >= FIRST_TV2_PRODUCE_VERSION => {
            PartitionError::ConcurrentTransactions
        }
        TxnError::ConcurrentTransactions => PartitionError::TxnNotVerified("CONCURRENT_TRANSACTIONS"),
        TxnError::CoordinatorLoadInProgress => PartitionError::TxnNotVerified("COORDINATOR_LOAD_IN_PROGRESS"),
        TxnError::NotCoordinator => PartitionError::TxnNotVerified("NOT_COORDINATOR"),
        // The two authorization refusals are the handlers' own, never a verification's answer.
        TxnError::CoordinatorNotAvailable
        | TxnError::TransactionalIdAuthorizationFailed
        | TxnError::GroupAuthorizationFailed
        | TxnError::Storage(_)
        | TxnError::InvalidTransactionTimeout(_)
        | TxnError::TransactionalIdNotFound => PartitionError::TxnNotVerified("COORDINATOR_NOT_AVAILABLE"),
    }
}

/// A verification (or, for transaction version 2, an addition) of partitions of a producer's
/// transaction, as the partition leader asks the coordinator (Kafka's AddPartitionsToTxn v4+
/// from a broker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorCall {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub partitions: Vec<(String, i32)>,
    /// Add the partitions (Produce v12, TxnOffsetCommit v5) rather than only check them.
    pub add: bool,
    /// With `add`: the group whose offsets the transaction commits (its `__consumer_offsets`
    /// partition is in `partitions`).
    pub group: Option<String>,
}

/// Runs the call on the transactional id's coordinator wherever it is (module docs): whether
/// each partition is in the transaction (an addition answers all true).
pub async fn coordinate(shard: &Rc<Shard>, call: CoordinatorCall) -> Result<Vec<bool>, TxnError> {
    match run_here(shard, call.clone()).await {
        Err(TxnError::NotCoordinator) => {}
        other => return other,
    }
    let partitions = shard.metadata().topics.get(TXN_TOPIC).map_or(0, |t| t.shards.len());
    if partitions == 0 {
        return Err(TxnError::CoordinatorNotAvailable);
    }
    let tp = TopicPartition::new(TXN_TOPIC, super::txn_partition(&call.transactional_id, partitions));
    match leader_of(shard, &tp) {
        Leader::At(Dest::Broker(node)) => ask_remote(shard, node, &call).await,
        Leader::At(Dest::Here) | Leader::NotKnown | Leader::Gone => Err(TxnError::NotCoordinator),
    }
}

/// The call on this broker's coordinator shard of the id (never forwarded further).
async fn run_here(shard: &Rc<Shard>, call: CoordinatorCall) -> Result<Vec<bool>, TxnError> {
    let id = call.transactional_id.clone();
    if call.add {
        let n = call.partitions.len();
        let request = AddRequest {
            transactional_id: call.transactional_id,
            producer_id: call.producer_id,
            epoch: call.epoch,
            partitions: call.partitions,
            group: call.group,
            tv2: true,
        };
        super::ask(shard, &id, request).await.map(|()| vec![true; n])
    } else {
        let request = VerifyRequest {
            transactional_id: call.transactional_id,
            producer_id: call.producer_id,
            epoch: call.epoch,
            partitions: call.partitions,
        };
        super::ask(shard, &id, request).await
    }
}

/// Sends the call to broker `node` and waits for its answer (NOT_COORDINATOR-like
/// COORDINATOR_NOT_AVAILABLE when it cannot be sent or is not answered in time).
async fn ask_remote(shard: &Rc<Shard>, node: i32, c: &CoordinatorCall) -> Result<Vec<bool>, TxnError> {
    let reply_shard = u16::try_from(shard.id.index()).expect("shard ids fit u16");
    let answer = match call(node, reply_shard, c).await {
        Ok(answer) => answer,
        Err(CallError::NoLink) => return Err(TxnError::CoordinatorNotAvailable),
        Err(e) => {
            tracing::debug!(node, error = %e, "transaction verification call lost");
            Err(TxnError::CoordinatorNotAvailable)
        }
    };
    tracing::debug!(node, transactional_id = %c.transactional_id, add = c.add, ok = answer.is_ok(), "transaction coordinator on another broker asked");
    match answer {
        Ok(v) if v.len() != c.partitions.len() => Err(TxnError::CoordinatorNotAvailable),
        other => other,
    }
}

// --- wire format (`peer::wire`'s conventions: big-endian, version byte, checked counts) ---

fn error_code(e: &TxnError) -> u8 {
    match e {
        TxnError::NotCoordinator => 1,
        TxnError::CoordinatorLoadInProgress => 3,
        TxnError::ProducerFenced => 4,
        TxnError::InvalidProducerIdMapping => 5,
        TxnError::ConcurrentTransactions => 6,
        TxnError::InvalidTxnState(_) => 7,
        TxnError::InvalidRequest(_) => 8,
        TxnError::CoordinatorNotAvailable
        | TxnError::InvalidTransactionTimeout(_)
        | TxnError::TransactionalIdNotFound
        | TxnError::Storage(_)
        | TxnError::TransactionalIdAuthorizationFailed
        | TxnError::GroupAuthorizationFailed => 2,
    }
}

fn error_of(code: u8) -> Option<TxnError> {
    Some(match code {
        1 => TxnError::NotCoordinator,
        2 => TxnError::CoordinatorNotAvailable,
        3 => TxnError::CoordinatorLoadInProgress,
        4 => TxnError::ProducerFenced,
        5 => TxnError::InvalidProducerIdMapping,
        6 => TxnError::ConcurrentTransactions,
        7 => TxnError::InvalidTxnState("refused by the coordinator".into()),
        8 => TxnError::InvalidRequest("refused by the coordinator".into()),
        _ => return None,
    })
}

impl PeerCall for CoordinatorCall {
    type Answer = Result<Vec<bool>, TxnError>;
    const KIND: CallKind = CallKind::TxnVerify;
    const TIMEOUT_MS: u64 = TXN_VERIFY_REQUEST_TIMEOUT_MS;

    /// `add | transactional id | producer id | epoch | group (0/1, name) | count | (topic,
    /// partition)…`.
    fn put(&self, b: &mut BytesMut) {
        b.put_u8(u8::from(self.add));
        put_name(b, &self.transactional_id);
        b.put_i64(self.producer_id);
        b.put_i16(self.epoch);
        match &self.group {
            Some(g) => {
                b.put_u8(1);
                put_name(b, g);
            }
            None => b.put_u8(0),
        }
        b.put_u32(u32::try_from(self.partitions.len()).expect("a request's partitions fit u32"));
        for (t, p) in &self.partitions {
            put_name(b, t);
            b.put_i32(*p);
        }
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let add = r.u8()? != 0;
        let transactional_id = r.name()?;
        let producer_id = i64::from_be_bytes(r.array()?);
        let epoch = i16::from_be_bytes(r.array()?);
        let group = if r.u8()? != 0 { Some(r.name()?) } else { None };
        let n = r.count(2 + 4)?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let t = r.name()?;
            partitions.push((t, i32::from_be_bytes(r.array()?)));
        }
        Ok(CoordinatorCall { transactional_id, producer_id, epoch, partitions, add, group })
    }

    /// `code (0: answered) | count | one byte per partition (1: in the transaction)`.
    fn put_answer(answer: &Self::Answer, b: &mut BytesMut) {
        match answer {
            Ok(v) => {
                b.put_u8(0);
                b.put_u32(u32::try_from(v.len()).expect("one per partition"));
                b.extend(v.iter().map(|m| u8::from(*m)));
            }
            Err(e) => {
                b.put_u8(error_code(e));
                b.put_u32(0);
            }
        }
    }

    fn take_answer(r: &mut Reader<'_>) -> Result<Self::Answer, WireError> {
        let code = r.u8()?;
        let n = r.count(1)?;
        let member: Vec<bool> = r.take(n)?.iter().map(|m| *m != 0).collect();
        Ok(match code {
            0 => Ok(member),
            c => Err(error_of(c).ok_or(WireError::Code(c))?),
        })
    }

    /// Answered by this broker's coordinator of the id (never forwarded further).
    async fn serve(self, shard: Rc<Shard>, _from: i32) -> Self::Answer {
        run_here(&shard, self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::call::{decode_reply, decode_request, encode_reply, encode_request};

    #[test]
    fn refusals_follow_the_produce_version_as_kafka() {
        assert_eq!(not_in_transaction(10), PartitionError::NotInTransaction);
        assert_eq!(not_in_transaction(11), PartitionError::TransactionAbortable);
        let c = TxnError::ConcurrentTransactions;
        assert_eq!(refusal(&c, 11), PartitionError::TxnNotVerified("CONCURRENT_TRANSACTIONS"));
        assert_eq!(refusal(&c, 12), PartitionError::ConcurrentTransactions);
        assert!(matches!(refusal(&TxnError::ProducerFenced, 9), PartitionError::InvalidProducerEpoch(_)));
        assert_eq!(
            refusal(&TxnError::CoordinatorLoadInProgress, 12),
            PartitionError::TxnNotVerified("COORDINATOR_LOAD_IN_PROGRESS")
        );
        assert_eq!(refusal(&TxnError::NotCoordinator, 9), PartitionError::TxnNotVerified("NOT_COORDINATOR"));
    }

    #[test]
    fn calls_and_answers_between_brokers_round_trip_and_damage_is_refused() {
        let call = CoordinatorCall {
            transactional_id: "tx-é".into(),
            producer_id: 42,
            epoch: 7,
            partitions: vec![("t".into(), 3), ("__consumer_offsets".into(), 11)],
            add: true,
            group: Some("g".into()),
        };
        let b = encode_request(5, 1, &call);
        assert_eq!(decode_request(&b), Ok((5, 1, call.clone())));
        for cut in 0..b.len() {
            assert!(decode_request::<CoordinatorCall>(&b[..cut]).is_err(), "a call cut at {cut} bytes must not decode");
        }
        let plain = CoordinatorCall { add: false, group: None, ..call };
        assert_eq!(decode_request(&encode_request(6, 0, &plain)), Ok((6, 0, plain)));
        for answer in [
            Ok(vec![true, false]),
            Err(TxnError::ProducerFenced),
            Err(TxnError::NotCoordinator),
            Err(TxnError::ConcurrentTransactions),
            Err(TxnError::CoordinatorNotAvailable),
        ] {
            assert_eq!(decode_reply::<CoordinatorCall>(&encode_reply::<CoordinatorCall>(9, &answer)), Ok((9, answer)));
        }
        let mut bad = encode_reply::<CoordinatorCall>(9, &Err(TxnError::ProducerFenced)).to_vec();
        bad[9] = 200;
        assert_eq!(decode_reply::<CoordinatorCall>(&bad), Err(WireError::Code(200)));
    }
}
