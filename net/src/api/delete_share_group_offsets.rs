//! DeleteShareGroupOffsets (key 92), version 0 (as Kafka 4.x): forgets a share group's state
//! for whole topics (`kafka-share-groups --delete-offsets`).
//!
//! Contract: only while the group has no members (else NON_EMPTY_GROUP for the whole
//! request); every partition's state file of each listed topic is removed on its owner (in a
//! cluster through each partition's leader, wherever it is) before the answer (the next fetch starts the share-partition from the reset policy). DELETE on the
//! group (else GROUP_AUTHORIZATION_FAILED), READ on each topic (else
//! TOPIC_AUTHORIZATION_FAILED for the topic).

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::{code, group_code};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic as Topic;
use kafka_protocol::messages::{ApiKey, DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::TopicPartition;
use sluice_shard::metadata::acl::op;
use sluice_shard::share;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DeleteShareGroupOffsets,
    name: "DeleteShareGroupOffsets",
    min_version: 0,
    max_version: 0,
    handle,
};

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DeleteShareGroupOffsetsRequest = decode_body(&req)?;
        let reply = async move {
            let group = body.group_id.0.to_string();
            let authz = crate::authz::Authz::new(&ctx, &req);
            if !authz.group(op::DELETE, &group) {
                return top(&req, ResponseError::GroupAuthorizationFailed.code(), None);
            }
            if let Err(e) = share::require_empty(&ctx.shard, &group).await {
                return top(&req, group_code(&e), Some(e.to_string()));
            }
            let mut responses = Vec::with_capacity(body.topics.len());
            for t in body.topics {
                let name = t.topic_name.0.to_string();
                let known = ctx.shard.metadata().topics.get(&name).map(|m| (m.id, m.shards.len()));
                let out = Topic::default().with_topic_name(t.topic_name);
                let out = match known {
                    _ if !authz.topic(op::READ, &name) => {
                        out.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    }
                    None => out.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                    Some((id, n)) => {
                        let items = (0..n)
                            .map(|p| {
                                (
                                    p,
                                    TopicPartition::new(
                                        name.clone(),
                                        i32::try_from(p).expect("a partition index is an i32"),
                                    ),
                                )
                            })
                            .collect();
                        let r = share::offsets(&ctx.shard, &group, items, Some(None)).await;
                        let out = out.with_topic_id(super::uuid(id));
                        match r.into_iter().find_map(|(_, r)| r.err()) {
                            Some(e) => out
                                .with_error_code(code(&e))
                                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                            None => out,
                        }
                    }
                };
                responses.push(out);
            }
            respond(&req, &DeleteShareGroupOffsetsResponse::default().with_responses(responses)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

fn top(req: &Request, code: i16, msg: Option<String>) -> Result<Option<crate::response::Frame>, FrameError> {
    let body = DeleteShareGroupOffsetsResponse::default()
        .with_error_code(code)
        .with_error_message(msg.map(StrBytes::from_string));
    respond(req, &body).map(|f| Some(f.into()))
}
