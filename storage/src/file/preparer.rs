//! The shard's preparing task: writes the zeros of the segment files queued by
//! [`SegFile::write_buf`](super::SegFile::write_buf) (space prepared ahead of appends, see the
//! parent module), one file and one chunk at a time.
//!
//! Contract: a zero chunk is issued only while none of the shard's request-path writes and
//! syncs is in flight (`crate::inflight`), checked every `SEGMENT_PREPARE_IDLE_CHECK_MICROS`
//! at most `SEGMENT_PREPARE_IDLE_CHECKS` times; a file that found no such moment goes to the
//! back of the queue and the task pauses `SEGMENT_PREPARE_BUSY_BACKOFF_MS`, so a shard that
//! keeps the device busy pays one timer a pause, not one per file. A chunk starts at or after
//! the furthest append issued and is published while in flight (an append reaching into it
//! waits for it). The file's prepared end moves only over completed chunks of the current
//! epoch (a cut bumps it); a failed chunk stops preparing the file until it is cut. One task
//! per shard runs while the queue is not empty.

use super::SegFile;
use sluice_core::limits::{SEGMENT_PREPARE_BUSY_BACKOFF_MS, SEGMENT_PREPARE_CHUNK_BYTES, SEGMENT_PREPARE_IDLE_CHECKS};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

/// One shard's queue of files to prepare.
#[derive(Default)]
struct Preparer {
    queue: RefCell<VecDeque<Rc<SegFile>>>,
    /// The task is running (it drains the queue, then ends).
    running: Cell<bool>,
}

thread_local! {
    /// The preparer of the executor running on this thread.
    static PREPARER: crate::executor_local::Slot<Preparer> = const { RefCell::new(None) };
}

fn preparer() -> Rc<Preparer> {
    crate::executor_local::get(&PREPARER)
}

/// Queues `file` (marked queued by the caller) and starts the task when none runs.
pub(super) fn queue(file: Rc<SegFile>) {
    let p = preparer();
    p.queue.borrow_mut().push_back(file);
    if !p.running.replace(true) {
        glommio::spawn_local(run(p)).detach();
    }
}

async fn run(p: Rc<Preparer>) {
    loop {
        let Some(file) = p.queue.borrow_mut().pop_front() else {
            p.running.set(false);
            return;
        };
        if prepare(&file).await == Outcome::Busy {
            p.queue.borrow_mut().push_back(file);
            glommio::timer::sleep(Duration::from_millis(SEGMENT_PREPARE_BUSY_BACKOFF_MS)).await;
        } else {
            file.prep.queued.set(false);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Prepared up to the target, or stopped (cut, or failed).
    Done,
    /// The shard's request-path I/O left no moment for a chunk: try again later.
    Busy,
}

/// Writes zeros from the end of the prepared space (or of the data, when appends got past
/// it) up to the file's target, then syncs what it wrote.
async fn prepare(file: &Rc<SegFile>) -> Outcome {
    let p = &file.prep;
    let epoch = p.epoch.get();
    let mut wrote = false;
    let mut outcome = Outcome::Done;
    let h = match file.handle().await {
        Ok(h) => h,
        Err(e) => return stop(file, &e),
    };
    loop {
        if !idle().await {
            outcome = Outcome::Busy;
            break;
        }
        let from = p.end.get().max(p.data_end.get());
        if p.epoch.get() != epoch || from >= p.target.get() {
            break;
        }
        let n = (p.target.get() - from).min(SEGMENT_PREPARE_CHUNK_BYTES);
        let mut buf = h.alloc(usize::try_from(n).expect("a chunk fits usize"));
        buf.as_mut().fill(0);
        p.chunk.set(Some((from, from + n)));
        let result = h.write_buf(from, buf).await;
        p.chunk.set(None);
        p.chunks_done.advance(p.chunks_done.get() + 1);
        match result {
            Ok(w) if w as u64 == n => wrote = true,
            Ok(w) => return stop(file, &format!("short write: {w} of {n} bytes")),
            Err(e) => return stop(file, &e),
        }
        if p.epoch.get() == epoch {
            p.end.set(p.end.get().max(from + n));
        }
    }
    // The blocks and size the zeros gave the file, durable now rather than in an append's sync.
    if wrote && p.epoch.get() == epoch {
        if let Err(e) = h.fdatasync().await {
            tracing::debug!(file = %file.path.display(), error = %e, "cannot sync prepared segment space");
        }
    }
    outcome
}

/// Stops preparing `file` until it is cut (appends go on as plain appends).
fn stop(file: &SegFile, why: &dyn std::fmt::Display) -> Outcome {
    tracing::debug!(file = %file.path.display(), error = %why, "cannot prepare segment space; appending without");
    file.prep.failed.set(true);
    Outcome::Done
}

/// Waits until none of the shard's request-path writes and syncs is in flight; false when
/// that did not happen within the checks allowed.
async fn idle() -> bool {
    crate::inflight::wait_for_no_io(SEGMENT_PREPARE_IDLE_CHECKS).await
}
