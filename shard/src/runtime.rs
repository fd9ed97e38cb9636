//! Starting and stopping the shards: one glommio executor pinned per core, the cross-core
//! mesh, start-up readiness, and the ordered shutdown.
//!
//! Contract: [`run`] returns only after every shard has stopped, with `true` when every log
//! closed cleanly (the caller then leaves the clean-shutdown marker). Start-up: every shard joins
//! the mesh, probes direct I/O, opens the logs it owns, and reports; `on_ready` runs once all
//! reported success (a failure stops the whole broker with the shard's message). Shutdown, on
//! SIGTERM or SIGINT: every shard stops accepting and finishes its in-flight requests (the
//! `serve` future returns); once all have drained, every shard closes its logs (everything
//! appended becomes durable) while still answering peers; once all have closed, all exit.
//!
//! Failure policy: a panic (a failed assertion included) on any thread aborts the whole process
//! at once (the hook installed by [`install_abort_on_panic`], called by [`run`]), after one
//! line on stderr and in the log naming the thread and the panic. There is no half-alive
//! broker: a dead shard would leave its partitions unserved and its peers waiting forever in
//! the shutdown barriers. Acknowledged data is on disk; the next start recovers the rest.

use crate::metadata::MetadataSnapshot;
use crate::msg::Envelope;
use crate::shard::Shard;
use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{LocalExecutorBuilder, Placement};
use sluice_core::config::BrokerConfig;
use sluice_core::limits::CROSS_CORE_CHANNEL_CAPACITY;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Why the broker could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start shard {shard} on cpu {cpu}: {why}")]
    Spawn { shard: usize, cpu: usize, why: String },
    #[error("shard {shard}: {why}")]
    Startup { shard: usize, why: String },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Installs (once) the process-wide panic hook of the failure policy: print the thread's name
/// (`sluice-shard-<n>` for a shard) and the panic on stderr and in the log, then abort.
pub fn install_abort_on_panic() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let thread = thread_name();
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            eprintln!("sluice: fatal: thread {thread} panicked at {at}: {what}; aborting the whole process");
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                eprintln!("{backtrace}");
            }
            tracing::error!(thread = %thread, at = %at, panic = %what, "fatal: panic; aborting the whole process");
            std::process::abort();
        }));
    });
}

/// The OS name of the calling thread (`sluice-shard-<n>` on a shard, set by `name_thread`).
fn thread_name() -> String {
    let mut buf = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL-terminated, into the buffer we own.
    let ok = unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr() as libc::c_ulong, 0, 0, 0) } == 0;
    let os = if ok {
        std::ffi::CStr::from_bytes_until_nul(&buf).ok().map(|c| c.to_string_lossy().into_owned())
    } else {
        None
    };
    os.or_else(|| std::thread::current().name().map(str::to_string)).unwrap_or_else(|| "<unnamed>".to_string())
}

/// Barrier that executors reach without blocking their threads (they keep serving peers).
struct Phase(AtomicUsize);

impl Phase {
    async fn arrive_and_wait(&self, n: usize) {
        self.0.fetch_add(1, Ordering::AcqRel);
        while self.0.load(Ordering::Acquire) < n {
            glommio::timer::sleep(Duration::from_millis(sluice_core::limits::SHARD_BARRIER_POLL_MS)).await;
        }
    }
}

/// What one shard's thread needs from [`run`]: its place, the shared mesh and barriers, and
/// where to report start-up and close failures.
struct ShardStart {
    i: usize,
    n: usize,
    config: BrokerConfig,
    clean_start: bool,
    snapshot: MetadataSnapshot,
    mesh: MeshBuilder<Envelope, Full>,
    ready_tx: mpsc::Sender<(usize, Result<(), String>)>,
    stop_rx: oneshot::Receiver<()>,
    drained: Arc<Phase>,
    closed: Arc<Phase>,
    close_failures: Arc<AtomicUsize>,
}

/// Runs the broker: one shard per entry of `cpus`, `payloads[i]` handed to shard i's `serve`.
pub fn run<P, F, Fut>(
    config: BrokerConfig,
    clean_start: bool,
    cpus: Vec<usize>,
    snapshot: MetadataSnapshot,
    payloads: Vec<P>,
    serve: F,
    on_ready: impl FnOnce(),
) -> Result<bool, RuntimeError>
where
    P: Send + 'static,
    F: Fn(Rc<Shard>, P) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    install_abort_on_panic();
    let n = cpus.len();
    assert_eq!(payloads.len(), n, "one payload per shard");
    assert!(n > 0 && n <= u16::MAX as usize, "shard count out of range");
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(RuntimeError::Signals)?;
    let mesh = MeshBuilder::<Envelope, _>::full(n, CROSS_CORE_CHANNEL_CAPACITY);
    let drained = Arc::new(Phase(AtomicUsize::new(0)));
    let closed = Arc::new(Phase(AtomicUsize::new(0)));
    let close_failures = Arc::new(AtomicUsize::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut stops = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);

    for (i, (cpu, payload)) in cpus.iter().copied().zip(payloads).enumerate() {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        let start = ShardStart {
            i,
            n,
            config: config.clone(),
            clean_start,
            snapshot: snapshot.clone(),
            mesh: mesh.clone(),
            ready_tx: ready_tx.clone(),
            stop_rx,
            drained: drained.clone(),
            closed: closed.clone(),
            close_failures: close_failures.clone(),
        };
        let serve = serve.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name("sluice")
            .spin_before_park(Duration::from_micros(config.shard_spin_before_park_us))
            .spawn(move || shard_main(start, payload, serve))
            .map_err(|e| RuntimeError::Spawn { shard: i, cpu, why: e.to_string() })?;
        handles.push(handle);
    }
    drop(ready_tx);

    if let Some(e) = startup_error(&ready_rx, n) {
        // Shards that failed before joining the mesh leave the others waiting in the join,
        // so they cannot be joined; the caller exits the process.
        stop_all(stops);
        return Err(e);
    }
    on_ready();
    stop_on_signal(signals, stops);
    for h in handles {
        // A shard that panicked aborted the process in the panic hook: join returns Ok only.
        let _ = h.join();
    }
    // Clean when every log closed with everything durable and its indexes written.
    Ok(close_failures.load(Ordering::Acquire) == 0)
}

/// One shard's life on its executor: join the mesh, recover, report, serve until stopped,
/// then drain and close in step with the other shards.
async fn shard_main<P, F, Fut>(start: ShardStart, payload: P, serve: F)
where
    F: Fn(Rc<Shard>, P) -> Fut,
    Fut: Future<Output = ()>,
{
    let ShardStart { i, n, config, clean_start, snapshot, mesh, ready_tx, stop_rx, drained, closed, close_failures } =
        start;
    name_thread(&format!("sluice-shard-{i}"));
    let id = crate::shard::shard_id(i);
    crate::metrics::fault::arm(id);
    let (senders, receivers) = match mesh.join().await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready_tx.send((i, Err(format!("cannot join the cross-core mesh: {e}"))));
            return;
        }
    };
    let shard = Shard::new(id, n, config.clone(), MetadataSnapshot::default(), senders, clean_start);
    shard.serve_peers(receivers);
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let _ = stop_rx.await;
            shard.begin_shutdown();
        })
        .detach();
    }
    let ok = recover(&shard, &config, snapshot, clean_start).await;
    let failed = ok.is_err();
    let _ = ready_tx.send((i, ok));
    if !failed {
        crate::groups::coordinator::spawn_sweeper(shard.clone());
        crate::txn::coordinator::spawn_sweeper(shard.clone());
        let retention = spawn_retention(shard.clone());
        spawn_producer_expiry(shard.clone());
        serve(shard.clone(), payload).await;
        // A retention or compaction pass in flight may be waiting on the blocking pool: the
        // executor must outlive it (glommio aborts a blocking job whose executor is gone).
        let _ = retention.await;
    }
    drained.arrive_and_wait(n).await;
    tracing::debug!(shard = %shard.id, stages = %crate::metrics::stage_summary(), "per-stage latency");
    let failed = shard.close_all().await;
    close_failures.fetch_add(failed, Ordering::AcqRel);
    closed.arrive_and_wait(n).await;
    // Tasks still running (a Raft state write, a metadata save) may have a job on the blocking
    // pool; the executor must outlive it.
    let max = Duration::from_millis(sluice_core::limits::SHUTDOWN_BLOCKING_SETTLE_MS);
    let left = sluice_storage::disk::settle(max).await;
    if left > 0 {
        tracing::warn!(shard = %shard.id, jobs = left, "blocking jobs still running at shutdown");
    }
}

/// A shard's start-up: storage settings, the direct-I/O probe, then opening (recovering) the
/// logs it owns in `snapshot`.
async fn recover(
    shard: &Shard,
    config: &BrokerConfig,
    snapshot: MetadataSnapshot,
    clean_start: bool,
) -> Result<(), String> {
    sluice_storage::set_open_file_limit(config.max_open_files_per_shard);
    sluice_storage::cache::set_capacity(config.read_cache_bytes_for(shard.n_shards));
    sluice_storage::probe_direct_io(&config.data_dir).await.map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    shard.install(snapshot).await.map_err(|e| e.to_string())?;
    // Partition directories deleted before a stop or a crash, not freed yet.
    if shard.id.0 == 0 {
        sluice_storage::reclaim::sweep_data_dir(&config.data_dir).await;
    }
    tracing::info!(
        shard = %shard.id,
        partitions = shard.owned_partitions(),
        truncated_bytes = shard.stats.truncated_bytes_at_open.get(),
        clean_start,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "recovered"
    );
    Ok(())
}

/// Waits for the start-up report of each of the `n` shards; the first failure reported (or a
/// shard gone before reporting), if any.
fn startup_error(ready_rx: &mpsc::Receiver<(usize, Result<(), String>)>, n: usize) -> Option<RuntimeError> {
    let mut error = None;
    for _ in 0..n {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((shard, Err(why))) => {
                error.get_or_insert(RuntimeError::Startup { shard, why });
            }
            Err(_) => {
                error.get_or_insert(RuntimeError::Startup { shard: 0, why: "a shard exited during start-up".into() });
                break;
            }
        }
    }
    error
}

fn stop_all(stops: Vec<oneshot::Sender<()>>) {
    for s in stops {
        let _ = s.send(());
    }
}

/// Stops every shard on the first SIGTERM or SIGINT (from a thread of its own).
fn stop_on_signal(mut signals: signal_hook::iterator::Signals, stops: Vec<oneshot::Sender<()>>) {
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "shutting down");
            }
            stop_all(stops);
        })
        .expect("spawn the signal thread");
}

/// Deletes expired segments every `log_retention_check_interval_ms` until the shard stops, and
/// drops the metrics series of deleted topics. The task ends at the first check after the shard
/// starts stopping (a pass in flight finishes its current log first).
///
/// The task runs in the shard's background task queue (`BACKGROUND_TASK_QUEUE_SHARES` against
/// the default queue's 1000, latency not important): when a compaction pass and request tasks
/// are runnable together, the requests' queue runs first (glommio schedules the queue with the
/// least share-weighted runtime), and a pass pauses every `COMPACTION_SLICE_MICROS` so the
/// shard polls its I/O (`sluice_storage::compact::Pace`).
fn spawn_retention(shard: Rc<Shard>) -> glommio::task::JoinHandle<()> {
    let background = glommio::executor().create_task_queue(
        glommio::Shares::Static(sluice_core::limits::BACKGROUND_TASK_QUEUE_SHARES),
        glommio::Latency::NotImportant,
        "background",
    );
    let task = async move {
        let every = Duration::from_millis(
            shard.config.log_retention_check_interval_ms.max(sluice_core::limits::MIN_TIMER_INTERVAL_MS),
        );
        loop {
            use futures::future::{select, Either};
            use futures::FutureExt;
            match select(glommio::timer::sleep(every).boxed_local(), shard.stopping().boxed_local()).await {
                Either::Left(_) => {
                    shard.enforce_retention().await;
                    crate::metrics::drop_deleted_topics(&shard);
                }
                Either::Right(_) => return,
            }
        }
    };
    glommio::spawn_local_into(task, background).expect("the background task queue was just created").detach()
}

/// Removes producer state older than `producer_id_expiration_ms` from this shard's partitions
/// every `PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS` (or the expiration, when shorter).
fn spawn_producer_expiry(shard: Rc<Shard>) {
    use sluice_core::limits::PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS;
    glommio::spawn_local(async move {
        let ms = PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS
            .min(shard.config.producer_id_expiration_ms)
            .max(sluice_core::limits::MIN_TIMER_INTERVAL_MS);
        let every = Duration::from_millis(ms);
        loop {
            use futures::future::{select, Either};
            use futures::FutureExt;
            match select(glommio::timer::sleep(every).boxed_local(), shard.stopping().boxed_local()).await {
                Either::Left(_) => {
                    let removed = shard.expire_producers();
                    if removed > 0 {
                        tracing::debug!(shard = %shard.id, removed, "expired producer state removed");
                    }
                }
                Either::Right(_) => return,
            }
        }
    })
    .detach();
}

fn name_thread(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().take(15).collect();
    bytes.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from the pointer.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_reports_the_first_failure_or_a_shard_that_left() {
        let (tx, rx) = mpsc::channel();
        tx.send((0, Ok(()))).unwrap();
        tx.send((2, Err("no direct I/O".to_string()))).unwrap();
        tx.send((1, Err("later".to_string()))).unwrap();
        match startup_error(&rx, 3) {
            Some(RuntimeError::Startup { shard, why }) => assert_eq!((shard, why.as_str()), (2, "no direct I/O")),
            other => panic!("{other:?}"),
        }
        tx.send((0, Ok(()))).unwrap();
        tx.send((1, Ok(()))).unwrap();
        assert!(startup_error(&rx, 2).is_none(), "all ready");
        tx.send((0, Ok(()))).unwrap();
        drop(tx);
        match startup_error(&rx, 2) {
            Some(RuntimeError::Startup { why, .. }) => assert!(why.contains("exited during start-up"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
