//! DeleteAcls (key 31), versions 1–3: removes the ACL bindings each filter selects (what
//! `kafka-acls --remove` and `AdminClient.deleteAcls` send).
//!
//! Contract: one result per filter, listing the bindings it removed. Without an authorizer
//! every result is SECURITY_DISABLED; a principal without ALTER on the cluster gets
//! CLUSTER_AUTHORIZATION_FAILED; a filter with an unknown code is INVALID_REQUEST. The valid
//! filters are one metadata change on shard 0 (`sluice_shard::admin::acls`), applied
//! everywhere before the answer.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::authz::Authz;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::{ApiKey, DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as K;
use sluice_shard::metadata::acl::{op, Acl};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DeleteAcls, name: "DeleteAcls", min_version: 1, max_version: 3, handle };

fn failed(code: i16, message: String) -> DeleteAclsFilterResult {
    DeleteAclsFilterResult::default().with_error_code(code).with_error_message(Some(StrBytes::from_string(message)))
}

fn matching(a: Acl) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(a.resource_type)
        .with_resource_name(StrBytes::from_string(a.name))
        .with_pattern_type(a.pattern_type)
        .with_principal(StrBytes::from_string(a.principal))
        .with_host(StrBytes::from_string(a.host))
        .with_operation(a.operation)
        .with_permission_type(a.permission)
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DeleteAclsRequest = decode_body(&req)?;
        let authz = Authz::new(&ctx, &req);
        let n = body.filters.len();
        if let Some((code, why)) = authz.acl_api_refusal(op::ALTER) {
            let r = failed(code.code(), why.into());
            let resp = DeleteAclsResponse::default().with_filter_results(vec![r; n]);
            return Ok(reply_now(respond(&req, &resp)));
        }
        let mut results: Vec<Option<DeleteAclsFilterResult>> = Vec::with_capacity(n);
        let mut valid = Vec::new();
        for f in body.filters {
            let filter = super::describe_acls::acl_filter(
                (f.resource_type_filter, f.resource_name_filter, f.pattern_type_filter),
                (f.principal_filter, f.host_filter),
                (f.operation, f.permission_type),
            );
            match filter.check() {
                Ok(()) => {
                    results.push(None);
                    valid.push(filter);
                }
                Err(e) => results.push(Some(failed(K::InvalidRequest.code(), e.to_string()))),
            }
        }
        let mut removed = sluice_shard::admin::acls::delete_acls(&ctx.shard, valid).await.into_iter();
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| match removed.next() {
                    Some(Ok(acls)) => {
                        DeleteAclsFilterResult::default().with_matching_acls(acls.into_iter().map(matching).collect())
                    }
                    Some(Err(e)) => failed(crate::errors::code(&e), e.to_string()),
                    None => DeleteAclsFilterResult::default(),
                })
            })
            .collect();
        let resp = DeleteAclsResponse::default().with_filter_results(results);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
