//! Contract: OffsetFetch v9 (KIP-848) checks the member id and epoch it carries against a
//! consumer group's members, as Kafka does: the member at its current epoch reads the group's
//! offsets, a stale epoch gets STALE_MEMBER_EPOCH, an unknown member UNKNOWN_MEMBER_ID, and no
//! member id with epoch -1 (an admin) reads them unchecked. Raw frames, since no client in the
//! tests lets a caller pick the epoch it sends.

use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_tests::Broker;
use std::net::TcpStream;

use crate::common::*;

const GROUP: &str = "kip848-fetch";

/// Decodes a flexible (header v1) response.
fn decode<R: Decodable>(resp: Vec<u8>, version: i16) -> R {
    let mut buf = bytes::Bytes::from(resp);
    ResponseHeader::decode(&mut buf, 1).expect("response header");
    R::decode(&mut buf, version).expect("response body")
}

/// Joins `GROUP` subscribed to `topic`; the member id and epoch the coordinator gave.
fn join(s: &mut TcpStream, topic: &str) -> (StrBytes, i32) {
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_member_id(StrBytes::from_static_str("member-one-0123456789"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_string(topic.to_string()))]))
        .with_topic_partitions(Some(vec![]));
    let frame = encode_request(68, 1, 2, 1, &req);
    let resp: ConsumerGroupHeartbeatResponse = decode(roundtrip(s, &frame).expect("heartbeat"), 1);
    assert_eq!(resp.error_code, 0, "join: {:?}", resp.error_message);
    (resp.member_id.expect("a member id"), resp.member_epoch)
}

fn commit(s: &mut TcpStream, topic: &str, member: &StrBytes, epoch: i32) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_generation_id_or_member_epoch(epoch)
        .with_member_id(member.clone())
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)])]);
    let resp: OffsetCommitResponse = decode(roundtrip(s, &encode_request(8, 9, 2, 2, &req)).expect("commit"), 9);
    resp.topics[0].partitions[0].error_code
}

/// OffsetFetch v9 of partition 0 as `member` at `epoch`: (group error, committed offset).
fn fetch(s: &mut TcpStream, topic: &str, member: Option<&StrBytes>, epoch: i32) -> (i16, Option<i64>) {
    let group = OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_member_id(member.cloned())
        .with_member_epoch(epoch)
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes(vec![0])]));
    let req = OffsetFetchRequest::default().with_groups(vec![group]);
    let resp: OffsetFetchResponse = decode(roundtrip(s, &encode_request(9, 9, 2, 3, &req)).expect("fetch"), 9);
    let g = &resp.groups[0];
    let offset = g.topics.first().and_then(|t| t.partitions.first()).map(|p| p.committed_offset);
    (g.error_code, offset)
}

#[test]
fn offset_fetch_v9_checks_the_member_and_its_epoch() {
    let _slot = shared_slot();
    let mut broker = Broker::start(1);
    let topic = topic_name("kip848-fetch");
    create_topic(&broker.addr(), &topic, 1);
    let mut s = raw_connect(broker.port());
    let (member, epoch) = join(&mut s, &topic);
    assert!(epoch > 0, "a joined member has a positive epoch, got {epoch}");
    assert_eq!(commit(&mut s, &topic, &member, epoch), 0, "the member commits at its epoch");

    assert_eq!(fetch(&mut s, &topic, Some(&member), epoch), (0, Some(42)), "the member at its epoch");
    assert_eq!(fetch(&mut s, &topic, None, -1), (0, Some(42)), "an admin (no member, epoch -1)");
    let stale = fetch(&mut s, &topic, Some(&member), epoch - 1).0;
    assert_eq!(stale, 113, "STALE_MEMBER_EPOCH for an older epoch");
    let unknown = StrBytes::from_static_str("not-a-member-0123456789");
    assert_eq!(fetch(&mut s, &topic, Some(&unknown), epoch).0, 25, "UNKNOWN_MEMBER_ID");
    broker.stop();
}
