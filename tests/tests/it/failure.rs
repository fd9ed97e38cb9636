//! The failure policy: a panic in one shard aborts the whole process at once, and the broker
//! started again on the same data dir and port recovers every acknowledged record.
//!
//! Needs the `fault-injection` feature of sluice-net in the binary under test (this crate
//! enables it, so a workspace build has it; alone: `cargo build --release -p sluice
//! --features fault-injection`). `SLUICE_FAULT_PANIC_SHARD=1:<n>` makes shard 1 panic in its
//! produce path after `n` partition appends while an acks=all producer keeps it busy.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;
use sluice_tests::Broker;

use crate::common::*;

const PARTITIONS: i32 = 4;
const MAX_MESSAGES: usize = 60_000;
const FAULT_AFTER_APPENDS: &str = "1:40";

/// When the panic line first showed in stderr and when the process was seen gone.
#[derive(Default)]
struct Watch {
    panic_seen: Option<Instant>,
    exit_seen: Option<Instant>,
}

impl Watch {
    fn look(&mut self, broker: &mut Broker) {
        if self.panic_seen.is_none() && broker.current_stderr().contains("panicked") {
            self.panic_seen = Some(Instant::now());
        }
        if self.exit_seen.is_none() && !broker.is_running() {
            self.exit_seen = Some(Instant::now());
        }
    }
}

fn send_one(p: &TestProducer, topic: &str, m: &Msg, id: usize) -> bool {
    let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, id).partition(m.partition);
    if let Some(k) = &m.key {
        rec = rec.key(k.as_slice());
    }
    if let Some(v) = &m.payload {
        rec = rec.payload(v.as_slice());
    }
    match p.send(rec) {
        Ok(()) => true,
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
            p.poll(Duration::from_millis(5));
            false
        }
        Err((e, _)) => panic!("send {id}: {e}"),
    }
}

#[test]
fn shard_panic_aborts_the_process_and_a_restart_recovers_acked_records() {
    let _slot = shared_slot();
    let dir = tempfile::Builder::new().prefix("sluice-it-").tempdir().expect("temp dir");
    let mut broker = Broker::start_with_env(dir, 2, &[], &[("SLUICE_FAULT_PANIC_SHARD", FAULT_AFTER_APPENDS)]);
    assert!(
        broker.current_stderr().contains("fault injection armed"),
        "the binary under test lacks the fault-injection feature \
         (build it with `cargo build --release -p sluice --features fault-injection`)"
    );
    let topic = topic_name("shard-panic");
    create_topic(&broker.addr(), &topic, PARTITIONS);
    let port = broker.port();
    let p = producer_with(&broker.addr(), "all", &[("message.timeout.ms", "20000"), ("linger.ms", "2")]);
    let msgs: Vec<Msg> = (0..MAX_MESSAGES).map(|i| make_msg(i, PARTITIONS, 77)).collect();

    let mut watch = Watch::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while i < msgs.len() && watch.exit_seen.is_none() && Instant::now() < deadline {
        if send_one(&p, &topic, &msgs[i], i) {
            i += 1;
        }
        if i % 20 == 0 {
            p.poll(Duration::ZERO);
            watch.look(&mut broker);
        }
    }
    for _ in 0..3000 {
        if watch.exit_seen.is_some() || Instant::now() >= deadline {
            break;
        }
        p.poll(Duration::from_millis(10));
        watch.look(&mut broker);
    }
    let stderr = broker.current_stderr();
    let (Some(panicked), Some(exited)) = (watch.panic_seen.or(watch.exit_seen), watch.exit_seen) else {
        panic!("the broker did not exit after the injected panic (sent {i}){}", broker.log_tail(8192));
    };
    assert!(
        exited.saturating_duration_since(panicked) <= Duration::from_secs(1),
        "the process outlived the panic by {:?}",
        exited - panicked
    );
    let status = broker.wait_for_exit(Duration::from_secs(5)).expect("exit status");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "the process aborts (SIGABRT): {status}\n{stderr}");
    assert!(
        stderr.contains("thread sluice-shard-1 panicked")
            && stderr.contains("injected fault: shard 1 panics in its produce path"),
        "stderr names the shard's thread and the panic:\n{stderr}"
    );

    // Whatever the producer still holds fails; the acknowledged records are what must survive.
    p.purge(PurgeConfig::default().queue().inflight());
    for _ in 0..50 {
        p.poll(Duration::from_millis(20));
    }
    let reports = std::mem::take(&mut *p.context().delivered.lock().unwrap());
    drop(p);
    let acked: Vec<&Delivered> = reports.iter().filter(|d| d.error.is_none()).collect();
    eprintln!("sent {i}, {} reports, {} acknowledged before the panic", reports.len(), acked.len());
    assert!(!acked.is_empty(), "some records were acknowledged before the panic");

    broker.set_env(&[]);
    broker.start_again_same_port();
    assert_eq!(broker.port(), port);
    let addr = broker.addr();
    let c = consumer(&addr);
    let mut total = 0;
    for part in 0..PARTITIONS {
        let (lo, hi) = c.fetch_watermarks(&topic, part, OP_TIMEOUT).expect("watermarks after restart");
        assert_eq!(lo, 0);
        total += hi as usize;
    }
    assign(&c, &topic, &(0..PARTITIONS).map(|p| (p, Offset::Beginning)).collect::<Vec<_>>());
    let (got, errors) = consume_n(&c, total, Duration::from_secs(60));
    assert_eq!(got.len(), total, "consumed everything up to the high watermarks; errors {errors:?}");
    let at: HashMap<(i32, i64), &Msg> = got.iter().map(|c| ((c.msg.partition, c.offset), &c.msg)).collect();
    assert_eq!(at.len(), got.len(), "no offset read twice");
    for d in &acked {
        let want = &msgs[d.id];
        assert_eq!(d.partition, want.partition);
        let found = at.get(&(d.partition, d.offset)).unwrap_or_else(|| {
            panic!("acknowledged record {} at {}/{} is missing after the restart", d.id, d.partition, d.offset)
        });
        assert_eq!(found.key, want.key, "record at {}/{}", d.partition, d.offset);
        assert_eq!(found.payload, want.payload, "record at {}/{}", d.partition, d.offset);
    }
    broker.stop();
}
