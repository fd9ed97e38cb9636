//! FindCoordinator (key 10), versions 0–6: this broker coordinates every group and every
//! transactional id.
//!
//! Contract: group keys (type 0) and transaction keys (type 1) are answered with this broker
//! (its `node_id`) at the advertised address (its `__consumer_offsets` and
//! `__transaction_state` are local until replication comes), batched from v4 (the shard that runs the group or transaction is found
//! by the broker when the request comes, not by the client). A transaction key before the
//! `__transaction_state` topic exists gets COORDINATOR_NOT_AVAILABLE; other key types
//! INVALID_REQUEST.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::FindCoordinator, name: "FindCoordinator", min_version: 0, max_version: 6, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: FindCoordinatorRequest = decode_body(&req)?;
        let (code, message) = match body.key_type {
            0 => (0, None),
            1 if ctx.shard.metadata().topics.contains_key(sluice_shard::txn::TXN_TOPIC) => (0, None),
            1 => (
                ResponseError::CoordinatorNotAvailable.code(),
                Some("the transaction log does not exist yet".to_string()),
            ),
            other => (ResponseError::InvalidRequest.code(), Some(format!("unknown coordinator key type {other}"))),
        };
        let host = StrBytes::from_string(ctx.advertised_host.clone());
        let (node, port) = if code == 0 { (ctx.node_id(), ctx.advertised_port) } else { (BrokerId(-1), -1) };
        let resp = if req.version >= 4 {
            let coordinators = body
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(node)
                        .with_host(if code == 0 { host.clone() } else { StrBytes::default() })
                        .with_port(port)
                        .with_error_code(code)
                        .with_error_message(message.clone().map(StrBytes::from_string))
                })
                .collect();
            FindCoordinatorResponse::default().with_coordinators(coordinators)
        } else {
            FindCoordinatorResponse::default()
                .with_error_code(code)
                .with_error_message(if req.version >= 1 { message.map(StrBytes::from_string) } else { None })
                .with_node_id(node)
                .with_host(if code == 0 { host } else { StrBytes::default() })
                .with_port(port)
        };
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
