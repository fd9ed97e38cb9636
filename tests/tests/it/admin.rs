//! CreateTopics / DeleteTopics through rdkafka's AdminClient.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use sluice_tests::{retry_until, Broker};

use crate::common::*;

#[test]
fn create_existing_topic_fails_and_delete_removes_data() {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let topic = topic_name("admin");
    create_topic(&addr, &topic, 3);

    let admin = admin(&addr);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(20)));

    // Creating it again reports TOPIC_ALREADY_EXISTS (36).
    let again = NewTopic::new(&topic, 3, TopicReplication::Fixed(1));
    let res = block_on(admin.create_topics([&again], &opts), OP_TIMEOUT)
        .expect("CreateTopics (existing) completes")
        .expect("CreateTopics (existing) request succeeds");
    match &res[..] {
        [Err((t, RDKafkaErrorCode::TopicAlreadyExists))] if *t == topic => {}
        other => {
            panic!("CreateTopics of an existing topic: expected TopicAlreadyExists, got {other:?}")
        }
    }

    let sent: Vec<Msg> = (0..300).map(|i| make_msg(i, 3, 41)).collect();
    let p = producer(&addr, "1");
    send_all(&p, &topic, &sent, 0);
    take_deliveries(&p, 0, sent.len());
    drop(p);

    let res = block_on(admin.delete_topics(&[&topic], &opts), OP_TIMEOUT)
        .expect("DeleteTopics completes")
        .expect("DeleteTopics request succeeds");
    match &res[..] {
        [Ok(t)] if *t == topic => {}
        other => panic!("DeleteTopics: expected Ok({topic}), got {other:?}"),
    }
    let gone = retry_until(OP_TIMEOUT, 300, Duration::from_millis(100), || {
        (metadata_partitions(&addr, &topic).is_none()).then_some(())
    });
    assert!(gone.is_some(), "{topic} still listed in metadata after DeleteTopics");

    // Deleting it again reports UNKNOWN_TOPIC_OR_PARTITION (3).
    let res = block_on(admin.delete_topics(&[&topic], &opts), OP_TIMEOUT)
        .expect("DeleteTopics (missing) completes")
        .expect("DeleteTopics (missing) request succeeds");
    match &res[..] {
        [Err((t, RDKafkaErrorCode::UnknownTopicOrPartition))] if *t == topic => {}
        other => panic!("DeleteTopics of a missing topic: expected UnknownTopicOrPartition, got {other:?}"),
    }

    // Re-created under the same name, it starts empty.
    let recreated = retry_until(OP_TIMEOUT, 100, Duration::from_millis(300), || {
        let new = NewTopic::new(&topic, 2, TopicReplication::Fixed(1));
        let r = block_on(admin.create_topics([&new], &opts), OP_TIMEOUT)?.ok()?;
        matches!(&r[..], [Ok(_)]).then_some(())
    });
    assert!(recreated.is_some(), "could not re-create {topic} after deleting it");
    wait_for_partitions(&addr, &topic, 2);
    let c = consumer(&addr);
    for part in 0..2 {
        assert_eq!(
            c.fetch_watermarks(&topic, part, OP_TIMEOUT).expect("watermarks"),
            (0, 0),
            "{topic}/{part} after delete + re-create"
        );
    }
    drop(c);
    drop(admin);
    broker.stop();
}
