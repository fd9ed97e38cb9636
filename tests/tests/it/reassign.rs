//! Partition reassignment on three real brokers (AlterPartitionReassignments and
//! ListPartitionReassignments, as `kafka-reassign-partitions` drives them): a replica of an
//! RF=2 partition holding acknowledged records moves to the third broker; once the move is
//! recorded, the broker that left is killed (SIGKILL) and every acknowledged record is read
//! back, byte-exact and at its acknowledged offset, from the new replica set alone. The
//! controller's refusals are answered as Kafka answers them.
//!
//! Contract: every broker is stopped by its harness; every wait has a deadline.

use crate::common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_tests::Broker;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(90);
const RECORDS: usize = 2_000;

fn member(node: usize, peer_ports: &[u16]) -> Broker {
    cluster_member(
        node,
        peer_ports,
        &MemberOpts { dir_prefix: "sluice-it-reassign-", session_ms: 1000, env: &[], config: None },
    )
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Partition 0's (replicas, ISR, leader) as broker `port` describes it.
fn described(port: u16, topic: &str) -> (Vec<i32>, Vec<i32>, i32) {
    let t = metadata_request::MetadataRequestTopic::default().with_name(Some(name(topic)));
    let r: MetadataResponse = call(port, ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(vec![t])));
    let p = &r.topics[0].partitions[0];
    (p.replica_nodes.iter().map(|n| n.0).collect(), p.isr_nodes.iter().map(|n| n.0).collect(), p.leader_id.0)
}

/// ListPartitionReassignments (all partitions): (topic, partition, replicas, adding, removing).
#[allow(clippy::type_complexity)]
fn listed(port: u16) -> Vec<(String, i32, Vec<i32>, Vec<i32>, Vec<i32>)> {
    let r: ListPartitionReassignmentsResponse =
        call(port, ApiKey::ListPartitionReassignments, 0, &ListPartitionReassignmentsRequest::default());
    assert_eq!(r.error_code, 0);
    let ids = |v: &[BrokerId]| v.iter().map(|n| n.0).collect::<Vec<_>>();
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect()
}

#[test]
fn a_moved_replica_holds_every_acknowledged_record_after_the_old_one_dies() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "reassign-data";
    create_topic_rf(&brokers[0].addr(), topic, 1, 2);
    let port = brokers[0].port();
    let start = Instant::now();
    while {
        let (replicas, isr, leader) = described(port, topic);
        replicas.len() != 2 || isr.len() != 2 || leader < 0
    } {
        assert!(start.elapsed() < DEADLINE, "partition not settled: {:?}", described(port, topic));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (replicas, _, _) = described(port, topic);
    let spare = (0..3).find(|n| !replicas.contains(n)).expect("a broker without a replica");
    let (leaving, staying) = (replicas[0], replicas[1]);
    let target = vec![staying, spare];

    // Acknowledged records, before the move.
    let msgs: Vec<Msg> = (0..RECORDS).map(|i| make_msg(i, 1, 0x5eed)).collect();
    let p = producer(&brokers[staying as usize].addr(), "all");
    send_all(&p, topic, &msgs, 0);
    let deliveries = take_deliveries(&p, 0, RECORDS);
    drop(p);

    // The controller's refusals, as Kafka answers them.
    assert_eq!(
        alter_reassignment(port, topic, 0, Some(vec![staying, 9])),
        39,
        "unknown broker: INVALID_REPLICA_ASSIGNMENT"
    );
    assert_eq!(alter_reassignment(port, topic, 0, Some(vec![staying, staying])), 39, "listed twice");
    assert_eq!(alter_reassignment(port, topic, 0, Some(vec![])), 39, "empty");
    assert_eq!(alter_reassignment(port, topic, 0, None), 85, "cancel without one: NO_REASSIGNMENT_IN_PROGRESS");
    assert_eq!(alter_reassignment(port, "no-such-topic", 0, Some(target.clone())), 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(alter_reassignment(port, topic, 7, Some(target.clone())), 3, "unknown partition");
    assert!(listed(port).is_empty(), "nothing in progress yet");

    // The move, asked of a broker that is not the controller necessarily (forwarded).
    assert_eq!(alter_reassignment(brokers[spare as usize].port(), topic, 0, Some(target.clone())), 0);
    let in_progress = listed(port);
    eprintln!("listed right after the move started: {in_progress:?}");
    for (t, p, r, adding, removing) in &in_progress {
        assert_eq!((t.as_str(), *p), (topic, 0));
        assert_eq!(
            (r.clone(), adding.clone(), removing.clone()),
            (vec![staying, spare, leaving], vec![spare], vec![leaving])
        );
    }
    let start = Instant::now();
    loop {
        let (replicas, mut isr, _) = described(port, topic);
        isr.sort();
        let mut want = target.clone();
        want.sort();
        if replicas == target && isr == want && listed(port).is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "move not complete: {:?}, listed {:?}",
            described(port, topic),
            listed(port)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every broker describes the new replicas; the one that left deletes its copy.
    for b in &brokers {
        let start = Instant::now();
        while described(b.port(), topic).0 != target {
            assert!(start.elapsed() < DEADLINE, "broker {} still describes {:?}", b.port(), described(b.port(), topic));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let old_dir = brokers[leaving as usize].data_dir().join(format!("{topic}-0"));
    let start = Instant::now();
    while old_dir.exists() {
        assert!(start.elapsed() < DEADLINE, "{} still exists on the broker that left", old_dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }

    // The old replica's broker dies: the new replica set serves every acknowledged record.
    brokers[leaving as usize].kill();
    consume_and_verify(&brokers[spare as usize].addr(), topic, 1, &msgs, Some(&deliveries), DEADLINE);
    // And takes new writes.
    let p = producer(&brokers[spare as usize].addr(), "all");
    let more: Vec<Msg> = (RECORDS..RECORDS + 10).map(|i| make_msg(i, 1, 0x5eed)).collect();
    send_all(&p, topic, &more, RECORDS);
    take_deliveries(&p, RECORDS, more.len());
    drop(p);
    for (i, b) in brokers.iter_mut().enumerate() {
        if i != leaving as usize {
            b.stop();
        }
    }
}
