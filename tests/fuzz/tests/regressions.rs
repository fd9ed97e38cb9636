//! Regression tests for what the fuzzers found. Runnable with stable: `cargo test` in
//! tests/fuzz. Each input under regressions/<target>/ is replayed through the same check the
//! fuzz target runs (src/lib.rs). OOM-class bugs abort the process (allocation failure is not
//! a panic), so every case runs in a child process with its address space capped at 2 GiB:
//! the test fails while the bug is present and passes once the code refuses the input cleanly.

use std::path::Path;
use std::process::Command;

const CHILD_ENV: &str = "SLUICE_FUZZ_REGRESSION_CHILD";

// The broker's allocator (net/bin/src/main.rs): huge allocations reserve address space with
// MAP_NORESERVE instead of aborting, so wire-length pre-allocations behave here as in sluice.
#[global_allocator]
static ALLOCATOR: sluice_net::huge_alloc::HugeAlloc = sluice_net::huge_alloc::HugeAlloc;

/// Re-runs this test binary for just `test`, in a child with RLIMIT_AS = 2 GiB; the child
/// (seeing CHILD_ENV) runs `body`. Returns in the parent only when the child succeeded.
fn isolated(test: &str, body: impl FnOnce()) {
    isolated_with(test, true, body)
}

/// Peak resident memory of this process, from /proc/self/status.
fn peak_rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A request decoded as the broker decodes it: with the broker's allocator and no
/// address-space cap (the broker has none), a hostile array length may reserve address space
/// but must not make the process use real memory or abort.
fn request_case(test: &str, name: &'static str) {
    isolated_with(test, false, move || {
        sluice_fuzz::request(&input("request", name));
        let peak = peak_rss_bytes();
        assert!(peak < 512 << 20, "decoding {name} used {} MiB of real memory", peak >> 20);
    });
}

fn isolated_with(test: &str, cap_address_space: bool, body: impl FnOnce()) {
    if std::env::var_os(CHILD_ENV).is_some() {
        if cap_address_space {
            let lim = libc::rlimit { rlim_cur: 2 << 30, rlim_max: 2 << 30 };
            // SAFETY: plain setrlimit on our own process.
            unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
        }
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("spawn child test");
    assert!(
        out.status.success(),
        "{test} failed in its child ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn input(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target).join(name)).unwrap()
}

/// Bug 1: sluice_core::batch::records pre-allocates `records_count` (an untrusted i32 from the
/// batch, inside the CRC so a producer chooses it) entries: 61 bytes with recordsCount =
/// i32::MAX ask for ~100 GB and abort. Reached by ListOffsets-by-timestamp
/// (storage/src/log/read.rs first_record_at) and the group coordinator's replay of __consumer_offsets.
#[test]
fn batch_records_count_i32_max() {
    isolated("batch_records_count_i32_max", || {
        let data = input("batch", "records_count_i32_max");
        assert!(sluice_core::batch::records(&data).is_err());
        sluice_fuzz::batch(&data);
    });
}

/// Bug 2 (kafka-protocol 0.18 Array/CompactArray/String decode): a 20-byte OffsetFetch v1
/// frame whose topics array claims 0x10000000 entries allocates ~21 GB up front and aborts.
#[test]
fn request_offset_fetch_v1_array_len() {
    request_case("request_offset_fetch_v1_array_len", "offset_fetch_v1_array_len");
}

/// Bug 2, another decoder path: DeleteTopics v5 (compact array of compact strings).
#[test]
fn request_delete_topics_v5_string_array() {
    request_case("request_delete_topics_v5_string_array", "delete_topics_v5_string_array");
}

/// Bug 3: PartitionLog::open(clean = true) trusting an index whose last offset entry is
/// (rel 1, pos 0): the scan from pos 0 expects offset 1, finds offset 0, keeps nothing, and
/// because end_pos == 0 the "scan everything" fallback (segment.rs open_active,
/// `s.end_pos > 0`) is skipped: the segment is truncated to 0 bytes (data loss) while the
/// log end / high watermark stays 1, so a read at offset 0 returns empty forever.
#[test]
fn log_recovery_trusted_index_pos0() {
    isolated("log_recovery_trusted_index_pos0", || {
        use sluice_core::batch;
        let mut b = batch::build(&[batch::Record { key: None, value: b"hello" }], 1_000);
        batch::stamp(&mut b, 0, 0);
        let mut data = vec![1u8]; // clean shutdown: trust the index
        data.extend_from_slice(&0i64.to_be_bytes());
        data.extend_from_slice(&8u16.to_be_bytes());
        data.extend_from_slice(&1u32.to_be_bytes()); // rel 1
        data.extend_from_slice(&0u32.to_be_bytes()); // pos 0
        data.extend_from_slice(&0u16.to_be_bytes()); // empty time index
        data.extend_from_slice(&b);
        sluice_fuzz::log_recovery(&data);
    });
}

/// Bug 3, the input the fuzzer found.
#[test]
fn log_recovery_trusted_index_pos0_fuzzed() {
    isolated("log_recovery_trusted_index_pos0_fuzzed", || {
        sluice_fuzz::log_recovery(&input("log_recovery", "trusted_index_pos0_rel1_fuzzed"));
    });
}

/// The seed corpora must pass every check (sanity of the harness itself).
#[test]
fn seed_corpora_pass() {
    isolated("seed_corpora_pass", || {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        type Check = fn(&[u8]);
        let run: [(&str, Check); 5] = [
            ("batch", sluice_fuzz::batch),
            ("request", sluice_fuzz::request),
            ("storage_files", sluice_fuzz::storage_files),
            ("group_store", sluice_fuzz::group_store),
            ("log_recovery", |d| {
                sluice_fuzz::log_recovery(d);
            }),
        ];
        for (t, f) in run {
            for e in std::fs::read_dir(root.join(t)).unwrap() {
                f(&std::fs::read(e.unwrap().path()).unwrap());
            }
        }
    });
}

/// Bug 3, smallest form (19 bytes): empty segment, clean shutdown, index entry (rel
/// 526266007, pos 0) ⇒ the log opens with end/high watermark 526266007 and no data.
#[test]
fn log_recovery_trusted_index_pos0_empty_segment() {
    isolated("log_recovery_trusted_index_pos0_empty_segment", || {
        sluice_fuzz::log_recovery(&input("log_recovery", "trusted_index_pos0_empty_segment"));
    });
}

/// Finding 4: with clean = true, bytes before the trusted index entry are not CRC-checked at
/// open. Fixed: every batch read back from a segment file has its CRC-32C checked
/// (storage/src/log/read.rs `check_stored`); a damaged one is answered with a storage error.
#[test]
fn log_recovery_trusted_index_unvalidated_prefix() {
    isolated("log_recovery_trusted_index_unvalidated_prefix", || {
        sluice_fuzz::log_recovery(&input("log_recovery", "trusted_index_unvalidated_prefix"));
    });
}

/// Finding 5 (log_recovery, 2026-11-25): after recovering this fuzzed segment a read of
/// offset 0 below the high watermark failed with "short read".
#[test]
fn log_recovery_short_read_after_recovery() {
    isolated("log_recovery_short_read_after_recovery", || {
        sluice_fuzz::log_recovery(&input("log_recovery", "short_read_after_recovery"));
    });
}

/// Finding 6 (log_recovery, 2026-11-25): the same kind of damage with a length shorter than a
/// batch header: the header did not parse and the read of offset 0 answered nothing, below the
/// high watermark. Fixed: a header that does not parse before the durable end is damage.
#[test]
fn log_recovery_header_shorter_than_minimum() {
    isolated("log_recovery_header_shorter_than_minimum", || {
        sluice_fuzz::log_recovery(&input("log_recovery", "header_shorter_than_minimum"));
    });
}

/// Finding 7 (log_recovery, 2026-11-25): a damaged lastOffsetDelta in the trusted prefix made
/// the batch holding offset 0 reach past the high watermark; the read answered nothing.
/// Fixed: a first batch crossing the high watermark is damage (batches end at it).
#[test]
fn log_recovery_batch_crossing_high_watermark() {
    isolated("log_recovery_batch_crossing_high_watermark", || {
        sluice_fuzz::log_recovery(&input("log_recovery", "batch_crossing_high_watermark"));
    });
}

/// Finding 8 (robustness issue, not the fuzzer): a CRC-valid batch of one record whose
/// lastOffsetDelta is 2^31 - 1 was accepted and stored, taking 2^31 offsets; Kafka refuses it
/// (LogValidator: "Inconsistent batch offset range ... and count of records", INVALID_RECORD).
/// Fixed: `split_batches` (the Produce path) refuses it with `InvalidRecord::CountMismatch`.
#[test]
fn batch_count_below_last_offset_delta() {
    isolated("batch_count_below_last_offset_delta", || {
        use sluice_core::batch::{self, BatchError, InvalidRecord};
        let data = input("batch", "count_below_last_offset_delta");
        assert!(batch::validate(&data).is_ok(), "the input is an intact batch");
        let got = batch::split_batches(&bytes::Bytes::from(data.clone()), sluice_core::limits::MAX_BATCH_BYTES);
        assert_eq!(
            got.map(|_| ()),
            Err(BatchError::Invalid(InvalidRecord::CountMismatch { last_offset_delta: i32::MAX, count: 1 }))
        );
        sluice_fuzz::batch(&data);
    });
}

/// Finding 8, header-consistent form: lastOffsetDelta 2 and recordCount 3, but one record in
/// an uncompressed batch (Kafka's record iterator: "Incorrect declared batch size").
#[test]
fn batch_declared_count_above_records() {
    isolated("batch_declared_count_above_records", || {
        use sluice_core::batch::{self, BatchError, InvalidRecord};
        let data = input("batch", "declared_count_above_records");
        let got = batch::split_batches(&bytes::Bytes::from(data.clone()), sluice_core::limits::MAX_BATCH_BYTES);
        assert_eq!(got.map(|_| ()), Err(BatchError::Invalid(InvalidRecord::RecordCount("premature EOF reached"))));
        sluice_fuzz::batch(&data);
    });
}

/// The `sasl` target's seed corpus (corpus/sasl/), replayed through its checks: right and
/// wrong PLAIN passwords, SCRAM client-first messages, garbage, re-handshakes.
#[test]
fn sasl_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join("sasl");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        sluice_fuzz::sasl(&data);
        n += 1;
    }
    assert!(n >= 5, "corpus/sasl has {n} inputs");
}
