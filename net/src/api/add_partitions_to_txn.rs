//! AddPartitionsToTxn (key 24), versions 0–5: the client's partitions join its open
//! transaction (the transaction starts with the first); v4+ is the brokers' batched form
//! (KIP-890 part 1): several transactions per request, each either added or, with
//! `verify_only`, checked (is each partition in the open transaction? nothing changes).
//!
//! Contract: answered after the coordinator's new state is durable in `__transaction_state`.
//! Every partition gets the same code: success, or the transaction-level error (PRODUCER_FENCED
//! from v2, INVALID_PRODUCER_EPOCH before; CONCURRENT_TRANSACTIONS while the previous end is
//! being completed or another add of the id is being written — after the coordinator queued
//! the add behind it for up to `TXN_ADD_WAIT_MS`; INVALID_PRODUCER_ID_MAPPING). Unknown partitions get
//! UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED, as Kafka answers; so do
//! topics without WRITE (and internal topics: TOPIC_AUTHORIZATION_FAILED), and every partition
//! is TRANSACTIONAL_ID_AUTHORIZATION_FAILED without WRITE on the transactional id. v4+ (batched,
//! broker to broker) needs CLUSTER_ACTION on the cluster when an authorizer is configured
//! (top-level CLUSTER_AUTHORIZATION_FAILED, as Kafka); a verified partition not in the
//! transaction gets TRANSACTION_ABORTABLE from v5, INVALID_TXN_STATE in v4; transaction-level
//! errors go to every partition of that transaction. A batched add (not `verify_only`) comes
//! from a partition leader for a client of transaction version 2 (Produce v12): the
//! transaction is then one of version 2 (its EndTxn bumps the epoch). sluice's own leaders ask
//! over the peer links (`sluice_shard::txn::verify`); this path serves other callers.

use super::per_partition::answer_each;
use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::txn_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};
use kafka_protocol::ResponseError;
use sluice_core::PartitionId;
use sluice_shard::admin::is_internal;
use sluice_shard::metadata::acl::op;
use sluice_shard::txn::{self, AddRequest, VerifyRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::AddPartitionsToTxn, name: "AddPartitionsToTxn", min_version: 0, max_version: 5, handle };

/// The first version of the brokers' batched form.
const FIRST_BATCHED_VERSION: i16 = 4;
/// The first version whose answer may carry TRANSACTION_ABORTABLE.
const FIRST_ABORTABLE_VERSION: i16 = 5;

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: AddPartitionsToTxnRequest = decode_body(&req)?;
        if req.version >= FIRST_BATCHED_VERSION {
            let allowed = crate::authz::Authz::new(&ctx, &req).cluster(op::CLUSTER_ACTION);
            let reply = async move {
                let resp = if allowed {
                    let mut results = Vec::with_capacity(body.transactions.len());
                    for t in body.transactions {
                        results.push(batched(&ctx, t, req.version).await);
                    }
                    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
                } else {
                    AddPartitionsToTxnResponse::default()
                        .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                };
                respond(&req, &resp).map(|f| Some(f.into()))
            };
            return Ok(reply.boxed_local() as Reply);
        }
        let transactional_id = body.v3_and_below_transactional_id.0.to_string();
        let partitions: Vec<(String, i32)> = body
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
            .collect();
        let reply = async move {
            let meta = ctx.shard.metadata();
            let authz = crate::authz::Authz::new(&ctx, &req);
            // As Kafka: WRITE on the transactional id, then WRITE on each topic (never on an
            // internal one), then the partition must exist.
            let refusal = |(t, p): &(String, i32)| {
                if is_internal(t) || !authz.topic(op::WRITE, t) {
                    Some(ResponseError::TopicAuthorizationFailed.code())
                } else if meta.partition(t, PartitionId(*p), -1).is_none() {
                    Some(ResponseError::UnknownTopicOrPartition.code())
                } else {
                    None
                }
            };
            let refused: Vec<Option<i16>> = partitions.iter().map(refusal).collect();
            let codes: Vec<i16> = if !authz.transactional_id(op::WRITE, &transactional_id) {
                vec![ResponseError::TransactionalIdAuthorizationFailed.code(); partitions.len()]
            } else if refused.iter().any(|r| r.is_some()) {
                let skipped = ResponseError::OperationNotAttempted.code();
                refused.iter().map(|r| r.unwrap_or(skipped)).collect()
            } else {
                let request = AddRequest {
                    transactional_id: transactional_id.clone(),
                    producer_id: body.v3_and_below_producer_id.0,
                    epoch: body.v3_and_below_producer_epoch,
                    partitions: partitions.clone(),
                    group: None,
                    tv2: false,
                };
                let code = match txn::ask(&ctx.shard, &transactional_id, request).await {
                    Ok(()) => 0,
                    Err(e) => txn_code(&e, req.version >= 2),
                };
                vec![code; partitions.len()]
            };
            let partitions = |t: &AddPartitionsToTxnTopic| t.partitions.clone();
            let results = answer_each(body.v3_and_below_topics, codes, partitions, |t, parts| {
                let parts = parts.into_iter().map(|(index, code)| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(index)
                        .with_partition_error_code(code)
                });
                AddPartitionsToTxnTopicResult::default().with_name(t.name).with_results_by_partition(parts.collect())
            });
            let resp = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
            respond(&req, &resp).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

/// One transaction of a batched (v4+) request: its partitions added, or verified.
async fn batched(ctx: &Ctx, t: AddPartitionsToTxnTransaction, version: i16) -> AddPartitionsToTxnResult {
    let id = t.transactional_id.0.to_string();
    let partitions: Vec<(String, i32)> =
        t.topics.iter().flat_map(|tp| tp.partitions.iter().map(move |p| (tp.name.0.to_string(), *p))).collect();
    let meta = ctx.shard.metadata();
    let unknown: Vec<bool> = partitions.iter().map(|(t, p)| meta.partition(t, PartitionId(*p), -1).is_none()).collect();
    let codes: Vec<i16> = if unknown.iter().any(|u| *u) {
        let u = ResponseError::UnknownTopicOrPartition.code();
        let skipped = ResponseError::OperationNotAttempted.code();
        unknown.iter().map(|bad| if *bad { u } else { skipped }).collect()
    } else if t.verify_only {
        let request = VerifyRequest {
            transactional_id: id.clone(),
            producer_id: t.producer_id.0,
            epoch: t.producer_epoch,
            partitions: partitions.clone(),
        };
        let not_in = if version >= FIRST_ABORTABLE_VERSION {
            ResponseError::TransactionAbortable.code()
        } else {
            ResponseError::InvalidTxnState.code()
        };
        match txn::ask(&ctx.shard, &id, request).await {
            Ok(member) => member.into_iter().map(|m| if m { 0 } else { not_in }).collect(),
            Err(e) => vec![txn_code(&e, true); partitions.len()],
        }
    } else {
        let request = AddRequest {
            transactional_id: id.clone(),
            producer_id: t.producer_id.0,
            epoch: t.producer_epoch,
            partitions: partitions.clone(),
            group: None,
            // A broker adds partitions only for a client of transaction version 2 (Produce v12).
            tv2: true,
        };
        let code = match txn::ask(&ctx.shard, &id, request).await {
            Ok(()) => 0,
            Err(e) => txn_code(&e, true),
        };
        vec![code; partitions.len()]
    };
    let of = |tp: &AddPartitionsToTxnTopic| tp.partitions.clone();
    let topics = answer_each(t.topics, codes, of, |tp, parts| {
        let parts = parts.into_iter().map(|(index, code)| {
            AddPartitionsToTxnPartitionResult::default().with_partition_index(index).with_partition_error_code(code)
        });
        AddPartitionsToTxnTopicResult::default().with_name(tp.name).with_results_by_partition(parts.collect())
    });
    AddPartitionsToTxnResult::default().with_transactional_id(t.transactional_id).with_topic_results(topics)
}
