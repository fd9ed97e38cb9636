//! Errors of the storage crate.
//!
//! Contract: every failure of a log reaches its caller as one of these variants. The shard
//! crate turns them into its `PartitionError` (`shard/src/error.rs`: out of range, invalid
//! batch, closed and the two sequence errors keep their meaning; I/O, write failures and an
//! unknown data-dir format become `Storage`), and `net/src/errors.rs` maps that to a Kafka
//! error code in one exhaustive match (`Storage` is KAFKA_STORAGE_ERROR).

use sluice_core::batch::BatchError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    /// An I/O operation on a log or its directory failed (disk full, permissions, EIO).
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
    /// The requested offset lies outside [log start, log end].
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange { requested: i64, start: i64, end: i64 },
    /// A batch failed validation.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The write covering an append failed; the append was rolled back.
    #[error("write failed, append rolled back: {0}")]
    WriteFailed(String),
    /// An idempotent producer's batch is out of sequence or from a fenced epoch.
    #[error("{0}")]
    Sequence(#[from] crate::producers::SeqError),
    /// The log is closing or closed.
    #[error("partition log is closed")]
    Closed,
    /// The data directory was written by a format this build does not know.
    #[error("data directory {path} has format {found:?}; this sluice understands format {expected}")]
    UnknownFormat { path: String, found: String, expected: u32 },
}

impl StorageError {
    /// A read found a stored batch damaged on disk (its checks failed: `InvalidData`).
    pub fn is_damage(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidData)
    }

    pub fn io(op: &'static str, path: impl std::fmt::Display, source: impl Into<std::io::Error>) -> Self {
        StorageError::Io { op, path: path.to_string(), source: source.into() }
    }
}
