//! Grouping a request's partitions by owning shard.
//!
//! Contract: [`group_by_owner`] looks owners up in the shard's current metadata snapshot and
//! returns one bucket per owner (local shard included) plus the items whose topic or partition
//! is unknown, so callers send at most one message per remote shard.

use crate::error::PartitionError;
use crate::metadata::MetadataSnapshot;
use crate::msg::ShardMsg;
use crate::shard::Shard;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use sluice_core::{ShardId, TopicPartition};
use std::collections::BTreeMap;

/// Items grouped by owner, and the items no shard owns.
pub struct Grouped<T> {
    pub by_owner: BTreeMap<ShardId, Vec<T>>,
    pub unknown: Vec<T>,
}

pub fn group_by_owner<T>(shard: &Shard, items: Vec<T>, tp: impl Fn(&T) -> &TopicPartition) -> Grouped<T> {
    group_in(&shard.metadata(), shard.n_shards, items, tp)
}

/// [`group_by_owner`] in a given snapshot, for `n_shards` shards: an owner beyond them (a
/// snapshot written for more shards) counts as unknown. Each bucket keeps the items' order.
pub(crate) fn group_in<T>(
    meta: &MetadataSnapshot,
    n_shards: usize,
    items: Vec<T>,
    tp: impl Fn(&T) -> &TopicPartition,
) -> Grouped<T> {
    let mut by_owner: BTreeMap<ShardId, Vec<T>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for item in items {
        let t = tp(&item);
        match meta.owner(&t.topic, t.partition) {
            Some(owner) if owner.index() < n_shards => by_owner.entry(owner).or_default().push(item),
            _ => unknown.push(item),
        }
    }
    Grouped { by_owner, unknown }
}

/// One partition's answer, tagged with its position in the request.
pub type Tagged<R> = (usize, Result<R, PartitionError>);

/// Sends one message to `owner` (built around the reply sender) and returns a future for the
/// answer. If the owner cannot be reached, every index gets the error.
pub async fn ask<R: 'static>(
    shard: &Shard,
    owner: ShardId,
    indexes: Vec<usize>,
    msg: impl FnOnce(oneshot::Sender<Vec<Tagged<R>>>) -> ShardMsg,
) -> LocalBoxFuture<'static, Vec<Tagged<R>>> {
    let (reply, rx) = oneshot::channel();
    let sent = shard.send(owner, msg(reply)).await;
    async move {
        let lost = |e: PartitionError| indexes.iter().map(|i| (*i, Err(e.clone()))).collect::<Vec<_>>();
        match sent {
            Err(e) => lost(e),
            Ok(()) => rx.await.unwrap_or_else(|_| lost(PartitionError::ShuttingDown)),
        }
    }
    .boxed_local()
}

/// Items no shard owns, answered with UnknownTopicOrPartition.
pub fn unknown<T, R>(items: Vec<T>, index: impl Fn(&T) -> usize) -> Vec<Tagged<R>> {
    items.iter().map(|i| (index(i), Err(PartitionError::UnknownTopicOrPartition))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicMeta;
    use proptest::prelude::*;

    fn meta() -> MetadataSnapshot {
        let mut m = MetadataSnapshot::default();
        m.topics.insert("t".into(), TopicMeta { id: [1; 16], shards: vec![0, 1, 2, 1], configs: Default::default() });
        m
    }

    #[test]
    fn partitions_go_to_their_owner_and_the_rest_to_unknown() {
        let items: Vec<(usize, TopicPartition)> =
            [("t", 1), ("u", 0), ("t", 0), ("t", 3), ("t", 4), ("t", -1), ("t", 2)]
                .into_iter()
                .map(|(t, p)| TopicPartition::new(t, p))
                .enumerate()
                .collect();
        // A snapshot placed for 3 shards, served by 2: shard 2's partition is nobody's here.
        let g = group_in(&meta(), 2, items, |(_, tp)| tp);
        let idx = |v: &Vec<(usize, TopicPartition)>| v.iter().map(|(i, _)| *i).collect::<Vec<_>>();
        assert_eq!(g.by_owner.keys().copied().collect::<Vec<_>>(), vec![ShardId(0), ShardId(1)]);
        assert_eq!(idx(&g.by_owner[&ShardId(0)]), vec![2]);
        assert_eq!(idx(&g.by_owner[&ShardId(1)]), vec![0, 3], "in request order");
        assert_eq!(idx(&g.unknown), vec![1, 4, 5, 6]);
        let answers: Vec<Tagged<()>> = unknown(g.unknown, |(i, _)| *i);
        assert!(answers.iter().all(|(_, r)| *r == Err(PartitionError::UnknownTopicOrPartition)));
    }

    proptest! {
        /// Every item lands in exactly one place: its owner's bucket when it has one among the
        /// shards, else the unknown ones; buckets keep request order.
        #[test]
        fn each_item_in_one_bucket(parts in proptest::collection::vec((0u8..3, -2i32..6), 0..40), n_shards in 1usize..4) {
            let m = meta();
            let items: Vec<(usize, TopicPartition)> = parts
                .iter()
                .map(|(t, p)| TopicPartition::new(if *t == 0 { "u" } else { "t" }, *p))
                .enumerate()
                .collect();
            let g = group_in(&m, n_shards, items.clone(), |(_, tp)| tp);
            let mut seen = g.unknown.iter().map(|(i, _)| *i).collect::<Vec<_>>();
            for (owner, bucket) in &g.by_owner {
                prop_assert!(owner.index() < n_shards);
                prop_assert!(bucket.windows(2).all(|w| w[0].0 < w[1].0));
                for (_, tp) in bucket {
                    prop_assert_eq!(m.owner(&tp.topic, tp.partition), Some(*owner));
                }
                seen.extend(bucket.iter().map(|(i, _)| *i));
            }
            for (_, tp) in &g.unknown {
                prop_assert!(m.owner(&tp.topic, tp.partition).is_none_or(|o| o.index() >= n_shards));
            }
            seen.sort();
            prop_assert_eq!(seen, (0..items.len()).collect::<Vec<_>>());
        }
    }
}
