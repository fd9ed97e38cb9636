//! SaslAuthenticate (key 36), versions 0–2: one step of the connection's SASL exchange.
//!
//! Contract: steps the session's state machine (`auth::Session`) with the client's bytes and
//! answers the server's; a failure is SASL_AUTHENTICATION_FAILED with Kafka's message (never
//! the reason, which is logged) and the connection closes once the answer is written.
//! `session_lifetime_ms` is 0: the broker never asks for re-authentication (Kafka's default
//! `connections.max.reauth.ms` = 0); a client that re-authenticates anyway (KIP-368) may,
//! with the same user.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::frame::{decode_body, FrameError, Request};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

pub const SPEC: ApiSpec =
    ApiSpec { key: ApiKey::SaslAuthenticate, name: "SaslAuthenticate", min_version: 0, max_version: 2, handle };

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: SaslAuthenticateRequest = decode_body(&req)?;
        let result = ctx.session.borrow_mut().authenticate(&ctx.listener.sasl, &body.auth_bytes);
        let resp = match result {
            Ok(answer) => {
                if let Some(user) = ctx.session.borrow().principal.as_deref().filter(|_| ctx.session.borrow().authenticated()) {
                    tracing::debug!(client = ?req.peer, user, "SASL step done");
                }
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(answer))
            }
            Err(e) => {
                tracing::info!(client = ?req.peer, listener = %ctx.listener.name, refused = ?e, "SASL authentication failed");
                let (code, message) = crate::errors::sasl_code(&e);
                SaslAuthenticateResponse::default()
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message)))
            }
        };
        Ok(reply_now(respond(&req, &resp.with_session_lifetime_ms(0))))
    }
    .boxed_local()
}
