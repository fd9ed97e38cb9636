//! The API table: one entry per implemented Kafka API, with the versions it supports.
//!
//! Contract: [`APIS`] is the single source of truth. Dispatch looks handlers up here, and the
//! ApiVersions answer is generated from it, so the broker advertises exactly what it
//! implements. A handler runs in two phases: the future it returns is awaited before the next
//! request of the same connection is read (so appends keep the connection's order), and the
//! [`Reply`] inside resolves to the response frame (`None` for acks=0 produce, which gets no
//! answer). Responses are written in request order.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_client_quotas;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_share_group_offsets;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_share_group_offsets;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_share_group_offsets;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leader_hints;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod per_partition;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod share_acknowledge;
pub mod share_fetch;
pub mod share_group_describe;
pub mod share_group_heartbeat;
pub mod share_v2;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use crate::frame::{encode_response, FrameError, Request};
use crate::response::Frame;
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use sluice_shard::Shard;
use std::rc::Rc;

/// What a connection's handlers can reach.
pub struct Ctx {
    pub shard: Rc<Shard>,
    /// Request bytes read but not yet answered on this shard (`MAX_IN_FLIGHT_BYTES_PER_SHARD`).
    pub in_flight: Rc<glommio::sync::Semaphore>,
    /// Host and port advertised in Metadata: the listener's the client came in on.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// The listener the connection came in on.
    pub listener: Rc<crate::auth::Listener>,
    /// The connection's authentication (one `Ctx` per connection).
    pub session: std::cell::RefCell<crate::auth::Session>,
    /// This shard's view of the cluster: the live brokers Metadata, DescribeCluster and
    /// FindCoordinator list (this broker alone when it has no peers).
    pub cluster: Rc<crate::peer::ClusterView>,
    /// This shard's part of the broker-to-broker transport (`None`: a lone broker).
    pub peers: Option<Rc<crate::peer::PeerNet>>,
    /// Until when a client quota mutes the connection (KIP-219; `crate::quota::mute`): its
    /// reader starts no request before then.
    pub muted_until: std::cell::Cell<Option<std::time::Instant>>,
    /// The connection as this shard's share sessions know it: the sessions it opens are
    /// closed when it ends (`sluice_shard::share::disconnect`).
    pub share_conn: sluice_shard::share::ConnId,
}

impl Ctx {
    /// This broker's node id.
    pub fn node_id(&self) -> kafka_protocol::messages::BrokerId {
        kafka_protocol::messages::BrokerId(self.cluster.me().node_id.0)
    }

    /// The live brokers for Metadata and DescribeCluster, in node-id order: this broker at the
    /// address of the listener the client came in on, the others at their client address.
    pub fn brokers(&self) -> Vec<crate::peer::BrokerEndpoint> {
        let me = self.cluster.me().node_id;
        let mut out = self.cluster.brokers(std::time::Instant::now());
        for b in out.iter_mut().filter(|b| b.node_id == me) {
            b.host = self.advertised_host.clone();
            b.port = u16::try_from(self.advertised_port).unwrap_or(b.port);
        }
        out
    }
}

/// The second phase of a handler: the response frame, or none.
pub type Reply = LocalBoxFuture<'static, Result<Option<Frame>, FrameError>>;

/// The first phase of a handler.
pub type Handler = fn(Rc<Ctx>, Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>>;

/// One implemented API.
pub struct ApiSpec {
    pub key: ApiKey,
    /// The API's name in metrics and logs.
    pub name: &'static str,
    pub min_version: i16,
    pub max_version: i16,
    pub handle: Handler,
}

/// Every implemented API.
pub const APIS: &[ApiSpec] = &[
    produce::SPEC,
    fetch::SPEC,
    list_offsets::SPEC,
    metadata::SPEC,
    api_versions::SPEC,
    create_topics::SPEC,
    delete_topics::SPEC,
    offset_commit::SPEC,
    offset_fetch::SPEC,
    find_coordinator::SPEC,
    join_group::SPEC,
    heartbeat::SPEC,
    leave_group::SPEC,
    sync_group::SPEC,
    describe_groups::SPEC,
    list_groups::SPEC,
    delete_groups::SPEC,
    offset_delete::SPEC,
    init_producer_id::SPEC,
    delete_records::SPEC,
    offset_for_leader_epoch::SPEC,
    describe_configs::SPEC,
    alter_configs::SPEC,
    describe_log_dirs::SPEC,
    create_partitions::SPEC,
    incremental_alter_configs::SPEC,
    describe_cluster::SPEC,
    describe_quorum::SPEC,
    describe_topic_partitions::SPEC,
    elect_leaders::SPEC,
    alter_partition_reassignments::SPEC,
    list_partition_reassignments::SPEC,
    add_partitions_to_txn::SPEC,
    add_offsets_to_txn::SPEC,
    end_txn::SPEC,
    txn_offset_commit::SPEC,
    describe_transactions::SPEC,
    list_transactions::SPEC,
    describe_producers::SPEC,
    write_txn_markers::SPEC,
    consumer_group_heartbeat::SPEC,
    consumer_group_describe::SPEC,
    share_group_heartbeat::SPEC,
    share_group_describe::SPEC,
    share_fetch::SPEC,
    share_acknowledge::SPEC,
    describe_share_group_offsets::SPEC,
    alter_share_group_offsets::SPEC,
    delete_share_group_offsets::SPEC,
    sasl_handshake::SPEC,
    sasl_authenticate::SPEC,
    describe_user_scram_credentials::SPEC,
    alter_user_scram_credentials::SPEC,
    describe_acls::SPEC,
    create_acls::SPEC,
    delete_acls::SPEC,
    describe_client_quotas::SPEC,
    alter_client_quotas::SPEC,
];

/// The handler entry for an API key, if implemented (whatever the version).
pub fn lookup(api_key: i16) -> Option<&'static ApiSpec> {
    APIS.iter().find(|a| a.key as i16 == api_key)
}

impl ApiSpec {
    pub fn supports(&self, version: i16) -> bool {
        (self.min_version..=self.max_version).contains(&version)
    }
}

/// A reply that is already known.
pub fn reply_now(frame: Result<Bytes, FrameError>) -> Reply {
    async move { frame.map(|f| Some(f.into())) }.boxed_local()
}

/// Encodes `body` as the response to `req`.
pub fn respond<T: Encodable + HeaderVersion>(req: &Request, body: &T) -> Result<Bytes, FrameError> {
    encode_response(req.correlation_id, req.version, body)
}

/// Kafka's "no error" topic id.
pub fn uuid(bytes: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(bytes)
}

/// The name of a topic given by name, or by id when the name is empty (newer versions).
pub fn topic_name(ctx: &Ctx, name: &str, id: &uuid::Uuid) -> Option<String> {
    if !name.is_empty() || id.is_nil() {
        return Some(name.to_string());
    }
    ctx.shard.metadata().topic_by_id(id.as_bytes()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_versions_are_within_what_the_codec_knows() {
        for api in APIS {
            let known = api.key.valid_versions();
            // Versions beyond the crate's are served by a module of their own (`share_v2`).
            let max = share_v2::EXTENDED.iter().find(|(k, _)| *k == api.key).map_or(known.max, |(_, v)| *v);
            assert!(api.min_version >= known.min && api.max_version <= max, "{:?}", api.key);
            assert!(api.min_version <= api.max_version);
        }
        let mut keys: Vec<i16> = APIS.iter().map(|a| a.key as i16).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), APIS.len(), "an API is registered twice");
    }
}
