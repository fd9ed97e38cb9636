//! Version 2 of ShareFetch and ShareAcknowledge (Kafka 4.2+, KIP-1206 and KIP-1222) around the
//! `kafka-protocol` crate, which knows version 1 only.
//!
//! Contract: version 2 differs from version 1 by top-level fields only (checked against Kafka
//! 4.4's generated schemas): ShareFetchRequest adds `ShareAcquireMode int8` and `IsRenewAck
//! bool` after `BatchSize`; ShareAcknowledgeRequest adds `IsRenewAck bool` after
//! `ShareSessionEpoch`; ShareAcknowledgeResponse adds `AcquisitionLockTimeoutMs int32` after
//! `ErrorMessage`; ShareFetchResponse is unchanged. A v2 request is read by taking these fields
//! out of the body and handing the rest to the crate's v1 decoder; a v2 ShareAcknowledge
//! response is the v1 encoding with the lock timeout put back in; a v2 ShareFetch response is
//! the v1 encoding. Versions 0 and 1 pass through untouched (their new fields read as
//! version 1 means them: batch-optimized, no renew). Nothing here decodes a whole message, and
//! a body too short for its fields is a decode error (the connection is closed, as for any
//! body the crate cannot decode).

use crate::frame::{decode_body, encode_response, FrameError, Request};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ResponseHeader, ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

/// The version the crate decodes and encodes for both APIs.
const CODEC_VERSION: i16 = 1;

/// The APIs this module serves beyond the crate's versions, with the highest version served
/// (the API table's test allows these).
pub const EXTENDED: &[(ApiKey, i16)] = &[(ApiKey::ShareFetch, 2), (ApiKey::ShareAcknowledge, 2)];

/// How a ShareFetch acquires records (KIP-1206).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcquireMode {
    /// 0: records of whole batches; `MaxRecords` is a soft limit.
    #[default]
    BatchOptimized,
    /// 1: never more than `MaxRecords` records in the whole answer, cutting inside a batch.
    RecordLimit,
}

/// The fields version 2 added to a ShareFetch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FetchExtra {
    /// `None`: a mode this broker does not know (answered INVALID_REQUEST).
    pub mode: Option<AcquireMode>,
    /// The acknowledgements may be RENEW; the request acknowledges only (KIP-1222).
    pub renew: bool,
}

/// Reads a ShareFetch request of any served version.
pub fn decode_fetch(req: &Request) -> Result<(ShareFetchRequest, FetchExtra), FrameError> {
    if req.version <= CODEC_VERSION {
        return Ok((decode_body(req)?, FetchExtra { mode: Some(AcquireMode::BatchOptimized), renew: false }));
    }
    // GroupId, MemberId, then six int32: epoch, max wait, min bytes, max bytes, max records,
    // batch size.
    let at = after_two_strings(&req.body)? + 6 * 4;
    let extra = field_bytes(&req.body, at, 2)?;
    let mode = match extra[0] {
        0 => Some(AcquireMode::BatchOptimized),
        1 => Some(AcquireMode::RecordLimit),
        _ => None,
    };
    let body = decode_v1(&req.body, at, 2)?;
    Ok((body, FetchExtra { mode, renew: extra[1] != 0 }))
}

/// Reads a ShareAcknowledge request of any served version, with its `IsRenewAck`.
pub fn decode_acknowledge(req: &Request) -> Result<(ShareAcknowledgeRequest, bool), FrameError> {
    if req.version <= CODEC_VERSION {
        return Ok((decode_body(req)?, false));
    }
    // GroupId, MemberId, then the session epoch.
    let at = after_two_strings(&req.body)? + 4;
    let renew = field_bytes(&req.body, at, 1)?[0] != 0;
    Ok((decode_v1(&req.body, at, 1)?, renew))
}

/// The response frame of a ShareFetch of any served version (version 2 is encoded as 1).
pub fn fetch_response(req: &Request, body: &ShareFetchResponse) -> Result<Bytes, FrameError> {
    encode_response(req.correlation_id, req.version.min(CODEC_VERSION), body)
}

/// The response frame of a ShareAcknowledge of any served version; `lock_ms` is written from
/// version 2 on.
pub fn acknowledge_response(req: &Request, body: &ShareAcknowledgeResponse, lock_ms: i32) -> Result<Bytes, FrameError> {
    if req.version <= CODEC_VERSION {
        return encode_response(req.correlation_id, req.version, body);
    }
    let mut v1 = BytesMut::new();
    body.encode(&mut v1, CODEC_VERSION).map_err(|e| FrameError::Encode(e.to_string()))?;
    // ThrottleTimeMs int32, ErrorCode int16, then ErrorMessage.
    let at = after_string(&v1, 6).map_err(|e| FrameError::Encode(e.to_string()))?;
    let mut v2 = BytesMut::with_capacity(v1.len() + 4);
    v2.extend_from_slice(&v1[..at]);
    v2.extend_from_slice(&lock_ms.to_be_bytes());
    v2.extend_from_slice(&v1[at..]);
    frame(req.correlation_id, ShareAcknowledgeResponse::header_version(req.version), &v2)
}

/// A response frame around an already encoded body.
fn frame(correlation_id: i32, header_version: i16, body: &[u8]) -> Result<Bytes, FrameError> {
    let mut buf = BytesMut::with_capacity(body.len() + 16);
    buf.extend_from_slice(&[0; 4]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, header_version).map_err(|e| FrameError::Encode(e.to_string()))?;
    buf.extend_from_slice(body);
    let len = i32::try_from(buf.len() - 4).map_err(|_| FrameError::Encode("a response over 2 GiB".into()))?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The body without the `n` version-2 bytes at `at`, decoded at version 1.
fn decode_v1<T: Decodable>(body: &Bytes, at: usize, n: usize) -> Result<T, FrameError> {
    let mut v1 = BytesMut::with_capacity(body.len() - n);
    v1.extend_from_slice(&body[..at]);
    v1.extend_from_slice(&body[at + n..]);
    let mut v1 = v1.freeze();
    T::decode(&mut v1, CODEC_VERSION).map_err(|e| FrameError::Decode { what: "request body", why: e.to_string() })
}

fn field_bytes(body: &[u8], at: usize, n: usize) -> Result<&[u8], FrameError> {
    body.get(at..at + n).ok_or_else(|| short("the version 2 fields"))
}

/// Where the body's first two fields, compact nullable strings (GroupId, MemberId), end.
fn after_two_strings(body: &[u8]) -> Result<usize, FrameError> {
    let first = after_string(body, 0)?;
    after_string(body, first)
}

/// Where the compact nullable string at `at` ends (an unsigned varint of length + 1, 0 for
/// null, then the bytes).
fn after_string(body: &[u8], at: usize) -> Result<usize, FrameError> {
    let mut len: u64 = 0;
    let mut pos = at;
    for shift in (0..35).step_by(7) {
        let b = *body.get(pos).ok_or_else(|| short("a string's length"))?;
        pos += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            let bytes = usize::try_from(len.saturating_sub(1)).map_err(|_| short("a string"))?;
            let end = pos.checked_add(bytes).filter(|e| *e <= body.len()).ok_or_else(|| short("a string"))?;
            return Ok(end);
        }
    }
    Err(FrameError::Decode {
        what: "request body",
        why: "a string's length is not a varint of 5 bytes or fewer".into(),
    })
}

fn short(what: &str) -> FrameError {
    FrameError::Decode { what: "request body", why: format!("the body ends inside {what}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::share_acknowledge_response::{
        LeaderIdAndEpoch, PartitionData, ShareAcknowledgeTopicResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    // Encoded by Apache Kafka 4.4's own classes (ShareFetchRequestData etc., MessageUtil) at
    // version 2: topic id 0102…0f10.
    const FETCH_RECORD_LIMIT: &str = "036731046d2d3100000003000001f4000000010010000000000001000000010100020102030405060708090a0b0c0d0e0f100200000002020000000000000005000000000000000704010002000000020102030405060708090a0b0c0d0e0f1002000000090000";
    const FETCH_RENEW: &str = "036731046d2d310000000400000000000000000000000000000000000000000001020102030405060708090a0b0c0d0e0f10020000000002000000000000000a000000000000000a02040000000100";
    const ACK_RENEW: &str = "036731046d2d310000000501020102030405060708090a0b0c0d0e0f1002000000010200000000000000000000000000000003020400000000";
    const ACK_RESPONSE: &str =
        "0000000000000000003a98020102030405060708090a0b0c0d0e0f100200000001000000ffffffffffffffff0000000100";
    const ACK_RESPONSE_ERROR: &str = "00000000002a0462616400007530010100";

    fn unhex(s: &str) -> Bytes {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>().into()
    }

    fn request(version: i16, body: Bytes) -> Request {
        Request {
            api_key: 78,
            version,
            correlation_id: 9,
            client_id: None,
            size: body.len(),
            body,
            peer: None,
            request_throttle_ms: Default::default(),
        }
    }

    #[test]
    fn kafkas_v2_share_fetch_is_read_with_its_new_fields() {
        let (f, extra) = decode_fetch(&request(2, unhex(FETCH_RECORD_LIMIT))).unwrap();
        assert_eq!(extra, FetchExtra { mode: Some(AcquireMode::RecordLimit), renew: false });
        assert_eq!(f.group_id.unwrap().0.as_str(), "g1");
        assert_eq!(f.member_id.unwrap().as_str(), "m-1");
        assert_eq!((f.share_session_epoch, f.max_wait_ms, f.min_bytes), (3, 500, 1));
        assert_eq!((f.max_bytes, f.max_records, f.batch_size), (1 << 20, 1, 1));
        let p = &f.topics[0].partitions[0];
        assert_eq!(p.partition_index, 2);
        let b = &p.acknowledgement_batches[0];
        assert_eq!((b.first_offset, b.last_offset, b.acknowledge_types.clone()), (5, 7, vec![1, 0, 2]));
        assert_eq!(f.forgotten_topics_data[0].partitions, vec![9]);

        let (f, extra) = decode_fetch(&request(2, unhex(FETCH_RENEW))).unwrap();
        assert_eq!(extra, FetchExtra { mode: Some(AcquireMode::BatchOptimized), renew: true });
        assert_eq!((f.max_wait_ms, f.min_bytes, f.max_bytes, f.max_records), (0, 0, 0, 0));
        assert_eq!(f.topics[0].partitions[0].acknowledgement_batches[0].acknowledge_types, vec![4]);
    }

    #[test]
    fn an_unknown_acquire_mode_is_reported_not_guessed() {
        let mut body = unhex(FETCH_RECORD_LIMIT).to_vec();
        // "g1" and "m-1" take 3 + 4 bytes, then six int32: the mode is at 31.
        assert_eq!(body[31], 1);
        body[31] = 7;
        let (_, extra) = decode_fetch(&request(2, body.into())).unwrap();
        assert_eq!(extra.mode, None);
    }

    #[test]
    fn kafkas_v2_share_acknowledge_is_read_with_its_renew_flag() {
        let (a, renew) = decode_acknowledge(&request(2, unhex(ACK_RENEW))).unwrap();
        assert!(renew);
        assert_eq!(a.share_session_epoch, 5);
        let b = &a.topics[0].partitions[0].acknowledgement_batches[0];
        assert_eq!((b.first_offset, b.last_offset, b.acknowledge_types.clone()), (0, 3, vec![4]));
    }

    #[test]
    fn version_1_passes_through() {
        let v1 = ShareFetchRequest::default().with_max_records(7);
        let mut buf = BytesMut::new();
        v1.encode(&mut buf, 1).unwrap();
        let (f, extra) = decode_fetch(&request(1, buf.freeze())).unwrap();
        assert_eq!(f.max_records, 7);
        assert_eq!(extra, FetchExtra { mode: Some(AcquireMode::BatchOptimized), renew: false });
    }

    #[test]
    fn a_v2_ack_response_is_kafkas_bytes() {
        let topic = uuid::Uuid::from_bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        let body = ShareAcknowledgeResponse::default().with_responses(vec![ShareAcknowledgeTopicResponse::default()
            .with_topic_id(topic)
            .with_partitions(vec![PartitionData::default()
                .with_partition_index(1)
                .with_current_leader(LeaderIdAndEpoch::default().with_leader_id(-1).with_leader_epoch(-1))])]);
        let f = acknowledge_response(&request(2, Bytes::new()), &body, 15_000).unwrap();
        // Size, correlation id 9, the header's empty tagged fields, then Kafka's body.
        let want = unhex(ACK_RESPONSE);
        assert_eq!(&f[4..9], &[0, 0, 0, 9, 0]);
        assert_eq!(&f[9..], &want[..]);
        assert_eq!(i32::from_be_bytes(f[..4].try_into().unwrap()) as usize, f.len() - 4);

        let err = ShareAcknowledgeResponse::default()
            .with_error_code(42)
            .with_error_message(Some(StrBytes::from_static_str("bad")));
        let f = acknowledge_response(&request(2, Bytes::new()), &err, 30_000).unwrap();
        assert_eq!(&f[9..], &unhex(ACK_RESPONSE_ERROR)[..]);
        // Version 1 has no lock timeout.
        let f1 = acknowledge_response(&request(1, Bytes::new()), &err, 30_000).unwrap();
        assert_eq!(f1, encode_response(9, 1, &err).unwrap());
    }

    #[test]
    fn with_throttle_finds_the_field_in_v2_answers() {
        let err = ShareAcknowledgeResponse::default().with_error_code(42);
        let plain = acknowledge_response(&request(2, Bytes::new()), &err, 1).unwrap();
        let want = acknowledge_response(&request(2, Bytes::new()), &err.clone().with_throttle_time_ms(77), 1).unwrap();
        let got = crate::response::with_throttle(plain.into(), ApiKey::ShareAcknowledge, 2, 77).to_bytes();
        assert_eq!(got, want);
        let fetch = ShareFetchResponse::default().with_acquisition_lock_timeout_ms(5);
        let plain = fetch_response(&request(2, Bytes::new()), &fetch).unwrap();
        let want = fetch_response(&request(2, Bytes::new()), &fetch.clone().with_throttle_time_ms(77)).unwrap();
        let got = crate::response::with_throttle(plain.into(), ApiKey::ShareFetch, 2, 77).to_bytes();
        assert_eq!(got, want);
    }

    proptest! {
        /// Any truncation of a v2 request is an error, never a panic; any group and member
        /// names are skipped exactly.
        #[test]
        fn truncated_bodies_fail_cleanly(cut in 0usize..120, group in "[a-z]{0,200}", member in "[a-z0-9-]{0,40}") {
            let full = unhex(FETCH_RECORD_LIMIT);
            let cut = cut.min(full.len());
            prop_assert!(cut == full.len() || decode_fetch(&request(2, full.slice(..cut))).is_err());
            let mut body = BytesMut::new();
            for s in [&group, &member] {
                let mut n = s.len() as u64 + 1;
                while n >= 0x80 {
                    body.extend_from_slice(&[(n as u8 & 0x7f) | 0x80]);
                    n >>= 7;
                }
                body.extend_from_slice(&[n as u8]);
                body.extend_from_slice(s.as_bytes());
            }
            // The rest of Kafka's request after its own "g1" and "m-1".
            body.extend_from_slice(&full[7..]);
            let (f, extra) = decode_fetch(&request(2, body.freeze())).unwrap();
            let (g, m) = (f.group_id.unwrap().0.to_string(), f.member_id.unwrap().to_string());
            prop_assert_eq!(g, group);
            prop_assert_eq!(m, member);
            prop_assert_eq!(extra.mode, Some(AcquireMode::RecordLimit));
        }
    }
}
