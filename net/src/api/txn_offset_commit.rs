//! TxnOffsetCommit (key 28), versions 0–5: offsets a transaction commits for a group, staged
//! by the group's coordinator until the transaction ends (made durable and visible at its
//! COMMIT, dropped at its ABORT).
//!
//! Contract: one code per partition; a partition that does not exist gets
//! UNKNOWN_TOPIC_OR_PARTITION. The consumer's group metadata (v3+: generation or member
//! epoch, member id, instance id) is checked on the group's coordinator shard before anything
//! is staged, as Kafka does (KIP-447: a zombie whose partitions a rebalance moved gets
//! ILLEGAL_GENERATION, STALE_MEMBER_EPOCH, UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID for every
//! partition, and its producer aborts; `groups::table::check_txn_commit`).
//! Version 5 is transaction version 2 (KIP-890 part 2): its client sends no AddOffsetsToTxn, so
//! the group (its `__consumer_offsets` partition) is first added to the producer's transaction
//! by the transactional id's coordinator, here or on its broker (`txn::verify::coordinate`, as
//! Kafka's group coordinator asks through `AddPartitionsToTxnManager`); a refusal (fenced,
//! concurrent, not available) is answered for every partition. Authorization as Kafka: every partition
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED without WRITE on the transactional id, else
//! GROUP_AUTHORIZATION_FAILED without READ on the group, else TOPIC_AUTHORIZATION_FAILED for the
//! partitions of a topic without READ.

use super::per_partition::{answer_each, offsets_to_commit};
use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::{group_result_code, txn_code};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;
use sluice_shard::groups::{offsets_partition, OFFSETS_TOPIC};
use sluice_shard::metadata::acl::op;
use sluice_shard::txn::verify::{coordinate, CoordinatorCall};
use sluice_shard::txn::{self, StageOffsetsRequest, TxnError};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::TxnOffsetCommit, name: "TxnOffsetCommit", min_version: 0, max_version: 5, handle };

/// The first version of transaction version 2: the group joins the transaction implicitly.
const FIRST_TV2_VERSION: i16 = 5;

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: TxnOffsetCommitRequest = decode_body(&req)?;
        let group_id = body.group_id.0.to_string();
        let offsets = offsets_to_commit(body.topics.iter().map(|t| (&t.name, &t.partitions[..])));
        let reply = async move {
            let authz = crate::authz::Authz::new(&ctx, &req);
            // As Kafka: WRITE on the transactional id, READ on the group (each refusal answered
            // for every partition), then READ on each topic.
            let whole = if !authz.transactional_id(op::WRITE, &body.transactional_id.0) {
                Some(ResponseError::TransactionalIdAuthorizationFailed.code())
            } else if !authz.group(op::READ, &group_id) {
                Some(ResponseError::GroupAuthorizationFailed.code())
            } else {
                None
            };
            let refused: Vec<Option<i16>> = body
                .topics
                .iter()
                .map(|t| {
                    whole.or_else(|| {
                        (!authz.topic(op::READ, &t.name.0)).then(|| ResponseError::TopicAuthorizationFailed.code())
                    })
                })
                .collect();
            let offsets: Vec<_> = offsets
                .into_iter()
                .filter(|o| {
                    let i = body.topics.iter().position(|t| *t.name.0 == *o.topic).unwrap_or(0);
                    refused.get(i).is_some_and(|r| r.is_none())
                })
                .collect();
            let n = offsets.len();
            let joined = if n > 0 && req.version >= FIRST_TV2_VERSION {
                join_transaction(&ctx, &body, &group_id).await
            } else {
                Ok(())
            };
            let member = sluice_shard::groups::MemberRef {
                group_id: group_id.clone(),
                generation_id: body.generation_id,
                member_id: body.member_id.to_string(),
                group_instance_id: body.group_instance_id.as_ref().map(|i| i.to_string()),
            };
            let request =
                StageOffsetsRequest { group_id: group_id.clone(), producer_id: body.producer_id.0, offsets, member };
            let codes: Vec<i16> = match (n, joined) {
                (0, _) => Vec::new(),
                (_, Err(e)) => vec![txn_code(&e, true); n],
                (_, Ok(())) => match txn::on_group(&ctx.shard, &group_id, request).await {
                    Ok(each) => each.iter().map(group_result_code).collect(),
                    Err(e) => vec![txn_code(&e, req.version >= 3); n],
                },
            };
            let codes = crate::authz::with_refusals(&refused, body.topics.iter().map(|t| t.partitions.len()), codes);
            let partitions = |t: &TxnOffsetCommitRequestTopic| t.partitions.iter().map(|p| p.partition_index).collect();
            let topics = answer_each(body.topics, codes, partitions, |t, parts| {
                let parts = parts.into_iter().map(|(index, code)| {
                    TxnOffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                });
                TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts.collect())
            });
            respond(&req, &TxnOffsetCommitResponse::default().with_topics(topics)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

/// Transaction version 2: adds the group's `__consumer_offsets` partition (and the group) to
/// the producer's transaction on the transactional id's coordinator, wherever it is.
async fn join_transaction(ctx: &Ctx, body: &TxnOffsetCommitRequest, group_id: &str) -> Result<(), TxnError> {
    let partitions = ctx.shard.metadata().topics.get(OFFSETS_TOPIC).map_or(0, |t| t.shards.len());
    if partitions == 0 {
        return Err(TxnError::CoordinatorNotAvailable);
    }
    let call = CoordinatorCall {
        transactional_id: body.transactional_id.0.to_string(),
        producer_id: body.producer_id.0,
        epoch: body.producer_epoch,
        partitions: vec![(OFFSETS_TOPIC.to_string(), offsets_partition(group_id, partitions))],
        add: true,
        group: Some(group_id.to_string()),
    };
    let result = coordinate(&ctx.shard, call).await.map(|_| ());
    if let Err(e) = &result {
        tracing::debug!(group = group_id, error = %e, "TxnOffsetCommit v5: the group could not join the transaction");
    }
    result
}
