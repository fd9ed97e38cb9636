//! SaslAuthenticate (key 36), versions 0–2: one step of the connection's SASL exchange.
//!
//! Contract: steps the session's state machine (`auth::Session`) with the client's bytes and
//! answers the server's; a failure is SASL_AUTHENTICATION_FAILED with Kafka's message (never
//! the reason, which is logged) and the connection closes once the answer is written.
//! `session_lifetime_ms` is `connections_max_reauth_ms` (0 by default, as Kafka's: no
//! re-authentication asked); a client re-authenticates (KIP-368) with the same user.

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
        let mut lifetime_ms = 0i64;
        let resp = match result {
            Ok(answer) => {
                lifetime_ms = start_session(&ctx, &req);
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
        Ok(reply_now(respond(&req, &resp.with_session_lifetime_ms(lifetime_ms))))
    }
    .boxed_local()
}

/// When an exchange just completed: sets the session's end (`connections_max_reauth_ms`) and
/// returns its lifetime for the answer (0: none, or the exchange goes on).
fn start_session(ctx: &Ctx, req: &Request) -> i64 {
    let mut session = ctx.session.borrow_mut();
    if !session.completed() {
        return 0;
    }
    let ms = ctx.shard.config.connections_max_reauth_ms;
    let again = session.expires.is_some();
    session.expires = (ms > 0).then(|| std::time::Instant::now() + std::time::Duration::from_millis(ms));
    tracing::info!(client = ?req.peer, listener = %ctx.listener.name, user = session.principal.as_deref().unwrap_or(""), reauthentication = again, "SASL authenticated");
    // At most MAX_REAUTH_MS (validated), which fits an i64.
    i64::try_from(ms).unwrap_or(i64::MAX)
}
