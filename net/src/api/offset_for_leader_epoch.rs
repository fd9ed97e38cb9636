//! OffsetForLeaderEpoch (key 23), versions 2–4: the end offset of a leader epoch.
//!
//! Contract: answered on the partition's owner, only by its leader, after the client's current
//! leader epoch is checked (`sluice_shard::replica::epochs`: FENCED_LEADER_EPOCH older,
//! UNKNOWN_LEADER_EPOCH newer, NOT_LEADER_OR_FOLLOWER on a follower). A replicated partition
//! answers from its epoch history (the largest epoch at or below the one asked and where the
//! next one starts, the log end for the latest: Kafka's `endOffsetFor`). An unreplicated
//! partition wrote every batch in epoch 0: epoch 0 ends at the high watermark, a later epoch
//! is unknown (-1, -1). A topic the client may not DESCRIBE (without CLUSTER_ACTION on the
//! cluster) is answered TOPIC_AUTHORIZATION_FAILED, -1, -1 per partition, as Kafka.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use sluice_core::TopicPartition;
use sluice_shard::metadata::acl::op;
use sluice_shard::msg::ListOffsetsItem;
use sluice_shard::offsets::{list_offsets, LATEST};
use sluice_shard::PartitionError;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::OffsetForLeaderEpoch, name: "OffsetForLeaderEpoch", min_version: 2, max_version: 4, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: OffsetForLeaderEpochRequest = decode_body(&req)?;
        // CLUSTER_ACTION (replicas) or DESCRIBE on the topic (KIP-320 consumers), as Kafka.
        let authz = crate::authz::Authz::new(&ctx, &req);
        let replica = authz.cluster(op::CLUSTER_ACTION);
        let allowed: Vec<bool> = body.topics.iter().map(|t| replica || authz.topic(op::DESCRIBE, &t.topic.0)).collect();
        let mut items = Vec::new();
        for t in body.topics.iter().zip(&allowed).filter(|(_, a)| **a).map(|(t, _)| t) {
            for p in &t.partitions {
                items.push(ListOffsetsItem {
                    index: items.len(),
                    tp: TopicPartition::new(t.topic.0.to_string(), p.partition),
                    timestamp: LATEST,
                    current_leader_epoch: p.current_leader_epoch,
                    epoch_end_of: Some(p.leader_epoch),
                });
            }
        }
        let mut ends = list_offsets(&ctx.shard, items).await.into_iter();
        let topics = body
            .topics
            .into_iter()
            .zip(allowed)
            .map(|(t, allowed)| {
                OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let end = match allowed {
                                true => ends.next().expect("one answer per partition").1,
                                false => Err(PartitionError::TopicAuthorizationFailed),
                            };
                            let base = EpochEndOffset::default().with_partition(p.partition);
                            match end {
                                Err(e) => base.with_error_code(code(&e)).with_leader_epoch(-1).with_end_offset(-1),
                                Ok(found) => base
                                    .with_error_code(0)
                                    .with_leader_epoch(found.leader_epoch)
                                    .with_end_offset(found.offset.0),
                            }
                        })
                        .collect(),
                )
            })
            .collect();
        Ok(reply_now(respond(&req, &OffsetForLeaderEpochResponse::default().with_topics(topics))))
    }
    .boxed_local()
}
