//! The one mapping from sluice's typed errors to Kafka error codes.
//!
//! Contract: every variant of every error that can reach a client is matched here, with no
//! catch-all arm, so adding a variant does not compile until it has a Kafka code.

use kafka_protocol::ResponseError as K;
use sluice_core::batch::BatchError;
use sluice_shard::groups::GroupError;
use sluice_shard::txn::TxnError;
use sluice_shard::PartitionError;

/// Kafka error code and message for a partition- or topic-level failure.
pub fn code(e: &PartitionError) -> i16 {
    let k = match e {
        PartitionError::UnknownTopicOrPartition => K::UnknownTopicOrPartition,
        PartitionError::UnknownTopicId => K::UnknownTopicId,
        PartitionError::CorruptBatch(b) => match b {
            // Intact but refused by Kafka's LogValidator (InvalidRecordException).
            BatchError::Invalid(_) => K::InvalidRecord,
            BatchError::Truncated { .. }
            | BatchError::BadMagic(_)
            | BatchError::CrcMismatch { .. }
            | BatchError::InvalidHeader(_)
            | BatchError::TooLarge(_) => K::CorruptMessage,
        },
        PartitionError::BatchTooLarge(_) => K::MessageTooLarge,
        PartitionError::InvalidRecords(_) => K::InvalidRecord,
        PartitionError::OffsetOutOfRange { .. } => K::OffsetOutOfRange,
        PartitionError::Storage(_) => K::KafkaStorageError,
        PartitionError::InvalidTopic(_) => K::InvalidTopicException,
        PartitionError::TopicAlreadyExists(_) => K::TopicAlreadyExists,
        PartitionError::InvalidPartitions(_) => K::InvalidPartitions,
        PartitionError::InvalidReplicationFactor(_) => K::InvalidReplicationFactor,
        PartitionError::NotController(_) => K::NotController,
        PartitionError::InvalidConfig(_) => K::InvalidConfig,
        PartitionError::InvalidRequest(_) => K::InvalidRequest,
        PartitionError::InvalidRequiredAcks(_) => K::InvalidRequiredAcks,
        PartitionError::OutOfOrderSequence(_) => K::OutOfOrderSequenceNumber,
        PartitionError::InvalidProducerEpoch(_) => K::InvalidProducerEpoch,
        PartitionError::ShuttingDown => K::NotLeaderOrFollower,
        PartitionError::TopicAuthorizationFailed => K::TopicAuthorizationFailed,
        PartitionError::ClusterAuthorizationFailed => K::ClusterAuthorizationFailed,
        PartitionError::TransactionalIdAuthorizationFailed => K::TransactionalIdAuthorizationFailed,
        PartitionError::InvalidReplicaAssignment(_) => K::InvalidReplicaAssignment,
        PartitionError::NoReassignmentInProgress => K::NoReassignmentInProgress,
        PartitionError::NotInTransaction => K::InvalidTxnState,
        PartitionError::TransactionAbortable => K::TransactionAbortable,
        PartitionError::TxnNotVerified(_) => K::NotEnoughReplicas,
        PartitionError::InvalidProducerIdMapping => K::InvalidProducerIdMapping,
        PartitionError::ConcurrentTransactions => K::ConcurrentTransactions,
        PartitionError::NotLeaderOrFollower { .. } => K::NotLeaderOrFollower,
        PartitionError::NotEnoughReplicas { .. } => K::NotEnoughReplicas,
        PartitionError::FencedLeaderEpoch { .. } => K::FencedLeaderEpoch,
        PartitionError::UnknownLeaderEpoch { .. } => K::UnknownLeaderEpoch,
        // Retriable: the client sends it again (to the new leader).
        PartitionError::NotCommitted(_) => K::NotLeaderOrFollower,
        PartitionError::RequestTimedOut(_) => K::RequestTimedOut,
    };
    k.code()
}

/// Kafka error code for a group-level failure.
pub fn group_code(e: &GroupError) -> i16 {
    let k = match e {
        GroupError::CoordinatorNotAvailable => K::CoordinatorNotAvailable,
        GroupError::NotCoordinator => K::NotCoordinator,
        GroupError::CoordinatorLoadInProgress => K::CoordinatorLoadInProgress,
        GroupError::UnknownMemberId => K::UnknownMemberId,
        GroupError::IllegalGeneration => K::IllegalGeneration,
        GroupError::RebalanceInProgress => K::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => K::InconsistentGroupProtocol,
        GroupError::MemberIdRequired(_) => K::MemberIdRequired,
        GroupError::InvalidSessionTimeout(_) => K::InvalidSessionTimeout,
        GroupError::FencedInstanceId => K::FencedInstanceId,
        GroupError::GroupIdNotFound => K::GroupIdNotFound,
        GroupError::NonEmptyGroup => K::NonEmptyGroup,
        GroupError::GroupSubscribedToTopic => K::GroupSubscribedToTopic,
        GroupError::UnknownTopicOrPartition => K::UnknownTopicOrPartition,
        GroupError::InvalidGroupId => K::InvalidGroupId,
        // A commit that could not be made durable is retriable for clients.
        GroupError::Storage(_) => K::CoordinatorNotAvailable,
        GroupError::FencedMemberEpoch => K::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => K::StaleMemberEpoch,
        GroupError::UnreleasedInstanceId => K::UnreleasedInstanceId,
        GroupError::UnsupportedAssignor(_) => K::UnsupportedAssignor,
        GroupError::InvalidRegularExpression(_) => K::InvalidRegularExpression,
        GroupError::GroupMaxSizeReached => K::GroupMaxSizeReached,
        GroupError::InvalidRequest(_) => K::InvalidRequest,
    };
    k.code()
}

/// Kafka error code for a transaction-level failure. `fenced_code` says whether the request
/// version knows PRODUCER_FENCED (KIP-588); older ones get INVALID_PRODUCER_EPOCH for it.
pub fn txn_code(e: &TxnError, fenced_code: bool) -> i16 {
    let k = match e {
        TxnError::CoordinatorNotAvailable => K::CoordinatorNotAvailable,
        TxnError::CoordinatorLoadInProgress => K::CoordinatorLoadInProgress,
        TxnError::NotCoordinator => K::NotCoordinator,
        TxnError::InvalidRequest(_) => K::InvalidRequest,
        TxnError::InvalidTransactionTimeout(_) => K::InvalidTransactionTimeout,
        TxnError::ProducerFenced if fenced_code => K::ProducerFenced,
        TxnError::ProducerFenced => K::InvalidProducerEpoch,
        TxnError::InvalidProducerIdMapping => K::InvalidProducerIdMapping,
        TxnError::ConcurrentTransactions => K::ConcurrentTransactions,
        TxnError::InvalidTxnState(_) => K::InvalidTxnState,
        TxnError::TransactionalIdNotFound => K::TransactionalIdNotFound,
        // The transaction log could not be written: retriable for clients.
        TxnError::Storage(_) => K::CoordinatorNotAvailable,
        TxnError::TransactionalIdAuthorizationFailed => K::TransactionalIdAuthorizationFailed,
        TxnError::GroupAuthorizationFailed => K::GroupAuthorizationFailed,
    };
    k.code()
}

/// Kafka error code and message for a refused SASL request.
pub fn sasl_code(e: &crate::auth::SaslRefusal) -> (i16, String) {
    use crate::auth::SaslRefusal;
    match e {
        SaslRefusal::Unsupported => (K::UnsupportedSaslMechanism.code(), "unsupported SASL mechanism".into()),
        SaslRefusal::IllegalState(why) => (K::IllegalSaslState.code(), (*why).to_string()),
        // The client learns only that authentication failed (Kafka's wording), not why.
        SaslRefusal::Failed(_) => {
            (K::SaslAuthenticationFailed.code(), "Authentication failed: Invalid username or password".into())
        }
    }
}

/// Kafka error code for a refused SCRAM credential change.
pub fn scram_store_code(e: &crate::auth::store::StoreError) -> i16 {
    use crate::auth::store::StoreError;
    let k = match e {
        StoreError::NotFound => K::ResourceNotFound,
        StoreError::Iterations(_) | StoreError::EmptyName | StoreError::TooManyUsers => K::UnacceptableCredential,
        StoreError::Write { .. } | StoreError::Read { .. } | StoreError::Malformed { .. } => K::KafkaStorageError,
    };
    k.code()
}

/// The code of a transaction result (0 for success).
pub fn txn_result_code<T>(r: &Result<T, TxnError>, fenced_code: bool) -> i16 {
    r.as_ref().err().map(|e| txn_code(e, fenced_code)).unwrap_or(0)
}

/// The code of a group result (0 for success).
pub fn group_result_code<T>(r: &Result<T, GroupError>) -> i16 {
    r.as_ref().err().map(group_code).unwrap_or(0)
}

/// The code and the message for a result.
pub fn code_and_message<T>(r: &Result<T, PartitionError>) -> (i16, Option<String>) {
    match r {
        Ok(_) => (0, None),
        Err(e) => (code(e), Some(e.to_string())),
    }
}

/// A share-partition's refusal of an acknowledgement (KIP-932).
pub fn share_ack_code(e: &sluice_shard::share::partition::AckError) -> i16 {
    use sluice_shard::share::partition::AckError;
    let k = match e {
        AckError::InvalidRecordState => K::InvalidRecordState,
        AckError::InvalidRange => K::InvalidRequest,
    };
    k.code()
}

/// A share session's refusal of a ShareFetch or ShareAcknowledge (KIP-932).
pub fn share_session_code(e: sluice_shard::share::SessionError) -> i16 {
    use sluice_shard::share::SessionError;
    let k = match e {
        SessionError::NotFound => K::ShareSessionNotFound,
        SessionError::InvalidEpoch => K::InvalidShareSessionEpoch,
    };
    k.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kafkas() {
        assert_eq!(code(&PartitionError::UnknownTopicOrPartition), 3);
        assert_eq!(code(&PartitionError::CorruptBatch(BatchError::BadMagic(1))), 2);
        let mismatch = sluice_core::batch::InvalidRecord::CountMismatch { last_offset_delta: 5, count: 1 };
        assert_eq!(code(&PartitionError::CorruptBatch(BatchError::Invalid(mismatch))), 87);
        assert_eq!(code(&PartitionError::Storage("disk full".into())), 56);
        assert_eq!(code(&PartitionError::InvalidReplicationFactor(String::new())), 38);
        assert_eq!(code(&PartitionError::NotController(String::new())), 41);
    }
}
