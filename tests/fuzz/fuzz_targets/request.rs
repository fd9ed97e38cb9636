#![no_main]
use libfuzzer_sys::fuzz_target;

// The broker's allocator: decode under the same rules as sluice (net/bin/src/main.rs).
#[global_allocator]
static ALLOCATOR: sluice_net::huge_alloc::HugeAlloc = sluice_net::huge_alloc::HugeAlloc;

fuzz_target!(|data: &[u8]| sluice_fuzz::request(data));
