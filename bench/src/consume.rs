//! The consume workload: T threads, one connection each, fetching their share of a topic's
//! partitions from offset 0 until the expected number of records arrived. With `--consumers N`
//! there are N such readers at once, each reading `--records` records of every partition from
//! offset 0 (N × T threads; as N consumers in N groups would): the report is their aggregate.
//!
//! Latency is end-to-end from each batch's max timestamp (set by the producer at send time,
//! millisecond precision) to its arrival; when run after the producer finished it measures
//! the age of the data instead. A broker that stops answering fails the run: every connect
//! and fetch must finish within `--request-timeout-ms` ([`crate::client::bounded`]).

use crate::client::{self, ClientError};
use crate::report::{histogram, Progress, Report};
use clap::Args;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_core::batch::{BatchHeader, LOG_OVERHEAD};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FETCH_VERSION: i16 = 12;

#[derive(Debug, Args, Clone)]
pub struct ConsumeArgs {
    /// Broker address, or several separated by commas (bootstrap; fetches go to each
    /// partition's leader).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub broker: String,
    #[arg(long, default_value = "sluice-bench")]
    pub topic: String,
    /// Records to consume in total before stopping.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Consumer threads (one connection each; at least one per leader of the topic).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Independent consumers reading the topic at once, each reading `--records` records from
    /// offset 0 (with `--threads` threads each); records/s in the report is their aggregate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=sluice_core::limits::CLIENT_MAX_CONSUMERS as i64))]
    pub consumers: u16,
    /// Fetch max_bytes.
    #[arg(long, default_value_t = 52_428_800)]
    pub max_bytes: i32,
    /// Fetch per-partition max bytes.
    #[arg(long, default_value_t = 4_194_304)]
    pub partition_max_bytes: i32,
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Fail the run when the broker has not answered a fetch (or accepted the connection)
    /// within this many milliseconds.
    #[arg(long, default_value_t = sluice_core::limits::CLIENT_RESPONSE_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ConsumeArgs) -> Result<Report, String> {
    if args.request_timeout_ms == 0 {
        return Err("--request-timeout-ms must be at least 1".into());
    }
    let (broker, topic) = (args.broker.clone(), args.topic.clone());
    let limit = Duration::from_millis(args.request_timeout_ms);
    let leaders = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            client::bounded(
                limit,
                "answer while finding the topic's leaders",
                crate::route::leader_addrs(&broker, &topic),
            )
            .await
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let threads = args.threads.clamp(1, leaders.len());
    let consumers = u64::from(args.consumers);
    let progress = Arc::new(Progress::default());
    let printer = progress.spawn_printer("consume", args.records * consumers);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let mut handles = Vec::new();
    for _ in 0..consumers {
        // This consumer's own count: its threads stop when it has read `--records`.
        let mine = Arc::new(AtomicU64::new(0));
        for (addr, parts) in crate::route::split(&leaders, threads) {
            let (args, progress, mine) = (args.clone(), progress.clone(), mine.clone());
            handles.push(
                LocalExecutorBuilder::new(Placement::Unbound)
                    .spawn(move || async move { consume_conn(args, addr, parts, progress, mine, deadline).await })
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    let mut h = histogram();
    for t in handles {
        match t.join().map_err(|e| e.to_string())? {
            Ok(part) => h.add(part).expect("same bounds"),
            Err(e) => progress.connection_failed("consumer", &e),
        }
    }
    let elapsed = start.elapsed();
    progress.done.store(true, Ordering::Relaxed);
    let _ = printer.join();
    let mut report = Report::new(
        "consume",
        progress.records.load(Ordering::Relaxed),
        progress.bytes.load(Ordering::Relaxed),
        elapsed,
        &h,
        "batch timestamp → fetched (end to end, ms precision)",
    );
    report.errors = progress.errors.load(Ordering::Relaxed);
    report.failed_connections = progress.failed_connections.load(Ordering::Relaxed);
    report.json = args.json;
    if report.records < args.records * consumers {
        eprintln!(
            "sluice bench: consumed {} of {} records before the deadline",
            report.records,
            args.records * consumers
        );
    }
    Ok(report)
}

async fn consume_conn(
    args: ConsumeArgs,
    addr: String,
    partitions: Vec<i32>,
    progress: Arc<Progress>,
    consumer_records: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<Histogram<u64>, ClientError> {
    let limit = Duration::from_millis(args.request_timeout_ms);
    let (mut tx, mut rx) = client::bounded(limit, "connection", client::connect(&addr)).await?;
    let mut offsets = vec![0i64; partitions.len()];
    let mut h = histogram();
    let topic = TopicName(StrBytes::from_string(args.topic.clone()));
    while consumer_records.load(Ordering::Relaxed) < args.records && Instant::now() < deadline {
        let parts = partitions
            .iter()
            .zip(&offsets)
            .map(|(p, o)| {
                FetchPartition::default()
                    .with_partition(*p)
                    .with_fetch_offset(*o)
                    .with_partition_max_bytes(args.partition_max_bytes)
            })
            .collect();
        let req = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(sluice_core::limits::CLIENT_FETCH_MAX_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(args.max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(topic.clone()).with_partitions(parts)]);
        let resp =
            client::bounded(limit, "answer to a Fetch request", client::call(&mut tx, &mut rx, &req, FETCH_VERSION))
                .await?;
        let now = sluice_core::clock::now_ms();
        for t in &resp.responses {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::Protocol(format!(
                        "fetch partition {}: error {}",
                        p.partition_index, p.error_code
                    )));
                }
                let Some(i) = partitions.iter().position(|x| *x == p.partition_index) else { continue };
                let Some(records) = &p.records else { continue };
                let mut pos = 0;
                while pos + LOG_OVERHEAD <= records.len() {
                    let Ok(hd) = BatchHeader::parse(&records[pos..]) else { break };
                    if pos + hd.total_len() > records.len() {
                        break;
                    }
                    if hd.last_offset() >= offsets[i] {
                        let n = hd.records_count.max(0) as u64;
                        progress.add(n, hd.total_len() as u64);
                        consumer_records.fetch_add(n, Ordering::Relaxed);
                        let lat_us = (now - hd.max_timestamp).max(0) as u64 * 1000;
                        h.saturating_record_n(lat_us, n);
                        offsets[i] = hd.last_offset() + 1;
                    }
                    pos += hd.total_len();
                }
            }
        }
    }
    Ok(h)
}
