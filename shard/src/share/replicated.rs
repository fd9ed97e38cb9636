//! Share-partition state in a cluster: written through the partition's own Raft log, so every
//! replica has it and a new leader serves from it (Kafka's share coordinator and its
//! `__share_group_state` topic play this part there).
//!
//! Contract:
//! - The leader of a replicated partition makes a share-partition's state durable by proposing
//!   one [`store::StateRecord`] (the whole durable state, in runs) as a sluice Raft control
//!   batch (`raft::control::share_state_batch`) to the partition's Raft group, and answers the
//!   acknowledgement once it committed (a majority of the replicas has it), within
//!   `COORDINATOR_APPEND_TIMEOUT_MS`. A proposal that fails drops the leader's in-memory
//!   share-partition, so what was not committed is never served: it is read back from what is.
//! - Every replica (leader included) follows the committed state records ([`follow_commits`]):
//!   a follower replaces its in-memory share-partition with each one (so it is current when
//!   it is elected) and every replica writes it to its local state file (`store`, coalesced:
//!   one write per share-partition at a time, the latest state), which is read back after a
//!   restart.
//! - A new leader serves a share-partition only once its high watermark reached the end its
//!   log had when it was first asked in its epoch ([`ready`]): every state record the previous
//!   leaders committed is then applied; from then on its own memory is the newest state and
//!   the records it commits are not applied to it again.
//! - Forgetting a share-partition (DeleteShareGroupOffsets, DeleteGroups) is a state record
//!   too, SPSO -1 ([`forget`]): every replica drops its copy and removes its file, so a later
//!   leader does not serve the forgotten state. Only the partition's leader proposes it.
//! - Fetch never gives these batches to clients (they are Raft control batches), and a share
//!   fetch marks their offsets done without delivering them.

use super::{limits, store, PartKey};
use crate::error::PartitionError;
use crate::replica::Replicas;
use crate::shard::Shard;
use bytes::Bytes;
use futures::future::{select, Either};
use futures::FutureExt;
use sluice_core::batch::BatchHeader;
use sluice_core::limits::{COORDINATOR_APPEND_TIMEOUT_MS, SHARE_FETCH_POLL_MS};
use sluice_core::TopicPartition;
use std::rc::Rc;
use std::time::Duration;

pub(super) use crate::replica::group_of;

/// Proposes the share-partition's durable state; Ok once committed. On failure the leader's
/// in-memory share-partition is dropped (module contract).
pub(super) async fn propose(shard: &Rc<Shard>, key: &PartKey, state: store::Stored) -> Result<(), PartitionError> {
    let (r, g) = group_of(shard, &key.1).ok_or(PartitionError::UnknownTopicOrPartition)?;
    let topic_id =
        shard.metadata().topics.get(&key.1.topic).map(|t| t.id).ok_or(PartitionError::UnknownTopicOrPartition)?;
    let rec = store::StateRecord { group: key.0.clone(), topic_id, partition: key.1.partition.0, state };
    let batch = crate::raft::control::share_state_batch(&store::encode_record(&rec));
    let timeout = glommio::timer::sleep(Duration::from_millis(COORDINATOR_APPEND_TIMEOUT_MS));
    let result = match select(r.propose(g, batch).boxed_local(), timeout.boxed_local()).await {
        Either::Left((Ok(_), _)) => Ok(()),
        Either::Left((Err(e), _)) => Err(crate::replica::check_leader(shard, &key.1)
            .err()
            .unwrap_or(PartitionError::NotCommitted(e.to_string()))),
        Either::Right(_) => Err(PartitionError::RequestTimedOut(COORDINATOR_APPEND_TIMEOUT_MS)),
    };
    if result.is_err() {
        shard.share.partitions.borrow_mut().remove(key);
    }
    result
}

/// Forgets a share-partition on every replica: proposes [`store::Stored::FORGOTTEN`] (Ok once
/// committed; each replica, this one included, drops its copy and its file when it applies
/// it, in order with the state records before and after it).
pub(super) async fn forget(shard: &Rc<Shard>, key: &PartKey) -> Result<(), PartitionError> {
    propose(shard, key, store::Stored::FORGOTTEN).await?;
    shard.share.partitions.borrow_mut().remove(key);
    Ok(())
}

/// Ok when this broker leads `tp` and has applied every state record committed before its
/// epoch (module contract); a lone broker's partitions are always ready.
pub(super) async fn ready(shard: &Rc<Shard>, tp: &TopicPartition) -> Result<(), PartitionError> {
    let Some((r, g)) = group_of(shard, tp) else { return Ok(()) };
    crate::replica::check_leader(shard, tp)?;
    let epoch = r.leader(g).map_or(-1, |(_, e)| e.0);
    if shard.share.ready.borrow().get(tp) == Some(&epoch) {
        return Ok(());
    }
    let log = r.log(g).ok_or(PartitionError::UnknownTopicOrPartition)?;
    let target = log.log_end();
    let rounds = COORDINATOR_APPEND_TIMEOUT_MS / SHARE_FETCH_POLL_MS;
    for _ in 0..rounds {
        crate::replica::check_leader(shard, tp)?;
        if log.high_watermark() >= target {
            if r.leader(g).map_or(-1, |(_, e)| e.0) == epoch {
                shard.share.ready.borrow_mut().insert(tp.clone(), epoch);
            }
            return Ok(());
        }
        glommio::timer::sleep(Duration::from_millis(SHARE_FETCH_POLL_MS)).await;
    }
    Err(PartitionError::RequestTimedOut(COORDINATOR_APPEND_TIMEOUT_MS))
}

/// Registers the commit listener that applies committed state records on this shard.
pub fn follow_commits(shard: &Rc<Shard>, r: &Replicas) {
    let weak = Rc::downgrade(shard);
    r.on_commit(Box::new(move |tp, batches| {
        let Some(shard) = weak.upgrade() else { return };
        for (_, bytes) in batches {
            apply(&shard, tp, bytes);
        }
    }));
}

/// Whether this broker's memory of `tp`'s share-partitions is the newest (it leads and is
/// ready in its epoch).
fn authoritative(shard: &Shard, tp: &TopicPartition) -> bool {
    let Some((r, g)) = group_of(shard, tp) else { return false };
    r.is_leader(g) && r.leader(g).map(|(_, e)| e.0) == shard.share.ready.borrow().get(tp).copied()
}

fn apply(shard: &Rc<Shard>, tp: &TopicPartition, bytes: &Bytes) {
    let Ok(h) = BatchHeader::parse(bytes) else { return };
    let Some(payload) = crate::raft::control::share_state_payload(&h, bytes) else { return };
    let Some(rec) = store::decode_record(&payload) else {
        tracing::warn!(partition = ?tp, offset = h.base_offset, "unreadable share state record skipped");
        return;
    };
    if rec.partition != tp.partition.0 {
        return;
    }
    let key: PartKey = (rec.group, tp.clone());
    if rec.state.is_forgotten() {
        shard.share.partitions.borrow_mut().remove(&key);
    } else if !authoritative(shard, tp) {
        let p = super::partition::SharePartition::restore(rec.state.spso, &rec.state.entries, limits(shard, &key.0));
        shard.share.partitions.borrow_mut().insert(key.clone(), p);
    }
    queue_file(shard, key, rec.topic_id, rec.state);
}

/// Writes the latest committed state of a share-partition to its local file, or removes the
/// file for a forgotten one (one write per share-partition queued at a time; a newer state
/// replaces a queued one).
fn queue_file(shard: &Rc<Shard>, key: PartKey, topic_id: [u8; 16], state: store::Stored) {
    let fresh = shard.share.pending.borrow_mut().insert(key.clone(), state).is_none();
    if !fresh {
        return;
    }
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let Ok(_permit) = shard.share.writer.acquire_permit(1).await else { return };
        let Some(state) = shard.share.pending.borrow_mut().remove(&key) else { return };
        let path = store::file(shard.data_dir(), &key.0, &topic_id, key.1.partition.0);
        let io = move || if state.is_forgotten() { store::remove(&path) } else { store::write(&path, &state) };
        if let Err(e) = sluice_storage::disk::blocking(io).await {
            tracing::warn!(partition = ?key.1, group = %key.0, error = %e, "share state file not written");
        }
    })
    .detach();
}

/// The offsets of the Raft control batches (state records, a leader's empty entry, membership
/// changes) among `records`: a share fetch marks them done.
pub(super) fn control_spans(records: &[u8]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut p = 0usize;
    while p < records.len() {
        let Ok(h) = BatchHeader::parse(&records[p..]) else { break };
        let end = (p + h.total_len()).min(records.len());
        let control = h.is_control() && crate::raft::control::is_raft_control(&h, &records[p..end]);
        if control && !h.takes_no_offset() {
            out.push((h.base_offset, h.last_offset()));
        }
        p = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::control::{entry_to_batch, share_state_batch, Shape};
    use raft::eraftpb::Entry;
    use sluice_core::batch;
    use sluice_core::Offset;

    #[test]
    fn control_spans_name_the_raft_control_batches_only() {
        let recs = [batch::Record { key: None, value: b"v" }, batch::Record { key: None, value: b"w" }];
        let data = Entry { term: 1, data: Bytes::from(batch::build(&recs, 1)), ..Default::default() };
        let state = Entry { term: 1, data: share_state_batch(b"s"), ..Default::default() };
        let noop = Entry { term: 1, ..Default::default() };
        let mut all = Vec::new();
        all.extend_from_slice(&entry_to_batch(&data, Offset(10), Shape::NoOffset).expect("data"));
        all.extend_from_slice(&entry_to_batch(&state, Offset(12), Shape::NoOffset).expect("state"));
        all.extend_from_slice(&entry_to_batch(&noop, Offset(13), Shape::OneOffset).expect("old noop"));
        all.extend_from_slice(&entry_to_batch(&noop, Offset(14), Shape::NoOffset).expect("noop"));
        assert_eq!(control_spans(&all), vec![(12, 12), (13, 13)], "a noop taking no offset has none to mark");
        assert_eq!(control_spans(&all[..20]), Vec::<(i64, i64)>::new(), "a cut header: nothing");
    }
}
