//! CreateTopics (key 19), versions 2–7: decided on shard 0 as metadata records, applied,
//! persisted, published to every shard before the answer.
//!
//! Contract: replication factor -1 means 1; a factor above the brokers replicas may be given
//! to gets INVALID_REPLICATION_FACTOR with Kafka's message (replicas spread by Kafka's
//! assignor, `sluice_shard::metadata::assign`); partitions -1 means `num_partitions`; unknown
//! topic configs get INVALID_CONFIG naming the key; `validate_only` changes nothing. The
//! answer (v5+) gives the replication factor assigned.

use super::{reply_now, respond, uuid, ApiSpec, Ctx, Reply};
use crate::errors::code_and_message;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::admin::create_topics;
use sluice_shard::msg::NewTopic;
use std::rc::Rc;

/// The replication factor of a created topic (that of its partitions).
fn replication_factor(replicas: &[Vec<i32>]) -> i16 {
    replicas.first().map_or(1, |r| i16::try_from(r.len()).expect("at most MAX_CLUSTER_MEMBERS replicas"))
}

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::CreateTopics, name: "CreateTopics", min_version: 2, max_version: 7, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: CreateTopicsRequest = decode_body(&req)?;
        let names: Vec<_> = body.topics.iter().map(|t| t.name.clone()).collect();
        let topics = body
            .topics
            .into_iter()
            .map(|t| NewTopic {
                name: t.name.0.to_string(),
                partitions: if t.assignments.is_empty() {
                    t.num_partitions
                } else {
                    i32::try_from(t.assignments.len()).unwrap_or(i32::MAX)
                },
                replication_factor: if t.assignments.is_empty() {
                    t.replication_factor
                } else {
                    // More broker ids than an i16 holds is an invalid factor, not a wrapped one.
                    i16::try_from(t.assignments[0].broker_ids.len()).unwrap_or(i16::MAX)
                },
                configs: t
                    .configs
                    .into_iter()
                    .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string()).unwrap_or_default()))
                    .collect(),
            })
            .collect();
        let brokers = ctx.brokers().into_iter().map(|b| b.node_id.0).collect();
        let authz = crate::authz::Authz::new(&ctx, &req);
        let (topics, allowed) = authz.split_creatable(topics);
        let created = create_topics(&ctx.shard, topics, body.validate_only, brokers).await;
        let results = crate::authz::Authz::merge_refused(allowed, created);
        let v = req.version;
        let topics = names
            .into_iter()
            .zip(results)
            .map(|(name, r)| {
                let (code, message) = code_and_message(&r);
                let base = CreatableTopicResult::default()
                    .with_name(name)
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string));
                match r {
                    Ok(c) if v >= 5 => base
                        .with_topic_id(if v >= 7 { uuid(c.id) } else { uuid::Uuid::nil() })
                        .with_num_partitions(c.partitions)
                        .with_replication_factor(replication_factor(&c.replicas))
                        .with_configs(Some(vec![])),
                    _ => base.with_num_partitions(-1).with_replication_factor(-1),
                }
            })
            .collect();
        let resp = CreateTopicsResponse::default().with_throttle_time_ms(0).with_topics(topics);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
