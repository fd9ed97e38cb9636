//! The messages shards send one another over the cross-core mesh, and their payload types.
//!
//! Contract: every message that expects an answer carries its own oneshot reply sender, typed
//! with that operation's reply (group and admin operations travel as [`Call`]s); a
//! request touching several partitions on one remote shard is one message. Record batches
//! travel as `Bytes` (reference-counted slices of the request frame), never copied.
//! Backpressure: the receiving shard takes a [`TaskSlot`] (at most `max_mesh_tasks_per_shard`
//! at once) before it starts the work of a message that does only local work; while none is
//! free it stops receiving, so further messages wait in the bounded channels and their
//! senders wait in turn. Such work never waits for another shard (replies travel on oneshots,
//! not on the mesh), so slots are always given back and two shards cannot hold each other's.
//! Messages whose work may wait on other shards or for long (long polls, group and admin
//! operations) take no slot: they are bounded by the client requests in flight that sent them.

use crate::error::PartitionError;
use crate::metadata::MetadataSnapshot;
use bytes::Bytes;
use futures::channel::oneshot;
use glommio::sync::{Semaphore, StaticPermit};
use sluice_core::batch::BatchHeader;
use sluice_core::{Offset, TopicPartition};
use sluice_storage::LogRead;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

/// What a producer waits for (Kafka `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no answer at all.
    None,
    /// acks=1: answered once the write completed.
    Leader,
    /// acks=all (-1): answered once an fdatasync covers the batch.
    All,
}

/// One partition's share of a Produce request: its validated batches.
#[derive(Debug)]
pub struct ProduceItem {
    /// Position in the request, to merge answers back in order.
    pub index: usize,
    pub tp: TopicPartition,
    pub batches: Vec<(BatchHeader, Bytes)>,
    /// How long a replicated partition's batches may wait for their commit before the answer
    /// is REQUEST_TIMED_OUT (the Produce request's `timeout_ms`, Kafka's delayed produce);
    /// None: until they commit or are overwritten.
    pub commit_wait_ms: Option<u64>,
}

/// Where a produced partition's data landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub log_start: Offset,
    /// The time written into the batches (LogAppendTime topics), or -1.
    pub log_append_time: i64,
}

pub type ProduceResult = (usize, Result<Appended, PartitionError>);

/// One partition's share of a Fetch request.
#[derive(Debug, Clone)]
pub struct FetchItem {
    pub index: usize,
    pub tp: TopicPartition,
    pub offset: Offset,
    pub max_bytes: usize,
    /// The leader epoch the client believes current (-1: none), checked as Kafka does
    /// (`replica::epochs::check`).
    pub current_leader_epoch: i32,
}

pub type FetchResult = (usize, Result<LogRead, PartitionError>);

/// One partition's share of a ListOffsets request.
#[derive(Debug, Clone)]
pub struct ListOffsetsItem {
    pub index: usize,
    pub tp: TopicPartition,
    /// A timestamp, or Kafka's specials: -1 latest, -2 earliest, -3 max timestamp, -4 earliest local.
    pub timestamp: i64,
    /// The leader epoch the client believes current (-1: none), checked as Kafka does
    /// (`replica::epochs::check`).
    pub current_leader_epoch: i32,
    /// OffsetForLeaderEpoch: answer the end offset of this epoch instead of `timestamp`.
    pub epoch_end_of: Option<i32>,
}

/// What a ListOffsets (or OffsetForLeaderEpoch) lookup found, Kafka-style: offset and
/// timestamp -1 when nothing matches; the leader epoch of the batch found (-1: unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub offset: Offset,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

pub type ListOffsetsResult = (usize, Result<Found, PartitionError>);

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker default.
    pub partitions: i32,
    /// -1: the broker default (1).
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// A topic that was (or would be) created.
#[derive(Debug, Clone)]
pub struct CreatedTopic {
    pub id: [u8; 16],
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// Each partition's replicas (node ids, the preferred leader first).
    pub replicas: Vec<Vec<i32>>,
}

/// One operation sent to another shard: its request and the sender of its reply, whose
/// type is that operation's own (so a reply can never be another operation's).
#[derive(Debug)]
pub struct Call<Req, Rep> {
    pub req: Req,
    pub reply: oneshot::Sender<Rep>,
}

impl<Req, Rep> Call<Req, Rep> {
    /// A call and the receiver its reply arrives on.
    pub fn new(req: Req) -> (Call<Req, Rep>, oneshot::Receiver<Rep>) {
        let (reply, rx) = oneshot::channel();
        (Call { req, reply }, rx)
    }
}

/// An operation with one reply type, carried across shards by the call enum `C`
/// ([`AdminCall`], [`crate::groups::GroupCall`]).
pub trait Operation<C>: Sized {
    type Reply;
    /// Wraps the operation and its reply sender into the enum that crosses shards.
    fn into_call(self, reply: oneshot::Sender<Self::Reply>) -> C;
}

/// Implements [`Operation`] for request types: each is carried by one variant of the call enum.
macro_rules! operations {
    ($call:ty { $($req:ty => $variant:ident : $rep:ty),* $(,)? }) => {
        $(impl $crate::msg::Operation<$call> for $req {
            type Reply = $rep;
            fn into_call(self, reply: futures::channel::oneshot::Sender<$rep>) -> $call {
                <$call>::$variant($crate::msg::Call { req: self, reply })
            }
        })*
    };
}
pub(crate) use operations;

/// CreateTopics (or only validate them). One result per topic, in order.
#[derive(Debug)]
pub struct CreateTopics {
    pub topics: Vec<NewTopic>,
    pub validate_only: bool,
    /// The live brokers replicas may go to, as the asking shard sees them (empty: this
    /// broker alone).
    pub brokers: Vec<i32>,
}

/// DeleteTopics by name. One result (the deleted topic's id) per name, in order.
#[derive(Debug)]
pub struct DeleteTopics {
    pub names: Vec<String>,
}

/// Hand out a new idempotent-producer id.
#[derive(Debug)]
pub struct AllocateProducerId;

/// Change a topic's configs (all of them when `replace_all`, as AlterConfigs does).
#[derive(Debug)]
pub struct AlterConfigs {
    pub topic: String,
    pub changes: Vec<ConfigChange>,
    pub replace_all: bool,
    pub validate_only: bool,
}

/// Change a group's dynamic configs (all of them when `replace_all`, as AlterConfigs does).
#[derive(Debug)]
pub struct AlterGroupConfigs {
    pub group: String,
    pub changes: Vec<ConfigChange>,
    pub replace_all: bool,
    pub validate_only: bool,
}

/// Grow a topic to `count` partitions.
#[derive(Debug)]
pub struct CreatePartitions {
    pub topic: String,
    pub count: i32,
    pub validate_only: bool,
    /// The live brokers replicas may go to (empty: this broker alone).
    pub brokers: Vec<i32>,
}

/// Add ACL bindings (checked concrete by the caller). One result per binding, in order.
#[derive(Debug)]
pub struct CreateAcls {
    pub acls: Vec<crate::metadata::acl::Acl>,
}

/// Remove the ACL bindings each filter selects. One result (the bindings removed) per filter.
#[derive(Debug)]
pub struct DeleteAcls {
    pub filters: Vec<crate::metadata::acl::AclFilter>,
}

/// One AlterClientQuotas entry: an entity (checked by the caller) and its key operations
/// (a value sets the key, `None` removes it).
#[derive(Debug, Clone)]
pub struct QuotaAlteration {
    pub entity: crate::metadata::quota::QuotaEntity,
    pub ops: Vec<(String, Option<f64>)>,
}

/// Set or remove client quotas (or only check them). One result per entry, in order.
#[derive(Debug)]
pub struct AlterClientQuotas {
    pub entries: Vec<QuotaAlteration>,
    pub validate_only: bool,
}

/// Start, change or cancel (`target` None) partition reassignments (AlterPartitionReassignments).
/// One result per item, in order.
#[derive(Debug)]
pub struct AlterReassignments {
    pub items: Vec<ReassignTarget>,
    /// Every broker of the cluster (a target naming another is refused).
    pub members: Vec<i32>,
    /// KIP-860: false refuses a target of another replication factor.
    pub allow_rf_change: bool,
}

/// One partition of AlterPartitionReassignments: its target replicas, None to cancel.
#[derive(Debug, Clone)]
pub struct ReassignTarget {
    pub tp: sluice_core::TopicPartition,
    pub target: Option<Vec<i32>>,
}

/// A reassignment's Raft membership change is done: record the target as the replicas.
#[derive(Debug)]
pub struct CompleteReassignment {
    pub tp: sluice_core::TopicPartition,
    pub target: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A metadata change for shard 0 (the only one that executes them), with its typed reply.
#[derive(Debug)]
pub enum AdminCall {
    CreateTopics(Call<CreateTopics, Vec<Result<CreatedTopic, PartitionError>>>),
    DeleteTopics(Call<DeleteTopics, Vec<Result<[u8; 16], PartitionError>>>),
    AllocateProducerId(Call<AllocateProducerId, Result<i64, PartitionError>>),
    AlterConfigs(Call<AlterConfigs, Result<(), PartitionError>>),
    CreatePartitions(Call<CreatePartitions, Result<(), PartitionError>>),
    CreateAcls(Call<CreateAcls, Vec<Result<(), PartitionError>>>),
    DeleteAcls(Call<DeleteAcls, Vec<Result<Vec<crate::metadata::acl::Acl>, PartitionError>>>),
    AlterClientQuotas(Call<AlterClientQuotas, Vec<Result<(), PartitionError>>>),
    AlterReassignments(Call<AlterReassignments, Vec<Result<(), PartitionError>>>),
    CompleteReassignment(Call<CompleteReassignment, Result<(), PartitionError>>),
    AlterGroupConfigs(Call<AlterGroupConfigs, Result<(), PartitionError>>),
}

operations!(AdminCall {
    CreateTopics => CreateTopics: Vec<Result<CreatedTopic, PartitionError>>,
    DeleteTopics => DeleteTopics: Vec<Result<[u8; 16], PartitionError>>,
    AllocateProducerId => AllocateProducerId: Result<i64, PartitionError>,
    AlterConfigs => AlterConfigs: Result<(), PartitionError>,
    CreatePartitions => CreatePartitions: Result<(), PartitionError>,
    CreateAcls => CreateAcls: Vec<Result<(), PartitionError>>,
    DeleteAcls => DeleteAcls: Vec<Result<Vec<crate::metadata::acl::Acl>, PartitionError>>,
    AlterClientQuotas => AlterClientQuotas: Vec<Result<(), PartitionError>>,
    AlterReassignments => AlterReassignments: Vec<Result<(), PartitionError>>,
    CompleteReassignment => CompleteReassignment: Result<(), PartitionError>,
    AlterGroupConfigs => AlterGroupConfigs: Result<(), PartitionError>,
});

/// How IncrementalAlterConfigs changes one key (AlterConfigs uses `Set` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    Set,
    Delete,
    Append,
    Subtract,
}

#[derive(Debug, Clone)]
pub struct ConfigChange {
    pub key: String,
    pub op: ConfigOp,
    pub value: Option<String>,
}

/// A message on the mesh, stamped when sent (the cross-core hop latency).
#[derive(Debug)]
pub struct Envelope {
    pub sent: Instant,
    pub msg: ShardMsg,
}

/// Everything that crosses cores.
#[derive(Debug)]
pub enum ShardMsg {
    Produce {
        acks: Acks,
        items: Vec<ProduceItem>,
        reply: oneshot::Sender<Vec<ProduceResult>>,
    },
    Fetch {
        items: Vec<FetchItem>,
        /// The response's `max_bytes`: reads stop starting once this much came back.
        budget: usize,
        reply: oneshot::Sender<Vec<FetchResult>>,
    },
    /// Answer once any listed partition has data beyond its offset, or at `deadline`.
    WaitForData {
        items: Vec<(TopicPartition, Offset)>,
        deadline: Instant,
        reply: oneshot::Sender<()>,
    },
    ListOffsets {
        items: Vec<ListOffsetsItem>,
        reply: oneshot::Sender<Vec<ListOffsetsResult>>,
    },
    /// To shard 0: perform a metadata change.
    Admin(AdminCall),
    /// To a group's coordinator shard: run a group operation.
    Group(crate::groups::GroupCall),
    /// To the shard owning share-group state (KIP-932): membership, share-partitions.
    Share(crate::share::ShareCall),
    /// To a transaction (or group) coordinator shard: run a transaction operation.
    Txn(crate::txn::TxnCall),
    /// Read-committed views (last stable offset, aborted transactions) of owned partitions.
    TxnViews {
        items: Vec<crate::txn::view::ViewItem>,
        reply: oneshot::Sender<Vec<crate::txn::view::ViewResult>>,
    },
    /// The active producers of owned partitions (DescribeProducers).
    TxnProducers {
        items: Vec<crate::txn::producers::ProducersItem>,
        reply: oneshot::Sender<Vec<crate::txn::producers::ProducersResult>>,
    },
    /// Whether owned partitions hold a producer's open transaction (KIP-890 verification).
    TxnOpen {
        items: Vec<crate::txn::verify::VerifyItem>,
        reply: oneshot::Sender<Vec<crate::route::Tagged<bool>>>,
    },
    /// Move the log start offsets of owned partitions forward (DeleteRecords).
    DeleteRecords {
        items: Vec<(usize, TopicPartition, Offset)>,
        reply: oneshot::Sender<Vec<(usize, Result<Offset, PartitionError>)>>,
    },
    /// ElectLeaders (preferred): ask owned replicated partitions' groups to move leadership to
    /// the node named with each (`replica::elect`).
    TransferLeaders {
        items: Vec<(usize, TopicPartition, i32)>,
        reply: oneshot::Sender<Vec<(usize, Result<(), PartitionError>)>>,
    },
    /// Sizes of every log this shard owns (DescribeLogDirs).
    LogSizes {
        reply: oneshot::Sender<Vec<(TopicPartition, u64)>>,
    },
    /// The metadata log's quorum, from the shard hosting it (DescribeQuorum;
    /// `replica::quorum::describe`: None unless this broker leads it).
    Quorum {
        reply: oneshot::Sender<Option<crate::replica::quorum::QuorumState>>,
    },
    /// This shard's metrics (for the metrics endpoint).
    Metrics {
        reply: oneshot::Sender<crate::metrics::ShardMetrics>,
    },
    /// The cluster layer's messages (partition changes to record, controller announcements).
    Cluster(crate::admin::cluster::ClusterMsg),
    /// From shard 0: install this snapshot (open/close owned logs), then answer with the
    /// partitions that could not be opened.
    Publish {
        snapshot: Box<MetadataSnapshot>,
        reply: oneshot::Sender<Result<(), crate::shard::InstallError>>,
    },
}

impl ShardMsg {
    /// Whether the work this message starts is local and ends on its own (it never waits for
    /// another shard or a client), so it runs under a bounded [`TaskSlot`].
    pub fn takes_slot(&self) -> bool {
        match self {
            ShardMsg::Produce { .. }
            | ShardMsg::Fetch { .. }
            | ShardMsg::ListOffsets { .. }
            | ShardMsg::DeleteRecords { .. }
            | ShardMsg::LogSizes { .. }
            | ShardMsg::Metrics { .. }
            | ShardMsg::Quorum { .. }
            | ShardMsg::TxnViews { .. }
            | ShardMsg::TxnProducers { .. }
            | ShardMsg::TxnOpen { .. }
            | ShardMsg::TransferLeaders { .. }
            | ShardMsg::Publish { .. }
            | ShardMsg::Cluster(_) => true,
            // A long poll lasts up to max_wait (one per waiting fetch, `fetch::serve_wait`);
            // group and admin operations wait for members or send to other shards.
            // Transaction operations write markers on other shards.
            // Share-group work waits for state-file writes (and releases fan out to every shard).
            ShardMsg::WaitForData { .. }
            | ShardMsg::Admin(_)
            | ShardMsg::Group(_)
            | ShardMsg::Txn(_)
            | ShardMsg::Share(_) => false,
        }
    }
}

thread_local!(static SLOTS: RefCell<Option<Rc<Semaphore>>> = const { RefCell::new(None) });

/// The right to run one mesh message's work; given back when dropped.
#[derive(Debug)]
pub struct TaskSlot(Option<StaticPermit>);

impl Drop for TaskSlot {
    fn drop(&mut self) {
        if self.0.is_some() {
            crate::metrics::mesh_task(-1);
        }
    }
}

/// Waits for a slot for `msg`'s work (none needed when it takes none); `limit` is this shard's
/// `max_mesh_tasks_per_shard` (the same on every call). Call on the shard's own thread.
pub async fn task_slot(limit: usize, msg: &ShardMsg) -> TaskSlot {
    if !msg.takes_slot() {
        return TaskSlot(None);
    }
    let slots = SLOTS.with(|s| s.borrow_mut().get_or_insert_with(|| Rc::new(Semaphore::new(limit as u64))).clone());
    match slots.acquire_static_permit(1).await {
        Ok(permit) => {
            crate::metrics::mesh_task(1);
            TaskSlot(Some(permit))
        }
        // The semaphore is never closed; should it be, the work runs unbounded rather than lost.
        Err(_) => TaskSlot(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_local_work_and_are_given_back() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let (reply, _rx) = oneshot::channel();
                let msg = ShardMsg::LogSizes { reply };
                let a = task_slot(2, &msg).await;
                let _b = task_slot(2, &msg).await;
                // A third waits until one is given back.
                let mut third = Box::pin(task_slot(2, &msg));
                assert!(futures::poll!(third.as_mut()).is_pending());
                drop(a);
                let c = third.await;
                assert!(c.0.is_some());
                // A long poll takes none, even with every slot held.
                let (reply, _rx) = oneshot::channel();
                let wait = ShardMsg::WaitForData { items: Vec::new(), deadline: Instant::now(), reply };
                assert!(task_slot(2, &wait).await.0.is_none());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
