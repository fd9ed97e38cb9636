//! Client quota changes (AlterClientQuotas) as metadata changes.
//!
//! Contract: like ACL changes, a quota change runs on shard 0, one at a time, decided against
//! the current snapshot (Kafka's `ClientQuotaControlManager.alterClientQuotas`): each entry
//! (an entity and its key operations) is checked whole — a key listed twice, an unknown or
//! unsupported key, a value that is not positive, a fractional byte rate — and refused whole
//! with INVALID_REQUEST, or recorded as one `QuotaChanged` record per key whose value changes
//! (a removal of a key the entity does not have records nothing). A later entry naming an
//! entity already in the request is refused. With `validate_only` nothing is recorded. On a
//! lone broker the new snapshot is saved and published to every shard before the answer, in a
//! cluster the records go through the metadata log.

use super::{each_failed, record, run, MetadataChange, Placing};
use crate::error::PartitionError;
use crate::metadata::quota::{validate, QuotaEntity, QuotaValue};
use crate::metadata::records::MetadataRecord;
use crate::metadata::MetadataSnapshot;
use crate::msg::{AlterClientQuotas, QuotaAlteration};
use crate::shard::Shard;
use sluice_core::limits::MAX_QUOTA_ALTERATIONS_PER_REQUEST;
use std::rc::Rc;

/// Applies (or only checks) quota alterations; one result per entry, in order.
pub async fn alter_client_quotas(
    shard: &Rc<Shard>,
    entries: Vec<QuotaAlteration>,
    validate_only: bool,
) -> Vec<Result<(), PartitionError>> {
    let n = entries.len();
    run(shard, AlterClientQuotas { entries, validate_only }).await.unwrap_or_else(|e| vec![Err(e); n])
}

/// The records one entry makes against `snap`, or why it is refused.
fn decide(snap: &MetadataSnapshot, entry: &QuotaAlteration) -> Result<Vec<MetadataRecord>, PartitionError> {
    let invalid = |s: String| PartitionError::InvalidRequest(s);
    let mut seen: Vec<&str> = Vec::with_capacity(entry.ops.len());
    for (key, _) in &entry.ops {
        if seen.contains(&key.as_str()) {
            return Err(invalid(format!(
                "Duplicate quota key {key} not updating quota for this entity {}",
                describe_entity(&entry.entity)
            )));
        }
        seen.push(key);
    }
    let current = snap.quotas.get(&entry.entity);
    let mut records = Vec::new();
    for (key, value) in &entry.ops {
        let now = current.and_then(|q| q.get(key)).copied();
        match value {
            None if now.is_some() => records.push(MetadataRecord::QuotaChanged {
                entity: entry.entity.clone(),
                key: key.clone(),
                value: None,
            }),
            None => {}
            Some(v) => {
                validate(key, *v).map_err(|e| invalid(e.0))?;
                let v = QuotaValue::new(*v);
                if now != Some(v) {
                    records.push(MetadataRecord::QuotaChanged {
                        entity: entry.entity.clone(),
                        key: key.clone(),
                        value: Some(v),
                    });
                }
            }
        }
    }
    Ok(records)
}

/// An entity as Kafka prints it in messages.
pub fn describe_entity(e: &QuotaEntity) -> String {
    let side = |t: &str, s: &Option<crate::metadata::quota::EntityName>| {
        s.as_ref().map(|n| format!("{t}={}", n.to_wire().unwrap_or("<default>")))
    };
    let parts: Vec<String> = [side("user", &e.user), side("client-id", &e.client_id)].into_iter().flatten().collect();
    format!("ClientQuotaEntity({})", parts.join(", "))
}

impl MetadataChange for AlterClientQuotas {
    type Reply = Vec<Result<(), PartitionError>>;
    const ADDS_PARTITIONS: bool = false;

    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        if self.entries.len() > MAX_QUOTA_ALTERATIONS_PER_REQUEST {
            let e = PartitionError::InvalidRequest(format!(
                "at most {MAX_QUOTA_ALTERATIONS_PER_REQUEST} entries per AlterClientQuotas request"
            ));
            return (vec![Err(e); self.entries.len()], records);
        }
        let mut done: Vec<&QuotaEntity> = Vec::with_capacity(self.entries.len());
        let mut results = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            if done.contains(&&entry.entity) {
                let why = format!("Ignoring duplicate entity {}", describe_entity(&entry.entity));
                results.push(Err(PartitionError::InvalidRequest(why)));
                continue;
            }
            done.push(&entry.entity);
            let r = decide(snap, entry).and_then(|new| match self.validate_only {
                true => Ok(()),
                false => record(snap, placing, &mut records, new),
            });
            results.push(r);
        }
        (results, records)
    }

    fn not_saved(reply: Self::Reply, err: &PartitionError) -> Self::Reply {
        each_failed(reply, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::quota::{EntityName, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE};

    fn user(n: &str) -> QuotaEntity {
        QuotaEntity { user: Some(EntityName::Named(n.into())), client_id: None }
    }

    fn alter(snap: &mut MetadataSnapshot, entries: Vec<QuotaAlteration>, validate_only: bool) -> (Vec<bool>, usize) {
        let (r, recs) = AlterClientQuotas { entries, validate_only }.apply(snap, &Placing::lone());
        (r.iter().map(|r| r.is_ok()).collect(), recs.len())
    }

    fn op(k: &str, v: Option<f64>) -> (String, Option<f64>) {
        (k.to_string(), v)
    }

    #[test]
    fn set_change_remove_and_refusals() {
        let mut snap = MetadataSnapshot::default();
        let set = QuotaAlteration { entity: user("a"), ops: vec![op(PRODUCER_BYTE_RATE, Some(1024.0))] };
        assert_eq!(alter(&mut snap, vec![set.clone()], true), (vec![true], 0), "validate only");
        assert!(snap.quotas.is_empty());
        assert_eq!(alter(&mut snap, vec![set.clone()], false), (vec![true], 1));
        assert_eq!(snap.quotas[&user("a")][PRODUCER_BYTE_RATE].get(), 1024.0);
        assert_eq!(alter(&mut snap, vec![set.clone()], false), (vec![true], 0), "unchanged value records nothing");
        // A bad key refuses the whole entry; a duplicate entity is refused.
        let bad = QuotaAlteration {
            entity: user("b"),
            ops: vec![op(CONSUMER_BYTE_RATE, Some(5.0)), op(PRODUCER_BYTE_RATE, Some(-1.0))],
        };
        let dup_key = QuotaAlteration {
            entity: user("c"),
            ops: vec![op(CONSUMER_BYTE_RATE, Some(5.0)), op(CONSUMER_BYTE_RATE, Some(6.0))],
        };
        let (ok, n) = alter(&mut snap, vec![bad, dup_key, set.clone(), set.clone()], false);
        assert_eq!((ok, n), (vec![false, false, true, false], 0));
        assert!(!snap.quotas.contains_key(&user("b")));
        // Removing the last key forgets the entity; removing an absent key records nothing.
        let rm = QuotaAlteration { entity: user("a"), ops: vec![op(PRODUCER_BYTE_RATE, None)] };
        assert_eq!(alter(&mut snap, vec![rm.clone()], false), (vec![true], 1));
        assert!(snap.quotas.is_empty());
        assert_eq!(alter(&mut snap, vec![rm], false), (vec![true], 0));
    }
}
