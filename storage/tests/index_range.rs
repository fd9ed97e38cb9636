//! The sparse indexes hold offsets relative to their segment's base and byte positions in 32
//! bits. Batches whose lastOffsetDelta is huge (the Produce path refuses a count that does
//! not match it, but the storage API takes whatever it is given: recovery of old data, tests,
//! the fuzz targets) must make the log roll before an offset would leave that range, so the
//! index never wraps and every batch stays readable, across clean and unclean restarts. The
//! roll point must hold on the simulated disk too, including when the new segment cannot be
//! created.

use sluice_core::batch::{self, BatchHeader, Record};
use sluice_core::limits::MAX_SEGMENT_RELATIVE_OFFSET;
use sluice_core::Offset;
use sluice_storage::disk::sim::SimDisk;
use sluice_storage::index::SparseIndex;
use sluice_storage::{Disk, LogConfig, PartitionLog};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::run;

/// One record; its header claims `last_offset_delta` (CRC recomputed: an intact batch).
fn batch_spanning(last_offset_delta: i32, tag: u8) -> Vec<u8> {
    let value = vec![tag; 200];
    let mut b = batch::build(&[Record { key: Some(b"k"), value: &value }], 1_700_000_000_000 + i64::from(tag));
    b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Index entries for every batch, so that a wrapped relative offset would show up at once.
fn dense_index() -> LogConfig {
    LogConfig { index_interval_bytes: 1, ..LogConfig::default() }
}

/// The workload: small and huge batches mixed; a huge one spans i32::MAX + 1 offsets.
fn workload() -> Vec<Vec<u8>> {
    let huge = i32::MAX;
    [(0, 1), (huge, 2), (0, 3), (5, 4), (huge, 5), (huge, 6), (huge, 7), (0, 8), (huge - 9, 9), (3, 10)]
        .iter()
        .map(|(d, t)| batch_spanning(*d, *t))
        .collect()
}

/// Appends every batch, waiting for each to be durable; returns their base offsets.
async fn append_all(log: &PartitionLog, batches: &[Vec<u8>]) -> Vec<i64> {
    let mut bases = Vec::new();
    for b in batches {
        let h = batch::validate(b).unwrap();
        let info = log.append(b, &h, None).unwrap();
        log.wait_durable(&info).await.unwrap();
        bases.push(info.base_offset.0);
    }
    bases
}

/// Reads every batch from the log start, and each batch again from an offset inside it;
/// returns the base offsets read.
async fn read_back(log: &PartitionLog, what: &str) -> Vec<i64> {
    let mut next = log.log_start().0;
    let mut bases = Vec::new();
    for _ in 0..1000 {
        if next >= log.high_watermark().0 {
            break;
        }
        let r = log.read(Offset(next), 1).await.unwrap_or_else(|e| panic!("{what}: read at {next}: {e}"));
        let h = BatchHeader::parse(&r.records).unwrap_or_else(|e| panic!("{what}: read at {next}: {e}"));
        batch::validate(&r.records[..h.total_len()]).unwrap();
        assert!(h.base_offset <= next && next <= h.last_offset(), "{what}: read at {next} gave {h:?}");
        let middle = h.base_offset + i64::from(h.last_offset_delta) / 2;
        let m = log.read(Offset(middle), 1).await.unwrap_or_else(|e| panic!("{what}: read at {middle}: {e}"));
        assert_eq!(BatchHeader::parse(&m.records).unwrap().base_offset, h.base_offset, "{what}: read at {middle}");
        bases.push(h.base_offset);
        next = h.last_offset() + 1;
    }
    bases
}

/// Base offsets of the segment files in `dir`.
fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn huge_offset_spans_roll_segments_before_the_index_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let d: PathBuf = dir.path().join("t-0");
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", dense_index(), false).await.unwrap();
        let batches = workload();
        let bases = append_all(&log, &batches).await;
        let end = log.log_end().0;
        assert!(end > 4 * (1i64 << 31), "the workload spans more than 2^32 offsets: {end}");
        assert_eq!(read_back(&log, "before the restart").await, bases);
        log.close().await.unwrap();
        drop(log);

        // No segment spans more offsets than its index can address, and the sealed ones'
        // index files decode.
        let segs = segment_bases(&d);
        assert!(segs.len() >= 6, "segments {segs:?}");
        let mut ends = segs[1..].to_vec();
        ends.push(end);
        for (base, next) in segs.iter().zip(&ends) {
            assert!(next - base - 1 <= MAX_SEGMENT_RELATIVE_OFFSET, "segment {base}..{next} spans too far");
        }
        for (base, next) in segs.iter().zip(&ends).take(segs.len() - 1) {
            let name = format!("{base:020}");
            let log_file = d.join(format!("{name}.log"));
            let size = std::fs::metadata(&log_file).unwrap().len();
            let offsets = std::fs::read(d.join(format!("{name}.index"))).unwrap();
            let times = std::fs::read(d.join(format!("{name}.timeindex"))).unwrap();
            let last_rel = u32::try_from(next - base - 1).unwrap();
            let idx = SparseIndex::decode(&offsets, &times, size, last_rel)
                .unwrap_or_else(|e| panic!("index of segment {base}: {e}"));
            assert!(!idx.offsets.is_empty() || size < 4096, "segment {base} indexed");
        }

        for clean in [true, false] {
            let what = format!("after a restart (clean={clean})");
            let (log, cut) = PartitionLog::open(&d, "t-0", dense_index(), clean).await.unwrap();
            assert_eq!(cut, 0, "{what}");
            assert_eq!(log.high_watermark(), Offset(end), "{what}");
            assert_eq!(read_back(&log, &what).await, bases, "{what}");
            // Appends go on after the restart, also one that needs another roll.
            let more = [batch_spanning(i32::MAX, 20), batch_spanning(1, 21)];
            let extra = append_all(&log, &more).await;
            assert_eq!(extra[0], end, "{what}");
            let mut all = bases.clone();
            all.extend(&extra);
            assert_eq!(read_back(&log, &what).await, all, "{what}");
            log.truncate_to(Offset(end)).await.unwrap();
            log.close().await.unwrap();
        }
    });
}

#[test]
fn a_roll_point_holds_on_the_simulated_disk_and_a_failed_roll_fails_only_what_follows() {
    run(|| async {
        let sim = SimDisk::new();
        let disk = Disk::Sim(sim.clone());
        let dir = Path::new("/sim/t-0");
        let (log, _) = PartitionLog::open_on(&disk, dir, "t-0", dense_index(), false).await.unwrap();
        let first = batch_spanning(0, 1);
        let info = log.append(&first, &batch::validate(&first).unwrap(), None).unwrap();
        log.wait_durable(&info).await.unwrap();

        // The next disk operation (creating the segment the huge batch must start) fails.
        sim.fail_once(sim.ops());
        let huge = batch_spanning(i32::MAX, 2);
        let h = batch::validate(&huge).unwrap();
        let lost = log.append(&huge, &h, None).unwrap();
        assert!(log.wait_durable(&lost).await.is_err(), "a batch past a roll point that could not roll was acked");
        for _ in 0..100 {
            if log.log_end() == Offset(1) {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!((log.log_end(), log.high_watermark()), (Offset(1), Offset(1)), "rolled back to the durable end");
        assert_eq!(log.segment_count(), 1);

        // Again, with a working disk: the huge batch starts segment 1, then another one.
        let again = log.append(&huge, &h, None).unwrap();
        log.wait_durable(&again).await.unwrap();
        assert_eq!(again.base_offset, Offset(1));
        let after = batch_spanning(7, 3);
        let info = log.append(&after, &batch::validate(&after).unwrap(), None).unwrap();
        log.wait_durable(&info).await.unwrap();
        assert_eq!(info.base_offset, Offset(1 + (1i64 << 31)));
        assert_eq!(log.segment_count(), 3, "segments 0, 1 and 2^31 + 1");
        assert_eq!(read_back(&log, "on the simulated disk").await, vec![0, 1, 1 + (1i64 << 31)]);
        log.close().await.unwrap();
        drop(log);
        let (log, _) = PartitionLog::open_on(&disk, dir, "t-0", dense_index(), true).await.unwrap();
        assert_eq!(read_back(&log, "reopened").await, vec![0, 1, 1 + (1i64 << 31)]);
        log.close().await.unwrap();
    });
}
