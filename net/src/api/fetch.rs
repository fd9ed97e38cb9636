//! Fetch (key 1), versions 4–18: read from the owners, long-poll until `min_bytes` or
//! `max_wait_ms`, answer within `max_bytes` (the first batch always whole).
//!
//! Contract: topics are named by name (v4–12) or by topic id (v13+); an unknown id gets
//! UNKNOWN_TOPIC_ID. Fetch sessions (KIP-227) are not kept: session id 0 tells clients to send
//! full requests. Everything happens in the second phase, so a waiting fetch never holds up
//! the connection's other requests.

use super::{topic_name, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, encode_response, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use sluice_core::limits::{MAX_FETCH_RESPONSE_BYTES, MAX_FETCH_WAIT_MS, MAX_PARTITION_READ_BYTES};
use sluice_core::{Offset, TopicPartition};
use sluice_shard::fetch::{fetch, FetchPlan};
use sluice_shard::msg::FetchItem;
use sluice_shard::PartitionError;
use std::rc::Rc;
use std::time::Duration;

pub const SPEC: ApiSpec = ApiSpec { key: ApiKey::Fetch, name: "Fetch", min_version: 4, max_version: 18, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: FetchRequest = decode_body(&req)?;
        let reply = async move {
            let mut items = Vec::new();
            let mut early: Vec<Option<PartitionError>> = Vec::new();
            let mut layout = Vec::with_capacity(body.topics.len());
            for t in &body.topics {
                let name = topic_name(&ctx, &t.topic.0, &t.topic_id);
                let mut parts = Vec::with_capacity(t.partitions.len());
                for p in &t.partitions {
                    let index = early.len();
                    parts.push((p.partition, index));
                    match &name {
                        None => early.push(Some(PartitionError::UnknownTopicId)),
                        Some(n) => {
                            early.push(None);
                            items.push(FetchItem {
                                index,
                                tp: TopicPartition::new(n.clone(), p.partition),
                                offset: Offset(p.fetch_offset),
                                max_bytes: (p.partition_max_bytes.max(0) as usize).min(MAX_PARTITION_READ_BYTES),
                            });
                        }
                    }
                }
                layout.push((t.topic.clone(), t.topic_id, parts));
            }
            let plan = FetchPlan {
                items,
                max_wait: Duration::from_millis(body.max_wait_ms.clamp(0, MAX_FETCH_WAIT_MS) as u64),
                min_bytes: body.min_bytes.max(0) as usize,
                max_bytes: (body.max_bytes.max(0) as usize).min(MAX_FETCH_RESPONSE_BYTES),
            };
            let mut results: Vec<Option<Result<sluice_storage::LogRead, PartitionError>>> =
                early.into_iter().map(|e| e.map(Err)).collect();
            for (index, r) in fetch(&ctx.shard, plan).await {
                results[index] = Some(r);
            }
            let v = req.version;
            let responses = layout
                .into_iter()
                .map(|(topic, topic_id, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(partition, at)| {
                            let base = PartitionData::default()
                                .with_partition_index(partition)
                                .with_aborted_transactions(Some(vec![]))
                                .with_preferred_read_replica(BrokerId(-1));
                            match results[at].take().expect("every partition has a result") {
                                Ok(read) => base
                                    .with_error_code(0)
                                    .with_high_watermark(read.high_watermark.0)
                                    .with_last_stable_offset(read.high_watermark.0)
                                    .with_log_start_offset(if v >= 5 { read.log_start.0 } else { -1 })
                                    .with_records(Some(read.records)),
                                Err(e) => base
                                    .with_error_code(code(&e))
                                    .with_high_watermark(-1)
                                    .with_last_stable_offset(-1)
                                    .with_log_start_offset(-1)
                                    .with_records(None),
                            }
                        })
                        .collect();
                    FetchableTopicResponse::default()
                        .with_topic(topic)
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect();
            let resp = FetchResponse::default()
                .with_throttle_time_ms(0)
                .with_error_code(0)
                .with_session_id(0)
                .with_responses(responses);
            encode_response(req.correlation_id, req.version, &resp).map(Some)
        }
        .boxed_local();
        Ok(reply)
    }
    .boxed_local()
}
