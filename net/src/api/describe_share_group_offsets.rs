//! DescribeShareGroupOffsets (key 90), version 0 (as Kafka 4.x): the start offset (SPSO) of a
//! share group's share-partitions, read on the partitions' owners (in a cluster on each
//! partition's leader, wherever it is: `sluice_shard::share::remote`).
//!
//! Contract: listed topics answer every listed partition (start offset -1 when the group has
//! no state for it); with topics null, every partition of a non-internal topic the group has
//! state for. A topic this broker does not know is UNKNOWN_TOPIC_OR_PARTITION per partition.
//! DESCRIBE on the group (else GROUP_AUTHORIZATION_FAILED for the group), DESCRIBE on each
//! topic (else TOPIC_AUTHORIZATION_FAILED per partition), as Kafka.

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup as Group, DescribeShareGroupOffsetsResponsePartition as Partition,
    DescribeShareGroupOffsetsResponseTopic as Topic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::TopicPartition;
use sluice_shard::metadata::acl::op;
use sluice_shard::share;
use std::collections::BTreeMap;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeShareGroupOffsets,
    name: "DescribeShareGroupOffsets",
    min_version: 0,
    max_version: 0,
    handle,
};

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeShareGroupOffsetsRequest = decode_body(&req)?;
        let reply = async move {
            let mut groups = Vec::with_capacity(body.groups.len());
            for g in body.groups {
                let name = g.group_id.0.to_string();
                let authz = crate::authz::Authz::new(&ctx, &req);
                if !authz.group(op::DESCRIBE, &name) {
                    groups.push(
                        Group::default()
                            .with_group_id(g.group_id)
                            .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
                    );
                    continue;
                }
                let asked: Option<Vec<(String, Vec<i32>)>> =
                    g.topics.map(|ts| ts.into_iter().map(|t| (t.topic_name.0.to_string(), t.partitions)).collect());
                let topics = describe(&ctx, &authz, &name, asked).await;
                groups.push(Group::default().with_group_id(g.group_id).with_topics(topics));
            }
            respond(&req, &DescribeShareGroupOffsetsResponse::default().with_groups(groups)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

async fn describe(
    ctx: &Rc<Ctx>,
    authz: &crate::authz::Authz,
    group: &str,
    asked: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<Topic> {
    let all = asked.is_none();
    let wanted: Vec<(String, Vec<i32>)> = asked.unwrap_or_else(|| {
        let meta = ctx.shard.metadata();
        meta.topics
            .iter()
            .filter(|(n, _)| !n.starts_with("__"))
            .map(|(n, t)| (n.clone(), (0..t.shards.len()).filter_map(|p| i32::try_from(p).ok()).collect()))
            .collect()
    });
    let mut tps = Vec::new();
    let mut refused = Vec::new();
    for (name, ps) in &wanted {
        for p in ps {
            let tp = TopicPartition::new(name.clone(), *p);
            if authz.topic(op::DESCRIBE, name) {
                tps.push(tp);
            } else if !all {
                refused.push(tp);
            }
        }
    }
    let items: Vec<(usize, TopicPartition)> = tps.iter().cloned().enumerate().collect();
    let results = share::offsets(&ctx.shard, group, items, None).await;
    let meta = ctx.shard.metadata();
    let mut by_topic: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
    for (i, r) in results {
        let tp = &tps[i];
        let p = match r {
            Ok(None) if all => continue,
            Ok(start) => Partition::default().with_start_offset(start.unwrap_or(-1)),
            Err(e) => Partition::default()
                .with_start_offset(-1)
                .with_error_code(code(&e))
                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
        };
        by_topic
            .entry(tp.topic.clone())
            .or_default()
            .push(p.with_partition_index(tp.partition.0).with_leader_epoch(-1));
    }
    for tp in refused {
        by_topic.entry(tp.topic.clone()).or_default().push(
            Partition::default()
                .with_partition_index(tp.partition.0)
                .with_start_offset(-1)
                .with_leader_epoch(-1)
                .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
        );
    }
    by_topic
        .into_iter()
        .map(|(name, parts)| {
            let id = meta.topics.get(&name).map(|t| t.id).unwrap_or([0; 16]);
            Topic::default()
                .with_topic_name(TopicName(StrBytes::from_string(name)))
                .with_topic_id(super::uuid(id))
                .with_partitions(parts)
        })
        .collect()
}
