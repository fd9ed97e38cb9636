//! The wall clock, read one way everywhere.
//!
//! Contract: [`now_ms`] is milliseconds since the Unix epoch, as Kafka's timestamps are; a clock
//! before the epoch reads 0 and one past `i64::MAX` ms reads `i64::MAX` (never a panic, never a
//! wrapped value). Use it for timestamps and ages that survive a restart; use `Instant` for
//! timeouts within one process.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (wall clock).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_ms_is_after_2020_and_does_not_go_back() {
        let a = super::now_ms();
        let b = super::now_ms();
        assert!(a > 1_577_836_800_000, "{a}");
        assert!(b >= a);
    }
}
