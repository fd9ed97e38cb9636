//! The checks behind the fuzz targets, shared with the stable regression tests
//! (`tests/regressions.rs`). Each function takes arbitrary bytes and panics only when the code
//! under test panics or breaks one of its documented contracts.

use bytes::Bytes;
use sluice_core::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use sluice_core::limits::{MAX_BATCH_BYTES, MAX_REQUEST_BYTES};

/// Inputs above this are ignored (allocation bound, as Tansu's fuzzers do).
pub const MAX_INPUT: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// batch: BatchHeader::parse, validate, split_batches, records

pub fn batch(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let parsed = BatchHeader::parse(data);
    if let Ok(h) = parsed {
        assert!(h.total_len() >= HEADER_LEN);
    }
    if let Ok(h) = batch::validate(data) {
        assert_eq!(h.total_len(), data.len());
        assert_eq!(Ok(h), parsed);
    }
    // `records` is called by the broker on stored (CRC-valid) batches: ListOffsets by
    // timestamp (storage/src/log/read.rs first_record_at) and the group coordinator's replay of
    // __consumer_offsets. It must refuse malformed input without panicking or huge allocations.
    if let Ok(recs) = batch::records(data) {
        let h = parsed.expect("records() succeeded so the header parses");
        assert_eq!(recs.len(), h.records_count as usize);
    }
    let blob = Bytes::copy_from_slice(data);
    if let Ok(parts) = batch::split_batches(&blob, MAX_BATCH_BYTES) {
        let total: usize = parts.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(total, data.len(), "split_batches must cover its input exactly");
        assert_eq!(parts.len(), 1, "a partition takes exactly one batch");
        for (h, b) in &parts {
            assert_eq!(batch::validate(b).as_ref(), Ok(h));
            // What Kafka's LogValidator requires of a client's batch (INVALID_RECORD otherwise).
            assert!(h.records_count > 0);
            assert_eq!(i64::from(h.last_offset_delta) + 1, i64::from(h.records_count), "count != lastOffsetDelta + 1");
            assert_eq!(h.base_offset, 0);
            if h.compression() == 0 {
                let recs = batch::records(b).expect("an accepted uncompressed batch's records read back");
                assert_eq!(recs.len(), h.records_count as usize);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// request: peek_prefix -> api::lookup -> parse_header -> body decode, as conn.rs does it

pub fn request(data: &[u8]) {
    use kafka_protocol::messages::RequestKind;
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(prefix) = sluice_net::frame::peek_prefix(data) else { return };
    let Some(spec) = sluice_net::api::lookup(prefix.api_key).filter(|s| s.supports(prefix.version)) else {
        return;
    };
    let Ok(req) = sluice_net::frame::parse_header(spec.key, Bytes::copy_from_slice(data)) else { return };
    assert_eq!(req.api_key, prefix.api_key);
    assert_eq!(req.version, prefix.version);
    assert_eq!(req.correlation_id, prefix.correlation_id);
    let mut body = req.body.clone();
    if let Ok(kind) = RequestKind::decode(spec.key, &mut body, req.version) {
        // A decoded request must re-encode (the broker never re-encodes requests, but a value
        // that cannot be encoded back signals a decoder that accepted garbage).
        let mut out = bytes::BytesMut::new();
        let _ = kind.encode(&mut out, req.version);
    }
}

// ---------------------------------------------------------------------------------------------
// storage_files: SparseIndex::decode and the producer snapshot loader

/// Layout: u32 segment_size | u32 last_rel | u16 offsets_len | offsets | times (rest).
/// When the first byte is odd the rest is instead a `producers.snapshot` file.
pub fn storage_files(data: &[u8]) {
    use sluice_storage::index::SparseIndex;
    if data.len() > MAX_INPUT || data.is_empty() {
        return;
    }
    if data[0] & 1 == 1 {
        producer_snapshot(&data[1..]);
        return;
    }
    let data = &data[1..];
    if data.len() < 10 {
        return;
    }
    let size = u32::from_be_bytes(data[0..4].try_into().unwrap()) as u64;
    let last_rel = u32::from_be_bytes(data[4..8].try_into().unwrap());
    let olen = (u16::from_be_bytes(data[8..10].try_into().unwrap()) as usize).min(data.len() - 10);
    let (offsets, times) = data[10..].split_at(olen);
    if let Ok(idx) = SparseIndex::decode(offsets, times, size, last_rel) {
        assert_eq!(idx.encode_offsets(), offsets);
        assert_eq!(idx.encode_times(), times);
        for w in idx.offsets.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1);
        }
        for (o, p) in &idx.offsets {
            assert!((*p as u64) < size && *o <= last_rel);
            let _ = idx.position_for(*o);
        }
        let _ = idx.offset_for_time(i64::MIN);
        let _ = idx.offset_for_time(i64::MAX);
    }
}

thread_local! {
    static SNAP_DIR: tempfile::TempDir = tempfile::tempdir().expect("tempdir");
}

fn producer_snapshot(file: &[u8]) {
    SNAP_DIR.with(|d| {
        std::fs::write(d.path().join("producers.snapshot"), file).expect("write snapshot");
        // The snapshot names the log end it was taken at (bytes 4..12).
        let at = file.get(4..12).map(|b| i64::from_be_bytes(b.try_into().unwrap())).unwrap_or(0);
        if let Some(p) = sluice_storage::producers::load_snapshot(d.path(), at) {
            // Saving what was loaded and loading it again must give the same state.
            sluice_storage::producers::save_snapshot(d.path(), at, &p).expect("save");
            let back = sluice_storage::producers::load_snapshot(d.path(), at).expect("reload");
            assert_eq!(back.len(), p.len());
        }
    });
}

// ---------------------------------------------------------------------------------------------
// group_store: shard::groups::store::decode

/// Layout: u16 key_len | key | value (rest; absent when the first byte is 0xff -> None).
pub fn group_store(data: &[u8]) {
    use sluice_shard::groups::store;
    if data.len() > MAX_INPUT || data.len() < 3 {
        return;
    }
    let null_value = data[0] == 0xff;
    let klen = (u16::from_be_bytes([data[1], data[2]]) as usize).min(data.len() - 3);
    let (key, value) = data[3..].split_at(klen);
    let value = if null_value { None } else { Some(value) };
    if let Some(e) = store::decode(key, value) {
        // Round trip: what decodes must re-encode to something decoding to the same entry
        // (lossy UTF-8 aside, so only for valid UTF-8 names).
        match &e {
            store::Entry::Offset { group, topic, partition, value: Some(c) } => {
                let k = store::offset_key(group, topic, *partition);
                let v = store::offset_value(c);
                assert_eq!(store::decode(&k, Some(&v)).as_ref(), Some(&e));
            }
            store::Entry::Group { group, value: Some(g) } => {
                let k = store::group_key(group);
                let v = store::group_value(g);
                assert_eq!(store::decode(&k, Some(&v)).as_ref(), Some(&e));
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// log_recovery: PartitionLog::open on a directory holding a fuzzed segment

/// What a recovery run saw (for regression tests).
#[derive(Debug)]
pub struct RecoveryOutcome {
    pub open_error: Option<String>,
    pub cut: u64,
    pub batches: usize,
}

/// Layout: flags u8 | i64 timestamp for ListOffsets | [if flags&1: u16 index_len | index |
/// u16 timeindex_len | timeindex] | segment bytes (rest).
/// flags&1: clean shutdown (indexes trusted); flags&2: append a batch after recovery.
pub fn log_recovery(data: &[u8]) -> Option<RecoveryOutcome> {
    if data.len() > MAX_INPUT || data.len() < 9 {
        return None;
    }
    let flags = data[0];
    let ts = i64::from_be_bytes(data[1..9].try_into().unwrap());
    let mut rest = &data[9..];
    let clean = flags & 1 == 1;
    let take = |rest: &mut &[u8]| -> Vec<u8> {
        if rest.len() < 2 {
            return Vec::new();
        }
        let n = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let v = rest[2..2 + n].to_vec();
        *rest = &rest[2 + n..];
        v
    };
    let (index, timeindex) = if clean {
        let i = take(&mut rest);
        let t = take(&mut rest);
        (Some(i), Some(t))
    } else {
        (None, None)
    };
    let segment = rest.to_vec();
    Some(recovery_run(flags, ts, segment, index, timeindex))
}

fn scratch_root() -> std::path::PathBuf {
    // A real disk (O_DIRECT), never tmpfs: SLUICE_FUZZ_DIR, else ./work/scratch.
    let root = std::env::var_os("SLUICE_FUZZ_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().unwrap().join("work").join("scratch"));
    std::fs::create_dir_all(&root).expect("scratch dir");
    root
}

thread_local! {
    static EXECUTOR: glommio::LocalExecutor = glommio::LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    static SCRATCH: tempfile::TempDir = tempfile::tempdir_in(scratch_root()).expect("scratch tempdir");
}

fn with_executor<T>(fut: impl std::future::Future<Output = T>) -> T {
    // glommio needs its executor entered; one executor per thread, reused across runs.
    EXECUTOR.with(|ex| ex.run(fut))
}

/// The valid prefix recovery must keep: batches from position 0 whose length is sane, whose
/// CRC matches and whose base offset follows the previous one (from 0).
pub fn expected_prefix(seg: &[u8]) -> (usize, i64, usize) {
    let (mut pos, mut next, mut n) = (0usize, 0i64, 0usize);
    while seg.len() - pos >= LOG_OVERHEAD {
        let len = i32::from_be_bytes(seg[pos + 8..pos + 12].try_into().unwrap());
        if len <= 0 || len as usize > MAX_REQUEST_BYTES {
            break;
        }
        let total = LOG_OVERHEAD + len as usize;
        if seg.len() - pos < total {
            break;
        }
        let Ok(h) = batch::validate(&seg[pos..pos + total]) else { break };
        if h.base_offset != next {
            break;
        }
        next = h.base_offset + h.last_offset_delta as i64 + 1;
        pos += total;
        n += 1;
    }
    (pos, next, n)
}

fn recovery_run(
    flags: u8,
    ts: i64,
    segment: Vec<u8>,
    index: Option<Vec<u8>>,
    timeindex: Option<Vec<u8>>,
) -> RecoveryOutcome {
    use sluice_core::Offset;
    use sluice_storage::{LogConfig, PartitionLog};
    let clean = index.is_some();
    let parent = SCRATCH.with(|s| s.path().to_path_buf());
    let dir = parent.join("t-0");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("00000000000000000000.log");
    std::fs::write(&log_path, &segment).unwrap();
    if let (Some(i), Some(t)) = (&index, &timeindex) {
        std::fs::write(dir.join("00000000000000000000.index"), i).unwrap();
        std::fs::write(dir.join("00000000000000000000.timeindex"), t).unwrap();
    }
    let (exp_len, exp_next, exp_n) = expected_prefix(&segment);
    let config = LogConfig { index_interval_bytes: 64, ..LogConfig::default() };

    let out = with_executor(async {
        let (log, cut) = match PartitionLog::open(&dir, "t-0", config, clean).await {
            Ok(x) => x,
            Err(e) => return RecoveryOutcome { open_error: Some(e.to_string()), cut: 0, batches: 0 },
        };
        let end = log.log_end().0;
        assert_eq!(log.high_watermark().0, end, "recovered log must be durable up to its end");
        if !clean {
            assert_eq!(end, exp_next, "recovered log end differs from the valid prefix");
            assert_eq!(log.size_bytes(), exp_len as u64, "recovered size differs from the valid prefix");
            let file_len = std::fs::metadata(&log_path).unwrap().len();
            if cut > 0 {
                assert_eq!(file_len, exp_len as u64, "a cut tail must be truncated from the file");
                assert_eq!(cut, segment.len() as u64 - exp_len as u64);
            } else {
                assert!(segment[exp_len..].iter().all(|b| *b == 0), "non-zero tail not reported as cut");
            }
        }
        // Read everything back: only whole, CRC-valid, contiguous batches.
        let mut n = read_all(&log, log.log_start().0, end).await;
        if !clean {
            assert_eq!(n, exp_n, "read back a different number of batches than recovery kept");
        }
        let _ = log.offset_for_timestamp(ts).await;
        let _ = log.max_timestamp().await;
        if flags & 2 == 2 {
            let b = batch::build(&[batch::Record { key: Some(b"k"), value: b"fuzz" }], 1_000);
            let h = batch::validate(&b).unwrap();
            let info = log.append(&b, &h, None).expect("append after recovery");
            assert_eq!(info.base_offset.0, end);
            log.wait_durable(&info).await.expect("durable");
            let r = log.read(Offset(end), 1 << 20).await.expect("read appended");
            assert_eq!(r.records.len(), b.len());
            assert_eq!(batch::validate(&r.records).unwrap().base_offset, end);
            n += 1;
        }
        log.close().await.expect("close");
        RecoveryOutcome { open_error: None, cut, batches: n }
    });
    let _ = std::fs::remove_dir_all(&dir);
    out
}

async fn read_all(log: &sluice_storage::PartitionLog, start: i64, end: i64) -> usize {
    use sluice_core::Offset;
    let mut next = start;
    let mut n = 0;
    let mut first = true;
    while next < end {
        let r = match log.read(Offset(next), 1 << 20).await {
            Ok(r) => r,
            // A batch damaged before a trusted index entry (bad CRC, or a length past the end of the
            // segment) is refused when read, not served.
            Err(e) if e.to_string().contains("segment damaged on disk") => return n,
            Err(e) => panic!("read of a recovered offset {next}: {e}"),
        };
        assert!(!r.records.is_empty(), "empty read at {next} below the high watermark {end}");
        let mut pos = 0;
        while pos < r.records.len() {
            let rest = &r.records[pos..];
            let h = BatchHeader::parse(rest).expect("read returned a bad header");
            assert!(h.total_len() <= rest.len(), "read returned a partial batch");
            batch::validate(&rest[..h.total_len()]).expect("read returned a batch with a bad CRC");
            if first {
                assert!(h.base_offset <= next && next <= h.base_offset + h.last_offset_delta as i64);
                first = false;
            } else {
                assert_eq!(h.base_offset, next, "read returned non-contiguous batches");
            }
            next = h.base_offset + h.last_offset_delta as i64 + 1;
            pos += h.total_len();
            n += 1;
        }
    }
    n
}

thread_local! {
    /// SASL settings for the `sasl` target: PLAIN user alice/pw and SCRAM-SHA-256/512 user
    /// bob/pw, built once (the store lives in a temporary directory kept for the process).
    static SASL: (sluice_net::auth::SaslSettings, tempfile::TempDir) = {
        use sluice_net::auth::store::{Change, ScramStore};
        use sluice_net::sasl::scram::{Credential, Hash};
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ScramStore::open(dir.path()).expect("store");
        let changes = [Hash::Sha256, Hash::Sha512]
            .map(|hash| Change::Upsert { user: "bob".into(), hash, credential: Credential::from_password(hash, b"pw", vec![3; 16], 4096) });
        store.apply(changes.into()).expect("credentials");
        let settings = sluice_net::auth::SaslSettings {
            mechanisms: vec![sluice_net::sasl::Mechanism::Plain, sluice_net::sasl::Mechanism::ScramSha256, sluice_net::sasl::Mechanism::ScramSha512],
            plain_users: [("alice".to_string(), "pw".to_string())].into(),
            scram: std::sync::Arc::new(store),
        };
        (settings, dir)
    };
}

/// `sasl` target. Layout: byte 0 picks the mechanism (0 PLAIN, 1 SCRAM-SHA-256, 2
/// SCRAM-SHA-512, else a name made of the next 8 bytes); then messages, each a big-endian u16
/// length and that many bytes, fed to SaslAuthenticate in order (a message of length 0xFFFF
/// is a new SaslHandshake instead). Checks: no panic; a refused step closes the session and
/// nothing is accepted after; a session authenticated by PLAIN has exactly the message that
/// carries alice's password; SCRAM never authenticates (the fuzzer cannot forge a proof).
pub fn sasl(data: &[u8]) {
    use sluice_core::listeners::SecurityProtocol;
    use sluice_net::auth::Session;
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let name = match pick {
        0 => "PLAIN".to_string(),
        1 => "SCRAM-SHA-256".to_string(),
        2 => "SCRAM-SHA-512".to_string(),
        _ => String::from_utf8_lossy(&rest[..rest.len().min(8)]).into_owned(),
    };
    SASL.with(|(settings, _)| {
        let protocol = SecurityProtocol::SaslPlaintext;
        let mut session = Session::new(protocol);
        let mut ok = session.handshake(settings, protocol, &name).is_ok();
        let mut last_plain: Option<Vec<u8>> = None;
        while rest.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            rest = &rest[2..];
            if len == 0xFFFF {
                ok = session.handshake(settings, protocol, &name).is_ok() && ok;
                continue;
            }
            let msg = &rest[..len.min(rest.len())];
            rest = &rest[msg.len()..];
            let was_closing = session.closing();
            let step = session.authenticate(settings, msg);
            assert!(!(was_closing && step.is_ok()), "a step accepted after a failure");
            if step.is_err() {
                assert!(session.closing() && !session.authenticated());
                ok = false;
            } else if name == "PLAIN" {
                last_plain = Some(msg.to_vec());
            }
        }
        if session.authenticated() {
            assert!(ok);
            assert_eq!(name, "PLAIN", "SCRAM authenticated without the password");
            let m = last_plain.expect("authenticated by a PLAIN message");
            assert!(m == b"\0alice\0pw" || m == b"alice\0alice\0pw", "{m:?}");
        }
    });
}
