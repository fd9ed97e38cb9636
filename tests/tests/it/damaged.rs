//! A batch damaged on disk while the broker is stopped is never delivered: the broker checks a
//! batch's CRC-32C the first time it reads it from the device (not on every read: cached bytes
//! are checked once), so a consumer that does not check CRCs itself gets every batch before
//! the damaged one and never the damaged one.

use std::time::{Duration, Instant};

use rdkafka::Offset;
use sluice_tests::Broker;

use crate::common::*;

/// Batch boundaries of a segment file: (start, total length).
fn batches(file: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= file.len() {
        let len = i32::from_be_bytes(file[pos + 8..pos + 12].try_into().unwrap());
        let Ok(len) = usize::try_from(len) else { break };
        if len == 0 || pos + 12 + len > file.len() {
            break;
        }
        out.push((pos, 12 + len));
        pos += 12 + len;
    }
    out
}

#[test]
fn a_batch_damaged_while_stopped_is_never_delivered() {
    let _slot = shared_slot();
    let mut broker = Broker::start(1);
    let addr = broker.addr();
    let topic = topic_name("damaged");
    create_topic_with_configs(&addr, &topic, 1, &[("segment.bytes", "262144")]);
    let sent: Vec<Msg> = (0..800).map(|i| make_msg(i, 1, 29)).collect();
    {
        // Small batches, so the first segment holds many.
        let p = producer_with(&addr, "all", &[("batch.num.messages", "20")]);
        send_all(&p, &topic, &sent, 0);
        let d = take_deliveries(&p, 0, sent.len());
        assert!(d.iter().all(|x| x.error.is_none() && x.offset == x.id as i64), "contiguous offsets from 0");
    }
    broker.stop();

    // Flip a byte in the records of a batch in the middle of the first segment (sealed: a
    // clean start does not rescan it), inside what its CRC-32C covers.
    let dir = broker.data_dir().join(format!("{topic}-0"));
    let seg = dir.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).expect("first segment");
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
        .count();
    assert!(segments >= 2, "the first segment is sealed ({segments} segments)");
    let all = batches(&bytes);
    assert!(all.len() >= 4, "{} batches in the first segment", all.len());
    let (start, len) = all[all.len() / 2];
    let base = i64::from_be_bytes(bytes[start..start + 8].try_into().unwrap());
    let last_delta = i32::from_be_bytes(bytes[start + 23..start + 27].try_into().unwrap());
    let last = base + i64::from(last_delta);
    bytes[start + 61 + (len - 61) / 2] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();
    broker.start_again();
    let addr = broker.addr();

    // A consumer that does not check CRCs itself: the broker must not serve the batch.
    let c = consumer_with(&addr, &[("check.crcs", "false")]);
    assign(&c, &topic, &[(0, Offset::Beginning)]);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut got = Vec::new();
    for _ in 0..400 {
        if Instant::now() >= deadline {
            break;
        }
        let (more, _errors) = consume_n(&c, sent.len(), Duration::from_millis(500));
        got.extend(more);
    }
    for m in &got {
        assert!(
            m.offset < base || m.offset > last,
            "offset {} of the damaged batch {base}..={last} was delivered",
            m.offset
        );
        let want = &sent[usize::try_from(m.offset).unwrap()];
        assert_eq!(&m.msg, want, "offset {} delivered with other content", m.offset);
    }
    let before = got.iter().filter(|m| m.offset < base).count();
    assert_eq!(before, usize::try_from(base).unwrap(), "every record before the damaged batch is delivered");
    assert!(broker.is_running(), "the broker keeps running");
    let log = broker.log_tail(1 << 20);
    assert!(log.contains("damaged on disk"), "the damage is logged:\n{log}");
    drop(c);
    broker.stop();
}

fn create_topic_with_configs(addr: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let admin = admin(addr);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(20)));
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let res = block_on(admin.create_topics([&new], &opts), OP_TIMEOUT)
        .unwrap_or_else(|| panic!("CreateTopics({topic}) did not complete within {OP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("CreateTopics({topic}) failed: {e}"));
    if let Some(Err((t, e))) = res.first() {
        panic!("CreateTopics({t}) returned error {e:?}");
    }
    wait_for_partitions(addr, topic, partitions as usize);
}
