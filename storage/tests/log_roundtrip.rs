//! Real-file tests of the partition log: append, durability waits, reads, reopen, torn tails.

use glommio::LocalExecutorBuilder;
use sluice_core::batch::{self, Record};
use sluice_core::Offset;
use sluice_storage::{LogConfig, PartitionLog};
use std::path::Path;

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default().spawn(move || async move { f().await }).unwrap().join().unwrap();
}

fn batch_of(n: usize, tag: u8) -> Vec<u8> {
    let payload = vec![tag; 100 + tag as usize];
    let recs: Vec<Record<'_>> = (0..n).map(|_| Record { key: Some(b"k"), value: &payload }).collect();
    batch::build(&recs, 1_700_000_000_000 + tag as i64)
}

async fn append_all(log: &PartitionLog, count: u8) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    let mut last = None;
    for tag in 0..count {
        let b = batch_of(3, tag);
        let h = batch::validate(&b).unwrap();
        let info = log.append(&b, &h, None).unwrap();
        assert_eq!(info.base_offset, Offset(tag as i64 * 3));
        last = Some(info);
        sent.push(b);
    }
    log.wait_durable(&last.unwrap()).await.unwrap();
    sent
}

fn check_read(all: &[u8], sent: &[Vec<u8>]) {
    let mut pos = 0;
    for (i, s) in sent.iter().enumerate() {
        let h = batch::validate(&all[pos..pos + s.len()]).unwrap();
        assert_eq!(h.base_offset, i as i64 * 3);
        // Identical apart from the stamped base offset.
        assert_eq!(&all[pos + 8..pos + s.len()], &s[8..]);
        pos += s.len();
    }
    assert_eq!(pos, all.len());
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, cut) = PartitionLog::open(&d, "t-0", LogConfig::default(), false).await.unwrap();
        assert_eq!(cut, 0);
        let sent = append_all(&log, 50).await;
        assert_eq!(log.high_watermark(), Offset(150));
        let r = log.read(Offset(0), usize::MAX).await.unwrap();
        check_read(&r.records, &sent);
        // A read from the middle starts at the batch containing the offset.
        let r = log.read(Offset(4), 1).await.unwrap();
        assert_eq!(batch::validate(&r.records).unwrap().base_offset, 3);
        assert!(log.read(Offset(151), 10).await.is_err());
        assert!(log.read(Offset(150), 10).await.unwrap().records.is_empty());
        log.close().await.unwrap();
        drop(log);
        let (log, cut) = PartitionLog::open(&d, "t-0", LogConfig::default(), false).await.unwrap();
        assert_eq!(cut, 0);
        assert_eq!(log.high_watermark(), Offset(150));
        let r = log.read(Offset(0), usize::MAX).await.unwrap();
        check_read(&r.records, &sent);
        let more = batch_of(2, 77);
        let h = batch::validate(&more).unwrap();
        assert_eq!(log.append(&more, &h, None).unwrap().base_offset, Offset(150));
        log.close().await.unwrap();
    });
}

fn corrupt_tail(d: &Path, keep: u64, garbage: &[u8]) {
    let f = d.join("00000000000000000000.log");
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(keep).unwrap();
    use std::io::{Seek, SeekFrom, Write};
    let mut file = file;
    file.seek(SeekFrom::Start(keep)).unwrap();
    file.write_all(garbage).unwrap();
}

#[test]
fn torn_tail_is_cut_at_the_last_valid_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", LogConfig::default(), false).await.unwrap();
        let sent = append_all(&log, 10).await;
        log.close().await.unwrap();
        drop(log);
        let sizes: Vec<u64> = sent.iter().map(|b| b.len() as u64).collect();
        let nine: u64 = sizes[..9].iter().sum();
        // Cut the last batch in half and add garbage.
        corrupt_tail(&d, nine + sizes[9] / 2, b"\x01\x02garbage");
        let (log, cut) = PartitionLog::open(&d, "t-0", LogConfig::default(), false).await.unwrap();
        assert!(cut > 0);
        assert_eq!(log.high_watermark(), Offset(27));
        let r = log.read(Offset(0), usize::MAX).await.unwrap();
        check_read(&r.records, &sent[..9]);
        // Appends continue right after the last valid batch.
        let b = batch_of(1, 200);
        let h = batch::validate(&b).unwrap();
        let info = log.append(&b, &h, None).unwrap();
        assert_eq!(info.base_offset, Offset(27));
        log.wait_durable(&info).await.unwrap();
        log.close().await.unwrap();
        drop(log);
        let (log, cut) = PartitionLog::open(&d, "t-0", LogConfig::default(), false).await.unwrap();
        assert_eq!(cut, 0);
        assert_eq!(log.high_watermark(), Offset(28));
        log.close().await.unwrap();
    });
}

#[test]
fn flipped_byte_inside_a_batch_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", LogConfig::default(), false).await.unwrap();
        let sent = append_all(&log, 4).await;
        log.close().await.unwrap();
        drop(log);
        let f = d.join("00000000000000000000.log");
        let mut bytes = std::fs::read(&f).unwrap();
        let at = sent[0].len() + sent[1].len() + 70;
        bytes[at] ^= 0x40;
        std::fs::write(&f, &bytes).unwrap();
        let (log, cut) = PartitionLog::open(&d, "t-0", LogConfig::default(), false).await.unwrap();
        assert!(cut > 0);
        assert_eq!(log.high_watermark(), Offset(6));
        log.close().await.unwrap();
    });
}

#[test]
fn truncate_to_drops_the_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d, "t-0", LogConfig::default(), false).await.unwrap();
        let sent = append_all(&log, 6).await;
        log.truncate_to(Offset(9)).await.unwrap();
        assert_eq!(log.high_watermark(), Offset(9));
        let r = log.read(Offset(0), usize::MAX).await.unwrap();
        check_read(&r.records, &sent[..3]);
        let b = batch_of(2, 9);
        let h = batch::validate(&b).unwrap();
        assert_eq!(log.append(&b, &h, None).unwrap().base_offset, Offset(9));
        log.close().await.unwrap();
    });
}

/// `batch_of(n, tag)` from an idempotent producer: its id, epoch 0, base sequence `seq`.
fn idempotent_batch(n: usize, tag: u8, producer_id: i64, seq: i32) -> Vec<u8> {
    let mut b = batch_of(n, tag);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn expire_producers_forgets_state_older_than_the_configured_expiration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig { producer_id_expiration_ms: 60_000, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&d, "t-0", config, false).await.unwrap();
        let b = idempotent_batch(2, 1, 7, 0);
        let h = batch::validate(&b).unwrap();
        let first = log.append(&b, &h, None).unwrap();
        assert!(!first.duplicate);
        assert!(log.append(&b, &h, None).unwrap().duplicate, "a retry is deduplicated");
        let now = sluice_core::clock::now_ms();
        assert_eq!(log.expire_producers(now), 0, "within the expiration nothing is removed");
        assert_eq!(log.expire_producers(now + 60_000), 1, "the producer's state is removed at the expiration");
        assert_eq!(log.expire_producers(now + 60_000), 0);
        // Forgotten: the same batch is now a producer without state, so it is appended again.
        let again = log.append(&b, &h, None).unwrap();
        assert!(!again.duplicate);
        assert_eq!(again.base_offset, Offset(2));
        log.wait_durable(&again).await.unwrap();
        log.close().await.unwrap();
    });
}

/// The bytes of the batches in `file` from its start, walking their length fields; panics
/// unless the walk ends exactly at the file's end (no zeros or garbage after the last batch).
fn batch_bytes_to_the_end(file: &Path) -> u64 {
    let bytes = std::fs::read(file).unwrap();
    let mut pos = 0usize;
    while pos + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        assert!(len > 0, "{}: zeros after the batches at {pos}", file.display());
        pos += 12 + len;
    }
    assert_eq!(pos, bytes.len(), "{}: the last batch does not end the file", file.display());
    pos as u64
}

/// Polls (bounded) until the active segment file holds a zero chunk past its `data` bytes (and
/// the padding of their last page): the shard's preparing task wrote it.
async fn wait_for_prepared_space(file: &Path, data: u64) -> u64 {
    let want = data.div_ceil(4096) * 4096 + sluice_core::limits::SEGMENT_PREPARE_CHUNK_BYTES;
    for _ in 0..400 {
        let size = std::fs::metadata(file).unwrap().len();
        if size >= want {
            return size;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{}: no space prepared past {data} bytes within 2 s", file.display());
}

#[test]
fn prepared_space_is_cut_by_recovery_after_a_crash_and_by_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let seg = d.join("00000000000000000000.log");
    let (d1, seg1) = (d.clone(), seg.clone());
    // The executor ends without closing the log: the files are left as a crash leaves them.
    let data: u64 = (0..10u8).map(|t| batch_of(3, t).len() as u64).sum();
    run(move || async move {
        let (log, _) = PartitionLog::open(&d1, "t-0", LogConfig::default(), false).await.unwrap();
        append_all(&log, 10).await;
        wait_for_prepared_space(&seg1, data).await;
        std::mem::forget(log);
    });
    run(move || async move {
        let (log, cut) = PartitionLog::open(&d, "t-0", LogConfig::default(), false).await.unwrap();
        assert_eq!(cut, 0, "zeros past the batches are not a torn tail");
        assert_eq!(log.high_watermark(), Offset(30));
        assert_eq!(batch_bytes_to_the_end(&seg), data, "recovery cut the prepared space");
        let r = log.read(Offset(0), usize::MAX).await.unwrap();
        let expect: Vec<Vec<u8>> = (0..10u8).map(|t| batch_of(3, t)).collect();
        check_read(&r.records, &expect);
        // Appends go on where the batches end, into space prepared again; a clean close cuts it.
        let b = batch_of(2, 99);
        let info = log.append(&b, &batch::validate(&b).unwrap(), None).unwrap();
        assert_eq!(info.base_offset, Offset(30));
        log.wait_durable(&info).await.unwrap();
        wait_for_prepared_space(&seg, data + b.len() as u64).await;
        log.close().await.unwrap();
        assert_eq!(batch_bytes_to_the_end(&seg), data + b.len() as u64);
    });
}

#[test]
fn a_sealed_segment_ends_at_its_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig { segment_bytes: 4096, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&d, "t-0", config, false).await.unwrap();
        for tag in 0..60u8 {
            let b = batch_of(3, tag);
            let info = log.append(&b, &batch::validate(&b).unwrap(), None).unwrap();
            // One durable batch at a time, with pauses for the preparing task between.
            log.wait_durable(&info).await.unwrap();
            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
        }
        let mut logs: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        assert!(logs.len() >= 5, "rolled {} times", logs.len() - 1);
        let active = logs.pop().unwrap();
        let sealed: u64 = logs.iter().map(|p| batch_bytes_to_the_end(p)).sum();
        assert!(std::fs::metadata(&active).unwrap().len() > 0);
        log.close().await.unwrap();
        drop(log);
        let all = sealed + batch_bytes_to_the_end(&active);
        let expect: u64 = (0..60u8).map(|t| batch_of(3, t).len() as u64).sum();
        assert_eq!(all, expect);
        let (log, cut) = PartitionLog::open(&d, "t-0", config, true).await.unwrap();
        assert_eq!(cut, 0);
        assert_eq!(log.high_watermark(), Offset(180));
        log.close().await.unwrap();
    });
}
