//! Leader hints (KIP-951) and leader-epoch checks (KIP-320) on three real brokers with one
//! partition replicated three times, as Kafka 4.x answers them: a follower answers Produce
//! (v10+) and Fetch (v16+) with NOT_LEADER_OR_FOLLOWER, the leader and epoch in
//! `CurrentLeader` and the leader's endpoint in `NodeEndpoints`; the leader answers a client
//! whose current leader epoch is older with FENCED_LEADER_EPOCH and newer with
//! UNKNOWN_LEADER_EPOCH on Fetch, ListOffsets and OffsetForLeaderEpoch; the epoch Metadata
//! gives is the one those checks accept; and librdkafka consumes through all of it, across the
//! leader's kill. The partition's offsets are Kafka's (issue #18): its first record is at
//! offset 0 and a leader change takes no offset.
//!
//! Contract: every broker is stopped by its harness; every wait has a deadline.

use crate::common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{BaseRecord, Producer};
use sluice_tests::Broker;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const NOT_LEADER: i16 = 6;
const FENCED: i16 = 74;
const UNKNOWN_EPOCH: i16 = 75;

fn member(node: usize, peer_ports: &[u16]) -> Broker {
    cluster_member(
        node,
        peer_ports,
        &MemberOpts { dir_prefix: "sluice-it-epochs-", session_ms: 1000, env: &[], config: None },
    )
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// The topic as Metadata answers it (for its id).
type Topic = metadata_response::MetadataResponseTopic;

/// Metadata v12 of partition 0 from `port`: (error, leader, leader epoch, topic).
fn partition0(port: u16, topic: &str) -> Option<(i16, i32, i32, Topic)> {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(topic)))]));
    let r: MetadataResponse = call(port, ApiKey::Metadata, 12, &req);
    let t = r.topics.first()?;
    let p = t.partitions.first()?;
    Some((p.error_code, p.leader_id.0, p.leader_epoch, t.clone()))
}

/// Produce v11 of one record to partition 0: the partition's answer and the node endpoints.
fn produce(port: u16, topic: &str, tag: &str) -> (produce_response::PartitionProduceResponse, Vec<i32>) {
    let data = vec![PartitionProduceData::default().with_index(0).with_records(Some(record_batch_at(&[0], tag)))];
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default().with_name(name(topic)).with_partition_data(data)]);
    let r: ProduceResponse = call(port, ApiKey::Produce, 11, &req);
    let ends = r.node_endpoints.iter().map(|e| e.node_id.0).collect();
    (r.responses[0].partition_responses[0].clone(), ends)
}

/// Fetch v16 of partition 0 from offset 0 with `epoch` as the current leader epoch.
fn fetch(port: u16, t: &Topic, epoch: i32) -> (fetch_response::PartitionData, Vec<(i32, i32)>) {
    let part = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_current_leader_epoch(epoch)
        .with_partition_max_bytes(1 << 20);
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic_id(t.topic_id).with_partitions(vec![part])]);
    let r: FetchResponse = call(port, ApiKey::Fetch, 16, &req);
    let ends = r.node_endpoints.iter().map(|e| (e.node_id.0, e.port)).collect();
    (r.responses[0].partitions[0].clone(), ends)
}

/// ListOffsets v7 of partition 0 at `timestamp` with `epoch` as the current leader epoch:
/// (error, offset, leader epoch).
fn list_offsets(port: u16, topic: &str, timestamp: i64, epoch: i32) -> (i16, i64, i32) {
    let part = ListOffsetsPartition::default()
        .with_partition_index(0)
        .with_timestamp(timestamp)
        .with_current_leader_epoch(epoch);
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default().with_name(name(topic)).with_partitions(vec![part])]);
    let r: ListOffsetsResponse = call(port, ApiKey::ListOffsets, 7, &req);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset, p.leader_epoch)
}

/// OffsetForLeaderEpoch v4 of partition 0: (error, epoch, end offset).
fn epoch_end(port: u16, topic: &str, epoch: i32, current: i32) -> (i16, i32, i64) {
    let part = OffsetForLeaderPartition::default()
        .with_partition(0)
        .with_leader_epoch(epoch)
        .with_current_leader_epoch(current);
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default().with_topic(name(topic)).with_partitions(vec![part])]);
    let r: OffsetForLeaderEpochResponse = call(port, ApiKey::OffsetForLeaderEpoch, 4, &req);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// Waits until Metadata (asked of `asked`) names a live leader among `live` with a recorded
/// epoch (> 0) that accepts a produce: (leader index, epoch, topic).
fn settled_leader(brokers: &[Broker], live: &[usize], asked: usize, topic: &str) -> (usize, i32, Topic) {
    let start = Instant::now();
    loop {
        if let Some((0, leader, epoch, id)) = partition0(brokers[asked].port(), topic) {
            let l = usize::try_from(leader).expect("a named leader");
            if epoch > 0 && live.contains(&l) && produce(brokers[l].port(), topic, "probe").0.error_code == 0 {
                return (l, epoch, id);
            }
        }
        assert!(start.elapsed() < DEADLINE, "no settled leader of {topic} among {live:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(addr: &str, topic: &str, from: usize, n: usize) {
    let p = producer(addr, "all");
    for i in from..from + n {
        let value = format!("v{i}");
        p.send(BaseRecord::<(), str, usize>::with_opaque_to(topic, i).partition(0).payload(&value))
            .expect("queue a record");
    }
    p.flush(Duration::from_secs(30)).expect("every record acknowledged");
}

/// The values of `n` records polled from `c` (only partition and transport errors tolerated:
/// a broker is killed in the test).
fn values(c: &TestConsumer, n: usize) -> Vec<String> {
    let (got, errors) = consume_n(c, n, DEADLINE);
    let bad: Vec<_> = errors.iter().filter(|e| !e.contains("ransport") && !e.contains("Disconnected")).collect();
    assert!(bad.is_empty(), "consumer errors: {bad:?}");
    got.into_iter()
        .map(|m| String::from_utf8_lossy(m.msg.payload.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

#[test]
fn followers_hint_the_leader_and_stale_or_future_epochs_are_refused_as_kafka_does() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "epochs-data";
    create_topic_rf(&brokers[0].addr(), topic, 1, 3);
    let all = [0, 1, 2];
    let (leader, epoch, id) = settled_leader(&brokers, &all, 0, topic);
    let lport = i32::from(brokers[leader].port());
    for f in all.into_iter().filter(|&i| i != leader) {
        let (p, ends) = produce(brokers[f].port(), topic, "refused");
        assert_eq!(p.error_code, NOT_LEADER, "a follower refuses produce");
        let hint = (p.current_leader.leader_id.0, p.current_leader.leader_epoch);
        assert_eq!(hint, (i32::try_from(leader).unwrap(), epoch), "Produce names the leader at Metadata's epoch");
        assert_eq!(ends, vec![i32::try_from(leader).unwrap()], "Produce carries the leader's endpoint");
        let (p, ends) = fetch(brokers[f].port(), &id, epoch);
        assert_eq!(p.error_code, NOT_LEADER, "a follower refuses fetch at the current epoch");
        assert_eq!((p.current_leader.leader_id.0, p.current_leader.leader_epoch), hint);
        assert_eq!(ends, vec![(i32::try_from(leader).unwrap(), lport)], "Fetch carries the leader's endpoint");
        assert_eq!(list_offsets(brokers[f].port(), topic, -1, epoch).0, NOT_LEADER);
        assert_eq!(epoch_end(brokers[f].port(), topic, epoch, epoch).0, NOT_LEADER);
    }
    let lp = brokers[leader].port();
    for current in [epoch, -1] {
        let (p, _) = fetch(lp, &id, current);
        assert_eq!(p.error_code, 0, "the leader serves epoch {current}");
        assert!(p.records.is_some_and(|r| !r.is_empty()), "the probe record is served");
    }
    let (p, ends) = fetch(lp, &id, epoch - 1);
    assert_eq!(p.error_code, FENCED, "an older epoch is fenced");
    assert_eq!((p.current_leader.leader_id.0, p.current_leader.leader_epoch), (i32::try_from(leader).unwrap(), epoch));
    assert_eq!(ends, vec![(i32::try_from(leader).unwrap(), lport)]);
    assert_eq!(fetch(lp, &id, epoch + 1).0.error_code, UNKNOWN_EPOCH, "a newer epoch is unknown");

    let (code, hw, latest_epoch) = list_offsets(lp, topic, -1, epoch);
    assert_eq!((code, latest_epoch), (0, epoch), "ListOffsets latest answers the current epoch");
    let (code, _, first_epoch) = list_offsets(lp, topic, -2, epoch);
    assert!(code == 0 && (0..=epoch).contains(&first_epoch), "earliest has the epoch of its batch: {first_epoch}");
    assert_eq!(list_offsets(lp, topic, -1, epoch - 1).0, FENCED);
    assert_eq!(list_offsets(lp, topic, -1, epoch + 1).0, UNKNOWN_EPOCH);

    let (code, e, end) = epoch_end(lp, topic, epoch, epoch);
    assert_eq!((code, e), (0, epoch), "the current epoch ends at the log end");
    assert!(end >= hw, "end offset {end} below the high watermark {hw}");
    assert_eq!(epoch_end(lp, topic, epoch, epoch - 1).0, FENCED);
    assert_eq!(epoch_end(lp, topic, epoch, epoch + 1).0, UNKNOWN_EPOCH);

    // librdkafka, bootstrapped at a follower, through Metadata's epochs and the checks.
    let follower = all.into_iter().find(|&i| i != leader).expect("two followers");
    send(&brokers[follower].addr(), topic, 0, 20);
    let c = consumer(&brokers[follower].addr());
    assign(&c, topic, &[(0, rdkafka::Offset::Beginning)]);
    let got = values(&c, 21);
    let want: Vec<String> = std::iter::once("probe-v0".to_string()).chain((0..20).map(|i| format!("v{i}"))).collect();
    assert_eq!(got, want, "librdkafka reads every record once, in order");

    // The leader dies: the same consumer follows the new leader (a newer epoch) and goes on.
    brokers[leader].kill();
    let rest: Vec<usize> = all.into_iter().filter(|&i| i != leader).collect();
    let (new_leader, new_epoch, _) = settled_leader(&brokers, &rest, rest[0], topic);
    assert!(new_epoch > epoch, "a new leader has a newer epoch ({new_epoch} after {epoch})");
    send(&brokers[new_leader].addr(), topic, 20, 10);
    let got = values(&c, 11);
    let want: Vec<String> = std::iter::once("probe-v0".to_string()).chain((20..30).map(|i| format!("v{i}"))).collect();
    assert_eq!(got, want, "the consumer continues on the new leader");
    drop(c);
    for &i in &rest {
        brokers[i].stop();
    }
}

/// The offsets of `n` records polled from `c`.
fn offsets(c: &TestConsumer, n: usize) -> Vec<i64> {
    let (got, errors) = consume_n(c, n, DEADLINE);
    let bad: Vec<_> = errors.iter().filter(|e| !e.contains("ransport") && !e.contains("Disconnected")).collect();
    assert!(bad.is_empty(), "consumer errors: {bad:?}");
    got.into_iter().map(|m| m.offset).collect()
}

/// Issue #18: a replicated partition's offsets are Kafka's — its first record is at offset 0
/// and a leader change takes no offset (Apache Kafka 4.4 answers exactly these numbers: one
/// probe, five records, the leader's kill, one probe, three records → offsets 0..10).
#[test]
fn a_replicated_partitions_first_record_is_at_offset_0_and_a_leader_change_takes_no_offset() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "epochs-offsets";
    create_topic_rf(&brokers[0].addr(), topic, 1, 3);
    let all = [0, 1, 2];
    let (leader, epoch, _) = settled_leader(&brokers, &all, 0, topic); // one probe record
    let lp = brokers[leader].port();
    assert_eq!(list_offsets(lp, topic, -2, epoch).1, 0, "earliest");
    assert_eq!(list_offsets(lp, topic, -1, epoch).1, 1, "latest after the probe");
    send(&brokers[leader].addr(), topic, 0, 5);
    assert_eq!(list_offsets(lp, topic, -1, epoch).1, 6, "latest after five more");
    let c = consumer(&brokers[leader].addr());
    assign(&c, topic, &[(0, rdkafka::Offset::Beginning)]);
    assert_eq!(offsets(&c, 6), (0..6).collect::<Vec<i64>>(), "the first record is at offset 0");

    brokers[leader].kill();
    let rest: Vec<usize> = all.into_iter().filter(|&i| i != leader).collect();
    let (new_leader, new_epoch, _) = settled_leader(&brokers, &rest, rest[0], topic); // one probe
    send(&brokers[new_leader].addr(), topic, 5, 3);
    let np = brokers[new_leader].port();
    assert_eq!(list_offsets(np, topic, -2, new_epoch).1, 0, "earliest after the leader change");
    assert_eq!(list_offsets(np, topic, -1, new_epoch).1, 10, "the leader change took no offset");
    assert_eq!(offsets(&c, 4), (6..10).collect::<Vec<i64>>(), "offsets stay contiguous across it");
    drop(c);
    for &i in &rest {
        brokers[i].stop();
    }
}
