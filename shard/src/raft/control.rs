//! Raft entries as Kafka batches: every entry of a partition's Raft log is one batch of its
//! Kafka log. A normal entry is the producer's batch itself; the entries that are not Kafka
//! data — a new leader's empty entry, a membership change, a share-partition's state — are
//! control batches of one record whose key has a sluice-specific control type
//! ([`SLUICE_RAFT_CONTROL_TYPE`]).
//!
//! Contract:
//! - A leader's empty entry and a membership change **take no offset** when written with
//!   [`Shape::NoOffset`]: `lastOffsetDelta` -1, its base offset the next batch's base (its one
//!   record carries the payload; no client ever sees it). A share-partition's state batch
//!   keeps one offset (its commit is noticed as the high watermark passing it). So a partition's first record is at
//!   offset 0 and a leader change takes no offset, as in Kafka. Several batches may then share
//!   a base offset: a run of zero-width control batches followed by the data batch at that
//!   offset; the Raft index stays the batch's ordinal, and code that walks the log tells them
//!   apart by their order ([`super::window`]). A log written before (every control batch one
//!   offset, [`Shape::OneOffset`]) stays readable: both shapes are read back alike.
//! - A *gap* batch (`sluice_core::control::gap_batch`, the format's home) stands for entries
//!   compaction removed: one entry of a gap (catch-up hands them out one at a time,
//!   `catchup.rs`) is a normal entry whose data is a gap batch of one slot, stored as is but
//!   for its last offset: one taking offsets ends where it ended on the leader (a follower
//!   whose log ends inside the gap, having had some of the removed batches, stores the rest of
//!   the gap); one taking none stays so. Offsets inside a gap may then differ between replicas
//!   (no record lies there); every batch after it is at the same offsets on all.
//! - Fetch must skip control batches of this type (as Kafka clients skip control batches they
//!   do not know; the broker filters them anyway).
//! - [`entry_to_batch`] stamps the base offset and the leader epoch (= term), which lie
//!   outside the CRC-covered bytes: a producer's batch is never re-checksummed.
//! - A data batch from another broker is CRC-checked before it is stored.
//! - A control batch is a function of its entry and the shape alone (timestamp 0, no
//!   producer), so every replica stores the same bytes at the same offset.

use super::types::Term;
use super::wire::ConfChangeSpec;
use bytes::{Bytes, BytesMut};
use raft::eraftpb::{Entry, EntryType};
use sluice_core::batch::{self, BatchHeader};
use sluice_core::Offset;

pub use sluice_core::control::SLUICE_RAFT_CONTROL_TYPE;
use sluice_core::control::{KIND_CONF_CHANGE, KIND_GAP, KIND_LOG_START, KIND_NOOP, KIND_SHARE_STATE};

/// Why an entry could not become a batch, or a stored batch an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("entry data is not a valid record batch: {0}")]
    BadBatch(String),
    #[error("term {0} does not fit a Kafka leader epoch")]
    TermTooLarge(u64),
    #[error("unreadable raft control batch: {0}")]
    BadControl(&'static str),
}

/// How many offsets a sluice control batch takes when it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// None (`lastOffsetDelta` -1): Kafka's offsets, the shape written now.
    NoOffset,
    /// One, as logs written before zero-width control batches have them.
    OneOffset,
}

/// The batch to store for `e`, stamped with `base` and its term as the leader epoch; a
/// control batch is written in `shape`.
pub fn entry_to_batch(e: &Entry, base: Offset, shape: Shape) -> Result<Bytes, ControlError> {
    let epoch = Term(e.term).epoch().ok_or(ControlError::TermTooLarge(e.term))?;
    let mut b = match e.entry_type {
        EntryType::EntryNormal if e.data.is_empty() => control_batch(KIND_NOOP, &[], shape),
        EntryType::EntryNormal => {
            // Data, or a share-state control batch, which keeps its one offset: its commit
            // is seen by the commit listeners as the high watermark passing it.
            let h = batch::validate(&e.data).map_err(|x| ControlError::BadBatch(x.to_string()))?;
            let mut b = BytesMut::from(&e.data[..]);
            if sluice_core::control::gap_slots(&h, &e.data).is_some() {
                end_gap_where_it_ended(&mut b, &h, base)?;
            }
            b
        }
        EntryType::EntryConfChangeV2 => {
            let cc = ConfChangeSpec::from_local_entry_data(&e.data).ok_or(ControlError::BadControl("conf change"))?;
            control_batch(KIND_CONF_CHANGE, &cc.to_bytes(), shape)
        }
        EntryType::EntryConfChange => return Err(ControlError::BadControl("v1 conf change")),
    };
    batch::stamp(&mut b, base.0, epoch.0);
    Ok(b.freeze())
}

/// A gap entry taking offsets ends at the offset it ended at on the leader, wherever this
/// replica's log ends (`base`): a follower that had some of the removed batches (its log
/// ends inside the gap) stores the rest of the gap, not the whole gap again after them. A
/// gap entry taking no offset stays so. Sets `lastOffsetDelta` and the CRC.
fn end_gap_where_it_ended(b: &mut BytesMut, h: &BatchHeader, base: Offset) -> Result<(), ControlError> {
    if h.takes_no_offset() {
        return Ok(());
    }
    let delta = h.last_offset() - base.0;
    let delta = i32::try_from(delta)
        .ok()
        .filter(|d| *d >= -1)
        .ok_or(ControlError::BadControl("a gap ending before the log end"))?;
    b[23..27].copy_from_slice(&delta.to_be_bytes());
    let crc = batch::compute_crc(b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

fn control_batch(kind: u8, payload: &[u8], shape: Shape) -> BytesMut {
    let delta: i32 = match shape {
        Shape::NoOffset => -1,
        Shape::OneOffset => 0,
    };
    BytesMut::from(&sluice_core::control::build(kind, payload, delta)[..])
}

/// The control batch carrying a share-partition's state `payload` (proposed as a normal
/// entry's data; see `share::replicated`; stored in the log's control shape).
pub fn share_state_batch(payload: &[u8]) -> Bytes {
    control_batch(KIND_SHARE_STATE, payload, Shape::OneOffset).freeze()
}

/// The payload of a share-state control batch (None: any other batch).
pub fn share_state_payload(h: &BatchHeader, b: &[u8]) -> Option<Vec<u8>> {
    if !h.is_control() {
        return None;
    }
    let mut v = control_payload(h, b).ok()?;
    (v.first() == Some(&KIND_SHARE_STATE)).then(|| v.split_off(1))
}

/// Whether a stored batch is one of sluice's Raft control batches (fetch skips these).
pub fn is_raft_control(h: &BatchHeader, batch_bytes: &[u8]) -> bool {
    h.is_control() && control_payload(h, batch_bytes).is_ok()
}

fn control_payload(h: &BatchHeader, b: &[u8]) -> Result<Vec<u8>, ControlError> {
    sluice_core::control::payload(h, b).ok_or(ControlError::BadControl("not a sluice raft control record"))
}

/// The Raft entry a stored batch stands for.
pub fn batch_to_entry(index: u64, term: Term, b: Bytes) -> Result<Entry, ControlError> {
    let h = BatchHeader::parse(&b).map_err(|x| ControlError::BadBatch(x.to_string()))?;
    let mut e = Entry { index, term: term.0, ..Default::default() };
    // Data, including Kafka's own control batches (transaction markers).
    let value = match (h.is_control(), control_payload(&h, &b)) {
        (true, Ok(value)) => value,
        _ => {
            e.data = b;
            return Ok(e);
        }
    };
    match value.split_first() {
        Some((&KIND_NOOP, [])) => {}
        // Stored as is by every replica (a gap, `sluice_core::control`: catch-up hands one
        // entry of it at a time).
        // (A log start batch too: each replica applies it at commit, `driver.rs`.)
        Some((&KIND_SHARE_STATE | &KIND_GAP | &KIND_LOG_START, _)) => e.data = b,
        Some((&KIND_CONF_CHANGE, spec)) => {
            let cc = ConfChangeSpec::from_bytes(spec).map_err(|_| ControlError::BadControl("conf change"))?;
            e.entry_type = EntryType::EntryConfChangeV2;
            e.data = cc.to_entry_data();
        }
        _ => return Err(ControlError::BadControl("kind")),
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::NodeId;
    use crate::raft::wire::{ChangeKind, Transition};

    fn data_batch(n: usize) -> Bytes {
        let recs: Vec<_> = (0..n).map(|_| batch::Record { key: None, value: b"v" }).collect();
        Bytes::from(batch::build(&recs, 1))
    }

    #[test]
    fn a_data_batch_is_stamped_without_touching_its_crc() {
        let e = Entry { term: 7, index: 3, data: data_batch(3), ..Default::default() };
        let b = entry_to_batch(&e, Offset(40), Shape::NoOffset).expect("valid");
        let h = batch::validate(&b).expect("crc still valid");
        assert_eq!((h.base_offset, h.partition_leader_epoch, h.last_offset()), (40, 7, 42));
        let back = batch_to_entry(3, Term(7), b.clone()).expect("readable");
        assert_eq!((back.entry_type, back.data), (EntryType::EntryNormal, b));
    }

    #[test]
    fn noop_and_conf_change_entries_are_control_batches_taking_no_offset() {
        let noop = Entry { term: 2, ..Default::default() };
        let b = entry_to_batch(&noop, Offset(5), Shape::NoOffset).expect("noop");
        let h = batch::validate(&b).expect("valid control batch");
        assert!(h.is_control() && is_raft_control(&h, &b) && h.takes_no_offset());
        assert_eq!((h.base_offset, h.last_offset(), h.records_count), (5, 4, 1));
        assert!(batch_to_entry(1, Term(2), b.clone()).expect("noop back").data.is_empty());
        // As an older build wrote it: one offset, read back alike.
        let old = entry_to_batch(&noop, Offset(5), Shape::OneOffset).expect("noop");
        let h = batch::validate(&old).expect("valid control batch");
        assert!(is_raft_control(&h, &old) && !h.takes_no_offset());
        assert_eq!((h.base_offset, h.last_offset()), (5, 5));
        assert!(batch_to_entry(1, Term(2), old).expect("noop back").data.is_empty());
        // A client may never produce one.
        assert!(batch::validate_from_client(&b).is_err());

        let spec = ConfChangeSpec { transition: Transition::Auto, changes: vec![(ChangeKind::AddVoter, NodeId(4))] };
        let cc = Entry {
            term: 2,
            entry_type: EntryType::EntryConfChangeV2,
            data: spec.to_entry_data(),
            ..Default::default()
        };
        let b = entry_to_batch(&cc, Offset(6), Shape::NoOffset).expect("conf change");
        assert!(batch::validate(&b).expect("valid").takes_no_offset());
        let back = batch_to_entry(2, Term(2), b).expect("back");
        assert_eq!(back.entry_type, EntryType::EntryConfChangeV2);
        assert_eq!(ConfChangeSpec::from_local_entry_data(&back.data), Some(spec));
    }

    #[test]
    fn a_gap_entry_ends_where_it_ended_on_the_leader() {
        // The last entry of a gap that covered offsets 10..=19 on the leader.
        let gap = Bytes::from(sluice_core::control::gap_batch(10, 19, 3, 1));
        let e = Entry { term: 3, data: gap, ..Default::default() };
        for (base, last) in [(10, 19), (14, 19), (20, 19)] {
            let b = entry_to_batch(&e, Offset(base), Shape::NoOffset).expect("stored");
            let h = batch::validate(&b).expect("a valid batch, its CRC recomputed");
            assert_eq!((h.base_offset, h.last_offset()), (base, last), "a log ending at {base}");
            assert!(is_raft_control(&h, &b));
        }
        // A log already past the gap's end does not follow the leader's.
        assert!(entry_to_batch(&e, Offset(21), Shape::NoOffset).is_err());
        // A gap entry taking no offset stays so wherever it lands.
        let zero = Entry { term: 3, data: Bytes::from(sluice_core::control::gap_batch(10, 9, 3, 1)), ..e };
        let b = entry_to_batch(&zero, Offset(14), Shape::NoOffset).expect("stored");
        assert!(batch::validate(&b).expect("valid").takes_no_offset());
    }

    #[test]
    fn a_share_state_entry_is_stored_as_is_and_skipped_by_fetch() {
        let b = share_state_batch(b"state");
        let e = Entry { term: 3, data: b.clone(), ..Default::default() };
        let stored = entry_to_batch(&e, Offset(9), Shape::NoOffset).expect("valid");
        let h = batch::validate(&stored).expect("valid control batch");
        assert!(is_raft_control(&h, &stored) && !h.takes_no_offset(), "a share state keeps its offset");
        assert_eq!(share_state_payload(&h, &stored).as_deref(), Some(&b"state"[..]));
        let back = batch_to_entry(4, Term(3), stored.clone()).expect("readable");
        assert_eq!((back.entry_type, back.data), (EntryType::EntryNormal, stored));
        let noop = entry_to_batch(&Entry { term: 3, ..Default::default() }, Offset(10), Shape::NoOffset).expect("noop");
        assert_eq!(share_state_payload(&batch::validate(&noop).expect("valid"), &noop), None);
    }

    #[test]
    fn a_damaged_batch_or_huge_term_is_refused() {
        let mut e = Entry { term: 1, ..Default::default() };
        let mut bad = data_batch(1).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        e.data = Bytes::from(bad);
        assert!(matches!(entry_to_batch(&e, Offset(0), Shape::NoOffset), Err(ControlError::BadBatch(_))));
        e.data = data_batch(1);
        e.term = u64::from(u32::MAX);
        assert!(matches!(entry_to_batch(&e, Offset(0), Shape::NoOffset), Err(ControlError::TermTooLarge(_))));
        // A transaction marker (Kafka control type 0) is data, not a raft entry of ours.
        let h_bytes = crate::txn::partition::build_marker(1, 0, true, 0, 0);
        let h = batch::validate(&h_bytes).expect("valid");
        assert!(!is_raft_control(&h, &h_bytes));
    }
}
