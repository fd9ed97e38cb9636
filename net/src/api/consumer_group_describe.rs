//! ConsumerGroupDescribe (key 69), versions 0–1 (as Kafka 4.x): a KIP-848 group's state,
//! epochs, assignor and members with their current and target assignments.
//!
//! Contract: a group that does not exist or is a classic group answers GROUP_ID_NOT_FOUND (the
//! admin client then falls back to DescribeGroups), as Kafka does. v1 adds each member's type
//! (1: a consumer-protocol member; sluice has no mixed groups). Authorization as Kafka 4.4: a
//! group without DESCRIBE is GROUP_AUTHORIZATION_FAILED (listed first), a group assigning a
//! topic the principal may not describe TOPIC_AUTHORIZATION_FAILED; authorized operations
//! when asked.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::group_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as WireAssignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_shard::groups::{
    self, Assignment, ConsumerDescribeRequest, ConsumerGroupDescription, ConsumerMemberDescription,
};
use sluice_shard::metadata::acl::{op, resource};
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ConsumerGroupDescribe,
    name: "ConsumerGroupDescribe",
    min_version: 0,
    max_version: 1,
    handle,
};

/// KIP-1099's member type of a consumer-protocol member.
const MEMBER_TYPE_CONSUMER: i8 = 1;
/// KIP-1099: a member using the classic protocol inside a consumer group (mixed membership).
const MEMBER_TYPE_CLASSIC: i8 = 0;

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ConsumerGroupDescribeRequest = decode_body(&req)?;
        let authz = crate::authz::Authz::new(&ctx, &req);
        // Kafka lists the groups refused DESCRIBE first (code alone), then the others.
        let (allowed, refused): (Vec<_>, Vec<_>) =
            body.group_ids.into_iter().partition(|g| authz.group(op::DESCRIBE, &g.0));
        let code = ResponseError::GroupAuthorizationFailed.code();
        let mut described: Vec<DescribedGroup> =
            refused.into_iter().map(|g| DescribedGroup::default().with_group_id(g).with_error_code(code)).collect();
        for g in allowed {
            let id = g.0.to_string();
            let base = DescribedGroup::default().with_group_id(g).with_authorized_operations(i32::MIN);
            let d = match groups::ask(&ctx.shard, &id, ConsumerDescribeRequest(id.clone())).await {
                Ok(d) => {
                    authorized(&authz, described_group(&ctx, base, d, req.version), body.include_authorized_operations)
                }
                Err(e) => base
                    .with_error_code(group_code(&e))
                    .with_error_message(Some(StrBytes::from_string(format!("group {id}: {e}")))),
            };
            described.push(d);
        }
        Ok(reply_now(respond(&req, &ConsumerGroupDescribeResponse::default().with_groups(described))))
    }
    .boxed_local()
}

/// As Kafka 4.4: a group whose members' assignments name a topic the principal may not
/// describe is answered TOPIC_AUTHORIZATION_FAILED without members; the others carry their
/// authorized operations when asked.
fn authorized(authz: &crate::authz::Authz, d: DescribedGroup, include_operations: bool) -> DescribedGroup {
    let mut topics = d.members.iter().flat_map(|m| {
        m.assignment.topic_partitions.iter().chain(&m.target_assignment.topic_partitions).map(|tp| &*tp.topic_name.0)
    });
    if topics.any(|t| !authz.topic(op::DESCRIBE, t)) {
        return DescribedGroup::default()
            .with_group_id(d.group_id)
            .with_error_code(ResponseError::TopicAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "The group has described topic(s) that the client is not authorized to describe.",
            )));
    }
    match include_operations {
        true => {
            let ops = authz.operations(resource::GROUP, &d.group_id.0);
            d.with_authorized_operations(ops)
        }
        false => d,
    }
}

fn described_group(ctx: &Ctx, base: DescribedGroup, d: ConsumerGroupDescription, version: i16) -> DescribedGroup {
    base.with_error_code(0)
        .with_group_state(StrBytes::from_static_str(d.state))
        .with_group_epoch(d.epoch)
        .with_assignment_epoch(d.assignment_epoch)
        .with_assignor_name(StrBytes::from_static_str(d.assignor))
        .with_members(d.members.into_iter().map(|m| member(ctx, m, version)).collect())
}

fn member(ctx: &Ctx, m: ConsumerMemberDescription, version: i16) -> Member {
    Member::default()
        .with_member_id(StrBytes::from_string(m.member_id))
        .with_instance_id(m.instance_id.map(StrBytes::from_string))
        .with_rack_id(m.rack_id.map(StrBytes::from_string))
        .with_member_epoch(m.member_epoch)
        .with_client_id(StrBytes::from_string(m.client_id))
        .with_client_host(StrBytes::from_string(m.client_host))
        .with_subscribed_topic_names(m.topics.into_iter().map(|t| TopicName(StrBytes::from_string(t))).collect())
        .with_subscribed_topic_regex(m.regex.map(StrBytes::from_string))
        .with_assignment(wire_assignment(ctx, &m.assignment))
        .with_target_assignment(wire_assignment(ctx, &m.target))
        .with_member_type(match (version >= 1, m.classic) {
            (false, _) => -1,
            (true, true) => MEMBER_TYPE_CLASSIC,
            (true, false) => MEMBER_TYPE_CONSUMER,
        })
}

fn wire_assignment(ctx: &Ctx, a: &Assignment) -> WireAssignment {
    let topic_partitions = super::consumer_group_heartbeat::assigned_topics(ctx, a)
        .map(|(id, name, ps)| {
            TopicPartitions::default()
                .with_topic_id(super::uuid(id))
                .with_topic_name(TopicName(StrBytes::from_string(name.clone())))
                .with_partitions(ps)
        })
        .collect();
    WireAssignment::default().with_topic_partitions(topic_partitions)
}
