//! SyncGroup (key 14), versions 0–5: the leader hands out assignments; every member gets its own.
//!
//! Contract: the assignments the group keeps are copied out of the request frame, never
//! sliced from it, so a frame's trailing bytes do not live as long as the member.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::group_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::groups::{self, SyncRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec { key: ApiKey::SyncGroup, name: "SyncGroup", min_version: 0, max_version: 5, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: SyncGroupRequest = decode_body(&req)?;
        let v = req.version;
        let group_id = body.group_id.0.to_string();
        if !crate::authz::Authz::new(&ctx, &req).group(sluice_shard::metadata::acl::op::READ, &group_id) {
            return Ok(reply_now(respond(
                &req,
                &SyncGroupResponse::default()
                    .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code()),
            )));
        }
        let sync = SyncRequest {
            group_id: group_id.clone(),
            generation_id: body.generation_id,
            member_id: body.member_id.to_string(),
            group_instance_id: body.group_instance_id.map(|s| s.to_string()),
            protocol_type: body.protocol_type.map(|s| s.to_string()),
            protocol_name: body.protocol_name.map(|s| s.to_string()),
            // Copied: a decoded assignment is a slice of the request frame, and the member
            // keeps it until the next rebalance.
            assignments: body
                .assignments
                .into_iter()
                .map(|a| (a.member_id.to_string(), bytes::Bytes::copy_from_slice(&a.assignment)))
                .collect(),
        };
        let reply = async move {
            let result = groups::ask(&ctx.shard, &group_id, sync).await;
            let resp = match result {
                Ok(s) => SyncGroupResponse::default()
                    .with_error_code(0)
                    .with_protocol_type(if v >= 5 { s.protocol_type.map(StrBytes::from_string) } else { None })
                    .with_protocol_name(if v >= 5 { s.protocol_name.map(StrBytes::from_string) } else { None })
                    .with_assignment(s.assignment),
                Err(e) => SyncGroupResponse::default().with_error_code(group_code(&e)),
            };
            respond(&req, &resp).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}
