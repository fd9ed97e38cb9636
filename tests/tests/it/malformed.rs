//! Malformed frames close only the offending connection; other clients
//! (rdkafka and a raw connection) keep working.

use std::io::Write;
use std::time::Duration;

use kafka_protocol::messages::ApiVersionsRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::Offset;
use sluice_tests::Broker;

use crate::common::*;

fn api_versions_ok(s: &mut std::net::TcpStream, corr: i32) -> Result<(), String> {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-it"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    let frame = encode_request(18, 3, 2, corr, &req);
    let resp = roundtrip(s, &frame).map_err(|e| format!("ApiVersions roundtrip: {e}"))?;
    check_api_versions(&resp, corr)
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let port = broker.port();
    let topic = topic_name("malformed");
    create_topic(&addr, &topic, 3);

    let p = producer(&addr, "1");
    let c = consumer(&addr);
    assign(&c, &topic, &[(0, Offset::Beginning), (1, Offset::Beginning), (2, Offset::Beginning)]);
    // A well-behaved raw connection opened before the garbage.
    let mut good = raw_connect(port);
    api_versions_ok(&mut good, 1).expect("raw ApiVersions before malformed frames");

    let mut big_len = 0x7fff_ffffi32.to_be_bytes().to_vec();
    big_len.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 7]);
    let mut neg_one = (-1i32).to_be_bytes().to_vec();
    neg_one.extend_from_slice(&[0, 18, 0, 0]);
    let mut neg_min = i32::MIN.to_be_bytes().to_vec();
    neg_min.extend_from_slice(&[0; 8]);
    // Size 2: too short to hold api key, version and correlation id.
    let short_header = vec![0, 0, 0, 2, 0, 18];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage (HTTP request)", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("size 0x7fffffff", big_len),
        ("size -1", neg_one),
        ("size i32::MIN", neg_min),
        ("size 2 (truncated header)", short_header),
    ];

    let mut all_sent: Vec<Msg> = Vec::new();
    let mut next_id = 0usize;
    let mut failures = Vec::new();
    for (round, (name, bytes)) in cases.iter().enumerate() {
        // rdkafka keeps producing between the bad connections.
        let batch: Vec<Msg> = (0..200).map(|i| make_msg(round * 1000 + i, 3, 21)).collect();
        send_all(&p, &topic, &batch, next_id);
        take_deliveries(&p, next_id, batch.len());
        next_id += batch.len();
        all_sent.extend(batch.iter().cloned());

        let mut bad = raw_connect(port);
        bad.write_all(bytes).expect("write malformed frame");
        if let Err(e) = wait_closed(&mut bad, Duration::from_secs(5)) {
            failures.push(format!("{name}: {e}"));
        }
        assert!(broker.is_running(), "broker died after malformed frame {name}");
        if let Err(e) = api_versions_ok(&mut good, 100 + round as i32) {
            failures.push(format!("other raw connection broken after {name}: {e}"));
        }
        // The long-lived rdkafka consumer still receives the new batch.
        let (got, errors) = consume_n(&c, batch.len(), Duration::from_secs(30));
        verify(&batch, None, &got, &errors);
        assert!(errors.is_empty(), "consumer errors after {name}: {errors:?}");
    }
    drop(c);
    assert!(failures.is_empty(), "malformed-frame handling: {failures:#?}");

    // Everything produced while the bad connections came and went is there.
    consume_and_verify(&addr, &topic, 3, &all_sent, None, Duration::from_secs(60));
    let errs = producer_errors(&p);
    assert!(errs.is_empty(), "producer client errors: {errs:?}");
    drop(p);
    broker.stop();
}
