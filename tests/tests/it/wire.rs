//! Wire-level checks with raw frames: unknown API keys and ApiVersions.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_tests::Broker;

use crate::common::*;

/// API keys the broker must advertise: (name, key).
const REQUIRED_APIS: [(&str, i16); 7] = [
    ("Produce", 0),
    ("Fetch", 1),
    ("ListOffsets", 2),
    ("Metadata", 3),
    ("ApiVersions", 18),
    ("CreateTopics", 19),
    ("DeleteTopics", 20),
];

fn api_versions_v3(s: &mut std::net::TcpStream, corr: i32) -> ApiVersionsResponse {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-it"))
        .with_client_software_version(StrBytes::from_static_str("0.1.0"));
    let frame = encode_request(18, 3, 2, corr, &req);
    let resp = roundtrip(s, &frame).expect("ApiVersions v3 roundtrip");
    let mut buf = Bytes::from(resp);
    // ApiVersions responses always use header v0.
    let h = ResponseHeader::decode(&mut buf, 0).expect("decode response header");
    assert_eq!(h.correlation_id, corr, "ApiVersions v3 correlation id");
    let r = ApiVersionsResponse::decode(&mut buf, 3).expect("decode ApiVersionsResponse v3");
    assert_eq!(buf.remaining(), 0, "trailing bytes after ApiVersionsResponse v3");
    r
}

fn check_advertised(r: &ApiVersionsResponse) {
    assert_eq!(r.error_code, 0, "ApiVersions error code");
    for (name, key) in REQUIRED_APIS {
        let v = r
            .api_keys
            .iter()
            .find(|a| a.api_key == key)
            .unwrap_or_else(|| panic!("{name}({key}) not advertised; got {:?}", r.api_keys));
        assert!(
            v.min_version >= 0 && v.min_version <= v.max_version,
            "{name}({key}) bad version range {}..{}",
            v.min_version,
            v.max_version
        );
    }
    let v18 = r.api_keys.iter().find(|a| a.api_key == 18).unwrap();
    assert!(v18.max_version >= 3, "ApiVersions max version {} < 3", v18.max_version);
}

#[test]
fn unknown_api_key_gets_response_and_connection_survives() {
    let _slot = shared_slot();
    let mut broker = Broker::start(1);
    let mut s = raw_connect(broker.port());

    // Request header v1 by hand: api key 9999, version 0, correlation id,
    // client id; empty body.
    let corr = 0x1234_5678;
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    frame.put_i16(9999);
    frame.put_i16(0);
    frame.put_i32(corr);
    let client = b"sluice-it-raw";
    frame.put_i16(client.len() as i16);
    frame.put_slice(client);
    let size = (frame.len() - 4) as i32;
    frame[0..4].copy_from_slice(&size.to_be_bytes());

    let resp = roundtrip(&mut s, &frame)
        .unwrap_or_else(|e| panic!("no response frame to unknown API key 9999 v0: {e}{}", broker.log_tail(4096)));
    assert!(resp.len() >= 4, "response to unknown API key is {} bytes, too short for a correlation id", resp.len());
    let got = i32::from_be_bytes(resp[0..4].try_into().unwrap());
    assert_eq!(got, corr, "correlation id of the response to API key 9999");

    // Same socket: ApiVersions v3 works and advertises the required APIs.
    let r = api_versions_v3(&mut s, 42);
    check_advertised(&r);
    drop(s);
    broker.stop();
}

#[test]
fn api_versions_v0_and_v3_advertise_required_apis() {
    let _slot = shared_slot();
    let mut broker = Broker::start(1);
    let mut s = raw_connect(broker.port());

    let frame = encode_request(18, 0, 1, 7, &ApiVersionsRequest::default());
    let resp = roundtrip(&mut s, &frame).expect("ApiVersions v0 roundtrip");
    let mut buf = Bytes::from(resp);
    let h = ResponseHeader::decode(&mut buf, 0).expect("decode header");
    assert_eq!(h.correlation_id, 7);
    let r0 = ApiVersionsResponse::decode(&mut buf, 0).expect("decode ApiVersionsResponse v0");
    assert_eq!(buf.remaining(), 0, "trailing bytes after ApiVersionsResponse v0");
    check_advertised(&r0);

    let r3 = api_versions_v3(&mut s, 8);
    check_advertised(&r3);
    drop(s);
    broker.stop();
}

/// Kafka clients first send ApiVersions at their newest version; a broker
/// that does not know it answers UNSUPPORTED_VERSION (35) in v0 format with
/// its own ApiVersions range, and the connection stays usable.
#[test]
fn api_versions_unsupported_version_answers_error_35() {
    let _slot = shared_slot();
    let mut broker = Broker::start(1);
    let mut s = raw_connect(broker.port());

    // v127 header (flexible, v2) with an empty v3-shaped body.
    let req = ApiVersionsRequest::default();
    let mut frame = encode_request(18, 3, 2, 5, &req);
    frame[6..8].copy_from_slice(&127i16.to_be_bytes());
    let resp = roundtrip(&mut s, &frame).expect("response to ApiVersions v127");
    let mut buf = Bytes::from(resp);
    let h = ResponseHeader::decode(&mut buf, 0).expect("decode header");
    assert_eq!(h.correlation_id, 5);
    let r = ApiVersionsResponse::decode(&mut buf, 0).expect("decode v0-format error response");
    assert_eq!(r.error_code, 35, "ApiVersions v127 error code (UNSUPPORTED_VERSION)");
    assert!(
        r.api_keys.iter().any(|a| a.api_key == 18),
        "UNSUPPORTED_VERSION response should list ApiVersions' range: {:?}",
        r.api_keys
    );

    let r3 = api_versions_v3(&mut s, 6);
    check_advertised(&r3);
    drop(s);
    broker.stop();
}
