//! DescribeUserScramCredentials (key 50), version 0: each user's SCRAM mechanisms and
//! iteration counts (never salts or keys), from the broker's credential store.
//!
//! Contract: no users asked (null) lists every user with credentials; a user asked for that
//! has none is RESOURCE_NOT_FOUND, one asked twice DUPLICATE_RESOURCE, as Kafka answers.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{ApiKey, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as K;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeUserScramCredentials,
    name: "DescribeUserScramCredentials",
    min_version: 0,
    max_version: 0,
    handle,
};

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeUserScramCredentialsRequest = decode_body(&req)?;
        if !crate::authz::Authz::new(&ctx, &req).cluster(sluice_shard::metadata::acl::op::DESCRIBE) {
            let resp = DescribeUserScramCredentialsResponse::default()
                .with_error_code(kafka_protocol::ResponseError::ClusterAuthorizationFailed.code());
            return Ok(reply_now(respond(&req, &resp)));
        }
        let all = ctx.listener.sasl.scram.describe();
        let asked: Vec<String> = match body.users {
            Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
            _ => all.keys().cloned().collect(),
        };
        let results = asked
            .iter()
            .map(|user| {
                let r = DescribeUserScramCredentialsResult::default().with_user(StrBytes::from_string(user.clone()));
                if asked.iter().filter(|u| *u == user).count() > 1 {
                    return r.with_error_code(K::DuplicateResource.code()).with_error_message(Some(
                        StrBytes::from_static_str(
                            "Cannot describe SCRAM credentials for the same user twice in a single request",
                        ),
                    ));
                }
                match all.get(user) {
                    Some(creds) => r.with_credential_infos(
                        creds
                            .iter()
                            .map(|(h, i)| {
                                CredentialInfo::default()
                                    .with_mechanism(h.kafka_code())
                                    .with_iterations(i32::try_from(*i).unwrap_or(i32::MAX))
                            })
                            .collect(),
                    ),
                    None => r.with_error_code(K::ResourceNotFound.code()).with_error_message(Some(
                        StrBytes::from_static_str("Attempt to describe a user credential that does not exist"),
                    )),
                }
            })
            .collect();
        let resp = DescribeUserScramCredentialsResponse::default().with_results(results);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
