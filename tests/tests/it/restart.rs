//! Graceful restart keeps topics and data.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use sluice_tests::Broker;

use crate::common::*;

#[test]
fn restart_keeps_topics_and_data() {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let multi = topic_name("restart-multi");
    let auto = topic_name("restart-auto");
    create_topic(&addr, &multi, 3);

    let sent_multi: Vec<Msg> = (0..3000).map(|i| make_msg(i, 3, 11)).collect();
    let sent_auto: Vec<Msg> = (0..500).map(|i| make_msg(i, 1, 12)).collect();
    {
        let p = producer(&addr, "all");
        send_all(&p, &multi, &sent_multi, 0);
        take_deliveries(&p, 0, sent_multi.len());
        send_all(&p, &auto, &sent_auto, 0);
        take_deliveries(&p, 0, sent_auto.len());
    }
    let old_port = broker.port();

    broker.restart(); // asserts exit code 0 after SIGTERM
    let addr = broker.addr();
    eprintln!("restarted: port {old_port} -> {}", broker.port());

    assert_eq!(
        metadata_partitions(&addr, &multi),
        Some(3),
        "metadata after restart must list {multi} with 3 partitions"
    );
    assert_eq!(
        metadata_partitions(&addr, &auto),
        Some(1),
        "metadata after restart must list auto-created {auto} with 1 partition"
    );

    let c = consumer(&addr);
    for part in 0..3 {
        let want = sent_multi.iter().filter(|m| m.partition == part).count() as i64;
        let wm = c.fetch_watermarks(&multi, part, OP_TIMEOUT).expect("watermarks after restart");
        assert_eq!(wm, (0, want), "{multi}/{part} watermarks after restart");
    }
    consume_and_verify(&addr, &multi, 3, &sent_multi, None, Duration::from_secs(60));
    consume_and_verify(&addr, &auto, 1, &sent_auto, None, Duration::from_secs(60));

    // Appends after the restart continue at the old end offsets.
    let more: Vec<Msg> = (0..300).map(|i| make_msg(i, 3, 13)).collect();
    let p = producer(&addr, "1");
    send_all(&p, &multi, &more, 0);
    let d = take_deliveries(&p, 0, more.len());
    for part in 0..3 {
        let before = sent_multi.iter().filter(|m| m.partition == part).count() as i64;
        let first = d.iter().filter(|x| x.partition == part).map(|x| x.offset).min();
        assert_eq!(first, Some(before), "{multi}/{part}: first offset after restart");
    }
    let mut all = sent_multi.clone();
    all.extend(more.iter().cloned());
    consume_and_verify(&addr, &multi, 3, &all, None, Duration::from_secs(60));
    drop(p);
    drop(c);

    // A second restart (after appends) still has everything.
    broker.restart();
    let addr = broker.addr();
    assert_eq!(metadata_partitions(&addr, &multi), Some(3));
    consume_and_verify(&addr, &multi, 3, &all, None, Duration::from_secs(60));
    broker.stop();
}

/// Messages acknowledged with acks=all survive SIGKILL of the broker process
/// (as with Kafka, whose acked writes sit at least in the page cache).
#[test]
fn sigkill_keeps_acknowledged_data() {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let topic = topic_name("sigkill");
    create_topic(&addr, &topic, 3);
    let sent: Vec<Msg> = (0..2000).map(|i| make_msg(i, 3, 17)).collect();
    {
        let p = producer(&addr, "all");
        send_all(&p, &topic, &sent, 0);
        take_deliveries(&p, 0, sent.len());
    }
    broker.kill();
    broker.start_again();
    let addr = broker.addr();
    assert_eq!(metadata_partitions(&addr, &topic), Some(3), "topic after SIGKILL + restart");
    consume_and_verify(&addr, &topic, 3, &sent, None, Duration::from_secs(60));
    broker.stop();
}
