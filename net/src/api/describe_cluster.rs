//! DescribeCluster (key 60), versions 0–2: the cluster id and every live broker.
//!
//! Contract: the brokers are this shard's cluster view (this broker alone without peers), in
//! node-id order, rack null; the controller is the metadata log's leader as this shard's view
//! knows it (this broker for a lone broker). Never refused (as Kafka); the cluster's authorized
//! operations when asked, 0 without DESCRIBE on the cluster.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::metadata::acl::{op, resource, CLUSTER_NAME};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DescribeCluster, name: "DescribeCluster", min_version: 0, max_version: 2, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeClusterRequest = decode_body(&req)?;
        let brokers = ctx
            .brokers()
            .into_iter()
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.node_id.0))
                    .with_host(StrBytes::from_string(b.host))
                    .with_port(i32::from(b.port))
                    .with_rack(None)
            })
            .collect();
        // Kafka never refuses DescribeCluster: without DESCRIBE on the cluster the operations are 0.
        let operations = match body.include_cluster_authorized_operations {
            false => i32::MIN,
            true => {
                let authz = crate::authz::Authz::new(&ctx, &req);
                match authz.cluster(op::DESCRIBE) {
                    true => authz.operations(resource::CLUSTER, CLUSTER_NAME),
                    false => 0,
                }
            }
        };
        let resp = DescribeClusterResponse::default()
            .with_error_code(0)
            .with_endpoint_type(if req.version >= 1 { body.endpoint_type.max(1) } else { 1 })
            .with_cluster_id(StrBytes::from_string(ctx.shard.metadata().cluster_id.clone()))
            .with_controller_id(BrokerId(ctx.cluster.controller().0))
            .with_brokers(brokers)
            .with_cluster_authorized_operations(operations);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
