//! AlterPartitionReassignments (key 45), versions 0–1: start, change or cancel partition
//! reassignments (`kafka-reassign-partitions --execute` / `--cancel`).
//!
//! Contract: CLUSTER ALTER is required (else CLUSTER_AUTHORIZATION_FAILED for the request and
//! every partition, as Kafka). The partitions are decided together by shard 0 of this broker
//! as a metadata change, against the controller's caught-up snapshot, and their records go
//! through the metadata log (forwarded to its leader when needed, as Kafka 4 brokers forward
//! to the controller); answered once the records applied here. Per-partition errors are the
//! controller's (`sluice_shard::admin::reassign`): UNKNOWN_TOPIC_OR_PARTITION,
//! INVALID_REPLICA_ASSIGNMENT (empty, duplicate or unknown broker, and sluice's single-replica
//! partitions), INVALID_REPLICATION_FACTOR (v1's `allow_replication_factor_change` false and
//! another size), NO_REASSIGNMENT_IN_PROGRESS (a null list where nothing moves),
//! NOT_CONTROLLER (the metadata log did not take it: retriable). The members a target may name
//! are every broker of `controller_quorum_voters` (this broker alone without peers).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::TopicPartition;
use sluice_shard::msg::ReassignTarget;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::AlterPartitionReassignments,
    name: "AlterPartitionReassignments",
    min_version: 0,
    max_version: 1,
    handle,
};

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: AlterPartitionReassignmentsRequest = decode_body(&req)?;
        let allowed = crate::authz::Authz::new(&ctx, &req).cluster(sluice_shard::metadata::acl::op::ALTER);
        let items: Vec<ReassignTarget> = body
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| ReassignTarget {
                    tp: TopicPartition::new(t.name.0.to_string(), p.partition_index),
                    target: p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                })
            })
            .collect();
        let results: Vec<(i16, Option<String>)> = if !allowed {
            let denied = ResponseError::ClusterAuthorizationFailed;
            vec![(denied.code(), Some("Cluster authorization failed.".into())); items.len()]
        } else {
            let allow_rf_change = req.version < 1 || body.allow_replication_factor_change;
            let members = ctx.cluster.member_ids().into_iter().map(|n| n.0).collect();
            let answers = sluice_shard::admin::reassign::alter(&ctx.shard, items, members, allow_rf_change).await;
            answers.into_iter().map(|r| r.map_or_else(|e| (code(&e), Some(e.to_string())), |()| (0, None))).collect()
        };
        let mut results = results.into_iter();
        let responses = body
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let (error_code, message) = results.next().expect("one result per partition");
                        ReassignablePartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error_code)
                            .with_error_message(message.map(StrBytes::from_string))
                    })
                    .collect();
                ReassignableTopicResponse::default().with_name(t.name.clone()).with_partitions(partitions)
            })
            .collect();
        let mut resp = AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(body.allow_replication_factor_change)
            .with_responses(responses);
        if !allowed {
            resp = resp
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                .with_error_message(Some(StrBytes::from_static_str("Cluster authorization failed.")));
        }
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
