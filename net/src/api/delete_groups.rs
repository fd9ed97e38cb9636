//! DeleteGroups (key 42), versions 0–2: removes empty groups and their committed offsets (a
//! share group: its share-partitions' state on every owner).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::group_result_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse};
use sluice_shard::groups::{self, DeleteRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DeleteGroups, name: "DeleteGroups", min_version: 0, max_version: 2, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DeleteGroupsRequest = decode_body(&req)?;
        let mut results = Vec::with_capacity(body.groups_names.len());
        let authz = crate::authz::Authz::new(&ctx, &req);
        for g in body.groups_names {
            if !authz.group(sluice_shard::metadata::acl::op::DELETE, &g.0) {
                let code = kafka_protocol::ResponseError::GroupAuthorizationFailed.code();
                results.push(DeletableGroupResult::default().with_group_id(g).with_error_code(code));
                continue;
            }
            // A share group (KIP-932) first; else the classic/consumer groups.
            let r = match sluice_shard::share::delete(&ctx.shard, &g.0).await {
                Ok(true) => Ok(()),
                Ok(false) => groups::ask(&ctx.shard, &g.0, DeleteRequest(g.0.to_string())).await,
                Err(e) => Err(e),
            };
            results.push(DeletableGroupResult::default().with_group_id(g).with_error_code(group_result_code(&r)));
        }
        Ok(reply_now(respond(&req, &DeleteGroupsResponse::default().with_results(results))))
    }
    .boxed_local()
}
