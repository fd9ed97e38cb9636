//! Contract: drives the SASL handshake/authenticate state machine (net/src/auth, net/src/sasl)
//! with arbitrary mechanisms and messages; see `sluice_fuzz::sasl` for the layout and checks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_fuzz::sasl(data));
