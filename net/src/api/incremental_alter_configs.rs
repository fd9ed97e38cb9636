//! IncrementalAlterConfigs (key 44), versions 0–1: SET, DELETE, APPEND and SUBTRACT on topic
//! configs, SET and DELETE on a group's dynamic configs; other keys keep their values.
//!
//! Contract: each resource is answered by `alter_configs::alter` (its module docs: topics and
//! groups through the metadata, BROKER keys refused with Kafka's errors).

use super::alter_configs::{alter, Resource};
use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::msg::{ConfigChange, ConfigOp};
use sluice_shard::PartitionError;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::IncrementalAlterConfigs,
    name: "IncrementalAlterConfigs",
    min_version: 0,
    max_version: 1,
    handle,
};

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: IncrementalAlterConfigsRequest = decode_body(&req)?;
        let authz = crate::authz::Authz::new(&ctx, &req);
        let mut responses = Vec::with_capacity(body.resources.len());
        for r in body.resources {
            let changes: Result<Vec<ConfigChange>, PartitionError> = r
                .configs
                .iter()
                .map(|c| {
                    let op = match c.config_operation {
                        0 => ConfigOp::Set,
                        1 => ConfigOp::Delete,
                        2 => ConfigOp::Append,
                        3 => ConfigOp::Subtract,
                        other => {
                            return Err(PartitionError::InvalidRequest(format!("unknown config operation {other}")))
                        }
                    };
                    Ok(ConfigChange { key: c.name.to_string(), op, value: c.value.as_ref().map(|v| v.to_string()) })
                })
                .collect();
            let keys: Vec<String> = r.configs.iter().map(|c| c.name.to_string()).collect();
            let target = Resource { resource_type: r.resource_type, name: &r.resource_name, keys };
            let (code, message) = alter(&ctx, &authz, target, changes, false, body.validate_only).await;
            responses.push(
                AlterConfigsResourceResponse::default()
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string))
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name),
            );
        }
        Ok(reply_now(respond(&req, &IncrementalAlterConfigsResponse::default().with_responses(responses))))
    }
    .boxed_local()
}
