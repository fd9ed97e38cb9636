//! ListGroups (key 16), versions 0–5: every group on every shard, filtered by state (v4+)
//! and type (v5+: "classic", "consumer" for KIP-848 groups, "share" for KIP-932 share groups).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::groups;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ListGroups, name: "ListGroups", min_version: 0, max_version: 5, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ListGroupsRequest = decode_body(&req)?;
        let v = req.version;
        let states: Vec<String> = body.states_filter.iter().map(|s| s.to_lowercase()).collect();
        let types: Vec<String> = body.types_filter.iter().map(|s| s.to_lowercase()).collect();
        let authz = crate::authz::Authz::new(&ctx, &req);
        let all = authz.cluster(sluice_shard::metadata::acl::op::DESCRIBE);
        let mut found = groups::list_all(&ctx.shard).await;
        found.extend(sluice_shard::share::list_all(&ctx.shard).await);
        let listed = found
            .into_iter()
            .filter(|g| all || authz.group(sluice_shard::metadata::acl::op::DESCRIBE, &g.group_id))
            .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
            .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                    .with_protocol_type(StrBytes::from_string(g.protocol_type))
                    .with_group_state(if v >= 4 { StrBytes::from_static_str(g.state) } else { StrBytes::default() })
                    .with_group_type(if v >= 5 { StrBytes::from_static_str(g.group_type) } else { StrBytes::default() })
            })
            .collect();
        let resp = ListGroupsResponse::default().with_error_code(0).with_groups(listed);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
