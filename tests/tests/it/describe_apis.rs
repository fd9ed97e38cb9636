//! DescribeQuorum and DescribeTopicPartitions with raw requests: on three brokers every broker
//! answers DescribeQuorum with the same leader (the others forward to it over the peer links),
//! a quorum whose voters are the members, a high watermark > 0 and caught-up followers; on a
//! lone broker the one-voter quorum, UNKNOWN_TOPIC_OR_PARTITION for anything but
//! `__cluster_metadata`-0, and DescribeTopicPartitions' pages (cursor inside a topic, at a
//! topic boundary) and its answers for a topic never created and for a deleted one.
//!
//! Contract: every broker is stopped by its harness; every wait has a deadline.

use crate::common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_tests::Broker;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const INVALID_REQUEST: i16 = 42;

fn quorum_request(topic: &str, partition: i32) -> DescribeQuorumRequest {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![PartitionData::default().with_partition_index(partition)])])
}

fn describe_quorum(port: u16, version: i16) -> DescribeQuorumResponse {
    call(port, ApiKey::DescribeQuorum, version, &quorum_request("__cluster_metadata", 0))
}

/// (leader, epoch, high watermark, [(voter, log end offset, last fetch, last caught up)]), or
/// the partition's error code.
type Quorum = (i32, i32, i64, Vec<(i32, i64, i64, i64)>);

fn quorum_of(r: &DescribeQuorumResponse) -> Result<Quorum, i16> {
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].topic_name.0.as_str(), "__cluster_metadata");
    let p = &r.topics[0].partitions[0];
    if p.error_code != 0 {
        return Err(p.error_code);
    }
    let voters = p
        .current_voters
        .iter()
        .map(|v| (v.replica_id.0, v.log_end_offset, v.last_fetch_timestamp, v.last_caught_up_timestamp))
        .collect();
    assert!(p.observers.is_empty(), "observers {:?}", p.observers);
    Ok((p.leader_id.0, p.leader_epoch, p.high_watermark, voters))
}

fn member(node: usize, peer_ports: &[u16]) -> Broker {
    cluster_member(
        node,
        peer_ports,
        &MemberOpts { dir_prefix: "sluice-it-quorum-", session_ms: 1000, env: &[], config: None },
    )
}

#[test]
fn every_member_answers_describe_quorum_with_the_leaders_view() {
    let _slot = exclusive_slot();
    let peer_ports = free_ports(3);
    let brokers: Vec<Broker> = (0..3).map(|i| member(i, &peer_ports)).collect();
    // A topic makes the metadata log grow past its first entries.
    create_topic_rf(&brokers[0].addr(), &topic_name("quorum"), 1, 3);
    let start = Instant::now();
    let settled = loop {
        let last = brokers.iter().map(|b| quorum_of(&describe_quorum(b.port(), 2))).collect::<Vec<_>>();
        let agreed = last.iter().all(|q| q.is_ok() && q.as_ref().map(|q| q.0) == last[0].as_ref().map(|q| q.0));
        let caught_up = last.iter().flatten().all(|(_, _, hw, voters)| {
            voters.iter().all(|(_, leo, fetch, caught_up)| *leo >= *hw && *fetch > 0 && *caught_up > 0)
        });
        if agreed && caught_up {
            break last[0].clone().expect("ok");
        }
        assert!(start.elapsed() < DEADLINE, "no settled quorum within {DEADLINE:?}: {last:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (leader, epoch, hw, voters) = settled;
    assert!((0..3).contains(&leader), "leader {leader}");
    assert!(epoch >= 1, "epoch {epoch}");
    assert!(hw > 0, "high watermark {hw}");
    assert_eq!(voters.iter().map(|v| v.0).collect::<Vec<_>>(), vec![0, 1, 2], "{voters:?}");
    let now = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis(),
    )
    .expect("ms fit an i64");
    for (node, _, fetch, caught_up) in &voters {
        assert!(now - fetch < 60_000 && now - caught_up < 60_000, "node {node}: {voters:?}");
    }
    // v2 lists each voter's peer listener.
    let r = describe_quorum(brokers[1].port(), 2);
    let nodes: Vec<_> =
        r.nodes.iter().map(|n| (n.node_id.0, n.listeners[0].name.to_string(), n.listeners[0].port)).collect();
    let want: Vec<_> = peer_ports.iter().zip(0..).map(|(p, i)| (i, "PEER".to_string(), *p)).collect();
    assert_eq!(nodes, want);
    // v0 has no timestamps; the rest is the same quorum.
    let v0 = quorum_of(&describe_quorum(brokers[2].port(), 0)).expect("v0 answer");
    assert_eq!(v0.0, leader);
    assert!(v0.3.iter().all(|v| v.2 == -1 && v.3 == -1), "{v0:?}");
}

fn dtp_request(topics: &[&str], limit: i32, cursor: Option<(&str, i32)>) -> DescribeTopicPartitionsRequest {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(TopicName(StrBytes::from_string(t.to_string()))))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(t, p)| {
            Cursor::default().with_topic_name(TopicName(StrBytes::from_string(t.to_string()))).with_partition_index(p)
        }))
}

/// Per topic: (name, error, partition indexes); and the next cursor.
type PageOut = (Vec<(String, i16, Vec<i32>)>, Option<(String, i32)>);

fn dtp(port: u16, req: &DescribeTopicPartitionsRequest) -> PageOut {
    let r: DescribeTopicPartitionsResponse = call(port, ApiKey::DescribeTopicPartitions, 0, req);
    let topics = r
        .topics
        .iter()
        .map(|t| {
            for p in &t.partitions {
                assert_eq!((p.leader_id.0, p.leader_epoch, p.error_code), (0, 0, 0), "lone broker leads: {p:?}");
                assert_eq!(p.eligible_leader_replicas.as_deref(), Some(&[][..]));
            }
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            (name, t.error_code, t.partitions.iter().map(|p| p.partition_index).collect())
        })
        .collect();
    (topics, r.next_cursor.map(|c| (c.topic_name.0.to_string(), c.partition_index)))
}

#[test]
fn a_lone_broker_describes_its_quorum_and_pages_its_topics() {
    let _slot = shared_slot();
    let b = Broker::start(2);
    let (leader, epoch, hw, voters) = quorum_of(&describe_quorum(b.port(), 2)).expect("a lone broker answers");
    assert_eq!((leader, epoch), (0, 0));
    assert_eq!(voters.iter().map(|v| (v.0, v.1)).collect::<Vec<_>>(), vec![(0, hw)]);
    let r: DescribeQuorumResponse = call(b.port(), ApiKey::DescribeQuorum, 2, &quorum_request("__cluster_metadata", 1));
    assert_eq!(r.topics[0].partitions[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let r: DescribeQuorumResponse = call(b.port(), ApiKey::DescribeQuorum, 1, &quorum_request("other", 0));
    assert_eq!(r.topics[0].partitions[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_ne!(r.topics[0].partitions[0].error_code, NOT_LEADER_OR_FOLLOWER);

    let suffix = topic_name("dtp");
    let (a, z) = (format!("a-{suffix}"), format!("b-{suffix}"));
    let missing = format!("c-{suffix}");
    create_topic(&b.addr(), &a, 3);
    create_topic(&b.addr(), &z, 2);
    // Page 1: all of a, the first partition of b; the cursor is inside b.
    let names = [a.as_str(), z.as_str(), missing.as_str()];
    let (topics, next) = dtp(b.port(), &dtp_request(&names, 4, None));
    assert_eq!(topics, vec![(a.clone(), 0, vec![0, 1, 2]), (z.clone(), 0, vec![0])]);
    assert_eq!(next, Some((z.clone(), 1)));
    // Page 2 from the cursor: the rest of b, then the topic that does not exist.
    let (topics, next) = dtp(b.port(), &dtp_request(&names, 4, Some((&z, 1))));
    assert_eq!(topics, vec![(z.clone(), 0, vec![1]), (missing.clone(), UNKNOWN_TOPIC_OR_PARTITION, vec![])]);
    assert_eq!(next, None);
    // A limit used up exactly at a topic's end points at the next topic.
    let (topics, next) = dtp(b.port(), &dtp_request(&[], 3, Some((&a, 0))));
    assert_eq!(topics, vec![(a.clone(), 0, vec![0, 1, 2])]);
    assert_eq!(next, Some((z.clone(), 0)));
    // A cursor on a topic the request does not list is refused.
    let (topics, _) = dtp(b.port(), &dtp_request(&[a.as_str()], 10, Some((&z, 0))));
    assert_eq!(topics, vec![(a.clone(), INVALID_REQUEST, vec![])]);

    // A deleted topic is unknown.
    let admin = admin(&b.addr());
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    block_on(admin.delete_topics(&[&z], &opts), DEADLINE).expect("DeleteTopics completes").expect("DeleteTopics");
    let (topics, _) = dtp(b.port(), &dtp_request(&[z.as_str()], 10, None));
    assert_eq!(topics, vec![(z.clone(), UNKNOWN_TOPIC_OR_PARTITION, vec![])]);
}
