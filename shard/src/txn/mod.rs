//! Transactions (KIP-98, and KIP-890's transaction version 2 for the clients that use it): routing to the transaction coordinator shard,
//! the operations and their answers, and each partition's transaction index.
//!
//! Contract: every transactional id belongs to the shard that owns its partition of the
//! internal `__transaction_state` topic (`abs(java hashCode(id)) % partitions`, as Kafka places
//! them, and as groups are placed on `__consumer_offsets`); every operation on it runs there,
//! in [`coordinator::TxnCoordinator`]. Its state changes are appended to that partition and
//! durable before they are answered or acted on, and replayed when the shard opens the
//! partition. Markers (COMMIT/ABORT control batches) go to the partitions' owners through the
//! produce path; each partition's open transactions, last stable offset and aborted
//! transactions are kept by its owner ([`partition::PartitionTxns`]).

pub mod busy;
pub mod coordinator;
pub mod markers;
pub mod partition;
pub mod producers;
pub mod state;
pub mod store;
pub mod verify;
pub mod view;

use crate::groups::OffsetToCommit;
use crate::msg::{operations, Call, Operation, ShardMsg};
use crate::shard::Shard;
use futures::channel::oneshot;
use sluice_core::{PartitionId, ShardId};
use std::rc::Rc;
use thiserror::Error;

/// Name of the internal topic holding the transaction log.
pub const TXN_TOPIC: &str = "__transaction_state";

/// Transaction-level failures, each a Kafka error code (mapped in `net::errors`).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TxnError {
    #[error("the transaction coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("the transaction coordinator is loading its state")]
    CoordinatorLoadInProgress,
    #[error("this broker is not the transactional id's coordinator")]
    NotCoordinator,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("transaction timeout {0} ms is not positive or above transaction_max_timeout_ms")]
    InvalidTransactionTimeout(i32),
    #[error("there is a newer producer with the same transactional id")]
    ProducerFenced,
    #[error("the producer id does not match the transactional id's")]
    InvalidProducerIdMapping,
    #[error("the transaction's previous end is still being completed")]
    ConcurrentTransactions,
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    #[error("transactional id not found")]
    TransactionalIdNotFound,
    #[error("storage error: {0}")]
    Storage(String),
    /// Refused by the authorizer before reaching the coordinator (no WRITE on the id).
    #[error("Transactional Id authorization failed.")]
    TransactionalIdAuthorizationFailed,
    /// Refused by the authorizer before reaching the coordinator (no READ on the group).
    #[error("Group authorization failed.")]
    GroupAuthorizationFailed,
}

/// InitProducerId with a transactional id: the producer id and epoch to use.
#[derive(Debug, Clone)]
pub struct InitRequest {
    pub transactional_id: String,
    pub timeout_ms: i32,
    /// KIP-360: the id and epoch the producer had (None: a new producer instance).
    pub given: Option<(i64, i16)>,
}

/// AddPartitionsToTxn (and AddOffsetsToTxn with `group` set and the group's
/// `__consumer_offsets` partition in `partitions`).
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub partitions: Vec<(String, i32)>,
    pub group: Option<String>,
    /// From a client of transaction version 2 (KIP-890 part 2: AddPartitionsToTxn v5 from a
    /// partition leader for Produce v12, TxnOffsetCommit v5): its EndTxn will bump the epoch.
    pub tv2: bool,
}

/// AddPartitionsToTxn v4 with `verify_only` (KIP-890 part 1): which of the partitions are in
/// the producer's open transaction. Changes nothing.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub partitions: Vec<(String, i32)>,
}

/// EndTxn; answered with the producer id and epoch the producer goes on with (the same ones
/// in transaction version 1; from EndTxn v5, `tv2`, the epoch bumped, or a new producer id
/// when the epoch is exhausted).
#[derive(Debug, Clone)]
pub struct EndRequest {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub tv2: bool,
}

/// DescribeTransactions: one answer per id.
#[derive(Debug, Clone)]
pub struct DescribeRequest {
    pub ids: Vec<String>,
}

/// One described transaction.
#[derive(Debug, Clone)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub result: Result<state::TxnMeta, TxnError>,
}

/// ListTransactions (filters empty: everything).
#[derive(Debug, Clone)]
pub struct ListRequest {
    pub states: Vec<String>,
    pub producer_ids: Vec<i64>,
    /// Only transactions running longer than this (-1: any).
    pub duration_filter_ms: i64,
}

/// One listed transaction: (transactional id, producer id, state name).
pub type TxnListing = (String, i64, &'static str);

/// TxnOffsetCommit, on the group's coordinator shard: offsets staged for the producer's
/// transaction. One result per offset.
#[derive(Debug, Clone)]
pub struct StageOffsetsRequest {
    pub group_id: String,
    pub producer_id: i64,
    pub offsets: Vec<OffsetToCommit>,
    /// The consumer's group metadata (TxnOffsetCommit v3+; generation -1 and no member
    /// before): checked against the group before anything is staged (KIP-447 fencing).
    pub member: crate::groups::MemberRef,
}

/// The end of a transaction, on the group's coordinator shard: its staged offsets are
/// committed (durably, then visible) or dropped.
#[derive(Debug, Clone)]
pub struct CompleteOffsetsRequest {
    pub group_id: String,
    pub producer_id: i64,
    pub commit: bool,
}

/// OffsetFetch with `require_stable` (v7+), on the group's coordinator shard: the partitions
/// of the group with offsets staged by a transaction not yet ended.
#[derive(Debug, Clone)]
pub struct PendingOffsetsRequest {
    pub group_id: String,
}

/// Results of staged offsets, one per offset.
pub type StageResult = Result<Vec<Result<(), crate::groups::GroupError>>, TxnError>;

/// An operation on one transactional id (or every one of a shard), or on a group's staged
/// transactional offsets, with its typed reply.
#[derive(Debug)]
pub enum TxnCall {
    Init(Call<InitRequest, Result<(i64, i16), TxnError>>),
    Add(Call<AddRequest, Result<(), TxnError>>),
    Verify(Call<VerifyRequest, Result<Vec<bool>, TxnError>>),
    End(Call<EndRequest, Result<(i64, i16), TxnError>>),
    Describe(Call<DescribeRequest, Vec<TxnDescription>>),
    List(Call<ListRequest, Vec<TxnListing>>),
    StageOffsets(Call<StageOffsetsRequest, StageResult>),
    CompleteOffsets(Call<CompleteOffsetsRequest, Result<(), TxnError>>),
    PendingOffsets(Call<PendingOffsetsRequest, Result<Vec<(String, i32)>, TxnError>>),
}

operations!(TxnCall {
    InitRequest => Init: Result<(i64, i16), TxnError>,
    AddRequest => Add: Result<(), TxnError>,
    VerifyRequest => Verify: Result<Vec<bool>, TxnError>,
    EndRequest => End: Result<(i64, i16), TxnError>,
    DescribeRequest => Describe: Vec<TxnDescription>,
    ListRequest => List: Vec<TxnListing>,
    StageOffsetsRequest => StageOffsets: StageResult,
    CompleteOffsetsRequest => CompleteOffsets: Result<(), TxnError>,
    PendingOffsetsRequest => PendingOffsets: Result<Vec<(String, i32)>, TxnError>,
});

/// The `__transaction_state` partition of a transactional id.
pub fn txn_partition(transactional_id: &str, partitions: usize) -> i32 {
    crate::groups::offsets_partition(transactional_id, partitions)
}

/// The shard coordinating a transactional id, if the transaction topic exists.
pub fn coordinator_shard(shard: &Shard, transactional_id: &str) -> Option<ShardId> {
    let meta = shard.metadata();
    let t = meta.topics.get(TXN_TOPIC)?;
    let p = txn_partition(transactional_id, t.shards.len());
    meta.owner(TXN_TOPIC, PartitionId(p))
}

/// Runs an operation on the transactional id's coordinator shard.
pub async fn call<O: Operation<TxnCall>>(
    shard: &Rc<Shard>,
    transactional_id: &str,
    op: O,
) -> Result<O::Reply, TxnError> {
    // No replica of the id's partition here: another broker coordinates it (Kafka's
    // NOT_COORDINATOR); before the topic exists, COORDINATOR_NOT_AVAILABLE.
    let exists = shard.metadata().topics.contains_key(TXN_TOPIC);
    let missing = if exists { TxnError::NotCoordinator } else { TxnError::CoordinatorNotAvailable };
    let owner = coordinator_shard(shard, transactional_id).ok_or(missing)?;
    on_shard(shard, owner, op).await
}

/// [`call`] for an operation whose reply is itself a result: one error either way.
pub async fn ask<T, O>(shard: &Rc<Shard>, transactional_id: &str, op: O) -> Result<T, TxnError>
where
    O: Operation<TxnCall, Reply = Result<T, TxnError>>,
{
    call(shard, transactional_id, op).await?
}

/// Runs an operation on a group's staged transactional offsets, on the group's coordinator.
pub async fn on_group<T, O>(shard: &Rc<Shard>, group_id: &str, op: O) -> Result<T, TxnError>
where
    O: Operation<TxnCall, Reply = Result<T, TxnError>>,
{
    let owner =
        crate::groups::coordinator_shard(shard, group_id).ok_or_else(|| match crate::groups::not_hosted(shard) {
            crate::groups::GroupError::NotCoordinator => TxnError::NotCoordinator,
            _ => TxnError::CoordinatorNotAvailable,
        })?;
    on_shard(shard, owner, op).await?
}

async fn on_shard<O: Operation<TxnCall>>(shard: &Rc<Shard>, owner: ShardId, op: O) -> Result<O::Reply, TxnError> {
    let (reply, rx) = oneshot::channel();
    let call = op.into_call(reply);
    if owner == shard.id {
        // Boxed: a transaction's end completes its groups' offsets through this same path.
        futures::FutureExt::boxed_local(shard.txns.handle(shard, call)).await;
    } else {
        shard.send(owner, ShardMsg::Txn(call)).await.map_err(|_| TxnError::CoordinatorNotAvailable)?;
    }
    rx.await.map_err(|_| TxnError::CoordinatorNotAvailable)
}

/// Every shard's transactions matching the filters.
pub async fn list_all(shard: &Rc<Shard>, req: ListRequest) -> Vec<TxnListing> {
    let mut all = Vec::new();
    for s in 0..shard.n_shards {
        let id = ShardId(u16::try_from(s).expect("shard counts fit u16"));
        if let Ok(l) = on_shard(shard, id, req.clone()).await {
            all.extend(l);
        }
    }
    all.sort();
    all
}
