//! ListTransactions (key 66), versions 0–1: every transactional id of every coordinator shard,
//! filtered by state and producer id (`kafka-transactions.sh list`).
//!
//! Contract: state filters Kafka does not know are returned in `unknown_state_filters`.
//! Version 2's duration filter and the transactional id pattern are not offered. Only ids the
//! principal may DESCRIBE are listed, as Kafka.

use super::{respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::metadata::acl::op;
use sluice_shard::txn::{self, ListRequest};
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::ListTransactions, name: "ListTransactions", min_version: 0, max_version: 1, handle };

const KNOWN_STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: ListTransactionsRequest = decode_body(&req)?;
        let reply = async move {
            let (known, unknown): (Vec<String>, Vec<String>) =
                body.state_filters.iter().map(|s| s.to_string()).partition(|s| KNOWN_STATES.contains(&s.as_str()));
            // Filters that are all unknown match nothing (Kafka answers no transactions then).
            let listed = if !unknown.is_empty() && known.is_empty() {
                Vec::new()
            } else {
                let request = ListRequest {
                    states: known,
                    producer_ids: body.producer_id_filters.iter().map(|p| p.0).collect(),
                    duration_filter_ms: -1,
                };
                txn::list_all(&ctx.shard, request).await
            };
            let authz = crate::authz::Authz::new(&ctx, &req);
            let states = listed
                .into_iter()
                .filter(|(id, _, _)| authz.transactional_id(op::DESCRIBE, id))
                .map(|(id, pid, state)| {
                    TransactionState::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                        .with_producer_id(ProducerId(pid))
                        .with_transaction_state(StrBytes::from_static_str(state))
                })
                .collect();
            let resp = ListTransactionsResponse::default()
                .with_unknown_state_filters(unknown.into_iter().map(StrBytes::from_string).collect())
                .with_transaction_states(states);
            respond(&req, &resp).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}
