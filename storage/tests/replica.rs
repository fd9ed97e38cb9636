//! The replica path of `PartitionLog` (what Raft uses, `storage/src/log/replica.rs`):
//! `append_replica` keeps the offsets and leader epochs stamped by the leader and records
//! producer state; `cut_at` removes an uncommitted tail (below and inside the in-memory page,
//! index entries included), later appends reuse the offsets, and what a read, a clean reopen
//! and a crash (simulated disk: synced only, everything, random subsets, at every operation)
//! leave is the kept prefix and, past it, only whole batches appended at those offsets;
//! `set_replicated`/`advance_commit` bound reads, long polls and the high watermark by the
//! commit mark, which never moves back; `reset_empty_at` restarts the log at an offset (a
//! Raft snapshot install), also from the state a crash part-way through an earlier one left.

use sluice_core::batch::{self, compute_crc, Record};
use sluice_core::Offset;
use sluice_storage::disk::sim::{SimDisk, Survival};
use sluice_storage::producers::SeqCheck;
use sluice_storage::{Disk, LogConfig, PartitionLog, StorageError};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

mod common;
use common::run;

const TS: i64 = 1_700_000_000_000;
const DIR: &str = "/sim/r-0";

fn config() -> LogConfig {
    LogConfig { segment_bytes: 1 << 20, index_interval_bytes: 1024, ..LogConfig::default() }
}

/// A batch of `records` records of `size` bytes each, tagged by `tag`, stamped at `base` with
/// leader epoch `epoch` (as a leader's Raft append leaves it).
fn stamped(base: i64, epoch: i32, tag: &str, records: usize, size: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> =
        (0..records).map(|i| format!("{tag}-{i}-").into_bytes().into_iter().cycle().take(size).collect()).collect();
    let recs: Vec<Record<'_>> = values.iter().map(|v| Record { key: Some(tag.as_bytes()), value: v }).collect();
    let mut b = batch::build(&recs, TS + base);
    batch::stamp(&mut b, base, epoch);
    b
}

/// `b` as an idempotent producer's batch (id, epoch, base sequence), CRC recomputed.
fn idempotent(mut b: Vec<u8>, id: i64, epoch: i16, seq: i32) -> Vec<u8> {
    b[43..51].copy_from_slice(&id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Appends `n` batches of `size`-byte records at the log end (epoch `epoch`), returns them.
fn append_n(log: &PartitionLog, n: usize, epoch: i32, tag: &str, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let b = stamped(log.log_end().0, epoch, &format!("{tag}{i}"), 1 + i % 3, size);
            let info = log.append_replica(&b).expect("append_replica");
            assert_eq!(info.base_offset.0, batch::validate(&b).unwrap().base_offset);
            b
        })
        .collect()
}

/// Every batch from `from` to `end` through `read` (whole batches, in order), as bytes.
async fn read_all(log: &PartitionLog, from: i64, end: i64, durable: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = from;
    for _ in 0..1000 {
        if next >= end {
            break;
        }
        let r =
            if durable { log.read_durable(Offset(next), 1 << 20).await } else { log.read(Offset(next), 1 << 20).await };
        let r = r.unwrap_or_else(|e| panic!("read at {next}: {e}"));
        assert!(!r.records.is_empty(), "empty read at {next} below {end}");
        let mut pos = 0;
        while pos < r.records.len() {
            let len = batch::BatchHeader::parse(&r.records[pos..]).expect("a batch header").total_len();
            let h = batch::validate(&r.records[pos..pos + len]).expect("a served batch is valid");
            assert_eq!(h.base_offset, next, "batches follow each other");
            out.push(r.records[pos..pos + len].to_vec());
            next = h.last_offset() + 1;
            pos += h.total_len();
        }
    }
    assert_eq!(next, end, "reads reached the end");
    out
}

fn end_of(batches: &[Vec<u8>]) -> i64 {
    batches.last().map_or(0, |b| batch::validate(b).unwrap().last_offset() + 1)
}

#[test]
fn append_replica_keeps_offsets_epochs_and_producer_state() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("r-0");
    run(move || async move {
        let (log, _) = PartitionLog::open(&dir, "r-0", config(), false).await.unwrap();
        let mut sent = append_n(&log, 3, 4, "a", 100);
        // An idempotent producer's batch, then a later epoch's batch.
        let p = idempotent(stamped(log.log_end().0, 4, "p", 2, 50), 77, 1, 0);
        let info = log.append_replica(&p).unwrap();
        sent.push(p.clone());
        sent.extend(append_n(&log, 2, 7, "b", 100));
        let c = stamped(log.log_end().0, 7, "c", 1, 10);
        let last = log.append_replica(&c).unwrap();
        sent.push(c);
        log.wait_durable(&last).await.unwrap();
        let end = end_of(&sent);
        assert_eq!(log.high_watermark().0, end, "a log that is not replicated: the durable end");
        // Stored byte for byte: offsets and leader epochs as the leader stamped them.
        assert_eq!(read_all(&log, 0, end, false).await, sent);
        // The producer's retry is known as a duplicate at the offsets it was appended at, so a
        // leader elected later answers it as Kafka does.
        let h = batch::validate(&p).unwrap();
        match log.check_producer(&h).unwrap() {
            SeqCheck::Duplicate { base_offset, last_offset } => {
                assert_eq!((base_offset, last_offset), (info.base_offset.0, info.last_offset.0));
            }
            other => panic!("a retry of an appended batch is a duplicate, got {other:?}"),
        }
        // A batch whose length does not match its bytes is refused, the log unchanged.
        let mut short = stamped(end, 7, "x", 1, 10);
        short.pop();
        assert!(matches!(log.append_replica(&short), Err(StorageError::InvalidBatch(_))));
        assert_eq!(log.log_end().0, end);
        log.close().await.unwrap();
        // A clean reopen (indexes and producer snapshot trusted) keeps all of it.
        let (log, _) = PartitionLog::open(&dir, "r-0", config(), true).await.unwrap();
        assert_eq!(read_all(&log, 0, end, false).await, sent);
        assert!(matches!(log.check_producer(&h).unwrap(), SeqCheck::Duplicate { .. }));
        log.close().await.unwrap();
    });
}

/// Reads starting at every offset in `[0, end)` find the batch holding it first (what the
/// sparse index and the per-batch entries serve).
async fn check_every_offset(log: &PartitionLog, sent: &[Vec<u8>], end: i64, what: &str) {
    for b in sent {
        let h = batch::validate(b).unwrap();
        for off in [h.base_offset, h.last_offset()] {
            if off >= end {
                continue;
            }
            let r = log.read(Offset(off), 1).await.unwrap_or_else(|e| panic!("{what}: read at {off}: {e}"));
            let len = batch::BatchHeader::parse(&r.records).unwrap().total_len();
            let got = batch::validate(&r.records[..len]).unwrap_or_else(|e| panic!("{what}: at {off}: {e}"));
            assert_eq!(got.base_offset, h.base_offset, "{what}: read at {off}");
            assert_eq!(&r.records[..got.total_len()], &b[..], "{what}: batch at {}", h.base_offset);
        }
    }
}

#[test]
fn cut_at_removes_the_tail_and_later_appends_reuse_its_offsets_across_a_reopen() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("r-0");
    run(move || async move {
        let (log, _) = PartitionLog::open(&dir, "r-0", config(), false).await.unwrap();
        // 12 batches of ~1.5-4.5 KiB, durable: the in-memory tail then holds only the last page,
        // so the first cut lies below it (its page is read back from the file).
        let old = append_n(&log, 12, 1, "old", 1500);
        let last = log.append_replica(&stamped(log.log_end().0, 1, "last", 1, 10)).unwrap();
        log.wait_durable(&last).await.unwrap();
        let old_end = last.last_offset.0 + 1;

        // Cut below the in-memory page.
        let cut = batch::validate(&old[4]).unwrap().base_offset;
        log.cut_at(Offset(cut), 0).unwrap();
        assert_eq!(log.log_end().0, cut);
        assert!(log.durable_end().0 <= cut && log.high_watermark().0 <= cut);
        // Nothing at or above the cut is served.
        assert_eq!(read_all(&log, 0, cut, true).await, old[..4].to_vec());
        match log.read(Offset(cut + 1), 1 << 20).await {
            Err(StorageError::OffsetOutOfRange { .. }) => {}
            other => panic!("a read past the cut: {other:?}"),
        }
        // A cut at the log end does nothing.
        log.cut_at(Offset(cut), 0).unwrap();

        // New batches of another epoch and other sizes at the same offsets, then a cut inside
        // the in-memory tail (not yet durable) and more appends.
        let mut sent = old[..4].to_vec();
        sent.extend(append_n(&log, 5, 2, "new", 700));
        let cut2 = batch::validate(&sent[7]).unwrap().base_offset;
        log.cut_at(Offset(cut2), 0).unwrap();
        sent.truncate(7);
        sent.extend(append_n(&log, 3, 3, "newer", 300));
        let tail = stamped(log.log_end().0, 3, "tail", 2, 20);
        let info = log.append_replica(&tail).unwrap();
        sent.push(tail);
        log.wait_durable(&info).await.unwrap();
        let end = end_of(&sent);
        assert!(end < old_end, "the new log is shorter than the old one");
        assert_eq!(log.high_watermark().0, end);
        assert_eq!(read_all(&log, 0, end, false).await, sent);
        check_every_offset(&log, &sent, end, "after the cuts").await;
        log.close().await.unwrap();

        // The file holds nothing past the new end but zero padding (a stale old batch there
        // could come back at a later scan).
        let file = std::fs::read(dir.join(format!("{:020}.log", 0))).unwrap();
        let logical = sent.iter().map(Vec::len).sum::<usize>();
        assert!(file.len() >= logical, "the segment holds every batch");
        assert!(file[logical..].iter().all(|&b| b == 0), "stale bytes past the end after the cuts");
        for clean in [true, false] {
            let (log, _) = PartitionLog::open(&dir, "r-0", config(), clean).await.unwrap();
            assert_eq!(log.high_watermark().0, end, "reopen (clean {clean})");
            assert_eq!(read_all(&log, 0, end, false).await, sent, "reopen (clean {clean})");
            check_every_offset(&log, &sent, end, &format!("reopen (clean {clean})")).await;
            log.close().await.unwrap();
        }
    });
}

#[test]
fn cut_at_before_the_active_segment_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("r-0");
    run(move || async move {
        let small = LogConfig { segment_bytes: 8 * 1024, ..config() };
        let (log, _) = PartitionLog::open(&dir, "r-0", small, false).await.unwrap();
        for _ in 0..40 {
            let last = log.append_replica(&stamped(log.log_end().0, 1, "s", 1, 1000)).unwrap();
            log.wait_durable(&last).await.unwrap();
            if log.segment_count() > 2 {
                break;
            }
        }
        assert!(log.segment_count() > 2, "the log rolled");
        let end = log.log_end().0;
        assert!(log.cut_at(Offset(1), 0).is_err(), "a cut in a sealed segment");
        assert_eq!(log.log_end().0, end, "a refused cut changes nothing");
        assert_eq!(read_all(&log, 0, end, false).await.len(), usize::try_from(end).unwrap());
        log.close().await.unwrap();
    });
}

#[test]
fn the_commit_mark_bounds_reads_and_never_moves_back() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("r-0");
    run(move || async move {
        let (log, _) = PartitionLog::open(&dir, "r-0", config(), false).await.unwrap();
        let sent = append_n(&log, 6, 1, "c", 200);
        let last = log.append_replica(&stamped(log.log_end().0, 1, "l", 1, 10)).unwrap();
        log.wait_durable(&last).await.unwrap();
        let durable = log.durable_end().0;
        assert_eq!(log.high_watermark().0, durable);

        log.set_replicated(Offset(0));
        assert!(log.is_replicated());
        assert_eq!(log.high_watermark().0, 0, "nothing committed yet");
        assert!(log.read(Offset(0), 1 << 20).await.unwrap().records.is_empty(), "readers see nothing");
        assert!(matches!(log.read(Offset(1), 1 << 20).await, Err(StorageError::OffsetOutOfRange { .. })));
        // The replica's own view is the durable end.
        assert_eq!(read_all(&log, 0, durable, true).await.len(), 7);

        // A long poll waits for the commit mark, not for durability.
        let c2 = end_of(&sent[..2]);
        let waiting = log.wait_beyond(Offset(0));
        let woke = glommio::timer::timeout(Duration::from_millis(50), async {
            waiting.await;
            Ok(())
        })
        .await;
        assert!(woke.is_err(), "a long poll woke before any commit");
        let waiting = log.wait_beyond(Offset(0));
        log.advance_commit(Offset(c2));
        glommio::timer::timeout(Duration::from_secs(5), async {
            waiting.await;
            Ok(())
        })
        .await
        .expect("the commit wakes the long poll");
        assert_eq!(log.high_watermark().0, c2);
        assert_eq!(read_all(&log, 0, c2, false).await, sent[..2].to_vec());
        let r = log.read(Offset(0), 1 << 20).await.unwrap();
        assert_eq!(r.high_watermark.0, c2);
        let served = read_all(&log, 0, c2, false).await;
        assert!(batch::validate(served.last().unwrap()).unwrap().last_offset() < c2, "no batch past the commit mark");
        assert!(!r.records.is_empty());

        // Never backwards.
        log.advance_commit(Offset(1));
        assert_eq!(log.high_watermark().0, c2);
        // A cut above the commit mark keeps it.
        let c4 = end_of(&sent[..4]);
        log.cut_at(Offset(c4), 0).unwrap();
        assert_eq!(log.high_watermark().0, c2);
        log.advance_commit(Offset(c4));
        assert_eq!(read_all(&log, 0, c4, false).await, sent[..4].to_vec());
        log.close().await.unwrap();
    });
}

/// A disk a restart could find at one point of the cut workload, with what that point had
/// acknowledged.
struct Image {
    what: String,
    disk: Rc<SimDisk>,
    /// The log acknowledged durable and not cut since: a recovery starts with exactly these.
    acked: Vec<Vec<u8>>,
}

/// Every batch the workload appended (a base offset may have several versions).
#[derive(Default)]
struct Seen {
    appended: Vec<Vec<u8>>,
    acked: Vec<Vec<u8>>,
    images: Vec<Image>,
}

impl Seen {
    /// The disks a crash now would leave: synced only, everything issued, random subsets of
    /// the unsynced writes and truncations.
    fn snapshot(&mut self, sim: &SimDisk, point: &str) {
        let seeds = [Survival::SyncedOnly, Survival::Everything, Survival::Subset(1), Survival::Subset(2)];
        for (i, survival) in seeds.into_iter().chain((3..12).map(Survival::Subset)).enumerate() {
            let what = format!("crash {point} ({survival:?}, image {i})");
            self.images.push(Image { what, disk: sim.after_crash(survival), acked: self.acked.clone() });
        }
    }
}

/// `n` one-record batches from offset `at`, of growing sizes.
fn singles(at: i64, epoch: i32, tag: &str, n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| stamped(at + i as i64, epoch, &format!("{tag}{i}"), 1, size + 37 * i)).collect()
}

/// Appends `batches` with syncs held, snapshots the disk once the writer wrote them (and
/// finished any cut: truncation and page reload) but nothing is synced, then lets the sync
/// run and waits until they are durable.
async fn append_held(log: &PartitionLog, sim: &SimDisk, batches: Vec<Vec<u8>>, seen: &mut Seen, point: &str) {
    sim.hold_syncs(true);
    let new = batches.clone();
    let mut last = None;
    for b in batches {
        last = Some(log.append_replica(&b).expect("append_replica"));
        seen.appended.push(b);
    }
    glommio::timer::sleep(Duration::from_millis(20)).await;
    seen.snapshot(sim, &format!("{point}, written, not synced"));
    sim.hold_syncs(false);
    log.wait_durable(&last.expect("batches")).await.expect("durable");
    seen.acked.extend(new);
    seen.snapshot(sim, &format!("{point}, durable"));
}

/// Appends 10 durable batches, cuts at the 4th (below the in-memory page), appends other
/// batches there, cuts again inside the tail, appends; snapshots the disk a crash would
/// leave at every step.
async fn cut_workload(sim: &Rc<SimDisk>) -> Seen {
    let disk = Disk::Sim(sim.clone());
    let mut seen = Seen::default();
    let (log, _) = PartitionLog::open_on(&disk, Path::new(DIR), "r-0", config(), false).await.unwrap();
    let first: Vec<Vec<u8>> = (0..10).map(|i| stamped(i * 2, 1, &format!("o{i}"), 2, 900)).collect();
    append_held(&log, sim, first.clone(), &mut seen, "first appends").await;
    assert_eq!(seen.acked, first);
    let cut = batch::validate(&first[3]).unwrap().base_offset;
    log.cut_at(Offset(cut), 0).unwrap();
    seen.acked.truncate(3);
    seen.snapshot(sim, "after the first cut");
    append_held(&log, sim, singles(cut, 2, "n", 4, 1300), &mut seen, "after the first cut").await;
    assert_eq!(seen.acked.len(), 7);
    let cut2 = cut + 2;
    log.cut_at(Offset(cut2), 0).unwrap();
    seen.acked.truncate(5);
    seen.snapshot(sim, "after the second cut");
    append_held(&log, sim, singles(cut2, 3, "m", 3, 500), &mut seen, "after the second cut").await;
    assert_eq!(seen.acked.len(), 8);
    log.close().await.unwrap();
    seen.snapshot(sim, "after close");
    seen
}

/// Recovers a crash image and checks: the acknowledged log first, byte for byte; past it only
/// whole batches, each one of the versions appended at its offset, following each other.
async fn check_cut(image: &Image, appended: &[Vec<u8>]) {
    let what = &image.what;
    let (log, _) = PartitionLog::open_on(&Disk::Sim(image.disk.clone()), Path::new(DIR), "r-0", config(), false)
        .await
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    let hw = log.high_watermark().0;
    let got = read_all(&log, 0, hw, false).await;
    assert!(
        got.len() >= image.acked.len(),
        "{what}: lost acknowledged batches ({} of {})",
        got.len(),
        image.acked.len()
    );
    assert_eq!(got[..image.acked.len()], image.acked[..], "{what}: the acknowledged log differs");
    for b in &got {
        assert!(appended.contains(b), "{what}: a batch never appended at {}", batch::validate(b).unwrap().base_offset);
    }
    log.close().await.unwrap();
}

#[test]
fn a_crash_around_cuts_keeps_the_acknowledged_log_and_only_whole_appended_batches() {
    run(|| async {
        let sim = SimDisk::new();
        let seen = cut_workload(&sim).await;
        let epochs: Vec<i32> = seen.acked.iter().map(|b| i32::from_be_bytes(b[12..16].try_into().unwrap())).collect();
        assert_eq!(epochs, vec![1, 1, 1, 2, 2, 3, 3, 3], "the log after both cuts");
        for image in &seen.images {
            check_cut(image, &seen.appended).await;
        }
        eprintln!("{} crash images recovered", seen.images.len());
        assert!(seen.images.len() >= 8 * 13);
    });
}

/// A log of several segments (8 KiB each), every batch durable: its end.
async fn several_segments(log: &PartitionLog) -> i64 {
    for _ in 0..60 {
        let last = log.append_replica(&stamped(log.log_end().0, 1, "s", 1, 1000)).unwrap();
        log.wait_durable(&last).await.unwrap();
        if log.segment_count() > 3 {
            break;
        }
    }
    assert!(log.segment_count() > 3, "the log rolled");
    log.log_end().0
}

#[test]
fn reset_empty_at_restarts_the_log_at_an_offset_from_any_partial_reset() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().to_path_buf();
    run(move || async move {
        let small = LogConfig { segment_bytes: 8 * 1024, ..config() };
        // k: how many of the old segments a crash during an earlier reset had removed (their
        // files go in name order); the reset on the log reopened from that state finishes it.
        for k in 0..=4usize {
            let dir = root.join(format!("r-{k}"));
            let (log, _) = PartitionLog::open(&dir, "r", small, false).await.unwrap();
            let end = several_segments(&log).await;
            log.close().await.unwrap();
            let mut logs: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for p in logs.iter().take(k) {
                std::fs::remove_file(p).unwrap();
            }
            let (log, _) = PartitionLog::open(&dir, "r", small, false).await.unwrap();
            let start = end + 1000;
            log.reset_empty_at(Offset(start)).await.unwrap();
            assert_eq!((log.log_start().0, log.log_end().0, log.high_watermark().0), (start, start, start));
            assert_eq!(log.segment_count(), 1, "k={k}");
            match log.read(Offset(start - 1), 1 << 20).await {
                Err(StorageError::OffsetOutOfRange { .. }) => {}
                other => panic!("a read below the new start (k={k}): {other:?}"),
            }
            let sent = append_n(&log, 5, 4, "new", 300);
            let lb = stamped(log.log_end().0, 4, "last", 1, 10);
            let last = log.append_replica(&lb).unwrap();
            log.wait_durable(&last).await.unwrap();
            let mut all = sent;
            all.push(lb);
            let new_end = last.last_offset.0 + 1;
            assert_eq!(read_all(&log, start, new_end, false).await, all, "k={k}");
            log.close().await.unwrap();
            for clean in [true, false] {
                let (log, _) = PartitionLog::open(&dir, "r", small, clean).await.unwrap();
                assert_eq!((log.log_start().0, log.log_end().0), (start, new_end), "reopen k={k} clean={clean}");
                assert_eq!(read_all(&log, start, new_end, false).await, all, "reopen k={k} clean={clean}");
                log.close().await.unwrap();
            }
        }
    });
}

/// A Raft control batch taking no offset (issue #18), stamped at `base` (the next batch's).
fn no_offset(base: i64, epoch: i32, tag: &str) -> Vec<u8> {
    let key = [0u8, 0, 0x53, 0x52];
    let mut b = batch::build(&[Record { key: Some(&key), value: tag.as_bytes() }], 0);
    b[21..23].copy_from_slice(&0x20i16.to_be_bytes()); // control
    b[23..27].copy_from_slice(&(-1i32).to_be_bytes()); // lastOffsetDelta -1: no offset
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    batch::stamp(&mut b, base, epoch);
    b
}

#[test]
fn batches_taking_no_offset_are_made_durable_read_cut_and_reopened_by_position() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("r-0");
    run(move || async move {
        let (log, _) = PartitionLog::open(&dir, "r-0", config(), false).await.unwrap();
        let data = append_n(&log, 3, 1, "d", 100);
        let end = log.log_end().0;
        // Two control batches at the log end: durable by position (their offsets say nothing).
        let z1 = no_offset(end, 2, "z1");
        let i1 = log.append_replica(&z1).unwrap();
        assert_eq!((i1.base_offset.0, i1.last_offset.0, log.log_end().0), (end, end - 1, end));
        log.wait_durable(&i1).await.unwrap();
        let z2 = no_offset(end, 3, "z2");
        let i2 = log.append_replica(&z2).unwrap();
        log.wait_durable(&i2).await.unwrap();
        // A replica's read at its durable end finds them.
        let r = log.read_durable(Offset(end), 1 << 20).await.unwrap();
        assert_eq!(r.records.to_vec(), [z1.clone(), z2.clone()].concat());
        // A batch of data at the same base: a read from there starts at the first batch there.
        let d = stamped(end, 3, "d2", 2, 50);
        let i3 = log.append_replica(&d).unwrap();
        log.wait_durable(&i3).await.unwrap();
        assert_eq!(log.log_end().0, end + 2);
        let r = log.read_durable(Offset(end), 1 << 20).await.unwrap();
        assert_eq!(r.records.to_vec(), [z1.clone(), z2.clone(), d.clone()].concat());
        let r = log.read_durable(Offset(end + 1), 1 << 20).await.unwrap();
        assert_eq!(r.records.to_vec(), d, "an offset inside the data batch");
        // Cut at (end, rank 1): z1 stays.
        log.cut_at(Offset(end), 1).unwrap();
        assert_eq!(log.log_end().0, end);
        let r = log.read_durable(Offset(end), 1 << 20).await.unwrap();
        assert_eq!(r.records.to_vec(), z1);
        log.close().await.unwrap();
        drop(log);
        let (log, _) = PartitionLog::open(&dir, "r-0", config(), false).await.unwrap();
        assert_eq!(log.log_end().0, end);
        // A read takes the batches at its end that take no offset along.
        let mut want = data.clone();
        want.push(z1.clone());
        assert_eq!(read_all(&log, 0, end, true).await, want);
        let r = log.read_durable(Offset(end), 1 << 20).await.unwrap();
        assert_eq!(r.records.to_vec(), z1, "the control batch is recovered");
        log.close().await.unwrap();
    });
}

/// A read whose first batch takes no offset also takes the batch taking offsets after it,
/// however large (Kafka answers the first batch of a fetch whole, KIP-74): otherwise a
/// consumer at that offset, whose fetch drops Raft control batches, gets nothing forever.
/// From the in-memory tail, the dense index and a reopened log's scan, across a chunk edge.
#[test]
fn a_read_starting_at_batches_taking_no_offset_takes_the_next_data_batch_whole() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("r-0");
    run(move || async move {
        let cfg = LogConfig { segment_bytes: 16 << 20, ..config() };
        let (log, _) = PartitionLog::open(&dir, "r-0", cfg, false).await.unwrap();
        log.set_replicated(Offset(0));
        let small = append_n(&log, 3, 1, "d", 100);
        let end = log.log_end().0;
        let z = no_offset(end, 2, "z");
        log.append_replica(&z).unwrap();
        // Larger than the read's max and than a cache chunk, so it crosses a chunk edge.
        let big = stamped(end, 2, "big", 3, 600 << 10);
        let info = log.append_replica(&big).unwrap();
        log.wait_durable(&info).await.unwrap();
        let hw = info.last_offset.0 + 1;
        log.advance_commit(Offset(hw));
        let want = [z.clone(), big.clone()].concat();
        let r = log.read(Offset(end), 1024).await.unwrap();
        assert_eq!(r.records.len(), want.len(), "read at {end}");
        assert_eq!(r.records.to_vec(), want);
        assert_eq!(log.read_durable(Offset(end), 1024).await.unwrap().records.to_vec(), want, "durable");
        log.close().await.unwrap();
        drop(log);
        let (log, _) = PartitionLog::open(&dir, "r-0", cfg, false).await.unwrap();
        log.set_replicated(Offset(hw));
        log.advance_commit(Offset(hw));
        assert_eq!(log.read_durable(Offset(end), 1024).await.unwrap().records.to_vec(), want, "reopened");
        assert_eq!(log.read(Offset(end), 1024).await.unwrap().records.to_vec(), want, "reopened, below the commit");
        let got = read_all(&log, 0, end, false).await;
        assert!(got.len() >= small.len() && got[..small.len()] == small[..], "the batches before are read as before");
        log.close().await.unwrap();
    });
}

/// A segment that ends with batches taking no offset (a roll right after Raft control
/// batches): the next segment starts at their offset. A replica's read from a batch boundary
/// there, (offset, rank), finds them first, as they lie in the log, then the next segment's
/// batches; a plain read at that offset starts in the next segment and misses them (Raft
/// catch-up, which counts batches, numbered the next batch as the missed one, or skipped a
/// batch it had not fed: a follower never caught up).
#[test]
fn a_read_from_a_boundary_finds_batches_taking_no_offset_that_end_the_segment_before() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("r-0");
    run(move || async move {
        let cfg = LogConfig { segment_bytes: 4096, ..config() };
        let (log, _) = PartitionLog::open(&dir, "r-0", cfg, false).await.unwrap();
        // One batch of data filling the segment but for a control batch's room.
        let first = stamped(0, 1, "d", 1, 3990);
        log.append_replica(&first).unwrap();
        let end = log.log_end().0;
        let z1 = no_offset(end, 2, "z1");
        let z2 = no_offset(end, 2, "z2");
        // z1 fills the segment: once written, the flusher rolls to a segment starting at `end`.
        let i1 = log.append_replica(&z1).unwrap();
        log.wait_durable(&i1).await.unwrap();
        let rolled = dir.join(format!("{end:020}.log"));
        for _ in 0..400 {
            if rolled.exists() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        log.append_replica(&z2).unwrap();
        let d = stamped(end, 2, "after", 1, 100);
        let info = log.append_replica(&d).unwrap();
        log.wait_durable(&info).await.unwrap();
        let segs = common::segment_names(&dir);
        assert_eq!(segs, [format!("{:020}.log", 0), format!("{end:020}.log")], "a roll right after z1");
        let at = |rank| {
            let log = log.clone();
            async move {
                let (read, left) = log.read_durable_at(Offset(end), rank, 1 << 20).await.unwrap();
                (read.records.to_vec(), left)
            }
        };
        assert_eq!(at(0).await, (z1.clone(), 0), "the end of the segment before");
        assert_eq!(at(1).await, ([z2.clone(), d.clone()].concat(), 0));
        assert_eq!(at(2).await, ([z2.clone(), d.clone()].concat(), 1), "z2 is still to pass over");
        let plain = log.read_durable(Offset(end), 1 << 20).await.unwrap();
        assert_eq!(plain.records.to_vec(), [z2, d].concat(), "a plain read starts in the next segment");
        log.close().await.unwrap();
    });
}
