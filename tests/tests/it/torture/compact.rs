//! Crash torture, compaction mode: an idempotent `acks=all` producer (librdkafka) writes many
//! versions of few keys (16 per partition, every seventh version a tombstone) to a 2-partition
//! compacted topic (one partition per shard with `--cores 2`) with 16 KiB segments,
//! `min.cleanable.dirty.ratio` 0.01, `min.compaction.lag.ms` 0 and `delete.retention.ms` 200,
//! on a broker whose compactor runs every 50 ms, so segments seal and passes rewrite and swap
//! them all the time; the broker is SIGKILLed after a random delay and restarted on the same
//! data dir and port.
//!
//! After every restart, every partition is read from the start (read_uncommitted) and checked:
//! - offsets increase; every record is intact (its value names its key and version, which a
//!   header carries for tombstones too);
//! - per key, versions increase with offsets (no older version after a newer one: nothing
//!   duplicated or resurrected by a pass or a swap cut short);
//! - per key, the last record is at least the last acknowledged version (no acknowledged
//!   latest value lost), and a key is absent only if a tombstone at or after that version was
//!   written (tombstones go after `delete.retention.ms`);
//! - below the partition's cleaner checkpoint (read before the records) each key appears at
//!   most once;
//! - no start of the broker logged a panic; at the end, compaction has removed records.
//!
//! Environment: SLUICE_COMPACT_TORTURE_ITERATIONS (default 3), SLUICE_TORTURE_SEED (default:
//! clock; always printed). Long run: `SLUICE_COMPACT_TORTURE_ITERATIONS=50 cargo test --release
//! -p sluice-tests --test it torture_compact -- --nocapture`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset};
use sluice_tests::Broker;

use super::{assert_no_panic, create_topic_with, env_u64, xorshift};
use crate::common::*;

const PARTS: i32 = 2;
const KEYS: u64 = 16;
/// Every version `v` with `v % TOMBSTONE_EVERY == TOMBSTONE_EVERY - 1` is a tombstone.
const TOMBSTONE_EVERY: u64 = 7;
const COMPACT_CHECK_MS: u64 = 50;
const DELETE_RETENTION_MS: &str = "200";

fn is_tombstone(version: u64) -> bool {
    version % TOMBSTONE_EVERY == TOMBSTONE_EVERY - 1
}

fn value_of(p: i32, k: u64, version: u64) -> String {
    format!("p{p}:k{k}:v{version}:{}", "x".repeat((version % 40) as usize))
}

/// A write: (partition, key, version).
type Write = (i32, u64, u64);

#[derive(Default)]
struct CompactCtx {
    /// (write, offset) of every acknowledged write; failures are only counted.
    acked: Mutex<Vec<(Write, i64)>>,
    reports: AtomicU64,
}

impl ClientContext for CompactCtx {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}
}

impl ProducerContext for CompactCtx {
    type DeliveryOpaque = Box<Write>;
    fn delivery(&self, r: &DeliveryResult<'_>, w: Box<Write>) {
        if let Ok(m) = r {
            self.acked.lock().unwrap().push((*w, m.offset()));
        }
        self.reports.fetch_add(1, Ordering::Relaxed);
    }
}

fn producer(addr: &str) -> ThreadedProducer<CompactCtx> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "60000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500")
        .create_with_context(CompactCtx::default())
        .expect("create producer")
}

/// What the producer side knows of every key: the last acknowledged write (version, offset)
/// and the highest version sent.
#[derive(Default, Clone, Copy)]
struct KeyState {
    acked: Option<(u64, i64)>,
    sent: Option<u64>,
}

/// Produces round-robin over every (partition, key) from `next` versions on, until stopped;
/// returns how many were sent and the next versions.
fn produce(p: &ThreadedProducer<CompactCtx>, topic: &str, stop: &AtomicBool, next: &mut [u64]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0u64;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let slot = i % next.len();
        let (part, k) = ((slot as u64 / KEYS) as i32, slot as u64 % KEYS);
        let version = next[slot];
        let key = format!("k{k}");
        let value = value_of(part, k, version);
        let v = version.to_string();
        let headers = OwnedHeaders::new().insert(Header { key: "v", value: Some(v.as_bytes()) });
        let rec =
            BaseRecord::with_opaque_to(topic, Box::new((part, k, version))).partition(part).key(&key).headers(headers);
        // A tombstone has no payload (null value).
        let res = if is_tombstone(version) {
            p.send(rec).map_err(|(e, _)| e)
        } else {
            p.send(rec.payload(&value)).map_err(|(e, _)| e)
        };
        match res {
            Ok(()) => {
                next[slot] += 1;
                sent += 1;
                i += 1;
            }
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("send: {e}"),
        }
    }
    sent
}

/// (offset, key, version, tombstone) of every record of partition `p` up to its high watermark.
fn read_partition(addr: &str, topic: &str, p: i32, what: &str) -> Vec<(i64, u64, u64, bool)> {
    let c = consumer_with(addr, &[("enable.partition.eof", "true")]);
    let (_, high) = c.fetch_watermarks(topic, p, OP_TIMEOUT).unwrap_or_else(|e| panic!("{what}: watermarks {p}: {e}"));
    assign(&c, topic, &[(p, Offset::Beginning)]);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = -1;
    while last + 1 < high {
        assert!(Instant::now() < deadline, "{what}: partition {p} not read up to {high} within 60 s (at {last})");
        match c.poll(Duration::from_millis(100)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            // librdkafka reports a lost or replaced connection to the consumer and reconnects
            // by itself (seen once in CI just after a restart, under load): not a failure of
            // the read, which the deadline above still bounds.
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure,
            ))) => {}
            Some(Err(e)) => panic!("{what}: consumer error {e}"),
            Some(Ok(m)) => {
                let o = m.offset();
                assert!(o > last, "{what}: {topic}/{p}: offset {o} after {last}");
                last = o;
                let key = std::str::from_utf8(m.key().expect("a key")).unwrap();
                let k: u64 = key.strip_prefix('k').and_then(|s| s.parse().ok()).expect("key k<n>");
                let h = m.headers().expect("the version header");
                let version: u64 =
                    std::str::from_utf8(h.get(0).value.expect("value")).unwrap().parse().expect("version");
                let tomb = m.payload().is_none();
                assert_eq!(tomb, is_tombstone(version), "{what}: {topic}/{p} offset {o}: tombstone or not");
                if let Some(v) = m.payload() {
                    assert_eq!(v, value_of(p, k, version).as_bytes(), "{what}: {topic}/{p} offset {o} corrupt");
                }
                out.push((o, k, version, tomb));
            }
        }
    }
    out
}

/// Checks one partition's records against what was sent and acknowledged.
fn check_partition(recs: &[(i64, u64, u64, bool)], keys: &HashMap<u64, KeyState>, checkpoint: i64, what: &str) {
    let mut last: BTreeMap<u64, (i64, u64)> = BTreeMap::new();
    let mut below: BTreeMap<u64, i64> = BTreeMap::new();
    for &(o, k, version, _) in recs {
        if let Some((po, pv)) = last.get(&k) {
            assert!(version > *pv, "{what}: key k{k}: version {version} at {o} after version {pv} at {po}");
        }
        last.insert(k, (o, version));
        if o < checkpoint {
            if let Some(prev) = below.insert(k, o) {
                panic!("{what}: key k{k} twice below the cleaner checkpoint {checkpoint}: at {prev} and {o}");
            }
        }
    }
    for (k, st) in keys {
        let Some((acked_version, acked_offset)) = st.acked else { continue };
        let sent = st.sent.expect("an acknowledged write was sent");
        match last.get(k) {
            Some((o, v)) => {
                assert!(
                    *v >= acked_version && *v <= sent,
                    "{what}: key k{k}: last version {v} at {o}; acknowledged {acked_version} at {acked_offset}, \
                     sent up to {sent}"
                );
            }
            None => assert!(
                (acked_version..=sent).any(is_tombstone),
                "{what}: key k{k} absent, but its acknowledged version {acked_version} at {acked_offset} was never \
                 deleted (sent up to {sent})"
            ),
        }
    }
}

fn checkpoint(data_dir: &std::path::Path, topic: &str, p: i32) -> i64 {
    std::fs::read_to_string(data_dir.join(format!("{topic}-{p}")).join("cleaner-offset-checkpoint"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn run_compact_torture(iterations: u64, seed: u64) {
    eprintln!("compaction torture: iterations={iterations} seed={seed}");
    let mut rng = seed | 1;
    let dir = tempfile::Builder::new().prefix("sluice-it-").tempdir().expect("temp dir");
    let config = dir.path().join("torture-compact.toml");
    std::fs::write(&config, format!("log_retention_check_interval_ms = {COMPACT_CHECK_MS}\n")).expect("config");
    let config = config.display().to_string();
    let mut broker = Broker::start_with(dir, 2, &["--config", &config]);
    let port = broker.port();
    let topic = topic_name("torture-compact");
    create_topic_with(
        &broker.addr(),
        &topic,
        PARTS,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "16384"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", DELETE_RETENTION_MS),
        ],
    );
    let slots = (PARTS as u64 * KEYS) as usize;
    let mut next = vec![0u64; slots];
    let mut keys: Vec<HashMap<u64, KeyState>> = vec![HashMap::new(); PARTS as usize];
    let (mut total_acked, mut total_sent) = (0usize, 0u64);
    for it in 0..iterations {
        let what = format!("iteration {it} (seed {seed})");
        let p = Arc::new(producer(&broker.addr()));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (p, stop, topic, mut next) = (p.clone(), stop.clone(), topic.clone(), next.clone());
            thread::spawn(move || {
                let sent = produce(&p, &topic, &stop, &mut next);
                (sent, next)
            })
        };
        let first = sluice_tests::retry_until(Duration::from_secs(20), 4000, Duration::from_millis(5), || {
            (!p.context().acked.lock().unwrap().is_empty()).then_some(())
        });
        assert!(first.is_some(), "{what}: nothing acknowledged within 20 s{}", broker.log_tail(4096));
        thread::sleep(Duration::from_millis(300 + xorshift(&mut rng) % 1700));
        assert!(broker.is_running(), "{what}: broker died on its own{}", broker.log_tail(8192));
        broker.kill();
        let killed_stderr = broker.current_stderr();
        stop.store(true, Ordering::Relaxed);
        let (sent, new_next) = sender.join().expect("sender");
        p.purge(PurgeConfig::default().queue().inflight());
        let reported = sluice_tests::retry_until(Duration::from_secs(30), 3000, Duration::from_millis(10), || {
            (p.context().reports.load(Ordering::Relaxed) >= sent).then_some(())
        });
        assert!(reported.is_some(), "{what}: not every delivery reported within 30 s after purge");
        let acked = std::mem::take(&mut *p.context().acked.lock().unwrap());
        drop(p);
        for (slot, n) in new_next.iter().enumerate() {
            if *n > next[slot] {
                let (part, k) = ((slot as u64 / KEYS) as usize, slot as u64 % KEYS);
                keys[part].entry(k).or_default().sent = Some(n - 1);
            }
        }
        next = new_next;
        for &((part, k, version), offset) in &acked {
            let st = keys[part as usize].entry(k).or_default();
            if st.acked.is_none_or(|(v, _)| version > v) {
                st.acked = Some((version, offset));
            }
        }
        total_acked += acked.len();
        total_sent += sent;

        broker.start_again_same_port_within(Duration::from_secs(300));
        assert_eq!(broker.port(), port, "{what}: restarted on another port");
        assert_no_panic(&killed_stderr, &format!("{what}, killed run"));
        assert_no_panic(&broker.current_stderr(), &format!("{what}, restart"));
        let mut present = 0usize;
        for part in 0..PARTS {
            let cp = checkpoint(&broker.data_dir(), &topic, part);
            let recs = read_partition(&broker.addr(), &topic, part, &what);
            check_partition(&recs, &keys[part as usize], cp, &format!("{what}, partition {part}"));
            present += recs.len();
        }
        eprintln!(
            "{what}: sent {sent}, acknowledged {}, {present} records present, checkpoints {:?}",
            acked.len(),
            (0..PARTS).map(|p| checkpoint(&broker.data_dir(), &topic, p)).collect::<Vec<_>>()
        );
    }
    let cps: Vec<i64> = (0..PARTS).map(|p| checkpoint(&broker.data_dir(), &topic, p)).collect();
    eprintln!("compaction torture done: {total_sent} sent, {total_acked} acknowledged, checkpoints {cps:?}");
    assert!(cps.iter().any(|c| *c > 0), "no compaction pass completed (cleaner checkpoints {cps:?})");
    broker.stop();
}

#[test]
fn torture_compact_sigkill_loses_no_latest_value() {
    let _slot = exclusive_slot();
    let iterations = env_u64("SLUICE_COMPACT_TORTURE_ITERATIONS", 3);
    let seed = env_u64(
        "SLUICE_TORTURE_SEED",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
    );
    run_compact_torture(iterations, seed);
}
