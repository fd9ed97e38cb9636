//! Read-committed views of partitions: the last stable offset and the aborted transactions a
//! `read_committed` Fetch or ListOffsets answers, asked of the partitions' owners.
//!
//! Contract: one message per remote owner (local ones directly), after the data was read. A
//! view taken after the read is consistent with it: the LSO only moves forward, and every
//! transaction ended between the read and the view is either committed (its data visible) or
//! listed as aborted up to the view's LSO; the caller cuts the records at the view's LSO,
//! clamped to the high watermark of its read.

use super::partition::TxnView;
use crate::error::PartitionError;
use crate::msg::ShardMsg;
use crate::route::{self, group_by_owner, Tagged};
use crate::shard::Shard;
use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt;
use sluice_core::TopicPartition;
use std::rc::Rc;

/// One partition whose view is wanted: aborted transactions from `from` on.
#[derive(Debug, Clone)]
pub struct ViewItem {
    pub index: usize,
    pub tp: TopicPartition,
    pub from: i64,
}

pub type ViewResult = Tagged<TxnView>;

/// On the owner.
pub fn views_local(shard: &Shard, items: Vec<ViewItem>) -> Vec<ViewResult> {
    items
        .into_iter()
        .map(|i| match shard.log(&i.tp) {
            None => (i.index, Err(PartitionError::UnknownTopicOrPartition)),
            Some(log) => {
                let view = shard.txn_partitions.view(&i.tp, log.high_watermark().0, log.log_start().0, i.from);
                (i.index, Ok(view))
            }
        })
        .collect()
}

/// Asks the owners; answers in `index` order.
pub async fn views(shard: &Rc<Shard>, items: Vec<ViewItem>) -> Vec<ViewResult> {
    let grouped = group_by_owner(shard, items, |i| &i.tp);
    let mut out = route::unknown(grouped.unknown, |i| i.index);
    let mut parts: Vec<LocalBoxFuture<'static, Vec<ViewResult>>> = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            let local = views_local(shard, items);
            parts.push(async move { local }.boxed_local());
        } else {
            let indexes = items.iter().map(|i| i.index).collect();
            parts.push(route::ask(shard, owner, indexes, |reply| ShardMsg::TxnViews { items, reply }).await);
        }
    }
    for part in join_all(parts).await {
        out.extend(part);
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

/// Whole batches of `records` that end below `lso` (a read_committed answer stops at the LSO).
pub fn cut_at(records: &bytes::Bytes, lso: i64) -> bytes::Bytes {
    let mut pos = 0;
    while pos + sluice_core::batch::HEADER_LEN <= records.len() {
        let Ok(h) = sluice_core::batch::BatchHeader::parse(&records[pos..]) else { break };
        if h.last_offset() >= lso || pos + h.total_len() > records.len() {
            break;
        }
        pos += h.total_len();
    }
    records.slice(..pos)
}

/// Waits until any of the partitions' high watermarks passes the offset given (a marker or new
/// data: what may move a read_committed answer forward), or `deadline`. One wait per owner,
/// as a Fetch long poll.
pub async fn wait_beyond(
    shard: &Rc<Shard>,
    items: Vec<(TopicPartition, sluice_core::Offset)>,
    deadline: std::time::Instant,
) {
    let grouped = group_by_owner(shard, items, |i| &i.0);
    if !grouped.unknown.is_empty() {
        return;
    }
    let mut waits: Vec<LocalBoxFuture<'_, ()>> = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            let shard = shard.clone();
            waits.push(async move { crate::fetch::wait_local(&shard, &items, deadline).await }.boxed_local());
            continue;
        }
        let (reply, rx) = futures::channel::oneshot::channel();
        if shard.send(owner, ShardMsg::WaitForData { items, deadline, reply }).await.is_err() {
            return;
        }
        waits.push(
            async move {
                let _ = rx.await;
            }
            .boxed_local(),
        );
    }
    if !waits.is_empty() {
        futures::future::select_all(waits).await;
    }
}
