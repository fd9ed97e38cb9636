//! Request frames: the size prefix, the request header, and response encoding.
//!
//! Contract: [`parse_header`] never panics on any input; it returns the fixed fields it could
//! read (so even a request we cannot decode can be answered with its correlation id) and the
//! body. [`encode_response`] writes the size prefix, the response header of the right version,
//! and the body.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use thiserror::Error;

/// A request whose header was decoded; `body` starts at the request body.
#[derive(Debug, Clone)]
pub struct Request {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: Bytes,
    /// The client's address, when known (DescribeGroups shows it).
    pub peer: Option<std::net::SocketAddr>,
    /// The frame's size (header and body, without the size prefix): what a produce quota counts.
    pub size: usize,
    /// The request-time quota's throttle for this request (ms), known once its first phase
    /// ran (set by the connection); the connection writes it into every answer that has a
    /// `throttle_time_ms` (`response::with_throttle`), Produce's handler into its own.
    pub request_throttle_ms: std::rc::Rc<std::cell::Cell<i32>>,
}

/// Why a frame could not be handled; the connection is closed after logging it.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    #[error("cannot decode {what}: {why}")]
    Decode { what: &'static str, why: String },
    #[error("cannot encode response: {0}")]
    Encode(String),
    #[error("the request's task ended without an answer (its shard is stopping)")]
    Unanswered,
}

/// The fixed prefix every request header starts with.
#[derive(Debug, Clone, Copy)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
}

/// Reads api key, version and correlation id (first 8 bytes) without decoding further.
pub fn peek_prefix(frame: &[u8]) -> Result<HeaderPrefix, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    Ok(HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decodes the full request header of a known API and version.
pub fn parse_header(key: ApiKey, mut frame: Bytes) -> Result<Request, FrameError> {
    let prefix = peek_prefix(&frame)?;
    let size = frame.len();
    let header_version = key.request_header_version(prefix.version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| FrameError::Decode { what: "request header", why: e.to_string() })?;
    Ok(Request {
        api_key: header.request_api_key,
        version: header.request_api_version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
        body: frame,
        peer: None,
        size,
        request_throttle_ms: Default::default(),
    })
}

/// Decodes a request body of type `T` at the request's version.
pub fn decode_body<T: Decodable>(req: &Request) -> Result<T, FrameError> {
    let mut body = req.body.clone();
    T::decode(&mut body, req.version).map_err(|e| FrameError::Decode { what: "request body", why: e.to_string() })
}

/// Encodes a whole response frame (size prefix, header, body).
pub fn encode_response<T: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &T,
) -> Result<Bytes, FrameError> {
    let header_version = T::header_version(version);
    let size_hint = body.compute_size(version).unwrap_or(64);
    let mut buf = BytesMut::with_capacity(size_hint + 16);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, header_version).map_err(|e| FrameError::Encode(e.to_string()))?;
    body.encode(&mut buf, version).map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| FrameError::Encode("a response over 2 GiB".into()))?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The answer to a request for an API key or version this broker does not implement: the
/// correlation id and UNSUPPORTED_VERSION (35) as the first field, the shape every Kafka error
/// response starts with for ApiVersions. The connection stays open.
pub fn unsupported_response(correlation_id: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(10);
    buf.put_i32(6);
    buf.put_i32(correlation_id);
    buf.put_i16(kafka_protocol::ResponseError::UnsupportedVersion.code());
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_frames_are_refused_not_panicking() {
        assert!(peek_prefix(&[0, 1, 2]).is_err());
        assert!(parse_header(ApiKey::Metadata, Bytes::from_static(&[0, 3, 0, 9, 0, 0, 0, 1, 0xff])).is_err());
    }

    #[test]
    fn header_round_trip() {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(3)
            .with_request_api_version(12)
            .with_correlation_id(77)
            .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str("c")))
            .encode(&mut buf, 2)
            .unwrap();
        buf.put_u8(0xAB);
        let r = parse_header(ApiKey::Metadata, buf.freeze()).unwrap();
        assert_eq!((r.api_key, r.version, r.correlation_id), (3, 12, 77));
        assert_eq!(r.client_id.as_deref(), Some("c"));
        assert_eq!(&r.body[..], &[0xAB]);
    }
}
