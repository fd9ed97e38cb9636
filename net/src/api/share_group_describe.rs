//! ShareGroupDescribe (key 77), version 1 (as Kafka 4.x): a share group's state, epochs and
//! members with their assignments.
//!
//! Contract: a group that is not a share group answers GROUP_ID_NOT_FOUND, as Kafka does; a
//! group without DESCRIBE is GROUP_AUTHORIZATION_FAILED. The assignor is "simple" (Kafka's
//! share-group assignor name); the assignment epoch is the group epoch (share groups need no
//! reconciliation).

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::group_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::share_group_describe_response::{
    Assignment as WireAssignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{ApiKey, ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_shard::groups::GroupError;
use sluice_shard::metadata::acl::op;
use sluice_shard::share::{self, group::GroupDescription};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ShareGroupDescribe, name: "ShareGroupDescribe", min_version: 1, max_version: 1, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ShareGroupDescribeRequest = decode_body(&req)?;
        let reply = async move {
            let mut groups = Vec::with_capacity(body.group_ids.len());
            for id in body.group_ids {
                let name = id.0.to_string();
                let allowed = crate::authz::Authz::new(&ctx, &req).group(op::DESCRIBE, &name);
                let g = if !allowed {
                    DescribedGroup::default().with_error_code(ResponseError::GroupAuthorizationFailed.code())
                } else {
                    described(&ctx, share::describe(&ctx.shard, &name).await)
                };
                groups.push(g.with_group_id(id));
            }
            respond(&req, &ShareGroupDescribeResponse::default().with_groups(groups)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

fn described(ctx: &Ctx, r: Result<Option<GroupDescription>, GroupError>) -> DescribedGroup {
    let d = match r {
        Err(e) => {
            return DescribedGroup::default()
                .with_error_code(group_code(&e))
                .with_error_message(Some(StrBytes::from_string(e.to_string())))
        }
        Ok(None) => {
            let e = GroupError::GroupIdNotFound;
            return DescribedGroup::default()
                .with_error_code(group_code(&e))
                .with_error_message(Some(StrBytes::from_static_str("Group is not a share group.")));
        }
        Ok(Some(d)) => d,
    };
    let members = d
        .members
        .into_iter()
        .map(|m| {
            let tps = super::consumer_group_heartbeat::assigned_topics(ctx, &m.assignment)
                .map(|(id, name, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(super::uuid(id))
                        .with_topic_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_partitions(ps)
                })
                .collect();
            Member::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_rack_id(m.rack_id.map(StrBytes::from_string))
                .with_member_epoch(m.member_epoch)
                .with_client_id(StrBytes::from_string(m.client_id))
                .with_client_host(StrBytes::from_string(m.client_host))
                .with_subscribed_topic_names(
                    m.subscribed.into_iter().map(|t| TopicName(StrBytes::from_string(t))).collect(),
                )
                .with_assignment(WireAssignment::default().with_topic_partitions(tps))
        })
        .collect();
    DescribedGroup::default()
        .with_group_state(StrBytes::from_static_str(d.state))
        .with_group_epoch(d.group_epoch)
        .with_assignment_epoch(d.group_epoch)
        .with_assignor_name(StrBytes::from_static_str("simple"))
        .with_members(members)
        .with_authorized_operations(i32::MIN)
}
