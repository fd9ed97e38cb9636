//! Fetch long poll: a consumer waiting with fetch.wait.max.ms=5000 on an
//! empty partition is woken by new data well before the wait expires.

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset};
use sluice_tests::Broker;

use crate::common::*;

/// Upper bound for "woken by new data" (the fetch wait is 5 s).
const WAKE_BOUND: Duration = Duration::from_millis(2500);

fn long_poll_wakes(cores: usize, partitions: i32, part: i32) {
    let _slot = exclusive_slot();
    let mut broker = Broker::start(cores);
    let addr = broker.addr();
    let topic = topic_name("longpoll");
    create_topic(&addr, &topic, partitions);

    // Producer connected and topic metadata known before the clock starts.
    let p = producer(&addr, "1");
    p.client().fetch_metadata(Some(&topic), OP_TIMEOUT).expect("producer metadata");

    let c = consumer_with(&addr, &[("fetch.wait.max.ms", "5000"), ("fetch.min.bytes", "1")]);
    assign(&c, &topic, &[(part, Offset::Offset(0))]);
    // Let the consumer connect and park a Fetch on the empty partition.
    let (early, errors) = consume_n(&c, 1, Duration::from_millis(1500));
    assert!(early.is_empty(), "empty partition returned data: {early:?}");
    assert!(errors.is_empty(), "consumer errors while idle: {errors:?}");

    let payload = b"wake-up".to_vec();
    let t0 = Instant::now();
    p.send(
        BaseRecord::<[u8], [u8], usize>::with_opaque_to(&topic, 0)
            .partition(part)
            .key(b"k".as_slice())
            .payload(payload.as_slice()),
    )
    .map_err(|(e, _)| e)
    .expect("send");
    p.poll(Duration::ZERO);

    let mut got = None;
    let deadline = t0 + Duration::from_secs(10);
    for _ in 0..1000 {
        if Instant::now() >= deadline {
            break;
        }
        match c.poll(Duration::from_millis(10)) {
            Some(Ok(m)) => {
                got = Some((t0.elapsed(), m.offset(), m.payload().map(|v| v.to_vec())));
                break;
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => p.poll(Duration::ZERO),
        }
    }
    let (elapsed, offset, got_payload) =
        got.expect("message produced during the long poll was not consumed within 10 s");
    assert_eq!(offset, 0);
    assert_eq!(got_payload, Some(payload));
    flush(&p);
    take_deliveries(&p, 0, 1);
    assert!(
        elapsed < WAKE_BOUND,
        "long-polling consumer received the new message after {elapsed:?}, expected < {WAKE_BOUND:?} \
         (fetch.wait.max.ms=5000: the parked Fetch was not woken by the produce)"
    );
    drop(c);
    drop(p);
    broker.stop();
}

#[test]
fn long_poll_woken_by_produce() {
    long_poll_wakes(1, 1, 0);
}

/// Partition 1 of a 3-partition topic lives on shard 1 with --cores 2: the
/// wake-up must work when the data lands on a shard other than shard 0.
#[test]
fn long_poll_woken_by_produce_on_second_shard() {
    long_poll_wakes(2, 3, 1);
}
