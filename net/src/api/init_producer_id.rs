//! InitProducerId (key 22), versions 0–5: ids for idempotent producers.
//!
//! Contract: a producer without an id gets a new one (never handed out before, also across
//! restarts) with epoch 0. A producer that presents its id and epoch (v3+, KIP-360) keeps the
//! id with the epoch bumped, which resets its sequences. A transactional id goes to its
//! transaction coordinator (`sluice_shard::txn`): the id's producer id with its epoch bumped
//! (fencing older instances; an open transaction is aborted first), KIP-360 recovery when the
//! producer presents its id and epoch; PRODUCER_FENCED from v4, INVALID_PRODUCER_EPOCH before.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::errors::{code, txn_code};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use sluice_shard::admin::allocate_producer_id;
use sluice_shard::txn::{self, InitRequest};
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
        let txn_id = body.transactional_id.as_ref().map(|t| t.0.to_string()).filter(|t| !t.is_empty());
        let authz = crate::authz::Authz::new(&ctx, &req);
        let resp = if let Some(refused) = authz.init_producer_id_refusal(txn_id.as_deref()) {
            failed(crate::errors::code(&refused))
        } else if let Some(transactional_id) = txn_id {
            let given =
                (req.version >= 3 && body.producer_id.0 >= 0).then_some((body.producer_id.0, body.producer_epoch));
            let request = InitRequest {
                transactional_id: transactional_id.clone(),
                timeout_ms: body.transaction_timeout_ms,
                given,
            };
            match txn::ask(&ctx.shard, &transactional_id, request).await {
                Ok((id, epoch)) => {
                    InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch)
                }
                Err(e) => failed(txn_code(&e, req.version >= 4)),
            }
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
