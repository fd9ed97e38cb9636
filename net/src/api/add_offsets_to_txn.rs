//! AddOffsetsToTxn (key 25), versions 0–3: the group's `__consumer_offsets` partition joins
//! the open transaction, so the offsets TxnOffsetCommit stages become visible at its commit.
//!
//! Contract: answered after the coordinator's new state is durable. PRODUCER_FENCED from v2,
//! INVALID_PRODUCER_EPOCH before. As Kafka: TRANSACTIONAL_ID_AUTHORIZATION_FAILED without WRITE
//! on the transactional id, then GROUP_AUTHORIZATION_FAILED without READ on the group.

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::txn_result_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};
use sluice_shard::groups::{offsets_partition, OFFSETS_TOPIC};
use sluice_shard::metadata::acl::op;
use sluice_shard::txn::{self, AddRequest, TxnError};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::AddOffsetsToTxn, name: "AddOffsetsToTxn", min_version: 0, max_version: 3, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: AddOffsetsToTxnRequest = decode_body(&req)?;
        let reply = async move {
            let transactional_id = body.transactional_id.0.to_string();
            let group = body.group_id.0.to_string();
            let partitions = ctx.shard.metadata().topics.get(OFFSETS_TOPIC).map(|t| t.shards.len()).unwrap_or(0);
            let authz = crate::authz::Authz::new(&ctx, &req);
            let result = if !authz.transactional_id(op::WRITE, &transactional_id) {
                Err(TxnError::TransactionalIdAuthorizationFailed)
            } else if !authz.group(op::READ, &group) {
                Err(TxnError::GroupAuthorizationFailed)
            } else if partitions == 0 {
                Err(TxnError::CoordinatorNotAvailable)
            } else {
                let request = AddRequest {
                    transactional_id: transactional_id.clone(),
                    producer_id: body.producer_id.0,
                    epoch: body.producer_epoch,
                    partitions: vec![(OFFSETS_TOPIC.to_string(), offsets_partition(&group, partitions))],
                    group: Some(group),
                    tv2: false,
                };
                txn::ask(&ctx.shard, &transactional_id, request).await
            };
            let resp = AddOffsetsToTxnResponse::default().with_error_code(txn_result_code(&result, req.version >= 2));
            respond(&req, &resp).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}
