//! The server-side assignors of KIP-848 consumer groups: `uniform` (the default) and `range`.
//!
//! Contract: [`assign`] is a pure function of the members' subscriptions, the partition
//! counts of the subscribed topics and (for `uniform`) the previous target assignment. Every
//! partition of a topic with at least one subscriber goes to exactly one subscriber of that
//! topic; no member gets a partition of a topic it does not subscribe to. `uniform` keeps a
//! member's previous partitions while that keeps the group balanced and, when every member
//! subscribes to the same topics, ends with counts that differ by at most one. `range` gives
//! each topic's partitions to its subscribers (sorted by member id) in contiguous ranges, the
//! first `partitions % subscribers` getting one more, as Kafka's range assignor does.

use super::Assignment;
use std::collections::{BTreeMap, BTreeSet};

/// The server assignors sluice runs, by the name clients give in `group.remote.assignor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    pub const DEFAULT: Assignor = Assignor::Uniform;

    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

/// Subscribed topics by member id (only topics that exist).
pub(crate) type Subscriptions = BTreeMap<String, BTreeSet<String>>;

/// Partition counts of the subscribed topics, by name.
pub(crate) type PartitionCounts = BTreeMap<String, i32>;

/// The target assignment of every member (members without partitions included, empty).
pub(crate) fn assign(
    kind: Assignor,
    subs: &Subscriptions,
    counts: &PartitionCounts,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subs.keys().map(|m| (m.clone(), Assignment::new())).collect();
    match kind {
        Assignor::Range => range(subs, counts, &mut out),
        Assignor::Uniform => uniform(subs, counts, previous, &mut out),
    }
    out
}

fn subscribers<'a>(subs: &'a Subscriptions, topic: &str) -> Vec<&'a String> {
    subs.iter().filter(|(_, ts)| ts.contains(topic)).map(|(m, _)| m).collect()
}

fn give(out: &mut BTreeMap<String, Assignment>, member: &str, topic: &str, p: i32) {
    out.entry(member.to_string()).or_default().entry(topic.to_string()).or_default().insert(p);
}

fn range(subs: &Subscriptions, counts: &PartitionCounts, out: &mut BTreeMap<String, Assignment>) {
    for (topic, &n) in counts {
        let members = subscribers(subs, topic);
        let Ok(k) = i32::try_from(members.len()) else { continue };
        if k == 0 || n <= 0 {
            continue;
        }
        let (each, extra) = (n / k, n % k);
        let mut next = 0;
        for (i, m) in (0..k).zip(&members) {
            let len = each + i32::from(i < extra);
            for p in next..next + len {
                give(out, m, topic, p);
            }
            next += len;
        }
        debug_assert_eq!(next, n, "range gives every partition once");
    }
}

/// Every partition with its subscribers, sorted by topic then partition.
fn all_partitions<'a>(subs: &'a Subscriptions, counts: &PartitionCounts) -> Vec<((String, i32), Vec<&'a String>)> {
    let mut all = Vec::new();
    for (topic, &n) in counts {
        let members = subscribers(subs, topic);
        if members.is_empty() {
            continue;
        }
        for p in 0..n.max(0) {
            all.push(((topic.clone(), p), members.clone()));
        }
    }
    all
}

fn load(out: &BTreeMap<String, Assignment>, m: &str) -> usize {
    out.get(m).map_or(0, |a| a.values().map(BTreeSet::len).sum())
}

fn uniform(
    subs: &Subscriptions,
    counts: &PartitionCounts,
    previous: &BTreeMap<String, Assignment>,
    out: &mut BTreeMap<String, Assignment>,
) {
    let all = all_partitions(subs, counts);
    if subs.is_empty() || all.is_empty() {
        return;
    }
    // Sticky phase: previous owners keep partitions up to the balanced share.
    let cap = all.len().div_ceil(subs.len());
    let mut free = Vec::new();
    for ((topic, p), members) in &all {
        let owner = members.iter().find(|m| previous.get(m.as_str()).is_some_and(|a| holds(a, topic, *p)));
        match owner {
            Some(m) if load(out, m) < cap => give(out, m, topic, *p),
            _ => free.push(((topic.clone(), *p), members)),
        }
    }
    // Fill phase: each free partition to its least loaded subscriber (ties: member id).
    for ((topic, p), members) in free {
        let m = members.iter().min_by_key(|m| (load(out, m), m.as_str())).expect("a subscriber");
        give(out, m, &topic, p);
    }
    rebalance(subs, out);
}

fn holds(a: &Assignment, topic: &str, p: i32) -> bool {
    a.get(topic).is_some_and(|ps| ps.contains(&p))
}

/// Moves partitions from the most to the least loaded member while they differ by more than
/// one and the least loaded one subscribes to a topic the other holds (bounded by the number
/// of partitions: each move lowers the spread).
fn rebalance(subs: &Subscriptions, out: &mut BTreeMap<String, Assignment>) {
    let total: usize = out.keys().map(|m| load(out, m)).sum();
    for _ in 0..total {
        let most = out.keys().max_by_key(|m| (load(out, m), std::cmp::Reverse(m.as_str()))).cloned();
        let least = out.keys().min_by_key(|m| (load(out, m), m.as_str())).cloned();
        let (Some(most), Some(least)) = (most, least) else { return };
        if load(out, &most) <= load(out, &least) + 1 {
            return;
        }
        let wanted = &subs[&least];
        let pick = out[&most]
            .iter()
            .filter(|(t, _)| wanted.contains(*t))
            .find_map(|(t, ps)| ps.last().map(|p| (t.clone(), *p)));
        let Some((topic, p)) = pick else { return };
        take(out, &most, &topic, p);
        give(out, &least, &topic, p);
    }
}

fn take(out: &mut BTreeMap<String, Assignment>, member: &str, topic: &str, p: i32) {
    if let Some(a) = out.get_mut(member) {
        if let Some(ps) = a.get_mut(topic) {
            ps.remove(&p);
            if ps.is_empty() {
                a.remove(topic);
            }
        }
    }
}
