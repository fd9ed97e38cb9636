//! Results: throughput, latency percentiles, a live progress line, a table and JSON.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, sluice_core::limits::CLIENT_LATENCY_HISTOGRAM_MAX_US, 3)
        .expect("valid histogram bounds")
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: String,
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_what: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// Connections that failed (refused, lost, or stalled past `--request-timeout-ms`): the
    /// run is incomplete and `sluice bench` exits 1.
    pub failed_connections: u64,
    #[serde(skip)]
    pub json: bool,
}

impl Report {
    pub fn new(workload: &str, records: u64, bytes: u64, elapsed: Duration, h: &Histogram<u64>, what: &str) -> Self {
        let s = elapsed.as_secs_f64().max(1e-9);
        let ms = |v: u64| v as f64 / 1000.0;
        Report {
            workload: workload.to_string(),
            records,
            bytes,
            seconds: s,
            records_per_sec: records as f64 / s,
            mb_per_sec: bytes as f64 / s / 1e6,
            latency_what: what.to_string(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            errors: 0,
            failed_connections: 0,
            json: false,
        }
    }

    pub fn print(&self) {
        if self.json {
            println!("{}", serde_json::to_string(self).expect("report serialises"));
            return;
        }
        println!(
            "{:<10} {:>12} {:>10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "workload", "records", "seconds", "records/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
        );
        println!(
            "{:<10} {:>12} {:>10.2} {:>12.0} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            self.workload,
            self.records,
            self.seconds,
            self.records_per_sec,
            self.mb_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.errors
        );
        println!("latency: {}", self.latency_what);
    }
}

/// Counters shared by the worker threads and the progress printer.
#[derive(Default)]
pub struct Progress {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Connections that failed (each also counts in `errors`).
    pub failed_connections: AtomicU64,
    pub done: AtomicBool,
}

impl Progress {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A connection failed: reported on stderr, counted as an error and as a failed connection.
    pub fn connection_failed(&self, what: &str, e: &dyn std::fmt::Display) {
        eprintln!("sluice bench: {what} failed: {e}");
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.failed_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Prints a progress line on stderr every second until `done`.
    pub fn spawn_printer(self: &Arc<Self>, label: &'static str, total: u64) -> std::thread::JoinHandle<()> {
        let p = self.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut last = (0u64, Instant::now());
            while !p.done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last.1.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let r = p.records.load(Ordering::Relaxed);
                let rate = (r - last.0) as f64 / last.1.elapsed().as_secs_f64();
                eprintln!(
                    "[{label}] {:>6.1}s {r}/{total} records, {rate:.0} records/s, errors {}",
                    start.elapsed().as_secs_f64(),
                    p.errors.load(Ordering::Relaxed)
                );
                last = (r, Instant::now());
            }
        })
    }
}
