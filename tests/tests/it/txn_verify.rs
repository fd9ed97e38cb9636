//! KIP-890 part 1 with raw requests: a transactional batch for a partition not added to the
//! producer's transaction is refused as Kafka 4.x refuses it (INVALID_TXN_STATE up to Produce
//! v10, TRANSACTION_ABORTABLE from v11), across shards (two cores), also after a commit of the
//! same producer epoch (the verification cache ends with the transaction's marker); and
//! AddPartitionsToTxn v4/v5's batched verify-only path answers membership.

use crate::common::*;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use sluice_tests::Broker;
use std::time::{Duration, Instant};

const TXN_ID: &str = "verify-txn";
const INVALID_TXN_STATE: i16 = 48;
const TRANSACTION_ABORTABLE: i16 = 120;
const PRODUCER_FENCED: i16 = 90;

fn txn_batch(pid: i64, epoch: i16, sequence: i32) -> bytes::Bytes {
    let record = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 1_700_000_000_000,
        key: Some(bytes::Bytes::from_static(b"k")),
        value: Some(bytes::Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &[record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .expect("encode");
    buf.freeze()
}

/// Produce one transactional batch to `topic`-`partition`: the partition's error code.
fn produce(port: u16, version: i16, topic: &str, partition: i32, batch: bytes::Bytes) -> i16 {
    let req = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(TXN_ID.into()))))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let resp: ProduceResponse = call(port, ApiKey::Produce, version, &req);
    resp.responses[0].partition_responses[0].error_code
}

/// Retries a coordinator call while it answers a retriable coordinator error (the
/// transaction topic is created on first use).
fn retry<T>(mut f: impl FnMut() -> (i16, T)) -> (i16, T) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, t) = f();
        // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, CONCURRENT_TRANSACTIONS
        if ![14, 15, 16, 51].contains(&code) || Instant::now() > deadline {
            return (code, t);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn verify_only(port: u16, version: i16, pid: i64, epoch: i16, topic: &str, partitions: &[i32]) -> Vec<i16> {
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(TXN_ID.into())))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_verify_only(true)
        .with_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(partitions.to_vec())])]);
    let resp: AddPartitionsToTxnResponse = call(port, ApiKey::AddPartitionsToTxn, version, &req);
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.results_by_transaction.len(), 1);
    resp.results_by_transaction[0].topic_results[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect()
}

#[test]
fn transactional_batches_only_into_partitions_of_the_transaction() {
    let _slot = shared_slot();
    let broker = Broker::start(2);
    let port = broker.port();
    let topic = topic_name("txn_verify");
    create_topic(&broker.addr(), &topic, 4);

    let (code, _) = retry(|| {
        let req = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![StrBytes::from_string(TXN_ID.into())]);
        let resp: FindCoordinatorResponse = call(port, ApiKey::FindCoordinator, 4, &req);
        (resp.coordinators[0].error_code, ())
    });
    assert_eq!(code, 0, "FindCoordinator for the transactional id");
    let (code, (pid, epoch)) = retry(|| {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(TXN_ID.into()))))
            .with_transaction_timeout_ms(60_000);
        let resp: InitProducerIdResponse = call(port, ApiKey::InitProducerId, 4, &req);
        (resp.error_code, (resp.producer_id.0, resp.producer_epoch))
    });
    assert_eq!(code, 0, "InitProducerId");

    let add = |partitions: Vec<i32>| {
        retry(|| {
            let req = AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(TXN_ID.into())))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(partitions.clone())]);
            let resp: AddPartitionsToTxnResponse = call(port, ApiKey::AddPartitionsToTxn, 3, &req);
            (resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, ())
        })
        .0
    };
    assert_eq!(add(vec![0]), 0, "partition 0 joins the transaction");

    // Partition 0 was added: its batches go in (the later ones without asking again).
    assert_eq!(produce(port, 9, &topic, 0, txn_batch(pid, epoch, 0)), 0);
    assert_eq!(produce(port, 9, &topic, 0, txn_batch(pid, epoch, 1)), 0);
    // Partitions 1..3 were not (on both shards of the broker).
    assert_eq!(produce(port, 9, &topic, 1, txn_batch(pid, epoch, 0)), INVALID_TXN_STATE);
    assert_eq!(produce(port, 10, &topic, 2, txn_batch(pid, epoch, 0)), INVALID_TXN_STATE);
    assert_eq!(produce(port, 11, &topic, 3, txn_batch(pid, epoch, 0)), TRANSACTION_ABORTABLE);
    assert_eq!(produce(port, 12, &topic, 3, txn_batch(pid, epoch, 0)), TRANSACTION_ABORTABLE);

    // The brokers' verify-only path: membership, nothing added.
    assert_eq!(verify_only(port, 4, pid, epoch, &topic, &[0, 1]), vec![0, INVALID_TXN_STATE]);
    assert_eq!(verify_only(port, 5, pid, epoch, &topic, &[0, 1]), vec![0, TRANSACTION_ABORTABLE]);
    assert_eq!(verify_only(port, 5, pid, epoch + 1, &topic, &[0]), vec![PRODUCER_FENCED]);
    assert_eq!(produce(port, 9, &topic, 1, txn_batch(pid, epoch, 0)), INVALID_TXN_STATE, "verification added nothing");

    // Commit: the marker ends the transaction in partition 0, so the same producer epoch's
    // next batch there is refused until the partition is added to the next transaction.
    let (code, _) = retry(|| {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(TXN_ID.into())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true);
        let resp: EndTxnResponse = call(port, ApiKey::EndTxn, 3, &req);
        (resp.error_code, ())
    });
    assert_eq!(code, 0, "EndTxn commit");
    assert_eq!(produce(port, 9, &topic, 0, txn_batch(pid, epoch, 2)), INVALID_TXN_STATE, "a new transaction");
    assert_eq!(add(vec![0, 1]), 0);
    assert_eq!(produce(port, 9, &topic, 0, txn_batch(pid, epoch, 2)), 0);
    assert_eq!(produce(port, 9, &topic, 1, txn_batch(pid, epoch, 0)), 0);

    // A non-transactional producer (no transactional id) is not concerned.
    let plain = record_batch_at(&[0], "plain");
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.clone())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(2).with_records(Some(plain))]),
    ]);
    let resp: ProduceResponse = call(port, ApiKey::Produce, 9, &req);
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
}
