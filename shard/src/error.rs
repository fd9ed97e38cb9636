//! Errors of the shard crate. They cross cores inside replies, so they are `Send + Clone`;
//! `net` maps every variant to a Kafka error code in one exhaustive match.

use sluice_core::batch::BatchError;
use thiserror::Error;

/// Why one partition's (or one topic's) part of a request failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum PartitionError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("corrupt record batch: {0}")]
    CorruptBatch(BatchError),
    #[error("record batch too large: {0} bytes")]
    BatchTooLarge(usize),
    /// Records Kafka refuses one by one (INVALID_RECORD with `record_errors`), e.g. a record
    /// without a key on a compacted topic; displayed as Kafka's message.
    #[error("{0}")]
    InvalidRecords(sluice_core::batch::RecordErrors),
    #[error("offset {requested} out of range [{start}, {end}]")]
    OffsetOutOfRange { requested: i64, start: i64, end: i64 },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// A metadata change reached a broker that does not lead the metadata log.
    #[error("this broker is not the controller: {0}")]
    NotController(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid required acks {0}: only 0, 1 and -1 are valid")]
    InvalidRequiredAcks(i16),
    #[error("{0}")]
    OutOfOrderSequence(String),
    #[error("{0}")]
    InvalidProducerEpoch(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// This broker does not lead the partition; what it knows of the leader (KIP-951).
    #[error("not the leader (leader {leader:?}, epoch {epoch})")]
    NotLeaderOrFollower { leader: Option<i32>, epoch: i32 },
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`.
    #[error("{isr} in-sync replicas, min.insync.replicas is {min}")]
    NotEnoughReplicas { isr: usize, min: usize },
    /// The request's leader epoch is older than the partition's; the leader this broker
    /// knows (KIP-951 hint).
    #[error("leader epoch {got} is older than the current {current}")]
    FencedLeaderEpoch { got: i32, current: i32, leader: Option<i32> },
    /// The request's leader epoch is newer than this broker knows.
    #[error("leader epoch {got} is newer than the current {current}")]
    UnknownLeaderEpoch { got: i32, current: i32 },
    /// A replicated write did not commit (a later leader overwrote it, or the group stopped):
    /// the client retries.
    #[error("replication: {0}")]
    NotCommitted(String),
    /// A replicated write not committed within the request's timeout (Kafka's delayed produce
    /// expiring); it may still commit later.
    #[error("not replicated within {0} ms")]
    RequestTimedOut(u64),
    /// The principal may not do this to the topic (the ACLs).
    #[error("Topic authorization failed.")]
    TopicAuthorizationFailed,
    /// The principal may not do this to the cluster (the ACLs).
    #[error("Cluster authorization failed.")]
    ClusterAuthorizationFailed,
    /// The principal may not use the transactional id (the ACLs).
    #[error("Transactional Id authorization failed.")]
    TransactionalIdAuthorizationFailed,
    /// A reassignment's target replicas are not valid (unknown broker, listed twice, empty).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// A reassignment was cancelled where none is in progress.
    #[error("no reassignment is in progress")]
    NoReassignmentInProgress,
    /// A transactional batch for a partition not in its producer's transaction (Produce up to
    /// v10; KIP-890 part 1).
    #[error("Partition was not added to the transaction")]
    NotInTransaction,
    /// The same, from Produce v11: the client aborts the transaction.
    #[error("Partition was not added to the transaction")]
    TransactionAbortable,
    /// The coordinator could not verify the partition (the error named); the client retries.
    #[error("Unable to verify the partition has been added to the transaction. Underlying error: {0}")]
    TxnNotVerified(&'static str),
    /// The producer id is not the transactional id's.
    #[error("The producer attempted to use a producer id which is not currently assigned to its transactional id.")]
    InvalidProducerIdMapping,
    /// The transaction is being ended (Produce v12+).
    #[error("The producer attempted to update a transaction while another concurrent operation on the same transaction was ongoing.")]
    ConcurrentTransactions,
}

impl From<sluice_storage::StorageError> for PartitionError {
    fn from(e: sluice_storage::StorageError) -> Self {
        use sluice_storage::StorageError as S;
        match e {
            S::OffsetOutOfRange { requested, start, end } => PartitionError::OffsetOutOfRange { requested, start, end },
            S::InvalidBatch(b) => PartitionError::CorruptBatch(b),
            S::Closed => PartitionError::ShuttingDown,
            S::Sequence(e @ sluice_storage::producers::SeqError::OutOfOrder { .. }) => {
                PartitionError::OutOfOrderSequence(e.to_string())
            }
            S::Sequence(e @ sluice_storage::producers::SeqError::FencedEpoch { .. }) => {
                PartitionError::InvalidProducerEpoch(e.to_string())
            }
            other => PartitionError::Storage(other.to_string()),
        }
    }
}
