//! Changing a partition's replication factor by reassignment (#18), as Kafka users raise a
//! topic's replication factor with `kafka-reassign-partitions`: an RF=1 partition holding more
//! than `RAFT_WINDOW_BYTES` (16 MiB) of acknowledged records on the direct path is reassigned
//! to all three brokers; once the move is recorded its original broker is killed (SIGKILL) and
//! every record is read back, byte-exact and at its acknowledged offset, from a new replica.
//! Then the partition goes back to one replica on a broker that was not its original one
//! (3 → 1), takes new records, and after that broker's kill -9 and restart (a one-voter Raft
//! group reopened from its state) still serves every record.
//!
//! Contract: every broker is stopped by its harness; every wait has a deadline.

use crate::common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_tests::Broker;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);
/// About 1.5 kB each (`make_msg`): 18 MB in all, more than `RAFT_WINDOW_BYTES`.
const RECORDS: usize = 12_000;
const SEED: u64 = 0x4f1;

fn member(node: usize, peer_ports: &[u16]) -> Broker {
    cluster_member(
        node,
        peer_ports,
        &MemberOpts { dir_prefix: "sluice-it-rf-change-", session_ms: 1000, env: &[], config: None },
    )
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Partition 0's (replicas, sorted ISR, leader) as broker `port` describes it.
fn described(port: u16, topic: &str) -> (Vec<i32>, Vec<i32>, i32) {
    let t = metadata_request::MetadataRequestTopic::default().with_name(Some(name(topic)));
    let r: MetadataResponse = call(port, ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(vec![t])));
    let Some(p) = r.topics.first().and_then(|t| t.partitions.first()) else { return (Vec::new(), Vec::new(), -1) };
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|n| n.0).collect();
    isr.sort_unstable();
    (p.replica_nodes.iter().map(|n| n.0).collect(), isr, p.leader_id.0)
}

/// Whether ListPartitionReassignments on `port` lists nothing in progress.
fn none_listed(port: u16) -> bool {
    let r: ListPartitionReassignmentsResponse =
        call(port, ApiKey::ListPartitionReassignments, 0, &ListPartitionReassignmentsRequest::default());
    r.error_code == 0 && r.topics.iter().all(|t| t.partitions.is_empty())
}

/// Waits until `port` describes the move to `target` complete: replicas = target, all in sync,
/// a leader, nothing listed in progress.
fn wait_moved(port: u16, topic: &str, target: &[i32]) {
    let mut want = target.to_vec();
    want.sort_unstable();
    let start = Instant::now();
    loop {
        let (replicas, isr, leader) = described(port, topic);
        if replicas == target && isr == want && leader >= 0 && none_listed(port) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "move to {target:?} not complete: {:?}", described(port, topic));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_single_replica_partition_goes_to_three_replicas_and_back_to_one_elsewhere() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "rf-change";
    create_topic_rf(&brokers[0].addr(), topic, 1, 1);
    let port = brokers[0].port();
    let start = Instant::now();
    let owner = loop {
        let (replicas, _, leader) = described(port, topic);
        if replicas.len() == 1 && leader == replicas[0] {
            break leader;
        }
        assert!(start.elapsed() < DEADLINE, "partition not settled: {:?}", described(port, topic));
        std::thread::sleep(Duration::from_millis(100));
    };
    let others: Vec<i32> = (0..3).filter(|n| *n != owner).collect();

    // Acknowledged records on the direct path (no Raft group yet).
    let msgs: Vec<Msg> = (0..RECORDS).map(|i| make_msg(i, 1, SEED)).collect();
    let p = producer(&brokers[owner as usize].addr(), "all");
    send_all(&p, topic, &msgs, 0);
    let deliveries = take_deliveries(&p, 0, RECORDS);
    drop(p);

    // RF 1 → 3, the new replicas listed first (asked of another broker: forwarded).
    let target = vec![others[0], others[1], owner];
    let t0 = Instant::now();
    assert_eq!(alter_reassignment(brokers[others[0] as usize].port(), topic, 0, Some(target.clone())), 0);
    wait_moved(port, topic, &target);
    eprintln!("RF 1 -> 3 of {RECORDS} records complete in {:?}", t0.elapsed());

    // The original broker dies: the new replicas serve every acknowledged record.
    brokers[owner as usize].kill();
    let survivor = others[0];
    consume_and_verify(&brokers[survivor as usize].addr(), topic, 1, &msgs, Some(&deliveries), DEADLINE);

    // RF 3 → 1 on a broker that was not the original one (the dead one leaves too).
    let single = vec![survivor];
    assert_eq!(alter_reassignment(brokers[survivor as usize].port(), topic, 0, Some(single.clone())), 0);
    wait_moved(brokers[survivor as usize].port(), topic, &single);
    let gone = brokers[others[1] as usize].data_dir().join(format!("{topic}-0"));
    let start = Instant::now();
    while gone.exists() {
        assert!(start.elapsed() < DEADLINE, "{} still exists on the broker that left", gone.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The one replica takes new writes...
    let p = producer(&brokers[survivor as usize].addr(), "all");
    let more: Vec<Msg> = (RECORDS..RECORDS + 50).map(|i| make_msg(i, 1, SEED)).collect();
    send_all(&p, topic, &more, RECORDS);
    let mut all_deliveries = deliveries;
    all_deliveries.extend(take_deliveries(&p, RECORDS, more.len()));
    drop(p);
    let mut all: Vec<Msg> = msgs;
    all.extend(more);
    // ...and, killed and restarted, reopens its group and serves everything.
    brokers[survivor as usize].kill();
    brokers[survivor as usize].start_again_same_port();
    consume_and_verify(&brokers[survivor as usize].addr(), topic, 1, &all, Some(&all_deliveries), DEADLINE);
    for (i, b) in brokers.iter_mut().enumerate() {
        if i != owner as usize {
            b.stop();
        }
    }
}
