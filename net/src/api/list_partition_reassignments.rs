//! ListPartitionReassignments (key 46), version 0: the reassignments in progress
//! (`kafka-reassign-partitions --verify` / `--list`).
//!
//! Contract: DESCRIBE on the cluster is required (else CLUSTER_AUTHORIZATION_FAILED, as
//! Kafka). Answered from this broker's applied metadata snapshot (every broker applies the
//! same metadata log, so any broker answers as the controller would, up to the records it
//! has not applied yet): for every partition named (every partition for a null list) that has
//! a reassignment in progress, its replicas (the target followed by the replicas leaving),
//! `adding_replicas` and `removing_replicas`, as KRaft's controller lists them. Partitions
//! without one, and unknown topics or partitions, are left out, as Kafka does.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::PartitionId;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ListPartitionReassignments,
    name: "ListPartitionReassignments",
    min_version: 0,
    max_version: 0,
    handle,
};

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ListPartitionReassignmentsRequest = decode_body(&req)?;
        let allowed = crate::authz::Authz::new(&ctx, &req).cluster(sluice_shard::metadata::acl::op::DESCRIBE);
        let resp = if allowed {
            ListPartitionReassignmentsResponse::default().with_topics(ongoing(&ctx, body.topics))
        } else {
            ListPartitionReassignmentsResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                .with_error_message(Some(StrBytes::from_static_str("Cluster authorization failed.")))
        };
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}

fn ongoing(
    ctx: &Ctx,
    topics: Option<
        Vec<kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics>,
    >,
) -> Vec<OngoingTopicReassignment> {
    let meta = ctx.shard.metadata();
    let named: Vec<(String, Vec<i32>)> = match topics {
        Some(ts) => ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect(),
        None => meta
            .replication
            .iter()
            .map(|(name, r)| (name.clone(), (0..r.partitions.len()).filter_map(|p| i32::try_from(p).ok()).collect()))
            .collect(),
    };
    let ids = |v: &[i32]| v.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
    let me = ctx.node_id().0;
    named
        .into_iter()
        .filter_map(|(name, parts)| {
            let partitions: Vec<OngoingPartitionReassignment> = parts
                .into_iter()
                .filter_map(|p| meta.partition(&name, PartitionId(p), me).filter(|s| s.moving()).map(|s| (p, s)))
                .map(|(p, s)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(p)
                        .with_replicas(ids(&s.replicas))
                        .with_adding_replicas(ids(&s.adding))
                        .with_removing_replicas(ids(&s.removing))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
        })
        .collect()
}
