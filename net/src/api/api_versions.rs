//! ApiVersions (key 18), versions 0–4: the list of APIs and versions, generated from the table.
//!
//! Contract: a request for a version above 4 is answered at version 0 with UNSUPPORTED_VERSION
//! and the full list, as Kafka does, so the client can retry with a version we speak. From v3
//! the features are given as Kafka 4.x gives them: `transaction.version` supported 0–2 and
//! finalized at the configured `transaction_version` (default 2: Java clients 4.x then run
//! KIP-890 part 2), at a finalized-features epoch of 1 (clients read the features only from an
//! epoch ≥ 0). Produce is listed from version 0, as Kafka 4.x lists it
//! (`produce::ADVERTISED_MIN_VERSION`), though versions 0–2 are not served.

use super::{reply_now, respond, ApiSpec, Ctx, Reply, APIS};
use crate::frame::{encode_response, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ApiVersions, name: "ApiVersions", min_version: 0, max_version: 4, handle };

/// The advertised list.
pub fn advertised() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(advertised_min(a))
                .with_max_version(a.max_version)
        })
        .collect()
}

/// The lowest version listed for `a`: its lowest served version, but for Produce.
fn advertised_min(a: &ApiSpec) -> i16 {
    match a.key {
        ApiKey::Produce => super::produce::ADVERTISED_MIN_VERSION,
        _ => a.min_version,
    }
}

/// The answer to an ApiVersions request of a version we do not speak.
pub fn unsupported_version(correlation_id: i32) -> Result<bytes::Bytes, FrameError> {
    let body = ApiVersionsResponse::default()
        .with_error_code(kafka_protocol::ResponseError::UnsupportedVersion.code())
        .with_api_keys(advertised());
    encode_response(correlation_id, 0, &body)
}

/// Kafka's name of the transaction protocol feature (KIP-890).
const TRANSACTION_VERSION: &str = "transaction.version";
/// The epoch of the finalized features (Kafka's metadata offset of their last change; fixed
/// here: the level only changes with a restart).
const FINALIZED_FEATURES_EPOCH: i64 = 1;

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        // The body carries only the client's software name and version; we do not need them.
        let level = ctx.shard.config.transaction_version;
        let name = || StrBytes::from_static_str(TRANSACTION_VERSION);
        let supported = SupportedFeatureKey::default()
            .with_name(name())
            .with_min_version(0)
            .with_max_version(sluice_core::limits::MAX_TRANSACTION_VERSION);
        let finalized = FinalizedFeatureKey::default()
            .with_name(name())
            .with_min_version_level(level)
            .with_max_version_level(level);
        let body = ApiVersionsResponse::default()
            .with_error_code(0)
            .with_api_keys(advertised())
            .with_throttle_time_ms(0)
            .with_supported_features(vec![supported])
            .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
            .with_finalized_features(vec![finalized]);
        Ok(reply_now(respond(&req, &body)))
    }
    .boxed_local()
}
