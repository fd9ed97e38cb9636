//! Request-path work of this thread (one shard per thread) that a compaction pass must not
//! hold up: the partition writes of the flushers, the fdatasyncs of the shard's sync rounds,
//! produce requests the shard forwarded to another shard (counted by the shard crate), and
//! appends in the last `COMPACTION_ACTIVE_WINDOW_MICROS` (a shard taking appends gets the next
//! one soon, often as a message from another shard). A pass on the same shard reads it to keep
//! its CPU slices short while an acknowledgement may wait on a wake-up the executor sees only
//! once the pass pauses (issue #23: main-ring completions and other shards' messages do not end
//! a slice early the way a network receive does).
//!
//! Contract: every [`Guard`] counts one operation from its creation to its drop (so a
//! cancelled await is uncounted too); the count and the last append's time are the thread's
//! own and never cross threads.

use sluice_core::limits::COMPACTION_ACTIVE_WINDOW_MICROS;
use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static IN_FLIGHT: Cell<u64> = const { Cell::new(0) };
    static LAST_APPEND: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Notes an append to one of this thread's logs.
pub(crate) fn appended() {
    LAST_APPEND.with(|t| t.set(Some(Instant::now())));
}

/// Counts one request-path I/O while it lives.
#[derive(Debug)]
pub struct Guard(());

impl Guard {
    #[must_use = "the operation is counted only while the guard lives"]
    pub fn start() -> Guard {
        IN_FLIGHT.with(|n| n.set(n.get() + 1));
        Guard(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        IN_FLIGHT.with(|n| {
            let left = n.get().checked_sub(1).expect("request-path I/O count below zero");
            n.set(left);
        });
    }
}

/// Whether a request-path write, sync or forwarded produce of this thread has not completed
/// yet, or one of its logs took an append within `COMPACTION_ACTIVE_WINDOW_MICROS`.
pub fn pending() -> bool {
    IN_FLIGHT.with(|n| n.get() > 0) || recently_appended()
}

/// Whether a request-path write, sync or forwarded produce of this thread has not completed
/// yet (the appends' window aside): what background writes that share the device wait out.
pub fn io_in_flight() -> bool {
    IN_FLIGHT.with(|n| n.get() > 0)
}

/// Waits until [`io_in_flight`] is false, checking every `SEGMENT_PREPARE_IDLE_CHECK_MICROS`
/// at most `checks` times; whether it became false. What background writes and cuts that
/// share the device wait for.
pub(crate) async fn wait_for_no_io(checks: u32) -> bool {
    for _ in 0..checks {
        if !io_in_flight() {
            return true;
        }
        glommio::timer::sleep(Duration::from_micros(sluice_core::limits::SEGMENT_PREPARE_IDLE_CHECK_MICROS)).await;
    }
    false
}

fn recently_appended() -> bool {
    let window = Duration::from_micros(COMPACTION_ACTIVE_WINDOW_MICROS);
    LAST_APPEND.with(|t| t.get().is_some_and(|at| at.elapsed() < window))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_counts_its_operation_until_it_is_dropped() {
        LAST_APPEND.with(|t| t.set(None));
        assert!(!pending());
        let a = Guard::start();
        let b = Guard::start();
        assert!(pending());
        drop(a);
        assert!(pending());
        drop(b);
        assert!(!pending());
    }

    #[test]
    fn an_append_keeps_the_thread_busy_for_the_window_only() {
        appended();
        assert!(pending());
        let window = Duration::from_micros(COMPACTION_ACTIVE_WINDOW_MICROS);
        LAST_APPEND.with(|t| t.set(Instant::now().checked_sub(window + Duration::from_millis(1))));
        assert!(!pending());
    }
}
