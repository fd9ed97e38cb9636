//! Helpers shared by the storage crash tests: a one-thread glommio executor and a seeded LCG
//! for deterministic workloads.

// Each test binary includes this module and uses part of it.
#![allow(dead_code)]

use glommio::LocalExecutorBuilder;

/// Runs `f` to completion on a fresh glommio executor.
pub fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default().spawn(move || async move { f().await }).unwrap().join().unwrap();
}

/// The names of the segment files (`*.log`) in `dir`, sorted.
pub fn segment_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// Deterministic sizes and sync points (seeded LCG).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}
