//! DeleteTopics (key 20), versions 1–6: by name, and by topic id from v6.
//!
//! Contract: answered after every shard has closed and removed the topic's partitions.

use super::{reply_now, respond, topic_name, uuid, ApiSpec, Ctx, Reply};
use crate::errors::code_and_message;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::admin::delete_topics;
use sluice_shard::PartitionError;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DeleteTopics, name: "DeleteTopics", min_version: 1, max_version: 6, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DeleteTopicsRequest = decode_body(&req)?;
        // (name as requested or resolved, requested id)
        let wanted: Vec<(Option<String>, uuid::Uuid)> = if req.version >= 6 {
            body.topics
                .iter()
                .map(|t| {
                    let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                    (topic_name(&ctx, &name, &t.topic_id), t.topic_id)
                })
                .collect()
        } else {
            body.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect()
        };
        let known: Vec<String> = wanted.iter().filter_map(|(n, _)| n.clone()).collect();
        let authz = crate::authz::Authz::new(&ctx, &req);
        let allowed: Vec<bool> =
            known.iter().map(|n| authz.topic(sluice_shard::metadata::acl::op::DELETE, n)).collect();
        let known = known.into_iter().zip(&allowed).filter(|(_, a)| **a).map(|(n, _)| n).collect();
        let deleted = delete_topics(&ctx.shard, known).await;
        let mut results = crate::authz::Authz::merge_refused(allowed, deleted).into_iter();
        let v = req.version;
        let responses = wanted
            .into_iter()
            .map(|(name, id)| {
                let r = match name {
                    Some(_) => results.next().expect("one result per name"),
                    None => Err(PartitionError::UnknownTopicId),
                };
                let (code, message) = code_and_message(&r);
                DeletableTopicResult::default()
                    .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                    .with_topic_id(match (&r, v >= 6) {
                        (_, false) => uuid::Uuid::nil(),
                        (Ok(deleted), true) => uuid(*deleted),
                        (Err(_), true) => id,
                    })
                    .with_error_code(code)
                    .with_error_message(if v >= 5 { message.map(StrBytes::from_string) } else { None })
            })
            .collect();
        let resp = DeleteTopicsResponse::default().with_throttle_time_ms(0).with_responses(responses);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
