//! Cluster metadata: topics, topic ids, partition counts, configs, replicas, leaders and
//! node-local placement.
//!
//! Contract: shard 0 is the only writer (see [`crate::admin`]); it persists a new snapshot
//! (write to a temporary file, fsync, rename, fsync the directory) before publishing it, and
//! every shard holds its own copy, replaced whole on publish. The file is rkyv-encoded behind
//! a header carrying a magic, a format version and a CRC-32 (crc32fast) of the payload, so a
//! damaged file is refused instead of misread; a version-1 file (before replication) is read
//! and converted. Changes are made by applying metadata log records ([`records`], [`apply`]):
//! the cluster-wide part (topics, ids, numbers, replicas, leaders, epochs, ISR, configs,
//! producer-id blocks) is the same on every broker that applied the same records; `shards`
//! (which local shard owns each partition) is node-local, [`NOT_HOSTED`] for a partition of
//! which this broker holds no replica. A topic without a [`TopicReplication`] entry (written
//! by a lone broker before replication) is this broker's alone: one replica, this broker,
//! leader at epoch 0.

pub mod acl;
pub mod apply;
pub mod assign;
pub mod quota;
pub mod records;

use rkyv::rancor;
use sluice_core::{limits::MAX_TOPIC_NAME_LEN, PartitionId, ShardId};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `TopicMeta::shards` of a partition this broker holds no replica of.
pub const NOT_HOSTED: u16 = u16::MAX;

/// One topic.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Kafka topic id (a UUID).
    pub id: [u8; 16],
    /// Owner shard of each partition on this broker, indexed by partition id ([`NOT_HOSTED`]
    /// when this broker holds no replica of it). Its length is the partition count.
    pub shards: Vec<u16>,
    /// Topic-level configs explicitly set (Kafka names, e.g. `retention.ms`).
    pub configs: BTreeMap<String, String>,
}

/// One partition's replicas and leadership, as the metadata log says.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Node ids, the preferred leader first.
    pub replicas: Vec<i32>,
    /// -1: no leader known.
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    /// A reassignment in progress: replicas joining (Kafka's `addingReplicas`)...
    pub adding: Vec<i32>,
    /// ...and replicas leaving (`removingReplicas`); both empty when none is.
    pub removing: Vec<i32>,
    /// The voters the partition's Raft group was created with (every replica bootstraps its
    /// group with them), recorded when its replicas first change; empty: `replicas` still are.
    pub origin: Vec<i32>,
}

impl PartitionState {
    /// A new partition: its preferred leader leads at epoch 0, every replica in sync.
    pub fn new(replicas: Vec<i32>) -> PartitionState {
        let leader = *replicas.first().expect("a partition has at least one replica");
        PartitionState {
            isr: replicas.clone(),
            replicas,
            leader,
            leader_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
            origin: Vec::new(),
        }
    }

    /// Whether a reassignment is in progress.
    pub fn moving(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas a reassignment in progress moves to (the replicas without those leaving,
    /// in order); the replicas when none is.
    pub fn target(&self) -> Vec<i32> {
        self.replicas.iter().copied().filter(|n| !self.removing.contains(n)).collect()
    }

    /// Whether the partition is a Raft group in a cluster: it has several replicas, or its
    /// replicas changed once (a reassignment made a single-replica partition a Raft group, or
    /// moved a replicated one to one replica: it stays a one-voter group). A partition created
    /// with one replica and never reassigned keeps the direct path.
    pub fn raft_backed(&self) -> bool {
        self.replicas.len() >= 2 || !self.origin.is_empty()
    }

    /// The voters a new replica of the partition's Raft group starts from.
    pub fn raft_origin(&self) -> &[i32] {
        if self.origin.is_empty() {
            &self.replicas
        } else {
            &self.origin
        }
    }
}

/// A version-3 partition state (before reassignments), read to be converted.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
struct PartitionStateV3 {
    replicas: Vec<i32>,
    leader: i32,
    leader_epoch: i32,
    isr: Vec<i32>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
struct TopicReplicationV3 {
    number: u32,
    partitions: Vec<PartitionStateV3>,
}

impl TopicReplicationV3 {
    fn convert(self) -> TopicReplication {
        let partitions = self
            .partitions
            .into_iter()
            .map(|p| PartitionState {
                replicas: p.replicas,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                isr: p.isr,
                adding: Vec::new(),
                removing: Vec::new(),
                origin: Vec::new(),
            })
            .collect();
        TopicReplication { number: self.number, partitions }
    }
}

/// A version-3 snapshot (before reassignments and client quotas), read to be converted.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
struct SnapshotV3 {
    version: u64,
    cluster_id: String,
    topics: BTreeMap<String, TopicMeta>,
    next_producer_id_block: i64,
    replication: BTreeMap<String, TopicReplicationV3>,
    next_topic_number: u32,
    applied_offset: i64,
    acls: std::collections::BTreeSet<acl::Acl>,
}

/// The cluster-wide part of a topic that a lone broker's snapshot may lack.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicReplication {
    /// Cluster-wide topic number (the topic part of its partitions' Raft group ids).
    pub number: u32,
    /// Indexed by partition id; as long as the topic's `shards`.
    pub partitions: Vec<PartitionState>,
}

/// Everything the metadata writer decides; every shard holds a copy.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataSnapshot {
    /// Increases with every published change.
    pub version: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this were handed out (in blocks) by an earlier run.
    pub next_producer_id_block: i64,
    /// Replicas and leaders of each topic, by name (see the module docs for topics without).
    pub replication: BTreeMap<String, TopicReplication>,
    /// The number the next created topic gets (numbers start at 1; 0 is the metadata log).
    pub next_topic_number: u32,
    /// Offset of the last metadata log record applied (-1: none; a lone broker's changes are
    /// applied without a log and leave it as it is).
    pub applied_offset: i64,
    /// The ACLs (cluster metadata, like topics: changed by metadata records).
    pub acls: std::collections::BTreeSet<acl::Acl>,
    /// Client quotas by entity (cluster metadata: changed by `QuotaChanged` records).
    pub quotas: quota::Quotas,
    /// Dynamic group configs by group id (IncrementalAlterConfigs on a GROUP; changed by
    /// `GroupConfigChanged` records); a group without any has no entry.
    pub group_configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// A version-4 snapshot (before group configs), read to be converted.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
struct SnapshotV4 {
    version: u64,
    cluster_id: String,
    topics: BTreeMap<String, TopicMeta>,
    next_producer_id_block: i64,
    replication: BTreeMap<String, TopicReplication>,
    next_topic_number: u32,
    applied_offset: i64,
    acls: std::collections::BTreeSet<acl::Acl>,
    quotas: quota::Quotas,
}

/// A version-2 snapshot (before ACLs), read to be converted.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
struct SnapshotV2 {
    version: u64,
    cluster_id: String,
    topics: BTreeMap<String, TopicMeta>,
    next_producer_id_block: i64,
    replication: BTreeMap<String, TopicReplicationV3>,
    next_topic_number: u32,
    applied_offset: i64,
}

/// A version-1 snapshot (before replication), read to be converted.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
struct SnapshotV1 {
    version: u64,
    cluster_id: String,
    topics: BTreeMap<String, TopicMeta>,
    next_producer_id_block: i64,
}

const MAGIC: &[u8; 4] = b"SLMD";
const FILE_VERSION: u32 = 5;
const HEADER: usize = 4 + 4 + 4 + 8;

/// Why metadata could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("metadata file {path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
}

impl MetadataSnapshot {
    /// Owner shard of a partition here, if the topic and partition exist and this broker
    /// holds a replica of it.
    pub fn owner(&self, topic: &str, partition: PartitionId) -> Option<ShardId> {
        let t = self.topics.get(topic)?;
        usize::try_from(partition.0)
            .ok()
            .and_then(|p| t.shards.get(p))
            .filter(|s| **s != NOT_HOSTED)
            .map(|s| ShardId(*s))
    }

    /// A partition's replicas and leadership (`me`: this broker's node id, the only replica of
    /// a topic without replication state). None when the topic or partition does not exist.
    pub fn partition(&self, topic: &str, partition: PartitionId, me: i32) -> Option<PartitionState> {
        let t = self.topics.get(topic)?;
        let p = usize::try_from(partition.0).ok().filter(|p| *p < t.shards.len())?;
        match self.replication.get(topic) {
            Some(r) => r.partitions.get(p).cloned(),
            None => Some(PartitionState::new(vec![me])),
        }
    }

    /// The topic number of `topic`, if it has one (topics of a lone broker written before
    /// replication have none).
    pub fn topic_number(&self, topic: &str) -> Option<u32> {
        self.replication.get(topic).map(|r| r.number)
    }

    /// Name of the topic with this id.
    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&str> {
        self.topics.iter().find(|(_, t)| &t.id == id).map(|(n, _)| n.as_str())
    }

    /// Partitions owned by each of `n_shards` shards.
    pub fn partitions_per_shard(&self, n_shards: usize) -> Vec<usize> {
        let mut v = vec![0usize; n_shards];
        for t in self.topics.values() {
            for s in &t.shards {
                if let Some(c) = v.get_mut(*s as usize) {
                    *c += 1;
                }
            }
        }
        v
    }

    /// Moves partitions recorded on shards that no longer exist (the broker was restarted with
    /// fewer cores) onto existing shards. Returns how many moved.
    pub fn reassign_for(&mut self, n_shards: usize) -> usize {
        let mut load = self.partitions_per_shard(n_shards);
        let mut moved = 0;
        for t in self.topics.values_mut() {
            for s in t.shards.iter_mut() {
                if *s != NOT_HOSTED && *s as usize >= n_shards {
                    let to = crate::placement::place(&load, 1)[0];
                    load[to.index()] += 1;
                    *s = to.0;
                    moved += 1;
                }
            }
        }
        if moved > 0 {
            self.version += 1;
        }
        moved
    }

    fn file(data_dir: &Path) -> PathBuf {
        data_dir.join("meta").join("metadata.bin")
    }

    /// Loads the snapshot of a data directory, or creates a new one with a fresh cluster id.
    pub fn load_or_init(data_dir: &Path) -> Result<MetadataSnapshot, MetadataError> {
        let path = Self::file(data_dir);
        let mut bytes = Vec::new();
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(|source| MetadataError::Io { path: path.clone(), source })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let snap = MetadataSnapshot {
                    version: 0,
                    cluster_id: new_cluster_id(),
                    next_topic_number: 1,
                    applied_offset: -1,
                    ..Default::default()
                };
                snap.save(data_dir)?;
                return Ok(snap);
            }
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        Self::decode(&bytes).map_err(|why| MetadataError::Damaged { path, why })
    }

    fn decode(bytes: &[u8]) -> Result<MetadataSnapshot, String> {
        if bytes.len() < HEADER || &bytes[0..4] != MAGIC {
            return Err("bad magic".into());
        }
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4"));
        if !(1..=FILE_VERSION).contains(&version) {
            return Err(format!("unknown metadata format {version}, expected {FILE_VERSION}"));
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4"));
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8"));
        let end = usize::try_from(len).ok().and_then(|l| HEADER.checked_add(l)).ok_or("truncated")?;
        let payload = bytes.get(HEADER..end).ok_or("truncated")?;
        if crc32fast::hash(payload) != crc {
            return Err("checksum mismatch".into());
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        if version == 1 {
            let v1 = rkyv::from_bytes::<SnapshotV1, rancor::Error>(&aligned).map_err(|e| e.to_string())?;
            return Ok(MetadataSnapshot {
                version: v1.version,
                cluster_id: v1.cluster_id,
                topics: v1.topics,
                next_producer_id_block: v1.next_producer_id_block,
                replication: BTreeMap::new(),
                next_topic_number: 1,
                applied_offset: -1,
                acls: Default::default(),
                quotas: Default::default(),
                group_configs: Default::default(),
            });
        }
        let v3 = match version {
            2 => {
                let v2 = rkyv::from_bytes::<SnapshotV2, rancor::Error>(&aligned).map_err(|e| e.to_string())?;
                Some(SnapshotV3 {
                    version: v2.version,
                    cluster_id: v2.cluster_id,
                    topics: v2.topics,
                    next_producer_id_block: v2.next_producer_id_block,
                    replication: v2.replication,
                    next_topic_number: v2.next_topic_number,
                    applied_offset: v2.applied_offset,
                    acls: Default::default(),
                })
            }
            3 => Some(rkyv::from_bytes::<SnapshotV3, rancor::Error>(&aligned).map_err(|e| e.to_string())?),
            _ => None,
        };
        if let Some(v3) = v3 {
            // Versions 2 and 3 differ only by the ACLs; both convert here.
            let snap = MetadataSnapshot {
                version: v3.version,
                cluster_id: v3.cluster_id,
                topics: v3.topics,
                next_producer_id_block: v3.next_producer_id_block,
                replication: v3.replication.into_iter().map(|(n, r)| (n, r.convert())).collect(),
                next_topic_number: v3.next_topic_number,
                applied_offset: v3.applied_offset,
                acls: v3.acls,
                quotas: Default::default(),
                group_configs: Default::default(),
            };
            snap.check()?;
            return Ok(snap);
        }
        if version == 4 {
            let v4 = rkyv::from_bytes::<SnapshotV4, rancor::Error>(&aligned).map_err(|e| e.to_string())?;
            let snap = MetadataSnapshot {
                version: v4.version,
                cluster_id: v4.cluster_id,
                topics: v4.topics,
                next_producer_id_block: v4.next_producer_id_block,
                replication: v4.replication,
                next_topic_number: v4.next_topic_number,
                applied_offset: v4.applied_offset,
                acls: v4.acls,
                quotas: v4.quotas,
                group_configs: BTreeMap::new(),
            };
            snap.check()?;
            return Ok(snap);
        }
        let snap = rkyv::from_bytes::<MetadataSnapshot, rancor::Error>(&aligned).map_err(|e| e.to_string())?;
        snap.check()?;
        Ok(snap)
    }

    /// The invariants a loaded snapshot must keep: every replication entry names a topic and
    /// lists as many partitions as it has, and topic numbers are below `next_topic_number`.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, r) in &self.replication {
            let t = self.topics.get(name).ok_or_else(|| format!("replicas of unknown topic {name}"))?;
            if r.partitions.len() != t.shards.len() {
                return Err(format!(
                    "topic {name}: {} partitions but {} replica lists",
                    t.shards.len(),
                    r.partitions.len()
                ));
            }
            if r.number == 0 || r.number >= self.next_topic_number {
                return Err(format!("topic {name}: number {} not below {}", r.number, self.next_topic_number));
            }
        }
        Ok(())
    }

    /// Writes the snapshot durably (temporary file, fsync, rename, fsync directory).
    pub fn save(&self, data_dir: &Path) -> Result<(), MetadataError> {
        let path = Self::file(data_dir);
        let dir = path.parent().expect("metadata file has a parent");
        let io = |source| MetadataError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let payload = rkyv::to_bytes::<rancor::Error>(self)
            .map_err(|e| MetadataError::Damaged { path: path.clone(), why: format!("cannot encode: {e}") })?;
        let out = framed(FILE_VERSION, &payload);
        let tmp = dir.join("metadata.bin.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&out).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

/// A file's bytes: header (magic, format version, CRC-32 and length of the payload), payload.
fn framed(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Kafka's rules for topic names.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is illegal"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!("topic name is longer than {MAX_TOPIC_NAME_LEN} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-')) {
        return Err(format!(
            "topic name {name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// 16 random bytes from the kernel (getrandom(2): no file, and it does not block once the
/// kernel's pool is initialised, which it is long before a broker serves).
pub fn random_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    // SAFETY: the kernel writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if usize::try_from(n).ok() != Some(b.len()) {
        // Fall back to time and address entropy; ids only need to be unique, not secret.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        b = (t ^ (&b as *const _ as u128)).to_le_bytes();
    }
    b
}

/// A random version-4 UUID for a new topic.
pub fn new_topic_id() -> [u8; 16] {
    let mut b = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

/// A Kafka-style cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = new_topic_id();
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for byte in b {
        bits = (bits << 8) | byte as u32;
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_damage() {
        let d = tempfile::tempdir().unwrap();
        let mut s = MetadataSnapshot::load_or_init(d.path()).unwrap();
        assert_eq!(s.cluster_id.len(), 22);
        s.topics.insert(
            "orders".into(),
            TopicMeta {
                id: new_topic_id(),
                shards: vec![0, 1, 0],
                configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
            },
        );
        s.version = 3;
        s.acls.insert(acl::Acl {
            resource_type: acl::resource::TOPIC,
            name: "orders".into(),
            pattern_type: acl::pattern::LITERAL,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: acl::op::READ,
            permission: acl::permission::ALLOW,
        });
        s.quotas.insert(
            quota::QuotaEntity { user: Some(quota::EntityName::Named("alice".into())), client_id: None },
            BTreeMap::from([(quota::PRODUCER_BYTE_RATE.to_string(), quota::QuotaValue::new(1024.0))]),
        );
        s.save(d.path()).unwrap();
        let back = MetadataSnapshot::load_or_init(d.path()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.owner("orders", PartitionId(1)), Some(ShardId(1)));
        assert_eq!(back.owner("orders", PartitionId(3)), None);
        let f = d.path().join("meta/metadata.bin");
        let mut bytes = std::fs::read(&f).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 1;
        std::fs::write(&f, bytes).unwrap();
        assert!(MetadataSnapshot::load_or_init(d.path()).is_err());
    }

    #[test]
    fn a_version_1_file_is_read_as_a_lone_brokers_topics() {
        let d = tempfile::tempdir().unwrap();
        let topic = TopicMeta { id: [3; 16], shards: vec![1, 0], configs: BTreeMap::new() };
        let v1 = SnapshotV1 {
            version: 9,
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            topics: BTreeMap::from([("old".to_string(), topic.clone())]),
            next_producer_id_block: 2000,
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v1).unwrap();
        std::fs::create_dir_all(d.path().join("meta")).unwrap();
        std::fs::write(d.path().join("meta/metadata.bin"), framed(1, &payload)).unwrap();
        let s = MetadataSnapshot::load_or_init(d.path()).unwrap();
        assert_eq!((s.version, s.next_producer_id_block, s.topics["old"].clone()), (9, 2000, topic));
        assert!(s.replication.is_empty());
        let p = s.partition("old", PartitionId(1), 4).unwrap();
        assert_eq!((p.replicas, p.leader, p.leader_epoch, p.isr), (vec![4], 4, 0, vec![4]));
        assert_eq!(s.partition("old", PartitionId(2), 4), None);
        // Saved again, it is a current-version file that reads back the same.
        s.save(d.path()).unwrap();
        assert_eq!(MetadataSnapshot::load_or_init(d.path()).unwrap(), s);
    }

    #[test]
    fn a_version_3_file_is_read_without_reassignments() {
        let d = tempfile::tempdir().unwrap();
        let topic = TopicMeta { id: [3; 16], shards: vec![0], configs: BTreeMap::new() };
        let p = PartitionStateV3 { replicas: vec![1, 2], leader: 2, leader_epoch: 5, isr: vec![2] };
        let v3 = SnapshotV3 {
            version: 4,
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            topics: BTreeMap::from([("t".to_string(), topic)]),
            replication: BTreeMap::from([("t".to_string(), TopicReplicationV3 { number: 1, partitions: vec![p] })]),
            next_topic_number: 2,
            applied_offset: 7,
            ..Default::default()
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v3).unwrap();
        std::fs::create_dir_all(d.path().join("meta")).unwrap();
        std::fs::write(d.path().join("meta/metadata.bin"), framed(3, &payload)).unwrap();
        let s = MetadataSnapshot::load_or_init(d.path()).unwrap();
        let p = s.partition("t", PartitionId(0), 9).unwrap();
        assert_eq!((p.replicas.clone(), p.leader, p.leader_epoch, p.isr.clone()), (vec![1, 2], 2, 5, vec![2]));
        assert!(!p.moving() && p.raft_origin() == [1, 2]);
    }

    #[test]
    fn a_version_2_file_is_read_without_acls() {
        let d = tempfile::tempdir().unwrap();
        let topic = TopicMeta { id: [3; 16], shards: vec![0], configs: BTreeMap::new() };
        let v2 = SnapshotV2 {
            version: 4,
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            topics: BTreeMap::from([("t".to_string(), topic.clone())]),
            next_producer_id_block: 1000,
            replication: BTreeMap::new(),
            next_topic_number: 2,
            applied_offset: 7,
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v2).unwrap();
        std::fs::create_dir_all(d.path().join("meta")).unwrap();
        std::fs::write(d.path().join("meta/metadata.bin"), framed(2, &payload)).unwrap();
        let s = MetadataSnapshot::load_or_init(d.path()).unwrap();
        assert_eq!((s.version, s.applied_offset, s.next_topic_number, s.topics["t"].clone()), (4, 7, 2, topic));
        assert!(s.acls.is_empty());
    }

    #[test]
    fn a_version_3_file_is_read_without_quotas() {
        let d = tempfile::tempdir().unwrap();
        let v3 = SnapshotV3 {
            version: 5,
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            next_topic_number: 1,
            applied_offset: -1,
            ..Default::default()
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v3).unwrap();
        std::fs::create_dir_all(d.path().join("meta")).unwrap();
        std::fs::write(d.path().join("meta/metadata.bin"), framed(3, &payload)).unwrap();
        let s = MetadataSnapshot::load_or_init(d.path()).unwrap();
        assert_eq!(s.version, 5);
        assert!(s.quotas.is_empty());
    }

    #[test]
    fn a_version_4_file_is_read_without_group_configs() {
        let d = tempfile::tempdir().unwrap();
        let mut quotas = quota::Quotas::default();
        let entity = quota::QuotaEntity { user: Some(quota::EntityName::Default), client_id: None };
        quotas.entry(entity.clone()).or_default().insert("producer_byte_rate".into(), quota::QuotaValue::new(5.0));
        let v4 = SnapshotV4 {
            version: 6,
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            next_topic_number: 1,
            applied_offset: -1,
            quotas,
            ..Default::default()
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v4).unwrap();
        std::fs::create_dir_all(d.path().join("meta")).unwrap();
        std::fs::write(d.path().join("meta/metadata.bin"), framed(4, &payload)).unwrap();
        let mut s = MetadataSnapshot::load_or_init(d.path()).unwrap();
        assert_eq!(s.version, 6);
        assert_eq!(s.quotas[&entity]["producer_byte_rate"].get(), 5.0);
        assert!(s.group_configs.is_empty());
        // Group configs survive a save and load.
        s.group_configs.insert("g".into(), [("share.auto.offset.reset".to_string(), "earliest".to_string())].into());
        s.save(d.path()).unwrap();
        assert_eq!(MetadataSnapshot::load_or_init(d.path()).unwrap(), s);
    }

    #[test]
    fn reassign_moves_only_missing_shards() {
        let mut s = MetadataSnapshot::default();
        s.topics.insert("t".into(), TopicMeta { id: [1; 16], shards: vec![0, 1, 2, 3], configs: BTreeMap::new() });
        assert_eq!(s.reassign_for(2), 2);
        assert!(s.topics["t"].shards.iter().all(|s| *s < 2));
        assert_eq!(s.partitions_per_shard(2), vec![2, 2]);
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("bad name").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
