//! DeleteRecords on a replicated partition: the log start moves on every replica, as Kafka's
//! followers take the leader's log start offset.
//!
//! Contract:
//! - The leader proposes a log start batch (`sluice_core::control::log_start_batch`, taking no
//!   offset) carrying the new log start, at most its high watermark. Each replica, the leader
//!   included, moves its own log start once the batch is committed (`Event::LogStart`,
//!   `Replicas::move_log_start`: durably, in the log's `log-start-offset` file, one move at a
//!   time per group, the highest offset waiting applied next); so a new leader answers the
//!   same low watermark and serves nothing below it.
//! - The leader answers once its own log start reached the offset: within
//!   `COORDINATOR_APPEND_TIMEOUT_MS`, else REQUEST_TIMED_OUT (the batch may still commit and
//!   apply later, as Kafka's DeleteRecords may complete after its timeout).
//! - An offset at or below the log start answers the log start at once; one above the high
//!   watermark is OFFSET_OUT_OF_RANGE, as on the direct path.
//! - A single-replica log converted into a Raft group (`convert.rs`) whose start had moved
//!   proposes its log start once its one voter leads ([`Replicas::carry_log_start`], within
//!   `CONVERTED_LOG_START_WAIT_MS`), so replicas added later take it too.
//! - Left out: a replica that crashes between the commit and its durable log start write
//!   keeps its older log start until the next DeleteRecords (the batch is not applied again at
//!   reopen); retention still moves each replica's start on its own.

use super::Replicas;
use crate::error::PartitionError;
use crate::raft::types::GroupId;
use bytes::Bytes;
use sluice_core::{limits, Offset};
use sluice_storage::log::PartitionLog;
use sluice_storage::StorageError;
use std::time::Duration;

/// How often the leader looks whether its own log start moved after the commit.
const APPLIED_POLL_MS: u64 = 2;
/// How long a converted group waits for its first leadership to carry its log start.
const CONVERTED_LOG_START_WAIT_MS: u64 = 10_000;
/// How often it looks.
const CONVERTED_POLL_MS: u64 = 50;

impl Replicas {
    /// A committed log start batch: this replica's log start moves to `offset` (module docs).
    pub(super) fn move_log_start(&self, group: GroupId, offset: Offset) {
        {
            let mut moves = self.log_start_moves.borrow_mut();
            if let Some(waiting) = moves.get_mut(&group) {
                *waiting = Some(waiting.map_or(offset, |w| w.max(offset)));
                return;
            }
        }
        let (Some(log), Some(me)) = (self.log(group), self.this.upgrade()) else { return };
        self.log_start_moves.borrow_mut().insert(group, None);
        glommio::spawn_local(async move {
            let mut next = Some(offset);
            while let Some(to) = next {
                match log.delete_records_before(to).await {
                    Ok(start) => tracing::debug!(partition = log.name(), start = start.0, "log start moved (replicated DeleteRecords)"),
                    Err(e) => tracing::warn!(partition = log.name(), offset = to.0, error = %e, "replicated DeleteRecords not applied on this replica"),
                }
                next = me.log_start_moves.borrow_mut().get_mut(&group).and_then(Option::take);
                if next.is_none() {
                    me.log_start_moves.borrow_mut().remove(&group);
                }
            }
        })
        .detach();
    }

    /// A group just converted from a log whose start moved: once this broker leads it, the
    /// log start is proposed (module docs; given up after `CONVERTED_LOG_START_WAIT_MS`).
    pub(super) fn carry_log_start(&self, group: GroupId, log: std::rc::Rc<PartitionLog>) {
        let Some(me) = self.this.upgrade() else { return };
        glommio::spawn_local(async move {
            for _ in 0..CONVERTED_LOG_START_WAIT_MS / CONVERTED_POLL_MS {
                glommio::timer::sleep(Duration::from_millis(CONVERTED_POLL_MS)).await;
                if !me.is_leader(group) {
                    continue;
                }
                let start = log.log_start();
                let batch = Bytes::from(sluice_core::control::log_start_batch(start.0));
                let proposed = me.driver.borrow_mut().propose(group, batch).is_ok();
                me.wake();
                if proposed {
                    tracing::info!(
                        partition = log.name(),
                        start = start.0,
                        "log start of the converted partition proposed"
                    );
                    return;
                }
            }
            tracing::warn!(
                partition = log.name(),
                "converted partition never led here: its log start stays on this replica"
            );
        })
        .detach();
    }

    /// DeleteRecords below `to` on the leader of `group` (module docs); the new log start.
    pub async fn delete_records_on_leader(
        &self,
        group: GroupId,
        log: &PartitionLog,
        to: Offset,
    ) -> Result<Offset, PartitionError> {
        let (start, hw) = (log.log_start(), log.high_watermark());
        if to.0 < 0 || to > hw {
            return Err(StorageError::OffsetOutOfRange { requested: to.0, start: start.0, end: hw.0 }.into());
        }
        if to <= start {
            return Ok(start);
        }
        let batch = Bytes::from(sluice_core::control::log_start_batch(to.0));
        let bound = limits::COORDINATOR_APPEND_TIMEOUT_MS;
        let applied = async move {
            self.propose(group, batch).await.map_err(super::produce::propose_error)?;
            for _ in 0..bound / APPLIED_POLL_MS {
                if log.log_start() >= to {
                    return Ok(log.log_start());
                }
                glommio::timer::sleep(Duration::from_millis(APPLIED_POLL_MS)).await;
            }
            Err(PartitionError::RequestTimedOut(bound))
        };
        let timer = glommio::timer::sleep(Duration::from_millis(bound));
        match futures::future::select(Box::pin(applied), Box::pin(timer)).await {
            futures::future::Either::Left((r, _)) => r,
            futures::future::Either::Right(_) => Err(PartitionError::RequestTimedOut(bound)),
        }
    }
}
