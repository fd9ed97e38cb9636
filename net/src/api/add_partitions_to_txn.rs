//! AddPartitionsToTxn (key 24), versions 0–3: the client's partitions join its open
//! transaction (the transaction starts with the first).
//!
//! Contract: answered after the coordinator's new state is durable in `__transaction_state`.
//! Every partition gets the same code: success, or the transaction-level error (PRODUCER_FENCED
//! from v2, INVALID_PRODUCER_EPOCH before; CONCURRENT_TRANSACTIONS while the previous end is
//! being completed; INVALID_PRODUCER_ID_MAPPING). Unknown partitions get
//! UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED, as Kafka answers; so do
//! topics without WRITE (and internal topics: TOPIC_AUTHORIZATION_FAILED), and every partition
//! is TRANSACTIONAL_ID_AUTHORIZATION_FAILED without WRITE on the transactional id. Version 4
//! (batched, broker to broker, verify-only) is not offered.

use super::per_partition::answer_each;
use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::txn_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};
use kafka_protocol::ResponseError;
use sluice_core::PartitionId;
use sluice_shard::admin::is_internal;
use sluice_shard::metadata::acl::op;
use sluice_shard::txn::{self, AddRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::AddPartitionsToTxn, name: "AddPartitionsToTxn", min_version: 0, max_version: 3, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: AddPartitionsToTxnRequest = decode_body(&req)?;
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
                } else if meta.owner(t, PartitionId(*p)).is_none() {
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
