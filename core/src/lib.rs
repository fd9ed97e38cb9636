//! sluice-core: the vocabulary every other crate shares.
//!
//! Owns the newtypes for offsets, epochs, shard and partition ids ([`ids`]), every numeric bound
//! of the broker ([`limits`]), the wall clock ([`clock::now_ms`]), the broker configuration and
//! its validation ([`config`]), cluster identity (node ids, voters, cluster ids: [`cluster`]), and the parsing and validation of Kafka v2 record batches
//! ([`batch`]) and the format of sluice's own control batches ([`control`]). It performs no I/O (besides reading the clock) and depends
//! on no other sluice crate.

// Integers from the wire or the disk are converted with `try_from` (or a lossless `From`).
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod batch;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod ids;
pub mod limits;
pub mod listeners;
pub mod topic_config;

pub use ids::{LeaderEpoch, Offset, PartitionId, ShardId, TopicPartition};
