//! WriteTxnMarkers (key 27), version 1: COMMIT/ABORT markers written on a client's request —
//! what `Admin.abortTransaction` (`kafka-transactions.sh abort`) sends to a partition's leader
//! to end a hanging transaction. sluice's own coordinators send their markers over the peer
//! links instead (`shard/src/txn/markers.rs`).
//!
//! Contract:
//! - Authorization as Kafka's `handleWriteTxnMarkersRequest`: ALTER or CLUSTER_ACTION on the
//!   cluster, else every partition is answered CLUSTER_AUTHORIZATION_FAILED.
//! - Each marker goes through the same append path as the coordinator's markers (acks=all: a
//!   replicated partition's marker is answered at its Raft commit, at most
//!   `COORDINATOR_APPEND_TIMEOUT_MS` later); the partition's transaction index takes it as any
//!   marker, so the last stable offset moves past the ended transaction. A partition not led
//!   here is answered NOT_LEADER_OR_FOLLOWER, an unknown one UNKNOWN_TOPIC_OR_PARTITION.
//! - A marker older than the producer's epoch in the partition is refused
//!   INVALID_PRODUCER_EPOCH (Kafka's `ProducerAppendInfo.checkProducerEpoch`), checked against
//!   the partition's producer state just before the append. The coordinator epoch is not
//!   checked (not kept per producer here, `txn::producers`).
//! - Markers for `__consumer_offsets` partitions are answered INVALID_REQUEST: staged offsets
//!   are completed by their group coordinator through the transaction coordinator, never by a
//!   control batch in that topic here.
//! - Every marker written is logged at info (producer, epoch, result, partition, offset).

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use sluice_core::limits::COORDINATOR_APPEND_TIMEOUT_MS;
use sluice_core::{batch, TopicPartition};
use sluice_shard::metadata::acl::op;
use sluice_shard::msg::{Acks, ProduceItem};
use sluice_shard::txn::producers::{describe, ProducersItem};
use sluice_shard::PartitionError;
use std::collections::HashMap;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::WriteTxnMarkers, name: "WriteTxnMarkers", min_version: 1, max_version: 1, handle };

/// One partition of one marker of the request.
struct Slot {
    marker: usize,
    tp: TopicPartition,
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: WriteTxnMarkersRequest = decode_body(&req)?;
        let authz = crate::authz::Authz::new(&ctx, &req);
        let permitted = authz.cluster(op::ALTER) || authz.cluster(op::CLUSTER_ACTION);
        let reply = async move {
            let slots: Vec<Slot> = body
                .markers
                .iter()
                .enumerate()
                .flat_map(|(m, marker)| {
                    marker.topics.iter().flat_map(move |t| {
                        t.partition_indexes
                            .iter()
                            .map(move |p| Slot { marker: m, tp: TopicPartition::new(t.name.0.to_string(), *p) })
                    })
                })
                .collect();
            let results = if permitted {
                write(&ctx, &body, &slots).await
            } else {
                slots.iter().map(|_| Err(PartitionError::ClusterAuthorizationFailed)).collect()
            };
            let resp = response(&body, &slots, &results);
            respond(&req, &resp).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

/// Checks and appends every slot's marker; one result per slot, in order.
async fn write(ctx: &Rc<Ctx>, body: &WriteTxnMarkersRequest, slots: &[Slot]) -> Vec<Result<(), PartitionError>> {
    let mut results: Vec<Result<(), PartitionError>> = slots
        .iter()
        .map(|s| match s.tp.topic.as_str() {
            sluice_shard::groups::OFFSETS_TOPIC => Err(PartitionError::InvalidRequest(
                "markers for __consumer_offsets are written by the transaction coordinator".into(),
            )),
            _ => Ok(()),
        })
        .collect();
    // The producers' epochs where the markers go (and whether the partitions are here).
    let mut distinct: Vec<TopicPartition> = Vec::new();
    let mut at: HashMap<TopicPartition, usize> = HashMap::new();
    for s in slots.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(s, _)| s) {
        at.entry(s.tp.clone()).or_insert_with(|| {
            distinct.push(s.tp.clone());
            distinct.len() - 1
        });
    }
    let asked = distinct.iter().enumerate().map(|(index, tp)| ProducersItem { index, tp: tp.clone() }).collect();
    let states = describe(&ctx.shard, asked).await;
    let now = sluice_core::clock::now_ms();
    let mut items: Vec<ProduceItem> = Vec::new();
    let mut item_of: HashMap<TopicPartition, usize> = HashMap::new();
    let mut slot_item: Vec<Option<usize>> = vec![None; slots.len()];
    for (i, s) in slots.iter().enumerate() {
        if results[i].is_err() {
            continue;
        }
        let m = &body.markers[s.marker];
        let state = &states[at[&s.tp]].1;
        let current = match state {
            Err(e) => {
                results[i] = Err(e.clone());
                continue;
            }
            Ok(producers) => producers.iter().find(|p| p.producer_id == m.producer_id.0).map(|p| p.epoch),
        };
        if let Some(current) = current.filter(|c| m.producer_epoch < *c) {
            results[i] = Err(PartitionError::InvalidProducerEpoch(format!(
                "marker epoch {} is older than producer {}'s epoch {current}",
                m.producer_epoch, m.producer_id.0
            )));
            continue;
        }
        let marker = Bytes::from(sluice_shard::txn::partition::build_marker(
            m.producer_id.0,
            m.producer_epoch,
            m.transaction_result,
            m.coordinator_epoch,
            now,
        ));
        let header = batch::validate(&marker).expect("a marker built here is a valid batch");
        let k = *item_of.entry(s.tp.clone()).or_insert_with(|| {
            items.push(ProduceItem {
                index: items.len(),
                tp: s.tp.clone(),
                batches: Vec::new(),
                commit_wait_ms: Some(COORDINATOR_APPEND_TIMEOUT_MS),
            });
            items.len() - 1
        });
        items[k].batches.push((header, marker));
        slot_item[i] = Some(k);
    }
    let appended = sluice_shard::produce::produce(&ctx.shard, Acks::All, items).await.await;
    let by_item: HashMap<usize, Result<sluice_shard::msg::Appended, PartitionError>> = appended.into_iter().collect();
    for (i, s) in slots.iter().enumerate() {
        let Some(k) = slot_item[i] else { continue };
        let m = &body.markers[s.marker];
        results[i] = match by_item.get(&k) {
            Some(Ok(a)) => {
                tracing::info!(producer_id = m.producer_id.0, epoch = m.producer_epoch, commit = m.transaction_result,
                    partition = %s.tp, base_offset = a.base_offset.0, "transaction marker written on a client's request");
                Ok(())
            }
            Some(Err(e)) => Err(e.clone()),
            None => Err(PartitionError::UnknownTopicOrPartition),
        };
    }
    results
}

fn response(
    body: &WriteTxnMarkersRequest,
    slots: &[Slot],
    results: &[Result<(), PartitionError>],
) -> WriteTxnMarkersResponse {
    let mut next = slots.iter().zip(results);
    let markers = body
        .markers
        .iter()
        .map(|m| {
            let topics = m
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            let (_, r) = next.next().expect("one result per partition");
                            let error_code = r.as_ref().err().map_or(0, code);
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(*p)
                                .with_error_code(error_code)
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default().with_name(t.name.clone()).with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(topics)
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}
