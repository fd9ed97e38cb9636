//! The slog logger raft-rs 0.7 requires, forwarding each record to `tracing` (target
//! `sluice::raft`), so Raft's elections and rejections show in the broker's log with its
//! filters (`RUST_LOG=sluice::raft=debug`).
//!
//! Contract: formatting happens only for records whose level `tracing` would keep; the drain
//! never fails and never blocks (no async drain, no I/O of its own).

use slog::{Drain, Level, OwnedKVList, Record, KV};
use std::fmt::Write as _;

/// A slog drain that re-emits records as tracing events.
pub struct TracingDrain;

/// The logger to give `RawNode::new`.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}

struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let enabled = match record.level() {
            Level::Critical | Level::Error => tracing::enabled!(target: "sluice::raft", tracing::Level::ERROR),
            Level::Warning => tracing::enabled!(target: "sluice::raft", tracing::Level::WARN),
            Level::Info => tracing::enabled!(target: "sluice::raft", tracing::Level::INFO),
            Level::Debug => tracing::enabled!(target: "sluice::raft", tracing::Level::DEBUG),
            Level::Trace => tracing::enabled!(target: "sluice::raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = KvText(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "sluice::raft", "{msg}{}", kv.0),
            Level::Warning => tracing::warn!(target: "sluice::raft", "{msg}{}", kv.0),
            Level::Info => tracing::info!(target: "sluice::raft", "{msg}{}", kv.0),
            Level::Debug => tracing::debug!(target: "sluice::raft", "{msg}{}", kv.0),
            Level::Trace => tracing::trace!(target: "sluice::raft", "{msg}{}", kv.0),
        }
        Ok(())
    }
}
