//! sluice-storage: the per-partition append-only log and the data directory layout.
//!
//! Owns: segment files (Kafka v2 record batches stored verbatim, written with glommio DMA,
//! i.e. O_DIRECT through io_uring), the in-memory batch index, recovery of a log at open, the
//! data-dir format marker, and the durability watermarks producers wait on.
//!
//! Contract: a [`PartitionLog`] belongs to exactly one shard (it is `!Send`); only that shard
//! appends to it and reads it. Appends are ordered: offsets are assigned synchronously in
//! [`PartitionLog::append`], and the bytes reach the disk in that order. A batch is visible to
//! readers only once it is durable (fdatasync'd), so nothing a crash could take back is served.

// Integers from the disk are converted with `try_from` (or a lossless `From`).
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod cache;
pub mod codec;
pub mod compact;
pub mod disk;
pub mod epochs;
pub mod error;
mod executor_local;
mod file;
pub mod format;
pub mod index;
pub mod inflight;
pub mod log;
pub mod probe;
pub mod producers;
pub mod raft_state;
pub mod reclaim;
mod recovery;
mod segment;
pub mod stats;
pub mod watermark;

pub use disk::Disk;
pub use error::StorageError;
pub use file::{open_file_stats, set_open_file_limit};
pub use log::{AppendInfo, CompactStats, LogConfig, LogRead, PartitionLog, WriteGeneration};
pub use probe::probe_direct_io;
