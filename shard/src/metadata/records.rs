//! Metadata log records: what the controller decides, as typed, versioned records carried in
//! Kafka record batches (one Raft entry of group 0 = one batch).
//!
//! Contract: every record is one Kafka record whose value is `frame version (u8) | record type
//! (u8) | record version (u8) | body`; integers are big-endian, strings and lists carry a
//! length or count checked against the bytes left and against `limits.rs` before anything is
//! allocated, node ids are checked to `0..=MAX_NODE_ID`, a replica list is non-empty with
//! distinct ids, and a record must be consumed exactly (trailing bytes are an error). An
//! unknown frame version, record type or record version is refused, never skipped: a broker
//! must not apply part of a log it does not understand. [`encode`] and [`decode`] are inverse
//! for every valid record (property-tested), and [`to_batches`] packs records into batches of
//! at most `MAX_BATCH_BYTES`, splitting a large topic's partitions over several records
//! (`METADATA_PARTITIONS_PER_RECORD`). Pure functions, no I/O.
//!
//! The records follow KRaft's (`TopicRecord` + `PartitionRecord`s, `RemoveTopicRecord`,
//! `ConfigRecord`, `PartitionChangeRecord`, `ProducerIdsRecord`, the ACL records,
//! `ClientQuotaRecord`, `ConfigRecord` of a GROUP as `GroupConfigChanged`) with two differences: a
//! created topic carries its cluster-wide number (the Raft group id's topic part), and a
//! partition change carries the leader epoch explicitly, since with Raft per partition the
//! epoch is the partition group's term, decided by that group and only reported here.

use sluice_core::batch::{self, BatchError, Record};
use sluice_core::limits::{
    MAX_BATCH_BYTES, MAX_CLUSTER_MEMBERS, MAX_NODE_ID, MAX_PARTITIONS_PER_TOPIC, MAX_TOPIC_NAME_LEN,
    METADATA_PARTITIONS_PER_RECORD, METADATA_RECORD_MAX_CONFIGS, METADATA_RECORD_MAX_STRING_BYTES,
};
use std::collections::BTreeMap;

/// The framing of every record value.
pub const FRAME_VERSION: u8 = 1;

/// Node ids as the metadata log records them (Kafka's `int32` broker ids).
pub type Node = i32;

/// A topic was created with these partitions (their replicas, the first being the preferred
/// leader; each partition starts with that leader, epoch 0 and every replica in sync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCreated {
    pub name: String,
    pub id: [u8; 16],
    /// Cluster-wide topic number, never reused (Raft group ids of its partitions).
    pub number: u32,
    /// Replicas of partitions `0..replicas.len()`.
    pub replicas: Vec<Vec<Node>>,
    pub configs: BTreeMap<String, String>,
}

/// Partitions `first..first + replicas.len()` were added to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionsAdded {
    pub id: [u8; 16],
    /// Index of the first new partition: the topic's partition count before this record.
    pub first: i32,
    pub replicas: Vec<Vec<Node>>,
}

/// A partition's leader, leader epoch or in-sync replicas changed (KRaft's
/// `PartitionChangeRecord`). Applied only if its epoch is not older than the one recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChanged {
    pub id: [u8; 16],
    pub partition: i32,
    /// -1: no leader.
    pub leader: Node,
    pub leader_epoch: i32,
    pub isr: Vec<Node>,
}

/// A partition's replica set changed (KRaft's `PartitionChangeRecord` with `replicas`,
/// `addingReplicas`, `removingReplicas`): a reassignment started (the replicas are the target
/// followed by the replicas leaving, `adding` and `removing` say which), was replaced or
/// cancelled, or completed (`adding` and `removing` empty, the replicas the target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicasChanged {
    pub id: [u8; 16],
    pub partition: i32,
    pub replicas: Vec<Node>,
    pub adding: Vec<Node>,
    pub removing: Vec<Node>,
    /// The ISR from now on (a subset of `replicas`).
    pub isr: Vec<Node>,
}

/// One metadata log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    TopicCreated(TopicCreated),
    PartitionsAdded(PartitionsAdded),
    TopicDeleted {
        id: [u8; 16],
    },
    /// The topic's explicitly set configs, all of them (the new set replaces the old).
    ConfigChanged {
        id: [u8; 16],
        configs: BTreeMap<String, String>,
    },
    PartitionChanged(PartitionChanged),
    /// Producer ids `first..first + size` belong to `broker`; no other broker hands them out.
    ProducerIdsAllocated {
        broker: Node,
        first: i64,
        size: i64,
    },
    /// An ACL binding was added (KRaft's `AccessControlEntryRecord`; a binding that exists
    /// already is left as it is).
    AclCreated(super::acl::Acl),
    /// An ACL binding was removed (KRaft's `RemoveAccessControlEntryRecord`).
    AclRemoved(super::acl::Acl),
    /// A client quota was set (`value`) or removed (`None`) (KRaft's `ClientQuotaRecord`).
    QuotaChanged {
        entity: super::quota::QuotaEntity,
        key: String,
        value: Option<super::quota::QuotaValue>,
    },
    /// A partition reassignment started, changed or completed.
    ReplicasChanged(ReplicasChanged),
    /// A group's dynamic configs, all of them (the new set replaces the old; empty: none
    /// left). KRaft's `ConfigRecord`s with resource type GROUP.
    GroupConfigChanged {
        group: String,
        configs: BTreeMap<String, String>,
    },
}

const TOPIC_CREATED: u8 = 1;
const PARTITIONS_ADDED: u8 = 2;
const TOPIC_DELETED: u8 = 3;
const CONFIG_CHANGED: u8 = 4;
const PARTITION_CHANGED: u8 = 5;
const PRODUCER_IDS_ALLOCATED: u8 = 6;
const ACL_CREATED: u8 = 7;
const ACL_REMOVED: u8 = 8;
const QUOTA_CHANGED: u8 = 9;
const REPLICAS_CHANGED: u8 = 10;
const GROUP_CONFIG_CHANGED: u8 = 11;
/// Every record type is at version 0.
const RECORD_VERSION: u8 = 0;

/// Why bytes are not a valid metadata record or batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("metadata record truncated in {0}")]
    Truncated(&'static str),
    #[error("metadata record: {what} is {got}, at most {max}")]
    TooLarge { what: &'static str, got: u64, max: u64 },
    #[error("metadata record: unknown frame version {0}")]
    UnknownFrame(u8),
    #[error("metadata record: unknown record type {0}")]
    UnknownType(u8),
    #[error("metadata record type {kind}: unknown version {version}")]
    UnknownVersion { kind: u8, version: u8 },
    #[error("metadata record: {0} trailing bytes")]
    Trailing(usize),
    #[error("metadata record: {0}")]
    Invalid(&'static str),
    #[error("metadata batch: {0}")]
    Batch(#[from] BatchError),
}

/// Encodes one record's value.
pub fn encode(record: &MetadataRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64));
    w.u8(FRAME_VERSION);
    match record {
        MetadataRecord::TopicCreated(t) => {
            w.head(TOPIC_CREATED);
            w.str(&t.name);
            w.id(&t.id);
            w.u32(t.number);
            w.assignment(&t.replicas);
            w.configs(&t.configs);
        }
        MetadataRecord::PartitionsAdded(p) => {
            w.head(PARTITIONS_ADDED);
            w.id(&p.id);
            w.i32(p.first);
            w.assignment(&p.replicas);
        }
        MetadataRecord::TopicDeleted { id } => {
            w.head(TOPIC_DELETED);
            w.id(id);
        }
        MetadataRecord::ConfigChanged { id, configs } => {
            w.head(CONFIG_CHANGED);
            w.id(id);
            w.configs(configs);
        }
        MetadataRecord::PartitionChanged(c) => {
            w.head(PARTITION_CHANGED);
            w.id(&c.id);
            w.i32(c.partition);
            w.i32(c.leader);
            w.i32(c.leader_epoch);
            w.nodes(&c.isr);
        }
        MetadataRecord::ProducerIdsAllocated { broker, first, size } => {
            w.head(PRODUCER_IDS_ALLOCATED);
            w.i32(*broker);
            w.i64(*first);
            w.i64(*size);
        }
        MetadataRecord::AclCreated(a) => {
            w.head(ACL_CREATED);
            w.acl(a);
        }
        MetadataRecord::AclRemoved(a) => {
            w.head(ACL_REMOVED);
            w.acl(a);
        }
        MetadataRecord::QuotaChanged { entity, key, value } => {
            w.head(QUOTA_CHANGED);
            w.entity_side(entity.user.as_ref());
            w.entity_side(entity.client_id.as_ref());
            w.str(key);
            match value {
                None => w.u8(0),
                Some(v) => {
                    w.u8(1);
                    w.0.extend_from_slice(&v.bits().to_be_bytes());
                }
            }
        }
        MetadataRecord::ReplicasChanged(c) => {
            w.head(REPLICAS_CHANGED);
            w.id(&c.id);
            w.i32(c.partition);
            w.nodes(&c.replicas);
            w.nodes(&c.adding);
            w.nodes(&c.removing);
            w.nodes(&c.isr);
        }
        MetadataRecord::GroupConfigChanged { group, configs } => {
            w.head(GROUP_CONFIG_CHANGED);
            w.str(group);
            w.configs(configs);
        }
    }
    w.0
}

/// Decodes one record's value (checked; see the module docs).
pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, RecordError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let frame = r.u8("frame version")?;
    if frame != FRAME_VERSION {
        return Err(RecordError::UnknownFrame(frame));
    }
    let kind = r.u8("record type")?;
    let version = r.u8("record version")?;
    if !(TOPIC_CREATED..=GROUP_CONFIG_CHANGED).contains(&kind) {
        return Err(RecordError::UnknownType(kind));
    }
    if version != RECORD_VERSION {
        return Err(RecordError::UnknownVersion { kind, version });
    }
    let record = match kind {
        TOPIC_CREATED => MetadataRecord::TopicCreated(TopicCreated {
            name: r.topic_name()?,
            id: r.id()?,
            number: r.topic_number()?,
            replicas: r.assignment()?,
            configs: r.configs()?,
        }),
        PARTITIONS_ADDED => {
            let id = r.id()?;
            let first = r.i32("first partition")?;
            if !(0..MAX_PARTITIONS_PER_TOPIC).contains(&first) {
                return Err(RecordError::Invalid("first partition out of range"));
            }
            let replicas = r.assignment()?;
            let end = i64::from(first) + i64::try_from(replicas.len()).unwrap_or(i64::MAX);
            if end > i64::from(MAX_PARTITIONS_PER_TOPIC) {
                return Err(RecordError::Invalid("partitions beyond MAX_PARTITIONS_PER_TOPIC"));
            }
            MetadataRecord::PartitionsAdded(PartitionsAdded { id, first, replicas })
        }
        TOPIC_DELETED => MetadataRecord::TopicDeleted { id: r.id()? },
        CONFIG_CHANGED => MetadataRecord::ConfigChanged { id: r.id()?, configs: r.configs()? },
        PARTITION_CHANGED => {
            let id = r.id()?;
            let partition = r.i32("partition")?;
            if !(0..MAX_PARTITIONS_PER_TOPIC).contains(&partition) {
                return Err(RecordError::Invalid("partition out of range"));
            }
            let leader = r.i32("leader")?;
            if leader != -1 {
                check_node(leader)?;
            }
            let leader_epoch = r.i32("leader epoch")?;
            if leader_epoch < 0 {
                return Err(RecordError::Invalid("negative leader epoch"));
            }
            let isr = r.nodes(true)?;
            MetadataRecord::PartitionChanged(PartitionChanged { id, partition, leader, leader_epoch, isr })
        }
        PRODUCER_IDS_ALLOCATED => {
            let broker = r.i32("broker")?;
            check_node(broker)?;
            let first = r.i64("first producer id")?;
            let size = r.i64("block size")?;
            if first < 0 || size <= 0 || first.checked_add(size).is_none() {
                return Err(RecordError::Invalid("producer id block out of range"));
            }
            MetadataRecord::ProducerIdsAllocated { broker, first, size }
        }
        ACL_CREATED => MetadataRecord::AclCreated(r.acl()?),
        ACL_REMOVED => MetadataRecord::AclRemoved(r.acl()?),
        QUOTA_CHANGED => r.quota()?,
        REPLICAS_CHANGED => {
            let id = r.id()?;
            let partition = r.i32("partition")?;
            if !(0..MAX_PARTITIONS_PER_TOPIC).contains(&partition) {
                return Err(RecordError::Invalid("partition out of range"));
            }
            let c = ReplicasChanged {
                id,
                partition,
                replicas: r.nodes(false)?,
                adding: r.nodes(true)?,
                removing: r.nodes(true)?,
                isr: r.nodes(true)?,
            };
            let within = |ns: &[Node]| ns.iter().all(|n| c.replicas.contains(n));
            if !within(&c.adding) || !within(&c.removing) || !within(&c.isr) {
                return Err(RecordError::Invalid("adding, removing or ISR replicas outside the replicas"));
            }
            if c.adding.iter().any(|n| c.removing.contains(n)) {
                return Err(RecordError::Invalid("a replica both added and removed"));
            }
            MetadataRecord::ReplicasChanged(c)
        }
        GROUP_CONFIG_CHANGED => {
            let group = r.str("group id", METADATA_RECORD_MAX_STRING_BYTES)?;
            if group.is_empty() {
                return Err(RecordError::Invalid("an empty group id"));
            }
            MetadataRecord::GroupConfigChanged { group, configs: r.configs()? }
        }
        _ => unreachable!("record types checked above"),
    };
    match bytes.len() - r.pos {
        0 => Ok(record),
        n => Err(RecordError::Trailing(n)),
    }
}

/// Encodes `records` into batches of at most `MAX_BATCH_BYTES` (a record never spans two), in
/// order, stamped with `timestamp`. A topic with many partitions is first split into a
/// [`TopicCreated`] and [`PartitionsAdded`] records of at most `METADATA_PARTITIONS_PER_RECORD`
/// partitions each.
pub fn to_batches(records: &[MetadataRecord], timestamp: i64) -> Vec<Vec<u8>> {
    let values: Vec<Vec<u8>> = records.iter().flat_map(split).map(|r| encode(&r)).collect();
    // Header and per-record overhead, generously: 61-byte batch header, ≤ 20 bytes of varints.
    const OVERHEAD: usize = 61;
    const PER_RECORD: usize = 24;
    let mut batches = Vec::new();
    let mut current: Vec<&[u8]> = Vec::new();
    let mut size = OVERHEAD;
    for v in &values {
        assert!(OVERHEAD + PER_RECORD + v.len() <= MAX_BATCH_BYTES, "a split record fits a batch");
        if !current.is_empty() && size + PER_RECORD + v.len() > MAX_BATCH_BYTES {
            batches.push(build(&current, timestamp));
            current.clear();
            size = OVERHEAD;
        }
        size += PER_RECORD + v.len();
        current.push(v);
    }
    if !current.is_empty() {
        batches.push(build(&current, timestamp));
    }
    batches
}

fn build(values: &[&[u8]], timestamp: i64) -> Vec<u8> {
    let records: Vec<Record<'_>> = values.iter().map(|v| Record { key: None, value: v }).collect();
    batch::build(&records, timestamp)
}

/// Splits a record whose partition list is longer than `METADATA_PARTITIONS_PER_RECORD`.
fn split(record: &MetadataRecord) -> Vec<MetadataRecord> {
    let (head, id, first, replicas) = match record {
        MetadataRecord::TopicCreated(t) if t.replicas.len() > METADATA_PARTITIONS_PER_RECORD => {
            let head = TopicCreated { replicas: t.replicas[..METADATA_PARTITIONS_PER_RECORD].to_vec(), ..t.clone() };
            (Some(MetadataRecord::TopicCreated(head)), t.id, METADATA_PARTITIONS_PER_RECORD, &t.replicas[..])
        }
        MetadataRecord::PartitionsAdded(p) if p.replicas.len() > METADATA_PARTITIONS_PER_RECORD => {
            (None, p.id, 0, &p.replicas[..])
        }
        other => return vec![other.clone()],
    };
    let base = match record {
        MetadataRecord::PartitionsAdded(p) => p.first,
        _ => 0,
    };
    let mut out: Vec<MetadataRecord> = head.into_iter().collect();
    let mut at = first;
    while at < replicas.len() {
        let end = (at + METADATA_PARTITIONS_PER_RECORD).min(replicas.len());
        let first = base + i32::try_from(at).expect("partition counts fit i32");
        out.push(MetadataRecord::PartitionsAdded(PartitionsAdded { id, first, replicas: replicas[at..end].to_vec() }));
        at = end;
    }
    out
}

/// Decodes every record of a metadata batch, in order (an uncompressed v2 batch, as
/// [`to_batches`] writes them; control batches carry no metadata and give none).
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, RecordError> {
    let header = batch::validate(bytes)?;
    if header.is_control() {
        return Ok(Vec::new());
    }
    batch::records(bytes)?
        .into_iter()
        .map(|r| r.value.ok_or(RecordError::Invalid("a metadata record without a value")).and_then(decode))
        .collect()
}

fn check_node(id: i32) -> Result<(), RecordError> {
    if (0..=MAX_NODE_ID).contains(&id) {
        Ok(())
    } else {
        Err(RecordError::Invalid("node id out of range"))
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn head(&mut self, kind: u8) {
        self.u8(kind);
        self.u8(RECORD_VERSION);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn id(&mut self, id: &[u8; 16]) {
        self.0.extend_from_slice(id);
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("lengths are bounded by limits.rs"));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn nodes(&mut self, nodes: &[Node]) {
        self.len(nodes.len());
        nodes.iter().for_each(|n| self.i32(*n));
    }
    fn assignment(&mut self, replicas: &[Vec<Node>]) {
        self.len(replicas.len());
        replicas.iter().for_each(|r| self.nodes(r));
    }
    fn acl(&mut self, a: &super::acl::Acl) {
        for code in [a.resource_type, a.pattern_type, a.operation, a.permission] {
            self.0.extend_from_slice(&code.to_be_bytes());
        }
        self.str(&a.name);
        self.str(&a.principal);
        self.str(&a.host);
    }
    /// An entity's user or client-id side: 0 absent, 1 the default, 2 a name.
    fn entity_side(&mut self, side: Option<&super::quota::EntityName>) {
        match side {
            None => self.u8(0),
            Some(super::quota::EntityName::Default) => self.u8(1),
            Some(super::quota::EntityName::Named(n)) => {
                self.u8(2);
                self.str(n);
            }
        }
    }
    fn configs(&mut self, configs: &BTreeMap<String, String>) {
        self.len(configs.len());
        for (k, v) in configs {
            self.str(k);
            self.str(v);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(RecordError::Truncated(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, RecordError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn id(&mut self) -> Result<[u8; 16], RecordError> {
        Ok(self.take(16, "topic id")?.try_into().expect("16 bytes"))
    }
    /// A count or length, at most `max`, and at most what the bytes left can hold at
    /// `min_each` bytes per item (so nothing is allocated for a lying count).
    fn count(&mut self, what: &'static str, max: usize, min_each: usize) -> Result<usize, RecordError> {
        let n = self.u32(what)?;
        let n = usize::try_from(n).map_err(|_| RecordError::Invalid("count does not fit usize"))?;
        if n > max {
            return Err(RecordError::TooLarge { what, got: n as u64, max: max as u64 });
        }
        if n.saturating_mul(min_each) > self.buf.len() - self.pos {
            return Err(RecordError::Truncated(what));
        }
        Ok(n)
    }
    fn str(&mut self, what: &'static str, max: usize) -> Result<String, RecordError> {
        let n = self.count(what, max, 1)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Invalid("a string is not UTF-8"))
    }
    fn acl(&mut self) -> Result<super::acl::Acl, RecordError> {
        let mut code = |what| self.u8(what).map(|b| i8::from_be_bytes([b]));
        let (resource_type, pattern_type) = (code("resource type")?, code("pattern type")?);
        let (operation, permission) = (code("operation")?, code("permission")?);
        let acl = super::acl::Acl {
            resource_type,
            pattern_type,
            operation,
            permission,
            name: self.str("resource name", METADATA_RECORD_MAX_STRING_BYTES)?,
            principal: self.str("principal", METADATA_RECORD_MAX_STRING_BYTES)?,
            host: self.str("host", METADATA_RECORD_MAX_STRING_BYTES)?,
        };
        acl.check().map_err(|_| RecordError::Invalid("malformed ACL"))?;
        Ok(acl)
    }
    fn entity_side(&mut self) -> Result<Option<super::quota::EntityName>, RecordError> {
        use super::quota::EntityName;
        match self.u8("quota entity")? {
            0 => Ok(None),
            1 => Ok(Some(EntityName::Default)),
            2 => match self.str("quota entity name", METADATA_RECORD_MAX_STRING_BYTES)? {
                n if n.is_empty() => Err(RecordError::Invalid("an empty quota entity name")),
                n => Ok(Some(EntityName::Named(n))),
            },
            _ => Err(RecordError::Invalid("unknown quota entity kind")),
        }
    }
    fn quota(&mut self) -> Result<MetadataRecord, RecordError> {
        use super::quota::{is_known_key, QuotaEntity, QuotaValue};
        let entity = QuotaEntity { user: self.entity_side()?, client_id: self.entity_side()? };
        if entity.user.is_none() && entity.client_id.is_none() {
            return Err(RecordError::Invalid("a quota entity without user or client id"));
        }
        let key = self.str("quota key", METADATA_RECORD_MAX_STRING_BYTES)?;
        if !is_known_key(&key) {
            return Err(RecordError::Invalid("unknown quota key"));
        }
        let value = match self.u8("quota value")? {
            0 => None,
            1 => {
                let v = f64::from_bits(u64::from_be_bytes(self.take(8, "quota value")?.try_into().expect("8 bytes")));
                if !(v.is_finite() && v > 0.0) {
                    return Err(RecordError::Invalid("a quota value that is not positive"));
                }
                Some(QuotaValue::new(v))
            }
            _ => return Err(RecordError::Invalid("bad quota value marker")),
        };
        Ok(MetadataRecord::QuotaChanged { entity, key, value })
    }
    fn topic_name(&mut self) -> Result<String, RecordError> {
        let name = self.str("topic name", MAX_TOPIC_NAME_LEN)?;
        crate::metadata::validate_topic_name(&name).map_err(|_| RecordError::Invalid("illegal topic name"))?;
        Ok(name)
    }
    fn topic_number(&mut self) -> Result<u32, RecordError> {
        match self.u32("topic number")? {
            0 => Err(RecordError::Invalid("topic number 0 is the metadata log's")),
            n => Ok(n),
        }
    }
    fn nodes(&mut self, may_be_empty: bool) -> Result<Vec<Node>, RecordError> {
        let n = self.count("replica count", MAX_CLUSTER_MEMBERS, 4)?;
        if n == 0 && !may_be_empty {
            return Err(RecordError::Invalid("a partition without replicas"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.i32("node id")?;
            check_node(id)?;
            if out.contains(&id) {
                return Err(RecordError::Invalid("a node listed twice for one partition"));
            }
            out.push(id);
        }
        Ok(out)
    }
    fn assignment(&mut self) -> Result<Vec<Vec<Node>>, RecordError> {
        let max = usize::try_from(MAX_PARTITIONS_PER_TOPIC).expect("positive");
        let n = self.count("partition count", max, 8)?;
        if n == 0 {
            return Err(RecordError::Invalid("no partitions"));
        }
        (0..n).map(|_| self.nodes(false)).collect()
    }
    fn configs(&mut self) -> Result<BTreeMap<String, String>, RecordError> {
        let n = self.count("config count", METADATA_RECORD_MAX_CONFIGS, 8)?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let k = self.str("config name", METADATA_RECORD_MAX_STRING_BYTES)?;
            let v = self.str("config value", METADATA_RECORD_MAX_STRING_BYTES)?;
            if out.insert(k, v).is_some() {
                return Err(RecordError::Invalid("a config listed twice"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> impl Strategy<Value = Node> {
        0..=MAX_NODE_ID
    }

    fn replicas() -> impl Strategy<Value = Vec<Node>> {
        proptest::collection::btree_set(node(), 1..5).prop_map(|s| s.into_iter().collect())
    }

    fn configs() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[a-z.]{1,20}", "[ -~]{0,30}", 0..4)
    }

    fn record() -> impl Strategy<Value = MetadataRecord> {
        let id = any::<[u8; 16]>();
        prop_oneof![
            ("[a-zA-Z0-9._-]{1,40}", id, 1..u32::MAX, proptest::collection::vec(replicas(), 1..20), configs())
                .prop_filter("not . or ..", |(n, ..)| n != "." && n != "..")
                .prop_map(|(name, id, number, replicas, configs)| MetadataRecord::TopicCreated(TopicCreated {
                    name,
                    id,
                    number,
                    replicas,
                    configs
                })),
            (id, 0..1000i32, proptest::collection::vec(replicas(), 1..20)).prop_map(|(id, first, replicas)| {
                MetadataRecord::PartitionsAdded(PartitionsAdded { id, first, replicas })
            }),
            id.prop_map(|id| MetadataRecord::TopicDeleted { id }),
            (id, configs()).prop_map(|(id, configs)| MetadataRecord::ConfigChanged { id, configs }),
            ("[ -~]{1,30}", configs())
                .prop_map(|(group, configs)| MetadataRecord::GroupConfigChanged { group, configs }),
            (id, 0..1000i32, prop_oneof![Just(-1), node()], 0..i32::MAX, proptest::collection::btree_set(node(), 0..4))
                .prop_map(|(id, partition, leader, leader_epoch, isr)| MetadataRecord::PartitionChanged(
                    PartitionChanged { id, partition, leader, leader_epoch, isr: isr.into_iter().collect() }
                )),
            (node(), 0..i64::MAX / 2, 1..1_000_000i64)
                .prop_map(|(broker, first, size)| MetadataRecord::ProducerIdsAllocated { broker, first, size }),
            (2..=7i8, "[a-z*-]{1,20}", 3..=4i8, "User:[a-z*]{1,10}", "[0-9.*]{1,15}", 2..=14i8, 2..=3i8, any::<bool>())
                .prop_map(|(resource_type, name, pattern_type, principal, host, operation, permission, add)| {
                    let name = if resource_type == 4 { "kafka-cluster".to_string() } else { name };
                    let a = crate::metadata::acl::Acl {
                        resource_type,
                        name,
                        pattern_type,
                        principal,
                        host,
                        operation,
                        permission,
                    };
                    if add {
                        MetadataRecord::AclCreated(a)
                    } else {
                        MetadataRecord::AclRemoved(a)
                    }
                }),
            (0..3u8, 0..3u8, "[a-z0-9._-]{1,12}", 0..3usize, proptest::option::of(1.0f64..1e12))
                .prop_filter("an entity", |(u, c, ..)| *u != 0 || *c != 0)
                .prop_map(|(u, c, name, key, value)| {
                    use crate::metadata::quota::{EntityName, QuotaEntity, QuotaKind, QuotaValue};
                    let side = |k: u8| match k {
                        0 => None,
                        1 => Some(EntityName::Default),
                        _ => Some(EntityName::Named(name.clone())),
                    };
                    MetadataRecord::QuotaChanged {
                        entity: QuotaEntity { user: side(u), client_id: side(c) },
                        key: QuotaKind::ALL[key].key().to_string(),
                        value: value.map(QuotaValue::new),
                    }
                }),
            (id, 0..1000i32, proptest::collection::btree_set(node(), 1..6), 0..6usize, 0..6usize).prop_map(
                |(id, partition, set, a, r)| {
                    let replicas: Vec<Node> = set.into_iter().collect();
                    let adding: Vec<Node> = replicas.iter().copied().take(a.min(replicas.len() / 2)).collect();
                    let removing: Vec<Node> = replicas.iter().rev().copied().take(r.min(replicas.len() / 2)).collect();
                    let isr = replicas.iter().copied().filter(|n| !adding.contains(n)).collect();
                    MetadataRecord::ReplicasChanged(ReplicasChanged { id, partition, replicas, adding, removing, isr })
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn every_record_round_trips(r in record()) {
            prop_assert_eq!(decode(&encode(&r)).unwrap(), r);
        }

        #[test]
        fn batches_round_trip_in_order(rs in proptest::collection::vec(record(), 1..30)) {
            let batches = to_batches(&rs, 1);
            let back: Vec<MetadataRecord> = batches.iter().flat_map(|b| decode_batch(b).unwrap()).collect();
            prop_assert_eq!(back, rs);
        }

        #[test]
        fn every_truncation_and_garbage_is_refused_without_panicking(r in record(), cut in any::<prop::sample::Index>(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bytes = encode(&r);
            let at = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..at]).is_err());
            let _ = decode(&junk);
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert_eq!(decode(&longer), Err(RecordError::Trailing(1)));
        }
    }

    #[test]
    fn unknown_frames_types_and_versions_are_refused() {
        let mut b = encode(&MetadataRecord::TopicDeleted { id: [1; 16] });
        b[0] = 2;
        assert_eq!(decode(&b), Err(RecordError::UnknownFrame(2)));
        b[0] = FRAME_VERSION;
        b[1] = 99;
        assert_eq!(decode(&b), Err(RecordError::UnknownType(99)));
        b[1] = TOPIC_DELETED;
        b[2] = 1;
        assert_eq!(decode(&b), Err(RecordError::UnknownVersion { kind: TOPIC_DELETED, version: 1 }));
    }

    #[test]
    fn bad_contents_are_refused() {
        let created = |replicas: Vec<Vec<Node>>, number: u32| {
            encode(&MetadataRecord::TopicCreated(TopicCreated {
                name: "t".into(),
                id: [1; 16],
                number,
                replicas,
                configs: BTreeMap::new(),
            }))
        };
        assert!(decode(&created(vec![vec![1, 1]], 1)).is_err(), "a node twice");
        assert!(decode(&created(vec![vec![]], 1)).is_err(), "no replicas");
        assert!(decode(&created(vec![vec![-3]], 1)).is_err(), "negative node");
        assert!(decode(&created(vec![vec![1]], 0)).is_err(), "topic number 0");
        assert!(decode(&created(vec![], 1)).is_err(), "no partitions");
        // A count that claims more than the bytes left allocates nothing and fails.
        let mut b = created(vec![vec![1]], 1);
        let at = 3 + 4 + 1 + 16 + 4; // frame, name "t", id, number
        b[at..at + 4].copy_from_slice(&50_000u32.to_be_bytes());
        assert_eq!(decode(&b), Err(RecordError::Truncated("partition count")));
        b[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&b), Err(RecordError::TooLarge { .. })));
    }

    #[test]
    fn a_huge_topic_is_split_and_packed_into_bounded_batches() {
        let n = usize::try_from(MAX_PARTITIONS_PER_TOPIC).unwrap();
        let replicas: Vec<Vec<Node>> =
            (0..n).map(|p| (0..3).map(|k| i32::try_from((p + k) % 5).unwrap()).collect()).collect();
        let t = TopicCreated {
            name: "big".into(),
            id: [9; 16],
            number: 4,
            replicas: replicas.clone(),
            configs: BTreeMap::new(),
        };
        let batches = to_batches(&[MetadataRecord::TopicCreated(t)], 0);
        assert!(batches.len() > 1);
        assert!(batches.iter().all(|b| b.len() <= MAX_BATCH_BYTES));
        let back: Vec<MetadataRecord> = batches.iter().flat_map(|b| decode_batch(b).unwrap()).collect();
        let mut all = Vec::new();
        for (i, r) in back.iter().enumerate() {
            match r {
                MetadataRecord::TopicCreated(t) if i == 0 => all.extend(t.replicas.clone()),
                MetadataRecord::PartitionsAdded(p) => {
                    assert_eq!(usize::try_from(p.first).unwrap(), all.len());
                    all.extend(p.replicas.clone());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(all, replicas);
    }
}
