//! AlterUserScramCredentials (key 51), version 0: adds, replaces and deletes users' SCRAM
//! credentials (what `kafka-configs --alter --add-config 'SCRAM-SHA-256=[password=...]'
//! --entity-type users` sends: the client salts and hashes the password, the broker never
//! sees it).
//!
//! Contract: one result per user named; a user whose changes are not all acceptable
//! (unknown mechanism: UNSUPPORTED_SASL_MECHANISM; the same user and mechanism twice:
//! DUPLICATE_RESOURCE; empty name or iterations out of range: UNACCEPTABLE_CREDENTIAL;
//! deleting a credential that does not exist: RESOURCE_NOT_FOUND) changes nothing. The
//! accepted changes are durable in the data dir before the answer (`auth::store`).
//! Authorization (ALTER on the cluster) comes with ACLs; until then any authenticated client
//! may change credentials.

use super::{reply_now, respond, ApiSpec, Ctx, Reply};
use crate::auth::store::Change;
use crate::frame::{decode_body, FrameError, Request};
use crate::sasl::scram::{Credential, Hash};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as K;
use std::collections::BTreeMap;
use std::rc::Rc;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::AlterUserScramCredentials,
    name: "AlterUserScramCredentials",
    min_version: 0,
    max_version: 0,
    handle,
};

/// A user's outcome before the store is asked: its changes, or why none apply.
type PerUser = BTreeMap<String, Result<Vec<Change>, (i16, &'static str)>>;

/// Adds one change for `user`, refusing the user on an unknown mechanism or a repeat.
fn add(
    per_user: &mut PerUser,
    seen: &mut Vec<(String, i8)>,
    user: String,
    mechanism: i8,
    change: impl FnOnce(Hash) -> Change,
) {
    let refusal = match Hash::from_kafka_code(mechanism) {
        None => Some((K::UnsupportedSaslMechanism.code(), "Unknown SCRAM mechanism")),
        Some(_) if seen.contains(&(user.clone(), mechanism)) => {
            Some((K::DuplicateResource.code(), "A user credential cannot be altered twice in the same request"))
        }
        Some(_) if user.is_empty() => Some((K::UnacceptableCredential.code(), "Username must not be empty")),
        Some(_) => None,
    };
    seen.push((user.clone(), mechanism));
    let entry = per_user.entry(user).or_insert_with(|| Ok(Vec::new()));
    match (refusal, Hash::from_kafka_code(mechanism)) {
        (Some(r), _) => *entry = Err(r),
        (None, Some(h)) => {
            if let Ok(changes) = entry {
                changes.push(change(h));
            }
        }
        (None, None) => {}
    }
}

fn handle(ctx: Rc<Ctx>, req: Request) -> LocalBoxFuture<'static, Result<Reply, FrameError>> {
    async move {
        let body: AlterUserScramCredentialsRequest = decode_body(&req)?;
        let mut per_user = PerUser::new();
        let mut seen = Vec::new();
        for d in body.deletions {
            let user = d.name.to_string();
            add(&mut per_user, &mut seen, user.clone(), d.mechanism, |hash| Change::Delete { user, hash });
        }
        for u in body.upsertions {
            let user = u.name.to_string();
            let iterations = u32::try_from(u.iterations).unwrap_or(0);
            add(&mut per_user, &mut seen, user.clone(), u.mechanism, |hash| Change::Upsert {
                user,
                hash,
                credential: Credential::from_salted(hash, u.salt.to_vec(), &u.salted_password, iterations),
            });
        }
        let results = if crate::authz::Authz::new(&ctx, &req).cluster(sluice_shard::metadata::acl::op::ALTER) {
            apply(&ctx, per_user)
        } else {
            let refused = (K::ClusterAuthorizationFailed.code(), "Cluster authorization failed.");
            apply(&ctx, per_user.into_keys().map(|u| (u, Err(refused))).collect())
        };
        let resp = AlterUserScramCredentialsResponse::default().with_results(results);
        Ok(reply_now(respond(&req, &resp)))
    }
    .boxed_local()
}

/// Applies each user's changes (one store write per user: its changes stand or fall together).
fn apply(ctx: &Ctx, per_user: PerUser) -> Vec<AlterUserScramCredentialsResult> {
    per_user
        .into_iter()
        .map(|(user, changes)| {
            let outcome = changes.and_then(|changes| match ctx.listener.sasl.scram.apply(changes) {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::info!(user = %user, error = %e, "SCRAM credential change refused");
                    Err((crate::errors::scram_store_code(&e), "The credential change was refused"))
                }
            });
            let r = AlterUserScramCredentialsResult::default().with_user(StrBytes::from_string(user));
            match outcome {
                Ok(_) => r,
                Err((code, message)) => {
                    r.with_error_code(code).with_error_message(Some(StrBytes::from_static_str(message)))
                }
            }
        })
        .collect()
}
