//! InitProducerId (key 22), versions 0–5: ids for idempotent producers.
//!
//! Contract: a producer without an id gets a new one (never handed out before, also across
//! restarts) with epoch 0. A producer that presents its id and epoch (v3+, KIP-360) keeps the
//! id with the epoch bumped, which resets its sequences. Transactional ids are refused with
//! UNSUPPORTED_VERSION: transactions are not implemented.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use sluice_shard::admin::allocate_producer_id;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::InitProducerId, name: "InitProducerId", min_version: 0, max_version: 5, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: InitProducerIdRequest = decode_body(&req)?;
        let failed = |code: i16| {
            InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        };
        let resp = if body.transactional_id.is_some() {
            failed(ResponseError::UnsupportedVersion.code())
        } else if req.version >= 3 && body.producer_id.0 >= 0 {
            if body.producer_epoch >= i16::MAX - 1 {
                // Epoch exhausted: a fresh id, as Kafka does.
                match allocate_producer_id(&ctx.shard).await {
                    Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
                    Err(e) => failed(code(&e)),
                }
            } else {
                InitProducerIdResponse::default()
                    .with_producer_id(body.producer_id)
                    .with_producer_epoch(body.producer_epoch.max(-1) + 1)
            }
        } else {
            match allocate_producer_id(&ctx.shard).await {
                Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
                Err(e) => failed(code(&e)),
            }
        };
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
