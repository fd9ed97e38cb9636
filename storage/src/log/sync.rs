//! The shard's sync rounds: one task per shard (thread) that makes written bytes durable for
//! every log of the shard at once. A log whose writer completed a write registers itself
//! ([`request`]); a round takes every registered target's [`SyncPoint`] (what is written now),
//! submits all their fdatasyncs together (glommio puts them in one io_uring submission), and
//! hands each target its own result as soon as that target's fdatasync returns, so no log's
//! durable mark waits for the slowest file of its round. The next round starts when every sync
//! of the current one returned: writes that complete meanwhile register for it, so a sync never
//! delays a write, one round covers every partition with pending bytes, and the device gets
//! the round's flushes together (measured better for throughput than letting rounds overlap:
//! ARCHITECTURE.md).
//!
//! Contract: a target's durable mark advances only to the point its round snapshotted, after
//! that point's fdatasync returned Ok; a failed sync is reported to its target alone (which
//! rolls back to its last durable batch); a point taken before a rollback of its target is
//! ignored by it (the generation it carries no longer matches). Rounds run one at a time per
//! shard, so a target has at most one point outstanding. The interface is the [`SyncTarget`]
//! trait, so other logs of the shard (a Raft log of many partitions, later) can share the same
//! rounds.

use crate::file::SegFile;
use futures::future::join_all;
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

/// What one round must make durable for one target.
pub(crate) struct SyncPoint {
    /// The file to fdatasync.
    pub file: Rc<SegFile>,
    /// Byte position in `file` written when the point was taken.
    pub pos: u64,
    /// Offset that follows the last batch covered (the durable mark after the sync).
    pub offset: i64,
    /// The target's write generation when the point was taken.
    pub generation: u64,
}

/// A log whose written bytes the shard's rounds make durable.
pub(crate) trait SyncTarget {
    /// Clears the target's "registered" flag and returns what is written but not yet durable,
    /// or None when nothing is.
    fn take_sync_point(&self) -> Option<SyncPoint>;
    /// The round's result for `point`.
    fn synced(&self, point: SyncPoint, result: io::Result<()>);
}

/// One shard's sync rounds.
#[derive(Default)]
struct Syncer {
    /// Targets with written, unsynced bytes, registered since the last round started.
    dirty: RefCell<Vec<Rc<dyn SyncTarget>>>,
    /// A round task is running (it drains `dirty` until it is empty).
    running: Cell<bool>,
    /// When the first target of `dirty` registered (None while `dirty` is empty).
    first_dirty_at: Cell<Option<std::time::Instant>>,
}

thread_local! {
    /// The syncer of the executor running on this thread.
    static SYNCER: crate::executor_local::Slot<Syncer> = const { RefCell::new(None) };
}

fn syncer() -> Rc<Syncer> {
    crate::executor_local::get(&SYNCER)
}

/// Registers `target` for the next round (the caller registers a target at most once until its
/// point is taken) and starts the round task when none is running.
pub(crate) fn request(target: Rc<dyn SyncTarget>) {
    let s = syncer();
    if s.first_dirty_at.get().is_none() {
        s.first_dirty_at.set(Some(std::time::Instant::now()));
    }
    s.dirty.borrow_mut().push(target);
    if !s.running.replace(true) {
        glommio::spawn_local(rounds(s)).detach();
    }
}

/// Runs rounds until no target is registered.
async fn rounds(s: Rc<Syncer>) {
    loop {
        // Let the tasks that are ready now (writers whose writes completed in the same reactor
        // poll) register first, so that this round covers them too.
        futures_lite::future::yield_now().await;
        let targets = std::mem::take(&mut *s.dirty.borrow_mut());
        if let Some(at) = s.first_dirty_at.take() {
            let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            crate::stats::with(|st| st.sync_queue_us.saturating_record(us));
        }
        if targets.is_empty() {
            s.running.set(false);
            return;
        }
        let points: Vec<(Rc<dyn SyncTarget>, SyncPoint)> =
            targets.into_iter().filter_map(|t| t.take_sync_point().map(|p| (t, p))).collect();
        if points.is_empty() {
            continue;
        }
        // All submitted before the first is awaited: one io_uring submission for the round.
        // Each target gets its result when its own sync returns, not when the round ends.
        let issued = u64::try_from(points.len()).unwrap_or(u64::MAX);
        let _io = crate::inflight::Guard::start();
        join_all(points.into_iter().map(|(target, point)| async move {
            let started = std::time::Instant::now();
            let result = point.file.fdatasync().await;
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            crate::stats::with(|st| st.fsync_us.saturating_record(us));
            target.synced(point, result);
        }))
        .await;
        crate::stats::with(|st| {
            st.sync_rounds += 1;
            st.syncs += issued;
        });
    }
}
