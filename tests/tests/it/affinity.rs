//! `--cores 2` runs one shard thread pinned to each CPU.

use std::fs;
use std::time::Duration;

use sluice_tests::{retry_until, Broker};

use crate::common::*;

#[derive(Debug, Clone)]
struct Task {
    tid: String,
    comm: String,
    cpus: String,
}

fn tasks(pid: i32) -> Vec<Task> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in rd.flatten().take(10_000) {
        let tid = e.file_name().to_string_lossy().to_string();
        let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let status = fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("").trim().to_string();
        out.push(Task { tid, comm: comm.trim().to_string(), cpus });
    }
    out
}

#[test]
fn two_cores_pin_one_shard_thread_per_cpu() {
    let _slot = shared_slot();
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    if online < 2 {
        eprintln!("skipping: only {online} CPU available");
        return;
    }
    let mut broker = Broker::start(2);
    let pid = broker.pid();
    let mut last = Vec::new();
    let ok = retry_until(Duration::from_secs(10), 100, Duration::from_millis(100), || {
        last = tasks(pid);
        let on = |cpu: &str| last.iter().any(|t| t.cpus == cpu);
        let named = |n: usize, cpu: &str| last.iter().any(|t| t.comm == format!("sluice-shard-{n}") && t.cpus == cpu);
        (on("0") && on("1") && named(0, "0") && named(1, "1")).then_some(())
    });
    assert!(
        ok.is_some(),
        "expected threads sluice-shard-0 pinned to exactly CPU 0 and sluice-shard-1 pinned to \
         exactly CPU 1; /proc/{pid}/task has (tid, comm, Cpus_allowed_list): {:?}",
        last.iter().map(|t| (t.tid.as_str(), t.comm.as_str(), t.cpus.as_str())).collect::<Vec<_>>()
    );
    // Each shard name appears once, on its own CPU.
    for n in 0..2 {
        let name = format!("sluice-shard-{n}");
        let shards: Vec<&Task> = last.iter().filter(|t| t.comm == name).collect();
        assert_eq!(shards.len(), 1, "threads named {name}: {shards:?}");
    }
    // The broker still answers after the check.
    wait_for_partitions(&broker.addr(), &topic_name("affinity"), 1);
    broker.stop();
}
