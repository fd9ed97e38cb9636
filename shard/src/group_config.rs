//! The settings a group runs with: its dynamic group configs (IncrementalAlterConfigs on a
//! GROUP resource, held in the metadata snapshot) over the broker's own settings.
//!
//! Contract: [`for_group`] is the one lookup the group and share code call (the coordinator's
//! KIP-848 heartbeats and sweep, ShareGroupHeartbeat, share-partitions); it reads this shard's
//! copy of the metadata, so a change is seen by every shard once published (on a lone broker
//! before the change is answered, in a cluster once the record is applied). A group without
//! configs, or a key it does not set, gets the broker's value. Values were checked when set
//! (`topic_config::validate_group`); one that does not parse falls back to the broker's.

use crate::shard::Shard;
use sluice_core::config::BrokerConfig;
use std::collections::BTreeMap;

/// One group's effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// `consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub consumer_heartbeat_interval_ms: i32,
    /// `consumer.session.timeout.ms`.
    pub consumer_session_timeout_ms: i32,
    /// `share.heartbeat.interval.ms`.
    pub share_heartbeat_interval_ms: i32,
    /// `share.session.timeout.ms`.
    pub share_session_timeout_ms: i32,
    /// `share.record.lock.duration.ms`.
    pub share_record_lock_duration_ms: i32,
    /// `share.delivery.count.limit`.
    pub share_delivery_count_limit: i32,
    /// `share.partition.max.record.locks`.
    pub share_partition_max_record_locks: usize,
    /// `share.auto.offset.reset`: "earliest" or "latest" (sluice has no `by_duration` yet:
    /// it starts at the latest offset).
    pub share_auto_offset_reset: String,
}

/// The settings of `group` on this shard now.
pub fn for_group(shard: &Shard, group: &str) -> GroupSettings {
    let meta = shard.metadata();
    resolve(&shard.config, meta.group_configs.get(group))
}

/// The settings from a group's configs (None: it has none) over the broker's.
pub fn resolve(c: &BrokerConfig, set: Option<&BTreeMap<String, String>>) -> GroupSettings {
    fn get<T: std::str::FromStr>(set: Option<&BTreeMap<String, String>>, key: &str, broker: T) -> T {
        set.and_then(|s| s.get(key)).and_then(|v| v.trim().parse().ok()).unwrap_or(broker)
    }
    GroupSettings {
        consumer_heartbeat_interval_ms: get(
            set,
            "consumer.heartbeat.interval.ms",
            c.group_consumer_heartbeat_interval_ms,
        ),
        consumer_session_timeout_ms: get(set, "consumer.session.timeout.ms", c.group_consumer_session_timeout_ms),
        share_heartbeat_interval_ms: get(set, "share.heartbeat.interval.ms", c.group_share_heartbeat_interval_ms),
        share_session_timeout_ms: get(set, "share.session.timeout.ms", c.group_share_session_timeout_ms),
        share_record_lock_duration_ms: get(set, "share.record.lock.duration.ms", c.group_share_record_lock_duration_ms),
        share_delivery_count_limit: get(set, "share.delivery.count.limit", c.group_share_delivery_count_limit),
        share_partition_max_record_locks: get(
            set,
            "share.partition.max.record.locks",
            c.group_share_partition_max_record_locks,
        ),
        share_auto_offset_reset: match set.and_then(|s| s.get("share.auto.offset.reset")) {
            Some(v) if v.trim().eq_ignore_ascii_case("earliest") => "earliest".to_string(),
            Some(_) => "latest".to_string(),
            None => c.share_auto_offset_reset.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_value_wins_over_the_broker() {
        let c = BrokerConfig::default();
        let base = resolve(&c, None);
        assert_eq!(base.share_auto_offset_reset, c.share_auto_offset_reset);
        assert_eq!(base.consumer_heartbeat_interval_ms, c.group_consumer_heartbeat_interval_ms);
        let set: BTreeMap<String, String> = [
            ("share.auto.offset.reset", "earliest"),
            ("share.record.lock.duration.ms", "20000"),
            ("consumer.heartbeat.interval.ms", "7000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let g = resolve(&c, Some(&set));
        assert_eq!(g.share_auto_offset_reset, "earliest");
        assert_eq!(g.share_record_lock_duration_ms, 20_000);
        assert_eq!(g.consumer_heartbeat_interval_ms, 7_000);
        assert_eq!(g.consumer_session_timeout_ms, c.group_consumer_session_timeout_ms, "unset: the broker's");
    }
}
