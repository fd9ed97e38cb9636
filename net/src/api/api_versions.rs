//! ApiVersions (key 18), versions 0–4: the list of APIs and versions, generated from the table.
//!
//! Contract: a request for a version above 4 is answered at version 0 with UNSUPPORTED_VERSION
//! and the full list, as Kafka does, so the client can retry with a version we speak.

use super::{reply_now, respond, ApiSpec, Ctx, Reply, APIS};
use crate::frame::{encode_response, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ApiVersions, name: "ApiVersions", min_version: 0, max_version: 4, handle };

/// The advertised list.
pub fn advertised() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(a.min_version)
                .with_max_version(a.max_version)
        })
        .collect()
}

/// The answer to an ApiVersions request of a version we do not speak.
pub fn unsupported_version(correlation_id: i32) -> Result<bytes::Bytes, FrameError> {
    let body = ApiVersionsResponse::default()
        .with_error_code(kafka_protocol::ResponseError::UnsupportedVersion.code())
        .with_api_keys(advertised());
    encode_response(correlation_id, 0, &body)
}

fn handle(_ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        // The body carries only the client's software name and version; we do not need them.
        let body =
            ApiVersionsResponse::default().with_error_code(0).with_api_keys(advertised()).with_throttle_time_ms(0);
        Ok(reply_now(respond(&req, &body)))
    }
    .boxed_local()
}
