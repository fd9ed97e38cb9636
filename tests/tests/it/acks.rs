//! acks=0, acks=1 and acks=all each produce N messages that are all
//! consumable.

use std::time::Duration;

use sluice_tests::Broker;

use crate::common::*;

fn produce_and_consume_with_acks(acks: &str, partitions: i32) {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let topic = topic_name(&format!("acks{acks}"));
    if partitions > 1 {
        create_topic(&addr, &topic, partitions);
    }
    let n = 2_000;
    let sent: Vec<Msg> = (0..n).map(|i| make_msg(i, partitions, 7)).collect();
    let p = producer(&addr, acks);
    send_all(&p, &topic, &sent, 0);
    let deliveries = take_deliveries(&p, 0, n);
    if acks != "0" {
        for (i, d) in deliveries.iter().enumerate() {
            assert!(d.offset >= 0, "acks={acks}: delivery #{i} has no offset: {d:?}");
        }
    }
    let deliveries = (acks != "0").then_some(deliveries);
    consume_and_verify(&addr, &topic, partitions, &sent, deliveries.as_deref(), Duration::from_secs(60));
    let errs = producer_errors(&p);
    assert!(errs.is_empty(), "acks={acks}: producer client errors: {errs:?}");
    drop(p);
    broker.stop();
}

#[test]
fn acks_0_all_messages_consumable() {
    produce_and_consume_with_acks("0", 1);
}

#[test]
fn acks_1_all_messages_consumable() {
    produce_and_consume_with_acks("1", 1);
}

#[test]
fn acks_all_all_messages_consumable() {
    produce_and_consume_with_acks("all", 1);
}

#[test]
fn acks_0_multi_partition_two_shards() {
    produce_and_consume_with_acks("0", 3);
}
