//! AlterConfigs (key 33), versions 0–2: replaces a topic's whole set of configs.
//!
//! Contract: every key is validated first (INVALID_CONFIG names the key); keys not in the
//! request return to their defaults, as Kafka's non-incremental AlterConfigs does. Broker
//! configs are static (the TOML file): altering them is refused with INVALID_REQUEST.

use super::describe_configs::RESOURCE_TOPIC;
use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::code_and_message;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::admin::change;
use sluice_shard::msg::{AdminOp, ConfigChange, ConfigOp};
use sluice_shard::PartitionError;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::AlterConfigs, name: "AlterConfigs", min_version: 0, max_version: 2, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: AlterConfigsRequest = decode_body(&req)?;
        let mut responses = Vec::with_capacity(body.resources.len());
        for r in body.resources {
            let result = if r.resource_type != RESOURCE_TOPIC {
                Err(PartitionError::InvalidRequest(
                    "only topic configs can be altered; broker configs come from the config file".into(),
                ))
            } else {
                let changes = r
                    .configs
                    .iter()
                    .map(|c| ConfigChange {
                        key: c.name.to_string(),
                        op: ConfigOp::Set,
                        value: c.value.as_ref().map(|v| v.to_string()),
                    })
                    .collect();
                let op = AdminOp::AlterConfigs {
                    topic: r.resource_name.to_string(),
                    changes,
                    replace_all: true,
                    validate_only: body.validate_only,
                };
                change(&ctx.shard, op).await
            };
            let (code, message) = code_and_message(&result);
            responses.push(
                AlterConfigsResourceResponse::default()
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string))
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name),
            );
        }
        Ok(reply_now(respond(&req, &AlterConfigsResponse::default().with_responses(responses))))
    }
    .boxed_local()
}
