//! Graceful shutdown under load, and an unclean (SIGKILL) stop under load.
//!
//! SIGTERM while an idempotent acks=all producer writes continuously: the
//! broker exits 0 within a bound, leaves `<data_dir>/.clean-shutdown`, and
//! after a restart every acknowledged record is there (same offsets, in
//! order, intact, contiguous); only a complete marker is trusted at the next
//! start. SIGKILL under load: the restart logs no panic
//! and the data is intact; what recovery logs is printed.

use std::time::{Duration, Instant};

use sluice_tests::Broker;

use crate::common::*;
use crate::torture::{assert_no_panic, produce_then, verify_log, PartState};

const CLEAN_MARKER: &str = ".clean-shutdown";
/// Bound for the exit after SIGTERM (the producer keeps sending meanwhile).
const TERM_BOUND: Duration = Duration::from_secs(20);

#[test]
fn sigterm_under_load_exits_cleanly_and_keeps_acknowledged_records() {
    let _slot = exclusive_slot();
    let mut broker = Broker::start(2);
    let topic = topic_name("sigterm-load");
    create_topic(&broker.addr(), &topic, 4);
    let mut parts: Vec<PartState> = vec![PartState::default(); 4];
    let marker = broker.data_dir().join(CLEAN_MARKER);

    for round in 0..2u64 {
        let mut exit = None;
        let mut took = Duration::ZERO;
        let (sent, acked, stderr) = produce_then(
            &mut broker,
            &topic,
            &mut parts,
            5_000_000,
            400 + 300 * round,
            &format!("SIGTERM round {round}"),
            |b| {
                let t0 = Instant::now();
                exit = b.terminate(TERM_BOUND);
                took = t0.elapsed();
            },
        );
        eprintln!("SIGTERM round {round}: sent {sent}, acked {acked}, exit {exit:?} after {took:?}");
        let status = exit.unwrap_or_else(|| {
            panic!(
                "round {round}: broker did not exit within {TERM_BOUND:?} of SIGTERM under load (SIGKILLed)\n{stderr}"
            )
        });
        assert_eq!(status.code(), Some(0), "round {round}: exit status after SIGTERM under load\n{stderr}");
        assert_no_panic(&stderr, &format!("round {round}: SIGTERMed run"));
        assert!(
            marker.exists(),
            "round {round}: {} missing after a clean SIGTERM exit; data dir has {:?}\n{stderr}",
            marker.display(),
            std::fs::read_dir(broker.data_dir())
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                .unwrap_or_default()
        );
        assert!(acked > 0, "round {round}: nothing acknowledged");

        broker.start_again();
        let restart = broker.current_stderr();
        assert_no_panic(&restart, &format!("round {round}: restart after SIGTERM"));
        let cuts: Vec<&str> = restart.lines().filter(|l| l.contains("recovery cut")).collect();
        assert!(cuts.is_empty(), "round {round}: recovery cut data after a CLEAN shutdown: {cuts:#?}");
        eprintln!(
            "round {round}: marker after restart exists={} (a running broker should not claim a clean state)",
            marker.exists()
        );
        let (checked, unacked) = verify_log(&broker.addr(), &topic, &mut parts, true, round, 0);
        eprintln!("round {round}: verified {checked} records ({unacked} present but not acknowledged)");
    }
    broker.stop();
    assert!(marker.exists(), "{} missing after the final clean stop", marker.display());
}

#[test]
fn sigkill_under_load_restarts_without_panic_and_intact() {
    let _slot = exclusive_slot();
    let mut broker = Broker::start(2);
    let topic = topic_name("sigkill-load");
    create_topic(&broker.addr(), &topic, 4);
    let mut parts: Vec<PartState> = vec![PartState::default(); 4];
    let marker = broker.data_dir().join(CLEAN_MARKER);
    let mut all_cuts = Vec::new();
    for round in 0..2u64 {
        let (sent, acked, stderr) = produce_then(
            &mut broker,
            &topic,
            &mut parts,
            5_000_000,
            300 + 200 * round,
            &format!("SIGKILL round {round}"),
            |b| b.kill(),
        );
        assert_no_panic(&stderr, &format!("round {round}: killed run"));
        assert!(
            !marker.exists(),
            "round {round}: {} exists after SIGKILL: the next start would skip recovery of a dirty log",
            marker.display()
        );
        broker.start_again();
        let restart = broker.current_stderr();
        assert_no_panic(&restart, &format!("round {round}: restart after SIGKILL"));
        let warn: Vec<String> = restart
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("recovery"))
            .map(|l| l.to_string())
            .collect();
        eprintln!("SIGKILL round {round}: sent {sent}, acked {acked}; restart WARN/ERROR/recovery lines: {warn:#?}");
        all_cuts.extend(warn.into_iter().filter(|l| l.contains("recovery cut")));
        let (checked, unacked) = verify_log(&broker.addr(), &topic, &mut parts, true, round, 0);
        eprintln!("round {round}: verified {checked} records ({unacked} present but not acknowledged)");
    }
    eprintln!("recovery cut lines over both rounds: {all_cuts:#?}");
    broker.stop();
}

/// SIGTERM while hostile connections are open: one stalled in the middle of
/// a frame, one that pipelined requests and never reads its answers (so the
/// broker owes it responses it cannot write), and stalled 100 MiB frame
/// headers. The broker must still exit 0 within the bound and leave the
/// clean-shutdown marker; a restart serves the data.
#[test]
fn sigterm_with_hostile_connections_exits_within_bound() {
    use std::io::Write;
    let _slot = shared_slot();
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let port = broker.port();
    let topic = topic_name("sigterm-hostile");
    create_topic(&addr, &topic, 2);
    let sent: Vec<Msg> = (0..500).map(|i| make_msg(i, 2, 31)).collect();
    {
        let p = producer(&addr, "all");
        send_all(&p, &topic, &sent, 0);
        take_deliveries(&p, 0, sent.len());
    }
    // Half an ApiVersions frame.
    let mut half = raw_connect(port);
    half.write_all(&[0, 0, 0, 40, 0, 18, 0, 0, 0, 0]).unwrap();
    // A never-reading client: pipelined ApiVersions v0 until the socket blocks.
    let mut flood = raw_connect(port);
    let mut frame = vec![0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0];
    frame[3] = (frame.len() - 4) as u8;
    flood.set_nonblocking(true).unwrap();
    let mut written = 0usize;
    let mut blocked = 0;
    for _ in 0..2_000_000 {
        match flood.write(&frame) {
            Ok(n) if n == frame.len() => written += 1,
            Ok(_) => break,
            Err(_) => {
                blocked += 1;
                if blocked > 200 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    // Stalled 100 MiB frame headers.
    let mut stalled = Vec::new();
    for i in 0..6 {
        let mut s = raw_connect(port);
        let mut head = (100i32 << 20).to_be_bytes().to_vec();
        head.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, i]);
        s.write_all(&head).unwrap();
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let status = broker.terminate(TERM_BOUND);
    let took = t0.elapsed();
    eprintln!("SIGTERM with hostile connections ({written} unread ApiVersions requests queued): exit {status:?} after {took:?}");
    let stderr = broker.current_stderr();
    for l in stderr.lines().filter(|l| !l.contains("sluice_net::conn: closing connection")).skip(2) {
        eprintln!("  broker: {l}");
    }
    let status = status.unwrap_or_else(|| {
        panic!("no exit within {TERM_BOUND:?} of SIGTERM with hostile connections open (SIGKILLed)\n{stderr}")
    });
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM with hostile connections\n{stderr}");
    assert_no_panic(&stderr, "SIGTERM with hostile connections");
    assert!(broker.data_dir().join(CLEAN_MARKER).exists(), "no clean-shutdown marker\n{stderr}");
    drop((half, flood, stalled));
    broker.start_again();
    let started = broker.current_stderr();
    assert!(started.contains("clean_start=true"), "the marker of a clean exit was not trusted\n{started}");
    consume_and_verify(&broker.addr(), &topic, 2, &sent, None, Duration::from_secs(60));

    // A marker cut short (created, then the write failed) must not vouch for the indexes.
    broker.stop();
    let marker = broker.data_dir().join(CLEAN_MARKER);
    std::fs::write(&marker, b"").expect("truncate the marker");
    broker.start_again();
    let started = broker.current_stderr();
    assert!(started.contains("clean_start=false"), "an empty marker was trusted\n{started}");
    assert!(!marker.exists(), "the empty marker was left in place");
    consume_and_verify(&broker.addr(), &topic, 2, &sent, None, Duration::from_secs(60));
    broker.stop();
}
