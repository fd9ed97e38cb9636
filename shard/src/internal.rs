//! Appends to the internal topics a coordinator keeps its log in (`__consumer_offsets` for the
//! group coordinator, `__transaction_state` for the transaction coordinator).
//!
//! Contract: [`append_internal`] writes its records as one batch (keys and values, the time
//! now) to the partition of the topic the caller names, on this shard, and returns only once
//! the batch is durable. A topic not created yet, or a partition this shard does not hold, is
//! [`InternalError::Unavailable`] (the coordinator is not available here); the caller maps the
//! errors to its own (`From` below).

use crate::groups::GroupError;
use crate::shard::Shard;
use crate::txn::TxnError;
use sluice_core::batch::{self, Record};
use sluice_core::clock::now_ms;
use sluice_core::TopicPartition;

/// Why an internal append failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InternalError {
    /// The topic has no partitions yet, or this shard does not hold the partition.
    Unavailable,
    /// The batch was refused or could not be made durable.
    Storage(String),
}

/// Appends `records` (key, value) as one batch to the partition of internal `topic` that
/// `partition` picks from the topic's partition count, and waits until they are durable.
pub async fn append_internal(
    shard: &Shard,
    topic: &str,
    partition: impl FnOnce(usize) -> i32,
    records: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), InternalError> {
    let partitions = shard.metadata().topics.get(topic).map(|t| t.shards.len()).unwrap_or(0);
    if partitions == 0 {
        return Err(InternalError::Unavailable);
    }
    let tp = TopicPartition::new(topic, partition(partitions));
    let log = shard.log(&tp).ok_or(InternalError::Unavailable)?;
    let recs: Vec<Record<'_>> = records.iter().map(|(k, v)| Record { key: Some(k), value: v }).collect();
    let bytes = batch::build(&recs, now_ms());
    let header = batch::validate(&bytes).map_err(|e| InternalError::Storage(e.to_string()))?;
    let info = log.append(&bytes, &header, None).map_err(|e| InternalError::Storage(e.to_string()))?;
    log.wait_durable(&info).await.map_err(|e| InternalError::Storage(e.to_string()))
}

impl From<InternalError> for GroupError {
    fn from(e: InternalError) -> Self {
        match e {
            InternalError::Unavailable => GroupError::CoordinatorNotAvailable,
            InternalError::Storage(e) => GroupError::Storage(e),
        }
    }
}

impl From<InternalError> for TxnError {
    fn from(e: InternalError) -> Self {
        match e {
            InternalError::Unavailable => TxnError::CoordinatorNotAvailable,
            InternalError::Storage(e) => TxnError::Storage(e),
        }
    }
}
