//! sluice's own control batches: the record format of the Raft control batches
//! (`shard/src/raft/control.rs` gives them their meaning) and the *gap* batch compaction leaves
//! in a Raft group's log.
//!
//! Contract:
//! - A sluice control batch is a v2 control batch (attributes bit 0x20) of one record whose key
//!   is Kafka's control-record key (version 0, type [`SLUICE_RAFT_CONTROL_TYPE`]) and whose
//!   value is a kind byte then the kind's payload; timestamp 0, no producer. Kafka clients skip
//!   control batches of a type they do not know, and fetch strips them anyway.
//! - Kinds are numbered here, once, so two never collide: [`KIND_NOOP`],
//!   [`KIND_CONF_CHANGE`], [`KIND_SHARE_STATE`], [`KIND_GAP`], [`KIND_HOLE`],
//!   [`KIND_LOG_START`].
//! - A **log start** batch ([`log_start_batch`]) is DeleteRecords on a Raft group: the leader
//!   proposes it, and every replica moves its log start to the offset it carries once it is
//!   committed (as Kafka's followers take the leader's log start offset). It takes no offset.
//! - A **gap** batch ([`gap_batch`]) stands for `slots` consecutive Raft entries that compaction
//!   removed (`storage/src/compact/clean.rs`), all of one term (its leader epoch): it covers the
//!   offsets those batches covered (`lastOffsetDelta` -1 when they covered none), so the
//!   batches of the log still follow each other offset after offset, and counting batches to
//!   find Raft indexes (`shard/src/raft/catchup.rs`) counts it as `slots` entries
//!   ([`gap_slots`]). `slots` is at least 1.
//! - A **hole** batch ([`hole_batch`]) covers offsets that hold no Raft entry at all: the
//!   offsets a single-replica log's compaction removed before the log became a Raft group's
//!   (`shard/src/replica/convert.rs`). The converted log has no batch there; a replica that
//!   copies it writes a hole batch over them, so its own log still follows offset after offset
//!   (recovery accepts no jump in an active segment) while its batches keep the leader's
//!   offsets. It stands for no entry ([`entries_of`]: 0) and covers at least one offset.
//! - [`build`] sets the CRC; a caller that changes `lastOffsetDelta` afterwards recomputes it.

use crate::batch::{self, BatchHeader, Record};

/// Control-record type of sluice's control batches (Kafka uses 0–6; the value is far from
/// Kafka's so a future Kafka type never collides).
pub const SLUICE_RAFT_CONTROL_TYPE: i16 = 0x5352;

/// A new leader's empty entry.
pub const KIND_NOOP: u8 = 0;
/// A membership change.
pub const KIND_CONF_CHANGE: u8 = 1;
/// A share-partition's durable state.
pub const KIND_SHARE_STATE: u8 = 2;
/// Entries compaction removed ([`gap_batch`]).
pub const KIND_GAP: u8 = 3;
/// Offsets with no entry ([`hole_batch`]).
pub const KIND_HOLE: u8 = 4;
/// A replicated DeleteRecords ([`log_start_batch`]).
pub const KIND_LOG_START: u8 = 5;

/// Attribute bit of a control batch.
const CONTROL: i16 = 0x20;

/// A sluice control batch of `kind` carrying `payload`, at base offset 0 with leader epoch 0,
/// taking `last_offset_delta + 1` offsets (-1: none), its CRC set.
pub fn build(kind: u8, payload: &[u8], last_offset_delta: i32) -> Vec<u8> {
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&SLUICE_RAFT_CONTROL_TYPE.to_be_bytes());
    let mut value = Vec::with_capacity(1 + payload.len());
    value.push(kind);
    value.extend_from_slice(payload);
    let mut b = batch::build(&[Record { key: Some(&key), value: &value }], 0);
    b[21..23].copy_from_slice(&CONTROL.to_be_bytes());
    b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The kind byte and payload of a sluice control batch; None for any other batch.
pub fn payload(h: &BatchHeader, b: &[u8]) -> Option<Vec<u8>> {
    if !h.is_control() {
        return None;
    }
    let recs = batch::records(b).ok()?;
    let [r] = recs.as_slice() else { return None };
    let key = r.key?;
    if key.len() != 4 || i16::from_be_bytes([key[2], key[3]]) != SLUICE_RAFT_CONTROL_TYPE {
        return None;
    }
    Some(r.value?.to_vec())
}

/// A gap batch (module docs) for `slots` entries of leader epoch `epoch` that covered offsets
/// `base..=last` (`last` = `base` - 1: none).
pub fn gap_batch(base: i64, last: i64, epoch: i32, slots: u64) -> Vec<u8> {
    assert!(slots >= 1, "a gap stands for at least one entry");
    assert!(last >= base - 1, "a gap covers offsets forward");
    let delta = i32::try_from(last - base).expect("a gap lies within one segment");
    let mut b = build(KIND_GAP, &slots.to_be_bytes(), delta);
    batch::stamp(&mut b, base, epoch);
    b
}

/// The entries a gap batch stands for; None for any other batch.
pub fn gap_slots(h: &BatchHeader, b: &[u8]) -> Option<u64> {
    let v = payload(h, b)?;
    match v.split_first() {
        Some((&KIND_GAP, n)) => Some(u64::from_be_bytes(n.try_into().ok()?)).filter(|n| *n >= 1),
        _ => None,
    }
}

/// A hole batch (module docs) of leader epoch `epoch` over offsets `base..=last` (at least
/// one, at most `i32::MAX` + 1: a caller covers a longer hole with several).
pub fn hole_batch(base: i64, last: i64, epoch: i32) -> Vec<u8> {
    assert!(last >= base, "a hole covers at least one offset");
    let delta = i32::try_from(last - base).expect("a hole batch covers at most i32::MAX + 1 offsets");
    let mut b = build(KIND_HOLE, &[], delta);
    batch::stamp(&mut b, base, epoch);
    b
}

/// The log start batch moving a Raft group's log start to `offset` (module docs).
pub fn log_start_batch(offset: i64) -> Vec<u8> {
    build(KIND_LOG_START, &offset.to_be_bytes(), -1)
}

/// The offset a log start batch moves the log start to; None for any other batch.
pub fn log_start_of(h: &BatchHeader, b: &[u8]) -> Option<i64> {
    if !h.is_control() {
        return None;
    }
    match payload(h, b)?.split_first() {
        Some((&KIND_LOG_START, n)) => n.try_into().ok().map(i64::from_be_bytes),
        _ => None,
    }
}

/// Whether `b` is a hole batch.
pub fn is_hole(h: &BatchHeader, b: &[u8]) -> bool {
    h.is_control() && payload(h, b).is_some_and(|v| v.first() == Some(&KIND_HOLE))
}

/// How many Raft entries a stored batch of a Raft group's log stands for: a gap batch its
/// slots, a hole batch none, any other batch one.
pub fn entries_of(h: &BatchHeader, b: &[u8]) -> u64 {
    if !h.is_control() {
        return 1;
    }
    match payload(h, b).as_deref().and_then(<[u8]>::split_first) {
        Some((&KIND_GAP, n)) => n.try_into().map(u64::from_be_bytes).ok().filter(|n| *n >= 1).unwrap_or(1),
        Some((&KIND_HOLE, _)) => 0,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_batch_covers_its_offsets_and_counts_its_entries() {
        let b = gap_batch(100, 139, 7, 12);
        let h = batch::validate(&b).expect("a valid batch");
        assert!(h.is_control() && !h.takes_no_offset());
        assert_eq!((h.base_offset, h.last_offset(), h.partition_leader_epoch), (100, 139, 7));
        assert_eq!(gap_slots(&h, &b), Some(12));
        let z = gap_batch(50, 49, 2, 3);
        let h = batch::validate(&z).expect("valid");
        assert!(h.takes_no_offset());
        assert_eq!(gap_slots(&h, &z), Some(3));
        // Any other batch is not a gap.
        let noop = build(KIND_NOOP, &[], -1);
        let h = batch::validate(&noop).expect("valid");
        assert_eq!((gap_slots(&h, &noop), payload(&h, &noop)), (None, Some(vec![KIND_NOOP])));
        let data = batch::build(&[Record { key: Some(b"k"), value: b"v" }], 0);
        assert_eq!(gap_slots(&batch::validate(&data).expect("valid"), &data), None);
        // A client may never produce one.
        assert!(batch::validate_from_client(&b).is_err());
    }

    #[test]
    fn a_hole_batch_covers_its_offsets_and_stands_for_no_entry() {
        let b = hole_batch(40, 99, 1);
        let h = batch::validate(&b).expect("a valid batch");
        assert!(h.is_control() && is_hole(&h, &b));
        assert_eq!((h.base_offset, h.last_offset(), h.partition_leader_epoch), (40, 99, 1));
        assert_eq!((entries_of(&h, &b), gap_slots(&h, &b)), (0, None));
        let one = hole_batch(7, 7, 2);
        assert_eq!(batch::validate(&one).expect("valid").last_offset(), 7);
        let g = gap_batch(100, 139, 7, 12);
        let gh = batch::validate(&g).expect("valid");
        assert_eq!((entries_of(&gh, &g), is_hole(&gh, &g)), (12, false));
        let data = batch::build(&[Record { key: Some(b"k"), value: b"v" }], 0);
        assert_eq!(entries_of(&batch::validate(&data).expect("valid"), &data), 1);
        let noop = build(KIND_NOOP, &[], -1);
        assert_eq!(entries_of(&batch::validate(&noop).expect("valid"), &noop), 1);
        assert!(batch::validate_from_client(&b).is_err());
    }

    #[test]
    fn a_log_start_batch_carries_its_offset_and_takes_none() {
        let b = log_start_batch(83);
        let h = batch::validate(&b).expect("a valid batch");
        assert!(h.is_control() && h.takes_no_offset());
        assert_eq!((log_start_of(&h, &b), entries_of(&h, &b), is_hole(&h, &b)), (Some(83), 1, false));
        let g = gap_batch(100, 139, 7, 12);
        assert_eq!(log_start_of(&batch::validate(&g).expect("valid"), &g), None);
        assert!(batch::validate_from_client(&b).is_err());
    }
}
