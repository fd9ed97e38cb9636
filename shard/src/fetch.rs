//! The fetch path: reads on the owners, long polls woken by the owners' logs, and the
//! response size budget.
//!
//! Contract: [`fetch`] reads the partitions (one message per remote owner); each owner reads
//! its partitions in request order, a few at a time, and starts no more reads once
//! `max_bytes` came back — the rest are answered empty, with their watermarks, as Kafka does
//! once a response is full, so a consumer of a thousand partitions does not make the broker
//! read a chunk of each for a 50 MB answer. If fewer than
//! `min_bytes` came back and `max_wait` has not passed, it asks each owner to answer as soon
//! as any of its partitions has data beyond the fetch offset (no timers polling logs), then
//! reads again; once one owner answers, the waits on the others are dropped, which ends them
//! on their owners too ([`serve_wait`]). The answer never exceeds `max_bytes` except for the first batch, which is
//! always returned whole so a consumer can make progress.

use crate::error::PartitionError;
use crate::msg::{FetchItem, FetchResult, ShardMsg};
use crate::route::{self, group_by_owner};
use crate::shard::Shard;
use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{join_all, select, select_all, Either, LocalBoxFuture};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use sluice_core::batch::LOG_OVERHEAD;
use sluice_core::limits::FETCH_READS_IN_FLIGHT;
use sluice_core::{Offset, TopicPartition};
use sluice_storage::cache::{CHUNK_BYTES, SHARED_SLICE_MIN};
use sluice_storage::{LogRead, PartitionLog};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a Fetch request asks for.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    pub items: Vec<FetchItem>,
    pub max_wait: Duration,
    pub min_bytes: usize,
    pub max_bytes: usize,
}

/// Reads owned partitions (on the owner) in request order. A read is started while less than
/// `budget` bytes came back and either none is in flight or, at most `FETCH_READS_IN_FLIGHT`
/// in flight, what they may return (each at most its partition's max bytes, within one cache
/// chunk) still fits the budget; so a fetch reads about `max_bytes` plus one partition read per
/// owner. While nothing came back, one read at a time goes on past the budget (even 0), so the
/// first batch with data is found. The partitions not read are answered empty, with their
/// watermarks (an unknown one still as unknown).
pub async fn read_local(shard: &Shard, items: Vec<FetchItem>, budget: usize) -> Vec<FetchResult> {
    let bound = |item: &FetchItem| item.max_bytes.min(CHUNK_BYTES);
    let mut out = Vec::with_capacity(items.len());
    let mut items = items.into_iter().peekable();
    let mut reads = FuturesOrdered::new();
    let (mut got, mut in_flight) = (0usize, 0usize);
    loop {
        while let Some(next) = items.peek() {
            let fits = reads.len() < FETCH_READS_IN_FLIGHT && got + in_flight + bound(next) <= budget;
            // Until some data came back, partitions are read one at a time even past the
            // budget (a budget of 0 included): the first batch is always answered whole.
            let start = if reads.is_empty() { got < budget || got == 0 } else { got < budget && fits };
            if !start {
                break;
            }
            let item = items.next().expect("peeked");
            let b = bound(&item);
            in_flight += b;
            let log = shard.log(&item.tp);
            // An unknown partition is answered as unknown (`read_one`) before any epoch check.
            let checked = match log {
                Some(_) => crate::replica::epochs::check(shard, &item.tp, item.current_leader_epoch),
                None => Ok(()),
            };
            let read = match checked {
                Ok(()) => read_one(log, item).boxed_local(),
                Err(e) => async move { (item.index, Err(e)) }.boxed_local(),
            };
            reads.push_back(read.map(move |r| (r, b)));
        }
        let Some((r, b)) = reads.next().await else { break };
        in_flight -= b;
        got += r.1.as_ref().map(|r| r.records.len()).unwrap_or(0);
        out.push(r);
    }
    for item in items {
        let checked = crate::replica::epochs::check(shard, &item.tp, item.current_leader_epoch);
        let r = match (shard.log(&item.tp), checked) {
            (None, _) => Err(PartitionError::UnknownTopicOrPartition),
            (Some(_), Err(e)) => Err(e),
            (Some(log), Ok(())) => {
                Ok(LogRead { records: Bytes::new(), high_watermark: log.high_watermark(), log_start: log.log_start() })
            }
        };
        out.push((item.index, r));
    }
    out
}

async fn read_one(log: Option<Rc<PartitionLog>>, item: FetchItem) -> FetchResult {
    match log {
        None => (item.index, Err(PartitionError::UnknownTopicOrPartition)),
        Some(log) => {
            let mut r = log.read(item.offset, item.max_bytes).await.map_err(PartitionError::from);
            if let (Ok(read), true) = (&mut r, log.is_replicated()) {
                // Raft's own control batches are never returned to clients.
                read.records = crate::replica::strip_raft_control(std::mem::take(&mut read.records));
            }
            if let Ok(read) = &r {
                crate::metrics::partition_read(read.records.len() as u64);
            }
            (item.index, r)
        }
    }
}

/// On the owner: completes when any listed partition has data beyond its offset, when one
/// is unknown, at `deadline`, or when the shard stops.
pub async fn wait_local(shard: &Shard, items: &[(TopicPartition, Offset)], deadline: Instant) {
    let mut waits: Vec<LocalBoxFuture<'static, ()>> = Vec::with_capacity(items.len() + 2);
    for (tp, offset) in items {
        if crate::replica::check_leader(shard, tp).is_err() {
            return;
        }
        match shard.log(tp) {
            Some(log) if log.high_watermark() <= *offset => waits.push(log.wait_beyond(*offset).boxed_local()),
            _ => return,
        }
    }
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    waits.push(glommio::timer::sleep(deadline - now).boxed_local());
    waits.push(shard.stopping().boxed_local());
    select_all(waits).await;
}

/// On the owner, for another shard's fetch: waits as [`wait_local`] and answers, unless that
/// fetch stops waiting first (it dropped its reply receiver: another owner answered, or the
/// fetch ended); then it stops at once. So a shard runs at most one waiter per fetch that is
/// still waiting on it, never one per past wait (each would otherwise live up to `max_wait`).
pub async fn serve_wait(
    shard: Rc<Shard>,
    items: Vec<(TopicPartition, Offset)>,
    deadline: Instant,
    mut reply: oneshot::Sender<()>,
) {
    crate::metrics::fetch_waiter(1);
    let data = wait_local(&shard, &items, deadline).boxed_local();
    let answered = matches!(select(data, reply.cancellation()).await, Either::Left(_));
    if answered {
        let _ = reply.send(());
    }
    crate::metrics::fetch_waiter(-1);
}

async fn read_all(shard: &Rc<Shard>, items: &[FetchItem], budget: usize) -> Vec<FetchResult> {
    let grouped = group_by_owner(shard, items.to_vec(), |i| &i.tp);
    let mut out = route::unknown(grouped.unknown, |i| i.index);
    let mut parts: Vec<LocalBoxFuture<'_, Vec<FetchResult>>> = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            parts.push(read_local(shard, items, budget).boxed_local());
        } else {
            let indexes = items.iter().map(|i| i.index).collect();
            parts.push(route::ask(shard, owner, indexes, |reply| ShardMsg::Fetch { items, budget, reply }).await);
        }
    }
    for part in join_all(parts).await {
        out.extend(part);
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

/// Waits until any owner reports new data for the request's partitions, or `deadline`.
async fn wait_any(shard: &Rc<Shard>, items: &[FetchItem], deadline: Instant) {
    let grouped = group_by_owner(shard, items.to_vec(), |i| &i.tp);
    if !grouped.unknown.is_empty() {
        return;
    }
    let mut waits: Vec<LocalBoxFuture<'_, ()>> = Vec::new();
    for (owner, items) in grouped.by_owner {
        let items: Vec<(TopicPartition, Offset)> = items.into_iter().map(|i| (i.tp, i.offset)).collect();
        if owner == shard.id {
            let shard = shard.clone();
            waits.push(async move { wait_local(&shard, &items, deadline).await }.boxed_local());
            continue;
        }
        let (reply, rx) = oneshot::channel();
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
        select_all(waits).await;
    }
}

/// Runs a whole Fetch: read, long-poll if short of `min_bytes`, trim to `max_bytes`.
pub async fn fetch(shard: &Rc<Shard>, plan: FetchPlan) -> Vec<FetchResult> {
    let deadline = Instant::now() + plan.max_wait;
    loop {
        let results = read_all(shard, &plan.items, plan.max_bytes).await;
        let bytes: usize = results.iter().map(|(_, r)| r.as_ref().map(|r| r.records.len()).unwrap_or(0)).sum();
        let failed = results.iter().any(|(_, r)| r.is_err());
        if bytes >= plan.min_bytes.max(1) || failed || Instant::now() >= deadline || shard.is_stopping() {
            return trim(results, plan.max_bytes);
        }
        wait_any(shard, &plan.items, deadline).await;
    }
}

/// Applies the response-wide byte budget in request order, cutting at batch boundaries and
/// always keeping the first batch of the first non-empty partition.
pub fn trim(mut results: Vec<FetchResult>, max_bytes: usize) -> Vec<FetchResult> {
    let mut remaining = max_bytes;
    let mut taken_any = false;
    for (_, r) in results.iter_mut() {
        let Ok(read) = r else { continue };
        if read.records.is_empty() {
            continue;
        }
        let keep = batch_prefix(&read.records, remaining, !taken_any);
        if keep < read.records.len() {
            read.records = cut(&read.records, keep);
        }
        remaining = remaining.saturating_sub(keep);
        taken_any |= keep > 0;
    }
    results
}

/// The first `keep` bytes of `records`: a slice when that is at least half of them and half a
/// cache chunk, a copy otherwise, so a cut answer does not keep a whole read (or chunk) in
/// memory for its few bytes while a client is slow to take it.
fn cut(records: &Bytes, keep: usize) -> Bytes {
    if keep >= records.len() / 2 && keep >= SHARED_SLICE_MIN {
        records.slice(..keep)
    } else {
        Bytes::copy_from_slice(&records[..keep])
    }
}

/// Length of the longest prefix of whole batches within `budget` (at least one if `at_least_one`).
fn batch_prefix(records: &[u8], budget: usize, at_least_one: bool) -> usize {
    let mut pos = 0usize;
    while pos + LOG_OVERHEAD <= records.len() {
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4 bytes"));
        let next = pos + LOG_OVERHEAD + usize::try_from(len).unwrap_or(0);
        if next > records.len() || (next > budget && !(at_least_one && pos == 0)) {
            break;
        }
        pos = next;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_core::batch::{build, Record};
    use sluice_storage::LogRead;

    fn read_of(batches: usize, size: usize) -> LogRead {
        let mut all = Vec::new();
        for _ in 0..batches {
            all.extend(build(&[Record { key: None, value: &vec![1u8; size] }], 0));
        }
        LogRead { records: Bytes::from(all), high_watermark: Offset(10), log_start: Offset(0) }
    }

    #[test]
    fn a_cut_keeps_its_own_bytes_unless_it_is_most_of_a_large_read() {
        let big = Bytes::from(vec![7u8; CHUNK_BYTES]);
        // Cut to a little: a copy, so the read's buffer is not kept alive by it.
        let small = cut(&big, 40_000);
        assert_eq!(&small[..], &big[..40_000]);
        assert!(!std::ptr::eq(small.as_ptr(), big.as_ptr()));
        // Cut to most of it: a slice (no copy).
        let most = cut(&big, SHARED_SLICE_MIN + 10);
        assert_eq!(most.len(), SHARED_SLICE_MIN + 10);
        assert!(std::ptr::eq(most.as_ptr(), big.as_ptr()));
    }

    #[test]
    fn budget_keeps_first_batch_and_whole_batches() {
        let one = read_of(1, 100).records.len();
        let results = vec![(0, Ok(read_of(3, 100))), (1, Ok(read_of(3, 100)))];
        let t = trim(results, one * 4);
        assert_eq!(t[0].1.as_ref().unwrap().records.len(), one * 3);
        assert_eq!(t[1].1.as_ref().unwrap().records.len(), one);
        // A budget smaller than the first batch still returns that batch.
        let t = trim(vec![(0, Ok(read_of(2, 1000))), (1, Ok(read_of(1, 10)))], 10);
        assert_eq!(t[0].1.as_ref().unwrap().records.len(), read_of(1, 1000).records.len());
        assert!(t[1].1.as_ref().unwrap().records.is_empty());
    }
}
