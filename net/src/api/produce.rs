//! Produce (key 0), versions 3–13: validate batches, route them to their owners, answer at
//! the requested ack level.
//!
//! Contract: every batch's length, magic and CRC-32C are checked before anything is appended,
//! then what Kafka's LogValidator checks for a client's batch (one batch per partition,
//! `lastOffsetDelta + 1` = record count > 0, baseOffset 0, no control batch, the records of an
//! uncompressed batch: `sluice_core::batch::split_batches`), and on a compacted topic
//! (`cleanup.policy` containing `compact`) that every record has a key (a compressed batch is
//! decompressed for it): keyless records fail their partition with INVALID_RECORD, one
//! `record_errors` entry per record and Kafka's messages. A partition whose data fails gets
//! CORRUPT_MESSAGE (damaged), INVALID_RECORD (intact but invalid) or MESSAGE_TOO_LARGE, with the
//! reason as error message (v8+; Kafka sends none for these), and nothing of it is stored; the
//! request's other partitions are unaffected. Appends are issued in the first phase, so pipelined produce
//! requests on one connection land in order. acks=0 requests get no response.
//! NOT_LEADER_OR_FOLLOWER names the leader the partition's owner knows in KIP-951's
//! `CurrentLeader`, and the response carries its `NodeEndpoints` (v10+, `leader_hints`).
//! With a transactional id, a transactional batch is appended only to a partition of the
//! producer's open transaction (KIP-890 part 1, `sluice_shard::txn::verify`), verified before
//! any append of the request is issued, with the transactional id's coordinator wherever it is
//! (this broker or another, over the peer links); from v12 (transaction version 2, KIP-890
//! part 2) a partition not yet in the transaction is added to it instead.
//! Client quotas: the request's size counts against the client's `producer_byte_rate`; the
//! answer carries the larger of that throttle and the request-time one in `throttle_time_ms`
//! and the connection is muted for it (`crate::quota`).
//! ApiVersions advertises Produce from version 0 ([`ADVERTISED_MIN_VERSION`]), as Kafka 4.x
//! does (KAFKA-18659), though only 3–13 are served: a request of version 0–2 closes the
//! connection (`crate::conn`), as on Kafka 4.4.

use super::{leader_hints, topic_name, ApiSpec, Ctx, Reply};
use crate::errors::code_and_message;
use crate::frame::{decode_body, encode_response, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_core::batch::{keyless_records, split_batches, BatchError, BatchHeader};
use sluice_core::limits::{MAX_BATCH_BYTES, MAX_REQUEST_BYTES};
use sluice_core::TopicPartition;
use sluice_shard::admin::auto_create;
use sluice_shard::metadata::quota::QuotaKind;
use sluice_shard::msg::{Acks, Appended, ProduceItem};
use sluice_shard::produce::produce;
use sluice_shard::txn::verify::{self as txn_verify, VerifyItem};
use sluice_shard::PartitionError;
use sluice_storage::codec::{uncompressed, CodecError};
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec { key: ApiKey::Produce, name: "Produce", min_version: 3, max_version: 13, handle };

/// The lowest Produce version ApiVersions lists. librdkafka before 2.x's fix for KAFKA-18659
/// (kcat 1.7 with librdkafka 2.0, as Debian and Ubuntu ship it) enables gzip and snappy only
/// when the broker lists Produce v2 ("MsgVer1"), and otherwise sends every batch uncompressed
/// without a word; Kafka 4.x lists Produce from v0 for that reason and refuses v0–2 requests.
pub const ADVERTISED_MIN_VERSION: i16 = 0;

/// The topic's `max.message.bytes` (bounded by the broker's limit).
fn max_batch(ctx: &Ctx, topic: &str) -> usize {
    let meta = ctx.shard.metadata();
    let set = meta.topics.get(topic).map(|t| &t.configs);
    let none = Default::default();
    sluice_core::topic_config::effective_with(set.unwrap_or(&none), &ctx.shard.topic_defaults, "max.message.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_BATCH_BYTES)
        .min(MAX_REQUEST_BYTES)
}

/// Whether the topic's effective `cleanup.policy` contains `compact`.
fn is_compacted(ctx: &Ctx, topic: &str) -> bool {
    let meta = ctx.shard.metadata();
    let set = meta.topics.get(topic).map(|t| &t.configs);
    let none = Default::default();
    sluice_core::topic_config::effective_with(set.unwrap_or(&none), &ctx.shard.topic_defaults, "cleanup.policy")
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "compact"))
}

/// Kafka's `LogValidator.validateKey` for a compacted topic: every record needs a key. A
/// compressed batch is decompressed to see its records (with its codec); a batch that cannot be
/// decompressed is CORRUPT_MESSAGE.
fn check_keys(batches: &[(BatchHeader, bytes::Bytes)], tp: &TopicPartition) -> Result<(), PartitionError> {
    let text = format!("{}-{}", tp.topic, tp.partition);
    for (header, bytes) in batches {
        let plain = match header.compression() {
            0 => std::borrow::Cow::Borrowed(&bytes[..]),
            _ => std::borrow::Cow::Owned(uncompressed(bytes, header).map_err(|e| {
                PartitionError::CorruptBatch(BatchError::InvalidHeader(match e {
                    CodecError::UnknownCodec(_) => "unknown compression codec",
                    CodecError::Corrupt { .. } => "compressed records cannot be decompressed",
                    CodecError::TooLarge(_) => "records decompress past the broker's bound",
                }))
            })?),
        };
        match keyless_records(&plain, &text) {
            Ok(None) => {}
            Ok(Some(errors)) => return Err(PartitionError::InvalidRecords(errors)),
            Err(e) => return Err(PartitionError::CorruptBatch(e)),
        }
    }
    Ok(())
}

/// One topic of the request, as it will appear in the response.
struct TopicSlot {
    name: TopicName,
    id: uuid::Uuid,
    /// (partition index, position in the flat result list)
    partitions: Vec<(i32, usize)>,
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ProduceRequest = decode_body(&req)?;
        // The client's producer_byte_rate quota counts the whole request (Kafka's
        // `request.sizeInBytes`); over it, the connection is muted (KIP-219).
        let byte_throttle = crate::quota::record(&ctx, req.client_id.as_deref(), QuotaKind::Produce, req.size as f64);
        crate::quota::mute(&ctx, byte_throttle);
        let request_throttle = req.request_throttle_ms.clone();
        let acks = match body.acks {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            other => Err(PartitionError::InvalidRequiredAcks(other)),
        };
        let names: Vec<Option<String>> =
            body.topic_data.iter().map(|t| topic_name(&ctx, &t.name.0, &t.topic_id)).collect();
        let authz = crate::authz::Authz::new(&ctx, &req);
        let denied = authz.produce_refusals(body.transactional_id.as_ref().map(|t| &*t.0), &names);
        if ctx.shard.config.auto_create_topics_enable && acks.is_ok() {
            let creatable: Vec<Option<String>> = names
                .iter()
                .zip(&denied)
                .map(|(n, d)| n.clone().filter(|n| d.is_none() && authz.may_create(n)))
                .collect();
            create_missing(&ctx, &creatable).await;
        }
        // Kafka's delayed produce: a replicated write not committed within the request's
        // timeout is answered REQUEST_TIMED_OUT (it may still commit; the client retries).
        let commit_wait_ms = Some(u64::try_from(body.timeout_ms).unwrap_or(0));
        let Prepared { slots, mut early, mut items } = prepare(&ctx, &acks, body.topic_data, names, denied);
        for i in &mut items {
            i.commit_wait_ms = commit_wait_ms;
        }
        if let Some(id) = body.transactional_id.as_ref().filter(|_| !items.is_empty()) {
            // KIP-890 part 1: transactional batches only into partitions of the transaction.
            let refused = txn_verify::check(&ctx.shard, &id.0, transactional_items(&items), req.version).await;
            for (index, e) in refused {
                early[index] = Some(e);
                items.retain(|i| i.index != index);
            }
        }
        let acks = acks.unwrap_or(Acks::All);
        let pending = produce(&ctx.shard, acks, items).await;
        let (correlation_id, version) = (req.correlation_id, req.version);
        let reply = async move {
            let mut results: Vec<Option<Result<Appended, PartitionError>>> =
                early.into_iter().map(|e| e.map(Err)).collect();
            for (index, r) in pending.await {
                results[index] = Some(r);
            }
            if acks == Acks::None {
                return Ok(None);
            }
            let mut resp = response(slots, results, version);
            resp.throttle_time_ms = byte_throttle.max(request_throttle.get());
            if version >= 10 {
                resp.node_endpoints = node_endpoints(&ctx, &resp);
            }
            encode_response(correlation_id, version, &resp).map(|f| Some(f.into()))
        }
        .boxed_local();
        Ok(reply)
    }
    .boxed_local()
}

/// The partitions whose batch is transactional, with its producer id and epoch.
fn transactional_items(items: &[ProduceItem]) -> Vec<VerifyItem> {
    items
        .iter()
        .filter_map(|i| {
            let (h, _) = i.batches.first()?;
            let transactional = h.attributes & TRANSACTIONAL_ATTRIBUTE != 0 && h.producer_id >= 0;
            transactional.then(|| VerifyItem {
                index: i.index,
                tp: i.tp.clone(),
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
            })
        })
        .collect()
}

/// Attribute bit of a transactional batch.
const TRANSACTIONAL_ATTRIBUTE: i16 = 0x10;

/// Auto-creates the named topics that do not exist yet.
async fn create_missing(ctx: &Rc<Ctx>, names: &[Option<String>]) {
    let meta = ctx.shard.metadata();
    let mut missing: Vec<String> = names.iter().flatten().filter(|n| !meta.topics.contains_key(*n)).cloned().collect();
    missing.dedup();
    if !missing.is_empty() {
        auto_create(&ctx.shard, missing).await;
    }
}

/// The request taken apart: the response's shape, the partitions refused before any append
/// (by position in the flat result list) and the items to append.
struct Prepared {
    slots: Vec<TopicSlot>,
    early: Vec<Option<PartitionError>>,
    items: Vec<ProduceItem>,
}

fn prepare(
    ctx: &Ctx,
    acks: &Result<Acks, PartitionError>,
    topic_data: Vec<TopicProduceData>,
    names: Vec<Option<String>>,
    denied: Vec<Option<PartitionError>>,
) -> Prepared {
    let mut out = Prepared { slots: Vec::with_capacity(topic_data.len()), early: Vec::new(), items: Vec::new() };
    for ((topic, name), denied) in topic_data.into_iter().zip(names).zip(denied) {
        let mut slot = TopicSlot {
            name: topic.name.clone(),
            id: topic.topic_id,
            partitions: Vec::with_capacity(topic.partition_data.len()),
        };
        for p in topic.partition_data {
            let index = out.early.len();
            slot.partitions.push((p.index, index));
            if let Some(e) = &denied {
                out.early.push(Some(e.clone()));
                continue;
            }
            match prepare_partition(ctx, acks, name.as_deref(), index, p) {
                Ok(item) => {
                    out.items.push(item);
                    out.early.push(None);
                }
                Err(e) => out.early.push(Some(e)),
            }
        }
        out.slots.push(slot);
    }
    out
}

/// One partition's batches, validated, or why the partition is refused.
fn prepare_partition(
    ctx: &Ctx,
    acks: &Result<Acks, PartitionError>,
    name: Option<&str>,
    index: usize,
    p: PartitionProduceData,
) -> Result<ProduceItem, PartitionError> {
    match (acks, name, p.records) {
        (Err(e), _, _) => Err(e.clone()),
        (_, None, _) => Err(PartitionError::UnknownTopicId),
        (_, Some(n), _) if sluice_shard::admin::is_internal(n) => {
            Err(PartitionError::InvalidTopic(format!("{n} is an internal topic")))
        }
        (_, _, None) => Err(PartitionError::InvalidRequest("null records".into())),
        (Ok(_), Some(name), Some(records)) => match split_batches(&records, max_batch(ctx, name)) {
            Ok(batches) => {
                let tp = TopicPartition::new(name, p.index);
                if is_compacted(ctx, name) {
                    check_keys(&batches, &tp)?;
                }
                Ok(ProduceItem { index, tp, batches, commit_wait_ms: None })
            }
            Err(BatchError::TooLarge(n)) => Err(PartitionError::BatchTooLarge(n)),
            Err(e) => Err(PartitionError::CorruptBatch(e)),
        },
    }
}

/// The response, in the request's topic and partition order.
fn response(
    slots: Vec<TopicSlot>,
    mut results: Vec<Option<Result<Appended, PartitionError>>>,
    version: i16,
) -> ProduceResponse {
    let responses = slots
        .into_iter()
        .map(|slot| {
            let partition_responses = slot
                .partitions
                .iter()
                .map(|(partition, at)| {
                    let r = results[*at].take().expect("every partition has a result");
                    partition_response(*partition, &r, version)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(slot.name)
                .with_topic_id(slot.id)
                .with_partition_responses(partition_responses)
        })
        .collect();
    ProduceResponse::default().with_responses(responses).with_throttle_time_ms(0)
}

/// KIP-951 (v10+): the endpoints of the leaders named in `CurrentLeader` hints.
fn node_endpoints(ctx: &Ctx, resp: &ProduceResponse) -> Vec<NodeEndpoint> {
    let named = resp.responses.iter().flat_map(|t| &t.partition_responses).map(|p| p.current_leader.leader_id.0);
    leader_hints::endpoints(ctx, named)
        .into_iter()
        .map(|(id, host, port)| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(None)
        })
        .collect()
}

fn partition_response(partition: i32, r: &Result<Appended, PartitionError>, version: i16) -> PartitionProduceResponse {
    let (code, message) = code_and_message(r);
    let (base, start, append_time) = match r {
        Ok(a) => (a.base_offset.0, a.log_start.0, a.log_append_time),
        Err(_) => (-1, -1, -1),
    };
    let record_errors = match r {
        Err(PartitionError::InvalidRecords(errors)) if version >= 8 => errors
            .errors()
            .iter()
            .map(|e| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(e.batch_index)
                    .with_batch_index_error_message(Some(StrBytes::from_string(e.message.clone())))
            })
            .collect(),
        _ => Vec::new(),
    };
    // KIP-951 (a tagged field from v10): only NOT_LEADER_OR_FOLLOWER names the leader, as in
    // Kafka's `KafkaApis.handleProduceRequest`.
    let current_leader = match r {
        Err(e @ PartitionError::NotLeaderOrFollower { .. }) if version >= 10 => leader_hints::hint(e),
        _ => None,
    };
    let current_leader = current_leader.map_or_else(LeaderIdAndEpoch::default, |(id, epoch)| {
        LeaderIdAndEpoch::default().with_leader_id(BrokerId(id)).with_leader_epoch(epoch)
    });
    PartitionProduceResponse::default()
        .with_current_leader(current_leader)
        .with_index(partition)
        .with_record_errors(record_errors)
        .with_error_code(code)
        .with_base_offset(base)
        .with_log_append_time_ms(append_time)
        .with_log_start_offset(if version >= 5 { start } else { -1 })
        .with_error_message(if version >= 8 { message.map(StrBytes::from_string) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Offset;

    #[test]
    fn partition_answers_follow_the_version() {
        let ok = Ok(Appended { base_offset: Offset(10), log_start: Offset(3), log_append_time: -1 });
        let v4 = partition_response(2, &ok, 4);
        assert_eq!((v4.index, v4.error_code, v4.base_offset, v4.log_start_offset), (2, 0, 10, -1));
        let v5 = partition_response(2, &ok, 5);
        assert_eq!(v5.log_start_offset, 3);
        let err: Result<Appended, PartitionError> = Err(PartitionError::BatchTooLarge(9));
        let v7 = partition_response(0, &err, 7);
        assert_eq!((v7.base_offset, v7.error_message.is_none()), (-1, true), "no message before v8");
        let v8 = partition_response(0, &err, 8);
        assert_eq!(v8.error_code, crate::errors::code_and_message(&err).0);
        assert!(v8.error_message.is_some_and(|m| m.contains('9')));
    }
}
