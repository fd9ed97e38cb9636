//! DescribeTopicPartitions (key 75), version 0: topics and their partitions a page at a time,
//! what Kafka 4's admin client (`kafka-topics --describe`) asks when the broker lists it.
//!
//! Contract (Kafka's `DescribeTopicPartitionsRequestHandler` and metadata cache):
//! - No topics named: every topic the principal may describe (the others left out without a
//!   word), topics that do not exist never answered. Topics named: each one once, in name
//!   order; one the principal may not describe is answered TOPIC_AUTHORIZATION_FAILED (zero
//!   id, no partitions) after the others, whether or not it exists; one that does not exist
//!   (never created, or deleted) UNKNOWN_TOPIC_OR_PARTITION, or INVALID_TOPIC_EXCEPTION for a
//!   name no topic can have, with a zero id and no partitions.
//! - Paging: topics before the cursor's topic are skipped; the cursor's topic starts at the
//!   cursor's partition (when the principal may describe it; else at 0), every other topic at
//!   0. An answer holds at most min(`response_partition_limit`,
//!   `DESCRIBE_TOPIC_PARTITIONS_MAX_PARTITIONS` = Kafka's 2000) partitions; when a topic does
//!   not fit, the answer ends with the part that fits and `next_cursor` names the first
//!   partition left out; when the limit is used up exactly, `next_cursor` names the next
//!   topic at partition 0 (which need not exist). Topics answered with an error take no room.
//!   A cursor naming a topic the request does not list: INVALID_REQUEST for every topic.
//! - Each partition as Metadata describes it from the metadata snapshot: leader (-1 when it
//!   is not a live broker; no error code, as Kafka), leader epoch, replicas, ISR, offline
//!   replicas (those not live in the cluster view), and empty eligible and last-known-eligible
//!   leader replicas (sluice has no ELR). Every topic answered without an authorization error
//!   carries its authorized operations.

use super::{reply_now, respond, uuid, ApiSpec, Ctx, Reply};
use crate::authz::Authz;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::cluster::NodeId;
use sluice_core::limits::DESCRIBE_TOPIC_PARTITIONS_MAX_PARTITIONS;
use sluice_core::PartitionId;
use sluice_shard::metadata::acl::{op::DESCRIBE, resource};
use sluice_shard::metadata::validate_topic_name;
use sluice_shard::MetadataSnapshot;
use std::collections::BTreeSet;
use std::ops::Range;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeTopicPartitions,
    name: "DescribeTopicPartitions",
    min_version: 0,
    max_version: 0,
    handle,
};

/// One topic of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A topic that exists, and the partitions of it this page holds.
    Found { name: String, partitions: Range<i32> },
    /// A named topic that does not exist.
    Missing(String),
}

/// What one answer holds, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next: Option<(String, i32)>,
}

/// Lays out one page (module docs). `topics`: the topics to answer in name order, each with
/// its partition count (None: it does not exist); `cursor`: the topic and partition to
/// resume at; `limit`: partitions the page may hold; `all`: no topics were named (a missing
/// topic is then left out).
pub fn plan(topics: &[(String, Option<i32>)], cursor: Option<(&str, i32)>, limit: i32, all: bool) -> Page {
    let mut remaining = i64::from(limit);
    let mut entries = Vec::new();
    for (name, count) in topics {
        if remaining == 0 {
            return Page { entries, next: Some((name.clone(), 0)) };
        }
        if remaining < 0 {
            break;
        }
        let Some(count) = *count else {
            if !all {
                entries.push(Entry::Missing(name.clone()));
            }
            continue;
        };
        let start = cursor.filter(|(c, _)| *c == name).map_or(0, |(_, p)| p.clamp(0, count));
        let end = i64::from(count).min(i64::from(start) + remaining);
        let end = i32::try_from(end).expect("at most the partition count");
        entries.push(Entry::Found { name: name.clone(), partitions: start..end });
        if end < count {
            return Page { entries, next: Some((name.clone(), end)) };
        }
        remaining -= i64::from(end - start);
    }
    Page { entries, next: None }
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeTopicPartitionsRequest = decode_body(&req)?;
        let resp = describe(&ctx, &req, &body);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}

fn describe(ctx: &Ctx, req: &Request, body: &DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let meta = ctx.shard.metadata();
    let authz = Authz::new(ctx, req);
    let all = body.topics.is_empty();
    let cursor = body.cursor.as_ref().map(|c| (c.topic_name.0.to_string(), c.partition_index));
    let from = cursor.as_ref().map_or("", |(n, _)| n.as_str());
    let names: BTreeSet<String> = if all {
        meta.topics.keys().filter(|n| n.as_str() >= from).cloned().collect()
    } else {
        body.topics.iter().map(|t| t.name.0.to_string()).filter(|n| n.as_str() >= from).collect()
    };
    if !all && cursor.as_ref().is_some_and(|(n, _)| !names.contains(n)) {
        return refused(body, ResponseError::InvalidRequest);
    }
    let (allowed, denied): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| authz.topic(DESCRIBE, n));
    let listed: Vec<(String, Option<i32>)> = allowed
        .into_iter()
        .map(|n| {
            let count = meta.topics.get(&n).map(|t| i32::try_from(t.shards.len()).expect("MAX_PARTITIONS_PER_TOPIC"));
            (n, count)
        })
        .collect();
    let resume =
        cursor.as_ref().filter(|(n, _)| !n.is_empty() && authz.topic(DESCRIBE, n)).map(|(n, p)| (n.as_str(), *p));
    let limit = body.response_partition_limit.min(DESCRIBE_TOPIC_PARTITIONS_MAX_PARTITIONS);
    let page = plan(&listed, resume, limit, all);
    let now = std::time::Instant::now();
    let live = |n: i32| ctx.cluster.is_listed(NodeId(n), now);
    let me = ctx.node_id().0;
    let mut topics: Vec<_> = page
        .entries
        .iter()
        .map(|e| {
            let t = topic(&meta, e, me, &live);
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            t.with_topic_authorized_operations(authz.operations(resource::TOPIC, &name))
        })
        .collect();
    if !all {
        topics.extend(denied.iter().map(|n| error_topic(n, ResponseError::TopicAuthorizationFailed)));
    }
    let next = page.next.map(|(n, p)| Cursor::default().with_topic_name(name(&n)).with_partition_index(p));
    DescribeTopicPartitionsResponse::default().with_throttle_time_ms(0).with_topics(topics).with_next_cursor(next)
}

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

/// One entry of a page, described from `meta` (module docs).
fn topic(
    meta: &MetadataSnapshot,
    e: &Entry,
    me: i32,
    live: &dyn Fn(i32) -> bool,
) -> DescribeTopicPartitionsResponseTopic {
    match e {
        Entry::Found { name: n, partitions } => {
            let t = meta.topics.get(n).expect("planned from this snapshot");
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(0)
                .with_name(Some(name(n)))
                .with_topic_id(uuid(t.id))
                .with_is_internal(sluice_shard::admin::is_internal(n))
                .with_partitions(partitions.clone().map(|p| partition(meta, n, p, me, live)).collect())
        }
        Entry::Missing(n) => {
            let code = match validate_topic_name(n) {
                Ok(()) => ResponseError::UnknownTopicOrPartition,
                Err(_) => ResponseError::InvalidTopicException,
            };
            error_topic(n, code).with_is_internal(sluice_shard::admin::is_internal(n))
        }
    }
}

fn partition(
    meta: &MetadataSnapshot,
    topic: &str,
    p: i32,
    me: i32,
    live: &dyn Fn(i32) -> bool,
) -> DescribeTopicPartitionsResponsePartition {
    let state = meta.partition(topic, PartitionId(p), me).expect("p is below the partition count");
    let ids = |v: &[i32]| v.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
    let offline: Vec<i32> = state.replicas.iter().copied().filter(|n| !live(*n)).collect();
    let leader = if state.leader >= 0 && live(state.leader) { state.leader } else { -1 };
    DescribeTopicPartitionsResponsePartition::default()
        .with_error_code(0)
        .with_partition_index(p)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(state.leader_epoch)
        .with_replica_nodes(ids(&state.replicas))
        .with_isr_nodes(ids(&state.isr))
        .with_eligible_leader_replicas(Some(vec![]))
        .with_last_known_elr(Some(vec![]))
        .with_offline_replicas(ids(&offline))
}

/// A topic answered with `error` alone: zero id, no partitions.
fn error_topic(n: &str, error: ResponseError) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(error.code())
        .with_name(Some(name(n)))
        .with_topic_id(uuid::Uuid::nil())
        .with_is_internal(false)
        .with_partitions(vec![])
}

/// Every requested topic answered with `error` (Kafka's answer to a request it refuses whole).
fn refused(body: &DescribeTopicPartitionsRequest, error: ResponseError) -> DescribeTopicPartitionsResponse {
    let topics = body.topics.iter().map(|t| error_topic(&t.name.0, error)).collect();
    DescribeTopicPartitionsResponse::default().with_throttle_time_ms(0).with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(list: &[(&str, Option<i32>)]) -> Vec<(String, Option<i32>)> {
        list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    fn found(name: &str, partitions: Range<i32>) -> Entry {
        Entry::Found { name: name.into(), partitions }
    }

    #[test]
    fn everything_fits_one_page() {
        let t = topics(&[("a", Some(3)), ("b", Some(2))]);
        assert_eq!(plan(&t, None, 2000, true), Page { entries: vec![found("a", 0..3), found("b", 0..2)], next: None });
    }

    #[test]
    fn a_topic_that_does_not_fit_is_split_at_the_cursor() {
        let t = topics(&[("a", Some(3)), ("b", Some(5)), ("c", Some(1))]);
        let first = plan(&t, None, 4, true);
        assert_eq!(first, Page { entries: vec![found("a", 0..3), found("b", 0..1)], next: Some(("b".into(), 1)) });
        // The client resumes from the cursor with the topics from its topic on.
        let rest = topics(&[("b", Some(5)), ("c", Some(1))]);
        let second = plan(&rest, Some(("b", 1)), 4, true);
        assert_eq!(second, Page { entries: vec![found("b", 1..5)], next: Some(("c".into(), 0)) });
        let third = plan(&topics(&[("c", Some(1))]), Some(("c", 0)), 4, true);
        assert_eq!(third, Page { entries: vec![found("c", 0..1)], next: None });
    }

    #[test]
    fn every_partition_is_answered_once_across_pages() {
        let t = topics(&[("a", Some(7)), ("b", Some(1)), ("c", Some(13)), ("d", Some(4))]);
        for limit in 1..=30 {
            let mut seen = Vec::new();
            let mut cursor: Option<(String, i32)> = None;
            for _ in 0..100 {
                let from = cursor.as_ref().map_or("", |(n, _)| n.as_str()).to_string();
                let rest: Vec<_> = t.iter().filter(|(n, _)| n.as_str() >= from.as_str()).cloned().collect();
                let page = plan(&rest, cursor.as_ref().map(|(n, p)| (n.as_str(), *p)), limit, true);
                let count: i32 = page
                    .entries
                    .iter()
                    .map(|e| match e {
                        Entry::Found { name, partitions } => {
                            seen.extend(partitions.clone().map(|p| (name.clone(), p)));
                            partitions.end - partitions.start
                        }
                        Entry::Missing(_) => 0,
                    })
                    .sum();
                assert!(count <= limit, "limit {limit}: a page of {count}");
                cursor = page.next;
                if cursor.is_none() {
                    break;
                }
            }
            assert!(cursor.is_none(), "limit {limit}: pages never ended");
            let want: Vec<_> = t.iter().flat_map(|(n, c)| (0..c.unwrap()).map(move |p| (n.to_string(), p))).collect();
            assert_eq!(seen, want, "limit {limit}");
        }
    }

    #[test]
    fn missing_topics_are_answered_only_when_named_and_take_no_room() {
        let t = topics(&[("a", Some(2)), ("gone", None), ("z", Some(1))]);
        assert_eq!(
            plan(&t, None, 3, false),
            Page { entries: vec![found("a", 0..2), Entry::Missing("gone".into()), found("z", 0..1)], next: None }
        );
        assert_eq!(plan(&t, None, 3, true), Page { entries: vec![found("a", 0..2), found("z", 0..1)], next: None });
    }

    #[test]
    fn a_limit_used_up_exactly_points_at_the_next_topic() {
        let t = topics(&[("a", Some(2)), ("b", Some(2))]);
        assert_eq!(plan(&t, None, 2, true), Page { entries: vec![found("a", 0..2)], next: Some(("b".into(), 0)) });
        assert_eq!(plan(&t, None, 0, true), Page { entries: vec![], next: Some(("a".into(), 0)) });
        assert_eq!(plan(&t, None, -1, true), Page { entries: vec![], next: None });
    }

    #[test]
    fn a_cursor_partition_out_of_range_is_clamped() {
        let t = topics(&[("a", Some(3))]);
        assert_eq!(plan(&t, Some(("a", 9)), 10, true).entries, vec![found("a", 3..3)]);
        assert_eq!(plan(&t, Some(("a", -4)), 10, true).entries, vec![found("a", 0..3)]);
        assert_eq!(plan(&t, Some(("a", i32::MAX)), i32::MAX, true).entries, vec![found("a", 3..3)]);
        // The cursor's partition applies to its own topic only.
        let t = topics(&[("b", Some(3))]);
        assert_eq!(plan(&t, Some(("a", 2)), 10, true).entries, vec![found("b", 0..3)]);
    }
}
