//! Real-file tests of the CRC-32C checks on reads: a batch damaged on disk while the log was
//! closed is never served (however often it is read, cached or not), and bytes checked once
//! are not checked again while their chunk stays cached. A sealed segment's time index
//! points inside it (else the next start rebuilds its index, stopping at damage). A damaged
//! batch's last offset is not taken for a gap compaction left.

use sluice_core::batch::{self, Record};
use sluice_core::Offset;
use sluice_storage::{LogConfig, PartitionLog};

mod common;
use common::run;

/// A batch of 3 records of 2,000 bytes each, all bytes `tag`.
fn batch_of(tag: u8) -> Vec<u8> {
    let payload = vec![tag; 2000];
    let recs: Vec<Record<'_>> = (0..3).map(|_| Record { key: Some(b"k"), value: &payload }).collect();
    batch::build(&recs, 1_700_000_000_000 + i64::from(tag))
}

fn small_segments() -> LogConfig {
    LogConfig { segment_bytes: 64 * 1024, ..LogConfig::default() }
}

/// Appends 40 batches (3 records each), each durable before the next, so that the log rolls
/// at `segment.bytes` between them (a tail written in one go rolls only after it); returns
/// their sizes.
async fn append_all(log: &PartitionLog) -> Vec<usize> {
    let mut sizes = Vec::new();
    for tag in 0..40u8 {
        let b = batch_of(tag);
        let h = batch::validate(&b).unwrap();
        let appended = log.append(&b, &h, None).unwrap();
        log.wait_durable(&appended).await.unwrap();
        sizes.push(b.len());
    }
    assert!(log.segment_count() > 2, "the log rolled");
    sizes
}

/// Base offsets of the batches in `records`, each checked whole and CRC-valid.
fn bases(records: &[u8]) -> Vec<i64> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let len = batch::BatchHeader::parse(&records[pos..]).expect("a batch header").total_len();
        let h = batch::validate(&records[pos..pos + len]).expect("a served batch is valid");
        out.push(h.base_offset);
        pos += len;
    }
    out
}

#[test]
fn a_batch_damaged_while_closed_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        let sizes = append_all(&log).await;
        log.close().await.unwrap();
        drop(log);
        // Batch 4 (offsets 12..=14) lies in the first segment, sealed: flip a byte of its
        // first record's value, which its CRC-32C covers.
        let first = d.join("00000000000000000000.log");
        let mut bytes = std::fs::read(&first).unwrap();
        let at = sizes[..4].iter().sum::<usize>() + 200;
        assert!(at < bytes.len(), "batch 4 is in the first segment");
        bytes[at] ^= 0x40;
        std::fs::write(&first, &bytes).unwrap();
        let (log, cut) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        assert_eq!(cut, 0, "a clean start does not rescan sealed segments");
        assert_eq!(log.high_watermark(), Offset(120));
        // A read from before the damaged batch answers the batches before it only; a read
        // that starts at it fails. Each time: a failed check is not remembered as a pass.
        for _ in 0..3 {
            for from in [0, 5] {
                let r = log.read(Offset(from), usize::MAX).await.unwrap();
                assert_eq!(bases(&r.records), (from / 3..4).map(|b| b * 3).collect::<Vec<_>>(), "from {from}");
            }
            for from in [12, 14] {
                let r = log.read(Offset(from), usize::MAX).await;
                let e = r.expect_err("a damaged batch was served");
                assert!(e.to_string().contains("damaged on disk"), "{e}");
            }
        }
        // Batches before it and after it are served.
        let r = log.read(Offset(0), 1).await.unwrap();
        assert_eq!(bases(&r.records), vec![0]);
        let r = log.read(Offset(15), 1).await.unwrap();
        assert_eq!(bases(&r.records)[0], 15);
        log.close().await.unwrap();
    });
}

#[test]
fn a_damaged_last_offset_is_not_taken_for_a_compacted_gap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        let sizes = append_all(&log).await;
        log.close().await.unwrap();
        drop(log);
        // Batch 4 (offsets 12..=14), in the sealed first segment: its lastOffsetDelta (header
        // bytes 23..27, covered by the CRC-32C) damaged from 2 to 0, so that it looks like
        // offsets 12..=12 followed by a gap (13, 14) compaction could have left.
        let first = d.join("00000000000000000000.log");
        let mut bytes = std::fs::read(&first).unwrap();
        let at = sizes[..4].iter().sum::<usize>();
        assert_eq!(bytes[at + 23..at + 27], [0, 0, 0, 2], "batch 4's lastOffsetDelta");
        bytes[at + 26] = 0;
        std::fs::write(&first, &bytes).unwrap();
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        for from in [13, 14] {
            let r = log.read(Offset(from), usize::MAX).await;
            let e = r.expect_err("offsets hidden by damage were skipped as compacted");
            assert!(e.to_string().contains("damaged on disk"), "{e}");
        }
        let r = log.read(Offset(15), 1).await.unwrap();
        assert_eq!(bases(&r.records)[0], 15);
        log.close().await.unwrap();
    });
}

#[test]
fn bytes_checked_once_are_not_checked_again_while_cached() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        append_all(&log).await;
        log.close().await.unwrap();
        drop(log);
        // Reopened: every segment is read back from the device.
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        let checked = || sluice_storage::stats::snapshot().bytes_crc_checked;
        let before = checked();
        // Offset 36 is in the second segment (11 batches of 6,091 bytes fill 64 KiB), not at
        // its end: the read answers several batches of one segment.
        let first = log.read(Offset(36), usize::MAX).await.unwrap();
        let served = bases(&first.records);
        assert!(served.len() >= 2, "one read answers several batches ({served:?})");
        let once = checked() - before;
        assert!(once >= first.records.len() as u64, "bytes read from the device were checked ({once})");
        for _ in 0..5 {
            let again = log.read(Offset(36), usize::MAX).await.unwrap();
            assert_eq!(again.records, first.records);
        }
        assert_eq!(checked() - before, once, "bytes read again from the cache were checked again");
        // A read of a part of what was checked is not checked either.
        let part = log.read(Offset(served[1]), 1).await.unwrap();
        assert_eq!(bases(&part.records), vec![served[1]]);
        assert_eq!(checked() - before, once);
        log.close().await.unwrap();
    });
}

#[test]
fn a_sealed_segments_time_index_points_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", small_segments(), false).await.unwrap();
        append_all(&log).await;
        log.close().await.unwrap();
        let mut bases: Vec<i64> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        bases.sort();
        assert!(bases.len() > 2, "the log rolled");
        for w in bases.windows(2) {
            let (base, next) = (w[0], w[1]);
            let times = std::fs::read(d.join(format!("{base:020}.timeindex"))).unwrap();
            assert!(!times.is_empty() && times.len().is_multiple_of(12), "segment {base}: {} bytes", times.len());
            let last = &times[times.len() - 12..];
            let ts = i64::from_be_bytes(last[..8].try_into().unwrap());
            let rel = i64::from(u32::from_be_bytes(last[8..].try_into().unwrap()));
            assert!(base + rel < next, "segment {base}..{next}: its time index ends at offset {}", base + rel);
            // Batch b holds offsets 3b..3b+2 with timestamp base + b: the last one's is largest.
            let tag = (next - 1) / 3;
            assert_eq!((ts, base + rel), (1_700_000_000_000 + tag, tag * 3), "segment {base}..{next}");
        }
    });
}
