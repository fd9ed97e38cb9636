//! ShareFetch (key 78), version 1 (as Kafka 4.x): acknowledge, then acquire records of a
//! share group's partitions for one member (KIP-932).
//!
//! Contract: the share session (`sluice_shard::share::session`) is checked and moved on while
//! the request is read, in connection order: epoch 0 opens one with the listed partitions,
//! a positive epoch must be the session's next (else INVALID_SHARE_SESSION_EPOCH, or
//! SHARE_SESSION_NOT_FOUND) and adds the listed partitions and drops the forgotten ones, -1
//! closes it (acknowledgements only; the member's acquired records are released). The
//! acknowledgements carried are applied and durable before the answer
//! (`acknowledge_error_code` per partition); then the session's partitions are acquired on
//! their owners, at most `max_records` records, waiting up to `max_wait_ms` (looking again
//! every `SHARE_FETCH_POLL_MS`) while nothing could be acquired. A partition's answer holds
//! whole batches from the log and the acquired offset ranges in them. READ on the group and
//! on each topic, as Kafka.

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::{code_and_message, share_ack_code, share_session_code};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ShareFetchRequest, ShareFetchResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::TopicPartition;
use sluice_shard::metadata::acl::op;
use sluice_shard::share::partition::AckType;
use sluice_shard::share::{self, AckBatch, AckItem, AcquireItem};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ShareFetch, name: "ShareFetch", min_version: 1, max_version: 1, handle };

/// Records per ShareFetch when the client names no limit.
const DEFAULT_MAX_RECORDS: usize = 500;

/// One partition's answer being built.
#[derive(Default)]
pub(super) struct Part {
    pub(super) error: (i16, Option<String>),
    pub(super) ack_error: (i16, Option<String>),
    records: Option<bytes::Bytes>,
    acquired: Vec<AcquiredRecords>,
}

pub(super) type Answers = BTreeMap<TopicPartition, Part>;

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ShareFetchRequest = decode_body(&req)?;
        let authz = crate::authz::Authz::new(&ctx, &req);
        let (group, member) = match reader(&authz, body.group_id.as_ref(), body.member_id.as_ref()) {
            Ok(named) => named,
            Err(code) => return Ok(top_error(&req, code)),
        };
        let meta = ctx.shard.metadata();
        let mut answers = Answers::new();
        let mut add = Vec::new();
        let mut acks = Vec::new();
        let mut max_bytes = BTreeMap::new();
        for t in &body.topics {
            let name = meta.topic_by_id(t.topic_id.as_bytes()).map(str::to_string);
            for p in &t.partitions {
                let Some(name) = &name else { continue };
                let tp = TopicPartition::new(name.clone(), p.partition_index);
                if !authz.topic(op::READ, name) {
                    answers.entry(tp).or_default().error = (ResponseError::TopicAuthorizationFailed.code(), None);
                    continue;
                }
                answers.entry(tp.clone()).or_default();
                max_bytes.insert(tp.clone(), usize::try_from(p.partition_max_bytes).unwrap_or(0));
                if !p.acknowledgement_batches.is_empty() {
                    acks.push((tp.clone(), ack_batches_of(&p.acknowledgement_batches)));
                }
                add.push(tp);
            }
        }
        let forget: Vec<TopicPartition> = body
            .forgotten_topics_data
            .iter()
            .filter_map(|t| Some((meta.topic_by_id(t.topic_id.as_bytes())?.to_string(), &t.partitions)))
            .flat_map(|(name, ps)| ps.iter().map(move |p| TopicPartition::new(name.clone(), *p)))
            .collect();
        drop(meta);
        let epoch = body.share_session_epoch;
        let session = share::session(&ctx.shard, &group, &member, epoch, &add, &forget);
        let fetch_parts = match session {
            Err(e) => return Ok(top_error(&req, share_session_code(e))),
            Ok(ps) => ps,
        };
        let reply = async move {
            apply_acks(&ctx, &group, &member, acks, &mut answers).await;
            if epoch == -1 {
                share::release(&ctx.shard, &group, &member);
            } else {
                let wait = Duration::from_millis(u64::try_from(body.max_wait_ms).unwrap_or(0));
                let max_records =
                    usize::try_from(body.max_records).ok().filter(|n| *n > 0).unwrap_or(DEFAULT_MAX_RECORDS);
                let default_bytes = usize::try_from(body.max_bytes).unwrap_or(0);
                let items: Vec<AcquireItem> = fetch_parts
                    .into_iter()
                    .enumerate()
                    .map(|(index, tp)| {
                        let b = max_bytes.get(&tp).copied().filter(|b| *b > 0).unwrap_or(default_bytes);
                        AcquireItem { index, tp, max_bytes: b.clamp(1, sluice_storage::cache::CHUNK_BYTES) }
                    })
                    .collect();
                acquire(&ctx, &group, &member, items, max_records, wait, &mut answers).await;
            }
            let lock_ms = sluice_shard::group_config::for_group(&ctx.shard, &group).share_record_lock_duration_ms;
            respond(&req, &response(&ctx, answers, lock_ms)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

/// The wire's acknowledgement batches (an unknown type makes the batch refused as a range).
pub(super) fn ack_batches<'a>(batches: impl IntoIterator<Item = (&'a i64, &'a i64, &'a Vec<i8>)>) -> Vec<AckBatch> {
    batches
        .into_iter()
        .map(|(first, last, types)| AckBatch {
            first: *first,
            last: *last,
            types: types.iter().map(|t| AckType::from_wire(*t)).collect::<Option<Vec<_>>>().unwrap_or_default(),
        })
        .collect()
}

fn ack_batches_of(b: &[kafka_protocol::messages::share_fetch_request::AcknowledgementBatch]) -> Vec<AckBatch> {
    ack_batches(b.iter().map(|b| (&b.first_offset, &b.last_offset, &b.acknowledge_types)))
}

/// Applies acknowledgements and records each partition's outcome in `answers`.
pub(super) async fn apply_acks(
    ctx: &Rc<Ctx>,
    group: &str,
    member: &str,
    acks: Vec<(TopicPartition, Vec<AckBatch>)>,
    answers: &mut Answers,
) {
    if acks.is_empty() {
        return;
    }
    let tps: Vec<TopicPartition> = acks.iter().map(|(tp, _)| tp.clone()).collect();
    let items = acks.into_iter().enumerate().map(|(index, (tp, batches))| AckItem { index, tp, batches }).collect();
    for (i, r) in share::acknowledge(&ctx.shard, group, member, items).await {
        let e = match r {
            Ok(Ok(())) => (0, None),
            Ok(Err(e)) => (share_ack_code(&e), None),
            Err(e) => code_and_message::<()>(&Err(e)),
        };
        answers.entry(tps[i].clone()).or_default().ack_error = e;
    }
}

async fn acquire(
    ctx: &Rc<Ctx>,
    group: &str,
    member: &str,
    items: Vec<AcquireItem>,
    max_records: usize,
    wait: Duration,
    answers: &mut Answers,
) {
    if items.is_empty() {
        return;
    }
    let deadline = Instant::now() + wait;
    let tps: Vec<TopicPartition> = items.iter().map(|i| i.tp.clone()).collect();
    loop {
        let got = share::acquire(&ctx.shard, group, member, items.clone(), max_records).await;
        let any = got.iter().any(|(_, r)| r.as_ref().map(|a| !a.ranges.is_empty()).unwrap_or(true));
        let now = Instant::now();
        if any || now >= deadline {
            for (i, r) in got {
                let part = answers.entry(tps[i].clone()).or_default();
                match r {
                    Ok(a) if !a.ranges.is_empty() => {
                        part.records = Some(a.records);
                        part.acquired = a
                            .ranges
                            .iter()
                            .map(|(f, l, c)| {
                                AcquiredRecords::default()
                                    .with_first_offset(*f)
                                    .with_last_offset(*l)
                                    .with_delivery_count(i16::try_from(*c).unwrap_or(i16::MAX))
                            })
                            .collect();
                    }
                    Ok(_) => {}
                    Err(e) => part.error = code_and_message::<()>(&Err(e)),
                }
            }
            return;
        }
        let pause = (deadline - now).min(Duration::from_millis(sluice_core::limits::SHARE_FETCH_POLL_MS));
        glommio::timer::sleep(pause).await;
    }
}

fn response(ctx: &Ctx, answers: Answers, lock_ms: i32) -> ShareFetchResponse {
    let meta = ctx.shard.metadata();
    let mut by_topic: BTreeMap<String, Vec<PartitionData>> = BTreeMap::new();
    for (tp, p) in answers {
        let d = PartitionData::default()
            .with_partition_index(tp.partition.0)
            .with_error_code(p.error.0)
            .with_error_message(p.error.1.map(StrBytes::from_string))
            .with_acknowledge_error_code(p.ack_error.0)
            .with_acknowledge_error_message(p.ack_error.1.map(StrBytes::from_string))
            .with_current_leader(LeaderIdAndEpoch::default().with_leader_id(-1).with_leader_epoch(-1))
            .with_records(Some(p.records.unwrap_or_default()))
            .with_acquired_records(p.acquired);
        by_topic.entry(tp.topic).or_default().push(d);
    }
    let responses = by_topic
        .into_iter()
        .filter_map(|(name, parts)| {
            let id = meta.topics.get(&name)?.id;
            Some(ShareFetchableTopicResponse::default().with_topic_id(super::uuid(id)).with_partitions(parts))
        })
        .collect();
    ShareFetchResponse::default().with_acquisition_lock_timeout_ms(lock_ms).with_responses(responses)
}

/// The group and member a ShareFetch or ShareAcknowledge names, once both are given and the
/// principal may read the group; the top-level error code otherwise.
pub(super) fn reader(
    authz: &crate::authz::Authz,
    group: Option<&kafka_protocol::messages::GroupId>,
    member: Option<&StrBytes>,
) -> Result<(String, String), i16> {
    let group = group.map(|g| g.0.to_string()).unwrap_or_default();
    let member = member.map(|m| m.to_string()).unwrap_or_default();
    if group.is_empty() || member.is_empty() {
        return Err(ResponseError::InvalidRequest.code());
    }
    if !authz.group(op::READ, &group) {
        return Err(ResponseError::GroupAuthorizationFailed.code());
    }
    Ok((group, member))
}

fn top_error(req: &Request, code: i16) -> Reply {
    super::reply_now(respond(req, &ShareFetchResponse::default().with_error_code(code)))
}
