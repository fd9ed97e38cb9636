//! The produce path: split by owner, append on the owner in order, wait for the ack level.
//!
//! Contract: [`produce`] performs every append (local ones directly, remote ones by sending
//! one message per owner) before it returns; the future it returns only waits. Callers that
//! await `produce` for request N before calling it for request N+1 therefore keep the
//! connection's order in every partition log.

use crate::error::PartitionError;
use crate::metadata::MetadataSnapshot;
use crate::msg::{Acks, Appended, ProduceItem, ProduceResult, ShardMsg};
use crate::route::{self, group_by_owner};
use crate::shard::Shard;
use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt;
use sluice_core::{Offset, TopicPartition};
use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_core::clock::now_ms;

/// Appends on the owner (this shard) synchronously; the returned future waits for `acks`.
pub fn append_local(shard: &Shard, acks: Acks, items: Vec<ProduceItem>) -> LocalBoxFuture<'static, Vec<ProduceResult>> {
    let mut waits = Vec::with_capacity(items.len());
    let meta = shard.metadata();
    let replicas = shard.replicas();
    for item in items {
        let Some(log) = shard.log(&item.tp) else {
            waits.push(async move { (item.index, Err(PartitionError::UnknownTopicOrPartition)) }.boxed_local());
            continue;
        };
        if let Some((r, group)) = replicas.as_ref().and_then(|r| r.group_of(&item.tp).map(|g| (r, g))) {
            let min_insync = min_insync_replicas(&meta, &shard.topic_defaults, &item.tp.topic);
            let isr = recorded_isr(&meta, &item.tp);
            waits.push(produce_replicated(r, group, acks, item, log, (isr, min_insync)));
            continue;
        }
        if let Err(e) = crate::replica::check_open(shard, &item.tp) {
            waits.push(async move { (item.index, Err(e)) }.boxed_local());
            continue;
        }
        let mut first: Option<Offset> = None;
        let mut last = None;
        let mut log_start = Offset(0);
        let mut failed = None;
        let started = std::time::Instant::now();
        let log_append_time = stamps_append_time(&meta, &shard.topic_defaults, &item.tp.topic).then(now_ms);
        for (header, bytes) in &item.batches {
            match log.append(bytes, header, log_append_time) {
                Ok(info) => {
                    if !info.duplicate {
                        shard.txn_partitions.observe(&item.tp, header, info.base_offset.0, bytes);
                    }
                    first.get_or_insert(info.base_offset);
                    last = Some(info);
                    log_start = info.log_start;
                }
                Err(e) => {
                    failed = Some(PartitionError::from(e));
                    break;
                }
            }
        }
        crate::metrics::record_stage(crate::metrics::Stage::Append, started.elapsed());
        let appended: u64 = item.batches.iter().map(|(_, b)| b.len() as u64).sum();
        crate::metrics::add_topic_bytes(&item.tp.topic, appended, true);
        let index = item.index;
        waits.push(
            async move {
                if let Some(e) = failed {
                    return (index, Err(e));
                }
                let (Some(base_offset), Some(last)) = (first, last) else {
                    return (index, Err(PartitionError::InvalidRequest("no record batch".into())));
                };
                // The wait may start after a failed flush rolled this append back: it names
                // the append (with its write generation) so that case fails, never acks.
                let waiting = std::time::Instant::now();
                let waited = match acks {
                    Acks::None => Ok(()),
                    Acks::Leader => log.wait_written(&last).await,
                    Acks::All => log.wait_durable(&last).await,
                };
                crate::metrics::record_stage(crate::metrics::Stage::AckWait, waiting.elapsed());
                (
                    index,
                    waited
                        .map(|()| Appended { base_offset, log_start, log_append_time: log_append_time.unwrap_or(-1) })
                        .map_err(PartitionError::from),
                )
            }
            .boxed_local(),
        );
    }
    join_all(waits).boxed_local()
}

/// A replicated partition's batches, proposed on its leader (`replica/produce.rs`).
fn produce_replicated(
    r: &crate::replica::Replicas,
    group: crate::raft::GroupId,
    acks: Acks,
    item: ProduceItem,
    log: Rc<sluice_storage::PartitionLog>,
    (isr, min_insync): (&[i32], usize),
) -> LocalBoxFuture<'static, ProduceResult> {
    let (index, limit) = (item.index, item.commit_wait_ms);
    let proposed = r.produce_on_leader(group, acks, &item.batches, isr, min_insync);
    async move {
        let done = |base_offset| Appended { base_offset, log_start: log.log_start(), log_append_time: -1 };
        match (proposed, acks) {
            (Err(e), _) => (index, Err(e)),
            (Ok(_), Acks::None) => (index, Ok(done(Offset(-1)))),
            (Ok(wait), _) => (index, within(wait, limit).await.map(done)),
        }
    }
    .boxed_local()
}

/// `wait`'s outcome, or REQUEST_TIMED_OUT once `limit` ms passed (None: no limit).
async fn within(
    wait: LocalBoxFuture<'static, Result<Offset, PartitionError>>,
    limit: Option<u64>,
) -> Result<Offset, PartitionError> {
    let Some(ms) = limit else { return wait.await };
    let expired = glommio::timer::sleep(std::time::Duration::from_millis(ms)).boxed_local();
    match futures::future::select(wait, expired).await {
        futures::future::Either::Left((outcome, _)) => outcome,
        futures::future::Either::Right(_) => Err(PartitionError::RequestTimedOut(ms)),
    }
}

/// The partition's ISR as the metadata log records it (followers within
/// `replica_lag_time_max_ms` of the leader, `admin/cluster.rs`); empty when none is recorded.
fn recorded_isr<'m>(meta: &'m MetadataSnapshot, tp: &TopicPartition) -> &'m [i32] {
    let p = usize::try_from(tp.partition.0).ok();
    let state = meta.replication.get(&tp.topic).and_then(|r| r.partitions.get(p?));
    state.map_or(&[], |s| s.isr.as_slice())
}

/// The topic's `min.insync.replicas` (or the broker default; 1 when unset).
fn min_insync_replicas(meta: &MetadataSnapshot, defaults: &BTreeMap<String, String>, topic: &str) -> usize {
    let none = BTreeMap::new();
    let set = meta.topics.get(topic).map(|t| &t.configs).unwrap_or(&none);
    sluice_core::topic_config::effective_with(set, defaults, "min.insync.replicas")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Routes a produce request's partitions to their owners. Appends are issued before this
/// returns; the returned future resolves with one result per item, in `index` order.
pub async fn produce(
    shard: &Rc<Shard>,
    acks: Acks,
    items: Vec<ProduceItem>,
) -> LocalBoxFuture<'static, Vec<ProduceResult>> {
    let grouped = group_by_owner(shard, items, |i| &i.tp);
    let unknown = route::unknown(grouped.unknown, |i| i.index);
    let mut parts: Vec<LocalBoxFuture<'static, Vec<ProduceResult>>> = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            parts.push(append_local(shard, acks, items));
        } else {
            let indexes = items.iter().map(|i| i.index).collect();
            let answer = route::ask(shard, owner, indexes, |reply| ShardMsg::Produce { acks, items, reply }).await;
            // Counted as request-path I/O of this shard while the owner works: its answer
            // comes as a wake-up from another thread, which a compaction pass here sees only
            // when it pauses (so its slices stay short meanwhile).
            let io = sluice_storage::inflight::Guard::start();
            parts.push(
                async move {
                    let _io = io;
                    answer.await
                }
                .boxed_local(),
            );
        }
    }
    async move { in_request_order(unknown, join_all(parts).await) }.boxed_local()
}

/// Whether the broker writes the append time into a topic's batches (its
/// `message.timestamp.type`, or the broker default, is LogAppendTime).
fn stamps_append_time(meta: &MetadataSnapshot, defaults: &BTreeMap<String, String>, topic: &str) -> bool {
    meta.topics
        .get(topic)
        .and_then(|t| sluice_core::topic_config::effective_with(&t.configs, defaults, "message.timestamp.type"))
        .is_some_and(|v| v.eq_ignore_ascii_case("LogAppendTime"))
}

/// The answers of every owner (and the unknown partitions') merged, in request order.
fn in_request_order(mut all: Vec<ProduceResult>, parts: Vec<Vec<ProduceResult>>) -> Vec<ProduceResult> {
    for part in parts {
        all.extend(part);
    }
    all.sort_by_key(|(i, _)| *i);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicMeta;

    #[test]
    fn append_time_comes_from_the_topic_then_the_broker_default() {
        let mut meta = MetadataSnapshot::default();
        let topic = |v: Option<&str>| TopicMeta {
            id: [1; 16],
            shards: vec![0],
            configs: v.map(|v| ("message.timestamp.type".to_string(), v.to_string())).into_iter().collect(),
        };
        meta.topics.insert("log".into(), topic(Some("logappendtime")));
        meta.topics.insert("create".into(), topic(Some("CreateTime")));
        meta.topics.insert("plain".into(), topic(None));
        let none = BTreeMap::new();
        let broker: BTreeMap<String, String> =
            [("message.timestamp.type".to_string(), "LogAppendTime".to_string())].into();
        assert!(stamps_append_time(&meta, &none, "log"), "case does not matter");
        assert!(!stamps_append_time(&meta, &broker, "create"), "the topic's setting wins");
        assert!(!stamps_append_time(&meta, &none, "plain"));
        assert!(stamps_append_time(&meta, &broker, "plain"), "the broker default applies");
        assert!(!stamps_append_time(&meta, &broker, "missing"));
    }

    #[test]
    fn answers_come_back_in_request_order() {
        let ok =
            |i: usize| (i, Ok(Appended { base_offset: Offset(i as i64), log_start: Offset(0), log_append_time: -1 }));
        let unknown = vec![(1, Err(PartitionError::UnknownTopicOrPartition))];
        let merged = in_request_order(unknown, vec![vec![ok(3), ok(0)], vec![], vec![ok(2)]]);
        assert_eq!(merged.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(merged[1].1, Err(PartitionError::UnknownTopicOrPartition));
        assert_eq!(merged[3], ok(3));
    }
}
