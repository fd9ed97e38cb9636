//! `sluice bench limits`: the ceilings of this machine that no broker on it can beat, measured
//! in one bounded run (well under a minute by default):
//!
//! - **disk write**: sequential O_DIRECT writes (glommio `DmaFile`, io_uring, the same path
//!   sluice's flusher uses) of `--write-block-kib` each, `--queue-depth` in flight, `--write-mib`
//!   in total to a fresh file in `--dir`, plus the final `fdatasync` (time until durable);
//! - **disk read**: sequential O_DIRECT reads (glommio `DmaFile::read_at`, io_uring, the call
//!   sluice's segment reads make) of `--read-block-kib` each, `--read-queue-depth` in flight,
//!   of a file of `--read-mib` written for the purpose just before (with O_DIRECT writes and an
//!   fdatasync, not timed), so neither the page cache nor sluice's read cache serves it (a
//!   virtual disk's host may still cache it: the figure is what the guest gets); capped by
//!   `--read-max-secs`;
//! - **append + fdatasync**: `--syncs` rounds of one `--sync-bytes` aligned append then one
//!   `fdatasync`, each round timed (p50/p99/p99.9/max), i.e. one acks=all group commit with a
//!   single small batch; `fdatasync` alone is timed too;
//! - **loopback TCP**: one stream, a sender thread writing `--tcp-mib` to a receiver thread on
//!   127.0.0.1 (blocking std sockets, 1 MiB buffers).
//!
//! Every measurement also stops at `--max-secs` (then reports what it did, marked "capped"),
//! a size of 0 skips it, and every file it creates is removed, on errors too.

use crate::report::histogram;
use clap::Args;
use glommio::io::{DmaFile, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Debug, Args, Clone)]
pub struct LimitsArgs {
    /// Directory on the filesystem to measure (e.g. the broker's data dir); created if missing.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Sequential write: MiB in total (0 skips it).
    #[arg(long, default_value_t = 1024)]
    pub write_mib: u64,
    /// Sequential write: KiB per write (a multiple of 4).
    #[arg(long, default_value_t = 1024)]
    pub write_block_kib: usize,
    /// Sequential write: writes in flight.
    #[arg(long, default_value_t = 4)]
    pub queue_depth: usize,
    /// Sequential read: MiB written to a fresh file, then read back with O_DIRECT (0 skips it).
    #[arg(long, default_value_t = 1024)]
    pub read_mib: u64,
    /// Sequential read: KiB per read (a multiple of 4).
    #[arg(long, default_value_t = 1024)]
    pub read_block_kib: usize,
    /// Sequential read: reads in flight.
    #[arg(long, default_value_t = 4)]
    pub read_queue_depth: usize,
    /// Sequential read: stops after this many seconds (the file is written first, untimed,
    /// under `--max-secs`).
    #[arg(long, default_value_t = 15)]
    pub read_max_secs: u64,
    /// Append + fdatasync rounds (0 skips it).
    #[arg(long, default_value_t = 2000)]
    pub syncs: u64,
    /// Bytes appended before each fdatasync (a multiple of 4096).
    #[arg(long, default_value_t = 4096)]
    pub sync_bytes: usize,
    /// Loopback TCP: MiB sent over one stream (0 skips it).
    #[arg(long, default_value_t = 4096)]
    pub tcp_mib: u64,
    /// Each measurement stops after this many seconds and reports what it did.
    #[arg(long, default_value_t = 15)]
    pub max_secs: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One measured ceiling.
#[derive(Debug, Serialize)]
pub struct Limit {
    pub name: String,
    /// What was done, e.g. "1024 MiB in 1024 KiB writes, QD 4, + fdatasync".
    pub detail: String,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_sec: f64,
    /// Operations per second (writes, rounds, syncs).
    pub ops_per_sec: f64,
    /// Latency percentiles in milliseconds (0 where not measured).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Stopped at `--max-secs` before doing everything asked.
    pub capped: bool,
}

#[derive(Debug, Serialize)]
pub struct LimitsReport {
    pub dir: String,
    pub cpus: usize,
    pub limits: Vec<Limit>,
}

/// Removes a file when dropped (errors included).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn ms(v: u64) -> f64 {
    v as f64 / 1000.0
}

fn with_latency(mut l: Limit, h: &Histogram<u64>) -> Limit {
    if !h.is_empty() {
        l.p50_ms = ms(h.value_at_quantile(0.5));
        l.p99_ms = ms(h.value_at_quantile(0.99));
        l.p999_ms = ms(h.value_at_quantile(0.999));
        l.max_ms = ms(h.max());
    }
    l
}

fn limit(name: &str, detail: String, bytes: u64, ops: u64, elapsed: Duration, capped: bool) -> Limit {
    let s = elapsed.as_secs_f64().max(1e-9);
    Limit {
        name: name.to_string(),
        detail,
        bytes,
        seconds: s,
        mb_per_sec: bytes as f64 / s / 1e6,
        ops_per_sec: ops as f64 / s,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
        capped,
    }
}

fn scratch(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!(".sluice-limits-{}-{what}", std::process::id()))
}

async fn open_new(path: &Path) -> Result<DmaFile, String> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .dma_open(path)
        .await
        .map_err(|e| format!("opening {} with O_DIRECT: {e}", path.display()))
}

fn fill(bytes: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// Writes `blocks` copies of `buf` sequentially from offset 0, `qd` writes in flight, until
/// done or `cap` after `start`; returns (bytes written, stopped by the cap).
async fn write_blocks(
    file: &DmaFile,
    path: &Path,
    buf: &Rc<glommio::io::DmaBuffer>,
    blocks: u64,
    qd: u64,
    start: Instant,
    cap: Duration,
) -> Result<(u64, bool), String> {
    let block = buf.len();
    // `qd` workers, each taking the next block: at most qd writes in flight, in order.
    let next = Rc::new(std::cell::Cell::new(0u64));
    let workers: Vec<_> = (0..qd)
        .map(|_| {
            let (buf, next) = (buf.clone(), next.clone());
            async move {
                let mut done = 0u64;
                loop {
                    let i = next.get();
                    if i >= blocks || start.elapsed() > cap {
                        return Ok::<_, String>((done, i < blocks));
                    }
                    next.set(i + 1);
                    let n = file
                        .write_rc_at(buf.clone(), i * block as u64)
                        .await
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                    if n != block {
                        return Err(format!("short O_DIRECT write ({n} of {block} bytes)"));
                    }
                    done += n as u64;
                }
            }
        })
        .collect();
    let (mut written, mut capped) = (0u64, false);
    for r in futures::future::join_all(workers).await {
        let (done, stopped) = r?;
        written += done;
        capped |= stopped;
    }
    Ok((written, capped))
}

/// Sequential O_DIRECT write of `write_mib`, `queue_depth` writes in flight, then fdatasync.
async fn disk_write(args: &LimitsArgs) -> Result<Limit, String> {
    let path = scratch(&args.dir, "write");
    let _cleanup = Cleanup(path.clone());
    let file = open_new(&path).await?;
    let block = args.write_block_kib * 1024;
    let mut buf = file.alloc_dma_buffer(block);
    fill(buf.as_bytes_mut(), 0x5eed);
    let buf = Rc::new(buf);
    let blocks = (args.write_mib * 1024 * 1024).div_ceil(block as u64);
    let qd = args.queue_depth.max(1) as u64;
    let start = Instant::now();
    let (written, capped) =
        write_blocks(&file, &path, &buf, blocks, qd, start, Duration::from_secs(args.max_secs)).await?;
    file.fdatasync().await.map_err(|e| format!("fdatasync {}: {e}", path.display()))?;
    let elapsed = start.elapsed();
    let _ = file.close().await;
    Ok(limit(
        "disk: O_DIRECT sequential write",
        format!("{} MiB in {} KiB writes, {} in flight, + final fdatasync", written >> 20, args.write_block_kib, qd),
        written,
        written / block as u64,
        elapsed,
        capped,
    ))
}

/// Sequential O_DIRECT read of a `read_mib` file written (untimed) just before, with
/// `read_queue_depth` reads of `read_block_kib` in flight: the device's read ceiling as
/// sluice's segment reads see it (glommio `DmaFile::read_at` over io_uring, no page cache).
async fn disk_read(args: &LimitsArgs) -> Result<Limit, String> {
    let path = scratch(&args.dir, "read");
    let _cleanup = Cleanup(path.clone());
    let block = args.read_block_kib * 1024;
    let blocks = (args.read_mib * 1024 * 1024).div_ceil(block as u64);
    let qd = args.read_queue_depth.max(1) as u64;
    let file = open_new(&path).await?;
    let mut buf = file.alloc_dma_buffer(block);
    fill(buf.as_bytes_mut(), 0xbead);
    let buf = Rc::new(buf);
    let (size, _) =
        write_blocks(&file, &path, &buf, blocks, qd, Instant::now(), Duration::from_secs(args.max_secs)).await?;
    file.fdatasync().await.map_err(|e| format!("fdatasync {}: {e}", path.display()))?;
    let _ = file.close().await;
    let file = OpenOptions::new()
        .read(true)
        .dma_open(&path)
        .await
        .map_err(|e| format!("opening {} with O_DIRECT for reading: {e}", path.display()))?;
    let blocks = size / block as u64;
    let cap = Duration::from_secs(args.read_max_secs);
    let next = Rc::new(std::cell::Cell::new(0u64));
    let start = Instant::now();
    let workers: Vec<_> = (0..qd)
        .map(|_| {
            let (file, next, path, expect) = (&file, next.clone(), &path, &buf);
            async move {
                let mut done = 0u64;
                loop {
                    let i = next.get();
                    if i >= blocks || start.elapsed() > cap {
                        return Ok::<_, String>((done, i < blocks));
                    }
                    next.set(i + 1);
                    let r = file
                        .read_at(i * block as u64, block)
                        .await
                        .map_err(|e| format!("reading {}: {e}", path.display()))?;
                    if r.len() != block {
                        return Err(format!("short O_DIRECT read ({} of {block} bytes)", r.len()));
                    }
                    // A cheap check that the device returned what was written.
                    if r[..64] != expect.as_bytes()[..64] {
                        return Err(format!("read back different bytes at {} of {}", i * block as u64, path.display()));
                    }
                    done += block as u64;
                }
            }
        })
        .collect();
    let (mut read, mut capped) = (0u64, false);
    for r in futures::future::join_all(workers).await {
        let (done, stopped) = r?;
        read += done;
        capped |= stopped;
    }
    let elapsed = start.elapsed();
    let _ = file.close().await;
    Ok(limit(
        "disk: O_DIRECT sequential read",
        format!(
            "{} MiB in {} KiB reads, {} in flight, of a file written just before",
            read >> 20,
            args.read_block_kib,
            qd
        ),
        read,
        read / block as u64,
        elapsed,
        capped,
    ))
}

/// `syncs` rounds of one aligned append then fdatasync; returns (round, fdatasync alone).
async fn disk_sync(args: &LimitsArgs) -> Result<(Limit, Limit), String> {
    let path = scratch(&args.dir, "sync");
    let _cleanup = Cleanup(path.clone());
    let file = open_new(&path).await?;
    let size = (args.sync_bytes as u64).max(file.alignment());
    let size = file.align_up(size) as usize;
    let mut buf = file.alloc_dma_buffer(size);
    fill(buf.as_bytes_mut(), 0xfeed);
    let buf = Rc::new(buf);
    let cap = Duration::from_secs(args.max_secs);
    let (mut rounds, mut syncs) = (histogram(), histogram());
    let start = Instant::now();
    let mut done = 0u64;
    while done < args.syncs && start.elapsed() <= cap {
        let t0 = Instant::now();
        file.write_rc_at(buf.clone(), done * size as u64)
            .await
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        let t1 = Instant::now();
        file.fdatasync().await.map_err(|e| format!("fdatasync {}: {e}", path.display()))?;
        let t2 = Instant::now();
        rounds.saturating_record((t2 - t0).as_micros() as u64);
        syncs.saturating_record((t2 - t1).as_micros() as u64);
        done += 1;
    }
    let elapsed = start.elapsed();
    let _ = file.close().await;
    let capped = done < args.syncs;
    let detail = format!("{done} rounds of one {size} B append then fdatasync (file grows)");
    let round = with_latency(
        limit("disk: append + fdatasync round", detail.clone(), done * size as u64, done, elapsed, capped),
        &rounds,
    );
    let sync = with_latency(
        limit("disk: fdatasync alone", format!("the fdatasync part of those {done} rounds"), 0, done, elapsed, capped),
        &syncs,
    );
    Ok((round, sync))
}

/// One TCP stream over loopback, sender thread → receiver thread.
fn tcp_loopback(args: &LimitsArgs) -> Result<Limit, String> {
    const BUF: usize = 1 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding 127.0.0.1:0: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let receiver = std::thread::Builder::new()
        .name("limits-tcp-rx".into())
        .spawn(move || -> std::io::Result<u64> {
            let (mut s, _) = listener.accept()?;
            let mut buf = vec![0u8; BUF];
            let mut got = 0u64;
            loop {
                match s.read(&mut buf)? {
                    0 => return Ok(got),
                    n => got += n as u64,
                }
            }
        })
        .map_err(|e| e.to_string())?;
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; BUF];
    fill(&mut buf, 0x7c9);
    let total = args.tcp_mib * 1024 * 1024;
    let cap = Duration::from_secs(args.max_secs);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total && start.elapsed() <= cap {
        let n = ((total - sent) as usize).min(BUF);
        s.write_all(&buf[..n]).map_err(|e| format!("sending over loopback: {e}"))?;
        sent += n as u64;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let got = receiver
        .join()
        .map_err(|_| "loopback receiver panicked".to_string())?
        .map_err(|e| format!("receiving over loopback: {e}"))?;
    let elapsed = start.elapsed();
    if got != sent {
        return Err(format!("loopback receiver got {got} of {sent} bytes"));
    }
    Ok(limit(
        "tcp: loopback, one stream",
        format!("{} MiB, sender thread → receiver thread, 1 MiB writes/reads", got >> 20),
        got,
        got.div_ceil(BUF as u64),
        elapsed,
        sent < total,
    ))
}

fn measure(args: &LimitsArgs) -> Result<LimitsReport, String> {
    if args.write_block_kib == 0 || args.write_block_kib & 3 != 0 {
        return Err("--write-block-kib must be a positive multiple of 4".into());
    }
    if args.read_block_kib == 0 || args.read_block_kib & 3 != 0 {
        return Err("--read-block-kib must be a positive multiple of 4".into());
    }
    if args.sync_bytes == 0 || args.sync_bytes & 4095 != 0 {
        return Err("--sync-bytes must be a positive multiple of 4096".into());
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("creating {}: {e}", args.dir.display()))?;
    let mut limits = Vec::new();
    if args.write_mib > 0 || args.read_mib > 0 || args.syncs > 0 {
        let a = args.clone();
        let disk = LocalExecutorBuilder::new(Placement::Unbound)
            .name("limits-disk")
            .spawn(move || async move {
                let mut out = Vec::new();
                if a.write_mib > 0 {
                    out.push(disk_write(&a).await?);
                }
                if a.read_mib > 0 {
                    out.push(disk_read(&a).await?);
                }
                if a.syncs > 0 {
                    let (round, sync) = disk_sync(&a).await?;
                    out.push(round);
                    out.push(sync);
                }
                Ok::<_, String>(out)
            })
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|e| e.to_string())??;
        limits.extend(disk);
    }
    if args.tcp_mib > 0 {
        limits.push(tcp_loopback(args)?);
    }
    Ok(LimitsReport {
        dir: std::fs::canonicalize(&args.dir).unwrap_or_else(|_| args.dir.clone()).display().to_string(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        limits,
    })
}

impl LimitsReport {
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).expect("report serialises"));
            return;
        }
        println!("machine limits (dir {}, {} CPUs)", self.dir, self.cpus);
        println!(
            "{:<32} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}  detail",
            "measurement", "MB/s", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for l in &self.limits {
            let lat = |v: f64| if l.max_ms > 0.0 { format!("{v:.3}") } else { "-".into() };
            let mbs = if l.bytes > 0 { format!("{:.1}", l.mb_per_sec) } else { "-".into() };
            println!(
                "{:<32} {:>10} {:>10.0} {:>9} {:>9} {:>9} {:>9}  {}{}",
                l.name,
                mbs,
                l.ops_per_sec,
                lat(l.p50_ms),
                lat(l.p99_ms),
                lat(l.p999_ms),
                lat(l.max_ms),
                l.detail,
                if l.capped { " (capped by --max-secs)" } else { "" }
            );
        }
    }
}

/// Runs `sluice bench limits`; returns the process exit code.
pub fn run(args: LimitsArgs) -> i32 {
    match measure(&args) {
        Ok(report) => {
            report.print(args.json);
            0
        }
        Err(e) => {
            eprintln!("sluice bench limits: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs every measurement with tiny sizes; checks what was measured (never how fast) and
    /// that no file is left behind.
    #[test]
    fn measures_everything_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("sluice-limits-test-{}", std::process::id()));
        let args = LimitsArgs {
            dir: dir.clone(),
            write_mib: 2,
            write_block_kib: 256,
            queue_depth: 2,
            read_mib: 3,
            read_block_kib: 1024,
            read_queue_depth: 2,
            read_max_secs: 60,
            syncs: 5,
            sync_bytes: 4096,
            tcp_mib: 2,
            max_secs: 60,
            json: false,
        };
        let report = measure(&args).expect("limits run");
        let names: Vec<&str> = report.limits.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "disk: O_DIRECT sequential write",
                "disk: O_DIRECT sequential read",
                "disk: append + fdatasync round",
                "disk: fdatasync alone",
                "tcp: loopback, one stream"
            ]
        );
        assert_eq!(report.limits[0].bytes, 2 << 20);
        assert_eq!(report.limits[1].bytes, 3 << 20);
        assert_eq!(report.limits[2].bytes, 5 * 4096);
        assert!(report.limits[2].max_ms > 0.0);
        assert_eq!(report.limits[4].bytes, 2 << 20);
        assert!(report.limits.iter().all(|l| !l.capped));
        assert_eq!(std::fs::read_dir(&dir).expect("dir exists").count(), 0, "scratch files left behind");
        std::fs::remove_dir(&dir).expect("remove test dir");
    }

    #[test]
    fn refuses_unaligned_sizes() {
        let mut args = LimitsArgs {
            dir: std::env::temp_dir(),
            write_mib: 0,
            write_block_kib: 6,
            queue_depth: 1,
            read_mib: 0,
            read_block_kib: 1024,
            read_queue_depth: 1,
            read_max_secs: 1,
            syncs: 0,
            sync_bytes: 4096,
            tcp_mib: 0,
            max_secs: 1,
            json: false,
        };
        assert!(measure(&args).unwrap_err().contains("--write-block-kib"));
        args.write_block_kib = 4;
        args.read_block_kib = 10;
        assert!(measure(&args).unwrap_err().contains("--read-block-kib"));
        args.read_block_kib = 4;
        args.sync_bytes = 100;
        assert!(measure(&args).unwrap_err().contains("--sync-bytes"));
    }
}
