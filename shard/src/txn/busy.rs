//! One operation per transactional id at a time, with adds queued for the id (issue #21).
//!
//! Contract: [`IdLocks::claim`] marks an id busy and returns a [`Busy`] guard, or
//! CONCURRENT_TRANSACTIONS at once when the id is busy (InitProducerId, EndTxn, the sweep).
//! [`IdLocks::claim_within`] (the adds) queues instead: it is woken when the guard in flight
//! is dropped and claims again, until it holds the id or `limit` has passed since it started,
//! then answers CONCURRENT_TRANSACTIONS. Dropping a guard frees the id and wakes every add
//! queued for it; the first to run claims it, the others queue again. No borrow is held across
//! an `.await`. Single-threaded (one shard's coordinator): `Rc`, `RefCell`.

use super::TxnError;
use futures::channel::oneshot;
use futures::future::select;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The busy ids of one coordinator, each with the adds queued for it.
#[derive(Default)]
pub struct IdLocks {
    set: Rc<RefCell<HashMap<String, Vec<oneshot::Sender<()>>>>>,
}

/// Marks an id busy for as long as it lives (owned: an answered EndTxn's completion task
/// takes it over); dropping it frees the id and wakes the adds queued for it.
pub struct Busy {
    set: Rc<RefCell<HashMap<String, Vec<oneshot::Sender<()>>>>>,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let queued = self.set.borrow_mut().remove(&self.id);
        assert!(queued.is_some(), "a Busy guard outlived its id's entry");
        for waiter in queued.unwrap_or_default() {
            let _ = waiter.send(());
        }
    }
}

impl IdLocks {
    /// Claims `id`, or CONCURRENT_TRANSACTIONS at once if an operation holds it.
    pub fn claim(&self, id: &str) -> Result<Busy, TxnError> {
        let mut set = self.set.borrow_mut();
        if set.contains_key(id) {
            return Err(TxnError::ConcurrentTransactions);
        }
        set.insert(id.to_string(), Vec::new());
        Ok(Busy { set: self.set.clone(), id: id.to_string() })
    }

    /// Claims `id`, queuing behind the operations that hold it for at most `limit` in all;
    /// with the guard, how many times it queued.
    pub async fn claim_within(&self, id: &str, limit: Duration) -> Result<(Busy, u32), TxnError> {
        let started = Instant::now();
        let mut waits = 0u32;
        loop {
            let refused = match self.claim(id) {
                Ok(busy) => return Ok((busy, waits)),
                Err(e) => e,
            };
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(refused);
            }
            let (wake, woken) = oneshot::channel();
            if let Some(queue) = self.set.borrow_mut().get_mut(id) {
                queue.push(wake);
            }
            waits += 1;
            // Woken when the operation ends, or at the limit (the claim above then answers).
            let _ = select(woken, Box::pin(glommio::timer::sleep(left))).await;
        }
    }

    /// Whether `id` is held (tests).
    #[cfg(test)]
    fn is_busy(&self, id: &str) -> bool {
        self.set.borrow().contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::spawn_awaited;
    use std::cell::Cell;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(move || async move { f().await }).unwrap().join().unwrap();
    }

    #[test]
    fn a_second_claim_is_refused_until_the_first_guard_drops() {
        let locks = IdLocks::default();
        let first = locks.claim("t").expect("a free id is claimed");
        assert!(matches!(locks.claim("t"), Err(TxnError::ConcurrentTransactions)));
        assert!(locks.claim("other").is_ok(), "ids are independent");
        drop(first);
        assert!(!locks.is_busy("t"));
        assert!(locks.claim("t").is_ok());
    }

    #[test]
    fn a_queued_add_gets_the_id_when_the_operation_ends() {
        run(|| async {
            let locks = Rc::new(IdLocks::default());
            let held = locks.claim("t").unwrap();
            let l = locks.clone();
            let add = spawn_awaited(async move { l.claim_within("t", Duration::from_secs(5)).await.map(|(_, w)| w) });
            glommio::timer::sleep(Duration::from_millis(20)).await;
            let started = Instant::now();
            drop(held);
            let waits = add.await.expect("the task ran").expect("the add claimed the id once it was free");
            assert_eq!(waits, 1);
            assert!(started.elapsed() < Duration::from_secs(1), "woken by the release, not the limit");
            assert!(!locks.is_busy("t"), "the add's guard was dropped with its task");
        });
    }

    #[test]
    fn an_add_past_its_limit_is_refused_and_leaves_the_holder_alone() {
        run(|| async {
            let locks = IdLocks::default();
            let _held = locks.claim("t").unwrap();
            let started = Instant::now();
            let r = locks.claim_within("t", Duration::from_millis(30)).await;
            assert!(matches!(r, Err(TxnError::ConcurrentTransactions)));
            assert!(started.elapsed() >= Duration::from_millis(30));
            assert!(locks.is_busy("t"), "the refused add did not free the holder's id");
        });
    }

    #[test]
    fn adds_queued_together_hold_the_id_one_at_a_time() {
        run(|| async {
            let locks = Rc::new(IdLocks::default());
            let held = locks.claim("t").unwrap();
            let inside = Rc::new(Cell::new(0u32));
            let mut tasks = Vec::new();
            for _ in 0..3 {
                let (l, inside) = (locks.clone(), inside.clone());
                tasks.push(spawn_awaited(async move {
                    let (_busy, _) = l.claim_within("t", Duration::from_secs(5)).await.expect("each add gets the id");
                    inside.set(inside.get() + 1);
                    assert_eq!(inside.get(), 1, "two adds held the id at once");
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    inside.set(inside.get() - 1);
                }));
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
            drop(held);
            for t in tasks {
                t.await.expect("the task ran");
            }
            assert!(!locks.is_busy("t"));
        });
    }
}
