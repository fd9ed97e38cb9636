//! The broker-to-broker wire format: a fixed preamble, then length-prefixed frames, each an
//! rkyv-encoded [`Header`] and a raw payload.
//!
//! Contract: every frame is `u32 length (big endian) | u32 header length | header | payload`,
//! where `length` counts everything after itself. [`FrameHead::parse`] refuses a length above
//! `PEER_MAX_FRAME_BYTES` or a header length above `PEER_MAX_HEADER_BYTES` (or longer than
//! the frame) before anything is allocated; [`decode_header`] validates the rkyv bytes
//! (bytecheck) before reading them, so garbage is an error, never undefined behaviour. The
//! payload is opaque here (a batch of Raft messages for many groups, as the Raft driver
//! encodes it). No protobuf is ever decoded from the wire.

use bytes::{BufMut, Bytes, BytesMut};
use rkyv::rancor;
use sluice_core::limits::{PEER_MAX_FRAME_BYTES, PEER_MAX_HEADER_BYTES};

/// First bytes the dialing broker sends: says "sluice broker-to-broker", then the wire version.
pub const PREAMBLE: [u8; 8] = *b"SLPEER\x00\x01";
/// Version of this format (also the preamble's last byte and in [`Header::Hello`]).
pub const WIRE_VERSION: u16 = 1;
/// Bytes of the two length fields.
pub const PREFIX_BYTES: usize = 8;

/// What a payload holds, so a receiver knows which subsystem decodes it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// A batch of Raft messages (any number of groups), encoded by the Raft driver.
    Raft,
    /// Metadata record batches a broker forwards to the controller to propose
    /// (`sluice_shard::admin::cluster`).
    MetadataForward,
    /// The controller's answer to a `MetadataForward`.
    MetadataForwardReply,
    /// A preferred leader election forwarded to a broker holding a replica of the partition
    /// (`peer::elect`).
    ElectPreferred,
    /// Transaction markers a coordinator sends to the leaders of its transactions' partitions
    /// (Kafka's WriteTxnMarkers, `peer::calls`).
    TxnMarkers,
    /// The leaders' answer to a `TxnMarkers`.
    TxnMarkersReply,
    /// A partition leader asks the transaction coordinator's broker to verify (or, for
    /// transaction version 2, add) a transactional batch's partitions (Kafka's
    /// AddPartitionsToTxn from a broker, `sluice_shard::txn::verify`).
    TxnVerify,
    /// The coordinator's answer to a `TxnVerify`.
    TxnVerifyReply,
    /// A share group's coordinator asks a partition leader to read, reset or forget
    /// share-partition state (Kafka's Read/Write/DeleteShareGroupState, `peer::calls`).
    ShareState,
    /// The leader's answer to a `ShareState`.
    ShareStateReply,
    /// DescribeQuorum forwarded to the metadata log's leader (`peer::quorum`).
    QuorumDescribe,
    /// The leader's answer to a `QuorumDescribe`.
    QuorumDescribeReply,
}

/// Where on the receiving broker a data frame goes.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To this shard (the sender knows it; it must exist there).
    Shard(u16),
    /// To whichever shard owns this partition there (the receiver's placement decides).
    Partition { topic: String, partition: i32 },
}

/// The frame header. Handshake: the dialer sends `Hello`, the acceptor answers `Welcome` or
/// `Refused` and closes. Then the dialer sends `Heartbeat` and `Data`; the acceptor answers
/// each `Heartbeat` with a `HeartbeatAck`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Header {
    Hello(Hello),
    Welcome(Welcome),
    Refused { reason: String },
    Heartbeat { seq: u64 },
    HeartbeatAck { seq: u64 },
    Data { kind: PayloadKind, route: Route },
}

/// Who is dialling.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub cluster_id: String,
    pub node_id: i32,
    /// The dialling shard and the dialler's shard count.
    pub shard: u16,
    pub shards: u16,
    /// The client address it gives in Metadata.
    pub client_host: String,
    pub client_port: u16,
}

/// The acceptor's answer to a valid [`Hello`].
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub node_id: i32,
    pub shards: u16,
    pub client_host: String,
    pub client_port: u16,
}

/// Why bytes from a peer are not a valid frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a sluice peer: the preamble is {0:02x?}")]
    BadPreamble([u8; 8]),
    #[error("frame length {0} is out of range (4..={PEER_MAX_FRAME_BYTES})")]
    BadLength(u32),
    #[error("a {length}-byte frame is larger than the {max} bytes allowed here (before the handshake: a header only)")]
    Oversize { length: usize, max: usize },
    #[error("header length {header} does not fit a {frame}-byte frame (at most {PEER_MAX_HEADER_BYTES})")]
    BadHeaderLength { header: u32, frame: u32 },
    #[error("undecodable frame header: {0}")]
    BadHeader(String),
}

/// The lengths read from a frame's first [`PREFIX_BYTES`] bytes, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Bytes after the two length fields (header and payload).
    pub rest: usize,
    pub header: usize,
}

impl FrameHead {
    /// Checks the two length fields.
    pub fn parse(prefix: [u8; PREFIX_BYTES]) -> Result<FrameHead, WireError> {
        let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let header = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        let total = usize::try_from(length).map_err(|_| WireError::BadLength(length))?;
        if !(4..=PEER_MAX_FRAME_BYTES).contains(&total) {
            return Err(WireError::BadLength(length));
        }
        let rest = total - 4;
        let h = usize::try_from(header).map_err(|_| WireError::BadHeaderLength { header, frame: length })?;
        if h == 0 || h > rest || h > PEER_MAX_HEADER_BYTES {
            return Err(WireError::BadHeaderLength { header, frame: length });
        }
        Ok(FrameHead { rest, header: h })
    }
}

/// Checks the preamble a dialer sent.
pub fn check_preamble(got: [u8; 8]) -> Result<(), WireError> {
    if got == PREAMBLE {
        Ok(())
    } else {
        Err(WireError::BadPreamble(got))
    }
}

/// Encodes one frame: the length fields and the header; the payload is written after it as is
/// (kept apart so a large payload is never copied). Fails if the frame would exceed the limits.
pub fn encode_frame(header: &Header, payload_len: usize) -> Result<BytesMut, WireError> {
    let h = rkyv::to_bytes::<rancor::Error>(header).map_err(|e| WireError::BadHeader(e.to_string()))?;
    let header_len = u32::try_from(h.len()).map_err(|_| WireError::BadLength(u32::MAX))?;
    let total = 4usize.checked_add(h.len()).and_then(|n| n.checked_add(payload_len)).unwrap_or(usize::MAX);
    let length = u32::try_from(total).map_err(|_| WireError::BadLength(u32::MAX))?;
    if total > PEER_MAX_FRAME_BYTES {
        return Err(WireError::BadLength(length));
    }
    if h.len() > PEER_MAX_HEADER_BYTES {
        return Err(WireError::BadHeaderLength { header: header_len, frame: length });
    }
    let mut out = BytesMut::with_capacity(PREFIX_BYTES + h.len());
    out.put_u32(length);
    out.put_u32(header_len);
    out.extend_from_slice(&h);
    Ok(out)
}

/// Decodes (and validates) a header's bytes.
pub fn decode_header(bytes: &[u8]) -> Result<Header, WireError> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Header, rancor::Error>(&aligned).map_err(|e| WireError::BadHeader(e.to_string()))
}

/// Splits a whole frame body (`rest` bytes after the prefix) into its header and payload.
pub fn split_body(head: FrameHead, body: Bytes) -> Result<(Header, Bytes), WireError> {
    let header = decode_header(&body[..head.header])?;
    Ok((header, body.slice(head.header..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(header: &Header, payload: &[u8]) -> (Header, Bytes) {
        let mut frame = encode_frame(header, payload.len()).unwrap();
        frame.extend_from_slice(payload);
        let prefix: [u8; 8] = frame[..8].try_into().unwrap();
        let head = FrameHead::parse(prefix).unwrap();
        assert_eq!(head.rest, frame.len() - PREFIX_BYTES);
        split_body(head, frame.freeze().slice(8..)).unwrap()
    }

    #[test]
    fn every_header_round_trips() {
        let hello = Header::Hello(Hello {
            version: WIRE_VERSION,
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            node_id: 3,
            shard: 1,
            shards: 2,
            client_host: "127.0.0.1".into(),
            client_port: 9092,
        });
        let welcome = Header::Welcome(Welcome { node_id: 1, shards: 4, client_host: "h".into(), client_port: 1 });
        let data =
            Header::Data { kind: PayloadKind::Raft, route: Route::Partition { topic: "t".into(), partition: 7 } };
        for h in [hello, welcome, Header::Refused { reason: "no".into() }, Header::Heartbeat { seq: 9 }, data] {
            let (back, payload) = roundtrip(&h, b"raft bytes");
            assert_eq!(back, h);
            assert_eq!(&payload[..], b"raft bytes");
        }
    }

    #[test]
    fn lengths_are_checked_before_allocation() {
        let prefix = |len: u32, h: u32| {
            let mut p = [0u8; 8];
            p[..4].copy_from_slice(&len.to_be_bytes());
            p[4..].copy_from_slice(&h.to_be_bytes());
            p
        };
        assert!(matches!(FrameHead::parse(prefix(u32::MAX, 4)), Err(WireError::BadLength(_))));
        assert!(matches!(FrameHead::parse(prefix(3, 1)), Err(WireError::BadLength(3))));
        let over = u32::try_from(PEER_MAX_FRAME_BYTES + 1).unwrap();
        assert!(matches!(FrameHead::parse(prefix(over, 4)), Err(WireError::BadLength(_))));
        assert!(matches!(FrameHead::parse(prefix(100, 97)), Err(WireError::BadHeaderLength { .. })));
        assert!(matches!(FrameHead::parse(prefix(100, 0)), Err(WireError::BadHeaderLength { .. })));
        assert_eq!(FrameHead::parse(prefix(100, 96)).unwrap(), FrameHead { rest: 96, header: 96 });
        assert!(encode_frame(&Header::Heartbeat { seq: 1 }, PEER_MAX_FRAME_BYTES).is_err());
    }

    #[test]
    fn the_preamble_is_checked() {
        check_preamble(PREAMBLE).unwrap();
        assert!(check_preamble(*b"GET / HT").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn garbage_headers_are_errors_not_crashes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_header(&bytes);
        }

        #[test]
        fn data_frames_round_trip(topic in "[a-z]{0,40}", partition in any::<i32>(), shard in any::<u16>(),
                                  payload in proptest::collection::vec(any::<u8>(), 0..2048), by_shard in any::<bool>()) {
            let route = if by_shard { Route::Shard(shard) } else { Route::Partition { topic, partition } };
            let h = Header::Data { kind: PayloadKind::Raft, route };
            let (back, p) = roundtrip(&h, &payload);
            prop_assert_eq!(back, h);
            prop_assert_eq!(&p[..], &payload[..]);
        }

        #[test]
        fn prefixes_never_pass_out_of_range(len in any::<u32>(), h in any::<u32>()) {
            let mut p = [0u8; 8];
            p[..4].copy_from_slice(&len.to_be_bytes());
            p[4..].copy_from_slice(&h.to_be_bytes());
            if let Ok(head) = FrameHead::parse(p) {
                prop_assert!(head.rest + 4 <= PEER_MAX_FRAME_BYTES);
                prop_assert!(head.header >= 1 && head.header <= head.rest && head.header <= PEER_MAX_HEADER_BYTES);
            }
        }
    }
}
