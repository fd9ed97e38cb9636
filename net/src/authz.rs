//! The authorizer as handlers call it: who asks, and whether the ACLs let them.
//!
//! Contract: without `authorizer_class_name` every check allows and costs one branch. With it,
//! a handler builds one [`Authz`] per request (the principal `User:<name>` of the connection's
//! session, the client's IP address, and this shard's ACL index) and asks it once per
//! resource. The index is thread-local (one per shard), rebuilt from the shard's own metadata
//! copy the first time a check sees a newly published snapshot: no lock and no cross-core hop
//! on the request path. The decision itself is `sluice_shard::metadata::acl` (Kafka's
//! StandardAuthorizer rules). Authorized-operations bitfields follow Kafka: bit `1 << op` for
//! each operation of the resource type's supported set the principal may perform (all of
//! them without an authorizer).

use crate::api::Ctx;
use crate::frame::Request;
use kafka_protocol::ResponseError as K;
use sluice_shard::metadata::acl::{op, resource, AclIndex, AuthorizerSettings, Requester, CLUSTER_NAME};
use sluice_shard::metadata::MetadataSnapshot;
use sluice_shard::msg::NewTopic;
use sluice_shard::PartitionError;
use std::cell::RefCell;
use std::rc::Rc;

struct Cached {
    snapshot: Rc<MetadataSnapshot>,
    settings: Rc<AuthorizerSettings>,
    index: Rc<AclIndex>,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

/// This shard's index of `snapshot`'s ACLs (rebuilt when the snapshot changed).
fn index_of(ctx: &Ctx, snapshot: Rc<MetadataSnapshot>) -> (Rc<AuthorizerSettings>, Rc<AclIndex>) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(hit) = c.as_ref().filter(|h| Rc::ptr_eq(&h.snapshot, &snapshot)) {
            return (hit.settings.clone(), hit.index.clone());
        }
        let settings = Rc::new(AuthorizerSettings {
            super_users: ctx.shard.config.super_users.clone(),
            allow_everyone_if_no_acl_found: ctx.shard.config.allow_everyone_if_no_acl_found,
        });
        let index = Rc::new(AclIndex::new(&snapshot.acls));
        *c = Some(Cached { snapshot, settings: settings.clone(), index: index.clone() });
        (settings, index)
    })
}

struct Active {
    settings: Rc<AuthorizerSettings>,
    index: Rc<AclIndex>,
    principal: String,
    host: String,
}

/// One request's authorization checks.
pub struct Authz(Option<Active>);

impl Authz {
    /// The checks for `req` on `ctx`'s connection (all allowed without an authorizer).
    pub fn new(ctx: &Ctx, req: &Request) -> Authz {
        if !ctx.shard.config.authorizer_enabled() {
            return Authz(None);
        }
        let (settings, index) = index_of(ctx, ctx.shard.metadata());
        let principal = format!("User:{}", ctx.session.borrow().principal.as_deref().unwrap_or("ANONYMOUS"));
        let host = req.peer.map(|p| p.ip().to_string()).unwrap_or_default();
        Authz(Some(Active { settings, index, principal, host }))
    }

    /// Whether an authorizer is configured.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Whether the principal may do `operation` on the resource `name` of `resource_type`.
    pub fn allows(&self, operation: i8, resource_type: i8, name: &str) -> bool {
        let Some(a) = &self.0 else { return true };
        let who = Requester { principal: &a.principal, host: &a.host };
        let ok = a.index.authorize(&a.settings, who, operation, resource_type, name);
        if !ok {
            tracing::debug!(principal = %a.principal, host = %a.host, operation, resource_type, name, "denied");
        }
        ok
    }

    pub fn topic(&self, operation: i8, name: &str) -> bool {
        self.allows(operation, resource::TOPIC, name)
    }

    pub fn group(&self, operation: i8, name: &str) -> bool {
        self.allows(operation, resource::GROUP, name)
    }

    pub fn cluster(&self, operation: i8) -> bool {
        self.allows(operation, resource::CLUSTER, CLUSTER_NAME)
    }

    pub fn transactional_id(&self, operation: i8, id: &str) -> bool {
        self.allows(operation, resource::TRANSACTIONAL_ID, id)
    }

    /// Whether the principal may do `operation` on some resource of the type (Kafka's
    /// `authorizeByResourceType`).
    pub fn any_of_type(&self, operation: i8, resource_type: i8) -> bool {
        let Some(a) = &self.0 else { return true };
        let who = Requester { principal: &a.principal, host: &a.host };
        a.index.authorize_any(&a.settings, who, operation, resource_type)
    }

    /// IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (Kafka 2.8+).
    pub fn idempotent_write(&self) -> bool {
        self.cluster(op::IDEMPOTENT_WRITE) || self.any_of_type(op::WRITE, resource::TOPIC)
    }

    /// Why an ACL API (CreateAcls, DescribeAcls, DeleteAcls) is refused before it reads its
    /// bindings, with Kafka's messages: no authorizer (SECURITY_DISABLED), or no `operation`
    /// on the cluster (CLUSTER_AUTHORIZATION_FAILED).
    pub fn acl_api_refusal(&self, operation: i8) -> Option<(K, &'static str)> {
        if !self.enabled() {
            Some((K::SecurityDisabled, "No Authorizer is configured."))
        } else if !self.cluster(operation) {
            Some((K::ClusterAuthorizationFailed, "Cluster authorization failed."))
        } else {
            None
        }
    }

    /// Whether the principal may create the topic (CREATE on the cluster or on the topic).
    pub fn may_create(&self, topic: &str) -> bool {
        self.cluster(op::CREATE) || self.topic(op::CREATE, topic)
    }

    /// Produce's refusals, one per topic (`None`: allowed): every topic refused with
    /// TRANSACTIONAL_ID_AUTHORIZATION_FAILED without WRITE on the transactional id, else
    /// TOPIC_AUTHORIZATION_FAILED for a topic without WRITE.
    pub fn produce_refusals(
        &self,
        transactional_id: Option<&str>,
        topics: &[Option<String>],
    ) -> Vec<Option<PartitionError>> {
        if !self.enabled() {
            return vec![None; topics.len()];
        }
        if transactional_id.is_some_and(|t| !self.transactional_id(op::WRITE, t)) {
            return vec![Some(PartitionError::TransactionalIdAuthorizationFailed); topics.len()];
        }
        topics
            .iter()
            .map(|t| match t {
                Some(n) if !self.topic(op::WRITE, n) => Some(PartitionError::TopicAuthorizationFailed),
                _ => None,
            })
            .collect()
    }

    /// CreateTopics' topics the principal may create, and for each topic of the request
    /// whether it was kept.
    pub fn split_creatable(&self, topics: Vec<NewTopic>) -> (Vec<NewTopic>, Vec<bool>) {
        let allowed: Vec<bool> = topics.iter().map(|t| self.may_create(&t.name)).collect();
        let kept = topics.into_iter().zip(&allowed).filter(|(_, a)| **a).map(|(t, _)| t).collect();
        (kept, allowed)
    }

    /// The results of the kept items merged back in request order, the others refused with
    /// TOPIC_AUTHORIZATION_FAILED.
    pub fn merge_refused<T>(
        allowed: Vec<bool>,
        results: Vec<Result<T, PartitionError>>,
    ) -> Vec<Result<T, PartitionError>> {
        let mut results = results.into_iter();
        allowed
            .into_iter()
            .map(|a| match a {
                true => results.next().unwrap_or(Err(PartitionError::ShuttingDown)),
                false => Err(PartitionError::TopicAuthorizationFailed),
            })
            .collect()
    }

    /// OffsetCommit's refusal per topic: GROUP_AUTHORIZATION_FAILED for every topic without
    /// READ on the group, else TOPIC_AUTHORIZATION_FAILED for a topic without READ.
    pub fn commit_refusals<'a>(&self, group: &str, topics: impl Iterator<Item = &'a str>) -> Vec<Option<i16>> {
        let group_ok = self.group(op::READ, group);
        topics
            .map(|t| match (group_ok, self.topic(op::READ, t)) {
                (false, _) => Some(K::GroupAuthorizationFailed.code()),
                (true, false) => Some(K::TopicAuthorizationFailed.code()),
                (true, true) => None,
            })
            .collect()
    }

    /// InitProducerId's refusal: WRITE on the transactional id, or (idempotent producers)
    /// IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    pub fn init_producer_id_refusal(&self, transactional_id: Option<&str>) -> Option<PartitionError> {
        match transactional_id {
            Some(t) if !self.transactional_id(op::WRITE, t) => Some(PartitionError::TransactionalIdAuthorizationFailed),
            None if !self.idempotent_write() => Some(PartitionError::ClusterAuthorizationFailed),
            _ => None,
        }
    }

    /// DescribeConfigs' (DESCRIBE_CONFIGS) or Alter/IncrementalAlterConfigs' (ALTER_CONFIGS)
    /// refusal of one config resource, as Kafka's ConfigHelper and ControllerApis: BROKER (4),
    /// BROKER_LOGGER (8) and CLIENT_METRICS (16) on the cluster, TOPIC (2) and GROUP (32) on
    /// the resource itself; another type is left to the handler (it answers INVALID_REQUEST).
    pub fn config_refusal(&self, operation: i8, resource_type: i8, name: &str) -> Option<K> {
        match resource_type {
            4 | 8 | 16 if !self.cluster(operation) => Some(K::ClusterAuthorizationFailed),
            2 if !self.topic(operation, name) => Some(K::TopicAuthorizationFailed),
            32 if !self.group(operation, name) => Some(K::GroupAuthorizationFailed),
            _ => None,
        }
    }

    /// The topics of `topics` that are not allowed `operation`.
    pub fn refused_topics<'a>(&self, operation: i8, topics: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
        topics.filter(|t| !self.topic(operation, t)).collect()
    }

    /// Kafka's authorized-operations bitfield for one resource.
    pub fn operations(&self, resource_type: i8, name: &str) -> i32 {
        supported(resource_type)
            .iter()
            .filter(|o| self.allows(**o, resource_type, name))
            .fold(0, |bits, o| bits | (1 << o))
    }
}

/// Per-partition codes for every topic of a request: a refused topic's code for each of its
/// partitions, the others' taken in order from `answered` (the codes of the allowed topics).
pub fn with_refusals(refused: &[Option<i16>], partitions: impl Iterator<Item = usize>, answered: Vec<i16>) -> Vec<i16> {
    let mut answered = answered.into_iter();
    let mut out = Vec::new();
    for (r, n) in refused.iter().zip(partitions) {
        for _ in 0..n {
            out.push(match r {
                Some(code) => *code,
                None => answered.next().unwrap_or(0),
            });
        }
    }
    out
}

/// Kafka's default message of an authorization error (`Errors.message()`), which Kafka sends
/// where it answers one without a message of its own.
pub fn denied_message(e: K) -> &'static str {
    match e {
        K::TopicAuthorizationFailed => "Topic authorization failed.",
        K::GroupAuthorizationFailed => "Group authorization failed.",
        K::ClusterAuthorizationFailed => "Cluster authorization failed.",
        K::TransactionalIdAuthorizationFailed => "Transactional Id authorization failed.",
        _ => "Authorization failed.",
    }
}

/// The operations Kafka reports for a resource type (`AclEntry.supportedOperations`).
fn supported(resource_type: i8) -> &'static [i8] {
    match resource_type {
        resource::TOPIC => &[
            op::READ,
            op::WRITE,
            op::CREATE,
            op::DESCRIBE,
            op::DELETE,
            op::ALTER,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
        ],
        resource::GROUP => &[op::READ, op::DESCRIBE, op::DELETE, op::DESCRIBE_CONFIGS, op::ALTER_CONFIGS],
        resource::CLUSTER => &[
            op::CREATE,
            op::CLUSTER_ACTION,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
            op::IDEMPOTENT_WRITE,
            op::ALTER,
            op::DESCRIBE,
        ],
        resource::TRANSACTIONAL_ID => &[op::DESCRIBE, op::WRITE],
        resource::DELEGATION_TOKEN => &[op::DESCRIBE],
        resource::USER => &[op::CREATE_TOKENS, op::DESCRIBE_TOKENS],
        _ => &[],
    }
}
