//! `sluice cluster start`: a local cluster of `sluice serve` children on loopback, in the
//! foreground (as `rpk container start -n 3` gives Redpanda users).
//!
//! Contract: broker i (node id i) gets the data dir `DIR/broker-i`, the client port
//! `base_port + i`, the peer port `base_port + PEER_PORT_OFFSET + i` and the metrics port
//! `base_port + METRICS_PORT_OFFSET + i`, its log in `DIR/broker-i.log`; all share one cluster
//! id, made once and kept in `DIR/cluster.id`. For each broker it prints the node id, client
//! address, PID and the exact `sluice serve` command that starts the same broker by hand, then
//! `sluice cluster ready bootstrap=...` once every broker printed its ready line (within
//! `CLUSTER_READY_TIMEOUT_MS`). SIGTERM or SIGINT stops every child by PID (SIGTERM, then
//! SIGKILL after `CLUSTER_STOP_GRACE_MS`) and exits 0; a child that exits on its own makes it
//! stop the others and exit 1. Children are never left running.

use clap::Args;
use sluice_core::limits::{
    CLUSTER_POLL_MS, CLUSTER_READY_TIMEOUT_MS, CLUSTER_STOP_GRACE_MS, MAX_CLUSTER_START_BROKERS,
};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Client port `base + i`; peer port `base + PEER_PORT_OFFSET + i`.
const PEER_PORT_OFFSET: u16 = 100;
/// Metrics port `base + METRICS_PORT_OFFSET + i`.
const METRICS_PORT_OFFSET: u16 = 200;

#[derive(Debug, Args, Clone)]
pub struct StartArgs {
    /// Number of brokers (node ids 0..N)
    #[arg(long, default_value_t = 3)]
    pub brokers: u16,
    /// Directory holding every broker's data dir (broker-N), log and the cluster id
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Client port of broker 0; broker i listens on base+i, its peer port is base+100+i, its
    /// metrics port base+200+i
    #[arg(long, default_value_t = 9092)]
    pub base_port: u16,
    /// Shards (cores) of each broker
    #[arg(long, default_value_t = 1)]
    pub cores_per_broker: usize,
    /// Heartbeat interval between brokers, in ms (passed to every broker)
    #[arg(long)]
    pub peer_heartbeat_interval_ms: Option<u64>,
    /// Session timeout between brokers, in ms (passed to every broker)
    #[arg(long)]
    pub peer_session_timeout_ms: Option<u64>,
}

/// One broker of the plan: its node id, ports and `sluice serve` arguments.
struct Planned {
    node: u16,
    client: String,
    args: Vec<String>,
    log: PathBuf,
}

/// Runs the cluster until a signal or a child's death; the process exit code.
pub fn start(args: StartArgs) -> i32 {
    match plan(&args).and_then(|p| run(&args, p)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice cluster start: {e}");
            1
        }
    }
}

fn plan(args: &StartArgs) -> Result<Vec<Planned>, String> {
    if !(1..=MAX_CLUSTER_START_BROKERS).contains(&args.brokers) {
        return Err(format!("--brokers {} is out of range (1..={MAX_CLUSTER_START_BROKERS})", args.brokers));
    }
    let last = args.brokers - 1 + METRICS_PORT_OFFSET;
    if args.base_port == 0 || args.base_port.checked_add(last).is_none() {
        return Err(format!("--base-port {} leaves no room for {} brokers' ports", args.base_port, args.brokers));
    }
    std::fs::create_dir_all(&args.data_dir).map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let dir = std::fs::canonicalize(&args.data_dir).map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let cluster_id = cluster_id(&dir)?;
    let voters: Vec<String> =
        (0..args.brokers).map(|i| format!("{i}@127.0.0.1:{}", args.base_port + PEER_PORT_OFFSET + i)).collect();
    let voters = voters.join(",");
    Ok((0..args.brokers).map(|i| planned(args, &dir, &cluster_id, &voters, i)).collect())
}

fn planned(args: &StartArgs, dir: &Path, cluster_id: &str, voters: &str, i: u16) -> Planned {
    let client = format!("127.0.0.1:{}", args.base_port + i);
    let mut a: Vec<String> = vec![
        "serve".into(),
        "--node-id".into(),
        i.to_string(),
        "--listen".into(),
        client.clone(),
        "--peer-listen".into(),
        format!("127.0.0.1:{}", args.base_port + PEER_PORT_OFFSET + i),
        "--metrics-listen".into(),
        format!("127.0.0.1:{}", args.base_port + METRICS_PORT_OFFSET + i),
        "--controller-quorum-voters".into(),
        voters.to_string(),
        "--cluster-id".into(),
        cluster_id.to_string(),
        "--data-dir".into(),
        dir.join(format!("broker-{i}")).display().to_string(),
        "--cores".into(),
        args.cores_per_broker.to_string(),
    ];
    if let Some(h) = args.peer_heartbeat_interval_ms {
        a.extend(["--peer-heartbeat-interval-ms".into(), h.to_string()]);
    }
    if let Some(t) = args.peer_session_timeout_ms {
        a.extend(["--peer-session-timeout-ms".into(), t.to_string()]);
    }
    Planned { node: i, client, args: a, log: dir.join(format!("broker-{i}.log")) }
}

/// The cluster id kept in `DIR/cluster.id`, made on the first start.
fn cluster_id(dir: &Path) -> Result<String, String> {
    let file = dir.join("cluster.id");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let id = text.trim().to_string();
            sluice_core::cluster::check_cluster_id(&id).map_err(|e| format!("{}: {e}", file.display()))?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = sluice_shard::metadata::new_cluster_id();
            std::fs::write(&file, format!("{id}\n")).map_err(|e| format!("{}: {e}", file.display()))?;
            Ok(id)
        }
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

/// Starts the children, prints them, waits for their ready lines, then supervises.
fn run(args: &StartArgs, plan: Vec<Planned>) -> Result<i32, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the sluice binary: {e}"))?;
    let (ready_tx, ready_rx) = mpsc::channel::<u16>();
    let mut children: Vec<(u16, Child)> = Vec::with_capacity(plan.len());
    for p in &plan {
        match spawn(&exe, p, ready_tx.clone()) {
            Ok(child) => {
                print_broker(&exe, p, child.id());
                children.push((p.node, child));
            }
            Err(e) => {
                stop_all(&mut children);
                return Err(e);
            }
        }
    }
    drop(ready_tx);
    let bootstrap: Vec<&str> = plan.iter().map(|p| p.client.as_str()).collect();
    let code = supervise(&mut children, &ready_rx, &stop, &bootstrap.join(","), args.data_dir.as_path());
    stop_all(&mut children);
    Ok(code)
}

fn spawn(exe: &Path, p: &Planned, ready: mpsc::Sender<u16>) -> Result<Child, String> {
    let log = std::fs::File::create(&p.log).map_err(|e| format!("{}: {e}", p.log.display()))?;
    let mut child = Command::new(exe)
        .args(&p.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start broker {}: {e}", p.node))?;
    let out = child.stdout.take().expect("piped stdout");
    let node = p.node;
    std::thread::Builder::new()
        .name(format!("cluster-broker-{node}"))
        .spawn(move || forward_stdout(node, out, ready))
        .map_err(|e| format!("cannot watch broker {node}: {e}"))?;
    Ok(child)
}

/// Prints a child's stdout prefixed with its node id; reports its ready line.
fn forward_stdout(node: u16, out: std::process::ChildStdout, ready: mpsc::Sender<u16>) {
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if line.starts_with("sluice ready") {
            let _ = ready.send(node);
        }
        println!("[broker {node}] {line}");
    }
}

fn print_broker(exe: &Path, p: &Planned, pid: u32) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "broker node_id={} client={} pid={} log={}", p.node, p.client, pid, p.log.display());
    let _ = writeln!(out, "  by hand: {} {}", exe.display(), p.args.join(" "));
    let _ = out.flush();
}

/// Waits for every ready line, then for a signal or a child's exit; the exit code.
fn supervise(
    children: &mut [(u16, Child)],
    ready: &mpsc::Receiver<u16>,
    stop: &AtomicBool,
    bootstrap: &str,
    dir: &Path,
) -> i32 {
    let deadline = Instant::now() + Duration::from_millis(CLUSTER_READY_TIMEOUT_MS);
    let mut waiting = children.len();
    let poll = Duration::from_millis(CLUSTER_POLL_MS);
    loop {
        if stop.load(Ordering::Relaxed) {
            println!("sluice cluster: stopping {} brokers", children.len());
            return 0;
        }
        if let Some((node, status)) = exited(children) {
            eprintln!("sluice cluster: broker {node} exited ({status}); see {}/broker-{node}.log", dir.display());
            return 1;
        }
        while waiting > 0 && ready.try_recv().is_ok() {
            waiting -= 1;
            if waiting == 0 {
                println!("sluice cluster ready bootstrap={bootstrap}");
            }
        }
        if waiting > 0 && Instant::now() >= deadline {
            eprintln!("sluice cluster: {waiting} brokers not ready within {CLUSTER_READY_TIMEOUT_MS} ms");
            return 1;
        }
        std::thread::sleep(poll);
    }
}

/// The first child that has exited, if any.
fn exited(children: &mut [(u16, Child)]) -> Option<(u16, std::process::ExitStatus)> {
    children.iter_mut().find_map(|(node, c)| c.try_wait().ok().flatten().map(|s| (*node, s)))
}

/// SIGTERM to every child still running (by PID), then SIGKILL after the grace period.
fn stop_all(children: &mut [(u16, Child)]) {
    for (_, c) in children.iter_mut() {
        if matches!(c.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill(2) on the PID of a child we started and have not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
    let deadline = Instant::now() + Duration::from_millis(CLUSTER_STOP_GRACE_MS);
    for (node, c) in children.iter_mut() {
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(CLUSTER_POLL_MS));
        }
        if matches!(c.try_wait(), Ok(None)) {
            eprintln!("sluice cluster: broker {node} did not stop within {CLUSTER_STOP_GRACE_MS} ms: killing it");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
