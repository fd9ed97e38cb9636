//! The records of `__consumer_offsets`: committed offsets and group records, encoded as the
//! keys and values of ordinary v2 record batches.
//!
//! ```text
//! offset key:   0u8 | group (u16 len, bytes) | topic (u16 len, bytes) | partition i32
//! offset value: offset i64 | leader epoch i32 | commit timestamp ms i64 | metadata (i32 len, -1 = null, bytes)
//! group key:    1u8 | group (u16 len, bytes)
//! group value:  generation i32 | protocol type (u16 len, bytes) | protocol (u16 len, bytes)
//! consumer key: 2u8 | group (u16 len, bytes)
//! consumer value: a KIP-848 consumer group, see `consumer::record`
//! pending transactional offsets key: 3u8 | group (u16 len, bytes) | producer id i64
//! pending transactional offsets value: count u32 | count x (topic (u16 len, bytes) |
//!               partition i32 | offset i64 | leader epoch i32 | metadata (i32 len, -1 = null, bytes))
//! share group key: 4u8 | group (u16 len, bytes)
//! share group value: a KIP-932 share group's membership, see `share::group`
//! tombstone:    an empty value (offset deleted or expired; group deleted; transaction ended)
//! ```
//!
//! The pending transactional offsets (TxnOffsetCommit) are the whole set a producer's open
//! transaction staged for the group, rewritten on every TxnOffsetCommit; the transaction's end
//! writes its committed offsets and the tombstone in one batch (`txn::coordinator`).
//!
//! Contract: [`decode`] never panics on any bytes; a record it cannot read is skipped (and
//! counted by the caller), never half-applied. Big-endian throughout, like Kafka.

use super::Committed;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<Committed>,
    },
    Group {
        group: String,
        value: Option<GroupRecord>,
    },
    /// A KIP-848 consumer group's record (decoded by `consumer::record`).
    Consumer {
        group: String,
        value: Option<Vec<u8>>,
    },
    /// A share group's membership (decoded by `share::group`; None: deleted).
    Share {
        group: String,
        value: Option<Vec<u8>>,
    },
    /// The offsets a producer's open transaction staged for the group (None: it ended).
    TxnOffsets {
        group: String,
        producer_id: i64,
        value: Option<Vec<super::OffsetToCommit>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&u16::try_from(b.len()).expect("cut to u16::MAX bytes").to_be_bytes());
    out.extend_from_slice(b);
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = vec![0u8];
    put_str(&mut k, group);
    put_str(&mut k, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub fn offset_value(c: &Committed) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    v.extend_from_slice(&c.offset.to_be_bytes());
    v.extend_from_slice(&c.leader_epoch.to_be_bytes());
    v.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
    match &c.metadata {
        None => v.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(m) => {
            // A string from a request: bounded by MAX_REQUEST_BYTES.
            v.extend_from_slice(&i32::try_from(m.len()).expect("metadata shorter than a request").to_be_bytes());
            v.extend_from_slice(m.as_bytes());
        }
    }
    v
}

pub fn group_key(group: &str) -> Vec<u8> {
    let mut k = vec![1u8];
    put_str(&mut k, group);
    k
}

pub fn group_value(g: &GroupRecord) -> Vec<u8> {
    let mut v = g.generation.to_be_bytes().to_vec();
    put_str(&mut v, &g.protocol_type);
    put_str(&mut v, &g.protocol);
    v
}

pub fn consumer_key(group: &str) -> Vec<u8> {
    let mut k = vec![2u8];
    put_str(&mut k, group);
    k
}

pub fn share_key(group: &str) -> Vec<u8> {
    let mut k = vec![4u8];
    put_str(&mut k, group);
    k
}

pub fn txn_offsets_key(group: &str, producer_id: i64) -> Vec<u8> {
    let mut k = vec![3u8];
    put_str(&mut k, group);
    k.extend_from_slice(&producer_id.to_be_bytes());
    k
}

pub fn txn_offsets_value(offsets: &[super::OffsetToCommit]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + offsets.len() * 40);
    // Bounded by the requests that staged them (each within MAX_REQUEST_BYTES, deduplicated by
    // partition).
    v.extend_from_slice(&u32::try_from(offsets.len()).expect("staged offsets fit u32").to_be_bytes());
    for o in offsets {
        put_str(&mut v, &o.topic);
        v.extend_from_slice(&o.partition.to_be_bytes());
        v.extend_from_slice(&o.offset.to_be_bytes());
        v.extend_from_slice(&o.leader_epoch.to_be_bytes());
        put_metadata(&mut v, o.metadata.as_deref());
    }
    v
}

fn put_metadata(v: &mut Vec<u8>, m: Option<&str>) {
    match m {
        None => v.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(m) => {
            // A string from a request: bounded by MAX_REQUEST_BYTES.
            v.extend_from_slice(&i32::try_from(m.len()).expect("metadata shorter than a request").to_be_bytes());
            v.extend_from_slice(m.as_bytes());
        }
    }
}

fn decode_txn_offsets(v: &[u8]) -> Option<Vec<super::OffsetToCommit>> {
    let mut r = Reader(v);
    let n = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
    // Each entry takes at least 22 bytes: a count beyond what the value holds is corrupt.
    if usize::try_from(n).ok()? > v.len() / 22 {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let topic = r.str()?;
        let partition = r.i32()?;
        let offset = r.i64()?;
        let leader_epoch = r.i32()?;
        let metadata = r.metadata()?;
        out.push(super::OffsetToCommit { topic, partition, offset, leader_epoch, metadata });
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes(b.try_into().expect("4")))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8).map(|b| i64::from_be_bytes(b.try_into().expect("8")))
    }
    /// (i32 len, -1 = null, bytes); the outer None is a cut or invalid field.
    fn metadata(&mut self) -> Option<Option<String>> {
        let len = self.i32()?;
        if len < 0 {
            return Some(None);
        }
        Some(Some(String::from_utf8_lossy(self.take(usize::try_from(len).ok()?)?).into_owned()))
    }
    fn str(&mut self) -> Option<String> {
        let len = self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))?;
        self.take(len as usize).map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// Decodes one record; `None` when it is not a record of ours.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<Entry> {
    let mut k = Reader(key);
    let kind = k.take(1)?[0];
    let group = k.str()?;
    let value = value.filter(|v| !v.is_empty());
    match kind {
        0 => {
            let topic = k.str()?;
            let partition = k.i32()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut r = Reader(v);
                    let offset = r.i64()?;
                    let leader_epoch = r.i32()?;
                    let commit_timestamp_ms = r.i64()?;
                    let len = r.i32()?;
                    let metadata = if len < 0 {
                        None
                    } else {
                        Some(String::from_utf8_lossy(r.take(usize::try_from(len).ok()?)?).into_owned())
                    };
                    Some(Committed { offset, leader_epoch, metadata, commit_timestamp_ms })
                }
            };
            Some(Entry::Offset { group, topic, partition, value })
        }
        1 => {
            let value = match value {
                None => None,
                Some(v) => {
                    let mut r = Reader(v);
                    Some(GroupRecord { generation: r.i32()?, protocol_type: r.str()?, protocol: r.str()? })
                }
            };
            Some(Entry::Group { group, value })
        }
        2 => Some(Entry::Consumer { group, value: value.map(<[u8]>::to_vec) }),
        4 => Some(Entry::Share { group, value: value.map(<[u8]>::to_vec) }),
        3 => {
            let producer_id = k.i64()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_txn_offsets(v)?),
            };
            Some(Entry::TxnOffsets { group, producer_id, value })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tombstones() {
        let c = Committed { offset: 42, leader_epoch: 3, metadata: Some("m".into()), commit_timestamp_ms: 7 };
        let e = decode(&offset_key("g", "t", 5), Some(&offset_value(&c))).unwrap();
        assert_eq!(e, Entry::Offset { group: "g".into(), topic: "t".into(), partition: 5, value: Some(c) });
        let e = decode(&offset_key("g", "t", 5), Some(&[])).unwrap();
        assert!(matches!(e, Entry::Offset { value: None, .. }));
        let g = GroupRecord { generation: 9, protocol_type: "consumer".into(), protocol: "range".into() };
        assert_eq!(
            decode(&group_key("g"), Some(&group_value(&g))),
            Some(Entry::Group { group: "g".into(), value: Some(g) })
        );
        assert_eq!(decode(&[0, 0], None), None);
        assert_eq!(decode(&[9], None), None);
        let staged = vec![
            crate::groups::OffsetToCommit {
                topic: "t".into(),
                partition: 2,
                offset: 10,
                leader_epoch: -1,
                metadata: None,
            },
            crate::groups::OffsetToCommit {
                topic: "u".into(),
                partition: 0,
                offset: 7,
                leader_epoch: 4,
                metadata: Some("x".into()),
            },
        ];
        assert_eq!(
            decode(&txn_offsets_key("g", 77), Some(&txn_offsets_value(&staged))),
            Some(Entry::TxnOffsets { group: "g".into(), producer_id: 77, value: Some(staged.clone()) })
        );
        assert_eq!(
            decode(&txn_offsets_key("g", 77), Some(&[])),
            Some(Entry::TxnOffsets { group: "g".into(), producer_id: 77, value: None })
        );
        let mut cut = txn_offsets_value(&staged);
        cut.truncate(cut.len() - 3);
        assert_eq!(decode(&txn_offsets_key("g", 77), Some(&cut)), None);
        assert_eq!(decode(&txn_offsets_key("g", 77), Some(&[0xff, 0xff, 0xff, 0xff])), None, "count beyond the value");
        let mut bad = offset_value(&Committed { offset: 1, leader_epoch: 1, metadata: None, commit_timestamp_ms: 1 });
        bad.truncate(5);
        assert_eq!(decode(&offset_key("g", "t", 0), Some(&bad)), None);
    }
}
