//! Real-file tests of segment rolling, sparse-index reads, clean restarts, retention and
//! timestamp lookups.

use glommio::LocalExecutorBuilder;
use sluice_core::batch::{self, Record};
use sluice_core::Offset;
use sluice_storage::{LogConfig, PartitionLog};

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default().spawn(move || async move { f().await }).unwrap().join().unwrap();
}

/// A batch of `n` records of 500 bytes, all stamped `ts`.
fn batch_at(n: usize, tag: u8, ts: i64) -> Vec<u8> {
    let payload = vec![tag; 500];
    let recs: Vec<Record<'_>> = (0..n).map(|_| Record { key: None, value: &payload }).collect();
    batch::build(&recs, ts)
}

fn small_segments() -> LogConfig {
    LogConfig { segment_bytes: 8 * 1024, index_interval_bytes: 1024, ..LogConfig::default() }
}

async fn append_n(log: &PartitionLog, count: usize, ts0: i64) -> Offset {
    let mut last = None;
    for i in 0..count {
        let b = batch_at(2, i as u8, ts0 + i as i64 * 1000);
        let h = batch::validate(&b).unwrap();
        let info = log.append(&b, &h, None).unwrap();
        if i % 7 == 0 {
            log.wait_durable(&info).await.unwrap();
        }
        last = Some(info);
    }
    let last = last.expect("count > 0");
    log.wait_durable(&last).await.unwrap();
    last.last_offset
}

async fn read_all(log: &PartitionLog) -> Vec<i64> {
    let mut next = log.log_start().0;
    let mut bases = Vec::new();
    for _ in 0..10_000 {
        if next >= log.high_watermark().0 {
            break;
        }
        let r = log.read(Offset(next), 3000).await.unwrap();
        assert!(!r.records.is_empty(), "no progress at {next}");
        let mut pos = 0;
        while pos < r.records.len() {
            let h = batch::validate(
                &r.records[pos..pos + batch::BatchHeader::parse(&r.records[pos..]).unwrap().total_len()],
            )
            .unwrap();
            if h.last_offset() >= next {
                bases.push(h.base_offset);
                next = h.last_offset() + 1;
            }
            pos += h.total_len();
        }
    }
    bases
}

#[test]
fn rolls_reads_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        let last = append_n(&log, 60, 1_700_000_000_000).await;
        assert_eq!(last, Offset(119));
        assert!(log.segment_count() > 3, "segments: {}", log.segment_count());
        let bases = read_all(&log).await;
        assert_eq!(bases, (0..60).map(|i| i * 2).collect::<Vec<i64>>());
        // Reads from the middle of a sealed segment go through the sparse index.
        let r = log.read(Offset(31), 1).await.unwrap();
        assert_eq!(batch::BatchHeader::parse(&r.records).unwrap().base_offset, 30);
        log.close().await.unwrap();
        drop(log);
        for clean in [true, false] {
            let (log, cut) = PartitionLog::open(&d, "t-0", small_segments(), clean).await.unwrap();
            assert_eq!(cut, 0);
            assert_eq!(log.high_watermark(), Offset(120), "clean={clean}");
            assert_eq!(read_all(&log).await.len(), 60, "clean={clean}");
            let b = batch_at(1, 9, 1_700_000_100_000);
            let h = batch::validate(&b).unwrap();
            let info = log.append(&b, &h, None).unwrap();
            log.wait_durable(&info).await.unwrap();
            log.truncate_to(Offset(120)).await.unwrap();
            log.close().await.unwrap();
        }
    });
}

#[test]
fn missing_or_corrupt_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        append_n(&log, 40, 1_700_000_000_000).await;
        log.close().await.unwrap();
        drop(log);
        let mut indexes: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "index"))
            .collect();
        indexes.sort();
        assert!(indexes.len() >= 3);
        std::fs::remove_file(&indexes[0]).unwrap();
        std::fs::write(&indexes[1], b"\xff\xff\xff\xff\x00\x00\x00\x01garbage").unwrap();
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), true).await.unwrap();
        assert_eq!(read_all(&log).await.len(), 40);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_size_and_time_deletes_whole_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig { retention_bytes: 20 * 1024, retention_ms: -1, ..small_segments() };
        let (log, _) = PartitionLog::open(&d, "t-0", cfg, false).await.unwrap();
        let now = 1_700_000_000_000;
        append_n(&log, 80, now).await;
        let before = log.segment_count();
        let deleted = log.enforce_retention(now).await.unwrap();
        assert!(deleted > 0 && log.segment_count() == before - deleted);
        // Kafka's rule: no more segments are kept than needed to hold retention.bytes.
        let sizes = log.segment_sizes();
        assert!(log.size_bytes() - sizes[0] < 20 * 1024, "sizes {sizes:?}");
        assert!(log.size_bytes() >= 20 * 1024, "deleted too much: {sizes:?}");
        let start = log.log_start();
        assert!(start.0 > 0);
        assert!(log.read(Offset(0), 100).await.is_err(), "below the log start is out of range");
        assert_eq!(read_all(&log).await.first().copied(), Some(start.0));
        // Time: everything is older than 1 s before "now + 1 day"; only the active segment stays.
        log.set_config(LogConfig { retention_bytes: -1, retention_ms: 1000, ..cfg });
        log.enforce_retention(now + 86_400_000).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        log.close().await.unwrap();
        drop(log);
        let (log, _) = PartitionLog::open(&d, "t-0", cfg, true).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        assert!(log.log_start().0 > start.0, "the log start survives a restart");
        log.close().await.unwrap();
    });
}

/// Names in `dir` ending with `suffix`.
fn names_ending(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let names = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok());
    names.filter(|n| n.ends_with(suffix)).collect()
}

/// Waits (at most 5 s) until `dir` holds no `.deleted` file.
async fn until_no_deleted_files(dir: &std::path::Path) {
    for _ in 0..500 {
        if names_ending(dir, ".deleted").is_empty() {
            return;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("deleted segment files left: {:?}", names_ending(dir, ".deleted"));
}

#[test]
fn a_deleted_segment_waits_its_delay_under_a_deleted_name_and_a_restart_frees_what_was_left() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let cfg =
            LogConfig { retention_bytes: 20 * 1024, retention_ms: -1, file_delete_delay_ms: 300, ..small_segments() };
        let (log, _) = PartitionLog::open(&d, "t-0", cfg, false).await.unwrap();
        let now = 1_700_000_000_000;
        append_n(&log, 80, now).await;
        let logs = names_ending(&d, ".log").len();
        let deleted = log.enforce_retention(now).await.unwrap();
        assert!(deleted > 0);
        // Out of the log's names at once (index files removed), the log files kept as Kafka keeps them.
        assert_eq!(names_ending(&d, ".log").len(), logs - deleted);
        let stems = |suffix: &str| -> Vec<String> {
            names_ending(&d, suffix).iter().map(|n| n.trim_end_matches(suffix).to_string()).collect()
        };
        let live = stems(".log");
        assert!(stems(".index").iter().all(|s| live.contains(s)), "index files of deleted segments were removed");
        assert_eq!(names_ending(&d, ".deleted").len(), deleted);
        glommio::timer::sleep(std::time::Duration::from_millis(150)).await;
        assert_eq!(names_ending(&d, ".deleted").len(), deleted, "freed before file.delete.delay.ms");
        until_no_deleted_files(&d).await;

        // A long delay: the files are still there at the stop, and the next open frees them.
        log.set_config(LogConfig { retention_ms: 1000, retention_bytes: -1, file_delete_delay_ms: 3_600_000, ..cfg });
        let deleted = log.enforce_retention(now + 86_400_000).await.unwrap();
        assert!(deleted > 0);
        log.close().await.unwrap();
        drop(log);
        assert_eq!(names_ending(&d, ".deleted").len(), deleted);
        let (log, _) = PartitionLog::open(&d, "t-0", cfg, true).await.unwrap();
        assert_eq!(log.segment_count(), 1, "a .deleted file is never taken for a segment");
        until_no_deleted_files(&d).await;
        log.close().await.unwrap();
    });
}

#[test]
fn timestamp_lookup_has_record_precision() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        let t0 = 1_700_000_000_000;
        append_n(&log, 30, t0).await; // batch i (offsets 2i, 2i+1) at t0 + 1000 i
        assert_eq!(log.offset_for_timestamp(t0).await.unwrap(), Some((Offset(0), t0)));
        assert_eq!(log.offset_for_timestamp(t0 + 10_500).await.unwrap(), Some((Offset(22), t0 + 11_000)));
        assert_eq!(log.offset_for_timestamp(t0 + 29_000).await.unwrap(), Some((Offset(58), t0 + 29_000)));
        assert_eq!(log.offset_for_timestamp(t0 + 29_001).await.unwrap(), None);
        assert_eq!(log.max_timestamp().await.unwrap().map(|(o, t, _)| (o, t)), Some((Offset(58), t0 + 29_000)));
        log.close().await.unwrap();
    });
}

#[test]
fn reads_across_cache_chunks_after_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig { index_interval_bytes: 64 * 1024, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&d, "t-0", cfg, false).await.unwrap();
        // ~3.5 MiB of batches of ~110 KiB: many cross a 1 MiB cache-chunk boundary.
        let payload = vec![7u8; 110 * 1024];
        let mut sent = Vec::new();
        for i in 0..32u8 {
            let mut p = payload.clone();
            p[0] = i;
            let b = batch::build(&[Record { key: None, value: &p }], 1_700_000_000_000 + i as i64);
            let h = batch::validate(&b).unwrap();
            let info = log.append(&b, &h, None).unwrap();
            log.wait_durable(&info).await.unwrap();
            sent.push(b);
        }
        log.close().await.unwrap();
        drop(log);
        for clean in [true, false] {
            let (log, _) = PartitionLog::open(&d, "t-0", cfg, clean).await.unwrap();
            for round in 0..2 {
                // Twice: the second round is served from the chunk cache.
                let mut next = 0i64;
                let mut seen = 0;
                for _ in 0..1000 {
                    if next >= 32 {
                        break;
                    }
                    let r = log.read(Offset(next), 300 * 1024).await.unwrap();
                    assert!(!r.records.is_empty(), "no progress at {next} (clean={clean}, round {round})");
                    let mut pos = 0;
                    while pos < r.records.len() {
                        let len = batch::BatchHeader::parse(&r.records[pos..]).unwrap().total_len();
                        let h = batch::validate(&r.records[pos..pos + len]).unwrap();
                        assert_eq!(&r.records[pos + 8..pos + len], &sent[h.base_offset as usize][8..]);
                        next = h.last_offset() + 1;
                        seen += 1;
                        pos += len;
                    }
                }
                assert_eq!(seen, 32, "clean={clean} round {round}");
            }
            log.close().await.unwrap();
        }
    });
}

/// The chunk cache reads ahead: after a read of the first chunk the next one is loaded in the
/// background. A truncation while that load may be in flight must not leave its (now stale)
/// bytes cached: batches appended after the truncation read back as appended.
#[test]
fn read_ahead_loads_the_next_chunk_and_never_outlives_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig { index_interval_bytes: 64 * 1024, ..LogConfig::default() };
        let batch_of = |tag: u8| {
            let mut p = vec![tag; 110 * 1024];
            p[1] = tag.wrapping_mul(3);
            batch::build(&[Record { key: None, value: &p }], 1_700_000_000_000 + tag as i64)
        };
        let (log, _) = PartitionLog::open(&d, "t-0", cfg, false).await.unwrap();
        for i in 0..32u8 {
            let b = batch_of(i);
            let info = log.append(&b, &batch::validate(&b).unwrap(), None).unwrap();
            log.wait_durable(&info).await.unwrap();
        }
        log.close().await.unwrap();
        drop(log);

        // A restart, so reads come from the file through the cache, not the in-memory tail.
        let (mut log, _) = PartitionLog::open(&d, "t-0", cfg, false).await.unwrap();
        let held0 = sluice_storage::cache::held_bytes();
        let r = log.read(Offset(0), 64 * 1024).await.unwrap();
        assert!(!r.records.is_empty());
        let mut held = held0;
        for _ in 0..200 {
            held = sluice_storage::cache::held_bytes();
            if held >= held0 + 2 * (1 << 20) {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(held >= held0 + 2 * (1 << 20), "chunk 1 was not read ahead: {held} bytes cached");

        // Read chunk 1 (starting the read-ahead of chunk 2), then truncate into chunk 1 at once.
        let r = log.read(Offset(12), 64 * 1024).await.unwrap();
        assert!(!r.records.is_empty());
        log.truncate_to(Offset(9)).await.unwrap();
        let mut want: Vec<Vec<u8>> = (0..9u8).map(batch_of).collect();
        for i in 0..23u8 {
            let b = batch_of(100 + i);
            let info = log.append(&b, &batch::validate(&b).unwrap(), None).unwrap();
            log.wait_durable(&info).await.unwrap();
            want.push(b);
        }
        // Read back in this instance (where a stale cached chunk would be served), then after a
        // restart.
        for phase in 0..2 {
            if phase == 1 {
                log.close().await.unwrap();
                log = PartitionLog::open(&d, "t-0", cfg, true).await.unwrap().0;
            }
            check(&log, &want, phase).await;
        }
        log.close().await.unwrap();
    });
}

async fn check(log: &PartitionLog, want: &[Vec<u8>], phase: i32) {
    for round in 0..2 {
        let mut next = 0i64;
        for _ in 0..1000 {
            if next >= 32 {
                break;
            }
            let r = log.read(Offset(next), 300 * 1024).await.unwrap();
            let mut pos = 0;
            while pos < r.records.len() {
                let len = batch::BatchHeader::parse(&r.records[pos..]).unwrap().total_len();
                let h = batch::validate(&r.records[pos..pos + len]).unwrap();
                let w = &want[h.base_offset as usize];
                assert_eq!(
                    &r.records[pos + 8..pos + len],
                    &w[8..],
                    "offset {} (phase {phase} round {round})",
                    h.base_offset
                );
                next = h.last_offset() + 1;
                pos += len;
            }
        }
        assert_eq!(next, 32, "phase {phase} round {round}");
    }
}
