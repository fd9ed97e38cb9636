//! This shard's metrics: requests per API with latency, per-stage latencies, bytes per topic,
//! connections and queue depths, response bytes held for clients, the recent append rate; and
//! gathering every shard's copy for the metrics endpoint and for placement.
//!
//! Contract: the registry is thread-local (one shard per thread), updated only by its shard;
//! per-topic series live only while the shard's metadata has the topic (a deleted topic's are
//! dropped on every shard before each snapshot and on the retention timer);
//! [`gather`] asks every shard for a snapshot (one message each) and never shares state. Two
//! values here also steer the broker: [`response_bytes_held`] bounds Fetch answers
//! (`max_response_bytes_per_shard`) and [`append_bytes_per_sec`] weighs placement.

use crate::msg::ShardMsg;
use crate::shard::Shard;
use hdrhistogram::Histogram;
use sluice_core::limits::PLACEMENT_LOAD_WINDOW_SECS;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The stages a request can spend time in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Request header and body decoding.
    Decode,
    /// A message waiting in a cross-core channel (send → the owner starts on it).
    CrossCoreHop,
    /// Appending batches to partition logs (synchronous part).
    Append,
    /// Encoding and writing a response to the socket.
    Response,
    /// From an append to the ack level it asked for (written for acks=1, durable for all).
    AckWait,
}

impl Stage {
    pub const ALL: [Stage; 5] = [Stage::Decode, Stage::CrossCoreHop, Stage::Append, Stage::Response, Stage::AckWait];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::CrossCoreHop => "cross_core_hop",
            Stage::Append => "append",
            Stage::Response => "response",
            Stage::AckWait => "ack_wait",
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, sluice_core::limits::STAGE_HISTOGRAM_MAX_US, 3).expect("valid bounds")
}

/// Per-API request statistics (latency in µs).
#[derive(Debug, Clone)]
pub struct ApiStats {
    pub count: u64,
    pub errors: u64,
    pub latency_us: Histogram<u64>,
}

#[derive(Debug, Default)]
struct Registry {
    apis: BTreeMap<&'static str, ApiStats>,
    stages: BTreeMap<Stage, Histogram<u64>>,
    /// topic → (bytes in, bytes out)
    topics: BTreeMap<String, (u64, u64)>,
    connections: i64,
    connections_total: u64,
    inflight_requests: i64,
    appended: AppendRate,
    fetch_shrunk: u64,
    connections_refused: u64,
    /// Bytes partition reads returned to fetches (before the response was cut to max_bytes).
    partition_read_bytes: u64,
    /// Request bytes reserved from the shard's in-flight budget (frames being read or answered).
    request_bytes_reserved: i64,
    /// Long-poll waits (WaitForData) this shard runs for fetches of other shards.
    fetch_waiters: i64,
    /// Tasks this shard runs for mesh messages, now and at most so far.
    mesh_tasks: i64,
    mesh_tasks_peak: i64,
}

/// The window's length in one-second buckets.
#[allow(clippy::cast_possible_truncation)] // a compile-time constant of a few seconds
const WINDOW_BUCKETS: usize = PLACEMENT_LOAD_WINDOW_SECS as usize;

/// Bytes appended per whole second (since the shard's first append), for the last
/// `PLACEMENT_LOAD_WINDOW_SECS` seconds: a ring of per-second counts.
#[derive(Debug, Default)]
struct AppendRate {
    origin: Option<Instant>,
    /// The second the newest bucket counts.
    second: u64,
    buckets: [u64; WINDOW_BUCKETS],
}

impl AppendRate {
    const W: u64 = PLACEMENT_LOAD_WINDOW_SECS;

    /// The bucket of second `s`.
    fn slot(s: u64) -> usize {
        usize::try_from(s % Self::W).expect("below the window length")
    }

    fn now(&mut self, at: Instant) -> u64 {
        at.saturating_duration_since(*self.origin.get_or_insert(at)).as_secs()
    }

    fn add(&mut self, bytes: u64, at: Instant) {
        let sec = self.now(at);
        if sec > self.second {
            // Clear the buckets of the seconds that passed without appends.
            for s in (self.second + 1)..=sec.min(self.second + Self::W) {
                self.buckets[Self::slot(s)] = 0;
            }
            self.second = sec;
        }
        self.buckets[Self::slot(self.second)] += bytes;
    }

    /// Bytes appended during the window ending now, divided by its length.
    fn per_sec(&mut self, at: Instant) -> u64 {
        if self.origin.is_none() {
            return 0;
        }
        let sec = self.now(at);
        let sum: u64 = (sec.saturating_sub(Self::W - 1)..=sec)
            .filter(|s| *s <= self.second && self.second - *s < Self::W)
            .map(|s| self.buckets[Self::slot(s)])
            .sum();
        sum / Self::W
    }
}

thread_local!(static REG: RefCell<Registry> = RefCell::new(Registry::default()));
thread_local!(static RESPONSE_BYTES_HELD: Cell<u64> = const { Cell::new(0) });

/// Response bytes this shard holds built but not yet written to their sockets.
pub fn response_bytes_held() -> u64 {
    RESPONSE_BYTES_HELD.with(Cell::get)
}

/// Counts `bytes` of a response as held on this shard until it is dropped (or resized).
/// Create and drop it on the shard's own thread.
#[derive(Debug)]
pub struct HeldResponse(u64);

impl HeldResponse {
    pub fn new(bytes: u64) -> HeldResponse {
        RESPONSE_BYTES_HELD.with(|h| h.set(h.get() + bytes));
        HeldResponse(bytes)
    }

    /// Changes the count to `bytes` (the response turned out larger or smaller).
    pub fn resize(&mut self, bytes: u64) {
        RESPONSE_BYTES_HELD.with(|h| h.set(h.get() - self.0 + bytes));
        self.0 = bytes;
    }
}

impl Drop for HeldResponse {
    fn drop(&mut self) {
        RESPONSE_BYTES_HELD.with(|h| h.set(h.get() - self.0));
    }
}

/// Bytes appended on this shard per second, averaged over the last
/// `PLACEMENT_LOAD_WINDOW_SECS` seconds.
pub fn append_bytes_per_sec() -> u64 {
    REG.with(|r| r.borrow_mut().appended.per_sec(Instant::now()))
}

/// Records one answered request.
pub fn record_request(api: &'static str, latency: Duration, failed: bool) {
    REG.with(|r| {
        let mut r = r.borrow_mut();
        let s = r.apis.entry(api).or_insert_with(|| ApiStats { count: 0, errors: 0, latency_us: histogram() });
        s.count += 1;
        s.errors += u64::from(failed);
        s.latency_us.saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    });
}

/// Records time spent in a stage.
pub fn record_stage(stage: Stage, took: Duration) {
    REG.with(|r| {
        r.borrow_mut()
            .stages
            .entry(stage)
            .or_insert_with(histogram)
            .saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    });
}

/// Counts bytes produced to (`inbound`) or fetched from a topic.
pub fn add_topic_bytes(topic: &str, bytes: u64, inbound: bool) {
    if inbound {
        fault::produce_append();
    }
    REG.with(|r| {
        let mut r = r.borrow_mut();
        let e = match r.topics.get_mut(topic) {
            Some(e) => e,
            None => r.topics.entry(topic.to_string()).or_default(),
        };
        if inbound {
            e.0 += bytes;
        } else {
            e.1 += bytes;
        }
        if inbound {
            r.appended.add(bytes, Instant::now());
        }
    });
}

/// Drops the per-topic series of every topic `keep` refuses (topics deleted since they were
/// counted), so deleted topics leave the endpoint and the registry stays bounded.
pub fn retain_topics(keep: impl Fn(&str) -> bool) {
    REG.with(|r| r.borrow_mut().topics.retain(|t, _| keep(t)));
}

/// Drops the series of topics this shard's metadata no longer has.
pub fn drop_deleted_topics(shard: &Shard) {
    let metadata = shard.metadata();
    retain_topics(|t| metadata.topics.contains_key(t));
}

/// A connection opened (+1) or closed (-1).
pub fn connection(delta: i64) {
    REG.with(|r| {
        let mut r = r.borrow_mut();
        r.connections += delta;
        if delta > 0 {
            r.connections_total += delta.unsigned_abs();
        }
    });
}

/// A request was queued (+1) or answered (-1) on a connection.
pub fn inflight(delta: i64) {
    REG.with(|r| r.borrow_mut().inflight_requests += delta);
}

/// Bytes a fetch's partition read returned on this (owner) shard.
pub fn partition_read(bytes: u64) {
    REG.with(|r| r.borrow_mut().partition_read_bytes += bytes);
}

/// Request bytes reserved from (+) or returned to (-) the shard's in-flight budget.
pub fn request_bytes_reserved(delta: i64) {
    REG.with(|r| r.borrow_mut().request_bytes_reserved += delta);
}

/// A long-poll wait for another shard's fetch started (+1) or ended (-1).
pub fn fetch_waiter(delta: i64) {
    REG.with(|r| r.borrow_mut().fetch_waiters += delta);
}

/// A task for a mesh message started (+1) or ended (-1).
pub fn mesh_task(delta: i64) {
    REG.with(|r| {
        let mut r = r.borrow_mut();
        r.mesh_tasks += delta;
        r.mesh_tasks_peak = r.mesh_tasks_peak.max(r.mesh_tasks);
    });
}

/// A connection was closed at accept (`max_connections`, `max_connections_per_ip`).
pub fn connection_refused() {
    REG.with(|r| r.borrow_mut().connections_refused += 1);
}

/// A Fetch had its `max_bytes` lowered by the shard's response budget.
pub fn fetch_shrunk() {
    REG.with(|r| r.borrow_mut().fetch_shrunk += 1);
}

/// One shard's metrics at a point in time.
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    pub shard: u16,
    pub apis: Vec<(String, ApiStats)>,
    pub stages: Vec<(&'static str, Histogram<u64>)>,
    pub fsync_us: Histogram<u64>,
    pub topics: Vec<(String, u64, u64)>,
    pub partitions: u64,
    pub connections: i64,
    pub connections_total: u64,
    pub connections_refused: u64,
    pub partition_read_bytes: u64,
    pub read_cache_bytes: u64,
    pub inflight_requests: i64,
    pub memory_reads: u64,
    pub disk_reads: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub groups: u64,
    pub members: u64,
    /// Response bytes built but not yet written to sockets.
    pub response_bytes_held: u64,
    /// Fetches whose `max_bytes` the response budget lowered.
    pub fetch_shrunk: u64,
    /// Bytes appended per second over the last `PLACEMENT_LOAD_WINDOW_SECS` seconds.
    pub append_bytes_per_sec: u64,
    /// Request bytes reserved from the shard's in-flight budget.
    pub request_bytes_reserved: i64,
    /// Long-poll waits running for other shards' fetches.
    pub fetch_waiters: i64,
    /// Tasks running for mesh messages, and the most at once since start.
    pub mesh_tasks: i64,
    pub mesh_tasks_peak: i64,
    /// What compaction did on this shard (storage counters).
    pub compaction: Compaction,
}

/// Compaction counters of a shard (see `sluice_storage::stats::StorageStats`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Compaction {
    pub passes: u64,
    pub failures: u64,
    pub segments_rewritten: u64,
    pub bytes_removed: u64,
    pub records_removed: u64,
    pub max_pass_us: u64,
    pub last_dirty_ratio: f64,
}

impl Compaction {
    fn of(s: &sluice_storage::stats::StorageStats) -> Compaction {
        Compaction {
            passes: s.compaction_passes,
            failures: s.compaction_failures,
            segments_rewritten: s.compaction_segments_rewritten,
            bytes_removed: s.compaction_bytes_before.saturating_sub(s.compaction_bytes_after),
            records_removed: s.compaction_records_removed,
            max_pass_us: s.compaction_max_pass_us,
            last_dirty_ratio: s.compaction_last_dirty_ratio,
        }
    }
}

/// This shard's snapshot.
pub fn local(shard: &Shard) -> ShardMetrics {
    drop_deleted_topics(shard);
    let storage = sluice_storage::stats::snapshot();
    let compaction = Compaction::of(&storage);
    let (groups, members) = shard.groups.counts();
    let append_bytes_per_sec = append_bytes_per_sec();
    REG.with(|r| {
        let r = r.borrow();
        ShardMetrics {
            shard: shard.id.0,
            apis: r.apis.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            stages: r
                .stages
                .iter()
                .map(|(k, v)| (k.name(), v.clone()))
                .chain([("write", storage.write_us.clone()), ("sync_queue", storage.sync_queue_us.clone())])
                .collect(),
            fsync_us: storage.fsync_us,
            topics: r.topics.iter().map(|(t, (i, o))| (t.clone(), *i, *o)).collect(),
            partitions: shard.owned_partitions() as u64,
            connections: r.connections,
            connections_total: r.connections_total,
            connections_refused: r.connections_refused,
            partition_read_bytes: r.partition_read_bytes,
            read_cache_bytes: sluice_storage::cache::held_bytes() as u64,
            inflight_requests: r.inflight_requests,
            memory_reads: storage.memory_reads,
            disk_reads: storage.disk_reads,
            bytes_written: storage.bytes_written,
            bytes_read: storage.bytes_read,
            messages_sent: shard.stats.messages_sent.get(),
            messages_received: shard.stats.messages_received.get(),
            groups,
            members,
            response_bytes_held: response_bytes_held(),
            fetch_shrunk: r.fetch_shrunk,
            append_bytes_per_sec,
            request_bytes_reserved: r.request_bytes_reserved,
            fetch_waiters: r.fetch_waiters,
            mesh_tasks: r.mesh_tasks,
            mesh_tasks_peak: r.mesh_tasks_peak,
            compaction,
        }
    })
}

/// Every shard's snapshot, in shard order.
pub async fn gather(shard: &Rc<Shard>) -> Vec<ShardMetrics> {
    let mut all = Vec::with_capacity(shard.n_shards);
    for s in 0..shard.n_shards {
        if s == shard.id.index() {
            all.push(local(shard));
            continue;
        }
        let (reply, rx) = futures::channel::oneshot::channel();
        if shard.send(crate::shard::shard_id(s), ShardMsg::Metrics { reply }).await.is_ok() {
            if let Ok(m) = rx.await {
                all.push(m);
            }
        }
    }
    all
}

/// A one-line summary of this shard's stage latencies (logged at shutdown, debug level).
pub fn stage_summary() -> String {
    REG.with(|r| {
        let r = r.borrow();
        let mut out = String::new();
        for (stage, h) in &r.stages {
            out.push_str(&format!(
                "{}: n={} p50={}us p99={}us max={}us; ",
                stage.name(),
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max()
            ));
        }
        out
    })
}

/// Test-only fault injection (cargo feature `fault-injection` of sluice-shard, enabled through
/// sluice-net's feature of the same name by the tests crate; absent from `cargo build -p
/// sluice-net`). `SLUICE_FAULT_PANIC_SHARD=<n>:<after>`, read when each shard starts, makes
/// shard `n` panic in its produce path (a partition append, before the ack) once it has
/// appended `after` produce items, to prove the failure policy: the whole process aborts.
pub mod fault {
    #[cfg(feature = "fault-injection")]
    thread_local!(static LEFT: std::cell::Cell<Option<(u16, u64)>> = const { std::cell::Cell::new(None) });

    /// Arms the fault on this shard's thread when the variable names it.
    pub fn arm(shard: sluice_core::ShardId) {
        #[cfg(feature = "fault-injection")]
        {
            let Ok(spec) = std::env::var("SLUICE_FAULT_PANIC_SHARD") else { return };
            let parsed = spec.split_once(':').and_then(|(n, a)| Some((n.parse::<u16>().ok()?, a.parse::<u64>().ok()?)));
            match parsed {
                Some((n, after)) if n == shard.0 => {
                    tracing::warn!(shard = %shard, after, "fault injection armed: this shard will panic");
                    LEFT.with(|l| l.set(Some((n, after))));
                }
                Some(_) => {}
                None => tracing::warn!(spec = %spec, "SLUICE_FAULT_PANIC_SHARD ignored: expected <shard>:<appends>"),
            }
        }
        #[cfg(not(feature = "fault-injection"))]
        let _ = shard;
    }

    /// One produce append on this shard: panics when the armed count is used up.
    #[inline]
    pub(super) fn produce_append() {
        #[cfg(feature = "fault-injection")]
        LEFT.with(|l| match l.get() {
            Some((n, 0)) => panic!("injected fault: shard {n} panics in its produce path (SLUICE_FAULT_PANIC_SHARD)"),
            Some((n, left)) => l.set(Some((n, left - 1))),
            None => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_rate_averages_the_window_and_forgets_older_seconds() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s * 1000 + 500);
        let mut r = AppendRate::default();
        assert_eq!(r.per_sec(t0), 0);
        let w = PLACEMENT_LOAD_WINDOW_SECS;
        r.add(0, t0);
        for s in 0..w {
            r.add(1000, at(s));
        }
        assert_eq!(r.per_sec(at(w - 1)), 1000);
        // Half the window later, half of it is gone.
        assert_eq!(r.per_sec(at(w - 1 + w / 2)), 1000 * (w - w / 2) / w);
        // A window later nothing is left, and new appends count alone.
        assert_eq!(r.per_sec(at(2 * w)), 0);
        r.add(w * 7, at(3 * w));
        assert_eq!(r.per_sec(at(3 * w)), 7);
    }

    #[test]
    fn held_response_bytes_follow_their_guards() {
        let before = response_bytes_held();
        let mut a = HeldResponse::new(100);
        let b = HeldResponse::new(50);
        assert_eq!(response_bytes_held(), before + 150);
        a.resize(10);
        assert_eq!(response_bytes_held(), before + 60);
        drop(b);
        drop(a);
        assert_eq!(response_bytes_held(), before);
    }
}
