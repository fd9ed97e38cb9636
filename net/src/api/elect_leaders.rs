//! ElectLeaders (key 43), versions 0–2: preferred leader election (`kafka-leader-election`).
//!
//! Contract: the partitions named (all partitions of every topic for a null list) are judged
//! from this broker's metadata snapshot, as Kafka's controller does
//! (`ReplicationControlManager.electLeaders`):
//! - an unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION;
//! - PREFERRED (type 0; v0 is always preferred): ELECTION_NOT_NEEDED when the first replica of
//!   the assignment leads; PREFERRED_LEADER_NOT_AVAILABLE when it is not live or not in the
//!   ISR; otherwise the partition's Raft group is asked to transfer leadership to it
//!   (`sluice_shard::replica::elect`, through this broker's replica; a broker with no replica
//!   of the partition forwards the request to the preferred replica's broker, `peer::elect`,
//!   as a Kafka broker forwards it to the controller), and the answer waits until the
//!   snapshot names it leader (the new leader records itself in the metadata log), at most
//!   the request's timeout capped at `ELECT_LEADERS_MAX_WAIT_MS` (REQUEST_TIMED_OUT after);
//! - UNCLEAN (type 1): Raft never elects a replica that may lack committed entries, so there
//!   is no unclean election: ELECTION_NOT_NEEDED when the partition has a live leader, else
//!   ELIGIBLE_LEADERS_NOT_AVAILABLE (Kafka's answer when no replica may be elected).
//!
//! For a null partition list, partitions answered ELECTION_NOT_NEEDED are left out, as Kafka.
//! Without ALTER on the cluster everything is CLUSTER_AUTHORIZATION_FAILED (Kafka's message
//! names the whole request; sluice's says "Request is not authorized.").

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::cluster::NodeId;
use sluice_core::limits::{ELECT_LEADERS_MAX_WAIT_MS, ELECT_LEADERS_POLL_MS};
use sluice_core::TopicPartition;
use sluice_shard::replica::elect::transfer;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ElectLeaders, name: "ElectLeaders", min_version: 0, max_version: 2, handle };

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// One partition's outcome: None while a transfer is in progress.
struct Item {
    tp: TopicPartition,
    preferred: i32,
    /// Error code and message.
    outcome: Option<(i16, Option<String>)>,
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ElectLeadersRequest = decode_body(&req)?;
        if !crate::authz::Authz::new(&ctx, &req).cluster(sluice_shard::metadata::acl::op::ALTER) {
            return Ok(reply_now(respond(&req, &refused(&body))));
        }
        let kind = if req.version >= 1 { body.election_type } else { PREFERRED };
        let all = body.topic_partitions.is_none();
        let mut items = named(&ctx, body.topic_partitions);
        if kind != PREFERRED && kind != UNCLEAN {
            for i in &mut items {
                i.outcome = Some((ResponseError::InvalidRequest.code(), Some(format!("unknown election type {kind}"))));
            }
        }
        for i in items.iter_mut().filter(|i| i.outcome.is_none()) {
            i.outcome = judge(&ctx, &i.tp, kind).map(|e| (e.code(), None)).or_else(|| {
                i.preferred = preferred(&ctx, &i.tp);
                None
            });
        }
        elect(&ctx, &mut items, body.timeout_ms).await;
        let resp = response(items, all, req.version);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}

/// The partitions the request names, or every partition for a null list.
fn named(
    ctx: &Ctx,
    topics: Option<Vec<kafka_protocol::messages::elect_leaders_request::TopicPartitions>>,
) -> Vec<Item> {
    let item =
        |topic: &str, p: i32| Item { tp: TopicPartition::new(topic.to_string(), p), preferred: -1, outcome: None };
    match topics {
        Some(topics) => topics.iter().flat_map(|t| t.partitions.iter().map(move |p| item(&t.topic.0, *p))).collect(),
        None => {
            let meta = ctx.shard.metadata();
            meta.topics
                .iter()
                .flat_map(|(name, t)| (0..t.shards.len()).filter_map(move |p| i32::try_from(p).ok().map(|p| (name, p))))
                .map(|(name, p)| item(name, p))
                .collect()
        }
    }
}

fn preferred(ctx: &Ctx, tp: &TopicPartition) -> i32 {
    let meta = ctx.shard.metadata();
    meta.partition(&tp.topic, tp.partition, ctx.node_id().0).and_then(|s| s.replicas.first().copied()).unwrap_or(-1)
}

/// The answer known without an election, or None when the preferred replica should be
/// asked to lead (module docs).
fn judge(ctx: &Ctx, tp: &TopicPartition, kind: i8) -> Option<ResponseError> {
    let meta = ctx.shard.metadata();
    let Some(state) = meta.partition(&tp.topic, tp.partition, ctx.node_id().0) else {
        return Some(ResponseError::UnknownTopicOrPartition);
    };
    let now = Instant::now();
    let live = |n: i32| ctx.cluster.is_live(NodeId(n), now);
    let led = state.leader >= 0 && live(state.leader);
    if kind == UNCLEAN {
        return Some(if led { ResponseError::ElectionNotNeeded } else { ResponseError::EligibleLeadersNotAvailable });
    }
    let preferred = *state.replicas.first()?;
    if led && state.leader == preferred {
        return Some(ResponseError::ElectionNotNeeded);
    }
    if !live(preferred) || !state.isr.contains(&preferred) {
        return Some(ResponseError::PreferredLeaderNotAvailable);
    }
    None
}

/// Starts the transfers of the items still undecided and waits for the snapshot to name their
/// preferred replicas leaders (module docs).
async fn elect(ctx: &Rc<Ctx>, items: &mut [Item], timeout_ms: i32) {
    let asked: Vec<(usize, TopicPartition, i32)> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.outcome.is_none())
        .map(|(at, i)| (at, i.tp.clone(), i.preferred))
        .collect();
    if asked.is_empty() {
        return;
    }
    for (at, started) in transfer(&ctx.shard, asked).await {
        // No replica here: the preferred replica's broker starts the transfer (peer::elect).
        let forwarded = started.is_ok() || {
            let (tp, to) = (&items[at].tp, items[at].preferred);
            ctx.peers.as_ref().is_some_and(|net| crate::peer::elect::forward(net, NodeId(to), tp, to))
        };
        if !forwarded {
            let why = format!("node {} could not be asked to lead", items[at].preferred);
            items[at].outcome = Some((ResponseError::PreferredLeaderNotAvailable.code(), Some(why)));
        }
    }
    let wait = u64::try_from(timeout_ms).unwrap_or(0).min(ELECT_LEADERS_MAX_WAIT_MS);
    let deadline = Instant::now() + Duration::from_millis(wait);
    loop {
        let meta = ctx.shard.metadata();
        for i in items.iter_mut().filter(|i| i.outcome.is_none()) {
            let leader = meta.partition(&i.tp.topic, i.tp.partition, ctx.node_id().0).map(|s| s.leader);
            if leader == Some(i.preferred) {
                i.outcome = Some((0, None));
            }
        }
        if items.iter().all(|i| i.outcome.is_some()) || Instant::now() >= deadline || ctx.shard.is_stopping() {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(ELECT_LEADERS_POLL_MS)).await;
    }
    for i in items.iter_mut().filter(|i| i.outcome.is_none()) {
        let why = format!("node {} did not become leader in {wait} ms", i.preferred);
        i.outcome = Some((ResponseError::RequestTimedOut.code(), Some(why)));
    }
}

fn response(items: Vec<Item>, all: bool, version: i16) -> ElectLeadersResponse {
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    for i in items {
        let (error, message) = i.outcome.expect("every item is decided");
        if all && error == ResponseError::ElectionNotNeeded.code() {
            continue;
        }
        let result = PartitionResult::default()
            .with_partition_id(i.tp.partition.0)
            .with_error_code(error)
            .with_error_message(message.map(StrBytes::from_string));
        match topics.last_mut().filter(|t| t.topic.0.as_str() == i.tp.topic) {
            Some(t) => t.partition_result.push(result),
            None => topics.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(i.tp.topic.clone())))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    let resp = ElectLeadersResponse::default().with_throttle_time_ms(0).with_replica_election_results(topics);
    if version >= 1 {
        resp.with_error_code(0)
    } else {
        resp
    }
}

/// Kafka's answer without ALTER on the cluster: CLUSTER_AUTHORIZATION_FAILED at the top and
/// for every partition named (none for a null list).
fn refused(body: &ElectLeadersRequest) -> ElectLeadersResponse {
    let code = ResponseError::ClusterAuthorizationFailed.code();
    let message = || Some(StrBytes::from_static_str("Request is not authorized."));
    let topics = body.topic_partitions.iter().flatten().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            PartitionResult::default().with_partition_id(*p).with_error_code(code).with_error_message(message())
        });
        ReplicaElectionResult::default().with_topic(t.topic.clone()).with_partition_result(partitions.collect())
    });
    ElectLeadersResponse::default().with_error_code(code).with_replica_election_results(topics.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(topic: &str, p: i32, e: i16) -> Item {
        Item { tp: TopicPartition::new(topic.to_string(), p), preferred: 0, outcome: Some((e, None)) }
    }

    #[test]
    fn all_partitions_leave_out_those_needing_no_election() {
        let items = || {
            vec![
                item("a", 0, ResponseError::ElectionNotNeeded.code()),
                item("a", 1, 0),
                item("b", 0, ResponseError::PreferredLeaderNotAvailable.code()),
            ]
        };
        let r = response(items(), true, 2);
        let got: Vec<(String, Vec<(i32, i16)>)> = r
            .replica_election_results
            .iter()
            .map(|t| {
                (t.topic.0.to_string(), t.partition_result.iter().map(|p| (p.partition_id, p.error_code)).collect())
            })
            .collect();
        assert_eq!(got, vec![("a".into(), vec![(1, 0)]), ("b".into(), vec![(0, 80)])]);
        let named = response(items(), false, 2);
        assert_eq!(named.replica_election_results[0].partition_result.len(), 2, "named partitions all answered");
        assert_eq!(named.replica_election_results[0].partition_result[0].error_code, 84);
    }
}
