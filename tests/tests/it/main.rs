//! Black-box integration tests: each test starts its own `sluice` broker
//! (see `sluice_tests::Broker`) on a loopback port with a private data dir
//! and talks to it with rdkafka or raw Kafka frames.

mod common;

mod failure;

mod acks;
mod admin;
mod affinity;
mod catchup;
mod cluster;
mod cluster_ops;
mod coordinator_failover;
mod create_rollback;
mod damaged;
mod describe_apis;
mod elect_leaders;
mod group_offsets;
mod hostile;
mod invalid_batch;
mod leader_epochs;
mod long_poll;
mod malformed;
mod offsets;
mod produce_consume;
mod reassign;
mod rejoin;
mod replication;
mod restart;
mod rf_change;
mod shutdown;
mod snapshot_install;
mod startup;
mod torture;
mod txn_verify;
mod wire;
