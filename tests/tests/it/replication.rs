//! The replication runtime on real brokers: the metadata log (Raft group 0 on shard 0 of
//! every member) elects a leader, commits proposals that every broker reads back in the same
//! order, and after kill -9 of its leader elects another that commits again — without waiting
//! for the dead broker's peer session to lapse (its closed connections count at once).
//!
//! Contract: uses the test-only probe of the fault-injection build
//! (`SLUICE_TEST_RAFT_PROBE=1`: shard 0 proposes a batch every 100 ms while it leads the
//! metadata log and logs every committed batch it reads, `raft probe batch offset=O crc=C`,
//! through the same API the metadata layer uses). Every broker is stopped by its harness;
//! every wait has a deadline.

use crate::common::*;
use sluice_tests::Broker;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const LOG_BYTES: usize = 16 << 20;

fn member(node: usize, peer_ports: &[u16]) -> Broker {
    member_with(node, peer_ports, &[("SLUICE_TEST_RAFT_PROBE", "1")])
}

fn member_with(node: usize, peer_ports: &[u16], env: &[(&str, &str)]) -> Broker {
    cluster_member(node, peer_ports, &MemberOpts { dir_prefix: "sluice-it-repl-", session_ms: 1000, env, config: None })
}

/// The committed batches a broker's probe read in its latest run, in order: (offset, crc).
fn committed(b: &Broker) -> Vec<(i64, u64)> {
    let mut out = Vec::new();
    for line in b.log_tail(LOG_BYTES).lines() {
        let Some(rest) = line.split("raft probe batch offset=").nth(1) else { continue };
        let mut it = rest.split(" crc=");
        let off = it.next().and_then(|s| s.trim().parse().ok());
        let crc = it.next().and_then(|s| s.trim().parse().ok());
        if let (Some(o), Some(c)) = (off, crc) {
            if out.last().is_some_and(|&(last, _)| o <= last) {
                out.clear(); // the broker restarted: its probe reads from the start again
            }
            out.push((o, c));
        }
    }
    out
}

/// The latest metadata leader (node, epoch) a broker logged.
fn leader(b: &Broker) -> Option<(i32, i32)> {
    let mut last = None;
    for line in b.log_tail(LOG_BYTES).lines() {
        if !line.contains("raft leader") || !line.contains("group=metadata") {
            continue;
        }
        let node = line.split("leader=Some(").nth(1).and_then(|s| s.split(')').next()).and_then(|s| s.parse().ok());
        let epoch = line.split("epoch=").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok());
        if let (Some(n), Some(e)) = (node, epoch) {
            last = Some((n, e));
        }
    }
    last
}

/// Waits until every broker in `live` read at least `n` committed batches.
fn wait_committed(brokers: &[Broker], live: &[usize], n: usize, what: &str) {
    let start = Instant::now();
    loop {
        let counts: Vec<usize> = live.iter().map(|&i| committed(&brokers[i]).len()).collect();
        if counts.iter().all(|&c| c >= n) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: committed batches per broker {counts:?}, want {n} each");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every broker's committed sequence is a prefix of the longest one.
fn assert_same_history(brokers: &[Broker], live: &[usize]) -> Vec<(i64, u64)> {
    let seqs: Vec<Vec<(i64, u64)>> = live.iter().map(|&i| committed(&brokers[i])).collect();
    let longest = seqs.iter().max_by_key(|s| s.len()).cloned().unwrap_or_default();
    for (i, s) in live.iter().zip(&seqs) {
        assert_eq!(&longest[..s.len()], &s[..], "broker {i} read a different committed history");
    }
    for w in longest.windows(2) {
        assert!(w[0].0 < w[1].0, "offsets increase along the committed history: {w:?}");
    }
    longest
}

#[test]
fn the_metadata_log_commits_on_every_broker_and_survives_the_leaders_kill() {
    let _slot = crate::common::shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member(i, &ports)).collect();
    let all = [0, 1, 2];
    wait_committed(&brokers, &all, 10, "before the kill");
    assert_same_history(&brokers, &all);
    let (old_leader, old_epoch) = leader(&brokers[0]).expect("broker 0 saw a leader");
    let old = usize::try_from(old_leader).expect("a node id");
    brokers[old].kill();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
    let before = rest.iter().map(|&i| committed(&brokers[i]).len()).max().unwrap_or(0);
    // A new leader of a later epoch, and proposals that commit again on both survivors.
    wait_committed(&brokers, &rest, before + 10, "after the leader's kill");
    let after = assert_same_history(&brokers, &rest);
    let (new_leader, new_epoch) = leader(&brokers[rest[0]]).expect("a leader after the kill");
    assert_ne!(new_leader, old_leader, "the killed broker cannot lead");
    assert!(new_epoch > old_epoch, "a new leader has a later epoch ({new_epoch} after {old_epoch})");
    // The killed broker returns and catches up with the same history.
    brokers[old].start_again();
    let n = after.len() + 5;
    wait_committed(&brokers, &all, n, "after the old leader's restart");
    assert_same_history(&brokers, &all);
    for b in &mut brokers {
        b.stop();
    }
}

/// One acks=all produce of a one-record batch tagged `tag` to partition 0: (error code, base).
fn produce_one(port: u16, topic: &str, tag: &str) -> Option<(i16, i64)> {
    produce_acks_all(port, (topic, 0), record_batch_at(&[0], tag), 10_000, Duration::from_secs(10))
}

/// Produces `tag` to whichever of `live` accepts it (the leader), until `deadline`; the others
/// must answer NOT_LEADER_OR_FOLLOWER (6). Returns (leader index, base offset).
fn produce_to_leader(brokers: &[Broker], live: &[usize], topic: &str, tag: &str) -> (usize, i64) {
    let start = Instant::now();
    loop {
        for &i in live {
            match produce_one(brokers[i].port(), topic, tag) {
                Some((0, base)) => return (i, base),
                Some((6, _)) | None => {}
                Some((code, _)) => panic!("broker {i} answered produce with error {code}"),
            }
        }
        assert!(start.elapsed() < DEADLINE, "no broker of {live:?} accepted {tag} as leader");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record of `topic` partition 0 read from `addr` (librdkafka), by offset: its value.
fn read_all(addr: &str, topic: &str, n: usize) -> BTreeMap<i64, String> {
    let c = consumer(addr);
    assign(&c, topic, &[(0, rdkafka::Offset::Beginning)]);
    let (got, errors) = consume_n(&c, n, Duration::from_secs(20));
    // A killed broker stays in Metadata for a few peer sessions (Kafka keeps one for its 9 s
    // session), so librdkafka may report failed connections to it; they are not data errors.
    let errors: Vec<&String> = errors.iter().filter(|e| !e.contains("BrokerTransportFailure")).collect();
    assert!(errors.is_empty(), "consumer errors: {errors:?}");
    got.into_iter()
        .map(|m| (m.offset, String::from_utf8_lossy(m.msg.payload.as_deref().unwrap_or_default()).into_owned()))
        .collect()
}

#[test]
fn a_replicated_partition_acks_on_the_leader_refuses_on_followers_and_fails_over() {
    let _slot = crate::common::shared_slot();
    let ports = free_ports(3);
    let mut brokers: Vec<Broker> = (0..3).map(|i| member_with(i, &ports, &[])).collect();
    let topic = "repl-data";
    // One CreateTopics through the metadata log: every broker opens its replica.
    create_topic_rf(&brokers[0].addr(), topic, 1, 3);
    let all = [0, 1, 2];
    let mut acked: BTreeMap<i64, String> = BTreeMap::new();
    let (leader, base) = produce_to_leader(&brokers, &all, topic, "first");
    acked.insert(base, "first-v0".into());
    for n in 0..20 {
        let tag = format!("a{n}");
        let (l, base) = produce_to_leader(&brokers, &all, topic, &tag);
        assert_eq!(l, leader, "the leader does not change without a failure");
        assert!(acked.keys().all(|&o| o < base), "offsets grow");
        acked.insert(base, format!("{tag}-v0"));
    }
    for &f in all.iter().filter(|&&i| i != leader) {
        assert_eq!(produce_one(brokers[f].port(), topic, "x").map(|r| r.0), Some(6), "a follower refuses produce");
    }
    let got = read_all(&brokers[leader].addr(), topic, acked.len());
    assert_eq!(got, acked, "the leader serves every acknowledged record at its offset, Raft's entries left out");

    brokers[leader].kill();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let (new_leader, _) = {
        let (l, base) = produce_to_leader(&brokers, &rest, topic, "after");
        acked.insert(base, "after-v0".into());
        (l, base)
    };
    for n in 0..10 {
        let tag = format!("b{n}");
        let (l, base) = produce_to_leader(&brokers, &rest, topic, &tag);
        assert_eq!(l, new_leader);
        acked.insert(base, format!("{tag}-v0"));
    }
    let got = read_all(&brokers[new_leader].addr(), topic, acked.len());
    assert_eq!(got, acked, "every acknowledged record survives the leader's kill, once, at its offset");
    for &i in &rest {
        brokers[i].stop();
    }
}

/// A kill -9 closes the dead broker's connections at once: the survivors' peer links see the
/// close, Raft counts the broker silent at once (`Driver::peer_down`) and the metadata log
/// elects a new leader within about a tick — here with a peer session of 10 s, which the
/// election no longer waits for (before, it started only once the session lapsed).
#[test]
fn a_killed_leaders_closed_links_start_the_election_before_its_session_lapses() {
    let _slot = crate::common::shared_slot();
    let ports = free_ports(3);
    let env = [("SLUICE_TEST_RAFT_PROBE", "1")];
    let opts = MemberOpts { dir_prefix: "sluice-it-repl-", session_ms: 10_000, env: &env, config: None };
    let mut brokers: Vec<Broker> = (0..3).map(|i| cluster_member(i, &ports, &opts)).collect();
    let all = [0, 1, 2];
    wait_committed(&brokers, &all, 5, "before the kill");
    let (old_leader, old_epoch) = leader(&brokers[0]).expect("broker 0 saw a leader");
    let old = usize::try_from(old_leader).expect("a node id");
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
    let killed = Instant::now();
    brokers[old].kill();
    let elected = loop {
        let views: Vec<Option<(i32, i32)>> = rest.iter().map(|&i| leader(&brokers[i])).collect();
        if views.iter().all(|v| v.is_some_and(|(n, e)| n != old_leader && e > old_epoch)) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(8), "no new leader 8 s after the kill: {views:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(elected < Duration::from_secs(5), "a new leader {elected:?} after the kill: the election waited");
    let before = rest.iter().map(|&i| committed(&brokers[i]).len()).max().unwrap_or(0);
    wait_committed(&brokers, &rest, before + 3, "after the leader's kill");
    assert_same_history(&brokers, &rest);
    eprintln!("new metadata leader {elected:?} after the kill (peer session 10 s)");
    for &i in &rest {
        brokers[i].stop();
    }
}
