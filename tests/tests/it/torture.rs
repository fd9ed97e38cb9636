//! Crash torture: an idempotent `acks=all` producer writes as fast as it can
//! to a 4-partition topic (two partitions per shard with `--cores 2`) whose
//! segments roll every 64 KiB (`segment.bytes`, so every partition rolls many
//! times under load while acks wait on the shard's sync rounds) and whose
//! retention (`retention.bytes` 1 MiB, checked every 100 ms) deletes old
//! segments while it runs; the broker is SIGKILLed after a random delay and restarted at once
//! on the same data dir and the SAME port (start-up waits for the dead
//! process's sockets), and the log is checked.
//!
//! What retention may take and what must stay: records below the log start
//! offset may be gone (acknowledged or not: retention deletes whole old
//! segments). The log start offset never goes back and never passes the high
//! watermark. Every acknowledged record at or above the log start offset is
//! present exactly once at its acknowledged offset; records are in
//! per-partition sequence order; offsets are contiguous from the log start;
//! every record that is present (acknowledged or not) is intact; the high
//! watermark never goes back; no start of the broker logged a panic. The
//! check waits until retention has settled after the restart (the log start
//! unchanged over several check intervals, nothing being produced), so a
//! deletion during the read is not mistaken for a gap.
//!
//! Replay: every run prints `seed=N`; the seed fixes the kill delays, so
//! `SLUICE_TORTURE_SEED=N` repeats a run's schedule (timing still varies).
//!
//! Environment:
//!   SLUICE_TORTURE_ITERATIONS   kill/restart cycles (default 3)
//!   SLUICE_TORTURE_SEED         RNG seed (default: from the clock; always printed)
//!   SLUICE_TORTURE_FULL_EVERY   re-read every partition from offset 0 every N
//!                               iterations and on the last (default 1: always);
//!                               other iterations read from the previously
//!                               verified end (minus one record, re-checked)
//!   SLUICE_TORTURE_MAX_MSGS     cap on records sent per iteration (default 5000000)
//!
//! Long run: `SLUICE_TORTURE_ITERATIONS=100 SLUICE_TORTURE_FULL_EVERY=10 cargo
//! test --release -p sluice-tests --test it torture -- --nocapture`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset};
use sluice_tests::Broker;

use crate::common::*;

mod compact;
mod txn;

/// (offset, (partition, sequence) parsed from the key, value intact)
type Seen = (i64, Option<(i32, u64)>, bool);

const PARTS: i32 = 4;
const SEQ_BITS: u32 = 48;
/// Topic configs of the torture topic: small segments that roll under load, and retention by
/// size that deletes old ones while the broker is being killed.
const SEGMENT_BYTES: &str = "65536";
const RETENTION_BYTES: &str = "1048576";
/// The broker's `log_retention_check_interval_ms` in the torture run.
const RETENTION_CHECK_MS: u64 = 100;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// Key and value of record `seq` of partition `p`. The value's length and
/// bytes are a function of (p, seq), so any corruption is detected.
pub fn torture_key(p: i32, seq: u64) -> String {
    format!("p{p}:s{seq}")
}

pub fn torture_value(p: i32, seq: u64) -> Vec<u8> {
    let mut v = format!("sluice-torture p={p} seq={seq};").into_bytes();
    let n = (seq.wrapping_mul(2_654_435_761) % 180) as usize;
    v.extend((0..n).map(|j| (p as u64 * 31 + seq * 7 + j as u64) as u8));
    v
}

fn parse_key(k: &[u8]) -> Option<(i32, u64)> {
    let s = std::str::from_utf8(k).ok()?;
    let rest = s.strip_prefix('p')?;
    let (p, seq) = rest.split_once(":s")?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

/// One delivery report.
#[derive(Debug, Clone)]
struct Report {
    partition: i32,
    seq: u64,
    offset: i64,
    error: Option<String>,
}

#[derive(Default)]
struct TortureCtx {
    reports: Mutex<Vec<Report>>,
    client_errors: Mutex<Vec<String>>,
    acked: AtomicU64,
}

impl ClientContext for TortureCtx {
    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _msg: &str) {}
    fn error(&self, error: KafkaError, reason: &str) {
        let mut v = self.client_errors.lock().unwrap();
        if v.len() < 50 {
            v.push(format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for TortureCtx {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, opaque: usize) {
        let partition = (opaque >> SEQ_BITS) as i32;
        let seq = (opaque as u64) & ((1 << SEQ_BITS) - 1);
        let rep = match r {
            Ok(m) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                Report { partition, seq, offset: m.offset(), error: None }
            }
            Err((e, m)) => Report { partition, seq, offset: m.offset(), error: Some(e.to_string()) },
        };
        self.reports.lock().unwrap().push(rep);
    }
}

fn torture_producer(addr: &str) -> ThreadedProducer<TortureCtx> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("client.id", "sluice-torture")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "60000")
        .set("request.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "100000")
        .set("compression.codec", "none")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500");
    c.create_with_context(TortureCtx::default()).expect("create torture producer")
}

/// Verified state of one partition.
#[derive(Default, Clone)]
pub struct PartState {
    /// Next sequence number the producer will use (max sent + 1).
    next_seq: u64,
    /// End offset (high watermark) verified so far.
    verified_end: i64,
    /// Sequence of the record at `verified_end - 1`.
    last_seq: Option<u64>,
    /// Every acknowledged record at or above `log_start`: offset -> seq.
    acked: BTreeMap<i64, u64>,
    /// Log start offset seen at the last check (retention moves it up, never down).
    log_start: i64,
}

pub struct TortureSummary {
    pub iterations: u64,
    pub acked: u64,
    pub sent: u64,
    pub records_checked: u64,
    pub unacked_present: u64,
    pub recovery_cuts: Vec<String>,
    pub max_restart: Duration,
    /// Restarts that found the port still held by the killed broker and waited for it.
    pub port_waits: u64,
    /// Some partition rolled a segment: its log start moved (retention deleted a rolled
    /// segment) or it has more than one segment file at the end.
    pub rolled: bool,
}

/// Segment files (`*.log`) of `topic` under the broker's data dir.
fn segment_files(data_dir: &std::path::Path, topic: &str) -> usize {
    let Ok(dirs) = std::fs::read_dir(data_dir) else { return 0 };
    dirs.filter_map(|d| d.ok())
        .filter(|d| d.file_name().to_string_lossy().starts_with(topic))
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|files| files.filter_map(|f| f.ok()))
        .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
        .count()
}

/// Runs `iterations` kill/restart cycles; panics with a precise message on
/// the first violation.
pub fn run_torture(iterations: u64, seed: u64, full_every: u64, max_msgs: u64) -> TortureSummary {
    eprintln!("torture: iterations={iterations} seed={seed} full_every={full_every} max_msgs={max_msgs}");
    let mut rng = seed | 1;
    let dir = tempfile::Builder::new().prefix("sluice-it-").tempdir().expect("temp dir");
    let config = dir.path().join("torture.toml");
    std::fs::write(&config, format!("log_retention_check_interval_ms = {RETENTION_CHECK_MS}\n")).expect("write config");
    let config = config.display().to_string();
    let mut broker = Broker::start_with(dir, 2, &["--config", &config]);
    let port = broker.port();
    let topic = topic_name("torture");
    create_topic_with(
        &broker.addr(),
        &topic,
        PARTS,
        &[("segment.bytes", SEGMENT_BYTES), ("retention.bytes", RETENTION_BYTES)],
    );
    let mut parts: Vec<PartState> = vec![PartState::default(); PARTS as usize];
    let mut summary = TortureSummary {
        iterations: 0,
        acked: 0,
        sent: 0,
        records_checked: 0,
        unacked_present: 0,
        recovery_cuts: Vec::new(),
        max_restart: Duration::ZERO,
        port_waits: 0,
        rolled: false,
    };
    let started = Instant::now();

    for it in 0..iterations {
        let delay_ms = 50 + xorshift(&mut rng) % 751;
        let (sent, acked_now, killed_stderr) = produce_then(
            &mut broker,
            &topic,
            &mut parts,
            max_msgs,
            delay_ms,
            &format!("iteration {it} (seed {seed})"),
            |b| {
                b.kill();
            },
        );
        summary.acked += acked_now;
        summary.sent += sent;

        let t_restart = Instant::now();
        broker.start_again_same_port_within(Duration::from_secs(300));
        assert_eq!(broker.port(), port, "iteration {it} (seed {seed}): restarted on another port");
        let restart_took = t_restart.elapsed();
        summary.max_restart = summary.max_restart.max(restart_took);
        let restart_stderr = broker.current_stderr();
        assert_no_panic(&killed_stderr, &format!("iteration {it} (seed {seed}), killed run"));
        assert_no_panic(&restart_stderr, &format!("iteration {it} (seed {seed}), restart"));
        summary.port_waits += u64::from(restart_stderr.contains("listen port in use"));
        for l in restart_stderr.lines().filter(|l| l.contains("recovery cut")) {
            summary.recovery_cuts.push(format!("iteration {it}: {l}"));
        }

        let full = (it + 1) % full_every == 0 || it + 1 == iterations;
        wait_retention_settled(&broker.addr(), &topic, it, seed);
        let checked = verify_log(&broker.addr(), &topic, &mut parts, full, it, seed);
        summary.records_checked += checked.0;
        summary.unacked_present += checked.1;
        summary.iterations += 1;
        eprintln!(
            "torture iteration {it}: delay {delay_ms} ms, sent {sent}, acked {acked_now}, restart {restart_took:?}, \
             checked {} records ({}), unacked-but-present {}, log starts {:?}, ends {:?}, elapsed {:.1}s",
            checked.0,
            if full { "full" } else { "incremental" },
            checked.1,
            parts.iter().map(|s| s.log_start).collect::<Vec<_>>(),
            parts.iter().map(|s| s.verified_end).collect::<Vec<_>>(),
            started.elapsed().as_secs_f64()
        );
    }
    let files = segment_files(&broker.data_dir(), &topic);
    summary.rolled = parts.iter().any(|s| s.log_start > 0) || files > PARTS as usize;
    eprintln!(
        "torture: {files} segment files at the end, log starts {:?}",
        parts.iter().map(|s| s.log_start).collect::<Vec<_>>()
    );
    broker.stop();
    summary
}

/// Produces with an idempotent acks=all producer to every partition of
/// `topic`; once the first record is acknowledged, waits `delay_ms`, then
/// runs `action` on the broker (which must leave it stopped), stops sending,
/// purges what was not acknowledged and records every acknowledgement in
/// `parts`. Returns (records sent, acknowledged, stderr of the stopped run).
pub fn produce_then(
    broker: &mut Broker,
    topic: &str,
    parts: &mut [PartState],
    max_msgs: u64,
    delay_ms: u64,
    what: &str,
    action: impl FnOnce(&mut Broker),
) -> (u64, u64, String) {
    let addr = broker.addr();
    let producer = Arc::new(torture_producer(&addr));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let producer = producer.clone();
        let stop = stop.clone();
        let topic = topic.to_string();
        let mut next: Vec<u64> = parts.iter().map(|s| s.next_seq).collect();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut sent = 0u64;
            let mut err = None;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && sent < max_msgs && Instant::now() < deadline {
                let p = (i % PARTS as u64) as i32;
                let seq = next[p as usize];
                let key = torture_key(p, seq);
                let value = torture_value(p, seq);
                let opaque = ((p as usize) << SEQ_BITS) | seq as usize;
                let rec = BaseRecord::with_opaque_to(&topic, opaque).partition(p).key(&key).payload(&value);
                match producer.send(rec) {
                    Ok(()) => {
                        next[p as usize] += 1;
                        sent += 1;
                        i += 1;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        thread::sleep(Duration::from_millis(1))
                    }
                    Err((e, _)) => {
                        err = Some(e.to_string());
                        break;
                    }
                }
            }
            (next, sent, err)
        })
    };

    // Start the clock once the first record is acknowledged.
    let ctx = producer.context();
    let first_ack = sluice_tests::retry_until(Duration::from_secs(20), 4000, Duration::from_millis(5), || {
        (ctx.acked.load(Ordering::Relaxed) > 0).then_some(())
    });
    if first_ack.is_none() {
        stop.store(true, Ordering::Relaxed);
        let _ = sender.join();
        panic!(
            "{what}: no record acknowledged within 20s; client errors {:?}; reports {:?}{}",
            ctx.client_errors.lock().unwrap(),
            ctx.reports.lock().unwrap().iter().take(5).collect::<Vec<_>>(),
            broker.log_tail(4096)
        );
    }
    thread::sleep(Duration::from_millis(delay_ms));
    assert!(broker.is_running(), "{what}: broker died on its own while producing{}", broker.log_tail(8192));
    let acked_at_action = ctx.acked.load(Ordering::Relaxed);
    action(broker);
    let stopped_stderr = broker.current_stderr();
    stop.store(true, Ordering::Relaxed);
    let (next, sent, send_err) = sender.join().expect("sender thread");
    if let Some(e) = &send_err {
        eprintln!("{what}: send stopped with error {e}");
    }
    if sent >= max_msgs && ctx.acked.load(Ordering::Relaxed) >= sent && acked_at_action >= sent {
        eprintln!("{what}: note: all {sent} records were acknowledged before the broker was stopped (cap reached)");
    }
    // Everything not acknowledged by now never will be: purge and collect
    // exactly one report per sent record.
    producer.purge(PurgeConfig::default().queue().inflight());
    let got_all = sluice_tests::retry_until(Duration::from_secs(30), 3000, Duration::from_millis(10), || {
        (ctx.reports.lock().unwrap().len() as u64 >= sent).then_some(())
    });
    let reports = std::mem::take(&mut *ctx.reports.lock().unwrap());
    assert!(got_all.is_some(), "{what}: {} delivery reports for {sent} records within 30s after purge", reports.len());
    assert_eq!(reports.len() as u64, sent, "{what}: more delivery reports than records");
    drop(producer);
    for (p, n) in next.iter().enumerate() {
        parts[p].next_seq = *n;
    }
    let mut acked_now = 0u64;
    for r in &reports {
        if r.error.is_none() {
            assert!(r.offset >= 0, "{what}: acknowledged record {r:?} without an offset");
            let st = &mut parts[r.partition as usize];
            if let Some(prev) = st.acked.insert(r.offset, r.seq) {
                panic!(
                    "{what}: two acknowledged records at {topic}/{} offset {}: seq {prev} and {}",
                    r.partition, r.offset, r.seq
                );
            }
            acked_now += 1;
        }
    }
    (sent, acked_now, stopped_stderr)
}

/// Panics if `text` (broker stderr) mentions a panic.
pub fn assert_no_panic(text: &str, what: &str) {
    let lower = text.to_lowercase();
    assert!(
        !lower.contains("panic") && !lower.contains("assertion failed") && !lower.contains("stack backtrace"),
        "{what}: broker stderr mentions a panic:\n{text}"
    );
}

/// Reads every partition (from 0, or from the previously verified end minus
/// one) up to its high watermark and checks it. Returns (records read,
/// records present that were never acknowledged).
pub fn verify_log(addr: &str, topic: &str, parts: &mut [PartState], full: bool, it: u64, seed: u64) -> (u64, u64) {
    let c = consumer_with(addr, &[("fetch.max.bytes", "8388608"), ("max.partition.fetch.bytes", "4194304")]);
    let mut lows = Vec::new();
    let mut highs = Vec::new();
    for p in 0..PARTS {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, OP_TIMEOUT)
            .unwrap_or_else(|e| panic!("iteration {it}: watermarks of {topic}/{p} after restart: {e}"));
        let st = &mut parts[p as usize];
        assert!(
            lo >= st.log_start && lo <= hi,
            "iteration {it} (seed {seed}): {topic}/{p} log start offset {lo} after restart: it was {} before \
             and must stay at or below the high watermark {hi}",
            st.log_start
        );
        // Retention may have deleted whatever is below the log start, acknowledged or not.
        st.acked = st.acked.split_off(&lo);
        st.log_start = lo;
        let st = &parts[p as usize];
        assert!(
            hi >= st.verified_end,
            "iteration {it} (seed {seed}): {topic}/{p} high watermark went back from {} to {hi} across a crash \
             (records a consumer could read are gone)",
            st.verified_end
        );
        if let Some((&off, &seq)) = st.acked.iter().next_back() {
            assert!(
                off < hi,
                "iteration {it} (seed {seed}): {topic}/{p}: acknowledged record seq {seq} at offset {off} lost: \
                 high watermark after restart is {hi}"
            );
        }
        lows.push(lo);
        highs.push(hi);
    }
    // Incremental passes re-read the last verified record, unless retention deleted it.
    let from: Vec<i64> =
        parts.iter().zip(&lows).map(|(s, &lo)| if full { lo } else { (s.verified_end - 1).max(lo) }).collect();
    assign(&c, topic, &(0..PARTS).map(|p| (p, Offset::Offset(from[p as usize]))).collect::<Vec<_>>());
    let want: i64 = (0..PARTS as usize).map(|p| highs[p] - from[p]).sum();
    let mut got: Vec<Vec<Seen>> = vec![Vec::new(); PARTS as usize];
    let mut total = 0i64;
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120 + want as u64 / 5000);
    let max_polls = want as usize * 2 + 20_000;
    for _ in 0..max_polls {
        if total >= want || Instant::now() >= deadline {
            break;
        }
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let p = m.partition();
                let parsed = m.key().and_then(parse_key);
                let intact = match parsed {
                    Some((kp, seq)) => kp == p && m.payload() == Some(torture_value(kp, seq).as_slice()),
                    None => false,
                };
                got[p as usize].push((m.offset(), parsed, intact));
                total += 1;
            }
            Some(Err(e)) if errors.len() < 20 => errors.push(e.to_string()),
            Some(Err(_)) => {}
        }
    }
    assert_eq!(
        total, want,
        "iteration {it} (seed {seed}): read {total} of {want} records up to the high watermarks {highs:?} \
         (from {from:?}, log starts {lows:?}); consumer errors {errors:?}"
    );
    let mut unacked_present = 0u64;
    for p in 0..PARTS as usize {
        let st = &mut parts[p];
        let recs = &got[p];
        let mut prev_seq: Option<u64> = if full { None } else { st.last_seq };
        for (j, (off, parsed, intact)) in recs.iter().enumerate() {
            let expect_off = from[p] + j as i64;
            assert_eq!(
                *off, expect_off,
                "iteration {it} (seed {seed}): {topic}/{p}: offsets not contiguous: record #{j} has offset {off}"
            );
            let Some((_, seq)) = parsed else {
                panic!("iteration {it} (seed {seed}): {topic}/{p} offset {off}: unparseable key (corrupt record)");
            };
            assert!(
                *intact,
                "iteration {it} (seed {seed}): {topic}/{p} offset {off}: record seq {seq} is corrupt (wrong partition or value)"
            );
            if !full && j == 0 && st.verified_end > 0 && from[p] == st.verified_end - 1 {
                assert_eq!(
                    Some(*seq),
                    st.last_seq,
                    "iteration {it} (seed {seed}): {topic}/{p} offset {off}: the last verified record changed across a crash"
                );
                continue;
            }
            if let Some(ps) = prev_seq {
                assert!(
                    *seq > ps,
                    "iteration {it} (seed {seed}): {topic}/{p} offset {off}: seq {seq} after seq {ps} \
                     (duplicate or reordered record)"
                );
            }
            prev_seq = Some(*seq);
            match st.acked.get(off) {
                Some(a) => assert_eq!(
                    a, seq,
                    "iteration {it} (seed {seed}): {topic}/{p} offset {off}: holds seq {seq} but seq {a} was acknowledged at that offset"
                ),
                None => unacked_present += 1,
            }
        }
        // Every acknowledged record in the range read was seen (the offsets
        // are contiguous, so checking the range bound suffices, plus the
        // per-offset match above).
        if let Some((&off, _)) = st.acked.range(from[p]..).next_back() {
            assert!(off < highs[p], "acknowledged offset {off} beyond high watermark");
        }
        st.verified_end = highs[p];
        if let Some(last) = recs.last() {
            st.last_seq = last.1.map(|x| x.1);
        }
    }
    // Records after the previous verified end that exist were not acked;
    // the unacked count of an incremental pass covers only the new range.
    drop(c);
    (total as u64, unacked_present)
}

/// Creates `topic` with topic configs.
fn create_topic_with(addr: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let admin = admin(addr);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(20)));
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let res = block_on(admin.create_topics([&new], &opts), OP_TIMEOUT)
        .unwrap_or_else(|| panic!("CreateTopics({topic}) did not complete within {OP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("CreateTopics({topic}) failed: {e}"));
    if let Some(Err((t, e))) = res.first() {
        panic!("CreateTopics({t}) returned error {e:?}");
    }
    wait_for_partitions(addr, topic, partitions as usize);
}

/// Waits until no partition's log start offset moved over several retention check intervals
/// (nothing is produced now, so once retention caught up with the restarted log it stays).
fn wait_retention_settled(addr: &str, topic: &str, it: u64, seed: u64) {
    let c = consumer(addr);
    let lows = || -> Vec<i64> {
        (0..PARTS)
            .map(|p| {
                c.fetch_watermarks(topic, p, OP_TIMEOUT)
                    .unwrap_or_else(|e| panic!("iteration {it} (seed {seed}): watermarks of {topic}/{p}: {e}"))
                    .0
            })
            .collect()
    };
    let mut last = lows();
    let settled = sluice_tests::retry_until(Duration::from_secs(30), 100, Duration::ZERO, || {
        thread::sleep(Duration::from_millis(RETENTION_CHECK_MS * 4));
        let now = lows();
        let same = now == last;
        last = now;
        same.then_some(())
    });
    assert!(settled.is_some(), "iteration {it} (seed {seed}): log start offsets still moving after 30 s: {last:?}");
}

#[test]
fn crash_torture_sigkill_keeps_acknowledged_records() {
    let _slot = exclusive_slot();
    let iterations = env_u64("SLUICE_TORTURE_ITERATIONS", 3);
    let seed = env_u64(
        "SLUICE_TORTURE_SEED",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
    );
    let full_every = env_u64("SLUICE_TORTURE_FULL_EVERY", 1).max(1);
    let max_msgs = env_u64("SLUICE_TORTURE_MAX_MSGS", 5_000_000);
    let t0 = Instant::now();
    let s = run_torture(iterations, seed, full_every, max_msgs);
    eprintln!(
        "torture done: seed {seed}, {} iterations passed, {} records sent, {} acknowledged, {} records checked, \
         {} unacknowledged-but-present, {} recovery cuts logged, slowest restart {:?}, {} restarts waited for \
         the port, {:.1}s",
        s.iterations,
        s.sent,
        s.acked,
        s.records_checked,
        s.unacked_present,
        s.recovery_cuts.len(),
        s.max_restart,
        s.port_waits,
        t0.elapsed().as_secs_f64()
    );
    for l in s.recovery_cuts.iter().take(20) {
        eprintln!("  {l}");
    }
    assert_eq!(s.iterations, iterations);
    assert!(s.acked > 0, "nothing was acknowledged in {iterations} iterations");
    assert!(s.rolled, "no partition rolled a segment under load (log start still 0 and one segment each)");
}
