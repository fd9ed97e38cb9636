//! The produce workload: C connections over T glommio threads, each pipelining up to
//! `in_flight` Produce requests of one prebuilt batch each, optionally paced to a total rate.
//!
//! Latency is measured from the moment a request was *scheduled* to be sent (not when it was
//! sent), so a broker that falls behind a fixed rate is charged for the queueing it causes.
//! A broker that stops answering fails the run: every connect, send and answer must finish
//! within `--request-timeout-ms` ([`crate::client::bounded`]).

use crate::client::{self, ClientError};
use crate::report::{histogram, Progress, Report};
use bytes::Bytes;
use clap::Args;
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{CreateTopicsRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_core::batch::{self, Record};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PRODUCE_VERSION: i16 = 9;
const CREATE_TOPICS_VERSION: i16 = 5;
/// How many failed answers a connection names on stderr (error code and message) before it only
/// counts them: enough to say why a run had errors without flooding the log.
const SHOWN_ERRORS_PER_CONNECTION: u32 = 3;

#[derive(Debug, Args, Clone)]
pub struct ProduceArgs {
    /// Broker address, or several separated by commas (bootstrap; requests go to each
    /// partition's leader).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub broker: String,
    /// Replication factor of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    #[arg(long, default_value = "sluice-bench")]
    pub topic: String,
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records to produce in total.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Records per second in total; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Records per batch (one batch per request).
    #[arg(long, default_value_t = 64)]
    pub batch_records: usize,
    /// Producer connections in total.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    /// Load-generator threads (glommio executors, not pinned).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Fail the run when the broker has not answered a request (or taken one from the socket,
    /// or accepted the connection) within this many milliseconds.
    #[arg(long, default_value_t = sluice_core::limits::CLIENT_RESPONSE_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Compression of each batch's records (as Kafka clients compress them).
    #[arg(long, value_enum, default_value = "none")]
    pub compression: crate::codec::Codec,
    /// Record values: random bytes (incompressible) or text (words, compresses about 3-5x).
    #[arg(long, value_enum, default_value = "random")]
    pub payload: Payload,
}

/// `--payload` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    Random,
    Text,
}

/// A record value of `size` bytes: xorshift noise, or words drawn by it.
fn payload(kind: Payload, size: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "order ",
        "customer ",
        "amount ",
        "status ",
        "shipped ",
        "pending ",
        "id=",
        "2026-11-25 ",
        "eur ",
        "usd ",
        "warehouse ",
        "sku-",
        "true ",
        "false ",
        "null ",
        "event ",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v = Vec::with_capacity(size + 16);
    match kind {
        Payload::Random => v.extend((0..size).map(|_| next() as u8)),
        Payload::Text => {
            while v.len() < size {
                let r = next();
                v.extend_from_slice(WORDS[(r % 16) as usize].as_bytes());
                if r % 5 == 0 {
                    v.extend_from_slice(format!("{} ", r % 100_000).as_bytes());
                }
            }
        }
    }
    v.truncate(size);
    v
}

use sluice_core::clock::now_ms;

/// Creates the topic (an existing one is fine).
pub async fn ensure_topic(broker: &str, topic: &str, partitions: i32, rf: i16) -> Result<(), ClientError> {
    let (mut tx, mut rx) = crate::route::connect_any(broker).await?;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)])
        .with_timeout_ms(sluice_core::limits::CLIENT_REQUEST_TIMEOUT_MS);
    let resp = client::call(&mut tx, &mut rx, &req, CREATE_TOPICS_VERSION).await?;
    for t in resp.topics {
        if t.error_code != 0 && t.error_code != 36 {
            return Err(ClientError::Protocol(format!("creating topic {topic}: error code {}", t.error_code)));
        }
    }
    Ok(())
}

struct Conn {
    /// The leader of `partitions`.
    addr: String,
    partitions: Vec<i32>,
    requests: u64,
    /// Seconds between this connection's requests when paced.
    interval: Option<Duration>,
}

pub fn run(args: ProduceArgs) -> Result<Report, String> {
    let acks: i16 = match args.acks.as_str() {
        "0" => 0,
        "1" => 1,
        "all" | "-1" => -1,
        other => return Err(format!("--acks must be 0, 1 or all, not {other:?}")),
    };
    if args.connections == 0 || args.threads == 0 || args.batch_records == 0 || args.partitions < 1 {
        return Err("--connections, --threads, --batch-records and --partitions must be at least 1".into());
    }
    if args.request_timeout_ms == 0 {
        return Err("--request-timeout-ms must be at least 1".into());
    }
    let threads = args.threads.min(args.connections);
    let leaders = {
        let (broker, topic, parts, rf) =
            (args.broker.clone(), args.topic.clone(), args.partitions, args.replication_factor);
        let limit = Duration::from_millis(args.request_timeout_ms);
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                client::bounded(limit, "answer while creating the topic and finding its leaders", async {
                    ensure_topic(&broker, &topic, parts, rf).await?;
                    crate::route::leader_addrs(&broker, &topic).await
                })
                .await
            })
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let total_requests = args.records.div_ceil(args.batch_records as u64);
    let conns = plan_conns(&args, total_requests, &leaders);
    let threads = threads.min(conns.len());
    let progress = Arc::new(Progress::default());
    let printer = progress.spawn_printer("produce", total_requests * args.batch_records as u64);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let mut per_thread: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        per_thread[i % threads].push(c);
    }
    let mut handles = Vec::new();
    for conns in per_thread {
        let run = ConnRun { args: args.clone(), acks, progress: progress.clone(), start, deadline };
        handles.push(spawn_thread(run, conns)?);
    }
    let mut h = histogram();
    for t in handles {
        h.add(t.join().map_err(|e| e.to_string())?).expect("same bounds");
    }
    let elapsed = start.elapsed();
    progress.done.store(true, Ordering::Relaxed);
    let _ = printer.join();
    let records = progress.records.load(Ordering::Relaxed);
    let bytes = records * args.record_size as u64;
    let what = if acks == 0 { "none (acks=0)" } else { "produce request scheduled → acknowledged" };
    let mut name = format!("produce/acks={}", args.acks);
    if args.compression != crate::codec::Codec::None {
        name.push_str(&format!("/compression={:?}", args.compression).to_lowercase());
    }
    let mut report = Report::new(&name, records, bytes, elapsed, &h, what);
    report.errors = progress.errors.load(Ordering::Relaxed);
    report.failed_connections = progress.failed_connections.load(Ordering::Relaxed);
    report.json = args.json;
    Ok(report)
}

/// The connections: split over the partitions' leaders ([`crate::route::split`]: with one
/// broker, connection c gets the partitions `p % connections == c`, or one when there are
/// fewer partitions than connections), each with its share of `total_requests` and its pace.
fn plan_conns(args: &ProduceArgs, total_requests: u64, leaders: &BTreeMap<i32, String>) -> Vec<Conn> {
    let plan = crate::route::split(leaders, args.connections);
    let n = plan.len() as u64;
    plan.into_iter()
        .enumerate()
        .map(|(c, (addr, partitions))| Conn {
            addr,
            partitions,
            requests: total_requests / n + u64::from((c as u64) < total_requests % n),
            interval: (args.rate > 0)
                .then(|| Duration::from_secs_f64(args.batch_records as f64 * n as f64 / args.rate as f64)),
        })
        .collect()
}

/// What every producer connection of a run shares.
#[derive(Clone)]
struct ConnRun {
    args: ProduceArgs,
    acks: i16,
    progress: Arc<Progress>,
    start: Instant,
    deadline: Instant,
}

/// A load-generator thread running `conns`; it returns their latencies merged (a failed
/// connection is reported and counted as an error).
fn spawn_thread(run: ConnRun, conns: Vec<Conn>) -> Result<ExecutorJoinHandle<Histogram<u64>>, String> {
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let tasks: Vec<_> = conns.into_iter().map(|c| glommio::spawn_local(produce_conn(run.clone(), c))).collect();
            let mut h = histogram();
            for t in tasks {
                match t.await {
                    Ok(part) => h.add(part).expect("same bounds"),
                    Err(e) => run.progress.connection_failed("producer connection", &e),
                }
            }
            h
        })
        .map_err(|e| e.to_string())
}

async fn produce_conn(run: ConnRun, conn: Conn) -> Result<Histogram<u64>, ClientError> {
    let ConnRun { args, acks, progress, start, deadline } = run;
    let limit = Duration::from_millis(args.request_timeout_ms);
    let (mut tx, rx) = client::bounded(limit, "connection", client::connect(&conn.addr)).await?;
    let value = payload(args.payload, args.record_size, conn.partitions[0] as u64);
    let records: Vec<Record<'_>> = (0..args.batch_records).map(|_| Record { key: None, value: &value }).collect();
    let mut batch = crate::codec::compress_batch(batch::build(&records, now_ms()), args.compression)
        .map_err(|e| ClientError::Protocol(format!("compressing a batch: {e}")))?;
    let n = args.batch_records as u64;
    let (qtx, qrx) = local_channel::new_bounded::<(i32, Instant)>(args.in_flight.max(1));
    let answers = Answers { queue: qrx, progress: progress.clone(), n, record_size: args.record_size as u64, limit };
    let receiver = (acks != 0).then(|| spawn_receiver(rx, answers));
    let topic = TopicName(StrBytes::from_string(args.topic.clone()));
    for i in 0..conn.requests {
        let scheduled = match conn.interval {
            Some(iv) => {
                let at = start + iv.mul_f64(i as f64);
                let now = Instant::now();
                if at > now {
                    glommio::timer::sleep(at - now).await;
                }
                at
            }
            None => Instant::now(),
        };
        if scheduled > deadline {
            break;
        }
        restamp(&mut batch);
        let partition = conn.partitions[(i as usize) % conn.partitions.len()];
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(sluice_core::limits::CLIENT_REQUEST_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default().with_name(topic.clone()).with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(Bytes::copy_from_slice(&batch))),
            ])]);
        let corr = client::bounded(limit, "room on the socket for a request", tx.send(&req, PRODUCE_VERSION)).await?;
        if acks == 0 {
            progress.add(n, n * args.record_size as u64);
        } else {
            // The queue is full while the receiver waits for an answer, so this wait is bounded
            // like the answer: glommio 0.9's bounded channel keeps a sender waiting for room
            // after its receiver is gone.
            let queued = qtx.send((corr, scheduled));
            if !client::bounded(limit, "answer to a Produce request", async { Ok(queued.await.is_ok()) }).await? {
                break; // the receiver failed; its error is returned below
            }
        }
    }
    drop(qtx);
    match receiver {
        Some(r) => r.await,
        None => Ok(histogram()),
    }
}

/// Sets the batch's first and max timestamps to now and recomputes its CRC.
fn restamp(batch: &mut [u8]) {
    let ts = now_ms();
    batch[27..35].copy_from_slice(&ts.to_be_bytes());
    batch[35..43].copy_from_slice(&ts.to_be_bytes());
    let crc = batch::compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// What a connection's receiver reads: the answers `queue` names in order (correlation id and
/// when each request was scheduled), each due within `limit`, to requests of one batch of `n`
/// records of `record_size` bytes.
struct Answers {
    queue: LocalReceiver<(i32, Instant)>,
    progress: Arc<Progress>,
    n: u64,
    record_size: u64,
    limit: Duration,
}

/// The task reading a connection's answers and counting their records; it returns the
/// latencies, or fails when an answer is late by more than the limit (a stalled broker).
fn spawn_receiver(mut rx: client::Receiver, answers: Answers) -> glommio::Task<Result<Histogram<u64>, ClientError>> {
    let Answers { queue, progress, n, record_size, limit } = answers;
    glommio::spawn_local(async move {
        let mut h = histogram();
        let mut shown = 0;
        while let Some((corr, scheduled)) = queue.recv().await {
            let answer = rx.recv::<ProduceRequest>(corr, PRODUCE_VERSION);
            let resp = client::bounded(limit, "answer to a Produce request", answer).await?;
            let failed = resp.responses.iter().flat_map(|t| t.partition_responses.iter()).find(|p| p.error_code != 0);
            if let Some(p) = failed {
                if shown < SHOWN_ERRORS_PER_CONNECTION {
                    shown += 1;
                    eprintln!(
                        "sluice bench: partition {} answered error code {} ({:?})",
                        p.index, p.error_code, p.error_message
                    );
                }
                progress.errors.fetch_add(1, Ordering::Relaxed);
            } else {
                progress.add(n, n * record_size);
            }
            h.saturating_record(scheduled.elapsed().as_micros() as u64);
        }
        Ok::<_, ClientError>(h)
    })
}
