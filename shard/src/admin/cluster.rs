//! The metadata log in a cluster: the controller proposes records to group 0, every broker
//! applies what commits.
//!
//! Contract (brokers with peers; a lone broker never comes here):
//! - The controller is the leader of group 0 (`__cluster_metadata-0`, hosted by shard 0 of
//!   every member). A metadata change reaching shard 0 of another broker is refused with
//!   NOT_CONTROLLER, and Metadata / DescribeCluster name the controller, so clients (the Java
//!   admin client, librdkafka) retry there. The controller decides a change against its
//!   applied snapshot once that has caught up with everything committed before ([`propose`]
//!   waits for it), proposes its records in order, and answers once it has applied them
//!   itself.
//! - [`start`] spawns, on shard 0 of every member, the applier: it reads committed batches of
//!   group 0 in order from the offset after the snapshot's `applied_offset`, applies their
//!   records ([`crate::metadata::apply`]; a record that does not fit is skipped the same way
//!   on every broker), saves the snapshot with the new `applied_offset` (the snapshot file is
//!   the checkpoint: a restart replays only what follows) and publishes it to every shard,
//!   which opens the logs of the replicas placed here and drops those of deleted topics.
//! - [`controller`] is the group-0 leader as shard 0 last saw it, readable from any shard
//!   (one broker per process).

use super::{log_failures, publish, save};
use crate::error::PartitionError;
use crate::metadata::apply::{apply_all, Local};
use crate::metadata::records::{decode_batch, to_batches, MetadataRecord};
use crate::placement::recent_load;
use crate::raft::GroupId;
use crate::replica::Replicas;
use crate::shard::Shard;
use bytes::Bytes;
use sluice_core::limits::METADATA_APPLY_TIMEOUT_MS;
use sluice_core::Offset;
use sluice_storage::watermark::Watermark;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// Bytes of committed metadata batches read per round.
const READ_BYTES: usize = 4 * 1024 * 1024;

/// The metadata log's leader as shard 0 last learned it (-1: none known).
static CONTROLLER: AtomicI32 = AtomicI32::new(-1);

thread_local! {
    /// The last metadata log offset applied on this shard (shard 0), for the controller's
    /// waits.
    static APPLIED: Rc<Watermark> = Rc::new(Watermark::new(-1));
}

/// The controller (the metadata log's leader), if one is known.
pub fn controller() -> Option<i32> {
    let c = CONTROLLER.load(Ordering::Relaxed);
    (c >= 0).then_some(c)
}

fn applied() -> Rc<Watermark> {
    APPLIED.with(|w| w.clone())
}

/// On shard 0 of a cluster member, once group 0 is open: follows the controller and starts
/// the applier.
pub fn start(shard: &Rc<Shard>, r: &Rc<Replicas>) {
    assert_eq!(shard.id.index(), 0, "the metadata log lives on shard 0");
    let set = |leader: Option<sluice_core::cluster::NodeId>| {
        CONTROLLER.store(leader.map_or(-1, |n| n.0), Ordering::Relaxed);
    };
    if let Some((leader, _)) = r.leader(GroupId::METADATA) {
        set(leader);
    }
    r.on_leader_change(Box::new(move |group, leader, _| {
        if group == GroupId::METADATA {
            set(leader);
        }
    }));
    applied().advance(shard.metadata().applied_offset);
    glommio::spawn_local(applier(shard.clone(), r.clone())).detach();
}

/// Applies committed metadata batches in order, forever (see the module docs).
async fn applier(shard: Rc<Shard>, r: Rc<Replicas>) {
    let mut next = Offset(shard.metadata().applied_offset + 1);
    while !shard.is_stopping() {
        r.wait_beyond(GroupId::METADATA, next).await;
        let (batches, after) = match r.read_committed(GroupId::METADATA, next, READ_BYTES).await {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "reading the metadata log failed; retrying");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if after <= next {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        }
        apply_batches(&shard, &batches, after).await;
        next = after;
    }
}

/// Applies `batches` (committed, in order, ending before `after`), saves and publishes.
async fn apply_batches(shard: &Rc<Shard>, batches: &[Bytes], after: Offset) {
    let mut records = Vec::new();
    for b in batches {
        match decode_batch(b) {
            Ok(rs) => records.extend(rs),
            // Every broker refuses the same committed bytes: skipping keeps them in step.
            Err(e) => tracing::error!(error = %e, "an undecodable metadata batch was skipped"),
        }
    }
    let places = records.iter().any(|r| matches!(r, MetadataRecord::TopicCreated(_) | MetadataRecord::PartitionsAdded(_)));
    let rates = if places { recent_load(shard).await } else { Vec::new() };
    let local = Local { node: shard.config.node_id, n_shards: shard.n_shards, rates: &rates };
    let mut snap = (*shard.metadata()).clone();
    for (r, e) in apply_all(&mut snap, &records, &local) {
        tracing::warn!(record = ?r, error = %e, "a committed metadata record does not apply; skipped");
    }
    snap.applied_offset = after.0 - 1;
    snap.version += 1;
    if let Err(e) = save(shard, snap.clone()).await {
        // Published anyway: the shards agree, and the next batch saves again (a restart
        // replays from the last saved point).
        tracing::error!(error = %e, "persisting applied metadata failed");
    }
    log_failures(&publish(shard, snap).await, "applying the metadata log");
    applied().advance(after.0 - 1);
}

/// On the controller: proposes `records` to the metadata log and waits until this broker
/// applied them. NOT_CONTROLLER on another broker.
pub(super) async fn propose(r: &Rc<Replicas>, records: &[MetadataRecord]) -> Result<(), PartitionError> {
    let mut last = None;
    for batch in to_batches(records, sluice_core::clock::now_ms()) {
        match r.propose(GroupId::METADATA, Bytes::from(batch)).await {
            Ok(c) => last = Some(c.last),
            Err(e) => return Err(not_controller(r, &e.to_string())),
        }
    }
    if let Some(last) = last {
        wait_applied(last).await?;
    }
    Ok(())
}

/// On the controller, before deciding: waits until everything committed so far is applied
/// here, so decisions are made on the newest state.
pub(super) async fn caught_up(r: &Rc<Replicas>) -> Result<(), PartitionError> {
    if !r.is_leader(GroupId::METADATA) {
        return Err(not_controller(r, "not the leader of the metadata log"));
    }
    let Some(log) = r.log(GroupId::METADATA) else {
        return Err(PartitionError::NotController("the metadata log is not open".into()));
    };
    wait_applied(Offset(log.high_watermark().0 - 1)).await
}

async fn wait_applied(offset: Offset) -> Result<(), PartitionError> {
    let w = applied();
    let deadline = glommio::timer::sleep(Duration::from_millis(METADATA_APPLY_TIMEOUT_MS));
    futures::pin_mut!(deadline);
    let reached = w.wait_for(offset.0);
    futures::pin_mut!(reached);
    match futures::future::select(reached, deadline).await {
        futures::future::Either::Left(_) => Ok(()),
        futures::future::Either::Right(_) => Err(PartitionError::NotController(format!(
            "the metadata log was not applied up to offset {} in time",
            offset.0
        ))),
    }
}

fn not_controller(r: &Replicas, why: &str) -> PartitionError {
    let leader = r.leader(GroupId::METADATA).and_then(|(l, _)| l);
    PartitionError::NotController(match leader {
        Some(l) => format!("{why}; the controller is node {l}"),
        None => format!("{why}; no controller is known yet"),
    })
}
