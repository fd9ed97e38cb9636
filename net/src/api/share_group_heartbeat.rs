//! ShareGroupHeartbeat (key 76), version 1 (as Kafka 4.x): join (epoch 0), heartbeat, leave
//! (epoch -1) of a share group (KIP-932).
//!
//! Contract: the client brings its own member id (v1). Subscribed topics are by name, the
//! assignment is answered by topic id, only when it changed for the member (or on join). As
//! Kafka: READ on the group (else GROUP_AUTHORIZATION_FAILED) and DESCRIBE on each subscribed
//! topic (else TOPIC_AUTHORIZATION_FAILED), answered with the code alone. Membership lives on
//! the group's coordinator shard (`sluice_shard::share`).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::group_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::share_group_heartbeat_response::{Assignment as WireAssignment, TopicPartitions};
use kafka_protocol::messages::{ApiKey, ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_shard::groups::{Assignment, GroupError};
use sluice_shard::metadata::acl::op;
use sluice_shard::share::{self, group::HeartbeatRequest, group::HeartbeatResponse};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ShareGroupHeartbeat, name: "ShareGroupHeartbeat", min_version: 1, max_version: 1, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ShareGroupHeartbeatRequest = decode_body(&req)?;
        if let Some(e) = refusal(&ctx, &req, &body) {
            return Ok(reply_now(respond(&req, &ShareGroupHeartbeatResponse::default().with_error_code(e.code()))));
        }
        let beat = HeartbeatRequest {
            group_id: body.group_id.0.to_string(),
            member_id: body.member_id.to_string(),
            member_epoch: body.member_epoch,
            rack_id: body.rack_id.map(|s| s.to_string()),
            subscribed_topic_names: body
                .subscribed_topic_names
                .map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect()),
            client_id: req.client_id.clone().unwrap_or_default(),
            client_host: req.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
        };
        let reply = async move {
            let result = share::heartbeat(&ctx.shard, beat).await;
            respond(&req, &to_response(&ctx, result)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

fn refusal(ctx: &Ctx, req: &Request, body: &ShareGroupHeartbeatRequest) -> Option<ResponseError> {
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

fn to_response(ctx: &Ctx, result: Result<HeartbeatResponse, GroupError>) -> ShareGroupHeartbeatResponse {
    match result {
        Ok(r) => ShareGroupHeartbeatResponse::default()
            .with_member_id(Some(StrBytes::from_string(r.member_id)))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
            .with_assignment(r.assignment.map(|a| wire_assignment(ctx, &a))),
        Err(e) => ShareGroupHeartbeatResponse::default()
            .with_error_code(group_code(&e))
            .with_error_message(Some(StrBytes::from_string(e.to_string())))
            .with_member_epoch(-1),
    }
}

fn wire_assignment(ctx: &Ctx, a: &Assignment) -> WireAssignment {
    let topic_partitions = super::consumer_group_heartbeat::assigned_topics(ctx, a)
        .map(|(id, _, ps)| TopicPartitions::default().with_topic_id(super::uuid(id)).with_partitions(ps))
        .collect();
    WireAssignment::default().with_topic_partitions(topic_partitions)
}
