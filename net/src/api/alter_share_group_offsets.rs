//! AlterShareGroupOffsets (key 91), version 0 (as Kafka 4.x): sets the start offset of a
//! share group's share-partitions (`kafka-share-groups --reset-offsets`).
//!
//! Contract: only while the group has no members (else NON_EMPTY_GROUP for the whole request,
//! as Kafka's GROUP_NOT_EMPTY); each listed partition's in-flight state is dropped and its new
//! start offset is durable on the partition's owner before the answer (in a cluster, on its
//! leader, wherever it is: `sluice_shard::share::remote`). ALTER on the group
//! (else GROUP_AUTHORIZATION_FAILED), READ on each topic (else TOPIC_AUTHORIZATION_FAILED per
//! partition).

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::{code, group_code};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition as Partition, AlterShareGroupOffsetsResponseTopic as Topic,
};
use kafka_protocol::messages::{AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::TopicPartition;
use sluice_shard::metadata::acl::op;
use sluice_shard::share;
use std::collections::BTreeMap;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::AlterShareGroupOffsets,
    name: "AlterShareGroupOffsets",
    min_version: 0,
    max_version: 0,
    handle,
};

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: AlterShareGroupOffsetsRequest = decode_body(&req)?;
        let reply = async move {
            let group = body.group_id.0.to_string();
            let authz = crate::authz::Authz::new(&ctx, &req);
            if !authz.group(op::ALTER, &group) {
                return top(&req, ResponseError::GroupAuthorizationFailed.code(), None);
            }
            if let Err(e) = share::require_empty(&ctx.shard, &group).await {
                return top(&req, group_code(&e), Some(e.to_string()));
            }
            let mut by_topic: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
            for t in body.topics {
                let name = t.topic_name.0.to_string();
                for p in t.partitions {
                    let part = Partition::default().with_partition_index(p.partition_index);
                    let done = if !authz.topic(op::READ, &name) {
                        part.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    } else {
                        let tp = TopicPartition::new(name.clone(), p.partition_index);
                        let r = share::offsets(&ctx.shard, &group, vec![(0, tp)], Some(Some(p.start_offset))).await;
                        match r.into_iter().next().map(|(_, r)| r) {
                            Some(Err(e)) => part
                                .with_error_code(code(&e))
                                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                            _ => part,
                        }
                    };
                    by_topic.entry(name.clone()).or_default().push(done);
                }
            }
            let meta = ctx.shard.metadata();
            let responses = by_topic
                .into_iter()
                .map(|(name, parts)| {
                    let id = meta.topics.get(&name).map(|t| t.id).unwrap_or([0; 16]);
                    Topic::default()
                        .with_topic_name(TopicName(StrBytes::from_string(name)))
                        .with_topic_id(super::uuid(id))
                        .with_partitions(parts)
                })
                .collect();
            respond(&req, &AlterShareGroupOffsetsResponse::default().with_responses(responses)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

fn top(req: &Request, code: i16, msg: Option<String>) -> Result<Option<crate::response::Frame>, FrameError> {
    let body = AlterShareGroupOffsetsResponse::default()
        .with_error_code(code)
        .with_error_message(msg.map(StrBytes::from_string));
    respond(req, &body).map(|f| Some(f.into()))
}
