//! Where a call's partitions go: each partition's leader as this broker's metadata names it,
//! one list per leader ([`by_leader`], [`split_here`], [`capped`]), and the rounds a caller tries while
//! leaders move ([`rounds`]).
//!
//! Contract:
//! - [`leader_of`] reads the published metadata only (no I/O): on a lone broker every partition
//!   it has is here; in a cluster a partition is here, on another broker, without a known leader
//!   yet, or gone (deleted, or never created).
//! - [`by_leader`] keeps each leader's items in the order given; [`split_here`] parts this
//!   broker's from the others'; [`capped`] splits each leader's list into calls of at most `cap`
//!   items, in order.
//! - [`rounds`] runs a round at once and each further one `retry_ms` after the previous ended,
//!   at most `attempts` rounds (at least one), re-reading nothing itself: each round reads
//!   the leaders again. It returns the first round's `Break`, or the state the last round left.

use crate::shard::Shard;
use sluice_core::TopicPartition;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

/// Where a call for a partition goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    Here,
    Broker(i32),
}

/// What the metadata says of a partition's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leader {
    At(Dest),
    /// The partition exists but no leader is known yet (an election is under way).
    NotKnown,
    /// The metadata has no such partition.
    Gone,
}

/// The leader of `tp` in this broker's metadata (module docs).
pub fn leader_of(shard: &Shard, tp: &TopicPartition) -> Leader {
    let Some(me) = shard.replicas().map(|r| r.node().0) else {
        // A lone broker: every partition is here (an unknown one is answered as such).
        return match shard.metadata().partition(&tp.topic, tp.partition, 0) {
            Some(_) => Leader::At(Dest::Here),
            None => Leader::Gone,
        };
    };
    match shard.metadata().partition(&tp.topic, tp.partition, me) {
        None => Leader::Gone,
        Some(state) => leader_from(me, state.leader),
    }
}

/// The leader as broker `me` sees a partition whose leader is `leader` (-1: none).
fn leader_from(me: i32, leader: i32) -> Leader {
    match leader {
        l if l == me => Leader::At(Dest::Here),
        l if l >= 0 => Leader::At(Dest::Broker(l)),
        _ => Leader::NotKnown,
    }
}

/// Items split by their partition's leader.
#[derive(Debug, PartialEq, Eq)]
pub struct ByLeader<T> {
    pub to: BTreeMap<Dest, Vec<T>>,
    pub not_known: Vec<T>,
    pub gone: Vec<T>,
}

impl<T> Default for ByLeader<T> {
    fn default() -> Self {
        ByLeader { to: BTreeMap::new(), not_known: Vec::new(), gone: Vec::new() }
    }
}

/// Splits `items` by the leader `leader` names for each (module docs).
pub fn by_leader<T>(items: impl IntoIterator<Item = T>, leader: impl Fn(&T) -> Leader) -> ByLeader<T> {
    let mut out = ByLeader::default();
    for item in items {
        match leader(&item) {
            Leader::At(d) => out.to.entry(d).or_default().push(item),
            Leader::NotKnown => out.not_known.push(item),
            Leader::Gone => out.gone.push(item),
        }
    }
    out
}

/// This broker's items, and the other leaders' by broker.
pub fn split_here<T>(to: BTreeMap<Dest, Vec<T>>) -> (Vec<T>, BTreeMap<i32, Vec<T>>) {
    let mut here = Vec::new();
    let mut remote = BTreeMap::new();
    for (d, items) in to {
        match d {
            Dest::Here => here = items,
            Dest::Broker(n) => {
                remote.insert(n, items);
            }
        }
    }
    (here, remote)
}

/// Each leader's items in calls of at most `cap` (`cap` ≥ 1), in order.
pub fn capped<K: Copy, T>(to: BTreeMap<K, Vec<T>>, cap: usize) -> Vec<(K, Vec<T>)> {
    assert!(cap >= 1, "a call carries at least one item");
    let mut calls = Vec::new();
    for (d, items) in to {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            calls.push((d, items.by_ref().take(cap).collect()));
        }
    }
    calls
}

/// Which round a caller is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// 0 for the first.
    pub attempt: u32,
    /// No round follows this one: what is still undone is final.
    pub last: bool,
}

/// Runs `round` on `state` until it breaks, at most `attempts` times (module docs): `Ok` with
/// what it broke with, or `Err` with the state the last round left.
pub async fn rounds<S, B>(
    attempts: u32,
    retry_ms: u64,
    mut state: S,
    mut round: impl AsyncFnMut(Round, S) -> ControlFlow<B, S>,
) -> Result<B, S> {
    let attempts = attempts.max(1);
    for attempt in 0..attempts {
        if attempt > 0 {
            glommio::timer::sleep(Duration::from_millis(retry_ms)).await;
        }
        match round(Round { attempt, last: attempt + 1 == attempts }, state).await {
            ControlFlow::Break(b) => return Ok(b),
            ControlFlow::Continue(s) => state = s,
        }
    }
    Err(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(f).unwrap().join().unwrap();
    }

    #[test]
    fn a_leader_is_here_elsewhere_or_not_known() {
        assert_eq!(leader_from(2, 2), Leader::At(Dest::Here));
        assert_eq!(leader_from(2, 0), Leader::At(Dest::Broker(0)));
        assert_eq!(leader_from(2, -1), Leader::NotKnown);
    }

    #[test]
    fn items_are_split_by_leader_in_order_and_capped_per_call() {
        let leaders = |n: &u32| match n % 5 {
            0 => Leader::At(Dest::Here),
            1 | 2 => Leader::At(Dest::Broker(7)),
            3 => Leader::NotKnown,
            _ => Leader::Gone,
        };
        let split = by_leader(0..12u32, leaders);
        assert_eq!(split.to[&Dest::Here], vec![0, 5, 10]);
        assert_eq!(split.to[&Dest::Broker(7)], vec![1, 2, 6, 7, 11]);
        assert_eq!(split.not_known, vec![3, 8]);
        assert_eq!(split.gone, vec![4, 9]);
        let (here, remote) = split_here(split.to.clone());
        assert_eq!(here, vec![0, 5, 10]);
        assert_eq!(remote, BTreeMap::from([(7, vec![1, 2, 6, 7, 11])]));
        let calls = capped(split.to, 2);
        assert_eq!(
            calls,
            vec![
                (Dest::Here, vec![0, 5]),
                (Dest::Here, vec![10]),
                (Dest::Broker(7), vec![1, 2]),
                (Dest::Broker(7), vec![6, 7]),
                (Dest::Broker(7), vec![11]),
            ]
        );
        assert_eq!(capped(BTreeMap::<i32, Vec<u8>>::new(), 1), vec![]);
    }

    #[test]
    fn rounds_stop_at_the_first_break() {
        run(|| async {
            let seen = RefCell::new(Vec::new());
            let out = rounds(5, 1, 0u32, async |r, n| {
                seen.borrow_mut().push(r);
                if n == 2 {
                    ControlFlow::Break("done")
                } else {
                    ControlFlow::Continue(n + 1)
                }
            })
            .await;
            assert_eq!(out, Ok("done"));
            let attempts: Vec<u32> = seen.borrow().iter().map(|r| r.attempt).collect();
            assert_eq!(attempts, vec![0, 1, 2]);
            assert!(seen.borrow().iter().all(|r| !r.last));
        });
    }

    #[test]
    fn rounds_end_after_the_attempts_with_the_last_state() {
        run(|| async {
            let seen = RefCell::new(Vec::new());
            let started = std::time::Instant::now();
            let out: Result<(), u32> = rounds(3, 10, 0u32, async |r, n| {
                seen.borrow_mut().push(r);
                ControlFlow::Continue(n + 1)
            })
            .await;
            assert_eq!(out, Err(3));
            assert!(started.elapsed() >= Duration::from_millis(20), "two pauses between three rounds");
            let lasts: Vec<bool> = seen.borrow().iter().map(|r| r.last).collect();
            assert_eq!(lasts, vec![false, false, true], "only the last round is told so");
            let once: Result<(), u32> = rounds(0, 10, 0u32, async |_, n| ControlFlow::Continue(n + 1)).await;
            assert_eq!(once, Err(1), "at least one round");
        });
    }
}
