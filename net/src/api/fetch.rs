//! Fetch (key 1), versions 4–18: read from the owners, long-poll until `min_bytes` or
//! `max_wait_ms`, answer within `max_bytes` (the first batch always whole).
//!
//! Contract: topics are named by name (v4–12) or by topic id (v13+); an unknown id gets
//! UNKNOWN_TOPIC_ID. Fetch sessions (KIP-227) are kept per shard (see `session`): a full fetch
//! with epoch 0 opens one, incremental fetches are answered with the changed partitions only.
//! Apart from the session lookup (first phase, in request order), everything happens in the
//! second phase, so a waiting fetch never holds up the connection's other requests.
//!
//! Leaders: each partition's owner checks the client's `current_leader_epoch` and its own
//! leadership (`sluice_shard::replica::epochs`); NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH
//! carry KIP-951's `CurrentLeader` (v12+) and the response those leaders' `NodeEndpoints`
//! (v16+, `leader_hints`).
//!
//! Memory: an answer is also cut to what is left of the shard's response budget
//! (`max_response_bytes_per_shard` minus the response bytes the shard already holds unwritten,
//! `metrics::response_bytes_held`), checked when the reads start (bounding them) and again when
//! they are done, in the same step as the answer is encoded and handed to the connection's
//! writer, which holds it in the count until written. As always in Kafka, the first batch of
//! the first partition with data is kept whole even when nothing is left, so every Fetch makes
//! progress and the shard holds at most the budget plus one batch per connection.
//!
//! read_committed (isolation level 1, see `committed`): answers stop at each partition's last
//! stable offset and list its aborted transactions.
//!
//! Client quotas (`throttled`): an answer is at most a quota window's worth of the client's
//! `consumer_byte_rate`; a throttled fetch is answered empty with `throttle_time_ms`, as Kafka.

mod committed;
mod session;

use super::{leader_hints, topic_name, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use crate::response::{encode_with_records, Frame};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use session::{Answered, Plan, Wanted, FINAL_EPOCH};
use sluice_core::limits::{MAX_FETCH_RESPONSE_BYTES, MAX_FETCH_WAIT_MS, MAX_PARTITION_READ_BYTES};
use sluice_core::{Offset, TopicPartition};
use sluice_shard::fetch::{fetch, trim, FetchPlan};
use sluice_shard::metadata::quota::QuotaKind;
use sluice_shard::metrics;
use sluice_shard::msg::{FetchItem, FetchResult};
use sluice_shard::txn::partition::TxnView;
use sluice_shard::txn::view::ViewItem;
use sluice_shard::PartitionError;
use std::rc::Rc;
use std::time::Duration;

/// A topic of the answer: its name when known, and its partitions (what was wanted, what was
/// last answered in the session, the index of its result).
type TopicLayout = (Option<String>, Vec<(Wanted, Option<Answered>, usize)>);

pub const SPEC: ApiSpec = ApiSpec { key: ApiKey::Fetch, name: "Fetch", min_version: 4, max_version: 18, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: FetchRequest = decode_body(&req)?;
        // Sessions exist from v7 on; older clients always send full fetches. The session is
        // looked up and advanced here, in the first phase, so pipelined fetches of one
        // connection see it in request order.
        let (session_id, epoch) =
            if req.version >= 7 { (body.session_id, body.session_epoch) } else { (0, FINAL_EPOCH) };
        let plan = session::plan(ctx.shard.id.index(), session_id, epoch, &body.topics, &body.forgotten_topics_data);
        Ok(answer(ctx, req, body, plan).boxed_local())
    }
    .boxed_local()
}

/// The second phase: reads what the session plan wants (long-polling), cuts the reads to the
/// shard's response budget, and encodes the answer.
async fn answer(ctx: Rc<Ctx>, req: Request, body: FetchRequest, plan: Plan) -> Result<Option<Frame>, FrameError> {
    let (session_id, incremental, wanted) = match plan {
        Plan::Full { session_id, wanted } => (session_id, false, wanted.into_iter().map(|w| (w, None)).collect()),
        Plan::Incremental { session_id, wanted } => (session_id, true, wanted),
        Plan::Refused(error) => {
            let resp = FetchResponse::default().with_error_code(error).with_session_id(0);
            return encode_with_records(req.correlation_id, req.version, &resp, &[]).map(Some);
        }
    };
    let client_id = req.client_id.clone();
    let asked = non_negative(body.max_bytes).min(MAX_FETCH_RESPONSE_BYTES);
    // Kafka's `getMaxValueInQuotaWindow`: no more than a quota window's worth in one answer.
    let asked = match crate::quota::max_in_window(&ctx, client_id.as_deref(), QuotaKind::Fetch) {
        Some(most) => asked.min(most),
        None => asked,
    };
    let max_bytes = asked.min(budget_left(&ctx));
    let authz = crate::authz::Authz::new(&ctx, &req);
    let Layout { topics, items, early } = lay_out(&ctx, &authz, wanted, max_bytes);
    let mut results: Vec<Option<PartitionRead>> = early.into_iter().map(|e| e.map(Err)).collect();
    let (read, views) = read(&ctx, &body, items, max_bytes, results.len()).await;
    // From here to the writer taking the frame nothing awaits, so no other response
    // can take the budget in between.
    for (index, r) in cut_to_budget(&ctx, read, asked, max_bytes < asked) {
        results[index] = Some(r);
    }
    count_topic_bytes(&topics, &results);
    let mut out = Answer { results, views, incremental, version: req.version, ..Answer::default() };
    let responses: Vec<_> = topics.into_iter().filter_map(|(_, parts)| out.topic(parts)).collect();
    let node_endpoints = if req.version >= 16 { node_endpoints(&ctx, &responses) } else { Vec::new() };
    let resp = FetchResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(0)
        .with_session_id(session_id)
        .with_responses(responses)
        .with_node_endpoints(node_endpoints);
    // The record sets are written from where the reads left them, not copied.
    let frame = encode_with_records(req.correlation_id, req.version, &resp, &out.records)?;
    if let Some(throttled) = throttled(&ctx, &req, client_id.as_deref(), session_id, frame.len()) {
        return throttled.map(Some);
    }
    session::answered(session_id, &out.answers);
    Ok(Some(frame))
}

/// Client quotas, as Kafka's `handleFetchRequest`: the answer's size counts against the
/// client's `consumer_byte_rate`; when that or the request-time quota throttles, the size is
/// taken back, the connection muted, and the answer is empty with `throttle_time_ms` (the
/// session, if any, is kept and its partitions are answered again by the next fetch).
fn throttled(
    ctx: &Ctx,
    req: &Request,
    client_id: Option<&str>,
    session_id: i32,
    bytes: usize,
) -> Option<Result<Frame, FrameError>> {
    let size = bytes as f64;
    let bandwidth = crate::quota::record(ctx, client_id, QuotaKind::Fetch, size);
    let throttle = bandwidth.max(req.request_throttle_ms.get());
    if throttle == 0 {
        return None;
    }
    crate::quota::unrecord(ctx, client_id, QuotaKind::Fetch, size);
    crate::quota::mute(ctx, throttle);
    let resp = FetchResponse::default().with_throttle_time_ms(throttle).with_error_code(0).with_session_id(session_id);
    Some(encode_with_records(req.correlation_id, req.version, &resp, &[]))
}

/// KIP-951 (v16+): the endpoints of the leaders named in `CurrentLeader` hints.
fn node_endpoints(ctx: &Ctx, responses: &[FetchableTopicResponse]) -> Vec<NodeEndpoint> {
    let named = responses.iter().flat_map(|t| &t.partitions).map(|p| p.current_leader.leader_id.0);
    leader_hints::endpoints(ctx, named)
        .into_iter()
        .map(|(id, host, port)| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(kafka_protocol::protocol::StrBytes::from_string(host))
                .with_port(port)
                .with_rack(None)
        })
        .collect()
}

/// One partition's read, or why it has none.
type PartitionRead = Result<sluice_storage::LogRead, PartitionError>;

/// The wanted partitions laid out for the answer: topics in the order first wanted, the reads
/// to make, and the partitions refused before reading (by result index).
struct Layout {
    topics: Vec<TopicLayout>,
    items: Vec<FetchItem>,
    early: Vec<Option<PartitionError>>,
}

/// Groups the wanted partitions by topic (consecutive ones of the same topic share an entry)
/// and names a read for each partition of a known topic, at most `max_bytes` each.
fn lay_out(
    ctx: &Ctx,
    authz: &crate::authz::Authz,
    wanted: Vec<(Wanted, Option<Answered>)>,
    max_bytes: usize,
) -> Layout {
    let mut out = Layout { topics: Vec::new(), items: Vec::new(), early: Vec::new() };
    for (w, before) in wanted {
        let index = out.early.len();
        let same = out.topics.last().is_some_and(|(_, parts)| {
            let first = &parts[0].0;
            first.topic == w.topic && first.topic_id == w.topic_id
        });
        if !same {
            out.topics.push((topic_name(ctx, &w.topic.0, &w.topic_id), Vec::new()));
        }
        let (name, parts) = out.topics.last_mut().expect("pushed");
        match name {
            None => out.early.push(Some(PartitionError::UnknownTopicId)),
            Some(n) if !authz.topic(sluice_shard::metadata::acl::op::READ, n) => {
                out.early.push(Some(PartitionError::TopicAuthorizationFailed))
            }
            Some(n) => {
                out.early.push(None);
                out.items.push(FetchItem {
                    index,
                    tp: TopicPartition::new(n.clone(), w.partition),
                    offset: Offset(w.fetch_offset),
                    max_bytes: non_negative(w.max_bytes).min(MAX_PARTITION_READ_BYTES).min(max_bytes),
                    current_leader_epoch: w.current_leader_epoch,
                });
            }
        }
        parts.push((w, before, index));
    }
    out
}

/// Reads `items` from their owners (long-polling per the request), through the LSO cut for
/// read_committed; the transaction view per result index (`slots` long, all `None` otherwise).
async fn read(
    ctx: &Rc<Ctx>,
    body: &FetchRequest,
    items: Vec<FetchItem>,
    max_bytes: usize,
    slots: usize,
) -> (Vec<FetchResult>, Vec<Option<TxnView>>) {
    let read_committed = body.isolation_level == 1;
    let wanted_views: Vec<ViewItem> = if read_committed {
        items.iter().map(|i| ViewItem { index: i.index, tp: i.tp.clone(), from: i.offset.0 }).collect()
    } else {
        Vec::new()
    };
    let plan = FetchPlan {
        items,
        max_wait: Duration::from_millis(u64::try_from(body.max_wait_ms.clamp(0, MAX_FETCH_WAIT_MS)).unwrap_or(0)),
        // A budget-cut answer does not wait for more than it may carry.
        min_bytes: non_negative(body.min_bytes).min(max_bytes.max(1)),
        max_bytes,
    };
    if read_committed {
        committed::read(&ctx.shard, plan, wanted_views, slots).await
    } else {
        (fetch(&ctx.shard, plan).await, vec![None; slots])
    }
}

/// The reads cut to what is left of the shard's response budget now; counts (and logs) an
/// answer that was cut, here or already when the reads started (`shrunk`).
fn cut_to_budget(ctx: &Ctx, read: Vec<FetchResult>, asked: usize, shrunk: bool) -> Vec<FetchResult> {
    let before = records_len(&read);
    let read = trim(read, budget_left(ctx));
    let kept = records_len(&read);
    if shrunk || kept < before {
        metrics::fetch_shrunk();
        tracing::debug!(
            asked,
            kept,
            held = metrics::response_bytes_held(),
            "fetch answer cut to the shard's response budget"
        );
    }
    read
}

/// Bytes out per topic: what the answer carries.
fn count_topic_bytes(topics: &[TopicLayout], results: &[Option<PartitionRead>]) {
    for (name, parts) in topics {
        let sent: usize = parts
            .iter()
            .filter_map(|(_, _, at)| match &results[*at] {
                Some(Ok(r)) => Some(r.records.len()),
                _ => None,
            })
            .sum();
        if let (Some(name), true) = (name, sent > 0) {
            metrics::add_topic_bytes(name, sent as u64, false);
        }
    }
}

/// The answer being built: the results to take, and what the answer collects (the record sets
/// to write, what the session is told was answered).
#[derive(Default)]
struct Answer {
    results: Vec<Option<PartitionRead>>,
    views: Vec<Option<TxnView>>,
    incremental: bool,
    version: i16,
    records: Vec<Bytes>,
    answers: Vec<(Wanted, Answered)>,
}

impl Answer {
    /// A topic's entry: its partitions (an incremental fetch only those that changed since
    /// last answered); `None` for an incremental fetch where none did.
    fn topic(&mut self, parts: Vec<(Wanted, Option<Answered>, usize)>) -> Option<FetchableTopicResponse> {
        let (topic, topic_id) = (parts[0].0.topic.clone(), parts[0].0.topic_id);
        let mut partitions = Vec::with_capacity(parts.len());
        for (w, before, at) in parts {
            let r = self.results[at].take().expect("every partition has a result");
            let now = match &r {
                Ok(read) => Answered { high_watermark: read.high_watermark.0, log_start: read.log_start.0 },
                Err(_) => Answered { high_watermark: -1, log_start: -1 },
            };
            let has_records = r.as_ref().is_ok_and(|read| !read.records.is_empty());
            if self.incremental && !session::changed(before, now, has_records, r.is_err()) {
                continue;
            }
            let base =
                PartitionData::default().with_partition_index(w.partition).with_preferred_read_replica(BrokerId(-1));
            self.answers.push((w, now));
            partitions.push(match r {
                Ok(read) => self.partition(base, read, at),
                Err(e) => error_partition(base, &e),
            });
        }
        (!partitions.is_empty() || !self.incremental).then(|| {
            FetchableTopicResponse::default().with_topic(topic).with_topic_id(topic_id).with_partitions(partitions)
        })
    }

    /// A partition answered with what was read (result index `at`); its record set is also
    /// kept for the writer.
    fn partition(&mut self, base: PartitionData, read: sluice_storage::LogRead, at: usize) -> PartitionData {
        let view = &self.views[at];
        self.records.push(read.records.clone());
        base.with_error_code(0)
            .with_high_watermark(read.high_watermark.0)
            .with_last_stable_offset(view.as_ref().map_or(read.high_watermark.0, |v| v.last_stable_offset))
            .with_log_start_offset(if self.version >= 5 { read.log_start.0 } else { -1 })
            // READ_UNCOMMITTED: Kafka answers null, not an empty list.
            .with_aborted_transactions(view.as_ref().map(committed::aborted))
            .with_records(Some(read.records))
    }
}

/// A partition answered with an error, field for field as Kafka 4.x answers it: watermarks
/// and log start offset -1 and an empty record set, never a null one (librdkafka rejects the
/// whole response on a record set of length -1, so a consumer could never see
/// OFFSET_OUT_OF_RANGE and reset). Aborted transactions are an empty list for a partition
/// Kafka refuses before reading (unknown topic, partition or topic id) and null for one whose
/// read failed (`ReplicaManager.createLogReadResult`).
///
/// NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH name the leader this broker knows in
/// `CurrentLeader` (KIP-951, a tagged field from v12), as Kafka's `KafkaApis.handleFetchRequest`.
fn error_partition(base: PartitionData, e: &PartitionError) -> PartitionData {
    let refused_before_read = matches!(e, PartitionError::UnknownTopicOrPartition | PartitionError::UnknownTopicId);
    let base = match leader_hints::hint(e) {
        Some((id, epoch)) => {
            base.with_current_leader(LeaderIdAndEpoch::default().with_leader_id(BrokerId(id)).with_leader_epoch(epoch))
        }
        None => base,
    };
    base.with_error_code(code(e))
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_aborted_transactions(refused_before_read.then(Vec::new))
        .with_records(Some(Bytes::new()))
}

/// Bytes of the shard's response budget not held by unwritten responses.
fn budget_left(ctx: &Ctx) -> usize {
    let held = usize::try_from(metrics::response_bytes_held()).unwrap_or(usize::MAX);
    ctx.shard.config.max_response_bytes_per_shard.saturating_sub(held)
}

/// A byte count from the request; a negative one counts as 0.
fn non_negative(v: i32) -> usize {
    usize::try_from(v).unwrap_or(0)
}

fn records_len(read: &[FetchResult]) -> usize {
    read.iter().map(|(_, r)| r.as_ref().map(|r| r.records.len()).unwrap_or(0)).sum()
}
