//! sluice-net: the Kafka protocol server (the broker's serving side).
//!
//! Owns: starting the broker ([`server`]), connections and request framing ([`conn`],
//! [`frame`]), one handler file per Kafka API registered in one table that also answers
//! ApiVersions ([`api`]), encoding responses ([`response`]), the one mapping from every typed
//! error to a Kafka error code ([`errors`]), the metrics and readiness endpoint
//! ([`metrics_http`]), the allocator the binary installs ([`huge_alloc`]), the broker-to-broker transport and
//! cluster view ([`peer`]), client quotas ([`quota`]), and security:
//! TLS ([`tls`]), SASL mechanisms ([`sasl`]) and connection sessions and credentials ([`auth`]).
//!
//! Contract: server side only. It does not depend on the client side (sluice-client in bench/:
//! the Kafka client, the admin commands, the load generator and its compression codecs); the
//! `sluice` binary that puts both behind one command line is the `sluice` package in net/bin/.

// Integers from the wire are converted with `try_from` (or a lossless `From`).
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod api;
pub mod auth;
pub mod authz;
pub mod conn;
pub mod errors;
pub mod frame;
pub mod huge_alloc;
pub mod metrics_http;
pub mod peer;
pub mod quota;
pub mod response;
pub mod sasl;
pub mod send;
pub mod server;
pub mod tls;
