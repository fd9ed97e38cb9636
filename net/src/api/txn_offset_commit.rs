//! TxnOffsetCommit (key 28), versions 0–4: offsets a transaction commits for a group, staged
//! by the group's coordinator until the transaction ends (made durable and visible at its
//! COMMIT, dropped at its ABORT).
//!
//! Contract: one code per partition; a partition that does not exist gets
//! UNKNOWN_TOPIC_OR_PARTITION. The member's generation (v3+) is not checked (Kafka checks it).
//! Version 5 (transaction version 2) is not offered.

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::{group_result_code, txn_code};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use sluice_shard::groups::OffsetToCommit;
use sluice_shard::txn::{self, StageOffsetsRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::TxnOffsetCommit, name: "TxnOffsetCommit", min_version: 0, max_version: 4, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: TxnOffsetCommitRequest = decode_body(&req)?;
        let group_id = body.group_id.0.to_string();
        let offsets: Vec<OffsetToCommit> = body
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| OffsetToCommit {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
            })
            .collect();
        let reply = async move {
            let n = offsets.len();
            let request = StageOffsetsRequest { group_id: group_id.clone(), producer_id: body.producer_id.0, offsets };
            let codes: Vec<i16> = match txn::on_group(&ctx.shard, &group_id, request).await {
                Ok(each) => each.iter().map(group_result_code).collect(),
                Err(e) => vec![txn_code(&e, req.version >= 3); n],
            };
            let mut codes = codes.into_iter();
            let topics = body
                .topics
                .into_iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().unwrap_or(0))
                        })
                        .collect();
                    TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts)
                })
                .collect();
            respond(&req, &TxnOffsetCommitResponse::default().with_topics(topics)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}
