//! OffsetForLeaderEpoch (key 23), versions 2–4: the end offset of a leader epoch.
//!
//! Contract: every batch so far was written in epoch 0 (one broker, no leader changes), so
//! epoch 0 ends at the log end; a later epoch is unknown (-1, -1); a client that believes the
//! current epoch is newer than 0 gets UNKNOWN_LEADER_EPOCH.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;
use sluice_core::TopicPartition;
use sluice_shard::msg::ListOffsetsItem;
use sluice_shard::offsets::{list_offsets, LATEST};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::OffsetForLeaderEpoch, name: "OffsetForLeaderEpoch", min_version: 2, max_version: 4, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: OffsetForLeaderEpochRequest = decode_body(&req)?;
        let mut items = Vec::new();
        for t in &body.topics {
            for p in &t.partitions {
                items.push(ListOffsetsItem {
                    index: items.len(),
                    tp: TopicPartition::new(t.topic.0.to_string(), p.partition),
                    timestamp: LATEST,
                });
            }
        }
        let mut ends = list_offsets(&ctx.shard, items).await.into_iter();
        let topics = body
            .topics
            .into_iter()
            .map(|t| {
                OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let (_, end) = ends.next().expect("one answer per partition");
                            let base = EpochEndOffset::default().with_partition(p.partition);
                            match end {
                                Err(e) => base.with_error_code(code(&e)).with_leader_epoch(-1).with_end_offset(-1),
                                Ok(_) if p.current_leader_epoch > 0 => base
                                    .with_error_code(ResponseError::UnknownLeaderEpoch.code())
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1),
                                Ok(_) if p.leader_epoch > 0 => {
                                    base.with_error_code(0).with_leader_epoch(-1).with_end_offset(-1)
                                }
                                Ok((end, _)) => base.with_error_code(0).with_leader_epoch(0).with_end_offset(end.0),
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
