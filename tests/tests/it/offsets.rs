//! ListOffsets: earliest/latest watermarks and offsets_for_times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::Consumer;
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::Broker;

use crate::common::*;

#[test]
fn watermarks_match_produced_counts() {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let topic = topic_name("watermarks");
    create_topic(&addr, &topic, 3);
    let c = consumer(&addr);
    for part in 0..3 {
        let wm = c.fetch_watermarks(&topic, part, OP_TIMEOUT).expect("watermarks of empty partition");
        assert_eq!(wm, (0, 0), "{topic}/{part} watermarks before producing");
    }
    // 0, 1 and 2 of every 6 messages go to partitions 0, 1 and 2 in
    // proportions 1:2:3 -> counts 100, 200, 300.
    let sent: Vec<Msg> = (0..600)
        .map(|i| {
            let mut m = make_msg(i, 1, 31);
            m.partition = match i % 6 {
                0 => 0,
                1 | 2 => 1,
                _ => 2,
            };
            m
        })
        .collect();
    let p = producer(&addr, "1");
    send_all(&p, &topic, &sent, 0);
    take_deliveries(&p, 0, sent.len());
    for (part, want) in [(0, 100), (1, 200), (2, 300)] {
        let wm = c.fetch_watermarks(&topic, part, OP_TIMEOUT).expect("watermarks");
        assert_eq!(wm, (0, want), "{topic}/{part} (low, high) watermarks");
    }
    drop(p);
    drop(c);
    broker.stop();
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn offset_for_time(c: &TestConsumer, topic: &str, part: i32, ts: i64) -> Offset {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, part, Offset::Offset(ts)).unwrap();
    let r = c.offsets_for_times(tpl, OP_TIMEOUT).unwrap_or_else(|e| panic!("offsets_for_times({ts}) failed: {e}"));
    let e = r
        .elements_for_topic(topic)
        .into_iter()
        .find(|e| e.partition() == part)
        .expect("partition in offsets_for_times result");
    e.error().unwrap_or_else(|err| panic!("offsets_for_times({ts}) partition error: {err}"));
    e.offset()
}

#[test]
fn offsets_for_times_finds_first_offset_at_or_after_timestamp() {
    let _slot = shared_slot();
    let mut broker = Broker::start(1);
    let addr = broker.addr();
    let topic = topic_name("times");
    create_topic(&addr, &topic, 1);

    // 20 messages with CreateTime base + i*1000 ms: the first 10 each in its
    // own request, the last 10 in one batch.
    let base = now_ms() - 3_600_000;
    let p = producer(&addr, "1");
    for i in 0..20usize {
        let payload = format!("m{i}");
        p.send(
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(&topic, i)
                .partition(0)
                .payload(payload.as_bytes())
                .timestamp(base + i as i64 * 1000),
        )
        .map_err(|(e, _)| e)
        .expect("send");
        if i < 10 {
            flush(&p);
        }
    }
    flush(&p);
    let d = take_deliveries(&p, 0, 20);
    let offsets: Vec<i64> = d.iter().map(|d| d.offset).collect();
    assert_eq!(offsets, (0..20).collect::<Vec<i64>>(), "delivery offsets");

    let c = consumer(&addr);
    assert_eq!(c.fetch_watermarks(&topic, 0, OP_TIMEOUT).expect("watermarks"), (0, 20));
    // Collect every mismatch, then fail with all of them.
    let mut cases: Vec<(String, i64, Offset)> = vec![("before everything".into(), base - 10_000, Offset::Offset(0))];
    for k in [0i64, 1, 5, 9, 10, 11, 15, 19] {
        cases.push((format!("base+{k}s (exact)"), base + k * 1000, Offset::Offset(k)));
        if k > 0 {
            cases.push((format!("base+{k}s-500ms"), base + k * 1000 - 500, Offset::Offset(k)));
        }
    }
    // After the newest message -> no offset (Offset::End, i.e. -1).
    cases.push(("after the last message".into(), base + 60_000, Offset::End));
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(name, ts, want)| {
            let got = offset_for_time(&c, &topic, 0, *ts);
            (got != *want).then(|| format!("{name}: got {got:?}, want {want:?}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "offsets_for_times (records 0-9 one per request, 10-19 in one batch; \
         record i has CreateTime base+i s):\n{}",
        wrong.join("\n")
    );

    // The consumed timestamps are the CreateTimes we set.
    assign(&c, &topic, &[(0, Offset::Beginning)]);
    let (got, errors) = consume_n(&c, 20, Duration::from_secs(30));
    assert_eq!(got.len(), 20, "consumed; errors {errors:?}");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset, i as i64);
        assert_eq!(m.timestamp, Some(base + i as i64 * 1000), "timestamp of offset {i}");
    }
    drop(p);
    drop(c);
    broker.stop();
}
