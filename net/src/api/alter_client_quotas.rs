//! AlterClientQuotas (key 49), versions 0–1: sets and removes client quotas (what
//! `kafka-configs --alter --add-config producer_byte_rate=… --entity-type clients|users` and
//! `Admin.alterClientQuotas` send).
//!
//! Contract: one result per entry, echoing its entity. An entity that is not a user, a client
//! id or both (each named, or the default: a null name), is empty, repeats a type, or is an IP
//! (sluice has no connection-rate quotas) is INVALID_REQUEST with Kafka's message; the keys
//! are checked by `sluice_shard::admin::quotas` (producer_byte_rate, consumer_byte_rate,
//! request_percentage; controller_mutation_rate is refused). With an authorizer, a principal
//! without ALTER_CONFIGS on the cluster gets CLUSTER_AUTHORIZATION_FAILED for every entry.
//! The valid entries are one metadata change on shard 0 (`validate_only`: checked only),
//! saved and published to every shard (a lone broker) or committed through the metadata log
//! (a cluster) before the answer; every shard enforces the new quotas from then on.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::authz::Authz;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::alter_client_quotas_request::EntryData as RequestEntry;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as K;
use sluice_shard::metadata::acl::op;
use sluice_shard::metadata::quota::entity_from_wire;
use sluice_shard::msg::QuotaAlteration;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::AlterClientQuotas, name: "AlterClientQuotas", min_version: 0, max_version: 1, handle };

/// The response entry for a request entry: its entity as sent, and the outcome.
fn result(entry: &RequestEntry, code: i16, message: Option<String>) -> EntryData {
    let entity = entry
        .entity
        .iter()
        .map(|e| EntityData::default().with_entity_type(e.entity_type.clone()).with_entity_name(e.entity_name.clone()))
        .collect();
    EntryData::default()
        .with_error_code(code)
        .with_error_message(message.map(StrBytes::from_string))
        .with_entity(entity)
}

/// The entry as an alteration, or why its entity is refused.
fn alteration(entry: &RequestEntry) -> Result<QuotaAlteration, String> {
    let parts = entry.entity.iter().map(|e| (&*e.entity_type, e.entity_name.as_deref()));
    let entity = entity_from_wire(parts).map_err(|e| e.0)?;
    let ops = entry.ops.iter().map(|o| (o.key.to_string(), (!o.remove).then_some(o.value))).collect();
    Ok(QuotaAlteration { entity, ops })
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: AlterClientQuotasRequest = decode_body(&req)?;
        let authz = Authz::new(&ctx, &req);
        let throttle = req.request_throttle_ms.clone();
        if !authz.cluster(op::ALTER_CONFIGS) {
            let code = K::ClusterAuthorizationFailed.code();
            let why = || Some("Cluster authorization failed.".to_string());
            let entries = body.entries.iter().map(|e| result(e, code, why())).collect();
            let resp = AlterClientQuotasResponse::default().with_entries(entries);
            return Ok(reply_now(respond(&req, &resp)));
        }
        let checked: Vec<Result<QuotaAlteration, String>> = body.entries.iter().map(alteration).collect();
        let valid: Vec<QuotaAlteration> = checked.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
        let reply = async move {
            let mut applied = sluice_shard::admin::quotas::alter_client_quotas(&ctx.shard, valid, body.validate_only)
                .await
                .into_iter();
            let entries = body
                .entries
                .iter()
                .zip(checked)
                .map(|(entry, c)| match c {
                    Err(why) => result(entry, K::InvalidRequest.code(), Some(why)),
                    Ok(_) => match applied.next() {
                        Some(Ok(())) | None => result(entry, 0, None),
                        Some(Err(sluice_shard::PartitionError::InvalidRequest(m))) => {
                            result(entry, K::InvalidRequest.code(), Some(m))
                        }
                        Some(Err(e)) => result(entry, crate::errors::code(&e), Some(e.to_string())),
                    },
                })
                .collect();
            let resp = AlterClientQuotasResponse::default().with_entries(entries).with_throttle_time_ms(throttle.get());
            respond(&req, &resp).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local())
    }
    .boxed_local()
}
