//! The messages shards send one another over the cross-core mesh, and their payload types.
//!
//! Contract: every message that expects an answer carries its own oneshot reply sender; a
//! request touching several partitions on one remote shard is one message. Record batches
//! travel as `Bytes` (reference-counted slices of the request frame), never copied.

use crate::error::PartitionError;
use crate::metadata::MetadataSnapshot;
use bytes::Bytes;
use futures::channel::oneshot;
use sluice_core::batch::BatchHeader;
use sluice_core::{Offset, TopicPartition};
use sluice_storage::LogRead;
use std::collections::BTreeMap;
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
}

pub type FetchResult = (usize, Result<LogRead, PartitionError>);

/// One partition's share of a ListOffsets request.
#[derive(Debug, Clone)]
pub struct ListOffsetsItem {
    pub index: usize,
    pub tp: TopicPartition,
    /// A timestamp, or Kafka's specials: -1 latest, -2 earliest, -3 max timestamp, -4 earliest local.
    pub timestamp: i64,
}

/// (offset, timestamp) found, Kafka-style: (-1, -1) when nothing matches.
pub type ListOffsetsResult = (usize, Result<(Offset, i64), PartitionError>);

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
}

/// A metadata change, executed by shard 0 only.
#[derive(Debug)]
pub enum AdminOp {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    /// Hand out a new idempotent-producer id.
    AllocateProducerId,
    /// Change a topic's configs (all of them when `replace_all`, as AlterConfigs does).
    AlterConfigs {
        topic: String,
        changes: Vec<ConfigChange>,
        replace_all: bool,
        validate_only: bool,
    },
    /// Grow a topic to `count` partitions.
    CreatePartitions {
        topic: String,
        count: i32,
        validate_only: bool,
    },
}

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

#[derive(Debug)]
pub enum AdminResult {
    Created(Vec<Result<CreatedTopic, PartitionError>>),
    Deleted(Vec<Result<[u8; 16], PartitionError>>),
    ProducerId(Result<i64, PartitionError>),
    /// AlterConfigs or CreatePartitions.
    Changed(Result<(), PartitionError>),
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
    Admin {
        op: AdminOp,
        reply: oneshot::Sender<AdminResult>,
    },
    /// To a group's coordinator shard: run a group operation.
    Group {
        op: crate::groups::GroupOp,
        reply: oneshot::Sender<crate::groups::GroupAnswer>,
    },
    /// Move the log start offsets of owned partitions forward (DeleteRecords).
    DeleteRecords {
        items: Vec<(usize, TopicPartition, Offset)>,
        reply: oneshot::Sender<Vec<(usize, Result<Offset, PartitionError>)>>,
    },
    /// Sizes of every log this shard owns (DescribeLogDirs).
    LogSizes {
        reply: oneshot::Sender<Vec<(TopicPartition, u64)>>,
    },
    /// This shard's metrics (for the metrics endpoint).
    Metrics {
        reply: oneshot::Sender<crate::metrics::ShardMetrics>,
    },
    /// From shard 0: install this snapshot (open/close owned logs), then answer with the
    /// partitions that could not be opened.
    Publish {
        snapshot: Box<MetadataSnapshot>,
        reply: oneshot::Sender<Result<(), crate::shard::InstallError>>,
    },
}
