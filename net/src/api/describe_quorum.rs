//! DescribeQuorum (key 55), versions 0–2: the metadata log's Raft quorum, for Kafka's
//! `kafka-metadata-quorum describe --status / --replication`.
//!
//! Contract:
//! - Needs DESCRIBE on the cluster (else top-level CLUSTER_AUTHORIZATION_FAILED, as Kafka).
//! - The request must name `__cluster_metadata` partition 0 alone (as KRaft names the metadata
//!   log); otherwise every partition it names is answered UNKNOWN_TOPIC_OR_PARTITION.
//! - In a cluster the answer comes from the metadata log's leader
//!   (`sluice_shard::replica::quorum`): this broker's shard 0 when the cluster view names this
//!   broker as the controller, else the request is forwarded to the leader over the peer
//!   links (`peer::quorum`), as a Kafka broker forwards it to the active controller. A broker
//!   that turns out not to lead, a leader that does not answer within
//!   `DESCRIBE_QUORUM_FORWARD_TIMEOUT_MS`, or no known leader: NOT_LEADER_OR_FOLLOWER on the
//!   partition (retriable: the admin client asks again), as a KRaft controller that is not
//!   the leader answers.
//! - The partition: leader, leader epoch (the Raft term), high watermark (the commit index as
//!   an offset), every member as a voter (log end offset, and from v1 last fetch and last
//!   caught-up timestamps, -1 when unknown), no observers (every sluice broker is a voter), the
//!   directory ids zero (sluice has no directory ids; Kafka's static quorums show zero too).
//!   From v2 `nodes`: each voter's listener `PEER` at its `controller_quorum_voters` address
//!   (the broker-to-broker listener the quorum speaks on, as Kafka lists its voters'
//!   `CONTROLLER` listener).
//! - A lone broker has no metadata log: it answers as the one voter of its own quorum,
//!   leader epoch 0, high watermark and log end offset its metadata version (one per change
//!   it published), and in `nodes` the listener the client came in on.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_shard::metadata::acl::op;
use sluice_shard::replica::quorum::{QuorumState, VoterState};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DescribeQuorum, name: "DescribeQuorum", min_version: 0, max_version: 2, handle };

/// The metadata log as KRaft names it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// The listener name of the voters' addresses in `nodes` (sluice's broker-to-broker listener).
pub const PEER_LISTENER: &str = "PEER";

/// A voter's address as `nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterEndpoint {
    pub node: i32,
    pub listener: String,
    pub host: String,
    pub port: u16,
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeQuorumRequest = decode_body(&req)?;
        if !crate::authz::Authz::new(&ctx, &req).cluster(op::DESCRIBE) {
            let resp =
                DescribeQuorumResponse::default().with_error_code(ResponseError::ClusterAuthorizationFailed.code());
            return Ok(reply_now(respond(&req, &resp)));
        }
        if !names_the_metadata_log(&body) {
            return Ok(reply_now(respond(&req, &unknown_partitions(&body))));
        }
        let resp = match quorum(&ctx).await {
            Ok(q) => answer(req.version, &q, &endpoints(&ctx)),
            Err(error) => partition_error(error),
        };
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}

/// Whether the request asks for `__cluster_metadata` partition 0 and nothing else.
fn names_the_metadata_log(body: &DescribeQuorumRequest) -> bool {
    matches!(body.topics.as_slice(), [t] if t.topic_name.0.as_str() == METADATA_TOPIC
        && matches!(t.partitions.as_slice(), [p] if p.partition_index == 0))
}

/// The quorum from its leader, or the partition error to answer (module docs).
async fn quorum(ctx: &Ctx) -> Result<QuorumState, ResponseError> {
    let Some(peers) = ctx.peers.as_ref() else { return Ok(lone(ctx)) };
    let leader = ctx.cluster.controller();
    if leader == ctx.cluster.me().node_id {
        return sluice_shard::replica::quorum::describe_on_broker(&ctx.shard)
            .await
            .ok_or(ResponseError::NotLeaderOrFollower);
    }
    crate::peer::quorum::ask(peers, leader).await.map_err(|e| {
        tracing::debug!(%leader, error = %e, "DescribeQuorum not answered by the metadata log's leader");
        ResponseError::NotLeaderOrFollower
    })
}

/// A lone broker's quorum of one (module docs).
fn lone(ctx: &Ctx) -> QuorumState {
    let me = ctx.node_id().0;
    let version = i64::try_from(ctx.shard.metadata().version).unwrap_or(i64::MAX);
    let now = sluice_core::clock::now_ms();
    QuorumState {
        leader: me,
        leader_epoch: 0,
        high_watermark: version,
        voters: vec![VoterState { node: me, log_end_offset: version, last_fetch_ms: now, last_caught_up_ms: now }],
    }
}

/// Every voter's address for `nodes`: the peer listeners of `controller_quorum_voters`, or
/// this lone broker's client listener.
fn endpoints(ctx: &Ctx) -> Vec<VoterEndpoint> {
    match ctx.peers.as_ref() {
        Some(p) => p
            .identity
            .voters
            .iter()
            .map(|v| VoterEndpoint { node: v.id.0, listener: PEER_LISTENER.into(), host: v.host.clone(), port: v.port })
            .collect(),
        None => vec![VoterEndpoint {
            node: ctx.node_id().0,
            listener: ctx.listener.name.clone(),
            host: ctx.advertised_host.clone(),
            port: u16::try_from(ctx.advertised_port).unwrap_or(0),
        }],
    }
}

/// The answer for a client of version `v` (module docs).
pub fn answer(v: i16, q: &QuorumState, endpoints: &[VoterEndpoint]) -> DescribeQuorumResponse {
    let voters = q
        .voters
        .iter()
        .map(|s| {
            ReplicaState::default()
                .with_replica_id(BrokerId(s.node))
                .with_log_end_offset(s.log_end_offset)
                .with_last_fetch_timestamp(s.last_fetch_ms)
                .with_last_caught_up_timestamp(s.last_caught_up_ms)
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_error_code(0)
        .with_leader_id(BrokerId(q.leader))
        .with_leader_epoch(q.leader_epoch)
        .with_high_watermark(q.high_watermark)
        .with_current_voters(voters)
        .with_observers(vec![]);
    let nodes = if v >= 2 {
        let mut ids: Vec<i32> = q.voters.iter().map(|s| s.node).collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| node(id, endpoints)).collect()
    } else {
        vec![]
    };
    DescribeQuorumResponse::default().with_error_code(0).with_topics(vec![metadata_topic(partition)]).with_nodes(nodes)
}

fn node(id: i32, endpoints: &[VoterEndpoint]) -> Node {
    let listeners = endpoints
        .iter()
        .filter(|e| e.node == id)
        .map(|e| {
            Listener::default()
                .with_name(StrBytes::from_string(e.listener.clone()))
                .with_host(StrBytes::from_string(e.host.clone()))
                .with_port(e.port)
        })
        .collect();
    Node::default().with_node_id(BrokerId(id)).with_listeners(listeners)
}

fn metadata_topic(partition: PartitionData) -> TopicData {
    TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(vec![partition])
}

/// The metadata log's partition with `error` (no leader known, or not this broker).
pub fn partition_error(error: ResponseError) -> DescribeQuorumResponse {
    let partition =
        PartitionData::default().with_partition_index(0).with_error_code(error.code()).with_leader_id(BrokerId(-1));
    DescribeQuorumResponse::default().with_topics(vec![metadata_topic(partition)])
}

/// Every partition the request names, UNKNOWN_TOPIC_OR_PARTITION (Kafka's answer to anything
/// but the metadata log).
fn unknown_partitions(body: &DescribeQuorumRequest) -> DescribeQuorumResponse {
    let code = ResponseError::UnknownTopicOrPartition.code();
    let topics = body
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| PartitionData::default().with_partition_index(p.partition_index).with_error_code(code))
                .collect();
            TopicData::default().with_topic_name(t.topic_name.clone()).with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::describe_quorum_request;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn quorum() -> QuorumState {
        QuorumState {
            leader: 1,
            leader_epoch: 5,
            high_watermark: 120,
            voters: vec![
                VoterState { node: 0, log_end_offset: 118, last_fetch_ms: 1_000, last_caught_up_ms: 990 },
                VoterState { node: 1, log_end_offset: 120, last_fetch_ms: 1_010, last_caught_up_ms: 1_010 },
                VoterState { node: 2, log_end_offset: -1, last_fetch_ms: -1, last_caught_up_ms: -1 },
            ],
        }
    }

    fn endpoints() -> Vec<VoterEndpoint> {
        (0..3u16)
            .map(|n| VoterEndpoint {
                node: i32::from(n),
                listener: PEER_LISTENER.into(),
                host: "127.0.0.1".into(),
                port: 9192 + n,
            })
            .collect()
    }

    /// Encodes and decodes at version `v`, as a client would read it.
    fn on_the_wire(resp: &DescribeQuorumResponse, v: i16) -> DescribeQuorumResponse {
        let mut b = BytesMut::new();
        resp.encode(&mut b, v).expect("encodes");
        DescribeQuorumResponse::decode(&mut b.freeze(), v).expect("decodes")
    }

    #[test]
    fn every_field_of_the_quorum_reaches_a_v2_client() {
        let got = on_the_wire(&answer(2, &quorum(), &endpoints()), 2);
        assert_eq!(got.error_code, 0);
        let [t] = got.topics.as_slice() else { panic!("one topic: {got:?}") };
        assert_eq!(t.topic_name.0.as_str(), "__cluster_metadata");
        let [p] = t.partitions.as_slice() else { panic!("one partition") };
        assert_eq!(
            (p.partition_index, p.error_code, p.leader_id.0, p.leader_epoch, p.high_watermark),
            (0, 0, 1, 5, 120)
        );
        let voters: Vec<_> = p
            .current_voters
            .iter()
            .map(|r| (r.replica_id.0, r.log_end_offset, r.last_fetch_timestamp, r.last_caught_up_timestamp))
            .collect();
        assert_eq!(voters, vec![(0, 118, 1_000, 990), (1, 120, 1_010, 1_010), (2, -1, -1, -1)]);
        assert!(p.observers.is_empty());
        assert!(p.current_voters.iter().all(|r| r.replica_directory_id.is_nil()));
        let nodes: Vec<_> = got
            .nodes
            .iter()
            .map(|n| {
                let [l] = n.listeners.as_slice() else { panic!("one listener") };
                (n.node_id.0, l.name.to_string(), l.host.to_string(), l.port)
            })
            .collect();
        assert_eq!(
            nodes,
            (0..3u16)
                .map(|n| (i32::from(n), "PEER".to_string(), "127.0.0.1".to_string(), 9192 + n))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn older_clients_get_what_their_version_has() {
        let v0 = on_the_wire(&answer(0, &quorum(), &endpoints()), 0);
        let p = &v0.topics[0].partitions[0];
        assert!(p.current_voters.iter().all(|r| r.last_fetch_timestamp == -1 && r.last_caught_up_timestamp == -1));
        assert_eq!(p.current_voters[1].log_end_offset, 120);
        let v1 = on_the_wire(&answer(1, &quorum(), &endpoints()), 1);
        assert!(v1.nodes.is_empty());
        assert_eq!(v1.topics[0].partitions[0].current_voters[0].last_caught_up_timestamp, 990);
    }

    #[test]
    fn only_the_metadata_log_is_described() {
        let ask = |topic: &str, partitions: &[i32]| {
            DescribeQuorumRequest::default().with_topics(vec![describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| describe_quorum_request::PartitionData::default().with_partition_index(*p))
                        .collect(),
                )])
        };
        assert!(names_the_metadata_log(&ask("__cluster_metadata", &[0])));
        for bad in [ask("__cluster_metadata", &[1]), ask("__cluster_metadata", &[0, 1]), ask("t", &[0])] {
            assert!(!names_the_metadata_log(&bad));
            let got = on_the_wire(&unknown_partitions(&bad), 2);
            assert!(got.topics[0].partitions.iter().all(|p| p.error_code == 3), "{got:?}");
            assert_eq!(got.topics[0].partitions.len(), bad.topics[0].partitions.len());
        }
        assert!(!names_the_metadata_log(&DescribeQuorumRequest::default()));
    }

    #[test]
    fn a_broker_that_cannot_answer_says_not_leader() {
        let got = on_the_wire(&partition_error(ResponseError::NotLeaderOrFollower), 2);
        assert_eq!(got.error_code, 0);
        let p = &got.topics[0].partitions[0];
        assert_eq!((p.error_code, p.leader_id.0), (ResponseError::NotLeaderOrFollower.code(), -1));
    }
}
