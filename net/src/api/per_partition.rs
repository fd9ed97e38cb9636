//! What the offset and transaction APIs share: reading the offsets of a commit request
//! (OffsetCommit, TxnOffsetCommit), and answering one code per partition of the request.
//!
//! Contract: [`offsets_to_commit`] keeps the request's order (topics, then partitions);
//! [`answer_each`] hands the codes out in that same order, a partition past the last code
//! getting 0 (success), and keeps each topic's partitions as the request listed them.

use kafka_protocol::messages::{offset_commit_request, txn_offset_commit_request, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::groups::OffsetToCommit;

/// The fields of a partition in a commit request: index, offset, leader epoch, metadata.
pub trait CommitFields {
    fn fields(&self) -> (i32, i64, i32, Option<&StrBytes>);
}

impl CommitFields for offset_commit_request::OffsetCommitRequestPartition {
    fn fields(&self) -> (i32, i64, i32, Option<&StrBytes>) {
        (self.partition_index, self.committed_offset, self.committed_leader_epoch, self.committed_metadata.as_ref())
    }
}

impl CommitFields for txn_offset_commit_request::TxnOffsetCommitRequestPartition {
    fn fields(&self) -> (i32, i64, i32, Option<&StrBytes>) {
        (self.partition_index, self.committed_offset, self.committed_leader_epoch, self.committed_metadata.as_ref())
    }
}

/// The offsets a commit request names, topic by topic (name, partitions), in request order.
pub fn offsets_to_commit<'a, P: CommitFields + 'a>(
    topics: impl Iterator<Item = (&'a TopicName, &'a [P])>,
) -> Vec<OffsetToCommit> {
    topics
        .flat_map(|(name, partitions)| {
            partitions.iter().map(move |p| {
                let (partition, offset, leader_epoch, metadata) = p.fields();
                OffsetToCommit {
                    topic: name.0.to_string(),
                    partition,
                    offset,
                    leader_epoch,
                    metadata: metadata.map(|m| m.to_string()),
                }
            })
        })
        .collect()
}

/// Answers each of a request's `topics` with one code per partition, in request order:
/// `partitions` names a topic's partition indexes, `answer` builds the topic's answer from the
/// topic and its partitions' (index, code).
pub fn answer_each<T, R>(
    topics: Vec<T>,
    codes: Vec<i16>,
    partitions: impl Fn(&T) -> Vec<i32>,
    mut answer: impl FnMut(T, Vec<(i32, i16)>) -> R,
) -> Vec<R> {
    let mut codes = codes.into_iter();
    topics
        .into_iter()
        .map(|t| {
            let parts = partitions(&t).into_iter().map(|p| (p, codes.next().unwrap_or(0))).collect();
            answer(t, parts)
        })
        .collect()
}
