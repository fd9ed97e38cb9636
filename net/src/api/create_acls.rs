//! CreateAcls (key 30), versions 1–3: adds ACL bindings (what `kafka-acls --add` and
//! `AdminClient.createAcls` send).
//!
//! Contract: one result per creation, in order. Without an authorizer every result is
//! SECURITY_DISABLED; a principal without ALTER on the cluster gets
//! CLUSTER_AUTHORIZATION_FAILED; a binding that is not concrete (ANY/MATCH/UNKNOWN codes, a
//! principal without `TYPE:`, an empty name, a cluster not named `kafka-cluster`) gets
//! INVALID_REQUEST with the reason. The others are one metadata change on shard 0
//! (`sluice_shard::admin::acls`): saved and published to every shard (a lone broker) or
//! committed through the metadata log (a cluster) before the answer.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::authz::Authz;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as K;
use sluice_shard::metadata::acl::{op, Acl};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::CreateAcls, name: "CreateAcls", min_version: 1, max_version: 3, handle };

fn failed(code: i16, message: String) -> AclCreationResult {
    AclCreationResult::default().with_error_code(code).with_error_message(Some(StrBytes::from_string(message)))
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: CreateAclsRequest = decode_body(&req)?;
        let authz = Authz::new(&ctx, &req);
        let n = body.creations.len();
        if let Some((code, why)) = authz.acl_api_refusal(op::ALTER) {
            let r = failed(code.code(), why.into());
            let resp = CreateAclsResponse::default().with_results(vec![r; n]);
            return Ok(reply_now(respond(&req, &resp)));
        }
        let mut results: Vec<Option<AclCreationResult>> = Vec::with_capacity(n);
        let mut valid = Vec::new();
        for c in body.creations {
            let acl = Acl {
                resource_type: c.resource_type,
                name: c.resource_name.to_string(),
                pattern_type: c.resource_pattern_type,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: c.operation,
                permission: c.permission_type,
            };
            match acl.check() {
                Ok(()) => {
                    results.push(None);
                    valid.push(acl);
                }
                Err(e) => results.push(Some(failed(K::InvalidRequest.code(), e.to_string()))),
            }
        }
        let mut applied = sluice_shard::admin::acls::create_acls(&ctx.shard, valid).await.into_iter();
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| match applied.next() {
                    Some(Ok(())) | None => AclCreationResult::default(),
                    Some(Err(e)) => failed(crate::errors::code(&e), e.to_string()),
                })
            })
            .collect();
        let resp = CreateAclsResponse::default().with_results(results);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
