//! This shard's metrics: requests per API with latency, per-stage latencies, bytes per topic,
//! connections and queue depths; and gathering every shard's copy for the metrics endpoint.
//!
//! Contract: the registry is thread-local (one shard per thread), updated only by its shard;
//! [`gather`] asks every shard for a snapshot (one message each) and never shares state.

use crate::msg::ShardMsg;
use crate::shard::Shard;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

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
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Decode, Stage::CrossCoreHop, Stage::Append, Stage::Response];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::CrossCoreHop => "cross_core_hop",
            Stage::Append => "append",
            Stage::Response => "response",
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
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
}

thread_local!(static REG: RefCell<Registry> = RefCell::new(Registry::default()));

/// Records one answered request.
pub fn record_request(api: &'static str, latency: Duration, failed: bool) {
    REG.with(|r| {
        let mut r = r.borrow_mut();
        let s = r.apis.entry(api).or_insert_with(|| ApiStats { count: 0, errors: 0, latency_us: histogram() });
        s.count += 1;
        s.errors += u64::from(failed);
        s.latency_us.saturating_record(latency.as_micros() as u64);
    });
}

/// Records time spent in a stage.
pub fn record_stage(stage: Stage, took: Duration) {
    REG.with(|r| {
        r.borrow_mut().stages.entry(stage).or_insert_with(histogram).saturating_record(took.as_micros() as u64);
    });
}

/// Counts bytes produced to (`inbound`) or fetched from a topic.
pub fn add_topic_bytes(topic: &str, bytes: u64, inbound: bool) {
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
    });
}

/// A connection opened (+1) or closed (-1).
pub fn connection(delta: i64) {
    REG.with(|r| {
        let mut r = r.borrow_mut();
        r.connections += delta;
        if delta > 0 {
            r.connections_total += delta as u64;
        }
    });
}

/// A request was queued (+1) or answered (-1) on a connection.
pub fn inflight(delta: i64) {
    REG.with(|r| r.borrow_mut().inflight_requests += delta);
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
    pub inflight_requests: i64,
    pub memory_reads: u64,
    pub disk_reads: u64,
    pub bytes_written: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub groups: u64,
    pub members: u64,
}

/// This shard's snapshot.
pub fn local(shard: &Shard) -> ShardMetrics {
    let storage = sluice_storage::stats::snapshot();
    let (groups, members) = shard.groups.counts();
    REG.with(|r| {
        let r = r.borrow();
        ShardMetrics {
            shard: shard.id.0,
            apis: r.apis.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            stages: r.stages.iter().map(|(k, v)| (k.name(), v.clone())).collect(),
            fsync_us: storage.fsync_us,
            topics: r.topics.iter().map(|(t, (i, o))| (t.clone(), *i, *o)).collect(),
            partitions: shard.owned_partitions() as u64,
            connections: r.connections,
            connections_total: r.connections_total,
            inflight_requests: r.inflight_requests,
            memory_reads: storage.memory_reads,
            disk_reads: storage.disk_reads,
            bytes_written: storage.bytes_written,
            messages_sent: shard.stats.messages_sent.get(),
            messages_received: shard.stats.messages_received.get(),
            groups,
            members,
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
        if shard.send(sluice_core::ShardId(s as u16), ShardMsg::Metrics { reply }).await.is_ok() {
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
