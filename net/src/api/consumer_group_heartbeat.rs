//! ConsumerGroupHeartbeat (key 68), versions 0–1 (as Kafka 4.x): the KIP-848 consumer
//! protocol's one request — join (epoch 0), heartbeat, reconcile, leave (epoch -1, or -2 for a
//! static member that will come back).
//!
//! Contract: topic ids in the request are mapped to names with this shard's metadata (an
//! unknown id is dropped from the owned partitions, as Kafka ignores topics it no longer
//! knows) and the assignment is answered with ids. v1 clients bring their own member id
//! (KIP-1082); a v0 client joining without one gets the coordinator's. The answer is sent
//! after the group's record is durable when the heartbeat changed the group. As Kafka 4.4: READ
//! on the group (else GROUP_AUTHORIZATION_FAILED) and DESCRIBE on each subscribed topic name
//! (else TOPIC_AUTHORIZATION_FAILED), both answered with the code alone. The connection's
//! principal and address go with the heartbeat: when it resolves the group's regular
//! expressions, the coordinator leaves out the matched topics that principal may not DESCRIBE
//! (Kafka's `TopicRegexResolver`; `sluice_shard::groups::consumer`).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::group_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment as WireAssignment, TopicPartitions};
use kafka_protocol::messages::{ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_shard::groups::{self, Assignment, ConsumerHeartbeatRequest, ConsumerHeartbeatResponse, GroupError};
use sluice_shard::metadata::acl::op;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ConsumerGroupHeartbeat,
    name: "ConsumerGroupHeartbeat",
    min_version: 0,
    max_version: 1,
    handle,
};

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ConsumerGroupHeartbeatRequest = decode_body(&req)?;
        if let Some(e) = refusal(&ctx, &req, &body) {
            // Kafka answers the code alone.
            return Ok(reply_now(respond(&req, &ConsumerGroupHeartbeatResponse::default().with_error_code(e.code()))));
        }
        let beat = to_request(&ctx, &req, body);
        let reply = async move {
            let group_id = beat.group_id.clone();
            let result = groups::ask(&ctx.shard, &group_id, beat).await;
            respond(&req, &to_response(&ctx, result)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

/// Kafka's refusal of a heartbeat: READ on the group, then DESCRIBE on every topic the
/// subscription names (a regular expression's topics are filtered by the coordinator).
fn refusal(ctx: &Ctx, req: &Request, body: &ConsumerGroupHeartbeatRequest) -> Option<ResponseError> {
    let authz = crate::authz::Authz::new(ctx, req);
    if !authz.group(op::READ, &body.group_id.0) {
        return Some(ResponseError::GroupAuthorizationFailed);
    }
    let names = body.subscribed_topic_names.iter().flatten().map(|t| &*t.0);
    match authz.refused_topics(op::DESCRIBE, names).is_empty() {
        true => None,
        false => Some(ResponseError::TopicAuthorizationFailed),
    }
}

fn to_request(ctx: &Ctx, req: &Request, body: ConsumerGroupHeartbeatRequest) -> ConsumerHeartbeatRequest {
    let meta = ctx.shard.metadata();
    let owned = body.topic_partitions.map(|tps| {
        let mut a = Assignment::new();
        for tp in tps {
            if let Some(name) = meta.topic_by_id(tp.topic_id.as_bytes()) {
                a.entry(name.to_string()).or_default().extend(tp.partitions);
            }
        }
        a
    });
    ConsumerHeartbeatRequest {
        group_id: body.group_id.0.to_string(),
        member_id: body.member_id.to_string(),
        member_epoch: body.member_epoch,
        instance_id: body.instance_id.map(|s| s.to_string()),
        rack_id: body.rack_id.map(|s| s.to_string()),
        rebalance_timeout_ms: body.rebalance_timeout_ms,
        subscribed_topic_names: body.subscribed_topic_names.map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: body.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: body.server_assignor.map(|s| s.to_string()),
        owned,
        client_id: req.client_id.clone().unwrap_or_default(),
        client_host: req.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
        principal: format!("User:{}", ctx.session.borrow().principal.as_deref().unwrap_or("ANONYMOUS")),
        client_address: req.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        version: req.version,
    }
}

fn to_response(ctx: &Ctx, result: Result<ConsumerHeartbeatResponse, GroupError>) -> ConsumerGroupHeartbeatResponse {
    match result {
        Ok(r) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(0)
            .with_member_id(Some(StrBytes::from_string(r.member_id)))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
            .with_assignment(r.assignment.map(|a| wire_assignment(ctx, &a))),
        Err(e) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(group_code(&e))
            .with_error_message(Some(StrBytes::from_string(e.to_string())))
            .with_member_epoch(-1),
    }
}

/// An assignment by topic id (a topic deleted meanwhile is left out).
fn wire_assignment(ctx: &Ctx, a: &Assignment) -> WireAssignment {
    let topic_partitions = assigned_topics(ctx, a)
        .map(|(id, _, ps)| TopicPartitions::default().with_topic_id(super::uuid(id)).with_partitions(ps))
        .collect();
    WireAssignment::default().with_topic_partitions(topic_partitions)
}

/// An assignment's topics this shard knows, as (topic id, name, partitions): the part of the
/// answer that ConsumerGroupHeartbeat and ConsumerGroupDescribe share (their wire types differ).
pub(super) fn assigned_topics<'a>(
    ctx: &Ctx,
    a: &'a Assignment,
) -> impl Iterator<Item = ([u8; 16], &'a String, Vec<i32>)> + 'a {
    let meta = ctx.shard.metadata();
    a.iter().filter_map(move |(name, ps)| Some((meta.topics.get(name)?.id, name, ps.iter().copied().collect())))
}
