//! OffsetDelete (key 47), version 0: removes committed offsets of partitions a group no
//! longer consumes (GROUP_SUBSCRIBED_TO_TOPIC while its members subscribe to the topic).
//! As Kafka: DELETE on the group (else GROUP_AUTHORIZATION_FAILED for the whole request) and
//! READ on each topic (else TOPIC_AUTHORIZATION_FAILED for its partitions).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::{group_code, group_result_code};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{ApiKey, OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;
use sluice_shard::groups;
use sluice_shard::metadata::acl::op;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::OffsetDelete, name: "OffsetDelete", min_version: 0, max_version: 0, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: OffsetDeleteRequest = decode_body(&req)?;
        let group_id = body.group_id.0.to_string();
        let authz = crate::authz::Authz::new(&ctx, &req);
        if !authz.group(op::DELETE, &group_id) {
            let resp = OffsetDeleteResponse::default().with_error_code(ResponseError::GroupAuthorizationFailed.code());
            return Ok(reply_now(respond(&req, &resp)));
        }
        let allowed: Vec<bool> = body.topics.iter().map(|t| authz.topic(op::READ, &t.name.0)).collect();
        let partitions: Vec<(String, i32)> = body
            .topics
            .iter()
            .zip(&allowed)
            .filter(|(_, a)| **a)
            .flat_map(|(t, _)| t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index)))
            .collect();
        let op = groups::OffsetDeleteRequest { group_id: group_id.clone(), partitions };
        let result = groups::ask(&ctx.shard, &group_id, op).await;
        let resp = match result {
            Err(e) => OffsetDeleteResponse::default().with_error_code(group_code(&e)),
            Ok(each) => {
                let mut each = each.into_iter();
                OffsetDeleteResponse::default().with_error_code(0).with_topics(
                    body.topics
                        .into_iter()
                        .zip(allowed)
                        .map(|(t, allowed)| {
                            OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let code = match allowed {
                                            true => group_result_code(&each.next().unwrap_or(Ok(()))),
                                            false => ResponseError::TopicAuthorizationFailed.code(),
                                        };
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            }
        };
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
