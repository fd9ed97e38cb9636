//! DescribeProducers (key 61), version 0: the active producers of partitions
//! (`kafka-transactions.sh describe-producers`, `find-hanging`, and `abort --start-offset`,
//! which looks the producer of the open transaction up here).
//!
//! Contract: as Kafka's `handleDescribeProducersRequest`: a topic without READ is answered
//! TOPIC_AUTHORIZATION_FAILED and an unknown one UNKNOWN_TOPIC_OR_PARTITION for each of its
//! partitions; any broker holding a replica answers (Kafka reads the local log, leader or
//! follower), one not holding it NOT_LEADER_OR_FOLLOWER. Each producer: id, epoch, last
//! sequence, last write time, coordinator epoch (-1: not kept here, `txn::producers`) and the
//! first offset of its open transaction in the partition (-1 when none).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{ApiKey, DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;
use sluice_core::TopicPartition;
use sluice_shard::metadata::acl::op;
use sluice_shard::txn::producers::{describe, ActiveProducer, ProducersItem};
use sluice_shard::PartitionError;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DescribeProducers, name: "DescribeProducers", min_version: 0, max_version: 0, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeProducersRequest = decode_body(&req)?;
        let authz = crate::authz::Authz::new(&ctx, &req);
        let allowed: Vec<bool> = body.topics.iter().map(|t| authz.topic(op::READ, &t.name.0)).collect();
        let mut items = Vec::new();
        for t in body.topics.iter().zip(&allowed).filter(|(_, a)| **a).map(|(t, _)| t) {
            for p in &t.partition_indexes {
                items.push(ProducersItem { index: items.len(), tp: TopicPartition::new(t.name.0.to_string(), *p) });
            }
        }
        let mut results = describe(&ctx.shard, items).await.into_iter();
        let topics = body
            .topics
            .into_iter()
            .zip(allowed)
            .map(|(t, allowed)| {
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|p| {
                        let r = match allowed {
                            true => results.next().expect("one result per partition").1,
                            false => Err(PartitionError::TopicAuthorizationFailed),
                        };
                        partition(*p, r)
                    })
                    .collect();
                TopicResponse::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        Ok(reply_now(respond(&req, &DescribeProducersResponse::default().with_topics(topics))))
    }
    .boxed_local()
}

fn partition(index: i32, r: Result<Vec<ActiveProducer>, PartitionError>) -> PartitionResponse {
    let base = PartitionResponse::default().with_partition_index(index);
    match r {
        Err(e) => base.with_error_code(code(&e)).with_error_message(Some(StrBytes::from_string(e.to_string()))),
        Ok(producers) => base.with_error_code(0).with_active_producers(
            producers
                .into_iter()
                .map(|p| {
                    ProducerState::default()
                        .with_producer_id(ProducerId(p.producer_id))
                        .with_producer_epoch(i32::from(p.epoch))
                        .with_last_sequence(p.last_sequence)
                        .with_last_timestamp(p.last_timestamp)
                        .with_coordinator_epoch(p.coordinator_epoch)
                        .with_current_txn_start_offset(p.txn_start_offset)
                })
                .collect(),
        ),
    }
}
