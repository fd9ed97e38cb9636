//! KIP-890 part 1 with raw requests: a transactional batch for a partition not added to the
//! producer's transaction is refused as Kafka 4.x refuses it (INVALID_TXN_STATE up to Produce
//! v10, TRANSACTION_ABORTABLE from v11), across shards (two cores), also after a commit of the
//! same producer epoch (the verification cache ends with the transaction's marker); and
//! AddPartitionsToTxn v4/v5's batched verify-only path answers membership.
//!
//! In a 3-broker cluster, a partition led by another broker than the transactional id's
//! coordinator verifies over the peer links the same way (a "hanging" batch is refused), and a
//! client of transaction version 2 (Produce v12, EndTxn v5) gets its partition added by the
//! produce, its epoch bumped by every end, and its previous epoch fenced.
//!
//! EndTxn is answered once the Prepare state is durable and the markers follow, as on Kafka: a
//! batch of the ended transaction's epoch that comes before the partition's marker still joins
//! (and ends with) that transaction, so the refusals after an end are checked once the marker
//! is written ([`await_markers`]: the partition's last stable offset reached its end).

use crate::common::*;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
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
const INVALID_PRODUCER_EPOCH: i16 = 47;
/// Answers a produce retries: NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS (a coordinator not
/// reachable yet), CONCURRENT_TRANSACTIONS.
const PRODUCE_RETRIABLE: [i16; 3] = [6, 19, 51];
/// Bound for the cluster to form and its internal topics to get leaders.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);

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

/// The latest offset of `topic`-`partition` for `isolation` (0 read_uncommitted: the high
/// watermark; 1 read_committed: the last stable offset).
fn latest(port: u16, topic: &str, partition: i32, isolation: i8) -> i64 {
    let part = ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(-1);
    let req =
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_isolation_level(isolation).with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![part]),
        ]);
    let r: ListOffsetsResponse = call(port, ApiKey::ListOffsets, 5, &req);
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "ListOffsets of {topic}-{partition}");
    p.offset
}

/// Waits (bounded) until the partition's last stable offset reaches its high watermark: the
/// markers of the transaction whose EndTxn was just answered are written.
fn await_markers(port: u16, topic: &str, partition: i32) {
    let written = sluice_tests::retry_until(Duration::from_secs(10), 200, Duration::from_millis(20), || {
        (latest(port, topic, partition, 1) == latest(port, topic, partition, 0)).then_some(())
    });
    assert!(written.is_some(), "the marker of {topic}-{partition} not written within 10 s of the EndTxn answer");
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
    // Produce v12 is transaction version 2: the partition is added by the produce itself.
    assert_eq!(produce(port, 12, &topic, 3, txn_batch(pid, epoch, 0)), 0);

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
    await_markers(port, &topic, 0);
    // Partition 0's marker may be written before partition 3's and the Complete state: until
    // then the coordinator answers the verification CONCURRENT_TRANSACTIONS, which a Produce
    // v9 gets as NOT_ENOUGH_REPLICAS (retried, as Kafka's clients do).
    assert_eq!(produce_settled(port, 9, &topic, 0, txn_batch(pid, epoch, 2)), INVALID_TXN_STATE, "a new transaction");
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

/// Produces like [`produce`], again while the answer is retriable (bounded).
fn produce_settled(port: u16, version: i16, topic: &str, partition: i32, batch: bytes::Bytes) -> i16 {
    let deadline = Instant::now() + CLUSTER_DEADLINE;
    loop {
        let code = produce(port, version, topic, partition, batch.clone());
        if !PRODUCE_RETRIABLE.contains(&code) || Instant::now() > deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// EndTxn at `version`: (error code, producer id, epoch) once no longer retriable.
fn end_txn(port: u16, version: i16, pid: i64, epoch: i16, commit: bool) -> (i16, (i64, i16)) {
    retry(|| {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(TXN_ID.into())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        let resp: EndTxnResponse = call(port, ApiKey::EndTxn, version, &req);
        (resp.error_code, (resp.producer_id.0, resp.producer_epoch))
    })
}

/// The leader of each partition of `topic` as the broker on `port` describes it (-1: none).
fn leaders(port: u16, topic: &str) -> Vec<i32> {
    let t = metadata_request::MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))));
    let r: MetadataResponse = call(port, ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(vec![t])));
    let mut out: Vec<(i32, i32)> =
        r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0))).collect();
    out.sort_unstable();
    out.into_iter().map(|(_, l)| l).collect()
}

#[test]
fn a_coordinator_on_another_broker_verifies_and_transaction_version_2_adds_and_fences() {
    let _slot = shared_slot();
    let peer_ports = free_ports(3);
    let opts = MemberOpts { dir_prefix: "sluice-it-txnv-", session_ms: 1000, env: &[], config: None };
    let brokers: Vec<Broker> = (0..3).map(|i| cluster_member(i, &peer_ports, &opts)).collect();
    let port_of = |node: i32| brokers[usize::try_from(node).expect("a node id")].port();

    // The transactional id's coordinator (the transaction topic is created on first use).
    let coordinator = sluice_tests::retry_until(CLUSTER_DEADLINE, 600, Duration::from_millis(100), || {
        let req = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![StrBytes::from_string(TXN_ID.into())]);
        let resp: FindCoordinatorResponse = call(brokers[0].port(), ApiKey::FindCoordinator, 4, &req);
        let c = &resp.coordinators[0];
        (c.error_code == 0 && c.node_id.0 >= 0).then_some(c.node_id.0)
    })
    .expect("a transaction coordinator within the deadline");
    let coord = port_of(coordinator);
    let (code, (pid, epoch)) = retry(|| {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(TXN_ID.into()))))
            .with_transaction_timeout_ms(60_000);
        let resp: InitProducerIdResponse = call(coord, ApiKey::InitProducerId, 4, &req);
        (resp.error_code, (resp.producer_id.0, resp.producer_epoch))
    });
    assert_eq!(code, 0, "InitProducerId at the coordinator (node {coordinator})");

    // A partition another broker leads.
    let topic = topic_name("txn_verify_cluster");
    create_topic_rf(&brokers[0].addr(), &topic, 6, 1);
    let (partition, leader) = sluice_tests::retry_until(CLUSTER_DEADLINE, 600, Duration::from_millis(100), || {
        let l = leaders(coord, &topic);
        let p = l.iter().position(|n| *n >= 0 && *n != coordinator)?;
        Some((i32::try_from(p).expect("a partition index"), l[p]))
    })
    .expect("a partition led by another broker than the coordinator");
    let port = port_of(leader);

    // A hanging write (no AddPartitionsToTxn) is refused by the leader after asking the
    // coordinator's broker, as Kafka refuses it.
    assert_eq!(produce_settled(port, 9, &topic, partition, txn_batch(pid, epoch, 0)), INVALID_TXN_STATE);
    assert_eq!(produce_settled(port, 11, &topic, partition, txn_batch(pid, epoch, 0)), TRANSACTION_ABORTABLE);
    // Added: accepted; an epoch the coordinator never gave: fenced.
    let (code, _) = retry(|| {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(TXN_ID.into())))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partitions(vec![partition])]);
        let resp: AddPartitionsToTxnResponse = call(coord, ApiKey::AddPartitionsToTxn, 3, &req);
        (resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, ())
    });
    assert_eq!(code, 0, "AddPartitionsToTxn");
    assert_eq!(produce_settled(port, 9, &topic, partition, txn_batch(pid, epoch, 0)), 0);
    assert_eq!(produce_settled(port, 9, &topic, partition, txn_batch(pid, epoch, 1)), 0);
    assert_eq!(produce_settled(port, 9, &topic, partition, txn_batch(pid, epoch + 1, 0)), INVALID_PRODUCER_EPOCH);
    assert_eq!(end_txn(coord, 3, pid, epoch, true).0, 0, "EndTxn v3 (the epoch is kept)");
    await_markers(port, &topic, partition);
    assert_eq!(produce_settled(port, 11, &topic, partition, txn_batch(pid, epoch, 2)), TRANSACTION_ABORTABLE);

    // Transaction version 2: Produce v12 adds the partition itself; EndTxn v5 bumps the epoch.
    assert_eq!(produce_settled(port, 12, &topic, partition, txn_batch(pid, epoch, 2)), 0, "added by the produce");
    assert_eq!(end_txn(coord, 5, pid, epoch, true), (0, (pid, epoch + 1)), "EndTxn v5 answers the bumped epoch");
    assert_eq!(end_txn(coord, 5, pid, epoch, true), (0, (pid, epoch + 1)), "a retried end is answered again");
    await_markers(port, &topic, partition);
    // The previous epoch is fenced: a zombie's late batch, and its next transaction.
    assert_eq!(produce_settled(port, 12, &topic, partition, txn_batch(pid, epoch, 3)), INVALID_PRODUCER_EPOCH);
    // The producer goes on with the new epoch (sequences start again at 0).
    let next = epoch + 1;
    assert_eq!(produce_settled(port, 12, &topic, partition, txn_batch(pid, next, 0)), 0);
    assert_eq!(end_txn(coord, 5, pid, next, false), (0, (pid, next + 1)), "an abort bumps too");
    await_markers(port, &topic, partition);
    assert_eq!(produce_settled(port, 12, &topic, partition, txn_batch(pid, next, 1)), INVALID_PRODUCER_EPOCH);
    assert_eq!(end_txn(coord, 5, pid, epoch, true).0, PRODUCER_FENCED, "an end of two transactions ago");
}
