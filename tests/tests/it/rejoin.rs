//! A broker killed (SIGKILL) and restarted at once rejoins its partitions' Raft groups under an
//! idempotent acks=all producer (#18): it never aborts, it acknowledges nothing before its
//! replica is open (a write to a replicated partition's log before its Raft group opened was
//! acknowledged on the local log alone and then lost — or aborted the broker at the next
//! replicated append, "a replicated batch goes at the log end"), every acknowledged record is
//! read back once, at its acknowledged offset, and the producer is never stuck.
//!
//! The kill-restart cycle is repeated `KILLS` times on the current leader of partition
//! `k % PARTS`; right after each restart, one-record acks=all probes go to the restarted broker
//! for every partition (as a client with a stale leader would send them): each probe it
//! acknowledges must be in the log at the offset it answered.
//!
//! A replica whose next entry the leader no longer has (DeleteRecords moved the leader's log
//! start past it, after its window moved on) gets a Raft snapshot: it restarts its log empty
//! at the leader's log start, rejoins the ISR and, once it leads, serves the log from there.
//!
//! Contract: every broker is stopped by its harness; every loop has a count and a deadline.

use crate::common::*;
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::{BaseRecord, Producer};
use sluice_tests::Broker;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);
const PARTS: i32 = 3;
const KILLS: usize = 4;
/// How long probes go to a restarted broker.
const PROBE_FOR: Duration = Duration::from_millis(1500);
/// Records the producer sends at most (one every `PRODUCE_EVERY`).
const MAX_RECORDS: usize = 40_000;
const PRODUCE_EVERY: Duration = Duration::from_millis(2);

pub(crate) fn member(node: usize, peer_ports: &[u16]) -> Broker {
    cluster_member(
        node,
        peer_ports,
        &MemberOpts { dir_prefix: "sluice-it-rejoin-", session_ms: 1000, env: &[], config: None },
    )
}

/// Each partition's (leader, ISR size) as broker `port` describes them (None: no answer).
fn described(port: u16, topic: &str) -> Option<Vec<(i32, usize)>> {
    let t = metadata_request::MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = MetadataRequest::default().with_topics(Some(vec![t]));
    let resp = roundtrip(&mut s, &encode_request(ApiKey::Metadata as i16, 12, 2, 1, &req)).ok()?;
    let mut buf = Bytes::from(resp);
    ResponseHeader::decode(&mut buf, 1).ok()?;
    let r = MetadataResponse::decode(&mut buf, 12).ok()?;
    let mut parts: Vec<_> = r.topics.first()?.partitions.iter().map(|p| (p.partition_index, p)).collect();
    parts.sort_by_key(|(i, _)| *i);
    Some(parts.into_iter().map(|(_, p)| (p.leader_id.0, p.isr_nodes.len())).collect())
}

/// Waits until a live broker describes every partition with a leader and a full ISR: the
/// leaders.
fn wait_settled(brokers: &[Broker], topic: &str, what: &str) -> Vec<i32> {
    let start = Instant::now();
    loop {
        for b in brokers {
            if let Some(d) = described(b.port(), topic) {
                if d.len() == PARTS as usize && d.iter().all(|&(l, isr)| l >= 0 && isr == 3) {
                    return d.into_iter().map(|(l, _)| l).collect();
                }
            }
        }
        assert!(start.elapsed() < DEADLINE, "{what}: partitions not settled");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One acks=all Produce of a one-record batch `{tag}-v0` to `partition` on `port`: (error
/// code, base offset); None when the broker did not answer.
pub(crate) fn probe(port: u16, topic: &str, partition: i32, tag: &str) -> Option<(i16, i64)> {
    produce_acks_all(port, (topic, partition), record_batch_at(&[0], tag), 5_000, Duration::from_secs(10))
}

/// The idempotent acks=all producer: sends `v{i}` to partition `i % PARTS` every
/// `PRODUCE_EVERY` until `stop`, then flushes. Returns (records sent, delivery reports, client
/// errors).
fn produce_until(
    bootstrap: String,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<Delivered>, Vec<String>) {
    let p = producer_with(
        &bootstrap,
        "all",
        &[("enable.idempotence", "true"), ("linger.ms", "2"), ("message.timeout.ms", "120000")],
    );
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) && sent < MAX_RECORDS {
        let value = format!("v{sent}");
        let partition = i32::try_from(sent).expect("fits") % PARTS;
        let rec: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, sent).partition(partition).payload(value.as_bytes());
        if p.send(rec).is_ok() {
            sent += 1;
        }
        p.poll(Duration::ZERO);
        std::thread::sleep(PRODUCE_EVERY);
    }
    // Stuck deliveries (a producer that cannot go on) show as a failed flush.
    let flushed = p.flush(Duration::from_secs(60));
    p.poll(Duration::ZERO);
    let mut errors = p.context().base.client_errors.lock().unwrap().clone();
    if let Err(e) = flushed {
        errors.push(format!("flush: {e}"));
    }
    let delivered = std::mem::take(&mut *p.context().delivered.lock().unwrap());
    (sent, delivered, errors)
}

/// Reads every partition from the start until each record of `want` was read or the deadline:
/// (partition, offset) → value of every record read.
fn read_back(addr: &str, topic: &str, want: &BTreeMap<(i32, i64), String>) -> BTreeMap<(i32, i64), String> {
    let c = consumer(addr);
    assign(&c, topic, &(0..PARTS).map(|p| (p, rdkafka::Offset::Beginning)).collect::<Vec<_>>());
    let mut read: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let start = Instant::now();
    let mut pending = want.len();
    while pending > 0 && start.elapsed() < DEADLINE {
        let (got, _) = consume_n(&c, pending, Duration::from_secs(2));
        for m in got {
            let v = String::from_utf8_lossy(m.msg.payload.as_deref().unwrap_or_default()).into_owned();
            let at = (m.msg.partition, m.offset);
            if want.get(&at) == Some(&v) {
                pending -= 1;
            }
            assert!(read.insert(at, v).is_none(), "one record per offset: {at:?}");
        }
    }
    read
}

#[test]
fn brokers_killed_and_restarted_at_once_under_an_idempotent_producer_lose_nothing() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "rejoin-idempotent";
    create_topic_rf(&brokers[0].addr(), topic, PARTS, 3);
    wait_settled(&brokers, topic, "after creation");
    let bootstrap = brokers.iter().map(Broker::addr).collect::<Vec<_>>().join(",");
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let stop = stop.clone();
        std::thread::spawn(move || produce_until(bootstrap, topic, stop))
    };

    // (partition, offset) → value of every probe a broker acknowledged.
    let mut probes: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for k in 0..KILLS {
        let leaders = wait_settled(&brokers, topic, &format!("before kill {k}"));
        let victim = usize::try_from(leaders[k % PARTS as usize]).expect("a node id");
        std::thread::sleep(Duration::from_millis(300));
        brokers[victim].kill();
        brokers[victim].start_again_same_port();
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < PROBE_FOR {
            for p in 0..PARTS {
                let tag = format!("probe{k}-{n}-p{p}");
                if let Some((0, base)) = probe(brokers[victim].port(), topic, p, &tag) {
                    probes.insert((p, base), format!("{tag}-v0"));
                }
            }
            n += 1;
        }
        for (i, b) in brokers.iter_mut().enumerate() {
            assert!(b.is_running(), "broker {i} died after kill {k}: {}", b.log_tail(8192));
        }
        eprintln!("kill {k}: broker {victim} restarted; {} probes acknowledged so far", probes.len());
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, delivered, errors) = producing.join().expect("producer thread");
    for (i, b) in brokers.iter_mut().enumerate() {
        assert!(b.is_running(), "broker {i} died: {}", b.log_tail(8192));
    }
    let failed: Vec<&Delivered> = delivered.iter().filter(|d| d.error.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} deliveries failed, first {:?}; client errors {errors:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(delivered.len(), sent, "a delivery report for every record (the producer went on)");
    let fatal: Vec<&String> = errors.iter().filter(|e| e.contains("Fatal") || e.contains("flush")).collect();
    assert!(fatal.is_empty(), "producer errors: {fatal:?}");

    let mut want: BTreeMap<(i32, i64), String> =
        delivered.iter().map(|d| ((d.partition, d.offset), format!("v{}", d.id))).collect();
    assert_eq!(want.len(), sent, "one offset per acknowledged record");
    for (at, v) in &probes {
        assert!(want.insert(*at, v.clone()).is_none(), "a probe and a record at {at:?}");
    }
    let read = read_back(&brokers[0].addr(), topic, &want);
    let missing: Vec<_> = want.iter().filter(|(at, v)| read.get(at) != Some(v)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged records not read back at their offsets (first 5): {missing:?}");
    // Probes that were not acknowledged (timed out, or refused after their proposal) may be in
    // the log; the producer's records are there exactly once.
    let mut seen = std::collections::BTreeSet::new();
    for v in read.values().filter(|v| !v.starts_with("probe")) {
        assert!(seen.insert(v.clone()), "record {v} read twice");
    }
    assert_eq!(seen.len(), sent, "nothing but the producer's records and probes");
    eprintln!("{sent} records and {} probes acknowledged, all read back once", probes.len());
    for b in &mut brokers {
        b.stop();
    }
}

/// One uncompressed batch of one record whose value is `{tag}-` followed by `size` bytes.
pub(crate) fn big_batch(tag: &str, size: usize) -> Bytes {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let mut value = format!("{tag}-").into_bytes();
    value.resize(value.len() + size, b'x');
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &[record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .expect("encode record batch");
    buf.freeze()
}

/// One acks=all Produce of `batch` to partition 0 on `port`: (error code, base offset).
pub(crate) fn produce_batch(port: u16, topic: &str, batch: Bytes) -> Option<(i16, i64)> {
    produce_acks_all(port, (topic, 0), batch, 20_000, Duration::from_secs(30))
}

/// Produces a small record `{tag}-v0` to partition 0 through whichever of `live` accepts it
/// (the leader), until the deadline: (leader index, offset, value).
pub(crate) fn produce_to_leader(brokers: &[Broker], live: &[usize], topic: &str, tag: &str) -> (usize, i64, String) {
    let start = Instant::now();
    loop {
        for &i in live {
            if let Some((0, base)) = probe(brokers[i].port(), topic, 0, tag) {
                return (i, base, format!("{tag}-v0"));
            }
        }
        assert!(start.elapsed() < DEADLINE, "no broker of {live:?} accepted {tag}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Partition 0's (leader, replicas, ISR) as broker `port` describes it.
pub(crate) fn partition0(port: u16, topic: &str) -> (i32, Vec<i32>, Vec<i32>) {
    let t = metadata_request::MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))));
    let r: MetadataResponse = call(port, ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(vec![t])));
    let Some(p) = r.topics.first().and_then(|t| t.partitions.first()) else { return (-1, Vec::new(), Vec::new()) };
    (p.leader_id.0, p.replica_nodes.iter().map(|n| n.0).collect(), p.isr_nodes.iter().map(|n| n.0).collect())
}

/// DeleteRecords v2 of partition 0 up to `offset` (-1: the high watermark) on `port`: (error
/// code, low watermark).
pub(crate) fn delete_records(port: u16, topic: &str, offset: i64) -> (i16, i64) {
    use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    let t = DeleteRecordsTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(offset)]);
    let req = DeleteRecordsRequest::default().with_topics(vec![t]).with_timeout_ms(10_000);
    let r: DeleteRecordsResponse = call(port, ApiKey::DeleteRecords, 2, &req);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

/// ElectLeaders v2 (preferred) for partition 0: its error code.
pub(crate) fn elect_preferred(port: u16, topic: &str) -> i16 {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let tps = vec![TopicPartitions::default()
        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![0])];
    let req =
        ElectLeadersRequest::default().with_election_type(0).with_topic_partitions(Some(tps)).with_timeout_ms(30_000);
    let r: ElectLeadersResponse = call(port, ApiKey::ElectLeaders, 2, &req);
    assert_eq!(r.error_code, 0);
    r.replica_election_results[0].partition_result[0].error_code
}

/// Bytes of each large batch, and how many: together more than the Raft window's byte bound
/// (`RAFT_WINDOW_BYTES`, 16 MiB in core/src/limits.rs), so the leader's window moves past the
/// killed replica's end.
pub(crate) const BIG_BATCH_BYTES: usize = 900_000;
pub(crate) const BIG_BATCHES: usize = 22;

/// The replicas of `topic`'s partition 0 once it has a leader and all three in its ISR.
pub(crate) fn settled_replicas(brokers: &[Broker], topic: &str) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let (leader, replicas, isr) = partition0(brokers[0].port(), topic);
        if leader >= 0 && isr.len() == 3 {
            return replicas;
        }
        assert!(start.elapsed() < DEADLINE, "partition not settled");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_replica_below_the_leaders_log_start_installs_a_snapshot_and_serves_from_there() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "rejoin-snapshot";
    create_topic_rf(&brokers[0].addr(), topic, 1, 3);
    let replicas = settled_replicas(&brokers, topic);
    let preferred = usize::try_from(replicas[0]).expect("a node id");
    produce_to_leader(&brokers, &[0, 1, 2], topic, "first");

    // The preferred replica is killed; the others take more than a window of bytes, then the
    // leader deletes every record below its high watermark: the killed replica's next entry
    // is gone from the leader's log.
    brokers[preferred].kill();
    let rest: Vec<usize> = (0..3).filter(|&i| i != preferred).collect();
    let (leader, _, _) = produce_to_leader(&brokers, &rest, topic, "after-kill");
    for i in 0..BIG_BATCHES {
        let r = produce_batch(brokers[leader].port(), topic, big_batch(&format!("big{i}"), BIG_BATCH_BYTES));
        assert_eq!(r.map(|r| r.0), Some(0), "big batch {i} acknowledged");
    }
    let (code, low) = delete_records(brokers[leader].port(), topic, -1);
    assert_eq!(code, 0, "DeleteRecords on the leader");
    let mut acked = BTreeMap::new();
    for i in 0..5 {
        let (l, off, v) = produce_to_leader(&brokers, &rest, topic, &format!("later{i}"));
        assert_eq!(l, leader);
        acked.insert(off, v);
    }

    // It returns: the leader's snapshot restarts its log at the leader's log start; it
    // rejoins the ISR, leads after a preferred election and serves the log from there.
    brokers[preferred].start_again();
    let started = Instant::now();
    while partition0(brokers[leader].port(), topic).2.len() < 3 {
        assert!(
            started.elapsed() < DEADLINE,
            "broker {preferred} never rejoined the ISR: {:?}\n{}",
            partition0(brokers[leader].port(), topic),
            brokers[preferred].log_tail(4096)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("broker {preferred} back in the ISR {:?} after its start", started.elapsed());
    let port = brokers[preferred].port();
    let start = Instant::now();
    while partition0(port, topic).0 != i32::try_from(preferred).expect("fits") {
        let code = elect_preferred(brokers[leader].port(), topic);
        assert!(code == 0 || code == 84 || start.elapsed() < DEADLINE, "preferred election refused: {code}");
        assert!(start.elapsed() < DEADLINE, "broker {preferred} does not lead: {:?}", partition0(port, topic));
        std::thread::sleep(Duration::from_millis(300));
    }
    let (l, off, v) = produce_to_leader(&brokers, &[preferred], topic, "on-new-leader");
    assert_eq!(l, preferred);
    acked.insert(off, v);
    let c = consumer(&brokers[preferred].addr());
    let (earliest, _) = c.fetch_watermarks(topic, 0, Duration::from_secs(10)).expect("watermarks");
    assert_eq!(earliest, low, "the rebuilt replica's log starts where the old leader's did");
    assign(&c, topic, &[(0, rdkafka::Offset::Beginning)]);
    let (got, _) = consume_n(&c, acked.len(), DEADLINE);
    let read: BTreeMap<i64, String> = got
        .into_iter()
        .map(|m| (m.offset, String::from_utf8_lossy(m.msg.payload.as_deref().unwrap_or_default()).into_owned()))
        .collect();
    assert_eq!(read, acked, "every record from the log start on, once, at its offset");
    for b in &mut brokers {
        b.stop();
    }
}
