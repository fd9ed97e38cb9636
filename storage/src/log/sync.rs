//! The shard's sync rounds: one task per shard (thread) that makes written bytes durable for
//! every log of the shard. A log whose writer completed a write registers itself
//! ([`request`]); a round takes every registered target's [`SyncPoint`] (what is written now)
//! and issues all their fdatasyncs in the same executor tick (glommio puts them in one io_uring
//! submission). Each sync completes on its own: its target gets its result as soon as its own
//! fdatasync returns, without waiting for the slowest file of its round. Rounds overlap, with at
//! most one sync in flight per target: a target registered while its sync is in flight waits
//! for that sync to return and is then taken by the next round at once, so a sync never delays
//! a write, one round covers every partition with pending bytes, and no log waits for another
//! log's fdatasync.
//!
//! Contract: a target's durable mark advances only to the point its round snapshotted, after
//! that point's fdatasync returned Ok; a failed sync is reported to its target alone (which
//! rolls back to its last durable batch); a point taken before a rollback of its target is
//! ignored by it (the generation it carries no longer matches). At most one point per target
//! is outstanding (taken and not yet handed its result), so a target's results arrive in the
//! order its points were taken. The interface is the [`SyncTarget`] trait, so other logs of
//! the shard (a Raft log of many partitions, later) can share the same rounds.

use crate::file::SegFile;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
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

/// A target's identity (its allocation) while it has a sync in flight.
type TargetId = *const ();

fn id_of(target: &Rc<dyn SyncTarget>) -> TargetId {
    Rc::as_ptr(target).cast::<()>()
}

/// One shard's sync rounds.
#[derive(Default)]
struct Syncer {
    /// Targets with written, unsynced bytes, registered since the last round started.
    dirty: RefCell<Vec<Rc<dyn SyncTarget>>>,
    /// A round task is running (it drains `dirty` until it is empty).
    running: Cell<bool>,
    /// Targets whose sync is in flight.
    in_flight: RefCell<HashSet<TargetId>>,
    /// Targets registered while their sync was in flight: registered again when it returns.
    deferred: RefCell<HashMap<TargetId, Rc<dyn SyncTarget>>>,
}

thread_local! {
    /// The syncer of the executor running on this thread, by executor id (a test thread may
    /// run several executors one after the other).
    static SYNCER: RefCell<Option<(usize, Rc<Syncer>)>> = const { RefCell::new(None) };
}

fn syncer() -> Rc<Syncer> {
    let id = glommio::executor().id();
    SYNCER.with(|s| {
        let mut s = s.borrow_mut();
        match &*s {
            Some((owner, syncer)) if *owner == id => syncer.clone(),
            _ => {
                let syncer = Rc::new(Syncer::default());
                *s = Some((id, syncer.clone()));
                syncer
            }
        }
    })
}

/// Registers `target` for the next round (the caller registers a target at most once until its
/// point is taken) and starts the round task when none is running.
pub(crate) fn request(target: Rc<dyn SyncTarget>) {
    register(&syncer(), target);
}

fn register(s: &Rc<Syncer>, target: Rc<dyn SyncTarget>) {
    s.dirty.borrow_mut().push(target);
    if !s.running.replace(true) {
        glommio::spawn_local(rounds(s.clone())).detach();
    }
}

/// Runs rounds until no target is registered.
async fn rounds(s: Rc<Syncer>) {
    loop {
        // Let the tasks that are ready now (writers whose writes completed in the same reactor
        // poll, syncs that returned) register first, so that this round covers them too.
        futures_lite::future::yield_now().await;
        let targets = std::mem::take(&mut *s.dirty.borrow_mut());
        if targets.is_empty() {
            s.running.set(false);
            return;
        }
        let mut issued = 0u64;
        for target in targets {
            let id = id_of(&target);
            if s.in_flight.borrow().contains(&id) {
                // One sync per target at a time: taken again when the one in flight returns.
                s.deferred.borrow_mut().insert(id, target);
                continue;
            }
            let Some(point) = target.take_sync_point() else { continue };
            s.in_flight.borrow_mut().insert(id);
            issued += 1;
            // Spawned in this tick, so every sync of the round reaches the kernel in the same
            // io_uring submission; each hands its target its own result when it returns.
            glommio::spawn_local(sync_one(s.clone(), target, point)).detach();
        }
        if issued > 0 {
            crate::stats::with(|st| {
                st.sync_rounds += 1;
                st.syncs += issued;
            });
        }
    }
}

/// One target's fdatasync: its result goes to the target as soon as it returns; a
/// registration that came meanwhile joins the next round.
async fn sync_one(s: Rc<Syncer>, target: Rc<dyn SyncTarget>, point: SyncPoint) {
    let started = std::time::Instant::now();
    let result = point.file.fdatasync().await;
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    crate::stats::with(|st| st.fsync_us.saturating_record(us));
    target.synced(point, result);
    let id = id_of(&target);
    let removed = s.in_flight.borrow_mut().remove(&id);
    debug_assert!(removed, "a sync returned for a target not in flight");
    let again = s.deferred.borrow_mut().remove(&id);
    if let Some(t) = again {
        register(&s, t);
    }
}
