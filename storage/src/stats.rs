//! Storage counters of the current thread (one shard per thread, so these are per shard):
//! fdatasync latency, reads served from memory versus disk, and what compaction did.
//!
//! Contract: only the thread's own logs update them; readers (metrics) take a copy.

use hdrhistogram::Histogram;
use std::cell::RefCell;

/// Counters and latencies of this thread's logs.
#[derive(Debug, Clone)]
pub struct StorageStats {
    /// Latency of the shard's sync rounds (all their fdatasyncs, submitted together),
    /// microseconds.
    pub fsync_us: Histogram<u64>,
    /// Latency of the flushers' segment writes (one aligned direct-I/O write each), µs.
    pub write_us: Histogram<u64>,
    /// From a completed write registering for a sync round to that round's start, µs.
    pub sync_queue_us: Histogram<u64>,
    /// Sync rounds of this shard, and the fdatasyncs they issued (one per log with written
    /// bytes): their ratio is the partitions one round covers.
    pub sync_rounds: u64,
    pub syncs: u64,
    /// Reads answered from the in-memory tail.
    pub memory_reads: u64,
    /// Reads answered with a DMA read.
    pub disk_reads: u64,
    /// Bytes written to segment files (aligned writes, padding included).
    pub bytes_written: u64,
    /// Bytes read from segment files (direct-I/O reads: cache loads, read-ahead, scans).
    pub bytes_read: u64,
    /// Bytes of batches read back whose CRC-32C was checked (each copy in memory once).
    pub bytes_crc_checked: u64,
    /// Compaction passes that ran (a log was due one), and those that failed.
    pub compaction_passes: u64,
    pub compaction_failures: u64,
    /// Segments compaction rewrote, their bytes before and after, and the records it removed.
    pub compaction_segments_rewritten: u64,
    pub compaction_bytes_before: u64,
    pub compaction_bytes_after: u64,
    pub compaction_records_removed: u64,
    /// The longest pass so far, microseconds, and the dirty ratio of the last pass.
    pub compaction_max_pass_us: u64,
    pub compaction_last_dirty_ratio: f64,
}

impl Default for StorageStats {
    fn default() -> Self {
        StorageStats {
            fsync_us: Histogram::new_with_bounds(1, sluice_core::limits::FSYNC_HISTOGRAM_MAX_US, 3)
                .expect("valid bounds"),
            write_us: Histogram::new_with_bounds(1, sluice_core::limits::FSYNC_HISTOGRAM_MAX_US, 3)
                .expect("valid bounds"),
            sync_queue_us: Histogram::new_with_bounds(1, sluice_core::limits::FSYNC_HISTOGRAM_MAX_US, 3)
                .expect("valid bounds"),
            sync_rounds: 0,
            syncs: 0,
            memory_reads: 0,
            disk_reads: 0,
            bytes_written: 0,
            bytes_read: 0,
            bytes_crc_checked: 0,
            compaction_passes: 0,
            compaction_failures: 0,
            compaction_segments_rewritten: 0,
            compaction_bytes_before: 0,
            compaction_bytes_after: 0,
            compaction_records_removed: 0,
            compaction_max_pass_us: 0,
            compaction_last_dirty_ratio: 0.0,
        }
    }
}

thread_local!(static STATS: RefCell<StorageStats> = RefCell::new(StorageStats::default()));

/// Updates this thread's counters.
pub fn with<R>(f: impl FnOnce(&mut StorageStats) -> R) -> R {
    STATS.with(|s| f(&mut s.borrow_mut()))
}

/// A copy of this thread's counters.
pub fn snapshot() -> StorageStats {
    STATS.with(|s| s.borrow().clone())
}
