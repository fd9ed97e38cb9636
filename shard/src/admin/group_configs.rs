//! Dynamic group configs (IncrementalAlterConfigs / AlterConfigs on a GROUP resource) as
//! metadata changes.
//!
//! Contract: like a topic's configs, a group's change runs on shard 0, one at a time, decided
//! against the current snapshot: SET and DELETE apply to the group's current set (AlterConfigs
//! replaces the whole set), APPEND and SUBTRACT are refused (no group config is a list), and
//! the resulting set is checked whole with Kafka's rules (`topic_config::validate_group`: known
//! keys, types, the broker's bounds, heartbeat interval below session timeout) and the metadata
//! record's bounds; a refusal is INVALID_CONFIG with Kafka's message. A change that leaves the
//! set as it was records nothing; otherwise one `GroupConfigChanged` record carries the whole
//! new set (empty: the group has none left). With `validate_only` nothing is recorded. On a
//! lone broker the new snapshot is saved and published to every shard before the answer, in a
//! cluster the record goes through the metadata log; either way every shard then reads the
//! group's configs from its snapshot (`crate::group_config`).

use super::{record, run, MetadataChange, Placing};
use crate::error::PartitionError;
use crate::metadata::records::MetadataRecord;
use crate::metadata::MetadataSnapshot;
use crate::msg::{AlterGroupConfigs, ConfigChange, ConfigOp};
use crate::shard::Shard;
use sluice_core::limits::{MAX_GROUPS_WITH_CONFIGS, METADATA_RECORD_MAX_CONFIGS, METADATA_RECORD_MAX_STRING_BYTES};
use sluice_core::topic_config;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Applies (or only checks) a change of one group's configs.
pub async fn alter_group_configs(
    shard: &Rc<Shard>,
    group: String,
    changes: Vec<ConfigChange>,
    replace_all: bool,
    validate_only: bool,
) -> Result<(), PartitionError> {
    run(shard, AlterGroupConfigs { group, changes, replace_all, validate_only }).await?
}

/// The group's configs after `changes`, or why they are refused.
fn decide(
    current: Option<&BTreeMap<String, String>>,
    changes: &[ConfigChange],
    replace_all: bool,
) -> Result<BTreeMap<String, String>, PartitionError> {
    let invalid = PartitionError::InvalidConfig;
    let mut set = if replace_all { BTreeMap::new() } else { current.cloned().unwrap_or_default() };
    for c in changes {
        if topic_config::lookup_group(&c.key).is_none() {
            return Err(invalid(format!("Unknown group config name: {}", c.key)));
        }
        match c.op {
            ConfigOp::Set => {
                set.insert(c.key.clone(), c.value.clone().unwrap_or_default());
            }
            ConfigOp::Delete => {
                set.remove(&c.key);
            }
            ConfigOp::Append | ConfigOp::Subtract => {
                return Err(invalid(format!("Config value append is not allowed for config key: {}", c.key)));
            }
        }
    }
    topic_config::validate_group(&set).map_err(invalid)?;
    if set.len() > METADATA_RECORD_MAX_CONFIGS
        || set.iter().any(|(k, v)| k.len().max(v.len()) > METADATA_RECORD_MAX_STRING_BYTES)
    {
        return Err(invalid(format!(
            "at most {METADATA_RECORD_MAX_CONFIGS} group configs of at most {METADATA_RECORD_MAX_STRING_BYTES} bytes"
        )));
    }
    Ok(set)
}

impl MetadataChange for AlterGroupConfigs {
    type Reply = Result<(), PartitionError>;
    const ADDS_PARTITIONS: bool = false;

    fn apply(self, snap: &mut MetadataSnapshot, placing: &Placing<'_>) -> (Self::Reply, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        if self.group.is_empty() || self.group.len() > METADATA_RECORD_MAX_STRING_BYTES {
            return (Err(PartitionError::InvalidRequest("Group name must not be empty".into())), records);
        }
        let current = snap.group_configs.get(&self.group).cloned();
        let reply = decide(current.as_ref(), &self.changes, self.replace_all).and_then(|set| {
            if Some(&set) == current.as_ref() || (set.is_empty() && current.is_none()) || self.validate_only {
                return Ok(());
            }
            if current.is_none() && snap.group_configs.len() >= MAX_GROUPS_WITH_CONFIGS {
                return Err(PartitionError::InvalidConfig(format!(
                    "at most {MAX_GROUPS_WITH_CONFIGS} groups have dynamic configs"
                )));
            }
            let new = vec![MetadataRecord::GroupConfigChanged { group: self.group.clone(), configs: set }];
            record(snap, placing, &mut records, new)
        });
        (reply, records)
    }

    fn not_saved(reply: Self::Reply, err: &PartitionError) -> Self::Reply {
        reply.and(Err(err.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, op: ConfigOp, value: Option<&str>) -> ConfigChange {
        ConfigChange { key: key.into(), op, value: value.map(str::to_string) }
    }

    fn alter(snap: &mut MetadataSnapshot, changes: Vec<ConfigChange>, replace_all: bool) -> (bool, usize) {
        let change = AlterGroupConfigs { group: "g".into(), changes, replace_all, validate_only: false };
        let (r, recs) = change.apply(snap, &Placing::lone());
        (r.is_ok(), recs.len())
    }

    #[test]
    fn set_delete_replace_and_refusals() {
        let mut snap = MetadataSnapshot::default();
        let earliest = op("share.auto.offset.reset", ConfigOp::Set, Some("earliest"));
        let check = AlterGroupConfigs {
            group: "g".into(),
            changes: vec![earliest.clone()],
            replace_all: false,
            validate_only: true,
        };
        let (r, recs) = check.apply(&mut snap, &Placing::lone());
        assert!(r.is_ok() && recs.is_empty() && snap.group_configs.is_empty(), "validate only");
        assert_eq!(alter(&mut snap, vec![earliest.clone()], false), (true, 1));
        assert_eq!(snap.group_configs["g"]["share.auto.offset.reset"], "earliest");
        assert_eq!(alter(&mut snap, vec![earliest.clone()], false), (true, 0), "no change, no record");
        let lock = op("share.record.lock.duration.ms", ConfigOp::Set, Some("20000"));
        assert_eq!(alter(&mut snap, vec![lock], false), (true, 1));
        assert_eq!(snap.group_configs["g"].len(), 2, "incremental: the other key stays");
        // Refused whole: out of Kafka's bounds, unknown, a list operation.
        for bad in [
            op("share.record.lock.duration.ms", ConfigOp::Set, Some("1000")),
            op("consumer.heartbeat.interval.ms", ConfigOp::Set, Some("50000")),
            op("nope", ConfigOp::Set, Some("1")),
            op("share.auto.offset.reset", ConfigOp::Append, Some("earliest")),
        ] {
            assert_eq!(alter(&mut snap, vec![earliest.clone(), bad], false), (false, 0));
        }
        assert_eq!(snap.group_configs["g"]["share.record.lock.duration.ms"], "20000");
        // AlterConfigs replaces the set; deleting the last key forgets the group.
        assert_eq!(alter(&mut snap, vec![earliest], true), (true, 1));
        assert_eq!(snap.group_configs["g"].len(), 1);
        assert_eq!(alter(&mut snap, vec![op("share.auto.offset.reset", ConfigOp::Delete, None)], false), (true, 1));
        assert!(snap.group_configs.is_empty());
        assert_eq!(alter(&mut snap, vec![op("share.auto.offset.reset", ConfigOp::Delete, None)], false), (true, 0));
    }
}
