//! A replica rebuilt by a Raft snapshot gets every record from its leader's log start (#18),
//! as Kafka's follower does when its fetch falls below the leader's log start (it truncates
//! fully and fetches from the leader's log start, the batch holding it whole).
//!
//! Three brokers, one partition of three replicas. The preferred replica is killed; the leader
//! takes a multi-record batch, an idempotent producer's batches (raw Produce and librdkafka),
//! an aborted transaction (librdkafka), then more than the Raft window's bytes
//! (`RAFT_WINDOW_BYTES`), and DeleteRecords moves its log start inside the first batch: the
//! killed replica's next entry is below the leader's log start, which lies far below the
//! leader's window. The replica returns, installs the snapshot, rejoins the ISR and is
//! elected; then, on it:
//! - every record from the old leader's log start on is read at the same offset, same bytes;
//! - read_committed skips the aborted transaction;
//! - the idempotent producer's state came with the batches: the raw producer's last batch
//!   sent again is answered as a duplicate at its first offset, a sequence gap is
//!   OUT_OF_ORDER_SEQUENCE_NUMBER, the next sequence is accepted; librdkafka's idempotent
//!   producer goes on without an error.
//!
//! Before the change the snapshot was the leader's window floor: the records between the log
//! start and the floor were never copied, and the producer state was unknown there.
//!
//! Contract: every broker is stopped by its harness; every loop has a count and a deadline.

use crate::common::*;
use crate::rejoin::{
    big_batch, delete_records, elect_preferred, member, partition0, produce_batch, produce_to_leader, settled_replicas,
    BIG_BATCHES, BIG_BATCH_BYTES, DEADLINE,
};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::{BaseRecord, Producer};
use sluice_tests::Broker;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// Records of librdkafka's idempotent producer before and after the install.
const IDEMPOTENT: usize = 50;
/// Records of the aborted transaction.
const ABORTED: usize = 5;

/// A batch of `n` records `{tag}-v{i}` of producer `pid` at `epoch`, sequences from `seq`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: i32, tag: &str) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: seq + i,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("{tag}-v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode record batch");
    buf.freeze()
}

/// InitProducerId (no transactional id) on `port`: (producer id, epoch).
fn init_producer_id(port: u16) -> (i64, i16) {
    let start = Instant::now();
    loop {
        let req = InitProducerIdRequest::default().with_transaction_timeout_ms(60_000);
        let r: InitProducerIdResponse = call(port, ApiKey::InitProducerId, 4, &req);
        if r.error_code == 0 {
            return (r.producer_id.0, r.producer_epoch);
        }
        assert!(start.elapsed() < DEADLINE, "InitProducerId: error {}", r.error_code);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads partition 0 from `from` with `isolation` until a record valued `last` was read (or
/// the deadline): offset → value.
fn read_until(addr: &str, topic: &str, from: i64, isolation: &str, last: &str) -> BTreeMap<i64, String> {
    let c = consumer_with(addr, &[("isolation.level", isolation)]);
    assign(&c, topic, &[(0, rdkafka::Offset::Offset(from))]);
    let mut read = BTreeMap::new();
    let start = Instant::now();
    while !read.values().any(|v| v == last) {
        assert!(start.elapsed() < DEADLINE, "{last} not read from {addr} ({isolation}): {} records", read.len());
        let (got, _) = consume_n(&c, 1000, Duration::from_millis(500));
        for m in got {
            let v = String::from_utf8_lossy(m.msg.payload.as_deref().unwrap_or_default()).into_owned();
            assert!(read.insert(m.offset, v).is_none(), "one record per offset: {}", m.offset);
        }
    }
    read
}

/// Sends `n` records `{tag}-{i}` with `p` and flushes: the offsets of the delivered ones.
fn send_all(p: &TestProducer, topic: &str, tag: &str, n: usize) -> Vec<i64> {
    for i in 0..n {
        let value = format!("{tag}-{i}");
        let rec: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, i).partition(0).payload(value.as_bytes());
        p.send(rec).map_err(|(e, _)| e).expect("queued");
    }
    p.flush(Duration::from_secs(60)).expect("flushed");
    let delivered = std::mem::take(&mut *p.context().delivered.lock().unwrap());
    let failed: Vec<_> = delivered.iter().filter(|d| d.error.is_some()).collect();
    assert!(failed.is_empty(), "{tag}: failed deliveries, first {:?}", failed.first());
    assert_eq!(delivered.len(), n, "{tag}: a report for each record");
    delivered.iter().map(|d| d.offset).collect()
}

#[test]
fn a_replica_rebuilt_by_a_snapshot_has_every_record_and_producer_from_the_leaders_log_start() {
    let _slot = shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let topic = "snapshot-log-start";
    create_topic_rf(&brokers[0].addr(), topic, 1, 3);
    let replicas = settled_replicas(&brokers, topic);
    let preferred = usize::try_from(replicas[0]).expect("a node id");
    // The transactional producer first finds its coordinator while all three brokers run:
    // __transaction_state is created with three replicas only while three brokers are listed
    // (as Kafka creates it only with enough brokers registered); found after the kill, it
    // raced the killed broker's delisting and timed out once in CI.
    let all = brokers.iter().map(Broker::addr).collect::<Vec<_>>().join(",");
    let txn = producer_with(
        &all,
        "all",
        &[("transactional.id", "snapshot-install"), ("enable.idempotence", "true"), ("linger.ms", "2")],
    );
    let start = Instant::now();
    while let Err(e) = txn.init_transactions(Duration::from_secs(10)) {
        assert!(start.elapsed() < DEADLINE, "init transactions: {e}");
    }
    brokers[preferred].kill();
    let rest: Vec<usize> = (0..3).filter(|&i| i != preferred).collect();
    let (leader, _, _) = produce_to_leader(&brokers, &rest, topic, "after-kill");
    let lport = brokers[leader].port();
    let bootstrap = rest.iter().map(|&i| brokers[i].addr()).collect::<Vec<_>>().join(",");

    // A batch of five records: the log start moves inside it.
    let (code, first) = produce_batch(lport, topic, record_batch_at(&[0, 1, 2, 3, 4], "early")).expect("answered");
    assert_eq!(code, 0, "the five-record batch");
    // A raw idempotent producer's two batches, librdkafka's idempotent producer, an aborted
    // transaction.
    let (pid, epoch) = init_producer_id(lport);
    let raw =
        |seq, tag: &str| produce_batch(lport, topic, idempotent_batch(pid, epoch, seq, 3, tag)).expect("answered");
    assert_eq!(raw(0, "raw0").0, 0);
    let (code, raw3_at) = raw(3, "raw3");
    assert_eq!(code, 0);
    let idem = producer_with(&bootstrap, "all", &[("enable.idempotence", "true"), ("linger.ms", "2")]);
    let idem_before = send_all(&idem, topic, "idem", IDEMPOTENT);
    // A timeout is retriable (librdkafka resumes the call): the coordinator may be moving off
    // the killed broker.
    txn.begin_transaction().expect("begin");
    send_all(&txn, topic, "aborted", ABORTED);
    let start = Instant::now();
    while let Err(e) = txn.abort_transaction(Duration::from_secs(10)) {
        assert!(start.elapsed() < DEADLINE, "abort transaction: {e}");
    }

    // More than the window's bytes, then DeleteRecords into the five-record batch.
    for i in 0..BIG_BATCHES {
        let r = produce_batch(lport, topic, big_batch(&format!("big{i}"), BIG_BATCH_BYTES));
        assert_eq!(r.map(|r| r.0), Some(0), "big batch {i} acknowledged");
    }
    let log_start = first + 2;
    assert_eq!(delete_records(lport, topic, log_start), (0, log_start), "DeleteRecords on the leader");
    produce_to_leader(&brokers, &[leader], topic, "later");
    let truth = read_until(&brokers[leader].addr(), topic, log_start, "read_uncommitted", "later-v0");
    assert_eq!(truth.keys().next(), Some(&log_start));
    assert!(truth.values().filter(|v| v.starts_with("aborted-")).count() == ABORTED);

    // It returns, installs the snapshot, rejoins the ISR and is elected.
    brokers[preferred].start_again();
    let started = Instant::now();
    while partition0(lport, topic).2.len() < 3 {
        assert!(
            started.elapsed() < DEADLINE,
            "broker {preferred} never rejoined the ISR: {:?}\n{}",
            partition0(lport, topic),
            brokers[preferred].log_tail(4096)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("broker {preferred} back in the ISR {:?} after its start", started.elapsed());
    let port = brokers[preferred].port();
    let start = Instant::now();
    while partition0(port, topic).0 != i32::try_from(preferred).expect("fits") {
        let code = elect_preferred(lport, topic);
        assert!(code == 0 || code == 84 || start.elapsed() < DEADLINE, "preferred election refused: {code}");
        assert!(start.elapsed() < DEADLINE, "broker {preferred} does not lead: {:?}", partition0(port, topic));
        std::thread::sleep(Duration::from_millis(300));
    }

    // The producers' state came with the batches.
    let raw = |seq, tag: &str| produce_batch(port, topic, idempotent_batch(pid, epoch, seq, 3, tag)).expect("answered");
    assert_eq!(raw(3, "raw3"), (0, raw3_at), "the last batch sent again is a duplicate at its offset");
    assert_eq!(raw(10, "raw10").0, OUT_OF_ORDER_SEQUENCE_NUMBER, "a gap in the sequence");
    let (code, raw6_at) = raw(6, "raw6");
    assert_eq!(code, 0, "the next sequence");
    let idem_after = send_all(&idem, topic, "idem2", IDEMPOTENT);
    let (l, _, _) = produce_to_leader(&brokers, &[preferred], topic, "end");
    assert_eq!(l, preferred);

    // Every record from the old leader's log start, at its offset.
    let read = read_until(&brokers[preferred].addr(), topic, log_start, "read_uncommitted", "end-v0");
    let differ: Vec<_> = truth.iter().filter(|(o, v)| read.get(o) != Some(v)).map(|(o, _)| *o).take(5).collect();
    assert!(differ.is_empty(), "records missing or different on the new leader (first 5 offsets): {differ:?}");
    for (o, tag) in idem_before.iter().map(|o| (o, "idem")).chain(idem_after.iter().map(|o| (o, "idem2"))) {
        assert!(read.get(o).is_some_and(|v| v.starts_with(tag)), "{tag} record at {o}");
    }
    assert_eq!(read.get(&raw6_at).map(String::as_str), Some("raw6-v0"));
    assert_eq!(read.values().filter(|v| v.starts_with("raw3-")).count(), 3, "the duplicate was not appended");
    // read_committed skips the aborted transaction, and nothing else.
    let committed = read_until(&brokers[preferred].addr(), topic, log_start, "read_committed", "end-v0");
    let want: BTreeMap<i64, String> = read.into_iter().filter(|(_, v)| !v.starts_with("aborted-")).collect();
    assert_eq!(committed, want, "read_committed: everything but the aborted transaction");
    let c = consumer(&brokers[preferred].addr());
    let (earliest, _) = c.fetch_watermarks(topic, 0, Duration::from_secs(10)).expect("watermarks");
    assert!((first..=log_start).contains(&earliest), "the log starts at the batch holding {log_start}: {earliest}");
    for b in &mut brokers {
        b.stop();
    }
}
