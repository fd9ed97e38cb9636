//! Fetch (key 1), versions 4–18: read from the owners, long-poll until `min_bytes` or
//! `max_wait_ms`, answer within `max_bytes` (the first batch always whole).
//!
//! Contract: topics are named by name (v4–12) or by topic id (v13+); an unknown id gets
//! UNKNOWN_TOPIC_ID. Fetch sessions (KIP-227) are not kept: session id 0 tells clients to send
//! full requests. Everything happens in the second phase, so a waiting fetch never holds up
//! the connection's other requests.
//!
//! Memory: an answer is also cut to what is left of the shard's response budget
//! (`max_response_bytes_per_shard` minus the response bytes the shard already holds unwritten,
//! `metrics::response_bytes_held`), checked when the reads start (bounding them) and again when
//! they are done, in the same step as the answer is encoded and handed to the connection's
//! writer, which holds it in the count until written. As always in Kafka, the first batch of
//! the first partition with data is kept whole even when nothing is left, so every Fetch makes
//! progress and the shard holds at most the budget plus one batch per connection.

use super::{topic_name, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use crate::response::encode_with_records;
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use sluice_core::limits::{MAX_FETCH_RESPONSE_BYTES, MAX_FETCH_WAIT_MS, MAX_PARTITION_READ_BYTES};
use sluice_core::{Offset, TopicPartition};
use sluice_shard::fetch::{fetch, trim, FetchPlan};
use sluice_shard::metrics;
use sluice_shard::msg::FetchItem;
use sluice_shard::PartitionError;
use std::rc::Rc;
use std::time::Duration;

pub const SPEC: ApiSpec = ApiSpec { key: ApiKey::Fetch, name: "Fetch", min_version: 4, max_version: 18, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: FetchRequest = decode_body(&req)?;
        let reply = async move {
            let asked = (body.max_bytes.max(0) as usize).min(MAX_FETCH_RESPONSE_BYTES);
            let max_bytes = asked.min(budget_left(&ctx));
            let mut shrunk = max_bytes < asked;
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
                                max_bytes: (p.partition_max_bytes.max(0) as usize)
                                    .min(MAX_PARTITION_READ_BYTES)
                                    .min(max_bytes),
                            });
                        }
                    }
                }
                layout.push((t.topic.clone(), t.topic_id, name, parts));
            }
            let plan = FetchPlan {
                items,
                max_wait: Duration::from_millis(body.max_wait_ms.clamp(0, MAX_FETCH_WAIT_MS) as u64),
                // A budget-cut answer does not wait for more than it may carry.
                min_bytes: (body.min_bytes.max(0) as usize).min(max_bytes.max(1)),
                max_bytes,
            };
            let mut results: Vec<Option<Result<sluice_storage::LogRead, PartitionError>>> =
                early.into_iter().map(|e| e.map(Err)).collect();
            let read = fetch(&ctx.shard, plan).await;
            // From here to the writer taking the frame nothing awaits, so no other response
            // can take the budget in between.
            let before = records_len(&read);
            let read = trim(read, budget_left(&ctx));
            let kept = records_len(&read);
            shrunk |= kept < before;
            if shrunk {
                metrics::fetch_shrunk();
                tracing::debug!(
                    asked,
                    kept,
                    held = metrics::response_bytes_held(),
                    "fetch answer cut to the shard's response budget"
                );
            }
            for (index, r) in read {
                results[index] = Some(r);
            }
            // Bytes out per topic: what the answer carries.
            for (_, _, name, parts) in &layout {
                let sent: usize = parts
                    .iter()
                    .filter_map(|(_, at)| match &results[*at] {
                        Some(Ok(r)) => Some(r.records.len()),
                        _ => None,
                    })
                    .sum();
                if let (Some(name), true) = (name, sent > 0) {
                    metrics::add_topic_bytes(name, sent as u64, false);
                }
            }
            let v = req.version;
            let mut records = Vec::new();
            let responses = layout
                .into_iter()
                .map(|(topic, topic_id, _, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(partition, at)| {
                            let base = PartitionData::default()
                                .with_partition_index(partition)
                                .with_preferred_read_replica(BrokerId(-1));
                            match results[at].take().expect("every partition has a result") {
                                Ok(read) => base
                                    .with_error_code(0)
                                    .with_high_watermark(read.high_watermark.0)
                                    .with_last_stable_offset(read.high_watermark.0)
                                    .with_log_start_offset(if v >= 5 { read.log_start.0 } else { -1 })
                                    // READ_UNCOMMITTED: Kafka answers null, not an empty list.
                                    .with_aborted_transactions(None)
                                    .with_records(Some({
                                        records.push(read.records.clone());
                                        read.records
                                    })),
                                Err(e) => error_partition(base, &e),
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
            // The record sets are written from where the reads left them, not copied.
            encode_with_records(req.correlation_id, req.version, &resp, &records).map(Some)
        }
        .boxed_local();
        Ok(reply)
    }
    .boxed_local()
}

/// A partition answered with an error, field for field as Kafka 4.x answers it: watermarks
/// and log start offset -1 and an empty record set, never a null one (librdkafka rejects the
/// whole response on a record set of length -1, so a consumer could never see
/// OFFSET_OUT_OF_RANGE and reset). Aborted transactions are an empty list for a partition
/// Kafka refuses before reading (unknown topic, partition or topic id) and null for one whose
/// read failed (`ReplicaManager.createLogReadResult`).
fn error_partition(base: PartitionData, e: &PartitionError) -> PartitionData {
    let refused_before_read = matches!(e, PartitionError::UnknownTopicOrPartition | PartitionError::UnknownTopicId);
    base.with_error_code(code(e))
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_aborted_transactions(refused_before_read.then(Vec::new))
        .with_records(Some(Bytes::new()))
}

/// Bytes of the shard's response budget not held by unwritten responses.
fn budget_left(ctx: &Ctx) -> usize {
    (ctx.shard.config.max_response_bytes_per_shard as u64).saturating_sub(metrics::response_bytes_held()) as usize
}

fn records_len(read: &[sluice_shard::msg::FetchResult]) -> usize {
    read.iter().map(|(_, r)| r.as_ref().map(|r| r.records.len()).unwrap_or(0)).sum()
}
