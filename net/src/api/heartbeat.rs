//! Heartbeat (key 12), versions 0–4: keeps a member alive; tells it when to rejoin.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::group_result_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};
use sluice_shard::groups::{self, MemberRef};
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec { key: ApiKey::Heartbeat, name: "Heartbeat", min_version: 0, max_version: 4, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: HeartbeatRequest = decode_body(&req)?;
        let group_id = body.group_id.0.to_string();
        if !crate::authz::Authz::new(&ctx, &req).group(sluice_shard::metadata::acl::op::READ, &group_id) {
            return Ok(reply_now(respond(
                &req,
                &HeartbeatResponse::default()
                    .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code()),
            )));
        }
        let member = MemberRef {
            group_id: group_id.clone(),
            generation_id: body.generation_id,
            member_id: body.member_id.to_string(),
            group_instance_id: body.group_instance_id.map(|s| s.to_string()),
        };
        let result = groups::ask(&ctx.shard, &group_id, groups::HeartbeatRequest(member)).await;
        let resp = HeartbeatResponse::default().with_error_code(group_result_code(&result));
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
