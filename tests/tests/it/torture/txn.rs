//! Crash torture, transactional mode: several transactional producers (librdkafka) run
//! transactions of 1–60 records spread over a 4-partition topic (two partitions per shard with
//! `--cores 2`), committing most and aborting every fifth, while the broker is SIGKILLed after a
//! random delay and restarted on the same data dir and port. Half the producers keep their
//! transactional id across kills (the restarted coordinator fences and aborts their open
//! transaction on InitProducerId), the other half take a new id every iteration (their open
//! transaction is only ended by the coordinator's timeout).
//!
//! After every restart, before anything else is produced:
//! - every open transaction is aborted within a bound: the last stable offset of every
//!   partition (ListOffsets read_committed) reaches its high watermark;
//! - a read_committed consumer reading every partition from the start sees no partial
//!   transaction (each record names its transaction and the transaction's record count, and
//!   every transaction it sees is complete, each record once), every transaction whose commit
//!   was acknowledged, and no record of a transaction the producer aborted;
//! - no start of the broker logged a panic.
//!
//! Every record's key is `<transactional id>/<transaction number>/<index>/<count>`.
//!
//! Environment: SLUICE_TXN_TORTURE_ITERATIONS (default 2), SLUICE_TORTURE_SEED (default: clock;
//! always printed). Long run: `SLUICE_TXN_TORTURE_ITERATIONS=30 cargo test --release -p
//! sluice-tests --test it torture_txn -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset};
use sluice_tests::Broker;

use super::{assert_no_panic, create_topic_with, env_u64, xorshift};
use crate::common::*;

const PARTS: i32 = 4;
const PRODUCERS: usize = 4;
/// The producers' transaction.timeout.ms: how long an open transaction of a dead broker's
/// client lasts after the restart before the coordinator aborts it.
const TXN_TIMEOUT_MS: u64 = 4000;
/// Bound on the wait for every open transaction to be ended after a restart.
const SETTLE: Duration = Duration::from_secs(60);

/// A transaction: (transactional id, its number within that producer's run).
type TxnKey = (String, u64);

#[derive(Default)]
struct Outcomes {
    /// Transactions whose commit_transaction returned Ok, with their record count.
    committed: BTreeMap<TxnKey, u64>,
    /// Transactions the producer aborted (abort_transaction returned Ok).
    aborted: BTreeSet<TxnKey>,
}

/// With `SLUICE_IT_DEBUG` set, prints librdkafka's log lines (and its eos/protocol/broker debug).
struct TxnCtx(String);

impl ClientContext for TxnCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if std::env::var_os("SLUICE_IT_DEBUG").is_some() {
            eprintln!("[{} {level:?} {fac}] {msg}", self.0);
        }
    }
}

impl ProducerContext for TxnCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

fn txn_producer(addr: &str, txid: &str) -> ThreadedProducer<TxnCtx> {
    let mut c = ClientConfig::new();
    if std::env::var_os("SLUICE_IT_DEBUG").is_some() {
        c.set("debug", "eos,protocol,broker").set_log_level(RDKafkaLogLevel::Debug);
    }
    c.set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("transactional.id", txid)
        .set("transaction.timeout.ms", TXN_TIMEOUT_MS.to_string())
        .set("linger.ms", "2")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500");
    c.create_with_context(TxnCtx(txid.to_string())).expect("create transactional producer")
}

fn record_key(txid: &str, n: u64, i: u64, count: u64) -> String {
    format!("{txid}/{n}/{i}/{count}")
}

fn parse_record_key(k: &[u8]) -> Option<(TxnKey, u64, u64)> {
    let s = std::str::from_utf8(k).ok()?;
    let mut it = s.rsplitn(4, '/');
    let count = it.next()?.parse().ok()?;
    let i = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    Some(((it.next()?.to_string(), n), i, count))
}

/// One producer's loop: transactions until `stop` (or a fatal error, as when the broker dies).
/// Returns the number of transactions begun.
fn run_producer(w: Worker, stop: Arc<AtomicBool>, out: Arc<Mutex<Outcomes>>) -> u64 {
    let Worker { addr, topic, txid, seed, first_txn } = w;
    let mut begun = 0u64;
    let p = txn_producer(&addr, &txid);
    if let Err(e) = p.init_transactions(Duration::from_secs(30)) {
        panic!("{txid}: init_transactions: {e}");
    }
    let mut rng = seed | 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = first_txn;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if p.begin_transaction().is_err() {
            break;
        }
        let count = 1 + xorshift(&mut rng) % 60;
        let abort = (n - first_txn) % 5 == 4;
        let mut failed = false;
        for i in 0..count {
            let key = record_key(&txid, n, i, count);
            let part = (xorshift(&mut rng) % PARTS as u64) as i32;
            let value = format!("payload of {key}").into_bytes();
            loop {
                match p.send(BaseRecord::<String, Vec<u8>>::to(&topic).partition(part).key(&key).payload(&value)) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        if stop.load(Ordering::Relaxed) {
                            failed = true;
                            break;
                        }
                        thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
        }
        let key = (txid.clone(), n);
        n += 1;
        begun += 1;
        if failed {
            break;
        }
        if abort {
            match p.abort_transaction(Duration::from_secs(5)) {
                Ok(()) => {
                    out.lock().unwrap().aborted.insert(key);
                }
                Err(_) => break,
            }
        } else {
            match p.commit_transaction(Duration::from_secs(5)) {
                Ok(()) => {
                    out.lock().unwrap().committed.insert(key, count);
                }
                Err(_) => break,
            }
        }
    }
    begun
}

/// What one producer thread runs against.
struct Worker {
    addr: String,
    topic: String,
    txid: String,
    seed: u64,
    /// Number of the producer's first transaction (unique across iterations: ids are reused).
    first_txn: u64,
}

/// Waits until every partition's last stable offset equals its high watermark (no transaction
/// open); returns the high watermarks.
fn wait_no_open_transaction(addr: &str, topic: &str, what: &str) -> Vec<i64> {
    let committed = consumer_with(addr, &[("isolation.level", "read_committed")]);
    let uncommitted = consumer_with(addr, &[("isolation.level", "read_uncommitted")]);
    let marks = |c: &TestConsumer| -> Vec<i64> {
        (0..PARTS)
            .map(|p| {
                c.fetch_watermarks(topic, p, OP_TIMEOUT).unwrap_or_else(|e| panic!("{what}: watermarks {p}: {e}")).1
            })
            .collect()
    };
    let started = Instant::now();
    let mut last = (Vec::new(), Vec::new());
    let done = sluice_tests::retry_until(SETTLE, 600, Duration::from_millis(100), || {
        let (lso, hw) = (marks(&committed), marks(&uncommitted));
        let settled = lso == hw;
        last = (lso, hw.clone());
        settled.then_some(hw)
    });
    let Some(hw) = done else {
        panic!(
            "{what}: a transaction still open {SETTLE:?} after the restart (timeout {TXN_TIMEOUT_MS} ms): \
             last stable offsets {:?}, high watermarks {:?}",
            last.0, last.1
        );
    };
    eprintln!("{what}: no open transaction {:.1}s after the restart", started.elapsed().as_secs_f64());
    hw
}

/// Reads every partition read_committed from 0 up to `ends` and checks the transactions seen.
/// Returns (records read, transactions seen).
fn verify_committed(addr: &str, topic: &str, ends: &[i64], out: &Outcomes, what: &str) -> (u64, usize) {
    let c = consumer_with(
        addr,
        &[("isolation.level", "read_committed"), ("enable.partition.eof", "true"), ("fetch.max.bytes", "8388608")],
    );
    assign(&c, topic, &(0..PARTS).map(|p| (p, Offset::Beginning)).collect::<Vec<_>>());
    let mut eof: BTreeSet<i32> = (0..PARTS).filter(|p| ends[*p as usize] == 0).collect();
    let mut seen: BTreeMap<TxnKey, (u64, BTreeSet<u64>)> = BTreeMap::new();
    let mut records = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while eof.len() < PARTS as usize && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                let pos = c.position().ok().and_then(|l| l.find_partition(topic, p).map(|e| e.offset()));
                if matches!(pos, Some(Offset::Offset(o)) if o >= ends[p as usize]) {
                    eof.insert(p);
                }
            }
            Some(Err(e)) => panic!("{what}: read_committed consumer error {e}"),
            Some(Ok(m)) => {
                records += 1;
                let Some((key, i, count)) = m.key().and_then(parse_record_key) else {
                    panic!("{what}: {topic}/{} offset {}: unparseable key", m.partition(), m.offset());
                };
                let expect_value = format!("payload of {}", record_key(&key.0, key.1, i, count));
                assert_eq!(m.payload(), Some(expect_value.as_bytes()), "{what}: corrupt record {key:?}/{i}");
                assert!(
                    !out.aborted.contains(&key),
                    "{what}: record {i} of aborted transaction {key:?} visible to read_committed at {topic}/{} offset {}",
                    m.partition(),
                    m.offset()
                );
                let entry = seen.entry(key.clone()).or_insert((count, BTreeSet::new()));
                assert!(entry.1.insert(i), "{what}: record {i} of transaction {key:?} read twice");
            }
        }
    }
    assert_eq!(eof.len(), PARTS as usize, "{what}: read_committed did not reach the ends {ends:?} within 120 s");
    for (key, (count, got)) in &seen {
        assert_eq!(
            got.len() as u64,
            *count,
            "{what}: partial transaction {key:?} visible to read_committed: {} of its {count} records",
            got.len()
        );
    }
    for (key, count) in &out.committed {
        let got = seen.get(key).map(|(_, s)| s.len() as u64);
        assert_eq!(got, Some(*count), "{what}: committed transaction {key:?} ({count} records) not complete");
    }
    (records, seen.len())
}

/// Runs `iterations` produce/kill/restart/verify cycles.
fn run_txn_torture(iterations: u64, seed: u64) {
    eprintln!("txn torture: iterations={iterations} seed={seed}");
    let mut rng = seed | 1;
    let dir = tempfile::Builder::new().prefix("sluice-it-").tempdir().expect("temp dir");
    let mut broker = Broker::start_with(dir, 2, &[]);
    let port = broker.port();
    let topic = topic_name("torture-txn");
    create_topic_with(&broker.addr(), &topic, PARTS, &[("segment.bytes", "262144")]);
    let out = Arc::new(Mutex::new(Outcomes::default()));
    for it in 0..iterations {
        let what = format!("iteration {it} (seed {seed})");
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..PRODUCERS)
            .map(|k| {
                let txid = if k % 2 == 0 { format!("keep-{k}") } else { format!("it{it}-{k}") };
                let w = Worker {
                    addr: broker.addr(),
                    topic: topic.clone(),
                    txid,
                    seed: xorshift(&mut rng),
                    first_txn: it * 1_000_000,
                };
                let (stop, out) = (stop.clone(), out.clone());
                thread::spawn(move || run_producer(w, stop, out))
            })
            .collect();
        // Kill once every producer has committed a transaction, after a random delay.
        let first = it * 1_000_000;
        let started = sluice_tests::retry_until(Duration::from_secs(30), 3000, Duration::from_millis(10), || {
            let o = out.lock().unwrap();
            let ids: BTreeSet<&String> = o.committed.keys().filter(|(_, n)| *n >= first).map(|(id, _)| id).collect();
            (ids.len() == PRODUCERS).then_some(())
        });
        assert!(started.is_some(), "{what}: no transactions committed within 30 s{}", broker.log_tail(4096));
        thread::sleep(Duration::from_millis(100 + xorshift(&mut rng) % 900));
        assert!(broker.is_running(), "{what}: broker died on its own{}", broker.log_tail(8192));
        broker.kill();
        let killed_stderr = broker.current_stderr();
        stop.store(true, Ordering::Relaxed);
        let begun: u64 = workers.into_iter().map(|w| w.join().expect("producer thread")).sum();

        broker.start_again_same_port_within(Duration::from_secs(300));
        assert_eq!(broker.port(), port, "{what}: restarted on another port");
        assert_no_panic(&killed_stderr, &format!("{what}, killed run"));
        assert_no_panic(&broker.current_stderr(), &format!("{what}, restart"));
        let ends = wait_no_open_transaction(&broker.addr(), &topic, &what);
        let o = out.lock().unwrap();
        let (records, txns) = verify_committed(&broker.addr(), &topic, &ends, &o, &what);
        eprintln!(
            "{what}: {begun} transactions begun, {} committed and {} aborted so far; read_committed read {records} \
             records of {txns} complete transactions up to {ends:?}",
            o.committed.len(),
            o.aborted.len()
        );
    }
    broker.stop();
}

#[test]
fn torture_txn_sigkill_leaves_no_partial_transaction() {
    let _slot = exclusive_slot();
    let iterations = env_u64("SLUICE_TXN_TORTURE_ITERATIONS", 2);
    let seed = env_u64(
        "SLUICE_TORTURE_SEED",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
    );
    run_txn_torture(iterations, seed);
}
