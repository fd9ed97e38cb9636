//! Hostile clients on raw sockets. Every abusive connection must get an
//! error answer or be closed (never crash or wedge the broker), and a normal
//! rdkafka producer + consumer on the side must keep being served (asserted
//! after every case). Broker RSS is measured from /proc/PID/status around the
//! memory-relevant cases and printed.

use std::io::{self, ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, FetchRequest, MetadataRequest, ProduceRequest, ProduceResponse, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::producer::Producer;
use rdkafka::Offset;
use sluice_tests::{rss_kib, Broker};

use crate::common::*;

fn rss(b: &Broker) -> u64 {
    rss_kib(b.pid()).unwrap_or(0)
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn api_versions_frame(corr: i32) -> Vec<u8> {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-hostile"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    encode_request(18, 3, 2, corr, &req)
}

fn api_versions_ok(s: &mut TcpStream, corr: i32) -> Result<(), String> {
    let resp = roundtrip(s, &api_versions_frame(corr)).map_err(|e| format!("ApiVersions roundtrip: {e}"))?;
    check_api_versions(&resp, corr)
}

/// A Kafka v2 record batch of `n` small records at offsets 0..n.
fn record_batch(n: usize, tag: &str) -> Bytes {
    let offsets: Vec<i64> = (0..n).map(|i| i64::try_from(i).expect("record count fits an i64")).collect();
    record_batch_at(&offsets, tag)
}

fn produce_frame(corr: i32, topic: &str, partition: i32, batch: Bytes) -> Vec<u8> {
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))]),
    ]);
    encode_request(0, 9, 2, corr, &req)
}

fn check_produce(resp: &[u8], corr: i32) -> Result<i64, String> {
    let mut buf = Bytes::copy_from_slice(resp);
    let h = ResponseHeader::decode(&mut buf, 1).map_err(|e| e.to_string())?;
    if h.correlation_id != corr {
        return Err(format!("correlation id {} != {corr}", h.correlation_id));
    }
    let r = ProduceResponse::decode(&mut buf, 9).map_err(|e| e.to_string())?;
    let p = r
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .ok_or_else(|| "empty produce response".to_string())?;
    if p.error_code != 0 {
        return Err(format!("produce error code {} ({:?})", p.error_code, p.error_message));
    }
    Ok(p.base_offset)
}

fn fetch_frame(corr: i32, topic: &str, partition: i32, max_bytes: i32) -> Vec<u8> {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(max_bytes)])]);
    encode_request(1, 12, 2, corr, &req)
}

fn metadata_frame(corr: i32, topic: &str) -> Vec<u8> {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))
        ]))
        .with_allow_auto_topic_creation(false);
    encode_request(3, 12, 2, corr, &req)
}

/// A raw frame with a v1 header and an arbitrary body.
fn raw_frame(api_key: i16, version: i16, corr: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&api_key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&corr.to_be_bytes());
    f.extend_from_slice(&(7i16).to_be_bytes());
    f.extend_from_slice(b"hostile");
    f.extend_from_slice(body);
    let n = (f.len() - 4) as i32;
    f[0..4].copy_from_slice(&n.to_be_bytes());
    f
}

/// Reads one response frame or reports that the connection closed / timed out.
fn answer_or_close(s: &mut TcpStream, timeout: Duration) -> Result<Option<Vec<u8>>, String> {
    s.set_read_timeout(Some(timeout)).unwrap();
    match read_frame(s) {
        Ok(f) => Ok(Some(f)),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("neither an answer nor a close within {timeout:?}: {e}")),
    }
}

/// The well-behaved rdkafka clients on the side.
struct Side {
    topic: String,
    p: TestProducer,
    c: TestConsumer,
    next_id: usize,
    sent: Vec<Msg>,
}

impl Side {
    fn new(addr: &str) -> Side {
        let topic = topic_name("hostile-side");
        create_topic(addr, &topic, 2);
        let p = producer(addr, "all");
        let c = consumer(addr);
        assign(&c, &topic, &[(0, Offset::Beginning), (1, Offset::Beginning)]);
        Side { topic, p, c, next_id: 0, sent: Vec::new() }
    }

    /// One produce (acks=all) + consume round trip; panics with `case` on failure.
    fn check(&mut self, broker: &mut Broker, case: &str) {
        assert!(broker.is_running(), "broker died during hostile case {case}{}", broker.log_tail(8192));
        let batch: Vec<Msg> = (0..50).map(|i| make_msg(self.next_id + i, 2, 77)).collect();
        send_all(&self.p, &self.topic, &batch, self.next_id);
        take_deliveries(&self.p, self.next_id, batch.len());
        self.next_id += batch.len();
        let (got, errors) = consume_n(&self.c, batch.len(), Duration::from_secs(30));
        if got.len() != batch.len() {
            panic!(
                "side consumer got {} of {} messages after hostile case {case}; errors {errors:?}{}",
                got.len(),
                batch.len(),
                broker.log_tail(4096)
            );
        }
        verify(&batch, None, &got, &errors);
        self.sent.extend(batch);
    }
}

#[test]
fn hostile_frames_close_or_answer_and_others_are_served() {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let port = broker.port();
    let mut side = Side::new(&addr);
    side.check(&mut broker, "baseline");
    let raw_topic = topic_name("hostile-raw");
    create_topic(&addr, &raw_topic, 2);
    let mut report: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();

    // 1. Half a frame, then close.
    {
        let f = api_versions_frame(1);
        let mut s = raw_connect(port);
        s.write_all(&f[..f.len() / 2]).unwrap();
        drop(s);
        side.check(&mut broker, "half frame then close");
    }

    // 2. Half a frame, then wait (the others are served meanwhile), then the rest.
    {
        let f = api_versions_frame(2);
        let mut s = raw_connect(port);
        s.write_all(&f[..f.len() / 2]).unwrap();
        side.check(&mut broker, "half frame, stalled (during the stall)");
        std::thread::sleep(Duration::from_secs(2));
        side.check(&mut broker, "half frame, stalled 2 s");
        match s
            .write_all(&f[f.len() / 2..])
            .map_err(|e| e.to_string())
            .and_then(|_| answer_or_close(&mut s, Duration::from_secs(10)))
        {
            Ok(Some(resp)) => match check_api_versions(&resp, 2) {
                Ok(()) => report.push("stalled half frame completed later: answered correctly".into()),
                Err(e) => failures.push(format!("stalled half frame completed later: bad answer: {e}")),
            },
            Ok(None) => report.push("stalled half frame: broker closed the connection".into()),
            Err(e) => failures.push(format!("stalled half frame completed later: {e}")),
        }
    }

    // 3. Size fields: 2 GiB - 1 followed by 4 MiB of bytes, 2 GiB (i32::MIN as
    // unsigned), -1, 0. Each must be closed; the broker must not buffer 4 MiB.
    for (name, size) in
        [("size 0x7fffffff", 0x7fff_ffffi32), ("size 0x80000000 (2 GiB)", i32::MIN), ("size -1", -1), ("size 0", 0)]
    {
        let before = rss(&broker);
        let mut s = raw_connect(port);
        let mut head = size.to_be_bytes().to_vec();
        head.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 9]);
        s.write_all(&head).unwrap();
        let chunk = vec![0x41u8; 64 * 1024];
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut pushed = 0usize;
        for _ in 0..64 {
            if s.write_all(&chunk).is_err() {
                break;
            }
            pushed += chunk.len();
        }
        match wait_closed(&mut s, Duration::from_secs(5)) {
            Ok(_) => report.push(format!(
                "{name}: closed ({pushed} trailing bytes accepted by the socket before close); RSS {before} -> {} KiB",
                rss(&broker)
            )),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        side.check(&mut broker, name);
    }

    // 5. Unknown API keys and versions on one connection: each answered with
    // its correlation id, the connection stays usable.
    {
        let mut s = raw_connect(port);
        for (i, (key, ver)) in
            [(9999i16, 0i16), (32767, 0), (-1, 0), (100, 5), (0, 99), (1, 999), (3, -1)].iter().enumerate()
        {
            let corr = 5000 + i as i32;
            s.write_all(&raw_frame(*key, *ver, corr, &[1, 2, 3, 4])).unwrap();
            match answer_or_close(&mut s, Duration::from_secs(5)) {
                Ok(Some(resp)) if resp.len() >= 4 && i32::from_be_bytes(resp[..4].try_into().unwrap()) == corr => {
                    let code = if resp.len() >= 6 { i16::from_be_bytes(resp[4..6].try_into().unwrap()) } else { -999 };
                    report.push(format!("api key {key} v{ver}: answered, first i16 after header {code}"));
                }
                Ok(Some(resp)) => failures
                    .push(format!("api key {key} v{ver}: answer with wrong correlation id ({} bytes)", resp.len())),
                Ok(None) => {
                    report.push(format!("api key {key} v{ver}: connection closed"));
                    s = raw_connect(port);
                }
                Err(e) => failures.push(format!("api key {key} v{ver}: {e}")),
            }
            if let Err(e) = api_versions_ok(&mut s, 6000 + i as i32) {
                failures.push(format!("ApiVersions on the same connection after api key {key} v{ver}: {e}"));
                s = raw_connect(port);
            }
        }
        side.check(&mut broker, "unknown api keys");
    }

    // 6. Garbage after a valid request inside the same frame, and a garbage
    // frame right after a valid one in the same write.
    {
        let topic = raw_topic.clone();
        let mut cases: Vec<(String, Vec<u8>, i32)> = Vec::new();
        for (name, mut f, corr) in [
            ("ApiVersions v3", api_versions_frame(700), 700),
            ("Metadata v12", metadata_frame(701, &topic), 701),
            ("Produce v9", produce_frame(702, &topic, 0, record_batch(3, "garbage-tail")), 702),
        ] {
            f.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef].repeat(16));
            let n = (f.len() - 4) as i32;
            f[0..4].copy_from_slice(&n.to_be_bytes());
            cases.push((format!("{name} + 64 garbage bytes inside the frame"), f, corr));
        }
        let mut f = api_versions_frame(703);
        f.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        cases.push(("valid ApiVersions frame then HTTP garbage in the same write".into(), f, 703));
        for (name, f, corr) in cases {
            let mut s = raw_connect(port);
            s.write_all(&f).unwrap();
            match answer_or_close(&mut s, Duration::from_secs(5)) {
                Ok(Some(resp)) => {
                    let got = i32::from_be_bytes(resp[..4].try_into().unwrap_or([0; 4]));
                    let tail = wait_closed(&mut s, Duration::from_secs(3));
                    report.push(format!(
                        "{name}: answered (corr {got}, expected {corr}, {} bytes); afterwards {}",
                        resp.len(),
                        match tail {
                            Ok(_) => "closed".to_string(),
                            Err(_) => "still open".to_string(),
                        }
                    ));
                    if got != corr {
                        failures.push(format!("{name}: answer carries correlation id {got}"));
                    }
                }
                Ok(None) => report.push(format!("{name}: closed without an answer")),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
            side.check(&mut broker, &name);
        }
    }

    // 7. Valid requests split into 1-byte writes (ApiVersions, Metadata, and a
    // Produce whose records must then be readable), pipelined.
    {
        let mut s = raw_connect(port);
        let mut all = api_versions_frame(800);
        all.extend(metadata_frame(801, &raw_topic));
        all.extend(produce_frame(802, &raw_topic, 1, record_batch(5, "tiny-writes")));
        let t0 = Instant::now();
        for b in &all {
            s.write_all(std::slice::from_ref(b)).unwrap();
        }
        let r1 = answer_or_close(&mut s, Duration::from_secs(10));
        let r2 = answer_or_close(&mut s, Duration::from_secs(10));
        let r3 = answer_or_close(&mut s, Duration::from_secs(10));
        match (r1, r2, r3) {
            (Ok(Some(a)), Ok(Some(m)), Ok(Some(p))) => {
                if let Err(e) = check_api_versions(&a, 800) {
                    failures.push(format!("1-byte writes: ApiVersions: {e}"));
                }
                if m.len() < 4 || i32::from_be_bytes(m[..4].try_into().unwrap()) != 801 {
                    failures.push("1-byte writes: Metadata answer has the wrong correlation id".into());
                }
                match check_produce(&p, 802) {
                    Ok(off) => report.push(format!(
                        "{} requests ({} bytes) in 1-byte writes: all answered in {:?}, produce base offset {off}",
                        3,
                        all.len(),
                        t0.elapsed()
                    )),
                    Err(e) => failures.push(format!("1-byte writes: Produce: {e}")),
                }
            }
            other => failures.push(format!("1-byte writes: {other:?}")),
        }
        // The 5 records sent in 1-byte writes are readable.
        let c = consumer(&addr);
        assign(&c, &raw_topic, &[(1, Offset::Beginning)]);
        let (got, errors) = consume_n(&c, 5, Duration::from_secs(20));
        let keys: Vec<String> =
            got.iter().filter_map(|c| c.msg.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned())).collect();
        if keys != (0..5).map(|i| format!("tiny-writes-k{i}")).collect::<Vec<_>>() {
            failures.push(format!("records produced in 1-byte writes read back as {keys:?} (errors {errors:?})"));
        }
        side.check(&mut broker, "1-byte writes");
    }

    eprintln!("hostile report:\n  {}", report.join("\n  "));
    assert!(failures.is_empty(), "hostile input failures: {failures:#?}\nreport: {report:#?}{}", broker.log_tail(4096));
    assert!(broker.is_running(), "broker died");
    broker.stop();
}

/// Writes `frame` repeatedly without ever reading, until the socket stays
/// blocked for `stall` or `max` frames or `deadline`. Returns frames written.
fn flood_without_reading(s: &mut TcpStream, frame: &[u8], max: usize, deadline: Instant, stall: Duration) -> usize {
    s.set_nonblocking(true).unwrap();
    let mut n = 0;
    let mut pos = 0usize;
    let mut blocked_since: Option<Instant> = None;
    for _ in 0..50_000_000u64 {
        if n >= max || Instant::now() >= deadline {
            break;
        }
        match s.write(&frame[pos..]) {
            Ok(w) => {
                blocked_since = None;
                pos += w;
                if pos == frame.len() {
                    pos = 0;
                    n += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= stall {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break,
        }
    }
    s.set_nonblocking(false).unwrap();
    n
}

#[test]
fn client_that_never_reads_does_not_grow_broker_memory() {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let port = broker.port();
    let mut side = Side::new(&addr);
    // ~4 MiB in partition 0 of a big topic so each Fetch answer is ~1 MiB.
    let big = topic_name("hostile-big");
    create_topic(&addr, &big, 1);
    {
        let p = producer(&addr, "1");
        let msgs: Vec<Msg> = (0..3000).map(|i| make_msg(i, 1, 5)).collect();
        send_all(&p, &big, &msgs, 0);
        take_deliveries(&p, 0, msgs.len());
    }
    side.check(&mut broker, "baseline");
    let base = rss(&broker);

    let mut results = Vec::new();
    for (name, frame, max) in [
        ("Fetch (1 MiB answers)", fetch_frame(1, &big, 0, 1 << 20), 200_000usize),
        ("ApiVersions", api_versions_frame(2), 500_000),
        ("Metadata", metadata_frame(3, &big), 500_000),
    ] {
        let before = rss(&broker);
        let mut s = raw_connect(port);
        let deadline = Instant::now() + Duration::from_secs(15);
        let n = flood_without_reading(&mut s, &frame, max, deadline, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(500));
        let during = rss(&broker);
        side.check(&mut broker, &format!("never-reading {name} flood in progress"));
        drop(s);
        std::thread::sleep(Duration::from_millis(1000));
        let after = rss(&broker);
        let line = format!(
            "{name}: {n} requests ({} KiB) written before the socket stayed blocked 2 s or the cap; broker RSS {before} -> {during} KiB while open, {after} KiB after close",
            n * frame.len() / 1024
        );
        eprintln!("{line}");
        results.push((name, n, before, during, after, line));
        side.check(&mut broker, &format!("after never-reading {name} flood"));
    }
    let end = rss(&broker);
    eprintln!("never-reading clients: RSS at start {base} KiB, at end {end} KiB");
    for (name, n, before, during, _after, line) in &results {
        assert!(
            during.saturating_sub(*before) < 512 * 1024,
            "broker RSS grew by {} MiB while a client sent {n} {name} requests without reading: {line}",
            (during - before) / 1024
        );
    }
    broker.stop();
}

fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls with a valid pointer.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let target = want.min(lim.rlim_max);
        if lim.rlim_cur < target {
            lim.rlim_cur = target as _;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

#[test]
fn ten_thousand_idle_connections_and_fd_exhaustion() {
    let _slot = exclusive_slot();
    const N: usize = 10_000;
    let soft = raise_nofile(N as u64 + 4096);
    assert!(soft >= N as u64 + 1000, "cannot raise RLIMIT_NOFILE of the test process enough: {soft}");
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let port = broker.port();
    let pid = broker.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let broker_nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or("?").to_string();
    let mut side = Side::new(&addr);
    side.check(&mut broker, "baseline");
    let rss0 = rss(&broker);
    let fds0 = fd_count(pid);

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(90);
    let mut conns = Vec::with_capacity(N);
    let mut connect_errors = 0usize;
    for _ in 0..N * 2 {
        if conns.len() >= N || Instant::now() >= deadline {
            break;
        }
        match TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5)) {
            Ok(s) => conns.push(s),
            Err(_) => connect_errors += 1,
        }
    }
    let connected = conns.len();
    // Wait until the broker has accepted them (its fd count).
    let accepted = sluice_tests::retry_until(Duration::from_secs(30), 300, Duration::from_millis(100), || {
        (fd_count(pid) >= fds0 + connected).then_some(())
    });
    let fds1 = fd_count(pid);
    let rss1 = rss(&broker);
    eprintln!(
        "{connected} idle connections in {:?} ({connect_errors} connect errors); broker fds {fds0} -> {fds1}, \
         RSS {rss0} -> {rss1} KiB ({} B per connection); broker {broker_nofile}",
        t0.elapsed(),
        (rss1.saturating_sub(rss0) * 1024) / connected.max(1) as u64
    );
    assert_eq!(connected, N, "only {connected} of {N} connections could be opened ({connect_errors} errors)");
    assert!(accepted.is_some(), "broker holds {fds1} fds, expected >= {} after {N} connects", fds0 + N);
    // A fresh client (new connections) and the long-lived side clients work.
    side.check(&mut broker, "10000 idle connections open");
    {
        let fresh = topic_name("hostile-fresh");
        let p = producer(&addr, "all");
        let msgs: Vec<Msg> = (0..100).map(|i| make_msg(i, 1, 9)).collect();
        send_all(&p, &fresh, &msgs, 0);
        take_deliveries(&p, 0, msgs.len());
        consume_and_verify(&addr, &fresh, 1, &msgs, None, Duration::from_secs(30));
    }
    // Idle connections still get answers.
    for (i, s) in conns.iter_mut().step_by(1000).enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        api_versions_ok(s, 90_000 + i as i32)
            .unwrap_or_else(|e| panic!("idle connection #{} not served: {e}", i * 1000));
    }
    drop(conns);
    let released = sluice_tests::retry_until(Duration::from_secs(30), 300, Duration::from_millis(100), || {
        (fd_count(pid) <= fds0 + 50).then_some(())
    });
    let rss2 = rss(&broker);
    eprintln!("after closing them: broker fds {}, RSS {rss2} KiB", fd_count(pid));
    assert!(
        released.is_some(),
        "broker still holds {} fds 30 s after the clients closed (started with {fds0})",
        fd_count(pid)
    );
    side.check(&mut broker, "after closing 10000 connections");

    // fd exhaustion: lower the broker's RLIMIT_NOFILE to a little above what
    // it uses, open more connections than that, then close them: the broker
    // must recover (accept loop alive) and must not burn CPU meanwhile.
    let used = fd_count(pid) as u64;
    let low = used + 64;
    let lim = libc::rlimit { rlim_cur: low as _, rlim_max: soft as _ };
    // SAFETY: prlimit on the PID we spawned, valid pointer.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit on the broker failed: {}", io::Error::last_os_error());
    let mut extra = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)) {
            extra.push(s);
        }
    }
    let cpu = |pid: i32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
    };
    let c0 = cpu(pid);
    std::thread::sleep(Duration::from_secs(3));
    let c1 = cpu(pid);
    let ticks = c1 - c0;
    eprintln!(
        "broker at its fd limit ({low}) with {} pending connections: {ticks} CPU ticks in 3 s (100 = one core for 1 s); fds {}",
        extra.len(),
        fd_count(pid)
    );
    let stderr = broker.current_stderr();
    let emfile_lines = stderr.lines().filter(|l| l.contains("Too many open files") || l.contains("EMFILE")).count();
    eprintln!("broker stderr lines about EMFILE so far: {emfile_lines}");
    drop(extra);
    let lim = libc::rlimit { rlim_cur: soft as _, rlim_max: soft as _ };
    // SAFETY: as above.
    unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    std::thread::sleep(Duration::from_millis(500));
    side.check(&mut broker, "after fd exhaustion");
    {
        let fresh = topic_name("hostile-after-emfile");
        let p = producer(&addr, "all");
        let msgs: Vec<Msg> = (0..50).map(|i| make_msg(i, 1, 10)).collect();
        send_all(&p, &fresh, &msgs, 0);
        take_deliveries(&p, 0, msgs.len());
        consume_and_verify(&addr, &fresh, 1, &msgs, None, Duration::from_secs(30));
    }
    assert!(ticks < 250, "broker burned {ticks} CPU ticks in 3 s while at its fd limit (accept loop spinning?)");
    broker.stop();
}

/// Frames that declare the allowed maximum (100 MiB) but stall after the
/// 8-byte header: the broker reserves in-flight budget by declared size
/// before the body arrives, so a few such connections must not starve the
/// other clients of their shard.
#[test]
fn stalled_max_size_frames_do_not_starve_other_clients() {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let port = broker.port();
    let before = rss(&broker);
    let mut conns = Vec::new();
    for i in 0..40 {
        let mut s = raw_connect(port);
        let mut head = (100i32 << 20).to_be_bytes().to_vec();
        head.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, i as u8]);
        s.write_all(&head).unwrap();
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss(&broker);
    // 16 fresh raw connections (SO_REUSEPORT spreads them over both shards).
    let mut starved = Vec::new();
    for i in 0..16 {
        let mut s = raw_connect(port);
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        if let Err(e) = api_versions_ok(&mut s, 100 + i) {
            starved.push(format!("fresh connection #{i}: {e}"));
        }
    }
    // And an rdkafka round trip with bounded timeouts.
    let topic = topic_name("hostile-stalled");
    let p = producer_with(&addr, "all", &[("message.timeout.ms", "10000"), ("socket.timeout.ms", "10000")]);
    let msgs: Vec<Msg> = (0..20).map(|i| make_msg(i, 1, 3)).collect();
    let rdkafka_ok = {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| send_all(&p, &topic, &msgs, 0)));
        let d = std::mem::take(&mut *p.context().delivered.lock().unwrap());
        let ok = d.len() == msgs.len() && d.iter().all(|x| x.error.is_none());
        if !ok {
            starved.push(format!(
                "rdkafka producer while 40 connections stall in a 100 MiB frame header: {} of {} delivered ok; first error {:?}",
                d.iter().filter(|x| x.error.is_none()).count(),
                msgs.len(),
                d.iter().find_map(|x| x.error.clone())
            ));
        }
        ok
    };
    drop(p);
    drop(conns);
    std::thread::sleep(Duration::from_millis(500));
    eprintln!(
        "40 connections stalled after a 100 MiB size header: RSS {before} -> {during} KiB; rdkafka ok {rdkafka_ok}"
    );
    // After they are gone everything works again.
    let p = producer(&addr, "all");
    send_all(&p, &topic, &msgs, 1000);
    take_deliveries(&p, 1000, msgs.len());
    assert!(broker.is_running(), "broker died");
    assert!(
        starved.is_empty(),
        "clients starved while 40 connections each sent only the 8-byte header of a 100 MiB frame \
         (in-flight budget reserved by declared size before the body arrives?): {starved:#?}"
    );
    broker.stop();
}
