//! Crash at every write and every sync point of a scripted workload, on the simulated disk.
//!
//! The workload appends batches of varying sizes to a log with small segments (so it rolls,
//! writes indexes, trims sealed files), waits for durability at irregular points (acks=all),
//! waits only for the write at others (acks=1), deletes records, enforces retention by size and
//! closes the log. A first run counts its mutating disk operations. Then, for every operation
//! number, the workload runs again on a fresh simulated disk that crashes there — the operation
//! either does not happen, or (for a write) puts only a prefix of its bytes on the disk — and
//! the disk a restart would find is built twice: with only what was synced, and with every
//! issued operation. Recovery of each must:
//! - open without error (clean when the workload's close succeeded);
//! - keep every batch acknowledged as durable at or above the log start, byte-exact;
//! - show only batches that were appended, in order, byte-exact: nothing torn, nothing after a
//!   torn write;
//! - keep the log start at or above every acknowledged DeleteRecords, and never above what the
//!   workload asked for;
//! - accept, sync and serve a new append.

use sluice_core::batch::{self, Record};
use sluice_core::Offset;
use sluice_storage::disk::sim::{SimDisk, Survival, Tear};
use sluice_storage::{Disk, LogConfig, PartitionLog};
use std::path::Path;
use std::rc::Rc;

mod common;
use common::{run, Lcg};

const DIR: &str = "/sim/t-0";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        retention_bytes: 48 * 1024,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// What the workload saw before the crash.
#[derive(Default, Debug)]
struct Outcome {
    /// Every batch appended, as stored (offset stamped), with its base offset. A write that
    /// fails rolls the log back to its durable end and the offsets are given again, so one
    /// offset may have several versions; the last is the one that can be acknowledged.
    appended: Vec<(i64, Vec<u8>)>,
    /// End of the batches acknowledged as durable.
    acked_end: i64,
    /// Largest log start a DeleteRecords call was answered with.
    acked_start: i64,
    /// Largest log start the workload moved to (acknowledged or not).
    max_start: i64,
    /// The log closed cleanly (and the broker would have left its clean-shutdown marker).
    closed: bool,
}

/// Two phases: a fresh log, closed cleanly; then the same log reopened as after a clean
/// shutdown (trusting its indexes and producer snapshot), written more and closed again.
async fn workload(sim: &Rc<SimDisk>) -> Outcome {
    let disk = Disk::Sim(sim.clone());
    let mut out = Outcome::default();
    let mut rng = Lcg(0x5eed_d15c);
    let mut clean = false;
    for steps in [0..30u64, 30..48] {
        let Ok((log, _)) = PartitionLog::open_on(&disk, Path::new(DIR), "t-0", config(), clean).await else {
            return out;
        };
        phase_steps(&log, steps, &mut rng, &mut out).await;
        out.closed = log.close().await.is_ok() && !sim.crashed();
        clean = out.closed;
        if !clean {
            break;
        }
    }
    out
}

async fn phase_steps(log: &PartitionLog, steps: std::ops::Range<u64>, rng: &mut Lcg, out: &mut Outcome) {
    for step in steps {
        let n = 1 + rng.next(4) as usize;
        let mut last = None;
        for _ in 0..n {
            let size = 1 + rng.next(2500) as usize;
            let payload: Vec<u8> = (0..size).map(|i| (i as u64 ^ rng.next(256)) as u8).collect();
            let b = batch::build(&[Record { key: Some(b"k"), value: &payload }], 1_700_000_000_000 + step as i64);
            let h = batch::validate(&b).unwrap();
            match log.append(&b, &h, None) {
                Ok(info) => {
                    let mut stored = b.clone();
                    batch::stamp(&mut stored, info.base_offset.0, 0);
                    out.appended.push((info.base_offset.0, stored));
                    last = Some(info);
                }
                Err(_) => break,
            }
        }
        let Some(last) = last else { continue };
        match step % 5 {
            0 | 2 | 3 => {
                if log.wait_durable(&last).await.is_ok() {
                    out.acked_end = out.acked_end.max(last.last_offset.0 + 1);
                }
            }
            1 => {
                let _ = log.wait_written(&last).await;
            }
            _ => {
                // DeleteRecords up to a third of the durable log, then retention.
                let hw = log.high_watermark().0;
                let to = hw / 3;
                if let Ok(start) = log.delete_records_before(Offset(to)).await {
                    out.acked_start = out.acked_start.max(start.0);
                }
                out.max_start = out.max_start.max(log.log_start().0);
                let _ = log.enforce_retention(i64::MAX / 2).await;
            }
        }
        out.max_start = out.max_start.max(log.log_start().0);
    }
}

/// Recovers the log from `disk` and checks it against what the workload saw.
async fn check(disk: &Disk, seen: &Outcome, what: &str) {
    let (log, _) = PartitionLog::open_on(disk, Path::new(DIR), "t-0", config(), seen.closed)
        .await
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    let start = log.log_start().0;
    let hw = log.high_watermark().0;
    assert!(
        start <= seen.max_start.max(0),
        "{what}: log start {start} beyond any the workload set ({})",
        seen.max_start
    );
    assert!(
        start >= seen.acked_start,
        "{what}: log start {start} below an acknowledged DeleteRecords ({})",
        seen.acked_start
    );
    assert!(
        hw >= seen.acked_end,
        "{what}: high watermark {hw} lost acknowledged batches (acked end {})",
        seen.acked_end
    );
    if seen.closed {
        let end = seen
            .appended
            .iter()
            .map(|(o, b)| *o + batch::validate(b).unwrap().last_offset_delta as i64 + 1)
            .max()
            .unwrap_or(0);
        assert_eq!(hw, end, "{what}: a clean close must keep every batch");
    }
    let mut next = start;
    for _ in 0..10_000 {
        if next >= hw {
            break;
        }
        let r = log.read(Offset(next), 64 * 1024).await.unwrap_or_else(|e| panic!("{what}: read at {next}: {e}"));
        assert!(!r.records.is_empty(), "{what}: empty read at {next} below the high watermark {hw}");
        let mut pos = 0;
        while pos < r.records.len() {
            let len = batch::BatchHeader::parse(&r.records[pos..]).unwrap().total_len();
            let bytes = &r.records[pos..pos + len];
            let h = batch::validate(bytes).unwrap_or_else(|e| panic!("{what}: served an invalid batch: {e}"));
            let mut versions = seen.appended.iter().filter(|(o, _)| *o == h.base_offset).map(|(_, b)| &b[..]);
            if h.base_offset < seen.acked_end {
                let acked = versions.next_back();
                assert_eq!(Some(bytes), acked, "{what}: acknowledged batch at {} differs", h.base_offset);
            } else {
                assert!(
                    versions.any(|b| b == bytes),
                    "{what}: batch at {} differs from every batch appended there",
                    h.base_offset
                );
            }
            if next > start {
                assert_eq!(h.base_offset, next, "{what}: gap or overlap at {next}");
            }
            next = h.last_offset() + 1;
            pos += len;
        }
    }
    assert_eq!(next, hw, "{what}: reads did not reach the high watermark");
    // The recovered log takes new appends.
    let b = batch::build(&[Record { key: None, value: b"after the crash" }], 1_800_000_000_000);
    let h = batch::validate(&b).unwrap();
    let info = log.append(&b, &h, None).unwrap_or_else(|e| panic!("{what}: append after recovery: {e}"));
    log.wait_durable(&info).await.unwrap_or_else(|e| panic!("{what}: sync after recovery: {e}"));
    let r = log.read(info.base_offset, 1 << 20).await.unwrap();
    assert_eq!(batch::validate(&r.records).unwrap().base_offset, info.base_offset.0, "{what}");
    log.close().await.unwrap();
}

#[test]
fn every_write_and_sync_point_recovers_every_acknowledged_batch_and_nothing_torn() {
    run(|| async {
        // The reference run: no crash.
        let sim = SimDisk::new();
        let seen = workload(&sim).await;
        assert!(seen.closed && !sim.crashed());
        let total_ops = sim.ops();
        let rolls = seen.appended.len();
        assert!(total_ops > 100, "the workload went through only {total_ops} disk operations");
        assert!(rolls > 60, "only {rolls} batches appended");
        check(&Disk::Sim(sim.after_crash(Survival::SyncedOnly)), &seen, "clean run").await;

        let mut images = 0;
        for op in 0..total_ops {
            for tear in [Tear::None, Tear::Prefix(1), Tear::Prefix(61), Tear::Prefix(4095), Tear::Prefix(6000)] {
                let sim: Rc<SimDisk> = SimDisk::new();
                sim.crash_at(op, tear);
                let mut seen = workload(&sim).await;
                assert!(sim.crashed(), "operation {op} was not reached");
                // The machine stopped: the broker never wrote its clean-shutdown marker.
                seen.closed = false;
                for survival in [Survival::SyncedOnly, Survival::Everything] {
                    if tear != Tear::None && survival == Survival::SyncedOnly {
                        continue; // an unsynced torn write is simply lost: same as Tear::None
                    }
                    let what = format!("crash at operation {op} ({tear:?}, {survival:?})");
                    check(&Disk::Sim(sim.after_crash(survival)), &seen, &what).await;
                    images += 1;
                }
            }
        }
        eprintln!("{total_ops} crash points, {images} crash images recovered");
        assert!(images as u64 >= total_ops * 6);
    });
}
