//! One share-partition's in-flight state (KIP-932), without I/O: which records of the
//! partition a share group has delivered, to whom, how often, and what became of them.
//!
//! Contract: the state covers offsets `[spso, speo)`; every offset below the share-partition
//! start offset (SPSO) is done (acknowledged or archived), every offset at or above the end
//! offset (SPEO) was never delivered. Each in-flight record is Available (to be delivered
//! again), Acquired by one member until its acquisition lock expires (a RENEW acknowledgement
//! starts the lock again), Acknowledged, or
//! Archived (rejected, or its delivery count reached the limit). Time comes in as `now`;
//! expired locks are released lazily, at the start of every operation. Invariants (checked
//! after every change in debug builds): the first in-flight record is never done (the SPSO
//! advances over done records), at most `max_locks` records are in flight, an Acquired record
//! has an owner and a deadline and no other state has.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A record's state in a share-partition (Kafka's `RecordState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Available,
    Acquired,
    Acknowledged,
    Archived,
}

impl RecordState {
    fn done(self) -> bool {
        matches!(self, RecordState::Acknowledged | RecordState::Archived)
    }
    pub fn code(self) -> u8 {
        match self {
            RecordState::Available => 0,
            RecordState::Acquired => 1,
            RecordState::Acknowledged => 2,
            RecordState::Archived => 4,
        }
    }
    pub fn from_code(c: u8) -> Option<RecordState> {
        [RecordState::Available, RecordState::Acquired, RecordState::Acknowledged, RecordState::Archived]
            .into_iter()
            .find(|s| s.code() == c)
    }
}

/// An acknowledgement type as ShareFetch and ShareAcknowledge carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckType {
    /// 0: an offset of the acquired range the client found no record at (a control record or
    /// compacted away): done.
    Gap,
    Accept,
    Release,
    Reject,
    /// 4 (KIP-1222, version 2 requests that say so): the member still works on the record; its
    /// acquisition lock starts again, it stays acquired by the member with the same delivery
    /// count.
    Renew,
}

impl AckType {
    pub fn from_wire(v: i8) -> Option<AckType> {
        match v {
            0 => Some(AckType::Gap),
            1 => Some(AckType::Accept),
            2 => Some(AckType::Release),
            3 => Some(AckType::Reject),
            4 => Some(AckType::Renew),
            _ => None,
        }
    }

    /// Whether applying it changes what [`SharePartition::durable`] holds (a renewal only
    /// moves a lock, which is not stored).
    pub fn changes_durable_state(self) -> bool {
        self != AckType::Renew
    }
}

/// Why an acknowledgement was refused (Kafka's INVALID_RECORD_STATE / INVALID_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// A record is not acquired by this member (its lock expired, or another member has it).
    InvalidRecordState,
    /// A range outside the in-flight records, or inverted.
    InvalidRange,
}

/// The settings a share-partition runs with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub lock: Duration,
    pub delivery_count_limit: u16,
    pub max_locks: usize,
}

#[derive(Debug, Clone)]
struct InFlight {
    state: RecordState,
    delivery_count: u16,
    owner: Option<Rc<str>>,
    deadline: Option<Instant>,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight { state: RecordState::Available, delivery_count: 0, owner: None, deadline: None }
    }
}

/// Acquired offsets with their delivery count: `(first, last, delivery_count)`, inclusive.
pub type AcquiredRange = (i64, i64, u16);

#[derive(Debug, Clone)]
pub struct SharePartition {
    spso: i64,
    /// `records[i]` is offset `spso + i`.
    records: VecDeque<InFlight>,
    limits: Limits,
}

impl SharePartition {
    pub fn new(start: i64, limits: Limits) -> SharePartition {
        SharePartition { spso: start, records: VecDeque::new(), limits }
    }

    /// Rebuilds the state stored by [`SharePartition::durable`]: records that were acquired
    /// are available again (their members' locks did not survive), with their counts.
    pub fn restore(spso: i64, entries: &[(i64, RecordState, u16)], limits: Limits) -> SharePartition {
        let mut p = SharePartition::new(spso, limits);
        for &(offset, state, count) in entries {
            let Ok(i) = usize::try_from(offset - spso) else { continue };
            if i >= limits.max_locks {
                break;
            }
            while p.records.len() <= i {
                p.records.push_back(InFlight::new());
            }
            let state = if state == RecordState::Acquired { RecordState::Available } else { state };
            p.records[i] = InFlight { state, delivery_count: count, owner: None, deadline: None };
        }
        p.advance();
        p.check();
        p
    }

    /// Runs with new settings from now on (the group's configs changed): locks taken later
    /// last the new duration, records in flight keep theirs; a lower record-lock limit takes
    /// effect as the in-flight records are done.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = Limits { max_locks: limits.max_locks.max(self.records.len()), ..limits };
    }

    /// The share-partition start offset.
    pub fn spso(&self) -> i64 {
        self.spso
    }

    /// The share-partition end offset: the next offset never delivered.
    pub fn speo(&self) -> i64 {
        self.spso + self.records.len() as i64
    }

    /// What must survive a restart: the SPSO and every in-flight record that is done or was
    /// delivered, as (offset, state, delivery count).
    pub fn durable(&self) -> (i64, Vec<(i64, RecordState, u16)>) {
        let entries = self
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state.done() || r.delivery_count > 0)
            .map(|(i, r)| (self.spso + i as i64, r.state, r.delivery_count))
            .collect();
        (self.spso, entries)
    }

    /// Moves the SPSO (AlterShareGroupOffsets, or a log start that passed it): the in-flight
    /// state is dropped.
    pub fn reset_to(&mut self, start: i64) {
        self.spso = start;
        self.records.clear();
    }

    /// The log start passed the SPSO (retention, DeleteRecords): records below it are gone.
    pub fn skip_below(&mut self, log_start: i64) {
        while self.spso < log_start {
            if self.records.pop_front().is_none() {
                self.spso = log_start;
                break;
            }
            self.spso += 1;
        }
        self.advance();
    }

    /// The offset a fetch should read from: the first available in-flight record, else the
    /// SPEO if the log has more (`None`: nothing to deliver now).
    pub fn next_fetch_offset(&mut self, now: Instant, high_watermark: i64) -> Option<i64> {
        self.expire(now);
        if let Some(i) = self.records.iter().position(|r| r.state == RecordState::Available) {
            return Some(self.spso + i as i64);
        }
        (self.speo() < high_watermark && self.records.len() < self.limits.max_locks).then(|| self.speo())
    }

    /// Marks the never-delivered offsets of `[first, last]` done without delivering them:
    /// batches that are not records for the members (the partition's own Raft control
    /// batches, among them the share state written after each acknowledgement — delivering
    /// those would make every acknowledgement feed the next).
    pub fn skip(&mut self, first: i64, last: i64) {
        let mut offset = first.max(self.spso);
        while offset <= last {
            let i = usize::try_from(offset - self.spso).expect("offset at or above the SPSO");
            if i >= self.limits.max_locks {
                break;
            }
            while self.records.len() <= i {
                self.records.push_back(InFlight::new());
            }
            let r = &mut self.records[i];
            if r.state == RecordState::Available && r.delivery_count == 0 {
                r.state = RecordState::Acknowledged;
            }
            offset += 1;
        }
        self.advance();
        self.check();
    }

    /// Acquires for `member` up to `max_records` deliverable records in `[from, to]` (the
    /// offsets the read batches cover), below `high_watermark`.
    pub fn acquire(
        &mut self,
        member: &Rc<str>,
        from: i64,
        to: i64,
        high_watermark: i64,
        max_records: usize,
        now: Instant,
    ) -> Vec<AcquiredRange> {
        self.expire(now);
        let deadline = now + self.limits.lock;
        let last = to.min(high_watermark - 1);
        let mut got: Vec<AcquiredRange> = Vec::new();
        let mut offset = from.max(self.spso);
        let mut n = 0usize;
        while offset <= last && n < max_records {
            let i = usize::try_from(offset - self.spso).expect("offset at or above the SPSO");
            if i == self.records.len() {
                if i >= self.limits.max_locks {
                    break;
                }
                self.records.push_back(InFlight::new());
            }
            let r = &mut self.records[i];
            if r.state == RecordState::Available {
                r.state = RecordState::Acquired;
                r.delivery_count = r.delivery_count.saturating_add(1);
                r.owner = Some(member.clone());
                r.deadline = Some(deadline);
                n += 1;
                match got.last_mut() {
                    Some(g) if g.1 + 1 == offset && g.2 == r.delivery_count => g.1 = offset,
                    _ => got.push((offset, offset, r.delivery_count)),
                }
            }
            offset += 1;
        }
        self.check();
        got
    }

    /// Applies `member`'s acknowledgement of `[first, last]`: one type for the whole range, or
    /// one per offset. All or nothing: a record not acquired by `member` refuses the batch.
    /// RENEW gives the record a new lock of the current duration from `now` (Kafka's
    /// `SharePartition` renews the acquisition lock timer the same way).
    pub fn acknowledge(
        &mut self,
        member: &str,
        first: i64,
        last: i64,
        types: &[AckType],
        now: Instant,
    ) -> Result<(), AckError> {
        self.expire(now);
        if last < first || first < self.spso || last >= self.speo() {
            return Err(AckError::InvalidRange);
        }
        let width = usize::try_from(last - first + 1).map_err(|_| AckError::InvalidRange)?;
        if types.is_empty() || (types.len() != 1 && types.len() != width) {
            return Err(AckError::InvalidRange);
        }
        let start = usize::try_from(first - self.spso).expect("first at or above the SPSO");
        for r in self.records.range(start..start + width) {
            if r.state != RecordState::Acquired || r.owner.as_deref() != Some(member) {
                return Err(AckError::InvalidRecordState);
            }
        }
        let limit = self.limits.delivery_count_limit;
        let renewed = now + self.limits.lock;
        for (k, r) in self.records.range_mut(start..start + width).enumerate() {
            let t = if types.len() == 1 { types[0] } else { types[k] };
            r.state = match t {
                AckType::Renew => {
                    r.deadline = Some(renewed);
                    continue;
                }
                AckType::Accept | AckType::Gap => RecordState::Acknowledged,
                AckType::Reject => RecordState::Archived,
                AckType::Release if r.delivery_count >= limit => RecordState::Archived,
                AckType::Release => RecordState::Available,
            };
            r.owner = None;
            r.deadline = None;
        }
        self.advance();
        self.check();
        Ok(())
    }

    /// Releases every record `member` holds (it left the group or closed its session).
    pub fn release_member(&mut self, member: &str) {
        let limit = self.limits.delivery_count_limit;
        for r in self.records.iter_mut() {
            if r.state == RecordState::Acquired && r.owner.as_deref() == Some(member) {
                Self::release(r, limit);
            }
        }
        self.advance();
        self.check();
    }

    /// Counts of records by state among the in-flight ones: (available, acquired, done).
    pub fn counts(&self) -> (usize, usize, usize) {
        let acquired = self.records.iter().filter(|r| r.state == RecordState::Acquired).count();
        let available = self.records.iter().filter(|r| r.state == RecordState::Available).count();
        (available, acquired, self.records.len() - acquired - available)
    }

    fn release(r: &mut InFlight, limit: u16) {
        r.state = if r.delivery_count >= limit { RecordState::Archived } else { RecordState::Available };
        r.owner = None;
        r.deadline = None;
    }

    /// Releases acquisitions whose lock expired.
    fn expire(&mut self, now: Instant) {
        let limit = self.limits.delivery_count_limit;
        let mut any = false;
        for r in self.records.iter_mut() {
            if r.state == RecordState::Acquired && r.deadline.is_some_and(|d| d <= now) {
                Self::release(r, limit);
                any = true;
            }
        }
        if any {
            self.advance();
            self.check();
        }
    }

    /// Moves the SPSO over the done records at the front.
    fn advance(&mut self) {
        while self.records.front().is_some_and(|r| r.state.done()) {
            self.records.pop_front();
            self.spso += 1;
        }
    }

    fn check(&self) {
        if cfg!(debug_assertions) {
            assert!(self.records.front().is_none_or(|r| !r.state.done()), "the SPSO stopped before a done record");
            assert!(self.records.len() <= self.limits.max_locks, "more in-flight records than allowed");
            for r in &self.records {
                let acquired = r.state == RecordState::Acquired;
                assert_eq!(acquired, r.owner.is_some(), "owner iff acquired");
                assert_eq!(acquired, r.deadline.is_some(), "deadline iff acquired");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { lock: Duration::from_secs(30), delivery_count_limit: 3, max_locks: 100 }
    }

    fn m(s: &str) -> Rc<str> {
        Rc::from(s)
    }

    #[test]
    fn skipped_offsets_are_never_delivered_and_delivered_ones_stay() {
        let now = Instant::now();
        let mut p = SharePartition::new(0, limits());
        assert_eq!(p.acquire(&m("a"), 0, 1, 10, 10, now), vec![(0, 1, 1)]);
        p.skip(1, 2);
        p.skip(4, 4);
        assert_eq!((p.spso(), p.speo()), (0, 5), "offset 1 is acquired, 2 and 4 are done");
        assert_eq!(p.acquire(&m("b"), 0, 5, 10, 10, now), vec![(3, 3, 1), (5, 5, 1)]);
        p.acknowledge("a", 0, 1, &[AckType::Accept], now).unwrap();
        assert_eq!(p.spso(), 3);
    }

    #[test]
    fn acquire_then_accept_advances_the_spso() {
        let now = Instant::now();
        let mut p = SharePartition::new(10, limits());
        assert_eq!(p.next_fetch_offset(now, 20), Some(10));
        let got = p.acquire(&m("a"), 10, 14, 20, 100, now);
        assert_eq!(got, vec![(10, 14, 1)]);
        assert_eq!(p.speo(), 15);
        // Another member gets what follows, never the same records.
        assert_eq!(p.next_fetch_offset(now, 20), Some(15));
        assert_eq!(p.acquire(&m("b"), 10, 19, 20, 3, now), vec![(15, 17, 1)]);
        assert_eq!(p.acknowledge("a", 10, 14, &[AckType::Accept], now), Ok(()));
        assert_eq!(p.spso(), 15);
        assert_eq!(p.acknowledge("b", 15, 17, &[AckType::Accept, AckType::Gap, AckType::Reject], now), Ok(()));
        assert_eq!(p.spso(), 18);
        assert_eq!(p.speo(), 18);
    }

    #[test]
    fn acquisition_stops_at_the_high_watermark_and_max_locks() {
        let now = Instant::now();
        let mut p = SharePartition::new(0, Limits { max_locks: 4, ..limits() });
        assert_eq!(p.acquire(&m("a"), 0, 100, 3, 100, now), vec![(0, 2, 1)]);
        assert_eq!(p.acquire(&m("a"), 0, 100, 10, 100, now), vec![(3, 3, 1)]);
        assert_eq!(p.next_fetch_offset(now, 10), None, "four records in flight: no more locks");
        assert_eq!(p.acquire(&m("a"), 0, 100, 10, 100, now), vec![]);
    }

    #[test]
    fn only_the_owner_acknowledges_and_ranges_are_checked() {
        let now = Instant::now();
        let mut p = SharePartition::new(0, limits());
        p.acquire(&m("a"), 0, 4, 10, 100, now);
        assert_eq!(p.acknowledge("b", 0, 1, &[AckType::Accept], now), Err(AckError::InvalidRecordState));
        assert_eq!(p.acknowledge("a", 3, 7, &[AckType::Accept], now), Err(AckError::InvalidRange));
        assert_eq!(p.acknowledge("a", 2, 1, &[AckType::Accept], now), Err(AckError::InvalidRange));
        assert_eq!(p.acknowledge("a", 0, 2, &[AckType::Accept, AckType::Accept], now), Err(AckError::InvalidRange));
        // Nothing changed by the refusals.
        assert_eq!(p.acknowledge("a", 0, 4, &[AckType::Accept], now), Ok(()));
        assert_eq!(p.spso(), 5);
        // Acknowledging twice is refused.
        p.acquire(&m("a"), 5, 5, 10, 100, now);
        assert_eq!(p.acknowledge("a", 5, 5, &[AckType::Accept], now), Ok(()));
        assert_eq!(p.acknowledge("a", 5, 5, &[AckType::Accept], now), Err(AckError::InvalidRange));
    }

    #[test]
    fn release_redelivers_with_a_higher_count() {
        let now = Instant::now();
        let mut p = SharePartition::new(0, limits());
        p.acquire(&m("a"), 0, 3, 10, 100, now);
        p.acknowledge("a", 1, 2, &[AckType::Release], now).unwrap();
        assert_eq!(p.spso(), 0);
        assert_eq!(p.next_fetch_offset(now, 10), Some(1));
        assert_eq!(p.acquire(&m("b"), 1, 9, 10, 100, now), vec![(1, 2, 2), (4, 9, 1)]);
    }

    #[test]
    fn an_expired_lock_makes_records_available_and_refuses_the_late_ack() {
        let now = Instant::now();
        let mut p = SharePartition::new(0, limits());
        p.acquire(&m("a"), 0, 1, 10, 100, now);
        let later = now + Duration::from_secs(31);
        assert_eq!(p.acknowledge("a", 0, 1, &[AckType::Accept], later), Err(AckError::InvalidRecordState));
        assert_eq!(p.next_fetch_offset(later, 2), Some(0));
        assert_eq!(p.acquire(&m("b"), 0, 1, 2, 100, later), vec![(0, 1, 2)]);
        assert_eq!(p.counts(), (0, 2, 0));
    }

    #[test]
    fn the_delivery_limit_archives_and_the_spso_moves_past() {
        let now = Instant::now();
        let mut p = SharePartition::new(0, limits());
        for round in 1..=3u16 {
            assert_eq!(p.acquire(&m("a"), 0, 0, 2, 100, now), vec![(0, 0, round)]);
            p.acknowledge("a", 0, 0, &[AckType::Release], now).unwrap();
        }
        // Third release at the limit of 3: archived, the SPSO passes it.
        assert_eq!(p.spso(), 1);
        // A lock timeout at the limit archives too.
        let mut q = SharePartition::new(0, Limits { delivery_count_limit: 1, ..limits() });
        q.acquire(&m("a"), 0, 0, 1, 100, now);
        assert_eq!(q.next_fetch_offset(now + Duration::from_secs(60), 1), None);
        assert_eq!(q.spso(), 1);
    }

    #[test]
    fn renew_extends_the_lock_and_keeps_the_count() {
        let now = Instant::now();
        let mut p = SharePartition::new(0, limits());
        assert_eq!(p.acquire(&m("a"), 0, 2, 10, 100, now), vec![(0, 2, 1)]);
        let durable = p.durable();
        // Renewed twice within each lock: held for 50 s under a 30 s lock.
        let t1 = now + Duration::from_secs(25);
        assert_eq!(p.acknowledge("a", 0, 1, &[AckType::Renew], t1), Ok(()));
        assert_eq!(p.durable(), durable, "a renewal stores nothing");
        let t2 = t1 + Duration::from_secs(25);
        assert_eq!(p.acknowledge("a", 0, 0, &[AckType::Renew], t2), Ok(()));
        // Offset 2 was not renewed: its lock ran out at 30 s and it went to "b".
        assert_eq!(p.acquire(&m("b"), 0, 9, 10, 1, t2), vec![(2, 2, 2)]);
        // Offset 1's renewal at 25 s lasted until 55 s; offset 0's until 80 s.
        let t3 = now + Duration::from_secs(60);
        assert_eq!(p.acknowledge("a", 1, 1, &[AckType::Accept], t3), Err(AckError::InvalidRecordState));
        assert_eq!(p.acquire(&m("b"), 0, 9, 10, 1, t3), vec![(1, 1, 2)]);
        assert_eq!(p.acknowledge("a", 0, 0, &[AckType::Accept], t3), Ok(()));
        assert_eq!(p.spso(), 1);
    }

    #[test]
    fn renew_is_refused_for_records_the_member_does_not_hold() {
        let now = Instant::now();
        let mut p = SharePartition::new(0, limits());
        p.acquire(&m("a"), 0, 3, 10, 100, now);
        assert_eq!(p.acknowledge("b", 0, 0, &[AckType::Renew], now), Err(AckError::InvalidRecordState));
        let late = now + Duration::from_secs(31);
        assert_eq!(p.acknowledge("a", 0, 0, &[AckType::Renew], late), Err(AckError::InvalidRecordState));
        // One type per offset: renew, accept, release, renew, all at once.
        let mut q = SharePartition::new(0, limits());
        q.acquire(&m("a"), 0, 3, 10, 100, now);
        let types = [AckType::Renew, AckType::Accept, AckType::Release, AckType::Renew];
        assert_eq!(q.acknowledge("a", 0, 3, &types, now + Duration::from_secs(20)), Ok(()));
        assert_eq!(q.counts(), (1, 2, 1));
        assert_eq!(q.acquire(&m("b"), 0, 9, 10, 100, now + Duration::from_secs(45)), vec![(2, 2, 2), (4, 9, 1)]);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Acquire { member: u8, max: usize },
            Ack { member: u8, first: u8, width: u8, kind: u8 },
            Release { member: u8 },
            Wait { secs: u8 },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..3, 1usize..6).prop_map(|(member, max)| Op::Acquire { member, max }),
                (0u8..3, 0u8..20, 1u8..4, 0u8..5).prop_map(|(member, first, width, kind)| Op::Ack {
                    member,
                    first,
                    width,
                    kind
                }),
                (0u8..3).prop_map(|member| Op::Release { member }),
                (0u8..20).prop_map(|secs| Op::Wait { secs }),
            ]
        }

        proptest! {
            /// Against a model of each offset (owner, lock deadline, delivery count): a
            /// record renewed by its owner stays that owner's until the renewed deadline,
            /// delivery counts never go down and grow only by acquisition, the SPSO never
            /// goes back, and acknowledgements succeed exactly for records the member holds.
            #[test]
            fn renewals_hold_records_and_counts_only_grow(ops in proptest::collection::vec(op(), 1..60)) {
                let lim = Limits { lock: Duration::from_secs(10), delivery_count_limit: 4, max_locks: 12 };
                let mut p = SharePartition::new(0, lim);
                let start = Instant::now();
                let mut now = start;
                let names = [m("a"), m("b"), m("c")];
                // offset -> (owner, deadline) while acquired; offset -> count.
                let mut held: std::collections::HashMap<i64, (u8, Instant)> = Default::default();
                let mut counts: std::collections::HashMap<i64, u16> = Default::default();
                let mut spso = 0;
                for op in ops {
                    held.retain(|_, (_, d)| *d > now);
                    match op {
                        Op::Acquire { member, max } => {
                            for (f, l, c) in p.acquire(&names[member as usize], 0, 19, 20, max, now) {
                                for o in f..=l {
                                    prop_assert!(!held.contains_key(&o), "offset {} acquired twice", o);
                                    let before = counts.get(&o).copied().unwrap_or(0);
                                    prop_assert_eq!(c, before + 1);
                                    counts.insert(o, c);
                                    held.insert(o, (member, now + lim.lock));
                                }
                            }
                        }
                        Op::Ack { member, first, width, kind } => {
                            let (first, last) = (i64::from(first), i64::from(first) + i64::from(width) - 1);
                            let t = AckType::from_wire(kind as i8).unwrap();
                            let mine = (first..=last).all(|o| held.get(&o).is_some_and(|(w, _)| *w == member));
                            let r = p.acknowledge(&names[member as usize], first, last, &[t], now);
                            prop_assert_eq!(r.is_ok(), mine, "{:?} of {}..={} by {}", t, first, last, member);
                            if r.is_ok() {
                                for o in first..=last {
                                    if t == AckType::Renew {
                                        held.insert(o, (member, now + lim.lock));
                                    } else {
                                        held.remove(&o);
                                    }
                                }
                            }
                        }
                        Op::Release { member } => {
                            p.release_member(&names[member as usize]);
                            held.retain(|_, (w, _)| *w != member);
                        }
                        Op::Wait { secs } => now += Duration::from_secs(u64::from(secs)),
                    }
                    prop_assert!(p.spso() >= spso);
                    spso = p.spso();
                    // Expires the locks that ran out by now (as every operation does first).
                    p.next_fetch_offset(now, 20);
                    let (_, acquired, _) = p.counts();
                    held.retain(|_, (_, d)| *d > now);
                    prop_assert_eq!(acquired, held.len());
                }
            }
        }
    }

    #[test]
    fn release_member_and_restore() {
        let now = Instant::now();
        let mut p = SharePartition::new(0, limits());
        p.acquire(&m("a"), 0, 5, 10, 100, now);
        p.acknowledge("a", 2, 2, &[AckType::Accept], now).unwrap();
        p.release_member("a");
        assert_eq!(p.counts(), (5, 0, 1));
        p.acquire(&m("b"), 0, 0, 10, 1, now);
        let (spso, entries) = p.durable();
        let q = SharePartition::restore(spso, &entries, limits());
        assert_eq!(q.spso(), 0);
        assert_eq!(q.speo(), 6);
        assert_eq!(q.counts(), (5, 0, 1));
        let (s2, e2) = q.durable();
        assert_eq!((s2, e2[0]), (0, (0, RecordState::Available, 2)));
        let mut r = q.clone();
        r.skip_below(3);
        assert_eq!(r.spso(), 3);
        r.reset_to(100);
        assert_eq!((r.spso(), r.speo()), (100, 100));
    }
}
