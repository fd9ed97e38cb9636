//! The groups of one coordinator shard and every decision about them, without I/O: what a
//! join, sync, heartbeat, leave, commit, fetch, describe, delete, offset delete, replay or
//! sweep does to the table, and which `__consumer_offsets` records it needs written.
//! [`super::coordinator::Coordinator`] holds a [`Groups`] in a `RefCell`, calls these and does
//! the writes (waiting for them to be durable before applying what depends on them).
//!
//! Contract: nothing here reads the clock or touches storage; time comes in as `now`
//! (monotonic, for sessions and rebalances) and `now_ms` (wall clock, for commit timestamps
//! and offset retention), so every path is unit-tested.

use super::group::{Group, Limits, State, Step};
use super::store::{self, Entry, GroupRecord};
use super::{
    Committed, GroupDescription, GroupError, GroupListing, JoinRequest, JoinResponse, MemberDescription, MemberRef,
    OffsetList, OffsetToCommit, SyncRequest, SyncResponse,
};
use sluice_core::batch;
use sluice_core::Offset;
use std::collections::HashMap;
use std::time::Instant;

/// The groups coordinated by one shard, by group id.
pub(crate) type Groups = HashMap<String, Group>;

/// Records for `__consumer_offsets`: (key, value); an empty value is a tombstone.
pub(crate) type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// JoinGroup: a member id for a group that does not exist is unknown; a group is created by
/// its first join without a member id.
pub(crate) fn join(
    groups: &mut Groups,
    req: JoinRequest,
    new_id: String,
    now: Instant,
    limits: &Limits,
) -> Step<JoinResponse> {
    if req.group_id.is_empty() {
        return Step::Now(Err(GroupError::InvalidGroupId));
    }
    if !req.member_id.is_empty() && !groups.contains_key(&req.group_id) {
        return Step::Now(Err(GroupError::UnknownMemberId));
    }
    let g = groups.entry(req.group_id.clone()).or_insert_with(|| Group::new(&req.group_id));
    // A KIP-848 group with members does not take classic members (sluice has no mixed
    // groups); an empty one becomes classic again.
    if g.consumer.as_ref().is_some_and(|c| !c.members.is_empty()) {
        return Step::Now(Err(GroupError::InconsistentGroupProtocol));
    }
    g.consumer = None;
    g.join(req, new_id, now, limits)
}

/// SyncGroup; when the leader's sync made the group Stable, also the group record to persist.
pub(crate) fn sync(groups: &mut Groups, req: SyncRequest, now: Instant) -> (Step<SyncResponse>, Option<GroupRecord>) {
    let Some(g) = groups.get_mut(&req.group_id) else {
        return (Step::Now(Err(GroupError::UnknownMemberId)), None);
    };
    let (step, stable) = g.sync(req, now);
    let record = stable.then(|| GroupRecord {
        generation: g.generation,
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: g.protocol.clone().unwrap_or_default(),
    });
    (step, record)
}

pub(crate) fn heartbeat(groups: &mut Groups, m: &MemberRef, now: Instant) -> Result<(), GroupError> {
    let g = groups.get_mut(&m.group_id).ok_or(GroupError::UnknownMemberId)?;
    g.heartbeat(&m.member_id, m.group_instance_id.as_deref(), m.generation_id, now)
}

pub(crate) fn leave(
    groups: &mut Groups,
    group_id: &str,
    members: &[(String, Option<String>)],
    now: Instant,
    limits: &Limits,
) -> Result<Vec<Result<(), GroupError>>, GroupError> {
    let g = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
    Ok(g.leave(members, now, limits))
}

/// May this OffsetCommit be taken at all? A group that does not exist takes commits without
/// a generation and member id (a consumer that assigns partitions itself, or an admin).
pub(crate) fn check_commit(groups: &Groups, member: &MemberRef) -> Result<(), GroupError> {
    if member.group_id.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    match groups.get(&member.group_id) {
        None if member.generation_id < 0 && member.member_id.is_empty() => Ok(()),
        None => Err(GroupError::UnknownMemberId),
        Some(Group { consumer: Some(c), .. }) => c.validate_commit(&member.member_id, member.generation_id),
        Some(g) => g.validate_commit(&member.member_id, member.group_instance_id.as_deref(), member.generation_id),
    }
}

/// May this TxnOffsetCommit stage offsets? Kafka's `validateTransactionalOffsetCommit`
/// (KIP-447): a group that does not exist takes it only without a generation
/// (ILLEGAL_GENERATION); a classic group as [`super::group::Group::validate_txn_commit`]; a
/// KIP-848 group as OffsetCommit (its member at its current epoch: STALE_MEMBER_EPOCH).
pub(crate) fn check_txn_commit(groups: &Groups, member: &MemberRef) -> Result<(), GroupError> {
    match groups.get(&member.group_id) {
        None if member.generation_id < 0 => Ok(()),
        None => Err(GroupError::IllegalGeneration),
        Some(Group { consumer: Some(c), .. }) => c.validate_commit(&member.member_id, member.generation_id),
        Some(g) => g.validate_txn_commit(&member.member_id, member.group_instance_id.as_deref(), member.generation_id),
    }
}

/// May this OffsetFetch (v9, with a member) read the group's offsets? As Kafka: without a
/// member id and with a negative epoch nothing is checked; a KIP-848 group wants one of its
/// members at its current epoch (UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH); a classic group or
/// one that does not exist checks nothing (its offsets, if any, are answered).
pub(crate) fn check_fetch(
    groups: &Groups,
    group_id: &str,
    member_id: Option<&str>,
    epoch: i32,
) -> Result<(), GroupError> {
    if member_id.is_none() && epoch < 0 {
        return Ok(());
    }
    match groups.get(group_id) {
        Some(Group { consumer: Some(c), .. }) => c.validate_member(member_id, epoch),
        _ => Ok(()),
    }
}

/// What an accepted commit writes and, once durable, applies.
pub(crate) struct CommitPlan {
    /// One per offset, in request order.
    pub results: Vec<Result<(), GroupError>>,
    pub records: Records,
    pub accepted: Vec<((String, i32), Committed)>,
}

/// The records of a commit; offsets of partitions that do not exist (`exists` says) are
/// refused one by one.
pub(crate) fn plan_commit(
    group_id: &str,
    offsets: Vec<OffsetToCommit>,
    now_ms: i64,
    exists: impl Fn(&str, i32) -> bool,
) -> CommitPlan {
    let mut plan = CommitPlan { results: Vec::with_capacity(offsets.len()), records: Vec::new(), accepted: Vec::new() };
    for o in offsets {
        if !exists(&o.topic, o.partition) {
            plan.results.push(Err(GroupError::UnknownTopicOrPartition));
            continue;
        }
        let c = Committed {
            offset: o.offset,
            leader_epoch: o.leader_epoch,
            metadata: o.metadata,
            commit_timestamp_ms: now_ms,
        };
        plan.records.push((store::offset_key(group_id, &o.topic, o.partition), store::offset_value(&c)));
        plan.accepted.push(((o.topic, o.partition), c));
        plan.results.push(Ok(()));
    }
    plan
}

/// Applies durable commits (creating the group if it does not exist).
pub(crate) fn apply_commit(groups: &mut Groups, group_id: &str, accepted: Vec<((String, i32), Committed)>) {
    let g = groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id));
    g.offsets.extend(accepted);
}

/// OffsetFetch: the asked partitions (none committed → `None`), or every committed offset
/// sorted by topic and partition.
pub(crate) fn fetch(groups: &Groups, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> OffsetList {
    let g = groups.get(group_id);
    match topics {
        Some(topics) => topics
            .into_iter()
            .flat_map(|(t, ps)| {
                ps.into_iter()
                    .map(|p| {
                        let c = g.and_then(|g| g.offsets.get(&(t.clone(), p))).cloned();
                        (t.clone(), p, c)
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        None => {
            let mut all: OffsetList = g
                .map(|g| g.offsets.iter().map(|((t, p), c)| (t.clone(), *p, Some(c.clone()))).collect())
                .unwrap_or_default();
            all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            all
        }
    }
}

pub(crate) fn describe(groups: &Groups, group_id: &str) -> Option<GroupDescription> {
    // A KIP-848 group is not a classic group: DescribeGroups does not find it (as Kafka).
    let g = groups.get(group_id).filter(|g| g.consumer.is_none())?;
    let protocol = g.protocol.clone().unwrap_or_default();
    Some(GroupDescription {
        state: g.state.name(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: protocol.clone(),
        members: g
            .members
            .iter()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, b)| b.clone()).unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect(),
    })
}

/// DeleteGroups, first half: only an Empty group can be deleted; the tombstones of its
/// offsets and of its group record.
pub(crate) fn plan_delete(groups: &Groups, group_id: &str) -> Result<Records, GroupError> {
    let g = groups.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
    if !g.has_no_members() || g.state != State::Empty {
        return Err(GroupError::NonEmptyGroup);
    }
    let mut records: Records =
        g.offsets.keys().map(|(t, p)| (store::offset_key(group_id, t, *p), Vec::new())).collect();
    records.push((store::group_key(group_id), Vec::new()));
    if g.consumer.is_some() {
        records.push((store::consumer_key(group_id), Vec::new()));
    }
    Ok(records)
}

/// DeleteGroups, second half (the tombstones are durable): the group goes (Kafka's Dead),
/// unless a member joined meanwhile.
pub(crate) fn finish_delete(groups: &mut Groups, group_id: &str) {
    if groups.get(group_id).is_some_and(Group::has_no_members) {
        groups.remove(group_id);
    }
}

/// OffsetDelete, first half: partitions of topics the group is subscribed to are refused;
/// the tombstones of the others.
pub(crate) fn plan_delete_offsets(
    groups: &Groups,
    group_id: &str,
    partitions: &[(String, i32)],
) -> Result<(Vec<Result<(), GroupError>>, Records), GroupError> {
    let g = groups.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
    let subscribed = match &g.consumer {
        Some(c) => c.subscribed_topics(&c.metadata).into_iter().collect(),
        None => g.subscribed_topics(),
    };
    let results: Vec<Result<(), GroupError>> = partitions
        .iter()
        .map(|(t, _)| if subscribed.contains(t) { Err(GroupError::GroupSubscribedToTopic) } else { Ok(()) })
        .collect();
    let records = partitions
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|((t, p), _)| (store::offset_key(group_id, t, *p), Vec::new()))
        .collect();
    Ok((results, records))
}

/// OffsetDelete, second half (the tombstones are durable).
pub(crate) fn finish_delete_offsets(
    groups: &mut Groups,
    group_id: &str,
    partitions: &[(String, i32)],
    results: &[Result<(), GroupError>],
) {
    if let Some(g) = groups.get_mut(group_id) {
        for ((t, p), r) in partitions.iter().zip(results) {
            if r.is_ok() {
                g.offsets.remove(&(t.clone(), *p));
            }
        }
    }
}

pub(crate) fn list(groups: &Groups) -> Vec<GroupListing> {
    groups
        .values()
        .map(|g| match &g.consumer {
            Some(c) => GroupListing {
                group_id: g.id.clone(),
                protocol_type: "consumer".to_string(),
                state: c.state_name(),
                group_type: "consumer",
            },
            None => GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.name(),
                group_type: "classic",
            },
        })
        .collect()
}

/// Offsets a transaction staged for a group, as replayed: (group, producer id, the staged
/// set, or None when the transaction ended).
pub type PendingTxnOffsets = (String, i64, Option<Vec<super::OffsetToCommit>>);

/// Replays one record of `__consumer_offsets`. Pending transactional offsets are not the
/// groups' state: they are handed back (to the transaction coordinator of the shard).
pub(crate) fn apply(groups: &mut Groups, e: Entry) -> Option<PendingTxnOffsets> {
    if let Entry::TxnOffsets { group, producer_id, value } = e {
        return Some((group, producer_id, value));
    }
    match e {
        Entry::Offset { group, topic, partition, value } => {
            let g = groups.entry(group.clone()).or_insert_with(|| Group::new(&group));
            match value {
                Some(c) => {
                    g.offsets.insert((topic, partition), c);
                }
                None => {
                    g.offsets.remove(&(topic, partition));
                }
            }
        }
        Entry::Group { group, value: Some(r) } => {
            let g = groups.entry(group.clone()).or_insert_with(|| Group::new(&group));
            g.generation = r.generation;
            g.protocol_type = (!r.protocol_type.is_empty()).then_some(r.protocol_type);
        }
        Entry::Group { group, value: None } => {
            groups.remove(&group);
        }
        Entry::Consumer { group, value } => apply_consumer(groups, group, value),
        // Share groups live in `share`: replay_batches hands their records back.
        Entry::Share { .. } => {}
        Entry::TxnOffsets { .. } => unreachable!("handed back above"),
    }
    None
}

/// Replays a KIP-848 group's record (a tombstone or an unreadable value drops the group part).
fn apply_consumer(groups: &mut Groups, group: String, value: Option<Vec<u8>>) {
    let consumer = value.and_then(|v| super::consumer::record::decode(&v, Instant::now()));
    match consumer {
        Some(c) => groups.entry(group.clone()).or_insert_with(|| Group::new(&group)).consumer = Some(c),
        None => {
            if let Some(g) = groups.get_mut(&group) {
                g.consumer = None;
            }
        }
    }
}

/// What replaying a chunk of `__consumer_offsets` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Records applied.
    pub applied: u64,
    /// Records (or whole batches) that could not be decoded: skipped, never half-applied.
    pub skipped: u64,
    /// The offset after the last batch walked; `None` when no batch header could be read.
    pub next: Option<Offset>,
    /// Pending transactional offsets records, in log order.
    pub pending: Vec<PendingTxnOffsets>,
    /// Share group records (group, value or None for a tombstone), in log order.
    pub share: Vec<(String, Option<Vec<u8>>)>,
}

/// Replays the record batches in `bytes` (a read of the offsets partition, whole batches
/// first; a cut last batch is walked as far as it goes).
pub(crate) fn replay_batches(groups: &mut Groups, bytes: &[u8]) -> Replayed {
    let mut done = Replayed::default();
    let mut pos = 0;
    while pos < bytes.len() {
        let Ok(h) = batch::BatchHeader::parse(&bytes[pos..]) else { break };
        let one = &bytes[pos..(pos + h.total_len()).min(bytes.len())];
        match batch::records(one) {
            Ok(recs) => {
                for r in recs {
                    match r.key.and_then(|k| store::decode(k, r.value)) {
                        Some(Entry::Share { group, value }) => {
                            done.share.push((group, value));
                            done.applied += 1;
                        }
                        Some(e) => {
                            done.pending.extend(apply(groups, e));
                            done.applied += 1;
                        }
                        None => done.skipped += 1,
                    }
                }
            }
            Err(_) => done.skipped += 1,
        }
        done.next = Some(Offset(h.last_offset() + 1));
        pos += h.total_len();
    }
    done
}

/// The sweep: expires silent members and finishes rebalances; with `expire_before_ms`, also
/// drops the offsets of Empty groups committed before then and groups left with nothing.
/// Returns the expired offsets, whose tombstones the caller writes.
pub(crate) fn tick(
    groups: &mut Groups,
    now: Instant,
    limits: &Limits,
    expire_before_ms: Option<i64>,
) -> Vec<(String, Vec<(String, i32)>)> {
    for g in groups.values_mut() {
        g.tick(now, limits);
    }
    let Some(horizon) = expire_before_ms else { return Vec::new() };
    let mut expired = Vec::new();
    for g in groups.values_mut().filter(|g| g.state == State::Empty && g.has_no_members()) {
        let old: Vec<(String, i32)> =
            g.offsets.iter().filter(|(_, c)| c.commit_timestamp_ms < horizon).map(|(k, _)| k.clone()).collect();
        for k in &old {
            g.offsets.remove(k);
        }
        if !old.is_empty() {
            expired.push((g.id.clone(), old));
        }
    }
    groups.retain(|_, g| !(g.state == State::Empty && g.offsets.is_empty() && g.has_no_members()));
    expired
}

/// Tombstones of expired offsets.
pub(crate) fn expiry_records(group_id: &str, keys: &[(String, i32)]) -> Records {
    keys.iter().map(|(t, p)| (store::offset_key(group_id, t, *p), Vec::new())).collect()
}

#[cfg(test)]
mod tests;
