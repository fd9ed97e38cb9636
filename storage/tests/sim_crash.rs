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
//!
//! A second workload drives several partitions on one shard at once (their writes and
//! fdatasyncs share the shard's sync rounds), with small segments so each rolls in the middle,
//! and is checked the same way after a crash at each of its operations, with the disk keeping
//! none, all, or random subsets of the unsynced blocks, truncations and names.

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
        let n = 1 + rng.next(4);
        let mut last = None;
        for _ in 0..n {
            let size = 1 + rng.next(2500);
            let payload: Vec<u8> = (0..size).map(|i| (i ^ rng.next(256)).to_le_bytes()[0]).collect();
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
    check_dir(disk, seen, what, DIR).await
}

async fn check_dir(disk: &Disk, seen: &Outcome, what: &str, dir: &str) {
    let (log, _) = PartitionLog::open_on(disk, Path::new(dir), "t-0", config(), seen.closed)
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

        let mut images = 0u64;
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
        assert!(images >= total_ops * 6);
    });
}

/// Partitions of the multi-partition workload, all on the test's one shard.
const PARTS: usize = 3;

fn part_dir(p: usize) -> String {
    format!("/sim/m-{p}")
}

/// Several partitions appended to in turn and waited for together (acks=all: one sync round
/// covers them; acks=1 at some steps), each rolling its small segments; then closed.
async fn multi_workload(sim: &Rc<SimDisk>) -> Vec<Outcome> {
    let disk = Disk::Sim(sim.clone());
    let mut out: Vec<Outcome> = (0..PARTS).map(|_| Outcome::default()).collect();
    let mut rng = Lcg(0x0dd_ba11);
    let mut logs = Vec::new();
    for p in 0..PARTS {
        match PartitionLog::open_on(&disk, Path::new(&part_dir(p)), "m", config(), false).await {
            Ok((log, _)) => logs.push(log),
            Err(_) => return out,
        }
    }
    for step in 0..24u64 {
        let mut lasts = Vec::new();
        for (p, log) in logs.iter().enumerate() {
            let mut last = None;
            for _ in 0..1 + rng.next(3) {
                let size = 1 + usize::try_from(rng.next(3000)).unwrap();
                let payload: Vec<u8> =
                    (0..size).map(|i| u8::try_from((i as u64 ^ rng.next(256)) & 0xff).unwrap()).collect();
                let b = batch::build(
                    &[Record { key: Some(b"m"), value: &payload }],
                    1_700_000_000_000 + i64::try_from(step).unwrap(),
                );
                let h = batch::validate(&b).unwrap();
                let Ok(info) = log.append(&b, &h, None) else { break };
                let mut stored = b.clone();
                batch::stamp(&mut stored, info.base_offset.0, 0);
                out[p].appended.push((info.base_offset.0, stored));
                last = Some(info);
            }
            lasts.push(last);
        }
        let waits = logs.iter().zip(&lasts).map(|(log, last)| async move {
            let last = (*last)?;
            let ok = if step % 4 == 3 {
                log.wait_written(&last).await.is_ok()
            } else {
                log.wait_durable(&last).await.is_ok()
            };
            (ok && step % 4 != 3).then_some(last.last_offset.0 + 1)
        });
        for (p, acked) in futures::future::join_all(waits).await.into_iter().enumerate() {
            if let Some(end) = acked {
                out[p].acked_end = out[p].acked_end.max(end);
            }
        }
    }
    for (p, log) in logs.iter().enumerate() {
        out[p].closed = log.close().await.is_ok() && !sim.crashed();
    }
    out
}

#[test]
fn several_partitions_share_sync_rounds_roll_and_recover_from_any_subset_of_unsynced_writes() {
    run(|| async {
        let sim = SimDisk::new();
        let before = sluice_storage::stats::snapshot();
        let seen = multi_workload(&sim).await;
        let after = sluice_storage::stats::snapshot();
        assert!(seen.iter().all(|o| o.closed) && !sim.crashed());
        let (rounds, syncs) = (after.sync_rounds - before.sync_rounds, after.syncs - before.syncs);
        assert!(syncs > rounds, "no sync round covered more than one partition ({rounds} rounds, {syncs} syncs)");
        let total_ops = sim.ops();
        for (p, o) in seen.iter().enumerate() {
            let segments = sim.after_crash(Survival::SyncedOnly).list(Path::new(&part_dir(p))).unwrap();
            let logs = segments.iter().filter(|n| n.ends_with(".log")).count();
            assert!(logs >= 3, "partition {p} did not roll in the middle: {segments:?}");
            check_dir(
                &Disk::Sim(sim.after_crash(Survival::SyncedOnly)),
                o,
                &format!("clean run, partition {p}"),
                &part_dir(p),
            )
            .await;
        }
        let mut images = 0u64;
        for op in 0..total_ops {
            for tear in [Tear::None, Tear::Prefix(61), Tear::Prefix(5000)] {
                let sim: Rc<SimDisk> = SimDisk::new();
                sim.crash_at(op, tear);
                let mut seen = multi_workload(&sim).await;
                assert!(sim.crashed(), "operation {op} was not reached");
                for survival in [
                    Survival::SyncedOnly,
                    Survival::Everything,
                    Survival::Subset(op),
                    Survival::Subset(op ^ 0x9e37_79b9),
                ] {
                    if tear != Tear::None && survival == Survival::SyncedOnly {
                        continue;
                    }
                    let image = sim.after_crash(survival);
                    for (p, o) in seen.iter_mut().enumerate() {
                        o.closed = false;
                        let what = format!("crash at operation {op} ({tear:?}, {survival:?}), partition {p}");
                        check_dir(&Disk::Sim(image.clone()), o, &what, &part_dir(p)).await;
                    }
                    images += 1;
                }
            }
        }
        eprintln!("{total_ops} crash points, {images} crash images of {PARTS} partitions recovered");
        assert!(images >= total_ops * 10);
    });
}
