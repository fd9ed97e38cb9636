//! ListOffsets: earliest, latest, max timestamp and by-timestamp lookups, on the owners.
//!
//! Contract: answers follow Kafka: -2 earliest (log start), -1 latest (high watermark),
//! -3 the record with the largest timestamp (the first one with it; records of compressed
//! batches are decompressed to find it, as Kafka 4.x does), -4 earliest local and -5 earliest
//! pending upload (= log start here: no tiered storage), -6 latest tiered (= high watermark
//! here), a timestamp ≥ 0 the first record whose timestamp is at or after it. That lookup
//! walks the records of an uncompressed CreateTime batch (record precision); in a LogAppendTime
//! batch every record carries the batch's time, so its base offset is that record; in a
//! compressed CreateTime batch it answers the batch's base offset with the batch's max
//! timestamp, where Kafka decompresses and answers the record (batch precision, not record).
//! Offsets before the log start are never answered. (-1, -1) when nothing matches.

use crate::error::PartitionError;
use crate::msg::{Found, ListOffsetsItem, ListOffsetsResult, ShardMsg};
use crate::replica::epochs;
use crate::route::{self, group_by_owner};
use crate::shard::Shard;
use futures::future::join_all;
use sluice_core::{Offset, TopicPartition};
use sluice_storage::log::PartitionLog;
use std::rc::Rc;

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;
pub const EARLIEST_PENDING_UPLOAD: i64 = -5;
pub const LATEST_TIERED: i64 = -6;

/// Answers on the owner. The client's current leader epoch and this broker's leadership are
/// checked first (`replica::epochs::check`); the epoch answered is the current one for the
/// latest offset (Kafka answers its leader epoch) and the epoch of the batch holding the
/// offset otherwise.
pub async fn list_local(shard: &Shard, items: Vec<ListOffsetsItem>) -> Vec<ListOffsetsResult> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(log) = shard.log(&item.tp) else {
            out.push((item.index, Err(PartitionError::UnknownTopicOrPartition)));
            continue;
        };
        if let Err(e) = epochs::check(shard, &item.tp, item.current_leader_epoch) {
            out.push((item.index, Err(e)));
            continue;
        }
        if let Some(epoch) = item.epoch_end_of {
            let (offset, epoch) = epochs::end_of(shard, &item.tp, &log, epoch);
            out.push((item.index, Ok(Found { offset, timestamp: -1, leader_epoch: epoch.0 })));
            continue;
        }
        let answer = lookup(&log, item.timestamp).await.map(|(offset, timestamp)| {
            let leader_epoch = match item.timestamp {
                _ if offset.0 < 0 => -1,
                LATEST | LATEST_TIERED => epochs::current(shard, &item.tp),
                _ => epochs::epoch_at(shard, &item.tp, offset),
            };
            Found { offset, timestamp, leader_epoch }
        });
        out.push((item.index, answer));
    }
    out
}

/// (offset, timestamp) for a ListOffsets timestamp (module docs); (-1, -1) when none matches.
async fn lookup(log: &PartitionLog, timestamp: i64) -> Result<(Offset, i64), PartitionError> {
    let none = (Offset(-1), -1);
    match timestamp {
        LATEST | LATEST_TIERED => Ok((log.high_watermark(), -1)),
        EARLIEST | EARLIEST_LOCAL | EARLIEST_PENDING_UPLOAD => Ok((log.log_start(), -1)),
        MAX_TIMESTAMP => {
            log.max_timestamp().await.map(|m| m.map(|(o, t, _)| (o, t)).unwrap_or(none)).map_err(PartitionError::from)
        }
        ts if ts >= 0 => log.offset_for_timestamp(ts).await.map(|r| r.unwrap_or(none)).map_err(PartitionError::from),
        other => Err(PartitionError::InvalidRequest(format!("invalid timestamp {other}"))),
    }
}

/// DeleteRecords on the owner: -1 means the high watermark. A replicated partition's leader
/// only (NOT_LEADER_OR_FOLLOWER elsewhere, as Kafka answers), and through its Raft group, so
/// that every replica's log start moves.
pub async fn delete_records_local(
    shard: &Shard,
    items: Vec<(usize, TopicPartition, Offset)>,
) -> Vec<(usize, Result<Offset, PartitionError>)> {
    let mut out = Vec::with_capacity(items.len());
    for (index, tp, offset) in items {
        let r = match shard.log(&tp) {
            None => Err(PartitionError::UnknownTopicOrPartition),
            Some(log) => match crate::replica::check_leader(shard, &tp) {
                Err(e) => Err(e),
                Ok(()) => {
                    let to = if offset.0 == -1 { log.high_watermark() } else { offset };
                    match crate::replica::group_of(shard, &tp) {
                        // Every replica's log start moves (`replica/delete_records.rs`).
                        Some((r, g)) => r.delete_records_on_leader(g, &log, to).await,
                        None => log.delete_records_before(to).await.map_err(PartitionError::from),
                    }
                }
            },
        };
        out.push((index, r));
    }
    out
}

/// Routes DeleteRecords to the owners; answers in `index` order with the new low watermarks.
pub async fn delete_records(
    shard: &Rc<Shard>,
    items: Vec<(usize, TopicPartition, Offset)>,
) -> Vec<(usize, Result<Offset, PartitionError>)> {
    let grouped = group_by_owner(shard, items, |i| &i.1);
    let mut out = route::unknown(grouped.unknown, |i| i.0);
    let mut remote = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            out.extend(delete_records_local(shard, items).await);
        } else {
            let indexes = items.iter().map(|i| i.0).collect();
            remote.push(route::ask(shard, owner, indexes, |reply| ShardMsg::DeleteRecords { items, reply }).await);
        }
    }
    for part in join_all(remote).await {
        out.extend(part);
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

/// Sizes of every partition log on every shard.
pub async fn log_sizes(shard: &Rc<Shard>) -> Vec<(TopicPartition, u64)> {
    let mut all = shard.log_sizes();
    for s in 0..shard.n_shards {
        if s == shard.id.index() {
            continue;
        }
        let (reply, rx) = futures::channel::oneshot::channel();
        if shard.send(crate::shard::shard_id(s), ShardMsg::LogSizes { reply }).await.is_ok() {
            all.extend(rx.await.unwrap_or_default());
        }
    }
    all.sort();
    all
}

/// Routes a ListOffsets request to the owners and merges the answers in `index` order.
pub async fn list_offsets(shard: &Rc<Shard>, items: Vec<ListOffsetsItem>) -> Vec<ListOffsetsResult> {
    let grouped = group_by_owner(shard, items, |i| &i.tp);
    let mut out = route::unknown(grouped.unknown, |i| i.index);
    let mut remote = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            out.extend(list_local(shard, items).await);
        } else {
            let indexes = items.iter().map(|i| i.index).collect();
            remote.push(route::ask(shard, owner, indexes, |reply| ShardMsg::ListOffsets { items, reply }).await);
        }
    }
    for part in join_all(remote).await {
        out.extend(part);
    }
    out.sort_by_key(|(i, _)| *i);
    out
}
