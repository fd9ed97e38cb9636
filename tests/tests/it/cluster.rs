//! Several brokers on loopback: membership, liveness and the broker-to-broker listener's
//! defences, with real processes (`sluice serve` by hand and `sluice cluster start`).
//!
//! Contract: every broker and child is stopped by PID (the `Broker` harness, or SIGTERM to
//! the cluster command and a check that its children are gone); every wait has a deadline.
//! Topics go through the metadata log: an RF=3 topic created on one broker is described the
//! same by every broker, survives a member's kill -9 (its replicas then listed offline) and
//! is there again when it returns. Data is not replicated by these tests.

use crate::common::*;
use bytes::Bytes;
use kafka_protocol::messages::{
    DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse, ResponseHeader,
};
use kafka_protocol::protocol::Decodable;
use rdkafka::consumer::Consumer;
use sluice_net::peer::wire::{encode_frame, Header, Hello, PREAMBLE, WIRE_VERSION};
use sluice_tests::{sluice_bin, Broker};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SESSION_MS: u64 = 1000;
/// Generous bound for a membership change to show (session timeout plus scheduling slack on a
/// loaded 2-core machine).
const CHANGE_DEADLINE: Duration = Duration::from_secs(15);

/// Starts broker `node` of a cluster whose members listen for peers on `peer_ports`.
fn member(node: usize, peer_ports: &[u16]) -> Broker {
    cluster_member(
        node,
        peer_ports,
        &MemberOpts { dir_prefix: "sluice-it-cluster-", session_ms: SESSION_MS, env: &[], config: None },
    )
}

/// Starts three members and waits until each lists all three; returns them and that list.
fn start_three() -> (Vec<Broker>, BTreeSet<(i32, u16)>) {
    let peers = free_ports(3);
    let brokers: Vec<Broker> = (0..3).map(|i| member(i, &peers)).collect();
    let all: BTreeSet<(i32, u16)> = brokers.iter().enumerate().map(|(i, b)| (i as i32, b.port())).collect();
    for b in &brokers {
        wait_for_brokers(&b.addr(), &all, "all three up");
    }
    (brokers, all)
}

/// Broker ids and ports in a Metadata answer from `addr` (librdkafka).
fn metadata_brokers(addr: &str) -> Option<BTreeSet<(i32, u16)>> {
    let c = consumer(addr);
    let md = c.fetch_metadata(None, Duration::from_secs(5)).ok()?;
    Some(md.brokers().iter().map(|b| (b.id(), u16::try_from(b.port()).unwrap())).collect())
}

/// Broker ids, hosts and ports in a DescribeCluster v0 answer from the broker on `port`.
fn describe_cluster(port: u16) -> (String, BTreeSet<(i32, String, i32)>) {
    let mut s = raw_connect(port);
    let frame = encode_request(60, 0, 2, 7, &DescribeClusterRequest::default());
    let resp = roundtrip(&mut s, &frame).expect("DescribeCluster");
    let mut buf = Bytes::from(resp);
    let header = ResponseHeader::decode(&mut buf, 1).expect("response header");
    assert_eq!(header.correlation_id, 7);
    let body = DescribeClusterResponse::decode(&mut buf, 0).expect("DescribeCluster body");
    assert_eq!(body.error_code, 0);
    let brokers = body.brokers.iter().map(|b| (b.broker_id.0, b.host.to_string(), b.port)).collect();
    (body.cluster_id.to_string(), brokers)
}

/// Polls `addr` until its Metadata lists exactly `want`, or panics at the deadline.
fn wait_for_brokers(addr: &str, want: &BTreeSet<(i32, u16)>, what: &str) -> Duration {
    let start = Instant::now();
    let mut last = None;
    for _ in 0..200 {
        last = metadata_brokers(addr);
        if last.as_ref() == Some(want) {
            return start.elapsed();
        }
        if start.elapsed() > CHANGE_DEADLINE {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: {addr} lists {last:?}, expected {want:?} within {CHANGE_DEADLINE:?}");
}

#[test]
fn three_brokers_see_each_other_and_drop_a_killed_one_until_it_returns() {
    let _slot = shared_slot();
    let (mut brokers, all) = start_three();
    for b in &brokers {
        assert!(b.ready_line().contains("node_id="), "{}", b.ready_line());
    }
    let (cluster_id, described) = describe_cluster(brokers[1].port());
    assert_eq!(cluster_id, CLUSTER_ID);
    let want: BTreeSet<_> = all.iter().map(|(i, p)| (*i, "127.0.0.1".to_string(), i32::from(*p))).collect();
    assert_eq!(described, want);

    brokers[2].kill();
    let two: BTreeSet<(i32, u16)> = all.iter().copied().filter(|(i, _)| *i != 2).collect();
    let took = wait_for_brokers(&brokers[0].addr(), &two, "after kill -9 of broker 2");
    wait_for_brokers(&brokers[1].addr(), &two, "after kill -9 of broker 2");
    eprintln!("broker 2 left Metadata {took:?} after its kill (session timeout {SESSION_MS} ms)");
    // Still serving clients meanwhile.
    let topic = topic_name("cluster");
    create_topic(&brokers[0].addr(), &topic, 1);

    brokers[2].start_again_same_port();
    for b in &brokers {
        wait_for_brokers(&b.addr(), &all, "after broker 2 restarted");
    }
    for b in &mut brokers {
        b.stop();
    }
}

/// One partition as Metadata v12 describes it: error, leader, epoch, replicas, ISR, offline.
type PartitionView = (i16, i32, i32, Vec<i32>, Vec<i32>, Vec<i32>);

/// Metadata v12 of `topic` from the broker on `port` (raw, to see offline replicas), and the
/// controller id; None when the topic is not (yet) known there.
fn describe_topic(port: u16, topic: &str) -> Option<(i32, Vec<PartitionView>)> {
    let mut s = raw_connect(port);
    let req = MetadataRequest::default()
        .with_topics(Some(vec![kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(kafka_protocol::messages::TopicName(topic.to_string().into())))]));
    let frame = encode_request(3, 12, 2, 9, &req);
    let mut buf = Bytes::from(roundtrip(&mut s, &frame).ok()?);
    ResponseHeader::decode(&mut buf, 1).ok()?;
    let body = MetadataResponse::decode(&mut buf, 12).ok()?;
    let t = body.topics.first().filter(|t| t.error_code == 0)?;
    let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    let mut parts: Vec<PartitionView> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.error_code,
                p.leader_id.0,
                p.leader_epoch,
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
                ids(&p.offline_replicas),
            )
        })
        .collect();
    parts.sort_by_key(|p| p.3.clone());
    Some((body.controller_id.0, parts))
}

/// Waits until `f` holds for the topic's description on the broker on `port`.
fn wait_described(
    port: u16,
    topic: &str,
    what: &str,
    f: impl Fn(&(i32, Vec<PartitionView>)) -> bool,
) -> (i32, Vec<PartitionView>) {
    let mut last = None;
    sluice_tests::retry_until(CHANGE_DEADLINE, 300, Duration::from_millis(100), || {
        last = describe_topic(port, topic);
        last.clone().filter(|d| f(d))
    })
    .unwrap_or_else(|| panic!("{what}: topic {topic} on port {port}: last seen {last:?}"))
}

#[test]
fn an_rf3_topic_is_described_alike_everywhere_and_survives_a_members_kill() {
    let _slot = shared_slot();
    let (mut brokers, _) = start_three();
    // librdkafka sends CreateTopics to the controller Metadata names.
    let topic = topic_name("rf3");
    create_topic_rf(&brokers[1].addr(), &topic, 3, 3);
    let full = |d: &(i32, Vec<PartitionView>)| {
        d.1.len() == 3 && d.1.iter().all(|p| p.0 == 0 && p.3.len() == 3 && p.4.len() == 3 && p.5.is_empty())
    };
    // Epoch 0 is the creation's assignment; from 1 on a Raft leader recorded itself.
    let elected = |d: &(i32, Vec<PartitionView>)| full(d) && d.1.iter().all(|p| p.2 >= 1);
    let seen: Vec<_> = brokers.iter().map(|b| wait_described(b.port(), &topic, "created", elected)).collect();
    assert!(seen.iter().all(|d| *d == seen[0]), "every broker says the same: {seen:?}");
    let (controller, parts) = &seen[0];
    assert!((0..3).contains(controller));
    let leaders: BTreeSet<i32> = parts.iter().map(|p| p.1).collect();
    assert_eq!(leaders, BTreeSet::from([0, 1, 2]), "one preferred leader per broker: {parts:?}");
    assert!(parts.iter().all(|p| p.1 == p.3[0]), "the preferred leader leads: {parts:?}");
    let (_, described) = describe_cluster(brokers[0].port());
    assert_eq!(described.len(), 3);

    brokers[2].kill();
    // Broker 2's partition fails over to another replica; the others keep their leaders.
    let led_before = |p: &PartitionView| parts.iter().find(|q| q.3 == p.3).map(|q| q.1);
    let offline = |d: &(i32, Vec<PartitionView>)| {
        d.1.len() == 3
            && d.1.iter().all(|p| {
                let moved = p.3[0] == 2 && p.0 == 0 && (0..2).contains(&p.1);
                p.5 == vec![2] && (moved || (p.3[0] != 2 && Some(p.1) == led_before(p)))
            })
    };
    let after = wait_described(brokers[0].port(), &topic, "after kill -9 of broker 2", offline);
    assert_eq!(
        after.1.iter().map(|p| p.3.clone()).collect::<Vec<_>>(),
        parts.iter().map(|p| p.3.clone()).collect::<Vec<_>>()
    );
    wait_described(brokers[1].port(), &topic, "after kill -9 of broker 2", offline);

    brokers[2].start_again_same_port();
    for b in &brokers {
        let back = wait_described(b.port(), &topic, "after broker 2 returned", full);
        let replicas = |v: &[PartitionView]| v.iter().map(|p| p.3.clone()).collect::<Vec<_>>();
        assert_eq!(replicas(&back.1), replicas(parts), "the same replicas as before");
        assert!(back.1.iter().all(|p| p.3.contains(&p.1)), "every partition led by a replica: {back:?}");
    }
    for b in &mut brokers {
        b.stop();
    }
}

/// Reads until the broker closes `s`; what it sent first.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    panic!("the broker kept a hostile peer connection open for 10 s");
}

fn hello(cluster_id: &str, node_id: i32) -> Vec<u8> {
    let h = Header::Hello(Hello {
        version: WIRE_VERSION,
        cluster_id: cluster_id.into(),
        node_id,
        shard: 0,
        shards: 1,
        client_host: "127.0.0.1".into(),
        client_port: 1,
    });
    let mut out = PREAMBLE.to_vec();
    out.extend_from_slice(&encode_frame(&h, 0).unwrap());
    out
}

#[test]
fn a_hostile_peer_is_refused_and_the_broker_keeps_serving() {
    let _slot = shared_slot();
    // Node 1 is listed but never started: the broker dials it in vain meanwhile.
    let peers = free_ports(2);
    let mut b = member(0, &peers);
    let peer_port = peers[0];
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", peer_port)).expect("connect to the peer port");
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };

    // Garbage instead of the preamble.
    let mut s = connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    // The preamble, then an absurd frame length.
    let mut s = connect();
    s.write_all(&PREAMBLE).unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 4]).unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    // A hello larger than a handshake may be (an oversize frame before the handshake).
    let mut s = connect();
    s.write_all(&PREAMBLE).unwrap();
    s.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    s.write_all(&16u32.to_be_bytes()).unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    // A member of another cluster: refused with the reason.
    let mut s = connect();
    s.write_all(&hello("AAAAAAAAAAAAAAAAAAAAAA", 1)).unwrap();
    let answer = read_until_closed(&mut s);
    assert!(String::from_utf8_lossy(&answer).contains("is not this cluster's"), "{answer:?}");
    // A node id that is not a member.
    let mut s = connect();
    s.write_all(&hello(CLUSTER_ID, 9)).unwrap();
    let answer = read_until_closed(&mut s);
    assert!(String::from_utf8_lossy(&answer).contains("not in controller_quorum_voters"), "{answer:?}");
    // Stalled: connected, sends nothing; closed after the handshake timeout.
    let mut s = connect();
    let started = Instant::now();
    assert!(read_until_closed(&mut s).is_empty());
    assert!(started.elapsed() >= Duration::from_secs(1), "closed before any timeout: {:?}", started.elapsed());

    // The broker still serves clients (Metadata; not CreateTopics: with one member of two
    // up, the metadata log has no majority), and said why it dropped each.
    assert!(b.is_running());
    assert_eq!(metadata_brokers(&b.addr()), Some(BTreeSet::from([(0, b.port())])));
    let log = b.current_stderr();
    for why in [
        "not a sluice peer",
        "frame length 4294967295 is out of range",
        "a 1048576-byte frame is larger than the 4100 bytes allowed",
        "is not this cluster's",
        "timed out waiting for the preamble",
    ] {
        assert!(log.contains(why), "no {why:?} in the log:\n{}", b.log_tail(8192));
    }
    b.stop();
}

/// True while a process with this PID exists.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the PID exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn cluster_start_runs_three_brokers_that_see_each_other_and_stops_them_on_sigterm() {
    let _slot = shared_slot();
    let dir = tempfile::Builder::new().prefix("sluice-it-cluster-start-").tempdir().expect("temp dir");
    // A base port whose client, peer (+100) and metrics (+200) ranges are free right now.
    let base = (0..50)
        .map(|i| 20_000 + ((std::process::id() as u16 % 400) + i * 7) * 10)
        .find(|b| {
            (0..3)
                .all(|i| [0u16, 100, 200].iter().all(|o| std::net::TcpListener::bind(("127.0.0.1", b + o + i)).is_ok()))
        })
        .expect("a free port range");
    let mut child = Command::new(sluice_bin())
        .args([
            "cluster",
            "start",
            "--brokers",
            "3",
            "--base-port",
            &base.to_string(),
            "--peer-session-timeout-ms",
            "1000",
            "--peer-heartbeat-interval-ms",
            "100",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice cluster start");
    let parent = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut pids = Vec::new();
    let mut by_hand = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let line = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(l) => l,
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => break None,
        };
        if let Some(pid) = line.split_whitespace().find_map(|w| w.strip_prefix("pid=")) {
            pids.push(pid.parse::<i32>().unwrap());
        }
        if line.trim_start().starts_with("by hand:") {
            by_hand.push(line.clone());
        }
        if line.starts_with("sluice cluster ready") {
            break Some(line);
        }
    };
    let stop = |child: &mut std::process::Child| {
        unsafe { libc::kill(parent, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        None
    };
    let Some(ready) = ready else {
        stop(&mut child);
        panic!("no `sluice cluster ready` line within 60 s; pids {pids:?}");
    };
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert_eq!(by_hand.len(), 3);
    assert!(
        by_hand[1].contains(&format!("--listen 127.0.0.1:{}", base + 1)) && by_hand[1].contains("--node-id 1"),
        "{}",
        by_hand[1]
    );
    let all: BTreeSet<(i32, u16)> = (0..3).map(|i| (i, base + i as u16)).collect();
    let bootstrap = ready.split("bootstrap=").nth(1).unwrap().to_string();
    wait_for_brokers(&bootstrap, &all, "cluster start");
    wait_for_brokers(&format!("127.0.0.1:{}", base + 2), &all, "cluster start");

    let status = stop(&mut child).expect("cluster start did not exit within 45 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
    for pid in pids {
        assert!(!alive(pid), "broker pid {pid} still running after the cluster command exited");
    }
}
