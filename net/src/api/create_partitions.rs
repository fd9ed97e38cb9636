//! CreatePartitions (key 37), versions 0–3: grows topics; new partitions are placed on the
//! least loaded shards and opened before the answer. A topic without ALTER is refused
//! TOPIC_AUTHORIZATION_FAILED (no message, as Kafka's controller).

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::code_and_message;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::admin::change;
use sluice_shard::metadata::acl;
use sluice_shard::msg::CreatePartitions;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::CreatePartitions, name: "CreatePartitions", min_version: 0, max_version: 3, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: CreatePartitionsRequest = decode_body(&req)?;
        let mut results = Vec::with_capacity(body.topics.len());
        let brokers: Vec<i32> = ctx.brokers().into_iter().map(|b| b.node_id.0).collect();
        let authz = crate::authz::Authz::new(&ctx, &req);
        for t in body.topics {
            if !authz.topic(acl::op::ALTER, &t.name.0) {
                // Kafka's controller answers the code alone.
                let code = kafka_protocol::ResponseError::TopicAuthorizationFailed.code();
                results.push(CreatePartitionsTopicResult::default().with_name(t.name).with_error_code(code));
                continue;
            }
            let op = CreatePartitions {
                topic: t.name.0.to_string(),
                count: t.count,
                validate_only: body.validate_only,
                brokers: brokers.clone(),
            };
            let r = change(&ctx.shard, op).await;
            let (code, message) = code_and_message(&r);
            results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string)),
            );
        }
        Ok(reply_now(respond(&req, &CreatePartitionsResponse::default().with_results(results))))
    }
    .boxed_local()
}
