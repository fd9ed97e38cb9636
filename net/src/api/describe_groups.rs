//! DescribeGroups (key 15), versions 0–6: state, protocol, members and their assignments.
//!
//! Contract: an unknown group is described as "Dead" with no error before v6, and gets
//! GROUP_ID_NOT_FOUND from v6, as Kafka answers.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{ApiKey, DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_shard::groups::{self, DescribeRequest};
use sluice_shard::metadata::acl::op::DESCRIBE;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DescribeGroups, name: "DescribeGroups", min_version: 0, max_version: 6, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeGroupsRequest = decode_body(&req)?;
        let v = req.version;
        let mut described = Vec::with_capacity(body.groups.len());
        let authz = crate::authz::Authz::new(&ctx, &req);
        for g in body.groups {
            if !authz.group(DESCRIBE, &g.0) {
                let refused = DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code())
                    .with_authorized_operations(i32::MIN);
                described.push(refused);
                continue;
            }
            let answer = groups::ask(&ctx.shard, &g.0, DescribeRequest(g.0.to_string())).await;
            let ops = if v >= 3 && body.include_authorized_operations {
                authz.operations(sluice_shard::metadata::acl::resource::GROUP, &g.0)
            } else {
                i32::MIN
            };
            let base = DescribedGroup::default().with_group_id(g).with_authorized_operations(ops);
            let d = match answer {
                Ok(Some(d)) => base
                    .with_error_code(0)
                    .with_group_state(StrBytes::from_static_str(d.state))
                    .with_protocol_type(StrBytes::from_string(d.protocol_type))
                    .with_protocol_data(StrBytes::from_string(d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(StrBytes::from_string(m.member_id))
                                    .with_group_instance_id(if v >= 4 {
                                        m.group_instance_id.map(StrBytes::from_string)
                                    } else {
                                        None
                                    })
                                    .with_client_id(StrBytes::from_string(m.client_id))
                                    .with_client_host(StrBytes::from_string(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                Ok(None) if v >= 6 => base
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(StrBytes::from_static_str("group not found")))
                    .with_group_state(StrBytes::from_static_str("Dead")),
                Ok(None) => base.with_error_code(0).with_group_state(StrBytes::from_static_str("Dead")),
                Err(e) => base.with_error_code(crate::errors::group_code(&e)),
            };
            described.push(d);
        }
        Ok(reply_now(respond(&req, &DescribeGroupsResponse::default().with_groups(described))))
    }
    .boxed_local()
}
