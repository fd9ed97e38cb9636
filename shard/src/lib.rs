//! sluice-shard: executors, partition ownership, cross-core routing and metadata.
//!
//! Owns: starting one pinned glommio executor per core ([`runtime`]), the N×N cross-core
//! channel mesh and the messages on it ([`msg`]), each shard's set of owned partition logs
//! ([`shard::Shard`]), splitting produce/fetch/list-offsets work by owner and merging the
//! answers ([`produce`], [`fetch`], [`offsets`]), and the cluster metadata: one writer (shard 0,
//! [`admin`]) and a published read copy on every shard ([`metadata`]).
//!
//! Contract: a request is handled on the shard that accepted its connection; work on a
//! partition runs on the partition's owner; a request touching M remote shards sends at most
//! one message to each and gets one reply from each. Nothing on the request path is shared
//! between threads except the messages themselves.

// Integers from the wire or the disk are converted with `try_from` (or a lossless `From`).
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod admin;
pub mod error;
pub mod fetch;
pub mod group_config;
pub mod groups;
pub mod internal;
pub mod metadata;
pub mod metrics;
pub mod msg;
pub mod offsets;
pub mod peer;
pub mod placement;
pub mod produce;
pub mod raft;
pub mod replica;
pub mod route;
pub mod runtime;
pub mod shard;
pub mod share;
pub mod task;
pub mod txn;

pub use error::PartitionError;
pub use metadata::{MetadataSnapshot, TopicMeta};
pub use shard::Shard;
