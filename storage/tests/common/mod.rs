//! Helpers shared by the storage crash tests: a one-thread glommio executor and a seeded LCG
//! for deterministic workloads.

// Each test binary includes this module and uses part of it.
#![allow(dead_code)]

use glommio::LocalExecutorBuilder;

/// Runs `f` to completion on a fresh glommio executor.
pub fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default().spawn(move || async move { f().await }).unwrap().join().unwrap();
}

/// Deterministic sizes and sync points (seeded LCG).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}
