//! Metadata (key 3), versions 0–13: brokers, topics, partitions, leaders, topic ids.
//!
//! Contract: topics named in the request that do not exist are auto-created first when the
//! broker allows it (`auto_create_topics_enable`) and the request does (v4+ flag), and the
//! answer then describes them fully. A null topic list (or an empty one at v0) means all
//! topics. The brokers listed are every live cluster member in this shard's cluster view
//! (this broker alone without peers), rack null. Each partition is described from the
//! metadata snapshot: replicas, leader, leader epoch (v7+), ISR and, as offline replicas, the
//! replicas not live in the view. A partition whose leader is unknown or not live is answered
//! with leader -1 and LEADER_NOT_AVAILABLE (clients retry after a metadata refresh). A topic
//! of a lone broker written before replication has this broker as its only replica, leader
//! at epoch 0. The controller named is the view's (the metadata log's leader, or this broker).

use super::{reply_now, respond, topic_name, uuid, ApiSpec, Ctx, Reply};
use crate::authz::Authz;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_core::cluster::NodeId;
use sluice_core::PartitionId;
use sluice_shard::admin::auto_create;
use sluice_shard::metadata::acl::{op::DESCRIBE, resource, CLUSTER_NAME};
use sluice_shard::metadata::validate_topic_name;
use sluice_shard::{MetadataSnapshot, TopicMeta};
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec { key: ApiKey::Metadata, name: "Metadata", min_version: 0, max_version: 13, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: MetadataRequest = decode_body(&req)?;
        let all = body.topics.is_none() || (req.version == 0 && body.topics.as_ref().is_some_and(|t| t.is_empty()));
        // Requested topics: (name if resolvable, requested id).
        let requested: Vec<(Option<String>, uuid::Uuid)> = body
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
                (topic_name(&ctx, &name, &t.topic_id), t.topic_id)
            })
            .collect();
        let may_create =
            ctx.shard.config.auto_create_topics_enable && (req.version < 4 || body.allow_auto_topic_creation);
        let authz = crate::authz::Authz::new(&ctx, &req);
        if may_create && !all {
            let meta = ctx.shard.metadata();
            let missing: Vec<String> = requested
                .iter()
                .filter_map(|(n, _)| n.clone())
                .filter(|n| !meta.topics.contains_key(n) && validate_topic_name(n).is_ok() && authz.may_create(n))
                .collect();
            if !missing.is_empty() {
                auto_create(&ctx.shard, missing).await;
            }
        }
        let meta = ctx.shard.metadata();
        let now = std::time::Instant::now();
        let live = |n: i32| ctx.cluster.is_listed(NodeId(n), now);
        let d = Describer { meta: &meta, v: req.version, me: ctx.node_id().0, live: &live };
        let topics = if all {
            meta.topics.iter().filter(|(n, _)| authz.topic(DESCRIBE, n)).map(|(n, t)| d.topic(n, t)).collect()
        } else {
            requested
                .iter()
                .map(|(name, id)| match name.as_deref().and_then(|n| meta.topics.get(n).map(|t| (n, t))) {
                    _ if name.as_deref().is_some_and(|n| !authz.topic(DESCRIBE, n)) => {
                        refused_topic(name.as_deref().unwrap_or_default())
                    }
                    Some((n, t)) => d.topic(n, t),
                    None => missing_topic(name.as_deref(), id, req.version),
                })
                .collect()
        };
        let topics = with_operations(&authz, topics, req.version >= 8 && body.include_topic_authorized_operations);
        let cluster_ops = if (8..=10).contains(&req.version) && body.include_cluster_authorized_operations {
            authz.operations(resource::CLUSTER, CLUSTER_NAME)
        } else {
            i32::MIN
        };
        let controller = BrokerId(ctx.cluster.controller().0);
        let brokers = ctx
            .brokers()
            .into_iter()
            .map(|b| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.node_id.0))
                    .with_host(StrBytes::from_string(b.host))
                    .with_port(i32::from(b.port))
                    .with_rack(None)
            })
            .collect();
        let resp = MetadataResponse::default()
            .with_throttle_time_ms(0)
            .with_brokers(brokers)
            .with_cluster_id((req.version >= 2).then(|| StrBytes::from_string(meta.cluster_id.clone())))
            .with_controller_id(if req.version >= 1 { controller } else { BrokerId(-1) })
            .with_topics(topics)
            .with_cluster_authorized_operations(cluster_ops);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}

/// Describes topics of one snapshot to a client of version `v`.
struct Describer<'a> {
    meta: &'a MetadataSnapshot,
    v: i16,
    /// This broker's node id.
    me: i32,
    live: &'a dyn Fn(i32) -> bool,
}

impl Describer<'_> {
    fn topic(&self, name: &str, t: &TopicMeta) -> MetadataResponseTopic {
        let count = i32::try_from(t.shards.len()).expect("partitions per topic are at most MAX_PARTITIONS_PER_TOPIC");
        let partitions = (0..count).map(|p| self.partition(name, p)).collect();
        MetadataResponseTopic::default()
            .with_error_code(0)
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
            .with_topic_id(if self.v >= 10 { uuid(t.id) } else { uuid::Uuid::nil() })
            .with_is_internal(sluice_shard::admin::is_internal(name))
            .with_partitions(partitions)
            .with_topic_authorized_operations(i32::MIN)
    }

    fn partition(&self, topic: &str, p: i32) -> MetadataResponsePartition {
        let state = self.meta.partition(topic, PartitionId(p), self.me).expect("p is below the partition count");
        let ids = |v: &[i32]| v.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
        let offline: Vec<i32> = state.replicas.iter().copied().filter(|n| !(self.live)(*n)).collect();
        let led = state.leader >= 0 && (self.live)(state.leader);
        MetadataResponsePartition::default()
            .with_error_code(if led { 0 } else { ResponseError::LeaderNotAvailable.code() })
            .with_partition_index(p)
            .with_leader_id(BrokerId(if led { state.leader } else { -1 }))
            .with_leader_epoch(if self.v >= 7 { state.leader_epoch } else { -1 })
            .with_replica_nodes(ids(&state.replicas))
            .with_isr_nodes(ids(&state.isr))
            .with_offline_replicas(if self.v >= 5 { ids(&offline) } else { vec![] })
    }
}

/// A requested topic the principal may not describe (whether or not it exists).
fn refused_topic(name: &str) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(ResponseError::TopicAuthorizationFailed.code())
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(uuid::Uuid::nil())
        .with_partitions(vec![])
        .with_topic_authorized_operations(i32::MIN)
}

/// Fills in each described topic's authorized operations when the client asked (v8+).
fn with_operations(authz: &Authz, mut topics: Vec<MetadataResponseTopic>, asked: bool) -> Vec<MetadataResponseTopic> {
    if asked {
        for t in topics.iter_mut().filter(|t| t.error_code == 0) {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            t.topic_authorized_operations = authz.operations(resource::TOPIC, &name);
        }
    }
    topics
}

fn missing_topic(name: Option<&str>, id: &uuid::Uuid, v: i16) -> MetadataResponseTopic {
    let code = match name {
        Some(n) if validate_topic_name(n).is_err() => ResponseError::InvalidTopicException,
        Some(_) => ResponseError::UnknownTopicOrPartition,
        None => ResponseError::UnknownTopicId,
    };
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(if v >= 10 { *id } else { uuid::Uuid::nil() })
        .with_partitions(vec![])
        .with_topic_authorized_operations(i32::MIN)
}
