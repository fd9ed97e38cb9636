//! AlterConfigs (key 33), versions 0–2: replaces a topic's whole set of configs.
//!
//! Contract: every key is validated first (INVALID_CONFIG names the key); keys not in the
//! request return to their defaults, as Kafka's non-incremental AlterConfigs does.
//!
//! A GROUP resource (here and in IncrementalAlterConfigs): the group's dynamic configs, changed
//! through the metadata (`sluice_shard::admin::group_configs`: SET and DELETE, the whole set
//! checked with Kafka's rules and the broker's bounds, INVALID_CONFIG with Kafka's message
//! otherwise; an empty group name is INVALID_REQUEST), whether or not the group exists, as
//! Kafka. The group and share code read them (`sluice_shard::group_config`).
//!
//! BROKER resources ([`not_alterable`]): sluice applies none, so every key is refused with the
//! error Kafka 4.x gives a key it cannot apply. A broker's keys: INVALID_REQUEST "Cannot update these configs dynamically: [keys]"
//! (sluice's broker configs all come from its config file; Kafka accepts its dynamic ones),
//! except IncrementalAlterConfigs' DELETE of a key, which removes a dynamic value sluice never
//! holds: nothing to do, no error (as Kafka answers deleting an unset dynamic config;
//! `kafka-reassign-partitions --verify` clears the replication throttles so); a broker id
//! other than this broker's: INVALID_REQUEST "Unexpected broker id, expected ME, but received N".
//! A topic's replication throttles (`leader.replication.throttled.replicas`,
//! `follower.replication.throttled.replicas`): sluice does not throttle replication and never
//! holds them, so their DELETE (IncrementalAlterConfigs) is dropped as done and setting them is
//! refused as any unknown key.

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_GROUP, RESOURCE_TOPIC};
use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::authz::Authz;
use crate::errors::code_and_message;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_shard::admin::change;
use sluice_shard::admin::group_configs::alter_group_configs;
use sluice_shard::metadata::acl::op;
use sluice_shard::msg::{AlterConfigs, ConfigChange, ConfigOp};
use sluice_shard::PartitionError;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::AlterConfigs, name: "AlterConfigs", min_version: 0, max_version: 2, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: AlterConfigsRequest = decode_body(&req)?;
        let authz = Authz::new(&ctx, &req);
        let mut responses = Vec::with_capacity(body.resources.len());
        for r in body.resources {
            let changes = r
                .configs
                .iter()
                .map(|c| ConfigChange {
                    key: c.name.to_string(),
                    op: ConfigOp::Set,
                    value: c.value.as_ref().map(|v| v.to_string()),
                })
                .collect();
            let keys: Vec<String> = r.configs.iter().map(|c| c.name.to_string()).collect();
            let target = Resource { resource_type: r.resource_type, name: &r.resource_name, keys };
            let (code, message) = alter(&ctx, &authz, target, Ok(changes), true, body.validate_only).await;
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

/// Kafka's topic-level replication throttles (module docs).
const THROTTLE_KEYS: &[&str] = &["leader.replication.throttled.replicas", "follower.replication.throttled.replicas"];

/// A resource whose configs a request alters: its type, name and the keys it names.
pub struct Resource<'a> {
    pub resource_type: i8,
    pub name: &'a str,
    pub keys: Vec<String>,
}

/// The (error code, message) of altering one resource, for AlterConfigs and
/// IncrementalAlterConfigs alike: a topic's `changes` are applied by shard 0 (all its configs
/// replaced when `replace_all`), or refused with the error reading them gave; a group's the
/// same way (`alter_group_configs`); a broker's keys are answered by [`not_alterable`]. Without ALTER_CONFIGS on the resource (on
/// the cluster for a broker) it is refused first, as Kafka's controller does.
pub async fn alter(
    ctx: &Ctx,
    authz: &Authz,
    target: Resource<'_>,
    changes: Result<Vec<ConfigChange>, PartitionError>,
    replace_all: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    // Kafka checks a broker resource's name on the broker before the controller authorizes.
    let other_broker = target.resource_type == RESOURCE_BROKER && !target.name.is_empty() && target.name != "0";
    if let Some(e) =
        authz.config_refusal(op::ALTER_CONFIGS, target.resource_type, target.name).filter(|_| !other_broker)
    {
        return (e.code(), Some(crate::authz::denied_message(e).to_string()));
    }
    if target.resource_type == RESOURCE_GROUP {
        if target.name.is_empty() {
            return (ResponseError::InvalidRequest.code(), Some("Group name must not be empty".into()));
        }
        let result = match changes {
            Ok(changes) => {
                let group = target.name.to_string();
                alter_group_configs(&ctx.shard, group, changes, replace_all, validate_only).await
            }
            Err(e) => Err(e),
        };
        // Kafka's message as it is (no "invalid config: " prefix).
        return match result {
            Err(PartitionError::InvalidConfig(m)) => (ResponseError::InvalidConfig.code(), Some(m)),
            Err(PartitionError::InvalidRequest(m)) => (ResponseError::InvalidRequest.code(), Some(m)),
            other => code_and_message(&other),
        };
    }
    if target.resource_type != RESOURCE_TOPIC {
        let mut keys = target.keys;
        if target.resource_type == RESOURCE_BROKER {
            if let Ok(changes) = &changes {
                keys = changes.iter().filter(|c| c.op != ConfigOp::Delete).map(|c| c.key.clone()).collect();
            }
        }
        return not_alterable(ctx.node_id().0, target.resource_type, target.name, &keys);
    }
    let changes = changes.map(|cs| {
        cs.into_iter().filter(|c| !(c.op == ConfigOp::Delete && THROTTLE_KEYS.contains(&c.key.as_str()))).collect()
    });
    let result = match changes {
        Ok(changes) => {
            let op = AlterConfigs { topic: target.name.to_string(), changes, replace_all, validate_only };
            change(&ctx.shard, op).await
        }
        Err(e) => Err(e),
    };
    code_and_message(&result)
}

/// The answer to altering `keys` of a non-topic resource, which sluice never applies: Kafka's
/// error code and message for keys it cannot apply, or no error when there is nothing to do.
pub fn not_alterable(me: i32, resource_type: i8, name: &str, keys: &[String]) -> (i16, Option<String>) {
    let refuse = |e: ResponseError, m: String| (e.code(), Some(m));
    let list = || format!("[{}]", keys.join(", "));
    match resource_type {
        RESOURCE_BROKER if !name.is_empty() && name != me.to_string() => {
            refuse(ResponseError::InvalidRequest, format!("Unexpected broker id, expected {me}, but received {name}"))
        }
        RESOURCE_BROKER if keys.is_empty() => (0, None),
        RESOURCE_BROKER => refuse(
            ResponseError::InvalidRequest,
            format!(
                "Cannot update these configs dynamically: {} (sluice's broker configs are read from its config file)",
                list()
            ),
        ),
        other => refuse(ResponseError::InvalidRequest, format!("resource type {other} cannot be altered")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn broker_answers_are_kafkas() {
        let (code, msg) = not_alterable(0, RESOURCE_BROKER, "0", &keys(&["auto.create.topics.enable"]));
        assert_eq!(code, 42);
        assert!(msg.unwrap().starts_with("Cannot update these configs dynamically: [auto.create.topics.enable]"));
        assert_eq!(not_alterable(0, RESOURCE_BROKER, "", &[]), (0, None));
        let (code, msg) = not_alterable(0, RESOURCE_BROKER, "7", &keys(&["log.retention.ms"]));
        assert_eq!((code, msg.unwrap()), (42, "Unexpected broker id, expected 0, but received 7".to_string()));
        assert_eq!(not_alterable(7, RESOURCE_BROKER, "7", &[]), (0, None), "this broker's own id");
    }
}
