//! JoinGroup (key 11), versions 0–9: join (or rejoin) a group and wait for the rebalance.
//!
//! Contract: from v4 a member without an id gets MEMBER_ID_REQUIRED with its id and must
//! rejoin with it; static members (group.instance.id) skip that and, when they come back to a
//! stable group, get their place back without a rebalance. The answer arrives in phase 2, so
//! a join waiting for other members never blocks the connection. What the group keeps
//! (protocol metadata, ids) is copied out of the request frame, never sliced from it.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::group_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::groups::{self, GroupError, JoinRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec { key: ApiKey::JoinGroup, name: "JoinGroup", min_version: 0, max_version: 9, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: JoinGroupRequest = decode_body(&req)?;
        let v = req.version;
        let group_id = body.group_id.0.to_string();
        if !crate::authz::Authz::new(&ctx, &req).group(sluice_shard::metadata::acl::op::READ, &group_id) {
            return Ok(reply_now(respond(
                &req,
                &JoinGroupResponse::default()
                    .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code())
                    .with_generation_id(-1)
                    .with_protocol_name(if v >= 7 { None } else { Some(StrBytes::default()) }),
            )));
        }
        let join = JoinRequest {
            group_id: group_id.clone(),
            session_timeout_ms: body.session_timeout_ms,
            rebalance_timeout_ms: if v >= 1 { body.rebalance_timeout_ms } else { body.session_timeout_ms },
            member_id: body.member_id.to_string(),
            group_instance_id: body.group_instance_id.map(|s| s.to_string()),
            protocol_type: body.protocol_type.to_string(),
            // Copied: decoded metadata is a slice of the request frame, and a member keeps it
            // as long as it lives (trailing bytes in the frame would stay with it).
            protocols: body
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), bytes::Bytes::copy_from_slice(&p.metadata)))
                .collect(),
            client_id: req.client_id.clone().unwrap_or_default(),
            client_host: req.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
            require_known_member_id: v >= 4,
        };
        let reply = async move {
            let result = groups::ask(&ctx.shard, &group_id, join).await;
            let resp = match result {
                Ok(j) => JoinGroupResponse::default()
                    .with_error_code(0)
                    .with_generation_id(j.generation_id)
                    .with_protocol_type(if v >= 7 { j.protocol_type.map(StrBytes::from_string) } else { None })
                    .with_protocol_name(j.protocol_name.map(StrBytes::from_string))
                    .with_leader(StrBytes::from_string(j.leader))
                    .with_skip_assignment(v >= 9 && j.skip_assignment)
                    .with_member_id(StrBytes::from_string(j.member_id))
                    .with_members(
                        j.members
                            .into_iter()
                            .map(|m| {
                                JoinGroupResponseMember::default()
                                    .with_member_id(StrBytes::from_string(m.member_id))
                                    .with_group_instance_id(if v >= 5 {
                                        m.group_instance_id.map(StrBytes::from_string)
                                    } else {
                                        None
                                    })
                                    .with_metadata(m.metadata)
                            })
                            .collect(),
                    ),
                Err(e) => {
                    let member = match &e {
                        GroupError::MemberIdRequired(id) => id.clone(),
                        _ => String::new(),
                    };
                    JoinGroupResponse::default()
                        .with_error_code(group_code(&e))
                        .with_generation_id(-1)
                        .with_protocol_name(if v >= 7 { None } else { Some(StrBytes::default()) })
                        .with_member_id(StrBytes::from_string(member))
                }
            };
            respond(&req, &resp).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}
