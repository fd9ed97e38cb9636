//! One producer connection writes 10,000 keyed messages with headers to a
//! 3-partition topic spread over 2 shards; a consumer reads them back
//! byte-exact in per-partition order at the reported offsets.

use std::time::Duration;

use sluice_tests::Broker;

use crate::common::*;

#[test]
fn ten_thousand_keyed_messages_with_headers_roundtrip() {
    let _slot = shared_slot();
    let broker = Broker::start(2);
    let addr = broker.addr();
    let topic = topic_name("roundtrip");
    create_topic(&addr, &topic, 3);

    let n = 10_000;
    let sent: Vec<Msg> = (0..n).map(|i| make_msg(i, 3, 0x51u64)).collect();
    let p = producer_with(&addr, "all", &[("max.in.flight.requests.per.connection", "1")]);
    send_all(&p, &topic, &sent, 0);
    let deliveries = take_deliveries(&p, 0, n);
    for (i, d) in deliveries.iter().enumerate() {
        assert_eq!(d.partition, sent[i].partition, "delivery partition of #{i}");
        assert!(d.offset >= 0, "delivery #{i} has no offset: {d:?}");
    }
    // Offsets per partition are exactly 0..count in send order.
    for part in 0..3 {
        let offs: Vec<i64> = deliveries.iter().filter(|d| d.partition == part).map(|d| d.offset).collect();
        let want: Vec<i64> = (0..offs.len() as i64).collect();
        assert_eq!(offs, want, "partition {part} delivery offsets");
    }

    consume_and_verify(&addr, &topic, 3, &sent, Some(&deliveries), Duration::from_secs(90));
    drop(p);
    let mut broker = broker;
    broker.stop();
}
