//! KIP-890 part 1: a transactional batch is appended only to a partition that is in its
//! producer's open transaction (Kafka's `ReplicaManager.appendRecords` with
//! `transaction.partition.verification.enable`, its default).
//!
//! Contract: [`check`] runs before the produce's appends are issued (the connection's next
//! request waits, so order is kept). A partition whose owner already holds an open transaction
//! of the producer at the batch's epoch needs nothing more (its first batch was verified or
//! added: Kafka's `hasOngoingTransaction`; the owners' open-transaction state is the cache, one
//! entry per open transaction, dropped by the marker); the others are verified with the
//! transactional id's coordinator (AddPartitionsToTxn's verify-only path), one call per request.
//! The refusals are Kafka 4.x's for the produce version (`AddPartitionsToTxnManager`,
//! `ReplicaManager`): not in the transaction → INVALID_TXN_STATE up to Produce v10,
//! TRANSACTION_ABORTABLE from v11; a fenced producer → INVALID_PRODUCER_EPOCH; a coordinator
//! that cannot answer (and CONCURRENT_TRANSACTIONS up to v11) → NOT_ENOUGH_REPLICAS, which every
//! client retries. A coordinator on another broker is not asked (no broker-to-broker call yet):
//! the batch is appended unverified, as Kafka does when the coordinator cannot verify.

use super::{TxnError, VerifyRequest};
use crate::error::PartitionError;
use crate::msg::ShardMsg;
use crate::route::{self, group_by_owner, Tagged};
use crate::shard::Shard;
use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt;
use sluice_core::TopicPartition;
use std::rc::Rc;

/// The first Produce version whose client understands TRANSACTION_ABORTABLE (Kafka's
/// `GENERIC_ERROR_SUPPORTED`).
const FIRST_ABORTABLE_PRODUCE_VERSION: i16 = 11;
/// The first Produce version of transaction version 2 (Kafka's `ADD_PARTITION`): it gets
/// CONCURRENT_TRANSACTIONS as it is.
const FIRST_TV2_PRODUCE_VERSION: i16 = 12;

/// One partition of a produce whose batch is transactional.
#[derive(Debug, Clone)]
pub struct VerifyItem {
    pub index: usize,
    pub tp: TopicPartition,
    pub producer_id: i64,
    pub epoch: i16,
}

/// On the owner: whether each partition has the producer's open transaction at its epoch.
pub fn open_local(shard: &Shard, items: Vec<VerifyItem>) -> Vec<Tagged<bool>> {
    items
        .into_iter()
        .map(|i| match shard.log(&i.tp) {
            None => (i.index, Err(PartitionError::UnknownTopicOrPartition)),
            Some(_) => (i.index, Ok(shard.txn_partitions.has_open(&i.tp, i.producer_id, i.epoch))),
        })
        .collect()
}

/// Asks the owners (local ones directly, one message per remote owner).
async fn open_on_owners(shard: &Rc<Shard>, items: Vec<VerifyItem>) -> Vec<Tagged<bool>> {
    let grouped = group_by_owner(shard, items, |i| &i.tp);
    let mut out = route::unknown(grouped.unknown, |i| i.index);
    let mut parts: Vec<LocalBoxFuture<'static, Vec<Tagged<bool>>>> = Vec::new();
    for (owner, items) in grouped.by_owner {
        if owner == shard.id {
            let local = open_local(shard, items);
            parts.push(async move { local }.boxed_local());
        } else {
            let indexes = items.iter().map(|i| i.index).collect();
            parts.push(route::ask(shard, owner, indexes, |reply| ShardMsg::TxnOpen { items, reply }).await);
        }
    }
    for part in join_all(parts).await {
        out.extend(part);
    }
    out
}

/// The partitions refused (by index), for a produce of `version` with `transactional_id`.
/// Partitions whose owner is unknown are left to the append, which answers for them.
pub async fn check(
    shard: &Rc<Shard>,
    transactional_id: &str,
    items: Vec<VerifyItem>,
    version: i16,
) -> Vec<(usize, PartitionError)> {
    if items.is_empty() {
        return Vec::new();
    }
    let open = open_on_owners(shard, items.clone()).await;
    let unverified: std::collections::HashSet<usize> =
        open.into_iter().filter(|(_, r)| matches!(r, Ok(false))).map(|(index, _)| index).collect();
    let needed: Vec<&VerifyItem> = items.iter().filter(|i| unverified.contains(&i.index)).collect();
    let mut refused = Vec::new();
    // One call per (producer id, epoch): a request's batches normally share them.
    let mut producers: Vec<(i64, i16)> = needed.iter().map(|i| (i.producer_id, i.epoch)).collect();
    producers.sort_unstable();
    producers.dedup();
    for (producer_id, epoch) in producers {
        let of: Vec<&&VerifyItem> =
            needed.iter().filter(|i| i.producer_id == producer_id && i.epoch == epoch).collect();
        let request = VerifyRequest {
            transactional_id: transactional_id.to_string(),
            producer_id,
            epoch,
            partitions: of.iter().map(|i| (i.tp.topic.to_string(), i.tp.partition.0)).collect(),
        };
        match super::ask(shard, transactional_id, request).await {
            Ok(member) => {
                for (item, ok) in of.iter().zip(member) {
                    if !ok {
                        tracing::debug!(transactional_id, partition = %item.tp, producer_id, "transactional batch for a partition not in the transaction refused");
                        refused.push((item.index, not_in_transaction(version)));
                    }
                }
            }
            Err(TxnError::NotCoordinator) => {
                tracing::debug!(
                    transactional_id,
                    "the transaction coordinator is on another broker: batch not verified"
                );
            }
            Err(e) => {
                tracing::debug!(transactional_id, error = %e, "transactional batch not verified");
                let err = refusal(&e, version);
                refused.extend(of.iter().map(|i| (i.index, err.clone())));
            }
        }
    }
    refused
}

fn not_in_transaction(version: i16) -> PartitionError {
    if version >= FIRST_ABORTABLE_PRODUCE_VERSION {
        PartitionError::TransactionAbortable
    } else {
        PartitionError::NotInTransaction
    }
}

/// A coordinator's refusal as the produce answers it (Kafka's `AddPartitionsToTxnManager` and
/// `ReplicaManager` translations).
fn refusal(e: &TxnError, version: i16) -> PartitionError {
    match e {
        TxnError::ProducerFenced => {
            PartitionError::InvalidProducerEpoch("there is a newer producer with the same transactional id".into())
        }
        TxnError::InvalidProducerIdMapping => PartitionError::InvalidProducerIdMapping,
        TxnError::InvalidTxnState(_) => PartitionError::NotInTransaction,
        TxnError::InvalidRequest(m) => PartitionError::InvalidRequest(m.clone()),
        TxnError::ConcurrentTransactions if version >= FIRST_TV2_PRODUCE_VERSION => {
            PartitionError::ConcurrentTransactions
        }
        TxnError::ConcurrentTransactions => PartitionError::TxnNotVerified("CONCURRENT_TRANSACTIONS"),
        TxnError::CoordinatorLoadInProgress => PartitionError::TxnNotVerified("COORDINATOR_LOAD_IN_PROGRESS"),
        TxnError::NotCoordinator => PartitionError::TxnNotVerified("NOT_COORDINATOR"),
        // The two authorization refusals are the handlers' own, never a verification's answer.
        TxnError::CoordinatorNotAvailable
        | TxnError::TransactionalIdAuthorizationFailed
        | TxnError::GroupAuthorizationFailed
        | TxnError::Storage(_)
        | TxnError::InvalidTransactionTimeout(_)
        | TxnError::TransactionalIdNotFound => PartitionError::TxnNotVerified("COORDINATOR_NOT_AVAILABLE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_follow_the_produce_version_as_kafka() {
        assert_eq!(not_in_transaction(10), PartitionError::NotInTransaction);
        assert_eq!(not_in_transaction(11), PartitionError::TransactionAbortable);
        let c = TxnError::ConcurrentTransactions;
        assert_eq!(refusal(&c, 11), PartitionError::TxnNotVerified("CONCURRENT_TRANSACTIONS"));
        assert_eq!(refusal(&c, 12), PartitionError::ConcurrentTransactions);
        assert!(matches!(refusal(&TxnError::ProducerFenced, 9), PartitionError::InvalidProducerEpoch(_)));
        assert_eq!(
            refusal(&TxnError::CoordinatorLoadInProgress, 12),
            PartitionError::TxnNotVerified("COORDINATOR_LOAD_IN_PROGRESS")
        );
    }
}
