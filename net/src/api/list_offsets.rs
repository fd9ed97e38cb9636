//! ListOffsets (key 2), versions 1–10: earliest, latest, max timestamp and by timestamp.
//!
//! Contract: see `sluice_shard::offsets` for what each timestamp means; answers come from the
//! partitions' owners, one message per remote owner. With isolation level read_committed (v2+),
//! latest (-1) is the last stable offset, as Kafka answers. v4+: the client's current leader
//! epoch is checked on the owner (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH), and the leader
//! epoch answered is the partition's current one for latest and the epoch of the batch found
//! otherwise (`sluice_shard::offsets`).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};
use sluice_core::TopicPartition;
use sluice_shard::msg::ListOffsetsItem;
use sluice_shard::offsets::list_offsets;
use sluice_shard::txn::view::{views, ViewItem};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ListOffsets, name: "ListOffsets", min_version: 1, max_version: 10, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ListOffsetsRequest = decode_body(&req)?;
        let mut items = Vec::new();
        for t in &body.topics {
            for p in &t.partitions {
                items.push(ListOffsetsItem {
                    index: items.len(),
                    tp: TopicPartition::new(t.name.0.to_string(), p.partition_index),
                    timestamp: p.timestamp,
                    current_leader_epoch: if req.version >= 4 { p.current_leader_epoch } else { -1 },
                    epoch_end_of: None,
                });
            }
        }
        let latest: Vec<ViewItem> = if req.version >= 2 && body.isolation_level == 1 {
            items
                .iter()
                .filter(|i| i.timestamp == sluice_shard::offsets::LATEST)
                .map(|i| ViewItem { index: i.index, tp: i.tp.clone(), from: i64::MAX })
                .collect()
        } else {
            Vec::new()
        };
        let mut results = list_offsets(&ctx.shard, items).await;
        if !latest.is_empty() {
            for (index, view) in views(&ctx.shard, latest).await {
                if let (Ok(view), Some((_, Ok(found)))) = (view, results.iter_mut().find(|(i, _)| *i == index)) {
                    found.offset.0 = found.offset.0.min(view.last_stable_offset);
                }
            }
        }
        let mut results = results.into_iter();
        let authz = crate::authz::Authz::new(&ctx, &req);
        let topics = body
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let (_, r) = results.next().expect("one result per partition");
                        let r =
                            r.and_then(|ok| match authz.topic(sluice_shard::metadata::acl::op::DESCRIBE, &t.name.0) {
                                true => Ok(ok),
                                false => Err(sluice_shard::PartitionError::TopicAuthorizationFailed),
                            });
                        let base = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                        match r {
                            // Nothing found (an empty log for MAX_TIMESTAMP, no record at or
                            // after a timestamp): Kafka answers offset, timestamp and epoch -1.
                            Ok(found) => base
                                .with_error_code(0)
                                .with_offset(found.offset.0)
                                .with_timestamp(found.timestamp)
                                .with_leader_epoch(if req.version >= 4 { found.leader_epoch } else { -1 }),
                            Err(e) => {
                                base.with_error_code(code(&e)).with_offset(-1).with_timestamp(-1).with_leader_epoch(-1)
                            }
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        let resp = ListOffsetsResponse::default().with_throttle_time_ms(0).with_topics(topics);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
