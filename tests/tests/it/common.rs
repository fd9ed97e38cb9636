//! Client-side helpers shared by the integration tests: rdkafka producers,
//! consumers and admin clients with bounded waits, deterministic test
//! messages, and raw Kafka wire framing over `std::net::TcpStream`.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

/// Timeout for a single client operation (metadata, flush, admin, ...).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Test scheduling

/// Timing-sensitive tests take the write side so that they do not share the
/// two cores with other brokers; all other tests take the read side.
static SCHED: RwLock<()> = RwLock::new(());

pub fn shared_slot() -> RwLockReadGuard<'static, ()> {
    SCHED.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive_slot() -> RwLockWriteGuard<'static, ()> {
    SCHED.write().unwrap_or_else(|e| e.into_inner())
}

/// A unique-ish topic name for one test.
pub fn topic_name(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("it-{test}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------
// rdkafka contexts

fn debug_enabled() -> bool {
    std::env::var_os("SLUICE_IT_DEBUG").is_some()
}

/// Collects client-level errors; prints librdkafka logs when
/// `SLUICE_IT_DEBUG` is set.
#[derive(Default)]
pub struct Ctx {
    pub name: String,
    pub client_errors: Mutex<Vec<String>>,
}

/// With `SLUICE_IT_LOG=FILE`, every client's librdkafka log lines are
/// appended to FILE (combine with `SLUICE_IT_RDKAFKA_DEBUG=broker,fetch`).
fn log_line(line: &str) {
    static FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);
    let Some(path) = std::env::var_os("SLUICE_IT_LOG") else {
        return;
    };
    let mut f = FILE.lock().unwrap_or_else(|e| e.into_inner());
    if f.is_none() {
        *f = std::fs::OpenOptions::new().create(true).append(true).open(path).ok();
    }
    if let Some(f) = f.as_mut() {
        let _ = writeln!(f, "{line}");
    }
}

/// A client name unique within this test process, also used as client.id.
fn client_name(kind: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("it-{kind}-{}", N.fetch_add(1, Ordering::Relaxed))
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if debug_enabled() {
            eprintln!("[{} {:?}] {fac} {log_message}", self.name, level);
        }
        log_line(&format!(
            "{:?} [{} {:?}] {fac} {log_message}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default(),
            self.name,
            level
        ));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if debug_enabled() {
            eprintln!("[{} ERROR] {error}: {reason}", self.name);
        }
        log_line(&format!("[{} ERROR] {error}: {reason}", self.name));
        let mut v = self.client_errors.lock().unwrap();
        if v.len() < 1000 {
            v.push(format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for Ctx {}

/// Outcome of one delivery report.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub id: usize,
    pub partition: i32,
    pub offset: i64,
    pub error: Option<String>,
}

/// Producer context recording every delivery report, keyed by the
/// `usize` opaque passed to `send`.
#[derive(Default)]
pub struct ProducerCtx {
    pub base: Ctx,
    pub delivered: Mutex<Vec<Delivered>>,
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.base.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason)
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, id: usize) {
        let d = match r {
            Ok(m) => Delivered { id, partition: m.partition(), offset: m.offset(), error: None },
            Err((e, m)) => Delivered { id, partition: m.partition(), offset: m.offset(), error: Some(e.to_string()) },
        };
        self.delivered.lock().unwrap().push(d);
    }
}

fn base_config(addr: &str, name: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("client.id", name)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "30000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .set("log_level", "7");
    if let Ok(d) = std::env::var("SLUICE_IT_RDKAFKA_DEBUG") {
        c.set("debug", &d);
    }
    c
}

pub type TestProducer = BaseProducer<ProducerCtx>;
pub type TestConsumer = BaseConsumer<Ctx>;

/// A producer with the given `acks` ("0", "1", "all"), no idempotence.
pub fn producer(addr: &str, acks: &str) -> TestProducer {
    producer_with(addr, acks, &[])
}

pub fn producer_with(addr: &str, acks: &str, extra: &[(&str, &str)]) -> TestProducer {
    let name = client_name(&format!("producer-acks{acks}"));
    let mut c = base_config(addr, &name);
    c.set("acks", acks)
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("request.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "200000")
        .set("compression.codec", "none");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(ProducerCtx { base: Ctx { name, ..Default::default() }, ..Default::default() })
        .expect("create producer")
}

/// A consumer for manual `assign()`: no group, no commits.
pub fn consumer(addr: &str) -> TestConsumer {
    consumer_with(addr, &[])
}

pub fn consumer_with(addr: &str, extra: &[(&str, &str)]) -> TestConsumer {
    let name = client_name("consumer");
    let mut c = base_config(addr, &name);
    // librdkafka's assign() requires a group.id even without group APIs.
    c.set("group.id", "sluice-it-assign")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("check.crcs", "true")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(Ctx { name, ..Default::default() }).expect("create consumer")
}

pub fn admin(addr: &str) -> AdminClient<DefaultClientContext> {
    base_config(addr, &client_name("admin")).create().expect("create admin client")
}

/// Polls `fut` on this thread until it completes or `timeout` elapses.
pub fn block_on<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    struct ThreadWaker(Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + timeout;
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::park_timeout((deadline - now).min(Duration::from_millis(100)));
    }
    None
}

/// Creates `topic` with `partitions` partitions via CreateTopics and waits
/// until metadata shows it with that many partitions.
pub fn create_topic(addr: &str, topic: &str, partitions: i32) {
    create_topic_rf(addr, topic, partitions, 1);
}

/// Creates `topic` with `partitions` partitions of `rf` replicas each, through `addr`. A
/// cluster that is still forming (no controller known yet, or fewer live brokers than `rf`)
/// answers NOT_CONTROLLER / INVALID_REPLICATION_FACTOR, as Kafka does while brokers register:
/// those are retried for up to 30 s.
pub fn create_topic_rf(addr: &str, topic: &str, partitions: i32, rf: i32) {
    let res = sluice_tests::retry_until(Duration::from_secs(30), 60, Duration::from_millis(500), || {
        match try_create_topic(addr, topic, partitions, rf) {
            Err((
                _,
                rdkafka::types::RDKafkaErrorCode::NotController
                | rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor,
            )) => None,
            other => Some(other),
        }
    })
    .unwrap_or_else(|| panic!("CreateTopics({topic}): the cluster never took it within 30 s"));
    if let Err((t, e)) = &res {
        panic!("CreateTopics({t}) returned error {e:?}");
    }
    wait_for_partitions(addr, topic, partitions as usize);
}

/// One CreateTopics of `topic` through `addr`: its per-topic result.
pub fn try_create_topic(
    addr: &str,
    topic: &str,
    partitions: i32,
    rf: i32,
) -> Result<String, (String, rdkafka::types::RDKafkaErrorCode)> {
    let admin = admin(addr);
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(20)))
        .operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
    let mut res = block_on(admin.create_topics([&new], &opts), OP_TIMEOUT)
        .unwrap_or_else(|| panic!("CreateTopics({topic}) did not complete within {OP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("CreateTopics({topic}) failed: {e}"));
    assert_eq!(res.len(), 1, "CreateTopics result count: {res:?}");
    res.remove(0)
}

/// Waits until the broker's metadata lists `topic` with `n` partitions, each
/// with a leader; returns the metadata's partition count.
pub fn wait_for_partitions(addr: &str, topic: &str, n: usize) {
    let p = producer(addr, "1");
    let c = p.client();
    let mut last = String::new();
    let ok = sluice_tests::retry_until(OP_TIMEOUT, 300, Duration::from_millis(100), || {
        match c.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                let t = md.topics().iter().find(|t| t.name() == topic)?;
                last = format!(
                    "error={:?} partitions={:?}",
                    t.error(),
                    t.partitions().iter().map(|p| (p.id(), p.leader(), p.error())).collect::<Vec<_>>()
                );
                (t.error().is_none()
                    && t.partitions().len() == n
                    && t.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0))
                .then_some(())
            }
            Err(e) => {
                last = e.to_string();
                None
            }
        }
    });
    assert!(ok.is_some(), "topic {topic} not visible with {n} partitions within {OP_TIMEOUT:?}; last: {last}");
}

/// Partition count of `topic` as reported by Metadata (None if absent).
pub fn metadata_partitions(addr: &str, topic: &str) -> Option<usize> {
    let p = producer(addr, "1");
    let md = p.client().fetch_metadata(None, Duration::from_secs(10)).expect("fetch metadata (all topics)");
    md.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().len())
}

// ---------------------------------------------------------------------------
// Test messages

/// A message as produced, to compare byte-exactly with what is consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// (key, value) pairs in order; value None is a null header value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Msg {
    pub fn from_borrowed(m: &BorrowedMessage<'_>) -> Msg {
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec()))).collect())
            .unwrap_or_default();
        Msg {
            partition: m.partition(),
            key: m.key().map(|k| k.to_vec()),
            payload: m.payload().map(|p| p.to_vec()),
            headers,
        }
    }

    fn owned_headers(&self) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        let mut h = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            h = h.insert(Header { key: k, value: v.as_deref() });
        }
        Some(h)
    }
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// Deterministic message `i` of a test run: binary key, payload of varying
/// size (0..=3000 bytes, every 97th is null), three headers including a
/// binary one and a null-valued one.
pub fn make_msg(i: usize, partitions: i32, seed: u64) -> Msg {
    let mut st = seed ^ ((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    let partition = (i % partitions as usize) as i32;
    let mut key = format!("key-{i:06}-").into_bytes();
    key.extend((0..4).map(|_| xorshift(&mut st) as u8));
    let payload = if i % 97 == 96 {
        None
    } else {
        let len = 1 + (xorshift(&mut st) % 3000) as usize;
        Some((0..len).map(|_| xorshift(&mut st) as u8).collect())
    };
    let bin: Vec<u8> =
        (0..(xorshift(&mut st) % 40) as usize).map(|_| xorshift(&mut st) as u8).chain([0u8, 0xff]).collect();
    Msg {
        partition,
        key: Some(key),
        payload,
        headers: vec![
            ("seq".to_string(), Some((i as u64).to_be_bytes().to_vec())),
            ("bin\u{e9}".to_string(), Some(bin)),
            ("nullv".to_string(), None),
        ],
    }
}

/// Sends `msgs` (ids are their indices plus `id_base`) to explicit
/// partitions, retrying on a full queue, then flushes. Does not check the
/// delivery reports.
pub fn send_all(p: &TestProducer, topic: &str, msgs: &[Msg], id_base: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, m) in msgs.iter().enumerate() {
        let headers = m.owned_headers();
        let mut rec: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, id_base + i).partition(m.partition);
        if let Some(k) = &m.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &m.payload {
            rec = rec.payload(v.as_slice());
        }
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        let mut rec = rec;
        let mut sent = false;
        for _ in 0..100_000 {
            match p.send(rec) {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                    assert!(Instant::now() < deadline, "producer queue stayed full");
                }
                Err((e, _)) => panic!("send message {i} failed: {e}"),
            }
        }
        assert!(sent, "message {i} never accepted by the producer queue");
        if i % 1000 == 999 {
            p.poll(Duration::ZERO);
        }
    }
    flush(p);
}

pub fn flush(p: &TestProducer) {
    p.flush(OP_TIMEOUT).unwrap_or_else(|e| panic!("producer flush failed within {OP_TIMEOUT:?}: {e}"));
    p.poll(Duration::ZERO);
}

/// Drains the delivery reports: asserts exactly `n` reports with no error,
/// ids `id_base..id_base+n`; returns offset per id (relative to id_base).
pub fn take_deliveries(p: &TestProducer, id_base: usize, n: usize) -> Vec<Delivered> {
    let mut all = std::mem::take(&mut *p.context().delivered.lock().unwrap());
    all.sort_by_key(|d| d.id);
    let errors: Vec<&Delivered> = all.iter().filter(|d| d.error.is_some()).collect();
    assert!(
        errors.is_empty(),
        "{} of {} deliveries failed, first: {:?}; client errors: {:?}",
        errors.len(),
        all.len(),
        errors.iter().take(5).collect::<Vec<_>>(),
        p.context().base.client_errors.lock().unwrap()
    );
    assert_eq!(all.len(), n, "delivery report count");
    for (i, d) in all.iter().enumerate() {
        assert_eq!(d.id, id_base + i, "delivery report ids");
    }
    all
}

/// Assigns `partitions` of `topic` from offset `from` (per partition).
pub fn assign(c: &TestConsumer, topic: &str, partitions: &[(i32, Offset)]) {
    let mut tpl = TopicPartitionList::new();
    for (p, off) in partitions {
        tpl.add_partition_offset(topic, *p, *off).expect("add partition offset");
    }
    c.assign(&tpl).expect("assign");
}

/// A consumed message with its offset.
#[derive(Clone, Debug)]
pub struct Consumed {
    pub offset: i64,
    pub msg: Msg,
    pub timestamp: Option<i64>,
}

/// Polls until `n` messages were consumed or `timeout` elapses. Returns the
/// messages (in poll order) and any poll errors.
pub fn consume_n(c: &TestConsumer, n: usize, timeout: Duration) -> (Vec<Consumed>, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    let mut errors = Vec::new();
    let max_polls = n * 4 + (timeout.as_millis() as usize / 10) + 100;
    for _ in 0..max_polls {
        if out.len() >= n || Instant::now() >= deadline {
            break;
        }
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => out.push(Consumed {
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
                msg: Msg::from_borrowed(&m),
            }),
            Some(Err(e)) if errors.len() < 100 => errors.push(e.to_string()),
            Some(Err(_)) => {}
        }
    }
    (out, errors)
}

/// Consumes everything of `topic` (partitions 0..parts from the beginning)
/// and checks it equals `sent` byte-exactly in per-partition order, at the
/// offsets from `deliveries` when given (else contiguous from `first`).
pub fn consume_and_verify(
    addr: &str,
    topic: &str,
    parts: i32,
    sent: &[Msg],
    deliveries: Option<&[Delivered]>,
    timeout: Duration,
) {
    let c = consumer(addr);
    let assignment: Vec<(i32, Offset)> = (0..parts).map(|p| (p, Offset::Beginning)).collect();
    assign(&c, topic, &assignment);
    let (got, errors) = consume_n(&c, sent.len(), timeout);
    // Give the broker a short chance to return extra (duplicate) messages.
    let (extra, extra_errors) = consume_n(&c, 1, Duration::from_millis(500));
    verify(sent, deliveries, &got, &errors);
    assert!(
        extra.is_empty(),
        "consumed more messages than produced: extra {:?} (errors {extra_errors:?})",
        extra.first().map(|c| (c.msg.partition, c.offset))
    );
}

/// Compares consumed messages with the sent ones per partition.
pub fn verify(sent: &[Msg], deliveries: Option<&[Delivered]>, got: &[Consumed], errors: &[String]) {
    let mut expected: BTreeMap<i32, Vec<(usize, &Msg)>> = BTreeMap::new();
    for (i, m) in sent.iter().enumerate() {
        expected.entry(m.partition).or_default().push((i, m));
    }
    let mut actual: BTreeMap<i32, Vec<&Consumed>> = BTreeMap::new();
    for c in got {
        actual.entry(c.msg.partition).or_default().push(c);
    }
    let summary = |m: &BTreeMap<i32, usize>| format!("{m:?}");
    let exp_counts: BTreeMap<i32, usize> = expected.iter().map(|(p, v)| (*p, v.len())).collect();
    let got_counts: BTreeMap<i32, usize> = actual.iter().map(|(p, v)| (*p, v.len())).collect();
    assert_eq!(
        got.len(),
        sent.len(),
        "consumed {} of {} messages; per partition got {} expected {}; poll errors: {errors:?}",
        got.len(),
        sent.len(),
        summary(&got_counts),
        summary(&exp_counts)
    );
    for (p, exp) in &expected {
        let act = actual.get(p).map(|v| v.as_slice()).unwrap_or(&[]);
        assert_eq!(act.len(), exp.len(), "partition {p} message count");
        let mut prev_offset = -1i64;
        for (j, ((i, m), c)) in exp.iter().zip(act.iter()).enumerate() {
            assert!(
                c.offset > prev_offset,
                "partition {p}: offsets not increasing at #{j}: {} after {prev_offset}",
                c.offset
            );
            prev_offset = c.offset;
            if let Some(d) = deliveries {
                let d = &d[*i];
                if d.offset >= 0 {
                    assert_eq!(
                        (d.partition, d.offset),
                        (*p, c.offset),
                        "partition {p} #{j}: delivery report offset vs consumed offset"
                    );
                }
            }
            if c.msg != **m {
                panic!(
                    "partition {p} #{j} (offset {}, sent #{i}) differs:\n sent key={:?} payload_len={:?} headers={:?}\n got  key={:?} payload_len={:?} headers={:?}\n payload equal: {}",
                    c.offset,
                    m.key,
                    m.payload.as_ref().map(|v| v.len()),
                    m.headers,
                    c.msg.key,
                    c.msg.payload.as_ref().map(|v| v.len()),
                    c.msg.headers,
                    m.payload == c.msg.payload
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Raw wire framing

pub fn raw_connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to broker");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Encodes a request frame (size prefix + header + body) for a known API.
pub fn encode_request<B: Encodable>(
    api_key: i16,
    version: i16,
    header_version: i16,
    correlation_id: i32,
    body: &B,
) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-it-raw")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, header_version).expect("encode header");
    body.encode(&mut buf, version).expect("encode body");
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

/// One acks=all Produce (v9) of `batch` to `topic`/`partition` on `port`, over a fresh
/// connection that waits at most `read_timeout` for the answer: (error code, base offset), or
/// None when the broker could not be reached or did not answer.
pub fn produce_acks_all(
    port: u16,
    (topic, partition): (&str, i32),
    batch: Bytes,
    timeout_ms: i32,
    read_timeout: Duration,
) -> Option<(i16, i64)> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseHeader, TopicName};
    const VERSION: i16 = 9;
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(read_timeout)).ok()?;
    let data = vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))];
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(timeout_ms).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(data),
    ]);
    let resp = roundtrip(&mut s, &encode_request(0, VERSION, 2, 1, &req)).ok()?;
    let mut buf = Bytes::from(resp);
    ResponseHeader::decode(&mut buf, 1).ok()?;
    let r = ProduceResponse::decode(&mut buf, VERSION).ok()?;
    let p = r.responses.first()?.partition_responses.first()?.clone();
    Some((p.error_code, p.base_offset))
}

/// Writes `frame` and reads one response frame (without its size prefix).
pub fn roundtrip(s: &mut TcpStream, frame: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(frame)?;
    read_frame(s)
}

/// Reads one size-prefixed frame; rejects absurd sizes.
pub fn read_frame(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(0..=64 << 20).contains(&len) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("response frame size {len}")));
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// Waits until the peer closes `s` (EOF or reset) or `timeout` elapses.
/// Returns Ok(bytes read before close) or Err(description) if still open.
pub fn wait_closed(s: &mut TcpStream, timeout: Duration) -> Result<usize, String> {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + timeout;
    let mut total = 0usize;
    let mut buf = [0u8; 4096];
    for _ in 0..100_000 {
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(total)
            }
            Err(e) => return Err(format!("read error {e}")),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(format!("connection still open after {timeout:?} ({total} bytes received)"))
}

/// Client-level errors the producer reported so far.
pub fn producer_errors(p: &TestProducer) -> Vec<String> {
    p.context().base.client_errors.lock().unwrap().clone()
}

/// Checks an ApiVersions v3 response frame (header v0 + body): the correlation id and no error.
pub fn check_api_versions(resp: &[u8], corr: i32) -> Result<(), String> {
    let mut buf = bytes::Bytes::copy_from_slice(resp);
    let h = kafka_protocol::messages::ResponseHeader::decode(&mut buf, 0).map_err(|e| e.to_string())?;
    if h.correlation_id != corr {
        return Err(format!("correlation id {} != {corr}", h.correlation_id));
    }
    let r = kafka_protocol::messages::ApiVersionsResponse::decode(&mut buf, 3).map_err(|e| e.to_string())?;
    if r.error_code != 0 {
        return Err(format!("ApiVersions error code {}", r.error_code));
    }
    Ok(())
}

/// One uncompressed Kafka v2 record batch (CRC-32C computed by kafka-protocol, base offset 0)
/// holding one small record per entry of `offsets`, keyed `{tag}-k{offset}`. The encoder writes
/// lastOffsetDelta = max - min and recordCount = offsets.len(), so offsets with a gap give an
/// intact batch whose count does not match its offset range. No producer id, so the base
/// sequence is not checked; each record's sequence equals its offset because kafka-protocol
/// starts a new batch where `offset - sequence` changes, and Kafka (and sluice) take one v2
/// batch per partition.
pub fn record_batch_at(offsets: &[i64], tag: &str) -> Bytes {
    let records: Vec<Record> = offsets
        .iter()
        .map(|&offset| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: i32::try_from(offset).expect("test offsets fit an i32"),
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from(format!("{tag}-k{offset}"))),
            value: Some(Bytes::from(format!("{tag}-v{offset}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode record batch");
    buf.freeze()
}

// ---------------------------------------------------------------------------
// Clusters of brokers on loopback

/// The cluster id every multi-broker test uses.
pub const CLUSTER_ID: &str = "MkU3OEVBNTcwNTJENDM2Qk";

/// Free loopback ports (bound then released; the kernel does not hand them out again at once).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// `--controller-quorum-voters` for members `0..n` listening for peers on `peer_ports`.
pub fn voters(peer_ports: &[u16]) -> String {
    peer_ports.iter().enumerate().map(|(i, p)| format!("{i}@127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
}

/// What differs between the suites' cluster members.
pub struct MemberOpts<'a> {
    /// Prefix of the member's temporary data directory.
    pub dir_prefix: &'a str,
    /// `--peer-session-timeout-ms`.
    pub session_ms: u64,
    /// Extra environment of the broker process.
    pub env: &'a [(&'a str, &'a str)],
    /// A config file (`--config`), if any.
    pub config: Option<&'a std::path::Path>,
}

/// Starts broker `node` (one core) of a cluster whose members listen for peers on
/// `peer_ports`, heartbeats every 100 ms, no metrics listener.
pub fn cluster_member(node: usize, peer_ports: &[u16], opts: &MemberOpts<'_>) -> sluice_tests::Broker {
    let dir = tempfile::Builder::new().prefix(opts.dir_prefix).tempdir().expect("temp dir");
    let (node_id, peer) = (node.to_string(), format!("127.0.0.1:{}", peer_ports[node]));
    let (voters, session) = (voters(peer_ports), opts.session_ms.to_string());
    let mut args = vec![
        "--node-id",
        &node_id,
        "--peer-listen",
        &peer,
        "--controller-quorum-voters",
        &voters,
        "--cluster-id",
        CLUSTER_ID,
        "--peer-heartbeat-interval-ms",
        "100",
        "--peer-session-timeout-ms",
        &session,
        "--metrics-listen",
        "",
    ];
    if let Some(config) = opts.config {
        args.extend(["--config", config.to_str().expect("utf-8 path")]);
    }
    sluice_tests::Broker::start_with_env(dir, 1, &args, opts.env)
}

/// One request/response exchange at `version` on a fresh connection (40 s read timeout).
pub fn call<Q, A>(port: u16, key: kafka_protocol::messages::ApiKey, version: i16, req: &Q) -> A
where
    Q: Encodable + kafka_protocol::protocol::HeaderVersion,
    A: kafka_protocol::protocol::Decodable + kafka_protocol::protocol::HeaderVersion,
{
    let mut s = raw_connect(port);
    s.set_read_timeout(Some(Duration::from_secs(40))).expect("timeout");
    let frame = encode_request(key as i16, version, Q::header_version(version), 1, req);
    let resp = roundtrip(&mut s, &frame).expect("round trip");
    let mut buf = bytes::Bytes::from(resp);
    kafka_protocol::messages::ResponseHeader::decode(&mut buf, A::header_version(version)).expect("response header");
    A::decode(&mut buf, version).expect("response body")
}

/// AlterPartitionReassignments v1 for one partition of `topic` (None cancels): its error code.
pub fn alter_reassignment(port: u16, topic: &str, partition: i32, target: Option<Vec<i32>>) -> i16 {
    use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId, TopicName,
    };
    let p = ReassignablePartition::default()
        .with_partition_index(partition)
        .with_replicas(target.map(|t| t.into_iter().map(BrokerId).collect()));
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let t = ReassignableTopic::default().with_name(name).with_partitions(vec![p]);
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_allow_replication_factor_change(true)
        .with_topics(vec![t]);
    let r: AlterPartitionReassignmentsResponse = call(port, ApiKey::AlterPartitionReassignments, 1, &req);
    assert_eq!(r.error_code, 0, "top-level error {:?}", r.error_message);
    r.responses[0].partitions[0].error_code
}
