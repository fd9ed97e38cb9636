//! ShareAcknowledge (key 79), versions 1 and 2 (as Kafka 4.4): a member's acknowledgements of
//! records it acquired, outside a ShareFetch (KIP-932; version 2 through `share_v2`).
//!
//! Contract: the share session must exist and the epoch be its next one (epoch 0 is
//! INVALID_SHARE_SESSION_EPOCH: acknowledgements need an open session); -1 closes the session
//! after the acknowledgements and releases the member's other acquired records. Each
//! partition's acknowledgements are durable on its owner before the answer; each partition
//! answers its own code (INVALID_RECORD_STATE for records not acquired by the member, e.g.
//! after their lock expired; INVALID_REQUEST for batches Kafka refuses, checked before any is
//! applied). READ on the group and on each topic, as Kafka. Version 2: with `IsRenewAck` the
//! acknowledgements may be RENEW (KIP-1222: the records stay the member's under a new lock,
//! nothing is written), and the answer carries the group's acquisition lock duration
//! (`AcquisitionLockTimeoutMs`).

use super::share_fetch::{ack_batches, apply_acks, reader, Answers};
use super::share_v2;
use super::{ApiSpec, Ctx, Reply};
use crate::errors::share_session_code;
use crate::frame::{FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::share_acknowledge_response::{
    LeaderIdAndEpoch, PartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ShareAcknowledgeRequest, ShareAcknowledgeResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::TopicPartition;
use sluice_shard::metadata::acl::op;
use sluice_shard::share::{self, SessionError};
use std::collections::BTreeMap;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ShareAcknowledge, name: "ShareAcknowledge", min_version: 1, max_version: 2, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let (body, renew): (ShareAcknowledgeRequest, bool) = share_v2::decode_acknowledge(&req)?;
        let authz = crate::authz::Authz::new(&ctx, &req);
        let (group, member) = match reader(&authz, body.group_id.as_ref(), body.member_id.as_ref()) {
            Ok(named) => named,
            Err(code) => return Ok(top_error(&req, code)),
        };
        let epoch = body.share_session_epoch;
        if epoch == 0 {
            return Ok(top_error(&req, share_session_code(SessionError::InvalidEpoch)));
        }
        let step = share::sessions::Step { conn: ctx.share_conn, epoch, add: &[], forget: &[] };
        if let Err(e) = share::session(&ctx.shard, &group, &member, step) {
            return Ok(top_error(&req, share_session_code(e)));
        }
        let meta = ctx.shard.metadata();
        let mut answers = Answers::new();
        let mut acks = Vec::new();
        for t in &body.topics {
            let Some(name) = meta.topic_by_id(t.topic_id.as_bytes()).map(str::to_string) else { continue };
            for p in &t.partitions {
                let tp = TopicPartition::new(name.clone(), p.partition_index);
                if !authz.topic(op::READ, &name) {
                    answers.entry(tp).or_default().error = (ResponseError::TopicAuthorizationFailed.code(), None);
                    continue;
                }
                let batches = ack_batches(
                    p.acknowledgement_batches.iter().map(|b| (&b.first_offset, &b.last_offset, &b.acknowledge_types)),
                    renew,
                );
                match batches {
                    Some(b) => acks.push((tp, b)),
                    None => answers.entry(tp).or_default().error = (ResponseError::InvalidRequest.code(), None),
                }
            }
        }
        drop(meta);
        let reply = async move {
            apply_acks(&ctx, &group, &member, acks, &mut answers).await;
            if epoch == -1 {
                share::release(&ctx.shard, &group, &member);
            }
            let lock_ms = sluice_shard::group_config::for_group(&ctx.shard, &group).share_record_lock_duration_ms;
            share_v2::acknowledge_response(&req, &response(&ctx, answers), lock_ms).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

fn response(ctx: &Ctx, answers: Answers) -> ShareAcknowledgeResponse {
    let meta = ctx.shard.metadata();
    let mut by_topic: BTreeMap<String, Vec<PartitionData>> = BTreeMap::new();
    for (tp, p) in answers {
        // One code per partition: the partition's own error, else its acknowledgement's.
        let (code, msg) = if p.error.0 != 0 { p.error } else { p.ack_error };
        let d = PartitionData::default()
            .with_partition_index(tp.partition.0)
            .with_error_code(code)
            .with_error_message(msg.map(StrBytes::from_string))
            .with_current_leader(LeaderIdAndEpoch::default().with_leader_id(-1).with_leader_epoch(-1));
        by_topic.entry(tp.topic).or_default().push(d);
    }
    let responses = by_topic
        .into_iter()
        .filter_map(|(name, parts)| {
            let id = meta.topics.get(&name)?.id;
            Some(ShareAcknowledgeTopicResponse::default().with_topic_id(super::uuid(id)).with_partitions(parts))
        })
        .collect();
    ShareAcknowledgeResponse::default().with_responses(responses)
}

fn top_error(req: &Request, code: i16) -> Reply {
    // Kafka answers a refused request with no lock timeout (0).
    super::reply_now(share_v2::acknowledge_response(req, &ShareAcknowledgeResponse::default().with_error_code(code), 0))
}
