//! SaslHandshake (key 17), versions 0–1: chooses the SASL mechanism of the connection; the
//! exchange itself follows in SaslAuthenticate frames. Version 0 is advertised because
//! librdkafka requires it in the range to use SASL at all, but a version-0 handshake (raw SASL
//! tokens after it, clients before Kafka 1.0) is answered with ILLEGAL_SASL_STATE and closes the
//! connection: clients that know version 1 use it.
//!
//! Contract: answers the mechanisms this listener offers; an unknown or disabled mechanism is
//! UNSUPPORTED_SASL_MECHANISM and closes the connection (Kafka does), a handshake on a
//! listener without SASL or out of order is ILLEGAL_SASL_STATE. The session changes before the
//! next frame is read.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::SaslHandshake, name: "SaslHandshake", min_version: 0, max_version: 1, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: SaslHandshakeRequest = decode_body(&req)?;
        let listener = &ctx.listener;
        let result = match req.version {
            0 => Err(ctx.session.borrow_mut().refuse("SaslHandshake v0 (raw SASL tokens) is not supported")),
            _ => ctx.session.borrow_mut().handshake(&listener.sasl, listener.protocol, body.mechanism.as_str()),
        };
        let error_code = match &result {
            Ok(()) => 0,
            Err(e) => {
                tracing::info!(client = ?req.peer, listener = %listener.name, mechanism = %body.mechanism.as_str(), refused = ?e, "SASL handshake refused");
                crate::errors::sasl_code(e).0
            }
        };
        let mechanisms = listener.sasl.mechanisms.iter().map(|m| StrBytes::from_static_str(m.name())).collect();
        let resp = SaslHandshakeResponse::default().with_error_code(error_code).with_mechanisms(mechanisms);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}
