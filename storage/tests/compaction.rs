//! Log compaction on segments the real engine wrote: keyed records with many overwrites and
//! tombstones are appended with a small `segment.bytes`, the sealed segments are cleaned
//! (storage/src/compact) and swapped in on the real disk, and what remains is checked: the last
//! record of each key in the cleaned range, at its original offset, tombstones kept at their
//! first cleaning (which stamps their delete horizon) and removed by a pass after it, offsets
//! increasing with gaps, every batch CRC-valid.

use sluice_core::batch::{self, compute_crc, Record};
use sluice_storage::codec::uncompressed;
use sluice_storage::compact::clean::{clean_segment, delete_horizon, CleanContext};
use sluice_storage::compact::keymap::KeyMap;
use sluice_storage::compact::swap::{swap_in, NewSegment, SWAP_MARKER};
use sluice_storage::compact::txn::CleanedTxns;
use sluice_storage::compact::{batches, plan, CompactionConfig, SegmentInfo};
use sluice_storage::{Disk, LogConfig, PartitionLog};
use std::collections::BTreeMap;

mod common;
use common::run;

const KEYS: usize = 12;
const ROUNDS: usize = 40;
const TS: i64 = 1_700_000_000_000;

/// One record `key` → `value`, or a tombstone (null value) when `value` is None.
fn one(key: &str, value: Option<&str>, ts: i64) -> Vec<u8> {
    let mut b = batch::build(&[Record { key: Some(key.as_bytes()), value: value.unwrap_or("").as_bytes() }], ts);
    if value.is_none() {
        // The empty value's length varint (0) is the record's second to last byte: -1 (zigzag 1)
        // has the same size.
        let at = b.len() - 2;
        assert_eq!(b[at], 0);
        b[at] = 1;
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    b
}

/// (offset, key, value) of every record in a segment's bytes.
fn records(seg: &[u8]) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    for (h, b) in batches(seg).unwrap() {
        let plain = uncompressed(b, &h).unwrap();
        for r in batch::records(&plain).unwrap() {
            let s = |x: &[u8]| String::from_utf8(x.to_vec()).unwrap();
            out.push((h.base_offset + i64::from(r.offset_delta), s(r.key.unwrap()), r.value.map(s)));
        }
    }
    out
}

#[test]
fn overwrites_and_tombstones_leave_the_last_value_per_key() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t-0");
    run(move || async move {
        let config = LogConfig { segment_bytes: 4 * 1024, index_interval_bytes: 512, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&dir, "t-0", config, false).await.unwrap();
        // Round r writes k<i> = "r<r>-k<i>"; keys 0 and 1 get a tombstone in round 20, key 1
        // a new value after it; tombstones of key 0 are old (ts), later ones recent.
        let mut last = None;
        for r in 0..ROUNDS {
            for k in 0..KEYS {
                let key = format!("k{k}");
                let value = format!("r{r}-k{k}");
                let tomb = r == 20 && k < 2 || r > 20 && k == 0;
                let ts = TS + i64::try_from(r).unwrap();
                let b = one(&key, (!tomb).then_some(value.as_str()), ts);
                let h = batch::validate(&b).unwrap();
                last = Some(log.append(&b, &h, None).unwrap());
            }
            log.wait_durable(last.as_ref().unwrap()).await.unwrap();
        }
        log.close().await.unwrap();
        drop(log);

        let names = common::segment_names(&dir);
        assert!(names.len() >= 4, "small segments: {names:?}");
        let sealed: Vec<(i64, Vec<u8>)> = names[..names.len() - 1]
            .iter()
            .map(|n| (n.trim_end_matches(".log").parse().unwrap(), std::fs::read(dir.join(n)).unwrap()))
            .collect();
        let active_base: i64 = names.last().unwrap().trim_end_matches(".log").parse().unwrap();

        // The plan: a fresh log is all dirty; it is cleaned up to the active segment.
        let infos: Vec<SegmentInfo> = sealed
            .iter()
            .map(|(base, bytes)| {
                let ts: Vec<i64> = batches(bytes).unwrap().iter().map(|(h, _)| h.max_timestamp).collect();
                SegmentInfo {
                    base: *base,
                    bytes: u64::try_from(bytes.len()).unwrap(),
                    first_ts: *ts.iter().min().unwrap(),
                    max_ts: *ts.iter().max().unwrap(),
                }
            })
            .collect();
        let cfg = CompactionConfig { min_compaction_lag_ms: 0, ..CompactionConfig::default() };
        let p = plan(&infos, active_base, sealed[0].0, None, TS + 1_000, &cfg).unwrap();
        assert_eq!((p.first_dirty, p.clean_upto), (sealed[0].0, active_base));

        let mut map = KeyMap::new();
        let mut txns = CleanedTxns::default();
        for (_, bytes) in &sealed {
            assert!(map.add_segment(bytes, &mut txns).unwrap());
        }
        // The first cleaning keeps every latest tombstone and stamps its batch with the delete
        // horizon now + delete.retention.ms, however old the tombstone's own timestamp.
        let now = TS + 1_000;
        let producers = std::collections::HashMap::new();
        let ctx = CleanContext {
            map: &map,
            now_ms: now,
            delete_retention_ms: 970,
            upper_bound: i64::MAX,
            producers: &producers,
            raft: false,
        };
        let mut new_segments = Vec::new();
        let mut kept = Vec::new();
        let mut txns = CleanedTxns::default();
        for (base, bytes) in &sealed {
            let out = clean_segment(bytes, &ctx, &mut txns).unwrap();
            assert!(out.bytes.len() <= bytes.len());
            kept.extend(records(&out.bytes));
            // Every batch is CRC-valid and keeps an original batch's base and last offset.
            let before: Vec<(i64, i64)> =
                batches(bytes).unwrap().iter().map(|(h, _)| (h.base_offset, h.last_offset())).collect();
            for (h, b) in batches(&out.bytes).unwrap() {
                batch::validate(b).unwrap();
                assert!(before.contains(&(h.base_offset, h.last_offset())));
                let tombstones = records(b).iter().any(|r| r.2.is_none());
                assert_eq!(delete_horizon(&h), tombstones.then_some(now + 970), "batch at {}", h.base_offset);
            }
            new_segments.push(NewSegment::with_indexes(*base, out.bytes, 512).unwrap());
        }
        // Expected: the last record of each key in the sealed range, tombstones included.
        let all: Vec<_> = sealed.iter().flat_map(|(_, b)| records(b)).collect();
        let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
        for (o, k, v) in &all {
            latest.insert(k.clone(), (*o, v.clone()));
        }
        let mut expected: Vec<(i64, String, Option<String>)> =
            latest.into_iter().map(|(k, (o, v))| (o, k, v)).collect();
        expected.sort();
        assert_eq!(kept, expected);
        assert!(kept.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
        assert!(kept.len() < all.len() / 4, "most records went: {} of {}", kept.len(), all.len());
        assert!(kept.iter().any(|(_, k, v)| k == "k0" && v.is_none()), "the tombstone stays at its first cleaning");
        // A pass at the horizon removes the tombstones and nothing else; one before it nothing.
        let mut map2 = KeyMap::new();
        let cleaned: Vec<Vec<u8>> = new_segments.iter().map(|s| s.log.clone()).collect();
        for b in &cleaned {
            assert!(map2.add_segment(b, &mut CleanedTxns::default()).unwrap());
        }
        let again = |now_ms| {
            let ctx = CleanContext {
                map: &map2,
                now_ms,
                delete_retention_ms: 970,
                upper_bound: i64::MAX,
                producers: &producers,
                raft: false,
            };
            let mut t = CleanedTxns::default();
            cleaned.iter().flat_map(|b| records(&clean_segment(b, &ctx, &mut t).unwrap().bytes)).collect::<Vec<_>>()
        };
        assert_eq!(again(now + 969), kept);
        let live: Vec<_> = kept.iter().filter(|r| r.2.is_some()).cloned().collect();
        assert!(live.len() < kept.len());
        assert_eq!(again(now + 970), live);

        // Swap them in on the real disk: the files hold the cleaned bytes, nothing is left over.
        let olds: Vec<Vec<u8>> =
            new_segments.iter().map(|s| std::fs::read(dir.join(format!("{:020}.log", s.base))).unwrap()).collect();
        let kept_files = swap_in(&Disk::Real, &dir, &new_segments, &[]).await.unwrap();
        // Each replaced log file is kept under a `.deleted` name, for the reclaiming task.
        assert_eq!(kept_files.len(), new_segments.len());
        for ((base, path), (s, old)) in kept_files.iter().zip(new_segments.iter().zip(&olds)) {
            assert_eq!(*base, s.base);
            assert!(path.to_str().unwrap().ends_with(".deleted"));
            assert_eq!(&std::fs::read(path).unwrap(), old);
        }
        for s in &new_segments {
            assert_eq!(std::fs::read(dir.join(format!("{:020}.log", s.base))).unwrap(), s.log);
            assert_eq!(std::fs::read(dir.join(format!("{:020}.index", s.base))).unwrap(), s.index);
        }
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cleaned") || n == SWAP_MARKER)
            .collect();
        assert!(left.is_empty(), "{left:?}");
    });
}

/// Every record the log serves from its start, through `PartitionLog::read`.
async fn read_all(log: &PartitionLog, what: &str) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut next = log.log_start().0;
    for _ in 0..10_000 {
        if next >= log.high_watermark().0 {
            break;
        }
        let r = log.read(sluice_core::Offset(next), 1 << 20).await.unwrap();
        assert!(
            !r.records.is_empty(),
            "{what}: an empty read at {next} below the high watermark {:?}: {:?}",
            r.high_watermark,
            log.segment_sizes()
        );
        for (h, _) in batches(&r.records).unwrap() {
            assert!(h.last_offset() >= next, "a batch before the offset asked for");
            next = h.last_offset() + 1;
        }
        out.extend(records(&r.records));
    }
    out
}

#[test]
fn a_live_log_compacts_serves_gaps_and_reopens() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t-0");
    run(move || async move {
        let config = LogConfig {
            segment_bytes: 4 * 1024,
            index_interval_bytes: 512,
            file_delete_delay_ms: 0,
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(&dir, "t-0", config, false).await.unwrap();
        let mut last = None;
        for r in 0..ROUNDS {
            for k in 0..KEYS {
                let value = format!("r{r}-k{k}");
                let tomb = r == 20 && k < 2 || r > 20 && k == 0;
                let b = one(&format!("k{k}"), (!tomb).then_some(value.as_str()), TS + i64::try_from(r).unwrap());
                last = Some(log.append(&b, &batch::validate(&b).unwrap(), None).unwrap());
            }
            log.wait_durable(last.as_ref().unwrap()).await.unwrap();
        }
        let before = read_all(&log, "before").await;
        assert_eq!(before.len(), ROUNDS * KEYS);
        let cfg = CompactionConfig {
            min_compaction_lag_ms: 0,
            delete_retention_ms: 970,
            min_cleanable_dirty_ratio: 0.5,
            ..CompactionConfig::default()
        };
        let now = TS + 1_000; // tombstones' delete horizon: now + 970
        let sizes_before = log.segment_sizes();
        let stats = log.compact(&cfg, now).await.unwrap().expect("a fresh log is due a pass");
        assert!(stats.segments_rewritten > 0 && stats.records_removed > 0, "{stats:?}");
        // The cleaned segments, a few hundred bytes each, merge into as few as 4 KiB holds.
        let sizes = log.segment_sizes();
        assert!(stats.segments_merged > 0, "{stats:?}");
        // (A roll in the background may have added an empty active segment meanwhile.)
        assert!(sizes.len() + stats.segments_merged <= sizes_before.len() + 1, "{sizes_before:?} -> {sizes:?}");
        assert!(sizes.len() < sizes_before.len(), "{sizes_before:?} -> {sizes:?}");
        assert!(sizes[0] <= 4 * 1024, "{sizes:?}");
        // A segment sealed in the background after the first pass makes a second one due; then
        // nothing is dirty enough.
        let mut upto = stats.cleaned_upto;
        let mut passes = 1;
        for _ in 0..5 {
            match log.compact(&cfg, now).await.unwrap() {
                Some(s) => {
                    assert_eq!(s.first_dirty, upto, "a pass starts where the previous ended");
                    upto = s.cleaned_upto;
                    passes += 1;
                }
                None => break,
            }
        }
        assert!(passes <= 3, "{passes} passes");
        assert_eq!(log.compact(&cfg, now).await.unwrap(), None);
        let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
        for (o, k, v) in before.iter().filter(|(o, _, _)| *o < upto) {
            latest.insert(k.clone(), (*o, v.clone()));
        }
        // Every tombstone stays at its first cleaning, whatever its own timestamp.
        let mut expected: Vec<_> = latest.into_iter().map(|(k, (o, v))| (o, k, v)).collect();
        expected.sort();
        expected.extend(before.iter().filter(|(o, _, _)| *o >= upto).cloned());
        assert_eq!(read_all(&log, "after").await, expected, "after the pass");
        // The replaced and merged-away files, kept under `.deleted` names, are freed.
        let deleted = || {
            let names = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok());
            names.filter(|n| n.ends_with(".deleted")).count()
        };
        for _ in 0..500 {
            if deleted() == 0 {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(deleted(), 0, "deleted segment files left after 5 s");
        assert_eq!(read_all(&log, "after").await, expected, "after the old files were freed");
        // A read at an offset compaction removed answers the next batch kept.
        let removed = (0..upto).find(|o| !expected.iter().any(|e| e.0 == *o)).unwrap();
        let r = log.read(sluice_core::Offset(removed), 1 << 20).await.unwrap();
        let first = batches(&r.records).unwrap()[0].0;
        assert!(first.last_offset() > removed);
        log.close().await.unwrap();
        drop(log);
        // Reopened (not clean: every index loaded or rescanned), the log serves the same.
        let (log, _) = PartitionLog::open(&dir, "t-0", config, false).await.unwrap();
        assert_eq!(read_all(&log, "reopened").await, expected, "after reopening");
        // The cleaner checkpoint: the reopened log resumes where the last pass ended, so
        // nothing is due (without it the whole sealed part would be dirty again).
        assert_eq!(std::fs::read_to_string(dir.join("cleaner-offset-checkpoint")).unwrap(), format!("{upto}\n"));
        assert_eq!(log.compact(&cfg, now).await.unwrap(), None, "a restart cleans nothing again");
        // More records roll more segments after the merged one (below, its index goes).
        for r in 0..10i64 {
            for k in 0..KEYS {
                let b = one(&format!("k{k}"), Some("more"), TS + r);
                last = Some(log.append(&b, &batch::validate(&b).unwrap(), None).unwrap());
            }
            log.wait_durable(last.as_ref().unwrap()).await.unwrap();
        }
        let more = read_all(&log, "more").await;
        assert_eq!(more[..expected.len()], expected[..]);
        let expected = more;
        // Rescanning a cleaned sealed segment (its index lost) keeps every batch past the gaps.
        log.close().await.unwrap();
        drop(log);
        // (The last sealed segment keeps its index: an empty active segment after a sealed one
        // without index files is taken for an interrupted roll, and removed.)
        let mut indexes: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".index"))
            .map(|e| e.path())
            .collect();
        indexes.sort();
        indexes.pop();
        assert!(indexes.len() >= 2, "the merged segment and one after it: {indexes:?}");
        for p in indexes {
            std::fs::remove_file(p).unwrap();
        }
        let (log, _) = PartitionLog::open(&dir, "t-0", config, false).await.unwrap();
        assert_eq!(read_all(&log, "rebuilt").await, expected, "after rebuilding the indexes");
        // A truncation below the checkpoint takes it back: the offsets appended again are dirty.
        let cut = expected.iter().map(|e| e.0).filter(|o| *o < upto).nth(2).unwrap();
        log.truncate_to(sluice_core::Offset(cut)).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("cleaner-offset-checkpoint")).unwrap(), format!("{cut}\n"));
        for r in 0..ROUNDS {
            for k in 0..KEYS {
                let b = one(&format!("k{k}"), Some("again"), TS + i64::try_from(r).unwrap());
                last = Some(log.append(&b, &batch::validate(&b).unwrap(), None).unwrap());
            }
            log.wait_durable(last.as_ref().unwrap()).await.unwrap();
        }
        let stats = log.compact(&cfg, now).await.unwrap().expect("the appended segments are dirty");
        assert_eq!(stats.first_dirty, cut, "{stats:?}");
        log.close().await.unwrap();
    });
}

/// A transactional record of producer `pid` (epoch 0) with sequence `seq`.
fn txn_one(key: &str, value: &str, pid: i64, seq: i32, ts: i64) -> Vec<u8> {
    let mut b = one(key, Some(value), ts);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A COMMIT (`commit`) or ABORT marker of producer `pid` (epoch 0), as the coordinator writes it.
fn txn_marker(pid: i64, commit: bool, ts: i64) -> Vec<u8> {
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&i16::from(commit).to_be_bytes());
    let mut b = batch::build(&[Record { key: Some(&key), value: &[0u8; 6] }], ts);
    b[21..23].copy_from_slice(&0x30i16.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// (offset, is a control batch, record count) of every batch the log serves.
async fn batch_shapes(log: &PartitionLog) -> Vec<(i64, bool, i32)> {
    let mut out = Vec::new();
    let mut next = log.log_start().0;
    for _ in 0..10_000 {
        if next >= log.high_watermark().0 {
            break;
        }
        let r = log.read(sluice_core::Offset(next), 1 << 20).await.unwrap();
        for (h, _) in batches(&r.records).unwrap() {
            out.push((h.base_offset, h.is_control(), h.records_count));
            next = h.last_offset() + 1;
        }
    }
    out
}

#[test]
fn aborted_transactions_go_committed_ones_stay_and_open_ones_bound_the_pass() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t-0");
    run(move || async move {
        let config = LogConfig { segment_bytes: 2 * 1024, index_interval_bytes: 512, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&dir, "t-0", config, false).await.unwrap();
        let append = |b: Vec<u8>| log.append(&b, &batch::validate(&b).unwrap(), None).unwrap();
        // Fillers, each durable before the next (segments roll between writes).
        let fill = async |from: usize, n: usize| {
            for i in from..from + n {
                let a = append(one(&format!("f{i}"), Some("filler-value-filler-value"), TS));
                log.wait_durable(&a).await.unwrap();
            }
        };
        // Plain k0..k3 = "plain"; producer 1 overwrites them in a transaction it aborts;
        // producer 2 overwrites k0, k1 in one it commits; producer 3 writes k3 in one still open.
        for k in 0..4 {
            append(one(&format!("k{k}"), Some("plain"), TS));
        }
        for k in 0..4i32 {
            append(txn_one(&format!("k{k}"), "aborted", 1, k, TS));
        }
        let abort_at = append(txn_marker(1, false, TS)).base_offset.0;
        for k in 0..2i32 {
            append(txn_one(&format!("k{k}"), "committed", 2, k, TS));
        }
        append(txn_marker(2, true, TS));
        fill(0, 60).await;
        let open_first = append(txn_one("k3", "open", 3, 0, TS)).base_offset.0;
        fill(60, 60).await;
        assert!(log.segment_sizes().len() >= 4, "{:?}", log.segment_sizes());
        let cfg = CompactionConfig {
            min_compaction_lag_ms: 0,
            delete_retention_ms: 100,
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionConfig::default()
        };
        let now = TS + 1_000;
        let stats = log.compact(&cfg, now).await.unwrap().expect("a pass");
        assert!(stats.cleaned_upto <= open_first, "the pass ends before the open transaction: {stats:?}");
        let values = |recs: &[(i64, String, Option<String>)]| -> BTreeMap<String, String> {
            recs.iter().filter(|r| r.1.starts_with('k')).map(|r| (r.1.clone(), r.2.clone().unwrap())).collect()
        };
        let after = read_all(&log, "after").await;
        assert!(!after.iter().any(|r| r.2.as_deref() == Some("aborted")), "aborted records removed");
        let mut want: BTreeMap<String, String> =
            [("k0", "committed"), ("k1", "committed"), ("k2", "plain"), ("k3", "open")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(values(&after), want, "an aborted overwrite does not hide the value before it");
        // The aborted transaction's last batch is producer 1's last entry: kept, emptied (its
        // sequence and epoch survive); so its ABORT marker stays too (a batch of it is left).
        let marker_at = |shapes: &[(i64, bool, i32)], o: i64| shapes.iter().any(|s| s.0 == o && s.1);
        let shapes = batch_shapes(&log).await;
        assert!(shapes.contains(&(abort_at - 1, false, 0)), "{shapes:?}");
        assert!(marker_at(&shapes, abort_at));
        // Producer 1 writes on (idempotent, not transactional); producer 3 commits; more data
        // seals both: the next passes clean past the formerly open transaction, remove the
        // emptied batch, then stamp the ABORT marker, which goes at the first pass past its
        // horizon. The COMMIT markers stay (their data does).
        let mut p1 = one("k9", Some("p1"), TS);
        p1[43..51].copy_from_slice(&1i64.to_be_bytes());
        p1[51..53].copy_from_slice(&0i16.to_be_bytes());
        p1[53..57].copy_from_slice(&4i32.to_be_bytes());
        let crc = compute_crc(&p1);
        p1[17..21].copy_from_slice(&crc.to_be_bytes());
        append(p1);
        want.insert("k9".into(), "p1".into());
        append(txn_marker(3, true, TS));
        fill(120, 60).await;
        let s2 = log.compact(&cfg, now).await.unwrap().expect("dirty again");
        assert!(s2.cleaned_upto > open_first, "{s2:?}");
        let shapes = batch_shapes(&log).await;
        assert!(!shapes.iter().any(|s| s.0 == abort_at - 1), "{shapes:?}");
        assert!(marker_at(&shapes, abort_at), "kept in the pass that removed its last batch");
        fill(180, 60).await;
        log.compact(&cfg, now).await.unwrap().expect("dirty again");
        assert!(marker_at(&batch_shapes(&log).await, abort_at), "stamped, not removed before its horizon");
        fill(240, 60).await;
        log.compact(&cfg, now + 100).await.unwrap().expect("dirty again");
        let shapes = batch_shapes(&log).await;
        assert!(!marker_at(&shapes, abort_at), "the ABORT marker went after its horizon: {shapes:?}");
        let commits = shapes.iter().filter(|s| s.1).count();
        assert_eq!(commits, 2, "the COMMIT markers stay: {shapes:?}");
        assert_eq!(values(&read_all(&log, "later").await), want);
        // Reopened after a crash-like close: the same.
        log.close().await.unwrap();
        drop(log);
        let (log, _) = PartitionLog::open(&dir, "t-0", config, false).await.unwrap();
        assert_eq!(values(&read_all(&log, "reopened").await), want);
        log.close().await.unwrap();
    });
}

/// A pass over megabytes of segments lets the executor's other tasks run while it works
/// (`compact::Pace`: a short sleep after every slice of work). On the simulated disk, whose
/// operations complete at once, a pass that never paused would go from start to end without
/// another task of its executor getting the thread (glommio yields only when a task awaits
/// something pending, or after its 100 ms preemption timer).
#[test]
fn a_pass_lets_the_executors_other_tasks_run() {
    use sluice_storage::disk::sim::SimDisk;
    use std::cell::Cell;
    use std::rc::Rc;
    run(|| async {
        let disk = Disk::Sim(SimDisk::new());
        let dir = std::path::Path::new("/sim/t-0");
        let config = LogConfig { segment_bytes: 1 << 20, index_interval_bytes: 4096, ..LogConfig::default() };
        let (log, _) = PartitionLog::open_on(&disk, dir, "t-0", config, false).await.unwrap();
        // About 4 MiB: batches of 32 records of 100 bytes over 16 keys.
        let value = vec![7u8; 100];
        let keys: Vec<String> = (0..16).map(|k| format!("k{k}")).collect();
        let mut last = None;
        for i in 0..1_000i64 {
            let recs: Vec<Record<'_>> =
                (0..32).map(|j| Record { key: Some(keys[j % 16].as_bytes()), value: &value }).collect();
            let b = batch::build(&recs, TS + i);
            last = Some(log.append(&b, &batch::validate(&b).unwrap(), None).unwrap());
            if i % 100 == 99 {
                log.wait_durable(last.as_ref().unwrap()).await.unwrap();
            }
        }
        log.wait_durable(last.as_ref().unwrap()).await.unwrap();
        assert!(log.segment_sizes().len() >= 3, "sealed segments to clean: {:?}", log.segment_sizes());
        let (ticks, done) = (Rc::new(Cell::new(0u32)), Rc::new(Cell::new(false)));
        let ticker = glommio::spawn_local({
            let (ticks, done) = (ticks.clone(), done.clone());
            async move {
                // Bounded: the pass ends long before 600 s of 100 µs sleeps.
                for _ in 0..6_000_000 {
                    glommio::timer::sleep(std::time::Duration::from_micros(100)).await;
                    if done.get() {
                        return;
                    }
                    ticks.set(ticks.get() + 1);
                }
            }
        });
        let cfg = CompactionConfig {
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
            ..CompactionConfig::default()
        };
        let stats = log.compact(&cfg, TS + 1_000).await.unwrap().expect("a fresh log is due a pass");
        done.set(true);
        ticker.await;
        assert!(stats.bytes_read >= 2 << 20 && stats.records_removed > 0, "{stats:?}");
        assert!(ticks.get() > 0, "another task ran while the pass cleaned {} bytes", stats.bytes_read);
        log.close().await.unwrap();
    });
}

/// A plain record `key` → `prefix` padded with 'x' to make a batch of exactly `n` bytes.
fn exact(key: &str, prefix: &str, n: usize) -> Vec<u8> {
    for pad in (n.saturating_sub(200)..n).rev() {
        let b = one(key, Some(&format!("{prefix}{}", "x".repeat(pad))), TS);
        if b.len() == n {
            return b;
        }
    }
    panic!("no batch of {n} bytes");
}

/// The pass's transaction scan reads sealed segments by their batch headers
/// (`COMPACTION_SCAN_WINDOW_BYTES` after a large batch, `COMPACTION_READ_CHUNK_BYTES` after a
/// small one) and control batches whole. Here the ABORT marker of a transaction straddles the
/// end of a 1 MiB window (its header inside, its record past it), among batches large and
/// small: the aborted record must still go, and the value it overwrote stay.
#[test]
fn the_header_scan_finds_a_marker_across_its_window_end() {
    use sluice_core::limits::{COMPACTION_READ_CHUNK_BYTES, COMPACTION_SCAN_WINDOW_BYTES};
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t-0");
    run(move || async move {
        let config = LogConfig { segment_bytes: 2 << 20, index_interval_bytes: 4096, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&dir, "t-0", config, false).await.unwrap();
        let append = |b: Vec<u8>| log.append(&b, &batch::validate(&b).unwrap(), None).unwrap();
        let w = COMPACTION_SCAN_WINDOW_BYTES;
        // [0, 1000): k0 = plain (small: the first window, of w bytes at 0, covers the next header).
        append(exact("k0", "plain", 1000));
        // A small batch across that window's end: the next read is a 1 MiB window at its end.
        let second = w + 464 - 1000;
        assert!(second < w);
        append(exact("f-a", "filler", second));
        let window_at = w + 464;
        // Producer 1 overwrites k0 in a transaction; fillers large and small; its ABORT marker
        // starts 70 bytes before the 1 MiB window's end (a header is 61 bytes, the marker 78).
        let aborted = txn_one("k0", "aborted", 1, 0, TS);
        let marker = txn_marker(1, false, TS);
        assert_eq!(marker.len(), 78);
        let marker_at = window_at + COMPACTION_READ_CHUNK_BYTES - 70;
        let mut pos = window_at + aborted.len();
        append(aborted);
        for i in 0..4 {
            append(exact(&format!("f-b{i}"), "filler", 200_000));
            pos += 200_000;
        }
        append(exact("f-c", "filler", marker_at - pos));
        let abort_at = append(marker).base_offset.0;
        // More after it, so the window is a whole 1 MiB; then enough to seal the segment.
        for i in 0..12 {
            let a = append(exact(&format!("f-d{i}"), "filler", 300_000));
            log.wait_durable(&a).await.unwrap();
        }
        assert!(log.segment_sizes().len() >= 3, "{:?}", log.segment_sizes());
        let cfg = CompactionConfig {
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionConfig::default()
        };
        let stats = log.compact(&cfg, TS + 1_000).await.unwrap().expect("a pass");
        assert!(stats.cleaned_upto > abort_at, "the aborted transaction was seen resolved: {stats:?}");
        let after = read_all(&log, "after").await;
        let k0: Vec<&Option<String>> = after.iter().filter(|r| r.1 == "k0").map(|r| &r.2).collect();
        assert_eq!(k0.len(), 1, "{k0:?}");
        assert!(k0[0].as_deref().is_some_and(|v| v.starts_with("plain")), "the aborted overwrite went");
        assert!(!after.iter().any(|r| r.2.as_deref().is_some_and(|v| v.starts_with("aborted"))));
        log.close().await.unwrap();
    });
}
