//! read_committed answers (isolation level 1): records cut at the last stable offset, with the
//! aborted transactions the consumer must skip.
//!
//! Contract: the views are asked of the owners after the reads and before the budget cut
//! (`sluice_shard::txn::view`); a partition's answer keeps only whole batches below its LSO
//! (clamped to its read's high watermark), and carries `last_stable_offset` and the aborted
//! transactions overlapping `[fetch offset, LSO)` (an empty list, not null, as Kafka answers
//! read_committed).

use kafka_protocol::messages::fetch_response::AbortedTransaction;
use kafka_protocol::messages::ProducerId;
use sluice_core::Offset;
use sluice_shard::fetch::{fetch, FetchPlan};
use sluice_shard::msg::FetchResult;
use sluice_shard::txn::partition::TxnView;
use sluice_shard::txn::view::{cut_at, views, wait_beyond, ViewItem};
use sluice_shard::Shard;
use std::rc::Rc;
use std::time::Instant;

/// A read_committed Fetch: reads (and long-polls) as any Fetch, cuts at the LSOs, and when
/// nothing committed came back while open transactions hold data back, waits (until
/// `max_wait`) for any partition to grow past what it saw — a marker moves the LSO — and reads
/// again; so a consumer behind an open transaction long-polls instead of spinning.
pub async fn read(
    shard: &Rc<Shard>,
    plan: FetchPlan,
    wanted: Vec<ViewItem>,
    slots: usize,
) -> (Vec<FetchResult>, Vec<Option<TxnView>>) {
    let deadline = Instant::now() + plan.max_wait;
    let mut plan = plan;
    loop {
        let mut read = fetch(shard, plan.clone()).await;
        let seen: Vec<(sluice_core::TopicPartition, Offset)> = plan
            .items
            .iter()
            .filter_map(|i| match read.iter().find(|(at, _)| *at == i.index) {
                Some((_, Ok(r))) => Some((i.tp.clone(), r.high_watermark)),
                _ => None,
            })
            .collect();
        let views = apply(shard, wanted.clone(), &mut read, slots).await;
        let bytes: usize = read.iter().map(|(_, r)| r.as_ref().map(|r| r.records.len()).unwrap_or(0)).sum();
        let failed = read.iter().any(|(_, r)| r.is_err());
        let now = Instant::now();
        if bytes > 0 || failed || now >= deadline || seen.is_empty() || shard.is_stopping() {
            return (read, views);
        }
        wait_beyond(shard, seen, deadline).await;
        plan.max_wait = deadline.saturating_duration_since(Instant::now());
    }
}

/// Cuts each read at its LSO; returns the view per result index (`slots` long).
pub async fn apply(
    shard: &Rc<Shard>,
    wanted: Vec<ViewItem>,
    read: &mut [FetchResult],
    slots: usize,
) -> Vec<Option<TxnView>> {
    let mut out = vec![None; slots];
    for (index, view) in views(shard, wanted).await {
        let Ok(view) = view else { continue };
        if let Some((_, Ok(r))) = read.iter_mut().find(|(i, _)| *i == index) {
            let lso = view.last_stable_offset.min(r.high_watermark.0);
            r.records = cut_at(&r.records, lso);
            out[index] = Some(TxnView { last_stable_offset: lso, aborted: view.aborted });
        }
    }
    out
}

/// The answer's aborted transactions.
pub fn aborted(view: &TxnView) -> Vec<AbortedTransaction> {
    view.aborted
        .iter()
        .map(|a| {
            AbortedTransaction::default().with_producer_id(ProducerId(a.producer_id)).with_first_offset(a.first_offset)
        })
        .collect()
}
