//! ConsumerGroupDescribe (key 69), versions 0–1 (as Kafka 4.x): a KIP-848 group's state,
//! epochs, assignor and members with their current and target assignments.
//!
//! Contract: a group that does not exist or is a classic group answers GROUP_ID_NOT_FOUND (the
//! admin client then falls back to DescribeGroups), as Kafka does. v1 adds each member's type
//! (1: a consumer-protocol member; sluice has no mixed groups).

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
use sluice_shard::groups::{
    self, Assignment, ConsumerDescribeRequest, ConsumerGroupDescription, ConsumerMemberDescription,
};
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

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ConsumerGroupDescribeRequest = decode_body(&req)?;
        let mut described = Vec::with_capacity(body.group_ids.len());
        for g in body.group_ids {
            let id = g.0.to_string();
            let base = DescribedGroup::default().with_group_id(g).with_authorized_operations(i32::MIN);
            let d = match groups::ask(&ctx.shard, &id, ConsumerDescribeRequest(id.clone())).await {
                Ok(d) => described_group(&ctx, base, d, req.version),
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
        .with_member_type(if version >= 1 { MEMBER_TYPE_CONSUMER } else { -1 })
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
