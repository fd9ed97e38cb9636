//! DescribeProducers' view of partitions (`kafka-transactions.sh describe-producers` and
//! `find-hanging`, and the start-offset lookup of `abort`): every active producer of a
//! partition with its epoch, last sequence, last write and the first offset of its open
//! transaction there, asked of the partitions' owners.
//!
//! Contract: one message per remote owner (local ones directly). A producer appears when the
//! partition's idempotent-producer state holds it (unexpired) or its transaction index holds an
//! open transaction of it; producers are in id order. Any replica holding the partition
//! answers (Kafka's `Partition.activeProducerState` reads the local log, leader or follower):
//! a follower's transaction index follows the committed log, its producer state the appended
//! one. The coordinator epoch of a producer's last marker is not kept per producer here: it is
//! answered -1 (Kafka's value for a producer with no marker yet), which `abort` turns into 0.

use crate::error::PartitionError;
use crate::msg::ShardMsg;
use crate::route::{self, group_by_owner, Tagged};
use crate::shard::Shard;
use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt;
use sluice_core::TopicPartition;
use std::collections::BTreeMap;
use std::rc::Rc;

/// One partition whose producers are wanted.
#[derive(Debug, Clone)]
pub struct ProducersItem {
    pub index: usize,
    pub tp: TopicPartition,
}

/// One active producer of a partition (DescribeProducers' `ProducerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    /// When it last wrote here (ms since the epoch), -1 when unknown.
    pub last_timestamp: i64,
    /// Always -1 here (module docs).
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction here, or -1.
    pub txn_start_offset: i64,
}

pub type ProducersResult = Tagged<Vec<ActiveProducer>>;

/// Merges a partition's producer state with the open transactions of its index (pure).
pub fn merge(
    producers: &[sluice_storage::producers::ProducerSummary],
    open: &[(i64, i64, i16)],
) -> Vec<ActiveProducer> {
    let mut by_id: BTreeMap<i64, ActiveProducer> = BTreeMap::new();
    for p in producers {
        by_id.insert(
            p.producer_id,
            ActiveProducer {
                producer_id: p.producer_id,
                epoch: p.epoch,
                last_sequence: p.last_sequence,
                last_timestamp: p.last_ms,
                coordinator_epoch: -1,
                txn_start_offset: -1,
            },
        );
    }
    for &(producer_id, first, epoch) in open {
        by_id
            .entry(producer_id)
            .or_insert(ActiveProducer {
                producer_id,
                epoch,
                last_sequence: -1,
                last_timestamp: -1,
                coordinator_epoch: -1,
                txn_start_offset: -1,
            })
            .txn_start_offset = first;
    }
    by_id.into_values().collect()
}

/// On the owner.
pub fn describe_local(shard: &Shard, items: Vec<ProducersItem>) -> Vec<ProducersResult> {
    let now = sluice_core::clock::now_ms();
    items
        .into_iter()
        .map(|i| match shard.log(&i.tp) {
            // In the metadata (it was routed here) but not hosted by this broker.
            None => (i.index, Err(PartitionError::NotLeaderOrFollower { leader: None, epoch: -1 })),
            Some(log) => {
                let open = shard.txn_partitions.open_of(&i.tp);
                (i.index, Ok(merge(&log.describe_producers(now), &open)))
            }
        })
        .collect()
}

/// Asks the owners; answers in `index` order.
pub async fn describe(shard: &Rc<Shard>, items: Vec<ProducersItem>) -> Vec<ProducersResult> {
    let grouped = group_by_owner(shard, items, |i| &i.tp);
    let mut out = route::unknown(grouped.unknown, |i| i.index);
    let mut parts: Vec<LocalBoxFuture<'static, Vec<ProducersResult>>> = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            let local = describe_local(shard, items);
            parts.push(async move { local }.boxed_local());
        } else {
            let indexes = items.iter().map(|i| i.index).collect();
            parts.push(route::ask(shard, owner, indexes, |reply| ShardMsg::TxnProducers { items, reply }).await);
        }
    }
    for part in join_all(parts).await {
        out.extend(part);
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::producers::ProducerSummary;

    #[test]
    fn producers_and_open_transactions_merge_by_id() {
        let state = [
            ProducerSummary { producer_id: 4, epoch: 1, last_sequence: 9, last_ms: 1000 },
            ProducerSummary { producer_id: 8, epoch: 0, last_sequence: 2, last_ms: 2000 },
        ];
        let got = merge(&state, &[(8, 40, 0), (2, 7, 3)]);
        let ids: Vec<i64> = got.iter().map(|p| p.producer_id).collect();
        assert_eq!(ids, vec![2, 4, 8]);
        assert_eq!(got[0].txn_start_offset, 7, "an open transaction without producer state is listed");
        assert_eq!((got[0].epoch, got[0].last_sequence, got[0].last_timestamp), (3, -1, -1));
        assert_eq!(got[1].txn_start_offset, -1, "no open transaction");
        assert_eq!((got[2].txn_start_offset, got[2].last_sequence, got[2].last_timestamp), (40, 2, 2000));
        assert!(got.iter().all(|p| p.coordinator_epoch == -1));
    }
}
