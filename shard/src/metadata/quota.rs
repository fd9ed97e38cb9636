//! Client quotas (KIP-55): who a quota names, which keys exist, how an AlterClientQuotas
//! entry is validated, and which quota applies to a connection.
//!
//! Contract: a quota belongs to an entity of a user, a client id, or both, each either named or
//! the default (`<default>`, a null name on the wire); quotas are cluster metadata, changed
//! only by the `QuotaChanged` metadata record, so every shard and broker holds the same ones.
//! Pure functions, no I/O. [`validate`] answers as Kafka's `ClientQuotaControlManager` does
//! (INVALID_REQUEST with Kafka's messages); IP entities and `controller_mutation_rate` are
//! refused (sluice has neither connection-rate nor controller-mutation quotas). [`resolve`]
//! is Kafka's `DefaultQuotaCallback`: of the eight entity levels, in Kafka's precedence order,
//! the first that sets the key wins, and it also names the "metric tags" — which clients share
//! one measured rate (all client ids of a user under a user-level quota, for example).

use std::collections::BTreeMap;

/// One side of an entity: a name, or the default for every name without its own quota.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(PartialEq, Eq, PartialOrd, Ord))]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    /// From the wire: a null name is the default.
    pub fn from_wire(name: Option<&str>) -> EntityName {
        match name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.to_string()),
        }
    }

    /// To the wire: the default is a null name.
    pub fn to_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }
}

/// Whom a quota applies to: a user, a client id, or a (user, client id) pair; at least one.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(PartialEq, Eq, PartialOrd, Ord))]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

/// A quota's value: an f64 kept as its bits, so that snapshots and records compare exactly.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(PartialEq, Eq, PartialOrd, Ord))]
pub struct QuotaValue(u64);

impl QuotaValue {
    pub fn new(v: f64) -> QuotaValue {
        QuotaValue(v.to_bits())
    }
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
    pub fn bits(self) -> u64 {
        self.0
    }
    pub fn from_bits(bits: u64) -> QuotaValue {
        QuotaValue(bits)
    }
}

/// The quotas of every entity that has any: key → value.
pub type Quotas = BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>;

/// The wire names of the entity types.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// The quota keys (Kafka's `QuotaConfig`).
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";

/// What a quota limits; one rate per kind is measured for each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKind {
    /// Produce request bytes per second.
    Produce,
    /// Fetch response bytes per second.
    Fetch,
    /// Request handling time, in percent of one thread (Kafka's `request_percentage`).
    Request,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 3] = [QuotaKind::Produce, QuotaKind::Fetch, QuotaKind::Request];

    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => PRODUCER_BYTE_RATE,
            QuotaKind::Fetch => CONSUMER_BYTE_RATE,
            QuotaKind::Request => REQUEST_PERCENTAGE,
        }
    }

    /// Whether the key's values must be whole numbers (Kafka's LONG keys).
    fn integral(self) -> bool {
        !matches!(self, QuotaKind::Request)
    }

    fn of_key(key: &str) -> Option<QuotaKind> {
        QuotaKind::ALL.into_iter().find(|k| k.key() == key)
    }
}

/// Whether `key` is a quota key sluice stores.
pub fn is_known_key(key: &str) -> bool {
    QuotaKind::of_key(key).is_some()
}

/// Why an AlterClientQuotas entry is refused (always INVALID_REQUEST, with Kafka's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuotaError(pub String);

fn invalid(s: impl Into<String>) -> QuotaError {
    QuotaError(s.into())
}

/// An entity from the wire's (type, name) pairs, checked as Kafka's `validateEntity` and
/// `configKeysForEntityType` do.
pub fn entity_from_wire<'a>(
    parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<QuotaEntity, QuotaError> {
    let mut e = QuotaEntity { user: None, client_id: None };
    let mut seen = Vec::new();
    for (kind, name) in parts {
        if seen.contains(&kind) {
            return Err(invalid(format!("Invalid client quota entity, duplicate entity entry {kind}")));
        }
        seen.push(kind);
        if name == Some("") {
            return Err(invalid(format!("Empty {kind} not supported")));
        }
        let slot = match kind {
            USER => &mut e.user,
            CLIENT_ID => &mut e.client_id,
            IP => return Err(invalid("IP quotas (connection_creation_rate) are not supported by this broker")),
            other => return Err(invalid(format!("Unhandled client quota entity type: {other}"))),
        };
        if name.is_some_and(|n| n.len() > sluice_core::limits::METADATA_RECORD_MAX_STRING_BYTES) {
            return Err(invalid(format!("{kind} name is too long")));
        }
        *slot = Some(EntityName::from_wire(name));
    }
    if e.user.is_none() && e.client_id.is_none() {
        return Err(invalid("Invalid empty client quota entity"));
    }
    Ok(e)
}

/// The entity as the wire's (type, name) pairs, user first.
pub fn entity_to_wire(e: &QuotaEntity) -> Vec<(&'static str, Option<&str>)> {
    let mut out = Vec::with_capacity(2);
    if let Some(u) = &e.user {
        out.push((USER, u.to_wire()));
    }
    if let Some(c) = &e.client_id {
        out.push((CLIENT_ID, c.to_wire()));
    }
    out
}

/// Checks one key and value of an alteration (Kafka's `validateQuotaKeyValue`).
pub fn validate(key: &str, value: f64) -> Result<(), QuotaError> {
    if key == CONTROLLER_MUTATION_RATE {
        return Err(invalid(format!("{key} is not supported by this broker (no controller mutation quotas)")));
    }
    let Some(kind) = QuotaKind::of_key(key) else {
        return Err(invalid(format!("Invalid configuration key {key}")));
    };
    if value.is_nan() || value <= 0.0 {
        return Err(invalid(format!("Quota {key} must be greater than 0")));
    }
    if kind.integral() {
        if value > i64::MAX as f64 {
            return Err(invalid(format!("Proposed value for {key} is too large for a LONG.")));
        }
        if (value % 1.0).abs() > 1e-6 {
            return Err(invalid(format!("{key} cannot be a fractional value.")));
        }
    } else if !value.is_finite() {
        return Err(invalid(format!("Quota {key} must be finite")));
    }
    Ok(())
}

/// The quota that applies to a client, and which clients share its measured rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Kafka's metric tags: the user (empty when the quota is per client id only) and the
    /// client id (empty when the quota is per user only). Clients with the same tags share
    /// one rate.
    pub user_tag: String,
    pub client_tag: String,
    /// The quota (bytes per second, or percent for [`QuotaKind::Request`]).
    pub bound: f64,
}

/// Kafka's precedence (`ClientQuotaManager`): the most specific quota setting `kind` that
/// matches `user` (the principal's name, `ANONYMOUS` without authentication) and `client_id`,
/// in this order: /users/USER/clients/CLIENT, /users/USER/clients/<default>, /users/USER,
/// /users/<default>/clients/CLIENT, /users/<default>/clients/<default>, /users/<default>,
/// /clients/CLIENT, /clients/<default>. `None`: no quota applies.
pub fn resolve(quotas: &Quotas, kind: QuotaKind, user: &str, client_id: &str) -> Option<Resolved> {
    if quotas.is_empty() {
        return None;
    }
    let named = |s: &str| Some(EntityName::Named(s.to_string()));
    let default = || Some(EntityName::Default);
    // (entity, whether the rate is shared per user (client tag empty), per client id (user tag
    // empty), or per (user, client id))
    #[derive(Clone, Copy)]
    enum Tags {
        Both,
        UserOnly,
        ClientOnly,
    }
    let levels = [
        (named(user), named(client_id), Tags::Both),
        (named(user), default(), Tags::Both),
        (named(user), None, Tags::UserOnly),
        (default(), named(client_id), Tags::Both),
        (default(), default(), Tags::Both),
        (default(), None, Tags::UserOnly),
        (None, named(client_id), Tags::ClientOnly),
        (None, default(), Tags::ClientOnly),
    ];
    for (u, c, tags) in levels {
        let entity = QuotaEntity { user: u, client_id: c };
        if let Some(v) = quotas.get(&entity).and_then(|q| q.get(kind.key())) {
            let (user_tag, client_tag) = match tags {
                Tags::Both => (user.to_string(), client_id.to_string()),
                Tags::UserOnly => (user.to_string(), String::new()),
                Tags::ClientOnly => (String::new(), client_id.to_string()),
            };
            return Some(Resolved { user_tag, client_tag, bound: v.get() });
        }
    }
    None
}

/// An entity and its quotas, as DescribeClientQuotas lists them.
pub type Described<'q> = (&'q QuotaEntity, &'q BTreeMap<String, QuotaValue>);

/// One component of a DescribeClientQuotas filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterComponent {
    pub entity_type: String,
    /// 0: exact name (`name`), 1: the default, 2: any entity of this type.
    pub match_type: i8,
    pub name: Option<String>,
}

/// Why a DescribeClientQuotas filter is refused: Kafka answers INVALID_REQUEST, or
/// UNSUPPORTED_VERSION for an unknown entity type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    Invalid(String),
    UnsupportedType(String),
}

/// The entities a DescribeClientQuotas filter selects, with their quotas, in entity order
/// (Kafka's `ClientQuotasImage.describe`). `strict`: only entities with exactly the
/// filter's types.
pub fn describe<'q>(
    quotas: &'q Quotas,
    components: &[FilterComponent],
    strict: bool,
) -> Result<Vec<Described<'q>>, FilterError> {
    let mut exact: Vec<(&str, Option<&str>)> = Vec::new();
    let mut typed: Vec<&str> = Vec::new();
    for c in components {
        let t = c.entity_type.as_str();
        if t.is_empty() {
            return Err(FilterError::Invalid("Invalid empty entity type.".into()));
        }
        if exact.iter().any(|(k, _)| *k == t) || typed.contains(&t) {
            return Err(FilterError::Invalid(format!("Entity type {t} cannot appear more than once in the filter.")));
        }
        if ![USER, CLIENT_ID, IP].contains(&t) {
            return Err(FilterError::UnsupportedType(format!("Unsupported entity type {t}")));
        }
        match (c.match_type, &c.name) {
            (0, Some(n)) => exact.push((t, Some(n))),
            (0, None) => {
                return Err(FilterError::Invalid(
                    "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                ))
            }
            (1, None) => exact.push((t, None)),
            (1, Some(_)) => {
                return Err(FilterError::Invalid(
                    "Request specified MATCH_TYPE_DEFAULT, but also specified a match string.".into(),
                ))
            }
            (2, None) => typed.push(t),
            (2, Some(_)) => {
                return Err(FilterError::Invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.".into(),
                ))
            }
            (m, _) => return Err(FilterError::Invalid(format!("Unknown match type {m}"))),
        }
    }
    let has = |t: &str| exact.iter().any(|(k, _)| *k == t) || typed.contains(&t);
    if has(IP) && (has(USER) || has(CLIENT_ID)) {
        return Err(FilterError::Invalid(
            "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.".into(),
        ));
    }
    let side = |e: &'q QuotaEntity, t: &str| match t {
        USER => e.user.as_ref(),
        CLIENT_ID => e.client_id.as_ref(),
        _ => None,
    };
    let matches = |e: &'q QuotaEntity| {
        let types = usize::from(e.user.is_some()) + usize::from(e.client_id.is_some());
        if strict && types != exact.len() + typed.len() {
            return false;
        }
        exact.iter().all(|(t, n)| side(e, t).is_some_and(|s| s.to_wire() == *n))
            && typed.iter().all(|t| side(e, t).is_some())
    };
    Ok(quotas.iter().filter(|(e, _)| matches(e)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Option<EntityName> {
        Some(EntityName::Named(s.into()))
    }
    const D: Option<EntityName> = Some(EntityName::Default);

    fn with(entries: &[(Option<EntityName>, Option<EntityName>, f64)]) -> Quotas {
        entries
            .iter()
            .map(|(u, c, v)| {
                let e = QuotaEntity { user: u.clone(), client_id: c.clone() };
                (e, BTreeMap::from([(PRODUCER_BYTE_RATE.to_string(), QuotaValue::new(*v))]))
            })
            .collect()
    }

    fn bound(q: &Quotas, user: &str, client: &str) -> Option<(f64, String, String)> {
        resolve(q, QuotaKind::Produce, user, client).map(|r| (r.bound, r.user_tag, r.client_tag))
    }

    #[test]
    fn precedence_is_kafkas_eight_levels() {
        // Every level set: each removal of the most specific exposes the next one.
        let all = [
            (n("u"), n("c"), 1.0),
            (n("u"), D, 2.0),
            (n("u"), None, 3.0),
            (D, n("c"), 4.0),
            (D, D, 5.0),
            (D, None, 6.0),
            (None, n("c"), 7.0),
            (None, D, 8.0),
        ];
        let tags = [("u", "c"), ("u", "c"), ("u", ""), ("u", "c"), ("u", "c"), ("u", ""), ("", "c"), ("", "c")];
        for skip in 0..all.len() {
            let q = with(&all[skip..]);
            let (b, ut, ct) = bound(&q, "u", "c").unwrap();
            assert_eq!(b, all[skip].2, "level {}", skip + 1);
            assert_eq!((ut.as_str(), ct.as_str()), tags[skip], "tags of level {}", skip + 1);
        }
        assert_eq!(bound(&with(&[]), "u", "c"), None);
        // Another user and client id fall through to the defaults only.
        let q = with(&all);
        assert_eq!(bound(&q, "v", "x").unwrap().0, 5.0);
        // A user quota binds every client id of that user to one rate (client tag empty).
        let q = with(&[(n("u"), None, 3.0), (None, n("c"), 7.0)]);
        assert_eq!(bound(&q, "u", "other"), Some((3.0, "u".into(), String::new())));
        assert_eq!(bound(&q, "w", "c"), Some((7.0, String::new(), "c".into())));
        assert_eq!(bound(&q, "w", "d"), None);
        // Only the key asked for counts.
        assert_eq!(resolve(&q, QuotaKind::Fetch, "u", "c"), None);
    }

    #[test]
    fn entities_and_values_are_validated_as_kafka() {
        assert!(entity_from_wire([(USER, Some("a")), (CLIENT_ID, None)]).is_ok());
        let err = |parts: Vec<(&str, Option<&str>)>| entity_from_wire(parts).unwrap_err().0;
        assert_eq!(err(vec![]), "Invalid empty client quota entity");
        assert_eq!(err(vec![(USER, Some(""))]), "Empty user not supported");
        assert_eq!(
            err(vec![(USER, None), (USER, Some("a"))]),
            "Invalid client quota entity, duplicate entity entry user"
        );
        assert_eq!(err(vec![("group", Some("a"))]), "Unhandled client quota entity type: group");
        assert!(err(vec![(IP, Some("1.2.3.4"))]).contains("not supported"));
        assert!(validate(PRODUCER_BYTE_RATE, 1024.0).is_ok());
        assert!(validate(REQUEST_PERCENTAGE, 12.5).is_ok());
        assert_eq!(validate(PRODUCER_BYTE_RATE, 0.0).unwrap_err().0, "Quota producer_byte_rate must be greater than 0");
        assert_eq!(
            validate(CONSUMER_BYTE_RATE, 1.5).unwrap_err().0,
            "consumer_byte_rate cannot be a fractional value."
        );
        assert_eq!(validate("bogus", 1.0).unwrap_err().0, "Invalid configuration key bogus");
        assert!(validate(CONTROLLER_MUTATION_RATE, 1.0).is_err());
    }

    #[test]
    fn describe_filters_as_kafka() {
        let q = with(&[(n("u"), None, 1.0), (n("u"), n("c"), 2.0), (None, n("c"), 3.0), (D, None, 4.0)]);
        let f = |t: &str, m: i8, name: Option<&str>| FilterComponent {
            entity_type: t.into(),
            match_type: m,
            name: name.map(str::to_string),
        };
        let values = |r: Vec<(&QuotaEntity, &BTreeMap<String, QuotaValue>)>| -> Vec<f64> {
            r.iter().map(|(_, v)| v[PRODUCER_BYTE_RATE].get()).collect()
        };
        assert_eq!(values(describe(&q, &[f(USER, 0, Some("u"))], false).unwrap()).len(), 2);
        assert_eq!(values(describe(&q, &[f(USER, 0, Some("u"))], true).unwrap()), vec![1.0]);
        assert_eq!(values(describe(&q, &[f(USER, 1, None)], true).unwrap()), vec![4.0]);
        assert_eq!(describe(&q, &[f(CLIENT_ID, 2, None)], false).unwrap().len(), 2);
        assert_eq!(describe(&q, &[], false).unwrap().len(), 4);
        assert!(matches!(describe(&q, &[f("group", 2, None)], false), Err(FilterError::UnsupportedType(_))));
        assert!(matches!(describe(&q, &[f(USER, 0, None)], false), Err(FilterError::Invalid(_))));
        assert!(matches!(describe(&q, &[f(USER, 2, None), f(USER, 1, None)], false), Err(FilterError::Invalid(_))));
        assert!(matches!(describe(&q, &[f(IP, 2, None), f(USER, 1, None)], false), Err(FilterError::Invalid(_))));
    }
}
