//! DescribeTransactions (key 65), version 0: the state of transactional ids
//! (`kafka-transactions.sh describe`).
//!
//! Contract: each id is asked of its coordinator shard; an unknown id gets
//! TRANSACTIONAL_ID_NOT_FOUND. As Kafka: an id without DESCRIBE is answered
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, and only topics the principal may describe are listed.

use super::{respond, ApiSpec, Ctx, Reply};
use crate::errors::txn_code;
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_shard::metadata::acl::op;
use sluice_shard::txn::{self, DescribeRequest, TxnError};
use std::collections::BTreeMap;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::DescribeTransactions, name: "DescribeTransactions", min_version: 0, max_version: 0, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: DescribeTransactionsRequest = decode_body(&req)?;
        let reply = async move {
            let mut states = Vec::with_capacity(body.transactional_ids.len());
            let authz = crate::authz::Authz::new(&ctx, &req);
            for id in body.transactional_ids {
                let name = id.0.to_string();
                if !authz.transactional_id(op::DESCRIBE, &name) {
                    let code = kafka_protocol::ResponseError::TransactionalIdAuthorizationFailed.code();
                    states.push(TransactionState::default().with_transactional_id(id).with_error_code(code));
                    continue;
                }
                let result = match txn::call(&ctx.shard, &name, DescribeRequest { ids: vec![name.clone()] }).await {
                    Ok(mut d) => d.pop().map(|d| d.result).unwrap_or(Err(TxnError::TransactionalIdNotFound)),
                    Err(e) => Err(e),
                };
                // Only the partitions of topics the principal may describe, as Kafka.
                let result = result.map(|mut m| {
                    m.partitions.retain(|(t, _)| authz.topic(op::DESCRIBE, t));
                    m
                });
                states.push(describe(id, result));
            }
            let resp = DescribeTransactionsResponse::default().with_transaction_states(states);
            respond(&req, &resp).map(|f| Some(f.into()))
        };
        Ok(reply.boxed_local() as Reply)
    }
    .boxed_local()
}

fn describe(id: TransactionalId, result: Result<txn::state::TxnMeta, TxnError>) -> TransactionState {
    let state = TransactionState::default().with_transactional_id(id);
    match result {
        Err(e) => state.with_error_code(txn_code(&e, true)).with_producer_id(ProducerId(-1)).with_producer_epoch(-1),
        Ok(m) => {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (t, p) in &m.partitions {
                by_topic.entry(t.clone()).or_default().push(*p);
            }
            let topics = by_topic
                .into_iter()
                .map(|(t, ps)| TopicData::default().with_topic(TopicName(StrBytes::from_string(t))).with_partitions(ps))
                .collect();
            state
                .with_transaction_state(StrBytes::from_static_str(m.state.name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(m.start_ms)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.producer_epoch)
                .with_topics(topics)
        }
    }
}
