//! The Raft side of a partition reassignment: the leader of a partition's group moves its
//! membership to the target the metadata log records.
//!
//! Contract:
//! - Runs on every shard with a replication runtime: every `REASSIGN_CHECK_INTERVAL_MS`, for
//!   each data group this broker leads whose partition has a reassignment in progress
//!   (`PartitionState::moving`), [`next_step`] — a pure function of the target, the group's
//!   configuration and its members' progress — says what to do, one step at a time:
//!   1. add every target replica that is not a member as a learner (its broker opened the
//!      partition when the reassignment record applied: a fresh replica whose Raft group
//!      starts from the partition's origin voters at offset 0, so it replays the whole log,
//!      configuration changes included, and ends with the same configuration as the others);
//!   2. wait until every learner of the target matched the commit index;
//!   3. if this leader is not in the target, hand leadership to a caught-up target voter
//!      (when the target has none yet, first promote the learners);
//!   4. one `ConfChangeV2` (transition Auto) promoting the target's learners and removing
//!      every member outside the target: raft-rs makes it a simple change when one voter
//!      changes and joint consensus (left automatically) when several do, so a move of all
//!      replicas at once stays safe;
//!   5. once the voters are the target (no learner, not joint), ask the controller to record
//!      the move complete (`admin::reassign::complete`, again after `REASSIGN_RESEND_MS`
//!      while not applied); the brokers of removed replicas then close them and delete their
//!      files (the partition is no longer placed there).
//! - Nothing is proposed while a configuration change is pending or the group is joint.
//! - Raft ids are node id + 1 (`replica::raft_id`); this module speaks node ids.

use super::{cluster_node, raft_id, Replicas};
use crate::raft::wire::{ChangeKind, ConfChangeSpec, Transition};
use crate::raft::GroupId;
use crate::shard::Shard;
use sluice_core::limits::{REASSIGN_CHECK_INTERVAL_MS, REASSIGN_RESEND_MS};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// A group's membership as the step function sees it (node ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub me: i32,
    pub voters: Vec<i32>,
    pub learners: Vec<i32>,
    pub joint: bool,
    pub change_pending: bool,
    pub committed: u64,
    pub matched: BTreeMap<i32, u64>,
}

/// What the leader does next for a reassignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Wait,
    AddLearners(Vec<i32>),
    TransferTo(i32),
    /// Promote these learners and remove these members, in one change.
    Change {
        promote: Vec<i32>,
        remove: Vec<i32>,
    },
    Complete,
}

/// The next step towards `target` (module docs).
pub fn next_step(target: &[i32], v: &View) -> Step {
    if v.joint || v.change_pending {
        return Step::Wait;
    }
    let member = |n: &i32| v.voters.contains(n) || v.learners.contains(n);
    let missing: Vec<i32> = target.iter().copied().filter(|n| !member(n)).collect();
    if !missing.is_empty() {
        return Step::AddLearners(missing);
    }
    let caught_up = |n: &i32| v.matched.get(n).is_some_and(|m| *m >= v.committed);
    let promote: Vec<i32> = v.learners.iter().copied().filter(|n| target.contains(n)).collect();
    if promote.iter().any(|n| !caught_up(n)) {
        return Step::Wait;
    }
    let mut remove: Vec<i32> = v.voters.iter().chain(&v.learners).copied().filter(|n| !target.contains(n)).collect();
    remove.sort_unstable();
    if promote.is_empty() && remove.is_empty() {
        return Step::Complete;
    }
    if !target.contains(&v.me) {
        let heir = target.iter().copied().find(|n| v.voters.contains(n) && caught_up(n));
        return match heir {
            Some(n) => Step::TransferTo(n),
            None if !promote.is_empty() => Step::Change { promote, remove: Vec::new() },
            None => Step::Wait,
        };
    }
    Step::Change { promote, remove }
}

/// Starts the reassignment follower of a shard (module docs).
pub fn follow(shard: &Rc<Shard>, r: &Rc<Replicas>) {
    glommio::spawn_local(run(shard.clone(), r.clone())).detach();
}

async fn run(shard: Rc<Shard>, r: Rc<Replicas>) {
    // Completion requests sent, per group: the target and when.
    let mut sent: BTreeMap<GroupId, (Vec<i32>, u64)> = BTreeMap::new();
    while !shard.is_stopping() {
        glommio::timer::sleep(Duration::from_millis(REASSIGN_CHECK_INTERVAL_MS)).await;
        let led = r.led_groups();
        sent.retain(|g, _| led.contains(g));
        for group in led {
            let Some(tp) = r.partition_of(group) else { continue };
            let snap = shard.metadata();
            let Some(p) = snap.partition(&tp.topic, tp.partition, r.node().0) else { continue };
            if !p.moving() {
                continue;
            }
            let target = p.target();
            let Some(view) = view(&r, group) else { continue };
            let step = next_step(&target, &view);
            act(&shard, &r, group, &tp, &target, step, &mut sent);
        }
    }
}

fn view(r: &Replicas, group: GroupId) -> Option<View> {
    let m = r.driver.borrow().membership(group)?;
    let node = |id: crate::raft::NodeId| cluster_node(id).0;
    Some(View {
        me: r.node().0,
        voters: m.voters.into_iter().map(node).collect(),
        learners: m.learners.into_iter().map(node).collect(),
        joint: m.joint,
        change_pending: m.change_pending,
        committed: m.committed,
        matched: m.matched.into_iter().map(|(n, i)| (node(n), i)).collect(),
    })
}

fn act(
    shard: &Rc<Shard>,
    r: &Rc<Replicas>,
    group: GroupId,
    tp: &sluice_core::TopicPartition,
    target: &[i32],
    step: Step,
    sent: &mut BTreeMap<GroupId, (Vec<i32>, u64)>,
) {
    let node = |n: i32| raft_id(sluice_core::cluster::NodeId(n));
    let change = |changes: Vec<(ChangeKind, crate::raft::NodeId)>| {
        let spec = ConfChangeSpec { transition: Transition::Auto, changes };
        tracing::info!(partition = %tp, %group, change = ?spec, "reassignment: proposing a membership change");
        if let Err(e) = r.driver.borrow_mut().propose_conf_change(group, &spec) {
            tracing::debug!(partition = %tp, error = %e, "reassignment: membership change refused");
        }
        r.wake();
    };
    match step {
        Step::Wait => {}
        Step::AddLearners(ns) => change(ns.into_iter().map(|n| (ChangeKind::AddLearner, node(n))).collect()),
        Step::Change { promote, remove } => change(
            promote
                .into_iter()
                .map(|n| (ChangeKind::AddVoter, node(n)))
                .chain(remove.into_iter().map(|n| (ChangeKind::RemoveNode, node(n))))
                .collect(),
        ),
        Step::TransferTo(n) => {
            tracing::info!(partition = %tp, to = n, "reassignment: moving leadership off a leaving replica");
            r.driver.borrow_mut().transfer_leader(group, node(n));
            r.wake();
        }
        Step::Complete => {
            let now = u64::try_from(sluice_core::clock::now_ms()).unwrap_or(0);
            if sent.get(&group).is_some_and(|(t, at)| t == target && now.saturating_sub(*at) < REASSIGN_RESEND_MS) {
                return;
            }
            sent.insert(group, (target.to_vec(), now));
            let isr: Vec<i32> = r.isr(group).unwrap_or_default().into_iter().map(|n| n.0).collect();
            let c = crate::msg::CompleteReassignment { tp: tp.clone(), target: target.to_vec(), isr };
            let shard = shard.clone();
            let tp = tp.clone();
            glommio::spawn_local(async move {
                match crate::admin::reassign::complete(&shard, c).await {
                    Ok(()) => tracing::info!(partition = %tp, "reassignment complete"),
                    Err(e) => tracing::info!(partition = %tp, error = %e, "reassignment: completion not recorded yet"),
                }
            })
            .detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(me: i32, voters: &[i32], learners: &[i32], matched: &[(i32, u64)]) -> View {
        View {
            me,
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            joint: false,
            change_pending: false,
            committed: 10,
            matched: matched.iter().copied().collect(),
        }
    }

    #[test]
    fn a_move_adds_learners_waits_for_them_then_swaps_in_one_change() {
        let t = [1, 2];
        assert_eq!(next_step(&t, &view(1, &[0, 1], &[], &[(0, 10), (1, 10)])), Step::AddLearners(vec![2]));
        assert_eq!(next_step(&t, &view(1, &[0, 1], &[2], &[(0, 10), (1, 10), (2, 3)])), Step::Wait, "catching up");
        assert_eq!(
            next_step(&t, &view(1, &[0, 1], &[2], &[(0, 10), (1, 10), (2, 10)])),
            Step::Change { promote: vec![2], remove: vec![0] }
        );
        assert_eq!(next_step(&t, &view(1, &[1, 2], &[], &[(1, 10), (2, 10)])), Step::Complete);
    }

    #[test]
    fn a_leaving_leader_hands_over_first() {
        let t = [1, 2];
        let v = view(0, &[0, 1], &[2], &[(0, 10), (1, 10), (2, 10)]);
        assert_eq!(next_step(&t, &v), Step::TransferTo(1));
        // A lagging heir is not chosen.
        let v = view(0, &[0, 1], &[2], &[(0, 10), (1, 4), (2, 10)]);
        assert_eq!(next_step(&t, &v), Step::Change { promote: vec![2], remove: vec![] });
    }

    #[test]
    fn moving_every_replica_promotes_before_handing_over() {
        let t = [2, 3];
        let v = view(0, &[0, 1], &[2, 3], &[(0, 10), (1, 10), (2, 10), (3, 10)]);
        assert_eq!(next_step(&t, &v), Step::Change { promote: vec![2, 3], remove: vec![] });
        let v = view(0, &[0, 1, 2, 3], &[], &[(0, 10), (1, 10), (2, 10), (3, 10)]);
        assert_eq!(next_step(&t, &v), Step::TransferTo(2));
        let v = view(2, &[0, 1, 2, 3], &[], &[(0, 10), (1, 10), (2, 10), (3, 10)]);
        assert_eq!(next_step(&t, &v), Step::Change { promote: vec![], remove: vec![0, 1] });
    }

    #[test]
    fn nothing_while_a_change_is_in_flight_and_a_cancel_drops_the_learner() {
        let mut v = view(1, &[0, 1], &[2], &[(0, 10), (1, 10), (2, 10)]);
        v.change_pending = true;
        assert_eq!(next_step(&[1, 2], &v), Step::Wait);
        v.change_pending = false;
        v.joint = true;
        assert_eq!(next_step(&[1, 2], &v), Step::Wait);
        v.joint = false;
        // Cancelled: the target is the old replicas; the learner leaves even if behind.
        let v = view(1, &[0, 1], &[2], &[(0, 10), (1, 10), (2, 1)]);
        assert_eq!(next_step(&[0, 1], &v), Step::Change { promote: vec![], remove: vec![2] });
    }
}
