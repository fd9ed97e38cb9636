//! EndTxn (key 26), versions 0–5: commit or abort the open transaction. Up to v4 (transaction
//! version 1) the producer keeps its epoch; v5 is transaction version 2 (KIP-890 part 2): the
//! epoch is bumped at every end (the markers carry the bumped one), and the answer gives the
//! producer id and epoch to go on with — a new producer id at epoch 0 when the epoch is
//! exhausted. A retry of a v5 end presents the epoch before the bump and is answered success.
//!
//! Contract: answered once the Prepare state is durable, as Kafka answers it; every
//! partition's COMMIT/ABORT marker (staged group offsets made visible at a commit) and the
//! Complete state are written afterwards, so a read_committed consumer sees the transaction a
//! few milliseconds after the producer has its answer, whole (the last stable offset moves only
//! at the marker), and a crash meanwhile leaves the durable Prepare state for the coordinator's
//! sweep to complete. Until then the id's next operations wait briefly on the coordinator, then
//! get CONCURRENT_TRANSACTIONS (retried by clients). A retry after completion succeeds. PRODUCER_FENCED from v2,
//! INVALID_PRODUCER_EPOCH before. TRANSACTIONAL_ID_AUTHORIZATION_FAILED without WRITE on the
//! transactional id, as Kafka.

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::txn_result_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse, ProducerId};
use sluice_shard::metadata::acl::op;
use sluice_shard::txn::{self, EndRequest, TxnError};
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec { key: ApiKey::EndTxn, name: "EndTxn", min_version: 0, max_version: 5, handle };

/// The first EndTxn version of transaction version 2.
const FIRST_TV2_VERSION: i16 = 5;

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: EndTxnRequest = decode_body(&req)?;
        let reply = async move {
            let transactional_id = body.transactional_id.0.to_string();
            let request = EndRequest {
                transactional_id: transactional_id.clone(),
                producer_id: body.producer_id.0,
                epoch: body.producer_epoch,
                commit: body.committed,
                tv2: req.version >= FIRST_TV2_VERSION,
            };
            let result = match crate::authz::Authz::new(&ctx, &req).transactional_id(op::WRITE, &transactional_id) {
                true => txn::ask(&ctx.shard, &transactional_id, request).await,
                false => Err(TxnError::TransactionalIdAuthorizationFailed),
            };
            if let Err(e) = &result {
                tracing::debug!(transactional_id = %transactional_id, error = %e, "EndTxn refused");
            }
            let (producer_id, epoch) = match &result {
                Ok(next) if req.version >= FIRST_TV2_VERSION => *next,
                _ => (-1, -1),
            };
            let resp = EndTxnResponse::default()
                .with_error_code(txn_result_code(&result, req.version >= 2))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch);
            respond(&req, &resp).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}
