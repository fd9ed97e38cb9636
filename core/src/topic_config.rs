//! Topic-level configs: names, Kafka's defaults, the broker-level synonym, and validation.
//!
//! Contract: [`lookup`] knows every config a topic may carry; [`validate`] refuses a value
//! with a message naming the key, the value and what was expected. Values are kept as the
//! strings clients sent (Kafka's model); typed accessors parse them.

/// How a value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A signed 64-bit integer at least `min`.
    Long {
        min: i64,
    },
    /// A signed 32-bit integer at least `min`.
    Int {
        min: i32,
    },
    Bool,
    /// A number between 0 and 1.
    Ratio,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these words.
    ListOf(&'static [&'static str]),
}

/// One topic config.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub default: &'static str,
    /// The broker config that supplies the default (shown as a synonym).
    pub broker_synonym: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
}

/// Group configs (KIP-848 consumer groups, KIP-932 share groups, KIP-1071 streams groups) with
/// Apache Kafka 4.4's defaults and broker synonyms, as its DescribeConfigs answers them for a
/// GROUP resource. Set per group with IncrementalAlterConfigs (checked by [`validate_group`]);
/// sluice applies the consumer- and share-group ones it implements (`sluice_shard::group_config`).
pub const GROUP_DEFS: &[Def] = &[
    Def {
        name: "consumer.assignment.interval.ms",
        default: "1000",
        broker_synonym: "group.consumer.assignment.interval.ms",
        kind: Kind::Int { min: 0 },
        doc: "The interval between assignment updates for a consumer group.",
    },
    Def {
        name: "consumer.heartbeat.interval.ms",
        default: "1000",
        broker_synonym: "group.consumer.heartbeat.interval.ms",
        kind: Kind::Int { min: 1 },
        doc: "The heartbeat interval given to the members of a consumer group.",
    },
    Def {
        name: "consumer.session.timeout.ms",
        default: "45000",
        broker_synonym: "group.consumer.session.timeout.ms",
        kind: Kind::Int { min: 1 },
        doc: "The timeout to detect client failures when using the consumer group protocol.",
    },
    Def {
        name: "errors.deadletterqueue.copy.record.enable",
        default: "false",
        broker_synonym: "errors.deadletterqueue.copy.record.enable",
        kind: Kind::Bool,
        doc: "When writing onto the dead-letter queue topic, whether to copy the record's key, value and headers.",
    },
    Def {
        name: "errors.deadletterqueue.topic.name",
        default: "",
        broker_synonym: "errors.deadletterqueue.topic.name",
        kind: Kind::OneOf(&[]),
        doc: "The name of the topic to be used as the dead-letter queue (DLQ) for share groups.",
    },
    Def {
        name: "share.assignment.interval.ms",
        default: "1000",
        broker_synonym: "group.share.assignment.interval.ms",
        kind: Kind::Int { min: 0 },
        doc: "The interval between assignment updates for a share group.",
    },
    Def {
        name: "share.auto.offset.reset",
        default: "latest",
        broker_synonym: "share.auto.offset.reset",
        kind: Kind::OneOf(&["latest", "earliest", "by_duration"]),
        doc: "The strategy to initialize the share-partition start offset.",
    },
    Def {
        name: "share.delivery.count.limit",
        default: "5",
        broker_synonym: "group.share.delivery.count.limit",
        kind: Kind::Int { min: 2 },
        doc: "The maximum number of delivery attempts for a record delivered to a share group.",
    },
    Def {
        name: "share.heartbeat.interval.ms",
        default: "5000",
        broker_synonym: "group.share.heartbeat.interval.ms",
        kind: Kind::Int { min: 1 },
        doc: "The heartbeat interval given to the members of a share group.",
    },
    Def {
        name: "share.isolation.level",
        default: "read_uncommitted",
        broker_synonym: "share.isolation.level",
        kind: Kind::OneOf(&["read_uncommitted", "read_committed"]),
        doc: "Controls how to read records written transactionally.",
    },
    Def {
        name: "share.partition.max.record.locks",
        default: "2000",
        broker_synonym: "group.share.partition.max.record.locks",
        kind: Kind::Int { min: 100 },
        doc: "Share-group record lock limit per share-partition.",
    },
    Def {
        name: "share.record.lock.duration.ms",
        default: "30000",
        broker_synonym: "group.share.record.lock.duration.ms",
        kind: Kind::Int { min: 1000 },
        doc: "The record acquisition lock duration in milliseconds for share groups.",
    },
    Def {
        name: "share.renew.acknowledge.enable",
        default: "true",
        broker_synonym: "share.renew.acknowledge.enable",
        kind: Kind::Bool,
        doc: "Whether the renew acknowledge type is enabled for the share group.",
    },
    Def {
        name: "share.session.timeout.ms",
        default: "45000",
        broker_synonym: "group.share.session.timeout.ms",
        kind: Kind::Int { min: 1 },
        doc: "The timeout to detect client failures when using the share group protocol.",
    },
    Def {
        name: "streams.assignment.interval.ms",
        default: "1000",
        broker_synonym: "group.streams.assignment.interval.ms",
        kind: Kind::Int { min: 0 },
        doc: "The interval between assignment updates for a streams group.",
    },
    Def {
        name: "streams.assignor.name",
        default: "sticky",
        broker_synonym: "group.streams.assignors",
        kind: Kind::OneOf(&["sticky"]),
        doc: "The task assignor to use for this streams group.",
    },
    Def {
        name: "streams.heartbeat.interval.ms",
        default: "5000",
        broker_synonym: "group.streams.heartbeat.interval.ms",
        kind: Kind::Int { min: 1 },
        doc: "The heartbeat interval given to the members.",
    },
    Def {
        name: "streams.initial.rebalance.delay.ms",
        default: "3000",
        broker_synonym: "group.streams.initial.rebalance.delay.ms",
        kind: Kind::Int { min: 0 },
        doc: "The amount of time the group coordinator will wait for more streams clients to join a new group.",
    },
    Def {
        name: "streams.num.standby.replicas",
        default: "0",
        broker_synonym: "group.streams.num.standby.replicas",
        kind: Kind::Int { min: 0 },
        doc: "The number of standby replicas for each task.",
    },
    Def {
        name: "streams.rack.aware.assignment.tags",
        default: "",
        broker_synonym: "group.streams.rack.aware.assignment.tags",
        kind: Kind::ListOf(&[]),
        doc: "List of client tag keys used to distribute standby replicas across Kafka Streams clients.",
    },
    Def {
        name: "streams.session.timeout.ms",
        default: "45000",
        broker_synonym: "group.streams.session.timeout.ms",
        kind: Kind::Int { min: 1 },
        doc: "The timeout to detect client failures when using the streams group protocol.",
    },
];

const LMAX: &str = "9223372036854775807";

/// Every topic config, with Kafka 4.x's defaults.
pub const DEFS: &[Def] = &[
    Def {
        name: "cleanup.policy",
        default: "delete",
        broker_synonym: "log.cleanup.policy",
        kind: Kind::ListOf(&["delete", "compact"]),
        doc: "delete old segments, compact (keep the last record per key), or both",
    },
    Def {
        name: "compression.type",
        default: "producer",
        broker_synonym: "compression.type",
        kind: Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        doc: "batches are stored as the producer compressed them",
    },
    Def {
        name: "delete.retention.ms",
        default: "86400000",
        broker_synonym: "log.cleaner.delete.retention.ms",
        kind: Kind::Long { min: 0 },
        doc: "tombstone retention for compacted topics",
    },
    Def {
        name: "file.delete.delay.ms",
        default: "60000",
        broker_synonym: "log.segment.delete.delay.ms",
        kind: Kind::Long { min: 0 },
        doc: "a deleted segment's file waits this long under a .deleted name, then is freed in small steps",
    },
    Def {
        name: "flush.messages",
        default: LMAX,
        broker_synonym: "log.flush.interval.messages",
        kind: Kind::Long { min: 1 },
        doc: "sluice fsyncs every write round; acks=all always waits for fdatasync",
    },
    Def {
        name: "flush.ms",
        default: LMAX,
        broker_synonym: "log.flush.interval.ms",
        kind: Kind::Long { min: 0 },
        doc: "sluice fsyncs every write round; acks=all always waits for fdatasync",
    },
    Def {
        name: "index.interval.bytes",
        default: "4096",
        broker_synonym: "log.index.interval.bytes",
        kind: Kind::Int { min: 0 },
        doc: "bytes between offset index entries",
    },
    Def {
        name: "max.compaction.lag.ms",
        default: LMAX,
        broker_synonym: "log.cleaner.max.compaction.lag.ms",
        kind: Kind::Long { min: 1 },
        doc: "compaction lag bound",
    },
    Def {
        name: "max.message.bytes",
        default: "1048588",
        broker_synonym: "message.max.bytes",
        kind: Kind::Int { min: 0 },
        doc: "largest record batch accepted (MESSAGE_TOO_LARGE above)",
    },
    Def {
        name: "message.timestamp.after.max.ms",
        default: "3600000",
        broker_synonym: "log.message.timestamp.after.max.ms",
        kind: Kind::Long { min: 0 },
        doc: "how far in the future a CreateTime timestamp may be",
    },
    Def {
        name: "message.timestamp.before.max.ms",
        default: LMAX,
        broker_synonym: "log.message.timestamp.before.max.ms",
        kind: Kind::Long { min: 0 },
        doc: "how far in the past a CreateTime timestamp may be",
    },
    Def {
        name: "message.timestamp.type",
        default: "CreateTime",
        broker_synonym: "log.message.timestamp.type",
        kind: Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        doc: "LogAppendTime: the broker writes the append time into each batch",
    },
    Def {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        broker_synonym: "log.cleaner.min.cleanable.ratio",
        kind: Kind::Ratio,
        doc: "compaction trigger",
    },
    Def {
        name: "min.compaction.lag.ms",
        default: "0",
        broker_synonym: "log.cleaner.min.compaction.lag.ms",
        kind: Kind::Long { min: 0 },
        doc: "compaction lag bound",
    },
    Def {
        name: "min.insync.replicas",
        default: "1",
        broker_synonym: "min.insync.replicas",
        kind: Kind::Int { min: 1 },
        doc: "one broker: always 1 in sync",
    },
    Def {
        name: "preallocate",
        default: "false",
        broker_synonym: "log.preallocate",
        kind: Kind::Bool,
        doc: "preallocate segment files",
    },
    Def {
        name: "retention.bytes",
        default: "-1",
        broker_synonym: "log.retention.bytes",
        kind: Kind::Long { min: -1 },
        doc: "size bound per partition (-1: none)",
    },
    Def {
        name: "retention.ms",
        default: "604800000",
        broker_synonym: "log.retention.ms",
        kind: Kind::Long { min: -1 },
        doc: "time bound (-1: none)",
    },
    Def {
        name: "segment.bytes",
        default: "1073741824",
        broker_synonym: "log.segment.bytes",
        kind: Kind::Int { min: 14 },
        doc: "segment size",
    },
    Def {
        name: "segment.index.bytes",
        default: "10485760",
        broker_synonym: "log.index.size.max.bytes",
        kind: Kind::Int { min: 4 },
        doc: "index size",
    },
    Def {
        name: "segment.jitter.ms",
        default: "0",
        broker_synonym: "log.roll.jitter.ms",
        kind: Kind::Long { min: 0 },
        doc: "roll jitter",
    },
    Def {
        name: "segment.ms",
        default: "604800000",
        broker_synonym: "log.roll.ms",
        kind: Kind::Long { min: 1 },
        doc: "segment age before rolling",
    },
    Def {
        name: "unclean.leader.election.enable",
        default: "false",
        broker_synonym: "unclean.leader.election.enable",
        kind: Kind::Bool,
        doc: "one broker: no effect",
    },
];

/// The definition of a config, if it is a topic config.
pub fn lookup(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

/// Kafka's default of an integer topic config, parsed from its definition (the one place the
/// default is written; the storage crate's `LogConfig::default` takes its values from here).
///
/// Panics when `name` is not an integer topic config (a programming error, tested for every
/// integer config below).
pub fn default_i64(name: &str) -> i64 {
    let def = lookup(name).unwrap_or_else(|| panic!("`{name}` is not a topic config"));
    assert!(matches!(def.kind, Kind::Long { .. } | Kind::Int { .. }), "`{name}` is not an integer config");
    def.default.parse().unwrap_or_else(|_| panic!("the default of `{name}` is an integer"))
}

/// Checks a value for a key; the error names both.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let def = lookup(name).ok_or_else(|| format!("unknown topic config `{name}`"))?;
    check_kind(def, value)
        .map_err(|expected| format!("invalid value {value:?} for topic config `{name}`: expected {expected}"))
}

/// Checks a value against its definition's kind; the error says what was expected.
fn check_kind(def: &Def, value: &str) -> Result<(), String> {
    let bad = |expected: String| Err(expected);
    match def.kind {
        Kind::Long { min } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            _ => bad(format!("an integer at least {min}")),
        },
        Kind::Int { min } => match value.trim().parse::<i32>() {
            Ok(v) if v >= min => Ok(()),
            _ => bad(format!("a 32-bit integer at least {min}")),
        },
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => bad("true or false".into()),
        },
        Kind::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => bad("a number between 0 and 1".into()),
        },
        Kind::OneOf(words) => {
            if words.iter().any(|w| w.eq_ignore_ascii_case(value.trim())) {
                Ok(())
            } else {
                bad(format!("one of {}", words.join(", ")))
            }
        }
        Kind::ListOf(words) => {
            let ok = value.split(',').all(|v| words.iter().any(|w| w.eq_ignore_ascii_case(v.trim())));
            if ok && !value.trim().is_empty() {
                Ok(())
            } else {
                bad(format!("a comma-separated list of {}", words.join(", ")))
            }
        }
    }
}

/// The definition of a group config, if `name` is one.
pub fn lookup_group(name: &str) -> Option<&'static Def> {
    GROUP_DEFS.iter().find(|d| d.name == name)
}

/// Kafka's broker bounds on a group config (inclusive), with the broker configs that hold them.
fn group_bounds(name: &str) -> Option<(i64, &'static str, i64, &'static str)> {
    use crate::limits::*;
    let (hb, st) = (
        (GROUP_CONFIG_MIN_HEARTBEAT_INTERVAL_MS, GROUP_CONFIG_MAX_HEARTBEAT_INTERVAL_MS),
        (GROUP_CONFIG_MIN_SESSION_TIMEOUT_MS, GROUP_CONFIG_MAX_SESSION_TIMEOUT_MS),
    );
    Some(match name {
        "consumer.heartbeat.interval.ms" => {
            let min = GROUP_CONFIG_MIN_CONSUMER_HEARTBEAT_INTERVAL_MS;
            (min, "group.consumer.min.heartbeat.interval.ms", hb.1, "group.consumer.max.heartbeat.interval.ms")
        }
        "consumer.session.timeout.ms" => {
            (st.0, "group.consumer.min.session.timeout.ms", st.1, "group.consumer.max.session.timeout.ms")
        }
        "share.heartbeat.interval.ms" => {
            (hb.0, "group.share.min.heartbeat.interval.ms", hb.1, "group.share.max.heartbeat.interval.ms")
        }
        "share.session.timeout.ms" => {
            (st.0, "group.share.min.session.timeout.ms", st.1, "group.share.max.session.timeout.ms")
        }
        "streams.heartbeat.interval.ms" => {
            (hb.0, "group.streams.min.heartbeat.interval.ms", hb.1, "group.streams.max.heartbeat.interval.ms")
        }
        "streams.session.timeout.ms" => {
            (st.0, "group.streams.min.session.timeout.ms", st.1, "group.streams.max.session.timeout.ms")
        }
        "share.record.lock.duration.ms" => (
            GROUP_CONFIG_MIN_RECORD_LOCK_DURATION_MS,
            "group.share.min.record.lock.duration.ms",
            GROUP_CONFIG_MAX_RECORD_LOCK_DURATION_MS,
            "group.share.max.record.lock.duration.ms",
        ),
        "share.delivery.count.limit" => (
            i64::from(MIN_SHARE_DELIVERY_COUNT_LIMIT),
            "group.share.min.delivery.count.limit",
            i64::from(MAX_SHARE_DELIVERY_COUNT_LIMIT),
            "group.share.max.delivery.count.limit",
        ),
        "share.partition.max.record.locks" => (
            MIN_SHARE_PARTITION_RECORD_LOCKS as i64,
            "group.share.min.partition.max.record.locks",
            MAX_SHARE_PARTITION_RECORD_LOCKS as i64,
            "group.share.max.partition.max.record.locks",
        ),
        "streams.num.standby.replicas" => {
            (0, "0", GROUP_CONFIG_MAX_STANDBY_REPLICAS, "group.streams.max.standby.replicas")
        }
        _ => return None,
    })
}

/// Checks a group's whole set of configs (the values it would hold after a change), as
/// Kafka's `GroupConfig.validate`: every key known, every value of its type, within the
/// broker's bounds, and each group type's heartbeat interval below its session timeout (the
/// unset one at its default). The error is Kafka's message.
pub fn validate_group(set: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in set {
        let def = lookup_group(name).ok_or_else(|| format!("Unknown group config name: {name}"))?;
        // A free string or list (a dead-letter topic, rack tags): any value; `by_duration:` takes an ISO duration.
        let free = matches!(def.kind, Kind::OneOf([]) | Kind::ListOf([]))
            || (name == "share.auto.offset.reset" && value.starts_with("by_duration:"));
        if !free {
            check_kind(def, value)
                .map_err(|expected| format!("Invalid value {value} for configuration {name}: expected {expected}"))?;
        }
        if let Some((min, min_name, max, max_name)) = group_bounds(name) {
            let v: i64 = value.trim().parse().map_err(|_| format!("Invalid value {value} for configuration {name}"))?;
            if v < min {
                return Err(format!("{name} must be greater than or equal to {min_name}"));
            }
            if v > max {
                return Err(format!("{name} must be less than or equal to {max_name}"));
            }
        }
    }
    for kind in ["consumer", "share", "streams"] {
        let (hb, st) = (format!("{kind}.heartbeat.interval.ms"), format!("{kind}.session.timeout.ms"));
        let get = |k: &str| -> i64 { effective_group(set, k).and_then(|v| v.trim().parse().ok()).unwrap_or(0) };
        if (set.contains_key(&hb) || set.contains_key(&st)) && get(&hb) >= get(&st) {
            return Err(format!("{st} must be greater than {hb}"));
        }
    }
    Ok(())
}

/// A group's value for `name`: its own, or Kafka's default.
pub fn effective_group<'a>(set: &'a std::collections::BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    set.get(name).map(String::as_str).or_else(|| lookup_group(name).map(|d| d.default))
}

/// A topic's effective value for `name`: its own, or the default.
pub fn effective<'a>(set: &'a std::collections::BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    set.get(name).map(String::as_str).or_else(|| lookup(name).map(|d| d.default))
}

/// Like [`effective`], with the broker's `topic_defaults` between the topic's own value and
/// Kafka's default.
pub fn effective_with<'a>(
    set: &'a std::collections::BTreeMap<String, String>,
    broker: &'a std::collections::BTreeMap<String, String>,
    name: &str,
) -> Option<&'a str> {
    set.get(name).or_else(|| broker.get(name)).map(String::as_str).or_else(|| lookup(name).map(|d| d.default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        let e = validate("retention.ms", "soon").unwrap_err();
        assert!(e.contains("retention.ms") && e.contains("soon"), "{e}");
        assert!(validate("nope.ms", "1").unwrap_err().contains("nope.ms"));
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("message.timestamp.type", "Now").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        for d in DEFS {
            assert!(validate(d.name, d.default).is_ok(), "default of {} must be valid", d.name);
        }
    }

    #[test]
    fn group_configs_are_checked_as_kafka_does() {
        let set = |kv: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(validate_group(&set(&[("share.auto.offset.reset", "earliest")])).is_ok());
        assert!(validate_group(&set(&[("consumer.heartbeat.interval.ms", "6000")])).is_ok());
        assert_eq!(
            validate_group(&set(&[("consumer.heartbeat.interval.ms", "999")])).unwrap_err(),
            "consumer.heartbeat.interval.ms must be greater than or equal to group.consumer.min.heartbeat.interval.ms"
        );
        assert_eq!(
            validate_group(&set(&[("share.record.lock.duration.ms", "60001")])).unwrap_err(),
            "share.record.lock.duration.ms must be less than or equal to group.share.max.record.lock.duration.ms"
        );
        assert!(validate_group(&set(&[("share.auto.offset.reset", "soon")])).is_err());
        assert!(validate_group(&set(&[("share.delivery.count.limit", "x")])).is_err());
        assert_eq!(validate_group(&set(&[("nope", "1")])).unwrap_err(), "Unknown group config name: nope");
        let defaults: std::collections::BTreeMap<String, String> =
            GROUP_DEFS.iter().map(|d| (d.name.to_string(), d.default.to_string())).collect();
        assert_eq!(validate_group(&defaults), Ok(()), "Kafka's defaults are valid");
    }

    #[test]
    fn integer_defaults_parse() {
        for d in DEFS.iter().filter(|d| matches!(d.kind, Kind::Long { .. } | Kind::Int { .. })) {
            let _ = default_i64(d.name);
        }
        assert_eq!(default_i64("segment.bytes"), 1 << 30);
        assert_eq!(default_i64("retention.bytes"), -1);
    }
}
