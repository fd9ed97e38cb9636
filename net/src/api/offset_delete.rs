//! OffsetDelete (key 47), version 0: removes committed offsets of partitions a group no
//! longer consumes (GROUP_SUBSCRIBED_TO_TOPIC while its members subscribe to the topic).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::{group_code, group_result_code};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{ApiKey, OffsetDeleteRequest, OffsetDeleteResponse};
use sluice_shard::groups;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::OffsetDelete, name: "OffsetDelete", min_version: 0, max_version: 0, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: OffsetDeleteRequest = decode_body(&req)?;
        let group_id = body.group_id.0.to_string();
        let partitions: Vec<(String, i32)> = body
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index)))
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
                        .map(|t| {
                            OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let r = each.next().unwrap_or(Ok(()));
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(group_result_code(&r))
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
