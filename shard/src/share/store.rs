//! Durable share-partition state: one small file per (share group, topic id, partition) under
//! `<data_dir>/share-state/`, rewritten whole (write to a temporary, fdatasync, rename, fsync
//! the directory) before an acknowledgement is answered, read back the first time the
//! share-partition is used after a start.
//!
//! Contract: a file holds the SPSO and every in-flight record that is done or was delivered
//! (at most `share_partition_max_record_locks` entries), with a CRC-32 over the body; a file
//! that fails its checksum or its shape is refused (the share-partition then starts afresh
//! from its reset policy, logged). Writes run on the blocking pool one at a time per shard
//! ([`Writer`]), so a later state never loses a race against an earlier one.
//!
//! In a cluster the same state also travels through the partition's Raft log as a
//! [`StateRecord`] ([`encode_record`]: version u8 (1), group (u16 length, bytes), topic id,
//! partition i32, spso i64, then runs of consecutive offsets with one state and count: count
//! u32, then count × (first i64, length u32, state u8, delivery count u16); the batch's CRC
//! covers it). Decoding checks every length against the bytes left and refuses more than
//! `MAX_SHARE_PARTITION_RECORD_LOCKS` entries before anything is allocated.
//!
//! Layout: `b"SLSH"`, version u8 (1), spso i64, count u32, then count × (offset i64, state u8,
//! delivery count u16), then CRC-32 (IEEE) of everything before it; integers big-endian.

use super::partition::RecordState;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"SLSH";
const VERSION: u8 = 1;
const ENTRY: usize = 8 + 1 + 2;

/// The stored form of a share-partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub spso: i64,
    pub entries: Vec<(i64, RecordState, u16)>,
}

impl Stored {
    /// The state record that forgets a share-partition (DeleteShareGroupOffsets, DeleteGroups):
    /// SPSO -1, no entries (Kafka's "uninitialized" start offset); replicas drop their copy and
    /// their file when they apply it.
    pub const FORGOTTEN: Stored = Stored { spso: -1, entries: Vec::new() };

    pub fn is_forgotten(&self) -> bool {
        self.spso < 0
    }
}

/// The state directory under the broker's data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("share-state")
}

/// The file of one share-partition: group id and topic id in hex (file-name safe).
pub fn file(data_dir: &Path, group: &str, topic_id: &[u8; 16], partition: i32) -> PathBuf {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let g = if group.len() <= 100 {
        hex(group.as_bytes())
    } else {
        // Long ids: a hash (names stay below file-name limits); the file stores no group id,
        // so a collision would mix two groups' state — 64 bits make that negligible.
        format!("h{:016x}", fnv(group.as_bytes()))
    };
    dir(data_dir).join(format!("{g}.{}.{partition}.state", hex(topic_id)))
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3))
}

pub fn encode(s: &Stored) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 1 + 8 + 4 + s.entries.len() * ENTRY + 4);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&s.spso.to_be_bytes());
    let n = u32::try_from(s.entries.len()).expect("entries bounded by the record-lock limit");
    out.extend_from_slice(&n.to_be_bytes());
    for (o, st, c) in &s.entries {
        out.extend_from_slice(&o.to_be_bytes());
        out.push(st.code());
        out.extend_from_slice(&c.to_be_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

pub fn decode(b: &[u8]) -> Option<Stored> {
    let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_be_bytes() != crc || body.len() < 17 || &body[..4] != MAGIC || body[4] != VERSION {
        return None;
    }
    let spso = i64::from_be_bytes(body[5..13].try_into().ok()?);
    let n = usize::try_from(u32::from_be_bytes(body[13..17].try_into().ok()?)).ok()?;
    let rest = &body[17..];
    if rest.len() != n.checked_mul(ENTRY)? {
        return None;
    }
    let mut entries = Vec::with_capacity(n);
    for e in rest.chunks_exact(ENTRY) {
        let o = i64::from_be_bytes(e[..8].try_into().ok()?);
        let st = RecordState::from_code(e[8])?;
        let c = u16::from_be_bytes(e[9..11].try_into().ok()?);
        if o < spso {
            return None;
        }
        entries.push((o, st, c));
    }
    Some(Stored { spso, entries })
}

/// Reads a stored state (`None`: no file, or a refused one).
pub fn read(path: &Path) -> Option<Stored> {
    let bytes = std::fs::read(path).ok()?;
    let s = decode(&bytes);
    if s.is_none() {
        tracing::warn!(path = %path.display(), "share-partition state file refused (checksum or shape); starting afresh");
    }
    s
}

/// Writes durably (blocking: run on the blocking pool).
pub fn write(path: &Path, s: &Stored) -> std::io::Result<()> {
    let d = path.parent().expect("state files live in a directory");
    std::fs::create_dir_all(d)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&encode(s))?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(d)?.sync_all()
}

/// Removes a stored state (DeleteGroups, DeleteShareGroupOffsets).
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A share-partition's state as the partition's Raft log carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    pub group: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub state: Stored,
}

const RECORD_VERSION: u8 = 1;
const RUN: usize = 8 + 4 + 1 + 2;

/// Runs of consecutive offsets with the same state and count: (first, length, state, count).
fn runs(entries: &[(i64, RecordState, u16)]) -> Vec<(i64, u32, RecordState, u16)> {
    let mut out: Vec<(i64, u32, RecordState, u16)> = Vec::new();
    for &(o, st, c) in entries {
        match out.last_mut() {
            Some(r) if r.0 + i64::from(r.1) == o && r.2 == st && r.3 == c => r.1 += 1,
            _ => out.push((o, 1, st, c)),
        }
    }
    out
}

pub fn encode_record(r: &StateRecord) -> Vec<u8> {
    let runs = runs(&r.state.entries);
    let g = r.group.as_bytes();
    let mut out = Vec::with_capacity(1 + 2 + g.len() + 16 + 4 + 8 + 4 + runs.len() * RUN);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&u16::try_from(g.len()).expect("group ids are bounded by the protocol").to_be_bytes());
    out.extend_from_slice(g);
    out.extend_from_slice(&r.topic_id);
    out.extend_from_slice(&r.partition.to_be_bytes());
    out.extend_from_slice(&r.state.spso.to_be_bytes());
    out.extend_from_slice(&u32::try_from(runs.len()).expect("runs bounded by the record-lock limit").to_be_bytes());
    for (first, len, st, c) in runs {
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.push(st.code());
        out.extend_from_slice(&c.to_be_bytes());
    }
    out
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = b.split_at_checked(n)?;
    *b = rest;
    Some(head)
}

pub fn decode_record(mut b: &[u8]) -> Option<StateRecord> {
    let b = &mut b;
    if take(b, 1)?[0] != RECORD_VERSION {
        return None;
    }
    let glen = usize::from(u16::from_be_bytes(take(b, 2)?.try_into().ok()?));
    let group = String::from_utf8(take(b, glen)?.to_vec()).ok()?;
    let topic_id: [u8; 16] = take(b, 16)?.try_into().ok()?;
    let partition = i32::from_be_bytes(take(b, 4)?.try_into().ok()?);
    let spso = i64::from_be_bytes(take(b, 8)?.try_into().ok()?);
    let n = usize::try_from(u32::from_be_bytes(take(b, 4)?.try_into().ok()?)).ok()?;
    if b.len() != n.checked_mul(RUN)? {
        return None;
    }
    let max = sluice_core::limits::MAX_SHARE_PARTITION_RECORD_LOCKS;
    let mut entries = Vec::new();
    for _ in 0..n {
        let first = i64::from_be_bytes(take(b, 8)?.try_into().ok()?);
        let len = usize::try_from(u32::from_be_bytes(take(b, 4)?.try_into().ok()?)).ok()?;
        let st = RecordState::from_code(take(b, 1)?[0])?;
        let c = u16::from_be_bytes(take(b, 2)?.try_into().ok()?);
        if first < spso || len == 0 || entries.len() + len > max {
            return None;
        }
        for k in 0..len {
            entries.push((first.checked_add(i64::try_from(k).ok()?)?, st, c));
        }
    }
    Some(StateRecord { group, topic_id, partition, state: Stored { spso, entries } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_refused() {
        let s = Stored { spso: 42, entries: vec![(42, RecordState::Available, 2), (44, RecordState::Acknowledged, 1)] };
        let b = encode(&s);
        assert_eq!(decode(&b), Some(s.clone()));
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&b[..b.len() - 1]), None);
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "g", &[7; 16], 3);
        write(&p, &s).unwrap();
        assert_eq!(read(&p), Some(s));
        remove(&p).unwrap();
        assert_eq!(read(&p), None);
        assert!(file(dir.path(), &"x".repeat(300), &[0; 16], 0).to_string_lossy().contains("/h"));
    }

    #[test]
    fn the_forgetting_record_round_trips_and_no_real_state_is_forgotten() {
        let r = StateRecord { group: "g".into(), topic_id: [3; 16], partition: 2, state: Stored::FORGOTTEN };
        let back = decode_record(&encode_record(&r)).expect("a forgetting record decodes");
        assert!(back.state.is_forgotten());
        assert_eq!(back, r);
        assert!(!Stored { spso: 0, entries: Vec::new() }.is_forgotten(), "SPSO 0 is a real start offset");
    }

    #[test]
    fn a_state_record_round_trips_in_runs_and_refuses_damage() {
        let entries = (100..160)
            .map(|o| (o, if o < 150 { RecordState::Acknowledged } else { RecordState::Available }, 1))
            .chain([(161, RecordState::Archived, 5)])
            .collect();
        let r =
            StateRecord { group: "g".into(), topic_id: [3; 16], partition: 2, state: Stored { spso: 100, entries } };
        let b = encode_record(&r);
        assert_eq!(b.len(), 1 + 2 + 1 + 16 + 4 + 8 + 4 + 3 * RUN, "three runs");
        assert_eq!(decode_record(&b), Some(r));
        assert_eq!(decode_record(&b[..b.len() - 1]), None);
        let mut huge = b.clone();
        let at = 1 + 2 + 1 + 16 + 4 + 8 + 4 + 8;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_record(&huge), None);
    }
}
