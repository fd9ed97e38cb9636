//! A topic creation that fails on one shard is taken back whole: CreateTopics answers
//! KAFKA_STORAGE_ERROR for that topic, no shard keeps a log of it, Metadata does not list it
//! (also after a restart), and the other topics of the request are created as usual.
//!
//! The failure is real: a regular file sits where the partition's directory must go, so the
//! owning shard's `PartitionLog::open` fails (root ignores permissions, a file does not).

use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use sluice_tests::Broker;

use crate::common::*;

#[test]
fn create_that_fails_on_one_shard_leaves_no_topic_and_others_are_unaffected() {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let bad = topic_name("rollback-bad");
    let good = topic_name("rollback-good");
    let data = broker.data_dir();
    // With 2 shards and __consumer_offsets split 8/8, placement by counts gives partition 0
    // to shard 0 and partition 1 to shard 1: the file blocks shard 1, and shard 0's log of
    // partition 0 must be closed and deleted by the rollback.
    let blocker = data.join(format!("{bad}-1"));
    std::fs::write(&blocker, b"not a directory").unwrap();

    let admin = admin(&addr);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(20)));
    let new = [NewTopic::new(&bad, 2, TopicReplication::Fixed(1)), NewTopic::new(&good, 2, TopicReplication::Fixed(1))];
    let res = block_on(admin.create_topics(new.iter(), &opts), OP_TIMEOUT)
        .expect("CreateTopics completes")
        .expect("CreateTopics request succeeds");
    let mut codes: Vec<(String, Option<RDKafkaErrorCode>)> = res
        .into_iter()
        .map(|r| match r {
            Ok(t) => (t, None),
            Err((t, e)) => (t, Some(e)),
        })
        .collect();
    codes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![(bad.clone(), Some(RDKafkaErrorCode::KafkaStorageError)), (good.clone(), None)];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(codes, want, "per-topic results{}", broker.log_tail(4096));
    assert!(
        broker.log_tail(64 << 10).contains("rolling the change back"),
        "the broker logs the rollback{}",
        broker.log_tail(4096)
    );

    let check = |broker: &Broker, when: &str| {
        let addr = broker.addr();
        assert_eq!(metadata_partitions(&addr, &bad), None, "{when}: the failed topic is not in Metadata");
        wait_for_partitions(&addr, &good, 2);
        assert!(!data.join(format!("{bad}-0")).exists(), "{when}: the log opened on the other shard was deleted");
        assert!(blocker.is_file(), "{when}: the file in the way is left alone");
        // The topic created in the same request is usable.
        let sent: Vec<Msg> = (0..40).map(|i| make_msg(i, 2, 7)).collect();
        let p = producer(&addr, "all");
        send_all(&p, &good, &sent, 0);
        let deliveries = take_deliveries(&p, 0, sent.len());
        assert_eq!(deliveries.len(), sent.len(), "{when}: deliveries");
    };
    check(&broker, "after the create");

    // The rollback is durable: the broker restarts (it would not, were the topic still in the
    // metadata: its partition cannot be opened) and still lists only the good topic.
    broker.restart();
    check(&broker, "after a restart");

    // Once the file is gone the same topic can be created.
    std::fs::remove_file(&blocker).unwrap();
    create_topic(&broker.addr(), &bad, 2);
}
