//! ShareFetch (key 78), versions 1 and 2 (as Kafka 4.4): acknowledge, then acquire records of a
//! share group's partitions for one member (KIP-932; version 2 through `share_v2`).
//!
//! Contract: the share session (`sluice_shard::share::session`) is checked and moved on while
//! the request is read, in connection order: epoch 0 opens one with the listed partitions,
//! a positive epoch must be the session's next (else INVALID_SHARE_SESSION_EPOCH, or
//! SHARE_SESSION_NOT_FOUND) and adds the listed partitions and drops the forgotten ones, -1
//! closes it (acknowledgements only; the member's acquired records are released, as they are
//! when the connection that opened the session ends). The
//! acknowledgements carried are applied and durable before the answer
//! (`acknowledge_error_code` per partition); then the session's partitions are acquired on
//! their owners, at most `max_records` records, waiting up to `max_wait_ms` (looking again
//! every `SHARE_FETCH_POLL_MS`) while nothing could be acquired. A partition's answer holds
//! whole batches from the log and the acquired offset ranges in them. READ on the group and
//! on each topic, as Kafka. Version 2: with `ShareAcquireMode` record_limit (KIP-1206) the
//! answer never holds more than `max_records` acquired records in all (the partitions are
//! acquired one after the other with what is left, cutting inside batches); with `IsRenewAck`
//! (KIP-1222) the acknowledgements may be RENEW and nothing is acquired — Kafka then requires
//! `max_wait_ms`, `min_bytes`, `max_bytes` and `max_records` to be 0 (else INVALID_REQUEST).
//! A partition's acknowledgement batches are checked as Kafka checks them before any is
//! applied (`ack_batches`: INVALID_REQUEST for the partition, RENEW without `IsRenewAck`
//! among the refusals).

use super::share_v2::{self, AcquireMode};
use super::{ApiSpec, Ctx, Reply};
use crate::errors::{code_and_message, share_ack_code, share_session_code};
use crate::frame::{FrameError, Request};
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
use sluice_shard::route::Tagged;
use sluice_shard::share::partition::AckType;
use sluice_shard::share::{self, AckBatch, AckItem, AcquireItem, Acquired};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ShareFetch, name: "ShareFetch", min_version: 1, max_version: 2, handle };

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
        let (body, extra) = share_v2::decode_fetch(&req)?;
        let authz = crate::authz::Authz::new(&ctx, &req);
        let (group, member) = match reader(&authz, body.group_id.as_ref(), body.member_id.as_ref()) {
            Ok(named) => named,
            Err(code) => return Ok(top_error(&req, code)),
        };
        let Some(mode) = extra.mode.filter(|_| !extra.renew || renew_only(&body)) else {
            return Ok(top_error(&req, ResponseError::InvalidRequest.code()));
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
                let part = answers.entry(tp.clone()).or_default();
                max_bytes.insert(tp.clone(), usize::try_from(p.partition_max_bytes).unwrap_or(0));
                match ack_batches_of(&p.acknowledgement_batches, extra.renew) {
                    Some(b) if b.is_empty() => {}
                    Some(b) => acks.push((tp.clone(), b)),
                    None => part.ack_error = (ResponseError::InvalidRequest.code(), None),
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
        let step = share::sessions::Step { conn: ctx.share_conn, epoch, add: &add, forget: &forget };
        let session = share::session(&ctx.shard, &group, &member, step);
        let fetch_parts = match session {
            Err(e) => return Ok(top_error(&req, share_session_code(e))),
            Ok(ps) => ps,
        };
        let reply = async move {
            apply_acks(&ctx, &group, &member, acks, &mut answers).await;
            if epoch == -1 {
                share::release(&ctx.shard, &group, &member);
            } else if !extra.renew {
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
                let limit = Limit { max_records, mode };
                acquire(&ctx, &group, &member, items, limit, wait, &mut answers).await;
            }
            let lock_ms = sluice_shard::group_config::for_group(&ctx.shard, &group).share_record_lock_duration_ms;
            share_v2::fetch_response(&req, &response(&ctx, answers, lock_ms)).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

/// A ShareFetch of version 2 with `IsRenewAck` fetches nothing: Kafka refuses one that asks
/// for records.
fn renew_only(body: &ShareFetchRequest) -> bool {
    body.max_wait_ms == 0 && body.min_bytes == 0 && body.max_bytes == 0 && body.max_records == 0
}

/// One partition's acknowledgement batches, checked as Kafka 4.4's
/// `KafkaApis.validateAcknowledgementBatches` does before any is applied: `first <= last`, each
/// batch after the previous one, one type for the whole batch or one per offset, every type
/// known, RENEW (4) only in a request with `IsRenewAck` (`renew`). `None`: the partition's
/// acknowledgements are refused (INVALID_REQUEST), none applied.
pub(super) fn ack_batches<'a>(
    batches: impl IntoIterator<Item = (&'a i64, &'a i64, &'a Vec<i8>)>,
    renew: bool,
) -> Option<Vec<AckBatch>> {
    let mut out = Vec::new();
    let mut previous_last = -1i64;
    for (&first, &last, types) in batches {
        let width = last.checked_sub(first).and_then(|w| w.checked_add(1))?;
        let one_each = i64::try_from(types.len()).ok() == Some(width);
        if first > last || first <= previous_last || types.is_empty() || (types.len() > 1 && !one_each) {
            return None;
        }
        let types = types.iter().map(|t| AckType::from_wire(*t)).collect::<Option<Vec<_>>>()?;
        if !renew && types.contains(&AckType::Renew) {
            return None;
        }
        previous_last = last;
        out.push(AckBatch { first, last, types });
    }
    Some(out)
}

fn ack_batches_of(
    b: &[kafka_protocol::messages::share_fetch_request::AcknowledgementBatch],
    renew: bool,
) -> Option<Vec<AckBatch>> {
    ack_batches(b.iter().map(|b| (&b.first_offset, &b.last_offset, &b.acknowledge_types)), renew)
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

/// How many records a ShareFetch may acquire, and how strictly.
#[derive(Debug, Clone, Copy)]
struct Limit {
    max_records: usize,
    mode: AcquireMode,
}

async fn acquire(
    ctx: &Rc<Ctx>,
    group: &str,
    member: &str,
    items: Vec<AcquireItem>,
    limit: Limit,
    wait: Duration,
    answers: &mut Answers,
) {
    if items.is_empty() {
        return;
    }
    let deadline = Instant::now() + wait;
    let tps: Vec<TopicPartition> = items.iter().map(|i| i.tp.clone()).collect();
    loop {
        let got = match limit.mode {
            // Each owner shard acquires up to the limit at once.
            AcquireMode::BatchOptimized => {
                share::acquire(&ctx.shard, group, member, items.clone(), limit.max_records).await
            }
            AcquireMode::RecordLimit => acquire_in_turn(ctx, group, member, &items, limit.max_records).await,
        };
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

/// record_limit (KIP-1206): the partitions one after the other, each with what the ones before
/// left of `max_records`, so the whole answer never holds more.
async fn acquire_in_turn(
    ctx: &Rc<Ctx>,
    group: &str,
    member: &str,
    items: &[AcquireItem],
    max_records: usize,
) -> Vec<Tagged<Acquired>> {
    let mut left = max_records;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if left == 0 {
            out.push((item.index, Ok(Acquired::default())));
            continue;
        }
        for (i, r) in share::acquire(&ctx.shard, group, member, vec![item.clone()], left).await {
            if let Ok(a) = &r {
                let n: i64 = a.ranges.iter().map(|(f, l, _)| l - f + 1).sum();
                left = left.saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
            }
            out.push((i, r));
        }
    }
    out
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
    super::reply_now(share_v2::fetch_response(req, &ShareFetchResponse::default().with_error_code(code)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(batches: &[(i64, i64, Vec<i8>)], renew: bool) -> Option<Vec<AckBatch>> {
        ack_batches(batches.iter().map(|(f, l, t)| (f, l, t)), renew)
    }

    #[test]
    fn acknowledgement_batches_are_checked_as_kafka_does() {
        let ok = check(&[(0, 2, vec![1]), (3, 4, vec![1, 2]), (6, 6, vec![0])], false).unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(ok[1].types, vec![AckType::Accept, AckType::Release]);
        assert!(check(&[], false).unwrap().is_empty());
        // Inverted, overlapping or out of order, no type, a type count that is neither 1 nor
        // the width, an unknown type.
        assert!(check(&[(3, 2, vec![1])], false).is_none());
        assert!(check(&[(0, 2, vec![1]), (2, 3, vec![1])], false).is_none());
        assert!(check(&[(5, 6, vec![1]), (0, 1, vec![1])], false).is_none());
        assert!(check(&[(0, 2, vec![])], false).is_none());
        assert!(check(&[(0, 2, vec![1, 1])], false).is_none());
        assert!(check(&[(0, 0, vec![5])], false).is_none());
        assert!(check(&[(0, 0, vec![-1])], false).is_none());
        // RENEW only when the request says IsRenewAck (never in version 1).
        assert!(check(&[(0, 0, vec![4])], false).is_none());
        assert_eq!(check(&[(0, 1, vec![4, 1])], true).unwrap()[0].types, vec![AckType::Renew, AckType::Accept]);
        assert!(check(&[(i64::MIN, i64::MAX, vec![1])], false).is_none());
    }

    #[test]
    fn a_renew_fetch_asks_for_nothing() {
        let zero = ShareFetchRequest::default().with_max_bytes(0);
        assert!(renew_only(&zero));
        assert!(!renew_only(&ShareFetchRequest::default()), "max_bytes defaults to 2^31-1");
        assert!(!renew_only(&zero.clone().with_max_records(1)));
        assert!(!renew_only(&zero.with_max_wait_ms(500)));
    }
}
