//! A Raft snapshot installed on a data replica (#18). A leader whose log no longer starts at
//! offset 0 (DeleteRecords, retention or compaction moved its start) cannot feed a follower
//! that needs entries below the batch holding its log start: it sends a snapshot instead —
//! "my log up to offset X, at this Raft index and term, with this epoch history"
//! (`raft/store.rs` `SnapshotData`; X is the base of the batch holding the leader's log
//! start). This replica then restarts its log empty at X, as Kafka's follower truncates fully
//! and starts at the leader's log start offset when its fetch is out of range, and goes on
//! with the leader's ordinary appends after it (from below the leader's window, catch-up).
//!
//! Contract:
//! - [`install`]: the group stops (its partition refuses clients meanwhile:
//!   `replica::awaiting_group`; `open_replica` leaves it to the install), the new Raft state
//!   (floor at the snapshot: its index, term and X; the epoch history up to X; term, vote,
//!   commit and conf state) is written durably as the partition's install record
//!   (`raft_state::write_install`), [`redo`] restarts the log and commits the record, and the
//!   group reopens from that state.
//! - [`redo`] runs at every open of a data replica: when an install record exists, the log
//!   restarts empty at its floor's offset (`PartitionLog::reset_empty_at`) and the record
//!   becomes the state (`raft_state::commit_install`). A crash at any point therefore leaves
//!   the old log with the old state (no record yet), or ends, at the next open, with the empty
//!   log at X and the new state — never a log and a state that disagree.
//! - Producer state and the transaction index are not transferred: the reset empties both
//!   (`PartitionLog::reset_empty_at`: producers cleared, cut listeners told nothing is left)
//!   and they are rebuilt from the batches the replica gets after X — the batch holding the
//!   leader's log start and every later one — as Kafka's follower rebuilds them from what it
//!   fetches after truncating fully.
//! - A failure leaves the group stopped (the partition refuses clients here until the broker
//!   restarts; its open redoes a recorded install).

use super::{ReplicaError, Replicas};
use crate::raft::GroupId;
use sluice_storage::log::PartitionLog;
use sluice_storage::raft_state::{self, RaftStateRecord};
use std::rc::Rc;

fn state_error(e: std::io::Error) -> ReplicaError {
    ReplicaError::State(e.to_string())
}

/// Installs the snapshot whose state is `state` on data replica `group` (module docs).
pub(super) async fn install(r: Rc<Replicas>, group: GroupId, state: RaftStateRecord) {
    let found = r.groups.borrow().get(&group).and_then(|g| g.tp.clone().map(|tp| (tp, g.log.clone())));
    let Some((tp, log)) = found else { return };
    r.installing.borrow_mut().insert(group);
    r.close_replica(group);
    let (start, index) = (state.floor_next_offset, state.floor_index);
    tracing::info!(%group, partition = %tp, start = start.0, index, "installing a snapshot: the log restarts empty");
    let result = async {
        let dir = log.dir().to_path_buf();
        sluice_storage::disk::blocking(move || raft_state::write_install(&dir, &state)).await.map_err(state_error)?;
        redo(&log).await?;
        r.open_group(group, Some(tp.clone()), log.clone(), &[]).await
    }
    .await;
    r.installing.borrow_mut().remove(&group);
    match result {
        Ok(()) => tracing::info!(%group, partition = %tp, start = start.0, "snapshot installed; the replica goes on"),
        Err(e) => {
            tracing::error!(%group, partition = %tp, error = %e, "snapshot install failed; the replica stays stopped")
        }
    }
}

/// Finishes a recorded install of `log`'s replica, if any (module docs).
pub(super) async fn redo(log: &PartitionLog) -> Result<(), ReplicaError> {
    let dir = log.dir().to_path_buf();
    let d = dir.clone();
    let Some(rec) = sluice_storage::disk::blocking(move || raft_state::read_install(&d)).await.map_err(state_error)?
    else {
        return Ok(());
    };
    log.reset_empty_at(rec.floor_next_offset).await?;
    sluice_storage::disk::blocking(move || raft_state::commit_install(&dir)).await.map_err(state_error)?;
    Ok(())
}
