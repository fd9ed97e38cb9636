//! Access control lists: what an ACL is, which ACLs a filter selects, and the authorization
//! decision of Kafka's `StandardAuthorizer`.
//!
//! Contract: pure functions and plain data, no I/O. ACLs use Kafka's wire codes (resource
//! types, pattern types, operations, permissions), so a binding round-trips the Create/
//! Describe/DeleteAcls APIs unchanged. A stored [`Acl`] is always concrete: its resource type
//! is TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN or USER, its pattern LITERAL or
//! PREFIXED, its operation neither ANY nor UNKNOWN, its permission ALLOW or DENY
//! ([`Acl::check`]). The decision ([`AclIndex::authorize`]) follows Kafka: a super user is
//! allowed everything; otherwise the ACLs whose resource pattern matches (the literal name, the
//! literal wildcard `*`, or a prefix of the name) are taken; none at all → the
//! `allow_everyone_if_no_acl_found` default; any DENY matching principal (or `User:*`), host
//! (or `*`) and operation (or ALL) → denied; any such ALLOW, where READ, WRITE, DELETE and
//! ALTER also allow DESCRIBE and ALTER_CONFIGS allows DESCRIBE_CONFIGS → allowed; else denied.
//! The index finds a resource's ACLs with one hash lookup for its name, one for the wildcard
//! and one per distinct prefix length (up to the name's) among the prefixed ACLs of its type,
//! so a check's cost does not grow with ACLs on other names.

use std::collections::{BTreeSet, HashMap};

/// Kafka's `ResourceType` codes.
pub mod resource {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;
}

/// Kafka's `PatternType` codes.
pub mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Kafka's `AclOperation` codes.
pub mod op {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
    pub const CREATE_TOKENS: i8 = 13;
    pub const DESCRIBE_TOKENS: i8 = 14;
}

/// Kafka's `AclPermissionType` codes.
pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The literal resource name that matches every resource of its type.
pub const WILDCARD: &str = "*";
/// The principal that matches every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The cluster resource's only name.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// One ACL binding (resource pattern + access control entry). Ordered by resource first.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(PartialEq, Eq, PartialOrd, Ord))]
pub struct Acl {
    pub resource_type: i8,
    pub name: String,
    pub pattern_type: i8,
    /// `User:name`, or `User:*`.
    pub principal: String,
    /// An IP address, or `*`.
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// Why an ACL cannot be stored (CreateAcls answers INVALID_REQUEST with the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("Invalid resource type {0}")]
    ResourceType(i8),
    #[error("Invalid pattern type {0}: only LITERAL and PREFIXED are stored")]
    PatternType(i8),
    #[error("Invalid operation {0}")]
    Operation(i8),
    #[error("Invalid permission type {0}")]
    Permission(i8),
    #[error("Invalid principal {0}: expected TYPE:NAME")]
    Principal(String),
    #[error("Resource name must not be empty")]
    EmptyName,
    #[error("The only valid name for the CLUSTER resource is kafka-cluster")]
    ClusterName,
    #[error("A field is longer than the limit")]
    TooLong,
}

impl Acl {
    /// Checks the binding is concrete and well-formed (see the module docs).
    pub fn check(&self) -> Result<(), AclError> {
        use sluice_core::limits::METADATA_RECORD_MAX_STRING_BYTES as MAX;
        if ![self.name.len(), self.principal.len(), self.host.len()].iter().all(|l| *l <= MAX) {
            return Err(AclError::TooLong);
        }
        if !(resource::TOPIC..=resource::USER).contains(&self.resource_type) {
            return Err(AclError::ResourceType(self.resource_type));
        }
        if self.pattern_type != pattern::LITERAL && self.pattern_type != pattern::PREFIXED {
            return Err(AclError::PatternType(self.pattern_type));
        }
        if !(op::ALL..=op::DESCRIBE_TOKENS).contains(&self.operation) {
            return Err(AclError::Operation(self.operation));
        }
        if self.permission != permission::ALLOW && self.permission != permission::DENY {
            return Err(AclError::Permission(self.permission));
        }
        if !self.principal.split_once(':').is_some_and(|(t, n)| !t.is_empty() && !n.is_empty()) {
            return Err(AclError::Principal(self.principal.clone()));
        }
        if self.name.is_empty() {
            return Err(AclError::EmptyName);
        }
        if self.resource_type == resource::CLUSTER && self.name != CLUSTER_NAME {
            return Err(AclError::ClusterName);
        }
        Ok(())
    }
}

/// A Describe/DeleteAcls filter: `None` (null on the wire) or ANY matches every value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    /// Whether the filter selects `acl` (Kafka's `AclBindingFilter.matches`): MATCH selects
    /// the literal name, the literal wildcard and every prefix of the name.
    pub fn matches(&self, acl: &Acl) -> bool {
        let code = |want: i8, any: i8, got: i8| want == any || want == got;
        code(self.resource_type, resource::ANY, acl.resource_type)
            && self.name_matches(acl)
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && code(self.operation, op::ANY, acl.operation)
            && code(self.permission, permission::ANY, acl.permission)
    }

    fn name_matches(&self, acl: &Acl) -> bool {
        match (self.pattern_type, &self.name) {
            (pattern::MATCH, None) => true,
            (pattern::MATCH, Some(n)) => match acl.pattern_type {
                pattern::LITERAL => acl.name == *n || acl.name == WILDCARD,
                pattern::PREFIXED => n.starts_with(&acl.name),
                _ => false,
            },
            (pattern::ANY, n) => n.as_ref().is_none_or(|n| *n == acl.name),
            (p, n) => p == acl.pattern_type && n.as_ref().is_none_or(|n| *n == acl.name),
        }
    }

    /// Checks what DeleteAcls and DescribeAcls refuse (Kafka: UNKNOWN codes).
    pub fn check(&self) -> Result<(), AclError> {
        if !(resource::ANY..=resource::USER).contains(&self.resource_type) {
            return Err(AclError::ResourceType(self.resource_type));
        }
        if !(pattern::ANY..=pattern::PREFIXED).contains(&self.pattern_type) {
            return Err(AclError::PatternType(self.pattern_type));
        }
        if !(op::ANY..=op::DESCRIBE_TOKENS).contains(&self.operation) {
            return Err(AclError::Operation(self.operation));
        }
        if !(permission::ANY..=permission::ALLOW).contains(&self.permission) {
            return Err(AclError::Permission(self.permission));
        }
        Ok(())
    }
}

/// Whether an ALLOW of `granted` allows `wanted` (Kafka's implication rules).
pub fn allow_implies(granted: i8, wanted: i8) -> bool {
    granted == op::ALL
        || granted == wanted
        || (wanted == op::DESCRIBE && matches!(granted, op::READ | op::WRITE | op::DELETE | op::ALTER))
        || (wanted == op::DESCRIBE_CONFIGS && granted == op::ALTER_CONFIGS)
}

/// Who asks: the principal (`User:name`) and the client's host (IP address).
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub principal: &'a str,
    pub host: &'a str,
}

/// The broker's authorizer settings.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerSettings {
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

#[derive(Debug, Default)]
struct ByType {
    /// Literal ACLs by resource name (the wildcard `*` under its own name).
    literal: HashMap<String, Vec<Acl>>,
    /// Prefixed ACLs by prefix.
    prefixed: HashMap<String, Vec<Acl>>,
    /// The distinct byte lengths of the keys of `prefixed`, ascending: a check looks up the
    /// name's prefix of each such length, instead of testing every prefixed ACL.
    prefix_lens: Vec<usize>,
}

impl ByType {
    /// The prefixed ACLs whose prefix starts `name`: one hash lookup per distinct prefix
    /// length up to the name's (a handful in practice), whatever the number of ACLs.
    fn prefixed_matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Acl> + 'a {
        self.prefix_lens
            .iter()
            .take_while(move |l| **l <= name.len())
            .filter_map(move |l| name.get(..*l))
            .filter_map(move |p| self.prefixed.get(p))
            .flatten()
    }
}

/// The ACLs of a snapshot indexed for authorization (built once per published snapshot).
#[derive(Debug, Default)]
pub struct AclIndex {
    by_type: HashMap<i8, ByType>,
}

impl AclIndex {
    pub fn new(acls: &BTreeSet<Acl>) -> AclIndex {
        let mut by_type: HashMap<i8, ByType> = HashMap::new();
        for a in acls {
            let t = by_type.entry(a.resource_type).or_default();
            let by_name = if a.pattern_type == pattern::PREFIXED { &mut t.prefixed } else { &mut t.literal };
            by_name.entry(a.name.clone()).or_default().push(a.clone());
        }
        for t in by_type.values_mut() {
            t.prefix_lens = t.prefixed.keys().map(String::len).collect::<BTreeSet<_>>().into_iter().collect();
        }
        AclIndex { by_type }
    }

    /// The ACLs whose resource pattern matches `name` of `resource_type`.
    fn matching<'a>(&'a self, resource_type: i8, name: &'a str) -> impl Iterator<Item = &'a Acl> + 'a {
        let t = self.by_type.get(&resource_type);
        let exact = t.and_then(|t| t.literal.get(name)).into_iter().flatten();
        let wild = t.filter(|_| name != WILDCARD).and_then(|t| t.literal.get(WILDCARD)).into_iter().flatten();
        let prefixed = t.into_iter().flat_map(move |t| t.prefixed_matching(name));
        exact.chain(wild).chain(prefixed)
    }

    /// Kafka's decision for `who` doing `operation` on the resource (see the module docs).
    pub fn authorize(
        &self,
        settings: &AuthorizerSettings,
        who: Requester<'_>,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        if settings.super_users.iter().any(|s| s == who.principal) {
            return true;
        }
        let mut any = false;
        let mut allowed = false;
        for a in self.matching(resource_type, name) {
            any = true;
            if !(a.principal == who.principal || a.principal == WILDCARD_PRINCIPAL) {
                continue;
            }
            if !(a.host == WILDCARD || a.host == who.host) {
                continue;
            }
            if a.permission == permission::DENY && (a.operation == op::ALL || a.operation == operation) {
                return false;
            }
            if a.permission == permission::ALLOW && allow_implies(a.operation, operation) {
                allowed = true;
            }
        }
        if !any {
            return settings.allow_everyone_if_no_acl_found;
        }
        allowed
    }

    /// Whether `who` may do `operation` on some resource of `resource_type` (Kafka's
    /// `authorizeByResourceType`, used for IDEMPOTENT_WRITE's fallback to WRITE on any topic):
    /// a matching ALLOW on any resource of that type, unless a matching DENY on the literal
    /// wildcard denies them all. Kafka also weighs prefixed DENYs against prefixed ALLOWs;
    /// this is the coarser rule.
    pub fn authorize_any(
        &self,
        settings: &AuthorizerSettings,
        who: Requester<'_>,
        operation: i8,
        resource_type: i8,
    ) -> bool {
        if settings.super_users.iter().any(|s| s == who.principal) {
            return true;
        }
        let Some(t) = self.by_type.get(&resource_type) else {
            return settings.allow_everyone_if_no_acl_found;
        };
        let applies = |a: &&Acl| {
            (a.principal == who.principal || a.principal == WILDCARD_PRINCIPAL)
                && (a.host == WILDCARD || a.host == who.host)
        };
        let wild_deny = t
            .literal
            .get(WILDCARD)
            .into_iter()
            .flatten()
            .filter(applies)
            .any(|a| a.permission == permission::DENY && (a.operation == op::ALL || a.operation == operation));
        if wild_deny {
            return false;
        }
        t.literal
            .values()
            .flatten()
            .chain(t.prefixed.values().flatten())
            .filter(applies)
            .any(|a| a.permission == permission::ALLOW && allow_implies(a.operation, operation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rt: i8, name: &str, pt: i8, principal: &str, operation: i8, perm: i8) -> Acl {
        Acl {
            resource_type: rt,
            name: name.into(),
            pattern_type: pt,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission: perm,
        }
    }

    fn alice() -> Requester<'static> {
        Requester { principal: "User:alice", host: "127.0.0.1" }
    }

    #[test]
    fn deny_wins_implications_hold_and_patterns_match() {
        let s = AuthorizerSettings::default();
        let acls: BTreeSet<Acl> = [
            acl(resource::TOPIC, "orders", pattern::LITERAL, "User:alice", op::WRITE, permission::ALLOW),
            acl(resource::TOPIC, "pay-", pattern::PREFIXED, "User:*", op::READ, permission::ALLOW),
            acl(resource::TOPIC, "pay-secret", pattern::LITERAL, "User:alice", op::ALL, permission::DENY),
            acl(resource::TOPIC, "*", pattern::LITERAL, "User:alice", op::ALTER_CONFIGS, permission::ALLOW),
        ]
        .into();
        let ix = AclIndex::new(&acls);
        let a = alice();
        assert!(ix.authorize(&s, a, op::WRITE, resource::TOPIC, "orders"));
        assert!(ix.authorize(&s, a, op::DESCRIBE, resource::TOPIC, "orders"), "WRITE implies DESCRIBE");
        assert!(!ix.authorize(&s, a, op::READ, resource::TOPIC, "orders"));
        assert!(ix.authorize(&s, a, op::READ, resource::TOPIC, "pay-in"), "prefixed, wildcard principal");
        assert!(!ix.authorize(&s, a, op::READ, resource::TOPIC, "pay-secret"), "deny beats allow");
        assert!(ix.authorize(&s, a, op::DESCRIBE_CONFIGS, resource::TOPIC, "any"), "wildcard resource");
        assert!(!ix.authorize(&s, a, op::READ, resource::GROUP, "g"), "no ACL, default deny");
        let open = AuthorizerSettings { allow_everyone_if_no_acl_found: true, ..Default::default() };
        assert!(ix.authorize(&open, a, op::READ, resource::GROUP, "g"));
        assert!(!ix.authorize(&open, a, op::READ, resource::TOPIC, "orders"), "ACLs exist for the topic");
        let sup = AuthorizerSettings { super_users: vec!["User:alice".into()], ..Default::default() };
        assert!(ix.authorize(&sup, a, op::READ, resource::TOPIC, "pay-secret"));
        let other_host = Requester { principal: "User:alice", host: "10.0.0.1" };
        let mut hosted = acls.clone();
        hosted.insert(Acl {
            host: "10.0.0.1".into(),
            ..acl(resource::GROUP, "g", pattern::LITERAL, "User:alice", op::READ, permission::ALLOW)
        });
        let ix = AclIndex::new(&hosted);
        assert!(ix.authorize(&s, other_host, op::READ, resource::GROUP, "g"));
        assert!(!ix.authorize(&s, a, op::READ, resource::GROUP, "g"), "another host");
        assert!(ix.authorize_any(&s, a, op::WRITE, resource::TOPIC));
        assert!(!ix.authorize_any(&s, a, op::CREATE, resource::TOPIC));
    }

    /// The decision as the module docs state it, over every ACL (no index): what
    /// [`AclIndex::authorize`] must agree with.
    fn reference(acls: &BTreeSet<Acl>, who: Requester<'_>, operation: i8, resource_type: i8, name: &str) -> bool {
        let applies = |a: &&Acl| {
            (a.principal == who.principal || a.principal == WILDCARD_PRINCIPAL)
                && (a.host == WILDCARD || a.host == who.host)
        };
        let matching: Vec<&Acl> = acls
            .iter()
            .filter(|a| a.resource_type == resource_type)
            .filter(|a| match a.pattern_type {
                pattern::PREFIXED => name.starts_with(&a.name),
                _ => a.name == name || a.name == WILDCARD,
            })
            .collect();
        if matching.is_empty() {
            return false;
        }
        let denied = matching
            .iter()
            .copied()
            .filter(applies)
            .any(|a| a.permission == permission::DENY && (a.operation == op::ALL || a.operation == operation));
        !denied
            && matching
                .iter()
                .copied()
                .filter(applies)
                .any(|a| a.permission == permission::ALLOW && allow_implies(a.operation, operation))
    }

    proptest::proptest! {
        /// The prefix-length index finds exactly the ACLs a scan of every ACL finds, for names
        /// and prefixes over a small alphabet (so that they often share prefixes) including a
        /// two-byte character (prefix lengths that end inside it must not match).
        #[test]
        fn index_agrees_with_a_scan_of_every_acl(
            acls in proptest::collection::vec(
                ("[ab\u{e9}*]{1,4}", proptest::bool::ANY, 0..3usize, proptest::bool::ANY, proptest::bool::ANY, 3i8..=8),
                0..40,
            ),
            names in proptest::collection::vec("[ab\u{e9}]{0,5}", 1..8),
            operation in 3i8..=8,
        ) {
            let principals = ["User:alice", "User:bob", WILDCARD_PRINCIPAL];
            let set: BTreeSet<Acl> = acls
                .into_iter()
                .map(|(name, prefixed, p, deny, topic, operation)| Acl {
                    resource_type: if topic { resource::TOPIC } else { resource::GROUP },
                    name,
                    pattern_type: if prefixed { pattern::PREFIXED } else { pattern::LITERAL },
                    principal: principals[p].into(),
                    host: "*".into(),
                    operation,
                    permission: if deny { permission::DENY } else { permission::ALLOW },
                })
                .collect();
            let ix = AclIndex::new(&set);
            let s = AuthorizerSettings::default();
            for name in &names {
                for rt in [resource::TOPIC, resource::GROUP] {
                    let got = ix.authorize(&s, alice(), operation, rt, name);
                    proptest::prop_assert_eq!(got, reference(&set, alice(), operation, rt, name), "{} {}", rt, name);
                }
            }
        }
    }

    #[test]
    fn filters_select_as_kafka_does() {
        let lit = acl(resource::TOPIC, "orders", pattern::LITERAL, "User:alice", op::WRITE, permission::ALLOW);
        let pre = acl(resource::TOPIC, "ord", pattern::PREFIXED, "User:bob", op::READ, permission::DENY);
        let any = AclFilter {
            resource_type: resource::ANY,
            name: None,
            pattern_type: pattern::ANY,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        };
        assert!(any.matches(&lit) && any.matches(&pre));
        let m = AclFilter { name: Some("orders".into()), pattern_type: pattern::MATCH, ..any.clone() };
        assert!(m.matches(&lit) && m.matches(&pre));
        let l = AclFilter { name: Some("orders".into()), pattern_type: pattern::LITERAL, ..any.clone() };
        assert!(l.matches(&lit) && !l.matches(&pre));
        let p = AclFilter { principal: Some("User:bob".into()), ..any.clone() };
        assert!(!p.matches(&lit) && p.matches(&pre));
        let bad = Acl { resource_type: resource::CLUSTER, ..lit.clone() };
        assert_eq!(bad.check(), Err(AclError::ClusterName));
        assert_eq!(Acl { principal: "alice".into(), ..lit.clone() }.check(), Err(AclError::Principal("alice".into())));
        assert!(lit.check().is_ok() && pre.check().is_ok());
    }
}
