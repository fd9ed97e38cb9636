//! Where a topic's partitions are led: the load generator's routing.
//!
//! Contract: `--broker` may list several bootstrap addresses separated by commas; the first
//! that answers Metadata is asked. Every partition maps to the client address of its leader as
//! that Metadata states it, so each produce and fetch goes to the partition's leader (as Kafka
//! clients route) and the workload is split over the leaders in proportion to the partitions
//! each leads ([`split`]). With one broker every partition maps to it and the plan is the
//! single-broker plan.

use crate::client::{self, ClientError};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_core::limits::{CLIENT_LEADER_ATTEMPTS, CLIENT_LEADER_PAUSE_MS};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const METADATA_VERSION: i16 = 12;

/// The bootstrap addresses of a `--broker` value.
pub fn bootstrap_list(brokers: &str) -> Vec<&str> {
    brokers.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// A connection to the first of `brokers` that accepts one.
pub async fn connect_any(brokers: &str) -> Result<(client::Sender, client::Receiver), ClientError> {
    let mut last = ClientError::Protocol(format!("no broker address in {brokers:?}"));
    for addr in bootstrap_list(brokers) {
        match client::connect(addr).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// partition → its leader's client address, waiting (bounded) while some have no leader yet.
pub async fn leader_addrs(brokers: &str, topic: &str) -> Result<BTreeMap<i32, String>, ClientError> {
    let (mut tx, mut rx) = connect_any(brokers).await?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))
        ]))
        .with_allow_auto_topic_creation(false);
    for _ in 0..CLIENT_LEADER_ATTEMPTS {
        let resp = client::call(&mut tx, &mut rx, &req, METADATA_VERSION).await?;
        let nodes: HashMap<i32, String> =
            resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        let t = resp.topics.first().ok_or_else(|| ClientError::Protocol("no topic in metadata".into()))?;
        // LEADER_NOT_AVAILABLE (5) is retried; any other error is final.
        if t.error_code != 0 && t.error_code != 5 {
            return Err(ClientError::Protocol(format!("topic {topic}: error code {}", t.error_code)));
        }
        let led: Option<BTreeMap<i32, String>> =
            t.partitions.iter().map(|p| nodes.get(&p.leader_id.0).map(|a| (p.partition_index, a.clone()))).collect();
        match led {
            Some(m) if t.error_code == 0 && !m.is_empty() => return Ok(m),
            _ => glommio::timer::sleep(Duration::from_millis(CLIENT_LEADER_PAUSE_MS)).await,
        }
    }
    Err(ClientError::Protocol(format!("topic {topic}: partitions without a known leader")))
}

/// Splits `workers` (connections or threads) over the leaders: each leader gets a share in
/// proportion to the partitions it leads (at least one), and each of its workers every k-th
/// of its partitions (or one of them when it has more workers than partitions). Returns
/// (leader address, partitions) per worker.
pub fn split(leaders: &BTreeMap<i32, String>, workers: usize) -> Vec<(String, Vec<i32>)> {
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (p, addr) in leaders {
        by_leader.entry(addr.as_str()).or_default().push(*p);
    }
    let total = leaders.len().max(1);
    let mut out = Vec::new();
    for (addr, parts) in by_leader {
        let k = (workers * parts.len()).div_ceil(total).max(1);
        for j in 0..k {
            let mut mine: Vec<i32> = parts.iter().enumerate().filter(|(i, _)| i % k == j).map(|(_, p)| *p).collect();
            if mine.is_empty() {
                mine.push(parts[j % parts.len()]);
            }
            out.push((addr.to_string(), mine));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaders(spec: &[(i32, &str)]) -> BTreeMap<i32, String> {
        spec.iter().map(|(p, a)| (*p, a.to_string())).collect()
    }

    #[test]
    fn one_broker_keeps_the_single_broker_plan() {
        let l = leaders(&[(0, "a"), (1, "a"), (2, "a"), (3, "a"), (4, "a"), (5, "a")]);
        let s = split(&l, 4);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].1, vec![0, 4]);
        assert_eq!(s[3].1, vec![3]);
        assert!(s.iter().all(|(a, _)| a == "a"));
    }

    #[test]
    fn every_partition_goes_to_a_worker_of_its_leader() {
        let l = leaders(&[(0, "a"), (1, "b"), (2, "c"), (3, "a"), (4, "b"), (5, "c")]);
        let s = split(&l, 4);
        let mut seen: Vec<i32> = Vec::new();
        for (addr, parts) in &s {
            for p in parts {
                assert_eq!(&l[p], addr);
                seen.push(*p);
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(s.len(), 6, "each of 3 leaders gets ceil(4 * 2 / 6) = 2 workers");
    }

    #[test]
    fn more_workers_than_partitions_reuse_partitions() {
        let l = leaders(&[(0, "a")]);
        let s = split(&l, 3);
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|(_, p)| p == &vec![0]));
    }

    #[test]
    fn bootstrap_lists_are_split_on_commas() {
        assert_eq!(bootstrap_list("a:1, b:2,,c:3"), vec!["a:1", "b:2", "c:3"]);
    }
}
