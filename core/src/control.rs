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
//!   [`KIND_CONF_CHANGE`], [`KIND_SHARE_STATE`], [`KIND_GAP`].
//! - A **gap** batch ([`gap_batch`]) stands for `slots` consecutive Raft entries that compaction
//!   removed (`storage/src/compact/clean.rs`), all of one term (its leader epoch): it covers the
//!   offsets those batches covered (`lastOffsetDelta` -1 when they covered none), so the
//!   batches of the log still follow each other offset after offset, and counting batches to
//!   find Raft indexes (`shard/src/raft/catchup.rs`) counts it as `slots` entries
//!   ([`gap_slots`]). `slots` is at least 1.
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
}
