//! A monotonically advancing offset that tasks on the same shard can wait on.
//!
//! Contract: the value only grows ([`Watermark::advance`] asserts it); waiters for a target at
//! or below the current value complete at once; [`Watermark::fail_waiters`] wakes every waiter
//! with an error (used when a write fails and its appends are rolled back).

use futures::channel::oneshot;
use std::cell::{Cell, RefCell};

const PRUNE_AT: usize = 16;

#[derive(Debug, Default)]
pub struct Watermark {
    value: Cell<i64>,
    waiters: RefCell<Vec<(i64, oneshot::Sender<()>)>>,
}

/// The watermark was failed before it reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitFailed;

impl Watermark {
    pub fn new(value: i64) -> Self {
        Watermark { value: Cell::new(value), waiters: RefCell::new(Vec::new()) }
    }

    pub fn get(&self) -> i64 {
        self.value.get()
    }

    /// Moves the watermark forward and wakes every waiter whose target is reached.
    pub fn advance(&self, to: i64) {
        assert!(to >= self.value.get(), "watermark moved backwards");
        self.value.set(to);
        let mut waiters = self.waiters.borrow_mut();
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0 <= to {
                let (_, tx) = waiters.swap_remove(i);
                let _ = tx.send(());
            } else {
                i += 1;
            }
        }
    }

    /// Sets the value back (only after a failed write rolled appends back) without waking.
    pub fn reset(&self, to: i64) {
        self.value.set(to);
    }

    /// Fails every current waiter.
    pub fn fail_waiters(&self) {
        self.waiters.borrow_mut().clear();
    }

    /// Number of tasks waiting (for metrics and tests).
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Completes once the value is at least `target`.
    pub fn wait_for(&self, target: i64) -> impl std::future::Future<Output = Result<(), WaitFailed>> {
        let rx = if self.value.get() >= target {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            let mut waiters = self.waiters.borrow_mut();
            // Waiters that gave up (a long poll that timed out) are dropped here, so an idle
            // log polled forever keeps a bounded list.
            if waiters.len() >= PRUNE_AT && waiters.len().is_power_of_two() {
                waiters.retain(|(_, tx)| !tx.is_canceled());
            }
            waiters.push((target, tx));
            Some(rx)
        };
        async move {
            match rx {
                None => Ok(()),
                Some(rx) => rx.await.map_err(|_| WaitFailed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn wakes_in_order_and_fails() {
        let w = Watermark::new(0);
        let mut a = Box::pin(w.wait_for(5));
        let mut b = Box::pin(w.wait_for(10));
        assert!(a.as_mut().now_or_never().is_none());
        w.advance(7);
        assert_eq!(a.as_mut().now_or_never(), Some(Ok(())));
        assert!(b.as_mut().now_or_never().is_none());
        w.fail_waiters();
        assert_eq!(b.as_mut().now_or_never(), Some(Err(WaitFailed)));
        assert_eq!(w.wait_for(3).now_or_never(), Some(Ok(())));
    }

    #[test]
    fn abandoned_waiters_do_not_accumulate() {
        let w = Watermark::new(0);
        for _ in 0..10_000 {
            drop(w.wait_for(100));
        }
        assert!(w.waiting() <= 2 * PRUNE_AT, "{} waiters kept", w.waiting());
    }
}
