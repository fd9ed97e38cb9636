//! DeleteRecords (key 21), versions 0–2: moves partitions' log start offsets forward
//! (offset -1: up to the high watermark). Reads below it get OFFSET_OUT_OF_RANGE and
//! ListOffsets earliest reports it; it survives restarts. A topic without DELETE is answered
//! TOPIC_AUTHORIZATION_FAILED for each of its partitions (low watermark -1), as Kafka.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};
use sluice_core::{Offset, TopicPartition};
use sluice_shard::metadata::acl::op;
use sluice_shard::offsets::delete_records;
use sluice_shard::PartitionError;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DeleteRecords, name: "DeleteRecords", min_version: 0, max_version: 2, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DeleteRecordsRequest = decode_body(&req)?;
        let authz = crate::authz::Authz::new(&ctx, &req);
        let allowed: Vec<bool> = body.topics.iter().map(|t| authz.topic(op::DELETE, &t.name.0)).collect();
        let mut items = Vec::new();
        for t in body.topics.iter().zip(&allowed).filter(|(_, a)| **a).map(|(t, _)| t) {
            for p in &t.partitions {
                items.push((
                    items.len(),
                    TopicPartition::new(t.name.0.to_string(), p.partition_index),
                    Offset(p.offset),
                ));
            }
        }
        let mut results = delete_records(&ctx.shard, items).await.into_iter();
        let topics = body
            .topics
            .into_iter()
            .zip(allowed)
            .map(|(t, allowed)| {
                DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let base = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                            let r = match allowed {
                                true => results.next().expect("one result per partition").1,
                                false => Err(PartitionError::TopicAuthorizationFailed),
                            };
                            match r {
                                Ok(low) => base.with_error_code(0).with_low_watermark(low.0),
                                Err(e) => base.with_error_code(code(&e)).with_low_watermark(-1),
                            }
                        })
                        .collect(),
                )
            })
            .collect();
        Ok(reply_now(respond(&req, &DeleteRecordsResponse::default().with_topics(topics))))
    }
    .boxed_local()
}
