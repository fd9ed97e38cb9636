//! Response frames as a list of parts, so that fetched record batches are written to the socket
//! from the `Bytes` the storage read returned instead of being copied into the frame.
//!
//! Contract: a [`Frame`] is the bytes of one whole response (size prefix included), in order,
//! as the concatenation of its parts. [`encode_with_records`] encodes like
//! `frame::encode_response`, except that any byte string of at least [`SHARE_MIN_BYTES`] the
//! encoder writes that lies inside one of the given `records` is taken as a slice of it
//! (`Bytes::slice_ref`, a reference count) rather than copied. The bytes on the wire are the
//! same either way (a unit test compares them).
//!
//! [`with_throttle`] writes a quota throttle into an encoded response's `throttle_time_ms`
//! (keeping a larger value a handler already put there), for every API whose response has the
//! field at that version: the one place the request-time quota reaches every answer (Kafka's
//! `sendResponseMaybeThrottle`). Produce is the exception: its field follows the partitions, so
//! its handler fills it. A unit test checks the field positions against the encoder for every
//! API and version sluice serves.

use crate::frame::FrameError;
use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use std::ops::Range;

/// Byte strings shorter than this are copied: a part costs a write call of its own.
pub const SHARE_MIN_BYTES: usize = sluice_core::limits::RESPONSE_SHARE_MIN_BYTES;

/// One response frame: its parts, written in order.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    parts: Vec<Bytes>,
}

impl Frame {
    /// Total bytes of the frame.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Bytes this frame keeps in memory, as counted in the response budget: a part of at least
    /// half a read-cache chunk and less than a chunk may be a slice of a cached chunk and then
    /// keeps the whole chunk alive (the cache and the fetch cut copy shorter ranges out:
    /// `sluice_storage::cache::SHARED_SLICE_MIN`), so it counts as a chunk; any other part
    /// counts as its length.
    pub fn held_bytes(&self) -> usize {
        let chunk = sluice_storage::cache::CHUNK_BYTES;
        let held = |p: &Bytes| match p.len() {
            n if (sluice_storage::cache::SHARED_SLICE_MIN..chunk).contains(&n) => chunk,
            n => n,
        };
        self.parts.iter().map(held).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The frame as one contiguous buffer (copies when it has several parts; for tests).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => parts.iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>().into(),
        }
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Frame {
        Frame { parts: vec![b] }
    }
}

/// Where `throttle_time_ms` is in a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThrottleField {
    /// Not in this API or version (or filled in by the handler: Produce).
    Absent,
    /// At this byte offset from the start of the body.
    At(usize),
    /// After a variable-length part: the body is decoded, changed and encoded again.
    Reencode,
}

/// The first version of each API whose response starts with `throttle_time_ms` (Kafka's
/// message schemas).
fn throttle_first_from(key: ApiKey) -> Option<i16> {
    use ApiKey::*;
    Some(match key {
        Fetch | FindCoordinator | Heartbeat | LeaveGroup | SyncGroup | DescribeGroups | ListGroups | DeleteTopics => 1,
        ListOffsets | JoinGroup | CreateTopics | OffsetForLeaderEpoch => 2,
        Metadata | OffsetCommit | OffsetFetch => 3,
        DeleteRecords
        | InitProducerId
        | AddPartitionsToTxn
        | AddOffsetsToTxn
        | EndTxn
        | TxnOffsetCommit
        | DescribeAcls
        | CreateAcls
        | DeleteAcls
        | DescribeConfigs
        | AlterConfigs
        | AlterReplicaLogDirs
        | DescribeLogDirs
        | CreatePartitions
        | DeleteGroups
        | ElectLeaders
        | IncrementalAlterConfigs
        | AlterPartitionReassignments
        | ListPartitionReassignments
        | DescribeClientQuotas
        | AlterClientQuotas
        | DescribeUserScramCredentials
        | AlterUserScramCredentials
        | DescribeCluster
        | DescribeProducers
        | DescribeTransactions
        | ListTransactions
        | ConsumerGroupHeartbeat
        | ConsumerGroupDescribe
        | ShareGroupHeartbeat
        | ShareGroupDescribe
        | ShareFetch
        | ShareAcknowledge
        | DescribeShareGroupOffsets
        | AlterShareGroupOffsets
        | DeleteShareGroupOffsets
        | DescribeTopicPartitions
        | GetTelemetrySubscriptions
        | PushTelemetry
        | UpdateFeatures => 0,
        _ => return None,
    })
}

fn throttle_field(key: ApiKey, version: i16) -> ThrottleField {
    match key {
        // ErrorCode, then ThrottleTimeMs.
        ApiKey::OffsetDelete => ThrottleField::At(2),
        // ErrorCode, ApiKeys, then ThrottleTimeMs (v1+).
        ApiKey::ApiVersions if version >= 1 => ThrottleField::Reencode,
        _ => match throttle_first_from(key) {
            Some(first) if version >= first => ThrottleField::At(0),
            _ => ThrottleField::Absent,
        },
    }
}

/// `frame` (a response of `key` at `version`) with `throttle_time_ms` raised to `ms` when the
/// response has the field; unchanged otherwise.
pub fn with_throttle(frame: Frame, key: ApiKey, version: i16, ms: i32) -> Frame {
    if ms <= 0 {
        return frame;
    }
    let header = match key.response_header_version(version) {
        0 => 4,
        // Correlation id and the header's (empty) tagged fields.
        _ => 5,
    };
    let body = 4 + header;
    match throttle_field(key, version) {
        ThrottleField::Absent => frame,
        ThrottleField::At(at) => raise_i32(frame, body, at, ms),
        ThrottleField::Reencode => reencode_api_versions(frame, version, ms),
    }
}

/// Raises the big-endian i32 `offset` bytes into the body (which starts at `body`) to `ms`, in
/// the frame's first part (it holds the header and the start of the body: only record sets
/// are split off). A flexible header's tagged fields are empty (sluice writes none).
fn raise_i32(mut frame: Frame, body: usize, offset: usize, ms: i32) -> Frame {
    let at = body + offset;
    let Some(first) = frame.parts.first() else { return frame };
    let tags_empty = body == 8 || first.get(body - 1) == Some(&0);
    if first.len() < at + 4 || !tags_empty {
        debug_assert!(false, "a response too short for its throttle_time_ms, or with header tags");
        return frame;
    }
    let old = i32::from_be_bytes([first[at], first[at + 1], first[at + 2], first[at + 3]]);
    if old >= ms {
        return frame;
    }
    let mut b = BytesMut::from(&first[..]);
    b[at..at + 4].copy_from_slice(&ms.to_be_bytes());
    frame.parts[0] = b.freeze();
    frame
}

/// ApiVersions' throttle follows its list of APIs: decode, change, encode (a small answer,
/// sent once per connection).
fn reencode_api_versions(frame: Frame, version: i16, ms: i32) -> Frame {
    use kafka_protocol::messages::ApiVersionsResponse;
    use kafka_protocol::protocol::Decodable;
    let mut bytes = frame.to_bytes();
    if bytes.len() < 8 {
        return frame;
    }
    let correlation_id = i32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let mut body = bytes.split_off(8);
    let Ok(mut resp) = ApiVersionsResponse::decode(&mut body, version) else { return frame };
    resp.throttle_time_ms = resp.throttle_time_ms.max(ms);
    crate::frame::encode_response(correlation_id, version, &resp).map(Frame::from).unwrap_or(frame)
}

/// Encodes a response (size prefix, header, body) whose long byte strings found in `records`
/// are shared, not copied.
pub fn encode_with_records<T: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &T,
    records: &[Bytes],
) -> Result<Frame, FrameError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = T::header_version(version);
    let size =
        header.compute_size(header_version).map_err(encode_err)? + body.compute_size(version).map_err(encode_err)?;
    let prefix = i32::try_from(size).map_err(|_| FrameError::Encode(format!("response of {size} bytes")))?;
    let mut buf = PartsBuf {
        done: Vec::new(),
        done_len: 0,
        head: BytesMut::with_capacity((size + 4).min(HEAD_CAPACITY)),
        records,
        next: 0,
    };
    buf.head.put_i32(prefix);
    header.encode(&mut buf, header_version).map_err(encode_err)?;
    body.encode(&mut buf, version).map_err(encode_err)?;
    if buf.offset() != size + 4 {
        return Err(FrameError::Encode(format!("encoded {} bytes, computed {}", buf.offset() - 4, size)));
    }
    let mut parts = buf.done;
    if !buf.head.is_empty() {
        parts.push(buf.head.freeze());
    }
    Ok(Frame { parts })
}

fn encode_err(e: impl std::fmt::Display) -> FrameError {
    FrameError::Encode(e.to_string())
}

/// Initial capacity of the part being written (large shared record sets are not in it).
const HEAD_CAPACITY: usize = sluice_core::limits::RESPONSE_HEAD_CAPACITY_BYTES;

/// The encoder's buffer: finished parts, then the part being written.
struct PartsBuf<'a> {
    done: Vec<Bytes>,
    done_len: usize,
    head: BytesMut,
    records: &'a [Bytes],
    /// Where the search for the next shared slice starts (records are encoded in order).
    next: usize,
}

impl PartsBuf<'_> {
    /// The record buffer `src` lies in, if any.
    fn owner_of(&mut self, src: &[u8]) -> Option<Bytes> {
        let (start, end) = (src.as_ptr() as usize, src.as_ptr() as usize + src.len());
        let n = self.records.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let r = &self.records[i];
            let (rs, re) = (r.as_ptr() as usize, r.as_ptr() as usize + r.len());
            if rs <= start && end <= re {
                self.next = i + 1;
                return Some(r.slice_ref(src));
            }
        }
        None
    }
}

// SAFETY: every method forwards to the `BytesMut` being written, which upholds `BufMut`'s
// contract; `put_slice` either does the same or only moves finished bytes into `done`.
unsafe impl BufMut for PartsBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is `head`'s.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SHARE_MIN_BYTES {
            if let Some(shared) = self.owner_of(src) {
                if !self.head.is_empty() {
                    let part = self.head.split().freeze();
                    self.done_len += part.len();
                    self.done.push(part);
                }
                self.done_len += shared.len();
                self.done.push(shared);
                return;
            }
        }
        self.head.extend_from_slice(src);
    }
}

impl ByteBufMut for PartsBuf<'_> {
    fn offset(&self) -> usize {
        self.done_len + self.head.len()
    }

    /// Only within the part being written (message encoders do not seek; record-batch
    /// encoders, which do, are not used for responses).
    fn seek(&mut self, offset: usize) {
        assert!(offset >= self.done_len, "seek into a finished part of a response");
        self.head.resize(offset - self.done_len, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.done_len, "range in a finished part of a response");
        &mut self.head[r.start - self.done_len..r.end - self.done_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_response;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};

    fn response(records: &[Bytes]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i32::try_from(i).unwrap())
                    .with_high_watermark(7)
                    .with_records(if r.is_empty() { None } else { Some(r.clone()) })
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName("t".into()))
            .with_partitions(partitions)])
    }

    #[test]
    fn shared_records_give_the_same_bytes_as_a_copied_frame() {
        let big: Vec<Bytes> = (0..4u8)
            .map(|i| Bytes::from(vec![i; if i == 1 { 100 } else { SHARE_MIN_BYTES + 3 * i as usize }]))
            .chain([Bytes::new()])
            .collect();
        // A store of several batches: one response carries a slice of it.
        let store = Bytes::from((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let mut records = big.clone();
        records.push(store.slice(1000..90_000));
        for version in [4i16, 11, 12, 13, 16] {
            let resp = response(&records);
            let copied = encode_response(9, version, &resp).unwrap();
            let framed = encode_with_records(9, version, &resp, &records).unwrap();
            assert_eq!(framed.len(), copied.len(), "v{version}");
            assert_eq!(framed.to_bytes(), copied, "v{version}");
            // The large record sets were shared, not copied: their parts point into them.
            let shared = framed
                .parts()
                .iter()
                .filter(|p| records.iter().any(|r| !r.is_empty() && r.as_ptr() == p.as_ptr()))
                .count();
            assert_eq!(shared, 4, "v{version}: parts {:?}", framed.parts().iter().map(Bytes::len).collect::<Vec<_>>());
        }
    }

    #[test]
    fn held_bytes_count_what_a_part_may_keep_alive() {
        let chunk = sluice_storage::cache::CHUNK_BYTES;
        let min = sluice_storage::cache::SHARED_SLICE_MIN;
        let f = Frame {
            parts: vec![Bytes::from(vec![0u8; 100]), Bytes::from(vec![0u8; min]), Bytes::from(vec![0u8; 2 * chunk])],
        };
        // A part that may be a slice of a cache chunk counts as the chunk; others as themselves.
        assert_eq!(f.held_bytes(), 100 + chunk + 2 * chunk);
        assert_eq!(f.len(), 100 + min + 2 * chunk);
    }

    /// For every API sluice serves and every version: raising the throttle of an encoded
    /// answer gives the bytes of the answer encoded with that throttle (or the same bytes when
    /// the version has no such field).
    #[test]
    fn with_throttle_writes_the_field_of_every_api_and_version() {
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::Encodable;
        fn check<T: Default + Encodable + HeaderVersion>(key: ApiKey, set: fn(T, i32) -> T) {
            let spec = crate::api::APIS.iter().find(|s| s.key == key).expect("served");
            // Versions beyond the crate's are checked by their own module (`api::share_v2`).
            for v in spec.min_version..=spec.max_version.min(key.valid_versions().max) {
                let plain = encode_response(7, v, &set(T::default(), 3)).unwrap();
                let want = encode_response(7, v, &set(T::default(), 4321)).unwrap();
                let got = with_throttle(Frame::from(plain.clone()), key, v, 4321).to_bytes();
                assert_eq!(got, want, "{key:?} v{v}");
                // A larger throttle already there stays.
                let kept = with_throttle(Frame::from(want.clone()), key, v, 5).to_bytes();
                assert_eq!(kept, want, "{key:?} v{v}");
            }
        }
        macro_rules! all {
            ($($key:ident => $ty:ty),* $(,)?) => {{
                $(check::<$ty>(ApiKey::$key, |r, ms| r.with_throttle_time_ms(ms));)*
                vec![$(ApiKey::$key),*]
            }};
        }
        let checked = all![
            Fetch => FetchResponse, ListOffsets => ListOffsetsResponse, Metadata => MetadataResponse,
            ApiVersions => ApiVersionsResponse, CreateTopics => CreateTopicsResponse,
            DeleteTopics => DeleteTopicsResponse, OffsetCommit => OffsetCommitResponse,
            OffsetFetch => OffsetFetchResponse, FindCoordinator => FindCoordinatorResponse,
            JoinGroup => JoinGroupResponse, Heartbeat => HeartbeatResponse, LeaveGroup => LeaveGroupResponse,
            SyncGroup => SyncGroupResponse, DescribeGroups => DescribeGroupsResponse,
            ListGroups => ListGroupsResponse, DeleteGroups => DeleteGroupsResponse,
            OffsetDelete => OffsetDeleteResponse, InitProducerId => InitProducerIdResponse,
            DeleteRecords => DeleteRecordsResponse, OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
            DescribeConfigs => DescribeConfigsResponse, AlterConfigs => AlterConfigsResponse,
            DescribeLogDirs => DescribeLogDirsResponse, CreatePartitions => CreatePartitionsResponse,
            IncrementalAlterConfigs => IncrementalAlterConfigsResponse, DescribeCluster => DescribeClusterResponse,
            ElectLeaders => ElectLeadersResponse, AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
            ListPartitionReassignments => ListPartitionReassignmentsResponse,
            AddPartitionsToTxn => AddPartitionsToTxnResponse, AddOffsetsToTxn => AddOffsetsToTxnResponse,
            EndTxn => EndTxnResponse, TxnOffsetCommit => TxnOffsetCommitResponse,
            DescribeTransactions => DescribeTransactionsResponse, ListTransactions => ListTransactionsResponse,
            DescribeProducers => DescribeProducersResponse,
            ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
            ConsumerGroupDescribe => ConsumerGroupDescribeResponse,
            DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
            AlterUserScramCredentials => AlterUserScramCredentialsResponse, DescribeAcls => DescribeAclsResponse,
            CreateAcls => CreateAclsResponse, DeleteAcls => DeleteAclsResponse,
            DescribeClientQuotas => DescribeClientQuotasResponse, AlterClientQuotas => AlterClientQuotasResponse,
            ShareGroupHeartbeat => ShareGroupHeartbeatResponse, ShareGroupDescribe => ShareGroupDescribeResponse,
            ShareFetch => ShareFetchResponse, ShareAcknowledge => ShareAcknowledgeResponse,
            DescribeShareGroupOffsets => DescribeShareGroupOffsetsResponse,
            AlterShareGroupOffsets => AlterShareGroupOffsetsResponse,
            DeleteShareGroupOffsets => DeleteShareGroupOffsetsResponse,
            DescribeTopicPartitions => DescribeTopicPartitionsResponse,
        ];
        // Every API served is checked, but Produce (its handler fills the field), the SASL
        // APIs, WriteTxnMarkers and DescribeQuorum (no such field).
        for spec in crate::api::APIS {
            let exempt = matches!(
                spec.key,
                ApiKey::Produce
                    | ApiKey::SaslHandshake
                    | ApiKey::SaslAuthenticate
                    | ApiKey::WriteTxnMarkers
                    | ApiKey::DescribeQuorum
            );
            assert!(exempt || checked.contains(&spec.key), "{:?} not checked", spec.key);
        }
    }

    #[test]
    fn without_large_records_the_frame_is_one_part() {
        let records = vec![Bytes::from_static(b"short")];
        let f = encode_with_records(1, 12, &response(&records), &records).unwrap();
        assert_eq!(f.parts().len(), 1);
        assert_eq!(f.to_bytes(), encode_response(1, 12, &response(&records)).unwrap());
    }
}
