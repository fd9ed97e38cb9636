//! OffsetCommit (key 8), versions 2–9: durable commits to `__consumer_offsets`.
//!
//! Contract: answered after the commit's records are fdatasync'd. A commit from a member
//! checks its generation; a commit with generation -1 and no member id is accepted for groups
//! without members (consumers that assign partitions themselves).

use super::per_partition::{answer_each, offsets_to_commit};
use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::group_result_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};
use sluice_shard::groups::{self, CommitRequest, MemberRef};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::OffsetCommit, name: "OffsetCommit", min_version: 2, max_version: 9, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: OffsetCommitRequest = decode_body(&req)?;
        let group_id = body.group_id.0.to_string();
        let member = MemberRef {
            group_id: group_id.clone(),
            generation_id: body.generation_id_or_member_epoch,
            member_id: body.member_id.to_string(),
            group_instance_id: body.group_instance_id.map(|s| s.to_string()),
        };
        let refused =
            crate::authz::Authz::new(&ctx, &req).commit_refusals(&group_id, body.topics.iter().map(|t| &*t.name.0));
        let allowed = body.topics.iter().zip(&refused).filter(|(_, r)| r.is_none()).map(|(t, _)| t);
        let offsets = offsets_to_commit(allowed.map(|t| (&t.name, &t.partitions[..])));
        let reply = async move {
            let n = offsets.len();
            let result = if n == 0 && refused.iter().all(Option::is_some) {
                Ok(Vec::new())
            } else {
                groups::ask(&ctx.shard, &group_id, CommitRequest { member, offsets }).await
            };
            let codes: Vec<i16> = match result {
                Ok(each) => each.iter().map(group_result_code).collect(),
                Err(e) => vec![group_result_code::<()>(&Err(e)); n],
            };
            let codes = crate::authz::with_refusals(&refused, body.topics.iter().map(|t| t.partitions.len()), codes);
            let partitions = |t: &OffsetCommitRequestTopic| t.partitions.iter().map(|p| p.partition_index).collect();
            let topics = answer_each(body.topics, codes, partitions, |t, parts| {
                let parts = parts.into_iter().map(|(index, code)| {
                    OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                });
                OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts.collect())
            });
            respond(&req, &OffsetCommitResponse::default().with_topics(topics)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}
