//! The metrics endpoint: Prometheus text format on `/metrics`, readiness on `/ready`.
//!
//! Contract: served by shard 0 on its own address (`metrics_listen`), separate from the
//! Kafka listener; every scrape gathers one snapshot from each shard over the mesh. Minimal
//! HTTP/1.1: one request per connection, `GET` only, bounded request size. Bounded use: at
//! most `MAX_METRICS_CONNECTIONS` open (a new one closes the oldest still sending its request),
//! each with `METRICS_IO_TIMEOUT_MS` to send its request and again to take the answer.

use futures::channel::oneshot;
use futures::future::{select, Either};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::FutureExt;
use glommio::net::{TcpListener, TcpStream};
use hdrhistogram::Histogram;
use sluice_core::limits::{MAX_METRICS_CONNECTIONS, MAX_METRICS_REQUEST_BYTES, METRICS_IO_TIMEOUT_MS};
use sluice_shard::metrics::{gather, ShardMetrics};
use sluice_shard::Shard;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::rc::Rc;
use std::time::Duration;

/// The endpoint's open connections: how many, and a way to close each one that is still
/// reading its request, oldest first (by accept order).
#[derive(Default)]
struct Open {
    count: usize,
    next_id: u64,
    reading: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Open {
    /// Makes room for one more connection: at the cap, closes the oldest one still reading
    /// its request. False when there is no room (every open one is being answered).
    fn admit(&mut self) -> bool {
        if self.count >= MAX_METRICS_CONNECTIONS {
            let Some((_, close)) = self.reading.pop_first() else { return false };
            let _ = close.send(());
        }
        self.count += 1;
        true
    }
}

/// Counts a connection as open until dropped.
struct Slot(Rc<RefCell<Open>>, u64);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.0.borrow_mut();
        open.reading.remove(&self.1);
        open.count -= 1;
    }
}

/// Serves until the shard stops.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let open = Rc::new(RefCell::new(Open::default()));
    loop {
        let accepted = match select(listener.accept().boxed_local(), shard.stopping().boxed_local()).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => return,
        };
        let Ok(stream) = accepted else { continue };
        if !open.borrow_mut().admit() {
            tracing::debug!("metrics endpoint at its connection cap; closing a new connection");
            continue; // dropping the stream closes it
        }
        let (close, closed) = oneshot::channel();
        let id = {
            let mut o = open.borrow_mut();
            o.next_id += 1;
            let id = o.next_id;
            o.reading.insert(id, close);
            id
        };
        let slot = Slot(open.clone(), id);
        let shard = shard.clone();
        glommio::spawn_local(async move {
            if let Err(e) = answer(&shard, stream, &slot, closed).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
            drop(slot);
        })
        .detach();
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "metrics client too slow")
}

/// Reads a request (up to the blank line, at most `MAX_METRICS_REQUEST_BYTES`).
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_METRICS_REQUEST_BYTES];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        let r = stream.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    buf.truncate(n);
    Ok(buf)
}

async fn answer(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    slot: &Slot,
    closed: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let timeout = Duration::from_millis(METRICS_IO_TIMEOUT_MS);
    let read = read_request(&mut stream).boxed_local();
    let buf = match select(read, select(glommio::timer::sleep(timeout).boxed_local(), closed)).await {
        Either::Left((r, _)) => r?,
        Either::Right((Either::Left(_), _)) => return Err(timed_out()),
        Either::Right((Either::Right(_), _)) => {
            return Err(std::io::Error::other("closed to make room for a newer metrics connection"))
        }
    };
    // Being answered now: no longer among the connections closed to make room.
    slot.0.borrow_mut().reading.remove(&slot.1);
    let line = String::from_utf8_lossy(&buf).lines().next().unwrap_or_default().to_string();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", render(&gather(shard).await)),
        ("GET", "/ready") if shard.is_stopping() => ("503 Service Unavailable", "text/plain", "stopping\n".into()),
        ("GET", "/ready") => ("200 OK", "text/plain", "ready\n".into()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found: try /metrics or /ready\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.close().await
    };
    let written = match select(write.boxed_local(), glommio::timer::sleep(timeout).boxed_local()).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(timed_out()),
    };
    written
}

fn quantiles(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>, scale: f64) {
    for q in [0.5, 0.9, 0.99, 0.999] {
        let _ = writeln!(out, "{name}{{{labels},quantile=\"{q}\"}} {}", h.value_at_quantile(q) as f64 * scale);
    }
    // fold from +0.0: an empty f64 `sum()` is -0.0, which would print as "-0".
    let sum = h.iter_recorded().fold(0.0, |s, v| s + v.value_iterated_to() as f64 * v.count_at_value() as f64);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum * scale);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.len());
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// (name, type, help, value of one shard)
type Gauge = (&'static str, &'static str, &'static str, fn(&ShardMetrics) -> f64);

/// Prometheus text exposition of every shard's metrics.
pub fn render(shards: &[ShardMetrics]) -> String {
    let mut out = String::with_capacity(sluice_core::limits::METRICS_RENDER_CAPACITY_BYTES);
    render_requests(&mut out, shards);
    render_latencies(&mut out, shards);
    render_topics(&mut out, shards);
    for (name, kind, help, get) in GAUGES {
        family(&mut out, name, kind, help);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

const US: f64 = 1e-6;

/// Requests answered and failed, per shard and API.
fn render_requests(out: &mut String, shards: &[ShardMetrics]) {
    family(out, "sluice_requests_total", "counter", "Requests answered, per shard and API.");
    for s in shards {
        for (api, a) in &s.apis {
            let _ = writeln!(out, "sluice_requests_total{{shard=\"{}\",api=\"{api}\"}} {}", s.shard, a.count);
        }
    }
    family(out, "sluice_request_errors_total", "counter", "Requests that could not be answered.");
    for s in shards {
        for (api, a) in &s.apis {
            let _ = writeln!(out, "sluice_request_errors_total{{shard=\"{}\",api=\"{api}\"}} {}", s.shard, a.errors);
        }
    }
}

/// Latency summaries: per request API, per stage, and of fdatasync.
fn render_latencies(out: &mut String, shards: &[ShardMetrics]) {
    family(out, "sluice_request_latency_seconds", "summary", "Request latency, read to answer ready.");
    for s in shards {
        for (api, a) in &s.apis {
            let labels = format!("shard=\"{}\",api=\"{api}\"", s.shard);
            quantiles(out, "sluice_request_latency_seconds", &labels, &a.latency_us, US);
        }
    }
    family(
        out,
        "sluice_stage_latency_seconds",
        "summary",
        "Time spent per stage: decode, cross_core_hop, append, ack_wait (append to the ack level), response, write (segment write), sync_queue (written to its sync round).",
    );
    for s in shards {
        for (stage, h) in &s.stages {
            let labels = format!("shard=\"{}\",stage=\"{stage}\"", s.shard);
            quantiles(out, "sluice_stage_latency_seconds", &labels, h, US);
        }
    }
    family(out, "sluice_fsync_latency_seconds", "summary", "fdatasync latency of partition logs.");
    for s in shards {
        quantiles(out, "sluice_fsync_latency_seconds", &format!("shard=\"{}\"", s.shard), &s.fsync_us, US);
    }
}

/// Bytes in and out per topic, summed over the shards.
fn render_topics(out: &mut String, shards: &[ShardMetrics]) {
    family(
        out,
        "sluice_topic_bytes_in_total",
        "counter",
        "Record batch bytes produced, per topic (counted on the owner).",
    );
    family(
        out,
        "sluice_topic_bytes_out_total",
        "counter",
        "Record batch bytes fetched, per topic (counted on the owner).",
    );
    let mut topics: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for s in shards {
        for (t, i, o) in &s.topics {
            let e = topics.entry(t.as_str()).or_default();
            e.0 += i;
            e.1 += o;
        }
    }
    for (t, (i, o)) in topics {
        let t = escape(t);
        let _ = writeln!(out, "sluice_topic_bytes_in_total{{topic=\"{t}\"}} {i}");
        let _ = writeln!(out, "sluice_topic_bytes_out_total{{topic=\"{t}\"}} {o}");
    }
}

/// The per-shard gauges and counters, in exposition order.
const GAUGES: [Gauge; 30] = [
    ("sluice_partitions", "gauge", "Partitions owned by the shard.", |s| s.partitions as f64),
    ("sluice_connections", "gauge", "Open client connections on the shard.", |s| s.connections as f64),
    ("sluice_connections_accepted_total", "counter", "Connections accepted by the shard.", |s| {
        s.connections_total as f64
    }),
    (
        "sluice_connections_refused_total",
        "counter",
        "Connections closed at accept by max_connections or max_connections_per_ip (broker-wide limits).",
        |s| s.connections_refused as f64,
    ),
    ("sluice_inflight_requests", "gauge", "Requests read and not yet answered (queue depth).", |s| {
        s.inflight_requests as f64
    }),
    ("sluice_reads_from_memory_total", "counter", "Partition reads served from memory.", |s| s.memory_reads as f64),
    ("sluice_reads_from_disk_total", "counter", "Partition reads served with a direct-I/O read.", |s| {
        s.disk_reads as f64
    }),
    ("sluice_read_memory_hit_ratio", "gauge", "Share of reads served from memory.", |s| {
        let t = s.memory_reads + s.disk_reads;
        if t == 0 {
            0.0
        } else {
            s.memory_reads as f64 / t as f64
        }
    }),
    ("sluice_bytes_written_total", "counter", "Bytes written to segment files.", |s| s.bytes_written as f64),
    ("sluice_bytes_read_total", "counter", "Bytes read from segment files (direct I/O).", |s| s.bytes_read as f64),
    ("sluice_read_cache_bytes", "gauge", "Bytes held by the shard's read cache.", |s| s.read_cache_bytes as f64),
    (
        "sluice_partition_read_bytes_total",
        "counter",
        "Bytes partition reads returned to fetches on the owner shard, before responses were cut to max_bytes.",
        |s| s.partition_read_bytes as f64,
    ),
    ("sluice_cross_core_messages_sent_total", "counter", "Messages sent to other shards.", |s| s.messages_sent as f64),
    ("sluice_cross_core_messages_received_total", "counter", "Messages received from other shards.", |s| {
        s.messages_received as f64
    }),
    ("sluice_groups", "gauge", "Consumer groups coordinated by the shard.", |s| s.groups as f64),
    ("sluice_group_members", "gauge", "Members of the groups coordinated by the shard.", |s| s.members as f64),
    (
        "sluice_response_bytes_held",
        "gauge",
        "Response bytes built but not yet written to client sockets (max_response_bytes_per_shard).",
        |s| s.response_bytes_held as f64,
    ),
    (
        "sluice_fetch_responses_shrunk_total",
        "counter",
        "Fetches whose max_bytes the shard's response budget lowered (max_response_bytes_per_shard).",
        |s| s.fetch_shrunk as f64,
    ),
    (
        "sluice_request_bytes_reserved",
        "gauge",
        "Request bytes reserved from the shard's in-flight budget: frames being read (by announced size) or answered.",
        |s| s.request_bytes_reserved as f64,
    ),
    ("sluice_fetch_waiters", "gauge", "Long-poll waits the shard runs for Fetches served by other shards.", |s| {
        s.fetch_waiters as f64
    }),
    ("sluice_mesh_tasks", "gauge", "Tasks the shard runs for messages from other shards.", |s| s.mesh_tasks as f64),
    (
        "sluice_mesh_tasks_peak",
        "gauge",
        "Most tasks the shard ran at once for messages from other shards since start.",
        |s| s.mesh_tasks_peak as f64,
    ),
    ("sluice_compaction_passes_total", "counter", "Compaction passes run on the shard's compacted logs.", |s| {
        s.compaction.passes as f64
    }),
    (
        "sluice_compaction_failures_total",
        "counter",
        "Compaction passes that failed (the log is left as it was).",
        |s| s.compaction.failures as f64,
    ),
    ("sluice_compaction_segments_rewritten_total", "counter", "Segments compaction rewrote.", |s| {
        s.compaction.segments_rewritten as f64
    }),
    ("sluice_compaction_bytes_removed_total", "counter", "Segment bytes compaction removed.", |s| {
        s.compaction.bytes_removed as f64
    }),
    ("sluice_compaction_records_removed_total", "counter", "Records compaction removed.", |s| {
        s.compaction.records_removed as f64
    }),
    ("sluice_compaction_max_pass_seconds", "gauge", "The longest compaction pass on the shard so far.", |s| {
        s.compaction.max_pass_us as f64 / 1e6
    }),
    (
        "sluice_compaction_last_dirty_ratio",
        "gauge",
        "Dirty ratio of the log the shard compacted last, when its pass started.",
        |s| s.compaction.last_dirty_ratio,
    ),
    (
        "sluice_append_bytes_per_second",
        "gauge",
        "Bytes appended per second, averaged over the placement window; placement weighs it.",
        |s| s.append_bytes_per_sec as f64,
    ),
];
