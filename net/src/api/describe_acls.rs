//! DescribeAcls (key 29), versions 1–3: lists the ACL bindings a filter selects (what
//! `kafka-acls --list` and `AdminClient.describeAcls` send).
//!
//! Contract: without an authorizer the answer is SECURITY_DISABLED; a principal without
//! DESCRIBE on the cluster gets CLUSTER_AUTHORIZATION_FAILED; a filter with an unknown code is
//! INVALID_REQUEST. Otherwise the bindings of this shard's metadata copy that the filter
//! selects (MATCH: the literal name, the wildcard and every prefix), grouped by resource
//! pattern in the snapshot's order.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::authz::Authz;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{ApiKey, DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as K;
use sluice_shard::metadata::acl::{op, AclFilter};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DescribeAcls, name: "DescribeAcls", min_version: 1, max_version: 3, handle };

fn refused(code: K, message: String) -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(message)))
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let b: DescribeAclsRequest = decode_body(&req)?;
        let authz = Authz::new(&ctx, &req);
        let filter = acl_filter(
            (b.resource_type_filter, b.resource_name_filter, b.pattern_type_filter),
            (b.principal_filter, b.host_filter),
            (b.operation, b.permission_type),
        );
        let resp = if let Some((code, why)) = authz.acl_api_refusal(op::DESCRIBE) {
            refused(code, why.into())
        } else if let Err(e) = filter.check() {
            refused(K::InvalidRequest, e.to_string())
        } else {
            DescribeAclsResponse::default().with_resources(describe(&ctx, &filter))
        };
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}

/// The filter of a DescribeAcls request or a DeleteAcls filter (the same fields in both):
/// (resource type, name, pattern type), (principal, host), (operation, permission).
pub(crate) fn acl_filter(
    resource: (i8, Option<StrBytes>, i8),
    who: (Option<StrBytes>, Option<StrBytes>),
    what: (i8, i8),
) -> AclFilter {
    AclFilter {
        resource_type: resource.0,
        name: resource.1.map(|s| s.to_string()),
        pattern_type: resource.2,
        principal: who.0.map(|s| s.to_string()),
        host: who.1.map(|s| s.to_string()),
        operation: what.0,
        permission: what.1,
    }
}

fn describe(ctx: &Ctx, filter: &AclFilter) -> Vec<DescribeAclsResource> {
    let snap = ctx.shard.metadata();
    let mut out: Vec<DescribeAclsResource> = Vec::new();
    for a in snap.acls.iter().filter(|a| filter.matches(a)) {
        let same = out.last().is_some_and(|r| {
            r.resource_type == a.resource_type && r.pattern_type == a.pattern_type && *r.resource_name == *a.name
        });
        if !same {
            out.push(
                DescribeAclsResource::default()
                    .with_resource_type(a.resource_type)
                    .with_resource_name(StrBytes::from_string(a.name.clone()))
                    .with_pattern_type(a.pattern_type),
            );
        }
        let d = AclDescription::default()
            .with_principal(StrBytes::from_string(a.principal.clone()))
            .with_host(StrBytes::from_string(a.host.clone()))
            .with_operation(a.operation)
            .with_permission_type(a.permission);
        out.last_mut().expect("pushed above").acls.push(d);
    }
    out
}
