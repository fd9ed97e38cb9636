//! LeaveGroup (key 13), versions 0–5: one member (v0–2) or several, by member or instance id.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::{group_code, group_result_code};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::groups::{self, LeaveRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::LeaveGroup, name: "LeaveGroup", min_version: 0, max_version: 5, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: LeaveGroupRequest = decode_body(&req)?;
        let group_id = body.group_id.0.to_string();
        if !crate::authz::Authz::new(&ctx, &req).group(sluice_shard::metadata::acl::op::READ, &group_id) {
            let resp = LeaveGroupResponse::default()
                .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
            return Ok(reply_now(respond(&req, &resp)));
        }
        let members: Vec<(String, Option<String>)> = if req.version >= 3 {
            body.members
                .iter()
                .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string())))
                .collect()
        } else {
            vec![(body.member_id.to_string(), None)]
        };
        let op = LeaveRequest { group_id: group_id.clone(), members: members.clone() };
        let result = groups::ask(&ctx.shard, &group_id, op).await;
        let resp = match result {
            Err(e) => LeaveGroupResponse::default().with_error_code(group_code(&e)),
            Ok(each) if req.version >= 3 => LeaveGroupResponse::default().with_error_code(0).with_members(
                members
                    .into_iter()
                    .zip(each)
                    .map(|((id, instance), r)| {
                        MemberResponse::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_group_instance_id(instance.map(StrBytes::from_string))
                            .with_error_code(group_result_code(&r))
                    })
                    .collect(),
            ),
            Ok(each) => LeaveGroupResponse::default().with_error_code(each.first().map(group_result_code).unwrap_or(0)),
        };
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
