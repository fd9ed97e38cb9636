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
use sluice_shard::msg::FetchResult;
use sluice_shard::txn::partition::TxnView;
use sluice_shard::txn::view::{cut_at, views, ViewItem};
use sluice_shard::Shard;
use std::rc::Rc;

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
