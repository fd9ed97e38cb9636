//! TxnOffsetCommit (key 28), versions 0–4: offsets a transaction commits for a group, staged
//! by the group's coordinator until the transaction ends (made durable and visible at its
//! COMMIT, dropped at its ABORT).
//!
//! Contract: one code per partition; a partition that does not exist gets
//! UNKNOWN_TOPIC_OR_PARTITION. The member's generation (v3+) is not checked (Kafka checks it).
//! Version 5 (transaction version 2) is not offered.

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
use sluice_shard::txn::{self, StageOffsetsRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::TxnOffsetCommit, name: "TxnOffsetCommit", min_version: 0, max_version: 4, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: TxnOffsetCommitRequest = decode_body(&req)?;
        let group_id = body.group_id.0.to_string();
        let offsets = offsets_to_commit(body.topics.iter().map(|t| (&t.name, &t.partitions[..])));
        let reply = async move {
            let n = offsets.len();
            let request = StageOffsetsRequest { group_id: group_id.clone(), producer_id: body.producer_id.0, offsets };
            let codes: Vec<i16> = match txn::on_group(&ctx.shard, &group_id, request).await {
                Ok(each) => each.iter().map(group_result_code).collect(),
                Err(e) => vec![txn_code(&e, req.version >= 3); n],
            };
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
