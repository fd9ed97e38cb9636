//! Broker configuration: embedded defaults, the TOML file, and validation.
//!
//! Contract: a [`BrokerConfig`] that left [`BrokerConfig::validate`] is usable as is; every
//! error names the key, the value and what was expected. Command-line flags are applied by the
//! binary on top of the file (flags win).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

use crate::cluster::{check_cluster_id, parse_voters, NodeId, Voter};
use crate::limits::{MAX_PARTITIONS_PER_TOPIC, MIN_RESPONSE_BYTES_PER_SHARD};

/// Which online conversions between a classic group and a KIP-848 consumer group are allowed
/// (Kafka's `group.consumer.migration.policy`): upgrade when a `group.protocol=consumer` member
/// joins a classic group with members, downgrade when the last such member leaves a group whose
/// other members use the classic protocol.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPolicy {
    #[default]
    Bidirectional,
    Upgrade,
    Downgrade,
    Disabled,
}

impl MigrationPolicy {
    pub fn upgrade_enabled(self) -> bool {
        matches!(self, MigrationPolicy::Bidirectional | MigrationPolicy::Upgrade)
    }
    pub fn downgrade_enabled(self) -> bool {
        matches!(self, MigrationPolicy::Bidirectional | MigrationPolicy::Downgrade)
    }
}

/// Everything the broker needs to start. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Address every shard listens on (SO_REUSEPORT); also the address advertised to clients.
    pub listen: String,
    /// Host and port given to clients in Metadata, FindCoordinator and DescribeCluster (Kafka's
    /// `advertised.listeners`); empty: the listen address. For a proxy, NAT or container.
    pub advertised_listen: String,
    /// Address of the metrics and readiness endpoint (HTTP); empty disables it.
    pub metrics_listen: String,
    /// Directory holding metadata and partition logs; created if missing.
    pub data_dir: PathBuf,
    /// Number of shards (one pinned executor per core); `None` means every available core.
    pub cores: Option<usize>,
    /// Create unknown topics on Metadata and Produce (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics_enable: bool,
    /// Partitions of an auto-created topic, and the default for CreateTopics with -1.
    pub num_partitions: i32,
    /// How long a new group waits for more members before its first rebalance completes
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Smallest session timeout a member may ask for (`group.min.session.timeout.ms`).
    pub group_min_session_timeout_ms: i32,
    /// Largest session timeout a member may ask for (`group.max.session.timeout.ms`).
    pub group_max_session_timeout_ms: i32,
    /// KIP-848 consumer groups: a member silent this long is removed
    /// (`group.consumer.session.timeout.ms`).
    pub group_consumer_session_timeout_ms: i32,
    /// KIP-848 consumer groups: the heartbeat interval given to members
    /// (`group.consumer.heartbeat.interval.ms`); below the session timeout.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// KIP-848 consumer groups: members a group may have (`group.consumer.max.size`).
    pub group_consumer_max_size: usize,
    /// Online conversion between classic and KIP-848 consumer groups
    /// (`group.consumer.migration.policy`): `bidirectional`, `upgrade`, `downgrade` or `disabled`.
    pub group_consumer_migration_policy: MigrationPolicy,
    /// Share groups (KIP-932): a member silent this long is removed
    /// (`group.share.session.timeout.ms`).
    pub group_share_session_timeout_ms: i32,
    /// Share groups: the heartbeat interval given to members (`group.share.heartbeat.interval.ms`).
    pub group_share_heartbeat_interval_ms: i32,
    /// Share groups: members a group may have (`group.share.max.size`).
    pub group_share_max_size: usize,
    /// Share groups: how long a member holds records it acquired before they are delivered
    /// again (`group.share.record.lock.duration.ms`).
    pub group_share_record_lock_duration_ms: i32,
    /// Share groups: deliveries of a record before it is archived
    /// (`group.share.delivery.count.limit`).
    pub group_share_delivery_count_limit: i32,
    /// Share groups: in-flight records per share-partition
    /// (`group.share.partition.max.record.locks`).
    pub group_share_partition_max_record_locks: usize,
    /// Share groups: where a share-partition starts when first fetched, "latest" (the high
    /// watermark) or "earliest" (the log start). Kafka's group config
    /// `share.auto.offset.reset`, here for every share group of the broker.
    pub share_auto_offset_reset: String,
    /// Committed offsets of a group without members expire after this (`offsets.retention.minutes`).
    pub offsets_retention_minutes: u64,
    /// Partitions of the internal `__consumer_offsets` topic; fixed once it exists.
    pub offsets_topic_num_partitions: i32,
    /// Replicas of each `__consumer_offsets` partition in a cluster (Kafka's
    /// `offsets.topic.replication.factor`), at most the cluster's members; the topic is created
    /// once that many brokers are live.
    pub offsets_topic_replication_factor: i16,
    /// Replicas of each `__transaction_state` partition in a cluster (Kafka's
    /// `transaction.state.log.replication.factor`), as `offsets_topic_replication_factor`.
    pub transaction_state_replication_factor: i16,
    /// Replicas of each partition of an auto-created topic, and of a CreateTopics that leaves
    /// the factor to the broker (Kafka's `default.replication.factor`).
    pub default_replication_factor: i16,
    /// Connections the broker accepts in total (0: unlimited), counted across all shards.
    pub max_connections: usize,
    /// Connections accepted from one IP address (0: unlimited, Kafka's default), counted
    /// across all shards.
    pub max_connections_per_ip: usize,
    /// A connection with no request for this long is closed (Kafka's `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// How long a client may take to send the rest of a request frame once its size arrived;
    /// past it the connection is closed and the frame's reserved budget freed.
    pub request_body_timeout_ms: u64,
    /// Tasks each shard runs at once for messages from other shards that do local work
    /// (produce, fetch reads, offsets); more wait in the bounded cross-core channels.
    pub max_mesh_tasks_per_shard: usize,
    /// Segment files each shard keeps open at most; idle ones are closed (least recently used
    /// first) and reopened when used, so descriptors stay bounded with many partitions.
    pub max_open_files_per_shard: usize,
    /// Bytes of responses each shard holds built but not yet written to their sockets; Fetch
    /// answers shrink to what is left (the first batch always whole).
    pub max_response_bytes_per_shard: usize,
    /// Bytes of segment-file chunks each shard keeps in memory for reads (filled by reads,
    /// read-ahead and the flusher's writes; least recently used out). `None` (the default):
    /// sized for the host, see [`BrokerConfig::read_cache_bytes_for`].
    pub read_cache_bytes_per_shard: Option<usize>,
    /// How often each shard deletes segments retention no longer keeps
    /// (`log.retention.check.interval.ms`).
    pub log_retention_check_interval_ms: u64,
    /// How long start-up retries binding a listen port that is in use before it gives up
    /// (0: fail at once). Covers a restart right after a crash, while the kernel still holds
    /// the dead broker's sockets.
    pub listen_retry_ms: u64,
    /// A producer's idempotence state in a partition is forgotten this long after its last
    /// write there (Kafka's `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
    /// Largest `transaction.timeout.ms` a transactional producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`).
    pub transaction_max_timeout_ms: u64,
    /// A transactional id without an open transaction is forgotten this long after its last
    /// update (Kafka's `transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: u64,
    /// The finalized `transaction.version` feature ApiVersions advertises (Kafka 4.x finalizes
    /// 2 on a new cluster): 2 lets Java clients 4.x use KIP-890 part 2 (an epoch bump per
    /// transaction, partitions added by Produce v12, EndTxn v5, TxnOffsetCommit v5); 1 keeps
    /// them on the version 1 protocol. Older clients use version 1 either way.
    pub transaction_version: i16,
    /// Partitions of the internal `__transaction_state` topic; fixed once it exists.
    pub transaction_state_num_partitions: i32,
    /// Broker-level defaults for topic configs, by topic config name (`retention.ms`) or by
    /// Kafka's broker name for it (`log.retention.ms`); a topic's own setting wins.
    pub topic_defaults: BTreeMap<String, toml::Value>,
    /// This broker's node id (Kafka's `node.id`), unique in the cluster.
    pub node_id: i32,
    /// Address of the broker-to-broker listener (every shard, SO_REUSEPORT); empty: a lone
    /// broker with no peers.
    pub peer_listen: String,
    /// Every cluster member as `id@host:port` of its peer listener, comma-separated (KRaft's
    /// `controller.quorum.voters`); empty: a lone broker.
    pub controller_quorum_voters: String,
    /// The cluster's id (22 URL-safe base64 characters, as Kafka's); empty: the data dir's own
    /// (generated at its first start). A data dir of another cluster is refused at start, a
    /// peer of another cluster in the handshake.
    pub cluster_id: String,
    /// How often a broker sends a heartbeat to each peer it is connected to.
    pub peer_heartbeat_interval_ms: u64,
    /// A peer not heard from for this long is marked offline (left out of Metadata) and its
    /// connection dropped (Kafka's `broker.session.timeout.ms`).
    pub peer_session_timeout_ms: u64,
    /// A follower not caught up with its leader's log end for this long leaves the partition's
    /// ISR (Kafka's `replica.lag.time.max.ms`); it rejoins once caught up again.
    pub replica_lag_time_max_ms: u64,
    /// Kafka's `auto.leader.rebalance.enable`: every broker moves the leadership of the
    /// partitions whose preferred (first) replica it is back to itself once its leader
    /// imbalance exceeds `leader_imbalance_per_broker_percentage`.
    pub auto_leader_rebalance_enable: bool,
    /// Kafka's `leader.imbalance.check.interval.seconds`: how often that imbalance is checked.
    pub leader_imbalance_check_interval_seconds: u64,
    /// Kafka's `leader.imbalance.per.broker.percentage`: the share (percent) of a broker's
    /// preferred partitions led elsewhere above which their leadership moves back.
    pub leader_imbalance_per_broker_percentage: u32,
    /// Named listeners, Kafka's `listeners` (`NAME://ip:port,...`); empty: one PLAINTEXT
    /// listener on `listen`. When set, `listen` and `advertised_listen` are not used.
    pub listeners: String,
    /// Kafka's `advertised.listeners` (`NAME://host:port,...`); a listener not named here
    /// advertises its bound address.
    pub advertised_listeners: String,
    /// Kafka's `listener.security.protocol.map` (`NAME:PROTOCOL,...`), on top of the default
    /// that maps PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL to themselves.
    pub listener_security_protocol_map: String,
    /// Certificate, key and CA files for SSL and SASL_SSL listeners.
    pub tls: crate::listeners::TlsConfig,
    /// SASL mechanisms and PLAIN users for SASL_PLAINTEXT and SASL_SSL listeners.
    pub sasl: crate::listeners::SaslConfig,
    /// A SASL session lasts this long; the client must re-authenticate before (KIP-368), or
    /// its connection is closed at its next request (Kafka's `connections.max.reauth.ms`;
    /// 0: sessions never expire).
    pub connections_max_reauth_ms: u64,
    /// Kafka's `authorizer.class.name`: empty (no authorizer: every request is allowed and
    /// the ACL APIs answer SECURITY_DISABLED) or [`STANDARD_AUTHORIZER`] (ACLs are enforced).
    pub authorizer_class_name: String,
    /// Principals (`User:name`) allowed everything, as Kafka's `super.users`.
    pub super_users: Vec<String>,
    /// Kafka's `allow.everyone.if.no.acl.found`: a resource no ACL names is open to all.
    pub allow_everyone_if_no_acl_found: bool,
    /// Client quotas: samples a rate is measured over (Kafka's `quota.window.num`).
    pub quota_window_num: u32,
    /// Client quotas: length of one sample (Kafka's `quota.window.size.seconds`).
    pub quota_window_size_seconds: u32,
}

/// The authorizer `authorizer_class_name` may name (Kafka's KRaft authorizer); the ZooKeeper
/// era's `kafka.security.authorizer.AclAuthorizer` is accepted as the same.
pub const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";
const ACL_AUTHORIZER: &str = "kafka.security.authorizer.AclAuthorizer";

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:9092".to_string(),
            advertised_listen: String::new(),
            metrics_listen: "127.0.0.1:9644".to_string(),
            data_dir: PathBuf::from("./data"),
            cores: None,
            auto_create_topics_enable: true,
            num_partitions: 1,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_consumer_session_timeout_ms: crate::limits::DEFAULT_CONSUMER_GROUP_SESSION_TIMEOUT_MS,
            group_consumer_heartbeat_interval_ms: crate::limits::DEFAULT_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS,
            group_consumer_max_size: crate::limits::MAX_CONSUMER_GROUP_MEMBERS,
            group_consumer_migration_policy: MigrationPolicy::Bidirectional,
            group_share_session_timeout_ms: crate::limits::DEFAULT_CONSUMER_GROUP_SESSION_TIMEOUT_MS,
            group_share_heartbeat_interval_ms: crate::limits::DEFAULT_SHARE_GROUP_HEARTBEAT_INTERVAL_MS,
            group_share_max_size: crate::limits::DEFAULT_SHARE_GROUP_MEMBERS,
            group_share_record_lock_duration_ms: crate::limits::DEFAULT_SHARE_RECORD_LOCK_DURATION_MS,
            group_share_delivery_count_limit: crate::limits::DEFAULT_SHARE_DELIVERY_COUNT_LIMIT,
            group_share_partition_max_record_locks: crate::limits::DEFAULT_SHARE_PARTITION_RECORD_LOCKS,
            share_auto_offset_reset: "latest".to_string(),
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_topic_num_partitions: 16,
            offsets_topic_replication_factor: 3,
            transaction_state_replication_factor: 3,
            default_replication_factor: 1,
            log_retention_check_interval_ms: 300_000,
            listen_retry_ms: crate::limits::DEFAULT_LISTEN_RETRY_MS,
            producer_id_expiration_ms: crate::limits::DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            connections_max_idle_ms: 600_000,
            request_body_timeout_ms: crate::limits::REQUEST_BODY_TIMEOUT_MS,
            max_mesh_tasks_per_shard: crate::limits::DEFAULT_MAX_MESH_TASKS_PER_SHARD,
            max_open_files_per_shard: crate::limits::DEFAULT_MAX_OPEN_SEGMENT_FILES_PER_SHARD,
            max_response_bytes_per_shard: crate::limits::DEFAULT_MAX_RESPONSE_BYTES_PER_SHARD,
            read_cache_bytes_per_shard: None,
            transaction_max_timeout_ms: crate::limits::DEFAULT_TRANSACTION_MAX_TIMEOUT_MS,
            transactional_id_expiration_ms: crate::limits::DEFAULT_TRANSACTIONAL_ID_EXPIRATION_MS,
            transaction_version: crate::limits::DEFAULT_TRANSACTION_VERSION,
            transaction_state_num_partitions: crate::limits::DEFAULT_TRANSACTION_STATE_NUM_PARTITIONS,
            topic_defaults: BTreeMap::new(),
            node_id: 0,
            peer_listen: String::new(),
            controller_quorum_voters: String::new(),
            cluster_id: String::new(),
            peer_heartbeat_interval_ms: crate::limits::DEFAULT_PEER_HEARTBEAT_INTERVAL_MS,
            peer_session_timeout_ms: crate::limits::DEFAULT_PEER_SESSION_TIMEOUT_MS,
            replica_lag_time_max_ms: crate::limits::DEFAULT_REPLICA_LAG_TIME_MAX_MS,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: crate::limits::DEFAULT_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS,
            leader_imbalance_per_broker_percentage: crate::limits::DEFAULT_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE,
            listeners: String::new(),
            advertised_listeners: String::new(),
            listener_security_protocol_map: String::new(),
            tls: Default::default(),
            sasl: Default::default(),
            connections_max_reauth_ms: 0,
            authorizer_class_name: String::new(),
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: false,
            quota_window_num: crate::limits::DEFAULT_QUOTA_WINDOW_NUM,
            quota_window_size_seconds: crate::limits::DEFAULT_QUOTA_WINDOW_SIZE_SECONDS,
        }
    }
}

/// `MemTotal` of a /proc/meminfo text, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// The read cache per shard chosen for a host of `total` bytes of memory and `shards` shards.
fn auto_read_cache_bytes(total: u64, shards: usize) -> usize {
    use crate::limits::{
        MAX_AUTO_READ_CACHE_BYTES_PER_SHARD, MIN_READ_CACHE_BYTES_PER_SHARD, READ_CACHE_MEMORY_PERCENT,
    };
    let shards = u64::try_from(shards.max(1)).unwrap_or(u64::MAX);
    let share = total / 100 * READ_CACHE_MEMORY_PERCENT / shards;
    let min = u64::try_from(MIN_READ_CACHE_BYTES_PER_SHARD).unwrap_or(u64::MAX);
    let bytes = share.clamp(min, MAX_AUTO_READ_CACHE_BYTES_PER_SHARD);
    usize::try_from(bytes).unwrap_or(MIN_READ_CACHE_BYTES_PER_SHARD)
}

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}`: {value:?} ({expected})")]
    Invalid { key: &'static str, value: String, expected: String },
}

impl BrokerConfig {
    /// The KIP-848 settings: heartbeat interval below the session timeout, both within
    /// `limits`, and a group size between 1 and `MAX_CONSUMER_GROUP_MEMBERS`.
    fn validate_share_groups(&self) -> Result<(), ConfigError> {
        use crate::limits::*;
        let bad =
            |key: &'static str, value: String, expected: String| Err(ConfigError::Invalid { key, value, expected });
        let session = self.group_share_session_timeout_ms;
        if !(1..=MAX_CONSUMER_GROUP_SESSION_TIMEOUT_MS).contains(&session) {
            return bad(
                "group_share_session_timeout_ms",
                session.to_string(),
                format!("between 1 and {MAX_CONSUMER_GROUP_SESSION_TIMEOUT_MS}"),
            );
        }
        let hb = self.group_share_heartbeat_interval_ms;
        if hb < MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS || hb >= session {
            return bad("group_share_heartbeat_interval_ms", hb.to_string(), format!("at least {MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS} and below group_share_session_timeout_ms ({session})"));
        }
        if !(1..=MAX_SHARE_GROUP_MEMBERS).contains(&self.group_share_max_size) {
            return bad(
                "group_share_max_size",
                self.group_share_max_size.to_string(),
                format!("between 1 and {MAX_SHARE_GROUP_MEMBERS}"),
            );
        }
        let lock = self.group_share_record_lock_duration_ms;
        if !(MIN_SHARE_RECORD_LOCK_DURATION_MS..=MAX_SHARE_RECORD_LOCK_DURATION_MS).contains(&lock) {
            return bad(
                "group_share_record_lock_duration_ms",
                lock.to_string(),
                format!("between {MIN_SHARE_RECORD_LOCK_DURATION_MS} and {MAX_SHARE_RECORD_LOCK_DURATION_MS}"),
            );
        }
        let limit = self.group_share_delivery_count_limit;
        if !(MIN_SHARE_DELIVERY_COUNT_LIMIT..=MAX_SHARE_DELIVERY_COUNT_LIMIT).contains(&limit) {
            return bad(
                "group_share_delivery_count_limit",
                limit.to_string(),
                format!("between {MIN_SHARE_DELIVERY_COUNT_LIMIT} and {MAX_SHARE_DELIVERY_COUNT_LIMIT}"),
            );
        }
        let locks = self.group_share_partition_max_record_locks;
        if !(MIN_SHARE_PARTITION_RECORD_LOCKS..=MAX_SHARE_PARTITION_RECORD_LOCKS).contains(&locks) {
            return bad(
                "group_share_partition_max_record_locks",
                locks.to_string(),
                format!("between {MIN_SHARE_PARTITION_RECORD_LOCKS} and {MAX_SHARE_PARTITION_RECORD_LOCKS}"),
            );
        }
        if !["latest", "earliest"].contains(&self.share_auto_offset_reset.as_str()) {
            return bad(
                "share_auto_offset_reset",
                self.share_auto_offset_reset.clone(),
                "\"latest\" or \"earliest\"".into(),
            );
        }
        Ok(())
    }

    fn validate_consumer_groups(&self) -> Result<(), ConfigError> {
        use crate::limits::{
            MAX_CONSUMER_GROUP_MEMBERS, MAX_CONSUMER_GROUP_SESSION_TIMEOUT_MS, MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS,
        };
        let session = self.group_consumer_session_timeout_ms;
        if !(1..=MAX_CONSUMER_GROUP_SESSION_TIMEOUT_MS).contains(&session) {
            return Err(ConfigError::Invalid {
                key: "group_consumer_session_timeout_ms",
                value: session.to_string(),
                expected: format!("between 1 and {MAX_CONSUMER_GROUP_SESSION_TIMEOUT_MS}"),
            });
        }
        let hb = self.group_consumer_heartbeat_interval_ms;
        if hb < MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS || hb >= session {
            return Err(ConfigError::Invalid {
                key: "group_consumer_heartbeat_interval_ms",
                value: hb.to_string(),
                expected: format!(
                    "at least {MIN_CONSUMER_GROUP_HEARTBEAT_INTERVAL_MS} and below group_consumer_session_timeout_ms ({session})"
                ),
            });
        }
        if !(1..=MAX_CONSUMER_GROUP_MEMBERS).contains(&self.group_consumer_max_size) {
            return Err(ConfigError::Invalid {
                key: "group_consumer_max_size",
                value: self.group_consumer_max_size.to_string(),
                expected: format!("between 1 and {MAX_CONSUMER_GROUP_MEMBERS}"),
            });
        }
        Ok(())
    }

    /// Each shard's read cache with `shards` shards: `read_cache_bytes_per_shard` when set,
    /// else `READ_CACHE_MEMORY_PERCENT` of the host's memory (MemTotal in /proc/meminfo)
    /// divided among the shards, within `MIN_READ_CACHE_BYTES_PER_SHARD` and
    /// `MAX_AUTO_READ_CACHE_BYTES_PER_SHARD`; `DEFAULT_READ_CACHE_BYTES_PER_SHARD` when the
    /// host's memory cannot be read.
    pub fn read_cache_bytes_for(&self, shards: usize) -> usize {
        if let Some(bytes) = self.read_cache_bytes_per_shard {
            return bytes;
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        match mem_total_bytes(&meminfo) {
            Some(total) => auto_read_cache_bytes(total, shards),
            None => crate::limits::DEFAULT_READ_CACHE_BYTES_PER_SHARD,
        }
    }

    /// Reads and parses a TOML file; keys absent from it keep their defaults.
    pub fn from_file(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml_str(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })
    }

    /// Parses TOML text; the error message carries line and column where the parser knows them.
    pub fn from_toml_str(text: &str) -> Result<BrokerConfig, String> {
        toml::from_str(text).map_err(|e| {
            // toml's message: "TOML parse error at line L, column C", a source excerpt, the reason.
            let text = e.to_string();
            let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let source = lines.iter().find_map(|l| {
                let (n, rest) = l.split_once('|')?;
                (!n.trim().is_empty() && n.trim().chars().all(|c| c.is_ascii_digit())).then(|| rest.trim())
            });
            match (lines.first(), lines.last(), source) {
                (Some(first), Some(last), Some(src)) => format!("{first} (`{src}`): {last}"),
                (Some(first), Some(last), None) if lines.len() > 1 => format!("{first}: {last}"),
                _ => text.trim().to_string(),
            }
        })
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            value: self.listen.clone(),
            expected: "an IP:port socket address such as 127.0.0.1:9092".into(),
        })
    }

    /// The topic-config defaults, normalised to topic config names and validated.
    pub fn topic_defaults(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut out = BTreeMap::new();
        for (key, value) in &self.topic_defaults {
            let name = crate::topic_config::DEFS
                .iter()
                .find(|d| d.name == key || d.broker_synonym == key)
                .map(|d| d.name)
                .ok_or_else(|| ConfigError::Invalid {
                    key: "topic_defaults",
                    value: key.clone(),
                    expected: "a Kafka topic config name (retention.ms) or its broker name (log.retention.ms)".into(),
                })?;
            let v = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            };
            crate::topic_config::validate(name, &v).map_err(|why| ConfigError::Invalid {
                key: "topic_defaults",
                value: format!("{key} = {v}"),
                expected: why,
            })?;
            out.insert(name.to_string(), v);
        }
        Ok(out)
    }

    /// The metrics address, parsed (`None` when disabled).
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics_listen.trim().is_empty() {
            return Ok(None);
        }
        self.metrics_listen.parse().map(Some).map_err(|_| ConfigError::Invalid {
            key: "metrics_listen",
            value: self.metrics_listen.clone(),
            expected: "an IP:port socket address such as 127.0.0.1:9644, or \"\" to disable".into(),
        })
    }

    /// The advertised host and port, when set.
    pub fn advertised(&self) -> Result<Option<(String, u16)>, ConfigError> {
        let a = self.advertised_listen.trim();
        if a.is_empty() {
            return Ok(None);
        }
        let bad = || ConfigError::Invalid {
            key: "advertised_listen",
            value: self.advertised_listen.clone(),
            expected: "host:port with a port from 1 to 65535, such as broker1.example.com:9092, or \"\"".into(),
        };
        let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match port.parse::<u16>() {
            Ok(p) if p > 0 && !host.is_empty() => Ok(Some((host.to_string(), p))),
            _ => Err(bad()),
        }
    }

    /// The listeners, validated (`crate::listeners`).
    pub fn listener_specs(&self) -> Result<Vec<crate::listeners::ListenerSpec>, ConfigError> {
        crate::listeners::listener_specs(&crate::listeners::ListenerKeys {
            listen: &self.listen,
            advertised_listen: self.advertised()?,
            listeners: &self.listeners,
            advertised_listeners: &self.advertised_listeners,
            listener_security_protocol_map: &self.listener_security_protocol_map,
            tls: &self.tls,
            sasl: &self.sasl,
        })
    }

    /// The peer listener's address, parsed (`None`: a lone broker).
    pub fn peer_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.peer_listen.trim().is_empty() {
            return Ok(None);
        }
        self.peer_listen.trim().parse().map(Some).map_err(|_| ConfigError::Invalid {
            key: "peer_listen",
            value: self.peer_listen.clone(),
            expected: "an IP:port socket address such as 127.0.0.1:9093, or \"\" for a lone broker".into(),
        })
    }

    /// The cluster members, parsed and checked against `node_id` and `peer_listen`: either no
    /// members (a lone broker, no peer listener) or a list that names this broker, with a peer
    /// listener and a cluster id.
    pub fn voters(&self) -> Result<Vec<Voter>, ConfigError> {
        let invalid = |expected: String| ConfigError::Invalid {
            key: "controller_quorum_voters",
            value: self.controller_quorum_voters.clone(),
            expected,
        };
        let voters = parse_voters(&self.controller_quorum_voters).map_err(invalid)?;
        let peer = self.peer_addr()?;
        if voters.is_empty() {
            if peer.is_some() {
                return Err(invalid("the cluster's members as id@host:port,... when peer_listen is set".into()));
            }
            return Ok(voters);
        }
        if !voters.iter().any(|v| v.id == NodeId(self.node_id)) {
            return Err(invalid(format!("a list that includes this broker's node_id {}", self.node_id)));
        }
        if peer.is_none() {
            return Err(ConfigError::Invalid {
                key: "peer_listen",
                value: self.peer_listen.clone(),
                expected: "the broker-to-broker address (IP:port) when controller_quorum_voters is set".into(),
            });
        }
        if self.cluster_id.is_empty() {
            return Err(ConfigError::Invalid {
                key: "cluster_id",
                value: String::new(),
                expected: "the id every member shares when controller_quorum_voters is set".into(),
            });
        }
        Ok(voters)
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if !(0..=crate::limits::MAX_NODE_ID).contains(&self.node_id) {
            return Err(ConfigError::Invalid {
                key: "node_id",
                value: self.node_id.to_string(),
                expected: format!("between 0 and {}", crate::limits::MAX_NODE_ID),
            });
        }
        if !self.cluster_id.is_empty() {
            check_cluster_id(&self.cluster_id).map_err(|expected| ConfigError::Invalid {
                key: "cluster_id",
                value: self.cluster_id.clone(),
                expected,
            })?;
        }
        self.voters()?;
        let beat = crate::limits::MIN_PEER_HEARTBEAT_INTERVAL_MS..=crate::limits::MAX_PEER_SESSION_TIMEOUT_MS / 2;
        if !beat.contains(&self.peer_heartbeat_interval_ms) {
            return Err(ConfigError::Invalid {
                key: "peer_heartbeat_interval_ms",
                value: self.peer_heartbeat_interval_ms.to_string(),
                expected: format!("between {} and {}", beat.start(), beat.end()),
            });
        }
        let lag = crate::limits::MIN_REPLICA_LAG_TIME_MAX_MS..=crate::limits::MAX_REPLICA_LAG_TIME_MAX_MS;
        if !lag.contains(&self.replica_lag_time_max_ms) {
            return Err(ConfigError::Invalid {
                key: "replica_lag_time_max_ms",
                value: self.replica_lag_time_max_ms.to_string(),
                expected: format!("between {} and {}", lag.start(), lag.end()),
            });
        }
        let check = 1..=crate::limits::MAX_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS;
        if !check.contains(&self.leader_imbalance_check_interval_seconds) {
            return Err(ConfigError::Invalid {
                key: "leader_imbalance_check_interval_seconds",
                value: self.leader_imbalance_check_interval_seconds.to_string(),
                expected: format!("between {} and {}", check.start(), check.end()),
            });
        }
        if self.leader_imbalance_per_broker_percentage > 100 {
            return Err(ConfigError::Invalid {
                key: "leader_imbalance_per_broker_percentage",
                value: self.leader_imbalance_per_broker_percentage.to_string(),
                expected: "between 0 and 100".to_string(),
            });
        }
        let session = self.peer_heartbeat_interval_ms.saturating_mul(2)..=crate::limits::MAX_PEER_SESSION_TIMEOUT_MS;
        if !session.contains(&self.peer_session_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "peer_session_timeout_ms",
                value: self.peer_session_timeout_ms.to_string(),
                expected: format!(
                    "between twice peer_heartbeat_interval_ms ({}) and {}",
                    session.start(),
                    session.end()
                ),
            });
        }
        Ok(())
    }

    /// Checks every field against its allowed range. `available_cores` bounds `cores`.
    pub fn validate(&self, available_cores: usize) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.listener_specs()?;
        self.validate_cluster()?;
        self.metrics_addr()?;
        self.advertised()?;
        self.validate_resources(available_cores)?;
        self.validate_transactions()?;
        self.validate_groups()?;
        self.validate_consumer_groups()?;
        self.validate_share_groups()?;
        self.topic_defaults()?;
        self.validate_connections()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                value: String::new(),
                expected: "a directory path".into(),
            });
        }
        Ok(())
    }

    /// Cores, partitions per topic, open files, response budget and read cache.
    fn validate_resources(&self, available_cores: usize) -> Result<(), ConfigError> {
        if let Some(c) = self.cores {
            if c == 0 || c > available_cores {
                return Err(ConfigError::Invalid {
                    key: "cores",
                    value: c.to_string(),
                    expected: format!("between 1 and {available_cores} (the cores available)"),
                });
            }
        }
        in_range("num_partitions", self.num_partitions, 1..=MAX_PARTITIONS_PER_TOPIC)?;
        in_range("max_open_files_per_shard", self.max_open_files_per_shard, 16..=1_000_000)?;
        if self.max_response_bytes_per_shard < MIN_RESPONSE_BYTES_PER_SHARD {
            return Err(ConfigError::Invalid {
                key: "max_response_bytes_per_shard",
                value: self.max_response_bytes_per_shard.to_string(),
                expected: format!("at least {MIN_RESPONSE_BYTES_PER_SHARD} (one batch of the default maximum size)"),
            });
        }
        if let Some(bytes) =
            self.read_cache_bytes_per_shard.filter(|b| *b < crate::limits::MIN_READ_CACHE_BYTES_PER_SHARD)
        {
            return Err(ConfigError::Invalid {
                key: "read_cache_bytes_per_shard",
                value: bytes.to_string(),
                expected: format!("at least {}", crate::limits::MIN_READ_CACHE_BYTES_PER_SHARD),
            });
        }
        in_range("max_mesh_tasks_per_shard", self.max_mesh_tasks_per_shard, 1..=crate::limits::MAX_MESH_TASKS_PER_SHARD)
    }

    /// The transaction log, transaction timeouts and producer-id expiry.
    fn validate_transactions(&self) -> Result<(), ConfigError> {
        in_range("transaction_state_num_partitions", self.transaction_state_num_partitions, 1..=1000)?;
        in_range("transaction_max_timeout_ms", self.transaction_max_timeout_ms, 1..=i32::MAX as u64)?;
        in_range("transaction_version", self.transaction_version, 1..=crate::limits::MAX_TRANSACTION_VERSION)?;
        in_range(
            "transactional_id_expiration_ms",
            self.transactional_id_expiration_ms,
            1..=crate::limits::MAX_TRANSACTIONAL_ID_EXPIRATION_MS,
        )?;
        in_range(
            "producer_id_expiration_ms",
            self.producer_id_expiration_ms,
            1..=crate::limits::MAX_PRODUCER_ID_EXPIRATION_MS,
        )
    }

    /// Classic groups and the offsets topic.
    fn validate_groups(&self) -> Result<(), ConfigError> {
        in_range("offsets_topic_num_partitions", self.offsets_topic_num_partitions, 1..=1000)?;
        in_range("offsets_topic_replication_factor", self.offsets_topic_replication_factor, 1..=i16::MAX)?;
        in_range("transaction_state_replication_factor", self.transaction_state_replication_factor, 1..=i16::MAX)?;
        in_range("default_replication_factor", self.default_replication_factor, 1..=i16::MAX)?;
        if self.group_min_session_timeout_ms < 1
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            return Err(ConfigError::Invalid {
                key: "group_min_session_timeout_ms",
                value: self.group_min_session_timeout_ms.to_string(),
                expected: format!("between 1 and group_max_session_timeout_ms ({})", self.group_max_session_timeout_ms),
            });
        }
        if self.group_initial_rebalance_delay_ms > 300_000 {
            return Err(ConfigError::Invalid {
                key: "group_initial_rebalance_delay_ms",
                value: self.group_initial_rebalance_delay_ms.to_string(),
                expected: "at most 300000".into(),
            });
        }
        in_range(
            "offsets_retention_minutes",
            self.offsets_retention_minutes,
            crate::limits::MIN_OFFSETS_RETENTION_MINUTES..=crate::limits::MAX_OFFSETS_RETENTION_MINUTES,
        )
    }

    /// Whether ACLs are enforced (an authorizer is configured).
    pub fn authorizer_enabled(&self) -> bool {
        !self.authorizer_class_name.trim().is_empty()
    }

    /// The authorizer's class and the super users' principal form.
    fn validate_authorizer(&self) -> Result<(), ConfigError> {
        let class = self.authorizer_class_name.trim();
        if !class.is_empty() && class != STANDARD_AUTHORIZER && class != ACL_AUTHORIZER {
            return Err(ConfigError::Invalid {
                key: "authorizer_class_name",
                value: class.to_string(),
                expected: format!("empty or {STANDARD_AUTHORIZER}"),
            });
        }
        for u in &self.super_users {
            if !u.split_once(':').is_some_and(|(t, n)| !t.is_empty() && !n.is_empty()) {
                return Err(ConfigError::Invalid {
                    key: "super_users",
                    value: u.clone(),
                    expected: "principals of the form User:name".into(),
                });
            }
        }
        Ok(())
    }

    /// Connection timeouts: idle, listen retry, request bodies, re-authentication.
    fn validate_connections(&self) -> Result<(), ConfigError> {
        self.validate_authorizer()?;
        if self.connections_max_idle_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "connections_max_idle_ms",
                value: "0".into(),
                expected: "a positive number of milliseconds".into(),
            });
        }
        in_range("connections_max_reauth_ms", self.connections_max_reauth_ms, 0..=crate::limits::MAX_REAUTH_MS)?;
        in_range("quota_window_num", self.quota_window_num, 1..=crate::limits::MAX_QUOTA_WINDOW_NUM)?;
        let window = 1..=crate::limits::MAX_QUOTA_WINDOW_SIZE_SECONDS;
        in_range("quota_window_size_seconds", self.quota_window_size_seconds, window)?;
        in_range("listen_retry_ms", self.listen_retry_ms, 0..=crate::limits::MAX_LISTEN_RETRY_MS)?;
        let body = crate::limits::MIN_REQUEST_BODY_TIMEOUT_MS..=crate::limits::MAX_REQUEST_BODY_TIMEOUT_MS;
        if !body.contains(&self.request_body_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "request_body_timeout_ms",
                value: self.request_body_timeout_ms.to_string(),
                expected: format!("between {} and {} milliseconds", body.start(), body.end()),
            });
        }
        Ok(())
    }
}

/// `value` of config `key` must lie in `range` ("between A and B" otherwise).
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key,
        value: value.to_string(),
        expected: format!("between {} and {}", range.start(), range.end()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BrokerConfig::default().validate(2).unwrap();
    }

    #[test]
    fn offsets_retention_minutes_is_bounded() {
        for bad in [0, crate::limits::MAX_OFFSETS_RETENTION_MINUTES + 1, u64::MAX] {
            let c = BrokerConfig { offsets_retention_minutes: bad, ..BrokerConfig::default() };
            assert!(c.validate(2).is_err(), "{bad} accepted");
        }
        let c = BrokerConfig {
            offsets_retention_minutes: crate::limits::MAX_OFFSETS_RETENTION_MINUTES,
            ..BrokerConfig::default()
        };
        c.validate(2).unwrap();
    }

    #[test]
    fn consumer_group_settings_are_checked() {
        let ok = BrokerConfig {
            group_consumer_session_timeout_ms: 6000,
            group_consumer_heartbeat_interval_ms: 500,
            ..BrokerConfig::default()
        };
        ok.validate(2).unwrap();
        let bad = [
            BrokerConfig { group_consumer_session_timeout_ms: 0, ..ok.clone() },
            BrokerConfig { group_consumer_heartbeat_interval_ms: 6000, ..ok.clone() },
            BrokerConfig { group_consumer_heartbeat_interval_ms: 99, ..ok.clone() },
            BrokerConfig { group_consumer_max_size: 0, ..ok.clone() },
            BrokerConfig { group_consumer_max_size: crate::limits::MAX_CONSUMER_GROUP_MEMBERS + 1, ..ok.clone() },
        ];
        for c in bad {
            assert!(c.validate(2).unwrap_err().to_string().contains("group_consumer_"), "{c:?}");
        }
    }

    #[test]
    fn advertised_listen_is_host_and_port() {
        let c = BrokerConfig { advertised_listen: "kafka.example.com:19092".into(), ..BrokerConfig::default() };
        assert_eq!(c.advertised().unwrap(), Some(("kafka.example.com".to_string(), 19092)));
        for bad in ["nohost", ":9092", "h:0", "h:99999"] {
            let c = BrokerConfig { advertised_listen: bad.into(), ..BrokerConfig::default() };
            assert!(c.validate(2).unwrap_err().to_string().contains("advertised_listen"), "{bad}");
        }
    }

    #[test]
    fn cluster_settings_are_checked_together() {
        let id = "MkU3OEVBNTcwNTJENDM2Qk".to_string();
        let member = BrokerConfig {
            node_id: 2,
            peer_listen: "127.0.0.1:9093".into(),
            controller_quorum_voters: "1@127.0.0.1:9193,2@127.0.0.1:9093".into(),
            cluster_id: id.clone(),
            ..BrokerConfig::default()
        };
        member.validate(2).unwrap();
        assert_eq!(member.voters().unwrap().len(), 2);
        let cases = [
            (BrokerConfig { node_id: 3, ..member.clone() }, "node_id 3"),
            (BrokerConfig { node_id: -1, ..member.clone() }, "`node_id`"),
            (BrokerConfig { peer_listen: String::new(), ..member.clone() }, "`peer_listen`"),
            (BrokerConfig { peer_listen: "nowhere".into(), ..member.clone() }, "`peer_listen`"),
            (BrokerConfig { cluster_id: String::new(), ..member.clone() }, "`cluster_id`"),
            (BrokerConfig { cluster_id: "bad id".into(), ..member.clone() }, "`cluster_id`"),
            (BrokerConfig { controller_quorum_voters: "2@h".into(), ..member.clone() }, "no ':port'"),
            (BrokerConfig { controller_quorum_voters: String::new(), ..member.clone() }, "when peer_listen is set"),
            (BrokerConfig { peer_heartbeat_interval_ms: 1, ..member.clone() }, "peer_heartbeat_interval_ms"),
            (BrokerConfig { peer_session_timeout_ms: 150, ..member.clone() }, "peer_session_timeout_ms"),
            (BrokerConfig { replica_lag_time_max_ms: 1, ..member.clone() }, "replica_lag_time_max_ms"),
            (
                BrokerConfig { leader_imbalance_check_interval_seconds: 0, ..member.clone() },
                "leader_imbalance_check_interval_seconds",
            ),
            (
                BrokerConfig { leader_imbalance_per_broker_percentage: 101, ..member.clone() },
                "leader_imbalance_per_broker_percentage",
            ),
        ];
        for (c, want) in cases {
            let e = c.validate(2).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // A lone broker needs none of it; a cluster id alone is allowed.
        BrokerConfig { cluster_id: id, ..BrokerConfig::default() }.validate(2).unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let e = BrokerConfig::from_toml_str("listen = \"127.0.0.1:1\"\nbogus = 3\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn wrong_type_is_refused_naming_the_key() {
        let e = BrokerConfig::from_toml_str("listen = \"127.0.0.1:1\"\ncores = \"two\"").unwrap_err();
        assert!(e.contains("cores") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn topic_defaults_accept_both_names_and_validate() {
        let c = BrokerConfig::from_toml_str(
            "[topic_defaults]\n\"log.retention.ms\" = 1000\n\"segment.bytes\" = \"2048\"\n",
        )
        .unwrap();
        let d = c.topic_defaults().unwrap();
        assert_eq!(d.get("retention.ms").map(String::as_str), Some("1000"));
        assert_eq!(d.get("segment.bytes").map(String::as_str), Some("2048"));
        let bad = BrokerConfig::from_toml_str("[topic_defaults]\n\"retention.ms\" = \"soon\"\n").unwrap();
        let e = bad.validate(2).unwrap_err().to_string();
        assert!(e.contains("retention.ms") && e.contains("soon"), "{e}");
        let unknown = BrokerConfig::from_toml_str("[topic_defaults]\n\"nope\" = 1\n").unwrap();
        assert!(unknown.validate(2).unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn out_of_range_names_the_key() {
        let c = BrokerConfig { cores: Some(64), ..Default::default() };
        let e = c.validate(2).unwrap_err().to_string();
        assert!(e.contains("`cores`"), "{e}");
        let c = BrokerConfig { num_partitions: 0, ..Default::default() };
        assert!(c.validate(2).unwrap_err().to_string().contains("num_partitions"));
        let c = BrokerConfig { max_response_bytes_per_shard: 1000, ..Default::default() };
        assert!(c.validate(2).unwrap_err().to_string().contains("max_response_bytes_per_shard"));
        let c = BrokerConfig { read_cache_bytes_per_shard: Some(1 << 20), ..Default::default() };
        assert!(c.validate(2).unwrap_err().to_string().contains("read_cache_bytes_per_shard"));
    }

    #[test]
    fn the_read_cache_is_sized_from_the_host_memory_unless_set() {
        let meminfo = "MemTotal:       24683792 kB\nMemFree:         1000 kB\n";
        let total = mem_total_bytes(meminfo).unwrap();
        assert_eq!(total, 24_683_792 * 1024);
        // A quarter of 24 GiB over 2 shards: about 3 GiB each.
        let each = auto_read_cache_bytes(total, 2);
        assert_eq!(each as u64, total / 100 * 25 / 2);
        // Bounded below and above.
        assert_eq!(auto_read_cache_bytes(1 << 30, 64), crate::limits::MIN_READ_CACHE_BYTES_PER_SHARD);
        assert_eq!(auto_read_cache_bytes(u64::MAX / 2, 1) as u64, crate::limits::MAX_AUTO_READ_CACHE_BYTES_PER_SHARD);
        assert_eq!(mem_total_bytes("MemFree: 12 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: x kB\n"), None);
        // A setting wins; the default follows the host.
        let set = BrokerConfig { read_cache_bytes_per_shard: Some(200 << 20), ..Default::default() };
        assert_eq!(set.read_cache_bytes_for(2), 200 << 20);
        assert!(BrokerConfig::default().read_cache_bytes_for(2) >= crate::limits::MIN_READ_CACHE_BYTES_PER_SHARD);
        let parsed = BrokerConfig::from_toml_str("read_cache_bytes_per_shard = 268435456\n").unwrap();
        assert_eq!(parsed.read_cache_bytes_per_shard, Some(268_435_456));
    }
}
