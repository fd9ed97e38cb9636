//! The group coordinator in a 3-broker cluster: `__consumer_offsets` is created once through
//! the metadata log (replication factor 3) when a coordinator is first looked for, a group's
//! coordinator is the leader of its partition, and after kill -9 of that broker the
//! coordinator moves to the partition's new leader, which loaded the committed offsets from
//! the replicated log: a consumer of the group resumes where the group committed, not from
//! the earliest offset.
//!
//! Contract: real brokers (`sluice serve`, one core each) and librdkafka; every broker is
//! stopped by its harness (the killed one too); every wait has a count and a deadline.

use crate::common::*;
use bytes::Bytes;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::Broker;
use std::time::Duration;

/// Bound for a cluster change to show (elections, the session timeout, scheduling slack on a
/// loaded 2-core machine).
const DEADLINE: Duration = Duration::from_secs(60);

fn member(node: usize, peer_ports: &[u16]) -> Broker {
    cluster_member(
        node,
        peer_ports,
        &MemberOpts { dir_prefix: "sluice-it-coord-", session_ms: 1000, env: &[], config: None },
    )
}

/// FindCoordinator v2 for `group` on the broker on `port`: (error code, node id).
fn find_coordinator(port: u16, group: &str) -> Option<(i16, i32)> {
    let mut s = raw_connect(port);
    let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())).with_key_type(0);
    let frame = encode_request(10, 2, 1, 11, &req);
    let mut buf = Bytes::from(roundtrip(&mut s, &frame).ok()?);
    ResponseHeader::decode(&mut buf, 0).ok()?;
    let body = FindCoordinatorResponse::decode(&mut buf, 2).ok()?;
    Some((body.error_code, body.node_id.0))
}

/// Asks the broker on `port` until it names a coordinator for `group` that `ok` accepts.
fn wait_coordinator(port: u16, group: &str, what: &str, ok: impl Fn(i32) -> bool) -> i32 {
    let mut last = None;
    sluice_tests::retry_until(DEADLINE, 600, Duration::from_millis(100), || {
        last = find_coordinator(port, group);
        last.filter(|(code, node)| *code == 0 && ok(*node)).map(|(_, node)| node)
    })
    .unwrap_or_else(|| panic!("{what}: FindCoordinator({group}) on port {port}: last answer {last:?}"))
}

/// Waits until the broker at `addr` lists `n` live brokers in Metadata.
fn wait_for_members(addr: &str, n: usize) {
    let c = consumer(addr);
    let seen = sluice_tests::retry_until(DEADLINE, 600, Duration::from_millis(100), || {
        let md = c.fetch_metadata(None, Duration::from_secs(5)).ok()?;
        (md.brokers().len() == n).then_some(())
    });
    assert!(seen.is_some(), "{addr} did not list {n} brokers within {DEADLINE:?}");
}

fn group_consumer(addr: &str, group: &str) -> TestConsumer {
    consumer_with(addr, &[("group.id", group), ("session.timeout.ms", "10000"), ("heartbeat.interval.ms", "500")])
}

/// The group's committed offset of partition 0 of `topic`, asked until the coordinator answers.
fn committed(c: &TestConsumer, topic: &str) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    sluice_tests::retry_until(DEADLINE, 60, Duration::from_millis(500), || {
        let got = c.committed_offsets(tpl.clone(), Duration::from_secs(5)).ok()?;
        match got.find_partition(topic, 0)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    })
}

/// Polls `c` until one message arrives; its offset.
fn first_offset(c: &TestConsumer) -> Option<i64> {
    use rdkafka::Message;
    sluice_tests::retry_until(DEADLINE, 600, Duration::from_millis(1), || match c.poll(Duration::from_millis(100)) {
        Some(Ok(m)) => Some(m.offset()),
        _ => None,
    })
}

#[test]
fn committed_offsets_survive_a_kill_of_the_group_coordinator() {
    let _slot = shared_slot();
    let peers = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &peers)).collect();
    let all = brokers.iter().map(|b| b.addr()).collect::<Vec<_>>().join(",");
    let topic = topic_name("coord-failover");
    let group = format!("{topic}-group");
    for b in &brokers {
        wait_for_members(&b.addr(), 3);
    }
    create_topic_rf(&brokers[0].addr(), &topic, 1, 3);

    let p = producer(&all, "all");
    let msgs: Vec<Msg> = (0..20).map(|i| make_msg(i, 1, 7)).collect();
    send_all(&p, &topic, &msgs, 0);
    flush(&p);
    assert_eq!(take_deliveries(&p, 0, msgs.len()).len(), msgs.len());

    let coordinator = wait_coordinator(brokers[1].port(), &group, "first lookup", |n| (0..3).contains(&n));
    // The group consumes 10 messages and commits offset 10.
    {
        let c = group_consumer(&all, &group);
        c.subscribe(&[&topic]).expect("subscribe");
        let (got, errors) = consume_n(&c, 10, DEADLINE);
        assert_eq!(got.len(), 10, "consumed before the kill; errors {errors:?}");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(10)).unwrap();
        c.commit(&tpl, CommitMode::Sync).expect("commit offset 10");
        assert_eq!(committed(&c, &topic), Some(10));
    }

    brokers[coordinator as usize].kill();
    let alive: Vec<usize> = (0..3).filter(|i| *i != coordinator as usize).collect();
    let moved =
        wait_coordinator(brokers[alive[0]].port(), &group, "after kill -9 of the coordinator", |n| n != coordinator);
    assert!(alive.contains(&(moved as usize)), "the new coordinator {moved} is a live broker");
    assert_eq!(
        wait_coordinator(brokers[alive[1]].port(), &group, "the other survivor", |n| n != coordinator),
        moved,
        "both survivors name the same coordinator"
    );

    let survivors = alive.iter().map(|i| brokers[*i].addr()).collect::<Vec<_>>().join(",");
    let c = group_consumer(&survivors, &group);
    assert_eq!(committed(&c, &topic), Some(10), "the committed offset is on the new coordinator");
    c.subscribe(&[&topic]).expect("subscribe");
    assert_eq!(first_offset(&c), Some(10), "the group resumes at its committed offset, not the earliest");
    drop(c);
    for b in &mut brokers {
        if b.is_running() {
            b.stop();
        }
    }
}
