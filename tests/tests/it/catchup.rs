//! A replica far behind catches up (#18): a broker killed (SIGKILL) while its partition's
//! leader appends more than three Raft windows of batches (`RAFT_WINDOW_BATCHES` = 4096 in
//! core/src/limits.rs, one batch per Produce request here) returns, rejoins the ISR, becomes
//! the leader by a preferred election and serves every acknowledged record at its
//! acknowledged offset; and a reassignment adding a replica to a partition holding more than a
//! window of batches completes (the new replica is fed from index 1, below the window).
//!
//! Contract: every broker is stopped by its harness; every loop has a count or a deadline.

use crate::common::*;
use bytes::Bytes;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_tests::Broker;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);
/// `RAFT_WINDOW_BATCHES` (core/src/limits.rs).
const WINDOW: usize = 4096;
const PRODUCE_VERSION: i16 = 9;
/// Produce requests in flight on the one connection.
const IN_FLIGHT: usize = 64;

fn member(node: usize, peer_ports: &[u16]) -> Broker {
    cluster_member(
        node,
        peer_ports,
        &MemberOpts { dir_prefix: "sluice-it-catchup-", session_ms: 1000, env: &[], config: None },
    )
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Partition 0's (leader, replicas, ISR) as broker `port` describes it.
fn described(port: u16, topic: &str) -> (i32, Vec<i32>, Vec<i32>) {
    let t = metadata_request::MetadataRequestTopic::default().with_name(Some(name(topic)));
    let r: MetadataResponse = call(port, ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(vec![t])));
    let Some(p) = r.topics.first().and_then(|t| t.partitions.first()) else { return (-1, Vec::new(), Vec::new()) };
    (p.leader_id.0, p.replica_nodes.iter().map(|n| n.0).collect(), p.isr_nodes.iter().map(|n| n.0).collect())
}

/// Waits until `port` describes partition 0 with a leader and `isr_len` replicas in sync.
fn wait_settled(port: u16, topic: &str, isr_len: usize, what: &str) -> (i32, Vec<i32>, Vec<i32>) {
    let start = Instant::now();
    loop {
        let d = described(port, topic);
        if d.0 >= 0 && d.2.len() == isr_len {
            return d;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: partition not settled: {d:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Produces one probe batch `{tag}` to whichever live broker accepts it (the leader; the others
/// answer NOT_LEADER_OR_FOLLOWER while leadership settles), until the deadline: (leader
/// index, offset, value).
fn settle_leader(brokers: &[Broker], live: &[usize], topic: &str, tag: &str) -> (usize, i64, String) {
    let start = Instant::now();
    loop {
        for &i in live {
            let mut s = raw_connect(brokers[i].port());
            let data =
                vec![PartitionProduceData::default().with_index(0).with_records(Some(record_batch_at(&[0], tag)))];
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![TopicProduceData::default().with_name(name(topic)).with_partition_data(data)]);
            let Ok(resp) = roundtrip(&mut s, &encode_request(0, PRODUCE_VERSION, 2, 1, &req)) else { continue };
            let mut buf = Bytes::from(resp);
            ResponseHeader::decode(&mut buf, 1).expect("header");
            let r = ProduceResponse::decode(&mut buf, PRODUCE_VERSION).expect("produce response");
            let p = &r.responses[0].partition_responses[0];
            if p.error_code == 0 {
                return (i, p.base_offset, format!("{tag}-v0"));
            }
        }
        assert!(start.elapsed() < DEADLINE, "no broker of {live:?} accepted {tag}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `n` acks=all Produce requests of one one-record batch each to partition 0 on `port` (the
/// leader), `IN_FLIGHT` at a time on one connection: value `{tag}{i}-v0` → acknowledged offset.
fn produce_batches(port: u16, topic: &str, tag: &str, n: usize) -> BTreeMap<i64, String> {
    let mut s = raw_connect(port);
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let frame = |i: usize| {
        let data = vec![PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(record_batch_at(&[0], &format!("{tag}{i}"))))];
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default().with_name(name(topic)).with_partition_data(data)]);
        encode_request(0, PRODUCE_VERSION, 2, i32::try_from(i).expect("fits"), &req)
    };
    let mut acked = BTreeMap::new();
    let (mut sent, mut answered) = (0, 0);
    while answered < n {
        while sent < n && sent - answered < IN_FLIGHT {
            s.write_all(&frame(sent)).expect("send produce");
            sent += 1;
        }
        let mut buf = Bytes::from(read_frame(&mut s).expect("produce response"));
        let h = ResponseHeader::decode(&mut buf, 1).expect("header");
        assert_eq!(h.correlation_id, i32::try_from(answered).expect("fits"), "responses in order");
        let r = ProduceResponse::decode(&mut buf, PRODUCE_VERSION).expect("produce response");
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "produce {answered} refused");
        assert!(acked.insert(p.base_offset, format!("{tag}{answered}-v0")).is_none(), "one offset per record");
        answered += 1;
    }
    acked
}

/// Every record of partition 0 read from `addr` (librdkafka), by offset: its value.
fn read_all(addr: &str, topic: &str, n: usize) -> BTreeMap<i64, String> {
    let c = consumer(addr);
    assign(&c, topic, &[(0, rdkafka::Offset::Beginning)]);
    let (got, errors) = consume_n(&c, n, DEADLINE);
    let errors: Vec<&String> = errors.iter().filter(|e| !e.contains("BrokerTransportFailure")).collect();
    assert!(errors.is_empty(), "consumer errors: {errors:?}");
    let mut out = BTreeMap::new();
    let mut last = -1;
    for m in got {
        assert!(m.offset > last, "offsets in order");
        last = m.offset;
        out.insert(m.offset, String::from_utf8_lossy(m.msg.payload.as_deref().unwrap_or_default()).into_owned());
    }
    out
}

/// ElectLeaders v2 (preferred) for partition 0: its error code.
fn elect_preferred(port: u16, topic: &str) -> i16 {
    let tps = vec![TopicPartitions::default().with_topic(name(topic)).with_partitions(vec![0])];
    let req =
        ElectLeadersRequest::default().with_election_type(0).with_topic_partitions(Some(tps)).with_timeout_ms(30_000);
    let r: ElectLeadersResponse = call(port, ApiKey::ElectLeaders, 2, &req);
    assert_eq!(r.error_code, 0);
    r.replica_election_results[0].partition_result[0].error_code
}

#[test]
fn a_leader_killed_for_three_windows_catches_up_and_serves_every_record() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "catchup-data";
    create_topic_rf(&brokers[0].addr(), topic, 1, 3);
    let (_, replicas, _) = wait_settled(brokers[0].port(), topic, 3, "after creation");
    let preferred = replicas[0];
    let (leader, off, value) = settle_leader(&brokers, &[0, 1, 2], topic, "first");
    let mut acked = BTreeMap::from([(off, value)]);
    acked.extend(produce_batches(brokers[leader].port(), topic, "a", 100));

    // The preferred replica (the first leader, or a follower if leadership moved) is killed;
    // the two others take more than three windows of batches.
    brokers[preferred as usize].kill();
    let rest: Vec<usize> = (0..3).filter(|&i| i != preferred as usize).collect();
    let (new_leader, off, value) = settle_leader(&brokers, &rest, topic, "after");
    acked.insert(off, value);
    let (_, _, isr) = wait_settled(brokers[rest[0]].port(), topic, 2, "after the kill");
    assert!(!isr.contains(&preferred), "the killed broker left the ISR: {isr:?}");
    let behind = 3 * WINDOW + 200;
    let started = Instant::now();
    acked.extend(produce_batches(brokers[new_leader].port(), topic, "b", behind));
    eprintln!("{behind} batches acknowledged in {:?} while broker {preferred} was down", started.elapsed());

    // It returns, catches up (back in the ISR) and leads after a preferred election.
    brokers[preferred as usize].start_again();
    let started = Instant::now();
    wait_settled(brokers[rest[0]].port(), topic, 3, "after the return");
    eprintln!("broker {preferred} back in the ISR {:?} after its start", started.elapsed());
    let start = Instant::now();
    loop {
        let code = elect_preferred(brokers[rest[0]].port(), topic);
        if code == 0 || code == 84 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "preferred election refused: {code}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let port = brokers[preferred as usize].port();
    let start = Instant::now();
    while described(port, topic).0 != preferred {
        assert!(start.elapsed() < DEADLINE, "broker {preferred} does not lead: {:?}", described(port, topic));
        std::thread::sleep(Duration::from_millis(200));
    }
    acked.extend(produce_batches(port, topic, "c", 10));
    let got = read_all(&brokers[preferred as usize].addr(), topic, acked.len());
    assert_eq!(got.len(), acked.len(), "every acknowledged record read back from the returned broker");
    assert_eq!(got, acked, "each acknowledged record at its acknowledged offset, in order, once");
    for b in &mut brokers {
        b.stop();
    }
}

#[test]
fn a_replica_added_to_a_partition_longer_than_the_window_catches_up() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "catchup-reassign";
    create_topic_rf(&brokers[0].addr(), topic, 1, 2);
    let port = brokers[0].port();
    let (_, replicas, _) = wait_settled(port, topic, 2, "after creation");
    let spare = (0..3).find(|n| !replicas.contains(n)).expect("a broker without a replica");
    let live: Vec<usize> = replicas.iter().map(|&r| r as usize).collect();
    let (leader, off, value) = settle_leader(&brokers, &live, topic, "first");
    let mut acked = BTreeMap::from([(off, value)]);
    acked.extend(produce_batches(brokers[leader].port(), topic, "r", WINDOW + 500));

    // The new replica comes first in the target: a preferred election then makes it the
    // leader, and every record is read back from it.
    let mut target = vec![spare];
    target.extend(&replicas);
    assert_eq!(alter_reassignment(port, topic, 0, Some(target.clone())), 0);
    let start = Instant::now();
    loop {
        let (_, r, mut isr) = described(port, topic);
        isr.sort();
        let mut want = target.clone();
        want.sort();
        if r == target && isr == want {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "move not complete: {:?}", described(port, topic));
        std::thread::sleep(Duration::from_millis(200));
    }
    let start = Instant::now();
    let spare_port = brokers[spare as usize].port();
    while described(spare_port, topic).0 != spare {
        let code = elect_preferred(port, topic);
        assert!(code == 0 || code == 84 || start.elapsed() < DEADLINE, "preferred election refused: {code}");
        assert!(start.elapsed() < DEADLINE, "broker {spare} does not lead: {:?}", described(spare_port, topic));
        std::thread::sleep(Duration::from_millis(500));
    }
    let got = read_all(&brokers[spare as usize].addr(), topic, acked.len());
    assert_eq!(got, acked, "each acknowledged record at its acknowledged offset, read from the new replica");
    for b in &mut brokers {
        b.stop();
    }
}
