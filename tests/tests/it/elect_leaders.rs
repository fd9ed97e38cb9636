//! ElectLeaders (preferred) on three real brokers: every partition of an RF=3 topic ends up
//! led by the first replica of its assignment, answered as Kafka answers
//! (`ReplicationControlManager.electLeaders`): a null partition list leaves out the
//! partitions needing no election, a named one already led by its preferred replica gets
//! ELECTION_NOT_NEEDED, an unknown one UNKNOWN_TOPIC_OR_PARTITION, and UNCLEAN (no unclean
//! election in Raft) ELECTION_NOT_NEEDED while the partition has a leader.
//!
//! Contract: every broker is stopped by its harness; every wait has a deadline.

use crate::common::*;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_tests::Broker;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 6;

fn member(node: usize, peer_ports: &[u16]) -> Broker {
    cluster_member(
        node,
        peer_ports,
        &MemberOpts { dir_prefix: "sluice-it-elect-", session_ms: 1000, env: &[], config: None },
    )
}

/// Per partition: (leader, leader epoch, first replica, ISR).
fn partitions(port: u16, topic: &str) -> Vec<(i32, i32, i32, Vec<i32>)> {
    let t = metadata_request::MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))));
    let r: MetadataResponse = call(port, ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(vec![t])));
    let mut out: Vec<_> = r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            let isr = p.isr_nodes.iter().map(|n| n.0).collect();
            (p.partition_index, (p.leader_id.0, p.leader_epoch, p.replica_nodes.first().map_or(-1, |n| n.0), isr))
        })
        .collect();
    out.sort_by_key(|(p, _)| *p);
    out.into_iter().map(|(_, s)| s).collect()
}

/// ElectLeaders v2: (topic, partition, error code) per result.
fn elect(port: u16, kind: i8, named: Option<(&str, Vec<i32>)>) -> Vec<(String, i32, i16)> {
    let tps = named.map(|(t, ps)| {
        vec![TopicPartitions::default().with_topic(TopicName(StrBytes::from_string(t.to_string()))).with_partitions(ps)]
    });
    let req =
        ElectLeadersRequest::default().with_election_type(kind).with_topic_partitions(tps).with_timeout_ms(30_000);
    let r: ElectLeadersResponse = call(port, ApiKey::ElectLeaders, 2, &req);
    assert_eq!(r.error_code, 0);
    r.replica_election_results
        .iter()
        .flat_map(|t| t.partition_result.iter().map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code)))
        .collect()
}

#[test]
fn preferred_election_moves_every_leader_to_its_first_replica() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "elect-data";
    create_topic_rf(&brokers[0].addr(), topic, PARTITIONS, 3);
    let port = brokers[0].port();
    // Every partition's leader recorded, with all three replicas in sync.
    let start = Instant::now();
    while !partitions(port, topic).iter().all(|(l, e, _, isr)| *l >= 0 && *e > 0 && isr.len() == 3) {
        assert!(start.elapsed() < DEADLINE, "leaders not settled: {:?}", partitions(port, topic));
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = partitions(port, topic);
    let misplaced: Vec<i32> = (0..PARTITIONS).filter(|&p| before[p as usize].0 != before[p as usize].2).collect();
    eprintln!("partitions not led by their preferred replica before the election: {misplaced:?}");
    let answered = elect(port, 0, None);
    let mut got: Vec<i32> = answered.iter().filter(|(t, _, _)| t == topic).map(|(_, p, _)| *p).collect();
    got.sort();
    assert_eq!(got, misplaced, "only partitions not led by their preferred replica are answered: {answered:?}");
    assert!(answered.iter().all(|(_, _, code)| *code == 0), "every election succeeded: {answered:?}");
    let after = partitions(port, topic);
    for (p, (leader, _, preferred, _)) in after.iter().enumerate() {
        assert_eq!(leader, preferred, "partition {p} led by its first replica after the election: {after:?}");
    }
    for b in &brokers {
        let seen = partitions(b.port(), topic);
        let start = Instant::now();
        let mut seen = seen;
        while seen.iter().any(|(l, _, pref, _)| l != pref) {
            assert!(start.elapsed() < DEADLINE, "broker {} still names {seen:?}", b.port());
            std::thread::sleep(Duration::from_millis(100));
            seen = partitions(b.port(), topic);
        }
    }
    assert_eq!(elect(port, 0, None).iter().filter(|(t, _, _)| t == topic).count(), 0, "nothing left to elect");
    assert_eq!(elect(port, 0, Some((topic, vec![0]))), vec![(topic.to_string(), 0, 84)], "ELECTION_NOT_NEEDED");
    assert_eq!(elect(port, 1, Some((topic, vec![0]))), vec![(topic.to_string(), 0, 84)], "unclean: a leader exists");
    assert_eq!(elect(port, 0, Some((topic, vec![99]))), vec![(topic.to_string(), 99, 3)], "unknown partition");
    // Produce and consume still work on the moved leaders (librdkafka follows the new epochs).
    let p = producer(&brokers[1].addr(), "all");
    for i in 0..PARTITIONS {
        let value = format!("after-{i}");
        p.send(rdkafka::producer::BaseRecord::<(), str, usize>::with_opaque_to(topic, 0).partition(i).payload(&value))
            .expect("queue");
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).expect("acknowledged");
    let c = consumer(&brokers[2].addr());
    let all: Vec<(i32, rdkafka::Offset)> = (0..PARTITIONS).map(|i| (i, rdkafka::Offset::Beginning)).collect();
    assign(&c, topic, &all);
    let (got, errors) = consume_n(&c, PARTITIONS as usize, DEADLINE);
    assert!(errors.is_empty(), "consumer errors: {errors:?}");
    assert_eq!(got.len(), PARTITIONS as usize);
    drop(c);
    for b in &mut brokers {
        b.stop();
    }
}
