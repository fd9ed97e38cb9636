//! Produce on the leader of a replicated partition: each batch is proposed to the partition's
//! Raft group and answered when it commits.
//!
//! Contract:
//! - [`Replicas::produce_on_leader`] does every check and every proposal synchronously (so
//!   pipelined requests keep their order in the log) and returns a future that only waits.
//! - Refused at once: on a non-leader (NOT_LEADER_OR_FOLLOWER with the known leader and epoch),
//!   and with acks=all when fewer replicas are in sync than `min.insync.replicas`. In sync, as
//!   for Kafka's leader, means in the ISR the metadata log records (followers within
//!   `replica_lag_time_max_ms`), less brokers whose links are down; not Raft's instantaneous
//!   view (a follower whose matched index trails the commit index for a moment, or whose
//!   `recent_active` flag was just reset, which refused requests under load).
//! - Idempotent producers: a batch is checked against the proposals of its producer still in
//!   flight on this leader (a retry of one of them waits for that proposal's outcome; a gap is
//!   OUT_OF_ORDER_SEQUENCE), else against the producer state of the leader's log (appended
//!   batches, committed or not: a retry of one in the log is answered with its offsets once
//!   the high watermark passes it). Producer state is recorded by every replica as it appends,
//!   so a new leader has it.
//! - acks=all and acks=1 are answered at commit (acks=1 waiting for the commit is stronger
//!   than Kafka's leader-write answer: left to refine); acks=0 waits for nothing.

use super::Replicas;
use crate::error::PartitionError;
use crate::msg::Acks;
use crate::raft::driver::ProposeError;
use crate::raft::GroupId;
use bytes::Bytes;
use futures::future::{LocalBoxFuture, Shared};
use futures::FutureExt;
use sluice_core::batch::BatchHeader;
use sluice_core::cluster::NodeId as ClusterNode;
use sluice_core::{LeaderEpoch, Offset};
use sluice_storage::producers::SeqCheck;
use sluice_storage::PartitionLog;
use std::rc::Rc;

/// The outcome of one proposed batch: its base offset once committed.
pub type Outcome = Shared<LocalBoxFuture<'static, Result<Offset, PartitionError>>>;

/// A batch of an idempotent producer proposed and not yet resolved.
pub struct Inflight {
    epoch: i16,
    first: i32,
    last: i32,
    outcome: Outcome,
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

fn last_seq(h: &BatchHeader) -> i32 {
    let sum = i64::from(h.base_sequence) + i64::from(h.last_offset_delta);
    i32::try_from(sum % (i64::from(i32::MAX) + 1)).expect("below i32::MAX + 1")
}

pub(super) fn propose_error(e: ProposeError) -> PartitionError {
    match e {
        ProposeError::NotLeader { leader, term } => PartitionError::NotLeaderOrFollower {
            leader: leader.map(|l| super::cluster_node(l).0),
            epoch: term.epoch().unwrap_or(LeaderEpoch(-1)).0,
        },
        other => PartitionError::NotCommitted(other.to_string()),
    }
}

impl Replicas {
    /// Proposes `batches` of `group` on the leader (module contract); the future resolves
    /// with the first batch's base offset.
    pub fn produce_on_leader(
        &self,
        group: GroupId,
        acks: Acks,
        batches: &[(BatchHeader, Bytes)],
        recorded_isr: &[i32],
        min_insync: usize,
    ) -> Result<LocalBoxFuture<'static, Result<Offset, PartitionError>>, PartitionError> {
        let log = self.log(group).ok_or(PartitionError::UnknownTopicOrPartition)?;
        if !self.is_leader(group) {
            let (leader, epoch) = self.leader(group).unwrap_or((None, LeaderEpoch(-1)));
            return Err(PartitionError::NotLeaderOrFollower { leader: leader.map(|l| l.0), epoch: epoch.0 });
        }
        if acks == Acks::All {
            let isr = recorded_isr.iter().filter(|n| self.is_live(ClusterNode(**n))).count();
            if isr < min_insync {
                return Err(PartitionError::NotEnoughReplicas { isr, min: min_insync });
            }
        }
        let mut outcomes = Vec::with_capacity(batches.len());
        for (h, b) in batches {
            outcomes.push(self.propose_batch(group, &log, h, b.clone())?);
        }
        Ok(async move {
            let mut first = None;
            for o in outcomes {
                let base = o.await?;
                first.get_or_insert(base);
            }
            first.ok_or_else(|| PartitionError::InvalidRequest("no record batch".into()))
        }
        .boxed_local())
    }

    fn propose_batch(
        &self,
        group: GroupId,
        log: &Rc<PartitionLog>,
        h: &BatchHeader,
        b: Bytes,
    ) -> Result<Outcome, PartitionError> {
        let idempotent = h.producer_id >= 0 && !h.is_control();
        if idempotent {
            if let Some(o) = self.check_inflight(group, log, h)? {
                return Ok(o);
            }
        }
        let handle = self.driver.borrow_mut().propose(group, b).map_err(propose_error)?;
        self.wake();
        let outcome: Outcome = async move {
            handle.await.unwrap_or(Err(ProposeError::GroupStopped)).map(|c| c.base).map_err(propose_error)
        }
        .boxed_local()
        .shared();
        if idempotent {
            let entry = Inflight {
                epoch: h.producer_epoch,
                first: h.base_sequence,
                last: last_seq(h),
                outcome: outcome.clone(),
            };
            self.inflight.borrow_mut().entry((group, h.producer_id)).or_default().push_back(entry);
        }
        Ok(outcome)
    }

    /// The producer's proposals in flight decide first; then the log's producer state. Some
    /// outcome when the batch is a retry (of an in-flight proposal or of a batch in the log).
    fn check_inflight(
        &self,
        group: GroupId,
        log: &Rc<PartitionLog>,
        h: &BatchHeader,
    ) -> Result<Option<Outcome>, PartitionError> {
        let mut all = self.inflight.borrow_mut();
        let key = (group, h.producer_id);
        if let Some(list) = all.get_mut(&key) {
            while list.front().is_some_and(|e| e.outcome.peek().is_some()) {
                list.pop_front();
            }
            if list.is_empty() {
                all.remove(&key);
            }
        }
        if let Some(list) = all.get(&key) {
            if let Some(e) = list.iter().find(|e| e.epoch == h.producer_epoch && e.first == h.base_sequence) {
                return Ok(Some(e.outcome.clone()));
            }
            let last = list.back().expect("non-empty lists only");
            let follows = (h.producer_epoch == last.epoch && h.base_sequence == next_seq(last.last))
                || (h.producer_epoch > last.epoch && h.base_sequence == 0);
            if follows {
                return Ok(None);
            }
            if h.producer_epoch < last.epoch {
                return Err(PartitionError::InvalidProducerEpoch(format!(
                    "producer {} epoch {} is older than {}",
                    h.producer_id, h.producer_epoch, last.epoch
                )));
            }
            return Err(PartitionError::OutOfOrderSequence(format!(
                "producer {}: sequence {} after {} in flight",
                h.producer_id, h.base_sequence, last.last
            )));
        }
        drop(all);
        match log.check_producer(h).map_err(PartitionError::from)? {
            SeqCheck::Append => Ok(None),
            SeqCheck::Duplicate { base_offset, last_offset } => {
                let log = log.clone();
                let o: Outcome = async move {
                    log.wait_beyond(Offset(last_offset)).await;
                    Ok(Offset(base_offset))
                }
                .boxed_local()
                .shared();
                Ok(Some(o))
            }
        }
    }
}
