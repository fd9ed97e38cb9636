//! OffsetFetch (key 9), versions 1–9: committed offsets of one group (v1–7) or several (v8+).
//!
//! Contract: a partition without a committed offset answers offset -1 and no error, as Kafka
//! does; a null topic list means every partition the group has committed. With
//! `require_stable` (v7+), a partition with offsets staged by a transaction not yet ended
//! answers UNSTABLE_OFFSET_COMMIT and offset -1, as Kafka does (the client retries until the
//! transaction ends). v9's member id and epoch are checked against a KIP-848 group's members
//! (UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH for the group); none and epoch -1 checks nothing.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::group_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_shard::groups::{self, GroupError, OffsetList};
use sluice_shard::txn::{self, PendingOffsetsRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::OffsetFetch, name: "OffsetFetch", min_version: 1, max_version: 9, handle };

/// The group's committed offsets, and the partitions with transactional offsets pending
/// (asked only when `require_stable`). The pending ones are asked first: a transaction's end
/// commits its offsets to the group before it drops them from the pending set, so an answer
/// never misses them in both (asked the other way round, an end between the two asks left
/// the partition with no offset and no UNSTABLE_OFFSET_COMMIT).
async fn fetch_one(
    ctx: &Ctx,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    member: (Option<String>, i32),
    require_stable: bool,
) -> Result<(OffsetList, Vec<(String, i32)>), GroupError> {
    let pending = if require_stable {
        let req = PendingOffsetsRequest { group_id: group_id.to_string() };
        txn::on_group(&ctx.shard, group_id, req).await.map_err(|_| GroupError::CoordinatorNotAvailable)?
    } else {
        Vec::new()
    };
    let req = groups::OffsetFetchRequest { group_id: group_id.to_string(), topics, member };
    let list = groups::ask(&ctx.shard, group_id, req).await?;
    Ok((list, pending))
}

/// (partition, offset, leader epoch, metadata, error code)
type Row = (i32, i64, i32, Option<String>, i16);

/// Groups (topic, partition, committed) rows by topic, keeping first-seen order; a partition
/// in `pending` answers UNSTABLE_OFFSET_COMMIT.
fn by_topic((list, pending): (OffsetList, Vec<(String, i32)>)) -> Vec<(String, Vec<Row>)> {
    let mut out: Vec<(String, Vec<Row>)> = Vec::new();
    for (t, p, c) in list {
        let row = match c {
            _ if pending.iter().any(|(pt, pp)| *pt == t && *pp == p) => {
                (p, -1, -1, Some(String::new()), ResponseError::UnstableOffsetCommit.code())
            }
            Some(c) => (p, c.offset, c.leader_epoch, c.metadata, 0),
            None => (p, -1, -1, Some(String::new()), 0),
        };
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, rows)) => rows.push(row),
            None => out.push((t, vec![row])),
        }
    }
    out
}

const GROUP_AUTHORIZATION_FAILED: i16 = kafka_protocol::ResponseError::GroupAuthorizationFailed.code();

/// Committed offsets of topics the principal may not describe are answered
/// TOPIC_AUTHORIZATION_FAILED, without the offset.
fn hide_topics(authz: &crate::authz::Authz, topics: Vec<(String, Vec<Row>)>) -> Vec<(String, Vec<Row>)> {
    let code = kafka_protocol::ResponseError::TopicAuthorizationFailed.code();
    topics
        .into_iter()
        .map(|(t, rows)| match authz.topic(sluice_shard::metadata::acl::op::DESCRIBE, &t) {
            true => (t, rows),
            false => (t, rows.into_iter().map(|(p, ..)| (p, -1, -1, None, code)).collect()),
        })
        .collect()
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: OffsetFetchRequest = decode_body(&req)?;
        let v = req.version;
        let authz = crate::authz::Authz::new(&ctx, &req);
        let by_topic = |list| hide_topics(&authz, by_topic(list));
        let group_ok = |g: &str| authz.group(sluice_shard::metadata::acl::op::DESCRIBE, g);
        let resp = if v >= 8 {
            let mut groups_out = Vec::with_capacity(body.groups.len());
            for g in body.groups {
                let topics =
                    g.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
                let member = (g.member_id.map(|m| m.to_string()), g.member_epoch);
                let result = match group_ok(&g.group_id.0) {
                    true => fetch_one(&ctx, &g.group_id.0, topics, member, body.require_stable).await,
                    false => {
                        let refused = OffsetFetchResponseGroup::default().with_error_code(GROUP_AUTHORIZATION_FAILED);
                        groups_out.push(refused.with_group_id(GroupId(g.group_id.0)));
                        continue;
                    }
                };
                let group = match result {
                    Ok(list) => OffsetFetchResponseGroup::default().with_error_code(0).with_topics(
                        by_topic(list)
                            .into_iter()
                            .map(|(t, rows)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(StrBytes::from_string(t)))
                                    .with_partitions(
                                        rows.into_iter()
                                            .map(|(p, o, e, m, code)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_error_code(code)
                                                    .with_partition_index(p)
                                                    .with_committed_offset(o)
                                                    .with_committed_leader_epoch(e)
                                                    .with_metadata(m.map(StrBytes::from_string))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    Err(e) => OffsetFetchResponseGroup::default().with_error_code(group_code(&e)),
                };
                groups_out.push(group.with_group_id(GroupId(g.group_id.0)));
            }
            OffsetFetchResponse::default().with_groups(groups_out)
        } else {
            let topics =
                body.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
            if !group_ok(&body.group_id.0) {
                let resp = OffsetFetchResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED);
                return Ok(reply_now(respond(&req, &resp)));
            }
            match fetch_one(&ctx, &body.group_id.0, topics, (None, -1), v >= 7 && body.require_stable).await {
                Ok(list) => OffsetFetchResponse::default().with_error_code(0).with_topics(
                    by_topic(list)
                        .into_iter()
                        .map(|(t, rows)| {
                            OffsetFetchResponseTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t)))
                                .with_partitions(
                                    rows.into_iter()
                                        .map(|(p, o, e, m, code)| {
                                            OffsetFetchResponsePartition::default()
                                                .with_error_code(code)
                                                .with_partition_index(p)
                                                .with_committed_offset(o)
                                                .with_committed_leader_epoch(if v >= 5 { e } else { -1 })
                                                .with_metadata(m.map(StrBytes::from_string))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
                Err(e) => OffsetFetchResponse::default().with_error_code(if v >= 2 { group_code(&e) } else { 0 }),
            }
        };
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
