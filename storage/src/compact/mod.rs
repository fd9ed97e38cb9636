//! Log compaction for topics whose `cleanup.policy` contains `compact`: the decisions and the
//! rewriting of segment bytes, without I/O (the log feeds it sealed segments and swaps the
//! results in).
//!
//! Contract (Kafka's log cleaner semantics):
//! - [`plan`] decides when a log is cleaned and the offsets a pass covers; the active segment
//!   is never cleaned.
//! - [`keymap::KeyMap`] holds, for the dirty range, each key's last offset.
//! - [`clean::clean_segment`] rewrites one segment as Kafka 4's cleaner does: a record is kept
//!   when the key map does not know its key or knows this very offset (or a later one than the
//!   map covers); keyless records are dropped; the records of aborted transactions are dropped
//!   ([`txn::CleanedTxns`]); a tombstone (null value) that is the latest of its key is kept
//!   until its batch's delete horizon (KIP-534: the first pass that keeps a tombstone, or finds
//!   a transaction marker whose transaction has no batch left, stamps the batch with the
//!   delete-horizon attribute bit and base timestamp = now + `delete.retention.ms`, record
//!   timestamps unchanged), and goes at the first pass after it; such a marker goes likewise.
//!   Offsets never change: a rewritten batch keeps its base offset, last offset delta,
//!   partition leader epoch, producer id, epoch and base sequence, so offsets have gaps after
//!   compaction; its codec is kept (decompressed, filtered, recompressed) and its CRC
//!   recomputed. A batch left with no record goes, unless it holds an active producer's last
//!   entry or ends at the pass's upper bound: then it stays empty (Kafka's `RETAIN_EMPTY`,
//!   so the producer's last sequence and epoch survive).
//! - [`merge`] groups adjacent cleaned segments whose summed sizes stay within `segment.bytes`
//!   and `segment.index.bytes` (Kafka's `groupSegmentsBySize`); a group is rewritten as one
//!   segment at its first base.
//! - [`swap::swap_in`] replaces a pass's segments crash-safely (`.cleaned` files, a swap marker
//!   as the commit point, renames, then the merged-away segments' files removed), and
//!   [`swap::recover_swap`] finishes or discards a swap interrupted by a crash.

pub mod clean;
pub mod keymap;
pub mod merge;
pub mod plan;
pub mod swap;
pub mod txn;

pub use plan::{plan, CleanPlan, CompactionConfig, SegmentInfo};

use crate::codec::CodecError;
use sluice_core::batch::{validate, BatchError, BatchHeader, LOG_OVERHEAD};

/// Why a segment could not be compacted (it is then left as it is).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompactError {
    #[error("batch at byte {pos}: {err}")]
    Batch { pos: usize, err: BatchError },
    #[error("records: {0}")]
    Records(#[from] BatchError),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("batch at byte {0} would exceed the format's size limits when rebuilt")]
    TooLarge(usize),
}

/// The batches of a segment's bytes, each CRC-checked, up to the end or the zero padding of
/// its last aligned write.
pub fn batches(segment: &[u8]) -> Result<Vec<(BatchHeader, &[u8])>, CompactError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + LOG_OVERHEAD <= segment.len() {
        let rest = &segment[pos..];
        let len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        if len == 0 && rest[..LOG_OVERHEAD].iter().all(|b| *b == 0) {
            break; // zero padding
        }
        let total =
            usize::try_from(len).ok().and_then(|l| l.checked_add(LOG_OVERHEAD)).filter(|t| *t <= rest.len()).ok_or(
                CompactError::Batch { pos, err: BatchError::Truncated { have: rest.len(), need: LOG_OVERHEAD } },
            )?;
        let h = validate(&rest[..total]).map_err(|err| CompactError::Batch { pos, err })?;
        out.push((h, &rest[..total]));
        pos += total;
    }
    Ok(out)
}
