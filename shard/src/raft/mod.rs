//! Replication (#18): Raft per partition, the Kafka log being the Raft log.
//!
//! - [`types`]: node, group, term and index newtypes.
//! - [`window`]: the index ↔ offset window (one Raft entry = one Kafka batch).
//! - [`catchup`]: a follower far behind fed from the log below the window (index ↔ offset
//!   by counting batch headers from an anchor).
//! - [`control`]: entries that are not Kafka data (a new leader's empty entry, membership
//!   changes) as sluice control batches.
//! - [`store`]: a replica's storage for raft-rs over a [`store::ReplicaLog`] (the real
//!   partition log, or [`memlog`] in tests and the simulation).
//! - [`wire`]: sluice's typed broker-to-broker Raft messages and their checked encoding (no
//!   protobuf from the wire).
//! - [`driver`]: the per-shard multi-group driver (ticks, Ready rounds with one sync round
//!   for all groups, proposals, high watermarks, per-broker outgoing batches).
//! - [`kafkalog`]: [`store::ReplicaLog`] over the real partition log.
//! - [`logger`]: raft-rs's slog output forwarded to tracing.
//!
//! Contract: sans-I/O — nothing here opens sockets, files or timers; the shard drives it.

pub mod catchup;
pub mod control;
pub mod driver;
pub mod kafkalog;
pub mod logger;
pub mod memlog;
pub mod store;
pub mod types;
pub mod window;
pub mod wire;

pub use driver::{Committed, Driver, DriverConfig, Event, OutBatch, ProposalHandle, ProposeError, ReadyRound};
pub use types::{GroupId, NodeId, RaftIndex, Term};
