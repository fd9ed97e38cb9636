//! sluice-client: the client side of sluice — the tools that run against a broker. The
//! broker's serving code (sluice-net) does not depend on it; the `sluice` binary (net/bin/)
//! dispatches its subcommands here.
//!
//! Owns: a minimal pipelined Kafka client ([`client`]); the admin commands `sluice
//! topic|group|produce|consume` ([`admin`]); the load generator `sluice bench`,
//! thread-per-core on glommio: the produce and consume workloads ([`produce`], [`consume`]),
//! batch compression ([`codec`]), the machine's ceilings ([`limits`]) and the report
//! ([`report`]): records/s, MB/s and latency percentiles from hdrhistogram, a live progress
//! line, a table and optional JSON.
//!
//! Contract: client side only. It speaks only the Kafka protocol, so it works against and
//! measures any Kafka-compatible broker (sluice or Apache Kafka) the same way; of the broker
//! it uses only sluice-core's batch format ([`sluice_core::batch`]). The load generator builds
//! batches once per connection and only rewrites their timestamps and CRC per request: no
//! per-record allocation while running.

pub mod admin;
pub mod client;
pub mod codec;
pub mod consume;
pub mod limits;
pub mod produce;
pub mod report;
pub mod route;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(Debug, Subcommand)]
pub enum Workload {
    /// Produce records as fast as possible or at a fixed rate; reports ack latency.
    Produce(produce::ProduceArgs),
    /// Consume records from the beginning of a topic (`--consumers N`: N independent readers
    /// of every record at once); reports end-to-end latency from each batch's timestamp.
    Consume(consume::ConsumeArgs),
    /// Measure this machine's ceilings: O_DIRECT write and read throughput, fdatasync
    /// latency and loopback TCP throughput (bounded; cleans up its files).
    Limits(limits::LimitsArgs),
}

/// Runs a workload; returns the process exit code.
pub fn run(args: BenchArgs) -> i32 {
    let result = match args.workload {
        Workload::Produce(a) => produce::run(a),
        Workload::Consume(a) => consume::run(a),
        Workload::Limits(a) => return limits::run(a),
    };
    match result {
        Ok(report) => {
            report.print();
            if report.failed_connections > 0 {
                eprintln!("sluice bench: {} connection(s) failed: the run is incomplete", report.failed_connections);
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("sluice bench: {e}");
            1
        }
    }
}
