//! Grouping a request's partitions by owning shard.
//!
//! Contract: [`group_by_owner`] looks owners up in the shard's current metadata snapshot and
//! returns one bucket per owner (local shard included) plus the items whose topic or partition
//! is unknown, so callers send at most one message per remote shard.

use crate::error::PartitionError;
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
    let meta = shard.metadata();
    let mut by_owner: BTreeMap<ShardId, Vec<T>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for item in items {
        let t = tp(&item);
        match meta.owner(&t.topic, t.partition) {
            Some(owner) if owner.index() < shard.n_shards => by_owner.entry(owner).or_default().push(item),
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
