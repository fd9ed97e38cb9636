//! Cluster behaviours of #18 as Kafka 4.x has them, on three real brokers:
//! - automatic preferred-leader rebalance (`auto_leader_rebalance_enable`): a killed broker's
//!   partitions fail over; once it is back and in sync, leadership returns to it;
//! - ElectLeaders sent to a broker holding no replica of the partition is forwarded and works
//!   (four brokers, three replicas);
//! - Produce acks=all on a leader whose followers are stopped (SIGSTOP: cut off) is answered
//!   REQUEST_TIMED_OUT after the request's `timeout_ms` (Kafka's delayed produce), and what was
//!   acknowledged before and after is all there once the followers are back;
//! - DescribeGroups on a broker that is not the group's coordinator answers NOT_COORDINATOR.
//!
//! Contract: every broker is stopped by its harness (a stopped process is killed by Drop);
//! every wait has a deadline.

use crate::common::*;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_tests::Broker;
use std::path::Path;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const REQUEST_TIMED_OUT: i16 = 7;
const NOT_COORDINATOR: i16 = 16;

/// Broker `node` of a three-broker cluster with the given config file.
fn member(node: usize, peer_ports: &[u16], config: &Path) -> Broker {
    let opts = MemberOpts { dir_prefix: "sluice-it-ops-", session_ms: 1000, env: &[], config: Some(config) };
    cluster_member(node, peer_ports, &opts)
}

/// Three brokers sharing a config file of `toml`; the file's directory lives as long as they.
fn cluster(toml: &str) -> (Vec<Broker>, Vec<u16>, tempfile::TempDir) {
    cluster_of(3, toml)
}

/// `n` brokers sharing a config file of `toml`.
fn cluster_of(n: usize, toml: &str) -> (Vec<Broker>, Vec<u16>, tempfile::TempDir) {
    let conf_dir = tempfile::Builder::new().prefix("sluice-it-ops-conf-").tempdir().expect("temp dir");
    let path = conf_dir.path().join("sluice.toml");
    std::fs::write(&path, toml).expect("config written");
    let ports = free_ports(n);
    let brokers = (0..n).map(|i| member(i, &ports, &path)).collect();
    (brokers, ports, conf_dir)
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Per partition: (leader, first replica, replicas, ISR), as the broker on `port` knows it.
fn partitions(port: u16, topic: &str) -> Vec<(i32, i32, Vec<i32>, Vec<i32>)> {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(topic)))]));
    let r: MetadataResponse = call(port, ApiKey::Metadata, 12, &req);
    let mut out: Vec<_> = r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            let replicas: Vec<i32> = p.replica_nodes.iter().map(|n| n.0).collect();
            let isr = p.isr_nodes.iter().map(|n| n.0).collect();
            (p.partition_index, (p.leader_id.0, replicas.first().copied().unwrap_or(-1), replicas, isr))
        })
        .collect();
    out.sort_by_key(|(p, _)| *p);
    out.into_iter().map(|(_, s)| s).collect()
}

/// Waits until `ok` holds for the partitions as the broker on `port` describes them.
fn wait_partitions(
    port: u16,
    topic: &str,
    what: &str,
    ok: impl Fn(&[(i32, i32, Vec<i32>, Vec<i32>)]) -> bool,
) -> Vec<(i32, i32, Vec<i32>, Vec<i32>)> {
    let start = Instant::now();
    loop {
        let seen = partitions(port, topic);
        if ok(&seen) {
            return seen;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn all_in_sync(seen: &[(i32, i32, Vec<i32>, Vec<i32>)]) -> bool {
    !seen.is_empty() && seen.iter().all(|(l, _, r, isr)| *l >= 0 && isr.len() == r.len())
}

#[test]
fn a_returning_broker_takes_its_preferred_leaders_back() {
    let _slot = shared_slot();
    let (mut brokers, _ports, _conf) = cluster("leader_imbalance_check_interval_seconds = 1\n");
    let topic = "ops-rebalance";
    create_topic_rf(&brokers[0].addr(), topic, 6, 3);
    let settled = wait_partitions(brokers[1].port(), topic, "leaders settled", |s| {
        all_in_sync(s) && s.iter().all(|(l, pref, _, _)| l == pref)
    });
    assert!(settled.iter().any(|(_, pref, _, _)| *pref == 0), "broker 0 is preferred somewhere: {settled:?}");
    brokers[0].kill();
    wait_partitions(brokers[1].port(), topic, "failover off broker 0", |s| s.iter().all(|(l, ..)| *l > 0));
    brokers[0].start_again_same_port();
    // Back, caught up, and leading every partition it is the first replica of again: nobody
    // asked for an election, the rebalance did it.
    let back = wait_partitions(brokers[1].port(), topic, "leadership back on broker 0", |s| {
        all_in_sync(s) && s.iter().all(|(l, pref, _, _)| l == pref)
    });
    eprintln!("after broker 0 returned: {back:?}");
    for b in &mut brokers {
        b.stop();
    }
}

/// ElectLeaders v2 (preferred) of `topic`'s `partition` sent to `port`: the error code.
fn elect(port: u16, topic: &str, partition: i32) -> i16 {
    let tps = vec![TopicPartitions::default().with_topic(name(topic)).with_partitions(vec![partition])];
    let req =
        ElectLeadersRequest::default().with_election_type(0).with_topic_partitions(Some(tps)).with_timeout_ms(30_000);
    let r: ElectLeadersResponse = call(port, ApiKey::ElectLeaders, 2, &req);
    r.replica_election_results[0].partition_result[0].error_code
}

#[test]
fn elect_leaders_through_a_broker_without_a_replica_is_forwarded() {
    let _slot = shared_slot();
    // Four brokers and three replicas: each partition has a broker without a replica, and
    // losing one replica leaves a majority to elect another leader.
    let (mut brokers, _ports, _conf) = cluster_of(4, "auto_leader_rebalance_enable = false\n");
    let topic = "ops-forward";
    create_topic_rf(&brokers[0].addr(), topic, 4, 3);
    let settled = wait_partitions(brokers[0].port(), topic, "leaders settled", all_in_sync);
    // A partition whose preferred replica is broker 0, and the broker without a replica of it.
    let (p, (_, _, replicas, _)) =
        settled.iter().enumerate().find(|(_, (_, pref, ..))| *pref == 0).expect("broker 0 is preferred somewhere");
    let p = i32::try_from(p).expect("few partitions");
    let outsider = (0..4).find(|n| !replicas.contains(n)).expect("RF 3 of 4 brokers");
    brokers[0].kill();
    wait_partitions(brokers[1].port(), topic, "failover off broker 0", |s| s[p as usize].0 > 0);
    brokers[0].start_again_same_port();
    // No automatic rebalance: broker 0 stays a follower once back in sync.
    wait_partitions(brokers[1].port(), topic, "broker 0 back in sync", |s| s[p as usize].3.contains(&0));
    let port = brokers[usize::try_from(outsider).expect("a node")].port();
    // The outsider judges from its own metadata (PREFERRED_LEADER_NOT_AVAILABLE until it has
    // applied the ISR change): wait until it sees broker 0 in sync too.
    wait_partitions(port, topic, "the outsider sees broker 0 in sync", |s| s[p as usize].3.contains(&0));
    assert_eq!(elect(port, topic, p), 0, "the election asked of broker {outsider} (no replica) succeeded");
    let after = partitions(port, topic);
    assert_eq!(after[p as usize].0, 0, "broker 0 leads partition {p} again: {after:?}");
    for b in &mut brokers {
        b.stop();
    }
}

/// Produce v11 of one record to partition 0 with acks=all and `timeout_ms`: the error code.
fn produce(port: u16, topic: &str, tag: &str, timeout_ms: i32) -> i16 {
    let data = vec![PartitionProduceData::default().with_index(0).with_records(Some(record_batch_at(&[0], tag)))];
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default().with_name(name(topic)).with_partition_data(data)]);
    let r: ProduceResponse = call(port, ApiKey::Produce, 11, &req);
    r.responses[0].partition_responses[0].error_code
}

fn signal(b: &Broker, sig: libc::c_int) {
    // SAFETY: kill(2) on a child process this test started.
    assert_eq!(unsafe { libc::kill(b.pid(), sig) }, 0, "signal {sig} to {}", b.pid());
}

#[test]
fn acks_all_on_a_leader_cut_off_times_out_and_loses_nothing() {
    let _slot = shared_slot();
    let (mut brokers, _ports, _conf) = cluster("auto_leader_rebalance_enable = false\n");
    let topic = "ops-cutoff";
    create_topic_rf(&brokers[0].addr(), topic, 1, 3);
    let settled = wait_partitions(brokers[0].port(), topic, "leader settled", all_in_sync);
    let mut leader = usize::try_from(settled[0].0).expect("a leader");
    let start = Instant::now();
    while produce(brokers[leader].port(), topic, "before", 10_000) != 0 {
        assert!(start.elapsed() < DEADLINE, "the first produce was never acknowledged");
        std::thread::sleep(Duration::from_millis(200));
        // A loaded machine may see an election right after creation: follow the leader.
        let now = wait_partitions(brokers[0].port(), topic, "leader settled", all_in_sync);
        leader = usize::try_from(now[0].0).expect("a leader");
    }
    let followers: Vec<usize> = (0..3).filter(|n| *n != leader).collect();
    for f in &followers {
        signal(&brokers[*f], libc::SIGSTOP);
    }
    let asked = Instant::now();
    let code = produce(brokers[leader].port(), topic, "cut", 2_000);
    let took = asked.elapsed();
    for f in &followers {
        signal(&brokers[*f], libc::SIGCONT);
    }
    assert_eq!(code, REQUEST_TIMED_OUT, "acks=all without a quorum is answered REQUEST_TIMED_OUT");
    assert!(took >= Duration::from_millis(1_900), "answered after the request's timeout, not before: {took:?}");
    eprintln!("cut-off leader answered REQUEST_TIMED_OUT after {took:?}");
    // Healed: a new acknowledged write, then every acknowledged record is there exactly once.
    let start = Instant::now();
    loop {
        let seen = partitions(brokers[followers[0]].port(), topic);
        if let Ok(l) = usize::try_from(seen[0].0) {
            if produce(brokers[l].port(), topic, "after", 10_000) == 0 {
                break;
            }
        }
        assert!(start.elapsed() < DEADLINE, "no produce acknowledged after the heal");
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = consumer(&brokers[followers[0]].addr());
    assign(&c, topic, &[(0, rdkafka::Offset::Beginning)]);
    let mut values = Vec::new();
    let start = Instant::now();
    while !values.iter().any(|v: &String| v.starts_with("after")) {
        assert!(start.elapsed() < DEADLINE, "the acknowledged records were not read back: {values:?}");
        let (got, _) = consume_n(&c, 1, Duration::from_secs(2));
        values.extend(got.into_iter().filter_map(|m| m.msg.payload).map(|v| String::from_utf8_lossy(&v).into_owned()));
    }
    drop(c);
    for tag in ["before", "after"] {
        assert_eq!(values.iter().filter(|v| v.starts_with(tag)).count(), 1, "{tag} exactly once: {values:?}");
    }
    assert!(
        values.iter().filter(|v| v.starts_with("cut")).count() <= 1,
        "the timed-out write at most once: {values:?}"
    );
    for b in &mut brokers {
        b.stop();
    }
}

/// FindCoordinator v3 of a group asked of `port`: the coordinator's node id (-1 on error).
fn coordinator(port: u16, group: &str) -> i32 {
    let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())).with_key_type(0);
    let r: FindCoordinatorResponse = call(port, ApiKey::FindCoordinator, 3, &req);
    if r.error_code == 0 {
        r.node_id.0
    } else {
        -1
    }
}

#[test]
fn describe_groups_on_a_broker_that_is_not_the_coordinator_answers_not_coordinator() {
    let _slot = shared_slot();
    let (mut brokers, _ports, _conf) = cluster("auto_leader_rebalance_enable = false\n");
    let group = "ops-describe";
    let start = Instant::now();
    let mut node = coordinator(brokers[0].port(), group);
    while node < 0 {
        assert!(start.elapsed() < DEADLINE, "no coordinator found for {group}");
        std::thread::sleep(Duration::from_millis(300));
        node = coordinator(brokers[0].port(), group);
    }
    let describe = |port: u16| {
        let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let r: DescribeGroupsResponse = call(port, ApiKey::DescribeGroups, 5, &req);
        r.groups[0].error_code
    };
    let coordinator_port = brokers[usize::try_from(node).expect("a node")].port();
    let start = Instant::now();
    while describe(coordinator_port) != 0 {
        assert!(start.elapsed() < DEADLINE, "the coordinator never described {group}");
        std::thread::sleep(Duration::from_millis(300));
    }
    for (i, b) in brokers.iter().enumerate().filter(|(i, _)| *i != usize::try_from(node).expect("a node")) {
        assert_eq!(describe(b.port()), NOT_COORDINATOR, "broker {i} is not the coordinator (node {node} is)");
    }
    for b in &mut brokers {
        b.stop();
    }
}
