//! FindCoordinator (key 10), versions 0–6: the broker leading the key's partition of
//! `__consumer_offsets` (groups) or `__transaction_state` (transactional ids).
//!
//! Contract: group keys (type 0) and transaction keys (type 1) are hashed to a partition of
//! their topic as Kafka does (Java `hashCode` modulo the partition count), and answered with
//! that partition's leader from the metadata snapshot at its client address (this broker at
//! the address of the listener the client came in on), batched from v4 (the shard that runs
//! the group or transaction is found by that broker when the request comes). In a cluster, a
//! missing topic is first created through the controller
//! ([`sluice_shard::internal::ensure_topic`], as Kafka creates it on the first lookup). A key
//! whose topic does not exist (yet), or whose partition has no live leader, gets
//! COORDINATOR_NOT_AVAILABLE (clients retry); other key types INVALID_REQUEST. With an
//! authorizer, a key without DESCRIBE on its group or transactional id is answered
//! GROUP_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka (and its topic is not created for it).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use crate::peer::BrokerEndpoint;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::PartitionId;
use sluice_shard::groups::{offsets_partition, OFFSETS_TOPIC};
use sluice_shard::metadata::acl::op;
use sluice_shard::txn::TXN_TOPIC;
use sluice_shard::MetadataSnapshot;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::FindCoordinator, name: "FindCoordinator", min_version: 0, max_version: 6, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: FindCoordinatorRequest = decode_body(&req)?;
        let brokers = ctx.brokers();
        let authz = crate::authz::Authz::new(&ctx, &req);
        let refusal = |key: &str| match body.key_type {
            0 if !authz.group(op::DESCRIBE, key) => Some(ResponseError::GroupAuthorizationFailed),
            1 if !authz.transactional_id(op::DESCRIBE, key) => Some(ResponseError::TransactionalIdAuthorizationFailed),
            _ => None,
        };
        let keys: Vec<&str> = match req.version >= 4 {
            true => body.coordinator_keys.iter().map(|k| &**k).collect(),
            false => vec![&*body.key],
        };
        let any_allowed = keys.iter().any(|k| refusal(k).is_none());
        if let Some(topic) = topic_of(body.key_type).filter(|_| any_allowed) {
            if !ctx.shard.metadata().topics.contains_key(topic) {
                let live = brokers.iter().map(|b| b.node_id.0).collect();
                if let Err(why) = sluice_shard::internal::ensure_topic(&ctx.shard, topic, live).await {
                    tracing::debug!(topic, %why, "internal topic not created yet");
                }
            }
        }
        let meta = ctx.shard.metadata();
        // Kafka answers a refused key with its code alone from v4, with the code's message before.
        let find = |key: &str| match refusal(key) {
            Some(e) if req.version >= 4 => Found { message: None, ..Found::error(e, String::new()) },
            Some(e) => Found::error(e, crate::authz::denied_message(e).to_string()),
            None => coordinator(&meta, &brokers, ctx.node_id().0, body.key_type, key),
        };
        let resp = if req.version >= 4 {
            let coordinators = body
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    let found = find(&key);
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(found.node)
                        .with_host(found.host)
                        .with_port(found.port)
                        .with_error_code(found.code)
                        .with_error_message(found.message.map(StrBytes::from_string))
                })
                .collect();
            FindCoordinatorResponse::default().with_coordinators(coordinators)
        } else {
            let found = find(&body.key);
            FindCoordinatorResponse::default()
                .with_error_code(found.code)
                .with_error_message(if req.version >= 1 { found.message.map(StrBytes::from_string) } else { None })
                .with_node_id(found.node)
                .with_host(found.host)
                .with_port(found.port)
        };
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}

/// One key's answer.
struct Found {
    code: i16,
    message: Option<String>,
    node: BrokerId,
    host: StrBytes,
    port: i32,
}

impl Found {
    fn error(e: ResponseError, message: String) -> Found {
        Found { code: e.code(), message: Some(message), node: BrokerId(-1), host: StrBytes::default(), port: -1 }
    }
}

/// The internal topic of a coordinator key type.
fn topic_of(key_type: i8) -> Option<&'static str> {
    match key_type {
        0 => Some(OFFSETS_TOPIC),
        1 => Some(TXN_TOPIC),
        _ => None,
    }
}

/// The coordinator of `key`: the live leader of its partition of the coordinator's topic.
fn coordinator(meta: &MetadataSnapshot, brokers: &[BrokerEndpoint], me: i32, key_type: i8, key: &str) -> Found {
    let Some(topic) = topic_of(key_type) else {
        return Found::error(ResponseError::InvalidRequest, format!("unknown coordinator key type {key_type}"));
    };
    let Some(t) = meta.topics.get(topic) else {
        return Found::error(ResponseError::CoordinatorNotAvailable, format!("the topic {topic} does not exist yet"));
    };
    let p = offsets_partition(key, t.shards.len());
    let leader = meta.partition(topic, PartitionId(p), me).map_or(-1, |s| s.leader);
    match brokers.iter().find(|b| b.node_id.0 == leader) {
        Some(b) => Found {
            code: 0,
            message: None,
            node: BrokerId(leader),
            host: StrBytes::from_string(b.host.clone()),
            port: i32::from(b.port),
        },
        None => {
            Found::error(ResponseError::CoordinatorNotAvailable, format!("partition {p} of {topic} has no live leader"))
        }
    }
}
