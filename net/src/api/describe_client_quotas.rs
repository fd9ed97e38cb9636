//! DescribeClientQuotas (key 48), versions 0–1: the client quotas a filter selects (what
//! `kafka-configs --describe --entity-type users|clients` and `Admin.describeClientQuotas`
//! send).
//!
//! Contract: answered from this shard's metadata copy (quotas are cluster metadata), as
//! Kafka's `ClientQuotasImage.describe`: each component names an entity type (`user`,
//! `client-id`, `ip`) and a match (0: exact name, 1: the default, 2: any); `strict` keeps only
//! entities of exactly those types. A bad filter is INVALID_REQUEST (an unknown entity type
//! UNSUPPORTED_VERSION) with Kafka's message; with an authorizer, a principal without
//! DESCRIBE_CONFIGS on the cluster gets CLUSTER_AUTHORIZATION_FAILED.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::authz::Authz;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{ApiKey, DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as K;
use sluice_shard::metadata::acl::op;
use sluice_shard::metadata::quota::{describe, entity_to_wire, FilterComponent, FilterError};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DescribeClientQuotas, name: "DescribeClientQuotas", min_version: 0, max_version: 1, handle };

fn refused(code: K, message: String) -> DescribeClientQuotasResponse {
    DescribeClientQuotasResponse::default()
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(message)))
        .with_entries(None)
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeClientQuotasRequest = decode_body(&req)?;
        let authz = Authz::new(&ctx, &req);
        let resp = if !authz.cluster(op::DESCRIBE_CONFIGS) {
            refused(K::ClusterAuthorizationFailed, "Cluster authorization failed.".into())
        } else {
            let components: Vec<FilterComponent> = body
                .components
                .iter()
                .map(|c| FilterComponent {
                    entity_type: c.entity_type.to_string(),
                    match_type: c.match_type,
                    name: c._match.as_ref().map(|m| m.to_string()),
                })
                .collect();
            let snap = ctx.shard.metadata();
            match describe(&snap.quotas, &components, body.strict) {
                Err(FilterError::Invalid(m)) => refused(K::InvalidRequest, m),
                Err(FilterError::UnsupportedType(m)) => refused(K::UnsupportedVersion, m),
                Ok(found) => {
                    let entries = found
                        .into_iter()
                        .map(|(entity, values)| {
                            let entity = entity_to_wire(entity)
                                .into_iter()
                                .map(|(t, n)| {
                                    EntityData::default()
                                        .with_entity_type(StrBytes::from_static_str(t))
                                        .with_entity_name(n.map(|n| StrBytes::from_string(n.to_string())))
                                })
                                .collect();
                            let values = values
                                .iter()
                                .map(|(k, v)| {
                                    ValueData::default().with_key(StrBytes::from_string(k.clone())).with_value(v.get())
                                })
                                .collect();
                            EntryData::default().with_entity(entity).with_values(values)
                        })
                        .collect();
                    DescribeClientQuotasResponse::default().with_error_code(0).with_entries(Some(entries))
                }
            }
        };
        Ok(reply_now(respond(&req, &resp.with_throttle_time_ms(req.request_throttle_ms.get()))))
    }
    .boxed_local()
}
