//! Incremental reconciliation of one member towards its target assignment (KIP-848's
//! "current assignment builder").
//!
//! Contract: a member first gives up (revokes) what its target no longer holds, keeping its
//! member epoch until it reports the revocation done; only then does it move to the target
//! epoch. It gets a partition only when no other member holds it, assigned or pending
//! revocation (`held_by_others`); until then the partition is "unreleased" and the member
//! waits at the target epoch. So no partition is ever held by two members at once.

use super::{Assignment, ConsumerMember, MemberEpoch, MemberState, TopicPartition};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Does `a` hold no partition of `b`?
fn disjoint(a: &Assignment, b: &Assignment) -> bool {
    a.iter().all(|(t, ps)| b.get(t).is_none_or(|qs| ps.is_disjoint(qs)))
}

/// Is every partition of `a` in `b`?
pub(crate) fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter().all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|qs| ps.is_subset(qs)))
}

fn filter(a: &Assignment, keep: impl Fn(&str, i32) -> bool) -> Assignment {
    a.iter()
        .map(|(t, ps)| (t.clone(), ps.iter().copied().filter(|p| keep(t, *p)).collect::<BTreeSet<i32>>()))
        .filter(|(_, ps)| !ps.is_empty())
        .collect()
}

pub(crate) fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    filter(a, |t, p| b.get(t).is_some_and(|ps| ps.contains(&p)))
}

pub(crate) fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    filter(a, |t, p| !b.get(t).is_some_and(|ps| ps.contains(&p)))
}

pub(crate) fn union(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = a.clone();
    for (t, ps) in b {
        out.entry(t.clone()).or_default().extend(ps);
    }
    out
}

/// The inputs of one reconciliation step.
pub(crate) struct Target<'a> {
    pub partitions: &'a Assignment,
    pub epoch: MemberEpoch,
    /// Partitions held (assigned or pending revocation) by other members.
    pub held_by_others: &'a BTreeSet<TopicPartition>,
    /// What the member says it owns (`None`: unchanged since its last heartbeat).
    pub owned: Option<&'a Assignment>,
    pub now: Instant,
}

/// Moves the member one step towards its target.
pub(crate) fn step(m: &mut ConsumerMember, t: &Target<'_>) {
    match m.state {
        MemberState::UnrevokedPartitions => {
            let revoked = t.owned.is_some_and(|o| disjoint(o, &m.revoking));
            if revoked {
                m.revoking.clear();
                m.revoke_deadline = None;
                next(m, t);
            }
        }
        MemberState::UnreleasedPartitions => next(m, t),
        MemberState::Stable if m.epoch != t.epoch => next(m, t),
        MemberState::Stable => {}
    }
}

fn next(m: &mut ConsumerMember, t: &Target<'_>) {
    let keep = intersect(&m.assigned, t.partitions);
    let revoke = minus(&m.assigned, t.partitions);
    if !revoke.is_empty() {
        m.assigned = keep;
        m.revoking = revoke;
        m.state = MemberState::UnrevokedPartitions;
        m.revoke_deadline = Some(t.now + Duration::from_millis(u64::try_from(m.rebalance_timeout_ms).unwrap_or(0)));
        return;
    }
    let wanted = minus(t.partitions, &keep);
    let free = filter(&wanted, |topic, p| !t.held_by_others.contains(&(topic.to_string(), p)));
    m.state = if free == wanted { MemberState::Stable } else { MemberState::UnreleasedPartitions };
    m.assigned = union(&keep, &free);
    if m.epoch != t.epoch {
        m.previous_epoch = m.epoch;
        m.epoch = t.epoch;
    }
}
