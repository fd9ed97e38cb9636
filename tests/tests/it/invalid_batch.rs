//! Produce of intact batches Kafka refuses (LogValidator, INVALID_RECORD), on raw frames: the
//! bad partition is answered with error 87 and stores nothing, the request's other partition
//! is appended as usual, and the log of the refused partition starts where it was.

use std::net::TcpStream;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_tests::Broker;

use crate::common::*;

const INVALID_RECORD: i16 = 87;
const PRODUCE_VERSION: i16 = 9;

fn produce(s: &mut TcpStream, corr: i32, topic: &str, parts: Vec<(i32, Bytes)>) -> Vec<PartitionProduceResponse> {
    let data = parts
        .into_iter()
        .map(|(index, batch)| PartitionProduceData::default().with_index(index).with_records(Some(batch)))
        .collect();
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(data),
    ]);
    let resp = roundtrip(s, &encode_request(0, PRODUCE_VERSION, 2, corr, &req)).expect("produce round trip");
    let mut buf = Bytes::from(resp);
    let h = ResponseHeader::decode(&mut buf, 1).expect("response header");
    assert_eq!(h.correlation_id, corr);
    let r = ProduceResponse::decode(&mut buf, PRODUCE_VERSION).expect("produce response");
    assert_eq!(r.responses.len(), 1);
    let mut p = r.responses.into_iter().next().unwrap().partition_responses;
    p.sort_by_key(|p| p.index);
    p
}

/// (log start, high watermark, record-set bytes) of `partition`, read from offset 0.
fn fetch_all(s: &mut TcpStream, corr: i32, topic: &str, partition: i32) -> (i64, i64, usize) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = roundtrip(s, &encode_request(1, 12, 2, corr, &req)).expect("fetch round trip");
    let mut buf = Bytes::from(resp);
    let h = ResponseHeader::decode(&mut buf, 1).expect("response header");
    assert_eq!(h.correlation_id, corr);
    let r = FetchResponse::decode(&mut buf, 12).expect("fetch response");
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "fetch error");
    (p.log_start_offset, p.high_watermark, p.records.as_ref().map(|r| r.len()).unwrap_or(0))
}

#[test]
fn batch_whose_count_does_not_match_its_offset_range_is_refused_and_not_stored() {
    let _slot = shared_slot();
    let broker = Broker::start(2);
    let topic = topic_name("invalid-batch");
    create_topic(&broker.addr(), &topic, 2);
    let mut s = raw_connect(broker.port());

    // Two records claiming offsets 0 and 2^31 - 1 (lastOffsetDelta i32::MAX, count 2) on
    // partition 0, a valid batch on partition 1, in one request.
    let gap = record_batch_at(&[0, i32::MAX as i64], "gap");
    assert_eq!(i32::from_be_bytes(gap[23..27].try_into().unwrap()), i32::MAX, "lastOffsetDelta of the test batch");
    let good = record_batch_at(&[0, 1, 2], "good");
    let r = produce(&mut s, 1, &topic, vec![(0, gap), (1, good.clone())]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].error_code, INVALID_RECORD, "count/offset-range mismatch: {:?}", r[0]);
    assert_eq!(r[0].base_offset, -1);
    let msg = r[0].error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
    assert!(msg.contains("count of records 2"), "error message names the mismatch: {msg:?}");
    assert_eq!(r[1].error_code, 0, "the other partition is unaffected: {:?}", r[1]);
    assert_eq!(r[1].base_offset, 0);

    // Header consistent (lastOffsetDelta 1, count 2) is still refused when the batch has more
    // records than it declares; and two batches for one partition are refused.
    let mut more = record_batch_at(&[0, 1, 2], "more").to_vec();
    more[23..27].copy_from_slice(&1i32.to_be_bytes());
    more[57..61].copy_from_slice(&2i32.to_be_bytes());
    let crc = crc32c(&more[21..]);
    more[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut two = good.to_vec();
    two.extend_from_slice(&good);
    let r = produce(&mut s, 2, &topic, vec![(0, Bytes::from(more)), (1, Bytes::from(two))]);
    assert_eq!(r[0].error_code, INVALID_RECORD, "{:?}", r[0]);
    assert_eq!(r[1].error_code, INVALID_RECORD, "{:?}", r[1]);

    // Nothing of the refused batches was stored: partition 0 is empty and its next batch
    // gets offset 0; partition 1 holds exactly the first good batch.
    assert_eq!(fetch_all(&mut s, 3, &topic, 0), (0, 0, 0));
    let (start, hw, bytes) = fetch_all(&mut s, 4, &topic, 1);
    assert_eq!((start, hw, bytes), (0, 3, good.len()));
    let r = produce(&mut s, 5, &topic, vec![(0, good.clone())]);
    assert_eq!((r[0].error_code, r[0].base_offset), (0, 0), "{:?}", r[0]);
    assert_eq!(fetch_all(&mut s, 6, &topic, 0).1, 3);
}

/// CRC-32C (Castagnoli), bitwise: a test-side check independent of the broker's.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}
