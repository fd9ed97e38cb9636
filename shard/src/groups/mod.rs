//! Consumer groups (the classic protocol, and KIP-848 in [`consumer`]): routing to the coordinator shard, the operations
//! and their answers.
//!
//! Contract: every group belongs to the shard that owns its partition of the internal
//! `__consumer_offsets` topic (`abs(java hashCode(group id)) % partitions`, as Kafka places
//! groups); every operation on a group runs there, in [`coordinator::Coordinator`]. Committed
//! offsets and group records are appended to that partition with the same storage engine and
//! durability as user data (acknowledged after fdatasync) and replayed when the shard opens
//! the partition. ListGroups asks every shard.

pub mod consumer;
pub mod coordinator;
mod group;
pub mod store;
mod table;

pub use table::PendingTxnOffsets;

use crate::msg::{operations, Call, Operation, ShardMsg};
use crate::shard::Shard;
use bytes::Bytes;
pub use consumer::{
    Assignment, ConsumerDescribeRequest, ConsumerGroupDescription, ConsumerHeartbeatRequest, ConsumerHeartbeatResponse,
    ConsumerMemberDescription,
};
use futures::channel::oneshot;
use sluice_core::{PartitionId, ShardId};
use std::rc::Rc;
use thiserror::Error;

/// Name of the internal topic holding committed offsets and group records.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Group-level failures, each a Kafka error code (mapped in `net::errors`).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum GroupError {
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    #[error("the group coordinator is loading its state")]
    CoordinatorLoadInProgress,
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("the member's protocol type or protocols are not compatible with the group's")]
    InconsistentGroupProtocol,
    #[error("a member id is required: rejoin with the one given")]
    MemberIdRequired(String),
    #[error("session timeout {0} ms is outside the broker's allowed range")]
    InvalidSessionTimeout(i32),
    #[error("the static member was replaced by a newer instance")]
    FencedInstanceId,
    #[error("group not found")]
    GroupIdNotFound,
    #[error("the group still has members")]
    NonEmptyGroup,
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the member epoch is fenced: rejoin")]
    FencedMemberEpoch,
    #[error("the member epoch is stale")]
    StaleMemberEpoch,
    #[error("the instance id is still used by another member")]
    UnreleasedInstanceId,
    #[error("unsupported assignor {0}")]
    UnsupportedAssignor(String),
    #[error("invalid regular expression: {0}")]
    InvalidRegularExpression(String),
    #[error("the consumer group has reached its max size")]
    GroupMaxSizeReached,
    #[error("{0}")]
    InvalidRequest(String),
}

/// JoinGroup, as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub client_id: String,
    pub client_host: String,
    /// Version 4+: a new member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct JoinResponse {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinMember>,
    /// The leader of a stable group rejoined (static member): it need not assign again.
    pub skip_assignment: bool,
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone)]
pub struct SyncResponse {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct MemberRef {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: &'static str,
}

/// Offsets of a group: (topic, partition, committed or none).
pub type OffsetList = Vec<(String, i32, Option<Committed>)>;

/// Heartbeat of a member.
#[derive(Debug, Clone)]
pub struct HeartbeatRequest(pub MemberRef);

/// LeaveGroup: (member id, instance id) pairs.
#[derive(Debug, Clone)]
pub struct LeaveRequest {
    pub group_id: String,
    pub members: Vec<(String, Option<String>)>,
}

/// OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub member: MemberRef,
    pub offsets: Vec<OffsetToCommit>,
}

/// OffsetFetch: the listed partitions of the listed topics, or (`None`) every committed one.
#[derive(Debug, Clone)]
pub struct OffsetFetchRequest {
    pub group_id: String,
    pub topics: Option<Vec<(String, Vec<i32>)>>,
    /// OffsetFetch v9's member id and epoch (KIP-848); `None` with a negative epoch: not a
    /// member (an admin, or an older client), nothing checked.
    pub member: (Option<String>, i32),
}

/// DescribeGroups of one group id.
#[derive(Debug, Clone)]
pub struct DescribeRequest(pub String);

/// DeleteGroups of one group id.
#[derive(Debug, Clone)]
pub struct DeleteRequest(pub String);

/// OffsetDelete: (topic, partition) pairs.
#[derive(Debug, Clone)]
pub struct OffsetDeleteRequest {
    pub group_id: String,
    pub partitions: Vec<(String, i32)>,
}

/// ListGroups, of one shard's groups.
#[derive(Debug, Clone)]
pub struct ListRequest;

/// One result per member, per offset or per partition, or an error for the whole request.
pub type EachResult = Result<Vec<Result<(), GroupError>>, GroupError>;

/// An operation on one group (or, for `List`, on every group of a shard), with its typed reply.
#[derive(Debug)]
pub enum GroupCall {
    Join(Call<JoinRequest, Result<JoinResponse, GroupError>>),
    Sync(Call<SyncRequest, Result<SyncResponse, GroupError>>),
    Heartbeat(Call<HeartbeatRequest, Result<(), GroupError>>),
    Leave(Call<LeaveRequest, EachResult>),
    Commit(Call<CommitRequest, EachResult>),
    FetchOffsets(Call<OffsetFetchRequest, Result<OffsetList, GroupError>>),
    Describe(Call<DescribeRequest, Result<Option<GroupDescription>, GroupError>>),
    Delete(Call<DeleteRequest, Result<(), GroupError>>),
    DeleteOffsets(Call<OffsetDeleteRequest, EachResult>),
    List(Call<ListRequest, Vec<GroupListing>>),
    ConsumerHeartbeat(Call<ConsumerHeartbeatRequest, Result<ConsumerHeartbeatResponse, GroupError>>),
    ConsumerDescribe(Call<ConsumerDescribeRequest, Result<ConsumerGroupDescription, GroupError>>),
}

operations!(GroupCall {
    JoinRequest => Join: Result<JoinResponse, GroupError>,
    SyncRequest => Sync: Result<SyncResponse, GroupError>,
    HeartbeatRequest => Heartbeat: Result<(), GroupError>,
    LeaveRequest => Leave: EachResult,
    CommitRequest => Commit: EachResult,
    OffsetFetchRequest => FetchOffsets: Result<OffsetList, GroupError>,
    DescribeRequest => Describe: Result<Option<GroupDescription>, GroupError>,
    DeleteRequest => Delete: Result<(), GroupError>,
    OffsetDeleteRequest => DeleteOffsets: EachResult,
    ListRequest => List: Vec<GroupListing>,
    ConsumerHeartbeatRequest => ConsumerHeartbeat: Result<ConsumerHeartbeatResponse, GroupError>,
    ConsumerDescribeRequest => ConsumerDescribe: Result<ConsumerGroupDescription, GroupError>,
});

/// Java's `String.hashCode`, which Kafka uses to place groups.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of a group.
pub fn offsets_partition(group_id: &str, partitions: usize) -> i32 {
    let hash = usize::try_from(java_hash(group_id) & 0x7fff_ffff).expect("masked to non-negative");
    i32::try_from(hash % partitions.max(1)).expect("a partition index is below the partition count, an i32")
}

/// The shard coordinating a group, if the offsets topic exists.
pub fn coordinator_shard(shard: &Shard, group_id: &str) -> Option<ShardId> {
    let meta = shard.metadata();
    let t = meta.topics.get(OFFSETS_TOPIC)?;
    let p = offsets_partition(group_id, t.shards.len());
    meta.owner(OFFSETS_TOPIC, PartitionId(p))
}

/// Runs an operation on the group's coordinator shard.
pub async fn call<O: Operation<GroupCall>>(shard: &Rc<Shard>, group_id: &str, op: O) -> Result<O::Reply, GroupError> {
    let owner = coordinator_shard(shard, group_id).ok_or_else(|| not_hosted(shard))?;
    on_shard(shard, owner, op).await
}

/// Why a group has no coordinator shard on this broker: NOT_COORDINATOR when the offsets topic
/// exists (its partition has no replica here, so another broker coordinates it, as Kafka
/// answers a broker that is not the coordinator), COORDINATOR_NOT_AVAILABLE before it exists.
pub fn not_hosted(shard: &Shard) -> GroupError {
    if shard.metadata().topics.contains_key(OFFSETS_TOPIC) {
        GroupError::NotCoordinator
    } else {
        GroupError::CoordinatorNotAvailable
    }
}

/// [`call`] for an operation whose reply is itself a result: one error either way.
pub async fn ask<T, O>(shard: &Rc<Shard>, group_id: &str, op: O) -> Result<T, GroupError>
where
    O: Operation<GroupCall, Reply = Result<T, GroupError>>,
{
    call(shard, group_id, op).await?
}

async fn on_shard<O: Operation<GroupCall>>(shard: &Rc<Shard>, owner: ShardId, op: O) -> Result<O::Reply, GroupError> {
    let (reply, rx) = oneshot::channel();
    let call = op.into_call(reply);
    if owner == shard.id {
        shard.groups.handle(shard, call).await;
    } else {
        shard.send(owner, ShardMsg::Group(call)).await.map_err(|_| GroupError::CoordinatorNotAvailable)?;
    }
    rx.await.map_err(|_| GroupError::CoordinatorNotAvailable)
}

/// Every group of every shard.
pub async fn list_all(shard: &Rc<Shard>) -> Vec<GroupListing> {
    let mut all = Vec::new();
    for s in 0..shard.n_shards {
        if let Ok(l) = on_shard(shard, crate::shard::shard_id(s), ListRequest).await {
            all.extend(l);
        }
    }
    all.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_java() {
        // "hello".hashCode() == 99162322 in Java.
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash(""), 0);
        assert!(offsets_partition("any-group", 16) < 16);
    }
}
