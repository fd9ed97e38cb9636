//! Writes the small seed corpora under corpus/<target>/ (run from tests/fuzz:
//! `cargo run --bin gen_corpus`). Deterministic; safe to re-run.

use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_core::batch::{self, Record};
use std::path::Path;

fn put(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn batches() -> Vec<Vec<u8>> {
    let one = batch::build(&[Record { key: None, value: b"hello" }], 1_700_000_000_000);
    let three = batch::build(
        &[
            Record { key: Some(b"k1"), value: b"v1" },
            Record { key: None, value: b"" },
            Record { key: Some(b""), value: b"a longer value" },
        ],
        1_700_000_000_123,
    );
    vec![one, three]
}

fn frame(key: ApiKey, version: i16, body: &RequestKind) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

fn default_body(key: ApiKey) -> Option<RequestKind> {
    Some(match key {
        ApiKey::Produce => RequestKind::Produce(Default::default()),
        ApiKey::Fetch => RequestKind::Fetch(Default::default()),
        ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
        ApiKey::Metadata => RequestKind::Metadata(Default::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(Default::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(Default::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(Default::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
        ApiKey::JoinGroup => RequestKind::JoinGroup(Default::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(Default::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(Default::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(Default::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(Default::default()),
        ApiKey::ListGroups => RequestKind::ListGroups(Default::default()),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(Default::default()),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(Default::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(Default::default()),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(Default::default()),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(Default::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(Default::default()),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(Default::default()),
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(Default::default()),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(Default::default()),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(Default::default()),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(Default::default()),
        _ => return None,
    })
}

fn main() {
    let bs = batches();
    // batch
    put("batch", "one", &bs[0]);
    put("batch", "three", &bs[1]);
    put("batch", "two_concatenated", &[bs[0].clone(), bs[1].clone()].concat());

    // request: every implemented API at its min and max version, with default bodies, plus a
    // few with content.
    for spec in sluice_net::api::APIS {
        let Some(body) = default_body(spec.key) else {
            eprintln!("no seed for {:?}", spec.key);
            continue;
        };
        let mut versions = vec![spec.min_version, spec.max_version];
        versions.dedup();
        for v in versions {
            match frame(spec.key, v, &body) {
                Some(f) => put("request", &format!("{}_v{v}", spec.name), &f),
                None => eprintln!("cannot encode {} v{v}", spec.name),
            }
        }
    }
    let topic = StrBytes::from_static_str("fuzz-topic");
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
        produce_request::TopicProduceData::default().with_name(topic.clone().into()).with_partition_data(vec![
            produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from([bs[0].clone(), bs[1].clone()].concat()))),
        ]),
    ]);
    for v in [3i16, 9] {
        if let Some(f) = frame(ApiKey::Produce, v, &RequestKind::Produce(produce.clone())) {
            put("request", &format!("produce_records_v{v}"), &f);
        }
    }
    let metadata =
        MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic.clone().into()))
        ]));
    for v in [1i16, 12] {
        if let Some(f) = frame(ApiKey::Metadata, v, &RequestKind::Metadata(metadata.clone())) {
            put("request", &format!("metadata_topic_v{v}"), &f);
        }
    }
    let join = JoinGroupRequest::default()
        .with_group_id(StrBytes::from_static_str("g").into())
        .with_session_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(bytes::Bytes::from_static(b"\0\x01\0\0\0\x01\0\x01t"))]);
    if let Some(f) = frame(ApiKey::JoinGroup, 5, &RequestKind::JoinGroup(join)) {
        put("request", "join_group_v5", &f);
    }

    // storage_files: an index pair and a producer snapshot.
    let mut idx = sluice_storage::index::SparseIndex::default();
    let mut cur = sluice_storage::index::IndexCursor::new();
    for i in 0..20u32 {
        cur.add(&mut idx, 4096, i * 10, i * 1000, 1000 + i as i64, 1000);
    }
    let (o, t) = (idx.encode_offsets(), idx.encode_times());
    let mut f = vec![0u8];
    f.extend_from_slice(&20_000u32.to_be_bytes());
    f.extend_from_slice(&199u32.to_be_bytes());
    f.extend_from_slice(&(o.len() as u16).to_be_bytes());
    f.extend_from_slice(&o);
    f.extend_from_slice(&t);
    put("storage_files", "index", &f);
    let d = tempfile::tempdir().unwrap();
    let mut p = sluice_storage::producers::Producers::default();
    p.record(9, 2, 10, 4, 100, 104);
    p.record(11, 0, 0, 0, 105, 105);
    p.record(11, 0, 1, 3, 106, 109);
    sluice_storage::producers::save_snapshot(d.path(), 110, &p).unwrap();
    let snap = std::fs::read(d.path().join("producers.snapshot")).unwrap();
    put("storage_files", "snapshot", &[vec![1u8], snap].concat());

    // group_store
    use sluice_shard::groups::{store, Committed};
    let kv = |k: Vec<u8>, v: Option<Vec<u8>>| {
        let mut out = vec![if v.is_none() { 0xff } else { 0 }];
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(&k);
        out.extend_from_slice(&v.unwrap_or_default());
        out
    };
    let c = Committed { offset: 42, leader_epoch: 3, metadata: Some("meta".into()), commit_timestamp_ms: 7 };
    put("group_store", "offset", &kv(store::offset_key("g", "t", 5), Some(store::offset_value(&c))));
    put("group_store", "offset_tombstone", &kv(store::offset_key("g", "t", 5), None));
    let g = store::GroupRecord { generation: 9, protocol_type: "consumer".into(), protocol: "range".into() };
    put("group_store", "group", &kv(store::group_key("g"), Some(store::group_value(&g))));

    // log_recovery: a segment of stamped batches (offsets 0.., contiguous), variants.
    let mut seg = Vec::new();
    let mut next = 0i64;
    for i in 0..4 {
        let mut b = bs[i % 2].clone();
        batch::stamp(&mut b, next, 0);
        next += batch::validate(&b).unwrap().last_offset_delta as i64 + 1;
        seg.extend_from_slice(&b);
    }
    let rec = |flags: u8, extra: &[u8], seg: &[u8]| {
        let mut out = vec![flags];
        out.extend_from_slice(&1_700_000_000_100i64.to_be_bytes());
        out.extend_from_slice(extra);
        out.extend_from_slice(seg);
        out
    };
    put("log_recovery", "clean_segment", &rec(0, &[], &seg));
    put("log_recovery", "clean_segment_append", &rec(2, &[], &seg));
    put("log_recovery", "torn_tail", &rec(0, &[], &seg[..seg.len() - 7]));
    put("log_recovery", "zero_padding", &rec(0, &[], &[seg.clone(), vec![0u8; 300]].concat()));
    let mut garbage = seg.clone();
    garbage.extend_from_slice(b"\x00\x00\x00\x00\x00\x00\x00\x09\x00\x00\x00\x40garbage");
    put("log_recovery", "garbage_tail", &rec(2, &[], &garbage));
    // Clean shutdown with an index entry pointing at the second batch.
    let second = bs[0].len() as u32;
    let mut ix = Vec::new();
    ix.extend_from_slice(&1u32.to_be_bytes());
    ix.extend_from_slice(&second.to_be_bytes());
    let mut extra = (ix.len() as u16).to_be_bytes().to_vec();
    extra.extend_from_slice(&ix);
    extra.extend_from_slice(&0u16.to_be_bytes());
    put("log_recovery", "trusted_index", &rec(3, &extra, &seg));
}
