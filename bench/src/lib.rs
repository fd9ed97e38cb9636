//! sluice-bench: a Kafka load generator (`sluice bench`), thread-per-core on glommio.
//!
//! Owns: a minimal pipelined Kafka client ([`client`]), the produce and consume workloads
//! ([`produce`], [`consume`]), and the report ([`report`]): records/s, MB/s and latency
//! percentiles from hdrhistogram, a live progress line, a table and optional JSON.
//!
//! Contract: it speaks only the Kafka protocol, so it measures any Kafka-compatible broker
//! (sluice or Apache Kafka) the same way. Batches are built once per connection and only
//! their timestamps and CRC are rewritten per request: no per-record allocation while running.

pub mod client;
pub mod codec;
pub mod consume;
pub mod limits;
pub mod produce;
pub mod report;

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
    /// Consume records from the beginning of a topic; reports end-to-end latency from each
    /// batch's timestamp.
    Consume(consume::ConsumeArgs),
    /// Measure this machine's ceilings: O_DIRECT write throughput, fdatasync latency and
    /// loopback TCP throughput (bounded; cleans up its files).
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
            0
        }
        Err(e) => {
            eprintln!("sluice bench: {e}");
            1
        }
    }
}
