//! sluice-net: the Kafka protocol server and the `sluice` binary.
//!
//! Owns: the command line ([`cli`]), starting the broker ([`server`]), connections and
//! request framing ([`conn`], [`frame`]), one handler file per Kafka API registered in one
//! table that also answers ApiVersions ([`api`]), and the one mapping from every typed error to
//! a Kafka error code ([`errors`]).

pub mod admin;
pub mod api;
pub mod cli;
pub mod conn;
pub mod errors;
pub mod frame;
pub mod huge_alloc;
pub mod metrics_http;
pub mod response;
pub mod server;
